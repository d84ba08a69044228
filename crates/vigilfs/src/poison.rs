//! Poison: file blocks whose data was lost to a media failure, kept so
//! that reads of exactly those blocks fail with `EIO` — this mount and
//! every later one — until the data is replaced.
//!
//! A poison run says: file blocks `first..first + blocks` of inode `ino`
//! were mapped to device blocks `physical..` when the failure hit them and
//! nothing could rescue them. It lives as long as that mapping does: any
//! extent change that maps one of those file blocks elsewhere or drops it
//! (a rewrite landing at writeback, truncate, punch, unlink, a rescue of a
//! cached copy) drops the poison of that block in the same transaction
//! ([`reconcile`], called by the extent map's one commit path). So the
//! invariant fsck checks holds at every commit: **every poisoned block is
//! mapped by a written extent to the physical block the run records.**
//!
//! The runs are a keyspace of the Meta b-tree (nodes carry the magic,
//! version and checksum), read into memory at open ([`PoisonMap::load`])
//! because every read that misses the page cache asks them:
//!
//! ```text
//! key    b'X' | ino u64 BE | first file block u64 BE          (17 bytes)
//! value  version 1 u8 | blocks u32 LE | physical u64 LE | since u64 LE
//!        | cause u8 (the bad-block list's codes)               (22 bytes)
//! ```
//!
//! A run never spans two extents (it is made from one reverse-map record,
//! and [`reconcile`] splits it when its extent is split), so the runs of
//! an extent all start inside it. The in-memory map is changed only after
//! the transaction that changes the records commits, by the same caller,
//! under the metadata's record lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError as LockPoisoned, RwLock, RwLockReadGuard, RwLockWriteGuard};

use thiserror::Error;

use crate::alloc::FailureCause;
use crate::btree::{BtreeError, Btrees, Transaction, TreeId};
use crate::format::meta_record::{word_at, MetaFrame};

/// The key prefix of poison records in the Meta tree.
pub const KEY_PREFIX: u8 = b'X';

const VERSION: u8 = 1;
const KEY_BYTES: usize = 17;
const VALUE_BYTES: usize = 22;

/// The framing of these records (see [`MetaFrame`]).
const FRAME: MetaFrame = MetaFrame {
    prefix: KEY_PREFIX,
    key_bytes: KEY_BYTES,
    value_bytes: VALUE_BYTES,
    version: VERSION,
};

/// One poisoned run of a file's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoisonRun {
    /// The inode.
    pub ino: u64,
    /// First poisoned file block.
    pub first: u64,
    /// File blocks in the run (at least 1).
    pub blocks: u32,
    /// The device block `first` was mapped to when the data was lost.
    pub physical: u64,
    /// When it was poisoned (seconds since the epoch).
    pub since: u64,
    /// Why.
    pub cause: FailureCause,
}

impl PoisonRun {
    /// One past the last file block.
    pub fn end(&self) -> u64 {
        self.first + u64::from(self.blocks)
    }

    /// The device block file block `block` of the run was mapped to.
    pub fn physical_of(&self, block: u64) -> u64 {
        self.physical + (block - self.first)
    }
}

/// Why poison records could not be read or written.
#[derive(Debug, Error)]
pub enum PoisonRecordError {
    /// A record does not decode.
    #[error("poison record {key:02x?}: {reason}")]
    Malformed {
        /// The key as found.
        key: Vec<u8>,
        /// What is wrong.
        reason: String,
    },
    /// The b-trees failed.
    #[error("b-trees: {0}")]
    Btree(#[from] BtreeError),
}

/// The key of the run of `ino` starting at file block `first`.
pub fn key(ino: u64, first: u64) -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    key[0] = KEY_PREFIX;
    key[1..9].copy_from_slice(&ino.to_be_bytes());
    key[9..].copy_from_slice(&first.to_be_bytes());
    key
}

/// The key range of every poison record: `(start, end)`.
pub fn key_range() -> ([u8; 1], [u8; 1]) {
    ([KEY_PREFIX], [KEY_PREFIX + 1])
}

/// The value bytes of `run`.
pub fn encode(run: &PoisonRun) -> Vec<u8> {
    let mut value = Vec::with_capacity(VALUE_BYTES);
    value.push(VERSION);
    value.extend_from_slice(&run.blocks.to_le_bytes());
    value.extend_from_slice(&run.physical.to_le_bytes());
    value.extend_from_slice(&run.since.to_le_bytes());
    value.push(run.cause.code());
    value
}

/// Decodes and validates a record.
pub fn decode(key: &[u8], value: &[u8]) -> Result<PoisonRun, PoisonRecordError> {
    let fail = |reason: String| PoisonRecordError::Malformed {
        key: key.to_vec(),
        reason,
    };
    FRAME.check(key, value).map_err(fail)?;
    let ino = u64::from_be_bytes(word_at(key, 1));
    let first = u64::from_be_bytes(word_at(key, 9));
    let blocks = u32::from_le_bytes([value[1], value[2], value[3], value[4]]);
    let physical = u64::from_le_bytes(word_at(value, 5));
    let since = u64::from_le_bytes(word_at(value, 13));
    let cause = FailureCause::from_code(value[21])
        .ok_or_else(|| fail(format!("unknown cause {}", value[21])))?;
    if blocks == 0 {
        return Err(fail("an empty run".into()));
    }
    if first.checked_add(u64::from(blocks)).is_none()
        || physical.checked_add(u64::from(blocks)).is_none()
    {
        return Err(fail("the run wraps past the last block".into()));
    }
    Ok(PoisonRun {
        ino,
        first,
        blocks,
        physical,
        since,
        cause,
    })
}

/// Adds the record of `run` to `transaction`.
pub fn put(transaction: &mut Transaction<'_>, run: &PoisonRun) -> Result<(), BtreeError> {
    transaction.put(TreeId::Meta, &key(run.ino, run.first), &encode(run))
}

/// Removes the record of the run of `ino` starting at `first`.
pub fn delete(transaction: &mut Transaction<'_>, ino: u64, first: u64) -> Result<(), BtreeError> {
    transaction.delete(TreeId::Meta, &key(ino, first))
}

/// Removes every record of `ino` whose run starts in file blocks
/// `first..end`: all the runs of an extent covering those blocks.
pub fn delete_within(
    transaction: &mut Transaction<'_>,
    ino: u64,
    first: u64,
    end: u64,
) -> Result<(), BtreeError> {
    transaction.delete_range(TreeId::Meta, &key(ino, first), Some(&key(ino, end)))
}

/// What one extent change does to the poison of the blocks it touched:
/// runs to delete and the runs (pieces of them) to write in their place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Runs whose records go.
    pub removed: Vec<PoisonRun>,
    /// Pieces that stay poisoned, written as records of their own.
    pub kept: Vec<PoisonRun>,
}

impl Reconciled {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty()
    }

    /// Adds the record changes to `transaction`.
    pub fn stage(&self, transaction: &mut Transaction<'_>) -> Result<(), BtreeError> {
        for run in &self.removed {
            delete(transaction, run.ino, run.first)?;
        }
        for run in &self.kept {
            put(transaction, run)?;
        }
        Ok(())
    }
}

/// Splits `runs` after an extent change: a block stays poisoned only while
/// `mapped(file block)` — the written device block the file block maps to
/// now — is still the one the run recorded. Runs that keep every block are
/// left alone (neither removed nor rewritten).
pub fn reconcile(runs: &[PoisonRun], mapped: impl Fn(u64) -> Option<u64>) -> Reconciled {
    let mut result = Reconciled::default();
    for run in runs {
        let still: Vec<bool> = (run.first..run.end())
            .map(|block| mapped(block) == Some(run.physical_of(block)))
            .collect();
        if still.iter().all(|&kept| kept) {
            continue;
        }
        result.removed.push(*run);
        let mut at = 0usize;
        while at < still.len() {
            if !still[at] {
                at += 1;
                continue;
            }
            let start = at;
            while at < still.len() && still[at] {
                at += 1;
            }
            let first = run.first + start as u64;
            result.kept.push(PoisonRun {
                first,
                blocks: (at - start) as u32,
                physical: run.physical_of(first),
                ..*run
            });
        }
    }
    result
}

/// The poisoned runs of one filesystem, in memory. See the module comment.
#[derive(Debug, Default)]
pub struct PoisonMap {
    runs: RwLock<BTreeMap<(u64, u64), PoisonRun>>,
    /// Runs held: reads skip the map entirely while it is zero.
    count: AtomicUsize,
}

impl PoisonMap {
    /// An empty map.
    pub fn new() -> PoisonMap {
        PoisonMap::default()
    }

    /// Every record of `trees`, validated.
    pub fn load(trees: &Btrees) -> Result<PoisonMap, PoisonRecordError> {
        let map = PoisonMap::new();
        let (start, end) = key_range();
        for entry in trees.range(TreeId::Meta, &start, Some(&end)) {
            let (key, value) = entry?;
            map.insert(decode(&key, &value)?);
        }
        Ok(map)
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<(u64, u64), PoisonRun>> {
        // Every change is one map operation and a counter update: a panic
        // elsewhere leaves a consistent map.
        self.runs.read().unwrap_or_else(LockPoisoned::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<(u64, u64), PoisonRun>> {
        self.runs.write().unwrap_or_else(LockPoisoned::into_inner)
    }

    /// Whether no run is held.
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Runs held.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// The runs of `ino` with a block in `first..end`, in block order.
    pub fn runs_within(&self, ino: u64, first: u64, end: u64) -> Vec<PoisonRun> {
        if self.is_empty() || first >= end {
            return Vec::new();
        }
        // A run starts at most u32::MAX blocks before a block it covers.
        let from = first.saturating_sub(u64::from(u32::MAX));
        self.read()
            .range((ino, from)..(ino, end))
            .map(|(_, run)| *run)
            .filter(|run| run.end() > first)
            .collect()
    }

    /// The first poisoned file block of `ino` in `first..end`, with its run.
    pub fn first_poisoned(&self, ino: u64, first: u64, end: u64) -> Option<(u64, PoisonRun)> {
        self.runs_within(ino, first, end)
            .into_iter()
            .next()
            .map(|run| (run.first.max(first), run))
    }

    /// Every run, in (inode, block) order.
    pub fn all(&self) -> Vec<PoisonRun> {
        self.read().values().copied().collect()
    }

    /// Adds (or replaces) a run.
    pub fn insert(&self, run: PoisonRun) {
        if self.write().insert((run.ino, run.first), run).is_none() {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Applies a committed [`Reconciled`].
    pub fn apply(&self, change: &Reconciled) {
        let mut runs = self.write();
        for run in &change.removed {
            if runs.remove(&(run.ino, run.first)).is_some() {
                self.count.fetch_sub(1, Ordering::AcqRel);
            }
        }
        for run in &change.kept {
            if runs.insert((run.ino, run.first), *run).is_none() {
                self.count.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Drops every run of `ino` (deleted: its records went with it).
    pub fn forget_inode(&self, ino: u64) {
        let mut runs = self.write();
        let gone: Vec<(u64, u64)> = runs
            .range((ino, 0)..=(ino, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in gone {
            runs.remove(&key);
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Map;

    fn run(first: u64, blocks: u32, physical: u64) -> PoisonRun {
        PoisonRun {
            ino: 7,
            first,
            blocks,
            physical,
            since: 1_700_000_000,
            cause: FailureCause::Media,
        }
    }

    #[test]
    fn records_roundtrip_and_every_malformation_is_an_error() {
        let sample = run(12, 3, 900);
        let value = encode(&sample);
        assert_eq!(decode(&key(7, 12), &value).unwrap(), sample);
        for length in 0..value.len() {
            assert!(decode(&key(7, 12), &value[..length]).is_err());
        }
        let mut future = value.clone();
        future[0] = 9;
        assert!(decode(&key(7, 12), &future).is_err());
        let mut empty = value.clone();
        empty[1..5].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode(&key(7, 12), &empty).is_err());
        let mut wrapping = value.clone();
        wrapping[5..13].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&key(7, 12), &wrapping).is_err());
        let mut cause = value.clone();
        cause[21] = 0;
        assert!(decode(&key(7, 12), &cause).is_err());
        assert!(decode(&key(7, 12)[..10], &value).is_err());
        assert!(key(7, u64::MAX) < key(8, 0));
    }

    #[test]
    fn a_rewritten_middle_block_splits_the_run() {
        // Blocks 10..14 at 500..504; block 11 now lives at 800.
        let runs = [run(10, 4, 500)];
        let mapped = |block: u64| Some(if block == 11 { 800 } else { 490 + block });
        let change = reconcile(&runs, mapped);
        assert_eq!(change.removed, runs);
        assert_eq!(change.kept, vec![run(10, 1, 500), run(12, 2, 502)]);
        // Nothing moved: nothing to do.
        assert!(reconcile(&runs, |block| Some(490 + block)).is_empty());
        // Truncated away: all gone.
        let gone = reconcile(&runs, |_| None);
        assert!(gone.kept.is_empty() && gone.removed == runs);
    }

    #[test]
    fn the_map_finds_runs_reaching_into_a_range_and_counts_them() {
        let map = PoisonMap::new();
        assert!(map.first_poisoned(7, 0, 100).is_none());
        map.insert(run(10, 4, 500));
        map.insert(PoisonRun {
            ino: 8,
            ..run(0, 1, 9)
        });
        assert_eq!(map.len(), 2);
        assert_eq!(
            map.first_poisoned(7, 12, 20).map(|(block, _)| block),
            Some(12)
        );
        assert!(map.first_poisoned(7, 14, 20).is_none());
        assert!(map.first_poisoned(7, 0, 10).is_none());
        map.forget_inode(7);
        assert_eq!(map.len(), 1);
        assert!(map.first_poisoned(7, 0, 100).is_none());
    }

    proptest! {
        /// The map and reconcile against a model: a set of poisoned
        /// (file block → device block) pairs of one inode, where each
        /// remap of a block drops its poison and nothing else does.
        #[test]
        fn poison_follows_the_block_map(
            poisoned in proptest::collection::vec((0u64..64, 1u32..8), 1..6),
            remaps in proptest::collection::vec((0u64..72, any::<bool>()), 0..40),
        ) {
            let map = PoisonMap::new();
            let mut model: Map<u64, u64> = Map::new();
            // The file maps block b to 1000 + b at first; a remap moves it
            // (`true`) or drops it (`false`).
            let mut mapping: Map<u64, u64> = (0..80).map(|block| (block, 1000 + block)).collect();
            let mut taken = std::collections::BTreeSet::new();
            for (first, blocks) in poisoned {
                if (first..first + u64::from(blocks)).any(|block| taken.contains(&block)) {
                    continue;
                }
                taken.extend(first..first + u64::from(blocks));
                map.insert(run(first, blocks, 1000 + first));
                for block in first..first + u64::from(blocks) {
                    model.insert(block, 1000 + block);
                }
            }
            let mut next = 5000;
            for (block, moved) in remaps {
                if moved {
                    mapping.insert(block, next);
                    next += 1;
                } else {
                    mapping.remove(&block);
                }
                model.remove(&block);
                let touched = map.runs_within(7, block, block + 1);
                let change = reconcile(&touched, |at| mapping.get(&at).copied());
                map.apply(&change);
                let held: Map<u64, u64> = map
                    .all()
                    .iter()
                    .flat_map(|run| (run.first..run.end()).map(move |b| (b, run.physical_of(b))))
                    .collect();
                prop_assert_eq!(&held, &model);
                prop_assert_eq!(map.len(), map.all().len());
                for probe in 0..80 {
                    let poisoned = map.first_poisoned(7, probe, probe + 1).is_some();
                    prop_assert_eq!(poisoned, model.contains_key(&probe));
                }
            }
        }
    }
}
