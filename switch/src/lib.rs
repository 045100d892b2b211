//! xvs: a userspace datacenter virtual switch. Every tenant gets its own VXLAN overlay
//! (RFC 7348); VM ports are tap or veth devices, the uplink carries VXLAN.
//!
//! This crate is the daemon around the dataplane: [`io`] (AF_XDP sockets and the UMEM, XDP
//! and tc programs, packet sockets on taps, netlink; the only `unsafe`), the control plane
//! and its server ([`control`]), the forwarding cores' threads and messages ([`daemon`],
//! [`cores`]), the state store, metrics and the host checks. The dataplane itself (wire
//! formats, tables, FDB, pipeline, QoS, the port interface, the simulation) is the
//! `xvs-dataplane` crate, which cannot do I/O; its modules are re-exported here under their
//! own names.

pub use xvs_dataplane::{
    bucket, capture, config, datapath, drop, fastpath, fdb, frames, hint, host, memport, neigh, offload, pipeline,
    port, qos, share, sim, stats, tables, types, wire,
};

pub mod control;
pub mod cores;
pub mod daemon;
pub mod etcd;
pub mod io;
pub mod metrics;
pub mod preflight;
pub mod store;
pub mod uplink_share;
