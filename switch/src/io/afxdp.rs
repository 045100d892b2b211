//! AF_XDP ports: one UMEM per forwarding core, shared by all of that core's sockets, so a frame
//! moves from one port to another without a copy. Zero-copy binding where the driver supports
//! it, copy mode otherwise (veth, tap), chosen automatically; need_wakeup always.
#![allow(unsafe_code)]

use crate::port::{BATCH, Desc, FrameMem, FreeList, HEADROOM, KernelDrops, Port};
use std::num::NonZeroU32;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use xsk_rs::config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// UMEM chunk size: one page, room for jumbo-ish frames plus encapsulation.
pub const FRAME_SIZE: u32 = 4096;
/// Data bytes of a received frame: the chunk less the kernel's XDP headroom (256 bytes).
pub const FRAME_CAPACITY: usize = FRAME_SIZE as usize - HEADROOM;
/// Descriptors per ring.
pub const RING_SIZE: u32 = 2048;

pub use xvs_proto::reply::XskMode;

/// The UMEM of one core as [`FrameMem`]. Owned by the core thread.
pub struct UmemFrames {
    h: UmemHandle,
}

/// What binding a socket to a UMEM needs; cloneable, so the control thread can bind new
/// sockets while the core forwards (xsk-rs serialises socket creation on the UMEM).
#[derive(Clone)]
pub struct UmemHandle {
    umem: Umem,
    /// The start of chunk 0.
    base: NonNull<u8>,
    frames: u32,
    canon: Arc<Vec<FrameDesc>>,
}

// SAFETY: the UMEM mapping lives as long as any clone of `umem`; frame memory is only touched
// through `UmemFrames` (one thread) and by sockets for frames they own.
unsafe impl Send for UmemHandle {}
// SAFETY: as above.
unsafe impl Send for UmemFrames {}

impl UmemFrames {
    /// A handle for binding sockets from another thread.
    pub fn handle(&self) -> UmemHandle {
        self.h.clone()
    }
}

impl UmemFrames {
    /// Maps a UMEM of `frames` frames.
    pub fn new(frames: u32) -> anyhow::Result<UmemFrames> {
        let config = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| anyhow::anyhow!("{e}"))?)
            .fill_queue_size(QueueSize::new(RING_SIZE).map_err(|e| anyhow::anyhow!("{e}"))?)
            .comp_queue_size(QueueSize::new(RING_SIZE).map_err(|e| anyhow::anyhow!("{e}"))?)
            .frame_headroom(0)
            .build()
            .map_err(|e| anyhow::anyhow!("UMEM config: {e:?}"))?;
        let data_off = config.xdp_headroom() as usize + config.frame_headroom() as usize;
        anyhow::ensure!(data_off == HEADROOM, "UMEM data offset {data_off}, not {HEADROOM}");
        let n = NonZeroU32::new(frames).ok_or_else(|| anyhow::anyhow!("UMEM needs frames"))?;
        let (umem, descs) = Umem::new(config, n, false).map_err(|e| anyhow::anyhow!("creating UMEM: {e}"))?;
        let mut d0 = descs[0];
        // SAFETY: d0 is frame 0 of this UMEM and nothing else (kernel included: no socket is
        // bound yet) accesses it. We only take the address of its data segment.
        let p = unsafe {
            let mut data = umem.data_mut(&mut d0);
            let mut c = data.cursor();
            let cap = c.buf_len();
            c.set_pos(cap);
            data.contents_mut().as_mut_ptr()
        };
        // SAFETY: frame 0's data segment starts `data_off` bytes into the mapping.
        let base = NonNull::new(unsafe { p.sub(data_off) }).ok_or_else(|| anyhow::anyhow!("null UMEM"))?;
        Ok(UmemFrames { h: UmemHandle { umem, base, frames, canon: Arc::new(descs) } })
    }
}

impl UmemHandle {
    fn chunk_ptr(&self, id: u32) -> *mut u8 {
        assert!(id < self.frames, "frame {id} outside the UMEM");
        // SAFETY: id < frames, so the offset is inside the mapping of frames * FRAME_SIZE bytes.
        unsafe { self.base.as_ptr().add(id as usize * FRAME_SIZE as usize) }
    }

    /// Data bytes a new frame holds (after the headroom).
    pub fn capacity(&self) -> usize {
        FRAME_SIZE as usize - HEADROOM
    }

    /// Where the data of `d` is in its chunk, capped at the chunk: (start, length).
    fn span(d: &Desc) -> (usize, usize) {
        let off = usize::from(d.off).min(FRAME_SIZE as usize);
        (off, (d.len as usize).min(FRAME_SIZE as usize - off))
    }

    /// Where the data of `d` starts, for handing it to a system call.
    pub fn frame_ptr(&self, d: &Desc) -> *mut u8 {
        // SAFETY: the offset is capped at the chunk's size, so it stays in the chunk.
        unsafe { self.chunk_ptr(d.id).add(Self::span(d).0) }
    }

    /// The data of `d` (capped at its chunk), owned as for [`UmemHandle::frame_mut`].
    pub fn frame(&self, d: &Desc) -> &[u8] {
        let (off, len) = Self::span(d);
        // SAFETY: as in `frame_mut`; the range is capped at the chunk.
        unsafe { std::slice::from_raw_parts(self.chunk_ptr(d.id).add(off), len) }
    }

    /// The data of `d`, writable, owned as for [`UmemHandle::frame_mut`].
    pub fn frame_data_mut(&mut self, d: &Desc) -> &mut [u8] {
        let (off, len) = Self::span(d);
        // SAFETY: as in `frame_mut`; the range is capped at the chunk.
        unsafe { std::slice::from_raw_parts_mut(self.chunk_ptr(d.id).add(off), len) }
    }

    /// Frame `id`'s data area after the headroom, writable, for a new frame. The caller owns
    /// the frame (took it from the free list and has not handed it on).
    pub fn frame_mut(&mut self, id: u32) -> &mut [u8] {
        // SAFETY: the frame is owned by the caller (see above), so neither the kernel nor any
        // other reference touches it; the range is inside the chunk.
        unsafe { std::slice::from_raw_parts_mut(self.chunk_ptr(id).add(HEADROOM), self.capacity()) }
    }

    /// Copies `data` (at most [`UmemHandle::capacity`]) into frame `id` after the headroom,
    /// owned as for [`UmemHandle::frame_mut`]; returns its descriptor.
    pub fn write(&mut self, id: u32, data: &[u8]) -> Desc {
        let n = data.len().min(self.capacity());
        self.frame_mut(id)[..n].copy_from_slice(&data[..n]);
        Desc::new(id, n)
    }

    /// Binds an AF_XDP socket on `ifname` queue `queue` to this UMEM.
    pub fn bind(&self, ifname: &str, queue: u32, force_copy: bool) -> anyhow::Result<XskPort> {
        // A socket just closed on this queue releases it only after an RCU grace period and
        // a deferred work item (the kernel's buffer pool): a port removed and added again at
        // once finds the queue busy for a moment. Retry for up to a second.
        let t0 = std::time::Instant::now();
        loop {
            match self.bind_once(ifname, queue, force_copy) {
                Err(e) if t0.elapsed() < std::time::Duration::from_secs(1) && crate::io::netdev::exists(ifname) => {
                    tracing::debug!("{e:#}; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    fn bind_once(&self, ifname: &str, queue: u32, force_copy: bool) -> anyhow::Result<XskPort> {
        let iface: Interface = ifname.parse().map_err(|_| anyhow::anyhow!("bad interface name {ifname:?}"))?;
        let mut last_err = None;
        let modes: &[XskMode] = if force_copy { &[XskMode::Copy] } else { &[XskMode::ZeroCopy, XskMode::Copy] };
        for &mode in modes {
            let flags = match mode {
                XskMode::ZeroCopy => BindFlags::XDP_ZEROCOPY | BindFlags::XDP_USE_NEED_WAKEUP,
                XskMode::Copy => BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP,
            };
            let config = SocketConfig::builder()
                .rx_queue_size(QueueSize::new(RING_SIZE).expect("power of two"))
                .tx_queue_size(QueueSize::new(RING_SIZE).expect("power of two"))
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(flags)
                .build();
            // SAFETY: we always inhibit libxdp's program load, as xsk-rs requires for sockets
            // sharing a UMEM; the UMEM outlives the socket (the port holds a clone).
            match unsafe { Socket::new(config, &self.umem, &iface, queue) } {
                Ok((tx, rx, Some((fq, cq)))) => {
                    // A socket sharing a UMEM takes the UMEM's mode, whatever it asked for:
                    // report what the kernel did.
                    let mode = if zero_copy(rx.fd().as_raw_fd()) { XskMode::ZeroCopy } else { XskMode::Copy };
                    let ring = TxRing::map(tx.fd().as_raw_fd(), RING_SIZE)
                        .map_err(|e| anyhow::anyhow!("{ifname} queue {queue}: mapping the TX ring: {e}"))?;
                    let scratch = vec![self.canon[0]; RING_SIZE as usize];
                    return Ok(XskPort {
                        name: ifname.to_string(),
                        queue,
                        mode,
                        tx,
                        ring,
                        rx,
                        fq,
                        cq,
                        _umem: self.umem.clone(),
                        canon: Arc::clone(&self.canon),
                        scratch,
                        in_fill: 0,
                        fill_target: RING_SIZE / 4,
                        inflight: vec![0; (self.frames as usize).div_ceil(64)],
                    });
                }
                Ok((_, _, None)) => anyhow::bail!("{ifname} queue {queue}: already bound to this UMEM"),
                Err(e) => last_err = Some(e),
            }
        }
        Err(anyhow::anyhow!(
            "binding AF_XDP socket to {ifname} queue {queue}: {}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        ))
    }
}

impl FrameMem for UmemFrames {
    fn buf(&self, id: u32) -> &[u8] {
        // SAFETY: frame `id` is owned by userspace (the core received it or took it from the
        // free list), so neither the kernel nor another reference writes it meanwhile.
        unsafe { std::slice::from_raw_parts(self.h.chunk_ptr(id), FRAME_SIZE as usize) }
    }

    fn buf_mut(&mut self, id: u32) -> &mut [u8] {
        // SAFETY: as in `buf`, and `&mut self` excludes other userspace references.
        unsafe { std::slice::from_raw_parts_mut(self.h.chunk_ptr(id), FRAME_SIZE as usize) }
    }

    fn copy(&mut self, src: u32, r: Range<usize>, dst: u32, dst_off: usize) {
        let size = FRAME_SIZE as usize;
        assert!(src != dst && r.end <= size && r.start <= r.end && dst_off + r.len() <= size);
        // SAFETY: both frames are owned by userspace, distinct, and the ranges are in bounds.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.h.chunk_ptr(src).add(r.start),
                self.h.chunk_ptr(dst).add(dst_off),
                r.len(),
            )
        }
    }

    fn capacity(&self) -> usize {
        FRAME_SIZE as usize
    }

    fn frames(&self) -> u32 {
        self.h.frames
    }
}

/// Whether the kernel bound socket `fd` in zero-copy mode (getsockopt XDP_OPTIONS).
fn zero_copy(fd: RawFd) -> bool {
    const SOL_XDP: libc::c_int = 283;
    const XDP_OPTIONS: libc::c_int = 8;
    const XDP_OPTIONS_ZEROCOPY: u32 = 1;
    let mut flags: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `flags` is a valid u32 out-buffer of `len` bytes for the call.
    let rc = unsafe { libc::getsockopt(fd, SOL_XDP, XDP_OPTIONS, (&raw mut flags).cast(), &mut len) };
    rc == 0 && flags & XDP_OPTIONS_ZEROCOPY != 0
}

/// One AF_XDP socket (one queue of one interface) as a [`Port`].
pub struct XskPort {
    /// Interface name.
    pub name: String,
    /// Queue id.
    pub queue: u32,
    /// How it is bound.
    pub mode: XskMode,
    /// For the socket's wake-up and its need_wakeup flag only: frames go on `ring`.
    tx: TxQueue,
    ring: TxRing,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
    /// Keeps the UMEM alive as long as the socket.
    _umem: Umem,
    canon: Arc<Vec<FrameDesc>>,
    scratch: Vec<FrameDesc>,
    in_fill: u32,
    fill_target: u32,
    /// Frames this socket's rings hold (fill and TX), one bit per frame, so they can be
    /// returned when the socket is closed.
    inflight: Vec<u64>,
}

// SAFETY: the rings and the UMEM pointer are used only by the thread that owns the port.
unsafe impl Send for XskPort {}

impl XskPort {
    /// The socket's file descriptor (for the XSKMAP and for poll).
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// How many frames to keep in the fill ring (default a quarter of it; at most all of it).
    pub fn set_fill_target(&mut self, frames: u32) {
        self.fill_target = frames.clamp(1, RING_SIZE);
    }

    fn id_of(addr: usize) -> (u32, usize) {
        ((addr / FRAME_SIZE as usize) as u32, addr % FRAME_SIZE as usize)
    }

    #[inline]
    fn hold(&mut self, id: u32) {
        if let Some(w) = self.inflight.get_mut(id as usize / 64) {
            *w |= 1 << (id % 64);
        }
    }

    #[inline]
    fn unhold(&mut self, id: u32) {
        if let Some(w) = self.inflight.get_mut(id as usize / 64) {
            *w &= !(1 << (id % 64));
        }
    }

    /// Closes the socket and returns every frame its rings held to `free`.
    pub fn release(self, free: &mut FreeList) {
        let held: Vec<u32> = self
            .inflight
            .iter()
            .enumerate()
            .flat_map(|(i, w)| (0..64).filter(move |b| w & (1 << b) != 0).map(move |b| (i * 64 + b) as u32))
            .collect();
        drop(self);
        for id in held {
            free.free(id);
        }
    }
}

impl Port for XskPort {
    fn rx(&mut self, _mem: &mut dyn FrameMem, out: &mut [Desc]) -> usize {
        let want = out.len().min(self.scratch.len()).min(BATCH);
        // SAFETY: the descriptors come from the RX ring of this UMEM; we hand the frames to
        // the core, which owns them from now on.
        let n = unsafe { self.rx.consume(&mut self.scratch[..want]) };
        for (slot, d) in out.iter_mut().zip(&self.scratch[..n]) {
            // Copy mode puts the data HEADROOM bytes into the chunk; wherever the kernel put
            // it, the descriptor says where, and the frame stays there.
            let (id, off) = Self::id_of(d.addr());
            let len = d.lengths().data().min(FRAME_SIZE as usize - off);
            *slot = Desc { id, len: len as u16, off: off as u16 };
        }
        for d in out.iter().take(n) {
            let id = d.id;
            self.unhold(id);
        }
        self.in_fill = self.in_fill.saturating_sub(n as u32);
        n
    }

    fn tx(&mut self, descs: &[Desc]) -> usize {
        let sent = self.ring.produce(
            descs.iter().map(|d| (u64::from(d.id) * u64::from(FRAME_SIZE) + u64::from(d.off), u32::from(d.len))),
        );
        for d in &descs[..sent] {
            self.hold(d.id);
        }
        sent
    }

    fn flush(&mut self) {
        // In copy mode each kick transmits at most 32 frames (the kernel's TX batch), so kick
        // until the ring is drained, a bounded number of times.
        for _ in 0..(RING_SIZE / 32) {
            if !self.tx.needs_wakeup() || self.ring.free(RING_SIZE) >= RING_SIZE {
                break;
            }
            let _ = self.tx.wakeup();
        }
    }

    fn reclaim(&mut self, free: &mut FreeList) {
        loop {
            // SAFETY: completed frames come back to us from the kernel.
            let n = unsafe { self.cq.consume(&mut self.scratch[..BATCH * 4]) };
            for i in 0..n {
                let id = Self::id_of(self.scratch[i].addr()).0;
                self.unhold(id);
                free.free(id);
            }
            if n < BATCH * 4 {
                break;
            }
        }
    }

    fn kernel_drops(&mut self) -> KernelDrops {
        match self.rx.fd().xdp_statistics() {
            Ok(s) => KernelDrops {
                rx_dropped: s.rx_dropped(),
                rx_ring_full: s.rx_ring_full(),
                invalid_desc: s.rx_invalid_descs() + s.tx_invalid_descs(),
                tx_dropped: 0,
            },
            Err(_) => KernelDrops::default(),
        }
    }

    fn refill(&mut self, free: &mut FreeList) {
        if self.in_fill >= self.fill_target {
            return;
        }
        let want = (self.fill_target - self.in_fill).min(self.fq.nb_free(self.fill_target)) as usize;
        let mut k = 0;
        while k < want.min(self.scratch.len()) {
            let Some(id) = free.alloc() else { break };
            self.scratch[k] = self.canon[id as usize];
            k += 1;
        }
        if k == 0 {
            return;
        }
        // SAFETY: the frames are free (ours) and handed to the kernel to receive into.
        let produced = unsafe { self.fq.produce(&self.scratch[..k]) };
        for d in &self.scratch[produced..k] {
            free.free(Self::id_of(d.addr()).0);
        }
        for i in 0..produced {
            let id = Self::id_of(self.scratch[i].addr()).0;
            self.hold(id);
        }
        self.in_fill += produced as u32;
        if self.fq.needs_wakeup() {
            let _ = self.fq.wakeup(self.rx.fd_mut(), 0);
        }
    }
}

/// A socket's TX ring, mapped by us rather than through xsk-rs, whose descriptors always
/// point at the start of a chunk's data segment: a frame encapsulated into its headroom or
/// decapsulated where it lies starts elsewhere in its chunk, and the kernel takes any start
/// in the chunk. The same producer protocol as libxdp's: reserve against a cached consumer,
/// write the descriptors, publish the producer with release order.
struct TxRing {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    descs: NonNull<libc::xdp_desc>,
    size: u32,
    cached_prod: u32,
    /// The consumer plus the ring size: how far the producer may go.
    cached_cons: u32,
}

impl TxRing {
    /// Maps the TX ring of socket `fd`, which has `size` descriptors (a power of two).
    fn map(fd: RawFd, size: u32) -> std::io::Result<TxRing> {
        const SOL_XDP: libc::c_int = 283;
        // SAFETY: xdp_mmap_offsets is plain integers, valid all zero.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is a valid out-buffer of `optlen` bytes for the call.
        let rc = unsafe { libc::getsockopt(fd, SOL_XDP, libc::XDP_MMAP_OFFSETS, (&raw mut off).cast(), &mut optlen) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if optlen as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(std::io::Error::other("the kernel's ring offsets have another layout"));
        }
        let map_len = off.tx.desc as usize + size as usize * std::mem::size_of::<libc::xdp_desc>();
        // SAFETY: maps the socket's TX ring (created with `size` descriptors) shared, as the
        // kernel's AF_XDP interface documents; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                libc::XDP_PGOFF_TX_RING,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(|| std::io::Error::other("null TX ring"))?;
        // SAFETY: the offsets the kernel gave lie inside the mapping, suitably aligned.
        let at = |o: u64| unsafe { NonNull::new_unchecked(map.as_ptr().add(o as usize)) };
        let (producer, consumer) = (at(off.tx.producer).cast::<AtomicU32>(), at(off.tx.consumer).cast::<AtomicU32>());
        let mut r = TxRing {
            map,
            map_len,
            producer,
            consumer,
            descs: at(off.tx.desc).cast(),
            size,
            cached_prod: 0,
            cached_cons: 0,
        };
        r.cached_prod = r.producer().load(Ordering::Relaxed);
        r.cached_cons = r.consumer().load(Ordering::Acquire).wrapping_add(size);
        Ok(r)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: the producer index lives in the mapping as long as `self`.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for the producer.
        unsafe { self.consumer.as_ref() }
    }

    /// Free descriptors, looking at the kernel's consumer only when the cache shows fewer
    /// than `want`.
    fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        self.cached_cons = self.consumer().load(Ordering::Acquire).wrapping_add(self.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Queues frames given as (UMEM address, length) while there is room, and publishes
    /// them; returns how many (the first ones).
    fn produce(&mut self, frames: impl ExactSizeIterator<Item = (u64, u32)>) -> usize {
        let mut n = 0u32;
        let room = self.free(frames.len() as u32);
        for (addr, len) in frames.take(room as usize) {
            let i = (self.cached_prod.wrapping_add(n) & (self.size - 1)) as usize;
            // SAFETY: i < size, so the slot is inside the descriptor array of the mapping;
            // slots between the producer and the consumer plus size belong to us.
            unsafe { self.descs.as_ptr().add(i).write(libc::xdp_desc { addr, len, options: 0 }) };
            n += 1;
        }
        if n > 0 {
            self.cached_prod = self.cached_prod.wrapping_add(n);
            self.producer().store(self.cached_prod, Ordering::Release);
        }
        n as usize
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; nothing refers to it after this.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// UMEM frames for a core: room for the fill rings of many sockets (a quarter ring each)
/// plus transmit, completion and flood copies.
pub const DEFAULT_UMEM_FRAMES: u32 = 32 * 1024;

/// All queues of one interface as one [`Port`]: receives from each queue in turn, transmits
/// on the first (this core owns them all).
pub struct QueueSet {
    /// The sockets, one per queue.
    pub queues: Vec<XskPort>,
    next: usize,
    /// The interface's transmit drops (in one core's set per interface).
    tx_drops: Option<crate::io::netdev::TxDrops>,
}

impl QueueSet {
    /// Wraps the sockets of one interface; `tx_drops` in one core's set per interface.
    pub fn new(queues: Vec<XskPort>, tx_drops: Option<crate::io::netdev::TxDrops>) -> QueueSet {
        QueueSet { queues, next: 0, tx_drops }
    }

    /// File descriptors, for poll.
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.queues.iter().map(XskPort::fd)
    }

    /// Closes every socket, returning the frames they held to `free`.
    pub fn release(self, free: &mut FreeList) {
        for q in self.queues {
            q.release(free);
        }
    }
}

impl Port for QueueSet {
    fn rx(&mut self, mem: &mut dyn FrameMem, out: &mut [Desc]) -> usize {
        let n = self.queues.len();
        for i in 0..n {
            let q = (self.next + i) % n;
            let got = self.queues[q].rx(mem, out);
            if got > 0 {
                self.next = (q + 1) % n;
                return got;
            }
        }
        0
    }

    fn tx(&mut self, descs: &[Desc]) -> usize {
        self.queues.first_mut().map_or(0, |q| q.tx(descs))
    }

    fn flush(&mut self) {
        if let Some(q) = self.queues.first_mut() {
            q.flush();
        }
    }

    fn reclaim(&mut self, free: &mut FreeList) {
        for q in &mut self.queues {
            q.reclaim(free);
        }
    }

    fn refill(&mut self, free: &mut FreeList) {
        for q in &mut self.queues {
            q.refill(free);
        }
    }

    fn kernel_drops(&mut self) -> KernelDrops {
        let mut k = KernelDrops::default();
        for q in &mut self.queues {
            let d = q.kernel_drops();
            k.rx_dropped += d.rx_dropped;
            k.rx_ring_full += d.rx_ring_full;
            k.invalid_desc += d.invalid_desc;
        }
        k.tx_dropped = self.tx_drops.as_ref().map_or(0, crate::io::netdev::TxDrops::since_open);
        k
    }
}

/// Sleeps until one of the sockets has something to receive, or `timeout_ms` passes.
pub fn wait_readable(fds: &[RawFd], timeout_ms: u16) {
    wait_readable_for(fds, std::time::Duration::from_millis(u64::from(timeout_ms)));
}

/// Sleeps until one of the sockets has something to receive, or `timeout` passes (with
/// sub-millisecond resolution, for paced senders that must also see replies at once).
pub fn wait_readable_for(fds: &[RawFd], timeout: std::time::Duration) {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 }).collect();
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: `pfds` is a valid array of pollfd and `ts` a valid timespec for the call; no
    // signal mask is passed.
    let _ = unsafe { libc::ppoll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, &ts, std::ptr::null()) };
}

/// Wakes the forwarding core from [`wait_readable`] when the control plane has news: an
/// eventfd included in the core's poll set.
#[derive(Debug)]
pub struct Waker {
    fd: std::os::fd::OwnedFd,
}

impl Waker {
    /// A new eventfd.
    pub fn new() -> std::io::Result<Waker> {
        // SAFETY: plain eventfd(2) call; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        Ok(Waker { fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) } })
    }

    /// The descriptor to poll.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Wakes the core.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Clears pending wake-ups.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut v).cast(), 8) };
    }
}
