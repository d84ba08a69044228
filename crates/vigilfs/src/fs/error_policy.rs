//! What happens to an engine error besides being returned to the caller.
//!
//! Every operation's outcome passes [`Shared::observe`]: a read error or
//! checksum mismatch on file data is reported (an FS_ERROR event and a
//! count in the persistent error record), and a media failure or checksum
//! mismatch under any read goes to the media-failure intake (`media.rs`);
//! a metadata failure (b-tree or
//! journal I/O, corruption) is reported and then acted on by the
//! `errors=` policy — `continue` goes on, `remount-ro` makes the
//! filesystem read-only (writers get `EROFS`), `panic` shuts it down and
//! aborts the process. The journal fails whole (its error state is
//! sticky), so its failure is acted on once however many operations see it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::events::Notice;
use super::health::{Detail, Incident};
use super::{FsError, FsResult, Shared};
use crate::btree::{BtreeError, NodeDefect};
use crate::device::{DeviceError, DeviceErrorKind};
use crate::format::{ErrorKind, ErrorsPolicy};
use crate::inode::FileError;

/// How long after a failed read of several pages the kernel's retry of
/// one of them is taken for that retry.
const READ_RETRY_WINDOW: Duration = Duration::from_secs(1);

/// Failed reads remembered at most (the oldest is dropped).
const READS_REPORTED_KEPT: usize = 64;

/// A failed read reported lately: the file block it failed at, how, and
/// how long the read was.
struct ReportedRead {
    ino: u64,
    block: u64,
    kind: ErrorKind,
    length: u64,
    at: Instant,
}

/// Failed data reads reported within the last [`READ_RETRY_WINDOW`]. The
/// kernel drops the error of a failed readahead and reads the page again
/// on its own, a shorter read failing at the same block: one read a
/// program saw fail was counted and announced twice (review 41). That
/// retry is the same failure: it fails again, unreported. Each read a
/// program makes itself (a direct read, a buffered read's readahead) is
/// reported, however often it repeats.
#[derive(Default)]
pub(super) struct ReadsReported {
    recent: Mutex<VecDeque<ReportedRead>>,
}

impl ReadsReported {
    /// Whether a read of `length` bytes of `ino` failing at block `block`
    /// is to be reported: it is not the kernel's retry of a longer read
    /// that failed there. Remembers it when so; a retry is forgotten with
    /// the read it retried.
    fn first(&self, ino: u64, block: u64, kind: ErrorKind, length: u64) -> bool {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.retain(|read| now.duration_since(read.at) < READ_RETRY_WINDOW);
        let retried = recent.iter().position(|read| {
            (read.ino, read.block, read.kind) == (ino, block, kind) && length < read.length
        });
        if let Some(position) = retried {
            recent.remove(position);
            return false;
        }
        if recent.len() == READS_REPORTED_KEPT {
            recent.pop_front();
        }
        recent.push_back(ReportedRead {
            ino,
            block,
            kind,
            length,
            at: now,
        });
        true
    }
}

impl Shared {
    /// The outcome of an operation: a metadata failure is reported and
    /// acted on by the `errors=` policy; data read errors are reported.
    pub(super) fn observe<T>(&self, origin: &str, result: FsResult<T>) -> FsResult<T> {
        if let Err(error) = &result {
            self.on_error(origin, None, error);
        }
        // A commit's splits write nodes whose failure fails no operation.
        self.note_node_write_failures();
        result
    }

    /// [`Shared::observe`] for a read of inode `ino` (its attributes, its
    /// entries, a name in it): a metadata failure names it, the object the
    /// user can no longer reach (a corrupt node of the entries tree says
    /// only which tree; the directory says what it cost).
    pub(super) fn observe_at<T>(&self, origin: &str, ino: u64, result: FsResult<T>) -> FsResult<T> {
        if let Err(error) = &result {
            self.on_error(origin, Some(ino), error);
        }
        self.note_node_write_failures();
        result
    }

    /// The journal fails whole (its error state is sticky) and the data
    /// path only sees an errno: a journal in its error state is a metadata
    /// failure, acted on once.
    pub(super) fn check_journal(&self, origin: &str) {
        if let Some(error) = self.metadata.journal.error() {
            if !self.journal_failure_seen.swap(true, Ordering::AcqRel) {
                self.metadata_failure(origin, None, &FsError::File(FileError::Journal(error)));
            }
        }
    }

    /// Journal reclaim failing to write pinned objects (b-tree nodes the
    /// device refuses) is not yet a failed operation, but the journal fills
    /// and every change will fail: announced once per run of failures, as
    /// a journal error, so an operator hears of it before the filesystem
    /// stops (`vigilfs status` says why). Nothing else is done: reclaim
    /// keeps trying, and a device that recovers ends the run.
    pub(super) fn check_reclaim(&self) {
        let failing = self.metadata.journal.reclaim_failing();
        if !failing {
            self.reclaim_failure_announced
                .store(false, Ordering::Release);
        } else if !self.reclaim_failure_announced.swap(true, Ordering::AcqRel) {
            self.health.report(&Incident {
                kind: ErrorKind::Journal,
                errno: libc::EIO,
                inode: None,
                range: None,
                block: None,
                origin: "journal reclaim: pinned b-tree nodes cannot be written",
            });
        }
    }

    /// B-tree nodes written in the background (under cache pressure,
    /// after a commit's splits) whose write failed stay dirty and are
    /// retried: nothing is lost yet, the journal holds their changes, and
    /// no operation failed. But the device is refusing writes, and the
    /// journal will fill: announced once per run of failures, as a
    /// metadata error, so an operator hears of it while the filesystem
    /// still runs. A background round with no new failure ends the run.
    pub(super) fn check_node_writeback(&self) {
        let failures = self.metadata.trees.writeback_failures();
        let seen = self
            .node_write_failures_seen
            .swap(failures, Ordering::AcqRel);
        if failures <= seen {
            self.node_write_failure_announced
                .store(false, Ordering::Release);
        } else {
            self.announce_node_write_failures();
        }
    }

    /// After every operation: failed node writes since the last round are
    /// announced now (if their run was not yet), before anything (a
    /// freeze, a crash) can come between. Two loads when nothing failed.
    fn note_node_write_failures(&self) {
        let failures = self.metadata.trees.writeback_failures();
        if failures > self.node_write_failures_seen.load(Ordering::Acquire)
            && !self.node_write_failure_announced.load(Ordering::Acquire)
        {
            self.announce_node_write_failures();
        }
    }

    /// The run's announcement, naming the latest failed node (its block
    /// is in no map yet, so `owners` cannot tell what it was).
    fn announce_node_write_failures(&self) {
        if self
            .node_write_failure_announced
            .swap(true, Ordering::AcqRel)
        {
            return;
        }
        let failed = self.metadata.trees.status().last_failed_node;
        let node = failed.map(|(tree, level, block, _)| (tree.name(), level, block));
        let block_size = u64::from(self.superblock().layout.block_size);
        self.health.report_with(
            &Incident {
                kind: ErrorKind::Metadata,
                // The device's own errno (a thin device out of space says
                // ENOSPC), not a generic EIO.
                errno: failed.map_or(libc::EIO, |(.., errno)| errno),
                inode: None,
                range: None,
                block: node.map(|(_, _, block)| block),
                origin: "b-tree node write-back failed (retried)",
            },
            &Detail {
                device_range: node.map(|(_, _, block)| (block * block_size, block_size)),
                node,
                ..Detail::default()
            },
        );
    }

    /// [`Shared::observe_at`] for a read of `length` bytes of file `ino`
    /// (see [`ReadsReported`]).
    pub(super) fn observe_read<T>(
        &self,
        ino: u64,
        length: u64,
        result: FsResult<T>,
    ) -> FsResult<T> {
        if let Err(error) = &result {
            self.on_error_of_read("read", Some(ino), error, Some(length));
        }
        self.report_recovered_reads();
        self.note_node_write_failures();
        result
    }

    /// Reports the reads of file data the device failed and then served
    /// block by block (see `inode/recovered_reads.rs`): an error event
    /// each, with the file's and the device's bytes, and a count (review
    /// 47: a device error a retry got past left no trace).
    fn report_recovered_reads(&self) {
        const ORIGIN: &str = "read failed, then read block by block: the device erred";
        let (reads, more) = self.files.take_recovered_reads();
        let block = u64::from(self.superblock().layout.block_size);
        for read in reads {
            self.health.report_with(
                &Incident {
                    kind: ErrorKind::Read,
                    errno: read.errno.get(),
                    inode: Some((read.ino, self.generation_of(read.ino))),
                    range: Some((read.first * block, read.blocks * block)),
                    block: Some(read.physical),
                    origin: ORIGIN,
                },
                &Detail {
                    device_range: Some((read.physical * block, read.blocks * block)),
                    ..Detail::default()
                },
            );
        }
        for _ in 0..more {
            self.health.report(&Incident {
                kind: ErrorKind::Read,
                errno: libc::EIO,
                inode: None,
                range: None,
                block: None,
                origin: ORIGIN,
            });
        }
    }

    pub(super) fn on_error(&self, origin: &str, ino: Option<u64>, error: &FsError) {
        self.on_error_of_read(origin, ino, error, None);
    }

    /// [`Shared::on_error`]; `read_length` is the length of the file read
    /// that failed, when the error is a read's.
    fn on_error_of_read(
        &self,
        origin: &str,
        ino: Option<u64>,
        error: &FsError,
        read_length: Option<u64>,
    ) {
        self.check_journal(origin);
        self.check_reclaim();
        // The reader's failure is reported here, at once; the media
        // failure behind it is reported by its handling, with the owners it
        // hit and what became of them (see `media.rs`).
        self.notice_read_failure(origin, error);
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
                let retry = read_length
                    .is_some_and(|length| !self.reads_reported.first(*ino, *block, kind, length));
                if retry {
                    return;
                }
                let detail = Detail {
                    device_range: device_range(error).or(Some((physical * 4096, 4096))),
                    ..Detail::default()
                };
                self.health.report_with(
                    &Incident {
                        kind,
                        errno: error.errno(),
                        inode: Some((*ino, self.generation_of(*ino))),
                        range: Some((block * 4096, 4096)),
                        block: Some(*physical),
                        origin,
                    },
                    &detail,
                );
            }
            FsError::File(FileError::Journal(_)) => {}
            _ if error.is_metadata_failure() => self.metadata_failure(origin, ino, error),
            _ => {}
        }
    }

    /// A metadata failure: reported, then the `errors=` policy. A device
    /// that lost power is the crash lab's simulated cut, not a failure of
    /// this filesystem: the engine is being abandoned for the one that
    /// recovers the image, and nothing is done (`errors=panic` would abort
    /// the lab's own process).
    fn metadata_failure(&self, origin: &str, ino: Option<u64>, error: &FsError) {
        if lost_power(error) || refused_by_stop(error) {
            return;
        }
        let kind = match error {
            FsError::File(FileError::Journal(_)) => ErrorKind::Journal,
            _ => ErrorKind::Metadata,
        };
        let node = failed_node(error);
        self.health.report_with(
            &Incident {
                kind,
                errno: error.errno(),
                // Its generation, read again, may fail as the read did: 0.
                inode: ino.map(|ino| (ino, self.generation_of(ino))),
                range: None,
                block: node.map(|(_, _, block)| block),
                origin,
            },
            &Detail {
                device_range: device_range(error),
                node,
                ..Detail::default()
            },
        );
        self.apply_errors_policy(format!("{origin}: {error}"));
    }

    /// The `errors=` policy's action for a metadata failure already
    /// reported: nothing, read-only, or shutdown and abort. Acting twice
    /// on one failure changes nothing more.
    pub(super) fn apply_errors_policy(&self, why: String) {
        match self.settings.errors_policy() {
            ErrorsPolicy::Continue => {}
            ErrorsPolicy::RemountReadOnly => {
                let why = format!("errors=remount-ro after {why}");
                if self.gate.make_read_only(why.clone()) {
                    self.health.notice(&Notice::ErrorsAction {
                        action: "remount-ro",
                    });
                    self.stop_writing();
                    if let Some(listener) = super::api::current(&self.read_only_listener) {
                        listener();
                    }
                } else if self.mounted_read_only.load(Ordering::Acquire)
                    && self
                        .read_only_mount
                        .as_ref()
                        .is_some_and(|mount| mount.keep_read_only(why))
                {
                    // Read-only already by its options: the policy's
                    // action is that it stays so (a remount,rw must not
                    // write on damaged metadata).
                    self.health.notice(&Notice::ErrorsAction {
                        action: "remount-ro",
                    });
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

impl Shared {
    /// The generation of inode `ino`, or 0 ("not known") if its record
    /// cannot be read; called with no lock held.
    pub(super) fn generation_of(&self, ino: u64) -> u32 {
        self.namespace
            .getattr(ino)
            .map_or(0, |record| record.generation as u32)
    }
}

/// The errors `error` was caused by, itself first.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| error.source())
}

/// The device bytes a device error underneath `error` was about (none for
/// a flush, which names no bytes, nor for a refusal by the filesystem's
/// own stop, whose bytes did not fail).
fn device_range(error: &FsError) -> Option<(u64, u64)> {
    causes(error)
        .find_map(|cause| cause.downcast_ref::<DeviceError>())
        .filter(|device| !device.range.is_empty() && device.kind != DeviceErrorKind::Stopped)
        .map(|device| (device.range.start, device.range.len()))
}

/// Whether the device error underneath `error` is of `kind`.
fn device_error_is(error: &FsError, kind: DeviceErrorKind) -> bool {
    causes(error).any(|cause| {
        cause
            .downcast_ref::<DeviceError>()
            .is_some_and(|device| device.kind == kind)
    })
}

/// Whether a device error underneath `error` is a (simulated) power cut.
fn lost_power(error: &FsError) -> bool {
    device_error_is(error, DeviceErrorKind::PowerCut)
}

/// Whether `error` is a write the filesystem's own stop refused
/// (`errors=remount-ro`, a shutdown): a consequence of a failure reported
/// and acted on already, not a new one. (Review 34: a journal entry
/// refused so after a remount-ro was recorded as a failure of the
/// journal's next block, which nothing had written.)
fn refused_by_stop(error: &FsError) -> bool {
    device_error_is(error, DeviceErrorKind::Stopped)
}

/// The b-tree node a corruption underneath `error` was found in, or whose
/// write failed: tree, level (when known), block.
fn failed_node(error: &FsError) -> Option<(&'static str, u8, u64)> {
    causes(error).find_map(|cause| match cause.downcast_ref::<BtreeError>() {
        Some(BtreeError::CorruptNode {
            tree,
            block,
            defect,
        }) => {
            let level = match defect {
                NodeDefect::WrongLevel { expected, .. } => *expected,
                _ => Detail::UNKNOWN_LEVEL,
            };
            Some((tree.name(), level, *block))
        }
        Some(BtreeError::NodeWrite {
            tree, level, block, ..
        }) => Some((tree.name(), *level, *block)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{ByteRange, IoClass, IoOperation};
    use crate::journal::JournalError;

    fn journal_failed_by(kind: DeviceErrorKind) -> FsError {
        let device = DeviceError::new(
            kind,
            IoOperation::Write,
            IoClass::Journal,
            ByteRange::at(2_260_992, 4096),
        );
        FsError::File(FileError::Journal(JournalError::Device(device)))
    }

    /// Review 34: a journal entry the filesystem's own stop refused
    /// (errors=remount-ro) was reported as a journal failure of the block
    /// it would have gone to. Such a refusal is no failure and names no
    /// failed bytes; a real write error still is one and names them.
    #[test]
    fn a_write_the_stop_refused_is_no_failure_and_names_no_bytes() {
        let refused = journal_failed_by(DeviceErrorKind::Stopped);
        assert!(refused_by_stop(&refused));
        assert_eq!(device_range(&refused), None);
        let failed = journal_failed_by(DeviceErrorKind::Io);
        assert!(!refused_by_stop(&failed));
        assert_eq!(device_range(&failed), Some((2_260_992, 4096)));
    }
}
