//! `Span`: the aligned run of indices that one entry covers.
//!
//! An entry of order `k` covers `2^k` indices starting at a multiple of
//! `2^k`. A `Span` can only be built aligned, so every `Span` in the crate
//! names a run an entry could occupy, and two spans either nest or are
//! disjoint, never partly overlap.

use std::fmt;

use crate::Error;

/// The largest order an entry may have: an order-63 entry covers half of
/// the `u64` index space. (Order 64, the whole space, would need an entry
/// that is its own root; nothing in the page cache needs it.)
pub const MAX_ORDER: u8 = 63;

/// The indices an entry covers: `2^order` consecutive indices starting at
/// `index`, which is a multiple of `2^order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    index: u64,
    order: u8,
}

impl Span {
    /// The span of an entry of `order` starting at `index`.
    ///
    /// Fails with [`Error::OrderTooLarge`] above [`MAX_ORDER`] and with
    /// [`Error::Unaligned`] when `index` is not a multiple of `2^order`.
    pub fn new(index: u64, order: u8) -> Result<Self, Error> {
        let span = Self::containing(index, order)?;
        if span.index != index {
            return Err(Error::Unaligned { index, order });
        }
        Ok(span)
    }

    /// The span of `order` that contains `index` (its start is `index`
    /// rounded down to a multiple of `2^order`).
    pub fn containing(index: u64, order: u8) -> Result<Self, Error> {
        if order > MAX_ORDER {
            return Err(Error::OrderTooLarge { order });
        }
        Ok(Self::aligned_down(index, order))
    }

    /// Like [`Span::containing`] for an order already known to be valid.
    pub(crate) fn aligned_down(index: u64, order: u8) -> Self {
        debug_assert!(order <= MAX_ORDER);
        Self {
            index: index & !((1u64 << order) - 1),
            order,
        }
    }

    /// The first index covered.
    pub fn index(self) -> u64 {
        self.index
    }

    /// The order: the span covers `2^order` indices.
    pub fn order(self) -> u8 {
        self.order
    }

    /// The last index covered (inclusive, so a span ending at `u64::MAX`
    /// needs no overflow).
    pub fn last(self) -> u64 {
        self.index + ((1u64 << self.order) - 1)
    }

    /// How many indices are covered (never zero).
    pub fn size(self) -> u64 {
        1u64 << self.order
    }

    /// Whether `index` is covered.
    pub fn contains(self, index: u64) -> bool {
        self.index <= index && index <= self.last()
    }

    /// Whether any index in `first..=last` is covered.
    pub fn overlaps(self, first: u64, last: u64) -> bool {
        self.index <= last && first <= self.last()
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x}..={:#x} (order {})",
            self.index,
            self.last(),
            self.order
        )
    }
}
