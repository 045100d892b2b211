//! Fixtures the isolation oracles share: tenants with overlapping MACs, IPs and VTEPs.
#![allow(dead_code)]

use proptest::prelude::*;
use std::net::Ipv4Addr;
use xvs_switch::config::{Config, DaemonConfig, PortConfig, StaticFdbConfig, TenantConfig, UplinkConfig};
use xvs_switch::tables::Tables;
use xvs_switch::wire::MacAddr;

pub const MACS: [MacAddr; 4] = [
    MacAddr([2, 0, 0, 0, 0, 1]),
    MacAddr([2, 0, 0, 0, 0, 2]),
    MacAddr([2, 0, 0, 0, 0, 3]),
    MacAddr([2, 0, 0, 0, 0, 4]),
];
pub const VTEPS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(192, 168, 77, 2), Ipv4Addr::new(192, 168, 77, 3), Ipv4Addr::new(192, 168, 77, 4)];
pub const VNIS: [u32; 5] = [100, 200, 300, 400, 500];

pub fn vm_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1 + (i % 8) as u8)
}

/// Local MACs 0..4, remote-only MACs 4..7, broadcast otherwise.
pub fn mac_of(i: usize) -> MacAddr {
    match i {
        0..4 => MACS[i],
        4..7 => MacAddr([2, 0, 0, 0, 1, i as u8]),
        _ => MacAddr::BROADCAST,
    }
}

pub fn mac_str(m: MacAddr) -> String {
    let m = m.0;
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// Tenants with overlapping MACs, IPs and VTEPs; with `with_static`, each with some static
/// remote MACs (4..7) behind its VTEPs.
pub fn arb_tables(with_static: bool) -> impl Strategy<Value = Tables> {
    let tenant = (
        proptest::collection::vec(0usize..4, 1..4),
        proptest::sample::subsequence(VTEPS.to_vec(), 0..=3),
        proptest::collection::vec((4usize..7, 0usize..3), 1..4),
    );
    proptest::collection::vec(tenant, 1..4).prop_map(move |ts| {
        let mut c = Config {
            uplink: UplinkConfig {
                interface: "up".into(),
                vtep_ip: "192.168.77.1/24".into(),
                gateway: None,
                mtu: Some(1600),
                mac: Some("02:00:00:00:ff:01".into()),
                ttl: 64,
                rate: None,
            },
            daemon: DaemonConfig { fdb_capacity: 64, ..Default::default() },
            store: None,
            tenants: vec![],
            ports: vec![],
        };
        for (i, (macs, vteps, remote)) in ts.iter().enumerate() {
            let name = format!("t{i}");
            let mut fdb: Vec<StaticFdbConfig> = Vec::new();
            for (m, v) in remote.iter().filter(|_| with_static) {
                if vteps.is_empty() || fdb.iter().any(|f| f.mac == mac_str(mac_of(*m))) {
                    continue;
                }
                fdb.push(StaticFdbConfig { mac: mac_str(mac_of(*m)), vtep: vteps[v % vteps.len()].into() });
            }
            c.tenants.push(TenantConfig {
                name: name.clone(),
                vni: VNIS[i].into(),
                mac_limit: 8,
                vteps: vteps.iter().map(|v| (*v).into()).collect(),
                fdb,
                arp: vec![],
                guarantee: None,
                limit: None,
                weight: None,
            });
            let mut used = vec![];
            for m in macs {
                if used.contains(m) {
                    continue;
                }
                used.push(*m);
                c.ports.push(PortConfig {
                    interface: format!("t{i}p{m}"),
                    tenant: name.clone(),
                    mac: mac_str(MACS[*m]),
                    ips: vec![vm_ip(*m).into()],
                    policer: None,
                });
            }
        }
        c.build(None, None).expect("generated config is valid")
    })
}
