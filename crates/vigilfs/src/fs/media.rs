//! Media failures on a mounted filesystem: the intake that hears of them,
//! the worker that handles them, [`Filesystem::notify_failure`] and
//! [`Filesystem::owners`], and what each outcome becomes — an FS_ERROR
//! event, a superblock rewrite, the `errors=` policy.
//!
//! Failures reach [`crate::failure::handle`] by three ways: the device's
//! media-failure callback and the read path (a media error, a checksum
//! mismatch: [`Shared::notice_read_failure`]) queue a notice, which the
//! worker thread handles, since the reader may hold locks the handling
//! needs; an operator's report and scrub's findings are handled on the
//! caller's thread, so the caller gets the outcome. Notices queued before
//! the mount is ready (journal replay, recovery, orphan deletion) wait in
//! the intake and are handled once it is.
//!
//! One failure is handled at a time (`handling`). Handling that writes
//! (records, rescues, moves) enters the write gate without waiting: on a
//! frozen filesystem the notice is queued for after the thaw, on a
//! read-only or shut-down one it is handled in memory only (reads of lost
//! data still fail).
//!
//! Events, one per owner that lost or saved something (nothing for a
//! notice already handled): file data — MEDIA, plus DATA_LOST when
//! anything was lost, with the inode and generation, the file byte range
//! and the device range; a b-tree node — moved: MEDIA with tree, level and
//! block; lost: METADATA and MEDIA, then the `errors=` policy; journal and
//! superblock copies likewise; free space marked bad — MEDIA with the
//! device range. Notices the intake could not hold are reported as one
//! event per batch, with the count in status.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use fserror::Subtypes;

use super::health::{Detail, Incident};
use super::{Filesystem, FsError, FsResult, LifeState, Shared};
use crate::alloc::FailureCause;
use crate::btree::{BtreeError, TreeId};
use crate::device::{BlockDevice, ByteRange, DeviceError, DeviceErrorKind, IoClass, IoOperation};
use crate::failure::{
    self, check_range, Context, FailureError, Handled, HeldMarks, Intake, IntakeStats, Origin,
    Outcome, Owner, OwnerKind, Source,
};
use crate::format::ErrorKind;
use crate::inode::{Extent, ExtentKey, FileError, NamespaceError, XattrError};
use crate::poison::{self, PoisonRun};
use crate::rmap::RmapError;

/// How long the worker waits for a notice before looking at its stop flag.
const WORKER_POLL: Duration = Duration::from_millis(100);

/// Whether a failure is heard of for the first time, or handled again
/// once the mount may write (it was held while it could not): told again,
/// it makes an event only for what is lost now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hearing {
    /// A notice, a report or a scrub finding.
    First,
    /// A mark held while the mount could not write.
    Again,
}

/// A failure handled, for whoever reported it.
#[derive(Debug, Clone)]
pub struct FailureReport {
    /// The failed device bytes.
    pub range: ByteRange,
    /// Who reported it.
    pub origin: Origin,
    /// Every owner, and what became of it.
    pub handled: Vec<Handled>,
    /// The filesystem was frozen: the notice waits for the thaw.
    pub queued: bool,
    /// Why what was marked (bad blocks, poisoned file data) holds for this
    /// mount only, if it does: its records could not be written.
    pub unrecorded: Option<String>,
}

impl FailureReport {
    /// Blocks saved to new blocks.
    pub fn healed_blocks(&self) -> u64 {
        self.handled
            .iter()
            .map(|handled| match handled.outcome {
                Outcome::Healed { blocks } => blocks,
                Outcome::Partly { healed, .. } => healed,
                _ => 0,
            })
            .sum()
    }

    /// Blocks whose contents are lost.
    pub fn lost_blocks(&self) -> u64 {
        self.handled
            .iter()
            .map(|handled| match handled.outcome {
                Outcome::Lost { blocks, .. } => blocks,
                Outcome::Partly { lost, .. } => lost,
                _ => 0,
            })
            .sum()
    }

    /// (owners, blocks) found lost already when this report was handled:
    /// file data a notice of the same failure handled first (the read
    /// path's, racing a scrub's) poisoned, and b-tree nodes on blocks known
    /// bad that could not be moved, still lost (review 47: a second scrub
    /// of a damaged directory's node said "0 lost" and exited 0).
    pub fn already_lost(&self) -> (u64, u64) {
        self.handled
            .iter()
            .filter(|handled| handled.outcome == Outcome::AlreadyKnown)
            .filter(|handled| {
                matches!(
                    handled.owner.kind,
                    OwnerKind::File { poisoned: true, .. } | OwnerKind::Node { .. }
                )
            })
            .fold((0, 0), |(owners, blocks), handled| {
                (
                    owners + 1,
                    blocks + handled.owner.range.len().div_ceil(4096),
                )
            })
    }

    /// Owners that held something there (files, nodes, journal entries,
    /// superblock copies).
    pub fn owners_hit(&self) -> u64 {
        self.handled
            .iter()
            .filter(|handled| {
                matches!(
                    handled.outcome,
                    Outcome::Healed { .. }
                        | Outcome::Lost { .. }
                        | Outcome::Partly { .. }
                        | Outcome::Unmovable { .. }
                )
            })
            .count() as u64
    }
}

/// A bad run, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadExtent {
    /// First block.
    pub start: u64,
    /// Blocks.
    pub blocks: u64,
}

/// The media side of [`Status`](super::Status).
#[derive(Debug, Clone, Default)]
pub struct MediaStatus {
    /// The bad-block list, coalesced.
    pub bad: Vec<BadExtent>,
    /// Bad blocks in all.
    pub bad_blocks: u64,
    /// Poisoned file runs (data lost until rewritten), up to
    /// [`POISON_LISTED`] of them.
    pub poisoned: Vec<PoisonRun>,
    /// Poisoned runs in all.
    pub poisoned_runs: u64,
    /// Failure notices: received, parked before the mount was ready,
    /// merged into one waiting, dropped for lack of room, waiting, handled.
    pub notices: IntakeStats,
    /// Blocks saved to new blocks this mount.
    pub healed_blocks: u64,
    /// Blocks lost this mount.
    pub lost_blocks: u64,
    /// Scrub.
    pub scrub: super::scrubbing::ScrubStatus,
}

/// Poisoned runs listed in status.
pub const POISON_LISTED: usize = 64;

/// A mount's media-failure state (see the module comment).
pub(crate) struct Media {
    pub(super) intake: Arc<Intake>,
    /// Held while one failure is handled; holds what was marked while the
    /// filesystem could not write, for a read-only mount made writable
    /// ([`Media::take_held`]).
    handling: Mutex<HeldMarks>,
    /// Blocks saved and lost this mount.
    healed_blocks: AtomicU64,
    lost_blocks: AtomicU64,
    /// Foreground reads and writes so far: scrub waits while it moves.
    pub(super) foreground: AtomicU64,
    /// Intake overflows already reported as an event.
    overflow_reported: AtomicU64,
    /// Set at unmount: workers and scrubs stop.
    pub(super) stopping: AtomicBool,
    pub(super) scrub: super::scrubbing::ScrubControl,
    /// Device offsets of superblock copies known damaged and not rewritten
    /// (a read-only mount cannot): found again, they are known already.
    superblocks_known_bad: Mutex<Vec<u64>>,
}

impl Media {
    pub(super) fn new(intake: Arc<Intake>, superblocks_known_bad: Vec<u64>) -> Media {
        Media {
            superblocks_known_bad: Mutex::new(superblocks_known_bad),
            intake,
            handling: Mutex::new(HeldMarks::default()),
            healed_blocks: AtomicU64::new(0),
            lost_blocks: AtomicU64::new(0),
            foreground: AtomicU64::new(0),
            overflow_reported: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            scrub: super::scrubbing::ScrubControl::default(),
        }
    }

    /// Takes the marks held in memory (see `handling`), waiting for a
    /// failure being handled.
    pub(super) fn take_held(&self) -> HeldMarks {
        std::mem::take(&mut *self.handling.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The media failure a failed operation ran into, if any: the device bytes
/// and what failed there (blocks are 4 KiB: a mount refuses other sizes). A media error (or an error the operating system
/// gave a read, which a real disk gives for a bad sector) and a checksum
/// mismatch count; an error a `fail` fault rule injected is a path
/// failure, not the medium's, and does not.
fn failed_device_range(error: &FsError) -> Option<(ByteRange, FailureCause)> {
    let from_device = |error: &DeviceError| -> Option<(ByteRange, FailureCause)> {
        match error.kind {
            DeviceErrorKind::Media { failed } => Some((failed, FailureCause::Media)),
            DeviceErrorKind::Io
                if error.injected_by.is_none() && error.operation == IoOperation::Read =>
            {
                Some((error.range, FailureCause::Media))
            }
            _ => None,
        }
    };
    let from_btree = |error: &BtreeError| match error {
        BtreeError::Device(device) | BtreeError::NodeWrite { source: device, .. } => {
            from_device(device)
        }
        BtreeError::CorruptNode { block, .. } => {
            Some((ByteRange::at(block * 4096, 4096), FailureCause::Checksum))
        }
        _ => None,
    };
    match error {
        FsError::File(FileError::Read { source, .. }) => from_device(source),
        FsError::File(FileError::Checksum { physical, .. }) => {
            Some((ByteRange::at(physical * 4096, 4096), FailureCause::Checksum))
        }
        FsError::File(FileError::Btree(error))
        | FsError::File(FileError::Rmap(RmapError::Btree(error)))
        | FsError::Namespace(NamespaceError::Btree(error))
        | FsError::Xattr(XattrError::Btree(error)) => from_btree(error),
        _ => None,
    }
}

/// A run of a file's failed range, as its events name it: file bytes and
/// device bytes (offset, length), and whether its data was lost.
#[derive(Debug, Clone, Copy)]
struct FailedRun {
    file: (u64, u64),
    device: (u64, u64),
    lost: bool,
}

impl Shared {
    /// Block `index` of the extent of `ino` at file block `extent_offset`
    /// was poisoned (for a checksum mismatch or a media error), and a scrub
    /// read it back matching its checksum (the fault was on the way, not on
    /// the medium: a cable, a controller, an injected fault since cleared;
    /// or the device recovered the sector). Checked
    /// again under the record lock — the extent still maps it, the run
    /// still holds it, the device's bytes still match — its poison goes and
    /// reads return the data again. Whether it did. The error it caused
    /// stays recorded; the bad-block mark stays (the block is not reused).
    pub(super) fn heal_poison(&self, ino: u64, extent_offset: u64, index: u64) -> FsResult<bool> {
        let Ok(_writer) = self.gate.try_enter() else {
            return Ok(false);
        };
        if self.mounted_read_only.load(Ordering::Acquire) {
            return Ok(false);
        }
        let btree = |error: BtreeError| FsError::File(FileError::Btree(error));
        let _records = self.metadata.lock_records();
        let key = ExtentKey {
            ino,
            offset: extent_offset,
        };
        let Some(value) = self
            .metadata
            .trees
            .get(TreeId::Extents, &key.encode())
            .map_err(btree)?
        else {
            return Ok(false);
        };
        let Ok(extent) = Extent::decode(&value) else {
            return Ok(false);
        };
        let Some(&checksum) = extent.checksums.get(index as usize) else {
            return Ok(false);
        };
        if extent.flags & Extent::UNWRITTEN != 0 {
            return Ok(false);
        }
        let block = extent_offset + index;
        let physical = extent.physical + index;
        let Some(run) = self
            .metadata
            .poison
            .runs_within(ino, block, block + 1)
            .into_iter()
            .find(|run| run.physical_of(block) == physical)
        else {
            return Ok(false);
        };
        let block_size = u64::from(self.superblock().layout.block_size);
        let mut bytes = vec![0u8; block_size as usize];
        if self
            .device
            .read_at(physical * block_size, &mut bytes, IoClass::Data)
            .is_err()
            || crc32c::crc32c(&bytes) != checksum
        {
            return Ok(false);
        }
        let change = poison::reconcile(&[run], |file_block| {
            (file_block != block).then(|| run.physical_of(file_block))
        });
        let mut transaction = self.metadata.trees.transaction();
        change.stage(&mut transaction).map_err(btree)?;
        transaction.commit().map_err(btree)?;
        self.metadata.poison.apply(&change);
        self.media.healed_blocks.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// A foreground read or write: a scrub running holds back for it.
    pub(super) fn note_foreground(&self) {
        self.media.foreground.fetch_add(1, Ordering::Relaxed);
    }

    /// A failed operation ran into a media failure: queue it for the
    /// worker (the reader may hold locks handling needs).
    pub(super) fn notice_read_failure(&self, origin: &str, error: &FsError) {
        if let Some((range, cause)) = failed_device_range(error) {
            self.media
                .intake
                .offer(range, Origin::new(cause, Source::Read, origin));
        }
    }

    /// Handles one failure now (see the module comment).
    pub(super) fn handle_failure(
        &self,
        range: ByteRange,
        origin: Origin,
        hearing: Hearing,
    ) -> FsResult<FailureReport> {
        check_range(range, self.device.length()).map_err(FsError::Failure)?;
        // Taken before the gate is looked at: a read-only mount made
        // writable takes what was held under this lock after it opened the
        // gate, so a failure is either held before that or handled
        // writable after it, never held too late to be recorded.
        let mut one_at_a_time = self
            .media
            .handling
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let guard = match self.gate.try_enter() {
            Ok(guard) => Some(guard),
            Err(LifeState::Frozen) => {
                // The caller queues it (or puts it back) for the thaw.
                return Ok(FailureReport {
                    range,
                    origin,
                    handled: Vec::new(),
                    queued: true,
                    unrecorded: None,
                });
            }
            Err(_) => None,
        };
        // Nor while the transport's mount is read-only (`remount,ro`): the
        // image stays as the remount made it (review 49: a report healed,
        // writing, after the remount), and the marks are recorded at
        // `remount,rw` or the unmount (`record_held_marks`).
        let writable = guard.is_some()
            && !self.mounted_read_only.load(Ordering::Acquire)
            && !self.transport_read_only.load(Ordering::Acquire);
        let layout = self.superblock().layout;
        let context = Context {
            metadata: &self.metadata,
            files: &self.files,
            device: self.device.as_ref(),
            layout,
            writable,
            writable_later: !writable
                && !self.device.is_stopped()
                && if guard.is_some() {
                    self.transport_read_only.load(Ordering::Acquire)
                } else {
                    self.may_be_made_writable()
                },
        };
        let failure::Handling {
            mut handled,
            unrecorded,
            unhandled,
            held,
        } = failure::handling_own_failures(range, || failure::handle(&context, range, &origin))
            .map_err(FsError::Failure)?;
        // A block marked bad whose data still reads (and so was not lost)
        // is a mark held too; so is one an earlier report left held here
        // (a repeat holds nothing new, yet its marks are still unwritten).
        let block = u64::from(layout.block_size);
        let held_before = one_at_a_time
            .bad
            .iter()
            .any(|(run, _)| run.start * block < range.end && range.start < run.end() * block);
        let holds_marks =
            !held.bad.is_empty() || !held.poison.is_empty() || (!writable && held_before);
        if !writable {
            // Recorded if the mount is made writable.
            one_at_a_time.extend(held);
        }
        self.act_on(&origin, &mut handled, writable, hearing);
        // Acting on an owner may have stopped writes (a lost node, under
        // errors=remount-ro): the marks taken before are not written now.
        let stopped_meanwhile = writable && self.device.is_stopped();
        let marked = handled.iter().any(|item| {
            !matches!(
                item.outcome,
                Outcome::Unused
                    | Outcome::Unmovable { .. }
                    | Outcome::AlreadyKnown
                    | Outcome::NotConfirmed
            )
        });
        let unrecorded = match unrecorded {
            Some(error) => Some(self.report_unrecorded(&origin, range, error)),
            None if !writable
                && (marked || holds_marks)
                && guard.is_some()
                && !self.mounted_read_only.load(Ordering::Acquire) =>
            {
                Some(
                    "the mount is read-only (remount,ro): the bad-block and lost-data marks are \
                     recorded, and what still reads moved off the bad blocks, at remount,rw or \
                     the unmount"
                        .to_string(),
                )
            }
            None if !writable && (marked || holds_marks) => Some(
                "the filesystem may not write (read-only or shut down): the bad-block and \
                 lost-data marks were not recorded, and hold only until it is unmounted \
                 (or, mounted read-only, remounted read-write, which records them)"
                    .to_string(),
            ),
            None if stopped_meanwhile && (marked || holds_marks) => Some(
                "the errors= policy stopped writes while this was handled: the bad-block and \
                 lost-data marks were not recorded, and hold only until it is unmounted"
                    .to_string(),
            ),
            None => None,
        };
        if let Some(error) = unhandled {
            let _ = self.observe(&origin.to_string(), Err::<(), _>(FsError::Failure(error)));
        }
        if writable && !stopped_meanwhile {
            // What the report says was done (blocks marked bad, data moved)
            // and the error it recorded are durable before it is given: a
            // power cut right after must not take them back. A failed
            // flush fails the journal, which every later sync reports.
            let _ = self.metadata.journal.flush();
            self.save_error_record();
        }
        drop(guard);
        let report = FailureReport {
            range,
            origin,
            handled,
            queued: false,
            unrecorded,
        };
        self.media
            .healed_blocks
            .fetch_add(report.healed_blocks(), Ordering::Relaxed);
        self.media
            .lost_blocks
            .fetch_add(report.lost_blocks(), Ordering::Relaxed);
        Ok(report)
    }

    /// A failure whose records could not be written: a full device is
    /// reported as such (an event naming the range); anything else is the
    /// metadata failure it is, for the `errors=` policy. Returns why, for
    /// the report.
    fn report_unrecorded(&self, origin: &Origin, range: ByteRange, error: FailureError) -> String {
        let why = error.to_string();
        if error.is_no_space() {
            // What matters first: event texts are short.
            let text = format!(
                "marks not recorded, this mount only: device bytes {range}, {origin}: {why}"
            );
            self.health.report_with(
                &Incident {
                    kind: ErrorKind::Media,
                    errno: libc::ENOSPC,
                    inode: None,
                    range: None,
                    block: Some(range.start / 4096),
                    origin: &text,
                },
                &Detail {
                    subtypes: Subtypes::empty(),
                    device_range: Some((range.start, range.len())),
                    ..Detail::default()
                },
            );
        } else {
            let _ = self.observe(&origin.to_string(), Err::<(), _>(FsError::Failure(error)));
        }
        why
    }

    /// What only the mounted filesystem does with the outcomes: rewrite
    /// the superblock copies, report events, apply the `errors=` policy.
    fn act_on(&self, origin: &Origin, handled: &mut [Handled], writable: bool, hearing: Hearing) {
        let text = origin.to_string();
        let mut rewritten: Option<Result<(), String>> = None;
        for item in handled.iter_mut() {
            if item.outcome == Outcome::RewriteSuperblock
                && !writable
                && self.mounted_read_only.load(Ordering::Acquire)
            {
                // Nothing is lost: the other copies hold it, and every copy
                // is written again when the mount is made writable (or by
                // the next read-write mount), as a read-write mount would
                // now. Not a metadata loss for the errors= policy. Found
                // again (every scrub of this mount reads it), it is known:
                // one error, not one per scrub (review 34).
                let mut known = self
                    .media
                    .superblocks_known_bad
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                item.outcome = if known.contains(&item.owner.range.start) {
                    Outcome::AlreadyKnown
                } else {
                    known.push(item.owner.range.start);
                    Outcome::Unmovable {
                        blocks: 1,
                        why: "mounted read-only: every copy is written again at remount,rw or \
                              the next read-write mount"
                            .into(),
                    }
                };
            }
            if item.outcome == Outcome::NotConfirmed
                && !writable
                && origin.cause == FailureCause::Reported
                && matches!(item.owner.kind, OwnerKind::File { .. })
            {
                // Data a report named that still reads back whole, with
                // nothing allowed to move it: it stays readable where it is
                // (the block is marked bad), and that is said, not "nothing
                // done".
                item.outcome = Outcome::Unmovable {
                    blocks: item.owner.range.len().div_ceil(4096),
                    why: "reads back intact; the filesystem may not write, so it stays where it \
                          is, readable (its block is marked bad: never used again once the data \
                          leaves it)"
                        .into(),
                };
            }
            if item.outcome == Outcome::RewriteSuperblock {
                let result = rewritten.get_or_insert_with(|| {
                    self.write_superblock(None)
                        .map_err(|error| error.to_string())
                });
                item.outcome = match result {
                    Ok(()) => Outcome::Healed { blocks: 1 },
                    Err(why) => Outcome::Lost {
                        blocks: 1,
                        why: why.clone(),
                    },
                };
            }
            if item.outcome == Outcome::NotConfirmed && origin.source == Source::Scrub {
                // A mismatch scrub saw that a re-read did not repeat: nothing
                // is lost, but the path to the medium returned wrong bytes
                // once, which an operator wants to hear of (the read path's
                // own mismatches were reported to their reader already).
                let why = format!("mismatch not repeated, nothing lost: {text}");
                self.health.report_with(
                    &Incident {
                        kind: ErrorKind::Checksum,
                        errno: libc::EIO,
                        inode: None,
                        range: None,
                        block: Some(item.owner.range.start / 4096),
                        origin: &why,
                    },
                    &Detail {
                        subtypes: Subtypes::empty(),
                        device_range: Some((item.owner.range.start, item.owner.range.len())),
                        ..Detail::default()
                    },
                );
            }
            self.report_outcome(&text, item, hearing);
        }
    }

    /// The event for one owner's outcome, and the policy for lost
    /// metadata.
    fn report_outcome(&self, origin: &str, item: &Handled, hearing: Hearing) {
        let range = item.owner.range;
        let device_range = Some((range.start, range.len()));
        let block = Some(range.start / 4096);
        let (lost, saved) = match &item.outcome {
            Outcome::Healed { blocks } => (0, *blocks),
            Outcome::Lost { blocks, .. } => (*blocks, 0),
            Outcome::Partly { healed, lost } => (*lost, *healed),
            Outcome::MarkedBad | Outcome::Unmovable { .. } => (0, 0),
            Outcome::RewriteSuperblock
            | Outcome::Unused
            | Outcome::AlreadyKnown
            | Outcome::NotConfirmed => return,
        };
        if hearing == Hearing::Again && lost == 0 {
            // Reported (and counted) when first heard of; what a second
            // handling saved or marked is no new error (review 50: every
            // failure held while read-only counted twice).
            return;
        }
        let data_lost = if lost > 0 {
            Subtypes::DATA_LOST
        } else {
            Subtypes::empty()
        };
        let mut incident = Incident {
            kind: ErrorKind::Media,
            errno: libc::EIO,
            inode: None,
            range: None,
            block,
            origin,
        };
        let mut detail = Detail {
            device_range,
            ..Detail::default()
        };
        let mut reported = false;
        match &item.owner.kind {
            OwnerKind::File {
                ino,
                generation,
                file_offset,
                ..
            } => {
                incident.inode = Some((*ino, *generation as u32));
                incident.range = Some((*file_offset, range.len()));
                detail.subtypes = data_lost;
                if lost > 0 {
                    // What was lost, exactly: an event per lost run, so a
                    // hook can tell the bytes lost from those saved; and
                    // when some were saved, an event (no data lost) per
                    // run between them, so the failure is whole in the log.
                    // In whole blocks: a report may name part of one.
                    let first = file_offset / 4096;
                    let blocks = (file_offset % 4096 + range.len()).div_ceil(4096);
                    let device_first = range.start / 4096;
                    let run_of = |at: u64, count: u64, lost: bool| FailedRun {
                        file: ((first + at) * 4096, count * 4096),
                        device: ((device_first + at) * 4096, count * 4096),
                        lost,
                    };
                    let mut pieces = Vec::new();
                    let mut at = 0;
                    for (from, count) in self.lost_runs(*ino, first, blocks) {
                        if saved > 0 && from > at {
                            pieces.push(run_of(at, from - at, false));
                        }
                        pieces.push(run_of(from, count, true));
                        at = from + count;
                    }
                    if saved > 0 && !pieces.is_empty() && at < blocks {
                        pieces.push(run_of(at, blocks - at, false));
                    }
                    for piece in pieces {
                        incident.range = Some(piece.file);
                        incident.block = Some(piece.device.0 / 4096);
                        detail.device_range = Some(piece.device);
                        detail.subtypes = if piece.lost {
                            Subtypes::DATA_LOST
                        } else {
                            Subtypes::empty()
                        };
                        self.health.report_with(&incident, &detail);
                        reported = true;
                    }
                }
            }
            OwnerKind::Node { tree, level, block } => {
                detail.node = Some((tree.name(), *level, *block));
                if lost > 0 {
                    incident.kind = ErrorKind::Metadata;
                    detail.subtypes = Subtypes::MEDIA;
                } else {
                    detail.subtypes = Subtypes::METADATA;
                }
            }
            OwnerKind::Journal { .. } => {
                if lost > 0 {
                    incident.kind = ErrorKind::Journal;
                    detail.subtypes = Subtypes::MEDIA;
                } else {
                    detail.subtypes = Subtypes::JOURNAL;
                }
            }
            OwnerKind::EventLog => detail.subtypes = Subtypes::MEDIA,
            OwnerKind::Superblock { .. } | OwnerKind::Free | OwnerKind::Bad | OwnerKind::Unused => {
                let _ = saved;
            }
        }
        if !reported {
            self.health.report_with(&incident, &detail);
        }
        if lost > 0 {
            if let Outcome::Lost { why, .. } = &item.outcome {
                let metadata = matches!(
                    item.owner.kind,
                    OwnerKind::Node { .. }
                        | OwnerKind::Journal { .. }
                        | OwnerKind::Superblock { .. }
                );
                if metadata {
                    self.apply_errors_policy(format!(
                        "{origin}: {} at device bytes {range} lost: {why}",
                        item.owner.kind.name()
                    ));
                }
            }
        }
    }

    /// The data of inode `ino` lost now within the `blocks` file blocks
    /// from `first`: each poisoned run, clipped to them, as (its first
    /// block counted from `first`, its blocks), in file order.
    fn lost_runs(&self, ino: u64, first: u64, blocks: u64) -> Vec<(u64, u64)> {
        let end = first + blocks;
        self.metadata
            .poison
            .runs_within(ino, first, end)
            .into_iter()
            .filter_map(|run| {
                let (from, to) = (run.first.max(first), run.end().min(end));
                (to > from).then(|| (from - first, to - from))
            })
            .collect()
    }

    /// Reports notices the intake had to drop since the last report.
    fn report_overflow(&self) {
        let overflowed = self.media.intake.stats().overflowed;
        let reported = self
            .media
            .overflow_reported
            .swap(overflowed, Ordering::AcqRel);
        if overflowed > reported {
            let why = format!(
                "{} failure notices were dropped: the queue was full",
                overflowed - reported
            );
            self.health.report(&Incident {
                kind: ErrorKind::Media,
                errno: libc::EIO,
                inode: None,
                range: None,
                block: None,
                origin: &why,
            });
        }
    }

    /// Records the bad blocks and lost data marked in memory while the
    /// mount could not write (read-only by its options, or its transport's
    /// mount `remount,ro`), once it may, and moves what could not be moved
    /// off those blocks then (a b-tree node, file data that still reads): a
    /// node left on a block listed bad was looked at by nothing again, not
    /// even scrub (review 48). Handled again, each is no new notice (review
    /// 49: the notice counters counted it twice). The allocator keeps the
    /// blocks bad all the same if recording fails (for this mount only,
    /// as a read-write mount's unrecorded marks).
    pub(super) fn record_held_marks(&self) {
        if self.gate.state() != LifeState::Running || self.mounted_read_only.load(Ordering::Acquire)
        {
            // Still may not write: they stay held.
            return;
        }
        let held = self.media.take_held();
        if held.is_empty() {
            return;
        }
        let recorded = failure::record_held(&self.metadata, &held).map_err(FsError::Failure);
        let _ = self.observe("recording the marks of media failures", recorded);
        let block = u64::from(self.superblock().layout.block_size);
        let bad = held
            .bad
            .iter()
            .map(|(run, cause)| (ByteRange::at(run.start * block, run.blocks * block), *cause));
        for (range, cause) in bad.chain(held.journal.iter().copied()) {
            let origin = Origin::new(
                cause,
                Source::Operator,
                "marked while read-only; handled again once writable",
            );
            if let Ok(FailureReport { queued: true, .. }) =
                self.handle_failure(range, origin.clone(), Hearing::Again)
            {
                // Frozen meanwhile: handled after the thaw.
                let _ = self.media.intake.offer(range, origin);
            }
        }
    }

    /// Handles a notice on its reporter's thread (an operator's report, a
    /// scrub finding) and counts it; on a frozen filesystem it is queued
    /// for the worker to handle after the thaw (and counted then).
    pub(super) fn handle_direct_notice(
        &self,
        range: ByteRange,
        origin: Origin,
    ) -> FsResult<FailureReport> {
        let result = self.handle_failure(range, origin.clone(), Hearing::First);
        match &result {
            Ok(FailureReport { queued: true, .. }) => {
                if !self.media.intake.offer(range, origin) {
                    // The caller hears it was not kept, not "handled after
                    // the thaw".
                    return Err(FsError::Busy(
                        "the filesystem is frozen and its queue of failure notices is full: \
                         report the failure again after the thaw",
                    ));
                }
            }
            Ok(_) => self.media.intake.count_direct(true),
            // A range that is not on the device is no notice.
            Err(error) if error.errno() == libc::EINVAL => {}
            Err(_) => self.media.intake.count_direct(false),
        }
        result
    }

    /// The worker's handling of one queued notice; whether it was handled
    /// (frozen: it is put back, and looked at again later).
    fn handle_notice(&self, notice: failure::Notice) -> bool {
        let origin_text = notice.origin.to_string();
        let result = self.handle_failure(notice.range, notice.origin.clone(), Hearing::First);
        if let Ok(FailureReport { queued: true, .. }) = result {
            self.media.intake.requeue(notice);
            std::thread::sleep(WORKER_POLL);
            return false;
        }
        let _ = self.observe(&origin_text, result);
        self.report_overflow();
        true
    }

    /// The media status for [`Status`](super::Status).
    pub(super) fn media_status(&self) -> MediaStatus {
        let allocator = &self.metadata.allocator;
        let bad: Vec<BadExtent> = allocator
            .bad_runs()
            .into_iter()
            .map(|run| BadExtent {
                start: run.start,
                blocks: run.blocks,
            })
            .collect();
        let all = self.metadata.poison.all();
        let healed_blocks = self.media.healed_blocks.load(Ordering::Relaxed);
        let lost_blocks = self.media.lost_blocks.load(Ordering::Relaxed);
        MediaStatus {
            bad_blocks: bad.iter().map(|run| run.blocks).sum(),
            bad,
            poisoned_runs: all.len() as u64,
            poisoned: all.into_iter().take(POISON_LISTED).collect(),
            notices: self.media.intake.stats(),
            healed_blocks,
            lost_blocks,
            scrub: self.scrub_status(),
        }
    }
}

/// The thread that handles queued notices.
pub(super) struct Worker {
    thread: JoinHandle<()>,
}

impl Worker {
    pub(super) fn start(shared: Arc<Shared>) -> std::io::Result<Worker> {
        let thread = std::thread::Builder::new()
            .name("vigilfs-failures".into())
            .spawn(move || loop {
                match shared.media.intake.next(WORKER_POLL) {
                    Some(notice) => {
                        let handled = shared.handle_notice(notice);
                        shared.media.intake.done(handled);
                    }
                    None if shared.media.stopping.load(Ordering::Acquire) => return,
                    None => shared.report_overflow(),
                }
            })?;
        Ok(Worker { thread })
    }

    /// Handles what is queued, then stops.
    pub(super) fn stop(self, shared: &Shared) {
        shared.media.stopping.store(true, Ordering::Release);
        shared.media.intake.close();
        let _ = self.thread.join();
    }
}

impl Filesystem {
    /// Reports a failed device range (see the module comment): every owner
    /// is found and acted on, and the report says what became of each. A
    /// range outside the device, or longer than
    /// [`failure::MAX_RANGE_BYTES`], is `EINVAL`. Files in the report come
    /// with their paths.
    pub fn notify_failure(&self, range: ByteRange, origin: Origin) -> FsResult<FailureReport> {
        let result = self.shared.handle_direct_notice(range, origin);
        let mut report = self.shared.observe("notify-failure", result)?;
        let mut owners: Vec<Owner> = report
            .handled
            .iter()
            .map(|item| item.owner.clone())
            .collect();
        failure::name_owners(&self.shared.metadata, &mut owners);
        for (item, named) in report.handled.iter_mut().zip(owners) {
            item.owner = named;
        }
        Ok(report)
    }

    /// Every owner of `range` of the device; with `paths`, files come with
    /// every path naming them.
    pub fn owners(&self, range: ByteRange, paths: bool) -> FsResult<Vec<Owner>> {
        let layout = self.shared.superblock().layout;
        let result = failure::owners(
            &self.shared.metadata,
            &layout,
            self.shared.device.length(),
            range,
            paths,
        )
        .map_err(FsError::Failure);
        self.shared.observe("owners", result)
    }

    /// Waits until every failure notice queued so far is handled, up to
    /// `limit`; whether they all were.
    pub fn settle_failures(&self, limit: Duration) -> bool {
        self.shared.media.intake.settle(limit)
    }
}
