//! Scheduler cost per packet (enqueue + dequeue) with 10, 1,000 and 100,000 backlogged
//! tenants, each with a guarantee, sharing a 100 Gbit/s link. Time is simulated: the clock
//! advances to when the link is free, so the measured cost is the scheduler's alone.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use xvs_switch::port::Desc;
use xvs_switch::qos::{Scheduler, TenantQos};

const BATCH: u64 = 1024;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("qos");
    g.throughput(Throughput::Elements(BATCH));
    for tenants in [10usize, 1_000, 100_000] {
        let link = 100_000_000_000u64;
        let mut s = Scheduler::new(link, tenants, tenants, 8);
        for t in 0..tenants {
            let qos = TenantQos { guarantee: link / 2 / tenants as u64, limit: None, weight: 1 + (t as u32 % 4) };
            s.set_tenant(t as u32, qos, 0);
        }
        let mut now = 0u64;
        let mut next = 0usize;
        // Frame sizes per tenant, computed once: the loop below should time the scheduler,
        // not a division of its own.
        let lens: Vec<u32> = (0..tenants).map(|t| 60 + (t as u32 % 1400)).collect();
        // fill every queue halfway
        for t in 0..tenants {
            for k in 0..4 {
                let _ = s.enqueue(t as u32, t as u32, Desc { id: k, len: 60 + (t as u32 % 1400) }, now);
            }
        }
        g.bench_function(BenchmarkId::new("enqueue_dequeue", tenants), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    // one frame in (round robin over tenants), one frame out
                    let t = next;
                    next = if next + 1 == tenants { 0 } else { next + 1 };
                    let _ = s.enqueue(t as u32, t as u32, Desc { id: 1, len: lens[t] }, now);
                    now = now.max(s.next_send_at());
                    black_box(s.dequeue(now));
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
