//! The event log against its promises: merging, exact counts when ids or
//! room run out, ids that resume above the reservation after a crash, and
//! reads of records the ring no longer holds.

use std::sync::Arc;
use std::time::Duration;

use super::ring::counted;
use super::*;
use crate::device::{BlockDevice, MemoryDevice, SectorSize};
use crate::format::event_log::RecordKind;
use crate::format::read_superblock;
use crate::mkfs::{mkfs, MkfsOptions};

fn error(inode: u64, offset: u64) -> ErrorInput<'static> {
    ErrorInput {
        subtypes: 2,
        errno: libc::EIO,
        inode: Some((inode, Some(3))),
        range: Some((offset, 4096)),
        device_range: None,
        node: None,
        origin: "test",
        across_files: false,
    }
}

fn read_all(log: &EventLog, after: u64) -> Vec<EventRecord> {
    match log.read_after(after, 10_000, Duration::ZERO) {
        ReadOutcome::Records(records) => records,
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn equal_errors_merge_until_read_and_then_open_a_new_record() {
    let log = EventLog::in_memory();
    log.record_error(&error(7, 0));
    log.record_error(&error(7, 0));
    log.record_error(&error(8, 0));
    let records = read_all(&log, 0);
    assert_eq!(records.len(), 2);
    assert_eq!((records[0].count, records[0].inode), (2, Some(7)));
    assert_eq!(records[0].generation, Some(3));
    assert_eq!(
        records[1].errors_total, 3,
        "a running sum, fixed at sealing"
    );
    log.record_error(&error(7, 0));
    let later = read_all(&log, records[1].id);
    assert_eq!(
        later.len(),
        1,
        "the read record was sealed: a new one opens"
    );
    assert_eq!(later[0].errors_total, 4);
}

#[test]
fn a_flood_beyond_every_bound_is_counted_exactly() {
    let log = EventLog::in_memory();
    let flood = 10_000u64;
    for offset in 0..flood {
        log.record_error(&error(1, offset * 4096));
    }
    // The end takes in what damping still holds.
    log.record_terminal(RecordKind::Unmount, "unmounted");
    log.persist().unwrap();
    let records = read_all(&log, 0);
    let counted: u64 = records
        .iter()
        .filter(|record| counted(record.kind))
        .map(|record| record.count)
        .sum();
    assert_eq!(counted, flood);
    assert!(records.len() <= OPEN_LIMIT + 2, "{} records", records.len());
    assert_eq!(records.last().unwrap().errors_total, flood);
}

fn image(event_log_bytes: Option<u64>) -> Arc<MemoryDevice> {
    let device = Arc::new(MemoryDevice::new(16 << 20, SectorSize::Bytes512));
    mkfs(
        device.as_ref(),
        &MkfsOptions {
            event_log_bytes,
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    device
}

fn open(device: &Arc<MemoryDevice>) -> (EventLog, Option<(u64, u64)>) {
    let superblock = read_superblock(device.as_ref()).unwrap().superblock;
    let device: Arc<dyn BlockDevice> = device.clone();
    let opened = EventLog::open(device, &superblock, false, None);
    (opened.log, opened.skipped)
}

#[test]
fn ids_resume_after_a_clean_end_and_skip_the_reservation_after_a_crash() {
    let device = image(None);
    let (log, skipped) = open(&device);
    assert_eq!(skipped, None);
    log.record_mount(false, 1, None);
    log.record_error(&error(5, 0));
    log.record_terminal(RecordKind::Unmount, "unmounted");
    log.persist().unwrap();
    assert_eq!(log.newest_id(), 3);

    let (log, skipped) = open(&device);
    assert_eq!(skipped, None, "a clean end: no gap");
    log.record_mount(false, 2, None);
    assert_eq!(log.newest_id(), 4);
    log.record_error(&error(5, 0));
    log.persist().unwrap();
    // A crash: no UNMOUNT record. Ids up to the reservation may have been
    // seen by listeners.
    drop(log);
    let (log, skipped) = open(&device);
    let (first, last) = skipped.expect("ids skipped after a crash");
    assert_eq!(first, 6);
    // The second mount reserved ahead of its MOUNT record (id 3 was the
    // newest when it opened).
    assert_eq!(last, 3 + RESERVATION);
    log.record_mount(true, 3, skipped);
    let mount = read_all(&log, last).remove(0);
    assert_eq!(mount.id, last + 1);
    assert_eq!(mount.gap, Some((first, last)));
    assert!(mount.flag, "recovery runs");
    // History from the region, then the gap, then this mount.
    let history = read_all(&log, 0);
    let ids: Vec<u64> = history.iter().map(|record| record.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert_eq!(
        log.read_after(5, 10, Duration::ZERO),
        ReadOutcome::Gap { first: 6, last }
    );
}

/// A simulated power cut (the crash lab's process lives on) knows where
/// the old log stood: the next mount goes on right after its newest id,
/// skipping none, and the records the cut kept from the region are a loss
/// of exactly the errors they held. No id the old log handed out is given
/// again, even to an error that comes after the cut.
#[test]
fn after_a_simulated_power_cut_ids_go_on_and_the_loss_is_counted() {
    let device = image(None);
    let (log, _) = open(&device);
    log.record_mount(false, 1, None);
    log.record_error(&error(5, 0));
    log.persist().unwrap();
    // Made but never written: the cut takes them.
    log.record_error(&error(6, 0));
    log.record_error(&error(7, 0));
    let end = log.end_ids();
    assert_eq!(
        end,
        EventLogEnd {
            newest_id: 4,
            errors_total: 3
        }
    );
    log.record_error(&error(8, 0));
    assert_eq!(log.newest_id(), 4, "no id after the end");
    drop(log);
    let superblock = read_superblock(device.as_ref()).unwrap().superblock;
    let region: Arc<dyn BlockDevice> = device.clone();
    let opened = EventLog::open(region, &superblock, false, Some(end));
    assert_eq!(opened.skipped, None, "no id skipped");
    let log = opened.log;
    log.record_mount(true, 2, None);
    assert_eq!(
        log.read_after(2, 10, Duration::ZERO),
        ReadOutcome::Gap { first: 3, last: 4 }
    );
    let mount = read_all(&log, 4).remove(0);
    assert_eq!(mount.id, 5);
    // What a reader that saw id 2 (1 error) counts for the gap.
    assert_eq!(mount.errors_total - 1, 2, "the two errors the cut took");
}

#[test]
fn records_the_ring_dropped_are_read_from_the_region_until_overwritten() {
    // 3 blocks of 4 KiB: 16 slots.
    let device = image(Some(3 * 4096));
    let (log, _) = open(&device);
    // A file each: one file's repeats would be damped into few records.
    for inode in 0..40u64 {
        log.record_error(&error(100 + inode, 0));
        log.persist().unwrap();
    }
    let records = read_all(&log, 0);
    assert_eq!(records.len(), 40, "the ring still holds them all");
    // Reopen: only the region is left, holding the newest 16.
    drop(log);
    let (log, _) = open(&device);
    assert_eq!(
        log.read_after(0, 100, Duration::ZERO),
        ReadOutcome::Gap { first: 1, last: 24 }
    );
    let kept = read_all(&log, 24);
    assert_eq!(kept.first().map(|record| record.id), Some(25));
    assert_eq!(kept.last().map(|record| record.id), Some(40));
    assert_eq!(kept.last().unwrap().errors_total, 40);
}

/// A listener that starts at the newest record and is not scheduled
/// before the ring and the region have both moved past it: what it missed
/// is still counted exactly, from the sum taken at its start.
#[test]
fn a_reader_overtaken_before_its_first_read_still_counts_the_loss() {
    // 3 blocks of 4 KiB: 16 slots.
    let device = image(Some(3 * 4096));
    let (log, _) = open(&device);
    for inode in 0..3u64 {
        log.record_error(&error(4 + inode, 0));
    }
    let start = log.newest_id();
    let before = log.errors_through(start);
    assert_eq!(before, Some(3), "the newest record, sealed at the start");
    let flood = 2 * RING as u64;
    for inode in 0..flood {
        log.record_error(&error(100 + inode, 0));
        log.persist().unwrap();
    }
    let ReadOutcome::Gap { first, last } = log.read_after(start, 100, Duration::ZERO) else {
        panic!("the records after the start are gone from ring and region");
    };
    assert_eq!(first, start + 1);
    assert_eq!(log.errors_through(first), None, "nothing holds it now");
    assert!(
        log.errors_through(last + 1).is_some(),
        "the region holds it"
    );
    let rest = read_all(&log, last);
    let next = rest[0];
    let lost = next.errors_total - next.count - before.unwrap();
    let read: u64 = rest.iter().map(|record| record.count).sum();
    assert_eq!(lost + read, flood, "every error of the flood counted once");
}

#[test]
fn a_listener_waiting_is_woken_by_a_new_record() {
    let log = Arc::new(EventLog::in_memory());
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.read_after(0, 10, Duration::from_secs(10)))
    };
    std::thread::sleep(Duration::from_millis(50));
    log.record_error(&error(3, 0));
    match reader.join().unwrap() {
        ReadOutcome::Records(records) => assert_eq!(records[0].inode, Some(3)),
        other => panic!("{other:?}"),
    }
    log.close();
    assert_eq!(log.read_after(1, 10, Duration::ZERO), ReadOutcome::Closed);
}

#[test]
fn after_a_crash_the_history_before_the_gap_is_read_from_the_region() {
    let device = image(Some(4 * 4096));
    let (log, _) = open(&device);
    log.record_mount(false, 1, None);
    for inode in 0..14u64 {
        log.record_error(&error(100 + inode, 0));
    }
    log.persist().unwrap();
    drop(log);
    let (log, skipped) = open(&device);
    let (_, last) = skipped.unwrap();
    log.record_mount(true, 2, skipped);
    let records = read_all(&log, 7);
    assert_eq!(records.first().map(|record| record.id), Some(8));
    assert_eq!(records.last().map(|record| record.id), Some(15));
    assert_eq!(
        log.read_after(15, 10, Duration::ZERO),
        ReadOutcome::Gap { first: 16, last }
    );
}

#[test]
fn a_commit_writes_pending_records_for_its_own_flush_to_cover() {
    let device = image(None);
    let (log, _) = open(&device);
    log.record_error(&error(4, 0));
    let flushes = device.flush_count();
    log.write_for_commit();
    assert_eq!(
        device.flush_count(),
        flushes,
        "the commit's flush is the one"
    );
    let superblock = read_superblock(device.as_ref()).unwrap().superblock;
    let geometry = crate::format::event_log::Geometry {
        region: superblock.event_log.unwrap(),
        block_size: superblock.layout.block_size,
    };
    let mut bytes = vec![0; geometry.bytes() as usize];
    device
        .read_at(
            geometry.start(),
            &mut bytes,
            crate::device::IoClass::EventLog,
        )
        .unwrap();
    let scan = crate::format::event_log::scan_region(&bytes, &geometry, &superblock.uuid);
    assert_eq!(scan.records.len(), 1, "written before the commit's flush");
    assert_eq!(scan.records[0].inode, Some(4));
    // The writer only flushes what a commit wrote (one flush, no write).
    log.persist().unwrap();
    assert_eq!(log.status().written_id, 1);
}

#[test]
fn records_whose_flush_failed_are_written_again_to_the_same_slots() {
    use crate::device::{FaultDevice, FaultPlan, FaultRule, Operations};
    use crate::format::event_log::{scan_region, Geometry};
    let memory = image(None);
    let plan = Arc::new(FaultPlan::new());
    let device: Arc<dyn BlockDevice> =
        Arc::new(FaultDevice::new(Arc::clone(&memory), Arc::clone(&plan)));
    let superblock = read_superblock(memory.as_ref()).unwrap().superblock;
    let log = EventLog::open(Arc::clone(&device), &superblock, false, None).log;
    log.record_mount(false, 1, None);
    log.record_error(&error(7, 0));
    let rule = plan
        .add_rule(FaultRule::fail(crate::device::Errno::EIO).on(Operations::FLUSH))
        .unwrap();
    // The writer retries every few seconds while the device fails.
    for _ in 0..20 {
        assert!(log.persist().is_err());
    }
    plan.remove_rule(rule);
    log.persist().unwrap();
    let geometry = Geometry {
        region: superblock.event_log.unwrap(),
        block_size: superblock.layout.block_size,
    };
    let mut bytes = vec![0; geometry.bytes() as usize];
    memory
        .read_at(
            geometry.start(),
            &mut bytes,
            crate::device::IoClass::EventLog,
        )
        .unwrap();
    let scan = scan_region(&bytes, &geometry, &superblock.uuid);
    let ids: Vec<u64> = scan.records.iter().map(|record| record.id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(scan.repeated, 0, "each record in one slot");
}

fn errors_counted(records: &[EventRecord], inode: u64) -> u64 {
    records
        .iter()
        .filter(|record| record.kind == RecordKind::Error && record.inode == Some(inode))
        .map(|record| record.count)
        .sum()
}

/// One file's error over and over, each taken by the writer at once (a
/// program rewriting a mapping on a full disk did this 2,493 times a
/// second): the repeats are damped into a few records, so the region still
/// holds what came before, and every error is counted once.
#[test]
fn a_flood_of_one_files_errors_leaves_the_older_events_in_the_region() {
    // 3 blocks of 4 KiB: 16 slots.
    let device = image(Some(3 * 4096));
    let (log, _) = open(&device);
    log.record_mount(false, 1, None);
    log.record_error(&error(1, 0));
    log.persist().unwrap();
    let flood = 5_000u64;
    for offset in 0..flood {
        log.record_error(&error(9, offset * 4096));
        log.persist().unwrap();
    }
    log.record_terminal(RecordKind::Unmount, "unmounted");
    log.persist().unwrap();
    drop(log);
    let (log, _) = open(&device);
    let history = read_all(&log, 0);
    assert_eq!(
        history[..2]
            .iter()
            .map(|record| record.kind)
            .collect::<Vec<_>>(),
        [RecordKind::Mount, RecordKind::Error],
        "the events before the flood are still there"
    );
    assert_eq!(errors_counted(&history, 9), flood);
    let flood_records = history.iter().filter(|record| record.inode == Some(9));
    let widest = flood_records.map(|record| record.range).max().flatten();
    assert!(
        widest.is_some_and(|(_, length)| length > 4096),
        "a damped record covers every range it merged: {widest:?}"
    );
    assert_eq!(history.last().unwrap().errors_total, flood + 1);
}

/// A listener following the log hears the first repeats at once; once the
/// file's errors are damped, it hears them merged when the window ends,
/// and any other file's error still at once.
#[test]
fn a_damped_error_reaches_a_listener_when_its_window_ends() {
    let log = EventLog::in_memory();
    let mut newest = 0;
    for offset in 0..2u64 {
        log.record_error(&error(4, offset * 4096));
        let records = read_all(&log, newest);
        assert_eq!(records.len(), 1, "the first repeats are not damped");
        newest = records[0].id;
    }
    log.record_error(&error(4, 2 * 4096));
    log.record_error(&error(4, 3 * 4096));
    assert_eq!(
        log.read_after(newest, 10, Duration::ZERO),
        ReadOutcome::Timeout,
        "damped: held for its window"
    );
    log.record_error(&error(5, 0));
    let other = read_all(&log, newest);
    assert_eq!(
        (other.len(), other[0].inode),
        (1, Some(5)),
        "another file's error is not held"
    );
    newest = other[0].id;
    let ReadOutcome::Records(damped) = log.read_after(newest, 10, Duration::from_secs(30)) else {
        panic!("the damped record comes when its window ends");
    };
    assert_eq!(damped.len(), 1);
    assert_eq!(
        (damped[0].inode, damped[0].count, damped[0].range),
        (Some(4), 2, Some((2 * 4096, 2 * 4096)))
    );
    assert_eq!(damped[0].errors_total, 5);
}

#[test]
fn damped_errors_are_recorded_before_the_terminal_record() {
    let log = EventLog::in_memory();
    let mut newest = 0;
    for offset in 0..6u64 {
        log.record_error(&error(4, offset * 4096));
        if let ReadOutcome::Records(records) = log.read_after(newest, 10, Duration::ZERO) {
            newest = records.last().unwrap().id;
        }
    }
    log.record_terminal(RecordKind::Unmount, "unmounted");
    let records = read_all(&log, 0);
    assert_eq!(errors_counted(&records, 4), 6);
    let terminal = records.last().unwrap();
    assert_eq!(terminal.kind, RecordKind::Unmount);
    assert_eq!(terminal.count, 6);
    assert_eq!(records[records.len() - 2].errors_total, 6);
}

/// A media failure of no file (free space, a b-tree node).
fn failure_at(device_offset: u64, node: Option<u64>) -> ErrorInput<'static> {
    ErrorInput {
        subtypes: 4,
        errno: libc::EIO,
        inode: None,
        range: None,
        device_range: Some((device_offset, 4096)),
        node: node.map(|block| ("extents", Some(0), block)),
        origin: "test",
        across_files: false,
    }
}

/// Failures at different places of the device are different failures:
/// each keeps its own record (and device range, and node), however close
/// together they come; only a repeat at one place merges or is damped.
#[test]
fn failures_at_different_places_of_the_device_keep_their_own_records() {
    let log = EventLog::in_memory();
    let places = [20u64 << 20, 21 << 20, 22 << 20, 23 << 20];
    for place in places {
        log.record_error(&failure_at(place, None));
    }
    for block in [314u64, 315, 316] {
        log.record_error(&failure_at(block * 4096, Some(block)));
    }
    // One place failing again and again: merged, and damped.
    for _ in 0..50 {
        log.record_error(&failure_at(places[0], None));
    }
    log.release_held();
    let records = read_all(&log, 0);
    for place in places {
        assert!(
            records
                .iter()
                .any(|record| record.device_range == Some((place, 4096))),
            "no record of the failure at {place}: {records:#?}"
        );
    }
    for block in [314u64, 315, 316] {
        assert!(
            records
                .iter()
                .any(|record| record.node.is_some_and(|node| node.block == block)),
            "no record of node {block}: {records:#?}"
        );
    }
    assert!(
        records.len() <= 7 + 3,
        "the repeats were merged: {records:#?}"
    );
    assert_eq!(records.last().unwrap().errors_total, 57);
}

/// One file's data lost at many places in a row: every run keeps a record
/// naming exactly its bytes; none is damped into a range that covers bytes
/// (or another file's blocks) nothing hit.
#[test]
fn one_files_losses_at_different_places_are_never_folded_into_one_range() {
    let log = EventLog::in_memory();
    let runs: Vec<u64> = (0..8).map(|run| run * 2).collect();
    for &block in &runs {
        log.record_error(&ErrorInput {
            subtypes: 4 | 8,
            errno: libc::EIO,
            inode: Some((5, Some(1))),
            range: Some((block * 4096, 4096)),
            device_range: Some(((1000 + block) * 4096, 4096)),
            node: None,
            origin: "test",
            across_files: false,
        });
    }
    log.release_held();
    let records = read_all(&log, 0);
    assert_eq!(records.len(), runs.len(), "{records:#?}");
    for (record, &block) in records.iter().zip(&runs) {
        assert_eq!(record.range, Some((block * 4096, 4096)));
        assert_eq!(record.device_range, Some(((1000 + block) * 4096, 4096)));
    }
}
