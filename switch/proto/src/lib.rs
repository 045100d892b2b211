//! The control protocol of xvsd, version 1: one JSON object per line over a Unix stream
//! socket, one response line per request. Requests, replies and errors are the Rust types
//! here; xvsd, xvsctl and the tests all use them, so a renamed field breaks the build, not a
//! user. Documented in docs/control-protocol.md.
//!
//! May depend on: serde, serde_json. Nothing of the switch: `cargo build -p xvsctl` needs
//! neither the XDP toolchain nor libxdp.

pub mod reply;

pub use reply::Reply;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Protocol version spoken by this build.
pub const VERSION: u32 = 1;
/// Largest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 4 << 20;
/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/xvs/xvsd.sock";

/// A request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Must be [`VERSION`].
    pub version: u32,
    /// What to do.
    #[serde(flatten)]
    pub cmd: Command,
}

/// A static FDB entry in a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbEntry {
    /// The MAC.
    pub mac: String,
    /// The remote VTEP it sits behind.
    pub vtep: String,
}

/// Every command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Version, uptime, uplink, sockets and their modes, cores, config and state.
    Status {},
    /// Add a tenant.
    TenantAdd {
        /// Name.
        name: String,
        /// VNI.
        vni: i64,
        /// MAC limit (default 4096).
        #[serde(default)]
        mac_limit: Option<u32>,
        /// Guaranteed rate on the uplink (`700M`).
        #[serde(default)]
        guarantee: Option<String>,
        /// Maximum rate on the uplink (`2G`).
        #[serde(default)]
        limit: Option<String>,
        /// Share of the excess, 1..=1000.
        #[serde(default)]
        weight: Option<u32>,
    },
    /// Change a tenant's QoS (fields left out keep their value; `"none"` clears one).
    TenantSet {
        /// Name.
        name: String,
        /// Guaranteed rate.
        #[serde(default)]
        guarantee: Option<String>,
        /// Maximum rate.
        #[serde(default)]
        limit: Option<String>,
        /// Share of the excess.
        #[serde(default)]
        weight: Option<u32>,
    },
    /// Configured and measured rate, backlog and drops per tenant on the uplink.
    QosShow {},
    /// Remove a tenant (it must have no ports).
    TenantDel {
        /// Name.
        name: String,
    },
    /// All tenants.
    TenantList {},
    /// One tenant with its ports, VTEPs and counters.
    TenantShow {
        /// Name.
        name: String,
    },
    /// Add a VM port.
    PortAdd {
        /// Interface (tap or veth).
        interface: String,
        /// Tenant.
        tenant: String,
        /// The VM's MAC.
        mac: String,
        /// The VM's IPs.
        #[serde(default)]
        ips: Vec<String>,
        /// Policer rate on what the VM sends (`100M`).
        #[serde(default)]
        police_rate: Option<String>,
        /// Policer burst in bytes (`64k`).
        #[serde(default)]
        police_burst: Option<String>,
    },
    /// Remove a VM port.
    PortDel {
        /// Interface.
        interface: String,
    },
    /// All ports.
    PortList {},
    /// One port with its counters.
    PortShow {
        /// Interface.
        interface: String,
    },
    /// Add a remote VTEP to a tenant.
    VtepAdd {
        /// Tenant.
        tenant: String,
        /// The VTEP's IPv4 address.
        ip: String,
    },
    /// Remove a remote VTEP from a tenant (no static FDB entry may point at it).
    VtepDel {
        /// Tenant.
        tenant: String,
        /// Address.
        ip: String,
    },
    /// Remote VTEPs, of one tenant or all.
    VtepList {
        /// Tenant, or all.
        #[serde(default)]
        tenant: Option<String>,
    },
    /// Add static FDB entries.
    FdbAdd {
        /// Tenant.
        tenant: String,
        /// Entries.
        entries: Vec<FdbEntry>,
    },
    /// Remove static FDB entries.
    FdbDel {
        /// Tenant.
        tenant: String,
        /// MACs.
        macs: Vec<String>,
    },
    /// Static and learned FDB entries, with origin and age.
    FdbShow {
        /// Tenant, or all.
        #[serde(default)]
        tenant: Option<String>,
    },
    /// Counters per port, tenant and core.
    Stats {},
    /// Zero the counters.
    StatsClear {},
    /// Run a frame through the pipeline as if it arrived on a port, without sending it.
    /// Exactly one of `frame_hex`, `udp` and `arp` gives the frame.
    Trace {
        /// Ingress interface.
        port: String,
        /// The frame, as hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame_hex: Option<String>,
        /// A minimal UDP/IPv4 frame that xvsd builds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        udp: Option<UdpProbe>,
        /// An ARP request that xvsd builds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arp: Option<ArpProbe>,
    },
    /// Capture what a port receives and sends. The reply (a [`reply::CaptureStarted`]) is
    /// followed on the same connection by a pcapng stream (one interface, the port; each
    /// packet with its direction in `epb_flags` and xvs's decision as its comment), which
    /// ends with an interface statistics block (`ifdrop`: frames the capture missed) when
    /// `count` packets were written or `duration_ms` passed; a client may also just close.
    Capture {
        /// The port's interface.
        port: String,
        /// Only this tenant's frames (on the uplink: by VNI).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
        /// Stop after this many packets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
        /// Stop after this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
        /// Bytes kept of each frame (default and most: 4096, a whole frame).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snaplen: Option<u32>,
    },
    /// The whole configuration as TOML (the format xvsd starts from).
    ConfigExport {},
    /// Replace the whole configuration.
    ConfigImport {
        /// TOML text.
        toml: String,
    },
}

/// A UDP/IPv4 frame to trace: 60 bytes, from `src_mac`/`src_ip` to `dst_mac`/`dst_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpProbe {
    /// Source MAC.
    pub src_mac: String,
    /// Destination MAC.
    pub dst_mac: String,
    /// Source IPv4 address.
    pub src_ip: String,
    /// Destination IPv4 address.
    pub dst_ip: String,
}

/// An ARP request to trace: `src_mac`/`src_ip` asking for `target_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArpProbe {
    /// Sender MAC.
    pub src_mac: String,
    /// Sender IPv4 address.
    pub src_ip: String,
    /// The address asked for.
    pub target_ip: String,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be read: not JSON, unknown op or field, wrong version, too large.
    Malformed,
    /// The request was understood and refused (a bad value, a conflict); nothing changed.
    Refused,
    /// A step of carrying it out failed (the store, a port, a core that did not answer); the
    /// message says what stands.
    Failed,
    /// xvsd has no room for the connection now; try again.
    Busy,
    /// A bug in xvsd; the request was not applied.
    Internal,
}

/// A failed request: what kind of failure, and one line naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Kind.
    pub kind: ErrorKind,
    /// Message, naming the bad value.
    pub message: String,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into() }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A response. xvsd sends `Response<Reply>`; a client reads `Response` (the result as JSON)
/// and turns it into its command's reply type with [`Command::reply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response<R = Value> {
    /// Protocol version.
    pub version: u32,
    /// Whether the request was applied.
    pub ok: bool,
    /// The result, when ok.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub result: Option<R>,
    /// One line naming what was wrong, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of failure, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

fn none<R>() -> Option<R> {
    None
}

impl Command {
    /// The command's `op`, as it is written on the wire (for logs and errors).
    pub fn name(&self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v["op"].as_str().map(str::to_string)).unwrap_or_default()
    }

    /// This command's reply, from the `result` of its response.
    pub fn reply(&self, result: Value) -> Result<Reply, serde_json::Error> {
        use Command as C;
        fn de<T: DeserializeOwned>(v: Value) -> Result<T, serde_json::Error> {
            serde_json::from_value(v)
        }
        Ok(match self {
            C::Status {} => Reply::Status(de(result)?),
            C::TenantList {} => Reply::Tenants(de(result)?),
            C::TenantShow { .. } => Reply::Tenant(de(result)?),
            C::PortList {} => Reply::Ports(de(result)?),
            C::PortShow { .. } => Reply::Port(de(result)?),
            C::VtepList { .. } => Reply::Vteps(de(result)?),
            C::FdbShow { .. } => Reply::Fdb(de(result)?),
            C::FdbAdd { .. } | C::FdbDel { .. } => Reply::FdbApplied(de(result)?),
            C::QosShow {} => Reply::Qos(de(result)?),
            C::Stats {} => Reply::Stats(de(result)?),
            C::Trace { .. } => Reply::Trace(de(result)?),
            C::Capture { .. } => Reply::Capture(de(result)?),
            C::ConfigExport {} => Reply::Config(de(result)?),
            C::TenantAdd { .. }
            | C::TenantSet { .. }
            | C::TenantDel { .. }
            | C::PortAdd { .. }
            | C::PortDel { .. }
            | C::VtepAdd { .. }
            | C::VtepDel { .. }
            | C::StatsClear {}
            | C::ConfigImport { .. } => Reply::Done(de(result)?),
        })
    }
}

impl<R> Response<R> {
    /// Success.
    pub fn ok(result: R) -> Response<R> {
        Response { version: VERSION, ok: true, result: Some(result), error: None, kind: None }
    }

    /// Failure.
    pub fn err(e: Error) -> Response<R> {
        Response { version: VERSION, ok: false, result: None, error: Some(e.message), kind: Some(e.kind) }
    }
}

impl Response {
    /// The reply to `cmd`, or the error xvsd answered (a reply that does not fit `cmd`'s
    /// type is a `Failed` error naming the mismatch).
    pub fn into_reply(self, cmd: &Command) -> Result<Reply, Error> {
        if !self.ok {
            let kind = self.kind.unwrap_or(ErrorKind::Failed);
            return Err(Error::new(kind, self.error.unwrap_or_else(|| "failed".into())));
        }
        cmd.reply(self.result.unwrap_or(Value::Null))
            .map_err(|e| Error::new(ErrorKind::Failed, format!("bad reply from xvsd to {}: {e}", cmd.name())))
    }
}

/// Parses one request line; the error (always `Malformed`) is the reply to send.
pub fn parse_request(line: &[u8]) -> Result<Request, Error> {
    let bad = |m: String| Error::new(ErrorKind::Malformed, m);
    if line.len() > MAX_REQUEST {
        return Err(bad(format!("request too large ({} bytes, at most {MAX_REQUEST})", line.len())));
    }
    let text = std::str::from_utf8(line).map_err(|_| bad("request is not UTF-8".to_string()))?;
    let mut v: Value = serde_json::from_str(text).map_err(|e| bad(format!("malformed request: {e}")))?;
    let obj = v.as_object_mut().ok_or_else(|| bad("malformed request: not a JSON object".to_string()))?;
    match obj.remove("version").as_ref().and_then(Value::as_u64) {
        Some(n) if n == u64::from(VERSION) => {}
        Some(n) => return Err(bad(format!("unsupported protocol version {n} (this xvsd speaks {VERSION})"))),
        None => return Err(bad("request lacks a numeric \"version\"".into())),
    }
    let cmd: Command = serde_json::from_value(v).map_err(|e| bad(format!("invalid request: {e}")))?;
    Ok(Request { version: VERSION, cmd })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let r = parse_request(br#"{"version":1,"op":"tenant_add","name":"a","vni":5}"#).unwrap();
        assert_eq!(
            r.cmd,
            Command::TenantAdd {
                name: "a".into(),
                vni: 5,
                mac_limit: None,
                guarantee: None,
                limit: None,
                weight: None
            }
        );
        let e = |line: &[u8]| {
            let e = parse_request(line).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Malformed);
            e.message
        };
        assert!(e(br#"{"version":1,"op":"tenant_add","name":"a""#).starts_with("malformed"));
        assert!(e(br#"{"version":1,"op":"tenant_add","name":5,"vni":5}"#).starts_with("invalid"));
        assert!(e(br#"{"version":2,"op":"status"}"#).contains("version 2"));
        assert!(e(br#"{"op":"status"}"#).contains("version"));
        assert!(e(br#"{"version":1,"op":"fly"}"#).starts_with("invalid"));
        assert!(e(&[0xff, 0xfe]).contains("UTF-8"));
        assert!(e(b"[1,2]").contains("not a JSON object"));
        assert!(e(br#"{"version":1,"op":"status","extra":1}"#).contains("unknown field"));
        assert!(e(br#"{"version":1,"op":"trace","port":"p","udp":{"src_mac":"x"}}"#).contains("missing field"));
        let huge = vec![b' '; MAX_REQUEST + 1];
        assert!(e(&huge).contains("too large"));
    }

    /// What xvsd sends, read back by a client through the command it sent.
    fn through_the_wire(cmd: &Command, r: Reply) -> Result<Reply, Error> {
        let line = serde_json::to_string(&Response::ok(r)).unwrap();
        serde_json::from_str::<Response>(&line).unwrap().into_reply(cmd)
    }

    #[test]
    fn replies_come_back_as_their_commands_types() {
        use reply::*;
        let done = Reply::Done(Done::Applied);
        assert_eq!(serde_json::to_string(&done).unwrap(), r#""applied""#);
        let del = Command::TenantDel { name: "x".into() };
        assert_eq!(through_the_wire(&del, done.clone()), Ok(done));
        let rows = Reply::Vteps(vec![VtepRow { tenant: "t".into(), vni: 5, vtep: "192.0.2.1".into() }]);
        let list = Command::VtepList { tenant: None };
        assert_eq!(through_the_wire(&list, rows.clone()), Ok(rows.clone()));
        let stats = Command::Stats {};
        assert_eq!(through_the_wire(&stats, Reply::Stats(None)), Ok(Reply::Stats(None)));
        let fdb = Reply::FdbApplied(FdbApplied { applied: true, live_us: 7 });
        let add = Command::FdbAdd { tenant: "t".into(), entries: vec![] };
        assert_eq!(through_the_wire(&add, fdb.clone()), Ok(fdb));
        // a reply that does not fit the command's type is an error naming the command
        let e = through_the_wire(&Command::Status {}, rows).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failed);
        assert!(e.message.starts_with("bad reply from xvsd to status"), "{e}");
        // errors keep their kind
        let line = serde_json::to_string(&Response::<Reply>::err(Error::new(ErrorKind::Refused, "no"))).unwrap();
        assert_eq!(line, r#"{"version":1,"ok":false,"error":"no","kind":"refused"}"#);
        let back = serde_json::from_str::<Response>(&line).unwrap().into_reply(&del).unwrap_err();
        assert_eq!(back, Error::new(ErrorKind::Refused, "no"));
    }

    #[test]
    fn round_trip() {
        let r = Request {
            version: 1,
            cmd: Command::FdbAdd { tenant: "t".into(), entries: vec![FdbEntry { mac: "m".into(), vtep: "v".into() }] },
        };
        let line = serde_json::to_vec(&r).unwrap();
        assert_eq!(parse_request(&line).unwrap(), r);
    }
}
