#!/usr/bin/env bash
# Control-plane rate: static FDB entries per second through xvsd's control socket and the p99
# time from request to the change being live in the core, with single-entry requests and with
# batches of 100. Writes benches/results/<date>/control.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
P=xcb
OUT=benches/results/$(date +%Y-%m-%d); mkdir -p "$OUT"; REPORT=$OUT/control.md
TMP=$(mktemp -d); XPID=
cleanup() { [ -n "$XPID" ] && { kill -TERM "$XPID" 2>/dev/null; wait "$XPID" 2>/dev/null || true; }; ./scripts/testbed.sh down $P; rm -rf "$TMP"; }
trap cleanup EXIT
cargo build --release --bins 2>&1 | grep -vE "xvs-switch@" | tail -1
./scripts/testbed.sh up $P
./scripts/testbed.sh config $P 1 > "$TMP/h1.toml"
sed -i 's/^cores = \[1\]/cores = [1]\nfdb_capacity = 1000000/' "$TMP/h1.toml"
sed -i 's/^vni = 100/vni = 100\nmac_limit = 1000000/' "$TMP/h1.toml"
ip netns exec $P-h1 ./target/release/xvsd --config "$TMP/h1.toml" --state "$TMP/state.toml" --socket "$TMP/x.sock" 2>"$TMP/log" &
XPID=$!
for _ in $(seq 100); do [ -S "$TMP/x.sock" ] && break; sleep 0.1; done
B=./target/release/xvs-ctlbench
single=$(taskset -c 0 $B "$TMP/x.sock" blue 192.168.77.2 5000 1)
batched=$(taskset -c 0 $B "$TMP/x.sock" blue 192.168.77.2 200000 100)
{
  echo "# Control-plane rate, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Command: \`scripts/bench-control.sh\`. xvsd on CPU1, client on CPU0. xvsd sends each change"
  echo "to the core and appends it to the state journal (fdatasync) at the same time, and replies"
  echo "when both are done; 'live' is the time from the request to the core's confirmation."
  echo
  echo "| requests of | entries | entries/s | reply p50 µs | reply p99 µs | reply max µs | live p50 µs | live p99 µs |"
  echo "|---|---|---|---|---|---|---|---|"
  for r in "$single" "$batched"; do
    python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(f\"| {d['batch']} | {d['entries']} | {d['entries_per_sec']} | {d['p50_us']} | {d['p99_us']} | {d['max_us']} | {d['live_p50_us']} | {d['live_p99_us']} |\")" "$r"
  done
} > "$REPORT"
cat "$REPORT"
