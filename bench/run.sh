#!/usr/bin/env bash
# Run benchmark: run-to-exit latency of `cm-client run --rm --network NETWORK IMAGE true` versus
# `podman run --rm --network NETWORK --runtime runc --ulimit host IMAGE true`, then where cm's time goes.
#
#   sudo bench/run.sh                       # 30 timed runs each, 3 untimed warm-ups each, bridge network
#   sudo NETWORK=none bench/run.sh          # both without a network (only loopback)
#   sudo RUNS=50 WARMUP=5 SPLIT_RUNS=9 bench/run.sh
#   sudo TARGET_MS=20 bench/run.sh          # the p50 cm should meet (default 25 ms)
#   sudo KEEP_LOGS=1 bench/run.sh           # keep the logs (cm-server, podman, perf trace) afterwards
#
# One registry (cm-fixture registry, i.e. Debian's docker-registry) serves the busybox fixture image; both
# tools pull it once, untimed, so every timed run starts from an image already in the store. Timed runs
# alternate (cm first on odd runs, podman first on even runs) after WARMUP untimed warm-ups of each. Before
# every timed run the script waits, untimed, until the previous container is completely gone (cm removes a
# --rm container in the server after the client has returned; podman's conmon may run a cleanup process
# after podman has returned) and runs `sync`, so no run pays for its predecessor's removal or writeback.
# A run is the wall-clock time of the client command from fork to exit (bash's $EPOCHREALTIME, no extra
# processes in the measured span). Percentiles: p50 is the median (mean of the middle two for an even
# count), p90 the nearest rank (the ceil(0.9 n)-th smallest).
#
# Network: NETWORK=bridge (the default): each tool's default bridge, cm's (a veth on cm-server's own bridge
# $CM_BRIDGE with masquerade in its own nftables table) against podman's (netavark: podman0, iptables);
# the containers must see exactly "eth0 lo". NETWORK=none: both without a network; they must see exactly
# "lo". So the comparison cannot silently become unequal. What podman's bridge adds to the machine (podman0,
# iptables rules) is removed at the end (remove_networks in lib.sh). Rlimits: without CAP_SYS_RESOURCE,
# podman's default rlimits make runc fail; `--ulimit host` is used where it works, else the limits podman
# runs with, spelled out (the report says which). The report also says how often each tool's container was
# still on disk when its client returned, and the load average, with a warning when the machine was busy.
#
# "Where the time goes" (cm only, untimed in the comparison above, SPLIT_RUNS runs each):
#   (a) `cm-client --version` (process start, no connection) and `cm-client images` (process start,
#       connect, one trivial unary call);
#   (b) `cm-client create`, `start`, `wait` and `rm` of one container, timed separately;
#   (c) runs through the API with `cm-bench run-latency` (Create with auto-remove, then Attach with start,
#       as cm-client run --rm does, on one connection), split at the calls and frames the client sees; then,
#       if `perf trace` works, runs traced system-wide (syscalls execve, clone, mount, fsync, ...) and split
#       along the container's life, every second one right after an untimed podman run.
# The timed runs are also grouped by the tool that ran just before them (cm runs right after a podman run
# turned out slower than right after a cm run). Statistics and tables come from cm-bench
# (tests/src/bin/cm-bench.rs); no log is read.
#
# podman runs as root with a throwaway store (--root/--runroot/--tmpdir and a storage.conf of its own
# under the temp dir) and its cgroups under /cm-bench-PID-podman. The paths podman 4 writes whatever its
# flags say (/var/lib/containers/cache, /etc/containers/networks, /etc/cni/net.d/cni.lock,
# /run/containers, /run/runc, /dev/shm/libpod_lock) are covered by overlays or a tmpfs in a private mount
# namespace the whole script runs in: nothing on the machine is written, and every mount disappears with
# the script. cm-server gets its own --root and socket in the temp dir and the cgroup parent cm-bench-PID.
# Everything (processes, containers, cgroups, mounts, temp dirs) is cleaned up on exit. Report on stdout,
# progress on stderr. Needs root, podman and runc (scripts/install-deps --bench; `apt-get install runc`),
# unshare and Debian's docker-registry; perf is optional.
set -euo pipefail
shopt -s inherit_errexit   # command substitutions stop at errors too

BENCH=run
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_enter_namespace "$@"   # root check, then this script again in a private mount namespace
export LC_ALL=C   # $EPOCHREALTIME with a decimal point, C sorting

RUNS="${RUNS:-30}"
WARMUP="${WARMUP:-3}"
SPLIT_RUNS="${SPLIT_RUNS:-5}"
TARGET_MS="${TARGET_MS:-25}"
NETWORK="${NETWORK:-bridge}"
KEEP_LOGS="${KEEP_LOGS:-0}"

LOAD_START="$(cut -d ' ' -f 1-3 /proc/loadavg)"   # before this script does anything
cd "$(dirname "$0")/.." || exit 1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/cm-target}"
BIN="$CARGO_TARGET_DIR/release"
REPO_TAG="bench/busybox:latest"
CM_CGROUP="cm-bench-$$"
PODMAN_CGROUP="/cm-bench-$$-podman"

for n in RUNS WARMUP SPLIT_RUNS TARGET_MS; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || die "$n must be a non-negative integer, got '${!n}'"
done
[ "$RUNS" -ge 1 ] && [ "$SPLIT_RUNS" -ge 1 ] || die "RUNS and SPLIT_RUNS must be at least 1"
case "$NETWORK" in
    bridge) IFACES="eth0 lo" ;;
    none) IFACES="lo" ;;
    *) die "NETWORK must be bridge or none, got '$NETWORK'" ;;
esac
command -v podman >/dev/null || die "podman is missing: run scripts/install-deps --bench"
command -v runc >/dev/null || die "runc is missing: apt-get install runc"

# --- binaries -------------------------------------------------------------------------------------
for b in cm-server cm-monitor cm-client cm-fixture cm-bench; do
    if [ ! -x "$BIN/$b" ]; then
        log "building cm (cargo build --release --workspace --bins)"
        cargo build --release --workspace --bins >&2
        break
    fi
done

# --- temp dir and cleanup -------------------------------------------------------------------------
TMP="$(mktemp -d /tmp/cm-bench-run.XXXXXX)"
REGISTRY_PID=""
SERVER_PID=""
PERF_PID=""
PODMAN_DIR=""   # podman's isolated store, once chosen
OVERLAYS=()     # the machine directories overlaid in this mount namespace
CM_HOST="unix:$TMP/cm.sock"
CM_CONTAINERS="$TMP/cm-root/containers"

trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits (untimed) until the previous container is gone in both tools: no container directory left in
# cm's store, no monitor, conmon or podman cleanup process left; then flushes dirty data.
settle() {
    local i entries
    shopt -s nullglob
    for ((i = 0; ; i++)); do
        entries=("$CM_CONTAINERS"/*)
        if [ ${#entries[@]} = 0 ] && [ -z "$(our_pids)" ]; then
            break
        fi
        [ "$i" -lt 1000 ] || die "the previous container did not go away within 10 s" \
            "(cm containers: ${#entries[@]}, processes: $(our_pids | tr '\n' ' '))"
        sleep 0.01
    done
    shopt -u nullglob
    sync
}

# --- isolation of podman --------------------------------------------------------------------------
# Overlays on the machine-wide directories podman and runc write to regardless of --root (see the top),
# and a tmpfs for podman's lock file (/dev/shm/libpod_lock): lib.sh.
mount_host_overlays /etc /var/lib /run
mount_shm_tmpfs

# --- registry, image, cm-server ------------------------------------------------------------------
serve_image_and_start_server

# --- podman ---------------------------------------------------------------------------------------
podman_pull_image

# --- the commands ---------------------------------------------------------------------------------
run_cm() { "$BIN/cm-client" --host "$CM_HOST" run --rm --network "$NETWORK" "$REF" "$@" </dev/null 2>>"$TMP/cm-client.log"; }
PODMAN_ULIMITS=(--ulimit host)
run_podman() {
    podman_ run --rm --network "$NETWORK" --runtime runc "${PODMAN_ULIMITS[@]}" --cgroup-parent "$PODMAN_CGROUP" "$REF" "$@" \
        </dev/null 2>>"$TMP/podman.log"
}

# Without CAP_SYS_RESOURCE podman's default rlimits make runc fail; then the container gets the limits podman
# itself runs with, spelled out (podman_ulimit_fallback in lib.sh says which and why).
ULIMIT_NOTE=""
save_podman_network_state
if ! run_podman true >/dev/null 2>&1; then
    podman_ rm -a -f >/dev/null 2>&1 || true   # whatever the failed attempt left
    podman_ulimit_fallback
fi

# Both containers must see exactly the same interfaces: "eth0 lo" on a bridge, "lo" without a network.
for tool in cm podman; do
    tool_log="$TMP/$([ "$tool" = cm ] && echo cm-server || echo podman).log"
    ifaces="$("run_$tool" ls /sys/class/net)" || { tail_log "$tool_log"; die "$tool cannot run a container"; }
    ifaces="$(echo $ifaces)"
    [ "$ifaces" = "$IFACES" ] || die "a $tool container sees the network interfaces '$ifaces', not '$IFACES':" \
        "the network modes are no longer comparable"
done

# Runs one command ($1: cm or podman) with `true` and sets ELAPSED_US (no subshell: the measured span holds
# only the command's own fork, exec and exit), and STILL_THERE to 1 when the container's directory still
# existed right after the client returned (it is removed after, not before the client exits).
ELAPSED_US=0
STILL_THERE=0
LAST_TOOL=""   # the tool of the previous run (timed or not), and of the one before this run: PREV_TOOL
PREV_TOOL=""
timed_run() {
    local t0 t1 left
    PREV_TOOL="$LAST_TOOL"
    LAST_TOOL="$1"
    settle
    t0=$EPOCHREALTIME
    if ! "run_$1" true >/dev/null; then
        tail_log "$TMP/$([ "$1" = cm ] && echo cm-server || echo podman).log"
        die "$1 run failed"
    fi
    t1=$EPOCHREALTIME
    ELAPSED_US=$((${t1/./} - ${t0/./}))
    shopt -s nullglob
    if [ "$1" = cm ]; then left=("$CM_CONTAINERS"/*); else left=("$PODMAN_DIR/root/$DRIVER-containers"/*/); fi
    shopt -u nullglob
    STILL_THERE=$((${#left[@]} > 0))
}

log "$WARMUP untimed warm-up runs each"
for ((run = 1; run <= WARMUP; run++)); do
    timed_run cm
    timed_run podman
done

CM_US=()
PODMAN_US=()
CM_LEFT=0
PODMAN_LEFT=0
LOAD_BEFORE="$(cut -d ' ' -f 1-3 /proc/loadavg)"
for ((run = 1; run <= RUNS; run++)); do
    if ((run % 2)); then
        timed_run cm
        CM_US+=("$ELAPSED_US")
        CM_LEFT=$((CM_LEFT + STILL_THERE))
        echo "cm $PREV_TOOL $ELAPSED_US" >>"$TMP/by-predecessor.txt"
        timed_run podman
        PODMAN_US+=("$ELAPSED_US")
        PODMAN_LEFT=$((PODMAN_LEFT + STILL_THERE))
        echo "podman $PREV_TOOL $ELAPSED_US" >>"$TMP/by-predecessor.txt"
    else
        timed_run podman
        PODMAN_US+=("$ELAPSED_US")
        PODMAN_LEFT=$((PODMAN_LEFT + STILL_THERE))
        echo "podman $PREV_TOOL $ELAPSED_US" >>"$TMP/by-predecessor.txt"
        timed_run cm
        CM_US+=("$ELAPSED_US")
        CM_LEFT=$((CM_LEFT + STILL_THERE))
        echo "cm $PREV_TOOL $ELAPSED_US" >>"$TMP/by-predecessor.txt"
    fi
    log "run $run/$RUNS: cm $(ms "${CM_US[-1]}") ms, podman $(ms "${PODMAN_US[-1]}") ms"
done
LOAD_AFTER="$(cut -d ' ' -f 1-3 /proc/loadavg)"
settle
[ -z "$(cm ps -a -q)" ] || die "cm left containers behind after --rm runs"
[ -z "$(podman_ ps -a -q)" ] || die "podman left containers behind after --rm runs"

# --- where the time goes: (a) and (b) -------------------------------------------------------------
# Runs "$@" SPLIT_RUNS times (each after settle) and appends the microseconds of each to $TMP/split-LABEL.txt.
time_cmd() {
    local label="$1" i t0 t1
    shift
    for ((i = 1; i <= SPLIT_RUNS; i++)); do
        settle
        t0=$EPOCHREALTIME
        "$@" >/dev/null 2>>"$TMP/cm-client.log" </dev/null || die "'$*' failed"
        t1=$EPOCHREALTIME
        echo $((${t1/./} - ${t0/./})) >>"$TMP/split-$label.txt"
    done
}
log "where the time goes: (a) process start and a trivial call, (b) create, start, wait, rm"
time_cmd version "$BIN/cm-client" --version
time_cmd images cm images
# (b): the steps of one container, each timed on its own, in the order docker run does them.
for ((i = 1; i <= SPLIT_RUNS; i++)); do
    settle
    t0=$EPOCHREALTIME
    cm create --network "$NETWORK" "$REF" true >"$TMP/id.txt" 2>>"$TMP/cm-client.log" </dev/null || die "cm-client create failed"
    t1=$EPOCHREALTIME
    echo $((${t1/./} - ${t0/./})) >>"$TMP/split-create.txt"
    read -r id <"$TMP/id.txt"
    t0=$EPOCHREALTIME
    cm start "$id" >/dev/null 2>>"$TMP/cm-client.log" </dev/null || die "cm-client start failed"
    t1=$EPOCHREALTIME
    echo $((${t1/./} - ${t0/./})) >>"$TMP/split-start.txt"
    t0=$EPOCHREALTIME
    cm wait "$id" >"$TMP/code.txt" 2>>"$TMP/cm-client.log" </dev/null || die "cm-client wait failed"
    t1=$EPOCHREALTIME
    echo $((${t1/./} - ${t0/./})) >>"$TMP/split-wait.txt"
    read -r code <"$TMP/code.txt"
    [ "$code" = 0 ] || die "the container exited with $code, not 0"
    t0=$EPOCHREALTIME
    cm rm "$id" >/dev/null 2>>"$TMP/cm-client.log" </dev/null || die "cm-client rm failed"
    t1=$EPOCHREALTIME
    echo $((${t1/./} - ${t0/./})) >>"$TMP/split-rm.txt"
done

# --- where the time goes: (c) the API ------------------------------------------------------------
log "where the time goes: (c) $SPLIT_RUNS runs through the API, split at the calls and frames the client sees"
settle
"$BIN/cm-bench" run-latency --host "$CM_HOST" --image "$REF" --network "$NETWORK" --runs "$SPLIT_RUNS" \
    >"$TMP/run-latency.txt" || { tail_log "$TMP/cm-server.log"; die "cm-bench run-latency failed"; }
settle

# --- where the time goes: (c) perf trace ----------------------------------------------------------
PERF_EVENTS="execve,clone,clone3,unshare,mount,umount2,pivot_root,fsync,fdatasync,exit_group,connect,bind,write"
PERF_OK=0
if command -v perf >/dev/null && perf trace -e exit_group -o /dev/null true >/dev/null 2>&1; then
    log "where the time goes: (c) $((2 * SPLIT_RUNS)) runs under perf trace -a, half of them after a podman run"
    perf trace -a -e "$PERF_EVENTS" -o "$TMP/perf-trace.txt" 2>"$TMP/perf.log" &
    PERF_PID=$!
    sleep 2   # perf trace -a takes a moment to set up its events
    kill -0 "$PERF_PID" 2>/dev/null || { tail_log "$TMP/perf.log"; die "perf trace -a did not start"; }
    : >"$TMP/perf-runs.txt"
    # Pairs: one cm run right after a cm run, then an untimed podman run, then a cm run right after it.
    for ((i = 1; i <= SPLIT_RUNS; i++)); do
        settle
        t0=$EPOCHREALTIME
        run_cm true >/dev/null || die "cm run failed"
        t1=$EPOCHREALTIME
        echo $((${t1/./} - ${t0/./})) >>"$TMP/perf-runs.txt"
        settle
        run_podman true >/dev/null || die "podman run failed"
        settle
        run_cm true >/dev/null || die "cm run failed"
    done
    settle
    sleep 0.2
    # The server's threads (cm-server, tokio workers and blocking threads), to tell them from the client's.
    ls "/proc/$SERVER_PID/task" >"$TMP/server-tids.txt"
    stop_pid "$PERF_PID" INT
    PERF_PID=""
    PERF_OK=1
else
    log "perf trace does not work here: the syscall split is skipped (the log split above still stands)"
fi

# --- report ---------------------------------------------------------------------------------------
printf '%s\n' "${CM_US[@]}" >"$TMP/cm-us.txt"
CM_P50="$("$BIN/cm-bench" median "$TMP/cm-us.txt")"

machine_facts
echo "## cm-client run --rm vs podman run --rm (busybox, \`true\`, network $NETWORK)"
echo
echo "- machine: $(nproc) CPUs (${cpu:-unknown}), $mem RAM, kernel $(uname -r), cgroup $cgroups, stores on $fs"
echo "- image: $REF (cm-fixture busybox), pulled once into each store before timing"
echo "- cm: \`cm-client run --rm --network $NETWORK IMAGE true\`, cm-server at default settings (own --root," \
    "socket, cgroup parent, and bridge $CM_BRIDGE on $CM_SUBNET); the container sees '$IFACES' (checked)"
echo "- podman: \`podman run --rm --network $NETWORK --runtime runc ${PODMAN_ULIMITS[*]} --cgroup-parent" \
    "$PODMAN_CGROUP IMAGE true\`; $(podman --version), $(runc --version | head -n 1), storage driver $DRIVER," \
    "cgroupfs, events none, network backend $(podman_ info --format '{{.Host.NetworkBackend}}' 2>/dev/null)" \
    "(container sees '$IFACES': checked)"
[ -z "$ULIMIT_NOTE" ] || echo "- note: $ULIMIT_NOTE"
echo "- $RUNS timed runs each, interleaved (cm first on odd runs, podman first on even ones), after $WARMUP" \
    "untimed warm-ups each; before each run, untimed: wait until the previous container is gone, then sync"
echo "- time: wall clock from fork to exit of the client command"
echo "- removal: the container's directory still existed right after the client returned in $CM_LEFT of" \
    "$RUNS cm runs (cm-server removes a --rm container after the exit is reported) and in $PODMAN_LEFT of" \
    "$RUNS podman runs"
load_lines
if [ "$DRIVER" = vfs ]; then
    echo "- **WARNING: podman's overlay driver does not work here; podman used vfs, which copies the image for"
    echo "  every container. That makes podman slower: an unfair comparison.**"
fi
echo
report_comparison run "cm-client run --rm" "podman run --rm"

split_row() { "$BIN/cm-bench" row --short --label "$2" "$TMP/split-$1.txt"; }
split_median() { "$BIN/cm-bench" median "$TMP/split-$1.txt"; }
echo
echo "## Where the time goes (cm)"
echo
echo "### (a) process start and an empty gRPC round trip ($SPLIT_RUNS runs each)"
echo
echo "| command | median | min | max |"
echo "|---------|-------:|----:|----:|"
split_row version "\`cm-client --version\`: process start only, no connection"
split_row images "\`cm-client images\`: process start, connect, one ListImages call (1 image)"
echo
echo "### (b) the steps of a run as separate commands ($SPLIT_RUNS containers)"
echo
echo "| command | median | min | max |"
echo "|---------|-------:|----:|----:|"
split_row create "\`cm-client create IMAGE true\`"
split_row start "\`cm-client start ID\`: returns once the monitor has released the container's init"
split_row wait "\`cm-client wait ID\` (right after start): process start + the rest of the container's life"
split_row rm "\`cm-client rm ID\` (stopped container)"
sum=0
for k in create start wait rm; do
    sum=$((sum + $(split_median "$k")))
done
echo
echo "Sum of the four medians: $(ms "$sum") ms (four client processes), against $(ms "$CM_P50") ms for one" \
    "\`cm-client run --rm\` (p50 above; one process, and its container is removed after it returns)."

echo
echo "### (c) one run through the API, split at the calls and frames the client sees ($SPLIT_RUNS runs)"
echo
echo "\`cm-bench run-latency\`: what \`cm-client run --rm\` does (Create with auto-remove, then Attach with"
echo "start), on one connection, so without the client's process start and connect ((a) above); each phase is"
echo "measured at the client and includes the transport both ways."
echo
cat "$TMP/run-latency.txt"

# (c) perf trace split.
if [ "$PERF_OK" = 1 ]; then
    # 1) Normalise perf trace lines to "start<TAB>duration<TAB>tid<TAB>syscall<TAB>ret<TAB>comm<TAB>args":
    #    one record per completed call (start from its entry line when perf split it); dur -1 = unknown.
    # 2) Sort by start time; split into runs at each exec of cm-client; follow its processes (client, the
    #    server's spawn of cm-monitor, the monitor, the container's init) and measure the intervals.
    awk '
        {
            p = index($0, "): "); if (p == 0) next
            head = substr($0, 1, p); s = substr($0, p + 3)
            split(head, hf, "(")
            start = hf[1]; gsub(/ /, "", start)
            dur = -1
            if (match(head, /[0-9.]+ ms\)/)) dur = substr(head, RSTART, RLENGTH - 4) + 0
            if (!match(s, /\/[0-9]+ /)) next
            comm = substr(s, 1, RSTART - 1)
            tid = substr(s, RSTART + 1, RLENGTH - 2)
            rest = substr(s, RSTART + RLENGTH)
            sub(/^ +/, "", rest)
            cont = 0
            if (index(rest, "... [continued]: ") == 1) { cont = 1; rest = substr(rest, 18) }
            name = rest; sub(/\(.*/, "", name)
            args = rest; sub(/^[^(]*\(/, "", args)
            if (rest ~ /\.\.\. *$/ && !cont) {
                if ((tid, name) in orphan) {   # its completion came first (an execve perf printed early)
                    split(orphan[tid, name], o, "\t"); delete orphan[tid, name]
                    printf "%s\t-1\t%s\t%s\t%s\t%s\t%s\n", start, tid, name, o[1], o[2], args
                    next
                }
                pend[tid, name] = start; pargs[tid, name] = args; next
            }
            ret = ""
            if (match(rest, /= [^ ]+/)) ret = substr(rest, RSTART + 2, RLENGTH - 2)
            if (cont) {
                if (start == "?" && !((tid, name) in pend)) { orphan[tid, name] = ret "\t" comm; next }
                if (start == "?") start = pend[tid, name]
                args = pargs[tid, name]; delete pend[tid, name]
            }
            if (start == "?") next
            if (name == "exit_group") dur = 0
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", start, dur, tid, name, ret, comm, args
        }' "$TMP/perf-trace.txt" | sort -t "$(printf '\t')" -k1,1n >"$TMP/perf-calls.txt"
    awk -F'\t' '
        FNR == NR { srv[$1] = 1; next }
        function flush() {
            if (!run) return
            pre = (run % 2) ? "" : "P"   # odd runs come right after a cm run, even ones after podman
            if (cexit == "" || mexec == "" || tstart == "" || texit == "" || mexit == "" || spawn == "" ||
                lexit == "" || go == "" || cconn == "" || nsend == "") { print pre "incomplete " run; return }
            print pre "i1 " cconn - cexec
            print pre "i2 " spawn - cconn
            print pre "i3 " mexec - spawn
            print pre "i4 " lexit - mexec
            print pre "i5 " go - lexit
            print pre "i6 " tstart - go
            print pre "i7 " texit - tstart
            print pre "i8 " mexit - texit
            print pre "i9 " cexit - mexit
            print pre "total " cexit - cexec
            print pre "f2 " f2; print pre "f4 " f4; print pre "f8 " f8; print pre "f9 " f9
            print pre "fsync_n " fn; print pre "fsync_ms " fms
            print pre "fcrit " f2 + f4 + f8 + f9
            print pre "ns_clone " nsdur
            if (bind != "") { print pre "placement " bind - nsend; print pre "placement_writes " pw }
            if (pw > 0) { print pre "pw_first " pwfirst; print pre "pw_rest " pwsum - pwfirst }
            print pre "mexec_dur " mexecdur
            print pre "mounts_n " mn; print pre "mounts_ms " mms
            print pre "umount " um; print pre "texec_dur " texecdur
        }
        # This script forks its cm-client runs itself (other cm-clients on the machine are not ours).
        ($4 == "clone" || $4 == "clone3") && $3 == sh && $5 + 0 > 0 { ours[$5 + 0] = 1 }
        $4 == "execve" && $6 == "cm-client" && $5 == "0" && ($3 in ours) {
            flush(); run++
            delete cl; delete mon; cl[$3] = 1
            cexec = $1; cexit = cconn = spawn = mexec = lexit = go = tstart = texit = mexit = nsend = bind = ""
            m1 = m2 = init = ""; f2 = f4 = f8 = f9 = fn = fms = pw = pwsum = pwfirst = mn = mms = um = 0
            nsdur = mexecdur = texecdur = -1
            next
        }
        !run { next }
        {
            t = $1; d = $2; tid = $3; call = $4; ret = $5 + 0
            if ((call == "clone" || call == "clone3") && ret > 0) {
                if (tid in cl) cl[ret] = 1
                else if (tid in srv) child[ret] = t   # a thread, or the process that becomes cm-monitor
                else if (tid == m1 && m2 == "") m2 = ret
                else if (tid == m2 && index($7, "NEWNS")) { init = ret; nsdur = d; nsend = t + d }
            }
            if (call == "execve" && $6 == "cm-monitor" && $5 == "0" && m1 == "" && (tid in child)) {
                m1 = tid; mexec = t; mexecdur = d; spawn = child[tid]
            }
            if (call == "connect" && (tid in cl) && cconn == "") cconn = t
            if (call == "exit_group" && (tid in cl) && cexit == "") cexit = t
            if (call == "exit_group" && tid == m1 && lexit == "") lexit = t
            if (call == "exit_group" && tid == m2 && m2 != "" && mexit == "") mexit = t
            if (call == "bind" && tid == m2 && m2 != "" && bind == "") bind = t
            if (call == "write" && tid == m2 && m2 != "" && nsend != "" && bind == "") {
                if (pw == 0) pwfirst = d
                pw++; pwsum += d
            }
            if (tid == init && init != "") {
                if (call == "unshare" && go == "") go = t
                if (call == "mount" && tstart == "") { mn++; mms += d }
                if (call == "umount2" && tstart == "") um += d
                if (call == "execve" && $5 == "0" && tstart == "") { tstart = t; texecdur = d }
                if (call == "exit_group" && texit == "") texit = t
            }
            if ((call == "fsync" || call == "fdatasync") && d >= 0 && ((tid in srv) || tid == m2)) {
                if (cexit != "") next
                fn++; fms += d
                if (tid in srv && spawn == "") f2 += d
                else if (tid == m2 && lexit == "") f4 += d
                else if (tid == m2) f8 += d
                else if (tid in srv && mexit != "") f9 += d
            }
        }
        END { flush() }' sh="$$" "$TMP/server-tids.txt" "$TMP/perf-calls.txt" >"$TMP/perf-split.txt"
    perf_row() {
        local key="$1" label="$2" fkey="${3:-}" n min p50 p90 max f=""
        n="$(awk -v k="$key" '$1 == k' "$TMP/perf-split.txt" | wc -l)"
        [ "$n" -gt 0 ] || { echo "| $label | - | - | - | - |"; return 0; }
        read -r min p50 p90 max <<<"$(awk -v k="$key" '$1 == k { print $2 * 1000 }' "$TMP/perf-split.txt" | stats)"
        if [ -n "$fkey" ]; then
            f="$(awk -v k="$fkey" '$1 == k { print $2 * 1000 }' "$TMP/perf-split.txt" | stats | awk '{ print $2 }')"
            f="$(ms "$f") ms"
        fi
        echo "| $label | $(ms "$p50") ms | $(ms "$min") ms | $(ms "$max") ms | $f |"
    }
    perf_median() { awk -v k="$1" '$1 == k { print $2 * 1000 }' "$TMP/perf-split.txt" | stats | awk '{ print $2 }'; }
    traced="$(awk '$1 == "total"' "$TMP/perf-split.txt" | wc -l)"
    incomplete="$(awk '$1 == "incomplete"' "$TMP/perf-split.txt" | wc -l)"
    echo
    echo "### (c) one run split by its system calls (perf trace -a, $traced of $SPLIT_RUNS runs traced completely)"
    echo
    echo "Intervals between system calls of the client, cm-server, cm-monitor and the container's init," \
        "back to back from the client's execve to its exit_group; fsync: time in fsync calls of cm-server" \
        "and cm-monitor inside the interval. For scale: fork to exit took" \
        "$(ms "$(stats <"$TMP/perf-runs.txt" | awk '{ print $2 }')") ms (median) in these traced runs and" \
        "$(ms "$CM_P50") ms in the untraced timed runs above (same server); the difference is tracing overhead" \
        "and noise.$(grep -q LOST "$TMP/perf-trace.txt" && echo " perf reported lost events.")"
    echo
    echo "| interval (what happens) | median | min | max | fsync (median) |"
    echo "|-------------------------|-------:|----:|----:|---------------:|"
    perf_row i1 "client execve → client connect(): client process start"
    perf_row i2 "→ server forks cm-monitor: Create call, Attach call, cgroup, /etc files, bundle" f2
    perf_row i3 "→ cm-monitor execve: fork of cm-server until the exec"
    perf_row i4 "→ monitor up (its parent exits): exec, clone into namespaces, cgroup placement, monitor.json" f4
    perf_row i5 "→ init released (its unshare(CLONE_NEWCGROUP)): server connects and sends start"
    perf_row i6 "→ execve(\"true\"): init mounts the rootfs, /proc, /dev, /sys, ..., pivot_root"
    perf_row i7 "→ \`true\` exits: exec and run of \`true\`"
    perf_row i8 "→ monitor exits: reap, drain, exit.json" f8
    perf_row i9 "→ client exit_group: server removes the cgroup, records the exit, sends it; client exits" f9
    perf_row total "**total** (client execve → exit_group, under perf trace)" fcrit
    echo
    echo "Inside those (medians):"
    echo
    echo "| detail | median | min | max |"
    echo "|--------|-------:|----:|----:|"
    perf_row_plain() {
        local key="$1" label="$2" unit="$3" min p50 p90 max n
        n="$(awk -v k="$key" '$1 == k && $2 >= 0' "$TMP/perf-split.txt" | wc -l)"
        [ "$n" -gt 0 ] || { echo "| $label | - | - | - |"; return 0; }
        if [ "$unit" = ms ]; then
            read -r min p50 p90 max <<<"$(awk -v k="$key" '$1 == k && $2 >= 0 { print $2 * 1000 }' \
                "$TMP/perf-split.txt" | stats)"
            echo "| $label | $(ms "$p50") ms | $(ms "$min") ms | $(ms "$max") ms |"
        else
            read -r min p50 p90 max <<<"$(awk -v k="$key" '$1 == k { print $2 }' "$TMP/perf-split.txt" | stats)"
            echo "| $label | $p50 | $min | $max |"
        fi
    }
    perf_row_plain fsync_n "fsync calls of cm-server and cm-monitor before the client exits" n
    perf_row_plain fsync_ms "time in those fsync calls" ms
    perf_row_plain fcrit "of which on the path above (the fsync column)" ms
    perf_row_plain mexec_dur "execve of cm-monitor" ms
    perf_row_plain ns_clone "clone(NEWNS|NEWUTS|NEWIPC|NEWPID|NEWNET) of the init" ms
    perf_row_plain placement "clone return → bind of the monitor socket (pidfd, cgroup placement)" ms
    perf_row_plain placement_writes "write() calls in that span (the init's pid to each cgroup.procs)" n
    perf_row_plain pw_first "the first of those writes" ms
    perf_row_plain pw_rest "all the others together" ms
    perf_row_plain mounts_n "mount() calls of the init" n
    perf_row_plain mounts_ms "time in them" ms
    perf_row_plain umount "umount2 of the old root after pivot_root" ms
    perf_row_plain texec_dur "execve of \`true\`" ms
    total_med="$(perf_median total)"
    fsync_med="$(perf_median fcrit)"
    echo
    awk -v t="$total_med" -v f="$fsync_med" 'BEGIN {
        if (t > 0)
            printf "fsync on the path takes %.0f%% of a traced run (medians: %.1f of %.1f ms).", \
                100 * f / t, f / 1000, t / 1000
    }'
    [ "$incomplete" -gt 0 ] && echo " $incomplete traced run(s) lacked an event and are left out."
    echo
    # The same intervals for the cm runs that came right after an (untimed) podman run.
    cmp_row() {
        local a b
        a="$(perf_median "$1")"
        b="$(perf_median "P$1")"
        a="$([ -n "$a" ] && [ "$a" != - ] && echo "$(ms "$a") ms" || echo -)"
        b="$([ -n "$b" ] && [ "$b" != - ] && echo "$(ms "$b") ms" || echo -)"
        echo "| $2 | $a | $b |"
    }
    after_podman="$(awk '$1 == "Ptotal"' "$TMP/perf-split.txt" | wc -l)"
    echo
    echo "### (c) the same, for cm runs right after a podman run ($after_podman of $SPLIT_RUNS traced completely)"
    echo
    echo "Each traced run above came right after a cm run; between them the script ran an untimed podman run," \
        "waited until it was gone and traced a cm run right after it. Medians:"
    echo
    echo "| interval | after a cm run | after a podman run |"
    echo "|----------|---------------:|-------------------:|"
    cmp_row i1 "client start"
    cmp_row i2 "→ server forks cm-monitor"
    cmp_row i3 "→ cm-monitor execve"
    cmp_row i4 "→ monitor up"
    cmp_row pw_first "(in it: the first cgroup.procs write)"
    cmp_row i5 "→ init released"
    cmp_row i6 "→ execve(\"true\")"
    cmp_row i7 "→ \`true\` exits"
    cmp_row i8 "→ monitor exits"
    cmp_row i9 "→ client exit_group"
    cmp_row total "**total**"
    cmp_row fcrit "fsync on the path"
else
    echo
    echo "(perf trace is not available here: no split by system calls.)"
fi
