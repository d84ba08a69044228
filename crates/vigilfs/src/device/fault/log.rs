//! The fault log: every rule set or cleared and every time a rule fires,
//! in order, with what it hit — what unreliablefs users ask for and no
//! device-mapper target keeps.
//!
//! A bounded ring of [`FaultLogEntry`]s with increasing sequence numbers:
//! a reader asks for what follows the last number it saw and learns how
//! many entries were dropped before it could read them (never silently).
//! The filesystem layer appends the faults it injects into operations
//! (fsync, rename...) to the same log, so one log tells the whole story.
//!
//! Invariants: sequence numbers start at 1 and increase by one per entry;
//! the ring holds the newest [`FAULT_LOG_CAPACITY`] entries.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::rule::RuleId;
use crate::device::{ByteRange, IoClass};

/// Entries the log keeps; older ones are dropped (and counted).
pub const FAULT_LOG_CAPACITY: usize = 10_000;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultLogEvent {
    /// A rule was added; its text form.
    Set {
        /// The rule, as `inject --list` prints it.
        rule: String,
    },
    /// A rule was removed (or all were cleared).
    Cleared,
    /// The crash lab cut the power (the `number`-th cut of the mount):
    /// the device lost what it held unflushed.
    PowerCut {
        /// Which cut of the mount, from 1.
        number: u64,
    },
    /// A rule fired.
    Fired {
        /// The operation: `read`, `write`, `flush` for device I/O, or a
        /// filesystem operation's name (`fsync`, `rename`...).
        operation: String,
        /// The I/O class, for device I/O.
        class: Option<IoClass>,
        /// The file the request was for, when known.
        inode: Option<u64>,
        /// For an operation on a name (create, unlink, rename...): the
        /// directory holding the entry (review 53: it was logged as the
        /// file's inode).
        directory: Option<u64>,
        /// Its path, when known.
        path: Option<String>,
        /// The bytes of the request (device bytes for device I/O, file
        /// bytes for a file operation).
        range: Option<ByteRange>,
        /// The errno injected, if the rule failed the request.
        errno: Option<i32>,
        /// Microseconds the request was held, if the rule delayed it.
        delay_micros: Option<u64>,
        /// Whether the rule corrupted what was read.
        corrupted: bool,
    },
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultLogEntry {
    /// Its position in the log (from 1).
    pub sequence: u64,
    /// When.
    pub time: SystemTime,
    /// The rule concerned (`None` for a clear of every rule).
    pub rule: Option<RuleId>,
    /// What happened.
    pub event: FaultLogEvent,
}

/// The ring.
#[derive(Debug, Default)]
pub(crate) struct FaultLog {
    entries: VecDeque<FaultLogEntry>,
    next_sequence: u64,
}

impl FaultLog {
    pub(crate) fn append(&mut self, rule: Option<RuleId>, event: FaultLogEvent) {
        self.next_sequence += 1;
        if self.entries.len() == FAULT_LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(FaultLogEntry {
            sequence: self.next_sequence,
            time: SystemTime::now(),
            rule,
            event,
        });
    }

    /// The entries after sequence number `after`, and how many of those
    /// were dropped before they could be read.
    pub(crate) fn since(&self, after: u64) -> (Vec<FaultLogEntry>, u64) {
        let oldest = self
            .entries
            .front()
            .map_or(self.next_sequence + 1, |entry| entry.sequence);
        let dropped = oldest.saturating_sub(after + 1);
        let entries = self
            .entries
            .iter()
            .filter(|entry| entry.sequence > after)
            .cloned()
            .collect();
        (entries, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_gets_what_follows_and_hears_of_what_was_dropped() {
        let mut log = FaultLog::default();
        for _ in 0..FAULT_LOG_CAPACITY + 5 {
            log.append(None, FaultLogEvent::Cleared);
        }
        let (entries, dropped) = log.since(0);
        assert_eq!(dropped, 5);
        assert_eq!(entries.len(), FAULT_LOG_CAPACITY);
        assert_eq!(entries[0].sequence, 6);
        let (entries, dropped) = log.since(FAULT_LOG_CAPACITY as u64 + 3);
        assert_eq!((entries.len(), dropped), (2, 0));
        let (entries, dropped) = log.since(FAULT_LOG_CAPACITY as u64 + 5);
        assert_eq!((entries.len(), dropped), (0, 0));
    }
}
