#!/bin/bash
# Builds the CRI test tools from the Go module proxy, once, into /var/cache/cm-tools (CM_TOOLS):
#   cri-tools-v1.37.0/{critest,crictl}   critest is the suite's test binary (go test -c ./cmd/critest)
#   cni-plugins-v1.10.0/{bridge,host-local,loopback,portmap}
# Idempotent and quiet when everything is there. Needs Go (>= the version cri-tools' go.mod asks for).
set -euo pipefail
T=${CM_TOOLS:-/var/cache/cm-tools}
CRI=$T/cri-tools-v1.37.0
CNI=$T/cni-plugins-v1.10.0
export GOFLAGS=-mod=mod
export PATH=$PATH:/usr/local/go/bin
mkdir -p "$CRI" "$CNI"
if [ ! -x "$CRI/crictl" ]; then
  echo "building crictl v1.37.0" >&2
  GOBIN=$CRI.tmp go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0
  mv "$CRI.tmp/crictl" "$CRI/crictl" && rmdir "$CRI.tmp"
fi
if [ ! -x "$CRI/critest" ]; then
  echo "building critest v1.37.0" >&2
  src=$(go mod download -json sigs.k8s.io/cri-tools@v1.37.0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  (cd "$src" && go test -c ./cmd/critest -o "$CRI/critest.tmp")
  mv "$CRI/critest.tmp" "$CRI/critest"
fi
for p in main/bridge ipam/host-local main/loopback meta/portmap; do
  n=${p#*/}
  if [ ! -x "$CNI/$n" ]; then
    echo "building CNI plugin $n v1.10.0" >&2
    GOBIN=$CNI.tmp go install "github.com/containernetworking/plugins/plugins/$p@v1.10.0"
    mv "$CNI.tmp/$n" "$CNI/$n" && rmdir "$CNI.tmp"
  fi
done
