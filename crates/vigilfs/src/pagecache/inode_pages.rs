//! One inode's part of the page cache ([`InodeState`]) and the only
//! methods that change its pages: each keeps the cache's page counts and
//! eviction queue right as it goes (see the module comment of
//! [`pagecache`](super)).

use std::collections::BTreeSet;
use std::sync::Arc;

use errseq::ErrSeq;
use xarray::{Mark, Span, XArray};

use super::{Accounting, LostBytes, Outcome, Page, LARGE_ORDER, LARGE_PAGES, PAGE, PAGE_BYTES};
use crate::inode::Timestamp;

/// Per-inode state of the data path, kept until the inode is forgotten
/// ([`Cache::forget`](super::Cache::forget)).
pub(crate) struct InodeState {
    /// The inode.
    pub(crate) ino: u64,
    /// The inode's writeback error word.
    pub(crate) errseq: ErrSeq,
    /// Page index → entry; dirty entries carry [`Mark::Dirty`], entries
    /// being written back [`Mark::Writeback`]. An entry is one page (order
    /// 0) or an aligned run of [`LARGE_PAGES`] pages (order
    /// [`LARGE_ORDER`]), its bytes the pages' bytes in order; or a locked
    /// reservation that a read is filling. Shared so a fill can hold its
    /// reservations' guards with the cache lock dropped.
    pub(crate) pages: Arc<XArray<Page>>,
    /// Dirty pages whose current contents already failed writeback (and
    /// were reported into the error words), by page index.
    pub(crate) failed: BTreeSet<u64>,
    /// Failed pages whose current contents are in a journal entry that was
    /// written whole but whose flush failed: not known durable, yet not
    /// lost either, as a later flush (the unmount's) can still make them
    /// so. A subset of `failed`; they leave it together.
    pub(crate) unconfirmed: BTreeSet<u64>,
    /// Dirty pages that hold no promise of a block: written over the
    /// file's preallocated (unwritten) block, which their writeback fills
    /// in place. Each is unclean; a page a flight took stays here until it
    /// lands, and leaves at once if it is written again meanwhile.
    pub(crate) preallocated: BTreeSet<u64>,
    /// Unclean pages let in as rewrites of written blocks on a nearly full
    /// filesystem: the allocator keeps blocks for their writeback's b-tree
    /// nodes until they land (see `alloc`). A page a flight took stays here
    /// until it lands, whatever is written to it meanwhile.
    pub(crate) rewrites: BTreeSet<u64>,
    /// The size as writes left it.
    pub(crate) size: u64,
    /// The time of the latest write not yet written back.
    pub(crate) mtime: Option<Timestamp>,
    /// A writeback of this inode is between its snapshot and its landing
    /// (the inode's `I_SYNC`): another writeback, a truncate, a punch or a
    /// fallocate waits for it.
    pub(crate) syncing: bool,
    /// Reservations being filled by reads. While zero no page of this
    /// inode is reserved, and nothing needs to look for one.
    pub(crate) fills: usize,
    /// Bumped by every change to the inode's pages or extents: a block read
    /// from disk with the cache unlocked is still current only if this has
    /// not moved since.
    pub(crate) changes: u64,
    /// Open handles: their cursors point into `errseq`, so the state stays
    /// while any is open.
    pub(crate) opens: u32,
    /// Bytes whose data the kernel wrote back from a shared mapping and
    /// this mount refused (no space, a failing device): the kernel does
    /// not send them again, so their data is lost. Until each is written
    /// again, truncated or punched away, reads of it fail and fsync under
    /// `FsyncErrors::UntilDurable` fails with the refusal's errno.
    pub(crate) lost: LostBytes,
    /// How many unclean pages lie over holes, as `st_blocks` last counted,
    /// with the pages made unclean since: see [`HoleTally`].
    pub(crate) tally: Option<HoleTally>,
    /// Moved whenever `tally` is made, dropped or brought up to date: a
    /// count made with the cache unlocked is kept only if it did not move.
    pub(crate) tally_epoch: u64,
}

/// The unclean pages of a file over holes (no extent under them), kept
/// between `stat`s: `st_blocks` counts them as ext4 counts delayed
/// allocations, and counting them again walked every dirty page at every
/// `stat`, so a loop of writes and `stat`s was quadratic in the pages
/// written since the last writeback.
///
/// The count holds for the file's extents at `extents_generation` (see
/// the extent map's generations) and for the unclean pages when it was
/// made, plus `uncounted`: every page made unclean since, in the order it
/// became so, not yet looked up. A page leaving the unclean set (written
/// back, dropped) drops the tally; so does any change of the extents
/// (their generation moves); and so does a long `uncounted`, when
/// counting again costs no more than looking its pages up.
pub(crate) struct HoleTally {
    pub(crate) over_holes: u64,
    pub(crate) extents_generation: u64,
    /// False until the count of the pages unclean when the tally was made
    /// is in: `uncounted` already collects those made unclean since.
    pub(crate) complete: bool,
    pub(crate) uncounted: Vec<u64>,
}

/// Most pages made unclean a tally follows before it is dropped.
const TALLY_UNCOUNTED: usize = 4096;

/// A cached page: the entry holding it and where the page starts in the
/// entry's bytes.
pub(crate) struct CachedPage {
    entry: Page,
    at: usize,
}

impl CachedPage {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.entry[self.at..self.at + PAGE_BYTES]
    }
}

impl InodeState {
    /// The state of `ino`, first used with `size` on disk: nothing cached,
    /// no error, no writeback.
    pub(crate) fn new(ino: u64, size: u64) -> InodeState {
        InodeState {
            ino,
            errseq: ErrSeq::new(),
            pages: Arc::new(XArray::new()),
            failed: BTreeSet::new(),
            unconfirmed: BTreeSet::new(),
            preallocated: BTreeSet::new(),
            rewrites: BTreeSet::new(),
            size,
            mtime: None,
            syncing: false,
            fills: 0,
            changes: 0,
            opens: 0,
            tally: None,
            tally_epoch: 0,
            lost: LostBytes::default(),
        }
    }

    /// Pages `first..=last` were clean or not cached and are unclean now.
    fn became_unclean(&mut self, first: u64, last: u64) {
        if let Some(tally) = &mut self.tally {
            if tally.uncounted.len() as u64 + (last - first) < TALLY_UNCOUNTED as u64 {
                tally.uncounted.extend(first..=last);
            } else {
                self.drop_tally();
            }
        }
    }

    /// Some unclean page became clean or left: the tally counted it, over a
    /// hole or not, and is no longer right.
    fn drop_tally(&mut self) {
        self.tally = None;
        self.tally_epoch += 1;
    }

    /// Whether something of this inode is not durable: a dirty page, a
    /// writeback in flight, a time pending, or data a refused write-back
    /// of a mapping lost.
    pub(crate) fn unwritten(&self) -> bool {
        self.syncing
            || self.mtime.is_some()
            || !self.lost.is_empty()
            || self.pages.iter_marked(0, Mark::Dirty).next().is_some()
            || self.pages.iter_marked(0, Mark::Writeback).next().is_some()
    }

    /// The pages not clean, in order.
    pub(crate) fn unclean_pages(&self) -> Vec<u64> {
        self.pages
            .iter()
            .filter(|(span, _)| self.unclean(span.index()))
            .flat_map(|(span, _)| span.index()..=span.last())
            .collect()
    }

    /// Whether the state keeps nothing worth keeping: no page cached or
    /// being filled, nothing waiting to be written, no handle open, and no
    /// error in its word that nobody was told of (the next opener must
    /// hear of it). A state dropped now is loaded again, the same, on the
    /// next use.
    pub(crate) fn is_idle(&self) -> bool {
        let error = self.errseq.state();
        self.opens == 0
            && self.fills == 0
            && !self.syncing
            && self.mtime.is_none()
            && self.lost.is_empty()
            && self.pages.iter().next().is_none()
            && (error.errno.is_none() || error.reported)
    }

    /// The cached page at `index`, in whichever entry holds it.
    pub(crate) fn page(&self, index: u64) -> Option<CachedPage> {
        let (span, entry) = self.pages.load_entry(index)?;
        let at = ((index - span.index()) * PAGE) as usize;
        Some(CachedPage { entry, at })
    }

    /// Whether the entry starting at `first` is not clean: dirty, or being
    /// written back (its pages count as dirty until that is durable).
    pub(crate) fn unclean(&self, first: u64) -> bool {
        self.pages.is_marked(first, Mark::Dirty) || self.pages.is_marked(first, Mark::Writeback)
    }

    /// The first page of `first..=last` that `budget` cannot promise a
    /// block, if there is one: a write of the range makes the pages not
    /// dirty yet dirty, and each not in `budget.preallocated` needs the
    /// promise of a block. A page being written back but not dirty counts:
    /// its flight's block is spent, the page will need another.
    pub(crate) fn first_beyond_promise(
        &self,
        first: u64,
        last: u64,
        budget: &PromiseBudget<'_>,
    ) -> Option<u64> {
        let mut new_pages = 0;
        let mut blocks: u64 = 0;
        let mut index = first;
        while index <= last {
            let (dirty, stop) = match self.pages.load_entry(index) {
                Some((span, _)) => (
                    self.pages.is_marked(span.index(), Mark::Dirty),
                    span.last().min(last),
                ),
                None => (false, index),
            };
            if !dirty {
                for page in index..=stop {
                    if budget.preallocated.contains(&page) {
                        continue;
                    }
                    let rewrite = budget.rewritten.contains(&page);
                    let cost = if rewrite {
                        budget.rewrite_cost
                    } else {
                        budget.new_cost
                    };
                    if (!rewrite && new_pages == budget.new_pages)
                        || blocks.saturating_add(cost) > budget.rewrite_blocks
                    {
                        return Some(page);
                    }
                    new_pages += u64::from(!rewrite);
                    blocks = blocks.saturating_add(cost);
                }
            }
            index = stop + 1;
        }
        None
    }

    /// The pages of `first..=last` not cached as unclean (so no flight has
    /// them and a write would make them newly dirty): the only ones a
    /// write may put over a preallocated block without a promise.
    pub(crate) fn newly_dirtied(&self, first: u64, last: u64) -> Vec<u64> {
        (first..=last)
            .filter(|&index| !self.unclean(index))
            .collect()
    }

    /// The pages of `first..=last` not dirty (clean, uncached, or in a
    /// flight): a write makes each dirty, and each needs a promise.
    pub(crate) fn not_dirty(&self, first: u64, last: u64) -> Vec<u64> {
        (first..=last)
            .filter(|&index| !self.pages.is_marked(index, Mark::Dirty))
            .collect()
    }

    /// Forgets that pages `first..=last` are written over preallocated
    /// blocks: they left the cache, became clean, or must hold a promise.
    fn unmark_preallocated(&mut self, accounting: &mut Accounting, first: u64, last: u64) {
        if self.preallocated.is_empty() {
            return;
        }
        let gone: Vec<u64> = self.preallocated.range(first..=last).copied().collect();
        for page in &gone {
            self.preallocated.remove(page);
        }
        accounting.remove_preallocated(gone.len() as u64);
    }

    /// Forgets that pages `first..=last` were let in as rewrites: they
    /// landed or left the cache.
    fn unmark_rewrites(&mut self, accounting: &mut Accounting, first: u64, last: u64) {
        if self.rewrites.is_empty() {
            return;
        }
        let gone: Vec<u64> = self.rewrites.range(first..=last).copied().collect();
        for page in &gone {
            self.rewrites.remove(page);
        }
        accounting.remove_rewrites(gone.len() as u64);
    }

    /// Marks `pages` (unclean now) as let in as rewrites.
    fn mark_rewrites(&mut self, accounting: &mut Accounting, pages: impl Iterator<Item = u64>) {
        let before = self.rewrites.len();
        self.rewrites.extend(pages);
        accounting.add_rewrites((self.rewrites.len() - before) as u64);
    }

    /// The first reservation a read is filling among pages
    /// `first..=last`, if any.
    pub(crate) fn fill_within(&self, first: u64, last: u64) -> Option<Span> {
        if self.fills == 0 {
            return None;
        }
        self.pages
            .find_conflict(first..=last)
            .into_iter()
            .find(|occupant| occupant.value.is_none())
            .map(|occupant| occupant.span)
    }

    /// Stores `page` at `index` as dirty contents that writeback has not
    /// tried yet (a large entry holding `index` is split first). An entry
    /// being written back keeps its WRITEBACK mark: the landing sees the
    /// DIRTY mark and leaves the page dirty. A page made dirty here holds
    /// a promise, unless it is [`Backing::Preallocated`] (see the field
    /// `preallocated`); one let in as a [`Backing::Rewrite`] is charged for
    /// its writeback's nodes too (see the field `rewrites`).
    pub(crate) fn put_dirty(
        &mut self,
        accounting: &mut Accounting,
        index: u64,
        page: Page,
        backing: Backing,
    ) {
        self.split(accounting, index);
        match self.pages.store(index, 0, page) {
            Ok(None) => accounting.cached_pages += 1,
            Ok(Some(_)) => {}
            // Nothing larger is left at `index`, and writers wait until no
            // fill has `index` reserved.
            Err(refused) => unreachable!("page cache refused a page: {:?}", refused.error),
        }
        if !self.pages.is_marked(index, Mark::Dirty) {
            if self.pages.is_marked(index, Mark::Writeback) {
                // Its flight fills the preallocated block: these new
                // contents will need a block of their own.
                self.unmark_preallocated(accounting, index, index);
            } else {
                self.became_unclean(index, index);
                if backing == Backing::Preallocated && self.preallocated.insert(index) {
                    accounting.add_unclean(1, 1);
                } else {
                    accounting.add_unclean(1, 0);
                }
            }
            if backing == Backing::Rewrite {
                self.mark_rewrites(accounting, std::iter::once(index));
            }
            self.pages.set_mark(index, Mark::Dirty);
        }
        self.failed.remove(&index);
        self.unconfirmed.remove(&index);
    }

    /// Stores the [`LARGE_PAGES`] pages from `first` (aligned), written
    /// whole, as one dirty large entry, replacing whatever was cached there.
    /// Those of its pages in `over_preallocated` (pages not dirty before)
    /// hold no promise; those in `rewritten` were let in as rewrites.
    pub(crate) fn put_dirty_large(
        &mut self,
        accounting: &mut Accounting,
        first: u64,
        pages: Page,
        over_preallocated: &BTreeSet<u64>,
        rewritten: &BTreeSet<u64>,
    ) {
        let end = first + LARGE_PAGES;
        // Entries are aligned to their size, so none straddles `first`.
        let old: Vec<u64> = self
            .pages
            .iter_from(first)
            .map(|(span, _)| span.index())
            .take_while(|&index| index < end)
            .collect();
        // Dirty pages over preallocated blocks stay so; those in flight
        // will need a block of their own for the new contents.
        let kept: Vec<u64> = self
            .preallocated
            .range(first..end)
            .copied()
            .filter(|&page| !self.pages.is_marked(page, Mark::Writeback))
            .chain(over_preallocated.range(first..end).copied())
            .collect();
        // Charges for rewrites stay with the pages, now in the new entry.
        let rewrites: Vec<u64> = self
            .rewrites
            .range(first..end)
            .chain(rewritten.range(first..end))
            .copied()
            .collect();
        // The pages unclean before stay so: the tally is kept across the
        // replacement, and follows the pages new to the unclean set.
        let was_unclean: BTreeSet<u64> = old
            .iter()
            .filter_map(|&index| self.pages.load_entry(index))
            .filter(|(span, _)| self.unclean(span.index()))
            .flat_map(|(span, _)| span.index()..=span.last())
            .collect();
        let tally = self.tally.take();
        for index in old {
            self.drop_entry(accounting, index);
        }
        self.tally = tally;
        for page in (first..end).filter(|page| !was_unclean.contains(page)) {
            self.became_unclean(page, page);
        }
        if let Err(refused) = self.pages.store(first, LARGE_ORDER, pages) {
            unreachable!("page cache refused a large entry: {:?}", refused.error);
        }
        self.pages.set_mark(first, Mark::Dirty);
        accounting.cached_pages += LARGE_PAGES;
        let before = self.preallocated.len();
        self.preallocated.extend(kept);
        accounting.add_unclean(LARGE_PAGES, (self.preallocated.len() - before) as u64);
        self.mark_rewrites(accounting, rewrites.into_iter());
    }

    /// Caches `page`, read from a written extent, as clean at `index` when
    /// nothing is cached or reserved there.
    pub(crate) fn put_clean(&mut self, accounting: &mut Accounting, index: u64, page: Page) {
        if self.pages.load(index).is_some() {
            return;
        }
        // Refused only when another read has `index` reserved: its fill
        // caches the same bytes.
        if self.pages.store(index, 0, page).is_ok() {
            accounting.cached_pages += 1;
            accounting.clock.push_back((self.ino, index));
        }
    }

    /// Replaces a large entry holding `index` by its pages, one entry each,
    /// with its DIRTY and WRITEBACK marks (the failed set is per page
    /// already). The page counts do not change; clean pages each get an
    /// eviction entry, as the newest.
    pub(crate) fn split(&mut self, accounting: &mut Accounting, index: u64) {
        self.split_into(accounting, index, false);
    }

    /// [`InodeState::split`], the clean pages' eviction entries first in
    /// the queue (`oldest`, for eviction) or last. Whether there was a
    /// large entry to split.
    pub(super) fn split_into(
        &mut self,
        accounting: &mut Accounting,
        index: u64,
        oldest: bool,
    ) -> bool {
        let Some((span, entry)) = self.pages.load_entry(index) else {
            return false;
        };
        if span.order() == 0 {
            return false;
        }
        let dirty = self.pages.is_marked(span.index(), Mark::Dirty);
        let writeback = self.pages.is_marked(span.index(), Mark::Writeback);
        // Only a fill's reservation is ever locked, and this is a value.
        let _ = self.pages.erase(span.index());
        for page in span.index()..=span.last() {
            let at = ((page - span.index()) * PAGE) as usize;
            let bytes: Page = entry[at..at + PAGE_BYTES].into();
            if let Err(refused) = self.pages.store(page, 0, bytes) {
                unreachable!("page cache refused a split page: {:?}", refused.error);
            }
            if dirty {
                self.pages.set_mark(page, Mark::Dirty);
            }
            if writeback {
                self.pages.set_mark(page, Mark::Writeback);
            }
            if !dirty && !writeback && !oldest {
                accounting.clock.push_back((self.ino, page));
            }
        }
        if !dirty && !writeback && oldest {
            for page in (span.index()..=span.last()).rev() {
                accounting.clock.push_front((self.ino, page));
            }
        }
        true
    }

    /// Splits a large entry across `boundary` (holding `boundary` but
    /// starting before it), so a range starting or ending there covers
    /// whole entries only.
    pub(crate) fn split_at(&mut self, accounting: &mut Accounting, boundary: u64) {
        if self
            .pages
            .load_entry(boundary)
            .is_some_and(|(span, _)| span.index() < boundary)
        {
            self.split(accounting, boundary);
        }
    }

    /// Drops the whole entry holding `index`, dirty or not; returns how
    /// many pages it held.
    pub(crate) fn drop_entry(&mut self, accounting: &mut Accounting, index: u64) -> u64 {
        let Some((span, _)) = self.pages.load_entry(index) else {
            return 0;
        };
        let unclean = self.unclean(span.index());
        // Only a fill's reservation is ever locked, and this is a value.
        let _ = self.pages.erase(span.index());
        accounting.cached_pages -= span.size();
        if unclean {
            self.unmark_preallocated(accounting, span.index(), span.last());
            self.unmark_rewrites(accounting, span.index(), span.last());
            accounting.remove_unclean(span.size());
            self.drop_tally();
        }
        for page in span.index()..=span.last() {
            self.failed.remove(&page);
            self.unconfirmed.remove(&page);
        }
        span.size()
    }

    /// Settles the entries now holding the pages of `written` (one entry a
    /// writeback took, since split or partly rewritten perhaps): each that
    /// still carries WRITEBACK loses it and, unless a write made it dirty
    /// again meanwhile, becomes clean (`durable`) or dirty again. Returns
    /// whether a failure is new: some page of it holds contents that had
    /// not failed before.
    pub(crate) fn land_entry(
        &mut self,
        accounting: &mut Accounting,
        written: Span,
        outcome: Outcome,
    ) -> bool {
        let current: Vec<Span> = self
            .pages
            .iter_from(written.index())
            .map(|(span, _)| span)
            .take_while(|span| span.index() <= written.last())
            .filter(|span| self.pages.is_marked(span.index(), Mark::Writeback))
            .collect();
        // A page rewritten while in flight holds new contents: if this
        // writeback failed, its old contents were lost and nobody was told.
        let failed = matches!(outcome, Outcome::Failed | Outcome::NotDurable);
        let mut new_failure =
            failed && (current.iter().map(|span| span.size()).sum::<u64>() < written.size());
        for span in current {
            self.pages.clear_mark(span.index(), Mark::Writeback);
            if self.pages.is_marked(span.index(), Mark::Dirty) {
                new_failure |= failed;
                continue;
            }
            match outcome {
                Outcome::Durable => {
                    self.drop_tally();
                    self.unmark_preallocated(accounting, span.index(), span.last());
                    self.unmark_rewrites(accounting, span.index(), span.last());
                    accounting.remove_unclean(span.size());
                    accounting.clock.push_back((self.ino, span.index()));
                    for page in span.index()..=span.last() {
                        self.failed.remove(&page);
                        self.unconfirmed.remove(&page);
                    }
                }
                Outcome::Failed | Outcome::NotDurable => {
                    self.pages.set_mark(span.index(), Mark::Dirty);
                    for page in span.index()..=span.last() {
                        new_failure |= self.failed.insert(page);
                        if outcome == Outcome::NotDurable {
                            self.unconfirmed.insert(page);
                        }
                    }
                }
                Outcome::Untried => {
                    self.pages.set_mark(span.index(), Mark::Dirty);
                }
            }
        }
        new_failure
    }

    /// Keeps the cached data of pages `first..end` for a rescue after a
    /// media failure under them: locks each entry holding one of those
    /// pages (a large entry whole, however little of it is in the range),
    /// marks the clean ones dirty so the next writeback copies their bytes
    /// to a new block, and unlocks. Entries already dirty or in writeback
    /// are on their way to a new block anyway. Returns the pages of the
    /// range whose data is now in memory and will be written.
    ///
    /// The caller holds the cache lock and no fill has any of these pages
    /// reserved (only fills lock entries otherwise, so the locks are taken
    /// at once); the locks keep the entries from changing while they are
    /// judged and marked.
    pub(crate) fn hold_for_rescue(
        &mut self,
        accounting: &mut Accounting,
        first: u64,
        end: u64,
    ) -> Vec<u64> {
        let spans: Vec<Span> = self
            .pages
            .iter_from(first)
            .map(|(span, _)| span)
            .take_while(|span| span.index() < end)
            .collect();
        let guards: Vec<_> = spans
            .iter()
            .filter_map(|span| self.pages.lock(span.index()))
            .collect();
        let mut held = Vec::new();
        let mut newly_unclean = Vec::new();
        for guard in &guards {
            let span = guard.span();
            let dirty = guard.is_marked(Mark::Dirty) || guard.is_marked(Mark::Writeback);
            if !dirty {
                guard.set_mark(Mark::Dirty);
                accounting.add_unclean(span.size(), 0);
                newly_unclean.push(span);
            }
            held.extend((span.index().max(first)..=span.last()).take_while(|&page| page < end));
        }
        drop(guards);
        for span in newly_unclean {
            self.became_unclean(span.index(), span.last());
        }
        held
    }

    /// The pages cached, and those of them not clean.
    pub(super) fn page_counts(&self) -> (u64, u64) {
        self.pages
            .iter()
            .fold((0, 0), |(cached, unclean), (span, _)| {
                let dirty = if self.unclean(span.index()) {
                    span.size()
                } else {
                    0
                };
                (cached + span.size(), unclean + dirty)
            })
    }

    /// Whether the entry holding `index` may be evicted: cached, clean, not
    /// being written back, and not holding contents that failed writeback.
    pub(super) fn evictable(&self, index: u64) -> bool {
        self.pages.load_entry(index).is_some_and(|(span, _)| {
            !self.unclean(span.index())
                && self
                    .failed
                    .range(span.index()..=span.last())
                    .next()
                    .is_none()
        })
    }
}

/// What a page made dirty stands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backing {
    /// A block promised by the allocator.
    Promise,
    /// Its file's preallocated block, filled in place: no promise.
    Preallocated,
    /// A block promised from the rewrite tier, for a page rewriting a
    /// written block: charged for its writeback's nodes too.
    Rewrite,
}

/// What a write may still be promised (see
/// [`InodeState::first_beyond_promise`]).
#[derive(Debug)]
pub(crate) struct PromiseBudget<'a> {
    /// Pages over holes or past the end (new data): at most this many.
    pub(crate) new_pages: u64,
    /// Pages over the file's preallocated blocks: they need no promise.
    pub(crate) preallocated: &'a BTreeSet<u64>,
    /// Pages rewriting written blocks, let in from the rewrite tier.
    pub(crate) rewritten: &'a BTreeSet<u64>,
    /// Blocks the rewrite tier has for the whole write ([`u64::MAX`] when
    /// no page of it is a rewrite).
    pub(crate) rewrite_blocks: u64,
    /// What a page of `rewritten` costs of `rewrite_blocks`.
    pub(crate) rewrite_cost: u64,
    /// What any other page costs of `rewrite_blocks`.
    pub(crate) new_cost: u64,
}

impl<'a> PromiseBudget<'a> {
    /// New data only: `new_pages` pages, and those of `preallocated` free.
    pub(crate) fn new_data(new_pages: u64, preallocated: &'a BTreeSet<u64>) -> Self {
        const NONE: &BTreeSet<u64> = &BTreeSet::new();
        PromiseBudget {
            new_pages,
            preallocated,
            rewritten: NONE,
            rewrite_blocks: u64::MAX,
            rewrite_cost: 0,
            new_cost: 0,
        }
    }
}
