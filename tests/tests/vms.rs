//! Real VMs on xvs: four qemu guests (Debian's kernel, TCG) on two xvs hosts, two tenants with
//! the same MACs and IPs, each NIC a virtio-net device on a tap exactly as qemu makes it by
//! default (vnet_hdr on: the guests leave checksums partial and hand over TCP super-frames).
//! One test, so the guests boot once (in parallel) and every case shares them.

use serde_json::Value;
use std::time::{Duration, Instant};
use xvs_systests::vm::{Guest, GuestSpec, guest_dir, iperf_mbits};
use xvs_systests::{Bed, drops, port_counter, port_drop};

const BOOT: Duration = Duration::from_secs(180);

/// A port's entry in `xvsctl port list --json`.
fn port(bed: &Bed, h: u8, name: &str) -> Value {
    let list = bed.ctl_json(h, &["port", "list"]);
    list.as_array().and_then(|a| a.iter().find(|p| p["name"] == name).cloned()).unwrap_or(Value::Null)
}

/// Waits (bounded) until `name` on host `h` is in `state`.
fn wait_state(bed: &Bed, h: u8, name: &str, state: &str, within: Duration) {
    let t = Instant::now();
    loop {
        let p = port(bed, h, name);
        if p["state"] == state {
            return;
        }
        assert!(t.elapsed() < within, "port {name} on h{h} not {state} within {within:?}: {p}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn event(stats: &Value, name: &str) -> u64 {
    stats["stats"]["events"][name].as_u64().unwrap_or(0)
}

/// A counter of the tc/XDP program on interface `ifname`.
fn prog_counter(stats: &Value, ifname: &str, counter: &str) -> u64 {
    let progs = stats["xdp"].as_array().expect("xdp counters");
    let p = progs.iter().find(|p| p[0] == ifname).unwrap_or_else(|| panic!("no program counters for {ifname}"));
    p[1].as_array().unwrap().iter().find(|c| c[0] == counter).and_then(|c| c[1].as_u64()).unwrap_or(0)
}

#[test]
fn qemu_vms_with_default_offloads_get_tcp_isolation_and_survive_restarts() {
    let bed = Bed::up("v", "bare");
    let images = guest_dir();
    let p = bed.p.clone();

    // xvsd starts before any VM: every VM port waits for its tap, and xvsd still starts.
    let h1 = bed.xvsd(1, &bed.config_taps(1));
    let h2 = bed.xvsd(2, &bed.config_taps(2));
    for (h, t) in [(1, "t1"), (1, "t3"), (2, "t2"), (2, "t4")] {
        assert_eq!(port(&bed, h, &format!("{p}-{t}"))["state"], "waiting", "{t} waits while its VM is stopped");
    }

    let spec = |h: u8, n: u8, name: &str| GuestSpec {
        netns: format!("{p}-h{h}"),
        tap: format!("{p}-t{n}"),
        mac: format!("02:00:00:00:00:0{h}"),
        ip: format!("10.0.0.{h}/24"),
        name: name.to_string(),
        dir: bed.path(""),
        scripts: None,
    };
    let specs = [spec(1, 1, "blue1"), spec(1, 3, "red1"), spec(2, 2, "blue2"), spec(2, 4, "red2")];
    let mut g: Vec<Guest> = specs.iter().cloned().map(|s| Guest::start(s, &images)).collect();
    for x in &mut g {
        x.wait_up(BOOT);
    }
    // The taps appeared with the VMs: attached with no command.
    for (h, t) in [(1, "t1"), (1, "t3"), (2, "t2"), (2, "t4")] {
        wait_state(&bed, h, &format!("{p}-{t}"), "attached", Duration::from_secs(5));
        assert_eq!(port(&bed, h, &format!("{p}-{t}"))["io"], "af_packet", "a tap is read with its offload header");
    }
    let (blue1, rest) = g.split_at_mut(1);
    let (red1, rest) = rest.split_at_mut(1);
    let (blue2, red2) = rest.split_at_mut(1);
    let (blue1, red1, blue2, red2) = (&mut blue1[0], &mut red1[0], &mut blue2[0], &mut red2[0]);
    assert!(blue1.ok("ethtool -k eth0", 10).contains("tcp-segmentation-offload: on"), "qemu's default: TSO on");

    // Ping, and isolation: the same address answers with its own tenant's identity.
    blue1.ok("ping -c 3 -W 5 10.0.0.2", 30);
    red1.ok("ping -c 3 -W 5 10.0.0.2", 30);
    assert_eq!(blue1.ok("echo | nc -w 5 10.0.0.2 7000", 15).trim(), "blue2");
    assert_eq!(red1.ok("echo | nc -w 5 10.0.0.2 7000", 15).trim(), "red2");
    assert_eq!(red2.ok("echo | nc -w 5 10.0.0.1 7000", 15).trim(), "red1");

    // TCP with qemu's defaults, both directions.
    blue2.ok("iperf3 -s -D", 10);
    let (s1, s2) = (h1.fresh_stats(), h2.fresh_stats());
    let fwd = iperf_mbits(&blue1.ok("iperf3 -c 10.0.0.2 -t 4", 30));
    let rev = iperf_mbits(&blue1.ok("iperf3 -c 10.0.0.2 -t 4 -R", 30));
    assert!(fwd > 30.0, "blue1 -> blue2 with offloads on: {fwd} Mbit/s");
    assert!(rev > 30.0, "blue2 -> blue1 with offloads on: {rev} Mbit/s");
    let (e1, e2) = (h1.fresh_stats(), h2.fresh_stats());
    assert!(event(&e1, "tso_frames") > event(&s1, "tso_frames"), "blue1's super-frames were segmented by xvs");
    assert!(event(&e2, "tso_frames") > event(&s2, "tso_frames"), "blue2's super-frames were segmented by xvs");
    for x in [&mut *blue1, &mut *blue2] {
        assert_eq!(x.tcp_counter("InCsumErrors"), 0, "{} saw bad TCP checksums", x.spec.name);
    }

    // TCP with the guests' offloads off.
    for x in [&mut *blue1, &mut *blue2] {
        x.ok("ethtool -K eth0 tx off sg off tso off gso off", 10);
    }
    let off = iperf_mbits(&blue1.ok("iperf3 -c 10.0.0.2 -t 3", 30));
    let off_rev = iperf_mbits(&blue1.ok("iperf3 -c 10.0.0.2 -t 3 -R", 30));
    assert!(off > 30.0 && off_rev > 30.0, "offloads off: {off} / {off_rev} Mbit/s");
    for x in [&mut *blue1, &mut *blue2] {
        x.ok("ethtool -K eth0 tx on sg on tso on gso on", 10);
        assert_eq!(x.tcp_counter("InCsumErrors"), 0, "{} saw bad TCP checksums", x.spec.name);
    }

    // A VM never reaches the hypervisor's own addresses, even on its own tap.
    bed.ok("h1", 5, &format!("ip addr add 10.0.0.254/24 dev {p}-t1"));
    let (code, out) = blue1.sh("ping -c 2 -W 2 10.0.0.254", 15);
    assert_ne!(code, 0, "blue1 reached the host's 10.0.0.254 on its tap:\n{out}");
    bed.ok("h1", 5, &format!("ip addr del 10.0.0.254/24 dev {p}-t1"));
    let s = h1.fresh_stats();
    assert!(prog_counter(&s, &format!("{p}-t1"), "tc_vm_host_blocked") > 0, "the tap's frames were kept from the host");

    // Frames larger than a buffer are counted; frames larger than the overlay's MTU get ICMP
    // "fragmentation needed" back, and the guest's path MTU discovery carries on.
    blue1.ok("ip link set eth0 mtu 9000", 10);
    let before = h1.fresh_stats();
    let _ = blue1.sh("ping -c 1 -W 2 -s 5000 10.0.0.2", 10);
    let unreach = blue1.icmp_counter("InDestUnreachs");
    let _ = blue1.sh("ping -c 3 -W 2 -s 1600 10.0.0.2", 15);
    let after = h1.fresh_stats();
    let t1 = format!("{p}-t1");
    assert!(port_drop(&after, &t1, "frame_too_big") > port_drop(&before, &t1, "frame_too_big"), "5 KB frame counted");
    assert!(port_drop(&after, &t1, "mtu_exceeded") > port_drop(&before, &t1, "mtu_exceeded"), "1.6 KB frame counted");
    assert!(event(&after, "icmp_too_big") > event(&before, "icmp_too_big"), "ICMP sent back");
    assert!(blue1.icmp_counter("InDestUnreachs") > unreach, "the guest got fragmentation-needed");
    blue1.ok("ip link set eth0 mtu 1500", 10);

    // qemu killed: its port waits, the rest keeps forwarding; qemu started again with the same
    // tap name (a new interface): reachable again with no command.
    let rx_before = port_counter(&h1.fresh_stats(), &format!("{p}-t1"), "rx_packets");
    red1.kill();
    wait_state(&bed, 1, &format!("{p}-t3"), "waiting", Duration::from_secs(5));
    blue1.ok("ping -c 3 -W 5 10.0.0.2", 30);
    assert!(port_counter(&h1.fresh_stats(), &format!("{p}-t1"), "rx_packets") > rx_before);
    let mut red1 = Guest::start(specs[1].clone(), &images);
    red1.wait_up(BOOT);
    wait_state(&bed, 1, &format!("{p}-t3"), "attached", Duration::from_secs(5));
    red1.ok("ping -c 3 -W 5 10.0.0.2", 30);
    assert_eq!(red1.ok("echo | nc -w 5 10.0.0.2 7000", 15).trim(), "red2");
    let t3 = port(&bed, 1, &format!("{p}-t3"));
    assert!(t3["lost"].as_u64() >= Some(1) && t3["reattached"].as_u64() >= Some(2), "lifecycle counted: {t3}");

    // A VM started with xvs's qemu scripts joins its tenant by itself and leaves it when qemu
    // stops; the libvirt hook does the same from a domain's XML.
    let root = xvs_systests::root();
    let env = vec![
        ("XVS_TENANT".to_string(), "blue".to_string()),
        ("XVS_MAC".to_string(), "02:00:00:00:00:05".to_string()),
        ("XVS_IPS".to_string(), "10.0.0.5".to_string()),
        ("XVS_SOCKET".to_string(), bed.socket(1).display().to_string()),
        ("XVSCTL".to_string(), xvs_systests::xvsctl_bin().display().to_string()),
    ];
    let mut blue5 = Guest::start(
        GuestSpec {
            mac: "02:00:00:00:00:05".into(),
            ip: "10.0.0.5/24".into(),
            name: "blue5".into(),
            tap: format!("{p}-t5"),
            scripts: Some((root.join("scripts/xvs-ifup"), root.join("scripts/xvs-ifdown"), env)),
            ..specs[0].clone()
        },
        &images,
    );
    blue5.wait_up(BOOT);
    wait_state(&bed, 1, &format!("{p}-t5"), "attached", Duration::from_secs(5));
    assert_eq!(blue5.ok("echo | nc -w 5 10.0.0.2 7000", 15).trim(), "blue2", "blue5 is in blue");
    assert!(blue5.stop(), "qemu stops cleanly");
    assert_eq!(port(&bed, 1, &format!("{p}-t5")), Value::Null, "xvs-ifdown removed the port");
    let xml = format!(
        "<domain type='kvm'><name>vm6</name><metadata><xvs:ports xmlns:xvs='https://xvs.invalid/libvirt/1'>\
         <xvs:port dev='{p}-t6' tenant='red' ips='10.0.0.6'/></xvs:ports></metadata><devices>\
         <interface type='ethernet'><mac address='02:00:00:00:00:06'/><target dev='{p}-t6'/>\
         <model type='virtio'/></interface></devices></domain>"
    );
    let hook = |op: &str| {
        let mut c = std::process::Command::new(root.join("scripts/xvs-libvirt-hook"))
            .args(["vm6", op, "begin", "-"])
            .env("XVS_SOCKET", bed.socket(1))
            .env("XVSCTL", xvs_systests::xvsctl_bin())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(c.stdin.as_mut().unwrap(), xml.as_bytes()).unwrap();
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success(), "hook {op}");
    };
    hook("prepare");
    let t6 = port(&bed, 1, &format!("{p}-t6"));
    assert_eq!((t6["tenant"].as_str(), t6["state"].as_str()), (Some("red"), Some("waiting")), "{t6}");
    hook("release");
    assert_eq!(port(&bed, 1, &format!("{p}-t6")), Value::Null, "the hook removed the port");

    let s = h1.fresh_stats();
    for r in ["bad_offload", "gso_unsupported", "kernel_rx_dropped"] {
        assert_eq!(drops(&s, r), 0, "no {r} drops on h1: {}", s["stats"]["ports"]);
    }
    drop(red1);
    drop(g);
    assert!(h1.stop(), "xvsd h1 exits cleanly");
    assert!(h2.stop(), "xvsd h2 exits cleanly");
}
