//! Counters of one core. Single writer (the core); they are copied out for readers.

use crate::drop::DropReason;
use serde::Serialize;

/// Packet, byte and drop counters of one port or one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Drops by reason, indexed by `DropReason as usize`.
    #[serde(serialize_with = "ser_drops")]
    pub drops: [u64; DropReason::COUNT],
}

fn ser_drops<S: serde::Serializer>(d: &[u64; DropReason::COUNT], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    for r in DropReason::ALL {
        if d[*r as usize] != 0 {
            m.serialize_entry(r.name(), &d[*r as usize])?;
        }
    }
    m.end()
}

impl Default for Counters {
    fn default() -> Self {
        Counters { rx_packets: 0, rx_bytes: 0, tx_packets: 0, tx_bytes: 0, drops: [0; DropReason::COUNT] }
    }
}

impl Counters {
    /// Total drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Drops of one reason.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Counters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
    }
}

/// Other things worth counting that are not drops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Events {
    /// Frames flooded (broadcast, multicast, unknown unicast).
    pub flooded: u64,
    /// ARP requests answered locally (suppressed).
    pub arp_suppressed: u64,
    /// New FDB entries learned.
    pub fdb_learned: u64,
    /// FDB entries that moved.
    pub fdb_moved: u64,
    /// Learning refused because of a MAC limit or full table.
    pub fdb_full: u64,
    /// Frames handed to the VTEP host stack.
    pub to_host: u64,
    /// Partial checksums of VM frames completed (checksum offload).
    pub csum_completed: u64,
    /// TCP super-frames from VMs segmented (TSO/GSO).
    pub tso_frames: u64,
    /// Segments made of them.
    pub tso_segments: u64,
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" sent back to VMs.
    pub icmp_too_big: u64,
    /// TCP segments sent to VMs coalesced into super-frames (receive offload for the guest).
    pub coalesced_segments: u64,
    /// Super-frames they made.
    pub coalesced_frames: u64,
}

/// All counters of one core.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Per port, by port id.
    pub ports: Vec<Counters>,
    /// Per tenant, by tenant id.
    pub tenants: Vec<Counters>,
    /// Non-drop events.
    pub events: Events,
    /// Batches processed.
    pub batches: u64,
}

impl Stats {
    /// Room for `ports` ports and `tenants` tenants (grows only).
    pub fn resize(&mut self, ports: usize, tenants: usize) {
        if self.ports.len() < ports {
            self.ports.resize(ports, Counters::default());
        }
        if self.tenants.len() < tenants {
            self.tenants.resize(tenants, Counters::default());
        }
    }

    /// Makes `self` a copy of `o`, reusing its memory (no allocation once the sizes match).
    pub fn copy_from(&mut self, o: &Stats) {
        self.ports.clone_from(&o.ports);
        self.tenants.clone_from(&o.tenants);
        self.events.clone_from(&o.events);
        self.batches = o.batches;
    }

    /// Sum of all port drops of one reason.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.ports.iter().map(|c| c.drop_count(r)).sum()
    }

    /// Adds another core's counters.
    pub fn add(&mut self, o: &Stats) {
        self.resize(o.ports.len(), o.tenants.len());
        for (a, b) in self.ports.iter_mut().zip(&o.ports) {
            a.add(b);
        }
        for (a, b) in self.tenants.iter_mut().zip(&o.tenants) {
            a.add(b);
        }
        let (e, f) = (&mut self.events, &o.events);
        e.flooded += f.flooded;
        e.arp_suppressed += f.arp_suppressed;
        e.fdb_learned += f.fdb_learned;
        e.fdb_moved += f.fdb_moved;
        e.fdb_full += f.fdb_full;
        e.to_host += f.to_host;
        e.csum_completed += f.csum_completed;
        e.tso_frames += f.tso_frames;
        e.tso_segments += f.tso_segments;
        e.icmp_too_big += f.icmp_too_big;
        e.coalesced_segments += f.coalesced_segments;
        e.coalesced_frames += f.coalesced_frames;
        self.batches += o.batches;
    }
}
