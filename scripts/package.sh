#!/usr/bin/env bash
# Builds the Debian package of xvs (target/debian/xvs_*.deb): xvsd, xvsctl, the VM port
# helpers, the systemd unit (switch/debian/xvsd.service), bash completion and man pages.
# Install with `apt install ./target/debian/xvs_*.deb`; see README.md, "Install as a service".
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
command -v help2man >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q help2man >/dev/null
cargo deb --version >/dev/null 2>&1 || cargo install --locked cargo-deb@3.8.0

cargo build --release -p xvs-switch -p xvsctl --bins
mkdir -p target/package
./target/release/xvsctl man > target/package/xvsctl.1
./target/release/xvsctl completion bash > target/package/xvsctl.bash
help2man --no-info --section 8 --name "the xvs virtual switch daemon" \
  --version-string "$(./target/release/xvsd --version | awk '{print $2}')" \
  ./target/release/xvsd > target/package/xvsd.8
cargo deb -p xvs-switch --no-build
ls target/debian/*.deb
