//! xvsctl against a running xvsd in the namespace testbed: every command, JSON output, errors
//! that leave the state unchanged, live reconfiguration under traffic, restart after kill -9,
//! malformed requests, socket permissions.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use xvs_proto::reply::{FdbRow, PortInfo, Snapshot, Status, TenantInfo, Trace, VtepRow, XskMode};
use xvs_systests::{Bed, root, xvsctl_bin};

fn helper(name: &str) -> String {
    root().join("tests/helpers").join(name).display().to_string()
}

/// A spare veth in host 1 (both ends there) to add as a port at run time.
fn spare_veth(bed: &Bed, name: &str) {
    bed.ok(
        "h1",
        5,
        &format!("ip link add {name} type veth peer name {name}x && ip link set {name} up && ip link set {name}x up"),
    );
}

#[test]
fn every_command_with_json_and_errors_that_change_nothing() {
    let bed = Bed::up("x", "xvs");
    let _h1 = bed.xvsd(1, &bed.config(1));
    let _h2 = bed.xvsd(2, &bed.config(2));
    let p = bed.p.clone();
    bed.ok("vm1", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");

    let st: Status = bed.ctl_reply(1, &["status"]);
    assert_eq!(st.uplink, format!("{p}-u1"));
    assert_eq!(st.ports.len(), 3);
    assert_eq!(st.ports[0].afxdp_mode, vec![XskMode::Copy], "AF_XDP mode per socket (veth: copy): {st:?}");
    assert!(bed.ctl_ok(1, &["status"]).contains("AF_XDP"), "human status has a table");

    let tenants: Vec<TenantInfo> = bed.ctl_reply(1, &["tenant", "list"]);
    assert_eq!(tenants.len(), 2);
    let before = bed.ctl_ok(1, &["config", "export"]);

    // Rejected commands: a one-line error naming the bad value, exit 1, nothing changed.
    let spare = format!("{p}-s1");
    let p1 = format!("{p}-p1");
    spare_veth(&bed, &spare);
    let rejected: Vec<(Vec<&str>, &str)> = vec![
        (vec!["tenant", "show", "nope"], "unknown tenant \"nope\""),
        (vec!["tenant", "add", "green", "--vni", "100"], "duplicate VNI 100"),
        (vec!["tenant", "add", "green", "--vni", "0"], "VNI 0 out of range"),
        (vec!["tenant", "add", "green", "--vni", "16777216"], "VNI 16777216 out of range"),
        (vec!["tenant", "add", "bad name!", "--vni", "7"], "invalid name"),
        (vec!["tenant", "add", "blue", "--vni", "7"], "tenant \"blue\" already exists"),
        (vec!["tenant", "del", "blue"], "still has ports"),
        (vec!["port", "add", &spare, "--tenant", "blue", "--mac", "02:00:00:00:zz:01"], "malformed MAC address"),
        (
            vec!["port", "add", &spare, "--tenant", "blue", "--mac", "02:00:00:00:00:31", "--ip", "10.0.0.300"],
            "malformed IP address \"10.0.0.300\"",
        ),
        (vec!["port", "add", &spare, "--tenant", "mauve", "--mac", "02:00:00:00:00:31"], "unknown tenant \"mauve\""),
        (
            vec!["port", "add", &p1, "--tenant", "red", "--mac", "02:00:00:00:00:31"],
            "already exists (in tenant \"blue\")",
        ),
        (
            vec!["port", "add", &spare, "--tenant", "blue", "--mac", "02:00:00:00:00:01"],
            "duplicate MAC 02:00:00:00:00:01",
        ),
        (vec!["vtep", "add", "blue", "192.168.77.2"], "listed twice"),
        (vec!["vtep", "add", "blue", "192.168.77.1"], "our own VTEP"),
        (vec!["vtep", "add", "blue", "300.1.1.1"], "malformed IP address"),
        (vec!["fdb", "add", "blue", "02:00:00:00:00:99", "192.168.77.9"], "not in the tenant's vteps"),
        (vec!["fdb", "add", "blue", "02:00:00:00:00:01", "192.168.77.2"], "duplicate MAC 02:00:00:00:00:01"),
        (vec!["fdb", "del", "blue", "02:00:00:00:00:98"], "no static FDB entry 02:00:00:00:00:98"),
        (vec!["trace", "nope", "--hex", "00"], "unknown port \"nope\""),
        (vec!["trace", &p1, "--hex", "0g"], "malformed frame hex"),
        // non-ASCII once panicked the handler with the control state locked (every later
        // request failed); the commands after this one prove the daemon still answers
        (vec!["trace", &p1, "--hex", "aéb"], "'é' at digit 1 is not a hex digit"),
    ];
    for (args, expect) in &rejected {
        let (code, _, err) = bed.ctl(1, args);
        assert_eq!(code, 1, "{args:?} should fail");
        assert!(err.contains(expect), "{args:?}: expected {expect:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err:?}");
        assert_eq!(bed.ctl_ok(1, &["config", "export"]), before, "{args:?} changed the configuration");
    }
    assert_eq!(bed.xdp_attached("h1"), 3, "no stray XDP program from rejected port adds");

    // Accepted commands.
    bed.ctl_ok(1, &["tenant", "add", "green", "--vni", "300", "--mac-limit", "64"]);
    let g: TenantInfo = bed.ctl_reply(1, &["tenant", "show", "green"]);
    assert_eq!((g.vni, g.mac_limit), (300, 64));
    bed.ctl_ok(1, &["vtep", "add", "green", "192.168.77.2"]);
    let vteps: Vec<VtepRow> = bed.ctl_reply(1, &["vtep", "list", "green"]);
    assert_eq!(vteps[0].vtep, "192.168.77.2");
    bed.ctl_ok(1, &["port", "add", &spare, "--tenant", "green", "--mac", "02:00:00:00:00:31", "--ip", "10.0.0.31"]);
    let ports: Vec<PortInfo> = bed.ctl_reply(1, &["port", "list"]);
    assert!(ports.iter().any(|x| x.status.name == spare && x.status.tenant.as_deref() == Some("green")), "{ports:?}");
    assert_eq!(bed.xdp_attached("h1"), 4, "the new port got its XDP program");
    bed.ctl_ok(1, &["fdb", "add", "green", "02:00:00:00:00:41", "192.168.77.2", "02:00:00:00:00:42", "192.168.77.2"]);
    let fdb: Vec<FdbRow> = bed.ctl_reply(1, &["fdb", "show", "green"]);
    let statics = fdb.iter().filter(|r| r.origin == "static").count();
    assert_eq!(statics, 3, "two remote static entries and the port's MAC: {fdb:?}");
    let all: Vec<FdbRow> = bed.ctl_reply(1, &["fdb", "show"]);
    assert!(all.iter().any(|r| r.origin == "learned remote" && r.age_secs.is_some()), "{all:?}");
    bed.ctl_ok(1, &["fdb", "del", "green", "02:00:00:00:00:42"]);
    assert_eq!(bed.ctl_reply::<Vec<FdbRow>>(1, &["fdb", "show", "green"]).len(), 2);
    // static entries are bounded by the tenant's mac_limit (64: its port's MAC and one are in)
    let many: Vec<String> =
        (0..63).flat_map(|i| [format!("02:00:00:00:01:{i:02x}"), "192.168.77.2".to_string()]).collect();
    let mut args = vec!["fdb", "add", "green"];
    args.extend(many.iter().map(String::as_str));
    let (code, _, err) = bed.ctl(1, &args);
    assert_eq!(code, 1);
    assert!(
        err.contains("tenant \"green\": 65 static FDB entries (port MACs included), more than its mac_limit 64"),
        "{err}"
    );
    bed.ctl_ok(1, &args[..args.len() - 2]); // 64: at the bound

    let tr: Trace = bed
        .ctl_reply(1, &["trace", &format!("{p}-p1"), "--udp", "02:00:00:00:00:01,02:00:00:00:00:02,10.0.0.1,10.0.0.2"]);
    assert!(tr.action.starts_with("encapsulate VNI 100"), "{tr:?}");
    assert!(tr.steps.iter().any(|s| s.contains("fdb lookup")), "{tr:?}");
    let tr: Trace = bed
        .ctl_reply(1, &["trace", &format!("{p}-p1"), "--udp", "02:00:00:00:00:09,02:00:00:00:00:02,10.0.0.1,10.0.0.2"]);
    assert_eq!(tr.reason.as_deref(), Some("spoofed_src_mac"));
    assert!(
        bed.ctl_ok(1, &["trace", &format!("{p}-p3"), "--arp", "02:00:00:00:00:01,10.0.0.1,10.0.0.2"])
            .contains("action: flood")
    );

    let stats: Snapshot = bed.ctl_reply(1, &["stats"]);
    assert!(stats.stats.ports[1].rx_packets > 0, "{stats:?}");
    assert!((0.0..=1.0).contains(&stats.core.busy_share), "{stats:?}");
    assert!(bed.ctl_ok(1, &["stats"]).contains("RX_PKTS"));
    bed.ctl_ok(1, &["stats", "clear"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(bed.ctl_reply::<Snapshot>(1, &["stats"]).stats.ports[1].rx_packets, 0);

    // watch refreshes in place until interrupted
    let mut w = Command::new(xvsctl_bin())
        .args(["--socket", bed.socket(1).to_str().unwrap(), "stats", "--watch", "0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _ = w.kill();
    let out = w.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).matches("\x1b[H\x1b[2J").count() >= 2, "watch redraws");

    bed.ctl_ok(1, &["port", "del", &spare]);
    assert_eq!(bed.xdp_attached("h1"), 3, "the removed port's XDP program is gone");
    bed.ctl_ok(1, &["tenant", "del", "green"]);
    assert_eq!(bed.ctl_ok(1, &["config", "export"]), before, "back to the start");

    // import what export gave
    let file = bed.path("cfg.toml");
    std::fs::write(&file, &before).unwrap();
    bed.ctl_ok(1, &["config", "import", file.to_str().unwrap()]);
    assert_eq!(bed.ctl_ok(1, &["config", "export"]), before);

    // completion and man page come from the clap definitions
    assert!(bed.ctl_ok(1, &["completion", "bash"]).contains("xvsctl"));
    assert!(bed.ctl_ok(1, &["man"]).contains(".TH"));
    // no daemon: a clear error
    let o = Command::new(xvsctl_bin()).args(["--socket", "/nonexistent/xvs.sock", "status"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect to xvsd"));
}

#[test]
fn reconfiguring_another_tenant_during_a_stream_loses_nothing() {
    let bed = Bed::up("r", "xvs");
    let _h1 = bed.xvsd(1, &bed.config(1));
    let _h2 = bed.xvsd(2, &bed.config(2));
    let p = bed.p.clone();
    let spare = format!("{p}-s1");
    spare_veth(&bed, &spare);
    bed.ok("vm1", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.2");
    bed.ok("vm2", 20, "ping -c 2 -i 0.2 -W 2 10.0.0.1");

    let mut rx = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{p}-vm2"),
            "timeout",
            "120",
            "python3",
            &helper("udp_count.py"),
            "10.0.0.2",
            "9001",
            "3",
            "110",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rx_out = BufReader::new(rx.stdout.take().unwrap());
    let mut line = String::new();
    rx_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    // tenant blue streams 2000 frames/s for 25 s from vm1 to vm2 across the overlay
    let generator = Command::new("ip")
        .args(["netns", "exec", &format!("{p}-vm1"), "timeout", "60"])
        .arg(root().join("target/release/xvs-pktgen"))
        .args(["eth0", "02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", "2000", "25"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // meanwhile tenant green is added, changed and removed on host 1, up to 100 times, for as
    // long as the stream lasts (on a loaded machine fewer cycles fit; enough must, so the
    // changes really overlap the stream)
    let mut generator = generator;
    let mut cycles = 0u32;
    while cycles < 100 && generator.try_wait().unwrap().is_none() {
        bed.ctl_ok(1, &["tenant", "add", "green", "--vni", "300"]);
        bed.ctl_ok(1, &["vtep", "add", "green", "192.168.77.2"]);
        bed.ctl_ok(1, &["port", "add", &spare, "--tenant", "green", "--mac", "02:00:00:00:00:31", "--ip", "10.0.0.31"]);
        bed.ctl_ok(1, &["fdb", "add", "green", &format!("02:00:00:00:01:{:02x}", cycles), "192.168.77.2"]);
        bed.ctl_ok(1, &["port", "del", &spare]);
        bed.ctl_ok(1, &["tenant", "del", "green"]);
        cycles += 1;
    }
    let out = generator.wait_with_output().unwrap();
    let sent: u64 =
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("pktgen report")["sent"].as_u64().unwrap();
    line.clear();
    rx_out.read_line(&mut line).unwrap();
    let _ = rx.wait();
    let got: u64 = line.trim().parse().unwrap();
    assert!(cycles >= 20, "only {cycles} cycles of 6 reconfigurations ran during the 25 s stream");
    assert!(sent >= 40_000, "generator sent {sent}");
    assert_eq!(
        got,
        sent,
        "tenant blue lost {} of {sent} frames during {cycles} reconfiguration cycles of green",
        sent - got
    );
}

#[test]
fn restart_after_kill_9_restores_the_configuration() {
    let bed = Bed::up("k9", "xvs");
    let h1 = bed.xvsd(1, &bed.config(1));
    let _h2 = bed.xvsd(2, &bed.config(2));
    let p = bed.p.clone();
    let spare = format!("{p}-s1");
    spare_veth(&bed, &spare);
    bed.ctl_ok(1, &["tenant", "add", "green", "--vni", "300"]);
    bed.ctl_ok(1, &["vtep", "add", "green", "192.168.77.2"]);
    bed.ctl_ok(1, &["port", "add", &spare, "--tenant", "green", "--mac", "02:00:00:00:00:31", "--ip", "10.0.0.31"]);
    bed.ctl_ok(1, &["fdb", "add", "green", "02:00:00:00:00:41", "192.168.77.2"]);
    bed.ctl_ok(1, &["fdb", "add", "blue", "02:00:00:00:00:02", "192.168.77.2"]);
    let before = bed.ctl_ok(1, &["config", "export"]);
    assert!(before.contains("02:00:00:00:00:41") && before.contains("green"));
    h1.kill9();
    std::thread::sleep(Duration::from_millis(300));
    // the original config file does not have green: it must come from the state
    let h1 = bed.xvsd_keep_state(1, &bed.config(1));
    let after = bed.ctl_ok(1, &["config", "export"]);
    assert_eq!(after, before, "configuration after kill -9 and restart");
    bed.ok("vm1", 20, "ping -c 3 -i 0.2 -W 2 10.0.0.2");
    let s = h1.fresh_stats();
    assert!(s["stats"]["ports"][1]["rx_packets"].as_u64().unwrap() >= 3, "traffic flows after the restart");
    assert_eq!(bed.xdp_attached("h1"), 4, "uplink, two VM ports and green's port attached again");
}

#[test]
fn malformed_requests_get_an_error_and_permissions_hold() {
    let bed = Bed::up("m", "xvs");
    let _h1 = bed.xvsd(1, &bed.config(1));
    let sock = bed.socket(1);
    for (kind, expect) in [
        ("truncated", "malformed request"),
        ("wrong_types", "invalid request"),
        ("unknown_op", "invalid request"),
        ("bad_version", "unsupported protocol version 99"),
        ("not_json", "malformed request"),
        ("huge", "too large"),
        // more idle connections than served at once: refused with a reason, then served
        ("flood", "too many control connections (at most 64); try again (busy) | then ok: True"),
    ] {
        let o = Command::new("timeout")
            .args(["20", "python3", &helper("raw_ctl.py"), sock.to_str().unwrap(), kind])
            .output()
            .unwrap();
        let reply = String::from_utf8_lossy(&o.stdout);
        let kind = if kind == "flood" { "(busy)" } else { "(malformed)" };
        assert!(
            reply.contains(expect) && reply.contains(kind),
            "{kind}: expected {expect:?}, got {reply:?} {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(bed.ctl_reply::<Status>(1, &["status"]).protocol, xvs_proto::VERSION, "xvsd still answers");

    // mode 0660 root:root: a user outside the group is refused
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.uid(), 0);
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(xvsctl_bin())
        .args(["--socket", sock.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn static_fdb_macs_match_however_the_file_writes_them() {
    let bed = Bed::up("fm", "xvs");
    let cfg = bed.config(1).replacen(
        "vteps = [\"192.168.77.2\"]\n",
        "vteps = [\"192.168.77.2\"]\nfdb = [{ mac = \"02-00-00-00-00-0A\", vtep = \"192.168.77.2\" }, \
         { mac = \"02:00:00:00:00:0B\", vtep = \"192.168.77.2\" }]\n",
        1,
    );
    let h1 = bed.xvsd(1, &cfg);
    let count = |mac: &str| {
        let fdb: Vec<FdbRow> = bed.ctl_reply(1, &["fdb", "show", "blue"]);
        fdb.iter().filter(|r| r.mac == mac && r.origin == "static").count()
    };
    assert_eq!(count("02:00:00:00:00:0a"), 1, "{}", bed.ctl_ok(1, &["fdb", "show", "blue"]));
    // re-adding in canonical form replaces, it does not duplicate
    bed.ctl_ok(1, &["fdb", "add", "blue", "02:00:00:00:00:0a", "192.168.77.2"]);
    assert_eq!(count("02:00:00:00:00:0a"), 1);
    // deleting in yet another spelling finds it
    bed.ctl_ok(1, &["fdb", "del", "blue", "02:00:00:00:00:0B"]);
    assert_eq!(count("02:00:00:00:00:0b"), 0);
    // and the next change (a whole-config one) still goes through
    bed.ctl_ok(1, &["tenant", "add", "green", "--vni", "300"]);
    let export = bed.ctl_ok(1, &["config", "export"]);
    assert!(export.contains("02:00:00:00:00:0a") && !export.contains("0A") && !export.contains("0b"), "{export}");
    // a restart from the state file takes the same entries back
    h1.kill9();
    let _h1 = bed.xvsd_keep_state(1, &cfg);
    assert_eq!(count("02:00:00:00:00:0a"), 1);
    assert_eq!(count("02:00:00:00:00:0b"), 0);
}

#[test]
fn the_metrics_endpoint_survives_abusive_clients() {
    let bed = Bed::up("me", "xvs");
    let _h1 = bed.xvsd_args(1, &bed.config(1), &["--metrics", "127.0.0.1:9471"]);
    let out = bed.ok("h1", 60, &format!("python3 {} 127.0.0.1:9471", helper("metrics_abuse.py")));
    assert!(out.contains("all metrics checks passed"), "{out}");
    // and the control socket still answers
    bed.ctl_ok(1, &["status"]);
}
