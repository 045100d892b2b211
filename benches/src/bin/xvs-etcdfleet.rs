//! A simulated fleet against a real etcd: many hosts as lightweight watchers (one client
//! connection and one watch stream each, one watch per tenant the host carries, as xvsd
//! watches), the key schema of `docs/etcd.md` loaded with tenants and VM ports, then VM churn
//! (ports rebound to other hosts) at a fixed rate. Prints the load rate, how long every
//! update took to reach every host that carries its tenant (p50/p99/max, share under 1 s),
//! and etcd's CPU time and memory (given its pid).
//!
//!   xvs-etcdfleet --endpoint http://127.0.0.1:23790 --hosts 1000 --ports 100000 \
//!       --tenants 10000 --updates 3000 --rate 100 --etcd-pid PID

use clap::Parser;
use etcd_client::{Client, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use hdrhistogram::Histogram;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs_switch::etcd::schema::{Keys, PortBinding, TenantSpec};

#[derive(Parser, Debug)]
#[command(about = "A simulated fleet of hosts watching a real etcd")]
struct Args {
    /// etcd client URL.
    #[arg(long, default_value = "http://127.0.0.1:23790")]
    endpoint: String,
    /// Simulated hosts.
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// VM ports.
    #[arg(long, default_value_t = 100_000)]
    ports: usize,
    /// Tenants (ports spread evenly over them, each port on a random host).
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
    /// Port rebinds in the churn phase.
    #[arg(long, default_value_t = 3000)]
    updates: usize,
    /// Rebinds per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// etcd's process id, for its CPU time and memory.
    #[arg(long)]
    etcd_pid: Option<u32>,
    /// Key prefix.
    #[arg(long, default_value = "/xvsfleet")]
    prefix: String,
}

/// A tiny deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mac(i: usize) -> String {
    let b = (i as u32).to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn binding(host: usize, i: usize) -> String {
    serde_json::to_string(&PortBinding {
        host: format!("h{host}"),
        interface: format!("tap{i}"),
        mac: mac(i),
        ips: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32))],
        policer: None,
    })
    .expect("plain data")
}

/// (utime + stime in seconds, VmRSS in MiB) of a process.
fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, rss_kb / 1024.0))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(a))
}

async fn run(a: Args) -> anyhow::Result<()> {
    let keys = Keys::new(&a.prefix);
    let mut c = Client::connect([a.endpoint.as_str()], None).await?;
    c.delete(keys.root(), Some(etcd_client::DeleteOptions::new().with_prefix())).await?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // Load: tenants, ports on random hosts, the carry keys.
    let mut host_of = vec![0usize; a.ports];
    let mut carried: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); a.hosts];
    let tenant_of = |i: usize| i % a.tenants;
    let mut puts: Vec<(String, String)> = Vec::new();
    for t in 0..a.tenants {
        let spec = TenantSpec { vni: 1 + t as i64, mac_limit: None, guarantee: None, limit: None, weight: None };
        puts.push((keys.spec(&format!("t{t}")), serde_json::to_string(&spec)?));
        puts.push((keys.vni(1 + t as i64), format!("\"t{t}\"")));
    }
    for (i, h) in host_of.iter_mut().enumerate() {
        *h = rng.below(a.hosts);
        let t = tenant_of(i);
        puts.push((keys.port(&format!("t{t}"), &format!("vm{i}")), binding(*h, i)));
        if carried[*h].insert(t) {
            puts.push((keys.carry(&format!("h{h}"), &format!("t{t}")), String::new()));
        }
    }
    let t0 = Instant::now();
    let n_keys = puts.len();
    for chunk in puts.chunks(100) {
        let ops: Vec<TxnOp> = chunk.iter().map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None)).collect();
        c.txn(Txn::new().and_then(ops)).await?;
    }
    let load_s = t0.elapsed().as_secs_f64();
    let rev = c.get("x", None).await?.header().map_or(0, |h| h.revision());
    println!(
        "load: {n_keys} keys ({} tenants, {} ports, {} hosts) in {load_s:.1} s = {:.0} keys/s (transactions of 100)",
        a.tenants,
        a.ports,
        a.hosts,
        n_keys as f64 / load_s
    );
    let watch_ids: usize = carried.iter().map(BTreeSet::len).sum();
    let watching = carried.clone();

    // Watchers: one connection and stream per host, one watch per carried tenant.
    let arrivals: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::new(Mutex::new(Vec::with_capacity(a.updates * 16)));
    let t1 = Instant::now();
    let mut ready = Vec::new();
    for (h, tenants) in carried.iter().enumerate() {
        let mut wc = Client::connect([a.endpoint.as_str()], None).await?;
        let opts = || Some(WatchOptions::new().with_prefix().with_start_revision(rev + 1));
        let mut w = wc.watch(keys.carried(&format!("h{h}")), opts()).await?;
        for t in tenants {
            w.watch(keys.tenant(&format!("t{t}")), opts()).await?;
        }
        let expect = tenants.len() + 1;
        let arrivals = Arc::clone(&arrivals);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(rx);
        tokio::spawn(async move {
            let _keep = wc;
            let mut created = 0;
            let mut tx = Some(tx);
            while let Ok(Some(m)) = w.message().await {
                if m.created() {
                    created += 1;
                    if created == expect
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(());
                    }
                    continue;
                }
                let now = Instant::now();
                let mut g = arrivals.lock().unwrap();
                for e in m.events() {
                    if e.event_type() == EventType::Put
                        && let Some(kv) = e.kv()
                        && kv.key().windows(7).any(|w| w == b"/ports/")
                    {
                        g.push((kv.mod_revision(), now));
                    }
                }
            }
        });
    }
    for r in ready {
        let _ = r.await;
    }
    println!(
        "watchers: {} hosts, {watch_ids} watches (tenants carried per host: mean {:.1}), set up in {:.1} s",
        a.hosts,
        watch_ids as f64 / a.hosts as f64,
        t1.elapsed().as_secs_f64()
    );

    // Churn: rebind random ports to random hosts at a fixed rate.
    let before = a.etcd_pid.and_then(proc_usage);
    let mut sent: HashMap<i64, (Instant, usize)> = HashMap::new();
    let gap = Duration::from_secs_f64(1.0 / f64::from(a.rate.max(1)));
    let start = Instant::now();
    let mut fanout_total = 0usize;
    for u in 0..a.updates {
        let due = start + gap * u as u32;
        tokio::time::sleep_until(due.into()).await;
        let i = rng.below(a.ports);
        let (t, h) = (tenant_of(i), rng.below(a.hosts));
        let mut ops = vec![TxnOp::put(keys.port(&format!("t{t}"), &format!("vm{i}")), binding(h, i), None)];
        let new_carrier = carried[h].insert(t);
        if new_carrier {
            ops.push(TxnOp::put(keys.carry(&format!("h{h}"), &format!("t{t}")), "", Some(PutOptions::new())));
        }
        host_of[i] = h;
        let t_send = Instant::now();
        let r = c.txn(Txn::new().and_then(ops)).await?;
        let rev = r.header().map_or(0, |h| h.revision());
        // Every host watching the tenant gets it (a new carrier would read the tenant when
        // its carry key arrives; the simulated hosts keep their first watches).
        let fanout = watching.iter().filter(|s| s.contains(&t)).count();
        fanout_total += fanout;
        sent.insert(rev, (t_send, fanout));
    }
    let churn_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = a.etcd_pid.and_then(proc_usage);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let got = arrivals.lock().unwrap().clone();
    let mut under_1s = 0u64;
    let mut delivered = 0u64;
    // Per update: when the last watching host had it (a moved VM's blackout, as far as the
    // store goes), counted only for updates every watching host got.
    let mut last: HashMap<i64, (u64, usize)> = HashMap::new();
    for (rev, at) in got {
        if let Some((t, _)) = sent.get(&rev) {
            let us = at.saturating_duration_since(*t).as_micros().max(1) as u64;
            hist.record(us.min(60_000_000))?;
            delivered += 1;
            if us < 1_000_000 {
                under_1s += 1;
            }
            let e = last.entry(rev).or_insert((0, 0));
            *e = (e.0.max(us), e.1 + 1);
        }
    }
    let mut every = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for (rev, (us, n)) in &last {
        if sent.get(rev).is_some_and(|(_, f)| *f == *n) {
            every.record((*us).min(60_000_000))?;
        }
    }
    println!(
        "churn: {} rebinds in {churn_s:.1} s ({:.0}/s), {fanout_total} deliveries expected, {delivered} seen",
        a.updates,
        a.updates as f64 / churn_s
    );
    println!(
        "propagation (write sent -> event at a watching host): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {:.2}% under 1 s",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        100.0 * under_1s as f64 / fanout_total.max(1) as f64
    );
    println!(
        "per rebind, until every watching host had it (the store's part of a VM move's blackout): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} rebinds",
        every.value_at_quantile(0.5) as f64 / 1000.0,
        every.value_at_quantile(0.99) as f64 / 1000.0,
        every.max() as f64 / 1000.0,
        every.len()
    );
    if let (Some((c0, _)), Some((c1, rss))) = (before, after) {
        println!(
            "etcd: {:.2} CPU-seconds during churn ({:.0}% of one core), RSS {rss:.0} MiB",
            c1 - c0,
            100.0 * (c1 - c0) / (churn_s + 3.0)
        );
    }
    c.delete(keys.root(), Some(etcd_client::DeleteOptions::new().with_prefix())).await?;
    Ok(())
}
