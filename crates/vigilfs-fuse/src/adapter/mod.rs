//! The fuser `Filesystem` implementation: each kernel request is
//! translated to one call of the engine (`vigilfs::fs::Filesystem`) and
//! its outcome to one reply. Nothing is decided here that the engine
//! decides: permissions, errseq reporting, handles and directory offsets
//! are all the engine's.
//!
//! Invariants:
//! * Every error reply is `FsError::errno()` of the engine's error — the one
//!   errno mapping. The adapter makes an errno of its own only where the
//!   kernel ABI refuses a request before any engine call (unknown flag
//!   bits, `lseek` whence values the kernel handles itself, a getxattr or
//!   listxattr buffer too small: `ERANGE`, as the syscalls do; an ioctl
//!   it does not know, `ENOTTY`, or a shutdown by anyone but root,
//!   `EPERM`, as the kernel's filesystems answer).
//! * Every request gets exactly one reply. Only a handler that panics
//!   leaves its reply unsent: every handler runs inside `guarded`, which
//!   catches the panic at this boundary, so the reply is dropped while
//!   unwinding and fuser answers a dropped reply with `EIO`; the session
//!   thread, and the mount, go on serving.
//! * A request that may wait at the engine's write gate (writes, opens for
//!   writing, namespace and attribute changes, xattr changes, fallocate,
//!   fsync, flush, release) runs where `lanes` says: never on the last
//!   free session thread, and on a waiting pool while the filesystem is
//!   frozen, so reads, lookups and stat are answered however many writers
//!   wait for a thaw.
//! * Lookup counts: every reply that hands the kernel an entry (lookup,
//!   mknod, mkdir, symlink, link, create, and readdirplus entries other
//!   than `.` and `..`) matches one lookup counted by the engine, and
//!   `forget` gives them back. readdirplus entries that did not fit in the
//!   kernel's buffer are forgotten again at once: the kernel never saw
//!   them.
//! * fsync and flush reply with the engine's result for that handle: the
//!   kernel opens one FUSE handle per open file description, so errseq's
//!   "each file description hears of an error once" holds through the
//!   kernel. `flush` (each `close(2)`) reports nothing: the engine's
//!   `flush` keeps errors for fsync, as Linux local filesystems do. So
//!   opens ask the kernel not to send it (`FOPEN_NOFLUSH`) unless a fault
//!   rule aims at close (`Replies::open_flags`).
//!
//! Caching: the kernel caches entries and attributes for the TTLs given
//! at mount (60 s by default), and keeps a file's pages across opens
//! (`FOPEN_KEEP_CACHE`, unless turned off; bench/RESULTS.md has the
//! measurement that chose it). Every change goes through this mount's
//! kernel, which updates or invalidates its own cache for the changes it
//! makes (it refreshes the size and times after writes, drops the page
//! cache range of a hole punch, re-reads attributes after setattr), so no
//! other party can make the cache stale. One exception: the set-id bits
//! the engine drops itself on a write, truncate or fallocate by another
//! user (no reply carries them); for those the session forwards the
//! engine's attribute listener to a `Notifier`
//! (`session::forward_attribute_changes`). Invalidations are sent from
//! their own thread, never from inside a request handler: the kernel may
//! wait for this very request while processing the notification, which
//! deadlocks the mount. Failed lookups are not cached (no negative entries
//! with a TTL): caching `ENOENT` would save a round trip for names looked
//! up and missing (shell `PATH` searches), but would outlive a name made
//! through the engine by anything but this kernel (a control plane, a
//! future second transport); a lookup of a missing name is cheap.
//!
//! Credentials: each request that the engine checks permissions for reads
//! the caller's supplementary groups from `/proc/<pid>/status` (the kernel
//! sends only uid, gid and pid). That is one small file read per such
//! request; cache it per pid only if a benchmark says so (a pid can change
//! its groups, and be reused).
//!
//! The kernel's writeback cache stays off (see `init`): `write(2)` is
//! synchronous to this daemon, so the engine has the data (in its own page
//! cache) before `write(2)` returns, and an `fsync(2)` that follows finds it
//! there and reports exactly what the engine's errseq says.
//!
//! Here: what the adapter holds and asks the kernel for at `init`, the
//! guard and the lanes every handler runs in, and the replies and errno
//! mapping the handlers share. The handlers themselves, one per kernel
//! request, are in `requests`.

mod requests;

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use fserror::{ErrorReport, Subtypes};

use fuser::{
    Errno, FopenFlags, Generation, InitFlags, OpenFlags as FuseOpenFlags, ReplyAttr, ReplyEmpty,
    ReplyEntry, ReplyWrite, ReplyXattr, Request, WriteFlags,
};
use vigilfs::fs::faults::Operation;
use vigilfs::fs::{Attr, Filesystem, FsError};
use vigilfs::inode::Caller;

use crate::convert;
use crate::lanes::Lanes;

/// `FS_IOC_SHUTDOWN` (`_IOR('X', 125, __u32)`, XFS's `XFS_IOC_GOINGDOWN`):
/// what `godown` and `xfs_io -c shutdown` send.
const FS_IOC_SHUTDOWN: u32 = 0x8004_587d;

/// The inode-flag ioctls (`chattr`, `lsattr`, `xfs_io -c chattr`): the
/// kernel turns its `fileattr` calls into these (`_IOR('f', 1, long)`,
/// `_IOW('f', 2, long)`, their 32-bit forms, and `FS_IOC_FS[GS]ETXATTR`
/// with a `struct fsxattr`), always with a 4-byte flags value or the
/// 28-byte structure.
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// The largest write the kernel is asked to send in one request, when it
/// supports `FUSE_MAX_PAGES` (256 pages of 4 KiB: the kernel's default
/// limit).
const MAX_WRITE_BYTES: u32 = 1 << 20;
/// The largest write without `FUSE_MAX_PAGES` (32 pages).
const MAX_WRITE_BYTES_WITHOUT_MAX_PAGES: u32 = 128 << 10;

/// Entries asked of the engine per readdir request. The kernel's buffer
/// decides how many are sent; the rest are asked again from the offset of
/// the last one sent (engine offsets stay valid for the handle).
const READDIR_BATCH: usize = 128;
/// Entries asked per readdirplus request (each one a lookup and an
/// attribute read, so fewer: about as many as fit in a 4 KiB buffer).
const READDIR_PLUS_BATCH: usize = 32;

/// The open flag Linux sets on execve's open of the program
/// (`__FMODE_EXEC`, which FUSE passes on in the open request's flags).
const FMODE_EXEC: i32 = 0x20;

/// What the adapter asks the kernel for at `init`, when it offers them:
/// * readdirplus (`FUSE_DO_READDIRPLUS`, adaptive with
///   `FUSE_READDIRPLUS_AUTO`): listing a directory also primes the entry
///   and attribute caches;
/// * `FUSE_HANDLE_KILLPRIV`: the engine clears set-user-id and
///   set-group-id on write and chown itself; without it the kernel would
///   send a chmod on behalf of the writer, which the engine (rightly)
///   refuses to a writer who is not the owner;
/// * `FUSE_HANDLE_KILLPRIV_V2` as well: it makes the kernel mark the
///   superblock `SB_NOSEC`, so once it has seen an inode with no set-id
///   bit and no `security.capability` it stops asking (a GETXATTR round
///   trip before every write: one request in three of a write + fsync,
///   bench/RESULTS.md). Setting either again clears the mark. With both
///   flags the kernel still removes a file capability itself (its
///   GETXATTR and REMOVEXATTR, as the writer) and leaves the set-id bits
///   to the engine, which clears them on every data change by a caller
///   other than root (the kernel's own `KILL_SUIDGID` hints say the same);
/// * `FUSE_ATOMIC_O_TRUNC`: `O_TRUNC` is done by the engine's open in the
///   same call, not by a separate setattr;
/// * `FUSE_PARALLEL_DIROPS`: lookups and readdirs of one directory may run
///   concurrently (the engine is thread-safe);
/// * `FUSE_POSIX_ACL`: the kernel checks access with the POSIX ACLs it
///   reads as `system.posix_acl_*` attributes (and caches); the engine
///   keeps them (mode in step with the access ACL, inheritance, chmod) and
///   applies them in its own checks;
/// * `FUSE_DONT_MASK`: creates come with the mode unmasked and the umask
///   beside it, since a directory's default ACL, not the umask, decides a
///   new inode's mode when it has one (the engine applies the umask
///   otherwise);
/// * `FUSE_EXPORT_SUPPORT`: file handles (`name_to_handle_at`,
///   `open_by_handle_at`, NFS export) stay valid after the kernel drops
///   the inode from its cache: it looks the number up again as `.` (and a
///   directory's parent as `..`), which the engine answers by number, and
///   compares the generation, so a handle of a deleted file is `ESTALE`.
///
/// Never `FUSE_WRITEBACK_CACHE`: the engine owns the page cache, and with
/// the kernel's writeback cache on, write errors would surface in the
/// kernel's writeback rather than in the engine's errseq per handle.
fn wanted_capabilities() -> InitFlags {
    InitFlags::FUSE_DO_READDIRPLUS
        | InitFlags::FUSE_READDIRPLUS_AUTO
        | InitFlags::FUSE_HANDLE_KILLPRIV
        | InitFlags::FUSE_HANDLE_KILLPRIV_V2
        | InitFlags::FUSE_ATOMIC_O_TRUNC
        | InitFlags::FUSE_PARALLEL_DIROPS
        | InitFlags::FUSE_EXPORT_SUPPORT
        | InitFlags::FUSE_POSIX_ACL
        | InitFlags::FUSE_DONT_MASK
}

/// With the `test-hooks` feature: a lookup of this name panics.
#[cfg(feature = "test-hooks")]
pub const TEST_PANIC_NAME: &str = ".vigilfs-test-panic";

/// Serves one engine to the kernel.
pub(crate) struct Adapter {
    filesystem: Arc<Filesystem>,
    replies: Replies,
    lanes: Lanes,
}

/// How entries, attributes and opens are answered: copied into the jobs
/// handed to the waiting pool.
#[derive(Debug, Clone, Copy)]
struct Replies {
    entry_ttl: Duration,
    attr_ttl: Duration,
    /// What open and create reply besides `FOPEN_NOFLUSH`:
    /// `FOPEN_KEEP_CACHE` or nothing.
    open_flags: FopenFlags,
}

/// The errno the kernel gets for `error`. One the kernel would refuse
/// (512 or more, or not positive) becomes EIO: a refused reply leaves the
/// caller waiting for good. So does ENOSYS, which the kernel takes for
/// "no such operation here": it would stop sending that operation for the
/// rest of the mount (fsync would then succeed without asking).
fn errno(error: &FsError) -> Errno {
    let errno = error.errno();
    if errno != libc::ENOSYS && (1..=vigilfs::device::Errno::MAX_DELIVERABLE).contains(&errno) {
        Errno::from_i32(errno)
    } else {
        Errno::EIO
    }
}

fn caller(request: &Request) -> Caller {
    convert::caller(request.uid(), request.gid(), request.pid())
}

/// The caller of a create, mknod or mkdir, with the umask the request
/// carries (with `FUSE_DONT_MASK` the kernel leaves it to the engine).
fn creator(request: &Request, umask: u32) -> Caller {
    Caller {
        umask: umask & 0o777,
        ..caller(request)
    }
}

fn name(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

fn generation(attr: &Attr) -> Generation {
    Generation(attr.record.generation)
}

/// Runs one request's handler; a panic in it stops here. The reply the
/// handler owned is dropped unsent while unwinding, and fuser 0.18 answers
/// a dropped reply with `EIO` (its `ReplyRaw` drop): that request fails,
/// the session thread lives on. The panic is logged on stderr and
/// announced as an FS_ERROR event (`EIO`).
fn guarded(filesystem: &Filesystem, operation: &'static str, handler: impl FnOnce()) {
    let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(handler)) else {
        return;
    };
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    // Written without eprintln!, which would panic again if stderr is gone.
    let _ = writeln!(
        io::stderr().lock(),
        "vigilfs-fuse: the {operation} request handler panicked ({message}); \
         that request failed with EIO and the mount goes on serving"
    );
    if let Some(eio) = fserror::Errno::new(libc::EIO) {
        filesystem
            .events()
            .emit(&ErrorReport::new(eio, Subtypes::METADATA));
    }
}

impl Adapter {
    pub(crate) fn new(
        filesystem: Arc<Filesystem>,
        threads: usize,
        entry_ttl: Duration,
        attr_ttl: Duration,
        keep_cache: bool,
    ) -> Adapter {
        // The kernel refers to inodes by its lookups: an unlinked inode it
        // still refers to must stay, as on Linux.
        filesystem.let_lookups_hold_inodes();
        Adapter {
            filesystem,
            replies: Replies {
                entry_ttl,
                attr_ttl,
                open_flags: if keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                },
            },
            lanes: Lanes::new(threads),
        }
    }

    /// Runs a handler that never waits at the write gate, guarded.
    fn guard(&self, operation: &'static str, handler: impl FnOnce()) {
        guarded(&self.filesystem, operation, handler);
    }

    /// Runs a handler that may wait at the write gate (see `lanes`): here
    /// if the session thread may, else on the waiting pool. Guarded
    /// either way.
    fn gated(&self, operation: &'static str, job: impl FnOnce(&Filesystem) + Send + 'static) {
        match self.lanes.inline_slot(self.filesystem.is_frozen()) {
            Some(_slot) => guarded(&self.filesystem, operation, || job(&self.filesystem)),
            None => {
                let filesystem = Arc::clone(&self.filesystem);
                self.lanes.hand_off(Box::new(move || {
                    guarded(&filesystem, operation, || job(&filesystem));
                }));
            }
        }
    }
}

impl Replies {
    /// The flags an open or create replies now. `FOPEN_NOFLUSH` spares
    /// the kernel's FLUSH round trip at every `close(2)`, unless a fault
    /// rule aims at close: FLUSH is the only request whose error reaches
    /// close(2), and the engine's flush does nothing else (errors wait for
    /// fsync, locks are the kernel's own). So a close rule reaches files
    /// opened after it was set.
    fn open_flags(self, filesystem: &Filesystem) -> FopenFlags {
        if filesystem.operation_is_targeted(Operation::Close) {
            self.open_flags
        } else {
            self.open_flags | FopenFlags::FOPEN_NOFLUSH
        }
    }

    /// [`Replies::open_flags`] for an open of `ino`, which may have pages
    /// cached: without `FOPEN_KEEP_CACHE` when a read would update its
    /// access time, so that the next read reaches the engine, which
    /// updates it (the kernel leaves access times to FUSE filesystems, and
    /// a read its cache answers tells nobody). Under `relatime` that is
    /// once after each change and once a day; the cache is kept again
    /// from the open after.
    fn open_flags_of(self, filesystem: &Filesystem, ino: u64) -> FopenFlags {
        let flags = self.open_flags(filesystem);
        if flags.contains(FopenFlags::FOPEN_KEEP_CACHE) && filesystem.read_updates_access_time(ino)
        {
            flags - FopenFlags::FOPEN_KEEP_CACHE
        } else {
            flags
        }
    }

    fn entry(self, reply: ReplyEntry, result: Result<Attr, FsError>) {
        match result {
            Ok(attr) => reply.entry_with_ttls(
                &self.attr_ttl,
                &self.entry_ttl,
                &convert::file_attr(&attr),
                generation(&attr),
            ),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn attr(self, reply: ReplyAttr, result: Result<Attr, FsError>) {
        match result {
            Ok(attr) => reply.attr(&self.attr_ttl, &convert::file_attr(&attr)),
            Err(error) => reply.error(errno(&error)),
        }
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(error) => reply.error(errno(&error)),
    }
}

/// Replies to getxattr or listxattr: the size when asked for it (`size`
/// 0), the bytes when they fit, else `ERANGE`.
fn reply_xattr_bytes(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    let Ok(length) = u32::try_from(bytes.len()) else {
        reply.error(Errno::E2BIG);
        return;
    };
    if size == 0 {
        reply.size(length);
    } else if length > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

/// Sector that `O_DIRECT` I/O must be aligned to, as on a disk with
/// 512-byte logical sectors.
const DIRECT_IO_ALIGNMENT: u64 = 512;

/// Whether a read or write through a descriptor in `O_DIRECT` mode (the
/// request carries its flags as they are now, after any `fcntl`) is not
/// aligned to [`DIRECT_IO_ALIGNMENT`] in offset or length: Linux's disk
/// filesystems refuse it with EINVAL, and a program tested here must meet
/// the refusal it will meet there. (The buffer's address, which they check
/// too, never reaches a FUSE server.)
fn direct_io_misaligned(flags: FuseOpenFlags, offset: u64, length: u64) -> bool {
    flags.0 & libc::O_DIRECT != 0
        && (offset % DIRECT_IO_ALIGNMENT != 0 || length % DIRECT_IO_ALIGNMENT != 0)
}

/// The engine's write and its reply (shared by the two lanes of `write`);
/// an `O_DIRECT` descriptor's data is written through to the device.
fn write_and_reply(
    filesystem: &Filesystem,
    write: (u64, u64, WriteFlags, bool),
    data: &[u8],
    caller: &Caller,
    reply: ReplyWrite,
) {
    let (handle, offset, flags, direct) = write;
    if flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
        write_back_and_reply(filesystem, (handle, offset), data, caller, reply);
        return;
    }
    let written = if direct {
        filesystem.write_direct(handle, offset, data, caller)
    } else {
        filesystem.write_at(handle, offset, data, caller)
    };
    match written {
        // A request carries at most max_write bytes, so the count fits.
        Ok(written) => reply.written(u32::try_from(written).unwrap_or(u32::MAX)),
        Err(error) => reply.error(errno(&error)),
    }
}

/// The kernel's own write-back of a shared mapping's pages. No write call
/// waits for this answer, and the kernel takes a short count as done (the
/// pages are marked clean): what the engine does not take is refused, with
/// the error a further write returns (as a `write(2)` caller would learn
/// it), recorded as lost, and reported to the next msync or fsync. The
/// pages stay in the kernel's cache: a mapping is shared memory too.
fn write_back_and_reply(
    filesystem: &Filesystem,
    (handle, offset): (u64, u64),
    data: &[u8],
    caller: &Caller,
    reply: ReplyWrite,
) {
    let mut taken = 0;
    let refusal = loop {
        if taken == data.len() {
            break None;
        }
        match filesystem.write_back_cached(handle, offset + taken as u64, &data[taken..], caller) {
            Ok(0) => break Some(Errno::EIO),
            Ok(count) => taken += count,
            Err(error) => break Some(errno(&error)),
        }
    };
    match refusal {
        // A request carries at most max_write bytes, so the count fits.
        None => reply.written(u32::try_from(taken).unwrap_or(u32::MAX)),
        Some(errno) => {
            let (at, left) = (offset + taken as u64, (data.len() - taken) as u64);
            filesystem.cache_write_refused(handle, at, left, errno.code());
            reply.error(errno);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injected(errno_number: i32) -> FsError {
        FsError::Injected {
            rule: 1,
            operation: "fsync",
            errno: errno_number,
        }
    }

    #[test]
    fn errors_the_kernel_would_misread_or_refuse_reach_it_as_eio() {
        assert_eq!(errno(&injected(libc::ENOSPC)), Errno::ENOSPC);
        assert_eq!(errno(&injected(511)), Errno::from_i32(511));
        for misread in [libc::ENOSYS, 512, 0, -5] {
            assert_eq!(errno(&injected(misread)), Errno::EIO, "errno {misread}");
        }
    }
}
