//! The control side's handles on the forwarding cores: the messages a core takes (it never
//! blocks on them), what it reports every 100 ms, and the status and counters snapshot the
//! stats file, `xvsctl stats` and the metrics show.
//!
//! May depend on: capture (taps), datapath (trace facts, FDB rows), io (port types, the waker, UMEM
//! handles), pipeline (`Change`), stats, host, qos, tables, types.

use crate::datapath::{FdbRow, TraceFacts};
use crate::host::HostCounters;
use crate::io::afxdp::{Waker, XskMode};
use crate::io::ports::IoPort;
use crate::pipeline::Change;
use crate::stats::Stats;
use crate::tables::{FdbDest, Tables};
use crate::types::{PortId, TenantId};
use crossbeam::channel::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages from the control plane to the forwarding core. The core never blocks on them.
pub enum CoreMsg {
    /// A new table snapshot, with ports to attach and detach.
    Update {
        /// The snapshot.
        tables: Arc<Tables>,
        /// FDB changes.
        change: Change,
        /// New ports' sockets.
        attach: Vec<(PortId, IoPort)>,
        /// Ports to close.
        detach: Vec<PortId>,
        /// Told once the core runs on the new snapshot.
        done: Sender<()>,
    },
    /// Static FDB entries added or removed (no other table changed).
    Fdb {
        /// Entries to add or replace.
        add: Vec<(TenantId, crate::wire::MacAddr, FdbDest)>,
        /// Entries to remove.
        del: Vec<(TenantId, crate::wire::MacAddr)>,
        /// Told once the core has applied them.
        done: Sender<()>,
    },
    /// Zero the counters.
    ClearStats,
    /// Decide a frame as forwarding would, for a trace (explained by the control side).
    Trace {
        /// Ingress port.
        port: PortId,
        /// The frame.
        frame: Vec<u8>,
        /// Where the facts go.
        reply: Sender<TraceFacts>,
    },
    /// Start a packet capture (the tap's ring, allocated by the sender, is how the core
    /// hands the records over; the tap ends when its reader drops the ring).
    Capture {
        /// The tap.
        tap: crate::capture::Tap,
    },
    /// Copy out learned and static FDB entries (rendered by the control side).
    FdbDump {
        /// Only this tenant.
        tenant: Option<TenantId>,
        /// Where to copy them: sized by the sender for the whole table.
        buf: Vec<FdbRow>,
        /// Where the rows go, with the tables and the core's clock to read them by.
        reply: Sender<(Vec<FdbRow>, Arc<Tables>, u64)>,
    },
}

/// What the core publishes every 100 ms.
#[derive(Debug, Clone, Default)]
pub struct CoreReport {
    /// Pipeline counters.
    pub stats: Stats,
    /// Host stack counters.
    pub host: HostCounters,
    /// Underlay neighbours: IP and MAC (none while incomplete).
    pub neighbors: Vec<(std::net::Ipv4Addr, Option<crate::wire::MacAddr>)>,
    /// Core load.
    pub core: CoreLoad,
    /// AF_XDP mode of each queue, by port id.
    pub afxdp: Vec<(u16, Vec<XskMode>)>,
    /// The uplink scheduler's view of each tenant.
    pub qos: Vec<QosRow>,
    /// Load of each core (filled in when reports are merged).
    pub per_core: Vec<CoreLoad>,
    /// Each core's CPU, scheduler link rate and tenants (filled in when reports are merged).
    pub qos_per_core: Vec<(usize, u64, Vec<QosRow>)>,
}

pub use xvs_proto::reply::{CoreLoad, PortStatus, QosRow, Snapshot};

/// Adds one core's view of a tenant in the scheduler to the total (a limit on one core and
/// none on another is none: the link rate).
fn add_qos(q: &mut QosRow, r: &QosRow) {
    q.stats.packets += r.stats.packets;
    q.stats.bytes += r.stats.bytes;
    q.stats.guaranteed_bytes += r.stats.guaranteed_bytes;
    q.stats.drops += r.stats.drops;
    q.stats.backlog += r.stats.backlog;
    q.rate_bps += r.rate_bps;
    q.guarantee_bps += r.guarantee_bps;
    q.limit_bps = q.limit_bps.zip(r.limit_bps).map(|(a, b)| a + b);
}

/// The control plane's handles on the forwarding cores.
pub struct Cores {
    /// One per core: its channel, its waker, what it reports, its UMEM.
    pub cores: Vec<CoreHandle>,
    /// The XDP programs and maps every port's program and the fast path share.
    pub xdp: Arc<crate::io::xdp::XdpObject>,
}

/// One forwarding core as the control plane sees it.
pub struct CoreHandle {
    /// CPU.
    pub cpu: usize,
    /// Messages to it.
    pub tx: Sender<CoreMsg>,
    /// Wakes it from poll(2).
    pub waker: Arc<Waker>,
    /// What it published last.
    pub report: Arc<Mutex<Option<CoreReport>>>,
    /// Its UMEM, for binding new sockets.
    pub umem: crate::io::afxdp::UmemHandle,
}

impl Cores {
    /// Sends `make(core index)` to every core and waits (bounded) for each to confirm through
    /// the `done` sender it was given.
    pub fn send_all_and_wait(&self, make: impl FnMut(usize, Sender<()>) -> CoreMsg) -> Result<(), String> {
        Cores::wait(self.send_all(make)?)
    }

    /// Sends `make(core index)` to every core without waiting; returns what each confirms
    /// through (see [`Cores::wait`]), so the caller can do other work meanwhile.
    pub fn send_all(&self, mut make: impl FnMut(usize, Sender<()>) -> CoreMsg) -> Result<Vec<Receiver<()>>, String> {
        let mut waits = Vec::new();
        for (i, c) in self.cores.iter().enumerate() {
            let (tx, rx) = crossbeam::channel::bounded(1);
            c.tx.send(make(i, tx)).map_err(|_| "forwarding core is gone".to_string())?;
            c.waker.wake();
            waits.push(rx);
        }
        Ok(waits)
    }

    /// Waits (bounded) for every core's confirmation of what [`Cores::send_all`] sent.
    pub fn wait(waits: Vec<Receiver<()>>) -> Result<(), String> {
        for rx in waits {
            rx.recv_timeout(Duration::from_secs(5))
                .map_err(|_| "the forwarding core did not confirm the change within 5 s".to_string())?;
        }
        Ok(())
    }

    /// Sends a message to one core.
    pub fn send(&self, core: usize, msg: CoreMsg) -> Result<(), String> {
        let c = self.cores.get(core).ok_or("no forwarding core")?;
        c.tx.send(msg).map_err(|_| "forwarding core is gone".to_string())?;
        c.waker.wake();
        Ok(())
    }

    /// Every core's report merged: counters added up, the first core's view of the rest.
    pub fn report(&self) -> Option<CoreReport> {
        let mut merged: Option<CoreReport> = None;
        for c in &self.cores {
            let Some(r) = c.report.lock().ok().and_then(|g| g.clone()) else { continue };
            match merged.as_mut() {
                None => {
                    let mut first = r.clone();
                    first.per_core = vec![r.core.clone()];
                    first.qos_per_core = vec![(r.core.cpu, r.core.qos_link_bps, r.qos.clone())];
                    merged = Some(first);
                }
                Some(m) => {
                    m.stats.add(&r.stats);
                    m.host.add(&r.host);
                    for (id, modes) in r.afxdp {
                        match m.afxdp.iter_mut().find(|(i, _)| *i == id) {
                            Some((_, v)) => v.extend(modes),
                            None => m.afxdp.push((id, modes)),
                        }
                    }
                    m.core.packets += r.core.packets;
                    m.core.busy_ns += r.core.busy_ns;
                    m.core.qos_link_bps += r.core.qos_link_bps;
                    m.core.qos_share_changes += r.core.qos_share_changes;
                    m.per_core.push(r.core.clone());
                    for row in &r.qos {
                        match m.qos.iter_mut().find(|q| q.tenant == row.tenant) {
                            Some(q) => add_qos(q, row),
                            None => m.qos.push(row.clone()),
                        }
                    }
                    m.qos_per_core.push((r.core.cpu, r.core.qos_link_bps, r.qos));
                }
            }
        }
        merged
    }
}
