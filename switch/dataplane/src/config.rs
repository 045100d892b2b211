//! The declarative configuration (TOML) that xvsd starts from, and its validation into a
//! [`Tables`] snapshot. Every check lives here, before any interface is touched; an invalid
//! config yields one error naming the bad value and builds nothing.
//!
//! May depend on: tables, qos (rates, admission), types, wire; serde and toml. No I/O:
//! interfaces are checked by `preflight`.

use crate::tables::{FdbDest, Policer, Port, PortKind, Tables, Tenant, Underlay};
use crate::types::{InvalidMac, InvalidVni, PortId, Rate, TenantId, Vni, is_assignable_mac, mac_str, parse_mac};
use crate::wire::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

/// Default number of MACs one tenant may have in the FDB.
pub const DEFAULT_MAC_LIMIT: u32 = 4096;
/// Default FDB capacity of a core (all tenants together).
pub const DEFAULT_FDB_CAPACITY: u32 = 1 << 16;
/// Default aging time of learned FDB entries.
pub const DEFAULT_FDB_AGING_SECS: u32 = 300;
/// Most tenants one host can hold (the tenant index is 16 bits wide).
pub const MAX_TENANTS: usize = u16::MAX as usize;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The underlay side: interface and our VTEP address.
    pub uplink: UplinkConfig,
    /// Daemon settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Where the desired state is shared with other hosts (etcd); none: the local state file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreConfig>,
    /// Tenants, each with its own VNI.
    #[serde(default, rename = "tenant", skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<TenantConfig>,
    /// VM ports.
    #[serde(default, rename = "port", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

/// `[uplink]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The underlay interface (a NIC or a veth).
    pub interface: String,
    /// Our VTEP address, optionally with the on-link prefix length (`192.168.77.1/24`).
    pub vtep_ip: String,
    /// Next-hop gateway for remote VTEPs outside the on-link prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Underlay MTU (IP packet size); defaults to the interface's MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Source MAC for encapsulated frames; defaults to the interface's MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// TTL of the outer IPv4 header.
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    /// The uplink's rate (`10G`, `100G`, `1G`, ...): turns on per-tenant guarantees, limits
    /// and pacing on the uplink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
}

fn default_ttl() -> u8 {
    64
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// CPUs the forwarding core threads are pinned to (one thread per entry).
    #[serde(default = "default_cores")]
    pub cores: Vec<usize>,
    /// FDB capacity per core, all tenants together.
    #[serde(default = "default_fdb_capacity")]
    pub fdb_capacity: u32,
    /// Seconds after which a learned FDB entry that saw no traffic is forgotten.
    #[serde(default = "default_aging")]
    pub fdb_aging_secs: u32,
    /// Microseconds a core keeps polling after its last frame before it sleeps on its
    /// sockets: waking a sleeping core costs tens of microseconds per hop, so polling on
    /// through short gaps keeps latency low at low rates; idle cores still sleep.
    #[serde(default = "default_poll_after_traffic")]
    pub poll_after_traffic_us: u32,
    /// Whether frames whose fate is a pure table lookup are forwarded by the XDP programs
    /// themselves (docs/architecture.md, "The XDP fast path"); `false` sends every frame
    /// through the forwarding cores.
    #[serde(default = "default_true")]
    pub xdp_fast_path: bool,
}

fn default_true() -> bool {
    true
}

fn default_cores() -> Vec<usize> {
    vec![0]
}
fn default_fdb_capacity() -> u32 {
    DEFAULT_FDB_CAPACITY
}
fn default_aging() -> u32 {
    DEFAULT_FDB_AGING_SECS
}
fn default_poll_after_traffic() -> u32 {
    1000
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            cores: default_cores(),
            fdb_capacity: DEFAULT_FDB_CAPACITY,
            fdb_aging_secs: DEFAULT_FDB_AGING_SECS,
            poll_after_traffic_us: default_poll_after_traffic(),
            xdp_fast_path: true,
        }
    }
}

/// `[store]`: the desired state in etcd, shared by many hosts (`docs/etcd.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `etcd://host:port[,host:port...]`.
    pub url: String,
    /// Key prefix (the schema version follows it: `/xvs/v1/...`).
    #[serde(default = "default_store_prefix")]
    pub prefix: String,
    /// This host's name in the store (default: the system's host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Seconds after which the other hosts forget this one if it stops renewing its lease.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
    /// TLS: the CA certificate (PEM) that signed the members' certificates; with it the
    /// members are reached over https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// TLS: this host's client certificate (PEM), for members that require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// TLS: the client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn default_store_prefix() -> String {
    "/xvs".into()
}
fn default_lease_secs() -> u32 {
    5
}

/// `[[tenant]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Unique name.
    pub name: String,
    /// The tenant's VXLAN network identifier, 1..=16777215.
    pub vni: i64,
    /// Most MACs of this tenant the FDB will hold.
    #[serde(default = "default_mac_limit")]
    pub mac_limit: u32,
    /// Remote VTEPs: the flood list and the allow-list for decapsulation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vteps: Vec<IpAddr>,
    /// Static FDB entries: a remote VM's MAC behind a remote VTEP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fdb: Vec<StaticFdbConfig>,
    /// IP->MAC bindings of remote VMs, for ARP suppression (local ports' bindings are implied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arp: Vec<ArpBindingConfig>,
    /// Minimum rate on the uplink while backlogged (`700M`); needs `uplink.rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarantee: Option<String>,
    /// Maximum rate on the uplink (`2G`); needs `uplink.rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Share of the excess bandwidth, 1..=1000 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

fn default_mac_limit() -> u32 {
    DEFAULT_MAC_LIMIT
}

/// A static FDB entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFdbConfig {
    /// The MAC.
    pub mac: String,
    /// The remote VTEP it sits behind (must be in the tenant's `vteps`).
    pub vtep: IpAddr,
}

/// An IP->MAC binding for ARP suppression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArpBindingConfig {
    /// The IPv4 address.
    pub ip: Ipv4Addr,
    /// The MAC that owns it.
    pub mac: String,
}

/// `[[port]]`: a VM port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The netdev (tap or veth) of the VM.
    pub interface: String,
    /// The tenant the VM belongs to.
    pub tenant: String,
    /// The only source MAC the VM may use.
    pub mac: String,
    /// The only source IPs the VM may use.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// Policer on what the VM sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policer: Option<PolicerConfig>,
}

/// A VM port's policer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicerConfig {
    /// Rate (`100M`).
    pub rate: String,
    /// Bucket depth in bytes (`64k`); default: 10 ms at the rate, at least 3 kB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<String>,
}

/// Why a configuration was refused. Each names the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax or type error.
    #[error("config: {0}")]
    Syntax(String),
    /// Bad VNI.
    #[error("tenant {tenant:?}: {error}")]
    Vni {
        /// Tenant name.
        tenant: String,
        /// The range error.
        error: InvalidVni,
    },
    /// Two tenants with one VNI.
    #[error("duplicate VNI {vni}: used by tenants {first:?} and {second:?}")]
    DuplicateVni {
        /// The VNI.
        vni: u32,
        /// First tenant.
        first: String,
        /// Second tenant.
        second: String,
    },
    /// Two tenants with one name.
    #[error("duplicate tenant name {0:?}")]
    DuplicateTenant(String),
    /// An empty or overlong name.
    #[error("invalid name {0:?} (1 to 64 characters of letters, digits, '-', '_', '.')")]
    BadName(String),
    /// A port names a tenant that does not exist.
    #[error("port {port:?}: unknown tenant {tenant:?}")]
    UnknownTenant {
        /// Port interface.
        port: String,
        /// The name given.
        tenant: String,
    },
    /// Bad MAC.
    #[error("{context}: {error}")]
    Mac {
        /// Where.
        context: String,
        /// The parse error.
        error: InvalidMac,
    },
    /// Multicast or zero MAC where a unicast MAC is needed.
    #[error("{context}: MAC {mac} is not a unicast address")]
    NotUnicast {
        /// Where.
        context: String,
        /// The MAC.
        mac: String,
    },
    /// Two owners of one MAC within a tenant.
    #[error("tenant {tenant:?}: duplicate MAC {mac} ({first} and {second})")]
    DuplicateMac {
        /// Tenant.
        tenant: String,
        /// The MAC.
        mac: String,
        /// First owner.
        first: String,
        /// Second owner.
        second: String,
    },
    /// Two owners of one IP within a tenant.
    #[error("tenant {tenant:?}: duplicate IP {ip} ({first} and {second})")]
    DuplicateIp {
        /// Tenant.
        tenant: String,
        /// The address.
        ip: IpAddr,
        /// First owner.
        first: String,
        /// Second owner.
        second: String,
    },
    /// One interface configured twice, or a VM port on the uplink.
    #[error("interface {0:?} is used twice")]
    DuplicateInterface(String),
    /// Bad VTEP address.
    #[error("invalid VTEP address {0:?}")]
    BadVtepIp(String),
    /// A remote VTEP equal to ours, duplicated, or not IPv4.
    #[error("tenant {tenant:?}: invalid remote VTEP {vtep}: {why}")]
    BadRemoteVtep {
        /// Tenant.
        tenant: String,
        /// The address.
        vtep: IpAddr,
        /// Why.
        why: &'static str,
    },
    /// Static FDB entry pointing at a VTEP not in the tenant's list.
    #[error("tenant {tenant:?}: static FDB entry {mac} points at VTEP {vtep}, which is not in the tenant's vteps")]
    FdbVtepNotListed {
        /// Tenant.
        tenant: String,
        /// MAC.
        mac: String,
        /// VTEP.
        vtep: IpAddr,
    },
    /// MTU too small to carry anything after encapsulation, or too large.
    #[error("uplink MTU {0} out of range 576..=9216")]
    BadMtu(u32),
    /// The uplink MAC is not known.
    #[error("uplink {0:?}: MAC address unknown (set uplink.mac)")]
    NoUplinkMac(String),
    /// Too many tenants or ports.
    #[error("too many {what}: {count} (at most {max})")]
    TooMany {
        /// What.
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Bad daemon settings.
    #[error("daemon: {0}")]
    Daemon(String),
    /// A bad rate or QoS setting.
    #[error("{0}")]
    Qos(String),
    /// More static FDB entries than a tenant's `mac_limit` or the daemon's `fdb_capacity`.
    #[error("{0}")]
    FdbBound(String),
}

impl Config {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string().trim().replace('\n', " ")))
    }

    /// Serializes to TOML text (the same format [`Config::from_toml`] reads).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    /// Parses `vtep_ip` into address and optional prefix length.
    pub fn vtep_cidr(&self) -> Result<(Ipv4Addr, Option<u8>), ConfigError> {
        let s = self.uplink.vtep_ip.trim();
        let bad = || ConfigError::BadVtepIp(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(bad)?)),
            None => (s, None),
        };
        let ip: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(bad());
        }
        Ok((ip, prefix))
    }

    /// Validates everything and builds the table snapshot. `uplink_mac` and `uplink_mtu` are
    /// the interface's own values, used where the config leaves them out.
    pub fn build(&self, uplink_mac: Option<MacAddr>, uplink_mtu: Option<u16>) -> Result<Tables, ConfigError> {
        self.build_after(None, uplink_mac, uplink_mtu)
    }

    /// Like [`Config::build`], keeping the ids of tenants and ports that `prev` already had
    /// (by name), so counters and FDB entries stay attached to them across a change.
    pub fn build_after(
        &self,
        prev: Option<&Tables>,
        uplink_mac: Option<MacAddr>,
        uplink_mtu: Option<u16>,
    ) -> Result<Tables, ConfigError> {
        let (vtep_ip, prefix) = self.vtep_cidr()?;
        let mac = match &self.uplink.mac {
            Some(m) => parse_unicast(m, "uplink")?,
            None => uplink_mac.ok_or_else(|| ConfigError::NoUplinkMac(self.uplink.interface.clone()))?,
        };
        let mtu = self.uplink.mtu.or(uplink_mtu).unwrap_or(1500);
        if !(576..=9216).contains(&mtu) {
            return Err(ConfigError::BadMtu(mtu.into()));
        }
        check_name(&self.uplink.interface)?;
        if self.daemon.cores.is_empty() {
            return Err(ConfigError::Daemon("cores must list at least one CPU".into()));
        }
        if self.daemon.fdb_capacity == 0 || self.daemon.fdb_capacity > 1 << 24 {
            return Err(ConfigError::Daemon(format!(
                "fdb_capacity {} out of range 1..=16777216",
                self.daemon.fdb_capacity
            )));
        }
        if self.daemon.fdb_aging_secs == 0 {
            return Err(ConfigError::Daemon("fdb_aging_secs must be at least 1".into()));
        }
        if self.daemon.poll_after_traffic_us > 1_000_000 {
            return Err(ConfigError::Daemon(format!(
                "poll_after_traffic_us {} out of range 0..=1000000",
                self.daemon.poll_after_traffic_us
            )));
        }
        if self.tenants.len() > MAX_TENANTS {
            return Err(ConfigError::TooMany { what: "tenants", count: self.tenants.len(), max: MAX_TENANTS });
        }
        if self.ports.len() >= u16::MAX as usize {
            return Err(ConfigError::TooMany { what: "ports", count: self.ports.len(), max: u16::MAX as usize - 1 });
        }

        let tenant_ids = assign_ids(
            self.tenants.iter().map(|t| t.name.as_str()),
            prev.map(|p| p.live_tenants().map(|(id, t)| (t.name.as_str(), id.index())).collect()).unwrap_or_default(),
            prev.map_or(0, |p| p.tenants.len()),
            0,
        );
        if tenant_ids.iter().any(|i| *i >= MAX_TENANTS) {
            return Err(ConfigError::TooMany { what: "tenants", count: self.tenants.len(), max: MAX_TENANTS });
        }
        let mut tenants: Vec<Option<Tenant>> = vec![None; tenant_ids.iter().map(|i| i + 1).max().unwrap_or(0)];
        let mut by_name: HashMap<&str, TenantId> = HashMap::new();
        let mut by_vni: HashMap<u32, &str> = HashMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            check_name(&t.name)?;
            let vni = Vni::new(t.vni).map_err(|error| ConfigError::Vni { tenant: t.name.clone(), error })?;
            if by_name.insert(&t.name, TenantId(tenant_ids[i] as u16)).is_some() {
                return Err(ConfigError::DuplicateTenant(t.name.clone()));
            }
            if let Some(first) = by_vni.insert(vni.get(), &t.name) {
                return Err(ConfigError::DuplicateVni { vni: vni.get(), first: first.into(), second: t.name.clone() });
            }
            let mut vteps = Vec::with_capacity(t.vteps.len());
            for v in &t.vteps {
                let bad = |why| ConfigError::BadRemoteVtep { tenant: t.name.clone(), vtep: *v, why };
                let IpAddr::V4(v4) = v else {
                    return Err(bad("IPv6 underlay is not supported yet"));
                };
                if *v4 == vtep_ip {
                    return Err(bad("it is our own VTEP address"));
                }
                if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || v4.is_loopback() {
                    return Err(bad("not a unicast address"));
                }
                if vteps.contains(v4) {
                    return Err(bad("listed twice"));
                }
                vteps.push(*v4);
            }
            tenants[tenant_ids[i]] = Some(Tenant {
                name: t.name.clone(),
                vni,
                mac_limit: t.mac_limit,
                ports: Vec::new(),
                vteps,
                qos: crate::qos::TenantQos::default(),
            });
        }

        let port_ids = assign_ids(
            self.ports.iter().map(|p| p.interface.as_str()),
            prev.map(|p| p.live_ports().skip(1).map(|(id, p)| (p.name.as_str(), id.index())).collect())
                .unwrap_or_default(),
            prev.map_or(1, |p| p.ports.len().max(1)),
            1,
        );
        if port_ids.iter().any(|i| *i >= u16::MAX as usize) {
            return Err(ConfigError::TooMany { what: "ports", count: self.ports.len(), max: u16::MAX as usize - 1 });
        }
        let mut ports: Vec<Option<Port>> = vec![None; port_ids.iter().map(|i| i + 1).max().unwrap_or(1)];
        ports[0] = Some(Port { name: self.uplink.interface.clone(), kind: PortKind::Uplink, policer: None });
        let mut ifnames: HashSet<&str> = HashSet::from([self.uplink.interface.as_str()]);
        // (tenant, mac) -> owner, (tenant, ip) -> owner; owners named for error messages.
        let mut macs: HashMap<(TenantId, MacAddr), String> = HashMap::new();
        let mut ips: HashMap<(TenantId, IpAddr), String> = HashMap::new();
        let mut arp = Vec::new();
        let mut static_fdb = Vec::new();
        for (pi, p) in self.ports.iter().enumerate() {
            check_name(&p.interface)?;
            if !ifnames.insert(&p.interface) {
                return Err(ConfigError::DuplicateInterface(p.interface.clone()));
            }
            let tenant = *by_name
                .get(p.tenant.as_str())
                .ok_or_else(|| ConfigError::UnknownTenant { port: p.interface.clone(), tenant: p.tenant.clone() })?;
            let owner = format!("port {}", p.interface);
            let mac = parse_unicast(&p.mac, &owner)?;
            claim(&mut macs, tenant, mac, &owner, |first, second| ConfigError::DuplicateMac {
                tenant: p.tenant.clone(),
                mac: mac_str(&mac),
                first,
                second,
            })?;
            let id = PortId(port_ids[pi] as u16);
            let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
            for ip in &p.ips {
                claim(&mut ips, tenant, *ip, &owner, |first, second| ConfigError::DuplicateIp {
                    tenant: p.tenant.clone(),
                    ip: *ip,
                    first,
                    second,
                })?;
                match ip {
                    IpAddr::V4(a) => {
                        ipv4.push(*a);
                        arp.push((tenant, *a, mac));
                    }
                    IpAddr::V6(a) => ipv6.push(*a),
                }
            }
            if let Some(t) = tenants[tenant.index()].as_mut() {
                t.ports.push(id);
            }
            static_fdb.push((tenant, mac, FdbDest::Local(id)));
            ports[id.index()] = Some(Port {
                name: p.interface.clone(),
                kind: PortKind::Vm { tenant, mac, ipv4, ipv6 },
                policer: p.policer.as_ref().map(|pc| policer(&p.interface, pc)).transpose()?,
            });
        }

        for (i, t) in self.tenants.iter().enumerate() {
            let tenant = TenantId(tenant_ids[i] as u16);
            let listed = tenants[tenant.index()].as_ref().map(|x| x.vteps.clone()).unwrap_or_default();
            for f in &t.fdb {
                let owner = format!("static FDB entry for VTEP {}", f.vtep);
                let mac = parse_unicast(&f.mac, &format!("tenant {:?} fdb", t.name))?;
                let IpAddr::V4(v4) = f.vtep else {
                    return Err(ConfigError::FdbVtepNotListed {
                        tenant: t.name.clone(),
                        mac: mac_str(&mac),
                        vtep: f.vtep,
                    });
                };
                if !listed.contains(&v4) {
                    return Err(ConfigError::FdbVtepNotListed {
                        tenant: t.name.clone(),
                        mac: mac_str(&mac),
                        vtep: f.vtep,
                    });
                }
                claim(&mut macs, tenant, mac, &owner, |first, second| ConfigError::DuplicateMac {
                    tenant: t.name.clone(),
                    mac: mac_str(&mac),
                    first,
                    second,
                })?;
                static_fdb.push((tenant, mac, FdbDest::Remote(v4)));
            }
            for b in &t.arp {
                let mac = parse_unicast(&b.mac, &format!("tenant {:?} arp binding {}", t.name, b.ip))?;
                let ip = IpAddr::V4(b.ip);
                claim(&mut ips, tenant, ip, &format!("arp binding {}", mac_str(&mac)), |first, second| {
                    ConfigError::DuplicateIp { tenant: t.name.clone(), ip, first, second }
                })?;
                arp.push((tenant, b.ip, mac));
            }
        }

        let (link_rate, qos) = self.qos_settings(&tenant_ids, &tenants)?;
        for (id, q) in qos {
            if let Some(t) = tenants[id].as_mut() {
                t.qos = q;
            }
        }
        let underlay = Underlay {
            interface: self.uplink.interface.clone(),
            vtep_ip,
            prefix_len: prefix.unwrap_or(32),
            gateway: self.uplink.gateway,
            mac,
            mtu,
            ttl: self.uplink.ttl.max(1),
            rate: link_rate,
        };
        check_static_bounds(&static_fdb, &tenants, self.daemon.fdb_capacity)?;
        let mut t = Tables::new(
            underlay,
            tenants,
            ports,
            static_fdb,
            arp,
            self.daemon.fdb_capacity,
            self.daemon.fdb_aging_secs,
        );
        t.static_follows_frames = self.store.is_some();
        Ok(t)
    }
}

/// Static FDB entries (the local ports' MACs and configured remote ones) are bounded per
/// tenant by its `mac_limit` (as its learned entries are, separately) and together by
/// `fdb_capacity` (as the learned entries are, separately): a core's FDB is allocated for
/// both at start and never grows on the forwarding thread, and no tenant's static entries
/// take room another tenant learns in.
pub fn check_static_bounds(
    static_fdb: &[(TenantId, MacAddr, FdbDest)],
    tenants: &[Option<Tenant>],
    fdb_capacity: u32,
) -> Result<(), ConfigError> {
    if static_fdb.len() > fdb_capacity as usize {
        return Err(ConfigError::FdbBound(format!(
            "{} static FDB entries (port MACs included), more than daemon.fdb_capacity {fdb_capacity}",
            static_fdb.len()
        )));
    }
    let mut per = vec![0u32; tenants.len()];
    for (t, _, _) in static_fdb {
        if let Some(n) = per.get_mut(t.index()) {
            *n += 1;
        }
    }
    for (n, t) in per.iter().zip(tenants) {
        if let Some(t) = t
            && *n > t.mac_limit
        {
            return Err(ConfigError::FdbBound(format!(
                "tenant {:?}: {n} static FDB entries (port MACs included), more than its mac_limit {}",
                t.name, t.mac_limit
            )));
        }
    }
    Ok(())
}

/// The uplink rate, and each tenant's QoS by tenant index.
type LinkAndTenantQos = (Option<u64>, Vec<(usize, crate::qos::TenantQos)>);

fn rate(s: &str, what: &str) -> Result<u64, ConfigError> {
    s.parse::<Rate>().map(|r| r.0).map_err(|e| ConfigError::Qos(format!("{what}: {e}")))
}

fn policer(port: &str, pc: &PolicerConfig) -> Result<Policer, ConfigError> {
    let r = rate(&pc.rate, &format!("port {port:?} policer rate"))?;
    let burst = match &pc.burst {
        Some(b) => {
            let v = b
                .parse::<Rate>()
                .map_err(|_| ConfigError::Qos(format!("port {port:?} policer burst: malformed size {b:?}")))?
                .0;
            if v < 1514 {
                return Err(ConfigError::Qos(format!("port {port:?} policer burst {b} is smaller than one frame")));
            }
            v
        }
        None => (r / 8 / 100).max(3000),
    };
    Ok(Policer { rate: r, burst })
}

impl Config {
    /// The uplink rate and every tenant's QoS, with admission control: a guarantee may not
    /// exceed its limit, and the guarantees together may not exceed the uplink rate.
    fn qos_settings(&self, ids: &[usize], tenants: &[Option<Tenant>]) -> Result<LinkAndTenantQos, ConfigError> {
        let link = self.uplink.rate.as_deref().map(|r| rate(r, "uplink rate")).transpose()?;
        let mut out = Vec::new();
        let mut sum: u64 = 0;
        for (i, t) in self.tenants.iter().enumerate() {
            let what = |f: &str| format!("tenant {:?} {f}", t.name);
            let guarantee = t.guarantee.as_deref().map(|r| rate(r, &what("guarantee"))).transpose()?.unwrap_or(0);
            let limit = t.limit.as_deref().map(|r| rate(r, &what("limit"))).transpose()?;
            let weight = t.weight.unwrap_or(1);
            if !(1..=1000).contains(&weight) {
                return Err(ConfigError::Qos(format!("tenant {:?}: weight {weight} out of range 1..=1000", t.name)));
            }
            if (guarantee > 0 || limit.is_some()) && link.is_none() {
                return Err(ConfigError::Qos(format!(
                    "tenant {:?}: a guarantee or limit needs the uplink rate (set uplink.rate)",
                    t.name
                )));
            }
            if let Some(l) = limit
                && guarantee > l
            {
                return Err(ConfigError::Qos(format!(
                    "tenant {:?}: guarantee {} exceeds its limit {}",
                    t.name,
                    t.guarantee.as_deref().unwrap_or(""),
                    t.limit.as_deref().unwrap_or("")
                )));
            }
            sum = sum.saturating_add(guarantee);
            if tenants.get(ids[i]).is_some_and(Option::is_some) {
                out.push((ids[i], crate::qos::TenantQos { guarantee, limit, weight }));
            }
        }
        if let Some(l) = link
            && sum > l
        {
            return Err(ConfigError::Qos(format!(
                "the guarantees add up to {} bit/s, more than the uplink rate {} ({l} bit/s)",
                sum,
                self.uplink.rate.as_deref().unwrap_or("")
            )));
        }
        Ok((link, out))
    }
}

/// Ids for `names` (in order): the id `prev` gave the same name, else the lowest id not in
/// use at or above `first`, else the next one after `slots`.
fn assign_ids<'a>(
    names: impl Iterator<Item = &'a str>,
    prev: HashMap<&str, usize>,
    slots: usize,
    first: usize,
) -> Vec<usize> {
    let names: Vec<&str> = names.collect();
    let kept: HashSet<usize> = names.iter().filter_map(|n| prev.get(n).copied()).collect();
    let mut free = (first..slots).filter(|i| !kept.contains(i));
    let mut next = slots.max(first);
    let mut taken: HashSet<&str> = HashSet::new();
    names
        .iter()
        .map(|n| match prev.get(n) {
            Some(id) if taken.insert(n) => *id,
            _ => free.next().unwrap_or_else(|| {
                next += 1;
                next - 1
            }),
        })
        .collect()
}

fn claim<K: Eq + std::hash::Hash + Copy>(
    owners: &mut HashMap<(TenantId, K), String>,
    tenant: TenantId,
    key: K,
    owner: &str,
    err: impl FnOnce(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if let Some(first) = owners.get(&(tenant, key)) {
        return Err(err(first.clone(), owner.to_string()));
    }
    owners.insert((tenant, key), owner.to_string());
    Ok(())
}

fn parse_unicast(s: &str, context: &str) -> Result<MacAddr, ConfigError> {
    let mac = parse_mac(s).map_err(|error| ConfigError::Mac { context: context.to_string(), error })?;
    if !is_assignable_mac(&mac) {
        return Err(ConfigError::NotUnicast { context: context.to_string(), mac: mac_str(&mac) });
    }
    Ok(mac)
}

/// Names of tenants and interfaces: 1..=64 of `[A-Za-z0-9_.-]`.
pub fn check_name(s: &str) -> Result<(), ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok { Ok(()) } else { Err(ConfigError::BadName(s.to_string())) }
}

/// A small change recorded without rewriting the whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// Static FDB entries added or replaced in a tenant (MACs normalised).
    FdbAdd {
        /// Tenant name.
        tenant: String,
        /// (MAC, VTEP) pairs.
        entries: Vec<(String, IpAddr)>,
    },
    /// Static FDB entries removed from a tenant.
    FdbDel {
        /// Tenant name.
        tenant: String,
        /// MACs.
        macs: Vec<String>,
    },
}

impl Record {
    /// Applies the record to `cfg` (unknown tenants and MACs are ignored: the record was
    /// validated when it was made).
    pub fn apply(&self, cfg: &mut Config) {
        match self {
            // MACs compare as addresses, not as text: a file may write `0A` or `-`.
            Record::FdbAdd { tenant, entries } => {
                if let Some(t) = cfg.tenants.iter_mut().find(|t| t.name == *tenant) {
                    for (mac, vtep) in entries {
                        let m = parse_mac(mac).ok();
                        match t.fdb.iter_mut().find(|f| parse_mac(&f.mac).ok() == m) {
                            Some(f) => (f.mac, f.vtep) = (mac.clone(), *vtep),
                            None => t.fdb.push(StaticFdbConfig { mac: mac.clone(), vtep: *vtep }),
                        }
                    }
                }
            }
            Record::FdbDel { tenant, macs } => {
                if let Some(t) = cfg.tenants.iter_mut().find(|t| t.name == *tenant) {
                    let gone: Vec<_> = macs.iter().filter_map(|m| parse_mac(m).ok()).collect();
                    t.fdb.retain(|f| parse_mac(&f.mac).map_or(true, |m| !gone.contains(&m)));
                }
            }
        }
    }
}

/// A configuration of two tenants (blue, VNI 100, and red, VNI 200) with the same MAC and IP
/// on one VM port each, a remote VTEP, a static FDB entry and an ARP binding: the fixture of
/// unit tests here and in the daemon.
pub const EXAMPLE: &str = r#"
[uplink]
interface = "eth0"
vtep_ip = "192.168.77.1/24"
mac = "02:00:00:00:ff:01"
mtu = 1600

[[tenant]]
name = "blue"
vni = 100
vteps = ["192.168.77.2"]
fdb = [{ mac = "02:00:00:00:00:02", vtep = "192.168.77.2" }]
arp = [{ ip = "10.0.0.2", mac = "02:00:00:00:00:02" }]

[[tenant]]
name = "red"
vni = 200
vteps = ["192.168.77.2"]

[[port]]
interface = "vm1"
tenant = "blue"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]

[[port]]
interface = "vm3"
tenant = "red"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
"#;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use super::EXAMPLE as SAMPLE;

    fn sample() -> Config {
        Config::from_toml(SAMPLE).unwrap()
    }

    fn err_of(edit: impl FnOnce(&mut Config)) -> String {
        let mut c = sample();
        edit(&mut c);
        c.build(None, None).unwrap_err().to_string()
    }

    #[test]
    fn static_entries_are_bounded_per_tenant_and_in_all() {
        // blue: its port's MAC and one remote entry
        assert!(sample().build(None, None).is_ok());
        let e = err_of(|c| c.tenants[0].mac_limit = 1);
        assert_eq!(e, "tenant \"blue\": 2 static FDB entries (port MACs included), more than its mac_limit 1");
        let e = err_of(|c| c.daemon.fdb_capacity = 2);
        assert_eq!(e, "3 static FDB entries (port MACs included), more than daemon.fdb_capacity 2");
    }

    #[test]
    fn sample_builds_with_overlapping_tenants() {
        let t = sample().build(None, None).unwrap();
        assert_eq!(t.tenants.len(), 2);
        assert_eq!(t.ports.len(), 3);
        assert_eq!(t.tenant_by_vni(100), Some(TenantId(0)));
        assert_eq!(t.tenant_by_vni(200), Some(TenantId(1)));
        assert_eq!(t.underlay.mtu, 1600);
        assert_eq!(t.underlay.prefix_len, 24);
    }

    #[test]
    fn round_trips_through_toml() {
        let c = sample();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn errors_name_the_bad_value() {
        assert!(err_of(|c| c.tenants[0].vni = 0).contains("VNI 0 out of range"));
        assert!(err_of(|c| c.tenants[0].vni = 16_777_216).contains("16777216"));
        assert!(err_of(|c| c.tenants[1].vni = 100).contains("duplicate VNI 100"));
        assert!(err_of(|c| c.tenants[1].name = "blue".into()).contains("duplicate tenant name \"blue\""));
        assert!(
            err_of(|c| c.ports[0].mac = "02:00:00:00:00".into()).contains("malformed MAC address \"02:00:00:00:00\"")
        );
        assert!(err_of(|c| c.ports[0].mac = "01:00:5e:00:00:01".into()).contains("not a unicast"));
        assert!(err_of(|c| c.ports[1].tenant = "green".into()).contains("unknown tenant \"green\""));
        assert!(err_of(|c| c.ports[1].interface = "vm1".into()).contains("interface \"vm1\" is used twice"));
        assert!(err_of(|c| c.ports[1].interface = "eth0".into()).contains("\"eth0\" is used twice"));
        assert!(err_of(|c| c.uplink.vtep_ip = "192.168.77.300".into()).contains("192.168.77.300"));
        assert!(err_of(|c| c.tenants[0].vteps.push("192.168.77.1".parse().unwrap())).contains("our own VTEP"));
        assert!(err_of(|c| c.tenants[0].vteps.push("fd00::1".parse().unwrap())).contains("IPv6"));
        assert!(err_of(|c| c.uplink.mtu = Some(100)).contains("MTU 100"));
        let dup_mac = err_of(|c| {
            c.ports[1].tenant = "blue".into();
            c.ports[1].ips.clear();
        });
        assert!(dup_mac.contains("duplicate MAC 02:00:00:00:00:01"), "{dup_mac}");
        let dup_ip = err_of(|c| {
            c.ports[1].tenant = "blue".into();
            c.ports[1].mac = "02:00:00:00:00:09".into();
        });
        assert!(dup_ip.contains("duplicate IP 10.0.0.1"), "{dup_ip}");
        assert!(
            err_of(|c| c.tenants[0].fdb[0].vtep = "192.168.77.9".parse().unwrap())
                .contains("not in the tenant's vteps")
        );
    }

    #[test]
    fn qos_admission_control() {
        let with = |edit: &dyn Fn(&mut Config)| {
            let mut c = sample();
            c.uplink.rate = Some("1G".into());
            edit(&mut c);
            c.build(None, None)
        };
        let t = with(&|c| {
            c.tenants[0].guarantee = Some("700M".into());
            c.tenants[1].guarantee = Some("300M".into());
            c.tenants[1].limit = Some("500M".into());
            c.tenants[1].weight = Some(3);
            c.ports[0].policer = Some(PolicerConfig { rate: "100M".into(), burst: None });
        })
        .unwrap();
        assert_eq!(t.underlay.rate, Some(1_000_000_000));
        let red = t.tenant(TenantId(1)).unwrap().qos;
        assert_eq!((red.guarantee, red.limit, red.weight), (300_000_000, Some(500_000_000), 3));
        assert_eq!(t.port(PortId(1)).unwrap().policer.unwrap().rate, 100_000_000);
        let err = |e: &dyn Fn(&mut Config)| with(e).unwrap_err().to_string();
        assert!(
            err(&|c| {
                c.tenants[0].guarantee = Some("700M".into());
                c.tenants[1].guarantee = Some("400M".into());
            })
            .contains("more than the uplink rate 1G")
        );
        assert!(
            err(&|c| {
                c.tenants[0].guarantee = Some("700M".into());
                c.tenants[0].limit = Some("500M".into());
            })
            .contains("guarantee 700M exceeds its limit 500M")
        );
        assert!(err(&|c| c.tenants[0].guarantee = Some("lots".into())).contains("malformed rate \"lots\""));
        assert!(err(&|c| c.tenants[0].weight = Some(0)).contains("weight 0 out of range"));
        assert!(err(&|c| c.uplink.rate = Some("fast".into())).contains("uplink rate"));
        let mut c = sample();
        c.tenants[0].guarantee = Some("1M".into());
        assert!(c.build(None, None).unwrap_err().to_string().contains("needs the uplink rate"));
    }

    #[test]
    fn syntax_errors_and_unknown_fields() {
        assert!(Config::from_toml("[uplink]\ninterface = 3").unwrap_err().to_string().starts_with("config:"));
        let e = Config::from_toml(&SAMPLE.replace("mtu = 1600", "mtu = 1600\ncolour = 1")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
