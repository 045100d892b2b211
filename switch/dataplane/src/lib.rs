//! The xvs dataplane: everything a forwarding core computes, and nothing that touches the
//! outside world. Layout after smoltcp's: [`wire`] is bytes only, [`pipeline`] is the
//! forwarding logic (pure, batched, time passed in), [`port`] is the device interface with
//! [`memport`] as the in-memory implementation and [`sim`] a whole switch in memory;
//! [`tables`], [`fdb`] and [`neigh`] hold state, [`config`] builds it; [`qos`] schedules the
//! uplink and [`share`] splits it between cores; [`capture`] copies tapped frames into rings a reader empties.
//!
//! This crate cannot do I/O: it depends on no system-call crate (no nix, libc, aya or
//! xsk-rs) and forbids `unsafe`. The daemon (`xvs-switch`) runs it over AF_XDP sockets and
//! passes in what needs the system: the clock, the cycle counter, the huge-page advice.
#![forbid(unsafe_code)]

pub mod bucket;
pub mod capture;
pub mod config;
pub mod datapath;
pub mod drop;
pub mod fastpath;
pub mod fdb;
pub mod frames;
pub mod hint;
pub mod host;
pub mod memport;
pub mod neigh;
pub mod offload;
pub mod pipeline;
pub mod port;
pub mod qos;
pub mod share;
pub mod sim;
pub mod stats;
pub mod tables;
pub mod types;
pub mod wire;
