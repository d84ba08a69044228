//! Emitting never allocates: a counting global allocator watches the
//! emitting thread while it emits through every path — opening fresh events,
//! merging, overflowing into LOST, waking a blocked reader, distinct mode,
//! and emitting after shutdown — and while it shuts down or unmounts, which
//! puts the pre-allocated terminal event at the head of every queue and
//! absorbs the unread events of that filesystem into it.
//!
//! Counting is per thread, so other tests' threads and the reader thread do
//! not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::num::NonZeroUsize;
use std::thread;
use std::time::Duration;

use fserror::{
    Blob, Errno, ErrorReport, ErrorSource, EventKind, Fsid, Group, GroupConfig, Subtypes,
};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the allocator may run while this thread's locals are
    // being torn down.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments, so
// `System`'s guarantees carry over; counting touches only a thread-local.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations made by this thread while running `work`.
fn allocations_during(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("test sizes are nonzero")
}

fn report(inode: u64) -> ErrorReport {
    ErrorReport::new(Errno::EIO, Subtypes::WRITEBACK)
        .on_inode(inode, 1)
        .range(inode * 4096, 4096)
        .blob(Blob::new(b"extent tree level 1"))
}

#[test]
fn counting_allocator_sees_allocations() {
    let counted = allocations_during(|| {
        std::hint::black_box(vec![1u8; 32]);
    });
    assert_eq!(counted, 1);
}

#[test]
fn emit_in_merge_mode_with_several_groups_does_not_allocate() {
    let source = ErrorSource::new(Fsid(1));
    let groups: Vec<Group> = (0..4).map(|_| Group::new(GroupConfig::merge())).collect();
    for group in &groups {
        group.subscribe(&source).expect("subscribe");
    }

    let opening = allocations_during(|| source.emit(&report(1)));
    let merging = allocations_during(|| {
        for inode in 2..1_000 {
            source.emit(&report(inode));
        }
    });
    for group in &groups {
        group.try_iter().for_each(drop);
    }
    let reopening = allocations_during(|| source.emit(&report(5)));

    assert_eq!((opening, merging, reopening), (0, 0, 0));
    assert_eq!(groups[0].try_read().map(|e| e.count), Ok(1));
}

#[test]
fn emit_overflowing_into_lost_does_not_allocate() {
    let first = ErrorSource::new(Fsid(1));
    let second = ErrorSource::new(Fsid(2));
    let groups: Vec<Group> = (0..3)
        .map(|_| Group::new(GroupConfig::merge().with_capacity(nonzero(1))))
        .collect();
    for group in &groups {
        group.subscribe(&first).expect("subscribe");
        group.subscribe(&second).expect("subscribe");
    }

    let counted = allocations_during(|| {
        first.emit(&report(1));
        for inode in 0..100 {
            second.emit(&report(inode));
        }
    });

    assert_eq!(counted, 0);
    let kinds: Vec<EventKind> = groups[0].try_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.last(), Some(&EventKind::Lost));
}

#[test]
fn emit_in_distinct_mode_does_not_allocate() {
    let source = ErrorSource::new(Fsid(1));
    let groups: Vec<Group> = (0..3)
        .map(|_| Group::new(GroupConfig::distinct(nonzero(8)).with_capacity(nonzero(6))))
        .collect();
    for group in &groups {
        group.subscribe(&source).expect("subscribe");
    }

    let counted = allocations_during(|| {
        for inode in 0..100 {
            source.emit(&report(inode % 12));
        }
    });

    assert_eq!(counted, 0);
    let lost: u64 = groups[0]
        .try_iter()
        .filter(|e| e.kind == EventKind::Lost)
        .map(|e| e.count)
        .sum();
    assert!(lost > 0, "the path under test includes overflow");
}

#[test]
fn emit_that_wakes_a_blocked_reader_does_not_allocate() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    group.try_iter().for_each(drop);

    let (counted, woken) = thread::scope(|scope| {
        let reader = scope.spawn(|| group.read_timeout(Duration::from_secs(10)));
        thread::sleep(Duration::from_millis(50));
        let counted = allocations_during(|| source.emit(&report(1)));
        (counted, reader.join().expect("reader thread"))
    });

    assert_eq!(counted, 0);
    assert_eq!(woken.map(|e| e.kind), Ok(EventKind::Error));
}

#[test]
fn emit_after_shutdown_does_not_allocate() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    source.shutdown();

    let counted = allocations_during(|| source.emit(&report(1)));

    assert_eq!(counted, 0);
    assert_eq!(source.stats().dropped_after_close, 1);
}

#[test]
fn shutdown_and_unmount_absorbing_full_queues_do_not_allocate() {
    let dying = ErrorSource::new(Fsid(1));
    let unmounted = ErrorSource::new(Fsid(2));
    let healthy = ErrorSource::new(Fsid(3));
    let groups = [
        Group::new(GroupConfig::merge()),
        Group::new(GroupConfig::merge().with_capacity(nonzero(1))),
        Group::new(GroupConfig::distinct(nonzero(4)).with_capacity(nonzero(3))),
    ];
    for group in &groups {
        for source in [&dying, &unmounted, &healthy] {
            group.subscribe(source).expect("subscribe");
        }
    }
    // Unread events of an earlier subscription, which are absorbed too.
    dying.emit(&report(100));
    groups[0].unsubscribe(&dying);
    groups[0]
        .subscribe(&dying)
        .expect("subscribe again after unsubscribe");
    // Pending merges, full distinct slots, full bounds, LOST events.
    for inode in 0..50 {
        healthy.emit(&report(inode));
        dying.emit(&report(inode % 6));
        unmounted.emit(&report(inode % 6));
    }

    let counted = allocations_during(|| {
        dying.shutdown();
        unmounted.unmount();
    });

    assert_eq!(counted, 0);
    for group in &groups {
        let events: Vec<_> = group.try_iter().collect();
        let heads: Vec<(EventKind, Fsid)> =
            events.iter().take(2).map(|e| (e.kind, e.fsid)).collect();
        assert_eq!(
            heads,
            [
                (EventKind::Unmount, Fsid(2)),
                (EventKind::Shutdown, Fsid(1))
            ]
        );
        assert!(events[2..].iter().all(|e| e.fsid == Fsid(3)));
    }
}

#[test]
fn shutdown_that_wakes_a_blocked_reader_does_not_allocate() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    group.try_iter().for_each(drop);

    let (counted, woken) = thread::scope(|scope| {
        let reader = scope.spawn(|| group.read_timeout(Duration::from_secs(10)));
        thread::sleep(Duration::from_millis(50));
        let counted = allocations_during(|| source.shutdown());
        (counted, reader.join().expect("reader thread"))
    });

    assert_eq!(counted, 0);
    assert_eq!(
        woken.map(|e| (e.kind, e.count)),
        Ok((EventKind::Shutdown, 1))
    );
}
