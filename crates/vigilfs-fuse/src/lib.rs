//! The FUSE adapter of vigilfs: serves a mounted engine
//! (`vigilfs::fs::Filesystem`) to the Linux kernel through `/dev/fuse`,
//! with fuser 0.18 (no libfuse: as root it mounts with `mount(2)`, otherwise
//! through the setuid `fusermount3`).
//!
//! The whole public API is [`mount`], [`MountConfig`] and [`Mounted`]:
//!
//! ```no_run
//! # fn example(filesystem: std::sync::Arc<vigilfs::fs::Filesystem>) -> std::io::Result<()> {
//! use std::sync::Arc;
//! let mounted = vigilfs_fuse::mount(
//!     Arc::clone(&filesystem),
//!     std::path::Path::new("/mnt/vigil"),
//!     &vigilfs_fuse::MountConfig::default(),
//! )?;
//! mounted.wait()?; // until `umount /mnt/vigil` (or `fusermount3 -u`)
//! // The session is over and holds no reference to the engine any more:
//! // the caller unmounts the engine (writes back, marks it clean).
//! if let Ok(filesystem) = Arc::try_unwrap(filesystem) {
//!     filesystem.unmount().map_err(std::io::Error::other)?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Who does what
//!
//! * The caller mounts the engine (`Filesystem::mount`) and hands an `Arc`
//!   of it to [`mount`], which mounts the FUSE filesystem, starts the
//!   session threads and returns once the mount answers.
//! * The session ends when the kernel ends it: an unmount from outside
//!   (`umount`, `fusermount3 -u`; [`Mounted::wait`] returns) or one asked by
//!   [`Mounted::unmount`]. When either returns, the session threads have
//!   stopped and dropped their `Arc` of the engine.
//! * Then the caller unmounts the engine (`Filesystem::unmount`): the
//!   adapter never does, because only the caller knows whether others
//!   (a control plane) still hold it. A process that exits without it leaves
//!   the image dirty, and the next mount recovers it from the journal.
//!
//! Files: `adapter/` translates requests (and holds the caching and
//! invalidation choices, and the panic guard); `lanes.rs` keeps requests
//! that may wait at the engine's write gate (a freeze) from taking every
//! session thread; `convert.rs` converts attributes, times, credentials
//! and flag words; `session.rs` mounts, waits and unmounts;
//! `kernel_flags.rs` remounts keeping the kernel's per-mount flags, and
//! makes the kernel's mount read-only when errors=remount-ro acts.

mod adapter;
mod convert;
mod kernel_flags;
mod lanes;
mod session;

pub use kernel_flags::{
    atime_flags, remount, remount_keeping, set_flags, statvfs_flags, ATIME_FLAGS, ST_NOSYMFOLLOW,
};
pub use session::{mount, MountConfig, MountFlags, Mounted, Restarter};
