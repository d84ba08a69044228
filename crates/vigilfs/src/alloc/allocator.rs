//! [`Allocator`]: the filesystem's allocator of node and data blocks, with free space derived
//! from the reverse map.
//!
//! * **Mount.** The b-trees call [`NodeAllocator::recovered`] once they are rebuilt and
//!   before they write anything; the allocator reads the rmap tree (its records and the walk
//!   of its own nodes, which have no records) and sets free space to the main region minus
//!   both. Two records claiming one block, or a record outside the region, fail the mount:
//!   the map cannot be trusted to attribute failures. No other tree is read. On a fresh
//!   filesystem there is no such call: the allocator starts with the whole region free and
//!   every block the empty trees take comes from it.
//! * **Node blocks.** Through the b-trees' owner-index hook it supplies the rmap updates for
//!   node blocks (journaled with the pointer change that uses or retires them) and keeps
//!   the in-memory set of rmap-tree nodes ([`RmapNodes`]) current.
//! * **Deferred reuse.** A block freed at journal seq `s` (by writeback or [`free_data`])
//!   waits until the journal says `s` is durable and recorded so on the device: before
//!   that a crash could bring the old owner back, or find the block rewritten under a data
//!   claim replay still checks. The journal's recorded durable seq is asked whenever space
//!   is counted or handed out.
//! * **Bad blocks.** [`mark_bad`] blocks are never handed out, even after their owner frees
//!   them. The persistent list ([`bad_blocks`], records in the Meta tree the failure layer
//!   writes) is read when free space is rebuilt at mount, together with what this mount
//!   marked in memory, so a bad block stays out of use across remounts.
//! * **Promises and tiers.** Dirty pages are promised a block each before write() accepts
//!   them (delayed allocation): the data path keeps the count in a shared gauge
//!   ([`promised_pages`]) and the allocator counts it, with one block in 32 more for the
//!   extent and rmap records their writeback will add, as taken. Who may use how much of the
//!   space that is free now or once the journal is flushed (free plus pending):
//!   - new data ([`allocate_data`], [`data_available`]: a write's promise, fallocate) leaves
//!     the [`metadata_reserve`] and everything promised;
//!   - ordinary metadata transactions (creates, links, xattrs: [`NodeAllocator::keep`])
//!     leave three quarters of the reserve and everything promised;
//!   - writes into a file's own space (rewrites of its written blocks, and pages over its
//!     preallocated blocks, below) may use down to half the reserve: creates filling the
//!     metadata cannot take the quarter between from a database rewriting its pages;
//!   - the writeback of promised pages ([`allocate_promised`]) leaves a quarter of the
//!     reserve (its pages are the promise), and so do changes in place (attributes,
//!     renames: [`NodeAllocator::keep_for_changes_in_place`]), whose blocks come back when
//!     they commit: `chmod`, `touch` and `mv`, which ext4 never refuses for space, still
//!     work once creates and the writeback of small files have used the reserve down;
//!   - deletions, truncates, punches, writeback transactions, freeze and unmount may use
//!     everything, so a full filesystem can always be emptied.
//!
//!   Dirty pages written over their file's own preallocated blocks need no block, but
//!   their writeback splits unwritten extents and adds records: the data path counts them
//!   in a second gauge ([`preallocated_pages`]), charged their records' share like promised
//!   pages, and lets a write go without a promise only while that share fits above half
//!   the reserve ([`conversions_available`]). So converting fallocated space on a full
//!   filesystem eats into the upper half of the reserve only, never the part deletions
//!   need (ext4 keeps reserved clusters for the same conversions).
//!
//!   Dirty pages that rewrite a block their file has written (data is copy-on-write: each
//!   needs a new block, and its writeback frees the old one) may also use the upper half
//!   of the reserve ([`rewrite_room`]), so a program goes on rewriting its files on a full
//!   filesystem, as on ext4. In the worst case (scattered rewrites splitting extents) the
//!   writeback of each such page changes extent and rmap leaves of its own, so each is
//!   charged [`REWRITE_NODE_BLOCKS`] more blocks until it lands ([`rewrite_pages`]), in
//!   every tier's count: what those transactions need stays kept for them.
//! * **Pending frees are free.** A request that fits only once pending frees are released
//!   flushes the journal and tries again: nobody hears ENOSPC while a durable commit would
//!   give the space back (ext4 forces a commit for the same reason).
//! * **ENOSPC** is [`AllocError::NoSpace`] (data) or [`BtreeError::NoSpace`] (nodes), with
//!   nothing allocated.
//!
//! [`free_data`]: Allocator::free_data
//! [`mark_bad`]: Allocator::mark_bad
//! [`metadata_reserve`]: Allocator::metadata_reserve
//! [`promised_pages`]: Allocator::promised_pages
//! [`preallocated_pages`]: Allocator::preallocated_pages
//! [`conversions_available`]: Allocator::conversions_available
//! [`rewrite_room`]: Allocator::rewrite_room
//! [`rewrite_pages`]: Allocator::rewrite_pages
//! [`allocate_data`]: Allocator::allocate_data
//! [`data_available`]: Allocator::data_available
//! [`allocate_promised`]: Allocator::allocate_promised

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::bad_blocks;
use super::free_space::{AllocError, Extent, FreeSpace};
use crate::btree::{BtreeError, Btrees, NodeAllocator, RecoveredTrees, TreeId, Update};
use crate::format::Region;
use crate::journal::Journal;
use crate::rmap::{self, RmapError, RmapNodes, RmapRecord};

/// A snapshot for status reports and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatorStatus {
    /// Blocks that may be handed out now.
    pub free_blocks: u64,
    /// Freed, waiting for their journal seq to be durable.
    pub pending_blocks: u64,
    /// Known bad.
    pub bad_blocks: u64,
    /// Bad blocks nobody owns (not free, not pending, not used): with
    /// `free_blocks`, `pending_blocks` and the used blocks, the region.
    pub dropped_bad_blocks: u64,
    /// Frees refused because the block was already free (a bug above; the block stays put
    /// rather than being handed out twice).
    pub refused_frees: u64,
    /// Blocks promised to dirty pages (and the records their writeback adds).
    pub promised_blocks: u64,
    /// Blocks new data may still be promised: free and pending, less the metadata reserve
    /// and what is promised.
    pub data_available: u64,
}

/// The least metadata reserve: room for a deletion's transaction (the leaves of a batch of
/// extents and their rmap records, each with its path, in trees a few levels deep) on a
/// filesystem full of data, so it can always be emptied.
pub const MIN_METADATA_RESERVE: u64 = 96;

/// Dirty pages per block promised for the records their writeback adds.
const PAGES_PER_RECORD_BLOCK: u64 = 32;

/// Blocks kept, beyond its own, for the b-tree nodes the writeback of one
/// page rewriting a written block may need: the extent leaf and the rmap
/// leaf it changes, and a share of their splits and parents.
pub const REWRITE_NODE_BLOCKS: u64 = 3;

/// The blocks `pages` promised pages take: their own, and the records' share.
fn blocks_for_pages(pages: u64) -> u64 {
    pages + pages.div_ceil(PAGES_PER_RECORD_BLOCK)
}

struct AllocatorState {
    space: FreeSpace,
    /// Every extent ever marked bad, re-applied when free space is rebuilt.
    bad: Vec<Extent>,
    refused_frees: u64,
}

/// The allocator of the main region. See the module comment.
pub struct Allocator {
    journal: Arc<Journal>,
    region_start: u64,
    region_blocks: u64,
    metadata_reserve: u64,
    /// Pages promised a block: kept by the data path (see the module comment).
    promised_pages: Arc<AtomicU64>,
    /// Dirty pages to be written over their file's preallocated blocks, with no promise:
    /// kept by the data path; charged their records' share only.
    preallocated_pages: Arc<AtomicU64>,
    /// Dirty pages that rewrite written blocks and were let in from the rewrite tier:
    /// kept by the data path; each charged [`REWRITE_NODE_BLOCKS`] more.
    rewrite_pages: Arc<AtomicU64>,
    /// Dirty b-tree nodes, each to take a block when written: kept by the node cache.
    dirty_nodes: Arc<AtomicU64>,
    rmap_nodes: Arc<RmapNodes>,
    /// Whether any block is bad: lets [`Allocator::first_bad_in`], asked
    /// at every writeback commit, answer without the lock on a healthy
    /// device. Only ever set (the bad list never shrinks).
    any_bad: AtomicBool,
    state: Mutex<AllocatorState>,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Allocator")
            .field("status", &self.status())
            .finish()
    }
}

impl Allocator {
    /// An allocator for `region` (the main region) whose blocks are all free until the
    /// b-trees, opened with it, report the rmap of an existing filesystem. The metadata
    /// reserve defaults to 1/64 of the region, at least [`MIN_METADATA_RESERVE`] blocks (but
    /// never more than a quarter of a tiny region).
    pub fn new(journal: Arc<Journal>, region: Region) -> Allocator {
        let blocks = region.end().unwrap_or(u64::MAX) - region.start;
        Allocator {
            journal,
            region_start: region.start,
            region_blocks: blocks,
            metadata_reserve: (blocks / 64).max(MIN_METADATA_RESERVE).min(blocks / 4),
            promised_pages: Arc::new(AtomicU64::new(0)),
            preallocated_pages: Arc::new(AtomicU64::new(0)),
            rewrite_pages: Arc::new(AtomicU64::new(0)),
            dirty_nodes: Arc::new(AtomicU64::new(0)),
            rmap_nodes: Arc::new(RmapNodes::new()),
            any_bad: AtomicBool::new(false),
            state: Mutex::new(AllocatorState {
                space: FreeSpace::new(region.start, blocks),
                bad: Vec::new(),
                refused_frees: 0,
            }),
        }
    }

    /// Sets the blocks data allocation must leave free for metadata.
    pub fn with_metadata_reserve(mut self, blocks: u64) -> Allocator {
        self.metadata_reserve = blocks.min(self.region_blocks);
        self
    }

    /// Blocks data allocation leaves free for metadata.
    pub fn metadata_reserve(&self) -> u64 {
        self.metadata_reserve
    }

    /// The gauge of pages promised a block, for the data path to keep: dirty pages each hold
    /// a promise until their writeback lands.
    pub fn promised_pages(&self) -> &Arc<AtomicU64> {
        &self.promised_pages
    }

    /// The gauge of dirty pages written over preallocated blocks, for the data path to keep
    /// (see the module comment).
    pub fn preallocated_pages(&self) -> &Arc<AtomicU64> {
        &self.preallocated_pages
    }

    /// The gauge of dirty pages let in as rewrites of written blocks, for the data path to
    /// keep (see the module comment).
    pub fn rewrite_pages(&self) -> &Arc<AtomicU64> {
        &self.rewrite_pages
    }

    /// Blocks promised: one per promised page, and one in [`PAGES_PER_RECORD_BLOCK`] more
    /// for the extent and rmap records their writeback adds (of pages over preallocated
    /// blocks, only that share); [`REWRITE_NODE_BLOCKS`] more for each page let in as a
    /// rewrite; and one for each dirty b-tree node, which takes a new block when written.
    fn promised_blocks(&self) -> u64 {
        blocks_for_pages(self.promised_pages.load(Ordering::Acquire))
            + self.records_of_preallocated()
            + self.rewrite_pages.load(Ordering::Acquire) * REWRITE_NODE_BLOCKS
            + self.dirty_nodes.load(Ordering::Acquire)
    }

    /// What a transaction must leave for data: it counts the dirty nodes in what it needs
    /// itself, so only the promised pages' blocks, and what rewrites let in keep for their
    /// writeback's nodes.
    fn promised_to_data(&self) -> u64 {
        blocks_for_pages(self.promised_pages.load(Ordering::Acquire))
            + self.rewrite_pages.load(Ordering::Acquire) * REWRITE_NODE_BLOCKS
    }

    fn records_of_preallocated(&self) -> u64 {
        self.preallocated_pages
            .load(Ordering::Acquire)
            .div_ceil(PAGES_PER_RECORD_BLOCK)
    }

    /// How many more dirty pages may be written over their file's preallocated blocks
    /// without a promise: as many as have their records' share in what writes into a
    /// file's own space may use (free and pending, less half the reserve and everything
    /// promised). The data
    /// path asks with its cache locked, like [`Allocator::data_available`].
    pub fn conversions_available(&self) -> u64 {
        let space = &self.lock_released().space;
        (space.free_blocks() + space.pending_blocks())
            .saturating_sub(self.metadata_reserve / 2)
            .saturating_sub(self.promised_blocks())
            .saturating_mul(PAGES_PER_RECORD_BLOCK)
    }

    /// Blocks that pages rewriting written blocks may still be promised, with what their
    /// writeback needs: free or pending, less half the metadata reserve (the half
    /// deletions need stays untouched) and everything promised. The data path charges a
    /// rewrite `1 +` [`REWRITE_NODE_BLOCKS`] blocks and one more for its records' share,
    /// and asks with its cache locked, so promises do not race.
    pub fn rewrite_room(&self) -> u64 {
        let space = &self.lock_released().space;
        (space.free_blocks() + space.pending_blocks())
            .saturating_sub(self.metadata_reserve / 2)
            .saturating_sub(self.promised_blocks())
    }

    /// Blocks of new data that may still be taken now (pages a write makes dirty, blocks a
    /// fallocate maps): the most that, each with its share of record blocks, fit in what is
    /// free or pending less the metadata reserve and what is promised already. What statfs
    /// reports as available; the data path asks with its cache locked, so promises do not
    /// race.
    pub fn data_available(&self) -> u64 {
        self.data_available_in(&self.lock_released().space)
    }

    fn data_available_in(&self, space: &FreeSpace) -> u64 {
        let room = (space.free_blocks() + space.pending_blocks())
            .saturating_sub(self.metadata_reserve)
            .saturating_sub(self.records_of_preallocated())
            .saturating_sub(self.dirty_nodes.load(Ordering::Acquire));
        let promised = self.promised_pages.load(Ordering::Acquire);
        // The most pages whose blocks fit `room`, less those promised.
        let mut pages = room / (PAGES_PER_RECORD_BLOCK + 1) * PAGES_PER_RECORD_BLOCK;
        while blocks_for_pages(pages + 1) <= room {
            pages += 1;
        }
        pages.saturating_sub(promised)
    }

    /// Runs `attempt` with the released state; if it fails for lack of space while frees
    /// are pending, settles the journal (so they become durable, and free) and runs it
    /// once more. Nobody hears ENOSPC while a commit would give the space back.
    fn with_pending_released<T>(
        &self,
        mut attempt: impl FnMut(&mut AllocatorState) -> Result<T, AllocError>,
    ) -> Result<T, AllocError> {
        let pending = {
            let mut state = self.lock_released();
            match attempt(&mut state) {
                Err(AllocError::NoSpace { pending, .. }) if pending > 0 => pending,
                outcome => return outcome,
            }
        };
        if let Err(error) = self.journal.settle() {
            return Err(AllocError::FlushFailed {
                pending,
                why: error.to_string(),
            });
        }
        attempt(&mut self.lock_released())
    }

    /// The rmap tree's own node blocks, kept current by writeback (for [`rmap::owners`]).
    pub fn rmap_nodes(&self) -> &Arc<RmapNodes> {
        &self.rmap_nodes
    }

    /// Every owner of a block in `start..start + blocks`: [`rmap::owners`] with this
    /// allocator's rmap-tree nodes.
    pub fn owners(
        &self,
        btrees: &Btrees,
        start: u64,
        blocks: u64,
    ) -> Result<Vec<RmapRecord>, RmapError> {
        rmap::owners(btrees, &self.rmap_nodes, start, blocks)
    }

    fn lock(&self) -> MutexGuard<'_, AllocatorState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state with every free whose seq is now durable, as a recovery
    /// would know it, released (see the journal's data claims).
    fn lock_released(&self) -> MutexGuard<'_, AllocatorState> {
        let durable = self.journal.recorded_durable_seq();
        let mut state = self.lock();
        state.space.release_durable(durable);
        state
    }

    /// Blocks for `blocks` of new file data (fallocate), as few extents as possible,
    /// starting at or after `hint` when it can. All or nothing; neither the metadata reserve
    /// nor what is promised to dirty pages is touched.
    pub fn allocate_data(&self, blocks: u64, hint: u64) -> Result<Vec<Extent>, AllocError> {
        let keep = self.metadata_reserve + self.promised_blocks();
        self.allocate_leaving(blocks, hint, keep)
    }

    /// Blocks for `blocks` of dirty pages that hold a promise (their writeback), as
    /// [`Allocator::allocate_data`] but leaving only a quarter of the metadata reserve: the
    /// promise was checked against the whole of it when the pages were dirtied.
    pub fn allocate_promised(&self, blocks: u64, hint: u64) -> Result<Vec<Extent>, AllocError> {
        self.allocate_leaving(blocks, hint, self.metadata_reserve / 4)
    }

    fn allocate_leaving(
        &self,
        blocks: u64,
        hint: u64,
        keep: u64,
    ) -> Result<Vec<Extent>, AllocError> {
        self.with_pending_released(|state| {
            let free = state.space.free_blocks();
            if blocks == 0 || free < blocks.saturating_add(keep) {
                return Err(AllocError::NoSpace {
                    requested: blocks,
                    free: free.saturating_sub(keep),
                    pending: state.space.pending_blocks(),
                });
            }
            state.space.allocate(blocks, hint)
        })
    }

    /// `extent` of file data stopped being referenced in the transaction journaled at `seq`
    /// (0: never referenced durably); it is reused once `seq` is durable.
    pub fn free_data(&self, extent: Extent, seq: u64) -> Result<(), AllocError> {
        let mut state = self.lock();
        state.space.free(extent, seq)?;
        if seq == 0 {
            state.space.release_durable(0);
        }
        Ok(())
    }

    /// Gives back `runs`, allocated for data that no committed state ever
    /// referenced (a writeback or fallocate that failed before its
    /// commit): free again at once.
    pub fn free_unreferenced(&self, runs: &[Extent]) {
        for run in runs {
            let _ = self.free_data(*run, 0);
        }
    }

    /// Never hands out any block of `extent` again (free, used or pending alike).
    /// Kept in memory: recording it in the persistent list
    /// ([`bad_blocks::record`]) is the caller's transaction.
    pub fn mark_bad(&self, extent: Extent) -> Result<(), AllocError> {
        let mut state = self.lock();
        let known = state
            .space
            .bad_run_containing(extent.start)
            .is_some_and(|bad| bad.end() >= extent.end());
        if known {
            // A repeated report: nothing new to remember.
            return Ok(());
        }
        state.space.mark_bad(extent)?;
        state.bad.push(extent);
        self.any_bad.store(true, Ordering::Release);
        Ok(())
    }

    /// The bad runs, coalesced, in block order (the persistent list and
    /// what this mount marked).
    pub fn bad_runs(&self) -> Vec<Extent> {
        self.lock().space.bad_runs().collect()
    }

    /// The first bad block of `extent`, if any is bad.
    pub fn first_bad_in(&self, extent: Extent) -> Option<u64> {
        if !self.any_bad.load(Ordering::Acquire) {
            return None;
        }
        self.lock().space.first_bad_in(extent)
    }

    /// The coalesced bad run holding `block`, if it is bad.
    pub fn bad_run_containing(&self, block: u64) -> Option<Extent> {
        self.lock().space.bad_run_containing(block)
    }

    /// The free runs, in block order (released frees included).
    pub fn free_extents(&self) -> Vec<Extent> {
        self.lock_released().space.free_extents().collect()
    }

    /// A snapshot (released frees counted as free).
    pub fn status(&self) -> AllocatorStatus {
        let state = self.lock_released();
        AllocatorStatus {
            free_blocks: state.space.free_blocks(),
            pending_blocks: state.space.pending_blocks(),
            bad_blocks: state.space.bad_blocks(),
            dropped_bad_blocks: state.space.dropped_bad_blocks(),
            refused_frees: state.refused_frees,
            promised_blocks: self.promised_blocks(),
            data_available: self.data_available_in(&state.space),
        }
    }

    /// Blocks freed whose freeing is not yet recorded durable: free once
    /// the journal is settled.
    pub fn pending_blocks(&self) -> u64 {
        self.lock_released().space.pending_blocks()
    }

    /// Free space from the recovered rmap: the region minus every record and every rmap-tree
    /// node, minus the bad list.
    fn rebuild(&self, trees: &mut RecoveredTrees<'_>) -> Result<(), String> {
        let entries = trees
            .scan(TreeId::Rmap, &[], None)
            .map_err(|error| error.to_string())?;
        let mut used = Vec::with_capacity(entries.len());
        for (key, value) in &entries {
            let record = RmapRecord::decode(key, value).map_err(|error| error.to_string())?;
            used.push(Extent::new(record.start, record.blocks));
        }
        let nodes = trees
            .node_blocks(TreeId::Rmap)
            .map_err(|error| error.to_string())?;
        used.extend(nodes.iter().map(|&(_, block)| Extent::new(block, 1)));
        let mut space = FreeSpace::from_used(self.region_start, self.region_blocks, used)
            .map_err(|error| error.to_string())?;
        // The persistent list first, then what this mount marked in memory
        // only (a read-only mount cannot record it).
        let (start, end) = bad_blocks::key_range();
        let listed = trees
            .scan(TreeId::Meta, &start, Some(&end))
            .map_err(|error| error.to_string())?;
        let region = self.region_start..self.region_start + self.region_blocks;
        let (runs, problems) = bad_blocks::validate(&listed, region);
        if let Some(problem) = problems.first() {
            return Err(format!("the bad-block list is damaged: {problem}"));
        }
        let mut state = self.lock();
        for run in &runs {
            space
                .mark_bad(run.extent())
                .map_err(|error| error.to_string())?;
        }
        for &extent in &state.bad {
            space.mark_bad(extent).map_err(|error| error.to_string())?;
        }
        if space.bad_blocks() > 0 {
            self.any_bad.store(true, Ordering::Release);
        }
        state.space = space;
        self.rmap_nodes.replace(nodes);
        Ok(())
    }
}

impl NodeAllocator for Allocator {
    fn allocate(&self) -> Result<u64, BtreeError> {
        let mut state = self.lock_released();
        // Nodes go low, data goes where its hint says: keeps metadata together.
        match state.space.allocate_contiguous(1, self.region_start) {
            Ok(extent) => Ok(extent.start),
            Err(_) => Err(BtreeError::NoSpace {
                needed: 1,
                available: 0,
            }),
        }
    }

    fn free(&self, block: u64, seq: u64) {
        let mut state = self.lock();
        if state.space.free(Extent::new(block, 1), seq).is_err() {
            state.refused_frees += 1;
            return;
        }
        if seq == 0 {
            state.space.release_durable(0);
        }
    }

    fn available(&self) -> u64 {
        self.lock_released().space.free_blocks()
    }

    fn pending(&self) -> u64 {
        self.lock_released().space.pending_blocks()
    }

    fn keep(&self) -> u64 {
        // The quarter of the reserve above the half deletions need stays for writes into
        // files' own space and changes in place.
        self.metadata_reserve * 3 / 4 + self.promised_to_data()
    }

    fn keep_for_changes_in_place(&self) -> u64 {
        // As far down as the writeback of promised pages: what such a change takes comes
        // back once it commits (the old copies of the nodes it rewrites are freed).
        self.metadata_reserve / 4 + self.promised_to_data()
    }

    fn dirty_node_gauge(&self) -> Option<Arc<AtomicU64>> {
        Some(Arc::clone(&self.dirty_nodes))
    }

    fn node_owner_updates(
        &self,
        tree: TreeId,
        added: &[(u8, u64)],
        removed: &[(u8, u64)],
    ) -> Vec<Update> {
        rmap::node_updates(tree, added, removed)
    }

    fn nodes_moved(&self, tree: TreeId, added: &[(u8, u64)], removed: &[(u8, u64)]) {
        if tree == TreeId::Rmap {
            self.rmap_nodes.apply(added, removed);
        }
    }

    fn recovered(&self, trees: &mut RecoveredTrees<'_>) -> Result<(), BtreeError> {
        self.rebuild(trees).map_err(|why| {
            BtreeError::Recovery(format!("building free space from the rmap: {why}"))
        })
    }
}
