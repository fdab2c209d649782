#!/bin/bash
# Prints where the test images built by mkcriimages.py from this checkout live: $CM_TOOLS/cri-images-<hash of
# the builder, its C sources and the busybox>, so a changed builder gets fresh images and an unchanged one
# reuses the cache.
set -euo pipefail
K="$(cd "$(dirname "$0")" && pwd)"
T=${CM_TOOLS:-/var/cache/cm-tools}
h=$(cat "$K/mkcriimages.py" "$K"/src/*.c "$T/busybox-defconfig/busybox" 2>/dev/null | sha256sum | cut -c1-12)
echo "$T/cri-images-$h"
