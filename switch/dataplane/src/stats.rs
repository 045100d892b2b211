//! Counters of one core. Single writer (the core); they are copied out for readers.
//!
//! May depend on: drop; the protocol crate (`Events`, reply counters).

use crate::drop::DropReason;
pub use xvs_proto::reply::Events;

/// Packet, byte and drop counters of one port or one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Of the frames received, those the XDP fast path forwarded (the cores count none:
    /// the daemon adds the XDP programs' counters).
    pub fast_rx_packets: u64,
    /// Of the frames sent, those the XDP fast path forwarded.
    pub fast_tx_packets: u64,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            fast_rx_packets: 0,
            fast_tx_packets: 0,
            drops: [0; DropReason::COUNT],
        }
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
        self.fast_rx_packets += o.fast_rx_packets;
        self.fast_tx_packets += o.fast_tx_packets;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
    }
}

/// All counters of one core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
        self.events.add(&o.events);
        self.batches += o.batches;
    }
}

impl Counters {
    /// These counters as replies carry them (drops by reason name, non-zero ones only).
    pub fn to_reply(&self) -> xvs_proto::reply::Counters {
        xvs_proto::reply::Counters {
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            tx_packets: self.tx_packets,
            tx_bytes: self.tx_bytes,
            fast_rx_packets: self.fast_rx_packets,
            fast_tx_packets: self.fast_tx_packets,
            drops: DropReason::ALL
                .iter()
                .filter(|r| self.drops[**r as usize] != 0)
                .map(|r| (r.name().to_string(), self.drops[*r as usize]))
                .collect(),
        }
    }
}

impl Stats {
    /// These counters as replies carry them.
    pub fn to_reply(&self) -> xvs_proto::reply::Stats {
        xvs_proto::reply::Stats {
            ports: self.ports.iter().map(Counters::to_reply).collect(),
            tenants: self.tenants.iter().map(Counters::to_reply).collect(),
            events: self.events.clone(),
            batches: self.batches,
        }
    }
}
