//! A mounted filesystem: the engine's whole API, keyed by inode number and
//! open-file handle, for any transport (the FUSE adapter, tests, programs
//! embedding vigilfs).
//!
//! # What a mount is
//!
//! [`Filesystem::mount`] reads the superblock (the primary, or the newest
//! valid backup), opens the metadata (the journal replays what an unclean
//! stop left: [`Filesystem::recovered`] says whether it had to), deletes
//! the orphans a crash left, marks the superblock dirty and starts the
//! background writeback thread. [`Filesystem::unmount`] writes everything
//! back, empties the journal of pins and marks the superblock clean.
//! Dropping a `Filesystem` without unmounting stops the thread and writes
//! nothing more: like a power cut for what was not yet written back.
//!
//! # The operations
//!
//! Namespace operations go to [`Namespace`], file data to [`Files`],
//! extended attributes to [`Xattrs`]; this layer adds what only a mount
//! has: permission checks ([`Caller`](crate::inode::Caller), Linux rules), open-file and
//! directory handles, lookup counts, the orphan protocol (an unlinked file
//! stays until its last release), the write [`gate`] (freeze, read-only,
//! shutdown), the `errors=` policy, and error reporting to the event
//! stream and the persistent error record ([`health`]).
//!
//! # Error semantics
//!
//! fsync and syncfs report writeback errors exactly as Linux's errseq does,
//! per open file description (see [`Files`]): each handle hears of an
//! error once, a handle opened later hears of an error nobody was told
//! of, and monitors ([`Filesystem::status`]) only peek. Data whose
//! writeback failed stays dirty and is retried; an fsync never returns
//! success while data dirty when it started is not durable.
//!
//! A metadata failure (b-tree or journal I/O, corruption) is acted on by
//! the `errors=` policy: `continue` reports it and goes on,
//! `remount-ro` also makes the filesystem read-only (writers get `EROFS`),
//! `panic` reports it, shuts the filesystem down and aborts the process.
//! [`Filesystem::shutdown`] stops all writing at once (writers get `EIO`)
//! and sends the terminal SHUTDOWN event.
//!
//! # Where things are
//!
//! This file holds the mount's shared state; `api` the operations a
//! transport calls, with their permission checks;
//! `mounting` the mount's options and its steps; `lifecycle` freeze,
//! thaw, shutdown, status and unmount;
//! `error_policy` what happens to an error besides being returned (events,
//! the error record, the `errors=` policy); `gate` the life state writers
//! pass; `handles` open files and lookup counts; `health` the event source
//! and the error record; `background` the writeback thread; `media` media
//! failures (notify-failure, owners, the worker that handles notices);
//! `scrubbing` scrub and the background scrub thread.
//!
//! # Locking
//!
//! Lock order, outermost first: the gate (held as a [`WriteGuard`](gate::WriteGuard) for a
//! whole mutating operation), a handle's cursor mutex, the data path's
//! mutex, the metadata record lock, the journal. Nothing here holds a lock
//! while calling into the error reporting, which takes only its own.

mod api;
mod background;
mod crash_lab;
mod error;
mod error_policy;
pub mod events;
pub mod faults;
pub mod gate;
mod handles;
pub mod health;
mod inode_flags;
mod known_names;
pub mod latency;
mod lifecycle;
mod media;
mod mounting;
mod paths;
mod read_write;
mod released_space;
mod scrubbing;
mod settings;
pub mod unsynced;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

pub use api::{Attr, DirItem, SetAttributes, StatFs};
pub use crash_lab::{Unsynced, UnsyncedChange, UnsyncedData};
pub use error::{FsError, FsResult};
pub use gate::LifeState;
pub use handles::OpenFlags;
pub use lifecycle::Status;
pub use media::{BadExtent, FailureReport, MediaStatus, POISON_LISTED};
pub use mounting::{AtimeUpdates, MountError, MountOptions};
pub use paths::DEFAULT_BUDGET as PATH_SEARCH_BUDGET;
pub use scrubbing::{ScrubRequest, ScrubStatus, ScrubSummary};
pub use settings::{Settings, SettingsChange};

use background::Background;
use gate::Gate;
use handles::Handles;
use health::Health;

use crate::device::StoppableDevice;
use crate::format::Superblock;
use crate::inode::{FileType, Files, InodeRecord, Namespace, Xattrs};
use crate::metadata::Metadata;

/// The part of a mount the background thread shares.
pub(crate) struct Shared {
    /// The device, through the switch that stops all writing at a shutdown
    /// or a remount-ro (the superblock's error record excepted).
    device: Arc<StoppableDevice>,
    metadata: Arc<Metadata>,
    namespace: Namespace,
    files: Files,
    xattrs: Xattrs,
    gate: Gate,
    health: Arc<Health>,
    handles: Handles,
    superblock: Mutex<Superblock>,
    /// What a remount can change (`settings.rs`).
    settings: settings::LiveSettings,
    options: MountOptions,
    /// Mounted read-only (`ro`, or features this build cannot write) and
    /// not made writable since ([`Filesystem::make_writable`]): the image
    /// is only read, and writes (recovery's) stay in `read_only_mount`.
    mounted_read_only: AtomicBool,
    /// What a mount read-only by its options keeps until made writable.
    read_only_mount: Option<read_write::ReadOnlyMount>,
    recovered: bool,
    /// Journal entries this mount's recovery did not replay: written after
    /// the last completed flush, and incomplete or failing their checks.
    cut_off_at_recovery: Vec<u64>,
    orphans_purged: std::sync::atomic::AtomicUsize,
    /// Whether the journal's failure was already acted on.
    journal_failure_seen: AtomicBool,
    /// Inodes made immutable during this mount (see `inode_flags.rs`).
    made_immutable: inode_flags::InodeSet,
    /// Synchronous (`S`) inodes opened or flagged during this mount.
    synchronous: inode_flags::InodeSet,
    /// Whether a lookup holds its inode until forgotten (see
    /// [`Filesystem::let_lookups_hold_inodes`]).
    lookups_hold_inodes: AtomicBool,
    /// Whether the journal's current run of reclaim failures was
    /// announced (reset once reclaim succeeds again).
    reclaim_failure_announced: AtomicBool,
    /// B-tree node write-backs that had failed when last looked at, and
    /// whether the run of failures they belong to was announced.
    node_write_failures_seen: AtomicU64,
    node_write_failure_announced: AtomicBool,
    /// Whether the current run of failed superblock writes (saving the
    /// error record) was announced (reset once one succeeds).
    superblock_failure_announced: AtomicBool,
    /// Orphans whose last release came while the filesystem was frozen,
    /// or while the transport's mount was read-only: deleted at thaw, or
    /// when the mount is read-write again (deleting writes).
    deferred_orphans: Mutex<Vec<u64>>,
    /// Whether writes were stopped ([`Shared::stop_writing`]).
    writes_stopped: AtomicBool,
    /// Set by [`Filesystem::end_freezes`]: an unmount is coming, and no
    /// freeze may be left standing. A freeze decides whether it stands
    /// under this lock, so one in progress cannot slip past it.
    freezes_ended: Mutex<bool>,
    /// The transport's mount is read-only (`remount,ro`) while this engine
    /// still may write: reads record no access time and a last close
    /// deletes no orphan, as a read-only mount of a disk filesystem
    /// changes nothing, so the image stays as the remount made it.
    transport_read_only: AtomicBool,
    /// The crash lab's rules aimed at files and operations.
    faults: Arc<faults::Faults>,
    /// Metadata changes not known to be durable.
    changes: unsynced::Changes,
    /// Media failures: their intake, handling and scrub.
    media: media::Media,
    /// How long fsync took.
    fsync_latency: latency::Latency,
    /// Data read failures reported lately, so the kernel's retry of a
    /// failed readahead is not counted again.
    reads_reported: error_policy::ReadsReported,
    /// Told the inode whose attributes the engine changed on its own,
    /// beyond what the caller's request says (set-id bits dropped by a
    /// write or fallocate): a transport caching attributes (FUSE's kernel)
    /// must forget them.
    attribute_listener: std::sync::RwLock<Option<AttributeListener>>,
    /// Drops the transport's cached pages of an inode, waiting until it
    /// has (see [`Filesystem::drop_caches`]).
    page_invalidator: std::sync::RwLock<Option<PageInvalidator>>,
    /// Told when the `errors=remount-ro` policy made the filesystem
    /// read-only, so the transport's mount can say so too.
    read_only_listener: std::sync::RwLock<Option<ReadOnlyListener>>,
    /// Orphans deleted, for allocations refused while one was held.
    released_space: released_space::ReleasedSpace,
}

/// See [`Filesystem::set_attribute_listener`].
pub type AttributeListener = Arc<dyn Fn(u64, Stale) + Send + Sync>;

/// What of an inode a transport's cache must forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Its attributes.
    Attributes,
    /// Its attributes and its cached pages.
    Pages,
}

/// See [`Filesystem::set_page_invalidator`].
pub type PageInvalidator = Arc<dyn Fn(u64) + Send + Sync>;

/// See [`Filesystem::set_read_only_listener`].
pub type ReadOnlyListener = Arc<dyn Fn() + Send + Sync>;

/// A mounted filesystem. See the module comment.
pub struct Filesystem {
    shared: Arc<Shared>,
    /// Set at mount, or when a read-only mount is made writable.
    background: OnceLock<Background>,
    failures: Option<media::Worker>,
    background_scrub: OnceLock<scrubbing::BackgroundScrub>,
    events: Option<events::Writer>,
}

impl std::fmt::Debug for Filesystem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Filesystem")
            .field("state", &self.shared.gate.state())
            .finish_non_exhaustive()
    }
}

/// 512-byte units (`st_blocks`) per 4 KiB block.
const SECTORS_PER_BLOCK: u64 = 8;

/// 512-byte sectors a file of `size` bytes takes, rounded to whole blocks.
fn sectors(size: u64) -> u64 {
    size.div_ceil(4096) * SECTORS_PER_BLOCK
}

impl Shared {
    fn superblock(&self) -> MutexGuard<'_, Superblock> {
        self.superblock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `record` as a caller sees it now: with the size and modification
    /// time that writes still in the page cache gave it.
    fn with_cached_writes(&self, ino: u64, mut record: InodeRecord) -> InodeRecord {
        if record.file_type() == FileType::Regular {
            if let Some((size, mtime)) = self.files.cached_attributes(ino) {
                record.size = record.size.max(size);
                if let Some(mtime) = mtime {
                    // The pending writes' time; a ctime set since (chmod,
                    // link, rename) is later and stays.
                    record.mtime = mtime;
                    record.ctime = record.ctime.max(mtime);
                }
            }
        }
        record
    }

    /// The attributes `stat` reports. Counting the allocated blocks walks
    /// the file's extents: only what answers a stat should ask for it.
    fn attr(&self, ino: u64, record: InodeRecord) -> Attr {
        let record = self.with_cached_writes(ino, record);
        let blocks = if record.file_type() == FileType::Regular {
            // 512-byte units of the blocks allocated (holes count
            // nothing). Should the extents not be readable, stat still
            // answers, with the size rounded up as an estimate.
            match self.files.allocated_blocks(ino) {
                Ok(blocks) => blocks * SECTORS_PER_BLOCK,
                Err(_) => sectors(record.size),
            }
        } else {
            0
        };
        Attr {
            ino,
            record,
            blocks,
        }
    }
}
