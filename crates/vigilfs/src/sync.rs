//! The atomics the engine's lock-free parts use, swapped for loom's under
//! `--cfg loom` so the loom tests explore every interleaving of the real
//! code.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};
