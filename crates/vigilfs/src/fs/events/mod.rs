//! The event log of a mount: every error and every operational event
//! (mount, recovery, `errors=` actions, freeze, thaw, fault rules,
//! shutdown, unmount) becomes a record with an id that increases across
//! mounts and is never given twice; the records are kept in a bounded ring
//! in memory for live listeners and written to the image's event log
//! region (`format::event_log`) by the writer thread.
//!
//! # The error path
//!
//! [`EventLog::record_error`] takes one short lock and never allocates,
//! never waits for the device and never recurses: the ring and its slots
//! are allocated at mount. An error equal to one in a record still open
//! (not yet read by a listener nor taken by the writer) merges into it
//! (count += 1, last error and time updated). Otherwise it opens a record,
//! if an id may be handed out and there is room; if not, it merges into the
//! newest open error record (first error kept, last updated, subtypes
//! OR-ed), and if there is none it is counted in the tally that becomes a
//! LOST record as soon as an id is free. So every error is counted in
//! exactly one record's `count`, and `errors_total` (the running sum, fixed
//! when a record is sealed) makes any loss a reader sees exact.
//!
//! # Ids
//!
//! Ids are handed out only up to `reserved_through`, which the region's
//! header says before any id beyond the old reservation is used (the
//! writer raises it ahead of need). After an unclean stop the next mount
//! resumes above the reservation, and its MOUNT record names the skipped
//! ids as a gap: an id a listener saw live is never given again, and a
//! reader can tell a gap from nothing. Two ids are kept spare for the
//! terminal records, which always get one.
//!
//! # Invariants
//!
//! Ring entries have consecutive ids; in id order they are sealed, then
//! open (sealing goes in id order, so `errors_total` is a running sum in
//! id order). An entry leaves the ring only when sealed and written (or,
//! without a region, sealed). Locks: the region (`store`) before the ring
//! (`state`), never the other way round; the error path takes only
//! `state`.

mod open;
mod record;
mod repeats;
mod ring;
mod store;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::format::event_log::EventRecord;
pub use open::{HeaderDamage, OpenedLog};
pub use record::{ErrorInput, Notice};
use ring::LogState;
use store::Store;
pub(super) use writer::Writer;

/// Records kept in memory.
const RING: usize = 1024;
/// Records that may still merge at once.
const OPEN_LIMIT: usize = 64;
/// The shortest wait for a damped record's window (a clock that moved
/// backwards must not make a waiter spin).
const MIN_WAKE: Duration = Duration::from_millis(1);
/// Ids reserved ahead of need.
const RESERVATION: u64 = 4096;
/// Ids kept for the terminal records (shutdown, then unmount).
const SPARE: u64 = 2;
/// Where an event log stood when a simulated power cut ended its mount:
/// the newest id it handed out and the running sum of errors through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLogEnd {
    /// The newest id handed out.
    pub newest_id: u64,
    /// `errors_total` through that id.
    pub errors_total: u64,
}

/// What a monitor sees of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogStatus {
    /// Whether the image has an event log region (else records live in
    /// memory only, for this mount).
    pub persistent: bool,
    /// Record slots in the region.
    pub slots: u64,
    /// The newest id handed out, 0 if none.
    pub newest_id: u64,
    /// Ids up to this are written to the region.
    pub written_id: u64,
    /// The first id of this mount.
    pub mount_first_id: u64,
    /// Records made this mount.
    pub records: u64,
    /// Errors counted only in LOST records this mount.
    pub lost_errors: u64,
    /// Repeats of one file's error held back by damping, not yet in a
    /// record (see `repeats`).
    pub held_errors: u64,
    /// Failed writes of the log this mount.
    pub write_failures: u64,
    /// The last of them.
    pub last_write_failure: Option<String>,
    /// Why the region could not be used at mount, if it could not.
    pub unavailable: Option<String>,
}

/// What [`EventLog::read_after`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The records after the id asked for, consecutive, in order.
    Records(Vec<EventRecord>),
    /// These ids are not there: overwritten by the ring, never written
    /// (a crash, a failed write), or skipped by a mount after an unclean
    /// stop. The record after them is read next.
    Gap {
        /// First missing id.
        first: u64,
        /// Last missing id.
        last: u64,
    },
    /// Nothing new within the wait.
    Timeout,
    /// The mount's log is closed (unmounted) and everything was read.
    Closed,
}

/// The event log of a mount. See the module comment.
pub struct EventLog {
    state: Mutex<LogState>,
    changed: Condvar,
    store: Mutex<Option<Store>>,
    /// Whether records go to the region: not on a read-only mount (until
    /// [`EventLog::make_writable`]), nor when ids could not be reserved.
    writable: AtomicBool,
    slots: u64,
    unavailable: Option<String>,
    write_failures: AtomicU64,
    last_failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EventLog")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state whole before it can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Nanoseconds since the epoch.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

impl EventLog {
    /// A log kept in memory only (no region): for images without one and
    /// for engines built without a device.
    pub fn in_memory() -> EventLog {
        EventLog::assemble(LogState::new(1, u64::MAX, 0), None, false, 0, None)
    }

    fn assemble(
        state: LogState,
        store: Option<Store>,
        writable: bool,
        slots: u64,
        unavailable: Option<String>,
    ) -> EventLog {
        EventLog {
            state: Mutex::new(state),
            changed: Condvar::new(),
            store: Mutex::new(store),
            writable: AtomicBool::new(writable),
            slots,
            unavailable,
            write_failures: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        }
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        lock(&self.state)
    }

    fn wake(&self, waiting: bool) {
        if waiting {
            self.changed.notify_all();
        }
    }

    /// Writes the records not yet written, without a flush: the journal
    /// calls it right before a commit's device flush, which makes them
    /// durable with the commit. Never fails the commit: a failure is
    /// counted, and the writer tries again. Never waits either: if the
    /// writer is writing the region right now (its flush comes within
    /// moments and its next round follows at once), the commit goes on
    /// without it — waiting there cost fsync callers three quarters of
    /// their rate under an error flood (bench/RESULTS.md).
    pub fn write_for_commit(&self) {
        if !self.writable.load(Ordering::Acquire) {
            return;
        }
        let mut store = match self.store.try_lock() {
            Ok(store) => store,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let records = {
            let mut state = self.state();
            let newest = state.next_id - 1;
            state.seal_through(newest);
            let from = state.written_through.max(state.committed_through);
            Self::unwritten(&state, from)
        };
        let Some(region) = store.as_mut() else {
            return;
        };
        if records.is_empty() {
            return;
        }
        match region.write_records(&records) {
            Ok(()) => {
                if let Some(last) = records.last() {
                    let mut state = self.state();
                    state.committed_through = state.committed_through.max(last.id);
                }
            }
            Err(error) => self.count_failure(error.to_string()),
        }
    }

    fn unwritten(state: &LogState, after: u64) -> Vec<EventRecord> {
        state
            .ring
            .iter()
            .filter(|entry| entry.record.id > after)
            .map(|entry| entry.record)
            .collect()
    }

    fn count_failure(&self, message: String) {
        self.write_failures.fetch_add(1, Ordering::AcqRel);
        *lock(&self.last_failure) = Some(message);
    }

    /// Writes every record not yet written and flushes, and the
    /// reservation if it runs low. Failures are counted (see
    /// [`EventLogStatus`]) and returned; they are never reported as events
    /// (that would recurse).
    pub fn persist(&self) -> Result<(), String> {
        let mut store = lock(&self.store);
        let (records, reserve_to, committed) = {
            let mut state = self.state();
            state.flush_repeats(now_ns(), false);
            state.flush_tally(false);
            let newest = state.next_id - 1;
            state.seal_through(newest);
            // What a commit wrote needs only the flush.
            let written = state.written_through.max(state.committed_through);
            let records = Self::unwritten(&state, written);
            let low = state.reserved_through.saturating_sub(state.next_id) < RESERVATION / 2;
            let reserve_to =
                (self.writable.load(Ordering::Acquire) && low).then(|| state.next_id + RESERVATION);
            (records, reserve_to, state.committed_through)
        };
        let outcome = match store.as_mut() {
            Some(region) if self.writable.load(Ordering::Acquire) => {
                let first_slot = region.next_slot();
                let written = if records.is_empty() {
                    Ok(())
                } else {
                    region.write_records(&records)
                };
                let written = written.and_then(|()| region.flush());
                if written.is_err() {
                    // They are written again at the next try, to the same
                    // slots: a lasting flush failure must not fill the
                    // region with copies (and wrap over the history).
                    region.rewind_to(first_slot);
                }
                written.and_then(|()| match reserve_to {
                    Some(reserved) => region.write_header(reserved).map(|()| Some(reserved)),
                    None => Ok(None),
                })
            }
            _ => Ok(None),
        };
        match outcome {
            Ok(reserved) => {
                // Still under the region's lock: a commit arriving now must
                // see these written, or it would write them a second time.
                let mut state = self.state();
                drop(store);
                let last = records.last().map_or(committed, |record| record.id);
                state.written_through = state.written_through.max(last).max(committed);
                if let Some(reserved) = reserved {
                    state.reserved_through = reserved;
                    // Ids may be handed out again: a tally can become a record.
                    state.flush_tally(false);
                }
                let waiting = state.waiting > 0;
                drop(state);
                self.wake(waiting);
                Ok(())
            }
            Err(error) => {
                drop(store);
                let message = error.to_string();
                self.count_failure(message.clone());
                Err(message)
            }
        }
    }

    /// How long the writer sleeps with nothing to do: until the next
    /// damped record is due, at most a second.
    fn idle_wait(&self, state: &LogState) -> Duration {
        let idle = Duration::from_secs(1);
        state.repeats.next_due().map_or(idle, |due| {
            let left = Duration::from_nanos(due.saturating_sub(now_ns()));
            left.clamp(MIN_WAKE, idle)
        })
    }

    /// Whether the writer has work: records or a tally not yet written, a
    /// damped record due, or a reservation running low.
    fn has_work(&self, state: &LogState) -> bool {
        state.next_id - 1 > state.written_through
            || state.tally.count > 0
            || state.tally.notices > 0
            || state.repeats.next_due().is_some_and(|due| due <= now_ns())
            || (self.writable.load(Ordering::Acquire)
                && state.reserved_through.saturating_sub(state.next_id) < RESERVATION / 2)
    }

    /// The mount is over: listeners read what is left, then hear it is
    /// closed.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.stopping = true;
        drop(state);
        self.changed.notify_all();
    }

    /// Reads the records after id `after`, at most `max`, waiting up to
    /// `wait` for one to come. Reading a record that is still open seals
    /// it: later errors go to a new record, as with fanotify.
    pub fn read_after(&self, after: u64, max: usize, wait: Duration) -> ReadOutcome {
        let deadline = Instant::now() + wait;
        let max = max.max(1);
        loop {
            let mut state = self.state();
            let now = now_ns();
            state.flush_repeats(now, false);
            let front = state
                .ring
                .front()
                .map_or(state.next_id, |entry| entry.record.id);
            if after + 1 >= front {
                let newest = state.next_id - 1;
                if after < newest {
                    let last = newest.min(after + max as u64);
                    state.seal_through(last);
                    let records = state
                        .ring
                        .iter()
                        .filter(|entry| entry.record.id > after && entry.record.id <= last)
                        .map(|entry| entry.record)
                        .collect();
                    return ReadOutcome::Records(records);
                }
                if state.closed {
                    return ReadOutcome::Closed;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return ReadOutcome::Timeout;
                }
                // A damped error's record is due then, whether or not the
                // writer got to it.
                let left = state.repeats.next_due().map_or(left, |due| {
                    left.min(Duration::from_nanos(due.saturating_sub(now)).max(MIN_WAKE))
                });
                state.waiting += 1;
                let (mut state, _) = self
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner);
                state.waiting -= 1;
                continue;
            }
            drop(state);
            // Older than the ring: the region holds what it still can.
            let store = lock(&self.store);
            let found = store.as_ref().map_or_else(Vec::new, |region| {
                region.records_between(after + 1, front - 1, max)
            });
            drop(store);
            return match found.first() {
                Some(first) if first.id == after + 1 => {
                    let consecutive = found
                        .iter()
                        .enumerate()
                        .take_while(|(index, record)| record.id == after + 1 + *index as u64)
                        .map(|(_, record)| *record)
                        .collect();
                    ReadOutcome::Records(consecutive)
                }
                Some(first) => ReadOutcome::Gap {
                    first: after + 1,
                    last: first.id - 1,
                },
                None => ReadOutcome::Gap {
                    first: after + 1,
                    last: front - 1,
                },
            };
        }
    }

    /// The running sum of errors through record `id` (0 before the first
    /// id), while the ring or the region still holds that record: a reader
    /// starting after `id` takes it first, so that a loss right at its
    /// start is still counted exactly. An open record is sealed, as a read
    /// of it would.
    pub fn errors_through(&self, id: u64) -> Option<u64> {
        if id == 0 {
            return Some(0);
        }
        let mut state = self.state();
        if state
            .ring
            .front()
            .is_some_and(|entry| entry.record.id <= id)
        {
            state.seal_through(id);
            return state
                .ring
                .iter()
                .find(|entry| entry.record.id == id)
                .map(|entry| entry.record.errors_total);
        }
        drop(state);
        let store = lock(&self.store);
        let region = store.as_ref()?;
        let held = region.records_between(id, id, 1);
        held.first().map(|record| record.errors_total)
    }

    /// Hands out no id from now on (later errors are only tallied) and
    /// says where the log stands, for good: its newest id and the running
    /// sum through it. For the mount a simulated power cut brings back,
    /// which goes on after that id (see [`EventLogEnd`]): no id a listener
    /// saw is given twice.
    pub fn end_ids(&self) -> EventLogEnd {
        let newest_id = {
            let mut state = self.state();
            state.ids_ended = true;
            state.next_id - 1
        };
        EventLogEnd {
            newest_id,
            errors_total: self.errors_through(newest_id).unwrap_or(0),
        }
    }

    /// The newest id handed out (0 if none).
    pub fn newest_id(&self) -> u64 {
        self.state().next_id - 1
    }

    /// The first id of this mount (its MOUNT record).
    pub fn mount_first_id(&self) -> u64 {
        self.state().mount_first_id
    }

    /// Whether the ids this mount hands out are kept in the image: not on
    /// a read-only mount, nor when the log cannot be written. Then a later
    /// mount hands the same ids out again, for other events.
    pub fn is_persistent(&self) -> bool {
        self.slots > 0 && self.writable.load(Ordering::Acquire)
    }

    /// A monitor's view.
    pub fn status(&self) -> EventLogStatus {
        let state = self.state();
        EventLogStatus {
            persistent: self.is_persistent(),
            slots: self.slots,
            newest_id: state.next_id - 1,
            written_id: state.written_through,
            mount_first_id: state.mount_first_id,
            records: state.records_made,
            lost_errors: state.errors_tallied,
            held_errors: state.repeats.held(),
            write_failures: self.write_failures.load(Ordering::Acquire),
            last_write_failure: lock(&self.last_failure).clone(),
            unavailable: self.unavailable.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
