//! VXLAN-over-IPv4 encapsulation and decapsulation (RFC 7348, section 5), as pure functions
//! over byte buffers.

use super::DropReason;
use crate::tables::Underlay;
use crate::wire::{
    self, ETHERNET_HEADER_LEN, EtherType, EthernetFrame, IPV4_HEADER_LEN, IpProtocol, Ipv4Packet, MacAddr,
    UDP_HEADER_LEN, UdpPacket, VXLAN_PORT, VXLAN_V4_OVERHEAD, vxlan,
};
use std::net::Ipv4Addr;
use std::ops::Range;

const IP: usize = ETHERNET_HEADER_LEN;
const UDP: usize = IP + IPV4_HEADER_LEN;
const VX: usize = UDP + UDP_HEADER_LEN;

/// The outer headers with everything that does not change per packet filled in.
#[derive(Debug, Clone)]
pub struct EncapTemplate {
    hdr: [u8; VXLAN_V4_OVERHEAD],
    /// One's-complement sum of the constant IPv4 header words.
    base_sum: u32,
    /// Largest inner frame (Ethernet header included) that fits the underlay MTU.
    pub max_inner: usize,
}

impl EncapTemplate {
    /// Builds the template for `u`: our MAC and VTEP IP, DF set (RFC 7348 section 4.3: VTEPs
    /// must not fragment), TTL, UDP destination port 4789, UDP checksum zero (section 5: it
    /// SHOULD be transmitted as zero over IPv4), VXLAN I flag.
    pub fn new(u: &Underlay) -> EncapTemplate {
        let mut hdr = [0u8; VXLAN_V4_OVERHEAD];
        hdr[6..12].copy_from_slice(&u.mac.0);
        hdr[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut hdr[IP..UDP];
        ip[0] = 0x45;
        ip[6] = 0x40; // DF
        ip[8] = u.ttl;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&u.vtep_ip.octets());
        let base_sum = wire::sum_words(ip);
        hdr[UDP + 2..UDP + 4].copy_from_slice(&VXLAN_PORT.to_be_bytes());
        hdr[VX] = vxlan::FLAG_I;
        let max_inner = usize::from(u.mtu).saturating_sub(IPV4_HEADER_LEN + UDP_HEADER_LEN + vxlan::HEADER_LEN);
        EncapTemplate { hdr, base_sum, max_inner }
    }

    /// Writes the 50 outer header bytes into `out[..50]` for an inner frame of `inner_len`.
    #[inline]
    pub fn write(&self, out: &mut [u8], dst_mac: MacAddr, dst_ip: Ipv4Addr, vni: u32, src_port: u16, inner_len: usize) {
        let out = &mut out[..VXLAN_V4_OVERHEAD];
        out.copy_from_slice(&self.hdr);
        out[0..6].copy_from_slice(&dst_mac.0);
        let ip_len = (IPV4_HEADER_LEN + UDP_HEADER_LEN + vxlan::HEADER_LEN + inner_len) as u16;
        out[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
        let d = dst_ip.octets();
        out[IP + 16..IP + 20].copy_from_slice(&d);
        let sum = self.base_sum
            + u32::from(ip_len)
            + u32::from(u16::from_be_bytes([d[0], d[1]]))
            + u32::from(u16::from_be_bytes([d[2], d[3]]));
        out[IP + 10..IP + 12].copy_from_slice(&(!wire::fold(sum)).to_be_bytes());
        out[UDP..UDP + 2].copy_from_slice(&src_port.to_be_bytes());
        out[UDP + 4..UDP + 6].copy_from_slice(&((UDP_HEADER_LEN + vxlan::HEADER_LEN + inner_len) as u16).to_be_bytes());
        out[VX + 4..VX + 7].copy_from_slice(&vni.to_be_bytes()[1..]);
    }

    /// Encapsulates the inner frame at `buf[inner]`: the outer headers go into the 50 bytes
    /// before it, so the frame does not move (it moves back only where the headroom is short).
    /// Returns where the encapsulated frame is, or `None` when `buf` has no room.
    #[inline]
    pub fn encapsulate(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        dst_mac: MacAddr,
        dst_ip: Ipv4Addr,
        vni: u32,
        src_port: u16,
    ) -> Option<Range<usize>> {
        let len = inner.len();
        if inner.end > buf.len() {
            return None;
        }
        let start = match inner.start.checked_sub(VXLAN_V4_OVERHEAD) {
            Some(s) => s,
            None if len + VXLAN_V4_OVERHEAD <= buf.len() => {
                buf.copy_within(inner, VXLAN_V4_OVERHEAD);
                0
            }
            None => return None,
        };
        self.write(&mut buf[start..], dst_mac, dst_ip, vni, src_port, len);
        Some(start..start + VXLAN_V4_OVERHEAD + len)
    }
}

/// A valid VXLAN packet addressed to us, as found by [`parse_outer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    /// The sending VTEP.
    pub src_ip: Ipv4Addr,
    /// The VNI.
    pub vni: u32,
    /// Where the inner Ethernet frame starts.
    pub inner_off: usize,
    /// Length of the inner Ethernet frame.
    pub inner_len: usize,
}

/// What a frame on the uplink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlayer {
    /// VXLAN for us.
    Vxlan(Outer),
    /// For the VTEP's own host stack (ARP, or IP to our VTEP address that is not VXLAN).
    Host,
}

/// The tenant frame in `frame` arriving on `port`: the frame itself from a VM port, the
/// encapsulated frame of VXLAN for us from the uplink (`None` for anything else there).
pub fn inner_frame(frame: &[u8], port_is_uplink: bool, vtep_ip: Ipv4Addr) -> Option<&[u8]> {
    if !port_is_uplink {
        return Some(frame);
    }
    match parse_outer(frame, vtep_ip) {
        Ok(Underlayer::Vxlan(o)) => frame.get(o.inner_off..o.inner_off + o.inner_len),
        _ => None,
    }
}

/// Parses an uplink frame: outer Ethernet, IPv4 to `vtep_ip` with a valid checksum and no
/// fragmentation, UDP to 4789, VXLAN with valid flags. The VNI and source VTEP are checked by
/// the caller against the tenant tables.
#[inline]
pub fn parse_outer(frame: &[u8], vtep_ip: Ipv4Addr) -> Result<Underlayer, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::MalformedEthernet)?;
    match eth.ethertype() {
        EtherType::Ipv4 => {}
        EtherType::Arp => return Ok(Underlayer::Host),
        _ => return Err(DropReason::NotVxlan),
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| DropReason::MalformedIpv4)?;
    if ip.version() != 4 || ip.header_len() < 20 {
        return Err(DropReason::MalformedIpv4);
    }
    if ip.dst_addr() != vtep_ip {
        return Err(DropReason::NotOurVtep);
    }
    if !ip.verify_checksum() {
        return Err(DropReason::BadOuterChecksum);
    }
    if ip.next_header() != IpProtocol::Udp {
        return Ok(Underlayer::Host);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(DropReason::OuterFragment);
    }
    let udp = UdpPacket::new_checked(ip.payload()).map_err(|_| DropReason::MalformedUdp)?;
    if udp.dst_port() != VXLAN_PORT {
        return Ok(Underlayer::Host);
    }
    let udp_len = usize::from(udp.len());
    if udp_len < UDP_HEADER_LEN || udp_len > ip.payload().len() {
        return Err(DropReason::MalformedUdp);
    }
    let vx = vxlan::Packet::new_checked(&udp.payload()[..udp_len - UDP_HEADER_LEN])
        .map_err(|_| DropReason::MalformedVxlan)?;
    let repr = vxlan::Repr::parse(&vx).map_err(|e| match e {
        vxlan::Error::Truncated => DropReason::MalformedVxlan,
        vxlan::Error::BadFlags => DropReason::BadVxlanFlags,
    })?;
    let inner_off = ETHERNET_HEADER_LEN + usize::from(ip.header_len()) + UDP_HEADER_LEN + vxlan::HEADER_LEN;
    let inner_len = vx.payload().len();
    if inner_len < ETHERNET_HEADER_LEN {
        return Err(DropReason::MalformedInner);
    }
    Ok(Underlayer::Vxlan(Outer { src_ip: ip.src_addr(), vni: repr.vni, inner_off, inner_len }))
}

impl Outer {
    /// Where the inner frame is in the parsed frame: decapsulation is taking that range, the
    /// frame does not move.
    #[inline]
    pub fn inner(&self) -> Range<usize> {
        self.inner_off..self.inner_off + self.inner_len
    }
}

/// UDP source port for an inner frame: a hash of its flow (MACs, and for IPv4 the addresses,
/// protocol and ports), in the dynamic range 49152..=65535 as RFC 7348 section 5 recommends,
/// so underlay ECMP spreads tenants' flows.
#[inline]
pub fn flow_src_port(inner: &[u8]) -> u16 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mix = |v: u64| {
        h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    };
    if inner.len() >= 14 {
        mix(u64::from_be_bytes([inner[0], inner[1], inner[2], inner[3], inner[4], inner[5], inner[6], inner[7]]));
        mix(u64::from(u32::from_be_bytes([inner[8], inner[9], inner[10], inner[11]])));
        if inner[12] == 0x08 && inner[13] == 0x00 && inner.len() >= 34 {
            let ip = &inner[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            mix(u64::from_be_bytes([ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19]]) ^ u64::from(ip[9]));
            let unfragmented = ip[6] & 0x3f == 0 && ip[7] == 0;
            if unfragmented && (ip[9] == 6 || ip[9] == 17) && ip.len() >= ihl + 4 && ihl >= 20 {
                mix(u64::from(u32::from_be_bytes([ip[ihl], ip[ihl + 1], ip[ihl + 2], ip[ihl + 3]])));
            }
        }
    }
    0xc000 | (((h >> 32) as u16) & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn underlay() -> Underlay {
        Underlay {
            interface: "u".into(),
            vtep_ip: Ipv4Addr::new(192, 168, 77, 1),
            prefix_len: 24,
            gateway: None,
            mac: MacAddr([0x02, 0, 0, 0, 0xff, 0x01]),
            mtu: 1500,
            ttl: 64,
            rate: None,
        }
    }

    // An inner 16-byte "frame": 14 bytes of Ethernet and two of payload.
    const INNER: [u8; 16] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0xaa, 0xbb];

    #[test]
    fn encapsulation_bytes() {
        let t = EncapTemplate::new(&underlay());
        let mut buf = [0u8; 128];
        buf[..16].copy_from_slice(&INNER);
        // No headroom: the inner frame moves back to make room.
        let r = t
            .encapsulate(&mut buf, 0..16, MacAddr([2, 0, 0, 0, 0xff, 2]), Ipv4Addr::new(192, 168, 77, 2), 100, 0xc123)
            .unwrap();
        assert_eq!(r, 0..66);
        #[rustfmt::skip]
        let expect: [u8; 50] = [
            2, 0, 0, 0, 0xff, 2,  2, 0, 0, 0, 0xff, 1,  0x08, 0x00,
            0x45, 0x00, 0x00, 52, 0x00, 0x00, 0x40, 0x00, 64, 17, 0x00, 0x00, 192, 168, 77, 1, 192, 168, 77, 2,
            0xc1, 0x23, 0x12, 0xb5, 0x00, 32, 0x00, 0x00,
            0x08, 0, 0, 0, 0, 0, 100, 0,
        ];
        // checksum aside, every byte is as expected
        let mut got = buf;
        got[24] = 0;
        got[25] = 0;
        assert_eq!(&got[..50], &expect[..]);
        assert_eq!(&buf[50..66], &INNER);
        let ip = Ipv4Packet::new_checked(&buf[14..66]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(wire::checksum(&buf[14..34]), 0);

        // With headroom the outer headers go in front and the inner frame stays put: the same
        // bytes, 60 bytes on.
        let mut room = [0u8; 188];
        room[110..126].copy_from_slice(&INNER);
        let r = t
            .encapsulate(
                &mut room,
                110..126,
                MacAddr([2, 0, 0, 0, 0xff, 2]),
                Ipv4Addr::new(192, 168, 77, 2),
                100,
                0xc123,
            )
            .unwrap();
        assert_eq!(r, 60..126);
        assert_eq!(&room[60..126], &buf[..66]);
        assert!(room[..60].iter().all(|&b| b == 0), "nothing written before the outer headers");
    }

    #[test]
    fn parse_outer_accepts_our_vxlan_and_decapsulates() {
        let t = EncapTemplate::new(&underlay());
        let mut buf = [0u8; 128];
        buf[..16].copy_from_slice(&INNER);
        // Encapsulated *to* 192.168.77.1 so that it parses as for us.
        let r = t.encapsulate(&mut buf, 0..16, MacAddr([2; 6]), Ipv4Addr::new(192, 168, 77, 1), 4242, 50000).unwrap();
        let Ok(Underlayer::Vxlan(o)) = parse_outer(&buf[r], Ipv4Addr::new(192, 168, 77, 1)) else { panic!() };
        assert_eq!((o.vni, o.src_ip, o.inner_off, o.inner_len), (4242, Ipv4Addr::new(192, 168, 77, 1), 50, 16));
        assert_eq!(&buf[o.inner()], &INNER);
    }

    #[test]
    fn parse_outer_rejections() {
        let t = EncapTemplate::new(&underlay());
        let me = Ipv4Addr::new(192, 168, 77, 1);
        let mk = || {
            let mut buf = [0u8; 128];
            buf[..16].copy_from_slice(&INNER);
            t.encapsulate(&mut buf, 0..16, MacAddr([2; 6]), me, 7, 50000).unwrap();
            buf
        };
        assert_eq!(parse_outer(&mk()[..13], me), Err(DropReason::MalformedEthernet));
        assert_eq!(parse_outer(&mk()[..40], me), Err(DropReason::MalformedIpv4));
        assert_eq!(parse_outer(&mk()[..66], Ipv4Addr::new(1, 2, 3, 4)), Err(DropReason::NotOurVtep));
        let mut b = mk();
        b[22] ^= 1; // TTL changed, checksum not
        assert_eq!(parse_outer(&b[..66], me), Err(DropReason::BadOuterChecksum));
        let mut b = mk();
        b[42] = 0x04; // I flag clear
        assert_eq!(parse_outer(&b[..66], me), Err(DropReason::BadVxlanFlags));
        b[42] = 0x0c; // I set, a reserved bit too: accepted (RFC 7348 ignores reserved bits)
        assert!(parse_outer(&b[..66], me).is_ok());
        let mut b = mk();
        b[36] = 0x12;
        b[37] = 0xb6; // port 4790
        assert_eq!(parse_outer(&b[..66], me), Ok(Underlayer::Host));
        let mut b = mk();
        b[12] = 0x08;
        b[13] = 0x06;
        assert_eq!(parse_outer(&b[..66], me), Ok(Underlayer::Host));
        let mut b = mk();
        b[12] = 0x86;
        b[13] = 0xdd;
        assert_eq!(parse_outer(&b[..66], me), Err(DropReason::NotVxlan));
    }

    #[test]
    fn src_port_in_dynamic_range_and_flow_stable() {
        let a = flow_src_port(&INNER);
        assert!(a >= 49152);
        assert_eq!(a, flow_src_port(&INNER));
        let mut other = INNER;
        other[5] = 9;
        assert!(flow_src_port(&other) >= 49152);
    }
}
