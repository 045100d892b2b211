//! What control work costs the forwarding thread, against what it used to cost, in one run:
//! on a core whose FDB holds 65,536 learned entries and whose counters cover 4,096 tenants.
//!
//! - `fdb_dump/copy` is what a `fdb show` now costs the core (copy the entries into room
//!   the control side made); `fdb_dump/render` is the rendering that moved to the control
//!   side (the core did both before).
//! - `trace/facts` is what a `trace` costs the core now (decide one frame, read one entry);
//!   `trace/explain` the explanation that moved.
//! - `publish/copy_in_place` is the core's report every 100 ms now (counters copied into
//!   the report's memory); `publish/clone` the allocating clone it made before.
//! - `age/sweep` is the aging sweep, which still runs on the core, in moments with nothing
//!   received (at most once a second, at the latest every 10 s).
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use xvs_switch::config::Config;
use xvs_switch::control::explain;
use xvs_switch::fdb::Origin;
use xvs_switch::frames;
use xvs_switch::sim::Sim;
use xvs_switch::stats::Stats;
use xvs_switch::tables::FdbDest;
use xvs_switch::types::{PortId, TenantId};
use xvs_switch::wire::MacAddr;

const ENTRIES: u32 = 65_536;
const TENANTS: usize = 4096;

const CONFIG: &str = r#"
[uplink]
interface = "up0"
vtep_ip = "192.168.77.1/24"
mac = "02:00:00:00:ff:01"
[daemon]
fdb_capacity = 65536
[[tenant]]
name = "blue"
vni = 100
mac_limit = 65536
vteps = ["192.168.77.2"]
[[port]]
interface = "b1"
tenant = "blue"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
"#;

fn remote_mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x10, b[0], b[1], b[2], b[3]])
}

fn bench(c: &mut Criterion) {
    let t = Config::from_toml(CONFIG).unwrap().build(None, None).unwrap();
    let mut s = Sim::new(Arc::new(t), 1024);
    let (now, vtep) = (s.now, Ipv4Addr::new(192, 168, 77, 2));
    s.core.pipeline.neigh.update(vtep, MacAddr([2, 0, 0, 0, 0xee, 0]), now);
    for i in 0..ENTRIES - 1 {
        let dest = FdbDest::Remote(vtep);
        s.core.pipeline.fdb.learn(TenantId(0), &remote_mac(i), dest, Origin::LearnedRemote, now, u32::MAX);
    }
    let tables = Arc::clone(s.core.pipeline.tables());

    let mut g = c.benchmark_group("fdb_dump");
    let mut buf = Vec::with_capacity(2 * ENTRIES as usize + 16);
    g.bench_function("copy", |b| b.iter(|| s.core.copy_fdb(black_box(None), &mut buf)));
    g.bench_function("render", |b| b.iter(|| black_box(explain::fdb_rows(&tables, &buf, now))));
    g.finish();

    let frame = frames::udp4_min(
        MacAddr([2, 0, 0, 0, 0, 1]),
        remote_mac(7),
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 1, 7),
    );
    let mut g = c.benchmark_group("trace");
    g.bench_function("facts", |b| b.iter(|| black_box(s.core.trace_facts(PortId(1), &frame, now))));
    let facts = s.core.trace_facts(PortId(1), &frame, now);
    g.bench_function("explain", |b| b.iter(|| black_box(explain::trace(&facts, PortId(1), &frame))));
    g.finish();

    let mut stats = Stats::default();
    stats.resize(64, TENANTS);
    let mut report = Stats::default();
    let mut g = c.benchmark_group("publish");
    g.bench_function("copy_in_place", |b| b.iter(|| report.copy_from(black_box(&stats))));
    g.bench_function("clone", |b| b.iter(|| black_box(stats.clone())));
    g.finish();

    let mut g = c.benchmark_group("age");
    // nothing is old enough: the sweep's pass over the table, every entry kept
    g.bench_function("sweep", |b| b.iter(|| black_box(s.core.pipeline.fdb.age(now + 1))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
