//! VXLAN header (RFC 7348, section 5), in the style of `smoltcp::wire`.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```

use core::fmt;

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid. RFC 7348 requires it set; all other flag bits are reserved.
pub const FLAG_I: u8 = 0x08;
/// Largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// Why a VXLAN header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer than 8 bytes.
    Truncated,
    /// The I flag is clear.
    BadFlags,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("VXLAN header truncated"),
            Error::BadFlags => f.write_str("VXLAN flags invalid"),
        }
    }
}

/// A read/write wrapper around a VXLAN header and the inner frame that follows it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer, checking that it holds at least a header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures no accessor will panic.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN { Err(Error::Truncated) } else { Ok(()) }
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The 24 reserved bits after the flags.
    pub fn reserved1(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[1], b[2], b[3]])
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// The last reserved byte.
    pub fn reserved2(&self) -> u8 {
        self.buffer.as_ref()[7]
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags byte.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[0] = value;
    }

    /// Sets the 24 reserved bits after the flags (only the low 24 bits of `value` are used).
    pub fn set_reserved1(&mut self, value: u32) {
        self.buffer.as_mut()[1..4].copy_from_slice(&value.to_be_bytes()[1..]);
    }

    /// Sets the 24-bit VNI (only the low 24 bits of `value` are used).
    pub fn set_vni(&mut self, value: u32) {
        self.buffer.as_mut()[4..7].copy_from_slice(&value.to_be_bytes()[1..]);
    }

    /// Sets the last reserved byte.
    pub fn set_reserved2(&mut self, value: u8) {
        self.buffer.as_mut()[7] = value;
    }

    /// The inner Ethernet frame, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The meaning of a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The 24-bit VXLAN network identifier.
    pub vni: u32,
}

impl Repr {
    /// Parses a header as RFC 7348 section 5 has a receiver do: the I flag must be set;
    /// the other seven flag bits and both reserved fields are ignored on receipt.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.flags() & FLAG_I == 0 {
            return Err(Error::BadFlags);
        }
        Ok(Repr { vni: packet.vni() })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: I flag, zero reserved fields (RFC 7348: "MUST be set to zero on
    /// transmission").
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_flags(FLAG_I);
        packet.set_reserved1(0);
        packet.set_vni(self.vni);
        packet.set_reserved2(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: [u8; 10] = [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x00, 0xaa, 0xbb];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&HEADER[..]).unwrap();
        assert_eq!(p.flags(), FLAG_I);
        assert_eq!(p.vni(), 100);
        assert_eq!(p.reserved1(), 0);
        assert_eq!(p.reserved2(), 0);
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
        assert_eq!(Repr::parse(&p), Ok(Repr { vni: 100 }));
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 10];
        buf[8] = 0xaa;
        buf[9] = 0xbb;
        let mut p = Packet::new_unchecked(&mut buf[..]);
        Repr { vni: 100 }.emit(&mut p);
        assert_eq!(buf, HEADER);
    }

    #[test]
    fn max_vni_uses_all_24_bits() {
        let mut buf = [0u8; 8];
        Repr { vni: VNI_MAX }.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0]);
    }

    #[test]
    fn too_short() {
        assert_eq!(Packet::new_checked(&HEADER[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(Repr::parse(&Packet::new_unchecked(&HEADER[..3])), Err(Error::Truncated));
    }

    #[test]
    fn the_i_flag_must_be_set_and_reserved_flags_are_ignored() {
        for flags in [0x00u8, 0x04, 0x80, 0xf7] {
            let mut b = HEADER;
            b[0] = flags;
            assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Err(Error::BadFlags), "{flags:#x}");
        }
        // RFC 7348 section 5: the seven R bits are "ignored on receipt"
        for flags in [0x08u8, 0x0c, 0x88, 0x09, 0xff] {
            let mut b = HEADER;
            b[0] = flags;
            assert!(Repr::parse(&Packet::new_unchecked(&b[..])).is_ok(), "{flags:#x}");
        }
    }

    #[test]
    fn reserved_fields_ignored_on_receipt() {
        let b = [0x08, 0xde, 0xad, 0xbe, 0x00, 0x00, 0x64, 0xef];
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(Repr { vni: 100 }));
    }
}
