#!/usr/bin/env bash
# Builds the test guest for the real-VM system tests and benchmarks from Debian packages only:
# the kernel of Debian's linux-image-amd64 (extracted, not installed on the host) and an
# initramfs with busybox-static, iperf3 and ethtool (with the shared libraries they need).
#
#   tests/vm/build-guest.sh [DIR]     -> DIR/vmlinuz, DIR/initrd.gz   (default ~/.cache/xvs/guest)
#
# Idempotent: does nothing when DIR already holds a guest built from the same inputs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/xvs/guest}"
mkdir -p "$OUT"

kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1; }
KPKG=$(kpkg)
if [ -z "$KPKG" ]; then apt-get update -qq >/dev/null 2>&1 || true; KPKG=$(kpkg); fi
[ -n "$KPKG" ] || { echo "build-guest: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 1; }
STAMP="$KPKG $(cat "$HERE/init" "$0" | sha256sum | cut -c1-16) $(busybox | head -1) $(dpkg-query -W -f='${Version}' iperf3 ethtool)"
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.gz" ]; then
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
( cd "$WORK" && apt-get download -q "$KPKG" >/dev/null 2>&1 ) \
  || { echo "build-guest: apt-get download $KPKG failed" >&2; exit 1; }
dpkg-deb -x "$WORK"/"$KPKG"_*.deb "$WORK/k"
KVER=${KPKG#linux-image-}
cp "$WORK/k/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

R="$WORK/root"
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,lib/modules,usr/bin,usr/sbin}
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
# Real programs with their libraries (ldd lists them; the loader too).
for prog in /usr/bin/iperf3 /usr/sbin/ethtool; do
  cp "$prog" "$R/usr/bin/"
  for lib in $(ldd "$prog" | grep -o '/[^ ]*'); do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
  done
done
# virtio-net and what it needs, in load order (Debian builds them as modules).
M="$WORK/k/lib/modules/$KVER/kernel"
for m in drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko drivers/virtio/virtio_pci_legacy_dev.ko \
         drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci.ko net/core/failover.ko \
         drivers/net/net_failover.ko drivers/net/virtio_net.ko; do
  [ -f "$M/$m" ] || continue
  cp "$M/$m" "$R/lib/modules/"
  echo "$(basename "$m")" >> "$R/lib/modules/order"
done
cp "$HERE/init" "$R/init"
chmod +x "$R/init"
( cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 ) > "$OUT/initrd.gz"
echo "$STAMP" > "$OUT/stamp"
echo "build-guest: $OUT ($KPKG)" >&2
