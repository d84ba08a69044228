//! The radix tree itself, without any locking: lookup, ordered visits,
//! store / reserve / erase, marks, and handles on entry lock bits. The
//! caller (`XArray`) decides which operations run under the shared tree lock
//! (everything taking `&self`) and which under the exclusive one (`&mut
//! self`).
//!
//! Invariants, on top of the node invariants in `node.rs`:
//! * The tree is empty exactly when `root` is `None`; the root covers
//!   `0..2^(root.shift + 6)` and is grown one level at a time when a store
//!   needs more, and dropped a level when it holds only its slot-0 child.
//! * Entries never overlap: every store and reservation first looks for any
//!   entry in its span, so a large store cannot swallow a smaller entry (the
//!   seed's "PTE at 1023, PMD fault at 512" bug) and a small store cannot
//!   punch into a large one.
//! * `len` counts entries holding a value (reservations are not counted).
//! * No user code (a `T`'s `Drop` or `Clone`) runs in the `&mut self`
//!   methods: replaced and removed values are returned to the caller, who
//!   drops them after releasing the exclusive lock.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use crate::marks::Mark;
use crate::node::{home_shift, Node, Slot, SLOT_BITS, TOP_SHIFT};
use crate::{Error, Span, StoreError};

/// Which entries an ordered visit reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Every entry, reservations included: what is in the way of a store.
    Occupants,
    /// Entries holding a value: what iteration shows.
    Values,
    /// Entries carrying the mark (never reservations).
    Marked(Mark),
}

impl Filter {
    /// The slots of `node` worth looking at: heads, or for a mark only the
    /// heads whose entry or subtree carries it.
    fn candidates<T>(self, node: &Node<T>) -> u64 {
        match self {
            Filter::Occupants | Filter::Values => node.heads(),
            Filter::Marked(mark) => node.marks().slots_with(mark),
        }
    }

    fn accepts<T>(self, node: &Node<T>, head: usize) -> bool {
        match self {
            Filter::Occupants => true,
            Filter::Values => node.value_at(head).is_some(),
            Filter::Marked(mark) => node.marks().is_set(mark, head),
        }
    }
}

/// An entry in the tree, as found by a lookup or a visit: the indices it
/// covers and handles on its value and lock.
pub(crate) struct Found<'t, T> {
    pub(crate) span: Span,
    node: &'t Node<T>,
    head: usize,
}

impl<T> Clone for Found<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Found<'_, T> {}

impl<'t, T> Found<'t, T> {
    fn at(node: &'t Node<T>, base: u64, head: usize) -> Self {
        let first = base + ((head as u64) << node.shift());
        Self {
            span: Span::aligned_down(first, node.order_at(head)),
            node,
            head,
        }
    }

    /// The value; `None` for a reservation.
    pub(crate) fn value(self) -> Option<&'t T> {
        self.node.value_at(self.head)
    }

    /// Takes the entry lock if nobody holds it.
    pub(crate) fn try_lock(self) -> bool {
        self.node.try_lock(self.head)
    }

    pub(crate) fn unlock(self) {
        self.node.unlock(self.head);
    }

    pub(crate) fn is_locked(self) -> bool {
        self.node.is_locked(self.head)
    }

    fn is_marked(self, mark: Mark) -> bool {
        self.node.marks().is_set(mark, self.head)
    }
}

pub(crate) struct Tree<T> {
    root: Option<Box<Node<T>>>,
    len: usize,
}

impl<T> Tree<T> {
    pub(crate) fn new() -> Self {
        Self { root: None, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn root_covering(&self, index: u64) -> Option<&Node<T>> {
        self.root
            .as_deref()
            .filter(|root| root.covers_from_zero(index))
    }

    /// The entry covering `index`, wherever inside it `index` falls.
    pub(crate) fn lookup(&self, index: u64) -> Option<Found<'_, T>> {
        let mut node = self.root_covering(index)?;
        loop {
            let offset = node.offset_of(index);
            if let Slot::Node(child) = node.slot(offset) {
                node = child;
                continue;
            }
            let head = node.head_of(offset)?;
            return Some(Found {
                span: Span::aligned_down(index, node.order_at(head)),
                node,
                head,
            });
        }
    }

    /// Calls `visit` on each entry passing `filter` whose span ends at or
    /// after `from`, in index order, until it breaks.
    pub(crate) fn visit<'t>(
        &'t self,
        from: u64,
        filter: Filter,
        visit: &mut impl FnMut(Found<'t, T>) -> ControlFlow<()>,
    ) {
        if let Some(root) = self.root_covering(from) {
            // The break only ends the walk; there is nothing to return.
            let _ = visit_node(root, 0, from, filter, visit);
        }
    }

    /// The first entry (reservations included) with any index in `span`.
    pub(crate) fn first_occupant(&self, span: Span) -> Option<Found<'_, T>> {
        let mut first = None;
        self.visit(span.index(), Filter::Occupants, &mut |found| {
            if found.span.index() <= span.last() {
                first = Some(found);
            }
            ControlFlow::Break(())
        });
        first
    }

    /// Clones up to `limit` entries passing `filter` from `from` on into
    /// `out`; returns where the next batch starts, or `None` when the walk
    /// reached the end.
    pub(crate) fn collect_batch(
        &self,
        from: u64,
        filter: Filter,
        limit: usize,
        out: &mut VecDeque<(Span, T)>,
    ) -> Option<u64>
    where
        T: Clone,
    {
        let mut resume = None;
        let mut taken = 0;
        self.visit(from, filter, &mut |found| {
            if let Some(value) = found.value() {
                out.push_back((found.span, value.clone()));
                taken += 1;
            }
            resume = found.span.last().checked_add(1);
            if taken == limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if taken == limit {
            resume
        } else {
            None
        }
    }

    /// Stores `value` as an entry covering exactly `span`.
    ///
    /// Replaces the value (keeping the entry's marks) when an unlocked entry
    /// with exactly this span exists; refuses with `Locked` when that entry
    /// is locked, and with `Conflict` when any other entry overlaps `span`.
    pub(crate) fn store(&mut self, span: Span, value: T) -> Result<Option<T>, StoreError<T>> {
        if let Some(found) = self.first_occupant(span) {
            let existing = found.span;
            let error = if existing != span {
                Error::Conflict {
                    requested: span,
                    existing,
                }
            } else if found.is_locked() {
                Error::Locked { existing }
            } else {
                let old =
                    self.with_entry_mut(span.index(), |node, head| node.replace_value(head, value));
                // Only reservations have no value, and they are always locked.
                debug_assert!(matches!(old, Some(Some(_))));
                return Ok(old.flatten());
            };
            return Err(StoreError { error, value });
        }
        self.insert(span, Some(value), false);
        self.len += 1;
        Ok(None)
    }

    /// Inserts a locked, empty reservation covering `span`, or names the
    /// first entry in the way.
    pub(crate) fn reserve(&mut self, span: Span) -> Result<(), Error> {
        if let Some(found) = self.first_occupant(span) {
            return Err(Error::Conflict {
                requested: span,
                existing: found.span,
            });
        }
        self.insert(span, None, true);
        Ok(())
    }

    /// Puts `value` into the locked entry at `span` (filling a reservation
    /// or replacing a value); returns the old value.
    pub(crate) fn replace_locked(&mut self, span: Span, value: T) -> Option<T> {
        let old = self
            .with_entry_mut(span.index(), |node, head| {
                debug_assert!(node.order_at(head) == span.order() && node.is_locked(head));
                node.replace_value(head, value)
            })
            .expect("xarray: a locked entry vanished while its guard was alive");
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the entry covering `index`. With `ignore_lock` false a locked
    /// entry is refused; the guard of a locked entry passes true.
    pub(crate) fn erase(
        &mut self,
        index: u64,
        ignore_lock: bool,
    ) -> Result<Option<(Span, Option<T>)>, Error> {
        let Some(found) = self.lookup(index) else {
            return Ok(None);
        };
        let span = found.span;
        if !ignore_lock && found.is_locked() {
            return Err(Error::Locked { existing: span });
        }
        let removed = self
            .with_entry_mut(index, |node, head| node.take_entry(head))
            .expect("xarray: entry found by lookup is missing");
        if removed.is_some() {
            self.len -= 1;
        }
        self.shrink();
        Ok(Some((span, removed)))
    }

    /// Sets or clears `mark` on the entry covering `index`; `false` when no
    /// entry with a value covers it (reservations cannot be marked).
    pub(crate) fn assign_mark(&mut self, index: u64, mark: Mark, on: bool) -> bool {
        self.with_entry_mut(index, |node, head| {
            if node.value_at(head).is_none() {
                return false;
            }
            node.set_entry_mark(head, mark, on);
            true
        })
        .unwrap_or(false)
    }

    pub(crate) fn is_marked(&self, index: u64, mark: Mark) -> bool {
        self.lookup(index)
            .is_some_and(|found| found.is_marked(mark))
    }

    /// Runs `edit` on the node holding the entry covering `index` (with the
    /// entry's head offset), then repairs summaries and frees emptied nodes
    /// on the way back up. `None` when no entry covers `index`.
    fn with_entry_mut<R>(
        &mut self,
        index: u64,
        edit: impl FnOnce(&mut Node<T>, usize) -> R,
    ) -> Option<R> {
        let root = self.root.as_deref_mut()?;
        if !root.covers_from_zero(index) {
            return None;
        }
        edit_below(root, index, edit)
    }

    /// Links an entry (a value, or a reservation for `None`) into the tree
    /// at `span`, which must be free.
    fn insert(&mut self, span: Span, value: Option<T>, locked: bool) {
        let home = home_shift(span.order());
        self.grow_to_cover(span);
        let mut node = self.root.as_deref_mut().expect("grown root");
        while node.shift() > home {
            let offset = node.offset_of(span.index());
            node = node.child_or_insert(offset);
        }
        let head = node.offset_of(span.index());
        node.place_entry(head, span.order(), value, locked);
    }

    fn grow_to_cover(&mut self, span: Span) {
        let home = home_shift(span.order());
        let covers = |root: &Node<T>| root.shift() >= home && root.covers_from_zero(span.last());
        let Some(mut root) = self.root.take() else {
            let mut shift = home;
            while shift < TOP_SHIFT && span.last() >> (shift + SLOT_BITS) != 0 {
                shift += SLOT_BITS;
            }
            self.root = Some(Node::new(shift));
            return;
        };
        while !covers(&root) {
            let mut taller = Node::new(root.shift() + SLOT_BITS);
            taller.adopt_child(0, root);
            root = taller;
        }
        self.root = Some(root);
    }

    /// Drops levels that hold nothing but their slot-0 child, and the root
    /// when it empties, so lookups after erasing far indices stay short.
    fn shrink(&mut self) {
        while let Some(root) = self.root.as_deref_mut() {
            if root.is_empty() {
                self.root = None;
            } else if let Some(child) = root.take_sole_child() {
                self.root = Some(child);
            } else {
                return;
            }
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn check(&self) {
        let values = self.root.as_ref().map_or(0, |root| root.check(true));
        assert_eq!(values, self.len, "len disagrees with the tree");
        if let Some(root) = &self.root {
            assert!(!root.is_empty(), "empty root kept");
            let lone_child = root.heads() == 1 && matches!(root.slot(0), Slot::Node(_));
            assert!(!lone_child, "root with a lone slot-0 child kept");
        }
    }
}

fn edit_below<T, R>(
    node: &mut Node<T>,
    index: u64,
    edit: impl FnOnce(&mut Node<T>, usize) -> R,
) -> Option<R> {
    let offset = node.offset_of(index);
    if let Some(child) = node.child_mut(offset) {
        let result = edit_below(child, index, edit);
        node.refresh_child(offset);
        return result;
    }
    let head = node.head_of(offset)?;
    Some(edit(node, head))
}

fn visit_node<'t, T>(
    node: &'t Node<T>,
    base: u64,
    from: u64,
    filter: Filter,
    visit: &mut impl FnMut(Found<'t, T>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let shift = node.shift();
    let first = if from <= base {
        0
    } else {
        ((from - base) >> shift) as usize
    };
    let mut scan_from = first;
    // `from` may fall on a sibling slot: the entry it belongs to starts
    // earlier but still covers `from`, and no candidate bit points at it.
    if let Slot::Sibling(head) = node.slot(first) {
        let head = usize::from(*head);
        let found = Found::at(node, base, head);
        if filter.accepts(node, head) {
            visit(found)?;
        }
        // The entry spans `size >> shift` slots here; resume after them.
        scan_from = head + (found.span.size() >> shift) as usize;
    }
    let mut candidates = filter.candidates(node) & slots_from(scan_from);
    while candidates != 0 {
        let offset = candidates.trailing_zeros() as usize;
        candidates &= candidates - 1;
        match node.slot(offset) {
            Slot::Value(_) | Slot::Reserved => {
                if filter.accepts(node, offset) {
                    visit(Found::at(node, base, offset))?;
                }
            }
            Slot::Node(child) => {
                let child_base = base + ((offset as u64) << shift);
                visit_node(child, child_base, from, filter, visit)?;
            }
            Slot::Empty | Slot::Sibling(_) => {
                unreachable!("xarray: candidate maps only name heads")
            }
        }
    }
    ControlFlow::Continue(())
}

/// The bitmap of slots `first..64`.
fn slots_from(first: usize) -> u64 {
    if first >= 64 {
        0
    } else {
        !0u64 << first
    }
}
