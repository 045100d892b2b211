//! Builds the XDP programs (ebpf/xdp) for the BPF target with aya-build, so xvsd embeds them.

use aya_build::{Package, Toolchain};

fn main() {
    // The BPF target needs `-Z build-std=core`; RUSTC_BOOTSTRAP lets the pinned stable
    // toolchain accept it (aya-build passes it on to the inner cargo).
    #[expect(unsafe_code, reason = "set_var is unsafe in edition 2024")]
    // SAFETY: build scripts are single-threaded at this point; nothing reads the environment
    // concurrently.
    unsafe {
        std::env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/xdp");
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "1.95.0".to_string());
    let toolchain = toolchain.split('-').next().unwrap_or("1.95.0").to_string();
    if let Err(e) = aya_build::build_ebpf(
        [Package { name: "xvs-ebpf", root_dir: root, ..Default::default() }],
        Toolchain::Custom(&toolchain),
    ) {
        panic!("building the XDP programs failed: {e:#}");
    }
}
