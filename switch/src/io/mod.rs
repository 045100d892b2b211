//! The I/O layer: XDP programs (aya), AF_XDP sockets (xsk-rs), the UMEM. The only place with
//! `unsafe` code; everything above it is safe and I/O-free.

pub mod afxdp;
pub mod netdev;
pub mod xdp;
