//! The journal's reservation state: one packed atomic word.
//!
//! Taking a journal reservation must cost one compare-and-swap, because every
//! metadata update takes one. The word holds everything the fast path needs:
//!
//! ```text
//!  63      54 53      44 43      34 33      24 23 22 21                 0
//! +----------+----------+----------+----------+-----+--------------------+
//! | refs[3]  | refs[2]  | refs[1]  | refs[0]  | idx |   entry offset     |
//! +----------+----------+----------+----------+-----+--------------------+
//! ```
//!
//! * `entry offset`: bytes already reserved in the open entry, or one of the
//!   sentinels [`OFFSET_BLOCKED`], [`OFFSET_CLOSED`], [`OFFSET_ERROR`]. The
//!   sentinels are larger than any entry may be, so the fast path's "does my
//!   reservation fit?" test fails by itself when no entry is open: there is
//!   no separate flag to read and no window between reading it and the CAS.
//! * `idx`: which of the four buffers holds the open (or last) entry.
//! * `refs[i]`: references on buffer `i`. Each reservation holds one, and an
//!   open entry holds one on its own buffer until it closes. A buffer is
//!   written when its count drops to zero, which can only happen once its
//!   entry is closed and every reservation on it has been released.
//!
//! The entry's size limit lives outside the word (it does not fit). The
//! slow path stores a new limit only after closing the previous entry and
//! before opening the next one; the fast path loads the word first and the
//! limit second. A reserver that pairs an open-entry word with a newer
//! entry's limit therefore holds a stale word, and its CAS fails.

use std::sync::atomic::Ordering;

use crate::sync::{AtomicU32, AtomicU64};

const OFFSET_BITS: u32 = 22;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
const INDEX_SHIFT: u32 = OFFSET_BITS;
const INDEX_MASK: u64 = 0b11;
const REFS_SHIFT: u32 = OFFSET_BITS + 2;
const REFS_BITS: u32 = 10;
const REFS_MASK: u64 = (1 << REFS_BITS) - 1;

/// How many buffers the journal rotates through.
pub(crate) const BUFFER_COUNT: usize = 4;
/// Most references one buffer can carry; reservers beyond it wait.
pub(crate) const MAX_BUFFER_REFS: u64 = REFS_MASK;

/// The journal is frozen: reservations wait for `unblock`.
pub(crate) const OFFSET_BLOCKED: u32 = (OFFSET_MASK - 2) as u32;
/// No entry is open; the slow path opens one.
pub(crate) const OFFSET_CLOSED: u32 = (OFFSET_MASK - 1) as u32;
/// The journal failed; nothing may be reserved again.
pub(crate) const OFFSET_ERROR: u32 = OFFSET_MASK as u32;
/// Every real entry size is below this, so sentinels never fit.
pub(crate) const MAX_ENTRY_BYTES: u32 = OFFSET_BLOCKED - 1;

/// A decoded copy of the word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot(u64);

impl Snapshot {
    pub(crate) fn offset(self) -> u32 {
        (self.0 & OFFSET_MASK) as u32
    }

    pub(crate) fn index(self) -> usize {
        ((self.0 >> INDEX_SHIFT) & INDEX_MASK) as usize
    }

    pub(crate) fn refs(self, index: usize) -> u64 {
        (self.0 >> (REFS_SHIFT + REFS_BITS * index as u32)) & REFS_MASK
    }

    pub(crate) fn is_open(self) -> bool {
        self.offset() < OFFSET_BLOCKED
    }

    fn with_offset(self, offset: u32) -> Snapshot {
        Snapshot((self.0 & !OFFSET_MASK) | u64::from(offset))
    }

    fn with_index(self, index: usize) -> Snapshot {
        Snapshot((self.0 & !(INDEX_MASK << INDEX_SHIFT)) | ((index as u64) << INDEX_SHIFT))
    }

    fn ref_unit(index: usize) -> u64 {
        1 << (REFS_SHIFT + REFS_BITS * index as u32)
    }
}

/// Where a reservation landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reserved {
    pub(crate) index: usize,
    pub(crate) offset: u32,
}

/// What closing the open entry found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Closed {
    pub(crate) index: usize,
    /// Bytes reserved in the entry: its payload size.
    pub(crate) bytes: u32,
    /// No reservation is outstanding: the closer must write the buffer.
    pub(crate) unreferenced: bool,
}

/// The atomic word plus the open entry's size limit.
pub(crate) struct ReservationState {
    word: AtomicU64,
    entry_limit: AtomicU32,
}

impl ReservationState {
    /// Starts closed on buffer 0 with no references.
    pub(crate) fn new() -> ReservationState {
        ReservationState {
            word: AtomicU64::new(u64::from(OFFSET_CLOSED)),
            entry_limit: AtomicU32::new(0),
        }
    }

    /// The open entry's payload limit (meaningless while closed).
    pub(crate) fn limit(&self) -> u32 {
        self.entry_limit.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.word.load(Ordering::Acquire))
    }

    /// The fast path: reserve `bytes` in the open entry with one CAS, or
    /// return `None` so the caller takes the slow path.
    pub(crate) fn try_reserve(&self, bytes: u32) -> Option<Reserved> {
        let mut current = self.snapshot();
        loop {
            // Loaded after the word: see the module comment.
            let limit = self.entry_limit.load(Ordering::Acquire);
            let offset = current.offset();
            let index = current.index();
            let end = offset.checked_add(bytes)?;
            if end > limit || current.refs(index) >= MAX_BUFFER_REFS {
                return None;
            }
            let next = Snapshot(current.0 + Snapshot::ref_unit(index)).with_offset(end);
            match self.word.compare_exchange_weak(
                current.0,
                next.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Reserved { index, offset }),
                Err(actual) => current = Snapshot(actual),
            }
        }
    }

    /// Drops one reference on buffer `index`. Returns true if it was the
    /// last: the entry is closed and nobody writes into it any more.
    pub(crate) fn put(&self, index: usize) -> bool {
        let unit = Snapshot::ref_unit(index);
        let previous = Snapshot(self.word.fetch_sub(unit, Ordering::AcqRel));
        debug_assert!(
            previous.refs(index) > 0,
            "buffer {index} reference underflow"
        );
        previous.refs(index) == 1
    }

    /// Closes the open entry, replacing its offset with `sentinel`
    /// (CLOSED, BLOCKED or ERROR) and dropping the entry's own buffer
    /// reference in the same CAS. Returns `None` if no entry was open (the
    /// sentinel is still installed, except that ERROR is never replaced).
    pub(crate) fn close(&self, sentinel: u32) -> Option<Closed> {
        debug_assert!(sentinel >= OFFSET_BLOCKED);
        let mut current = self.snapshot();
        loop {
            if current.offset() == OFFSET_ERROR {
                return None;
            }
            let was_open = current.is_open();
            let index = current.index();
            let mut next = current.with_offset(sentinel);
            if was_open {
                next = Snapshot(next.0 - Snapshot::ref_unit(index));
            }
            match self.word.compare_exchange_weak(
                current.0,
                next.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) if was_open => {
                    return Some(Closed {
                        index,
                        bytes: current.offset(),
                        unreferenced: next.refs(index) == 0,
                    })
                }
                Ok(_) => return None,
                Err(actual) => current = Snapshot(actual),
            }
        }
    }

    /// Opens a new entry in buffer `index` with room for `limit` bytes. The
    /// caller (the slow path, under its lock) guarantees the journal is
    /// CLOSED and that buffer `index` is free with no references.
    pub(crate) fn open(&self, index: usize, limit: u32) {
        debug_assert!(limit <= MAX_ENTRY_BYTES);
        // The new limit must be visible before any reserver can see the
        // entry open; the old entry is already closed, so no reserver can
        // pair this limit with the old entry and succeed.
        self.entry_limit.store(limit, Ordering::Release);
        let mut current = self.snapshot();
        loop {
            debug_assert_eq!(current.offset(), OFFSET_CLOSED);
            debug_assert_eq!(current.refs(index), 0);
            let next = Snapshot(current.0 + Snapshot::ref_unit(index))
                .with_index(index)
                .with_offset(0);
            match self.word.compare_exchange_weak(
                current.0,
                next.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = Snapshot(actual),
            }
        }
    }

    /// Moves a BLOCKED journal back to CLOSED (thaw). ERROR stays.
    pub(crate) fn unblock(&self) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let current = Snapshot(word);
                (current.offset() == OFFSET_BLOCKED).then(|| current.with_offset(OFFSET_CLOSED).0)
            });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn opened(limit: u32) -> ReservationState {
        let state = ReservationState::new();
        state.open(0, limit);
        state
    }

    #[test]
    fn closed_journal_refuses_the_fast_path() {
        let state = ReservationState::new();
        assert_eq!(state.try_reserve(8), None);
    }

    #[test]
    fn reservations_advance_the_offset_and_count_references() {
        let state = opened(64);
        assert_eq!(
            state.try_reserve(16),
            Some(Reserved {
                index: 0,
                offset: 0
            })
        );
        assert_eq!(
            state.try_reserve(16),
            Some(Reserved {
                index: 0,
                offset: 16
            })
        );
        let snapshot = state.snapshot();
        assert_eq!(snapshot.offset(), 32);
        // Two reservations plus the open entry's own reference.
        assert_eq!(snapshot.refs(0), 3);
    }

    #[test]
    fn reservation_that_does_not_fit_goes_to_slow_path() {
        let state = opened(64);
        assert!(state.try_reserve(48).is_some());
        assert_eq!(state.try_reserve(24), None);
        assert!(state.try_reserve(16).is_some());
    }

    #[test]
    fn buffer_is_unreferenced_only_after_close_and_last_put() {
        let state = opened(64);
        let first = state.try_reserve(8).unwrap();
        let second = state.try_reserve(8).unwrap();
        assert!(!state.put(first.index));
        let closed = state.close(OFFSET_CLOSED).unwrap();
        assert_eq!(
            closed,
            Closed {
                index: 0,
                bytes: 16,
                unreferenced: false
            }
        );
        assert!(state.put(second.index));
    }

    #[test]
    fn closing_an_idle_entry_leaves_it_unreferenced() {
        let state = opened(64);
        let closed = state.close(OFFSET_CLOSED).unwrap();
        assert!(closed.unreferenced);
        assert_eq!(closed.bytes, 0);
    }

    #[test]
    fn error_sentinel_is_permanent() {
        let state = opened(64);
        assert!(state.close(OFFSET_ERROR).is_some());
        assert_eq!(state.close(OFFSET_CLOSED), None);
        state.unblock();
        assert_eq!(state.snapshot().offset(), OFFSET_ERROR);
        assert_eq!(state.try_reserve(1), None);
    }

    #[test]
    fn blocked_journal_refuses_reservations_until_unblocked() {
        let state = opened(64);
        state.close(OFFSET_BLOCKED);
        assert_eq!(state.try_reserve(1), None);
        state.unblock();
        assert_eq!(state.snapshot().offset(), OFFSET_CLOSED);
        state.open(1, 64);
        assert_eq!(
            state.try_reserve(8),
            Some(Reserved {
                index: 1,
                offset: 0
            })
        );
    }

    #[test]
    fn reference_count_saturation_sends_reservers_to_slow_path() {
        let state = opened(MAX_ENTRY_BYTES);
        for _ in 0..MAX_BUFFER_REFS - 1 {
            assert!(state.try_reserve(0).is_some());
        }
        assert_eq!(state.snapshot().refs(0), MAX_BUFFER_REFS);
        assert_eq!(state.try_reserve(0), None);
        // Neighbouring counters are untouched.
        assert_eq!(state.snapshot().refs(1), 0);
    }
}

/// Model-checked: run with `RUSTFLAGS="--cfg loom" cargo test -p vigilfs
/// --lib --release --target-dir target/loom journal::state::loom_checks`.
#[cfg(all(test, loom))]
mod loom_checks {
    use super::*;
    use ::loom::sync::atomic::{AtomicBool, AtomicUsize};
    use ::loom::sync::Arc;
    use ::loom::thread;

    /// Two reservers and a closer race. Whatever the interleaving: the
    /// reservations that succeeded got disjoint ranges inside the limit, and
    /// the buffer's last reference is dropped exactly once, after the close
    /// and after every reservation was released (so it is written once, and
    /// never while someone may still copy into it).
    #[test]
    fn buffer_is_released_exactly_once_after_close_and_all_puts() {
        ::loom::model(|| {
            let state = Arc::new(ReservationState::new());
            state.open(0, 24);
            let finals = Arc::new(AtomicUsize::new(0));
            let reservers: Vec<_> = (0..2)
                .map(|_| {
                    let state = Arc::clone(&state);
                    let finals = Arc::clone(&finals);
                    thread::spawn(move || {
                        let reserved = state.try_reserve(16);
                        if let Some(reserved) = reserved {
                            assert_eq!(reserved.index, 0);
                            assert!(reserved.offset + 16 <= 24);
                            if state.put(reserved.index) {
                                finals.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        reserved.map(|r| r.offset)
                    })
                })
                .collect();
            let closed = state.close(OFFSET_CLOSED).expect("entry was open");
            if closed.unreferenced {
                finals.fetch_add(1, Ordering::SeqCst);
            }
            let offsets: Vec<_> = reservers.into_iter().map(|r| r.join().unwrap()).collect();
            // Only one 16-byte reservation fits in 24 bytes.
            assert!(offsets.iter().flatten().count() <= 1);
            assert_eq!(finals.load(Ordering::SeqCst), 1);
            assert_eq!(state.snapshot().refs(0), 0);
            assert!(closed.bytes <= 16);
        });
    }

    /// A reserver racing a close and the opening of the next entry with a
    /// smaller limit must never get room in the new entry that does not fit
    /// its limit: the limit/word ordering of the slow path guarantees it.
    #[test]
    fn reserver_never_pairs_new_entry_with_old_limit() {
        ::loom::model(|| {
            let state = Arc::new(ReservationState::new());
            state.open(0, 64);
            let reserver = {
                let state = Arc::clone(&state);
                thread::spawn(move || {
                    let reserved = state.try_reserve(32);
                    if let Some(reserved) = reserved {
                        if reserved.index == 1 {
                            assert!(reserved.offset + 32 <= 16, "overran the new entry");
                        }
                        state.put(reserved.index);
                    }
                })
            };
            if let Some(closed) = state.close(OFFSET_CLOSED) {
                assert_eq!(closed.index, 0);
            }
            state.open(1, 16);
            reserver.join().unwrap();
        });
    }

    /// Error wins over everything: once the ERROR sentinel is installed no
    /// reservation succeeds, whatever was in flight.
    #[test]
    fn no_reservation_succeeds_after_error_is_installed() {
        ::loom::model(|| {
            let state = Arc::new(ReservationState::new());
            state.open(0, 64);
            let installed = Arc::new(AtomicBool::new(false));
            let reserver = {
                let state = Arc::clone(&state);
                let installed = Arc::clone(&installed);
                thread::spawn(move || {
                    let before = installed.load(Ordering::SeqCst);
                    let reserved = state.try_reserve(8);
                    if before {
                        assert!(reserved.is_none());
                    }
                    if let Some(reserved) = reserved {
                        state.put(reserved.index);
                    }
                })
            };
            state.close(OFFSET_ERROR);
            installed.store(true, Ordering::SeqCst);
            reserver.join().unwrap();
            assert_eq!(state.try_reserve(1), None);
        });
    }
}
