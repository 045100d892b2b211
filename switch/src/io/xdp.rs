//! Loading and attaching the XDP programs and the tap ingress program (aya), registering
//! sockets in the XSKMAP, reading the per-CPU counters. One program instance, with its own
//! maps, per interface.
#![allow(unsafe_code)]

use aya::Ebpf;
use aya::maps::{Array, PerCpuArray, XskMap};
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use std::os::fd::RawFd;
use xvs_common::{Counter, MAP_COUNTERS, MAP_UPLINK_CONF, MAP_XSKS, PROG_UPLINK, PROG_VM, PROG_VM_TC, UplinkConf};

/// The XDP object built by build.rs.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xvs-xdp"));

/// Which program an interface gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The uplink, with our VTEP IP.
    Uplink {
        /// Our VTEP IPv4 address.
        vtep_ip: std::net::Ipv4Addr,
        /// VXLAN UDP port.
        udp_port: u16,
    },
    /// A VM port read through AF_XDP (veth).
    Vm,
    /// A tap VM port read through a packet socket: tc ingress keeps its frames from the host.
    VmTap,
}

pub use xvs_proto::reply::AttachMode;

/// An XDP program attached to one interface.
pub struct Attached {
    /// Interface name.
    pub ifname: String,
    /// Attach mode.
    pub mode: AttachMode,
    ebpf: Ebpf,
}

impl Attached {
    /// Loads the program for `role` and attaches it to `ifname`, natively if the driver can,
    /// generically otherwise.
    pub fn attach(ifname: &str, role: Role) -> anyhow::Result<Attached> {
        let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| anyhow::anyhow!("loading XDP object: {e}"))?;
        if let Role::Uplink { vtep_ip, udp_port } = role {
            let mut conf: Array<_, UplinkConf> = Array::try_from(
                ebpf.map_mut(MAP_UPLINK_CONF).ok_or_else(|| anyhow::anyhow!("XDP object lacks {MAP_UPLINK_CONF}"))?,
            )?;
            conf.set(0, UplinkConf { vtep_ip: vtep_ip.octets(), udp_port, pad: 0 }, 0)?;
        }
        let name = match role {
            Role::Uplink { .. } => PROG_UPLINK,
            Role::Vm => PROG_VM,
            Role::VmTap => {
                let prog: &mut SchedClassifier = ebpf
                    .program_mut(PROG_VM_TC)
                    .ok_or_else(|| anyhow::anyhow!("object lacks program {PROG_VM_TC}"))?
                    .try_into()?;
                prog.load().map_err(|e| anyhow::anyhow!("loading tc program {PROG_VM_TC}: {e}"))?;
                prog.attach(ifname, TcAttachType::Ingress)
                    .map_err(|e| anyhow::anyhow!("tc ingress attach to {ifname} refused: {e}"))?;
                return Ok(Attached { ifname: ifname.to_string(), mode: AttachMode::TcIngress, ebpf });
            }
        };
        let prog: &mut Xdp =
            ebpf.program_mut(name).ok_or_else(|| anyhow::anyhow!("XDP object lacks program {name}"))?.try_into()?;
        prog.load().map_err(|e| anyhow::anyhow!("loading XDP program {name}: {e}"))?;
        let mode = match prog.attach(ifname, XdpMode::Driver) {
            Ok(_) => AttachMode::Driver,
            Err(native) => match prog.attach(ifname, XdpMode::Skb) {
                Ok(_) => AttachMode::Generic,
                Err(e) => anyhow::bail!("XDP attach to {ifname} refused: {native}; generic mode: {e}"),
            },
        };
        Ok(Attached { ifname: ifname.to_string(), mode, ebpf })
    }

    /// Steers queue `queue` of the interface to the AF_XDP socket `fd`.
    pub fn register(&mut self, queue: u32, fd: RawFd) -> anyhow::Result<()> {
        let mut xsks = XskMap::try_from(self.ebpf.map_mut(MAP_XSKS).ok_or_else(|| anyhow::anyhow!("no {MAP_XSKS}"))?)?;
        // SAFETY: `fd` is an open AF_XDP socket owned by the caller for as long as this
        // program is attached; the map holds its own reference to the socket.
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        xsks.set(queue, bfd, 0)
            .map_err(|e| anyhow::anyhow!("registering socket for {} queue {queue}: {e}", self.ifname))?;
        Ok(())
    }

    /// The program's counters, summed over CPUs, by [`Counter`] index.
    pub fn counters(&self) -> [u64; Counter::COUNT as usize] {
        let mut out = [0u64; Counter::COUNT as usize];
        let Some(map) = self.ebpf.map(MAP_COUNTERS) else { return out };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else { return out };
        for c in Counter::ALL {
            if let Ok(v) = arr.get(&(c as u32), 0) {
                out[c as usize] = v.iter().sum();
            }
        }
        out
    }
}
