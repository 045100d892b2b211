//! The table snapshot the forwarding cores read: tenants, ports, remote VTEPs, static FDB
//! entries and ARP bindings. Immutable once built; the control plane builds a new one and
//! publishes it (see [`crate::datapath`]). Every lookup key carries the tenant.
//!
//! May depend on: qos (`TenantQos`), types, wire; hashbrown and foldhash.

use crate::types::{PortId, TenantId, Vni};
use crate::wire::MacAddr;
use foldhash::fast::RandomState;
use hashbrown::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Where a MAC lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FdbDest {
    /// Behind a local VM port.
    Local(PortId),
    /// Behind a remote VTEP (IPv4 underlay today).
    Remote(Ipv4Addr),
}

/// The underlay side of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// Uplink interface name.
    pub interface: String,
    /// Our VTEP address.
    pub vtep_ip: Ipv4Addr,
    /// On-link prefix length of `vtep_ip` (32 when not given).
    pub prefix_len: u8,
    /// Gateway for remote VTEPs outside the on-link prefix.
    pub gateway: Option<Ipv4Addr>,
    /// Uplink MAC, the source of encapsulated frames.
    pub mac: MacAddr,
    /// Underlay MTU (largest outer IPv4 packet).
    pub mtu: u16,
    /// Outer TTL.
    pub ttl: u8,
    /// Rate the uplink is scheduled and paced at, bits/s (`None`: no QoS scheduling).
    pub rate: Option<u64>,
}

impl Underlay {
    /// The IPv4 next hop towards `vtep`: the VTEP itself when on-link (or with no gateway),
    /// else the gateway.
    pub fn next_hop(&self, vtep: Ipv4Addr) -> Ipv4Addr {
        match self.gateway {
            Some(gw) if !same_prefix(self.vtep_ip, vtep, self.prefix_len) => gw,
            _ => vtep,
        }
    }
}

fn same_prefix(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
    u32::from(a) & mask == u32::from(b) & mask
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Unique name.
    pub name: String,
    /// Its VNI.
    pub vni: Vni,
    /// Most MACs it may hold in the FDB.
    pub mac_limit: u32,
    /// Its local VM ports.
    pub ports: Vec<PortId>,
    /// Its remote VTEPs (flood list and decapsulation allow-list).
    pub vteps: Vec<Ipv4Addr>,
    /// Its bandwidth guarantee, limit and weight on the uplink.
    pub qos: crate::qos::TenantQos,
}

/// What a port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    /// The underlay port that carries VXLAN.
    Uplink,
    /// A VM's port, bound to one tenant with the addresses the VM may use.
    Vm {
        /// The tenant.
        tenant: TenantId,
        /// The VM's only source MAC.
        mac: MacAddr,
        /// The VM's IPv4 source addresses.
        ipv4: Vec<Ipv4Addr>,
        /// The VM's IPv6 source addresses (link-local ones are always allowed).
        ipv6: Vec<Ipv6Addr>,
    },
}

/// A policer on what a VM sends: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policer {
    /// Rate, bits/s (wire bits, as the uplink counts them).
    pub rate: u64,
    /// Bucket depth, bytes.
    pub burst: u64,
}

/// A port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Interface name.
    pub name: String,
    /// Role.
    pub kind: PortKind,
    /// Policer on frames the VM sends (VM ports only).
    pub policer: Option<Policer>,
}

/// The snapshot.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Underlay settings.
    pub underlay: Underlay,
    /// Tenants by [`TenantId`]; `None` where a tenant was removed (ids stay stable).
    pub tenants: Vec<Option<Tenant>>,
    /// Ports by [`PortId`]; index 0 is the uplink; `None` where a port was removed.
    pub ports: Vec<Option<Port>>,
    /// Static FDB entries (local port MACs and configured remote MACs).
    pub static_fdb: Vec<(TenantId, MacAddr, FdbDest)>,
    /// FDB capacity per core.
    pub fdb_capacity: u32,
    /// Aging time of learned entries, seconds.
    pub fdb_aging_secs: u32,
    /// Whether a frame from a listed VTEP of the tenant moves a static remote entry there (the
    /// entries come from a shared store, and a VM that moved speaks from its new host before
    /// the store reaches this one); otherwise static entries never move.
    pub static_follows_frames: bool,
    vni_index: HashMap<u32, TenantId, RandomState>,
    vtep_allow: HashSet<u64, RandomState>,
    arp: HashMap<u64, MacAddr, RandomState>,
    arp_list: Vec<(TenantId, Ipv4Addr, MacAddr)>,
}

/// The uplink's port id.
pub const UPLINK: PortId = PortId(0);

fn tenant_ip_key(t: TenantId, ip: Ipv4Addr) -> u64 {
    (u64::from(t.0) << 32) | u64::from(u32::from(ip))
}

impl Tables {
    /// Builds the indexes. Callers validate first ([`crate::config::Config::build`]).
    pub fn new(
        underlay: Underlay,
        tenants: Vec<Option<Tenant>>,
        ports: Vec<Option<Port>>,
        static_fdb: Vec<(TenantId, MacAddr, FdbDest)>,
        arp_list: Vec<(TenantId, Ipv4Addr, MacAddr)>,
        fdb_capacity: u32,
        fdb_aging_secs: u32,
    ) -> Tables {
        let mut vni_index = HashMap::with_hasher(RandomState::default());
        let mut vtep_allow = HashSet::with_hasher(RandomState::default());
        for (i, t) in tenants.iter().enumerate() {
            let Some(t) = t else { continue };
            let id = TenantId(i as u16);
            vni_index.insert(t.vni.get(), id);
            for v in &t.vteps {
                vtep_allow.insert(tenant_ip_key(id, *v));
            }
        }
        let mut arp = HashMap::with_hasher(RandomState::default());
        for (t, ip, mac) in &arp_list {
            arp.insert(tenant_ip_key(*t, *ip), *mac);
        }
        Tables {
            underlay,
            tenants,
            ports,
            static_fdb,
            fdb_capacity,
            fdb_aging_secs,
            static_follows_frames: false,
            vni_index,
            vtep_allow,
            arp,
            arp_list,
        }
    }

    /// The tenant that owns `vni`.
    #[inline]
    pub fn tenant_by_vni(&self, vni: u32) -> Option<TenantId> {
        self.vni_index.get(&vni).copied()
    }

    /// Whether `vtep` may send us frames of `tenant`.
    #[inline]
    pub fn vtep_allowed(&self, tenant: TenantId, vtep: Ipv4Addr) -> bool {
        self.vtep_allow.contains(&tenant_ip_key(tenant, vtep))
    }

    /// The MAC bound to `ip` in `tenant`, for ARP suppression.
    #[inline]
    pub fn arp_binding(&self, tenant: TenantId, ip: Ipv4Addr) -> Option<MacAddr> {
        self.arp.get(&tenant_ip_key(tenant, ip)).copied()
    }

    /// All ARP bindings.
    pub fn arp_bindings(&self) -> &[(TenantId, Ipv4Addr, MacAddr)] {
        &self.arp_list
    }

    /// The port, if it exists.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    /// The tenant, if it exists.
    #[inline]
    pub fn tenant(&self, id: TenantId) -> Option<&Tenant> {
        self.tenants.get(id.index()).and_then(Option::as_ref)
    }

    /// Every live port with its id.
    pub fn live_ports(&self) -> impl Iterator<Item = (PortId, &Port)> + '_ {
        self.ports.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|p| (PortId(i as u16), p)))
    }

    /// Every live tenant with its id.
    pub fn live_tenants(&self) -> impl Iterator<Item = (TenantId, &Tenant)> + '_ {
        self.tenants.iter().enumerate().filter_map(|(i, t)| t.as_ref().map(|t| (TenantId(i as u16), t)))
    }

    /// Port id by interface name.
    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        self.live_ports().find(|(_, p)| p.name == name).map(|(id, _)| id)
    }

    /// Tenant id by name.
    pub fn tenant_by_name(&self, name: &str) -> Option<TenantId> {
        self.live_tenants().find(|(_, t)| t.name == name).map(|(id, _)| id)
    }

    /// Every remote VTEP of every tenant, each once.
    pub fn all_vteps(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self.live_tenants().flat_map(|(_, t)| t.vteps.iter().copied()).collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn underlay(gw: Option<Ipv4Addr>) -> Underlay {
        Underlay {
            interface: "u".into(),
            vtep_ip: Ipv4Addr::new(192, 168, 77, 1),
            prefix_len: 24,
            gateway: gw,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            mtu: 1500,
            ttl: 64,
            rate: None,
        }
    }

    #[test]
    fn next_hop_uses_gateway_only_off_link() {
        let gw = Ipv4Addr::new(192, 168, 77, 254);
        let u = underlay(Some(gw));
        assert_eq!(u.next_hop(Ipv4Addr::new(192, 168, 77, 2)), Ipv4Addr::new(192, 168, 77, 2));
        assert_eq!(u.next_hop(Ipv4Addr::new(10, 1, 1, 1)), gw);
        assert_eq!(underlay(None).next_hop(Ipv4Addr::new(10, 1, 1, 1)), Ipv4Addr::new(10, 1, 1, 1));
    }
}
