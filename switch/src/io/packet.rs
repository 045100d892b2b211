//! VM ports on tap devices through an AF_PACKET socket with `PACKET_VNET_HDR`: every frame
//! comes with its virtio-net header, so the offloads a guest asked for (partial checksums, TCP
//! super-frames) are known and done here ([`crate::offload`]) before the pipeline sees the
//! frame. XDP on a tap sees frames without that header, which is why taps do not use AF_XDP.
//!
//! A packet socket only observes: the frame would also go on into the host's own stack. A tc
//! ingress program on the tap ([`crate::io::xdp::Attached`], role `VmTap`) drops it there, after
//! packet sockets have seen it, so a VM never reaches the hypervisor's own addresses.
//!
//! Receiving is one `recvmmsg` per batch into this port's buffers (up to 16 frames of up to
//! 64 KB), then a copy (or the segments) into frames of the core's UMEM; sending is one
//! `sendmmsg` per batch straight from the UMEM, with a zero virtio-net header (the frames are
//! complete), bypassing the qdisc as AF_XDP does.
#![allow(unsafe_code)]

use crate::io::afxdp::UmemHandle;
use crate::io::netdev::TxDrops;
use crate::offload::{self, Offload, VNET_HDR_LEN, VnetHdr};
use crate::port::{Desc, FrameMem, FreeList, KernelDrops, Port, RxTally};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Frames one `recvmmsg` takes.
const RX_MSGS: usize = 16;
/// Room for one received frame: its virtio-net header and the largest IP packet (64 KB) with
/// its Ethernet header.
const RX_SLOT: usize = VNET_HDR_LEN + 65_536 + 128;
/// Frames one `sendmmsg` sends.
const TX_MSGS: usize = 64;
/// Super-frames one `sendmmsg` may carry (receive coalescing towards the guest).
const GRO_BUFS: usize = 4;
/// Room for one super-frame.
const GRO_SLOT: usize = 65_536 + 128;
/// Free frames the port keeps to receive into.
const POOL: usize = 512;
/// Socket buffer: a few dozen 64 KB super-frames (the default 212 KB holds three).
const SOCK_BUF: libc::c_int = 8 << 20;

static ZERO_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// A tap device as a [`Port`].
pub struct PacketPort {
    /// Interface name.
    pub name: String,
    /// Interface index it was opened on.
    pub ifindex: u32,
    fd: OwnedFd,
    umem: UmemHandle,
    pool: Vec<u32>,
    sent: Vec<u32>,
    tally: RxTally,
    kernel: KernelDrops,
    /// The interface's transmit drops (on the first core's socket only).
    tx_drops: Option<TxDrops>,
    bufs: Vec<u8>,
    rx_hdrs: Vec<libc::mmsghdr>,
    rx_iov: Vec<libc::iovec>,
    /// Received messages not yet handed on: (next message, its next segment, messages).
    pending: (usize, usize, usize),
    tx_hdrs: Vec<libc::mmsghdr>,
    tx_iov: Vec<[libc::iovec; 2]>,
    /// Whether the guest takes TCP super-frames (the tap has TSO on: the guest negotiated
    /// `VIRTIO_NET_F_GUEST_TSO4`), so in-order segments of a flow are coalesced for it.
    gro: bool,
    gro_bufs: Vec<u8>,
    gro_hdrs: [[u8; VNET_HDR_LEN]; GRO_BUFS],
    tx_vhdrs: Vec<[u8; VNET_HDR_LEN]>,
}

// SAFETY: the raw pointers in the message headers point into buffers this port owns (or the
// UMEM, which outlives it); the port is used by one thread at a time (its core).
unsafe impl Send for PacketPort {}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: T, what: &str) -> anyhow::Result<()> {
    // SAFETY: `v` is a valid value of the type the option expects, passed with its size.
    let rc = unsafe {
        libc::setsockopt(fd, level, name, (&raw const v).cast(), std::mem::size_of::<T>() as libc::socklen_t)
    };
    if rc != 0 {
        anyhow::bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl PacketPort {
    /// Opens a packet socket on `ifname` sending from and receiving into `umem`. With
    /// `fanout` (several cores), the sockets of one interface share its frames by flow hash;
    /// `counts_interface`: this socket reports the interface's transmit drops (one per interface).
    pub fn open(
        ifname: &str,
        umem: UmemHandle,
        fanout: Option<u16>,
        counts_interface: bool,
    ) -> anyhow::Result<PacketPort> {
        let ifindex = crate::io::netdev::ifindex(ifname).ok_or_else(|| anyhow::anyhow!("no interface {ifname:?}"))?;
        // Protocol 0 until bound: a packet socket with a protocol receives from every
        // interface until bind narrows it.
        // SAFETY: plain socket(2); the result is checked.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            anyhow::bail!("packet socket for {ifname}: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        setsockopt(s, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1 as libc::c_int, "PACKET_VNET_HDR")?;
        setsockopt(s, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1 as libc::c_int, "PACKET_IGNORE_OUTGOING")?;
        setsockopt(s, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1 as libc::c_int, "PACKET_QDISC_BYPASS")?;
        setsockopt(s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCK_BUF, "SO_RCVBUFFORCE")?;
        setsockopt(s, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCK_BUF, "SO_SNDBUFFORCE")?;
        // SAFETY: an all-zero sockaddr_ll is valid; the fields we need are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(s, (&raw const sll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t)
        };
        if rc != 0 {
            anyhow::bail!("binding packet socket to {ifname}: {}", std::io::Error::last_os_error());
        }
        if let Some(group) = fanout {
            let arg = u32::from(group) | (libc::PACKET_FANOUT_HASH << 16);
            setsockopt(s, libc::SOL_PACKET, libc::PACKET_FANOUT, arg, "PACKET_FANOUT")?;
        }
        let mut bufs = vec![0u8; RX_MSGS * RX_SLOT];
        let rx_iov: Vec<libc::iovec> = (0..RX_MSGS)
            .map(|i| libc::iovec {
                // SAFETY: slot i lies inside `bufs` (RX_MSGS slots of RX_SLOT bytes).
                iov_base: unsafe { bufs.as_mut_ptr().add(i * RX_SLOT) }.cast(),
                iov_len: RX_SLOT,
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
        let zero: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let mut port = PacketPort {
            name: ifname.to_string(),
            ifindex,
            fd,
            umem,
            pool: Vec::with_capacity(POOL),
            sent: Vec::with_capacity(TX_MSGS * 64),
            tally: RxTally::default(),
            kernel: KernelDrops::default(),
            tx_drops: counts_interface.then(|| TxDrops::new(ifname)),
            bufs,
            rx_hdrs: vec![zero; RX_MSGS],
            rx_iov,
            pending: (0, 0, 0),
            tx_hdrs: vec![zero; TX_MSGS],
            tx_iov: vec![[libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2]; TX_MSGS],
            gro: crate::io::netdev::tso_on(ifname),
            gro_bufs: vec![0u8; GRO_BUFS * GRO_SLOT],
            gro_hdrs: [[0; VNET_HDR_LEN]; GRO_BUFS],
            tx_vhdrs: vec![[0; VNET_HDR_LEN]; TX_MSGS],
        };
        for i in 0..RX_MSGS {
            // The iovec array does not move after this (its Vec is never resized).
            port.rx_hdrs[i].msg_hdr.msg_iov = &raw mut port.rx_iov[i];
            port.rx_hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        Ok(port)
    }

    /// The socket, for poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Closes the socket and returns every frame it held to `free`.
    pub fn release(mut self, free: &mut FreeList) {
        for id in self.pool.drain(..).chain(self.sent.drain(..)) {
            free.free(id);
        }
    }

    /// Hands on what `recvmmsg` brought, as frames of the UMEM; returns how many.
    fn hand_on(&mut self, out: &mut [Desc]) -> usize {
        let cap = self.umem.capacity();
        let mut k = 0;
        let (mut m, mut seg, got) = self.pending;
        while m < got && k < out.len() {
            let len = self.rx_hdrs[m].msg_len as usize;
            let truncated = self.rx_hdrs[m].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let slot = &mut self.bufs[m * RX_SLOT..m * RX_SLOT + len.min(RX_SLOT)];
            if truncated || len < VNET_HDR_LEN + 14 {
                self.tally.too_big += u64::from(truncated);
                self.tally.malformed += u64::from(!truncated);
                (m, seg) = (m + 1, 0);
                continue;
            }
            let (h, frame) = slot.split_at_mut(VNET_HDR_LEN);
            let mut hb = [0u8; VNET_HDR_LEN];
            hb.copy_from_slice(h);
            let hdr = VnetHdr::parse(&hb);
            // Only the first visit of a frame prepares it (segments resume where they were).
            let prepared = if seg == 0 { offload::prepare(&hdr, frame) } else { plan_again(&hdr, frame) };
            match prepared {
                Err(r) => {
                    match r {
                        crate::pipeline::DropReason::GsoUnsupported => self.tally.gso_unsupported += 1,
                        _ => self.tally.bad_offload += 1,
                    }
                    (m, seg) = (m + 1, 0);
                }
                Ok(Offload::Done) => {
                    if frame.len() > cap {
                        self.tally.too_big += 1;
                    } else if let Some(id) = self.pool.pop() {
                        self.tally.csum_completed += u64::from(hdr.flags & offload::F_NEEDS_CSUM != 0);
                        out[k] = self.umem.write(id, frame);
                        k += 1;
                    } else {
                        self.tally.no_buffer += 1;
                    }
                    (m, seg) = (m + 1, 0);
                }
                Ok(Offload::Segment(plan)) => {
                    if plan.max_segment() > cap {
                        self.tally.too_big += 1;
                        (m, seg) = (m + 1, 0);
                        continue;
                    }
                    if seg == 0 {
                        self.tally.tso_frames += 1;
                    }
                    while seg < plan.segments() && k < out.len() {
                        let Some(id) = self.pool.pop() else {
                            self.tally.no_buffer += 1;
                            seg += 1;
                            continue;
                        };
                        let n = plan.segment(frame, seg, self.umem.frame_mut(id));
                        out[k] = Desc::new(id, n);
                        (k, seg) = (k + 1, seg + 1);
                        self.tally.tso_segments += 1;
                    }
                    if seg < plan.segments() {
                        break; // `out` is full: the rest of this frame goes in the next call
                    }
                    (m, seg) = (m + 1, 0);
                }
            }
        }
        self.pending = (m, seg, got);
        k
    }
}

impl PacketPort {
    /// How many frames from the start of `descs` form one coalescable TCP run (1: none).
    /// Also says whether the first frame is a TCP segment whose checksums were verified.
    fn run_at(&self, descs: &[Desc]) -> (usize, bool) {
        let first = self.umem.frame(&descs[0]);
        let Some(f) = offload::tcp4_segment(first) else { return (1, false) };
        let (mut prev, mut total, mut n) = (f, first.len(), 1);
        for d in &descs[1..] {
            let next = self.umem.frame(d);
            let Some(s) = offload::tcp4_segment(next) else { break };
            if total + s.payload > GRO_SLOT - 128 || !offload::continues(first, &f, &prev, next, &s) {
                break;
            }
            (prev, total, n) = (s, total + s.payload, n + 1);
            if s.flags & 0x08 != 0 || n == TX_MSGS {
                break; // PSH ends a run
            }
        }
        (n, true)
    }

    /// Coalesces `run` into super-frame buffer `slot`; returns its length.
    fn build_super(&mut self, run: &[Desc], slot: usize) -> Option<usize> {
        let mut views: [&[u8]; TX_MSGS] = [&[]; TX_MSGS];
        for (v, d) in views.iter_mut().zip(run) {
            *v = self.umem.frame(d);
        }
        let first = offload::tcp4_segment(views[0])?;
        let out = &mut self.gro_bufs[slot * GRO_SLOT..(slot + 1) * GRO_SLOT];
        let (len, hdr) = offload::coalesce(&views[..run.len().min(TX_MSGS)], &first, out)?;
        self.gro_hdrs[slot] = hdr.emit();
        self.tally.coalesced_segments += run.len() as u64;
        self.tally.coalesced_frames += 1;
        Some(len)
    }
}

/// The segmentation plan of a frame already prepared on an earlier call.
fn plan_again(hdr: &VnetHdr, frame: &[u8]) -> Result<Offload, crate::pipeline::DropReason> {
    offload::TsoPlan::new(hdr, frame).map(Offload::Segment)
}

impl Port for PacketPort {
    fn rx(&mut self, _mem: &mut dyn FrameMem, out: &mut [Desc]) -> usize {
        if self.pending.0 >= self.pending.2 {
            for h in &mut self.rx_hdrs {
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: every header points at one iovec of RX_SLOT bytes inside `bufs`, which
            // this port owns; MSG_DONTWAIT never blocks the core.
            let n = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    self.rx_hdrs.as_mut_ptr(),
                    RX_MSGS as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                return 0;
            }
            self.pending = (0, 0, n as usize);
        }
        self.hand_on(out)
    }

    fn tx(&mut self, descs: &[Desc]) -> usize {
        let mut done = 0;
        while done < descs.len() && self.sent.len() + TX_MSGS <= self.sent.capacity() {
            // Build up to TX_MSGS messages: single frames, or runs of one TCP flow coalesced
            // into a super-frame when the guest takes them.
            let (mut msgs, mut bufs, mut i) = (0, 0, done);
            let mut ends = [0usize; TX_MSGS];
            while i < descs.len() && msgs < TX_MSGS {
                let (run, verified) = if self.gro && bufs < GRO_BUFS { self.run_at(&descs[i..]) } else { (1, false) };
                let built = if run > 1 { self.build_super(&descs[i..i + run], bufs) } else { None };
                self.tx_iov[msgs] = match built {
                    Some(len) => {
                        let iov = [
                            libc::iovec { iov_base: self.gro_hdrs[bufs].as_mut_ptr().cast(), iov_len: VNET_HDR_LEN },
                            libc::iovec {
                                // SAFETY: buffer `bufs` lies inside `gro_bufs` (GRO_BUFS slots).
                                iov_base: unsafe { self.gro_bufs.as_mut_ptr().add(bufs * GRO_SLOT) }.cast(),
                                iov_len: len,
                            },
                        ];
                        bufs += 1;
                        i += run;
                        iov
                    }
                    None => {
                        let d = descs[i];
                        i += 1;
                        // A segment whose checksum xvs verified goes with its checksum marked
                        // partial, which the guest takes as verified (as the kernel's path
                        // hands it over: the guest need not checksum it again).
                        let hdr = if verified {
                            self.tx_vhdrs[msgs] = offload::mark_verified(self.umem.frame_data_mut(&d)).emit();
                            self.tx_vhdrs[msgs].as_mut_ptr()
                        } else {
                            ZERO_HDR.as_ptr() as *mut u8
                        };
                        [
                            libc::iovec { iov_base: hdr.cast(), iov_len: VNET_HDR_LEN },
                            libc::iovec { iov_base: self.umem.frame_ptr(&d).cast(), iov_len: d.len as usize },
                        ]
                    }
                };
                self.tx_hdrs[msgs].msg_hdr.msg_iov = self.tx_iov[msgs].as_mut_ptr();
                self.tx_hdrs[msgs].msg_hdr.msg_iovlen = 2;
                ends[msgs] = i;
                msgs += 1;
            }
            // SAFETY: each header points at two iovecs: a virtio-net header (static, or one of
            // `gro_hdrs` or `tx_vhdrs`) and a frame of the UMEM this core owns or one of `gro_bufs`, lengths
            // within their buffers; the kernel copies them before sendmmsg returns.
            let n = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), self.tx_hdrs.as_mut_ptr(), msgs as libc::c_uint, libc::MSG_DONTWAIT)
            };
            let n = if n < 0 { 0 } else { n as usize };
            let upto = if n == 0 { done } else { ends[n - 1] };
            self.sent.extend(descs[done..upto].iter().map(|d| d.id));
            done = upto;
            if n < msgs {
                break;
            }
        }
        done
    }

    fn reclaim(&mut self, free: &mut FreeList) {
        for id in self.sent.drain(..) {
            free.free(id);
        }
    }

    fn refill(&mut self, free: &mut FreeList) {
        while self.pool.len() < POOL {
            let Some(id) = free.alloc() else { break };
            self.pool.push(id);
        }
    }

    fn take_tally(&mut self) -> RxTally {
        std::mem::take(&mut self.tally)
    }

    fn kernel_drops(&mut self) -> KernelDrops {
        let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is a valid tpacket_stats out-buffer of `len` bytes; reading resets the
        // kernel's counters, so they are added up here.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            self.kernel.rx_dropped += u64::from(st.tp_drops);
        }
        self.kernel.tx_dropped = self.tx_drops.as_ref().map_or(0, TxDrops::since_open);
        // The guest negotiates its offloads when its driver starts, after the port opened.
        self.gro = crate::io::netdev::tso_on(&self.name);
        self.kernel
    }
}
