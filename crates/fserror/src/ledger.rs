//! A filesystem's running record of the errors it has reported, which every
//! merge-mode listener's pending event is read against.
//!
//! Why this exists: in merge mode every listener group that has an unread
//! error event would fold each new error into its own event (count += 1,
//! subtypes OR-ed, last error replaced). Doing that per group costs one lock
//! per group per error, which is exactly the flood case. All merge-mode
//! groups see the same errors, though; they differ only in *when* their
//! pending event was opened. So the filesystem keeps one record — a count of
//! errors ever reported, the position of the latest error of each subtype,
//! and the latest error itself — and a pending event stores only its opening
//! error and the ledger [`Cursor`] just before it. Reading the event
//! computes the merge: `count = reported - cursor`, subtype `k` is set when
//! its latest position is after the cursor, `last` is the ledger's latest
//! error. One update per error, whatever the number of groups.
//!
//! Invariants: `reported` only grows; `latest_position[k] <= reported`;
//! `latest` is `Some` once `reported > 0`. The ledger lives under its
//! filesystem's lock; nothing here synchronises.

use std::time::SystemTime;

use crate::{ErrorDetail, Subtypes};

/// A position in a filesystem's error history: the number of errors
/// reported before it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct Cursor(u64);

/// What happened after a cursor: the merge a pending event stands for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MergedSince {
    pub(crate) count: u64,
    pub(crate) subtypes: Subtypes,
    pub(crate) last: ErrorDetail,
    pub(crate) last_time: SystemTime,
    /// Where `last` sits: the cursor just before it.
    pub(crate) last_position: Cursor,
}

#[derive(Debug)]
pub(crate) struct Ledger {
    reported: u64,
    latest_position: [u64; Subtypes::COUNT],
    latest: Option<ErrorDetail>,
    latest_time: SystemTime,
}

impl Ledger {
    pub(crate) fn new() -> Ledger {
        Ledger {
            reported: 0,
            latest_position: [0; Subtypes::COUNT],
            latest: None,
            latest_time: SystemTime::UNIX_EPOCH,
        }
    }

    /// Appends one error and returns the cursor just before it.
    ///
    /// `latest_time` never goes backwards: emitters stamp the time before
    /// they take the filesystem's lock, so two racing emitters may record in
    /// the opposite order of their stamps.
    pub(crate) fn record(
        &mut self,
        detail: &ErrorDetail,
        subtypes: Subtypes,
        time: SystemTime,
    ) -> Cursor {
        let before = Cursor(self.reported);
        self.reported += 1;
        for position in subtypes.positions() {
            self.latest_position[position] = self.reported;
        }
        self.latest = Some(*detail);
        self.latest_time = self.latest_time.max(time);
        before
    }

    /// The cursor after every error recorded so far, which is also the
    /// position the next recorded error will have.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor(self.reported)
    }

    /// Number of errors recorded so far.
    pub(crate) fn reported(&self) -> u64 {
        self.reported
    }

    /// The merge of every error recorded after `since`, or `None` if there
    /// is none.
    pub(crate) fn merged_since(&self, since: Cursor) -> Option<MergedSince> {
        let count = self.reported.checked_sub(since.0).filter(|&n| n > 0)?;
        let subtypes = (0..Subtypes::COUNT)
            .filter(|&position| self.latest_position[position] > since.0)
            .map(Subtypes::from_position)
            .fold(Subtypes::empty(), |set, bit| set | bit);
        Some(MergedSince {
            count,
            subtypes,
            last: self.latest?,
            last_time: self.latest_time,
            last_position: Cursor(self.reported - 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Blob, Errno};
    use std::time::Duration;

    fn detail(errno: Errno) -> ErrorDetail {
        ErrorDetail {
            errno,
            object: None,
            range: None,
            blob: Blob::EMPTY,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn nothing_is_merged_since_the_current_cursor() {
        let mut ledger = Ledger::new();
        assert!(ledger.merged_since(ledger.cursor()).is_none());
        ledger.record(&detail(Errno::EIO), Subtypes::READ, at(1));
        assert!(ledger.merged_since(ledger.cursor()).is_none());
    }

    #[test]
    fn merge_counts_only_errors_after_the_cursor() {
        let mut ledger = Ledger::new();
        ledger.record(&detail(Errno::EIO), Subtypes::READ, at(1));
        let opened = ledger.record(&detail(Errno::EUCLEAN), Subtypes::METADATA, at(2));
        ledger.record(&detail(Errno::ENOSPC), Subtypes::WRITEBACK, at(3));

        let merged = ledger
            .merged_since(opened)
            .expect("two errors after the cursor");
        assert_eq!(merged.count, 2);
        assert_eq!(merged.subtypes, Subtypes::METADATA | Subtypes::WRITEBACK);
        assert_eq!(merged.last.errno, Errno::ENOSPC);
        assert_eq!(merged.last_time, at(3));
        assert_eq!(merged.last_position, Cursor(2));
    }

    #[test]
    fn latest_time_never_goes_backwards() {
        let mut ledger = Ledger::new();
        let opened = ledger.record(&detail(Errno::EIO), Subtypes::READ, at(5));
        ledger.record(&detail(Errno::EIO), Subtypes::READ, at(4));
        let merged = ledger.merged_since(opened).expect("errors recorded");
        assert_eq!(merged.last_time, at(5));
        assert_eq!(ledger.reported(), 2);
    }
}
