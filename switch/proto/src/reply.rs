//! Replies: one type per command's result, and the counter records they carry. The daemon's
//! cores count into some of these records directly (`Events`, `HostCounters`, `CoreLoad`,
//! ...): they are plain data with no I/O, so the switch uses them as its own.
//!
//! May depend on: serde.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The result of any command, as xvsd sends it (`untagged`: the JSON is the inner value; a
/// client decodes it by the command it sent, [`crate::Command::reply`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `status`.
    Status(Box<Status>),
    /// `tenant_list`.
    Tenants(Vec<TenantInfo>),
    /// `tenant_show`.
    Tenant(TenantInfo),
    /// `port_list`.
    Ports(Vec<PortInfo>),
    /// `port_show`.
    Port(PortInfo),
    /// `vtep_list`.
    Vteps(Vec<VtepRow>),
    /// `fdb_show`.
    Fdb(Vec<FdbRow>),
    /// `fdb_add`, `fdb_del`.
    FdbApplied(FdbApplied),
    /// `qos_show`.
    Qos(QosShow),
    /// `stats`: none until the cores first reported.
    Stats(Option<Box<Snapshot>>),
    /// `trace`.
    Trace(Trace),
    /// `config_export`.
    Config(ConfigToml),
    /// `capture`, before its pcapng stream.
    Capture(CaptureStarted),
    /// Every change but the static FDB's, and `stats_clear`.
    Done(Done),
}

/// A capture that started: its pcapng stream follows the reply line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStarted {
    /// The port.
    pub port: String,
    /// The tenant filter, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Bytes kept of each frame.
    pub snaplen: u32,
    /// Forwarding cores capturing (each copies what it forwards on the port).
    pub cores: usize,
    /// Bytes per second each core may copy, as bits/s; frames beyond it, or beyond what the
    /// reader keeps up with, are forwarded as always and counted as missed.
    pub copy_limit_bps: u64,
}

/// A change that was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    /// Stored and live on every core.
    Applied,
    /// Counters zeroed.
    Cleared,
}

/// A static FDB change, stored and live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbApplied {
    /// Always true (a failure is an error).
    pub applied: bool,
    /// Microseconds from the request until every core forwarded by it.
    pub live_us: u64,
}

/// Version, uplink, ports and load of a running xvsd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// xvsd version.
    pub version: String,
    /// Protocol version.
    pub protocol: u32,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Uplink interface.
    pub uplink: String,
    /// Our VTEP address.
    pub vtep_ip: String,
    /// Underlay MTU.
    pub underlay_mtu: u16,
    /// Forwarding cores' CPUs.
    pub cores: Vec<usize>,
    /// Config file, if xvsd started from one.
    pub config: Option<PathBuf>,
    /// Where the desired state is kept.
    pub state: String,
    /// Every port.
    pub ports: Vec<PortStatus>,
    /// Number of tenants.
    pub tenants: usize,
    /// Load of the cores together, once they reported.
    pub core: Option<CoreLoad>,
    /// Load of each core, once they reported.
    pub per_core: Option<Vec<CoreLoad>>,
}

/// One tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    /// Name.
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// Most MACs in the FDB.
    pub mac_limit: u32,
    /// Its ports' interfaces.
    pub ports: Vec<String>,
    /// Its remote VTEPs.
    pub vteps: Vec<String>,
    /// Number of static FDB entries.
    pub static_fdb: usize,
    /// Counters, once the cores reported.
    pub counters: Option<Counters>,
}

/// What a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// The underlay port.
    Uplink,
    /// A VM's tap or veth.
    Vm,
}

/// Whether a port forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// Its interface is there and up; frames flow.
    Attached,
    /// Waiting for its interface to appear or come up.
    Waiting,
}

/// How a port's frames are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortIo {
    /// AF_XDP sockets behind an XDP program.
    AfXdp,
    /// A packet socket with virtio-net headers (taps: keeps checksum and TSO metadata).
    AfPacket,
}

/// How an AF_XDP socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XskMode {
    /// The driver DMAs straight into the UMEM.
    ZeroCopy,
    /// The kernel copies frames between its buffers and the UMEM (veth, tap, generic XDP).
    Copy,
}

/// How a port's program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Native (driver) XDP.
    Driver,
    /// Generic (skb) XDP.
    Generic,
    /// No XDP: a tc ingress program (tap ports, read through a packet socket).
    TcIngress,
}

/// One port as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    /// Interface.
    pub name: String,
    /// Uplink or VM port.
    pub kind: PortKind,
    /// Tenant name, for VM ports.
    pub tenant: Option<String>,
    /// MAC.
    pub mac: Option<String>,
    /// IPs (the VTEP's for the uplink).
    pub ips: Vec<String>,
    /// AF_XDP binding of each queue.
    pub afxdp_mode: Vec<XskMode>,
    /// XDP attach mode (`tc_ingress` for taps read through a packet socket).
    pub xdp_mode: Option<AttachMode>,
    /// Attached, or waiting while its interface is missing or down.
    pub state: PortState,
    /// How frames are read and written; none while waiting.
    pub io: Option<PortIo>,
    /// Times the interface went away or down while attached.
    pub lost: u64,
    /// Times the port was attached again by itself after that (or after starting without it).
    pub reattached: u64,
}

/// One port with its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// Status.
    #[serde(flatten)]
    pub status: PortStatus,
    /// Counters, once the cores reported.
    pub counters: Option<Counters>,
}

/// One remote VTEP of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtepRow {
    /// Tenant.
    pub tenant: String,
    /// Its VNI.
    pub vni: u32,
    /// The VTEP's address.
    pub vtep: String,
}

/// One FDB entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdbRow {
    /// Tenant.
    pub tenant: String,
    /// MAC.
    pub mac: String,
    /// `port NAME` or `vtep IP`.
    pub dest: String,
    /// `static`, `learned local` or `learned remote`.
    pub origin: String,
    /// Seconds since last seen (learned entries).
    pub age_secs: Option<f64>,
}

/// The uplink scheduler's configuration and view of each tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosShow {
    /// Uplink rate in bits/s (none: no scheduling).
    pub link_bps: Option<u64>,
    /// Every tenant.
    pub tenants: Vec<QosTenant>,
    /// With several cores on the uplink: each core's CPU and part of the link, bits/s.
    #[serde(default)]
    pub per_core: Vec<(usize, u64)>,
}

/// One tenant in `qos show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosTenant {
    /// Name.
    pub tenant: String,
    /// VNI.
    pub vni: u32,
    /// Guaranteed rate, bits/s.
    pub guarantee_bps: u64,
    /// Maximum rate, bits/s.
    pub limit_bps: Option<u64>,
    /// Share of the excess.
    pub weight: u32,
    /// Measured rate over the last 100 ms, once the cores reported.
    pub rate_bps: Option<u64>,
    /// Wire bytes sent.
    pub sent_bytes: Option<u64>,
    /// Frames waiting.
    pub backlog: Option<u32>,
    /// Frames refused for a full queue.
    pub drops: Option<u64>,
    /// With several cores on the uplink: each core's part (CPU, guarantee and limit it runs
    /// the tenant with, measured rate, backlog).
    #[serde(default)]
    pub per_core: Vec<QosTenantCore>,
}

/// One tenant on one forwarding core in `qos show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosTenantCore {
    /// CPU.
    pub cpu: usize,
    /// This core's part of the guarantee, bits/s.
    pub guarantee_bps: u64,
    /// This core's part of the limit, bits/s.
    pub limit_bps: Option<u64>,
    /// Measured rate on this core over the last 100 ms, bits/s.
    pub rate_bps: u64,
    /// Frames waiting on this core.
    pub backlog: u32,
}

/// A traced frame's decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Every step, in order.
    pub steps: Vec<String>,
    /// What happens to the frame.
    pub action: String,
    /// The drop reason, when dropped.
    pub reason: Option<String>,
}

/// The configuration as TOML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigToml {
    /// The TOML text (the format xvsd starts from).
    pub toml: String,
}

/// Packet, byte and drop counters of one port or one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Of the frames received, those the XDP fast path forwarded (the rest went through a
    /// forwarding core).
    #[serde(default)]
    pub fast_rx_packets: u64,
    /// Of the frames sent, those the XDP fast path forwarded.
    #[serde(default)]
    pub fast_tx_packets: u64,
    /// Drops by reason name (reasons with none left out).
    pub drops: BTreeMap<String, u64>,
}

impl Counters {
    /// Total drops.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }

    /// Drops of the reason named `r`.
    pub fn drop_count(&self, r: &str) -> u64 {
        self.drops.get(r).copied().unwrap_or(0)
    }
}

/// Other things worth counting that are not drops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    /// Frames flooded (broadcast, multicast, unknown unicast).
    pub flooded: u64,
    /// ARP requests answered locally (suppressed).
    pub arp_suppressed: u64,
    /// New FDB entries learned.
    pub fdb_learned: u64,
    /// FDB entries that moved.
    pub fdb_moved: u64,
    /// Learning refused because of a MAC limit or full table.
    pub fdb_full: u64,
    /// Frames handed to the VTEP host stack.
    pub to_host: u64,
    /// Partial checksums of VM frames completed (checksum offload).
    pub csum_completed: u64,
    /// TCP super-frames from VMs segmented (TSO/GSO).
    pub tso_frames: u64,
    /// Segments made of them.
    pub tso_segments: u64,
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" sent back to VMs.
    pub icmp_too_big: u64,
    /// TCP segments sent to VMs coalesced into super-frames (receive offload for the guest).
    pub coalesced_segments: u64,
    /// Super-frames they made.
    pub coalesced_frames: u64,
}

impl Events {
    /// Adds another core's events.
    pub fn add(&mut self, f: &Events) {
        self.flooded += f.flooded;
        self.arp_suppressed += f.arp_suppressed;
        self.fdb_learned += f.fdb_learned;
        self.fdb_moved += f.fdb_moved;
        self.fdb_full += f.fdb_full;
        self.to_host += f.to_host;
        self.csum_completed += f.csum_completed;
        self.tso_frames += f.tso_frames;
        self.tso_segments += f.tso_segments;
        self.icmp_too_big += f.icmp_too_big;
        self.coalesced_segments += f.coalesced_segments;
        self.coalesced_frames += f.coalesced_frames;
    }
}

/// All pipeline counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Per port, by port id.
    pub ports: Vec<Counters>,
    /// Per tenant, by tenant id.
    pub tenants: Vec<Counters>,
    /// Non-drop events.
    pub events: Events,
    /// Batches processed.
    pub batches: u64,
}

/// ARP and ICMP counters of the host stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCounters {
    /// ARP requests for our VTEP IP answered.
    pub arp_replies_sent: u64,
    /// ARP requests we sent to resolve next hops.
    pub arp_requests_sent: u64,
    /// ARP answers that resolved or refreshed a neighbour.
    pub arp_resolved: u64,
    /// Neighbours given up on or expired.
    pub neighbors_expired: u64,
    /// ICMP echo requests answered.
    pub icmp_echo_replies: u64,
    /// Frames for the host that it does not handle.
    pub ignored: u64,
}

impl HostCounters {
    /// Adds another core's counters.
    pub fn add(&mut self, o: &HostCounters) {
        self.arp_replies_sent += o.arp_replies_sent;
        self.arp_requests_sent += o.arp_requests_sent;
        self.arp_resolved += o.arp_resolved;
        self.neighbors_expired += o.neighbors_expired;
        self.icmp_echo_replies += o.icmp_echo_replies;
        self.ignored += o.ignored;
    }
}

/// Cycles a core spent per stage of its poll loop, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCycles {
    /// Taking frames from the receive rings.
    pub rx: u64,
    /// The pipeline: parse, isolate, look up, rewrite, stage.
    pub process: u64,
    /// The uplink scheduler, transmit rings and kicks.
    pub tx: u64,
    /// Completion rings back to the free list, free frames to the fill rings.
    pub recycle: u64,
}

impl StageCycles {
    /// All stages together.
    pub fn total(&self) -> u64 {
        self.rx + self.process + self.tx + self.recycle
    }
}

/// Load of a forwarding core.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoreLoad {
    /// CPU the core runs on.
    pub cpu: usize,
    /// When these counters were taken: nanoseconds on the core's clock (from its start). The
    /// difference of two readings is the exact interval between them, whatever the delay of
    /// the stats file or the control socket.
    pub at_ns: u64,
    /// Nanoseconds spent in polls that received frames.
    pub busy_ns: u64,
    /// Nanoseconds spent in polls that found nothing (spinning before sleeping).
    pub spin_ns: u64,
    /// Nanoseconds spent asleep in poll(2).
    pub idle_ns: u64,
    /// Frames received.
    pub packets: u64,
    /// Busy nanoseconds per frame received (receive, forward, transmit, recycle).
    pub ns_per_packet: f64,
    /// Share of time busy (busy / (busy + spin + idle)).
    pub busy_share: f64,
    /// CPU cycles per stage of the poll loop (time-stamp counter), cumulative.
    pub stage_cycles: StageCycles,
    /// Cycles of all stages per frame received (includes idle polls' ring checks).
    pub cycles_per_packet: f64,
    /// Underlay neighbours (VTEP next hops) this core uses but has no MAC for: its frames
    /// to them are dropped as `vtep_unresolved` until ARP (on any core) answers.
    pub neighbors_unresolved: u32,
    /// The uplink rate this core's scheduler runs at, bits/s (0: no scheduling). With
    /// several cores on a shaped uplink, its part of the link, which follows its demand.
    #[serde(default)]
    pub qos_link_bps: u64,
    /// With several cores on a shaped uplink: the tenant rows of its part it has applied so
    /// far (each a tenant's guarantee or limit here moving with demand).
    #[serde(default)]
    pub qos_share_changes: u64,
}

impl CoreLoad {
    /// The load as published at `now`: the raw times and counts with the figures derived
    /// from them (per frame, busy share) and the core's stage profile.
    pub fn taken(&self, profile: &StageCycles, now: u64) -> CoreLoad {
        let per_frame = |x: f64| if self.packets > 0 { x / self.packets as f64 } else { 0.0 };
        let all = (self.busy_ns + self.spin_ns + self.idle_ns).max(1);
        CoreLoad {
            at_ns: now,
            ns_per_packet: per_frame(self.busy_ns as f64),
            busy_share: self.busy_ns as f64 / all as f64,
            stage_cycles: *profile,
            cycles_per_packet: per_frame(profile.total() as f64),
            ..self.clone()
        }
    }
}

/// Counters of one tenant in the uplink scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantQosStats {
    /// Frames sent.
    pub packets: u64,
    /// Wire bytes sent.
    pub bytes: u64,
    /// Wire bytes sent in the guaranteed tier.
    pub guaranteed_bytes: u64,
    /// Frames refused because the tenant's queue was full.
    pub drops: u64,
    /// Frames waiting now.
    pub backlog: u32,
}

/// One tenant in the uplink scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosRow {
    /// Tenant id.
    pub tenant: u16,
    /// Counters.
    pub stats: TenantQosStats,
    /// Measured wire rate over the last publishing interval (100 ms), bits/s.
    pub rate_bps: u64,
    /// The guarantee the scheduler runs the tenant with, bits/s: the configured one with
    /// one core, this core's part of it with several (summed in the totals).
    #[serde(default)]
    pub guarantee_bps: u64,
    /// The limit the scheduler runs the tenant with, bits/s (as `guarantee_bps`).
    #[serde(default)]
    pub limit_bps: Option<u64>,
}

/// Status and counters, as the stats file, `xvsctl stats --json` and the metrics show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// xvsd version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Config file.
    pub config: Option<PathBuf>,
    /// Where the desired state is kept.
    pub state: String,
    /// Uplink interface.
    pub uplink: String,
    /// Forwarding cores' CPUs.
    pub cores: Vec<usize>,
    /// Ports by port id (`null` where removed).
    pub ports: Vec<Option<PortStatus>>,
    /// Tenant (name, VNI) by tenant id (`null` where removed).
    pub tenants: Vec<Option<(String, u32)>>,
    /// Pipeline counters.
    pub stats: Stats,
    /// Host stack counters.
    pub host: HostCounters,
    /// XDP program counters per interface: (interface, [(counter, value)]).
    pub xdp: Vec<(String, Vec<(String, u64)>)>,
    /// Underlay neighbours: (IP, MAC or `incomplete`).
    pub neighbors: Vec<(String, String)>,
    /// Core load.
    pub core: CoreLoad,
    /// Uplink rate (bits/s) when QoS is on, and each tenant in the scheduler (over all
    /// cores).
    pub qos: Option<(u64, Vec<QosRow>)>,
    /// With several cores: each core's CPU, its part of the link (bits/s) and each tenant
    /// in its scheduler.
    #[serde(default)]
    pub qos_per_core: Vec<(usize, u64, Vec<QosRow>)>,
    /// Load of each forwarding core.
    pub per_core: Vec<CoreLoad>,
}
