//! Where a crash-test trial cuts the power, from the run's seed, the
//! trial's index and what the dry run counted.
//!
//! Invariants: the same seed, index and counts always give the same
//! moment (that is what makes `--cut-index` a replay); the first trial
//! cuts after the workload's end; and the others take fsyncs and writes in
//! turns, no moment twice until every one was cut.

use vigilfs::device::SeededRandom;
use vigilfs::fs::faults::{CutPoint, Operation};

use super::Counts;

/// Where a trial cuts the power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Moment {
    /// Just before the workload makes this operation.
    Before(CutPoint),
    /// Once the workload has ended: all it made durable must be there. A
    /// program that commits, says so and exits has its last fsync cut
    /// after only here (review 44: no trial did).
    AfterTheEnd,
}

/// Where trial `index` (from 1) cuts: the first trial after the workload's
/// end, the others [`cut_point`]s; past every moment, the order starts
/// again. A workload of metadata changes alone (no write, no fsync) is cut
/// after its end only.
pub(super) fn moment(seed: u64, index: u32, counts: Counts) -> Moment {
    let moments = counts.fsyncs + counts.directory_fsyncs + counts.writes;
    match u64::from(index.saturating_sub(1)) % (moments + 1) {
        0 => Moment::AfterTheEnd,
        position => cut_point(seed, position, counts).map_or(Moment::AfterTheEnd, Moment::Before),
    }
}

/// The `index`-th (from 1) cut point inside the workload. The moments are
/// of two kinds: the fsyncs of files and directories (boundaries: what was
/// synced before must survive) and the writes between them. Points take
/// the kinds in turns (the run's seed says which goes first) while both
/// last, then the one left; each kind in an order the run's seed shuffles,
/// without repeats. So N trials cut N different moments while there are
/// that many (they repeated: review 26, where one directory fsync among
/// 200 writes took most trials), and half of them boundaries, however few
/// there are.
fn cut_point(seed: u64, index: u64, counts: Counts) -> Option<CutPoint> {
    let syncs = counts.fsyncs + counts.directory_fsyncs;
    let writes = counts.writes;
    let moments = syncs + writes;
    if moments == 0 {
        return None;
    }
    let mut random = SeededRandom::new(seed);
    let syncs_first = random.below(2) == 0;
    let sync_order = SeededOrder::new(&mut random, syncs);
    let write_order = SeededOrder::new(&mut random, writes);
    // Past every moment, the order starts again.
    let position = index.saturating_sub(1) % moments;
    let paired = syncs.min(writes);
    let (at_a_sync, rank) = if position < 2 * paired {
        ((position % 2 == 0) == syncs_first, position / 2)
    } else {
        (syncs > writes, position - paired)
    };
    Some(if at_a_sync {
        let k = sync_order.at(rank) + 1;
        if k <= counts.fsyncs {
            CutPoint {
                operation: Operation::Fsync,
                count: k,
            }
        } else {
            CutPoint {
                operation: Operation::Fsyncdir,
                count: k - counts.fsyncs,
            }
        }
    } else {
        CutPoint {
            operation: Operation::Write,
            count: write_order.at(rank) + 1,
        }
    })
}

/// A seeded shuffle of `0..length` that needs no memory: `rank` goes to
/// `(multiplier × rank + offset) mod length`, a permutation as long as the
/// multiplier shares no factor with the length.
struct SeededOrder {
    length: u64,
    multiplier: u64,
    offset: u64,
}

impl SeededOrder {
    fn new(random: &mut SeededRandom, length: u64) -> SeededOrder {
        if length == 0 {
            return SeededOrder {
                length,
                multiplier: 1,
                offset: 0,
            };
        }
        let multiplier = (0..64)
            .map(|_| random.below(length).max(1))
            .find(|&candidate| greatest_common_divisor(candidate, length) == 1)
            .unwrap_or(1);
        SeededOrder {
            length,
            multiplier,
            offset: random.below(length),
        }
    }

    /// The element at `rank` (below the length).
    fn at(&self, rank: u64) -> u64 {
        let mixed = u128::from(self.multiplier) * u128::from(rank) + u128::from(self.offset);
        (mixed % u128::from(self.length)) as u64
    }
}

fn greatest_common_divisor(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Trial `index`'s own seed (also the seed of its torn writes).
pub(super) fn trial_seed(seed: u64, index: u32) -> u64 {
    let mut random = SeededRandom::new(seed ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    random.next_u64()
}

pub(super) fn describe_moment(moment: Moment) -> String {
    match moment {
        Moment::Before(point) => describe_point(point),
        Moment::AfterTheEnd => "after the workload ended".into(),
    }
}

pub(super) fn describe_point(point: CutPoint) -> String {
    let what = match point.operation {
        Operation::Fsync => "fsync",
        Operation::Fsyncdir => "directory fsync",
        Operation::Write => "write",
        other => other.name(),
    };
    format!("before {what} {}", point.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(fsyncs: u64, directory_fsyncs: u64, writes: u64) -> Counts {
        Counts {
            fsyncs,
            directory_fsyncs,
            writes,
            other_changes: 0,
        }
    }

    #[test]
    fn the_same_seed_and_index_pick_the_same_point() {
        let counts = counts(40, 3, 800);
        for index in 1..50 {
            assert_eq!(cut_point(7, index, counts), cut_point(7, index, counts));
        }
        let points: Vec<_> = (1..50).map(|index| cut_point(7, index, counts)).collect();
        let other: Vec<_> = (1..50).map(|index| cut_point(8, index, counts)).collect();
        assert_ne!(points, other);
    }

    #[test]
    fn points_stay_within_what_the_dry_run_counted_and_cover_both_kinds() {
        let dry_run = counts(5, 2, 30);
        let mut kinds = std::collections::HashSet::new();
        for index in 1..500 {
            let point = cut_point(3, index, dry_run).unwrap();
            let limit = match point.operation {
                Operation::Fsync => 5,
                Operation::Fsyncdir => 2,
                Operation::Write => 30,
                other => panic!("{other:?}"),
            };
            assert!((1..=limit).contains(&point.count), "{point:?}");
            kinds.insert(point.operation);
        }
        assert_eq!(kinds.len(), 3);
        assert_eq!(cut_point(3, 1, counts(0, 0, 0)), None);
        assert_eq!(
            cut_point(3, 1, counts(0, 0, 4)).unwrap().operation,
            Operation::Write
        );
    }

    /// The first trial cuts after the workload's end, the others inside it
    /// in [`cut_point`]'s order; then the order starts again.
    #[test]
    fn the_first_trial_cuts_after_the_end_and_the_others_inside() {
        let dry_run = counts(3, 1, 5);
        for seed in 0..20 {
            assert_eq!(moment(seed, 1, dry_run), Moment::AfterTheEnd);
            for index in 2..=10u32 {
                assert_eq!(
                    Some(moment(seed, index, dry_run)),
                    cut_point(seed, u64::from(index - 1), dry_run).map(Moment::Before),
                    "seed {seed} trial {index}"
                );
            }
            assert_eq!(moment(seed, 11, dry_run), Moment::AfterTheEnd);
        }
        assert_eq!(moment(1, 1, counts(0, 0, 0)), Moment::AfterTheEnd);
        assert_eq!(moment(1, 2, counts(0, 0, 0)), Moment::AfterTheEnd);
    }

    /// The cut points of trials 1..=`trials`.
    fn first_points(seed: u64, trials: u64, dry_run: Counts) -> Vec<CutPoint> {
        (1..=trials)
            .map(|index| cut_point(seed, index, dry_run).unwrap())
            .collect()
    }

    /// How many different moments `points` cut.
    fn distinct(points: &[CutPoint]) -> usize {
        points
            .iter()
            .map(|point| (point.operation, point.count))
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// N trials cut N different moments while there are that many, half
    /// of them boundaries while there are any (one directory fsync among
    /// 200 writes took most trials of a run: review 26).
    #[test]
    fn trials_cut_distinct_moments_and_take_the_kinds_in_turns() {
        for seed in 0..40 {
            let dry_run = counts(0, 1, 200);
            let points = first_points(seed, 201, dry_run);
            assert_eq!(distinct(&points), 201, "seed {seed}");
            let boundaries = points[..2]
                .iter()
                .filter(|point| point.operation == Operation::Fsyncdir)
                .count();
            assert_eq!(boundaries, 1, "seed {seed}: {points:?}");
            // Then the order starts again.
            assert_eq!(cut_point(seed, 202, dry_run), Some(points[0]));
            let many = counts(7, 3, 12);
            let points = first_points(seed, 22, many);
            assert_eq!(distinct(&points), 22, "seed {seed}");
            let writes_in_first_20 = points[..20]
                .iter()
                .filter(|point| point.operation == Operation::Write)
                .count();
            assert_eq!(writes_in_first_20, 10, "seed {seed}");
        }
    }
}
