//! The filesystem side: an [`ErrorSource`] emits errors to every listener
//! group subscribed to it, and announces shutdown and unmount.
//!
//! Locks, in the only order they are ever taken:
//! `group.subscriptions` → `source.membership` → `source.state` →
//! `group.state`. Emitters take only the last two.
//!
//! - `membership` serialises changes to the list of subscribed groups and
//!   keeps the authoritative copy; new lists are built (allocated) under it,
//!   never under `state`.
//! - `state` holds the [`Ledger`], the published list of members, and the
//!   count of merge-mode members whose error slot is free.
//!
//! The emit fast path — every merge-mode listener already has an unread
//! error event, no distinct-mode listener — is one lock of `state`, one
//! ledger update, and no per-group work (see `ledger.rs` for why that is
//! exact). Otherwise the emitter walks the members and takes each group's
//! lock that needs work. Invariant: `free_merge_slots` equals the number of
//! merge-mode members whose `merge_slot_free` flag is set; both change only
//! under `state`, which is why relaxed atomics suffice for the flag.

use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::group::GroupShared;
use crate::ledger::{Cursor, Ledger};
use crate::summary::ErrorSummary;
use crate::sync::lock;
use crate::{Errno, ErrorDetail, ErrorReport, EventKind, Fsid, Mode, Subtypes};

/// The emitting side of one filesystem.
///
/// Dropping it unmounts: subscribed groups receive an UNMOUNT event.
#[derive(Debug)]
pub struct ErrorSource {
    core: Arc<SourceCore>,
}

/// Counters describing a source.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SourceStats {
    /// Errors emitted before shutdown/unmount, including the `ESHUTDOWN`
    /// error [`ErrorSource::shutdown`] reports.
    pub reported: u64,
    /// Errors emitted after shutdown/unmount, which reach no listener.
    pub dropped_after_close: u64,
    /// Groups currently subscribed.
    pub listeners: usize,
}

/// A group's membership in one source's list.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) group: Arc<GroupShared>,
    /// The subscription's index inside the group.
    pub(crate) subscription: usize,
    merge_slot_free: AtomicBool,
}

impl Member {
    pub(crate) fn new(group: Arc<GroupShared>, subscription: usize) -> Arc<Member> {
        Arc::new(Member {
            group,
            subscription,
            merge_slot_free: AtomicBool::new(true),
        })
    }
}

#[derive(Debug)]
struct Membership {
    members: Vec<Arc<Member>>,
    terminated: bool,
}

/// What emitters and readers of pending merges lock.
#[derive(Debug)]
pub(crate) struct SourceState {
    pub(crate) ledger: Ledger,
    members: Vec<Arc<Member>>,
    free_merge_slots: usize,
    distinct_members: usize,
    terminated: bool,
    dropped_after_close: u64,
}

impl SourceState {
    /// A reader consumed `member`'s pending merge event: its slot is free
    /// and the next error must open a fresh event for it.
    pub(crate) fn merge_slot_freed(&mut self, member: &Member) {
        if !member.merge_slot_free.swap(true, Ordering::Relaxed) {
            self.free_merge_slots += 1;
        }
    }

    /// Hands one error to every member that cannot get it through the
    /// ledger alone.
    fn deliver_to_members(
        &mut self,
        detail: &ErrorDetail,
        subtypes: Subtypes,
        time: SystemTime,
        opened: Cursor,
    ) {
        let mut slots_taken = 0;
        for member in &self.members {
            match member.group.mode() {
                Mode::Merge => {
                    if member.merge_slot_free.load(Ordering::Relaxed)
                        && member.group.open_merge(
                            member.subscription,
                            detail,
                            subtypes,
                            time,
                            opened,
                        )
                    {
                        member.merge_slot_free.store(false, Ordering::Relaxed);
                        slots_taken += 1;
                    }
                }
                Mode::Distinct(_) => {
                    member.group.merge_distinct(
                        member.subscription,
                        detail,
                        subtypes,
                        time,
                        opened,
                    );
                }
            }
        }
        self.free_merge_slots -= slots_taken;
    }
}

/// The shared part of a source, also held by the groups subscribed to it.
#[derive(Debug)]
pub(crate) struct SourceCore {
    fsid: Fsid,
    membership: Mutex<Membership>,
    state: Mutex<SourceState>,
}

impl SourceCore {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, SourceState> {
        lock(&self.state)
    }

    /// Subscribes `group`. The caller holds the group's subscription lock.
    pub(crate) fn attach(
        self: &Arc<SourceCore>,
        group: &Arc<GroupShared>,
    ) -> Result<(), SubscribeError> {
        let mut membership = lock(&self.membership);
        if membership.terminated {
            return Err(SubscribeError::SourceClosed);
        }
        if membership
            .members
            .iter()
            .any(|member| Arc::ptr_eq(&member.group, group))
        {
            return Err(SubscribeError::AlreadySubscribed);
        }
        let member = group.install(self, self.fsid);
        let mut members = membership.members.clone();
        members.push(Arc::clone(&member));
        let published = members.clone();
        membership.members = members;

        let mut state = lock(&self.state);
        match group.mode() {
            Mode::Merge => state.free_merge_slots += 1,
            Mode::Distinct(_) => state.distinct_members += 1,
        }
        let retired = mem::replace(&mut state.members, published);
        drop(state);
        drop(retired);
        Ok(())
    }

    /// Unsubscribes `group`; returns whether it was subscribed. The caller
    /// holds the group's subscription lock.
    pub(crate) fn detach(&self, group: &Arc<GroupShared>) -> bool {
        let mut membership = lock(&self.membership);
        let Some(position) = membership
            .members
            .iter()
            .position(|member| Arc::ptr_eq(&member.group, group))
        else {
            return false;
        };
        let mut members = membership.members.clone();
        let member = members.remove(position);
        let published = members.clone();
        membership.members = members;

        let mut state = lock(&self.state);
        let retired_subscription = group.end_subscription(member.subscription, &state.ledger);
        match group.mode() {
            Mode::Merge => {
                if member.merge_slot_free.load(Ordering::Relaxed) {
                    state.free_merge_slots -= 1;
                }
            }
            Mode::Distinct(_) => state.distinct_members -= 1,
        }
        let retired_members = mem::replace(&mut state.members, published);
        drop(state);
        drop(membership);
        drop(retired_members);
        drop(retired_subscription);
        true
    }

    /// Puts the terminal event `kind` at the head of every subscribed
    /// group's queue and stops delivering. A shutdown also reports its own
    /// `ESHUTDOWN` error: it goes straight into the terminal events (which
    /// always have room) and into the ledger, never through a queue slot.
    /// Returns whether this call was the one that terminated.
    fn terminate(&self, kind: EventKind) -> bool {
        let mut membership = lock(&self.membership);
        if membership.terminated {
            return false;
        }
        membership.terminated = true;
        let members = mem::take(&mut membership.members);
        let time = SystemTime::now();

        let mut state = lock(&self.state);
        state.terminated = true;
        let closing = (kind == EventKind::Shutdown).then(|| {
            let report = ErrorReport::new(Errno::ESHUTDOWN, Subtypes::SHUTDOWN);
            let detail = report.detail(self.fsid);
            let position = state.ledger.cursor();
            ErrorSummary::single(&detail, report.subtypes(), time, position)
        });
        // The groups absorb pending merges against the ledger as it stands
        // before the closing error, which they add themselves; recording it
        // first would count it twice in a pending merge.
        for member in &members {
            member.group.terminate(
                member.subscription,
                kind,
                time,
                &state.ledger,
                closing.as_ref(),
            );
        }
        if let Some(closing) = &closing {
            state
                .ledger
                .record(&closing.first, closing.subtypes, closing.first_time);
        }
        let published = mem::take(&mut state.members);
        state.free_merge_slots = 0;
        state.distinct_members = 0;
        drop(state);
        drop(membership);
        drop(published);
        drop(members);
        true
    }
}

/// Why a subscription was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SubscribeError {
    /// The group is already subscribed to this filesystem.
    AlreadySubscribed,
    /// The filesystem has already been shut down or unmounted.
    SourceClosed,
}

impl std::fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SubscribeError::AlreadySubscribed => "group already subscribed to this filesystem",
            SubscribeError::SourceClosed => "filesystem already shut down or unmounted",
        })
    }
}

impl std::error::Error for SubscribeError {}

impl ErrorSource {
    /// A source for the filesystem `fsid`, with no listener yet.
    pub fn new(fsid: Fsid) -> ErrorSource {
        ErrorSource {
            core: Arc::new(SourceCore {
                fsid,
                membership: Mutex::new(Membership {
                    members: Vec::new(),
                    terminated: false,
                }),
                state: Mutex::new(SourceState {
                    ledger: Ledger::new(),
                    members: Vec::new(),
                    free_merge_slots: 0,
                    distinct_members: 0,
                    terminated: false,
                    dropped_after_close: 0,
                }),
            }),
        }
    }

    /// The filesystem's id.
    pub fn fsid(&self) -> Fsid {
        self.core.fsid
    }

    pub(crate) fn core(&self) -> &Arc<SourceCore> {
        &self.core
    }

    /// Reports one error to every subscribed group.
    ///
    /// Never allocates and never waits for a reader to read; it may briefly
    /// wait for another thread's short critical section on this source's
    /// lock or a group's (see the crate documentation). After shutdown or
    /// unmount the error is only counted in
    /// [`SourceStats::dropped_after_close`].
    pub fn emit(&self, report: &ErrorReport) {
        let time = SystemTime::now();
        let detail = report.detail(self.core.fsid);
        let mut state = lock(&self.core.state);
        if state.terminated {
            state.dropped_after_close += 1;
            return;
        }
        let opened = state.ledger.record(&detail, report.subtypes(), time);
        if state.free_merge_slots == 0 && state.distinct_members == 0 {
            return;
        }
        state.deliver_to_members(&detail, report.subtypes(), time, opened);
    }

    /// Shuts the filesystem down: reports an `ESHUTDOWN` error about the
    /// whole filesystem (subtype SHUTDOWN) and puts a SHUTDOWN event at the
    /// head of every subscribed group's queue. The SHUTDOWN event carries
    /// that error and every error of this filesystem the group had not read
    /// yet (see [`EventKind::Shutdown`]); nothing from this filesystem is
    /// delivered after it. Does nothing if the filesystem was already shut
    /// down or unmounted.
    ///
    /// Never allocates, like [`ErrorSource::emit`].
    pub fn shutdown(&self) {
        self.core.terminate(EventKind::Shutdown);
    }

    /// Puts an UNMOUNT event at the head of every subscribed group's queue,
    /// carrying the errors of this filesystem the group had not read yet;
    /// nothing from this filesystem is delivered after it. Does nothing if
    /// already shut down or unmounted.
    ///
    /// Never allocates, like [`ErrorSource::emit`].
    pub fn unmount(&self) {
        self.core.terminate(EventKind::Unmount);
    }

    /// Whether shutdown or unmount has happened.
    pub fn is_terminated(&self) -> bool {
        lock(&self.core.membership).terminated
    }

    /// Current counters.
    pub fn stats(&self) -> SourceStats {
        let state = lock(&self.core.state);
        SourceStats {
            reported: state.ledger.reported(),
            dropped_after_close: state.dropped_after_close,
            listeners: state.members.len(),
        }
    }
}

impl Drop for ErrorSource {
    fn drop(&mut self) {
        self.core.terminate(EventKind::Unmount);
    }
}
