//! A whole switch in memory: a [`Core`] over [`MemPort`]s, for tests, fuzzing and benchmarks
//! (quinn-proto's `Pair` in spirit). Time is a number the caller advances.
//!
//! May depend on: datapath, memport, port, tables, types.

use crate::datapath::Core;
use crate::memport::{MemFrames, MemPort};
use crate::port::{Desc, FrameMem};
use crate::tables::Tables;
use crate::types::PortId;
use std::sync::Arc;

/// Frame size of the simulated frame memory (as AF_XDP: 4 KiB chunks).
pub const SIM_FRAME_SIZE: usize = 4096;

/// An in-memory switch.
pub struct Sim {
    /// The core.
    pub core: Core<MemPort, MemFrames>,
    /// The current time, ns.
    pub now: u64,
}

impl Sim {
    /// A switch over `tables` with `frames` frames and every configured port attached.
    pub fn new(tables: Arc<Tables>, frames: u32) -> Sim {
        let ids: Vec<PortId> = tables.live_ports().map(|(id, _)| id).collect();
        let mut core = Core::new(tables, MemFrames::new(frames, SIM_FRAME_SIZE));
        for id in ids {
            core.attach(id, MemPort::new(frames as usize));
        }
        Sim { core, now: 1_000_000_000 }
    }

    /// Queues `bytes` for reception on `port`; false when no frame is free.
    pub fn inject(&mut self, port: PortId, bytes: &[u8]) -> bool {
        let Some(id) = self.core.free.alloc() else { return false };
        let d = self.core.mem.write(id, bytes);
        match self.core.ports.get_mut(port.index()).and_then(Option::as_mut) {
            Some(p) => {
                p.rx_queue.push_back(d);
                true
            }
            None => {
                self.core.free.free(id);
                false
            }
        }
    }

    /// Polls until every receive queue is empty (bounded), returns frames received.
    pub fn run(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..10_000 {
            let n = self.core.poll(self.now);
            total += n;
            if n == 0 {
                break;
            }
        }
        // host-stack frames are not simulated here: recycle them
        for d in self.core.stage.host.drain(..) {
            self.core.free.free(d.id);
        }
        total
    }

    /// Takes the frames `port` transmitted.
    pub fn take(&mut self, port: PortId) -> Vec<Vec<u8>> {
        let Some(p) = self.core.ports.get_mut(port.index()).and_then(Option::as_mut) else {
            return Vec::new();
        };
        let descs: Vec<Desc> = p.complete_tx().collect();
        let out = descs.iter().map(|d| self.core.mem.data(d).to_vec()).collect();
        // return completed frames to the free list
        if let Some(p) = self.core.ports.get_mut(port.index()).and_then(Option::as_mut) {
            use crate::port::Port;
            p.reclaim(&mut self.core.free);
        }
        out
    }

    /// Advances the clock.
    pub fn advance(&mut self, ns: u64) {
        self.now += ns;
    }
}
