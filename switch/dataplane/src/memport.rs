//! In-memory frame memory and ports: the same [`Port`] interface as AF_XDP, without the kernel,
//! so the pipeline is tested, fuzzed and benchmarked in process.
//!
//! May depend on: port.

use crate::port::{Desc, FrameMem, FreeList, Port};
use std::collections::VecDeque;
use std::ops::Range;

/// Frame memory in a plain buffer.
#[derive(Debug)]
pub struct MemFrames {
    data: Vec<u8>,
    frame_size: usize,
    frames: u32,
}

impl MemFrames {
    /// `frames` frames of `frame_size` bytes each.
    pub fn new(frames: u32, frame_size: usize) -> MemFrames {
        MemFrames { data: vec![0; frames as usize * frame_size], frame_size, frames }
    }

    fn range(&self, id: u32) -> Range<usize> {
        let start = id as usize * self.frame_size;
        start..start + self.frame_size
    }
}

impl FrameMem for MemFrames {
    fn buf(&self, id: u32) -> &[u8] {
        let r = self.range(id);
        &self.data[r]
    }

    fn buf_mut(&mut self, id: u32) -> &mut [u8] {
        let r = self.range(id);
        &mut self.data[r]
    }

    fn copy(&mut self, src: u32, src_range: Range<usize>, dst: u32, dst_off: usize) {
        let s = self.range(src).start;
        let d = self.range(dst).start;
        self.data.copy_within(s + src_range.start..s + src_range.end, d + dst_off);
    }

    fn capacity(&self) -> usize {
        self.frame_size
    }

    fn frames(&self) -> u32 {
        self.frames
    }
}

/// An in-memory port: a receive queue that a test fills and a transmit queue it drains.
#[derive(Debug, Default)]
pub struct MemPort {
    /// Frames waiting to be received by the switch.
    pub rx_queue: VecDeque<Desc>,
    /// Frames the switch transmitted, not yet taken by the test.
    pub tx_queue: VecDeque<Desc>,
    /// Most frames the transmit queue holds (models a full TX ring).
    pub tx_capacity: usize,
    done: Vec<Desc>,
}

impl MemPort {
    /// A port whose transmit queue holds `tx_capacity` frames.
    pub fn new(tx_capacity: usize) -> MemPort {
        MemPort {
            rx_queue: VecDeque::with_capacity(tx_capacity),
            tx_queue: VecDeque::with_capacity(tx_capacity),
            tx_capacity,
            done: Vec::with_capacity(tx_capacity),
        }
    }

    /// Marks transmitted frames as taken by the wire: they return to the free list on the next
    /// reclaim. Returns them so the caller can read them first.
    pub fn complete_tx(&mut self) -> impl Iterator<Item = Desc> + '_ {
        let taken: Vec<Desc> = self.tx_queue.drain(..).collect();
        self.done.extend_from_slice(&taken);
        taken.into_iter()
    }

    /// Like [`MemPort::complete_tx`] without looking at the frames (no allocation).
    pub fn discard_tx(&mut self) -> usize {
        let n = self.tx_queue.len();
        for d in self.tx_queue.drain(..) {
            self.done.push(d);
        }
        n
    }
}

impl Port for MemPort {
    fn rx(&mut self, _mem: &mut dyn FrameMem, out: &mut [Desc]) -> usize {
        let n = out.len().min(self.rx_queue.len());
        for slot in out.iter_mut().take(n) {
            *slot = self.rx_queue.pop_front().unwrap_or_default();
        }
        n
    }

    fn tx(&mut self, descs: &[Desc]) -> usize {
        let n = descs.len().min(self.tx_capacity - self.tx_queue.len());
        self.tx_queue.extend(descs[..n].iter().copied());
        n
    }

    fn reclaim(&mut self, free: &mut FreeList) {
        for d in self.done.drain(..) {
            free.free(d.id);
        }
    }

    fn refill(&mut self, _free: &mut FreeList) {}
}
