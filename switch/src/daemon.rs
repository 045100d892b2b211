//! xvsd: validates the configuration, attaches XDP programs and AF_XDP sockets, runs the
//! forwarding cores' poll loops, serves the control socket and the metrics, and on
//! SIGINT/SIGTERM detaches everything.
//!
//! May depend on: everything below it (control server, cores, preflight, io, datapath, ...);
//! nothing depends on it but the xvsd binary.

pub use crate::control::server::Options;
pub use crate::preflight::preflight;

use crate::config::Config;
use crate::control::server::{self, ControlState, PortIo, lock_state};
use crate::cores::{CoreHandle, CoreLoad, CoreMsg, CoreReport, Cores, QosRow, Snapshot};
use crate::datapath::Core;
use crate::etcd;
use crate::host::{HostCounters, HostStack};
use crate::io::afxdp::{DEFAULT_UMEM_FRAMES, UmemFrames, Waker, wait_readable};
use crate::io::netdev;
use crate::io::ports::IoPort;
use crate::neigh::NeighShare;
use crate::share::{CoreShare, INTERVAL_NS};
use crate::stats::Stats;
use crate::store::{FileStore, Store};
use crate::tables::Tables;
use crate::types::PortId;
use crate::uplink_share::UplinkShare;
use anyhow::bail;
use crossbeam::channel::Receiver;
use std::os::fd::RawFd;
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

/// The etcd store of `cfg.store`, if any.
fn etcd_settings(cfg: &Config) -> anyhow::Result<Option<etcd::Settings>> {
    let Some(s) = &cfg.store else { return Ok(None) };
    let host = match &s.host {
        Some(h) => h.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .map_err(|e| anyhow::anyhow!("store: no host name given and the system's cannot be read: {e}"))?,
    };
    let settings = etcd::Settings::parse(&s.url, &s.prefix, &host, s.lease_secs).map_err(anyhow::Error::msg)?;
    Ok(Some(match &s.ca {
        Some(ca) => {
            settings.with_tls(etcd::Tls::read(ca, s.cert.as_deref(), s.key.as_deref()).map_err(anyhow::Error::msg)?)
        }
        None if s.cert.is_some() || s.key.is_some() => anyhow::bail!("store: a client certificate needs the CA (ca)"),
        None => settings,
    }))
}

/// Runs xvsd until `stop` is set. `cfg` is used unless the state store holds a configuration
/// (with `[store]`, the shared store's state for this host, its uplink and daemon settings
/// from `cfg`).
pub fn run(cfg: Config, opts: Options, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let state_file = FileStore::new(opts.state.clone().unwrap_or_else(|| "/var/lib/xvs/state.toml".into()));
    let (store, shared, desired): (Box<dyn Store>, _, _) = match etcd_settings(&cfg)? {
        Some(s) => {
            let e = etcd::EtcdStore::new(s, &cfg, state_file)?;
            let mut desired = e.initial(Duration::from_secs(5))?;
            if let Err(err) = preflight(&desired, None) {
                // One bad entry in the shared state must not keep the host from starting.
                tracing::warn!("the store's state for this host does not apply ({err:#}); starting without it");
                desired = Config { tenants: vec![], ports: vec![], ..cfg.clone() };
            }
            tracing::info!("desired state from {}", e.describe());
            (Box::new(e.clone()), Some(e), desired)
        }
        None => {
            let desired = match state_file.load()? {
                Some(saved) => {
                    tracing::info!("restoring configuration from {}", state_file.describe());
                    saved
                }
                None => cfg,
            };
            (Box::new(state_file), None, desired)
        }
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
    let xdp = crate::io::xdp::XdpObject::load()?;
    let cores = Cores { cores: handles, xdp: Arc::clone(&xdp) };

    // Attach every port (on failure, what was attached detaches as it drops).
    let mut ports_io = std::collections::HashMap::new();
    let mut sets: Vec<Vec<(PortId, IoPort)>> = (0..cpus.len()).map(|_| Vec::new()).collect();
    for (id, p) in tables.live_ports() {
        if p.name != tables.underlay.interface && !netdev::exists(&p.name) {
            tracing::warn!(port = %p.name, "interface not found: the port waits for it");
            continue;
        }
        let (io, per_core) = PortIo::open(id, p, &tables, &cores, opts.force_copy)
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
    // Several cores on one uplink share its rate (and every tenant's) by demand.
    let uplink = (cpus.len() > 1).then(|| Arc::new(UplinkShare::new(cpus.len(), &tables)));
    // One clock for every core, so the shares' intervals mean the same everywhere.
    let epoch = Instant::now();
    for (k, ((umem, sets), rx)) in umems.into_iter().zip(sets).zip(receivers).enumerate() {
        let share = Arc::clone(&share);
        let xdp = Arc::clone(&xdp);
        let uplink = uplink.clone().map(|u| (k, u));
        let c = &cores.cores[k];
        let (cpu, tables, report, stop, waker) =
            (c.cpu, Arc::clone(&tables), Arc::clone(&c.report), Arc::clone(&stop), Arc::clone(&c.waker));
        let spin_ns = u64::from(desired.daemon.poll_after_traffic_us) * 1000;
        threads.push(std::thread::Builder::new().name(format!("xvs-core{cpu}")).spawn(move || {
            core_loop(cpu, tables, umem, sets, rx, report, stop, waker, spin_ns, share, xdp, uplink, epoch)
        })?);
    }
    let wakers: Vec<Arc<Waker>> = cores.cores.iter().map(|c| Arc::clone(&c.waker)).collect();
    tracing::info!(cores = cpus.len(), tenants = tables.live_tenants().count(), "xvsd attached; forwarding");
    let state =
        Arc::new(Mutex::new(ControlState::new(desired, Arc::clone(&tables), store, ports_io, cores, opts.clone())));
    lock_state(&state).start_fast_path();
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
    if let Some(e) = &shared {
        let state = Arc::clone(&state);
        e.start(Box::new(move |cfg, live| {
            let mut s = lock_state(&state);
            let r = s.apply_from_store(cfg);
            if r.is_ok() {
                live();
            }
            r
        }));
    }
    // Wait for the first report, then keep the stats file fresh until stopped.
    let mut last_write = Instant::now() - Duration::from_secs(1);
    let mut last_peers = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if threads.iter().any(|t| t.is_finished()) {
            break;
        }
        if last_peers.elapsed() >= PEER_RECHECK {
            last_peers = Instant::now();
            lock_state(&state).recheck_peers();
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
    if let Some(e) = &shared {
        e.stop();
    }
    // The core closed its sockets; detach the XDP programs.
    lock_state(&state).detach_all();
    Ok(())
}

/// How often the ports' XDP transmit capability is asked again (one generic-netlink request
/// per AF_XDP port): the fast path into a port follows its far end's XDP program within this.
const PEER_RECHECK: Duration = Duration::from_millis(100);

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
    xdp: Arc<crate::io::xdp::XdpObject>,
    uplink: Option<(usize, Arc<UplinkShare>)>,
    epoch: Instant,
) {
    let mut moved = Vec::with_capacity(256);
    pin_to(cpu);
    let mut share_seen = 0u64;
    let mut core: Core<IoPort, UmemFrames> = Core::with_advice(Arc::clone(&tables), umem, crate::io::advise_huge_pages);
    core.cycle_counter = crate::io::cycles;
    // this core's part of a shared uplink: when it next samples its demand, the last part
    // it took, and that part
    let (mut next_sample, mut part_seen, mut part) = (0u64, 0u64, CoreShare::default());
    if let Some((_, u)) = &uplink {
        core.share_uplink(u.cores(), 1);
    }
    for (id, s) in sets {
        core.attach(id, s);
    }
    let mut tables = tables;
    let mut host = HostStack::default();
    let now_ns = || epoch.elapsed().as_nanos() as u64 + 1;
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
                    if let Some((k, u)) = &uplink {
                        u.set_tables(&t);
                        if core.take_qos_rebuilt() {
                            u.rebuilt(*k);
                        }
                    }
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
                CoreMsg::Capture { tap } => {
                    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                    tap.ring().set_clock_base(now, wall.map_or(0, |d| d.as_nanos() as u64));
                    core.taps.push(tap);
                }
                CoreMsg::FdbDump { tenant, mut buf, reply } => {
                    core.copy_fdb(tenant, &mut buf);
                    let _ = reply.send((buf, Arc::clone(&tables), now));
                }
            }
        }
        share.merge_into(&mut core.pipeline.neigh, &mut share_seen, now);
        if let Some((k, u)) = &uplink {
            if now >= next_sample {
                next_sample = now + INTERVAL_NS;
                if let Some(d) = core.sample_demand() {
                    u.post(*k, d, now);
                    u.rebalance_if_due(now);
                }
            }
            if u.take(*k, &mut part_seen, &mut part) {
                core.apply_share(&part, now);
                load.qos_share_changes += part.rows.len() as u64;
            }
        }
        let n = core.poll(now);
        // Static entries frames moved: the fast path forgets them before the next poll.
        let all = core.pipeline.fdb.take_moved(&mut moved);
        if all || !moved.is_empty() {
            xdp.forget_remote(&moved, all);
        }
        if !core.stage.host.is_empty() {
            host.receive(&tables, &mut core.pipeline.neigh, &mut core.mem, &mut core.free, &mut core.stage, now);
            for (ip, mac) in host.learned.drain(..) {
                share.publish(ip, mac);
                xdp.set_neighbor(ip, mac);
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
                // frame or a message arrives. A shared uplink's other cores take this one's
                // parts meanwhile.
                if let Some((k, u)) = &uplink {
                    u.post(*k, &[], now);
                }
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
            if let Some((q, st)) = s.tenant(u32::from(id.0)) {
                let prev = std::mem::replace(&mut rates.bytes[id.index()], st.bytes);
                let rate_bps = (u128::from(st.bytes.saturating_sub(prev)) * 8 * 1_000_000_000 / u128::from(dt)) as u64;
                r.qos.push(QosRow {
                    tenant: id.0,
                    stats: st,
                    rate_bps,
                    guarantee_bps: q.guarantee,
                    limit_bps: q.limit,
                });
            }
        }
        rates.at = now;
    }
    r.stats.copy_from(&core.pipeline.stats);
    r.host.clone_from(&host.counters);
    r.neighbors.clear();
    r.neighbors.extend(core.pipeline.neigh.iter().map(|(ip, n)| (ip, n.mac)));
    r.core = CoreLoad {
        neighbors_unresolved: r.neighbors.iter().filter(|(_, mac)| mac.is_none()).count() as u32,
        qos_link_bps: core.qos.as_ref().map_or(0, |s| s.link_bps()),
        ..load.taken(&core.profile, now)
    };
    r.afxdp.clear();
    r.afxdp.extend(core.ports.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|s| (i as u16, s.modes()))));
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
