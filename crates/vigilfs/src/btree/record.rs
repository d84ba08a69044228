//! The b-tree layer's journal records, and their decoding at replay.
//!
//! Three kinds, each one journal record (so each is atomic on its own; a transaction's keys
//! are one record, hence in one entry):
//!
//! ```text
//! transaction: 0x01, version, u32 count, then per update:
//!              op (1 put, 2 delete, 3 delete range), tree code, key,
//!              put: value | delete range: end (u8 1 + key, or u8 0 for "to the end")
//! pointers:    0x02, version, tree code, level, lower key, upper (u8 flag + key),
//!              u16 count, then per child: key, block u64
//! roots:       0x03, version, u8 count, then per tree: tree code, root level, block u64
//! ```
//!
//! Keys and values are a u16 length then the bytes. A pointers record says: at `level` of
//! the tree, the child pointers with keys in `lower..upper` are now exactly these (a node
//! written to a new block, a split, a merge, the contents of a new root). A roots record
//! gives every tree's root. Decoding is bounds-checked and returns a typed error on any
//! malformed input.

use super::key::TreeId;
use crate::format::{Decoder, Encoder, FormatError};

const TAG_TRANSACTION: u8 = 1;
const TAG_POINTERS: u8 = 2;
const TAG_ROOTS: u8 = 3;
const VERSION: u8 = 1;
const STRUCTURE: &str = "b-tree journal record";

/// One change a transaction makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Insert or overwrite a key.
    Put {
        /// The tree.
        tree: TreeId,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove a key (absent keys are fine).
    Delete {
        /// The tree.
        tree: TreeId,
        /// The key.
        key: Vec<u8>,
    },
    /// Remove every key in `start..end` (`end` `None`: to the end of the tree).
    DeleteRange {
        /// The tree.
        tree: TreeId,
        /// First key removed.
        start: Vec<u8>,
        /// Keys from here on stay.
        end: Option<Vec<u8>>,
    },
}

impl Update {
    /// The tree it changes.
    pub fn tree(&self) -> TreeId {
        match self {
            Update::Put { tree, .. } | Update::Delete { tree, .. } => *tree,
            Update::DeleteRange { tree, .. } => *tree,
        }
    }
}

/// A child pointer change at one level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointers {
    /// The tree.
    pub tree: TreeId,
    /// The level of the node holding the pointers (1 or more).
    pub level: u8,
    /// Pointers with keys from here...
    pub lower: Vec<u8>,
    /// ...up to here (exclusive; `None`: no bound) are replaced by `children`.
    pub upper: Option<Vec<u8>>,
    /// The new pointers: lower bound of each child and its block.
    pub children: Vec<(Vec<u8>, u64)>,
}

/// Where one tree's root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootPointer {
    /// The tree.
    pub tree: TreeId,
    /// Level of the root node (0: the root is a leaf).
    pub level: u8,
    /// Block of the root node.
    pub block: u64,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A transaction's updates, in order.
    Transaction(Vec<Update>),
    /// A pointer change.
    Pointers(Pointers),
    /// Every tree's root.
    Roots(Vec<RootPointer>),
}

fn put_key(encoder: &mut Encoder, key: &[u8]) {
    encoder.put_u16(key.len() as u16);
    encoder.put_bytes(key);
}

fn put_optional_key(encoder: &mut Encoder, key: Option<&[u8]>) {
    match key {
        Some(key) => {
            encoder.put_u8(1);
            put_key(encoder, key);
        }
        None => encoder.put_u8(0),
    }
}

/// Encodes a transaction record.
pub fn encode_transaction(updates: &[Update]) -> Vec<u8> {
    let mut encoder = Encoder::new(STRUCTURE, 64);
    encoder.put_u8(TAG_TRANSACTION);
    encoder.put_u8(VERSION);
    encoder.put_u32(updates.len() as u32);
    for update in updates {
        match update {
            Update::Put { tree, key, value } => {
                encoder.put_u8(1);
                encoder.put_u8(tree.code());
                put_key(&mut encoder, key);
                put_key(&mut encoder, value);
            }
            Update::Delete { tree, key } => {
                encoder.put_u8(2);
                encoder.put_u8(tree.code());
                put_key(&mut encoder, key);
            }
            Update::DeleteRange { tree, start, end } => {
                encoder.put_u8(3);
                encoder.put_u8(tree.code());
                put_key(&mut encoder, start);
                put_optional_key(&mut encoder, end.as_deref());
            }
        }
    }
    encoder.into_bytes()
}

/// Encoded size of a transaction record, without encoding it.
pub fn transaction_bytes(updates: &[Update]) -> usize {
    6 + updates
        .iter()
        .map(|update| match update {
            Update::Put { key, value, .. } => 6 + key.len() + value.len(),
            Update::Delete { key, .. } => 4 + key.len(),
            Update::DeleteRange { start, end, .. } => {
                5 + start.len() + end.as_ref().map_or(0, |end| 2 + end.len())
            }
        })
        .sum::<usize>()
}

/// Encodes a pointers record.
pub fn encode_pointers(pointers: &Pointers) -> Vec<u8> {
    let mut encoder = Encoder::new(STRUCTURE, 64);
    encoder.put_u8(TAG_POINTERS);
    encoder.put_u8(VERSION);
    encoder.put_u8(pointers.tree.code());
    encoder.put_u8(pointers.level);
    put_key(&mut encoder, &pointers.lower);
    put_optional_key(&mut encoder, pointers.upper.as_deref());
    encoder.put_u16(pointers.children.len() as u16);
    for (key, block) in &pointers.children {
        put_key(&mut encoder, key);
        encoder.put_u64(*block);
    }
    encoder.into_bytes()
}

/// Encodes a roots record.
pub fn encode_roots(roots: &[RootPointer]) -> Vec<u8> {
    let mut encoder = Encoder::new(STRUCTURE, 4 + roots.len() * 10);
    encoder.put_u8(TAG_ROOTS);
    encoder.put_u8(VERSION);
    encoder.put_u8(roots.len() as u8);
    for root in roots {
        encoder.put_u8(root.tree.code());
        encoder.put_u8(root.level);
        encoder.put_u64(root.block);
    }
    encoder.into_bytes()
}

fn invalid(field: &'static str, reason: String) -> FormatError {
    FormatError::InvalidField {
        structure: STRUCTURE,
        field,
        reason,
    }
}

fn key(decoder: &mut Decoder<'_>) -> Result<Vec<u8>, FormatError> {
    let length = usize::from(decoder.u16()?);
    Ok(decoder.bytes(length)?.to_vec())
}

fn optional_key(decoder: &mut Decoder<'_>) -> Result<Option<Vec<u8>>, FormatError> {
    match decoder.u8()? {
        0 => Ok(None),
        1 => Ok(Some(key(decoder)?)),
        other => Err(invalid("bound flag", format!("{other}"))),
    }
}

fn tree(decoder: &mut Decoder<'_>) -> Result<TreeId, FormatError> {
    let code = decoder.u8()?;
    TreeId::from_code(code).ok_or_else(|| invalid("tree", format!("unknown tree code {code}")))
}

/// Whether `bytes` is a roots record: the journal always holds the newest
/// one (the roots live nowhere else), so it is no sign of changes left to
/// replay.
pub fn is_roots_record(bytes: &[u8]) -> bool {
    matches!(decode(bytes), Ok(Record::Roots(_)))
}

/// Decodes one record.
pub fn decode(bytes: &[u8]) -> Result<Record, FormatError> {
    let mut decoder = Decoder::new(STRUCTURE, bytes);
    let tag = decoder.u8()?;
    let version = decoder.u8()?;
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion {
            structure: STRUCTURE,
            found: u16::from(version),
            oldest: u16::from(VERSION),
            newest: u16::from(VERSION),
        });
    }
    let record = match tag {
        TAG_TRANSACTION => {
            let count = decoder.u32()? as usize;
            let mut updates = Vec::with_capacity(count.min(bytes.len()));
            for _ in 0..count {
                let op = decoder.u8()?;
                let tree = tree(&mut decoder)?;
                let first = key(&mut decoder)?;
                updates.push(match op {
                    1 => Update::Put {
                        tree,
                        key: first,
                        value: key(&mut decoder)?,
                    },
                    2 => Update::Delete { tree, key: first },
                    3 => Update::DeleteRange {
                        tree,
                        start: first,
                        end: optional_key(&mut decoder)?,
                    },
                    other => return Err(invalid("update op", format!("{other}"))),
                });
            }
            Record::Transaction(updates)
        }
        TAG_POINTERS => {
            let tree = tree(&mut decoder)?;
            let level = decoder.u8()?;
            let lower = key(&mut decoder)?;
            let upper = optional_key(&mut decoder)?;
            let count = usize::from(decoder.u16()?);
            let mut children = Vec::with_capacity(count);
            for _ in 0..count {
                let child_key = key(&mut decoder)?;
                children.push((child_key, decoder.u64()?));
            }
            let ordered = children.windows(2).all(|pair| pair[0].0 < pair[1].0);
            let inside = children.iter().all(|(child_key, _)| {
                *child_key >= lower && upper.as_ref().is_none_or(|upper| child_key < upper)
            });
            if level == 0 || children.is_empty() || !ordered || !inside {
                return Err(invalid(
                    "pointers",
                    "level 0, no children, or children out of order or bounds".into(),
                ));
            }
            Record::Pointers(Pointers {
                tree,
                level,
                lower,
                upper,
                children,
            })
        }
        TAG_ROOTS => {
            let count = decoder.u8()?;
            let mut roots = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let tree = tree(&mut decoder)?;
                let level = decoder.u8()?;
                roots.push(RootPointer {
                    tree,
                    level,
                    block: decoder.u64()?,
                });
            }
            Record::Roots(roots)
        }
        other => return Err(invalid("record tag", format!("{other}"))),
    };
    if decoder.remaining() != 0 {
        return Err(invalid("length", "trailing bytes".into()));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_kind_roundtrips_and_transaction_size_is_exact() {
        let updates = vec![
            Update::Put {
                tree: TreeId::Inodes,
                key: b"k".to_vec(),
                value: b"value".to_vec(),
            },
            Update::Delete {
                tree: TreeId::Rmap,
                key: Vec::new(),
            },
            Update::DeleteRange {
                tree: TreeId::Dirents,
                start: b"a".to_vec(),
                end: Some(b"b".to_vec()),
            },
            Update::DeleteRange {
                tree: TreeId::Dirents,
                start: b"x".to_vec(),
                end: None,
            },
        ];
        let bytes = encode_transaction(&updates);
        assert_eq!(bytes.len(), transaction_bytes(&updates));
        assert_eq!(decode(&bytes).unwrap(), Record::Transaction(updates));

        let pointers = Pointers {
            tree: TreeId::Extents,
            level: 1,
            lower: b"a".to_vec(),
            upper: None,
            children: vec![(b"a".to_vec(), 9), (b"c".to_vec(), 10)],
        };
        assert_eq!(
            decode(&encode_pointers(&pointers)).unwrap(),
            Record::Pointers(pointers)
        );
        let roots = vec![RootPointer {
            tree: TreeId::Meta,
            level: 3,
            block: 77,
        }];
        assert_eq!(decode(&encode_roots(&roots)).unwrap(), Record::Roots(roots));
    }

    #[test]
    fn truncated_or_garbled_records_are_errors() {
        let bytes = encode_transaction(&[Update::Put {
            tree: TreeId::Inodes,
            key: b"key".to_vec(),
            value: b"value".to_vec(),
        }]);
        for length in 0..bytes.len() {
            assert!(decode(&bytes[..length]).is_err());
        }
        let mut unknown = bytes.clone();
        unknown[0] = 9;
        assert!(decode(&unknown).is_err());
        let mut trailing = bytes;
        trailing.push(0);
        assert!(decode(&trailing).is_err());
    }
}
