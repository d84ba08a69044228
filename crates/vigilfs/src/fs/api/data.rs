//! The data half of the engine's API: open and create, read (with atime
//! updates), write (set-id bits dropped, dirty data balanced, `O_DIRECT`
//! written through), fallocate, SEEK_DATA/SEEK_HOLE, flush, release (an
//! orphan's last close deletes it), fsync and syncfs with their errseq
//! cursors.

use super::*;
use crate::format::event_log::TEXT_CAPACITY;

/// Why a write was refused, as its error event says. Each fits an event
/// record's text whole: cut, the reason for refusing an innocent file's
/// write was lost (review 21).
const REFUSED_FOR_ITS_OWN_DATA: &str = "write refused: this file's data cannot be written back";
const REFUSED_FOR_OTHERS_DATA: &str = "write refused: other files' unwritable data fills memory";
const _: () = assert!(
    REFUSED_FOR_ITS_OWN_DATA.len() <= TEXT_CAPACITY
        && REFUSED_FOR_OTHERS_DATA.len() <= TEXT_CAPACITY
);

/// Where a write lands.
#[derive(Clone, Copy)]
enum Placement {
    /// At the end of the file if the handle was opened with `O_APPEND`,
    /// else at the offset given (a library caller's `write`).
    AsOpened,
    /// At the offset given: the transport's kernel placed it.
    AtOffset,
    /// At the offset given, from the kernel's cache (see
    /// [`Filesystem::write_back_cached`]).
    FromCache,
}

impl Filesystem {
    /// Opens regular file `ino`; returns the file handle.
    pub fn open(&self, ino: u64, flags: OpenFlags, caller: &Caller) -> FsResult<u64> {
        self.open_checked(ino, flags, Access::READ, caller)
    }

    /// Opens regular file `ino` read-only to run it (execve, the kernel's
    /// `FMODE_EXEC` open): that needs execute permission, not read, so a
    /// program of mode `--x` runs.
    pub fn open_to_execute(&self, ino: u64, caller: &Caller) -> FsResult<u64> {
        let flags = OpenFlags {
            read: true,
            ..OpenFlags::default()
        };
        self.open_checked(ino, flags, Access::EXECUTE, caller)
    }

    /// [`Filesystem::open`], with `read_access` as what reading needs.
    fn open_checked(
        &self,
        ino: u64,
        flags: OpenFlags,
        read_access: Access,
        caller: &Caller,
    ) -> FsResult<u64> {
        self.inject(Operation::Open, ino, None)?;
        let record = self.record(ino)?;
        match record.file_type() {
            FileType::Regular => {}
            FileType::Directory => return Err(FileError::IsDirectory { ino }.into()),
            file_type => return Err(FileError::NotRegular { ino, file_type }.into()),
        }
        let mut access = Access::NONE;
        if flags.read {
            access = access | read_access;
        }
        if flags.write || flags.truncate {
            access = access | Access::WRITE;
        }
        self.check(ino, &record, caller, access)?;
        self.learn_synchronous(ino, &record);
        if inode_flags::is_append_only(&record) && (flags.truncate || flags.write && !flags.append)
        {
            return Err(PermissionError::NotPermitted(
                "an append-only file opens for writing only with O_APPEND, never O_TRUNC",
            )
            .into());
        }
        let _writer = if flags.write || flags.truncate {
            Some(self.enter()?)
        } else {
            None
        };
        // O_TRUNC truncates whatever the access mode (O_RDONLY|O_TRUNC as
        // well, on Linux, after the same write permission check); the
        // kernel takes the OPEN to have done it.
        if flags.truncate {
            let result = self.shared.files.truncate(ino, 0).map_err(FsError::from);
            self.shared.observe("open", result)?;
            self.kill_privileges(ino, caller, "open")?;
            // The truncate of O_TRUNC is a change like any other.
            self.sync_attributes_of("open", &record)?;
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
        self.learn_synchronous(attr.ino, &attr.record);
        let handle = self.open_handle(attr.ino, flags)?;
        Ok((attr, handle))
    }

    /// Reads up to `length` bytes at `offset` through `handle`: fewer at
    /// the end of the file, none at or past it, and never more than
    /// [`MAX_READ_BYTES`](crate::inode::MAX_READ_BYTES) in one call (as on
    /// Linux, a longer read is short; read again from where it ended).
    pub fn read(&self, handle: u64, offset: u64, length: usize) -> FsResult<Vec<u8>> {
        let file = self.file(handle)?;
        if !file.flags.read {
            return Err(FsError::WrongAccessMode(handle, "reading"));
        }
        self.shared.faults.read(file.ino, offset, length as u64)?;
        self.shared.note_foreground();
        let result = {
            let cursors = file.handle();
            self.shared.files.read(&cursors, offset, length)
        };
        // A failure of the file's extents names the file it cost.
        let bytes =
            self.shared
                .observe_read(file.ino, length as u64, result.map_err(FsError::from))?;
        self.accessed(file.ino);
        Ok(bytes)
    }

    /// Whether a read of `ino` now would update its access time (see
    /// [`Filesystem::accessed`]). A transport that lets the kernel answer
    /// reads from its page cache asks at open: a read the cache answers
    /// never reaches the engine, so under `relatime` a file read from the
    /// cache kept an access time a day old or older than its last change
    /// (review 40).
    ///
    /// Never while the file holds lost bytes: the transport's cached pages
    /// of a shared mapping's refused stores are all its programs can still
    /// see of them, and an open that dropped them to update the access
    /// time made them read EIO, a mapping's read a SIGBUS (review 55).
    pub fn read_updates_access_time(&self, ino: u64) -> bool {
        !self.shared.files.holds_lost(ino) && self.access_time_due(ino).is_some()
    }

    /// Updates the access time of `ino` after a read, as the `atime`
    /// option says (`relatime` by default: only when it is not after the
    /// modification or change time, or is a day old). Never waits: while
    /// the filesystem may not write (frozen, read-only, shut down) the
    /// access is not recorded. A failure to record it is observed (health,
    /// `errors=`) but does not fail the read.
    pub(super) fn accessed(&self, ino: u64) {
        let Some(now) = self.access_time_due(ino) else {
            return;
        };
        let Ok(_writer) = self.shared.gate.try_enter() else {
            return;
        };
        let result = self
            .shared
            .namespace
            .set_access_time(ino, now)
            .map_err(FsError::from);
        // Names the file whose access time could not be kept (the event
        // named nothing: review 26).
        let _ = self.shared.observe_at("access time update", ino, result);
    }

    /// The access time a read of `ino` now would set, if the `atime`
    /// option and the file's times say it is to be updated.
    fn access_time_due(&self, ino: u64) -> Option<Timestamp> {
        const DAY_SECONDS: i64 = 24 * 60 * 60;
        let atime = self.shared.settings.atime();
        if atime == AtimeUpdates::Never || self.shared.transport_read_only.load(Ordering::Acquire) {
            return None;
        }
        let record = self.shared.namespace.getattr(ino).ok()?;
        // Every read asks: the times are all it needs (counting the
        // allocated blocks for a whole stat cost 78% of a cold read).
        if record.flags & inode_flags::NOATIME != 0 {
            return None;
        }
        let record = self.shared.with_cached_writes(ino, record);
        let now = Timestamp::now();
        let stale = record.atime <= record.mtime
            || record.atime <= record.ctime
            || now.seconds.saturating_sub(record.atime.seconds) >= DAY_SECONDS;
        (atime == AtimeUpdates::Always || stale).then_some(now)
    }

    /// The kernel wrote `length` bytes at `offset` back from its own page
    /// cache through `handle` (the pages of a shared mapping, not a write
    /// call), and this mount refused them with `errno`. Nobody hears of it
    /// but a program that calls msync or fsync later, and the kernel does
    /// not send those pages again: the data is lost, and said so (an event
    /// marked data lost, and the error record), and remembered: until it
    /// is rewritten, reads of it fail with EIO, fsync of the file fails
    /// (`fsync_errors=until-durable`) and `unsynced` lists it.
    ///
    /// A refusal as not permitted (`EPERM`, `EACCES`: the file is immutable
    /// or append-only) loses nothing of the file: Linux refuses such a
    /// store at the page fault, and the file keeps its bytes. msync and
    /// fsync of the mapping report it (the kernel does), and the transport
    /// drops the pages holding the refused bytes, so reads show the file
    /// as it is (review 54: marked lost, the intact file read EIO for
    /// good). It is the program's error, not the storage's: no error
    /// event, count or filesystem error word, as Linux records nothing.
    pub fn cache_write_refused(&self, handle: u64, offset: u64, length: u64, errno: i32) {
        if matches!(errno, libc::EPERM | libc::EACCES) {
            if let Ok(file) = self.file(handle) {
                self.cache_stale(file.ino, Stale::Pages);
            }
            return;
        }
        if let Ok(file) = self.file(handle) {
            let recorded = self
                .shared
                .files
                .cache_write_refused(file.ino, offset, length, errno);
            self.shared.report_lost_data(
                file.ino,
                Some((offset, length)),
                errno,
                // Within an event's 56 bytes of origin.
                match recorded {
                    Ok(()) => "write-back of mapped pages refused: data lost",
                    // Later mounts will not know.
                    Err(_) => "mapped write-back refused: data lost, unrecorded",
                },
            );
        }
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
        self.write_placed(handle, offset, bytes, caller, Placement::AsOpened)
    }

    /// [`Filesystem::write`] at exactly `offset`, whatever `O_APPEND` the
    /// handle was opened with: for a transport whose kernel placed the
    /// write already. Linux resolves `O_APPEND` itself, a program may
    /// clear it with `fcntl` after the open, and the kernel writes a
    /// shared mapping's pages back through any writable descriptor: an
    /// engine that appended put those bytes at the end of the file
    /// (review 54). An append-only file (`chattr +a`) still takes only
    /// writes at its end: others fail with `EPERM`, as the open and the
    /// `fcntl` that Linux refuses on it do.
    pub fn write_at(
        &self,
        handle: u64,
        offset: u64,
        bytes: &[u8],
        caller: &Caller,
    ) -> FsResult<usize> {
        self.write_placed(handle, offset, bytes, caller, Placement::AtOffset)
    }

    /// [`Filesystem::write_at`] of pages the kernel writes back from its
    /// cache (a shared mapping's): the kernel sends them through any
    /// descriptor open for writing, so which mapping stored into them is
    /// not known. An append-only file takes none (`EPERM`): as Linux
    /// refuses a writable shared mapping of one, a mapping must not
    /// change its bytes (review 55: a refusal aimed at an `O_APPEND`
    /// descriptor fell on another's pages, as this does now for a mapping
    /// made before `chattr +a`, which Linux lets write).
    pub fn write_back_cached(
        &self,
        handle: u64,
        offset: u64,
        bytes: &[u8],
        caller: &Caller,
    ) -> FsResult<usize> {
        self.write_placed(handle, offset, bytes, caller, Placement::FromCache)
    }

    fn write_placed(
        &self,
        handle: u64,
        offset: u64,
        bytes: &[u8],
        caller: &Caller,
        placement: Placement,
    ) -> FsResult<usize> {
        let file = self.file(handle)?;
        if !file.flags.write {
            return Err(FsError::WrongAccessMode(handle, "writing"));
        }
        self.shared.note_foreground();
        let _writer = self.enter()?;
        self.shared
            .faults
            .write(file.ino, offset, bytes.len() as u64)?;
        self.refuse_if_made_immutable(file.ino)?;
        let start = match placement {
            Placement::AsOpened if file.flags.append => self.shared.files.size(&file.handle())?,
            Placement::AsOpened => offset,
            // Only a handle opened with O_APPEND can be on an append-only
            // file (a flag set after the open binds later opens, as on
            // Linux).
            Placement::AtOffset if file.flags.append => {
                let end = self.shared.files.size(&file.handle())?;
                if offset != end && inode_flags::is_append_only(&self.record(file.ino)?) {
                    return Err(PermissionError::NotPermitted(
                        "a write of an append-only file away from its end",
                    )
                    .into());
                }
                offset
            }
            Placement::AtOffset => offset,
            Placement::FromCache => {
                if inode_flags::is_append_only(&self.record(file.ino)?) {
                    return Err(PermissionError::NotPermitted(
                        "a mapped write of an append-only file",
                    )
                    .into());
                }
                offset
            }
        };
        // In pieces, with dirty data balanced before each, so one large
        // write cannot take more memory than the limit allows.
        let mut written = 0;
        for piece in bytes.chunks(WRITE_PIECE_BYTES) {
            let write_piece = |at: u64| {
                self.balance_dirty(file.ino).and_then(|()| {
                    let cursors = file.handle();
                    Ok(self.shared.files.write(&cursors, at, piece)?)
                })
            };
            match self.allocating(|| write_piece(start + written as u64)) {
                Ok(count) => {
                    written += count;
                    if count < piece.len() {
                        break;
                    }
                }
                // What was written stays written: a short count now, the
                // error at the next call (as write(2) does).
                Err(_) if written > 0 => break,
                Err(error) => return Err(error),
            }
        }
        self.kill_privileges(file.ino, caller, "write")?;
        if self.is_synchronous(file.ino) {
            // As an O_SYNC write: durable before it returns, and a failure
            // to make it so is this write's error.
            drop(_writer);
            self.fsync_file(&file)?;
        } else if self.shared.files.cache_stats().dirty_bytes
            > self.shared.settings.dirty_limit_bytes()
        {
            if let Some(background) = self.background.get() {
                background.kick();
            }
        }
        Ok(written)
    }

    /// [`Filesystem::write_at`] through a descriptor in `O_DIRECT` mode: the
    /// data reaches the device before the call returns, so a device failure
    /// is this write's error, as on a disk, and not news for a later fsync.
    /// Writeback goes by file, so the file's other dirty data goes with it,
    /// and like every writeback it ends durable (stronger than a disk's
    /// `O_DIRECT`, which leaves new extents to the next fsync). A failed
    /// write's data stays cached to be retried: a write that fails may
    /// have changed the file. (Through the mount, the kernel truncates
    /// back what a failed direct write added past the end.)
    pub fn write_direct(
        &self,
        handle: u64,
        offset: u64,
        bytes: &[u8],
        caller: &Caller,
    ) -> FsResult<usize> {
        let written = self.write_at(handle, offset, bytes, caller)?;
        let file = self.file(handle)?;
        self.shared.files.write_through(&mut file.handle())?;
        Ok(written)
    }

    /// Keeps dirty data bounded, as the kernel's `balance_dirty_pages`
    /// does: past the limit the background thread is woken; past twice the
    /// limit this writer (to inode `ino`) writes back itself, and so waits
    /// for it. When that writeback fails (the dirty pages stay, to be
    /// retried), a write to a file whose own data failed is refused with
    /// its error rather than taken into memory without bound. A write to
    /// another file goes on: one file that cannot be written must not stop
    /// every writer. Only past [`FAILING_DIRTY_LIMITS`] times the limit,
    /// the most memory kept for data that cannot be written, is every
    /// write refused, and each refusal recorded with its reason.
    fn balance_dirty(&self, ino: u64) -> FsResult<()> {
        let limit = self.shared.settings.dirty_limit_bytes();
        let dirty = self.shared.files.cache_stats().dirty_bytes;
        if dirty > limit {
            if let Some(background) = self.background.get() {
                background.kick();
            }
        }
        if dirty <= limit.saturating_mul(2) {
            return Ok(());
        }
        // Failures are reported by the data path's listener and stay in
        // the error words for fsync.
        let summary = self.shared.files.writeback_all();
        let Some(errno) = summary.first_error else {
            return Ok(());
        };
        let origin = if summary.failed_inodes.contains(&ino) {
            REFUSED_FOR_ITS_OWN_DATA
        } else if self.shared.files.cache_stats().dirty_bytes
            <= limit.saturating_mul(FAILING_DIRTY_LIMITS)
        {
            return Ok(());
        } else {
            REFUSED_FOR_OTHERS_DATA
        };
        // Each refusal is an error event of its file (repeats are damped).
        self.shared.health.report(&Incident {
            kind: ErrorKind::Writeback,
            errno: errno.get(),
            inode: Some((ino, self.shared.generation_of(ino))),
            range: None,
            block: None,
            origin,
        });
        Err(FileError::Writeback(errno).into())
    }

    /// fallocate through `handle` by `caller`: allocate (mode 0,
    /// optionally KEEP_SIZE), PUNCH_HOLE|KEEP_SIZE, or ZERO_RANGE
    /// (optionally KEEP_SIZE). Like a write, it drops the set-id bits of a
    /// caller other than root.
    pub fn fallocate(
        &self,
        handle: u64,
        offset: u64,
        length: u64,
        mode: FallocateMode,
        caller: &Caller,
    ) -> FsResult<()> {
        let file = self.file(handle)?;
        if !file.flags.write {
            return Err(FsError::WrongAccessMode(handle, "writing"));
        }
        self.shared.note_foreground();
        let _writer = self.enter()?;
        self.inject(Operation::Fallocate, file.ino, None)?;
        let record = self.record(file.ino)?;
        let only_allocates = mode.bits() & !FallocateMode::KEEP_SIZE.bits() == 0;
        if inode_flags::is_immutable(&record)
            || inode_flags::is_append_only(&record) && !only_allocates
        {
            return Err(PermissionError::NotPermitted(
                "fallocate of an immutable file, or one that is not a plain allocation of an append-only file",
            )
            .into());
        }
        let allocate = || {
            self.shared
                .files
                .fallocate(file.ino, offset, length, mode)
                .map_err(FsError::from)
        };
        let result = self.allocating(allocate);
        self.shared.observe("fallocate", result)?;
        self.kill_privileges(file.ino, caller, "fallocate")?;
        self.note("fallocate", Some(file.ino), None, None);
        if inode_flags::is_synchronous(&record) {
            drop(_writer);
            self.fsync_file(&file)?;
        }
        Ok(())
    }

    /// lseek with SEEK_DATA or SEEK_HOLE through `handle`.
    pub fn seek_data_hole(&self, handle: u64, offset: u64, whence: Seek) -> FsResult<u64> {
        let file = self.file(handle)?;
        let result = self
            .shared
            .files
            .seek_data_hole(file.ino, offset, whence)
            .map_err(FsError::from);
        self.shared.observe("lseek", result)
    }

    /// Whether an open file description of the file of `handle`, other
    /// than `handle`, may write it. While one does, a FUSE kernel may hold
    /// pages written through a shared mapping that reach the engine only
    /// at their writeback: what the engine calls a hole may hold data.
    pub fn written_through_another_description(&self, handle: u64) -> FsResult<bool> {
        let file = self.file(handle)?;
        Ok(self.shared.handles.open_for_writing(file.ino, handle))
    }

    /// `close(2)` of one descriptor of the handle: reports nothing (errors
    /// stay for fsync, as on Linux local filesystems).
    pub fn flush(&self, handle: u64) -> FsResult<()> {
        let file = self.file(handle)?;
        self.inject(Operation::Close, file.ino, None)
    }

    /// The last close of the handle; an orphan goes with its last handle.
    /// Deleting it writes: while the filesystem is frozen that waits for
    /// the thaw (without holding the caller), and when it may no longer
    /// write the orphan stays for the next mount to delete.
    pub fn release(&self, handle: u64) -> FsResult<()> {
        let file = self.shared.handles.remove_file(handle)?;
        let ino = file.ino;
        // A file rewritten in place goes out at its last close, ahead of
        // the next commit (which would write it anyway).
        if self.shared.files.take_ordered(ino) {
            self.write_back_if_writable(ino);
        }
        self.shared.files.closed(ino);
        if self.closed(ino, "release")? {
            self.shared.files.forget(ino);
        }
        Ok(())
    }

    /// Writes back `ino`'s data now if the filesystem may write (see
    /// [`crate::inode::Files::write_back_before_replacing`]); frozen, it
    /// was all written back and writers wait.
    pub(super) fn write_back_if_writable(&self, ino: u64) {
        let writable = !self.shared.transport_read_only.load(Ordering::Acquire);
        if let (Ok(_writer), true) = (self.shared.gate.try_enter(), writable) {
            self.shared.files.write_back_before_replacing(ino);
        }
    }

    /// One open of `ino` (a file or a directory) is closed: the last
    /// close of an orphan deletes it if the filesystem may write now (see
    /// [`Filesystem::release`]). Returns whether it was deleted.
    pub(super) fn closed(&self, ino: u64, operation: &'static str) -> FsResult<bool> {
        let writable = !self.shared.transport_read_only.load(Ordering::Acquire);
        let deleted = match self.shared.gate.try_enter() {
            Ok(_writer) if writable => {
                let mut closing = self.shared.released_space.closing();
                let result = self.shared.namespace.closed(ino).map_err(FsError::from);
                if matches!(&result, Err(error) if error.errno() == libc::ENOSPC) {
                    // Even one extent at a time found no space: the
                    // writeback rounds try again as others free some.
                    self.shared.defer_orphans(vec![ino]);
                }
                let deleted = self.shared.observe(operation, result)?;
                if deleted {
                    closing.deleted_an_orphan();
                }
                deleted
            }
            Ok(_) | Err(LifeState::Frozen) => {
                if self.shared.namespace.closed_keeping_orphan(ino) {
                    self.shared.defer_orphans(vec![ino]);
                }
                false
            }
            Err(_) => {
                self.shared.namespace.closed_keeping_orphan(ino);
                false
            }
        };
        Ok(deleted)
    }

    /// Why nothing may be written now (shut down, or read-only after an
    /// error or by mount), if so: fsync and syncfs then write nothing.
    pub(super) fn may_not_write(&self) -> Option<FsError> {
        match self.shared.gate.state() {
            LifeState::ShutDown(why) => Some(FsError::ShutDown(why)),
            LifeState::ReadOnly(why) => Some(FsError::NotDurable(why)),
            LifeState::Running | LifeState::Frozen => None,
        }
    }

    /// Whether everything of `ino` is durable, on a mount that may no
    /// longer write: its data, and the metadata changes made to it or to
    /// its entries. Other changes that cannot be written any more (the
    /// bad-block list a media failure added to, another file's) do not
    /// make a file that is durable fail its fsync: after `errors=remount-ro`
    /// a database's checkpoint of a file it had synced must not read as a
    /// loss (review 41).
    pub(super) fn durable_while_stopped(&self, ino: u64) -> bool {
        let durable_seq = self.shared.metadata.journal.status().durable_seq;
        self.shared.files.is_durable(ino) && !self.shared.changes.any_pending_for(ino, durable_seq)
    }

    /// Whether any metadata change a program made is not durable: what
    /// `vigilfs unsynced` lists (the filesystem's own records, such as the
    /// bad-block list, are not among them).
    fn changes_pending(&self) -> bool {
        let durable_seq = self.shared.metadata.journal.status().durable_seq;
        let (pending, omitted) = self.shared.changes.pending(durable_seq);
        omitted > 0 || !pending.is_empty()
    }

    /// fsync/fdatasync: writes back the file, makes its metadata durable,
    /// and reports the first writeback error this handle has not heard of.
    /// When nothing may be written it writes nothing: it reports the error
    /// words, and fails if the file has data or metadata that is not
    /// durable (a success would be a lie), or, as on ext4 and XFS, if the
    /// filesystem is shut down.
    ///
    /// An fsync failure injected by the crash lab on a file with dirty data
    /// is made a real one: the file's writeback is run with its data write
    /// failing, so the pages stay dirty and the error words are set, as
    /// after a device error.
    pub fn fsync(&self, handle: u64, data_only: bool) -> FsResult<()> {
        let started = std::time::Instant::now();
        let outcome = self.fsync_timed(handle, data_only);
        self.shared.fsync_latency.record(started.elapsed());
        outcome
    }

    fn fsync_timed(&self, handle: u64, _data_only: bool) -> FsResult<()> {
        let file = self.file(handle)?;
        let injected = match self.inject(Operation::Fsync, file.ino, None) {
            Err(FsError::Injected { rule, errno, .. })
                if !self.shared.files.is_durable(file.ino) =>
            {
                let errno = crate::device::Errno(errno);
                let rule = crate::device::RuleId(rule);
                self.shared.faults.force_data_failure(file.ino, rule, errno);
                Some(errno)
            }
            outcome => {
                outcome?;
                None
            }
        };
        let outcome = self.fsync_file(&file);
        if injected.is_some() {
            self.shared.faults.unforce_data_failure(file.ino);
        }
        outcome
    }

    fn fsync_file(&self, file: &OpenFile) -> FsResult<()> {
        if let Some(stopped) = self.may_not_write() {
            let reported = self.shared.files.report(&mut file.handle());
            if matches!(stopped, FsError::ShutDown(_)) {
                // As ext4 and XFS do: a shut-down filesystem fails every
                // fsync, so no program takes it for a working one.
                return Err(stopped);
            }
            if !self.durable_while_stopped(file.ino) {
                // Lost mapped data fails it for the refusal's cause, as on
                // a writable mount (review 33: EIO read-only, ENOSPC not).
                if let Some(errno) = self.shared.files.lost_errno(file.ino) {
                    return Err(FileError::Writeback(errno).into());
                }
                return Err(stopped);
            }
            return Ok(reported?);
        }
        // Replacements made so far become durable with this fsync's
        // commit, and its own writeback may already flush: their files'
        // data goes first.
        self.shared.files.write_back_ordered();
        let synced = {
            let mut cursors = file.handle();
            self.shared.files.fsync(&mut cursors)
        };
        let flushed = self.commit_durably("fsync");
        self.shared.check_journal("fsync");
        synced?;
        flushed
    }

    /// syncfs through `handle`: everything written back and durable, then
    /// the first filesystem writeback error this handle has not heard of.
    pub fn syncfs(&self, handle: u64) -> FsResult<()> {
        let file = self.file(handle)?;
        let mut cursors = file.handle();
        let cursor = cursors.fs_cursor_mut();
        self.syncfs_with(cursor)
    }

    /// syncfs as a new opener would do it (`vigilfs sync`: open the mount
    /// point, syncfs, close): everything written back and durable, then the
    /// filesystem writeback error if nobody has been told of it yet — so
    /// each error is reported once, to whoever asks first.
    pub fn syncfs_once(&self) -> FsResult<()> {
        let mut cursor = self.shared.files.sample_fs_cursor();
        self.syncfs_with(&mut cursor)
    }

    /// [`Filesystem::syncfs_once`] for user `uid`, who did not mount: the
    /// error is reported once to each such user, and still to the next
    /// new opener (see [`crate::inode::Files::syncfs_for_user`]).
    pub fn syncfs_for_user(&self, uid: u32) -> FsResult<()> {
        self.syncfs_reporting(|| self.shared.files.report_fs_for_user(uid))
    }

    /// syncfs with `cursor` into the filesystem's error word.
    fn syncfs_with(&self, cursor: &mut Since) -> FsResult<()> {
        self.syncfs_reporting(|| self.shared.files.report_fs(cursor))
    }

    /// syncfs, then `report`. When nothing may be written it writes
    /// nothing, reports, and fails if anything is not durable.
    fn syncfs_reporting(
        &self,
        report: impl FnOnce() -> crate::inode::FileResult<()>,
    ) -> FsResult<()> {
        if let Some(stopped) = self.may_not_write() {
            let reported = report();
            if matches!(stopped, FsError::ShutDown(_))
                || !self.shared.files.unwritten().is_empty()
                || self.changes_pending()
            {
                return Err(stopped);
            }
            return Ok(reported?);
        }
        let result = self
            .shared
            .files
            .syncfs_reporting(report)
            .map_err(FsError::from);
        self.shared.check_journal("syncfs");
        result
    }
}
