//! Eviction: keeping clean pages within the budget, oldest first.
//!
//! The order is a FIFO of (inode, page index) in the order pages became
//! clean; stale entries (the page became dirty, vanished, or is queued
//! again later) are skipped when reached and compacted away when they
//! outnumber the clean pages, so the queue stays bounded at amortised
//! constant cost and nothing has to search it.

use std::collections::HashSet;

use super::Cache;

impl Cache {
    /// Evicts clean entries, oldest first, until the clean pages fit the
    /// budget: a large entry goes whole while the excess is at least its size
    /// (splitting copies every page, which would cost a streaming read more
    /// than the fill did), and is split only to trim the last few pages, its
    /// pages keeping its place in the queue. Then drops stale eviction-queue
    /// entries when they outnumber the clean pages.
    pub(crate) fn evict_over_budget(&mut self) {
        let Cache { inodes, accounting } = self;
        while accounting.clean_pages() > accounting.budget_pages {
            let Some((ino, index)) = accounting.clock.pop_front() else {
                break;
            };
            let Some(state) = inodes.get_mut(&ino) else {
                continue;
            };
            if !state.evictable(index) {
                continue;
            }
            let excess = accounting.clean_pages() - accounting.budget_pages;
            if state
                .pages
                .load_entry(index)
                .is_some_and(|(span, _)| span.size() > excess)
                && state.split_into(accounting, index, true)
            {
                continue;
            }
            accounting.evicted_pages += state.drop_entry(accounting, index);
            if state.is_idle() {
                inodes.remove(&ino);
            }
        }
        // Every clean page has an entry, so the queue only outgrows them by
        // stale entries: compacting at twice their number (plus slack) keeps
        // the queue bounded at amortised constant cost.
        if accounting.clock.len() as u64 > 2 * accounting.clean_pages() + 1024 {
            let mut seen = HashSet::new();
            accounting.clock.retain(|&(ino, index)| {
                inodes.get(&ino).is_some_and(|state| state.evictable(index))
                    && seen.insert((ino, index))
            });
        }
    }
}
