//! Lock acquisition for this crate's mutexes.
//!
//! Poisoning is ignored on purpose: the error path must never panic because
//! some unrelated thread panicked while holding a lock. That is sound here
//! because no critical section in this crate can leave its data half-updated
//! by panicking: they call no user code and do not allocate, and the only
//! panics in them are debug assertions of invariants that would already be
//! broken.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the data even if a previous holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
