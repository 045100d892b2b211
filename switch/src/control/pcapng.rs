//! A packet capture's stream to its client, in pcapng (what tcpdump and Wireshark read): one
//! interface, the port; each packet with its direction in `epb_flags` and what xvs did with
//! it as its comment; at the end an interface statistics block whose `ifdrop` is what the
//! capture missed. Runs on the request's connection thread, holding neither the control
//! state's lock nor anything the forwarding cores wait for: the cores fill the rings, this
//! empties them.
//!
//! May depend on: capture (rings and records), pipeline (`Action`), tables, types and the
//! control protocol's types. Never on daemon.

use super::proto::reply::CaptureStarted;
use crate::capture::{Dir, Record, Ring, Verdict};
use crate::pipeline::Action;
use crate::tables::Tables;
use crate::types::{PortId, TenantId};
use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::interface_statistics::{InterfaceStatisticsBlock, InterfaceStatisticsOption};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Captures that may run at once (each holds a ring of records per core).
pub const MAX_CAPTURES: usize = 4;

/// A client that stops reading for this long ends its capture.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the stream waits for records before it looks at its client again.
const IDLE_WAIT_MS: u16 = 20;

/// One running capture: the rings the cores fill, and what it was asked for.
pub struct Session {
    /// What the client is told before the stream.
    pub started: CaptureStarted,
    /// One per core.
    pub rings: Vec<Arc<Ring>>,
    /// The tables when it started (names for the comments).
    pub tables: Arc<Tables>,
    /// The port.
    pub port: PortId,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Holds one of the [`MAX_CAPTURES`] places until the session ends.
    pub slot: Slot,
}

/// A place among the captures that may run at once; freed on drop.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a place in `running`, unless [`MAX_CAPTURES`] are taken.
    pub fn take(running: &Arc<AtomicUsize>) -> Option<Slot> {
        let n = running.fetch_add(1, Ordering::AcqRel);
        if n >= MAX_CAPTURES {
            running.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(Arc::clone(running)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a finished stream wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Packets written.
    pub written: u64,
    /// Frames the capture missed.
    pub lost: u64,
}

fn pcap_err(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        e => std::io::Error::other(e.to_string()),
    }
}

fn wall_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Session {
    /// Writes the pcapng stream to `out` until the session's count or duration is reached
    /// or the client goes away; the rings are dropped at the end, which ends the cores' taps.
    pub fn stream(self, out: &UnixStream) -> std::io::Result<Summary> {
        out.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let shb = SectionHeaderBlock {
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "xvsd {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let mut w = PcapNgWriter::with_section_header(BufWriter::with_capacity(1 << 16, out), shb).map_err(pcap_err)?;
        let desc = match &self.started.tenant {
            Some(t) => format!("xvs port {}, tenant {t}", self.started.port),
            None => format!("xvs port {}", self.started.port),
        };
        let mut idb = InterfaceDescriptionBlock::new(DataLink::ETHERNET, self.started.snaplen);
        idb.options = vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(self.started.port.clone())),
            InterfaceDescriptionOption::IfDescription(Cow::Owned(desc)),
            InterfaceDescriptionOption::IfTsResol(9),
        ];
        w.write_pcapng_block(idb).map_err(pcap_err)?;
        w.get_mut().flush()?;
        let (t0, start_ns) = (Instant::now(), wall_now());
        let mut written = 0u64;
        let mut comment = String::with_capacity(128);
        'stream: loop {
            let mut any = false;
            for ring in &self.rings {
                while let Some(r) = ring.pop() {
                    comment.clear();
                    describe(&self.tables, self.port, &r, &mut comment);
                    let epb = EnhancedPacketBlock {
                        interface_id: 0,
                        timestamp: Duration::from_nanos(ring.wall_ns(r.ts)),
                        original_len: r.len,
                        data: Cow::Borrowed(&r.data[..r.caplen as usize]),
                        options: vec![
                            EnhancedPacketOption::Flags(if r.dir == Dir::In { 1 } else { 2 }),
                            EnhancedPacketOption::Comment(Cow::Borrowed(&comment)),
                        ],
                    };
                    let done = w.write_pcapng_block(epb).map_err(pcap_err);
                    ring.recycle(r);
                    done?;
                    written += 1;
                    any = true;
                    if self.count.is_some_and(|c| written >= c) {
                        break 'stream;
                    }
                }
            }
            if self.duration.is_some_and(|d| t0.elapsed() >= d) {
                break;
            }
            if any {
                w.get_mut().flush()?;
            } else if client_left(out)? {
                return Ok(Summary { written, lost: self.lost() });
            }
        }
        let lost = self.lost();
        let isb = InterfaceStatisticsBlock {
            interface_id: 0,
            timestamp: wall_now(),
            options: vec![
                InterfaceStatisticsOption::IsbStartTime(start_ns),
                InterfaceStatisticsOption::IsbEndTime(wall_now()),
                InterfaceStatisticsOption::IsbIfDrop(lost),
                InterfaceStatisticsOption::IsbUsrDeliv(written),
            ],
        };
        w.write_pcapng_block(isb).map_err(pcap_err)?;
        w.get_mut().flush()?;
        Ok(Summary { written, lost })
    }

    fn lost(&self) -> u64 {
        self.rings.iter().map(|r| r.lost()).sum()
    }
}

/// Waits up to [`IDLE_WAIT_MS`] for the client: whether it closed its end (or sent
/// anything, which a capture's client never does).
fn client_left(out: &UnixStream) -> std::io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(IDLE_WAIT_MS)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// One line on what xvs did with a captured frame, with names from `t`: the packet's
/// comment, e.g. `in, tenant blue: encap vni 100 to 192.168.0.2` or
/// `in, tenant blue: drop spoofed_src_mac`.
pub fn describe(t: &Tables, port: PortId, r: &Record, out: &mut String) {
    use std::fmt::Write as _;
    let pname = |p: PortId| t.port(p).map_or_else(|| format!("port {}", p.0), |x| x.name.clone());
    let tname = |id: TenantId| t.tenant(id).map_or_else(|| format!("tenant {}", id.0), |x| x.name.clone());
    let _ = write!(out, "{}", if r.dir == Dir::In { "in" } else { "out" });
    if let Some(tn) = r.tenant {
        let _ = write!(out, ", tenant {}", tname(tn));
    }
    out.push_str(": ");
    let _ = match r.verdict {
        Verdict::Decided(a) => match a {
            Action::Drop(reason) => write!(out, "drop {}", reason.name()),
            Action::Forward(p) if p == port => write!(out, "answered (ARP suppression) back to {}", pname(p)),
            Action::Forward(p) => write!(out, "forward to {}", pname(p)),
            Action::Encap { dst_ip, vni, .. } => write!(out, "encap vni {vni} to {dst_ip}"),
            Action::Decap { port: p, .. } => write!(out, "decap to {}", pname(p)),
            Action::Flood { remote, .. } => {
                write!(out, "flood to the tenant's ports{}", if remote { " and VTEPs" } else { "" })
            }
            Action::TooBig { mtu } => write!(out, "drop mtu_exceeded, ICMP too big (mtu {mtu}) sent back"),
            Action::Host => write!(out, "to the host stack"),
        },
        Verdict::Unknown => write!(out, "drop unknown_port"),
        Verdict::Sent => write!(out, "sent"),
        Verdict::Unsent(reason) => write!(out, "drop {}", reason.name()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Tap;
    use crate::drop::DropReason;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn the_stream_is_pcapng_with_direction_decision_and_what_was_missed() {
        let tables =
            Arc::new(crate::config::Config::from_toml(crate::config::EXAMPLE).unwrap().build(None, None).unwrap());
        let ring = Ring::new(4, 128);
        ring.set_clock_base(1_000, 1_700_000_000_000_000_000);
        let mut tap = Tap::new(PortId(1), None, Arc::clone(&ring), 0);
        let frame = [0xabu8; 200];
        for k in 0..6 {
            tap.copy(k, if k % 2 == 0 { Dir::In } else { Dir::Out }, &frame, 2_000);
        }
        tap.finish(|k, _| {
            let v = if k == 0 { Verdict::Decided(Action::Drop(DropReason::SpoofedSrcMac)) } else { Verdict::Sent };
            (Some(TenantId(0)), v)
        });
        let running = Arc::new(AtomicUsize::new(0));
        let session = Session {
            started: CaptureStarted {
                port: "b1".into(),
                tenant: None,
                snaplen: 128,
                cores: 1,
                copy_limit_bps: crate::capture::CAPTURE_RATE_BPS,
            },
            rings: vec![Arc::clone(&ring)],
            tables,
            port: PortId(1),
            count: Some(4),
            duration: None,
            slot: Slot::take(&running).unwrap(),
        };
        let (a, b) = UnixStream::pair().unwrap();
        let sum = session.stream(&a).unwrap();
        drop(a);
        assert_eq!(sum, Summary { written: 4, lost: 2 });
        assert_eq!(running.load(Ordering::Acquire), 0, "the place is given back");
        let mut r = PcapNgReader::new(b).unwrap();
        let mut packets = Vec::new();
        let mut ifdrop = None;
        while let Some(block) = r.next_block() {
            match block.unwrap().into_owned() {
                Block::InterfaceDescription(i) => {
                    assert_eq!(i.snaplen, 128);
                    assert!(i.options.contains(&InterfaceDescriptionOption::IfName("b1".into())));
                }
                Block::EnhancedPacket(p) => packets.push((p.timestamp, p.original_len, p.data.len(), p.options)),
                Block::InterfaceStatistics(s) => {
                    ifdrop = s.options.iter().find_map(|o| match o {
                        InterfaceStatisticsOption::IsbIfDrop(n) => Some(*n),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        assert_eq!(packets.len(), 4);
        assert_eq!(ifdrop, Some(2));
        let (ts, len, caplen, opts) = &packets[0];
        assert_eq!((ts.as_nanos(), *len, *caplen), (1_700_000_000_000_001_000, 200, 128));
        assert!(opts.contains(&EnhancedPacketOption::Flags(1)));
        assert!(opts.contains(&EnhancedPacketOption::Comment("in, tenant blue: drop spoofed_src_mac".into())));
        assert!(packets[1].3.contains(&EnhancedPacketOption::Flags(2)));
        assert!(packets[1].3.contains(&EnhancedPacketOption::Comment("out, tenant blue: sent".into())));
    }

    #[test]
    fn capture_places_are_bounded_and_freed() {
        let running = Arc::new(AtomicUsize::new(0));
        let slots: Vec<Slot> = (0..MAX_CAPTURES).map(|_| Slot::take(&running).unwrap()).collect();
        assert!(Slot::take(&running).is_none());
        drop(slots);
        assert!(Slot::take(&running).is_some());
    }
}
