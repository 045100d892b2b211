//! Bandwidth guarantees on the uplink: a two-tier, work-conserving egress scheduler with
//! pacing, O(1) per packet in the number of tenants.
//!
//! * Guaranteed tier: every backlogged tenant whose guarantee token bucket (filled at its
//!   guarantee) holds its head frame is served round-robin before anything else. The
//!   guarantees add up to at most the link rate (admission control), so this tier always
//!   keeps up.
//! * Excess tier: when no tenant is eligible for its guarantee, backlogged tenants share what
//!   is left by deficit round robin with quanta proportional to their weights.
//! * Every frame also takes tokens from the tenant's limit bucket (filled at its limit); a
//!   tenant out of limit tokens waits.
//! * Pacing: the scheduler releases frames at the link rate, so queues build here (where they
//!   are scheduled) and not in the NIC.
//!
//! Tenants waiting for tokens sit in a timing wheel (1 µs slots, as in Carousel) instead of
//! being rescanned, so no operation walks the tenant list. Within a tenant, its flows (VM
//! ports) are served round-robin. Queues are bounded; a full queue refuses the frame (the
//! caller drops and counts it). Time is passed in (ns); nothing here reads a clock.

use crate::port::Desc;
use serde::Serialize;

/// Bytes a frame occupies on the wire beyond its data: preamble (8), FCS (4), gap (12).
pub const WIRE_OVERHEAD: u64 = 24;
const NIL: u32 = u32::MAX;
const SLOT_NS: u64 = 1_000;
/// Unused link time the pacer may catch up on after a late poll (the forwarding core shares
/// its CPU, and may be preempted for a millisecond or two).
pub const LINK_SLACK_NS: u64 = 2_000_000;
const WHEEL_SLOTS: usize = 1 << 14; // 16.4 ms horizon; longer waits are re-checked then

/// QoS settings of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TenantQos {
    /// Minimum rate, bits/s (0: best effort).
    pub guarantee: u64,
    /// Maximum rate, bits/s (`None`: the link rate).
    pub limit: Option<u64>,
    /// Share of the excess, relative to other tenants' weights.
    pub weight: u32,
}

impl Default for TenantQos {
    fn default() -> Self {
        TenantQos { guarantee: 0, limit: None, weight: 1 }
    }
}

/// Counters of one tenant in the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TenantQosStats {
    /// Frames sent.
    pub packets: u64,
    /// Wire bytes sent.
    pub bytes: u64,
    /// Wire bytes sent in the guaranteed tier.
    pub guaranteed_bytes: u64,
    /// Frames refused because the tenant's queue was full.
    pub drops: u64,
    /// Frames waiting now.
    pub backlog: u32,
}

/// Fraction bits of the fixed-point nanoseconds-per-byte figures, so no division is left
/// on the per-frame path (a 128-bit division costs more than the rest of a dequeue).
const FP: u32 = 20;

/// Nanoseconds per byte at `rate_bps`, in 2^-FP ns (0 for rate 0: unlimited).
fn ns_per_byte(rate_bps: u64) -> u64 {
    if rate_bps == 0 {
        0
    } else {
        ((8_000_000_000u128 << FP) / u128::from(rate_bps)).clamp(1, u128::from(u64::MAX)) as u64
    }
}

/// Time `bytes` take at `ns_per_byte` (2^-FP ns per byte), plus a carried fraction, in
/// 2^-FP ns: one multiplication.
#[inline]
fn cost_fp(bytes: u64, ns_per_byte: u64, frac: u64) -> u128 {
    u128::from(bytes) * u128::from(ns_per_byte) + u128::from(frac)
}

const FRAC_MASK: u64 = (1 << FP) - 1;

/// A token bucket kept as a virtual time: it holds what its rate earns from `t` to now, at
/// most `burst_ns` worth; sending moves `t` on by the frame's time at the rate. Checking
/// and taking are a multiplication and a comparison.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// 2^-FP ns per byte; 0 means unlimited.
    ns_per_byte: u64,
    /// Tokens are spent up to this time (ns); past `now` means in debt.
    t: u64,
    /// The fraction of a nanosecond `t` carries, 2^-FP ns.
    frac: u64,
    /// The bucket's depth as time at its rate (ns).
    burst_ns: u64,
}

impl Bucket {
    /// A bucket of `burst` bytes at `rate` bits/s, full or empty at `now`.
    fn new(rate: u64, burst: u64, now: u64, full: bool) -> Bucket {
        let npb = ns_per_byte(rate);
        let burst_ns = (cost_fp(burst, npb, 0) >> FP).min(u128::from(u64::MAX / 4)) as u64;
        Bucket { ns_per_byte: npb, t: if full { now.saturating_sub(burst_ns) } else { now }, frac: 0, burst_ns }
    }

    /// Whether the bucket has a rate (a guarantee bucket without one guarantees nothing).
    #[inline]
    fn is_limited(&self) -> bool {
        self.ns_per_byte != 0
    }

    /// Where spending starts at `now`: unused time beyond the depth is lost.
    #[inline]
    fn base(&self, now: u64) -> u64 {
        self.t.max(now.saturating_sub(self.burst_ns))
    }

    /// When the bucket holds `n` bytes (`now` or earlier if it does already).
    #[inline]
    fn ready_at(&self, n: u64, now: u64) -> u64 {
        if !self.is_limited() {
            return now;
        }
        let need = (cost_fp(n, self.ns_per_byte, self.frac) >> FP).min(u128::from(u64::MAX / 4)) as u64;
        self.base(now).saturating_add(need)
    }

    #[inline]
    fn has(&self, n: u64, now: u64) -> bool {
        self.ready_at(n, now) <= now
    }

    #[inline]
    fn take(&mut self, n: u64, now: u64) {
        if !self.is_limited() {
            return;
        }
        let fine = cost_fp(n, self.ns_per_byte, self.frac);
        self.t = self.base(now).saturating_add((fine >> FP).min(u128::from(u64::MAX / 4)) as u64);
        self.frac = fine as u64 & FRAC_MASK;
    }
}

/// The bounded FIFOs of all flows in one array: flow `f` owns slots `f << shift ..`, a power
/// of two of them, so indexing is a mask and a shift.
#[derive(Debug, Clone)]
struct Queues {
    buf: Vec<Desc>,
    head: Vec<u32>,
    len: Vec<u32>,
    shift: u32,
}

impl Queues {
    fn new(flows: usize, cap: usize) -> Queues {
        let cap = cap.max(1).next_power_of_two();
        Queues {
            buf: vec![Desc::default(); flows * cap],
            head: vec![0; flows],
            len: vec![0; flows],
            shift: cap.trailing_zeros(),
        }
    }

    #[inline]
    fn mask(&self) -> u32 {
        (1u32 << self.shift) - 1
    }

    #[inline]
    fn push(&mut self, f: usize, d: Desc) -> bool {
        let len = self.len[f];
        if len > self.mask() {
            return false;
        }
        let i = (f << self.shift) | ((self.head[f] + len) & self.mask()) as usize;
        self.buf[i] = d;
        self.len[f] = len + 1;
        true
    }

    #[inline]
    fn front(&self, f: usize) -> Option<Desc> {
        (self.len[f] > 0).then(|| self.buf[(f << self.shift) | self.head[f] as usize])
    }

    #[inline]
    fn pop(&mut self, f: usize) -> Option<Desc> {
        let d = self.front(f)?;
        self.head[f] = (self.head[f] + 1) & self.mask();
        self.len[f] -= 1;
        Some(d)
    }

    fn flows(&self) -> usize {
        self.head.len()
    }
}

/// An intrusive FIFO of ids over a `next` array.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: List = List { head: NIL, tail: NIL };

    fn push(&mut self, next: &mut [u32], id: u32) {
        next[id as usize] = NIL;
        if self.tail == NIL {
            self.head = id;
        } else {
            next[self.tail as usize] = id;
        }
        self.tail = id;
    }

    fn pop(&mut self, next: &[u32]) -> Option<u32> {
        if self.head == NIL {
            return None;
        }
        let id = self.head;
        self.head = next[id as usize];
        if self.head == NIL {
            self.tail = NIL;
        }
        Some(id)
    }

    fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

#[derive(Debug, Clone)]
struct Tenant {
    guar: Bucket,
    lim: Bucket,
    quantum: i64,
    deficit: i64,
    /// Flows of this tenant with frames, round-robin.
    flows: List,
    backlog: u32,
    in_g: bool,
    in_x: bool,
    in_wheel: bool,
    stats: TenantQosStats,
}

/// The egress scheduler of one uplink.
#[derive(Debug)]
pub struct Scheduler {
    link_bps: u64,
    /// 2^-FP ns per byte on the link, and the fraction carried.
    link_npb: u64,
    link_frac: u64,
    tenants: Vec<Tenant>,
    qos: Vec<TenantQos>,
    flow_q: Queues,
    flow_tenant: Vec<u32>,
    flow_in: Vec<bool>,
    flow_next: Vec<u32>,
    g_next: Vec<u32>,
    x_next: Vec<u32>,
    w_next: Vec<u32>,
    g_list: List,
    x_list: List,
    wheel: Vec<List>,
    wheel_at: u64,
    wheel_count: u32,
    link_free_at: u64,
    backlog: u64,
    due: Vec<u32>,
}

impl Scheduler {
    /// A scheduler for a link of `link_bps` with `tenants` tenants, `flows` flows and
    /// `queue` frames of room per flow. Everything is allocated here.
    pub fn new(link_bps: u64, tenants: usize, flows: usize, queue: usize) -> Scheduler {
        let mut s = Scheduler {
            link_bps: link_bps.max(1),
            link_npb: ns_per_byte(link_bps.max(1)),
            link_frac: 0,
            tenants: Vec::with_capacity(tenants),
            qos: vec![TenantQos::default(); tenants],
            flow_q: Queues::new(flows, queue),
            flow_tenant: vec![NIL; flows],
            flow_in: vec![false; flows],
            flow_next: vec![NIL; flows],
            g_next: vec![NIL; tenants],
            x_next: vec![NIL; tenants],
            w_next: vec![NIL; tenants],
            g_list: List::EMPTY,
            x_list: List::EMPTY,
            wheel: vec![List::EMPTY; WHEEL_SLOTS],
            wheel_at: 0,
            wheel_count: 0,
            link_free_at: 0,
            backlog: 0,
            due: Vec::with_capacity(tenants),
        };
        for _ in 0..tenants {
            s.tenants.push(s.tenant_state(TenantQos::default(), 0));
        }
        s
    }

    fn tenant_state(&self, qos: TenantQos, now: u64) -> Tenant {
        // The guarantee bucket holds up to 5 ms at its rate (a tenant held back, by others or
        // by a late poll, catches up that much at priority); the limit bucket only 50 µs, so
        // a limit holds within 1% over 10 ms; both at least two full frames.
        let burst = |rate: u64, per_sec: u64| (rate / 8 / per_sec).max(2 * 1538);
        let limit = qos.limit.unwrap_or(0);
        Tenant {
            guar: Bucket::new(qos.guarantee, burst(qos.guarantee, 200), now, false),
            lim: Bucket::new(limit, burst(limit, 20_000), now, true),
            quantum: 1538 * i64::from(qos.weight.max(1)),
            deficit: 0,
            flows: List::EMPTY,
            backlog: 0,
            in_g: false,
            in_x: false,
            in_wheel: false,
            stats: TenantQosStats::default(),
        }
    }

    /// (tenants, flows) this scheduler has room for.
    pub fn capacity(&self) -> (usize, usize) {
        (self.tenants.len(), self.flow_q.flows())
    }

    /// Takes every queued frame out, ignoring rates (when the scheduler is replaced).
    pub fn drain(&mut self, out: &mut Vec<Desc>) {
        for f in 0..self.flow_q.flows() {
            while let Some(d) = self.flow_q.pop(f) {
                out.push(d);
            }
        }
        self.backlog = 0;
    }

    /// The link rate, bits/s.
    pub fn link_bps(&self) -> u64 {
        self.link_bps
    }

    /// Changes the link rate.
    pub fn set_link(&mut self, bps: u64) {
        self.link_bps = bps.max(1);
        self.link_npb = ns_per_byte(self.link_bps);
    }

    /// Sets (or changes, live) a tenant's QoS; its queued frames stay.
    pub fn set_tenant(&mut self, tenant: u32, qos: TenantQos, now: u64) {
        let Some(t) = self.tenants.get(tenant as usize) else { return };
        let mut n = self.tenant_state(qos, now);
        n.flows = t.flows;
        n.backlog = t.backlog;
        n.in_g = t.in_g;
        n.in_x = t.in_x;
        n.in_wheel = t.in_wheel;
        n.stats = t.stats;
        self.tenants[tenant as usize] = n;
        self.qos[tenant as usize] = qos;
    }

    /// A tenant's settings and counters.
    pub fn tenant(&self, tenant: u32) -> Option<(TenantQos, TenantQosStats)> {
        let t = self.tenants.get(tenant as usize)?;
        Some((self.qos[tenant as usize], TenantQosStats { backlog: t.backlog, ..t.stats }))
    }

    /// Frames queued in all.
    pub fn backlog(&self) -> u64 {
        self.backlog
    }

    /// Queues frame `d` of `flow` (a VM port) of `tenant`; gives it back when the queue is full.
    #[inline]
    pub fn enqueue(&mut self, tenant: u32, flow: u32, d: Desc, now: u64) -> Result<(), Desc> {
        let (ti, fi) = (tenant as usize, flow as usize);
        if ti >= self.tenants.len() || fi >= self.flow_q.flows() {
            return Err(d);
        }
        if !self.flow_q.push(fi, d) {
            self.tenants[ti].stats.drops += 1;
            return Err(d);
        }
        self.flow_tenant[fi] = tenant;
        self.backlog += 1;
        let t = &mut self.tenants[ti];
        t.backlog += 1;
        if !self.flow_in[fi] {
            self.flow_in[fi] = true;
            t.flows.push(&mut self.flow_next, flow);
        }
        if t.backlog == 1 {
            self.schedule(tenant, now);
        }
        Ok(())
    }

    /// Size on the wire of the tenant's next frame.
    #[inline]
    fn head_len(&self, tenant: u32) -> Option<u64> {
        let f = self.tenants[tenant as usize].flows.head;
        if f == NIL {
            return None;
        }
        self.flow_q.front(f as usize).map(|d| u64::from(d.len) + WIRE_OVERHEAD)
    }

    /// Puts a backlogged tenant in the lists it is eligible for, or in the wheel.
    #[inline]
    fn schedule(&mut self, tenant: u32, now: u64) {
        let Some(len) = self.head_len(tenant) else { return };
        let t = &mut self.tenants[tenant as usize];
        // Each bucket's ready time is computed once: it says both whether the tenant may send
        // now and, if not, when to look again.
        let lim_at = t.lim.ready_at(len, now);
        let lim_ok = lim_at <= now;
        let guar_at = if t.guar.is_limited() { t.guar.ready_at(len, now) } else { u64::MAX };
        let guar_ok = guar_at <= now;
        if lim_ok && guar_ok && !t.in_g {
            t.in_g = true;
            self.g_list.push(&mut self.g_next, tenant);
        }
        if lim_ok && !t.in_x {
            t.in_x = true;
            self.x_list.push(&mut self.x_next, tenant);
        }
        // Wake up when the limit allows again, or when the guarantee is due.
        let wake = if !lim_ok {
            lim_at
        } else if t.guar.is_limited() && !guar_ok {
            guar_at
        } else {
            return;
        };
        if !t.in_wheel {
            self.wheel_insert(tenant, wake, now);
        }
    }

    fn wheel_insert(&mut self, tenant: u32, at: u64, now: u64) {
        if self.wheel_count == 0 {
            self.wheel_at = self.wheel_at.max(now / SLOT_NS);
        }
        let slot = at.div_ceil(SLOT_NS).clamp(self.wheel_at + 1, self.wheel_at + WHEEL_SLOTS as u64 - 1);
        self.wheel[(slot as usize) % WHEEL_SLOTS].push(&mut self.w_next, tenant);
        self.tenants[tenant as usize].in_wheel = true;
        self.wheel_count += 1;
    }

    /// Moves tenants whose wait is over back into the lists. Due tenants are collected first
    /// and rescheduled after the wheel has moved on, so each is looked at once per call.
    fn advance(&mut self, now: u64) {
        let target = now / SLOT_NS;
        if self.wheel_count > 0 && self.wheel_at < target {
            let steps = (target - self.wheel_at).min(WHEEL_SLOTS as u64);
            self.due.clear();
            for k in 1..=steps {
                let slot = ((self.wheel_at + k) as usize) % WHEEL_SLOTS;
                while let Some(t) = self.wheel[slot].pop(&self.w_next) {
                    self.wheel_count -= 1;
                    self.tenants[t as usize].in_wheel = false;
                    if self.due.len() < self.due.capacity() {
                        self.due.push(t);
                    }
                }
            }
            self.wheel_at = target;
            for i in 0..self.due.len() {
                let t = self.due[i];
                if self.tenants[t as usize].backlog > 0 {
                    self.schedule(t, now);
                }
            }
        }
        if self.wheel_count == 0 {
            self.wheel_at = self.wheel_at.max(target);
        }
    }

    /// When the link can take the next frame (ns).
    pub fn next_send_at(&self) -> u64 {
        self.link_free_at
    }

    /// Releases the next frame if the link is free at `now` and a tenant may send.
    #[inline]
    pub fn dequeue(&mut self, now: u64) -> Option<Desc> {
        if self.backlog == 0 || now < self.link_free_at {
            return None;
        }
        self.advance(now);
        // Guaranteed tier.
        while let Some(t) = self.g_list.pop(&self.g_next) {
            self.tenants[t as usize].in_g = false;
            let Some(len) = self.head_len(t) else { continue };
            let tn = &mut self.tenants[t as usize];
            if !(tn.guar.has(len, now) && tn.lim.has(len, now)) {
                self.schedule(t, now);
                continue;
            }
            tn.guar.take(len, now);
            tn.stats.guaranteed_bytes += len;
            let d = self.send(t, len, now);
            if self.tenants[t as usize].backlog > 0 {
                self.schedule(t, now);
            }
            return d;
        }
        // Excess tier: deficit round robin by weight.
        let mut visits = 0;
        while let Some(t) = (!self.x_list.is_empty()).then_some(self.x_list.head) {
            visits += 1;
            let Some(len) = self.head_len(t) else {
                self.x_list.pop(&self.x_next);
                self.tenants[t as usize].in_x = false;
                continue;
            };
            let tn = &mut self.tenants[t as usize];
            if !tn.lim.has(len, now) {
                self.x_list.pop(&self.x_next);
                tn.in_x = false;
                self.schedule(t, now);
                continue;
            }
            if tn.deficit < len as i64 {
                // Its turn is over: next round it gets another quantum.
                tn.deficit += tn.quantum;
                self.x_list.pop(&self.x_next);
                self.x_list.push(&mut self.x_next, t);
                if visits > 2 * self.tenants.len() + 2 {
                    return None; // cannot happen with quantum >= largest frame; stay bounded
                }
                continue;
            }
            tn.deficit -= len as i64;
            let d = self.send(t, len, now);
            let tn = &mut self.tenants[t as usize];
            if tn.backlog == 0 {
                self.x_list.pop(&self.x_next);
                tn.in_x = false;
                tn.deficit = 0;
            } else if tn.guar.is_limited() && !tn.in_g {
                // A new head frame: it may be within the guarantee already (the wheel only
                // knows when the previous head would have been).
                self.schedule(t, now);
            }
            return d;
        }
        None
    }

    /// Takes the head frame of tenant `t`'s current flow and accounts for it.
    #[inline]
    fn send(&mut self, t: u32, len: u64, now: u64) -> Option<Desc> {
        let tn = &mut self.tenants[t as usize];
        let f = tn.flows.pop(&self.flow_next)?;
        let d = self.flow_q.pop(f as usize);
        if self.flow_q.len[f as usize] > 0 {
            tn.flows.push(&mut self.flow_next, f); // flows of a tenant take turns
        } else {
            self.flow_in[f as usize] = false;
        }
        tn.lim.take(len, now);
        tn.backlog -= 1;
        tn.stats.packets += 1;
        tn.stats.bytes += len;
        self.backlog -= 1;
        // The link keeps up to LINK_SLACK_NS of time it was not given (a late poll), so a
        // forwarding loop's jitter does not cost capacity; beyond that, idle time is lost.
        let start = self.link_free_at.max(now.saturating_sub(LINK_SLACK_NS));
        let fine = cost_fp(len, self.link_npb, self.link_frac);
        self.link_free_at = start + (fine >> FP) as u64;
        self.link_frac = fine as u64 & FRAC_MASK;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1_000_000_000;

    fn frame(id: u32, len: u32) -> Desc {
        Desc { id, len }
    }

    #[test]
    fn paces_to_the_link_rate() {
        let mut s = Scheduler::new(G, 1, 1, 64);
        for i in 0..10 {
            s.enqueue(0, 0, frame(i, 1226), 0).unwrap(); // 1250 wire bytes = 10 µs at 1G
        }
        assert!(s.dequeue(0).is_some());
        assert!(s.dequeue(5_000).is_none(), "link busy");
        assert_eq!(s.next_send_at(), 10_000);
        assert!(s.dequeue(10_000).is_some());
    }

    #[test]
    fn full_queue_refuses_and_counts() {
        let mut s = Scheduler::new(G, 1, 1, 2);
        assert!(s.enqueue(0, 0, frame(1, 60), 0).is_ok());
        assert!(s.enqueue(0, 0, frame(2, 60), 0).is_ok());
        assert_eq!(s.enqueue(0, 0, frame(3, 60), 0), Err(frame(3, 60)));
        assert_eq!(s.tenant(0).unwrap().1.drops, 1);
    }

    #[test]
    fn limit_caps_a_lone_tenant() {
        let mut s = Scheduler::new(10 * G, 1, 1, 4096);
        s.set_tenant(0, TenantQos { guarantee: 0, limit: Some(G), weight: 1 }, 0);
        let mut now = 0;
        let mut id = 0;
        while now < 100_000_000 {
            while s.tenant(0).unwrap().1.backlog < 100 {
                id += 1;
                s.enqueue(0, 0, frame(id, 1000), now).unwrap();
            }
            if s.dequeue(now).is_none() {
                now += 1000;
            }
        }
        let bits = s.tenant(0).unwrap().1.bytes * 8;
        let rate = bits as f64 / 0.1;
        assert!((rate - 1e9).abs() / 1e9 < 0.01, "limited to {rate}");
    }
}
