#!/usr/bin/env bash
# VM-to-VM TCP and ping across the overlay with real qemu guests (TCG, Debian's kernel, the NIC
# as qemu makes it by default): xvs against the kernel's bridge+vxlan on the same two VMs, in
# one run, alternating, with the guests' offloads as qemu sets them and with them off.
#
#   scripts/bench-vm.sh [--repeats N] [--secs S] [--out DIR] [xvs] [kernel]
#
# Per repeat, switch and offload setting: iperf3 one stream and four streams (receiver
# Mbit/s), ping RTT (50 pings, 100 ms apart), and xvsd's CPU time during the one-stream run
# (both daemons, % of one CPU, and per Gbit/s). Writes DIR/runs.jsonl and DIR/summary.md.
# XVS_POLL_US=N sets the cores' poll_after_traffic_us for an A/B; XVS_CPUS="A B" puts host 1's
# forwarding core on CPU A and host 2's on CPU B (default both on CPU 1).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=3 SECS=10 OUT="benches/results/$(date +%F)-vm" SWITCHES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) REPEATS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    xvs|kernel) SWITCHES+=("$1"); shift ;;
    *) echo "usage: $0 [--repeats N] [--secs S] [--out DIR] [xvs] [kernel]" >&2; exit 2 ;;
  esac
done
[ ${#SWITCHES[@]} -gt 0 ] || SWITCHES=(xvs kernel)
[ -x target/release/xvsd ] || { echo "bench-vm: build first (cargo build --release --bins)" >&2; exit 1; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
P=xbv
TMP=$(mktemp -d /tmp/xvs-bench-vm.XXXX)
GUEST="${XDG_CACHE_HOME:-$HOME/.cache}/xvs/guest"
tests/vm/build-guest.sh "$GUEST"
: > "$OUT/runs.jsonl"

XVSD_PIDS=()
cleanup() {
  for p in "${XVSD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  scripts/testbed.sh down "$P" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
scripts/testbed.sh up "$P" bare

guest() { # guest HOST TAPNUM NAME
  ip netns exec "$P-h$1" qemu-system-x86_64 -accel tcg -m 256 -nodefaults -no-user-config -display none \
    -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.gz" \
    -append "console=ttyS0 quiet loglevel=1 xvs.ip=10.0.0.$1/24 xvs.name=$3" \
    -chardev "socket,id=c0,path=$TMP/$3.serial,server=on,wait=off" -serial chardev:c0 \
    -netdev "tap,id=n0,ifname=$P-t$2,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=02:00:00:00:00:0$1" >"$TMP/$3.log" 2>&1 &
}
gsh() { python3 tests/vm/guest-sh.py "$TMP/$1.serial" "$2" "$3"; }

guest 1 1 blue1; disown -a
guest 2 2 blue2; disown -a
gsh blue1 180 wait-up
gsh blue2 180 wait-up
gsh blue2 10 "iperf3 -s -D" >/dev/null

xvs_up() {
  XVSD_PIDS=()
  for h in 1 2; do
    local cpu=1
    [ -n "${XVS_CPUS:-}" ] && cpu=$(echo "$XVS_CPUS" | cut -d' ' -f"$h")
    scripts/testbed.sh config "$P" "$h" "$cpu" tap > "$TMP/h$h.toml"
    if [ -n "${XVS_POLL_US:-}" ]; then # A/B of the cores' polling after traffic
      sed -i "s/^cores = \(.*\)/cores = \1\npoll_after_traffic_us = $XVS_POLL_US/" "$TMP/h$h.toml"
    fi
    rm -f "$TMP/h$h-state.toml" "$TMP/h$h-state.journal"
    ip netns exec "$P-h$h" target/release/xvsd --config "$TMP/h$h.toml" --state "$TMP/h$h-state.toml" \
      --socket "$TMP/h$h.sock" 2>"$TMP/xvsd-h$h.log" &
    XVSD_PIDS+=($!)
  done
  for h in 1 2; do
    for _ in $(seq 100); do
      target/release/xvsctl --socket "$TMP/h$h.sock" --json port list 2>/dev/null \
        | python3 -c "import json,sys; sys.exit(0 if any(p['name'].endswith('-t$h') and p['state']=='attached' for p in json.load(sys.stdin)) else 1)" 2>/dev/null \
        && break
      sleep 0.1
    done
  done
}
xvs_down() {
  for p in "${XVSD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${XVSD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  XVSD_PIDS=()
}
kernel_up() { # the kernel switch of shared/PEERS.md: a bridge and a vxlan device per host
  for h in 1 2; do
    local o=$((3 - h))
    ip netns exec "$P-h$h" sh -e -c "
      ip link add $P-br100 type bridge stp_state 0
      ip link add $P-vx100 type vxlan id 100 local 192.168.77.$h remote 192.168.77.$o dstport 4789 dev $P-u$h
      ip link set $P-vx100 mtu 1500 master $P-br100 up
      ip link set $P-t$h master $P-br100 up
      ip link set $P-br100 up"
  done
}
kernel_down() {
  for h in 1 2; do
    ip netns exec "$P-h$h" sh -c "ip link set $P-t$h nomaster; ip link del $P-br100; ip link del $P-vx100" 2>/dev/null || true
  done
}
cpu_ticks() { # utime+stime of the running xvsd, summed
  local t=0
  for p in "${XVSD_PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
mbits() { python3 -c "
import sys
for l in reversed(sys.stdin.read().splitlines()):
    if 'receiver' in l and ('[SUM]' in l or '$1' == '1'):
        w = l.split(); i = [k for k, x in enumerate(w) if x.endswith('bits/sec')][0]
        print(float(w[i-1]) * {'Gbits/sec': 1000, 'Mbits/sec': 1, 'Kbits/sec': 0.001}[w[i]]); break
else: print(0)"; }

HZ=$(getconf CLK_TCK)
for r in $(seq "$REPEATS"); do
  for sw in "${SWITCHES[@]}"; do
    "${sw}_up"
    sleep 1
    for offl in default off; do
      if [ "$offl" = off ]; then set=off; else set=on; fi
      for g in blue1 blue2; do gsh "$g" 10 "ethtool -K eth0 tx $set sg $set tso $set gso $set" >/dev/null; done
      gsh blue1 20 "ping -c 3 -W 2 10.0.0.2" >/dev/null || true
      rtt=$(gsh blue1 30 "ping -c 50 -i 0.1 -q 10.0.0.2" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
      c0=0; [ "$sw" = xvs ] && c0=$(cpu_ticks)
      t0=$(date +%s.%N)
      one=$(gsh blue1 $((SECS + 30)) "iperf3 -c 10.0.0.2 -t $SECS" | mbits 1)
      t1=$(date +%s.%N)
      c1=0; [ "$sw" = xvs ] && c1=$(cpu_ticks)
      four=$(gsh blue1 $((SECS + 30)) "iperf3 -c 10.0.0.2 -t $SECS -P 4" | mbits 4)
      cpu=$(python3 -c "print(round(100 * ($c1 - $c0) / $HZ / ($t1 - $t0), 1))")
      per=$(python3 -c "print(round($cpu / max($one, 1) * 1000, 1))")
      line="{\"switch\":\"$sw\",\"offloads\":\"$offl\",\"repeat\":$r,\"tcp1_mbps\":$one,\"tcp4_mbps\":$four,\"rtt_avg_ms\":${rtt:-null},\"xvsd_cpu_pct\":$cpu,\"xvsd_cpu_pct_per_gbps\":$per}"
      echo "$line" | tee -a "$OUT/runs.jsonl"
    done
    "${sw}_down"
  done
done
for g in blue1 blue2; do gsh "$g" 10 "ethtool -K eth0 tx on sg on tso on gso on" >/dev/null || true; done

python3 - "$OUT/runs.jsonl" > "$OUT/summary.md" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else float('nan')
print("| switch | guest offloads | TCP 1 stream Mbit/s | TCP 4 streams Mbit/s | ping avg ms | xvsd CPU % | xvsd CPU % per Gbit/s |")
print("|---|---|---|---|---|---|---|")
for sw in ("xvs", "kernel"):
    for o in ("default", "off"):
        rs = [r for r in runs if r["switch"] == sw and r["offloads"] == o]
        if not rs:
            continue
        f = lambda k: [r[k] for r in rs if r[k] is not None]
        rng = lambda k: "%g (%g-%g)" % (med(f(k)), min(f(k)), max(f(k))) if f(k) else "-"
        cpu = rng("xvsd_cpu_pct") if sw == "xvs" else "-"
        per = rng("xvsd_cpu_pct_per_gbps") if sw == "xvs" else "-"
        print(f"| {sw} | {o} | {rng('tcp1_mbps')} | {rng('tcp4_mbps')} | {rng('rtt_avg_ms')} | {cpu} | {per} |")
for o in ("default", "off"):
    x = [r["tcp1_mbps"] for r in runs if r["switch"] == "xvs" and r["offloads"] == o]
    k = [r["tcp1_mbps"] for r in runs if r["switch"] == "kernel" and r["offloads"] == o]
    if x and k:
        print(f"\nxvs/kernel, one stream, offloads {o}: {med(x) / med(k):.2f}x (medians of {len(x)} and {len(k)})")
PY
cat "$OUT/summary.md"
