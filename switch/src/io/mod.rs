//! The I/O layer: XDP and tc programs (aya), AF_XDP sockets (xsk-rs), the UMEM, packet
//! sockets on taps, link events (netlink). The only place with `unsafe` code; everything
//! above it is safe and I/O-free.
//!
//! May depend on: offload, pipeline, port, types, wire; aya, xsk-rs, nix, libc, netlink. The
//! only module with `unsafe`.

pub mod afxdp;
pub mod links;
pub mod netdev;
pub mod packet;
pub mod ports;
pub mod xdp;

/// The CPU's cycle counter (the time-stamp counter on x86_64; 0 elsewhere), for the forwarding
/// core's per-stage profile.
#[allow(unsafe_code)]
pub fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads a counter; it has no preconditions and touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Advice for the dataplane's large tables ([`xvs_dataplane::hint::MemAdvice`]): back the
/// range with transparent huge pages where the kernel has them, so that a large table costs
/// a handful of TLB entries instead of thousands. Called before the memory is first written
/// (the advice applies to pages faulted in afterwards); only whole 2 MiB pages inside the
/// range are advised, and a range too small or huge pages off change nothing.
#[allow(unsafe_code)]
pub fn advise_huge_pages(start: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    let (from, to) = (start.next_multiple_of(HUGE), (start + len) / HUGE * HUGE);
    if to > from {
        // SAFETY: the caller owns the range (an allocation it just made); MADV_HUGEPAGE
        // changes how the kernel backs it, never its contents or its mapping, and fails
        // harmlessly.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
        }
    }
}
