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

/// One generic-netlink request (`family`, `cmd`, attributes as (type, bytes)); the reply's
/// attributes, or `None` on an error reply or none.
fn genl(family: u16, cmd: u8, attrs: &[(u16, &[u8])]) -> Option<Vec<(u16, Vec<u8>)>> {
    use netlink_sys::protocols::NETLINK_GENERIC;
    let mut body = vec![cmd, 1, 0, 0]; // genlmsghdr: cmd, version, reserved
    for (t, v) in attrs {
        let len = 4 + v.len();
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&t.to_ne_bytes());
        body.extend_from_slice(v);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&family.to_ne_bytes());
    msg.extend_from_slice(&(netlink_packet_core::NLM_F_REQUEST).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    msg.extend_from_slice(&body);
    let mut sock = Socket::new(NETLINK_GENERIC).ok()?;
    sock.bind_auto().ok()?;
    sock.connect(&SocketAddr::new(0, 0)).ok()?;
    sock.send(&msg, 0).ok()?;
    let mut buf = vec![0u8; 1 << 14];
    let n = sock.recv(&mut &mut buf[..], 0).ok()?;
    let buf = &buf[..n];
    const NLMSG_ERROR: u16 = 2;
    if buf.len() < 20 || u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        return None;
    }
    let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(buf.len());
    let mut out = Vec::new();
    let mut off = 20;
    while off + 4 <= len {
        let alen = usize::from(u16::from_ne_bytes([buf[off], buf[off + 1]]));
        let t = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & 0x3fff;
        if alen < 4 || off + alen > len {
            break;
        }
        out.push((t, buf[off + 4..off + alen].to_vec()));
        off += alen.next_multiple_of(4);
    }
    Some(out)
}

/// Whether frames redirected in XDP into the interface `index` are transmitted: the
/// kernel's XDP features of the device (`netdev` generic netlink, `xdp-features`) include
/// `ndo-xmit`. A veth has it only while its peer runs NAPI (an XDP program or GRO there);
/// a device without it would drop what the fast path sends it. No answer (an older kernel):
/// no.
pub fn takes_xdp_frames(index: u32) -> bool {
    const GENL_ID_CTRL: u16 = 0x10;
    const CTRL_CMD_GETFAMILY: u8 = 3;
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    const CTRL_ATTR_FAMILY_NAME: u16 = 2;
    const NETDEV_CMD_DEV_GET: u8 = 1;
    const NETDEV_A_DEV_IFINDEX: u16 = 1;
    const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
    const NETDEV_XDP_ACT_NDO_XMIT: u64 = 4;
    // The family's id is fixed once the kernel registered it: asked once.
    static FAMILY: std::sync::OnceLock<Option<u16>> = std::sync::OnceLock::new();
    let family = FAMILY.get_or_init(|| {
        let ctrl = genl(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, &[(CTRL_ATTR_FAMILY_NAME, b"netdev\0")])?;
        let (_, v) = ctrl.iter().find(|(t, v)| *t == CTRL_ATTR_FAMILY_ID && v.len() >= 2)?;
        Some(u16::from_ne_bytes([v[0], v[1]]))
    });
    let Some(family) = *family else { return false };
    let Some(dev) = genl(family, NETDEV_CMD_DEV_GET, &[(NETDEV_A_DEV_IFINDEX, &index.to_ne_bytes())]) else {
        return false;
    };
    dev.iter().find(|(t, v)| *t == NETDEV_A_DEV_XDP_FEATURES && v.len() >= 8).is_some_and(|(_, v)| {
        let f = u64::from_ne_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
        f & NETDEV_XDP_ACT_NDO_XMIT != 0
    })
}
