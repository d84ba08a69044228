//! The vigilfs engine: a journaled, checksummed filesystem that never loses a storage error.
//!
//! The engine is built in layers, each using only the ones below it:
//!
//! ```text
//! device ← format ← journal ← btree ← alloc / rmap
//!        ← inode records and extents ← pagecache ← writeback ← inode file operations ← fs
//! ```
//!
//! - [`device`]: block devices (image file, memory, power-cut simulation, a write-absorbing
//!   overlay) and the fault-injecting wrapper that lets tests and users fail any class of I/O;
//! - [`format`]: the on-disk format — checksummed structure headers, a bounds-checked codec,
//!   the superblock with its backups and the persistent error record;
//! - [`journal`]: the bcachefs-style journal — one-CAS reservations, pins and reclaim, group
//!   commit, a sticky error state, freeze, and crash-safe replay;
//! - [`btree`]: the b-trees — copy-on-write checksummed nodes in a bounded cache, journal
//!   pins and roots, recovery, and atomic multi-tree transactions;
//! - [`rmap`]: the reverse map from physical blocks to their owners (file data or b-tree
//!   nodes), and the `owners` query a media failure is attributed with;
//! - [`alloc`]: free space, derived from the reverse map, with deferred reuse and bad blocks;
//! - [`inode`]: the namespace — its records (inodes, directory entries, extents), the
//!   namespace operations (lookup, create, mkdir, link, unlink, rmdir, rename, symlink,
//!   readdir, setattr, the orphan list), each one atomic transaction; a file's block map
//!   (extents read, verified and changed with their rmap records); the file operations
//!   (read, write, truncate, fallocate, SEEK_DATA/SEEK_HOLE, errseq-exact fsync and
//!   syncfs); extended attributes; and Linux's permission rules as pure functions;
//! - `pagecache` (crate-private): the page cache on the xarray — large entries, DIRTY and
//!   WRITEBACK marks, fills through entry locks, eviction within a budget;
//! - `writeback` (crate-private): copy-on-write writeback in take-off, flight and landing,
//!   and the error policy that reports each failure of new data exactly once;
//! - [`metadata`]: opening journal, allocator and b-trees together, in the right order;
//! - [`fs`]: a mounted filesystem — the engine's whole API for any transport, with
//!   permission checks, handles, lookup counts, orphans, freeze/thaw, shutdown, the
//!   `errors=` policy, FS_ERROR events, the persistent error record and background
//!   writeback;
//! - [`mkfs`] and [`fsck`]: making a filesystem, and checking one without changing it.

pub mod alloc;
pub mod btree;
pub mod device;
pub mod failure;
pub mod format;
pub mod fs;
pub mod fsck;
pub mod inode;
pub mod journal;
pub mod metadata;
pub mod mkfs;
mod pagecache;
pub mod poison;
pub mod rmap;
pub mod scrub;
mod sync;
mod writeback;
