//! Control-plane rate: static FDB entries applied per second through xvsd's control socket,
//! and the time from request to the change being live in the forwarding core (xvsd replies
//! only after the core confirmed it), as an hdrhistogram.
//!
//! usage: xvs-ctlbench SOCKET TENANT VTEP ENTRIES BATCH

use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;
use xvs_proto::reply::Reply;
use xvs_proto::{Command, FdbEntry, Request, Response, VERSION};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: xvs-ctlbench SOCKET TENANT VTEP ENTRIES BATCH");
        std::process::exit(2);
    }
    let (entries, batch): (u32, u32) = (a[4].parse().expect("ENTRIES"), a[5].parse::<u32>().expect("BATCH").max(1));
    let s = UnixStream::connect(&a[1]).expect("connect");
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut live = Histogram::<u64>::new(3).unwrap();
    let start = Instant::now();
    let mut done = 0u32;
    let mut line = String::new();
    while done < entries {
        let n = batch.min(entries - done);
        let list = (done..done + n)
            .map(|i| {
                let b = i.to_be_bytes();
                FdbEntry {
                    mac: format!("02:20:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]),
                    vtep: a[3].clone(),
                }
            })
            .collect();
        let cmd = Command::FdbAdd { tenant: a[2].clone(), entries: list };
        let mut req = serde_json::to_vec(&Request { version: VERSION, cmd: cmd.clone() }).unwrap();
        req.push(b'\n');
        let t = Instant::now();
        w.write_all(&req).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        h.record(t.elapsed().as_micros() as u64).unwrap();
        let resp: Response = serde_json::from_str(&line).expect("reply");
        match resp.into_reply(&cmd) {
            Ok(Reply::FdbApplied(a)) => live.record(a.live_us).unwrap(),
            other => panic!("xvsd answered {other:?}"),
        }
        done += n;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"entries\": {entries}, \"batch\": {batch}, \"requests\": {}, \"secs\": {secs:.3}, \"entries_per_sec\": {:.0}, \"p50_us\": {}, \"p99_us\": {}, \"max_us\": {}, \"live_p50_us\": {}, \"live_p99_us\": {}}}",
        h.len(),
        f64::from(entries) / secs,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
        live.value_at_quantile(0.5),
        live.value_at_quantile(0.99)
    );
}
