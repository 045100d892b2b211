//! Types shared by the xvs XDP programs and the xvsd daemon: map layouts, keys and values.
//!
//! One program object serves every interface of a daemon: each attached interface gets an
//! interface slot (`SLOTS`: ifindex -> slot), which indexes its AF_XDP sockets, its counters,
//! its VM-port settings and its entry in the transmit devmap. The fast-path maps (tenant by
//! VNI, VTEP allow-list, local and remote MACs, underlay neighbours) are written by the
//! daemon from the forwarding core's tables.
#![no_std]

/// Per-slot counters the XDP programs keep, by index in a slot's part of `COUNTERS`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Uplink: VXLAN or ARP for our VTEP redirected to the AF_XDP socket.
    UplinkRedirected = 0,
    /// Uplink: not overlay traffic, passed to the kernel.
    UplinkPassed = 1,
    /// Uplink: claimed to be VXLAN to us (UDP 4789 to our VTEP IP, a valid IP header) but too
    /// short for the VXLAN header; dropped.
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
    /// VM port: frames the VM sent that the fast path encapsulated and sent to the uplink.
    FastEncapPackets = 7,
    /// Their bytes as the VM sent them.
    FastEncapBytesIn = 8,
    /// Their bytes on the uplink (with the outer headers).
    FastEncapBytesOut = 9,
    /// VM port: VXLAN frames the fast path decapsulated and sent to this port.
    FastDecapPackets = 10,
    /// Their bytes on the uplink.
    FastDecapBytesIn = 11,
    /// Their bytes as sent to the VM.
    FastDecapBytesOut = 12,
    /// The fast path's redirect to its egress interface failed (the kernel dropped it).
    FastRedirectFailed = 13,
    /// Uplink: VXLAN to us in an IP fragment (with a valid header checksum); dropped.
    UplinkOuterFragment = 14,
}

impl Counter {
    /// Number of counters.
    pub const COUNT: u32 = 15;
    /// Every counter, by index.
    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::UplinkRedirected,
        Counter::UplinkPassed,
        Counter::UplinkMalformedVxlan,
        Counter::UplinkNoSocket,
        Counter::VmRedirected,
        Counter::VmNoSocket,
        Counter::VmHostBlocked,
        Counter::FastEncapPackets,
        Counter::FastEncapBytesIn,
        Counter::FastEncapBytesOut,
        Counter::FastDecapPackets,
        Counter::FastDecapBytesIn,
        Counter::FastDecapBytesOut,
        Counter::FastRedirectFailed,
        Counter::UplinkOuterFragment,
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
            Counter::FastEncapPackets => "xdp_fast_encap_packets",
            Counter::FastEncapBytesIn => "xdp_fast_encap_bytes_in",
            Counter::FastEncapBytesOut => "xdp_fast_encap_bytes_out",
            Counter::FastDecapPackets => "xdp_fast_decap_packets",
            Counter::FastDecapBytesIn => "xdp_fast_decap_bytes_in",
            Counter::FastDecapBytesOut => "xdp_fast_decap_bytes_out",
            Counter::FastRedirectFailed => "xdp_fast_redirect_failed",
            Counter::UplinkOuterFragment => "xdp_uplink_outer_fragment",
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
    /// The uplink's MAC: the source of encapsulated frames.
    pub mac: [u8; 6],
    /// [`FAST_DECAP`] | [`FAST_ENCAP`]: which fast paths are on.
    pub flags: u16,
    /// Outer TTL.
    pub ttl: u8,
    /// Zero.
    pub pad: u8,
    /// Largest inner frame (Ethernet header included) that fits the underlay MTU.
    pub max_inner: u16,
}

/// [`UplinkConf::flags`]: VXLAN for a local VM port is decapsulated in XDP.
pub const FAST_DECAP: u16 = 1;
/// [`UplinkConf::flags`]: a VM's frame to a known remote MAC is encapsulated in XDP (only
/// while the uplink has no rate to schedule).
pub const FAST_ENCAP: u16 = 2;

/// A VM port's settings for the fast path, by slot in `VM_CONF`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmConf {
    /// The port's tenant id.
    pub tenant: u32,
    /// The tenant's VNI.
    pub vni: u32,
    /// The VM's only source MAC.
    pub mac: [u8; 6],
    /// [`VM_FAST_FROM`] | [`VM_FAST_TO`].
    pub flags: u8,
    /// How many of `ipv4` are set.
    pub n_ipv4: u8,
    /// The VM's IPv4 source addresses (a port with more goes to the core).
    pub ipv4: [[u8; 4]; VM_MAX_IPV4],
}

/// Addresses a VM port can have for the fast path to check its sources.
pub const VM_MAX_IPV4: usize = 4;
/// [`VmConf::flags`]: what this VM sends may take the fast path (no policer, no capture,
/// no offload work, the port is read through AF_XDP).
pub const VM_FAST_FROM: u8 = 1;
/// [`VmConf::flags`]: frames for this VM may be redirected to it in XDP (its interface
/// takes XDP frames; no capture).
pub const VM_FAST_TO: u8 = 2;

/// Key of the MAC maps: the tenant and a MAC (tenant in every lookup key).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct MacKey {
    /// Tenant id.
    pub tenant: u32,
    /// The MAC.
    pub mac: [u8; 6],
    /// Zero.
    pub pad: [u8; 2],
}

/// Key of the VTEP allow-list: the tenant and a remote VTEP.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct VtepKey {
    /// Tenant id.
    pub tenant: u32,
    /// The VTEP's IPv4 address, network order.
    pub ip: [u8; 4],
}

/// A remote MAC: its VTEP and the underlay next hop towards it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Remote {
    /// The VTEP, network order.
    pub vtep: [u8; 4],
    /// The next hop (the VTEP itself on-link, or the gateway), network order.
    pub next_hop: [u8; 4],
}

/// An underlay neighbour's MAC (padded to 8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NeighMac {
    /// The MAC.
    pub mac: [u8; 6],
    /// Zero.
    pub pad: [u8; 2],
}

#[cfg(feature = "user")]
mod pod {
    #![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    // Every type below is repr(C) and Copy, has no implicit padding (its fields are laid out
    // without gaps: sizes 18, 32, 12, 8, 8, 8) and takes every bit pattern as a valid value.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::UplinkConf {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::VmConf {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::MacKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::VtepKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Remote {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::NeighMac {}
}

/// Name of the XDP program for the uplink.
pub const PROG_UPLINK: &str = "xvs_uplink";
/// Name of the XDP program for VM ports.
pub const PROG_VM: &str = "xvs_vm";
/// Name of the XDP program that passes every frame.
pub const PROG_PASS: &str = "xvs_pass";
/// Name of the benchmarks' plain XDP forwarder.
pub const PROG_FWD: &str = "xvs_fwd";
/// Name of its ingress ifindex -> egress ifindex devmap.
pub const MAP_FWD: &str = "FWD";
/// Name of the tc ingress program for tap VM ports.
pub const PROG_VM_TC: &str = "xvs_vm_ingress";
/// Name of the XSKMAP (slot * MAX_QUEUES + queue -> AF_XDP socket).
pub const MAP_XSKS: &str = "XSKS";
/// Name of the per-CPU counter array (slot * Counter::COUNT + counter).
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the uplink settings array.
pub const MAP_UPLINK_CONF: &str = "UPLINK_CONF";
/// Name of the ifindex -> slot hash map.
pub const MAP_SLOTS: &str = "SLOTS";
/// Name of the VM-port settings array, by slot.
pub const MAP_VM_CONF: &str = "VM_CONF";
/// Name of the transmit devmap, by slot.
pub const MAP_TX_PORTS: &str = "TX_PORTS";
/// Name of the VNI -> tenant id map.
pub const MAP_VNI: &str = "VNI_TENANT";
/// Name of the (tenant, VTEP) allow-list.
pub const MAP_VTEPS: &str = "VTEP_ALLOW";
/// Name of the (tenant, MAC) -> slot map of local VM MACs.
pub const MAP_LOCAL: &str = "LOCAL_MACS";
/// Name of the (tenant, MAC) -> [`Remote`] map of static remote MACs.
pub const MAP_REMOTE: &str = "REMOTE_MACS";
/// Name of the next hop -> MAC map.
pub const MAP_NEIGH: &str = "NEIGH";
/// Entries of the XSKMAP per slot: the most queues one interface can have sockets on.
pub const MAX_QUEUES: u32 = 64;
/// Interfaces one daemon can attach at once (slot 0 is the uplink).
pub const MAX_SLOTS: u32 = 4096;
/// Entries of the MAC maps, each.
pub const MAX_MACS: u32 = 1 << 20;
/// Entries of the VNI map and of the VTEP allow-list.
pub const MAX_TENANT_KEYS: u32 = 1 << 16;
/// Entries of the neighbour map.
pub const MAX_NEIGH: u32 = 4096;
