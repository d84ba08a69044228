//! A bounded, inline, filesystem-specific payload attached to an error
//! (block range, b-tree id and level, ...).
//!
//! It lives inside the event, not behind a pointer, so that storing it on the
//! error path needs no allocation. Oversize input is **truncated**, never
//! refused: an error report must not be rejected for carrying too much
//! context. Truncation is recorded ([`Blob::is_truncated`]) so a reader knows
//! the payload is partial. Invariant: `len <= Blob::CAPACITY`.

use std::fmt;

/// Up to [`Blob::CAPACITY`] bytes of filesystem-specific detail.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blob {
    bytes: [u8; Blob::CAPACITY],
    len: u8,
    truncated: bool,
}

impl Blob {
    /// Maximum number of bytes kept.
    pub const CAPACITY: usize = 64;

    /// The empty payload.
    pub const EMPTY: Blob = Blob {
        bytes: [0; Blob::CAPACITY],
        len: 0,
        truncated: false,
    };

    /// Copies `data`, keeping its first [`Blob::CAPACITY`] bytes.
    pub fn new(data: &[u8]) -> Blob {
        let kept = data.len().min(Self::CAPACITY);
        let mut bytes = [0; Self::CAPACITY];
        bytes[..kept].copy_from_slice(&data[..kept]);
        Blob {
            bytes,
            // `kept <= 64`, so the conversion cannot fail.
            len: u8::try_from(kept).unwrap_or(u8::MAX),
            truncated: kept < data.len(),
        }
    }

    /// The stored bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Number of stored bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether no byte is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the input was longer than [`Blob::CAPACITY`] and cut.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl Default for Blob {
    fn default() -> Blob {
        Blob::EMPTY
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Blob(")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        if self.truncated {
            f.write_str(", truncated")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_kept_whole() {
        let blob = Blob::new(b"btree=3 level=1");
        assert_eq!(blob.as_bytes(), b"btree=3 level=1");
        assert!(!blob.is_truncated());
    }

    #[test]
    fn oversize_input_is_truncated_and_marked() {
        let input: Vec<u8> = (0..100).collect();
        let blob = Blob::new(&input);
        assert_eq!(blob.len(), Blob::CAPACITY);
        assert_eq!(blob.as_bytes(), &input[..Blob::CAPACITY]);
        assert!(blob.is_truncated());
    }

    #[test]
    fn input_of_exactly_capacity_is_not_truncated() {
        let blob = Blob::new(&[7; Blob::CAPACITY]);
        assert_eq!(blob.len(), Blob::CAPACITY);
        assert!(!blob.is_truncated());
    }

    #[test]
    fn debug_prints_hex() {
        assert_eq!(format!("{:?}", Blob::new(&[0xde, 0xad])), "Blob(dead)");
        assert!(Blob::EMPTY.is_empty());
    }
}
