//! Scheduler cost per packet (enqueue + dequeue) with 10, 1,000 and 100,000 backlogged
//! tenants, each with a guarantee, sharing a 100 Gbit/s link. Time is simulated: the clock
//! advances with the link, so the measured cost is the scheduler's alone.
//!
//! The scheduler has room for 32,768 frames, the frame memory of one of xvsd's forwarding
//! cores (all it can ever queue); each tenant starts with up to 16 frames queued, as far as
//! half of that room goes (none at 100,000 tenants). `qos_deep_64` gives the scheduler room
//! for every tenant to keep 16 frames queued (1.6 million frames at 100,000 tenants), more
//! than a core can hold, to show what a backlog far beyond the caches costs.
//!
//! Frame sizes are the same at every tenant count, so only the number of tenants varies:
//! either all 64 bytes (on the wire, with FCS) or the simple IMIX (seven 64-byte, four
//! 594-byte and one 1518-byte frame in every twelve). Two arrival patterns:
//! * `qos_burst_*`: what the forwarding core does. Each poll, one VM port's receive batch
//!   (32 frames of one tenant, tenants in turn) is queued with `enqueue_burst`, and what the
//!   link can take since the previous poll is released with `dequeue_burst`.
//! * `qos_interleaved_imix`: the worst case for caches. One frame in (each from the next
//!   tenant), one frame out, so with many tenants every frame touches two cold tenants.
//! * `qos_cores_64`: 1, 2, 4 and 8 cores on one uplink, each with its own scheduler, its part
//!   of the link following its demand every 100 µs (see `cores_64`); `qos_rebalance`: one
//!   such rebalance with every tenant active.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use xvs_switch::port::Desc;
use xvs_switch::qos::{Scheduler, TenantQos, WIRE_OVERHEAD};
use xvs_switch::share::{self, Balancer, CoreMeter, CoreShare, Demand};

const LINK: u64 = 100_000_000_000;
const SIZES: [usize; 3] = [10, 1_000, 100_000];
/// Frames one of xvsd's forwarding cores has (its UMEM), so all it can queue.
const CORE_FRAMES: usize = xvs_switch::io::afxdp::DEFAULT_UMEM_FRAMES as usize;

/// Frame data lengths (without FCS) of the simple IMIX, in the order frames are generated.
const IMIX: [u32; 12] = [60, 590, 60, 60, 590, 60, 1514, 60, 590, 60, 60, 590];

/// A scheduler with `tenants` tenants (one flow each) and room for `frames` frames,
/// guarantees adding up to half the link, weights 1..4, and up to `fill` frames queued per
/// tenant (as many as half the room allows).
fn scheduler(tenants: usize, queue: usize, frames: usize, fill: u32, sizes: &[u32]) -> Scheduler {
    // as xvsd allocates it: the large tables on huge pages
    let mut s = Scheduler::with_advice(LINK, tenants, tenants, queue, frames, xvs_switch::io::advise_huge_pages);
    let fill = fill.min((frames / 2 / tenants) as u32);
    for t in 0..tenants {
        let qos = TenantQos { guarantee: LINK / 2 / tenants as u64, limit: None, weight: 1 + (t as u32 % 4) };
        s.set_tenant(t as u32, qos, 0);
    }
    for t in 0..tenants {
        for k in 0..fill {
            let _ = s.enqueue(t as u32, t as u32, Desc::new(k, sizes[k as usize % sizes.len()] as usize), 0);
        }
    }
    s
}

fn burst(c: &mut Criterion, name: &str, sizes: &[u32], frames: impl Fn(usize) -> usize) {
    const BURST: usize = 32;
    const POLLS: usize = 32;
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements((BURST * POLLS) as u64));
    // Every burst carries the same frames: the sizes in turn.
    let batch: Vec<Desc> =
        (0..BURST as u32).map(|id| Desc::new(id, sizes[id as usize % sizes.len()] as usize)).collect();
    let wire: u64 = batch.iter().map(|d| u64::from(d.len) + WIRE_OVERHEAD).sum();
    // The link time of one burst: the clock moves on by that much each poll.
    let burst_ns = (wire as f64 * 8e9 / LINK as f64) as u64;
    for tenants in SIZES {
        let mut s = scheduler(tenants, 64, frames(tenants), 16, sizes);
        let mut meta = vec![(0u32, 0u32); BURST];
        let mut out = Vec::with_capacity(4 * BURST);
        let mut now = 0u64;
        let mut next = 0usize;
        let (mut queued, mut sent, mut refused) = (0u64, 0u64, 0u64);
        g.bench_function(BenchmarkId::new("enqueue_dequeue", tenants), |b| {
            b.iter(|| {
                for _ in 0..POLLS {
                    let t = next as u32;
                    next = if next + 1 == tenants { 0 } else { next + 1 };
                    meta.fill((t, t));
                    s.enqueue_burst(&batch, &meta, now, |_, _, _| refused += 1);
                    queued += BURST as u64;
                    now = (now + burst_ns).max(s.next_send_at());
                    out.clear();
                    sent += s.dequeue_burst(now, &mut out, 4 * BURST) as u64;
                    black_box(&out);
                }
            })
        });
        // The figure is only the steady-state cost if what goes in comes out.
        println!(
            "{name}/{tenants}: queued {queued}, released {sent} ({:.2} %), refused {refused}, backlog {}",
            100.0 * sent as f64 / queued.max(1) as f64,
            s.backlog()
        );
    }
    g.finish();
}

fn burst_64(c: &mut Criterion) {
    burst(c, "qos_burst_64", &[60], |_| CORE_FRAMES);
}

fn burst_imix(c: &mut Criterion) {
    burst(c, "qos_burst_imix", &IMIX, |_| CORE_FRAMES);
}

fn deep_64(c: &mut Criterion) {
    burst(c, "qos_deep_64", &[60], |tenants| 2 * 16 * tenants + 4096);
}

fn interleaved(c: &mut Criterion) {
    const N: u64 = 1024;
    let mut g = c.benchmark_group("qos_interleaved_imix");
    g.throughput(Throughput::Elements(N));
    for tenants in SIZES {
        let mut s = scheduler(tenants, 8, CORE_FRAMES, 4, &IMIX);
        let mut now = 0u64;
        let mut next = 0usize;
        let mut k = 0usize;
        g.bench_function(BenchmarkId::new("enqueue_dequeue", tenants), |b| {
            b.iter(|| {
                for _ in 0..N {
                    // one frame in (round robin over tenants), one frame out
                    let t = next;
                    next = if next + 1 == tenants { 0 } else { next + 1 };
                    k = if k + 1 == IMIX.len() { 0 } else { k + 1 };
                    let _ = s.enqueue(t as u32, t as u32, Desc::new(1, IMIX[k] as usize), now);
                    now = now.max(s.next_send_at());
                    black_box(s.dequeue(now));
                }
            })
        });
    }
    g.finish();
}

/// Several cores on one uplink, as xvsd runs them: each core has its own scheduler on its
/// part of the link, meters what it offers it per tenant (`CoreMeter::offer`, per frame),
/// and every 100 µs of link time the cores sample their demand and one balancer gives each
/// core its part of the link and of every tenant's rates (`share`). Each poll, every core
/// queues one VM port's batch (32 frames of the next tenant in turn: every tenant's traffic
/// is spread over every core, the balancer's worst case) and releases what its part of the
/// link can take. The figure is per frame per core: the cores' work (run one after another
/// here) over the frames they all handled, sampling and rebalancing included.
fn cores_64(c: &mut Criterion) {
    const BURST: usize = 32;
    const POLLS: usize = 32;
    let mut g = c.benchmark_group("qos_cores_64");
    for cores in [1usize, 2, 4, 8] {
        g.throughput(Throughput::Elements((BURST * POLLS * cores) as u64));
        for tenants in SIZES {
            let part = LINK / cores as u64;
            let mut scheds: Vec<Scheduler> = (0..cores)
                .map(|_| {
                    let mut s = Scheduler::with_advice(
                        part,
                        tenants,
                        tenants,
                        64,
                        CORE_FRAMES,
                        xvs_switch::io::advise_huge_pages,
                    );
                    for t in 0..tenants {
                        let q =
                            TenantQos { guarantee: LINK / 2 / tenants as u64, limit: None, weight: 1 + (t as u32 % 4) };
                        s.set_tenant(t as u32, if cores > 1 { share::absent(q) } else { q }, 0);
                    }
                    s
                })
                .collect();
            let mut meters: Vec<CoreMeter> = (0..cores).map(|_| CoreMeter::new(tenants)).collect();
            let mut bal = Balancer::new(LINK, tenants, cores);
            for t in 0..tenants {
                bal.set_tenant(
                    t as u32,
                    TenantQos { guarantee: LINK / 2 / tenants as u64, limit: None, weight: 1 + (t as u32 % 4) },
                );
            }
            let mut parts = vec![CoreShare::default(); cores];
            let mut demand: Vec<Vec<Demand>> = vec![Vec::with_capacity(tenants); cores];
            let batch: Vec<Desc> = (0..BURST as u32).map(|id| Desc::new(id, 60)).collect();
            let wire: u64 = batch.iter().map(|d| u64::from(d.len) + WIRE_OVERHEAD).sum();
            // the link time of one round (every core one batch)
            let round_ns = (wire as f64 * cores as f64 * 8e9 / LINK as f64) as u64;
            let mut meta = vec![(0u32, 0u32); BURST];
            let mut out = Vec::with_capacity(4 * BURST);
            let (mut now, mut next, mut next_interval) = (0u64, 0usize, share::INTERVAL_NS);
            let (mut queued, mut sent, mut rebalances) = (0u64, 0u64, 0u64);
            let id = BenchmarkId::new(format!("{cores}_cores"), tenants);
            g.bench_function(id, |b| {
                b.iter(|| {
                    for _ in 0..POLLS {
                        for (k, s) in scheds.iter_mut().enumerate() {
                            let t = next as u32;
                            next = if next + 1 == tenants { 0 } else { next + 1 };
                            meta.fill((t, t));
                            if cores > 1 {
                                for d in &batch {
                                    meters[k].offer(t, u32::from(d.len));
                                }
                            }
                            let m = &mut meters[k];
                            s.enqueue_burst(&batch, &meta, now, |d, t, _| m.refuse(t, u32::from(d.len)));
                            queued += BURST as u64;
                            out.clear();
                            sent += s.dequeue_burst(now, &mut out, 4 * BURST) as u64;
                            black_box(&out);
                        }
                        now += round_ns;
                        if cores > 1 && now >= next_interval {
                            next_interval = now + share::INTERVAL_NS;
                            for (k, s) in scheds.iter().enumerate() {
                                meters[k].sample(s);
                                demand[k].clear();
                                demand[k].extend_from_slice(&meters[k].demand);
                            }
                            bal.rebalance(&demand, now, &mut parts);
                            for (s, p) in scheds.iter_mut().zip(&parts) {
                                CoreMeter::apply(s, p, now);
                            }
                            rebalances += 1;
                        }
                    }
                })
            });
            println!(
                "qos_cores_64/{cores}/{tenants}: queued {queued}, released {sent} ({:.2} %), rebalances {rebalances}",
                100.0 * sent as f64 / queued.max(1) as f64
            );
        }
    }
    g.finish();
}

/// One rebalance (every 100 µs with several cores) with every tenant active on 2 and 8
/// cores: its cost grows with the active tenants (a sort), so it bounds how many a 100 µs
/// interval can follow.
fn rebalance(c: &mut Criterion) {
    let mut g = c.benchmark_group("qos_rebalance");
    for cores in [2usize, 8] {
        for tenants in SIZES {
            let mut bal = Balancer::new(LINK, tenants, cores);
            for t in 0..tenants {
                bal.set_tenant(
                    t as u32,
                    TenantQos { guarantee: LINK / 2 / tenants as u64, limit: None, weight: 1 + (t as u32 % 4) },
                );
            }
            // each tenant on every core, with demand that changes from interval to interval
            let mut demand: Vec<Vec<Demand>> = (0..cores)
                .map(|c| {
                    (0..tenants as u32)
                        .map(|t| Demand {
                            tenant: t,
                            arrived: 1_000 + u64::from(t) * (c as u64 + 1) % 977,
                            backlog: 0,
                            saturated: t % 3 == 0,
                        })
                        .collect()
                })
                .collect();
            let mut parts = vec![CoreShare::default(); cores];
            let mut now = 0u64;
            g.throughput(Throughput::Elements(tenants as u64));
            g.bench_function(BenchmarkId::new(format!("{cores}_cores"), tenants), |b| {
                b.iter(|| {
                    now += share::INTERVAL_NS;
                    for rows in demand.iter_mut() {
                        for d in rows.iter_mut() {
                            d.arrived = d.arrived * 7 % 2_003 + 500;
                        }
                    }
                    bal.rebalance(&demand, now, &mut parts);
                    black_box(&parts);
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(3));
    targets = burst_64, burst_imix, interleaved, deep_64, cores_64, rebalance
}
criterion_main!(benches);
