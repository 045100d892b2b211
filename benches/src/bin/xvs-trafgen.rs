//! AF_XDP traffic generator and sink for the performance harness.
//!
//! `send` transmits one UDP flow of fixed-size frames from an AF_XDP socket, flat out or at a
//! fixed rate; every frame carries a sequence number and its CLOCK_MONOTONIC transmit time.
//! `sink` receives on every queue of an interface through AF_XDP (xvs's own VM-port XDP
//! program steers all frames to it) and counts received, lost and reordered frames and the
//! one-way latency (sender and sink share the host's monotonic clock: they run in network
//! namespaces of one kernel). Frames sent with `--rtt-every N` ask the sink to reflect every
//! N-th frame; the sender receives the reflections and records round-trip latency.
//!
//! Both print a progress line every second on stderr and a JSON summary on stdout (or to
//! `--out`). The payload of a frame (UDP, 18 bytes: fits a 60-byte frame) is
//! `magic u16 | seq u64 | tx_ns u64`, big endian; destination port 9001 = one-way, 9002 =
//! reflect me. A reflected frame has its addresses and ports swapped.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xvs_switch::io::afxdp::{QueueSet, RING_SIZE, UmemFrames, wait_readable, wait_readable_for};
use xvs_switch::io::netdev;
use xvs_switch::io::xdp::{Attached, Role, XdpObject};
use xvs_switch::port::{BATCH, Desc, FrameMem, FreeList, Port};
use xvs_switch::types::parse_mac;

const MAGIC: u16 = 0x5856;
const SPORT: u16 = 9000;
const DPORT_ONEWAY: u16 = 9001;
const DPORT_REFLECT: u16 = 9002;
/// Offset of the payload in a frame: Ethernet 14 + IPv4 20 + UDP 8.
const PAYLOAD: usize = 42;
const UMEM_FRAMES: u32 = 8192;

#[derive(Parser)]
#[command(version, about = "AF_XDP traffic generator and sink for the xvs performance harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send one UDP flow from one queue of IFACE.
    Send {
        /// Interface to send on.
        iface: String,
        /// Transmit queue (a veth delivers it to the same receive queue of its peer).
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// Source MAC.
        #[arg(long)]
        src_mac: String,
        /// Destination MAC.
        #[arg(long)]
        dst_mac: String,
        /// Source IPv4 address.
        #[arg(long)]
        src_ip: Ipv4Addr,
        /// Destination IPv4 address.
        #[arg(long)]
        dst_ip: Ipv4Addr,
        /// Frames per second; 0 sends flat out.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// How long to send, seconds.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Frame size without FCS (60 = a 64-byte frame on the wire).
        #[arg(long, default_value_t = 60)]
        size: usize,
        /// Ask the sink to reflect every N-th frame and record round-trip latency (0: none).
        #[arg(long, default_value_t = 0)]
        rtt_every: u64,
        /// Write the JSON summary here instead of stdout.
        #[arg(long)]
        out: Option<String>,
    },
    /// Receive on every queue of IFACE, count and time what arrives, reflect what asks for it.
    Sink {
        /// Interface to receive on.
        iface: String,
        /// Stop after this many seconds (0: run until SIGINT/SIGTERM or --idle-exit).
        #[arg(long, default_value_t = 0.0)]
        secs: f64,
        /// Stop once traffic has started and then nothing arrived for this many seconds.
        #[arg(long, default_value_t = 0.0)]
        idle_exit: f64,
        /// Write the JSON summary here instead of stdout.
        #[arg(long)]
        out: Option<String>,
        /// Write "ready" to this file once the socket is bound.
        #[arg(long)]
        ready: Option<String>,
    },
    /// Forward in XDP (no switching, no encapsulation): every frame received on FROM goes out
    /// of TO, for each FROM:TO pair given, until SIGTERM (or --secs).
    XdpFwd {
        /// FROM:TO interface pairs.
        pairs: Vec<String>,
        /// Hold this many seconds (0: until SIGINT/SIGTERM).
        #[arg(long, default_value_t = 0.0)]
        secs: f64,
    },
    /// Attach an XDP program that passes every frame to IFACE and hold it until SIGTERM (or
    /// --secs): a veth whose far end runs XDP takes frames redirected to it in XDP.
    Pass {
        /// Interface.
        iface: String,
        /// Hold this many seconds (0: until SIGINT/SIGTERM).
        #[arg(long, default_value_t = 0.0)]
        secs: f64,
    },
}

fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(100, 60_000_000_000, 3).expect("histogram bounds")
}

/// Latency summary in microseconds, with a CDF for plots.
fn summary(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return json!(null);
    }
    let us = |v: u64| v as f64 / 1000.0;
    let cdf: Vec<(f64, f64)> = [
        0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 97.0, 99.0, 99.5, 99.9, 99.99, 100.0,
    ]
    .iter()
    .map(|&q| (q, us(h.value_at_quantile(q / 100.0))))
    .collect();
    json!({
        "count": h.len(),
        "p50_us": us(h.value_at_quantile(0.5)),
        "p99_us": us(h.value_at_quantile(0.99)),
        "p999_us": us(h.value_at_quantile(0.999)),
        "max_us": us(h.max()),
        "mean_us": h.mean() / 1000.0,
        "cdf": cdf,
    })
}

fn emit(out: &Option<String>, v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string(v)?;
    match out {
        Some(path) => std::fs::write(path, s + "\n").with_context(|| format!("writing {path}")),
        None => {
            println!("{s}");
            Ok(())
        }
    }
}

fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Binds one socket per queue in `queues` of `iface` (all on one UMEM) and, with `receive`,
/// attaches the VM-port program, which steers every received frame to them.
fn open(iface: &str, queues: std::ops::Range<u32>, receive: bool) -> Result<(UmemFrames, QueueSet, Option<Attached>)> {
    if !netdev::exists(iface) {
        bail!("no interface {iface:?}");
    }
    let umem = UmemFrames::new(UMEM_FRAMES)?;
    let h = umem.handle();
    let mut socks = Vec::new();
    for q in queues {
        let mut s = h.bind(iface, q, false)?;
        // Deep fill rings: the sink shares a CPU with the sender and must ride out its slices.
        s.set_fill_target(RING_SIZE);
        socks.push(s);
    }
    let mut prog = None;
    if receive {
        let index = netdev::ifindex(iface).ok_or_else(|| anyhow::anyhow!("no interface {iface:?}"))?;
        // A program object of its own, slot 1, no fast path: every frame to the sockets.
        let obj = XdpObject::load()?;
        let p = prog.insert(obj.attach(iface, index, xvs_switch::types::PortId(1), Role::Vm, false)?);
        for s in &socks {
            p.register(s.queue, s.fd())?;
        }
    }
    Ok((umem, QueueSet::new(socks, None), prog))
}

/// Sequence number, transmit time and whether it asks for reflection, if `f` is ours.
fn parse(f: &[u8]) -> Option<(u64, u64, u16, u16)> {
    if f.len() < PAYLOAD + 18 || f[12..14] != [0x08, 0x00] || f[14] != 0x45 || f[23] != 17 {
        return None;
    }
    let sport = u16::from_be_bytes([f[34], f[35]]);
    let dport = u16::from_be_bytes([f[36], f[37]]);
    let p = &f[PAYLOAD..];
    if u16::from_be_bytes([p[0], p[1]]) != MAGIC {
        return None;
    }
    let seq = u64::from_be_bytes(p[2..10].try_into().ok()?);
    let ts = u64::from_be_bytes(p[10..18].try_into().ok()?);
    Some((seq, ts, sport, dport))
}

/// Writes our payload (magic, sequence number, transmit time) into frame `f`.
fn stamp(f: &mut [u8], seq: u64, tx_ns: u64) {
    let p = &mut f[PAYLOAD..PAYLOAD + 18];
    p[0..2].copy_from_slice(&MAGIC.to_be_bytes());
    p[2..10].copy_from_slice(&seq.to_be_bytes());
    p[10..18].copy_from_slice(&tx_ns.to_be_bytes());
}

/// Turns a received frame around: swaps MACs, IPs and ports (checksums stay valid: the IPv4
/// header sum does not depend on the order of its words, and the UDP checksum is zero).
fn reflect(f: &mut [u8]) {
    for i in 0..6 {
        f.swap(i, 6 + i);
    }
    for i in 0..4 {
        f.swap(26 + i, 30 + i);
    }
    for i in 0..2 {
        f.swap(34 + i, 36 + i);
    }
}

#[expect(clippy::too_many_arguments, reason = "one CLI subcommand's settings")]
fn send(
    iface: &str,
    queue: u32,
    smac: &str,
    dmac: &str,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    rate: u64,
    secs: f64,
    size: usize,
    rtt_every: u64,
    out: &Option<String>,
) -> Result<()> {
    if !(60..=1514).contains(&size) {
        bail!("frame size {size} outside 60..=1514");
    }
    let smac = parse_mac(smac).map_err(|_| anyhow::anyhow!("bad source MAC {smac:?}"))?;
    let dmac = parse_mac(dmac).map_err(|_| anyhow::anyhow!("bad destination MAC {dmac:?}"))?;
    let template = xvs_switch::frames::udp4(smac, dmac, sip, dip, SPORT, DPORT_ONEWAY, &vec![0u8; size - PAYLOAD]);
    let stop = stop_flag()?;
    // Round trips need the replies: then the VM-port program steers them to our socket.
    let (mut mem, mut port, _prog) = open(iface, queue..queue + 1, rtt_every > 0)?;
    let mut free = FreeList::new(mem.frames());
    let fds: Vec<_> = port.fds().collect();
    let mut batch = [Desc::default(); BATCH];
    let mut rxd = [Desc::default(); BATCH];
    let mut rtt = histogram();
    let (mut sent, mut replies) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    // Replies still on their way are waited for this long after the last frame.
    let done = end + Duration::from_millis(if rtt_every > 0 { 300 } else { 0 });
    let mut next_report = start + Duration::from_secs(1);
    let mut last_sent = 0u64;
    loop {
        let now = Instant::now();
        if now >= done || stop.load(Ordering::Relaxed) {
            break;
        }
        port.reclaim(&mut free);
        if rtt_every > 0 {
            port.refill(&mut free);
            let n = port.rx(&mut mem, &mut rxd);
            let t = now_ns();
            for d in &rxd[..n] {
                if let Some((_, ts, sp, _)) = parse(mem.data(d))
                    && sp == DPORT_REFLECT
                {
                    rtt.saturating_record(t.saturating_sub(ts));
                    replies += 1;
                }
                free.free(d.id);
            }
        }
        let want = if now >= end {
            0
        } else if rate == 0 {
            BATCH as u64
        } else {
            let due = (now.duration_since(start).as_secs_f64() * rate as f64) as u64;
            due.saturating_sub(sent).min(BATCH as u64)
        };
        if want == 0 {
            if rate > 0 && rate < 200_000 {
                // Sleep until the next frame is due, waking at once for a reply.
                let next = start + Duration::from_secs_f64((sent + 1) as f64 / rate as f64);
                let wait = next.min(done).saturating_duration_since(Instant::now());
                if rtt_every > 0 {
                    wait_readable_for(&fds, wait.min(Duration::from_millis(1)));
                } else {
                    std::thread::sleep(wait.min(Duration::from_millis(1)));
                }
            }
            continue;
        }
        let mut k = 0;
        let ts = now_ns();
        while k < want as usize {
            let Some(id) = free.alloc() else { break };
            // Frames are numbered in the order they are taken; what the ring refuses now is
            // built again under the same numbers.
            let seq = sent + k as u64;
            let d = mem.write(id, &template);
            let buf = mem.data_mut(&d);
            if rtt_every > 0 && seq.is_multiple_of(rtt_every) {
                buf[36..38].copy_from_slice(&DPORT_REFLECT.to_be_bytes());
            }
            stamp(buf, seq, ts);
            batch[k] = d;
            k += 1;
        }
        let taken = port.tx(&batch[..k]);
        port.flush();
        for d in &batch[taken..k] {
            free.free(d.id);
        }
        sent += taken as u64;
        if now >= next_report {
            eprintln!(
                "send {iface}: {:.1}s sent {sent} ({} pps){}",
                now.duration_since(start).as_secs_f64(),
                sent - last_sent,
                if rtt_every > 0 { format!(" replies {replies}") } else { String::new() }
            );
            last_sent = sent;
            next_report += Duration::from_secs(1);
        }
    }
    let el = start.elapsed().as_secs_f64().min(secs).max(1e-9);
    emit(
        out,
        &json!({
            "mode": "send", "iface": iface, "queue": queue, "size": size, "rate_asked": rate,
            "sent": sent, "secs": el, "pps": sent as f64 / el,
            "rtt_every": rtt_every, "replies": replies, "rtt": summary(&rtt),
        }),
    )
}

fn sink(iface: &str, secs: f64, idle_exit: f64, out: &Option<String>, ready: &Option<String>) -> Result<()> {
    let stop = stop_flag()?;
    let queues = netdev::rx_queues(iface).max(1);
    let (mut mem, mut port, _prog) = open(iface, 0..queues, true)?;
    let mut free = FreeList::new(mem.frames());
    port.refill(&mut free);
    if let Some(r) = ready {
        std::fs::write(r, "ready\n")?;
    }
    let fds: Vec<_> = port.fds().collect();
    let mut rxd = [Desc::default(); BATCH];
    let mut back = [Desc::default(); BATCH];
    let mut lat = histogram();
    let (mut received, mut bytes, mut other, mut reordered, mut reflected) = (0u64, 0, 0, 0, 0);
    let mut next_seq = 0u64; // one past the highest sequence number seen
    let (mut first, mut last): (Option<Instant>, Instant) = (None, Instant::now());
    let start = Instant::now();
    let mut next_report = start + Duration::from_secs(1);
    let mut last_received = 0u64;
    let mut idle_polls = 0u32;
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed)
            || (secs > 0.0 && now.duration_since(start).as_secs_f64() >= secs)
            || (idle_exit > 0.0 && first.is_some() && now.duration_since(last).as_secs_f64() >= idle_exit)
        {
            break;
        }
        port.reclaim(&mut free);
        port.refill(&mut free);
        let n = port.rx(&mut mem, &mut rxd);
        if n == 0 {
            idle_polls += 1;
            if idle_polls > 64 {
                wait_readable(&fds, 20);
            }
        } else {
            idle_polls = 0;
            last = now;
            first.get_or_insert(now);
        }
        let t = now_ns();
        let mut nb = 0;
        for d in &rxd[..n] {
            let f = mem.data_mut(d);
            match parse(f) {
                Some((seq, ts, _, dp)) => {
                    received += 1;
                    bytes += u64::from(d.len);
                    lat.saturating_record(t.saturating_sub(ts));
                    if seq >= next_seq {
                        next_seq = seq + 1;
                    } else {
                        reordered += 1;
                    }
                    if dp == DPORT_REFLECT {
                        reflect(f);
                        back[nb] = *d;
                        nb += 1;
                        continue;
                    }
                }
                None => other += 1,
            }
            free.free(d.id);
        }
        if nb > 0 {
            let taken = port.tx(&back[..nb]);
            port.flush();
            reflected += taken as u64;
            for d in &back[taken..nb] {
                free.free(d.id);
            }
        }
        if now >= next_report {
            eprintln!(
                "sink {iface}: {:.1}s received {received} ({} pps) reordered {reordered} p99 {:.1} us",
                now.duration_since(start).as_secs_f64(),
                received - last_received,
                lat.value_at_quantile(0.99) as f64 / 1000.0
            );
            last_received = received;
            next_report += Duration::from_secs(1);
        }
    }
    let active = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    emit(
        out,
        &json!({
            "mode": "sink", "iface": iface, "queues": queues,
            "received": received, "bytes": bytes, "other": other,
            "highest_seq": next_seq, "lost": next_seq.saturating_sub(received),
            "reordered": reordered, "reflected": reflected,
            "active_secs": active, "pps": if active > 0.0 { received as f64 / active } else { 0.0 },
            "latency": summary(&lat),
        }),
    )
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Send { iface, queue, src_mac, dst_mac, src_ip, dst_ip, rate, secs, size, rtt_every, out } => {
            send(&iface, queue, &src_mac, &dst_mac, src_ip, dst_ip, rate, secs, size, rtt_every, &out)
        }
        Cmd::Sink { iface, secs, idle_exit, out, ready } => sink(&iface, secs, idle_exit, &out, &ready),
        Cmd::XdpFwd { pairs, secs } => {
            let pairs = pairs
                .iter()
                .map(|p| match p.split_once(':') {
                    Some((a, b)) => Ok((a.to_string(), b.to_string())),
                    None => Err(anyhow::anyhow!("not FROM:TO: {p:?}")),
                })
                .collect::<Result<Vec<_>>>()?;
            let held = xvs_switch::io::xdp::attach_forwarder(&pairs)?;
            hold(secs)?;
            drop(held);
            Ok(())
        }
        Cmd::Pass { iface, secs } => {
            let held = xvs_switch::io::xdp::attach_pass(&iface)?;
            hold(secs)?;
            drop(held);
            Ok(())
        }
    }
}

/// Waits until SIGINT/SIGTERM, or `secs` if not 0.
fn hold(secs: f64) -> Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))?;
    }
    let t0 = std::time::Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && (secs == 0.0 || t0.elapsed().as_secs_f64() < secs) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_reflect() {
        let smac = parse_mac("02:00:00:00:00:01").unwrap();
        let dmac = parse_mac("02:00:00:00:00:02").unwrap();
        let mut f = xvs_switch::frames::udp4(
            smac,
            dmac,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            SPORT,
            DPORT_REFLECT,
            &[0u8; 18],
        );
        assert_eq!(f.len(), 60);
        stamp(&mut f, 7, 99);
        assert_eq!(parse(&f), Some((7, 99, SPORT, DPORT_REFLECT)));
        let before = f.clone();
        reflect(&mut f);
        assert_eq!(&f[0..6], &before[6..12]);
        assert_eq!(&f[26..30], &before[30..34]);
        assert_eq!(parse(&f), Some((7, 99, DPORT_REFLECT, SPORT)));
        // The IPv4 header checksum still verifies.
        let ip = xvs_switch::wire::Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        f[PAYLOAD] = 0;
        assert_eq!(parse(&f), None);
        assert_eq!(parse(&f[..50]), None);
    }
}
