//! `xvsctl capture`: reads the pcapng stream xvsd sends after a capture's reply, writes it to
//! a file (`-w`) or prints one line per packet (`--json`: one JSON object per line), and
//! says at the end how many packets it got and how many the capture missed.

use pcap_file::pcapng::{Block, PcapNgReader};
use std::io::{BufRead, Read, Write};
use std::path::Path;
use xvs_proto::reply::CaptureStarted;

/// Bytes read from the stream are also copied to `copy` (the `-w` file).
struct Tee<R, W> {
    inner: R,
    copy: Option<W>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = self.copy.as_mut() {
            w.write_all(&buf[..n])?;
            w.flush()?;
        }
        Ok(n)
    }
}

/// Where the stream goes.
pub enum Sink<'a> {
    /// One line per packet.
    Lines,
    /// One JSON object per packet and line.
    Json,
    /// The pcapng bytes to this file (`-`: standard output).
    File(&'a Path),
}

/// Reads the capture stream from `stream` (positioned after the reply line) into `sink`.
pub fn run(started: &CaptureStarted, stream: impl BufRead, sink: Sink<'_>) -> anyhow::Result<()> {
    let tenant = started.tenant.as_ref().map(|t| format!(", tenant {t}")).unwrap_or_default();
    eprintln!(
        "xvsctl: capturing on {}{tenant}, {} bytes per frame, {} core(s), each copying at most {} Mbit/s",
        started.port,
        started.snaplen,
        started.cores,
        started.copy_limit_bps / 1_000_000
    );
    let copy: Option<Box<dyn Write>> = match &sink {
        Sink::File(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Sink::File(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        ))),
        _ => None,
    };
    let mut reader = PcapNgReader::new(Tee { inner: stream, copy })
        .map_err(|e| anyhow::anyhow!("bad capture stream from xvsd: {e}"))?;
    let (mut packets, mut missed) = (0u64, None);
    while let Some(block) = reader.next_block() {
        let block = match block {
            Ok(b) => b,
            Err(pcap_file::PcapError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => anyhow::bail!("bad capture stream from xvsd after {packets} packets: {e}"),
        };
        match block {
            Block::EnhancedPacket(p) => {
                packets += 1;
                let (dir, comment) = options(&p.options);
                let line = Line {
                    time_ns: p.timestamp.as_nanos() as u64,
                    port: &started.port,
                    dir,
                    len: p.original_len,
                    caplen: p.data.len(),
                    summary: summary(&p.data),
                    decision: comment,
                };
                match sink {
                    Sink::Lines => println!("{}", line.text()),
                    Sink::Json => println!("{}", line.json()),
                    Sink::File(_) => {}
                }
            }
            Block::InterfaceStatistics(s) => {
                missed = s.options.iter().find_map(|o| match o {
                    pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption::IsbIfDrop(n) => {
                        Some(*n)
                    }
                    _ => None,
                });
            }
            _ => {}
        }
    }
    match missed {
        Some(m) => eprintln!("xvsctl: {packets} packets captured, {m} missed by the capture"),
        None => eprintln!("xvsctl: {packets} packets captured; the stream ended early (xvsd stopped?)"),
    }
    Ok(())
}

/// The direction (`epb_flags`) and xvs's decision (the comment) of a packet.
fn options(opts: &[pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption]) -> (&'static str, String) {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption as O;
    let (mut dir, mut comment) = ("?", String::new());
    for o in opts {
        match o {
            O::Flags(f) if f & 3 == 1 => dir = "in",
            O::Flags(f) if f & 3 == 2 => dir = "out",
            O::Comment(c) => comment = c.to_string(),
            _ => {}
        }
    }
    (dir, comment)
}

struct Line<'a> {
    time_ns: u64,
    port: &'a str,
    dir: &'static str,
    len: u32,
    caplen: usize,
    summary: String,
    decision: String,
}

impl Line<'_> {
    /// `HH:MM:SS.uuuuuu PORT DIR LEN summary | decision` (UTC).
    fn text(&self) -> String {
        let secs = self.time_ns / 1_000_000_000;
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let us = (self.time_ns / 1000) % 1_000_000;
        let decision = self.decision.split_once(": ").map_or(self.decision.as_str(), |(_, d)| d);
        let tenant = self.decision.split_once(", tenant ").and_then(|(_, r)| r.split_once(':')).map(|(t, _)| t);
        let tenant = tenant.map(|t| format!(" [{t}]")).unwrap_or_default();
        format!(
            "{h:02}:{m:02}:{s:02}.{us:06} {} {:<3} {:>5}B {}{tenant} | {decision}",
            self.port, self.dir, self.len, self.summary
        )
    }

    fn json(&self) -> String {
        serde_json::json!({
            "time_ns": self.time_ns,
            "port": self.port,
            "dir": self.dir,
            "len": self.len,
            "caplen": self.caplen,
            "summary": self.summary,
            "decision": self.decision,
        })
        .to_string()
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A one-line summary of an Ethernet frame, the inner frame of VXLAN included.
fn summary(frame: &[u8]) -> String {
    summary_at(frame, 0)
}

fn summary_at(frame: &[u8], depth: u8) -> String {
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
    let p = match SlicedPacket::from_ethernet(frame) {
        Ok(p) => p,
        Err(e) => return format!("malformed ({e})"),
    };
    let mut s = match &p.link {
        Some(LinkSlice::Ethernet2(e)) => format!("{} > {}", mac(e.source()), mac(e.destination())),
        _ => String::from("?"),
    };
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            s += &format!(", IPv4 {} > {}", h.source_addr(), h.destination_addr());
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            s += &format!(", IPv6 {} > {}", h.source_addr(), h.destination_addr());
        }
        Some(NetSlice::Arp(a)) => {
            let b = a.slice();
            let ip = |o: usize| b.get(o..o + 4).map_or("?".into(), |x| format!("{}.{}.{}.{}", x[0], x[1], x[2], x[3]));
            s += &match b.get(6..8) {
                Some([0, 1]) => format!(", ARP who-has {} tell {}", ip(24), ip(14)),
                Some([0, 2]) => format!(
                    ", ARP {} is-at {}",
                    ip(14),
                    b.get(8..14).map_or("?".into(), |m| mac(m.try_into().unwrap_or_default()))
                ),
                _ => ", ARP".to_string(),
            };
        }
        None => {
            if let Some(LinkSlice::Ethernet2(e)) = &p.link {
                s += &format!(", ethertype 0x{:04x}", e.ether_type().0);
            }
        }
    }
    match &p.transport {
        Some(TransportSlice::Udp(u)) if u.destination_port() == 4789 && depth == 0 => {
            let vx = u.payload();
            let vni = vx.get(4..7).map_or(0, |v| u32::from_be_bytes([0, v[0], v[1], v[2]]));
            s += &format!(", VXLAN vni {vni}: ");
            s += &vx.get(8..).map_or_else(|| "truncated".into(), |inner| summary_at(inner, depth + 1));
        }
        Some(TransportSlice::Udp(u)) => s += &format!(" UDP {} > {}", u.source_port(), u.destination_port()),
        Some(TransportSlice::Tcp(t)) => {
            let flags: String = [(t.syn(), 'S'), (t.fin(), 'F'), (t.rst(), 'R'), (t.ack(), '.')]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, c)| *c)
                .collect();
            s += &format!(" TCP {} > {} [{flags}]", t.source_port(), t.destination_port());
        }
        Some(TransportSlice::Icmpv4(i)) => match i.type_u8() {
            8 => s += " ICMP echo request",
            0 => s += " ICMP echo reply",
            t => s += &format!(" ICMP type {t}"),
        },
        Some(TransportSlice::Icmpv6(i)) => s += &format!(" ICMPv6 type {}", i.type_u8()),
        _ => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vxlan_frame_is_summarised_with_its_inner_frame() {
        let mut inner = vec![0u8; 14 + 20 + 8];
        inner[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        inner[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        inner[12..14].copy_from_slice(&[8, 0]);
        inner[14] = 0x45;
        inner[16..18].copy_from_slice(&28u16.to_be_bytes());
        inner[14 + 8] = 64;
        inner[14 + 9] = 17;
        inner[26..30].copy_from_slice(&[10, 0, 0, 1]);
        inner[30..34].copy_from_slice(&[10, 0, 0, 2]);
        inner[34..36].copy_from_slice(&1000u16.to_be_bytes());
        inner[36..38].copy_from_slice(&2000u16.to_be_bytes());
        inner[38..40].copy_from_slice(&8u16.to_be_bytes());
        let s = summary(&inner);
        assert_eq!(s, "02:00:00:00:00:01 > 02:00:00:00:00:02, IPv4 10.0.0.1 > 10.0.0.2 UDP 1000 > 2000");
        let mut outer = inner[..42].to_vec();
        outer[36..38].copy_from_slice(&4789u16.to_be_bytes());
        let total = (20 + 8 + 8 + inner.len()) as u16;
        outer[16..18].copy_from_slice(&total.to_be_bytes());
        outer[38..40].copy_from_slice(&(8 + 8 + inner.len() as u16).to_be_bytes());
        outer.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 100, 0]);
        outer.extend_from_slice(&inner);
        let s = summary(&outer);
        assert!(s.contains("VXLAN vni 100: 02:00:00:00:00:01 > 02:00:00:00:00:02, IPv4 10.0.0.1"), "{s}");
        assert!(summary(&[1, 2, 3]).starts_with("malformed"));
    }

    #[test]
    fn a_line_shows_time_direction_tenant_and_decision() {
        let l = Line {
            time_ns: 3_723_000_001_000,
            port: "vm-a",
            dir: "in",
            len: 98,
            caplen: 98,
            summary: "x".into(),
            decision: "in, tenant blue: encap vni 100 to 192.168.0.2".into(),
        };
        assert_eq!(l.text(), "01:02:03.000001 vm-a in     98B x [blue] | encap vni 100 to 192.168.0.2");
        let v: serde_json::Value = serde_json::from_str(&l.json()).unwrap();
        assert_eq!(v["decision"], "in, tenant blue: encap vni 100 to 192.168.0.2");
    }
}
