//! The performance harness itself: the AF_XDP generator and sink on a bare veth pair, and a
//! smoke run of scripts/bench.sh proving every switch (xvs, the kernel, OVS, OVS-DPDK) and every
//! limit (the XDP forwarder, testpmd in one process and per host) is set up, carries traffic and
//! is torn down.

use serde_json::Value;
use std::process::Command;
use xvs_systests::{require_system, root};

fn trafgen() -> std::path::PathBuf {
    let b = root().join("target/release/xvs-trafgen");
    assert!(b.exists(), "{} missing: run `cargo build --release --bins` first", b.display());
    b
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

/// Two namespaces joined by a veth pair, removed on drop.
struct Pair {
    p: String,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let p = format!("xg{tag}{}", std::process::id() % 1000);
        let pair = Pair { p };
        let p = &pair.p;
        let out = sh(&format!(
            "ip netns add {p}-a && ip netns add {p}-b && ip link add {p}a type veth peer name {p}b && \
             ip link set {p}a netns {p}-a && ip link set {p}b netns {p}-b && \
             ip -n {p}-a link set {p}a up && ip -n {p}-b link set {p}b up"
        ));
        assert!(out.status.success(), "veth pair: {}", String::from_utf8_lossy(&out.stderr));
        pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let p = &self.p;
        let _ = sh(&format!("ip netns pids {p}-b | xargs -r kill -9; ip netns del {p}-a; ip netns del {p}-b"));
    }
}

fn json(path: &std::path::Path) -> Value {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}: {s}", path.display()))
}

#[test]
fn trafgen_counts_every_frame_and_times_round_trips() {
    require_system();
    let pair = Pair::new("t");
    let p = &pair.p;
    let dir = std::env::temp_dir().join(format!("xvs-{p}"));
    std::fs::create_dir_all(&dir).unwrap();
    let g = trafgen();
    let (sink, send, ready) = (dir.join("sink.json"), dir.join("send.json"), dir.join("ready"));
    let _ = std::fs::remove_file(&ready);
    let mut sink_proc = Command::new("ip")
        .args(["netns", "exec", &format!("{p}-b"), "timeout", "60"])
        .arg(&g)
        .args(["sink", &format!("{p}b"), "--idle-exit", "1", "--secs", "50", "--out"])
        .arg(&sink)
        .arg("--ready")
        .arg(&ready)
        .spawn()
        .expect("sink");
    for _ in 0..100 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ready.exists(), "sink did not bind its socket");
    // 20,000 frames at 10 kpps, every 4th reflected back to the sender.
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("{p}-a"), "timeout", "30"])
        .arg(&g)
        .args(["send", &format!("{p}a"), "--src-mac", "02:00:00:00:00:01", "--dst-mac", "02:00:00:00:00:02"])
        .args(["--src-ip", "10.9.0.1", "--dst-ip", "10.9.0.2", "--rate", "10000", "--secs", "2", "--size", "128"])
        .args(["--rtt-every", "4", "--out"])
        .arg(&send)
        .output()
        .expect("send");
    assert!(out.status.success(), "send failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(sink_proc.wait().expect("sink").success(), "sink failed");
    let (s, k) = (json(&send), json(&sink));
    let sent = s["sent"].as_u64().unwrap();
    assert!((19_000..=20_001).contains(&sent), "paced sender sent {sent} frames in 2 s at 10 kpps");
    assert_eq!(k["received"].as_u64(), Some(sent), "sink: {k}");
    assert_eq!(k["lost"].as_u64(), Some(0), "sink: {k}");
    assert_eq!(k["reordered"].as_u64(), Some(0), "sink: {k}");
    assert_eq!(k["bytes"].as_u64(), Some(sent * 128), "sink: {k}");
    assert_eq!(k["highest_seq"].as_u64(), Some(sent), "sink: {k}");
    let reflected = k["reflected"].as_u64().unwrap();
    assert_eq!(reflected, sent.div_ceil(4), "sink reflected every 4th frame");
    assert_eq!(s["replies"].as_u64(), Some(reflected), "sender: {s}");
    let rtt = &s["rtt"];
    let (p50, p99) = (rtt["p50_us"].as_f64().unwrap(), rtt["p99_us"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "round trips: {rtt}");
    assert!(k["latency"]["p50_us"].as_f64().unwrap() > 0.0, "one-way latency: {k}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_smoke_run_sets_up_measures_and_tears_down_every_switch() {
    require_system();
    assert!(
        sh("command -v ovs-vswitchd && command -v ovsdb-tool").status.success(),
        "the harness needs Open vSwitch: run ./scripts/setup.sh"
    );
    let prefix = format!("xs{}", std::process::id() % 1000);
    let out_dir = std::env::temp_dir().join(format!("xvs-bench-{prefix}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new("timeout")
        .arg("900")
        .arg(root().join("scripts/bench.sh"))
        .args(["--smoke", "--out"])
        .arg(&out_dir)
        .env("XVS_BENCH_PREFIX", &prefix)
        .output()
        .expect("bench.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench.sh --smoke failed:\n{stderr}");

    // Torn down: no namespace, interface, OVS daemon or OVS directory of this run is left.
    let netns = sh("ip netns list");
    assert!(!String::from_utf8_lossy(&netns.stdout).contains(&prefix), "namespaces left behind");
    let links = sh("ip -o link");
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&prefix), "interfaces left behind");
    assert!(!sh(&format!("pgrep -f [x]vs-ovs-{prefix}")).status.success(), "OVS daemons left running");
    assert!(!sh(&format!("pgrep -f '[f]ile-prefix {prefix}-'")).status.success(), "testpmd left running");
    assert!(!std::path::Path::new(&format!("/tmp/xvs-ovs-{prefix}")).exists(), "OVS directory left behind");

    // Every switch carried traffic in every measurement.
    let runs: Vec<Value> = std::fs::read_to_string(out_dir.join("runs.jsonl"))
        .expect("runs.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("runs.jsonl line"))
        .collect();
    let find = |sw: &str, kind: &str| -> &Value {
        runs.iter()
            .find(|r| r["switch"] == sw && r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} measurement of {sw}:\n{stderr}"))
    };
    let ceiling = find("ceiling", "flat");
    assert!(ceiling["sink"]["received"].as_u64().unwrap_or(0) > 10_000, "generator ceiling: {ceiling}");
    for sw in ["xvs", "kernel", "ovs"] {
        let flat = find(sw, "flat");
        let got = flat["sink"]["received"].as_u64().unwrap_or(0);
        assert!(got > 10_000, "{sw} delivered {got} frames flat out");
        let sweep = find(sw, "sweep");
        assert!(sweep["sink"]["received"].as_u64().unwrap_or(0) > 1000, "{sw} sweep: {sweep}");
        for kind in ["rtt_low", "rtt_half"] {
            let r = find(sw, kind);
            assert!(r["send"]["replies"].as_u64().unwrap_or(0) > 10, "{sw} {kind}: {r}");
            assert!(r["send"]["rtt"]["p99_us"].as_f64().unwrap_or(0.0) > 0.0, "{sw} {kind}: {r}");
        }
        let tcp = find(sw, "tcp");
        assert!(tcp["tcp"]["gbps"].as_f64().unwrap_or(0.0) > 0.01, "{sw} TCP: {tcp}");
        find(sw, "idle");
    }
    // xvsd's own profile made it into the record, and the two-core run carried traffic.
    let flat = find("xvs", "flat");
    let cores = flat["h1"]["per_core"].as_array().expect("xvsd per-core load");
    assert!(cores.iter().any(|c| c["stage_cycles"]["tx"].as_u64().unwrap_or(0) > 0), "stage cycles: {cores:?}");
    // OVS-DPDK switches (VXLAN both ways); the limits forward (sweep, idle and CPU recorded).
    for sw in ["ovs-dpdk", "xdpfwd", "testpmd", "testpmd-hosts"] {
        let flat = find(sw, "flat");
        let got = flat["sink"]["received"].as_u64().unwrap_or(0);
        assert!(got > 10_000, "{sw} delivered {got} frames flat out");
        assert!(find(sw, "sweep")["machine_busy_jiffies"].as_u64().is_some(), "{sw}: CPU against offered load");
        assert!(find(sw, "idle")["machine_busy_jiffies"].as_u64().is_some(), "{sw}: idle CPU");
    }
    let r = find("ovs-dpdk", "rtt_low");
    assert!(r["send"]["replies"].as_u64().unwrap_or(0) > 10, "ovs-dpdk round trips: {r}");
    let two = find("xvs-2core", "flat2");
    assert!(two["sink"]["received"].as_u64().unwrap_or(0) > 10_000, "two cores: {two}");
    assert_eq!(two["h1"]["per_core"].as_array().map(Vec::len), Some(2), "two cores per xvsd");

    // The report has every switch, the ratios, and plots.
    let report = std::fs::read_to_string(out_dir.join("report.md")).expect("report.md");
    for want in [
        "| xvs |",
        "| kernel |",
        "| ovs |",
        "| ovs-dpdk |",
        "| testpmd |",
        "| testpmd-hosts |",
        "xvs / kernel",
        "xvs / OVS",
        "xvs / OVS-DPDK",
        "xvs / testpmd",
        "Multi-core scaling",
        "cycles",
    ] {
        assert!(report.contains(want), "report lacks {want:?}:\n{report}");
    }
    for svg in ["throughput.svg", "sweep.svg", "cpu.svg", "latency-cdf.svg", "tcp.svg"] {
        let s = std::fs::read_to_string(out_dir.join(svg)).unwrap_or_default();
        assert!(s.contains("<svg") && s.contains("</svg>"), "{svg} is not an SVG");
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
