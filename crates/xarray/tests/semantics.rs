//! The index's single-threaded contract, and the pitfalls from the DAX /
//! XArray thread (seed 004) each pinned by a test.
#![cfg(not(loom))]

use xarray::{Error, Mark, Occupant, Span, XArray, MAX_ORDER};

fn span(index: u64, order: u8) -> Span {
    Span::new(index, order).unwrap()
}

#[test]
fn load_anywhere_inside_a_large_entry_returns_that_entry() {
    let xa = XArray::new();
    xa.store(512, 9, "pmd").unwrap();
    for index in [512, 513, 600, 767, 768, 1023] {
        assert_eq!(
            xa.load_entry(index),
            Some((span(512, 9), "pmd")),
            "index {index}"
        );
    }
    assert_eq!(xa.load(511), None);
    assert_eq!(xa.load(1024), None);
}

#[test]
fn large_store_over_small_entry_reports_conflict_and_keeps_it() {
    // The seed's bug: a PTE entry at 1023, then a PMD fault at 512 looked
    // up 512, found nothing, and stored over 512..=1023, erasing 1023.
    let xa = XArray::new();
    xa.store(1023, 0, "pte").unwrap();
    let refused = xa.store(512, 9, "pmd").unwrap_err();
    assert_eq!(
        refused.error,
        Error::Conflict {
            requested: span(512, 9),
            existing: span(1023, 0)
        }
    );
    assert_eq!(refused.value, "pmd", "the refused value is handed back");
    assert_eq!(xa.load(1023), Some("pte"));
    assert_eq!(xa.load(512), None);
    assert_eq!(xa.len(), 1);
}

#[test]
fn small_store_inside_large_entry_is_a_conflict() {
    let xa = XArray::new();
    xa.store(512, 9, "pmd").unwrap();
    let refused = xa.store(700, 0, "pte").unwrap_err();
    assert_eq!(
        refused.error,
        Error::Conflict {
            requested: span(700, 0),
            existing: span(512, 9)
        }
    );
    assert_eq!(xa.load(700), Some("pmd"));
}

#[test]
fn conflict_names_the_lowest_entry_in_the_way() {
    let xa = XArray::new();
    xa.store(1000, 0, 'b').unwrap();
    xa.store(900, 2, 'a').unwrap();
    let refused = xa.store(512, 9, 'x').unwrap_err();
    assert!(matches!(refused.error, Error::Conflict { existing, .. } if existing == span(900, 2)));
}

#[test]
fn store_with_partly_overlapping_larger_neighbour_is_a_conflict() {
    // An order-6 entry (one whole slot one level up) against order-7 over it.
    let xa = XArray::new();
    xa.store(64, 6, 1).unwrap();
    let refused = xa.store(0, 7, 2).unwrap_err();
    assert!(matches!(refused.error, Error::Conflict { existing, .. } if existing == span(64, 6)));
}

#[test]
fn store_rejects_unaligned_index_for_large_entry() {
    let xa = XArray::new();
    let refused = xa.store(513, 9, ()).unwrap_err();
    assert_eq!(
        refused.error,
        Error::Unaligned {
            index: 513,
            order: 9
        }
    );
    assert!(xa.is_empty());
}

#[test]
fn store_rejects_order_above_max() {
    let xa = XArray::new();
    let refused = xa.store(0, MAX_ORDER + 1, ()).unwrap_err();
    assert_eq!(
        refused.error,
        Error::OrderTooLarge {
            order: MAX_ORDER + 1
        }
    );
}

#[test]
fn store_over_same_span_replaces_value_and_keeps_marks() {
    let xa = XArray::new();
    xa.store(512, 9, 1).unwrap();
    assert!(xa.set_mark(600, Mark::Dirty));
    assert_eq!(xa.store(512, 9, 2).unwrap(), Some(1));
    assert_eq!(xa.load(1000), Some(2));
    assert!(xa.is_marked(512, Mark::Dirty));
    assert_eq!(xa.len(), 1);
}

#[test]
fn erase_inside_large_entry_removes_whole_entry_and_marks() {
    let xa = XArray::new();
    xa.store(512, 9, 'h').unwrap();
    xa.set_mark(512, Mark::Writeback);
    assert_eq!(xa.erase(777), Ok(Some('h')));
    assert_eq!(xa.load(512), None);
    assert_eq!(xa.iter_marked(0, Mark::Writeback).count(), 0);
    assert_eq!(xa.erase(777), Ok(None));
    // The indices are free again, for any order.
    xa.store(1023, 0, 's').unwrap();
}

#[test]
fn find_conflict_returns_entries_never_internal_nodes() {
    let xa = XArray::new();
    // Both live under one internal node below the order-9 span.
    xa.store(520, 0, 1).unwrap();
    xa.store(1020, 2, 2).unwrap();
    xa.store(2048, 0, 3).unwrap();
    let found = xa.find_conflict(512..1024);
    assert_eq!(
        found,
        [
            Occupant {
                span: span(520, 0),
                value: Some(1)
            },
            Occupant {
                span: span(1020, 2),
                value: Some(2)
            },
        ]
    );
    assert!(xa.find_conflict(0..520).is_empty());
    assert!(xa.find_conflict(5..5).is_empty());
}

#[test]
fn find_conflict_reports_a_large_entry_starting_before_the_range() {
    let xa = XArray::new();
    xa.store(0, 12, 'L').unwrap();
    let found = xa.find_conflict(4000..=4100);
    assert_eq!(
        found,
        [Occupant {
            span: span(0, 12),
            value: Some('L')
        }]
    );
}

#[test]
fn find_conflict_reports_reservations_without_value() {
    let xa: XArray<u8> = XArray::new();
    let guard = xa.lock_or_reserve(70, 0).unwrap();
    assert!(guard.is_reserved());
    assert_eq!(
        xa.find_conflict(..),
        [Occupant {
            span: span(70, 0),
            value: None
        }]
    );
    assert_eq!(xa.load(70), None, "a reservation reads as absent");
    assert_eq!(xa.iter().count(), 0, "iteration skips reservations");
}

#[test]
fn marked_iteration_yields_only_marked_entries_in_order() {
    let xa = XArray::new();
    for index in 0..10_000u64 {
        xa.store(index, 0, index).unwrap();
    }
    for index in (0..10_000).step_by(997) {
        assert!(xa.set_mark(index, Mark::Dirty));
    }
    xa.set_mark(5, Mark::User);
    let dirty: Vec<u64> = xa.iter_marked(0, Mark::Dirty).map(|(_, v)| v).collect();
    assert_eq!(dirty, (0..10_000).step_by(997).collect::<Vec<_>>());
    let later: Vec<u64> = xa.iter_marked(998, Mark::Dirty).map(|(_, v)| v).collect();
    assert_eq!(later, (1994..10_000).step_by(997).collect::<Vec<_>>());
    assert!(xa.clear_mark(0, Mark::Dirty));
    assert_eq!(
        xa.iter_marked(0, Mark::Dirty).next().map(|(_, v)| v),
        Some(997)
    );
    assert_eq!(
        xa.iter_marked(0, Mark::User)
            .map(|(_, v)| v)
            .collect::<Vec<_>>(),
        [5]
    );
}

#[test]
fn marking_an_absent_index_changes_nothing() {
    let xa: XArray<()> = XArray::new();
    assert!(!xa.set_mark(3, Mark::Dirty));
    assert!(!xa.clear_mark(3, Mark::Dirty));
    assert!(!xa.is_marked(3, Mark::Dirty));
}

#[test]
fn iteration_from_inside_large_entry_yields_it_first() {
    let xa = XArray::new();
    xa.store(0, 9, 'a').unwrap();
    xa.store(512, 0, 'b').unwrap();
    xa.set_mark(0, Mark::Dirty);
    let from_inside: Vec<_> = xa.iter_from(300).collect();
    assert_eq!(from_inside, [(span(0, 9), 'a'), (span(512, 0), 'b')]);
    let marked: Vec<_> = xa.iter_marked(511, Mark::Dirty).collect();
    assert_eq!(marked, [(span(0, 9), 'a')]);
    assert_eq!(xa.iter_from(513).count(), 0);
}

#[test]
fn iteration_crosses_batches_without_repeats_or_gaps() {
    let xa = XArray::new();
    let indices: Vec<u64> = (0..1000u64).map(|i| i * 7919).collect();
    for &index in &indices {
        xa.store(index, 0, index).unwrap();
    }
    let seen: Vec<u64> = xa.iter().map(|(span, _)| span.index()).collect();
    assert_eq!(seen, indices);
}

#[test]
fn entries_at_the_top_of_the_index_space_are_stored_and_iterated() {
    let xa = XArray::new();
    xa.store(u64::MAX, 0, "last").unwrap();
    xa.store(1 << 63, 62, "big").unwrap();
    assert_eq!(xa.load(u64::MAX), Some("last"));
    assert_eq!(xa.load((1 << 63) + 12345), Some("big"));
    let all: Vec<_> = xa.iter().map(|(_, v)| v).collect();
    assert_eq!(all, ["big", "last"]);
    assert_eq!(
        xa.iter_from(u64::MAX).map(|(_, v)| v).collect::<Vec<_>>(),
        ["last"]
    );
}

#[test]
fn order_63_entry_covers_half_the_index_space() {
    let xa = XArray::new();
    xa.store(1 << 63, MAX_ORDER, 'h').unwrap();
    assert_eq!(xa.load(u64::MAX), Some('h'));
    assert_eq!(xa.load((1 << 63) - 1), None);
    let refused = xa.store(u64::MAX, 0, 'x').unwrap_err();
    assert!(
        matches!(refused.error, Error::Conflict { existing, .. } if existing == span(1 << 63, 63))
    );
    xa.store(0, MAX_ORDER, 'l').unwrap();
    assert_eq!(xa.iter().count(), 2);
}

#[test]
fn len_counts_each_large_entry_once() {
    let xa = XArray::new();
    xa.store(0, 9, ()).unwrap();
    xa.store(4096, 12, ()).unwrap();
    xa.store(1, 0, ()).unwrap_err();
    assert_eq!(xa.len(), 2);
    xa.erase(5000).unwrap();
    assert_eq!(xa.len(), 1);
}

#[test]
fn span_rejects_unaligned_and_reports_bounds() {
    assert_eq!(
        Span::new(6, 2),
        Err(Error::Unaligned { index: 6, order: 2 })
    );
    let s = Span::containing(6, 2).unwrap();
    assert_eq!((s.index(), s.last(), s.size()), (4, 7, 4));
    assert!(s.contains(7) && !s.contains(8));
    assert!(s.overlaps(7, 100) && !s.overlaps(8, 100));
    assert_eq!(Span::new(1 << 63, 63).unwrap().last(), u64::MAX);
}

#[test]
fn marked_iteration_crosses_batches_without_repeats_or_gaps() {
    let xa = XArray::new();
    for index in 0..5000u64 {
        xa.store(index * 3, 0, index).unwrap();
    }
    // Large entries too, so resuming after a batch must skip a whole span.
    for index in 0..200u64 {
        xa.store(1 << 20 | index << 9, 9, index).unwrap();
        xa.set_mark(1 << 20 | index << 9 | 100, Mark::Writeback);
    }
    for index in (0..5000u64).filter(|i| i % 2 == 0) {
        xa.set_mark(index * 3, Mark::Writeback);
    }
    let seen: Vec<u64> = xa
        .iter_marked(0, Mark::Writeback)
        .map(|(span, _)| span.index())
        .collect();
    let expected: Vec<u64> = (0..5000u64)
        .filter(|i| i % 2 == 0)
        .map(|i| i * 3)
        .chain((0..200u64).map(|i| 1 << 20 | i << 9))
        .collect();
    assert_eq!(seen, expected);
}
