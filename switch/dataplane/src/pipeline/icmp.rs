//! ICMP "fragmentation needed" (RFC 792, RFC 1191) and ICMPv6 "packet too big" (RFC 4443
//! section 3.2), written in place of a VM's frame that is too big for the overlay, as a router
//! on the path would answer it: the VM's stack learns the path MTU instead of losing every
//! large packet in silence. Bytes only.

use crate::wire::{fold_wide as fold, sum_wide as sum};

const ETH: usize = 14;
/// Most of the offending packet an ICMPv4 error quotes (the reply stays within 576 bytes).
const QUOTE_V4: usize = 576 - 20 - 8;
/// Most an ICMPv6 error quotes (the reply stays within the IPv6 minimum MTU, 1280 bytes).
const QUOTE_V6: usize = 1280 - 40 - 8;

/// Rewrites the `len`-byte frame in `buf` into the ICMP error telling its sender that at most
/// `mtu` bytes of IP packet pass, addressed back to it (from the packet's destination, whose
/// MAC the reply carries). Returns the reply's length, or `None` for frames that get no reply:
/// not IP, IPv4 without DF (a router would fragment those), ICMP errors themselves, or
/// anything malformed.
pub fn too_big(buf: &mut [u8], len: usize, mtu: u16) -> Option<usize> {
    if len < ETH + 40 || len > buf.len() {
        return None;
    }
    let (dst_mac, src_mac): ([u8; 6], [u8; 6]) = (buf[0..6].try_into().ok()?, buf[6..12].try_into().ok()?);
    let ethertype = u16::from_be_bytes([buf[12], buf[13]]);
    let ip_len = len - ETH;
    let n = match ethertype {
        0x0800 => {
            let ip = &buf[ETH..len];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let df = ip[6] & 0x40 != 0;
            if ip[0] >> 4 != 4 || ihl < 20 || !df || (ip[9] == 1 && is_icmp_error(ip.get(ihl).copied(), 4)) {
                return None;
            }
            let (src, dst): ([u8; 4], [u8; 4]) = (ip[12..16].try_into().ok()?, ip[16..20].try_into().ok()?);
            let quote = ip_len.min(QUOTE_V4);
            buf.copy_within(ETH..ETH + quote, ETH + 28);
            let total = 20 + 8 + quote;
            let h = &mut buf[ETH..ETH + 20];
            h.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            h[12..16].copy_from_slice(&dst);
            h[16..20].copy_from_slice(&src);
            let c = !fold(sum(h, 0));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let icmp = &mut buf[ETH + 20..ETH + total];
            icmp[..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
            icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
            let c = !fold(sum(icmp, 0));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            ETH + total
        }
        0x86dd => {
            let ip = &buf[ETH..len];
            if ip[0] >> 4 != 6 || (ip[6] == 58 && is_icmp_error(ip.get(40).copied(), 6)) {
                return None;
            }
            let (src, dst): ([u8; 16], [u8; 16]) = (ip[8..24].try_into().ok()?, ip[24..40].try_into().ok()?);
            let quote = ip_len.min(QUOTE_V6);
            buf.copy_within(ETH..ETH + quote, ETH + 48);
            let plen = 8 + quote;
            let h = &mut buf[ETH..ETH + 40];
            h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, 58, 64]);
            h[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
            h[8..24].copy_from_slice(&dst);
            h[24..40].copy_from_slice(&src);
            let pseudo = sum(&buf[ETH + 8..ETH + 40], 58 + plen as u64);
            let icmp = &mut buf[ETH + 40..ETH + 40 + plen];
            icmp[..8].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
            icmp[4..8].copy_from_slice(&u32::from(mtu).to_be_bytes());
            let c = !fold(sum(icmp, pseudo));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            ETH + 40 + plen
        }
        _ => return None,
    };
    buf[0..6].copy_from_slice(&src_mac);
    buf[6..12].copy_from_slice(&dst_mac);
    Some(n)
}

/// Whether an ICMP type is an error message (never answered with another error, RFC 1122
/// 3.2.2 and RFC 4443 2.4(e)); `None` (truncated) counts as one.
fn is_icmp_error(kind: Option<u8>, version: u8) -> bool {
    match (kind, version) {
        (None, _) => true,
        (Some(t), 4) => !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18),
        (Some(t), _) => t < 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet};

    fn v4_frame(len: usize, df: bool) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        f[20] = if df { 0x40 } else { 0 };
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f
    }

    #[test]
    fn ipv4_with_df_gets_fragmentation_needed_from_its_destination() {
        let mut f = v4_frame(1600, true);
        let orig = f.clone();
        f.resize(4000, 0);
        let n = too_big(&mut f, 1600, 1500).expect("a reply");
        assert_eq!(n, 14 + 576);
        assert_eq!(&f[0..6], &orig[6..12], "back to the sender's MAC");
        assert_eq!(&f[6..12], &orig[0..6], "from the destination's MAC");
        let ip = Ipv4Packet::new_checked(&f[14..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr().octets(), [10, 0, 0, 2]);
        assert_eq!(ip.dst_addr().octets(), [10, 0, 0, 1]);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (3, 4));
        assert_eq!(u16::from_be_bytes([ip.payload()[6], ip.payload()[7]]), 1500);
        assert_eq!(&ip.payload()[8..8 + 20], &orig[14..34], "quotes the original header");
    }

    #[test]
    fn ipv4_without_df_and_icmp_errors_get_nothing() {
        let mut f = v4_frame(1600, false);
        assert_eq!(too_big(&mut f, 1600, 1500), None);
        let mut e = v4_frame(1600, true);
        e[23] = 1;
        e[34] = 3; // an ICMP error itself
        assert_eq!(too_big(&mut e, 1600, 1500), None);
        let mut short = vec![0u8; 30];
        assert_eq!(too_big(&mut short, 30, 1500), None);
        let mut f = v4_frame(1600, true);
        assert_eq!(too_big(&mut f, 1700, 1500), None, "length beyond the buffer");
    }

    #[test]
    fn ipv6_gets_packet_too_big() {
        let mut f = vec![0u8; 4000];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&1546u16.to_be_bytes());
        f[20] = 17;
        f[22] = 0xfd;
        f[37] = 1;
        f[38] = 0xfd;
        f[53] = 2;
        let n = too_big(&mut f, 1600, 1500).expect("a reply");
        assert_eq!(n, 14 + 1280);
        let ip = Ipv6Packet::new_checked(&f[14..n]).unwrap();
        assert_eq!(ip.dst_addr().octets()[15], 1);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(u8::from(icmp.msg_type()), 2);
        assert_eq!(u32::from_be_bytes(ip.payload()[4..8].try_into().unwrap()), 1500);
    }
}
