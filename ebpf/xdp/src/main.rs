//! XDP programs of xvs.
//!
//! * `xvs_uplink`, on the underlay NIC: VXLAN (UDP 4789) to our VTEP IP, ICMP to it and ARP
//!   for it go to the AF_XDP socket of the receiving queue; everything else is `XDP_PASS`, so
//!   the host keeps its own networking on the same NIC. Frames that claim to be VXLAN to us but
//!   cannot hold a VXLAN header, or are IP fragments, are dropped here and counted.
//! * `xvs_vm`, on veth VM ports: every frame to the port's socket.
//! * `xvs_vm_ingress`, tc ingress on tap VM ports: xvs reads a tap through a packet socket
//!   (which keeps the virtio-net offload header XDP would lose); packet sockets see a frame
//!   before tc ingress, so dropping it here keeps every VM frame out of the host's own stack.
//!
//! The fast path (docs/architecture.md, "The XDP fast path"): a frame whose fate is a pure
//! lookup in the tables the forwarding core wrote into the maps, and that needs no queue, is
//! forwarded here instead of going through the core: VXLAN from a listed VTEP of the tenant,
//! from a static remote MAC at that VTEP, for a MAC on a local VM port, is decapsulated and
//! redirected to that port; an IPv4 unicast frame from a VM to a static remote MAC whose next
//! hop is resolved is encapsulated and redirected to the uplink. Every check the core makes on
//! such a frame is made here first; a frame that fails any of them, or is anything else, goes
//! to the core, which decides (and drops with a reason) as before. The fast path never drops.
//!
//! Every read is bounds-checked against `data_end`; redirects fall back to `XDP_PASS` where no
//! socket is registered for the queue.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::bpf_xdp_adjust_head;
use aya_ebpf::macros::{classifier, map, xdp};
use aya_ebpf::maps::{Array, DevMapHash, HashMap, PerCpuArray, XskMap};
use aya_ebpf::programs::{TcContext, XdpContext};
use xvs_common::{
    Counter, FAST_DECAP, FAST_ENCAP, MAX_MACS, MAX_NEIGH, MAX_QUEUES, MAX_SLOTS, MAX_TENANT_KEYS, MacKey, NeighMac,
    Remote, UplinkConf, VM_FAST_FROM, VM_FAST_TO, VM_MAX_IPV4, VmConf, VtepKey,
};

/// Hash maps that grow as entries are written (no preallocation of a million entries).
const NO_PREALLOC: u32 = 1;

#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_SLOTS * MAX_QUEUES, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_SLOTS * Counter::COUNT, 0);

#[map(name = "UPLINK_CONF")]
static UPLINK_CONF: Array<UplinkConf> = Array::with_max_entries(1, 0);

#[map(name = "SLOTS")]
static SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_SLOTS, 0);

#[map(name = "VM_CONF")]
static VM_CONF: Array<VmConf> = Array::with_max_entries(MAX_SLOTS, 0);

#[map(name = "TX_PORTS")]
static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_SLOTS, 0);

#[map(name = "VNI_TENANT")]
static VNI_TENANT: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TENANT_KEYS, NO_PREALLOC);

#[map(name = "VTEP_ALLOW")]
static VTEP_ALLOW: HashMap<VtepKey, u8> = HashMap::with_max_entries(MAX_TENANT_KEYS, NO_PREALLOC);

#[map(name = "LOCAL_MACS")]
static LOCAL_MACS: HashMap<MacKey, u32> = HashMap::with_max_entries(MAX_MACS, NO_PREALLOC);

#[map(name = "REMOTE_MACS")]
static REMOTE_MACS: HashMap<MacKey, Remote> = HashMap::with_max_entries(MAX_MACS, NO_PREALLOC);

#[map(name = "NEIGH")]
static NEIGH: HashMap<[u8; 4], NeighMac> = HashMap::with_max_entries(MAX_NEIGH, NO_PREALLOC);

const ETH_LEN: usize = 14;
const VXLAN_PORT: u16 = 4789;
/// Outer Ethernet + IPv4 (no options) + UDP + VXLAN.
const OVERHEAD: usize = 50;

#[inline(always)]
fn add(slot: u32, c: Counter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot * Counter::COUNT + c as u32) {
        // SAFETY: per-CPU slot of this CPU; XDP programs do not preempt each other on a CPU.
        unsafe { *p += n };
    }
}

#[inline(always)]
fn count(slot: u32, c: Counter) {
    add(slot, c, 1);
}

/// A pointer to `LEN` bytes at `off`, if they are inside the frame.
#[inline(always)]
fn bytes<const LEN: usize>(ctx: &XdpContext, off: usize) -> Option<*mut [u8; LEN]> {
    let start = ctx.data();
    if start + off + LEN > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut [u8; LEN])
}

/// The interface slot of the receiving interface.
#[inline(always)]
fn slot_of(ctx: &XdpContext) -> Option<u32> {
    // SAFETY: a plain read of a map value the daemon writes whole.
    unsafe { SLOTS.get(&(ctx.ingress_ifindex() as u32)).copied() }
}

#[inline(always)]
fn redirect(ctx: &XdpContext, slot: u32, ok: Counter, missing: Counter, fallback: u32) -> u32 {
    let q = slot * MAX_QUEUES + ctx.rx_queue_index();
    if ctx.rx_queue_index() >= MAX_QUEUES || XSKS.get(q).is_none() {
        count(slot, missing);
        return fallback;
    }
    match XSKS.redirect(q, u64::from(fallback)) {
        Ok(a) => {
            count(slot, ok);
            a
        }
        Err(_) => {
            count(slot, missing);
            fallback
        }
    }
}

/// Sends the (already rewritten) frame out of `slot`'s interface.
#[inline(always)]
fn transmit(slot: u32, counted: u32) -> u32 {
    match TX_PORTS.redirect(slot, 0) {
        Ok(a) => a,
        Err(_) => {
            count(counted, Counter::FastRedirectFailed);
            xdp_action::XDP_DROP
        }
    }
}

/// The uplink program.
#[xdp]
pub fn xvs_uplink(ctx: XdpContext) -> u32 {
    let Some(slot) = slot_of(&ctx) else { return xdp_action::XDP_PASS };
    let Some(conf) = UPLINK_CONF.get(0) else { return xdp_action::XDP_PASS };
    match classify_uplink(&ctx, conf) {
        Verdict::Vxlan => {
            if conf.flags & FAST_DECAP != 0
                && let Some(a) = fast_decap(&ctx)
            {
                return a;
            }
            redirect(&ctx, slot, Counter::UplinkRedirected, Counter::UplinkNoSocket, xdp_action::XDP_PASS)
        }
        Verdict::Steer => {
            redirect(&ctx, slot, Counter::UplinkRedirected, Counter::UplinkNoSocket, xdp_action::XDP_PASS)
        }
        Verdict::Pass => {
            count(slot, Counter::UplinkPassed);
            xdp_action::XDP_PASS
        }
        Verdict::Malformed => {
            count(slot, Counter::UplinkMalformedVxlan);
            xdp_action::XDP_DROP
        }
        Verdict::Fragment => {
            count(slot, Counter::UplinkOuterFragment);
            xdp_action::XDP_DROP
        }
    }
}

enum Verdict {
    /// VXLAN to us: the fast path may take it, else the core.
    Vxlan,
    /// For the core (ARP, ICMP to our VTEP).
    Steer,
    Pass,
    /// Too short for VXLAN (the core's `MalformedVxlan`).
    Malformed,
    /// An IP fragment (the core's `OuterFragment`).
    Fragment,
}

#[inline(always)]
fn classify_uplink(ctx: &XdpContext, conf: &UplinkConf) -> Verdict {
    let Some(eth) = bytes::<ETH_LEN>(ctx, 0) else { return Verdict::Pass };
    // SAFETY: bounds-checked above.
    let eth = unsafe { &*eth };
    match [eth[12], eth[13]] {
        [0x08, 0x06] => {
            // ARP: the target protocol address sits at 24..28 of the ARP header.
            let Some(tpa) = bytes::<4>(ctx, ETH_LEN + 24) else { return Verdict::Pass };
            // SAFETY: bounds-checked above.
            if unsafe { *tpa } == conf.vtep_ip { Verdict::Steer } else { Verdict::Pass }
        }
        [0x08, 0x00] => {
            let Some(ip) = bytes::<20>(ctx, ETH_LEN) else { return Verdict::Pass };
            // SAFETY: bounds-checked above.
            let ip = unsafe { &*ip };
            if [ip[16], ip[17], ip[18], ip[19]] != conf.vtep_ip {
                return Verdict::Pass;
            }
            match ip[9] {
                1 => Verdict::Steer, // ICMP to our VTEP: the host stack answers echo
                17 => {
                    let ihl = usize::from(ip[0] & 0x0f) * 4;
                    if !(20..=60).contains(&ihl) {
                        return Verdict::Pass;
                    }
                    let Some(udp) = bytes::<8>(ctx, ETH_LEN + ihl) else { return Verdict::Pass };
                    // SAFETY: bounds-checked above.
                    let udp = unsafe { &*udp };
                    let port = if conf.udp_port == 0 { VXLAN_PORT } else { conf.udp_port };
                    if u16::from_be_bytes([udp[2], udp[3]]) != port {
                        return Verdict::Pass;
                    }
                    // Dropped here only when the core would drop it for the same reason: with
                    // a valid header checksum (else the core counts the bad checksum) and, for
                    // the length, a header the core reads the same way (no options, the whole
                    // datagram in the frame).
                    let valid = ihl == 20 && ip_sum(ip) == 0xffff;
                    let len = ctx.data_end() - ctx.data();
                    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
                    if (ip[6] & 0x3f) != 0 || ip[7] != 0 {
                        return if valid && total >= 28 && ETH_LEN + total <= len {
                            Verdict::Fragment
                        } else {
                            Verdict::Steer
                        };
                    }
                    if bytes::<8>(ctx, ETH_LEN + ihl + 8).is_none() {
                        let core_reads_same = valid && ETH_LEN + total <= len && udp_len >= 8 && udp_len <= total - 20;
                        return if core_reads_same { Verdict::Malformed } else { Verdict::Steer };
                    }
                    Verdict::Vxlan
                }
                _ => Verdict::Pass,
            }
        }
        _ => Verdict::Pass,
    }
}

/// One's-complement sum of the 10 words of an IPv4 header without options.
#[inline(always)]
fn ip_sum(ip: &[u8; 20]) -> u16 {
    let mut s: u32 = 0;
    let mut i = 0;
    while i < 20 {
        s += u32::from(u16::from_be_bytes([ip[i], ip[i + 1]]));
        i += 2;
    }
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The decapsulation fast path: `Some(action)` when it took the frame, `None` for the core.
/// Mirrors the core's checks (`parse_outer`, then `classify_uplink`) for the frames it takes:
/// IPv4 without options and with a valid checksum, exactly one UDP datagram in the frame,
/// the VXLAN I flag, a VNI of a tenant, a listed VTEP of that tenant, an untagged inner frame
/// from a static remote MAC at that very VTEP (so learning has nothing to do) to a local VM
/// port that takes XDP frames.
#[inline(always)]
fn fast_decap(ctx: &XdpContext) -> Option<u32> {
    let hdr = bytes::<{ OVERHEAD + ETH_LEN }>(ctx, 0)?;
    // SAFETY: bounds-checked above; the frame is not written before the last read of `h`.
    let h = unsafe { &*hdr };
    let ip: &[u8; 20] = h[ETH_LEN..ETH_LEN + 20].try_into().ok()?;
    if ip[0] != 0x45 || ip_sum(ip) != 0xffff {
        return None;
    }
    let len = ctx.data_end() - ctx.data();
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let udp_len = usize::from(u16::from_be_bytes([h[38], h[39]]));
    if ETH_LEN + total != len || total != 20 + udp_len {
        return None;
    }
    if h[42] & 0x08 == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, h[46], h[47], h[48]]);
    // SAFETY: plain reads of map values the daemon writes whole.
    let tenant = unsafe { *VNI_TENANT.get(&vni)? };
    let src_vtep = [ip[12], ip[13], ip[14], ip[15]];
    VTEP_ALLOW.get_ptr(VtepKey { tenant, ip: src_vtep })?;
    let inner = &h[OVERHEAD..];
    if matches!([inner[12], inner[13]], [0x81, 0x00] | [0x88, 0xa8]) || inner[0] & 1 != 0 {
        return None;
    }
    let dst = MacKey { tenant, mac: [inner[0], inner[1], inner[2], inner[3], inner[4], inner[5]], pad: [0; 2] };
    let src = MacKey { tenant, mac: [inner[6], inner[7], inner[8], inner[9], inner[10], inner[11]], pad: [0; 2] };
    // SAFETY: plain reads of map values the daemon writes whole.
    let remote = unsafe { *REMOTE_MACS.get(&src)? };
    if remote.vtep != src_vtep {
        return None;
    }
    // SAFETY: as above.
    let port = unsafe { *LOCAL_MACS.get(&dst)? };
    let vm = VM_CONF.get(port)?;
    if vm.flags & VM_FAST_TO == 0 || vm.tenant != tenant || TX_PORTS.get(port).is_none() {
        return None;
    }
    // SAFETY: strips the 50 outer bytes checked above; the helper keeps the frame valid.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, OVERHEAD as i32) } != 0 {
        return None;
    }
    count(port, Counter::FastDecapPackets);
    add(port, Counter::FastDecapBytesIn, len as u64);
    add(port, Counter::FastDecapBytesOut, (len - OVERHEAD) as u64);
    Some(transmit(port, port))
}

/// The VM-port program.
#[xdp]
pub fn xvs_vm(ctx: XdpContext) -> u32 {
    let Some(slot) = slot_of(&ctx) else { return xdp_action::XDP_DROP };
    if let Some(conf) = UPLINK_CONF.get(0)
        && conf.flags & FAST_ENCAP != 0
        && let Some(a) = fast_encap(&ctx, slot, conf)
    {
        return a;
    }
    redirect(&ctx, slot, Counter::VmRedirected, Counter::VmNoSocket, xdp_action::XDP_DROP)
}

/// The core's UDP source port for an inner IPv4 frame without options
/// (`pipeline::encap::flow_src_port`, same arithmetic).
#[inline(always)]
fn flow_src_port(f: &[u8; ETH_LEN + 24]) -> u16 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mix = |v: u64| {
        h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    };
    mix(u64::from_be_bytes([f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]]));
    mix(u64::from(u32::from_be_bytes([f[8], f[9], f[10], f[11]])));
    let ip = &f[ETH_LEN..];
    mix(u64::from_be_bytes([ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19]]) ^ u64::from(ip[9]));
    let unfragmented = ip[6] & 0x3f == 0 && ip[7] == 0;
    if unfragmented && (ip[9] == 6 || ip[9] == 17) {
        mix(u64::from(u32::from_be_bytes([ip[20], ip[21], ip[22], ip[23]])));
    }
    0xc000 | (((h >> 32) as u16) & 0x3fff)
}

/// The encapsulation fast path: `Some(action)` when it took the frame, `None` for the core.
/// Mirrors the core's `classify_vm` for the frames it takes: the port's MAC as source, IPv4
/// without options from one of the port's addresses, unicast to a static remote MAC of the
/// tenant, small enough for the underlay, next hop resolved.
#[inline(always)]
fn fast_encap(ctx: &XdpContext, slot: u32, conf: &UplinkConf) -> Option<u32> {
    let vm = VM_CONF.get(slot)?;
    if vm.flags & VM_FAST_FROM == 0 {
        return None;
    }
    let f = bytes::<{ ETH_LEN + 24 }>(ctx, 0)?;
    // SAFETY: bounds-checked above; read before the frame is moved.
    let f = unsafe { &*f };
    if f[6..12] != vm.mac || [f[12], f[13]] != [0x08, 0x00] || f[0] & 1 != 0 {
        return None;
    }
    let ip = &f[ETH_LEN..];
    let len = ctx.data_end() - ctx.data();
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] != 0x45 || total < 20 || ETH_LEN + total > len || len > usize::from(conf.max_inner) {
        return None;
    }
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let mut own = false;
    let mut i = 0;
    while i < VM_MAX_IPV4 {
        if i < usize::from(vm.n_ipv4) && vm.ipv4[i] == src {
            own = true;
        }
        i += 1;
    }
    if !own {
        return None;
    }
    let dst = MacKey { tenant: vm.tenant, mac: [f[0], f[1], f[2], f[3], f[4], f[5]], pad: [0; 2] };
    // SAFETY: plain reads of map values the daemon writes whole.
    let remote = unsafe { *REMOTE_MACS.get(&dst)? };
    // SAFETY: as above.
    let nh = unsafe { *NEIGH.get(&remote.next_hop)? };
    TX_PORTS.get(0)?;
    let sport = flow_src_port(f);
    // SAFETY: makes room for the outer headers in the headroom; the helper keeps the frame
    // valid and every pointer into it is taken again below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(OVERHEAD as i32)) } != 0 {
        return None;
    }
    let out = bytes::<OVERHEAD>(ctx, 0)?;
    // SAFETY: bounds-checked above; nothing else refers to the frame now.
    let o = unsafe { &mut *out };
    o[0..6].copy_from_slice(&nh.mac);
    o[6..12].copy_from_slice(&conf.mac);
    o[12] = 0x08;
    o[13] = 0x00;
    let ip_len = (20 + 8 + 8 + len) as u16;
    let udp_len = (8 + 8 + len) as u16;
    let v = vm.vni.to_be_bytes();
    let lb = ip_len.to_be_bytes();
    let ipb: [u8; 20] = [
        0x45,
        0,
        lb[0],
        lb[1],
        0,
        0,
        0x40,
        0,
        conf.ttl,
        17,
        0,
        0,
        conf.vtep_ip[0],
        conf.vtep_ip[1],
        conf.vtep_ip[2],
        conf.vtep_ip[3],
        remote.vtep[0],
        remote.vtep[1],
        remote.vtep[2],
        remote.vtep[3],
    ];
    let sum = !ip_sum(&ipb);
    o[14..34].copy_from_slice(&ipb);
    o[24..26].copy_from_slice(&sum.to_be_bytes());
    o[34..36].copy_from_slice(&sport.to_be_bytes());
    o[36..38].copy_from_slice(&VXLAN_PORT.to_be_bytes());
    o[38..40].copy_from_slice(&udp_len.to_be_bytes());
    o[40] = 0;
    o[41] = 0;
    o[42..50].copy_from_slice(&[0x08, 0, 0, 0, v[1], v[2], v[3], 0]);
    count(slot, Counter::FastEncapPackets);
    add(slot, Counter::FastEncapBytesIn, len as u64);
    add(slot, Counter::FastEncapBytesOut, (len + OVERHEAD) as u64);
    Some(transmit(0, slot))
}

/// Passes every frame: for the far end of a veth that should take frames redirected in XDP
/// (a veth peer runs NAPI only with an XDP program), as the benchmarks' and tests' VMs use.
#[xdp]
pub fn xvs_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[map(name = "FWD")]
static FWD: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// A plain in-kernel forwarder for the benchmarks' comparison (no switching, no
/// encapsulation): every frame out of the interface `FWD` names for the receiving one.
#[xdp]
pub fn xvs_fwd(ctx: XdpContext) -> u32 {
    FWD.redirect(ctx.ingress_ifindex() as u32, u64::from(xdp_action::XDP_PASS)).unwrap_or(xdp_action::XDP_PASS)
}

/// The tap VM-port tc ingress program: xvs has the frame already (its packet socket saw it);
/// the host's stack never gets it.
#[classifier]
pub fn xvs_vm_ingress(ctx: TcContext) -> i32 {
    // SAFETY: reads the ingress ifindex from the skb context the kernel passes.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a plain read of a map value the daemon writes whole.
    if let Some(slot) = unsafe { SLOTS.get(&ifindex) } {
        count(*slot, Counter::VmHostBlocked);
    }
    aya_ebpf::bindings::TC_ACT_SHOT as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
