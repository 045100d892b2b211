//! The control server inside xvsd: carries out what the control plane ([`super::plane`])
//! plans for each request, all-or-nothing (the host's checks and new ports first, then the
//! store, then the cores, then the removed ports), follows VM ports' interfaces, answers
//! queries from the running daemon and serves the control socket.
//!
//! May depend on: control::plane, explain, pcapng and proto, capture, cores (core messages, reports),
//! preflight, io, store, tables, stats, types. Never on daemon or metrics.

use super::explain;
use super::pcapng::{self, Session, Slot};
use super::plane::{self, Apply, CapturePlan, FdbPlan, Plan, Plane};
use super::proto::reply::{
    self, Done, FdbApplied, PortInfo, QosShow, QosTenant, QosTenantCore, Reply, Status, TenantInfo,
};
use super::proto::{self, Command, Error, ErrorKind};
use crate::config::Config;
use crate::cores::{CoreMsg, CoreReport, Cores, PortStatus, Snapshot};
use crate::fastpath::FastView;
use crate::io::afxdp::QueueSet;
use crate::io::netdev;
use crate::io::packet::PacketPort;
use crate::io::ports::IoPort;
use crate::io::xdp::{Attached, Role};
use crate::pipeline::Change;
use crate::stats::Counters;
use crate::store::Store;
use crate::tables::{Port, PortKind, Tables};
use crate::types::{PortId, mac_str};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_common::Counter;

/// Options beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where to write the status and counters as JSON, refreshed while running.
    pub stats_file: Option<PathBuf>,
    /// Force AF_XDP copy mode even where zero-copy would work.
    pub force_copy: bool,
    /// Config path, for status.
    pub config_path: Option<PathBuf>,
    /// Control socket path (`None`: no control socket).
    pub socket: Option<PathBuf>,
    /// Group that may use the control socket.
    pub socket_group: Option<String>,
    /// State file (the desired configuration, kept across restarts).
    pub state: Option<PathBuf>,
    /// Prometheus endpoint (loopback only).
    pub metrics: Option<SocketAddr>,
}

/// The kernel side of one port: its XDP or tc program (the sockets live in the core).
pub struct PortIo {
    /// The attached program.
    pub attached: Attached,
    /// The interface index it was opened on (a recreated interface gets a new one).
    pub ifindex: u32,
    /// AF_XDP, or a packet socket (taps).
    pub io: reply::PortIo,
}

impl PortIo {
    /// Attaches the program for `port` and opens its sockets, one per core it is read on;
    /// returns each core's share. Taps are read through a packet socket that keeps the VM's
    /// offload header (`af_packet`, with fanout by flow hash across cores); every other port
    /// binds one AF_XDP socket per queue, queue `q` on the UMEM of core `q % cores`. A VM
    /// port's interface is set up (xvs owns it, as a bridge port would be).
    pub fn open(
        id: PortId,
        port: &Port,
        t: &Tables,
        cores: &Cores,
        force_copy: bool,
    ) -> anyhow::Result<(PortIo, Vec<IoPort>)> {
        let ifindex = netdev::ifindex(&port.name).ok_or_else(|| anyhow::anyhow!("interface not found"))?;
        let n = cores.cores.len().max(1);
        if matches!(port.kind, PortKind::Vm { .. }) && !netdev::is_up(&port.name) {
            netdev::set_up(&port.name).map_err(|e| anyhow::anyhow!("setting {} up: {e}", port.name))?;
        }
        if matches!(port.kind, PortKind::Vm { .. }) && netdev::is_tap(&port.name) {
            let attached = cores.xdp.attach(&port.name, ifindex, id, Role::VmTap, false)?;
            let fanout = (n > 1).then_some(ifindex as u16);
            let mut per = Vec::new();
            for (k, c) in cores.cores.iter().enumerate() {
                per.push(IoPort::Packet(Box::new(PacketPort::open(&port.name, c.umem.clone(), fanout, k == 0)?)));
            }
            return Ok((PortIo { attached, ifindex, io: reply::PortIo::AfPacket }, per));
        }
        let role = match port.kind {
            PortKind::Uplink => Role::Uplink { vtep_ip: t.underlay.vtep_ip, udp_port: crate::wire::VXLAN_PORT },
            PortKind::Vm { .. } => Role::Vm,
        };
        // The fast path redirects frames into a port only where the kernel transmits them.
        let to = crate::io::links::takes_xdp_frames(ifindex);
        let mut attached = cores.xdp.attach(&port.name, ifindex, id, role, to)?;
        let mut socks: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        for q in 0..netdev::rx_queues(&port.name) {
            let k = q as usize % n;
            let mut s = cores.cores[k].umem.bind(&port.name, q, force_copy)?;
            // Deep fill rings ride out the times a core is not scheduled (measured: a quarter
            // ring lost frames at 85 kpps when two xvsd shared a CPU). The uplink carries every
            // tenant and gets a full ring; VM ports half of one, so a core's UMEM still holds
            // the rings of a dozen ports plus transmit and flood copies.
            let uplink = matches!(port.kind, PortKind::Uplink);
            s.set_fill_target(if uplink { crate::io::afxdp::RING_SIZE } else { crate::io::afxdp::RING_SIZE / 2 });
            attached.register(q, s.fd())?;
            socks[k].push(s);
        }
        // The interface's transmit drops are counted once, by the first core.
        let per = socks
            .into_iter()
            .enumerate()
            .map(|(k, q)| IoPort::Xsk(QueueSet::new(q, (k == 0).then(|| netdev::TxDrops::new(&port.name)))))
            .collect();
        Ok((PortIo { attached, ifindex, io: reply::PortIo::AfXdp }, per))
    }
}

/// A VM port's life as its interface comes and goes.
#[derive(Debug, Clone, Default)]
struct Lifecycle {
    /// Times the interface went away or down while attached.
    lost: u64,
    /// Times it was attached again by itself.
    reattached: u64,
}

/// Everything the daemon's control side owns: the control plane's state and the running
/// daemon's handles (store, ports' programs, cores). Requests are planned by the pure
/// [`Plane`] and carried out here.
pub struct ControlState {
    plane: Plane,
    store: Box<dyn Store>,
    ports_io: HashMap<String, PortIo>,
    /// Per VM port name: how often its interface was lost and came back.
    life: HashMap<String, Lifecycle>,
    /// VM ports detached because an admin set their interface down: the index it had, so the
    /// port waits until that interface is set up again (a new interface is set up by xvs).
    down_at: HashMap<String, u32>,
    cores: Cores,
    opts: Options,
    started: Instant,
    /// Packet captures running (see [`pcapng::MAX_CAPTURES`]).
    captures: Arc<std::sync::atomic::AtomicUsize>,
    /// Ports with a capture running, and how many: they keep their frames in the core.
    captured: std::collections::BTreeMap<PortId, usize>,
    /// The XDP fast path's view of the tables, as written into the maps.
    fast: FastView,
}

/// What a request got: its reply, or why not.
type Outcome = Result<Reply, Error>;

/// A step of carrying a request out failed.
fn failed(e: impl Into<String>) -> Error {
    Error::new(ErrorKind::Failed, e)
}

/// A response to send.
pub type Response = proto::Response<Reply>;

impl ControlState {
    /// The control state of a running xvsd.
    pub fn new(
        desired: Config,
        tables: Arc<Tables>,
        store: Box<dyn Store>,
        ports_io: HashMap<String, PortIo>,
        cores: Cores,
        opts: Options,
    ) -> ControlState {
        ControlState {
            plane: Plane::new(desired, tables),
            store,
            ports_io,
            life: HashMap::new(),
            down_at: HashMap::new(),
            cores,
            opts,
            started: Instant::now(),
            captures: Default::default(),
            captured: Default::default(),
            fast: FastView::default(),
        }
    }

    /// The fast path's view of `t` with this state's captures.
    fn view_of(&self, t: &Tables, enabled: bool) -> FastView {
        FastView::derive(t, enabled, &self.captured.keys().copied().collect())
    }

    /// Writes the fast path's view of `t` (`before`: the meet with the current one, written
    /// before the cores switch; otherwise the view itself, after).
    fn write_fast(&mut self, t: &Tables, view: FastView, before: bool) {
        let tmpl = crate::pipeline::EncapTemplate::new(&t.underlay);
        let max_inner = tmpl.max_inner.min(usize::from(u16::MAX)) as u16;
        let xdp = &self.cores.xdp;
        let r = if before {
            let old = xdp.max_inner();
            xdp.set_underlay(t.underlay.mac, t.underlay.ttl, max_inner.min(old))
                .and_then(|_| xdp.write_view(&self.fast.meet(&view)))
        } else {
            let r = xdp.set_underlay(t.underlay.mac, t.underlay.ttl, max_inner).and_then(|_| xdp.write_view(&view));
            self.fast = view;
            r
        };
        if let Err(e) = r {
            // A map the kernel refused to write: the fast path stops (the core decides all).
            tracing::warn!("XDP fast path tables not written ({e:#}); the fast path is off");
            let _ = xdp.write_view(&FastView::default());
            self.fast = FastView::default();
        }
    }

    /// Every core's report merged, with what the XDP fast path forwarded added to the port
    /// and tenant counters (and counted apart as `fast_rx_packets`/`fast_tx_packets`).
    fn report(&self) -> Option<CoreReport> {
        let mut r = self.cores.report()?;
        let t = self.tables();
        let st = &mut r.stats;
        st.resize(t.ports.len(), t.tenants.len());
        // What the uplink program dropped itself, under the reasons the core gives the same
        // frames (the core never sees them).
        let u = self.cores.xdp.counters(crate::tables::UPLINK);
        let up = &mut st.ports[crate::tables::UPLINK.index()];
        up.drops[crate::pipeline::DropReason::MalformedVxlan as usize] += u[Counter::UplinkMalformedVxlan as usize];
        up.drops[crate::pipeline::DropReason::OuterFragment as usize] += u[Counter::UplinkOuterFragment as usize];
        for (id, p) in t.live_ports() {
            let PortKind::Vm { tenant, .. } = p.kind else { continue };
            if !self.ports_io.contains_key(&p.name) {
                continue;
            }
            let c = self.cores.xdp.counters(id);
            let k = |x: Counter| c[x as usize];
            let (enc, enc_in, enc_out) =
                (k(Counter::FastEncapPackets), k(Counter::FastEncapBytesIn), k(Counter::FastEncapBytesOut));
            let (dec, dec_in, dec_out) =
                (k(Counter::FastDecapPackets), k(Counter::FastDecapBytesIn), k(Counter::FastDecapBytesOut));
            let vm = &mut st.ports[id.index()];
            vm.rx_packets += enc;
            vm.rx_bytes += enc_in;
            vm.fast_rx_packets += enc;
            vm.tx_packets += dec;
            vm.tx_bytes += dec_out;
            vm.fast_tx_packets += dec;
            vm.drops[crate::pipeline::DropReason::KernelTxDropped as usize] += k(Counter::FastRedirectFailed);
            let up = &mut st.ports[crate::tables::UPLINK.index()];
            up.tx_packets += enc;
            up.tx_bytes += enc_out;
            up.fast_tx_packets += enc;
            up.rx_packets += dec;
            up.rx_bytes += dec_in;
            up.fast_rx_packets += dec;
            let tc = &mut st.tenants[tenant.index()];
            tc.rx_packets += enc + dec;
            tc.rx_bytes += enc_in + dec_in;
            tc.tx_packets += enc + dec;
            tc.tx_bytes += enc_out + dec_out;
            tc.fast_rx_packets += enc + dec;
            tc.fast_tx_packets += enc + dec;
        }
        Some(r)
    }

    /// Writes the fast path's first view (after the cores started).
    pub fn start_fast_path(&mut self) {
        let t = Arc::clone(self.tables());
        let view = self.view_of(&t, self.plane.desired().daemon.xdp_fast_path);
        self.write_fast(&t, view, false);
    }

    /// The fast path's view changed without a table change (a capture started or ended).
    fn refresh_fast(&mut self) {
        let t = Arc::clone(self.tables());
        let view = self.view_of(&t, self.plane.desired().daemon.xdp_fast_path);
        self.write_fast(&t, view.clone(), true);
        self.write_fast(&t, view, false);
    }

    /// Checks again, for the uplink and every AF_XDP VM port, whether the kernel transmits
    /// frames redirected into it in XDP (a veth does only while its peer runs XDP or GRO,
    /// which can come and go): the fast path into it follows.
    pub fn recheck_peers(&mut self) {
        for (id, p) in self.tables().live_ports() {
            let Some(io) = self.ports_io.get(&p.name) else { continue };
            if io.io != reply::PortIo::AfXdp {
                continue;
            }
            let to = crate::io::links::takes_xdp_frames(io.ifindex);
            if self.cores.xdp.set_takes_xdp(id, to) {
                tracing::info!(port = %p.name, to, "XDP transmit on the port changed: the fast path into it follows");
            }
        }
    }

    /// A capture on `port` ended.
    pub fn end_capture(&mut self, port: PortId) {
        if let Some(n) = self.captured.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.captured.remove(&port);
            }
        }
        self.refresh_fast();
    }

    /// The whole desired configuration, static FDB entries included (sorted by MAC).
    pub fn materialize(&self) -> Config {
        self.plane.materialize()
    }

    fn tables(&self) -> &Arc<Tables> {
        self.plane.tables()
    }

    /// Follows VM ports' interfaces, on every link event (`names`: the interfaces the events
    /// were about; empty: check every port). A port whose interface went away, was recreated
    /// (new index) or was set down is detached and waits; a waiting port whose interface is
    /// there is attached again, with no command. Other ports keep forwarding throughout.
    pub fn reconcile(&mut self, names: &[String]) {
        let t = Arc::clone(self.tables());
        let mut detach = Vec::new();
        let mut opened = Vec::new();
        let mut attach: Vec<Vec<(PortId, IoPort)>> = (0..self.cores.cores.len()).map(|_| Vec::new()).collect();
        for (id, p) in t.live_ports() {
            if !matches!(p.kind, PortKind::Vm { .. }) || (!names.is_empty() && !names.contains(&p.name)) {
                continue;
            }
            let now = netdev::ifindex(&p.name);
            let up = now.is_some() && netdev::is_up(&p.name);
            let attached = self.ports_io.get(&p.name).map(|io| io.ifindex);
            if attached.is_some() && (attached != now || !up) {
                detach.push(id);
                self.ports_io.remove(&p.name);
                self.life.entry(p.name.clone()).or_default().lost += 1;
                if let (Some(i), false) = (now, up) {
                    self.down_at.insert(p.name.clone(), i);
                }
                tracing::info!(port = %p.name, "interface gone, recreated or down: port waiting");
            }
            let Some(index) = now else { continue };
            if self.ports_io.contains_key(&p.name) || (!up && self.down_at.get(&p.name) == Some(&index)) {
                continue;
            }
            match PortIo::open(id, p, &t, &self.cores, self.opts.force_copy) {
                Ok((io, sets)) => {
                    for (k, s) in sets.into_iter().enumerate() {
                        attach[k].push((id, s));
                    }
                    opened.push((p.name.clone(), io));
                    self.down_at.remove(&p.name);
                    self.life.entry(p.name.clone()).or_default().reattached += 1;
                    tracing::info!(port = %p.name, ifindex = index, "interface is back: port attached");
                }
                Err(e) => tracing::warn!(port = %p.name, "cannot attach yet: {e:#}"),
            }
        }
        if detach.is_empty() && opened.is_empty() {
            return;
        }
        let sent = self.cores.send_all_and_wait(|k, done| CoreMsg::Update {
            tables: Arc::clone(&t),
            change: Change::default(),
            attach: std::mem::take(&mut attach[k]),
            detach: detach.clone(),
            done,
        });
        if let Err(e) = sent {
            tracing::warn!("port lifecycle change not confirmed: {e}");
        }
        self.ports_io.extend(opened);
    }

    /// Detaches every XDP program (at shutdown, after the core closed the sockets).
    pub fn detach_all(&mut self) {
        self.ports_io.clear();
    }

    /// Takes a configuration derived from the shared store: planned and carried out as a
    /// command's would be, except that it is not written back.
    pub fn apply_from_store(&mut self, cfg: Config) -> Result<(), String> {
        match self.plane.plan_desired(cfg) {
            Ok(Plan::Apply(a)) => self.apply(*a, false).map(|_| ()).map_err(|e| e.message),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Handles one command.
    pub fn handle(&mut self, cmd: Command) -> Response {
        if let Some(url) = self.store.distributed()
            && matches!(
                cmd,
                Command::VtepAdd { .. } | Command::VtepDel { .. } | Command::FdbAdd { .. } | Command::FdbDel { .. }
            )
        {
            return Response::err(Error::new(
                ErrorKind::Refused,
                format!(
                    "{}: with store {url} a tenant's VTEPs and static FDB entries follow the store's hosts and ports",
                    cmd.name()
                ),
            ));
        }
        let done = match self.plane.plan(cmd) {
            Ok(Plan::Apply(a)) => self.apply(*a, true),
            Ok(Plan::Fdb(f)) => self.fdb_change(*f),
            Ok(Plan::Answer(v)) => Ok(v),
            Ok(Plan::Read(r)) => self.read(r),
            Err(e) => Err(Error::new(ErrorKind::Refused, e)),
        };
        match done {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e),
        }
    }

    /// Carries out a whole-configuration change entirely or not at all: the host's checks
    /// and the new ports first (if one fails, nothing has changed yet), then the store, then
    /// the cores, then the removed ports. `store`: write it to the store (not when it came
    /// from there).
    fn apply(&mut self, a: Apply, store: bool) -> Outcome {
        crate::preflight::host_checks(&a.config, false)
            .map_err(|e| Error::new(ErrorKind::Refused, format!("{e:#}")))?;
        let mut opened = Vec::new();
        let mut attach: Vec<Vec<(PortId, IoPort)>> = (0..self.cores.cores.len()).map(|_| Vec::new()).collect();
        for (id, p) in a.tables.live_ports() {
            if self.ports_io.contains_key(&p.name) {
                continue;
            }
            if matches!(p.kind, PortKind::Vm { .. }) && netdev::ifindex(&p.name).is_none() {
                continue; // configured, waiting for its interface (see `reconcile`)
            }
            match PortIo::open(id, p, &a.tables, &self.cores, self.opts.force_copy) {
                Ok((io, sets)) => {
                    opened.push((p.name.clone(), io));
                    for (k, s) in sets.into_iter().enumerate() {
                        attach[k].push((id, s));
                    }
                }
                Err(e) => return Err(failed(format!("port {:?}: {e:#}", p.name))),
            }
        }
        if store {
            self.store.save(&a.config).map_err(|e| failed(format!("saving state: {e:#}")))?;
        }
        let detach: Vec<PortId> = a.removed.iter().map(|(id, _)| *id).collect();
        let view = self.view_of(&a.tables, a.config.daemon.xdp_fast_path);
        let tables = Arc::clone(&a.tables);
        for p in &a.change.reset_ports {
            self.cores.xdp.clear_counters(Some(*p));
        }
        self.write_fast(&tables, view.clone(), true);
        let live = self
            .cores
            .send_all_and_wait(|k, done| CoreMsg::Update {
                tables: Arc::clone(&a.tables),
                change: a.change.clone(),
                attach: std::mem::take(&mut attach[k]),
                detach: detach.clone(),
                done,
            })
            .is_ok();
        for (_, name) in &a.removed {
            self.ports_io.remove(name);
        }
        self.ports_io.extend(opened);
        self.plane.commit_apply(a);
        self.write_fast(&tables, view, false);
        if !live {
            return Err(failed("stored, but the forwarding core did not confirm the change within 5 s"));
        }
        Ok(Reply::Done(Done::Applied))
    }

    /// Carries out a static FDB change: published to the cores and made durable at the same
    /// time; if storing fails the cores get the inverse and the change is refused.
    fn fdb_change(&mut self, f: FdbPlan) -> Outcome {
        let t0 = Instant::now();
        let tables = Arc::clone(self.tables());
        let old_view = self.fast.clone();
        let mut view = old_view.clone();
        view.apply_fdb(&tables, &f.add, &f.del);
        self.write_fast(&tables, view.clone(), true);
        let waits = self
            .cores
            .send_all(|_, done| CoreMsg::Fdb { add: f.add.clone(), del: f.del.clone(), done })
            .map_err(failed)?;
        let saved = {
            let (plane, mut after) = (&self.plane, None);
            let mut current = || after.get_or_insert_with(|| plane.after_fdb(&f)).clone();
            self.store.log(&f.record, &mut current)
        };
        let live = Cores::wait(waits).is_ok();
        let live_us = t0.elapsed().as_micros() as u64;
        if let Err(e) = saved {
            let _ = self.cores.send_all_and_wait(|_, done| CoreMsg::Fdb {
                add: f.undo_add.clone(),
                del: f.undo_del.clone(),
                done,
            });
            self.write_fast(&tables, old_view, false);
            return Err(failed(format!("saving state: {e:#} (change rolled back)")));
        }
        self.plane.commit_fdb(f);
        self.write_fast(&tables, view, false);
        if !live {
            return Err(failed("stored, but the forwarding core did not confirm the change within 5 s"));
        }
        Ok(Reply::FdbApplied(FdbApplied { applied: true, live_us }))
    }

    /// Answers a query from the running daemon.
    fn read(&self, r: plane::Read) -> Outcome {
        let gone = || failed("it was removed meanwhile");
        match r {
            plane::Read::Status => Ok(Reply::Status(Box::new(self.status()))),
            plane::Read::TenantList => Ok(Reply::Tenants(
                self.tables().live_tenants().filter_map(|(id, _)| self.tenant_info(id.index())).collect(),
            )),
            plane::Read::TenantShow(id) => Ok(Reply::Tenant(self.tenant_info(id.index()).ok_or_else(gone)?)),
            plane::Read::PortList => {
                Ok(Reply::Ports(self.tables().live_ports().filter_map(|(id, _)| self.port_info(id)).collect()))
            }
            plane::Read::PortShow(id) => Ok(Reply::Port(self.port_info(id).ok_or_else(gone)?)),
            plane::Read::QosShow => Ok(Reply::Qos(self.qos_show())),
            plane::Read::FdbShow(id) => {
                // The core copies its entries into room made here and the rows are rendered
                // here: a dump costs the forwarding thread one pass over the table.
                let t = self.tables();
                let room = 2 * t.fdb_capacity as usize + t.static_fdb.len();
                let (tx, rx) = crossbeam::channel::bounded(1);
                self.cores
                    .send(0, CoreMsg::FdbDump { tenant: id, buf: Vec::with_capacity(room), reply: tx })
                    .map_err(failed)?;
                let (rows, tables, now) =
                    rx.recv_timeout(Duration::from_secs(5)).map_err(|_| failed("forwarding core did not answer"))?;
                Ok(Reply::Fdb(explain::fdb_rows(&tables, &rows, now)))
            }
            plane::Read::Stats => Ok(Reply::Stats(self.snapshot().map(Box::new))),
            plane::Read::StatsClear => {
                for k in 0..self.cores.cores.len() {
                    self.cores.send(k, CoreMsg::ClearStats).map_err(failed)?;
                }
                self.cores.xdp.clear_counters(None);
                Ok(Reply::Done(Done::Cleared))
            }
            plane::Read::Capture(_) => Err(Error::new(
                ErrorKind::Refused,
                "capture streams packets on a connection of its own; it cannot run here",
            )),
            plane::Read::Trace(port, frame) => {
                // The core only decides (one frame); the explanation is written here.
                let (tx, rx) = crossbeam::channel::bounded(1);
                self.cores.send(0, CoreMsg::Trace { port, frame: frame.clone(), reply: tx }).map_err(failed)?;
                let facts =
                    rx.recv_timeout(Duration::from_secs(5)).map_err(|_| failed("forwarding core did not answer"))?;
                Ok(Reply::Trace(explain::trace(&facts, port, &frame)))
            }
        }
    }

    /// Starts a packet capture: checks the request, then gives every core a tap on the port
    /// with a ring of its own. The returned session streams what they capture
    /// ([`Session::stream`]), without this state's lock.
    pub fn start_capture(&mut self, cmd: Command) -> Result<Session, Error> {
        let p: CapturePlan = match self.plane.plan(cmd) {
            Ok(Plan::Read(plane::Read::Capture(p))) => p,
            Ok(_) => return Err(Error::new(ErrorKind::Refused, "not a capture request")),
            Err(e) => return Err(Error::new(ErrorKind::Refused, e)),
        };
        let slot = Slot::take(&self.captures).ok_or_else(|| {
            let m = format!("{} captures are running already (at most that many at once)", pcapng::MAX_CAPTURES);
            Error::new(ErrorKind::Busy, m)
        })?;
        // The port's frames stay in the core while it is captured (the core is what taps).
        *self.captured.entry(p.port).or_default() += 1;
        self.refresh_fast();
        let mut rings = Vec::new();
        for k in 0..self.cores.cores.len() {
            let ring = crate::capture::Ring::new(crate::capture::RING_RECORDS, p.snaplen);
            let tap = crate::capture::Tap::new(p.port, p.tenant.as_ref().map(|t| t.0), Arc::clone(&ring), 0);
            self.cores.send(k, CoreMsg::Capture { tap }).map_err(failed)?;
            rings.push(ring);
        }
        let started = reply::CaptureStarted {
            port: p.name,
            tenant: p.tenant.map(|t| t.1),
            snaplen: p.snaplen,
            cores: rings.len(),
            copy_limit_bps: crate::capture::CAPTURE_RATE_BPS,
        };
        tracing::info!(port = %started.port, tenant = ?started.tenant, "packet capture started");
        Ok(Session {
            started,
            rings,
            tables: Arc::clone(self.tables()),
            port: p.port,
            count: p.count,
            duration: p.duration_ms.map(Duration::from_millis),
            slot,
        })
    }

    fn qos_show(&self) -> QosShow {
        let rep = self.report();
        let tenants = self
            .tables()
            .live_tenants()
            .map(|(id, t)| {
                let m = rep.as_ref().and_then(|r| r.qos.iter().find(|q| q.tenant == id.0));
                let per_core = rep
                    .as_ref()
                    .filter(|r| r.qos_per_core.len() > 1)
                    .map(|r| {
                        r.qos_per_core
                            .iter()
                            .filter_map(|(cpu, _, rows)| {
                                let q = rows.iter().find(|q| q.tenant == id.0)?;
                                Some(QosTenantCore {
                                    cpu: *cpu,
                                    guarantee_bps: q.guarantee_bps,
                                    limit_bps: q.limit_bps,
                                    rate_bps: q.rate_bps,
                                    backlog: q.stats.backlog,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                QosTenant {
                    per_core,
                    tenant: t.name.clone(),
                    vni: t.vni.get(),
                    guarantee_bps: t.qos.guarantee,
                    limit_bps: t.qos.limit,
                    weight: t.qos.weight,
                    rate_bps: m.map(|m| m.rate_bps),
                    sent_bytes: m.map(|m| m.stats.bytes),
                    backlog: m.map(|m| m.stats.backlog),
                    drops: m.map(|m| m.stats.drops),
                }
            })
            .collect();
        let per_core = match (&rep, self.tables().underlay.rate) {
            (Some(r), Some(_)) if r.qos_per_core.len() > 1 => {
                r.qos_per_core.iter().map(|(cpu, link, _)| (*cpu, *link)).collect()
            }
            _ => Vec::new(),
        };
        QosShow { link_bps: self.tables().underlay.rate, tenants, per_core }
    }

    fn counters_of_tenant(&self, idx: usize) -> Option<reply::Counters> {
        self.report()?.stats.tenants.get(idx).map(Counters::to_reply)
    }

    fn counters_of_port(&self, idx: usize) -> Option<reply::Counters> {
        self.report()?.stats.ports.get(idx).map(Counters::to_reply)
    }

    fn tenant_info(&self, idx: usize) -> Option<TenantInfo> {
        let t = self.tables().tenants.get(idx).and_then(Option::as_ref)?;
        Some(TenantInfo {
            name: t.name.clone(),
            vni: t.vni.get(),
            mac_limit: t.mac_limit,
            ports: t.ports.iter().filter_map(|p| self.tables().port(*p).map(|x| x.name.clone())).collect(),
            vteps: t.vteps.iter().map(|v| v.to_string()).collect(),
            static_fdb: self.plane.static_entries(&t.name),
            counters: self.counters_of_tenant(idx),
        })
    }

    /// A port's status; `rep` is the merged core report (merged once by the caller).
    fn port_status(&self, id: PortId, rep: Option<&CoreReport>) -> Option<PortStatus> {
        let p = self.tables().port(id)?;
        let modes =
            rep.and_then(|r| r.afxdp.iter().find(|(i, _)| *i == id.0).map(|(_, m)| m.clone())).unwrap_or_default();
        Some(match &p.kind {
            PortKind::Uplink => PortStatus {
                name: p.name.clone(),
                kind: reply::PortKind::Uplink,
                tenant: None,
                mac: Some(mac_str(&self.tables().underlay.mac)),
                ips: vec![self.tables().underlay.vtep_ip.to_string()],
                afxdp_mode: modes,
                xdp_mode: self.ports_io.get(&p.name).map(|io| io.attached.mode),
                state: self.port_state(&p.name),
                io: self.ports_io.get(&p.name).map(|io| io.io),
                lost: 0,
                reattached: 0,
            },
            PortKind::Vm { tenant, mac, ipv4, ipv6 } => PortStatus {
                name: p.name.clone(),
                kind: reply::PortKind::Vm,
                tenant: self.tables().tenant(*tenant).map(|t| t.name.clone()),
                mac: Some(mac_str(mac)),
                ips: ipv4.iter().map(|a| a.to_string()).chain(ipv6.iter().map(|a| a.to_string())).collect(),
                afxdp_mode: modes,
                xdp_mode: self.ports_io.get(&p.name).map(|io| io.attached.mode),
                state: self.port_state(&p.name),
                io: self.ports_io.get(&p.name).map(|io| io.io),
                lost: self.life.get(&p.name).map_or(0, |l| l.lost),
                reattached: self.life.get(&p.name).map_or(0, |l| l.reattached),
            },
        })
    }

    fn port_state(&self, name: &str) -> reply::PortState {
        if self.ports_io.contains_key(name) { reply::PortState::Attached } else { reply::PortState::Waiting }
    }

    fn port_info(&self, id: PortId) -> Option<PortInfo> {
        let status = self.port_status(id, self.report().as_ref())?;
        Some(PortInfo { status, counters: self.counters_of_port(id.index()) })
    }

    fn status(&self) -> Status {
        let rep = self.report();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: proto::VERSION,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            uplink: self.tables().underlay.interface.clone(),
            vtep_ip: self.tables().underlay.vtep_ip.to_string(),
            underlay_mtu: self.tables().underlay.mtu,
            cores: self.plane.desired().daemon.cores.clone(),
            config: self.opts.config_path.clone(),
            state: self.store.describe(),
            ports: self.tables().live_ports().filter_map(|(id, _)| self.port_status(id, rep.as_ref())).collect(),
            tenants: self.tables().live_tenants().count(),
            core: rep.as_ref().map(|r| r.core.clone()),
            per_core: rep.as_ref().map(|r| r.per_core.clone()),
        }
    }

    /// Status and counters (once the core has reported).
    pub fn snapshot(&self) -> Option<Snapshot> {
        let r = self.report()?;
        Some(Snapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            config: self.opts.config_path.clone(),
            state: self.store.describe(),
            uplink: self.tables().underlay.interface.clone(),
            cores: self.plane.desired().daemon.cores.clone(),
            ports: (0..self.tables().ports.len()).map(|i| self.port_status(PortId(i as u16), Some(&r))).collect(),
            tenants: self.tables().tenants.iter().map(|t| t.as_ref().map(|t| (t.name.clone(), t.vni.get()))).collect(),
            stats: r.stats.to_reply(),
            host: r.host,
            xdp: self
                .tables()
                .live_ports()
                .filter_map(|(_, p)| self.ports_io.get(&p.name).map(|io| (p.name.clone(), io)))
                .map(|(name, io)| {
                    let c = io.attached.counters();
                    (name, Counter::ALL.iter().map(|k| (k.name().to_string(), c[*k as usize])).collect())
                })
                .collect(),
            neighbors: r
                .neighbors
                .iter()
                .map(|(ip, m)| (ip.to_string(), m.map_or_else(|| "incomplete".to_string(), |m| mac_str(&m))))
                .collect(),
            core: r.core,
            qos: self.tables().underlay.rate.map(|l| (l, r.qos)),
            qos_per_core: if r.qos_per_core.len() > 1 && self.tables().underlay.rate.is_some() {
                r.qos_per_core
            } else {
                Vec::new()
            },
            per_core: r.per_core,
        })
    }
}

/// Control connections served at once; one more is answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves the control socket at `path` (mode 0660, owner root, group `group`).
pub fn listen(path: &Path, group: Option<&str>, state: Arc<Mutex<ControlState>>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!("another xvsd is listening on {}", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path).map_err(|e| anyhow::anyhow!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(g) = group {
        let gid = nix::unistd::Group::from_name(g)?
            .ok_or_else(|| anyhow::anyhow!("unknown group {g:?} for the control socket"))?;
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(gid.gid))?;
    }
    std::thread::Builder::new().name("xvs-control".into()).spawn(move || {
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            // One thread per connection, at most MAX_CONNECTIONS of them.
            if open.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= MAX_CONNECTIONS {
                open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                let busy = format!("too many control connections (at most {MAX_CONNECTIONS}); try again");
                let _ = reply(&mut conn, &Response::err(Error::new(ErrorKind::Busy, busy)));
                continue;
            }
            let (state, open) = (Arc::clone(&state), Arc::clone(&open));
            let spawned = std::thread::Builder::new().name("xvs-conn".into()).spawn({
                let open = Arc::clone(&open);
                move || {
                    serve_conn(conn, &state);
                    open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                }
            });
            if spawned.is_err() {
                open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
    })?;
    Ok(())
}

fn serve_conn(conn: UnixStream, state: &Mutex<ControlState>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(300)));
    let Ok(mut out) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let n = match (&mut reader).take(proto::MAX_REQUEST as u64 + 1).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let complete = buf.last() == Some(&b'\n');
        if !complete && n > proto::MAX_REQUEST {
            let big = format!("request too large (more than {} bytes)", proto::MAX_REQUEST);
            let _ = reply(&mut out, &Response::err(Error::new(ErrorKind::Malformed, big)));
            return;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        let resp = match proto::parse_request(&buf) {
            Ok(req) if matches!(req.cmd, Command::Capture { .. }) => {
                // A capture owns the connection: its reply line, then the pcapng stream.
                capture(state, req.cmd, &mut out);
                return;
            }
            Ok(req) => handle_guarded(state, req.cmd),
            Err(e) => Response::err(e),
        };
        if reply(&mut out, &resp).is_err() || !complete {
            return;
        }
    }
}

/// Starts a capture under the state's lock and streams it without.
fn capture(state: &Mutex<ControlState>, cmd: Command, out: &mut UnixStream) {
    let r = guarded(state, "capture", |s| match s.start_capture(cmd) {
        Ok(session) => proto::Response::ok(session),
        Err(e) => proto::Response::err(e),
    });
    let Some(session) = r.result else {
        let e = Error::new(r.kind.unwrap_or(ErrorKind::Internal), r.error.unwrap_or_default());
        let _ = reply(out, &Response::err(e));
        return;
    };
    if reply(out, &Response::ok(Reply::Capture(session.started.clone()))).is_err() {
        return;
    }
    let port = session.started.port.clone();
    let id = session.port;
    match session.stream(out) {
        Ok(s) => tracing::info!(%port, written = s.written, missed = s.lost, "packet capture ended"),
        Err(e) => tracing::info!(%port, "packet capture ended: {e}"),
    }
    let _ = guarded(state, "capture end", |s| {
        s.end_capture(id);
        proto::Response::ok(())
    });
}

/// Runs one command. A handler that panics fails that request only: the panic is caught,
/// logged and answered as an internal error, and the state's lock is taken back from the
/// poison the panic left, so every later request, the stats file, /metrics and shutdown
/// go on as before. (A handler validates a change before it applies any of it; a panic
/// there leaves the previous state in force. One during the apply is logged as an error.)
pub fn handle_guarded(state: &Mutex<ControlState>, cmd: Command) -> Response {
    let what = cmd.name();
    guarded(state, &what, |s| s.handle(cmd))
}

/// Runs `f` on the locked `state`, turning a panic into an error response for `what`.
fn guarded<T, R>(state: &Mutex<T>, what: &str, f: impl FnOnce(&mut T) -> proto::Response<R>) -> proto::Response<R> {
    let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut s))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|m| (*m).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(command = %what, "control handler failed: {msg}");
            let msg = format!("internal error in {what}: {msg} (the request was not applied; please report it)");
            proto::Response::err(Error::new(ErrorKind::Internal, msg))
        }
    }
}

/// The control state, even if a panicking thread held it (see `handle_guarded`).
pub fn lock_state(state: &Mutex<ControlState>) -> std::sync::MutexGuard<'_, ControlState> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn reply(out: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line =
        serde_json::to_vec(r).unwrap_or_else(|_| br#"{"version":1,"ok":false,"error":"unserializable"}"#.to_vec());
    line.push(b'\n');
    out.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_handler_fails_its_request_only() {
        let state = Mutex::new(1u32);
        let r: proto::Response<u32> = guarded(&state, "tenant_add", |_| panic!("boom"));
        assert!(!r.ok);
        assert_eq!(r.kind, Some(ErrorKind::Internal));
        let e = r.error.unwrap();
        assert!(e.contains("internal error in tenant_add: boom"), "{e}");
        // the lock is usable again and the state is what it was
        let r = guarded(&state, "status", |s| proto::Response::ok(*s));
        assert!(r.ok);
        assert_eq!(r.result, Some(1));
    }
}
