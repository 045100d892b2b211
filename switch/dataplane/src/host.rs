//! The VTEP's own small host stack on the underlay: answers ARP for our VTEP IP and ICMP echo
//! to it, and resolves the MAC of each remote VTEP's next hop with ARP, retrying and expiring
//! entries. Pure logic over the frame memory, time passed in; built on `smoltcp::wire`.
//!
//! May depend on: neigh, port, tables, wire; smoltcp.

use crate::neigh::Neighbors;
use crate::port::{Desc, FrameMem, FreeList, HEADROOM, TxStage};
use crate::tables::{Tables, UPLINK};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, MacAddr,
};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr};
use std::net::Ipv4Addr;

pub use xvs_proto::reply::HostCounters;

/// Timing of neighbour resolution.
#[derive(Debug, Clone, Copy)]
pub struct NeighborTimers {
    /// Interval between ARP retries for an unresolved neighbour.
    pub retry_ns: u64,
    /// Tries before an unresolved neighbour is dropped (the next packet starts over).
    pub max_tries: u32,
    /// How long an answer stays valid before it is confirmed again.
    pub reachable_ns: u64,
}

impl Default for NeighborTimers {
    fn default() -> Self {
        NeighborTimers { retry_ns: 1_000_000_000, max_tries: 5, reachable_ns: 60_000_000_000 }
    }
}

/// The host stack of the core that owns the uplink.
#[derive(Debug, Default)]
pub struct HostStack {
    /// Timers.
    pub timers: NeighborTimers,
    /// Counters.
    pub counters: HostCounters,
    /// Neighbours resolved by ARP since the caller last took them (to share with the other
    /// cores: an answer lands on one core's queue). At most `LEARNED_MAX`; more wait for
    /// the next ARP exchange.
    pub learned: Vec<(std::net::Ipv4Addr, crate::wire::MacAddr)>,
}

/// Resolved neighbours a host stack keeps for its caller between two takes.
const LEARNED_MAX: usize = 64;

impl HostStack {
    /// Handles the frames the pipeline handed to the host (`stage.host`): replies go to the
    /// uplink's stage, everything else back to `free`.
    pub fn receive<M: FrameMem + ?Sized>(
        &mut self,
        t: &Tables,
        neigh: &mut Neighbors,
        mem: &mut M,
        free: &mut FreeList,
        stage: &mut TxStage,
        now: u64,
    ) {
        let frames = std::mem::take(&mut stage.host);
        for d in &frames {
            let reply = self.answer(t, neigh, mem.data_mut(d), now);
            match reply {
                Some(n) if stage.push(UPLINK, Desc { len: n as u16, ..*d }) => {}
                _ => free.free(d.id),
            }
        }
        stage.host = frames;
        stage.host.clear();
    }

    /// Answers one frame in place; returns the reply's length.
    fn answer(&mut self, t: &Tables, neigh: &mut Neighbors, frame: &mut [u8], now: u64) -> Option<usize> {
        let me = t.underlay.vtep_ip;
        let my_mac = t.underlay.mac;
        let eth = EthernetFrame::new_checked(&*frame).ok()?;
        match eth.ethertype() {
            EtherType::Arp => {
                let Ok(ArpRepr::EthernetIpv4 {
                    operation,
                    source_hardware_addr: sha,
                    source_protocol_addr: spa,
                    target_protocol_addr: tpa,
                    ..
                }) = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p))
                else {
                    self.counters.ignored += 1;
                    return None;
                };
                if tpa != me || !sha.is_unicast() {
                    self.counters.ignored += 1;
                    return None;
                }
                // An ARP from a neighbour we want (or know) tells us its MAC either way.
                if neigh.get(spa).is_some() {
                    neigh.update(spa, sha, now);
                    self.counters.arp_resolved += 1;
                    if self.learned.len() < LEARNED_MAX {
                        self.learned.push((spa, sha));
                    }
                }
                if operation != ArpOperation::Request {
                    return None;
                }
                let mut eth = EthernetFrame::new_unchecked(&mut *frame);
                eth.set_dst_addr(sha);
                eth.set_src_addr(my_mac);
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: my_mac,
                    source_protocol_addr: me,
                    target_hardware_addr: sha,
                    target_protocol_addr: spa,
                }
                .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
                self.counters.arp_replies_sent += 1;
                Some(42)
            }
            EtherType::Ipv4 => {
                let src_mac = eth.src_addr();
                let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
                if ip.dst_addr() != me || ip.next_header() != IpProtocol::Icmp || !ip.verify_checksum() {
                    self.counters.ignored += 1;
                    return None;
                }
                let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
                let Ok(Icmpv4Repr::EchoRequest { data, .. }) =
                    Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default())
                else {
                    self.counters.ignored += 1;
                    return None;
                };
                let (src_ip, total, data_len) = (ip.src_addr(), usize::from(ip.total_len()), data.len());
                // Reply in place: swap addresses, turn the request into a reply.
                let mut eth = EthernetFrame::new_unchecked(&mut *frame);
                eth.set_dst_addr(src_mac);
                eth.set_src_addr(my_mac);
                let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
                ip.set_src_addr(me);
                ip.set_dst_addr(src_ip);
                ip.set_hop_limit(64);
                ip.fill_checksum();
                let mut icmp = Icmpv4Packet::new_unchecked(&mut ip.payload_mut()[..8 + data_len]);
                icmp.set_msg_type(smoltcp::wire::Icmpv4Message::EchoReply);
                icmp.set_msg_code(0);
                icmp.fill_checksum();
                self.counters.icmp_echo_replies += 1;
                Some(14 + total)
            }
            _ => {
                self.counters.ignored += 1;
                None
            }
        }
    }

    /// Runs the neighbour timers: sends ARP requests for unresolved and stale neighbours,
    /// gives up on those that never answer.
    pub fn tick<M: FrameMem + ?Sized>(
        &mut self,
        t: &Tables,
        neigh: &mut Neighbors,
        mem: &mut M,
        free: &mut FreeList,
        stage: &mut TxStage,
        now: u64,
    ) {
        let tm = self.timers;
        let mut expired = 0;
        neigh.retain(|_, n| {
            let due = n.tries > 0 && now.saturating_sub(n.last_request) >= tm.retry_ns;
            let stale = n.mac.is_none() || now.saturating_sub(n.updated) >= tm.reachable_ns;
            let give_up = stale && due && n.tries >= tm.max_tries;
            if give_up {
                expired += 1;
            }
            !give_up
        });
        self.counters.neighbors_expired += expired;
        for (ip, n) in neigh.iter_mut() {
            let stale = n.mac.is_none() || now.saturating_sub(n.updated) >= tm.reachable_ns;
            let due = n.tries == 0 || now.saturating_sub(n.last_request) >= tm.retry_ns;
            if !stale || !due {
                continue;
            }
            let Some(id) = free.alloc() else { return };
            let len =
                write_arp_request(&mut mem.buf_mut(id)[HEADROOM..], t.underlay.mac, t.underlay.vtep_ip, ip, n.mac);
            if stage.push(UPLINK, Desc::new(id, len)) {
                n.tries += 1;
                n.last_request = now;
                self.counters.arp_requests_sent += 1;
            } else {
                free.free(id);
            }
        }
    }
}

/// Writes an ARP request for `target` into `buf`; unicast to `known` when refreshing.
fn write_arp_request(buf: &mut [u8], mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr, known: Option<MacAddr>) -> usize {
    let frame = &mut buf[..60];
    frame.fill(0);
    let mut eth = EthernetFrame::new_unchecked(&mut *frame);
    EthernetRepr { src_addr: mac, dst_addr: known.unwrap_or(MacAddr::BROADCAST), ethertype: EtherType::Arp }
        .emit(&mut eth);
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    60
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::frames;
    use crate::memport::MemFrames;

    const S: u64 = 1_000_000_000;

    fn setup() -> (Tables, Neighbors, MemFrames, FreeList, TxStage) {
        let c = Config::from_toml(
            "[uplink]\ninterface = \"u\"\nvtep_ip = \"192.168.77.1/24\"\nmac = \"02:00:00:00:ff:01\"\n",
        )
        .unwrap();
        (
            c.build(None, None).unwrap(),
            Neighbors::new(16),
            MemFrames::new(16, 2048),
            FreeList::new(16),
            TxStage::new(1, 16, 16),
        )
    }

    #[test]
    fn answers_arp_for_our_vtep_and_learns_wanted_neighbors() {
        let (t, mut n, mut mem, mut free, mut stage) = setup();
        let mut h = HostStack::default();
        let peer = MacAddr([2, 0, 0, 0, 0xff, 2]);
        n.resolve(Ipv4Addr::new(192, 168, 77, 2), 0);
        let id = free.alloc().unwrap();
        let d =
            mem.write(id, &frames::arp_request(peer, Ipv4Addr::new(192, 168, 77, 2), Ipv4Addr::new(192, 168, 77, 1)));
        stage.host.push(d);
        h.receive(&t, &mut n, &mut mem, &mut free, &mut stage, S);
        let out = stage.staged(UPLINK).clone();
        assert_eq!(out.len(), 1);
        let eth = EthernetFrame::new_checked(mem.data(&out[0])).unwrap();
        assert_eq!((eth.dst_addr(), eth.src_addr()), (peer, t.underlay.mac));
        let r = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        assert!(
            matches!(r, ArpRepr::EthernetIpv4 { operation: ArpOperation::Reply, source_protocol_addr, .. } if source_protocol_addr == t.underlay.vtep_ip)
        );
        assert_eq!(n.get(Ipv4Addr::new(192, 168, 77, 2)).unwrap().mac, Some(peer));
    }

    #[test]
    fn resolves_retries_and_expires() {
        let (t, mut n, mut mem, mut free, mut stage) = setup();
        let mut h = HostStack::default();
        let vtep = Ipv4Addr::new(192, 168, 77, 2);
        assert_eq!(n.resolve(vtep, 0), None);
        h.tick(&t, &mut n, &mut mem, &mut free, &mut stage, 1);
        assert_eq!(stage.staged(UPLINK).len(), 1, "first request at once");
        h.tick(&t, &mut n, &mut mem, &mut free, &mut stage, S / 2);
        assert_eq!(stage.staged(UPLINK).len(), 1, "no retry before the interval");
        for i in 1..=4 {
            h.tick(&t, &mut n, &mut mem, &mut free, &mut stage, i * S + 1);
        }
        assert_eq!(h.counters.arp_requests_sent, 5);
        h.tick(&t, &mut n, &mut mem, &mut free, &mut stage, 6 * S);
        assert!(n.get(vtep).is_none(), "given up after 5 tries");
        assert_eq!(h.counters.neighbors_expired, 1);
        // a reply resolves; it goes stale after the reachable time and is refreshed unicast
        n.resolve(vtep, 7 * S);
        let peer = MacAddr([2, 0, 0, 0, 0xff, 2]);
        let id = free.alloc().unwrap();
        let reply = frames::arp(ArpOperation::Reply, peer, vtep, t.underlay.mac, t.underlay.vtep_ip, t.underlay.mac);
        stage.host.push(mem.write(id, &reply));
        h.receive(&t, &mut n, &mut mem, &mut free, &mut stage, 7 * S);
        assert_eq!(n.get(vtep).unwrap().mac, Some(peer));
        stage.staged(UPLINK).clear();
        h.tick(&t, &mut n, &mut mem, &mut free, &mut stage, 8 * S);
        assert!(stage.staged(UPLINK).is_empty(), "fresh");
        h.tick(&t, &mut n, &mut mem, &mut free, &mut stage, 68 * S);
        let d = stage.staged(UPLINK)[0];
        assert_eq!(EthernetFrame::new_checked(mem.data(&d)).unwrap().dst_addr(), peer, "refresh is unicast");
    }

    #[test]
    fn answers_ping_to_our_vtep() {
        let (t, mut n, mut mem, mut free, mut stage) = setup();
        let mut h = HostStack::default();
        let peer = MacAddr([2, 0, 0, 0, 0xff, 2]);
        let mut f =
            frames::udp4(peer, t.underlay.mac, Ipv4Addr::new(192, 168, 77, 2), t.underlay.vtep_ip, 0, 0, &[0; 8]);
        // turn it into ICMP echo request id 7 seq 1 with 8 bytes of data
        f[23] = 1;
        let icmp = &mut f[34..];
        icmp[..8].copy_from_slice(&[8, 0, 0, 0, 0, 7, 0, 1]);
        let mut p = Icmpv4Packet::new_unchecked(&mut f[34..]);
        p.fill_checksum();
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.fill_checksum();
        let id = free.alloc().unwrap();
        stage.host.push(mem.write(id, &f));
        h.receive(&t, &mut n, &mut mem, &mut free, &mut stage, S);
        let d = stage.staged(UPLINK)[0];
        let eth = EthernetFrame::new_checked(mem.data(&d)).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(192, 168, 77, 2));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert!(matches!(
            Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()),
            Ok(Icmpv4Repr::EchoReply { ident: 7, seq_no: 1, .. })
        ));
        assert_eq!(h.counters.icmp_echo_replies, 1);
    }
}
