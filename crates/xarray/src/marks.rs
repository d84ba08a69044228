//! Marks: three bits of caller state per entry (dirty, under writeback, and
//! one left to the user), and the per-node maps that hold them.
//!
//! A node keeps, for each mark, one 64-bit map with a bit per slot. For a
//! slot holding an entry the bit *is* that entry's mark (entries carry no
//! mark bits of their own, and sibling slots of a large entry never do); for
//! a slot holding a child node the bit says "some entry below is marked".
//! Keeping those summaries exact is what lets marked iteration skip whole
//! unmarked subtrees instead of visiting every entry.

/// A mark an entry can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mark {
    /// The entry's data differs from what is on disk.
    Dirty,
    /// The entry's data is being written to disk.
    Writeback,
    /// Free for the user of the index.
    User,
}

impl Mark {
    /// Every mark, in a fixed order.
    pub const ALL: [Mark; MARK_COUNT] = [Mark::Dirty, Mark::Writeback, Mark::User];

    fn map_index(self) -> usize {
        match self {
            Mark::Dirty => 0,
            Mark::Writeback => 1,
            Mark::User => 2,
        }
    }
}

pub(crate) const MARK_COUNT: usize = 3;

/// For each mark, which of a node's 64 slots carry it (see the module note).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MarkMaps([u64; MARK_COUNT]);

impl MarkMaps {
    pub(crate) fn slots_with(&self, mark: Mark) -> u64 {
        self.0[mark.map_index()]
    }

    pub(crate) fn is_set(&self, mark: Mark, slot: usize) -> bool {
        self.slots_with(mark) & (1u64 << slot) != 0
    }

    pub(crate) fn any(&self, mark: Mark) -> bool {
        self.slots_with(mark) != 0
    }

    pub(crate) fn assign(&mut self, mark: Mark, slot: usize, on: bool) {
        let map = &mut self.0[mark.map_index()];
        if on {
            *map |= 1u64 << slot;
        } else {
            *map &= !(1u64 << slot);
        }
    }

    pub(crate) fn clear_slot(&mut self, slot: usize) {
        for map in &mut self.0 {
            *map &= !(1u64 << slot);
        }
    }
}
