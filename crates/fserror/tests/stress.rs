//! Many threads emitting to two filesystems while several readers per group
//! drain them: every error is delivered inside an ERROR count, accounted in
//! a LOST count, or carried by the terminal event (its `count` and `lost`),
//! exactly once per group; each filesystem's stream starts with RUNNING
//! (unless the terminal event overtook an unread RUNNING) and ends with its
//! terminal event; ids only grow.
//!
//! The first filesystem is shut down in the middle of its flood, so its
//! terminal event overtakes and absorbs queued events while emitters and
//! readers race with it; errors it emits afterwards reach nobody and are
//! counted as dropped. The second is shut down after its flood.
//!
//! A further group subscribes and unsubscribes in a loop meanwhile, to
//! exercise the lock order between subscription changes, emitters and
//! readers.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use fserror::{
    Errno, ErrorReport, ErrorSource, Event, EventKind, Fsid, Group, GroupConfig, Subtypes,
};

const EMITTERS_PER_SOURCE: u64 = 2;
const ERRORS_PER_EMITTER: u64 = 20_000;
const READERS_PER_GROUP: usize = 2;

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("test sizes are nonzero")
}

fn report(inode: u64) -> ErrorReport {
    let subtypes = if inode % 2 == 0 {
        Subtypes::WRITEBACK
    } else {
        Subtypes::READ
    };
    ErrorReport::new(Errno::EIO, subtypes).on_inode(inode, 1)
}

/// Checks one group's delivered events against the errors each filesystem
/// reported while the group was subscribed (`reported`, by filesystem).
fn check_group(name: &str, per_reader: &[Vec<Event>], reported: &HashMap<Fsid, u64>) {
    for events in per_reader {
        assert!(
            events.windows(2).all(|pair| pair[0].id < pair[1].id),
            "{name}: a reader saw ids go backwards"
        );
    }
    let mut by_fs: HashMap<Fsid, Vec<Event>> = HashMap::new();
    for event in per_reader.iter().flatten() {
        by_fs.entry(event.fsid).or_default().push(*event);
    }
    assert_eq!(by_fs.len(), 2, "{name}: events from both filesystems");
    for (fsid, mut events) in by_fs {
        events.sort_by_key(|event| event.id);
        assert!(
            events.first().map(|e| e.kind) == Some(EventKind::Running) || events.len() == 1,
            "{name} {fsid:?}: starts with RUNNING or is the terminal event alone"
        );
        assert_eq!(
            events.last().map(|e| e.kind),
            Some(EventKind::Shutdown),
            "{name} {fsid:?}"
        );
        let terminal = events.iter().filter(|e| e.kind.is_terminal()).count();
        assert_eq!(terminal, 1, "{name} {fsid:?}: one terminal event");
        let accounted: u64 = events
            .iter()
            .map(|e| match e.kind {
                EventKind::Error | EventKind::Lost => e.count,
                EventKind::Shutdown | EventKind::Unmount => e.count + e.lost,
                EventKind::Running => 0,
            })
            .sum();
        assert_eq!(
            Some(&accounted),
            reported.get(&fsid),
            "{name} {fsid:?}: errors conserved"
        );
    }
}

#[test]
fn concurrent_emits_and_reads_conserve_every_error() {
    let sources = [ErrorSource::new(Fsid(1)), ErrorSource::new(Fsid(2))];
    let groups = [
        ("merge", Group::new(GroupConfig::merge())),
        (
            "merge, room for one event",
            Group::new(GroupConfig::merge().with_capacity(nonzero(1))),
        ),
        (
            "distinct",
            Group::new(GroupConfig::distinct(nonzero(3)).with_capacity(nonzero(4))),
        ),
    ];
    for (_, group) in &groups {
        for source in &sources {
            group.subscribe(source).expect("subscribe");
        }
    }
    // Churns on the filesystem that lives longest; it must have made at
    // least one round before that filesystem shuts down.
    let churning = Group::new(GroupConfig::distinct(nonzero(2)));
    let churn_rounds = AtomicU64::new(0);

    let delivered = thread::scope(|scope| {
        let readers: Vec<_> = groups
            .iter()
            .map(|(_, group)| {
                (0..READERS_PER_GROUP)
                    .map(|_| scope.spawn(move || group.iter().collect::<Vec<Event>>()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let emitters: Vec<_> = sources
            .iter()
            .flat_map(|source| {
                (0..EMITTERS_PER_SOURCE).map(move |emitter| {
                    scope.spawn(move || {
                        for n in 0..ERRORS_PER_EMITTER {
                            source.emit(&report(emitter * 7 + n % 5));
                        }
                    })
                })
            })
            .collect();
        let churner = scope.spawn(|| {
            while !sources[1].is_terminated() {
                if churning.subscribe(&sources[1]).is_ok() {
                    churning.try_iter().for_each(drop);
                    churning.unsubscribe(&sources[1]);
                }
                churn_rounds.fetch_add(1, Ordering::Relaxed);
            }
        });
        let closer = scope.spawn(|| {
            while sources[0].stats().reported < EMITTERS_PER_SOURCE * ERRORS_PER_EMITTER / 2 {
                thread::yield_now();
            }
            sources[0].shutdown();
        });
        for emitter in emitters {
            emitter.join().expect("emitter thread");
        }
        closer.join().expect("closer thread");
        while churn_rounds.load(Ordering::Relaxed) == 0 {
            thread::yield_now();
        }
        sources[1].shutdown();
        churner.join().expect("churn thread");
        readers
            .into_iter()
            .map(|per_group| {
                per_group
                    .into_iter()
                    .map(|reader| reader.join().expect("reader thread"))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    });

    let emitted_per_fs = EMITTERS_PER_SOURCE * ERRORS_PER_EMITTER;
    // Every error reported before the shutdown (its ESHUTDOWN included) was
    // reported while the checked groups were subscribed.
    let reported: HashMap<Fsid, u64> = sources
        .iter()
        .map(|source| (source.fsid(), source.stats().reported))
        .collect();
    for ((name, _), per_reader) in groups.iter().zip(&delivered) {
        check_group(name, per_reader, &reported);
    }
    let absorbed_by_terminal_events: u64 = delivered
        .iter()
        .flatten()
        .flatten()
        .filter(|e| e.kind.is_terminal())
        .map(|e| e.count + e.lost)
        .sum();
    let lost_in_small_group: u64 = delivered[1]
        .iter()
        .flatten()
        .filter(|e| e.kind == EventKind::Lost)
        .map(|e| e.count)
        .sum();
    // Merging shows as an ERROR event with count > 1, or, when the terminal
    // event absorbed the merged event, as a terminal count above the one
    // event a merge-mode group holds plus the ESHUTDOWN.
    let merged_in_big_group = delivered[0].iter().flatten().any(|e| match e.kind {
        EventKind::Error => e.count > 1,
        EventKind::Shutdown => e.count > 2,
        _ => false,
    });
    assert!(
        merged_in_big_group,
        "the flood path (merging) was exercised"
    );
    // Not asserted: whether the one-slot group actually overflowed depends
    // on scheduling; it is reported so a run that never did is visible.
    eprintln!("one-slot group lost {lost_in_small_group} errors to LOST");
    eprintln!("terminal events carried {absorbed_by_terminal_events} errors");
    for source in &sources {
        let stats = source.stats();
        assert_eq!(
            stats.reported + stats.dropped_after_close,
            emitted_per_fs + 1,
            "{:?}: every emit is reported or dropped after the shutdown",
            source.fsid()
        );
    }
    assert_eq!(sources[1].stats().dropped_after_close, 0);
}
