//! The radix node: 64 slots, each holding nothing, an entry (a value or a
//! reservation), a sibling pointer back to the first slot of a large entry,
//! or a child node; plus bitmaps describing the slots.
//!
//! A node at `shift` spends one slot per `2^shift` indices. An entry of
//! order `k` lives in the node whose shift is `k` rounded down to a multiple
//! of 6, in `2^(k - shift)` consecutive slots: the first (its head) holds the
//! entry, the others are siblings naming the head. So a lookup of any index
//! inside a large entry lands on the head in one step, the entry exists
//! exactly once, and its order needs no storage: it is the node's shift plus
//! the log of the run of sibling bits after the head. Keeping per-entry
//! facts (order, lock, marks) in per-node bitmaps rather than in the slot
//! keeps a slot as small as the value, which is most of the memory.
//!
//! Invariants kept by every method here and checked by `check` in tests:
//! * `heads` has a bit for exactly the slots holding an entry or a child;
//!   `siblings` for exactly the sibling slots, each of which names a head
//!   whose entry spans it; runs are aligned powers of two.
//! * `locks` has bits only on entry heads; every reservation's bit is set.
//! * The mark maps follow the rule in `marks.rs`: value heads carry the
//!   entry's marks; reservations, siblings and empty slots carry none;
//!   child slots carry "some entry below has the mark".
//! * A child node is never empty (`heads == 0`); empty children are freed by
//!   `refresh_child`, so finding a child means finding an entry below it.

use crate::marks::{Mark, MarkMaps};
use crate::sync::{AtomicU64, Ordering};

/// Index bits consumed per level.
pub(crate) const SLOT_BITS: u8 = 6;
pub(crate) const SLOT_COUNT: usize = 1 << SLOT_BITS;
/// The shift of the highest possible node: it alone covers all of `u64`.
pub(crate) const TOP_SHIFT: u8 = 60;

/// The shift of the node that holds entries of `order`.
pub(crate) fn home_shift(order: u8) -> u8 {
    order - order % SLOT_BITS
}

pub(crate) enum Slot<T> {
    Empty,
    /// The head slot of an entry holding a value.
    Value(T),
    /// The head slot of a reservation whose holder is still filling it; a
    /// reservation is locked for its whole life.
    Reserved,
    /// The offset of the head slot of the large entry this slot belongs to.
    Sibling(u8),
    Node(Box<Node<T>>),
}

pub(crate) struct Node<T> {
    shift: u8,
    heads: u64,
    siblings: u64,
    marks: MarkMaps,
    /// Entry locks, one bit per head. Taken with atomic read-modify-writes
    /// under the *shared* tree lock, so locking and unlocking never wait for
    /// other readers; every path that replaces or removes an entry holds the
    /// exclusive tree lock and checks the bit first.
    locks: AtomicU64,
    slots: [Slot<T>; SLOT_COUNT],
}

impl<T> Node<T> {
    pub(crate) fn new(shift: u8) -> Box<Self> {
        debug_assert!(shift <= TOP_SHIFT && shift % SLOT_BITS == 0);
        Box::new(Self {
            shift,
            heads: 0,
            siblings: 0,
            marks: MarkMaps::default(),
            locks: AtomicU64::new(0),
            slots: std::array::from_fn(|_| Slot::Empty),
        })
    }

    pub(crate) fn shift(&self) -> u8 {
        self.shift
    }

    /// Whether `index` falls in this node when it is the root (root covers
    /// `0..2^(shift + 6)`).
    pub(crate) fn covers_from_zero(&self, index: u64) -> bool {
        self.shift >= TOP_SHIFT || index >> (self.shift + SLOT_BITS) == 0
    }

    /// The slot `index` falls in, given that it falls in this node.
    pub(crate) fn offset_of(&self, index: u64) -> usize {
        ((index >> self.shift) as usize) & (SLOT_COUNT - 1)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heads == 0
    }

    pub(crate) fn heads(&self) -> u64 {
        self.heads
    }

    pub(crate) fn marks(&self) -> &MarkMaps {
        &self.marks
    }

    pub(crate) fn slot(&self, offset: usize) -> &Slot<T> {
        &self.slots[offset]
    }

    /// The head offset of the entry occupying `offset`, if an entry does.
    pub(crate) fn head_of(&self, offset: usize) -> Option<usize> {
        match self.slots[offset] {
            Slot::Value(_) | Slot::Reserved => Some(offset),
            Slot::Sibling(head) => Some(usize::from(head)),
            Slot::Empty | Slot::Node(_) => None,
        }
    }

    /// How many slots the entry at `head` occupies.
    fn run_at(&self, head: usize) -> usize {
        // `>> head >> 1` rather than `>> (head + 1)`: head 63 would shift by 64.
        1 + ((self.siblings >> head) >> 1).trailing_ones() as usize
    }

    /// The order of the entry whose head is at `head`.
    pub(crate) fn order_at(&self, head: usize) -> u8 {
        self.shift + self.run_at(head).trailing_zeros() as u8
    }

    /// The value at entry head `head`; `None` for a reservation.
    pub(crate) fn value_at(&self, head: usize) -> Option<&T> {
        match &self.slots[head] {
            Slot::Value(value) => Some(value),
            Slot::Reserved => None,
            _ => panic!("xarray: slot {head} is not an entry head"),
        }
    }

    /// Puts `value` at entry head `head` (filling a reservation or
    /// replacing a value; order, lock and marks stay); returns the old one.
    pub(crate) fn replace_value(&mut self, head: usize, value: T) -> Option<T> {
        match std::mem::replace(&mut self.slots[head], Slot::Value(value)) {
            Slot::Value(old) => Some(old),
            Slot::Reserved => None,
            _ => panic!("xarray: slot {head} is not an entry head"),
        }
    }

    /// Takes the entry lock at `head` if it is free; `false` when held.
    pub(crate) fn try_lock(&self, head: usize) -> bool {
        let bit = 1u64 << head;
        self.locks.fetch_or(bit, Ordering::Acquire) & bit == 0
    }

    pub(crate) fn unlock(&self, head: usize) {
        self.locks.fetch_and(!(1u64 << head), Ordering::Release);
    }

    pub(crate) fn is_locked(&self, head: usize) -> bool {
        self.locks.load(Ordering::Acquire) & (1u64 << head) != 0
    }

    pub(crate) fn child_mut(&mut self, offset: usize) -> Option<&mut Node<T>> {
        match &mut self.slots[offset] {
            Slot::Node(child) => Some(child),
            _ => None,
        }
    }

    /// The child at `offset`, created empty if the slot is empty. The caller
    /// must put an entry below it before the tree lock is released, or the
    /// no-empty-child invariant breaks.
    pub(crate) fn child_or_insert(&mut self, offset: usize) -> &mut Node<T> {
        if matches!(self.slots[offset], Slot::Empty) {
            self.slots[offset] = Slot::Node(Node::new(self.shift - SLOT_BITS));
            self.heads |= 1u64 << offset;
        }
        match &mut self.slots[offset] {
            Slot::Node(child) => child,
            _ => panic!("xarray: slot {offset} holds an entry where a child was expected"),
        }
    }

    /// Puts `child` (a whole subtree, possibly with marks) in empty slot
    /// `offset`; used when the tree grows a new root above the old one.
    pub(crate) fn adopt_child(&mut self, offset: usize, child: Box<Node<T>>) {
        debug_assert!(matches!(self.slots[offset], Slot::Empty));
        debug_assert!(child.shift + SLOT_BITS == self.shift);
        self.slots[offset] = Slot::Node(child);
        self.heads |= 1u64 << offset;
        self.refresh_child(offset);
    }

    /// Detaches the only child when this node holds nothing else, so the
    /// tree can drop a level.
    pub(crate) fn take_sole_child(&mut self) -> Option<Box<Node<T>>> {
        if self.heads != 1 || !matches!(self.slots[0], Slot::Node(_)) {
            return None;
        }
        self.heads = 0;
        self.marks.clear_slot(0);
        match std::mem::replace(&mut self.slots[0], Slot::Empty) {
            Slot::Node(child) => Some(child),
            _ => None,
        }
    }

    /// Puts an entry of `order` (a value, or a reservation for `None`) at
    /// `head`, with its siblings after it. The slots must be empty; the
    /// entry starts unmarked, and locked when `locked`.
    pub(crate) fn place_entry(&mut self, head: usize, order: u8, value: Option<T>, locked: bool) {
        debug_assert!(home_shift(order) == self.shift);
        let run = 1usize << (order - self.shift);
        debug_assert!(head % run == 0);
        for offset in head + 1..head + run {
            debug_assert!(matches!(self.slots[offset], Slot::Empty));
            self.slots[offset] = Slot::Sibling(head as u8);
            self.siblings |= 1u64 << offset;
        }
        debug_assert!(matches!(self.slots[head], Slot::Empty));
        self.slots[head] = match value {
            Some(value) => Slot::Value(value),
            None => Slot::Reserved,
        };
        self.heads |= 1u64 << head;
        if locked {
            self.locks.fetch_or(1u64 << head, Ordering::Relaxed);
        }
    }

    /// Removes the entry at `head` with its siblings, marks and lock bit;
    /// returns its value (`None` for a reservation).
    pub(crate) fn take_entry(&mut self, head: usize) -> Option<T> {
        let run = self.run_at(head);
        let value = match std::mem::replace(&mut self.slots[head], Slot::Empty) {
            Slot::Value(value) => Some(value),
            Slot::Reserved => None,
            _ => panic!("xarray: slot {head} is not an entry head"),
        };
        for offset in head + 1..head + run {
            self.slots[offset] = Slot::Empty;
            self.siblings &= !(1u64 << offset);
        }
        self.heads &= !(1u64 << head);
        self.marks.clear_slot(head);
        self.locks.fetch_and(!(1u64 << head), Ordering::Relaxed);
        value
    }

    pub(crate) fn set_entry_mark(&mut self, head: usize, mark: Mark, on: bool) {
        debug_assert!(matches!(self.slots[head], Slot::Value(_)));
        self.marks.assign(mark, head, on);
    }

    /// Brings this node's view of the child at `offset` up to date after
    /// something below it changed: frees the child if it emptied, else
    /// recomputes the mark summaries for its slot.
    pub(crate) fn refresh_child(&mut self, offset: usize) {
        let summary = match &self.slots[offset] {
            Slot::Node(child) if child.is_empty() => None,
            Slot::Node(child) => Some(*child.marks()),
            _ => return,
        };
        match summary {
            None => {
                self.slots[offset] = Slot::Empty;
                self.heads &= !(1u64 << offset);
                self.marks.clear_slot(offset);
            }
            Some(child_marks) => {
                for mark in Mark::ALL {
                    self.marks.assign(mark, offset, child_marks.any(mark));
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
impl<T> Node<T> {
    /// Checks this subtree against the module invariants; returns how many
    /// entries with a value it holds.
    pub(crate) fn check(&self, is_root: bool) -> usize {
        assert!(
            is_root || !self.is_empty(),
            "empty child node at shift {}",
            self.shift
        );
        let unmarked = |offset: usize| Mark::ALL.iter().all(|&m| !self.marks.is_set(m, offset));
        let locks = self.locks.load(Ordering::Relaxed);
        let mut values = 0;
        // The head and end of the large entry the scan is inside of.
        let mut inside: Option<(usize, usize)> = None;
        for (offset, slot) in self.slots.iter().enumerate() {
            let bit = 1u64 << offset;
            let head_bit = self.heads & bit != 0;
            let sibling_bit = self.siblings & bit != 0;
            let lock_bit = locks & bit != 0;
            if inside.is_some_and(|(_, end)| offset >= end) {
                inside = None;
            }
            if let Slot::Sibling(head) = slot {
                assert!(!head_bit && sibling_bit && !lock_bit);
                assert_eq!(inside.map(|(h, _)| h), Some(usize::from(*head)));
                assert!(unmarked(offset), "marked sibling");
                continue;
            }
            assert!(inside.is_none(), "sibling run cut short at {offset}");
            assert!(!sibling_bit);
            match slot {
                Slot::Empty => {
                    assert!(!head_bit && !lock_bit && unmarked(offset));
                }
                Slot::Value(_) | Slot::Reserved => {
                    assert!(head_bit);
                    let run = self.run_at(offset);
                    assert!(run.is_power_of_two() && offset % run == 0, "bad run");
                    assert_eq!(home_shift(self.order_at(offset)), self.shift);
                    inside = Some((offset, offset + run));
                    if matches!(slot, Slot::Value(_)) {
                        values += 1;
                    } else {
                        assert!(lock_bit, "unlocked reservation");
                        assert!(unmarked(offset), "marked reservation");
                    }
                }
                Slot::Node(child) => {
                    assert!(head_bit && !lock_bit);
                    assert_eq!(child.shift + SLOT_BITS, self.shift);
                    for mark in Mark::ALL {
                        assert_eq!(
                            self.marks.is_set(mark, offset),
                            child.marks.any(mark),
                            "stale {mark:?} summary at shift {} slot {offset}",
                            self.shift
                        );
                    }
                    values += child.check(false);
                }
                Slot::Sibling(_) => unreachable!("handled above"),
            }
        }
        values
    }
}
