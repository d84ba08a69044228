//! The errors the index reports. Every refusal is typed so the caller can
//! tell a programming mistake (bad alignment) from contention (a locked
//! entry) from a real overlap (a conflict naming the entry in the way).

use std::fmt;

use crate::span::{Span, MAX_ORDER};

/// Why an operation on the index was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A large entry must start at a multiple of its size.
    #[error("index {index:#x} is not a multiple of 2^{order}, so no entry of order {order} can start there")]
    Unaligned {
        /// The index asked for.
        index: u64,
        /// The order asked for.
        order: u8,
    },
    /// The order is above [`MAX_ORDER`].
    #[error("order {order} is above the largest supported order {MAX_ORDER}")]
    OrderTooLarge {
        /// The order asked for.
        order: u8,
    },
    /// Some of the indices asked for already belong to a different entry
    /// (larger, smaller, or overlapping at one end). Nothing was changed.
    #[error("cannot place an entry at {requested}: the entry at {existing} is in the way")]
    Conflict {
        /// The span the caller wanted.
        requested: Span,
        /// The first entry (lowest index) found in the way.
        existing: Span,
    },
    /// The entry is locked by a holder of an [`EntryGuard`](crate::EntryGuard);
    /// only that guard may replace or erase it.
    #[error("the entry at {existing} is locked; only its lock holder may replace or erase it")]
    Locked {
        /// The locked entry.
        existing: Span,
    },
}

/// A refused [`XArray::store`](crate::XArray::store): the reason and the
/// value, handed back so the caller does not lose it.
pub struct StoreError<T> {
    /// Why the store was refused.
    pub error: Error,
    /// The value that was not stored.
    pub value: T,
}

impl<T> StoreError<T> {
    /// Drops the value, keeping the reason.
    pub fn into_error(self) -> Error {
        self.error
    }
}

impl<T> fmt::Debug for StoreError<T> {
    // The value may be a large page; the reason is what a log needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for StoreError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<T> std::error::Error for StoreError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<StoreError<T>> for Error {
    fn from(refused: StoreError<T>) -> Self {
        refused.error
    }
}
