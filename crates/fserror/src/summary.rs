//! Errors merged into one record: what an ERROR event carries, and what a
//! terminal event carries for the unread errors it absorbs.
//!
//! Merging keeps the first error as it was reported and updates the last
//! one: count += 1, subtypes OR-ed, first error (errno, object, range, blob)
//! kept, last error replaced, first/last times widened.
//!
//! Besides what a listener reads, a summary remembers where its first and
//! last errors sit in the filesystem's error history (ledger [`Cursor`]s).
//! That is what makes [`ErrorSummary::absorb`] exact whatever order
//! summaries are absorbed in: in distinct mode several events of one
//! filesystem are open at once, and an older event may hold the most recent
//! error; timestamps cannot decide, since two errors may share a time and
//! racing emitters may stamp out of order.
//!
//! Invariants: `count >= 1`; `first_position <= last_position`;
//! `first_time <= last_time`.

use std::time::SystemTime;

use crate::ledger::{Cursor, Ledger};
use crate::{ErrorDetail, Event, EventId, EventKind, Fsid, Subtypes};

/// One or more errors of one filesystem, merged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorSummary {
    pub(crate) count: u64,
    pub(crate) subtypes: Subtypes,
    pub(crate) first: ErrorDetail,
    pub(crate) first_time: SystemTime,
    first_position: Cursor,
    pub(crate) last: ErrorDetail,
    pub(crate) last_time: SystemTime,
    last_position: Cursor,
}

impl ErrorSummary {
    /// A summary of the single error recorded at `position`.
    pub(crate) fn single(
        detail: &ErrorDetail,
        subtypes: Subtypes,
        time: SystemTime,
        position: Cursor,
    ) -> ErrorSummary {
        ErrorSummary {
            count: 1,
            subtypes,
            first: *detail,
            first_time: time,
            first_position: position,
            last: *detail,
            last_time: time,
            last_position: position,
        }
    }

    /// The summary a pending merge-mode event stands for: its opening
    /// error, recorded at `opened`, merged with everything `ledger` recorded
    /// after it (see `ledger.rs`).
    pub(crate) fn pending(
        first: &ErrorDetail,
        subtypes: Subtypes,
        first_time: SystemTime,
        opened: Cursor,
        ledger: &Ledger,
    ) -> ErrorSummary {
        let mut summary = ErrorSummary::single(first, subtypes, first_time, opened);
        // The opening error was recorded right after `opened`, so the merge
        // is never empty and includes it; the fallback only keeps this total.
        if let Some(merged) = ledger.merged_since(opened) {
            summary.count = merged.count;
            summary.subtypes = merged.subtypes;
            summary.last = merged.last;
            summary.last_time = merged.last_time.max(first_time);
            summary.last_position = merged.last_position;
        }
        summary
    }

    /// Merges in one more error, newer than every error already merged.
    pub(crate) fn add(
        &mut self,
        detail: &ErrorDetail,
        subtypes: Subtypes,
        time: SystemTime,
        position: Cursor,
    ) {
        debug_assert!(position > self.last_position);
        self.count += 1;
        self.subtypes |= subtypes;
        self.last = *detail;
        self.last_time = self.last_time.max(time);
        self.last_position = position;
    }

    /// Merges in another summary of the same filesystem: the result covers
    /// both, its first error is the earlier of the two firsts and its last
    /// the later of the two lasts.
    pub(crate) fn absorb(&mut self, other: &ErrorSummary) {
        self.count += other.count;
        self.subtypes |= other.subtypes;
        if other.first_position < self.first_position {
            self.first = other.first;
            self.first_position = other.first_position;
        }
        if other.last_position > self.last_position {
            self.last = other.last;
            self.last_position = other.last_position;
        }
        self.first_time = self.first_time.min(other.first_time);
        self.last_time = self.last_time.max(other.last_time);
    }

    /// Absorbs `other` into `into`, or makes it the summary if there is none
    /// yet.
    pub(crate) fn absorb_into(into: &mut Option<ErrorSummary>, other: &ErrorSummary) {
        match into {
            Some(summary) => summary.absorb(other),
            None => *into = Some(*other),
        }
    }

    /// The ERROR event this summary stands for.
    pub(crate) fn error_event(&self, id: EventId, fsid: Fsid) -> Event {
        Event {
            id,
            kind: EventKind::Error,
            fsid,
            count: self.count,
            subtypes: self.subtypes,
            first: Some(self.first),
            last: Some(self.last),
            lost: 0,
            first_time: self.first_time,
            last_time: self.last_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Blob, Errno};
    use std::time::Duration;

    fn detail(errno: Errno, inode: u64) -> ErrorDetail {
        ErrorDetail {
            errno,
            object: Some(crate::ObjectId {
                fsid: Fsid(1),
                inode,
                generation: 1,
            }),
            range: None,
            blob: Blob::EMPTY,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    /// Records errors in a ledger and returns their positions.
    fn positions(count: usize) -> Vec<Cursor> {
        let mut ledger = Ledger::new();
        (0..count)
            .map(|_| ledger.record(&detail(Errno::EIO, 0), Subtypes::READ, at(1)))
            .collect()
    }

    #[test]
    fn absorb_keeps_the_earliest_first_and_latest_last_in_any_order() {
        let at_position = positions(3);
        // Distinct mode: slot A opened by error 0 and updated by error 2,
        // slot B opened by error 1.
        let mut slot_a = ErrorSummary::single(
            &detail(Errno::EIO, 1),
            Subtypes::READ,
            at(10),
            at_position[0],
        );
        slot_a.add(
            &detail(Errno::EUCLEAN, 1),
            Subtypes::READ,
            at(12),
            at_position[2],
        );
        let slot_b = ErrorSummary::single(
            &detail(Errno::ENOSPC, 2),
            Subtypes::WRITEBACK,
            at(11),
            at_position[1],
        );

        for (into, other) in [(slot_a, slot_b), (slot_b, slot_a)] {
            let mut merged = into;
            merged.absorb(&other);
            assert_eq!(merged.count, 3);
            assert_eq!(merged.subtypes, Subtypes::READ | Subtypes::WRITEBACK);
            assert_eq!(merged.first.errno, Errno::EIO);
            assert_eq!(merged.last.errno, Errno::EUCLEAN);
            assert_eq!((merged.first_time, merged.last_time), (at(10), at(12)));
        }
    }

    #[test]
    fn pending_summary_merges_everything_recorded_since_the_opening_error() {
        let mut ledger = Ledger::new();
        ledger.record(&detail(Errno::ENOSPC, 9), Subtypes::WRITEBACK, at(1));
        let opening = detail(Errno::EIO, 1);
        let opened = ledger.record(&opening, Subtypes::READ, at(2));
        ledger.record(&detail(Errno::EUCLEAN, 2), Subtypes::METADATA, at(3));

        let pending = ErrorSummary::pending(&opening, Subtypes::READ, at(2), opened, &ledger);
        assert_eq!(pending.count, 2);
        assert_eq!(pending.subtypes, Subtypes::READ | Subtypes::METADATA);
        assert_eq!(
            (pending.first.errno, pending.last.errno),
            (Errno::EIO, Errno::EUCLEAN)
        );
        assert_eq!((pending.first_time, pending.last_time), (at(2), at(3)));
        // A later summary of the same filesystem sorts after it.
        let closing = ErrorSummary::single(
            &detail(Errno::ESHUTDOWN, 0),
            Subtypes::SHUTDOWN,
            at(4),
            ledger.cursor(),
        );
        let mut merged = closing;
        merged.absorb(&pending);
        assert_eq!(
            (merged.first.errno, merged.last.errno),
            (Errno::EIO, Errno::ESHUTDOWN)
        );
    }

    #[test]
    fn absorbing_into_nothing_takes_the_summary_as_is() {
        let position = positions(1)[0];
        let only = ErrorSummary::single(&detail(Errno::EIO, 3), Subtypes::READ, at(5), position);
        let mut into = None;
        ErrorSummary::absorb_into(&mut into, &only);
        let event = into.map(|summary| summary.error_event(EventId(7), Fsid(1)));
        assert_eq!(
            event.map(|e| (e.count, e.errno())),
            Some((1, Some(Errno::EIO)))
        );
    }
}
