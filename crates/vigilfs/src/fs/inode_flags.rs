//! Inode flags through the mount (`chattr`, `lsattr`): reading and setting
//! them, the one check that cannot be made at open (a descriptor opened
//! for writing before its file became immutable writes no more: ext4's
//! rule since Linux 5.4; fstests generic/545), and the synchronous flags'
//! promise (`S`, `D`): the change is durable before the call returns.
//!
//! The rules for who may set which flag, and what each forbids, are in
//! `inode/inode_flags.rs` and `inode/permission/`. Two sets of inodes
//! are kept here so that a write checks memory instead of reading the
//! inode's record each time: those made immutable during this mount (an
//! inode immutable at open was refused there), and the synchronous ones
//! opened or flagged during this mount (every open of a regular file reads
//! its record, so no descriptor can write to a synchronous file unseen).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use super::faults::Operation;
use super::{Filesystem, FsError, FsResult, Stale};
use crate::inode::inode_flags::{self, check_flag_change, FlagChangeError};
use crate::inode::{Caller, FileError, InodeRecord, PermissionError};

/// A set of inodes with one flag, as this mount learnt it.
#[derive(Default)]
pub(super) struct InodeSet(Mutex<HashSet<u64>>);

impl InodeSet {
    pub(super) fn set(&self, ino: u64, member: bool) {
        let mut inodes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if member {
            inodes.insert(ino);
        } else {
            inodes.remove(&ino);
        }
    }

    pub(super) fn contains(&self, ino: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&ino)
    }
}

impl Filesystem {
    /// Inode `ino`'s flags (`FS_IOC_GETFLAGS`: Linux's `FS_*_FL` bits).
    pub fn get_flags(&self, ino: u64) -> FsResult<u32> {
        Ok(self.record(ino)?.flags & inode_flags::SUPPORTED)
    }

    /// Sets inode `ino`'s flags (`FS_IOC_SETFLAGS`): `EOPNOTSUPP` for a flag
    /// vigilfs does not keep, `EPERM` unless the caller owns the inode or
    /// is root, and for anyone but root changing immutable or append-only.
    pub fn set_flags(&self, ino: u64, flags: u32, caller: &Caller) -> FsResult<()> {
        let _writer = self.enter()?;
        self.inject(Operation::Setattr, ino, None)?;
        let record = self.record(ino)?;
        check_flag_change(&record, caller, flags).map_err(|error| match error {
            FlagChangeError::Unsupported(bits) => {
                FsError::Unsupported(format!("inode flags {bits:#x}"))
            }
            FlagChangeError::Permission(error) => error.into(),
        })?;
        let flags = inode_flags::kept(&record, flags);
        let result = self
            .shared
            .namespace
            .set_flags(ino, flags)
            .map_err(FsError::from);
        self.shared.observe("setflags", result)?;
        self.shared
            .made_immutable
            .set(ino, flags & inode_flags::IMMUTABLE != 0);
        self.shared
            .synchronous
            .set(ino, flags & inode_flags::SYNC != 0);
        // The ctime changed, and the kernel does not know: its cached
        // attributes must go (fstests generic/277).
        self.cache_stale(ino, Stale::Attributes);
        self.note("setflags", Some(ino), None, None);
        // Setting or clearing S is itself a change to a synchronous file.
        if inode_flags::is_synchronous(&record) || flags & inode_flags::SYNC != 0 {
            self.commit_durably("setflags")?;
        }
        Ok(())
    }

    /// Whether writes to `ino` must be durable when they return (`S`).
    pub(super) fn is_synchronous(&self, ino: u64) -> bool {
        self.shared.synchronous.contains(ino)
    }

    /// Remembers that `record` (being opened) is synchronous, if it is.
    pub(super) fn learn_synchronous(&self, ino: u64, record: &InodeRecord) {
        if inode_flags::is_synchronous(record) {
            self.shared.synchronous.set(ino, true);
        }
    }

    /// After an entry change in `directories`: durable now if one of
    /// them asks for it (`S` or `D`), as Linux's `IS_DIRSYNC`.
    pub(super) fn sync_entries_of(
        &self,
        operation: &'static str,
        directories: &[&InodeRecord],
    ) -> FsResult<()> {
        if directories
            .iter()
            .any(|record| inode_flags::syncs_entries(record))
        {
            self.commit_durably(operation)?;
        }
        Ok(())
    }

    /// After a change to `record`'s attributes (or, for a regular file, its
    /// size): durable now if it is synchronous (`S`).
    pub(super) fn sync_attributes_of(
        &self,
        operation: &'static str,
        record: &InodeRecord,
    ) -> FsResult<()> {
        if inode_flags::is_synchronous(record) {
            self.commit_durably(operation)?;
        }
        Ok(())
    }

    /// Makes every metadata change so far durable (a journal flush).
    pub(super) fn commit_durably(&self, operation: &'static str) -> FsResult<()> {
        // Replacements made so far become durable with this commit: their
        // files' data goes first.
        self.shared.files.write_back_ordered();
        let flushed = self
            .shared
            .metadata
            .journal
            .flush()
            .map_err(|error| FsError::File(FileError::Journal(error)));
        self.shared.observe(operation, flushed)
    }

    /// `EPERM` if `ino` became immutable after a descriptor was opened on
    /// it for writing.
    pub(super) fn refuse_if_made_immutable(&self, ino: u64) -> FsResult<()> {
        if self.shared.made_immutable.contains(ino) {
            return Err(PermissionError::NotPermitted("the file became immutable").into());
        }
        Ok(())
    }
}
