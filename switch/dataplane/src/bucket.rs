//! The token bucket: one type for a VM port's policer (a frame conforms or is dropped) and
//! for the uplink scheduler's guarantee and limit buckets (a tenant may send while its
//! bucket is not in debt). Pure: time is passed in, no I/O, no allocation.
//!
//! May depend on: nothing.

/// Fraction bits of the fixed-point nanoseconds-per-byte figures, so no division is left
/// on the per-frame path (a 128-bit division costs more than the rest of a dequeue).
pub(crate) const FP: u32 = 20;

/// The fraction part of a 2^-FP figure.
pub(crate) const FRAC_MASK: u64 = (1 << FP) - 1;

/// Nanoseconds per byte at `rate_bps`, in 2^-FP ns (0 for rate 0: unlimited).
pub(crate) fn ns_per_byte(rate_bps: u64) -> u64 {
    if rate_bps == 0 {
        0
    } else {
        ((8_000_000_000u128 << FP) / u128::from(rate_bps)).clamp(1, u128::from(u64::MAX)) as u64
    }
}

/// Time `bytes` take at `ns_per_byte` (2^-FP ns per byte), plus a carried fraction, in
/// 2^-FP ns: one multiplication.
#[inline]
pub(crate) fn cost_fp(bytes: u64, ns_per_byte: u64, frac: u64) -> u128 {
    u128::from(bytes) * u128::from(ns_per_byte) + u128::from(frac)
}

/// Longest time a bucket moves in one step (keeps every sum far from overflow).
const MAX_STEP: u128 = (i64::MAX / 4) as u128;

/// A token bucket kept as a virtual time, in the earliest-departure-time style: `t` is
/// when the tokens spent so far are paid back; unused time counts for up to `burst_ns`
/// (the bucket's depth). Taking `n` bytes moves `t` on by their time at the rate: one
/// multiplication, no division. `t` may lie before time 0, so a bucket is full from the
/// start whenever it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// 2^-FP ns per byte; 0 means unlimited.
    ns_per_byte: u64,
    /// Tokens are spent up to this time (ns); past `now` means in debt.
    t: i64,
    /// The fraction of a nanosecond `t` carries, 2^-FP ns.
    frac: u64,
    /// The bucket's depth as time at its rate (ns).
    burst_ns: u64,
}

impl TokenBucket {
    /// A bucket of `burst` bytes at `rate` bits/s (0: unlimited), full or empty at `now`.
    pub fn new(rate: u64, burst: u64, now: u64, full: bool) -> TokenBucket {
        let npb = ns_per_byte(rate);
        let burst_ns = (cost_fp(burst, npb, 0) >> FP).min(MAX_STEP) as u64;
        let now = now as i64;
        TokenBucket { ns_per_byte: npb, t: if full { now - burst_ns as i64 } else { now }, frac: 0, burst_ns }
    }

    /// Whether the bucket has a rate.
    #[inline]
    pub fn is_limited(&self) -> bool {
        self.ns_per_byte != 0
    }

    /// 2^-FP ns per byte (0: unlimited).
    #[inline]
    pub fn ns_per_byte(&self) -> u64 {
        self.ns_per_byte
    }

    /// Whether it is not in debt at `now` (always, without a rate): a scheduler may send.
    #[inline]
    pub fn ready(&self, now: u64) -> bool {
        self.t <= now as i64
    }

    /// When it is out of debt (0 if it was before time 0).
    #[inline]
    pub fn ready_at(&self) -> u64 {
        self.t.max(0) as u64
    }

    /// Spends `n` bytes at `now`, into debt if need be (the scheduler checked `ready`).
    #[inline]
    pub fn take(&mut self, n: u64, now: u64) {
        if !self.is_limited() {
            return;
        }
        let fine = cost_fp(n, self.ns_per_byte, self.frac);
        let base = self.t.max(now as i64 - self.burst_ns as i64);
        self.t = base.saturating_add((fine >> FP).min(MAX_STEP) as i64);
        self.frac = fine as u64 & FRAC_MASK;
    }

    /// Changes the rate and depth at `now`, keeping the tokens it holds (or its debt) as
    /// bytes: what was saved at the old rate is worth as many bytes at the new one, up to
    /// the new depth. From or to unlimited, the bucket starts full.
    pub fn retune(&mut self, rate: u64, burst: u64, now: u64) {
        let new = TokenBucket::new(rate, burst, now, true);
        if !self.is_limited() || !new.is_limited() {
            *self = new;
            return;
        }
        let saved = (now as i64 - self.t).min(self.burst_ns as i64);
        let bytes = (i128::from(saved) << FP) / i128::from(self.ns_per_byte);
        let at_new = ((bytes * i128::from(new.ns_per_byte)) >> FP).clamp(-(MAX_STEP as i128), new.burst_ns as i128);
        *self = TokenBucket { t: now as i64 - at_new as i64, ..new };
    }

    /// Adds `bytes` of tokens, up to the depth (a scheduler's share that was raised late).
    pub fn credit(&mut self, bytes: u64, now: u64) {
        if !self.is_limited() {
            return;
        }
        let ns = (cost_fp(bytes, self.ns_per_byte, 0) >> FP).min(MAX_STEP) as i64;
        self.t = (self.t - ns).max(now as i64 - self.burst_ns as i64);
    }

    /// Spends `n` bytes at `now` if the bucket holds them, never going into debt: whether
    /// it did (a policer drops the frame otherwise).
    #[inline]
    pub fn admit(&mut self, n: u64, now: u64) -> bool {
        if !self.is_limited() {
            return true;
        }
        let fine = cost_fp(n, self.ns_per_byte, self.frac);
        let base = self.t.max(now as i64 - self.burst_ns as i64);
        let due = base.saturating_add((fine >> FP).min(MAX_STEP) as i64);
        if due > now as i64 {
            return false;
        }
        self.t = due;
        self.frac = fine as u64 & FRAC_MASK;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policer_bucket_is_full_from_time_zero_and_refills_at_its_rate() {
        // 8 Mbit/s = 1 byte per µs, 10,000 bytes deep
        let mut b = TokenBucket::new(8_000_000, 10_000, 0, true);
        assert!(b.admit(10_000, 0), "full at creation, even at time 0");
        assert!(!b.admit(1, 0), "then empty");
        assert!(!b.admit(1_000, 999_000), "999 bytes back after 999 µs");
        assert!(b.admit(1_000, 1_000_000), "1,000 after 1 ms");
        // a refused frame takes nothing
        assert!(!b.admit(5_000, 2_000_000));
        assert!(b.admit(1_000, 2_000_000));
        // idle time counts for the depth only
        assert!(b.admit(10_000, 1_000_000_000));
        assert!(!b.admit(1, 1_000_000_000));
        // larger than the depth: never
        assert!(!b.admit(10_001, 1 << 50));
        // over a long run the rate holds: 1 s of 100-byte frames offered every 10 µs
        let mut b = TokenBucket::new(8_000_000, 10_000, 0, true);
        let sent: u64 = (0..100_000u64).filter(|i| b.admit(100, i * 10_000)).count() as u64 * 100;
        assert!((1_000_000..=1_010_100).contains(&sent), "{sent} bytes in 1 s at 1 MB/s plus the depth");
    }

    #[test]
    fn retuning_keeps_the_tokens_as_bytes() {
        // 8 Mbit/s = 1 byte per µs, 10,000 bytes deep, half spent
        let mut b = TokenBucket::new(8_000_000, 10_000, 0, true);
        b.take(5_000, 0);
        // at 16 Mbit/s the 5,000 bytes left take 2.5 ms, not 5 ms
        b.retune(16_000_000, 20_000, 0);
        assert!(b.admit(5_000, 0) && !b.admit(1, 0));
        // debt is kept too: 1,000 bytes owed at 16 Mbit/s are 1 ms at 8 Mbit/s
        let mut b = TokenBucket::new(16_000_000, 2_000, 0, false);
        b.take(1_000, 0);
        b.retune(8_000_000, 2_000, 0);
        assert_eq!(b.ready_at(), 1_000_000);
        // a credit pays it back, up to the depth
        b.credit(1_000, 0);
        assert!(b.ready(0));
        b.credit(1 << 30, 0);
        assert!(b.admit(2_000, 0) && !b.admit(1, 0));
        // to and from unlimited: full
        b.retune(0, 0, 5);
        assert!(!b.is_limited());
        b.retune(8_000_000, 3_000, 5);
        assert!(b.admit(3_000, 5) && !b.admit(1, 5));
    }

    #[test]
    fn a_scheduler_bucket_goes_into_debt_and_says_when_it_is_out() {
        let mut b = TokenBucket::new(8_000_000, 2_000, 5_000_000, false);
        assert!(b.ready(5_000_000) && b.is_limited());
        b.take(3_000, 5_000_000); // overdraws by one frame
        assert!(!b.ready(5_000_000));
        assert_eq!(b.ready_at(), 8_000_000);
        assert!(b.ready(8_000_000));
        let free = TokenBucket::new(0, 0, 0, false);
        assert!(!free.is_limited());
        let mut free = free;
        free.take(1 << 40, 0);
        assert!(free.ready(0) && free.admit(1 << 40, 0));
    }
}
