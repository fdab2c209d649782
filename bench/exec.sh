#!/usr/bin/env bash
# Exec benchmark: latency of a no-op exec into a running container, `cm-client exec C true` versus
# `podman exec P true`, then how much of cm's time is the client process itself.
#
#   sudo bench/exec.sh                      # 50 timed execs each, 3 untimed warm-ups each
#   sudo RUNS=100 WARMUP=5 SPLIT_RUNS=21 bench/exec.sh
#   sudo TARGET_MS=5 bench/exec.sh          # the p50 cm should meet (default 5 ms)
#   sudo KEEP_LOGS=1 bench/exec.sh          # keep the logs (cm-server, podman) afterwards
#
# One registry (cm-fixture registry, i.e. Debian's docker-registry) serves the busybox fixture image; both
# tools pull it once, untimed. Each tool then runs one long-lived container (`sleep 100000`; cm:
# `cm-client run -d --network none`, podman: `podman run -d --network none --runtime runc`), and every timed run execs
# `true` in it. Timed runs alternate (cm first on odd runs, podman first on even runs) after WARMUP untimed
# warm-ups of each. Before every timed run the script waits, untimed, until the processes of the previous
# exec are gone (the set of our processes is back to what the two running containers need) and runs
# `sync`. A run is the wall-clock time of the client command from fork to exit (bash's $EPOCHREALTIME, no
# extra processes in the measured span). Percentiles: p50 is the median (mean of the middle two for an
# even count), p90 the nearest rank (the ceil(0.9 n)-th smallest). The report also gives the p50s by the
# tool that ran just before (a cm exec right after a podman exec turned out slower than right after a cm one).
#
# "Where the time goes" (cm only): `cm-client --version` (process start, no connection) and
# `cm-client images` (process start, connect, one trivial unary call), SPLIT_RUNS runs each, untimed in the
# comparison; and SPLIT_RUNS execs through the API (`cm-bench exec-latency`, one connection), split at the
# frames the client receives (started, exit, end of the stream). Statistics and tables: cm-bench; no log is
# read.
#
# Isolation and cleanup as in bench/run.sh: podman runs as root with a throwaway store (--root/--runroot/
# --tmpdir and a storage.conf of its own under the temp dir) and its cgroups under /cm-bench-PID-podman;
# /etc, /var/lib and /run are covered by overlays and /dev/shm by a tmpfs in a private mount namespace the
# whole script runs in: nothing on the machine is written, and every mount disappears with the script.
# cm-server gets its own --root and socket in the temp dir and the cgroup parent cm-bench-PID. Rlimits:
# `--ulimit host` where it works, else the limits podman runs with, spelled out (the report says which).
# Everything (processes, containers, cgroups, mounts, temp dirs) is cleaned up on exit. Report on stdout,
# progress on stderr. Needs root, podman and runc (scripts/install-deps --bench; `apt-get install runc`),
# unshare and Debian's docker-registry.
set -euo pipefail
shopt -s inherit_errexit   # command substitutions stop at errors too

BENCH=exec
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_enter_namespace "$@"   # root check, then this script again in a private mount namespace
export LC_ALL=C   # $EPOCHREALTIME with a decimal point, C sorting

RUNS="${RUNS:-50}"
WARMUP="${WARMUP:-3}"
SPLIT_RUNS="${SPLIT_RUNS:-11}"
TARGET_MS="${TARGET_MS:-5}"
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
TMP="$(mktemp -d /tmp/cm-bench-exec.XXXXXX)"
REGISTRY_PID=""
SERVER_PID=""
PODMAN_DIR=""   # podman's isolated store, once chosen
OVERLAYS=()     # the machine directories overlaid in this mount namespace
BASE_PIDS=""    # our processes while the two containers run and no exec does (cm-monitor, conmon)
CM_HOST="unix:$TMP/cm.sock"

trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits (untimed) until the previous exec is gone in both tools: our processes are back to BASE_PIDS (the
# two containers' cm-monitor and conmon; no podman exec conmon, no cleanup process); then flushes dirty data.
settle() {
    local i now
    for ((i = 0; ; i++)); do
        now="$(our_pids | sort | tr '\n' ' ')"
        [ "$now" = "$BASE_PIDS" ] && break
        [ "$i" -lt 1000 ] || die "the previous exec did not go away within 10 s" \
            "(processes: $now; expected: $BASE_PIDS)"
        sleep 0.01
    done
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

# --- the two long-running containers --------------------------------------------------------------
PODMAN_ULIMITS=(--ulimit host)
run_podman_detached() {
    podman_ run -d --network none --runtime runc "${PODMAN_ULIMITS[@]}" --cgroup-parent "$PODMAN_CGROUP" \
        "$REF" sleep 100000 </dev/null 2>>"$TMP/podman.log"
}

log "starting one container per tool (sleep 100000)"
CM_ID="$(cm run -d --network none "$REF" sleep 100000 </dev/null 2>>"$TMP/cm-client.log")" ||
    { tail_log "$TMP/cm-server.log"; die "cm-client run -d failed"; }
[ -n "$CM_ID" ] || die "cm-client run -d printed no container id"

# Without CAP_SYS_RESOURCE podman's default rlimits make runc fail; then the container gets the limits podman
# itself runs with, spelled out (podman_ulimit_fallback in lib.sh says which and why).
ULIMIT_NOTE=""
if ! PM_ID="$(run_podman_detached)"; then
    podman_ rm -a -f -t 0 >/dev/null 2>&1 || true   # whatever the failed attempt left
    podman_ulimit_fallback
    PM_ID="$(run_podman_detached)" || { tail_log "$TMP/podman.log"; die "podman run -d failed"; }
fi
[ -n "$PM_ID" ] || die "podman run -d printed no container id"

# --- the commands ---------------------------------------------------------------------------------
exec_cm() { "$BIN/cm-client" --host "$CM_HOST" exec "$CM_ID" "$@" </dev/null 2>>"$TMP/cm-client.log"; }
exec_podman() { podman_ exec "$PM_ID" "$@" </dev/null 2>>"$TMP/podman.log"; }

# Both containers must see exactly the loopback interface (what podman's --network none gives); this
# also checks that exec works in both.
for tool in cm podman; do
    tool_log="$TMP/$([ "$tool" = cm ] && echo cm-server || echo podman).log"
    ifaces="$("exec_$tool" ls /sys/class/net)" || { tail_log "$tool_log"; die "$tool cannot exec in its container"; }
    ifaces="$(echo $ifaces)"
    [ "$ifaces" = lo ] || die "a $tool container sees the network interfaces '$ifaces', not just 'lo':" \
        "the network modes are no longer comparable"
done
# What settle() waits for: the processes the two running containers keep (after any exec's have gone).
sleep 0.5
BASE_PIDS="$(our_pids | sort | tr '\n' ' ')"
log "our processes between execs: $BASE_PIDS"

# Runs one exec ($1: cm or podman) of `true` and sets ELAPSED_US (no subshell: the measured span holds
# only the command's own fork, exec and exit).
ELAPSED_US=0
LAST_TOOL=""   # the tool of the previous exec (timed or not), and of the one before this exec: PREV_TOOL
PREV_TOOL=""
timed_exec() {
    local t0 t1
    PREV_TOOL="$LAST_TOOL"
    LAST_TOOL="$1"
    settle
    t0=$EPOCHREALTIME
    if ! "exec_$1" true >/dev/null; then
        tail_log "$TMP/$([ "$1" = cm ] && echo cm-server || echo podman).log"
        die "$1 exec failed"
    fi
    t1=$EPOCHREALTIME
    ELAPSED_US=$((${t1/./} - ${t0/./}))
}

log "$WARMUP untimed warm-up execs each"
for ((run = 1; run <= WARMUP; run++)); do
    timed_exec cm
    timed_exec podman
done

CM_US=()
PODMAN_US=()
: >"$TMP/by-predecessor.txt"
LOAD_BEFORE="$(cut -d ' ' -f 1-3 /proc/loadavg)"
for ((run = 1; run <= RUNS; run++)); do
    if ((run % 2)); then
        timed_exec cm
        CM_US+=("$ELAPSED_US")
        echo "cm $PREV_TOOL $ELAPSED_US" >>"$TMP/by-predecessor.txt"
        timed_exec podman
        PODMAN_US+=("$ELAPSED_US")
        echo "podman $PREV_TOOL $ELAPSED_US" >>"$TMP/by-predecessor.txt"
    else
        timed_exec podman
        PODMAN_US+=("$ELAPSED_US")
        echo "podman $PREV_TOOL $ELAPSED_US" >>"$TMP/by-predecessor.txt"
        timed_exec cm
        CM_US+=("$ELAPSED_US")
        echo "cm $PREV_TOOL $ELAPSED_US" >>"$TMP/by-predecessor.txt"
    fi
    ((run % 10 == 0 || run == RUNS)) &&
        log "run $run/$RUNS: cm $(ms "${CM_US[-1]}") ms, podman $(ms "${PODMAN_US[-1]}") ms"
done
LOAD_AFTER="$(cut -d ' ' -f 1-3 /proc/loadavg)"
settle

# --- where the time goes --------------------------------------------------------------------------
# Runs "$@" SPLIT_RUNS times (each after settle) and appends the microseconds of each to $TMP/split-LABEL.txt.
time_cmd() {
    local label="$1" i t0 t1
    shift
    : >"$TMP/split-$label.txt"
    for ((i = 1; i <= SPLIT_RUNS; i++)); do
        settle
        t0=$EPOCHREALTIME
        "$@" >/dev/null 2>>"$TMP/cm-client.log" </dev/null || die "'$*' failed"
        t1=$EPOCHREALTIME
        echo $((${t1/./} - ${t0/./})) >>"$TMP/split-$label.txt"
    done
}
log "where the time goes: process start and a trivial call ($SPLIT_RUNS runs each)"
time_cmd version "$BIN/cm-client" --version
time_cmd images cm images
log "where the time goes: $SPLIT_RUNS execs through the API, split at the frames the client receives"
settle
"$BIN/cm-bench" exec-latency --host "$CM_HOST" --container "$CM_ID" --runs "$SPLIT_RUNS" >"$TMP/exec-latency.txt" ||
    { tail_log "$TMP/cm-server.log"; die "cm-bench exec-latency failed"; }
settle

# --- report ---------------------------------------------------------------------------------------
printf '%s\n' "${CM_US[@]}" >"$TMP/cm-us.txt"
CM_P50="$("$BIN/cm-bench" median "$TMP/cm-us.txt")"

machine_facts
echo "## cm-client exec vs podman exec (busybox, \`true\` in a running container)"
echo
echo "- machine: $(nproc) CPUs (${cpu:-unknown}), $mem RAM, kernel $(uname -r), cgroup $cgroups, stores on $fs"
echo "- image: $REF (cm-fixture busybox), pulled once into each store before timing"
echo "- cm: \`cm-client exec C true\` into \`cm-client run -d --network none IMAGE sleep 100000\`, cm-server at" \
    "default settings (own --root, socket, cgroup parent and bridge); the container has a network namespace" \
    "with only lo (checked)"
echo "- podman: \`podman exec P true\` into \`podman run -d --network none --runtime runc ${PODMAN_ULIMITS[*]}" \
    "--cgroup-parent $PODMAN_CGROUP IMAGE sleep 100000\`; $(podman --version), $(runc --version | head -n 1)," \
    "storage driver $DRIVER, cgroupfs, events none (container sees only lo: checked)"
[ -z "$ULIMIT_NOTE" ] || echo "- note: $ULIMIT_NOTE"
echo "- $RUNS timed execs each, interleaved (cm first on odd runs, podman first on even ones), after $WARMUP" \
    "untimed warm-ups each; before each exec, untimed: wait until the previous exec's processes are gone," \
    "then sync"
echo "- time: wall clock from fork to exit of the client command"
load_lines
echo
report_comparison exec "cm-client exec" "podman exec"

split_row() { "$BIN/cm-bench" row --short --label "$2" "$TMP/split-$1.txt"; }
split_median() { "$BIN/cm-bench" median "$TMP/split-$1.txt"; }
echo
echo "## Where the time goes (cm exec)"
echo
echo "### The client process ($SPLIT_RUNS runs each)"
echo
echo "| command | median | min | max |"
echo "|---------|-------:|----:|----:|"
split_row version "\`cm-client --version\`: process start only, no connection"
split_row images "\`cm-client images\`: process start, connect, one ListImages call (1 image)"
echo
echo "Against $(ms "$CM_P50") ms for \`cm-client exec C true\` (p50 above): process start is" \
    "$((100 * $(split_median version) / CM_P50))% of it, process start + connect + one unary call" \
    "$((100 * $(split_median images) / CM_P50))%."

echo
echo "### $SPLIT_RUNS execs through the API, split at the frames the client receives (\`cm-bench exec-latency\`)"
echo
echo "One connection (no client process start); each phase from the client's side, so it includes the"
echo "transport both ways."
echo
cat "$TMP/exec-latency.txt"
