//! The control server inside xvsd: applies requests to the desired configuration
//! all-or-nothing (validate, attach new ports, store durably, publish to the core, then
//! detach removed ports) and answers queries.

use super::proto::{self, Command, FdbEntry, Response};
use crate::config::{Config, DEFAULT_MAC_LIMIT, PolicerConfig, PortConfig, StaticFdbConfig, TenantConfig};
use crate::daemon::{self, CoreMsg, CoreReport, Cores, Options, PortStatus, Snapshot};
use crate::io::afxdp::QueueSet;
use crate::io::netdev;
use crate::io::packet::PacketPort;
use crate::io::ports::IoPort;
use crate::io::xdp::{Attached, Role};
use crate::pipeline::Change;
use crate::stats::Counters;
use crate::store::{Record, Store};
use crate::tables::{FdbDest, Port, PortKind, Tables};
use crate::types::{PortId, TenantId, is_assignable_mac, mac_str, parse_mac};
use crate::wire::MacAddr;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_common::Counter;

/// The kernel side of one port: its XDP or tc program (the sockets live in the core).
pub struct PortIo {
    /// The attached program.
    pub attached: Attached,
    /// The interface index it was opened on (a recreated interface gets a new one).
    pub ifindex: u32,
    /// `af_xdp` or `af_packet`.
    pub io: &'static str,
}

impl PortIo {
    /// Attaches the program for `port` and opens its sockets, one per core it is read on;
    /// returns each core's share. Taps are read through a packet socket that keeps the VM's
    /// offload header (`af_packet`, with fanout by flow hash across cores); every other port
    /// binds one AF_XDP socket per queue, queue `q` on the UMEM of core `q % cores`. A VM
    /// port's interface is set up (xvs owns it, as a bridge port would be).
    pub fn open(port: &Port, t: &Tables, cores: &Cores, force_copy: bool) -> anyhow::Result<(PortIo, Vec<IoPort>)> {
        let ifindex = netdev::ifindex(&port.name).ok_or_else(|| anyhow::anyhow!("interface not found"))?;
        let n = cores.cores.len().max(1);
        if matches!(port.kind, PortKind::Vm { .. }) && !netdev::is_up(&port.name) {
            netdev::set_up(&port.name).map_err(|e| anyhow::anyhow!("setting {} up: {e}", port.name))?;
        }
        if matches!(port.kind, PortKind::Vm { .. }) && netdev::is_tap(&port.name) {
            let attached = Attached::attach(&port.name, Role::VmTap)?;
            let fanout = (n > 1).then_some(ifindex as u16);
            let mut per = Vec::new();
            for c in &cores.cores {
                per.push(IoPort::Packet(Box::new(PacketPort::open(&port.name, c.umem.clone(), fanout)?)));
            }
            return Ok((PortIo { attached, ifindex, io: "af_packet" }, per));
        }
        let role = match port.kind {
            PortKind::Uplink => Role::Uplink { vtep_ip: t.underlay.vtep_ip, udp_port: crate::wire::VXLAN_PORT },
            PortKind::Vm { .. } => Role::Vm,
        };
        let mut attached = Attached::attach(&port.name, role)?;
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
        let per = socks.into_iter().map(|q| IoPort::Xsk(QueueSet::new(q))).collect();
        Ok((PortIo { attached, ifindex, io: "af_xdp" }, per))
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

/// Everything the control plane owns.
pub struct ControlState {
    /// The desired configuration, except static FDB entries, which live in `fdb`.
    desired: Config,
    /// Static FDB entries per tenant name: MAC -> VTEP (the source of truth for them).
    fdb: HashMap<String, BTreeMap<MacAddr, IpAddr>>,
    /// Whether `tables.static_fdb` lags behind `fdb` (changed through the fast path).
    tables_stale: bool,
    tables: Arc<Tables>,
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
}

type Reply = Result<Value, String>;

impl ControlState {
    /// The control state of a running xvsd.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        desired: Config,
        tables: Arc<Tables>,
        store: Box<dyn Store>,
        ports_io: HashMap<String, PortIo>,
        cores: Cores,
        opts: Options,
    ) -> ControlState {
        let mut s = ControlState {
            desired: Config { tenants: vec![], ..desired.clone() },
            fdb: HashMap::new(),
            tables_stale: false,
            tables,
            store,
            ports_io,
            life: HashMap::new(),
            down_at: HashMap::new(),
            cores,
            opts,
            started: Instant::now(),
        };
        s.set_desired(desired);
        s
    }

    /// Takes `c` as the desired configuration, moving its static FDB entries into the index.
    fn set_desired(&mut self, mut c: Config) {
        self.fdb.clear();
        for t in &mut c.tenants {
            let idx = self.fdb.entry(t.name.clone()).or_default();
            for f in t.fdb.drain(..) {
                // however the file wrote it (`0A`, `-`): one key per address (the config was
                // validated, so every MAC parses)
                if let Ok(m) = parse_mac(&f.mac) {
                    idx.insert(m, f.vtep);
                }
            }
        }
        self.desired = c;
    }

    /// The whole desired configuration, static FDB entries included (sorted by MAC).
    pub fn materialize(&self) -> Config {
        materialize(&self.desired, &self.fdb)
    }

    /// Adds and removes static FDB entries of one tenant without rebuilding the tables: the
    /// fast path for large FDBs (validated against the current tables, journaled, then sent
    /// to the core as a delta).
    fn fdb_change(&mut self, tenant: &str, add: Vec<FdbEntry>, del: Vec<String>) -> Reply {
        let tid = self.tables.tenant_by_name(tenant).ok_or_else(|| format!("unknown tenant {tenant:?}"))?;
        let tn = self.tables.tenant(tid).ok_or_else(|| format!("unknown tenant {tenant:?}"))?;
        let idx = self.fdb.get(tenant);
        let mut adds = Vec::with_capacity(add.len());
        for e in add {
            let mac = parse_mac(&e.mac).map_err(|x| format!("tenant {tenant:?} fdb: {x}"))?;
            if !is_assignable_mac(&mac) {
                return Err(format!("tenant {tenant:?} fdb: MAC {} is not a unicast address", mac_str(&mac)));
            }
            let vtep: IpAddr = e.vtep.parse().map_err(|_| format!("malformed IP address {:?}", e.vtep))?;
            let v4 = match vtep {
                IpAddr::V4(v) if tn.vteps.contains(&v) => v,
                _ => {
                    return Err(format!(
                        "tenant {tenant:?}: static FDB entry {} points at VTEP {vtep}, which is not in the tenant's vteps",
                        mac_str(&mac)
                    ));
                }
            };
            if let Some(p) = tn
                .ports
                .iter()
                .filter_map(|p| self.tables.port(*p))
                .find(|p| matches!(&p.kind, PortKind::Vm { mac: m, .. } if *m == mac))
            {
                return Err(format!(
                    "tenant {tenant:?}: duplicate MAC {} (port {} and static FDB entry)",
                    mac_str(&mac),
                    p.name
                ));
            }
            adds.push((mac, vtep, v4));
        }
        let mut dels = Vec::with_capacity(del.len());
        for m in del {
            let mac = parse_mac(&m).map_err(|x| format!("tenant {tenant:?} fdb: {x}"))?;
            if !idx.is_some_and(|i| i.contains_key(&mac)) && !adds.iter().any(|(a, _, _)| *a == mac) {
                return Err(format!("no static FDB entry {} in tenant {tenant:?}", mac_str(&mac)));
            }
            dels.push(mac);
        }
        // The same bounds as a whole-config change (config::check_static_bounds): the
        // tenant's static entries, its ports' MACs included, within its mac_limit; all of
        // them within fdb_capacity.
        let new_keys = adds.iter().filter(|(m, _, _)| !idx.is_some_and(|i| i.contains_key(m))).count();
        let (have, ports) = (idx.map_or(0, BTreeMap::len), tn.ports.len());
        let after = (have + new_keys + ports).saturating_sub(dels.len());
        if after > tn.mac_limit as usize {
            return Err(format!(
                "tenant {tenant:?}: {after} static FDB entries (port MACs included), more than its mac_limit {}",
                tn.mac_limit
            ));
        }
        let all_ports = self.tables.live_ports().filter(|(_, p)| matches!(p.kind, PortKind::Vm { .. })).count();
        let total =
            (self.fdb.values().map(BTreeMap::len).sum::<usize>() + all_ports + new_keys).saturating_sub(dels.len());
        if total > self.tables.fdb_capacity as usize {
            return Err(format!(
                "{total} static FDB entries (port MACs included), more than daemon.fdb_capacity {}",
                self.tables.fdb_capacity
            ));
        }
        let record = if dels.is_empty() {
            Record::FdbAdd {
                tenant: tenant.to_string(),
                entries: adds.iter().map(|(m, v, _)| (mac_str(m), *v)).collect(),
            }
        } else {
            Record::FdbDel { tenant: tenant.to_string(), macs: dels.iter().map(mac_str).collect() }
        };
        // The inverse of this change, should it fail to become durable.
        let previous = |m: &MacAddr| idx.and_then(|i| i.get(m)).map(|v| (*m, *v));
        let undo_add: Vec<(TenantId, MacAddr, FdbDest)> = adds
            .iter()
            .filter_map(|(m, _, _)| previous(m))
            .chain(dels.iter().filter_map(previous))
            .filter_map(|(m, v)| match v {
                IpAddr::V4(v4) => Some((tid, m, FdbDest::Remote(v4))),
                IpAddr::V6(_) => None,
            })
            .collect();
        let undo_del: Vec<(TenantId, MacAddr)> =
            adds.iter().filter(|(m, _, _)| previous(m).is_none()).map(|(m, _, _)| (tid, *m)).collect();
        // Publish to the core and make it durable at the same time; reply when both are done.
        let t0 = Instant::now();
        let add: Vec<(TenantId, MacAddr, FdbDest)> =
            adds.iter().map(|(m, _, v4)| (tid, *m, FdbDest::Remote(*v4))).collect();
        let del: Vec<(TenantId, MacAddr)> = dels.iter().map(|m| (tid, *m)).collect();
        let mut waits = Vec::new();
        for k in 0..self.cores.cores.len() {
            let (done_tx, done_rx) = crossbeam::channel::bounded(1);
            self.cores.send(k, CoreMsg::Fdb { add: add.clone(), del: del.clone(), done: done_tx })?;
            waits.push(done_rx);
        }
        let saved = {
            let mut after = None;
            let (desired, fdb) = (&self.desired, &self.fdb);
            let mut current = || {
                after
                    .get_or_insert_with(|| {
                        let mut c = materialize(desired, fdb);
                        record.apply(&mut c);
                        c
                    })
                    .clone()
            };
            self.store.log(&record, &mut current)
        };
        let live = waits.iter().all(|w| w.recv_timeout(Duration::from_secs(5)).is_ok());
        let live_us = t0.elapsed().as_micros() as u64;
        if let Err(e) = saved {
            let _ = self.cores.send_all_and_wait(|_, done| CoreMsg::Fdb {
                add: undo_add.clone(),
                del: undo_del.clone(),
                done,
            });
            return Err(format!("saving state: {e:#} (change rolled back)"));
        }
        let idx = self.fdb.entry(tenant.to_string()).or_default();
        for (m, v, _) in &adds {
            idx.insert(*m, *v);
        }
        for m in &dels {
            idx.remove(m);
        }
        self.tables_stale = true;
        if !live {
            return Err("stored, but the forwarding core did not confirm the change within 5 s".into());
        }
        Ok(json!({"applied": true, "live_us": live_us}))
    }

    /// Follows VM ports' interfaces, on every link event (`names`: the interfaces the events
    /// were about; empty: check every port). A port whose interface went away, was recreated
    /// (new index) or was set down is detached and waits; a waiting port whose interface is
    /// there is attached again, with no command. Other ports keep forwarding throughout.
    pub fn reconcile(&mut self, names: &[String]) {
        let t = Arc::clone(&self.tables);
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
            match PortIo::open(p, &t, &self.cores, self.opts.force_copy) {
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

    /// Handles one command.
    pub fn handle(&mut self, cmd: Command) -> Response {
        match self.dispatch(cmd) {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e),
        }
    }

    fn tenant_cfg(&self, name: &str) -> Result<usize, String> {
        self.desired.tenants.iter().position(|t| t.name == name).ok_or_else(|| format!("unknown tenant {name:?}"))
    }

    fn dispatch(&mut self, cmd: Command) -> Reply {
        match cmd {
            Command::Status {} => Ok(self.status()),
            Command::TenantAdd { name, vni, mac_limit, guarantee, limit, weight } => {
                if self.desired.tenants.iter().any(|t| t.name == name) {
                    return Err(format!("tenant {name:?} already exists"));
                }
                let mut c = self.materialize();
                c.tenants.push(TenantConfig {
                    name,
                    vni,
                    mac_limit: mac_limit.unwrap_or(DEFAULT_MAC_LIMIT),
                    vteps: vec![],
                    fdb: vec![],
                    arp: vec![],
                    guarantee,
                    limit,
                    weight,
                });
                self.apply(c)
            }
            Command::TenantSet { name, guarantee, limit, weight } => {
                let i = self.tenant_cfg(&name)?;
                let mut c = self.materialize();
                let clear = |v: Option<String>, old: Option<String>| match v {
                    Some(x) if x == "none" => None,
                    Some(x) => Some(x),
                    None => old,
                };
                let t = &mut c.tenants[i];
                t.guarantee = clear(guarantee, t.guarantee.take());
                t.limit = clear(limit, t.limit.take());
                if weight.is_some() {
                    t.weight = weight;
                }
                self.apply(c)
            }
            Command::QosShow {} => Ok(self.qos_json()),
            Command::TenantDel { name } => {
                let i = self.tenant_cfg(&name)?;
                let ports: Vec<&str> =
                    self.desired.ports.iter().filter(|p| p.tenant == name).map(|p| p.interface.as_str()).collect();
                if !ports.is_empty() {
                    return Err(format!("tenant {name:?} still has ports: {} (delete them first)", ports.join(", ")));
                }
                let mut c = self.materialize();
                c.tenants.remove(i);
                self.apply(c)
            }
            Command::TenantList {} => {
                Ok(Value::Array(self.tables.live_tenants().map(|(id, _)| self.tenant_json(id.index())).collect()))
            }
            Command::TenantShow { name } => {
                let id = self.tables.tenant_by_name(&name).ok_or_else(|| format!("unknown tenant {name:?}"))?;
                Ok(self.tenant_json(id.index()))
            }
            Command::PortAdd { interface, tenant, mac, ips, police_rate, police_burst } => {
                if let Some(p) = self.desired.ports.iter().find(|p| p.interface == interface) {
                    return Err(format!("port {interface:?} already exists (in tenant {:?})", p.tenant));
                }
                self.tenant_cfg(&tenant)?;
                let mac = parse_mac(&mac).map_err(|e| e.to_string())?;
                let ips = ips
                    .iter()
                    .map(|s| s.parse::<IpAddr>().map_err(|_| format!("malformed IP address {s:?}")))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut c = self.materialize();
                let policer = match (police_rate, police_burst) {
                    (Some(rate), burst) => Some(PolicerConfig { rate, burst }),
                    (None, Some(_)) => return Err("a policer burst needs a policer rate".into()),
                    (None, None) => None,
                };
                c.ports.push(PortConfig { interface, tenant, mac: mac_str(&mac), ips, policer });
                self.apply(c)
            }
            Command::PortDel { interface } => {
                let i = self
                    .desired
                    .ports
                    .iter()
                    .position(|p| p.interface == interface)
                    .ok_or_else(|| format!("unknown port {interface:?}"))?;
                let mut c = self.materialize();
                c.ports.remove(i);
                self.apply(c)
            }
            Command::PortList {} => {
                Ok(Value::Array(self.tables.live_ports().map(|(id, _)| self.port_json(id)).collect()))
            }
            Command::PortShow { interface } => {
                let id = self.tables.port_by_name(&interface).ok_or_else(|| format!("unknown port {interface:?}"))?;
                Ok(self.port_json(id))
            }
            Command::VtepAdd { tenant, ip } => {
                let i = self.tenant_cfg(&tenant)?;
                let ip: IpAddr = ip.parse().map_err(|_| format!("malformed IP address {ip:?}"))?;
                let mut c = self.materialize();
                c.tenants[i].vteps.push(ip);
                self.apply(c)
            }
            Command::VtepDel { tenant, ip } => {
                let i = self.tenant_cfg(&tenant)?;
                let ipa: IpAddr = ip.parse().map_err(|_| format!("malformed IP address {ip:?}"))?;
                let mut c = self.materialize();
                let t = &mut c.tenants[i];
                let pos = t
                    .vteps
                    .iter()
                    .position(|v| *v == ipa)
                    .ok_or_else(|| format!("tenant {tenant:?} has no VTEP {ip}"))?;
                let users: Vec<String> = t.fdb.iter().filter(|f| f.vtep == ipa).map(|f| f.mac.clone()).collect();
                if !users.is_empty() {
                    return Err(format!(
                        "VTEP {ip} still has static FDB entries in tenant {tenant:?}: {}",
                        users.join(", ")
                    ));
                }
                t.vteps.remove(pos);
                self.apply(c)
            }
            Command::VtepList { tenant } => {
                if let Some(t) = &tenant {
                    self.tenant_cfg(t)?;
                }
                let rows: Vec<Value> = self
                    .tables
                    .live_tenants()
                    .filter(|(_, t)| tenant.as_ref().is_none_or(|n| *n == t.name))
                    .flat_map(|(_, t)| {
                        t.vteps
                            .iter()
                            .map(move |v| json!({"tenant": t.name, "vni": t.vni.get(), "vtep": v.to_string()}))
                    })
                    .collect();
                Ok(Value::Array(rows))
            }
            Command::FdbAdd { tenant, entries } => {
                if entries.is_empty() {
                    return Err("fdb add needs at least one entry".into());
                }
                self.fdb_change(&tenant, entries, vec![])
            }
            Command::FdbDel { tenant, macs } => {
                if macs.is_empty() {
                    return Err("fdb del needs at least one MAC".into());
                }
                self.fdb_change(&tenant, vec![], macs)
            }
            Command::FdbShow { tenant } => {
                let id = match &tenant {
                    Some(t) => Some(self.tables.tenant_by_name(t).ok_or_else(|| format!("unknown tenant {t:?}"))?),
                    None => None,
                };
                let (tx, rx) = crossbeam::channel::bounded(1);
                self.cores.send(0, CoreMsg::FdbDump { tenant: id, reply: tx })?;
                rx.recv_timeout(Duration::from_secs(5))
                    .map(Value::Array)
                    .map_err(|_| "forwarding core did not answer".to_string())
            }
            Command::Stats {} => {
                Ok(self.snapshot().map(|s| serde_json::to_value(s).unwrap_or(Value::Null)).unwrap_or(Value::Null))
            }
            Command::StatsClear {} => {
                for k in 0..self.cores.cores.len() {
                    self.cores.send(k, CoreMsg::ClearStats)?;
                }
                Ok(json!("cleared"))
            }
            Command::Trace { port, frame_hex } => {
                let id = self.tables.port_by_name(&port).ok_or_else(|| format!("unknown port {port:?}"))?;
                let frame = decode_hex(&frame_hex)?;
                let (tx, rx) = crossbeam::channel::bounded(1);
                self.cores.send(0, CoreMsg::Trace { port: id, frame, reply: tx })?;
                rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "forwarding core did not answer".to_string())
            }
            Command::ConfigExport {} => Ok(json!({"toml": self.materialize().to_toml()})),
            Command::ConfigImport { toml } => {
                let c = Config::from_toml(&toml).map_err(|e| e.to_string())?;
                self.apply(c)
            }
        }
    }

    /// Applies `new` entirely or not at all.
    fn apply(&mut self, new: Config) -> Reply {
        if new.uplink != self.desired.uplink {
            return Err("uplink settings cannot change while xvsd runs (edit the config and restart)".into());
        }
        if new.daemon != self.desired.daemon {
            return Err("daemon settings cannot change while xvsd runs (edit the config and restart)".into());
        }
        let tables = daemon::preflight(&new, Some(&self.tables)).map_err(|e| format!("{e:#}"))?;
        if self.tables_stale {
            // Static entries changed through the fast path: diff against tables that have them.
            let u = &self.tables.underlay;
            if let Ok(t) = self.materialize().build_after(Some(&self.tables), Some(u.mac), Some(u.mtu)) {
                self.tables = Arc::new(t);
            }
            self.tables_stale = false;
        }
        // Open the new ports first: if one fails, nothing has changed yet.
        let mut opened = Vec::new();
        let mut attach = Vec::new();
        for (id, p) in tables.live_ports() {
            if self.ports_io.contains_key(&p.name) {
                continue;
            }
            if matches!(p.kind, PortKind::Vm { .. }) && netdev::ifindex(&p.name).is_none() {
                continue; // configured, waiting for its interface (see `reconcile`)
            }
            match PortIo::open(p, &tables, &self.cores, self.opts.force_copy) {
                Ok((io, sets)) => {
                    opened.push((p.name.clone(), io));
                    attach.push((id, sets));
                }
                Err(e) => return Err(format!("port {:?}: {e:#}", p.name)),
            }
        }
        let removed: Vec<(PortId, String)> = self
            .tables
            .live_ports()
            .filter(|(_, p)| tables.port_by_name(&p.name).is_none())
            .map(|(id, p)| (id, p.name.clone()))
            .collect();
        self.store.save(&new).map_err(|e| format!("saving state: {e:#}"))?;
        let tables = Arc::new(tables);
        let change = Change::between(&self.tables, &tables);
        let detach: Vec<PortId> = removed.iter().map(|(id, _)| *id).collect();
        let mut attach: Vec<Vec<(PortId, IoPort)>> = {
            let mut per: Vec<Vec<(PortId, IoPort)>> = (0..self.cores.cores.len()).map(|_| Vec::new()).collect();
            for (id, sets) in attach {
                for (k, s) in sets.into_iter().enumerate() {
                    per[k].push((id, s));
                }
            }
            per
        };
        let live = self
            .cores
            .send_all_and_wait(|k, done| CoreMsg::Update {
                tables: Arc::clone(&tables),
                change: change.clone(),
                attach: std::mem::take(&mut attach[k]),
                detach: detach.clone(),
                done,
            })
            .is_ok();
        for (_, name) in &removed {
            self.ports_io.remove(name);
        }
        self.ports_io.extend(opened);
        self.set_desired(new);
        self.tables = tables;
        if !live {
            return Err("stored, but the forwarding core did not confirm the change within 5 s".into());
        }
        Ok(json!("applied"))
    }

    fn qos_json(&self) -> Value {
        let rep = self.cores.report();
        let link = self.tables.underlay.rate;
        let rows: Vec<Value> = self
            .tables
            .live_tenants()
            .map(|(id, t)| {
                let m = rep.as_ref().and_then(|r| r.qos.iter().find(|q| q.tenant == id.0).cloned());
                json!({
                    "tenant": t.name,
                    "vni": t.vni.get(),
                    "guarantee_bps": t.qos.guarantee,
                    "limit_bps": t.qos.limit,
                    "weight": t.qos.weight,
                    "rate_bps": m.as_ref().map(|m| m.rate_bps),
                    "sent_bytes": m.as_ref().map(|m| m.stats.bytes),
                    "backlog": m.as_ref().map(|m| m.stats.backlog),
                    "drops": m.as_ref().map(|m| m.stats.drops),
                })
            })
            .collect();
        json!({"link_bps": link, "tenants": rows})
    }

    fn counters_of_tenant(&self, idx: usize) -> Option<Counters> {
        self.cores.report()?.stats.tenants.get(idx).cloned()
    }

    fn counters_of_port(&self, idx: usize) -> Option<Counters> {
        self.cores.report()?.stats.ports.get(idx).cloned()
    }

    fn tenant_json(&self, idx: usize) -> Value {
        let Some(t) = self.tables.tenants.get(idx).and_then(Option::as_ref) else { return Value::Null };
        json!({
            "name": t.name,
            "vni": t.vni.get(),
            "mac_limit": t.mac_limit,
            "ports": t.ports.iter().filter_map(|p| self.tables.port(*p).map(|x| x.name.clone())).collect::<Vec<_>>(),
            "vteps": t.vteps.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            "static_fdb": self.fdb.get(&t.name).map_or(0, BTreeMap::len),
            "counters": self.counters_of_tenant(idx),
        })
    }

    /// A port's status; `rep` is the merged core report (merged once by the caller).
    fn port_status(&self, id: PortId, rep: Option<&CoreReport>) -> Option<PortStatus> {
        let p = self.tables.port(id)?;
        let modes =
            rep.and_then(|r| r.afxdp.iter().find(|(i, _)| *i == id.0).map(|(_, m)| m.clone())).unwrap_or_default();
        Some(match &p.kind {
            PortKind::Uplink => PortStatus {
                name: p.name.clone(),
                kind: "uplink",
                tenant: None,
                mac: Some(mac_str(&self.tables.underlay.mac)),
                ips: vec![self.tables.underlay.vtep_ip.to_string()],
                afxdp_mode: modes,
                xdp_mode: self.ports_io.get(&p.name).map(|io| io.attached.mode),
                state: if self.ports_io.contains_key(&p.name) { "attached" } else { "waiting" },
                io: self.ports_io.get(&p.name).map(|io| io.io),
                lost: 0,
                reattached: 0,
            },
            PortKind::Vm { tenant, mac, ipv4, ipv6 } => PortStatus {
                name: p.name.clone(),
                kind: "vm",
                tenant: self.tables.tenant(*tenant).map(|t| t.name.clone()),
                mac: Some(mac_str(mac)),
                ips: ipv4.iter().map(|a| a.to_string()).chain(ipv6.iter().map(|a| a.to_string())).collect(),
                afxdp_mode: modes,
                xdp_mode: self.ports_io.get(&p.name).map(|io| io.attached.mode),
                state: if self.ports_io.contains_key(&p.name) { "attached" } else { "waiting" },
                io: self.ports_io.get(&p.name).map(|io| io.io),
                lost: self.life.get(&p.name).map_or(0, |l| l.lost),
                reattached: self.life.get(&p.name).map_or(0, |l| l.reattached),
            },
        })
    }

    fn port_json(&self, id: PortId) -> Value {
        let mut v = serde_json::to_value(self.port_status(id, self.cores.report().as_ref())).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("counters".into(), serde_json::to_value(self.counters_of_port(id.index())).unwrap_or(Value::Null));
        }
        v
    }

    fn status(&self) -> Value {
        let rep = self.cores.report();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": proto::VERSION,
            "uptime_secs": self.started.elapsed().as_secs_f64(),
            "uplink": self.tables.underlay.interface,
            "vtep_ip": self.tables.underlay.vtep_ip.to_string(),
            "underlay_mtu": self.tables.underlay.mtu,
            "cores": self.desired.daemon.cores,
            "config": self.opts.config_path,
            "state": self.store.describe(),
            "ports": self.tables.live_ports().filter_map(|(id, _)| self.port_status(id, rep.as_ref())).collect::<Vec<_>>(),
            "tenants": self.tables.live_tenants().count(),
            "core": rep.as_ref().map(|r| r.core.clone()),
            "per_core": rep.as_ref().map(|r| r.per_core.clone()),
        })
    }

    /// Status and counters (once the core has reported).
    pub fn snapshot(&self) -> Option<Snapshot> {
        let r = self.cores.report()?;
        Some(Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            config: self.opts.config_path.clone(),
            state: self.store.describe(),
            uplink: self.tables.underlay.interface.clone(),
            cores: self.desired.daemon.cores.clone(),
            ports: (0..self.tables.ports.len()).map(|i| self.port_status(PortId(i as u16), Some(&r))).collect(),
            tenants: self.tables.tenants.iter().map(|t| t.as_ref().map(|t| (t.name.clone(), t.vni.get()))).collect(),
            stats: r.stats,
            host: r.host,
            xdp: self
                .tables
                .live_ports()
                .filter_map(|(_, p)| self.ports_io.get(&p.name).map(|io| (p.name.clone(), io)))
                .map(|(name, io)| {
                    let c = io.attached.counters();
                    (name, Counter::ALL.iter().map(|k| (k.name(), c[*k as usize])).collect())
                })
                .collect(),
            neighbors: r.neighbors,
            core: r.core,
            qos: self.tables.underlay.rate.map(|l| (l, r.qos)),
            per_core: r.per_core,
        })
    }
}

fn materialize(desired: &Config, fdb: &HashMap<String, BTreeMap<MacAddr, IpAddr>>) -> Config {
    let mut c = desired.clone();
    for t in &mut c.tenants {
        if let Some(idx) = fdb.get(&t.name) {
            t.fdb = idx.iter().map(|(m, v)| StaticFdbConfig { mac: mac_str(m), vtep: *v }).collect();
        }
    }
    c
}

/// A frame written as hex digits, optionally separated by whitespace or colons.
fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    if clean.len() > 2 * 9216 {
        return Err(format!("frame hex too long ({} digits, at most {})", clean.len(), 2 * 9216));
    }
    // hex works on bytes; name a bad character as written, not one of its UTF-8 bytes
    if let Some((i, c)) = clean.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(format!("malformed frame hex: {c:?} at digit {i} is not a hex digit"));
    }
    hex::decode(&clean).map_err(|e| match e {
        hex::FromHexError::OddLength => format!("malformed frame hex: odd number of digits ({})", clean.len()),
        e => format!("malformed frame hex: {e}"),
    })
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
                let _ = reply(&mut conn, &Response::err(busy));
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
            let _ =
                reply(&mut out, &Response::err(format!("request too large (more than {} bytes)", proto::MAX_REQUEST)));
            return;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        let resp = match proto::parse_request(&buf) {
            Ok(req) => handle_guarded(state, req.cmd),
            Err(e) => Response::err(e),
        };
        if reply(&mut out, &resp).is_err() || !complete {
            return;
        }
    }
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
fn guarded<T>(state: &Mutex<T>, what: &str, f: impl FnOnce(&mut T) -> Response) -> Response {
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
            Response::err(format!("internal error in {what}: {msg} (the request was not applied; please report it)"))
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
    fn hex_frames_decode_and_bad_input_is_an_error_naming_it() {
        assert_eq!(decode_hex("02:00 0a ff").unwrap(), vec![2, 0, 0x0a, 0xff]);
        // non-ASCII input used to slice a char apart and panic
        let e = decode_hex("aéb").unwrap_err();
        assert!(e.contains("'é'"), "{e}");
        assert!(decode_hex("abc").unwrap_err().contains("odd number of digits (3)"));
        assert!(decode_hex("zz").unwrap_err().contains("'z' at digit 0"));
        assert!(decode_hex(&"00".repeat(9217)).unwrap_err().contains("too long"));
    }

    #[test]
    fn a_panicking_handler_fails_its_request_only() {
        let state = Mutex::new(1u32);
        let r = guarded(&state, "tenant_add", |_| panic!("boom"));
        assert!(!r.ok);
        let e = r.error.unwrap();
        assert!(e.contains("internal error in tenant_add: boom"), "{e}");
        // the lock is usable again and the state is what it was
        let r = guarded(&state, "status", |s| Response::ok(json!(*s)));
        assert!(r.ok);
        assert_eq!(r.result, Some(json!(1)));
    }
}
