#!/usr/bin/env bash
# Installs the Debian package (./scripts/package.sh) in a clean Debian 12 (debootstrap
# minbase, cached under ~/.cache/xvs) and starts xvsd there with the exact command line of
# its systemd unit (systemd cannot run in a chroot), in a network namespace of its own with a
# veth as the uplink; then checks `xvsctl status` and `xvsctl tenant list` answer, and that
# SIGTERM stops it cleanly. Root required; cleans up also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
# the package of this tree, built afresh (a stale one would test old code)
rm -f target/debian/xvs_*_amd64.deb
./scripts/package.sh >/dev/null
DEB=$(ls target/debian/xvs_*_amd64.deb | tail -1)
CACHE="${XVS_CACHE:-$HOME/.cache/xvs}"
BASE="$CACHE/debroot-bookworm.tar.gz"
P="xpk$$"
R="$(mktemp -d /tmp/$P.XXXX)"
cleanup() {
  ip netns del "$P" 2>/dev/null || true
  umount "$R/proc" 2>/dev/null || true
  rm -rf "$R"
}
trap cleanup EXIT
if [ ! -s "$BASE" ]; then
  mkdir -p "$CACHE"
  echo "building a clean Debian 12 root (once) ..."
  # the mirror this host's apt already uses (the first bookworm main archive it lists)
  MIRROR=$(apt-get indextargets --format '$(SITE) $(RELEASE)' 2>/dev/null | awk '$2 == "bookworm" {print $1; exit}')
  [ -n "$MIRROR" ] || { echo "FAIL: no Debian bookworm archive in this host's apt sources" >&2; exit 1; }
  debootstrap --variant=minbase bookworm "$R" "$MIRROR" >/dev/null
  tar -C "$R" -czf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
else
  tar -C "$R" -xzf "$BASE"
fi
cp "$DEB" "$R/tmp/xvs.deb"
cp /etc/resolv.conf "$R/etc/resolv.conf"
mount -t proc proc "$R/proc"
chroot "$R" sh -c 'apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/xvs.deb >/dev/null'
umount "$R/proc"
for f in /usr/sbin/xvsd /usr/bin/xvsctl /usr/lib/xvs/xvs-ifup /usr/lib/systemd/system/xvsd.service \
         /usr/share/man/man1/xvsctl.1.gz /usr/share/man/man8/xvsd.8.gz \
         /usr/share/bash-completion/completions/xvsctl /usr/share/doc/xvs/xvsd.toml.example; do
  [ -e "$R$f" ] || { echo "FAIL: the package did not install $f" >&2; exit 1; }
done
UNIT="$R/usr/lib/systemd/system/xvsd.service"
for k in "Restart=on-failure" "StateDirectory=xvs" "RuntimeDirectory=xvs" "ConfigurationDirectory=xvs"; do
  grep -qx "$k" "$UNIT" || { echo "FAIL: the unit lacks $k" >&2; exit 1; }
done
EXEC=$(grep '^ExecStart=' "$UNIT" | cut -d= -f2-)
# the uplink: one end of a veth pair in the namespace, with the example's VTEP address
ip netns add "$P"
ip link add "$P-u" type veth peer name "$P-p"
ip link set "$P-u" netns "$P"; ip link set "$P-p" netns "$P"
ip -n "$P" addr add 192.168.77.1/24 dev "$P-u"
ip -n "$P" link set "$P-u" up; ip -n "$P" link set "$P-p" up
mkdir -p "$R/etc/xvs"
sed "s/interface = \"eth1\"/interface = \"$P-u\"/" "$R/usr/share/doc/xvs/xvsd.toml.example" > "$R/etc/xvs/xvsd.toml"
OUT=$(timeout 60 ip netns exec "$P" sh -c "
  mount -t proc proc '$R/proc' && mount -t sysfs sysfs '$R/sys' &&
  chroot '$R' sh -c '
    mkdir -p /var/lib/xvs /run/xvs   # what the unit has systemd make
    $EXEC 2> /tmp/xvsd.log & pid=\$!
    for i in \$(seq 100); do [ -S /run/xvs/xvsd.sock ] && break; sleep 0.1; done
    xvsctl status && xvsctl tenant list
    kill -TERM \$pid; wait \$pid; echo \"xvsd exit \$?\"'" 2>&1) || true
echo "$OUT"
for want in "uplink:       $P-u" "attached" "blue  100" "xvsd exit 0"; do
  grep -qF "$want" <<< "$OUT" || { echo "FAIL: expected \"$want\"; xvsd's log:" >&2; cat "$R/tmp/xvsd.log" >&2; exit 1; }
done
echo "PASS: the package installs in a clean Debian 12 and xvsd runs as its unit starts it"
