//! What a filesystem hands to [`ErrorSource::emit`](crate::ErrorSource::emit):
//! one error, before it is stamped with a time and the filesystem's id.
//!
//! A report is plain data built by value, so a caller can prepare it on the
//! error path without allocating.

use crate::{Blob, ByteRange, Errno, ErrorDetail, Fsid, ObjectId, Subtypes};

/// One error to emit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ErrorReport {
    errno: Errno,
    subtypes: Subtypes,
    inode: Option<(u64, u32)>,
    range: Option<ByteRange>,
    blob: Blob,
}

impl ErrorReport {
    /// An error about the whole filesystem (no object) until
    /// [`ErrorReport::on_inode`] says otherwise.
    pub fn new(errno: Errno, subtypes: Subtypes) -> ErrorReport {
        ErrorReport {
            errno,
            subtypes,
            inode: None,
            range: None,
            blob: Blob::EMPTY,
        }
    }

    /// Attributes the error to an inode of the emitting filesystem.
    pub fn on_inode(mut self, inode: u64, generation: u32) -> ErrorReport {
        self.inode = Some((inode, generation));
        self
    }

    /// Records the affected byte range.
    pub fn range(mut self, offset: u64, len: u64) -> ErrorReport {
        self.range = Some(ByteRange { offset, len });
        self
    }

    /// Attaches filesystem-specific detail (truncated to [`Blob::CAPACITY`]).
    pub fn blob(mut self, blob: Blob) -> ErrorReport {
        self.blob = blob;
        self
    }

    /// The error number.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// The subtypes.
    pub fn subtypes(&self) -> Subtypes {
        self.subtypes
    }

    /// The detail as events carry it, for the filesystem `fsid`.
    pub(crate) fn detail(&self, fsid: Fsid) -> ErrorDetail {
        ErrorDetail {
            errno: self.errno,
            object: self.inode.map(|(inode, generation)| ObjectId {
                fsid,
                inode,
                generation,
            }),
            range: self.range,
            blob: self.blob,
        }
    }
}
