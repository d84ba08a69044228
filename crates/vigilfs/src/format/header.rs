//! The header every on-disk structure begins with: magic, version, length and checksum.
//!
//! ```text
//! offset  size  field
//!      0     8  magic (eight bytes naming the structure)
//!      8     2  version (little-endian)
//!     10     2  reserved, zero
//!     12     4  length: bytes covered by the checksum, header included
//!     16     4  CRC-32C of bytes 0..length with this field taken as zero
//!     20     4  reserved, zero
//! ```
//!
//! [`verify`] checks, in this order, so each corruption gets the most telling error: enough
//! bytes for a header, magic (is this the structure at all?), version (can we read it?),
//! length (plausible and present?), checksum (intact?), reserved fields (written by a bug?).
//! A structure type describes itself with a [`StructureType`]; the journal and later layers
//! define their own and reuse [`seal`] and [`verify`].

use std::fmt;

use super::checksum::crc32c_with_zeroed;
use super::codec::{Decoder, Encoder};
use super::FormatError;

/// Size of the common header in bytes.
pub const HEADER_SIZE: usize = 24;

const CHECKSUM_FIELD: std::ops::Range<usize> = 16..20;

/// Eight bytes identifying a structure type on disk.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Magic(pub [u8; 8]);

impl fmt::Debug for Magic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Display for Magic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, formatter)
    }
}

/// What a structure type promises about its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructureType {
    /// Human name used in errors ("superblock").
    pub name: &'static str,
    /// Its magic.
    pub magic: Magic,
    /// Oldest version this build can read.
    pub oldest_version: u16,
    /// Version this build writes (and newest it can read).
    pub current_version: u16,
    /// The exact length, for fixed-size structures.
    pub fixed_length: Option<u32>,
}

/// A verified header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructureHeader {
    /// The version the structure was written with.
    pub version: u16,
    /// Bytes covered by the checksum, header included.
    pub length: u32,
}

/// Writes the header of `kind` at the start of `buffer` and checksums the whole buffer. The
/// caller leaves the first [`HEADER_SIZE`] bytes for the header.
pub fn seal(kind: &StructureType, buffer: &mut [u8]) -> Result<(), FormatError> {
    let overrun = |limit: usize| FormatError::Overrun {
        structure: kind.name,
        position: buffer.len(),
        limit,
    };
    if buffer.len() < HEADER_SIZE {
        return Err(FormatError::Truncated {
            structure: kind.name,
            offset: 0,
            needed: HEADER_SIZE,
            available: buffer.len(),
        });
    }
    let length = u32::try_from(buffer.len()).map_err(|_| overrun(u32::MAX as usize))?;
    if let Some(fixed) = kind.fixed_length {
        if length != fixed {
            return Err(overrun(fixed as usize));
        }
    }
    let mut header = Encoder::new(kind.name, HEADER_SIZE);
    header.put_bytes(&kind.magic.0);
    header.put_u16(kind.current_version);
    header.put_u16(0);
    header.put_u32(length);
    header.put_u32(0);
    header.put_u32(0);
    buffer[..HEADER_SIZE].copy_from_slice(&header.into_bytes());
    let checksum = crc32c_with_zeroed(buffer, CHECKSUM_FIELD);
    buffer[CHECKSUM_FIELD].copy_from_slice(&checksum.to_le_bytes());
    Ok(())
}

/// Verifies the header of a `kind` structure at the start of `bytes` and the checksum over
/// its length. On success the structure's bytes are `&bytes[..header.length as usize]`.
pub fn verify(kind: &StructureType, bytes: &[u8]) -> Result<StructureHeader, FormatError> {
    let structure = kind.name;
    let mut decoder = Decoder::new(structure, bytes);
    let magic = Magic(decoder.array()?);
    if magic != kind.magic {
        return Err(FormatError::BadMagic {
            structure,
            found: magic,
            expected: kind.magic,
        });
    }
    // Read the rest of the header before judging any of it, so a short buffer is reported as
    // truncated rather than as a bad version.
    let version = decoder.u16()?;
    let reserved_low = decoder.u16()?;
    let length = decoder.u32()?;
    let stored = decoder.u32()?;
    let reserved_high = decoder.u32()?;
    if version < kind.oldest_version || version > kind.current_version {
        return Err(FormatError::UnsupportedVersion {
            structure,
            found: version,
            oldest: kind.oldest_version,
            newest: kind.current_version,
        });
    }
    let invalid_length = |reason: String| FormatError::InvalidField {
        structure,
        field: "length",
        reason,
    };
    match kind.fixed_length {
        Some(fixed) if length != fixed => {
            return Err(invalid_length(format!("{length}, expected {fixed}")));
        }
        _ if (length as usize) < HEADER_SIZE => {
            return Err(invalid_length(format!(
                "{length} is shorter than the {HEADER_SIZE}-byte header"
            )));
        }
        _ => {}
    }
    let covered = bytes.get(..length as usize).ok_or(FormatError::Truncated {
        structure,
        offset: 0,
        needed: length as usize,
        available: bytes.len(),
    })?;
    let computed = crc32c_with_zeroed(covered, CHECKSUM_FIELD);
    if computed != stored {
        return Err(FormatError::ChecksumMismatch {
            structure,
            stored,
            computed,
        });
    }
    if reserved_low != 0 || reserved_high != 0 {
        return Err(FormatError::InvalidField {
            structure,
            field: "header reserved bytes",
            reason: "not zero".to_owned(),
        });
    }
    Ok(StructureHeader { version, length })
}

#[cfg(test)]
mod tests {
    use super::*;

    const THING: StructureType = StructureType {
        name: "thing",
        magic: Magic(*b"THING\0\0\0"),
        oldest_version: 2,
        current_version: 3,
        fixed_length: None,
    };

    fn sealed(length: usize) -> Vec<u8> {
        let mut buffer: Vec<u8> = (0..length).map(|index| index as u8).collect();
        seal(&THING, &mut buffer).unwrap();
        buffer
    }

    #[test]
    fn sealed_structure_verifies() {
        let buffer = sealed(100);
        assert_eq!(
            verify(&THING, &buffer).unwrap(),
            StructureHeader {
                version: 3,
                length: 100
            }
        );
        // Trailing bytes beyond the length are not the structure's business.
        let mut longer = buffer.clone();
        longer.extend_from_slice(&[0xff; 10]);
        assert!(verify(&THING, &longer).is_ok());
    }

    #[test]
    fn each_corruption_gets_its_own_error() {
        let buffer = sealed(100);

        let mut wrong_magic = buffer.clone();
        wrong_magic[0] ^= 1;
        assert!(matches!(
            verify(&THING, &wrong_magic),
            Err(FormatError::BadMagic { .. })
        ));

        let mut future = buffer.clone();
        future[8] = 9;
        assert!(matches!(
            verify(&THING, &future),
            Err(FormatError::UnsupportedVersion { found: 9, .. })
        ));

        let mut body_flip = buffer.clone();
        body_flip[60] ^= 0x80;
        assert!(matches!(
            verify(&THING, &body_flip),
            Err(FormatError::ChecksumMismatch { .. })
        ));

        let mut short_length = buffer.clone();
        short_length[12..16].copy_from_slice(&10u32.to_le_bytes());
        assert!(matches!(
            verify(&THING, &short_length),
            Err(FormatError::InvalidField {
                field: "length",
                ..
            })
        ));

        assert!(matches!(
            verify(&THING, &buffer[..50]),
            Err(FormatError::Truncated { needed: 100, .. })
        ));
        assert!(matches!(
            verify(&THING, &buffer[..10]),
            Err(FormatError::Truncated { .. })
        ));
    }

    #[test]
    fn nonzero_reserved_bytes_with_a_valid_checksum_are_rejected() {
        let mut buffer = sealed(64);
        buffer[21] = 1;
        let checksum = crc32c_with_zeroed(&buffer, CHECKSUM_FIELD);
        buffer[CHECKSUM_FIELD].copy_from_slice(&checksum.to_le_bytes());
        assert!(matches!(
            verify(&THING, &buffer),
            Err(FormatError::InvalidField {
                field: "header reserved bytes",
                ..
            })
        ));
    }

    #[test]
    fn seal_refuses_a_buffer_of_the_wrong_fixed_length() {
        let fixed = StructureType {
            fixed_length: Some(64),
            ..THING
        };
        assert!(seal(&fixed, &mut [0; 63]).is_err());
        assert!(seal(&fixed, &mut [0; 10]).is_err());
        let mut right = [0; 64];
        seal(&fixed, &mut right).unwrap();
        assert!(verify(&fixed, &right).is_ok());
    }
}
