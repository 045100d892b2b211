//! What the pipeline targets share: the fuzzed switch, two tenants with overlapping
//! addresses (blue: ports b1 and b3, two VTEPs; red: port r1 with b1's MAC and IP).

/// The switch's configuration.
pub const CONFIG: &str = r#"
[uplink]
interface = "up0"
vtep_ip = "192.168.77.1/24"
mac = "02:00:00:00:ff:01"
mtu = 1600
[[tenant]]
name = "blue"
vni = 100
vteps = ["192.168.77.2", "192.168.77.3"]
arp = [{ ip = "10.0.0.2", mac = "02:00:00:00:00:02" }]
[[tenant]]
name = "red"
vni = 200
vteps = ["192.168.77.2"]
[[port]]
interface = "b1"
tenant = "blue"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
[[port]]
interface = "b3"
tenant = "blue"
mac = "02:00:00:00:00:03"
ips = ["10.0.0.3"]
[[port]]
interface = "r1"
tenant = "red"
mac = "02:00:00:00:00:01"
ips = ["10.0.0.1"]
"#;
