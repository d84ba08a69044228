//! LTP's fanotify22 cases, at the level of this crate: what a listener reads
//! after a filesystem shuts down, hits one corrupted inode, hits two, or hits
//! an error and then shuts down — plus an error about the whole filesystem.
//!
//! A shutdown puts its SHUTDOWN event at the head of the queue, carrying the
//! shutdown's own `ESHUTDOWN` error and every unread error before it, so the
//! two shutdown cases read exactly one event.

use fserror::{
    Blob, Errno, ErrorReport, ErrorSource, Event, EventKind, Fsid, Group, GroupConfig, ObjectId,
    Subtypes, TryReadError,
};

const FSID: Fsid = Fsid(0x007e_57f5);
const BAD_DIR: (u64, u32) = (12, 7);
const BAD_LINK_PARENT: (u64, u32) = (11, 3);

/// A merge-mode group subscribed to `source`, its RUNNING event already read.
fn listening(source: &ErrorSource) -> Group {
    let group = Group::new(GroupConfig::merge());
    group
        .subscribe(source)
        .expect("fresh source accepts listeners");
    let running = group.try_read().expect("RUNNING is queued on subscribe");
    assert_eq!(running.kind, EventKind::Running);
    group
}

fn corrupted_lookup(inode: (u64, u32)) -> ErrorReport {
    ErrorReport::new(Errno::EFSCORRUPTED, Subtypes::METADATA).on_inode(inode.0, inode.1)
}

fn object(inode: (u64, u32)) -> Option<ObjectId> {
    Some(ObjectId {
        fsid: FSID,
        inode: inode.0,
        generation: inode.1,
    })
}

fn next_error(group: &Group) -> Event {
    let event = group.try_read().expect("an event is queued");
    assert_eq!(event.kind, EventKind::Error);
    assert_eq!(event.fsid, FSID);
    event
}

fn next_shutdown(group: &Group) -> Event {
    let event = group.try_read().expect("an event is queued");
    assert_eq!(event.kind, EventKind::Shutdown);
    assert_eq!(event.fsid, FSID);
    event
}

#[test]
fn shutdown_reads_one_shutdown_event_with_eshutdown_and_no_object() {
    let source = ErrorSource::new(FSID);
    let group = listening(&source);

    source.shutdown();

    let shutdown = next_shutdown(&group);
    assert_eq!(shutdown.errno(), Some(Errno::ESHUTDOWN));
    assert_eq!(shutdown.errno().map(Errno::get), Some(108));
    assert_eq!(shutdown.count, 1);
    assert_eq!(shutdown.lost, 0);
    assert_eq!(shutdown.object(), None);
    assert_eq!(shutdown.subtypes, Subtypes::SHUTDOWN);
    assert_eq!(group.try_read(), Err(TryReadError::Closed));
}

#[test]
fn corrupted_inode_reports_its_errno_and_object() {
    let source = ErrorSource::new(FSID);
    let group = listening(&source);

    source.emit(&corrupted_lookup(BAD_DIR));

    let error = next_error(&group);
    assert_eq!(error.errno().map(Errno::get), Some(117));
    assert_eq!(error.count, 1);
    assert_eq!(error.object(), object(BAD_DIR));
    assert_eq!(error.last, error.first);
    assert_eq!(group.try_read(), Err(TryReadError::Empty));
}

#[test]
fn two_errors_before_reading_merge_and_keep_the_first() {
    let source = ErrorSource::new(FSID);
    let group = listening(&source);

    source.emit(&corrupted_lookup(BAD_LINK_PARENT));
    source.emit(&corrupted_lookup(BAD_DIR));

    let error = next_error(&group);
    assert_eq!(error.count, 2);
    assert_eq!(error.errno(), Some(Errno::EFSCORRUPTED));
    assert_eq!(error.object(), object(BAD_LINK_PARENT));
    assert_eq!(error.last.and_then(|last| last.object), object(BAD_DIR));
    assert_eq!(group.try_read(), Err(TryReadError::Empty));
}

#[test]
fn error_then_shutdown_reads_one_shutdown_event_keeping_the_first_error() {
    let source = ErrorSource::new(FSID);
    let group = listening(&source);

    source.emit(&corrupted_lookup(BAD_DIR));
    source.shutdown();

    let shutdown = next_shutdown(&group);
    assert_eq!(shutdown.count, 2);
    assert_eq!(shutdown.errno(), Some(Errno::EUCLEAN));
    assert_eq!(shutdown.object(), object(BAD_DIR));
    assert_eq!(shutdown.last.map(|last| last.errno), Some(Errno::ESHUTDOWN));
    assert_eq!(shutdown.last.and_then(|last| last.object), None);
    assert_eq!(shutdown.subtypes, Subtypes::METADATA | Subtypes::SHUTDOWN);
    assert_eq!(shutdown.lost, 0);
    assert!(shutdown.first_time <= shutdown.last_time);
    assert_eq!(group.try_read(), Err(TryReadError::Closed));
}

#[test]
fn whole_filesystem_error_has_no_object_but_names_the_filesystem() {
    let source = ErrorSource::new(FSID);
    let group = listening(&source);

    let superblock_detail = Blob::new(b"sb: bad magic");
    source.emit(
        &ErrorReport::new(Errno::EFSCORRUPTED, Subtypes::METADATA | Subtypes::CHECKSUM)
            .range(0, 4096)
            .blob(superblock_detail),
    );

    let error = next_error(&group);
    assert_eq!(error.count, 1);
    assert_eq!(error.errno(), Some(Errno::EFSCORRUPTED));
    assert_eq!(error.object(), None);
    let first = error.first.expect("an error event carries its first error");
    assert_eq!(first.blob.as_bytes(), b"sb: bad magic");
    assert_eq!(first.range.map(|r| (r.offset, r.len)), Some((0, 4096)));
    assert_eq!(error.subtypes, Subtypes::METADATA | Subtypes::CHECKSUM);
}
