#!/usr/bin/env bash
# Overlay benchmark on the two-host veth testbed, xvs and the kernel's bridge+vxlan in one run:
# 64-byte (60 B + FCS) frames VM to VM across VXLAN (flat-out and a rate sweep), TCP, ping
# latency, and xvsd's idle CPU. Method as in shared/PEERS.md: generator (AF_PACKET sendmmsg)
# pinned to CPU0, the switch on CPU1, delivered = rx_packets delta on the receiving VM.
#
#   usage: scripts/bench-overlay.sh [REPEATS] [SWITCHES...]   (default: 3 xvs kernel)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
REPEATS=${1:-3}; shift || true
SWITCHES=${*:-xvs kernel}
P=xb
OUT=benches/results/$(date +%Y-%m-%d)
mkdir -p "$OUT"
REPORT=$OUT/overlay.md
TMP=$(mktemp -d)
XPIDS=()
cleanup() { for p in "${XPIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; ./scripts/testbed.sh down $P; rm -rf "$TMP"; }
trap cleanup EXIT

cargo build --release -p xvs-switch -p xvs-benches --bins 2>&1 | grep -vE "xvs-switch@" | tail -1
GEN=$PWD/target/release/xvs-pktgen
in_ns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }
rx() { in_ns vm2 cat /sys/class/net/eth0/statistics/rx_packets; }
median() { python3 -c "import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:])))" "$@"; }

# one generator run: prints delivered pps and loss fraction
run_gen() { # RATE SECS
  local r0 r1 out
  r0=$(rx)
  out=$(in_ns vm1 taskset -c 0 "$GEN" eth0 02:00:00:00:00:01 02:00:00:00:00:02 10.0.0.1 10.0.0.2 "$1" "$2")
  sleep 0.5
  r1=$(rx)
  python3 -c "
import json,sys; o=json.loads(sys.argv[1]); d=int(sys.argv[3])-int(sys.argv[2])
print(round(d/o['secs']), round(o['pps']), max(0.0, 1-d/max(1,o['sent'])))" "$out" "$r0" "$r1"
}

cpu_of() { # PID... -> jiffies used (utime+stime)
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t
}

{
echo "# Overlay benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Command: \`scripts/bench-overlay.sh $REPEATS $SWITCHES\` on $(nproc) CPUs, kernel $(uname -r)."
echo "Generator: xvs-pktgen (AF_PACKET sendmmsg, batch 64, one UDP flow, 60 B frames) on CPU0; switch on CPU1."
echo
echo "| switch | flat-out delivered pps (median of $REPEATS) | offered pps | highest offered pps with <0.1% loss (sweep 100k..900k) | same, <0.5% loss | TCP Gbit/s | RTT median ms | RTT p99 ms | idle CPU % of a core |"
echo "|---|---|---|---|---|---|---|---|---|"
} > "$REPORT"

for sw in $SWITCHES; do
  echo "== $sw" >&2
  case $sw in
    xvs)
      ./scripts/testbed.sh up $P xvs
      for h in 1 2; do
        ./scripts/testbed.sh config $P $h 1 > "$TMP/h$h.toml"
        ip netns exec "$P-h$h" ./target/release/xvsd --config "$TMP/h$h.toml" --stats-file "$TMP/h$h.json" --state "$TMP/h$h-state.toml" --socket "$TMP/h$h.sock" 2>"$TMP/h$h.log" &
        XPIDS+=($!)
      done
      for h in 1 2; do for _ in $(seq 100); do [ -s "$TMP/h$h.json" ] && break; sleep 0.1; done; done
      ;;
    kernel)
      ./scripts/testbed.sh up $P kernel2
      for h in 1 2; do for p in /sys/class/net/$P-p*; do :; done; done
      for n in "h1 p1" "h1 p3" "h2 p2" "h2 p4"; do set -- $n; in_ns "$1" sh -c "echo 2 > /sys/class/net/$P-$2/queues/rx-0/rps_cpus"; done
      ;;
  esac
  in_ns vm2 ping -c 2 -W 1 10.0.0.1 >/dev/null || true
  in_ns vm1 ping -c 2 -W 1 10.0.0.2 >/dev/null
  flat=(); offered=()
  for i in $(seq "$REPEATS"); do
    read -r d o l < <(run_gen 0 5)
    echo "  flat-out run $i: delivered $d pps of $o offered (loss $l)" >&2
    flat+=("$d"); offered+=("$o")
  done
  lf1=0; lf5=0
  for rate in 100000 200000 300000 400000 500000 600000 700000 800000 900000; do
    read -r d o l < <(run_gen $rate 3)
    echo "  rate $rate: offered $o, delivered $d (loss $l)" >&2
    # loss-free is the highest *achieved* offered rate (the generator may fall short of $rate)
    lf1=$(python3 -c "import sys; l,o,b=float(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3]); print(max(b,o) if l < 0.001 else b)" "$l" "$o" "$lf1")
    lf5=$(python3 -c "import sys; l,o,b=float(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3]); print(max(b,o) if l < 0.005 else b)" "$l" "$o" "$lf5")
  done
  in_ns vm2 iperf3 -s -1 -D; sleep 0.3
  tcp=$(in_ns vm1 iperf3 -c 10.0.0.2 -t 5 -J | python3 -c "import json,sys; print(round(json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9,2))")
  lat=$(in_ns vm1 ping -c 500 -i 0.01 -q 10.0.0.2 >/dev/null; in_ns vm1 ping -c 500 -i 0.01 10.0.0.2 | python3 -c "
import sys,re,statistics
r=sorted(float(m.group(1)) for m in re.finditer(r'time=([0-9.]+)', sys.stdin.read()))
print(round(statistics.median(r),3), round(r[int(len(r)*0.99)-1],3))")
  idle="n/a (softirq)"
  if [ "$sw" = xvs ]; then
    sleep 2
    c0=$(cpu_of "${XPIDS[@]}"); sleep 10; c1=$(cpu_of "${XPIDS[@]}")
    idle=$(python3 -c "print(round(($c1-$c0)/$(getconf CLK_TCK)/10*100/2, 2))")
    idle="$idle (mean of the 2 xvsd)"
    for p in "${XPIDS[@]}"; do kill -TERM "$p"; wait "$p" || true; done
    XPIDS=()
  fi
  echo "| $sw | $(median "${flat[@]}") | $(median "${offered[@]}") | $lf1 | $lf5 | $tcp | ${lat% *} | ${lat#* } | $idle |" >> "$REPORT"
  ./scripts/testbed.sh down $P
done
echo >> "$REPORT"
cat "$REPORT"
