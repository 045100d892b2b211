//! The XDP fast path on the namespace testbed: with static remote entries (as the etcd store
//! gives every host) known unicast between two xvs hosts is encapsulated and decapsulated by
//! the XDP programs, both tenants stay apart with the same MACs and IPs, a capture and
//! `xdp_fast_path = false` keep frames in the cores, and a VM side that stops taking XDP
//! frames gets them through the core again; the redirects the kernel refused meanwhile are
//! counted as the port's `kernel_tx_dropped`.

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xvs_systests::{Bed, port_counter, port_drop, xvsctl_bin};

/// Host `h`'s testbed config with each tenant's remote VM as a static entry.
fn static_config(bed: &Bed, h: u8, extra_daemon: &str) -> String {
    let other = 3 - h;
    let text = bed.config(h);
    let vteps = format!("vteps = [\"192.168.77.{other}\"]");
    let fdb = format!("{vteps}\nfdb = [{{ mac = \"02:00:00:00:00:0{other}\", vtep = \"192.168.77.{other}\" }}]");
    let text = text.replace(&vteps, &fdb);
    text.replace("[daemon]\n", &format!("[daemon]\n{extra_daemon}"))
}

/// An XDP program that passes every frame on `vm`'s eth0 (so the veth takes XDP frames).
fn pass(bed: &Bed, vm: &str) -> Child {
    let trafgen = xvs_systests::root().join("target/release/xvs-trafgen");
    Command::new("ip")
        .args(["netns", "exec", &format!("{}-{vm}", bed.p)])
        .arg(trafgen)
        .args(["pass", "eth0", "--secs", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("xvs-trafgen pass")
}

fn counter(s: &Value, port: &str, field: &str) -> u64 {
    port_counter(s, port, field)
}

/// Waits (bounded) until `f` holds.
fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn known_unicast_takes_the_xdp_fast_path_and_tenants_stay_apart() {
    let bed = Bed::up("x", "xvs");
    let p = bed.p.clone();
    let (p1, p2, p3, p4, u1, u2) = (
        format!("{p}-p1"),
        format!("{p}-p2"),
        format!("{p}-p3"),
        format!("{p}-p4"),
        format!("{p}-u1"),
        format!("{p}-u2"),
    );
    // host 2's VMs take XDP frames (as a tap or a veth peer with XDP does); host 1's do not
    let mut passes = vec![pass(&bed, "vm2"), pass(&bed, "vm4")];
    std::thread::sleep(Duration::from_millis(500));
    let h1 = bed.xvsd(1, &static_config(&bed, 1, ""));
    let h2 = bed.xvsd(2, &static_config(&bed, 2, ""));
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm3", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");

    // TCP both ways in blue, while red's identical VM sees none of it
    let red_before = bed.echo_requests_in("vm4");
    bed.ok("vm2", 5, "iperf3 -s -1 -D");
    std::thread::sleep(Duration::from_millis(300));
    let out = bed.ok("vm1", 30, "iperf3 -c 10.0.0.2 -t 2 -J");
    let v: Value = serde_json::from_str(&out).expect("iperf3 JSON");
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 5_000_000, "blue TCP through the fast path moved only {bytes} bytes");
    bed.ok("vm1", 20, "ping -c 20 -i 0.05 -W 2 10.0.0.2");
    assert_eq!(bed.echo_requests_in("vm4"), red_before, "red's VM got blue's pings");

    let s1 = h1.fresh_stats();
    let s2 = h2.fresh_stats();
    // host 1: vm1's frames encapsulated in XDP; the replies come through host 1's core
    // (its VMs' veths take no XDP frames)
    assert!(counter(&s1, &p1, "fast_rx_packets") > 1000, "encapsulated in XDP on host 1: {}", s1["stats"]["ports"]);
    assert!(counter(&s1, &u1, "fast_tx_packets") > 1000);
    assert_eq!(counter(&s1, &p1, "fast_tx_packets"), 0, "vm1 takes no XDP frames: {}", s1["stats"]["ports"]);
    // host 2: decapsulated in XDP into vm2's port, and vm2's replies encapsulated in XDP
    assert!(counter(&s2, &p2, "fast_tx_packets") > 1000, "decapsulated in XDP on host 2: {}", s2["stats"]["ports"]);
    assert!(counter(&s2, &u2, "fast_rx_packets") > 1000);
    assert!(counter(&s2, &p2, "fast_rx_packets") > 500);
    // the totals include both paths; red's port saw only red's few pings
    assert!(counter(&s2, &p2, "tx_packets") >= counter(&s2, &p2, "fast_tx_packets"));
    assert!(counter(&s2, &p4, "tx_packets") < 50, "red's port carried blue's traffic: {}", s2["stats"]["ports"]);
    assert!(counter(&s1, &p3, "rx_packets") < 50);
    let st = bed.ctl_ok(1, &["stats"]);
    assert!(st.contains("FAST_RX") && st.contains("FAST_TX"), "xvsctl stats shows both paths:\n{st}");

    // a capture on vm1's port keeps its frames in the core while it runs
    let before = counter(&h1.fresh_stats(), &p1, "fast_rx_packets");
    let file = bed.path("p1.pcapng");
    // (xvsctl itself, not under timeout, so that killing it ends the capture; it also ends
    // when the daemon goes)
    let mut c = Command::new(xvsctl_bin())
        .arg("--socket")
        .arg(bed.socket(1))
        .args(["capture", &p1, "--count", "100000", "-w", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    bed.ok("vm1", 20, "ping -c 10 -i 0.05 -W 2 10.0.0.2");
    let during = counter(&h1.fresh_stats(), &p1, "fast_rx_packets");
    assert_eq!(c.try_wait().unwrap(), None, "the capture still runs");
    assert_eq!(during, before, "frames took the fast path past a running capture");
    let _ = c.kill();
    let _ = c.wait();
    // ... and after it the fast path takes them again
    bed.ok("vm1", 20, "ping -c 10 -i 0.05 -W 2 10.0.0.2");
    until("fast path back after the capture", Duration::from_secs(20), || {
        let _ = bed.run("vm1", 5, "ping -c 3 -i 0.05 -W 1 10.0.0.2");
        counter(&h1.fresh_stats(), &p1, "fast_rx_packets") > during
    });

    // vm2's interface goes down while host 2's xvsd is frozen (so nothing reacts to it): the
    // uplink's program still redirects into vm2's port, whose peer has no NAPI now, and the
    // kernel drops each frame; xvsd counts them as the port's kernel_tx_dropped when it runs.
    let drops_before = port_drop(&h2.fresh_stats(), &p2, "kernel_tx_dropped");
    let pid = h2.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    bed.ok("vm2", 5, "ip link set eth0 down");
    let blast = "python3 -c \"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);[s.sendto(b'x'*100,('10.0.0.2',9)) for _ in range(5000)]\"";
    let sent = bed.run("vm1", 20, blast);
    bed.ok("vm2", 5, "ip link set eth0 up");
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert!(sent.status.success(), "blast: {}", String::from_utf8_lossy(&sent.stderr));
    let s2 = h2.fresh_stats();
    let dropped = port_drop(&s2, &p2, "kernel_tx_dropped") - drops_before;
    assert!(dropped > 1000, "redirects the veth refused, counted on {p2}: {dropped}: {}", s2["stats"]["ports"]);
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");

    // vm2's side stops taking XDP frames: within the recheck its frames come through the
    // core again, and nothing more is lost
    for c in &mut passes {
        let _ = c.kill();
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(2500));
    let fast_before = counter(&h2.fresh_stats(), &p2, "fast_tx_packets");
    bed.ok("vm1", 20, "ping -c 20 -i 0.05 -W 2 10.0.0.2");
    let s2 = h2.fresh_stats();
    assert_eq!(counter(&s2, &p2, "fast_tx_packets"), fast_before, "redirected into a veth without XDP");

    // with the fast path off every frame goes through the cores
    assert!(h1.stop(), "xvsd h1 stops cleanly");
    let h1 = bed.xvsd(1, &static_config(&bed, 1, "xdp_fast_path = false\n"));
    bed.ok("vm1", 20, "ping -c 20 -i 0.05 -W 2 10.0.0.2");
    let s1 = h1.fresh_stats();
    assert_eq!(counter(&s1, &p1, "fast_rx_packets"), 0, "fast path used though off: {}", s1["stats"]["ports"]);
    assert!(counter(&s1, &p1, "rx_packets") >= 20);
}
