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
//! has: permission checks ([`Caller`], Linux rules), open-file and
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
//! # Locking
//!
//! Lock order, outermost first: the gate (held as a [`WriteGuard`] for a
//! whole mutating operation), a handle's cursor mutex, the data path's
//! mutex, the metadata record lock, the journal. Nothing here holds a lock
//! while calling into the error reporting, which takes only its own.

mod background;
mod error;
pub mod gate;
mod handles;
pub mod health;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use error::{FsError, FsResult};
pub use gate::LifeState;
pub use handles::OpenFlags;

use background::Background;
use gate::{Gate, WriteGuard};
use handles::Handles;
use health::{seconds_now, Health, Incident};

use crate::alloc::AllocatorStatus;
use crate::device::BlockDevice;
use crate::format::{
    read_superblock, write_superblocks, ErrorKind, ErrorRecord, ErrorsPolicy, FsState, Superblock,
};
use crate::inode::{
    check_access, check_setattr, check_sticky_delete, check_xattr_access, kill_suid_on_write,
    new_inode_owner, xattr_listable, Access, Caller, FallocateMode, FileError, FileType, Files,
    FsyncErrors, InodeRecord, Namespace, RenameFlags, Seek, SetAttr, SetAttrRequest, SetTime,
    TimeChange, XattrFlags, Xattrs, ROOT_INO,
};
use crate::journal::JournalStatus;
use crate::metadata::Metadata;

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
        }
    }
}

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// No valid superblock.
    #[error("no valid superblock: {0}")]
    Superblock(#[from] crate::format::FormatError),
    /// The journal or the b-trees could not be opened.
    #[error("opening the metadata: {0}")]
    Metadata(#[from] crate::metadata::OpenError),
    /// The data path refused the filesystem (e.g. its block size).
    #[error("{0}")]
    Files(#[from] FileError),
    /// Deleting the orphans a crash left failed.
    #[error("deleting orphans: {0}")]
    Orphans(#[from] crate::inode::NamespaceError),
    /// Starting the writeback thread failed.
    #[error("starting the writeback thread: {0}")]
    Thread(std::io::Error),
}

/// An inode's attributes as `stat` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The inode number.
    pub ino: u64,
    /// The record, with the size and times writes not yet written back
    /// have given it.
    pub record: InodeRecord,
    /// 512-byte units allocated (estimated from the size: holes count).
    pub blocks: u64,
}

impl Attr {
    /// The kind of inode.
    pub fn file_type(&self) -> FileType {
        self.record.file_type()
    }
}

/// One directory entry readdir returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirItem {
    /// Pass it back to readdir to continue after this entry.
    pub offset: u64,
    /// The name (`.` and `..` included).
    pub name: Vec<u8>,
    /// The inode named.
    pub ino: u64,
    /// Its kind.
    pub file_type: FileType,
}

/// Attribute changes for [`Filesystem::setattr`]; `None` keeps a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttributes {
    /// Permission bits.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size (truncate or extend).
    pub size: Option<u64>,
    /// Access time.
    pub atime: Option<SetTime>,
    /// Modification time.
    pub mtime: Option<SetTime>,
}

/// What `statfs` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Block size.
    pub block_size: u32,
    /// Blocks in the data region.
    pub blocks: u64,
    /// Blocks free (including those freed but not yet reusable).
    pub free_blocks: u64,
    /// Blocks free for unprivileged users.
    pub available_blocks: u64,
    /// Inodes in use.
    pub files: u64,
    /// Inodes that could still be made (bounded by free space).
    pub free_files: u64,
    /// Longest name.
    pub name_max: u32,
}

/// A monitor's view of the filesystem; reading it consumes no error.
#[derive(Debug, Clone)]
pub struct Status {
    /// Running, frozen, read-only or shut down.
    pub state: LifeState,
    /// The `errors=` policy in force.
    pub errors_policy: ErrorsPolicy,
    /// Whether this mount had to replay the journal (an unclean stop).
    pub recovered: bool,
    /// Orphans deleted at mount.
    pub orphans_purged: usize,
    /// Free space.
    pub space: AllocatorStatus,
    /// Blocks in the data region.
    pub total_blocks: u64,
    /// Dirty data not yet written back, bytes.
    pub dirty_bytes: u64,
    /// Cached data, bytes.
    pub cached_bytes: u64,
    /// The journal. After a freeze or unmount its one pin is the b-tree
    /// roots record, which is how mount finds the trees.
    pub journal: JournalStatus,
    /// Dirty b-tree nodes (each holds a journal pin).
    pub dirty_nodes: usize,
    /// The latest writeback error of the filesystem this mount, if any
    /// (read with errseq peek: it stays reportable).
    pub writeback_error: Option<i32>,
    /// Errors this filesystem ever recorded (persisted in the superblock).
    pub error_record: ErrorRecord,
    /// Open file handles.
    pub open_files: usize,
    /// Superblock mount count.
    pub mount_count: u32,
}

/// The part of a mount the background thread shares.
pub(crate) struct Shared {
    device: Arc<dyn BlockDevice>,
    metadata: Arc<Metadata>,
    namespace: Namespace,
    files: Files,
    xattrs: Xattrs,
    gate: Gate,
    health: Arc<Health>,
    handles: Handles,
    superblock: Mutex<Superblock>,
    errors_policy: ErrorsPolicy,
    options: MountOptions,
    recovered: bool,
    orphans_purged: usize,
    /// Whether the journal's failure was already acted on.
    journal_failure_seen: AtomicBool,
}

/// A mounted filesystem. See the module comment.
pub struct Filesystem {
    shared: Arc<Shared>,
    background: Option<Background>,
}

impl std::fmt::Debug for Filesystem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Filesystem")
            .field("state", &self.shared.gate.state())
            .finish_non_exhaustive()
    }
}

/// 512-byte sectors a file of `size` bytes takes, rounded to whole blocks.
fn sectors(size: u64) -> u64 {
    size.div_ceil(4096) * 8
}

impl Shared {
    fn superblock(&self) -> MutexGuard<'_, Superblock> {
        self.superblock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the superblock with `state` and the current error record.
    fn write_superblock(&self, state: Option<FsState>) -> FsResult<()> {
        let unsaved = self.health.unsaved();
        let mut superblock = self.superblock();
        if let Some(state) = state {
            superblock.state = state;
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

    /// Saves the error record if it changed (best effort: a failing device
    /// keeps it in memory, and the next attempt tries again).
    fn save_error_record(&self) {
        if self.health.unsaved().is_some() && !self.options.read_only {
            let _ = self.write_superblock(None);
        }
    }

    /// The outcome of an operation: a metadata failure is reported and
    /// acted on by the `errors=` policy; data read errors are reported.
    fn observe<T>(&self, origin: &str, result: FsResult<T>) -> FsResult<T> {
        if let Err(error) = &result {
            self.on_error(origin, error);
        }
        result
    }

    /// The journal fails whole (its error state is sticky) and the data
    /// path only sees an errno: a journal in its error state is a metadata
    /// failure, acted on once.
    fn check_journal(&self, origin: &str) {
        if let Some(error) = self.metadata.journal.error() {
            if !self.journal_failure_seen.swap(true, Ordering::AcqRel) {
                self.metadata_failure(origin, &FsError::File(FileError::Journal(error)));
            }
        }
    }

    fn on_error(&self, origin: &str, error: &FsError) {
        self.check_journal(origin);
        match error {
            FsError::File(
                FileError::Read {
                    ino,
                    block,
                    physical,
                    ..
                }
                | FileError::Checksum {
                    ino,
                    block,
                    physical,
                },
            ) => {
                let kind = match error {
                    FsError::File(FileError::Checksum { .. }) => ErrorKind::Checksum,
                    _ => ErrorKind::Read,
                };
                self.health.report(&Incident {
                    kind,
                    errno: error.errno(),
                    inode: Some((*ino, 0)),
                    range: Some((block * 4096, 4096)),
                    block: Some(*physical),
                    origin,
                });
            }
            FsError::File(FileError::Journal(_)) => {}
            _ if error.is_metadata_failure() => self.metadata_failure(origin, error),
            _ => {}
        }
    }

    /// A metadata failure: reported, then the `errors=` policy.
    fn metadata_failure(&self, origin: &str, error: &FsError) {
        let kind = match error {
            FsError::File(FileError::Journal(_)) => ErrorKind::Journal,
            _ => ErrorKind::Metadata,
        };
        self.health.report(&Incident {
            kind,
            errno: error.errno(),
            inode: None,
            range: None,
            block: None,
            origin,
        });
        let why = format!("{origin}: {error}");
        match self.errors_policy {
            ErrorsPolicy::Continue => {}
            ErrorsPolicy::RemountReadOnly => {
                self.gate
                    .make_read_only(format!("errors=remount-ro after {why}"));
                self.save_error_record();
            }
            ErrorsPolicy::Panic => {
                self.shut_down_now(format!("errors=panic after {why}"), false);
                eprintln!("vigilfs: errors=panic: {why}; aborting");
                std::process::abort();
            }
        }
    }

    /// Shutdown: optionally write back and flush first, then refuse all
    /// writing, send the terminal event and save the error record.
    fn shut_down_now(&self, why: String, flush: bool) {
        if flush && matches!(self.gate.state(), LifeState::Running) {
            // Failures are reported by the data path's listener.
            let _ = self.files.writeback_all();
            let _ = self.metadata.trees.sync();
            let _ = self.metadata.journal.flush();
        }
        if self.gate.shut_down(why) {
            self.health.shut_down();
            self.save_error_record();
        }
    }

    /// What freeze and unmount leave: all dirty data written back, every
    /// dirty b-tree node written (no journal pin but the roots record), the
    /// superblock marked clean with the error record. On a failure the
    /// error record is still saved if it can be.
    fn make_clean(&self) -> FsResult<()> {
        let outcome = (|| -> FsResult<()> {
            if let Some(errno) = self.files.writeback_all().first_error {
                return Err(FileError::Writeback(errno).into());
            }
            self.metadata
                .trees
                .sync()
                .map_err(|error| FsError::File(FileError::Btree(error)))?;
            self.metadata
                .journal
                .reclaim_all()
                .map_err(|error| FsError::File(FileError::Journal(error)))?;
            self.write_superblock(Some(FsState::Clean))
        })();
        if outcome.is_err() {
            self.save_error_record();
        }
        outcome
    }

    fn attr(&self, ino: u64, mut record: InodeRecord) -> Attr {
        if record.file_type() == FileType::Regular {
            if let Some((size, mtime)) = self.files.cached_attributes(ino) {
                record.size = record.size.max(size);
                if let Some(mtime) = mtime {
                    record.mtime = mtime;
                    record.ctime = mtime;
                }
            }
        }
        let blocks = if record.file_type() == FileType::Regular {
            sectors(record.size)
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

impl Filesystem {
    /// Mounts the filesystem on `device`.
    pub fn mount(
        device: Arc<dyn BlockDevice>,
        options: MountOptions,
    ) -> Result<Filesystem, MountError> {
        let loaded = read_superblock(device.as_ref())?;
        let mut superblock = loaded.superblock;
        let recovered = superblock.state == FsState::Dirty;
        let metadata = Arc::new(Metadata::open_default(Arc::clone(&device), &superblock)?);
        let files = Files::new(Arc::clone(&device), &superblock, Arc::clone(&metadata))?;
        files.set_cache_budget(options.cache_bytes);
        files.set_fsync_errors(options.fsync_errors);
        let namespace = Namespace::new(Arc::clone(&metadata));
        let xattrs = Xattrs::new(Arc::clone(&metadata));
        let orphans_purged = if options.read_only {
            0
        } else {
            namespace.purge_orphans()?.len()
        };
        let errors_policy = options.errors.unwrap_or(superblock.errors_policy);
        let fsid = u64::from_le_bytes(superblock.uuid.0[..8].try_into().expect("8 bytes"));
        let health = Arc::new(Health::new(fsid, superblock.error_record.clone()));
        {
            // Writeback failures are told to the event stream and the error
            // record once each, when the data path sets the error words.
            let health = Arc::clone(&health);
            files.set_failure_listener(Box::new(move |ino, errno, first, last| {
                health.report(&Incident {
                    kind: ErrorKind::Writeback,
                    errno: errno.get(),
                    inode: Some((ino, 0)),
                    range: Some((first * 4096, (last - first + 1) * 4096)),
                    block: None,
                    origin: "writeback",
                });
            }));
        }
        let state = if options.read_only {
            LifeState::ReadOnly("mounted read-only".into())
        } else {
            superblock.record_mount(seconds_now());
            write_superblocks(device.as_ref(), &mut superblock)?;
            LifeState::Running
        };
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
            errors_policy,
            options,
            recovered,
            orphans_purged,
            journal_failure_seen: AtomicBool::new(false),
        });
        let background = if shared.options.read_only {
            None
        } else {
            Some(Background::start(Arc::clone(&shared)).map_err(MountError::Thread)?)
        };
        Ok(Filesystem { shared, background })
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

    fn enter(&self) -> FsResult<WriteGuard<'_>> {
        self.shared.gate.enter()
    }

    fn check(&self, record: &InodeRecord, caller: &Caller, access: Access) -> FsResult<()> {
        if self.shared.options.check_permissions {
            check_access(record, caller, access)?;
        }
        Ok(())
    }

    fn record(&self, ino: u64) -> FsResult<InodeRecord> {
        let result = self.shared.namespace.getattr(ino).map_err(FsError::from);
        self.shared.observe("getattr", result)
    }

    /// A directory the caller may search and change (write and execute).
    fn writable_directory(&self, dir: u64, caller: &Caller) -> FsResult<InodeRecord> {
        let record = self.record(dir)?;
        if record.file_type() != FileType::Directory {
            return Err(crate::inode::NamespaceError::NotADirectory.into());
        }
        self.check(&record, caller, Access::WRITE | Access::EXECUTE)?;
        Ok(record)
    }

    /// Checks that the caller may remove the entry `name` of `dir` (write
    /// and search on the directory, and the sticky-bit rule).
    fn check_removal(&self, dir: u64, name: &[u8], caller: &Caller) -> FsResult<()> {
        let dir_record = self.writable_directory(dir, caller)?;
        // The victim matters only in a sticky directory, to non-root.
        let sticky = dir_record.mode & libc::S_ISVTX != 0;
        if self.shared.options.check_permissions && sticky && !caller.is_root() {
            if let Some((_, victim)) = self.shared.namespace.lookup(dir, name)? {
                check_sticky_delete(&dir_record, &victim, caller)?;
            }
        }
        Ok(())
    }

    /// Looks `name` up in `parent`; counts a lookup of the inode found.
    pub fn lookup(&self, parent: u64, name: &[u8], caller: &Caller) -> FsResult<Attr> {
        let dir = self.record(parent)?;
        if dir.file_type() != FileType::Directory {
            return Err(crate::inode::NamespaceError::NotADirectory.into());
        }
        self.check(&dir, caller, Access::EXECUTE)?;
        let found = self
            .shared
            .namespace
            .lookup(parent, name)
            .map_err(FsError::from);
        let (ino, record) = self
            .shared
            .observe("lookup", found)?
            .ok_or(crate::inode::NamespaceError::NotFound)?;
        self.shared.handles.looked_up(ino);
        Ok(self.shared.attr(ino, record))
    }

    /// Drops `count` lookups of `ino` (the kernel forgot it).
    pub fn forget(&self, ino: u64, count: u64) {
        self.shared.handles.forget(ino, count);
    }

    /// Lookups of `ino` not yet forgotten.
    pub fn lookup_count(&self, ino: u64) -> u64 {
        self.shared.handles.lookups(ino)
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let record = self.record(ino)?;
        Ok(self.shared.attr(ino, record))
    }

    /// Changes attributes of `ino` (chmod, chown, truncate, utimes), with
    /// Linux's permission rules; `handle` is the open file a truncate came
    /// through (`ftruncate`: its write access suffices).
    pub fn setattr(
        &self,
        ino: u64,
        changes: &SetAttributes,
        handle: Option<u64>,
        caller: &Caller,
    ) -> FsResult<Attr> {
        let _writer = self.enter()?;
        let record = self.record(ino)?;
        let through_writable_handle = match handle {
            Some(number) => {
                let file = self.shared.handles.file(number)?;
                file.ino == ino && file.flags.write
            }
            None => false,
        };
        let request = SetAttrRequest {
            mode: changes.mode,
            uid: changes.uid,
            gid: changes.gid,
            size: changes.size,
            atime: changes.atime.map(time_change),
            mtime: changes.mtime.map(time_change),
            through_writable_handle,
        };
        let mode = if self.shared.options.check_permissions {
            check_setattr(&record, caller, &request)?.mode
        } else {
            changes.mode
        };
        if let Some(size) = changes.size {
            match record.file_type() {
                FileType::Regular => {}
                FileType::Directory => return Err(FileError::IsDirectory { ino }.into()),
                _ => return Err(FsError::Invalid("truncate of a non-regular file")),
            }
            let result = self.shared.files.truncate(ino, size).map_err(FsError::from);
            self.shared.observe("truncate", result)?;
        }
        let namespace_changes = SetAttr {
            mode,
            uid: changes.uid,
            gid: changes.gid,
            atime: changes.atime,
            mtime: changes.mtime,
        };
        if changes.mtime.is_some() && record.file_type() == FileType::Regular {
            // The time set replaces the one pending writes gave the file.
            self.shared.files.clear_pending_mtime(ino);
        }
        let record = if namespace_changes == SetAttr::default() && changes.size.is_some() {
            self.record(ino)?
        } else {
            let result = self
                .shared
                .namespace
                .setattr(ino, &namespace_changes)
                .map_err(FsError::from);
            self.shared.observe("setattr", result)?
        };
        Ok(self.shared.attr(ino, record))
    }

    /// Makes a regular file, device node, fifo or socket.
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        caller: &Caller,
    ) -> FsResult<Attr> {
        let _writer = self.enter()?;
        let dir = self.writable_directory(parent, caller)?;
        let (uid, gid, permissions) = new_inode_owner(&dir, caller, mode, false);
        // new_inode_owner returns permission bits only: keep the type.
        let mode = (mode & libc::S_IFMT) | permissions;
        let result = self
            .shared
            .namespace
            .mknod(parent, name, mode, uid, gid, rdev)
            .map_err(FsError::from);
        let (ino, record) = self.shared.observe("mknod", result)?;
        self.shared.handles.looked_up(ino);
        Ok(self.shared.attr(ino, record))
    }

    /// Makes a directory.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: &Caller) -> FsResult<Attr> {
        let _writer = self.enter()?;
        let dir = self.writable_directory(parent, caller)?;
        let (uid, gid, mode) = new_inode_owner(&dir, caller, mode, true);
        let result = self
            .shared
            .namespace
            .mkdir(parent, name, mode, uid, gid)
            .map_err(FsError::from);
        let (ino, record) = self.shared.observe("mkdir", result)?;
        self.shared.handles.looked_up(ino);
        Ok(self.shared.attr(ino, record))
    }

    /// Makes a symbolic link to `target`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: &Caller,
    ) -> FsResult<Attr> {
        let _writer = self.enter()?;
        let dir = self.writable_directory(parent, caller)?;
        let (uid, gid, _) = new_inode_owner(&dir, caller, 0o777, false);
        let result = self
            .shared
            .namespace
            .symlink(parent, name, target, uid, gid)
            .map_err(FsError::from);
        let (ino, record) = self.shared.observe("symlink", result)?;
        self.shared.handles.looked_up(ino);
        Ok(self.shared.attr(ino, record))
    }

    /// A symbolic link's target.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let result = self.shared.namespace.readlink(ino).map_err(FsError::from);
        self.shared.observe("readlink", result)
    }

    /// Makes `new_name` in `new_parent` another name of `ino`.
    pub fn link(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &[u8],
        caller: &Caller,
    ) -> FsResult<Attr> {
        let _writer = self.enter()?;
        self.writable_directory(new_parent, caller)?;
        let result = self
            .shared
            .namespace
            .link(ino, new_parent, new_name)
            .map_err(FsError::from);
        let record = self.shared.observe("link", result)?;
        self.shared.handles.looked_up(ino);
        Ok(self.shared.attr(ino, record))
    }

    /// Removes the non-directory `name` from `parent`; an open file lives
    /// on until its last release.
    pub fn unlink(&self, parent: u64, name: &[u8], caller: &Caller) -> FsResult<()> {
        let _writer = self.enter()?;
        self.check_removal(parent, name, caller)?;
        let result = self
            .shared
            .namespace
            .unlink(parent, name)
            .map_err(FsError::from);
        if let Some(ino) = self.shared.observe("unlink", result)? {
            self.shared.files.forget(ino);
        }
        Ok(())
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&self, parent: u64, name: &[u8], caller: &Caller) -> FsResult<()> {
        let _writer = self.enter()?;
        self.check_removal(parent, name, caller)?;
        let result = self
            .shared
            .namespace
            .rmdir(parent, name)
            .map_err(FsError::from);
        self.shared.observe("rmdir", result)?;
        Ok(())
    }

    /// Renames (`renameat2` flags: NOREPLACE, EXCHANGE).
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: RenameFlags,
        caller: &Caller,
    ) -> FsResult<()> {
        let _writer = self.enter()?;
        self.check_removal(parent, name, caller)?;
        self.check_removal(new_parent, new_name, caller)?;
        if self.shared.options.check_permissions && parent != new_parent {
            // Moving a directory rewrites its "..": it must be writable.
            if let Some((_, moved)) = self.shared.namespace.lookup(parent, name)? {
                if moved.file_type() == FileType::Directory {
                    check_access(&moved, caller, Access::WRITE)?;
                }
            }
        }
        let result = self
            .shared
            .namespace
            .rename(parent, name, new_parent, new_name, flags)
            .map_err(FsError::from);
        if let Some(ino) = self.shared.observe("rename", result)? {
            self.shared.files.forget(ino);
        }
        Ok(())
    }

    /// Opens regular file `ino`; returns the file handle.
    pub fn open(&self, ino: u64, flags: OpenFlags, caller: &Caller) -> FsResult<u64> {
        let record = self.record(ino)?;
        match record.file_type() {
            FileType::Regular => {}
            FileType::Directory => return Err(FileError::IsDirectory { ino }.into()),
            file_type => return Err(FileError::NotRegular { ino, file_type }.into()),
        }
        let mut access = Access::NONE;
        if flags.read {
            access = access | Access::READ;
        }
        if flags.write || flags.truncate {
            access = access | Access::WRITE;
        }
        self.check(&record, caller, access)?;
        let _writer = if flags.write || flags.truncate {
            Some(self.enter()?)
        } else {
            None
        };
        if flags.truncate && flags.write {
            let result = self.shared.files.truncate(ino, 0).map_err(FsError::from);
            self.shared.observe("open", result)?;
        }
        self.open_handle(ino, flags)
    }

    fn open_handle(&self, ino: u64, flags: OpenFlags) -> FsResult<u64> {
        self.shared.namespace.opened(ino);
        match self.shared.files.open(ino) {
            Ok(handle) => Ok(self.shared.handles.add_file(ino, flags, handle)),
            Err(error) => {
                let _ = self.shared.namespace.closed(ino);
                Err(error.into())
            }
        }
    }

    /// Creates regular file `name` in `parent` and opens it.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: OpenFlags,
        caller: &Caller,
    ) -> FsResult<(Attr, u64)> {
        let attr = self.mknod(parent, name, (mode & 0o7777) | libc::S_IFREG, 0, caller)?;
        let handle = self.open_handle(attr.ino, flags)?;
        Ok((attr, handle))
    }

    /// Reads up to `length` bytes at `offset` through `handle`.
    pub fn read(&self, handle: u64, offset: u64, length: usize) -> FsResult<Vec<u8>> {
        let file = self.shared.handles.file(handle)?;
        if !file.flags.read {
            return Err(FsError::WrongAccessMode(handle, "reading"));
        }
        let result = {
            let cursors = file.handle();
            self.shared.files.read(&cursors, offset, length)
        };
        self.shared.observe("read", result.map_err(FsError::from))
    }

    /// Writes `bytes` at `offset` (at the end with `O_APPEND`) through
    /// `handle`; returns the count written. Lands in the page cache.
    pub fn write(
        &self,
        handle: u64,
        offset: u64,
        bytes: &[u8],
        caller: &Caller,
    ) -> FsResult<usize> {
        let file = self.shared.handles.file(handle)?;
        if !file.flags.write {
            return Err(FsError::WrongAccessMode(handle, "writing"));
        }
        let _writer = self.enter()?;
        let written = {
            let cursors = file.handle();
            let offset = if file.flags.append {
                self.shared.files.size(&cursors)?
            } else {
                offset
            };
            self.shared.files.write(&cursors, offset, bytes)?
        };
        // Root's writes never clear the bits: skip the record read.
        if !caller.is_root() {
            let record = self.record(file.ino)?;
            if let Some(mode) = kill_suid_on_write(&record, caller) {
                let changes = SetAttr {
                    mode: Some(mode),
                    ..SetAttr::default()
                };
                let result = self.shared.namespace.setattr(file.ino, &changes);
                self.shared
                    .observe("write", result.map_err(FsError::from))?;
            }
        }
        self.balance_dirty();
        Ok(written)
    }

    /// Keeps dirty data bounded: wakes the background thread past the
    /// limit, and writes back here past twice the limit.
    fn balance_dirty(&self) {
        let dirty = self.shared.files.cache_stats().dirty_bytes;
        let limit = self.shared.options.dirty_limit_bytes;
        if dirty > limit {
            if let Some(background) = &self.background {
                background.kick();
            }
        }
        if dirty > limit.saturating_mul(2) {
            // Failures are reported by the data path's listener and stay
            // in the error words for fsync.
            let _ = self.shared.files.writeback_all();
        }
    }

    /// fallocate through `handle`: allocate (mode 0, optionally
    /// KEEP_SIZE) or PUNCH_HOLE|KEEP_SIZE.
    pub fn fallocate(
        &self,
        handle: u64,
        offset: u64,
        length: u64,
        mode: FallocateMode,
    ) -> FsResult<()> {
        let file = self.shared.handles.file(handle)?;
        if !file.flags.write {
            return Err(FsError::WrongAccessMode(handle, "writing"));
        }
        let _writer = self.enter()?;
        let result = self
            .shared
            .files
            .fallocate(file.ino, offset, length, mode)
            .map_err(FsError::from);
        self.shared.observe("fallocate", result)
    }

    /// lseek with SEEK_DATA or SEEK_HOLE through `handle`.
    pub fn seek_data_hole(&self, handle: u64, offset: u64, whence: Seek) -> FsResult<u64> {
        let file = self.shared.handles.file(handle)?;
        let result = self
            .shared
            .files
            .seek_data_hole(file.ino, offset, whence)
            .map_err(FsError::from);
        self.shared.observe("lseek", result)
    }

    /// `close(2)` of one descriptor of the handle: reports nothing (errors
    /// stay for fsync, as on Linux local filesystems).
    pub fn flush(&self, handle: u64) -> FsResult<()> {
        self.shared.handles.file(handle).map(|_| ())
    }

    /// The last close of the handle; an orphan goes with its last handle.
    pub fn release(&self, handle: u64) -> FsResult<()> {
        let file = self.shared.handles.remove_file(handle)?;
        let result = self
            .shared
            .namespace
            .closed(file.ino)
            .map_err(FsError::from);
        if self.shared.observe("release", result)? {
            self.shared.files.forget(file.ino);
        }
        Ok(())
    }

    /// fsync/fdatasync: writes back the file, makes its metadata durable,
    /// and reports the first writeback error this handle has not heard of.
    pub fn fsync(&self, handle: u64, _data_only: bool) -> FsResult<()> {
        let file = self.shared.handles.file(handle)?;
        let synced = {
            let mut cursors = file.handle();
            self.shared.files.fsync(&mut cursors)
        };
        let flushed = self
            .shared
            .metadata
            .journal
            .flush()
            .map_err(|error| FsError::File(FileError::Journal(error)));
        let flushed = self.shared.observe("fsync", flushed);
        self.shared.check_journal("fsync");
        synced?;
        flushed
    }

    /// syncfs through `handle`: everything written back and durable, then
    /// the first filesystem writeback error this handle has not heard of.
    pub fn syncfs(&self, handle: u64) -> FsResult<()> {
        let file = self.shared.handles.file(handle)?;
        let mut cursors = file.handle();
        Ok(self.shared.files.syncfs(&mut cursors)?)
    }

    /// syncfs as a new opener would do it (`vigilfs sync`: open the mount
    /// point, syncfs, close): everything written back and durable, then the
    /// filesystem writeback error if nobody has been told of it yet — so
    /// each error is reported once, to whoever asks first.
    pub fn syncfs_once(&self) -> FsResult<()> {
        let mut cursor = self.shared.files.sample_fs_cursor();
        let result = self
            .shared
            .files
            .syncfs_with(&mut cursor)
            .map_err(FsError::from);
        self.shared.check_journal("syncfs");
        result
    }

    /// Opens directory `ino`; returns the directory handle.
    pub fn opendir(&self, ino: u64, caller: &Caller) -> FsResult<u64> {
        let record = self.record(ino)?;
        if record.file_type() != FileType::Directory {
            return Err(crate::inode::NamespaceError::NotADirectory.into());
        }
        self.check(&record, caller, Access::READ)?;
        Ok(self.shared.handles.add_dir(ino))
    }

    /// Up to `limit` entries of the directory after `offset` (0 from the
    /// start); `.` and `..` come first.
    pub fn readdir(&self, handle: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>> {
        let dir = self.shared.handles.dir(handle)?;
        let mut items = Vec::new();
        if offset < 1 && items.len() < limit {
            items.push(DirItem {
                offset: 1,
                name: b".".to_vec(),
                ino: dir.ino,
                file_type: FileType::Directory,
            });
        }
        if offset < 2 && items.len() < limit {
            let parent = if dir.ino == ROOT_INO {
                ROOT_INO
            } else {
                self.shared.namespace.parent(dir.ino).unwrap_or(ROOT_INO)
            };
            items.push(DirItem {
                offset: 2,
                name: b"..".to_vec(),
                ino: parent,
                file_type: FileType::Directory,
            });
        }
        let wanted = limit - items.len();
        if wanted == 0 {
            return Ok(items);
        }
        let after = dir.resume_after(offset)?;
        let entries = match self.shared.namespace.readdir(dir.ino, after, wanted) {
            Ok(entries) => entries,
            // A directory removed while open lists as empty.
            Err(crate::inode::NamespaceError::NotFound) => Vec::new(),
            Err(error) => return self.shared.observe("readdir", Err(error.into())),
        };
        items.extend(entries.into_iter().map(|entry| DirItem {
            offset: dir.offset_of(entry.cookie),
            name: entry.name,
            ino: entry.ino,
            file_type: entry.file_type,
        }));
        Ok(items)
    }

    /// readdir with each entry's attributes; each entry but `.` and `..`
    /// counts as a lookup.
    pub fn readdir_plus(
        &self,
        handle: u64,
        offset: u64,
        limit: usize,
    ) -> FsResult<Vec<(DirItem, Attr)>> {
        let items = self.readdir(handle, offset, limit)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let attr = match self.getattr(item.ino) {
                Ok(attr) => attr,
                // Removed since the listing: skip it.
                Err(FsError::Namespace(crate::inode::NamespaceError::NotFound)) => continue,
                Err(error) => return Err(error),
            };
            if item.name != b"." && item.name != b".." {
                self.shared.handles.looked_up(item.ino);
            }
            out.push((item, attr));
        }
        Ok(out)
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, handle: u64) -> FsResult<()> {
        self.shared.handles.remove_dir(handle)
    }

    /// Makes the directory's changes durable.
    pub fn fsyncdir(&self, handle: u64) -> FsResult<()> {
        self.shared.handles.dir(handle)?;
        let flushed = self
            .shared
            .metadata
            .journal
            .flush()
            .map_err(|error| FsError::File(FileError::Journal(error)));
        self.shared.observe("fsyncdir", flushed)
    }

    /// Space and inode counts.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let space = self.shared.metadata.allocator.status();
        let superblock = self.shared.superblock();
        let blocks = superblock.layout.main.blocks;
        let block_size = superblock.layout.block_size;
        drop(superblock);
        let (next_ino, _) = self.shared.namespace.counters()?;
        let free = space.free_blocks + space.pending_blocks;
        Ok(StatFs {
            block_size,
            blocks,
            free_blocks: free,
            available_blocks: space.free_blocks,
            files: next_ino.saturating_sub(1),
            free_files: free,
            name_max: crate::inode::MAX_NAME_BYTES as u32,
        })
    }

    /// The value of extended attribute `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &[u8], caller: &Caller) -> FsResult<Vec<u8>> {
        let record = self.record(ino)?;
        self.check_xattr(&record, name, caller, false)?;
        Ok(self.shared.xattrs.get(ino, name)?)
    }

    /// Sets extended attribute `name` of `ino`.
    pub fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        caller: &Caller,
    ) -> FsResult<()> {
        let _writer = self.enter()?;
        let record = self.record(ino)?;
        self.check_xattr(&record, name, caller, true)?;
        let result = self
            .shared
            .xattrs
            .set(ino, name, value, flags)
            .map_err(FsError::from);
        self.shared.observe("setxattr", result)
    }

    /// The names of `ino`'s extended attributes (those the caller may see).
    pub fn listxattr(&self, ino: u64, caller: &Caller) -> FsResult<Vec<Vec<u8>>> {
        self.record(ino)?;
        let names = self.shared.xattrs.list(ino)?;
        Ok(names
            .into_iter()
            .filter(|name| !self.shared.options.check_permissions || xattr_listable(caller, name))
            .collect())
    }

    /// Removes extended attribute `name` of `ino`.
    pub fn removexattr(&self, ino: u64, name: &[u8], caller: &Caller) -> FsResult<()> {
        let _writer = self.enter()?;
        let record = self.record(ino)?;
        self.check_xattr(&record, name, caller, true)?;
        let result = self.shared.xattrs.remove(ino, name).map_err(FsError::from);
        self.shared.observe("removexattr", result)
    }

    /// Linux's xattr access rules ([`check_xattr_access`]).
    fn check_xattr(
        &self,
        record: &InodeRecord,
        name: &[u8],
        caller: &Caller,
        write: bool,
    ) -> FsResult<()> {
        if self.shared.options.check_permissions {
            check_xattr_access(record, caller, name, write)?;
        }
        Ok(())
    }

    /// Freezes the filesystem: new writers wait, the writers inside
    /// finish, all dirty data is written back, the journal is flushed and
    /// every pin released, the superblock is marked clean. Reads go on.
    pub fn freeze(&self) -> FsResult<()> {
        let shared = &self.shared;
        shared.gate.begin_freeze()?;
        let outcome = shared.make_clean();
        let outcome = shared.observe("freeze", outcome);
        shared.gate.end_freeze(outcome.is_ok());
        outcome
    }

    /// Thaws a frozen filesystem: the superblock is marked dirty again and
    /// the waiting writers go on.
    pub fn thaw(&self) -> FsResult<()> {
        if self.shared.gate.state() != LifeState::Frozen {
            return Err(FsError::Invalid("the filesystem is not frozen"));
        }
        let marked = self.shared.write_superblock(Some(FsState::Dirty));
        self.shared.gate.thaw()?;
        self.shared.observe("thaw", marked)
    }

    /// Shuts the filesystem down: with `flush`, dirty data and the journal
    /// are written first (best effort); then nothing more is written,
    /// writers get `EIO`, listeners get the SHUTDOWN event.
    pub fn shutdown(&self, flush: bool) {
        let why = if flush {
            "shut down (after flushing)"
        } else {
            "shut down (without flushing)"
        };
        self.shared.shut_down_now(why.into(), flush);
    }

    /// A monitor's view. Consumes no error.
    pub fn status(&self) -> Status {
        let shared = &self.shared;
        let stats = shared.files.cache_stats();
        let superblock = shared.superblock();
        let total_blocks = superblock.layout.main.blocks;
        let mount_count = superblock.mount_count;
        drop(superblock);
        Status {
            state: shared.gate.state(),
            errors_policy: shared.errors_policy,
            recovered: shared.recovered,
            orphans_purged: shared.orphans_purged,
            space: shared.metadata.allocator.status(),
            total_blocks,
            dirty_bytes: stats.dirty_bytes,
            cached_bytes: stats.cached_bytes,
            journal: shared.metadata.journal.status(),
            dirty_nodes: shared.metadata.trees.status().dirty_nodes,
            writeback_error: shared.files.fs_peek().err().map(|error| error.errno()),
            error_record: shared.health.record(),
            open_files: shared.handles.open_files(),
            mount_count,
        }
    }

    /// Whether the filesystem is frozen: a writer would wait at the write
    /// gate until thaw. For a transport that must keep waiting writers
    /// off the threads that serve reads. One lock of the gate, no I/O.
    pub fn is_frozen(&self) -> bool {
        self.shared.gate.state() == LifeState::Frozen
    }

    /// Unmounts: stops the background thread, writes everything back,
    /// releases every journal pin and marks the superblock clean (unless
    /// the filesystem was shut down or made read-only by an error, which
    /// leaves it for the next mount to recover). Errors are returned after
    /// everything possible was done.
    pub fn unmount(mut self) -> FsResult<()> {
        let thread_result = self.background.take().map_or(Ok(()), Background::stop);
        let shared = &self.shared;
        if shared.gate.state() == LifeState::Frozen {
            let _ = shared.gate.thaw();
        }
        let result = match shared.gate.state() {
            LifeState::Running => shared.make_clean(),
            LifeState::ReadOnly(_) if shared.options.read_only => Ok(()),
            _ => {
                shared.save_error_record();
                Ok(())
            }
        };
        shared.health.unmounted();
        thread_result.and(result)
    }
}

fn time_change(time: SetTime) -> TimeChange {
    match time {
        SetTime::Now => TimeChange::Now,
        SetTime::At(_) => TimeChange::Explicit,
    }
}

impl Drop for Filesystem {
    fn drop(&mut self) {
        if let Some(background) = self.background.take() {
            let _ = background.stop();
        }
    }
}
