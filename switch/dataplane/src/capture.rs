//! Packet capture on a port, as the forwarding core sees it: what the port receives (with the
//! decision forwarding took) and what it sends (sent, or why not). VPP's `pcap trace` and OVS
//! port mirroring are the anchors; XDP takes frames before packet taps and AF_XDP transmit
//! bypasses them, so `tcpdump` on a port shows nothing of switched traffic.
//!
//! The core copies each tapped frame into a record taken from a ring of records the control
//! side allocated, and hands it back through the same ring: no allocation, lock or syscall on
//! the forwarding thread. What a capture may cost is bounded twice: a token bucket limits the
//! bytes it copies ([`CAPTURE_RATE_BPS`]), and a reader that falls behind leaves no record
//! free. Either way the frame is forwarded as always and the capture counts it as lost, so the
//! reader knows what it missed (the pcapng statistics block carries it as `ifdrop`).
//!
//! May depend on: bucket, drop, pipeline (`Action`), tables, types, wire. Never on io: the
//! control server turns records into pcapng.

use crate::bucket::TokenBucket;
use crate::drop::DropReason;
use crate::pipeline::Action;
use crate::tables::{PortKind, Tables, UPLINK};
use crate::types::{PortId, TenantId};
use crossbeam::queue::ArrayQueue;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a capture may copy on one core, as bits/s of frame bytes plus [`RECORD_COST`] per
/// frame: 1 Gbit/s, at most about 500,000 minimum-size or 74,000 full-size frames a second,
/// a few percent of a core (`benches/RESULTS.md`, "Packet capture"). Frames beyond it are
/// forwarded as always and counted as missed by the capture.
pub const CAPTURE_RATE_BPS: u64 = 1_000_000_000;
/// The bucket's depth: a burst of this many bytes is captured at once.
pub const CAPTURE_BURST: u64 = 1 << 20;
/// What a record costs the bucket beyond its bytes: its handling costs about as much as
/// copying this many bytes (measured: ~80 ns a record of 60 bytes, ~105 ns of 1,500).
pub const RECORD_COST: u64 = 192;
/// Records per core and capture: what a reader may fall behind by.
pub const RING_RECORDS: usize = 1024;
/// The longest frame a record holds (a frame's whole data area).
pub const MAX_SNAPLEN: u32 = 4096;

/// Which way a frame crossed the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Received by the switch from the port.
    In,
    /// Sent by the switch on the port.
    Out,
}

/// What became of a captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Received: the decision forwarding took (after the policer).
    Decided(Action),
    /// Received, but the port is not in the tables the core ran on.
    Unknown,
    /// Sent: handed to the port's transmit ring.
    Sent,
    /// Not sent: why.
    Unsent(DropReason),
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Record {
    /// The core's clock when it polled the frame (ns; see [`Ring::clock_base`]).
    pub ts: u64,
    /// Which way it went.
    pub dir: Dir,
    /// Its tenant, when known.
    pub tenant: Option<TenantId>,
    /// What became of it.
    pub verdict: Verdict,
    /// Its length on the wire.
    pub len: u32,
    /// Bytes of it kept in `data`.
    pub caplen: u32,
    /// Room for `snaplen` bytes.
    pub data: Box<[u8]>,
}

/// The records of one capture on one core: free ones for the core to fill, full ones for
/// the reader. Lock-free and bounded; allocated once by the control side.
#[derive(Debug)]
pub struct Ring {
    free: ArrayQueue<Box<Record>>,
    full: ArrayQueue<Box<Record>>,
    snaplen: u32,
    lost: AtomicU64,
    /// The core's clock and the wall clock (ns since the epoch) at one moment, set by the
    /// core when it starts the capture: what turns a record's time into a timestamp.
    base: std::sync::OnceLock<(u64, u64)>,
}

impl Ring {
    /// A ring of `records` records of up to `snaplen` bytes each (clamped to
    /// 64..=[`MAX_SNAPLEN`]).
    pub fn new(records: usize, snaplen: u32) -> Arc<Ring> {
        let snaplen = snaplen.clamp(64, MAX_SNAPLEN);
        let records = records.max(1);
        let free = ArrayQueue::new(records);
        for _ in 0..records {
            let r = Record {
                ts: 0,
                dir: Dir::In,
                tenant: None,
                verdict: Verdict::Unknown,
                len: 0,
                caplen: 0,
                data: vec![0u8; snaplen as usize].into_boxed_slice(),
            };
            let _ = free.push(Box::new(r));
        }
        Arc::new(Ring {
            free,
            full: ArrayQueue::new(records),
            snaplen,
            lost: AtomicU64::new(0),
            base: Default::default(),
        })
    }

    /// The longest frame part a record keeps.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// The next full record, for the reader.
    pub fn pop(&self) -> Option<Box<Record>> {
        self.full.pop()
    }

    /// Gives a record the reader is done with back to the core.
    pub fn recycle(&self, r: Box<Record>) {
        let _ = self.free.push(r);
    }

    /// Frames the capture missed (the reader fell behind or the copy budget ran out).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Sets the clocks' correspondence once (the core, when it starts the capture).
    pub fn set_clock_base(&self, core_ns: u64, wall_ns: u64) {
        let _ = self.base.set((core_ns, wall_ns));
    }

    /// The core's clock and the wall clock at one moment, once the core started.
    pub fn clock_base(&self) -> Option<(u64, u64)> {
        self.base.get().copied()
    }

    /// A record's time as ns since the epoch (0 before the core started the capture).
    pub fn wall_ns(&self, ts: u64) -> u64 {
        self.clock_base().map_or(0, |(core, wall)| wall.wrapping_add(ts).wrapping_sub(core))
    }
}

/// A capture on one port, as one core runs it.
#[derive(Debug)]
pub struct Tap {
    /// The port.
    pub port: PortId,
    /// Only frames of this tenant.
    pub tenant: Option<TenantId>,
    ring: Arc<Ring>,
    bucket: TokenBucket,
    /// Records filled in the current phase and the frame (index in its batch) each holds.
    pending: Vec<(usize, Box<Record>)>,
    /// Frames missed in the current phase (added to the ring's count once per phase).
    missed: u64,
}

impl Tap {
    /// A tap on `port` (of `tenant`'s frames only, if given) filling `ring`, its copy budget
    /// full at `now`.
    pub fn new(port: PortId, tenant: Option<TenantId>, ring: Arc<Ring>, now: u64) -> Tap {
        Tap {
            port,
            tenant,
            ring,
            bucket: TokenBucket::new(CAPTURE_RATE_BPS, CAPTURE_BURST, now, true),
            pending: Vec::with_capacity(crate::port::BATCH * 4),
            missed: 0,
        }
    }

    /// The ring it fills.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Whether a reader still holds the ring (a core drops a tap nobody reads).
    pub fn live(&self) -> bool {
        Arc::strong_count(&self.ring) > 1
    }

    /// Copies frame `i` of the batch into a record (or counts it lost), before anything
    /// changes it; [`Tap::finish`] gives it its verdict.
    #[inline]
    pub fn copy(&mut self, i: usize, dir: Dir, frame: &[u8], now: u64) {
        let caplen = frame.len().min(self.ring.snaplen as usize);
        if !self.bucket.admit(caplen as u64 + RECORD_COST, now) {
            self.missed += 1;
            return;
        }
        let Some(mut r) = self.ring.free.pop() else {
            self.missed += 1;
            return;
        };
        r.data[..caplen].copy_from_slice(&frame[..caplen]);
        r.ts = now;
        r.dir = dir;
        r.len = frame.len() as u32;
        r.caplen = caplen as u32;
        r.tenant = None;
        r.verdict = Verdict::Unknown;
        self.pending.push((i, r));
    }

    /// Gives each copied frame its tenant and verdict (`of(i)`: frame `i`'s) and hands the
    /// records to the reader; frames of another tenant than the tap's go back unread.
    #[inline]
    pub fn finish(&mut self, mut of: impl FnMut(usize, &[u8]) -> (Option<TenantId>, Verdict)) {
        if self.missed > 0 {
            self.ring.lost.fetch_add(std::mem::take(&mut self.missed), Ordering::Relaxed);
        }
        for (i, mut r) in self.pending.drain(..) {
            let (tenant, verdict) = of(i, &r.data[..r.caplen as usize]);
            if self.tenant.is_some() && tenant != self.tenant {
                let _ = self.ring.free.push(r);
                continue;
            }
            r.tenant = tenant;
            r.verdict = verdict;
            if let Err(r) = self.ring.full.push(r) {
                // Cannot happen (the ring holds every record), but never lose one.
                let _ = self.ring.free.push(r);
                self.ring.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The tenant of a frame `port` sends: a VM port's own, or on the uplink the tenant whose
/// VNI the VXLAN header carries (none for the host stack's frames).
pub fn tenant_of_sent(t: &Tables, port: PortId, frame: &[u8]) -> Option<TenantId> {
    match t.port(port).map(|p| &p.kind) {
        Some(PortKind::Vm { tenant, .. }) => Some(*tenant),
        Some(PortKind::Uplink) if port == UPLINK => sent_vni(frame).and_then(|v| t.tenant_by_vni(v)),
        _ => None,
    }
}

/// The VNI of a VXLAN frame as xvs writes it (outer IPv4, UDP to 4789), if it is one.
fn sent_vni(f: &[u8]) -> Option<u32> {
    use crate::wire::{ETHERNET_HEADER_LEN as E, UDP_HEADER_LEN, VXLAN_PORT};
    if f.get(12..14)? != [0x08, 0x00] || f.get(E)? >> 4 != 4 || *f.get(E + 9)? != 17 {
        return None;
    }
    let ihl = usize::from(f[E] & 0x0f) * 4;
    let udp = E + ihl;
    if u16::from_be_bytes([*f.get(udp + 2)?, *f.get(udp + 3)?]) != VXLAN_PORT {
        return None;
    }
    let v = f.get(udp + UDP_HEADER_LEN + 4..udp + UDP_HEADER_LEN + 7)?;
    Some(u32::from_be_bytes([0, v[0], v[1], v[2]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_copies_decides_and_hands_over() {
        let ring = Ring::new(2, 100);
        let mut tap = Tap::new(PortId(1), None, Arc::clone(&ring), 0);
        let frame = [7u8; 150];
        tap.copy(0, Dir::In, &frame, 10);
        tap.copy(1, Dir::In, &frame[..60], 10);
        tap.copy(2, Dir::In, &frame, 10); // no record left
        assert_eq!(ring.lost(), 0, "counted when the phase finishes");
        tap.finish(|i, _| (Some(TenantId(3)), if i == 0 { Verdict::Sent } else { Verdict::Unknown }));
        let a = ring.pop().unwrap();
        assert_eq!((a.len, a.caplen, a.verdict, a.tenant), (150, 100, Verdict::Sent, Some(TenantId(3))));
        assert_eq!(&a.data[..100], &frame[..100]);
        let b = ring.pop().unwrap();
        assert_eq!((b.len, b.caplen), (60, 60));
        assert!(ring.pop().is_none());
        assert_eq!(ring.lost(), 1);
        ring.recycle(a);
        tap.copy(0, Dir::Out, &frame, 20);
        tap.finish(|_, _| (None, Verdict::Sent));
        assert_eq!(ring.pop().unwrap().dir, Dir::Out);
    }

    #[test]
    fn a_tenant_filter_returns_other_tenants_records_unread() {
        let ring = Ring::new(4, 64);
        let mut tap = Tap::new(PortId(0), Some(TenantId(1)), Arc::clone(&ring), 0);
        for i in 0..4 {
            tap.copy(i, Dir::In, &[0u8; 64], 1);
        }
        tap.finish(|i, _| (Some(TenantId(i as u16 % 2)), Verdict::Sent));
        assert_eq!(std::iter::from_fn(|| ring.pop()).count(), 2);
        assert_eq!(ring.lost(), 0);
        // the two others are free again
        for i in 0..4 {
            tap.copy(i, Dir::In, &[0u8; 64], 2);
        }
        tap.finish(|_, _| (None, Verdict::Sent));
        assert_eq!(ring.lost(), 2);
    }

    #[test]
    fn the_copy_budget_bounds_what_a_capture_costs() {
        let ring = Ring::new(100_000, 1500);
        let mut tap = Tap::new(PortId(0), None, Arc::clone(&ring), 0);
        let frame = [0u8; 1500];
        // One second of 1,000,000 frames/s of 1,500 bytes: 12 Gbit/s offered.
        for k in 0..1_000_000u64 {
            tap.copy(0, Dir::In, &frame, k * 1000);
            tap.finish(|_, _| (None, Verdict::Sent));
            if let Some(r) = ring.pop() {
                ring.recycle(r);
            }
        }
        let copied = 1_000_000 - ring.lost();
        let bytes = copied * (1500 + RECORD_COST);
        let allowed = CAPTURE_RATE_BPS / 8 + CAPTURE_BURST;
        assert!(bytes <= allowed + 1500 + RECORD_COST, "copied {bytes} bytes, budget {allowed}");
        assert!(bytes >= allowed * 9 / 10, "copied {bytes} bytes, budget {allowed}");
    }

    #[test]
    fn a_ring_dropped_by_its_reader_ends_the_tap() {
        let ring = Ring::new(1, 64);
        let tap = Tap::new(PortId(0), None, Arc::clone(&ring), 0);
        assert!(tap.live());
        drop(ring);
        assert!(!tap.live());
    }

    #[test]
    fn wall_time_follows_the_core_clock() {
        let ring = Ring::new(1, 64);
        assert_eq!(ring.wall_ns(5), 0);
        ring.set_clock_base(1_000, 1_700_000_000_000_000_000);
        assert_eq!(ring.wall_ns(3_000), 1_700_000_000_000_002_000);
    }

    #[test]
    fn sent_vxlan_names_its_vni() {
        let mut f = vec![0u8; 14 + 20 + 8 + 8 + 14];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[34 + 2..34 + 4].copy_from_slice(&4789u16.to_be_bytes());
        f[42] = 0x08;
        f[42 + 4..42 + 7].copy_from_slice(&[0, 0, 100]);
        assert_eq!(sent_vni(&f), Some(100));
        f[34 + 3] = 0;
        assert_eq!(sent_vni(&f), None);
        assert_eq!(sent_vni(&f[..20]), None);
    }
}
