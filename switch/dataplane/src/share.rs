//! Bandwidth guarantees when several forwarding cores send on one uplink: each core keeps
//! its own [`Scheduler`] (no lock, no shared state on the per-frame path), and every
//! interval (100 µs) a [`Balancer`] gives each core its share of the link and of every
//! tenant's rates, following each core's measured demand (EyeQ's feedback loop, per-core
//! schedulers as in Carousel).
//!
//! * Each core meters what it is offered per tenant ([`CoreMeter::offer`]) and, every
//!   interval, publishes per active tenant the bytes that arrived and its backlog
//!   ([`CoreMeter::sample`]).
//! * The balancer sums a tenant's demand over the cores and computes the fluid allocation
//!   the one-core scheduler converges to: first each tenant's guarantee (or its demand, if
//!   less), then the rest of the link by weight (weighted water-filling), each capped by
//!   its limit and its demand. A tenant with a standing backlog on any core wants more
//!   than it gets: its demand is unbounded.
//! * A tenant's allocation is split over the cores by where its bytes arrive and wait; it
//!   becomes that core's guarantee for the tenant (so the core's guaranteed tier carries
//!   exactly the allocation), and its limit is split the same way. A core's link rate is
//!   the sum of its tenants' allocations plus an even part of what nobody wants, so the
//!   cores' rates add up to the link.
//! * Locally each core stays work-conserving: what a tenant leaves unused goes to the
//!   others on that core at once (excess tier, by weight); across cores it moves at the
//!   next interval. A share that rose is credited with what it would have given since the
//!   last interval, so following demand late costs a tenant nothing.
//!
//! Pure: time is passed in, no I/O; the balancer's scratch is sized at creation.
//!
//! May depend on: qos.

use crate::qos::{Scheduler, TenantQos, WIRE_OVERHEAD};

/// How often the shares follow demand (ns).
pub const INTERVAL_NS: u64 = 100_000;
/// A core where a tenant had no demand gets this fraction of its limit until the next
/// interval, so a limit holds when the tenant's traffic moves to a new core.
const LIMIT_FLOOR_DIV: u64 = 64;

/// What a core where `qos`'s tenant has no demand runs it with: no guarantee, the floor of
/// its limit, its weight.
pub fn absent(qos: TenantQos) -> TenantQos {
    TenantQos { guarantee: 0, limit: qos.limit.map(|l| (l / LIMIT_FLOOR_DIV).max(1)), weight: qos.weight }
}

/// One tenant's demand on one core since the last sample: wire bytes that arrived (queued
/// or refused), and wire bytes waiting now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// Tenant id.
    pub tenant: u32,
    /// Wire bytes offered to the scheduler since the last sample.
    pub arrived: u64,
    /// Wire bytes queued now.
    pub backlog: u64,
    /// Frames were queued at this sample and the one before: it wants more than it gets.
    pub saturated: bool,
}

/// A core's settings from the balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreShare {
    /// The core's part of the link, bits/s.
    pub link_bps: u64,
    /// Tenants whose rates on this core changed: (tenant, guarantee bits/s, limit).
    pub rows: Vec<(u32, u64, Option<u64>)>,
    /// Time since the previous interval (ns), for the credit of raised shares.
    pub late_ns: u64,
}

/// What one core offers its scheduler, per tenant, and publishes every interval.
#[derive(Debug, Clone)]
pub struct CoreMeter {
    offered: Vec<u64>,
    refused: Vec<u64>,
    sampled: Vec<u64>,
    /// Tenants offered something since they were last idle at a sample.
    active: Vec<u32>,
    is_active: Vec<bool>,
    queued: Vec<bool>,
    /// What the last sample found.
    pub demand: Vec<Demand>,
}

impl CoreMeter {
    /// A meter for `tenants` tenants.
    pub fn new(tenants: usize) -> CoreMeter {
        CoreMeter {
            offered: vec![0; tenants],
            refused: vec![0; tenants],
            sampled: vec![0; tenants],
            active: Vec::with_capacity(tenants),
            is_active: vec![false; tenants],
            queued: vec![false; tenants],
            demand: Vec::with_capacity(tenants),
        }
    }

    /// Counts a frame of `len` bytes offered to the scheduler for `tenant`.
    #[inline]
    pub fn offer(&mut self, tenant: u32, len: u32) {
        let t = tenant as usize;
        if let Some(o) = self.offered.get_mut(t) {
            *o += u64::from(len) + WIRE_OVERHEAD;
            if !self.is_active[t] {
                self.is_active[t] = true;
                self.active.push(tenant);
            }
        }
    }

    /// Counts a frame the scheduler refused (it was offered first).
    #[inline]
    pub fn refuse(&mut self, tenant: u32, len: u32) {
        if let Some(r) = self.refused.get_mut(tenant as usize) {
            *r += u64::from(len) + WIRE_OVERHEAD;
        }
    }

    /// Fills [`CoreMeter::demand`] with every tenant that was offered bytes since the last
    /// sample or still has some queued in `s`; tenants idle since are forgotten.
    pub fn sample(&mut self, s: &Scheduler) {
        self.demand.clear();
        let mut i = 0;
        while i < self.active.len() {
            let t = self.active[i];
            let ti = t as usize;
            let arrived = self.offered[ti] - self.sampled[ti];
            self.sampled[ti] = self.offered[ti];
            let sent = s.tenant(t).map_or(0, |(_, st)| st.bytes);
            let backlog = if s.tenant(t).is_some_and(|(_, st)| st.backlog > 0) {
                self.offered[ti].saturating_sub(self.refused[ti]).saturating_sub(sent).max(1)
            } else {
                // nothing queued: what was offered and not refused was sent (the scheduler's
                // counters may have been cleared since), so the meter starts level again
                self.refused[ti] = 0;
                self.offered[ti] = sent;
                self.sampled[ti] = sent;
                0
            };
            let saturated = backlog > 0 && self.queued[ti];
            self.queued[ti] = backlog > 0;
            if arrived == 0 && backlog == 0 {
                self.is_active[ti] = false;
                self.active.swap_remove(i);
                continue;
            }
            self.demand.push(Demand { tenant: t, arrived, backlog, saturated });
            i += 1;
        }
    }

    /// Applies the balancer's settings for this core to its scheduler.
    pub fn apply(s: &mut Scheduler, share: &CoreShare, now: u64) {
        for &(t, g, l) in &share.rows {
            s.set_rates(t, g, l, share.late_ns, now);
        }
        if s.link_bps() != share.link_bps.max(1) || !share.rows.is_empty() {
            s.set_link_at(share.link_bps, now);
        }
    }
}

/// A tenant's demand summed over the cores.
#[derive(Debug, Clone, Copy, Default)]
struct Sum {
    arrived: u64,
    mass: u64,
    saturated: bool,
    /// Its allocation, bits/s.
    alloc: u64,
    seen: bool,
}

/// Computes every core's share of the link and of each tenant's rates from their demand.
#[derive(Debug, Clone)]
pub struct Balancer {
    link_bps: u64,
    qos: Vec<TenantQos>,
    sums: Vec<Sum>,
    active: Vec<u32>,
    order: Vec<(u128, u32)>,
    /// What each core was last given per tenant: (tenant, guarantee, limit).
    given: Vec<Vec<(u32, u64, Option<u64>)>>,
    /// Per core, the place of each tenant in `given` (u32::MAX: none).
    place: Vec<Vec<u32>>,
    next: Vec<(u32, u64, Option<u64>)>,
    in_next: Vec<bool>,
    /// Tenants whose settings changed since the last interval: every core hears of them.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    last: u64,
}

impl Balancer {
    /// A balancer for `cores` cores on a link of `link_bps` with room for `tenants`.
    pub fn new(link_bps: u64, tenants: usize, cores: usize) -> Balancer {
        Balancer {
            link_bps: link_bps.max(1),
            qos: vec![TenantQos::default(); tenants],
            sums: vec![Sum::default(); tenants],
            active: Vec::with_capacity(tenants),
            order: Vec::with_capacity(tenants),
            given: vec![Vec::with_capacity(tenants); cores],
            place: vec![vec![u32::MAX; tenants]; cores],
            next: Vec::with_capacity(tenants),
            in_next: vec![false; tenants],
            dirty: Vec::with_capacity(tenants),
            is_dirty: vec![false; tenants],
            last: 0,
        }
    }

    /// Sets a tenant's QoS (or changes it, live); it takes effect at the next interval, when
    /// every core is told its part anew (where the tenant has no demand: [`absent`]).
    pub fn set_tenant(&mut self, tenant: u32, qos: TenantQos) {
        let t = tenant as usize;
        if let Some(q) = self.qos.get_mut(t)
            && *q != qos
        {
            *q = qos;
            if !self.is_dirty[t] {
                self.is_dirty[t] = true;
                self.dirty.push(tenant);
            }
        }
    }

    /// Room for this many tenants.
    pub fn capacity(&self) -> usize {
        self.qos.len()
    }

    /// Forgets what core `c` was given: its scheduler started over (every tenant as
    /// [`absent`]), so the next interval gives it every row anew.
    pub fn forget_core(&mut self, c: usize) {
        if let (Some(given), Some(place)) = (self.given.get_mut(c), self.place.get_mut(c)) {
            for &(t, _, _) in given.iter() {
                place[t as usize] = u32::MAX;
            }
            given.clear();
        }
    }

    /// Changes the link rate.
    pub fn set_link(&mut self, bps: u64) {
        self.link_bps = bps.max(1);
    }

    /// The link rate.
    pub fn link_bps(&self) -> u64 {
        self.link_bps
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.given.len()
    }

    /// From each core's demand (`demand[c]`, what its meter sampled) computes each core's
    /// settings into `out[c]` (only the tenants whose rates there changed are listed).
    pub fn rebalance<D: AsRef<[Demand]>>(&mut self, demand: &[D], now: u64, out: &mut [CoreShare]) {
        let late = now.saturating_sub(self.last).clamp(1, 10 * INTERVAL_NS);
        self.last = now;
        let link = self.link_bps;
        // 1. a tenant's demand over the cores
        for rows in demand {
            for d in rows.as_ref() {
                let Some(s) = self.sums.get_mut(d.tenant as usize) else { continue };
                if !s.seen {
                    *s = Sum { seen: true, ..Sum::default() };
                    self.active.push(d.tenant);
                }
                s.arrived += d.arrived;
                s.mass += d.arrived + d.backlog;
                s.saturated |= d.saturated;
            }
        }
        // 2. the fluid allocation: guarantees first, then the rest by weight
        let mut left = link;
        self.order.clear();
        let mut weights = 0u64;
        for &t in &self.active {
            let q = self.qos[t as usize];
            let s = &mut self.sums[t as usize];
            let want =
                if s.saturated { u64::MAX } else { (u128::from(s.arrived) * 8_000_000_000 / u128::from(late)) as u64 };
            let cap = want.min(q.limit.unwrap_or(link)).min(link);
            s.alloc = q.guarantee.min(cap).min(left);
            left -= s.alloc;
            if cap > s.alloc {
                let w = u64::from(q.weight.max(1));
                self.order.push(((u128::from(cap - s.alloc) << 20) / u128::from(w), t));
                weights += w;
            }
        }
        self.order.sort_unstable();
        for &(key, t) in &self.order {
            let q = self.qos[t as usize];
            let w = u64::from(q.weight.max(1));
            let s = &mut self.sums[t as usize];
            // capped below the level the rest would get: it takes its cap
            if key * u128::from(weights) <= u128::from(left) << 20 {
                let x = ((key * u128::from(w)) >> 20) as u64;
                let x = x.min(left);
                s.alloc += x;
                left -= x;
            } else {
                let x = (u128::from(left) * u128::from(w) / u128::from(weights)) as u64;
                s.alloc += x;
                left -= x;
            }
            weights -= w;
        }
        // 3. each core's part: a tenant's allocation and limit split by where its bytes are
        let cores = out.len().min(self.given.len()).min(demand.len());
        let spare = left / cores.max(1) as u64;
        for c in 0..cores {
            let mut link_c = spare;
            self.next.clear();
            for d in demand[c].as_ref() {
                let ti = d.tenant as usize;
                let Some(s) = self.sums.get(ti) else { continue };
                let m = d.arrived + d.backlog;
                if m == 0 || s.mass == 0 {
                    continue;
                }
                let g = (u128::from(s.alloc) * u128::from(m) / u128::from(s.mass)) as u64;
                let l = self.qos[ti].limit.map(|l| {
                    let part = (u128::from(l) * u128::from(m) / u128::from(s.mass)) as u64;
                    part.max(l / LIMIT_FLOOR_DIV).max(1)
                });
                link_c += g;
                self.next.push((d.tenant, g, l));
            }
            self.settle(c, &mut out[c], late);
            out[c].link_bps = link_c.max(1);
        }
        for &t in &self.active {
            self.sums[t as usize].seen = false;
        }
        self.active.clear();
        for &t in &self.dirty {
            self.is_dirty[t as usize] = false;
        }
        self.dirty.clear();
    }

    /// Lists in `out` what changed on core `c` from what it was given to `self.next`:
    /// changed and new rows, and tenants no longer there (no guarantee, the floor of their
    /// limit).
    fn settle(&mut self, c: usize, out: &mut CoreShare, late: u64) {
        out.rows.clear();
        out.late_ns = late;
        let (given, place) = (&mut self.given[c], &mut self.place[c]);
        for &(t, _, _) in &self.next {
            self.in_next[t as usize] = true;
        }
        for &(t, g, l) in &self.next {
            let p = place[t as usize];
            if p == u32::MAX {
                place[t as usize] = given.len() as u32;
                given.push((t, g, l));
                out.rows.push((t, g, l));
            } else if given[p as usize] != (t, g, l) || self.is_dirty[t as usize] {
                given[p as usize] = (t, g, l);
                out.rows.push((t, g, l));
            }
        }
        // tenants whose settings changed, without demand here: their new floor
        for &t in &self.dirty {
            if !self.in_next[t as usize] && place[t as usize] == u32::MAX {
                let a = absent(self.qos[t as usize]);
                out.rows.push((t, a.guarantee, a.limit));
            }
        }
        // tenants not in `next`: gone from this core
        let mut i = 0;
        while i < given.len() {
            let (t, _, _) = given[i];
            if self.in_next[t as usize] {
                i += 1;
                continue;
            }
            let l = self.qos[t as usize].limit.map(|l| (l / LIMIT_FLOOR_DIV).max(1));
            out.rows.push((t, 0, l));
            place[t as usize] = u32::MAX;
            given.swap_remove(i);
            if let Some(&(moved, _, _)) = given.get(i) {
                place[moved as usize] = i as u32;
            }
        }
        for &(t, _, _) in &self.next {
            self.in_next[t as usize] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(tenant: u32, bytes: u64) -> Demand {
        Demand { tenant, arrived: bytes, backlog: 0, saturated: false }
    }

    #[test]
    fn changed_settings_and_a_restarted_core_are_told_anew() {
        let q = TenantQos { guarantee: 40_000_000, limit: Some(64_000_000), weight: 1 };
        let mut b = Balancer::new(100_000_000, 4, 2);
        b.set_tenant(0, q);
        b.set_tenant(1, q);
        let mut out = vec![CoreShare::default(); 2];
        // tenant 0 on core 0, tenant 1 on core 1: 1,250 bytes per 100 µs = 100 Mbit/s each
        let d = [vec![demand(0, 1_250)], vec![demand(1, 1_250)]];
        b.rebalance(&d, INTERVAL_NS, &mut out);
        assert_eq!(out[0].rows.len(), 2, "its tenant, and the other's floor: {:?}", out[0].rows);
        b.rebalance(&d, 2 * INTERVAL_NS, &mut out);
        assert!(out[0].rows.is_empty() && out[1].rows.is_empty(), "nothing changed, nothing told");
        // a new limit: every core hears of tenant 0, the one without its traffic its new floor
        b.set_tenant(0, TenantQos { limit: Some(128_000_000), ..q });
        b.rebalance(&d, 3 * INTERVAL_NS, &mut out);
        assert!(out[0].rows.iter().any(|r| r.0 == 0 && r.2 == Some(128_000_000)), "{:?}", out[0].rows);
        assert_eq!(out[1].rows, vec![(0, 0, Some(2_000_000))]);
        b.rebalance(&d, 4 * INTERVAL_NS, &mut out);
        assert!(out[0].rows.is_empty() && out[1].rows.is_empty());
        // core 1 started over: it is given its rows again
        b.forget_core(1);
        b.rebalance(&d, 5 * INTERVAL_NS, &mut out);
        assert!(out[0].rows.is_empty());
        assert_eq!(out[1].rows.len(), 1, "{:?}", out[1].rows);
        assert_eq!(out[1].rows[0].0, 1);
        assert_eq!(absent(q), TenantQos { guarantee: 0, limit: Some(1_000_000), weight: 1 });
    }
}
