//! The control command handler on sequences of commands, with an oracle.
//!
//! The input is a series of records; each builds one command (the op from one byte, every
//! field from a short list of names, VNIs, MACs, IPs and rates that mostly exist or are
//! almost right, or from raw fuzz bytes) and chooses whether one of its effects fails
//! (opening a port, storing). The commands run through the control plane in the in-memory
//! daemon (`control::model`), which models what the cores hold and what the store would
//! give back at the next start.
//!
//! Checked after every command: no panic; a refused or failed command changed nothing; the
//! cores' static FDB entries equal the desired state's; the store gives back exactly the
//! acknowledged state, and the next start accepts it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use xvs_switch::config::Config;
use xvs_switch::control::model::{Fault, Model, Outcome};
use xvs_switch::control::proto::Command;

#[path = "common.rs"]
mod common;
use common::CONFIG;

/// Reads fuzz bytes; past the end, zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        *b
    }

    /// One of `list`, or (for the last choice) a short raw string.
    fn pick(&mut self, list: &[&str]) -> String {
        let b = self.byte() as usize;
        if b % (list.len() + 1) < list.len() {
            return list[b % (list.len() + 1)].to_string();
        }
        let n = (self.byte() % 12) as usize;
        let take = n.min(self.0.len());
        let (s, rest) = self.0.split_at(take);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    fn opt(&mut self, list: &[&str]) -> Option<String> {
        (self.byte() & 1 == 1).then(|| self.pick(list))
    }
}

const TENANTS: &[&str] = &["blue", "red", "green", "x"];
const PORTS: &[&str] = &["b1", "b3", "r1", "g1", "g2"];
const MACS: &[&str] = &[
    "02:00:00:00:00:01",
    "02:00:00:00:00:0A",
    "02-00-00-00-00-0a",
    "02:00:00:00:00:0b",
    "02:00:00:00:00:02",
    "ff:ff:ff:ff:ff:ff",
    "01:00:5e:00:00:01",
    "02:00:00:00:00",
];
const IPS: &[&str] = &["10.0.0.1", "10.0.0.9", "fe80::1", "10.0.0.300"];
const VTEPS: &[&str] = &["192.168.77.2", "192.168.77.3", "192.168.77.4", "2001:db8::1", "192.168.77.1"];
const RATES: &[&str] = &["10M", "60M", "1G", "0.4", "none", "0", "200G", "5k"];

const VNIS: &[i64] = &[100, 200, 300, 0, 16777216];
const SHOWS: &[&str] = &["tenant_show", "port_show", "fdb_show", "vtep_list"];
const LISTS: &[&str] = &["status", "stats", "stats_clear", "qos_show", "tenant_list", "port_list", "config_export"];

fn command(b: &mut Bytes) -> Value {
    match b.byte() % 14 {
        0 => json!({"op": "tenant_add", "name": b.pick(TENANTS), "vni": VNIS[b.byte() as usize % VNIS.len()],
            "mac_limit": (b.byte() & 1 == 1).then(|| u32::from(b.byte() % 6)), "guarantee": b.opt(RATES), "limit": b.opt(RATES),
            "weight": (b.byte() & 1 == 1).then(|| u32::from(b.byte()) * 5)}),
        1 => json!({"op": "tenant_set", "name": b.pick(TENANTS), "guarantee": b.opt(RATES), "limit": b.opt(RATES),
            "weight": (b.byte() & 1 == 1).then(|| u32::from(b.byte()) * 5)}),
        2 => json!({"op": "tenant_del", "name": b.pick(TENANTS)}),
        3 => json!({"op": "port_add", "interface": b.pick(PORTS), "tenant": b.pick(TENANTS), "mac": b.pick(MACS),
            "ips": (0..b.byte() % 3).map(|_| b.pick(IPS)).collect::<Vec<_>>(), "police_rate": b.opt(RATES),
            "police_burst": b.opt(&["64k", "1", "0", "1G"])}),
        4 => json!({"op": "port_del", "interface": b.pick(PORTS)}),
        5 => json!({"op": "vtep_add", "tenant": b.pick(TENANTS), "ip": b.pick(VTEPS)}),
        6 => json!({"op": "vtep_del", "tenant": b.pick(TENANTS), "ip": b.pick(VTEPS)}),
        7 | 8 => json!({"op": "fdb_add", "tenant": b.pick(TENANTS),
            "entries": (0..b.byte() % 4).map(|_| json!({"mac": b.pick(MACS), "vtep": b.pick(VTEPS)})).collect::<Vec<_>>()}),
        9 => json!({"op": "fdb_del", "tenant": b.pick(TENANTS), "macs": (0..b.byte() % 3).map(|_| b.pick(MACS)).collect::<Vec<_>>()}),
        10 => match b.byte() % 4 {
            0 => json!({"op": "trace", "port": b.pick(PORTS), "frame_hex": b.pick(&["0200", "02:00 0a", "abc", "zz", "aéb"])}),
            1 => json!({"op": "trace", "port": b.pick(PORTS), "udp": {"src_mac": b.pick(MACS), "dst_mac": b.pick(MACS),
                "src_ip": b.pick(IPS), "dst_ip": b.pick(IPS)}}),
            2 => json!({"op": "trace", "port": b.pick(PORTS), "arp": {"src_mac": b.pick(MACS), "src_ip": b.pick(IPS),
                "target_ip": b.pick(IPS)}}),
            _ => {
                let snaplen = [0u32, 64, 4096, 9000][b.byte() as usize % 4];
                json!({"op": "capture", "port": b.pick(PORTS), "tenant": b.pick(TENANTS), "snaplen": snaplen,
                    "count": b.byte() % 3})
            }
        },
        11 => json!({"op": SHOWS[b.byte() as usize % SHOWS.len()],
            "name": b.pick(TENANTS), "interface": b.pick(PORTS), "tenant": b.pick(TENANTS)}),
        12 => json!({"op": LISTS[b.byte() as usize % LISTS.len()]}),
        _ => json!({"op": "config_import", "toml": import(b)}),
    }
}

/// A configuration to import: the starting one with one line changed.
fn import(b: &mut Bytes) -> String {
    let start = start_config();
    let lines: Vec<&str> = start.lines().collect();
    let i = b.byte() as usize % lines.len();
    let replacement = b.pick(&["", "vni = 300", "mac_limit = 1", "interface = \"up1\"", "vteps = []", "tenant = \"red\""]);
    lines.iter().enumerate().map(|(k, l)| if k == i { replacement.as_str() } else { l }).collect::<Vec<_>>().join("\n")
}

/// The starting configuration: the pipeline targets' switch with a QoS-capable uplink.
fn start_config() -> String {
    CONFIG.replace("mtu = 1600\n", "mtu = 1600\nrate = \"1G\"\n")
}

fn start() -> Model {
    Model::new(Config::from_toml(&start_config()).expect("config parses")).expect("config builds")
}

fuzz_target!(|data: &[u8]| {
    let mut m = start();
    let mut b = Bytes(data);
    for _ in 0..64 {
        if b.0.is_empty() {
            break;
        }
        let v = command(&mut b);
        let fault = [Fault::None, Fault::None, Fault::OpenPort, Fault::Store][b.byte() as usize % 4];
        // Whatever the fields, only a well-formed command reaches the handler (the request
        // parser is fuzzed on its own).
        let Ok(cmd) = serde_json::from_value::<Command>(v.clone()) else { continue };
        let before = m.plane.materialize();
        let out = m.run(cmd, fault);
        if let Err(e) = m.check() {
            panic!("after {v} ({fault:?}, {out:?}): {e}");
        }
        if out != Outcome::Applied {
            assert_eq!(m.plane.materialize(), before, "{v} ended {out:?} but changed the state");
        }
    }
});
