//! B-tree nodes: the in-memory form and the on-disk format, one filesystem block each.
//!
//! ```text
//! offset  size  field
//!      0    24  structure header (magic "VGBTNODE", version, length = block size, CRC-32C)
//!     24    16  filesystem UUID (a node left by an earlier filesystem is refused)
//!     40     8  the node's own block number (a misdirected or misplaced write is refused)
//!     48     8  reserved, zero
//!     56     1  tree id
//!     57     1  level: 0 for leaves, the height of the subtree below otherwise
//!     58     2  entry count
//!     60     2  length of the lower bound key
//!     62     2  length of the upper bound key, 0xFFFF when the node is unbounded above
//!     64        lower bound, upper bound, then the entries in key order:
//!               leaf:     key length u16, value length u16, key, value
//!               interior: key length u16, key, child block u64
//!               then zeros to the end of the block
//! ```
//!
//! All integers little-endian. A node covers the keys `lower..upper`; its bounds never
//! change while it lives at one block (a split or merge writes new nodes), so the bounds
//! stored in a child must equal the ones its parent gives it: a stale or misdirected child is
//! caught. Interior entries name each child by its lower bound, so an interior node's first
//! key equals its own lower bound. [`decode`] checks all of this and returns a
//! [`NodeDefect`] rather than panicking on any input.
//!
//! In memory a node may temporarily hold more than a block's worth of entries (between a
//! transaction and the write that splits it); [`pack`] cuts entries into pieces that fit.

use std::cmp::Ordering;

use thiserror::Error;

use super::key::{KeyLimits, TreeId, MAX_KEY_BYTES};
use crate::format::{seal, verify, Decoder, FormatError, Magic, StructureType, HEADER_SIZE};

/// The structure type of b-tree nodes.
pub const NODE_STRUCTURE: StructureType = StructureType {
    name: "b-tree node",
    magic: Magic(*b"VGBTNODE"),
    oldest_version: 1,
    current_version: 1,
    fixed_length: None,
};

/// Bytes before the bounds.
pub const NODE_HEADER_BYTES: usize = 64;

/// Per-entry bytes of a leaf entry besides its key and value.
pub const LEAF_ENTRY_OVERHEAD: usize = 4;

/// Per-entry bytes of an interior entry besides its key.
pub const INTERIOR_ENTRY_OVERHEAD: usize = 10;

/// Deepest tree accepted (a level beyond this is corruption, not a big tree).
pub const MAX_LEVEL: u8 = 24;

const UNBOUNDED: u16 = 0xFFFF;

/// Bytes available for entries in any node of a `block_size` filesystem, whatever its bounds
/// (room for two maximal bound keys is always kept). `None` if the block is too small.
pub fn entry_capacity(block_size: u32) -> Option<usize> {
    (block_size as usize).checked_sub(NODE_HEADER_BYTES + 2 * MAX_KEY_BYTES)
}

/// A leaf entry in memory: key and value.
pub type LeafEntry = (Box<[u8]>, Box<[u8]>);

/// An interior entry in memory: a child's lower bound and block.
pub type ChildEntry = (Box<[u8]>, u64);

/// What a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Keys and values.
    Leaf(Vec<LeafEntry>),
    /// Lower bounds of children and their blocks.
    Interior(Vec<ChildEntry>),
}

impl Body {
    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            Body::Leaf(entries) => entries.len(),
            Body::Interior(entries) => entries.len(),
        }
    }

    /// The key of entry `index`.
    pub fn key(&self, index: usize) -> &[u8] {
        match self {
            Body::Leaf(entries) => &entries[index].0,
            Body::Interior(entries) => &entries[index].0,
        }
    }

    /// Encoded bytes of all entries.
    pub fn encoded_bytes(&self) -> usize {
        match self {
            Body::Leaf(entries) => entries
                .iter()
                .map(|(key, value)| leaf_entry_bytes(key.len(), value.len()))
                .sum(),
            Body::Interior(entries) => entries
                .iter()
                .map(|(key, _)| interior_entry_bytes(key.len()))
                .sum(),
        }
    }

    /// Estimated heap bytes of all entries (what the cache budget counts).
    pub fn memory_bytes(&self) -> usize {
        match self {
            Body::Leaf(entries) => {
                entries.capacity() * 32
                    + entries
                        .iter()
                        .map(|(key, value)| heap_bytes(key.len()) + heap_bytes(value.len()))
                        .sum::<usize>()
            }
            Body::Interior(entries) => {
                entries.capacity() * 24
                    + entries
                        .iter()
                        .map(|(key, _)| heap_bytes(key.len()))
                        .sum::<usize>()
            }
        }
    }
}

/// Encoded bytes of one leaf entry.
pub fn leaf_entry_bytes(key: usize, value: usize) -> usize {
    LEAF_ENTRY_OVERHEAD + key + value
}

/// Encoded bytes of one interior entry.
pub fn interior_entry_bytes(key: usize) -> usize {
    INTERIOR_ENTRY_OVERHEAD + key
}

/// What a heap allocation of `length` bytes costs with a typical malloc (16-byte granules,
/// 8 bytes of bookkeeping, 32-byte minimum); empty boxes allocate nothing.
pub fn heap_bytes(length: usize) -> usize {
    if length == 0 {
        0
    } else {
        ((length + 8).div_ceil(16) * 16).max(32)
    }
}

/// Fixed per-node memory beyond the entries (struct, bounds, cache maps), estimated.
pub const NODE_FIXED_MEMORY: usize = 256;

/// A node as it is stored: bounds, level, tree, entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImage {
    /// The tree it belongs to.
    pub tree: TreeId,
    /// 0 for a leaf.
    pub level: u8,
    /// Smallest key it may hold (inclusive).
    pub lower: Box<[u8]>,
    /// Keys it may hold are below this; `None` for no bound.
    pub upper: Option<Box<[u8]>>,
    /// The entries.
    pub body: Body,
}

/// Why a node was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeDefect {
    /// The header or checksum did not verify.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// The node belongs to another filesystem.
    #[error("node belongs to another filesystem (uuid mismatch)")]
    ForeignFilesystem,
    /// The node says it lives elsewhere: a misdirected write or a stale pointer.
    #[error("node records block {recorded}, not the block it was read from")]
    WrongBlock {
        /// The block number in the node.
        recorded: u64,
    },
    /// The node belongs to another tree.
    #[error("node belongs to tree code {found}, expected {expected}")]
    WrongTree {
        /// The code found.
        found: u8,
        /// The tree expected.
        expected: TreeId,
    },
    /// The node is at another level than its parent says.
    #[error("node is at level {found}, expected {expected}")]
    WrongLevel {
        /// The level found.
        found: u8,
        /// The level expected.
        expected: u8,
    },
    /// The node's bounds differ from what its parent says: a stale copy.
    #[error("node bounds differ from the bounds its parent gives it")]
    WrongBounds,
    /// A field or the entries are malformed.
    #[error("malformed node: {0}")]
    Malformed(String),
}

/// What the reader of a node expects, from the parent pointer that led to it.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The block read.
    pub block: u64,
    /// The tree.
    pub tree: TreeId,
    /// The level, if known.
    pub level: Option<u8>,
    /// The bounds, if known.
    pub bounds: Option<(&'a [u8], Option<&'a [u8]>)>,
    /// The filesystem UUID.
    pub uuid: &'a [u8; 16],
    /// Limits entries must respect.
    pub limits: KeyLimits,
    /// Child blocks must lie in this range.
    pub valid_blocks: std::ops::Range<u64>,
}

/// Encodes `node` as it will live at `block`, into a whole block. Fails if it does not fit.
pub fn encode(
    node: &NodeImage,
    block: u64,
    uuid: &[u8; 16],
    block_size: u32,
) -> Result<Vec<u8>, FormatError> {
    let mut bytes = vec![0u8; block_size as usize];
    let upper_length = node
        .upper
        .as_ref()
        .map_or(UNBOUNDED, |upper| upper.len() as u16);
    let needed = NODE_HEADER_BYTES
        + node.lower.len()
        + node.upper.as_ref().map_or(0, |upper| upper.len())
        + node.body.encoded_bytes();
    if needed > bytes.len() || node.body.len() > usize::from(u16::MAX) {
        return Err(FormatError::Overrun {
            structure: NODE_STRUCTURE.name,
            position: needed,
            limit: bytes.len(),
        });
    }
    bytes[HEADER_SIZE..HEADER_SIZE + 16].copy_from_slice(uuid);
    bytes[40..48].copy_from_slice(&block.to_le_bytes());
    bytes[56] = node.tree.code();
    bytes[57] = node.level;
    bytes[58..60].copy_from_slice(&(node.body.len() as u16).to_le_bytes());
    bytes[60..62].copy_from_slice(&(node.lower.len() as u16).to_le_bytes());
    bytes[62..64].copy_from_slice(&upper_length.to_le_bytes());
    let mut at = NODE_HEADER_BYTES;
    let mut put = |piece: &[u8]| {
        bytes[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    };
    put(&node.lower);
    if let Some(upper) = &node.upper {
        put(upper);
    }
    match &node.body {
        Body::Leaf(entries) => {
            for (key, value) in entries {
                put(&(key.len() as u16).to_le_bytes());
                put(&(value.len() as u16).to_le_bytes());
                put(key);
                put(value);
            }
        }
        Body::Interior(entries) => {
            for (key, child) in entries {
                put(&(key.len() as u16).to_le_bytes());
                put(key);
                put(&child.to_le_bytes());
            }
        }
    }
    seal(&NODE_STRUCTURE, &mut bytes)?;
    Ok(bytes)
}

/// Decodes and validates a node read from `expected.block`.
pub fn decode(bytes: &[u8], expected: &Expected<'_>) -> Result<NodeImage, NodeDefect> {
    let header = verify(&NODE_STRUCTURE, bytes)?;
    let bytes = &bytes[..header.length as usize];
    let malformed = |why: String| NodeDefect::Malformed(why);
    let mut decoder = Decoder::new(NODE_STRUCTURE.name, bytes);
    decoder.seek(HEADER_SIZE)?;
    if decoder.array::<16>()? != *expected.uuid {
        return Err(NodeDefect::ForeignFilesystem);
    }
    let recorded = decoder.u64()?;
    if recorded != expected.block {
        return Err(NodeDefect::WrongBlock { recorded });
    }
    if decoder.u64()? != 0 {
        return Err(malformed("reserved field is not zero".into()));
    }
    let tree_code = decoder.u8()?;
    if TreeId::from_code(tree_code) != Some(expected.tree) {
        return Err(NodeDefect::WrongTree {
            found: tree_code,
            expected: expected.tree,
        });
    }
    let level = decoder.u8()?;
    if level > MAX_LEVEL {
        return Err(malformed(format!("level {level} exceeds {MAX_LEVEL}")));
    }
    if let Some(expected_level) = expected.level {
        if level != expected_level {
            return Err(NodeDefect::WrongLevel {
                found: level,
                expected: expected_level,
            });
        }
    }
    let count = usize::from(decoder.u16()?);
    let lower_length = usize::from(decoder.u16()?);
    let upper_length = decoder.u16()?;
    if lower_length > MAX_KEY_BYTES
        || (upper_length != UNBOUNDED && usize::from(upper_length) > MAX_KEY_BYTES)
    {
        return Err(malformed("bound key longer than the key limit".into()));
    }
    let lower: Box<[u8]> = decoder.bytes(lower_length)?.into();
    let upper: Option<Box<[u8]>> = if upper_length == UNBOUNDED {
        None
    } else {
        Some(decoder.bytes(usize::from(upper_length))?.into())
    };
    if let Some(upper) = &upper {
        if **upper <= *lower {
            return Err(malformed("upper bound is not above the lower bound".into()));
        }
    }
    if let Some((want_lower, want_upper)) = expected.bounds {
        if *lower != *want_lower || upper.as_deref() != want_upper {
            return Err(NodeDefect::WrongBounds);
        }
    }
    let mut previous: Option<Box<[u8]>> = None;
    let mut check_key = |key: &[u8]| -> Result<(), NodeDefect> {
        if key.len() > expected.limits.max_key {
            return Err(malformed(format!("key of {} bytes", key.len())));
        }
        if key < &*lower || upper.as_deref().is_some_and(|upper| key >= upper) {
            return Err(malformed("key outside the node's bounds".into()));
        }
        if let Some(previous) = &previous {
            if key.cmp(previous) != Ordering::Greater {
                return Err(malformed(
                    "keys are not in strictly increasing order".into(),
                ));
            }
        }
        previous = Some(key.into());
        Ok(())
    };
    let body = if level == 0 {
        let mut entries = Vec::with_capacity(count.min(bytes.len() / LEAF_ENTRY_OVERHEAD));
        for _ in 0..count {
            let key_length = usize::from(decoder.u16()?);
            let value_length = usize::from(decoder.u16()?);
            let key = decoder.bytes(key_length)?;
            let value = decoder.bytes(value_length)?;
            check_key(key)?;
            if value.len() > expected.limits.max_value {
                return Err(malformed(format!("value of {} bytes", value.len())));
            }
            entries.push((Box::from(key), Box::from(value)));
        }
        Body::Leaf(entries)
    } else {
        if count == 0 {
            return Err(malformed("interior node without children".into()));
        }
        let mut entries = Vec::with_capacity(count.min(bytes.len() / INTERIOR_ENTRY_OVERHEAD));
        for _ in 0..count {
            let key_length = usize::from(decoder.u16()?);
            let key = decoder.bytes(key_length)?;
            let child = decoder.u64()?;
            check_key(key)?;
            if !expected.valid_blocks.contains(&child) {
                return Err(malformed(format!(
                    "child block {child} outside the main region"
                )));
            }
            entries.push((Box::from(key), child));
        }
        if *entries[0].0 != *lower {
            return Err(malformed(
                "first child does not start at the node's lower bound".into(),
            ));
        }
        Body::Interior(entries)
    };
    if decoder
        .bytes(decoder.remaining())?
        .iter()
        .any(|&byte| byte != 0)
    {
        return Err(malformed("bytes after the last entry are not zero".into()));
    }
    Ok(NodeImage {
        tree: expected.tree,
        level,
        lower,
        upper,
        body,
    })
}

/// Cuts `body` into pieces that each fit in `capacity` entry bytes, as evenly as the entry
/// sizes allow; always at least one piece (possibly empty). Each piece's first key is its
/// lower bound except the first piece's, which keeps the run's lower bound.
pub fn pack(body: Body, capacity: usize) -> Vec<Body> {
    let total = body.encoded_bytes();
    let pieces = total.div_ceil(capacity).max(1);
    let target = total.div_ceil(pieces);
    match body {
        Body::Leaf(entries) => split_entries(
            entries,
            |(key, value)| leaf_entry_bytes(key.len(), value.len()),
            capacity,
            target,
        )
        .into_iter()
        .map(Body::Leaf)
        .collect(),
        Body::Interior(entries) => split_entries(
            entries,
            |(key, _)| interior_entry_bytes(key.len()),
            capacity,
            target,
        )
        .into_iter()
        .map(Body::Interior)
        .collect(),
    }
}

fn split_entries<T>(
    entries: Vec<T>,
    size: impl Fn(&T) -> usize,
    capacity: usize,
    target: usize,
) -> Vec<Vec<T>> {
    let mut pieces = vec![Vec::new()];
    let mut filled = 0;
    for entry in entries {
        let bytes = size(&entry);
        let current = pieces.last_mut().expect("never empty");
        if !current.is_empty() && (filled + bytes > capacity || filled >= target) {
            pieces.push(Vec::new());
            filled = 0;
        }
        filled += bytes;
        pieces.last_mut().expect("never empty").push(entry);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: [u8; 16] = *b"node-test-uuid!!";

    fn limits() -> KeyLimits {
        KeyLimits::for_block_size(4096).unwrap()
    }

    fn expected(block: u64) -> Expected<'static> {
        Expected {
            block,
            tree: TreeId::Extents,
            level: None,
            bounds: None,
            uuid: &UUID,
            limits: limits(),
            valid_blocks: 0..1000,
        }
    }

    fn leaf() -> NodeImage {
        NodeImage {
            tree: TreeId::Extents,
            level: 0,
            lower: Box::from(&b"a"[..]),
            upper: Some(Box::from(&b"m"[..])),
            body: Body::Leaf(vec![
                (Box::from(&b"apple"[..]), Box::from(&b"1"[..])),
                (Box::from(&b"kiwi"[..]), Box::from(&[][..])),
            ]),
        }
    }

    fn interior() -> NodeImage {
        NodeImage {
            tree: TreeId::Extents,
            level: 2,
            lower: Box::from(&[][..]),
            upper: None,
            body: Body::Interior(vec![(Box::from(&[][..]), 17), (Box::from(&b"q"[..]), 18)]),
        }
    }

    #[test]
    fn leaf_and_interior_nodes_roundtrip() {
        for node in [leaf(), interior()] {
            let bytes = encode(&node, 42, &UUID, 4096).unwrap();
            assert_eq!(bytes.len(), 4096);
            assert_eq!(decode(&bytes, &expected(42)).unwrap(), node);
        }
    }

    #[test]
    fn a_node_read_from_another_block_is_refused_as_misdirected() {
        let bytes = encode(&leaf(), 42, &UUID, 4096).unwrap();
        assert_eq!(
            decode(&bytes, &expected(43)),
            Err(NodeDefect::WrongBlock { recorded: 42 })
        );
    }

    #[test]
    fn wrong_tree_level_bounds_and_uuid_are_each_refused() {
        let bytes = encode(&leaf(), 5, &UUID, 4096).unwrap();
        let mut other_tree = expected(5);
        other_tree.tree = TreeId::Inodes;
        assert!(matches!(
            decode(&bytes, &other_tree),
            Err(NodeDefect::WrongTree { .. })
        ));
        let mut other_level = expected(5);
        other_level.level = Some(1);
        assert!(matches!(
            decode(&bytes, &other_level),
            Err(NodeDefect::WrongLevel { .. })
        ));
        let mut other_bounds = expected(5);
        other_bounds.bounds = Some((b"a", None));
        assert_eq!(decode(&bytes, &other_bounds), Err(NodeDefect::WrongBounds));
        let foreign = [9u8; 16];
        let mut other_fs = expected(5);
        other_fs.uuid = &foreign;
        assert_eq!(
            decode(&bytes, &other_fs),
            Err(NodeDefect::ForeignFilesystem)
        );
    }

    #[test]
    fn every_single_byte_flip_is_refused_without_panicking() {
        for node in [leaf(), interior()] {
            let bytes = encode(&node, 7, &UUID, 1024).unwrap();
            for position in 0..bytes.len() {
                let mut flipped = bytes.clone();
                flipped[position] ^= 0x20;
                assert!(
                    decode(&flipped, &expected(7)).is_err(),
                    "flip at {position} accepted"
                );
            }
        }
    }

    #[test]
    fn resealed_nodes_with_unordered_or_out_of_bounds_keys_are_malformed() {
        let mut unordered = leaf();
        if let Body::Leaf(entries) = &mut unordered.body {
            entries.swap(0, 1);
        }
        let bytes = encode(&unordered, 1, &UUID, 4096).unwrap();
        assert!(matches!(
            decode(&bytes, &expected(1)),
            Err(NodeDefect::Malformed(_))
        ));
        let mut outside = leaf();
        outside.upper = Some(Box::from(&b"b"[..]));
        let bytes = encode(&outside, 1, &UUID, 4096).unwrap();
        assert!(matches!(
            decode(&bytes, &expected(1)),
            Err(NodeDefect::Malformed(_))
        ));
        let mut stray_child = interior();
        if let Body::Interior(entries) = &mut stray_child.body {
            entries[1].1 = 5000;
        }
        let bytes = encode(&stray_child, 1, &UUID, 4096).unwrap();
        assert!(matches!(
            decode(&bytes, &expected(1)),
            Err(NodeDefect::Malformed(_))
        ));
    }

    #[test]
    fn encoding_an_oversized_node_fails_instead_of_truncating() {
        let entries = (0..200u32)
            .map(|index| {
                (
                    Box::from(&index.to_be_bytes()[..]),
                    Box::from(&[7u8; 40][..]),
                )
            })
            .collect();
        let mut node = leaf();
        node.lower = Box::from(&[][..]);
        node.upper = None;
        node.body = Body::Leaf(entries);
        assert!(encode(&node, 1, &UUID, 4096).is_err());
    }

    #[test]
    fn pack_makes_balanced_pieces_that_fit() {
        let entries: Vec<_> = (0..300u32)
            .map(|index| {
                (
                    Box::from(&index.to_be_bytes()[..]),
                    Box::from(&[1u8; 20][..]),
                )
            })
            .collect();
        let capacity = entry_capacity(4096).unwrap();
        let pieces = pack(Body::Leaf(entries), capacity);
        assert_eq!(pieces.len(), 3);
        for piece in &pieces {
            assert!(piece.encoded_bytes() <= capacity);
            assert!(piece.len() >= 90, "unbalanced piece of {}", piece.len());
        }
        assert_eq!(pieces.iter().map(Body::len).sum::<usize>(), 300);
        assert_eq!(pack(Body::Leaf(Vec::new()), capacity).len(), 1);
    }
}
