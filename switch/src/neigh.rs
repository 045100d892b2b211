//! Underlay neighbours: the MAC of each remote VTEP's next hop, as resolved by the VTEP host
//! stack with ARP. Fixed capacity, allocated up front.

use crate::wire::MacAddr;
use foldhash::fast::RandomState;
use hashbrown::HashMap;
use std::net::Ipv4Addr;

/// One neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// The resolved MAC, `None` while ARP is pending.
    pub mac: Option<MacAddr>,
    /// When the MAC was last confirmed (ns), or the entry created.
    pub updated: u64,
    /// ARP requests sent since the last answer.
    pub tries: u32,
    /// When the last ARP request was sent (ns).
    pub last_request: u64,
}

/// The neighbour table of one core.
#[derive(Debug)]
pub struct Neighbors {
    map: HashMap<Ipv4Addr, Neighbor, RandomState>,
    capacity: usize,
    wanted: bool,
}

impl Neighbors {
    /// Room for `capacity` neighbours.
    pub fn new(capacity: usize) -> Neighbors {
        Neighbors { map: HashMap::with_capacity_and_hasher(capacity, RandomState::default()), capacity, wanted: false }
    }

    /// The MAC of `ip`; when unknown, marks it wanted so the host stack sends ARP.
    #[inline]
    pub fn resolve(&mut self, ip: Ipv4Addr, now: u64) -> Option<MacAddr> {
        if let Some(n) = self.map.get(&ip) {
            return n.mac;
        }
        if self.map.len() < self.capacity {
            self.map.insert(ip, Neighbor { mac: None, updated: now, tries: 0, last_request: 0 });
            self.wanted = true;
        }
        None
    }

    /// Whether a neighbour became wanted since the last call: the host stack should send ARP
    /// now rather than at its next timer tick.
    pub fn take_wanted(&mut self) -> bool {
        std::mem::take(&mut self.wanted)
    }

    /// Records an answer (or a static entry).
    pub fn update(&mut self, ip: Ipv4Addr, mac: MacAddr, now: u64) {
        if self.map.len() < self.capacity || self.map.contains_key(&ip) {
            self.map.insert(ip, Neighbor { mac: Some(mac), updated: now, tries: 0, last_request: 0 });
        }
    }

    /// The entry of `ip`.
    pub fn get(&self, ip: Ipv4Addr) -> Option<&Neighbor> {
        self.map.get(&ip)
    }

    /// The entry of `ip`, mutable.
    pub fn get_mut(&mut self, ip: Ipv4Addr) -> Option<&mut Neighbor> {
        self.map.get_mut(&ip)
    }

    /// Forgets `ip`.
    pub fn remove(&mut self, ip: Ipv4Addr) {
        self.map.remove(&ip);
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, &Neighbor)> + '_ {
        self.map.iter().map(|(ip, n)| (*ip, n))
    }

    /// Every entry, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Ipv4Addr, &mut Neighbor)> + '_ {
        self.map.iter_mut().map(|(ip, n)| (*ip, n))
    }

    /// Keeps only the entries for which `f` is true.
    pub fn retain(&mut self, f: impl FnMut(&Ipv4Addr, &mut Neighbor) -> bool) {
        self.map.retain(f);
    }
}
