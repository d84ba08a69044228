//! Reads of file data the device failed and then served: a read of
//! several blocks that fails is read again block by block, to name the
//! block that failed, and when every block reads the second time nobody's
//! read fails. The device still returned an error, and an operator must
//! hear of a device that does so (a flaky disk, a path that drops out):
//! they are kept here, bounded, until the mounted layer takes them and
//! reports each as an event and a count.
//!
//! Invariant: at most [`KEPT`] are held; past that each is only counted,
//! and the count is taken with them, so none goes unreported.

use std::sync::{Mutex, PoisonError};

use errseq::Errno;

/// Most reads held between two takes.
const KEPT: usize = 64;

/// One read that failed whole and then read block by block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredRead {
    /// The file.
    pub ino: u64,
    /// Its first file block read.
    pub first: u64,
    /// Blocks read.
    pub blocks: u64,
    /// The device block of `first`.
    pub physical: u64,
    /// What the device said the first time.
    pub errno: Errno,
}

/// The reads held, and how many more there were.
#[derive(Debug, Default)]
pub(crate) struct RecoveredReads {
    held: Mutex<(Vec<RecoveredRead>, u64)>,
}

impl RecoveredReads {
    pub(crate) fn note(&self, read: RecoveredRead) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.0.len() < KEPT {
            held.0.push(read);
        } else {
            held.1 += 1;
        }
    }

    /// The reads held, and the count of those past [`KEPT`]; none after.
    pub(crate) fn take(&self) -> (Vec<RecoveredRead>, u64) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(ino: u64) -> RecoveredRead {
        RecoveredRead {
            ino,
            first: 0,
            blocks: 2,
            physical: 100,
            errno: Errno::EIO,
        }
    }

    #[test]
    fn reads_past_the_bound_are_counted_and_taken_with_the_rest() {
        let reads = RecoveredReads::default();
        for ino in 0..KEPT as u64 + 3 {
            reads.note(read(ino));
        }
        let (held, more) = reads.take();
        assert_eq!((held.len(), more), (KEPT, 3));
        assert_eq!(held[0], read(0));
        assert_eq!(reads.take(), (Vec::new(), 0));
    }
}
