//! One forwarding core's poll loop body, generic over the port type: receive a batch from each
//! port, run the pipeline, transmit what was staged, recycle frames. The same code drives
//! in-memory ports in tests and benchmarks and AF_XDP sockets in xvsd.
//!
//! May depend on: capture, hint, pipeline, fdb, port (the port interface), qos (the uplink scheduler), tables,
//! types, wire. Never on io: the daemon runs it over AF_XDP ports, `sim` over in-memory ones.

use crate::capture::{Dir, Tap, Verdict};
use crate::fdb::Entry;
use crate::hint::MemAdvice;
use crate::pipeline::{Action, Change, DropReason, Pipeline};
use crate::port::{BATCH, Desc, FrameMem, FreeList, KernelDrops, Port, RxTally, TxStage};
use crate::qos::{Scheduler, TenantQos};
use crate::share::{CoreMeter, CoreShare, Demand};
use crate::tables::Tables;
use crate::types::{PortId, TenantId};
use crate::wire::MacAddr;
use std::sync::Arc;

/// Frames the uplink may have staged per poll: a full batch flooded to many VTEPs.
pub const UPLINK_STAGE: usize = BATCH * 64;

/// A forwarding core.
pub struct Core<P: Port, M: FrameMem> {
    /// The pipeline and its per-core state (FDB, neighbours, counters).
    pub pipeline: Pipeline,
    /// Ports by port id (`None` where this core does not own the port).
    pub ports: Vec<Option<P>>,
    /// The frame memory all of this core's ports share.
    pub mem: M,
    /// Free frames.
    pub free: FreeList,
    /// Per-port transmit staging.
    pub stage: TxStage,
    /// The uplink's bandwidth scheduler, when the uplink has a rate.
    pub qos: Option<Scheduler>,
    /// With several cores on one uplink: how many, and what this core offers its scheduler
    /// per tenant ([`crate::share`]), so that its share of the link and of each tenant's
    /// rates follows its demand. `None`: this core owns the whole link.
    sharing: Option<(usize, CoreMeter)>,
    /// The scheduler was made anew since [`Core::take_qos_rebuilt`].
    qos_rebuilt: bool,
    /// Cycles spent in each stage, read from `cycle_counter` once per port and stage per poll
    /// (never per frame), so a regression shows which stage it is in.
    pub profile: StageCycles,
    /// The cycle counter the profile reads (xvsd: the CPU's time-stamp counter); tests and
    /// simulations keep the default, which reads 0 and so profiles nothing.
    pub cycle_counter: fn() -> u64,
    rx: [Desc; BATCH],
    out: Vec<Desc>,
    /// Frames for the uplink beyond what its stage holds (a scheduler's queue handed over when
    /// the scheduler is replaced), sent ahead of new frames as the stage has room.
    uplink_backlog: std::collections::VecDeque<Desc>,
    /// Each port's kernel drop counters at the last [`Core::sample_kernel_drops`].
    kernel_seen: Vec<KernelDrops>,
    /// How the scheduler's large tables are allocated.
    advice: MemAdvice,
    /// Packet captures running on this core's ports (usually none: then they cost one
    /// branch per port and poll).
    pub taps: Vec<Tap>,
}

pub use xvs_proto::reply::StageCycles;

fn no_cycles() -> u64 {
    0
}

/// Frames of room per flow (VM port) in the uplink scheduler.
pub const QOS_QUEUE: usize = 512;

/// The uplink scheduler for `t`, if the uplink has a rate. It has room for every frame of the
/// core's frame memory (`frames`), which is all a core can ever queue.
/// With `cores` cores on the uplink (more than one), each starts with an even part of the
/// link and, for every tenant, what [`crate::share`] gives a core where the tenant has no
/// demand yet (no guarantee, the floor of its limit); its shares follow from the first
/// interval on.
fn new_scheduler(t: &Tables, frames: u32, now: u64, advice: MemAdvice, cores: usize) -> Option<Scheduler> {
    let rate = t.underlay.rate?;
    let (tenants, ports) = (t.tenants.len().max(16) * 2, t.ports.len().max(16) * 2);
    let link = if cores > 1 { (rate / cores as u64).max(1) } else { rate };
    let mut s = Scheduler::with_advice(link, tenants, ports, QOS_QUEUE, frames as usize, advice);
    for (id, tn) in t.live_tenants() {
        let qos = if cores > 1 { crate::share::absent(tn.qos) } else { tn.qos };
        s.set_tenant(u32::from(id.0), qos, now);
    }
    Some(s)
}

/// One FDB entry as a core copies it out for display.
pub type FdbRow = (TenantId, MacAddr, Entry);

/// What a trace needs of a core: the decision forwarding would take for a frame now and the
/// FDB entry of its destination, read on the core; explained elsewhere
/// (`control::explain`), off the forwarding thread.
#[derive(Debug, Clone)]
pub struct TraceFacts {
    /// The tables the core decided with.
    pub tables: Arc<Tables>,
    /// The decision (`Pipeline::decide`: the classification forwarding runs, on the whole
    /// frame).
    pub action: Action,
    /// The tenant the frame belongs to, if it got that far.
    pub tenant: Option<TenantId>,
    /// The destination MAC's FDB entry in that tenant, and whether forwarding would use it
    /// (an entry past its aging time is a miss).
    pub dst: Option<(Entry, bool)>,
    /// The core's clock when it decided.
    pub now: u64,
}

impl<P: Port, M: FrameMem> Core<P, M> {
    /// What forwarding would do with `frame` arriving on `port` now (one frame, no side
    /// effects: the FDB and neighbours are only read).
    pub fn trace_facts(&self, port: PortId, frame: &[u8], now: u64) -> TraceFacts {
        let tables = Arc::clone(self.pipeline.tables());
        let (action, tenant) = self.pipeline.decide(port, frame, now);
        let uplink = port == crate::tables::UPLINK;
        let inner = crate::pipeline::encap::inner_frame(frame, uplink, tables.underlay.vtep_ip);
        let dst =
            tenant.zip(inner.and_then(|f| crate::wire::EthernetFrame::new_checked(f).ok())).and_then(|(t, eth)| {
                let mac = eth.dst_addr();
                let e = self.pipeline.fdb.entry(t, &mac)?;
                Some((e, self.pipeline.fdb.lookup(t, &mac, now).is_some()))
            });
        TraceFacts { tables, action, tenant, dst, now }
    }

    /// Copies the FDB entries (of `tenant`, or all) into `buf`, which the caller sized for
    /// the whole table, so the core allocates nothing; rendering happens elsewhere.
    pub fn copy_fdb(&self, tenant: Option<TenantId>, buf: &mut Vec<FdbRow>) {
        buf.clear();
        buf.extend(self.pipeline.fdb.iter().filter(|(t, _, _)| tenant.is_none_or(|x| x == *t)));
    }

    /// A core over `tables`, with every frame of `mem` free.
    pub fn new(tables: Arc<Tables>, mem: M) -> Core<P, M> {
        Core::with_advice(tables, mem, crate::hint::no_advice)
    }

    /// Like [`Core::new`], the scheduler's large tables allocated with `advice` (xvsd: huge
    /// pages).
    pub fn with_advice(tables: Arc<Tables>, mem: M, advice: MemAdvice) -> Core<P, M> {
        let n = tables.ports.len();
        let free = FreeList::new(mem.frames());
        let qos = new_scheduler(&tables, mem.frames(), 0, advice, 1);
        Core {
            advice,
            qos,
            sharing: None,
            qos_rebuilt: false,
            out: Vec::with_capacity(UPLINK_STAGE),
            uplink_backlog: std::collections::VecDeque::new(),
            pipeline: Pipeline::new(tables),
            ports: (0..n).map(|_| None).collect(),
            mem,
            free,
            stage: TxStage::new(n.max(1), UPLINK_STAGE, BATCH * 4),
            profile: StageCycles::default(),
            cycle_counter: no_cycles,
            rx: [Desc::default(); BATCH],
            kernel_seen: vec![KernelDrops::default(); n],
            taps: Vec::new(),
        }
    }

    /// Attaches `port` as `id`.
    pub fn attach(&mut self, id: PortId, port: P) {
        if self.ports.len() <= id.index() {
            self.ports.resize_with(id.index() + 1, || None);
        }
        self.stage.resize(self.ports.len(), UPLINK_STAGE);
        self.ports[id.index()] = Some(port);
        self.kernel_seen.resize(self.ports.len(), KernelDrops::default());
        self.kernel_seen[id.index()] = KernelDrops::default();
    }

    /// Detaches port `id`, first counting what its kernel side dropped.
    pub fn detach(&mut self, id: PortId) -> Option<P> {
        self.sample_kernel_drops();
        self.ports.get_mut(id.index()).and_then(Option::take)
    }

    /// Adds what the kernel dropped on each port's behalf since the last call to the port's
    /// drop counters (reads kernel counters: once per publishing interval, not per poll).
    pub fn sample_kernel_drops(&mut self) {
        self.kernel_seen.resize(self.ports.len(), KernelDrops::default());
        for (i, port) in self.ports.iter_mut().enumerate() {
            let Some(port) = port else { continue };
            let now = port.kernel_drops();
            let last = std::mem::replace(&mut self.kernel_seen[i], now);
            // Counters restart from zero when a socket is replaced.
            let delta = |n: u64, l: u64| if n >= l { n - l } else { n };
            let Some(c) = self.pipeline.stats.ports.get_mut(i) else { continue };
            c.drops[DropReason::KernelRxDropped as usize] += delta(now.rx_dropped, last.rx_dropped);
            c.drops[DropReason::KernelRxRingFull as usize] += delta(now.rx_ring_full, last.rx_ring_full);
            c.drops[DropReason::KernelInvalidDesc as usize] += delta(now.invalid_desc, last.invalid_desc);
            c.drops[DropReason::KernelTxDropped as usize] += delta(now.tx_dropped, last.tx_dropped);
        }
    }

    /// Switches to a new table snapshot (QoS settings apply at once, queued frames stay).
    pub fn set_tables(&mut self, tables: Arc<Tables>, change: &Change, now: u64) {
        self.stage.resize(tables.ports.len(), UPLINK_STAGE);
        if self.ports.len() < tables.ports.len() {
            self.ports.resize_with(tables.ports.len(), || None);
        }
        let fits = |s: &Scheduler| s.capacity().0 >= tables.tenants.len() && s.capacity().1 >= tables.ports.len();
        let cores = self.sharing.as_ref().map_or(1, |(n, _)| *n);
        match (&mut self.qos, tables.underlay.rate) {
            (Some(s), Some(_)) if fits(s) && cores > 1 => {
                // The rates come from the balancer, which has the new settings; a tenant
                // new to the scheduler starts as one without demand here. Weights are local.
                for (id, tn) in tables.live_tenants() {
                    let t = u32::from(id.0);
                    match s.tenant(t) {
                        Some((q, _)) if q == TenantQos::default() => s.set_tenant(t, crate::share::absent(tn.qos), now),
                        Some((q, _)) if q.weight != tn.qos.weight => s.set_weight(t, tn.qos.weight),
                        _ => {}
                    }
                }
            }
            (Some(s), Some(rate)) if fits(s) => {
                s.set_link_at(rate, now);
                for (id, tn) in tables.live_tenants() {
                    if s.tenant(u32::from(id.0)).map(|(q, _)| q) != Some(tn.qos) {
                        s.set_tenant(u32::from(id.0), tn.qos, now);
                    }
                }
            }
            _ => {
                // The rate went away or the scheduler is too small: start over, moving what
                // the old one holds into the new one (which has room for every frame of the
                // core) or, without a rate, to the uplink unscheduled. Every frame stays
                // accounted for.
                self.rebuild_scheduler(&tables, now, cores);
                self.qos_rebuilt = true;
            }
        }
        if let Some(s) = self.qos.as_mut() {
            for t in &change.reset_tenants {
                s.clear_counters(u32::from(t.0));
            }
        }
        self.pipeline.set_tables(tables, change);
    }

    /// Shares the uplink with `cores` forwarding cores in all (more than one): from now on
    /// this core meters what it offers its scheduler ([`Core::sample_demand`]) and takes its
    /// part of the link and of each tenant's rates from a balancer ([`Core::apply_share`]).
    /// Its scheduler starts over with an even part of the link; its queue moves over.
    pub fn share_uplink(&mut self, cores: usize, now: u64) {
        if cores <= 1 {
            return;
        }
        self.sharing = Some((cores, CoreMeter::new(0)));
        let tables = Arc::clone(self.pipeline.tables());
        self.rebuild_scheduler(&tables, now, cores);
    }

    /// Makes the scheduler anew for `tables` and `cores` cores (none without a rate), sizes
    /// the meter to it, and moves what the old one holds into it or, without a rate (or for
    /// a tenant that is gone), to the uplink unscheduled: every frame stays accounted for.
    fn rebuild_scheduler(&mut self, tables: &Tables, now: u64, cores: usize) {
        let old = self.qos.take();
        self.qos = new_scheduler(tables, self.mem.frames(), now, self.advice, cores);
        if let (Some(s), Some((_, meter))) = (&self.qos, &mut self.sharing) {
            *meter = CoreMeter::new(s.capacity().0);
        }
        if let Some(mut old) = old {
            let (new, backlog) = (&mut self.qos, &mut self.uplink_backlog);
            old.drain(|d, tenant, flow| match new.as_mut().map(|s| s.enqueue(tenant, flow, d, now)) {
                Some(Ok(())) => {}
                _ => backlog.push_back(d),
            });
        }
    }

    /// With a shared uplink: each tenant's demand on this core since the last call (call it
    /// every [`crate::share::INTERVAL_NS`]); `None` when the uplink has no rate or is not
    /// shared.
    pub fn sample_demand(&mut self) -> Option<&[Demand]> {
        let (s, (_, meter)) = (self.qos.as_ref()?, self.sharing.as_mut()?);
        meter.sample(s);
        Some(&meter.demand)
    }

    /// Whether the scheduler was made anew (or the rate came or went) since the last call:
    /// the balancer's record of what it gave this core no longer holds.
    pub fn take_qos_rebuilt(&mut self) -> bool {
        std::mem::take(&mut self.qos_rebuilt)
    }

    /// Applies this core's settings from the balancer.
    pub fn apply_share(&mut self, share: &CoreShare, now: u64) {
        if let Some(s) = self.qos.as_mut() {
            CoreMeter::apply(s, share, now);
        }
    }

    /// One poll iteration at time `now` (ns): every port's receive ring once, then transmit.
    /// Frames for the host stack are left in `self.stage.host` for the caller. Returns the
    /// number of frames received.
    pub fn poll(&mut self, now: u64) -> usize {
        let mut total = 0;
        let cycles = self.cycle_counter;
        if !self.taps.is_empty() {
            self.taps.retain(Tap::live);
        }
        for i in 0..self.ports.len() {
            let Some(port) = self.ports[i].as_mut() else { continue };
            let c0 = cycles();
            let n = port.rx(&mut self.mem, &mut self.rx);
            let tally = port.take_tally();
            if tally != RxTally::default() {
                self.count_tally(i, &tally);
            }
            let c1 = cycles();
            self.profile.rx += c1.wrapping_sub(c0);
            if n == 0 {
                continue;
            }
            total += n;
            let id = PortId(i as u16);
            let tapped = self.taps.iter().any(|t| t.port == id);
            if tapped {
                for tap in self.taps.iter_mut().filter(|t| t.port == id) {
                    for (k, d) in self.rx[..n].iter().enumerate() {
                        tap.copy(k, Dir::In, self.mem.data(d), now);
                    }
                }
            }
            self.pipeline.process(id, &self.rx[..n], &mut self.mem, &mut self.free, &mut self.stage, now);
            if tapped {
                let actions = self.pipeline.actions();
                for tap in self.taps.iter_mut().filter(|t| t.port == id) {
                    tap.finish(|k, _| match actions.get(k) {
                        Some(&(a, tenant)) => (tenant, Verdict::Decided(a)),
                        None => (None, Verdict::Unknown),
                    });
                }
            }
            self.profile.process += cycles().wrapping_sub(c1);
        }
        self.transmit(now);
        total
    }

    /// Adds what port `i` counted while receiving.
    fn count_tally(&mut self, i: usize, t: &RxTally) {
        let stats = &mut self.pipeline.stats;
        stats.events.csum_completed += t.csum_completed;
        stats.events.tso_frames += t.tso_frames;
        stats.events.tso_segments += t.tso_segments;
        stats.events.coalesced_segments += t.coalesced_segments;
        stats.events.coalesced_frames += t.coalesced_frames;
        if let Some(c) = stats.ports.get_mut(i) {
            c.drops[DropReason::FrameTooBig as usize] += t.too_big;
            c.drops[DropReason::MalformedEthernet as usize] += t.malformed;
            c.drops[DropReason::BadOffload as usize] += t.bad_offload;
            c.drops[DropReason::GsoUnsupported as usize] += t.gso_unsupported;
            c.drops[DropReason::NoBuffer as usize] += t.no_buffer;
        }
    }

    /// Moves the uplink's staged tenant frames into the scheduler and what it releases at
    /// `now` back to the uplink's stage.
    fn schedule_uplink(&mut self, now: u64) {
        let Some(s) = self.qos.as_mut() else {
            self.stage.uplink_meta.clear();
            return;
        };
        let meta = std::mem::take(&mut self.stage.uplink_meta);
        let mut staged = std::mem::take(self.stage.staged(crate::tables::UPLINK));
        self.out.clear();
        let (out, stats, free) = (&mut self.out, &mut self.pipeline.stats, &mut self.free);
        let mut meter = self.sharing.as_mut().map(|(_, m)| m);
        if let Some(m) = meter.as_deref_mut() {
            for (d, &(tenant, _)) in staged.iter().zip(&meta) {
                m.offer(tenant, u32::from(d.len));
            }
        }
        // Frames of the host stack carry no tenant (u32::MAX): the scheduler gives them back
        // and they go out unscheduled; anything else it gives back met a full queue.
        s.enqueue_burst(&staged, &meta, now, |d, tenant, flow| {
            if tenant == u32::MAX {
                out.push(d);
                return;
            }
            if let Some(m) = meter.as_deref_mut() {
                m.refuse(tenant, u32::from(d.len));
            }
            if let Some(p) = stats.ports.get_mut(flow as usize) {
                p.drops[DropReason::QosQueueFull as usize] += 1;
            }
            if let Some(t) = stats.tenants.get_mut(tenant as usize) {
                t.drops[DropReason::QosQueueFull as usize] += 1;
            }
            free.free(d.id);
        });
        staged.clear();
        self.stage.uplink_meta = meta;
        self.stage.uplink_meta.clear();
        let room = self.out.capacity().saturating_sub(self.out.len());
        s.dequeue_burst(now, &mut self.out, room);
        staged.extend_from_slice(&self.out);
        *self.stage.staged(crate::tables::UPLINK) = staged;
    }

    /// Sends everything staged (through the uplink scheduler when there is one), then
    /// recycles completed frames and refills receive rings.
    pub fn transmit(&mut self, now: u64) {
        let cycles = self.cycle_counter;
        let c0 = cycles();
        self.schedule_uplink(now);
        if !self.uplink_backlog.is_empty() {
            let staged = self.stage.staged(crate::tables::UPLINK);
            let n = self.uplink_backlog.len().min(BATCH).min(staged.capacity() - staged.len());
            staged.extend(self.uplink_backlog.drain(..n));
        }
        for i in 0..self.stage.ports() {
            let id = PortId(i as u16);
            let staged = self.stage.staged(id);
            if staged.is_empty() {
                continue;
            }
            let tapped = self.taps.iter().any(|t| t.port == id);
            if tapped {
                for tap in self.taps.iter_mut().filter(|t| t.port == id) {
                    for (k, d) in staged.iter().enumerate() {
                        tap.copy(k, Dir::Out, self.mem.data(d), now);
                    }
                }
            }
            let (sent, unsent, tally) = match self.ports.get_mut(i).and_then(Option::as_mut) {
                Some(port) => {
                    let n = port.tx(staged);
                    port.flush();
                    (n, DropReason::TxFull, port.take_tally())
                }
                // The port is configured but its interface is missing or down.
                None => (0, DropReason::PortWaiting, RxTally::default()),
            };
            if tapped {
                let tables = self.pipeline.tables();
                for tap in self.taps.iter_mut().filter(|t| t.port == id) {
                    tap.finish(|k, f| {
                        let v = if k < sent { Verdict::Sent } else { Verdict::Unsent(unsent) };
                        (crate::capture::tenant_of_sent(tables, id, f), v)
                    });
                }
            }
            let c = &mut self.pipeline.stats.ports[i];
            for d in &staged[..sent] {
                c.tx_packets += 1;
                c.tx_bytes += u64::from(d.len);
            }
            for d in &staged[sent..] {
                c.drops[unsent as usize] += 1;
                self.free.free(d.id);
            }
            staged.clear();
            if tally != RxTally::default() {
                self.count_tally(i, &tally);
            }
        }
        let c1 = cycles();
        for port in self.ports.iter_mut().flatten() {
            port.reclaim(&mut self.free);
            port.refill(&mut self.free);
        }
        self.profile.tx += c1.wrapping_sub(c0);
        self.profile.recycle += cycles().wrapping_sub(c1);
    }
}
