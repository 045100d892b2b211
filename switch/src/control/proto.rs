//! The control protocol, version 1: one JSON object per line over a Unix stream socket, one
//! response line per request. Documented in docs/control-protocol.md.

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
    Trace {
        /// Ingress interface.
        port: String,
        /// The frame, as hex.
        frame_hex: String,
    },
    /// The whole configuration as TOML (the format xvsd starts from).
    ConfigExport {},
    /// Replace the whole configuration.
    ConfigImport {
        /// TOML text.
        toml: String,
    },
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub version: u32,
    /// Whether the request was applied.
    pub ok: bool,
    /// The result, when ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// One line naming what was wrong, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Command {
    /// The command's `op`, as it is written on the wire (for logs and errors).
    pub fn name(&self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v["op"].as_str().map(str::to_string)).unwrap_or_default()
    }
}

impl Response {
    /// Success.
    pub fn ok(result: Value) -> Response {
        Response { version: VERSION, ok: true, result: Some(result), error: None }
    }

    /// Failure.
    pub fn err(e: impl Into<String>) -> Response {
        Response { version: VERSION, ok: false, result: None, error: Some(e.into()) }
    }
}

/// Parses one request line; the error is the reply to send.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("request too large ({} bytes, at most {MAX_REQUEST})", line.len()));
    }
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    let mut v: Value = serde_json::from_str(text).map_err(|e| format!("malformed request: {e}"))?;
    let obj = v.as_object_mut().ok_or_else(|| "malformed request: not a JSON object".to_string())?;
    match obj.remove("version").as_ref().and_then(Value::as_u64) {
        Some(n) if n == u64::from(VERSION) => {}
        Some(n) => return Err(format!("unsupported protocol version {n} (this xvsd speaks {VERSION})")),
        None => return Err("request lacks a numeric \"version\"".into()),
    }
    let cmd: Command = serde_json::from_value(v).map_err(|e| format!("invalid request: {e}"))?;
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
        assert!(parse_request(br#"{"version":1,"op":"tenant_add","name":"a""#).unwrap_err().starts_with("malformed"));
        assert!(
            parse_request(br#"{"version":1,"op":"tenant_add","name":5,"vni":5}"#).unwrap_err().starts_with("invalid")
        );
        assert!(parse_request(br#"{"version":2,"op":"status"}"#).unwrap_err().contains("version 2"));
        assert!(parse_request(br#"{"op":"status"}"#).unwrap_err().contains("version"));
        assert!(parse_request(br#"{"version":1,"op":"fly"}"#).unwrap_err().starts_with("invalid"));
        assert!(parse_request(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
        assert!(parse_request(b"[1,2]").unwrap_err().contains("not a JSON object"));
        assert!(parse_request(br#"{"version":1,"op":"status","extra":1}"#).unwrap_err().contains("unknown field"));
        let huge = vec![b' '; MAX_REQUEST + 1];
        assert!(parse_request(&huge).unwrap_err().contains("too large"));
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
