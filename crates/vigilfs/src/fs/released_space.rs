//! Space a delete gives back a moment after the delete returned.
//!
//! An unlinked file still open (or still looked up by the kernel) is an
//! orphan: its blocks are freed by its last close or forget. Through FUSE
//! both come after the system call that caused them returned — the
//! kernel sends RELEASE and FORGET asynchronously — so a program that
//! fills the disk through a descriptor, unlinks the file, closes it and
//! writes again may find the space not yet back, and hear ENOSPC for a
//! disk that is not full (ext4 frees at the close). A write or fallocate
//! refused for space therefore waits a moment for a held orphan to be
//! deleted and tries again, as ext4 retries an allocation after a journal
//! commit frees blocks.
//!
//! Invariants: a wait is bounded ([`WAIT`]); an orphan that was waited for
//! in vain (a file someone keeps open) is not waited for again, so a full
//! disk with such a file answers ENOSPC at once from then on.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The longest a refused allocation waits for a held orphan to go.
const WAIT: Duration = Duration::from_millis(500);

/// Orphans deleted, and those waited for in vain. See the module comment.
#[derive(Default)]
pub(super) struct ReleasedSpace {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Orphans deleted since the mount.
    deleted: u64,
    /// Held orphans a wait ended without: not waited for again.
    waited_in_vain: BTreeSet<u64>,
}

impl ReleasedSpace {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Each update is one counter or set operation: a poisoned lock
        // holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An orphan was deleted: its blocks are free (or pending the commit
    /// that freed them, which the allocator settles).
    pub(super) fn orphan_deleted(&self) {
        self.lock().deleted += 1;
        self.changed.notify_all();
    }

    /// Waits up to [`WAIT`] for one of the `held` orphans to be deleted;
    /// whether one was (then the allocation is worth trying again). At
    /// once `false` if every one of them was waited for in vain before.
    pub(super) fn wait_for_one_of(&self, held: &[u64]) -> bool {
        let mut state = self.lock();
        state.waited_in_vain.retain(|ino| held.contains(ino));
        if held.iter().all(|ino| state.waited_in_vain.contains(ino)) {
            return false;
        }
        let before = state.deleted;
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, WAIT, |state| state.deleted == before)
            .unwrap_or_else(PoisonError::into_inner);
        if state.deleted != before {
            return true;
        }
        state.waited_in_vain.extend(held.iter().copied());
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_deletion_ends_the_wait_and_an_orphan_kept_is_waited_for_once() {
        let space = Arc::new(ReleasedSpace::default());
        let deleter = {
            let space = Arc::clone(&space);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                space.orphan_deleted();
            })
        };
        assert!(space.wait_for_one_of(&[7]));
        deleter.join().unwrap();
        // Nobody deletes 9: one bounded wait, then none.
        let start = Instant::now();
        assert!(!space.wait_for_one_of(&[9]));
        assert!(start.elapsed() >= WAIT);
        let start = Instant::now();
        assert!(!space.wait_for_one_of(&[9]));
        assert!(
            start.elapsed() < WAIT,
            "waited again for an orphan kept open"
        );
        // No orphan held: nothing to wait for.
        assert!(!space.wait_for_one_of(&[]));
    }
}
