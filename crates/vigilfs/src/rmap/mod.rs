//! The reverse map: for every used block of the main region, who owns it.
//!
//! A media failure is only useful if it can be pinned on its victims: `notify_failure`
//! (DESIGN.md) turns a failed physical range into the files and metadata that own it with
//! [`owners`]. The map is the [`TreeId::Rmap`] b-tree, one record per owned run (format in
//! `record.rs`): file data extents, inserted and removed by the file layer in the same
//! transaction as its extent keys ([`insert_update`], [`remove_update`], [`insert`],
//! [`remove`]), and b-tree nodes, one block each, inserted and removed by writeback in the
//! same journal entry as the pointer change that makes or retires them ([`node_updates`],
//! called through the b-tree layer's owner-index hook by the allocator).
//!
//! # Invariants
//!
//! * Records never overlap: every used block has exactly one owner. The allocator checks
//!   this when it rebuilds free space from the map at mount.
//! * Every node block of every tree except the rmap tree has a `Node` record with its tree
//!   and level; no `Node` record names a block that is not such a node.
//! * **The exception:** the rmap tree's own nodes have no records. Recording them would make
//!   every write of an rmap node change the rmap again, and writeback would never finish (XFS
//!   makes the same exception for its rmap b-tree blocks). They are found instead by walking
//!   the rmap tree, which is small next to the data it describes; [`RmapNodes`] keeps the
//!   result in memory, rebuilt at mount and kept current by writeback, and [`owners`]
//!   reports them as `Node { tree: Rmap, level }` like any other owner.
//! * A record is at most [`MAX_EXTENT_BLOCKS`] long, so a query need look back at most
//!   that far for a record that starts before its range.

mod record;

use std::collections::BTreeMap;
use std::sync::Mutex;

use thiserror::Error;

pub use record::{decode_key, encode_key, Owner, RmapRecord, KEY_BYTES, MAX_EXTENT_BLOCKS};

use crate::btree::{BtreeError, Btrees, Transaction, TreeId, Update};

/// The reverse map's errors.
#[derive(Debug, Error)]
pub enum RmapError {
    /// A record's value is malformed (corrupt, or built with impossible fields).
    #[error("rmap record at block {start}: bad {field}: {detail}")]
    Malformed {
        /// The record's start block.
        start: u64,
        /// Which field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A key is not 8 bytes.
    #[error("rmap key of {length} bytes, not {KEY_BYTES}")]
    MalformedKey {
        /// Its length.
        length: usize,
    },
    /// Reading or updating the tree failed.
    #[error("rmap b-tree: {0}")]
    Btree(#[from] BtreeError),
}

/// The update that inserts `record` (after validating it), for a b-tree transaction.
pub fn insert_update(record: &RmapRecord) -> Result<Update, RmapError> {
    record.validate()?;
    Ok(Update::Put {
        tree: TreeId::Rmap,
        key: record.key().to_vec(),
        value: record.encode_value(),
    })
}

/// The update that removes the record starting at `start`.
pub fn remove_update(start: u64) -> Update {
    Update::Delete {
        tree: TreeId::Rmap,
        key: encode_key(start).to_vec(),
    }
}

/// Adds the insertion of `record` to `transaction`.
pub fn insert(transaction: &mut Transaction<'_>, record: &RmapRecord) -> Result<(), RmapError> {
    record.validate()?;
    transaction.put(TreeId::Rmap, &record.key(), &record.encode_value())?;
    Ok(())
}

/// Adds the removal of the record starting at `start` to `transaction`.
pub fn remove(transaction: &mut Transaction<'_>, start: u64) -> Result<(), RmapError> {
    transaction.delete(TreeId::Rmap, &encode_key(start))?;
    Ok(())
}

/// The rmap updates for a node change of `tree`: `Node` records for the `(level, block)`
/// nodes `added`, removal of those of `removed`. None for the rmap tree itself (see the
/// module comment).
pub fn node_updates(tree: TreeId, added: &[(u8, u64)], removed: &[(u8, u64)]) -> Vec<Update> {
    if tree == TreeId::Rmap {
        return Vec::new();
    }
    let removals = removed.iter().map(|&(_, block)| remove_update(block));
    let insertions = added.iter().map(|&(level, block)| Update::Put {
        tree: TreeId::Rmap,
        key: encode_key(block).to_vec(),
        value: RmapRecord {
            start: block,
            blocks: 1,
            owner: Owner::Node { tree, level },
        }
        .encode_value(),
    });
    removals.chain(insertions).collect()
}

/// The blocks of the rmap tree's own nodes (block → level), which have no records. Rebuilt
/// at mount by walking the rmap tree, then kept current by writeback through the allocator.
#[derive(Debug, Default)]
pub struct RmapNodes {
    blocks: Mutex<BTreeMap<u64, u8>>,
}

impl RmapNodes {
    /// An empty set.
    pub fn new() -> RmapNodes {
        RmapNodes::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u8>> {
        self.blocks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the whole set (at mount).
    pub fn replace(&self, nodes: impl IntoIterator<Item = (u8, u64)>) {
        *self.lock() = nodes
            .into_iter()
            .map(|(level, block)| (block, level))
            .collect();
    }

    /// Applies one journaled node change of the rmap tree.
    pub fn apply(&self, added: &[(u8, u64)], removed: &[(u8, u64)]) {
        let mut blocks = self.lock();
        for (_, block) in removed {
            blocks.remove(block);
        }
        for &(level, block) in added {
            blocks.insert(block, level);
        }
    }

    /// Every rmap-tree node as (level, block), in block order.
    pub fn nodes(&self) -> Vec<(u8, u64)> {
        self.lock()
            .iter()
            .map(|(&block, &level)| (level, block))
            .collect()
    }

    /// The rmap-tree nodes in `start..end`, as records.
    fn records_in(&self, start: u64, end: u64) -> Vec<RmapRecord> {
        self.lock()
            .range(start..end)
            .map(|(&block, &level)| RmapRecord {
                start: block,
                blocks: 1,
                owner: Owner::Node {
                    tree: TreeId::Rmap,
                    level,
                },
            })
            .collect()
    }
}

/// Every record of the map, in block order (rmap-tree nodes not included).
pub fn records(btrees: &Btrees) -> Result<Vec<RmapRecord>, RmapError> {
    btrees
        .range(TreeId::Rmap, &[], None)
        .map(|entry| {
            let (key, value) = entry?;
            RmapRecord::decode(&key, &value)
        })
        .collect()
}

/// Every owner of a block in `start..start + blocks`, in block order: records that start
/// inside the range, the one record that may start before it and reach into it, and the
/// rmap tree's own nodes in the range (from `rmap_nodes`). A corrupt record in the way is an
/// error, never skipped: a failure must not be attributed to fewer owners than it has.
pub fn owners(
    btrees: &Btrees,
    rmap_nodes: &RmapNodes,
    start: u64,
    blocks: u64,
) -> Result<Vec<RmapRecord>, RmapError> {
    if blocks == 0 {
        return Ok(Vec::new());
    }
    let end = start.saturating_add(blocks);
    let mut found = Vec::new();
    if let Some(before) = record_reaching_into(btrees, start)? {
        found.push(before);
    }
    // `end` may be u64::MAX, whose key is the largest: scanning to the end covers it.
    let end_key = (end != u64::MAX).then(|| encode_key(end));
    for entry in btrees.range(
        TreeId::Rmap,
        &encode_key(start),
        end_key.as_ref().map(|k| &k[..]),
    ) {
        let (key, value) = entry?;
        found.push(RmapRecord::decode(&key, &value)?);
    }
    found.extend(rmap_nodes.records_in(start, end));
    found.sort_unstable();
    Ok(found)
}

/// The record that starts before `start` and covers it, if any. Records do not overlap, so
/// only the last record starting before `start` can; it starts at most
/// `MAX_EXTENT_BLOCKS - 1` blocks back. The search looks back in doubling windows, so the
/// common case (a neighbour close by) reads a leaf or two.
fn record_reaching_into(btrees: &Btrees, start: u64) -> Result<Option<RmapRecord>, RmapError> {
    let mut window_end = start;
    let mut reach = 1u64;
    while window_end > 0 {
        let window_start = start.saturating_sub(reach);
        let entries = btrees.scan(
            TreeId::Rmap,
            &encode_key(window_start),
            Some(&encode_key(window_end)),
            usize::MAX,
        )?;
        if let Some((key, value)) = entries.last() {
            let record = RmapRecord::decode(key, value)?;
            return Ok((record.end() > start).then_some(record));
        }
        if reach >= MAX_EXTENT_BLOCKS - 1 {
            break;
        }
        window_end = window_start;
        reach = (reach * 2).min(MAX_EXTENT_BLOCKS - 1);
    }
    Ok(None)
}
