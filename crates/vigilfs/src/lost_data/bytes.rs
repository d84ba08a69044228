//! A set of one file's lost bytes (see the module above): the cache's
//! live view, a file's records, what a writeback carries no data for.
//!
//! Kept as disjoint, non-adjacent byte ranges, so that a rewrite in small
//! pieces (a record at a time, unaligned) takes the loss away byte by byte,
//! exactly where it rewrites: a byte is lost from the refusal until it is
//! written again, truncated or punched away. The errno is the latest
//! refusal's, kept while any byte is lost.

use std::collections::BTreeMap;

use errseq::Errno;

/// See the module comment.
#[derive(Debug, Default, Clone)]
pub(crate) struct LostBytes {
    /// Start → end (exclusive) of each lost range.
    ranges: BTreeMap<u64, u64>,
    errno: Option<Errno>,
}

impl LostBytes {
    /// Bytes `start..end` were lost with `errno`.
    pub(crate) fn lose(&mut self, start: u64, end: u64, errno: Errno) {
        if start >= end {
            return;
        }
        self.errno = Some(errno);
        // Merge with every range touching `start..end`.
        let mut merged = (start, end);
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|&(_, &stop)| stop >= start)
            .map(|(&first, &stop)| (first, stop))
            .collect();
        for (first, stop) in touching {
            self.ranges.remove(&first);
            merged = (merged.0.min(first), merged.1.max(stop));
        }
        self.ranges.insert(merged.0, merged.1);
    }

    /// Bytes `start..end` hold data again (written, or cut off): none of
    /// them is lost any more.
    pub(crate) fn replace(&mut self, start: u64, end: u64) {
        if start >= end || self.ranges.is_empty() {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|&(_, &stop)| stop > start)
            .map(|(&first, &stop)| (first, stop))
            .collect();
        for (first, stop) in overlapping {
            self.ranges.remove(&first);
            if first < start {
                self.ranges.insert(first, start);
            }
            if stop > end {
                self.ranges.insert(end, stop);
            }
        }
        if self.ranges.is_empty() {
            self.errno = None;
        }
    }

    /// How many disjoint ranges the set holds.
    pub(crate) fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The set with its smallest gaps filled until at most `most` ranges
    /// are left (at least 1): a superset, as close to it as that many
    /// ranges allow.
    pub(crate) fn coarsened(&self, most: usize) -> LostBytes {
        let most = most.max(1);
        let ranges = self.ranges();
        if ranges.len() <= most {
            return self.clone();
        }
        // The gaps after each range but the last, smallest filled first.
        let mut gaps: Vec<(u64, usize)> = ranges
            .windows(2)
            .enumerate()
            .map(|(at, pair)| (pair[1].0 - pair[0].1, at))
            .collect();
        gaps.sort_unstable();
        let mut filled = vec![false; ranges.len()];
        for &(_, at) in gaps.iter().take(ranges.len() - most) {
            filled[at] = true;
        }
        let mut coarse = LostBytes {
            ranges: BTreeMap::new(),
            errno: self.errno,
        };
        let mut start = ranges[0].0;
        for (at, &(_, end)) in ranges.iter().enumerate() {
            if !filled[at] {
                coarse.ranges.insert(start, end);
                if let Some(&(next, _)) = ranges.get(at + 1) {
                    start = next;
                }
            }
        }
        coarse
    }

    /// A set of `ranges` (in any order; they may touch or overlap).
    pub(crate) fn from_ranges(ranges: &[(u64, u64)], errno: Errno) -> LostBytes {
        let mut lost = LostBytes::default();
        for &(start, end) in ranges {
            lost.lose(start, end, errno);
        }
        lost
    }

    /// The ranges with a byte in `start..end`, whole, in order.
    pub(crate) fn overlapping(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        if start >= end {
            return Vec::new();
        }
        let before = self
            .ranges
            .range(..start)
            .next_back()
            .filter(|&(_, &stop)| stop > start);
        before
            .into_iter()
            .chain(self.ranges.range(start..end))
            .map(|(&first, &stop)| (first, stop))
            .collect()
    }

    /// The lost bytes of `start..end`: [`LostBytes::overlapping`] cut to it.
    pub(crate) fn ranges_within(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        self.overlapping(start, end)
            .into_iter()
            .map(|(first, stop)| (first.max(start), stop.min(end)))
            .collect()
    }

    /// The first lost byte in `start..end`, if any.
    pub(crate) fn first_within(&self, start: u64, end: u64) -> Option<u64> {
        if start >= end {
            return None;
        }
        let before = self
            .ranges
            .range(..=start)
            .next_back()
            .filter(|&(_, &stop)| stop > start)
            .map(|_| start);
        before.or_else(|| {
            self.ranges
                .range(start..end)
                .next()
                .map(|(&first, _)| first)
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The errno of the latest refusal, while any byte is lost.
    pub(crate) fn errno(&self) -> Option<Errno> {
        self.errno
    }

    /// The lost ranges, `(start, end)` in order.
    pub(crate) fn ranges(&self) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .map(|(&start, &end)| (start, end))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Change {
        Lose(u64, u64),
        Replace(u64, u64),
    }

    fn change() -> impl Strategy<Value = Change> {
        let range = (0..200u64, 0..60u64).prop_map(|(start, length)| (start, start + length));
        prop_oneof![
            range
                .clone()
                .prop_map(|(start, end)| Change::Lose(start, end)),
            range.prop_map(|(start, end)| Change::Replace(start, end)),
        ]
    }

    proptest! {
        /// Against a set of lost bytes: the same bytes lost, kept as
        /// disjoint ranges that do not touch, and the first lost byte of
        /// any range found.
        #[test]
        fn lost_bytes_follow_a_set_of_bytes(changes in prop::collection::vec(change(), 1..40)) {
            let mut lost = LostBytes::default();
            let mut model: BTreeSet<u64> = BTreeSet::new();
            for change in &changes {
                match *change {
                    Change::Lose(start, end) => {
                        lost.lose(start, end, Errno::ENOSPC);
                        model.extend(start..end);
                    }
                    Change::Replace(start, end) => {
                        lost.replace(start, end);
                        model.retain(|byte| !(start..end).contains(byte));
                    }
                }
                let ranges = lost.ranges();
                let bytes: BTreeSet<u64> =
                    ranges.iter().flat_map(|&(start, end)| start..end).collect();
                prop_assert_eq!(&bytes, &model, "after {:?}", change);
                for pair in ranges.windows(2) {
                    prop_assert!(pair[0].1 < pair[1].0, "{:?}", ranges);
                }
                prop_assert_eq!(lost.is_empty(), model.is_empty());
                for most in [1, 2, 3] {
                    let coarse = lost.coarsened(most);
                    prop_assert!(coarse.range_count() <= most.max(lost.range_count().min(most)));
                    let covered: BTreeSet<u64> = coarse
                        .ranges()
                        .iter()
                        .flat_map(|&(start, end)| start..end)
                        .collect();
                    prop_assert!(covered.is_superset(&model));
                    if let (Some(first), Some(last)) = (model.first(), model.last()) {
                        prop_assert!(covered.iter().all(|byte| first <= byte && byte <= last));
                    }
                }
                prop_assert_eq!(lost.errno().is_some(), !model.is_empty());
                for start in (0..260).step_by(7) {
                    let end = start + 13;
                    let first = model.range(start..end).next().copied();
                    prop_assert_eq!(lost.first_within(start, end), first);
                    let within: BTreeSet<u64> = lost
                        .ranges_within(start, end)
                        .iter()
                        .flat_map(|&(first, stop)| first..stop)
                        .collect();
                    let wanted: BTreeSet<u64> = model.range(start..end).copied().collect();
                    prop_assert_eq!(within, wanted);
                    let whole: Vec<(u64, u64)> = ranges
                        .iter()
                        .copied()
                        .filter(|&(first, stop)| first < end && stop > start)
                        .collect();
                    prop_assert_eq!(lost.overlapping(start, end), whole);
                }
            }
        }
    }
}
