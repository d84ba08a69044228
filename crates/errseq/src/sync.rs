//! The atomics this crate uses, swapped for loom's under `--cfg loom` so the
//! loom tests explore every interleaving of the real code.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU64;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicU64;
