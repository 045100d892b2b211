//! The forwarding database of one core: (tenant, MAC) -> where it lives.
//!
//! Entries are static (from the control plane: local port MACs and configured remote MACs) or
//! learned (from frames decapsulated from a remote VTEP, or seen on a local port). Learned
//! entries age out with the clock passed in. The table is allocated at its full capacity up
//! front, so learning never allocates, and each tenant is held to its MAC limit so one tenant
//! cannot exhaust the table for the others.
//!
//! May depend on: tables (`FdbDest`), types, wire; hashbrown and foldhash.

use crate::tables::FdbDest;
use crate::types::TenantId;
use crate::wire::MacAddr;
use foldhash::fast::RandomState;
use hashbrown::HashMap;
use serde::Serialize;

/// How an entry got into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Programmed by the control plane; never ages, never moves.
    Static,
    /// Learned from a frame sent by a local port.
    LearnedLocal,
    /// Learned from a frame decapsulated from a remote VTEP.
    LearnedRemote,
}

/// An FDB entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Where the MAC lives.
    pub dest: FdbDest,
    /// How it was added.
    pub origin: Origin,
    /// When it was last seen (ns on the core's clock); unused for static entries.
    pub last_seen: u64,
}

/// What [`Fdb::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Known at the same place; timestamp refreshed.
    Refreshed,
    /// A new entry.
    Added,
    /// Known elsewhere before; moved.
    Moved,
    /// A static entry owns this MAC; nothing changed.
    Static(FdbDest),
    /// A static remote entry moved to the VTEP the frame came from (see
    /// [`Fdb::learn_following`]).
    StaticMoved,
    /// The tenant's MAC limit or the table's capacity is reached; nothing learned.
    Full,
}

/// Packs the tenant and the MAC into one 64-bit key, tenant in the top 16 bits.
#[inline]
fn key(tenant: TenantId, mac: &MacAddr) -> u64 {
    let m = mac.0;
    (u64::from(tenant.0) << 48)
        | (u64::from(m[0]) << 40)
        | (u64::from(m[1]) << 32)
        | (u64::from(m[2]) << 24)
        | (u64::from(m[3]) << 16)
        | (u64::from(m[4]) << 8)
        | u64::from(m[5])
}

fn unkey(k: u64) -> (TenantId, MacAddr) {
    let b = k.to_be_bytes();
    (TenantId(u16::from_be_bytes([b[0], b[1]])), MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]]))
}

/// Re-learning the same place only rewrites the timestamp when it is older than this, so a
/// busy flow does not dirty the entry's cache line on every packet.
const REFRESH_NS: u64 = 1_000_000_000;

/// One core's FDB.
#[derive(Debug)]
pub struct Fdb {
    map: HashMap<u64, Entry, RandomState>,
    learned_per_tenant: Vec<u32>,
    /// Learned entries of all tenants (static ones do not count against `capacity`).
    learned_total: usize,
    capacity: usize,
    aging_ns: u64,
    /// Static remote entries moved by frames since the last [`Fdb::take_moved`] (the XDP
    /// fast path must forget them), bounded; `moved_overflow` when more moved.
    moved: Vec<(TenantId, MacAddr)>,
    moved_overflow: bool,
}

/// Static moves remembered between two [`Fdb::take_moved`] calls.
const MOVED_ROOM: usize = 256;

impl Fdb {
    /// A table that learns up to `capacity` entries and holds as many static ones (the
    /// control plane bounds those to `capacity`: `config::check_static_bounds`), all
    /// allocated now, so it never grows (rehashes) on the forwarding thread.
    pub fn new(capacity: usize, aging_secs: u32) -> Fdb {
        Fdb {
            map: HashMap::with_capacity_and_hasher(2 * capacity, RandomState::default()),
            learned_total: 0,
            learned_per_tenant: vec![0; crate::config::MAX_TENANTS + 1],
            capacity,
            aging_ns: u64::from(aging_secs) * 1_000_000_000,
            moved: Vec::with_capacity(MOVED_ROOM),
            moved_overflow: false,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Learned entries of `tenant`.
    pub fn learned_count(&self, tenant: TenantId) -> u32 {
        self.learned_per_tenant[tenant.index()]
    }

    /// Where `mac` lives in `tenant`, unless unknown or aged out.
    #[inline]
    pub fn lookup(&self, tenant: TenantId, mac: &MacAddr, now: u64) -> Option<FdbDest> {
        let e = self.map.get(&key(tenant, mac))?;
        if e.origin != Origin::Static && now.saturating_sub(e.last_seen) > self.aging_ns {
            return None;
        }
        Some(e.dest)
    }

    /// The entry of `mac` in `tenant`, aged or not.
    pub fn entry(&self, tenant: TenantId, mac: &MacAddr) -> Option<Entry> {
        self.map.get(&key(tenant, mac)).copied()
    }

    /// Like [`Fdb::learn`], except that a static entry of a remote MAC follows a frame from
    /// another remote VTEP (`dest` remote too): the MAC moved, and the control plane's next
    /// update sets the entry again.
    #[inline]
    pub fn learn_following(&mut self, tenant: TenantId, mac: &MacAddr, dest: FdbDest, now: u64, limit: u32) -> Learn {
        if let FdbDest::Remote(_) = dest
            && let Some(e) = self.map.get_mut(&key(tenant, mac))
            && e.origin == Origin::Static
            && matches!(e.dest, FdbDest::Remote(_))
        {
            if e.dest == dest {
                return Learn::Static(dest);
            }
            e.dest = dest;
            if self.moved.len() < MOVED_ROOM {
                self.moved.push((tenant, *mac));
            } else {
                self.moved_overflow = true;
            }
            return Learn::StaticMoved;
        }
        self.learn(tenant, mac, dest, Origin::LearnedRemote, now, limit)
    }

    /// The static remote entries frames moved since the last call, and whether more moved
    /// than could be remembered (then every remote entry must be assumed moved).
    pub fn take_moved(&mut self, out: &mut Vec<(TenantId, MacAddr)>) -> bool {
        out.clear();
        out.append(&mut self.moved);
        std::mem::take(&mut self.moved_overflow)
    }

    /// Records that `mac` of `tenant` was seen at `dest`. `limit` is the tenant's MAC limit.
    #[inline]
    pub fn learn(
        &mut self,
        tenant: TenantId,
        mac: &MacAddr,
        dest: FdbDest,
        origin: Origin,
        now: u64,
        limit: u32,
    ) -> Learn {
        let k = key(tenant, mac);
        if let Some(e) = self.map.get_mut(&k) {
            if e.origin == Origin::Static {
                return Learn::Static(e.dest);
            }
            if e.dest == dest {
                if now.saturating_sub(e.last_seen) > REFRESH_NS {
                    e.last_seen = now;
                }
                return Learn::Refreshed;
            }
            *e = Entry { dest, origin, last_seen: now };
            return Learn::Moved;
        }
        let count = &mut self.learned_per_tenant[tenant.index()];
        if *count >= limit || self.learned_total >= self.capacity {
            return Learn::Full;
        }
        *count += 1;
        self.learned_total += 1;
        self.map.insert(k, Entry { dest, origin, last_seen: now });
        Learn::Added
    }

    /// Installs or replaces a static entry. Static entries do not count against the
    /// learning capacity; the control plane bounds their number (to the capacity again).
    pub fn insert_static(&mut self, tenant: TenantId, mac: &MacAddr, dest: FdbDest) {
        let old = self.map.insert(key(tenant, mac), Entry { dest, origin: Origin::Static, last_seen: 0 });
        if matches!(old, Some(e) if e.origin != Origin::Static) {
            self.learned_per_tenant[tenant.index()] -= 1;
            self.learned_total -= 1;
        }
    }

    /// Removes an entry of any origin.
    pub fn remove(&mut self, tenant: TenantId, mac: &MacAddr) -> Option<Entry> {
        let old = self.map.remove(&key(tenant, mac))?;
        if old.origin != Origin::Static {
            self.learned_per_tenant[tenant.index()] -= 1;
            self.learned_total -= 1;
        }
        Some(old)
    }

    /// Replaces every static entry with `entries`, keeping learned ones (a learned entry for a
    /// MAC that became static is replaced).
    pub fn sync_static(&mut self, entries: &[(TenantId, MacAddr, FdbDest)]) {
        self.map.retain(|_, e| e.origin != Origin::Static);
        for (t, m, d) in entries {
            self.insert_static(*t, m, *d);
        }
    }

    /// Keeps only the learned entries for which `keep(tenant, mac, dest)` is true.
    pub fn retain_learned(&mut self, mut keep: impl FnMut(TenantId, MacAddr, FdbDest) -> bool) {
        let (counts, total) = (&mut self.learned_per_tenant, &mut self.learned_total);
        self.map.retain(|k, e| {
            if e.origin == Origin::Static {
                return true;
            }
            let (t, m) = unkey(*k);
            let k = keep(t, m, e.dest);
            if !k {
                counts[t.index()] -= 1;
                *total -= 1;
            }
            k
        });
    }

    /// Forgets every learned entry of `tenant`.
    pub fn flush_tenant(&mut self, tenant: TenantId) {
        self.map.retain(|k, e| e.origin == Origin::Static || unkey(*k).0 != tenant);
        self.learned_total -= std::mem::take(&mut self.learned_per_tenant[tenant.index()]) as usize;
    }

    /// Removes learned entries not seen for the aging time; returns how many.
    pub fn age(&mut self, now: u64) -> usize {
        let before = self.map.len();
        let aging = self.aging_ns;
        let (counts, total) = (&mut self.learned_per_tenant, &mut self.learned_total);
        self.map.retain(|k, e| {
            let keep = e.origin == Origin::Static || now.saturating_sub(e.last_seen) <= aging;
            if !keep {
                counts[unkey(*k).0.index()] -= 1;
                *total -= 1;
            }
            keep
        });
        before - self.map.len()
    }

    /// Every entry, for display.
    pub fn iter(&self) -> impl Iterator<Item = (TenantId, MacAddr, Entry)> + '_ {
        self.map.iter().map(|(k, e)| {
            let (t, m) = unkey(*k);
            (t, m, *e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PortId;
    use std::net::Ipv4Addr;

    const S: u64 = 1_000_000_000;
    const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 7]);

    #[test]
    fn key_round_trip_and_tenant_separation() {
        let (t, m) = unkey(key(TenantId(513), &M));
        assert_eq!((t, m), (TenantId(513), M));
        let mut f = Fdb::new(16, 300);
        f.learn(TenantId(1), &M, FdbDest::Local(PortId(1)), Origin::LearnedLocal, 0, 10);
        assert_eq!(f.lookup(TenantId(1), &M, 0), Some(FdbDest::Local(PortId(1))));
        assert_eq!(f.lookup(TenantId(2), &M, 0), None);
    }

    #[test]
    fn aging_with_injected_clock() {
        let mut f = Fdb::new(16, 300);
        let d = FdbDest::Remote(Ipv4Addr::new(192, 168, 0, 2));
        assert_eq!(f.learn(TenantId(0), &M, d, Origin::LearnedRemote, 10 * S, 10), Learn::Added);
        assert_eq!(f.lookup(TenantId(0), &M, 310 * S), Some(d));
        assert_eq!(f.lookup(TenantId(0), &M, 311 * S), None);
        // refreshing moves the deadline
        assert_eq!(f.learn(TenantId(0), &M, d, Origin::LearnedRemote, 200 * S, 10), Learn::Refreshed);
        assert_eq!(f.lookup(TenantId(0), &M, 450 * S), Some(d));
        assert_eq!(f.age(450 * S), 0);
        assert_eq!(f.age(501 * S), 1);
        assert!(f.is_empty());
        assert_eq!(f.learned_count(TenantId(0)), 0);
    }

    #[test]
    fn static_entries_never_age_or_move() {
        let mut f = Fdb::new(16, 1);
        f.insert_static(TenantId(0), &M, FdbDest::Local(PortId(3)));
        assert_eq!(f.lookup(TenantId(0), &M, 1000 * S), Some(FdbDest::Local(PortId(3))));
        let r = f.learn(TenantId(0), &M, FdbDest::Remote(Ipv4Addr::LOCALHOST), Origin::LearnedRemote, 0, 10);
        assert_eq!(r, Learn::Static(FdbDest::Local(PortId(3))));
        assert_eq!(f.age(1000 * S), 0);
    }

    #[test]
    fn a_static_remote_entry_follows_a_moved_vm_when_asked() {
        let (a, b) = (Ipv4Addr::new(192, 168, 77, 1), Ipv4Addr::new(192, 168, 77, 2));
        let mut f = Fdb::new(16, 300);
        f.insert_static(TenantId(0), &M, FdbDest::Remote(a));
        // Without following (a local file's entries), a frame from b moves nothing.
        assert_eq!(
            f.learn(TenantId(0), &M, FdbDest::Remote(b), Origin::LearnedRemote, 0, 10),
            Learn::Static(FdbDest::Remote(a))
        );
        assert_eq!(f.learn_following(TenantId(0), &M, FdbDest::Remote(a), 0, 10), Learn::Static(FdbDest::Remote(a)));
        assert_eq!(f.learn_following(TenantId(0), &M, FdbDest::Remote(b), 0, 10), Learn::StaticMoved);
        let mut moved = Vec::new();
        assert!(!f.take_moved(&mut moved));
        assert_eq!(moved, vec![(TenantId(0), M)], "the fast path is told to forget it");
        assert!(!f.take_moved(&mut moved) && moved.is_empty());
        assert_eq!(f.lookup(TenantId(0), &M, 1000 * S), Some(FdbDest::Remote(b)), "moved, and still never ages");
        assert_eq!(f.entry(TenantId(0), &M).map(|e| e.origin), Some(Origin::Static));
        assert_eq!(f.learned_count(TenantId(0)), 0);
        // A local VM's MAC is never taken by a frame from the underlay.
        let l = MacAddr([2, 0, 0, 0, 0, 7]);
        f.insert_static(TenantId(0), &l, FdbDest::Local(PortId(1)));
        assert_eq!(
            f.learn_following(TenantId(0), &l, FdbDest::Remote(b), 0, 10),
            Learn::Static(FdbDest::Local(PortId(1)))
        );
        // An unknown MAC is learned as usual.
        assert_eq!(
            f.learn_following(TenantId(0), &MacAddr([2, 0, 0, 0, 0, 8]), FdbDest::Remote(b), 0, 10),
            Learn::Added
        );
    }

    #[test]
    fn per_tenant_limit_protects_others() {
        let mut f = Fdb::new(100, 300);
        for i in 0..50u8 {
            let r = f.learn(
                TenantId(1),
                &MacAddr([2, 0, 0, 0, 1, i]),
                FdbDest::Local(PortId(1)),
                Origin::LearnedLocal,
                0,
                8,
            );
            assert_eq!(r, if i < 8 { Learn::Added } else { Learn::Full });
        }
        assert_eq!(f.learned_count(TenantId(1)), 8);
        assert_eq!(f.learn(TenantId(2), &M, FdbDest::Local(PortId(2)), Origin::LearnedLocal, 0, 8), Learn::Added);
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let mut f = Fdb::new(4, 300);
        for i in 0..10u8 {
            f.learn(TenantId(u16::from(i)), &M, FdbDest::Local(PortId(1)), Origin::LearnedLocal, 0, 100);
        }
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn move_and_flush() {
        let mut f = Fdb::new(16, 300);
        f.learn(TenantId(0), &M, FdbDest::Local(PortId(1)), Origin::LearnedLocal, 0, 10);
        assert_eq!(f.learn(TenantId(0), &M, FdbDest::Local(PortId(2)), Origin::LearnedLocal, 0, 10), Learn::Moved);
        assert_eq!(f.lookup(TenantId(0), &M, 0), Some(FdbDest::Local(PortId(2))));
        f.insert_static(TenantId(0), &MacAddr([2, 0, 0, 0, 0, 9]), FdbDest::Local(PortId(1)));
        f.flush_tenant(TenantId(0));
        assert_eq!(f.len(), 1);
        f.sync_static(&[]);
        assert!(f.is_empty());
    }

    #[test]
    fn static_entries_take_no_room_from_learning_and_the_table_never_grows() {
        let mut f = Fdb::new(4, 300);
        let cap = f.map.capacity();
        let (t0, t1) = (TenantId(0), TenantId(1));
        // tenant 0 fills its share of static entries (the control plane allows `capacity`)
        for i in 0..4u8 {
            f.insert_static(t0, &MacAddr([2, 0, 0, 0, 1, i]), FdbDest::Local(PortId(1)));
        }
        // tenant 1 can still learn the whole learning capacity
        for i in 0..4u8 {
            let r = f.learn(t1, &MacAddr([2, 0, 0, 0, 2, i]), FdbDest::Local(PortId(2)), Origin::LearnedLocal, 1, 100);
            assert_eq!(r, Learn::Added, "entry {i}");
        }
        let r = f.learn(t1, &MacAddr([2, 0, 0, 0, 2, 9]), FdbDest::Local(PortId(2)), Origin::LearnedLocal, 1, 100);
        assert_eq!(r, Learn::Full);
        assert_eq!(f.map.capacity(), cap, "allocated once, for both");
        // forgetting learned entries gives their room back
        f.flush_tenant(t1);
        let r = f.learn(t1, &MacAddr([2, 0, 0, 0, 2, 9]), FdbDest::Local(PortId(2)), Origin::LearnedLocal, 1, 100);
        assert_eq!(r, Learn::Added);
    }
}
