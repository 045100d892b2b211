//! A packet generator for the overlay benchmarks: one UDP flow of fixed-size frames sent with
//! AF_PACKET + sendmmsg (batches of 64, qdisc bypassed), at a fixed rate or flat out. This is
//! the method the peer measurements in shared/PEERS.md used, so the numbers compare.
//!
//! usage: xvs-pktgen IFACE SRC_MAC DST_MAC SRC_IP DST_IP RATE_PPS(0 = flat out) SECS [SIZE]
#![expect(unsafe_code, reason = "raw AF_PACKET socket and sendmmsg")]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use xvs_switch::frames;
use xvs_switch::types::parse_mac;

const BATCH: usize = 64;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 8 {
        eprintln!("usage: xvs-pktgen IFACE SRC_MAC DST_MAC SRC_IP DST_IP RATE_PPS SECS [SIZE]");
        std::process::exit(2);
    }
    let (ifname, smac, dmac) = (&a[1], parse_mac(&a[2]).expect("SRC_MAC"), parse_mac(&a[3]).expect("DST_MAC"));
    let (sip, dip): (Ipv4Addr, Ipv4Addr) = (a[4].parse().expect("SRC_IP"), a[5].parse().expect("DST_IP"));
    let rate: u64 = a[6].parse().expect("RATE_PPS");
    let secs: f64 = a[7].parse().expect("SECS");
    let size: usize = a.get(8).map_or(60, |s| s.parse().expect("SIZE")).max(60);
    let frame = frames::udp4(smac, dmac, sip, dip, 9000, 9001, &vec![0u8; size - 42]);

    // SAFETY: plain socket(2) call; the fd is checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(fd >= 0, "socket(AF_PACKET): {}", std::io::Error::last_os_error());
    let cname = std::ffi::CString::new(ifname.as_str()).unwrap();
    // SAFETY: cname is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert!(ifindex != 0, "no interface {ifname}");
    let one: libc::c_int = 1;
    // SAFETY: valid option buffer of the stated size.
    unsafe {
        libc::setsockopt(fd, libc::SOL_PACKET, 20 /* PACKET_QDISC_BYPASS */, (&raw const one).cast(), 4);
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dmac.0);
    let mut iov: Vec<libc::iovec> =
        (0..BATCH).map(|_| libc::iovec { iov_base: frame.as_ptr() as *mut _, iov_len: frame.len() }).collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|i| {
            // SAFETY: mmsghdr is plain data; zeroed is valid before we fill it.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (&raw mut sll).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            m.msg_hdr.msg_iov = &raw mut iov[i];
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut sent: u64 = 0;
    while Instant::now() < end {
        if rate > 0 {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                std::hint::spin_loop();
                continue;
            }
        }
        // SAFETY: msgs points at BATCH valid headers whose buffers outlive the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!("{{\"sent\": {sent}, \"secs\": {el:.3}, \"pps\": {:.0}}}", sent as f64 / el);
}
