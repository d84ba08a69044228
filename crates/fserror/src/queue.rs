//! A listener group's queue: the pre-allocated event slots of each
//! subscription and the FIFO of what is ready to read.
//!
//! This module holds data only; the caller holds the group's lock (and, where
//! a [`Ledger`] is passed in, the filesystem's lock too).
//!
//! Layout. The FIFO (`ring`) holds small [`Entry`] handles; the events
//! themselves live in per-subscription slots allocated at subscribe time:
//!
//! - merge mode: one error slot, which is `Free`, `Pending` (queued, unread,
//!   merged lazily against the filesystem's [`Ledger`]) or `Frozen` (queued,
//!   unread, materialised because the listener unsubscribed and no more
//!   errors may merge into it);
//! - distinct mode: `N` error slots, each an [`ErrorSummary`] merged in
//!   place;
//! - one LOST slot, one RUNNING and one terminal slot.
//!
//! The terminal event jumps the queue. When a filesystem shuts down or is
//! unmounted, its terminal event is pushed at the *front* of the ring, so the
//! next read returns it: a listener learns at once that the filesystem died,
//! even behind a long queue of other filesystems' errors. For nothing of that
//! filesystem to follow it, every entry of that filesystem still in the ring
//! is taken out and absorbed into the terminal event: its error events merge
//! into the terminal event's error summary, its LOST count into its `lost`
//! count, and an unread RUNNING is dropped (the terminal event says more).
//! So no error is lost by overtaking them. Entries of other filesystems keep
//! their order behind it. Absorption covers every subscription of the group
//! to that filesystem, including earlier ones the listener unsubscribed from
//! whose events are still unread: they too are "from that filesystem".
//!
//! Invariants (checked by the tests and the model-based property test):
//!
//! - no allocation: `ring.capacity() >= capacity + 3 * subs.len()`, and the
//!   ring never holds more than `capacity` error entries plus, per
//!   subscription, one RUNNING, one LOST and one terminal entry — so a push,
//!   at either end, never reallocates;
//! - a subscription's storage is freed only when it has ended and none of its
//!   entries is queued, so every queued entry names a live slot. A
//!   subscription emptied by absorption (not by reads) stays in its slot
//!   until a new subscription reuses the slot or the group is dropped, so
//!   that its storage is freed outside the lock like every other;
//! - event ids are handed out when an event is read, so ids strictly
//!   increase, without gaps, in the order readers receive them — even though
//!   the terminal event is read before entries queued earlier;
//! - nothing is pushed for a subscription after its terminal entry, and no
//!   entry of the terminated filesystem is left behind the terminal entry.

use std::collections::VecDeque;
use std::mem;
use std::ptr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::ledger::{Cursor, Ledger};
use crate::source::{Member, SourceCore};
use crate::summary::ErrorSummary;
use crate::{ErrorDetail, Event, EventId, EventKind, Fsid, Mode, Subtypes};

/// What a queued FIFO entry stands for.
#[derive(Clone, Copy, Debug)]
enum Queued {
    Running(SystemTime),
    Error { slot: usize },
    Lost,
    Terminal,
}

/// Identity of a queued entry, unique within its group. A reader that must
/// let go of the group's lock checks with it that the entry it looked at is
/// still the front one when it has the lock back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Ticket(u64);

#[derive(Clone, Copy, Debug)]
struct Entry {
    ticket: Ticket,
    subscription: usize,
    what: Queued,
}

/// The FIFO, the ticket counter, and the id counter. Ids are taken when an
/// event is read, which is what keeps them in delivery order although the
/// terminal event overtakes earlier entries.
#[derive(Debug)]
struct Stream {
    ring: VecDeque<Entry>,
    next_ticket: u64,
    next_id: u64,
}

impl Stream {
    fn entry(&mut self, subscription: usize, what: Queued) -> Entry {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        debug_assert!(
            self.ring.len() < self.ring.capacity(),
            "a push must never reallocate the ring"
        );
        Entry {
            ticket,
            subscription,
            what,
        }
    }

    fn push_back(&mut self, subscription: usize, what: Queued) {
        let entry = self.entry(subscription, what);
        self.ring.push_back(entry);
    }

    fn push_front(&mut self, subscription: usize, what: Queued) {
        let entry = self.entry(subscription, what);
        self.ring.push_front(entry);
    }
}

#[derive(Debug)]
enum MergeSlot {
    Free,
    Pending {
        first: ErrorDetail,
        subtypes: Subtypes,
        first_time: SystemTime,
        opened: Cursor,
    },
    Frozen(ErrorSummary),
}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per subscription and never moved on the error path; inline avoids a pointer chase"
)]
enum Slots {
    Merge(MergeSlot),
    Distinct(Box<[Option<ErrorSummary>]>),
}

/// Errors that could not be queued: what a LOST event carries.
#[derive(Clone, Copy, Debug)]
struct LostTally {
    count: u64,
    subtypes: Subtypes,
    first_time: SystemTime,
    last_time: SystemTime,
}

impl LostTally {
    const NONE: LostTally = LostTally {
        count: 0,
        subtypes: Subtypes::empty(),
        first_time: SystemTime::UNIX_EPOCH,
        last_time: SystemTime::UNIX_EPOCH,
    };

    fn record(&mut self, subtypes: Subtypes, time: SystemTime) {
        self.absorb(&LostTally {
            count: 1,
            subtypes,
            first_time: time,
            last_time: time,
        });
    }

    fn absorb(&mut self, other: &LostTally) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.subtypes |= other.subtypes;
        self.first_time = self.first_time.min(other.first_time);
        self.last_time = self.last_time.max(other.last_time);
    }
}

#[derive(Debug)]
struct LostSlot {
    /// Whether the LOST entry is in the ring; while it is, new losses are
    /// counted into `tally`, and reading it starts a fresh tally.
    queued: bool,
    tally: LostTally,
}

/// The terminal event, materialised when the filesystem ends: it no longer
/// depends on the ledger.
#[derive(Clone, Copy, Debug)]
struct Terminal {
    kind: EventKind,
    announced: SystemTime,
    errors: Option<ErrorSummary>,
    lost: LostTally,
}

impl Terminal {
    fn event(&self, id: EventId, fsid: Fsid) -> Event {
        let mut event = Event::announcement(id, self.kind, fsid, self.announced);
        if let Some(errors) = &self.errors {
            event.count = errors.count;
            event.subtypes = errors.subtypes;
            event.first = Some(errors.first);
            event.last = Some(errors.last);
            event.first_time = event.first_time.min(errors.first_time);
            event.last_time = event.last_time.max(errors.last_time);
        }
        if self.lost.count > 0 {
            event.lost = self.lost.count;
            event.subtypes |= self.lost.subtypes;
            event.first_time = event.first_time.min(self.lost.first_time);
            event.last_time = event.last_time.max(self.lost.last_time);
        }
        event
    }
}

/// One group's subscription to one filesystem.
#[derive(Debug)]
pub(crate) struct Subscription {
    source: Arc<SourceCore>,
    member: Arc<Member>,
    fsid: Fsid,
    live: bool,
    queued: usize,
    slots: Slots,
    lost: LostSlot,
    terminal: Option<Terminal>,
}

impl Subscription {
    /// Builds the storage of a subscription; this is where the slots of
    /// distinct mode are allocated, before any lock is taken.
    pub(crate) fn new(
        source: Arc<SourceCore>,
        member: Arc<Member>,
        fsid: Fsid,
        mode: Mode,
    ) -> Subscription {
        let slots = match mode {
            Mode::Merge => Slots::Merge(MergeSlot::Free),
            Mode::Distinct(count) => Slots::Distinct(vec![None; count.get()].into_boxed_slice()),
        };
        Subscription {
            source,
            member,
            fsid,
            live: true,
            queued: 0,
            slots,
            lost: LostSlot {
                queued: false,
                tally: LostTally::NONE,
            },
            terminal: None,
        }
    }

    /// Ended, and nothing of it is queued: its storage may be freed.
    fn is_drained(&self) -> bool {
        !self.live && self.queued == 0
    }

    fn has_pending_merge(&self) -> bool {
        matches!(self.slots, Slots::Merge(MergeSlot::Pending { .. }))
    }

    /// Materialises a pending merge so that it no longer depends on the
    /// ledger; called when the listener unsubscribes.
    fn freeze(&mut self, ledger: &Ledger) {
        if let Slots::Merge(slot) = &mut self.slots {
            if let MergeSlot::Pending { .. } = slot {
                *slot = pending_summary(slot, ledger).map_or(MergeSlot::Free, MergeSlot::Frozen);
            }
        }
    }

    /// Takes the error event of `slot` out of its slot, freeing the slot. A
    /// pending merge needs `ledger`; without it nothing changes and `None`
    /// is returned.
    fn take_error(&mut self, slot: usize, ledger: Option<&Ledger>) -> Option<ErrorSummary> {
        match &mut self.slots {
            Slots::Merge(merge) => {
                let summary = match merge {
                    MergeSlot::Free => None,
                    MergeSlot::Pending { .. } => pending_summary(merge, ledger?),
                    MergeSlot::Frozen(summary) => Some(*summary),
                };
                *merge = MergeSlot::Free;
                summary
            }
            Slots::Distinct(slots) => slots.get_mut(slot).and_then(Option::take),
        }
    }

    fn record_lost(
        &mut self,
        stream: &mut Stream,
        index: usize,
        subtypes: Subtypes,
        time: SystemTime,
    ) -> Outcome {
        let lost = &mut self.lost;
        lost.tally.record(subtypes, time);
        if lost.queued {
            return Outcome::LostAgain;
        }
        stream.push_back(index, Queued::Lost);
        lost.queued = true;
        self.queued += 1;
        Outcome::LostFirst
    }
}

/// The summary a pending merge slot stands for.
fn pending_summary(slot: &MergeSlot, ledger: &Ledger) -> Option<ErrorSummary> {
    let MergeSlot::Pending {
        first,
        subtypes,
        first_time,
        opened,
    } = slot
    else {
        return None;
    };
    Some(ErrorSummary::pending(
        first,
        *subtypes,
        *first_time,
        *opened,
        ledger,
    ))
}

/// What happened to one error offered to one subscription.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Outcome {
    /// A fresh event was queued.
    Queued,
    /// Merged into an event already queued.
    Merged,
    /// Could not be queued; the LOST event was queued for it.
    LostFirst,
    /// Could not be queued; counted in the LOST event already queued.
    LostAgain,
    /// The subscription has ended; the error is not for it.
    Ignored,
}

impl Outcome {
    /// Whether a new entry became readable.
    pub(crate) fn queued_an_entry(self) -> bool {
        matches!(self, Outcome::Queued | Outcome::LostFirst)
    }
}

/// What the entry at the front needs before it can be read.
pub(crate) enum Front {
    Empty,
    Ready,
    /// A pending merge: the reader must hold this filesystem's lock to read
    /// its ledger.
    NeedsLedger(Arc<SourceCore>, Ticket),
}

/// An event taken off the queue, with what the caller must finish outside
/// the group's lock.
pub(crate) struct Popped {
    pub(crate) event: Event,
    /// The merge-mode member whose slot this read freed; the caller tells its
    /// filesystem (under that filesystem's lock, which it holds).
    pub(crate) freed_merge_slot: Option<Arc<Member>>,
    /// Storage of a subscription that ended and is now drained, to be dropped
    /// after the lock is released.
    pub(crate) retired: Option<Subscription>,
}

/// Where a new subscription goes and how much storage the group needs once
/// it is there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SubscriptionPlan {
    pub(crate) index: usize,
    ring_capacity: usize,
    ring_must_grow: bool,
    subscriptions_len: usize,
    subscriptions_must_grow: bool,
}

/// Storage allocated outside the lock for a [`SubscriptionPlan`]; once
/// installed, what the group no longer needs, to be freed outside the lock.
pub(crate) struct Storage {
    ring: Option<VecDeque<Entry>>,
    subscriptions: Option<Vec<Option<Subscription>>>,
    /// A drained subscription whose slot the new one took.
    replaced: Option<Subscription>,
}

impl Storage {
    /// Allocates what the plan says the group lacks, and nothing else.
    pub(crate) fn for_plan(plan: &SubscriptionPlan) -> Storage {
        Storage {
            ring: plan
                .ring_must_grow
                .then(|| VecDeque::with_capacity(plan.ring_capacity)),
            subscriptions: plan
                .subscriptions_must_grow
                .then(|| Vec::with_capacity(plan.subscriptions_len)),
            replaced: None,
        }
    }
}

/// A dropped group's storage, freed when this is dropped.
pub(crate) struct RetiredStorage {
    _ring: VecDeque<Entry>,
    _subscriptions: Vec<Option<Subscription>>,
}

/// A group's queue state.
#[derive(Debug)]
pub(crate) struct GroupState {
    stream: Stream,
    subscriptions: Vec<Option<Subscription>>,
    capacity: usize,
    queued_errors: usize,
    live_subscriptions: usize,
    ever_subscribed: bool,
    /// Readers sleeping on the group's condition variable; emitters skip the
    /// wake-up system call when there are none.
    pub(crate) waiting_readers: usize,
}

/// Announcements each subscription may have queued besides error events:
/// RUNNING, LOST and the terminal event.
const ANNOUNCEMENTS_PER_SUBSCRIPTION: usize = 3;

impl GroupState {
    pub(crate) fn new(capacity: usize) -> GroupState {
        GroupState {
            stream: Stream {
                ring: VecDeque::with_capacity(capacity),
                next_ticket: 0,
                next_id: 1,
            },
            subscriptions: Vec::new(),
            capacity,
            queued_errors: 0,
            live_subscriptions: 0,
            ever_subscribed: false,
            waiting_readers: 0,
        }
    }

    /// Picks the index of the next subscription: a free one, or one whose
    /// subscription is drained (its storage is then handed back by
    /// [`GroupState::install`]). The plan stays valid while the caller
    /// serialises subscriptions: in between, readers and terminations can
    /// only free or drain indices, never take them.
    pub(crate) fn plan_subscription(&self) -> SubscriptionPlan {
        let index = self
            .subscriptions
            .iter()
            .position(|slot| slot.as_ref().is_none_or(Subscription::is_drained))
            .unwrap_or(self.subscriptions.len());
        let subscriptions_len = self.subscriptions.len().max(index + 1);
        let ring_capacity = self.capacity + ANNOUNCEMENTS_PER_SUBSCRIPTION * subscriptions_len;
        SubscriptionPlan {
            index,
            ring_capacity,
            ring_must_grow: self.stream.ring.capacity() < ring_capacity,
            subscriptions_len,
            subscriptions_must_grow: self.subscriptions.capacity() < subscriptions_len,
        }
    }

    /// Installs a subscription planned by [`GroupState::plan_subscription`]
    /// and queues its RUNNING event. Storage the group no longer needs is
    /// returned for the caller to drop outside the lock.
    pub(crate) fn install(
        &mut self,
        plan: SubscriptionPlan,
        mut storage: Storage,
        mut subscription: Subscription,
        time: SystemTime,
    ) -> Storage {
        if self.stream.ring.capacity() < plan.ring_capacity {
            if let Some(mut ring) = storage.ring.take() {
                ring.extend(self.stream.ring.drain(..));
                storage.ring = Some(mem::replace(&mut self.stream.ring, ring));
            }
        }
        if self.subscriptions.capacity() < plan.subscriptions_len {
            if let Some(mut subscriptions) = storage.subscriptions.take() {
                subscriptions.append(&mut self.subscriptions);
                storage.subscriptions = Some(mem::replace(&mut self.subscriptions, subscriptions));
            }
        }
        if plan.index == self.subscriptions.len() {
            self.subscriptions.push(None);
        }
        self.stream.push_back(plan.index, Queued::Running(time));
        subscription.queued = 1;
        storage.replaced = self.subscriptions[plan.index].replace(subscription);
        debug_assert!(
            storage
                .replaced
                .as_ref()
                .is_none_or(Subscription::is_drained),
            "only a drained subscription's slot is reused"
        );
        self.live_subscriptions += 1;
        self.ever_subscribed = true;
        storage
    }

    fn live_subscription(&mut self, index: usize) -> Option<&mut Subscription> {
        self.subscriptions
            .get_mut(index)
            .and_then(Option::as_mut)
            .filter(|subscription| subscription.live)
    }

    /// The filesystem of subscription `index`, if it is still live.
    pub(crate) fn live_source(&mut self, index: usize) -> Option<Arc<SourceCore>> {
        self.live_subscription(index)
            .map(|subscription| Arc::clone(&subscription.source))
    }

    /// Number of subscription indices in use or retired.
    pub(crate) fn subscription_slots(&self) -> usize {
        self.subscriptions.len()
    }

    /// Merge mode, free slot: opens a pending event whose opening error is
    /// `first`, recorded in the ledger right after `opened`.
    pub(crate) fn open_merge(
        &mut self,
        index: usize,
        first: &ErrorDetail,
        subtypes: Subtypes,
        time: SystemTime,
        opened: Cursor,
    ) -> Outcome {
        let room = self.queued_errors < self.capacity;
        let Some(subscription) = self
            .subscriptions
            .get_mut(index)
            .and_then(Option::as_mut)
            .filter(|subscription| subscription.live)
        else {
            return Outcome::Ignored;
        };
        let Slots::Merge(slot @ MergeSlot::Free) = &mut subscription.slots else {
            // The filesystem believed the slot free; it is not. Count the
            // error as lost rather than overwrite an unread event.
            debug_assert!(false, "merge slot state disagrees with the filesystem");
            return subscription.record_lost(&mut self.stream, index, subtypes, time);
        };
        if !room {
            return subscription.record_lost(&mut self.stream, index, subtypes, time);
        }
        self.stream.push_back(index, Queued::Error { slot: 0 });
        *slot = MergeSlot::Pending {
            first: *first,
            subtypes,
            first_time: time,
            opened,
        };
        subscription.queued += 1;
        self.queued_errors += 1;
        Outcome::Queued
    }

    /// Distinct mode: merges into the queued event with the same object and
    /// subtypes, or queues a fresh one in a free slot, or counts it lost.
    /// `position` is where the error sits in the filesystem's ledger.
    pub(crate) fn merge_distinct(
        &mut self,
        index: usize,
        detail: &ErrorDetail,
        subtypes: Subtypes,
        time: SystemTime,
        position: Cursor,
    ) -> Outcome {
        let room = self.queued_errors < self.capacity;
        let Some(subscription) = self
            .subscriptions
            .get_mut(index)
            .and_then(Option::as_mut)
            .filter(|subscription| subscription.live)
        else {
            return Outcome::Ignored;
        };
        let Slots::Distinct(slots) = &mut subscription.slots else {
            return Outcome::Ignored;
        };
        let same_key = |summary: &ErrorSummary| {
            summary.subtypes == subtypes && summary.first.object == detail.object
        };
        if let Some(summary) = slots.iter_mut().flatten().find(|summary| same_key(summary)) {
            summary.add(detail, subtypes, time, position);
            return Outcome::Merged;
        }
        let free = slots.iter().position(Option::is_none);
        let (Some(slot), true) = (free, room) else {
            return subscription.record_lost(&mut self.stream, index, subtypes, time);
        };
        self.stream.push_back(index, Queued::Error { slot });
        slots[slot] = Some(ErrorSummary::single(detail, subtypes, time, position));
        subscription.queued += 1;
        self.queued_errors += 1;
        Outcome::Queued
    }

    /// Ends subscription `index` because its filesystem shut down or was
    /// unmounted, and puts its terminal event at the front of the queue.
    ///
    /// Every entry of that filesystem still queued — from this subscription
    /// or an earlier one of the group — is taken out of the ring and
    /// absorbed into the terminal event (see the module documentation), as
    /// is `closing`, the error the shutdown itself reports, if any. `ledger`
    /// is the filesystem's, with `closing` not yet recorded in it. Returns
    /// whether the subscription was still live.
    pub(crate) fn terminate(
        &mut self,
        index: usize,
        kind: EventKind,
        time: SystemTime,
        ledger: &Ledger,
        closing: Option<&ErrorSummary>,
    ) -> bool {
        let Some(subscription) = self.live_subscription(index) else {
            return false;
        };
        subscription.live = false;
        // "Same filesystem" is "same source". Comparing addresses is exact:
        // every subscription holding entries keeps its source alive, so no
        // other source can have been allocated at this address meanwhile.
        let source = Arc::as_ptr(&subscription.source);
        self.live_subscriptions -= 1;

        let mut terminal = Terminal {
            kind,
            announced: time,
            errors: None,
            lost: LostTally::NONE,
        };
        let GroupState {
            stream,
            subscriptions,
            queued_errors,
            ..
        } = self;
        // `retain` visits the entries front to back, once each; absorption
        // does not depend on that order (see `summary.rs`), only the
        // entries left behind do, and they keep it.
        stream.ring.retain(|entry| {
            let Some(owner) = subscriptions
                .get_mut(entry.subscription)
                .and_then(Option::as_mut)
                .filter(|owner| ptr::eq(Arc::as_ptr(&owner.source), source))
            else {
                return true;
            };
            match entry.what {
                Queued::Running(_) => {}
                Queued::Error { slot } => {
                    if let Some(errors) = owner.take_error(slot, Some(ledger)) {
                        ErrorSummary::absorb_into(&mut terminal.errors, &errors);
                    }
                    *queued_errors -= 1;
                }
                Queued::Lost => {
                    terminal.lost.absorb(&owner.lost.tally);
                    owner.lost.tally = LostTally::NONE;
                    owner.lost.queued = false;
                }
                Queued::Terminal => {
                    debug_assert!(false, "a filesystem terminates only once");
                    return true;
                }
            }
            owner.queued -= 1;
            false
        });
        if let Some(closing) = closing {
            ErrorSummary::absorb_into(&mut terminal.errors, closing);
        }
        if let Some(subscription) = subscriptions.get_mut(index).and_then(Option::as_mut) {
            debug_assert_eq!(subscription.queued, 0, "absorption took every entry");
            subscription.terminal = Some(terminal);
            subscription.queued += 1;
            stream.push_front(index, Queued::Terminal);
        }
        true
    }

    /// Ends subscription `index` at the listener's request: no terminal
    /// event; what is queued stays readable. Returns the subscription's
    /// storage if nothing of it is queued any more.
    pub(crate) fn unsubscribe(&mut self, index: usize, ledger: &Ledger) -> Option<Subscription> {
        let subscription = self.live_subscription(index)?;
        subscription.freeze(ledger);
        subscription.live = false;
        let drained = subscription.queued == 0;
        self.live_subscriptions -= 1;
        if drained {
            self.subscriptions[index].take()
        } else {
            None
        }
    }

    pub(crate) fn front(&self) -> Front {
        let Some(entry) = self.stream.ring.front() else {
            return Front::Empty;
        };
        let subscription = self
            .subscriptions
            .get(entry.subscription)
            .and_then(Option::as_ref);
        match (entry.what, subscription) {
            (Queued::Error { .. }, Some(subscription)) if subscription.has_pending_merge() => {
                Front::NeedsLedger(Arc::clone(&subscription.source), entry.ticket)
            }
            _ => Front::Ready,
        }
    }

    pub(crate) fn front_ticket(&self) -> Option<Ticket> {
        self.stream.ring.front().map(|entry| entry.ticket)
    }

    /// Takes the event at the front and gives it the next id. `ledger` must
    /// be the front's filesystem's ledger when [`GroupState::front`] said
    /// so; otherwise `None` is returned and nothing changes.
    pub(crate) fn pop(&mut self, ledger: Option<&Ledger>) -> Option<Popped> {
        loop {
            let entry = *self.stream.ring.front()?;
            let Some(subscription) = self
                .subscriptions
                .get_mut(entry.subscription)
                .and_then(Option::as_mut)
            else {
                // Unreachable by the storage invariant; dropping the handle
                // keeps the queue usable.
                debug_assert!(false, "queued entry without a subscription");
                self.stream.ring.pop_front();
                continue;
            };
            let is_error = matches!(entry.what, Queued::Error { .. });
            if is_error && subscription.has_pending_merge() && ledger.is_none() {
                return None;
            }
            let id = EventId(self.stream.next_id);
            let fsid = subscription.fsid;
            let mut freed_merge_slot = None;
            let event = match entry.what {
                Queued::Running(time) => {
                    Some(Event::announcement(id, EventKind::Running, fsid, time))
                }
                Queued::Terminal => subscription
                    .terminal
                    .take()
                    .map(|terminal| terminal.event(id, fsid)),
                Queued::Lost => {
                    let lost = &mut subscription.lost;
                    let event = Event {
                        id,
                        kind: EventKind::Lost,
                        fsid,
                        count: lost.tally.count,
                        subtypes: lost.tally.subtypes,
                        first: None,
                        last: None,
                        lost: 0,
                        first_time: lost.tally.first_time,
                        last_time: lost.tally.last_time,
                    };
                    // The next loss starts a new LOST event from scratch.
                    lost.queued = false;
                    lost.tally = LostTally::NONE;
                    Some(event)
                }
                Queued::Error { slot } => {
                    if subscription.has_pending_merge() {
                        freed_merge_slot = Some(Arc::clone(&subscription.member));
                    }
                    subscription
                        .take_error(slot, ledger)
                        .map(|summary| summary.error_event(id, fsid))
                }
            };
            self.stream.ring.pop_front();
            subscription.queued -= 1;
            if is_error {
                self.queued_errors -= 1;
            }
            let retired = if subscription.is_drained() {
                self.subscriptions[entry.subscription].take()
            } else {
                None
            };
            match event {
                Some(event) => {
                    self.stream.next_id += 1;
                    return Some(Popped {
                        event,
                        freed_merge_slot,
                        retired,
                    });
                }
                None => {
                    debug_assert!(false, "queued entry without an event");
                    continue;
                }
            }
        }
    }

    /// Whether every subscription has ended and everything was read: a read
    /// can never return an event again (until a new subscription).
    pub(crate) fn is_closed(&self) -> bool {
        self.ever_subscribed && self.live_subscriptions == 0 && self.stream.ring.is_empty()
    }

    /// Number of events ready to read.
    pub(crate) fn len(&self) -> usize {
        self.stream.ring.len()
    }

    /// Empties the group (it is being dropped), handing the storage out so
    /// it is freed after the lock is released.
    pub(crate) fn take_storage(&mut self) -> RetiredStorage {
        self.live_subscriptions = 0;
        self.queued_errors = 0;
        RetiredStorage {
            _ring: mem::take(&mut self.stream.ring),
            _subscriptions: mem::take(&mut self.subscriptions),
        }
    }
}
