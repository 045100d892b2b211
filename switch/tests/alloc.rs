//! Zero heap allocations per batch in steady state, proven with a counting global allocator.
#![expect(unsafe_code, reason = "a global allocator is unsafe to implement")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use xvs_switch::config::Config;
use xvs_switch::frames;
use xvs_switch::port::Port;
use xvs_switch::sim::Sim;
use xvs_switch::tables::UPLINK;
use xvs_switch::types::PortId;
use xvs_switch::wire::MacAddr;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONFIG: &str = r#"
[uplink]
interface = "up0"
vtep_ip = "192.168.77.1/24"
mac = "02:00:00:00:ff:01"

[[tenant]]
name = "blue"
vni = 100
vteps = ["192.168.77.2", "192.168.77.3"]
fdb = [{ mac = "02:00:00:00:00:02", vtep = "192.168.77.2" }]

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
"#;

#[test]
fn steady_state_batches_do_not_allocate() {
    let t = Config::from_toml(CONFIG).unwrap().build(None, None).unwrap();
    let mut s = Sim::new(Arc::new(t), 4096);
    let now = s.now;
    s.core.pipeline.neigh.update(Ipv4Addr::new(192, 168, 77, 2), MacAddr([2, 0, 0, 0, 0xff, 2]), now);
    s.core.pipeline.neigh.update(Ipv4Addr::new(192, 168, 77, 3), MacAddr([2, 0, 0, 0, 0xff, 3]), now);
    let vm1 = MacAddr([2, 0, 0, 0, 0, 1]);
    let ip = |d| Ipv4Addr::new(10, 0, 0, d);
    let underlay = s.core.pipeline.tables().underlay.clone();
    // every path: encap, local, flood (local + head-end), decap with learning, ARP, drops
    let workload: Vec<(PortId, Vec<u8>)> = vec![
        (PortId(1), frames::udp4_min(vm1, MacAddr([2, 0, 0, 0, 0, 2]), ip(1), ip(2))),
        (PortId(1), frames::udp4_min(vm1, MacAddr([2, 0, 0, 0, 0, 3]), ip(1), ip(3))),
        (PortId(1), frames::udp4_min(vm1, MacAddr::BROADCAST, ip(1), ip(255))),
        (PortId(1), frames::arp_request(vm1, ip(1), ip(3))),
        (PortId(1), frames::udp4_min(MacAddr([2, 0, 0, 0, 0, 9]), MacAddr::BROADCAST, ip(1), ip(3))),
        (
            UPLINK,
            frames::vxlan4(
                &underlay,
                MacAddr([2, 0, 0, 0, 0xff, 2]),
                Ipv4Addr::new(192, 168, 77, 2),
                100,
                &frames::udp4_min(MacAddr([2, 0, 0, 0, 0, 0x20]), vm1, ip(20), ip(1)),
            ),
        ),
        (
            UPLINK,
            frames::vxlan4(
                &underlay,
                MacAddr([2, 0, 0, 0, 0xff, 2]),
                Ipv4Addr::new(192, 168, 77, 2),
                999,
                &frames::udp4_min(MacAddr([2, 0, 0, 0, 0, 0x20]), vm1, ip(20), ip(1)),
            ),
        ),
    ];
    let round = |s: &mut Sim| {
        for _ in 0..8 {
            for (p, f) in &workload {
                assert!(s.inject(*p, f));
            }
        }
        s.run();
        for p in 0..3u16 {
            let port = s.core.ports[p as usize].as_mut().unwrap();
            port.discard_tx();
            port.reclaim(&mut s.core.free);
        }
    };
    for _ in 0..10 {
        round(&mut s);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..100 {
        round(&mut s);
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    let batches = s.core.pipeline.stats.batches;
    assert!(batches > 100, "batches ran: {batches}");
    assert_eq!(after - before, 0, "heap allocations in 100 steady-state rounds");
    assert_eq!(s.core.free.len(), 4096);
}
