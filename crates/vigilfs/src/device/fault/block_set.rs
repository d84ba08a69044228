//! A set of block numbers stored as disjoint, non-adjacent runs, so a rule covering a terabyte
//! of bad blocks or a thin volume's provisioned blocks costs memory per run, not per block.
//!
//! Invariant: runs in the map are non-empty, sorted, and neither overlap nor touch (touching
//! runs are merged on insert).

use std::collections::BTreeMap;
use std::ops::Range;

#[derive(Debug, Clone, Default)]
pub(crate) struct BlockSet {
    /// Run start → run end (exclusive).
    runs: BTreeMap<u64, u64>,
    count: u64,
}

impl BlockSet {
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// The runs overlapping `blocks`, clipped to it, in ascending order.
    pub(crate) fn overlapping(&self, blocks: Range<u64>) -> Vec<Range<u64>> {
        let mut found: Vec<Range<u64>> = self
            .runs
            .range(..blocks.end)
            .rev()
            .take_while(|(_, &end)| end > blocks.start)
            .map(|(&start, &end)| start.max(blocks.start)..end.min(blocks.end))
            .collect();
        found.reverse();
        found
    }

    /// How many blocks of `blocks` are not in the set.
    pub(crate) fn count_missing(&self, blocks: Range<u64>) -> u64 {
        let present: u64 = self
            .overlapping(blocks.clone())
            .iter()
            .map(|run| run.end - run.start)
            .sum();
        (blocks.end - blocks.start) - present
    }

    pub(crate) fn insert(&mut self, blocks: Range<u64>) {
        if blocks.start >= blocks.end {
            return;
        }
        let mut start = blocks.start;
        let mut end = blocks.end;
        // Runs that overlap or touch the new one are absorbed into it.
        let absorbed: Vec<(u64, u64)> = self
            .runs
            .range(..=blocks.end)
            .rev()
            .take_while(|(_, &run_end)| run_end >= blocks.start)
            .map(|(&run_start, &run_end)| (run_start, run_end))
            .collect();
        for (run_start, run_end) in absorbed {
            self.runs.remove(&run_start);
            self.count -= run_end - run_start;
            start = start.min(run_start);
            end = end.max(run_end);
        }
        self.runs.insert(start, end);
        self.count += end - start;
    }

    pub(crate) fn remove(&mut self, blocks: Range<u64>) {
        for run in self.overlapping(blocks.clone()) {
            let Some((&run_start, &run_end)) = self.runs.range(..=run.start).next_back() else {
                continue;
            };
            self.runs.remove(&run_start);
            self.count -= run_end - run_start;
            if run_start < blocks.start {
                self.runs.insert(run_start, blocks.start);
                self.count += blocks.start - run_start;
            }
            if run_end > blocks.end {
                self.runs.insert(blocks.end, run_end);
                self.count += run_end - blocks.end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn touching_runs_merge_and_removal_splits() {
        let mut set = BlockSet::default();
        set.insert(0..10);
        set.insert(10..20);
        assert_eq!(set.overlapping(0..100), vec![0..20]);
        set.remove(5..7);
        assert_eq!(set.overlapping(0..100), vec![0..5, 7..20]);
        assert_eq!(set.len(), 18);
        assert_eq!(set.count_missing(0..30), 12);
    }

    proptest! {
        #[test]
        fn block_set_agrees_with_a_set_of_single_blocks(
            operations in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..16), 0..40),
            query_start in 0u64..80,
            query_length in 0u64..80,
        ) {
            let mut set = BlockSet::default();
            let mut model = BTreeSet::new();
            for (insert, start, length) in operations {
                if insert {
                    set.insert(start..start + length);
                    model.extend(start..start + length);
                } else {
                    set.remove(start..start + length);
                    for block in start..start + length {
                        model.remove(&block);
                    }
                }
                prop_assert_eq!(set.len(), model.len() as u64);
            }
            let query = query_start..query_start + query_length;
            let found: Vec<u64> = set.overlapping(query.clone()).into_iter().flatten().collect();
            let expected: Vec<u64> = model.range(query.clone()).copied().collect();
            prop_assert_eq!(&found, &expected);
            prop_assert_eq!(set.count_missing(query), query_length - expected.len() as u64);
        }
    }
}
