//! The whole pipeline on arbitrary frames arriving on arbitrary ports of a two-tenant switch
//! with overlapping addresses (common.rs): must never panic or leak a frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use xvs_switch::config::Config;
use xvs_switch::sim::Sim;
use xvs_switch::tables::Tables;
use xvs_switch::types::PortId;
use xvs_switch::wire::MacAddr;

#[path = "common.rs"]
mod common;
use common::CONFIG;

fn tables() -> Arc<Tables> {
    static T: OnceLock<Arc<Tables>> = OnceLock::new();
    T.get_or_init(|| Arc::new(Config::from_toml(CONFIG).unwrap().build(None, None).unwrap())).clone()
}

fuzz_target!(|data: &[u8]| {
    let mut s = Sim::new(tables(), 128);
    let now = s.now;
    s.core.pipeline.neigh.update(Ipv4Addr::new(192, 168, 77, 2), MacAddr([2, 0, 0, 0, 0xee, 2]), now);
    // records: [port, len_hi, len_lo, bytes...]
    let mut rest = data;
    while rest.len() >= 3 {
        let port = PortId(u16::from(rest[0] % 4));
        let len = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3);
        s.inject(port, &rest[3..3 + len]);
        rest = &rest[3 + len..];
        s.advance(1_000_000);
    }
    s.run();
    for p in 0..4 {
        s.take(PortId(p));
    }
    assert_eq!(s.core.free.len(), 128);
});
