//! What a power cut would lose now: the metadata changes whose journal
//! entries are not durable yet, kept in order since they were made.
//!
//! Every namespace and attribute change the mount makes is noted here with
//! the journal sequence number it is committed in. Those at or below the
//! journal's durable sequence number are dropped when asked ([`Changes::
//! pending`]); what remains is exactly what a power cut could take away
//! (with the data not written back, which the page cache knows). This is
//! what LazyFS reports as unsynced, and more: vigilfs also knows which
//! creates, renames and unlinks would be lost, so a program that forgot a
//! directory fsync can see it before the cut.
//!
//! Invariants: changes are kept in commit order; at most
//! [`MAX_PENDING_CHANGES`] are kept, older ones counted as omitted.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The most pending changes remembered.
pub const MAX_PENDING_CHANGES: usize = 100_000;

/// One metadata change not known to be durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The journal entry it is in.
    pub seq: u64,
    /// The operation (`create`, `rename`, `unlink`, `setattr`...).
    pub operation: &'static str,
    /// The inode changed (the one created, linked, changed), when known.
    pub ino: Option<u64>,
    /// The entry concerned, as (directory, name), if the change was to one.
    pub entry: Option<(u64, Vec<u8>)>,
    /// For a rename or link: the new entry.
    pub new_entry: Option<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct Pending {
    changes: VecDeque<Change>,
    omitted: u64,
}

/// The changes of one mount not known to be durable. See the module
/// comment.
#[derive(Default)]
pub struct Changes {
    pending: Mutex<Pending>,
}

impl Changes {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Each update is one push or pop.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a change committed in journal entry `seq`.
    pub fn note(&self, change: Change) {
        let mut pending = self.lock();
        if pending.changes.len() == MAX_PENDING_CHANGES {
            pending.changes.pop_front();
            pending.omitted += 1;
        }
        pending.changes.push_back(change);
    }

    /// The changes after `durable_seq` (the older ones are dropped), and
    /// how many more were made but no longer remembered.
    pub fn pending(&self, durable_seq: u64) -> (Vec<Change>, u64) {
        let mut pending = self.lock();
        while pending
            .changes
            .front()
            .is_some_and(|change| change.seq <= durable_seq)
        {
            pending.changes.pop_front();
        }
        if pending.changes.is_empty() {
            pending.omitted = 0;
        }
        (pending.changes.iter().cloned().collect(), pending.omitted)
    }

    /// Whether a change after `durable_seq` concerns inode `ino`: made to
    /// it, or to an entry of it (a directory). True too when changes were
    /// made but are no longer remembered: nothing can be promised then.
    pub fn any_pending_for(&self, ino: u64, durable_seq: u64) -> bool {
        let (pending, omitted) = self.pending(durable_seq);
        omitted > 0 || pending.iter().any(|change| change.concerns(ino))
    }
}

impl Change {
    /// Whether this change is to inode `ino` or to one of its entries.
    fn concerns(&self, ino: u64) -> bool {
        let in_directory = |entry: &Option<(u64, Vec<u8>)>| {
            entry
                .as_ref()
                .is_some_and(|(directory, _)| *directory == ino)
        };
        self.ino == Some(ino) || in_directory(&self.entry) || in_directory(&self.new_entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64) -> Change {
        Change {
            seq,
            operation: "create",
            ino: Some(seq),
            entry: None,
            new_entry: None,
        }
    }

    #[test]
    fn durable_changes_are_dropped_and_the_rest_kept_in_order() {
        let changes = Changes::default();
        for seq in [3, 4, 4, 7] {
            changes.note(change(seq));
        }
        let (pending, omitted) = changes.pending(4);
        assert_eq!(pending.iter().map(|c| c.seq).collect::<Vec<_>>(), [7]);
        assert_eq!(omitted, 0);
        assert!(changes.pending(7).0.is_empty());
    }

    #[test]
    fn a_change_is_pending_for_its_inode_and_for_the_directories_of_its_entries() {
        let changes = Changes::default();
        changes.note(Change {
            seq: 5,
            operation: "rename",
            ino: Some(10),
            entry: Some((1, b"a".to_vec())),
            new_entry: Some((2, b"b".to_vec())),
        });
        for ino in [10, 1, 2] {
            assert!(changes.any_pending_for(ino, 4), "inode {ino}");
        }
        assert!(!changes.any_pending_for(3, 4));
        changes.note(change(6));
        assert!(!changes.any_pending_for(10, 5), "durable once entry 5 is");
        assert!(changes.any_pending_for(6, 5));
    }

    #[test]
    fn changes_no_longer_remembered_are_pending_for_every_inode() {
        let changes = Changes::default();
        for seq in 1..=(MAX_PENDING_CHANGES as u64 + 1) {
            changes.note(change(seq));
        }
        assert!(changes.any_pending_for(u64::MAX, 0));
    }
}
