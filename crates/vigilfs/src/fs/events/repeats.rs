//! Damping of repeated errors: one error that keeps coming (a program
//! rewriting a mapping on a full disk, a reader retrying a bad block) must
//! not push every other event out of the bounded log.
//!
//! An error merges into an open record of its own kind for as long as
//! nobody has read or written that record. A following listener and the
//! writer take records within moments, so a flood of one file's errors
//! would still make a record per error and wrap the region over the whole
//! history (2,493 records in one second, in a review). Here every key (the
//! error's subtypes, errno and inode) has a streak: the records made for it
//! in close succession. The first [`UNDAMPED`] records of a streak are made
//! at once, as before; after that, errors of the key are absorbed into one
//! pending record for a window that doubles with every record of the
//! streak, from [`FIRST_WINDOW`] to [`LAST_WINDOW`]. When the window is
//! over, the pending record becomes a record (the writer, a reader, or the
//! next error of the key makes it), so a flood of one key costs one slot
//! every 8 seconds, and an error of any other key still gets its own record
//! at once.
//!
//! The table is small and fixed. When it is full, a key that has made one
//! record and holds nothing pending gives way to a new key: one-off errors
//! (every failing file's first) must not keep a key that repeats (their
//! retries, counted as one stream) from being damped.
//!
//! Invariants: an absorbed error is counted in exactly one pending record,
//! which becomes a record or, when no id can be had at the end, the LOST
//! tally; nothing here allocates (the table is fixed at mount); a key has
//! at most one streak.

use crate::format::event_log::EventRecord;

/// Streaks tracked at once.
const CAPACITY: usize = 32;
/// Records of a streak made without damping.
const UNDAMPED: u32 = 2;
/// The first damping window, in ns.
const FIRST_WINDOW: u64 = 250_000_000;
/// The longest damping window, in ns: also the longest a repeat waits in
/// memory, where a crash would take it from the log (the superblock's
/// error record still counts it once saved).
const LAST_WINDOW: u64 = 8_000_000_000;
/// A key quiet for this long after its window (in ns) starts a new streak.
/// Longer than the writeback interval (5 s unless set): a file whose data
/// is retried and fails again at every writeback stays in its streak, and
/// costs one slot per window, not one per retry.
const QUIET: u64 = 10_000_000_000;

/// What makes errors repeats of each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub(super) subtypes: u32,
    pub(super) errno: i32,
    pub(super) inode: Option<u64>,
    /// Where on the device the error is, when it says (its node's block,
    /// else its device range's start): failures at different places are
    /// different failures (media failures, lost data), each with its own
    /// record, never damped into one another, so no record names bytes
    /// that were not hit. Errors with no place (a file's writeback, a
    /// mapping's rewrites on a full disk) are keyed by their file alone,
    /// and a damped record's range widens over them.
    pub(super) place: Option<u64>,
    /// Where it was seen (a hash of the origin text): a file's errors seen
    /// in different operations, or lost changes of different names, are
    /// different errors.
    pub(super) origin: u64,
}

#[derive(Debug, Clone, Copy)]
struct Streak {
    key: Key,
    /// Records made for the key in this streak.
    records: u32,
    /// When the newest of them was made.
    last_record_ns: u64,
    /// Errors absorbed since then: the record they become.
    pending: Option<EventRecord>,
}

impl Streak {
    fn window(&self) -> u64 {
        match self.records.checked_sub(UNDAMPED) {
            None => 0,
            Some(doublings) => FIRST_WINDOW
                .checked_shl(doublings)
                .unwrap_or(LAST_WINDOW)
                .min(LAST_WINDOW),
        }
    }

    fn window_end(&self) -> u64 {
        self.last_record_ns.saturating_add(self.window())
    }

    /// Whether the key went quiet: its next record starts a new streak and
    /// the entry may be reused.
    fn ended(&self, now: u64) -> bool {
        self.pending.is_none() && now >= self.window_end().saturating_add(QUIET)
    }

    /// Whether the entry may give way to another key while the table is
    /// full: a key with one record and nothing pending is so far a one-off
    /// (each failing file's first error is one), and it must not keep a
    /// key that repeats from being damped (review 22: a hundred files'
    /// first failures filled the table, and the retries of all of them,
    /// one key, each made a record).
    fn may_give_way(&self) -> bool {
        self.pending.is_none() && self.records < UNDAMPED
    }
}

/// The streaks of the keys seen lately. See the module comment.
#[derive(Debug)]
pub(super) struct Repeats {
    streaks: [Option<Streak>; CAPACITY],
}

impl Repeats {
    pub(super) fn new() -> Repeats {
        Repeats {
            streaks: [None; CAPACITY],
        }
    }

    fn find(&mut self, key: Key) -> Option<&mut Streak> {
        self.streaks
            .iter_mut()
            .flatten()
            .find(|streak| streak.key == key)
    }

    /// Takes an error of `key` into its pending record if the key is being
    /// damped; `make` builds that record from the error when it is the
    /// first one absorbed, `fold` adds it to one already pending. Returns
    /// whether the error was absorbed, and whether it opened the pending
    /// record (the writer then has a new time to wake at).
    pub(super) fn absorb(
        &mut self,
        key: Key,
        now: u64,
        make: impl FnOnce() -> EventRecord,
        fold: impl FnOnce(&mut EventRecord),
    ) -> Absorbed {
        let Some(streak) = self.find(key) else {
            return Absorbed::No;
        };
        if now >= streak.window_end() {
            return Absorbed::No;
        }
        match &mut streak.pending {
            Some(pending) => {
                fold(pending);
                Absorbed::Into
            }
            None => {
                streak.pending = Some(make());
                Absorbed::Opened
            }
        }
    }

    /// A record of `key` is made at `now`: the streak goes on (or starts),
    /// and what was pending for the key, if anything, is handed back to be
    /// folded into that record.
    pub(super) fn record_made(&mut self, key: Key, now: u64) -> Option<EventRecord> {
        if let Some(streak) = self.find(key) {
            let pending = streak.pending.take();
            if pending.is_none() && streak.ended(now) {
                streak.records = 0;
            }
            let gap = now.saturating_sub(streak.last_record_ns);
            streak.records = streak.records.saturating_add(1);
            streak.last_record_ns = now;
            // Repeats further apart than the window (a writeback retried at
            // every interval) would each be a record until the doubling
            // reached their period: the window covers the gap at once.
            if streak.records >= UNDAMPED {
                while streak.window() < gap.min(LAST_WINDOW) {
                    streak.records += 1;
                }
            }
            return pending;
        }
        // A free entry, or the one quiet longest, or a one-off's; with none,
        // the key is not tracked (every error of it then gets a record, as
        // without damping).
        let slot = self
            .streaks
            .iter_mut()
            .filter(|slot| slot.is_none_or(|streak| streak.ended(now) || streak.may_give_way()))
            .min_by_key(|slot| slot.map_or(0, |streak| streak.last_record_ns))?;
        *slot = Some(Streak {
            key,
            records: 1,
            last_record_ns: now,
            pending: None,
        });
        None
    }

    /// Which streak has a pending record due at `now` (any pending one if
    /// `all`).
    pub(super) fn due(&self, now: u64, all: bool) -> Option<usize> {
        self.streaks.iter().position(|slot| {
            slot.is_some_and(|streak| {
                streak.pending.is_some() && (all || now >= streak.window_end())
            })
        })
    }

    /// Takes the pending record of streak `index` ([`Repeats::due`]); the
    /// streak goes on as if the record were made now.
    pub(super) fn take(&mut self, index: usize, now: u64) -> Option<EventRecord> {
        let streak = self.streaks.get_mut(index)?.as_mut()?;
        let pending = streak.pending.take()?;
        streak.records = streak.records.saturating_add(1);
        streak.last_record_ns = now;
        Some(pending)
    }

    /// Errors absorbed and not yet in a record.
    pub(super) fn held(&self) -> u64 {
        self.streaks
            .iter()
            .flatten()
            .filter_map(|streak| streak.pending.map(|record| record.count))
            .sum()
    }

    /// The inodes of the pending records.
    pub(super) fn held_inodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.streaks
            .iter()
            .flatten()
            .filter_map(|streak| streak.pending.and_then(|record| record.inode))
    }

    /// When the next pending record is due (ns since the epoch).
    pub(super) fn next_due(&self) -> Option<u64> {
        self.streaks
            .iter()
            .flatten()
            .filter(|streak| streak.pending.is_some())
            .map(Streak::window_end)
            .min()
    }
}

/// What [`Repeats::absorb`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Absorbed {
    /// The key is not damped now: the error needs a record.
    No,
    /// Folded into the key's pending record.
    Into,
    /// The first error of a new pending record.
    Opened,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::event_log::RecordKind;

    const SECOND: u64 = 1_000_000_000;

    /// Records made for one key failing every `period` ns for `span` ns,
    /// as the event log makes them: an error not absorbed is a record.
    fn records_for_errors_every(period: u64, span: u64) -> u64 {
        let key = Key {
            subtypes: 1,
            errno: libc::EIO,
            inode: Some(12),
            place: None,
            origin: 7,
        };
        let mut repeats = Repeats::new();
        let mut made = 0;
        for now in (0..span).step_by(period as usize) {
            let record = || EventRecord::new(0, RecordKind::Error, now);
            if repeats.absorb(key, now, record, |_| {}) == Absorbed::No {
                repeats.record_made(key, now);
                made += 1;
            }
        }
        made
    }

    /// A writeback that fails again at every interval is a repeat like a
    /// flood: after the first two, at most one record per window (8 s).
    /// With a one-second quiet rule every retry made a record, and with
    /// the window only doubling, the first eight retries still did.
    #[test]
    fn errors_retried_every_writeback_interval_are_damped() {
        let span = 600 * SECOND;
        let made = records_for_errors_every(5 * SECOND, span);
        assert!(
            made <= span / LAST_WINDOW + 2,
            "{made} records for 120 retries in 10 minutes"
        );
        let early = records_for_errors_every(5 * SECOND, 30 * SECOND);
        assert!(early <= 4, "{early} records for the first 6 retries");
    }

    /// Errors far apart are not repeats: each is a record at once.
    #[test]
    fn errors_further_apart_than_the_quiet_time_each_make_a_record() {
        let period = LAST_WINDOW + QUIET + SECOND;
        assert_eq!(records_for_errors_every(period, 20 * period), 20);
    }
}
