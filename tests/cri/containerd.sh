#!/bin/bash
# The reference runtime for scripts/critest: Debian's containerd (1.6, its CRI plugin, runc) with a state of
# its own under $DIR (default /run/cm-critest-containerd), configured as scripts/critest expects: the test
# registry for registry.k8s.io, k8s.gcr.io, gcr.io and docker.io (and never the real ones), the CNI plugins
# of the kit and the network scripts/critest writes.
#
#   tests/cri/containerd.sh start    # then: scripts/critest --conformance unix://$DIR/containerd.sock
#   tests/cri/containerd.sh stop     # removes pods, shims, mounts, cgroups and $DIR
#
# Needs `apt-get install --no-install-recommends containerd runc` (not in install-deps: only for comparing).
set -euo pipefail
DIR=${CONTAINERD_DIR:-/run/cm-critest-containerd}
REGISTRY=${CRITEST_REGISTRY:-127.0.0.1:5000}
CRITEST_DIR=${CRITEST_DIR:-/run/cm-critest}
T=${CM_TOOLS:-/var/cache/cm-tools}
CRICTL="$T/cri-tools-v1.37.0/crictl --runtime-endpoint unix://$DIR/containerd.sock --timeout 30s"

start() {
  command -v containerd >/dev/null && command -v runc >/dev/null ||
    { echo "containerd.sh: apt-get install --no-install-recommends containerd runc" >&2; exit 1; }
  if [ -f "$DIR/containerd.pid" ] && kill -0 "$(cat "$DIR/containerd.pid")" 2>/dev/null; then
    echo "containerd already runs: pid $(cat "$DIR/containerd.pid")"; return
  fi
  mkdir -p "$DIR/root" "$DIR/state" "$DIR/opt"
  # containerd 1.6 ignores a hosts.toml without a [host] table and then goes to the upstream registry
  # itself: each file names the test registry both as server and as its only host.
  for r in registry.k8s.io k8s.gcr.io gcr.io docker.io "$REGISTRY"; do
    mkdir -p "$DIR/certs.d/$r"
    printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
      "$REGISTRY" "$REGISTRY" > "$DIR/certs.d/$r/hosts.toml"
  done
  cat > "$DIR/config.toml" <<EOF
version = 2
root = "$DIR/root"
state = "$DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$DIR/containerd.sock"
[ttrpc]
  address = "$DIR/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REGISTRY/crikit/pause:sandbox"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # no CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj below containerd's own
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$DIR/state/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$T/cni-plugins-v1.10.0"
    conf_dir = "$CRITEST_DIR/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$DIR/certs.d"
EOF
  containerd --config "$DIR/config.toml" >> "$DIR/containerd.log" 2>&1 &
  echo $! > "$DIR/containerd.pid"
  for _ in $(seq 100); do
    [ -S "$DIR/containerd.sock" ] && $CRICTL version >/dev/null 2>&1 && break
    sleep 0.2
  done
  echo "containerd pid $(cat "$DIR/containerd.pid") on unix://$DIR/containerd.sock"
}

stop() {
  local pid f m
  pid=$(cat "$DIR/containerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    $CRICTL rmp --all --force >/dev/null 2>&1 || true
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  fi
  for f in "$DIR"/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then kill "$pid"; fi
  done
  { grep -E " $DIR/(root|state)" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
    umount "$m" || umount -l "$m"
  done
  for f in /sys/fs/cgroup/*/k8s.io; do if [ -d "$f" ]; then rmdir "$f" 2>/dev/null || true; fi; done
  rm -rf "$DIR"
  echo stopped
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: tests/cri/containerd.sh start|stop" >&2; exit 2 ;;
esac
