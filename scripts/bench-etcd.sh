#!/usr/bin/env bash
# The etcd store's numbers (issue "many hosts, one desired state"), in one run:
#  1. real xvsd hosts (3 by default, XVS_ETCD_HOSTS=N up to 20) on the fabric testbed sharing a
#     3-member etcd cluster: the time from `xvsctl port add` on host 1 to the VM's static FDB
#     entry being live on every other host (p50/p99 over XVS_ETCD_ADDS=50 adds);
#  2. a simulated fleet (xvs-etcdfleet: 1000 hosts as watchers, 100,000 VM ports, 10,000
#     tenants) against one real etcd member on loopback: load rate, propagation p50/p99 and
#     the share under 1 s at 100 rebinds/s, etcd's CPU and memory.
# Writes benches/results/<date>/etcd.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
P=xeb
N=${XVS_ETCD_HOSTS:-3}
[ "$N" -ge 3 ] && [ "$N" -le 20 ] || { echo "XVS_ETCD_HOSTS must be 3..20" >&2; exit 2; }
ADDS=${XVS_ETCD_ADDS:-50}
OUT=benches/results/$(date +%Y-%m-%d); mkdir -p "$OUT"; REPORT=$OUT/etcd.md
TMP=$(mktemp -d); PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  extra_down; ./scripts/testbed.sh down $P; rm -rf "$TMP"
}
extra_down() { for i in $(seq 4 20); do ip netns del "$P-h$i" 2>/dev/null || true; done; }
trap cleanup EXIT
cargo build --release --bins 2>&1 | grep -vE "xvs-switch@" | tail -1
extra_down
./scripts/testbed.sh up $P fabric
# hosts beyond the testbed's three: a namespace and an uplink on the same bridge each
for i in $(seq 4 "$N"); do
  ip netns add "$P-h$i"; ip netns exec "$P-h$i" ip link set lo up
  ip link add "$P-u$i" type veth peer name "$P-b$i"
  ip link set "$P-u$i" netns "$P-h$i"; ip link set "$P-b$i" netns "$P-fab"
  ip netns exec "$P-fab" ip link set "$P-b$i" mtu 1600 master br0 up
  ip netns exec "$P-h$i" ip link set "$P-u$i" address "$(printf 02:00:00:00:ff:%02x "$i")" mtu 1600 up
  ip netns exec "$P-h$i" ip addr add "192.168.77.1$i/24" dev "$P-u$i"
  ip netns exec "$P-h$i" ip addr add "192.168.77.$i/24" dev "$P-u$i"
done
CLUSTER=e1=http://192.168.77.21:2380,e2=http://192.168.77.22:2380,e3=http://192.168.77.23:2380
for i in 1 2 3; do
  ip=192.168.77.2$i
  ip netns exec $P-e$i etcd --name e$i --data-dir "$TMP/e$i" --listen-client-urls http://$ip:2379 \
    --advertise-client-urls http://$ip:2379 --listen-peer-urls http://$ip:2380 \
    --initial-advertise-peer-urls http://$ip:2380 --initial-cluster $CLUSTER \
    --initial-cluster-state new --initial-cluster-token $P 2>"$TMP/e$i.log" &
  PIDS+=($!)
done
URL=etcd://192.168.77.21:2379,192.168.77.22:2379,192.168.77.23:2379
EPS=http://192.168.77.21:2379,http://192.168.77.22:2379,http://192.168.77.23:2379
ctl() { ip netns exec $P-fab etcdctl --endpoints=$EPS "$@"; }
for _ in $(seq 100); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.3; done
for i in $(seq 1 "$N"); do
  cat > "$TMP/h$i.toml" <<CFG
[uplink]
interface = "$P-u$i"
vtep_ip = "192.168.77.$i/24"
[daemon]
cores = [1]
[store]
url = "$URL"
host = "h$i"
CFG
  ip netns exec $P-h$i ./target/release/xvsd --config "$TMP/h$i.toml" --state "$TMP/h$i-state.toml" \
    --socket "$TMP/h$i.sock" 2>"$TMP/h$i.log" &
  PIDS+=($!)
done
for i in $(seq 1 "$N"); do for _ in $(seq 100); do [ -S "$TMP/h$i.sock" ] && break; sleep 0.1; done; done
X=./target/release/xvsctl
$X --socket "$TMP/h1.sock" tenant add blue --vni 100 >/dev/null
for i in $(seq 2 "$N"); do ctl put /xvs/v1/hosts/h$i/tenants/blue "" >/dev/null; done
sleep 1
real=$(python3 - "$TMP" "$N" "$ADDS" <<'PY'
import json, subprocess, sys, threading, time
tmp, n, adds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = "./target/release/xvsctl"
def fdb(h):
    o = subprocess.run([x, "--socket", f"{tmp}/h{h}.sock", "--json", "fdb", "show", "blue"], capture_output=True, text=True)
    return o.stdout
lat = []
for k in range(adds):
    mac = "02:00:00:01:%02x:%02x" % (k // 256, k % 256)
    t0 = time.monotonic()
    subprocess.run([x, "--socket", f"{tmp}/h1.sock", "port", "add", f"vmport{k}", "--tenant", "blue",
                    "--mac", mac, "--ip", f"10.1.{k // 256}.{k % 256 + 1}"], check=True, capture_output=True)
    seen = {}
    def watch(h):
        while time.monotonic() - t0 < 10:
            if mac in fdb(h):
                seen[h] = time.monotonic()
                return
    ts = [threading.Thread(target=watch, args=(h,)) for h in range(2, n + 1)]
    for t in ts: t.start()
    for t in ts: t.join()
    lat.append((max(seen.values()) - t0) * 1000 if len(seen) == n - 1 else float("inf"))
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{n} hosts, {adds} port adds on host 1: live on every other host p50 {q(0.5):.1f} ms, "
      f"p99 {q(0.99):.1f} ms, max {lat[-1]:.1f} ms (includes xvsctl's own write; each other host "
      f"polled by its own thread with `xvsctl fdb show`, a few ms per poll)")
PY
)
echo "$real"
# A VM move with traffic: vm1 (blue, host 1) moves to host 2 while vm5 on host 3 pings it every
# 20 ms; the blackout is what that ping loses (it includes remaking vm1's interface).
ip netns exec $P-vm5 ping -i 0.02 -w 8 -W 1 10.0.0.1 > "$TMP/move.ping" 2>&1 &
PING=$!
$X --socket "$TMP/h1.sock" tenant add red --vni 200 >/dev/null
$X --socket "$TMP/h1.sock" port add $P-p1 --tenant blue --mac 02:00:00:00:00:01 --ip 10.0.0.1 >/dev/null
$X --socket "$TMP/h3.sock" tenant add blue --vni 100 >/dev/null 2>&1 || true
$X --socket "$TMP/h3.sock" port add $P-p5 --tenant blue --mac 02:00:00:00:00:03 --ip 10.0.0.3 >/dev/null
sleep 3
ip netns exec $P-h1 ip link del $P-p1
ip netns exec $P-vm1 ip link add eth0 type veth peer name $P-p7
ip netns exec $P-vm1 ip link set $P-p7 netns $P-h2
ip netns exec $P-vm1 ip link set eth0 address 02:00:00:00:00:01 up
ip netns exec $P-vm1 ip addr add 10.0.0.1/24 dev eth0
ip netns exec $P-vm1 ethtool -K eth0 tx off tso off gso off >/dev/null 2>&1 || true
ip netns exec $P-h2 ethtool -K $P-p7 tx off tso off gso off >/dev/null 2>&1 || true
ip netns exec $P-h2 ip link set $P-p7 up
ctl put /xvs/v1/hosts/h2/tenants/blue "" >/dev/null
ctl put /xvs/v1/tenants/blue/ports/$P-p1 \
  "{\"host\":\"h2\",\"interface\":\"$P-p7\",\"mac\":\"02:00:00:00:00:01\",\"ips\":[\"10.0.0.1\"]}" >/dev/null
wait $PING || true
move=$(python3 - "$TMP/move.ping" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"(\d+) packets transmitted, (\d+) received", t)
sent, got = int(m.group(1)), int(m.group(2))
print(f"VM move with {sent} pings at 20 ms from a third host: {sent - got} lost = {(sent - got) * 20} ms blackout "
      f"(includes remaking the VM's interface on the new host)")
PY
)
echo "$move"
# The simulated fleet against one member on loopback.
etcd --data-dir "$TMP/fleet" --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster default=http://127.0.0.1:23800 --quota-backend-bytes 4294967296 2>"$TMP/fleet.log" &
FPID=$!; PIDS+=($FPID)
sleep 2
fleet=$(./target/release/xvs-etcdfleet --endpoint http://127.0.0.1:23790 --hosts 1000 --ports 100000 \
  --tenants 10000 --updates 3000 --rate 100 --etcd-pid $FPID)
echo "$fleet"
{
  echo "# etcd store, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Command: \`scripts/bench-etcd.sh\` (etcd $(etcd --version | head -1 | awk '{print $3}'), Debian's)."
  echo
  echo "Real hosts: $real"
  echo
  echo "$move"
  echo
  echo '```'
  echo "$fleet"
  echo '```'
} > "$REPORT"
echo "wrote $REPORT"
