//! Types shared by the xvs XDP programs and the xvsd daemon: map layouts, keys and values.
#![no_std]

/// Per-CPU counters the XDP programs keep, by index in the `COUNTERS` array map.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Uplink: VXLAN or ARP for our VTEP redirected to the AF_XDP socket.
    UplinkRedirected = 0,
    /// Uplink: not overlay traffic, passed to the kernel.
    UplinkPassed = 1,
    /// Uplink: claimed to be VXLAN to us (UDP 4789 to our VTEP IP) but malformed; dropped.
    UplinkMalformedVxlan = 2,
    /// Uplink: overlay traffic but no socket on this queue; passed to the kernel.
    UplinkNoSocket = 3,
    /// VM port: redirected to the AF_XDP socket.
    VmRedirected = 4,
    /// VM port: no socket on this queue; dropped (a VM port belongs to the switch).
    VmNoSocket = 5,
    /// Tap VM port: a frame the VM sent, seen by xvs's packet socket, kept out of the host's
    /// own stack by the tc ingress program.
    VmHostBlocked = 6,
}

impl Counter {
    /// Number of counters.
    pub const COUNT: u32 = 7;
    /// Every counter, by index.
    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::UplinkRedirected,
        Counter::UplinkPassed,
        Counter::UplinkMalformedVxlan,
        Counter::UplinkNoSocket,
        Counter::VmRedirected,
        Counter::VmNoSocket,
        Counter::VmHostBlocked,
    ];

    /// Stable name, as printed by the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::UplinkRedirected => "xdp_uplink_redirected",
            Counter::UplinkPassed => "xdp_uplink_passed",
            Counter::UplinkMalformedVxlan => "xdp_uplink_malformed_vxlan",
            Counter::UplinkNoSocket => "xdp_uplink_no_socket",
            Counter::VmRedirected => "xdp_vm_redirected",
            Counter::VmNoSocket => "xdp_vm_no_socket",
            Counter::VmHostBlocked => "tc_vm_host_blocked",
        }
    }
}

/// The uplink program's settings, at index 0 of the `UPLINK_CONF` array map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UplinkConf {
    /// Our VTEP IPv4 address, in network byte order as it appears in packets.
    pub vtep_ip: [u8; 4],
    /// VXLAN UDP port, host byte order.
    pub udp_port: u16,
    /// Zero.
    pub pad: u16,
}

#[cfg(feature = "user")]
#[expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
// SAFETY: UplinkConf is repr(C), Copy, has no padding (4 + 2 + 2 bytes) and every bit
// pattern is a valid value.
unsafe impl aya::Pod for UplinkConf {}

/// Name of the XDP program for the uplink.
pub const PROG_UPLINK: &str = "xvs_uplink";
/// Name of the XDP program for VM ports.
pub const PROG_VM: &str = "xvs_vm";
/// Name of the tc ingress program for tap VM ports.
pub const PROG_VM_TC: &str = "xvs_vm_ingress";
/// Name of the XSKMAP (queue id -> AF_XDP socket).
pub const MAP_XSKS: &str = "XSKS";
/// Name of the per-CPU counter array.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the uplink settings array.
pub const MAP_UPLINK_CONF: &str = "UPLINK_CONF";
/// Entries of the XSKMAP: the most queues one interface can have sockets on.
pub const MAX_QUEUES: u32 = 64;
