//! Space a delete gives back a moment after the delete returned.
//!
//! An unlinked file still open (or still looked up by the kernel) is an
//! orphan: its blocks are freed by its last close or forget. Through FUSE
//! both come after the system call that caused them returned — the
//! kernel sends RELEASE and FORGET asynchronously — so a program that
//! fills the disk through a descriptor, unlinks the file, closes it and
//! writes again may find the space not yet back, and hear ENOSPC for a
//! disk that is not full (ext4 frees at the close). A write or fallocate
//! refused for space therefore waits a moment for an orphan to be deleted
//! and tries again, as ext4 retries an allocation after a journal commit
//! frees blocks. It waits while an orphan is held, or while a close is
//! under way (the last close of an orphan no longer holds it, and deletes
//! it in several transactions).
//!
//! Invariants: a wait is bounded ([`WAIT`]); an orphan that was waited for
//! in vain (a file someone keeps open) is not waited for again, so a full
//! disk with such a file answers ENOSPC at once from then on.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The longest a refused allocation waits for an orphan to go.
const WAIT: Duration = Duration::from_millis(500);

/// Orphans deleted, closes under way, and orphans waited for in vain. See
/// the module comment.
#[derive(Default)]
pub(super) struct ReleasedSpace {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Orphans deleted since the mount.
    deleted: u64,
    /// Closes (and forgets) under way: each may be an orphan's last.
    closing: u64,
    /// Held orphans a wait ended without: not waited for again.
    waited_in_vain: BTreeSet<u64>,
}

/// A close under way (see [`ReleasedSpace::closing`]); dropping it ends it.
pub(super) struct Closing<'a> {
    space: &'a ReleasedSpace,
    deleted: bool,
}

impl Closing<'_> {
    /// The close deleted an orphan: its blocks are free (or pending the
    /// commit that freed them, which the allocator settles).
    pub(super) fn deleted_an_orphan(&mut self) {
        self.deleted = true;
    }
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        let mut state = self.space.lock();
        state.closing -= 1;
        if self.deleted {
            state.deleted += 1;
        }
        drop(state);
        self.space.changed.notify_all();
    }
}

impl ReleasedSpace {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Each update is one counter or set operation: a poisoned lock
        // holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A close (or forget) begins: an allocation refused meanwhile waits
    /// for it to end.
    pub(super) fn closing(&self) -> Closing<'_> {
        self.lock().closing += 1;
        Closing {
            space: self,
            deleted: false,
        }
    }

    /// Orphans deleted so far: taken before an allocation, so that one
    /// deleted while it failed is not missed.
    pub(super) fn deletions(&self) -> u64 {
        self.lock().deleted
    }

    /// Whether an orphan was deleted since [`ReleasedSpace::deletions`]
    /// said `since`, waiting up to [`WAIT`] for one to be while one of the
    /// `held` orphans or a close under way may give space back (then the
    /// allocation is worth trying again). At once `false` if nothing may:
    /// no close under way, and every held orphan waited for in vain
    /// before.
    pub(super) fn wait_for_one_of(&self, held: &[u64], since: u64) -> bool {
        let mut state = self.lock();
        if state.deleted != since {
            return true;
        }
        state.waited_in_vain.retain(|ino| held.contains(ino));
        let fresh = held.iter().any(|ino| !state.waited_in_vain.contains(ino));
        if !fresh && state.closing == 0 {
            return false;
        }
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, WAIT, |state| {
                state.deleted == since && (fresh || state.closing > 0)
            })
            .unwrap_or_else(PoisonError::into_inner);
        if state.deleted != since {
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
        let since = space.deletions();
        let deleter = {
            let space = Arc::clone(&space);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                space.closing().deleted_an_orphan();
            })
        };
        assert!(space.wait_for_one_of(&[7], since));
        deleter.join().unwrap();
        // Nobody deletes 9: one bounded wait, then none.
        let start = Instant::now();
        assert!(!space.wait_for_one_of(&[9], space.deletions()));
        assert!(start.elapsed() >= WAIT);
        let start = Instant::now();
        assert!(!space.wait_for_one_of(&[9], space.deletions()));
        assert!(
            start.elapsed() < WAIT,
            "waited again for an orphan kept open"
        );
        // No orphan held and no close under way: nothing to wait for...
        let since = space.deletions();
        assert!(!space.wait_for_one_of(&[], since));
        // ...unless one went while the allocation failed.
        space.closing().deleted_an_orphan();
        assert!(space.wait_for_one_of(&[], since));
    }

    #[test]
    fn a_close_under_way_is_waited_for_though_its_orphan_is_no_longer_held() {
        let space = Arc::new(ReleasedSpace::default());
        let since = space.deletions();
        let (started, start) = std::sync::mpsc::channel();
        let closer = {
            let space = Arc::clone(&space);
            std::thread::spawn(move || {
                let mut closing = space.closing();
                started.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                closing.deleted_an_orphan();
            })
        };
        start.recv().unwrap();
        assert!(space.wait_for_one_of(&[], since));
        closer.join().unwrap();
        // A close that deleted nothing ends the wait without a retry.
        let since = space.deletions();
        let (started, start) = std::sync::mpsc::channel();
        let closer = {
            let space = Arc::clone(&space);
            std::thread::spawn(move || {
                let _closing = space.closing();
                started.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            })
        };
        start.recv().unwrap();
        assert!(!space.wait_for_one_of(&[], since));
        closer.join().unwrap();
    }
}
