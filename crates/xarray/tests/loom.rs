//! Exhaustive interleaving checks of the entry-lock protocol under loom.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p xarray --release --target-dir target/loom --test loom`
//!
//! A missed wake-up shows up as loom reporting a deadlock (every thread
//! blocked), so the tests that merely lock and unlock are the lost-wake-up
//! checks; the others pin down who may erase what.
//!
//! Unless `LOOM_MAX_PREEMPTIONS` says otherwise, the search is bounded at
//! three preemptions per execution: the three-thread test does not finish
//! in minutes unbounded, and every protocol bug found while writing these
//! (see the report) showed up within two.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use xarray::{Error, Span, XArray};

/// `loom::model` with the default preemption bound described above.
fn model(test: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(test);
}

/// Locks `index`, checks nobody else is inside, and unlocks.
fn lock_exclusively(xa: &XArray<u32>, inside: &AtomicBool, index: u64) {
    let guard = xa.lock(index).expect("the entry is never erased here");
    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
    inside.store(false, Ordering::SeqCst);
    drop(guard);
}

#[test]
fn contended_lock_wakes_waiter_without_missed_wakeup() {
    model(|| {
        let xa = Arc::new(XArray::new());
        xa.store(5, 0, 1).unwrap();
        let inside = Arc::new(AtomicBool::new(false));
        let other = {
            let (xa, inside) = (xa.clone(), inside.clone());
            thread::spawn(move || lock_exclusively(&xa, &inside, 5))
        };
        lock_exclusively(&xa, &inside, 5);
        other.join().unwrap();
        assert!(xa.try_lock(5).unwrap().is_some(), "left locked");
    });
}

#[test]
fn every_waiter_wakes_when_the_holder_unlocks() {
    // Two waiters on one entry: a wake-up that reaches only one of them
    // (or that the first to wake consumes) leaves the other asleep.
    model(|| {
        let xa = Arc::new(XArray::new());
        xa.store(5, 0, 1).unwrap();
        let inside = Arc::new(AtomicBool::new(false));
        let guard = xa.lock(5).unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (xa, inside) = (xa.clone(), inside.clone());
                thread::spawn(move || lock_exclusively(&xa, &inside, 5))
            })
            .collect();
        drop(guard);
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
}

#[test]
fn waiter_on_inner_index_is_woken_by_holder_of_large_entry() {
    // The holder locks by the entry's first index, the waiter by an index
    // in the middle: both must use the same wait queue.
    model(|| {
        let xa = Arc::new(XArray::new());
        xa.store(512, 9, 1).unwrap();
        let inside = Arc::new(AtomicBool::new(false));
        let other = {
            let (xa, inside) = (xa.clone(), inside.clone());
            thread::spawn(move || lock_exclusively(&xa, &inside, 600))
        };
        lock_exclusively(&xa, &inside, 512);
        other.join().unwrap();
    });
}

#[test]
fn erase_is_refused_exactly_while_the_entry_is_locked() {
    model(|| {
        let xa = Arc::new(XArray::new());
        xa.store(5, 0, 1).unwrap();
        let holding = Arc::new(AtomicBool::new(false));
        let locker = {
            let (xa, holding) = (xa.clone(), holding.clone());
            thread::spawn(move || {
                let guard = xa.lock(5);
                let got = guard.is_some();
                if got {
                    holding.store(true, Ordering::SeqCst);
                    holding.store(false, Ordering::SeqCst);
                }
                drop(guard);
                got
            })
        };
        let erased = xa.erase(5);
        let locked_it = locker.join().unwrap();
        match erased {
            Err(error) => {
                assert_eq!(
                    error,
                    Error::Locked {
                        existing: Span::new(5, 0).unwrap()
                    }
                );
                assert!(locked_it, "refused as locked, but nobody held it");
                assert_eq!(xa.load(5), Some(1));
            }
            Ok(value) => {
                assert_eq!(value, Some(1));
                assert_eq!(xa.load(5), None);
            }
        }
    });
}

#[test]
fn holder_erasing_wakes_waiter_to_find_nothing() {
    model(|| {
        let xa = Arc::new(XArray::new());
        xa.store(8, 3, 1).unwrap();
        let guard = xa.lock(8).unwrap();
        let waiter = {
            let xa = xa.clone();
            thread::spawn(move || xa.lock(13).map(|g| g.span()))
        };
        assert_eq!(guard.erase(), Some(1));
        assert_eq!(waiter.join().unwrap(), None);
    });
}

#[test]
fn reservation_lets_exactly_one_of_two_fillers_fill() {
    model(|| {
        let xa = Arc::new(XArray::new());
        let fills = Arc::new(AtomicUsize::new(0));
        let fill = |xa: &XArray<u32>, fills: &AtomicUsize| {
            let mut guard = xa.lock_or_reserve(3, 0).unwrap();
            if guard.is_reserved() {
                fills.fetch_add(1, Ordering::SeqCst);
                guard.replace(30);
            } else {
                assert_eq!(guard.value(), Some(30));
            }
        };
        let other = {
            let (xa, fills) = (xa.clone(), fills.clone());
            thread::spawn(move || fill(&xa, &fills))
        };
        fill(&xa, &fills);
        other.join().unwrap();
        assert_eq!(fills.load(Ordering::SeqCst), 1);
        assert_eq!(xa.load(3), Some(30));
    });
}
