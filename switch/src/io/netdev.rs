//! Facts about network interfaces from sysfs and getifaddrs: existence, MAC, MTU, addresses,
//! queue count.

use crate::wire::MacAddr;
use std::net::{IpAddr, Ipv4Addr};

fn sys(ifname: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/{file}")).ok().map(|s| s.trim().to_string())
}

/// What an interface dropped on transmit since a port opened on it: its `tx_dropped` counter.
/// That covers frames whose transmit queue or peer ring was full; on a veth also the frames
/// redirected into it in XDP that its peer could not take (the kernel's `xdp_xmit_errors`, and
/// whole batches while the peer is down). It is the interface's counter, so one port per
/// interface reads it (the first core's), and on a shared uplink it also counts what the host
/// stack sent there.
#[derive(Debug)]
pub struct TxDrops {
    ifname: String,
    base: u64,
}

impl TxDrops {
    /// Starts counting from the interface's counter now.
    pub fn new(ifname: &str) -> TxDrops {
        TxDrops { ifname: ifname.to_string(), base: tx_dropped(ifname) }
    }

    /// Drops since [`TxDrops::new`] (a file read: call it per publishing interval, not per poll).
    pub fn since_open(&self) -> u64 {
        tx_dropped(&self.ifname).saturating_sub(self.base)
    }
}

fn tx_dropped(ifname: &str) -> u64 {
    sys(ifname, "statistics/tx_dropped").and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Whether the interface exists.
pub fn exists(ifname: &str) -> bool {
    !ifname.contains('/') && std::path::Path::new(&format!("/sys/class/net/{ifname}")).exists()
}

/// The interface's MAC.
pub fn mac(ifname: &str) -> Option<MacAddr> {
    crate::types::parse_mac(&sys(ifname, "address")?).ok()
}

/// The interface's MTU.
pub fn mtu(ifname: &str) -> Option<u16> {
    sys(ifname, "mtu")?.parse().ok()
}

/// Number of receive queues (AF_XDP binds one socket per queue).
pub fn rx_queues(ifname: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count() as u32)
        .unwrap_or(1)
        .max(1)
}

/// IPv4 addresses configured on the interface.
pub fn ipv4_addrs(ifname: &str) -> Vec<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter(|a| a.interface_name == ifname)
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|v| v.ip())))
        .collect()
}

/// Whether `ip` is configured on `ifname`.
pub fn has_addr(ifname: &str, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => ipv4_addrs(ifname).contains(&v4),
        IpAddr::V6(_) => false,
    }
}

/// The interface's index, if it exists.
pub fn ifindex(ifname: &str) -> Option<u32> {
    if ifname.contains('/') {
        return None;
    }
    nix::net::if_::if_nametoindex(ifname).ok().filter(|i| *i != 0)
}

/// Whether the interface is a tap (or tun) device.
pub fn is_tap(ifname: &str) -> bool {
    sys(ifname, "tun_flags").is_some()
}

/// Whether the interface is administratively up.
pub fn is_up(ifname: &str) -> bool {
    sys(ifname, "flags")
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .is_some_and(|f| f & 1 != 0)
}

/// Sets the interface administratively up.
#[allow(unsafe_code)]
pub fn set_up(ifname: &str) -> std::io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain socket(2) for the ioctl; the result is checked and closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: an all-zero ifreq is valid; the name fits (checked above) with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags member of a valid ifreq.
    let rc = unsafe {
        let mut rc = libc::ioctl(s, libc::SIOCGIFFLAGS, &raw mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(s, libc::SIOCSIFFLAGS, &raw mut req);
        }
        rc
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: `s` is our descriptor, closed once.
    unsafe { libc::close(s) };
    if rc != 0 { Err(err) } else { Ok(()) }
}

/// Whether TCP segmentation offload is on for the interface (for a tap: the guest takes TCP
/// super-frames). Asks the kernel with `ETHTOOL_GTSO`.
#[allow(unsafe_code)]
pub fn tso_on(ifname: &str) -> bool {
    const ETHTOOL_GTSO: u32 = 0x1e;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    if ifname.len() >= libc::IFNAMSIZ {
        return false;
    }
    let mut v = EthtoolValue { cmd: ETHTOOL_GTSO, data: 0 };
    // SAFETY: plain socket(2) for the ioctl; the result is checked and closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return false;
    }
    // SAFETY: an all-zero ifreq is valid; the name fits (checked above) with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = b as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut v).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GTSO reads and writes the ethtool_value `req` points to,
    // which lives until the call returns.
    let rc = unsafe { libc::ioctl(s, libc::SIOCETHTOOL, &raw mut req) };
    // SAFETY: `s` is our descriptor, closed once.
    unsafe { libc::close(s) };
    rc == 0 && v.data != 0
}
