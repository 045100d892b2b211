#!/usr/bin/env bash
# Installs everything xvs needs on a fresh Debian 12 machine. Idempotent: every step checks
# first and does nothing when its part is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
# clang/llvm/libelf/zlib/m4/pkg-config: xsk-rs builds libxdp/libbpf from source (use_cc_build).
# iproute2/iputils-ping/iperf3/tcpdump/ethtool/socat: the namespace testbed and system tests;
# openvswitch-switch: the performance harness runs OVS (userspace datapath) beside xvs;
# openvswitch-switch-dpdk, dpdk-dev (dpdk-testpmd), librte-net-af-xdp23 and librte-mempool-ring23
# (DPDK's AF_XDP driver and mempool, only recommended by them, so named): OVS with DPDK and
# an AF_XDP forwarder doing no switching, as peers in the performance harness.
# qemu-system-x86/busybox-static/cpio: the real-VM tests boot Debian's kernel (extracted from
# linux-image-amd64 by tests/vm/build-guest.sh, not installed) with a busybox initramfs.
# etcd-server/etcd-client: the etcd store's tests start their own etcd cluster (etcd, etcdctl);
# protobuf-compiler/libprotobuf-dev: the etcd client crate compiles etcd's gRPC definitions at build time.
APT_PKGS=(clang llvm libelf-dev zlib1g-dev m4 pkg-config make gcc iproute2 iputils-ping
          iperf3 tcpdump ethtool socat procps python3 util-linux openvswitch-switch
          openvswitch-switch-dpdk dpdk-dev librte-net-af-xdp23 librte-mempool-ring23
          qemu-system-x86 busybox-static cpio etcd-server etcd-client protobuf-compiler libprotobuf-dev)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Rust toolchain (pinned by rust-toolchain.toml) --------------------------------------------
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v rustup >/dev/null || { log "rustup is required but not installed"; exit 1; }
TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
rustup toolchain list | grep -q "^$TOOLCHAIN" || rustup toolchain install "$TOOLCHAIN" --profile minimal
for c in rust-src rustfmt clippy; do
  rustup component list --installed --toolchain "$TOOLCHAIN" | grep -q "^$c" \
    || rustup component add "$c" --toolchain "$TOOLCHAIN"
done

# --- bpf-linker, linked against rustc's own LLVM ----------------------------------------------
# rustc 1.95 ships LLVM 22 as a shared library in its sysroot; bpf-linker must use the same
# LLVM, so we point it at a folder of symlinks to that library.
BPF_LINKER_VERSION=0.13.0
if ! { command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; }; then
  SYSROOT=$(rustc +"$TOOLCHAIN" --print sysroot)
  LIB=$(ls "$SYSROOT"/lib/libLLVM.so.* 2>/dev/null | head -1)
  [ -n "$LIB" ] || { log "no libLLVM in $SYSROOT/lib"; exit 1; }
  PREFIX="${XDG_CACHE_HOME:-$HOME/.cache}/xvs/llvm-prefix"
  mkdir -p "$PREFIX/lib"
  ln -sf "$LIB" "$PREFIX/lib/libLLVM.so"
  ln -sf "$LIB" "$PREFIX/lib/$(basename "$LIB")"
  log "building bpf-linker $BPF_LINKER_VERSION against $(basename "$LIB") (takes a few minutes)"
  LLVM_PREFIX="$PREFIX" LD_LIBRARY_PATH="$SYSROOT/lib" \
    cargo +"$TOOLCHAIN" install --locked "bpf-linker@$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22
fi

# --- cargo-fuzz (scripts/fuzz.sh; the nightly toolchain comes with this machine kind) -----
CARGO_FUZZ_VERSION=0.13.2
if ! { command -v cargo-fuzz >/dev/null && cargo-fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; }; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo +"$TOOLCHAIN" install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
# --- cargo-machete (scripts/test.sh: no unused dependencies) ----------------------------
CARGO_MACHETE_VERSION=0.9.2
if ! { command -v cargo-machete >/dev/null && cargo-machete --version 2>/dev/null | grep -q "$CARGO_MACHETE_VERSION"; }; then
  log "installing cargo-machete $CARGO_MACHETE_VERSION"
  cargo +"$TOOLCHAIN" install --locked "cargo-machete@$CARGO_MACHETE_VERSION"
fi
rustup which --toolchain nightly rustc >/dev/null 2>&1 ||
  { echo "setup: the fuzz targets need a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
log "ok"
