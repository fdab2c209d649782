# Shared by the bench scripts (pull.sh, run.sh, exec.sh); sourced, never run. The script sets BENCH (its
# name: "pull", "run" or "exec") before sourcing, and TMP, REGISTRY_PID, SERVER_PID, OVERLAYS, ... as each
# function below says.
#
# Conventions (see the scripts' headers): the script runs as root in a private mount namespace of its own;
# everything it creates lives under $TMP, podman's machine-wide paths are covered by overlays, and the
# script's cleanup removes processes, cgroups, mounts and $TMP.

# Exits unless root; then re-runs the script in a private mount namespace (same pid: unshare execs it) for
# the overlays of mount_host_overlays. Call with the script's arguments.
bench_enter_namespace() {
    [ "$(id -u)" = 0 ] ||
        { echo "$BENCH.sh: run as root (sudo bench/$BENCH.sh): cm-server and podman need it" >&2; exit 1; }
    if [ -z "${CM_BENCH_MOUNT_NS:-}" ]; then
        CM_BENCH_MOUNT_NS=1 exec unshare --mount --propagation private -- "$BASH" "$0" "$@"
    fi
}

log() { echo "$BENCH.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Prints the last lines of a log file to stderr (for error messages).
tail_log() { log "last lines of $1:"; tail -n 20 "$1" >&2 || true; }

# Stops a background process we started: SIGTERM (or $2), up to 5 s of grace, then SIGKILL.
stop_pid() {
    local pid="$1" sig="${2:-TERM}" i
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        return 0
    fi
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Prints the pids of processes whose command line mentions the temp dir, except this script, the registry,
# cm-server and perf ($PERF_PID, if set): cm-monitors (their argument is the container directory), conmon
# and podman cleanup processes (their arguments name podman's store). Bash builtins only: cheap enough to
# poll between runs.
our_pids() {
    local f pid args
    for f in /proc/[0-9]*/cmdline; do
        pid="${f#/proc/}"
        pid="${pid%/cmdline}"
        [ "$pid" = "$$" ] || [ "$pid" = "$REGISTRY_PID" ] || [ "$pid" = "$SERVER_PID" ] && continue
        [ "$pid" = "${PERF_PID:-}" ] && continue
        mapfile -d '' -t args 2>/dev/null <"$f" || continue
        [[ "${args[*]}" == *"$TMP/"* ]] && echo "$pid"
    done
    return 0
}

# Ends whatever is left of our processes (a monitor of a container the server could not remove, a conmon,
# a podman cleanup): SIGTERM, up to 3 s of grace, then SIGKILL with a warning.
kill_our_pids() {
    local i pid
    for pid in $(our_pids); do
        kill -TERM "$pid" 2>/dev/null
    done
    for ((i = 0; i < 30; i++)); do
        [ -z "$(our_pids)" ] && break
        sleep 0.1
    done
    for pid in $(our_pids); do
        log "warning: killing leftover process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null))"
        kill -KILL "$pid" 2>/dev/null
    done
    return 0
}

# The cgroup directories of this run (cm's parent $CM_CGROUP and podman's $PODMAN_CGROUP), every hierarchy.
our_cgroups() {
    local d
    for d in /sys/fs/cgroup/*/"$CM_CGROUP" /sys/fs/cgroup/*/"${PODMAN_CGROUP#/}" \
        /sys/fs/cgroup/"$CM_CGROUP" /sys/fs/cgroup/"${PODMAN_CGROUP#/}"; do
        [ -d "$d" ] && echo "$d"
    done
    return 0
}

# Removes our cgroups, deepest first; processes still in them are ours (a container's init) and killed.
remove_cgroups() {
    local top d pid
    for top in $(our_cgroups); do
        while read -r d; do
            while read -r pid; do
                kill -KILL "$pid" 2>/dev/null
            done <"$d/cgroup.procs"
            rmdir "$d" 2>/dev/null || { sleep 0.2; rmdir "$d" 2>/dev/null; } ||
                log "warning: could not remove the cgroup $d"
        done < <(find "$top" -depth -type d)
    done
}

# Remembers what podman's bridge networking will change on the machine (its bridge podman0 and its iptables
# rules), so remove_networks can undo it. Call before podman runs a container on its bridge.
save_podman_network_state() {
    local t
    PODMAN_BRIDGE_EXISTED=0
    [ -e /sys/class/net/podman0 ] && PODMAN_BRIDGE_EXISTED=1
    PODMAN_NEW_TABLES=()   # the iptables-nft tables netavark will create, if they do not exist yet
    for t in nat filter; do
        nft list table ip "$t" >/dev/null 2>&1 || PODMAN_NEW_TABLES+=("$t")
    done
    iptables-save >"$TMP/iptables.before" 2>/dev/null || rm -f "$TMP/iptables.before"
}

# Removes cm-server's bridge and table, and what podman's bridge networking added since
# save_podman_network_state (podman0 if it was not there, the iptables rules netavark left).
remove_networks() {
    local t
    ip link del "$CM_BRIDGE" 2>/dev/null
    printf 'table ip %s {}\ndelete table ip %s\n' "$CM_TABLE" "$CM_TABLE" | nft -f - 2>/dev/null
    if [ -n "${PODMAN_BRIDGE_EXISTED:-}" ]; then
        [ "$PODMAN_BRIDGE_EXISTED" = 1 ] || ip link del podman0 2>/dev/null
        [ -f "$TMP/iptables.before" ] && iptables-restore <"$TMP/iptables.before"
        for t in "${PODMAN_NEW_TABLES[@]}"; do
            nft delete table ip "$t" 2>/dev/null
        done
    fi
    return 0
}

# The EXIT trap of run.sh, exec.sh and stats.sh: removes every container of both tools, stops perf
# ($PERF_PID), cm-server and the registry, ends leftover processes, removes cgroups, networks, mounts and
# $TMP (keeping the logs on failure or with KEEP_LOGS=1), and exits with the script's status.
bench_cleanup() {
    local status=$? left
    set +e
    trap - EXIT INT TERM
    stop_pid "${PERF_PID:-}" INT
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        left="$(cm ps -a -q --no-trunc 2>/dev/null)"
        [ -n "$left" ] && cm rm -f $left >/dev/null 2>&1
    fi
    stop_pid "$SERVER_PID"
    if [ -n "${PODMAN_DIR:-}" ]; then
        podman_ rm -a -f -t 0 >/dev/null 2>&1   # -t 0: `sleep` as pid 1 ignores SIGTERM
        podman_ rmi -a -f >/dev/null 2>&1
    fi
    stop_pid "$REGISTRY_PID"
    kill_our_pids   # whatever is left of ours (a monitor the server could not remove, a podman cleanup)
    remove_cgroups
    remove_networks
    unmount_tmp
    unmount_overlays
    keep_logs_and_remove_tmp "$status" '*.log' '*.txt'
    [ -n "$(our_cgroups)" ] && log "warning: cgroups left: $(our_cgroups | tr '\n' ' ')"
    exit "$status"
}

# Unmounts everything mounted under $TMP (overlay roots of containers, podman's bind mounts), deepest first.
unmount_tmp() {
    local mp
    awk -v tmp="$TMP/" 'index($5, tmp) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r mp; do
            umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "warning: could not unmount $mp"
        done
}

# Unmounts the overlays and tmpfs of mount_host_overlays and mount_shm_tmpfs, last first.
unmount_overlays() {
    local i
    for ((i = ${#OVERLAYS[@]} - 1; i >= 0; i--)); do
        umount "${OVERLAYS[i]}" 2>/dev/null || umount -l "${OVERLAYS[i]}" 2>/dev/null
    done
    return 0
}

# The end of every cleanup: on failure or with KEEP_LOGS=1 copies $TMP's files matching the patterns
# ("*.log", ...) to a new /tmp/cm-bench-$BENCH-logs.* directory; then removes $TMP.
keep_logs_and_remove_tmp() {
    local status="$1" keep pattern
    shift
    if [ "$status" != 0 ] || [ "$KEEP_LOGS" = 1 ]; then
        keep="$(mktemp -d "/tmp/cm-bench-$BENCH-logs.XXXXXX")"
        for pattern in "$@"; do
            cp "$TMP"/$pattern "$keep"/ 2>/dev/null
        done
        log "logs kept in $keep"
    fi
    # --one-file-system: should an unmount have failed, never delete through a mount point.
    rm -rf --one-file-system "$TMP"
    [ -e "$TMP" ] && log "warning: $TMP could not be removed entirely"
    return 0
}

# Overlays on machine-wide directories ($@) podman and runc write to regardless of --root: in this mount
# namespace, writes there land in $TMP/host-overlays; the real directories stay untouched. (An overlay
# hides mounts below its directory; no tool here needs any under /etc, /var/lib or /run.)
mount_host_overlays() {
    local dir upper
    for dir in "$@"; do
        upper="$TMP/host-overlays/${dir//\//_}"
        mkdir -p "$upper/upper" "$upper/work"
        mount -t overlay overlay -o "lowerdir=$dir,upperdir=$upper/upper,workdir=$upper/work" "$dir" ||
            die "could not mount an overlay on $dir (needed to keep podman's writes off the machine)"
        OVERLAYS+=("$dir")
    done
}
# podman's lock file (/dev/shm/libpod_lock) goes to a tmpfs of this namespace.
mount_shm_tmpfs() {
    mount -t tmpfs -o mode=1777,size=64m tmpfs /dev/shm || die "could not mount a tmpfs on /dev/shm"
    OVERLAYS+=(/dev/shm)
}

# True when something listens on 127.0.0.1:$1 or 0.0.0.0:$1 (IPv4; /proc/net/tcp, state 0A = LISTEN).
port_in_use() {
    local hex
    hex="$(printf '%04X' "$1")"
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp
}

# Picks a free port, starts the registry there (cm-fixture registry, in $TMP/registry) and waits for it;
# retries when another process grabbed the port in between (the registry then exits with "address already
# in use"). Sets REGISTRY_PID and REGISTRY (127.0.0.1:port).
start_registry() {
    local attempt port
    for attempt in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" && continue
        "$BIN/cm-fixture" registry --dir "$TMP/registry" --port "$port" >/dev/null 2>"$TMP/registry.log" &
        REGISTRY_PID=$!   # cm-fixture execs docker-registry: this is the registry's pid
        if "$BIN/cm-fixture" wait-registry --registry "127.0.0.1:$port" >/dev/null 2>&1 &&
            kill -0 "$REGISTRY_PID" 2>/dev/null; then
            REGISTRY="127.0.0.1:$port"
            return 0
        fi
        log "registry on port $port did not come up (attempt $attempt)"
        stop_pid "$REGISTRY_PID"
        REGISTRY_PID=""
    done
    tail_log "$TMP/registry.log"
    die "could not start the registry (cm-fixture registry; needs Debian's docker-registry)"
}

cm() { "$BIN/cm-client" --host "$CM_HOST" "$@"; }

# cm-server's bridge, subnet and nftables table in benchmarks: its own, removed by remove_networks.
CM_BRIDGE="cmb$$"
CM_SUBNET="10.210.0.0/24"
CM_TABLE="cm_bench_$$"

# Starts cm-server (own --root in $TMP, socket $CM_HOST, cgroup parent $CM_CGROUP when set, bridge
# $CM_BRIDGE) in the background with the given extra flags, logging to $1; waits until it answers. Sets
# SERVER_PID.
start_server() {
    local server_log="$1" i
    shift
    "$BIN/cm-server" --root "$TMP/cm-root" --listen "$CM_HOST" ${CM_CGROUP:+--cgroup-parent "$CM_CGROUP"} \
        --bridge "$CM_BRIDGE" --subnet "$CM_SUBNET" --nft-table "$CM_TABLE" "$@" >"$server_log" 2>&1 &
    SERVER_PID=$!
    for ((i = 0; ; i++)); do
        cm images >/dev/null 2>&1 && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null || [ "$i" -ge 100 ]; then
            tail_log "$server_log"
            die "cm-server did not come up on $CM_HOST"
        fi
        sleep 0.1
    done
}

# Starts the registry and pushes the busybox fixture as $REPO_TAG (sets REF), then starts cm-server and pulls
# REF into its store, untimed.
serve_image_and_start_server() {
    start_registry
    REF="$REGISTRY/$REPO_TAG"
    log "registry on $REGISTRY; pushing busybox as $REPO_TAG"
    "$BIN/cm-fixture" push --registry "$REGISTRY" --image busybox --name "$REPO_TAG" >"$TMP/push.log" 2>&1 ||
        { tail_log "$TMP/push.log"; die "pushing the busybox image failed"; }
    start_server "$TMP/cm-server.log"
    log "cm-server up (pid $SERVER_PID); pulling the image into cm's store"
    cm pull "$REF" >"$TMP/cm-pull.log" 2>&1 || { tail_log "$TMP/cm-server.log"; die "cm-client pull failed"; }
}

# A store of podman's own: its storage.conf replaces the machine's (no mount_program, no additional
# image stores), and --root/--runroot/--tmpdir/TMPDIR keep every file it writes under $TMP. Sets DRIVER
# and PODMAN_DIR for podman_.
podman_store() {
    DRIVER="$1"
    PODMAN_DIR="$TMP/podman-$1"
    mkdir -p "$PODMAN_DIR/tmp"
    printf '[storage]\ndriver = "%s"\nrunroot = "%s"\ngraphroot = "%s"\n' \
        "$DRIVER" "$PODMAN_DIR/run" "$PODMAN_DIR/root" >"$PODMAN_DIR/storage.conf"
}
# podman with its isolated store (a function, not `env ...`: no extra process in the timed runs).
podman_() {
    CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf" TMPDIR="$PODMAN_DIR/tmp" podman \
        --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/run" --tmpdir "$PODMAN_DIR/tmp" \
        --storage-driver "$DRIVER" --events-backend none --cgroup-manager cgroupfs "$@"
}

# Pulls $REF into podman's isolated store (podman_store): overlay, else vfs when overlay fails here. Checks
# that podman with runc works at all first. Logs to $TMP/podman.log.
podman_pull_image() {
    podman_store overlay
    podman_ --runtime runc info >"$TMP/podman-info.log" 2>&1 ||
        { tail_log "$TMP/podman-info.log"; die "podman --runtime runc info fails in this setup"; }
    log "pulling the image into podman's store"
    if ! podman_ pull --tls-verify=false "$REF" >>"$TMP/podman.log" 2>&1; then
        tail_log "$TMP/podman.log"
        log "podman with the overlay driver failed; falling back to vfs"
        podman_ rmi -a -f >/dev/null 2>&1 || true
        podman_store vfs
        podman_ pull --tls-verify=false "$REF" >>"$TMP/podman.log" 2>&1 ||
            { tail_log "$TMP/podman.log"; die "podman pull does not work on this machine (see above)"; }
    fi
    podman_ image exists "$REF" || die "podman pull succeeded but the image is not in podman's store"
}

# Without CAP_SYS_RESOURCE podman's default rlimits (nofile and nproc 1048576, above the hard limits) make
# runc fail. `--ulimit host` keeps the host's limits where podman supports it; podman 4.3 accepts it but
# still asks for its defaults. Then the container gets the limits podman itself runs with, spelled out: the
# hard nofile limit, and nproc capped at pid_max (podman 4.3's own processes run with nproc = pid_max here;
# asking runc for more fails). Sets PODMAN_ULIMITS to those and ULIMIT_NOTE for the report.
podman_ulimit_fallback() {
    local nofile nproc pid_max
    nofile="$(ulimit -Hn)"
    nproc="$(ulimit -Hu)"
    pid_max="$(cat /proc/sys/kernel/pid_max)"
    [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ] && nproc="$pid_max"
    PODMAN_ULIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
    ULIMIT_NOTE="\`--ulimit host\` made runc fail (podman $(podman --version | awk '{ print $3 }') still asks for its"
    ULIMIT_NOTE+=" default rlimits, above the hard limits: no CAP_SYS_RESOURCE here), so podman ran with"
    ULIMIT_NOTE+=" \`${PODMAN_ULIMITS[*]}\` (the limits podman itself runs with) instead"
    log "podman run --ulimit host fails here; using ${PODMAN_ULIMITS[*]}"
}

# --- report helpers -------------------------------------------------------------------------------
# Statistics and tables come from cm-bench (tests/src/bin/cm-bench.rs); nothing here reads a log.
# Prints "min p50 p90 max" of the microsecond values on stdin (p50: median; p90: nearest rank).
stats() { "$BIN/cm-bench" summary; }
# Microseconds as "12.3 ms".
ms() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }
list_ms() { local us out=(); for us in "$@"; do out+=("$(ms "$us")"); done; echo "${out[*]}"; }

# The table and comparison lines of a run/exec report ($1: what, e.g. "run"; $2, $3: the table labels of cm
# and podman) from $TMP/by-predecessor.txt ("tool predecessor us" lines of every timed run, in order): the
# p50 ratio, whether cm met TARGET_MS, every run in order, and the p50s by the tool that ran just before.
report_comparison() {
    "$BIN/cm-bench" compare --what "$1" --cm-label "$2" --podman-label "$3" --target-ms "$TARGET_MS" \
        "$TMP/by-predecessor.txt"
}

# Sets cpu, mem, fs (the file system of $TMP) and cgroups (v1 or v2) for the report's machine line.
machine_facts() {
    cpu="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    mem="$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    fs="$(df -PT "$TMP" | awk 'NR == 2 { print $2 " (" $1 ")" }')"
    cgroups="$([ -f /sys/fs/cgroup/cgroup.controllers ] && echo v2 || echo v1)"
}

# The report's load-average line (LOAD_START, LOAD_BEFORE, LOAD_AFTER), and a warning when the machine was
# busy when the script started.
load_lines() {
    echo "- load average (1, 5, 15 min) when the script started: $LOAD_START; before the timed runs:" \
        "$LOAD_BEFORE; after them: $LOAD_AFTER (this script alone keeps about one CPU busy)"
    if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l >= 0.5) }'; then
        echo "- **WARNING: the machine was busy with other work when the script started (load ${LOAD_START%% *}" \
            "on $(nproc) CPUs): all times below are inflated and noisier than on an idle machine.**"
    fi
}
