//! System tests: xvsd on real interfaces (veth, tap) in network namespaces, against itself and
//! against the Linux kernel's own VXLAN. They need root and fail, saying why, without it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use xvs_systests::{Bed, drops, port_counter, root};

fn helper(name: &str) -> String {
    root().join("tests/helpers").join(name).display().to_string()
}

/// Bytes the iperf3 receiver got, from its JSON report.
fn iperf_bytes(json: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json).expect("iperf3 JSON");
    v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

fn tcp_transfer(bed: &Bed, server: &str, client: &str, dst: &str, reverse: bool) -> u64 {
    bed.ok(server, 5, "iperf3 -s -1 -D");
    std::thread::sleep(Duration::from_millis(300));
    let r = if reverse { "-R" } else { "" };
    iperf_bytes(&bed.ok(client, 30, &format!("iperf3 -c {dst} -t 2 -J {r}")))
}

/// `xvsd --check` of `config` (written to `name`) in host 1's namespace.
fn xvsd_check(bed: &Bed, name: &str, config: &str) -> std::process::Output {
    let p = bed.path(name);
    std::fs::write(&p, config).unwrap();
    Command::new("ip")
        .args(["netns", "exec", &format!("{}-h1", bed.p), "timeout", "10"])
        .arg(xvs_systests::xvsd_bin())
        .arg("--check")
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap()
}

#[test]
fn two_xvs_hosts_carry_ping_and_tcp_in_both_directions() {
    let bed = Bed::up("a", "xvs");
    let h1 = bed.xvsd(1, &bed.config(1));
    let h2 = bed.xvsd(2, &bed.config(2));
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm2", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.1");
    bed.ok("vm3", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm4", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.1");
    let fwd = tcp_transfer(&bed, "vm2", "vm1", "10.0.0.2", false);
    let rev = tcp_transfer(&bed, "vm2", "vm1", "10.0.0.2", true);
    assert!(fwd > 20_000_000, "vm1 -> vm2 moved only {fwd} bytes");
    assert!(rev > 20_000_000, "vm2 -> vm1 moved only {rev} bytes");
    let s = h1.fresh_stats();
    assert!(port_counter(&s, &format!("{}-p1", bed.p), "rx_packets") > 1000);
    assert!(port_counter(&s, &format!("{}-u1", bed.p), "tx_packets") > 1000);
    let modes = s["ports"][0]["afxdp_mode"].as_array().unwrap();
    assert!(!modes.is_empty(), "AF_XDP mode is reported");
    assert!(h1.stop(), "xvsd h1 exits cleanly on SIGTERM");
    assert!(h2.stop(), "xvsd h2 exits cleanly on SIGTERM");
    assert_eq!(bed.xdp_attached("h1"), 0, "no XDP program left on host 1");
    assert_eq!(bed.xdp_attached("h2"), 0, "no XDP program left on host 2");
}

#[test]
fn interoperates_with_the_kernel_vxlan() {
    let bed = Bed::up("k", "kernel");
    let h1 = bed.xvsd(1, &bed.config(1));
    let cap = bed.path("cap.txt");
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", &format!("{}-h2", bed.p), "timeout", "30", "tcpdump", "-l", "-nn", "-v", "-c", "6"])
        .args(["-i", &format!("{}-u2", bed.p), "udp port 4789 and src 192.168.77.1"])
        .stdout(std::fs::File::create(&cap).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm4", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.1");
    let bytes = tcp_transfer(&bed, "vm2", "vm1", "10.0.0.2", false);
    assert!(bytes > 10_000_000, "TCP to the kernel's VTEP moved only {bytes} bytes");
    let rev = tcp_transfer(&bed, "vm2", "vm1", "10.0.0.2", true);
    assert!(rev > 10_000_000, "TCP from the kernel's VTEP moved only {rev} bytes");
    let _ = tcpdump.wait();
    let text = std::fs::read_to_string(&cap).unwrap();
    assert!(text.contains("VXLAN, flags [I] (0x08), vni 100"), "tcpdump did not decode our VXLAN:\n{text}");
    // the kernel's vxlan devices took every frame without error
    for vni in ["100", "200"] {
        let j = bed.ok("h2", 5, &format!("ip -s -j link show {}-vx{vni}", bed.p));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let rx = &v[0]["stats64"]["rx"];
        assert!(rx["packets"].as_u64().unwrap() > 0, "kernel vx{vni} received nothing");
        assert_eq!(rx["errors"].as_u64(), Some(0), "kernel vx{vni} rx errors");
    }
    let s = h1.fresh_stats();
    assert!(s["stats"]["events"]["fdb_learned"].as_u64().unwrap() >= 2, "learned the kernel side's MACs");
    assert!(h1.stop());
}

#[test]
fn tenants_with_identical_addresses_stay_isolated() {
    let bed = Bed::up("i", "xvs");
    let h1 = bed.xvsd(1, &bed.config(1));
    let _h2 = bed.xvsd(2, &bed.config(2));
    let serve = |vm: &str, banner: &str| {
        Command::new("ip")
            .args(["netns", "exec", &format!("{}-{vm}", bed.p), "timeout", "30", "python3", &helper("banner.py")])
            .args(["10.0.0.2", "7000", banner, "1"])
            .spawn()
            .unwrap()
    };
    let mut s2 = serve("vm2", "blue-vm2");
    let mut s4 = serve("vm4", "red-vm4");
    std::thread::sleep(Duration::from_millis(500));
    let ask = "python3 -c \"import socket;s=socket.create_connection(('10.0.0.2',7000),5);print(s.recv(64).decode().strip())\"";
    assert_eq!(bed.ok("vm1", 15, ask).trim(), "blue-vm2", "blue's VM reached blue's peer");
    assert_eq!(bed.ok("vm3", 15, ask).trim(), "red-vm4", "red's VM reached red's peer");
    let _ = (s2.wait(), s4.wait());

    // Hand-made VXLAN from host 2's kernel: wrong VNI, an unlisted VTEP, flags.
    // (xvsd on host 2 owns 192.168.77.2's ARP, so its kernel is told host 1's MAC.)
    bed.ok("h2", 5, &format!("ip neigh replace 192.168.77.1 lladdr 02:00:00:00:ff:01 dev {}-u2 nud permanent", bed.p));
    let inject = |src: &str, vni: u32, flags: &str| {
        bed.ok("h2", 10, &format!("python3 {} {src} 192.168.77.1 {vni} {flags} 5", helper("inject_vxlan.py")));
    };
    inject("192.168.77.2", 999, "0x08");
    inject("192.168.77.12", 100, "0x08");
    inject("192.168.77.2", 100, "0x04"); // I flag clear
    // I flag and a reserved one: RFC 7348 has a receiver ignore reserved bits
    inject("192.168.77.2", 100, "0x0c");
    std::thread::sleep(Duration::from_millis(300));
    let s = h1.fresh_stats();
    assert!(drops(&s, "unknown_vni") >= 5, "unknown VNI counted: {}", s["stats"]["ports"][0]);
    assert!(drops(&s, "vtep_not_allowed") >= 5, "unlisted VTEP counted: {}", s["stats"]["ports"][0]);
    assert_eq!(drops(&s, "bad_vxlan_flags"), 5, "I flag clear counted: {}", s["stats"]["ports"][0]);
    let fdb = bed.ctl_ok(1, &["fdb", "show", "blue"]);
    assert!(fdb.contains("02:00:00:00:00:99"), "reserved flag bits ignored: the frame was taken\n{fdb}");
}

#[test]
fn a_tap_device_is_a_vm_port() {
    let bed = Bed::up("t", "xvs");
    let tap = format!("{}-t1", bed.p);
    let mut vm = Command::new("ip")
        .args(["netns", "exec", &format!("{}-h1", bed.p), "timeout", "60", "python3", &helper("tap_vm.py")])
        .args([&tap, "02:00:00:00:00:01", "10.0.0.1", "10.0.0.2", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(vm.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "tap VM started");
    bed.ok("h1", 5, &format!("ip link set {tap} up"));
    let cfg = bed.config(1).replace(&format!("\"{}-p1\"", bed.p), &format!("\"{tap}\""));
    let h1 = bed.xvsd(1, &cfg);
    let _h2 = bed.xvsd(2, &bed.config(2));
    writeln!(vm.stdin.as_mut().unwrap(), "GO").unwrap();
    let mut report = String::new();
    for l in out.lines().map_while(Result::ok) {
        report.push_str(&l);
        report.push('\n');
    }
    let _ = vm.wait();
    let replies: u32 =
        report.lines().find_map(|l| l.strip_prefix("REPLIES ")).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(replies >= 4, "tap VM got {replies}/5 echo replies:\n{report}\n{}", h1.log_text());
    let s = h1.fresh_stats();
    assert!(port_counter(&s, &tap, "rx_packets") >= 5, "frames from the tap were switched");
}

#[test]
fn host_traffic_on_the_uplink_still_reaches_the_kernel() {
    let bed = Bed::up("h", "xvs");
    let h1 = bed.xvsd(1, &bed.config(1));
    let _h2 = bed.xvsd(2, &bed.config(2));
    let mut srv = Command::new("ip")
        .args(["netns", "exec", &format!("{}-h1", bed.p), "timeout", "30", "python3", &helper("banner.py")])
        .args(["192.168.77.11", "7100", "host-h1", "1"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let ask = "python3 -c \"import socket;s=socket.create_connection(('192.168.77.11',7100),5,('192.168.77.12',0));print(s.recv(64).decode().strip())\"";
    assert_eq!(bed.ok("h2", 15, ask).trim(), "host-h1", "TCP to the host's own address works beside xvsd");
    let _ = srv.wait();
    bed.ok("h2", 15, "ping -c 3 -i 0.2 -W 2 -I 192.168.77.12 192.168.77.11");
    // the VTEP address itself is answered by xvs's host stack (ARP and ICMP echo)
    let out = bed.ok("h2", 15, "ping -c 3 -i 0.2 -W 2 -I 192.168.77.12 192.168.77.1");
    // (on a loaded machine a frame may be lost: every reply ping got was the host stack's,
    // so count those, not what ping sent)
    let got: u64 = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(',').nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(got >= 1, "{out}");
    let s = h1.fresh_stats();
    assert!(s["host"]["icmp_echo_replies"].as_u64().unwrap() >= got, "host stack answered pings: {}", s["host"]);
    assert!(s["host"]["arp_replies_sent"].as_u64().unwrap() >= 1, "host stack answered ARP: {}", s["host"]);
    let xdp = &s["xdp"][0][1];
    let passed = xdp.as_array().unwrap().iter().find(|c| c[0] == "xdp_uplink_passed").unwrap()[1].as_u64().unwrap();
    assert!(passed > 0, "XDP passed the host's traffic to the kernel");
}

#[test]
fn bad_configs_are_refused_without_touching_interfaces() {
    let bed = Bed::up("c", "xvs");
    let good = bed.config(1);
    let p = &bed.p;
    let cases = [
        (good.replace("vni = 100", "vni = 0"), "VNI 0 out of range"),
        (good.replace("vni = 200", "vni = 16777216"), "VNI 16777216 out of range"),
        (
            good.replace("vtep_ip = \"192.168.77.1/24\"", "vtep_ip = \"192.168.77.1/24\"\nmtu = 9000"),
            "uplink MTU 9000 does not fit a frame buffer",
        ),
        (good.replace(&format!("\"{p}-u1\""), "\"nope1\""), "uplink interface \"nope1\" not found"),
        (good.replace("tenant = \"red\"", "tenant = \"blue\""), "duplicate MAC 02:00:00:00:00:01"),
        (good.replace("192.168.77.1/24", "192.168.77.9/24"), "VTEP IP 192.168.77.9 is not configured on uplink"),
        (good.replace("mac = \"02:00:00:00:00:01\"", "mac = \"02:00:00:00:01\""), "malformed MAC address"),
    ];
    for (i, (cfg, expect)) in cases.iter().enumerate() {
        let path = bed.path(&format!("bad{i}.toml"));
        std::fs::write(&path, cfg).unwrap();
        let o = Command::new("ip")
            .args(["netns", "exec", &format!("{p}-h1"), "timeout", "10"])
            .arg(xvs_systests::xvsd_bin())
            .arg("--config")
            .arg(&path)
            .arg("--state")
            .arg(bed.path("bad-state.toml"))
            .arg("--socket")
            .arg(bed.path("bad.sock"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "case {i} exit status; stderr: {err}");
        assert!(err.contains(expect), "case {i}: expected {expect:?} in: {err}");
        assert_eq!(bed.xdp_attached("h1"), 0, "case {i} attached nothing");
    }
    // not root
    let path = bed.path("good.toml");
    std::fs::write(&path, &good).unwrap();
    let o = Command::new("ip")
        .args(["netns", "exec", &format!("{p}-h1"), "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(xvs_systests::xvsd_bin())
        .arg("--config")
        .arg(&path)
        .arg("--state")
        .arg(bed.path("nobody-state.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("must run as root"), "non-root refused: {err}");
    assert_eq!(bed.xdp_attached("h1"), 0);
}

#[test]
fn two_forwarding_cores_each_own_a_queue_of_every_port() {
    let bed = Bed::up_with_queues("mc", "xvs", 2);
    let h1 = bed.xvsd(1, &bed.config_cores(1, "0, 1"));
    let _h2 = bed.xvsd(2, &bed.config_cores(2, "0, 1"));
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm3", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm2", 5, "iperf3 -s -1 -D");
    std::thread::sleep(Duration::from_millis(300));
    let bytes = iperf_bytes(&bed.ok("vm1", 30, "iperf3 -c 10.0.0.2 -t 2 -P 8 -J"));
    assert!(bytes > 20_000_000, "8 TCP flows moved only {bytes} bytes");
    let s = h1.fresh_stats();
    let per_core = s["per_core"].as_array().expect("per-core load");
    assert_eq!(per_core.len(), 2, "two forwarding cores: {s}");
    for (i, c) in per_core.iter().enumerate() {
        assert!(c["packets"].as_u64().unwrap() > 100, "core {i} forwarded {}", c["packets"]);
        // the VTEP's ARP reply reached one queue; every core has the answer
        assert_eq!(c["neighbors_unresolved"], 0, "core {i} still resolving a VTEP: {s}");
    }
    let modes = s["ports"][0]["afxdp_mode"].as_array().unwrap();
    assert_eq!(modes.len(), 2, "one socket per queue on the uplink");
    // a core count the queues cannot serve is refused
    let o = xvsd_check(&bed, "three.toml", &bed.config_cores(1, "0, 1, 0"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("listed twice"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn vm_ports_follow_their_interfaces_without_commands() {
    let bed = Bed::up("l", "xvs");
    let p = bed.p.clone();
    // red's VM on host 1 is gone before xvsd starts: xvsd starts anyway, its port waits.
    bed.ok("h1", 5, &format!("ip link del {p}-p3"));
    let h1 = bed.xvsd(1, &bed.config(1));
    let _h2 = bed.xvsd(2, &bed.config(2));
    let state = |name: &str| {
        let v = bed.ctl_json(1, &["port", "list"]);
        v.as_array().unwrap().iter().find(|x| x["name"] == name).map(|x| x["state"].clone()).unwrap()
    };
    let wait = |name: &str, want: &str| {
        let t = std::time::Instant::now();
        while state(name) != want {
            // generous on a loaded machine: the point is that no command is needed
            assert!(t.elapsed() < Duration::from_secs(10), "{name} not {want} within 10 s: {}", state(name));
            std::thread::sleep(Duration::from_millis(50));
        }
        t.elapsed()
    };
    assert_eq!(state(&format!("{p}-p3")), "waiting");
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    // The VM comes back (a new veth pair under the same name): attached with no command.
    bed.ok("h1", 5, &format!("ip link add {p}-p3 type veth peer name {p}-p3v && ip link set {p}-p3v netns {p}-vm3"));
    bed.ok(
        "vm3",
        5,
        &format!(
            "ip link set {p}-p3v name eth0 && ip link set eth0 address 02:00:00:00:00:01 up && \
             ip addr add 10.0.0.1/24 dev eth0 && ethtool -K eth0 tx off tso off gso off >/dev/null"
        ),
    );
    bed.ok("h1", 5, &format!("ethtool -K {p}-p3 tx off tso off gso off >/dev/null"));
    let took = wait(&format!("{p}-p3"), "attached");
    eprintln!("re-attached by itself in {took:?}");
    bed.ok("vm3", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    // Link down and up again: waits, then forwards again.
    bed.ok("h1", 5, &format!("ip link set {p}-p1 down"));
    wait(&format!("{p}-p1"), "waiting");
    bed.ok("vm3", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    bed.ok("h1", 5, &format!("ip link set {p}-p1 up"));
    wait(&format!("{p}-p1"), "attached");
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    // Changes go through while a port waits.
    bed.ok("h1", 5, &format!("ip link del {p}-p3"));
    wait(&format!("{p}-p3"), "waiting");
    bed.ctl_ok(1, &["tenant", "add", "green", "--vni", "300"]);
    bed.ctl_ok(1, &["port", "add", "nosuch0", "--tenant", "green", "--mac", "02:00:00:00:00:09", "--ip", "10.9.0.9"]);
    assert_eq!(state("nosuch0"), "waiting");
    let s = h1.fresh_stats();
    let ports = s["ports"].as_array().unwrap();
    let p3 = ports.iter().find(|x| x["name"] == format!("{p}-p3")).unwrap();
    assert!(p3["lost"].as_u64() >= Some(1) && p3["reattached"].as_u64() >= Some(1), "{p3}");
    assert!(h1.stop());
}

#[test]
fn drops_the_kernel_makes_for_a_stalled_switch_are_counted_everywhere() {
    let bed = Bed::up("d", "xvs");
    let _h1 = bed.xvsd(1, &bed.config(1));
    let h2 = bed.xvsd_args(2, &bed.config(2), &["--metrics", "127.0.0.1:9469"]);
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    let u2 = format!("{}-u2", bed.p);
    let kernel = |s: &serde_json::Value| {
        ["kernel_rx_dropped", "kernel_rx_ring_full"]
            .iter()
            .map(|r| {
                let names = s["ports"].as_array().unwrap();
                let i = names.iter().position(|p| p["name"] == u2.as_str()).unwrap();
                s["stats"]["ports"][i]["drops"][*r].as_u64().unwrap_or(0)
            })
            .sum::<u64>()
    };
    assert_eq!(kernel(&h2.fresh_stats()), 0, "no kernel drops before the stall");
    // Host 2's xvsd stops reading: its uplink socket's rings (2,048 frames) fill up while vm1
    // sends 20,000 frames; the kernel drops the rest on xvs's behalf.
    let pid = h2.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let blast = "python3 -c \"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);[s.sendto(b'x'*1000,('10.0.0.2',9)) for _ in range(20000)]\"";
    let sent = bed.run("vm1", 20, blast);
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert!(sent.status.success(), "blast: {}", String::from_utf8_lossy(&sent.stderr));
    std::thread::sleep(Duration::from_millis(500));
    let s = h2.fresh_stats();
    let k = kernel(&s);
    assert!(k > 1000, "kernel drops for the stalled socket counted on {u2}: {k}: {}", s["stats"]["ports"]);
    let text = bed.ctl_ok(2, &["stats"]);
    assert!(text.contains("kernel_rx"), "xvsctl stats names the kernel's drops:\n{text}");
    let metrics = bed.ok(
        "h2",
        10,
        "python3 -c \"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9469/metrics').read().decode())\"",
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("xvs_port_drops") && l.contains("reason=\"kernel_rx")),
        "Prometheus has the kernel's drops:\n{metrics}"
    );
}

#[test]
fn xvsd_started_under_taskset_runs_on_its_cpu_and_takes_changes() {
    let bed = Bed::up("ts", "xvs");
    // the forwarding core on CPU 1, the whole daemon allowed only CPU 1 (as a unit's
    // CPUAffinity= would): it starts, forwards and takes changes
    let h1 = bed.xvsd_taskset(1, &bed.config_cores(1, "1"), "1");
    let _h2 = bed.xvsd(2, &bed.config(2));
    bed.ok("vm1", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    bed.ctl_ok(1, &["tenant", "add", "green", "--vni", "300"]);
    assert_eq!(h1.fresh_stats()["core"]["cpu"], 1);
    // its threads moved elsewhere later: changes still work
    let o = Command::new("taskset").args(["-a", "-p", "-c", "0", &h1.pid().to_string()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    bed.ctl_ok(1, &["tenant", "del", "green"]);
    // a CPU this machine does not have is refused, naming the CPUs it has
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let o = xvsd_check(&bed, "far.toml", &bed.config_cores(1, "4095"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("core 4095 does not exist (this machine's CPUs are {})", cpus.trim())), "{err}");
}
