//! The ring of records in memory and the ids they get: the part of the
//! event log the error path touches, under its one short lock.
//!
//! Invariants: ring entries have consecutive ids and are, in id order,
//! sealed and then open; `open` counts the open ones at the back; sealing
//! goes in id order, so `errors_total` is a running sum; an entry leaves
//! the ring only when sealed and written through; ids are taken only up to
//! the reservation, keeping [`SPARE`] for the terminal records.

use std::collections::VecDeque;

use super::repeats::Repeats;
use super::{ErrorInput, OPEN_LIMIT, RING, SPARE};
use crate::format::event_log::{EventRecord, InlineText, NodeRef, RecordKind};

/// Errors that found no record yet: what the next LOST record carries.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tally {
    pub(super) count: u64,
    pub(super) subtypes: u32,
    pub(super) first_ns: u64,
    pub(super) last_ns: u64,
    /// Operational events that found no id.
    pub(super) notices: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) record: EventRecord,
    pub(super) sealed: bool,
}

#[derive(Debug)]
pub(super) struct LogState {
    pub(super) ring: VecDeque<Entry>,
    pub(super) next_id: u64,
    /// Ids up to this are in the region and flushed (or, without one, are
    /// final).
    pub(super) written_through: u64,
    /// Ids up to this were written before a journal commit's flush (so are
    /// durable once it succeeds); the writer still flushes them itself
    /// before they may leave the ring.
    pub(super) committed_through: u64,
    pub(super) reserved_through: u64,
    pub(super) open: usize,
    /// `errors_total` of the newest sealed record.
    pub(super) sealed_total: u64,
    pub(super) tally: Tally,
    /// Errors of keys that keep repeating, absorbed until their window ends.
    pub(super) repeats: Repeats,
    pub(super) stopping: bool,
    pub(super) closed: bool,
    /// No id is handed out any more ([`EventLog::end_ids`]): the engine
    /// lost its power, and the next one goes on from here.
    pub(super) ids_ended: bool,
    pub(super) mount_first_id: u64,
    pub(super) first_error: Option<EventRecord>,
    pub(super) mount_errors: u64,
    pub(super) records_made: u64,
    pub(super) errors_tallied: u64,
    /// Threads waiting on `changed` (listeners, the writer): the error
    /// path wakes them only when there are some.
    pub(super) waiting: usize,
}

pub(super) fn counted(kind: RecordKind) -> bool {
    matches!(kind, RecordKind::Error | RecordKind::Lost)
}

impl LogState {
    pub(super) fn new(next_id: u64, reserved_through: u64, sealed_total: u64) -> LogState {
        LogState {
            ring: VecDeque::with_capacity(RING + SPARE as usize),
            next_id,
            written_through: next_id - 1,
            committed_through: next_id - 1,
            reserved_through,
            open: 0,
            sealed_total,
            tally: Tally::default(),
            repeats: Repeats::new(),
            stopping: false,
            closed: false,
            ids_ended: false,
            mount_first_id: next_id,
            first_error: None,
            mount_errors: 0,
            records_made: 0,
            errors_tallied: 0,
            waiting: 0,
        }
    }

    /// A new id and room for its record, if both may be had.
    pub(super) fn take_id(&mut self, terminal: bool) -> Option<u64> {
        let limit = if terminal {
            self.reserved_through
        } else {
            self.reserved_through.saturating_sub(SPARE)
        };
        if self.ids_ended || self.next_id > limit || (!terminal && self.open >= OPEN_LIMIT) {
            return None;
        }
        let room = if terminal {
            RING + SPARE as usize
        } else {
            RING
        };
        while self.ring.len() >= room {
            let front = self.ring.front()?;
            if !front.sealed || front.record.id > self.written_through {
                return None;
            }
            self.ring.pop_front();
        }
        let id = self.next_id;
        self.next_id += 1;
        Some(id)
    }

    pub(super) fn push(&mut self, record: EventRecord) {
        self.ring.push_back(Entry {
            record,
            sealed: false,
        });
        self.open += 1;
        self.records_made += 1;
    }

    /// Seals every open record up to `id`, in id order.
    pub(super) fn seal_through(&mut self, id: u64) {
        if self.open == 0 {
            return;
        }
        let mut open = self.open;
        let mut total = self.sealed_total;
        let start = self.ring.len() - open;
        for entry in self.ring.iter_mut().skip(start) {
            if entry.record.id > id {
                break;
            }
            if counted(entry.record.kind) {
                total += entry.record.count;
            }
            entry.record.errors_total = total;
            entry.sealed = true;
            open -= 1;
        }
        self.open = open;
        self.sealed_total = total;
    }

    /// Turns the tally into a LOST record if an id is free.
    pub(super) fn flush_tally(&mut self, terminal: bool) {
        if self.tally.count == 0 && self.tally.notices == 0 {
            return;
        }
        let Some(id) = self.take_id(terminal) else {
            return;
        };
        let tally = std::mem::take(&mut self.tally);
        let mut record = EventRecord::new(id, RecordKind::Lost, tally.first_ns);
        record.last_time_ns = tally.last_ns.max(tally.first_ns);
        record.count = tally.count;
        record.subtypes = tally.subtypes;
        record.value = tally.notices;
        record.text = InlineText::new(&format!(
            "{} errors, {} other events without a record of their own",
            tally.count, tally.notices
        ));
        self.push(record);
    }

    /// Turns the pending records of damped keys whose window is over at
    /// `now` (every one, if `all`) into records, while ids are free. At the
    /// end (`all`), those that find no id go to the tally.
    pub(super) fn flush_repeats(&mut self, now: u64, all: bool) {
        while let Some(index) = self.repeats.due(now, all) {
            match self.take_id(false) {
                Some(id) => {
                    let Some(mut record) = self.repeats.take(index, now) else {
                        break;
                    };
                    record.id = id;
                    self.push(record);
                }
                None if all => {
                    let Some(record) = self.repeats.take(index, now) else {
                        break;
                    };
                    let tally = &mut self.tally;
                    if tally.count == 0 {
                        tally.first_ns = record.first_time_ns;
                    }
                    tally.count += record.count;
                    tally.subtypes |= record.subtypes;
                    tally.last_ns = tally.last_ns.max(record.last_time_ns);
                    self.errors_tallied += record.count;
                }
                None => break,
            }
        }
    }

    pub(super) fn newest_open_error(&mut self) -> Option<&mut EventRecord> {
        let open = self.open;
        self.ring
            .iter_mut()
            .rev()
            .take(open)
            .map(|entry| &mut entry.record)
            .find(|record| record.kind == RecordKind::Error)
    }
}

/// A record of one error.
pub(super) fn error_record(id: u64, error: &ErrorInput<'_>, now: u64) -> EventRecord {
    let inode = error.inode.map(|(ino, _)| ino);
    let mut record = EventRecord::new(id, RecordKind::Error, now);
    record.count = 1;
    record.subtypes = error.subtypes;
    record.errno = error.errno;
    record.last_errno = error.errno;
    record.inode = inode;
    record.last_inode = inode;
    record.generation = error.inode.and_then(|(_, generation)| generation);
    record.range = error.range;
    record.device_range = error.device_range;
    record.node = error.node.map(|(tree, level, block)| NodeRef {
        tree: InlineText::new(tree),
        level,
        block,
    });
    record.text = InlineText::new(error.origin);
    record
}

/// Merges a repeat of a damped key: its byte range and device range widen
/// to cover every range merged, so the record names all of the file (and
/// of the device) the errors touched.
pub(super) fn merge_repeat(record: &mut EventRecord, error: &ErrorInput<'_>, now: u64) {
    merge(record, error, now);
    record.range = widened(record.range, error.range);
    record.device_range = widened(record.device_range, error.device_range);
}

/// The smallest range (offset, length) covering both.
fn widened(range: Option<(u64, u64)>, other: Option<(u64, u64)>) -> Option<(u64, u64)> {
    match (range, other) {
        (Some((offset, length)), Some((other, other_length))) => {
            let start = offset.min(other);
            let end = offset
                .saturating_add(length)
                .max(other.saturating_add(other_length));
            Some((start, end - start))
        }
        (range, other) => range.or(other),
    }
}

pub(super) fn merge(record: &mut EventRecord, error: &ErrorInput<'_>, now: u64) {
    record.count += 1;
    record.subtypes |= error.subtypes;
    record.last_errno = error.errno;
    record.last_inode = error.inode.map(|(ino, _)| ino);
    record.last_time_ns = record.last_time_ns.max(now);
}
