//! The engine's one error type, and its one mapping to errno.
//!
//! Every operation of [`Filesystem`](super::Filesystem) returns [`FsError`].
//! The layers below have their own error types (each with its own errno
//! mapping, kept next to the causes it knows); this type wraps them and adds
//! the conditions only a mounted filesystem has: frozen, read-only, shut
//! down, bad handles. [`FsError::errno`] is the single exhaustive place the
//! FUSE adapter (or any other transport) turns an engine error into errno.

use thiserror::Error;

use crate::btree::BtreeError;
use crate::failure::FailureError;
use crate::inode::{FileError, NamespaceError, PermissionError, XattrError};
use crate::journal::JournalError;
use crate::rmap::RmapError;
use crate::scrub::ScrubError;

/// Why an engine operation failed.
#[derive(Debug, Error)]
pub enum FsError {
    /// A namespace operation failed.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// A file-data operation failed (including a writeback error reported to
    /// this handle).
    #[error(transparent)]
    File(#[from] FileError),
    /// An extended-attribute operation failed.
    #[error(transparent)]
    Xattr(#[from] XattrError),
    /// The caller may not do this.
    #[error(transparent)]
    Permission(#[from] PermissionError),
    /// The file handle is not open (or is a directory handle).
    #[error("file handle {0} is not open")]
    BadHandle(u64),
    /// The handle is not open for what was asked (read on a write-only
    /// handle, write on a read-only one).
    #[error("file handle {0} is not open for {1}")]
    WrongAccessMode(u64, &'static str),
    /// The filesystem is mounted read-only, or was remounted read-only by
    /// the `errors=remount-ro` policy.
    #[error("the filesystem is read-only{}", .0.as_deref().map(|why| format!(": {why}")).unwrap_or_default())]
    ReadOnly(Option<String>),
    /// The filesystem was shut down; nothing more is written.
    #[error("the filesystem was shut down: {0}")]
    ShutDown(String),
    /// fsync or syncfs while the filesystem is read-only after an error, with
    /// data or metadata that is not durable and now never will be.
    #[error("not durable: the filesystem is read-only ({0})")]
    NotDurable(String),
    /// A fault rule of the crash lab failed this operation on purpose.
    #[error("{operation}: fault injected by rule {rule} (errno {errno})")]
    Injected {
        /// The rule that fired.
        rule: u64,
        /// The operation.
        operation: &'static str,
        /// The errno injected.
        errno: i32,
    },
    /// The operation does not apply to this kind of inode or argument.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// Something vigilfs does not keep (an inode flag it has not).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Writing the superblock (mount state, error record) failed.
    #[error("superblock: {0}")]
    Superblock(String),
    /// A read-only mount could not be made writable (its image could not
    /// be written, a thread could not start); it stays read-only.
    #[error("not made writable: {0}")]
    NotMadeWritable(String),
    /// A media failure could not be looked up or handled (a range outside
    /// the device is `EINVAL`).
    #[error("media failure: {0}")]
    Failure(#[from] FailureError),
    /// A scrub could not go on.
    #[error("scrub: {0}")]
    Scrub(#[from] ScrubError),
    /// Something of which one runs at a time is running (a scrub).
    #[error("busy: {0}")]
    Busy(&'static str),
}

impl FsError {
    /// The errno a system call reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Namespace(error) => error.errno(),
            FsError::File(error) => error.errno(),
            FsError::Xattr(error) => error.errno(),
            FsError::Permission(error) => error.errno(),
            FsError::BadHandle(_) => libc::EBADF,
            FsError::WrongAccessMode(..) => libc::EBADF,
            FsError::ReadOnly(_) => libc::EROFS,
            FsError::ShutDown(_) => libc::EIO,
            FsError::NotDurable(_) => libc::EIO,
            FsError::Injected { errno, .. } => *errno,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::Unsupported(_) => libc::EOPNOTSUPP,
            FsError::Superblock(_) => libc::EIO,
            FsError::NotMadeWritable(_) => libc::EIO,
            FsError::Failure(error) => error.errno(),
            FsError::Scrub(_) => libc::EIO,
            FsError::Busy(_) => libc::EBUSY,
        }
    }

    /// Whether this error means the metadata (b-trees, journal) failed,
    /// which the `errors=` policy acts on. Data errors (writeback, reads of
    /// file blocks) are reported through errseq and events instead.
    pub fn is_metadata_failure(&self) -> bool {
        match self {
            // A full filesystem, or a transaction too large for a journal
            // entry (a request the engine should have split), is not a
            // failing device or damage: ENOSPC goes to the caller only.
            FsError::Namespace(NamespaceError::Btree(error))
            | FsError::File(FileError::Btree(error))
                if is_not_damage(error) =>
            {
                false
            }
            FsError::Namespace(error) => {
                matches!(error, NamespaceError::Btree(_) | NamespaceError::Corrupt(_))
            }
            FsError::File(error) => matches!(
                error,
                FileError::Btree(_) | FileError::Journal(_) | FileError::Corrupt(_)
            ),
            FsError::Xattr(error) => error.is_metadata_failure(),
            FsError::Superblock(_) => true,
            // Walking the reverse map or the trees for an owner failed: the
            // metadata that attributes failures is damaged.
            FsError::Failure(error) => match error {
                FailureError::OutOfDevice { .. } | FailureError::TooLong { .. } => false,
                FailureError::Btree(error) | FailureError::Rmap(RmapError::Btree(error)) => {
                    !is_not_damage(error)
                }
                _ => true,
            },
            FsError::Scrub(_) => true,
            FsError::Busy(_) => false,
            FsError::Permission(_)
            | FsError::BadHandle(_)
            | FsError::WrongAccessMode(..)
            | FsError::ReadOnly(_)
            | FsError::ShutDown(_)
            | FsError::NotDurable(_)
            | FsError::Injected { .. }
            | FsError::Invalid(_)
            | FsError::Unsupported(_)
            | FsError::NotMadeWritable(_) => false,
        }
    }
}

fn is_not_damage(error: &BtreeError) -> bool {
    matches!(
        error,
        BtreeError::NoSpace { .. } | BtreeError::Journal(JournalError::TooLarge { .. })
    )
}

/// An engine operation's result.
pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_transaction_is_not_a_metadata_failure() {
        let oversized = BtreeError::Journal(JournalError::TooLarge {
            bytes: 1 << 20,
            limit: 1 << 18,
        });
        assert!(!FsError::File(FileError::Btree(oversized)).is_metadata_failure());
        let full = BtreeError::NoSpace {
            needed: 10,
            available: 2,
        };
        let full = FsError::File(FileError::Btree(full));
        assert!(!full.is_metadata_failure());
        assert_eq!(full.errno(), libc::ENOSPC);
        let failed = BtreeError::Failed("device".into());
        assert!(FsError::File(FileError::Btree(failed)).is_metadata_failure());
        assert_eq!(FsError::ReadOnly(None).errno(), libc::EROFS);
        assert_eq!(FsError::ShutDown("test".into()).errno(), libc::EIO);
    }
}
