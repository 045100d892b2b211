#!/usr/bin/env bash
# Runs every test of xvs: set-up, formatting and lints, unit/property/integration tests,
# fuzz target builds, and the system tests in network namespaces (root required).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

step() { echo; echo "=== $* ==="; }

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --all-targets -- -D warnings
cargo machete   # no unused dependencies
# xvsctl speaks the protocol crate alone: no switch, no XDP toolchain, no libxdp
if cargo tree -p xvsctl -e normal,build --prefix none | grep -E '^(xvs-switch|aya|xsk-rs|libxdp)'; then
  echo "xvsctl must not depend on the switch or the XDP stack (see above)" >&2
  exit 1
fi

# The dataplane cannot do I/O: no system-call crate may reach it (it forbids unsafe itself)
if cargo tree -p xvs-dataplane -e normal --prefix none | grep -Ei '^(libc|nix|rustix|aya|xsk-rs|netlink|tokio|mio|hyper|socket2) '; then
  echo "xvs-dataplane must not depend on a system-call or I/O crate (see above)" >&2
  exit 1
fi

step "unit, property and in-memory pipeline tests"
cargo test --lib --bins --tests -p xvs-switch -p xvs-dataplane -p xvs-hint -p xvs-proto -p xvs-common -p xvs-benches

step "fuzz targets (each for 10 s; a longer campaign: ./scripts/fuzz.sh 600)"
FUZZ_SANITIZER=none ./scripts/fuzz.sh 10

if [ -d tests/tests ]; then
  step "system tests (network namespaces, XDP, AF_XDP)"
  if [ "$(id -u)" != 0 ]; then
    echo "system tests need root (network namespaces, XDP); run as root" >&2
    exit 1
  fi
  cargo build --release --bins
  cargo test --release -p xvs-systests -- --test-threads=1

  step "the Debian package, installed in a clean Debian 12 and started as its unit starts it"
  ./scripts/test-package.sh
fi
echo; echo "all tests passed"
