//! Optional Prometheus endpoint (loopback only): the same counters as `xvsctl stats`, in the
//! Prometheus text format, encoded with the `prometheus-client` crate.
//!
//! May depend on: control::server (the snapshot), pipeline (`DropReason`); prometheus-client,
//! hyper, tokio.

use crate::control::server::ControlState;
use crate::pipeline::DropReason;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Labels = Vec<(String, String)>;

/// Renders the current counters.
pub fn render(state: &Mutex<ControlState>) -> String {
    let Some(s) = crate::control::server::lock_state(state).snapshot() else { return String::new() };
    let mut reg = Registry::with_prefix("xvs");
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    let fast = Family::<Labels, Counter>::default();
    let tenant_packets = Family::<Labels, Counter>::default();
    let tenant_drops = Family::<Labels, Counter>::default();
    for (p, c) in s.ports.iter().zip(&s.stats.ports) {
        let Some(p) = p else { continue };
        for (dir, pk, by) in [("rx", c.rx_packets, c.rx_bytes), ("tx", c.tx_packets, c.tx_bytes)] {
            let l = vec![("port".to_string(), p.name.clone()), ("direction".to_string(), dir.to_string())];
            packets.get_or_create(&l).inc_by(pk);
            bytes.get_or_create(&l).inc_by(by);
        }
        for (dir, pk) in [("rx", c.fast_rx_packets), ("tx", c.fast_tx_packets)] {
            let l = vec![("port".to_string(), p.name.clone()), ("direction".to_string(), dir.to_string())];
            fast.get_or_create(&l).inc_by(pk);
        }
        for r in DropReason::ALL {
            let n = c.drop_count(r.name());
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
            let n = c.drop_count(r.name());
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
    reg.register(
        "port_fast_path_packets",
        "Of the frames per port and direction, those the XDP fast path forwarded",
        fast,
    );
    reg.register("tenant_packets", "Frames per tenant and direction", tenant_packets);
    reg.register("tenant_drops", "Drops per tenant and reason", tenant_drops);
    let busy: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    busy.set(s.core.busy_share);
    reg.register("core_busy_share", "Share of time the forwarding core was busy", busy);
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// Most scrapes served at once; a connection beyond that is closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest request head (request line and headers) taken, bytes.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// Time a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept (keep-alive included).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `GET /metrics` on `addr` (a loopback address), with hyper on a one-thread runtime
/// of its own: request heads are bounded in size ([`MAX_REQUEST_HEAD`]) and time
/// ([`HEAD_TIMEOUT`]), connections in number ([`MAX_CONNECTIONS`]) and life
/// ([`CONNECTION_TIMEOUT`]), so no client can stall another's scrape or grow the daemon.
/// Only `GET` (and `HEAD`) of `/metrics` is answered; any other path is 404, any other
/// method 405. Request bodies are never read.
pub fn serve(addr: SocketAddr, state: Arc<Mutex<ControlState>>) -> anyhow::Result<()> {
    anyhow::ensure!(addr.ip().is_loopback(), "metrics address {addr} is not a loopback address");
    let listener = std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("metrics endpoint {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    std::thread::Builder::new().name("xvs-metrics".into()).spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    continue; // too many at once: this one is closed (dropped)
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, std::convert::Infallible>(respond(&req, &state)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEAD_TIMEOUT)
                        .max_buf_size(MAX_REQUEST_HEAD)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                    drop(permit);
                });
            }
        });
    })?;
    Ok(())
}

type Reply = hyper::Response<http_body_util::Full<hyper::body::Bytes>>;

fn respond<B>(req: &hyper::Request<B>, state: &Mutex<ControlState>) -> Reply {
    let reply = |status: u16, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.uri().path() != "/metrics" {
        return reply(404, "not found\n".into());
    }
    match *req.method() {
        hyper::Method::GET | hyper::Method::HEAD => reply(200, render(state)),
        _ => reply(405, "only GET /metrics\n".into()),
    }
}
