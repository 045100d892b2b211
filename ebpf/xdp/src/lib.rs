//! The XDP programs are the `xvs-xdp` binary, built for the BPF target only.
#![no_std]
