//! The framing every fixed-size record of the Meta tree shares (bad
//! blocks, poison, lost data): a key of one prefix byte and a fixed
//! length, and a value of a fixed length whose first byte is its version.
//! It is checked before any field is read, so a record's decoder never
//! indexes out of bounds.

/// One record type's framing.
#[derive(Debug, Clone, Copy)]
pub struct MetaFrame {
    /// The key's first byte.
    pub prefix: u8,
    /// The key's length.
    pub key_bytes: usize,
    /// The value's length.
    pub value_bytes: usize,
    /// The value's first byte: the version this build reads.
    pub version: u8,
}

impl MetaFrame {
    /// What is wrong with the framing of `key` and `value`, if anything.
    pub fn check(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        if key.len() != self.key_bytes || key[0] != self.prefix {
            return Err(format!("key of {} bytes", key.len()));
        }
        if value.len() != self.value_bytes {
            return Err(format!(
                "value of {} bytes, not {}",
                value.len(),
                self.value_bytes
            ));
        }
        if value[0] != self.version {
            return Err(format!(
                "version {} (this build reads {})",
                value[0], self.version
            ));
        }
        Ok(())
    }
}

/// The 8 bytes of `bytes` at `at`, for a record whose framing was checked.
pub fn word_at(bytes: &[u8], at: usize) -> [u8; 8] {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    word
}
