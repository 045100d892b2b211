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

/// Asks the CPU to bring the cache line holding `r` into its caches, ahead of use: a hint
/// with no effect on what the program computes (a no-op off x86_64). Batched packet code
/// calls it a few items ahead so that cache misses overlap instead of stalling one by one.
#[allow(unsafe_code)]
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: PREFETCHT0 is a hint: it never faults, writes nothing and changes no
        // architectural state; the pointer comes from a live reference in any case.
        unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>((r as *const T).cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// A vector of `n` copies of `value` on transparent huge pages where the kernel has them, so
/// that a large table costs a handful of TLB entries instead of thousands: the memory is
/// advised before it is first written (the advice applies to pages faulted in afterwards).
/// Where huge pages are off or the table is too small, it is an ordinary vector.
#[allow(unsafe_code)]
pub fn huge_vec<T: Clone>(n: usize, value: T) -> Vec<T> {
    const HUGE: usize = 2 << 20;
    let mut v = Vec::with_capacity(n);
    let start = v.as_ptr() as usize;
    let end = start + v.capacity() * std::mem::size_of::<T>();
    let (from, to) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if to > from {
        // SAFETY: the range lies inside the allocation `v` owns; MADV_HUGEPAGE changes how
        // the kernel backs it, never its contents or its mapping, and fails harmlessly.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
        }
    }
    v.resize(n, value);
    v
}
