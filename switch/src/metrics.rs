//! Optional Prometheus endpoint (loopback only): the same counters as `xvsctl stats`, in the
//! Prometheus text format, encoded with the `prometheus-client` crate.

use crate::control::server::ControlState;
use crate::pipeline::DropReason;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

type Labels = Vec<(String, String)>;

/// Renders the current counters.
pub fn render(state: &Mutex<ControlState>) -> String {
    let Some(s) = crate::control::server::lock_state(state).snapshot() else { return String::new() };
    let mut reg = Registry::with_prefix("xvs");
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    let tenant_packets = Family::<Labels, Counter>::default();
    let tenant_drops = Family::<Labels, Counter>::default();
    for (p, c) in s.ports.iter().zip(&s.stats.ports) {
        let Some(p) = p else { continue };
        for (dir, pk, by) in [("rx", c.rx_packets, c.rx_bytes), ("tx", c.tx_packets, c.tx_bytes)] {
            let l = vec![("port".to_string(), p.name.clone()), ("direction".to_string(), dir.to_string())];
            packets.get_or_create(&l).inc_by(pk);
            bytes.get_or_create(&l).inc_by(by);
        }
        for r in DropReason::ALL {
            let n = c.drop_count(*r);
            if n > 0 {
                drops
                    .get_or_create(&vec![("port".into(), p.name.clone()), ("reason".into(), r.name().into())])
                    .inc_by(n);
            }
        }
    }
    for (t, c) in s.tenants.iter().zip(&s.stats.tenants) {
        let Some((name, vni)) = t else { continue };
        for (dir, pk) in [("rx", c.rx_packets), ("tx", c.tx_packets)] {
            let l = vec![
                ("tenant".into(), name.clone()),
                ("vni".into(), vni.to_string()),
                ("direction".into(), dir.into()),
            ];
            tenant_packets.get_or_create(&l).inc_by(pk);
        }
        for r in DropReason::ALL {
            let n = c.drop_count(*r);
            if n > 0 {
                tenant_drops
                    .get_or_create(&vec![("tenant".into(), name.clone()), ("reason".into(), r.name().into())])
                    .inc_by(n);
            }
        }
    }
    reg.register("port_packets", "Frames per port and direction", packets);
    reg.register("port_bytes", "Bytes per port and direction", bytes);
    reg.register("port_drops", "Drops per port and reason", drops);
    reg.register("tenant_packets", "Frames per tenant and direction", tenant_packets);
    reg.register("tenant_drops", "Drops per tenant and reason", tenant_drops);
    let busy: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    busy.set(s.core.busy_share);
    reg.register("core_busy_share", "Share of time the forwarding core was busy", busy);
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// Serves `GET /metrics` on `addr` (a loopback address).
pub fn serve(addr: SocketAddr, state: Arc<Mutex<ControlState>>) -> anyhow::Result<()> {
    anyhow::ensure!(addr.ip().is_loopback(), "metrics address {addr} is not a loopback address");
    let listener = TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("metrics endpoint {addr}: {e}"))?;
    std::thread::Builder::new().name("xvs-metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut line = String::new();
            let _ = BufReader::new(&conn).read_line(&mut line);
            let (status, body) = if line.starts_with("GET /metrics") {
                ("200 OK", render(&state))
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(())
}
