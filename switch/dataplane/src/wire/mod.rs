//! Wire formats: checked zero-copy views and emitters.
//!
//! Ethernet, ARP, IPv4, IPv6 and UDP come from `smoltcp::wire`; 802.1Q and VXLAN are written
//! here in the same style. The contract is smoltcp's: build a view with `new_checked`, and after
//! that no accessor can panic.
//!
//! May depend on: smoltcp only.

pub mod vxlan;

pub use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, ETHERNET_HEADER_LEN, EthernetAddress as MacAddr, EthernetFrame,
    EthernetProtocol as EtherType, EthernetRepr, IPV4_HEADER_LEN, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet,
    Ipv6Repr, UDP_HEADER_LEN, UdpPacket, UdpRepr,
};

/// IANA-assigned UDP destination port for VXLAN (RFC 7348, section 5).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN-over-IPv4 encapsulation adds in front of the inner Ethernet frame:
/// outer Ethernet (14) + IPv4 (20) + UDP (8) + VXLAN (8).
pub const VXLAN_V4_OVERHEAD: usize = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + vxlan::HEADER_LEN;

/// Internet checksum (RFC 1071) of `data`, folded and complemented.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data))
}

/// One's-complement sum of `data` as big-endian 16-bit words (folded to 16 bits, which is
/// still a sum that can be added to).
pub fn sum_words(data: &[u8]) -> u32 {
    u32::from(fold_wide(sum_wide(data, 0)))
}

/// The one's-complement sum of `data` as big-endian 16-bit words added to `init`, unfolded:
/// eight bytes at a time, for checksums over whole 64 KB frames.
pub fn sum_wide(data: &[u8], init: u64) -> u64 {
    let mut acc = init;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Adding the 32-bit halves keeps every carry in the upper bits: folded later.
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut pairs = chunks.remainder().chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [b] = pairs.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// Folds a sum from [`sum_wide`] into 16 bits.
pub fn fold_wide(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Folds a 32-bit one's-complement sum into 16 bits.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    //! Literal-byte tests of the smoltcp formats we rely on, so an upgrade that changes their
    //! behaviour fails here.
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use std::net::Ipv4Addr;

    // A 60-byte ARP request: who-has 10.0.0.2 tell 10.0.0.1, from 02:00:00:00:00:01.
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, // eth
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen op=request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sha spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // tha tpa
    ];

    // IPv4/UDP 10.0.0.1:1000 -> 10.0.0.2:2000, 4 bytes of payload, DF, TTL 64.
    const IPV4_UDP: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x26, 0xcb, 10, 0, 0, 1, 10, 0, 0, 2, // ipv4
        0x03, 0xe8, 0x07, 0xd0, 0x00, 0x0c, 0x00, 0x00, // udp, no checksum
        0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn ethernet_and_arp_deconstruct() {
        let eth = EthernetFrame::new_checked(&ARP_REQUEST[..]).unwrap();
        assert!(eth.dst_addr().is_broadcast());
        assert_eq!(eth.src_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(eth.ethertype(), EtherType::Arp);
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        match ArpRepr::parse(&arp).unwrap() {
            ArpRepr::EthernetIpv4 { operation, source_protocol_addr, target_protocol_addr, .. } => {
                assert_eq!(operation, ArpOperation::Request);
                assert_eq!(source_protocol_addr, Ipv4Addr::new(10, 0, 0, 1));
                assert_eq!(target_protocol_addr, Ipv4Addr::new(10, 0, 0, 2));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ethernet_and_arp_construct() {
        let mut buf = [0u8; 42];
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        EthernetRepr { src_addr: MacAddr([2, 0, 0, 0, 0, 1]), dst_addr: MacAddr::BROADCAST, ethertype: EtherType::Arp }
            .emit(&mut eth);
        let mut arp = ArpPacket::new_unchecked(eth.payload_mut());
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: MacAddr([2, 0, 0, 0, 0, 1]),
            source_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
            target_hardware_addr: MacAddr([0; 6]),
            target_protocol_addr: Ipv4Addr::new(10, 0, 0, 2),
        }
        .emit(&mut arp);
        assert_eq!(buf, ARP_REQUEST);
    }

    #[test]
    fn ipv4_udp_deconstruct_and_checksum() {
        let ip = Ipv4Packet::new_checked(&IPV4_UDP[..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(ip.dont_frag());
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.next_header(), IpProtocol::Udp);
        assert_eq!(checksum(&IPV4_UDP[..20]), 0);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (1000, 2000));
        assert_eq!(udp.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn ipv4_construct() {
        let mut buf = [0u8; 32];
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
        Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            next_header: IpProtocol::Udp,
            payload_len: 12,
            hop_limit: 64,
        }
        .emit(&mut ip, &ChecksumCapabilities::default());
        buf[20..].copy_from_slice(&IPV4_UDP[20..]);
        assert_eq!(buf, IPV4_UDP);
    }

    #[test]
    fn ipv6_deconstruct() {
        // IPv6 header, UDP, 8-byte payload, hop limit 64, fe80::1 -> ff02::1.
        let mut b = [0u8; 48];
        b[..8].copy_from_slice(&[0x60, 0, 0, 0, 0x00, 0x08, 17, 64]);
        b[8] = 0xfe;
        b[9] = 0x80;
        b[23] = 1;
        b[24] = 0xff;
        b[25] = 0x02;
        b[39] = 1;
        let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Udp);
        assert_eq!(ip.payload_len(), 8);
        assert!(ip.dst_addr().is_multicast());
    }

    #[test]
    fn too_short_inputs_are_rejected() {
        assert!(EthernetFrame::new_checked(&ARP_REQUEST[..13]).is_err());
        assert!(ArpPacket::new_checked(&ARP_REQUEST[14..40]).is_err());
        assert!(Ipv4Packet::new_checked(&IPV4_UDP[..19]).is_err());
        // total_len says 32, the buffer holds 31
        assert!(Ipv4Packet::new_checked(&IPV4_UDP[..31]).is_err());
        assert!(UdpPacket::new_checked(&IPV4_UDP[20..27]).is_err());
        assert!(Ipv6Packet::new_checked(&[0x60u8; 39][..]).is_err());
    }

    #[test]
    fn checksum_of_odd_length() {
        assert_eq!(sum_words(&[0x01, 0x02, 0x03]), 0x0102 + 0x0300);
        assert_eq!(fold(0x1_ffff), 0x1);
    }
}
