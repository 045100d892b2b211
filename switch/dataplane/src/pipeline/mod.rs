//! The forwarding pipeline: a batch of frames from one port in, one decision per frame, then
//! the decisions carried out on the frame memory and staged per egress port.
//!
//! Pure logic: no I/O, no clock (time is passed in), no allocation per batch (scratch space is
//! sized at construction), no panics on any input. Every drop is a counted [`DropReason`].
//!
//! May depend on: bucket, drop, fdb, neigh, port, qos (`WIRE_OVERHEAD`), stats, tables, types,
//! wire. No I/O, no allocation per frame.

pub mod encap;
pub mod icmp;

pub use crate::drop::DropReason;
pub use encap::{EncapTemplate, Outer, Underlayer};

use crate::bucket::TokenBucket;
use crate::fdb::{Fdb, Learn, Origin};
use crate::neigh::Neighbors;
use crate::port::{BATCH, Desc, FrameMem, FreeList, HEADROOM, TxStage};
use crate::stats::{Events, Stats};
use crate::tables::{FdbDest, Port, PortKind, Tables, UPLINK};
use crate::types::{PortId, TenantId};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, ETHERNET_HEADER_LEN, EtherType, EthernetFrame, IpProtocol, Ipv4Packet,
    Ipv6Packet, MacAddr, VXLAN_V4_OVERHEAD,
};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Drop it.
    Drop(DropReason),
    /// Send it unchanged out of a local port (also an ARP reply back to the sender).
    Forward(PortId),
    /// Encapsulate it towards a remote VTEP and send it out of the uplink.
    Encap {
        /// Next hop's MAC.
        dst_mac: MacAddr,
        /// Remote VTEP.
        dst_ip: Ipv4Addr,
        /// Tenant's VNI.
        vni: u32,
        /// Outer UDP source port (flow hash).
        src_port: u16,
    },
    /// Decapsulate it and send the inner frame out of a local port.
    Decap {
        /// Egress port.
        port: PortId,
        /// Where the inner frame starts.
        inner_off: u16,
        /// Its length.
        inner_len: u16,
    },
    /// Copy it to every other local port of the tenant and, if `remote`, to each of the
    /// tenant's remote VTEPs (head-end replication).
    Flood {
        /// The tenant.
        tenant: TenantId,
        /// The ingress port, which gets no copy.
        exclude: PortId,
        /// Where the (inner) frame starts.
        inner_off: u16,
        /// Its length.
        inner_len: u16,
        /// Whether to replicate to remote VTEPs (never for frames from the underlay).
        remote: bool,
    },
    /// Hand it to the VTEP's host stack.
    Host,
    /// Too big for the overlay: drop it and answer with ICMP "fragmentation needed" (IPv4
    /// with DF) or ICMPv6 "packet too big", carrying this inner MTU.
    TooBig {
        /// Largest inner IP packet that fits.
        mtu: u16,
    },
}

/// What changes between two table snapshots, for the per-core FDB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Static entries to add or replace.
    pub static_add: Vec<(TenantId, MacAddr, FdbDest)>,
    /// Static entries to remove.
    pub static_del: Vec<(TenantId, MacAddr)>,
    /// Whether a tenant, port or VTEP was removed (learned entries must be checked).
    pub purge: bool,
    /// Tenant ids given to a tenant that did not have them before (a removed tenant's slot
    /// reused): their counters and learned entries start from nothing.
    pub reset_tenants: Vec<TenantId>,
    /// Port ids given to a port that did not have them before: counters and policer reset.
    pub reset_ports: Vec<PortId>,
}

impl Change {
    /// The change from `old` to `new`.
    pub fn between(old: &Tables, new: &Tables) -> Change {
        use std::collections::HashMap;
        let o: HashMap<(TenantId, MacAddr), FdbDest> = old.static_fdb.iter().map(|(t, m, d)| ((*t, *m), *d)).collect();
        let n: HashMap<(TenantId, MacAddr), FdbDest> = new.static_fdb.iter().map(|(t, m, d)| ((*t, *m), *d)).collect();
        let static_add = new.static_fdb.iter().filter(|(t, m, d)| o.get(&(*t, *m)) != Some(d)).copied().collect();
        let static_del =
            old.static_fdb.iter().filter(|(t, m, _)| !n.contains_key(&(*t, *m))).map(|(t, m, _)| (*t, *m)).collect();
        let purge = old.live_tenants().any(|(id, t)| match new.tenant(id) {
            None => true,
            Some(nt) => nt.name != t.name || t.vteps.iter().any(|v| !nt.vteps.contains(v)),
        }) || old.live_ports().any(|(id, p)| new.port(id) != Some(p));
        let reset_tenants = new
            .live_tenants()
            .filter(|(id, t)| old.tenant(*id).map(|o| &o.name) != Some(&t.name))
            .map(|(id, _)| id)
            .collect();
        let reset_ports = new
            .live_ports()
            .filter(|(id, p)| old.port(*id).map(|o| &o.name) != Some(&p.name))
            .map(|(id, _)| id)
            .collect();
        Change { static_add, static_del, purge, reset_tenants, reset_ports }
    }
}

/// The pipeline of one core.
#[derive(Debug)]
pub struct Pipeline {
    tables: Arc<Tables>,
    tmpl: EncapTemplate,
    /// The core's FDB.
    pub fdb: Fdb,
    /// The core's underlay neighbours.
    pub neigh: Neighbors,
    /// The core's counters.
    pub stats: Stats,
    actions: Vec<(Action, Option<TenantId>)>,
    policers: Vec<Option<PolicerState>>,
}

/// A VM port's policer: a token bucket in wire bytes, full when the policer is set.
#[derive(Debug, Clone, Copy)]
struct PolicerState {
    conf: crate::tables::Policer,
    bucket: TokenBucket,
}

/// Keeps one policer per port that has one; a new or changed one starts full (a bucket
/// full at time 0 is full at every later time).
fn sync_policers(policers: &mut Vec<Option<PolicerState>>, t: &Tables) {
    policers.resize(t.ports.len(), None);
    for (i, slot) in policers.iter_mut().enumerate() {
        let want = t.ports[i].as_ref().and_then(|p| p.policer);
        match (want, slot.as_mut()) {
            (Some(c), Some(s)) if s.conf == c => {}
            (Some(c), _) => *slot = Some(PolicerState { conf: c, bucket: TokenBucket::new(c.rate, c.burst, 0, true) }),
            (None, _) => *slot = None,
        }
    }
}

impl Pipeline {
    /// A pipeline over `tables`, with its FDB sized from them.
    pub fn new(tables: Arc<Tables>) -> Pipeline {
        let mut fdb = Fdb::new(tables.fdb_capacity as usize, tables.fdb_aging_secs);
        fdb.sync_static(&tables.static_fdb);
        let mut stats = Stats::default();
        stats.resize(tables.ports.len(), tables.tenants.len());
        let mut policers = Vec::new();
        sync_policers(&mut policers, &tables);
        Pipeline {
            policers,
            tmpl: EncapTemplate::new(&tables.underlay),
            tables,
            fdb,
            neigh: Neighbors::new(4096),
            stats,
            actions: Vec::with_capacity(BATCH),
        }
    }

    /// The current table snapshot.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    /// Switches to a new snapshot (called between batches), applying `change` to the FDB in
    /// time proportional to the change (a purge of learned entries only when something they
    /// could point at was removed).
    pub fn set_tables(&mut self, tables: Arc<Tables>, change: &Change) {
        self.tmpl = EncapTemplate::new(&tables.underlay);
        for (t, m) in &change.static_del {
            self.fdb.remove(*t, m);
        }
        for (t, m, d) in &change.static_add {
            self.fdb.insert_static(*t, m, *d);
        }
        if change.purge {
            let t = &*tables;
            self.fdb.retain_learned(|tenant, _, dest| match (t.tenant(tenant), dest) {
                (None, _) => false,
                (Some(tn), FdbDest::Remote(v)) => tn.vteps.contains(&v),
                (Some(_), FdbDest::Local(p)) => {
                    matches!(t.port(p), Some(Port { kind: PortKind::Vm { tenant: pt, .. }, .. }) if *pt == tenant)
                }
            });
            let vteps: Vec<Ipv4Addr> = t.all_vteps().iter().map(|v| t.underlay.next_hop(*v)).collect();
            self.neigh.retain(|ip, _| vteps.contains(ip));
        }
        self.stats.resize(tables.ports.len(), tables.tenants.len());
        for t in &change.reset_tenants {
            self.fdb.flush_tenant(*t);
            self.stats.tenants[t.index()] = Default::default();
        }
        for p in &change.reset_ports {
            self.stats.ports[p.index()] = Default::default();
            if let Some(slot) = self.policers.get_mut(p.index()) {
                *slot = None;
            }
        }
        sync_policers(&mut self.policers, &tables);
        self.tables = tables;
    }

    /// The decisions of the last batch [`Pipeline::process`] ran, one per frame (after the
    /// policer; empty if the port was unknown): what a packet capture attaches.
    pub fn actions(&self) -> &[(Action, Option<TenantId>)] {
        &self.actions
    }

    /// Decides what to do with one frame without changing any state: what `xvsctl trace`
    /// shows. ARP suppression is reported as `Forward` back to the ingress port.
    /// (Control path: it copies the whole frame, jumbo frames included, so the decision is
    /// the one forwarding would make on it.)
    pub fn decide(&self, ingress: PortId, frame: &[u8], now: u64) -> (Action, Option<TenantId>) {
        let mut scratch = frame.to_vec();
        let n = scratch.len();
        let mut ev = Events::default();
        let mut fdb_view = FdbView::ReadOnly(&self.fdb);
        let mut neigh = NeighView::ReadOnly(&self.neigh);
        classify(
            &mut Memo::default(),
            &self.tables,
            &self.tmpl,
            &mut fdb_view,
            &mut neigh,
            &mut ev,
            ingress,
            &mut scratch[..n],
            now,
        )
    }

    /// Runs one batch received on `ingress`: decides, then carries the decisions out, staging
    /// frames per egress port in `stage` and returning dropped frames to `free`.
    pub fn process<M: FrameMem + ?Sized>(
        &mut self,
        ingress: PortId,
        rx: &[Desc],
        mem: &mut M,
        free: &mut FreeList,
        stage: &mut TxStage,
        now: u64,
    ) {
        let tables = Arc::clone(&self.tables);
        let t = &*tables;
        self.stats.batches += 1;
        self.actions.clear();
        let Some(port) = t.port(ingress) else {
            let c = &mut self.stats.ports;
            for d in rx {
                if let Some(c) = c.get_mut(ingress.index()) {
                    c.drops[DropReason::UnknownPort as usize] += 1;
                }
                free.free(d.id);
            }
            return;
        };
        let pc = &mut self.stats.ports[ingress.index()];
        pc.rx_packets += rx.len() as u64;
        pc.rx_bytes += rx.iter().map(|d| u64::from(d.len)).sum::<u64>();

        // Pass 1: one decision per frame.
        {
            let mut fdb = FdbView::Learning(&mut self.fdb);
            let mut neigh = NeighView::Resolving(&mut self.neigh, None);
            let mut memo = Memo::default();
            for d in rx.iter().take(BATCH) {
                let a = classify(
                    &mut memo,
                    t,
                    &self.tmpl,
                    &mut fdb,
                    &mut neigh,
                    &mut self.stats.events,
                    ingress,
                    mem.data_mut(d),
                    now,
                );
                self.actions.push(a);
            }
        }
        // A VM port's source MAC is pinned by anti-spoofing, so every frame of the batch was
        // sent by the same MAC: learn it once per batch, not once per frame.
        if let PortKind::Vm { tenant, mac, .. } = &port.kind
            && self.actions.iter().any(|(a, _)| !matches!(a, Action::Drop(_)))
        {
            let limit = t.tenant(*tenant).map_or(0, |x| x.mac_limit);
            let r = self.fdb.learn(*tenant, mac, FdbDest::Local(ingress), Origin::LearnedLocal, now, limit);
            count_learn(&mut self.stats.events, r);
        }

        // A VM port's policer applies to what the VM sends, before anything is forwarded.
        if let Some(Some(pol)) = self.policers.get_mut(ingress.index()) {
            for (d, (a, _)) in rx.iter().zip(self.actions.iter_mut()) {
                if !matches!(a, Action::Drop(_)) && !pol.bucket.admit(u64::from(d.len) + crate::qos::WIRE_OVERHEAD, now)
                {
                    *a = Action::Drop(DropReason::Policed);
                }
            }
        }

        // Pass 2: carry the decisions out.
        for (d, (action, tenant)) in rx.iter().zip(self.actions.iter().copied()) {
            let mut out = Out { stats: &mut self.stats, free: &mut *free, stage: &mut *stage, ingress, tenant };
            if let Some(tn) = tenant {
                let tc = &mut out.stats.tenants[tn.index()];
                tc.rx_packets += 1;
                tc.rx_bytes += u64::from(d.len);
            }
            match action {
                Action::Drop(r) => out.drop(d.id, r),
                Action::Forward(p) => out.send(p, *d),
                Action::Encap { dst_mac, dst_ip, vni, src_port } => {
                    match self.tmpl.encapsulate(mem.buf_mut(d.id), d.range(), dst_mac, dst_ip, vni, src_port) {
                        Some(r) => out.send(UPLINK, Desc { id: d.id, len: r.len() as u16, off: r.start as u16 }),
                        None => out.drop(d.id, DropReason::MtuExceeded),
                    }
                }
                Action::Decap { port, inner_off, inner_len } => {
                    // The inner frame stays where it is: only the descriptor skips the outer
                    // headers.
                    out.send(port, Desc { id: d.id, len: inner_len, off: d.off + inner_off });
                }
                Action::Flood { tenant, exclude, inner_off, inner_len, remote } => {
                    out.stats.events.flooded += 1;
                    flood(
                        t,
                        &self.tmpl,
                        &mut self.neigh,
                        mem,
                        &mut out,
                        *d,
                        tenant,
                        exclude,
                        inner_off,
                        inner_len,
                        remote,
                        now,
                    );
                }
                Action::TooBig { mtu } => {
                    count_drop(out.stats, ingress, tenant, DropReason::MtuExceeded);
                    let buf = mem.buf_mut(d.id).get_mut(usize::from(d.off)..).unwrap_or_default();
                    match icmp::too_big(buf, d.len as usize, mtu) {
                        Some(len) => {
                            out.stats.events.icmp_too_big += 1;
                            out.send(ingress, Desc { len: len as u16, ..*d });
                        }
                        None => out.free.free(d.id),
                    }
                }
                Action::Host => {
                    out.stats.events.to_host += 1;
                    if !out.stage.push_host(*d) {
                        out.drop(d.id, DropReason::HostQueueFull);
                    }
                }
            }
        }
    }
}

/// Where pass 2 puts frames, and what it counts.
struct Out<'a> {
    stats: &'a mut Stats,
    free: &'a mut FreeList,
    stage: &'a mut TxStage,
    ingress: PortId,
    tenant: Option<TenantId>,
}

impl Out<'_> {
    #[inline]
    fn drop(&mut self, id: u32, r: DropReason) {
        count_drop(self.stats, self.ingress, self.tenant, r);
        self.free.free(id);
    }

    // always: with 8-byte descriptors the compiler stopped inlining it (a call per frame)
    #[inline(always)]
    fn send(&mut self, port: PortId, d: Desc) {
        let tenant = self.tenant.map_or(u32::MAX, |t| u32::from(t.0));
        if self.stage.push_tagged(port, d, tenant, u32::from(self.ingress.0)) {
            if let Some(t) = self.tenant {
                let c = &mut self.stats.tenants[t.index()];
                c.tx_packets += 1;
                c.tx_bytes += u64::from(d.len);
            }
        } else {
            count_drop(self.stats, port, self.tenant, DropReason::TxFull);
            self.free.free(d.id);
        }
    }
}

#[inline]
fn count_drop(stats: &mut Stats, port: PortId, tenant: Option<TenantId>, r: DropReason) {
    if let Some(c) = stats.ports.get_mut(port.index()) {
        c.drops[r as usize] += 1;
    }
    if let Some(c) = tenant.and_then(|t| stats.tenants.get_mut(t.index())) {
        c.drops[r as usize] += 1;
    }
}

fn count_learn(ev: &mut Events, r: Learn) {
    match r {
        Learn::Added => ev.fdb_learned += 1,
        Learn::Moved | Learn::StaticMoved => ev.fdb_moved += 1,
        Learn::Full => ev.fdb_full += 1,
        Learn::Refreshed | Learn::Static(_) => {}
    }
}

/// The FDB as classification sees it: learning on the data path, read-only for traces.
enum FdbView<'a> {
    Learning(&'a mut Fdb),
    ReadOnly(&'a Fdb),
}

impl FdbView<'_> {
    fn lookup(&self, t: TenantId, m: &MacAddr, now: u64) -> Option<FdbDest> {
        match self {
            FdbView::Learning(f) => f.lookup(t, m, now),
            FdbView::ReadOnly(f) => f.lookup(t, m, now),
        }
    }

    fn learn(&mut self, t: TenantId, m: &MacAddr, d: FdbDest, now: u64, limit: u32, follow: bool) -> Learn {
        match self {
            FdbView::Learning(f) if follow => f.learn_following(t, m, d, now, limit),
            FdbView::Learning(f) => f.learn(t, m, d, Origin::LearnedRemote, now, limit),
            FdbView::ReadOnly(f) => match (f.entry(t, m), f.lookup(t, m, now)) {
                (Some(e), _)
                    if follow
                        && e.origin == Origin::Static
                        && e.dest != d
                        && matches!((e.dest, d), (FdbDest::Remote(_), FdbDest::Remote(_))) =>
                {
                    Learn::StaticMoved
                }
                (Some(e), _) if e.origin == Origin::Static => Learn::Static(e.dest),
                (_, Some(x)) if x == d => Learn::Refreshed,
                (_, Some(_)) => Learn::Moved,
                (_, None) => Learn::Added,
            },
        }
    }
}

enum NeighView<'a> {
    /// The data path: resolves (marking misses for ARP), remembering the last answer for the
    /// rest of the batch, since a batch's frames mostly go to the same next hop.
    Resolving(&'a mut Neighbors, Option<(Ipv4Addr, MacAddr)>),
    ReadOnly(&'a Neighbors),
}

impl NeighView<'_> {
    #[inline]
    fn resolve(&mut self, ip: Ipv4Addr, now: u64) -> Option<MacAddr> {
        match self {
            NeighView::Resolving(_, Some((last, mac))) if *last == ip => Some(*mac),
            NeighView::Resolving(n, memo) => {
                let mac = n.resolve(ip, now);
                if let Some(m) = mac {
                    *memo = Some((ip, m));
                }
                mac
            }
            NeighView::ReadOnly(n) => n.get(ip).and_then(|e| e.mac),
        }
    }
}

/// Lookups remembered for the rest of one batch: a batch from the uplink mostly comes from
/// one VTEP with one VNI.
#[derive(Default)]
struct Memo {
    vni: Option<(u32, TenantId)>,
    allowed: Option<(TenantId, Ipv4Addr)>,
}

/// Decides one frame. Returns the action and the tenant it belongs to, once known.
#[allow(clippy::too_many_arguments)]
#[inline]
fn classify(
    memo: &mut Memo,
    t: &Tables,
    tmpl: &EncapTemplate,
    fdb: &mut FdbView<'_>,
    neigh: &mut NeighView<'_>,
    ev: &mut Events,
    ingress: PortId,
    frame: &mut [u8],
    now: u64,
) -> (Action, Option<TenantId>) {
    let Some(port) = t.port(ingress) else {
        return (Action::Drop(DropReason::UnknownPort), None);
    };
    match &port.kind {
        PortKind::Uplink => classify_uplink(t, fdb, ev, memo, frame, now),
        PortKind::Vm { tenant, mac, ipv4, ipv6 } => {
            let tenant = *tenant;
            let a = classify_vm(t, tmpl, fdb, neigh, ev, ingress, tenant, mac, ipv4, ipv6, frame, now);
            (a, Some(tenant))
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn classify_vm(
    t: &Tables,
    tmpl: &EncapTemplate,
    fdb: &mut FdbView<'_>,
    neigh: &mut NeighView<'_>,
    ev: &mut Events,
    ingress: PortId,
    tenant: TenantId,
    port_mac: &MacAddr,
    ipv4: &[Ipv4Addr],
    ipv6: &[Ipv6Addr],
    frame: &mut [u8],
    now: u64,
) -> Action {
    let len = frame.len();
    let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
        return Action::Drop(DropReason::MalformedEthernet);
    };
    if eth.src_addr() != *port_mac {
        return Action::Drop(DropReason::SpoofedSrcMac);
    }
    let dst = eth.dst_addr();
    match eth.ethertype() {
        EtherType::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                return Action::Drop(DropReason::MalformedIpv4);
            };
            let src = ip.src_addr();
            if !(ipv4.contains(&src) || src.is_unspecified()) {
                return Action::Drop(DropReason::SpoofedSrcIp);
            }
        }
        EtherType::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return Action::Drop(DropReason::MalformedIpv6);
            };
            let src = ip.src_addr();
            let own = |a: &Ipv6Addr| ipv6.contains(a) || *a == eui64_link_local(port_mac);
            if !(own(&src) || src.is_unspecified()) {
                return Action::Drop(DropReason::SpoofedSrcIp);
            }
            if ip.next_header() == IpProtocol::Icmpv6
                && let Some(r) = check_nd(ip.payload(), port_mac, &own)
            {
                return Action::Drop(r);
            }
        }
        EtherType::Arp => {
            let Ok(repr) = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) else {
                return Action::Drop(DropReason::MalformedArp);
            };
            let ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr: sha,
                source_protocol_addr: spa,
                target_protocol_addr: tpa,
                ..
            } = repr
            else {
                return Action::Drop(DropReason::MalformedArp);
            };
            if sha != *port_mac || !(ipv4.contains(&spa) || spa.is_unspecified()) {
                return Action::Drop(DropReason::SpoofedArp);
            }
            if operation == ArpOperation::Request
                && !spa.is_unspecified()
                && let Some(owner) = t.arp_binding(tenant, tpa).filter(|m| m != port_mac)
            {
                answer_arp(frame, owner, tpa, sha, spa);
                ev.arp_suppressed += 1;
                return Action::Forward(ingress);
            }
        }
        EtherType::Unknown(0x8100 | 0x88a8) => return Action::Drop(DropReason::VlanTagged),
        // A VM port carries IP (and ARP): nothing else is checked, so nothing else passes
        // (docs/architecture.md, "What a VM may send").
        EtherType::Unknown(_) => return Action::Drop(DropReason::EthertypeNotAllowed),
    }

    if dst.is_multicast() {
        return flood_from_vm(tenant, ingress, len);
    }
    match fdb.lookup(tenant, &dst, now) {
        Some(FdbDest::Local(p)) if p == ingress => Action::Drop(DropReason::Hairpin),
        Some(FdbDest::Local(p)) => Action::Forward(p),
        Some(FdbDest::Remote(vtep)) => {
            if len > tmpl.max_inner {
                return Action::TooBig { mtu: tmpl.max_inner.saturating_sub(ETHERNET_HEADER_LEN) as u16 };
            }
            let Some(dst_mac) = neigh.resolve(t.underlay.next_hop(vtep), now) else {
                return Action::Drop(DropReason::VtepUnresolved);
            };
            let vni = t.tenant(tenant).map_or(0, |x| x.vni.get());
            Action::Encap { dst_mac, dst_ip: vtep, vni, src_port: encap::flow_src_port(frame) }
        }
        None => flood_from_vm(tenant, ingress, len),
    }
}

/// The link-local address a VM derives from its MAC (modified EUI-64, RFC 4291 appendix
/// A): the only link-local source it may use besides its configured addresses.
fn eui64_link_local(mac: &MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// Neighbour discovery from a VM (`icmp` is the ICMPv6 message after a plain IPv6 header):
/// no router advertisements or redirects (a VM is not the tenant's router); a neighbour
/// solicitation or advertisement may only name one of the VM's own addresses as target
/// (advertisement) and carry the VM's MAC as link-layer address option. Other ICMPv6 passes.
fn check_nd(icmp: &[u8], port_mac: &MacAddr, own: &impl Fn(&Ipv6Addr) -> bool) -> Option<DropReason> {
    const ND_RA: u8 = 134;
    const ND_NS: u8 = 135;
    const ND_NA: u8 = 136;
    const ND_REDIRECT: u8 = 137;
    let kind = *icmp.first()?;
    match kind {
        ND_RA | ND_REDIRECT => return Some(DropReason::SpoofedNd),
        ND_NS | ND_NA => {}
        _ => return None,
    }
    // type, code, checksum, reserved/flags (4), target (16), then options
    let Some(target) = icmp.get(8..24).and_then(|t| <[u8; 16]>::try_from(t).ok()) else {
        return Some(DropReason::MalformedIpv6);
    };
    if kind == ND_NA && !own(&Ipv6Addr::from(target)) {
        return Some(DropReason::SpoofedNd);
    }
    let mut opts = &icmp[24..];
    while opts.len() >= 2 {
        let (t, len) = (opts[0], usize::from(opts[1]) * 8);
        if len == 0 || len > opts.len() {
            return Some(DropReason::MalformedIpv6);
        }
        // source (1) or target (2) link-layer address: the VM's MAC
        if (t == 1 || t == 2) && (len != 8 || opts[2..8] != port_mac.0) {
            return Some(DropReason::SpoofedNd);
        }
        opts = &opts[len..];
    }
    None
}

fn flood_from_vm(tenant: TenantId, ingress: PortId, len: usize) -> Action {
    Action::Flood { tenant, exclude: ingress, inner_off: 0, inner_len: len as u16, remote: true }
}

/// Rewrites an ARP request in place into the reply from `owner`.
fn answer_arp(frame: &mut [u8], owner: MacAddr, owner_ip: Ipv4Addr, asker: MacAddr, asker_ip: Ipv4Addr) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_dst_addr(asker);
    eth.set_src_addr(owner);
    let mut arp = ArpPacket::new_unchecked(eth.payload_mut());
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: owner,
        source_protocol_addr: owner_ip,
        target_hardware_addr: asker,
        target_protocol_addr: asker_ip,
    }
    .emit(&mut arp);
}

#[inline]
fn classify_uplink(
    t: &Tables,
    fdb: &mut FdbView<'_>,
    ev: &mut Events,
    memo: &mut Memo,
    frame: &[u8],
    now: u64,
) -> (Action, Option<TenantId>) {
    let outer = match encap::parse_outer(frame, t.underlay.vtep_ip) {
        Ok(Underlayer::Vxlan(o)) => o,
        Ok(Underlayer::Host) => return (Action::Host, None),
        Err(r) => return (Action::Drop(r), None),
    };
    let tenant = match memo.vni {
        Some((vni, tn)) if vni == outer.vni => tn,
        _ => {
            let Some(tn) = t.tenant_by_vni(outer.vni) else {
                return (Action::Drop(DropReason::UnknownVni), None);
            };
            memo.vni = Some((outer.vni, tn));
            tn
        }
    };
    let drop = |r| (Action::Drop(r), Some(tenant));
    if memo.allowed != Some((tenant, outer.src_ip)) {
        if !t.vtep_allowed(tenant, outer.src_ip) {
            return drop(DropReason::VtepNotAllowed);
        }
        memo.allowed = Some((tenant, outer.src_ip));
    }
    let inner = &frame[outer.inner_off..outer.inner_off + outer.inner_len];
    let eth = EthernetFrame::new_unchecked(inner);
    if matches!(eth.ethertype(), EtherType::Unknown(0x8100 | 0x88a8)) {
        return drop(DropReason::InnerVlanTagged);
    }
    let (src, dst) = (eth.src_addr(), eth.dst_addr());
    if !src.is_unicast() || src.0 == [0; 6] {
        return drop(DropReason::InnerSrcInvalid);
    }
    let limit = t.tenant(tenant).map_or(0, |x| x.mac_limit);
    match fdb.learn(tenant, &src, FdbDest::Remote(outer.src_ip), now, limit, t.static_follows_frames) {
        Learn::Static(FdbDest::Local(_)) => return drop(DropReason::RemoteClaimsLocalMac),
        r => count_learn(ev, r),
    }
    let (inner_off, inner_len) = (outer.inner_off as u16, outer.inner_len as u16);
    let flood = (Action::Flood { tenant, exclude: UPLINK, inner_off, inner_len, remote: false }, Some(tenant));
    if dst.is_multicast() {
        return flood;
    }
    match fdb.lookup(tenant, &dst, now) {
        Some(FdbDest::Local(port)) => (Action::Decap { port, inner_off, inner_len }, Some(tenant)),
        // Split horizon: what came from the underlay never goes back to it.
        Some(FdbDest::Remote(_)) => drop(DropReason::SplitHorizon),
        None => flood,
    }
}

/// Replicates a frame to the tenant's other local ports and, for frames from a VM, to each
/// of its remote VTEPs. Every copy goes into a fresh frame; the original is freed.
#[allow(clippy::too_many_arguments)]
fn flood<M: FrameMem + ?Sized>(
    t: &Tables,
    tmpl: &EncapTemplate,
    neigh: &mut Neighbors,
    mem: &mut M,
    out: &mut Out<'_>,
    d: Desc,
    tenant: TenantId,
    exclude: PortId,
    inner_off: u16,
    inner_len: u16,
    remote: bool,
    now: u64,
) {
    let Some(tn) = t.tenant(tenant) else {
        return out.drop(d.id, DropReason::NoTenantPorts);
    };
    let (off, len) = (usize::from(d.off) + usize::from(inner_off), usize::from(inner_len));
    let src = off..off + len;
    let mut sent = 0usize;
    for &p in tn.ports.iter().filter(|&&p| p != exclude) {
        let Some(id) = out.free.alloc() else {
            count_drop(out.stats, out.ingress, out.tenant, DropReason::NoBuffer);
            continue;
        };
        mem.copy(d.id, src.clone(), id, HEADROOM);
        out.send(p, Desc::new(id, len));
        sent += 1;
    }
    if remote && !tn.vteps.is_empty() {
        if len > tmpl.max_inner || HEADROOM + len + VXLAN_V4_OVERHEAD > mem.capacity() {
            count_drop(out.stats, out.ingress, out.tenant, DropReason::MtuExceeded);
        } else {
            let src_port = encap::flow_src_port(&mem.buf(d.id)[src.clone()]);
            for &vtep in &tn.vteps {
                let Some(dst_mac) = neigh.resolve(t.underlay.next_hop(vtep), now) else {
                    count_drop(out.stats, out.ingress, out.tenant, DropReason::VtepUnresolved);
                    continue;
                };
                let Some(id) = out.free.alloc() else {
                    count_drop(out.stats, out.ingress, out.tenant, DropReason::NoBuffer);
                    continue;
                };
                mem.copy(d.id, src.clone(), id, HEADROOM + VXLAN_V4_OVERHEAD);
                tmpl.write(&mut mem.buf_mut(id)[HEADROOM..], dst_mac, vtep, tn.vni.get(), src_port, len);
                out.send(UPLINK, Desc::new(id, len + VXLAN_V4_OVERHEAD));
                sent += 1;
            }
        }
    }
    if sent == 0 && tn.ports.iter().all(|&p| p == exclude) && (!remote || tn.vteps.is_empty()) {
        count_drop(out.stats, out.ingress, out.tenant, DropReason::NoTenantPorts);
    }
    out.free.free(d.id);
}
