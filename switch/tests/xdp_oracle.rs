//! The isolation oracle for both paths: the XDP programs, run by the kernel on each frame
//! with `BPF_PROG_TEST_RUN`, against the pipeline (the in-memory switch) on the same frame
//! and tables. Whenever the fast path forwards a frame, the pipeline must deliver exactly the
//! same bytes to the same one port; whenever the XDP program drops one, the pipeline must drop
//! it too for the same reason; everything else goes to the core, which the pipeline is.
//! Tables have tenants with overlapping MACs, IPs and VTEPs and static remote entries.
//! Needs root (loading BPF programs); fails saying so without it.

use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::sync::Arc;
use xvs_common::Counter;
use xvs_switch::config::Config;
use xvs_switch::fastpath::FastView;
use xvs_switch::frames;
use xvs_switch::io::xdp::{Caps, Role, XdpObject};
use xvs_switch::pipeline::DropReason;
use xvs_switch::sim::Sim;
use xvs_switch::tables::{PortKind, Tables, UPLINK};
use xvs_switch::types::PortId;
use xvs_switch::wire::MacAddr;

mod common;
use common::{MACS, VNIS, VTEPS, arb_tables, mac_of, vm_ip};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

#[derive(Debug, Clone)]
enum Inject {
    /// A frame from a VM port (by index among ports), one byte maybe changed.
    Vm { port: usize, dst: usize, kind: u8, junk: Vec<u8>, tweak: Option<(usize, u8)> },
    /// A VXLAN frame on the uplink, one byte maybe changed.
    Vxlan { vni: usize, vtep: usize, src: usize, dst: usize, flags: u8, tweak: Option<(usize, u8)>, pad: usize },
    /// Random bytes on any port.
    Junk { port: usize, bytes: Vec<u8> },
}

fn arb_inject() -> impl Strategy<Value = Inject> {
    let tweak = proptest::option::weighted(0.3, (0usize..64, any::<u8>()));
    prop_oneof![
        // Mostly frames the fast path is for (to remote MACs 4..7, from them to local MACs
        // 0..4, from listed VTEPs), and everything else too.
        3 => (0usize..16, prop_oneof![2 => 4usize..7, 1 => 0usize..8], prop_oneof![2 => Just(0u8), 1 => 0u8..5],
            proptest::collection::vec(any::<u8>(), 0..80), tweak.clone())
            .prop_map(|(port, dst, kind, junk, tweak)| Inject::Vm { port, dst, kind, junk, tweak }),
        3 => (prop_oneof![3 => 0usize..3, 1 => 0usize..6], prop_oneof![3 => 0usize..3, 1 => 0usize..4],
            prop_oneof![2 => 4usize..7, 1 => 0usize..8], prop_oneof![2 => 0usize..4, 1 => 0usize..8],
            prop_oneof![3 => Just(0x08u8), 1 => any::<u8>()], tweak, 0usize..3)
            .prop_map(|(vni, vtep, src, dst, flags, tweak, pad)| Inject::Vxlan { vni, vtep, src, dst, flags, tweak, pad }),
        1 => (0usize..16, proptest::collection::vec(any::<u8>(), 0..120))
            .prop_map(|(port, bytes)| Inject::Junk { port, bytes }),
    ]
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the XDP oracle loads BPF programs and runs them (BPF_PROG_TEST_RUN): run the tests as root"
    );
}

fn neigh_mac(v: Ipv4Addr) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0xee, v.octets()[3]])
}

/// The program object with `t`'s ports stood in and its fast-path view written.
fn object_for(t: &Tables) -> Arc<XdpObject> {
    let obj = XdpObject::load().expect("loading the XDP programs (needs root and BPF)");
    obj.stand_in(UPLINK, Role::Uplink { vtep_ip: t.underlay.vtep_ip, udp_port: 4789 }, Caps { from: false, to: true })
        .unwrap();
    for (id, p) in t.live_ports() {
        if matches!(p.kind, PortKind::Vm { .. }) {
            obj.stand_in(id, Role::Vm, Caps { from: true, to: true }).unwrap();
        }
    }
    let view = FastView::derive(t, true, &Default::default());
    let max_inner = xvs_switch::pipeline::EncapTemplate::new(&t.underlay).max_inner as u16;
    obj.set_underlay(t.underlay.mac, t.underlay.ttl, max_inner).unwrap();
    obj.write_view(&view).unwrap();
    for v in VTEPS {
        obj.set_neighbor(v, neigh_mac(v));
    }
    obj
}

/// What the XDP program did with one frame.
#[derive(Debug, PartialEq, Eq)]
enum Xdp {
    /// Forwarded by the fast path out of this port, these bytes.
    Fast(PortId, Vec<u8>),
    /// Handed to the core.
    Core,
    /// Passed to the host's stack (not overlay traffic).
    Pass,
    /// Dropped as too short for VXLAN.
    Malformed,
    /// Dropped as an IP fragment.
    Fragment,
}

fn counters(obj: &XdpObject, t: &Tables) -> Vec<(PortId, [u64; Counter::COUNT as usize])> {
    t.live_ports().map(|(id, _)| (id, obj.counters(id))).collect()
}

fn run_xdp(obj: &XdpObject, t: &Tables, ingress: PortId, frame: &[u8]) -> Xdp {
    let before = counters(obj, t);
    let (rc, out) = obj.run_on(ingress, frame).expect("BPF_PROG_TEST_RUN");
    let after = counters(obj, t);
    let grew = |c: Counter| -> Vec<PortId> {
        before.iter().zip(&after).filter(|(b, a)| a.1[c as usize] > b.1[c as usize]).map(|(b, _)| b.0).collect()
    };
    let (enc, dec) = (grew(Counter::FastEncapPackets), grew(Counter::FastDecapPackets));
    assert!(grew(Counter::FastRedirectFailed).is_empty(), "a fast-path redirect failed");
    match rc {
        XDP_REDIRECT if !enc.is_empty() => {
            assert_eq!(enc, vec![ingress], "encapsulation counted on the ingress port");
            Xdp::Fast(UPLINK, out)
        }
        XDP_REDIRECT if !dec.is_empty() => {
            assert_eq!(dec.len(), 1);
            Xdp::Fast(dec[0], out)
        }
        // No socket is registered in a test run: the core's path ends in "no socket".
        XDP_PASS if !grew(Counter::UplinkNoSocket).is_empty() => Xdp::Core,
        XDP_DROP if !grew(Counter::VmNoSocket).is_empty() => Xdp::Core,
        XDP_PASS if !grew(Counter::UplinkPassed).is_empty() => Xdp::Pass,
        XDP_DROP if !grew(Counter::UplinkMalformedVxlan).is_empty() => Xdp::Malformed,
        XDP_DROP if !grew(Counter::UplinkOuterFragment).is_empty() => Xdp::Fragment,
        other => panic!("unexpected XDP verdict {other} on port {ingress:?} for {}", hex::encode(frame)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_path_decides_every_frame_as_the_pipeline_does(
        tables in arb_tables(true),
        injects in proptest::collection::vec(arb_inject(), 1..48),
    ) {
        require_root();
        let t = Arc::new(tables);
        let obj = object_for(&t);
        let mut s = Sim::new(Arc::clone(&t), 512);
        let now = s.now;
        for v in VTEPS {
            s.core.pipeline.neigh.update(v, neigh_mac(v), now);
        }
        let nports = t.ports.len();
        let mut fast = 0;
        for inj in injects {
            let (ingress, bytes) = match inj {
                Inject::Vm { port, dst, kind, junk, tweak } => {
                    let p = PortId((1 + port % (nports - 1).max(1)) as u16);
                    let Some(PortKind::Vm { mac, ipv4, .. }) = t.port(p).map(|p| &p.kind) else { continue };
                    let src_ip = ipv4[0];
                    let mut f = match kind {
                        0 => frames::udp4_min(*mac, mac_of(dst), src_ip, vm_ip(dst)),
                        1 => frames::arp_request(*mac, src_ip, vm_ip(dst)),
                        2 => frames::udp4(*mac, mac_of(dst), src_ip, vm_ip(dst), 1, 2, &junk),
                        3 => frames::udp4(*mac, mac_of(dst), vm_ip(dst + 1), vm_ip(dst), 1, 2, &junk),
                        _ => frames::udp4_min(MACS[dst % 4], mac_of(dst), src_ip, vm_ip(dst)),
                    };
                    if let Some((i, b)) = tweak && i < f.len() {
                        f[i] = b;
                    }
                    (p, f)
                }
                Inject::Vxlan { vni, vtep, src, dst, flags, tweak, pad } => {
                    let vni_v = if vni < VNIS.len() { VNIS[vni] } else { 777 };
                    let src_vtep = if vtep < VTEPS.len() { VTEPS[vtep] } else { Ipv4Addr::new(10, 9, 9, 9) };
                    let inner = frames::udp4_min(mac_of(src), mac_of(dst), vm_ip(src), vm_ip(dst));
                    let mut f = frames::vxlan4(&t.underlay, MacAddr([2, 0, 0, 0, 0xee, 2]), src_vtep, vni_v, &inner);
                    f[42] = flags;
                    if let Some((i, b)) = tweak && i < f.len() {
                        f[i] = b;
                    }
                    f.extend(std::iter::repeat_n(0u8, pad * 3)); // Ethernet padding after the datagram
                    (UPLINK, f)
                }
                Inject::Junk { port, bytes } => (PortId((port % nports) as u16), bytes),
            };
            // An interface never hands XDP less than an Ethernet header (nor does a test run).
            if t.port(ingress).is_none() || bytes.len() < 14 {
                continue;
            }
            let xdp = run_xdp(&obj, &t, ingress, &bytes);
            let drops_before = s.core.pipeline.stats.ports.iter().map(|c| c.drops).collect::<Vec<_>>();
            s.inject(ingress, &bytes);
            s.run();
            let mut outs: Vec<(PortId, Vec<u8>)> = Vec::new();
            for p in 0..nports {
                for out in s.take(PortId(p as u16)) {
                    outs.push((PortId(p as u16), out));
                }
            }
            let new_drops: Vec<DropReason> = DropReason::ALL
                .iter()
                .copied()
                .filter(|r| {
                    s.core.pipeline.stats.ports.iter().zip(&drops_before).any(|(c, b)| c.drops[*r as usize] > b[*r as usize])
                })
                .collect();
            match xdp {
                Xdp::Fast(port, out) => {
                    fast += 1;
                    prop_assert_eq!(
                        outs, vec![(port, out)],
                        "the fast path forwarded a frame the pipeline decided otherwise: {}", hex::encode(&bytes)
                    );
                    prop_assert!(new_drops.is_empty(), "the pipeline dropped what the fast path forwarded");
                }
                Xdp::Malformed => {
                    prop_assert!(outs.is_empty(), "XDP dropped a frame the pipeline forwarded");
                    prop_assert_eq!(new_drops, vec![DropReason::MalformedVxlan], "XDP dropped it as too short for VXLAN");
                }
                Xdp::Fragment => {
                    prop_assert!(outs.is_empty(), "XDP dropped a frame the pipeline forwarded");
                    prop_assert_eq!(new_drops, vec![DropReason::OuterFragment], "XDP dropped it as a fragment");
                }
                Xdp::Pass => {
                    // Not overlay traffic for this VTEP: the pipeline would not call it VXLAN for us.
                    prop_assert!(outs.iter().all(|(p, _)| *p == UPLINK), "passed to the host a frame the pipeline delivered to a VM");
                }
                Xdp::Core => {}
            }
        }
        let _ = fast;
    }
}

/// The fast path takes the frames it is for: a table with one tenant, a static remote MAC and
/// a local VM; both directions go through XDP with the pipeline's bytes.
#[test]
fn the_fast_path_takes_known_unicast_both_ways() {
    require_root();
    let text = r#"
[uplink]
interface = "up"
vtep_ip = "192.168.77.1/24"
mac = "02:00:00:00:ff:01"
[[tenant]]
name = "blue"
vni = 100
vteps = ["192.168.77.2"]
fdb = [{ mac = "02:00:00:00:00:02", vtep = "192.168.77.2" }]
[[tenant]]
name = "red"
vni = 200
vteps = ["192.168.77.2"]
[[port]]
interface = "p1"
tenant = "blue"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
[[port]]
interface = "p3"
tenant = "red"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
"#;
    let c = Config::from_toml(text).unwrap();
    let t = Arc::new(c.build(None, Some(1600)).unwrap());
    let obj = object_for(&t);
    let (p1, p3) = (t.port_by_name("p1").unwrap(), t.port_by_name("p3").unwrap());
    let (m1, m2) = (MACS[0], MACS[1]);
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let mut s = Sim::new(Arc::clone(&t), 64);
    let now = s.now;
    s.core.pipeline.neigh.update(VTEPS[0], neigh_mac(VTEPS[0]), now);

    // blue: VM -> remote, encapsulated in XDP exactly as the core does it
    let f = frames::udp4(m1, m2, a, b, 1234, 80, &[7u8; 100]);
    let Xdp::Fast(port, bytes) = run_xdp(&obj, &t, p1, &f) else { panic!("not fast") };
    s.inject(p1, &f);
    s.run();
    assert_eq!((port, s.take(UPLINK)), (UPLINK, vec![bytes.clone()]));
    // remote -> blue VM: decapsulated in XDP
    let inner = frames::udp4(m2, m1, b, a, 80, 1234, &[9u8; 100]);
    let v = frames::vxlan4(&t.underlay, neigh_mac(VTEPS[0]), VTEPS[0], 100, &inner);
    assert_eq!(run_xdp(&obj, &t, UPLINK, &v), Xdp::Fast(p1, inner.clone()));
    // red has no static entry for that MAC: its frames go to the core, and so does red's VNI
    // from the same VTEP with the same MACs (tenant in every key)
    let f3 = frames::udp4(m1, m2, a, b, 1234, 80, &[7u8; 100]);
    assert_eq!(run_xdp(&obj, &t, p3, &f3), Xdp::Core);
    let v3 = frames::vxlan4(&t.underlay, neigh_mac(VTEPS[0]), VTEPS[0], 200, &inner);
    assert_eq!(run_xdp(&obj, &t, UPLINK, &v3), Xdp::Core);
    // spoofed source IP, broadcast, an unlisted VTEP: the core
    let spoof = frames::udp4(m1, m2, Ipv4Addr::new(10, 0, 0, 9), b, 1, 2, &[0u8; 18]);
    assert_eq!(run_xdp(&obj, &t, p1, &spoof), Xdp::Core);
    let bcast = frames::udp4(m1, MacAddr::BROADCAST, a, b, 1, 2, &[0u8; 18]);
    assert_eq!(run_xdp(&obj, &t, p1, &bcast), Xdp::Core);
    let stranger = frames::vxlan4(&t.underlay, neigh_mac(VTEPS[1]), VTEPS[1], 100, &inner);
    assert_eq!(run_xdp(&obj, &t, UPLINK, &stranger), Xdp::Core);
    // with the fast path off, everything goes to the core
    obj.write_view(&FastView::default()).unwrap();
    assert_eq!(run_xdp(&obj, &t, p1, &f), Xdp::Core);
    assert_eq!(run_xdp(&obj, &t, UPLINK, &v), Xdp::Core);
}
