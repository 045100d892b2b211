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
    let cfg = bed
        .config_cores(1, "0")
        .replace("vtep_ip = \"192.168.77.1/24\"", "vtep_ip = \"192.168.77.1/24\"\nrate = \"500M\"")
        .replace("vni = 100\n", "vni = 100\nguarantee = \"150M\"\n")
        .replace("vni = 200\n", "vni = 200\nguarantee = \"350M\"\n");
    let h1 = bed.xvsd(1, &cfg);
    let _h2 = bed.xvsd(2, &bed.config(2));
    bed.ok("vm1", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm3", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    for vm in ["vm2", "vm4"] {
        bed.ok(vm, 5, "iperf3 -s -D -p 5201; iperf3 -s -D -p 5202");
    }
    std::thread::sleep(Duration::from_millis(300));
    // each tenant: 4 TCP flows plus 50 Mbit/s of UDP, all from host 1 to host 2
    let mut blue =
        vec![iperf_client(&bed, "vm1", "-p 5201 -P 4 -t 14"), iperf_client(&bed, "vm1", "-p 5202 -u -b 50M -t 14")];
    let mut red =
        vec![iperf_client(&bed, "vm3", "-p 5201 -P 4 -t 6"), iperf_client(&bed, "vm3", "-p 5202 -u -b 50M -t 6")];
    let ids = [("blue", 0u64), ("red", 1u64)];
    std::thread::sleep(Duration::from_secs(2));
    let s0 = h1.stats();
    std::thread::sleep(Duration::from_secs(3));
    let s1 = h1.stats();
    let t_s1 = Instant::now();
    let (a, b, dt) = (qos_bytes(&s0, &ids), qos_bytes(&s1, &ids), taken_at(&s1) - taken_at(&s0));
    let rate = |i: usize, x: &[u64], y: &[u64], secs: f64| (y[i] - x[i]) as f64 * 8.0 / secs;
    let (rb, rr) = (rate(0, &a, &b, dt), rate(1, &a, &b, dt));
    let q = h1.stats()["qos"].clone();
    eprintln!("QOS both active: blue {:.1} Mbit/s, red {:.1} Mbit/s (wire, scheduler counters)", rb / 1e6, rr / 1e6);
    let link = LINK_MBIT * 1e6;
    assert!(rb + rr <= 1.03 * link, "the link's rate holds: blue + red = {:.0} Mbit/s; {q}", (rb + rr) / 1e6);
    assert!(rb >= 0.8 * BLUE_G, "blue gets its guarantee: {:.0} Mbit/s of 150; {q}", rb / 1e6);
    assert!(rb <= 1.2 * BLUE_G, "blue takes no more than its share from red: {:.0} Mbit/s; {q}", rb / 1e6);
    // (on a starved CPU the link loses time and red, the larger guarantee, absorbs the loss:
    // blue keeps its 150 and red was seen at 179 with both queues full; an equal split would
    // give 1.0x)
    assert!(rr >= 1.1 * rb, "red, guaranteed 70%, gets clearly more than blue: {:.0} Mbit/s; {q}", rr / 1e6);
    // red stops: blue takes the link
    for c in &mut red {
        let _ = c.wait();
    }
    let stopped = Instant::now();
    // From 100 ms after red stopped (by the core's clock: the first snapshot taken then).
    let from = taken_at(&s1) + stopped.duration_since(t_s1).as_secs_f64() + 0.1;
    let mut s2 = h1.stats();
    for _ in 0..200 {
        if taken_at(&s2) >= from {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        s2 = h1.stats();
    }
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
