//! The port interface the pipeline runs on, the same for AF_XDP sockets and in-memory ports.
//!
//! Frames live in one frame memory per core (an AF_XDP UMEM shared by all of that core's
//! sockets, or a plain buffer for in-memory ports) and move between ports as [`Desc`]s, so
//! forwarding from one port to another copies nothing. A received frame's data starts
//! [`HEADROOM`] bytes into its buffer (where the kernel puts it in an AF_XDP UMEM chunk), so
//! encapsulation writes the outer headers in front of the data and decapsulation skips them:
//! neither moves the frame, only the descriptor's start.
//!
//! May depend on: types.

use crate::types::PortId;
use std::ops::Range;

/// Frames a port hands over per receive call; the pipeline's batch size.
pub const BATCH: usize = 64;

/// Bytes before a new frame's data, free for headers to be prepended (the kernel's
/// `XDP_PACKET_HEADROOM`: an AF_XDP socket receives frames this far into their chunk).
pub const HEADROOM: usize = 256;

/// A frame in the core's frame memory: its index, where its data starts in the frame's
/// buffer and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Desc {
    /// Frame index in the frame memory.
    pub id: u32,
    /// Bytes of data (a frame's buffer is at most 64 KiB: the AF_XDP chunk is 4 KiB).
    pub len: u16,
    /// Where the data starts in the frame's buffer.
    pub off: u16,
}

impl Desc {
    /// Frame `id` with `len` bytes of data at the usual place, [`HEADROOM`] into its buffer.
    #[inline]
    pub fn new(id: u32, len: usize) -> Desc {
        Desc { id, len: len as u16, off: HEADROOM as u16 }
    }

    /// Where the data is in the frame's buffer.
    #[inline]
    pub fn range(&self) -> Range<usize> {
        let off = usize::from(self.off);
        off..off + usize::from(self.len)
    }
}

/// The memory frames live in.
pub trait FrameMem {
    /// The whole buffer of frame `id`, headroom included (its capacity, not just the data).
    fn buf(&self, id: u32) -> &[u8];
    /// The whole buffer of frame `id`, writable.
    fn buf_mut(&mut self, id: u32) -> &mut [u8];
    /// Copies `src_range` of frame `src`'s buffer to offset `dst_off` of frame `dst`'s
    /// buffer (`src != dst`).
    fn copy(&mut self, src: u32, src_range: Range<usize>, dst: u32, dst_off: usize);
    /// Size of every frame's buffer, headroom included.
    fn capacity(&self) -> usize;
    /// The data of `d` (empty where the descriptor does not fit the buffer).
    #[inline]
    fn data(&self, d: &Desc) -> &[u8] {
        self.buf(d.id).get(d.range()).unwrap_or_default()
    }
    /// The data of `d`, writable.
    #[inline]
    fn data_mut(&mut self, d: &Desc) -> &mut [u8] {
        self.buf_mut(d.id).get_mut(d.range()).unwrap_or_default()
    }
    /// Writes `bytes` (cut to what fits) as the data of frame `id` at the usual place.
    fn write(&mut self, id: u32, bytes: &[u8]) -> Desc {
        let n = bytes.len().min(self.capacity().saturating_sub(HEADROOM));
        self.buf_mut(id)[HEADROOM..HEADROOM + n].copy_from_slice(&bytes[..n]);
        Desc::new(id, n)
    }
    /// Number of frames.
    fn frames(&self) -> u32;
}

/// Free frames of a core, a fixed-capacity stack.
#[derive(Debug)]
pub struct FreeList {
    ids: Vec<u32>,
}

impl FreeList {
    /// All of `0..frames` free.
    pub fn new(frames: u32) -> FreeList {
        FreeList { ids: (0..frames).rev().collect() }
    }

    /// Empty, with room for `frames`.
    pub fn empty(frames: u32) -> FreeList {
        FreeList { ids: Vec::with_capacity(frames as usize) }
    }

    /// Takes a free frame.
    #[inline]
    pub fn alloc(&mut self) -> Option<u32> {
        self.ids.pop()
    }

    /// Returns a frame. Never grows past the capacity given at creation.
    #[inline]
    pub fn free(&mut self, id: u32) {
        debug_assert!(self.ids.len() < self.ids.capacity(), "double free of frame {id}");
        if self.ids.len() < self.ids.capacity() {
            self.ids.push(id);
        }
    }

    /// Free frames.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no frame is free.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What a port counted itself (frames it could not hand on, offloads it did), since the last
/// [`Port::take_tally`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxTally {
    /// Frames larger than a frame buffer (and not TCP super-frames).
    pub too_big: u64,
    /// Frames shorter than an Ethernet header.
    pub malformed: u64,
    /// Offload headers that do not match their frame.
    pub bad_offload: u64,
    /// Segmentation offloads other than TCP.
    pub gso_unsupported: u64,
    /// Frames (or segments) with no free frame buffer to go into.
    pub no_buffer: u64,
    /// Partial checksums completed.
    pub csum_completed: u64,
    /// TCP super-frames segmented.
    pub tso_frames: u64,
    /// Segments made of them.
    pub tso_segments: u64,
    /// Segments sent to the guest coalesced into super-frames.
    pub coalesced_segments: u64,
    /// Super-frames they made.
    pub coalesced_frames: u64,
}

/// Frames the kernel dropped on a port's behalf, cumulative since the port was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelDrops {
    /// Dropped on receive (no buffer, socket full, too large for a buffer).
    pub rx_dropped: u64,
    /// AF_XDP receive ring full.
    pub rx_ring_full: u64,
    /// Invalid AF_XDP descriptors (receive and transmit).
    pub invalid_desc: u64,
    /// Dropped by the interface on transmit.
    pub tx_dropped: u64,
}

/// A network port as the forwarding core sees it.
pub trait Port {
    /// Receives up to `out.len()` frames; returns how many were written to `out`.
    fn rx(&mut self, mem: &mut dyn FrameMem, out: &mut [Desc]) -> usize;
    /// Queues frames for transmission; returns how many were taken. The caller frees the rest.
    fn tx(&mut self, descs: &[Desc]) -> usize;
    /// Makes queued frames go out (a kick where the ring needs one).
    fn flush(&mut self) {}
    /// Returns frames whose transmission completed to `free`.
    fn reclaim(&mut self, free: &mut FreeList);
    /// Gives the port empty frames from `free` to receive into.
    fn refill(&mut self, free: &mut FreeList);
    /// What the port counted while receiving since the last call.
    fn take_tally(&mut self) -> RxTally {
        RxTally::default()
    }
    /// What the kernel dropped on this port's behalf so far (reads kernel counters: call it
    /// when publishing, not per batch).
    fn kernel_drops(&mut self) -> KernelDrops {
        KernelDrops::default()
    }
}

/// Frames staged for transmission during one poll, per egress port, with fixed capacities.
#[derive(Debug)]
pub struct TxStage {
    per_port: Vec<Vec<Desc>>,
    /// For each frame staged on the uplink: (tenant, flow) for the QoS scheduler, or
    /// (`u32::MAX`, `u32::MAX`) for frames outside any tenant (the host stack's).
    pub uplink_meta: Vec<(u32, u32)>,
    /// Frames for the VTEP's own host stack (ARP, ICMP to our VTEP IP).
    pub host: Vec<Desc>,
}

impl TxStage {
    /// Room for `per_port_cap` frames on each of `ports` ports, and `host_cap` host frames.
    pub fn new(ports: usize, per_port_cap: usize, host_cap: usize) -> TxStage {
        TxStage {
            per_port: (0..ports).map(|_| Vec::with_capacity(per_port_cap)).collect(),
            uplink_meta: Vec::with_capacity(per_port_cap),
            host: Vec::with_capacity(host_cap),
        }
    }

    /// Makes room for `ports` ports (only allocates when the port count grows).
    pub fn resize(&mut self, ports: usize, per_port_cap: usize) {
        while self.per_port.len() < ports {
            self.per_port.push(Vec::with_capacity(per_port_cap));
        }
    }

    /// Stages `d` for `port`; false when that port's stage is full (the caller drops it).
    #[inline]
    pub fn push(&mut self, port: PortId, d: Desc) -> bool {
        self.push_tagged(port, d, u32::MAX, u32::MAX)
    }

    /// Stages `d` for `port`, recording the tenant and flow (ingress port) it belongs to.
    #[inline]
    pub fn push_tagged(&mut self, port: PortId, d: Desc, tenant: u32, flow: u32) -> bool {
        match self.per_port.get_mut(port.index()) {
            Some(q) if q.len() < q.capacity() => {
                q.push(d);
                if port.index() == 0 && self.uplink_meta.len() < self.uplink_meta.capacity() {
                    self.uplink_meta.push((tenant, flow));
                }
                true
            }
            _ => false,
        }
    }

    /// Stages `d` for the host stack; false when full.
    #[inline]
    pub fn push_host(&mut self, d: Desc) -> bool {
        if self.host.len() < self.host.capacity() {
            self.host.push(d);
            true
        } else {
            false
        }
    }

    /// The staged frames of `port`.
    pub fn staged(&mut self, port: PortId) -> &mut Vec<Desc> {
        &mut self.per_port[port.index()]
    }

    /// Number of port slots.
    pub fn ports(&self) -> usize {
        self.per_port.len()
    }
}
