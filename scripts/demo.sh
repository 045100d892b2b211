#!/usr/bin/env bash
# The xvs demo: builds, creates a two-host, two-tenant testbed in network namespaces, runs one
# xvsd per host, shows traffic flowing inside each tenant and isolation holding between them,
# all seen through xvsctl (status, ports, a live tenant change, trace, FDB, capture, counters), and
# tears everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces, XDP)" >&2; exit 1; }

P=demo
TMP=$(mktemp -d /tmp/xvs-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ./scripts/testbed.sh down "$P"
  rm -rf "$TMP"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }
# xvsctl on host N's xvsd, echoing the command as an operator would type it
ctl() {
  local h=$1; shift
  printf '\033[2mh%s$ xvsctl %s\033[0m\n' "$h" "$*"
  ./target/release/xvsctl --socket "$TMP/h$h.sock" "$@"
}

say "building xvsd and xvsctl (release)"
cargo build --release -p xvs-switch -p xvsctl --bins 2>&1 | grep -vE "xvs-switch@" | tail -1

say "testbed: hosts $P-h1, $P-h2; tenants blue (VNI 100) and red (VNI 200), both using 10.0.0.0/24 and the same MACs"
./scripts/testbed.sh up "$P"
./scripts/testbed.sh config "$P" 1 > "$TMP/h1.toml"
# red's VM on host 2 also owns 10.0.0.77: reachable from red, not from blue
./scripts/testbed.sh config "$P" 2 | sed 's/ips = \["10.0.0.2"\]\(.*\)/ips = ["10.0.0.2"]/' > "$TMP/h2.toml"
python3 - "$TMP/h2.toml" <<'PY'
import sys; p = sys.argv[1]; s = open(p).read()
i = s.rindex('ips = ["10.0.0.2"]'); s = s[:i] + 'ips = ["10.0.0.2", "10.0.0.77"]' + s[i + len('ips = ["10.0.0.2"]'):]
open(p, "w").write(s)
PY
in_ns vm4 ip addr add 10.0.0.77/24 dev eth0
sed -n '1,40p' "$TMP/h1.toml"

say "starting xvsd on both hosts"
for h in 1 2; do
  ip netns exec "$P-h$h" ./target/release/xvsd --config "$TMP/h$h.toml" --stats-file "$TMP/h$h.json" --state "$TMP/h$h-state.toml" --socket "$TMP/h$h.sock" 2> "$TMP/h$h.log" &
  PIDS+=($!)
done
for h in 1 2; do
  for _ in $(seq 100); do [ -s "$TMP/h$h.json" ] && break; sleep 0.1; done
  [ -s "$TMP/h$h.json" ] || { cat "$TMP/h$h.log"; exit 1; }
done
ctl 1 status
ctl 1 port list
ctl 1 tenant list

say "blue: vm1 (host 1) pings vm2 (host 2) across VXLAN"
in_ns vm1 ping -c 3 -i 0.3 10.0.0.2
say "red: vm3 (host 1, same IP and MAC as vm1) pings vm4 (host 2)"
in_ns vm3 ping -c 3 -i 0.3 10.0.0.2

say "TCP transfer inside each tenant (iperf3, 3 s)"
for pair in "vm2 vm1 blue" "vm4 vm3 red"; do
  set -- $pair
  in_ns "$1" iperf3 -s -1 -D; sleep 0.3
  printf '  %-5s ' "$3"; in_ns "$2" iperf3 -c 10.0.0.2 -t 3 | grep receiver
done

say "isolation: a TCP service on 10.0.0.2 answers with its tenant's name"
for vm in "vm2 blue-vm2" "vm4 red-vm4"; do
  set -- $vm; in_ns "$1" timeout 20 python3 tests/helpers/banner.py 10.0.0.2 7000 "$2" 1 & sleep 0.2
done
sleep 0.3
ask="import socket;s=socket.create_connection(('10.0.0.2',7000),5);print(s.recv(64).decode().strip())"
echo "  vm1 (blue) connects to 10.0.0.2:7000 -> $(in_ns vm1 python3 -c "$ask")"
echo "  vm3 (red)  connects to 10.0.0.2:7000 -> $(in_ns vm3 python3 -c "$ask")"
wait %3 %4 2>/dev/null || true

say "isolation: 10.0.0.77 exists only in red"
if in_ns vm3 ping -c 2 -W 1 10.0.0.77 >/dev/null; then echo "  red  vm3 -> 10.0.0.77: reachable"; else echo "  red  vm3 -> 10.0.0.77: UNREACHABLE (unexpected)"; exit 1; fi
if in_ns vm1 ping -c 2 -W 1 10.0.0.77 >/dev/null; then echo "  blue vm1 -> 10.0.0.77: REACHABLE (isolation broken)"; exit 1; else echo "  blue vm1 -> 10.0.0.77: unreachable, as it must be"; fi

say "what the switch learned and decides, asked of xvsd on host 1"
ctl 1 fdb show
# vm1's frame to vm2: blue's FDB says vm2 is behind host 2's VTEP
ctl 1 trace "$P-p1" --udp 02:00:00:00:00:01,02:00:00:00:00:02,10.0.0.1,10.0.0.2
# the same frame with a source MAC that is not vm1's: anti-spoofing drops it
ctl 1 trace "$P-p1" --udp 02:00:00:00:00:66,02:00:00:00:00:02,10.0.0.1,10.0.0.2

say "packet capture on the uplink of host 1, red's frames only (tcpdump there sees none: XDP takes them first)"
(sleep 0.5; in_ns vm3 ping -c 2 -i 0.2 -W 2 10.0.0.2 >/dev/null) &
ctl 1 capture "$P-u1" --tenant red --count 4 --duration 10
wait $! 2>/dev/null || true

say "a live change: tenant green added on host 1, shown, removed; blue and red keep forwarding"
ctl 1 tenant add green --vni 300
ctl 1 vtep add green 192.168.77.2
ctl 1 tenant show green
in_ns vm1 ping -c 2 -i 0.2 -W 2 10.0.0.2 | tail -2
ctl 1 tenant del green
ctl 1 tenant list

say "counters of xvsd on host 1"
sleep 0.5
ctl 1 stats

say "stopping xvsd (SIGTERM) and tearing down"
for p in "${PIDS[@]}"; do kill -TERM "$p"; done
for p in "${PIDS[@]}"; do wait "$p" || true; done
PIDS=()
left=$( (in_ns h1 ip -d link show; in_ns h2 ip -d link show) | grep -c prog/xdp || true)
echo "  XDP programs left attached: $left"
echo; echo "demo done"
