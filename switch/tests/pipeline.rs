//! Scenario tests of the pipeline on in-memory ports.

use std::net::Ipv4Addr;
use std::sync::Arc;
use xvs_switch::config::Config;
use xvs_switch::frames;
use xvs_switch::pipeline::DropReason;
use xvs_switch::pipeline::encap::{Underlayer, parse_outer};
use xvs_switch::port::FrameMem;
use xvs_switch::sim::Sim;
use xvs_switch::tables::UPLINK;
use xvs_switch::types::{PortId, TenantId};
use xvs_switch::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, Ipv4Packet, MacAddr, UdpPacket};

const CONFIG: &str = r#"
[uplink]
interface = "up0"
vtep_ip = "192.168.77.1/24"
mac = "02:00:00:00:ff:01"
mtu = 1550

[[tenant]]
name = "blue"
vni = 100
mac_limit = 16
vteps = ["192.168.77.2", "192.168.77.3"]
fdb = [{ mac = "02:00:00:00:00:02", vtep = "192.168.77.2" }]
arp = [{ ip = "10.0.0.2", mac = "02:00:00:00:00:02" }]

[[tenant]]
name = "red"
vni = 200
vteps = ["192.168.77.2"]

[[port]]
interface = "b1"
tenant = "blue"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]

[[port]]
interface = "b3"
tenant = "blue"
mac = "02:00:00:00:00:03"
ips = ["10.0.0.3"]

[[port]]
interface = "r1"
tenant = "red"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
"#;

const B1: PortId = PortId(1);
const B3: PortId = PortId(2);
const R1: PortId = PortId(3);
const BLUE: TenantId = TenantId(0);
const RED: TenantId = TenantId(1);
const VM1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const VM2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const VM3: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xff, 2]);
const PEER3_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xff, 3]);

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn sim() -> Sim {
    let t = Config::from_toml(CONFIG).unwrap().build(None, None).unwrap();
    let mut s = Sim::new(Arc::new(t), 1024);
    let now = s.now;
    s.core.pipeline.neigh.update(ip(192, 168, 77, 2), PEER_MAC, now);
    s.core.pipeline.neigh.update(ip(192, 168, 77, 3), PEER3_MAC, now);
    s
}

fn drops(s: &Sim, p: PortId, r: DropReason) -> u64 {
    s.core.pipeline.stats.ports[p.index()].drop_count(r)
}

fn tenant_drops(s: &Sim, t: TenantId, r: DropReason) -> u64 {
    s.core.pipeline.stats.tenants[t.index()].drop_count(r)
}

/// Checks an encapsulated frame as a receiver would; returns (dst VTEP, VNI, inner frame).
fn check_outer(f: &[u8]) -> (Ipv4Addr, u32, Vec<u8>) {
    let eth = EthernetFrame::new_checked(f).unwrap();
    assert_eq!(eth.src_addr(), MacAddr([2, 0, 0, 0, 0xff, 1]));
    let ipp = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ipp.verify_checksum(), "outer IPv4 checksum");
    assert!(ipp.dont_frag(), "DF set");
    assert_eq!(ipp.hop_limit(), 64);
    assert_eq!(ipp.src_addr(), ip(192, 168, 77, 1));
    let udp = UdpPacket::new_checked(ipp.payload()).unwrap();
    assert_eq!(udp.dst_port(), 4789);
    assert!(udp.src_port() >= 49152, "source port from the dynamic range");
    assert_eq!(usize::from(udp.len()), ipp.payload().len());
    let vx = udp.payload();
    assert_eq!(vx[0], 0x08);
    assert_eq!(&vx[1..4], &[0, 0, 0]);
    assert_eq!(vx[7], 0);
    let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
    (ipp.dst_addr(), vni, vx[8..].to_vec())
}

#[test]
fn local_switching_within_a_tenant() {
    let mut s = sim();
    let f = frames::udp4_min(VM1, VM3, ip(10, 0, 0, 1), ip(10, 0, 0, 3));
    s.inject(B1, &f);
    s.run();
    assert_eq!(s.take(B3), vec![f]);
    assert!(s.take(R1).is_empty());
    assert!(s.take(UPLINK).is_empty());
    assert_eq!(s.core.pipeline.stats.ports[B3.index()].tx_packets, 1);
    assert_eq!(s.core.pipeline.stats.tenants[BLUE.index()].rx_packets, 1);
}

#[test]
fn known_remote_unicast_is_encapsulated() {
    let mut s = sim();
    let f = frames::udp4_min(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2));
    s.inject(B1, &f);
    s.run();
    let out = s.take(UPLINK);
    assert_eq!(out.len(), 1);
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    assert_eq!(eth.dst_addr(), PEER_MAC);
    let (dst, vni, inner) = check_outer(&out[0]);
    assert_eq!((dst, vni), (ip(192, 168, 77, 2), 100));
    assert_eq!(inner, f);
}

#[test]
fn decapsulation_learns_and_replies_go_back_unicast() {
    let mut s = sim();
    let remote_vm = MacAddr([2, 0, 0, 0, 0, 0x33]);
    let inner = frames::udp4_min(remote_vm, VM1, ip(10, 0, 0, 33), ip(10, 0, 0, 1));
    let t = s.core.pipeline.tables().underlay.clone();
    s.inject(UPLINK, &frames::vxlan4(&t, PEER3_MAC, ip(192, 168, 77, 3), 100, &inner));
    s.run();
    assert_eq!(s.take(B1), vec![inner]);
    assert!(s.take(R1).is_empty(), "same MAC in the red tenant never sees blue traffic");
    assert_eq!(s.core.pipeline.stats.events.fdb_learned, 1);
    // the reply is unicast to the VTEP it was learned from
    let reply = frames::udp4_min(VM1, remote_vm, ip(10, 0, 0, 1), ip(10, 0, 0, 33));
    s.inject(B1, &reply);
    s.run();
    let out = s.take(UPLINK);
    assert_eq!(out.len(), 1);
    let (dst, vni, got) = check_outer(&out[0]);
    assert_eq!((dst, vni, got), (ip(192, 168, 77, 3), 100, reply));
}

#[test]
fn broadcast_floods_within_tenant_and_head_end_replicates() {
    let mut s = sim();
    let f = frames::udp4_min(VM1, MacAddr::BROADCAST, ip(10, 0, 0, 1), ip(10, 0, 0, 255));
    s.inject(B1, &f);
    s.run();
    assert_eq!(s.take(B3), vec![f.clone()]);
    assert!(s.take(B1).is_empty());
    assert!(s.take(R1).is_empty());
    let mut vteps: Vec<_> = s.take(UPLINK).iter().map(|o| check_outer(o)).collect();
    vteps.sort();
    assert_eq!(vteps, vec![(ip(192, 168, 77, 2), 100, f.clone()), (ip(192, 168, 77, 3), 100, f)]);
    assert_eq!(s.core.pipeline.stats.events.flooded, 1);
}

#[test]
fn decapsulated_broadcast_reaches_local_ports_only() {
    let mut s = sim();
    let inner =
        frames::udp4_min(MacAddr([2, 0, 0, 0, 0, 0x44]), MacAddr::BROADCAST, ip(10, 0, 0, 44), ip(10, 0, 0, 255));
    let t = s.core.pipeline.tables().underlay.clone();
    s.inject(UPLINK, &frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 2), 200, &inner));
    s.run();
    assert_eq!(s.take(R1), vec![inner]);
    assert!(s.take(B1).is_empty() && s.take(B3).is_empty());
    assert!(s.take(UPLINK).is_empty(), "split horizon");
}

#[test]
fn anti_spoofing() {
    let mut s = sim();
    s.inject(B1, &frames::udp4_min(VM3, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2)));
    s.inject(B1, &frames::udp4_min(VM1, VM2, ip(10, 0, 0, 9), ip(10, 0, 0, 2)));
    s.inject(B1, &frames::arp_request(VM1, ip(10, 0, 0, 9), ip(10, 0, 0, 3)));
    let mut tagged = frames::udp4_min(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2));
    tagged[12] = 0x81;
    tagged[13] = 0x00;
    s.inject(B1, &tagged);
    s.inject(B1, &[1, 2, 3]);
    s.run();
    for r in [
        DropReason::SpoofedSrcMac,
        DropReason::SpoofedSrcIp,
        DropReason::SpoofedArp,
        DropReason::VlanTagged,
        DropReason::MalformedEthernet,
    ] {
        assert_eq!(drops(&s, B1, r), 1, "{}", r.name());
        assert_eq!(tenant_drops(&s, BLUE, r), 1, "{}", r.name());
    }
    assert!(s.take(UPLINK).is_empty() && s.take(B3).is_empty());
    assert_eq!(s.core.free.len(), 1024, "every dropped frame returned");
}

#[test]
fn arp_for_a_known_binding_is_answered_locally() {
    let mut s = sim();
    s.inject(B1, &frames::arp_request(VM1, ip(10, 0, 0, 1), ip(10, 0, 0, 2)));
    s.run();
    let out = s.take(B1);
    assert_eq!(out.len(), 1);
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (VM2, VM1));
    let repr = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!(
        repr,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: VM2,
            source_protocol_addr: ip(10, 0, 0, 2),
            target_hardware_addr: VM1,
            target_protocol_addr: ip(10, 0, 0, 1),
        }
    );
    assert!(s.take(UPLINK).is_empty(), "suppressed, not flooded");
    // the local VM's binding works too, and red's 10.0.0.3 is unknown: flooded within red only
    s.inject(R1, &frames::arp_request(VM1, ip(10, 0, 0, 1), ip(10, 0, 0, 3)));
    s.run();
    assert!(s.take(R1).is_empty());
    assert!(s.take(B3).is_empty());
    let out = s.take(UPLINK);
    assert_eq!(out.len(), 1);
    assert_eq!(check_outer(&out[0]).1, 200);
}

#[test]
fn too_big_after_encapsulation_is_dropped() {
    let mut s = sim();
    // MTU 1550: inner frames up to 1550 - 36 = 1514 bytes fit.
    let fits = frames::udp4(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2), 1, 2, &[0; 1472]);
    assert_eq!(fits.len(), 1514);
    let too_big = frames::udp4(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2), 1, 2, &[0; 1473]);
    s.inject(B1, &fits);
    s.inject(B1, &too_big);
    s.run();
    let out = s.take(UPLINK);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 1564);
    assert_eq!(drops(&s, B1, DropReason::MtuExceeded), 1);
    // The frame has DF set, so the sender got ICMP "fragmentation needed" with the inner MTU,
    // from the destination, as a router would answer it; without DF it gets nothing.
    assert_eq!(too_big[20] & 0x40, 0x40);
    let back = s.take(B1);
    assert_eq!(back.len(), 1, "one ICMP reply to the sender");
    let r = &back[0];
    assert_eq!(&r[0..6], &VM1.0, "to the sender's MAC");
    assert_eq!((r[23], r[34], r[35]), (1, 3, 4), "ICMP fragmentation needed");
    assert_eq!(u16::from_be_bytes([r[40], r[41]]), 1500, "the inner MTU");
    assert_eq!(&r[26..30], &[10, 0, 0, 2], "from the destination");
    assert_eq!(s.core.pipeline.stats.events.icmp_too_big, 1);
    let mut no_df = too_big.clone();
    no_df[20] &= !0x40;
    no_df[24..26].copy_from_slice(&[0, 0]);
    let c = xvs_switch::wire::checksum(&no_df[14..34]);
    no_df[24..26].copy_from_slice(&c.to_be_bytes());
    s.inject(B1, &no_df);
    s.run();
    assert_eq!(drops(&s, B1, DropReason::MtuExceeded), 2);
    assert!(s.take(B1).is_empty(), "no reply without DF");
    assert_eq!(s.core.pipeline.stats.events.icmp_too_big, 1);
}

#[test]
fn underlay_checks_are_counted() {
    let mut s = sim();
    let t = s.core.pipeline.tables().underlay.clone();
    let inner = frames::udp4_min(MacAddr([2, 0, 0, 0, 0, 0x44]), VM1, ip(10, 0, 0, 44), ip(10, 0, 0, 1));
    s.inject(UPLINK, &frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 2), 300, &inner));
    s.inject(UPLINK, &frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 9), 100, &inner));
    s.inject(UPLINK, &frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 3), 200, &inner));
    let mut bad = frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 2), 100, &inner);
    bad[42] = 0x80; // I flag clear (reserved bits alone would be ignored)
    s.inject(UPLINK, &bad);
    // RFC 7348: decapsulated frames with an inner VLAN tag SHOULD be discarded
    let mut tagged = inner.clone();
    tagged[12..14].copy_from_slice(&[0x81, 0x00]);
    s.inject(UPLINK, &frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 2), 100, &tagged));
    // inner source MAC is blue's local b1: a remote cannot claim it
    let claim = frames::udp4_min(VM1, VM3, ip(10, 0, 0, 1), ip(10, 0, 0, 3));
    s.inject(UPLINK, &frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 2), 100, &claim));
    s.run();
    assert_eq!(drops(&s, UPLINK, DropReason::UnknownVni), 1);
    assert_eq!(drops(&s, UPLINK, DropReason::VtepNotAllowed), 2);
    assert_eq!(tenant_drops(&s, RED, DropReason::VtepNotAllowed), 1);
    assert_eq!(drops(&s, UPLINK, DropReason::BadVxlanFlags), 1);
    assert_eq!(drops(&s, UPLINK, DropReason::InnerVlanTagged), 1);
    assert_eq!(drops(&s, UPLINK, DropReason::RemoteClaimsLocalMac), 1);
    for p in [B1, B3, R1] {
        assert!(s.take(p).is_empty());
    }
}

#[test]
fn unresolved_vtep_is_counted_and_requested() {
    let t = Config::from_toml(CONFIG).unwrap().build(None, None).unwrap();
    let mut s = Sim::new(Arc::new(t), 256);
    s.inject(B1, &frames::udp4_min(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2)));
    s.run();
    assert_eq!(drops(&s, B1, DropReason::VtepUnresolved), 1);
    let pending = s.core.pipeline.neigh.get(ip(192, 168, 77, 2)).unwrap();
    assert_eq!(pending.mac, None, "marked for ARP resolution");
}

#[test]
fn hairpin_and_mac_limit() {
    let mut s = sim();
    // 20 distinct remote MACs in blue (limit 16): all delivered, 16 learned
    let t = s.core.pipeline.tables().underlay.clone();
    for i in 0..20u8 {
        let inner = frames::udp4_min(MacAddr([2, 0, 0, 1, 0, i]), VM1, ip(10, 0, 1, i), ip(10, 0, 0, 1));
        s.inject(UPLINK, &frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 2), 100, &inner));
    }
    s.run();
    assert_eq!(s.take(B1).len(), 20);
    assert_eq!(s.core.pipeline.fdb.learned_count(BLUE), 16);
    assert_eq!(s.core.pipeline.stats.events.fdb_full, 4);
    // red can still learn
    let inner = frames::udp4_min(MacAddr([2, 0, 0, 1, 0, 1]), VM1, ip(10, 0, 1, 1), ip(10, 0, 0, 1));
    s.inject(UPLINK, &frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 2), 200, &inner));
    s.run();
    assert_eq!(s.core.pipeline.fdb.learned_count(RED), 1);
    // a frame to its own sender's MAC
    s.inject(B1, &frames::udp4_min(VM1, VM1, ip(10, 0, 0, 1), ip(10, 0, 0, 1)));
    s.run();
    assert_eq!(drops(&s, B1, DropReason::Hairpin), 1);
}

#[test]
fn learned_entries_age_out_with_the_injected_clock() {
    let mut s = sim();
    let t = s.core.pipeline.tables().underlay.clone();
    let remote = MacAddr([2, 0, 0, 0, 0, 0x55]);
    let inner = frames::udp4_min(remote, VM1, ip(10, 0, 0, 55), ip(10, 0, 0, 1));
    s.inject(UPLINK, &frames::vxlan4(&t, PEER3_MAC, ip(192, 168, 77, 3), 100, &inner));
    s.run();
    s.take(B1);
    s.advance(301 * 1_000_000_000);
    // aged: unknown unicast, so flooded to both VTEPs and b3
    s.inject(B1, &frames::udp4_min(VM1, remote, ip(10, 0, 0, 1), ip(10, 0, 0, 55)));
    s.run();
    assert_eq!(s.take(UPLINK).len(), 2);
    assert_eq!(s.take(B3).len(), 1);
    let now = s.now;
    assert_eq!(s.core.pipeline.fdb.age(now), 1);
}

#[test]
fn trace_decides_without_side_effects() {
    let s = sim();
    let f = frames::udp4_min(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2));
    let (a, t) = s.core.pipeline.decide(B1, &f, s.now);
    assert_eq!(t, Some(BLUE));
    assert!(matches!(a, xvs_switch::pipeline::Action::Encap { vni: 100, .. }), "{a:?}");
    assert_eq!(s.core.pipeline.stats.ports[B1.index()].rx_packets, 0);
}

#[test]
fn host_frames_are_handed_over() {
    let mut s = sim();
    let t = s.core.pipeline.tables().underlay.clone();
    let req = frames::arp_request(PEER_MAC, ip(192, 168, 77, 2), t.vtep_ip);
    s.inject(UPLINK, &req);
    s.core.poll(s.now);
    assert_eq!(s.core.stage.host.len(), 1);
    let d = s.core.stage.host[0];
    assert_eq!(s.core.mem.data(&d), &req[..]);
    assert!(matches!(parse_outer(&req, t.vtep_ip), Ok(Underlayer::Host)));
}

/// Frames queued in the uplink scheduler when it is replaced (tenants outgrow its tables, or
/// the rate goes away) are all sent later: none leaks out of the frame memory.
#[test]
fn a_rebuilt_scheduler_keeps_every_frame() {
    let shaped = CONFIG.replace("mtu = 1550\n", "mtu = 1550\nrate = \"1M\"\n");
    let t = Config::from_toml(&shaped).unwrap().build(None, None).unwrap();
    let mut s = Sim::new(Arc::new(t.clone()), 1024);
    let now = s.now;
    s.core.pipeline.neigh.update(ip(192, 168, 77, 2), PEER_MAC, now);
    let total = s.core.free.len();
    let f = frames::udp4_min(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2));
    let mut sent = 0;
    let queued = |s: &Sim| s.core.qos.as_ref().map_or(0, |q| q.backlog() as usize);
    for round in 0..3 {
        for _ in 0..300 {
            assert!(s.inject(B1, &f));
        }
        s.run();
        sent += s.take(UPLINK).len();
        assert!(queued(&s) > 200, "a 1 Mbit/s link queues the burst: {}", queued(&s));
        // grow past the scheduler's tables (32 tenants), then (last round) drop the rate
        let mut more = shaped.clone();
        for i in 0..(20 + 20 * round) {
            more.push_str(&format!("\n[[tenant]]\nname = \"t{i}\"\nvni = {}\n", 1000 + i));
        }
        if round == 2 {
            more = more.replace("rate = \"1M\"\n", "");
        }
        let next = Config::from_toml(&more).unwrap().build_after(Some(&t), None, None).unwrap();
        let now = s.now;
        s.core.set_tables(Arc::new(next), &Default::default(), now);
        assert_eq!(s.core.qos.is_some(), round < 2);
        if round < 2 {
            // every frame queued before is queued in the new scheduler
            assert_eq!(queued(&s) + s.core.free.len(), total, "round {round}: frames leaked");
        }
    }
    // Without a rate the old queue drains to the uplink within a few polls.
    for _ in 0..100 {
        s.core.poll(s.now);
        sent += s.take(UPLINK).len();
        s.advance(1_000_000);
    }
    // the 1 Mbit/s link took what it could; the rest met a full queue (512 frames a port)
    let full = drops(&s, B1, DropReason::QosQueueFull) as usize;
    assert!(full > 0 && sent > 512, "sent {sent}, queue full {full}");
    assert_eq!(sent + full, 900, "every frame sent or counted");
    assert_eq!(s.core.free.len(), total, "every frame came back");
}

/// A removed tenant's id given to a new tenant (and a removed port's to a new port) carries
/// none of the old one's counters or learned entries.
#[test]
fn a_reused_id_starts_clean() {
    let mut s = sim();
    let remote_vm = MacAddr([2, 0, 0, 0, 0, 0x33]);
    let inner = frames::udp4_min(remote_vm, VM1, ip(10, 0, 0, 33), ip(10, 0, 0, 1));
    let t = s.core.pipeline.tables().underlay.clone();
    s.inject(UPLINK, &frames::vxlan4(&t, PEER_MAC, ip(192, 168, 77, 2), 200, &inner));
    s.run();
    assert_eq!(s.take(R1), vec![inner]);
    assert_eq!(s.core.pipeline.fdb.learned_count(RED), 1);
    assert!(s.core.pipeline.stats.tenants[RED.index()].rx_packets > 0);
    assert!(s.core.pipeline.stats.ports[R1.index()].tx_packets > 0);
    // red and its port go, green and its port come in the same change: they get red's ids
    let old = Arc::clone(s.core.pipeline.tables());
    let cfg = CONFIG
        .replace("name = \"red\"\nvni = 200", "name = \"green\"\nvni = 300")
        .replace("interface = \"r1\"\ntenant = \"red\"", "interface = \"g1\"\ntenant = \"green\"");
    let new = Config::from_toml(&cfg).unwrap().build_after(Some(&old), None, None).unwrap();
    assert_eq!(new.tenant_by_name("green"), Some(RED), "the slot is reused");
    assert_eq!(new.port(R1).map(|p| p.name.as_str()), Some("g1"));
    let change = xvs_switch::pipeline::Change::between(&old, &new);
    let now = s.now;
    s.core.set_tables(Arc::new(new), &change, now);
    assert_eq!(s.core.pipeline.fdb.learned_count(RED), 0);
    assert_eq!(s.core.pipeline.fdb.lookup(RED, &remote_vm, now), None, "no entry inherited");
    assert_eq!(s.core.pipeline.stats.tenants[RED.index()].rx_packets, 0, "no counters inherited");
    assert_eq!(s.core.pipeline.stats.ports[R1.index()].tx_packets, 0);
    // blue, which stayed, keeps its counters
    assert!(s.core.pipeline.stats.ports[UPLINK.index()].rx_packets > 0);
}

/// An IPv6 frame from `mac`/`src` to all-nodes carrying ICMPv6 `icmp` (checksum left 0: the
/// switch does not check it).
fn icmp6(mac: MacAddr, src: std::net::Ipv6Addr, icmp: &[u8]) -> Vec<u8> {
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&"ff02::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(icmp);
    f
}

/// ND message `kind` (135 NS, 136 NA, 134 RA) naming `target`, with a link-layer address
/// option (type `opt`) carrying `ll`.
fn nd(kind: u8, target: std::net::Ipv6Addr, opt: u8, ll: MacAddr) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0, 0x60, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[opt, 1]);
    m.extend_from_slice(&ll.0);
    m
}

/// What a VM may send beyond IPv4 and ARP (docs/architecture.md, "What a VM may send").
#[test]
fn ipv6_neighbour_discovery_and_other_ethertypes_from_a_vm() {
    let mut s = sim();
    // VM1's modified EUI-64 link-local address: 02:00:00:00:00:01 -> fe80::ff:fe00:1
    let ll: std::net::Ipv6Addr = "fe80::ff:fe00:1".parse().unwrap();
    let other_ll: std::net::Ipv6Addr = "fe80::1234".parse().unwrap();
    let passes = [
        icmp6(VM1, ll, &nd(135, "fe80::ff:fe00:2".parse().unwrap(), 1, VM1)), // NS for a neighbour
        icmp6(VM1, ll, &nd(136, ll, 2, VM1)),                                 // NA for itself
        icmp6(VM1, "::".parse().unwrap(), &nd(135, ll, 1, VM1)),              // DAD
        icmp6(VM1, ll, &[128, 0, 0, 0, 0, 1, 0, 1]),                          // echo request
    ];
    for f in &passes {
        s.inject(B1, f);
    }
    s.run();
    assert_eq!(s.take(B3).len(), passes.len(), "flooded to the tenant's other port");
    assert_eq!(s.take(UPLINK).len(), 2 * passes.len(), "and to its two VTEPs");
    let dropped = [
        (icmp6(VM1, other_ll, &[128, 0, 0, 0, 0, 1, 0, 1]), DropReason::SpoofedSrcIp),
        (icmp6(VM1, ll, &nd(136, "fe80::ff:fe00:2".parse().unwrap(), 2, VM1)), DropReason::SpoofedNd),
        (icmp6(VM1, ll, &nd(135, "fe80::ff:fe00:2".parse().unwrap(), 1, VM2)), DropReason::SpoofedNd),
        (icmp6(VM1, ll, &nd(134, ll, 1, VM1)), DropReason::SpoofedNd), // router advertisement
        (icmp6(VM1, ll, &[136, 0, 0, 0]), DropReason::MalformedIpv6),
    ];
    for (f, _) in &dropped {
        s.inject(B1, f);
    }
    let mut lldp = frames::udp4_min(VM1, MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]), ip(10, 0, 0, 1), ip(10, 0, 0, 2));
    lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
    s.inject(B1, &lldp);
    s.run();
    assert!(s.take(B3).is_empty() && s.take(UPLINK).is_empty());
    for (_, r) in &dropped {
        assert!(drops(&s, B1, *r) >= 1, "{}", r.name());
    }
    assert_eq!(drops(&s, B1, DropReason::SpoofedNd), 3);
    assert_eq!(drops(&s, B1, DropReason::EthertypeNotAllowed), 1);
    assert_eq!(s.core.free.len(), 1024, "every frame returned");
}

#[test]
fn a_policed_port_sends_its_burst_at_once_then_its_rate() {
    // 8 Mbit/s of wire bits (1 byte per µs), 2,000 bytes deep, on b1 only
    let cfg = CONFIG.replacen(
        "ips = [\"10.0.0.1\"]\n",
        "ips = [\"10.0.0.1\"]\npolicer = { rate = \"8M\", burst = \"2000\" }\n",
        1,
    );
    let t = Config::from_toml(&cfg).unwrap().build(None, None).unwrap();
    let mut s = Sim::new(Arc::new(t), 1024);
    let f = frames::udp4_min(VM1, VM3, ip(10, 0, 0, 1), ip(10, 0, 0, 3)); // 60 + 24 wire bytes
    let wire = 60 + xvs_switch::qos::WIRE_OVERHEAD;
    for _ in 0..40 {
        s.inject(B1, &f);
    }
    s.run();
    let first = s.take(B3).len() as u64;
    assert_eq!(first, 2_000 / wire, "the whole burst, even right after the core started");
    assert_eq!(drops(&s, B1, DropReason::Policed), 40 - first);
    // 10 ms later: 10,000 bytes of rate, capped at the 2,000-byte depth
    s.advance(10_000_000);
    for _ in 0..40 {
        s.inject(B1, &f);
    }
    s.run();
    assert_eq!(s.take(B3).len() as u64, 2_000 / wire);
    // 420 µs later: 420 bytes, five frames of 84
    s.advance(420_000 + 1_000);
    for _ in 0..10 {
        s.inject(B1, &f);
    }
    s.run();
    let n = s.take(B3).len() as u64;
    assert!((5..=6).contains(&n), "{n} frames after 421 µs at 1 byte/µs (plus what the last burst left)");
    // b3 has no policer
    for _ in 0..40 {
        s.inject(B3, &frames::udp4_min(VM3, VM1, ip(10, 0, 0, 3), ip(10, 0, 0, 1)));
    }
    s.run();
    assert_eq!(s.take(B1).len(), 40);
}

#[test]
fn a_capture_sees_frames_in_and_out_with_their_decision_and_changes_nothing() {
    use xvs_switch::capture::{Dir, Ring, Tap, Verdict};
    use xvs_switch::pipeline::Action;
    let mut s = sim();
    let on_b1 = Ring::new(16, 4096);
    let on_uplink_red = Ring::new(16, 4096);
    s.core.taps.push(Tap::new(B1, None, Arc::clone(&on_b1), s.now));
    s.core.taps.push(Tap::new(UPLINK, Some(RED), Arc::clone(&on_uplink_red), s.now));
    let good = frames::udp4_min(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2));
    let spoofed = frames::udp4_min(VM3, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2));
    let back = frames::udp4_min(VM3, VM1, ip(10, 0, 0, 3), ip(10, 0, 0, 1));
    s.inject(B1, &good);
    s.inject(B1, &spoofed);
    s.inject(B3, &back);
    s.run();
    // forwarding is as without a capture
    assert_eq!(s.take(UPLINK).len(), 1);
    assert_eq!(s.take(B1), vec![back.clone()]);
    assert_eq!(drops(&s, B1, DropReason::SpoofedSrcMac), 1);
    let recs: Vec<_> = std::iter::from_fn(|| on_b1.pop()).collect();
    assert_eq!(recs.len(), 3, "two in, one out");
    assert_eq!((recs[0].dir, recs[0].tenant), (Dir::In, Some(BLUE)));
    assert!(matches!(recs[0].verdict, Verdict::Decided(Action::Encap { vni: 100, .. })), "{:?}", recs[0].verdict);
    assert_eq!(&recs[0].data[..recs[0].caplen as usize], &good[..]);
    assert_eq!(recs[1].verdict, Verdict::Decided(Action::Drop(DropReason::SpoofedSrcMac)));
    assert_eq!((recs[2].dir, recs[2].verdict, recs[2].tenant), (Dir::Out, Verdict::Sent, Some(BLUE)));
    assert_eq!(&recs[2].data[..recs[2].caplen as usize], &back[..]);
    // the uplink's capture of tenant red saw none of blue's VXLAN
    assert!(on_uplink_red.pop().is_none());
    assert_eq!(on_b1.lost() + on_uplink_red.lost(), 0);
    // red's frame to a remote VTEP is seen there, as sent, with red's VNI
    let red = frames::udp4(VM1, MacAddr::BROADCAST, ip(10, 0, 0, 1), ip(10, 0, 0, 255), 1, 2, &[0; 18]);
    s.inject(R1, &red);
    s.run();
    let r = on_uplink_red.pop().expect("red's flood on the uplink");
    assert_eq!((r.dir, r.tenant, r.verdict), (Dir::Out, Some(RED), Verdict::Sent));
    // a capture whose reader is gone ends
    drop(on_b1);
    drop(on_uplink_red);
    s.inject(B1, &good);
    s.run();
    assert!(s.core.taps.is_empty());
}

/// Two forwarding cores on one shaped uplink, as xvsd runs them: each core's scheduler gets
/// its part of the link and of each tenant's guarantee from a balancer every 100 µs, by
/// where the tenant's traffic arrives. Blue arrives on core 0 only, red on both; together
/// they offer 1.6x the link. Over the measured 100 ms the link holds, each tenant gets its
/// guarantee (they add up to the link), both cores send, and every frame is accounted for.
#[test]
fn two_cores_share_one_shaped_uplink() {
    use xvs_switch::share::{Balancer, CoreShare, INTERVAL_NS};
    const LINK: u64 = 100_000_000;
    let shaped = CONFIG
        .replace("mtu = 1550\n", "mtu = 1550\nrate = \"100M\"\n")
        .replace("vni = 100\n", "vni = 100\nguarantee = \"30M\"\n")
        .replace("vni = 200\n", "vni = 200\nguarantee = \"70M\"\n");
    let t = Arc::new(Config::from_toml(&shaped).unwrap().build(None, None).unwrap());
    let mut cores: Vec<Sim> = (0..2)
        .map(|_| {
            let mut s = Sim::new(Arc::clone(&t), 4096);
            let now = s.now;
            s.core.share_uplink(2, now);
            s.core.pipeline.neigh.update(ip(192, 168, 77, 2), PEER_MAC, now);
            s
        })
        .collect();
    assert_eq!(cores[0].core.qos.as_ref().map(|q| q.link_bps()), Some(LINK / 2), "an even part to start");
    let mut bal = Balancer::new(LINK, t.tenants.len(), 2);
    for (id, tn) in t.live_tenants() {
        bal.set_tenant(u32::from(id.0), tn.qos);
    }
    let mut parts = vec![CoreShare::default(), CoreShare::default()];
    // 1,000-byte UDP frames (1,066 bytes on the wire with the outer headers)
    let blue = frames::udp4(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2), 1, 2, &[0u8; 958]);
    let red = frames::udp4(VM1, VM2, ip(10, 0, 0, 1), ip(10, 0, 0, 2), 1, 2, &[0u8; 958]);
    // offered (bits/s): blue 60M on core 0; red 50M on each core
    let offered = [[60e6, 50e6], [0.0, 50e6]];
    let mut owed = [[0.0f64; 2]; 2];
    let step = 10_000u64; // polls every 10 µs
    let wire = |f: &[u8]| f.len() as f64 + 24.0;
    let (mut sent, mut sent_by_core) = ([0u64; 2], [0u64; 2]);
    let total_frames: usize = cores.iter().map(|s| s.core.free.len()).sum();
    let (mut injected, mut refused) = (0u64, 0u64);
    for k in 0..30_000u64 {
        let measure = k >= 20_000; // the last 100 ms of 300
        for (c, s) in cores.iter_mut().enumerate() {
            for (i, (port, f)) in [(B1, &blue), (R1, &red)].into_iter().enumerate() {
                owed[c][i] += offered[c][i] * step as f64 / 8e9 / (f.len() as f64 + 24.0 - 50.0);
                while owed[c][i] >= 1.0 {
                    owed[c][i] -= 1.0;
                    if s.inject(port, f) {
                        injected += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
            s.run();
            for f in s.take(UPLINK) {
                // the VNI says whose it is (outer Ethernet 14, IPv4 20, UDP 8, VXLAN 4..7)
                let vni = u32::from_be_bytes([0, f[46], f[47], f[48]]);
                if measure {
                    sent[usize::from(vni == 200)] += wire(&f) as u64;
                    sent_by_core[c] += wire(&f) as u64;
                }
            }
            s.advance(step);
        }
        if (k * step).is_multiple_of(INTERVAL_NS) {
            let now = cores[0].now;
            let demand: Vec<Vec<_>> =
                cores.iter_mut().map(|s| s.core.sample_demand().map(<[_]>::to_vec).unwrap_or_default()).collect();
            bal.rebalance(&demand, now, &mut parts);
            for (s, p) in cores.iter_mut().zip(&parts) {
                s.core.apply_share(p, now);
            }
        }
    }
    let secs = 0.1;
    let rate = |b: u64| b as f64 * 8.0 / secs;
    let link_parts: u64 = cores.iter().map(|s| s.core.qos.as_ref().unwrap().link_bps()).sum();
    assert!(link_parts.abs_diff(LINK) <= LINK / 100, "the cores' parts {link_parts} add up to the link");
    let (b, r) = (rate(sent[0]), rate(sent[1]));
    eprintln!("blue {:.2} red {:.2} Mbit/s, by core {sent_by_core:?}, parts {link_parts}", b / 1e6, r / 1e6);
    assert!(b + r <= 1.01 * LINK as f64 && b + r >= 0.95 * LINK as f64, "link: {:.1} Mbit/s", (b + r) / 1e6);
    assert!((0.97 * 30e6..=1.05 * 30e6).contains(&b), "blue {:.1} Mbit/s, guaranteed 30", b / 1e6);
    assert!(r >= 0.97 * 70e6, "red {:.1} Mbit/s, guaranteed 70", r / 1e6);
    assert!(sent_by_core.iter().all(|&x| x > 0), "both cores sent: {sent_by_core:?}");
    // every frame sent, queued, dropped for a full queue or never taken in
    let queued: u64 = cores.iter().map(|s| s.core.qos.as_ref().unwrap().backlog()).sum();
    let free: usize = cores.iter().map(|s| s.core.free.len()).sum();
    assert_eq!(free + queued as usize, total_frames, "frames leaked ({injected} injected, {refused} refused)");
}
