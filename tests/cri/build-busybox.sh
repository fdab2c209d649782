#!/bin/bash
# Builds a static busybox with upstream's defconfig (as in the official busybox images critest's images
# derive from) from Debian's busybox source package, fetched with apt-get from the machine's own Debian
# mirror, once, into $CM_TOOLS/busybox-defconfig/busybox. Debian's /bin/busybox (busybox-static) is built
# with FEATURE_SH_STANDALONE/PREFER_APPLETS and lacks ipcs and pgrep, which critest specs use.
# Needs build-essential and bzip2. Idempotent and quiet when the binary is there.
set -euo pipefail
T=${CM_TOOLS:-/var/cache/cm-tools}
OUT=$T/busybox-defconfig
[ -x "$OUT/busybox" ] && exit 0
S=$T/busybox-src
mkdir -p "$S/apt/lists/partial" "$S/apt/etc" "$S/apt/parts" "$OUT"
# deb-src entries for the mirror this machine already uses, in a private apt state (the system's apt
# lists and sources are not touched).
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" > "$S/apt/parts/$(basename "$f")"
done
{ cat /etc/apt/sources.list 2>/dev/null || true; } | sed -n 's/^deb /deb-src /p' > "$S/apt/etc/sources.list"
O=(-o "Dir::Etc::SourceList=$S/apt/etc/sources.list" -o "Dir::Etc::SourceParts=$S/apt/parts" -o "Dir::State::Lists=$S/apt/lists")
cd "$S"
if ! ls busybox_*.orig.tar.bz2 >/dev/null 2>&1; then
  apt-get -qq "${O[@]}" update
  apt-get -qq "${O[@]}" source --download-only busybox
fi
orig=$(ls busybox_*.orig.tar.bz2 | tail -1)
ver=${orig#busybox_}; ver=${ver%.orig.tar.bz2}
rm -rf "busybox-$ver"
tar xjf "$orig"
tar xJf "$(ls busybox_"${ver}"-*.debian.tar.xz | tail -1)" -C "busybox-$ver"
cd "busybox-$ver"
for p in $(grep -v '^#' debian/patches/series); do patch -p1 -s < "debian/patches/$p"; done
make defconfig >/dev/null
sed -i 's/^# CONFIG_STATIC is not set/CONFIG_STATIC=y/' .config
# The tc applet is used by no spec and does not build against kernel headers >= 6.8 (CBQ removed).
sed -i 's/^CONFIG_TC=y/# CONFIG_TC is not set/' .config
make -j"$(nproc)" > "$S/build.log" 2>&1 || { tail -30 "$S/build.log"; exit 1; }
cp busybox "$OUT/busybox.tmp" && mv "$OUT/busybox.tmp" "$OUT/busybox"
cp .config "$OUT/busybox.config"
cd "$S" && rm -rf "busybox-$ver"
echo "built $OUT/busybox: $("$OUT/busybox" | head -1)" >&2
