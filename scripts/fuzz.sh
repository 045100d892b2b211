#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECS seconds each (default 60) with
# libFuzzer through cargo-fuzz, keeping each target's corpus in fuzz/corpus/TARGET.
# Usage: ./scripts/fuzz.sh [SECS] [TARGET...]; FUZZ_SANITIZER=none builds without
# AddressSanitizer (faster to build and run; scripts/test.sh uses it for its short runs).
# cargo-fuzz needs a nightly rustc (sanitizer flags); the eBPF programs that switch/build.rs
# builds need the pinned stable toolchain, so cargo and the build scripts run on 1.95.0 and
# only rustc is the nightly one.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
nightly_rustc=$(rustup which --toolchain nightly rustc)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(RUSTUP_TOOLCHAIN=1.95.0 cargo fuzz list)
fi
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "=== fuzz $t for ${secs}s ==="
  log="fuzz/target/fuzz-$t.log"
  mkdir -p fuzz/target
  rc=0
  RUSTUP_TOOLCHAIN=1.95.0 RUSTC="$nightly_rustc" cargo fuzz run --sanitizer "${FUZZ_SANITIZER:-address}" "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 > "$log" 2>&1 || rc=$?
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|^#[0-9]+ *DONE" "$log" | tail -3 || true
  if [ "$rc" != 0 ]; then
    grep -E -A30 "panicked at|==[0-9]+==ERROR|SUMMARY" "$log" | head -60 >&2 || tail -40 "$log" >&2
    echo "fuzz target $t failed (exit $rc); the input is under fuzz/artifacts/$t/, the log in $log" >&2
    exit "$rc"
  fi
done
