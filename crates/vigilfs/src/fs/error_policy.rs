//! What happens to an engine error besides being returned to the caller.
//!
//! Every operation's outcome passes [`Shared::observe`]: a read error or
//! checksum mismatch on file data is reported (an FS_ERROR event and a
//! count in the persistent error record); a metadata failure (b-tree or
//! journal I/O, corruption) is reported and then acted on by the
//! `errors=` policy — `continue` goes on, `remount-ro` makes the
//! filesystem read-only (writers get `EROFS`), `panic` shuts it down and
//! aborts the process. The journal fails whole (its error state is
//! sticky), so its failure is acted on once however many operations see it.

use std::sync::atomic::Ordering;

use super::events::Notice;
use super::health::Incident;
use super::{FsError, FsResult, Shared};
use crate::format::{ErrorKind, ErrorsPolicy};
use crate::inode::FileError;

impl Shared {
    /// The outcome of an operation: a metadata failure is reported and
    /// acted on by the `errors=` policy; data read errors are reported.
    pub(super) fn observe<T>(&self, origin: &str, result: FsResult<T>) -> FsResult<T> {
        if let Err(error) = &result {
            self.on_error(origin, error);
        }
        result
    }

    /// The journal fails whole (its error state is sticky) and the data
    /// path only sees an errno: a journal in its error state is a metadata
    /// failure, acted on once.
    pub(super) fn check_journal(&self, origin: &str) {
        if let Some(error) = self.metadata.journal.error() {
            if !self.journal_failure_seen.swap(true, Ordering::AcqRel) {
                self.metadata_failure(origin, &FsError::File(FileError::Journal(error)));
            }
        }
    }

    pub(super) fn on_error(&self, origin: &str, error: &FsError) {
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
                if self
                    .gate
                    .make_read_only(format!("errors=remount-ro after {why}"))
                {
                    self.health.notice(&Notice::ErrorsAction {
                        action: "remount-ro",
                    });
                    self.stop_writing();
                }
                self.save_error_record();
            }
            ErrorsPolicy::Panic => {
                self.health
                    .notice(&Notice::ErrorsAction { action: "panic" });
                self.shut_down_now(format!("errors=panic after {why}"), false);
                // The process ends now: the log is written first if it can be.
                let _ = self.health.log().persist();
                eprintln!("vigilfs: errors=panic: {why}; aborting");
                std::process::abort();
            }
        }
    }
}
