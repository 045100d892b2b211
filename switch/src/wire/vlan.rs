//! IEEE 802.1Q VLAN tag, in the style of `smoltcp::wire`. The view starts right after the
//! outer EtherType 0x8100: two bytes of tag control information, then the inner EtherType.

use super::EtherType;

/// Length of the tag after the TPID: TCI (2) + inner EtherType (2).
pub const HEADER_LEN: usize = 4;

/// Returned when the buffer is shorter than a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

/// A read/write wrapper around an 802.1Q tag and what follows it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer, checking that it holds a whole tag.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Truncated> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Truncated);
        }
        Ok(Packet { buffer })
    }

    fn tci(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The EtherType of what the tag carries.
    pub fn ethertype(&self) -> EtherType {
        let b = self.buffer.as_ref();
        EtherType::from(u16::from_be_bytes([b[2], b[3]]))
    }

    /// What the tag carries.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets priority, drop eligibility and VLAN id (only the low 12 bits of `vid` are used).
    pub fn set_tci(&mut self, pcp: u8, dei: bool, vid: u16) {
        let tci = (u16::from(pcp & 7) << 13) | (u16::from(dei) << 12) | (vid & 0x0fff);
        self.buffer.as_mut()[0..2].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the inner EtherType.
    pub fn set_ethertype(&mut self, value: EtherType) {
        self.buffer.as_mut()[2..4].copy_from_slice(&u16::from(value).to_be_bytes());
    }
}

/// The meaning of an 802.1Q tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Priority code point.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN id.
    pub vid: u16,
    /// Inner EtherType.
    pub ethertype: EtherType,
}

impl Repr {
    /// Parses a tag.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, Truncated> {
        let p = Packet::new_checked(p.buffer.as_ref())?;
        Ok(Repr { pcp: p.pcp(), dei: p.dei(), vid: p.vid(), ethertype: p.ethertype() })
    }

    /// Writes the tag.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_tci(self.pcp, self.dei, self.vid);
        p.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // PCP 5, DEI 0, VID 100, inner IPv4.
    const TAG: [u8; 5] = [0xa0, 0x64, 0x08, 0x00, 0x45];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&TAG[..]).unwrap();
        assert_eq!((p.pcp(), p.dei(), p.vid()), (5, false, 100));
        assert_eq!(p.ethertype(), EtherType::Ipv4);
        assert_eq!(p.payload(), &[0x45]);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 5];
        b[4] = 0x45;
        Repr { pcp: 5, dei: false, vid: 100, ethertype: EtherType::Ipv4 }.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, TAG);
    }

    #[test]
    fn dei_and_max_vid() {
        let b = [0x1f, 0xff, 0x86, 0xdd];
        let r = Repr::parse(&Packet::new_unchecked(&b[..])).unwrap();
        assert_eq!(r, Repr { pcp: 0, dei: true, vid: 4095, ethertype: EtherType::Ipv6 });
    }

    #[test]
    fn too_short() {
        assert_eq!(Packet::new_checked(&TAG[..3]).unwrap_err(), Truncated);
    }
}
