//! Transactions: updates to several trees gathered, then applied atomically.
//!
//! A [`Transaction`] collects puts, deletes and range deletes. Its reads see the trees'
//! committed state plus its own writes. [`Transaction::commit`] then, under the state lock:
//!
//! 1. loads every node the updates touch, and checks that enough blocks are free for the
//!    splits and merges they may cause plus the writeback of every dirty node, leaving what
//!    the allocator keeps back from ordinary transactions ([`Transaction::may_use_reserve`]
//!    lifts that for deletions and the writeback of promised data). Short of space while
//!    blocks freed by earlier commits wait for those to be durable, it flushes the journal
//!    and checks again; while dirty nodes hold room (after a replay, every node the journal
//!    changed), it writes them back and checks again; only then is it a clean
//!    [`BtreeError::NoSpace`]. Any failure here changes nothing;
//! 2. takes ONE journal reservation and appends ONE record holding every update, so the
//!    transaction is in one journal entry: replay sees all of it or none of it. If the
//!    journal has no room until pinned nodes are written, which needs the state lock this
//!    commit holds, it lets go of the lock, reclaims, and starts over at step 1 (once);
//! 3. applies the updates to the cached leaves, which pin the journal at the reservation's
//!    seq, and releases the reservation;
//! 4. splits oversized and merges underfull leaves (writes; a failure there is recorded in
//!    the status and retried by later writeback, since the transaction itself is committed).
//!
//! Step 3 cannot fail on I/O (step 1 loaded everything). If it failed anyway, memory and
//! journal would disagree, so the trees enter their error state (remount recovers from the
//! journal). Concurrent transactions serialise on the state lock; the later commit wins.

use std::collections::{BTreeMap, BTreeSet};

use super::record::{encode_transaction, transaction_bytes, Update};
use super::writeback::WriteRounds;
use super::{usable, usable_tree, BtreeError, Btrees, TreeId};
use crate::journal::{record_bytes, DataClaim, JournalError};

/// How much of the allocator's reserve a transaction may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReserveUse {
    None,
    InPlace,
    All,
}

/// Updates to commit atomically. Dropping it without committing discards them.
pub struct Transaction<'a> {
    btrees: &'a Btrees,
    updates: Vec<Update>,
    /// This transaction's latest word on single keys (`None`: deleted).
    written: BTreeMap<(TreeId, Vec<u8>), Option<Vec<u8>>>,
    /// Ranges it deleted (single keys written after a range delete live in `written`).
    deleted_ranges: Vec<(TreeId, Vec<u8>, Option<Vec<u8>>)>,
    /// Whether it may take the blocks the allocator keeps from ordinary transactions.
    reserve: ReserveUse,
    /// Data written outside the journal that the updates refer to.
    claims: Vec<DataClaim>,
}

impl<'a> Transaction<'a> {
    pub(super) fn new(btrees: &'a Btrees) -> Transaction<'a> {
        Transaction {
            btrees,
            updates: Vec::new(),
            written: BTreeMap::new(),
            deleted_ranges: Vec::new(),
            reserve: ReserveUse::None,
            claims: Vec::new(),
        }
    }

    /// Says that the updates refer to data just written outside the journal
    /// (the writes completed): the commit's entry carries `claim`, so one
    /// flush after the commit makes both durable (see the journal's data
    /// claims).
    pub fn claim_data(&mut self, claim: DataClaim) {
        self.claims.push(claim);
    }

    /// Lets this transaction use the space the allocator keeps back from ordinary ones
    /// ([`NodeAllocator::keep`](super::NodeAllocator::keep)): for deletions, truncates and
    /// the writeback of data that was promised its space, so a full filesystem can always
    /// be emptied and accepted data always lands.
    pub fn may_use_reserve(&mut self) {
        self.reserve = ReserveUse::All;
    }

    /// Lets this transaction use more of the reserve than ordinary ones, though not all
    /// ([`NodeAllocator::keep_for_changes_in_place`](super::NodeAllocator::keep_for_changes_in_place)):
    /// for changes that add nothing lasting (an inode's attributes rewritten, a name
    /// moved), so a filesystem that creates filled still takes chmod, utimes and rename, as
    /// ext4 does. Each change frees the old copies of the nodes it rewrites.
    pub fn changes_in_place(&mut self) {
        if self.reserve == ReserveUse::None {
            self.reserve = ReserveUse::InPlace;
        }
    }

    /// Number of updates gathered.
    pub fn len(&self) -> usize {
        self.updates.len()
    }

    /// Whether no update was gathered.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    /// Sets `key` to `value` in `tree`.
    pub fn put(&mut self, tree: TreeId, key: &[u8], value: &[u8]) -> Result<(), BtreeError> {
        self.btrees.shared.check_key(key)?;
        self.btrees.shared.check_value(value)?;
        self.written
            .insert((tree, key.to_vec()), Some(value.to_vec()));
        self.updates.push(Update::Put {
            tree,
            key: key.to_vec(),
            value: value.to_vec(),
        });
        Ok(())
    }

    /// Removes `key` from `tree`.
    pub fn delete(&mut self, tree: TreeId, key: &[u8]) -> Result<(), BtreeError> {
        self.btrees.shared.check_key(key)?;
        self.written.insert((tree, key.to_vec()), None);
        self.updates.push(Update::Delete {
            tree,
            key: key.to_vec(),
        });
        Ok(())
    }

    /// Removes every key of `tree` in `start..end` (`end` `None`: to the end).
    pub fn delete_range(
        &mut self,
        tree: TreeId,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<(), BtreeError> {
        self.btrees.shared.check_key(start)?;
        if let Some(end) = end {
            self.btrees.shared.check_key(end)?;
        }
        self.written
            .retain(|(written_tree, key), _| *written_tree != tree || !in_range(key, start, end));
        self.deleted_ranges
            .push((tree, start.to_vec(), end.map(<[u8]>::to_vec)));
        self.updates.push(Update::DeleteRange {
            tree,
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
        });
        Ok(())
    }

    fn deleted_by_range(&self, tree: TreeId, key: &[u8]) -> bool {
        self.deleted_ranges.iter().any(|(range_tree, start, end)| {
            *range_tree == tree && in_range(key, start, end.as_deref())
        })
    }

    /// The value of `key` in `tree` as this transaction would leave it.
    pub fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, BtreeError> {
        if let Some(value) = self.written.get(&(tree, key.to_vec())) {
            return Ok(value.clone());
        }
        if self.deleted_by_range(tree, key) {
            return Ok(None);
        }
        self.btrees.get(tree, key)
    }

    /// Up to `limit` entries of `tree` in `start..end` as this transaction would leave them.
    pub fn scan(
        &self,
        tree: TreeId,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<super::Entry>, BtreeError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        // Committed entries, minus what this transaction deleted or overwrote, until enough
        // survive; then this transaction's own writes in the same span.
        for entry in self.btrees.range(tree, start, end) {
            let (key, value) = entry?;
            if merged.len() >= limit {
                break;
            }
            if self.written.contains_key(&(tree, key.clone())) || self.deleted_by_range(tree, &key)
            {
                continue;
            }
            merged.insert(key, value);
        }
        for ((written_tree, key), value) in &self.written {
            if *written_tree == tree && in_range(key, start, end) {
                if let Some(value) = value {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// Commits: all updates or none, in one journal entry. Returns the entry's seq (for
    /// [`Journal::flush_seq`](crate::journal::Journal::flush_seq)), or `None` if there was
    /// nothing to commit. Not durable until the seq is flushed; see
    /// [`Transaction::commit_durable`].
    pub fn commit(self) -> Result<Option<u64>, BtreeError> {
        if self.updates.is_empty() {
            return Ok(None);
        }
        let shared = &self.btrees.shared;
        let record = encode_transaction(&self.updates);
        debug_assert_eq!(record.len(), transaction_bytes(&self.updates));
        let claim_bytes: usize = self.claims.iter().map(DataClaim::record_bytes).sum();
        let mut flushed = false;
        let mut wrote_dirty = false;
        let mut reclaimed = false;
        let (mut state, mut reservation) = loop {
            // Let reclaim write pinned nodes now, while this thread does not hold the lock
            // (a reclaim started under the lock must decline to write nodes).
            let _ = shared.journal.reclaim_if_needed();
            let mut state = shared.lock_state();
            usable(&state)?;
            for update in &self.updates {
                usable_tree(&state, update.tree())?;
            }
            // 1. Load everything, and check space.
            let needed = self.blocks_needed(&mut state)?;
            let keep = match self.reserve {
                ReserveUse::None => shared.allocator.keep(),
                ReserveUse::InPlace => shared.allocator.keep_for_changes_in_place(),
                ReserveUse::All => 0,
            };
            let available = shared.allocator.available();
            if available >= needed.saturating_add(keep) {
                // 2. One reservation: the record and the data claims.
                match shared
                    .journal
                    .reserve(record_bytes(record.len()) + claim_bytes)
                {
                    Ok(reservation) => break (state, reservation),
                    Err(JournalError::PinFlushDeclined { .. }) if !reclaimed => {
                        // The journal is out of room until pinned nodes are written, which
                        // needs the lock this thread holds: let go of it, reclaim, and
                        // start over (the trees may have changed meanwhile).
                        drop(state);
                        reclaimed = true;
                        shared.journal.reclaim_for_entry()?;
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            let may_settle = !flushed && shared.allocator.pending() > 0;
            let may_write_dirty = !wrote_dirty && state.cache.dirty_count() > 0;
            if !may_settle && !may_write_dirty {
                return Err(BtreeError::NoSpace {
                    needed: needed.saturating_add(keep),
                    available,
                });
            }
            drop(state);
            if may_settle {
                // Blocks freed by earlier commits become reusable once those are durable:
                // flush the journal and look again, once.
                shared.journal.settle()?;
                flushed = true;
            } else {
                // Dirty nodes hold room (each is counted a block for its writeback):
                // write them, as far as the space allows, and look again, once.
                shared.write_dirty_in_rounds(WriteRounds::ForRoom)?;
                wrote_dirty = true;
            }
        };

        reservation.append(&record)?;
        for claim in &self.claims {
            reservation.claim(claim)?;
        }
        let seq = reservation.seq();

        // 3. Apply under the reservation, so every leaf pins `seq` before it is released.
        let mut touched = Vec::new();
        let mut apply = |state: &mut super::State| -> Result<(), BtreeError> {
            for update in &self.updates {
                match update {
                    Update::Put { tree, key, value } => {
                        touched.push(shared.apply_put(state, *tree, key, value, seq)?);
                    }
                    Update::Delete { tree, key } => {
                        touched.extend(shared.apply_delete(state, *tree, key, seq)?);
                    }
                    Update::DeleteRange { tree, start, end } => {
                        touched.extend(shared.apply_delete_range(
                            state,
                            *tree,
                            start,
                            end.as_deref(),
                            seq,
                        )?);
                    }
                }
            }
            Ok(())
        };
        if let Err(error) = apply(&mut state) {
            let why = format!("applying journaled transaction {seq} failed: {error}");
            state.failed = Some(why.clone());
            return Err(BtreeError::Failed(why));
        }
        drop(reservation);

        // 4. Split and merge.
        touched.sort_unstable();
        touched.dedup();
        let candidates = touched
            .into_iter()
            .map(|slot| (slot, state.cache.node(slot).serial))
            .collect();
        if let Err(error) = shared.restructure(&mut state, candidates) {
            shared.note_writeback_failure(&mut state, &error);
        }
        shared.relieve_pressure(&mut state);
        Ok(Some(seq))
    }

    /// Loads every node the updates touch and returns the blocks the commit may need: the
    /// splits of leaves the puts overflow, a merge along the path of every leaf touched,
    /// the writeback of every dirty node, and paths of the owner index.
    fn blocks_needed(&self, state: &mut super::State) -> Result<u64, BtreeError> {
        let shared = &self.btrees.shared;
        let mut growth: BTreeMap<usize, usize> = BTreeMap::new();
        // Leaves a key update touches, and leaves range deletes empty (in runs, which
        // merges write back as few pieces).
        let mut leaves: BTreeSet<usize> = BTreeSet::new();
        let mut range_leaves: BTreeSet<usize> = BTreeSet::new();
        let mut ranges: u64 = 0;
        for update in &self.updates {
            match update {
                Update::Put { tree, key, value } => {
                    let touched = shared.load_for_update(state, *tree, key, None)?;
                    *growth.entry(touched[0]).or_default() +=
                        super::node::leaf_entry_bytes(key.len(), value.len());
                    leaves.extend(touched);
                }
                Update::Delete { tree, key } => {
                    leaves.extend(shared.load_for_update(state, *tree, key, None)?);
                }
                Update::DeleteRange { tree, start, end } => {
                    range_leaves.extend(shared.load_for_update(
                        state,
                        *tree,
                        start,
                        Some(end.as_deref()),
                    )?);
                    ranges += 1;
                }
            }
        }
        let capacity = shared.geometry.capacity;
        let height = state
            .roots
            .iter()
            .map(|&slot| u64::from(state.cache.node(slot).image.level) + 1)
            .max()
            .unwrap_or(1);
        let split_blocks: u64 = growth
            .iter()
            .map(|(&slot, &added)| {
                let bytes = state.cache.node(slot).encoded + added;
                if bytes > capacity {
                    bytes.div_ceil(capacity) as u64 + 2 * height
                } else {
                    0
                }
            })
            .sum();
        // Each leaf a key update touches becomes dirty, and may end up merged with a
        // sibling: the merged node and its path. A range delete dirties every leaf of the
        // range, and the path of the run. Runs that share a leaf share its path: a file's
        // delete removes each extent's poison range, almost always all in one (empty)
        // leaf, and counting a path per range once asked 373 blocks to delete a file on a
        // full filesystem (generic/536).
        let paths = ranges.min(range_leaves.len() as u64);
        let range_blocks = range_leaves.difference(&leaves).count() as u64 + paths * height;
        let merge_blocks = leaves.len() as u64 * (height + 1) + range_blocks;
        // The last `4 * height` is for an owner index (the reverse map): writing these
        // nodes changes its records, which sit close together in a few leaves.
        Ok(split_blocks + merge_blocks + state.cache.dirty_count() as u64 + 4 * height)
    }

    /// Commits and waits until the transaction is durable.
    pub fn commit_durable(self) -> Result<Option<u64>, BtreeError> {
        let journal = std::sync::Arc::clone(&self.btrees.shared.journal);
        let seq = self.commit()?;
        if let Some(seq) = seq {
            journal.flush_seq(seq)?;
        }
        Ok(seq)
    }
}

fn in_range(key: &[u8], start: &[u8], end: Option<&[u8]>) -> bool {
    key >= start && end.is_none_or(|end| key < end)
}
