//! `xvsctl capture` against a running xvsd in the namespace testbed: pcapng that tcpdump
//! reads, each packet's direction and xvs's decision (forwarded, encapsulated, dropped and
//! why), a tenant filter on the uplink, bad requests refused by name, and captures whose
//! client went away giving their place back.

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xvs_systests::{Bed, xvsctl_bin};

/// `xvsctl capture ARGS` against host `h`, in the background (bounded by `timeout`).
fn capture(bed: &Bed, h: u8, args: &[&str]) -> Child {
    Command::new("timeout")
        .arg("60")
        .arg(xvsctl_bin())
        .arg("--socket")
        .arg(bed.socket(h))
        .arg("capture")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xvsctl capture")
}

/// Waits (bounded) for a capture to end: (exit code, stdout, stderr).
fn finish(c: Child) -> (i32, String, String) {
    let o = c.wait_with_output().expect("xvsctl capture");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Pings from `vm` until `c` ends (at most 30 s), then its output.
fn ping_until_done(bed: &Bed, vm: &str, dst: &str, mut c: Child) -> (i32, String, String) {
    let t = Instant::now();
    while c.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(30) {
        let _ = bed.run(vm, 5, &format!("ping -c 1 -W 1 {dst}"));
    }
    finish(c)
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn capture_shows_what_a_port_receives_and_sends_with_the_decision() {
    let bed = Bed::up("c", "xvs");
    let _h1 = bed.xvsd(1, &bed.config(1));
    let _h2 = bed.xvsd(2, &bed.config(2));
    let p = bed.p.clone();
    let (p1, up) = (format!("{p}-p1"), format!("{p}-u1"));
    bed.ok("vm1", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm3", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");

    // pcapng that tcpdump reads: six packets of vm1's pings, requests in, replies out
    let file = bed.path("p1.pcapng");
    let c = capture(&bed, 1, &[&p1, "--count", "6", "-w", file.to_str().unwrap()]);
    let (code, _, err) = ping_until_done(&bed, "vm1", "10.0.0.2", c);
    assert_eq!(code, 0, "capture failed: {err}");
    assert!(err.contains("6 packets captured, 0 missed"), "{err}");
    let td = Command::new("tcpdump").args(["-nn", "-r"]).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&td.stdout);
    assert!(td.status.success(), "tcpdump could not read the capture: {}", String::from_utf8_lossy(&td.stderr));
    assert_eq!(text.lines().count(), 6, "tcpdump read:\n{text}");
    assert!(text.contains("10.0.0.1 > 10.0.0.2: ICMP echo request"), "tcpdump read:\n{text}");
    assert!(text.contains("10.0.0.2 > 10.0.0.1: ICMP echo reply"), "tcpdump read:\n{text}");

    // the decision of each packet: encapsulated towards host 2 in, sent out
    let c = capture(&bed, 1, &["--json", &p1, "--count", "4"]);
    let (code, out, err) = ping_until_done(&bed, "vm1", "10.0.0.2", c);
    assert_eq!(code, 0, "capture failed: {err}");
    let pkts = json_lines(&out);
    assert_eq!(pkts.len(), 4, "{out}");
    let decided = |dir: &str, what: &str| {
        pkts.iter().any(|v| v["dir"] == dir && v["decision"].as_str().unwrap_or("").contains(what))
    };
    assert!(decided("in", "in, tenant blue: encap vni 100 to 192.168.77.2"), "{out}");
    assert!(decided("out", "out, tenant blue: sent"), "{out}");
    assert!(pkts.iter().all(|v| v["port"] == p1.as_str() && v["len"].as_u64().unwrap() >= 42), "{out}");

    // a dropped frame shows why: vm1 speaks from an address that is not its own
    let c = capture(&bed, 1, &["--json", &p1, "--count", "3"]);
    std::thread::sleep(Duration::from_millis(300));
    bed.ok("vm1", 10, "ip addr add 10.0.0.99/24 dev eth0");
    let t = Instant::now();
    let mut c = c;
    while c.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(20) {
        let _ = bed.run("vm1", 3, "ip neigh flush all; ping -c 1 -W 1 -I 10.0.0.99 10.0.0.2");
    }
    let (code, out, err) = finish(c);
    assert_eq!(code, 0, "capture failed: {err}");
    let pkts = json_lines(&out);
    assert!(
        pkts.iter().any(|v| v["decision"].as_str().unwrap_or("").starts_with("in, tenant blue: drop spoofed_")),
        "{out}"
    );
    bed.ok("vm1", 10, "ip addr del 10.0.0.99/24 dev eth0");

    // on the uplink, a tenant filter keeps only that tenant's VXLAN (blue pings meanwhile)
    let mut blue = Command::new("ip")
        .args(["netns", "exec", &format!("{p}-vm1"), "timeout", "40", "ping", "-i", "0.05", "-W", "1", "10.0.0.2"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let c = capture(&bed, 1, &["--json", &up, "--tenant", "red", "--count", "4"]);
    let (code, out, err) = ping_until_done(&bed, "vm3", "10.0.0.2", c);
    let _ = blue.kill();
    let _ = blue.wait();
    assert_eq!(code, 0, "capture failed: {err}");
    let pkts = json_lines(&out);
    assert_eq!(pkts.len(), 4, "{out}");
    for v in &pkts {
        assert!(v["decision"].as_str().unwrap().contains("tenant red"), "another tenant's frame in: {out}");
        assert!(v["summary"].as_str().unwrap().contains("VXLAN vni 200"), "{out}");
    }
    assert!(pkts.iter().any(|v| v["dir"] == "out") && pkts.iter().any(|v| v["dir"] == "in"), "{out}");

    // a duration ends a capture with nothing to show, and says so
    let (code, _, err) = finish(capture(&bed, 1, &[&format!("{p}-p3"), "--duration", "0.5"]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 packets captured, 0 missed"), "{err}");

    // bad requests are refused by name
    for (args, want) in [
        (vec!["nope"], "unknown port \"nope\""),
        (vec![&p1, "--tenant", "red"], "belongs to tenant \"blue\", not \"red\""),
        (vec![&p1, "--tenant", "mauve"], "unknown tenant \"mauve\""),
        (vec![&p1, "--snaplen", "10"], "snaplen 10 is out of range"),
        (vec![&p1, "--count", "0"], "count 0"),
        (vec![&p1, "--duration=-1"], "--duration needs a positive number"),
    ] {
        let (code, _, err) = finish(capture(&bed, 1, &args));
        assert_eq!(code, 1, "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
    }

    // at most four at once; a client that goes away gives its place back
    let running: Vec<Child> = (0..4).map(|_| capture(&bed, 1, &[&p1])).collect();
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = finish(capture(&bed, 1, &[&p1, "--count", "1"]));
    assert_eq!(code, 1, "a fifth capture was accepted");
    assert!(err.contains("4 captures are running already"), "{err}");
    for mut c in running {
        let _ = c.kill();
        let _ = c.wait();
    }
    let t = Instant::now();
    loop {
        let (code, _, err) = finish(capture(&bed, 1, &[&p1, "--duration", "0.2"]));
        if code == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "captures whose clients left still hold their places: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // forwarding went on throughout
    bed.ok("vm1", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
}
