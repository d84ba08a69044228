//! The on-disk form of one reverse-map record, and its validation.
//!
//! ```text
//! key:   start block, u64 big-endian (so key order is block order)
//! value: u64 BE length in blocks, u8 owner kind, then
//!        kind 1 (file data): u64 BE inode, u64 BE file offset in blocks   (25 bytes in all)
//!        kind 2 (b-tree node): u8 tree code, u8 level                     (11 bytes in all)
//! ```
//!
//! Decoding checks everything a record promises: the exact length for its kind, a length of
//! 1 to [`MAX_EXTENT_BLOCKS`] blocks (exactly 1 for a node), no wrap past the last block, a
//! known tree code. Anything else is a typed [`RmapError::Malformed`], never a panic, so a
//! corrupt record is reported, not believed.

use super::RmapError;
use crate::btree::TreeId;

/// Longest extent one record may describe. Bounding it lets [`owners`](super::owners) find
/// a record that starts before the queried range by looking back at most this far.
pub const MAX_EXTENT_BLOCKS: u64 = 1 << 20;

/// Bytes of a key.
pub const KEY_BYTES: usize = 8;

const KIND_FILE_DATA: u8 = 1;
const KIND_NODE: u8 = 2;
const HEAD_BYTES: usize = 9;
const FILE_DATA_BYTES: usize = HEAD_BYTES + 16;
const NODE_BYTES: usize = HEAD_BYTES + 2;

/// Who owns a run of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// Data of a file: the run holds the file's blocks from `file_offset_blocks` on.
    FileData {
        /// The inode.
        ino: u64,
        /// Offset in the file, in blocks, of the run's first block.
        file_offset_blocks: u64,
    },
    /// One b-tree node.
    Node {
        /// The tree.
        tree: TreeId,
        /// Its level (0: a leaf).
        level: u8,
    },
}

/// One record: blocks `start..start + blocks` belong to `owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RmapRecord {
    /// First block.
    pub start: u64,
    /// Length in blocks.
    pub blocks: u64,
    /// The owner.
    pub owner: Owner,
}

impl RmapRecord {
    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.blocks)
    }

    /// Whether the record covers any block of `start..start + blocks`.
    pub fn overlaps(&self, start: u64, blocks: u64) -> bool {
        self.start < start.saturating_add(blocks) && start < self.end()
    }

    /// Checks what decoding checks, so a record that could not be read back is never written.
    pub fn validate(&self) -> Result<(), RmapError> {
        let malformed = |field, detail: String| RmapError::Malformed {
            start: self.start,
            field,
            detail,
        };
        if self.blocks == 0 || self.blocks > MAX_EXTENT_BLOCKS {
            return Err(malformed(
                "length",
                format!("{} blocks (1..={MAX_EXTENT_BLOCKS})", self.blocks),
            ));
        }
        if self.start.checked_add(self.blocks).is_none() {
            return Err(malformed("length", "runs past the last block".into()));
        }
        if matches!(self.owner, Owner::Node { .. }) && self.blocks != 1 {
            return Err(malformed(
                "length",
                format!("a node is one block, not {}", self.blocks),
            ));
        }
        if let Owner::FileData {
            file_offset_blocks, ..
        } = self.owner
        {
            if file_offset_blocks.checked_add(self.blocks).is_none() {
                return Err(malformed(
                    "file offset",
                    "runs past the largest offset".into(),
                ));
            }
        }
        Ok(())
    }

    /// The b-tree key.
    pub fn key(&self) -> [u8; KEY_BYTES] {
        encode_key(self.start)
    }

    /// The b-tree value.
    pub fn encode_value(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(FILE_DATA_BYTES);
        value.extend_from_slice(&self.blocks.to_be_bytes());
        match self.owner {
            Owner::FileData {
                ino,
                file_offset_blocks,
            } => {
                value.push(KIND_FILE_DATA);
                value.extend_from_slice(&ino.to_be_bytes());
                value.extend_from_slice(&file_offset_blocks.to_be_bytes());
            }
            Owner::Node { tree, level } => {
                value.push(KIND_NODE);
                value.push(tree.code());
                value.push(level);
            }
        }
        value
    }

    /// Decodes and validates a key and value from the rmap tree.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<RmapRecord, RmapError> {
        let start = decode_key(key)?;
        let malformed = |field, detail: String| RmapError::Malformed {
            start,
            field,
            detail,
        };
        if value.len() < HEAD_BYTES {
            return Err(malformed(
                "value",
                format!("{} bytes, shorter than {HEAD_BYTES}", value.len()),
            ));
        }
        let blocks = be_u64(&value[0..8]);
        let owner = match value[8] {
            KIND_FILE_DATA => {
                if value.len() != FILE_DATA_BYTES {
                    return Err(malformed(
                        "value",
                        format!("{} bytes for file data, not {FILE_DATA_BYTES}", value.len()),
                    ));
                }
                Owner::FileData {
                    ino: be_u64(&value[9..17]),
                    file_offset_blocks: be_u64(&value[17..25]),
                }
            }
            KIND_NODE => {
                if value.len() != NODE_BYTES {
                    return Err(malformed(
                        "value",
                        format!("{} bytes for a node, not {NODE_BYTES}", value.len()),
                    ));
                }
                let tree = TreeId::from_code(value[9])
                    .ok_or_else(|| malformed("tree", format!("unknown code {}", value[9])))?;
                Owner::Node {
                    tree,
                    level: value[10],
                }
            }
            other => return Err(malformed("owner kind", format!("unknown kind {other}"))),
        };
        let record = RmapRecord {
            start,
            blocks,
            owner,
        };
        record.validate()?;
        Ok(record)
    }
}

/// The key of the record starting at `start`.
pub fn encode_key(start: u64) -> [u8; KEY_BYTES] {
    start.to_be_bytes()
}

/// The start block a key names.
pub fn decode_key(key: &[u8]) -> Result<u64, RmapError> {
    let bytes: [u8; KEY_BYTES] = key
        .try_into()
        .map_err(|_| RmapError::MalformedKey { length: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut array = [0; 8];
    array.copy_from_slice(bytes);
    u64::from_be_bytes(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<RmapRecord> {
        vec![
            RmapRecord {
                start: 100,
                blocks: 7,
                owner: Owner::FileData {
                    ino: 42,
                    file_offset_blocks: 3,
                },
            },
            RmapRecord {
                start: u64::MAX - MAX_EXTENT_BLOCKS,
                blocks: MAX_EXTENT_BLOCKS,
                owner: Owner::FileData {
                    ino: u64::MAX,
                    file_offset_blocks: 0,
                },
            },
            RmapRecord {
                start: 9,
                blocks: 1,
                owner: Owner::Node {
                    tree: TreeId::Extents,
                    level: 2,
                },
            },
        ]
    }

    #[test]
    fn records_roundtrip_through_key_and_value() {
        for record in samples() {
            let decoded = RmapRecord::decode(&record.key(), &record.encode_value()).unwrap();
            assert_eq!(decoded, record);
        }
    }

    #[test]
    fn every_byte_flip_of_a_value_is_a_typed_error_or_another_valid_record() {
        for record in samples() {
            let value = record.encode_value();
            for index in 0..value.len() {
                for bit in 0..8 {
                    let mut flipped = value.clone();
                    flipped[index] ^= 1 << bit;
                    match RmapRecord::decode(&record.key(), &flipped) {
                        Ok(other) => {
                            assert_ne!(other, record);
                            other.validate().unwrap();
                            assert_eq!(other.encode_value(), flipped);
                        }
                        Err(RmapError::Malformed { start, .. }) => assert_eq!(start, record.start),
                        Err(other) => panic!("unexpected error kind: {other}"),
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_or_extended_values_and_keys_are_errors() {
        for record in samples() {
            let value = record.encode_value();
            for length in 0..value.len() {
                assert!(matches!(
                    RmapRecord::decode(&record.key(), &value[..length]),
                    Err(RmapError::Malformed { .. })
                ));
            }
            let mut longer = value.clone();
            longer.push(0);
            assert!(RmapRecord::decode(&record.key(), &longer).is_err());
            for length in 0..KEY_BYTES {
                assert!(matches!(
                    RmapRecord::decode(&record.key()[..length], &value),
                    Err(RmapError::MalformedKey { .. })
                ));
            }
        }
    }

    #[test]
    fn invalid_records_are_refused_before_they_are_written() {
        let node = |blocks| RmapRecord {
            start: 5,
            blocks,
            owner: Owner::Node {
                tree: TreeId::Inodes,
                level: 0,
            },
        };
        assert!(node(1).validate().is_ok());
        assert!(node(0).validate().is_err());
        assert!(node(2).validate().is_err());
        let data = |start, blocks| RmapRecord {
            start,
            blocks,
            owner: Owner::FileData {
                ino: 1,
                file_offset_blocks: 0,
            },
        };
        assert!(data(0, MAX_EXTENT_BLOCKS + 1).validate().is_err());
        assert!(data(u64::MAX, 2).validate().is_err());
    }
}
