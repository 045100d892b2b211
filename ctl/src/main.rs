//! xvsctl: the command line of xvs. Talks to xvsd over its control socket; nouns then verbs,
//! `--json` on every command, exit status 0 on success and 1 with a one-line error otherwise.

mod capture;

use clap::{CommandFactory, Parser, Subcommand};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use xvs_proto::reply::{Counters, Done, PortStatus, Reply, Snapshot};
use xvs_proto::{ArpProbe, Command as Cmd, DEFAULT_SOCKET, FdbEntry, Request, Response, UdpProbe, VERSION};

/// Control the xvs virtual switch (xvsd).
#[derive(Parser, Debug)]
#[command(name = "xvsctl", version, about, propagate_version = true)]
struct Cli {
    /// xvsd's control socket.
    #[arg(long, global = true, env = "XVS_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    noun: Noun,
}

#[derive(Subcommand, Debug)]
enum Noun {
    /// Version, uptime, uplink, AF_XDP mode per socket, cores, config and state.
    Status,
    /// Tenants: each is one VXLAN overlay with its own VNI.
    Tenant {
        #[command(subcommand)]
        verb: TenantVerb,
    },
    /// VM ports (tap or veth devices), each bound to one tenant.
    Port {
        #[command(subcommand)]
        verb: PortVerb,
    },
    /// Remote VTEPs of a tenant: its flood list and decapsulation allow-list.
    Vtep {
        #[command(subcommand)]
        verb: VtepVerb,
    },
    /// The forwarding database: static and learned MACs.
    Fdb {
        #[command(subcommand)]
        verb: FdbVerb,
    },
    /// Counters per port, tenant and core; `stats clear` zeroes them.
    Stats {
        /// Refresh in place every this many seconds (until interrupted).
        #[arg(long, value_name = "SECS")]
        watch: Option<f64>,
        #[command(subcommand)]
        verb: Option<StatsVerb>,
    },
    /// Run a frame through the pipeline as if it arrived on PORT, without sending it, and
    /// print every decision.
    Trace {
        /// Ingress interface (a VM port or the uplink).
        port: String,
        /// The frame as hex.
        #[arg(long, conflicts_with_all = ["udp", "arp"])]
        hex: Option<String>,
        /// A 60-byte UDP frame: SRC_MAC,DST_MAC,SRC_IP,DST_IP.
        #[arg(long, conflicts_with = "arp")]
        udp: Option<String>,
        /// An ARP request: SRC_MAC,SRC_IP,TARGET_IP.
        #[arg(long)]
        arp: Option<String>,
    },
    /// Capture what PORT receives and sends, as the switch sees it, with what xvs did with
    /// each frame (tcpdump on the uplink or a veth port shows nothing of switched traffic:
    /// XDP takes frames before packet taps). Prints one line per packet, or writes pcapng
    /// that tcpdump and Wireshark read (direction in the packet flags, xvs's decision as the
    /// packet comment).
    /// Runs until --count or --duration, or until interrupted. A capture never holds up
    /// forwarding: frames it cannot keep up with are forwarded as always and counted as
    /// missed (printed at the end; `ifdrop` in the file).
    Capture {
        /// The port's interface (a VM port or the uplink).
        port: String,
        /// Only this tenant's frames (on the uplink: those with the tenant's VNI).
        #[arg(long)]
        tenant: Option<String>,
        /// Stop after this many packets.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Bytes kept of each frame, 64..=4096 (default: all of it).
        #[arg(short = 's', long)]
        snaplen: Option<u32>,
        /// Write pcapng to FILE ("-": standard output) instead of printing packets.
        #[arg(short = 'w', long, value_name = "FILE")]
        write: Option<PathBuf>,
    },
    /// Bandwidth guarantees on the uplink.
    Qos {
        #[command(subcommand)]
        verb: QosVerb,
    },
    /// The whole configuration as TOML.
    Config {
        #[command(subcommand)]
        verb: ConfigVerb,
    },
    /// Print a shell completion script.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Subcommand, Debug)]
enum TenantVerb {
    /// Add a tenant.
    Add {
        /// Name (1-64 of A-Z a-z 0-9 _ . -).
        name: String,
        /// VXLAN network identifier, 1..=16777215.
        #[arg(long)]
        vni: i64,
        /// Most MACs of this tenant in the FDB.
        #[arg(long)]
        mac_limit: Option<u32>,
        /// Guaranteed rate on the uplink while backlogged (e.g. 700M); needs uplink.rate.
        #[arg(long)]
        guarantee: Option<String>,
        /// Maximum rate on the uplink (e.g. 2G).
        #[arg(long)]
        limit: Option<String>,
        /// Share of the excess bandwidth, 1..=1000.
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Change a tenant's QoS, live ("none" clears a guarantee or limit).
    Set {
        /// Name.
        name: String,
        /// Guaranteed rate.
        #[arg(long)]
        guarantee: Option<String>,
        /// Maximum rate.
        #[arg(long)]
        limit: Option<String>,
        /// Share of the excess.
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove a tenant (it must have no ports).
    Del {
        /// Name.
        name: String,
    },
    /// List tenants.
    List,
    /// Show one tenant with its ports, VTEPs and counters.
    Show {
        /// Name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum PortVerb {
    /// Add a VM port.
    Add {
        /// Interface (tap or veth).
        interface: String,
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// The only source MAC the VM may use.
        #[arg(long)]
        mac: String,
        /// A source IP the VM may use (repeat for several).
        #[arg(long = "ip")]
        ips: Vec<String>,
        /// Police what the VM sends to this rate (e.g. 100M).
        #[arg(long)]
        police_rate: Option<String>,
        /// Policer burst in bytes (e.g. 64k).
        #[arg(long)]
        police_burst: Option<String>,
    },
    /// Remove a VM port.
    Del {
        /// Interface.
        interface: String,
    },
    /// List ports.
    List,
    /// Show one port with its counters.
    Show {
        /// Interface.
        interface: String,
    },
}

#[derive(Subcommand, Debug)]
enum VtepVerb {
    /// Add a remote VTEP to a tenant.
    Add {
        /// Tenant.
        tenant: String,
        /// VTEP IPv4 address.
        ip: String,
    },
    /// Remove a remote VTEP from a tenant.
    Del {
        /// Tenant.
        tenant: String,
        /// VTEP IPv4 address.
        ip: String,
    },
    /// List remote VTEPs.
    List {
        /// Only this tenant.
        tenant: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum FdbVerb {
    /// Add static entries: MAC behind VTEP (several pairs, or --file with "MAC VTEP" lines).
    Add {
        /// Tenant.
        tenant: String,
        /// MAC VTEP [MAC VTEP ...]
        pairs: Vec<String>,
        /// Read "MAC VTEP" lines from this file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Remove static entries.
    Del {
        /// Tenant.
        tenant: String,
        /// MACs.
        #[arg(required = true)]
        macs: Vec<String>,
    },
    /// Show static and learned entries with origin and age.
    Show {
        /// Only this tenant.
        tenant: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum QosVerb {
    /// Configured and measured rate, backlog and drops per tenant; with several forwarding
    /// cores on the uplink, also each core's part of the link and of every tenant's rates.
    Show,
}

#[derive(Subcommand, Debug)]
enum StatsVerb {
    /// Zero all counters.
    Clear,
}

#[derive(Subcommand, Debug)]
enum ConfigVerb {
    /// Print the configuration (the TOML format xvsd starts from).
    Export,
    /// Replace the whole configuration with a TOML file.
    Import {
        /// The file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xvsctl: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

/// A connection to xvsd.
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(path: &PathBuf) -> anyhow::Result<Client> {
        let s = UnixStream::connect(path)
            .map_err(|e| anyhow::anyhow!("cannot connect to xvsd at {}: {e}", path.display()))?;
        Ok(Client { reader: BufReader::new(s.try_clone()?), writer: s })
    }

    fn call(&mut self, cmd: &Cmd) -> anyhow::Result<Reply> {
        let mut line = serde_json::to_vec(&Request { version: VERSION, cmd: cmd.clone() })?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut resp = String::new();
        self.reader.read_line(&mut resp)?;
        let r: Response = serde_json::from_str(&resp).map_err(|e| anyhow::anyhow!("bad reply from xvsd: {e}"))?;
        Ok(r.into_reply(cmd)?)
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cmd = match cli.noun {
        Noun::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "xvsctl", &mut std::io::stdout());
            return Ok(());
        }
        Noun::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(());
        }
        Noun::Status => Cmd::Status {},
        Noun::Tenant { verb } => match verb {
            TenantVerb::Add { name, vni, mac_limit, guarantee, limit, weight } => {
                Cmd::TenantAdd { name, vni, mac_limit, guarantee, limit, weight }
            }
            TenantVerb::Set { name, guarantee, limit, weight } => Cmd::TenantSet { name, guarantee, limit, weight },
            TenantVerb::Del { name } => Cmd::TenantDel { name },
            TenantVerb::List => Cmd::TenantList {},
            TenantVerb::Show { name } => Cmd::TenantShow { name },
        },
        Noun::Port { verb } => match verb {
            PortVerb::Add { interface, tenant, mac, ips, police_rate, police_burst } => {
                Cmd::PortAdd { interface, tenant, mac, ips, police_rate, police_burst }
            }
            PortVerb::Del { interface } => Cmd::PortDel { interface },
            PortVerb::List => Cmd::PortList {},
            PortVerb::Show { interface } => Cmd::PortShow { interface },
        },
        Noun::Vtep { verb } => match verb {
            VtepVerb::Add { tenant, ip } => Cmd::VtepAdd { tenant, ip },
            VtepVerb::Del { tenant, ip } => Cmd::VtepDel { tenant, ip },
            VtepVerb::List { tenant } => Cmd::VtepList { tenant },
        },
        Noun::Fdb { verb } => match verb {
            FdbVerb::Add { tenant, pairs, file } => {
                let mut words = pairs;
                if let Some(f) = file {
                    let text = std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                    words.extend(text.split_whitespace().map(str::to_string));
                }
                if words.is_empty() || words.len() % 2 != 0 {
                    anyhow::bail!("fdb add needs MAC VTEP pairs (got {} words)", words.len());
                }
                let entries = words.chunks(2).map(|p| FdbEntry { mac: p[0].clone(), vtep: p[1].clone() }).collect();
                Cmd::FdbAdd { tenant, entries }
            }
            FdbVerb::Del { tenant, macs } => Cmd::FdbDel { tenant, macs },
            FdbVerb::Show { tenant } => Cmd::FdbShow { tenant },
        },
        Noun::Stats { watch, verb } => match verb {
            Some(StatsVerb::Clear) => Cmd::StatsClear {},
            None => {
                if let Some(secs) = watch {
                    anyhow::ensure!(secs > 0.0 && secs.is_finite(), "--watch needs a positive number of seconds");
                    let mut c = Client::connect(&cli.socket)?;
                    loop {
                        let v = c.call(&Cmd::Stats {})?;
                        print!("\x1b[H\x1b[2J");
                        if cli.json {
                            println!("{}", serde_json::to_string_pretty(&v)?)
                        } else if let Reply::Stats(s) = &v {
                            print_stats(s.as_deref())
                        }
                        std::io::stdout().flush()?;
                        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
                    }
                }
                Cmd::Stats {}
            }
        },
        Noun::Trace { port, hex, udp, arp } => {
            let field = |s: &str| s.trim().to_string();
            let udp = match udp {
                Some(u) => {
                    let f: Vec<&str> = u.split(',').collect();
                    anyhow::ensure!(f.len() == 4, "--udp needs SRC_MAC,DST_MAC,SRC_IP,DST_IP (got {u:?})");
                    Some(UdpProbe {
                        src_mac: field(f[0]),
                        dst_mac: field(f[1]),
                        src_ip: field(f[2]),
                        dst_ip: field(f[3]),
                    })
                }
                None => None,
            };
            let arp = match arp {
                Some(a) => {
                    let f: Vec<&str> = a.split(',').collect();
                    anyhow::ensure!(f.len() == 3, "--arp needs SRC_MAC,SRC_IP,TARGET_IP (got {a:?})");
                    Some(ArpProbe { src_mac: field(f[0]), src_ip: field(f[1]), target_ip: field(f[2]) })
                }
                None => None,
            };
            anyhow::ensure!(
                hex.is_some() || udp.is_some() || arp.is_some(),
                "trace needs a frame: --hex, --udp or --arp"
            );
            Cmd::Trace { port, frame_hex: hex, udp, arp }
        }
        Noun::Capture { port, tenant, count, duration, snaplen, write } => {
            let duration_ms = match duration {
                Some(d) if d > 0.0 && d.is_finite() && d < 1e9 => Some((d * 1000.0).ceil() as u64),
                Some(d) => anyhow::bail!("--duration needs a positive number of seconds (got {d})"),
                None => None,
            };
            let cmd = Cmd::Capture { port, tenant, count, duration_ms, snaplen };
            let mut c = Client::connect(&cli.socket)?;
            let Reply::Capture(started) = c.call(&cmd)? else { anyhow::bail!("bad reply from xvsd to capture") };
            let sink = match (&write, cli.json) {
                (Some(f), _) => capture::Sink::File(f),
                (None, true) => capture::Sink::Json,
                (None, false) => capture::Sink::Lines,
            };
            return capture::run(&started, c.reader, sink);
        }
        Noun::Qos { verb: QosVerb::Show } => Cmd::QosShow {},
        Noun::Config { verb } => match verb {
            ConfigVerb::Export => Cmd::ConfigExport {},
            ConfigVerb::Import { file } => Cmd::ConfigImport {
                toml: std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
            },
        },
    };
    let v = Client::connect(&cli.socket)?.call(&cmd)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_human(&v);
    Ok(())
}

/// Prints rows as a left-aligned table.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{:<width$}", c, width = w[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// An optional value, `-` when absent.
fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

/// A reply enum's wire name (`attached`, `af_xdp`, ...).
fn name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn print_counters(c: &Option<Counters>) {
    let Some(c) = c else {
        println!("{:<11} none yet", "counters:");
        return;
    };
    println!(
        "{:<11} rx {} pkts {} bytes, tx {} pkts {} bytes, {} dropped",
        "counters:",
        c.rx_packets,
        c.rx_bytes,
        c.tx_packets,
        c.tx_bytes,
        c.dropped()
    );
    println!(
        "{:<11} rx {} pkts, tx {} pkts by the XDP fast path; the rest by the forwarding cores",
        "", c.fast_rx_packets, c.fast_tx_packets
    );
    for (r, n) in &c.drops {
        println!("{:<11}   {r}: {n}", "");
    }
}

fn port_cells(p: &PortStatus) -> [String; 6] {
    [
        p.name.clone(),
        name(&p.kind),
        opt(&p.tenant),
        name(&p.state),
        p.io.as_ref().map_or_else(|| "-".into(), name),
        p.xdp_mode.as_ref().map_or_else(|| "-".into(), name),
    ]
}

fn print_human(v: &Reply) {
    match v {
        Reply::Status(st) => {
            println!("{:<13} {}", "version:", st.version);
            println!("{:<13} {}", "protocol:", st.protocol);
            println!("{:<13} {}", "uplink:", st.uplink);
            println!("{:<13} {}", "vtep_ip:", st.vtep_ip);
            println!("{:<13} {}", "underlay_mtu:", st.underlay_mtu);
            let cores: Vec<String> = st.cores.iter().map(usize::to_string).collect();
            println!("{:<13} {}", "cores:", if cores.is_empty() { "-".into() } else { cores.join(",") });
            println!(
                "{:<13} {}",
                "config:",
                st.config.as_ref().map_or_else(|| "-".into(), |c| c.display().to_string())
            );
            println!("{:<13} {}", "state:", st.state);
            println!("{:<13} {}", "tenants:", st.tenants);
            println!("{:<13} {:.0}s", "uptime:", st.uptime_secs);
            let rows: Vec<Vec<String>> = st
                .ports
                .iter()
                .map(|p| {
                    let mut r = port_cells(p).to_vec();
                    r.push(p.afxdp_mode.iter().map(name).collect::<Vec<_>>().join(","));
                    r
                })
                .collect();
            println!();
            table(&["port", "kind", "tenant", "state", "io", "program", "af_xdp"], &rows);
        }
        Reply::Tenants(ts) => {
            let rows: Vec<Vec<String>> = ts
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.vni.to_string(),
                        t.mac_limit.to_string(),
                        t.ports.join(","),
                        t.vteps.join(","),
                    ]
                })
                .collect();
            table(&["name", "vni", "mac_limit", "ports", "vteps"], &rows);
        }
        Reply::Ports(ps) => {
            let rows: Vec<Vec<String>> = ps
                .iter()
                .map(|p| {
                    let s = &p.status;
                    let [port, kind, tenant, state, io, _] = port_cells(s);
                    let mac = opt(&s.mac);
                    vec![port, kind, tenant, mac, s.ips.join(","), state, io, format!("{}/{}", s.lost, s.reattached)]
                })
                .collect();
            table(&["port", "kind", "tenant", "mac", "ips", "state", "io", "lost/back"], &rows);
        }
        Reply::Vteps(vs) => {
            let rows: Vec<Vec<String>> =
                vs.iter().map(|r| vec![r.tenant.clone(), r.vni.to_string(), r.vtep.clone()]).collect();
            table(&["tenant", "vni", "vtep"], &rows);
        }
        Reply::Fdb(rows) => {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| vec![r.tenant.clone(), r.mac.clone(), r.dest.clone(), r.origin.clone(), opt(&r.age_secs)])
                .collect();
            table(&["tenant", "mac", "dest", "origin", "age_s"], &rows);
        }
        Reply::Tenant(t) => {
            println!("{:<11} {}", "name:", t.name);
            println!("{:<11} {}", "vni:", t.vni);
            println!("{:<11} {}", "mac_limit:", t.mac_limit);
            println!("{:<11} {}", "ports:", t.ports.join(","));
            println!("{:<11} {}", "vteps:", t.vteps.join(","));
            println!("{:<11} {}", "static_fdb:", t.static_fdb);
            print_counters(&t.counters);
        }
        Reply::Port(p) => {
            let s = &p.status;
            let [port, kind, tenant, state, io, program] = port_cells(s);
            for (k, v) in [("name", port), ("kind", kind), ("tenant", tenant), ("mac", opt(&s.mac))] {
                println!("{:<11} {v}", format!("{k}:"));
            }
            println!("{:<11} {}", "ips:", s.ips.join(","));
            for (k, v) in [("state", state), ("io", io), ("program", program)] {
                println!("{:<11} {v}", format!("{k}:"));
            }
            println!("{:<11} {}", "af_xdp:", s.afxdp_mode.iter().map(name).collect::<Vec<_>>().join(","));
            println!("{:<11} {}", "lost:", s.lost);
            println!("{:<11} {}", "reattached:", s.reattached);
            print_counters(&p.counters);
        }
        Reply::Stats(s) => print_stats(s.as_deref()),
        Reply::Qos(q) => {
            match q.link_bps {
                Some(l) => println!("uplink rate: {}", rate_str(l)),
                None => println!("uplink rate: not set (no QoS scheduling)"),
            }
            let rate = |r: Option<u64>| r.map_or("-".into(), rate_str);
            let rows: Vec<Vec<String>> = q
                .tenants
                .iter()
                .map(|t| {
                    vec![
                        t.tenant.clone(),
                        t.vni.to_string(),
                        if t.guarantee_bps == 0 { "-".into() } else { rate_str(t.guarantee_bps) },
                        rate(t.limit_bps),
                        t.weight.to_string(),
                        rate(t.rate_bps),
                        opt(&t.backlog),
                        opt(&t.drops),
                    ]
                })
                .collect();
            table(&["tenant", "vni", "guarantee", "limit", "weight", "rate", "backlog", "drops"], &rows);
            if !q.per_core.is_empty() {
                // several cores share the uplink: each one's part, following its demand
                println!();
                let parts: Vec<String> =
                    q.per_core.iter().map(|(cpu, l)| format!("cpu {cpu} {}", rate_str(*l))).collect();
                println!("per core (the link's parts: {})", parts.join(", "));
                let rows: Vec<Vec<String>> = q
                    .tenants
                    .iter()
                    .flat_map(|t| {
                        t.per_core.iter().map(|c| {
                            vec![
                                t.tenant.clone(),
                                c.cpu.to_string(),
                                if c.guarantee_bps == 0 { "-".into() } else { rate_str(c.guarantee_bps) },
                                rate(c.limit_bps),
                                rate_str(c.rate_bps),
                                c.backlog.to_string(),
                            ]
                        })
                    })
                    .collect();
                table(&["tenant", "cpu", "guarantee", "limit", "rate", "backlog"], &rows);
            }
        }
        Reply::Trace(t) => {
            for st in &t.steps {
                println!("  {st}");
            }
            println!("action: {}", t.action);
        }
        Reply::Config(c) => {
            print!("{}", c.toml);
            if !c.toml.ends_with('\n') {
                println!();
            }
        }
        Reply::FdbApplied(a) => println!("applied (live in the core after {} µs)", a.live_us),
        Reply::Done(Done::Applied) => println!("applied"),
        Reply::Done(Done::Cleared) => println!("cleared"),
        Reply::Capture(c) => println!("capturing on {}", c.port),
    }
}

fn rate_str(bps: u64) -> String {
    match bps {
        b if b >= 1_000_000_000 => format!("{:.2}G", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1}M", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1}k", b as f64 / 1e3),
        b => format!("{b}"),
    }
}

fn print_stats(v: Option<&Snapshot>) {
    let Some(v) = v else {
        println!("no counters yet");
        return;
    };
    let mut rows = Vec::new();
    let mut drop_rows = Vec::new();
    for (p, c) in v.ports.iter().zip(&v.stats.ports) {
        let Some(p) = p else { continue };
        rows.push(vec![
            p.name.clone(),
            opt(&p.tenant),
            c.rx_packets.to_string(),
            c.rx_bytes.to_string(),
            c.tx_packets.to_string(),
            c.tx_bytes.to_string(),
            c.fast_rx_packets.to_string(),
            c.fast_tx_packets.to_string(),
            c.dropped().to_string(),
        ]);
        for (r, n) in &c.drops {
            drop_rows.push(vec![format!("port {}", p.name), r.clone(), n.to_string()]);
        }
    }
    table(&["port", "tenant", "rx_pkts", "rx_bytes", "tx_pkts", "tx_bytes", "fast_rx", "fast_tx", "drops"], &rows);
    println!();
    let rows: Vec<Vec<String>> = v
        .tenants
        .iter()
        .zip(&v.stats.tenants)
        .filter_map(|(t, c)| t.as_ref().map(|t| (t, c)))
        .map(|((name, vni), c)| {
            vec![
                name.clone(),
                vni.to_string(),
                c.rx_packets.to_string(),
                c.tx_packets.to_string(),
                c.dropped().to_string(),
            ]
        })
        .collect();
    table(&["tenant", "vni", "rx_pkts", "tx_pkts", "drops"], &rows);
    if !drop_rows.is_empty() {
        println!();
        table(&["where", "reason", "count"], &drop_rows);
    }
    let core = &v.core;
    println!();
    println!(
        "core cpu {}: {} frames, {:.0} ns busy per frame, busy {:.1}% of the time",
        core.cpu,
        core.packets,
        core.ns_per_packet,
        core.busy_share * 100.0
    );
    if v.per_core.len() > 1 {
        for c in &v.per_core {
            let share = if c.qos_link_bps > 0 {
                format!(", uplink part {} ({} tenant rates moved)", rate_str(c.qos_link_bps), c.qos_share_changes)
            } else {
                String::new()
            };
            println!("  cpu {}: {} frames, busy {:.1}% of the time{share}", c.cpu, c.packets, c.busy_share * 100.0);
        }
    }
    let e = &v.stats.events;
    println!(
        "events: flooded {}, arp suppressed {}, fdb learned {}, moved {}, limit hit {}, to host {}",
        e.flooded, e.arp_suppressed, e.fdb_learned, e.fdb_moved, e.fdb_full, e.to_host
    );
    println!(
        "offloads for VMs: checksums completed {}, TCP super-frames segmented {} (into {}), segments coalesced {} (into {}), ICMP too big sent {}",
        e.csum_completed, e.tso_frames, e.tso_segments, e.coalesced_segments, e.coalesced_frames, e.icmp_too_big
    );
}
