//! xvsd: validates the configuration, attaches XDP programs and AF_XDP sockets, runs the
//! forwarding core, serves the control socket, and on SIGINT/SIGTERM detaches everything.

use crate::config::Config;
use crate::control::server::{self, ControlState, PortIo, lock_state};
use crate::datapath::{Core, FdbRow, TraceFacts};
use crate::host::{HostCounters, HostStack};
use crate::io::afxdp::{DEFAULT_UMEM_FRAMES, UmemFrames, Waker, XskMode, wait_readable};
use crate::io::netdev;
use crate::io::ports::IoPort;
use crate::io::xdp::AttachMode;
use crate::neigh::NeighShare;
use crate::pipeline::Change;
use crate::stats::Stats;
use crate::store::{FileStore, Store};
use crate::tables::{FdbDest, Tables};
use crate::types::{PortId, TenantId};
use anyhow::bail;
use crossbeam::channel::{Receiver, Sender};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls with nothing received before the core goes to sleep on its sockets (and at least
/// `poll_after_traffic_us` since the last frame).
const SPIN_POLLS: u32 = 200;
/// The FDB aging sweep runs this often, in a moment with nothing received...
const AGE_EVERY_NS: u64 = 1_000_000_000;
/// ...or after this long whatever the load.
const AGE_LATEST_NS: u64 = 10_000_000_000;
/// Longest sleep, so timers (ARP retries, aging) run.
const MAX_SLEEP_MS: u16 = 50;

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

/// Checks everything that can be checked before touching an interface; returns the tables.
pub fn preflight(cfg: &Config, prev: Option<&Tables>) -> anyhow::Result<Tables> {
    host_checks(cfg, prev.is_none())?;
    let up = &cfg.uplink.interface;
    let tables = cfg.build_after(prev, netdev::mac(up), netdev::mtu(up))?;
    // Frames are not split across buffers: refuse an underlay MTU whose frames would not fit
    // one (the kernel would drop them on receive).
    let cap = crate::io::afxdp::FRAME_CAPACITY;
    if usize::from(tables.underlay.mtu) + crate::wire::ETHERNET_HEADER_LEN > cap {
        bail!(
            "uplink MTU {} does not fit a frame buffer of {cap} bytes (at most {})",
            tables.underlay.mtu,
            cap - crate::wire::ETHERNET_HEADER_LEN
        );
    }
    Ok(tables)
}

/// What `cfg` needs of this host: root, the uplink with the VTEP IP, the cores' CPUs, as
/// many queues on every port as there are cores. `starting`: xvsd is starting (warn about
/// cores outside the CPUs it may use now).
pub fn host_checks(cfg: &Config, starting: bool) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("xvsd must run as root (XDP and AF_XDP need CAP_NET_ADMIN and CAP_BPF)");
    }
    let up = &cfg.uplink.interface;
    if !netdev::exists(up) {
        bail!("uplink interface {up:?} not found");
    }
    // A VM port whose interface is missing is not an error: it waits for its interface (a
    // stopped VM must not keep the host's other VMs off the network).
    let (vtep_ip, _) = cfg.vtep_cidr()?;
    if !netdev::has_addr(up, IpAddr::V4(vtep_ip)) {
        bail!("VTEP IP {vtep_ip} is not configured on uplink {up:?} (add it with `ip addr add`)");
    }
    // Cores are checked against the CPUs this machine has, not against how many this
    // process may use now: under `taskset -c 1` (or a cpuset) CPU 1 is fine, and moving
    // xvsd's threads later must not make every change fail.
    let online = online_cpus();
    for c in &cfg.daemon.cores {
        if !online.contains(c) {
            bail!("daemon: core {c} does not exist (this machine's CPUs are {})", cpu_list(&online));
        }
    }
    if starting {
        let allowed = allowed_cpus();
        for c in cfg.daemon.cores.iter().filter(|c| !allowed.is_empty() && !allowed.contains(c)) {
            tracing::warn!(
                "daemon: core {c} is outside the CPUs xvsd was started on ({}; taskset or cpuset): \
                 its forwarding thread is pinned there anyway if the kernel allows it",
                cpu_list(&allowed)
            );
        }
    }
    let n = cfg.daemon.cores.len();
    let mut seen = std::collections::HashSet::new();
    if let Some(c) = cfg.daemon.cores.iter().find(|c| !seen.insert(**c)) {
        bail!("daemon: core {c} is listed twice");
    }
    if n > 1 {
        // Each core owns one queue of every port, so frames never change cores.
        let queued = cfg.ports.iter().map(|p| &p.interface).filter(|n| netdev::exists(n) && !netdev::is_tap(n));
        for name in std::iter::once(up).chain(queued) {
            let q = netdev::rx_queues(name);
            if (q as usize) < n {
                bail!("daemon: {n} cores need {n} queues on every port, but {name:?} has {q}");
            }
        }
        if cfg.uplink.rate.is_some() {
            bail!("daemon: QoS (uplink.rate) needs a single forwarding core in this version");
        }
    }
    Ok(())
}

/// Messages from the control plane to the forwarding core. The core never blocks on them.
pub enum CoreMsg {
    /// A new table snapshot, with ports to attach and detach.
    Update {
        /// The snapshot.
        tables: Arc<Tables>,
        /// FDB changes.
        change: Change,
        /// New ports' sockets.
        attach: Vec<(PortId, IoPort)>,
        /// Ports to close.
        detach: Vec<PortId>,
        /// Told once the core runs on the new snapshot.
        done: Sender<()>,
    },
    /// Static FDB entries added or removed (no other table changed).
    Fdb {
        /// Entries to add or replace.
        add: Vec<(TenantId, crate::wire::MacAddr, FdbDest)>,
        /// Entries to remove.
        del: Vec<(TenantId, crate::wire::MacAddr)>,
        /// Told once the core has applied them.
        done: Sender<()>,
    },
    /// Zero the counters.
    ClearStats,
    /// Decide a frame as forwarding would, for a trace (explained by the control side).
    Trace {
        /// Ingress port.
        port: PortId,
        /// The frame.
        frame: Vec<u8>,
        /// Where the facts go.
        reply: Sender<TraceFacts>,
    },
    /// Copy out learned and static FDB entries (rendered by the control side).
    FdbDump {
        /// Only this tenant.
        tenant: Option<TenantId>,
        /// Where to copy them: sized by the sender for the whole table.
        buf: Vec<FdbRow>,
        /// Where the rows go, with the tables and the core's clock to read them by.
        reply: Sender<(Vec<FdbRow>, Arc<Tables>, u64)>,
    },
}

/// What the core publishes every 100 ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreReport {
    /// Pipeline counters.
    pub stats: Stats,
    /// Host stack counters.
    pub host: HostCounters,
    /// Underlay neighbours: IP and MAC (none while incomplete).
    #[serde(skip)]
    pub neighbors: Vec<(std::net::Ipv4Addr, Option<crate::wire::MacAddr>)>,
    /// Core load.
    pub core: CoreLoad,
    /// AF_XDP mode of each queue, by port id.
    pub afxdp: Vec<(u16, Vec<XskMode>)>,
    /// The uplink scheduler's view of each tenant.
    pub qos: Vec<QosRow>,
    /// Load of each core (filled in when reports are merged).
    pub per_core: Vec<CoreLoad>,
}

/// One tenant in the uplink scheduler.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QosRow {
    /// Tenant id.
    pub tenant: u16,
    /// Counters.
    pub stats: crate::qos::TenantQosStats,
    /// Measured wire rate over the last publishing interval (100 ms), bits/s.
    pub rate_bps: u64,
}

/// Load of the forwarding core.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreLoad {
    /// CPU the core runs on.
    pub cpu: usize,
    /// When these counters were taken: nanoseconds on the core's clock (from its start). The
    /// difference of two readings is the exact interval between them, whatever the delay of
    /// the stats file or the control socket.
    pub at_ns: u64,
    /// Nanoseconds spent in polls that received frames.
    pub busy_ns: u64,
    /// Nanoseconds spent in polls that found nothing (spinning before sleeping).
    pub spin_ns: u64,
    /// Nanoseconds spent asleep in poll(2).
    pub idle_ns: u64,
    /// Frames received.
    pub packets: u64,
    /// Busy nanoseconds per frame received (receive, forward, transmit, recycle).
    pub ns_per_packet: f64,
    /// Share of time busy (busy / (busy + spin + idle)).
    pub busy_share: f64,
    /// CPU cycles per stage of the poll loop (time-stamp counter), cumulative.
    pub stage_cycles: crate::datapath::StageCycles,
    /// Cycles of all stages per frame received (includes idle polls' ring checks).
    pub cycles_per_packet: f64,
    /// Underlay neighbours (VTEP next hops) this core uses but has no MAC for: its frames
    /// to them are dropped as `vtep_unresolved` until ARP (on any core) answers.
    pub neighbors_unresolved: u32,
}

impl CoreLoad {
    /// The load as published at `now`: the raw times and counts with the figures derived
    /// from them (per frame, busy share) and the core's stage profile.
    fn taken(&self, profile: &crate::datapath::StageCycles, now: u64) -> CoreLoad {
        let per_frame = |x: f64| if self.packets > 0 { x / self.packets as f64 } else { 0.0 };
        let all = (self.busy_ns + self.spin_ns + self.idle_ns).max(1);
        CoreLoad {
            at_ns: now,
            ns_per_packet: per_frame(self.busy_ns as f64),
            busy_share: self.busy_ns as f64 / all as f64,
            stage_cycles: *profile,
            cycles_per_packet: per_frame(profile.total() as f64),
            ..self.clone()
        }
    }
}

/// One port as shown in status.
#[derive(Debug, Clone, Serialize)]
pub struct PortStatus {
    /// Interface.
    pub name: String,
    /// `uplink` or `vm`.
    pub kind: &'static str,
    /// Tenant name, for VM ports.
    pub tenant: Option<String>,
    /// MAC.
    pub mac: Option<String>,
    /// IPs (VM ports).
    pub ips: Vec<String>,
    /// AF_XDP binding of each queue.
    pub afxdp_mode: Vec<XskMode>,
    /// XDP attach mode (`tc_ingress` for taps read through a packet socket).
    pub xdp_mode: Option<AttachMode>,
    /// `attached`, or `waiting` while its interface is missing or down.
    pub state: &'static str,
    /// How frames are read and written: `af_xdp` or `af_packet` (taps); none while waiting.
    pub io: Option<&'static str>,
    /// Times the interface went away or down while attached.
    pub lost: u64,
    /// Times the port was attached again by itself after that (or after starting without it).
    pub reattached: u64,
}

/// Status and counters, as the stats file, `xvsctl stats --json` and the metrics show them.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// xvsd version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Config file.
    pub config: Option<PathBuf>,
    /// Where the desired state is kept.
    pub state: String,
    /// Uplink interface.
    pub uplink: String,
    /// Forwarding cores' CPUs.
    pub cores: Vec<usize>,
    /// Ports by port id (`null` where removed).
    pub ports: Vec<Option<PortStatus>>,
    /// Tenant (name, VNI) by tenant id (`null` where removed).
    pub tenants: Vec<Option<(String, u32)>>,
    /// Pipeline counters.
    pub stats: Stats,
    /// Host stack counters.
    pub host: HostCounters,
    /// XDP program counters per interface.
    pub xdp: Vec<(String, Vec<(&'static str, u64)>)>,
    /// Underlay neighbours.
    pub neighbors: Vec<(String, String)>,
    /// Core load.
    pub core: CoreLoad,
    /// Uplink rate (bits/s) when QoS is on, and each tenant in the scheduler.
    pub qos: Option<(u64, Vec<QosRow>)>,
    /// Load of each forwarding core.
    pub per_core: Vec<CoreLoad>,
}

/// The control plane's handles on the forwarding cores.
pub struct Cores {
    /// One per core: its channel, its waker, what it reports, its UMEM.
    pub cores: Vec<CoreHandle>,
}

/// One forwarding core as the control plane sees it.
pub struct CoreHandle {
    /// CPU.
    pub cpu: usize,
    /// Messages to it.
    pub tx: Sender<CoreMsg>,
    /// Wakes it from poll(2).
    pub waker: Arc<Waker>,
    /// What it published last.
    pub report: Arc<Mutex<Option<CoreReport>>>,
    /// Its UMEM, for binding new sockets.
    pub umem: crate::io::afxdp::UmemHandle,
}

impl Cores {
    /// Sends `make(core index)` to every core and waits (bounded) for each to confirm through
    /// the `done` sender it was given.
    pub fn send_all_and_wait(&self, mut make: impl FnMut(usize, Sender<()>) -> CoreMsg) -> Result<(), String> {
        let mut waits = Vec::new();
        for (i, c) in self.cores.iter().enumerate() {
            let (tx, rx) = crossbeam::channel::bounded(1);
            c.tx.send(make(i, tx)).map_err(|_| "forwarding core is gone".to_string())?;
            c.waker.wake();
            waits.push(rx);
        }
        for rx in waits {
            rx.recv_timeout(Duration::from_secs(5))
                .map_err(|_| "the forwarding core did not confirm the change within 5 s".to_string())?;
        }
        Ok(())
    }

    /// Sends a message to one core.
    pub fn send(&self, core: usize, msg: CoreMsg) -> Result<(), String> {
        let c = self.cores.get(core).ok_or("no forwarding core")?;
        c.tx.send(msg).map_err(|_| "forwarding core is gone".to_string())?;
        c.waker.wake();
        Ok(())
    }

    /// Every core's report merged: counters added up, the first core's view of the rest.
    pub fn report(&self) -> Option<CoreReport> {
        let mut merged: Option<CoreReport> = None;
        for c in &self.cores {
            let Some(r) = c.report.lock().ok().and_then(|g| g.clone()) else { continue };
            match merged.as_mut() {
                None => {
                    let mut first = r.clone();
                    first.per_core = vec![r.core.clone()];
                    merged = Some(first);
                }
                Some(m) => {
                    m.stats.add(&r.stats);
                    m.host.add(&r.host);
                    for (id, modes) in r.afxdp {
                        match m.afxdp.iter_mut().find(|(i, _)| *i == id) {
                            Some((_, v)) => v.extend(modes),
                            None => m.afxdp.push((id, modes)),
                        }
                    }
                    m.core.packets += r.core.packets;
                    m.core.busy_ns += r.core.busy_ns;
                    m.per_core.push(r.core.clone());
                }
            }
        }
        merged
    }
}

/// Runs xvsd until `stop` is set. `cfg` is used unless the state store holds a configuration.
pub fn run(cfg: Config, opts: Options, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let store: Box<dyn Store> = match &opts.state {
        Some(p) => Box::new(FileStore::new(p)),
        None => Box::new(FileStore::new("/var/lib/xvs/state.toml")),
    };
    let desired = match store.load()? {
        Some(saved) => {
            tracing::info!("restoring configuration from {}", store.describe());
            saved
        }
        None => cfg,
    };
    let tables = Arc::new(preflight(&desired, None)?);
    if let Some(m) = &opts.metrics
        && !m.ip().is_loopback()
    {
        bail!("metrics address {m} is not a loopback address");
    }
    let cpus = desired.daemon.cores.clone();
    let mut umems = Vec::new();
    let mut handles = Vec::new();
    let mut receivers = Vec::new();
    for &cpu in &cpus {
        let umem = UmemFrames::new(DEFAULT_UMEM_FRAMES)?;
        let (tx, rx) = crossbeam::channel::unbounded::<CoreMsg>();
        handles.push(CoreHandle {
            cpu,
            tx,
            waker: Arc::new(Waker::new()?),
            report: Arc::new(Mutex::new(None)),
            umem: umem.handle(),
        });
        umems.push(umem);
        receivers.push(rx);
    }
    let cores = Cores { cores: handles };

    // Attach every port (on failure, what was attached detaches as it drops).
    let mut ports_io = std::collections::HashMap::new();
    let mut sets: Vec<Vec<(PortId, IoPort)>> = (0..cpus.len()).map(|_| Vec::new()).collect();
    for (id, p) in tables.live_ports() {
        if p.name != tables.underlay.interface && !netdev::exists(&p.name) {
            tracing::warn!(port = %p.name, "interface not found: the port waits for it");
            continue;
        }
        let (io, per_core) = PortIo::open(p, &tables, &cores, opts.force_copy)
            .map_err(|e| anyhow::anyhow!("port {:?}: {e:#}", p.name))?;
        ports_io.insert(p.name.clone(), io);
        for (k, set) in per_core.into_iter().enumerate() {
            sets[k].push((id, set));
        }
    }
    let mut store = store;
    store.save(&desired)?;
    let mut threads = Vec::new();
    let share = Arc::new(NeighShare::new(4096));
    for (k, ((umem, sets), rx)) in umems.into_iter().zip(sets).zip(receivers).enumerate() {
        let share = Arc::clone(&share);
        let c = &cores.cores[k];
        let (cpu, tables, report, stop, waker) =
            (c.cpu, Arc::clone(&tables), Arc::clone(&c.report), Arc::clone(&stop), Arc::clone(&c.waker));
        let spin_ns = u64::from(desired.daemon.poll_after_traffic_us) * 1000;
        threads.push(
            std::thread::Builder::new()
                .name(format!("xvs-core{cpu}"))
                .spawn(move || core_loop(cpu, tables, umem, sets, rx, report, stop, waker, spin_ns, share))?,
        );
    }
    let wakers: Vec<Arc<Waker>> = cores.cores.iter().map(|c| Arc::clone(&c.waker)).collect();
    tracing::info!(cores = cpus.len(), tenants = tables.live_tenants().count(), "xvsd attached; forwarding");
    let state =
        Arc::new(Mutex::new(ControlState::new(desired, Arc::clone(&tables), store, ports_io, cores, opts.clone())));
    if let Some(path) = &opts.socket {
        server::listen(path, opts.socket_group.as_deref(), Arc::clone(&state))?;
    }
    if let Some(addr) = opts.metrics {
        crate::metrics::serve(addr, Arc::clone(&state))?;
    }
    {
        // VM ports follow their interfaces; one check at once catches what changed between
        // opening the ports and subscribing.
        let state = Arc::clone(&state);
        crate::io::links::watch(Arc::clone(&stop), move |names| {
            lock_state(&state).reconcile(names);
        })?;
    }
    lock_state(&state).reconcile(&[]);
    // Wait for the first report, then keep the stats file fresh until stopped.
    let mut last_write = Instant::now() - Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if threads.iter().any(|t| t.is_finished()) {
            break;
        }
        if let Some(p) = &opts.stats_file
            && last_write.elapsed() >= Duration::from_millis(200)
        {
            last_write = Instant::now();
            if let Some(snap) = lock_state(&state).snapshot() {
                write_json(p, &snap);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in &wakers {
        w.wake();
    }
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("forwarding core panicked"))?;
    }
    if let Some(p) = &opts.stats_file
        && let Some(snap) = lock_state(&state).snapshot()
    {
        write_json(p, &snap);
    }
    if let Some(path) = &opts.socket {
        let _ = std::fs::remove_file(path);
    }
    // The core closed its sockets; detach the XDP programs.
    lock_state(&state).detach_all();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn core_loop(
    cpu: usize,
    tables: Arc<Tables>,
    umem: UmemFrames,
    sets: Vec<(PortId, IoPort)>,
    rx: Receiver<CoreMsg>,
    report: Arc<Mutex<Option<CoreReport>>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    spin_ns: u64,
    share: Arc<NeighShare>,
) {
    pin_to(cpu);
    let mut share_seen = 0u64;
    let mut core: Core<IoPort, UmemFrames> = Core::new(Arc::clone(&tables), umem);
    core.cycle_counter = crate::io::cycles;
    for (id, s) in sets {
        core.attach(id, s);
    }
    let mut tables = tables;
    let mut host = HostStack::default();
    let clock = Instant::now();
    let now_ns = || clock.elapsed().as_nanos() as u64 + 1;
    for v in tables.all_vteps() {
        core.pipeline.neigh.resolve(tables.underlay.next_hop(v), 0);
    }
    core.transmit(1); // initial fill
    let mut fds = poll_fds(&core, &waker);
    let mut rates = Rates::default();
    let mut load = CoreLoad { cpu, ..Default::default() };
    let (mut idle_polls, mut last_tick, mut last_age, mut last_busy) = (0u32, 0u64, 0u64, 0u64);
    loop {
        let t0 = Instant::now();
        let now = now_ns();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                CoreMsg::Update { tables: t, change, attach, detach, done } => {
                    for id in detach {
                        if let Some(p) = core.detach(id) {
                            p.release(&mut core.free);
                        }
                    }
                    core.set_tables(Arc::clone(&t), &change, now);
                    for (id, s) in attach {
                        core.attach(id, s);
                    }
                    for v in t.all_vteps() {
                        core.pipeline.neigh.resolve(t.underlay.next_hop(v), now);
                    }
                    tables = t;
                    fds = poll_fds(&core, &waker);
                    core.transmit(now);
                    let _ = done.send(());
                }
                CoreMsg::Fdb { add, del, done } => {
                    for (t, m) in &del {
                        core.pipeline.fdb.remove(*t, m);
                    }
                    for (t, m, d) in &add {
                        core.pipeline.fdb.insert_static(*t, m, *d);
                    }
                    let _ = done.send(());
                }
                CoreMsg::ClearStats => {
                    core.pipeline.stats = Stats::default();
                    core.pipeline.stats.resize(tables.ports.len(), tables.tenants.len());
                    host.counters = HostCounters::default();
                    load = CoreLoad { cpu, ..Default::default() };
                    core.profile = Default::default();
                }
                CoreMsg::Trace { port, frame, reply } => {
                    let _ = reply.send(core.trace_facts(port, &frame, now));
                }
                CoreMsg::FdbDump { tenant, mut buf, reply } => {
                    core.copy_fdb(tenant, &mut buf);
                    let _ = reply.send((buf, Arc::clone(&tables), now));
                }
            }
        }
        share.merge_into(&mut core.pipeline.neigh, &mut share_seen, now);
        let n = core.poll(now);
        if !core.stage.host.is_empty() {
            host.receive(&tables, &mut core.pipeline.neigh, &mut core.mem, &mut core.free, &mut core.stage, now);
            for (ip, mac) in host.learned.drain(..) {
                share.publish(ip, mac);
            }
            core.transmit(now);
        }
        if now - last_tick >= 100_000_000 || core.pipeline.neigh.take_wanted() {
            last_tick = now;
            host.tick(&tables, &mut core.pipeline.neigh, &mut core.mem, &mut core.free, &mut core.stage, now);
            core.transmit(now);
            core.sample_kernel_drops();
            publish(&core, &host, &load, &report, &mut rates, now, false);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        // The aging sweep passes over the whole table, so it runs in a moment when nothing
        // was received (at most once a second), or after AGE_LATEST_NS whatever the load.
        // Until then an entry past its aging time is already a miss for forwarding
        // (`Fdb::lookup`, which trace shows too); the sweep only frees its room.
        let since_age = now - last_age;
        if (n == 0 && since_age >= AGE_EVERY_NS) || since_age >= AGE_LATEST_NS {
            last_age = now;
            core.pipeline.fdb.age(now);
        }
        load.packets += n as u64;
        let spent = t0.elapsed().as_nanos() as u64;
        if n > 0 {
            load.busy_ns += spent;
            idle_polls = 0;
            last_busy = now;
        } else {
            load.spin_ns += spent;
            idle_polls += 1;
            if spin_ns > 0 {
                // Polling for a while after traffic: let whatever else shares this CPU run
                // between polls (on this testbed, the other host's xvsd).
                std::thread::yield_now();
            }
            if idle_polls > SPIN_POLLS
                && now.saturating_sub(last_busy) >= spin_ns
                && core.qos.as_ref().is_none_or(|s| s.backlog() == 0)
            {
                // Nothing for a while: sleep on the sockets (and the control waker) until a
                // frame or a message arrives.
                let t1 = Instant::now();
                wait_readable(&fds, MAX_SLEEP_MS);
                waker.drain();
                load.idle_ns += t1.elapsed().as_nanos() as u64;
            }
        }
    }
    publish(&core, &host, &load, &report, &mut rates, now_ns(), true);
    for id in 0..core.ports.len() {
        if let Some(p) = core.detach(PortId(id as u16)) {
            p.release(&mut core.free);
        }
    }
}

fn poll_fds(core: &Core<IoPort, UmemFrames>, waker: &Waker) -> Vec<RawFd> {
    let mut v: Vec<RawFd> = core.ports.iter().flatten().flat_map(IoPort::fds).collect();
    v.push(waker.raw());
    v
}

/// Bytes each tenant had sent at the last publish, to measure rates.
#[derive(Default)]
struct Rates {
    at: u64,
    bytes: Vec<u64>,
}

/// Publishes the core's counters into the shared report, in place: no allocation once the
/// report has its size and no formatting (the control side renders it). The forwarding
/// thread never waits for a reader: while one holds the report, this publish is skipped
/// (the next comes 100 ms later), unless `wait` (the last one, at shutdown).
fn publish(
    core: &Core<IoPort, UmemFrames>,
    host: &HostStack,
    load: &CoreLoad,
    report: &Mutex<Option<CoreReport>>,
    rates: &mut Rates,
    now: u64,
    wait: bool,
) {
    let mut g = match report.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) if !wait => return,
        Err(std::sync::TryLockError::WouldBlock) => report.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
    };
    let r = g.get_or_insert_with(CoreReport::default);
    r.qos.clear();
    if let Some(s) = &core.qos {
        let dt = now.saturating_sub(rates.at).max(1);
        let n = core.pipeline.tables().tenants.len();
        rates.bytes.resize(n, 0);
        for (id, _) in core.pipeline.tables().live_tenants() {
            if let Some((_, st)) = s.tenant(u32::from(id.0)) {
                let prev = std::mem::replace(&mut rates.bytes[id.index()], st.bytes);
                let rate_bps = (u128::from(st.bytes.saturating_sub(prev)) * 8 * 1_000_000_000 / u128::from(dt)) as u64;
                r.qos.push(QosRow { tenant: id.0, stats: st, rate_bps });
            }
        }
        rates.at = now;
    }
    r.stats.copy_from(&core.pipeline.stats);
    r.host.clone_from(&host.counters);
    r.neighbors.clear();
    r.neighbors.extend(core.pipeline.neigh.iter().map(|(ip, n)| (ip, n.mac)));
    r.core = CoreLoad {
        neighbors_unresolved: core.pipeline.neigh.iter().filter(|(_, n)| n.mac.is_none()).count() as u32,
        ..load.taken(&core.profile, now)
    };
    r.afxdp.clear();
    r.afxdp.extend(core.ports.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|s| (i as u16, s.modes()))));
}

/// The CPUs this machine has online (`/sys/devices/system/cpu/online`, e.g. "0-3,6").
fn online_cpus() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect())
}

/// The CPUs this process may run on now (its affinity mask).
fn allowed_cpus() -> Vec<usize> {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect())
        .unwrap_or_default()
}

/// Parses a kernel CPU list ("0-3,6"); `None` if malformed.
fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().ok()?),
        }
    }
    Some(v)
}

/// Writes CPUs as a kernel CPU list ("0-3,6").
fn cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if j > i { format!("{}-{}", cpus[i], cpus[j]) } else { cpus[i].to_string() });
        i = j + 1;
    }
    out.join(",")
}

fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok()
        && let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
    {
        tracing::warn!("cannot pin the forwarding core to CPU {cpu}: {e}");
    }
}

fn write_json(path: &std::path::Path, snap: &Snapshot) {
    let tmp = path.with_extension("tmp");
    if let Ok(text) = serde_json::to_string_pretty(snap)
        && std::fs::write(&tmp, text).is_ok()
    {
        let _ = std::fs::rename(&tmp, path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_print() {
        assert_eq!(parse_cpu_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(cpu_list(&[1]), "1");
        assert!(online_cpus().contains(&0));
    }
}
