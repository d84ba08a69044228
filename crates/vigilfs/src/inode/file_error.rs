//! The data path's one error type, [`FileError`], and its errno mapping.
//!
//! Every layer under a file operation (the extent map, the page cache,
//! writeback, the file operations themselves) returns [`FileError`]; the
//! mounted layer wraps it and maps it to errno in its one place. Errors
//! that only travel inside error words (writeback failures) are reduced to
//! an [`Errno`] here too, so every path agrees on what a failure means:
//! a full filesystem is `ENOSPC`, a device error its own errno, anything
//! else `EIO`.

use errseq::Errno;
use thiserror::Error;

use super::record::{FileType, RecordError};
use crate::alloc::AllocError;
use crate::btree::BtreeError;
use crate::device::DeviceError;
use crate::journal::JournalError;
use crate::pagecache::PAGE_BYTES;
use crate::rmap::RmapError;

/// Why a file operation failed. [`FileError::errno`] maps every variant.
#[derive(Debug, Error)]
pub enum FileError {
    /// Data was written to blocks reported failed (marked bad) after they
    /// were allocated and before the write was committed: writeback writes
    /// it again elsewhere.
    #[error("block {block} was reported failed while data was written to it")]
    WrittenToBadBlock {
        /// The first such block.
        block: u64,
    },
    /// The inode does not exist.
    #[error("inode {ino} does not exist")]
    NotFound {
        /// The inode.
        ino: u64,
    },
    /// The inode is a directory.
    #[error("inode {ino} is a directory")]
    IsDirectory {
        /// The inode.
        ino: u64,
    },
    /// The inode is neither a regular file nor a directory.
    #[error("inode {ino} is a {file_type:?}, not a regular file")]
    NotRegular {
        /// The inode.
        ino: u64,
        /// What it is.
        file_type: FileType,
    },
    /// The offset or length runs past the largest file offset.
    #[error("offset {offset} + {length} bytes is past the largest file offset")]
    TooLarge {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        length: u64,
    },
    /// The filesystem's block size is not the page size.
    #[error("block size {block_size} is not supported (file data needs {PAGE_BYTES})")]
    UnsupportedBlockSize {
        /// The filesystem's block size.
        block_size: u32,
    },
    /// Reading a data block from the device failed.
    #[error("inode {ino} block {block} (device block {physical}): {source}")]
    Read {
        /// The inode.
        ino: u64,
        /// The file block.
        block: u64,
        /// The device block.
        physical: u64,
        /// The device's error.
        source: DeviceError,
    },
    /// A data block does not match its checksum.
    #[error("inode {ino} block {block} (device block {physical}): checksum mismatch")]
    Checksum {
        /// The inode.
        ino: u64,
        /// The file block.
        block: u64,
        /// The device block.
        physical: u64,
    },
    /// The block's data was lost to a media failure (it is poisoned) and
    /// reads of it fail until it is rewritten, truncated or punched away.
    #[error("inode {ino} block {block} (device block {physical}): data lost to a media failure")]
    Poisoned {
        /// The inode.
        ino: u64,
        /// The file block.
        block: u64,
        /// The device block it was on.
        physical: u64,
    },
    /// The block's data was lost: the kernel's write-back of a shared
    /// mapping of it was refused (see `Files::cache_write_refused`), and
    /// reads of it fail until it is written again, truncated or punched
    /// away, rather than return what the device holds from before.
    #[error("inode {ino} block {block}: data lost when its write-back from a mapping was refused")]
    Lost {
        /// The inode.
        ino: u64,
        /// The file block.
        block: u64,
    },
    /// An inode or extent record is malformed.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] RecordError),
    /// The b-trees failed (I/O, journal, error state).
    #[error("b-trees: {0}")]
    Btree(#[from] BtreeError),
    /// The journal failed.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// An rmap record is malformed or its tree failed.
    #[error("rmap: {0}")]
    Rmap(#[from] RmapError),
    /// A writeback error reported to this handle (fsync, syncfs), or found
    /// by a monitor.
    #[error("writeback error: {}", crate::device::Errno(.0.get()))]
    Writeback(Errno),
    /// The operation or mode is not supported (fallocate modes other than
    /// allocation and punching a hole with the size kept).
    #[error("not supported: {what}")]
    NotSupported {
        /// What was asked for.
        what: &'static str,
    },
    /// A zero-length range where one is needed (fallocate).
    #[error("offset {offset} with length {length} is not a valid range")]
    InvalidRange {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        length: u64,
    },
    /// Seeking at or past the end of the file, or for data where there is
    /// none after the offset.
    #[error("inode {ino}: no {what} at or after offset {offset}")]
    NoSuchOffset {
        /// The inode.
        ino: u64,
        /// The offset asked for.
        offset: u64,
        /// What was sought.
        what: &'static str,
    },
    /// A write would make more pages dirty than there are blocks to promise
    /// them; nothing was written.
    #[error("inode {ino}: no space for more dirty data ({promisable} pages can be promised)")]
    NoSpace {
        /// The inode written.
        ino: u64,
        /// Pages that could still be promised a block.
        promisable: u64,
        /// The page refused rewrites a written block: the room for it
        /// comes back as other rewrites' writebacks land.
        rewrite: bool,
    },
    /// Blocks could not be allocated (fallocate); nothing changed.
    #[error("allocating blocks: {0}")]
    Allocate(#[from] AllocError),
}

impl FileError {
    /// The errno a system call reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FileError::NotFound { .. } => libc::ENOENT,
            FileError::IsDirectory { .. } => libc::EISDIR,
            FileError::NotRegular { .. } => libc::EINVAL,
            FileError::TooLarge { .. } => libc::EFBIG,
            FileError::UnsupportedBlockSize { .. } => libc::EINVAL,
            FileError::Read { .. } | FileError::WrittenToBadBlock { .. } => libc::EIO,
            FileError::Checksum { .. } => libc::EIO,
            FileError::Poisoned { .. } | FileError::Lost { .. } => libc::EIO,
            FileError::Corrupt(_) => libc::EIO,
            FileError::Btree(BtreeError::NoSpace { .. }) => libc::ENOSPC,
            FileError::Btree(_) => libc::EIO,
            FileError::Journal(_) => libc::EIO,
            FileError::Rmap(RmapError::Btree(BtreeError::NoSpace { .. })) => libc::ENOSPC,
            FileError::Rmap(_) => libc::EIO,
            FileError::Writeback(errno) => errno.get(),
            FileError::NotSupported { .. } => libc::EOPNOTSUPP,
            FileError::InvalidRange { .. } => libc::EINVAL,
            FileError::NoSuchOffset { .. } => libc::ENXIO,
            FileError::NoSpace { .. } => libc::ENOSPC,
            FileError::Allocate(AllocError::NoSpace { .. } | AllocError::Fragmented { .. }) => {
                libc::ENOSPC
            }
            FileError::Allocate(_) => libc::EIO,
        }
    }
}

/// A file operation's result.
pub type FileResult<T> = Result<T, FileError>;

/// A failed writeback transaction's errno for the error words: `ENOSPC`
/// when the b-trees are full, otherwise `EIO` (a vanished inode record
/// included: the data cannot be written anywhere).
pub(crate) fn writeback_errno(error: &FileError) -> Errno {
    match error {
        FileError::NotFound { .. } => Errno::EIO,
        error => Errno::new(error.errno()).unwrap_or(Errno::EIO),
    }
}

/// The device's errno in an error word (EIO when it does not fit one).
pub(crate) fn device_errno(error: &DeviceError) -> Errno {
    Errno::new(error.errno().0).unwrap_or(Errno::EIO)
}

/// The journal's errno in an error word: its device error's, else EIO. A
/// device that refused the journal's writes for space (`ENOSPC`, `EDQUOT`:
/// a thin device out of room) has failed the journal for good: no space a
/// program frees brings it back, so it is `EIO`, as the state it leaves.
pub(crate) fn journal_errno(error: &JournalError) -> Errno {
    match error.device_error().map(device_errno) {
        Some(Errno::ENOSPC | Errno::EDQUOT) | None => Errno::EIO,
        Some(errno) => errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writeback_error_is_named_as_errno_names_it() {
        let error = FileError::Writeback(Errno::new(libc::ENOSPC).unwrap());
        assert_eq!(error.to_string(), "writeback error: ENOSPC");
        let unnamed = FileError::Writeback(Errno::new(300).unwrap());
        assert_eq!(unnamed.to_string(), "writeback error: 300");
    }
}
