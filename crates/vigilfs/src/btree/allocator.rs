//! Where new node blocks come from: the [`NodeAllocator`] trait, and [`SimpleAllocator`], a
//! small implementation for tests and tools until the real allocator (free space = what the
//! reverse map does not cover) takes over.
//!
//! The contract the b-trees rely on:
//!
//! * `allocate` hands out a block of the main region nobody else owns, or fails with
//!   [`BtreeError::NoSpace`]; it never panics and never hands out a block twice;
//! * `free(block, seq)` says the block stopped being referenced by the change journaled at
//!   `seq`. Until `seq` is durable a crash could bring the old reference back, so the block
//!   must not be handed out again before then. `seq` 0 means the block was never referenced
//!   by anything durable (a write that was abandoned) and may be reused at once;
//! * `available` is a lower bound on blocks `allocate` could hand out now; transactions use
//!   it to refuse work up front (a clean `NoSpace`) rather than fail half-way;
//! * `wants_used_blocks`: an allocator that cannot tell on its own which blocks the trees
//!   use (this simple one keeps nothing on disk) asks [`Btrees::open`](super::Btrees::open)
//!   to walk the recovered trees and call `mark_in_use` for every node block.
//!
//! # The owner-index hook
//!
//! An allocator that keeps an on-disk index of who owns each block (the reverse map, in the
//! layers above) must learn of every node block that starts or stops holding a node *in the
//! same journal entry* as the change, or a crash could leave a node without its record or a
//! record naming a freed block. This layer cannot know that index's format (it sits below
//! it), so it asks:
//!
//! * `node_owner_updates(tree, added, removed)`: the leaf updates recording that the
//!   (level, block) nodes `added` now belong to `tree` and `removed` no longer do. Writeback
//!   journals them in the same reservation as the pointers or roots record, then applies them
//!   to the cached leaves like a transaction's updates (they dirty leaves that pin the
//!   journal, and recovery replays them as a transaction). Called before anything is
//!   journaled, so it must not change the allocator's state: the change may be abandoned.
//!   To keep writeback finite, the updates must not touch `tree` itself, and writing the
//!   nodes of the tree that receives them must produce none (the reverse map does not
//!   describe its own nodes);
//! * `nodes_moved(tree, added, removed)`: the change is journaled (called under its
//!   reservation, so it cannot be reordered with a later change of the same blocks);
//! * `recovered(trees)`: open has rebuilt the trees and written nothing yet; an allocator
//!   that derives its free space from a tree reads it here, before its first `allocate`
//!   (a fresh filesystem, whose empty trees open makes, gets no call: every block it used
//!   came from `allocate`).

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::record::Update;
use super::{BtreeError, Entry, Shared, State, TreeId};
use crate::format::Region;
use crate::journal::Journal;

/// Allocates and frees b-tree node blocks. See the module comment for the contract.
pub trait NodeAllocator: Send + Sync {
    /// A free block for a new node.
    fn allocate(&self) -> Result<u64, BtreeError>;
    /// `block` is unreferenced as of journal `seq` (0: never referenced durably).
    fn free(&self, block: u64, seq: u64);
    /// Blocks `allocate` could hand out now (a lower bound).
    fn available(&self) -> u64;
    /// Blocks freed but not reusable until the journal is durable past their seq: a
    /// transaction short of space flushes the journal and looks again when there are some.
    fn pending(&self) -> u64 {
        0
    }
    /// Blocks an ordinary transaction must leave free: those promised to data not yet
    /// written and part of the reserve, which only transactions marked
    /// [`Transaction::may_use_reserve`](super::Transaction::may_use_reserve) (deletions,
    /// truncates, the writeback of promised data) may take.
    fn keep(&self) -> u64 {
        0
    }
    /// Blocks a transaction that changes things in place (see
    /// [`Transaction::changes_in_place`](super::Transaction::changes_in_place)) must leave
    /// free: less than [`NodeAllocator::keep`], more than deletions leave.
    fn keep_for_changes_in_place(&self) -> u64 {
        self.keep()
    }
    /// A gauge the node cache keeps equal to its dirty node count, for an allocator that
    /// keeps a block back for the writeback of each (so data never takes the blocks that
    /// writing committed metadata needs). `None`: not wanted.
    fn dirty_node_gauge(&self) -> Option<Arc<AtomicU64>> {
        None
    }
    /// Whether open must report the blocks the recovered trees use.
    fn wants_used_blocks(&self) -> bool {
        false
    }
    /// `block` holds a node of a recovered tree.
    fn mark_in_use(&self, block: u64) {
        let _ = block;
    }
    /// Leaf updates recording that the `(level, block)` nodes `added` now belong to `tree`
    /// and `removed` no longer do; journaled with the change. See the module comment.
    fn node_owner_updates(
        &self,
        tree: TreeId,
        added: &[(u8, u64)],
        removed: &[(u8, u64)],
    ) -> Vec<Update> {
        let _ = (tree, added, removed);
        Vec::new()
    }
    /// The change `node_owner_updates` described is journaled.
    fn nodes_moved(&self, tree: TreeId, added: &[(u8, u64)], removed: &[(u8, u64)]) {
        let _ = (tree, added, removed);
    }
    /// Open rebuilt the trees of an existing filesystem; read what free space needs.
    fn recovered(&self, trees: &mut RecoveredTrees<'_>) -> Result<(), BtreeError> {
        let _ = trees;
        Ok(())
    }
}

/// Read access to the trees while [`Btrees::open`](super::Btrees::open) still holds them
/// (recovered, nothing written yet), for [`NodeAllocator::recovered`].
pub struct RecoveredTrees<'a> {
    pub(super) shared: &'a Shared,
    pub(super) state: &'a mut State,
}

impl RecoveredTrees<'_> {
    /// Every entry of `tree` with keys in `start..end` (`end` `None`: to the end), in order.
    pub fn scan(
        &mut self,
        tree: TreeId,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<Vec<Entry>, BtreeError> {
        self.shared.scan(self.state, tree, start, end, usize::MAX)
    }

    /// Every node of `tree` as (level, block), read and verified (a walk of that tree only).
    pub fn node_blocks(&mut self, tree: TreeId) -> Result<Vec<(u8, u64)>, BtreeError> {
        Ok(self
            .shared
            .check(self.state, &[tree])?
            .nodes
            .into_iter()
            .map(|(_, level, block)| (level, block))
            .collect())
    }
}

struct SimpleState {
    free: BTreeSet<u64>,
    /// Freed at a seq not known to be durable yet: (seq, block).
    deferred: Vec<(u64, u64)>,
}

/// Blocks of one region, handed out lowest first, with frees deferred until their journal
/// seq is durable (it asks the journal's status). Keeps nothing on disk.
pub struct SimpleAllocator {
    journal: Arc<Journal>,
    region: Region,
    state: Mutex<SimpleState>,
}

impl SimpleAllocator {
    /// An allocator over every block of `region`.
    pub fn new(journal: Arc<Journal>, region: Region) -> SimpleAllocator {
        let end = region.end().unwrap_or(u64::MAX);
        SimpleAllocator {
            journal,
            region,
            state: Mutex::new(SimpleState {
                free: (region.start..end).collect(),
                deferred: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimpleState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn release_durable(&self, state: &mut SimpleState) {
        if state.deferred.is_empty() {
            return;
        }
        let durable = self.journal.status().durable_seq;
        let mut index = 0;
        while index < state.deferred.len() {
            let (seq, block) = state.deferred[index];
            if seq <= durable {
                state.free.insert(block);
                state.deferred.swap_remove(index);
            } else {
                index += 1;
            }
        }
    }

    /// Blocks waiting for their free to become durable.
    pub fn deferred_blocks(&self) -> usize {
        self.lock().deferred.len()
    }
}

impl NodeAllocator for SimpleAllocator {
    fn allocate(&self) -> Result<u64, BtreeError> {
        let mut state = self.lock();
        if state.free.is_empty() {
            self.release_durable(&mut state);
        }
        state.free.pop_first().ok_or(BtreeError::NoSpace {
            needed: 1,
            available: 0,
        })
    }

    fn free(&self, block: u64, seq: u64) {
        let mut state = self.lock();
        if seq == 0 {
            state.free.insert(block);
        } else {
            state.deferred.push((seq, block));
        }
    }

    fn available(&self) -> u64 {
        let mut state = self.lock();
        self.release_durable(&mut state);
        state.free.len() as u64
    }

    fn pending(&self) -> u64 {
        let mut state = self.lock();
        self.release_durable(&mut state);
        state.deferred.len() as u64
    }

    fn wants_used_blocks(&self) -> bool {
        true
    }

    fn mark_in_use(&self, block: u64) {
        let end = self.region.end().unwrap_or(u64::MAX);
        if (self.region.start..end).contains(&block) {
            self.lock().free.remove(&block);
        }
    }
}
