//! xvsd, the xvs daemon: forwards between VM ports and the VXLAN underlay.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use xvs_switch::config::{Config, StoreConfig};
use xvs_switch::control::proto::DEFAULT_SOCKET;
use xvs_switch::daemon::{self, Options};

/// xvs daemon: a userspace VXLAN virtual switch over XDP and AF_XDP.
#[derive(Parser, Debug)]
#[command(name = "xvsd", version, about, long_about = None)]
struct Args {
    /// Configuration file (TOML): uplink, VTEP IP, cores, tenants, VM ports. Used when the
    /// state file holds no configuration yet.
    #[arg(short, long, default_value = "/etc/xvs/xvsd.toml")]
    config: PathBuf,
    /// State file: the desired configuration as changed through xvsctl, kept across restarts.
    /// With --store, a cache of the last state applied from the shared store.
    #[arg(long, default_value = "/var/lib/xvs/state.toml")]
    state: PathBuf,
    /// Shared desired state in etcd, `etcd://host:port[,host:port...]` (overrides the config
    /// file's [store] url): tenants, VM ports and hosts come from there; see docs/etcd.md.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Key prefix in the store [default: /xvs, or the config file's]
    #[arg(long, value_name = "PREFIX", requires = "store")]
    store_prefix: Option<String>,
    /// This host's name in the store [default: the system's host name, or the config file's]
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
    /// Seconds after which the other hosts forget this one if it stops renewing its lease
    /// [default: 5, or the config file's]
    #[arg(long, value_name = "SECS")]
    lease_secs: Option<u32>,
    /// TLS to the store: the CA certificate (PEM) that signed the members' certificates
    #[arg(long, value_name = "FILE")]
    store_ca: Option<String>,
    /// TLS to the store: this host's client certificate (PEM)
    #[arg(long, value_name = "FILE", requires = "store_key")]
    store_cert: Option<String>,
    /// TLS to the store: the client certificate's key (PEM)
    #[arg(long, value_name = "FILE", requires = "store_cert")]
    store_key: Option<String>,
    /// Control socket for xvsctl.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Group allowed to use the control socket (besides root).
    #[arg(long)]
    socket_group: Option<String>,
    /// Serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9469).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Validate the configuration (file and interfaces) and exit without touching anything.
    #[arg(long)]
    check: bool,
    /// Write status and counters as JSON to this file, refreshed while running.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Bind AF_XDP sockets in copy mode even where zero-copy would work.
    #[arg(long)]
    force_copy: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // colours only on a terminal: under systemd standard error is the journal
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xvsd: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", args.config.display()))?;
    let mut cfg = Config::from_toml(&text)?;
    if let Some(url) = args.store {
        let s = cfg.store.get_or_insert_with(|| StoreConfig {
            url: url.clone(),
            prefix: "/xvs".into(),
            host: None,
            lease_secs: xvs_switch::etcd::DEFAULT_LEASE_SECS,
            ca: None,
            cert: None,
            key: None,
        });
        s.url = url;
        if let Some(p) = args.store_prefix {
            s.prefix = p;
        }
    }
    if let Some(s) = &mut cfg.store {
        if let Some(h) = args.host_name {
            s.host = Some(h);
        }
        if let Some(l) = args.lease_secs {
            s.lease_secs = l;
        }
        if let Some(c) = args.store_ca {
            s.ca = Some(c);
        }
        if let Some(c) = args.store_cert {
            s.cert = Some(c);
        }
        if let Some(k) = args.store_key {
            s.key = Some(k);
        }
    } else if args.host_name.is_some()
        || args.lease_secs.is_some()
        || args.store_ca.is_some()
        || args.store_cert.is_some()
    {
        anyhow::bail!(
            "--host-name, --lease-secs and --store-ca/cert/key need a store (--store or [store] in the config)"
        );
    }
    if args.check {
        daemon::preflight(&cfg, None)?;
        println!("config {} is valid", args.config.display());
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    daemon::run(
        cfg,
        Options {
            stats_file: args.stats_file,
            force_copy: args.force_copy,
            config_path: Some(args.config),
            socket: Some(args.socket),
            socket_group: args.socket_group,
            state: Some(args.state),
            metrics: args.metrics,
        },
        stop,
    )?;
    tracing::info!("xvsd stopped; XDP programs detached");
    Ok(())
}
