#!/usr/bin/env bash
# Pull benchmark: `cm-client pull` versus `podman pull` of the same image from a loopback registry.
#
#   sudo bench/pull.sh                      # 5 runs each of a ~60 MiB, 4-layer image
#   sudo RUNS=9 MB=200 LAYERS=8 bench/pull.sh
#   sudo KEEP_LOGS=1 bench/pull.sh          # keep the registry, cm-server and podman logs afterwards
#
# One registry (cm-fixture registry, i.e. Debian's docker-registry) serves one bench image: busybox plus
# LAYERS gzip layers of incompressible data, MB MiB compressed in total. Each run removes the image and
# pulls it again, so every run downloads, verifies and unpacks every layer; cm and podman runs alternate
# (cm 1, podman 1, cm 2, ...) to spread machine noise over both. One untimed warm-up pull per tool
# comes first (binaries, registry blobs in the page cache). Each timed pull is preceded by an untimed
# `sync`, so pending writeback does not land on the run; nothing else is flushed or dropped (no cache
# dropping), and neither tool's own fsync behaviour is changed. A run is the wall-clock time of the
# client command, from start to exit.
#
# podman runs as root with a throwaway store (--root/--runroot/--tmpdir and a storage.conf of its own
# under the temp dir). Some paths podman 4 writes whatever its flags say (/var/lib/containers/cache,
# /etc/containers/networks, /etc/cni/net.d/cni.lock, /run/containers) are covered by overlays whose
# upper layers live in the temp dir, in a private mount namespace the whole script runs in: nothing
# on the machine is written, and every mount disappears with the script. Only pulls, no containers.
# Everything (processes, mounts, temp dirs) is cleaned up on exit. Report on stdout, progress on stderr.
# Statistics and tables come from cm-bench (tests/src/bin/cm-bench.rs). Needs root, podman
# (scripts/install-deps --bench), unshare and Debian's docker-registry.
set -euo pipefail
shopt -s inherit_errexit   # command substitutions ($(timed_pull ...)) stop at errors too

BENCH=pull
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_enter_namespace "$@"   # root check, then this script again in a private mount namespace

RUNS="${RUNS:-5}"
MB="${MB:-60}"
LAYERS="${LAYERS:-4}"
KEEP_LOGS="${KEEP_LOGS:-0}"

cd "$(dirname "$0")/.." || exit 1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/cm-target}"
BIN="$CARGO_TARGET_DIR/release"
REPO_TAG="bench/image:latest"

for n in RUNS MB LAYERS; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
command -v podman >/dev/null || die "podman is missing: run scripts/install-deps --bench"

# --- binaries -------------------------------------------------------------------------------------
if [ ! -x "$BIN/cm-server" ] || [ ! -x "$BIN/cm-client" ] || [ ! -x "$BIN/cm-fixture" ] || [ ! -x "$BIN/cm-bench" ]; then
    log "building cm (cargo build --release --workspace --bins)"
    cargo build --release --workspace --bins >&2
fi

# --- temp dir and cleanup -------------------------------------------------------------------------
TMP="$(mktemp -d /tmp/cm-bench-pull.XXXXXX)"
REGISTRY_PID=""
SERVER_PID=""
PODMAN=()   # the podman command line with its isolated store, once chosen
OVERLAYS=() # the machine directories overlaid in this mount namespace

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    stop_pid "$SERVER_PID"
    if [ ${#PODMAN[@]} -gt 0 ]; then
        "${PODMAN[@]}" rmi -a -f >/dev/null 2>&1
    fi
    stop_pid "$REGISTRY_PID"
    remove_networks
    unmount_tmp
    unmount_overlays
    keep_logs_and_remove_tmp "$status" '*.log'
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ns() { date +%s%N; }

# --- registry -------------------------------------------------------------------------------------
start_registry
REF="$REGISTRY/$REPO_TAG"
log "registry on $REGISTRY; pushing a $MB MiB, $LAYERS-layer bench image"
"$BIN/cm-fixture" push --registry "$REGISTRY" --image bench --mb "$MB" --layers "$LAYERS" --name "$REPO_TAG" \
    >"$TMP/push.log" 2>&1 || { tail_log "$TMP/push.log"; die "pushing the bench image failed"; }

# What a pull downloads: the sum of the manifest's sizes (config + every layer, compressed).
read -r IMAGE_BYTES IMAGE_LAYERS <<<"$("$BIN/cm-bench" image-size --registry "$REGISTRY" --name "$REPO_TAG")" ||
    die "could not read the image size from the manifest"

# --- cm-server ------------------------------------------------------------------------------------
CM_HOST="unix:$TMP/cm.sock"
start_server "$TMP/cm-server.log"   # no cgroup parent: pulls only, no containers

# Removes the image from cm's store if it is there; rmi also garbage-collects its blobs and snapshots,
# so the next pull downloads and unpacks everything again.
cm_reset() {
    if cm image inspect "$REF" >/dev/null 2>&1; then
        cm rmi "$REF" >/dev/null 2>&1 || true
        ! cm image inspect "$REF" >/dev/null 2>&1 || die "cm-client rmi left the image in cm's store"
    fi
}
cm_pull() { cm pull "$REF" >/dev/null; }

# --- podman ---------------------------------------------------------------------------------------
# Overlays on the machine-wide directories podman writes to regardless of --root (see the top; lib.sh).
mount_host_overlays /etc /var/lib /run

# A store of podman's own: its storage.conf replaces the machine's (no mount_program, no additional
# image stores), and --root/--runroot/--tmpdir/TMPDIR keep every file it writes under $TMP.
podman_cmd() {
    local driver="$1" dir="$TMP/podman-$1"
    mkdir -p "$dir/tmp"
    printf '[storage]\ndriver = "%s"\nrunroot = "%s"\ngraphroot = "%s"\n' \
        "$driver" "$dir/run" "$dir/root" >"$dir/storage.conf"
    PODMAN=(env "CONTAINERS_STORAGE_CONF=$dir/storage.conf" "TMPDIR=$dir/tmp"
        podman --root "$dir/root" --runroot "$dir/run" --tmpdir "$dir/tmp" --storage-driver "$driver"
        --events-backend none --cgroup-manager cgroupfs)
}
podman_reset() {
    local left
    "${PODMAN[@]}" rmi -a -f >/dev/null 2>&1 || true
    left="$("${PODMAN[@]}" images -q)" || die "podman images failed"
    [ -z "$left" ] || die "podman rmi -a -f left images in podman's store"
}
podman_pull() { "${PODMAN[@]}" pull --tls-verify=false "$REF" >>"$TMP/podman.log" 2>&1; }

# Check podman once (this is also its warm-up pull): overlay first, vfs if overlay does not work here.
DRIVER=overlay
podman_cmd overlay
if ! podman_pull; then
    tail_log "$TMP/podman.log"
    log "podman with the overlay driver failed; falling back to vfs"
    "${PODMAN[@]}" rmi -a -f >/dev/null 2>&1 || true   # whatever the overlay store got (its mounts: cleanup)
    DRIVER=vfs
    podman_cmd vfs
    podman_pull || { tail_log "$TMP/podman.log"; die "podman pull does not work on this machine (see above)"; }
fi
"${PODMAN[@]}" image exists "$REF" || die "podman pull succeeded but the image is not in podman's store"
podman_reset

# cm's warm-up pull, also a check that it works.
cm_reset
cm_pull || { tail_log "$TMP/cm-server.log"; die "cm-client pull failed"; }
cm image inspect "$REF" >/dev/null || die "cm-client pull succeeded but cm does not list the image"

# --- the runs -------------------------------------------------------------------------------------
# Runs one timed pull and prints its duration in nanoseconds; $1 is the tool (cm or podman).
timed_pull() {
    local tool="$1" t0 t1 tool_log
    tool_log="$TMP/$([ "$tool" = cm ] && echo cm-server || echo podman).log"
    "${tool}_reset"
    sync
    t0="$(now_ns)"
    "${tool}_pull" || { tail_log "$tool_log"; die "$tool pull failed"; }
    t1="$(now_ns)"
    echo $((t1 - t0))
}

secs() { printf '%d.%03d' $(($1 / 1000000000)) $(($1 / 1000000 % 1000)); }
: >"$TMP/runs.txt"
for ((run = 1; run <= RUNS; run++)); do
    cm_ns="$(timed_pull cm)"
    podman_ns="$(timed_pull podman)"
    printf 'cm %s\npodman %s\n' "$cm_ns" "$podman_ns" >>"$TMP/runs.txt"
    log "run $run/$RUNS: cm $(secs "$cm_ns") s, podman $(secs "$podman_ns") s"
done

# Every podman run must have downloaded every blob (podman says "skipped: already exists" otherwise).
! grep -q 'skipped: already exists' "$TMP/podman.log" || die "a podman pull reused blobs; see $TMP/podman.log"

# --- report ---------------------------------------------------------------------------------------
machine_facts
echo "## cm-client pull vs podman pull"
echo
echo "- machine: $(nproc) CPUs (${cpu:-unknown}), $mem RAM, kernel $(uname -r), store on $fs"
mib10=$((IMAGE_BYTES * 10 / 1048576))
echo "- image: $REF, $((mib10 / 10)).$((mib10 % 10)) MiB compressed" \
    "($IMAGE_BYTES bytes) in $IMAGE_LAYERS layers (busybox + $LAYERS incompressible gzip layers)"
echo "- $(podman --version), storage driver $DRIVER; cm-server at default settings"
echo "- each run pulls into an empty store (image removed before); runs interleaved; 1 untimed warm-up each"
if [ "$DRIVER" = vfs ]; then
    echo "- **WARNING: podman's overlay driver does not work here; podman used vfs, which copies every"
    echo "  layer in full on top of the previous ones. That makes podman slower: an unfair comparison.**"
fi
echo
"$BIN/cm-bench" pull-compare --bytes "$IMAGE_BYTES" --driver "$DRIVER" "$TMP/runs.txt"
