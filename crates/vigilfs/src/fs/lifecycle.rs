//! A mount's life: mounting (superblock, metadata, orphans, the writeback
//! thread), freezing and thawing, shutting down, the status a monitor
//! reads, and unmounting.
//!
//! Freeze and unmount leave the same thing ([`Shared::make_clean`]): every
//! dirty page written back, every dirty b-tree node written so no journal
//! pin remains but the roots record, and the superblock marked clean with
//! the error record. Shutdown stops all writing at once and sends the
//! terminal SHUTDOWN event; unmount sends UNMOUNT. Dropping a
//! `Filesystem` without unmounting stops the thread and writes nothing
//! more: like a power cut for what was not yet written back.

use errseq::Errno;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use fserror::Subtypes;

use super::background::Background;
use super::events::{EventLog, EventLogEnd, EventLogStatus, Notice, Writer};
use super::faults::Faults;
use super::gate::Gate;
use super::handles::Handles;
use super::health::{seconds_now, Detail, Health, Incident};
use super::media::{Media, MediaStatus, Worker};
use super::read_write::{finish_recovery, record_writable_mount, ReadOnlyMount};
use super::scrubbing::BackgroundScrub;
use super::settings::{LiveSettings, Settings, SettingsChange};
use super::unsynced::Changes;
use super::{Filesystem, FsError, FsResult, LifeState, Shared};
use crate::alloc::AllocatorStatus;
use crate::btree::{BtreeError, BtreesOptions, TreeId};
use crate::device::{BlockDevice, FaultPlan, FileFaults, OverlayDevice, StoppableDevice};
use crate::failure::{Intake, DEFAULT_INTAKE_CAPACITY};
use crate::format::event_log::TEXT_CAPACITY;
use crate::format::{
    read_superblock, read_superblock_copy, torn_by_one_crash, write_superblocks, ErrorKind,
    ErrorRecord, ErrorsPolicy, Features, FormatError, FsState, SuperblockCopy,
};
use crate::inode::{FileError, FileType, Files, FsyncErrors, Namespace, Xattrs, ROOT_INO};
use crate::journal::{JournalOptions, JournalStatus};
use crate::metadata::{Metadata, OpenError};
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

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Refuse every change (`ro`). The journal is still replayed.
    pub read_only: bool,
    /// The `errors=` policy; `None` uses the one mkfs recorded.
    pub errors: Option<ErrorsPolicy>,
    /// How often the background thread writes back dirty data.
    pub writeback_interval: Duration,
    /// Dirty data above which writers wake the background thread; at twice
    /// this, a writer writes back itself before returning.
    pub dirty_limit_bytes: u64,
    /// Clean cached data above which the oldest clean pages are evicted.
    pub cache_bytes: u64,
    /// What fsync reports while writeback keeps failing: until the data
    /// is durable (the default) or once per open file, as Linux.
    pub fsync_errors: FsyncErrors,
    /// Check permissions with Linux's rules (a transport that lets the
    /// kernel check them may turn this off; checking twice is harmless).
    pub check_permissions: bool,
    /// The fault plan the device below follows, if any: rules aimed at
    /// files and operations share its ids and its log, and its data rules
    /// learn from the mount which file a request is for.
    pub fault_plan: Option<Arc<FaultPlan>>,
    /// Scrub in the background this often (`scrub_interval=`); `None`:
    /// only when asked.
    pub scrub_interval: Option<Duration>,
    /// Most bytes per second the background scrub reads; `None`: as fast
    /// as foreground I/O allows.
    pub scrub_rate: Option<u64>,
    /// Failed device ranges reported before the mount (a storage array's
    /// log, a scan daemon's pending reports): handed to the intake before
    /// the journal is replayed, handled once recovery completes, like a
    /// failure the device reports meanwhile.
    pub failures: Vec<(crate::device::ByteRange, crate::failure::Origin)>,
    /// When a read updates a file's access time (`relatime`, the
    /// default; `strictatime`; `noatime`).
    pub atime: AtimeUpdates,
    /// Whether listing a directory updates its access time as `atime`
    /// says for reads (`nodiratime` turns it off).
    pub directory_atime: bool,
    /// Where the event log of the engine a simulated power cut ended
    /// stood (the crash lab knows, its process lives on): the log resumes
    /// right after it, and what the cut lost of the log is counted
    /// exactly, instead of ids skipped and a loss of unknown size.
    pub events_before_power_cut: Option<EventLogEnd>,
}

/// When reading a file updates its access time. Through FUSE the kernel
/// leaves access times to the filesystem, so the mount's atime options
/// arrive here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AtimeUpdates {
    /// `relatime`: when the access time is not after the modification or
    /// change time, or is a day old.
    #[default]
    Relative,
    /// `strictatime`: on every read.
    Always,
    /// `noatime`: never.
    Never,
}

impl AtimeUpdates {
    /// The mount option that asks for it.
    pub fn name(self) -> &'static str {
        match self {
            AtimeUpdates::Relative => "relatime",
            AtimeUpdates::Always => "strictatime",
            AtimeUpdates::Never => "noatime",
        }
    }
}

impl std::str::FromStr for AtimeUpdates {
    type Err = String;

    /// The mount options' words: `relatime` (and `atime`,
    /// `nostrictatime`), `strictatime` (and `norelatime`), `noatime`.
    fn from_str(word: &str) -> Result<AtimeUpdates, String> {
        match word {
            "relatime" | "atime" | "nostrictatime" => Ok(AtimeUpdates::Relative),
            "strictatime" | "norelatime" => Ok(AtimeUpdates::Always),
            "noatime" => Ok(AtimeUpdates::Never),
            _ => Err(format!(
                "{word:?} is not an access-time option (relatime, strictatime, noatime)"
            )),
        }
    }
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            read_only: false,
            errors: None,
            writeback_interval: Duration::from_secs(5),
            dirty_limit_bytes: 64 << 20,
            cache_bytes: 256 << 20,
            fsync_errors: FsyncErrors::UntilDurable,
            check_permissions: true,
            fault_plan: None,
            scrub_interval: None,
            scrub_rate: None,
            failures: Vec::new(),
            atime: AtimeUpdates::default(),
            directory_atime: true,
            events_before_power_cut: None,
        }
    }
}

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// No valid superblock (the format error says which copy failed how).
    #[error("{0}")]
    Superblock(#[from] FormatError),
    /// The journal or the b-trees could not be opened.
    #[error("opening the metadata: {0}")]
    Metadata(#[from] OpenError),
    /// The data path refused the filesystem (e.g. its block size).
    #[error("{0}")]
    Files(#[from] FileError),
    /// Deleting the orphans a crash left failed.
    #[error("deleting orphans: {0}")]
    Orphans(#[from] crate::inode::NamespaceError),
    /// Starting the writeback, failure or scrub thread failed.
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
    /// A failure reported with the mount options names no device bytes.
    #[error("a failure reported at mount: {0}")]
    ReportedFailure(#[from] crate::failure::FailureError),
    /// The root directory's record is missing, damaged or not a
    /// directory: nothing could be reached through the mount.
    #[error(
        "the root directory (inode {ROOT_INO}) {0}: `vigilfs fsck` tells what else is damaged"
    )]
    RootDirectory(String),
    /// A node of a tree a read-only mount can do without could not be
    /// read, on a mount that would write: a read-only one salvages around
    /// it.
    #[error(
        "opening the metadata: {0}; a read-only mount (`-o ro`) reads the rest: \
         operations on that tree fail with EIO, and other files can be copied out"
    )]
    UnreadableTree(BtreeError),
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
            // The cause the file's writeback last failed with (a full
            // filesystem's ENOSPC), else EIO (review 31: the loss at
            // unmount said EIO after every fsync had said ENOSPC).
            let errno = match self.files.peek_error(unwritten.ino) {
                Err(FileError::Writeback(errno)) => errno.get(),
                _ => libc::EIO,
            };
            self.report_lost_data(unwritten.ino, range, errno, why);
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
    /// Mounts the filesystem on `device`, which [`make_filesystem`]
    /// formatted (see the crate's example): the superblock is validated,
    /// the journal replayed, orphans left by a crash deleted, and the
    /// background threads started. A damaged or foreign device is a
    /// [`MountError`] saying what is wrong, never a panic.
    ///
    /// [`make_filesystem`]: crate::mkfs::make_filesystem
    pub fn mount(
        device: Arc<dyn BlockDevice>,
        mut options: MountOptions,
    ) -> Result<Filesystem, MountError> {
        let loaded = read_superblock(device.as_ref())?;
        let mut superblock = loaded.superblock;
        let unknown_ro_compat = superblock.features.requires_read_only();
        if unknown_ro_compat {
            options.read_only = true;
        }
        // A read-only mount never changes the image, yet recovery replays
        // the journal into the b-trees, and a large replay writes rebuilt
        // nodes out to stay inside the node cache's budget: those writes
        // stay in memory, over the image (as fsck's dry run does).
        let read_only_overlay = options
            .read_only
            .then(|| Arc::new(OverlayDevice::new(device.clone())));
        let device: Arc<dyn BlockDevice> = match &read_only_overlay {
            Some(overlay) => overlay.clone(),
            None => device,
        };
        let device = Arc::new(StoppableDevice::new(device));
        // Failures the device reports from now on — during journal replay
        // and recovery too — wait in the intake until the mount is ready.
        let intake = Intake::new(DEFAULT_INTAKE_CAPACITY);
        device.set_media_failure_callback(intake.device_callback());
        for (range, origin) in &options.failures {
            // Checked before anything is offered: a range no block of the
            // device is in would be dropped later, silently.
            crate::failure::check_range(*range, device.length())?;
            intake.offer(*range, origin.clone());
        }
        let recovered = superblock.state == FsState::Dirty;
        let writes: Arc<dyn BlockDevice> = device.clone();
        // The log opens first, so the MOUNT record (and the ids a crash
        // skipped) comes before anything recovery reports.
        let opened_log = EventLog::open(
            Arc::clone(&writes),
            &superblock,
            options.read_only,
            options.events_before_power_cut,
        );
        let durable_errors = opened_log.durable_errors;
        let log = Arc::new(opened_log.log);
        let mount_count = u64::from(superblock.mount_count) + u64::from(!options.read_only);
        log.record_mount(recovered, mount_count, opened_log.skipped);
        // A read-only mount salvages around a tree it can do without and
        // cannot read, so that one bad node does not hide every file.
        let tree_options = BtreesOptions {
            salvage: options.read_only,
            ..BtreesOptions::default()
        };
        // It also replays past an entry a lying disk lost, from the newest
        // whole chain before it, so that what is left can be read.
        let journal_options = JournalOptions {
            salvage: options.read_only,
            ..JournalOptions::for_filesystem(&superblock)
        };
        let metadata = match Metadata::open(
            Arc::clone(&writes),
            &superblock,
            journal_options,
            tree_options,
        ) {
            Ok(metadata) => Arc::new(metadata),
            // The hint only where a read-only mount reaches files: with
            // the names unreadable, none can be looked up.
            Err(OpenError::Btree(error @ BtreeError::CorruptNode { tree, .. }))
                if tree.salvageable() && tree != TreeId::Dirents && !options.read_only =>
            {
                return Err(MountError::UnreadableTree(error))
            }
            Err(error) => return Err(error.into()),
        };
        {
            // Events are durable no later than the next commit: its flush
            // covers what is written just before it.
            let log = Arc::downgrade(&log);
            metadata.journal.set_commit_companion(Box::new(move || {
                if let Some(log) = log.upgrade() {
                    log.write_for_commit();
                }
            }));
        }
        let files = Files::new(writes, &superblock, Arc::clone(&metadata))?;
        files.set_cache_budget(options.cache_bytes);
        files.set_fsync_errors(options.fsync_errors);
        let namespace = Namespace::new(Arc::clone(&metadata));
        match namespace.getattr(ROOT_INO) {
            Ok(root) if root.file_type() == FileType::Directory => {}
            Ok(root) => {
                return Err(MountError::RootDirectory(format!(
                    "is not a directory (its record says {:?})",
                    root.file_type()
                )))
            }
            Err(crate::inode::NamespaceError::NotFound) => {
                return Err(MountError::RootDirectory(
                    match metadata.recovery.acknowledged_lost {
                        Some((first, _)) => format!(
                            "is missing from what the journal could replay: entries from \
                             {first} on were flushed and are lost (the device dropped flushes)"
                        ),
                        // fsck calls an image with no inode at all clean:
                        // what a mkfs that died before its root leaves.
                        None => "is missing (a mkfs that did not finish leaves none: make the \
                                 filesystem again)"
                            .into(),
                    },
                ));
            }
            Err(error) => return Err(MountError::RootDirectory(format!("is damaged: {error}"))),
        }
        let xattrs = Xattrs::new(Arc::clone(&metadata));
        let (orphans_purged, orphans_left) = if options.read_only {
            (0, Vec::new())
        } else {
            // Recovery kept entries whose data claims the next recovery
            // would check again: record them durable before any block they
            // claim can be freed and reused (nothing is, read-only).
            metadata
                .journal
                .settle_claims()
                .map_err(|error| MountError::Metadata(error.into()))?;
            finish_recovery(&namespace, recovered.then_some(&*metadata.journal))?
        };
        // After the purge: a purged orphan's lost data went with it
        // (review 33: it was still counted after a power cut).
        files.load_lost_data();
        let errors_policy = options.errors.unwrap_or(superblock.errors_policy);
        let fsid = u64::from_le_bytes(superblock.uuid.0[..8].try_into().expect("8 bytes"));
        if recovered {
            log.record_notice(&Notice::Recovery {
                orphans: orphans_purged as u64,
            });
        }
        let mut error_record = superblock.error_record.clone();
        let (errors_total, error_records) = &durable_errors;
        error_record.catch_up_with_log(*errors_total, error_records);
        let health = Arc::new(Health::with_log(fsid, error_record, Arc::clone(&log)));
        for (tree, error) in metadata.trees.unreadable_trees() {
            // Salvaged around (read-only): counted and remembered at once,
            // not only when an operation meets it.
            let block = error.corrupt_block();
            let block_size = u64::from(superblock.layout.block_size);
            health.report(&Incident {
                kind: ErrorKind::Metadata,
                errno: libc::EIO,
                inode: None,
                range: block.map(|block| (block * block_size, block_size)),
                block,
                origin: &format!("{tree} b-tree unreadable: mounted read-only around it"),
            });
        }
        let journal_loss = |origin: &str| {
            health.report(&Incident {
                kind: ErrorKind::Journal,
                errno: libc::EIO,
                inode: None,
                range: None,
                block: None,
                origin,
            });
        };
        if let Some(&first) = metadata.recovery.unmet_claims.first() {
            // Entries on the device whose data did not match: written but
            // never flushed, or, if an fsync had acknowledged them and no
            // later entry recorded that, rotted since (README: the one
            // limit). Recovery cut them off; that must not pass in silence.
            // (The text fits an event's; the error record keeps its start.)
            journal_loss(&format!("recovery cut entries {first}+: data mismatch"));
        }
        if let Some((first, _)) = metadata.recovery.acknowledged_lost {
            // A read-only mount salvaged past entries a completed flush
            // had covered: acknowledged changes, from `first` on, are not
            // in what it shows.
            journal_loss(&format!(
                "flushed entries {first}+ lost; read-only from before"
            ));
        }
        if let Some((first, last)) = metadata.recovery.lost_since_clean {
            // Entries durable at the clean unmount, gone since: the medium
            // (or someone) damaged the journal. The mount goes on from the
            // entries before them (what they changed was written to the
            // b-trees before the unmount); the loss must not pass in silence.
            journal_loss(&format!(
                "journal entries {first}..={last} lost since the clean unmount"
            ));
        }
        // Superblock copies found damaged: a read-only mount cannot rewrite
        // them, and a scrub that finds one again has nothing new to say.
        let mut superblocks_known_bad: Vec<u64> = Vec::new();
        {
            // A copy found damaged after a clean stop is not a torn write:
            // the medium (or someone) changed it. The mount reads past it,
            // and its next write of that structure replaces it; reported
            // here so the damage is counted and remembered, not just healed.
            // After a crash, a copy whose checksum does not match may be
            // one the crash tore (sectors of its old and new contents: the
            // header sector, either one, is whole), so only other damage
            // (a wrong magic, version or field, which no torn write makes),
            // or mismatches no single crash makes, are reported then. The
            // backups are read only when the primary fails: a mount reads
            // them here, as fsck does.
            // An error about the block at device `offset`: the device
            // range keeps two copies' events apart.
            let block_size = u64::from(superblock.layout.block_size);
            let report_block = |kind: ErrorKind, offset: Option<u64>, origin: &str| {
                health.report(&Incident {
                    kind,
                    errno: libc::EIO,
                    inode: None,
                    range: offset.map(|offset| (offset, block_size)),
                    block: offset.map(|offset| offset / block_size),
                    origin,
                });
            };
            // Valid copies newer than the one in use: its last write failed
            // (the primary is written first, so no crash leaves it older).
            let mut newer: Vec<(SuperblockCopy, u64)> = Vec::new();
            let damaged: Vec<(SuperblockCopy, FormatError)> = SuperblockCopy::ALL
                .into_iter()
                .filter(|&copy| copy != loaded.source)
                .filter_map(|copy| {
                    let error = match loaded.rejected.iter().find(|found| found.copy == copy) {
                        Some(rejected) => rejected.error.clone(),
                        None => match read_superblock_copy(device.as_ref(), copy) {
                            Ok(other) => {
                                if other.write_sequence > superblock.write_sequence {
                                    newer.push((copy, other.write_sequence));
                                }
                                return None;
                            }
                            Err(error) => error,
                        },
                    };
                    Some((copy, error))
                })
                .collect();
            if let Some(&(copy, sequence)) = newer.iter().max_by_key(|(_, sequence)| *sequence) {
                // One error: the copy in use missed a write (the first
                // words are what the error record keeps).
                report_block(
                    ErrorKind::Metadata,
                    loaded.source.offset(superblock.layout.device_length),
                    &format!(
                        "stale {}: {copy} is newer (write {sequence} > {}), its last write failed",
                        loaded.source, superblock.write_sequence
                    ),
                );
            }
            let mismatched: Vec<SuperblockCopy> = damaged
                .iter()
                .filter(|(_, error)| matches!(error, FormatError::ChecksumMismatch { .. }))
                .map(|(copy, _)| *copy)
                .collect();
            let torn_may_pass = recovered && torn_by_one_crash(&mismatched);
            let damaged_superblocks = damaged.into_iter().filter_map(|(copy, error)| {
                let maybe_torn = mismatched.contains(&copy) && torn_may_pass;
                (!maybe_torn).then(|| {
                    let offset = copy.offset(superblock.layout.device_length);
                    (offset, format!("{copy}: {error}"))
                })
            });
            let damaged_headers = opened_log
                .damaged_headers
                .iter()
                .filter(|_| !recovered)
                .map(|damage| (Some(damage.device_offset), damage.why.clone()));
            let damaged_superblocks = damaged_superblocks.inspect(|(offset, _)| {
                superblocks_known_bad.extend(*offset);
            });
            for (offset, why) in damaged_superblocks.chain(damaged_headers) {
                report_block(ErrorKind::Checksum, offset, &format!("mount found {why}"));
            }
        }
        let faults = Arc::new(Faults::new(options.fault_plan.clone()));
        if let Some(plan) = &options.fault_plan {
            plan.set_file_faults(Arc::clone(&faults) as Arc<dyn FileFaults>);
        }
        {
            // Every failed writeback attempt, a retry's too, is told to the
            // event stream and the error record; the data path's error words
            // tell each loss once. A file's first failure is its own event.
            // Its retries failing again are counted as one stream, whatever
            // the file: damping keeps a streak per key in a small table,
            // and hundreds of files failing at every writeback pass, each
            // its own key, flooded the log and pushed the mount's own
            // records out (review 22).
            let health = Arc::clone(&health);
            files.set_failure_listener(Box::new(move |failure| {
                let (inode, range, origin) = if failure.again {
                    (None, None, "writeback retried: failing again")
                } else {
                    let generation = failure.generation.map_or(0, |value| value as u32);
                    (
                        Some((failure.ino, generation)),
                        Some((failure.offset, failure.length)),
                        "writeback",
                    )
                };
                health.report(&Incident {
                    kind: ErrorKind::Writeback,
                    errno: failure.errno.get(),
                    inode,
                    range,
                    block: None,
                    origin,
                });
            }));
        }
        let state = if unknown_ro_compat {
            LifeState::ReadOnly(format!(
                "the filesystem uses features this build cannot write \
                 (ro_compat {:#x})",
                superblock.features.ro_compat & !Features::KNOWN_RO_COMPAT
            ))
        } else if options.read_only {
            let unreadable: Vec<&str> = metadata
                .trees
                .unreadable_trees()
                .iter()
                .map(|(tree, _)| tree.name())
                .collect();
            // Not to be made writable when salvaged (see `make_writable`):
            // no hint of `remount,rw` then.
            LifeState::ReadOnly(
                match (metadata.recovery.acknowledged_lost, unreadable.is_empty()) {
                    (Some((first, _)), _) => format!(
                        "mounted read-only from before journal entry {first}, flushed and lost \
                     (the device dropped flushes); copy out what reads, then make the \
                     filesystem again"
                    ),
                    (None, true) => "mounted read-only".into(),
                    (None, false) => format!(
                        "mounted read-only around the {} b-tree, which could not be read",
                        unreadable.join(" and ")
                    ),
                },
            )
        } else {
            record_writable_mount(&mut superblock, seconds_now());
            write_superblocks(device.as_ref(), &mut superblock)?;
            LifeState::Running
        };
        let mounted_read_only = options.read_only;
        let shared = Arc::new(Shared {
            device,
            metadata,
            namespace,
            files,
            xattrs,
            gate: Gate::new(state),
            health,
            handles: Handles::default(),
            superblock: Mutex::new(superblock),
            settings: LiveSettings::new(Settings {
                errors_policy,
                cache_bytes: options.cache_bytes,
                dirty_limit_bytes: options.dirty_limit_bytes,
                writeback_interval: options.writeback_interval,
                atime: options.atime,
                directory_atime: options.directory_atime,
            }),
            mounted_read_only: AtomicBool::new(mounted_read_only),
            read_only_mount: read_only_overlay.map(ReadOnlyMount::new),
            options,
            recovered,
            orphans_purged: AtomicUsize::new(orphans_purged),
            journal_failure_seen: AtomicBool::new(false),
            reclaim_failure_announced: AtomicBool::new(false),
            node_write_failures_seen: AtomicU64::new(0),
            node_write_failure_announced: AtomicBool::new(false),
            superblock_failure_announced: AtomicBool::new(false),
            made_immutable: Default::default(),
            synchronous: Default::default(),
            lookups_hold_inodes: AtomicBool::new(false),
            deferred_orphans: Mutex::new(orphans_left),
            writes_stopped: AtomicBool::new(false),
            freezes_ended: Mutex::new(false),
            // A read-only mount's kernel mount is read-only too.
            transport_read_only: AtomicBool::new(mounted_read_only),
            attribute_listener: std::sync::RwLock::new(None),
            page_invalidator: std::sync::RwLock::new(None),
            read_only_listener: std::sync::RwLock::new(None),
            released_space: Default::default(),
            faults,
            changes: Changes::default(),
            media: Media::new(intake, superblocks_known_bad),
            fsync_latency: super::latency::Latency::default(),
        });
        let events = Some(Writer::start(log).map_err(MountError::Thread)?);
        let background = OnceLock::new();
        if !shared.options.read_only {
            let _ =
                background.set(Background::start(Arc::clone(&shared)).map_err(MountError::Thread)?);
        }
        shared.load_scrub_cursor();
        // Recovery is complete: what the device reported meanwhile is
        // handled now, by the worker.
        shared.media.intake.set_ready();
        let failures = Some(Worker::start(Arc::clone(&shared)).map_err(MountError::Thread)?);
        let background_scrub = OnceLock::new();
        if let Some(interval) = shared.options.scrub_interval {
            if !shared.options.read_only {
                let _ = background_scrub.set(
                    BackgroundScrub::start(Arc::clone(&shared), interval)
                        .map_err(MountError::Thread)?,
                );
            }
        }
        Ok(Filesystem {
            shared,
            background,
            failures,
            background_scrub,
            events,
        })
    }

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
            });
        }
        if change.read_only == Some(false) {
            shared.purge_deferred_orphans();
        }
        let may_write = matches!(shared.gate.state(), LifeState::Running | LifeState::Frozen);
        if read_only_asked && may_write {
            // (A daemon that may not write has nothing more to make
            // durable; what it could not write was reported then.)
            let made_durable = shared.make_durable();
            shared.observe("remount read-only", made_durable)?;
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
