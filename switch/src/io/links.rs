//! Link events from the kernel (rtnetlink, `RTMGRP_LINK`): a thread that tells the control
//! plane when an interface appears, disappears or goes up or down, so VM ports follow their
//! VMs (a qemu restart recreates its tap under the same name with a new index).

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkAttribute;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Names of the interfaces one batch of link messages was about (empty when the kernel's
/// queue overflowed and events were lost: then anything may have changed).
fn names(buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len])
            && let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l)) =
                msg.payload
        {
            out.extend(l.attributes.iter().filter_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }));
        }
        off += len.next_multiple_of(4);
    }
    out
}

/// Starts the watcher: `changed(names)` runs on this thread after every batch of link
/// messages (an empty list: events were lost, check everything). Ends when `stop` is set.
pub fn watch(stop: Arc<AtomicBool>, mut changed: impl FnMut(&[String]) + Send + 'static) -> anyhow::Result<()> {
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| anyhow::anyhow!("netlink socket: {e}"))?;
    sock.bind(&SocketAddr::new(0, libc::RTMGRP_LINK as u32)).map_err(|e| anyhow::anyhow!("netlink bind: {e}"))?;
    sock.set_non_blocking(true).map_err(|e| anyhow::anyhow!("netlink: {e}"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    std::thread::Builder::new().name("xvs-links".into()).spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while !stop.load(Ordering::Relaxed) {
            crate::io::afxdp::wait_readable_for(&[fd], Duration::from_millis(250));
            let mut got: Option<Vec<String>> = None;
            loop {
                match sock.recv(&mut &mut buf[..], 0) {
                    Ok(n) => got.get_or_insert_with(Vec::new).extend(names(&buf[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ENOBUFS: the kernel dropped events; everything must be checked.
                    Err(_) => {
                        got = Some(Vec::new());
                        break;
                    }
                }
            }
            if let Some(n) = got {
                changed(&n);
            }
        }
    })?;
    Ok(())
}

/// One `RTM_GETLINK` for `index` (in the network namespace `nsid` of ours, if given): the
/// link's attributes.
fn get_link(index: u32, nsid: Option<i32>) -> Option<Vec<LinkAttribute>> {
    use netlink_packet_core::{DefaultNla, NLM_F_REQUEST, NetlinkHeader};
    use netlink_packet_route::link::LinkMessage;
    const IFLA_TARGET_NETNSID: u16 = 46;
    let mut link = LinkMessage::default();
    link.header.index = index;
    if let Some(id) = nsid {
        link.attributes.push(LinkAttribute::Other(DefaultNla::new(IFLA_TARGET_NETNSID, id.to_ne_bytes().to_vec())));
    }
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST;
    let mut msg = NetlinkMessage::new(hdr, NetlinkPayload::from(RouteNetlinkMessage::GetLink(link)));
    msg.finalize();
    let mut req = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut req);
    let mut sock = Socket::new(NETLINK_ROUTE).ok()?;
    sock.bind_auto().ok()?;
    sock.connect(&SocketAddr::new(0, 0)).ok()?;
    sock.send(&req, 0).ok()?;
    let mut buf = vec![0u8; 1 << 16];
    let n = sock.recv(&mut &mut buf[..], 0).ok()?;
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..n]).ok()?.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => Some(l.attributes),
        _ => None,
    }
}

/// Whether frames redirected in XDP into the interface `index` reach its other end. A veth
/// delivers them only when its peer runs NAPI, which it does when the peer has an XDP program
/// (or GRO on, which rtnetlink does not show: such a peer is treated as not taking them, and
/// its frames go through the core). Any other kind of interface: no (not checked).
pub fn peer_takes_xdp(index: u32) -> bool {
    use netlink_packet_route::link::{InfoKind, LinkInfo, LinkXdp, XdpAttached};
    let Some(attrs) = get_link(index, None) else { return false };
    let veth = attrs.iter().any(
        |a| matches!(a, LinkAttribute::LinkInfo(i) if i.iter().any(|x| matches!(x, LinkInfo::Kind(InfoKind::Veth)))),
    );
    let peer = attrs.iter().find_map(|a| if let LinkAttribute::Link(p) = a { Some(*p) } else { None });
    let nsid = attrs.iter().find_map(|a| if let LinkAttribute::LinkNetNsId(n) = a { Some(*n) } else { None });
    let (true, Some(peer)) = (veth, peer) else { return false };
    let Some(peer_attrs) = get_link(peer, nsid) else { return false };
    peer_attrs.iter().any(|a| {
        matches!(a, LinkAttribute::Xdp(x) if x.iter().any(|v| matches!(v, LinkXdp::Attached(s) if *s != XdpAttached::None)))
    })
}
