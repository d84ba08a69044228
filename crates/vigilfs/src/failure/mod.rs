//! Media failures: from a failed range of the device to everything that
//! lived there, and what is done for each (seed 003, XFS's
//! `->notify_failure()`, done with vigilfs's reverse map).
//!
//! * [`Intake`] receives failure notices — from the device (a media error
//!   on a read), from reads that found a checksum mismatch, from scrub and
//!   from an operator replaying a report — and holds them in a bounded
//!   queue. Notices that arrive before the filesystem is ready (during
//!   mount, journal replay and recovery) are parked there, not dropped as
//!   XFS does, and handled once recovery completes; notices beyond the
//!   bound are counted, and the count reported.
//! * [`owners`] answers who owns a device range: files (with every path
//!   naming them and the byte range in each), b-tree nodes (tree, level),
//!   the journal, superblock copies, free space, bad blocks, nothing.
//! * [`handle`] acts on one failure, owner by owner: file data is
//!   poisoned (persistently: see [`crate::poison`]) and then rescued from
//!   whatever copy survived — a page in the cache, clean or dirty, or the
//!   block itself if it still reads back intact — by writing it to a new
//!   block, which clears the poison; b-tree nodes are moved off the block
//!   from their cached copy (else their loss goes to the `errors=` policy);
//!   needed journal entries are made unneeded by reclaim; superblock copies
//!   are rewritten; and every failed block of the main region goes on the
//!   persistent bad-block list (see [`crate::alloc::bad_blocks`]), so it is
//!   never allocated again.
//!
//! Invariants: handling is idempotent — a notice about blocks already
//! poisoned or listed bad changes nothing and reports nothing new, so the
//! device's own report and the read path's report of one failure are one
//! failure; a checksum report is re-verified under the record lock before
//! anything is poisoned (a block rewritten meanwhile is no failure); no
//! record is written when the filesystem may not write (the caller says
//! so), but reads still fail on what was lost.
//!
//! This layer sits above the file operations (it uses the page cache and
//! writeback to rescue) and below the mounted filesystem, which reports
//! the outcomes as events, applies the `errors=` policy and rewrites the
//! superblock copies.

mod act;
mod intake;
mod owners;

use std::fmt;

use thiserror::Error;

pub use act::{handle, record_held, Context, Handled, Handling, HeldMarks, Outcome};
pub use intake::{handling_own_failures, Intake, IntakeStats, Notice, DEFAULT_INTAKE_CAPACITY};
pub use owners::{file_names, name_owners, owners, Owner, OwnerKind};

use crate::alloc::FailureCause;
use crate::btree::BtreeError;
use crate::device::ByteRange;
use crate::inode::NamespaceError;
use crate::poison::PoisonRecordError;
use crate::rmap::RmapError;

/// Who reported a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A read of the filesystem's own (the device, or a checksum check).
    Read,
    /// Scrub.
    Scrub,
    /// Someone outside: an operator, a monitoring daemon.
    Operator,
}

impl Source {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Source::Read => "read",
            Source::Scrub => "scrub",
            Source::Operator => "operator",
        }
    }
}

/// Where a failure notice came from and what it says failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// What went wrong.
    pub cause: FailureCause,
    /// Who noticed.
    pub source: Source,
    /// Free text for people (`"SMART pending sector"`, `"data read"`),
    /// at most [`MAX_ORIGIN_BYTES`] bytes, printable as names are
    /// ([`crate::inode::printable`]): it comes from outside (a monitoring
    /// tool's report) and goes into events and logs.
    pub text: String,
}

/// Longest origin text kept.
pub const MAX_ORIGIN_BYTES: usize = 200;

impl Origin {
    /// An origin, its text cut to [`MAX_ORIGIN_BYTES`] at a character
    /// boundary.
    pub fn new(cause: FailureCause, source: Source, text: &str) -> Origin {
        let text = crate::inode::printable(text.as_bytes());
        let mut end = text.len().min(MAX_ORIGIN_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Origin {
            cause,
            source,
            text: text[..end].to_owned(),
        }
    }

    /// An operator's report (`vigilfs notify-failure --origin TEXT`).
    pub fn operator(text: &str) -> Origin {
        Origin::new(FailureCause::Reported, Source::Operator, text)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({}", self.source.name(), self.cause)?;
        if !self.text.is_empty() {
            write!(formatter, ": {}", self.text)?;
        }
        formatter.write_str(")")
    }
}

/// For a range that starts on the device and runs past its end, the part
/// on it, as the command line gives ranges: a report is refused whole
/// rather than cut silently (an offset in the wrong unit looks the same),
/// so the caller is told what to send for the part that is there.
fn part_on_device(range: ByteRange, device_length: u64) -> String {
    if range.start < device_length && range.end > device_length {
        format!(
            "; its part on the device is --offset {} --length {}",
            range.start,
            device_length - range.start
        )
    } else {
        String::new()
    }
}

/// Why a failure could not be looked up or handled.
#[derive(Debug, Error)]
pub enum FailureError {
    /// The range is empty, or reaches past the end of the device.
    #[error(
        "device range {range} is not inside the {device_length}-byte device{}",
        part_on_device(*.range, *.device_length)
    )]
    OutOfDevice {
        /// The range asked for.
        range: ByteRange,
        /// The device's length.
        device_length: u64,
    },
    /// The range covers more than one request may (see [`MAX_RANGE_BYTES`]).
    #[error("device range {range} is longer than {MAX_RANGE_BYTES} bytes: split it")]
    TooLong {
        /// The range asked for.
        range: ByteRange,
    },
    /// The b-trees failed.
    #[error("b-trees: {0}")]
    Btree(#[from] BtreeError),
    /// The reverse map failed.
    #[error("reverse map: {0}")]
    Rmap(#[from] RmapError),
    /// The namespace could not name an owner.
    #[error("namespace: {0}")]
    Namespace(#[from] NamespaceError),
    /// A poison record is malformed.
    #[error("poison: {0}")]
    Poison(#[from] PoisonRecordError),
    /// A record the walk depends on is damaged.
    #[error("{0}")]
    Corrupt(String),
}

impl FailureError {
    /// The errno a caller gets.
    pub fn errno(&self) -> i32 {
        match self {
            FailureError::OutOfDevice { .. } | FailureError::TooLong { .. } => libc::EINVAL,
            FailureError::Namespace(error) => error.errno(),
            _ if self.is_no_space() => libc::ENOSPC,
            _ => libc::EIO,
        }
    }
}

impl FailureError {
    /// No room for the b-tree nodes a record needs: a full device, not
    /// damage.
    pub fn is_no_space(&self) -> bool {
        matches!(
            self,
            FailureError::Btree(BtreeError::NoSpace { .. })
                | FailureError::Rmap(RmapError::Btree(BtreeError::NoSpace { .. }))
        )
    }
}

/// Longest range one owners query or failure notice covers (1 TiB): long
/// enough for any real report, short enough that its answer fits memory.
pub const MAX_RANGE_BYTES: u64 = 1 << 40;

/// Checks a device range against the device: non-empty, inside it, not
/// absurdly long.
pub fn check_range(range: ByteRange, device_length: u64) -> Result<(), FailureError> {
    if range.is_empty() || range.end > device_length {
        return Err(FailureError::OutOfDevice {
            range,
            device_length,
        });
    }
    if range.len() > MAX_RANGE_BYTES {
        return Err(FailureError::TooLong { range });
    }
    Ok(())
}

/// Seconds since the epoch, as records keep times.
pub(crate) fn seconds_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::{FailureError, Origin};
    use crate::device::ByteRange;

    /// A report that runs past the device's end is refused whole, and the
    /// refusal says which part is on the device (a reviewer's report of
    /// the last 2 MiB of a 256 MiB device got only "not inside").
    #[test]
    fn a_range_past_the_device_end_is_refused_naming_its_part_on_the_device() {
        let mib = 1 << 20;
        let crossing = FailureError::OutOfDevice {
            range: ByteRange::new(255 * mib, 257 * mib),
            device_length: 256 * mib,
        };
        let message = crossing.to_string();
        assert!(
            message.ends_with(&format!(
                "its part on the device is --offset {} --length {mib}",
                255 * mib
            )),
            "{message}"
        );
        let beyond = FailureError::OutOfDevice {
            range: ByteRange::new(300 * mib, 301 * mib),
            device_length: 256 * mib,
        };
        assert!(!beyond.to_string().contains("its part"), "{beyond}");
    }

    /// An operator's origin text comes from outside (a SMART or array
    /// report) and is shown in events and logs: it cannot forge a line.
    #[test]
    fn an_origin_text_cannot_forge_a_line() {
        let origin = Origin::operator("SMART\n#9999  error forged");
        assert_eq!(origin.text, "SMART\\x0a#9999  error forged");
        // Cut to the limit after escaping, at a character boundary.
        let long = Origin::operator(&"\u{1}".repeat(300));
        assert!(long.text.len() <= super::MAX_ORIGIN_BYTES);
        assert!(!long.text.contains('\u{1}'));
    }
}
