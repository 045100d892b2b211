//! Facts about network interfaces from sysfs and getifaddrs: existence, MAC, MTU, addresses,
//! queue count.

use crate::wire::MacAddr;
use std::net::{IpAddr, Ipv4Addr};

fn sys(ifname: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/{file}")).ok().map(|s| s.trim().to_string())
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
