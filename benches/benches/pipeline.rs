//! Pipeline cost per packet on one core, in memory: local switching, encapsulation,
//! decapsulation (of minimum-size and of 1,400-byte frames) and flooding to 8 VTEPs, each
//! with 1 and with 1,000,000 FDB entries; and
//! local switching from a policed port (a policer that passes everything: the bucket's cost).
//!
//! The `capture` group is what a packet capture costs the core: local switching of 64- and
//! 1,500-byte frames with no capture, with one on another (idle) port, with one on the
//! switched port within its copy budget (the clock moves 1 µs a batch, so most of the 64
//! frames are over budget and only counted), and with every frame copied (the clock moves
//! 1 ms a batch). The capture's reader is emulated inside the loop (records given back),
//! so its cost is counted too.
//!
//! Each iteration receives a batch of 64 minimum-size frames on one port and runs a whole poll
//! of the core (receive, decide, rewrite, stage, transmit, recycle). Writing the 64 frames
//! into the frame memory is part of the measured time, so the figures are an upper bound.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use xvs_switch::capture::{RING_RECORDS, Ring, Tap};
use xvs_switch::config::Config;
use xvs_switch::fdb::Origin;
use xvs_switch::frames;
use xvs_switch::port::Port;
use xvs_switch::sim::Sim;
use xvs_switch::tables::{FdbDest, UPLINK};
use xvs_switch::types::{PortId, TenantId};
use xvs_switch::wire::MacAddr;

const BATCH: usize = 64;

fn config(vteps: usize) -> String {
    let list: Vec<String> = (0..vteps).map(|i| format!("\"192.168.77.{}\"", 2 + i)).collect();
    format!(
        r#"
[uplink]
interface = "up0"
vtep_ip = "192.168.77.1/24"
mac = "02:00:00:00:ff:01"
[daemon]
fdb_capacity = 2000000
[[tenant]]
name = "blue"
vni = 100
mac_limit = 2000000
vteps = [{}]
[[port]]
interface = "b1"
tenant = "blue"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
[[port]]
interface = "b2"
tenant = "blue"
mac = "02:00:00:00:00:02"
ips = ["10.0.0.2"]
"#,
        list.join(", ")
    )
}

fn remote_mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x10, b[0], b[1], b[2], b[3]])
}

/// A switch with `entries` learned remote MACs spread over its VTEPs.
fn switch(entries: u32, vteps: usize) -> Sim {
    switch_from(&config(vteps), entries, vteps)
}

fn switch_from(config: &str, entries: u32, vteps: usize) -> Sim {
    let t = Config::from_toml(config).unwrap().build(None, None).unwrap();
    let mut s = Sim::new(Arc::new(t), 8192);
    let now = s.now;
    for i in 0..vteps {
        s.core.pipeline.neigh.update(
            Ipv4Addr::new(192, 168, 77, 2 + i as u8),
            MacAddr([2, 0, 0, 0, 0xee, i as u8]),
            now,
        );
    }
    for i in 0..entries.saturating_sub(1) {
        let vtep = Ipv4Addr::new(192, 168, 77, 2 + (i as usize % vteps) as u8);
        s.core.pipeline.fdb.learn(
            TenantId(0),
            &remote_mac(i),
            FdbDest::Remote(vtep),
            Origin::LearnedRemote,
            now,
            u32::MAX,
        );
    }
    s
}

/// Spreads 64 frames' destinations over the table.
fn pick(i: usize, entries: u32) -> u32 {
    ((i as u64 * 2_654_435_761) % u64::from(entries.saturating_sub(1).max(1))) as u32
}

fn run(s: &mut Sim, port: PortId, batch: &[Vec<u8>]) {
    for f in batch {
        s.inject(port, f);
    }
    black_box(s.core.poll(s.now));
    for p in s.core.ports.iter_mut().flatten() {
        p.discard_tx();
        p.reclaim(&mut s.core.free);
    }
}

fn bench(c: &mut Criterion) {
    let vm1 = MacAddr([2, 0, 0, 0, 0, 1]);
    let vm2 = MacAddr([2, 0, 0, 0, 0, 2]);
    let ip1 = Ipv4Addr::new(10, 0, 0, 1);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    for entries in [1u32, 1_000_000] {
        let mut s = switch(entries, 1);
        let local: Vec<Vec<u8>> =
            (0..BATCH).map(|_| frames::udp4_min(vm1, vm2, ip1, Ipv4Addr::new(10, 0, 0, 2))).collect();
        g.bench_function(BenchmarkId::new("local", entries), |b| b.iter(|| run(&mut s, PortId(1), &local)));
        if entries == 1 {
            // b1 policed at 400 Gbit/s, the clock moving 1 µs a batch: every frame conforms
            let policed = config(1).replacen(
                "ips = [\"10.0.0.1\"]\n",
                "ips = [\"10.0.0.1\"]\npolicer = { rate = \"400G\" }\n",
                1,
            );
            let mut p = switch_from(&policed, 1, 1);
            g.bench_function("local_policed", |b| {
                b.iter(|| {
                    p.advance(1_000);
                    run(&mut p, PortId(1), &local)
                })
            });
            let dropped = p.core.pipeline.stats.ports[1].dropped();
            assert_eq!(dropped, 0, "the policer passes everything");
        }

        // encap: destinations are learned remote MACs (the 1-entry case adds one)
        if entries == 1 {
            let now = s.now;
            s.core.pipeline.fdb.learn(
                TenantId(0),
                &remote_mac(0),
                FdbDest::Remote(Ipv4Addr::new(192, 168, 77, 2)),
                Origin::LearnedRemote,
                now,
                u32::MAX,
            );
        }
        // `size`-byte frames (Ethernet header included, no FCS)
        let udp = |src, dst, s, d, size: usize| frames::udp4(src, dst, s, d, 1000, 2000, &vec![0u8; size - 42]);
        let u = s.core.pipeline.tables().underlay.clone();
        for (name, size) in [("", 60), ("_1400", 1400)] {
            let encap: Vec<Vec<u8>> = (0..BATCH)
                .map(|i| udp(vm1, remote_mac(pick(i, entries)), ip1, Ipv4Addr::new(10, 0, 1, i as u8), size))
                .collect();
            let id = BenchmarkId::new(format!("encap{name}"), entries);
            g.bench_function(id, |b| b.iter(|| run(&mut s, PortId(1), &encap)));

            // decap: inner sources are known remote MACs (refresh), destination a local VM
            let decap: Vec<Vec<u8>> = (0..BATCH)
                .map(|i| {
                    let m = remote_mac(pick(i, entries));
                    let inner = udp(m, vm1, Ipv4Addr::new(10, 0, 1, i as u8), ip1, size);
                    frames::vxlan4(&u, MacAddr([2, 0, 0, 0, 0xee, 0]), Ipv4Addr::new(192, 168, 77, 2), 100, &inner)
                })
                .collect();
            let id = BenchmarkId::new(format!("decap{name}"), entries);
            g.bench_function(id, |b| b.iter(|| run(&mut s, UPLINK, &decap)));
            let st = &s.core.pipeline.stats;
            assert_eq!(st.ports[0].dropped() + st.ports[1].dropped(), 0, "{size}-byte frames: nothing dropped");
        }

        let mut s8 = switch(entries, 8);
        let bcast: Vec<Vec<u8>> =
            (0..BATCH).map(|_| frames::udp4_min(vm1, MacAddr::BROADCAST, ip1, Ipv4Addr::new(10, 0, 0, 255))).collect();
        g.bench_function(BenchmarkId::new("flood_8_vteps", entries), |b| b.iter(|| run(&mut s8, PortId(1), &bcast)));
    }
    g.finish();

    let mut g = c.benchmark_group("capture");
    g.throughput(Throughput::Elements(BATCH as u64));
    for size in [60usize, 1500] {
        let frame = frames::udp4(vm1, vm2, ip1, Ipv4Addr::new(10, 0, 0, 2), 1000, 2000, &vec![0u8; size - 42]);
        let batch: Vec<Vec<u8>> = (0..BATCH).map(|_| frame.clone()).collect();
        let variants: [(&str, Option<PortId>, u64); 4] = [
            ("none", None, 1_000),
            ("other_port", Some(UPLINK), 1_000),
            ("this_port_budget", Some(PortId(1)), 1_000),
            ("this_port_all", Some(PortId(1)), 1_000_000),
        ];
        for (name, port, step) in variants {
            let mut s = switch(1, 1);
            let ring = Ring::new(RING_RECORDS, 4096);
            if let Some(p) = port {
                s.core.taps.push(Tap::new(p, None, Arc::clone(&ring), s.now));
            }
            g.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter(|| {
                    s.advance(step);
                    run(&mut s, PortId(1), &batch);
                    while let Some(r) = ring.pop() {
                        ring.recycle(r);
                    }
                })
            });
            let ev = &s.core.pipeline.stats.events;
            assert_eq!(ev.flooded, 0, "local switching only");
            assert_eq!(s.core.pipeline.stats.ports[1].dropped(), 0, "capture never drops a frame");
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
