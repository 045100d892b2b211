//! Hints to the CPU and the memory system: they change how fast, never what, the dataplane
//! computes. The prefetch comes from `xvs-hint` (its one `unsafe` block wraps the
//! instruction); advice that needs a system call (huge pages) is a function the daemon passes
//! in ([`MemAdvice`]), so this crate stays free of I/O and of `unsafe`.
//!
//! May depend on: xvs-hint.

pub use xvs_hint::prefetch;

/// Advice on a range of memory (start address, length in bytes) before it is first written:
/// xvsd passes one that asks for transparent huge pages; [`no_advice`] does nothing.
pub type MemAdvice = fn(usize, usize);

/// Advice that does nothing (tests, simulations).
pub fn no_advice(_start: usize, _len: usize) {}

/// A vector of `n` copies of `value` whose memory got `advice` before it was first written
/// (advice such as huge pages applies to pages faulted in afterwards).
pub fn advised_vec<T: Clone>(n: usize, value: T, advice: MemAdvice) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    advice(v.as_ptr() as usize, v.capacity() * std::mem::size_of::<T>());
    v.resize(n, value);
    v
}
