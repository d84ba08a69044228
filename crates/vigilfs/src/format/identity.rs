//! Who a filesystem is: its UUID and its label.
//!
//! Invariants: a [`Label`] is valid UTF-8 of at most [`LABEL_CAPACITY`] bytes with no NUL
//! (NUL pads it on disk); a generated [`FsUuid`] is a random version-4 UUID.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use super::FormatError;

/// A filesystem's 16-byte UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FsUuid(pub [u8; 16]);

impl FsUuid {
    /// A random version-4 UUID, from the kernel's random source.
    pub fn generate() -> io::Result<FsUuid> {
        let mut bytes = [0; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        // RFC 9562: version 4 in the high nibble of byte 6, variant 0b10 in byte 8.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Ok(FsUuid(bytes))
    }
}

impl fmt::Display for FsUuid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                formatter.write_str("-")?;
            }
            write!(formatter, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for FsUuid {
    type Err = FormatError;

    /// Parses the hyphenated form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || FormatError::InvalidField {
            structure: "uuid",
            field: "uuid",
            reason: format!("`{text}` is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"),
        };
        let groups: Vec<&str> = text.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
        if lengths != [8, 4, 4, 4, 12] {
            return Err(invalid());
        }
        let hex: String = groups.concat();
        // from_str_radix would accept a leading `+`; only hex digits are allowed here.
        if !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut bytes = [0; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let pair = hex.get(index * 2..index * 2 + 2).ok_or_else(invalid)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(FsUuid(bytes))
    }
}

/// Bytes a label may take on disk.
pub const LABEL_CAPACITY: usize = 64;

/// A filesystem label: UTF-8, at most [`LABEL_CAPACITY`] bytes, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Label(String);

impl Label {
    /// Checks and wraps `text`.
    pub fn new(text: &str) -> Result<Label, FormatError> {
        let invalid = |reason: String| FormatError::InvalidField {
            structure: "label",
            field: "label",
            reason,
        };
        if text.len() > LABEL_CAPACITY {
            return Err(invalid(format!(
                "{} bytes, at most {LABEL_CAPACITY} allowed",
                text.len()
            )));
        }
        if text.contains('\0') {
            return Err(invalid("contains a NUL character".to_owned()));
        }
        Ok(Label(text.to_owned()))
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The NUL-padded on-disk form.
    pub(crate) fn to_field(&self) -> [u8; LABEL_CAPACITY] {
        let mut field = [0; LABEL_CAPACITY];
        field[..self.0.len()].copy_from_slice(self.0.as_bytes());
        field
    }

    /// Parses the on-disk form: UTF-8 text, then only NUL padding.
    pub(crate) fn from_field(
        structure: &'static str,
        field: &[u8; LABEL_CAPACITY],
    ) -> Result<Label, FormatError> {
        let invalid = |reason: &str| FormatError::InvalidField {
            structure,
            field: "label",
            reason: reason.to_owned(),
        };
        let text_length = field
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(LABEL_CAPACITY);
        if field[text_length..].iter().any(|&byte| byte != 0) {
            return Err(invalid("text after the NUL padding"));
        }
        let text =
            std::str::from_utf8(&field[..text_length]).map_err(|_| invalid("not valid UTF-8"))?;
        Ok(Label(text.to_owned()))
    }
}

impl fmt::Display for Label {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_uuids_are_version_4_and_differ() {
        let first = FsUuid::generate().unwrap();
        let second = FsUuid::generate().unwrap();
        assert_ne!(first, second);
        assert_eq!(first.0[6] >> 4, 4);
        assert_eq!(first.0[8] >> 6, 0b10);
    }

    #[test]
    fn uuid_text_roundtrips_and_rejects_malformed_text() {
        let uuid: FsUuid = "01234567-89ab-cdef-0123-456789abcdef".parse().unwrap();
        assert_eq!(uuid.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
        for bad in [
            "",
            "01234567-89ab-cdef-0123-456789abcde",
            "0123456789abcdef0123456789abcdef",
            "0123456g-89ab-cdef-0123-456789abcdef",
            "01234567-89ab-cdef-0123-456789abcdéf",
            "+1234567-89ab-cdef-0123-456789abcdef",
        ] {
            assert!(bad.parse::<FsUuid>().is_err(), "accepted `{bad}`");
        }
    }

    #[test]
    fn label_limits_are_enforced_and_the_field_roundtrips() {
        assert!(Label::new(&"x".repeat(LABEL_CAPACITY)).is_ok());
        assert!(Label::new(&"x".repeat(LABEL_CAPACITY + 1)).is_err());
        assert!(Label::new("a\0b").is_err());
        let label = Label::new("données").unwrap();
        assert_eq!(Label::from_field("test", &label.to_field()).unwrap(), label);
    }

    #[test]
    fn label_field_with_garbage_after_padding_or_bad_utf8_is_rejected() {
        let mut field = Label::new("abc").unwrap().to_field();
        field[10] = b'x';
        assert!(Label::from_field("test", &field).is_err());
        let mut field = [0; LABEL_CAPACITY];
        field[0] = 0xff;
        assert!(Label::from_field("test", &field).is_err());
    }
}
