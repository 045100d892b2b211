//! The control plane's decisions, without I/O: a request is checked against the desired
//! state and turned into a [`Plan`] (the new desired state and the effects that carry it
//! out: ports to open and close, what to store, what to send the cores). Planning takes
//! `&self`, so a refused request cannot change anything; the daemon carries the effects out
//! (`control::server`) and commits the plan only once they succeeded.
//!
//! May depend on: config, capture (its limits), tables, pipeline (`Change`), types, wire and the
//! control protocol's types. Never on io, daemon or anything that does I/O.

use super::proto::reply::{ConfigToml, Reply, VtepRow};
use super::proto::{ArpProbe, Command, FdbEntry, UdpProbe};
use crate::config::{Config, DEFAULT_MAC_LIMIT, PolicerConfig, PortConfig, Record, StaticFdbConfig, TenantConfig};
use crate::pipeline::Change;
use crate::tables::{FdbDest, PortKind, Tables};
use crate::types::{PortId, TenantId, is_assignable_mac, mac_str, parse_mac};
use crate::wire::MacAddr;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// Static FDB entries per tenant name: MAC -> VTEP.
type FdbIndex = HashMap<String, BTreeMap<MacAddr, IpAddr>>;

/// The desired state as the control plane holds it.
#[derive(Debug, Clone)]
pub struct Plane {
    /// The desired configuration, except static FDB entries, which live in `fdb`.
    desired: Config,
    /// Static FDB entries (the source of truth for them; one key per address however the
    /// file wrote it).
    fdb: FdbIndex,
    /// The tables the cores run on.
    tables: Arc<Tables>,
    /// Whether `tables.static_fdb` lags behind `fdb` (changed through the fast path).
    tables_stale: bool,
}

/// What a request does.
#[derive(Debug)]
pub enum Plan {
    /// A new desired configuration: see [`Apply`].
    Apply(Box<Apply>),
    /// Static FDB entries added or removed in place: see [`FdbPlan`].
    Fdb(Box<FdbPlan>),
    /// Nothing changes; the answer is this.
    Answer(Reply),
    /// Nothing changes; the answer needs the running daemon (counters, sockets, cores).
    Read(Read),
}

/// A whole-configuration change. Effects, in order: open every port of `tables` that is not
/// open (its interface present); store `config`; send `tables` and `change` to every core;
/// close `removed`. Then [`Plane::commit_apply`]. If opening or storing fails, nothing was
/// sent and the plan is dropped.
#[derive(Debug)]
pub struct Apply {
    /// The new desired configuration, static FDB entries included.
    pub config: Config,
    /// The tables built from it (ids kept from the running tables).
    pub tables: Arc<Tables>,
    /// What the cores change, from the tables they run on.
    pub change: Change,
    /// Ports that are no longer configured.
    pub removed: Vec<(PortId, String)>,
}

/// A static FDB change without rebuilding the tables. Effects: send `add`/`del` to every
/// core and log `record` in the store, at once; if storing fails, send `undo_add`/`undo_del`
/// and drop the plan, else [`Plane::commit_fdb`].
#[derive(Debug)]
pub struct FdbPlan {
    /// The tenant.
    pub tenant: String,
    /// The journal record.
    pub record: Record,
    /// Entries the cores add or replace.
    pub add: Vec<(TenantId, MacAddr, FdbDest)>,
    /// Entries the cores remove.
    pub del: Vec<(TenantId, MacAddr)>,
    /// What puts back the cores' entries as they were before `add` and `del`.
    pub undo_add: Vec<(TenantId, MacAddr, FdbDest)>,
    /// Entries `add` created, removed again on undo.
    pub undo_del: Vec<(TenantId, MacAddr)>,
    adds: Vec<(MacAddr, IpAddr)>,
    dels: Vec<MacAddr>,
}

/// Queries answered from the running daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// `status`.
    Status,
    /// `tenant list`.
    TenantList,
    /// `tenant show`.
    TenantShow(TenantId),
    /// `port list`.
    PortList,
    /// `port show`.
    PortShow(PortId),
    /// `qos show`.
    QosShow,
    /// `fdb show`, of one tenant or all.
    FdbShow(Option<TenantId>),
    /// `stats`.
    Stats,
    /// `stats clear` (counters live in the cores).
    StatsClear,
    /// `trace`: a frame arriving on a port.
    Trace(PortId, Vec<u8>),
    /// `capture`: taps on a port, streamed on the request's connection.
    Capture(CapturePlan),
}

/// A packet capture to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePlan {
    /// The port.
    pub port: PortId,
    /// Its interface.
    pub name: String,
    /// Only this tenant's frames.
    pub tenant: Option<(TenantId, String)>,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration_ms: Option<u64>,
    /// Bytes kept of each frame.
    pub snaplen: u32,
}

type Planned = Result<Plan, String>;

impl Plane {
    /// The control plane over `desired`, whose tables the cores run on.
    pub fn new(desired: Config, tables: Arc<Tables>) -> Plane {
        let mut p = Plane {
            desired: Config { tenants: vec![], ..desired.clone() },
            fdb: HashMap::new(),
            tables,
            tables_stale: false,
        };
        p.set_desired(desired);
        p
    }

    /// The tables the cores run on (static FDB entries may lag, see [`Plane::materialize`]).
    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    /// The desired configuration without its static FDB entries (cheap to read).
    pub fn desired(&self) -> &Config {
        &self.desired
    }

    /// How many static FDB entries `tenant` has.
    pub fn static_entries(&self, tenant: &str) -> usize {
        self.fdb.get(tenant).map_or(0, BTreeMap::len)
    }

    /// The whole desired configuration, static FDB entries included (sorted by MAC).
    pub fn materialize(&self) -> Config {
        let mut c = self.desired.clone();
        for t in &mut c.tenants {
            if let Some(idx) = self.fdb.get(&t.name) {
                t.fdb = idx.iter().map(|(m, v)| StaticFdbConfig { mac: mac_str(m), vtep: *v }).collect();
            }
        }
        c
    }

    /// Takes `c` as the desired configuration, moving its static FDB entries into the index.
    fn set_desired(&mut self, mut c: Config) {
        self.fdb.clear();
        for t in &mut c.tenants {
            let idx = self.fdb.entry(t.name.clone()).or_default();
            for f in t.fdb.drain(..) {
                // the config was validated, so every MAC parses
                if let Ok(m) = parse_mac(&f.mac) {
                    idx.insert(m, f.vtep);
                }
            }
        }
        self.desired = c;
    }

    /// Takes an applied plan as the new state (its effects succeeded).
    pub fn commit_apply(&mut self, a: Apply) {
        self.set_desired(a.config);
        self.tables = a.tables;
        self.tables_stale = false;
    }

    /// Takes an applied static FDB change as the new state (its effects succeeded).
    pub fn commit_fdb(&mut self, f: FdbPlan) {
        let idx = self.fdb.entry(f.tenant).or_default();
        for (m, v) in f.adds {
            idx.insert(m, v);
        }
        for m in &f.dels {
            idx.remove(m);
        }
        self.tables_stale = true;
    }

    /// The configuration `f` leaves (for a store that compacts its journal).
    pub fn after_fdb(&self, f: &FdbPlan) -> Config {
        let mut c = self.materialize();
        f.record.apply(&mut c);
        c
    }

    fn tenant_cfg(&self, name: &str) -> Result<usize, String> {
        self.desired.tenants.iter().position(|t| t.name == name).ok_or_else(|| format!("unknown tenant {name:?}"))
    }

    fn tenant_id(&self, name: &str) -> Result<TenantId, String> {
        self.tables.tenant_by_name(name).ok_or_else(|| format!("unknown tenant {name:?}"))
    }

    fn port_id(&self, name: &str) -> Result<PortId, String> {
        self.tables.port_by_name(name).ok_or_else(|| format!("unknown port {name:?}"))
    }

    /// What `cmd` does, or why it is refused.
    pub fn plan(&self, cmd: Command) -> Planned {
        match cmd {
            Command::Status {} => Ok(Plan::Read(Read::Status)),
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
                self.plan_config(c)
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
                self.plan_config(c)
            }
            Command::QosShow {} => Ok(Plan::Read(Read::QosShow)),
            Command::TenantDel { name } => {
                let i = self.tenant_cfg(&name)?;
                let ports: Vec<&str> =
                    self.desired.ports.iter().filter(|p| p.tenant == name).map(|p| p.interface.as_str()).collect();
                if !ports.is_empty() {
                    return Err(format!("tenant {name:?} still has ports: {} (delete them first)", ports.join(", ")));
                }
                let mut c = self.materialize();
                c.tenants.remove(i);
                self.plan_config(c)
            }
            Command::TenantList {} => Ok(Plan::Read(Read::TenantList)),
            Command::TenantShow { name } => Ok(Plan::Read(Read::TenantShow(self.tenant_id(&name)?))),
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
                let policer = match (police_rate, police_burst) {
                    (Some(rate), burst) => Some(PolicerConfig { rate, burst }),
                    (None, Some(_)) => return Err("a policer burst needs a policer rate".into()),
                    (None, None) => None,
                };
                let mut c = self.materialize();
                c.ports.push(PortConfig { interface, tenant, mac: mac_str(&mac), ips, policer });
                self.plan_config(c)
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
                self.plan_config(c)
            }
            Command::PortList {} => Ok(Plan::Read(Read::PortList)),
            Command::PortShow { interface } => Ok(Plan::Read(Read::PortShow(self.port_id(&interface)?))),
            Command::VtepAdd { tenant, ip } => {
                let i = self.tenant_cfg(&tenant)?;
                let ip: IpAddr = ip.parse().map_err(|_| format!("malformed IP address {ip:?}"))?;
                let mut c = self.materialize();
                c.tenants[i].vteps.push(ip);
                self.plan_config(c)
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
                self.plan_config(c)
            }
            Command::VtepList { tenant } => {
                if let Some(t) = &tenant {
                    self.tenant_cfg(t)?;
                }
                let rows = self
                    .tables
                    .live_tenants()
                    .filter(|(_, t)| tenant.as_ref().is_none_or(|n| *n == t.name))
                    .flat_map(|(_, t)| {
                        t.vteps.iter().map(move |v| VtepRow {
                            tenant: t.name.clone(),
                            vni: t.vni.get(),
                            vtep: v.to_string(),
                        })
                    })
                    .collect();
                Ok(Plan::Answer(Reply::Vteps(rows)))
            }
            Command::FdbAdd { tenant, entries } => {
                if entries.is_empty() {
                    return Err("fdb add needs at least one entry".into());
                }
                self.plan_fdb(&tenant, entries, vec![])
            }
            Command::FdbDel { tenant, macs } => {
                if macs.is_empty() {
                    return Err("fdb del needs at least one MAC".into());
                }
                self.plan_fdb(&tenant, vec![], macs)
            }
            Command::FdbShow { tenant } => {
                let id = match &tenant {
                    Some(t) => Some(self.tenant_id(t)?),
                    None => None,
                };
                Ok(Plan::Read(Read::FdbShow(id)))
            }
            Command::Stats {} => Ok(Plan::Read(Read::Stats)),
            Command::StatsClear {} => Ok(Plan::Read(Read::StatsClear)),
            Command::Trace { port, frame_hex, udp, arp } => {
                let id = self.port_id(&port)?;
                let frame = match (frame_hex, udp, arp) {
                    (Some(h), None, None) => decode_hex(&h)?,
                    (None, Some(u), None) => udp_frame(&u)?,
                    (None, None, Some(a)) => arp_frame(&a)?,
                    _ => return Err("trace needs exactly one frame: frame_hex, udp or arp".into()),
                };
                Ok(Plan::Read(Read::Trace(id, frame)))
            }
            Command::Capture { port, tenant, count, duration_ms, snaplen } => {
                let id = self.port_id(&port)?;
                let tenant = match tenant {
                    Some(t) => Some((self.tenant_id(&t)?, t)),
                    None => None,
                };
                if let (Some((tid, tname)), Some(PortKind::Vm { tenant: own, .. })) =
                    (&tenant, self.tables.port(id).map(|p| &p.kind))
                    && own != tid
                {
                    let own = self.tables.tenant(*own).map_or("?", |t| t.name.as_str());
                    return Err(format!("port {port:?} belongs to tenant {own:?}, not {tname:?}"));
                }
                let max = crate::capture::MAX_SNAPLEN;
                let snaplen = snaplen.unwrap_or(max);
                if !(64..=max).contains(&snaplen) {
                    return Err(format!("snaplen {snaplen} is out of range (64..={max})"));
                }
                if count == Some(0) {
                    return Err("count 0 would capture nothing (leave it out to capture until stopped)".into());
                }
                if duration_ms == Some(0) {
                    return Err("duration 0 would capture nothing (leave it out to capture until stopped)".into());
                }
                Ok(Plan::Read(Read::Capture(CapturePlan { port: id, name: port, tenant, count, duration_ms, snaplen })))
            }
            Command::ConfigExport {} => {
                Ok(Plan::Answer(Reply::Config(ConfigToml { toml: self.materialize().to_toml() })))
            }
            Command::ConfigImport { toml } => {
                let c = Config::from_toml(&toml).map_err(|e| e.to_string())?;
                self.plan_config(c)
            }
        }
    }

    /// Plans `new` as the whole desired configuration (as a shared store derived it).
    pub fn plan_desired(&self, new: Config) -> Planned {
        self.plan_config(new)
    }

    /// Plans `new` as the whole desired configuration.
    fn plan_config(&self, new: Config) -> Planned {
        if new.uplink != self.desired.uplink {
            return Err("uplink settings cannot change while xvsd runs (edit the config and restart)".into());
        }
        if new.daemon != self.desired.daemon {
            return Err("daemon settings cannot change while xvsd runs (edit the config and restart)".into());
        }
        if new.store != self.desired.store {
            return Err("store settings cannot change while xvsd runs (edit the config and restart)".into());
        }
        // Static entries changed through the fast path: diff against tables that have them.
        let u = &self.tables.underlay;
        let base = if self.tables_stale {
            Arc::new(self.materialize().build_after(Some(&self.tables), Some(u.mac), Some(u.mtu)).map_err(|e| {
                format!("internal error: the running state no longer builds ({e}); the request was not applied")
            })?)
        } else {
            Arc::clone(&self.tables)
        };
        // The uplink cannot change, so its MAC and MTU are the running ones.
        let tables = Arc::new(new.build_after(Some(&base), Some(u.mac), Some(u.mtu)).map_err(|e| e.to_string())?);
        let removed = base
            .live_ports()
            .filter(|(_, p)| tables.port_by_name(&p.name).is_none())
            .map(|(id, p)| (id, p.name.clone()))
            .collect();
        let change = Change::between(&base, &tables);
        Ok(Plan::Apply(Box::new(Apply { config: new, tables, change, removed })))
    }

    /// Plans adding and removing static FDB entries of one tenant without rebuilding the
    /// tables: the fast path for large FDBs, checked against the current tables and the same
    /// bounds as a whole-configuration change (`config::check_static_bounds`).
    fn plan_fdb(&self, tenant: &str, add: Vec<FdbEntry>, del: Vec<String>) -> Planned {
        let tid = self.tenant_id(tenant)?;
        let tn = self.tables.tenant(tid).ok_or_else(|| format!("unknown tenant {tenant:?}"))?;
        let idx = self.fdb.get(tenant);
        let mut adds: Vec<(MacAddr, IpAddr)> = Vec::with_capacity(add.len());
        let mut add_v4 = Vec::with_capacity(add.len());
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
            // a MAC given twice: the last one wins, as it does on the cores
            match adds.iter().position(|(m, _)| *m == mac) {
                Some(i) => (adds[i], add_v4[i]) = ((mac, vtep), v4),
                None => {
                    adds.push((mac, vtep));
                    add_v4.push(v4);
                }
            }
        }
        let mut dels: Vec<MacAddr> = Vec::with_capacity(del.len());
        for m in del {
            let mac = parse_mac(&m).map_err(|x| format!("tenant {tenant:?} fdb: {x}"))?;
            if !idx.is_some_and(|i| i.contains_key(&mac)) {
                return Err(format!("no static FDB entry {} in tenant {tenant:?}", mac_str(&mac)));
            }
            if !dels.contains(&mac) {
                dels.push(mac);
            }
        }
        let known = |m: &MacAddr| idx.is_some_and(|i| i.contains_key(m));
        let new_keys = adds.iter().filter(|(m, _)| !known(m)).count();
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
            Record::FdbAdd { tenant: tenant.to_string(), entries: adds.iter().map(|(m, v)| (mac_str(m), *v)).collect() }
        } else {
            Record::FdbDel { tenant: tenant.to_string(), macs: dels.iter().map(mac_str).collect() }
        };
        // The inverse of this change, should it fail to become durable: every entry it
        // touched as it was, and the ones it created removed.
        let previous = |m: &MacAddr| idx.and_then(|i| i.get(m)).map(|v| (*m, *v));
        let undo_add = adds
            .iter()
            .map(|(m, _)| *m)
            .chain(dels.iter().copied())
            .filter_map(|m| previous(&m))
            .filter_map(|(m, v)| match v {
                IpAddr::V4(v4) => Some((tid, m, FdbDest::Remote(v4))),
                IpAddr::V6(_) => None,
            })
            .collect();
        let undo_del = adds.iter().filter(|(m, _)| !known(m)).map(|(m, _)| (tid, *m)).collect();
        let add = adds.iter().zip(&add_v4).map(|((m, _), v4)| (tid, *m, FdbDest::Remote(*v4))).collect();
        let del = dels.iter().map(|m| (tid, *m)).collect();
        Ok(Plan::Fdb(Box::new(FdbPlan {
            tenant: tenant.to_string(),
            record,
            add,
            del,
            undo_add,
            undo_del,
            adds,
            dels,
        })))
    }
}

/// A frame written as hex digits, optionally separated by whitespace or colons.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
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

fn probe_mac(what: &str, s: &str) -> Result<MacAddr, String> {
    parse_mac(s.trim()).map_err(|e| format!("{what}: {e}"))
}

fn probe_ip(what: &str, s: &str) -> Result<Ipv4Addr, String> {
    s.trim().parse().map_err(|_| format!("{what}: malformed IPv4 address {s:?}"))
}

/// The 60-byte UDP frame a `trace` probe describes.
fn udp_frame(u: &UdpProbe) -> Result<Vec<u8>, String> {
    Ok(crate::frames::udp4_min(
        probe_mac("src_mac", &u.src_mac)?,
        probe_mac("dst_mac", &u.dst_mac)?,
        probe_ip("src_ip", &u.src_ip)?,
        probe_ip("dst_ip", &u.dst_ip)?,
    ))
}

/// The ARP request a `trace` probe describes.
fn arp_frame(a: &ArpProbe) -> Result<Vec<u8>, String> {
    Ok(crate::frames::arp_request(
        probe_mac("src_mac", &a.src_mac)?,
        probe_ip("src_ip", &a.src_ip)?,
        probe_ip("target_ip", &a.target_ip)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::{Fault, Model, Outcome};
    use serde_json::{Value, json};

    const CONFIG: &str = r#"
[uplink]
interface = "up0"
vtep_ip = "192.168.77.1/24"
mac = "02:00:00:00:ff:01"
mtu = 1600
rate = "10G"
[[tenant]]
name = "blue"
vni = 100
vteps = ["192.168.77.2"]
fdb = [{ mac = "02:00:00:00:00:0A", vtep = "192.168.77.2" }]
[[tenant]]
name = "red"
vni = 200
[[port]]
interface = "b1"
tenant = "blue"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
"#;

    fn model() -> Model {
        Model::new(Config::from_toml(CONFIG).unwrap()).unwrap()
    }

    fn cmd(v: Value) -> Command {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    /// Runs `v` with `fault`; checks the model agrees, and that anything but success left
    /// the state as it was.
    fn run(m: &mut Model, v: Value, fault: Fault) -> Outcome {
        let before = m.plane.materialize();
        let out = m.run(cmd(v.clone()), fault);
        m.check().unwrap_or_else(|e| panic!("after {v} ({fault:?}): {e}"));
        if out != Outcome::Applied {
            assert_eq!(m.plane.materialize(), before, "{v} ended {out:?} but changed the state");
        }
        out
    }

    /// `v` fails when an effect fails, and applies otherwise.
    fn applies(m: &mut Model, v: Value) {
        let fault = if v["op"].as_str().is_some_and(|o| o.starts_with("fdb")) { Fault::Store } else { Fault::OpenPort };
        assert_eq!(run(m, v.clone(), fault), Outcome::Failed, "{v}");
        if fault == Fault::OpenPort {
            assert_eq!(run(m, v.clone(), Fault::Store), Outcome::Failed, "{v}");
        }
        assert_eq!(run(m, v.clone(), Fault::None), Outcome::Applied, "{v}");
    }

    fn refused(m: &mut Model, v: Value, says: &str) {
        match run(m, v.clone(), Fault::None) {
            Outcome::Refused(e) => assert!(e.contains(says), "{v}: {e:?} does not say {says:?}"),
            o => panic!("{v} was not refused: {o:?}"),
        }
    }

    #[test]
    fn tenants_are_added_changed_and_removed_or_refused_with_the_bad_value() {
        let mut m = model();
        applies(&mut m, json!({"op": "tenant_add", "name": "green", "vni": 300, "guarantee": "1G"}));
        assert!(m.plane.desired().tenants.iter().any(|t| t.name == "green"));
        refused(&mut m, json!({"op": "tenant_add", "name": "green", "vni": 301}), "tenant \"green\" already exists");
        refused(&mut m, json!({"op": "tenant_add", "name": "x", "vni": 200}), "200");
        refused(&mut m, json!({"op": "tenant_add", "name": "x", "vni": 16777216}), "16777216");
        refused(&mut m, json!({"op": "tenant_add", "name": "bad name", "vni": 5}), "bad name");
        refused(&mut m, json!({"op": "tenant_add", "name": "x", "vni": 5, "limit": "0.4"}), "0.4");
        applies(&mut m, json!({"op": "tenant_set", "name": "green", "limit": "2G", "weight": 3}));
        applies(&mut m, json!({"op": "tenant_set", "name": "green", "guarantee": "none"}));
        let g = m.plane.desired().tenants.iter().find(|t| t.name == "green").unwrap().clone();
        assert_eq!((g.guarantee, g.limit.as_deref(), g.weight), (None, Some("2G"), Some(3)));
        refused(&mut m, json!({"op": "tenant_set", "name": "nope"}), "unknown tenant \"nope\"");
        refused(&mut m, json!({"op": "tenant_set", "name": "green", "weight": 0}), "weight");
        refused(&mut m, json!({"op": "tenant_del", "name": "blue"}), "still has ports: b1");
        refused(&mut m, json!({"op": "tenant_del", "name": "nope"}), "unknown tenant");
        applies(&mut m, json!({"op": "tenant_del", "name": "green"}));
        assert!(!m.plane.desired().tenants.iter().any(|t| t.name == "green"));
    }

    #[test]
    fn captures_are_planned_or_refused_with_the_bad_value() {
        let mut m = model();
        let plan = m.plane.plan(cmd(json!({"op": "capture", "port": "b1", "tenant": "blue", "count": 5})));
        match plan {
            Ok(Plan::Read(Read::Capture(p))) => {
                assert_eq!((p.name.as_str(), p.count, p.snaplen), ("b1", Some(5), crate::capture::MAX_SNAPLEN));
                assert_eq!(p.tenant.map(|t| t.1).as_deref(), Some("blue"));
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(
            run(&mut m, json!({"op": "capture", "port": "up0", "tenant": "red"}), Fault::None),
            Outcome::Answered
        );
        refused(&mut m, json!({"op": "capture", "port": "nope"}), "unknown port \"nope\"");
        refused(
            &mut m,
            json!({"op": "capture", "port": "b1", "tenant": "red"}),
            "belongs to tenant \"blue\", not \"red\"",
        );
        refused(&mut m, json!({"op": "capture", "port": "b1", "tenant": "mauve"}), "unknown tenant \"mauve\"");
        refused(&mut m, json!({"op": "capture", "port": "b1", "snaplen": 63}), "snaplen 63");
        refused(&mut m, json!({"op": "capture", "port": "b1", "snaplen": 4097}), "snaplen 4097");
        refused(&mut m, json!({"op": "capture", "port": "b1", "count": 0}), "count 0");
        refused(&mut m, json!({"op": "capture", "port": "b1", "duration_ms": 0}), "duration 0");
    }

    #[test]
    fn ports_are_added_and_removed_or_refused_with_the_bad_value() {
        let mut m = model();
        applies(
            &mut m,
            json!({"op": "port_add", "interface": "r1", "tenant": "red", "mac": "02-00-00-00-00-01",
            "ips": ["10.0.0.1"], "police_rate": "100M"}),
        );
        // the same MAC and IP as blue's b1, in another tenant: fine
        assert_eq!(m.plane.desired().ports[1].mac, "02:00:00:00:00:01");
        let add = |i: &str, t: &str, mac: &str| json!({"op": "port_add", "interface": i, "tenant": t, "mac": mac});
        refused(&mut m, add("r1", "red", "02:00:00:00:00:05"), "port \"r1\" already exists (in tenant \"red\")");
        refused(&mut m, add("r2", "nope", "02:00:00:00:00:05"), "unknown tenant \"nope\"");
        refused(&mut m, add("r2", "red", "02:00:00:00:00"), "02:00:00:00:00");
        refused(&mut m, add("r2", "red", "01:00:00:00:00:05"), "01:00:00:00:00:05");
        refused(&mut m, add("r2", "red", "02:00:00:00:00:01"), "02:00:00:00:00:01");
        refused(&mut m, add("b2", "blue", "02:00:00:00:00:0a"), "02:00:00:00:00:0a");
        let mut bad_ip = add("r2", "red", "02:00:00:00:00:05");
        bad_ip["ips"] = json!(["10.0.0.300"]);
        refused(&mut m, bad_ip, "malformed IP address \"10.0.0.300\"");
        let mut burst = add("r2", "red", "02:00:00:00:00:05");
        burst["police_burst"] = json!("64k");
        refused(&mut m, burst, "a policer burst needs a policer rate");
        refused(&mut m, json!({"op": "port_del", "interface": "nope"}), "unknown port \"nope\"");
        applies(&mut m, json!({"op": "port_del", "interface": "r1"}));
        assert_eq!(m.plane.desired().ports.len(), 1);
        // its id is reused by the next port, which starts from nothing
        let Ok(Plan::Apply(a)) = m.plane.plan(cmd(add("r9", "red", "02:00:00:00:00:09"))) else { panic!() };
        assert_eq!(a.change.reset_ports, vec![a.tables.port_by_name("r9").unwrap()]);
    }

    #[test]
    fn vteps_are_added_and_removed_unless_static_entries_use_them() {
        let mut m = model();
        applies(&mut m, json!({"op": "vtep_add", "tenant": "red", "ip": "192.168.77.3"}));
        refused(&mut m, json!({"op": "vtep_add", "tenant": "red", "ip": "192.168.77.3"}), "192.168.77.3");
        refused(&mut m, json!({"op": "vtep_add", "tenant": "red", "ip": "x"}), "malformed IP address \"x\"");
        refused(&mut m, json!({"op": "vtep_add", "tenant": "nope", "ip": "192.168.77.4"}), "unknown tenant");
        refused(&mut m, json!({"op": "vtep_del", "tenant": "red", "ip": "192.168.77.9"}), "has no VTEP 192.168.77.9");
        refused(
            &mut m,
            json!({"op": "vtep_del", "tenant": "blue", "ip": "192.168.77.2"}),
            "VTEP 192.168.77.2 still has static FDB entries in tenant \"blue\": 02:00:00:00:00:0a",
        );
        applies(&mut m, json!({"op": "vtep_del", "tenant": "red", "ip": "192.168.77.3"}));
        let Ok(Plan::Answer(v)) = m.plane.plan(cmd(json!({"op": "vtep_list", "tenant": "blue"}))) else { panic!() };
        let row = VtepRow { tenant: "blue".into(), vni: 100, vtep: "192.168.77.2".into() };
        assert_eq!(v, Reply::Vteps(vec![row]));
    }

    #[test]
    fn static_entries_change_in_place_and_a_failed_store_undoes_them_on_the_cores() {
        let mut m = model();
        let add =
            |mac: &str, vtep: &str| json!({"op": "fdb_add", "tenant": "blue", "entries": [{"mac": mac, "vtep": vtep}]});
        // new, then replacing the one the file wrote as `0A` (a failed store puts it back)
        applies(&mut m, add("02:00:00:00:00:0b", "192.168.77.2"));
        applies(&mut m, add("02-00-00-00-00-0a", "192.168.77.2"));
        assert_eq!(m.plane.static_entries("blue"), 2);
        refused(&mut m, add("02:00:00:00:00:01", "192.168.77.2"), "duplicate MAC 02:00:00:00:00:01 (port b1");
        refused(&mut m, add("ff:ff:ff:ff:ff:ff", "192.168.77.2"), "not a unicast address");
        refused(
            &mut m,
            add("02:00:00:00:00:0c", "192.168.77.9"),
            "VTEP 192.168.77.9, which is not in the tenant's vteps",
        );
        refused(&mut m, add("02:00:00:00:00:0c", "x"), "malformed IP address \"x\"");
        refused(&mut m, json!({"op": "fdb_add", "tenant": "blue", "entries": []}), "at least one entry");
        refused(
            &mut m,
            json!({"op": "fdb_del", "tenant": "blue", "macs": ["02:00:00:00:00:0c"]}),
            "no static FDB entry",
        );
        // the same MAC twice in one request is one entry
        applies(
            &mut m,
            json!({"op": "fdb_add", "tenant": "blue", "entries": [
            {"mac": "02:00:00:00:00:0d", "vtep": "192.168.77.2"}, {"mac": "02:00:00:00:00:0D", "vtep": "192.168.77.2"}]}),
        );
        assert_eq!(m.plane.static_entries("blue"), 3);
        applies(&mut m, json!({"op": "fdb_del", "tenant": "blue", "macs": ["02:00:00:00:00:0A", "02:00:00:00:00:0a"]}));
        assert_eq!(m.plane.static_entries("blue"), 2);
        // a whole-configuration change after the fast path keeps the cores' entries right
        applies(&mut m, json!({"op": "tenant_add", "name": "green", "vni": 300}));
        applies(&mut m, json!({"op": "fdb_del", "tenant": "blue", "macs": ["02:00:00:00:00:0b"]}));
        applies(&mut m, json!({"op": "tenant_set", "name": "blue", "weight": 2}));
        // an entry the fast path added, dropped by an imported configuration, leaves the cores
        applies(&mut m, add("02:00:00:00:00:0f", "192.168.77.2"));
        let mut c = m.plane.materialize();
        c.tenants[0].fdb.retain(|f| f.mac != "02:00:00:00:00:0f");
        applies(&mut m, json!({"op": "config_import", "toml": c.to_toml()}));
        assert_eq!(m.plane.static_entries("blue"), 1);
        // bounds: blue's mac_limit counts its port's MAC
        let limited = m.plane.materialize().to_toml().replacen("mac_limit = 4096", "mac_limit = 2", 1);
        applies(&mut m, json!({"op": "config_import", "toml": limited}));
        refused(
            &mut m,
            add("02:00:00:00:00:0e", "192.168.77.2"),
            "3 static FDB entries (port MACs included), more than its mac_limit 2",
        );
    }

    #[test]
    fn a_configuration_is_imported_whole_or_refused_whole() {
        let mut m = model();
        let text = m.plane.materialize().to_toml();
        refused(&mut m, json!({"op": "config_import", "toml": "[uplink"}), "");
        let other_uplink = text.replace("interface = \"up0\"", "interface = \"up1\"");
        refused(&mut m, json!({"op": "config_import", "toml": other_uplink}), "uplink settings cannot change");
        let bad = format!("{text}\n[[port]]\ninterface = \"r1\"\ntenant = \"nope\"\nmac = \"02:00:00:00:00:05\"\n");
        refused(&mut m, json!({"op": "config_import", "toml": bad}), "nope");
        let swapped = text.replace("vni = 200", "vni = 201");
        applies(&mut m, json!({"op": "config_import", "toml": swapped}));
        assert_eq!(m.plane.desired().tenants[1].vni, 201);
        let Ok(Plan::Answer(Reply::Config(c))) = m.plane.plan(cmd(json!({"op": "config_export"}))) else { panic!() };
        assert_eq!(Config::from_toml(&c.toml).unwrap(), m.plane.materialize());
    }

    #[test]
    fn queries_name_what_they_read_and_refuse_unknown_names() {
        let m = model();
        let read = |v: Value| match m.plane.plan(cmd(v)) {
            Ok(Plan::Read(r)) => Ok(r),
            Ok(p) => panic!("not a read: {p:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(read(json!({"op": "tenant_show", "name": "red"})), Ok(Read::TenantShow(TenantId(1))));
        assert_eq!(read(json!({"op": "port_show", "interface": "b1"})), Ok(Read::PortShow(PortId(1))));
        assert_eq!(read(json!({"op": "fdb_show", "tenant": "blue"})), Ok(Read::FdbShow(Some(TenantId(0)))));
        assert_eq!(
            read(json!({"op": "trace", "port": "b1", "frame_hex": "02:00"})),
            Ok(Read::Trace(PortId(1), vec![2, 0]))
        );
        assert_eq!(read(json!({"op": "stats_clear"})), Ok(Read::StatsClear));
        assert!(read(json!({"op": "trace", "port": "b1", "frame_hex": "aéb"})).unwrap_err().contains("'é'"));
        let (m1, m2, udp) = ("02:00:00:00:00:01", "02:00:00:00:00:02", "udp");
        let probe = json!({"src_mac": m1, "dst_mac": m2, "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2"});
        let want = crate::frames::udp4_min(
            parse_mac(m1).unwrap(),
            parse_mac(m2).unwrap(),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        );
        assert_eq!(read(json!({"op": "trace", "port": "b1", udp: probe})), Ok(Read::Trace(PortId(1), want)));
        let arp = json!({"src_mac": m1, "src_ip": "10.0.0.1", "target_ip": "10.0.0.9"});
        let want = crate::frames::arp_request(parse_mac(m1).unwrap(), [10, 0, 0, 1].into(), [10, 0, 0, 9].into());
        assert_eq!(read(json!({"op": "trace", "port": "b1", "arp": arp})), Ok(Read::Trace(PortId(1), want)));
        let mut bad = probe.clone();
        bad["dst_ip"] = json!("10.0.0.300");
        let e = read(json!({"op": "trace", "port": "b1", udp: bad})).unwrap_err();
        assert!(e.contains("dst_ip: malformed IPv4 address \"10.0.0.300\""), "{e}");
        bad["dst_ip"] = json!("10.0.0.2");
        bad["src_mac"] = json!("02:zz:00:00:00:01");
        assert!(read(json!({"op": "trace", "port": "b1", udp: bad})).unwrap_err().contains("src_mac"));
        let both = json!({"op": "trace", "port": "b1", "frame_hex": "00", udp: probe});
        assert!(read(both).unwrap_err().contains("exactly one frame"));
        assert!(read(json!({"op": "trace", "port": "b1"})).unwrap_err().contains("exactly one frame"));
        assert!(read(json!({"op": "port_show", "interface": "x"})).unwrap_err().contains("unknown port \"x\""));
        assert!(read(json!({"op": "tenant_show", "name": "x"})).unwrap_err().contains("unknown tenant \"x\""));
        assert!(read(json!({"op": "fdb_show", "tenant": "x"})).unwrap_err().contains("unknown tenant \"x\""));
    }

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
}
