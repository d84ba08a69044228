//! Entry locks with real threads: whole-entry locking, refusal of
//! replace/erase by non-holders, waking waiters, and reservations that
//! serialise fills. (The interleavings are checked exhaustively in
//! loom.rs; these check the same contract on the real primitives.)
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use xarray::{Error, Mark, Span, XArray};

fn span(index: u64, order: u8) -> Span {
    Span::new(index, order).unwrap()
}

/// Long enough that a waiter that wrongly got through would have done so.
const SETTLE: Duration = Duration::from_millis(50);

#[test]
fn locking_index_inside_large_entry_locks_the_whole_entry() {
    let xa = XArray::new();
    xa.store(512, 9, 'h').unwrap();
    let guard = xa.lock(600).unwrap();
    assert_eq!(guard.span(), span(512, 9));
    let held = Error::Locked {
        existing: span(512, 9),
    };
    for index in [512, 600, 1023] {
        assert_eq!(
            xa.try_lock(index).map(|g| g.is_some()),
            Err(held),
            "index {index}"
        );
    }
    drop(guard);
    assert!(xa.try_lock(1023).unwrap().is_some());
}

#[test]
fn store_and_erase_of_locked_entry_are_refused_with_locked() {
    let xa = XArray::new();
    xa.store(512, 9, 1).unwrap();
    let guard = xa.lock(513).unwrap();
    let held = Error::Locked {
        existing: span(512, 9),
    };
    let refused = xa.store(512, 9, 2).unwrap_err();
    assert_eq!((refused.error, refused.value), (held, 2));
    assert_eq!(xa.erase(1000), Err(held));
    assert_eq!(xa.load(512), Some(1));
    drop(guard);
    assert_eq!(xa.erase(1000), Ok(Some(1)));
}

#[test]
fn readers_see_a_locked_entry_without_waiting() {
    let xa = XArray::new();
    xa.store(3, 0, 'v').unwrap();
    let _guard = xa.lock(3).unwrap();
    assert_eq!(xa.load(3), Some('v'));
    assert_eq!(xa.iter().count(), 1);
}

#[test]
fn guard_replaces_marks_and_erases_its_locked_entry() {
    let xa = XArray::new();
    xa.store(64, 6, 1).unwrap();
    let mut guard = xa.lock(100).unwrap();
    assert_eq!(guard.value(), Some(1));
    assert_eq!(guard.replace(2), Some(1));
    assert!(guard.set_mark(Mark::Dirty));
    assert!(guard.is_marked(Mark::Dirty));
    assert!(xa.is_marked(64, Mark::Dirty));
    assert!(guard.clear_mark(Mark::Dirty));
    assert_eq!(xa.load(127), Some(2));
    assert_eq!(guard.erase(), Some(2));
    assert_eq!(xa.load(64), None);
    assert!(xa.is_empty());
}

#[test]
fn lock_of_absent_index_returns_none() {
    let xa: XArray<u8> = XArray::new();
    assert!(xa.lock(9).is_none());
    assert!(matches!(xa.try_lock(9), Ok(None)));
}

#[test]
fn waiter_wakes_when_holder_unlocks() {
    let xa = XArray::new();
    xa.store(5, 0, 0u32).unwrap();
    let acquired = AtomicBool::new(false);
    let guard = xa.lock(5).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let _second = xa.lock(5).unwrap();
            acquired.store(true, Ordering::SeqCst);
        });
        thread::sleep(SETTLE);
        assert!(!acquired.load(Ordering::SeqCst), "lock taken while held");
        drop(guard);
    });
    assert!(acquired.load(Ordering::SeqCst));
}

#[test]
fn waiter_on_inner_index_wakes_when_large_entry_unlocks() {
    // The waiter asks for 600, the holder locked 512; both must meet on
    // the entry's own wait queue.
    let xa = XArray::new();
    xa.store(512, 9, ()).unwrap();
    let guard = xa.lock(512).unwrap();
    let acquired = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let second = xa.lock(600).unwrap();
            assert_eq!(second.span(), span(512, 9));
            acquired.store(true, Ordering::SeqCst);
        });
        thread::sleep(SETTLE);
        assert!(!acquired.load(Ordering::SeqCst));
        drop(guard);
    });
    assert!(acquired.load(Ordering::SeqCst));
}

#[test]
fn waiter_wakes_to_none_when_holder_erases() {
    let xa = XArray::new();
    xa.store(8, 3, 'e').unwrap();
    let guard = xa.lock(8).unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| xa.lock(12).map(|g| g.span()));
        thread::sleep(SETTLE);
        assert_eq!(guard.erase(), Some('e'));
        assert_eq!(waiter.join().unwrap(), None);
    });
}

#[test]
fn entry_lock_excludes_concurrent_read_modify_write() {
    const THREADS: usize = 4;
    const ROUNDS: u64 = 500;
    let xa = XArray::new();
    xa.store(0, 4, 0u64).unwrap();
    thread::scope(|s| {
        for t in 0..THREADS {
            let xa = &xa;
            s.spawn(move || {
                for round in 0..ROUNDS {
                    // Different indices inside the one order-4 entry.
                    let mut guard = xa.lock((t as u64 + round) % 16).unwrap();
                    let seen = guard.value().unwrap();
                    thread::yield_now();
                    guard.replace(seen + 1);
                }
            });
        }
    });
    assert_eq!(xa.load(0), Some(THREADS as u64 * ROUNDS));
}

#[test]
fn concurrent_fillers_serialise_on_a_reservation() {
    const THREADS: usize = 4;
    let xa = XArray::new();
    let fills = AtomicUsize::new(0);
    let start = Barrier::new(THREADS);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                start.wait();
                let mut guard = xa.lock_or_reserve(42, 0).unwrap();
                if guard.is_reserved() {
                    fills.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(10));
                    guard.replace("from disk");
                } else {
                    assert_eq!(guard.value(), Some("from disk"));
                }
            });
        }
    });
    assert_eq!(fills.load(Ordering::SeqCst), 1, "the page was read twice");
    assert_eq!(xa.load(42), Some("from disk"));
}

#[test]
fn abandoned_reservation_leaves_nothing_and_wakes_the_next_filler() {
    let xa = XArray::new();
    let guard = xa.lock_or_reserve(7, 0).unwrap();
    thread::scope(|s| {
        let next = s.spawn(|| {
            let mut again = xa.lock_or_reserve(7, 0).unwrap();
            assert!(again.is_reserved(), "the abandoned reservation was kept");
            again.replace(70);
        });
        thread::sleep(SETTLE);
        drop(guard);
        next.join().unwrap();
    });
    assert_eq!(xa.load(7), Some(70));
    assert_eq!(xa.find_conflict(..).len(), 1);
}

#[test]
fn abandoned_reservation_is_removed() {
    let xa: XArray<u8> = XArray::new();
    drop(xa.lock_or_reserve(512, 9).unwrap());
    assert!(xa.find_conflict(..).is_empty());
    xa.store(1023, 0, 1).unwrap();
}

#[test]
fn large_reservation_over_small_entry_is_a_conflict_and_keeps_it() {
    // The seed's grab_mapping_entry bug on the locking path: a PMD-sized
    // "lock or insert empty entry" at 512 must not erase the PTE at 1023.
    let xa = XArray::new();
    xa.store(1023, 0, "pte").unwrap();
    let refused = xa.lock_or_reserve(512, 9).unwrap_err();
    assert_eq!(
        refused,
        Error::Conflict {
            requested: span(512, 9),
            existing: span(1023, 0)
        }
    );
    assert_eq!(xa.load(1023), Some("pte"));
}

#[test]
fn large_reservation_over_smaller_covering_entry_is_a_conflict() {
    let xa = XArray::new();
    xa.store(520, 3, 's').unwrap();
    let refused = xa.lock_or_reserve(521, 9).unwrap_err();
    assert_eq!(
        refused,
        Error::Conflict {
            requested: span(512, 9),
            existing: span(520, 3)
        }
    );
}

#[test]
fn small_lock_or_reserve_inside_large_entry_locks_it() {
    let xa = XArray::new();
    xa.store(512, 9, 'h').unwrap();
    let guard = xa.lock_or_reserve(600, 0).unwrap();
    assert_eq!(guard.span(), span(512, 9));
    assert!(!guard.is_reserved());
}

#[test]
fn reservation_cannot_be_marked_or_stored_over() {
    let xa = XArray::new();
    let mut guard = xa.lock_or_reserve(9, 0).unwrap();
    assert!(!guard.set_mark(Mark::Dirty));
    let refused = xa.store(9, 0, 1).unwrap_err();
    assert_eq!(
        refused.error,
        Error::Locked {
            existing: span(9, 0)
        }
    );
    assert_eq!(
        xa.erase(9),
        Err(Error::Locked {
            existing: span(9, 0)
        })
    );
    assert_eq!(guard.replace(2), None);
    assert!(guard.set_mark(Mark::Dirty));
    drop(guard);
    assert!(xa.is_marked(9, Mark::Dirty));
    assert_eq!(xa.len(), 1);
}
