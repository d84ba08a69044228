//! The synchronisation primitives the crate is built on, in one place so the
//! loom model checker can swap its own in under `cfg(loom)`.
//!
//! Outside loom the tree lock is crossbeam's `ShardedLock`: each reader locks
//! one of several cache-line-sized shards chosen by thread, so readers on
//! different cores do not bounce a shared lock word between them (a plain
//! `RwLock` was measured at a fraction of single-thread throughput with two
//! readers, see bench/RESULTS-xarray.md). Writers pay by locking every shard.
//! Under loom the tree lock is loom's `RwLock`, which has the same semantics.

#[cfg(not(loom))]
pub(crate) use crossbeam_utils::sync::{
    ShardedLock as TreeLock, ShardedLockReadGuard as TreeReadGuard,
    ShardedLockWriteGuard as TreeWriteGuard,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU64, Ordering},
    Condvar, Mutex,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU64, Ordering},
    Condvar, Mutex, RwLock as TreeLock, RwLockReadGuard as TreeReadGuard,
    RwLockWriteGuard as TreeWriteGuard,
};
