# Sourced by the benchmark scripts: one xvsd per testbed host, started and stopped together.
# Needs P (testbed prefix), TMP (holding h1.toml and h2.toml), the array XPIDS and a log
# function; each xvsd keeps its stats, state, socket and log in TMP as hN.json, hN-state.toml,
# hN.sock and hN.log.

# Starts xvsd on hosts 1 and 2 with TMP/h1.toml and TMP/h2.toml; waits until each has
# written its stats, and exits saying why if one did not.
start_xvsd_pair() {
  local h
  for h in 1 2; do
    rm -f "$TMP/h$h.json" "$TMP/h$h-state.toml"
    ip netns exec "$P-h$h" ./target/release/xvsd --config "$TMP/h$h.toml" --stats-file "$TMP/h$h.json" \
      --state "$TMP/h$h-state.toml" --socket "$TMP/h$h.sock" 2>"$TMP/h$h.log" &
    XPIDS+=($!)
  done
  for h in 1 2; do
    for _ in $(seq 100); do [ -s "$TMP/h$h.json" ] && break; sleep 0.1; done
    [ -s "$TMP/h$h.json" ] || { log "xvsd on h$h did not start: $(cat "$TMP/h$h.log")"; exit 1; }
  done
}

# Stops every xvsd started (SIGTERM: they detach their XDP programs) and waits for them.
stop_xvsd() {
  local p
  for p in "${XPIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  XPIDS=()
}
