//! Bounds-checked little-endian encoding and decoding of on-disk fields.
//!
//! [`Decoder`] never panics and never indexes out of bounds: reading past the end returns
//! [`FormatError::Truncated`] naming the structure and offset. [`Encoder`] appends to a
//! growable buffer, so writing cannot fail; fixed-size layouts use [`Encoder::pad_to`] to reach
//! a field's fixed offset, which fails if earlier fields overran it.
//!
//! All integers are little-endian on disk, whatever the host.

use super::FormatError;

/// Reads fields from a byte slice in order.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    structure: &'static str,
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over `bytes`, naming `structure` in its errors.
    pub fn new(structure: &'static str, bytes: &'a [u8]) -> Decoder<'a> {
        Decoder {
            structure,
            bytes,
            position: 0,
        }
    }

    /// The offset of the next field.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// The name errors carry.
    pub fn structure(&self) -> &'static str {
        self.structure
    }

    /// Moves to absolute offset `position` (forward or back).
    pub fn seek(&mut self, position: usize) -> Result<(), FormatError> {
        if position > self.bytes.len() {
            return Err(self.truncated(position, 0));
        }
        self.position = position;
        Ok(())
    }

    fn truncated(&self, offset: usize, needed: usize) -> FormatError {
        FormatError::Truncated {
            structure: self.structure,
            offset,
            needed,
            available: self.bytes.len().saturating_sub(offset),
        }
    }

    /// The next `length` bytes.
    pub fn bytes(&mut self, length: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .position
            .checked_add(length)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.truncated(self.position, length))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut array = [0; N];
        array.copy_from_slice(self.bytes(N)?);
        Ok(array)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A little-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
}

/// Appends fields to a buffer in order.
#[derive(Debug, Clone)]
pub struct Encoder {
    structure: &'static str,
    bytes: Vec<u8>,
}

impl Encoder {
    /// An empty encoder for `structure` with room for `capacity` bytes.
    pub fn new(structure: &'static str, capacity: usize) -> Encoder {
        Encoder {
            structure,
            bytes: Vec::with_capacity(capacity),
        }
    }

    /// The offset the next field will have.
    pub fn position(&self) -> usize {
        self.bytes.len()
    }

    /// Appends raw bytes.
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Appends a byte.
    pub fn put_u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    /// Appends a little-endian `u16`.
    pub fn put_u16(&mut self, value: u16) {
        self.put_bytes(&value.to_le_bytes());
    }

    /// Appends a little-endian `u32`.
    pub fn put_u32(&mut self, value: u32) {
        self.put_bytes(&value.to_le_bytes());
    }

    /// Appends a little-endian `u64`.
    pub fn put_u64(&mut self, value: u64) {
        self.put_bytes(&value.to_le_bytes());
    }

    /// Appends a little-endian `i32`.
    pub fn put_i32(&mut self, value: i32) {
        self.put_bytes(&value.to_le_bytes());
    }

    /// Zero-fills up to absolute offset `position`. Fails if the buffer is already past it,
    /// which means a layout's fields overran their space.
    pub fn pad_to(&mut self, position: usize) -> Result<(), FormatError> {
        if self.bytes.len() > position {
            return Err(FormatError::Overrun {
                structure: self.structure,
                position: self.bytes.len(),
                limit: position,
            });
        }
        self.bytes.resize(position, 0);
        Ok(())
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_roundtrip_little_endian() {
        let mut encoder = Encoder::new("test", 32);
        encoder.put_u8(1);
        encoder.put_u16(0x0203);
        encoder.put_u32(0x0405_0607);
        encoder.put_u64(0x0809_0a0b_0c0d_0e0f);
        encoder.put_i32(-2);
        let bytes = encoder.into_bytes();
        assert_eq!(&bytes[..3], &[1, 3, 2]);
        let mut decoder = Decoder::new("test", &bytes);
        assert_eq!(decoder.u8().unwrap(), 1);
        assert_eq!(decoder.u16().unwrap(), 0x0203);
        assert_eq!(decoder.u32().unwrap(), 0x0405_0607);
        assert_eq!(decoder.u64().unwrap(), 0x0809_0a0b_0c0d_0e0f);
        assert_eq!(decoder.i32().unwrap(), -2);
        assert_eq!(decoder.remaining(), 0);
    }

    #[test]
    fn reading_past_the_end_is_a_truncation_error_not_a_panic() {
        let bytes = [0u8; 6];
        let mut decoder = Decoder::new("thing", &bytes);
        decoder.u32().unwrap();
        let error = decoder.u32().unwrap_err();
        assert_eq!(
            error,
            FormatError::Truncated {
                structure: "thing",
                offset: 4,
                needed: 4,
                available: 2
            }
        );
        assert_eq!(decoder.position(), 4, "a failed read consumes nothing");
        assert!(decoder.bytes(usize::MAX).is_err());
        assert!(decoder.seek(7).is_err());
        decoder.seek(6).unwrap();
        assert!(decoder.u8().is_err());
    }

    #[test]
    fn pad_to_refuses_to_move_backwards() {
        let mut encoder = Encoder::new("thing", 8);
        encoder.put_u64(1);
        encoder.pad_to(16).unwrap();
        assert_eq!(encoder.position(), 16);
        assert!(matches!(
            encoder.pad_to(8),
            Err(FormatError::Overrun { limit: 8, .. })
        ));
    }
}
