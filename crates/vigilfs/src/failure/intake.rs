//! The intake of failure notices: a bounded queue between whoever notices
//! a failure and the one thread that handles them.
//!
//! The device reports a media failure on the thread that issued the read,
//! possibly deep inside a page-cache fill or a b-tree descent holding
//! locks the handling needs; so the device's callback only queues
//! ([`Intake::device_callback`]) and a worker handles. Before the
//! filesystem is ready (mount, journal replay, recovery) nothing is
//! handled: notices are parked here and handled once [`Intake::set_ready`]
//! is called, in arrival order.
//!
//! Invariants: the queue never holds more than its capacity; a notice
//! that does not fit is counted in `overflowed` (and reported by the
//! mounted layer), never silently lost; an identical notice already
//! waiting is not queued twice (it is counted in `merged`); every notice
//! received is counted once: handled, waiting (or being handled), merged
//! or overflowed; [`Intake::settle`] returns only when the queue is empty
//! and no notice is being handled.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::{Origin, Source};
use crate::alloc::FailureCause;
use crate::device::{ByteRange, MediaFailure, MediaFailureCallback};

thread_local! {
    /// The device bytes whose media failures this thread handles itself
    /// (see [`handling_own_failures`]), as start and end.
    static HANDLES_OWN_FAILURES: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Runs `work` with the media failures its reads meet within `range` left
/// to it: the device's notices of them are not queued. For a scrub (the
/// whole device), which handles every failure it finds as a notice of its
/// own, names itself as the origin, and counts what became of it (the
/// worker handling the same range first took the outcome from its
/// summary); and for the handling of a notice (its range), whose reads of
/// the failed blocks fail again (each queued one more notice of what was
/// being handled).
pub fn handling_own_failures<T>(range: ByteRange, work: impl FnOnce() -> T) -> T {
    struct Restore(Option<(u64, u64)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            HANDLES_OWN_FAILURES.with(|own| own.set(self.0));
        }
    }
    let handled = Some((range.start, range.end));
    let _restore = Restore(HANDLES_OWN_FAILURES.with(|own| own.replace(handled)));
    work()
}

/// Notices held by default: plenty for a burst of bad sectors, small
/// enough that a device reporting garbage cannot eat memory.
pub const DEFAULT_INTAKE_CAPACITY: usize = 1024;

/// One failure to handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The failed device bytes.
    pub range: ByteRange,
    /// Who reported it, and why.
    pub origin: Origin,
    /// It arrived before the filesystem was ready (parked).
    pub parked: bool,
}

/// Counters for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntakeStats {
    /// Notices received (queued or not).
    pub received: u64,
    /// Of which arrived before the filesystem was ready.
    pub parked: u64,
    /// Notices that did not fit the queue and were dropped.
    pub overflowed: u64,
    /// Notices identical to one waiting, merged into it.
    pub merged: u64,
    /// Notices waiting now.
    pub waiting: u64,
    /// Notices handled (or whose handling failed).
    pub handled: u64,
}

#[derive(Default)]
struct State {
    ready: bool,
    closed: bool,
    busy: bool,
    queue: VecDeque<Notice>,
    stats: IntakeStats,
}

/// See the module comment.
pub struct Intake {
    capacity: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Intake")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Intake {
    /// An intake holding up to `capacity` notices (at least one), not
    /// ready yet.
    pub fn new(capacity: usize) -> Arc<Intake> {
        Arc::new(Intake {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few field assignments: a panic elsewhere
        // leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a notice; `false` when the queue is full (it is counted as
    /// overflowed) or the intake is closed.
    pub fn offer(&self, range: ByteRange, origin: Origin) -> bool {
        let mut state = self.lock();
        state.stats.received += 1;
        if state.closed {
            state.stats.overflowed += 1;
            return false;
        }
        let parked = !state.ready;
        if parked {
            state.stats.parked += 1;
        }
        if state
            .queue
            .iter()
            .any(|waiting| waiting.range == range && waiting.origin == origin)
        {
            state.stats.merged += 1;
            return true;
        }
        if state.queue.len() >= self.capacity {
            state.stats.overflowed += 1;
            return false;
        }
        state.queue.push_back(Notice {
            range,
            origin,
            parked,
        });
        state.stats.waiting = state.queue.len() as u64;
        drop(state);
        self.changed.notify_all();
        true
    }

    /// Puts back a notice [`Intake::next`] gave that cannot be handled yet
    /// (the filesystem is frozen): it waits again, counted once, as it was
    /// when it arrived. The caller still calls [`Intake::done`], with
    /// `false`.
    pub fn requeue(&self, notice: Notice) {
        let mut state = self.lock();
        if !state.closed {
            state.queue.push_front(notice);
            state.stats.waiting = state.queue.len() as u64;
        }
    }

    /// Counts a notice handled on its reporter's thread, never queued (an
    /// operator's report, a scrub finding), so the counters cover every
    /// notice: `handled` is false when handling it failed.
    pub fn count_direct(&self, handled: bool) {
        let mut state = self.lock();
        state.stats.received += 1;
        if handled {
            state.stats.handled += 1;
        }
    }

    /// The callback the device reports media failures through: it only
    /// queues. Holds the intake weakly, so a device that outlives the
    /// mount reports into nothing.
    pub fn device_callback(self: &Arc<Intake>) -> MediaFailureCallback {
        let intake: Weak<Intake> = Arc::downgrade(self);
        Arc::new(move |failure: MediaFailure| {
            let own = HANDLES_OWN_FAILURES.with(Cell::get);
            if own.is_some_and(|(start, end)| {
                start <= failure.range.start && failure.range.end <= end
            }) {
                return;
            }
            if let Some(intake) = intake.upgrade() {
                let text = format!("{} read", failure.class);
                intake.offer(
                    failure.range,
                    Origin::new(FailureCause::Media, Source::Read, &text),
                );
            }
        })
    }

    /// Recovery is complete: notices may be handled from now on.
    pub fn set_ready(&self) {
        self.lock().ready = true;
        self.changed.notify_all();
    }

    /// Whether notices may be handled.
    pub fn is_ready(&self) -> bool {
        self.lock().ready
    }

    /// No more notices: [`Intake::next`] returns `None` once the queue is
    /// empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The next notice to handle, waiting up to `wait` for one: `None`
    /// when there is none (or the intake is closed and empty). The caller
    /// handles it, then calls [`Intake::done`].
    pub fn next(&self, wait: Duration) -> Option<Notice> {
        let mut state = self.lock();
        let something_to_hand_out = state.ready && !state.queue.is_empty();
        if !something_to_hand_out && !state.closed {
            state = self
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if !state.ready {
            return None;
        }
        let notice = state.queue.pop_front()?;
        state.busy = true;
        state.stats.waiting = state.queue.len() as u64;
        Some(notice)
    }

    /// The notice [`Intake::next`] gave is handled (`false`: it was put
    /// back with [`Intake::requeue`]).
    pub fn done(&self, handled: bool) {
        let mut state = self.lock();
        state.busy = false;
        if handled {
            state.stats.handled += 1;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until every notice queued so far is handled (for tests and
    /// for commands that must see the effect of a failure they caused).
    /// Gives up after `limit`; returns whether everything was handled.
    pub fn settle(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut state = self.lock();
        while state.busy || (state.ready && !state.queue.is_empty()) {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// The counters.
    pub fn stats(&self) -> IntakeStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::IoClass;

    fn origin() -> Origin {
        Origin::operator("test")
    }

    #[test]
    fn notices_before_ready_are_parked_then_handed_out_in_order() {
        let intake = Intake::new(8);
        assert!(intake.offer(ByteRange::new(0, 4096), origin()));
        assert!(intake.offer(ByteRange::new(8192, 12288), origin()));
        // Not ready: nothing is handed out, however long one waits.
        assert_eq!(intake.next(Duration::from_millis(5)), None);
        intake.set_ready();
        let first = intake.next(Duration::ZERO).unwrap();
        assert_eq!(first.range, ByteRange::new(0, 4096));
        assert!(first.parked);
        intake.done(true);
        let second = intake.next(Duration::ZERO).unwrap();
        assert_eq!(second.range.start, 8192);
        intake.done(true);
        let stats = intake.stats();
        assert_eq!((stats.received, stats.parked, stats.handled), (2, 2, 2));
    }

    #[test]
    fn overflow_is_counted_and_duplicates_are_merged() {
        let intake = Intake::new(2);
        assert!(intake.offer(ByteRange::new(0, 512), origin()));
        assert!(intake.offer(ByteRange::new(0, 512), origin()));
        assert!(intake.offer(ByteRange::new(512, 1024), origin()));
        assert!(!intake.offer(ByteRange::new(1024, 1536), origin()));
        let stats = intake.stats();
        assert_eq!(stats.received, 4);
        assert_eq!(stats.waiting, 2);
        assert_eq!(stats.overflowed, 1);
    }

    #[test]
    fn the_device_callback_queues_without_keeping_the_intake_alive() {
        let intake = Intake::new(4);
        let callback = intake.device_callback();
        callback(MediaFailure {
            range: ByteRange::new(4096, 8192),
            class: IoClass::Data,
            rule: None,
        });
        assert_eq!(intake.stats().waiting, 1);
        let weak = Arc::downgrade(&intake);
        drop(intake);
        assert!(weak.upgrade().is_none());
        // Reporting into a dropped intake is harmless.
        callback(MediaFailure {
            range: ByteRange::new(0, 512),
            class: IoClass::Metadata,
            rule: None,
        });
    }

    #[test]
    fn settle_waits_for_the_notice_being_handled() {
        let intake = Intake::new(4);
        intake.set_ready();
        intake.offer(ByteRange::new(0, 512), origin());
        let notice = intake.next(Duration::ZERO).unwrap();
        assert!(!intake.settle(Duration::from_millis(5)), "still busy");
        let worker = {
            let intake = Arc::clone(&intake);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(notice);
                intake.done(true);
            })
        };
        assert!(intake.settle(Duration::from_secs(5)));
        worker.join().unwrap();
        intake.close();
        assert_eq!(intake.next(Duration::from_millis(1)), None);
    }
}
