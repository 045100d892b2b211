//! xvs: a userspace datacenter virtual switch. Every tenant gets its own VXLAN overlay
//! (RFC 7348); VM ports are tap or veth devices, the uplink carries VXLAN.
//!
//! Layout, after smoltcp's: [`wire`] is bytes only, [`pipeline`] is the forwarding logic
//! (pure, batched, time passed in), [`port`] is the device interface with [`memport`] as the
//! in-memory implementation; [`tables`], [`fdb`] and [`neigh`] hold state, [`config`] builds it.

pub mod bucket;
pub mod config;
pub mod control;
pub mod cores;
pub mod daemon;
pub mod datapath;
pub mod drop;
pub mod fdb;
pub mod frames;
pub mod host;
pub mod io;
pub mod memport;
pub mod metrics;
pub mod neigh;
pub mod offload;
pub mod pipeline;
pub mod port;
pub mod preflight;
pub mod qos;
pub mod sim;
pub mod stats;
pub mod store;
pub mod tables;
pub mod types;
pub mod wire;
