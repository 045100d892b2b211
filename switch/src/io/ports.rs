//! The port type of xvsd's forwarding cores: an interface's AF_XDP sockets (uplink, veth VM
//! ports) or a tap's packet socket (VM ports whose offloads must be kept), behind one
//! [`Port`].

use crate::io::afxdp::{QueueSet, XskMode};
use crate::io::packet::PacketPort;
use crate::port::{Desc, FrameMem, FreeList, KernelDrops, Port, RxTally};
use std::os::fd::RawFd;

/// One port of a forwarding core.
pub enum IoPort {
    /// AF_XDP sockets, one per queue this core owns.
    Xsk(QueueSet),
    /// A packet socket with virtio-net headers on a tap (boxed: its message headers make it
    /// large, and it is reached once per poll, not per frame).
    Packet(Box<PacketPort>),
}

impl IoPort {
    /// File descriptors to sleep on.
    pub fn fds(&self) -> Vec<RawFd> {
        match self {
            IoPort::Xsk(q) => q.fds().collect(),
            IoPort::Packet(p) => vec![p.fd()],
        }
    }

    /// AF_XDP binding of each queue (none for a packet socket).
    pub fn modes(&self) -> Vec<XskMode> {
        match self {
            IoPort::Xsk(q) => q.queues.iter().map(|x| x.mode).collect(),
            IoPort::Packet(_) => Vec::new(),
        }
    }

    /// Closes the sockets, returning every frame they held to `free`.
    pub fn release(self, free: &mut FreeList) {
        match self {
            IoPort::Xsk(q) => q.release(free),
            IoPort::Packet(p) => (*p).release(free),
        }
    }
}

impl Port for IoPort {
    fn rx(&mut self, mem: &mut dyn FrameMem, out: &mut [Desc]) -> usize {
        match self {
            IoPort::Xsk(q) => q.rx(mem, out),
            IoPort::Packet(p) => p.rx(mem, out),
        }
    }

    fn tx(&mut self, descs: &[Desc]) -> usize {
        match self {
            IoPort::Xsk(q) => q.tx(descs),
            IoPort::Packet(p) => p.tx(descs),
        }
    }

    fn flush(&mut self) {
        match self {
            IoPort::Xsk(q) => q.flush(),
            IoPort::Packet(p) => p.flush(),
        }
    }

    fn reclaim(&mut self, free: &mut FreeList) {
        match self {
            IoPort::Xsk(q) => q.reclaim(free),
            IoPort::Packet(p) => p.reclaim(free),
        }
    }

    fn refill(&mut self, free: &mut FreeList) {
        match self {
            IoPort::Xsk(q) => q.refill(free),
            IoPort::Packet(p) => p.refill(free),
        }
    }

    fn take_tally(&mut self) -> RxTally {
        match self {
            IoPort::Xsk(q) => q.take_tally(),
            IoPort::Packet(p) => p.take_tally(),
        }
    }

    fn kernel_drops(&mut self) -> KernelDrops {
        match self {
            IoPort::Xsk(q) => q.kernel_drops(),
            IoPort::Packet(p) => p.kernel_drops(),
        }
    }
}
