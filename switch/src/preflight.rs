//! What xvsd checks of the host before it touches an interface, at start and before every
//! whole-configuration change: root, the uplink and its VTEP address, the cores' CPUs, the
//! queues every port needs; and the tables a configuration builds on this host.
//!
//! May depend on: config, tables, io::netdev (reads only), wire.

use crate::config::Config;
use crate::io::netdev;
use crate::tables::Tables;
use anyhow::bail;
use std::net::IpAddr;

/// Checks everything that can be checked before touching an interface; returns the tables.
pub fn preflight(cfg: &Config, prev: Option<&Tables>) -> anyhow::Result<Tables> {
    host_checks(cfg, prev.is_none())?;
    let up = &cfg.uplink.interface;
    let tables = cfg.build_after(prev, netdev::mac(up), netdev::mtu(up))?;
    // Frames are not split across buffers: refuse an underlay MTU whose frames would not fit
    // one (the kernel would drop them on receive).
    let cap = crate::io::afxdp::FRAME_CAPACITY;
    if usize::from(tables.underlay.mtu) + crate::wire::ETHERNET_HEADER_LEN > cap {
        bail!(
            "uplink MTU {} does not fit a frame buffer of {cap} bytes (at most {})",
            tables.underlay.mtu,
            cap - crate::wire::ETHERNET_HEADER_LEN
        );
    }
    Ok(tables)
}

/// What `cfg` needs of this host: root, the uplink with the VTEP IP, the cores' CPUs, as
/// many queues on every port as there are cores. `starting`: xvsd is starting (warn about
/// cores outside the CPUs it may use now).
pub fn host_checks(cfg: &Config, starting: bool) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("xvsd must run as root (XDP and AF_XDP need CAP_NET_ADMIN and CAP_BPF)");
    }
    let up = &cfg.uplink.interface;
    if !netdev::exists(up) {
        bail!("uplink interface {up:?} not found");
    }
    // A VM port whose interface is missing is not an error: it waits for its interface (a
    // stopped VM must not keep the host's other VMs off the network).
    let (vtep_ip, _) = cfg.vtep_cidr()?;
    if !netdev::has_addr(up, IpAddr::V4(vtep_ip)) {
        bail!("VTEP IP {vtep_ip} is not configured on uplink {up:?} (add it with `ip addr add`)");
    }
    // Cores are checked against the CPUs this machine has, not against how many this
    // process may use now: under `taskset -c 1` (or a cpuset) CPU 1 is fine, and moving
    // xvsd's threads later must not make every change fail.
    let online = online_cpus();
    for c in &cfg.daemon.cores {
        if !online.contains(c) {
            bail!("daemon: core {c} does not exist (this machine's CPUs are {})", cpu_list(&online));
        }
    }
    if starting {
        let allowed = allowed_cpus();
        for c in cfg.daemon.cores.iter().filter(|c| !allowed.is_empty() && !allowed.contains(c)) {
            tracing::warn!(
                "daemon: core {c} is outside the CPUs xvsd was started on ({}; taskset or cpuset): \
                 its forwarding thread is pinned there anyway if the kernel allows it",
                cpu_list(&allowed)
            );
        }
    }
    let n = cfg.daemon.cores.len();
    let mut seen = std::collections::HashSet::new();
    if let Some(c) = cfg.daemon.cores.iter().find(|c| !seen.insert(**c)) {
        bail!("daemon: core {c} is listed twice");
    }
    if n > 1 {
        // Each core owns one queue of every port, so frames never change cores.
        let queued = cfg.ports.iter().map(|p| &p.interface).filter(|n| netdev::exists(n) && !netdev::is_tap(n));
        for name in std::iter::once(up).chain(queued) {
            let q = netdev::rx_queues(name);
            if (q as usize) < n {
                bail!("daemon: {n} cores need {n} queues on every port, but {name:?} has {q}");
            }
        }
    }
    Ok(())
}

/// The CPUs this machine has online (`/sys/devices/system/cpu/online`, e.g. "0-3,6").
pub fn online_cpus() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect())
}

/// The CPUs this process may run on now (its affinity mask).
fn allowed_cpus() -> Vec<usize> {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect())
        .unwrap_or_default()
}

/// Parses a kernel CPU list ("0-3,6"); `None` if malformed.
fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().ok()?),
        }
    }
    Some(v)
}

/// Writes CPUs as a kernel CPU list ("0-3,6").
fn cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if j > i { format!("{}-{}", cpus[i], cpus[j]) } else { cpus[i].to_string() });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_print() {
        assert_eq!(parse_cpu_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(cpu_list(&[1]), "1");
        assert!(online_cpus().contains(&0));
    }
}
