//! Small checked value types: parse, don't validate.
//!
//! May depend on: wire.

use crate::wire::MacAddr;
use core::fmt;
use core::str::FromStr;

/// A VXLAN network identifier that a tenant may use: 1..=16777215 (24 bits, 0 reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

/// A VNI outside 1..=16777215.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} out of range 1..=16777215")]
pub struct InvalidVni(pub i64);

impl Vni {
    /// Checks the range.
    pub fn new(v: i64) -> Result<Vni, InvalidVni> {
        if (1..=i64::from(crate::wire::vxlan::VNI_MAX)).contains(&v) { Ok(Vni(v as u32)) } else { Err(InvalidVni(v)) }
    }

    /// The 24-bit value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Dense per-host index of a tenant, stable for the tenant's life. Part of every lookup key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TenantId(pub u16);

impl TenantId {
    /// As an index into per-tenant arrays.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Dense per-host index of a port (VM port or uplink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortId(pub u16);

impl PortId {
    /// As an index into per-port arrays.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A MAC address that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed MAC address {0:?} (expected six hex octets like 02:00:00:00:00:01)")]
pub struct InvalidMac(pub String);

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<MacAddr, InvalidMac> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        if n == 6 || part.is_empty() || part.len() > 2 {
            return Err(InvalidMac(s.to_string()));
        }
        out[n] = u8::from_str_radix(part, 16).map_err(|_| InvalidMac(s.to_string()))?;
        n += 1;
    }
    if n != 6 {
        return Err(InvalidMac(s.to_string()));
    }
    Ok(MacAddr(out))
}

/// Formats a MAC the way `ip link` does: `02:00:00:00:00:01`.
pub fn mac_str(m: &MacAddr) -> String {
    let b = m.0;
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
}

/// A MAC address that a port or static entry may own: unicast and not all zeros.
pub fn is_assignable_mac(mac: &MacAddr) -> bool {
    mac.is_unicast() && mac.0 != [0; 6]
}

/// A bit rate in bits per second, parsed from `10G`, `700M`, `1500k` or a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate(pub u64);

/// A rate that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRate {
    /// Not a positive number with an optional unit.
    #[error("malformed rate {0:?} (expected e.g. 10G, 700M, 1500k or bits per second)")]
    Malformed(String),
    /// A positive number below one bit per second (a rate of 0 would mean "unlimited" for a
    /// limit and "drop everything" for a policer, so it is refused, not rounded).
    #[error("rate {0:?} is less than 1 bit/s (a plain number is bits per second; e.g. 400M)")]
    BelowOneBit(String),
}

impl FromStr for Rate {
    type Err = InvalidRate;
    fn from_str(s: &str) -> Result<Rate, InvalidRate> {
        let t = s.trim().trim_end_matches("bit").trim_end_matches("bps");
        let (num, mult) = match t.char_indices().last() {
            Some((i, 'k' | 'K')) => (&t[..i], 1_000u64),
            Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
            Some((i, 'g' | 'G')) => (&t[..i], 1_000_000_000),
            Some((i, 't' | 'T')) => (&t[..i], 1_000_000_000_000),
            _ => (t, 1),
        };
        let v: f64 = num.trim().parse().map_err(|_| InvalidRate::Malformed(s.to_string()))?;
        if !v.is_finite() || v <= 0.0 || v * mult as f64 > 1e15 {
            return Err(InvalidRate::Malformed(s.to_string()));
        }
        match (v * mult as f64).round() as u64 {
            0 => Err(InvalidRate::BelowOneBit(s.to_string())),
            bits => Ok(Rate(bits)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_range() {
        assert!(Vni::new(0).is_err());
        assert_eq!(Vni::new(1).unwrap().get(), 1);
        assert_eq!(Vni::new(16_777_215).unwrap().get(), 0xff_ffff);
        assert_eq!(Vni::new(16_777_216).unwrap_err().to_string(), "VNI 16777216 out of range 1..=16777215");
        assert!(Vni::new(-5).is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), MacAddr([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02-00-00-00-00-0A").unwrap(), MacAddr([2, 0, 0, 0, 0, 10]));
        for bad in
            ["", "02:00:00:00:00", "02:00:00:00:00:00:00", "zz:00:00:00:00:00", "002:00:00:00:00:00", "02::00:00:00:00"]
        {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert!(!is_assignable_mac(&MacAddr([1, 0, 0, 0, 0, 1])));
        assert!(!is_assignable_mac(&MacAddr([0; 6])));
    }

    #[test]
    fn rates() {
        assert_eq!("10G".parse::<Rate>().unwrap(), Rate(10_000_000_000));
        assert_eq!("700M".parse::<Rate>().unwrap(), Rate(700_000_000));
        assert_eq!("1.5k".parse::<Rate>().unwrap(), Rate(1500));
        assert_eq!("300mbit".parse::<Rate>().unwrap(), Rate(300_000_000));
        assert!("fast".parse::<Rate>().is_err());
        assert!("0".parse::<Rate>().is_err());
        assert!("-1G".parse::<Rate>().is_err());
        // rounds to 0: refused, never taken as "no limit"
        let e = "0.4".parse::<Rate>().unwrap_err().to_string();
        assert!(e.contains("\"0.4\" is less than 1 bit/s"), "{e}");
        assert_eq!("0.0004k".parse::<Rate>().unwrap_err(), InvalidRate::BelowOneBit("0.0004k".into()));
        assert_eq!("0.6".parse::<Rate>().unwrap(), Rate(1));
    }
}
