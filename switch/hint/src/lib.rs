//! CPU hints for the dataplane, which forbids `unsafe` and so cannot call the prefetch
//! intrinsic itself: stable Rust has no safe prefetch (`std::hint::prefetch_read` is
//! nightly-only), and `_mm_prefetch` needs an `unsafe` block outside functions compiled for
//! SSE. This crate holds that one block, with why it is sound.
//!
//! May depend on: nothing.
#![no_std]

/// Asks the CPU to bring the cache line holding `r` into its caches, ahead of use: a hint
/// with no effect on what the program computes (a no-op off x86_64). Batched packet code
/// calls it a few items ahead so that cache misses overlap instead of stalling one by one.
#[allow(unsafe_code)]
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: PREFETCHT0 is a hint: it never faults, writes nothing and changes no
        // architectural state; SSE is part of every x86_64 CPU; the pointer comes from a
        // live reference in any case.
        unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>((r as *const T).cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}
