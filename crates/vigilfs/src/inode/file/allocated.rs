//! `st_blocks`: how many blocks a file holds or will hold once its cached
//! data is written back. Extents count as mapped; dirty pages and pages in
//! writeback count only where no extent maps them, so a page is never
//! counted twice and a hole never counted at all. The count over holes is
//! kept per inode and only brought up to date for pages made unclean since
//! the last count, because `stat` is frequent and a file's dirty pages many.

use super::*;

impl Files {
    /// The blocks `ino` has on the device or will have once its cached
    /// data is written back (`st_blocks`, in blocks): its extents, written
    /// and unwritten, plus the dirty pages (and those being written back)
    /// over holes — as ext4 and XFS count delayed allocations. A hole
    /// counts nothing, so a sparse file reports its allocation, not its
    /// size.
    ///
    /// Both halves are kept between calls: the extent map keeps the count
    /// of mapped blocks until the extents change, and the inode's
    /// [`HoleTally`] the unclean pages over holes, so a `stat` after a
    /// write looks up only the pages made unclean since the last one.
    pub fn allocated_blocks(&self, ino: u64) -> FileResult<u64> {
        let mapped = self.extents.mapped_blocks(ino)?;
        // What is left to look up, taken under the cache lock; the lookups
        // run with it unlocked.
        let (what, base, runs, epoch) = {
            let mut cache = self.cache.lock();
            let Some(state) = cache.inodes.get_mut(&ino) else {
                return Ok(mapped.blocks);
            };
            match &state.tally {
                Some(tally) if tally.complete && tally.extents_generation == mapped.generation => {
                    if tally.uncounted.is_empty() {
                        return Ok(mapped.blocks + tally.over_holes);
                    }
                    let mut pages = tally.uncounted.clone();
                    pages.sort_unstable();
                    pages.dedup();
                    let runs = page_runs(pages.into_iter().map(|page| (page, page + 1)));
                    let what = Counted::Uncounted(tally.uncounted.len());
                    (what, tally.over_holes, runs, state.tally_epoch)
                }
                _ => {
                    // Count every unclean page again; those made unclean
                    // meanwhile go to the new tally's `uncounted`.
                    state.tally_epoch += 1;
                    state.tally = Some(HoleTally {
                        over_holes: 0,
                        extents_generation: mapped.generation,
                        complete: false,
                        uncounted: Vec::new(),
                    });
                    let mut spans: Vec<(u64, u64)> = [Mark::Dirty, Mark::Writeback]
                        .into_iter()
                        .flat_map(|mark| state.pages.iter_marked(0, mark))
                        .map(|(span, _)| (span.index(), span.last() + 1))
                        .collect();
                    spans.sort_unstable();
                    (
                        Counted::All,
                        0,
                        page_runs(spans.into_iter()),
                        state.tally_epoch,
                    )
                }
            }
        };
        let over_holes = base + self.unmapped_pages(ino, &runs)?;
        let mut cache = self.cache.lock();
        if let Some(state) = cache.inodes.get_mut(&ino) {
            if state.tally_epoch == epoch {
                if let Some(tally) = &mut state.tally {
                    tally.over_holes = over_holes;
                    match what {
                        Counted::All => tally.complete = true,
                        Counted::Uncounted(pages) => {
                            tally.uncounted.drain(..pages);
                        }
                    }
                    state.tally_epoch += 1;
                }
            }
        }
        Ok(mapped.blocks + over_holes)
    }

    /// How many pages of `runs` (`first..end`, in order, not overlapping)
    /// no extent of `ino` maps: one lookup of the extents per run.
    fn unmapped_pages(&self, ino: u64, runs: &[(u64, u64)]) -> FileResult<u64> {
        let mut unmapped = 0;
        for &(first, end) in runs {
            let covered: u64 = self
                .extents
                .overlapping(ino, first, end)?
                .iter()
                .map(|(offset, extent)| {
                    let stop = (offset + u64::from(extent.blocks())).min(end);
                    stop.saturating_sub((*offset).max(first))
                })
                .sum();
            unmapped += (end - first) - covered;
        }
        Ok(unmapped)
    }
}

/// What a count of unclean pages over holes covered: every unclean page
/// (a new tally), or the first `n` pages of a tally's `uncounted`.
#[derive(Clone, Copy)]
enum Counted {
    All,
    Uncounted(usize),
}
