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
//! Every read is bounds-checked against `data_end`; redirects fall back to `XDP_PASS` where no
//! socket is registered for the queue.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::macros::{classifier, map, xdp};
use aya_ebpf::maps::{Array, PerCpuArray, XskMap};
use aya_ebpf::programs::{TcContext, XdpContext};
use xvs_common::{Counter, MAX_QUEUES, UplinkConf};

#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "UPLINK_CONF")]
static UPLINK_CONF: Array<UplinkConf> = Array::with_max_entries(1, 0);

const ETH_LEN: usize = 14;
const VXLAN_PORT: u16 = 4789;

#[inline(always)]
fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot of this CPU; XDP programs do not preempt each other on a CPU.
        unsafe { *p += 1 };
    }
}

/// A pointer to `LEN` bytes at `off`, if they are inside the frame.
#[inline(always)]
fn bytes<const LEN: usize>(ctx: &XdpContext, off: usize) -> Option<*const [u8; LEN]> {
    let start = ctx.data();
    if start + off + LEN > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const [u8; LEN])
}

#[inline(always)]
fn redirect(ctx: &XdpContext, ok: Counter, missing: Counter, fallback: u32) -> u32 {
    let q = ctx.rx_queue_index();
    if XSKS.get(q).is_none() {
        count(missing);
        return fallback;
    }
    match XSKS.redirect(q, u64::from(fallback)) {
        Ok(a) => {
            count(ok);
            a
        }
        Err(_) => {
            count(missing);
            fallback
        }
    }
}

/// The uplink program.
#[xdp]
pub fn xvs_uplink(ctx: XdpContext) -> u32 {
    match classify_uplink(&ctx) {
        Verdict::Steer => redirect(&ctx, Counter::UplinkRedirected, Counter::UplinkNoSocket, xdp_action::XDP_PASS),
        Verdict::Pass => {
            count(Counter::UplinkPassed);
            xdp_action::XDP_PASS
        }
        Verdict::Malformed => {
            count(Counter::UplinkMalformedVxlan);
            xdp_action::XDP_DROP
        }
    }
}

enum Verdict {
    Steer,
    Pass,
    Malformed,
}

#[inline(always)]
fn classify_uplink(ctx: &XdpContext) -> Verdict {
    let Some(conf) = UPLINK_CONF.get(0) else { return Verdict::Pass };
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
                    if u16::from_be_bytes([udp[2], udp[3]]) != conf.udp_port && conf.udp_port != 0 {
                        return Verdict::Pass;
                    }
                    if conf.udp_port == 0 && u16::from_be_bytes([udp[2], udp[3]]) != VXLAN_PORT {
                        return Verdict::Pass;
                    }
                    let fragment = (ip[6] & 0x3f) != 0 || ip[7] != 0;
                    if fragment || bytes::<8>(ctx, ETH_LEN + ihl + 8).is_none() {
                        return Verdict::Malformed;
                    }
                    Verdict::Steer
                }
                _ => Verdict::Pass,
            }
        }
        _ => Verdict::Pass,
    }
}

/// The VM-port program.
#[xdp]
pub fn xvs_vm(ctx: XdpContext) -> u32 {
    redirect(&ctx, Counter::VmRedirected, Counter::VmNoSocket, xdp_action::XDP_DROP)
}

/// The tap VM-port tc ingress program: xvs has the frame already (its packet socket saw it);
/// the host's stack never gets it.
#[classifier]
pub fn xvs_vm_ingress(_ctx: TcContext) -> i32 {
    count(Counter::VmHostBlocked);
    aya_ebpf::bindings::TC_ACT_SHOT as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
