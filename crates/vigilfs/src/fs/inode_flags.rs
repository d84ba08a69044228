//! Inode flags through the mount (`chattr`, `lsattr`): reading and setting
//! them, and the one check that cannot be made at open: a descriptor
//! opened for writing before its file became immutable writes no more
//! (ext4's rule since Linux 5.4; fstests generic/545).
//!
//! The rules for who may set which flag, and what each forbids, are in
//! `inode/inode_flags.rs` and `inode/permission.rs`; the set of inodes made
//! immutable during this mount is kept here, so that a write checks a
//! set in memory instead of reading the inode's record each time (an
//! inode immutable at open was refused there).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use super::faults::Operation;
use super::{Filesystem, FsError, FsResult};
use crate::inode::inode_flags::{self, check_flag_change, FlagChangeError};
use crate::inode::{Caller, PermissionError};

/// Inodes made immutable while this mount served them.
#[derive(Default)]
pub(super) struct MadeImmutable(Mutex<HashSet<u64>>);

impl MadeImmutable {
    fn set(&self, ino: u64, immutable: bool) {
        let mut inodes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if immutable {
            inodes.insert(ino);
        } else {
            inodes.remove(&ino);
        }
    }

    fn contains(&self, ino: u64) -> bool {
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
        let result = self
            .shared
            .namespace
            .set_flags(ino, flags)
            .map_err(FsError::from);
        self.shared.observe("setflags", result)?;
        self.shared
            .made_immutable
            .set(ino, flags & inode_flags::IMMUTABLE != 0);
        // The ctime changed, and the kernel does not know: its cached
        // attributes must go (fstests generic/277).
        self.attributes_changed(ino);
        self.note("setflags", Some(ino), None, None);
        Ok(())
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
