#!/usr/bin/env bash
# Bandwidth guarantees, xvs side by side with Linux tc htb, on the same testbed in one run.
#
#   usage: scripts/bench-qos.sh [REPEATS] [LINK_MBIT G1_MBIT G2_MBIT]   (default: 3 1000 700 300)
#          QOS_SWITCHES="xvs kernel kernel-offload" (default all three)
#
# Two tenants (blue: guarantee G1, red: G2) each send 4 TCP flows (iperf3 -P 4) from host 1 to
# host 2 across VXLAN. Two 24 s scenarios per repeat: red stops at 12 s, or blue stops at 12 s.
# "both" is the mean goodput of seconds 3-11, "alone" of seconds 14-23 (sender-side iperf3
# intervals), as in shared/PEERS.md.
#   xvs:    xvsd shapes host 1's uplink: rate = LINK, guarantee = G1 / G2, no limit.
#   kernel: bridge+vxlan, and on host 1's underlay an htb tree: rate = guarantee, ceil = link,
#           classified by VNI with a u32 match on the VXLAN header (the PEERS.md method).
#   kernel-offload: the same with TSO/GSO/checksum offload back on in the VMs and on the
#           switch ports, as shared/PEERS.md measured it (a userspace switch cannot take
#           64 KB super-frames, so xvs and "kernel" run with them off).
# A wire-rate guarantee G is worth 0.926 G of goodput (1564 wire bytes carry 1448 of
# payload), and the "% of G" columns use that. Report: benches/results/<date>/qos.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-3}
LINK=${2:-1000}; G1=${3:-700}; G2=${4:-300}
[ "$(id -u)" = 0 ] || { echo "bench-qos: needs root" >&2; exit 1; }
./scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p xvs-switch --bins 2>&1 | grep -E "^error" || true
OUT=benches/results/$(date +%Y-%m-%d)
mkdir -p "$OUT"
RAW=$OUT/qos-runs.jsonl
: > "$RAW"
P=xq$$; P=${P:0:6}
TMP=$(mktemp -d)
XPIDS=()
. scripts/xvsd-pair.sh
cleanup() { stop_xvsd; ./scripts/testbed.sh down "$P" >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT
log() { echo "bench-qos: $*" >&2; }
ns() { ip netns exec "$P-$1" "${@:2}"; }

up_xvs() {
  ./scripts/testbed.sh up "$P" xvs
  ./scripts/testbed.sh config "$P" 1 1 \
    | sed "s|^vtep_ip = \"192.168.77.1/24\"|&\nrate = \"${LINK}M\"|; s|^vni = 100\$|&\nguarantee = \"${G1}M\"|; s|^vni = 200\$|&\nguarantee = \"${G2}M\"|" \
    > "$TMP/h1.toml"
  ./scripts/testbed.sh config "$P" 2 1 > "$TMP/h2.toml"
  grep -q "guarantee = \"${G1}M\"" "$TMP/h1.toml" || { log "could not write the QoS config"; exit 1; }
  start_xvsd_pair
}

up_kernel() {
  ./scripts/testbed.sh up "$P" kernel2
  local d="$P-u1"
  ns h1 tc qdisc add dev "$d" root handle 1: htb default 30
  ns h1 tc class add dev "$d" parent 1: classid 1:1 htb rate "${LINK}mbit" ceil "${LINK}mbit"
  ns h1 tc class add dev "$d" parent 1:1 classid 1:10 htb rate "${G1}mbit" ceil "${LINK}mbit"
  ns h1 tc class add dev "$d" parent 1:1 classid 1:20 htb rate "${G2}mbit" ceil "${LINK}mbit"
  ns h1 tc class add dev "$d" parent 1:1 classid 1:30 htb rate 1mbit ceil "${LINK}mbit"
  # VNI 100 / 200 in the VXLAN header: bytes 4-6 after the UDP header, IP offset 32.
  ns h1 tc filter add dev "$d" parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff \
    match ip dport 4789 0xffff match u32 0x00006400 0xffffff00 at 32 flowid 1:10
  ns h1 tc filter add dev "$d" parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff \
    match ip dport 4789 0xffff match u32 0x0000c800 0xffffff00 at 32 flowid 1:20
}

up_kernel-offload() {
  up_kernel
  for n in vm1 vm2 vm3 vm4; do ns "$n" ethtool -K eth0 tx on tso on gso on >/dev/null 2>&1 || true; done
  for hp in "h1 p1" "h1 p3" "h1 u1" "h2 p2" "h2 p4" "h2 u2"; do
    set -- $hp; ns "$1" ethtool -K "$P-$2" tx on tso on gso on >/dev/null 2>&1 || true
  done
}

scenario() { # scenario SWITCH REPEAT STOPPER(blue|red)
  local sw=$1 rep=$2 stop=$3 tb=24 tr=24
  [ "$stop" = blue ] && tb=12 || tr=12
  ns vm1 timeout 60 iperf3 -c 10.0.0.2 -P 4 -t "$tb" -i 1 -J > "$TMP/blue.json" &
  local b=$!
  ns vm3 timeout 60 iperf3 -c 10.0.0.2 -P 4 -t "$tr" -i 1 -J > "$TMP/red.json" &
  local r=$!
  wait $b $r || true
  python3 - "$RAW" "$sw" "$rep" "$stop" "$TMP/blue.json" "$TMP/red.json" <<'EOF'
import json, sys
raw, sw, rep, stop, fb, fr = sys.argv[1:7]
def series(path):
    j = json.load(open(path))
    return [iv["sum"]["bits_per_second"] / 1e6 for iv in j.get("intervals", [])]
def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0
b, r = series(fb), series(fr)
rec = {"switch": sw, "repeat": int(rep), "stopper": stop,
       "blue_both": mean(b[3:11]), "red_both": mean(r[3:11]),
       "alone": mean((r if stop == "blue" else b)[14:23]), "alone_tenant": "red" if stop == "blue" else "blue"}
open(raw, "a").write(json.dumps(rec) + "\n")
print(f"{sw} run {rep}, {stop} stops: blue {rec['blue_both']:.0f}, red {rec['red_both']:.0f} Mbit/s; {rec['alone_tenant']} alone {rec['alone']:.0f}", file=sys.stderr)
EOF
}

for sw in ${QOS_SWITCHES:-xvs kernel kernel-offload}; do
  log "== $sw"
  "up_$sw"
  ns vm1 ping -c 3 -W 1 10.0.0.2 >/dev/null && ns vm3 ping -c 3 -W 1 10.0.0.2 >/dev/null \
    || { log "$sw: no connectivity"; exit 1; }
  # One server per receiving VM, for the whole run (they serve one test at a time).
  for vm in vm2 vm4; do ns "$vm" iperf3 -s -D; done
  sleep 0.5
  for rep in $(seq "$REPEATS"); do
    scenario "$sw" "$rep" red
    scenario "$sw" "$rep" blue
  done
  stop_xvsd
  ./scripts/testbed.sh down "$P"   # ends the servers with their namespaces
done

python3 - "$RAW" "$LINK" "$G1" "$G2" "$REPEATS" > "$OUT/qos.md" <<'EOF'
import json, statistics, sys
raw, link, g1, g2, reps = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rs = [json.loads(l) for l in open(raw)]
print("# Bandwidth guarantees: xvs and Linux tc htb, one run\n")
print(f"Command: `scripts/bench-qos.sh {reps} {int(link)} {int(g1)} {int(g2)}`. Goodput in Mbit/s (iperf3 sender intervals), medians of {reps} repeats x 2 scenarios; both = seconds 3-11, alone = 14-23. % of G uses 0.926 G (VXLAN overhead).\n")
print("| switch / method | link / G1 / G2 | blue (G1) | red (G2) | blue % of G1 | red % of G2 | blue alone | red alone | alone % of link |")
print("|---|---|---|---|---|---|---|---|---|")
for sw, name in (("xvs", "xvs, uplink scheduler (guarantee per tenant, no limit)"), ("kernel", "kernel bridge+vxlan, htb rate=G ceil=link per VNI"), ("kernel-offload", "same, VM and port offloads on (PEERS.md setup)")):
    s = [r for r in rs if r["switch"] == sw]
    if not s:
        continue
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    b = med([r["blue_both"] for r in s]); r_ = med([r["red_both"] for r in s])
    ba = med([r["alone"] for r in s if r["alone_tenant"] == "blue"]); ra = med([r["alone"] for r in s if r["alone_tenant"] == "red"])
    print(f"| {name} | {int(link)} / {int(g1)} / {int(g2)} | {b:.0f} | {r_:.0f} | {100*b/(0.926*g1):.0f} % | {100*r_/(0.926*g2):.0f} % | {ba:.0f} | {ra:.0f} | {100*min(ba,ra)/(0.926*link):.0f} % |")
EOF
cat "$OUT/qos.md"
