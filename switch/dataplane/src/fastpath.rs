//! What the XDP fast path may know: the part of a table snapshot whose lookups alone decide a
//! frame's fate (docs/architecture.md, "The XDP fast path"). The control side derives a
//! [`FastView`] from every snapshot it publishes and writes it into the XDP maps in two
//! steps around the cores' switch: [`FastView::meet`] of old and new before (every entry
//! that goes away or changes is gone, every permission taken back), the new view after. At
//! every moment the fast path knows a subset of what both the old and the new core tables
//! say, so it never forwards a frame the core would decide otherwise; whatever it does not
//! know goes to the core.
//!
//! Only static entries are given to the fast path: learned entries age and move on the cores
//! (which the fast path would not see), and learning itself needs the core.
//!
//! May depend on: tables, types, wire. Pure: no I/O.

use crate::tables::{FdbDest, PortKind, Tables};
use crate::types::{PortId, TenantId};
use crate::wire::MacAddr;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// A VM port as the fast path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFast {
    /// Its tenant.
    pub tenant: TenantId,
    /// The tenant's VNI.
    pub vni: u32,
    /// The VM's MAC.
    pub mac: MacAddr,
    /// Its IPv4 source addresses.
    pub ipv4: Vec<Ipv4Addr>,
    /// What it sends may be encapsulated in XDP (no policer, not captured).
    pub from: bool,
    /// Frames for it may be decapsulated in XDP (not captured).
    pub to: bool,
}

/// Most IPv4 addresses a port may have for the fast path to check its sources (a port with
/// more is left to the core).
pub const MAX_IPV4: usize = 4;

/// The fast path's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FastView {
    /// Decapsulation in XDP is on.
    pub decap: bool,
    /// Encapsulation in XDP is on (off while the uplink has a rate: the scheduler decides).
    pub encap: bool,
    /// Tenant by VNI.
    pub vnis: BTreeMap<u32, TenantId>,
    /// Which VTEPs may send which tenant's frames.
    pub vteps: BTreeSet<(TenantId, Ipv4Addr)>,
    /// Static local MACs: the VM port behind each.
    pub local: BTreeMap<(TenantId, MacAddr), PortId>,
    /// Static remote MACs: their VTEP and the next hop towards it.
    pub remote: BTreeMap<(TenantId, MacAddr), (Ipv4Addr, Ipv4Addr)>,
    /// VM ports.
    pub ports: BTreeMap<PortId, VmFast>,
    /// Next hops the remote entries use (the neighbour map keeps only these).
    pub next_hops: BTreeSet<Ipv4Addr>,
}

impl FastView {
    /// The view of `t`: empty when `enabled` is false; ports in `captured` keep every frame
    /// in the core (a capture sees what the core sees).
    pub fn derive(t: &Tables, enabled: bool, captured: &BTreeSet<PortId>) -> FastView {
        let mut v = FastView::default();
        if !enabled {
            return v;
        }
        // A capture on the uplink sees every tenant's overlay traffic: all of it stays in the core.
        let uplink_free = !captured.contains(&crate::tables::UPLINK);
        v.decap = uplink_free;
        v.encap = uplink_free && t.underlay.rate.is_none();
        for (id, tn) in t.live_tenants() {
            v.vnis.insert(tn.vni.get(), id);
            for vtep in &tn.vteps {
                v.vteps.insert((id, *vtep));
            }
        }
        for (id, p) in t.live_ports() {
            let PortKind::Vm { tenant, mac, ipv4, .. } = &p.kind else { continue };
            let Some(tn) = t.tenant(*tenant) else { continue };
            let free = !captured.contains(&id);
            v.ports.insert(
                id,
                VmFast {
                    tenant: *tenant,
                    vni: tn.vni.get(),
                    mac: *mac,
                    ipv4: ipv4.clone(),
                    from: free && p.policer.is_none() && ipv4.len() <= MAX_IPV4,
                    to: free,
                },
            );
        }
        for (tenant, mac, dest) in &t.static_fdb {
            v.insert_static(t, *tenant, *mac, *dest);
        }
        v
    }

    /// Adds a static entry the fast path can use (a unicast MAC of a live tenant, behind a
    /// VM port of that tenant or a remote VTEP).
    fn insert_static(&mut self, t: &Tables, tenant: TenantId, mac: MacAddr, dest: FdbDest) {
        if !mac.is_unicast() || mac.0 == [0; 6] || t.tenant(tenant).is_none() {
            return;
        }
        match dest {
            FdbDest::Local(p) if self.ports.get(&p).is_some_and(|vm| vm.tenant == tenant) => {
                self.local.insert((tenant, mac), p);
            }
            FdbDest::Local(_) => {}
            FdbDest::Remote(vtep) => {
                let nh = t.underlay.next_hop(vtep);
                self.remote.insert((tenant, mac), (vtep, nh));
                self.next_hops.insert(nh);
            }
        }
    }

    /// Applies a static FDB change (what `CoreMsg::Fdb` gives the cores) to the view of
    /// `t`'s underlay.
    pub fn apply_fdb(&mut self, t: &Tables, add: &[(TenantId, MacAddr, FdbDest)], del: &[(TenantId, MacAddr)]) {
        if self.vnis.is_empty() && !self.decap {
            return; // the fast path is off
        }
        for (tn, m) in del {
            self.local.remove(&(*tn, *m));
            self.remote.remove(&(*tn, *m));
        }
        for (tn, m, d) in add {
            self.local.remove(&(*tn, *m));
            self.remote.remove(&(*tn, *m));
            self.insert_static(t, *tn, *m, *d);
        }
        self.next_hops = self.remote.values().map(|(_, nh)| *nh).collect();
    }

    /// What both `self` and `other` allow: the entries equal in both, permissions both give.
    /// Written before the cores switch from `self` to `other`.
    pub fn meet(&self, other: &FastView) -> FastView {
        fn both<K: Ord + Clone, V: PartialEq + Clone>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> BTreeMap<K, V> {
            a.iter().filter(|(k, v)| b.get(*k) == Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        let ports = self
            .ports
            .iter()
            .filter_map(|(id, a)| {
                let b = other.ports.get(id)?;
                let same = a.tenant == b.tenant && a.vni == b.vni && a.mac == b.mac && a.ipv4 == b.ipv4;
                same.then(|| (*id, VmFast { from: a.from && b.from, to: a.to && b.to, ..a.clone() }))
            })
            .collect();
        FastView {
            decap: self.decap && other.decap,
            encap: self.encap && other.encap,
            vnis: both(&self.vnis, &other.vnis),
            vteps: self.vteps.intersection(&other.vteps).copied().collect(),
            local: both(&self.local, &other.local),
            remote: both(&self.remote, &other.remote),
            ports,
            next_hops: self.next_hops.intersection(&other.next_hops).copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn tables(extra: &str) -> Tables {
        let text = format!(
            r#"
[uplink]
interface = "u"
vtep_ip = "192.168.77.1/24"
mac = "02:00:00:00:ff:01"
[[tenant]]
name = "blue"
vni = 100
vteps = ["192.168.77.2"]
fdb = [{{ mac = "02:00:00:00:00:02", vtep = "192.168.77.2" }}]
[[tenant]]
name = "red"
vni = 200
vteps = ["192.168.77.2"]
[[port]]
interface = "p1"
tenant = "blue"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
[[port]]
interface = "p3"
tenant = "red"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
{extra}
"#
        );
        let c: Config = toml::from_str(&text).unwrap();
        c.build(None, Some(1600)).unwrap()
    }

    #[test]
    fn view_holds_static_entries_with_the_tenant_in_every_key() {
        let t = tables("");
        let v = FastView::derive(&t, true, &BTreeSet::new());
        assert!(v.decap && v.encap);
        assert_eq!(v.vnis.len(), 2);
        let blue = t.tenant_by_name("blue").unwrap();
        let red = t.tenant_by_name("red").unwrap();
        let m1 = MacAddr([2, 0, 0, 0, 0, 1]);
        // the same MAC in two tenants: two entries, two ports
        assert_ne!(v.local.get(&(blue, m1)), v.local.get(&(red, m1)));
        let m2 = MacAddr([2, 0, 0, 0, 0, 2]);
        let vtep = Ipv4Addr::new(192, 168, 77, 2);
        assert_eq!(v.remote.get(&(blue, m2)), Some(&(vtep, vtep)));
        assert_eq!(v.remote.get(&(red, m2)), None, "red has no such entry");
        assert!(FastView::derive(&t, false, &BTreeSet::new()) == FastView::default());
    }

    #[test]
    fn a_rate_a_policer_or_a_capture_keep_frames_in_the_core() {
        let t = tables("");
        let p1 = t.port_by_name("p1").unwrap();
        let v = FastView::derive(&t, true, &BTreeSet::from([p1]));
        assert!(!v.ports[&p1].from && !v.ports[&p1].to);
        let mut rated = t.clone();
        rated.underlay.rate = Some(1_000_000_000);
        assert!(!FastView::derive(&rated, true, &BTreeSet::new()).encap);
        let pol = tables("");
        let mut pol = pol;
        if let Some(Some(p)) = pol.ports.get_mut(p1.index()) {
            p.policer = Some(crate::tables::Policer { rate: 1_000_000, burst: 10_000 });
        }
        let v = FastView::derive(&pol, true, &BTreeSet::new());
        assert!(!v.ports[&p1].from && v.ports[&p1].to);
    }

    #[test]
    fn meet_keeps_only_what_both_agree_on() {
        let t = tables("");
        let a = FastView::derive(&t, true, &BTreeSet::new());
        let blue = t.tenant_by_name("blue").unwrap();
        let m2 = MacAddr([2, 0, 0, 0, 0, 2]);
        let mut b = a.clone();
        // the MAC moved to another VTEP: gone in the meet, so neither old nor new is used
        b.apply_fdb(&t, &[(blue, m2, FdbDest::Remote(Ipv4Addr::new(192, 168, 77, 3)))], &[]);
        let m = a.meet(&b);
        assert!(!m.remote.contains_key(&(blue, m2)));
        assert_eq!(b.remote[&(blue, m2)].0, Ipv4Addr::new(192, 168, 77, 3));
        // a permission only one side gives is not given
        let p1 = t.port_by_name("p1").unwrap();
        let mut c = a.clone();
        c.ports.get_mut(&p1).unwrap().from = false;
        assert!(!a.meet(&c).ports[&p1].from && a.meet(&c).ports[&p1].to);
        assert_eq!(a.meet(&a), a);
        // deleting the entry removes it
        let mut d = a.clone();
        d.apply_fdb(&t, &[], &[(blue, m2)]);
        assert!(d.remote.is_empty() && d.next_hops.is_empty());
    }
}
