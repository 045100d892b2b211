//! Frame builders for tests, benchmarks, fuzzing and the traffic generator (allocates; not
//! for the data path).
//!
//! May depend on: pipeline (encapsulation headers), tables, wire; smoltcp.

use crate::pipeline::EncapTemplate;
use crate::tables::Underlay;
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr,
    MacAddr, UdpPacket,
};
use smoltcp::phy::ChecksumCapabilities;
use std::net::Ipv4Addr;

/// An Ethernet/IPv4/UDP frame with `payload`.
pub fn udp4(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ip_len = 20 + 8 + payload.len();
    let mut f = vec![0u8; 14 + ip_len];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    EthernetRepr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EtherType::Ipv4 }.emit(&mut eth);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: 64,
    }
    .emit(&mut ip, &ChecksumCapabilities::default());
    let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
    udp.set_src_port(sport);
    udp.set_dst_port(dport);
    udp.set_len((8 + payload.len()) as u16);
    udp.set_checksum(0);
    udp.payload_mut()[..payload.len()].copy_from_slice(payload);
    f
}

/// A minimum-size (60-byte, 64 with FCS) UDP frame.
pub fn udp4_min(src_mac: MacAddr, dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    udp4(src_mac, dst_mac, src, dst, 1000, 2000, &[0u8; 18])
}

/// An ARP request: `sha`/`spa` asks who has `tpa`.
pub fn arp_request(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp(ArpOperation::Request, sha, spa, MacAddr([0; 6]), tpa, MacAddr::BROADCAST)
}

/// An ARP packet in an Ethernet frame.
pub fn arp(op: ArpOperation, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr, eth_dst: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    EthernetRepr { src_addr: sha, dst_addr: eth_dst, ethertype: EtherType::Arp }.emit(&mut eth);
    ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: sha,
        source_protocol_addr: spa,
        target_hardware_addr: tha,
        target_protocol_addr: tpa,
    }
    .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    f
}

/// `inner` VXLAN-encapsulated from `src_vtep` (MAC `src_mac`) to the underlay `to`.
pub fn vxlan4(to: &Underlay, src_mac: MacAddr, src_vtep: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let from = Underlay { vtep_ip: src_vtep, mac: src_mac, mtu: 9000, ..to.clone() };
    let t = EncapTemplate::new(&from);
    let o = crate::wire::VXLAN_V4_OVERHEAD;
    let mut f = vec![0u8; inner.len() + o];
    f[o..].copy_from_slice(inner);
    let r = o..f.len();
    t.encapsulate(&mut f, r, to.mac, to.vtep_ip, vni, crate::pipeline::encap::flow_src_port(inner)).expect("room");
    f
}
