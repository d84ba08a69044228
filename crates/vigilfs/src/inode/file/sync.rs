//! Reporting writeback errors: fsync, syncfs and the monitors' peeks.
//!
//! Each report is a check of one error word against one cursor (the
//! handle's, the filesystem's, or a user's), so an error reaches each
//! holder once and no holder can consume another's. By default a sync
//! whose own writeback failed fails too, even for a cursor that already
//! heard of the error: success means the data is durable. The module
//! comment of `inode::file` gives the whole policy.

use super::*;

impl Files {
    /// Reports the first writeback error of the handle's inode it has not
    /// heard of, writing nothing back: fsync when the filesystem may not
    /// write.
    pub fn report(&self, handle: &mut Handle) -> FileResult<()> {
        let mut cache = self.cache.lock();
        let state = self.state(&mut cache.inodes, handle.ino)?;
        state
            .errseq
            .check_and_advance(&mut handle.cursor)
            .map_err(FileError::Writeback)
    }

    /// The errno an fsync of `ino` reports for its lost mapped data (see
    /// [`Files::cache_write_refused`]), if it holds any and fsyncs report
    /// it ([`FsyncErrors::UntilDurable`]).
    pub fn lost_errno(&self, ino: u64) -> Option<Errno> {
        if self.report_once.load(Ordering::Relaxed) {
            return None;
        }
        let mut cache = self.cache.lock();
        self.state(&mut cache.inodes, ino).ok()?.lost.errno()
    }

    /// [`Files::report`] for the filesystem's error word (syncfs).
    pub fn report_fs(&self, cursor: &mut Since) -> FileResult<()> {
        self.writeback
            .fs_errseq()
            .check_and_advance(cursor)
            .map_err(FileError::Writeback)
    }

    /// Writes back the handle's inode, then reports the first writeback
    /// error this handle has not heard of (see the module comment).
    pub fn fsync(&self, handle: &mut Handle) -> FileResult<()> {
        // The state was loaded at open; if it is gone (forgotten), taking
        // off finds nothing and the lookup below reports the inode.
        let written = self.writeback.writeback_inode(handle.ino);
        let mut cache = self.cache.lock();
        let state = self.state(&mut cache.inodes, handle.ino)?;
        let reported = state.errseq.check_and_advance(&mut handle.cursor);
        // With FsyncErrors::Once, a failure of pages whose failure is in
        // the error word is reported through the word alone (once per
        // handle); a failure that never reached it (an inode-record update
        // with no pages) is still returned.
        let in_error_word = !state.failed.is_empty();
        let lost = state.lost.errno();
        drop(cache);
        let report_once = self.report_once.load(Ordering::Relaxed);
        if let Err(errno) = written {
            if !(report_once && in_error_word) {
                return Err(FileError::Writeback(errno));
            }
        }
        reported.map_err(FileError::Writeback)?;
        match lost {
            Some(errno) if !report_once => Err(FileError::Writeback(errno)),
            _ => Ok(()),
        }
    }

    /// Writes back the handle's inode now, for a write that must reach the
    /// device before it returns (`O_DIRECT`). A failure is that write's
    /// error: the handle has heard of it (its cursor moves past the error
    /// words the failure set), and the pages stay dirty to be retried, as
    /// after any failed writeback. Success reports nothing: an older error
    /// this handle has not heard of waits for its fsync.
    pub fn write_through(&self, handle: &mut Handle) -> FileResult<()> {
        let Err(errno) = self.writeback.writeback_inode(handle.ino) else {
            return Ok(());
        };
        let mut cache = self.cache.lock();
        if let Ok(state) = self.state(&mut cache.inodes, handle.ino) {
            let _heard = state.errseq.check_and_advance(&mut handle.cursor);
        }
        Err(FileError::Writeback(errno))
    }

    /// Writes back every inode, flushes the journal, then reports the first
    /// filesystem writeback error this handle has not heard of.
    pub fn syncfs(&self, handle: &mut Handle) -> FileResult<()> {
        self.syncfs_with(&mut handle.fs_cursor)
    }

    /// A cursor into the filesystem's error word as a new opener samples
    /// it: an error nobody has been told of is still ahead of it.
    pub fn sample_fs_cursor(&self) -> Since {
        self.writeback.fs_errseq().sample()
    }

    /// [`Files::syncfs`] with a cursor that is not a handle's (a control
    /// command's, say).
    pub fn syncfs_with(&self, cursor: &mut Since) -> FileResult<()> {
        self.syncfs_reporting(|| self.report_fs(cursor))
    }

    /// [`Files::syncfs_with`] for user `uid`, who did not mount (`vigilfs
    /// sync` is open to every user of a shared mount, as syncfs(2) is to
    /// anyone with a file open): reported as to a new opener, and once to
    /// each such user, but never consumed, so that one user cannot take
    /// the report of an error from the others (review 32: another user's
    /// sync left root's `vigilfs sync || alert` silent).
    pub fn syncfs_for_user(&self, uid: u32) -> FileResult<()> {
        self.syncfs_reporting(|| self.report_fs_for_user(uid))
    }

    /// The filesystem error user `uid` has not heard of (see
    /// [`Files::syncfs_for_user`]), never consumed.
    pub fn report_fs_for_user(&self, uid: u32) -> FileResult<()> {
        /// Users remembered; past it, each starts again as a new opener.
        const USERS: usize = 4096;
        let word = self.writeback.fs_errseq();
        let mut cursors = self
            .user_cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cursors.len() >= USERS && !cursors.contains_key(&uid) {
            cursors.clear();
        }
        let cursor = cursors.entry(uid).or_insert_with(|| word.sample());
        // Looked at first: an error set meanwhile is reported now and
        // again next time, never skipped.
        let now = word.peek();
        let reported = word.check(*cursor);
        *cursor = now;
        reported.map_err(FileError::Writeback)
    }

    /// Writes back every inode, flushes the journal, then asks `report`.
    pub(crate) fn syncfs_reporting(
        &self,
        report: impl FnOnce() -> FileResult<()>,
    ) -> FileResult<()> {
        let summary = self.writeback_all();
        let flushed = self.metadata.journal.flush();
        let reported = report();
        if let Some(errno) = summary.first_error {
            if !self.report_once.load(Ordering::Relaxed) {
                return Err(FileError::Writeback(errno));
            }
        }
        flushed?;
        reported
    }

    /// Writes back every inode with dirty pages (what background writeback
    /// does). Errors go into the error words, never back to the caller.
    pub fn writeback_all(&self) -> WritebackSummary {
        // Every file ordered before the next commit is among those written
        // back now; one ordered after this goes on waiting.
        self.ordered_files().clear();
        self.writeback.writeback_all()
    }

    /// The latest writeback error of inode `ino` this mount, if any, for a
    /// monitor. Never consumes: the error still reaches the next opener.
    pub fn peek_error(&self, ino: u64) -> FileResult<()> {
        let mut cache = self.cache.lock();
        let state = self.state(&mut cache.inodes, ino)?;
        // Mark the value OBSERVED so a later error is told apart, then
        // compare with the zero cursor: any error ever set differs from it.
        let _observed = state.errseq.peek();
        state
            .errseq
            .check(Since::default())
            .map_err(FileError::Writeback)
    }

    /// Whether the latest filesystem writeback error was reported to a
    /// syncfs (false while there is none). Never consumes.
    pub fn fs_error_reported(&self) -> bool {
        self.writeback.fs_errseq().state().reported
    }

    /// The latest filesystem writeback error this mount, if any, for a
    /// monitor. Never consumes.
    pub fn fs_peek(&self) -> FileResult<()> {
        let _observed = self.writeback.fs_errseq().peek();
        self.writeback
            .fs_errseq()
            .check(Since::default())
            .map_err(FileError::Writeback)
    }
}
