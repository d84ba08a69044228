//! Queue semantics seen from a listener: RUNNING first, merging, LOST on
//! overflow, the terminal event at the head of the queue carrying the unread
//! errors of its filesystem, distinct mode, ids, closing, and the
//! subscription life cycle.

use std::num::NonZeroUsize;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fserror::{
    Blob, Errno, ErrorReport, ErrorSource, Event, EventKind, Fsid, Group, GroupConfig,
    ReadTimeoutError, SubscribeError, Subtypes, TryReadError,
};

fn slots(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("test sizes are nonzero")
}

fn io_error_on(inode: u64) -> ErrorReport {
    ErrorReport::new(Errno::EIO, Subtypes::WRITEBACK).on_inode(inode, 1)
}

fn drain(group: &Group) -> Vec<Event> {
    group.try_iter().collect()
}

fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(|event| event.kind).collect()
}

#[test]
fn running_arrives_first_and_earlier_errors_are_not_delivered() {
    let source = ErrorSource::new(Fsid(1));
    source.emit(&io_error_on(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    source.emit(&io_error_on(2));

    let events = drain(&group);
    assert_eq!(kinds(&events), [EventKind::Running, EventKind::Error]);
    assert_eq!(events[0].count, 0);
    assert_eq!(events[0].fsid, Fsid(1));
    assert_eq!(events[1].count, 1);
    assert_eq!(events[1].object().map(|o| o.inode), Some(2));
}

#[test]
fn merged_event_ors_subtypes_and_tracks_the_last_error() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    source.emit(&ErrorReport::new(Errno::EIO, Subtypes::READ).on_inode(5, 1));
    source.emit(&ErrorReport::new(Errno::EBADMSG, Subtypes::CHECKSUM).on_inode(6, 1));
    source.emit(&ErrorReport::new(Errno::ENOSPC, Subtypes::WRITEBACK).on_inode(7, 2));

    let events = drain(&group);
    let error = events[1];
    assert_eq!(error.count, 3);
    assert_eq!(
        error.subtypes,
        Subtypes::READ | Subtypes::CHECKSUM | Subtypes::WRITEBACK
    );
    assert_eq!(error.errno(), Some(Errno::EIO));
    assert_eq!(error.object().map(|o| o.inode), Some(5));
    let last = error.last.expect("error events carry their last error");
    assert_eq!(last.errno, Errno::ENOSPC);
    assert_eq!(last.object.map(|o| (o.inode, o.generation)), Some((7, 2)));
    assert!(error.first_time <= error.last_time);
}

#[test]
fn errors_after_a_read_open_a_fresh_event() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    source.emit(&io_error_on(1));
    source.emit(&io_error_on(2));
    let first_batch = drain(&group);
    source.emit(&ErrorReport::new(Errno::EUCLEAN, Subtypes::METADATA).on_inode(3, 1));

    let second = group.try_read().expect("a fresh event");
    assert_eq!(first_batch[1].count, 2);
    assert_eq!(second.count, 1);
    assert_eq!(second.errno(), Some(Errno::EUCLEAN));
    assert_eq!(second.subtypes, Subtypes::METADATA);
    assert_eq!(second.object().map(|o| o.inode), Some(3));
}

#[test]
fn overflow_of_distinct_slots_yields_one_lost_event_with_the_count() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::distinct(slots(4)).with_capacity(slots(2)));
    group.subscribe(&source).expect("subscribe");
    for inode in 0..10 {
        source.emit(&ErrorReport::new(Errno::EIO, Subtypes::READ).on_inode(inode, 1));
    }

    let events = drain(&group);
    assert_eq!(
        kinds(&events),
        [
            EventKind::Running,
            EventKind::Error,
            EventKind::Error,
            EventKind::Lost
        ]
    );
    assert_eq!(events[3].count, 8);
    assert_eq!(events[3].subtypes, Subtypes::READ);
    assert_eq!(events[3].first, None);
}

#[test]
fn overflow_in_merge_mode_counts_each_lost_error_once() {
    let first = ErrorSource::new(Fsid(1));
    let second = ErrorSource::new(Fsid(2));
    let group = Group::new(GroupConfig::merge().with_capacity(slots(1)));
    group.subscribe(&first).expect("subscribe");
    group.subscribe(&second).expect("subscribe");
    first.emit(&io_error_on(1));
    for _ in 0..3 {
        second.emit(&io_error_on(2));
    }

    let events = drain(&group);
    assert_eq!(
        kinds(&events),
        [
            EventKind::Running,
            EventKind::Running,
            EventKind::Error,
            EventKind::Lost
        ]
    );
    assert_eq!((events[2].fsid, events[2].count), (Fsid(1), 1));
    assert_eq!((events[3].fsid, events[3].count), (Fsid(2), 3));
}

#[test]
fn lost_event_starts_counting_again_after_it_is_read() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::distinct(slots(1)));
    group.subscribe(&source).expect("subscribe");
    source.emit(&io_error_on(1));
    source.emit(&io_error_on(2));
    source.emit(&io_error_on(3));
    let before = drain(&group);
    source.emit(&io_error_on(4));
    source.emit(&io_error_on(5));

    let after = drain(&group);
    assert_eq!(
        before.last().map(|e| (e.kind, e.count)),
        Some((EventKind::Lost, 2))
    );
    assert_eq!(
        after.iter().map(|e| (e.kind, e.count)).collect::<Vec<_>>(),
        [(EventKind::Error, 1), (EventKind::Lost, 1)]
    );
    assert_eq!(after[0].object().map(|o| o.inode), Some(4));
}

#[test]
fn distinct_mode_keeps_distinct_events_and_merges_equal_ones() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::distinct(slots(3)));
    group.subscribe(&source).expect("subscribe");
    let read_on_a = ErrorReport::new(Errno::EIO, Subtypes::READ).on_inode(10, 1);
    let checksum_on_a = ErrorReport::new(Errno::EBADMSG, Subtypes::CHECKSUM).on_inode(10, 1);
    let read_on_b = ErrorReport::new(Errno::EIO, Subtypes::READ).on_inode(20, 1);
    source.emit(&read_on_a);
    source.emit(&checksum_on_a);
    source.emit(&read_on_a);
    source.emit(&read_on_b);
    source.emit(&read_on_a.range(4096, 512));

    let errors: Vec<Event> = drain(&group)
        .into_iter()
        .filter(|event| event.kind == EventKind::Error)
        .collect();
    let summary: Vec<(u64, Subtypes, u64)> = errors
        .iter()
        .map(|e| (e.object().map_or(0, |o| o.inode), e.subtypes, e.count))
        .collect();
    assert_eq!(
        summary,
        [
            (10, Subtypes::READ, 3),
            (10, Subtypes::CHECKSUM, 1),
            (20, Subtypes::READ, 1)
        ]
    );
    let last_of_a = errors[0].last.and_then(|last| last.range);
    assert_eq!(last_of_a.map(|r| r.offset), Some(4096));
}

#[test]
fn event_ids_increase_without_gaps_in_delivery_order() {
    let first = ErrorSource::new(Fsid(1));
    let second = ErrorSource::new(Fsid(2));
    let group = Group::new(GroupConfig::distinct(slots(2)).with_capacity(slots(3)));
    group.subscribe(&first).expect("subscribe");
    group.subscribe(&second).expect("subscribe");
    let mut delivered = Vec::new();
    for round in 0..20u64 {
        first.emit(&io_error_on(round % 3));
        second.emit(&io_error_on(round % 5));
        if round % 2 == 0 {
            delivered.extend(group.try_read().ok());
        }
    }
    // Overtakes whatever of the second filesystem is still queued.
    first.unmount();
    delivered.extend(group.try_read().ok());
    second.emit(&io_error_on(7));
    second.shutdown();
    delivered.extend(drain(&group));

    assert!(delivered.len() > 10, "{} events", delivered.len());
    let ids: Vec<u64> = delivered.iter().map(|event| event.id.0).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
}

#[test]
fn terminal_event_jumps_ahead_of_unread_errors_and_carries_them() {
    let dying = ErrorSource::new(Fsid(1));
    let healthy = ErrorSource::new(Fsid(2));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&dying).expect("subscribe");
    group.subscribe(&healthy).expect("subscribe");
    assert_eq!(kinds(&drain(&group)), [EventKind::Running; 2]);
    healthy.emit(&io_error_on(40));
    dying.emit(
        &ErrorReport::new(Errno::EUCLEAN, Subtypes::METADATA)
            .on_inode(5, 2)
            .range(8192, 512)
            .blob(Blob::new(b"btree 3 level 1")),
    );
    dying.emit(&ErrorReport::new(Errno::EIO, Subtypes::READ).on_inode(6, 1));
    healthy.emit(&io_error_on(41));

    dying.unmount();

    let unmount = group.try_read().expect("the terminal event is read first");
    assert_eq!((unmount.kind, unmount.fsid), (EventKind::Unmount, Fsid(1)));
    assert_eq!(unmount.count, 2);
    assert_eq!(unmount.lost, 0);
    assert_eq!(unmount.subtypes, Subtypes::METADATA | Subtypes::READ);
    let first = unmount.first.expect("the absorbed first error");
    assert_eq!(first.errno, Errno::EUCLEAN);
    assert_eq!(first.object.map(|o| (o.inode, o.generation)), Some((5, 2)));
    assert_eq!(first.range.map(|r| (r.offset, r.len)), Some((8192, 512)));
    assert_eq!(first.blob.as_bytes(), b"btree 3 level 1");
    let last = unmount.last.expect("the absorbed last error");
    assert_eq!(last.errno, Errno::EIO);
    assert_eq!(last.object.map(|o| o.inode), Some(6));
    assert!(unmount.first_time <= unmount.last_time);

    let behind = group.try_read().expect("the other filesystem's error");
    assert_eq!((behind.kind, behind.fsid), (EventKind::Error, Fsid(2)));
    assert_eq!(behind.count, 2);
    dying.emit(&io_error_on(7));
    assert_eq!(group.try_read(), Err(TryReadError::Empty));
    assert!(unmount.id < behind.id);
}

#[test]
fn terminal_event_leaves_other_filesystems_events_in_order_behind_it() {
    let dying = ErrorSource::new(Fsid(1));
    let healthy = ErrorSource::new(Fsid(2));
    let group = Group::new(GroupConfig::distinct(slots(1)).with_capacity(slots(2)));
    group.subscribe(&healthy).expect("subscribe");
    group.subscribe(&dying).expect("subscribe");
    drain(&group);
    healthy.emit(&io_error_on(1));
    dying.emit(&io_error_on(1));
    healthy.emit(&io_error_on(2));
    dying.emit(&io_error_on(2));
    dying.emit(&io_error_on(3));

    dying.shutdown();

    let events = drain(&group);
    let seen: Vec<(EventKind, Fsid, u64, u64)> = events
        .iter()
        .map(|e| (e.kind, e.fsid, e.count, e.lost))
        .collect();
    assert_eq!(
        seen,
        [
            (EventKind::Shutdown, Fsid(1), 2, 2),
            (EventKind::Error, Fsid(2), 1, 0),
            (EventKind::Lost, Fsid(2), 1, 0),
        ]
    );
    let shutdown = events[0];
    assert_eq!(shutdown.object().map(|o| o.inode), Some(1));
    assert_eq!(shutdown.last.map(|l| l.errno), Some(Errno::ESHUTDOWN));
    assert_eq!(shutdown.subtypes, Subtypes::WRITEBACK | Subtypes::SHUTDOWN);
}

#[test]
fn terminal_event_finds_room_in_a_full_queue_and_carries_the_lost_count() {
    let dying = ErrorSource::new(Fsid(1));
    let healthy = ErrorSource::new(Fsid(2));
    let group = Group::new(GroupConfig::merge().with_capacity(slots(1)));
    group.subscribe(&dying).expect("subscribe");
    group.subscribe(&healthy).expect("subscribe");
    drain(&group);
    healthy.emit(&io_error_on(1));
    for inode in 0..3 {
        dying.emit(&ErrorReport::new(Errno::EIO, Subtypes::MEDIA).on_inode(inode, 1));
    }

    dying.unmount();

    let events = drain(&group);
    assert_eq!(kinds(&events), [EventKind::Unmount, EventKind::Error]);
    let unmount = events[0];
    assert_eq!((unmount.count, unmount.lost), (0, 3));
    assert_eq!((unmount.first, unmount.last), (None, None));
    assert_eq!(unmount.subtypes, Subtypes::MEDIA);
    assert!(unmount.kind.is_terminal());
    assert_eq!(events[1].fsid, Fsid(2));
    healthy.unmount();
    assert_eq!(group.try_read().map(|e| e.kind), Ok(EventKind::Unmount));
    assert_eq!(group.try_read(), Err(TryReadError::Closed));
}

#[test]
fn terminal_event_in_distinct_mode_keeps_the_first_error_and_the_latest_of_all_slots() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::distinct(slots(3)));
    group.subscribe(&source).expect("subscribe");
    source.emit(&ErrorReport::new(Errno::EIO, Subtypes::READ).on_inode(1, 1));
    source.emit(&ErrorReport::new(Errno::ENOSPC, Subtypes::WRITEBACK).on_inode(2, 1));
    // Merges into the first slot: the latest error sits in the oldest event.
    source.emit(&ErrorReport::new(Errno::EUCLEAN, Subtypes::READ).on_inode(1, 1));

    source.unmount();

    let events = drain(&group);
    assert_eq!(kinds(&events), [EventKind::Unmount]);
    let unmount = events[0];
    assert_eq!(unmount.count, 3);
    assert_eq!(unmount.subtypes, Subtypes::READ | Subtypes::WRITEBACK);
    assert_eq!(unmount.errno(), Some(Errno::EIO));
    assert_eq!(unmount.last.map(|l| l.errno), Some(Errno::EUCLEAN));
}

#[test]
fn terminal_event_is_first_and_nothing_follows() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    source.emit(&io_error_on(1));
    source.unmount();
    source.emit(&io_error_on(2));
    source.shutdown();

    let events = drain(&group);
    assert_eq!(kinds(&events), [EventKind::Unmount]);
    assert_eq!(events[0].count, 1);
    assert_eq!(
        events[0].last.and_then(|l| l.object).map(|o| o.inode),
        Some(1)
    );
    assert_eq!(group.try_read(), Err(TryReadError::Closed));
    assert_eq!(
        group.read_timeout(Duration::from_millis(1)),
        Err(ReadTimeoutError::Closed)
    );
    assert_eq!(source.stats().dropped_after_close, 1);
    assert_eq!(source.stats().reported, 1);
}

#[test]
fn unread_running_is_dropped_by_the_terminal_event() {
    let source = ErrorSource::new(Fsid(9));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    drop(source);

    let events = drain(&group);
    assert_eq!(kinds(&events), [EventKind::Unmount]);
    assert_eq!(events[0].fsid, Fsid(9));
    assert_eq!((events[0].count, events[0].lost), (0, 0));
    assert_eq!(events[0].first, None);
    assert_eq!(events[0].first_time, events[0].last_time);
    assert_eq!(group.try_read(), Err(TryReadError::Closed));
}

#[test]
fn shutdown_twice_queues_one_terminal_event() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    source.shutdown();
    source.shutdown();

    let events = drain(&group);
    assert_eq!(kinds(&events), [EventKind::Shutdown]);
    assert_eq!(events[0].count, 1);
    assert_eq!(source.stats().dropped_after_close, 0);
    assert_eq!(source.stats().reported, 1);
}

#[test]
fn terminal_event_absorbs_unread_events_of_an_earlier_subscription() {
    let source = ErrorSource::new(Fsid(1));
    let other = ErrorSource::new(Fsid(2));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    source.emit(&io_error_on(1));
    group.unsubscribe(&source);
    group.subscribe(&source).expect("subscribe again");
    source.emit(&io_error_on(2));

    source.shutdown();

    let events = drain(&group);
    assert_eq!(kinds(&events), [EventKind::Shutdown]);
    assert_eq!(events[0].count, 3);
    assert_eq!(events[0].object().map(|o| o.inode), Some(1));
    assert_eq!(group.try_read(), Err(TryReadError::Closed));
    // The subscription emptied by absorption gives its place to a new one.
    group.subscribe(&other).expect("subscribe");
    other.emit(&io_error_on(3));
    let events = drain(&group);
    assert_eq!(kinds(&events), [EventKind::Running, EventKind::Error]);
    assert_eq!(events[1].object().map(|o| o.inode), Some(3));
}

#[test]
fn group_on_two_filesystems_closes_when_both_have_ended() {
    let first = ErrorSource::new(Fsid(1));
    let second = ErrorSource::new(Fsid(2));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&first).expect("subscribe");
    group.subscribe(&second).expect("subscribe");
    first.unmount();
    let after_first = drain(&group);
    assert_eq!(group.try_read(), Err(TryReadError::Empty));
    second.emit(&io_error_on(4));
    second.unmount();

    let after_second = drain(&group);
    assert_eq!(
        after_first
            .iter()
            .map(|e| (e.kind, e.fsid))
            .collect::<Vec<_>>(),
        [(EventKind::Unmount, Fsid(1)), (EventKind::Running, Fsid(2))]
    );
    assert_eq!(
        after_second
            .iter()
            .map(|e| (e.kind, e.fsid, e.count))
            .collect::<Vec<_>>(),
        [(EventKind::Unmount, Fsid(2), 1)]
    );
    assert_eq!(group.try_read(), Err(TryReadError::Closed));
}

#[test]
fn unsubscribe_keeps_queued_events_then_closes() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    source.emit(&io_error_on(1));
    assert!(group.unsubscribe(&source));
    assert!(!group.unsubscribe(&source));
    source.emit(&io_error_on(2));

    let events = drain(&group);
    assert_eq!(kinds(&events), [EventKind::Running, EventKind::Error]);
    assert_eq!(events[1].count, 1);
    assert_eq!(group.try_read(), Err(TryReadError::Closed));
    assert_eq!(source.stats().listeners, 0);
}

#[test]
fn resubscribing_after_unsubscribe_starts_a_new_stream() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    source.emit(&io_error_on(1));
    group.unsubscribe(&source);
    group.subscribe(&source).expect("subscribe again");
    source.emit(&io_error_on(2));

    let events = drain(&group);
    assert_eq!(
        kinds(&events),
        [
            EventKind::Running,
            EventKind::Error,
            EventKind::Running,
            EventKind::Error
        ]
    );
    assert_eq!(events[3].object().map(|o| o.inode), Some(2));
    assert_eq!(events[3].count, 1);
}

#[test]
fn subscribing_twice_or_after_shutdown_is_refused() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    assert_eq!(
        group.subscribe(&source),
        Err(SubscribeError::AlreadySubscribed)
    );
    source.shutdown();
    let late = Group::new(GroupConfig::merge());
    assert_eq!(late.subscribe(&source), Err(SubscribeError::SourceClosed));
}

#[test]
fn dropping_a_group_unsubscribes_it() {
    let source = ErrorSource::new(Fsid(1));
    let kept = Group::new(GroupConfig::merge());
    kept.subscribe(&source).expect("subscribe");
    let dropped = Group::new(GroupConfig::distinct(slots(2)));
    dropped.subscribe(&source).expect("subscribe");
    source.emit(&io_error_on(1));
    assert_eq!(source.stats().listeners, 2);
    drop(dropped);
    source.emit(&io_error_on(2));

    assert_eq!(source.stats().listeners, 1);
    let events = drain(&kept);
    assert_eq!(events[1].count, 2);
}

#[test]
fn fresh_group_without_subscription_is_empty_not_closed() {
    let group = Group::new(GroupConfig::default());
    assert_eq!(group.try_read(), Err(TryReadError::Empty));
    assert_eq!(
        group.read_timeout(Duration::from_millis(5)),
        Err(ReadTimeoutError::Timeout)
    );
}

#[test]
fn blocked_reader_is_woken_by_an_emit_from_another_thread() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    let _running = group.try_read();

    let (event, waited) = thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let started = Instant::now();
            let event = group.read_timeout(Duration::from_secs(20));
            (event, started.elapsed())
        });
        thread::sleep(Duration::from_millis(20));
        source.emit(&io_error_on(3));
        reader.join().expect("reader thread")
    });
    assert_eq!(event.map(|e| e.kind), Ok(EventKind::Error));
    // Woken by the emit, not by its own timeout.
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
}

#[test]
fn waiting_readers_do_not_stall_emitters_and_all_leave_on_close() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    let _running = group.try_read();
    let (done, finished) = mpsc::channel();

    let outcomes = thread::scope(|scope| {
        let readers: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| group.iter().collect::<Vec<Event>>()))
            .collect();
        let emitter = scope.spawn(|| {
            for inode in 0..10_000 {
                source.emit(&io_error_on(inode));
            }
            source.unmount();
            done.send(()).expect("main thread listens");
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("emitting finishes while readers wait");
        emitter.join().expect("emitter thread");
        readers
            .into_iter()
            .map(|reader| reader.join().expect("reader thread"))
            .collect::<Vec<_>>()
    });
    let all: Vec<Event> = outcomes.into_iter().flatten().collect();
    let errors: u64 = all
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Error | EventKind::Unmount))
        .map(|e| e.count + e.lost)
        .sum();
    assert_eq!(errors, 10_000);
    assert_eq!(
        all.iter().filter(|e| e.kind == EventKind::Unmount).count(),
        1
    );
}

#[test]
fn oversize_blob_arrives_truncated_and_marked() {
    let source = ErrorSource::new(Fsid(1));
    let group = Group::new(GroupConfig::merge());
    group.subscribe(&source).expect("subscribe");
    let long = [0xab_u8; 100];
    source.emit(&io_error_on(1).blob(Blob::new(&long)));

    let events = drain(&group);
    let blob = events[1]
        .first
        .map(|first| first.blob)
        .expect("error detail");
    assert_eq!(blob.len(), Blob::CAPACITY);
    assert!(blob.is_truncated());
}

#[test]
fn groups_are_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Group>();
    shareable::<ErrorSource>();
    shareable::<Event>();
}
