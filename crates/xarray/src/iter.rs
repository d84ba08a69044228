//! Ordered iteration over entries, all of them or only those with a mark.
//!
//! An iterator holds no lock between calls: it copies a batch of entries
//! under the shared tree lock, hands them out, and resumes after the last
//! index of the last entry it saw. So it never blocks writers for long and
//! cannot deadlock with the caller storing into the same index mid-loop.
//! What that costs: the walk is weakly consistent. Each entry present for
//! the whole iteration is yielded exactly once, in index order; entries
//! stored or erased meanwhile may or may not appear. Reservations being
//! filled are never yielded.

use std::collections::VecDeque;

use crate::tree::Filter;
use crate::{Span, XArray};

/// Entries copied per visit to the tree, at most: large enough that the
/// descent from the root is paid rarely, small enough to hold the shared
/// lock only briefly.
const BATCH: usize = 64;
/// Entries copied by the first visit. Most walks from an index stop after
/// an entry or two (the pages of one write, the span just written back):
/// copying 64 for them cost more than the lookups themselves (5% of a
/// write + fsync). Each later visit takes twice as many, up to [`BATCH`].
const FIRST_BATCH: usize = 4;

/// An iterator over `(span, value)` pairs in index order, from
/// [`XArray::iter_from`] or [`XArray::iter_marked`].
pub struct Iter<'a, T> {
    xa: &'a XArray<T>,
    filter: Filter,
    resume_at: Option<u64>,
    batch: VecDeque<(Span, T)>,
    /// Entries the next visit copies.
    next_batch: usize,
}

impl<'a, T> Iter<'a, T> {
    pub(crate) fn new(xa: &'a XArray<T>, from: u64, filter: Filter) -> Self {
        Self {
            xa,
            filter,
            resume_at: Some(from),
            batch: VecDeque::with_capacity(FIRST_BATCH),
            next_batch: FIRST_BATCH,
        }
    }
}

impl<T> std::fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("filter", &self.filter)
            .field("resume_at", &self.resume_at)
            .field("buffered", &self.batch.len())
            .finish()
    }
}

impl<T: Clone> Iterator for Iter<'_, T> {
    type Item = (Span, T);

    fn next(&mut self) -> Option<Self::Item> {
        if self.batch.is_empty() {
            let from = self.resume_at?;
            let tree = self.xa.read_tree();
            self.resume_at =
                tree.collect_batch(from, self.filter, self.next_batch, &mut self.batch);
            self.next_batch = (self.next_batch * 2).min(BATCH);
        }
        self.batch.pop_front()
    }
}

impl<T: Clone> std::iter::FusedIterator for Iter<'_, T> {}
