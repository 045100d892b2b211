//! Why a frame was dropped: a stable vocabulary that counters, the CLI and traces print
//! verbatim (like VPP's `vxlan_error.def`). Never rename a reason; add new ones at the end.
//!
//! May depend on: nothing but serde.

use serde::Serialize;

macro_rules! reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// A drop reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $doc] #[serde(rename = $name)] $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = DropReason::ALL.len();

            /// The stable name.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One-line description.
            pub const fn describe(self) -> &'static str {
                match self { $(DropReason::$variant => $doc,)* }
            }

            /// The reason with this stable name.
            pub fn from_name(s: &str) -> Option<DropReason> {
                DropReason::ALL.iter().copied().find(|r| r.name() == s)
            }
        }
    };
}

reasons! {
    MalformedEthernet => "malformed_ethernet", "shorter than an Ethernet header";
    UnknownPort => "unknown_port", "arrived on a port that is not configured";
    SpoofedSrcMac => "spoofed_src_mac", "source MAC is not the VM port's MAC";
    SpoofedSrcIp => "spoofed_src_ip", "source IP is not one of the VM port's IPs";
    SpoofedArp => "spoofed_arp", "ARP sender MAC or IP is not the VM port's";
    VlanTagged => "vlan_tagged", "VM sent an 802.1Q-tagged frame";
    MalformedArp => "malformed_arp", "ARP packet truncated or not Ethernet/IPv4";
    MalformedIpv4 => "malformed_ipv4", "IPv4 header truncated or inconsistent";
    MalformedIpv6 => "malformed_ipv6", "IPv6 header truncated";
    Hairpin => "hairpin", "destination is the port the frame came from";
    MtuExceeded => "mtu_exceeded", "too big for the underlay MTU after encapsulation";
    VtepUnresolved => "vtep_unresolved", "no MAC yet for the remote VTEP's next hop (ARP pending)";
    NotOurVtep => "not_our_vtep", "outer destination IP is not our VTEP";
    BadOuterChecksum => "bad_outer_checksum", "outer IPv4 header checksum is wrong";
    OuterFragment => "outer_fragment", "outer IPv4 packet is a fragment";
    MalformedUdp => "malformed_udp", "outer UDP header truncated or inconsistent";
    MalformedVxlan => "malformed_vxlan", "VXLAN header truncated";
    BadVxlanFlags => "bad_vxlan_flags", "VXLAN I flag clear (reserved bits are ignored, RFC 7348)";
    UnknownVni => "unknown_vni", "no tenant has this VNI";
    VtepNotAllowed => "vtep_not_allowed", "source VTEP is not in the tenant's VTEP list";
    MalformedInner => "malformed_inner", "inner frame shorter than an Ethernet header";
    InnerSrcInvalid => "inner_src_invalid", "inner source MAC is multicast or zero";
    RemoteClaimsLocalMac => "remote_claims_local_mac", "decapsulated frame's source MAC belongs to a local port";
    SplitHorizon => "split_horizon", "frame from the underlay would go back to the underlay";
    NoTenantPorts => "no_destination", "nowhere to deliver (no other port or VTEP in the tenant)";
    NoBuffer => "no_buffer", "no free frame to copy a flooded frame into";
    TxFull => "tx_full", "egress transmit ring full";
    HostQueueFull => "host_queue_full", "VTEP host stack queue full";
    NotVxlan => "not_vxlan", "non-VXLAN frame on the uplink that the host stack does not handle";
    Policed => "policed", "over the VM port's policer rate";
    QosQueueFull => "qos_queue_full", "the tenant's uplink queue is full (QoS)";
    GsoUnsupported => "gso_unsupported", "VM handed over a segmentation offload other than TCP over IPv4/IPv6";
    BadOffload => "bad_offload", "VM's offload header does not match its frame (checksum or TCP header out of place)";
    FrameTooBig => "frame_too_big", "frame larger than a frame buffer (and not a TCP super-frame to segment)";
    PortWaiting => "port_waiting", "egress port's interface is missing or down (waiting for it)";
    KernelRxDropped => "kernel_rx_dropped", "the kernel dropped a frame for this port's socket (no buffer, socket full, or too large for a buffer)";
    KernelRxRingFull => "kernel_rx_ring_full", "the kernel found this port's AF_XDP receive ring full";
    KernelInvalidDesc => "kernel_invalid_desc", "the kernel refused an AF_XDP descriptor of this port";
    KernelTxDropped => "kernel_tx_dropped", "the interface dropped a frame sent on it: its transmit queue or peer's ring was full, or (veth) its peer took no XDP frame redirected into it";
    SpoofedNd => "spoofed_nd", "VM sent a router advertisement or redirect, or an ND message whose target or link-layer address is not its own";
    EthertypeNotAllowed => "ethertype_not_allowed", "VM sent an ethertype other than IPv4, IPv6 and ARP";
    InnerVlanTagged => "inner_vlan_tagged", "decapsulated frame carries an 802.1Q/802.1ad tag (RFC 7348: SHOULD be discarded)";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_name(r.name()), Some(*r));
            assert_eq!(DropReason::ALL[*r as usize], *r);
        }
    }
}
