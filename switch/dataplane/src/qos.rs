//! Bandwidth guarantees on the uplink: a two-tier, work-conserving egress scheduler with
//! pacing, O(1) per packet in the number of tenants.
//!
//! * Guaranteed tier: every backlogged tenant whose guarantee is due (its guarantee bucket,
//!   filled at the guarantee and kept as an earliest departure time, is not in debt) is
//!   served in turn before anything else. The guarantees add up to at most the link rate
//!   (admission control), so this tier always keeps up.
//!   A tenant whose guarantee is spent waits a little past its due time (the time two full
//!   frames take at its guarantee, at most 250 µs), so a turn sends a few small frames
//!   instead of one: no credit is lost, the bucket keeps it.
//! * Excess tier: when no tenant is eligible for its guarantee, backlogged tenants share what
//!   is left by deficit round robin with quanta proportional to their weights. The quantum
//!   per unit of weight is as large as keeps a round, with every tenant backlogged, within
//!   2 ms of what the guarantees leave of the link, so each tenant gets its share in every
//!   10 ms window; but at least half a full frame (a large frame takes at most two turns)
//!   and at most four. With few tenants or a fast link a turn sends many frames, with many
//!   tenants few.
//! * Every frame also charges the tenant's limit bucket (filled at its limit); a tenant in
//!   debt there waits.
//! * Pacing: the scheduler releases frames at the link rate, so queues build here (where they
//!   are scheduled) and not in the NIC.
//!
//! Tenants waiting for tokens sit in a timing wheel (1 µs slots, as in Carousel) instead of
//! being rescanned, so no operation walks the tenant list. Within a tenant, its flows (VM
//! ports) are served round-robin. Queues are bounded; a full queue refuses the frame (the
//! caller drops and counts it), and so is a frame beyond the scheduler's total room, which
//! the forwarding core sets to its frame memory, all it can ever queue. Time is passed in
//! (ns); nothing here reads a clock. The forwarding core queues and releases a poll's
//! frames at once (`enqueue_burst`, `dequeue_burst`), which release exactly what
//! frame-by-frame calls would. A turn checks each frame against the tenant's buckets and
//! deficit, then takes the frames of a flow out as one run and accounts for them once.
//!
//! May depend on: bucket, hint (prefetch, memory advice), port (`Desc`).

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

pub use xvs_proto::reply::TenantQosStats;

use crate::bucket::{FP, FRAC_MASK, TokenBucket as Bucket, cost_fp, ns_per_byte};

/// One flow (a VM port): its bounded FIFO's position in the frame array and its place in its
/// tenant's round-robin of flows. 16 bytes, four to a cache line.
#[derive(Debug, Clone, Copy)]
struct Flow {
    /// Index of the oldest frame within the flow's slots.
    head: u32,
    len: u32,
    /// Next flow of the same tenant with frames (`NIL`: last).
    next: u32,
    /// The tenant the queued frames are accounted to (set when the queue starts filling).
    tenant: u32,
}

impl Flow {
    /// A flow with no frames queued.
    const EMPTY: Flow = Flow { head: 0, len: 0, next: NIL, tenant: NIL };
}

/// A FIFO of tenant ids in a ring; a tenant is in it at most once (the caller keeps a flag),
/// so it never overflows. Unlike a linked list, the ids a few turns ahead can be read to
/// prefetch their state.
#[derive(Debug, Clone)]
struct Ring {
    buf: Vec<u32>,
    head: u32,
    len: u32,
}

impl Ring {
    fn new(n: usize) -> Ring {
        Ring { buf: vec![NIL; n.max(1).next_power_of_two()], head: 0, len: 0 }
    }

    #[inline]
    fn mask(&self) -> u32 {
        self.buf.len() as u32 - 1
    }

    #[inline]
    fn push(&mut self, id: u32) {
        let i = (self.head.wrapping_add(self.len) & self.mask()) as usize;
        self.buf[i] = id;
        self.len += 1;
    }

    #[inline]
    fn front(&self) -> Option<u32> {
        (self.len > 0).then(|| self.buf[self.head as usize])
    }

    /// The id `k` places behind the front.
    #[inline]
    fn peek(&self, k: u32) -> Option<u32> {
        (k < self.len).then(|| self.buf[(self.head.wrapping_add(k) & self.mask()) as usize])
    }

    #[inline]
    fn pop(&mut self) {
        self.head = self.head.wrapping_add(1) & self.mask();
        self.len -= 1;
    }

    /// Moves the front to the back.
    #[inline]
    fn rotate(&mut self) {
        let id = self.buf[self.head as usize];
        self.pop();
        self.push(id);
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// A tenant's scheduling state, two cache lines: the first holds the two buckets, the
/// second the round-robin state and the counters, so a visit touches one aligned pair of
/// lines (which the CPU fetches together).
#[derive(Debug, Clone)]
#[repr(C, align(128))]
struct Tenant {
    guar: Bucket,
    lim: Bucket,
    deficit: i32,
    /// Its weight in the excess tier (its quantum is the scheduler's `x_quantum` times this).
    weight: u32,
    /// How long the tenant waits past its guarantee's due time (ns), so that its next turn
    /// in the guaranteed tier sends more than one small frame.
    g_wait: u32,
    /// Flows of this tenant with frames, round-robin (`NIL`: none).
    flow_head: u32,
    flow_tail: u32,
    in_g: bool,
    in_x: bool,
    in_wheel: bool,
    stats: TenantQosStats,
}

const _: () = assert!(std::mem::size_of::<Tenant>() == 128, "a tenant's state is two cache lines");

/// How many places ahead (in a ring, a burst or the wheel's due list) a tenant's state is
/// prefetched, and how many its flow's head frame.
const AHEAD_TENANT: usize = 8;
const AHEAD_FLOW: usize = 4;
/// A full-size frame on the wire: 1514 bytes of data plus the overhead.
const FULL_FRAME: u64 = 1514 + WIRE_OVERHEAD;
/// Bytes a tenant sends in one turn of the guaranteed tier (at least one frame).
const G_TURN_BYTES: u64 = 2 * FULL_FRAME;
/// The longest a tenant waits past its guarantee's due time (2.5% of a 10 ms window).
const G_WAIT_NS: u64 = 250_000;
/// Deficit round robin quantum per unit of weight, at least half a full frame (769 bytes: a
/// large frame takes at most two turns) and at most four full frames: as large as keeps a
/// round of the excess tier, with every tenant backlogged, within X_ROUND_NS.
const X_QUANTUM_MIN: u64 = FULL_FRAME.div_ceil(2);
const X_QUANTUM_MAX: u64 = 4 * FULL_FRAME;
/// The longest a round of the excess tier should take, every tenant backlogged and the
/// excess only what the guarantees leave of the link: short enough that every tenant gets
/// its share of the excess in every 10 ms.
const X_ROUND_NS: u64 = 2_000_000;
/// Prefetching pays once the tenants' state outgrows the core's own caches.
const PREFETCH_FROM_BYTES: usize = 2 << 20;

/// The egress scheduler of one uplink.
#[derive(Debug)]
pub struct Scheduler {
    link_bps: u64,
    /// 2^-FP ns per byte on the link, and the fraction carried.
    link_npb: u64,
    link_frac: u64,
    /// 2^-FP bytes per ns on the link.
    link_bpn: u64,
    /// Sums over all tenants of the guarantees (bits/s) and of the weights, and the excess
    /// tier's quantum per unit of weight they give (bytes).
    guarantees: u128,
    weights: u64,
    x_quantum: u32,
    tenants: Vec<Tenant>,
    qos: Vec<TenantQos>,
    flows: Vec<Flow>,
    /// Frames of all flows: flow `f` owns slots `f << shift ..`, a power of two of them.
    buf: Vec<Desc>,
    shift: u32,
    /// Tenants eligible for their guarantee, and what the front one sent in this turn.
    g_ring: Ring,
    g_turn: u64,
    /// Backlogged tenants within their limit, in deficit round robin.
    x_ring: Ring,
    /// Timing wheel: first tenant of each slot (`NIL`: empty), chained by `w_next` (kept
    /// apart from the tenants' state so a slot is walked without touching it).
    wheel: Vec<u32>,
    w_next: Vec<u32>,
    wheel_at: u64,
    wheel_count: u32,
    link_free_at: u64,
    backlog: u64,
    /// Frames it may hold in all.
    frames: u64,
    due: Vec<u32>,
    prefetch: bool,
    /// Room for one frame, for `dequeue`.
    one: Vec<Desc>,
}

impl Scheduler {
    /// A scheduler for a link of `link_bps` with `tenants` tenants, `flows` flows, `queue`
    /// frames of room per flow and `frames` in all (the forwarding core passes the size of
    /// its frame memory). Everything is allocated here.
    pub fn new(link_bps: u64, tenants: usize, flows: usize, queue: usize, frames: usize) -> Scheduler {
        Scheduler::with_advice(link_bps, tenants, flows, queue, frames, crate::hint::no_advice)
    }

    /// Like [`Scheduler::new`], its two large tables (tenants, frame queues) allocated with
    /// `advice` (xvsd: transparent huge pages, so they cost a handful of TLB entries).
    pub fn with_advice(
        link_bps: u64,
        tenants: usize,
        flows: usize,
        queue: usize,
        frames: usize,
        advice: crate::hint::MemAdvice,
    ) -> Scheduler {
        let cap = queue.max(1).next_power_of_two();
        let idle = Tenant {
            guar: Bucket::new(0, 0, 0, false),
            lim: Bucket::new(0, 0, 0, true),
            deficit: 0,
            weight: 1,
            g_wait: 0,
            flow_head: NIL,
            flow_tail: NIL,
            in_g: false,
            in_x: false,
            in_wheel: false,
            stats: TenantQosStats::default(),
        };
        let mut s = Scheduler {
            link_bps: 0,
            link_npb: 0,
            link_frac: 0,
            link_bpn: 0,
            guarantees: 0,
            weights: tenants as u64,
            x_quantum: X_QUANTUM_MIN as u32,
            tenants: crate::hint::advised_vec(tenants, idle, advice),
            qos: vec![TenantQos::default(); tenants],
            flows: vec![Flow::EMPTY; flows],
            buf: crate::hint::advised_vec(flows * cap, Desc::default(), advice),
            shift: cap.trailing_zeros(),
            g_ring: Ring::new(tenants),
            g_turn: 0,
            x_ring: Ring::new(tenants),
            wheel: vec![NIL; WHEEL_SLOTS],
            w_next: vec![NIL; tenants],
            wheel_at: 0,
            wheel_count: 0,
            link_free_at: 0,
            backlog: 0,
            frames: frames as u64,
            due: Vec::with_capacity(tenants),
            prefetch: tenants * std::mem::size_of::<Tenant>() + flows * cap * std::mem::size_of::<Desc>()
                > PREFETCH_FROM_BYTES,
            one: Vec::with_capacity(1),
        };
        s.set_link(link_bps);
        for t in 0..tenants {
            s.set_tenant(t as u32, TenantQos::default(), 0);
        }
        s
    }

    /// (tenants, flows) this scheduler has room for.
    pub fn capacity(&self) -> (usize, usize) {
        (self.tenants.len(), self.flows.len())
    }

    /// Takes every queued frame out, ignoring rates (when the scheduler is replaced), oldest
    /// first per flow, each with its tenant and flow; the scheduler is left empty.
    pub fn drain(&mut self, mut out: impl FnMut(Desc, u32, u32)) {
        for f in 0..self.flows.len() {
            let fl = self.flows[f];
            for k in 0..fl.len {
                out(self.buf[self.slot(f as u32, fl.head + k)], fl.tenant, f as u32);
            }
            self.flows[f] = Flow::EMPTY;
        }
        for t in &mut self.tenants {
            (t.flow_head, t.flow_tail, t.stats.backlog, t.deficit) = (NIL, NIL, 0, 0);
            (t.in_g, t.in_x, t.in_wheel) = (false, false, false);
        }
        self.g_ring.clear();
        self.g_turn = 0;
        self.x_ring.clear();
        self.wheel.fill(NIL);
        self.w_next.fill(NIL);
        self.wheel_count = 0;
        self.backlog = 0;
    }

    /// The link rate, bits/s.
    pub fn link_bps(&self) -> u64 {
        self.link_bps
    }

    /// Changes the link rate at `now`, live: the link time still owed for bytes already
    /// sent is counted again at the new rate, so a rate that falls (a core's part of a
    /// shared link) does not push the next departure out by the old bytes' time at the new
    /// rate, nor a rate that rises leave it there.
    pub fn set_link_at(&mut self, bps: u64, now: u64) {
        if self.link_free_at > now && self.link_bpn > 0 {
            let owed = ((u128::from(self.link_free_at - now) * u128::from(self.link_bpn)) >> FP) as u64;
            self.set_link(bps);
            let ns = (cost_fp(owed, self.link_npb, 0) >> FP).min(u128::from(LINK_SLACK_NS)) as u64;
            self.link_free_at = now + ns;
        } else {
            self.set_link(bps);
            self.link_free_at = self.link_free_at.min(now);
        }
    }

    /// Changes the link rate (before any frame was sent; later, [`Scheduler::set_link_at`]).
    pub fn set_link(&mut self, bps: u64) {
        self.link_bps = bps.max(1);
        self.link_npb = ns_per_byte(self.link_bps);
        self.link_bpn = ((u128::from(self.link_bps) << FP) / 8_000_000_000).min(u128::from(u64::MAX >> 8)) as u64;
        self.size_quantum();
    }

    /// Sizes the excess tier's quantum per unit of weight from the link rate, the sum of the
    /// guarantees and the sum of the weights (of every tenant, as any may be backlogged).
    fn size_quantum(&mut self) {
        let excess = u128::from(self.link_bps).saturating_sub(self.guarantees);
        let round = excess * u128::from(X_ROUND_NS) / 8_000_000_000;
        let q = (round / u128::from(self.weights.max(1))).clamp(u128::from(X_QUANTUM_MIN), u128::from(X_QUANTUM_MAX));
        self.x_quantum = q as u32;
    }

    /// Sets (or changes, live) a tenant's QoS; its queued frames and counters stay.
    pub fn set_tenant(&mut self, tenant: u32, qos: TenantQos, now: u64) {
        let Some(t) = self.tenants.get_mut(tenant as usize) else { return };
        let old = &mut self.qos[tenant as usize];
        self.guarantees = self.guarantees - u128::from(old.guarantee) + u128::from(qos.guarantee);
        // Weights are at most 1,000 (configuration).
        let weight = qos.weight.clamp(1, 1_000_000);
        self.weights = self.weights - u64::from(t.weight) + u64::from(weight);
        let limit = qos.limit.unwrap_or(0);
        t.guar = Bucket::new(qos.guarantee, guarantee_burst(qos.guarantee), now, false);
        t.lim = Bucket::new(limit, limit_burst(limit), now, true);
        t.weight = weight;
        t.g_wait = g_wait(&t.guar);
        t.deficit = 0;
        *old = qos;
        self.size_quantum();
    }

    /// Changes a tenant's weight only (with several cores its rates come from
    /// [`crate::share`]); its queue, buckets and counters stay.
    pub fn set_weight(&mut self, tenant: u32, weight: u32) {
        let Some(t) = self.tenants.get_mut(tenant as usize) else { return };
        let weight = weight.clamp(1, 1_000_000);
        self.weights = self.weights - u64::from(t.weight) + u64::from(weight);
        t.weight = weight;
        self.qos[tenant as usize].weight = weight;
        self.size_quantum();
    }

    /// Changes a tenant's guarantee and limit live, keeping what its buckets hold (this
    /// core's share of them, set by [`crate::share`] every interval); its weight, queue and
    /// counters stay. A guarantee that starts here is credited with what it gives over
    /// `late_ns`, the time the share took to follow demand. Call [`Scheduler::set_link`]
    /// after a round of changes, which sizes the excess tier's quantum again.
    pub fn set_rates(&mut self, tenant: u32, guarantee: u64, limit: Option<u64>, late_ns: u64, now: u64) {
        let Some(t) = self.tenants.get_mut(tenant as usize) else { return };
        let old = &mut self.qos[tenant as usize];
        if old.guarantee == guarantee && old.limit == limit {
            return;
        }
        self.guarantees = self.guarantees - u128::from(old.guarantee) + u128::from(guarantee);
        if t.guar.is_limited() && guarantee > 0 {
            t.guar.retune(guarantee, guarantee_burst(guarantee), now);
        } else {
            // To no share, or from none (the tenant's traffic came to this core): the bucket
            // starts empty, not full, and is credited with the time the share took to come. A
            // share that only moves is not credited: its bucket kept its tokens, and crediting
            // every rise would fill every bucket, turning the guaranteed tier into round robin.
            t.guar = Bucket::new(guarantee, guarantee_burst(guarantee), now, false);
            let bytes = (u128::from(guarantee) * u128::from(late_ns) / 8_000_000_000) as u64;
            t.guar.credit(bytes, now);
        }
        let lim = limit.unwrap_or(0);
        t.lim.retune(lim, limit_burst(lim), now);
        t.g_wait = g_wait(&t.guar);
        (old.guarantee, old.limit) = (guarantee, limit);
        self.schedule(tenant, now);
    }

    /// Zeroes a tenant's counters (its id now belongs to a new tenant); what it has queued
    /// stays counted in `backlog`.
    pub fn clear_counters(&mut self, tenant: u32) {
        if let Some(t) = self.tenants.get_mut(tenant as usize) {
            t.stats = TenantQosStats { backlog: t.stats.backlog, ..Default::default() };
        }
    }

    /// A tenant's settings and counters.
    pub fn tenant(&self, tenant: u32) -> Option<(TenantQos, TenantQosStats)> {
        let t = self.tenants.get(tenant as usize)?;
        Some((self.qos[tenant as usize], t.stats))
    }

    /// Frames queued in all.
    pub fn backlog(&self) -> u64 {
        self.backlog
    }

    #[inline]
    fn mask(&self) -> u32 {
        (1u32 << self.shift) - 1
    }

    /// Index in `buf` of place `i` (taken modulo the queue size) of flow `flow`'s queue.
    #[inline(always)]
    fn slot(&self, flow: u32, i: u32) -> usize {
        ((flow as usize) << self.shift) | (i & self.mask()) as usize
    }

    /// Queues frame `d` of `flow` (a VM port) of `tenant`; gives it back when the flow's
    /// queue is full, the scheduler holds `frames` frames, or the tenant or flow is out of
    /// range. While a flow holds frames they are accounted to the tenant it started filling
    /// for.
    #[inline]
    pub fn enqueue(&mut self, tenant: u32, flow: u32, d: Desc, now: u64) -> Result<(), Desc> {
        if self.queue(tenant, flow, std::slice::from_ref(&d), now) == 1 { Ok(()) } else { Err(d) }
    }

    /// Queues a burst: `descs[i]` for `(tenant, flow) = meta[i]`. Consecutive frames of one
    /// flow (a VM port's receive batch) are queued together, and the state of frames a few
    /// places ahead is prefetched so that cache misses overlap. Each frame `enqueue` would
    /// give back is passed to `refused` with its tenant and flow.
    pub fn enqueue_burst(
        &mut self,
        descs: &[Desc],
        meta: &[(u32, u32)],
        now: u64,
        mut refused: impl FnMut(Desc, u32, u32),
    ) {
        let n = descs.len().min(meta.len());
        let mut i = 0;
        while i < n {
            if self.prefetch {
                if let Some(&(t, f)) = meta.get(i + AHEAD_TENANT) {
                    self.prefetch_state(t, f);
                }
                if let Some(&(_, f)) = meta.get(i + AHEAD_FLOW) {
                    self.prefetch_tail(f);
                }
            }
            let (t, f) = meta[i];
            let mut j = i + 1;
            while j < n && meta[j] == (t, f) {
                j += 1;
            }
            let took = self.queue(t, f, &descs[i..j], now);
            for d in &descs[i + took..j] {
                refused(*d, t, f);
            }
            i = j;
        }
    }

    /// Queues `descs` of one flow; returns how many it took (the first ones). Frames refused
    /// for want of room count as the tenant's drops.
    #[inline]
    fn queue(&mut self, tenant: u32, flow: u32, descs: &[Desc], now: u64) -> usize {
        let (ti, fi) = (tenant as usize, flow as usize);
        if ti >= self.tenants.len() || fi >= self.flows.len() || descs.is_empty() {
            return 0;
        }
        let mask = self.mask();
        let fl = self.flows[fi];
        let owner = if fl.len > 0 { fl.tenant } else { tenant };
        let room = (mask + 1 - fl.len).min(self.frames.saturating_sub(self.backlog).min(u64::from(NIL)) as u32);
        let took = descs.len().min(room as usize);
        // one frame (`enqueue`) is one store; a run is at most two copies: up to the end of
        // the flow's ring, then from its start
        let first = ((fl.head + fl.len) & mask) as usize;
        let base = self.slot(flow, 0);
        if took == 1 {
            self.buf[base + first] = descs[0];
        } else if took > 1 {
            let wrap = (first + took).saturating_sub(mask as usize + 1);
            self.buf[base + first..base + first + took - wrap].copy_from_slice(&descs[..took - wrap]);
            self.buf[base..base + wrap].copy_from_slice(&descs[took - wrap..took]);
        }
        let t = &mut self.tenants[owner as usize];
        t.stats.drops += (descs.len() - took) as u64;
        if took == 0 {
            return 0;
        }
        self.flows[fi].len = fl.len + took as u32;
        self.backlog += took as u64;
        let was_idle = t.stats.backlog == 0;
        t.stats.backlog += took as u32;
        if fl.len == 0 {
            // the flow joins its tenant's round-robin
            self.flows[fi].tenant = owner;
            self.flows[fi].next = NIL;
            if t.flow_tail == NIL {
                t.flow_head = flow;
            } else {
                self.flows[t.flow_tail as usize].next = flow;
            }
            t.flow_tail = flow;
        }
        if was_idle {
            self.schedule(owner, now);
        }
        took
    }

    /// Prefetches a tenant's state and a flow's.
    #[inline]
    fn prefetch_state(&self, tenant: u32, flow: u32) {
        if (tenant as usize) < self.tenants.len() {
            self.prefetch_tenant(tenant);
        }
        if let Some(f) = self.flows.get(flow as usize) {
            crate::hint::prefetch(f);
        }
    }

    /// Prefetches the slot a flow's next frame goes to (its state should be cached by now).
    #[inline]
    fn prefetch_tail(&self, flow: u32) {
        if let Some(f) = self.flows.get(flow as usize) {
            crate::hint::prefetch(&self.buf[self.slot(flow, f.head + f.len)]);
        }
    }

    /// Prefetches a tenant's state.
    #[inline]
    fn prefetch_tenant(&self, tenant: u32) {
        let t = &self.tenants[tenant as usize];
        crate::hint::prefetch(&t.guar);
        crate::hint::prefetch(&t.stats);
    }

    /// Prefetches, for the tenants a few places behind the front of `ring`, in three
    /// stages: the tenant's state, then its flow's (the tenant's is cached by then), then
    /// its head frame (the flow's is cached by then).
    #[inline]
    fn prefetch_ring(&self, ring: &Ring) {
        if !self.prefetch {
            return;
        }
        if let Some(t) = ring.peek(3 * AHEAD_FLOW as u32) {
            self.prefetch_tenant(t);
        }
        if let Some(t) = ring.peek(2 * AHEAD_FLOW as u32)
            && let Some(fl) = self.flows.get(self.tenants[t as usize].flow_head as usize)
        {
            crate::hint::prefetch(fl);
        }
        if let Some(t) = ring.peek(AHEAD_FLOW as u32) {
            let f = self.tenants[t as usize].flow_head;
            if let Some(fl) = self.flows.get(f as usize) {
                crate::hint::prefetch(&self.buf[self.slot(f, fl.head)]);
            }
        }
    }

    /// Puts a backlogged tenant in the rings it is eligible for, and in the wheel if it
    /// waits for its limit or its guarantee.
    #[inline]
    fn schedule(&mut self, tenant: u32, now: u64) {
        let t = &mut self.tenants[tenant as usize];
        if t.stats.backlog == 0 {
            return;
        }
        let lim_ok = t.lim.ready(now);
        let guar = t.guar.is_limited();
        let guar_ok = guar && t.guar.ready(now);
        if lim_ok && guar_ok && !t.in_g {
            t.in_g = true;
            self.g_ring.push(tenant);
        }
        if lim_ok && !t.in_x {
            t.in_x = true;
            self.x_ring.push(tenant);
        }
        // Wake up when the limit allows again, or when the guarantee is due (plus the wait
        // that lets the next turn carry more than one small frame).
        let wake = if !lim_ok {
            t.lim.ready_at()
        } else if guar && !guar_ok {
            t.guar.ready_at() + u64::from(t.g_wait)
        } else {
            return;
        };
        if !t.in_wheel {
            t.in_wheel = true;
            self.wheel_insert(tenant, wake, now);
        }
    }

    fn wheel_insert(&mut self, tenant: u32, at: u64, now: u64) {
        if self.wheel_count == 0 {
            self.wheel_at = self.wheel_at.max(now / SLOT_NS);
        }
        let slot = at.div_ceil(SLOT_NS).clamp(self.wheel_at + 1, self.wheel_at + WHEEL_SLOTS as u64 - 1);
        let slot = &mut self.wheel[(slot as usize) % WHEEL_SLOTS];
        self.w_next[tenant as usize] = *slot;
        *slot = tenant;
        self.wheel_count += 1;
    }

    /// Moves tenants whose wait is over back into the rings. Due tenants are collected first
    /// (walking `w_next`, not their state) and rescheduled after the wheel has moved on, so
    /// each is looked at once per call, with their state prefetched a few ahead.
    fn advance(&mut self, now: u64) {
        let target = now / SLOT_NS;
        if self.wheel_count > 0 && self.wheel_at < target {
            let steps = (target - self.wheel_at).min(WHEEL_SLOTS as u64);
            self.due.clear();
            for k in 1..=steps {
                let slot = ((self.wheel_at + k) as usize) % WHEEL_SLOTS;
                let mut t = std::mem::replace(&mut self.wheel[slot], NIL);
                while t != NIL {
                    self.wheel_count -= 1;
                    if self.due.len() < self.due.capacity() {
                        self.due.push(t);
                    }
                    t = std::mem::replace(&mut self.w_next[t as usize], NIL);
                }
            }
            self.wheel_at = target;
            for i in 0..self.due.len() {
                if self.prefetch
                    && let Some(&ahead) = self.due.get(i + AHEAD_TENANT)
                {
                    self.prefetch_tenant(ahead);
                }
                let t = self.due[i];
                self.tenants[t as usize].in_wheel = false;
                self.schedule(t, now);
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
        let mut one = std::mem::take(&mut self.one);
        one.clear();
        self.serve(now, &mut one, 1);
        let d = one.pop();
        self.one = one;
        d
    }

    /// Appends to `out` up to `max` frames the link can take by `now`, in the order
    /// `dequeue` would release them one at a time. Returns how many.
    pub fn dequeue_burst(&mut self, now: u64, out: &mut Vec<Desc>, max: usize) -> usize {
        let before = out.len();
        self.serve(now, out, max);
        out.len() - before
    }

    fn serve(&mut self, now: u64, out: &mut Vec<Desc>, max: usize) {
        // The link keeps up to LINK_SLACK_NS of time it was not given (a late poll), so a
        // forwarding loop's jitter does not cost capacity; beyond that, idle time is lost.
        let start = self.link_free_at.max(now.saturating_sub(LINK_SLACK_NS));
        if self.backlog == 0 || start > now || max == 0 {
            return;
        }
        self.advance(now);
        // A frame may start while the bytes sent before it fit in the link time up to now;
        // the link's clock is moved on once, at the end.
        let fits = ((u128::from(now - start) * u128::from(self.link_bpn)) >> FP) as u64;
        let stop = out.len() + max;
        let mut sent = 0u64;
        // Guaranteed tier: eligible tenants in turn. A turn sends while the guarantee is due
        // (each frame overdraws it by at most itself), up to G_TURN_BYTES.
        while let Some(t) = self.g_ring.front() {
            if self.turn::<true>(t, now, out, stop, fits, &mut sent) == TurnEnd::Call {
                break; // the turn goes on at the next call
            }
            self.g_ring.pop();
            self.g_turn = 0;
            self.prefetch_ring(&self.g_ring);
            self.tenants[t as usize].in_g = false;
            self.schedule(t, now);
        }
        // Excess tier: deficit round robin by weight; a turn sends while the tenant's deficit
        // covers its next frame. Sending here spends no guarantee, so it changes no
        // tenant's place in the guaranteed tier.
        if self.g_ring.len == 0 {
            while let Some(t) = self.x_ring.front() {
                match self.turn::<false>(t, now, out, stop, fits, &mut sent) {
                    TurnEnd::Call => break, // the turn goes on at the next call
                    TurnEnd::Idle => {
                        // empty, or out of limit tokens (then it waits in the wheel)
                        let tn = &mut self.tenants[t as usize];
                        tn.in_x = false;
                        tn.deficit = 0;
                        self.x_ring.pop();
                        self.prefetch_ring(&self.x_ring);
                        self.schedule(t, now);
                    }
                    TurnEnd::Over => {
                        // next round it gets another quantum
                        let tn = &mut self.tenants[t as usize];
                        tn.deficit = tn.deficit.saturating_add_unsigned(tn.weight.saturating_mul(self.x_quantum));
                        self.x_ring.rotate();
                        self.prefetch_ring(&self.x_ring);
                    }
                }
            }
        }
        if sent > 0 {
            let fine = cost_fp(sent, self.link_npb, self.link_frac);
            self.link_free_at = start + (fine >> FP) as u64;
            self.link_frac = fine as u64 & FRAC_MASK;
        }
    }

    /// Sends frames of tenant `t` in its turn in the guaranteed tier (`GUARANTEED`) or the
    /// excess tier while the tier lets it, and says why the turn stopped. Before each frame,
    /// in this order: the call's room and link time (else `Call`), the tenant's queue (else
    /// `Idle`), its limit (else `Idle`, or `Over` in the guaranteed tier, where the turn's
    /// bytes and the guarantee are checked too), and in the excess tier its deficit (else
    /// `Over`). The per-frame loop reads only the frame's length and moves the tenant's
    /// buckets (kept in registers) on; a run of frames of one flow is then taken out and
    /// accounted at once. The tenant's flows take turns frame by frame.
    #[inline(always)]
    fn turn<const GUARANTEED: bool>(
        &mut self,
        t: u32,
        now: u64,
        out: &mut Vec<Desc>,
        stop: usize,
        fits: u64,
        sent: &mut u64,
    ) -> TurnEnd {
        let tn = &self.tenants[t as usize];
        let (mut guar, mut lim, mut deficit) = (tn.guar, tn.lim, i64::from(tn.deficit));
        let (mut g_turn, mut turn_bytes) = (self.g_turn, 0);
        let end = loop {
            let tn = &self.tenants[t as usize];
            let f = tn.flow_head;
            let fl = self.flows.get(f as usize).copied().unwrap_or(Flow::EMPTY);
            // With several flows queued, the run is one frame, then the next flow's turn.
            let run = if tn.flow_head == tn.flow_tail { fl.len } else { fl.len.min(1) };
            let (mut n, mut bytes) = (0u32, 0u64);
            let end = loop {
                if out.len() + n as usize >= stop || *sent > fits {
                    break Some(TurnEnd::Call);
                }
                if n == run {
                    break (run == 0).then_some(TurnEnd::Idle);
                }
                if GUARANTEED {
                    if g_turn >= G_TURN_BYTES || !guar.ready(now) || !lim.ready(now) {
                        break Some(TurnEnd::Over);
                    }
                } else if !lim.ready(now) {
                    break Some(TurnEnd::Idle);
                }
                let len = u64::from(self.buf[self.slot(f, fl.head + n)].len) + WIRE_OVERHEAD;
                if GUARANTEED {
                    guar.take(len, now);
                    g_turn += len;
                } else if deficit < len as i64 {
                    break Some(TurnEnd::Over);
                } else {
                    deficit -= len as i64;
                }
                lim.take(len, now);
                *sent += len;
                bytes += len;
                n += 1;
            };
            if n > 0 {
                self.take_run(t, f, n, bytes, out);
                turn_bytes += bytes;
            }
            if let Some(end) = end {
                break end;
            }
        };
        let tn = &mut self.tenants[t as usize];
        (tn.guar, tn.lim) = (guar, lim);
        if GUARANTEED {
            self.g_turn = g_turn;
            tn.stats.guaranteed_bytes += turn_bytes;
        } else {
            tn.deficit = deficit as i32;
        }
        end
    }

    /// Takes the `n` head frames (`bytes` on the wire) of flow `f` of tenant `t` out and
    /// appends them to `out`; with other flows of the tenant queued (then `n` is 1), the flow
    /// goes to the back of the tenant's round-robin if it has more.
    #[inline(always)]
    fn take_run(&mut self, t: u32, f: u32, n: u32, bytes: u64, out: &mut Vec<Desc>) {
        let mask = self.mask();
        let fl = self.flows[f as usize];
        let first = (fl.head & mask) as usize;
        let wrap = (first + n as usize).saturating_sub(mask as usize + 1);
        let base = self.slot(f, 0);
        if n == 1 {
            out.push(self.buf[base + first]);
        } else {
            out.extend_from_slice(&self.buf[base + first..base + first + n as usize - wrap]);
            out.extend_from_slice(&self.buf[base..base + wrap]);
        }
        let len = fl.len - n;
        self.flows[f as usize].head = (fl.head + n) & mask;
        self.flows[f as usize].len = len;
        let tn = &mut self.tenants[t as usize];
        if tn.flow_head != tn.flow_tail {
            tn.flow_head = fl.next;
            if len > 0 {
                self.flows[f as usize].next = NIL;
                self.flows[tn.flow_tail as usize].next = f;
                tn.flow_tail = f;
            }
        } else if len == 0 {
            tn.flow_head = NIL;
            tn.flow_tail = NIL;
        }
        tn.stats.backlog -= n;
        tn.stats.packets += u64::from(n);
        tn.stats.bytes += bytes;
        self.backlog -= u64::from(n);
    }
}

/// A guarantee bucket holds up to 5 ms at its rate (a tenant held back, by others or by a
/// late poll, catches up that much at priority); a limit bucket only 50 µs, so a limit holds
/// within 1% over 10 ms; both at least two full frames.
fn guarantee_burst(rate: u64) -> u64 {
    (rate / 8 / 200).max(2 * FULL_FRAME)
}

fn limit_burst(rate: u64) -> u64 {
    (rate / 8 / 20_000).max(2 * FULL_FRAME)
}

/// How long a tenant waits past its guarantee's due time.
fn g_wait(guar: &Bucket) -> u32 {
    ((cost_fp(G_TURN_BYTES, guar.ns_per_byte(), 0) >> FP) as u64).min(G_WAIT_NS) as u32
}

/// Why a tenant's turn stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnEnd {
    /// The call has released all it may (`max` frames, or the link time up to now); the turn
    /// goes on at the next call.
    Call,
    /// Nothing more to send now: the tenant's queue is empty, or (excess tier) its limit is
    /// spent.
    Idle,
    /// The tier's share for this turn is used up.
    Over,
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1_000_000_000;

    fn frame(id: u32, len: u32) -> Desc {
        Desc::new(id, len as usize)
    }

    #[test]
    fn paces_to_the_link_rate() {
        let mut s = Scheduler::new(G, 1, 1, 64, 64);
        for i in 0..10 {
            s.enqueue(0, 0, frame(i, 1226), 0).unwrap(); // 1250 wire bytes = 10 µs at 1G
        }
        assert!(s.dequeue(0).is_some());
        assert!(s.dequeue(5_000).is_none(), "link busy");
        assert_eq!(s.next_send_at(), 10_000);
        assert!(s.dequeue(10_000).is_some());
    }

    #[test]
    fn a_live_link_change_counts_the_owed_time_again() {
        let mut s = Scheduler::new(G, 1, 1, 64, 64);
        for i in 0..10 {
            s.enqueue(0, 0, frame(i, 1226), 0).unwrap(); // 1250 wire bytes = 10 µs at 1G
        }
        assert!(s.dequeue(0).is_some());
        // the rate halves 5 µs in: the 625 bytes still owed take 10 µs, not 5
        s.set_link_at(G / 2, 5_000);
        assert_eq!(s.next_send_at(), 15_000);
        // a core's part of a shared link fell to 1 bit/s, then came back: the frame sent at
        // 1 bit/s owes at most the slack, not hours
        assert!(s.dequeue(15_000).is_some());
        s.set_link_at(1, 15_000);
        assert!(s.dequeue(15_000).is_none());
        s.set_link_at(G, 16_000);
        assert!(s.next_send_at() <= 16_000 + LINK_SLACK_NS);
        assert!(s.dequeue(16_000 + LINK_SLACK_NS).is_some());
    }

    #[test]
    fn full_queue_refuses_and_counts() {
        let mut s = Scheduler::new(G, 1, 1, 2, 2);
        assert!(s.enqueue(0, 0, frame(1, 60), 0).is_ok());
        assert!(s.enqueue(0, 0, frame(2, 60), 0).is_ok());
        assert_eq!(s.enqueue(0, 0, frame(3, 60), 0), Err(frame(3, 60)));
        assert_eq!(s.tenant(0).unwrap().1.drops, 1);
    }

    #[test]
    fn total_room_refuses_and_counts() {
        // room for 3 frames in all, across two flows of 4
        let mut s = Scheduler::new(G, 2, 2, 4, 3);
        let mut refused = Vec::new();
        let descs: Vec<Desc> = (1..=4).map(|i| frame(i, 60)).collect();
        s.enqueue_burst(&descs[..2], &[(0, 0); 2], 0, |d, t, f| refused.push((d.id, t, f)));
        s.enqueue_burst(&descs[2..], &[(1, 1); 2], 0, |d, t, f| refused.push((d.id, t, f)));
        assert_eq!(refused, vec![(4, 1, 1)]);
        assert_eq!((s.backlog(), s.tenant(1).unwrap().1.drops), (3, 1));
        // once a frame has left, there is room again
        let mut out = Vec::new();
        s.dequeue_burst(1_000, &mut out, 1);
        assert_eq!(out.len(), 1);
        assert!(s.enqueue(1, 1, frame(5, 60), 1_000).is_ok());
    }

    #[test]
    fn excess_quantum_keeps_a_round_within_its_time() {
        // 1,000 tenants, weights 1..4 (2,500 units), half of 100 Gbit/s guaranteed: a round
        // of 2 ms of the other half is 12.5 MB, 5,000 bytes per unit of weight.
        let mut s = Scheduler::new(100 * G, 1_000, 1_000, 4, 4);
        for t in 0..1_000 {
            s.set_tenant(t, TenantQos { guarantee: 50 * G / 1_000, limit: None, weight: 1 + t % 4 }, 0);
        }
        assert_eq!(s.x_quantum, 5_000);
        // more guaranteed, less excess: a smaller quantum, never below half a full frame
        s.set_tenant(0, TenantQos { guarantee: 40 * G, limit: None, weight: 1 }, 0);
        assert_eq!(s.x_quantum, ((10 * G + 50 * G / 1_000) / 4_000 / 2_500) as u32);
        s.set_tenant(0, TenantQos { guarantee: 50 * G, limit: None, weight: 1 }, 0);
        assert_eq!(s.x_quantum as u64, FULL_FRAME.div_ceil(2));
        // few tenants: at most four full frames
        assert_eq!(Scheduler::new(100 * G, 10, 10, 4, 4).x_quantum as u64, 4 * FULL_FRAME);
    }

    #[test]
    fn limit_caps_a_lone_tenant() {
        let mut s = Scheduler::new(10 * G, 1, 1, 4096, 4096);
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

    /// Two schedulers fed the same frames: one released a burst at a time, the other a frame
    /// at a time at the same instants, must agree frame for frame.
    #[test]
    fn bursts_release_what_single_dequeues_release() {
        let qos = [
            TenantQos { guarantee: 300_000_000, limit: None, weight: 1 },
            TenantQos { guarantee: 0, limit: Some(200_000_000), weight: 3 },
            TenantQos { guarantee: 100_000_000, limit: Some(400_000_000), weight: 2 },
        ];
        let mk = || {
            let mut s = Scheduler::new(G, 3, 6, 64, 6 * 64);
            for (t, q) in qos.iter().enumerate() {
                s.set_tenant(t as u32, *q, 0);
            }
            s
        };
        let (mut a, mut b) = (mk(), mk());
        let (mut id, mut now) = (0u32, 0u64);
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        for round in 0..2_000u32 {
            // a receive batch from one VM port (flows 0..6, tenant = flow / 2)
            let flow = round % 6;
            let descs: Vec<Desc> = (0..1 + round % 40)
                .map(|k| {
                    id += 1;
                    frame(id, [60, 590, 1514][((round + k) % 3) as usize])
                })
                .collect();
            let meta = vec![(flow / 2, flow); descs.len()];
            let mut refused_a = Vec::new();
            a.enqueue_burst(&descs, &meta, now, |d, _, _| refused_a.push(d));
            let refused_b: Vec<Desc> = descs.iter().filter_map(|d| b.enqueue(flow / 2, flow, *d, now).err()).collect();
            assert_eq!(refused_a, refused_b);
            now += 7_000;
            a.dequeue_burst(now, &mut got_a, 16);
            for _ in 0..16 {
                match b.dequeue(now) {
                    Some(d) => got_b.push(d),
                    None => break,
                }
            }
            assert_eq!(got_a, got_b, "round {round}");
        }
        assert!(got_a.len() > 2_000, "{} frames released", got_a.len());
        for t in 0..3 {
            assert_eq!(a.tenant(t), b.tenant(t));
        }
    }

    #[test]
    fn a_flow_keeps_its_tenant_while_it_holds_frames() {
        let mut s = Scheduler::new(G, 2, 1, 8, 8);
        s.enqueue(0, 0, frame(1, 100), 0).unwrap();
        // the port moved to tenant 1 while a frame of tenant 0 waits: accounted to tenant 0
        s.enqueue(1, 0, frame(2, 100), 0).unwrap();
        assert_eq!((s.tenant(0).unwrap().1.backlog, s.tenant(1).unwrap().1.backlog), (2, 0));
        let mut now = 0;
        let mut out = Vec::new();
        while out.len() < 2 && now < 1_000_000 {
            s.dequeue_burst(now, &mut out, 8);
            now += 1_000;
        }
        assert_eq!(out, vec![frame(1, 100), frame(2, 100)]);
        assert_eq!(s.tenant(0).unwrap().1.packets, 2);
        // empty again: the next frame is the new tenant's
        s.enqueue(1, 0, frame(3, 100), now).unwrap();
        assert_eq!(s.tenant(1).unwrap().1.backlog, 1);
    }
}
