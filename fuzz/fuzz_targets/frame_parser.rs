//! Every parser on arbitrary bytes: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use xvs_switch::pipeline::encap::{Underlayer, parse_outer};
use xvs_switch::wire::{ArpPacket, ArpRepr, EthernetFrame, Ipv4Packet, Ipv6Packet, UdpPacket, vxlan};

fuzz_target!(|data: &[u8]| {
    if let Ok(Underlayer::Vxlan(o)) = parse_outer(data, Ipv4Addr::new(192, 168, 77, 1)) {
        assert!(o.inner().end <= data.len());
    }
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        let p = eth.payload();
        let _ = ArpPacket::new_checked(p).and_then(|a| ArpRepr::parse(&a));
        if let Ok(ip) = Ipv4Packet::new_checked(p) {
            let _ = ip.verify_checksum();
            let _ = UdpPacket::new_checked(ip.payload()).map(|u| u.payload().len());
        }
        let _ = Ipv6Packet::new_checked(p).map(|ip| ip.payload().len());
    }
    let _ = vxlan::Packet::new_checked(data).map(|v| vxlan::Repr::parse(&v));
});
