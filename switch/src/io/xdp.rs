//! The XDP programs and the tap ingress program (aya): one program object per daemon, shared
//! by every interface it attaches. Each attached interface gets a slot (its sockets in the
//! XSKMAP, its counters, its VM-port settings and its entry in the transmit devmap);
//! [`XdpObject::write_view`] writes the fast path's tables ([`FastView`]) into the maps.
#![allow(unsafe_code)]

use crate::fastpath::FastView;
use crate::tables::UPLINK;
use crate::types::{PortId, TenantId};
use crate::wire::MacAddr;
use aya::Ebpf;
use aya::maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, PerCpuValues, XskMap};
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use xvs_common::{
    Counter, FAST_DECAP, FAST_ENCAP, MAP_COUNTERS, MAP_FWD, MAP_LOCAL, MAP_NEIGH, MAP_REMOTE, MAP_SLOTS, MAP_TX_PORTS,
    MAP_UPLINK_CONF, MAP_VM_CONF, MAP_VNI, MAP_VTEPS, MAP_XSKS, MAX_QUEUES, MAX_SLOTS, MacKey, NeighMac, PROG_FWD,
    PROG_PASS, PROG_UPLINK, PROG_VM, PROG_VM_TC, Remote, UplinkConf, VM_FAST_FROM, VM_FAST_TO, VM_MAX_IPV4, VmConf,
    VtepKey,
};

/// The XDP object built by build.rs.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xvs-xdp"));

/// The program object's bytes (for tools that load it themselves).
pub fn object_bytes() -> &'static [u8] {
    XDP_OBJECT
}

/// Attaches the pass-everything program to `ifname` (the far end of a veth, so that it takes
/// frames redirected in XDP); it stays attached while the returned object lives.
pub fn attach_pass(ifname: &str) -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| anyhow::anyhow!("loading XDP object: {e}"))?;
    let prog: &mut Xdp = ebpf.program_mut(PROG_PASS).ok_or_else(|| anyhow::anyhow!("no {PROG_PASS}"))?.try_into()?;
    prog.load()?;
    attach_xdp(&mut ebpf, PROG_PASS, ifname)?;
    Ok(ebpf)
}

/// Attaches the benchmarks' plain XDP forwarder to each `(from, to)` pair's `from`: every
/// frame received there is redirected out of `to` (no switching, no encapsulation). Stays
/// attached while the returned object lives.
pub fn attach_forwarder(pairs: &[(String, String)]) -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| anyhow::anyhow!("loading XDP object: {e}"))?;
    {
        let mut fwd: DevMapHash<&mut MapData> =
            DevMapHash::try_from(ebpf.map_mut(MAP_FWD).ok_or_else(|| anyhow::anyhow!("no {MAP_FWD}"))?)?;
        for (from, to) in pairs {
            let (Some(a), Some(b)) = (crate::io::netdev::ifindex(from), crate::io::netdev::ifindex(to)) else {
                anyhow::bail!("no interface {from:?} or {to:?}");
            };
            fwd.insert(a, b, None, 0)?;
        }
    }
    let prog: &mut Xdp = ebpf.program_mut(PROG_FWD).ok_or_else(|| anyhow::anyhow!("no {PROG_FWD}"))?.try_into()?;
    prog.load()?;
    for (from, _) in pairs {
        attach_xdp(&mut ebpf, PROG_FWD, from)?;
    }
    Ok(ebpf)
}

/// Which program an interface gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The uplink, with our VTEP IP.
    Uplink {
        /// Our VTEP IPv4 address.
        vtep_ip: Ipv4Addr,
        /// VXLAN UDP port.
        udp_port: u16,
    },
    /// A VM port read through AF_XDP (veth).
    Vm,
    /// A tap VM port read through a packet socket: tc ingress keeps its frames from the host.
    VmTap,
}

pub use xvs_proto::reply::AttachMode;

/// The daemon's program object: programs loaded once, maps shared by every interface.
pub struct XdpObject {
    inner: Mutex<Inner>,
}

struct Inner {
    ebpf: Ebpf,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    uplink_conf: Array<MapData, UplinkConf>,
    slots: HashMap<MapData, u32, u32>,
    vm_conf: Array<MapData, VmConf>,
    tx: DevMapHash<MapData>,
    vni: HashMap<MapData, u32, u32>,
    vteps: HashMap<MapData, VtepKey, u8>,
    local: HashMap<MapData, MacKey, u32>,
    remote: HashMap<MapData, MacKey, Remote>,
    neigh: HashMap<MapData, [u8; 4], NeighMac>,
    /// Slot in use, by slot.
    used: Vec<bool>,
    /// Port id -> slot of attached ports, and what each slot's interface can do.
    port_slot: BTreeMap<PortId, (u32, Caps)>,
    /// The view last written (what the maps hold).
    written: FastView,
    /// The uplink's settings (the fast-path flags are written with the view).
    uplink: UplinkConf,
    /// What slots a port had before counted (a port's interface can be recreated).
    retired: BTreeMap<PortId, [u64; Counter::COUNT as usize]>,
}

/// What an attached interface allows the fast path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// Read through AF_XDP with the VM program: what the VM sends passes the fast path first.
    pub from: bool,
    /// Takes frames redirected in XDP.
    pub to: bool,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T> {
    let m = ebpf.take_map(name).ok_or_else(|| anyhow::anyhow!("XDP object lacks map {name}"))?;
    T::try_from(m).map_err(|e| anyhow::anyhow!("map {name}: {e}"))
}

fn mac_key(t: TenantId, m: &MacAddr) -> MacKey {
    MacKey { tenant: u32::from(t.0), mac: m.0, pad: [0; 2] }
}

impl XdpObject {
    /// Loads the programs (the kernel's verifier checks them now).
    pub fn load() -> anyhow::Result<Arc<XdpObject>> {
        let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| anyhow::anyhow!("loading XDP object: {e}"))?;
        for name in [PROG_UPLINK, PROG_VM] {
            let prog: &mut Xdp =
                ebpf.program_mut(name).ok_or_else(|| anyhow::anyhow!("XDP object lacks program {name}"))?.try_into()?;
            prog.load().map_err(|e| anyhow::anyhow!("loading XDP program {name}: {e}"))?;
        }
        let tc: &mut SchedClassifier = ebpf
            .program_mut(PROG_VM_TC)
            .ok_or_else(|| anyhow::anyhow!("object lacks program {PROG_VM_TC}"))?
            .try_into()?;
        tc.load().map_err(|e| anyhow::anyhow!("loading tc program {PROG_VM_TC}: {e}"))?;
        let inner = Inner {
            xsks: take(&mut ebpf, MAP_XSKS)?,
            counters: take(&mut ebpf, MAP_COUNTERS)?,
            uplink_conf: take(&mut ebpf, MAP_UPLINK_CONF)?,
            slots: take(&mut ebpf, MAP_SLOTS)?,
            vm_conf: take(&mut ebpf, MAP_VM_CONF)?,
            tx: take(&mut ebpf, MAP_TX_PORTS)?,
            vni: take(&mut ebpf, MAP_VNI)?,
            vteps: take(&mut ebpf, MAP_VTEPS)?,
            local: take(&mut ebpf, MAP_LOCAL)?,
            remote: take(&mut ebpf, MAP_REMOTE)?,
            neigh: take(&mut ebpf, MAP_NEIGH)?,
            ebpf,
            used: vec![false; MAX_SLOTS as usize],
            port_slot: BTreeMap::new(),
            written: FastView::default(),
            uplink: UplinkConf::default(),
            retired: BTreeMap::new(),
        };
        Ok(Arc::new(XdpObject { inner: Mutex::new(inner) }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attaches the program for `role` to `ifname` (index `ifindex`) as port `port`,
    /// natively if the driver can, generically otherwise; `to`: the interface takes frames
    /// redirected in XDP.
    pub fn attach(
        self: &Arc<Self>,
        ifname: &str,
        ifindex: u32,
        port: PortId,
        role: Role,
        to: bool,
    ) -> anyhow::Result<Attached> {
        let mut g = self.lock();
        let inner = &mut *g;
        let slot = inner.free_slot(port, ifname)?;
        // Fresh counters for a fresh slot.
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for c in Counter::ALL {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus])?;
            inner.counters.set(slot * Counter::COUNT + c as u32, zeros, 0)?;
        }
        let (link, mode, caps) = match role {
            Role::VmTap => {
                let prog: &mut SchedClassifier =
                    inner.ebpf.program_mut(PROG_VM_TC).ok_or_else(|| anyhow::anyhow!("no {PROG_VM_TC}"))?.try_into()?;
                let id = prog
                    .attach(ifname, TcAttachType::Ingress)
                    .map_err(|e| anyhow::anyhow!("tc ingress attach to {ifname} refused: {e}"))?;
                // A tap is read through its packet socket, which completes offloads and hands the
                // guest large frames: its frames stay with the core both ways.
                (Link::Tc(id), AttachMode::TcIngress, Caps { from: false, to: false })
            }
            Role::Uplink { vtep_ip, udp_port } => {
                inner.uplink = UplinkConf { vtep_ip: vtep_ip.octets(), udp_port, ..inner.uplink };
                inner.uplink_conf.set(0, inner.uplink, 0)?;
                let (id, mode) = attach_xdp(&mut inner.ebpf, PROG_UPLINK, ifname)?;
                (Link::Xdp(PROG_UPLINK, id), mode, Caps { from: false, to })
            }
            Role::Vm => {
                let (id, mode) = attach_xdp(&mut inner.ebpf, PROG_VM, ifname)?;
                (Link::Xdp(PROG_VM, id), mode, Caps { from: true, to })
            }
        };
        inner.slots.insert(ifindex, slot, 0)?;
        inner.take_slot(port, slot, ifindex, caps)?;
        drop(g);
        Ok(Attached { obj: Arc::clone(self), ifname: ifname.to_string(), ifindex, port, slot, mode, link: Some(link) })
    }

    /// Writes the fast path's view. Call with the meet of the old and new views before the
    /// cores switch tables, and with the new view after (see [`FastView::meet`]).
    pub fn write_view(&self, view: &FastView) -> anyhow::Result<()> {
        let mut g = self.lock();
        let inner = &mut *g;
        let old = std::mem::replace(&mut inner.written, view.clone());
        let flags = inner.flags_for(view);
        // Permissions first when they shrink, last when they grow; then entries the same way.
        if flags != inner.uplink.flags {
            inner.uplink.flags &= flags;
            inner.uplink_conf.set(0, inner.uplink, 0)?;
        }
        let ports: Vec<PortId> = inner.port_slot.keys().copied().collect();
        for p in &ports {
            inner.write_port(*p, view)?;
        }
        for (tn, m) in old.remote.keys().filter(|k| old.remote.get(*k) != view.remote.get(*k)) {
            let _ = inner.remote.remove(&mac_key(*tn, m));
        }
        for (tn, m) in old.local.keys().filter(|k| old.local.get(*k) != view.local.get(*k)) {
            let _ = inner.local.remove(&mac_key(*tn, m));
        }
        for (tn, ip) in old.vteps.difference(&view.vteps) {
            let _ = inner.vteps.remove(&VtepKey { tenant: u32::from(tn.0), ip: ip.octets() });
        }
        for vni in old.vnis.keys().filter(|k| old.vnis.get(*k) != view.vnis.get(*k)) {
            let _ = inner.vni.remove(vni);
        }
        for nh in old.next_hops.difference(&view.next_hops) {
            let _ = inner.neigh.remove(&nh.octets());
        }
        for (vni, tn) in view.vnis.iter().filter(|(k, v)| old.vnis.get(*k) != Some(*v)) {
            inner.vni.insert(vni, u32::from(tn.0), 0)?;
        }
        for (tn, ip) in view.vteps.difference(&old.vteps) {
            inner.vteps.insert(VtepKey { tenant: u32::from(tn.0), ip: ip.octets() }, 1, 0)?;
        }
        for ((tn, m), p) in view.local.iter().filter(|(k, v)| old.local.get(*k) != Some(*v)) {
            let Some((slot, _)) = inner.port_slot.get(p) else { continue };
            inner.local.insert(mac_key(*tn, m), *slot, 0)?;
        }
        for ((tn, m), (vtep, nh)) in view.remote.iter().filter(|(k, v)| old.remote.get(*k) != Some(*v)) {
            inner.remote.insert(mac_key(*tn, m), Remote { vtep: vtep.octets(), next_hop: nh.octets() }, 0)?;
        }
        if flags != inner.uplink.flags {
            inner.uplink.flags = flags;
            inner.uplink_conf.set(0, inner.uplink, 0)?;
        }
        Ok(())
    }

    /// Sets the uplink's MAC, TTL and the largest inner frame (from the tables).
    pub fn set_underlay(&self, mac: MacAddr, ttl: u8, max_inner: u16) -> anyhow::Result<()> {
        let mut g = self.lock();
        g.uplink = UplinkConf { mac: mac.0, ttl, max_inner, ..g.uplink };
        let conf = g.uplink;
        g.uplink_conf.set(0, conf, 0)?;
        Ok(())
    }

    /// Sets whether `port`'s interface takes frames redirected in XDP; true if that changed.
    pub fn set_takes_xdp(&self, port: PortId, to: bool) -> bool {
        let mut g = self.lock();
        let inner = &mut *g;
        let Some((_, caps)) = inner.port_slot.get_mut(&port) else { return false };
        if caps.to == to {
            return false;
        }
        caps.to = to;
        let view = inner.written.clone();
        let _ = inner.write_port(port, &view);
        if port == UPLINK {
            inner.uplink.flags = inner.flags_for(&view);
            let conf = inner.uplink;
            let _ = inner.uplink_conf.set(0, conf, 0);
        }
        true
    }

    /// The largest inner frame the fast path encapsulates now.
    pub fn max_inner(&self) -> u16 {
        self.lock().uplink.max_inner
    }

    /// Records an underlay neighbour's MAC (from the core that resolved it): used only for
    /// next hops the view's remote entries use.
    pub fn set_neighbor(&self, ip: Ipv4Addr, mac: MacAddr) {
        let mut g = self.lock();
        if g.written.next_hops.contains(&ip) {
            let _ = g.neigh.insert(ip.octets(), NeighMac { mac: mac.0, pad: [0; 2] }, 0);
        }
    }

    /// Forgets remote entries a core moved (a frame showed the MAC at another VTEP): the
    /// core decides for them until the next view sets them again. `all`: more moved than
    /// were remembered, so forget every remote entry.
    pub fn forget_remote(&self, moved: &[(TenantId, MacAddr)], all: bool) {
        let mut g = self.lock();
        let inner = &mut *g;
        let keys: Vec<(TenantId, MacAddr)> =
            if all { inner.written.remote.keys().copied().collect() } else { moved.to_vec() };
        for (tn, m) in keys {
            let _ = inner.remote.remove(&mac_key(tn, &m));
            inner.written.remote.remove(&(tn, m));
        }
    }

    /// The counters of `port`, summed over CPUs and over the interfaces it had, by
    /// [`Counter`] index.
    pub fn counters(&self, port: PortId) -> [u64; Counter::COUNT as usize] {
        let g = self.lock();
        let mut out = g.retired.get(&port).copied().unwrap_or_default();
        if let Some((slot, _)) = g.port_slot.get(&port) {
            for (o, v) in out.iter_mut().zip(g.slot_counters(*slot)) {
                *o += v;
            }
        }
        out
    }

    /// Starts `port`'s counters from zero (its id went to a new port), or every port's.
    pub fn clear_counters(&self, port: Option<PortId>) {
        let mut g = self.lock();
        let inner = &mut *g;
        let Ok(cpus) = aya::util::nr_cpus() else { return };
        for (p, (slot, _)) in &inner.port_slot {
            if port.is_some_and(|x| x != *p) {
                continue;
            }
            for c in Counter::ALL {
                if let Ok(z) = PerCpuValues::try_from(vec![0u64; cpus]) {
                    let _ = inner.counters.set(slot * Counter::COUNT + c as u32, z, 0);
                }
            }
        }
        match port {
            Some(p) => {
                inner.retired.remove(&p);
            }
            None => inner.retired.clear(),
        }
    }

    /// Stands `port` in for an interface without attaching anything, for running the
    /// programs on frames with `BPF_PROG_TEST_RUN` ([`XdpObject::run_on`]): the isolation
    /// oracle checks the fast path against the pipeline this way. The port's transmit entry
    /// names the loopback interface (nothing is sent by a test run).
    pub fn stand_in(&self, port: PortId, role: Role, caps: Caps) -> anyhow::Result<()> {
        let mut g = self.lock();
        let inner = &mut *g;
        let slot = inner.free_slot(port, "stand-in")?;
        if let Role::Uplink { vtep_ip, udp_port } = role {
            inner.uplink = UplinkConf { vtep_ip: vtep_ip.octets(), udp_port, ..inner.uplink };
            inner.uplink_conf.set(0, inner.uplink, 0)?;
        }
        inner.take_slot(port, slot, LOOPBACK, caps)
    }

    /// Runs the program of `port` (the uplink's or a VM port's, see [`XdpObject::stand_in`])
    /// once on `frame` as if it arrived there (`BPF_PROG_TEST_RUN`, on the loopback
    /// interface's queue 0): its return code and the frame as it left the program. Nothing
    /// is sent: a redirect only returns `XDP_REDIRECT`.
    pub fn run_on(&self, port: PortId, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        use aya::programs::{TestRun, TestRunOptions};
        let mut g = self.lock();
        let (slot, _) = *g.port_slot.get(&port).ok_or_else(|| anyhow::anyhow!("port {port:?} not stood in"))?;
        g.slots.insert(LOOPBACK, slot, 0)?;
        let prog = if port == UPLINK { PROG_UPLINK } else { PROG_VM };
        let p: &mut Xdp = g.ebpf.program_mut(prog).ok_or_else(|| anyhow::anyhow!("no {prog}"))?.try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex; data_end is the frame's length.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&LOOPBACK.to_ne_bytes());
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }
}

/// The loopback interface's index (in every network namespace).
const LOOPBACK: u32 = 1;

impl Inner {
    /// The slot `port` gets: 0 for the uplink, else the first free one.
    fn free_slot(&self, port: PortId, ifname: &str) -> anyhow::Result<u32> {
        let slot = if port == UPLINK {
            0
        } else {
            (1..MAX_SLOTS).find(|s| !self.used[*s as usize]).ok_or_else(|| {
                anyhow::anyhow!("{ifname}: every one of the {MAX_SLOTS} XDP interface slots is in use")
            })?
        };
        if self.used[slot as usize] {
            anyhow::bail!("{ifname}: XDP slot {slot} is in use by another interface");
        }
        Ok(slot)
    }

    /// Gives `slot` to `port` (transmitting on `tx_ifindex`) and writes what the current view
    /// holds for it: its VM settings, its local MACs, and for the uplink the fast-path flags.
    fn take_slot(&mut self, port: PortId, slot: u32, tx_ifindex: u32, caps: Caps) -> anyhow::Result<()> {
        self.used[slot as usize] = true;
        self.tx.insert(slot, tx_ifindex, None, 0)?;
        self.port_slot.insert(port, (slot, caps));
        let view = self.written.clone();
        self.write_port(port, &view)?;
        if port == UPLINK {
            self.uplink.flags = self.flags_for(&view);
            let conf = self.uplink;
            self.uplink_conf.set(0, conf, 0)?;
        }
        for ((t, m), _) in view.local.iter().filter(|(_, p)| **p == port) {
            self.local.insert(mac_key(*t, m), slot, 0)?;
        }
        Ok(())
    }

    /// The uplink program's fast-path flags for `view`: encapsulation only while the uplink
    /// transmits frames redirected in XDP.
    fn flags_for(&self, view: &FastView) -> u16 {
        let uplink_takes = self.port_slot.get(&UPLINK).is_some_and(|(_, c)| c.to);
        (if view.decap { FAST_DECAP } else { 0 }) | (if view.encap && uplink_takes { FAST_ENCAP } else { 0 })
    }

    fn slot_counters(&self, slot: u32) -> [u64; Counter::COUNT as usize] {
        let mut out = [0u64; Counter::COUNT as usize];
        for c in Counter::ALL {
            if let Ok(v) = self.counters.get(&(slot * Counter::COUNT + c as u32), 0) {
                out[c as usize] = v.iter().sum();
            }
        }
        out
    }

    /// Writes `port`'s VM settings for `view`, limited by what its interface can do.
    fn write_port(&mut self, port: PortId, view: &FastView) -> anyhow::Result<()> {
        let Some((slot, caps)) = self.port_slot.get(&port).copied() else { return Ok(()) };
        let conf = match view.ports.get(&port) {
            Some(vm) => {
                let mut ipv4 = [[0u8; 4]; VM_MAX_IPV4];
                for (d, s) in ipv4.iter_mut().zip(&vm.ipv4) {
                    *d = s.octets();
                }
                let from = vm.from && caps.from && vm.ipv4.len() <= VM_MAX_IPV4;
                let flags = (if from { VM_FAST_FROM } else { 0 }) | (if vm.to && caps.to { VM_FAST_TO } else { 0 });
                VmConf {
                    tenant: u32::from(vm.tenant.0),
                    vni: vm.vni,
                    mac: vm.mac.0,
                    flags,
                    n_ipv4: vm.ipv4.len().min(VM_MAX_IPV4) as u8,
                    ipv4,
                }
            }
            None => VmConf::default(),
        };
        self.vm_conf.set(slot, conf, 0)?;
        Ok(())
    }
}

fn attach_xdp(
    ebpf: &mut Ebpf,
    name: &str,
    ifname: &str,
) -> anyhow::Result<(aya::programs::xdp::XdpLinkId, AttachMode)> {
    let prog: &mut Xdp = ebpf.program_mut(name).ok_or_else(|| anyhow::anyhow!("no {name}"))?.try_into()?;
    match prog.attach(ifname, XdpMode::Driver) {
        Ok(id) => Ok((id, AttachMode::Driver)),
        Err(native) => match prog.attach(ifname, XdpMode::Skb) {
            Ok(id) => Ok((id, AttachMode::Generic)),
            Err(e) => anyhow::bail!("XDP attach to {ifname} refused: {native}; generic mode: {e}"),
        },
    }
}

enum Link {
    Xdp(&'static str, aya::programs::xdp::XdpLinkId),
    Tc(aya::programs::tc::SchedClassifierLinkId),
}

/// A program attached to one interface; dropping it detaches the program and frees the slot.
pub struct Attached {
    obj: Arc<XdpObject>,
    /// Interface name.
    pub ifname: String,
    /// Its index.
    pub ifindex: u32,
    /// The port it serves.
    pub port: PortId,
    slot: u32,
    /// Attach mode.
    pub mode: AttachMode,
    link: Option<Link>,
}

impl Attached {
    /// Steers queue `queue` of the interface to the AF_XDP socket `fd`.
    pub fn register(&mut self, queue: u32, fd: RawFd) -> anyhow::Result<()> {
        if queue >= MAX_QUEUES {
            anyhow::bail!("{}: queue {queue} is beyond the {MAX_QUEUES} an interface can have sockets on", self.ifname);
        }
        let mut g = self.obj.lock();
        // SAFETY: `fd` is an open AF_XDP socket owned by the caller for as long as this
        // program is attached; the map holds its own reference to the socket.
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        g.xsks
            .set(self.slot * MAX_QUEUES + queue, bfd, 0)
            .map_err(|e| anyhow::anyhow!("registering socket for {} queue {queue}: {e}", self.ifname))?;
        Ok(())
    }

    /// The program's counters for this interface, summed over CPUs, by [`Counter`] index.
    pub fn counters(&self) -> [u64; Counter::COUNT as usize] {
        self.obj.counters(self.port)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut g = self.obj.lock();
        let inner = &mut *g;
        // Nothing is redirected to the interface any more, then its program goes.
        let _ = inner.vm_conf.set(self.slot, VmConf::default(), 0);
        let macs: Vec<MacKey> =
            inner.written.local.iter().filter(|(_, p)| **p == self.port).map(|((t, m), _)| mac_key(*t, m)).collect();
        for k in &macs {
            let _ = inner.local.remove(k);
        }
        let _ = inner.tx.remove(self.slot);
        let _ = inner.slots.remove(&self.ifindex);
        for q in 0..MAX_QUEUES {
            let _ = inner.xsks.unset(self.slot * MAX_QUEUES + q);
        }
        match self.link.take() {
            Some(Link::Xdp(name, id)) => {
                if let Some(Ok(p)) = inner.ebpf.program_mut(name).map(<&mut Xdp>::try_from) {
                    let _ = p.detach(id);
                }
            }
            Some(Link::Tc(id)) => {
                if let Some(Ok(p)) = inner.ebpf.program_mut(PROG_VM_TC).map(<&mut SchedClassifier>::try_from) {
                    let _ = p.detach(id);
                }
            }
            None => {}
        }
        let last = inner.slot_counters(self.slot);
        for (r, v) in inner.retired.entry(self.port).or_default().iter_mut().zip(last) {
            *r += v;
        }
        inner.port_slot.remove(&self.port);
        inner.used[self.slot as usize] = false;
    }
}
