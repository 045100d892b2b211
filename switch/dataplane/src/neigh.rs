//! Underlay neighbours: the MAC of each remote VTEP's next hop, as resolved by the VTEP host
//! stack with ARP. Fixed capacity, allocated up front.
//!
//! May depend on: wire; hashbrown and foldhash.

use crate::wire::MacAddr;
use foldhash::fast::RandomState;
use hashbrown::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Neighbour answers shared by the cores of one daemon. With several queues (RSS) an ARP
/// reply lands on one core's queue while every core sends to that VTEP: the core that got
/// it publishes it here, and the others take it at their next poll. Written when a core
/// resolves a neighbour (rare), read only when its generation moved: one atomic load per
/// poll, never a lock on the per-packet path.
#[derive(Debug)]
pub struct NeighShare {
    generation: AtomicU64,
    /// ip -> (MAC, generation it was published in).
    answers: Mutex<HashMap<Ipv4Addr, (MacAddr, u64), RandomState>>,
    capacity: usize,
}

impl NeighShare {
    /// Room for `capacity` answers (the oldest is forgotten beyond that).
    pub fn new(capacity: usize) -> NeighShare {
        NeighShare {
            generation: AtomicU64::new(0),
            answers: Mutex::new(HashMap::with_capacity_and_hasher(capacity, RandomState::default())),
            capacity: capacity.max(1),
        }
    }

    /// Publishes that `ip` is at `mac`.
    pub fn publish(&self, ip: Ipv4Addr, mac: MacAddr) {
        let mut a = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if a.get(&ip).is_some_and(|(m, _)| *m == mac) {
            return; // nothing new
        }
        if a.len() >= self.capacity
            && !a.contains_key(&ip)
            && let Some(oldest) = a.iter().min_by_key(|(_, (_, g))| *g).map(|(ip, _)| *ip)
        {
            a.remove(&oldest);
        }
        let g = self.generation.load(Ordering::Relaxed) + 1;
        a.insert(ip, (mac, g));
        self.generation.store(g, Ordering::Release);
    }

    /// Takes the answers published since generation `seen` into `neigh`, for neighbours it
    /// has (wanted or known), as confirmed at `now`; moves `seen` on. Returns how many.
    #[inline]
    pub fn merge_into(&self, neigh: &mut Neighbors, seen: &mut u64, now: u64) -> usize {
        let g = self.generation.load(Ordering::Acquire);
        if g == *seen {
            return 0;
        }
        let a = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut n = 0;
        for (ip, (mac, at)) in a.iter() {
            if *at > *seen && neigh.get(*ip).is_some_and(|e| e.mac != Some(*mac) || e.tries > 0) {
                neigh.update(*ip, *mac, now);
                n += 1;
            }
        }
        *seen = g;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_one_core_got_resolves_the_neighbour_on_every_core() {
        let share = NeighShare::new(2);
        let (vtep, mac) = (Ipv4Addr::new(192, 168, 77, 2), MacAddr([2, 0, 0, 0, 0xff, 2]));
        // two cores both want the VTEP; the reply reaches core A only
        let (mut a, mut b) = (Neighbors::new(16), Neighbors::new(16));
        let (mut seen_a, mut seen_b) = (0, 0);
        assert_eq!(a.resolve(vtep, 1), None);
        assert_eq!(b.resolve(vtep, 1), None);
        assert_eq!(share.merge_into(&mut b, &mut seen_b, 2), 0, "nothing published yet");
        a.update(vtep, mac, 3);
        share.publish(vtep, mac);
        assert_eq!(share.merge_into(&mut b, &mut seen_b, 4), 1);
        assert_eq!(b.resolve(vtep, 5), Some(mac));
        // A already has it; a second look finds nothing new
        assert_eq!(share.merge_into(&mut a, &mut seen_a, 4), 0);
        assert_eq!(share.merge_into(&mut b, &mut seen_b, 6), 0);
        // a neighbour a core does not use is not added to it
        share.publish(Ipv4Addr::new(192, 168, 77, 9), mac);
        assert_eq!(share.merge_into(&mut b, &mut seen_b, 7), 0);
        assert!(b.get(Ipv4Addr::new(192, 168, 77, 9)).is_none());
        // bounded: a third address forgets the oldest
        share.publish(Ipv4Addr::new(192, 168, 77, 10), mac);
        assert_eq!(share.answers.lock().unwrap().len(), 2);
        // a changed MAC moves every core over
        let moved = MacAddr([2, 0, 0, 0, 0xff, 3]);
        share.publish(vtep, moved);
        assert_eq!(share.merge_into(&mut b, &mut seen_b, 8), 1);
        assert_eq!(b.resolve(vtep, 9), Some(moved));
    }
}
