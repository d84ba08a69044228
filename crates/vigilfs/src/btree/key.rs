//! Tree identities and the size limits on keys and values.
//!
//! Every key space of the filesystem is its own b-tree, named by a [`TreeId`] whose one-byte
//! code is what nodes and journal records store. Keys and values are opaque byte strings
//! ordered lexicographically (the layers above encode integers big-endian so byte order is
//! numeric order). The empty key is the smallest key and is a valid key.
//!
//! Limits exist so that every node, whatever its bounds, holds at least
//! [`MIN_ENTRIES_PER_NODE`] entries of the largest size: splitting then always makes
//! progress and a node never has to hold a single entry larger than a block.

use std::fmt;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// Longest value, in bytes, on filesystems with blocks of 4 KiB or more (smaller blocks get a
/// smaller limit: see [`KeyLimits::for_block_size`]).
pub const MAX_VALUE_BYTES: usize = 1024;

/// Entries of the largest size every node can hold.
pub const MIN_ENTRIES_PER_NODE: usize = 3;

/// The key spaces of a filesystem, each its own b-tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TreeId {
    /// Inodes, keyed by inode number.
    Inodes,
    /// Directory entries, keyed by (directory inode, name hash, name).
    Dirents,
    /// File extents, keyed by (inode, logical offset).
    Extents,
    /// Extended attributes, keyed by (inode, name).
    Xattrs,
    /// The reverse map: physical block range to owner.
    Rmap,
    /// Small filesystem-wide records (counters, the error log index) that fit no other tree.
    Meta,
}

impl TreeId {
    /// Every tree, in code order.
    pub const ALL: [TreeId; 6] = [
        TreeId::Inodes,
        TreeId::Dirents,
        TreeId::Extents,
        TreeId::Xattrs,
        TreeId::Rmap,
        TreeId::Meta,
    ];

    /// The byte stored on disk for this tree.
    pub fn code(self) -> u8 {
        match self {
            TreeId::Inodes => 1,
            TreeId::Dirents => 2,
            TreeId::Extents => 3,
            TreeId::Xattrs => 4,
            TreeId::Rmap => 5,
            TreeId::Meta => 6,
        }
    }

    /// The tree stored as `code`, if any.
    pub fn from_code(code: u8) -> Option<TreeId> {
        TreeId::ALL.into_iter().find(|tree| tree.code() == code)
    }

    /// Whether a read-only mount can do without the tree: one that cannot
    /// be read is salvaged around (see
    /// [`BtreesOptions::salvage`](super::BtreesOptions::salvage)). Not the
    /// inodes (no file, not even the root directory, could be reached), the
    /// reverse map (free space) nor the meta tree (the lost-data records).
    pub fn salvageable(self) -> bool {
        matches!(self, TreeId::Dirents | TreeId::Extents | TreeId::Xattrs)
    }

    /// Position in [`TreeId::ALL`], for per-tree arrays.
    pub fn index(self) -> usize {
        usize::from(self.code() - 1)
    }

    /// Lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            TreeId::Inodes => "inodes",
            TreeId::Dirents => "dirents",
            TreeId::Extents => "extents",
            TreeId::Xattrs => "xattrs",
            TreeId::Rmap => "rmap",
            TreeId::Meta => "meta",
        }
    }
}

impl fmt::Display for TreeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The key and value limits of one filesystem (they depend on its block size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// Longest key.
    pub max_key: usize,
    /// Longest value.
    pub max_value: usize,
}

impl KeyLimits {
    /// The limits for nodes of `block_size` bytes: keys up to [`MAX_KEY_BYTES`], values up
    /// to [`MAX_VALUE_BYTES`] or less, so that [`MIN_ENTRIES_PER_NODE`] of the largest leaf
    /// entries fit in one node. `None` if the block is too small for any b-tree node.
    pub fn for_block_size(block_size: u32) -> Option<KeyLimits> {
        let capacity = super::node::entry_capacity(block_size)?;
        let per_entry = capacity / MIN_ENTRIES_PER_NODE;
        let max_value = per_entry
            .checked_sub(super::node::LEAF_ENTRY_OVERHEAD + MAX_KEY_BYTES)?
            .min(MAX_VALUE_BYTES);
        (max_value >= 16).then_some(KeyLimits {
            max_key: MAX_KEY_BYTES,
            max_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_codes_roundtrip_and_index_densely() {
        for (position, tree) in TreeId::ALL.into_iter().enumerate() {
            assert_eq!(TreeId::from_code(tree.code()), Some(tree));
            assert_eq!(tree.index(), position);
        }
        assert_eq!(TreeId::from_code(0), None);
        assert_eq!(TreeId::from_code(200), None);
    }

    #[test]
    fn value_limit_shrinks_with_the_block_size_and_caps_at_one_kib() {
        assert_eq!(
            KeyLimits::for_block_size(4096).unwrap().max_value,
            MAX_VALUE_BYTES
        );
        let small = KeyLimits::for_block_size(1024).unwrap();
        assert!(small.max_value < MAX_VALUE_BYTES && small.max_value >= 16);
        assert!(KeyLimits::for_block_size(256).is_none());
    }
}
