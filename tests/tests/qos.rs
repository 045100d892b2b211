//! Bandwidth guarantees on the real datapath: uplink shaped by xvsd, two tenants flat out,
//! work conservation when one stops, a VM port's policer.

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xvs_systests::Bed;

/// When the core took the counters of a stats snapshot, seconds on its clock.
fn taken_at(stats: &Value) -> f64 {
    stats["core"]["at_ns"].as_u64().expect("core.at_ns") as f64 / 1e9
}

/// One scheduler counter (`field` of a tenant's QoS stats) per tenant of `tenant_ids`, from
/// a stats snapshot.
fn qos_stat(stats: &Value, tenant_ids: &[(&str, u64)], field: &str) -> Vec<u64> {
    let rows = stats["qos"][1].as_array().cloned().unwrap_or_default();
    tenant_ids
        .iter()
        .map(|(_, id)| {
            rows.iter()
                .find(|r| r["tenant"].as_u64() == Some(*id))
                .map_or(0, |r| r["stats"][field].as_u64().unwrap_or(0))
        })
        .collect()
}

/// (tenant name -> scheduler wire bytes) from a stats snapshot.
fn qos_bytes(stats: &Value, tenant_ids: &[(&str, u64)]) -> Vec<u64> {
    qos_stat(stats, tenant_ids, "bytes")
}

/// Host 1's config from `cfg` with the uplink at `rate` and blue's and red's guarantees.
fn shaped(cfg: &str, rate: &str, blue: &str, red: &str) -> String {
    cfg.replace("vtep_ip = \"192.168.77.1/24\"", &format!("vtep_ip = \"192.168.77.1/24\"\nrate = \"{rate}\""))
        .replace("vni = 100\n", &format!("vni = 100\nguarantee = \"{blue}\"\n"))
        .replace("vni = 200\n", &format!("vni = 200\nguarantee = \"{red}\"\n"))
}

/// Both tenants reach their VMs on host 2, which serve iperf3 (TCP 5201, UDP 5202).
fn serve(bed: &Bed) {
    bed.ok("vm1", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm3", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    for vm in ["vm2", "vm4"] {
        bed.ok(vm, 5, "iperf3 -s -D -p 5201; iperf3 -s -D -p 5202");
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// A tenant's senders in `vm`: `flows` TCP flows and `udp` of UDP, for `secs` seconds.
fn senders(bed: &Bed, vm: &str, flows: u32, udp: &str, secs: u32) -> Vec<Child> {
    vec![
        iperf_client(bed, vm, &format!("-p 5201 -P {flows} -t {secs}")),
        iperf_client(bed, vm, &format!("-p 5202 -u -b {udp} -t {secs}")),
    ]
}

/// Blue's and red's wire rates (bits/s) between two stats snapshots, by the core's clock.
fn rates(x: &Value, y: &Value) -> (f64, f64) {
    let ids = [("blue", 0u64), ("red", 1u64)];
    let (a, b, dt) = (qos_bytes(x, &ids), qos_bytes(y, &ids), taken_at(y) - taken_at(x));
    ((b[0] - a[0]) as f64 * 8.0 / dt, (b[1] - a[1]) as f64 * 8.0 / dt)
}

/// What both QoS tests require of blue's and red's rates with both flat out on a `link`
/// where blue is guaranteed `blue_g` and red clearly more (`q`: the scheduler's view).
fn assert_guarantees(rb: f64, rr: f64, link: f64, blue_g: f64, q: &Value) {
    let m = |x: f64| x / 1e6;
    assert!(rb + rr <= 1.03 * link, "the link's rate holds: blue + red = {:.1} Mbit/s; {q}", m(rb + rr));
    assert!(rb >= 0.8 * blue_g, "blue gets its guarantee: {:.1} Mbit/s of {:.0}; {q}", m(rb), m(blue_g));
    assert!(rb <= 1.2 * blue_g, "blue takes no more than its share from red: {:.1} Mbit/s; {q}", m(rb));
    // (on a starved CPU the link loses time and red, the larger guarantee, absorbs the loss:
    // with one core blue kept its 150 and red was seen at 179 with both queues full; with
    // two, a core that gets too little CPU to use its part leaves link time unused; an equal
    // split would give 1.0x)
    assert!(rr >= 1.1 * rb, "red, guaranteed more, gets clearly more than blue: {:.1} Mbit/s; {q}", m(rr));
}

/// The first stats snapshot of `h` taken at `from` or later (seconds on the core's clock).
fn stats_from(h: &xvs_systests::Xvsd, from: f64) -> Value {
    let mut s = h.stats();
    for _ in 0..200 {
        if taken_at(&s) >= from {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        s = h.stats();
    }
    s
}

fn iperf_client(bed: &Bed, vm: &str, args: &str) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-{vm}", bed.p),
            "sh",
            "-c",
            &format!("timeout 40 iperf3 -c 10.0.0.2 {args} >/dev/null 2>&1"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// The uplink rate of the test: 500 Mbit/s; guarantees: blue 150 Mbit/s (30%), red 350 (70%).
/// Well below what this machine forwards. The test checks behaviour with margins a correct
/// switch meets on a loaded 2-CPU machine (where the forwarding core may lose link time to
/// other processes); the precise shares are checked by the deterministic simulation
/// (switch/tests/qos_sim.rs) and measured by the benchmark.
const BLUE_G: f64 = 0.3 * LINK_MBIT * 1e6;
const LINK_MBIT: f64 = 500.0;

#[test]
fn two_tenants_get_their_guarantees_and_the_rest_is_shared() {
    let bed = Bed::up("q", "xvs");
    // Each host's forwarding core on a CPU of its own, as on two real hosts: two shaped,
    // busy cores time-sharing one CPU would measure this machine, not the scheduler.
    let cfg = shaped(&bed.config_cores(1, "0"), "500M", "150M", "350M");
    let h1 = bed.xvsd(1, &cfg);
    let _h2 = bed.xvsd(2, &bed.config(2));
    serve(&bed);
    // each tenant: 4 TCP flows plus 50 Mbit/s of UDP, all from host 1 to host 2
    let mut blue = senders(&bed, "vm1", 4, "50M", 14);
    let mut red = senders(&bed, "vm3", 4, "50M", 6);
    let ids = [("blue", 0u64), ("red", 1u64)];
    std::thread::sleep(Duration::from_secs(2));
    let s0 = h1.stats();
    std::thread::sleep(Duration::from_secs(3));
    let s1 = h1.stats();
    let t_s1 = Instant::now();
    let rate = |i: usize, x: &[u64], y: &[u64], secs: f64| (y[i] - x[i]) as f64 * 8.0 / secs;
    let (rb, rr) = rates(&s0, &s1);
    let q = h1.stats()["qos"].clone();
    eprintln!("QOS both active: blue {:.1} Mbit/s, red {:.1} Mbit/s (wire, scheduler counters)", rb / 1e6, rr / 1e6);
    assert_guarantees(rb, rr, LINK_MBIT * 1e6, BLUE_G, &q);
    // red stops: blue takes the link
    for c in &mut red {
        let _ = c.wait();
    }
    let stopped = Instant::now();
    // From 100 ms after red stopped (by the core's clock: the first snapshot taken then).
    let from = taken_at(&s1) + stopped.duration_since(t_s1).as_secs_f64() + 0.1;
    let s2 = stats_from(&h1, from);
    // Blue's rate and queue at each stats snapshot over that second, to tell where a
    // shortfall lies: a sender that stalled (queue empty) or link time lost (queue full).
    let mut series = Vec::new();
    let mut prev = s2.clone();
    let mut s3 = s2.clone();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        let s = h1.stats();
        if taken_at(&s) > taken_at(&prev) {
            series.push(format!(
                "{:.0} (queue {})",
                rate(0, &qos_bytes(&prev, &ids), &qos_bytes(&s, &ids), taken_at(&s) - taken_at(&prev)) / 1e6,
                qos_stat(&s, &ids, "backlog")[0]
            ));
            prev = s.clone();
        }
        s3 = s;
        if taken_at(&s3) - taken_at(&s2) >= 1.0 {
            break;
        }
    }
    eprintln!("QOS blue alone, Mbit/s per snapshot: {}", series.join(", "));
    let alone = rate(0, &qos_bytes(&s2, &ids), &qos_bytes(&s3, &ids), taken_at(&s3) - taken_at(&s2));
    eprintln!("QOS blue alone: {:.1} Mbit/s", alone / 1e6);
    // Work conservation: alone, blue is not held to its guarantee (a scheduler that held it
    // there would give it 150). On a quiet machine it takes most of the link; on a starved
    // one neither its senders nor the forwarding core keep up (a soak run beside two CPU
    // hogs and a second test suite measured 282 Mbit/s, its queue full at 200 Mbit/s while
    // the core was off the CPU), so the bound is 1.5x its guarantee, well clear of 1x.
    let dropped = qos_stat(&s3, &ids, "drops")[0] - qos_stat(&s2, &ids, "drops")[0];
    assert!(
        alone >= 1.5 * BLUE_G,
        "blue alone should take well past its guarantee of 150: {:.0} Mbit/s of {LINK_MBIT}, \
         {dropped} frames dropped at the scheduler; {}",
        alone / 1e6,
        s3["qos"]
    );
    for c in &mut blue {
        let _ = c.kill();
    }
    let show = bed.ctl_json(1, &["qos", "show"]);
    assert_eq!(show["link_bps"], 500_000_000u64);
    assert_eq!(show["tenants"][0]["guarantee_bps"], 150_000_000u64);

    // a live change is taken at once, and an invalid one is refused leaving the old in force
    bed.ctl_ok(1, &["tenant", "set", "red", "--guarantee", "100M", "--limit", "200M", "--weight", "2"]);
    let show = bed.ctl_json(1, &["qos", "show"]);
    assert_eq!(show["tenants"][1]["limit_bps"], 200_000_000u64);
    let (code, _, err) = bed.ctl(1, &["tenant", "set", "red", "--guarantee", "300M"]);
    assert_eq!(code, 1);
    assert!(err.contains("guarantee 300M exceeds its limit 200M"), "{err}");
    let (code, _, err) = bed.ctl(1, &["tenant", "set", "blue", "--guarantee", "950M"]);
    assert_eq!(code, 1);
    assert!(err.contains("more than the uplink rate"), "{err}");
    // a rate that rounds to 0 bit/s once meant "no limit"
    let (code, _, err) = bed.ctl(1, &["tenant", "set", "red", "--limit", "0.4"]);
    assert_eq!(code, 1);
    assert!(err.contains("\"0.4\" is less than 1 bit/s"), "{err}");
    let show = bed.ctl_json(1, &["qos", "show"]);
    assert_eq!(show["tenants"][0]["guarantee_bps"], 150_000_000u64, "old settings in force");
    assert_eq!(show["tenants"][1]["guarantee_bps"], 100_000_000u64);
    assert_eq!(show["tenants"][1]["limit_bps"], 200_000_000u64);
}

#[test]
fn a_policer_holds_a_vm_to_its_rate() {
    let bed = Bed::up("pl", "xvs");
    let cfg = bed.config(1).replacen("ips = [\"10.0.0.1\"]", "ips = [\"10.0.0.1\"]\npolicer = { rate = \"100M\" }", 1);
    let h1 = bed.xvsd(1, &cfg);
    let _h2 = bed.xvsd(2, &bed.config(2));
    bed.ok("vm1", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm2", 5, "iperf3 -s -1 -D");
    std::thread::sleep(Duration::from_millis(300));
    // 1400-byte UDP payloads: 1442-byte frames, 1466 bytes on the wire as the policer counts
    let out = bed.ok("vm1", 30, "iperf3 -c 10.0.0.2 -u -b 300M -l 1400 -t 4 -J");
    let v: Value = serde_json::from_str(&out).unwrap();
    let got = v["end"]["sum"]["bits_per_second"].as_f64().unwrap_or(0.0);
    let lost = v["end"]["sum"]["lost_percent"].as_f64().unwrap_or(0.0);
    let received = got * (100.0 - lost) / 100.0;
    let expect = 100e6 * 1400.0 / 1466.0;
    eprintln!("QOS policed VM: {:.2} Mbit/s of payload, expected {:.2}", received / 1e6, expect / 1e6);
    assert!(
        (received - expect).abs() <= 0.05 * expect,
        "policed VM delivered {:.1} Mbit/s of payload, expected {:.1}",
        received / 1e6,
        expect / 1e6
    );
    let s = h1.fresh_stats();
    assert!(xvs_systests::drops(&s, "policed") > 0, "policer drops are counted");
}

/// Each core's wire bytes sent (all tenants) from a stats snapshot's per-core scheduler view.
fn per_core_bytes(stats: &Value) -> Vec<(u64, u64)> {
    stats["qos_per_core"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let rows = c[2].as_array().cloned().unwrap_or_default();
            (c[0].as_u64().unwrap_or(0), rows.iter().map(|r| r["stats"]["bytes"].as_u64().unwrap_or(0)).sum())
        })
        .collect()
}

/// Two forwarding cores, each owning one queue of every port (the uplink's two TX queues
/// among them), shape one uplink together: each core has its own scheduler, and every 100 µs
/// their parts of the link and of each tenant's guarantee follow where the tenant's traffic
/// arrives. Eight TCP flows per tenant land on both queues of its VM port, so both cores
/// carry both tenants. Behavioural margins for a loaded 2-CPU machine (four polling cores
/// share its two CPUs here); the shares' precision is the multi-core simulation's
/// (switch/tests/qos_cores_sim.rs).
#[test]
fn two_cores_sharing_one_uplink_keep_the_guarantees() {
    const LINK: f64 = 100e6;
    const BLUE: f64 = 30e6;
    let bed = Bed::up_with_queues("qc", "xvs", 2);
    let cfg = shaped(&bed.config_cores(1, "0, 1"), "100M", "30M", "70M");
    let h1 = bed.xvsd(1, &cfg);
    let _h2 = bed.xvsd(2, &bed.config_cores(2, "0, 1"));
    serve(&bed);
    let mut blue = senders(&bed, "vm1", 8, "20M", 14);
    let mut red = senders(&bed, "vm3", 8, "20M", 6);
    std::thread::sleep(Duration::from_secs(2));
    let s0 = h1.stats();
    std::thread::sleep(Duration::from_secs(3));
    let s1 = h1.stats();
    let t_s1 = Instant::now();
    let (rb, rr) = rates(&s0, &s1);
    let dt = taken_at(&s1) - taken_at(&s0);
    let q = s1["qos_per_core"].clone();
    eprintln!("QOS 2 cores, both active: blue {:.1} Mbit/s, red {:.1} Mbit/s", rb / 1e6, rr / 1e6);
    // both cores sent, and their parts of the link add up to the link
    let (c0, c1) = (per_core_bytes(&s0), per_core_bytes(&s1));
    assert_eq!(c1.len(), 2, "each core reports its scheduler: {q}");
    for ((cpu, x), (_, y)) in c0.iter().zip(&c1) {
        eprintln!("QOS cpu {cpu}: {:.1} Mbit/s", (y - x) as f64 * 8.0 / dt / 1e6);
        assert!(y > x, "core on cpu {cpu} sent nothing on the uplink; {q}");
    }
    let parts: Vec<u64> =
        s1["per_core"].as_array().unwrap().iter().map(|c| c["qos_link_bps"].as_u64().unwrap()).collect();
    // (each core publishes its part at its own moment, so the two may come from intervals a
    // few apart, between which demand moved: they add up to the link within that)
    let sum: u64 = parts.iter().sum();
    assert!((sum as f64 - LINK).abs() <= 0.1 * LINK, "the cores' parts {parts:?} add up to the link");
    let moved: Vec<u64> =
        s1["per_core"].as_array().unwrap().iter().map(|c| c["qos_share_changes"].as_u64().unwrap()).collect();
    assert!(moved.iter().all(|&m| m > 0), "each core's part followed its demand: {moved:?}");
    assert_guarantees(rb, rr, LINK, BLUE, &q);
    // red stops: blue takes the link, on both cores
    for c in &mut red {
        let _ = c.wait();
    }
    let from = taken_at(&s1) + t_s1.elapsed().as_secs_f64() + 0.2;
    let s2 = stats_from(&h1, from);
    std::thread::sleep(Duration::from_secs(1));
    let s3 = h1.stats();
    let alone = rates(&s2, &s3).0;
    eprintln!("QOS 2 cores, blue alone: {:.1} Mbit/s", alone / 1e6);
    assert!(
        alone >= 1.5 * BLUE,
        "blue alone should take well past its guarantee of 30 on two cores: {:.1} Mbit/s; {}",
        alone / 1e6,
        s3["qos_per_core"]
    );
    for c in &mut blue {
        let _ = c.kill();
    }
    // qos show: the total and each core's part
    let show = bed.ctl_json(1, &["qos", "show"]);
    assert_eq!(show["per_core"].as_array().map(Vec::len), Some(2), "{show}");
    assert_eq!(show["tenants"][0]["guarantee_bps"], 30_000_000u64);
    // a live change reaches the balancer: red limited to 40M, guaranteed 20M
    bed.ctl_ok(1, &["tenant", "set", "red", "--guarantee", "20M", "--limit", "40M"]);
    let red_again = senders(&bed, "vm3", 8, "20M", 5);
    std::thread::sleep(Duration::from_millis(1500));
    let s4 = h1.stats();
    std::thread::sleep(Duration::from_secs(2));
    let s5 = h1.stats();
    let limited = rates(&s4, &s5).1;
    eprintln!("QOS 2 cores, red limited to 40: {:.1} Mbit/s", limited / 1e6);
    assert!(
        limited <= 1.03 * 40e6,
        "red's new limit holds over both cores: {:.1} Mbit/s; {}",
        limited / 1e6,
        s5["qos_per_core"]
    );
    assert!(limited >= 0.5 * 20e6, "red still gets traffic through: {:.1} Mbit/s", limited / 1e6);
    for mut c in red_again {
        let _ = c.kill();
        let _ = c.wait();
    }
}
