//! xvsd: validates the configuration, attaches XDP programs and AF_XDP sockets, runs the
//! forwarding core, and on SIGINT/SIGTERM detaches everything.

use crate::config::Config;
use crate::datapath::Core;
use crate::host::{HostCounters, HostStack};
use crate::io::afxdp::{QueueSet, UmemFrames, XskMode, frames_for_ports, wait_readable};
use crate::io::netdev;
use crate::io::xdp::{AttachMode, Attached, Role};
use crate::stats::Stats;
use crate::tables::{PortKind, Tables};
use crate::types::{PortId, mac_str};
use anyhow::{Context, bail};
use serde::Serialize;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_common::Counter;

/// Polls with nothing received before the core goes to sleep on its sockets.
const SPIN_POLLS: u32 = 200;
/// Longest sleep, so timers (ARP retries, aging) run.
const MAX_SLEEP_MS: u16 = 50;

/// Options beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where to write the counters as JSON, refreshed while running.
    pub stats_file: Option<PathBuf>,
    /// Force AF_XDP copy mode even where zero-copy would work.
    pub force_copy: bool,
    /// Config path, for status.
    pub config_path: Option<PathBuf>,
}

/// Checks everything that can be checked before touching an interface.
pub fn preflight(cfg: &Config) -> anyhow::Result<Tables> {
    // SAFETY-free check of the effective uid.
    if !nix::unistd::geteuid().is_root() {
        bail!("xvsd must run as root (XDP and AF_XDP need CAP_NET_ADMIN and CAP_BPF)");
    }
    let up = &cfg.uplink.interface;
    if !netdev::exists(up) {
        bail!("uplink interface {up:?} not found");
    }
    for p in &cfg.ports {
        if !netdev::exists(&p.interface) {
            bail!("port interface {:?} not found", p.interface);
        }
    }
    let (vtep_ip, _) = cfg.vtep_cidr()?;
    if !netdev::has_addr(up, IpAddr::V4(vtep_ip)) {
        bail!("VTEP IP {vtep_ip} is not configured on uplink {up:?} (add it with `ip addr add`)");
    }
    let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    for c in &cfg.daemon.cores {
        if *c >= ncpu {
            bail!("daemon: core {c} does not exist (this machine has CPUs 0..{})", ncpu - 1);
        }
    }
    if cfg.daemon.cores.len() > 1 {
        bail!(
            "daemon: {} cores configured; this version runs one forwarding core (set cores = [N])",
            cfg.daemon.cores.len()
        );
    }
    Ok(cfg.build(netdev::mac(up), netdev::mtu(up))?)
}

/// One port as shown in the counters.
#[derive(Debug, Clone, Serialize)]
pub struct PortStatus {
    /// Interface.
    pub name: String,
    /// `uplink` or `vm`.
    pub kind: &'static str,
    /// Tenant name, for VM ports.
    pub tenant: Option<String>,
    /// MAC (VM ports).
    pub mac: Option<String>,
    /// AF_XDP binding of each queue.
    pub afxdp_mode: Vec<XskMode>,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
}

/// What xvsd publishes: status and counters.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// xvsd version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Config file.
    pub config: Option<PathBuf>,
    /// Ports.
    pub ports: Vec<PortStatus>,
    /// Tenant names and VNIs, by tenant id.
    pub tenants: Vec<(String, u32)>,
    /// Pipeline counters.
    pub stats: Stats,
    /// Host stack counters.
    pub host: HostCounters,
    /// XDP program counters per interface.
    pub xdp: Vec<(String, Vec<(&'static str, u64)>)>,
    /// Resolved underlay neighbours: (IP, MAC or "incomplete").
    pub neighbors: Vec<(String, String)>,
    /// Core: time busy and asleep, packets.
    pub core: CoreLoad,
}

/// Load of the forwarding core.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreLoad {
    /// CPU the core runs on.
    pub cpu: usize,
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
}

/// Runs xvsd until `stop` is set.
pub fn run(cfg: Config, opts: Options, stop: Arc<AtomicBool>) -> anyhow::Result<Snapshot> {
    let tables = Arc::new(preflight(&cfg)?);
    let cpu = cfg.daemon.cores[0];
    let started = Instant::now();

    // Attach programs; on any failure the ones attached so far are detached as they drop.
    let mut attached: Vec<Attached> = Vec::new();
    for (i, p) in tables.ports.iter().enumerate() {
        let role = match p.kind {
            PortKind::Uplink => Role::Uplink { vtep_ip: tables.underlay.vtep_ip, udp_port: crate::wire::VXLAN_PORT },
            PortKind::Vm { .. } => Role::Vm,
        };
        let a = Attached::attach(&p.name, role).with_context(|| format!("port {i} ({})", p.name))?;
        attached.push(a);
    }

    let nqueues: Vec<u32> = tables.ports.iter().map(|p| netdev::rx_queues(&p.name)).collect();
    let umem = UmemFrames::new(frames_for_ports(nqueues.iter().sum::<u32>() as usize))?;
    let mut sets = Vec::new();
    for (i, p) in tables.ports.iter().enumerate() {
        let mut socks = Vec::new();
        for q in 0..nqueues[i] {
            let s = umem.bind(&p.name, q, opts.force_copy)?;
            attached[i].register(q, s.fd())?;
            socks.push(s);
        }
        sets.push(QueueSet::new(socks));
    }
    let ports_status: Vec<PortStatus> = tables
        .ports
        .iter()
        .zip(&sets)
        .zip(&attached)
        .map(|((p, s), a)| PortStatus {
            name: p.name.clone(),
            kind: if matches!(p.kind, PortKind::Uplink) { "uplink" } else { "vm" },
            tenant: match &p.kind {
                PortKind::Vm { tenant, .. } => tables.tenant(*tenant).map(|t| t.name.clone()),
                PortKind::Uplink => None,
            },
            mac: match &p.kind {
                PortKind::Vm { mac, .. } => Some(mac_str(mac)),
                PortKind::Uplink => Some(mac_str(&tables.underlay.mac)),
            },
            afxdp_mode: s.queues.iter().map(|q| q.mode).collect(),
            xdp_mode: a.mode,
        })
        .collect();
    let fds: Vec<RawFd> = sets.iter().flat_map(|s| s.fds().collect::<Vec<_>>()).collect();
    tracing::info!(ports = tables.ports.len(), tenants = tables.tenants.len(), "xvsd attached; forwarding");

    let shared: Arc<Mutex<Option<Snapshot>>> = Arc::new(Mutex::new(None));
    let writer = opts.stats_file.clone().map(|path| spawn_stats_writer(path, Arc::clone(&shared), Arc::clone(&stop)));

    let tables_c = Arc::clone(&tables);
    let shared_c = Arc::clone(&shared);
    let stop_c = Arc::clone(&stop);
    let config_path = opts.config_path.clone();
    let core_thread = std::thread::Builder::new().name(format!("xvs-core{cpu}")).spawn(move || {
        pin_to(cpu);
        let mut core: Core<QueueSet, UmemFrames> = Core::new(Arc::clone(&tables_c), umem);
        for (i, s) in sets.into_iter().enumerate() {
            core.attach(PortId(i as u16), s);
        }
        let mut host = HostStack::default();
        let clock = Instant::now();
        let now_ns = || clock.elapsed().as_nanos() as u64 + 1;
        for v in tables_c.all_vteps() {
            core.pipeline.neigh.resolve(tables_c.underlay.next_hop(v), 0);
        }
        core.transmit(); // initial fill
        let mut load = CoreLoad { cpu, ..Default::default() };
        let (mut idle_polls, mut last_tick, mut last_age) = (0u32, 0u64, 0u64);
        let publish = |core: &Core<QueueSet, UmemFrames>, host: &HostStack, load: &CoreLoad| {
            let snap = Snapshot {
                version: env!("CARGO_PKG_VERSION"),
                uptime_secs: started.elapsed().as_secs_f64(),
                config: config_path.clone(),
                ports: ports_status.clone(),
                tenants: tables_c.tenants.iter().map(|t| (t.name.clone(), t.vni.get())).collect(),
                stats: core.pipeline.stats.clone(),
                host: host.counters.clone(),
                xdp: attached
                    .iter()
                    .map(|a| {
                        let c = a.counters();
                        (a.ifname.clone(), Counter::ALL.iter().map(|k| (k.name(), c[*k as usize])).collect())
                    })
                    .collect(),
                neighbors: core
                    .pipeline
                    .neigh
                    .iter()
                    .map(|(ip, n)| (ip.to_string(), n.mac.map_or("incomplete".to_string(), |m| mac_str(&m))))
                    .collect(),
                core: load.clone(),
            };
            if let Ok(mut g) = shared_c.lock() {
                *g = Some(snap);
            }
        };
        loop {
            let t0 = Instant::now();
            let now = now_ns();
            let n = core.poll(now);
            if !core.stage.host.is_empty() {
                host.receive(&tables_c, &mut core.pipeline.neigh, &mut core.mem, &mut core.free, &mut core.stage, now);
                core.transmit();
            }
            if now - last_tick >= 100_000_000 || core.pipeline.neigh.take_wanted() {
                last_tick = now;
                host.tick(&tables_c, &mut core.pipeline.neigh, &mut core.mem, &mut core.free, &mut core.stage, now);
                core.transmit();
                if now - last_age >= 1_000_000_000 {
                    last_age = now;
                    core.pipeline.fdb.age(now);
                }
                publish(&core, &host, &load);
                if stop_c.load(Ordering::Relaxed) {
                    break;
                }
            }
            load.packets += n as u64;
            if n > 0 {
                load.busy_ns += t0.elapsed().as_nanos() as u64;
            } else {
                load.spin_ns += t0.elapsed().as_nanos() as u64;
            }
            if n == 0 {
                idle_polls += 1;
                if idle_polls > SPIN_POLLS {
                    // Nothing for a while: sleep on the sockets until a frame arrives.
                    let t1 = Instant::now();
                    wait_readable(&fds, MAX_SLEEP_MS);
                    load.idle_ns += t1.elapsed().as_nanos() as u64;
                }
            } else {
                idle_polls = 0;
            }
            if load.packets > 0 {
                load.ns_per_packet = load.busy_ns as f64 / load.packets as f64;
            }
        }
        publish(&core, &host, &load);
        // Sockets close as the core drops; then the programs detach as `attached` drops.
        drop(core);
        drop(attached);
    })?;
    core_thread.join().map_err(|_| anyhow::anyhow!("forwarding core panicked"))?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    let snap = shared.lock().ok().and_then(|g| g.clone()).context("no counters published")?;
    if let Some(p) = &opts.stats_file {
        write_json(p, &snap);
    }
    Ok(snap)
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

fn spawn_stats_writer(
    path: PathBuf,
    shared: Arc<Mutex<Option<Snapshot>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let snap = shared.lock().ok().and_then(|g| g.clone());
            if let Some(s) = snap {
                write_json(&path, &s);
            }
        }
    })
}
