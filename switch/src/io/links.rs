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
