//! Error sequence cursors: one atomic word that remembers the latest
//! writeback error so that every interested party hears about it exactly once.
//!
//! # The idea
//!
//! A file (or a whole filesystem) owns an [`ErrSeq`]. Writeback sets an errno
//! in it when writing data fails. Everyone who may need to hear about that
//! error — each open file description, each syncfs caller, a health monitor —
//! keeps a private cursor ([`Since`]) recording which error it last heard of.
//! Comparing the cursor with the word says whether a new error has happened
//! since; advancing the cursor consumes the error for that holder only. There
//! is no list of errors and no per-reader state inside the word, so setting an
//! error is one compare-and-swap no matter how many readers exist.
//!
//! # The word
//!
//! We use a 64-bit word rather than the kernel's 32 bits. The low fields are
//! laid out as in the design this follows (two flag bits taken from the
//! counter), and the counter gets the remaining 50 bits:
//!
//! ```text
//!  63                                   14   13   12  11            0
//! +---------------------------------------+----+----+---------------+
//! |               counter                 | OB | RE |     errno     |
//! +---------------------------------------+----+----+---------------+
//!   OB = OBSERVED: someone has looked at the current value, so the next
//!        error must bump the counter for them to notice it.
//!   RE = REPORTED: the current error reached a user (an fsync/syncfs
//!        return value), so a new opener need not see it again.
//! ```
//!
//! Why 64 bits: the counter only moves when an error is set after the
//! previous one was observed, and a counter collision makes a cursor miss an
//! error. With 18 bits (the kernel's) a flood of 262,144 observed errors wraps
//! it; with 50 bits it would take 10^15 observed errors, more than a million
//! per second for thirty years. On the 64-bit targets we build for an
//! `AtomicU64` costs the same as an `AtomicU32`. When the counter does wrap,
//! it wraps silently modulo 2^50; the errno field is never zero once any
//! error was set, so a wrapped word can never look like "no error ever".
//!
//! # The operations
//!
//! * [`ErrSeq::set`] records an errno. It replaces the errno and clears both
//!   flags; it bumps the counter only if OBSERVED was set. An error nobody
//!   has looked at yet is simply overwritten: whoever looks next sees the
//!   newest errno, and no cursor can have recorded the old value.
//! * [`ErrSeq::sample`] gives a new cursor (at open time). If the current
//!   error was never REPORTED it returns the zero cursor, so the new opener
//!   will be told about it: an error must reach at least one user.
//! * [`ErrSeq::peek`] lets a monitor look without consuming: it sets OBSERVED
//!   only. The error is still delivered to the next opener.
//! * [`ErrSeq::check`] compares without changing anything.
//! * [`ErrSeq::check_and_advance`] reports a new error once to the cursor's
//!   holder and marks the value OBSERVED and REPORTED.
//!
//! Cursors compare by their counter and errno only: the flag bits describe
//! the word's history, not which error a cursor has heard of.
//!
//! # Invariants
//!
//! * REPORTED implies OBSERVED (`set` clears both; `peek` sets OBSERVED;
//!   `check_and_advance` sets both).
//! * Once any error was set the errno field is non-zero forever, so the
//!   zero cursor differs from every error value.
//! * A cursor that heard of value V (through sample, peek or
//!   check_and_advance) caused OBSERVED to be set on V, so any later error
//!   changes the counter and the cursor will see it.
//!
//! [`Sticky`] is the mode for consumers that must never succeed again once
//! an error has happened (as overlayfs volatile mounts ended up doing).

#![deny(unsafe_code)]

mod sticky;
mod sync;

use std::fmt;
use std::num::NonZeroU16;
use std::sync::atomic::Ordering;

pub use sticky::Sticky;
use sync::AtomicU64;

/// Bits holding the errno.
const ERRNO_MASK: u64 = (1 << ERRNO_BITS) - 1;
const ERRNO_BITS: u32 = 12;
/// Set once the current error was returned to a user.
const REPORTED: u64 = 1 << ERRNO_BITS;
/// Set once anyone recorded the current value in a cursor.
const OBSERVED: u64 = 1 << (ERRNO_BITS + 1);
const FLAGS: u64 = REPORTED | OBSERVED;
/// The counter's unit: the lowest bit above the flags.
const COUNTER_ONE: u64 = 1 << (ERRNO_BITS + 2);

/// A positive errno value small enough to fit the word (1..=4095).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(NonZeroU16);

impl Errno {
    /// The largest errno the word can hold, as in the kernel's `MAX_ERRNO`.
    pub const MAX: i32 = ERRNO_MASK as i32;

    /// I/O error.
    pub const EIO: Errno = Errno::from_const(5);
    /// No space left on device.
    pub const ENOSPC: Errno = Errno::from_const(28);
    /// Disk quota exceeded.
    pub const EDQUOT: Errno = Errno::from_const(122);

    const fn from_const(value: u16) -> Errno {
        match NonZeroU16::new(value) {
            Some(value) => Errno(value),
            None => panic!("errno constants are non-zero"),
        }
    }

    /// Accepts a positive errno (or a negated one, kernel style). Returns
    /// `None` for 0 and for values beyond [`Errno::MAX`].
    pub fn new(value: i32) -> Option<Errno> {
        let positive = value.checked_abs()?;
        if positive > Errno::MAX {
            return None;
        }
        NonZeroU16::new(positive as u16).map(Errno)
    }

    /// The positive errno value.
    pub fn get(self) -> i32 {
        i32::from(self.0.get())
    }

    fn from_word(word: u64) -> Option<Errno> {
        NonZeroU16::new((word & ERRNO_MASK) as u16).map(Errno)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({})", self.get())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errno {}", self.get())
    }
}

impl std::error::Error for Errno {}

/// A holder's cursor: which error value it has last heard of.
///
/// The zero cursor ([`Since::default`]) has heard of nothing.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Since(u64);

impl Since {
    /// The part of a value that names an error: counter and errno.
    fn identity(self) -> u64 {
        self.0 & !FLAGS
    }
}

impl fmt::Debug for Since {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Since")
            .field("counter", &(self.0 >> (ERRNO_BITS + 2)))
            .field("errno", &(self.0 & ERRNO_MASK))
            .finish()
    }
}

/// A decoded view of the word, for diagnostics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    /// The latest error, if any was ever set.
    pub errno: Option<Errno>,
    /// How many times the errno changed after being observed (mod 2^50).
    pub counter: u64,
    /// Someone has recorded the current value in a cursor.
    pub observed: bool,
    /// The current error was returned to a user.
    pub reported: bool,
}

/// The error sequence word. See the crate documentation.
pub struct ErrSeq {
    word: AtomicU64,
}

impl Default for ErrSeq {
    fn default() -> Self {
        ErrSeq::new()
    }
}

impl fmt::Debug for ErrSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ErrSeq").field(&self.state()).finish()
    }
}

impl ErrSeq {
    /// A word on which no error has ever been set.
    #[cfg(not(loom))]
    pub const fn new() -> ErrSeq {
        ErrSeq {
            word: AtomicU64::new(0),
        }
    }

    /// A word on which no error has ever been set.
    #[cfg(loom)]
    pub fn new() -> ErrSeq {
        ErrSeq {
            word: AtomicU64::new(0),
        }
    }

    /// Records `errno` as the latest error.
    ///
    /// It returns nothing on purpose: the new value is not OBSERVED, so a
    /// cursor holding it could miss a later identical error.
    ///
    /// Only an OBSERVED value advances the counter: if nobody recorded the
    /// current value, no cursor can tell old from new, so overwriting the
    /// errno loses nothing and spares counter space during error floods.
    pub fn set(&self, errno: Errno) {
        let errno_bits = u64::from(errno.0.get());
        let mut old = self.word.load(Ordering::Relaxed);
        loop {
            let mut new = (old & !(FLAGS | ERRNO_MASK)) | errno_bits;
            if old & OBSERVED != 0 {
                new = new.wrapping_add(COUNTER_ONE);
            }
            if new == old {
                return;
            }
            match self
                .word
                .compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                // Someone else installed exactly what we wanted (a racing
                // setter of the same errno): one bump is enough.
                Err(current) if current == new => return,
                Err(current) => old = current,
            }
        }
    }

    /// A cursor for a new opener.
    ///
    /// If the current error has not been reported to anyone, the zero cursor
    /// is returned so that this opener's first check reports it.
    pub fn sample(&self) -> Since {
        let current = self.word.load(Ordering::Acquire);
        if current & REPORTED == 0 {
            Since(0)
        } else {
            Since(current)
        }
    }

    /// Looks at the current value without consuming the error.
    ///
    /// Marks the value OBSERVED, so that a later error bumps the counter and
    /// a check against the returned cursor notices it, but leaves REPORTED
    /// alone: an error nobody was told about is still delivered to the next
    /// opener. Use the returned cursor with [`ErrSeq::check`] (or
    /// [`Sticky`]); it must not be fed to [`ErrSeq::check_and_advance`], which
    /// would treat the peeked error as already reported to its holder.
    pub fn peek(&self) -> Since {
        // Monitors poll: when the mark is already there, a plain load is
        // enough and keeps the cache line shared instead of bouncing it.
        // A set racing with us either read OBSERVED (and bumps the counter,
        // so our cursor sees it) or lands after our load (same thing).
        let current = self.word.load(Ordering::Acquire);
        if current & OBSERVED != 0 {
            return Since(current);
        }
        let old = self.word.fetch_or(OBSERVED, Ordering::AcqRel);
        Since(old | OBSERVED)
    }

    /// Returns the latest error if one was set since `since`, without
    /// advancing anything.
    pub fn check(&self, since: Since) -> Result<(), Errno> {
        let current = Since(self.word.load(Ordering::Acquire));
        if current.identity() == since.identity() {
            return Ok(());
        }
        Err(Errno::from_word(current.0).expect("a value differing from a cursor holds an errno"))
    }

    /// Reports the latest error once to the holder of `since`, and advances
    /// `since` past it.
    ///
    /// The value is marked OBSERVED and REPORTED on the way. If the mark
    /// loses a race against a writer, the writer's new error is left unmarked
    /// and unreported, which is right: this holder reports the value it read
    /// and will see the writer's error at its next check. If the mark loses a
    /// race against [`ErrSeq::peek`], which only added OBSERVED, we must try
    /// again: otherwise the error would be returned here but never marked
    /// REPORTED, and every later opener would be told about it a second
    /// time.
    pub fn check_and_advance(&self, since: &mut Since) -> Result<(), Errno> {
        let mut old = self.word.load(Ordering::Acquire);
        if Since(old).identity() == since.identity() {
            return Ok(());
        }
        loop {
            let new = old | FLAGS;
            if new == old {
                break;
            }
            match self
                .word
                .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                // Only OBSERVED appeared: a peek. Retry so REPORTED lands.
                Err(current) if current == old | OBSERVED => old = current,
                // A writer or another reporter changed the word; either our
                // marks are already there or the value we read is history.
                Err(_) => break,
            }
        }
        *since = Since(old | FLAGS);
        Err(Errno::from_word(old).expect("a value differing from a cursor holds an errno"))
    }

    /// Decodes the word for diagnostics and tests.
    ///
    /// Unlike [`ErrSeq::peek`] this does not mark the value OBSERVED, so a
    /// later error with the same errno may not be distinguishable from this
    /// one: monitors that want to notice later errors must use `peek`.
    pub fn state(&self) -> State {
        let word = self.word.load(Ordering::Acquire);
        State {
            errno: Errno::from_word(word),
            counter: word >> (ERRNO_BITS + 2),
            observed: word & OBSERVED != 0,
            reported: word & REPORTED != 0,
        }
    }
}

#[cfg(test)]
mod tests;
