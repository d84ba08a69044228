//! The kernel's flags of a mount, as `mount(2)` with `MS_REMOUNT` changes
//! them: such a remount sets every per-mount flag at once, so one that
//! should change a single flag passes the others as they are now (read
//! with statvfs, whose `f_flag` mirrors them).
//!
//! When the engine's `errors=remount-ro` policy makes the filesystem
//! read-only, the kernel's mount is made read-only too, from a thread of
//! its own: the daemon refuses writes either way, but /proc/mounts,
//! `findmnt` and every tool reading them would otherwise still say `rw`.
//! The kernel allows it only once no file is open for writing (ext4 sets
//! its own flag from inside; a FUSE daemon has only mount(2)), so until
//! then it is retried. Only root may; a user's mount (through
//! fusermount3) keeps saying `rw`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use vigilfs::fs::{Filesystem, LifeState};

/// `statvfs`'s `ST_NOSYMFOLLOW` (not in the libc crate).
pub const ST_NOSYMFOLLOW: u64 = 0x2000;

/// The `mount(2)` flags of a remount that keeps a mount's flags as its
/// statvfs `f_flag` says they are now (`MS_REMOUNT` included).
pub fn remount_keeping(statvfs_flags: u64) -> libc::c_ulong {
    let kept = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
        (ST_NOSYMFOLLOW, libc::MS_NOSYMFOLLOW),
    ];
    let flags = kept
        .into_iter()
        .filter(|(statvfs_flag, _)| statvfs_flags & statvfs_flag != 0)
        .fold(libc::MS_REMOUNT, |flags, (_, mount_flag)| {
            flags | mount_flag
        });
    // statvfs has no flag for strictatime: it is neither noatime nor
    // relatime. It must be named, or a remount naming `MS_NODIRATIME` (an
    // atime flag) would leave the kernel's default, relatime.
    if statvfs_flags & (libc::ST_NOATIME | libc::ST_RELATIME) == 0 {
        flags | libc::MS_STRICTATIME
    } else {
        flags
    }
}

/// The atime flags of `mount(2)` (with `MS_NODIRATIME`): a remount naming
/// any of them replaces them all.
pub const ATIME_FLAGS: libc::c_ulong =
    libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME | libc::MS_NODIRATIME;

/// The `mount(2)` atime flags that say `atime` (with `MS_NODIRATIME`
/// unless `directory_atime`).
pub fn atime_flags(atime: vigilfs::fs::AtimeUpdates, directory_atime: bool) -> libc::c_ulong {
    let flags = match atime {
        vigilfs::fs::AtimeUpdates::Relative => libc::MS_RELATIME,
        vigilfs::fs::AtimeUpdates::Always => libc::MS_STRICTATIME,
        vigilfs::fs::AtimeUpdates::Never => libc::MS_NOATIME,
    };
    if directory_atime {
        flags
    } else {
        flags | libc::MS_NODIRATIME
    }
}

/// Gives the mount on `path` the flags `flags` among those in `mask`,
/// keeping the others as they are; does nothing when they already are.
/// Only root may.
pub fn set_flags(path: &Path, mask: libc::c_ulong, flags: libc::c_ulong) -> io::Result<()> {
    let kept = remount_keeping(statvfs_flags(path)?);
    let wanted = (kept & !mask) | (flags & mask);
    if wanted == kept {
        return Ok(());
    }
    remount(path, wanted)
}

/// The statvfs `f_flag` of the filesystem mounted on `path`.
pub fn statvfs_flags(path: &Path) -> io::Result<u64> {
    let path = c_path(path)?;
    // SAFETY: statvfs is plain old data; all zeros is a valid value.
    let mut status: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string, and `status` writable for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut status) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(status.f_flag)
}

/// Remounts the mount on `path` with `flags` (see [`remount_keeping`]).
pub fn remount(path: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: a valid C string; the other pointers may be null for a
    // remount.
    let result = unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holding a NUL byte"))
}

/// How often a read-only remount refused as busy is tried again.
const BUSY_RETRY: Duration = Duration::from_millis(500);

/// Makes the kernel's mount on `mountpoint` (device number `device`)
/// read-only whenever `engine`'s errors policy makes the filesystem so.
/// The remount runs on its own thread: the listener is called where the
/// failure acted, perhaps a request's thread, and the remount asks the
/// mount itself (statvfs). The kernel refuses it (EBUSY) while a file is
/// open for writing, so it is tried again until the last writer closed,
/// for as long as this engine serves this mount read-only.
pub(crate) fn follow_read_only(engine: &Arc<Filesystem>, mountpoint: &Path, device: u64) {
    let weak: Weak<Filesystem> = Arc::downgrade(engine);
    let mountpoint: Arc<PathBuf> = Arc::new(mountpoint.to_path_buf());
    let listener = move || {
        let engine = Weak::clone(&weak);
        let mountpoint = Arc::clone(&mountpoint);
        let spawned = std::thread::Builder::new()
            .name("vigilfs-fuse-ro".into())
            .spawn(move || remount_read_only(&engine, &mountpoint, device));
        if let Err(error) = spawned {
            eprintln!("vigilfs: errors=remount-ro: the kernel's mount still says rw: {error}");
        }
    };
    engine.set_read_only_listener(Some(Arc::new(listener)));
}

/// See [`follow_read_only`].
fn remount_read_only(engine: &Weak<Filesystem>, mountpoint: &Path, device: u64) {
    loop {
        // The engine gone or no longer read-only (a power cut replaced
        // it), or another mount in its place: nothing of this to follow.
        let serving = engine
            .upgrade()
            .is_some_and(|engine| matches!(engine.status().state, LifeState::ReadOnly(_)));
        let same_mount = std::fs::metadata(mountpoint).is_ok_and(|meta| meta.dev() == device);
        if !serving || !same_mount {
            return;
        }
        let made = statvfs_flags(mountpoint)
            .and_then(|flags| remount(mountpoint, remount_keeping(flags) | libc::MS_RDONLY));
        match made {
            Ok(()) => return,
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(BUSY_RETRY);
            }
            Err(error) => {
                eprintln!(
                    "vigilfs: errors=remount-ro: the filesystem is read-only, but the \
                     kernel's mount on {} still says rw: remount failed: {error}",
                    mountpoint.display()
                );
                return;
            }
        }
    }
}
