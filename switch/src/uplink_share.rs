//! Where the forwarding cores meet to share one shaped uplink (`uplink.rate` with several
//! cores): every interval ([`INTERVAL_NS`], 100 µs) each core posts its tenants' demand here,
//! and whichever core finds the interval due runs the [`Balancer`] and posts each core its
//! part of the link and of every tenant's rates, which the core applies at its next poll.
//!
//! Nothing here is on the per-frame path. A core never waits: it posts and rebalances only
//! through `try_lock` (a busy lock means another core is at it; the next interval comes
//! 100 µs later), and it picks up its part through an atomic sequence number. A core about
//! to sleep on its sockets posts no demand (it sleeps only with an empty scheduler), so its
//! tenants' shares move to the cores that have their traffic; a core that keeps polling but
//! gets little CPU (a loaded machine) keeps its last demand. Demand older than [`STALE_NS`]
//! counts as none all the same.
//!
//! May depend on: share (the balancer), tables, types.

use crate::qos::TenantQos;
use crate::share::{Balancer, CoreShare, Demand, INTERVAL_NS};
use crate::tables::Tables;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Demand posted longer ago than this is taken as none (a core that did not run for so long).
pub const STALE_NS: u64 = 50_000_000;

/// A rebalance takes at most 1/MAX_DUTY of the time: with more tenants active than an
/// interval can follow, the interval grows.
const MAX_DUTY: u64 = 10;

/// The shared uplink of `cores` forwarding cores.
pub struct UplinkShare {
    slots: Vec<Slot>,
    balancer: Mutex<Work>,
    /// When the next rebalance is due (ns, the cores' common clock).
    next_at: AtomicU64,
}

/// One core's post box.
struct Slot {
    /// (when it was sampled, each tenant's demand).
    demand: Mutex<(u64, Vec<Demand>)>,
    /// Its part (with whether the core has taken it), and a sequence number bumped at every
    /// new part.
    share: Mutex<(CoreShare, bool)>,
    seq: AtomicU64,
    /// Its scheduler started over: the balancer gives it every row anew.
    rebuilt: std::sync::atomic::AtomicBool,
}

/// The balancer and its scratch (copies of the posted demand, the parts it computes).
struct Work {
    balancer: Balancer,
    demand: Vec<Vec<Demand>>,
    out: Vec<CoreShare>,
}

impl UplinkShare {
    /// A shared uplink for `cores` cores under `tables` (its rate and tenants).
    pub fn new(cores: usize, tables: &Tables) -> UplinkShare {
        let tenants = tables.tenants.len().max(16) * 2;
        let mut balancer = Balancer::new(tables.underlay.rate.unwrap_or(1), tenants, cores);
        set_tenants(&mut balancer, tables);
        UplinkShare {
            slots: (0..cores)
                .map(|_| Slot {
                    demand: Mutex::new((0, Vec::with_capacity(tenants))),
                    share: Mutex::new((CoreShare { rows: Vec::with_capacity(tenants), ..CoreShare::default() }, false)),
                    seq: AtomicU64::new(0),
                    rebuilt: std::sync::atomic::AtomicBool::new(false),
                })
                .collect(),
            balancer: Mutex::new(Work {
                balancer,
                demand: vec![Vec::with_capacity(tenants); cores],
                out: vec![CoreShare { rows: Vec::with_capacity(tenants), ..CoreShare::default() }; cores],
            }),
            next_at: AtomicU64::new(0),
        }
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.slots.len()
    }

    /// New tables: the link rate and every tenant's settings (called by each core as it
    /// switches; the balancer notices what changed once). Blocks on the balancer's lock,
    /// which is held for one rebalance at most: a table change is rare.
    pub fn set_tables(&self, tables: &Tables) {
        let mut w = self.balancer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tables.tenants.len() > w.balancer.capacity() {
            // more tenants than it has room for: a new balancer, which gives every row anew
            let cores = self.slots.len();
            let tenants = tables.tenants.len() * 2;
            w.balancer = Balancer::new(tables.underlay.rate.unwrap_or(1), tenants, cores);
        }
        set_tenants(&mut w.balancer, tables);
    }

    /// Core `core`'s scheduler started over (its rows are all [`crate::share::absent`]).
    pub fn rebuilt(&self, core: usize) {
        if let Some(s) = self.slots.get(core) {
            s.rebuilt.store(true, Ordering::Relaxed);
        }
    }

    /// Posts core `core`'s demand sampled at `now`; skipped if the balancer is reading it.
    pub fn post(&self, core: usize, demand: &[Demand], now: u64) {
        let Some(slot) = self.slots.get(core) else { return };
        if let Ok(mut d) = slot.demand.try_lock() {
            d.0 = now;
            d.1.clear();
            d.1.extend_from_slice(demand);
        }
    }

    /// Runs the balancer if the interval is due at `now` and no other core is at it.
    pub fn rebalance_if_due(&self, now: u64) {
        if now < self.next_at.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut w) = self.balancer.try_lock() else { return };
        if now < self.next_at.load(Ordering::Relaxed) {
            return;
        }
        let started = std::time::Instant::now();
        self.next_at.store(now + INTERVAL_NS, Ordering::Relaxed);
        let Work { balancer, demand, out } = &mut *w;
        for (c, slot) in self.slots.iter().enumerate() {
            if slot.rebuilt.swap(false, Ordering::Relaxed) {
                balancer.forget_core(c);
            }
            let d = slot.demand.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            demand[c].clear();
            if now.saturating_sub(d.0) <= STALE_NS {
                demand[c].extend_from_slice(&d.1);
            }
        }
        balancer.rebalance(demand, now, out);
        for (slot, part) in self.slots.iter().zip(out.iter()) {
            let mut g = slot.share.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (s, unread) = &mut *g;
            // The rows are changes: a part the core has not taken yet (it did not run for an
            // interval) is added to, never replaced, or its changes would be lost.
            if !*unread {
                s.rows.clear();
                s.late_ns = 0;
            }
            for &row in &part.rows {
                match s.rows.iter_mut().find(|r| r.0 == row.0) {
                    Some(r) => *r = row,
                    None => s.rows.push(row),
                }
            }
            s.link_bps = part.link_bps;
            s.late_ns = s.late_ns.max(part.late_ns);
            *unread = true;
            slot.seq.fetch_add(1, Ordering::Release);
        }
        // A rebalance runs on a forwarding core and costs 30-120 ns per active (tenant, core)
        // row: with many tenants active it may not take more than a tenth of the time.
        let took = started.elapsed().as_nanos() as u64;
        if took * MAX_DUTY > INTERVAL_NS {
            self.next_at.store(now + took * MAX_DUTY, Ordering::Relaxed);
        }
    }

    /// Core `core`'s part if it is newer than `seen` (which is moved on), copied into `into`.
    pub fn take(&self, core: usize, seen: &mut u64, into: &mut CoreShare) -> bool {
        let Some(slot) = self.slots.get(core) else { return false };
        let seq = slot.seq.load(Ordering::Acquire);
        if seq == *seen {
            return false;
        }
        let Ok(mut g) = slot.share.try_lock() else { return false };
        *seen = seq;
        let (s, unread) = &mut *g;
        *unread = false;
        into.link_bps = s.link_bps;
        into.late_ns = s.late_ns;
        into.rows.clear();
        into.rows.extend_from_slice(&s.rows);
        true
    }
}

fn set_tenants(b: &mut Balancer, tables: &Tables) {
    if let Some(rate) = tables.underlay.rate
        && b.link_bps() != rate
    {
        b.set_link(rate);
    }
    for (i, t) in tables.tenants.iter().enumerate() {
        let qos = t.as_ref().map_or(TenantQos::default(), |t| t.qos);
        b.set_tenant(i as u32, qos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::Demand;

    #[test]
    fn a_part_the_core_has_not_taken_is_added_to_not_replaced() {
        let cfg = crate::config::Config::from_toml(
            "[uplink]\ninterface = \"up0\"\nvtep_ip = \"192.168.77.1/24\"\nmac = \"02:00:00:00:ff:01\"\nrate = \"100M\"\n\n\
             [[tenant]]\nname = \"a\"\nvni = 1\nguarantee = \"10M\"\n\n[[tenant]]\nname = \"b\"\nvni = 2\nguarantee = \"10M\"\n",
        )
        .unwrap();
        let t = cfg.build(None, None).unwrap();
        let u = UplinkShare::new(2, &t);
        let d = |tenant| Demand { tenant, arrived: 1_000, backlog: 0, saturated: false };
        // interval 1 gives core 0 its rows, the next ones with the same demand change few or
        // none; the core took none of them
        u.post(0, &[d(0), d(1)], INTERVAL_NS);
        u.rebalance_if_due(INTERVAL_NS);
        // (well after: a slow rebalance stretches the interval; the third as late as the
        // second, so it changes nothing)
        for k in [10_000, 20_000] {
            u.post(0, &[d(0), d(1)], k * INTERVAL_NS);
            u.rebalance_if_due(k * INTERVAL_NS);
        }
        let (mut seen, mut part) = (0, CoreShare::default());
        assert!(u.take(0, &mut seen, &mut part));
        for t in [0, 1] {
            assert!(part.rows.iter().any(|r| r.0 == t && r.1 > 0), "interval 1's row of {t} kept: {:?}", part.rows);
        }
        assert!(!u.take(0, &mut seen, &mut part), "taken once");
    }
}
