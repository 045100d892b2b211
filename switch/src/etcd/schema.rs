//! The etcd key schema, version 1 (`docs/etcd.md`), and what one host makes of it. Pure: the
//! keys and values, the [`View`] one host keeps of the keys it watches, the configuration it
//! derives from them ([`View::derive`]), and the transaction a configuration change becomes
//! ([`View::plan_write`]).
//!
//! ```text
//! <prefix>/v1/tenants/<tenant>/spec          {"vni":100,"mac_limit":4096,"guarantee":"1G",...}
//! <prefix>/v1/tenants/<tenant>/ports/<port>  {"host":"h1","interface":"tap3","mac":"..","ips":[..]}
//! <prefix>/v1/vnis/<vni>                     "<tenant>"  (one tenant per VNI)
//! <prefix>/v1/hosts/<host>/tenants/<tenant>  ""          (the host carries the tenant)
//! <prefix>/v1/alive/<host>                   {"vtep_ip":"192.168.77.1"}  (under the host's lease)
//! ```
//!
//! May depend on: config (the configuration it derives); serde. No I/O.

use crate::config::{
    ArpBindingConfig, Config, DEFAULT_MAC_LIMIT, PolicerConfig, PortConfig, StaticFdbConfig, TenantConfig,
};
use crate::types::{mac_str, parse_mac};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

/// The schema version, part of every key.
pub const VERSION: &str = "v1";

/// A tenant's spec (`tenants/<t>/spec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// VXLAN network identifier.
    pub vni: i64,
    /// Most MACs the tenant may have in a host's FDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_limit: Option<u32>,
    /// Minimum rate on every host's uplink while backlogged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarantee: Option<String>,
    /// Maximum rate on every host's uplink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Share of the excess.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A VM port's binding (`tenants/<t>/ports/<port>`): where it is and what it may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortBinding {
    /// The host the VM runs on.
    pub host: String,
    /// Its tap or veth on that host.
    pub interface: String,
    /// The VM's MAC.
    pub mac: String,
    /// The VM's addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
    /// Policer on what the VM sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policer: Option<PolicerConfig>,
}

/// A live host (`alive/<host>`, under its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLive {
    /// Its VTEP address.
    pub vtep_ip: Ipv4Addr,
}

/// The keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `<prefix>/v1/`.
    root: String,
}

/// What a key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `tenants/<t>/spec`.
    Spec(String),
    /// `tenants/<t>/ports/<port>`.
    Port(String, String),
    /// `vnis/<vni>`.
    Vni(String),
    /// `hosts/<h>/tenants/<t>`.
    Carry(String, String),
    /// `alive/<h>`.
    Alive(String),
    /// Anything else under the prefix (ignored).
    Other,
}

impl Keys {
    /// The keys under `prefix` (`/xvs` by default).
    pub fn new(prefix: &str) -> Keys {
        Keys { root: format!("{}/{VERSION}/", prefix.trim_end_matches('/')) }
    }
    /// `<prefix>/v1/`.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// A tenant's spec.
    pub fn spec(&self, t: &str) -> String {
        format!("{}tenants/{t}/spec", self.root)
    }
    /// Everything of a tenant (spec and ports).
    pub fn tenant(&self, t: &str) -> String {
        format!("{}tenants/{t}/", self.root)
    }
    /// A port of a tenant.
    pub fn port(&self, t: &str, p: &str) -> String {
        format!("{}tenants/{t}/ports/{p}", self.root)
    }
    /// The owner of a VNI.
    pub fn vni(&self, vni: i64) -> String {
        format!("{}vnis/{vni}", self.root)
    }
    /// That host `h` carries tenant `t`.
    pub fn carry(&self, h: &str, t: &str) -> String {
        format!("{}hosts/{h}/tenants/{t}", self.root)
    }
    /// The tenants host `h` carries.
    pub fn carried(&self, h: &str) -> String {
        format!("{}hosts/{h}/tenants/", self.root)
    }
    /// Host `h`'s liveness key.
    pub fn alive(&self, h: &str) -> String {
        format!("{}alive/{h}", self.root)
    }
    /// Every host's liveness key.
    pub fn alive_all(&self) -> String {
        format!("{}alive/", self.root)
    }

    /// What `key` is.
    pub fn parse(&self, key: &[u8]) -> Key {
        let Some(rest) = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix(self.root.as_str())) else {
            return Key::Other;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["tenants", t, "spec"] => Key::Spec(t.to_string()),
            ["tenants", t, "ports", p] => Key::Port(t.to_string(), p.to_string()),
            ["vnis", v] => Key::Vni(v.to_string()),
            ["hosts", h, "tenants", t] => Key::Carry(h.to_string(), t.to_string()),
            ["alive", h] => Key::Alive(h.to_string()),
            _ => Key::Other,
        }
    }
}

/// One change of a watched key, as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key now holds `value` (written at revision `rev`).
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
        /// Its mod revision.
        rev: i64,
    },
    /// The key was deleted at revision `rev`.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The deletion's revision.
        rev: i64,
    },
}

/// What one host knows of the store: the keys it watches, with the revision each was last
/// written at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// Specs of the tenants this host carries.
    pub tenants: BTreeMap<String, (TenantSpec, i64)>,
    /// Ports of those tenants, on every host: tenant -> port -> binding.
    pub ports: BTreeMap<String, BTreeMap<String, (PortBinding, i64)>>,
    /// Live hosts and their VTEPs.
    pub alive: BTreeMap<String, HostLive>,
    /// The tenants this host carries (`hosts/<me>/tenants/`).
    pub carried: BTreeSet<String>,
    /// Keys whose value is malformed, with why (not used until rewritten).
    pub bad: BTreeMap<String, String>,
    /// The store revision this view is at.
    pub revision: i64,
    /// Keys this host wrote itself, with the revision and the value (none: deleted): older
    /// events for them are stale, and a fresh read older than the write gets it again.
    floors: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)>,
}

/// A configuration change as a transaction: it applies only if every compare holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Write {
    /// Keys that must not exist.
    pub absent: Vec<String>,
    /// Keys that must exist.
    pub present: Vec<String>,
    /// Keys that must still be at the revision this host last saw.
    pub at: Vec<(String, i64)>,
    /// Keys to write.
    pub puts: Vec<(String, String)>,
    /// Keys to delete.
    pub deletes: Vec<String>,
    /// Tenants this write creates, with their spec: if the store has one of them already
    /// with the same spec, the host joins it instead ([`Write::join`]).
    pub created: Vec<(String, TenantSpec)>,
}

impl Write {
    /// The same write for a host that joins tenant `t`, which the store already has with
    /// this spec at revision `rev` (and its VNI key at `vni_rev`): the spec and VNI stay as
    /// they are (compared, not created) and only this host's carry key is added.
    pub fn join(&self, keys: &Keys, t: &str, vni: i64, rev: i64, vni_rev: i64) -> Write {
        let (spec, vkey) = (keys.spec(t), keys.vni(vni));
        let mut w = self.clone();
        w.absent.retain(|k| *k != spec && *k != vkey);
        w.puts.retain(|(k, _)| *k != spec && *k != vkey);
        w.at.push((spec, rev));
        w.at.push((vkey, vni_rev));
        w.created.retain(|(n, _)| n != t);
        w
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

impl View {
    /// Applies one watched change. Returns whether the set of carried tenants changed (the
    /// watch then needs new keys).
    pub fn apply(&mut self, keys: &Keys, me: &str, ev: &Event) -> bool {
        let (key, rev) = match ev {
            Event::Put { key, rev, .. } | Event::Delete { key, rev } => (key, *rev),
        };
        if self.floors.get(key).is_some_and(|(f, _)| rev < *f) {
            return false; // this host already wrote something newer there
        }
        let name = String::from_utf8_lossy(key).into_owned();
        self.bad.remove(&name);
        let value = match ev {
            Event::Put { value, .. } => Some(value.as_slice()),
            Event::Delete { .. } => None,
        };
        fn parse<T: serde::de::DeserializeOwned>(
            bad: &mut BTreeMap<String, String>,
            name: &str,
            v: &[u8],
        ) -> Option<T> {
            serde_json::from_slice(v).map_err(|e| bad.insert(name.to_string(), e.to_string())).ok()
        }
        match keys.parse(key) {
            Key::Spec(t) => match value.and_then(|v| parse::<TenantSpec>(&mut self.bad, &name, v)) {
                Some(s) => {
                    self.tenants.insert(t, (s, rev));
                }
                None => {
                    self.tenants.remove(&t);
                }
            },
            Key::Port(t, p) => match value.and_then(|v| parse::<PortBinding>(&mut self.bad, &name, v)) {
                Some(b) => {
                    self.ports.entry(t).or_default().insert(p, (b, rev));
                }
                None => {
                    if let Some(m) = self.ports.get_mut(&t) {
                        m.remove(&p);
                        if m.is_empty() {
                            self.ports.remove(&t);
                        }
                    }
                }
            },
            Key::Alive(h) => match value.and_then(|v| parse::<HostLive>(&mut self.bad, &name, v)) {
                Some(l) => {
                    self.alive.insert(h, l);
                }
                None => {
                    self.alive.remove(&h);
                }
            },
            Key::Carry(h, t) if h == me => {
                return if value.is_some() { self.carried.insert(t) } else { self.carried.remove(&t) };
            }
            Key::Carry(..) | Key::Vni(_) | Key::Other => {}
        }
        false
    }

    /// Keeps `older`'s floors that this view has not passed (after a fresh read).
    pub fn keep_floors(&mut self, keys: &Keys, me: &str, older: &View) {
        let r = self.revision;
        for (k, (f, v)) in older.floors.iter().filter(|(_, (f, _))| *f > r) {
            let ev = match v {
                Some(v) => Event::Put { key: k.clone(), value: v.clone(), rev: *f },
                None => Event::Delete { key: k.clone(), rev: *f },
            };
            self.apply(keys, me, &ev);
            self.floors.insert(k.clone(), (*f, v.clone()));
        }
    }

    /// Sets the view's revision after a batch of events, forgetting floors it passed.
    pub fn at_revision(&mut self, rev: i64) {
        self.revision = self.revision.max(rev);
        let r = self.revision;
        self.floors.retain(|_, (f, _)| *f > r);
    }

    /// The configuration host `me` runs: `local`'s uplink and daemon settings; every tenant it
    /// carries with its VTEPs (the live hosts with ports of it), static FDB entries and ARP
    /// bindings for the VMs on other live hosts; and the VM ports bound to it.
    pub fn derive(&self, local: &Config, me: &str) -> Config {
        let my_vtep = local.vtep_cidr().ok().map(|(ip, _)| ip);
        let mut tenants = Vec::new();
        let mut ports = Vec::new();
        for t in &self.carried {
            let Some((spec, _)) = self.tenants.get(t) else { continue };
            let bound = self.ports.get(t);
            let mine: BTreeSet<_> = bound
                .into_iter()
                .flatten()
                .filter(|(_, (b, _))| b.host == me)
                .filter_map(|(_, (b, _))| parse_mac(&b.mac).ok())
                .collect();
            let mut vteps = BTreeSet::new();
            let mut fdb = BTreeMap::new();
            let mut arp = BTreeMap::new();
            for (b, _) in bound.into_iter().flat_map(BTreeMap::values) {
                if b.host == me {
                    ports.push(PortConfig {
                        interface: b.interface.clone(),
                        tenant: t.clone(),
                        mac: b.mac.clone(),
                        ips: b.ips.clone(),
                        policer: b.policer.clone(),
                    });
                    continue;
                }
                let Some(h) = self.alive.get(&b.host) else { continue };
                let Ok(mac) = parse_mac(&b.mac) else { continue };
                if Some(h.vtep_ip) == my_vtep || mine.contains(&mac) {
                    continue;
                }
                vteps.insert(h.vtep_ip);
                fdb.insert(mac, h.vtep_ip);
                for ip in &b.ips {
                    if let IpAddr::V4(v4) = ip {
                        arp.insert(*v4, mac);
                    }
                }
            }
            tenants.push(TenantConfig {
                name: t.clone(),
                vni: spec.vni,
                mac_limit: spec.mac_limit.unwrap_or(DEFAULT_MAC_LIMIT),
                vteps: vteps.into_iter().map(IpAddr::V4).collect(),
                fdb: fdb.iter().map(|(m, v)| StaticFdbConfig { mac: mac_str(m), vtep: IpAddr::V4(*v) }).collect(),
                arp: arp.iter().map(|(ip, m)| ArpBindingConfig { ip: *ip, mac: mac_str(m) }).collect(),
                guarantee: spec.guarantee.clone(),
                limit: spec.limit.clone(),
                weight: spec.weight,
            });
        }
        ports.sort_by(|a, b| a.interface.cmp(&b.interface));
        Config { tenants, ports, ..local.clone() }
    }

    /// The port key of host `me`'s port on `interface` in tenant `t`.
    fn my_port(&self, t: &str, me: &str, interface: &str) -> Option<(&String, i64)> {
        self.ports
            .get(t)?
            .iter()
            .find(|(_, (b, _))| b.host == me && b.interface == interface)
            .map(|(p, (_, r))| (p, *r))
    }

    /// The transaction that takes host `me` from `old` to `new` (both as it runs them), or
    /// why it cannot be stored: a tenant's VTEPs, FDB entries and ARP bindings follow the
    /// store's ports and hosts, and the uplink and daemon settings are the host's own.
    pub fn plan_write(&self, keys: &Keys, me: &str, old: &Config, new: &Config) -> Result<Write, String> {
        if old.uplink != new.uplink || old.daemon != new.daemon {
            return Err("the uplink and daemon settings are this host's own (its config file), not the store's".into());
        }
        let mut w = Write::default();
        let spec_of = |t: &TenantConfig| TenantSpec {
            vni: t.vni,
            mac_limit: (t.mac_limit != DEFAULT_MAC_LIMIT).then_some(t.mac_limit),
            guarantee: t.guarantee.clone(),
            limit: t.limit.clone(),
            weight: t.weight,
        };
        let derived = |t: &TenantConfig| {
            let mut f: Vec<_> =
                t.fdb.iter().map(|f| (parse_mac(&f.mac).map(|m| mac_str(&m)).unwrap_or_default(), f.vtep)).collect();
            f.sort();
            let mut a: Vec<_> = t.arp.iter().map(|a| (a.ip, a.mac.to_ascii_lowercase())).collect();
            a.sort();
            let mut v = t.vteps.clone();
            v.sort();
            (v, f, a)
        };
        let olds: BTreeMap<&str, &TenantConfig> = old.tenants.iter().map(|t| (t.name.as_str(), t)).collect();
        let news: BTreeMap<&str, &TenantConfig> = new.tenants.iter().map(|t| (t.name.as_str(), t)).collect();
        for (name, t) in &news {
            match olds.get(name) {
                None => {
                    if !t.vteps.is_empty() || !t.fdb.is_empty() || !t.arp.is_empty() {
                        return Err(format!(
                            "tenant {name:?}: its VTEPs, FDB entries and ARP bindings follow the store's hosts and ports"
                        ));
                    }
                    w.absent.push(keys.spec(name));
                    w.absent.push(keys.vni(t.vni));
                    w.created.push((name.to_string(), spec_of(t)));
                    w.puts.push((keys.spec(name), json(&spec_of(t))));
                    w.puts.push((keys.vni(t.vni), json(name)));
                    w.puts.push((keys.carry(me, name), String::new()));
                }
                Some(o) => {
                    if derived(o) != derived(t) {
                        return Err(format!(
                            "tenant {name:?}: its VTEPs, FDB entries and ARP bindings follow the store's hosts and ports"
                        ));
                    }
                    if o.vni != t.vni {
                        return Err(format!("tenant {name:?}: the VNI of a tenant in the store cannot change"));
                    }
                    if spec_of(o) != spec_of(t) {
                        let rev = self.tenants.get(*name).map_or(0, |(_, r)| *r);
                        w.at.push((keys.spec(name), rev));
                        w.puts.push((keys.spec(name), json(&spec_of(t))));
                    }
                }
            }
        }
        for (name, o) in &olds {
            if news.contains_key(name) {
                continue;
            }
            if let Some(others) = self.ports.get(*name).filter(|m| !m.is_empty()) {
                let hosts: BTreeSet<&str> = others.values().map(|(b, _)| b.host.as_str()).collect();
                return Err(format!(
                    "tenant {name:?} still has {} port(s) in the store, on {}",
                    others.len(),
                    hosts.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            let rev = self.tenants.get(*name).map_or(0, |(_, r)| *r);
            w.at.push((keys.spec(name), rev));
            w.deletes.push(keys.spec(name));
            w.deletes.push(keys.vni(o.vni));
            w.deletes.push(keys.carry(me, name));
        }
        let binding = |p: &PortConfig| PortBinding {
            host: me.to_string(),
            interface: p.interface.clone(),
            mac: p.mac.clone(),
            ips: p.ips.clone(),
            policer: p.policer.clone(),
        };
        let oldp: BTreeMap<&str, &PortConfig> = old.ports.iter().map(|p| (p.interface.as_str(), p)).collect();
        let newp: BTreeMap<&str, &PortConfig> = new.ports.iter().map(|p| (p.interface.as_str(), p)).collect();
        for (iface, p) in &newp {
            let existing = oldp.get(iface).and_then(|o| self.my_port(&o.tenant, me, iface).map(|k| (o, k)));
            match existing {
                Some((o, _)) if *o == *p => {}
                Some((o, (key, rev))) if o.tenant == p.tenant => {
                    w.at.push((keys.port(&p.tenant, key), rev));
                    w.puts.push((keys.port(&p.tenant, key), json(&binding(p))));
                }
                other => {
                    if let Some((o, (key, rev))) = other {
                        w.at.push((keys.port(&o.tenant, key), rev));
                        w.deletes.push(keys.port(&o.tenant, key));
                    }
                    // (a tenant made in the same change is created by this write)
                    if olds.contains_key(p.tenant.as_str()) {
                        w.present.push(keys.spec(&p.tenant));
                    }
                    w.absent.push(keys.port(&p.tenant, iface));
                    w.puts.push((keys.port(&p.tenant, iface), json(&binding(p))));
                    w.puts.push((keys.carry(me, &p.tenant), String::new()));
                }
            }
        }
        for (iface, o) in &oldp {
            if newp.contains_key(iface) {
                continue;
            }
            if let Some((key, rev)) = self.my_port(&o.tenant, me, iface) {
                w.at.push((keys.port(&o.tenant, key), rev));
                w.deletes.push(keys.port(&o.tenant, key));
            }
        }
        // etcd refuses a transaction that names a key twice.
        w.puts.sort_by(|a, b| a.0.cmp(&b.0));
        w.puts.dedup_by(|a, b| a.0 == b.0);
        w.present.sort();
        w.present.dedup();
        Ok(w)
    }

    /// Takes this host's own committed write into the view at revision `rev`, so what it
    /// wrote holds until the watch brings it (and older events for those keys are ignored).
    pub fn wrote(&mut self, keys: &Keys, me: &str, w: &Write, rev: i64) {
        for k in &w.deletes {
            self.apply(keys, me, &Event::Delete { key: k.as_bytes().to_vec(), rev });
            self.floors.insert(k.as_bytes().to_vec(), (rev, None));
        }
        for (k, v) in &w.puts {
            self.apply(keys, me, &Event::Put { key: k.as_bytes().to_vec(), value: v.as_bytes().to_vec(), rev });
            self.floors.insert(k.as_bytes().to_vec(), (rev, Some(v.as_bytes().to_vec())));
        }
    }
}

/// The most of `derived` that `check` accepts: all of it if it passes; otherwise tenants are
/// taken one at a time, those `running` already has first, and a tenant whose addition fails
/// is left out with its ports (with why). So one bad tenant written into the store cannot
/// keep this host from following the others, nor knock out a tenant that runs.
pub fn admissible(
    derived: Config,
    running: &Config,
    check: impl Fn(&Config) -> Result<(), String>,
) -> (Config, Vec<(String, String)>) {
    if check(&derived).is_ok() {
        return (derived, Vec::new());
    }
    let runs = |t: &TenantConfig| running.tenants.iter().any(|r| r.name == t.name);
    let mut order: Vec<&TenantConfig> = derived.tenants.iter().filter(|t| runs(t)).collect();
    order.extend(derived.tenants.iter().filter(|t| !runs(t)));
    let mut ok = Config { tenants: vec![], ports: vec![], ..derived.clone() };
    let mut left_out = Vec::new();
    for t in order {
        let mut next = ok.clone();
        next.tenants.push(t.clone());
        next.ports.extend(derived.ports.iter().filter(|p| p.tenant == t.name).cloned());
        match check(&next) {
            Ok(()) => ok = next,
            Err(e) => left_out.push((t.name.clone(), e)),
        }
    }
    (canonical(ok), left_out)
}

/// `cfg` in a canonical order (tenants and ports by name, entries sorted, MACs normalised),
/// so two configurations with the same content compare equal.
pub fn canonical(mut c: Config) -> Config {
    c.tenants.sort_by(|a, b| a.name.cmp(&b.name));
    for t in &mut c.tenants {
        for f in &mut t.fdb {
            if let Ok(m) = parse_mac(&f.mac) {
                f.mac = mac_str(&m);
            }
        }
        t.fdb.sort_by(|a, b| a.mac.cmp(&b.mac));
        for a in &mut t.arp {
            if let Ok(m) = parse_mac(&a.mac) {
                a.mac = mac_str(&m);
            }
        }
        t.arp.sort_by_key(|a| a.ip);
        t.vteps.sort();
    }
    c.ports.sort_by(|a, b| a.interface.cmp(&b.interface));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Config {
        Config::from_toml("[uplink]\ninterface = \"u\"\nvtep_ip = \"192.168.77.1/24\"\nmac = \"02:00:00:00:ff:01\"\nmtu = 1600\nrate = \"10G\"\n").unwrap()
    }

    fn put(view: &mut View, keys: &Keys, me: &str, key: String, value: &str, rev: i64) -> bool {
        view.apply(keys, me, &Event::Put { key: key.into_bytes(), value: value.as_bytes().to_vec(), rev })
    }

    /// Tenant blue on hosts a (this one), b and c; red only on a and b.
    fn cluster() -> (Keys, View) {
        let k = Keys::new("/xvs");
        let mut v = View::default();
        put(&mut v, &k, "a", k.spec("blue"), r#"{"vni":100}"#, 2);
        put(&mut v, &k, "a", k.spec("red"), r#"{"vni":200,"guarantee":"1G"}"#, 3);
        assert!(put(&mut v, &k, "a", k.carry("a", "blue"), "", 4));
        assert!(put(&mut v, &k, "a", k.carry("a", "red"), "", 4));
        assert!(!put(&mut v, &k, "a", k.carry("b", "blue"), "", 4), "another host's carry key is not ours");
        let port = |h: &str, i: &str, m: &str, ip: &str| {
            format!(r#"{{"host":"{h}","interface":"{i}","mac":"{m}","ips":["{ip}"]}}"#)
        };
        put(&mut v, &k, "a", k.port("blue", "vm1"), &port("a", "p1", "02:00:00:00:00:01", "10.0.0.1"), 5);
        put(&mut v, &k, "a", k.port("blue", "vm2"), &port("b", "p2", "02:00:00:00:00:02", "10.0.0.2"), 6);
        put(&mut v, &k, "a", k.port("blue", "vm5"), &port("c", "p9", "02:00:00:00:00:05", "10.0.0.5"), 6);
        put(&mut v, &k, "a", k.port("red", "vm3"), &port("a", "p3", "02:00:00:00:00:01", "10.0.0.1"), 7);
        put(&mut v, &k, "a", k.port("red", "vm4"), &port("b", "p4", "02:00:00:00:00:02", "10.0.0.2"), 7);
        put(&mut v, &k, "a", k.alive("a"), r#"{"vtep_ip":"192.168.77.1"}"#, 8);
        put(&mut v, &k, "a", k.alive("b"), r#"{"vtep_ip":"192.168.77.2"}"#, 8);
        put(&mut v, &k, "a", k.alive("c"), r#"{"vtep_ip":"192.168.77.3"}"#, 8);
        v.at_revision(8);
        (k, v)
    }

    #[test]
    fn derives_remote_vms_behind_live_hosts_and_local_ports() {
        let (k, mut v) = cluster();
        let c = v.derive(&local(), "a");
        c.build(None, None).expect("a derived configuration builds");
        let blue = &c.tenants[0];
        assert_eq!(blue.name, "blue");
        assert_eq!(blue.vteps, vec!["192.168.77.2".parse::<IpAddr>().unwrap(), "192.168.77.3".parse().unwrap()]);
        assert_eq!(blue.fdb.len(), 2);
        assert_eq!(blue.fdb[0].mac, "02:00:00:00:00:02");
        assert_eq!(blue.arp.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>(), ["10.0.0.2", "10.0.0.5"]);
        let red = &c.tenants[1];
        assert_eq!((red.vni, red.guarantee.as_deref()), (200, Some("1G")));
        assert_eq!(red.vteps.len(), 1, "red is on a and b only");
        assert_eq!(c.ports.iter().map(|p| p.interface.as_str()).collect::<Vec<_>>(), ["p1", "p3"]);

        // Host b dies: its lease takes alive/b; its VMs leave every table.
        v.apply(&k, "a", &Event::Delete { key: k.alive("b").into_bytes(), rev: 9 });
        let c = v.derive(&local(), "a");
        assert_eq!(c.tenants[0].vteps, vec!["192.168.77.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.tenants[0].fdb.len(), 1);
        assert!(c.tenants[1].vteps.is_empty() && c.tenants[1].fdb.is_empty() && c.tenants[1].arp.is_empty());

        // vm5 moves from c to b (b is back): the FDB entry follows.
        put(&mut v, &k, "a", k.alive("b"), r#"{"vtep_ip":"192.168.77.2"}"#, 10);
        put(
            &mut v,
            &k,
            "a",
            k.port("blue", "vm5"),
            r#"{"host":"b","interface":"tapx","mac":"02:00:00:00:00:05","ips":["10.0.0.5"]}"#,
            11,
        );
        let c = v.derive(&local(), "a");
        let e = c.tenants[0].fdb.iter().find(|f| f.mac == "02:00:00:00:00:05").unwrap();
        assert_eq!(e.vtep, "192.168.77.2".parse::<IpAddr>().unwrap());
        assert_eq!(c.tenants[0].vteps, vec!["192.168.77.2".parse::<IpAddr>().unwrap()], "c has no blue VM left");
    }

    #[test]
    fn malformed_values_are_named_and_ignored() {
        let (k, mut v) = cluster();
        put(&mut v, &k, "a", k.spec("blue"), r#"{"vni":100,"colour":"x"}"#, 12);
        assert!(v.bad.contains_key(&k.spec("blue")), "{:?}", v.bad);
        let c = v.derive(&local(), "a");
        assert_eq!(c.tenants.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["red"]);
        put(&mut v, &k, "a", k.spec("blue"), r#"{"vni":100}"#, 13);
        assert!(v.bad.is_empty());
        assert_eq!(k.parse(b"/xvs/v1/tenants/blue/ports/vm1"), Key::Port("blue".into(), "vm1".into()));
        assert_eq!(k.parse(b"/xvs/v2/tenants/blue/spec"), Key::Other);
        assert_eq!(k.parse(&[0xff, 0xfe]), Key::Other);
    }

    #[test]
    fn writes_compare_on_what_this_host_saw() {
        let (k, v) = cluster();
        let old = v.derive(&local(), "a");
        // A new tenant and a port in it: created only if absent.
        let mut new = old.clone();
        new.tenants.push(TenantConfig { name: "green".into(), vni: 300, ..old.tenants[0].clone() });
        let g = new.tenants.last_mut().unwrap();
        (g.vteps, g.fdb, g.arp) = (vec![], vec![], vec![]);
        new.ports.push(PortConfig {
            interface: "p7".into(),
            tenant: "green".into(),
            mac: "02:00:00:00:00:07".into(),
            ips: vec![],
            policer: None,
        });
        let w = v.plan_write(&k, "a", &old, &new).unwrap();
        assert!(w.absent.contains(&k.spec("green")) && w.absent.contains(&k.vni(300)));
        assert!(w.absent.contains(&k.port("green", "p7")));
        assert!(w.puts.iter().any(|(key, _)| *key == k.carry("a", "green")));
        assert_eq!(w.created.len(), 1);
        // The store has green already with the same spec: the host joins it.
        let j = w.join(&k, "green", 300, 40, 41);
        assert!(!j.absent.contains(&k.spec("green")) && !j.absent.contains(&k.vni(300)));
        assert!(j.at.contains(&(k.spec("green"), 40)) && j.at.contains(&(k.vni(300), 41)));
        assert!(!j.puts.iter().any(|(key, _)| *key == k.spec("green") || *key == k.vni(300)));
        assert!(j.puts.iter().any(|(key, _)| *key == k.carry("a", "green")));
        assert!(j.absent.contains(&k.port("green", "p7")), "its new port is still created");
        // Changing a tenant's guarantee compares on the spec's revision.
        let mut new = old.clone();
        new.tenants[1].guarantee = Some("2G".into());
        let w = v.plan_write(&k, "a", &old, &new).unwrap();
        assert_eq!(w.at, vec![(k.spec("red"), 3)]);
        // Deleting a port deletes its key, found by interface.
        let mut new = old.clone();
        new.ports.retain(|p| p.interface != "p3");
        let w = v.plan_write(&k, "a", &old, &new).unwrap();
        assert_eq!(w.deletes, vec![k.port("red", "vm3")]);
        assert_eq!(w.at, vec![(k.port("red", "vm3"), 7)]);
        // What follows the store cannot be written by hand.
        let mut new = old.clone();
        new.tenants[0].vteps.push("192.168.77.9".parse().unwrap());
        assert!(v.plan_write(&k, "a", &old, &new).unwrap_err().contains("follow the store"));
        // A tenant with ports elsewhere cannot go.
        let mut new = old.clone();
        new.ports.retain(|p| p.tenant != "red");
        new.tenants.retain(|t| t.name != "red");
        let e = v.plan_write(&k, "a", &old, &new).unwrap_err();
        assert!(e.contains("on a, b") || e.contains("on b"), "{e}");
        assert!(v.plan_write(&k, "a", &old, &old).unwrap().is_empty());
    }

    #[test]
    fn a_bad_tenant_is_left_out_not_the_running_ones() {
        let (k, mut v) = cluster();
        let running = canonical(v.derive(&local(), "a"));
        put(&mut v, &k, "a", k.spec("clash"), r#"{"vni":200}"#, 30);
        put(&mut v, &k, "a", k.carry("a", "clash"), "", 30);
        let derived = canonical(v.derive(&local(), "a"));
        let check = |c: &Config| c.build(None, None).map(|_| ()).map_err(|e| e.to_string());
        assert!(check(&derived).is_err(), "two tenants with VNI 200");
        let (ok, out) = admissible(derived, &running, check);
        assert_eq!(ok, running, "red (running) stays, clash goes");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "clash");
        assert!(out[0].1.contains("200"), "{out:?}");
        let (same, none) = admissible(running.clone(), &running, |c: &Config| {
            c.build(None, None).map(|_| ()).map_err(|e| e.to_string())
        });
        assert!(none.is_empty() && same == running);
    }

    #[test]
    fn own_writes_hold_against_older_events() {
        let (k, mut v) = cluster();
        let w = Write { deletes: vec![k.port("blue", "vm2")], ..Default::default() };
        v.wrote(&k, "a", &w, 20);
        // The watch still delivers an older put of the key: ignored.
        put(&mut v, &k, "a", k.port("blue", "vm2"), r#"{"host":"b","interface":"p2","mac":"02:00:00:00:00:02"}"#, 6);
        assert!(!v.ports["blue"].contains_key("vm2"));
        v.at_revision(20);
        put(&mut v, &k, "a", k.port("blue", "vm2"), r#"{"host":"b","interface":"p2","mac":"02:00:00:00:00:02"}"#, 21);
        assert!(v.ports["blue"].contains_key("vm2"), "a newer write by anyone counts");
    }
}
