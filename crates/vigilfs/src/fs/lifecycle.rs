//! A mounted filesystem's life (mounting is `mounting`'s): freezing and
//! thawing, shutting down, the status a monitor reads, and unmounting.
//!
//! Freeze and unmount leave the same thing ([`Shared::make_clean`]): every
//! dirty page written back, every dirty b-tree node written so no journal
//! pin remains but the roots record, and the superblock marked clean with
//! the error record. Shutdown stops all writing at once and sends the
//! terminal SHUTDOWN event; unmount sends UNMOUNT. Dropping a
//! `Filesystem` without unmounting stops the thread and writes nothing
//! more: like a power cut for what was not yet written back.

use errseq::Errno;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use fserror::Subtypes;

use super::background::Background;
use super::events::{EventLog, EventLogStatus, Notice};
use super::health::{seconds_now, Detail, Incident};
use super::media::MediaStatus;
use super::read_write::ReadOnlyMount;
use super::settings::{Settings, SettingsChange};
use super::{Filesystem, FsError, FsResult, LifeState, Shared};
use crate::alloc::AllocatorStatus;
use crate::device::BlockDevice;
use crate::format::event_log::TEXT_CAPACITY;
use crate::format::{write_superblocks, ErrorKind, ErrorRecord, FsState};
use crate::inode::FileError;
use crate::journal::JournalStatus;
use crate::writeback::bytes_of_pages;

/// Lost metadata changes named one by one when writing stops (the rest
/// are counted in one more report).
const LOST_CHANGES_NAMED: usize = 16;

/// The longest start of `text` that fits `bytes` bytes, cut at a
/// character boundary.
fn cut_to(text: &str, bytes: usize) -> String {
    let mut end = text.len().min(bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// A monitor's view of the filesystem; reading it consumes no error.
#[derive(Debug, Clone)]
pub struct Status {
    /// Running, frozen, read-only or shut down.
    pub state: LifeState,
    /// The settings in force (the `errors=` policy, cache and dirty
    /// limits, writeback interval), as mounted or changed since.
    pub settings: Settings,
    /// Whether this mount had to replay the journal (an unclean stop).
    pub recovered: bool,
    /// Orphans deleted at mount (or when a read-only mount was made
    /// writable).
    pub orphans_purged: usize,
    /// Free space.
    pub space: AllocatorStatus,
    /// Blocks in the data region.
    pub total_blocks: u64,
    /// Dirty data not yet written back, bytes.
    pub dirty_bytes: u64,
    /// Cached data, bytes.
    pub cached_bytes: u64,
    /// Inodes whose data-path state is kept in memory.
    pub cached_inodes: u64,
    /// The journal. After a freeze or unmount its one pin is the b-tree
    /// roots record, which is how mount finds the trees.
    pub journal: JournalStatus,
    /// Dirty b-tree nodes (each holds a journal pin).
    pub dirty_nodes: usize,
    /// The latest writeback error of the filesystem this mount, if any
    /// (read with errseq peek: it stays reportable).
    pub writeback_error: Option<i32>,
    /// Whether a syncfs has reported that error to anyone. Until one does,
    /// the next syncfs gets it; after, only descriptors that were open
    /// before it and have not run syncfs since. (An fsync reports its own
    /// file's errors, through the file's cursor.)
    pub writeback_error_reported: bool,
    /// Files holding data lost because the kernel's write-back of a shared
    /// mapping of it was refused (a full filesystem), and the bytes lost:
    /// reads of them fail, and fsyncs, until they are written again.
    /// Known to this mount only.
    pub lost_mapped_files: u64,
    /// See `lost_mapped_files`.
    pub lost_mapped_bytes: u64,
    /// Errors this filesystem ever recorded (persisted in the superblock).
    pub error_record: ErrorRecord,
    /// Open file handles.
    pub open_files: usize,
    /// Superblock mount count.
    pub mount_count: u32,
    /// Media failures: the bad-block list, poisoned data, notices, scrub.
    pub media: MediaStatus,
    /// The event log.
    pub events: EventLogStatus,
    /// Bytes written back durably since the mount.
    pub writeback_bytes: u64,
    /// How long fsync took, this mount.
    pub fsync_latency: super::latency::LatencySnapshot,
}

impl Shared {
    /// Writes the superblock with `state` and the current error record.
    pub(super) fn write_superblock(&self, state: Option<FsState>) -> FsResult<()> {
        let unsaved = self.health.unsaved();
        let mut superblock = self.superblock();
        if let Some(state) = state {
            superblock.state = state;
            // A clean state names the newest journal entry, durable now
            // (checkpoint_clean flushed it): the next mount checks it is
            // still there. Not known unless durable.
            let journal = self.metadata.journal.status();
            superblock.clean_journal_seq = match state {
                FsState::Clean if journal.newest_entry_seq <= journal.durable_seq => {
                    journal.newest_entry_seq
                }
                FsState::Clean | FsState::Dirty => 0,
            };
        }
        superblock.error_record = self.health.record();
        superblock.last_write_time = seconds_now();
        write_superblocks(self.device.as_ref(), &mut superblock)
            .map_err(|error| FsError::Superblock(error.to_string()))?;
        if let Some((_, token)) = unsaved {
            self.health.saved(token);
        }
        Ok(())
    }

    /// Whether the image is as a read-only mount found it: nothing of it
    /// may be written (not even the error record). Not after a try to make
    /// the mount writable wrote its superblock.
    pub(super) fn image_untouched(&self) -> bool {
        self.mounted_read_only.load(Ordering::Acquire)
            && !self
                .read_only_mount
                .as_ref()
                .is_some_and(ReadOnlyMount::image_written)
    }

    /// Saves the error record if it changed (best effort: a failing device
    /// keeps it in memory, and the next attempt tries again). A failure is
    /// a metadata error, announced once per run of failures: until the
    /// copies can be written, the record only the event log backs is all
    /// a crash would leave, and an operator must hear of it while the
    /// filesystem still runs, not at the unmount.
    pub(super) fn save_error_record(&self) {
        if self.health.unsaved().is_none() || self.image_untouched() {
            return;
        }
        match self.write_superblock(None) {
            Ok(()) => self
                .superblock_failure_announced
                .store(false, Ordering::Release),
            Err(error) => {
                if !self
                    .superblock_failure_announced
                    .swap(true, Ordering::AcqRel)
                {
                    self.health.report(&Incident {
                        kind: ErrorKind::Metadata,
                        errno: error.errno(),
                        inode: None,
                        range: None,
                        block: None,
                        origin: "superblock write failed: error record not saved",
                    });
                }
            }
        }
    }

    /// Shutdown: optionally write back and flush first, then refuse all
    /// writing, send the terminal event and save the error record.
    pub(super) fn shut_down_now(&self, why: String, flush: bool) {
        if flush && matches!(self.gate.state(), LifeState::Running) {
            // Failures are reported by the data path's listener.
            let _ = self.flush_all();
        }
        if self.gate.shut_down(why.clone()) {
            self.stop_writing();
            self.save_error_record();
            self.health.shut_down(&why);
        }
    }

    fn lock_freezes_ended(&self) -> std::sync::MutexGuard<'_, bool> {
        self.freezes_ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes the orphans whose last release came during a freeze (those
    /// still orphans and closed): the thaw lets writing resume.
    pub(super) fn purge_deferred_orphans(&self) {
        let deferred = std::mem::take(
            &mut *self
                .deferred_orphans
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut left = Vec::new();
        for ino in deferred {
            let mut closing = self.released_space.closing();
            let result = self.namespace.purge_orphan(ino).map_err(FsError::from);
            match self.observe("release", result) {
                Ok(true) => {
                    self.files.forget(ino);
                    closing.deleted_an_orphan();
                }
                Ok(false) => {}
                // Tried again at the next writeback round.
                Err(error) if error.errno() == libc::ENOSPC => left.push(ino),
                // The orphan record stays: the next mount deletes it.
                Err(_) => {}
            }
        }
        self.defer_orphans(left);
    }

    /// Orphans to delete later: after a thaw, or at the next writeback
    /// round when their deletion found no space.
    pub(super) fn defer_orphans(&self, orphans: Vec<u64>) {
        if orphans.is_empty() {
            return;
        }
        self.deferred_orphans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(orphans);
    }

    /// Stops every write to the device (but the superblock's), lets the
    /// writebacks in flight land (they fail from now on, or were durable
    /// before), and reports what will never reach the disk: after a
    /// shutdown, or when the `errors=remount-ro` policy acts.
    pub(super) fn stop_writing(&self) {
        // Writes stop once (errors=, then a shutdown): what was left
        // unwritten is lost, and reported, once.
        if self.writes_stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.device.stop();
        self.files.settle();
        self.report_unwritten("not written: writes stopped");
        self.report_lost_changes();
    }

    /// Reports the metadata changes whose journal entry was never written
    /// (the writes stopped first): they are gone, as surely as the pages
    /// [`Shared::report_unwritten`] names. One journal error marked data
    /// lost per change, naming its inode and operation, the first
    /// [`LOST_CHANGES_NAMED`] of them; one more for the rest. Changes in
    /// entries written but not flushed may still be on the device, and
    /// are not reported (as written pages are not).
    fn report_lost_changes(&self) {
        let journal = self.metadata.journal.status();
        let (pending, omitted) = self.changes.pending(journal.durable_seq);
        let lost: Vec<_> = pending
            .into_iter()
            .filter(|change| change.seq > journal.written_seq)
            .collect();
        let report = |ino: Option<u64>, origin: &str| {
            self.health.report_with(
                &Incident {
                    kind: ErrorKind::Journal,
                    errno: libc::EIO,
                    inode: ino.map(|ino| (ino, self.generation_of(ino))),
                    range: None,
                    block: None,
                    origin,
                },
                &Detail {
                    subtypes: Subtypes::DATA_LOST,
                    ..Detail::default()
                },
            );
        };
        for change in lost.iter().take(LOST_CHANGES_NAMED) {
            let prefix = format!("not durable, lost: {}", change.operation);
            // What fits an event's text: a rename's two names share it.
            let room = TEXT_CAPACITY.saturating_sub(prefix.len() + 1);
            let name = |entry: &Option<(u64, Vec<u8>)>, bytes: usize| {
                entry
                    .as_ref()
                    .map(|(_, name)| cut_to(&String::from_utf8_lossy(name), bytes))
            };
            let origin = match (
                name(&change.entry, (room / 2).saturating_sub(2)),
                &change.new_entry,
            ) {
                (Some(old), Some(_)) => {
                    let rest = room.saturating_sub(old.len() + " -> ".len());
                    let new = name(&change.new_entry, rest).unwrap_or_default();
                    format!("{prefix} {old} -> {new}")
                }
                _ => match name(&change.new_entry, room).or(name(&change.entry, room)) {
                    Some(name) => format!("{prefix} {name}"),
                    None => prefix,
                },
            };
            report(change.ino, &origin);
        }
        let rest = (lost.len().saturating_sub(LOST_CHANGES_NAMED)) as u64
            + if lost.is_empty() { 0 } else { omitted };
        if rest > 0 {
            report(None, &format!("not durable, lost: {rest} more changes"));
        }
    }

    /// Reports every page that will never reach the disk (the filesystem
    /// was shut down or made read-only with data not written back, or the
    /// mount ends with writeback failing): one event and one error-record
    /// entry per inode, with its range; `why` is their origin. Pages
    /// written with their journal entry before a flush failed are not
    /// among them: their writeback failure was reported when it happened,
    /// and a later flush may still make them durable.
    fn report_unwritten(&self, why: &str) {
        for unwritten in self.files.unwritten() {
            let range = match unwritten.never_written {
                Some((first, last)) => Some(bytes_of_pages(first, last, unwritten.size)),
                // Lost data was reported when the kernel's write-back of
                // it was refused.
                None if unwritten.pages > 0 || !unwritten.lost.is_empty() => continue,
                None => None,
            };
            let errno = self.unwritten_errno(unwritten.ino);
            self.report_lost_data(unwritten.ino, range, errno, why);
        }
    }

    /// The cause the writeback of `ino` last failed with (a full
    /// filesystem's ENOSPC), else EIO (review 31: the loss at unmount
    /// said EIO after every fsync had said ENOSPC).
    fn unwritten_errno(&self, ino: u64) -> i32 {
        match self.files.peek_error(ino) {
            Err(FileError::Writeback(errno)) => errno.get(),
            _ => libc::EIO,
        }
    }

    /// Records the pages an unmount ends without as lost data (see
    /// `crate::inode::file::lost`), so the next mount does not read the
    /// older bytes the device holds there as the file's, and its next
    /// opener hears of the loss (review 47: after the remount the file
    /// read its old contents, and every fsync and `vigilfs sync` said 0,
    /// though nobody had heard of the failure). A recording that fails is
    /// an error of its own; the loss's event was told already.
    fn record_unwritten_as_lost(&self) {
        for unwritten in self.files.unwritten() {
            if unwritten.never_written.is_none() {
                continue;
            }
            let errno = self.unwritten_errno(unwritten.ino);
            let recorded = self
                .files
                .record_never_written(unwritten.ino, errno)
                .map_err(FsError::File);
            let _ = self.observe_at("unmount: recording lost data", unwritten.ino, recorded);
        }
    }

    /// Data of `ino` (`range`: offset and length in the file) that will
    /// never reach the disk, for `errno`: a writeback error event marked
    /// data lost, and the error record.
    pub(super) fn report_lost_data(
        &self,
        ino: u64,
        range: Option<(u64, u64)>,
        errno: i32,
        origin: &str,
    ) {
        self.health.report_with(
            &Incident {
                kind: ErrorKind::Writeback,
                errno,
                inode: Some((ino, self.generation_of(ino))),
                range,
                block: None,
                origin,
            },
            &Detail {
                subtypes: Subtypes::DATA_LOST,
                ..Detail::default()
            },
        );
    }

    /// Records that unmount could not make the filesystem clean (the next
    /// mount replays the journal): an error event and a count, so the
    /// UNMOUNT record's error count includes it (it said "0 errors" after
    /// a failed checkpoint). Writeback failures were told by the data path.
    fn report_unclean_unmount(&self, error: &FsError) {
        if matches!(error, FsError::File(FileError::Writeback(_))) {
            return;
        }
        let kind = match error {
            FsError::File(FileError::Journal(_)) => ErrorKind::Journal,
            _ if error.is_metadata_failure() => ErrorKind::Metadata,
            _ => ErrorKind::Other,
        };
        self.health.report(&Incident {
            kind,
            errno: error.errno(),
            inode: None,
            range: None,
            block: None,
            origin: "unmount: not made clean",
        });
        self.save_error_record();
    }

    /// Writes back every dirty page and makes every change durable (no
    /// error cursor is consumed: nobody is told of an error here who
    /// would not be told anyway), and records that on the device (the
    /// journal settled): what a read-only remount needs, so the
    /// background thread finds nothing left to record, and the image
    /// stays as it is.
    pub(super) fn make_durable(&self) -> FsResult<()> {
        self.write_back_all()?;
        self.metadata
            .journal
            .settle()
            .map_err(|error| FsError::File(FileError::Journal(error)))
    }

    /// Writes back every dirty page; the first writeback error, if any.
    /// Writes back all data, the b-tree nodes and the journal, as far as
    /// the device lets them; the first failure's errno.
    pub(super) fn flush_all(&self) -> Result<(), Errno> {
        let data = self.files.writeback_all().first_error;
        let trees = self.metadata.trees.sync().err().map(|_| Errno::EIO);
        let journal = self.metadata.journal.flush().err().map(|_| Errno::EIO);
        match data.or(trees).or(journal) {
            Some(errno) => Err(errno),
            None => Ok(()),
        }
    }

    fn write_back_all(&self) -> FsResult<()> {
        match self.files.writeback_all().first_error {
            Some(errno) => Err(FileError::Writeback(errno).into()),
            None => Ok(()),
        }
    }

    /// What a freeze leaves: all dirty data written back, and then what
    /// [`Shared::checkpoint_clean`] does. Data that cannot be written fails
    /// the freeze. On a failure the error record is still saved if it can
    /// be.
    pub(super) fn make_clean(&self) -> FsResult<()> {
        let outcome = self.write_back_all().and_then(|()| self.checkpoint_clean());
        if outcome.is_err() {
            self.save_error_record();
        }
        outcome
    }

    /// What an unmount leaves: as [`Shared::make_clean`], but data that
    /// cannot be written does not cost anyone else's changes. The mount
    /// ends, so those pages never will be written: they are reported lost
    /// (an event and the error record, per file), and the metadata —
    /// creates, renames, the other files' data — is still made durable and
    /// the image clean. Returns the writeback error, if any.
    pub(super) fn make_clean_at_unmount(&self) -> FsResult<()> {
        let written = self.write_back_all();
        if written.is_err() {
            self.files.settle();
            self.report_unwritten("not written: writeback failed, and the mount ended");
            self.record_unwritten_as_lost();
        }
        let outcome = self.checkpoint_clean();
        if outcome.is_err() {
            self.save_error_record();
        }
        outcome.and(written)
    }

    /// Every dirty b-tree node written (no journal pin but the roots
    /// record), the superblock marked clean with the error record.
    fn checkpoint_clean(&self) -> FsResult<()> {
        self.metadata
            .trees
            .sync()
            .map_err(|error| FsError::File(FileError::Btree(error)))?;
        self.metadata
            .journal
            .reclaim_all()
            .map_err(|error| FsError::File(FileError::Journal(error)))?;
        self.write_superblock(Some(FsState::Clean))
    }
}

impl Filesystem {
    /// The trees this read-only mount could not read and salvaged around,
    /// each with why (operations on them fail with EIO).
    pub fn unreadable_trees(&self) -> Vec<String> {
        self.shared
            .metadata
            .trees
            .unreadable_trees()
            .into_iter()
            .map(|(_, error)| error.to_string())
            .collect()
    }

    /// Whether this mount found the filesystem not cleanly unmounted (and
    /// recovered it from the journal).
    pub fn recovered(&self) -> bool {
        self.shared.recovered
    }

    /// The journal entries this mount's recovery cut off: written after
    /// the last completed flush, and torn by the crash or damaged since
    /// (what they changed was never acknowledged, and is lost).
    pub fn entries_cut_off(&self) -> &[u64] {
        &self.shared.cut_off_at_recovery
    }

    /// The event source FS_ERROR listeners subscribe to.
    pub fn events(&self) -> &fserror::ErrorSource {
        self.shared.health.source()
    }

    /// Freezes the filesystem: new writers wait, the writers inside
    /// finish, all dirty data is written back, the journal is flushed and
    /// every pin released, the superblock is marked clean. Reads go on.
    pub fn freeze(&self) -> FsResult<()> {
        let shared = &self.shared;
        if *shared.lock_freezes_ended() {
            return Err(FsError::Invalid("the filesystem is being unmounted"));
        }
        shared.gate.begin_freeze()?;
        let outcome = shared.make_clean();
        let outcome = shared.observe("freeze", outcome);
        let ended = shared.lock_freezes_ended();
        if outcome.is_ok() {
            // The frozen image holds the FREEZE record. The event log goes
            // on being written: reads still fail during a freeze, and their
            // errors must outlive a mount process that dies before the
            // thaw (the next mount counts them from the log). A copy of
            // the image taken meanwhile is consistent but for the newest
            // events, which a torn record there shows as lost.
            shared.health.notice(&Notice::Freeze);
            let _ = shared.health.log().persist();
        }
        shared.gate.end_freeze(outcome.is_ok());
        if outcome.is_err() {
            // Abandoned: what waited for the thaw goes on now.
            shared.purge_deferred_orphans();
        }
        if outcome.is_ok() && *ended {
            // The unmount came while this freeze was writing back: it
            // stands for no one, and would keep the unmount waiting.
            drop(ended);
            let _ = self.thaw();
            return Err(FsError::Invalid(
                "the filesystem is being unmounted: thawed at once",
            ));
        }
        outcome
    }

    /// Whether the transport (the kernel's mount) is read-only, as the
    /// last [`SettingsChange::read_only`] said.
    pub fn transport_read_only(&self) -> bool {
        self.shared.transport_read_only.load(Ordering::Acquire)
    }

    /// An unmount is coming (the mount process got a signal): a frozen
    /// filesystem is thawed, a freeze in progress ends thawed, and later
    /// ones are refused, so writers waiting for a thaw finish and close
    /// their files, which a busy (lazily detached) mount waits for.
    /// Returns whether this thawed a freeze.
    pub fn end_freezes(&self) -> bool {
        let mut ended = self.shared.lock_freezes_ended();
        *ended = true;
        // A freeze still writing back decides under this lock, after it.
        let frozen = self.is_frozen();
        drop(ended);
        frozen && self.thaw().is_ok()
    }

    /// Thaws a frozen filesystem: the superblock is marked dirty again and
    /// the waiting writers go on.
    pub fn thaw(&self) -> FsResult<()> {
        if self.shared.gate.state() != LifeState::Frozen {
            return Err(FsError::Invalid("the filesystem is not frozen"));
        }
        let marked = self.shared.write_superblock(Some(FsState::Dirty));
        self.shared.gate.thaw()?;
        self.shared.health.notice(&Notice::Thaw);
        self.shared.purge_deferred_orphans();
        self.shared.observe("thaw", marked)
    }

    /// Shuts the filesystem down: with `flush`, dirty data and the journal
    /// are written first (best effort); then nothing more is written,
    /// writers get `EIO`, listeners get the SHUTDOWN event.
    ///
    /// Returns the flush's failure, if it had one: what it could not
    /// write is lost (the events name it), and the reason says so (review
    /// 33: "after flushing", exit 0, though the data was lost).
    pub fn shutdown(&self, flush: bool) -> FsResult<()> {
        let shared = &self.shared;
        let (why, flushed) = match (flush, shared.gate.state()) {
            // Its writes had stopped: nothing could be flushed.
            (true, LifeState::ReadOnly(_)) => (
                "shut down (read-only before: nothing flushed)".to_string(),
                Ok(()),
            ),
            (true, LifeState::Running) => match shared.flush_all() {
                Ok(()) => ("shut down (after flushing)".to_string(), Ok(())),
                Err(errno) => (
                    format!(
                        "shut down (the flush failed with {}: what it could not write is lost)",
                        crate::device::Errno(errno.get())
                    ),
                    Err(FileError::Writeback(errno).into()),
                ),
            },
            (true, _) => ("shut down (after flushing)".to_string(), Ok(())),
            (false, _) => ("shut down (without flushing)".to_string(), Ok(())),
        };
        shared.shut_down_now(why, false);
        flushed
    }

    /// Changes the settings a remount may change (see `settings.rs`);
    /// the rest of the mount stays as it was. A change is validated whole
    /// first: a refused one changes nothing. Allowed in every state (the
    /// policy matters most to a filesystem that is failing): a new
    /// `errors=` policy acts at once on a journal that has already failed.
    pub fn reconfigure(&self, change: &SettingsChange) -> FsResult<()> {
        let shared = &self.shared;
        change.validate()?;
        // A read-only remount writes everything back and makes it durable
        // before it returns, even told again (the mount process follows
        // the mount table, and a helper's remount tells it too). Told
        // again, the flag is no change and makes no event. Taken at once
        // (a swap), so of two callers at the same time one makes the
        // change and the other is told again.
        let read_only_asked = change.read_only == Some(true);
        let told_again = change.read_only.filter(|&read_only| {
            shared.transport_read_only.swap(read_only, Ordering::AcqRel) == read_only
        });
        let change = &SettingsChange {
            read_only: change.read_only.filter(|_| told_again.is_none()),
            ..change.clone()
        };
        let changing = shared.settings.change(change)?;
        if let Some(bytes) = change.cache_bytes {
            shared.files.set_cache_budget(bytes);
        }
        drop(changing);
        if change.writeback_interval.is_some() || change.dirty_limit_bytes.is_some() {
            // The background thread waits out the old interval otherwise;
            // a lower dirty limit may already be exceeded.
            if let Some(background) = self.background.get() {
                background.kick();
            }
        }
        if !change.is_empty() {
            shared.health.notice(&Notice::Settings {
                change: &change.summary(TEXT_CAPACITY),
                read_only: change.read_only,
            });
        }
        if change.read_only == Some(false) && shared.gate.state() == LifeState::Running {
            // Dirty again before anything is written (the read-only
            // remount marked it clean). Frozen, the image stays as the
            // freeze left it: the thaw marks it.
            let marked = shared.write_superblock(Some(FsState::Dirty));
            shared.observe("remount read-write", marked)?;
        }
        if change.read_only == Some(false) {
            shared.purge_deferred_orphans();
            // What media failures marked while the transport was read-only.
            shared.record_held_marks();
        }
        let may_write = matches!(shared.gate.state(), LifeState::Running | LifeState::Frozen);
        if read_only_asked && may_write {
            // Durable, and clean, as Linux's filesystems leave a
            // read-only remount: every node written, the journal
            // reclaimed, the superblock marked clean, so a crash (or a
            // copy of the image) before the unmount needs no replay.
            // Frozen, it is clean already and nothing may be written; a
            // daemon that may not write has nothing more to make durable
            // (what it could not write was reported then).
            let frozen = shared.gate.state() == LifeState::Frozen;
            let made_durable = shared.make_durable().and_then(|()| match frozen {
                true => Ok(()),
                false => shared.checkpoint_clean(),
            });
            shared.observe("remount read-only", made_durable)?;
            // The clean image holds the SETTINGS record that says so, as
            // a frozen one holds its FREEZE: the log's last word before a
            // crash is no missing UNMOUNT (review 52).
            let _ = shared.health.log().persist();
        }
        if change.errors.is_some() {
            // A failed journal stays failed and was acted on once, under
            // the policy of that moment; no later operation brings it up
            // again. The new policy decides what its standing failure
            // does now (`remount-ro` stops writers, `panic` aborts).
            if let Some(error) = shared.metadata.journal.error() {
                shared.apply_errors_policy(format!("the journal's standing failure ({error})"));
            }
        }
        Ok(())
    }

    /// A monitor's view. Consumes no error.
    pub fn status(&self) -> Status {
        let shared = &self.shared;
        let stats = shared.files.cache_stats();
        let (lost_mapped_files, lost_mapped_bytes) = shared.files.lost_mapped();
        let superblock = shared.superblock();
        let total_blocks = superblock.layout.main.blocks;
        let mount_count = superblock.mount_count;
        drop(superblock);
        let kept_read_only = shared
            .read_only_mount
            .as_ref()
            .and_then(|mount| mount.kept_read_only());
        Status {
            state: match (shared.gate.state(), kept_read_only) {
                (LifeState::ReadOnly(mounted), Some(why)) => {
                    LifeState::ReadOnly(format!("{mounted}; {why}"))
                }
                (state, _) => state,
            },
            settings: shared.settings.snapshot(),
            recovered: shared.recovered,
            orphans_purged: shared.orphans_purged.load(Ordering::Acquire),
            space: shared.metadata.allocator.status(),
            total_blocks,
            dirty_bytes: stats.dirty_bytes,
            cached_bytes: stats.cached_bytes,
            cached_inodes: stats.inodes,
            journal: shared.metadata.journal.status(),
            dirty_nodes: shared.metadata.trees.status().dirty_nodes,
            writeback_error: shared.files.fs_peek().err().map(|error| error.errno()),
            writeback_error_reported: shared.files.fs_error_reported(),
            lost_mapped_files,
            lost_mapped_bytes,
            error_record: shared.health.record(),
            open_files: shared.handles.open_files(),
            mount_count,
            media: shared.media_status(),
            events: shared.health.log().status(),
            writeback_bytes: shared.files.pages_written() * 4096,
            fsync_latency: shared.fsync_latency.snapshot(),
        }
    }

    /// The device's length in bytes: where device ranges (fault rules,
    /// reported failures) must end.
    pub fn device_length(&self) -> u64 {
        self.shared.device.length()
    }

    /// The event log: records to read, and where listeners wait.
    pub fn event_log(&self) -> &Arc<EventLog> {
        self.shared.health.log()
    }

    /// Records that fault rules changed (the transport that owns the fault
    /// plan calls it): `change` says what, `active` how many rules are on.
    pub fn note_fault_rules(&self, change: &str, active: u64) {
        self.shared
            .health
            .notice(&Notice::Faults { change, active });
    }

    /// Whether the filesystem is frozen now (a transport keeps requests
    /// that would wait at the write gate off its last free threads).
    pub fn is_frozen(&self) -> bool {
        self.shared.gate.state() == LifeState::Frozen
    }

    /// Unmounts: stops the background thread, writes everything back,
    /// releases every journal pin and marks the superblock clean (unless
    /// the filesystem was shut down or made read-only by an error, which
    /// leaves it for the next mount to recover). Errors are returned after
    /// everything possible was done.
    pub fn unmount(mut self) -> FsResult<()> {
        self.shared.health.log().release_held();
        let thread_result = self.background.take().map_or(Ok(()), Background::stop);
        let shared = &self.shared;
        if shared.gate.state() == LifeState::Frozen && shared.gate.thaw().is_ok() {
            shared.purge_deferred_orphans();
        }
        // Failures queued are handled before the filesystem is made clean,
        // so what they record lands with it.
        self.stop_media_threads();
        // Whoever looked inodes up is gone: orphans their lookups kept are
        // deleted now, not by the next mount.
        for ino in self.shared.handles.looked_up_inodes() {
            self.forget(ino, u64::MAX);
        }
        let shared = &self.shared;
        let result = match shared.gate.state() {
            LifeState::Running => {
                // The transport's mount is gone, and the unmount writes
                // anyway: what media failures marked while it was
                // read-only (`remount,ro`) is recorded with the rest.
                shared.transport_read_only.store(false, Ordering::Release);
                shared.record_held_marks();
                let made = shared.make_clean_at_unmount();
                if let Err(error) = &made {
                    shared.report_unclean_unmount(error);
                }
                made
            }
            LifeState::ReadOnly(_) if shared.image_untouched() => Ok(()),
            // Shut down or read-only after an error: what was not written
            // was reported when writing stopped.
            _ => {
                shared.save_error_record();
                Ok(())
            }
        };
        shared.health.unmounted();
        if let Some(events) = self.events.take() {
            events.stop();
        }
        thread_result.and(result)
    }
}

impl Filesystem {
    fn stop_media_threads(&mut self) {
        self.shared.media.stopping.store(true, Ordering::Release);
        if let Some(scrub) = self.background_scrub.take() {
            scrub.stop(&self.shared);
        }
        if let Some(worker) = self.failures.take() {
            worker.stop(&self.shared);
        }
    }
}

impl Drop for Filesystem {
    fn drop(&mut self) {
        if let Some(background) = self.background.take() {
            let _ = background.stop();
        }
        self.stop_media_threads();
        // Like a power cut: the log writes nothing more either.
        if let Some(events) = self.events.take() {
            events.abandon();
        }
    }
}
