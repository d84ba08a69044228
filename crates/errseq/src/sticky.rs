//! A cursor that never succeeds again once it has seen an error.
//!
//! Some consumers cannot recover from a lost write at all: a volatile mount
//! that skipped its syncs cannot know which of its data survived, so after
//! the first writeback error every later sync must fail too. [`Sticky`]
//! starts from a peek, so creating one hides nothing from ordinary openers,
//! and it latches the first error it sees. The latch is an atomic, so a
//! `Sticky` can be shared between threads.

use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;
use crate::{ErrSeq, Errno, Since};

/// A latched error cursor. See the module documentation.
#[derive(Debug)]
pub struct Sticky {
    since: Since,
    /// 0 until an error is seen, then that errno forever.
    latched: AtomicU64,
}

impl Sticky {
    /// Starts watching `seq` from its current value.
    ///
    /// Uses [`ErrSeq::peek`], so an error that nobody has been told about
    /// yet is still reported to the next opener.
    pub fn new(seq: &ErrSeq) -> Sticky {
        Sticky {
            since: seq.peek(),
            latched: AtomicU64::new(0),
        }
    }

    /// Fails with the first error seen since creation, now and forever.
    pub fn check(&self, seq: &ErrSeq) -> Result<(), Errno> {
        if let Some(errno) = self.latched() {
            return Err(errno);
        }
        let errno = match seq.check(self.since) {
            Ok(()) => return Ok(()),
            Err(errno) => errno,
        };
        // Two threads may see different errors at once; the first to latch
        // wins and both report the latched one, so callers agree.
        let candidate = u64::from(errno.0.get());
        match self
            .latched
            .compare_exchange(0, candidate, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Err(errno),
            Err(winner) => Err(Errno::from_word(winner).expect("a latched errno is non-zero")),
        }
    }

    /// The error this cursor latched, if any.
    pub fn latched(&self) -> Option<Errno> {
        Errno::from_word(self.latched.load(Ordering::Acquire))
    }
}
