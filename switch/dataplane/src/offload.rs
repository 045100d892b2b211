//! The offloads a VM hands over with its frames, done in software as a NIC would do them:
//! checksum completion and TCP segmentation (TSO/GSO).
//!
//! A virtio-net guest whose device offers `VIRTIO_NET_F_CSUM` and `HOST_TSO4/6` (qemu's default
//! with a `vnet_hdr` tap) leaves checksums partial and hands over TCP super-frames of up to
//! 64 KB; the virtio-net header in front of each frame says what is left to do (virtio 1.2
//! section 5.1.6.2; tun and AF_PACKET's `PACKET_VNET_HDR` carry the same header). What leaves
//! here is what a NIC would have put on the wire: complete checksums, and MTU-sized TCP
//! segments with their own IP lengths, IP IDs, sequence numbers, flags and checksums.
//!
//! Pure: bytes in, bytes out, no I/O, no allocation; every malformed header is a
//! [`DropReason`], never a panic. Depends on [`crate::pipeline::DropReason`] and the checksum
//! helpers of [`crate::wire`] only.
//!
//! May depend on: pipeline (checksums), wire.

use crate::pipeline::DropReason;
pub use crate::wire::{fold_wide as fold, sum_wide as sum};

/// Length of the virtio-net header (`struct virtio_net_hdr`, without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `flags`: the checksum from `csum_start` on is partial and must be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: no segmentation.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type` bit: the sender set ECN (CWR goes on the first segment only).
pub const GSO_ECN: u8 = 0x80;

const ETH_LEN: usize = 14;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The virtio-net header of one frame (little-endian on the wire, as tun and AF_PACKET use
/// on little-endian hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` and others.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers the sender says precede the payload (advisory).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS).
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr { flags: b[0], gso_type: b[1], hdr_len: le(2), gso_size: le(4), csum_start: le(6), csum_offset: le(8) }
    }

    /// The header's bytes.
    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// What a frame needs before it can be switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Nothing more: the frame is complete (its checksum, if partial, was completed in place).
    Done,
    /// A TCP super-frame to be cut into segments.
    Segment(TsoPlan),
}

/// Completes what `hdr` says is left to do on `frame`, in place where it can be done in place.
pub fn prepare(hdr: &VnetHdr, frame: &mut [u8]) -> Result<Offload, DropReason> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(frame, usize::from(hdr.csum_start), usize::from(hdr.csum_offset))?;
            }
            Ok(Offload::Done)
        }
        GSO_TCPV4 | GSO_TCPV6 => TsoPlan::new(hdr, frame).map(Offload::Segment),
        _ => Err(DropReason::GsoUnsupported),
    }
}

/// Writes the Internet checksum of `frame[start..]` at `start + offset`: the field holds the
/// pseudo-header sum the sender left there (the `CHECKSUM_PARTIAL` contract).
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), DropReason> {
    let at = start.checked_add(offset).filter(|a| a + 2 <= frame.len()).ok_or(DropReason::BadOffload)?;
    if start < ETH_LEN {
        return Err(DropReason::BadOffload);
    }
    let mut c = !fold(sum(&frame[start..], 0));
    if c == 0 && offset == 6 {
        // A UDP checksum that computes to zero is sent as all ones (RFC 768; zero means "none").
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// How one TCP super-frame is cut: its headers, where they end, and the MSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsoPlan {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Offset of the TCP header.
    pub l4: usize,
    /// Length of every header up to the TCP payload.
    pub hdr_len: usize,
    /// Payload bytes per segment.
    pub mss: usize,
    /// Payload bytes of the whole frame.
    pub payload: usize,
}

impl TsoPlan {
    /// Checks that `frame` is the Ethernet/IP/TCP frame `hdr` claims it is.
    pub fn new(hdr: &VnetHdr, frame: &[u8]) -> Result<TsoPlan, DropReason> {
        let bad = DropReason::BadOffload;
        let v6 = hdr.gso_type & !GSO_ECN == GSO_TCPV6;
        let mss = usize::from(hdr.gso_size);
        if mss == 0 || frame.len() < ETH_LEN + 40 {
            return Err(bad);
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let ip = &frame[ETH_LEN..];
        let l4 = if v6 {
            if ethertype != 0x86dd || ip[0] >> 4 != 6 {
                return Err(bad);
            }
            // Extension headers may sit between IPv6 and TCP: the sender's csum_start says
            // where TCP begins; without one, TCP must follow the fixed header.
            let l4 = if hdr.flags & F_NEEDS_CSUM != 0 { usize::from(hdr.csum_start) } else { ETH_LEN + 40 };
            if l4 < ETH_LEN + 40 || (l4 == ETH_LEN + 40 && ip[6] != 6) {
                return Err(bad);
            }
            l4
        } else {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ethertype != 0x0800 || ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 6 {
                return Err(bad);
            }
            if ip[6] & 0x3f != 0 || ip[7] != 0 {
                return Err(bad); // a fragment cannot be segmented
            }
            ETH_LEN + ihl
        };
        let doff = frame.get(l4 + 12).map(|b| usize::from(b >> 4) * 4).ok_or(bad)?;
        let hdr_len = l4 + doff;
        if doff < 20 || hdr_len > frame.len() {
            return Err(bad);
        }
        Ok(TsoPlan { v6, l4, hdr_len, mss, payload: frame.len() - hdr_len })
    }

    /// Number of segments.
    pub fn segments(&self) -> usize {
        self.payload.div_ceil(self.mss).max(1)
    }

    /// Length of the longest segment.
    pub fn max_segment(&self) -> usize {
        self.hdr_len + self.mss.min(self.payload)
    }

    /// Writes segment `i` of `frame` (the frame this plan was made for) into `out`, which
    /// must hold [`TsoPlan::max_segment`] bytes; returns its length, or 0 if `i` or `out`
    /// is out of range.
    pub fn segment(&self, frame: &[u8], i: usize, out: &mut [u8]) -> usize {
        let from = self.hdr_len + i * self.mss;
        if i >= self.segments() || frame.len() != self.hdr_len + self.payload {
            return 0;
        }
        let chunk = self.mss.min(self.payload - (from - self.hdr_len));
        let len = self.hdr_len + chunk;
        if out.len() < len {
            return 0;
        }
        out[..self.hdr_len].copy_from_slice(&frame[..self.hdr_len]);
        out[self.hdr_len..len].copy_from_slice(&frame[from..from + chunk]);
        let last = i + 1 == self.segments();
        let ip = ETH_LEN;
        if self.v6 {
            let plen = (len - ip - 40) as u16;
            out[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let ihl = usize::from(out[ip] & 0x0f) * 4;
            out[ip + 2..ip + 4].copy_from_slice(&((len - ip) as u16).to_be_bytes());
            // Each segment gets the next IP ID, as a NIC's TSO does without FIXEDID.
            let id = u16::from_be_bytes([out[ip + 4], out[ip + 5]]).wrapping_add(i as u16);
            out[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
            out[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
            let c = !fold(sum(&out[ip..ip + ihl], 0));
            out[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        }
        let t = self.l4;
        let seq =
            u32::from_be_bytes([out[t + 4], out[t + 5], out[t + 6], out[t + 7]]).wrapping_add((i * self.mss) as u32);
        out[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        // FIN and PSH belong to the last segment, CWR to the first (RFC 3168 6.1.2).
        if !last {
            out[t + 13] &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            out[t + 13] &= !TCP_CWR;
        }
        out[t + 16..t + 18].copy_from_slice(&[0, 0]);
        let tcp_len = (len - t) as u64;
        let pseudo =
            if self.v6 { sum(&out[ip + 8..ip + 40], 6 + tcp_len) } else { sum(&out[ip + 12..ip + 20], 6 + tcp_len) };
        let c = !fold(sum(&out[t..len], pseudo));
        out[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        len
    }
}

/// One IPv4 TCP segment as receive coalescing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// Length of the headers (Ethernet, IPv4 without options, TCP with options).
    pub hdr_len: usize,
    /// Sequence number.
    pub seq: u32,
    /// Payload bytes.
    pub payload: usize,
    /// TCP flags.
    pub flags: u8,
}

/// The segment in `frame`, if it is one receive coalescing may merge: IPv4 without options,
/// not a fragment, TCP with payload, lengths consistent and checksums correct (a segment
/// with a bad checksum goes to the guest alone, so the guest counts it).
pub fn tcp4_segment(frame: &[u8]) -> Option<TcpSegment> {
    let ip = frame.get(ETH_LEN..)?;
    if frame[12..14] != [0x08, 0x00] || ip.len() < 40 || ip[0] != 0x45 || ip[9] != 6 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total != ip.len() || ip[6] & 0x3f != 0 || ip[7] != 0 || fold(sum(&ip[..20], 0)) != 0xffff {
        return None;
    }
    let doff = usize::from(ip[32] >> 4) * 4;
    if doff < 20 || 20 + doff >= total {
        return None;
    }
    let tcp_len = (total - 20) as u64;
    if fold(sum(&ip[20..], sum(&ip[12..20], 6 + tcp_len))) != 0xffff {
        return None;
    }
    let seq = u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]);
    Some(TcpSegment { hdr_len: ETH_LEN + 20 + doff, seq, payload: total - 20 - doff, flags: ip[33] })
}

/// Whether `next` continues the run that `first` started and `prev` (the run's last segment
/// so far) extends, as Linux's GRO decides it: the same flow and headers but for the IP ID,
/// length and checksum and the TCP sequence number; in order; every segment but the last
/// full-sized and a bare ACK (the last may carry PSH).
pub fn continues(first: &[u8], f: &TcpSegment, prev: &TcpSegment, next: &[u8], n: &TcpSegment) -> bool {
    const ACK: u8 = 0x10;
    if prev.flags != ACK || (n.flags != ACK && n.flags != ACK | TCP_PSH) {
        return false;
    }
    if n.hdr_len != f.hdr_len || prev.payload != f.payload || n.payload > f.payload || n.payload == 0 {
        return false;
    }
    if prev.seq.wrapping_add(prev.payload as u32) != n.seq {
        return false;
    }
    let (a, b) = (first, next);
    let ip = ETH_LEN;
    let t = ETH_LEN + 20;
    a[..ETH_LEN] == b[..ETH_LEN]
        && a[ip + 1] == b[ip + 1]
        && a[ip + 6..ip + 10] == b[ip + 6..ip + 10]
        && a[ip + 12..ip + 20] == b[ip + 12..ip + 20]
        && a[t..t + 4] == b[t..t + 4]
        && a[t + 8..t + 12] == b[t + 8..t + 12]
        && a[t + 14..t + 16] == b[t + 14..t + 16]
        && a[t + 18..f.hdr_len] == b[t + 18..f.hdr_len]
}

/// Writes the super-frame of `segments` (a run [`continues`] accepted, first to last) into
/// `out` and returns its length and the virtio-net header that hands it to a guest as one
/// TSO frame: partial TCP checksum (the pseudo-header sum), `gso_size` the first segment's
/// payload. `None` if `out` is too small or the run is empty.
pub fn coalesce(segments: &[&[u8]], first: &TcpSegment, out: &mut [u8]) -> Option<(usize, VnetHdr)> {
    let head = segments.first()?;
    let h = first.hdr_len;
    let mut len = h;
    out.get_mut(..h)?.copy_from_slice(&head[..h]);
    let mut flags = 0u8;
    for s in segments {
        let p = &s[h..];
        out.get_mut(len..len + p.len())?.copy_from_slice(p);
        len += p.len();
        flags = s[ETH_LEN + 20 + 13];
    }
    let ip = ETH_LEN;
    let total = len - ip;
    if total > usize::from(u16::MAX) {
        return None;
    }
    out[ip + 2..ip + 4].copy_from_slice(&(total as u16).to_be_bytes());
    out[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let c = !fold(sum(&out[ip..ip + 20], 0));
    out[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    let t = ip + 20;
    out[t + 13] = flags; // the last segment's PSH
    let pseudo = fold(sum(&out[ip + 12..ip + 20], 6 + (len - t) as u64));
    out[t + 16..t + 18].copy_from_slice(&pseudo.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: h as u16,
        gso_size: first.payload as u16,
        csum_start: t as u16,
        csum_offset: 16,
    };
    Some((len, hdr))
}

/// Marks a TCP segment that [`tcp4_segment`] verified as one whose checksum is partial (the
/// field holds the pseudo-header sum again) and returns the header saying so: a guest takes
/// such a frame as checksum-verified, as it takes the kernel's `DATA_VALID` frames, and a
/// device without checksum offload would complete it in software.
pub fn mark_verified(frame: &mut [u8]) -> VnetHdr {
    let t = ETH_LEN + 20;
    let tcp_len = (frame.len().saturating_sub(t)) as u64;
    if frame.len() < t + 20 {
        return VnetHdr::default();
    }
    let pseudo = fold(sum(&frame[ETH_LEN + 12..t], 6 + tcp_len));
    frame[t + 16..t + 18].copy_from_slice(&pseudo.to_be_bytes());
    VnetHdr { flags: F_NEEDS_CSUM, csum_start: t as u16, csum_offset: 16, ..VnetHdr::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

    /// An Ethernet/IPv4/TCP frame with `payload` bytes, checksums as the sender leaves them
    /// for offload (IP header complete, TCP field holding the pseudo-header sum).
    fn tcp4(payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; ETH_LEN + 20 + 32 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let len = f.len();
        let ip = &mut f[ETH_LEN..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((len - ETH_LEN) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0xfffe_u16.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = !fold(sum(&ip[..20], 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut ip[20..];
        t[0..2].copy_from_slice(&5001u16.to_be_bytes());
        t[2..4].copy_from_slice(&40000u16.to_be_bytes());
        t[4..8].copy_from_slice(&0xffff_fff0_u32.to_be_bytes());
        t[12] = 8 << 4; // 32-byte header (timestamps)
        t[13] = flags;
        for (i, b) in t[32..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        f
    }

    fn tcp6(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; ETH_LEN + 40 + 20 + payload];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let ip = &mut f[ETH_LEN..];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let t = &mut ip[40..];
        t[4..8].copy_from_slice(&7u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x18; // PSH ACK
        for (i, b) in t[20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    fn gso(kind: u8, mss: u16, start: u16) -> VnetHdr {
        VnetHdr { flags: F_NEEDS_CSUM, gso_type: kind, hdr_len: 0, gso_size: mss, csum_start: start, csum_offset: 16 }
    }

    #[test]
    fn header_round_trips() {
        let h = VnetHdr { flags: 1, gso_type: 0x81, hdr_len: 66, gso_size: 1448, csum_start: 34, csum_offset: 16 };
        assert_eq!(VnetHdr::parse(&h.emit()), h);
        assert_eq!(h.emit(), [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
    }

    #[test]
    fn partial_udp_checksum_is_completed() {
        let mut f = crate::frames::udp4(
            crate::wire::MacAddr([2, 0, 0, 0, 0, 1]),
            crate::wire::MacAddr([2, 0, 0, 0, 0, 2]),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            1000,
            2000,
            b"hello, offload",
        );
        // What the guest leaves: the pseudo-header sum, not complemented.
        let udp_len = (f.len() - 34) as u64;
        let pseudo = fold(sum(&f[26..34], 17 + udp_len));
        f[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..Default::default() };
        assert_eq!(prepare(&hdr, &mut f), Ok(Offload::Done));
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr())));
    }

    #[test]
    fn checksum_offsets_outside_the_frame_are_refused() {
        let mut f = vec![0u8; 60];
        for (start, off) in [(58, 6), (60, 0), (4, 2), (u16::MAX, u16::MAX)] {
            let hdr = VnetHdr { flags: F_NEEDS_CSUM, csum_start: start, csum_offset: off, ..Default::default() };
            assert_eq!(prepare(&hdr, &mut f), Err(DropReason::BadOffload), "{start}/{off}");
        }
        let hdr = VnetHdr { gso_type: 3, ..Default::default() };
        assert_eq!(prepare(&hdr, &mut f), Err(DropReason::GsoUnsupported), "UFO");
    }

    fn segments(plan: &TsoPlan, f: &[u8]) -> Vec<Vec<u8>> {
        (0..plan.segments())
            .map(|i| {
                let mut out = vec![0u8; plan.max_segment()];
                let n = plan.segment(f, i, &mut out);
                assert!(n > 0);
                out.truncate(n);
                out
            })
            .collect()
    }

    #[test]
    fn tcp4_super_frame_becomes_mss_sized_segments_a_receiver_accepts() {
        let payload = 10_000;
        let f = tcp4(payload, 0x80 | 0x18 | 0x01); // CWR PSH ACK FIN
        let Offload::Segment(plan) = prepare(&gso(GSO_TCPV4 | GSO_ECN, 1448, 34), &mut f.clone()).unwrap() else {
            panic!("not segmented")
        };
        let segs = segments(&plan, &f);
        assert_eq!(segs.len(), 7);
        let mut data = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(s.len() <= 14 + 20 + 32 + 1448);
            let ip = Ipv4Packet::new_checked(&s[14..]).unwrap();
            assert!(ip.verify_checksum(), "segment {i} IP checksum");
            assert_eq!(usize::from(ip.total_len()), s.len() - 14);
            assert_eq!(ip.ident(), 0xfffe_u16.wrapping_add(i as u16), "IP IDs count up");
            assert!(ip.dont_frag());
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
            assert!(tcp.verify_checksum(&src, &dst), "segment {i} TCP checksum");
            assert_eq!(tcp.seq_number().0 as u32, 0xffff_fff0_u32.wrapping_add((i * 1448) as u32));
            let last = i == segs.len() - 1;
            assert_eq!(tcp.fin(), last, "FIN on the last segment only");
            assert_eq!(tcp.psh(), last, "PSH on the last segment only");
            assert_eq!(s[14 + 20 + 13] & TCP_CWR != 0, i == 0, "CWR on the first segment only");
            assert!(tcp.ack());
            assert_eq!(&s[14 + 20 + 20..14 + 20 + 32], &f[14 + 20 + 20..14 + 20 + 32], "options copied");
            data.extend_from_slice(tcp.payload());
        }
        assert_eq!(data, f[14 + 20 + 32..], "payload reassembles");
    }

    #[test]
    fn tcp6_super_frame_is_segmented() {
        let f = tcp6(4000);
        let Offload::Segment(plan) = prepare(&gso(GSO_TCPV6, 1000, 54), &mut f.clone()).unwrap() else {
            panic!("not segmented")
        };
        let segs = segments(&plan, &f);
        assert_eq!(segs.len(), 4);
        for (i, s) in segs.iter().enumerate() {
            let ip = Ipv6Packet::new_checked(&s[14..]).unwrap();
            assert_eq!(usize::from(ip.payload_len()), s.len() - 54);
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(tcp.verify_checksum(&IpAddress::Ipv6(ip.src_addr()), &IpAddress::Ipv6(ip.dst_addr())));
            assert_eq!(tcp.seq_number().0 as u32, 7 + (i * 1000) as u32);
            assert_eq!(tcp.psh(), i == 3);
            assert_eq!(tcp.payload().len(), 1000);
        }
    }

    #[test]
    fn super_frames_that_lie_are_refused() {
        let f = tcp4(3000, 0x10);
        let cases: [(VnetHdr, &[u8]); 5] = [
            (gso(GSO_TCPV6, 1448, 54), &f),         // says IPv6, is IPv4
            (gso(GSO_TCPV4, 0, 34), &f),            // no MSS
            (gso(GSO_TCPV4, 1448, 34), &f[..50]),   // TCP header cut off
            (gso(GSO_TCPV4, 1448, 34), &f[..20]),   // not even IP
            (gso(GSO_TCPV6, 1448, 20), &tcp6(100)), // TCP before the IPv6 header ends
        ];
        for (i, (h, frame)) in cases.iter().enumerate() {
            assert_eq!(TsoPlan::new(h, frame), Err(DropReason::BadOffload), "case {i}");
        }
        let mut udp = f.clone();
        udp[14 + 9] = 17;
        assert_eq!(TsoPlan::new(&gso(GSO_TCPV4, 1448, 34), &udp), Err(DropReason::BadOffload), "UDP as TCP");
    }

    #[test]
    fn segment_out_of_range_writes_nothing() {
        let f = tcp4(3000, 0x10);
        let plan = TsoPlan::new(&gso(GSO_TCPV4, 1448, 34), &f).unwrap();
        let mut out = vec![0u8; plan.max_segment()];
        assert_eq!(plan.segment(&f, 3, &mut out), 0);
        assert_eq!(plan.segment(&f[..100], 0, &mut out), 0);
        assert_eq!(plan.segment(&f, 0, &mut out[..10]), 0);
    }

    proptest::proptest! {
        #[test]
        fn any_header_on_any_frame_is_safe(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
                                            h in proptest::array::uniform10(proptest::num::u8::ANY)) {
            let hdr = VnetHdr::parse(&h);
            let mut f = bytes.clone();
            if let Ok(Offload::Segment(plan)) = prepare(&hdr, &mut f) {
                let mut out = vec![0u8; plan.max_segment()];
                for i in 0..plan.segments().min(64) {
                    let n = plan.segment(&f, i, &mut out);
                    proptest::prop_assert!(n <= plan.max_segment());
                }
            }
        }
    }

    #[test]
    fn segments_coalesce_back_into_the_super_frame() {
        let f = tcp4(10_000, 0x18); // PSH ACK
        let plan = TsoPlan::new(&gso(GSO_TCPV4, 1448, 34), &f).unwrap();
        let segs = segments(&plan, &f);
        let infos: Vec<TcpSegment> = segs.iter().map(|s| tcp4_segment(s).expect("a valid segment")).collect();
        for i in 1..segs.len() {
            assert!(continues(&segs[0], &infos[0], &infos[i - 1], &segs[i], &infos[i]), "segment {i} continues");
        }
        let views: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
        let mut out = vec![0u8; 65_600];
        let (n, hdr) = coalesce(&views, &infos[0], &mut out).unwrap();
        assert_eq!(n, f.len());
        assert_eq!((hdr.gso_type, hdr.gso_size, hdr.csum_start, hdr.csum_offset), (GSO_TCPV4, 1448, 34, 16));
        // Completing the partial checksum gives a frame a receiver accepts.
        let mut whole = out[..n].to_vec();
        complete_checksum(&mut whole, 34, 16).unwrap();
        let ip = Ipv4Packet::new_checked(&whole[14..]).unwrap();
        assert!(ip.verify_checksum());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr())));
        assert!(tcp.psh());
        assert_eq!(tcp.payload(), &f[66..]);
    }

    #[test]
    fn runs_break_where_gro_would_break_them() {
        let f = tcp4(4344, 0x10);
        let plan = TsoPlan::new(&gso(GSO_TCPV4, 1448, 34), &f).unwrap();
        let segs = segments(&plan, &f);
        let i: Vec<TcpSegment> = segs.iter().map(|s| tcp4_segment(s).unwrap()).collect();
        assert!(!continues(&segs[0], &i[0], &i[0], &segs[2], &i[2]), "a gap in the sequence");
        let mut other = segs[1].clone();
        other[14 + 20 + 1] ^= 1; // another source port
        let oi = tcp4_segment(&{
            let mut o = other.clone();
            o[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&[0, 0]);
            let tl = (o.len() - 34) as u64;
            let c = !fold(sum(&o[34..], sum(&o[26..34], 6 + tl)));
            o[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&c.to_be_bytes());
            other = o.clone();
            o
        })
        .unwrap();
        assert!(!continues(&segs[0], &i[0], &i[0], &other, &oi), "another flow");
        let mut bad = segs[1].clone();
        bad[60] ^= 0xff;
        assert_eq!(tcp4_segment(&bad), None, "a bad checksum is not merged");
        let mut fin = segs[0].clone();
        fin[14 + 20 + 13] = 0x11;
        let fi = TcpSegment { flags: 0x11, ..i[0] };
        assert!(!continues(&fin, &fi, &fi, &segs[1], &i[1]), "nothing follows a FIN");
    }

    #[test]
    fn a_verified_segment_marked_partial_completes_to_itself() {
        let f = tcp4(1000, 0x18);
        let plan = TsoPlan::new(&gso(GSO_TCPV4, 1448, 34), &f).unwrap();
        let seg = segments(&plan, &f).remove(0);
        assert!(tcp4_segment(&seg).is_some());
        let mut marked = seg.clone();
        let hdr = mark_verified(&mut marked);
        assert_eq!((hdr.flags, hdr.csum_start, hdr.csum_offset, hdr.gso_type), (F_NEEDS_CSUM, 34, 16, GSO_NONE));
        complete_checksum(&mut marked, 34, 16).unwrap();
        assert_eq!(marked, seg, "completing the partial checksum gives the original segment back");
    }
}
