//! Property tests: wire round trips, decap(encap(f)) == f, and the isolation oracle.

use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::sync::Arc;
use xvs_switch::frames;
use xvs_switch::pipeline::encap::{EncapTemplate, Underlayer, parse_outer};
use xvs_switch::sim::Sim;
use xvs_switch::tables::{PortKind, UPLINK, Underlay};
use xvs_switch::types::{PortId, TenantId};
use xvs_switch::wire::{MacAddr, vxlan};

mod common;
use common::{MACS, VNIS, VTEPS, arb_tables, mac_of, vm_ip};

fn underlay() -> Underlay {
    Underlay {
        interface: "up".into(),
        vtep_ip: Ipv4Addr::new(192, 168, 77, 1),
        prefix_len: 24,
        gateway: None,
        mac: MacAddr([2, 0, 0, 0, 0xff, 1]),
        mtu: 9000,
        ttl: 64,
        rate: None,
    }
}

proptest! {
    #[test]
    fn vxlan_round_trip(vni in 0u32..=0xff_ffff, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buf = vec![0u8; 8 + payload.len()];
        buf[8..].copy_from_slice(&payload);
        let mut p = vxlan::Packet::new_unchecked(&mut buf[..]);
        vxlan::Repr { vni }.emit(&mut p);
        let p = vxlan::Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(vxlan::Repr::parse(&p), Ok(vxlan::Repr { vni }));
        prop_assert_eq!(p.payload(), &payload[..]);
    }

    #[test]
    fn udp_frame_round_trip(src: [u8; 6], dst: [u8; 6], a: u32, b: u32, sp: u16, dp: u16, payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        use xvs_switch::wire::{EthernetFrame, Ipv4Packet, UdpPacket};
        let f = frames::udp4(MacAddr(src), MacAddr(dst), Ipv4Addr::from(a), Ipv4Addr::from(b), sp, dp, &payload);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        prop_assert_eq!((eth.src_addr(), eth.dst_addr()), (MacAddr(src), MacAddr(dst)));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        prop_assert!(ip.verify_checksum());
        prop_assert_eq!((ip.src_addr(), ip.dst_addr()), (Ipv4Addr::from(a), Ipv4Addr::from(b)));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        prop_assert_eq!((udp.src_port(), udp.dst_port()), (sp, dp));
        prop_assert_eq!(udp.payload(), &payload[..]);
    }

    #[test]
    fn decap_of_encap_is_identity(inner in proptest::collection::vec(any::<u8>(), 14..1600), room in 0usize..300, vni in 1u32..=0xff_ffff, sport in 49152u16.., src_vtep: u32) {
        // `room` bytes of headroom before the inner frame: from none (the frame moves) to
        // more than the outer headers need (it stays).
        let me = underlay();
        let them = Underlay { vtep_ip: Ipv4Addr::from(src_vtep), ..me.clone() };
        let t = EncapTemplate::new(&them);
        let mut buf = vec![0u8; 4096];
        buf[room..room + inner.len()].copy_from_slice(&inner);
        let r = t.encapsulate(&mut buf, room..room + inner.len(), me.mac, me.vtep_ip, vni, sport).unwrap();
        prop_assert_eq!(r.len(), inner.len() + 50);
        prop_assert_eq!(r.start, room.saturating_sub(50));
        let Ok(Underlayer::Vxlan(o)) = parse_outer(&buf[r.clone()], me.vtep_ip) else { panic!("not parsed") };
        prop_assert_eq!((o.vni, o.src_ip), (vni, Ipv4Addr::from(src_vtep)));
        prop_assert_eq!(&buf[r][o.inner()], &inner[..]);
    }

    #[test]
    fn parse_outer_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_outer(&bytes, Ipv4Addr::new(192, 168, 77, 1));
    }
}

// ---- isolation oracle ----

#[derive(Debug, Clone)]
enum Inject {
    /// A frame from a VM port (by index among ports), well formed or not.
    Vm { port: usize, dst: usize, kind: u8, junk: Vec<u8> },
    /// A VXLAN frame on the uplink.
    Vxlan { vni: usize, vtep: usize, src: usize, dst: usize, bcast: bool, flags: u8 },
    /// Random bytes on any port.
    Junk { port: usize, bytes: Vec<u8> },
}

fn arb_inject() -> impl Strategy<Value = Inject> {
    prop_oneof![
        (0usize..16, 0usize..8, 0u8..5, proptest::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(port, dst, kind, junk)| Inject::Vm { port, dst, kind, junk }),
        (0usize..6, 0usize..4, 0usize..7, 0usize..8, any::<bool>(), prop_oneof![Just(0x08u8), any::<u8>()])
            .prop_map(|(vni, vtep, src, dst, bcast, flags)| Inject::Vxlan { vni, vtep, src, dst, bcast, flags }),
        (0usize..16, proptest::collection::vec(any::<u8>(), 0..120))
            .prop_map(|(port, bytes)| Inject::Junk { port, bytes }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_frame_crosses_tenants(tables in arb_tables(false), injects in proptest::collection::vec(arb_inject(), 1..40)) {
        let t = Arc::new(tables);
        let mut s = Sim::new(Arc::clone(&t), 512);
        let now = s.now;
        for v in VTEPS {
            s.core.pipeline.neigh.update(v, MacAddr([2, 0, 0, 0, 0xee, v.octets()[3]]), now);
        }
        let nports = t.ports.len();
        let vm_tenant = |p: PortId| match &t.port(p).expect("live port").kind {
            PortKind::Vm { tenant, .. } => Some(*tenant),
            PortKind::Uplink => None,
        };
        for inj in injects {
            // (ingress port, bytes, tenant the frame entered, if any)
            let (ingress, bytes, entry): (PortId, Vec<u8>, Option<TenantId>) = match inj {
                Inject::Vm { port, dst, kind, junk } => {
                    let p = PortId((1 + port % (nports - 1).max(1)) as u16);
                    if p.index() >= nports { continue; }
                    let PortKind::Vm { mac, ipv4, .. } = &t.port(p).expect("live port").kind else { continue };
                    let src_ip = ipv4[0];
                    let f = match kind {
                        0 => frames::udp4_min(*mac, mac_of(dst), src_ip, vm_ip(dst)),
                        1 => frames::arp_request(*mac, src_ip, vm_ip(dst)),
                        2 => frames::udp4(*mac, mac_of(dst), src_ip, vm_ip(dst), 1, 2, &junk),
                        3 => { let mut f = frames::udp4_min(*mac, mac_of(dst), src_ip, vm_ip(dst)); let n = junk.len().min(f.len()); f.truncate(n.max(1)); f }
                        _ => frames::udp4_min(MACS[dst % 4], mac_of(dst), src_ip, vm_ip(dst)),
                    };
                    (p, f, vm_tenant(p))
                }
                Inject::Vxlan { vni, vtep, src, dst, bcast, flags } => {
                    let vni_v = if vni < VNIS.len() { VNIS[vni] } else { 777 };
                    let src_vtep = if vtep < VTEPS.len() { VTEPS[vtep] } else { Ipv4Addr::new(10, 9, 9, 9) };
                    let dst_mac = if bcast { MacAddr::BROADCAST } else { mac_of(dst) };
                    let inner = frames::udp4_min(mac_of(src), dst_mac, vm_ip(src), vm_ip(dst));
                    let mut f = frames::vxlan4(&t.underlay, MacAddr([2, 0, 0, 0, 0xee, 2]), src_vtep, vni_v, &inner);
                    f[42] = flags;
                    // the I flag decides; reserved flag bits are ignored (RFC 7348)
                    let tenant = t.tenant_by_vni(vni_v).filter(|tn| flags & 0x08 != 0 && t.vtep_allowed(*tn, src_vtep));
                    (UPLINK, f, tenant)
                }
                Inject::Junk { port, bytes } => {
                    let p = PortId((port % nports) as u16);
                    // junk from a VM still entered that VM's tenant; junk on the uplink entered none
                    (p, bytes, vm_tenant(p))
                }
            };
            s.inject(ingress, &bytes);
            s.run();
            for p in 0..nports {
                let port = PortId(p as u16);
                for out in s.take(port) {
                    match vm_tenant(port) {
                        Some(tn) => prop_assert_eq!(Some(tn), entry, "delivered to port {} of another tenant", p),
                        None => {
                            prop_assert!(ingress != UPLINK, "split horizon: underlay frame went back to the underlay");
                            let tn = entry.expect("an encapsulated frame has a tenant");
                            let Ok(Underlayer::Vxlan(o)) = parse_outer(&out, Ipv4Addr::new(out[30], out[31], out[32], out[33])) else {
                                panic!("uplink output is not VXLAN");
                            };
                            let tenant = t.tenant(tn).unwrap();
                            prop_assert_eq!(o.vni, tenant.vni.get(), "wrong VNI on the underlay");
                            let dst = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
                            prop_assert!(tenant.vteps.contains(&dst), "sent to VTEP {} outside the tenant", dst);
                        }
                    }
                }
            }
        }
        prop_assert_eq!(s.core.free.len(), 512, "no frame leaked");
    }
}
