//! Explains what the cores report, for the operator, on the control side (never on a
//! forwarding thread): a frame's trace from the facts a core read for it, and FDB rows from
//! the entries a core copied out.
//!
//! May depend on: datapath (`TraceFacts`, `FdbRow`), pipeline, fdb, tables, types, wire, the
//! control protocol's reply types.

use crate::datapath::{FdbRow, TraceFacts};
use crate::fdb::Origin;
use crate::pipeline::{Action, DropReason, Underlayer, encap};
use crate::tables::{FdbDest, Tables, UPLINK};
use crate::types::{PortId, TenantId, mac_str};
use crate::wire::{EthernetFrame, Ipv4Packet};
use xvs_proto::reply::{self, Trace};

fn tenant_name(t: &Tables, id: TenantId) -> &str {
    t.tenant(id).map_or("?", |x| x.name.as_str())
}

fn port_name(t: &Tables, id: PortId) -> &str {
    t.port(id).map_or("?", |x| x.name.as_str())
}

fn dest_str(t: &Tables, d: FdbDest) -> String {
    match d {
        FdbDest::Local(p) => format!("port {}", port_name(t, p)),
        FdbDest::Remote(v) => format!("vtep {v}"),
    }
}

fn origin_str(o: Origin) -> &'static str {
    match o {
        Origin::Static => "static",
        Origin::LearnedLocal => "learned local",
        Origin::LearnedRemote => "learned remote",
    }
}

/// Every step of the decision `f` for `frame` arriving on `port`, as `xvsctl trace` shows it.
pub fn trace(f: &TraceFacts, port: PortId, frame: &[u8]) -> Trace {
    let (t, now) = (&*f.tables, f.now);
    let mut steps: Vec<String> = Vec::new();
    let Some(p) = t.port(port) else {
        let reason = Some("unknown_port".to_string());
        return Trace { steps: vec!["no such port".into()], action: "drop".into(), reason };
    };
    steps.push(format!("ingress port {} ({})", p.name, if port == UPLINK { "uplink" } else { "vm" }));
    if port == UPLINK {
        match encap::parse_outer(frame, t.underlay.vtep_ip) {
            Ok(Underlayer::Vxlan(o)) => {
                steps.push(format!("outer: VXLAN from VTEP {} VNI {}", o.src_ip, o.vni));
                match t.tenant_by_vni(o.vni) {
                    Some(id) => steps.push(format!(
                        "VNI {} -> tenant {}; VTEP {} {}",
                        o.vni,
                        tenant_name(t, id),
                        o.src_ip,
                        if t.vtep_allowed(id, o.src_ip) { "allowed" } else { "not in the tenant's list" }
                    )),
                    None => steps.push(format!("VNI {} belongs to no tenant", o.vni)),
                }
            }
            Ok(Underlayer::Host) => steps.push("for the VTEP host stack (ARP/ICMP)".into()),
            Err(r) => steps.push(format!("outer headers rejected: {}", r.name())),
        }
    }
    if let Some(id) = f.tenant {
        steps.push(format!("tenant {} (VNI {})", tenant_name(t, id), t.tenant(id).map_or(0, |x| x.vni.get())));
    }
    let inner = encap::inner_frame(frame, port == UPLINK, t.underlay.vtep_ip).unwrap_or(frame);
    if let Ok(eth) = EthernetFrame::new_checked(inner) {
        steps.push(format!(
            "ethernet {} -> {} type {}",
            mac_str(&eth.src_addr()),
            mac_str(&eth.dst_addr()),
            eth.ethertype()
        ));
        if let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) {
            steps.push(format!("ipv4 {} -> {} proto {}", ip.src_addr(), ip.dst_addr(), ip.next_header()));
        }
        if let Some(id) = f.tenant {
            let (dst, tname) = (eth.dst_addr(), tenant_name(t, id));
            let age = |e: &crate::fdb::Entry| now.saturating_sub(e.last_seen) as f64 / 1e9;
            steps.push(match &f.dst {
                _ if dst.is_multicast() => "destination is broadcast/multicast: flood".into(),
                // as forwarding sees it: an entry past its aging time is a miss
                Some((e, false)) => format!(
                    "fdb lookup ({tname}, {}): entry for {} aged out ({:.1}s old, aging {}s) -> flood",
                    mac_str(&dst),
                    dest_str(t, e.dest),
                    age(e),
                    t.fdb_aging_secs
                ),
                Some((e, true)) => format!(
                    "fdb lookup ({tname}, {}): {} ({}{})",
                    mac_str(&dst),
                    dest_str(t, e.dest),
                    origin_str(e.origin),
                    if e.origin == Origin::Static { String::new() } else { format!(", age {:.1}s", age(e)) }
                ),
                None => format!("fdb lookup ({tname}, {}): miss -> flood", mac_str(&dst)),
            });
        }
    }
    let (action_s, reason) = match f.action {
        Action::Drop(r) => ("drop".to_string(), Some(r.name())),
        Action::Forward(p) => (format!("output to port {}", port_name(t, p)), None),
        Action::Encap { dst_mac, dst_ip, vni, src_port } => (
            format!(
                "encapsulate VNI {vni} to VTEP {dst_ip} (next-hop MAC {}, UDP source port {src_port}), output to uplink",
                mac_str(&dst_mac)
            ),
            None,
        ),
        Action::Decap { port, .. } => (format!("decapsulate, output to port {}", port_name(t, port)), None),
        Action::Flood { tenant, exclude, remote, .. } => {
            let tn = t.tenant(tenant);
            let ports: Vec<&str> = tn
                .map(|x| x.ports.iter().filter(|p| **p != exclude).map(|p| port_name(t, *p)).collect())
                .unwrap_or_default();
            let vteps: Vec<String> = match (remote, tn) {
                (true, Some(x)) => x.vteps.iter().map(|v| v.to_string()).collect(),
                _ => vec![],
            };
            (format!("flood to ports [{}] and VTEPs [{}]", ports.join(", "), vteps.join(", ")), None)
        }
        Action::Host => ("hand to the VTEP host stack".to_string(), None),
        Action::TooBig { mtu } => (
            format!("too big for the overlay: drop, answer ICMP fragmentation needed / packet too big (MTU {mtu})"),
            Some(DropReason::MtuExceeded.name()),
        ),
    };
    if let Some(r) = reason {
        steps.push(format!("drop: {r}"));
    }
    Trace { steps, action: action_s, reason: reason.map(str::to_string) }
}

/// FDB entries as `xvsctl fdb show` lists them, sorted by tenant and MAC; ages at `now` on
/// the clock of the core that copied them.
pub fn fdb_rows(t: &Tables, rows: &[FdbRow], now: u64) -> Vec<reply::FdbRow> {
    let mut rows: Vec<&FdbRow> = rows.iter().collect();
    rows.sort_by(|a, b| (tenant_name(t, a.0), a.1).cmp(&(tenant_name(t, b.0), b.1)));
    rows.iter()
        .map(|(tn, mac, e)| {
            let age = match e.origin {
                Origin::Static => None,
                _ => Some((now.saturating_sub(e.last_seen) as f64 / 1e8).round() / 10.0),
            };
            reply::FdbRow {
                tenant: tenant_name(t, *tn).to_string(),
                mac: mac_str(mac),
                dest: dest_str(t, e.dest),
                origin: origin_str(e.origin).to_string(),
                age_secs: age,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::frames;
    use crate::port::{FrameMem, Port};
    use crate::sim::Sim;
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    fn trace<P: Port, M: FrameMem>(core: &crate::datapath::Core<P, M>, port: PortId, frame: &[u8], now: u64) -> Trace {
        super::trace(&core.trace_facts(port, frame, now), port, frame)
    }

    #[test]
    fn trace_decides_as_forwarding_does_aging_and_jumbo_frames_included() {
        let mut cfg = Config::from_toml(crate::config::EXAMPLE).unwrap();
        cfg.uplink.mtu = Some(9000); // a jumbo underlay
        let mut s = Sim::new(Arc::new(cfg.build(None, None).unwrap()), 256);
        let (peer, vtep2) = (MacAddr([2, 0, 0, 0, 0xff, 2]), Ipv4Addr::new(192, 168, 77, 2));
        let now = s.now;
        s.core.pipeline.neigh.update(vtep2, peer, now);
        // learn a remote VM of blue
        let remote = MacAddr([2, 0, 0, 0, 0, 0x33]);
        let (vm1, a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 33));
        let u = s.core.pipeline.tables().underlay.clone();
        s.inject(crate::tables::UPLINK, &frames::vxlan4(&u, peer, vtep2, 100, &frames::udp4_min(remote, vm1, b, a)));
        s.run();
        let to_remote = frames::udp4_min(vm1, remote, a, b);
        let tr = trace(&s.core, PortId(1), &to_remote, s.now);
        assert!(tr.action.starts_with("encapsulate VNI 100"), "{tr:?}");
        // past the aging time forwarding floods; so does the trace, and it says why
        let later = s.now + 301 * 1_000_000_000;
        let tr = trace(&s.core, PortId(1), &to_remote, later);
        assert!(tr.action.starts_with("flood"), "{tr:?}");
        assert!(tr.steps.iter().any(|s| s.contains("aged out")), "{tr:?}");
        // a 9000-byte frame is judged whole (it was cut to 2,048 bytes, which fit): too big
        // for the 9000-byte underlay once encapsulated, as forwarding finds
        let jumbo = frames::udp4(vm1, remote, a, b, 1, 2, &vec![0u8; 8958]);
        assert_eq!(jumbo.len(), 9000);
        let tr = trace(&s.core, PortId(1), &jumbo, s.now);
        assert!(tr.action.contains("too big"), "{tr:?}");
    }
}
