//! The journal through its public API: replay, durability, the seed's
//! entry-close/pin race, the error state, freeze, reclaim and recovery
//! policy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use vigilfs::device::{
    BlockDevice, DeviceError, Errno, FaultDevice, FaultPlan, FaultRule, IoClass, MemoryDevice,
    Operations, SectorSize,
};
use vigilfs::journal::{
    record_bytes, DataClaim, Journal, JournalError, JournalOptions, JournalRegion, PinFlush,
    PinFlushError,
};

const UUID: [u8; 16] = *b"journal-test-fs!";
const BLOCK: u32 = 4096;
const REGION_START: u64 = 8 * BLOCK as u64;

fn region(blocks: u64) -> JournalRegion {
    JournalRegion {
        start: REGION_START,
        length: blocks * u64::from(BLOCK),
        block_size: BLOCK,
    }
}

fn options(blocks: u64) -> JournalOptions {
    let mut options = JournalOptions::new(region(blocks), UUID);
    options.entry_bytes = 16 * 1024;
    options
}

fn memory_device() -> Arc<MemoryDevice> {
    Arc::new(MemoryDevice::new(4 << 20, SectorSize::Bytes512))
}

fn open(device: Arc<dyn BlockDevice>, blocks: u64) -> Journal {
    let (journal, _) = Journal::open(device, options(blocks)).expect("journal opens");
    journal
}

fn replayed_records(device: Arc<dyn BlockDevice>, blocks: u64) -> Vec<Vec<u8>> {
    let (_, replay) = Journal::open(device, options(blocks)).expect("journal replays");
    replay
        .entries
        .into_iter()
        .flat_map(|entry| entry.records)
        .collect()
}

/// An object that is "written" by recording that its flush ran.
struct CountingObject {
    flushes: AtomicUsize,
}

impl PinFlush for CountingObject {
    fn flush(&self, _seq: u64) -> Result<(), PinFlushError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn counting_object() -> Arc<CountingObject> {
    Arc::new(CountingObject {
        flushes: AtomicUsize::new(0),
    })
}

struct RefusingObject;

impl PinFlush for RefusingObject {
    fn flush(&self, _seq: u64) -> Result<(), PinFlushError> {
        Err(PinFlushError::Failed("the object cannot be written".into()))
    }
}

#[test]
fn flushed_commits_replay_in_order_after_reopen() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    let first = journal.commit(&[b"one", b"two"]).unwrap();
    let second = journal.commit(&[b"three"]).unwrap();
    assert!(second >= first);
    journal.flush().unwrap();
    drop(journal);
    assert_eq!(
        replayed_records(device, 64),
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

#[test]
fn sequence_numbers_keep_growing_across_mounts() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    let mut newest = 0;
    for _ in 0..3 {
        newest = journal.commit(&[b"x"]).unwrap();
        journal.flush().unwrap();
    }
    drop(journal);
    let journal = open(device, 64);
    let after = journal.commit(&[b"y"]).unwrap();
    assert!(
        after > newest,
        "seq {after} after remount is not above {newest}"
    );
}

#[test]
fn fresh_region_opens_empty_and_foreign_entries_are_ignored() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    journal.commit(&[b"belongs to another filesystem"]).unwrap();
    journal.flush().unwrap();
    drop(journal);
    let mut other = options(64);
    other.uuid = *b"a-different-fs!!";
    let (_, replay) = Journal::open(device, other).unwrap();
    assert!(replay.entries.is_empty());
    assert_eq!(replay.report.invalid_entries, 0);
}

/// Seed 002's race, made deterministic: a flush closes the entry while a
/// reservation on it is still held; meanwhile something else lets the pin
/// FIFO advance; then the holder pins the entry's seq. The pin must land,
/// and the pinned entry must stay needed (replay from it).
#[test]
fn pin_taken_after_concurrent_close_lands_on_a_live_pin_list() {
    let device = memory_device();
    let journal = Arc::new(open(device.clone(), 64));
    let object = Arc::new(CountingObject {
        flushes: AtomicUsize::new(0),
    });

    // An older entry, pinned, so that unpinning it later advances the FIFO.
    let older = journal.commit(&[b"older"]).unwrap();
    let older_pin = journal.pin(older, object.clone()).unwrap();
    journal.flush_seq(older).unwrap();

    let mut reservation = journal.reserve(record_bytes(6)).unwrap();
    reservation.append(b"racing").unwrap();
    let seq = reservation.seq();
    assert!(seq > older);

    let flusher = {
        let journal = Arc::clone(&journal);
        thread::spawn(move || journal.flush_seq(seq))
    };
    // Wait until the flush has closed the entry under our reservation.
    while journal.status().open_seq == Some(seq) {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(
        !flusher.is_finished(),
        "the flush cannot finish while we hold the reservation"
    );

    // Let the FIFO advance as far as it can.
    journal.unpin(older_pin);
    assert!(
        journal.status().last_seq <= seq,
        "last_seq moved past an entry with a live reservation"
    );

    let pin = journal
        .pin(seq, object.clone())
        .expect("pin on the entry of a held reservation");
    drop(reservation);
    flusher.join().unwrap().unwrap();

    assert_eq!(journal.pinned_seq(pin), Some(seq));
    assert_eq!(journal.status().last_seq, seq);
    // The pinned entry is what replay starts from.
    let (_, replay) = Journal::open(device, options(64)).unwrap();
    assert_eq!(replay.report.last_seq, seq);
    assert_eq!(replay.entries[0].records, vec![b"racing".to_vec()]);
}

#[test]
fn write_error_makes_the_waiting_flush_and_every_later_call_fail() {
    let plan = Arc::new(FaultPlan::new());
    let device: Arc<dyn BlockDevice> = Arc::new(FaultDevice::new(
        MemoryDevice::new(4 << 20, SectorSize::Bytes512),
        plan.clone(),
    ));
    let journal = open(device, 64);
    journal.commit(&[b"before"]).unwrap();
    journal.flush().unwrap();

    plan.add_rule(
        FaultRule::fail(Errno::EIO)
            .for_class(IoClass::Journal)
            .on(Operations::WRITE),
    )
    .unwrap();
    let seq = journal.commit(&[b"lost"]).unwrap();
    let error = journal
        .flush_seq(seq)
        .expect_err("flush after a failed write");
    assert_eq!(
        error.device_error().map(|error| error.errno()),
        Some(Errno::EIO)
    );
    plan.clear();
    assert!(matches!(
        journal.commit(&[b"after"]),
        Err(JournalError::Failed(_))
    ));
    assert!(matches!(journal.flush(), Err(JournalError::Failed(_))));
    assert!(matches!(journal.flush_seq(1), Err(JournalError::Failed(_))));
    assert!(journal.status().failed);
}

#[test]
fn flush_error_is_sticky_and_nothing_claims_durability_after_it() {
    let plan = Arc::new(FaultPlan::new());
    let device: Arc<dyn BlockDevice> = Arc::new(FaultDevice::new(
        MemoryDevice::new(4 << 20, SectorSize::Bytes512),
        plan.clone(),
    ));
    let journal = open(device, 64);
    plan.add_rule(
        FaultRule::fail(Errno::EIO)
            .on(Operations::FLUSH)
            .after(0, Some(1)),
    )
    .unwrap();
    let seq = journal.commit(&[b"x"]).unwrap();
    assert!(matches!(
        journal.flush_seq(seq),
        Err(JournalError::Device(_))
    ));
    // The rule has expired: the device would flush fine now, but the
    // journal must not pretend the lost flush happened.
    assert!(matches!(
        journal.flush_seq(seq),
        Err(JournalError::Failed(_))
    ));
    assert_eq!(journal.status().durable_seq, 0);
}

#[test]
fn block_drains_reservations_and_holds_new_ones_until_unblock() {
    let device = memory_device();
    let journal = Arc::new(open(device, 64));
    let held = journal.reserve(record_bytes(4)).unwrap();
    let held_seq = held.seq();

    let blocker = {
        let journal = Arc::clone(&journal);
        thread::spawn(move || journal.block())
    };
    while !journal.status().blocked {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    assert!(
        !blocker.is_finished(),
        "block must wait for the outstanding reservation"
    );
    drop(held);
    blocker.join().unwrap().unwrap();
    let status = journal.status();
    assert!(status.durable_seq >= held_seq);
    assert_eq!(status.open_seq, None);

    let writer = {
        let journal = Arc::clone(&journal);
        thread::spawn(move || journal.commit(&[b"after thaw"]))
    };
    thread::sleep(Duration::from_millis(30));
    assert!(
        !writer.is_finished(),
        "a reservation must wait while the journal is blocked"
    );
    assert_eq!(journal.status().durable_seq, status.durable_seq);
    journal.unblock();
    let seq = writer.join().unwrap().unwrap();
    assert!(seq > held_seq);
}

#[test]
fn reclaim_writes_out_the_oldest_pins_so_the_ring_can_wrap() {
    let device = memory_device();
    let journal = open(device.clone(), 48);
    let object = Arc::new(CountingObject {
        flushes: AtomicUsize::new(0),
    });
    let record = vec![0xA5u8; 6000];
    let mut last = 0;
    for round in 0..200u32 {
        let mut reservation = journal.reserve(record_bytes(record.len())).unwrap();
        reservation.append(&record).unwrap();
        last = reservation.seq();
        journal.pin(last, object.clone()).unwrap();
        drop(reservation);
        if round % 3 == 0 {
            journal.flush().unwrap();
        }
    }
    journal.flush().unwrap();
    assert!(
        object.flushes.load(Ordering::SeqCst) > 100,
        "reclaim did not run"
    );
    let status = journal.status();
    assert!(status.last_seq > 1);
    drop(journal);
    let (_, replay) = Journal::open(device, options(48)).unwrap();
    assert_eq!(replay.report.newest_kept_seq, last);
    assert!(replay
        .entries
        .iter()
        .all(|entry| entry.seq >= replay.report.last_seq));
}

#[test]
fn journal_full_of_unwritable_pins_is_a_clean_error() {
    let device = memory_device();
    // Large enough that the low watermark (a quarter) is reached while an
    // entry still fits: early reclaim fails first, then the journal fills.
    let journal = open(device, 128);
    let record = vec![1u8; 6000];
    let mut outcome = Ok(());
    for _ in 0..200 {
        let mut reservation = match journal.reserve(record_bytes(record.len())) {
            Ok(reservation) => reservation,
            Err(error) => {
                outcome = Err(error);
                break;
            }
        };
        reservation.append(&record).unwrap();
        journal
            .pin(reservation.seq(), Arc::new(RefusingObject))
            .unwrap();
    }
    match outcome {
        Err(JournalError::PinFlushFailed { message, .. }) => {
            assert!(message.contains("cannot be written"));
        }
        other => panic!("expected a pin flush failure, got {other:?}"),
    }
    // Early reclaims failed before the journal ran out of room, and the
    // status kept count instead of failing those reservations.
    let status = journal.status();
    assert!(status.reclaim_failures > 0);
    assert!(status
        .last_reclaim_failure
        .is_some_and(|message| message.contains("cannot be written")));
    assert!(!status.failed, "a full journal is not a failed journal");
}

/// A pinned object whose writes fail, are declined, or succeed, as the
/// test says.
struct SwitchableObject {
    mode: Mutex<Result<(), PinFlushError>>,
}

impl PinFlush for SwitchableObject {
    fn flush(&self, _seq: u64) -> Result<(), PinFlushError> {
        self.mode.lock().unwrap().clone()
    }
}

/// Reserves and pins 6,000-byte records to `object` until a reservation
/// fails (returned) or 200 succeed (`None`).
fn fill_pinned(journal: &Journal, object: &Arc<SwitchableObject>) -> Option<JournalError> {
    let record = vec![1u8; 6000];
    for _ in 0..200 {
        let mut reservation = match journal.reserve(record_bytes(record.len())) {
            Ok(reservation) => reservation,
            Err(error) => return Some(error),
        };
        reservation.append(&record).unwrap();
        journal.pin(reservation.seq(), object.clone()).unwrap();
    }
    None
}

#[test]
fn a_journal_full_of_declined_pins_names_the_failure_that_kept_them_unwritten() {
    let object = Arc::new(SwitchableObject {
        mode: Mutex::new(Err(PinFlushError::Failed("device: no space left".into()))),
    });
    let journal = open(memory_device(), 128);
    assert!(fill_pinned(&journal, &object).is_some());
    assert!(journal.status().reclaim_failing);
    // The thread that finds the journal full now may not write the objects
    // itself; the error it gets names what failed before, not its lock.
    *object.mode.lock().unwrap() = Err(PinFlushError::Declined);
    match fill_pinned(&journal, &object) {
        Some(JournalError::PinFlushDeclined { why, .. }) => {
            assert!(why.contains("device: no space left"), "{why}");
        }
        other => panic!("expected a declined pin flush, got {other:?}"),
    }
    // Once the objects can be written, reclaim frees the journal and the
    // failure no longer stands (the count and the message stay).
    *object.mode.lock().unwrap() = Ok(());
    assert!(fill_pinned(&journal, &object).is_none());
    let status = journal.status();
    assert!(!status.reclaim_failing);
    assert!(status.reclaim_failures > 0);
    assert!(status.last_reclaim_failure.is_some());
}

#[test]
fn a_journal_full_of_declined_pins_alone_says_the_objects_wait_for_another_thread() {
    let object = Arc::new(SwitchableObject {
        mode: Mutex::new(Err(PinFlushError::Declined)),
    });
    let journal = open(memory_device(), 128);
    match fill_pinned(&journal, &object) {
        Some(JournalError::PinFlushDeclined { why, .. }) => {
            assert!(why.contains("holds a lock"), "{why}");
        }
        other => panic!("expected a declined pin flush, got {other:?}"),
    }
    let status = journal.status();
    assert!(!status.reclaim_failing, "a declined write is not a failure");
    assert_eq!(status.reclaim_failures, 0);
}

/// An object written as a b-tree node is: its write journals where it went
/// (a reclaim reservation), which must find room in the ring.
struct RelocatedObject {
    journal: std::sync::Weak<Journal>,
}

impl PinFlush for RelocatedObject {
    fn flush(&self, _seq: u64) -> Result<(), PinFlushError> {
        let Some(journal) = self.journal.upgrade() else {
            return Ok(());
        };
        let record = [7u8; 100];
        let mut reservation = journal
            .reserve_for_reclaim(record_bytes(record.len()))
            .map_err(|error| PinFlushError::Failed(error.to_string()))?;
        reservation.append(&record).unwrap();
        Ok(())
    }
}

#[test]
fn objects_written_in_bulk_leave_the_ring_room_for_reclaim_to_free_it() {
    // Many objects written outside a reclaim pass, each journaling where it
    // went and pinning its parent at that entry, as a checkpoint writes the
    // dirty nodes of a b-tree, until the journal refuses: it must still let
    // a reclaim pass write the oldest object and record that the ring is
    // free again. Were bulk writes allowed the last entry's room, no object
    // could be written any more (nor the filesystem unmounted).
    let device = memory_device();
    let journal = Arc::new(open(device.clone(), 48));
    let object: Arc<dyn PinFlush> = Arc::new(RelocatedObject {
        journal: Arc::downgrade(&journal),
    });
    let record = [9u8; 100];
    let mut refused = None;
    for _ in 0..100 {
        match journal.reserve_in_bulk(record_bytes(record.len())) {
            Ok(mut reservation) => {
                reservation.append(&record).unwrap();
                journal.pin(reservation.seq(), object.clone()).unwrap();
                let seq = reservation.seq();
                drop(reservation);
                journal.flush_seq(seq).unwrap();
            }
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(JournalError::Full { .. })),
        "bulk writes were never refused: {refused:?}"
    );
    journal.reclaim_all().expect("reclaim frees the ring");
    let seq = journal.commit(&[b"after".as_slice()]).unwrap();
    journal.flush_seq(seq).unwrap();
    drop(object);
    drop(journal);
    let records = replayed_records(device, 48);
    assert!(records.iter().any(|record| record == b"after"));
}

#[test]
fn oversized_reservation_is_refused() {
    let journal = open(memory_device(), 64);
    assert!(matches!(
        journal.reserve(1 << 20),
        Err(JournalError::TooLarge { .. })
    ));
    let mut reservation = journal.reserve(record_bytes(4)).unwrap();
    assert!(matches!(
        reservation.append(b"more than four"),
        Err(JournalError::ReservationOverflow { .. })
    ));
}

/// Finds the block of the entry with `seq` by scanning the region (the
/// layout is in the entry module comment: seq at byte 40).
fn entry_block(device: &MemoryDevice, seq: u64) -> u64 {
    let image = device.to_image();
    (0..64u64)
        .find(|block| {
            let at = (REGION_START + block * u64::from(BLOCK)) as usize;
            image[at..at + 8] == *b"VGFSJENT"
                && u64::from_le_bytes(image[at + 40..at + 48].try_into().unwrap()) == seq
        })
        .expect("entry present")
}

fn corrupt_entry(device: &MemoryDevice, seq: u64) {
    let block = entry_block(device, seq);
    let offset = REGION_START + block * u64::from(BLOCK);
    let mut bytes = vec![0u8; BLOCK as usize];
    device
        .read_at(offset, &mut bytes, IoClass::Journal)
        .unwrap();
    bytes[132] ^= 0xFF; // inside the first record
    device.write_at(offset, &bytes, IoClass::Journal).unwrap();
}

/// Commits and flushes four entries (records `aaaa` to `dddd`) with the
/// first kept pinned, so replay needs every one; returns their seqs.
fn four_flushed_entries_replay_needs(device: &Arc<MemoryDevice>) -> Vec<u64> {
    let journal = open(device.clone(), 64);
    let mut seqs = Vec::new();
    for word in [b"aaaa", b"bbbb", b"cccc", b"dddd"] {
        seqs.push(journal.commit(&[word]).unwrap());
        if seqs.len() == 1 {
            journal.pin(seqs[0], counting_object()).unwrap();
        }
        journal.flush().unwrap();
    }
    seqs
}

#[test]
fn bad_checksum_in_the_durable_middle_is_a_clear_error() {
    let device = memory_device();
    let seqs = four_flushed_entries_replay_needs(&device);
    corrupt_entry(&device, seqs[1]);
    match Journal::open(device, options(64)) {
        Err(JournalError::Corrupt(message)) => {
            assert!(message.contains(&format!("entry {}", seqs[1])), "{message}");
        }
        other => panic!(
            "expected a corruption error, got {:?}",
            other.map(|(_, replay)| replay.report)
        ),
    }
}

#[test]
fn salvage_replays_the_whole_chain_before_a_flushed_entry_that_is_gone() {
    let device = memory_device();
    let seqs = four_flushed_entries_replay_needs(&device);
    corrupt_entry(&device, seqs[2]);
    let salvaging = JournalOptions {
        salvage: true,
        ..options(64)
    };
    let replay = Journal::inspect(device.as_ref(), &salvaging).expect("salvage replays");
    assert_eq!(replay.report.acknowledged_lost, Some((seqs[2], seqs[3])));
    assert_eq!(replay.report.newest_kept_seq, seqs[1]);
    let records: Vec<Vec<u8>> = replay
        .entries
        .into_iter()
        .flat_map(|entry| entry.records)
        .collect();
    assert_eq!(records, [b"aaaa".to_vec(), b"bbbb".to_vec()]);
    // Without salvage it is still refused, with the way out named.
    match Journal::inspect(device.as_ref(), &options(64)) {
        Err(JournalError::Corrupt(message)) => {
            assert!(message.contains("mounted read-only, `-o ro`"), "{message}");
        }
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|replay| replay.report)
        ),
    }
}

#[test]
fn torn_entry_after_the_last_flush_cuts_off_the_tail() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    let durable = journal.commit(&[b"durable"]).unwrap();
    journal.pin(durable, counting_object()).unwrap();
    journal.flush().unwrap();
    // Records too big to share an entry: each commit closes (and writes,
    // without a flush) the entry before it.
    let big = vec![7u8; 10_000];
    let torn = journal.commit(&[&big]).unwrap();
    let after = journal.commit(&[&big]).unwrap();
    journal.commit(&[&big]).unwrap();
    assert!(durable < torn && torn < after);
    assert_eq!(journal.status().written_seq, after);
    drop(journal);

    corrupt_entry(&device, torn);
    let (_, replay) = Journal::open(device.clone(), options(64)).unwrap();
    assert_eq!(replay.report.newest_kept_seq, durable);
    assert_eq!(replay.report.cut_off, vec![after]);
    // The entry that fails its checksum is named, not only counted: fsck
    // and the mount say what was cut off (review 58: a damaged tail entry
    // vanished with fsck "clean" and nothing in the mount's log).
    assert_eq!(replay.report.unverified_after_flush, vec![torn]);
    // The cut-off entry is destroyed, so no later recovery can take it for
    // part of a chain.
    let image = device.to_image();
    let still_there = (0..64u64).any(|block| {
        let at = (REGION_START + block * u64::from(BLOCK)) as usize;
        image[at..at + 8] == *b"VGFSJENT"
            && u64::from_le_bytes(image[at + 40..at + 48].try_into().unwrap()) == after
    });
    assert!(!still_there, "cut-off entry {after} survived the mount");
    assert_eq!(replay.report.invalid_entries, 1);
    assert_eq!(replay.entries.len(), 1);
    assert!(replay.report.next_seq > after);
}

/// The newest entries, durable when the filesystem was unmounted cleanly,
/// damaged since: recovery goes on from the entries before them, says
/// which were lost, and never gives their seqs again. Without the clean
/// unmount's seq the same damage would pass for the end of the log.
#[test]
fn entries_damaged_since_a_clean_unmount_are_reported_lost_not_taken_for_the_end() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    let mut seqs = Vec::new();
    for word in [b"aaaa", b"bbbb", b"cccc"] {
        seqs.push(journal.commit(&[word]).unwrap());
        if seqs.len() == 1 {
            journal.pin(seqs[0], counting_object()).unwrap();
        }
        journal.flush().unwrap();
    }
    let newest = journal.status().newest_entry_seq;
    assert_eq!(newest, seqs[2]);
    drop(journal);
    corrupt_entry(&device, newest);
    let (_, unaware) = Journal::open(device.clone(), options(64)).unwrap();
    assert_eq!(unaware.report.lost_since_clean, None);
    let mut clean = options(64);
    clean.clean_unmount_seq = newest;
    let (journal, replay) = Journal::open(device, clean).unwrap();
    assert_eq!(replay.report.newest_kept_seq, seqs[1]);
    assert_eq!(replay.report.lost_since_clean, Some((newest, newest)));
    assert!(replay.report.next_seq > newest);
    assert!(
        journal.commit(&[b"next"]).unwrap() > newest,
        "a lost seq is not given again"
    );
}

/// After a failed mount attempt nothing was changed: fixing nothing and
/// retrying gives the same answer (recovery is read-only until it succeeds).
#[test]
fn failed_recovery_does_not_modify_the_journal() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(journal.commit(&[b"x"]).unwrap());
        if seqs.len() == 1 {
            journal.pin(seqs[0], counting_object()).unwrap();
        }
        journal.flush().unwrap();
    }
    drop(journal);
    corrupt_entry(&device, seqs[1]);
    let before = device.to_image();
    assert!(Journal::open(device.clone(), options(64)).is_err());
    assert_eq!(device.to_image(), before);
}

#[test]
fn concurrent_committers_all_replay_after_flush() {
    let device = memory_device();
    let journal = Arc::new(open(device.clone(), 256));
    let committed = Arc::new(Mutex::new(Vec::new()));
    let object = counting_object();
    let workers: Vec<_> = (0..2u8)
        .map(|worker| {
            let journal = Arc::clone(&journal);
            let committed = Arc::clone(&committed);
            let object = Arc::clone(&object);
            thread::spawn(move || {
                for index in 0..300u16 {
                    let record = [worker, (index >> 8) as u8, index as u8];
                    let mut reservation = journal.reserve(record_bytes(record.len())).unwrap();
                    reservation.append(&record).unwrap();
                    let seq = reservation.seq();
                    // Pinned: every entry stays needed, so all replay.
                    journal.pin(seq, object.clone()).unwrap();
                    drop(reservation);
                    if index % 10 == 0 {
                        journal.flush_seq(seq).unwrap();
                    }
                    committed.lock().unwrap().push(record.to_vec());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    journal.flush().unwrap();
    drop(journal);
    let mut replayed = replayed_records(device, 256);
    let mut expected = committed.lock().unwrap().clone();
    replayed.sort();
    expected.sort();
    assert_eq!(replayed, expected);
}

#[test]
fn journal_of_a_fresh_filesystem_opens_empty_and_keeps_what_it_is_given() {
    use vigilfs::mkfs::{mkfs, MkfsOptions};
    let device = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
    let superblock = mkfs(device.as_ref(), &MkfsOptions::default()).unwrap();
    let options = JournalOptions::for_filesystem(&superblock);
    let (journal, replay) = Journal::open(device.clone(), options.clone()).unwrap();
    assert!(replay.entries.is_empty());
    assert_eq!(replay.report.next_seq, 1);
    let pin = journal
        .pin(journal.commit(&[b"first key"]).unwrap(), counting_object())
        .unwrap();
    journal.flush().unwrap();
    assert!(journal.pinned_seq(pin).is_some());
    drop(journal);
    let (_, replay) = Journal::open(device, options).unwrap();
    assert_eq!(replay.entries[0].records, vec![b"first key".to_vec()]);
}

#[test]
fn too_many_tracked_seqs_trigger_reclaim_even_with_space_left() {
    let device = memory_device();
    let mut options = options(512);
    options.max_tracked_seqs = 8;
    let (journal, _) = Journal::open(device, options).unwrap();
    let object = counting_object();
    for _ in 0..40 {
        let mut reservation = journal.reserve(record_bytes(8)).unwrap();
        reservation.append(b"pinned!!").unwrap();
        journal.pin(reservation.seq(), object.clone()).unwrap();
        drop(reservation);
        journal.flush().unwrap();
    }
    let status = journal.status();
    assert!(object.flushes.load(Ordering::SeqCst) > 0, "no reclaim ran");
    assert!(
        status.next_seq - status.last_seq <= 16,
        "the journal tracks {} seqs",
        status.next_seq - status.last_seq
    );
    assert!(
        status.free_blocks * 4 > status.total_blocks * 3,
        "space was not the reason"
    );
}

#[test]
fn holder_flushing_an_older_seq_does_not_deadlock_against_a_waiting_flush() {
    let device = memory_device();
    let journal = Arc::new(open(device, 64));
    // An entry written but not flushed, then a reservation on the next one.
    let older = journal.commit(&[&vec![3u8; 16_370]]).unwrap();
    let held = journal.reserve(record_bytes(8)).unwrap();
    let newer = held.seq();
    assert!(newer > older);
    let waiting = {
        let journal = Arc::clone(&journal);
        thread::spawn(move || journal.flush_seq(newer))
    };
    while journal.status().open_seq == Some(newer) {
        thread::sleep(Duration::from_millis(1));
    }
    // The holder flushes the older entry while still holding its
    // reservation: it must not wait behind the flush that waits for it.
    let (done, outcome) = std::sync::mpsc::channel();
    {
        let journal = Arc::clone(&journal);
        thread::spawn(move || done.send(journal.flush_seq(older)).unwrap());
    }
    let flushed = outcome.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(flushed, Ok(Ok(()))),
        "flush of the older seq hung: {flushed:?}"
    );
    drop(held);
    waiting.join().unwrap().unwrap();
}

#[test]
fn unaligned_reservations_still_replay_every_record() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    let mut odd = journal.reserve(13).unwrap();
    odd.append(b"five!").unwrap();
    drop(odd);
    journal.commit(&[b"after the odd one"]).unwrap();
    journal.flush().unwrap();
    let object = counting_object();
    // Keep both needed so that replay returns them.
    let seq = journal.commit(&[b"pinned"]).unwrap();
    journal.pin(seq, object).unwrap();
    journal.flush().unwrap();
    drop(journal);
    let records = replayed_records(device, 64);
    assert!(records.contains(&b"pinned".to_vec()), "{records:?}");
}

/// Entries written out of order must still record last_seq values that
/// never decrease with seq (the ring frees space on that claim).
#[test]
fn entry_written_after_a_newer_one_never_claims_less_is_needed() {
    let device = memory_device();
    let journal = Arc::new(open(device.clone(), 64));
    let object = counting_object();
    let anchor = journal.commit(&[b"anchor"]).unwrap();
    let pin = journal.pin(anchor, object.clone()).unwrap();
    journal.flush().unwrap();

    // Entry A stays referenced; entry B, newer, is written first.
    let mut held = journal.reserve(record_bytes(4)).unwrap();
    held.append(b"held").unwrap();
    let a = held.seq();
    let closer = {
        let journal = Arc::clone(&journal);
        thread::spawn(move || journal.flush_seq(a))
    };
    while journal.status().open_seq == Some(a) {
        thread::sleep(Duration::from_millis(1));
    }
    let b = journal.commit(&[&vec![9u8; 10_000]]).unwrap();
    journal.commit(&[&vec![9u8; 10_000]]).unwrap(); // closes and writes B
    assert!(b > a);
    journal.unpin(pin); // now the front could move past the anchor
    drop(held); // A is written last
    closer.join().unwrap().unwrap();
    journal.flush().unwrap();
    drop(journal);

    let image = device.to_image();
    let header_of = |seq: u64| {
        let block = entry_block(&device, seq);
        let at = (REGION_START + block * u64::from(BLOCK)) as usize;
        vigilfs::journal::decode_header(&image[at..at + BLOCK as usize], &UUID, BLOCK as usize)
            .unwrap()
    };
    let (entry_a, entry_b) = (header_of(a), header_of(b));
    assert!(
        entry_a.last_seq <= entry_b.last_seq,
        "entry {a} records last_seq {} above newer entry {b}'s {}",
        entry_a.last_seq,
        entry_b.last_seq
    );
}

/// Where the claim tests put their "file data": past the journal region.
const DATA_AT: u64 = 2 << 20;

fn claim_for(data: &[u8]) -> DataClaim {
    DataClaim {
        offset: DATA_AT,
        block_bytes: BLOCK,
        checksums: data.chunks(BLOCK as usize).map(crc32c::crc32c).collect(),
    }
}

/// Commits `record` with a claim on `claimed` at `DATA_AT` and returns the seq.
fn commit_claiming(journal: &Journal, record: &[u8], claimed: &[u8]) -> u64 {
    let claim = claim_for(claimed);
    let mut reservation = journal
        .reserve(record_bytes(record.len()) + claim.record_bytes())
        .unwrap();
    reservation.append(record).unwrap();
    reservation.claim(&claim).unwrap();
    reservation.seq()
}

/// Rewrites the claimed block, as a reuse of it would, and recovers.
fn rewrite_claimed_block_and_recover(device: Arc<MemoryDevice>) -> vigilfs::journal::Replay {
    device
        .write_at(DATA_AT, &[0x77; BLOCK as usize], IoClass::Data)
        .unwrap();
    Journal::open(device, options(64)).unwrap().1
}

#[test]
fn an_entry_whose_claimed_data_is_on_the_device_replays() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    let data = vec![0x5a; 2 * BLOCK as usize];
    device.write_at(DATA_AT, &data, IoClass::Data).unwrap();
    let seq = commit_claiming(&journal, b"extent", &data);
    journal.flush_seq(seq).unwrap();
    drop(journal);
    let (_, replay) = Journal::open(device, options(64)).unwrap();
    assert!(replay.report.unmet_claims.is_empty());
    assert_eq!(replay.report.newest_kept_seq, seq);
    assert_eq!(
        replay.entries.last().unwrap().records,
        vec![b"extent".to_vec()]
    );
}

#[test]
fn an_entry_that_reached_the_disk_without_its_claimed_data_is_cut_off_with_what_follows() {
    // The crash a single flush per commit allows: the entry landed, the
    // data written before it did not (the device still holds zeros).
    let device = memory_device();
    let journal = open(device.clone(), 64);
    // `before` stays pinned, as b-tree nodes pin what they hold, so
    // replay needs every entry from it on.
    let object = counting_object();
    let before = {
        let mut reservation = journal.reserve(record_bytes(6)).unwrap();
        reservation.append(b"before").unwrap();
        journal.pin(reservation.seq(), object).unwrap();
        reservation.seq()
    };
    journal.flush_seq(before).unwrap();
    let lost = commit_claiming(&journal, b"extent", &[0x5a; BLOCK as usize]);
    // Records too large to share an entry: each commit closes the entry
    // before it, which is written then, with no flush.
    let mut after = lost;
    while after == lost {
        after = journal.commit(&[&[1u8; 16_300]]).unwrap();
    }
    while journal.commit(&[&[2u8; 16_300]]).unwrap() == after {}
    drop(journal);
    let (_, replay) = Journal::open(device.clone(), options(64)).unwrap();
    assert_eq!(replay.report.unmet_claims, vec![lost]);
    assert_eq!(replay.report.newest_kept_seq, before);
    assert_eq!(replay.report.cut_off, vec![lost, after]);
    let records: Vec<Vec<u8>> = replay.entries.into_iter().flat_map(|e| e.records).collect();
    assert_eq!(records.last().unwrap(), b"before");
    // Destroyed: a later recovery never finds them again.
    let (_, again) = Journal::open(device, options(64)).unwrap();
    assert!(again.report.cut_off.is_empty());
    assert!(again.report.unmet_claims.is_empty());
}

/// A device that flips a bit in the first read of the block at `DATA_AT`,
/// as a transfer error would, and reads correctly after that.
struct MisreadsOnce {
    inner: Arc<MemoryDevice>,
    misread: AtomicUsize,
}

impl BlockDevice for MisreadsOnce {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        self.inner.read_at(offset, buffer, class)?;
        if offset == DATA_AT && self.misread.fetch_add(1, Ordering::SeqCst) == 0 {
            buffer[17] ^= 0x10;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        self.inner.write_at(offset, buffer, class)
    }

    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        self.inner.flush(class)
    }

    fn length(&self) -> u64 {
        self.inner.length()
    }

    fn sector_size(&self) -> SectorSize {
        self.inner.sector_size()
    }
}

/// An acknowledged entry whose durability no later entry recorded has its
/// claims checked at recovery, and an entry cut off is destroyed: one bit
/// flipped on the way from the disk cut off an fsynced file for good, with
/// no trace (the crash lab's `--corrupt-reads` showed it). A difference the
/// next read does not repeat is not data that never landed.
#[test]
fn a_claimed_block_misread_once_does_not_cut_off_an_acknowledged_entry() {
    let memory = memory_device();
    let journal = open(memory.clone(), 64);
    let data = vec![0x5a; BLOCK as usize];
    memory.write_at(DATA_AT, &data, IoClass::Data).unwrap();
    let seq = commit_claiming(&journal, b"fsynced", &data);
    journal.flush_seq(seq).unwrap();
    assert!(journal.recorded_durable_seq() < seq);
    drop(journal);
    let device = Arc::new(MisreadsOnce {
        inner: memory,
        misread: AtomicUsize::new(0),
    });
    let (_, replay) = Journal::open(device.clone(), options(64)).unwrap();
    assert!(
        device.misread.load(Ordering::SeqCst) >= 1,
        "the claim was read"
    );
    assert!(replay.report.unmet_claims.is_empty(), "{:?}", replay.report);
    assert_eq!(replay.report.newest_kept_seq, seq);
    assert_eq!(
        replay.entries.last().unwrap().records,
        vec![b"fsynced".to_vec()]
    );
}

#[test]
fn claims_of_entries_recorded_durable_are_trusted_and_their_blocks_reusable_only_then() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    let claimed = commit_claiming(&journal, b"extent", &[0x5a; BLOCK as usize]);
    journal.flush_seq(claimed).unwrap();
    // Durable, but no entry on the device says so yet: a recovery would
    // check its claim, so its blocks must not be reused.
    assert_eq!(journal.status().durable_seq, claimed);
    assert!(journal.recorded_durable_seq() < claimed);
    journal.settle().unwrap();
    assert!(journal.recorded_durable_seq() >= claimed);
    drop(journal);
    // The entry is recorded durable, so recovery does not check it again.
    let replay = rewrite_claimed_block_and_recover(device);
    assert!(replay.report.unmet_claims.is_empty());
    assert!(replay.report.newest_kept_seq > claimed);
    assert!(replay.report.cut_off.is_empty());
}

#[test]
fn a_recovery_that_keeps_unrecorded_claims_settles_them_once_asked_and_then_never_again() {
    let device = memory_device();
    let journal = open(device.clone(), 64);
    let data = vec![0x5a; BLOCK as usize];
    device.write_at(DATA_AT, &data, IoClass::Data).unwrap();
    let claimed = commit_claiming(&journal, b"extent", &data);
    journal.flush_seq(claimed).unwrap();
    drop(journal);
    let (journal, replay) = Journal::open(device.clone(), options(64)).unwrap();
    assert!(replay.report.claims_unsettled);
    // What a read-write mount does before anything can be reused; a
    // read-only one writes nothing.
    assert!(journal.recorded_durable_seq() < claimed);
    journal.settle_claims().unwrap();
    assert!(journal.recorded_durable_seq() >= claimed);
    // Settled: asking again (the background round does, every interval)
    // writes and flushes nothing.
    let flushes = device.flush_count();
    journal.settle_claims().unwrap();
    journal.settle_claims().unwrap();
    assert_eq!(device.flush_count(), flushes);
    drop(journal);
    // So rewriting the block now cannot undo the entry at the next mount.
    let replay = rewrite_claimed_block_and_recover(device);
    assert!(replay.report.unmet_claims.is_empty());
    assert!(replay.entries.iter().any(|entry| entry.seq == claimed));
}
