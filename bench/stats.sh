#!/usr/bin/env bash
# Stats benchmark: latency of a one-shot resource usage sample, of one running container and of N running
# containers in one call, cm against `podman stats --no-stream`.
#
#   sudo bench/stats.sh                       # 100 timed calls each for cm, 20 for podman, 50 containers
#   sudo RUNS=200 PODMAN_RUNS=30 CONTAINERS=50 bench/stats.sh
#   sudo TARGET_MS=5 bench/stats.sh           # the p50 cm should meet for one container (default 5 ms)
#   sudo KEEP_LOGS=1 bench/stats.sh           # keep the logs (cm-server, podman) afterwards
#
# One registry (cm-fixture registry, i.e. Debian's docker-registry) serves the busybox fixture image; both
# tools pull it once, untimed, then run CONTAINERS containers each (`sleep 100000`; cm: `cm-client run -d`
# on its default bridge, so its samples also read eth0 counters,
# podman: `podman run -d --network none --runtime runc`). Then, with all of them running:
#
# - cm, the API: `cm-bench stats-latency`, a loop over the generated gRPC client on one connection, times
#   RUNS one-shot Stats calls (no_stream) of the first container, then RUNS of all running containers (an empty
#   list), each from sending the request to the end of the stream, and checks every call returned 1 (resp.
#   CONTAINERS) samples. This is what a program using the API pays; `cm-client --version` (process start
#   alone, SPLIT_RUNS runs) is timed too, to show what a command line tool adds. (`cm-client stats --no-stream`
#   itself takes two samples a second apart to show a CPU percent, as docker does, so it is not timed.)
# - podman: `podman stats --no-stream --no-reset CONTAINER` and `podman stats --no-stream --no-reset` (all),
#   PODMAN_RUNS times each, wall clock from fork to exit (bash's $EPOCHREALTIME).
#
# Percentiles: p50 is the median (mean of the middle two for an even count), p90 the nearest rank; statistics
# and tables come from cm-bench (tests/src/bin/cm-bench.rs).
# Isolation and cleanup as in bench/exec.sh: podman runs with a throwaway store (--root/--runroot/--tmpdir and
# a storage.conf of its own under the temp dir) and its cgroups under /cm-bench-PID-podman; /etc, /var/lib and
# /run are covered by overlays and /dev/shm by a tmpfs in a private mount namespace the whole script runs in.
# cm-server gets its own --root and socket in the temp dir and the cgroup parent cm-bench-PID. Everything is
# cleaned up on exit. Report on stdout, progress on stderr. Needs root, podman and runc
# (scripts/install-deps --bench), unshare and Debian's docker-registry.
set -euo pipefail
shopt -s inherit_errexit   # command substitutions stop at errors too

BENCH=stats
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_enter_namespace "$@"   # root check, then this script again in a private mount namespace
export LC_ALL=C   # $EPOCHREALTIME with a decimal point, C sorting

RUNS="${RUNS:-100}"
PODMAN_RUNS="${PODMAN_RUNS:-20}"
SPLIT_RUNS="${SPLIT_RUNS:-11}"
CONTAINERS="${CONTAINERS:-50}"
TARGET_MS="${TARGET_MS:-5}"
KEEP_LOGS="${KEEP_LOGS:-0}"

LOAD_START="$(cut -d ' ' -f 1-3 /proc/loadavg)"   # before this script does anything
cd "$(dirname "$0")/.." || exit 1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/cm-target}"
BIN="$CARGO_TARGET_DIR/release"
REPO_TAG="bench/busybox:latest"
CM_CGROUP="cm-bench-$$"
PODMAN_CGROUP="/cm-bench-$$-podman"

for n in RUNS PODMAN_RUNS SPLIT_RUNS CONTAINERS TARGET_MS; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || die "$n must be a non-negative integer, got '${!n}'"
done
[ "$RUNS" -ge 1 ] && [ "$PODMAN_RUNS" -ge 1 ] && [ "$SPLIT_RUNS" -ge 1 ] && [ "$CONTAINERS" -ge 1 ] ||
    die "RUNS, PODMAN_RUNS, SPLIT_RUNS and CONTAINERS must be at least 1"
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
TMP="$(mktemp -d /tmp/cm-bench-stats.XXXXXX)"
REGISTRY_PID=""
SERVER_PID=""
PODMAN_DIR=""   # podman's isolated store, once chosen
OVERLAYS=()     # the machine directories overlaid in this mount namespace
CM_HOST="unix:$TMP/cm.sock"

trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- isolation of podman, registry, servers and images --------------------------------------------
mount_host_overlays /etc /var/lib /run
mount_shm_tmpfs

# --- registry, image, cm-server ------------------------------------------------------------------
serve_image_and_start_server

podman_pull_image

# --- the running containers -----------------------------------------------------------------------
PODMAN_ULIMITS=(--ulimit host)
run_podman_detached() {
    podman_ run -d --network none --runtime runc "${PODMAN_ULIMITS[@]}" --cgroup-parent "$PODMAN_CGROUP" \
        "$REF" sleep 100000 </dev/null 2>>"$TMP/podman.log"
}
ULIMIT_NOTE=""
log "starting $CONTAINERS containers per tool (sleep 100000)"
CM_IDS=()
PM_IDS=()
for ((i = 0; i < CONTAINERS; i++)); do
    id="$(cm run -d "$REF" sleep 100000 </dev/null 2>>"$TMP/cm-client.log")" ||
        { tail_log "$TMP/cm-server.log"; die "cm-client run -d failed"; }
    CM_IDS+=("$id")
    if ! id="$(run_podman_detached)"; then
        [ "$i" = 0 ] || { tail_log "$TMP/podman.log"; die "podman run -d failed"; }
        podman_ rm -a -f -t 0 >/dev/null 2>&1 || true   # whatever the failed attempt left
        podman_ulimit_fallback
        id="$(run_podman_detached)" || { tail_log "$TMP/podman.log"; die "podman run -d failed"; }
    fi
    PM_IDS+=("$id")
done
[ "$(cm ps -q | wc -l)" = "$CONTAINERS" ] || die "not all $CONTAINERS cm containers run"
[ "$(podman_ ps -q | wc -l)" = "$CONTAINERS" ] || die "not all $CONTAINERS podman containers run"

# --- timed runs -----------------------------------------------------------------------------------
# Runs "$@" PODMAN_RUNS (or $1 when numeric) times, appending the wall-clock microseconds of each to $TMP/$label.
time_cmd() {
    local label="$1" runs="$2" i t0 t1
    shift 2
    : >"$TMP/$label.txt"
    for ((i = 1; i <= runs; i++)); do
        t0=$EPOCHREALTIME
        "$@" >/dev/null 2>>"$TMP/$label.log" </dev/null || { tail_log "$TMP/$label.log"; die "'$*' failed"; }
        t1=$EPOCHREALTIME
        echo $((${t1/./} - ${t0/./})) >>"$TMP/$label.txt"
    done
}

LOAD_BEFORE="$(cut -d ' ' -f 1-3 /proc/loadavg)"
log "cm: $RUNS one-shot Stats calls of one container, then of all $CONTAINERS (one connection)"
"$BIN/cm-bench" stats-latency --host "$CM_HOST" --runs 3 --expect 1 "${CM_IDS[0]}" >/dev/null   # warm-up
"$BIN/cm-bench" stats-latency --host "$CM_HOST" --runs "$RUNS" --expect 1 "${CM_IDS[0]}" >"$TMP/cm-one.txt" ||
    { tail_log "$TMP/cm-server.log"; die "timing Stats of one container failed"; }
"$BIN/cm-bench" stats-latency --host "$CM_HOST" --runs "$RUNS" --expect "$CONTAINERS" >"$TMP/cm-all.txt" ||
    { tail_log "$TMP/cm-server.log"; die "timing Stats of all containers failed"; }
time_cmd cm-version "$SPLIT_RUNS" "$BIN/cm-client" --version
log "podman: $PODMAN_RUNS \`podman stats --no-stream\` of one container, then of all $CONTAINERS"
podman_ stats --no-stream --no-reset "${PM_IDS[0]}" >"$TMP/podman-sample.log" 2>&1 ||
    { tail_log "$TMP/podman-sample.log"; die "podman stats does not work here"; }
time_cmd podman-one "$PODMAN_RUNS" podman_ stats --no-stream --no-reset "${PM_IDS[0]}"
time_cmd podman-all "$PODMAN_RUNS" podman_ stats --no-stream --no-reset
[ "$(podman_ stats --no-stream --no-reset --format '{{.ID}}' | wc -l)" = "$CONTAINERS" ] ||
    die "podman stats did not list all $CONTAINERS containers"
LOAD_AFTER="$(cut -d ' ' -f 1-3 /proc/loadavg)"

# --- report ---------------------------------------------------------------------------------------
machine_facts
echo "## One-shot stats: cm (gRPC API) vs podman stats --no-stream (busybox \`sleep\` containers)"
echo
echo "- machine: $(nproc) CPUs (${cpu:-unknown}), $mem RAM, kernel $(uname -r), cgroup $cgroups"
echo "- $CONTAINERS running containers per tool; cm: Stats(no_stream) over one unix-socket connection" \
    "(\`cm-bench stats-latency\`, the generated Rust client), request to last sample; podman:" \
    "\`podman stats --no-stream --no-reset\` ($(podman --version), $(runc --version | head -n 1), cgroupfs," \
    "storage driver $DRIVER), process fork to exit"
[ -z "$ULIMIT_NOTE" ] || echo "- note: $ULIMIT_NOTE"
load_lines
echo
echo "| what | runs | min | p50 | p90 | max |"
echo "|------|-----:|----:|----:|----:|----:|"
row() { "$BIN/cm-bench" row --label "$1" "$TMP/$2.txt"; }
row "cm Stats, 1 container (API)" cm-one
row "cm Stats, all $CONTAINERS containers in one call (API)" cm-all
row "\`cm-client --version\` (process start, no call)" cm-version
row "podman stats --no-stream, 1 container" podman-one
row "podman stats --no-stream, all $CONTAINERS containers" podman-all
echo
p50() { "$BIN/cm-bench" median "$TMP/$1.txt"; }
CM_ONE="$(p50 cm-one)"
if [ "$CM_ONE" -le $((TARGET_MS * 1000)) ]; then
    echo "Target: one-shot Stats of one container p50 <= $TARGET_MS ms: **met** (p50 $(ms "$CM_ONE") ms)"
else
    echo "Target: one-shot Stats of one container p50 <= $TARGET_MS ms: **not met** (p50 $(ms "$CM_ONE") ms)"
fi
CM_ALL="$(p50 cm-all)"
PM_ALL="$(p50 podman-all)"
echo "All $CONTAINERS containers: cm $(ms "$CM_ALL") ms ($((CM_ALL / CONTAINERS)) us a container)," \
    "podman $(ms "$PM_ALL") ms: podman / cm = $((PM_ALL / CM_ALL))x"
