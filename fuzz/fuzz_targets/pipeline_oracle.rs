//! Structure-aware fuzzing of the whole switch with an oracle.
//!
//! A few input bytes choose the switch (QoS on the uplink or not, a policer on one VM port or
//! not); the rest is a series of records, each building one frame that gets far enough to
//! exercise forwarding: a VM frame with the port's own source MAC and IP (or, when a bit
//! says so, a spoofed one), or a VXLAN frame with valid outer headers (or one chosen
//! corruption) from a listed or unlisted VTEP; the bytes that follow are fuzzed. Records
//! are grouped into receive batches.
//!
//! Checked on every run:
//! - isolation: no frame that only one tenant injected ever leaves on a port of another
//!   tenant, nor on the uplink under another tenant's VNI;
//! - accounting: each batch's frames show up as outputs, drops with a reason, hand-overs to
//!   the host stack or frames queued in the scheduler;
//! - no frame is lost: after draining, every frame id is back on the free list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use xvs_switch::config::Config;
use xvs_switch::frames;
use xvs_switch::pipeline::encap::{Underlayer, parse_outer};
use xvs_switch::sim::Sim;
use xvs_switch::tables::{Tables, UPLINK};
use xvs_switch::types::PortId;
use xvs_switch::wire::MacAddr;

#[path = "common.rs"]
mod common;
use common::CONFIG;

const FRAMES: u32 = 256;
/// Tenant of each port id (0 is the uplink).
const PORT_TENANT: [u32; 4] = [u32::MAX, 0, 0, 1];
const VNI_TENANT: [(u32, u32); 2] = [(100, 0), (200, 1)];

/// The four switches: QoS on or off, policer on or off.
fn tables(variant: usize) -> Arc<Tables> {
    static T: OnceLock<Vec<Arc<Tables>>> = OnceLock::new();
    T.get_or_init(|| {
        (0..4)
            .map(|v| {
                let mut c = CONFIG.to_string();
                if v & 1 != 0 {
                    c = c
                        .replace("mtu = 1600\n", "mtu = 1600\nrate = \"100M\"\n")
                        .replace("vni = 100\n", "vni = 100\nguarantee = \"60M\"\n")
                        .replace("vni = 200\n", "vni = 200\nlimit = \"30M\"\n");
                }
                if v & 2 != 0 {
                    c = c.replacen("ips = [\"10.0.0.1\"]\n", "ips = [\"10.0.0.1\"]\npolicer = { rate = \"10M\" }\n", 1);
                }
                Arc::new(Config::from_toml(&c).unwrap().build(None, None).unwrap())
            })
            .collect()
    })[variant]
        .clone()
}

const VM1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const VM3: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);
const REMOTE: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x33]);
const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0xee, 2]);
const BCAST: MacAddr = MacAddr([0xff; 6]);

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, d)
}

/// A VM frame for `port` from record bytes `a` (choices) and `body` (fuzzed).
fn vm_frame(port: u16, a: u8, body: &[u8]) -> Vec<u8> {
    let (mac, me) = if port == 2 { (VM3, ip(3)) } else { (VM1, ip(1)) };
    let src = if a & 1 != 0 { MacAddr([2, 0, 0, 0, 0, body.first().copied().unwrap_or(9)]) } else { mac };
    let dst = match (a >> 1) & 3 {
        0 => VM3,
        1 => REMOTE,
        2 => BCAST,
        _ => VM1,
    };
    let mut f = match (a >> 3) & 3 {
        0 => frames::udp4(src, dst, me, ip(2), 1000, 2000, body),
        1 => frames::arp_request(src, me, ip(body.first().copied().unwrap_or(2))),
        2 => {
            let mut f = frames::udp4(src, dst, me, ip(2), 1000, 2000, body);
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f
        }
        _ => {
            let mut f = dst.0.to_vec();
            f.extend_from_slice(&src.0);
            f.extend_from_slice(body);
            f
        }
    };
    if a & 0x20 != 0 && f.len() > 30 {
        f[26..30].copy_from_slice(&[10, 0, 0, 9]); // spoofed source IP
    }
    f
}

/// A VXLAN frame from record bytes `a`, `b` (choices, one corruption) and `body`; returns
/// it and the inner frame with the tenant its VNI names (if any).
fn uplink_frame(t: &Tables, a: u8, b: u8, body: &[u8]) -> (Vec<u8>, Vec<u8>, Option<u32>) {
    let vni = match a & 3 {
        0 => 100,
        1 => 200,
        2 => 999,
        _ => u32::from(b),
    };
    let vtep = match (a >> 2) & 3 {
        0 | 1 => Ipv4Addr::new(192, 168, 77, 2),
        2 => Ipv4Addr::new(192, 168, 77, 3),
        _ => Ipv4Addr::new(192, 168, 77, 9),
    };
    let src = match (a >> 4) & 3 {
        0 | 1 => REMOTE,
        2 => MacAddr([2, 0, 0, 0, 0, 0x44]),
        _ => VM1, // claims a local port's MAC
    };
    let dst = match a >> 6 {
        0 => VM1,
        1 => VM3,
        2 => BCAST,
        _ => REMOTE,
    };
    let mut inner = frames::udp4(src, dst, ip(33), ip(1), 3000, 4000, body);
    match b % 8 {
        5 => inner[12..14].copy_from_slice(&[0x81, 0x00]),
        6 => inner[6] |= 1, // multicast source
        _ => {}
    }
    let mut f = frames::vxlan4(&t.underlay, PEER, vtep, vni, &inner);
    match b % 8 {
        1 => f[24] ^= 0xff,  // outer IPv4 checksum
        2 => f[42] = 0,      // VXLAN flags
        3 => f[38] ^= 0x40,  // UDP length
        4 => f.truncate(45), // cut in the VXLAN header
        7 => f[33] ^= 1,     // not our VTEP
        _ => {}
    }
    let tenant = VNI_TENANT.iter().find(|(v, _)| *v == vni).map(|(_, t)| *t);
    (f, inner, tenant)
}

/// Tenants that injected exactly these bytes.
type Seen = HashMap<Vec<u8>, u8>;

fn check_isolated(seen: &Seen, bytes: &[u8], tenant: u32, where_: &str) {
    if let Some(mask) = seen.get(bytes) {
        assert!(mask & (1 << tenant) != 0, "isolation: a frame only tenant mask {mask:#b} injected left on {where_}");
    }
}

fn total_drops(s: &Sim) -> u64 {
    s.core.pipeline.stats.ports.iter().map(|c| c.drops.iter().sum::<u64>()).sum()
}

fn queued(s: &Sim) -> u64 {
    s.core.qos.as_ref().map_or(0, |q| q.backlog())
}

/// Takes every port's output, checking isolation; returns how many frames left.
fn collect(s: &mut Sim, seen: &Seen) -> u64 {
    let mut n = 0;
    for p in 0..4u16 {
        for f in s.take(PortId(p)) {
            n += 1;
            if p == UPLINK.0 {
                if let Ok(Underlayer::Vxlan(o)) = parse_outer(&f, Ipv4Addr::new(192, 168, 77, 2)) {
                    if let Some((_, tn)) = VNI_TENANT.iter().find(|(v, _)| *v == o.vni) {
                        check_isolated(seen, &f[o.inner_off..o.inner_off + o.inner_len], *tn, "the uplink");
                    }
                }
            } else {
                check_isolated(seen, &f, PORT_TENANT[usize::from(p)], &format!("port {p}"));
            }
        }
    }
    n
}

fuzz_target!(|data: &[u8]| {
    let Some((&variant, mut rest)) = data.split_first() else { return };
    let t = tables(usize::from(variant & 3));
    let mut s = Sim::new(Arc::clone(&t), FRAMES);
    let now = s.now;
    s.core.pipeline.neigh.update(Ipv4Addr::new(192, 168, 77, 2), PEER, now);
    s.core.pipeline.neigh.update(Ipv4Addr::new(192, 168, 77, 3), PEER, now);
    let mut seen: Seen = HashMap::new();
    // records: [kind, a, b, len, body...]; kind bit 7 ends the batch
    let mut batch = 0u64;
    let (mut drops, mut to_host, mut backlog) = (0, 0, 0);
    while rest.len() >= 4 {
        let (kind, a, b) = (rest[0], rest[1], rest[2]);
        let len = usize::from(rest[3]).min(rest.len() - 4);
        let body = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let port = kind % 4;
        let injected = if port == 0 {
            let (f, inner, tenant) = uplink_frame(&t, a, b, body);
            if let Some(tn) = tenant {
                *seen.entry(inner).or_default() |= 1 << tn;
            }
            s.inject(UPLINK, &f)
        } else {
            let f = vm_frame(u16::from(port), a, body);
            *seen.entry(f.clone()).or_default() |= 1 << PORT_TENANT[usize::from(port)];
            s.inject(PortId(u16::from(port)), &f)
        };
        batch += u64::from(injected);
        if kind & 0x80 != 0 || rest.len() < 4 {
            s.run();
            let out = collect(&mut s, &seen);
            let (d, h, q) = (total_drops(&s), s.core.pipeline.stats.events.to_host, queued(&s));
            // every frame of the batch is out, dropped with a reason, with the host stack or
            // queued (floods make more outputs than frames; queued frames leave later)
            // (frames released from the queue count as outputs and leave it: they cancel)
            let accounted = (out + (d - drops) + (h - to_host) + q) as i64 - backlog as i64;
            assert!(accounted >= batch as i64, "{batch} frames in, {accounted} accounted for");
            (drops, to_host, backlog, batch) = (d, h, q, 0);
            s.advance(u64::from(b) * 10_000);
        }
    }
    // drain the scheduler: every frame comes back
    for _ in 0..200 {
        s.advance(10_000_000);
        s.core.poll(s.now);
        collect(&mut s, &seen);
        if queued(&s) == 0 {
            break;
        }
    }
    s.run();
    collect(&mut s, &seen);
    assert_eq!(s.core.free.len(), FRAMES as usize, "frames lost");
});
