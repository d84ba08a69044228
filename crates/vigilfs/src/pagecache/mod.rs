//! The page cache: per inode, an [`XArray`] of 4 KiB pages, with the
//! marks, locks and counts that the file operations and writeback share.
//!
//! # Entries
//!
//! A page-cache entry is one page, or 16 pages (64 KiB, an order-4 entry)
//! when one write covered that whole aligned run: one entry, one mark and
//! one buffer instead of sixteen. A read filling a whole aligned run of
//! data blocks caches it as one large clean entry too. A large entry is
//! split back into page entries (keeping its marks and its pages' failed
//! state) as soon as part of it changes: a partial overwrite, a truncate or
//! punch across it. Eviction drops it whole, or splits it when only some
//! of its pages are over the budget. An entry's bytes are shared
//! ([`Page`]) and never changed in place: a write replaces the entry, so a
//! reader or a writeback holding the old bytes never sees them move.
//!
//! Dirty entries carry [`Mark::Dirty`]; entries a writeback took carry
//! [`Mark::Writeback`] instead until it lands ([`InodeState::land_entry`]
//! settles them). A read filling uncached pages reserves them first: a
//! locked entry with no value ([`XArray::lock_or_reserve`]), filled or
//! dropped once the device has answered ([`Cache::complete_fill`]).
//!
//! # Invariants
//!
//! * A large entry is aligned to its 16 pages and carries one set of marks
//!   for all of them.
//! * Only writeback sets WRITEBACK, and only while its inode is `syncing`;
//!   at most one writeback per inode is in flight. A page counts as dirty
//!   while it carries DIRTY or WRITEBACK, and is never evicted then.
//! * Only a fill's reservation is ever locked, and only while the fill is
//!   unfinished; `fills` counts an inode's reservations. Reservations are
//!   made only under the cache lock, so once a range is seen free of them
//!   it stays so while the lock is held.
//! * A clean cached page holds exactly what its written extent holds;
//!   holes and unwritten blocks are cached only as dirty pages (written
//!   to), so a cached page always counts as data for SEEK_DATA.
//! * The page counts behind [`Cache::stats`] equal what the page caches
//!   hold: every page change goes through the few [`InodeState`] methods
//!   that update both (checked in debug builds on each call of
//!   [`PageCache::stats`]). Every clean entry has an entry in the eviction
//!   FIFO (a stale one may name a newer entry at the same index, which is
//!   then evicted early: the order is approximate).
//! * Every dirty page holds the promise of a block (published for the
//!   allocator), except those written over the file's own preallocated
//!   block ([`InodeState::preallocated`]): their writeback writes that
//!   unwritten block in place and needs no new one, which is what lets a
//!   program write into space it fallocated on a full filesystem. Such a
//!   page is always unclean; once its flight has written the block, a
//!   newer version of the page needs a promise like any other.
//! * Dirty pages let in as rewrites of written blocks on a nearly full
//!   filesystem ([`InodeState::rewrites`]) hold a promise and a charge
//!   for their writeback's b-tree nodes (published for the allocator)
//!   until they land or leave the cache.
//!
//! # Locking
//!
//! One mutex (the cache lock, [`PageCache::lock`]) guards the map of
//! inodes, the page counts and the eviction order, and every change to a
//! page index is made under it. No device I/O happens under it. Waits are
//! on one condition variable paired with it ([`PageCache::wait`]),
//! signalled whenever a writeback lands or a fill completes.
//!
//! Clean pages are bounded by a budget ([`DEFAULT_CACHE_BUDGET`], changed
//! with [`PageCache::set_budget`]): whenever they exceed it, the oldest
//! clean entries are evicted (a FIFO, not an LRU: a page read often is
//! evicted as soon as one read once). Dirty pages are never evicted (they
//! would be lost): bounding them is writeback's job.

mod eviction;
mod fill;
mod inode_pages;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::sync::Condvar;

pub(crate) use crate::lost_data::LostBytes;
pub(crate) use inode_pages::{Backing, HoleTally, InodeState, PromiseBudget};

/// The page (and filesystem block) size the data path works in.
pub const PAGE_BYTES: usize = 4096;

/// [`PAGE_BYTES`] for offset arithmetic.
pub(crate) const PAGE: u64 = PAGE_BYTES as u64;

/// The order of a large page-cache entry: 16 pages, 64 KiB.
pub(crate) const LARGE_ORDER: u8 = 4;

/// Pages in a large entry.
pub(crate) const LARGE_PAGES: u64 = 1 << LARGE_ORDER;

/// Most pages one read reserves and fills at a time (1 MiB).
pub(crate) const PAGES_PER_FILL: u64 = 256;

/// The clean-page budget a new page cache starts with.
pub const DEFAULT_CACHE_BUDGET: u64 = 256 << 20;

/// One cached entry's bytes: 4 KiB per page, shared so readers copy out
/// without holding the cache lock.
pub(crate) type Page = Arc<[u8]>;

/// The page cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes of cached pages, clean and dirty.
    pub cached_bytes: u64,
    /// Bytes of dirty pages: what a background writeback thread compares
    /// with its limit (dirty pages are never evicted).
    pub dirty_bytes: u64,
    /// Clean pages evicted to stay within the budget since the cache was
    /// made.
    pub evicted_pages: u64,
    /// Inodes whose state is kept (pages, open handles, data not written,
    /// or an error nobody heard of): the rest is dropped when idle.
    pub inodes: u64,
}

/// Everything the cache lock guards.
pub(crate) struct Cache {
    /// Per-inode state, by inode.
    pub(crate) inodes: HashMap<u64, InodeState>,
    /// Page counts and the eviction order.
    pub(crate) accounting: Accounting,
}

/// Page counts for [`Cache::stats`] and the clean-page budget. Every
/// change to a page cache goes through the [`InodeState`] methods that keep
/// these right.
pub(crate) struct Accounting {
    /// Clean pages allowed to stay cached.
    budget_pages: u64,
    /// Cached pages, clean and dirty.
    cached_pages: u64,
    /// Dirty pages (a subset of the cached ones): those marked DIRTY or
    /// WRITEBACK.
    dirty_pages: u64,
    /// Dirty pages (a subset of `dirty_pages`) to be written in place over
    /// their file's preallocated blocks: they hold no promise.
    preallocated_pages: u64,
    /// Where the count of dirty pages holding the promise of a block is
    /// published for the allocator (see `alloc`).
    promised: Arc<AtomicU64>,
    /// Where `preallocated_pages` is published for the allocator.
    preallocated: Arc<AtomicU64>,
    /// Dirty pages (a subset of those holding a promise) let in as
    /// rewrites of written blocks: the allocator keeps more for each.
    rewrite_pages: u64,
    /// Where `rewrite_pages` is published for the allocator.
    rewrites: Arc<AtomicU64>,
    /// Clean pages evicted so far.
    evicted_pages: u64,
    /// Pages in the order they became clean, as (inode, page index): the
    /// eviction order. Entries whose page became dirty, vanished or appears
    /// again later are skipped when reached (or dropped when the queue is
    /// compacted), so nothing has to find and remove them.
    clock: VecDeque<(u64, u64)>,
}

impl Accounting {
    fn clean_pages(&self) -> u64 {
        self.cached_pages - self.dirty_pages
    }

    /// `pages` became dirty: `preallocated` of them over their file's
    /// preallocated blocks, the rest holding a promise of a block.
    fn add_unclean(&mut self, pages: u64, preallocated: u64) {
        debug_assert!(preallocated <= pages);
        self.dirty_pages += pages;
        self.preallocated_pages += preallocated;
        self.publish_promised();
    }

    /// `pages` that became dirty were let in as rewrites of written blocks.
    fn add_rewrites(&mut self, pages: u64) {
        self.rewrite_pages += pages;
        self.rewrites.store(self.rewrite_pages, Ordering::Release);
    }

    /// `pages` let in as rewrites landed or were dropped.
    fn remove_rewrites(&mut self, pages: u64) {
        self.rewrite_pages -= pages;
        self.rewrites.store(self.rewrite_pages, Ordering::Release);
    }

    /// `pages` stopped being dirty: written back, or dropped.
    fn remove_unclean(&mut self, pages: u64) {
        self.dirty_pages -= pages;
        self.publish_promised();
    }

    /// `pages` dirty pages stopped being written over preallocated
    /// blocks (written, dropped, or rewritten while in flight).
    fn remove_preallocated(&mut self, pages: u64) {
        self.preallocated_pages -= pages;
        self.publish_promised();
    }

    fn publish_promised(&self) {
        debug_assert!(self.preallocated_pages <= self.dirty_pages);
        self.preallocated
            .store(self.preallocated_pages, Ordering::Release);
        self.promised.store(
            self.dirty_pages.saturating_sub(self.preallocated_pages),
            Ordering::Release,
        );
    }
}

/// What became of one entry a writeback took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written, committed and the journal flushed past its transaction.
    Durable,
    /// Its batch failed (or the flush after it): the same contents stay
    /// dirty and count as failed.
    Failed,
    /// Written and committed, but the journal flush after it failed: as
    /// `Failed`, and remembered as written (see `InodeState::unconfirmed`).
    NotDurable,
    /// A batch before it failed, so it was not tried: dirty again.
    Untried,
}

impl Cache {
    /// The page counters, checked against the page caches in debug builds.
    pub(crate) fn stats(&self) -> CacheStats {
        let accounting = &self.accounting;
        debug_assert_eq!(
            (
                accounting.cached_pages,
                accounting.dirty_pages,
                accounting.preallocated_pages,
                accounting.rewrite_pages
            ),
            self.inodes.values().fold(
                (0, 0, 0, 0),
                |(cached, dirty, preallocated, rewrites), state| {
                    let (inode_cached, inode_dirty) = state.page_counts();
                    (
                        cached + inode_cached,
                        dirty + inode_dirty,
                        preallocated + state.preallocated.len() as u64,
                        rewrites + state.rewrites.len() as u64,
                    )
                }
            ),
            "page counts drifted from the page caches"
        );
        debug_assert!(
            self.inodes
                .values()
                .all(|state| state.preallocated.iter().all(|&page| state.unclean(page))),
            "a page without a promise is clean"
        );
        debug_assert!(
            self.inodes.values().all(|state| state
                .rewrites
                .iter()
                .all(|&page| state.unclean(page) && !state.preallocated.contains(&page))),
            "a rewrite's charge outlived its page"
        );
        CacheStats {
            cached_bytes: accounting.cached_pages * PAGE,
            dirty_bytes: accounting.dirty_pages * PAGE,
            evicted_pages: accounting.evicted_pages,
            inodes: self.inodes.len() as u64,
        }
    }

    /// Drops everything kept for `ino`, dirty pages included. A writeback
    /// of it in flight lands on nothing, and no fill finds the inode.
    pub(crate) fn forget(&mut self, ino: u64) {
        if let Some(state) = self.inodes.remove(&ino) {
            let (cached, dirty) = state.page_counts();
            self.accounting.cached_pages -= cached;
            self.accounting
                .remove_preallocated(state.preallocated.len() as u64);
            self.accounting.remove_rewrites(state.rewrites.len() as u64);
            self.accounting.remove_unclean(dirty);
        }
    }
}

/// The cache lock and the condition variable paired with it. See the
/// module comment.
pub(crate) struct PageCache {
    cache: Mutex<Cache>,
    /// Signalled (with `cache`) whenever a writeback lands or a fill
    /// completes: what writers, truncates and other writebacks wait for.
    settled: Condvar,
}

impl PageCache {
    /// An empty cache with the default budget, publishing its count of
    /// dirty pages holding a promise in `promised`, and of those over
    /// preallocated blocks in `preallocated`.
    pub(crate) fn new(
        promised: Arc<AtomicU64>,
        preallocated: Arc<AtomicU64>,
        rewrites: Arc<AtomicU64>,
    ) -> PageCache {
        PageCache {
            cache: Mutex::new(Cache {
                inodes: HashMap::new(),
                accounting: Accounting {
                    budget_pages: DEFAULT_CACHE_BUDGET / PAGE,
                    cached_pages: 0,
                    dirty_pages: 0,
                    preallocated_pages: 0,
                    promised,
                    preallocated,
                    rewrite_pages: 0,
                    rewrites,
                    evicted_pages: 0,
                    clock: VecDeque::new(),
                },
            }),
            settled: Condvar::new(),
        }
    }

    /// The cache, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Cache> {
        // Every update under the lock leaves the map consistent before it
        // can panic (pages, marks and their counts change together in
        // methods that cannot fail halfway), so a poisoned lock holds usable
        // state.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps until a writeback lands or a fill completes.
    pub(crate) fn wait<'c>(&self, cache: MutexGuard<'c, Cache>) -> MutexGuard<'c, Cache> {
        self.settled
            .wait(cache)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes everyone in [`PageCache::wait`]: a writeback landed or a fill
    /// completed.
    pub(crate) fn wake_all(&self) {
        self.settled.notify_all();
    }

    /// A guard that wakes the waiters when dropped, even when unwinding:
    /// declared before a fill's reservations, it is dropped after them, so
    /// waiters wake to find them gone.
    pub(crate) fn wake_on_drop(&self) -> WakeOnDrop<'_> {
        WakeOnDrop(&self.settled)
    }

    /// Sets the budget for clean pages to `bytes` (rounded down to whole
    /// pages), evicting at once if the cache is over it.
    pub(crate) fn set_budget(&self, bytes: u64) {
        let mut cache = self.lock();
        cache.accounting.budget_pages = bytes / PAGE;
        cache.evict_over_budget();
    }

    /// Drops every clean page (dirty ones stay: they are not on the
    /// device yet), as an eviction to a budget of nothing would.
    pub(crate) fn drop_clean(&self) {
        let mut cache = self.lock();
        let budget = cache.accounting.budget_pages;
        cache.accounting.budget_pages = 0;
        cache.evict_over_budget();
        cache.accounting.budget_pages = budget;
    }

    /// The page counters.
    pub(crate) fn stats(&self) -> CacheStats {
        self.lock().stats()
    }
}

/// Wakes everyone waiting on the cache's condition variable when dropped.
pub(crate) struct WakeOnDrop<'c>(&'c Condvar);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_all();
    }
}
