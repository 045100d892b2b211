//! xvsctl: the command line of xvs. Talks to xvsd over its control socket; nouns then verbs,
//! `--json` on every command, exit status 0 on success and 1 with a one-line error otherwise.

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use xvs_switch::control::proto::{Command as Cmd, DEFAULT_SOCKET, FdbEntry, Request, Response, VERSION};

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
    /// Configured and measured rate, backlog and drops per tenant.
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

    fn call(&mut self, cmd: Cmd) -> anyhow::Result<Value> {
        let mut line = serde_json::to_vec(&Request { version: VERSION, cmd })?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut resp = String::new();
        self.reader.read_line(&mut resp)?;
        let r: Response = serde_json::from_str(&resp).map_err(|e| anyhow::anyhow!("bad reply from xvsd: {e}"))?;
        if r.ok {
            Ok(r.result.unwrap_or(Value::Null))
        } else {
            anyhow::bail!(r.error.unwrap_or_else(|| "failed".into()))
        }
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
                        let v = c.call(Cmd::Stats {})?;
                        print!("\x1b[H\x1b[2J");
                        if cli.json {
                            println!("{}", serde_json::to_string_pretty(&v)?)
                        } else {
                            print_stats(&v)
                        }
                        std::io::stdout().flush()?;
                        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
                    }
                }
                Cmd::Stats {}
            }
        },
        Noun::Trace { port, hex, udp, arp } => {
            let frame = if let Some(h) = hex {
                h
            } else if let Some(u) = udp {
                let f: Vec<&str> = u.split(',').collect();
                anyhow::ensure!(f.len() == 4, "--udp needs SRC_MAC,DST_MAC,SRC_IP,DST_IP");
                to_hex(&xvs_switch::frames::udp4_min(mac(f[0])?, mac(f[1])?, ip(f[2])?, ip(f[3])?))
            } else if let Some(a) = arp {
                let f: Vec<&str> = a.split(',').collect();
                anyhow::ensure!(f.len() == 3, "--arp needs SRC_MAC,SRC_IP,TARGET_IP");
                to_hex(&xvs_switch::frames::arp_request(mac(f[0])?, ip(f[1])?, ip(f[2])?))
            } else {
                anyhow::bail!("trace needs a frame: --hex, --udp or --arp");
            };
            Cmd::Trace { port, frame_hex: frame }
        }
        Noun::Qos { verb: QosVerb::Show } => Cmd::QosShow {},
        Noun::Config { verb } => match verb {
            ConfigVerb::Export => Cmd::ConfigExport {},
            ConfigVerb::Import { file } => Cmd::ConfigImport {
                toml: std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
            },
        },
    };
    let shown = cmd.clone();
    let v = Client::connect(&cli.socket)?.call(cmd)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_human(&shown, &v);
    Ok(())
}

fn mac(s: &str) -> anyhow::Result<xvs_switch::wire::MacAddr> {
    Ok(xvs_switch::types::parse_mac(s.trim())?)
}

fn ip(s: &str) -> anyhow::Result<std::net::Ipv4Addr> {
    s.trim().parse().map_err(|_| anyhow::anyhow!("malformed IPv4 address {s:?}"))
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
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

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn drops_total(c: &Value) -> u64 {
    c["drops"].as_object().map_or(0, |m| m.values().map(n).sum())
}

fn print_human(cmd: &Cmd, v: &Value) {
    match cmd {
        Cmd::Status {} => {
            for k in ["version", "protocol", "uplink", "vtep_ip", "underlay_mtu", "cores", "config", "state", "tenants"]
            {
                println!("{:<13} {}", format!("{k}:"), s(&v[k]));
            }
            println!("{:<13} {:.0}s", "uptime:", v["uptime_secs"].as_f64().unwrap_or(0.0));
            let rows: Vec<Vec<String>> = v["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        s(&p["name"]),
                        s(&p["kind"]),
                        s(&p["tenant"]),
                        s(&p["state"]),
                        s(&p["io"]),
                        s(&p["xdp_mode"]),
                        s(&p["afxdp_mode"]),
                    ]
                })
                .collect();
            println!();
            table(&["port", "kind", "tenant", "state", "io", "program", "af_xdp"], &rows);
        }
        Cmd::TenantList {} => {
            let rows: Vec<Vec<String>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| vec![s(&t["name"]), s(&t["vni"]), s(&t["mac_limit"]), s(&t["ports"]), s(&t["vteps"])])
                .collect();
            table(&["name", "vni", "mac_limit", "ports", "vteps"], &rows);
        }
        Cmd::PortList {} => {
            let rows: Vec<Vec<String>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        s(&p["name"]),
                        s(&p["kind"]),
                        s(&p["tenant"]),
                        s(&p["mac"]),
                        s(&p["ips"]),
                        s(&p["state"]),
                        s(&p["io"]),
                        format!("{}/{}", s(&p["lost"]), s(&p["reattached"])),
                    ]
                })
                .collect();
            table(&["port", "kind", "tenant", "mac", "ips", "state", "io", "lost/back"], &rows);
        }
        Cmd::VtepList { .. } => {
            let rows: Vec<Vec<String>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| vec![s(&r["tenant"]), s(&r["vni"]), s(&r["vtep"])])
                .collect();
            table(&["tenant", "vni", "vtep"], &rows);
        }
        Cmd::FdbShow { .. } => {
            let rows: Vec<Vec<String>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| vec![s(&r["tenant"]), s(&r["mac"]), s(&r["dest"]), s(&r["origin"]), s(&r["age_secs"])])
                .collect();
            table(&["tenant", "mac", "dest", "origin", "age_s"], &rows);
        }
        Cmd::TenantShow { .. } | Cmd::PortShow { .. } => {
            for (k, val) in v.as_object().into_iter().flatten() {
                if k == "counters" {
                    continue;
                }
                println!("{:<11} {}", format!("{k}:"), s(val));
            }
            let c = &v["counters"];
            println!(
                "{:<11} rx {} pkts {} bytes, tx {} pkts {} bytes, {} dropped",
                "counters:",
                n(&c["rx_packets"]),
                n(&c["rx_bytes"]),
                n(&c["tx_packets"]),
                n(&c["tx_bytes"]),
                drops_total(c)
            );
            for (r, cnt) in c["drops"].as_object().into_iter().flatten() {
                println!("{:<11}   {r}: {}", "", n(cnt));
            }
        }
        Cmd::Stats {} => print_stats(v),
        Cmd::QosShow {} => {
            match v["link_bps"].as_u64() {
                Some(l) => println!("uplink rate: {}", rate_str(l)),
                None => println!("uplink rate: not set (no QoS scheduling)"),
            }
            let rows: Vec<Vec<String>> = v["tenants"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    vec![
                        s(&t["tenant"]),
                        s(&t["vni"]),
                        t["guarantee_bps"].as_u64().map_or("-".into(), rate_str),
                        t["limit_bps"].as_u64().map_or("-".into(), rate_str),
                        s(&t["weight"]),
                        t["rate_bps"].as_u64().map_or("-".into(), rate_str),
                        s(&t["backlog"]),
                        s(&t["drops"]),
                    ]
                })
                .collect();
            table(&["tenant", "vni", "guarantee", "limit", "weight", "rate", "backlog", "drops"], &rows);
        }
        Cmd::Trace { .. } => {
            for st in v["steps"].as_array().into_iter().flatten() {
                println!("  {}", s(st));
            }
            println!("action: {}", s(&v["action"]));
        }
        Cmd::ConfigExport {} => {
            let t = s(&v["toml"]);
            print!("{t}");
            if !t.ends_with('\n') {
                println!();
            }
        }
        _ => match v.get("live_us") {
            Some(us) => println!("applied (live in the core after {} µs)", s(us)),
            None => println!("{}", s(v)),
        },
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

fn print_stats(v: &Value) {
    if v.is_null() {
        println!("no counters yet");
        return;
    }
    let ports = v["ports"].as_array().cloned().unwrap_or_default();
    let counters = v["stats"]["ports"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    let mut drop_rows = Vec::new();
    for (p, c) in ports.iter().zip(&counters) {
        if p.is_null() {
            continue;
        }
        rows.push(vec![
            s(&p["name"]),
            s(&p["tenant"]),
            n(&c["rx_packets"]).to_string(),
            n(&c["rx_bytes"]).to_string(),
            n(&c["tx_packets"]).to_string(),
            n(&c["tx_bytes"]).to_string(),
            drops_total(c).to_string(),
        ]);
        for (r, cnt) in c["drops"].as_object().into_iter().flatten() {
            drop_rows.push(vec![format!("port {}", s(&p["name"])), r.clone(), n(cnt).to_string()]);
        }
    }
    table(&["port", "tenant", "rx_pkts", "rx_bytes", "tx_pkts", "tx_bytes", "drops"], &rows);
    println!();
    let tenants = v["tenants"].as_array().cloned().unwrap_or_default();
    let tc = v["stats"]["tenants"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .zip(&tc)
        .filter(|(t, _)| !t.is_null())
        .map(|(t, c)| {
            vec![
                s(&t[0]),
                s(&t[1]),
                n(&c["rx_packets"]).to_string(),
                n(&c["tx_packets"]).to_string(),
                drops_total(c).to_string(),
            ]
        })
        .collect();
    table(&["tenant", "vni", "rx_pkts", "tx_pkts", "drops"], &rows);
    if !drop_rows.is_empty() {
        println!();
        table(&["where", "reason", "count"], &drop_rows);
    }
    let core = &v["core"];
    println!();
    println!(
        "core cpu {}: {} frames, {:.0} ns busy per frame, busy {:.1}% of the time",
        s(&core["cpu"]),
        n(&core["packets"]),
        core["ns_per_packet"].as_f64().unwrap_or(0.0),
        core["busy_share"].as_f64().unwrap_or(0.0) * 100.0
    );
    let e = &v["stats"]["events"];
    println!(
        "events: flooded {}, arp suppressed {}, fdb learned {}, moved {}, limit hit {}, to host {}",
        n(&e["flooded"]),
        n(&e["arp_suppressed"]),
        n(&e["fdb_learned"]),
        n(&e["fdb_moved"]),
        n(&e["fdb_full"]),
        n(&e["to_host"])
    );
    println!(
        "offloads for VMs: checksums completed {}, TCP super-frames segmented {} (into {}), segments coalesced {} (into {}), ICMP too big sent {}",
        n(&e["csum_completed"]),
        n(&e["tso_frames"]),
        n(&e["tso_segments"]),
        n(&e["coalesced_segments"]),
        n(&e["coalesced_frames"]),
        n(&e["icmp_too_big"])
    );
}
