//! The I/O layer: XDP programs (aya), AF_XDP sockets (xsk-rs), the UMEM. The only place with
//! `unsafe` code; everything above it is safe and I/O-free.

pub mod afxdp;
pub mod netdev;
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
