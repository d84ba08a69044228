//! Free space of the main region, in memory.
//!
//! The reverse map says who owns every used block, so free space is not
//! stored on disk: it is what the rmap does not cover, rebuilt at mount
//! ([`FreeSpace::from_used`]) and then kept up to date by the transactions
//! that allocate and free.
//!
//! Every block of the region is in exactly one of four states:
//!
//! * free: may be handed out;
//! * used: owned by a file or a b-tree node;
//! * pending: freed by a transaction whose journal entry is not durable
//!   yet. If the machine crashed now, replay could end before that
//!   transaction, so the old owner would still own the block on disk:
//!   handing it out before the free is durable could let two owners write
//!   it. [`FreeSpace::release_durable`] moves it to free once it is safe;
//! * bad: known to have failed (media errors, scrub); never handed out,
//!   even after its owner frees it.
//!
//! Allocation is all-or-nothing: when the request cannot be met the state
//! is unchanged and the error says how much space there was.

use std::collections::BTreeMap;

use thiserror::Error;

/// A run of blocks, `start..start + blocks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    /// First block.
    pub start: u64,
    /// Number of blocks (at least 1).
    pub blocks: u64,
}

impl Extent {
    /// The extent `start..start + blocks`.
    pub fn new(start: u64, blocks: u64) -> Extent {
        Extent { start, blocks }
    }

    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.start + self.blocks
    }

    /// The parts of this extent outside `other`: none, one or two.
    pub fn minus(self, other: Extent) -> impl Iterator<Item = Extent> {
        let before = Extent::new(
            self.start,
            other.start.clamp(self.start, self.end()) - self.start,
        );
        let after_start = other.end().clamp(self.start, self.end());
        let after = Extent::new(after_start, self.end() - after_start);
        [before, after].into_iter().filter(|part| part.blocks > 0)
    }
}

/// Why space could not be handed out or taken back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocError {
    /// Not enough free blocks (ENOSPC). Nothing was allocated.
    #[error("no space left: {requested} blocks requested, {free} free ({pending} waiting for a journal flush)")]
    NoSpace {
        /// Blocks asked for.
        requested: u64,
        /// Blocks free now.
        free: u64,
        /// Blocks freed but not yet reusable.
        pending: u64,
    },
    /// Free blocks exist but no single run is long enough.
    #[error("no contiguous run of {requested} blocks (longest free run is {longest})")]
    Fragmented {
        /// Blocks asked for.
        requested: u64,
        /// The longest free run.
        longest: u64,
    },
    /// An extent lies (partly) outside the region.
    #[error("extent {start}+{blocks} is outside the region {region_start}..{region_end}")]
    OutOfRegion {
        /// Extent start.
        start: u64,
        /// Extent length.
        blocks: u64,
        /// Region start.
        region_start: u64,
        /// Region end.
        region_end: u64,
    },
    /// The space would be there once freed blocks were durable, but the
    /// journal flush that makes them so failed: the device's error, not
    /// ENOSPC.
    #[error("{pending} freed blocks could not be made reusable: the journal flush failed: {why}")]
    FlushFailed {
        /// Blocks freed but not yet reusable.
        pending: u64,
        /// The journal's error.
        why: String,
    },
    /// Two owners claim the same block, or a free block is freed again.
    #[error("block {block} is {state} already")]
    Conflict {
        /// The first block in conflict.
        block: u64,
        /// What the block already was.
        state: &'static str,
    },
}

/// Free-space accounting for one region. See the module documentation.
#[derive(Debug, Clone)]
pub struct FreeSpace {
    region_start: u64,
    region_end: u64,
    /// Free runs, coalesced: start → length.
    free: BTreeMap<u64, u64>,
    free_blocks: u64,
    /// Freed at a seq that is not durable yet.
    pending: BTreeMap<u64, Vec<Extent>>,
    /// The same pending runs by start (disjoint, not coalesced: each is
    /// released as it was freed), so a free checks them in O(log n).
    pending_runs: BTreeMap<u64, u64>,
    pending_blocks: u64,
    /// Bad runs (coalesced), whatever their owner state.
    bad: BTreeMap<u64, u64>,
    /// Bad blocks taken out of the free space or dropped at their release:
    /// neither free, pending nor owned, so the four states still add up.
    dropped_bad: u64,
}

impl FreeSpace {
    /// A region `start..start + blocks` with every block free.
    pub fn new(start: u64, blocks: u64) -> FreeSpace {
        let mut space = FreeSpace {
            region_start: start,
            region_end: start + blocks,
            free: BTreeMap::new(),
            free_blocks: 0,
            pending: BTreeMap::new(),
            pending_runs: BTreeMap::new(),
            pending_blocks: 0,
            bad: BTreeMap::new(),
            dropped_bad: 0,
        };
        if blocks > 0 {
            space.insert_free(Extent::new(start, blocks));
        }
        space
    }

    /// The free space left when `used` extents (from the rmap) are owned.
    /// Two extents claiming one block is a [`AllocError::Conflict`].
    pub fn from_used(
        start: u64,
        blocks: u64,
        used: impl IntoIterator<Item = Extent>,
    ) -> Result<FreeSpace, AllocError> {
        let mut space = FreeSpace::new(start, blocks);
        for extent in used {
            space.mark_used(extent)?;
        }
        Ok(space)
    }

    /// Blocks that may be handed out now.
    pub fn free_blocks(&self) -> u64 {
        self.free_blocks
    }

    /// Blocks freed but waiting for their journal entry to be durable.
    pub fn pending_blocks(&self) -> u64 {
        self.pending_blocks
    }

    /// Blocks known bad.
    pub fn bad_blocks(&self) -> u64 {
        self.bad.values().sum()
    }

    /// Bad blocks nobody owns any more (taken out of the free space, or
    /// dropped when their owner freed them): with the free, pending and
    /// owned blocks they make up the region.
    pub fn dropped_bad_blocks(&self) -> u64 {
        self.dropped_bad
    }

    /// The bad runs, coalesced, in block order.
    pub fn bad_runs(&self) -> impl Iterator<Item = Extent> + '_ {
        self.bad
            .iter()
            .map(|(&start, &blocks)| Extent::new(start, blocks))
    }

    /// The bad run holding `block`, if it is bad.
    pub fn bad_run_containing(&self, block: u64) -> Option<Extent> {
        self.bad
            .range(..=block)
            .next_back()
            .map(|(&start, &blocks)| Extent::new(start, blocks))
            .filter(|run| block < run.end())
    }

    /// The free runs, in block order.
    pub fn free_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.free
            .iter()
            .map(|(&start, &blocks)| Extent::new(start, blocks))
    }

    fn check_in_region(&self, extent: Extent) -> Result<(), AllocError> {
        let inside = extent.blocks > 0
            && extent.start >= self.region_start
            && extent
                .start
                .checked_add(extent.blocks)
                .is_some_and(|end| end <= self.region_end);
        if inside {
            Ok(())
        } else {
            Err(AllocError::OutOfRegion {
                start: extent.start,
                blocks: extent.blocks,
                region_start: self.region_start,
                region_end: self.region_end,
            })
        }
    }

    /// Hands out `blocks` blocks as one run, preferring the first run at or
    /// after `hint` (to keep a file's blocks together), else the first that
    /// fits anywhere.
    pub fn allocate_contiguous(&mut self, blocks: u64, hint: u64) -> Result<Extent, AllocError> {
        if blocks == 0 || blocks > self.free_blocks {
            return Err(self.no_space(blocks));
        }
        let fits = |(&start, &length): (&u64, &u64)| (length >= blocks).then_some(start);
        let found = self
            .free
            .range(hint..)
            .find_map(fits)
            .or_else(|| self.free.iter().find_map(fits));
        let Some(start) = found else {
            return Err(AllocError::Fragmented {
                requested: blocks,
                longest: self.free.values().copied().max().unwrap_or(0),
            });
        };
        let extent = Extent::new(start, blocks);
        self.remove_free(extent);
        Ok(extent)
    }

    /// Hands out `blocks` blocks, as few runs as first-fit from `hint`
    /// gives. All or nothing.
    pub fn allocate(&mut self, blocks: u64, hint: u64) -> Result<Vec<Extent>, AllocError> {
        if blocks == 0 || blocks > self.free_blocks {
            return Err(self.no_space(blocks));
        }
        if let Ok(extent) = self.allocate_contiguous(blocks, hint) {
            return Ok(vec![extent]);
        }
        let mut taken = Vec::new();
        let mut remaining = blocks;
        let starts: Vec<(u64, u64)> = self
            .free
            .range(hint..)
            .chain(self.free.range(..hint))
            .map(|(&start, &length)| (start, length))
            .collect();
        for (start, length) in starts {
            let take = length.min(remaining);
            taken.push(Extent::new(start, take));
            remaining -= take;
            if remaining == 0 {
                break;
            }
        }
        for extent in &taken {
            self.remove_free(*extent);
        }
        Ok(taken)
    }

    fn no_space(&self, requested: u64) -> AllocError {
        AllocError::NoSpace {
            requested,
            free: self.free_blocks,
            pending: self.pending_blocks,
        }
    }

    /// Takes a run that must currently be free (replaying an allocation,
    /// or building from the rmap).
    pub fn mark_used(&mut self, extent: Extent) -> Result<(), AllocError> {
        self.check_in_region(extent)?;
        if let Some(block) = self.first_bad_in(extent) {
            return Err(AllocError::Conflict {
                block,
                state: "bad",
            });
        }
        if !self.is_free_run(extent) {
            let block = (extent.start..extent.end())
                .find(|&block| !self.is_free_run(Extent::new(block, 1)))
                .unwrap_or(extent.start);
            return Err(AllocError::Conflict {
                block,
                state: "owned",
            });
        }
        self.remove_free(extent);
        Ok(())
    }

    /// Returns a used run, freed by the transaction at `seq`. It becomes
    /// free once `seq` is durable.
    pub fn free(&mut self, extent: Extent, seq: u64) -> Result<(), AllocError> {
        self.check_in_region(extent)?;
        if let Some(block) = self.first_free_or_pending(extent) {
            return Err(AllocError::Conflict {
                block,
                state: "free",
            });
        }
        self.pending.entry(seq).or_default().push(extent);
        self.pending_runs.insert(extent.start, extent.blocks);
        self.pending_blocks += extent.blocks;
        Ok(())
    }

    /// The journal is durable up to `durable_seq`: blocks freed at or
    /// before it become free (bad ones stay out).
    pub fn release_durable(&mut self, durable_seq: u64) {
        let later = match durable_seq.checked_add(1) {
            Some(next) => self.pending.split_off(&next),
            None => BTreeMap::new(),
        };
        let ready = std::mem::replace(&mut self.pending, later);
        for extent in ready.into_values().flatten() {
            self.pending_runs.remove(&extent.start);
            self.pending_blocks -= extent.blocks;
            let good = self.without_bad(extent);
            let kept: u64 = good.iter().map(|part| part.blocks).sum();
            self.dropped_bad += extent.blocks - kept;
            for part in good {
                self.insert_free(part);
            }
        }
    }

    /// Records a failed run: it is never handed out again. Free blocks in
    /// it leave the free space at once; owned ones stay with their owner
    /// until freed, and are then dropped instead of reused.
    pub fn mark_bad(&mut self, extent: Extent) -> Result<(), AllocError> {
        self.check_in_region(extent)?;
        let free_parts: Vec<Extent> = self
            .free_extents()
            .filter_map(|run| intersection(run, extent))
            .collect();
        for part in free_parts {
            self.remove_free(part);
            self.dropped_bad += part.blocks;
        }
        insert_coalesced(&mut self.bad, extent);
        Ok(())
    }

    /// The first bad block inside `extent`, by range lookups rather than
    /// block by block (mount marks every used extent).
    pub fn first_bad_in(&self, extent: Extent) -> Option<u64> {
        first_overlap(&self.bad, extent)
    }

    fn without_bad(&self, extent: Extent) -> Vec<Extent> {
        let mut parts = Vec::new();
        let mut cursor = extent.start;
        let overlapping = self
            .bad
            .range(..extent.end())
            .map(|(&start, &length)| Extent::new(start, length))
            .filter(|bad| bad.end() > extent.start);
        for bad in overlapping {
            if bad.start > cursor {
                parts.push(Extent::new(cursor, bad.start - cursor));
            }
            cursor = cursor.max(bad.end());
        }
        if cursor < extent.end() {
            parts.push(Extent::new(cursor, extent.end() - cursor));
        }
        parts
    }

    fn is_free_run(&self, extent: Extent) -> bool {
        self.free
            .range(..=extent.start)
            .next_back()
            .is_some_and(|(&start, &length)| extent.end() <= start + length)
    }

    fn first_free_or_pending(&self, extent: Extent) -> Option<u64> {
        let free = first_overlap(&self.free, extent);
        let pending = first_overlap(&self.pending_runs, extent);
        free.into_iter().chain(pending).min()
    }

    fn insert_free(&mut self, extent: Extent) {
        self.free_blocks += extent.blocks;
        insert_coalesced(&mut self.free, extent);
    }

    /// Removes `extent`, which lies inside one free run.
    fn remove_free(&mut self, extent: Extent) {
        let (&start, &length) = self
            .free
            .range(..=extent.start)
            .next_back()
            .expect("removed blocks are free");
        debug_assert!(extent.end() <= start + length);
        self.free.remove(&start);
        if extent.start > start {
            self.free.insert(start, extent.start - start);
        }
        if start + length > extent.end() {
            self.free
                .insert(extent.end(), start + length - extent.end());
        }
        self.free_blocks -= extent.blocks;
    }
}

fn intersection(a: Extent, b: Extent) -> Option<Extent> {
    let start = a.start.max(b.start);
    let end = a.end().min(b.end());
    (start < end).then(|| Extent::new(start, end - start))
}

/// The first block of `extent` inside one of `runs` (disjoint runs, start
/// → length), by two range lookups: only the last run starting at or
/// before the extent can cover its first block; otherwise the first run
/// starting inside it is the first overlap. Every free checks this on a
/// fragmented map (each overwrite frees a block), so no scan.
fn first_overlap(runs: &BTreeMap<u64, u64>, extent: Extent) -> Option<u64> {
    if let Some((&start, &length)) = runs.range(..=extent.start).next_back() {
        if start + length > extent.start {
            return Some(extent.start);
        }
    }
    runs.range(extent.start..extent.end())
        .next()
        .map(|(&start, _)| start)
}

/// Inserts `extent` into a map of disjoint runs, merging with neighbours
/// and anything it overlaps.
fn insert_coalesced(runs: &mut BTreeMap<u64, u64>, extent: Extent) {
    let mut start = extent.start;
    let mut end = extent.end();
    if let Some((&before, &length)) = runs.range(..=start).next_back() {
        if before + length >= start {
            start = before;
            end = end.max(before + length);
            runs.remove(&before);
        }
    }
    let absorbed: Vec<(u64, u64)> = runs
        .range(start..=end)
        .map(|(&run_start, &length)| (run_start, length))
        .collect();
    for (run_start, length) in absorbed {
        end = end.max(run_start + length);
        runs.remove(&run_start);
    }
    runs.insert(start, end - start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_extent_minus_another_keeps_the_parts_outside_it() {
        let run = Extent::new(10, 10);
        let minus = |start, blocks| run.minus(Extent::new(start, blocks)).collect::<Vec<_>>();
        assert_eq!(minus(15, 2), vec![Extent::new(10, 5), Extent::new(17, 3)]);
        assert_eq!(minus(0, 5), vec![run]);
        assert_eq!(minus(25, 5), vec![run]);
        assert_eq!(minus(5, 30), vec![]);
        assert_eq!(minus(10, 10), vec![]);
        assert_eq!(minus(5, 7), vec![Extent::new(12, 8)]);
        assert_eq!(minus(18, 7), vec![Extent::new(10, 8)]);
    }

    #[test]
    fn allocation_is_all_or_nothing_when_space_runs_out() {
        let mut space = FreeSpace::new(10, 8);
        let first = space.allocate(5, 0).unwrap();
        assert_eq!(first, vec![Extent::new(10, 5)]);
        let before = space.free_blocks();
        assert_eq!(
            space.allocate(4, 0),
            Err(AllocError::NoSpace {
                requested: 4,
                free: 3,
                pending: 0
            })
        );
        assert_eq!(space.free_blocks(), before);
    }

    #[test]
    fn freed_blocks_are_reused_only_after_their_seq_is_durable() {
        let mut space = FreeSpace::new(0, 4);
        let all = space.allocate_contiguous(4, 0).unwrap();
        space.free(all, 7).unwrap();
        assert_eq!(space.free_blocks(), 0);
        assert_eq!(space.pending_blocks(), 4);
        assert!(matches!(
            space.allocate(1, 0),
            Err(AllocError::NoSpace { pending: 4, .. })
        ));
        space.release_durable(6);
        assert_eq!(space.free_blocks(), 0);
        space.release_durable(7);
        assert_eq!(space.free_blocks(), 4);
        assert_eq!(space.allocate_contiguous(4, 0), Ok(Extent::new(0, 4)));
    }

    #[test]
    fn bad_blocks_are_never_handed_out_even_after_their_owner_frees_them() {
        let mut space = FreeSpace::new(0, 10);
        let owned = space.allocate_contiguous(4, 0).unwrap();
        space.mark_bad(Extent::new(2, 4)).unwrap();
        assert_eq!(space.free_blocks(), 4);
        space.free(owned, 1).unwrap();
        space.release_durable(1);
        assert_eq!(space.free_blocks(), 6);
        let everything = space.allocate(6, 0).unwrap();
        for extent in everything {
            assert!(
                extent.end() <= 2 || extent.start >= 6,
                "{extent:?} overlaps the bad run"
            );
        }
    }

    #[test]
    fn fragmented_space_serves_split_requests_but_not_contiguous_ones() {
        let mut space =
            FreeSpace::from_used(0, 10, [Extent::new(2, 2), Extent::new(6, 2)]).unwrap();
        assert_eq!(
            space.clone().allocate_contiguous(3, 0),
            Err(AllocError::Fragmented {
                requested: 3,
                longest: 2
            })
        );
        let parts = space.allocate(5, 0).unwrap();
        assert_eq!(parts.iter().map(|extent| extent.blocks).sum::<u64>(), 5);
    }

    #[test]
    fn double_ownership_and_double_free_are_conflicts() {
        assert!(matches!(
            FreeSpace::from_used(0, 10, [Extent::new(0, 4), Extent::new(3, 2)]),
            Err(AllocError::Conflict { block: 3, .. })
        ));
        let mut space = FreeSpace::new(0, 10);
        let owned = space.allocate_contiguous(2, 0).unwrap();
        space.free(owned, 1).unwrap();
        assert!(matches!(
            space.free(owned, 2),
            Err(AllocError::Conflict { .. })
        ));
        assert!(matches!(
            space.free(Extent::new(5, 1), 2),
            Err(AllocError::Conflict { state: "free", .. })
        ));
    }

    #[test]
    fn extents_outside_the_region_are_refused() {
        let mut space = FreeSpace::new(100, 10);
        assert!(matches!(
            space.mark_used(Extent::new(99, 2)),
            Err(AllocError::OutOfRegion { .. })
        ));
        assert!(matches!(
            space.free(Extent::new(109, 2), 1),
            Err(AllocError::OutOfRegion { .. })
        ));
        assert!(matches!(
            space.mark_used(Extent::new(100, 0)),
            Err(AllocError::OutOfRegion { .. })
        ));
    }

    /// What a block is, in the model.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Block {
        Free,
        Used,
        Pending(u64),
    }

    #[derive(Clone, Debug)]
    enum Operation {
        Allocate(u64, u64),
        AllocateContiguous(u64, u64),
        FreeOne(usize),
        MarkBad(u64, u64),
        Durable(u64),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            (1u64..12, 0u64..64).prop_map(|(n, hint)| Operation::Allocate(n, hint)),
            (1u64..12, 0u64..64).prop_map(|(n, hint)| Operation::AllocateContiguous(n, hint)),
            any::<usize>().prop_map(Operation::FreeOne),
            (0u64..64, 1u64..4).prop_map(|(start, n)| Operation::MarkBad(start, n)),
            (0u64..20).prop_map(Operation::Durable),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn free_space_agrees_with_a_block_by_block_model(operations in prop::collection::vec(operation(), 1..60)) {
            const BLOCKS: u64 = 64;
            let mut space = FreeSpace::new(0, BLOCKS);
            let mut model = vec![Block::Free; BLOCKS as usize];
            let mut bad = vec![false; BLOCKS as usize];
            let mut owned: Vec<Extent> = Vec::new();
            let mut seq = 0u64;
            for operation in operations {
                seq += 1;
                match operation {
                    Operation::Allocate(n, hint) | Operation::AllocateContiguous(n, hint) => {
                        let contiguous = matches!(operation, Operation::AllocateContiguous(..));
                        let available = model.iter().zip(&bad).filter(|(b, bad)| **b == Block::Free && !**bad).count() as u64;
                        let result = if contiguous {
                            space.allocate_contiguous(n, hint).map(|extent| vec![extent])
                        } else {
                            space.allocate(n, hint)
                        };
                        match result {
                            Ok(extents) => {
                                prop_assert_eq!(extents.iter().map(|e| e.blocks).sum::<u64>(), n);
                                for extent in extents {
                                    for block in extent.start..extent.end() {
                                        prop_assert_eq!(model[block as usize], Block::Free);
                                        prop_assert!(!bad[block as usize]);
                                        model[block as usize] = Block::Used;
                                    }
                                    owned.push(extent);
                                }
                            }
                            Err(AllocError::NoSpace { .. }) => prop_assert!(available < n),
                            Err(AllocError::Fragmented { .. }) => prop_assert!(contiguous && available >= n),
                            Err(other) => prop_assert!(false, "unexpected {other:?}"),
                        }
                    }
                    Operation::FreeOne(pick) if !owned.is_empty() => {
                        let extent = owned.swap_remove(pick % owned.len());
                        space.free(extent, seq).unwrap();
                        for block in extent.start..extent.end() {
                            model[block as usize] = Block::Pending(seq);
                        }
                    }
                    Operation::MarkBad(start, n) => {
                        let end = (start + n).min(BLOCKS);
                        space.mark_bad(Extent::new(start, end - start)).unwrap();
                        for flag in &mut bad[start as usize..end as usize] {
                            *flag = true;
                        }
                    }
                    Operation::Durable(back) => {
                        let durable = seq.saturating_sub(back);
                        space.release_durable(durable);
                        for block in &mut model {
                            if matches!(*block, Block::Pending(at) if at <= durable) {
                                *block = Block::Free;
                            }
                        }
                    }
                    Operation::FreeOne(_) => {}
                }
                let free = model.iter().zip(&bad).filter(|(b, bad)| **b == Block::Free && !**bad).count() as u64;
                let pending = model.iter().filter(|b| matches!(b, Block::Pending(_))).count() as u64;
                prop_assert_eq!(space.free_blocks(), free);
                prop_assert_eq!(space.pending_blocks(), pending);
                // Bad blocks nobody owns or waits to free are the dropped ones:
                // free + pending + owned + dropped is the whole region.
                let dropped = model.iter().zip(&bad).filter(|(b, bad)| **b == Block::Free && **bad).count() as u64;
                prop_assert_eq!(space.dropped_bad_blocks(), dropped);
                for extent in space.free_extents() {
                    for block in extent.start..extent.end() {
                        prop_assert_eq!(model[block as usize], Block::Free);
                        prop_assert!(!bad[block as usize]);
                    }
                }
            }
        }
    }
}
