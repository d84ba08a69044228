//! A sparse index from `u64` to values, built for a page cache: the
//! multi-order radix tree with marks and entry locks that Linux calls the
//! XArray, written for vigilfs.
//!
//! * **Multi-order entries.** [`XArray::store`] places an entry of order `k`
//!   over `2^k` aligned indices; a load anywhere inside returns it.
//! * **No silent overwrites.** A store whose span overlaps any *other*
//!   entry, larger or smaller, is refused with [`Error::Conflict`] naming
//!   the entry in the way, and nothing changes. (A large store used to
//!   erase a small entry at the far end of its range in the kernel's DAX
//!   code; here the caller must erase first.) Storing over an entry with
//!   exactly the same span replaces its value and keeps its marks.
//! * **Marks.** [`Mark::Dirty`], [`Mark::Writeback`] and [`Mark::User`],
//!   with per-node summaries so [`XArray::iter_marked`] skips unmarked
//!   subtrees.
//! * **Entry locks.** [`XArray::lock`] locks the whole entry covering an
//!   index and waits while another [`EntryGuard`] holds it;
//!   [`XArray::lock_or_reserve`] instead inserts a locked, empty reservation
//!   when nothing is there, so concurrent fills of one page serialise.
//!   Replacing or erasing a locked entry other than through its guard fails
//!   with [`Error::Locked`].
//! * **Concurrency.** One reader-writer lock over the tree, sharded so
//!   readers on different cores do not contend; entry locks are taken under
//!   the shared side. Writers (store, erase, marks) take the exclusive side.
//!
//! ```
//! use xarray::{Error, Mark, XArray};
//!
//! let pages = XArray::new();
//! pages.store(1023, 0, "small page").unwrap();
//! // An order-9 store at 512 would cover 1023: refused, and 1023 survives.
//! let refused = pages.store(512, 9, "huge page").unwrap_err();
//! assert!(matches!(refused.error, Error::Conflict { existing, .. } if existing.index() == 1023));
//! assert_eq!(pages.load(1023), Some("small page"));
//!
//! pages.store(0, 9, "huge page").unwrap();
//! assert_eq!(pages.load(300), Some("huge page"));
//! pages.set_mark(300, Mark::Dirty);
//! let dirty: Vec<_> = pages.iter_marked(0, Mark::Dirty).map(|(span, _)| span.index()).collect();
//! assert_eq!(dirty, [0]);
//! ```

mod error;
mod iter;
mod lock;
mod marks;
mod node;
mod span;
mod sync;
mod tree;

#[cfg(all(test, not(loom)))]
mod model_tests;

use std::ops::ControlFlow;
use std::ops::{Bound, RangeBounds};

pub use error::{Error, StoreError};
pub use iter::Iter;
pub use lock::EntryGuard;
pub use marks::Mark;
pub use span::{Span, MAX_ORDER};

use sync::{TreeLock, TreeReadGuard, TreeWriteGuard};
use tree::{Filter, Tree};

/// A sparse, concurrent map from `u64` indices to values of type `T`, with
/// multi-order entries, marks and entry locks (see the crate docs).
pub struct XArray<T> {
    tree: TreeLock<Tree<T>>,
    waiters: lock::WaitQueues,
}

/// An entry found in the way by [`XArray::find_conflict`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occupant<T> {
    /// The indices the entry covers.
    pub span: Span,
    /// Its value, or `None` for a reservation still being filled.
    pub value: Option<T>,
}

impl<T> XArray<T> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            tree: TreeLock::new(Tree::new()),
            waiters: lock::WaitQueues::new(),
        }
    }

    /// How many entries hold a value (a large entry counts once;
    /// reservations do not count).
    pub fn len(&self) -> usize {
        self.read_tree().len()
    }

    /// Whether no entry holds a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of the entry covering `index`, wherever inside the entry
    /// `index` falls. Reservations being filled read as absent.
    pub fn load(&self, index: u64) -> Option<T>
    where
        T: Clone,
    {
        let tree = self.read_tree();
        tree.lookup(index)?.value().cloned()
    }

    /// Like [`XArray::load`], also telling which indices the entry covers.
    pub fn load_entry(&self, index: u64) -> Option<(Span, T)>
    where
        T: Clone,
    {
        let tree = self.read_tree();
        let found = tree.lookup(index)?;
        Some((found.span, found.value()?.clone()))
    }

    /// Stores `value` as an entry of `order` covering
    /// `index..index + 2^order`.
    ///
    /// Returns the previous value when an entry with exactly this span was
    /// replaced (its marks are kept). Refuses, handing `value` back, when
    /// `index` is not a multiple of `2^order` ([`Error::Unaligned`]), the
    /// order is too large, the entry to replace is locked
    /// ([`Error::Locked`]; use its guard), or any other entry overlaps the
    /// span ([`Error::Conflict`]) — including a small store inside a large
    /// entry: punching holes is never implicit.
    pub fn store(&self, index: u64, order: u8, value: T) -> Result<Option<T>, StoreError<T>> {
        let span = match Span::new(index, order) {
            Ok(span) => span,
            Err(error) => return Err(StoreError { error, value }),
        };
        self.write_tree().store(span, value)
    }

    /// Erases the whole entry covering `index` with its marks; returns its
    /// value. A locked entry is refused with [`Error::Locked`] (its holder
    /// erases through [`EntryGuard::erase`]).
    pub fn erase(&self, index: u64) -> Result<Option<T>, Error> {
        let erased = self.write_tree().erase(index, false)?;
        Ok(erased.and_then(|(_, value)| value))
    }

    /// Every entry with at least one index in `range`, reservations
    /// included, in index order. Only real entries are reported, never the
    /// tree's internal nodes, so "something is there" always comes with
    /// what it is and where it starts.
    pub fn find_conflict(&self, range: impl RangeBounds<u64>) -> Vec<Occupant<T>>
    where
        T: Clone,
    {
        let Some((first, last)) = inclusive_bounds(&range) else {
            return Vec::new();
        };
        let tree = self.read_tree();
        let mut found = Vec::new();
        tree.visit(first, Filter::Occupants, &mut |entry| {
            if entry.span.index() > last {
                return ControlFlow::Break(());
            }
            found.push(Occupant {
                span: entry.span,
                value: entry.value().cloned(),
            });
            ControlFlow::Continue(())
        });
        found
    }

    /// Sets `mark` on the entry covering `index`; `false` (and nothing
    /// changes) when no entry with a value covers it.
    pub fn set_mark(&self, index: u64, mark: Mark) -> bool {
        self.write_tree().assign_mark(index, mark, true)
    }

    /// Clears `mark` on the entry covering `index`; `false` when no entry
    /// with a value covers it.
    pub fn clear_mark(&self, index: u64, mark: Mark) -> bool {
        self.write_tree().assign_mark(index, mark, false)
    }

    /// Whether the entry covering `index` carries `mark`.
    pub fn is_marked(&self, index: u64, mark: Mark) -> bool {
        self.read_tree().is_marked(index, mark)
    }

    /// Every entry with a value, in index order.
    pub fn iter(&self) -> Iter<'_, T> {
        self.iter_from(0)
    }

    /// Entries with a value whose span ends at or after `from`, in index
    /// order: an entry covering `from` comes first even if it starts
    /// earlier.
    pub fn iter_from(&self, from: u64) -> Iter<'_, T> {
        Iter::new(self, from, Filter::Values)
    }

    /// Like [`XArray::iter_from`], only entries carrying `mark`. Subtrees
    /// without the mark are skipped whole, so the cost follows the number
    /// of marked entries, not of all entries.
    pub fn iter_marked(&self, from: u64, mark: Mark) -> Iter<'_, T> {
        Iter::new(self, from, Filter::Marked(mark))
    }

    // A poisoned tree lock means a panic inside this crate's own tree code
    // (no user code runs under the exclusive lock), so the tree may be
    // inconsistent: carrying on could lose entries silently.
    fn read_tree(&self) -> TreeReadGuard<'_, Tree<T>> {
        self.tree
            .read()
            .expect("xarray: tree lock poisoned by a panic inside the index")
    }

    fn write_tree(&self) -> TreeWriteGuard<'_, Tree<T>> {
        self.tree
            .write()
            .expect("xarray: tree lock poisoned by a panic inside the index")
    }
}

impl<T> Default for XArray<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for XArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XArray")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// `range` as `first..=last`, or `None` when it holds no index.
fn inclusive_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, u64)> {
    let first = match range.start_bound() {
        Bound::Included(&first) => first,
        Bound::Excluded(&before) => before.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let last = match range.end_bound() {
        Bound::Included(&last) => last,
        Bound::Excluded(&after) => after.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (first <= last).then_some((first, last))
}
