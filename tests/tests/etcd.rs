//! Three xvsd hosts sharing their desired state in a real 3-member etcd cluster (Debian's
//! etcd, started here): VMs added through xvsctl (host 1 creates the tenants, host 3 joins
//! them) and written straight into etcd by an "orchestrator" (etcdctl, host 2) are reachable
//! from the others with no flooding; tenants with the same addresses stay apart; a dead
//! host's VMs leave the others' tables after its lease; a moved VM is followed, also by a
//! host the store cannot reach (its first frames); losing one etcd member changes nothing;
//! losing all of them keeps forwarding, refuses changes naming the store, and everything
//! catches up when etcd returns, also past a compaction; two writers of one key: one wins,
//! the other is told. A second test runs the store over TLS with client certificates.

use serde_json::Value;
use std::time::{Duration, Instant};
use xvs_proto::reply::{FdbRow, VtepRow};
use xvs_systests::Bed;
use xvs_systests::etcd::Etcd;

/// Host `h`'s config: its uplink, the store, nothing else.
fn config(bed: &Bed, etcd: &Etcd, h: u8) -> String {
    format!(
        "[uplink]\ninterface = \"{p}-u{h}\"\nvtep_ip = \"192.168.77.{h}/24\"\n\n[daemon]\ncores = [1]\n\n\
         [store]\nurl = \"{url}\"\nhost = \"h{h}\"\nlease_secs = 8\n",
        p = bed.p,
        url = etcd.url()
    )
}

/// A VM port binding as an orchestrator writes it.
fn binding(host: &str, iface: &str, mac: &str, ip: &str) -> String {
    format!(r#"{{"host":"{host}","interface":"{iface}","mac":"{mac}","ips":["{ip}"]}}"#)
}

fn flooded(bed: &Bed, h: u8) -> u64 {
    let v: Value = bed.ctl_json(h, &["stats"]);
    v["stats"]["events"]["flooded"].as_u64().unwrap_or_else(|| panic!("no flooded counter: {v}"))
}

/// Waits (bounded) until `f` holds, failing with `what` and the last value seen.
fn until<T: std::fmt::Debug>(what: &str, limit: Duration, mut f: impl FnMut() -> (bool, T)) -> T {
    let t = Instant::now();
    loop {
        let (ok, v) = f();
        if ok {
            return v;
        }
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}; last seen {v:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn vteps(bed: &Bed, h: u8, tenant: &str) -> Vec<String> {
    let rows: Vec<VtepRow> = bed.ctl_reply(h, &["vtep", "list", tenant]);
    rows.into_iter().map(|r| r.vtep).collect()
}

fn static_dest(bed: &Bed, h: u8, tenant: &str, mac: &str) -> Option<String> {
    let rows: Vec<FdbRow> = bed.ctl_reply(h, &["fdb", "show", tenant]);
    rows.into_iter().find(|r| r.mac == mac && r.origin == "static").map(|r| r.dest)
}

#[test]
fn three_hosts_share_one_desired_state_in_etcd() {
    let bed = Bed::up("e", "fabric");
    let p = bed.p.clone();
    let mut etcd = Etcd::start(&bed);
    let mut hosts = [None, None, None];
    for h in 1..=3u8 {
        hosts[h as usize - 1] = Some(bed.xvsd(h, &config(&bed, &etcd, h)));
    }

    // Host 1 through xvsctl: two tenants and a VM port in each (same MAC and IP).
    for (t, vni) in [("blue", "100"), ("red", "200")] {
        bed.ctl_ok(1, &["tenant", "add", t, "--vni", vni]);
    }
    bed.ctl_ok(
        1,
        &["port", "add", &format!("{p}-p1"), "--tenant", "blue", "--mac", "02:00:00:00:00:01", "--ip", "10.0.0.1"],
    );
    bed.ctl_ok(
        1,
        &["port", "add", &format!("{p}-p3"), "--tenant", "red", "--mac", "02:00:00:00:00:01", "--ip", "10.0.0.1"],
    );
    // The same tenant from another host with another spec: refused, naming what the store has.
    let (code, _, err) = bed.ctl(3, &["tenant", "add", "blue", "--vni", "100", "--mac-limit", "100"]);
    assert_ne!(code, 0);
    assert!(err.contains("tenants/blue/spec already exists") && err.contains("etcd://"), "{err}");
    let (code, _, err) = bed.ctl(3, &["tenant", "add", "cyan", "--vni", "100"]);
    assert_ne!(code, 0);
    assert!(err.contains("vnis/100 already exists"), "one tenant per VNI across hosts: {err}");
    // Host 3 through xvsctl: the same spec joins the tenants, then its own ports.
    for (t, vni) in [("blue", "100"), ("red", "200")] {
        bed.ctl_ok(3, &["tenant", "add", t, "--vni", vni]);
    }
    for (port, t) in [("p5", "blue"), ("p6", "red")] {
        let iface = format!("{p}-{port}");
        bed.ctl_ok(3, &["port", "add", &iface, "--tenant", t, "--mac", "02:00:00:00:00:03", "--ip", "10.0.0.3"]);
    }

    // Host 2 as an orchestrator writes it, straight into etcd.
    let k = |s: &str| format!("/xvs/v1/{s}");
    for (h, blue, red, mac, ip) in [(2, "p2", "p4", "02:00:00:00:00:02", "10.0.0.2")] {
        for t in ["blue", "red"] {
            etcd.ctl_ok(&["put", &k(&format!("hosts/h{h}/tenants/{t}")), ""]);
        }
        let b = binding(&format!("h{h}"), &format!("{p}-{blue}"), mac, ip);
        etcd.ctl_ok(&["put", &k(&format!("tenants/blue/ports/vm-{blue}")), &b]);
        let r = binding(&format!("h{h}"), &format!("{p}-{red}"), mac, ip);
        etcd.ctl_ok(&["put", &k(&format!("tenants/red/ports/vm-{red}")), &r]);
    }
    for h in 1..=3u8 {
        until(&format!("host {h} knows both other hosts for blue"), Duration::from_secs(10), || {
            let v = vteps(&bed, h, "blue");
            (v.len() == 2, v)
        });
    }
    let st: Value = bed.ctl_json(2, &["status"]);
    assert!(st["state"].as_str().unwrap_or("").contains("connected"), "status names the store: {st}");

    // Bad values written by hand: a malformed binding is ignored and named; a tenant that
    // clashes with a running tenant's VNI is left out (status says why), the rest follows the
    // store as before, until the bad key goes.
    etcd.ctl_ok(&["put", &k("tenants/blue/ports/bad"), r#"{"host":"h1","colour":1}"#]);
    etcd.ctl_ok(&["put", &k("tenants/clash/spec"), r#"{"vni":200}"#]);
    etcd.ctl_ok(&["put", &k("hosts/h1/tenants/clash"), ""]);
    let st = until("host 1 names both", Duration::from_secs(10), || {
        let v: Value = bed.ctl_json(1, &["status"]);
        let s = v["state"].as_str().unwrap_or("").to_string();
        (s.contains("malformed keys ignored: tenants/blue/ports/bad") && s.contains("tenant \"clash\" left out"), s)
    });
    assert!(st.contains("200"), "the refusal names the VNI: {st}");
    bed.ok("vm1", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm3", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    for key in ["tenants/blue/ports/bad", "tenants/clash/spec", "hosts/h1/tenants/clash"] {
        etcd.ctl_ok(&["del", &k(key)]);
    }
    until("host 1 is clean again", Duration::from_secs(10), || {
        let v: Value = bed.ctl_json(1, &["status"]);
        let s = v["state"].as_str().unwrap_or("").to_string();
        (!s.contains("malformed") && !s.contains("left out"), s)
    });

    // Reachable across hosts with nothing flooded: ARP is answered from the store's bindings
    // and every MAC is a static entry.
    bed.ok("vm5", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.1");
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    for h in 1..=3u8 {
        assert_eq!(flooded(&bed, h), 0, "host {h} flooded a frame");
    }
    // Isolation: red's VM with blue's addresses reaches red's, never blue's.
    let (b0, r0) = (bed.echo_requests_in("vm1"), bed.echo_requests_in("vm3"));
    bed.ok("vm6", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.1");
    assert_eq!(bed.echo_requests_in("vm1"), b0, "a red frame reached blue's VM");
    assert!(bed.echo_requests_in("vm3") >= r0 + 3);

    // Two writers of one key at once (different specs): one wins, the other is told.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| bed.ctl(1, &["tenant", "add", "green", "--vni", "300"]));
        let b = s.spawn(|| bed.ctl(3, &["tenant", "add", "green", "--vni", "300", "--mac-limit", "50"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!((a.0 == 0) != (b.0 == 0), "exactly one writer wins: {a:?} {b:?}");
    let loser = if a.0 == 0 { &b.2 } else { &a.2 };
    assert!(loser.contains("conflict") && loser.contains("green"), "the other gets a clear conflict: {loser}");

    // Host 2 dies: after its lease its VMs leave host 1's and host 3's tables.
    hosts[1].take().unwrap().kill9();
    for h in [1u8, 3] {
        until(&format!("host {h} forgets host 2"), Duration::from_secs(20), || {
            let v = vteps(&bed, h, "blue");
            (!v.contains(&"192.168.77.2".to_string()), v)
        });
        assert_eq!(static_dest(&bed, h, "blue", "02:00:00:00:00:02"), None);
    }
    hosts[1] = Some(bed.xvsd(2, &config(&bed, &etcd, 2)));
    until("host 2 is back in host 3's table", Duration::from_secs(15), || {
        let d = static_dest(&bed, 3, "blue", "02:00:00:00:00:02");
        (d.as_deref() == Some("vtep 192.168.77.2"), d)
    });

    // One etcd member dies: forwarding and configuration go on.
    etcd.kill(1);
    bed.ok("vm5", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    until("a change through host 3 with one member down", Duration::from_secs(15), || {
        let r = bed.ctl(3, &["tenant", "set", "red", "--weight", "3"]);
        (r.0 == 0, r)
    });
    etcd.restart(1);
    etcd.wait_healthy(3, Duration::from_secs(30));

    // vm1 moves from host 1 to host 2 while host 3 cannot reach etcd (blackhole routes both
    // ways between it and the members): vm1's first frames from host 2 move host 3's entry at
    // once, before the store can.
    let members = (21..=23).map(|i| format!("192.168.77.{i}/32")).collect::<Vec<_>>();
    let cut = |op: &str| {
        for m in &members {
            bed.ok("h3", 5, &format!("ip route {op} blackhole {m}"));
        }
        for e in ["e1", "e2", "e3"] {
            bed.ok(e, 5, &format!("ip route {op} blackhole 192.168.77.3/32; ip route {op} blackhole 192.168.77.13/32"));
        }
    };
    cut("add");
    let t_cut = Instant::now();
    move_vm1(&bed, &etcd, "h1", "p1", 2, "p7");
    // Attached: its sockets are bound, so frames flow (the bind may retry for up to a second).
    until("host 2 has vm1's new port attached", Duration::from_secs(5), || {
        let ports: Value = bed.ctl_json(2, &["port", "list"]);
        let port = ports.as_array().and_then(|a| a.iter().find(|x| x["name"] == format!("{p}-p7")));
        (port.and_then(|x| x["state"].as_str()) == Some("attached"), ports)
    });
    let before = static_dest(&bed, 3, "blue", "02:00:00:00:00:01");
    assert_eq!(before.as_deref(), Some("vtep 192.168.77.1"), "host 3 has not heard from the store");
    // vm1's eth0 is new, so its first frame is an ARP request: ping until one answer, bounded
    // by a deadline that keeps the cut inside host 3's lease.
    bed.ok("vm1", 10, "ping -c 1 -i 0.2 -w 4 -W 1 10.0.0.3");
    let after = static_dest(&bed, 3, "blue", "02:00:00:00:00:01");
    assert_eq!(after.as_deref(), Some("vtep 192.168.77.2"), "vm1's first frames from host 2 moved host 3's entry");
    assert!(t_cut.elapsed() < Duration::from_secs(7), "the cut outlasted host 3's lease; the test needs a longer one");
    cut("del");
    bed.ok("vm5", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.1");

    // vm1 moves back to host 1 (which has no other blue VM, so only the store makes it known):
    // host 3's traffic follows. The blackout is what a ping every 50 ms loses.
    let pinger = std::thread::scope(|s| {
        let ping = s.spawn(|| bed.run("vm5", 40, "ping -i 0.05 -w 12 -W 1 10.0.0.1"));
        std::thread::sleep(Duration::from_secs(2));
        move_vm1(&bed, &etcd, "h2", "p7", 1, "p8");
        ping.join().unwrap()
    });
    let out = String::from_utf8_lossy(&pinger.stdout).to_string();
    let (sent, got) = ping_counts(&out);
    eprintln!("VM move: {sent} pings sent, {got} answered ({} ms lost at 50 ms each)", (sent - got) * 50);
    assert!(got > 0 && got + 120 >= sent, "host 3's traffic follows the moved VM: {out}");
    until("host 3 points vm1 at host 1", Duration::from_secs(5), || {
        let d = static_dest(&bed, 3, "blue", "02:00:00:00:00:01");
        (d.as_deref() == Some("vtep 192.168.77.1"), d)
    });
    bed.ok("vm5", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.1");

    // etcd entirely down: forwarding goes on, changes are refused naming the store. Host 3 is
    // frozen meanwhile (SIGSTOP), so it comes back to a store that compacted what it missed.
    bed.ok("vm5", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.1");
    let h3 = hosts[2].as_ref().unwrap().pid().to_string();
    let signal = |s: &str| std::process::Command::new("kill").args([s, &h3]).status().unwrap();
    signal("-STOP");
    for i in 1..=3 {
        etcd.kill(i);
    }
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    let (code, _, err) = bed.ctl(1, &["tenant", "add", "yellow", "--vni", "400"]);
    assert_ne!(code, 0);
    assert!(err.contains("etcd://") && err.contains("unreachable"), "refused naming the store: {err}");
    let (_, out, _) = bed.ctl(1, &["tenant", "list"]);
    assert!(!out.contains("yellow"), "nothing half-applied: {out}");
    // etcd returns; another writer changes something before the hosts are back: they catch up.
    for i in 1..=3 {
        etcd.restart(i);
    }
    etcd.wait_healthy(3, Duration::from_secs(30));
    etcd.ctl_ok(&["put", &k("tenants/red/spec"), r#"{"vni":200,"mac_limit":77}"#]);
    let got: Value = serde_json::from_str(&etcd.ctl_ok(&["get", &k("tenants/red/spec"), "-w", "json"])).unwrap();
    let rev = got["header"]["revision"].as_u64().expect("revision").to_string();
    etcd.ctl_ok(&["compact", &rev]);
    signal("-CONT");
    until("host 3 took the change made while it was away", Duration::from_secs(20), || {
        let v: Value = bed.ctl_json(3, &["tenant", "show", "red"]);
        (v["mac_limit"].as_u64() == Some(77), v)
    });
    let st: Value = bed.ctl_json(3, &["status"]);
    assert!(st["state"].as_str().unwrap_or("").contains("full resyncs"), "read again after compaction: {st}");
    bed.ok("vm5", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.1");
    until("changes go through again", Duration::from_secs(20), || {
        let r = bed.ctl(1, &["tenant", "add", "yellow", "--vni", "400"]);
        (r.0 == 0, r)
    });
    bed.ok("vm5", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.1");
    bed.ok("vm6", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    for h in hosts.iter_mut() {
        assert!(h.take().unwrap().stop(), "xvsd exits cleanly");
    }
}

/// Moves vm1 from host namespace `from` (port `old`) to host `to` on a new veth `new`, and
/// rebinds its port key there as an orchestrator would.
fn move_vm1(bed: &Bed, etcd: &Etcd, from: &str, old: &str, to: u8, new: &str) {
    let p = &bed.p;
    bed.ok(from, 5, &format!("ip link del {p}-{old}"));
    let ns = format!("{p}-h{to}");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ip netns exec {p}-vm1 ip link add eth0 type veth peer name {p}-{new} && \
             ip netns exec {p}-vm1 ip link set {p}-{new} netns {ns} && \
             ip netns exec {p}-vm1 ip link set eth0 address 02:00:00:00:00:01 up && \
             ip netns exec {p}-vm1 ip addr add 10.0.0.1/24 dev eth0 && \
             ip netns exec {p}-vm1 ethtool -K eth0 tx off tso off gso off >/dev/null && \
             ip netns exec {ns} ethtool -K {p}-{new} tx off tso off gso off >/dev/null && \
             ip netns exec {ns} ip link set {p}-{new} up"
        ))
        .status()
        .unwrap();
    assert!(made.success(), "moving vm1's interface to h{to}");
    etcd.ctl_ok(&["put", &format!("/xvs/v1/hosts/h{to}/tenants/blue"), ""]);
    let b = binding(&format!("h{to}"), &format!("{p}-{new}"), "02:00:00:00:00:01", "10.0.0.1");
    etcd.ctl_ok(&["put", &format!("/xvs/v1/tenants/blue/ports/{p}-p1"), &b]);
}

/// (transmitted, received) of a ping summary.
fn ping_counts(out: &str) -> (u64, u64) {
    let line = out.lines().find(|l| l.contains("packets transmitted")).unwrap_or("");
    let num = |word: &str| {
        line.split(',').find(|p| p.contains(word)).and_then(|p| p.split_whitespace().next()?.parse().ok()).unwrap_or(0)
    };
    (num("transmitted"), num("received"))
}

#[test]
fn the_store_over_tls_with_client_certificates() {
    let bed = Bed::up("t", "fabric");
    let etcd = Etcd::start_tls(&bed);
    let d = etcd.tls_dir().unwrap().display().to_string();
    let cfg = |h: u8, client: &str| {
        format!(
            "{}ca = \"{d}/ca.crt\"\ncert = \"{d}/{client}.crt\"\nkey = \"{d}/{client}.key\"\n",
            config(&bed, &etcd, h)
        )
    };
    // A host with a certificate of the cluster's CA is served.
    let _h1 = bed.xvsd(1, &cfg(1, "client"));
    let st: Value = bed.ctl_json(1, &["status"]);
    let state = st["state"].as_str().unwrap_or("").to_string();
    assert!(state.contains("over TLS with a client certificate") && state.contains(": connected"), "{state}");
    bed.ctl_ok(1, &["tenant", "add", "blue", "--vni", "100"]);
    let got = etcd.ctl_ok(&["get", "/xvs/v1/tenants/blue/spec", "--print-value-only"]);
    assert!(got.contains("\"vni\":100"), "written through TLS: {got}");
    assert!(etcd.ctl_ok(&["get", "/xvs/v1/alive/h1", "--print-value-only"]).contains("192.168.77.1"));
    // A host whose certificate another CA signed is refused by etcd: xvsd runs, says the store
    // is unreachable, and refuses changes naming it.
    let _h2 = bed.xvsd(2, &cfg(2, "rogue"));
    let (code, _, err) = bed.ctl(2, &["tenant", "add", "red", "--vni", "200"]);
    assert_ne!(code, 0);
    assert!(err.contains("unreachable") && err.contains("etcd://"), "{err}");
    let st: Value = bed.ctl_json(2, &["status"]);
    assert!(st["state"].as_str().unwrap_or("").contains("unreachable"), "{st}");
    assert!(etcd.ctl_ok(&["get", "/xvs/v1/alive/h2", "--print-value-only"]).trim().is_empty(), "h2 never got in");
    // A missing certificate file is named at start.
    let mut x = std::process::Command::new("ip")
        .args(["netns", "exec", &format!("{}-h3", bed.p)])
        .arg(xvs_systests::xvsd_bin())
        .arg("--config")
        .arg({
            let p = bed.path("h3-bad.toml");
            std::fs::write(&p, config(&bed, &etcd, 3) + &format!("ca = \"{d}/nope.crt\"\n")).unwrap();
            p
        })
        .args(["--socket", &bed.path("h3-bad.sock").display().to_string()])
        .args(["--state", &bed.path("h3-bad-state.toml").display().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = x.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "xvsd with a missing CA file did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(x.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("nope.crt"), "{err}");
}
