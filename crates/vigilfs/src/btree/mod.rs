//! The b-trees: ordered key spaces of opaque byte strings, copy-on-write and checksummed on
//! disk, journaled, cached in bounded memory, and updated by atomic multi-tree transactions.
//!
//! # Rooms
//!
//! * `key.rs`: [`TreeId`] and the key/value limits;
//! * `node.rs`: the on-disk node format (validated with `format::seal`/`verify`, plus tree,
//!   level, bounds and the node's own block number);
//! * `record.rs`: the journal records (transactions, pointer changes, roots);
//! * `cache.rs`: nodes in memory under a budget;
//! * `tree.rs`: lookups, range scans, and the leaf updates a transaction applies;
//! * `writeback.rs`: writing dirty nodes copy-on-write, splits, merges, root changes, the
//!   journal pins and reclaim callbacks, writeback under memory pressure;
//! * `transaction.rs`: [`Transaction`];
//! * `recovery.rs`: rebuilding the trees at open from the newest roots and the journal;
//! * `relocate.rs`: moving a node off a failing block, and verifying a node block on the
//!   device (for the failure layer and scrub);
//! * `allocator.rs`: the [`NodeAllocator`] trait (with its owner-index hook, through which
//!   the reverse map above learns of node blocks in the same journal entry) and
//!   [`SimpleAllocator`].
//!
//! # How changes reach the disk
//!
//! A transaction's updates are one journal record; applying them dirties leaves, which pin
//! the journal at the transaction's seq. Writing a dirty node (journal reclaim calls its pin,
//! memory pressure, an oversized or underfull node after a transaction, [`Btrees::sync`])
//! writes it, or the pieces a split or merge makes, to newly allocated blocks, then journals
//! one *pointers* record saying which blocks now cover its key range at its parent's level.
//! That record dirties the parent (pinned at the record's seq); the child's pin is dropped
//! while the record's reservation is held, so the journal flushes the device before the entry
//! that makes the child's old copy unnecessary; the old block is freed at the record's seq.
//! Each node write thus releases its own pin. If the allocator keeps an owner index (the
//! reverse map), the same reservation also carries a transaction record of its updates for
//! the new and old blocks, applied to that tree's leaves at the record's seq; the index tree's
//! own nodes are not described, so its writes add nothing and writeback converges (see
//! `allocator.rs`). A root has no parent: writing it journals a
//! *roots* record naming every tree's root. The roots object pins the seq of the latest roots
//! record, and when reclaim asks it to let go it journals the roots again, so a roots record
//! always exists at or after `last_seq`.
//!
//! Splits and merges write their results at once, never leaving a pointer to an unwritten
//! node: every pointer, in memory or in the journal, names a block holding a valid node
//! whose bounds never change. Recovery therefore treats each level of a tree as a map that
//! the journal's records overwrite; see `recovery.rs`.
//!
//! # Locking
//!
//! All trees of a filesystem share one mutex (the state lock). Every operation, reads
//! included (a read may load and evict nodes), holds it while it runs; range iteration takes
//! it once per batch. Transactions therefore serialise: each commit applies all its updates
//! under the lock, and when two transactions touch the same keys the later commit wins,
//! exactly as the journal order says. A transaction reads the committed state as of each
//! read, plus its own writes; it takes no snapshot and no key locks.
//!
//! Lock order: state lock → roots lock → a journal reservation. Journal reservations are
//! taken only under the state lock (the roots object's reclaim callback takes only the
//! roots lock), so no thread ever waits for the state lock while holding a reservation.
//! Journal reclaim may call a node's pin from any thread; the callback takes the state lock,
//! unless its own thread already holds it (a reservation made under the lock ran reclaim), in
//! which case it declines and the journal keeps the pin. Commits run journal reclaim before
//! taking the lock, so that case stays rare.
//!
//! This layer depends on `device`, `format` and `journal` only.

mod allocator;
mod cache;
mod key;
mod node;
mod record;
mod recovery;
mod relocate;
mod transaction;
mod tree;
mod writeback;

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use thiserror::Error;

pub use allocator::{NodeAllocator, RecoveredTrees, SimpleAllocator};
pub use key::{KeyLimits, TreeId, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use node::{NodeDefect, NODE_STRUCTURE};
pub(crate) use record::is_roots_record;
pub use record::{RootPointer, Update};
pub use relocate::Relocation;
pub use transaction::Transaction;

use crate::device::{BlockDevice, DeviceError};
use crate::format::{FormatError, Superblock};
use crate::journal::{Journal, JournalError, PinId, Replay};
use cache::Cache;
use writeback::WriteRounds;

/// A key and its value, as lookups and scans return them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The b-tree layer's errors.
#[derive(Debug, Error)]
pub enum BtreeError {
    /// The journal refused or failed.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// Reading or writing a node failed.
    #[error("device: {0}")]
    Device(#[from] DeviceError),
    /// Writing a node to its new block failed: which node, so the error
    /// can be traced to its tree (the block is in no map yet).
    #[error("writing {tree} b-tree node of level {level} to block {block}: {source}")]
    NodeWrite {
        /// The node's tree.
        tree: TreeId,
        /// Its level.
        level: u8,
        /// The block it was being written to.
        block: u64,
        /// The device's refusal.
        #[source]
        source: DeviceError,
    },
    /// A journal record of this layer did not decode.
    #[error("b-tree journal record: {0}")]
    Record(#[from] FormatError),
    /// A node failed validation; the block is refused.
    #[error("{tree} b-tree node at block {block} is corrupt: {defect}")]
    CorruptNode {
        /// The tree the node was read for.
        tree: TreeId,
        /// The block it was read from.
        block: u64,
        /// What is wrong.
        #[source]
        defect: NodeDefect,
    },
    /// A key exceeds the key limit.
    #[error("key of {length} bytes exceeds the limit of {limit}")]
    KeyTooLong {
        /// Its length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// A value exceeds the value limit.
    #[error("value of {length} bytes exceeds the limit of {limit}")]
    ValueTooLong {
        /// Its length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// Not enough free blocks for new nodes; nothing was changed.
    #[error("no space for b-tree nodes: {needed} blocks needed, {available} available")]
    NoSpace {
        /// Blocks needed (an estimate for transactions).
        needed: u64,
        /// Blocks available.
        available: u64,
    },
    /// The filesystem's block size is too small for b-tree nodes.
    #[error("block size {0} is too small for b-tree nodes")]
    UnsupportedBlockSize(u32),
    /// Recovery found the journal and the trees inconsistent.
    #[error("b-tree recovery failed: {0}")]
    Recovery(String),
    /// An earlier failure left the in-memory trees untrustworthy; remount to recover.
    #[error("b-trees are in their error state after an earlier failure: {0}")]
    Failed(String),
}

impl BtreeError {
    /// The block of a corrupt node, if this is one.
    pub fn corrupt_block(&self) -> Option<u64> {
        match self {
            BtreeError::CorruptNode { block, .. } => Some(*block),
            _ => None,
        }
    }
}

/// How the trees are run.
#[derive(Debug, Clone)]
pub struct BtreesOptions {
    /// Memory budget of the node cache, in bytes (estimated heap use of cached nodes).
    pub cache_bytes: usize,
    /// Open even when the root or an interior node of a tree a read-only
    /// mount can do without ([`TreeId::salvageable`]: entries, extents,
    /// attributes) cannot be read: that tree then answers every operation
    /// with the error its node gave, and the other trees work. For a
    /// read-only mount, so that one bad block does not hide every file.
    pub salvage: bool,
}

impl Default for BtreesOptions {
    fn default() -> Self {
        BtreesOptions {
            cache_bytes: 64 << 20,
            salvage: false,
        }
    }
}

/// Why a tree opened with [`BtreesOptions::salvage`] cannot be read: the
/// error its node gave at open, given again to every operation on it.
#[derive(Debug, Clone)]
enum Unreadable {
    Corrupt { block: u64, defect: NodeDefect },
    Device(DeviceError),
}

impl Unreadable {
    fn error(&self, tree: TreeId) -> BtreeError {
        match self {
            Unreadable::Corrupt { block, defect } => BtreeError::CorruptNode {
                tree,
                block: *block,
                defect: defect.clone(),
            },
            Unreadable::Device(error) => BtreeError::Device(error.clone()),
        }
    }
}

/// A snapshot for status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtreeStatus {
    /// Nodes in the cache.
    pub cached_nodes: usize,
    /// Of which dirty.
    pub dirty_nodes: usize,
    /// Estimated heap bytes of cached nodes.
    pub cache_memory: usize,
    /// The budget.
    pub cache_budget: usize,
    /// Nodes written since open.
    pub nodes_written: u64,
    /// Nodes read from disk since open.
    pub nodes_read: u64,
    /// Background writes (after commits, under pressure) that failed; the nodes stayed
    /// dirty and are retried.
    pub writeback_failures: u64,
    /// The latest such failure.
    pub last_writeback_failure: Option<String>,
    /// The node whose write failed latest, when a write failed: tree,
    /// level, block, and the device's errno.
    pub last_failed_node: Option<(TreeId, u8, u64, i32)>,
    /// Level of each tree's root, in [`TreeId::ALL`] order.
    pub root_levels: Vec<u8>,
}

/// What [`Btrees::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Keys per tree, in [`TreeId::ALL`] order.
    pub keys: Vec<u64>,
    /// Every node: tree, level, block.
    pub nodes: Vec<(TreeId, u8, u64)>,
}

/// Geometry and identity every node operation needs.
#[derive(Debug, Clone)]
struct Geometry {
    block_size: u32,
    uuid: [u8; 16],
    limits: KeyLimits,
    capacity: usize,
    main_blocks: std::ops::Range<u64>,
}

/// The mutable part, under the state lock.
struct State {
    cache: Cache,
    /// Slot of each tree's root.
    roots: Vec<usize>,
    /// Writes allowed (false while recovery rebuilds the trees).
    writable: bool,
    failed: Option<String>,
    nodes_written: u64,
    nodes_read: u64,
    last_writeback_failure: Option<String>,
    last_failed_node: Option<(TreeId, u8, u64, i32)>,
    /// Blocks whose node write failed once, never referenced: out of use
    /// until a later node write succeeds (the device writes again), then
    /// given back. Kept for good, they leaked a block per failed attempt,
    /// and a disk failing for a while left a filesystem with no room to
    /// write its nodes once it healed.
    suspect_blocks: Vec<u64>,
    /// Blocks given back after failing once: one that fails again stays
    /// out of use until the next mount (it may be bad).
    failed_before: std::collections::BTreeSet<u64>,
    /// Nodes are being written in bulk (to relieve the cache, or all of
    /// them): their records leave the journal room for a reclaim pass
    /// ([`Journal::reserve_in_bulk`]).
    writing_in_bulk: bool,
    /// Per tree (in [`TreeId::ALL`] order), why it could not be read at
    /// open, when [`BtreesOptions::salvage`] let the others open.
    unreadable: Vec<Option<Unreadable>>,
}

/// The roots as journaled, under the roots lock.
struct RootsState {
    roots: Vec<RootPointer>,
    pin: Option<PinId>,
}

struct Shared {
    instance: u64,
    device: Arc<dyn BlockDevice>,
    journal: Arc<Journal>,
    allocator: Arc<dyn NodeAllocator>,
    geometry: Geometry,
    state: Mutex<State>,
    roots: Mutex<RootsState>,
    /// Background node writes that failed, kept outside the state lock so
    /// the layer above can look after every operation.
    writeback_failures: AtomicU64,
    this: Weak<Shared>,
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The instance whose state lock this thread holds (0: none): lets a journal reclaim
    /// callback running on that thread decline instead of deadlocking.
    static HOLDING: Cell<u64> = const { Cell::new(0) };
}

/// The state lock, with the thread's holding mark.
struct StateGuard<'a> {
    guard: MutexGuard<'a, State>,
    previous: u64,
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        HOLDING.with(|holding| holding.set(self.previous));
    }
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Shared {
    fn lock_state(&self) -> StateGuard<'_> {
        let guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = HOLDING.with(|holding| holding.replace(self.instance));
        StateGuard { guard, previous }
    }

    fn holds_state_lock(&self) -> bool {
        HOLDING.with(|holding| holding.get() == self.instance)
    }

    fn lock_roots(&self) -> MutexGuard<'_, RootsState> {
        self.roots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), BtreeError> {
        let limit = self.geometry.limits.max_key;
        if key.len() > limit {
            return Err(BtreeError::KeyTooLong {
                length: key.len(),
                limit,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), BtreeError> {
        let limit = self.geometry.limits.max_value;
        if value.len() > limit {
            return Err(BtreeError::ValueTooLong {
                length: value.len(),
                limit,
            });
        }
        Ok(())
    }
}

fn usable(state: &State) -> Result<(), BtreeError> {
    match &state.failed {
        Some(why) => Err(BtreeError::Failed(why.clone())),
        None => Ok(()),
    }
}

/// [`usable`], and `tree` was readable at open.
fn usable_tree(state: &State, tree: TreeId) -> Result<(), BtreeError> {
    usable(state)?;
    match &state.unreadable[tree.index()] {
        Some(unreadable) => Err(unreadable.error(tree)),
        None => Ok(()),
    }
}

/// Every b-tree of one filesystem. Share it by reference or `Arc`; methods take `&self`.
pub struct Btrees {
    shared: Arc<Shared>,
}

impl fmt::Debug for Btrees {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Btrees")
            .field("status", &self.status())
            .finish()
    }
}

/// Entries fetched per lock acquisition by [`RangeIter`].
const RANGE_BATCH: usize = 128;

impl Btrees {
    /// Opens the trees of the filesystem `superblock` describes: reads the newest roots from
    /// `replay` (what [`Journal::open`] returned for `journal`), overlays the journal's
    /// changes, and calls [`Journal::replay_done`]. A filesystem whose journal holds nothing
    /// yet gets empty trees, made durable before this returns.
    pub fn open(
        device: Arc<dyn BlockDevice>,
        journal: Arc<Journal>,
        replay: &Replay,
        superblock: &Superblock,
        allocator: Arc<dyn NodeAllocator>,
        options: BtreesOptions,
    ) -> Result<Btrees, BtreeError> {
        let block_size = superblock.layout.block_size;
        let limits = KeyLimits::for_block_size(block_size)
            .ok_or(BtreeError::UnsupportedBlockSize(block_size))?;
        let capacity =
            node::entry_capacity(block_size).ok_or(BtreeError::UnsupportedBlockSize(block_size))?;
        let main = superblock.layout.main;
        let geometry = Geometry {
            block_size,
            uuid: superblock.uuid.0,
            limits,
            capacity,
            main_blocks: main.start..main.end().unwrap_or(u64::MAX),
        };
        let dirty_gauge = allocator.dirty_node_gauge();
        let shared = Arc::new_cyclic(|this| Shared {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            device,
            journal,
            allocator,
            geometry,
            state: Mutex::new(State {
                cache: Cache::new(options.cache_bytes, dirty_gauge),
                roots: Vec::new(),
                writable: false,
                failed: None,
                nodes_written: 0,
                nodes_read: 0,
                last_writeback_failure: None,
                last_failed_node: None,
                suspect_blocks: Vec::new(),
                writing_in_bulk: false,
                failed_before: std::collections::BTreeSet::new(),
                unreadable: vec![None; TreeId::ALL.len()],
            }),
            roots: Mutex::new(RootsState {
                roots: Vec::new(),
                pin: None,
            }),
            writeback_failures: AtomicU64::new(0),
            this: this.clone(),
        });
        recovery::recover(&shared, replay, options.salvage)?;
        Ok(Btrees { shared })
    }

    /// The key and value limits.
    pub fn limits(&self) -> KeyLimits {
        self.shared.geometry.limits
    }

    /// The journal the trees write to.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.shared.journal
    }

    /// The value of `key` in `tree`.
    pub fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, BtreeError> {
        let mut state = self.shared.lock_state();
        usable_tree(&state, tree)?;
        let found = self.shared.lookup(&mut state, tree, key);
        self.shared.relieve_pressure(&mut state);
        found
    }

    /// The entry of `tree` with the greatest key at or before `key`.
    pub fn last_at_or_before(&self, tree: TreeId, key: &[u8]) -> Result<Option<Entry>, BtreeError> {
        let mut state = self.shared.lock_state();
        usable_tree(&state, tree)?;
        let found = self.shared.floor(&mut state, tree, key);
        self.shared.relieve_pressure(&mut state);
        found
    }

    /// Up to `limit` entries of `tree` with keys in `start..end` (`end` `None`: to the end),
    /// in key order.
    pub fn scan(
        &self,
        tree: TreeId,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, BtreeError> {
        let mut state = self.shared.lock_state();
        usable_tree(&state, tree)?;
        let found = self.shared.scan(&mut state, tree, start, end, limit);
        self.shared.relieve_pressure(&mut state);
        found
    }

    /// Iterates `tree`'s entries with keys in `start..end` in order, taking the lock once per
    /// batch (so it sees commits made between batches, and never blocks writers for long).
    pub fn range(&self, tree: TreeId, start: &[u8], end: Option<&[u8]>) -> RangeIter<'_> {
        RangeIter {
            btrees: self,
            tree,
            next_start: Some(start.to_vec()),
            end: end.map(<[u8]>::to_vec),
            batch: std::collections::VecDeque::new(),
        }
    }

    /// Starts a transaction.
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction::new(self)
    }

    /// Writes every dirty node (leaves first, roots last) and makes the journal durable
    /// and settled (every block freed so far reusable). Afterwards only the roots object
    /// pins the journal.
    pub fn sync(&self) -> Result<(), BtreeError> {
        self.shared.write_dirty_in_rounds(WriteRounds::Every)
    }

    /// Walks every tree, reading nodes not in memory, and checks that keys are ordered and
    /// within bounds and that every node is valid. Returns counts and every node's block.
    pub fn check(&self) -> Result<CheckReport, BtreeError> {
        let mut state = self.shared.lock_state();
        for tree in TreeId::ALL {
            usable_tree(&state, tree)?;
        }
        let report = self.shared.check(&mut state, &TreeId::ALL);
        self.shared.relieve_pressure(&mut state);
        report
    }

    /// Background node writes that failed since open ([`BtreeStatus::writeback_failures`]),
    /// without taking the state lock.
    pub fn writeback_failures(&self) -> u64 {
        self.shared.writeback_failures.load(Ordering::Acquire)
    }

    /// A snapshot for status reports.
    pub fn status(&self) -> BtreeStatus {
        let state = self.shared.lock_state();
        BtreeStatus {
            cached_nodes: state.cache.len(),
            dirty_nodes: state.cache.dirty_count(),
            cache_memory: state.cache.memory(),
            cache_budget: state.cache.budget(),
            nodes_written: state.nodes_written,
            nodes_read: state.nodes_read,
            writeback_failures: self.writeback_failures(),
            last_writeback_failure: state.last_writeback_failure.clone(),
            last_failed_node: state.last_failed_node,
            root_levels: state
                .roots
                .iter()
                .map(|&slot| state.cache.node(slot).image.level)
                .collect(),
        }
    }

    /// The trees that could not be read at open (see [`BtreesOptions::salvage`]), each with
    /// the error every operation on it returns.
    pub fn unreadable_trees(&self) -> Vec<(TreeId, BtreeError)> {
        let state = self.shared.lock_state();
        TreeId::ALL
            .into_iter()
            .filter_map(|tree| {
                state.unreadable[tree.index()]
                    .as_ref()
                    .map(|unreadable| (tree, unreadable.error(tree)))
            })
            .collect()
    }

    /// The roots as last journaled.
    pub fn roots(&self) -> Vec<RootPointer> {
        self.shared.lock_roots().roots.clone()
    }
}

/// Iterator over a key range; see [`Btrees::range`].
pub struct RangeIter<'a> {
    btrees: &'a Btrees,
    tree: TreeId,
    next_start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    batch: std::collections::VecDeque<Entry>,
}

impl Iterator for RangeIter<'_> {
    type Item = Result<Entry, BtreeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.batch.is_empty() {
            let start = self.next_start.take()?;
            let batch = match self
                .btrees
                .scan(self.tree, &start, self.end.as_deref(), RANGE_BATCH)
            {
                Ok(batch) => batch,
                Err(error) => return Some(Err(error)),
            };
            if batch.len() == RANGE_BATCH {
                // Continue just after the last key: the key with a zero byte appended is
                // the smallest key greater than it.
                let mut after = batch[batch.len() - 1].0.clone();
                after.push(0);
                self.next_start = Some(after);
            }
            self.batch = batch.into();
        }
        self.batch.pop_front().map(Ok)
    }
}
