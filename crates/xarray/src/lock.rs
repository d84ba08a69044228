//! Entry locks: at most one holder per entry, waiters sleep until it lets
//! go, and the holder alone may replace or erase the entry meanwhile.
//!
//! The lock is one bit per entry, kept in the entry's node and taken by an
//! atomic fetch-or under the *shared* tree lock, so lockers do not
//! serialise on the tree. A large entry has one bit, at its head slot, so
//! locking any index inside it locks all of it.
//!
//! Waiting uses a small table of wait queues (mutex + condvar) hashed by the
//! entry's first index. No wake-up can be missed because of two rules:
//! * Waiter and waker both key the queue by the first index of the entry as
//!   the tree reports it, never by the index the caller passed in (the
//!   kernel once woke the queue of an unaligned index while the waiter slept
//!   on the aligned one).
//! * A waiter takes the queue mutex and only then re-checks the bit, while
//!   still holding the tree lock; a waker clears the bit and only then
//!   takes the queue mutex to notify. So either the waiter sees the bit
//!   clear, or the waker's notify comes after the waiter is asleep.
//!
//! A guard that is dropped releases the lock and wakes its queue; a guard
//! over a reservation that was never filled removes the reservation, so an
//! abandoned fill leaves no trace.

use std::ops::Deref;
use std::sync::PoisonError;

use crate::sync::{Condvar, Mutex};
use crate::tree::Tree;
use crate::{Error, Mark, Span, XArray};

#[cfg(not(loom))]
const QUEUE_BITS: u32 = 4;
// Fewer queues keep loom's state space small; sharing a queue only costs
// spurious wake-ups, which the retry loops absorb.
#[cfg(loom)]
const QUEUE_BITS: u32 = 1;

pub(crate) struct WaitQueues {
    queues: Box<[WaitQueue]>,
}

struct WaitQueue {
    gate: Mutex<()>,
    unlocked: Condvar,
}

impl WaitQueues {
    pub(crate) fn new() -> Self {
        Self {
            queues: (0..1usize << QUEUE_BITS)
                .map(|_| WaitQueue {
                    gate: Mutex::new(()),
                    unlocked: Condvar::new(),
                })
                .collect(),
        }
    }

    fn queue_for(&self, span: Span) -> &WaitQueue {
        // Large entries start at multiples of big powers of two; the
        // multiply spreads those low zero bits into the bits taken.
        let hash = span.index().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - QUEUE_BITS);
        &self.queues[hash as usize]
    }

    /// Sleeps until the holder of the entry at `span` may have unlocked it,
    /// releasing `tree` (a guard of either tree lock) on the way. Returns at
    /// once if the entry is no longer locked. The caller retries either way:
    /// wake-ups can be spurious or meant for another entry on this queue.
    fn park<T, G: Deref<Target = Tree<T>>>(&self, span: Span, tree: G) {
        let queue = self.queue_for(span);
        let gate = queue.gate.lock().unwrap_or_else(PoisonError::into_inner);
        if !tree.holds_lock(span) {
            return;
        }
        drop(tree);
        // A poisoned gate guards no data; waking is all that matters.
        let _woken = queue
            .unlocked
            .wait(gate)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Wakes everyone waiting for the entry at `span`. Call only after its
    /// lock bit is clear or the entry is gone.
    fn wake(&self, span: Span) {
        let queue = self.queue_for(span);
        let _gate = queue.gate.lock().unwrap_or_else(PoisonError::into_inner);
        queue.unlocked.notify_all();
    }
}

/// What an [`EntryGuard`] holds the lock of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// A reservation made by [`XArray::lock_or_reserve`], not yet filled.
    Reservation,
    /// An entry with a value.
    Value,
    /// Nothing any more: the holder erased the entry.
    Erased,
}

/// The lock on one entry (the whole entry, even when it covers many
/// indices). While it is alive nobody else can lock, replace or erase the
/// entry; dropping it unlocks and wakes waiters.
#[must_use = "dropping the guard unlocks the entry at once"]
pub struct EntryGuard<'a, T> {
    xa: &'a XArray<T>,
    span: Span,
    held: Held,
}

impl<T> std::fmt::Debug for EntryGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryGuard")
            .field("span", &self.span)
            .field("held", &self.held)
            .finish()
    }
}

impl<T> EntryGuard<'_, T> {
    /// The indices the locked entry covers.
    pub fn span(&self) -> Span {
        self.span
    }

    /// Whether this is a reservation that has not been filled yet.
    pub fn is_reserved(&self) -> bool {
        self.held == Held::Reservation
    }

    /// A copy of the entry's value (`None` for an unfilled reservation).
    pub fn value(&self) -> Option<T>
    where
        T: Clone,
    {
        let tree = self.xa.read_tree();
        tree.lookup(self.span.index())?.value().cloned()
    }

    /// Puts `value` in the entry, filling a reservation or replacing the
    /// old value (marks are kept). Returns the old value.
    pub fn replace(&mut self, value: T) -> Option<T> {
        let old = self.xa.write_tree().replace_locked(self.span, value);
        self.held = Held::Value;
        old
    }

    /// Erases the entry and releases the lock; returns the value, if the
    /// entry had one. Waiters wake to find the indices empty.
    pub fn erase(mut self) -> Option<T> {
        let erased = self.xa.write_tree().erase(self.span.index(), true);
        self.held = Held::Erased;
        match erased {
            Ok(Some((span, value))) => {
                debug_assert_eq!(span, self.span);
                value
            }
            Ok(None) | Err(_) => {
                panic!("xarray: the entry at {} vanished while locked", self.span)
            }
        }
    }

    /// Sets `mark` on the entry; `false` for an unfilled reservation, which
    /// cannot carry marks.
    pub fn set_mark(&self, mark: Mark) -> bool {
        self.xa.set_mark(self.span.index(), mark)
    }

    /// Clears `mark`; `false` for an unfilled reservation.
    pub fn clear_mark(&self, mark: Mark) -> bool {
        self.xa.clear_mark(self.span.index(), mark)
    }

    /// Whether the entry carries `mark`.
    pub fn is_marked(&self, mark: Mark) -> bool {
        self.xa.is_marked(self.span.index(), mark)
    }

    /// Unlocks (the same as dropping the guard, spelled out).
    pub fn unlock(self) {}
}

impl<T> Drop for EntryGuard<'_, T> {
    fn drop(&mut self) {
        // Poison is tolerated here: failing to unlock would hang every
        // waiter, which is worse than working on after a panic elsewhere.
        match self.held {
            Held::Value => {
                let tree = self.xa.tree.read().unwrap_or_else(PoisonError::into_inner);
                if let Some(found) = tree.lookup(self.span.index()) {
                    debug_assert_eq!(found.span, self.span);
                    found.unlock();
                }
            }
            Held::Reservation => {
                let mut tree = self.xa.tree.write().unwrap_or_else(PoisonError::into_inner);
                let abandoned = tree.erase(self.span.index(), true);
                debug_assert!(matches!(abandoned, Ok(Some((_, None)))));
            }
            Held::Erased => {}
        }
        self.xa.waiters.wake(self.span);
    }
}

impl<T> XArray<T> {
    /// Locks the entry covering `index`, waiting while another guard holds
    /// it. `None` when no entry covers `index` (also when the entry was
    /// erased while this call waited).
    ///
    /// A reservation being filled is waited for like any locked entry: this
    /// returns its filled value's lock, or `None` if the filler gave up.
    ///
    /// Like a mutex, the lock is not re-entrant: locking an entry whose
    /// guard this thread already holds waits forever. A thread taking
    /// several entry locks should take them in ascending index order.
    pub fn lock(&self, index: u64) -> Option<EntryGuard<'_, T>> {
        loop {
            let tree = self.read_tree();
            let found = tree.lookup(index)?;
            if found.try_lock() {
                return Some(self.guard(found.span, found.value().is_some()));
            }
            let span = found.span;
            self.waiters.park(span, tree);
        }
    }

    /// Locks the entry covering `index` if nobody holds it: `Ok(None)` when
    /// no entry covers `index`, `Err(Error::Locked)` when it is held.
    pub fn try_lock(&self, index: u64) -> Result<Option<EntryGuard<'_, T>>, Error> {
        let tree = self.read_tree();
        let Some(found) = tree.lookup(index) else {
            return Ok(None);
        };
        if found.try_lock() {
            Ok(Some(self.guard(found.span, found.value().is_some())))
        } else {
            Err(Error::Locked {
                existing: found.span,
            })
        }
    }

    /// Locks the entry covering `index` if it is at least of `order`, or,
    /// when the aligned span of `order` around `index` is entirely empty,
    /// inserts a locked reservation there (see [`EntryGuard::is_reserved`]).
    ///
    /// This is how the page cache serialises filling: the first reader
    /// reserves and reads from disk, later readers wait here and wake to the
    /// filled entry. Fails with `Conflict` when an entry smaller than
    /// `order` covers `index`, or when the span is partly occupied (a
    /// large fault finding a small page anywhere in its range, never
    /// erasing it), and with `OrderTooLarge` above [`MAX_ORDER`](crate::MAX_ORDER).
    pub fn lock_or_reserve(&self, index: u64, order: u8) -> Result<EntryGuard<'_, T>, Error> {
        let wanted = Span::containing(index, order)?;
        loop {
            let tree = self.read_tree();
            if let Some(found) = tree.lookup(index) {
                let span = found.span;
                if span.order() < order {
                    return Err(Error::Conflict {
                        requested: wanted,
                        existing: span,
                    });
                }
                if found.try_lock() {
                    return Ok(self.guard(span, found.value().is_some()));
                }
                self.waiters.park(span, tree);
                continue;
            }
            drop(tree);
            let mut tree = self.write_tree();
            if tree.lookup(index).is_some() {
                // Someone stored or reserved it between the two locks; go
                // back and lock (or wait for) what they put there.
                continue;
            }
            tree.reserve(wanted)?;
            return Ok(self.guard(wanted, false));
        }
    }

    fn guard(&self, span: Span, filled: bool) -> EntryGuard<'_, T> {
        EntryGuard {
            xa: self,
            span,
            held: if filled {
                Held::Value
            } else {
                Held::Reservation
            },
        }
    }
}

impl<T> Tree<T> {
    /// Whether the entry exactly at `span` exists and is locked.
    pub(crate) fn holds_lock(&self, span: Span) -> bool {
        self.lookup(span.index())
            .is_some_and(|found| found.span == span && found.is_locked())
    }
}
