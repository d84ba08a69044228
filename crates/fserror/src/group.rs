//! A listener group: its configuration, its subscriptions, and the reading
//! side (blocking with timeout, non-blocking, iteration).
//!
//! Readers never sleep holding the queue lock: they wait on a condition
//! variable, which releases it. Every reader critical section copies one
//! event out and returns, so a reader — slow, blocked, or gone — never makes
//! an emitter wait on it. Emitters wake a reader only when a new entry
//! becomes readable and somebody is waiting, so a flood of merges costs no
//! system calls.

use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::ledger::{Cursor, Ledger};
use crate::queue::{Front, GroupState, Outcome, Storage, Subscription};
use crate::source::{Member, SourceCore};
use crate::summary::ErrorSummary;
use crate::sync::lock;
use crate::{ErrorDetail, ErrorSource, Event, EventKind, Fsid, SubscribeError, Subtypes};

/// How a group's error events are formed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// One error event per filesystem: while it is unread, every new error
    /// merges into it (fanotify's behaviour).
    Merge,
    /// Up to this many error events per filesystem, one per distinct
    /// (object, subtypes); an error equal to a queued one merges into it.
    /// The slots are allocated at subscribe time, so emitting still does not
    /// allocate.
    Distinct(NonZeroUsize),
}

/// Configuration of a listener group.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GroupConfig {
    mode: Mode,
    capacity: NonZeroUsize,
}

impl GroupConfig {
    /// Default bound on queued error events.
    pub const DEFAULT_CAPACITY: NonZeroUsize = match NonZeroUsize::new(128) {
        Some(capacity) => capacity,
        None => panic!("the default capacity is nonzero"),
    };

    /// Merge mode with the default capacity.
    pub fn merge() -> GroupConfig {
        GroupConfig {
            mode: Mode::Merge,
            capacity: Self::DEFAULT_CAPACITY,
        }
    }

    /// Distinct mode with `slots` events per filesystem and the default
    /// capacity.
    pub fn distinct(slots: NonZeroUsize) -> GroupConfig {
        GroupConfig {
            mode: Mode::Distinct(slots),
            capacity: Self::DEFAULT_CAPACITY,
        }
    }

    /// Bounds the number of error events queued in the group, over all its
    /// filesystems. RUNNING, LOST and terminal events are not counted: each
    /// has its own pre-allocated place.
    pub fn with_capacity(self, capacity: NonZeroUsize) -> GroupConfig {
        GroupConfig { capacity, ..self }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The bound on queued error events.
    pub fn capacity(&self) -> NonZeroUsize {
        self.capacity
    }
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig::merge()
    }
}

/// The group has no live subscription left and every event was read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("listener group closed")
    }
}

impl std::error::Error for Closed {}

/// Why [`Group::try_read`] returned no event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TryReadError {
    /// Nothing is queued now.
    Empty,
    /// See [`Closed`].
    Closed,
}

/// Why [`Group::read_timeout`] returned no event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReadTimeoutError {
    /// Nothing arrived in time.
    Timeout,
    /// See [`Closed`].
    Closed,
}

/// A listener group: subscribes to filesystems and reads their events.
///
/// `Send + Sync`: any number of threads may read; each event goes to exactly
/// one of them. Dropping the group unsubscribes it everywhere.
#[derive(Debug)]
pub struct Group {
    shared: Arc<GroupShared>,
}

/// The part of a group that its filesystems hold.
#[derive(Debug)]
pub(crate) struct GroupShared {
    config: GroupConfig,
    /// Serialises subscribe/unsubscribe of this group (first in the lock
    /// order, see `source.rs`).
    subscriptions: Mutex<()>,
    state: Mutex<GroupState>,
    readable: Condvar,
}

#[derive(Clone, Copy)]
enum Wait {
    No,
    Until(Instant),
    Forever,
}

enum NoEvent {
    Empty,
    Closed,
}

impl GroupShared {
    pub(crate) fn mode(&self) -> Mode {
        self.config.mode
    }

    fn lock_state(&self) -> MutexGuard<'_, GroupState> {
        lock(&self.state)
    }

    /// Wakes one reader if `state` has one waiting; call with the state lock
    /// released so the woken reader does not bounce on it.
    fn wake_one_if(&self, had_waiters: bool) {
        if had_waiters {
            self.readable.notify_one();
        }
    }

    fn wake_all_if(&self, had_waiters: bool) {
        if had_waiters {
            self.readable.notify_all();
        }
    }

    /// Creates the subscription storage for `source`, queues RUNNING, and
    /// returns the membership record the source will publish. The caller
    /// holds this group's subscription lock, which keeps the plan valid.
    /// Allocation happens between the two short lock sections, never inside.
    pub(crate) fn install(
        self: &Arc<GroupShared>,
        source: &Arc<SourceCore>,
        fsid: Fsid,
    ) -> Arc<Member> {
        let plan = self.lock_state().plan_subscription();
        let storage = Storage::for_plan(&plan);
        let member = Member::new(Arc::clone(self), plan.index);
        let subscription = Subscription::new(
            Arc::clone(source),
            Arc::clone(&member),
            fsid,
            self.config.mode,
        );
        let mut state = self.lock_state();
        let spare = state.install(plan, storage, subscription, SystemTime::now());
        let had_waiters = state.waiting_readers > 0;
        drop(state);
        drop(spare);
        self.wake_one_if(had_waiters);
        member
    }

    /// Merge mode: opens a fresh event for subscription `index`. Returns
    /// whether the subscription's error slot is now taken.
    pub(crate) fn open_merge(
        &self,
        index: usize,
        first: &ErrorDetail,
        subtypes: Subtypes,
        time: SystemTime,
        opened: Cursor,
    ) -> bool {
        let mut state = self.lock_state();
        let outcome = state.open_merge(index, first, subtypes, time, opened);
        let had_waiters = outcome.queued_an_entry() && state.waiting_readers > 0;
        drop(state);
        self.wake_one_if(had_waiters);
        outcome == Outcome::Queued
    }

    pub(crate) fn merge_distinct(
        &self,
        index: usize,
        detail: &ErrorDetail,
        subtypes: Subtypes,
        time: SystemTime,
        position: Cursor,
    ) {
        let mut state = self.lock_state();
        let outcome = state.merge_distinct(index, detail, subtypes, time, position);
        let had_waiters = outcome.queued_an_entry() && state.waiting_readers > 0;
        drop(state);
        self.wake_one_if(had_waiters);
    }

    /// Ends subscription `index` with its terminal event at the head of the
    /// queue; see [`GroupState::terminate`](crate::queue::GroupState::terminate).
    pub(crate) fn terminate(
        &self,
        index: usize,
        kind: EventKind,
        time: SystemTime,
        ledger: &Ledger,
        closing: Option<&ErrorSummary>,
    ) {
        let mut state = self.lock_state();
        let ended = state.terminate(index, kind, time, ledger, closing);
        let had_waiters = ended && state.waiting_readers > 0;
        drop(state);
        self.wake_all_if(had_waiters);
    }

    pub(crate) fn end_subscription(&self, index: usize, ledger: &Ledger) -> Option<Subscription> {
        let mut state = self.lock_state();
        let retired = state.unsubscribe(index, ledger);
        let had_waiters = state.waiting_readers > 0;
        drop(state);
        // Readers waiting on an empty queue must learn it is now closed.
        self.wake_all_if(had_waiters);
        retired
    }

    fn take(&self, wait: Wait) -> Result<Event, NoEvent> {
        let mut state = self.lock_state();
        loop {
            match state.front() {
                Front::Ready => {
                    if let Some(popped) = state.pop(None) {
                        let wake_others = state.is_closed() && state.waiting_readers > 0;
                        drop(state);
                        self.wake_all_if(wake_others);
                        drop(popped.retired);
                        return Ok(popped.event);
                    }
                }
                Front::NeedsLedger(source, ticket) => {
                    // Lock order is source before group: let go, take both,
                    // and check nobody else read the entry meanwhile.
                    drop(state);
                    let mut source_state = source.lock_state();
                    state = self.lock_state();
                    if state.front_ticket() == Some(ticket) {
                        if let Some(popped) = state.pop(Some(&source_state.ledger)) {
                            if let Some(member) = &popped.freed_merge_slot {
                                source_state.merge_slot_freed(member);
                            }
                            let wake_others = state.is_closed() && state.waiting_readers > 0;
                            drop(state);
                            drop(source_state);
                            self.wake_all_if(wake_others);
                            drop(popped.retired);
                            return Ok(popped.event);
                        }
                    }
                    // Another reader took the entry. Our handle on the source
                    // may now be the last one: release it outside the group
                    // lock, like every other deallocation.
                    drop(source_state);
                    drop(state);
                    drop(source);
                    state = self.lock_state();
                }
                Front::Empty => {
                    if state.is_closed() {
                        return Err(NoEvent::Closed);
                    }
                    if let Wait::No = wait {
                        return Err(NoEvent::Empty);
                    }
                    state.waiting_readers += 1;
                    let (woken, timed_out) = match wait {
                        Wait::No | Wait::Forever => (
                            self.readable
                                .wait(state)
                                .unwrap_or_else(std::sync::PoisonError::into_inner),
                            false,
                        ),
                        Wait::Until(deadline) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            let (guard, result) = self
                                .readable
                                .wait_timeout(state, left)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            (guard, result.timed_out() || left.is_zero())
                        }
                    };
                    state = woken;
                    state.waiting_readers -= 1;
                    if timed_out && state.len() == 0 {
                        return Err(if state.is_closed() {
                            NoEvent::Closed
                        } else {
                            NoEvent::Empty
                        });
                    }
                }
            }
        }
    }
}

impl Group {
    /// A group with no subscription.
    pub fn new(config: GroupConfig) -> Group {
        Group {
            shared: Arc::new(GroupShared {
                config,
                subscriptions: Mutex::new(()),
                state: Mutex::new(GroupState::new(config.capacity.get())),
                readable: Condvar::new(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> GroupConfig {
        self.shared.config
    }

    /// Subscribes to `source`; a RUNNING event is queued first.
    ///
    /// This allocates (the subscription's pre-allocated slots) and may wait
    /// for other subscription changes; it is not on the error path.
    pub fn subscribe(&self, source: &ErrorSource) -> Result<(), SubscribeError> {
        let _serial = lock(&self.shared.subscriptions);
        source.core().attach(&self.shared)
    }

    /// Unsubscribes from `source`. Events already queued stay readable; no
    /// terminal event is queued. Returns whether the group was subscribed.
    pub fn unsubscribe(&self, source: &ErrorSource) -> bool {
        let _serial = lock(&self.shared.subscriptions);
        source.core().detach(&self.shared)
    }

    /// Blocks until an event is ready, or the group is closed.
    pub fn read(&self) -> Result<Event, Closed> {
        self.shared.take(Wait::Forever).map_err(|_| Closed)
    }

    /// Waits at most `timeout` for an event.
    pub fn read_timeout(&self, timeout: Duration) -> Result<Event, ReadTimeoutError> {
        let wait = Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until);
        self.shared.take(wait).map_err(|no_event| match no_event {
            NoEvent::Empty => ReadTimeoutError::Timeout,
            NoEvent::Closed => ReadTimeoutError::Closed,
        })
    }

    /// Takes an event if one is ready.
    pub fn try_read(&self) -> Result<Event, TryReadError> {
        self.shared
            .take(Wait::No)
            .map_err(|no_event| match no_event {
                NoEvent::Empty => TryReadError::Empty,
                NoEvent::Closed => TryReadError::Closed,
            })
    }

    /// Blocking iterator: yields events until the group is closed.
    pub fn iter(&self) -> Iter<'_> {
        Iter { group: self }
    }

    /// Non-blocking iterator: yields the events ready now.
    pub fn try_iter(&self) -> TryIter<'_> {
        TryIter { group: self }
    }

    /// Number of events ready to read.
    pub fn queued(&self) -> usize {
        self.shared.lock_state().len()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _serial = lock(&self.shared.subscriptions);
        let slots = self.shared.lock_state().subscription_slots();
        for index in 0..slots {
            let source = self.shared.lock_state().live_source(index);
            if let Some(source) = source {
                source.detach(&self.shared);
            }
        }
        // Nobody can read any more: free the queue outside the lock, which
        // also breaks the group ↔ subscription reference cycle.
        let storage = self.shared.lock_state().take_storage();
        drop(storage);
    }
}

impl<'a> IntoIterator for &'a Group {
    type Item = Event;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Blocking iterator over a group's events; see [`Group::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    group: &'a Group,
}

impl Iterator for Iter<'_> {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.group.read().ok()
    }
}

/// Non-blocking iterator over a group's ready events; see
/// [`Group::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a> {
    group: &'a Group,
}

impl Iterator for TryIter<'_> {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.group.try_read().ok()
    }
}
