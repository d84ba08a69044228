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
//!
//! # Using the engine
//!
//! A device is formatted once with [`mkfs::make_filesystem`], then mounted
//! with [`fs::Filesystem::mount`]; operations take inode numbers, open-file
//! handles and the [`inode::Caller`] whose permissions they check, and every
//! error has one errno ([`fs::FsError::errno`]). Unmount consumes the
//! filesystem; dropping it instead is a crash (the next mount replays the
//! journal). An inode whose last name is removed lives until its last
//! handle is released; lookups hold it too only for a caller that counts
//! them and forgets them, as a kernel transport does
//! ([`fs::Filesystem::let_lookups_hold_inodes`]).
//!
//! ```
//! use std::sync::Arc;
//! use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
//! use vigilfs::fs::{Filesystem, MountOptions, OpenFlags};
//! use vigilfs::inode::{Caller, ROOT_INO};
//! use vigilfs::mkfs::{make_filesystem, MkfsOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An image file works the same: `vigilfs::device::FileDevice`.
//! let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
//! make_filesystem(device.clone(), &MkfsOptions::default())?;
//! let fs = Filesystem::mount(device, MountOptions::default())?;
//! let me = Caller::root();
//! let (attr, handle) =
//!     fs.create(ROOT_INO, b"hello", 0o644, OpenFlags::from_libc(libc::O_RDWR), &me)?;
//! fs.write(handle, 0, b"hello, disk", &me)?;
//! // Durable, or the error that kept it from being so, exactly once.
//! fs.fsync(handle, false)?;
//! assert_eq!(fs.read(handle, 0, 4096)?, b"hello, disk");
//! fs.release(handle)?;
//! assert_eq!(fs.lookup(ROOT_INO, b"hello", &me)?.ino, attr.ino);
//! fs.unmount()?;
//! # Ok(())
//! # }
//! ```

pub mod alloc;
pub mod btree;
pub mod device;
pub mod failure;
pub mod format;
pub mod fs;
pub mod fsck;
pub mod inode;
pub mod journal;
pub mod lost_data;
pub mod metadata;
pub mod mkfs;
mod pagecache;
pub mod poison;
pub mod rmap;
pub mod scrub;
mod sync;
mod writeback;
