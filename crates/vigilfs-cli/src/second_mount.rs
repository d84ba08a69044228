//! A second mount of a mounted image: the same filesystem at one more
//! mount point, as Linux gives for a block device mounted twice (one
//! superblock, seen in two places).
//!
//! One process serves an image (it holds the image's lock, its journal and
//! its cache); a second server on the same image would corrupt it. So a
//! mount of an image already mounted elsewhere is answered with a bind
//! mount of the first mount point: no new process, the same files, the
//! same errors and events. `umount` of either mount point removes only
//! that one; the server stops when the last is gone (the kernel keeps the
//! FUSE connection while any mount of it remains). Control commands given
//! the second mount point reach the server by a second name of its control
//! socket ([`crate::control::client::alias`]), which outlives the first
//! mount point.
//!
//! The second mount takes the first's options: it may ask for `ro` (a
//! read-only view, as `mount -o bind,ro` gives) and for nothing else that
//! would change the filesystem, which is refused with a message rather
//! than ignored.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::failure::Failure;
use crate::mount_options::MountSettings;

/// Whether `mountpoint` shows the filesystem mounted on `existing`
/// already (a second mount point of it, or a bind made by hand).
fn shows_the_filesystem_at(existing: &Path, mountpoint: &Path) -> bool {
    let Ok(mounts) = crate::mountinfo::Mounts::read() else {
        return false;
    };
    match (mounts.topmost_at(existing), mounts.topmost_at(mountpoint)) {
        (Some(first), Some(here)) => first.device == here.device && first.fstype == here.fstype,
        _ => false,
    }
}

/// Makes `mountpoint` show the filesystem mounted on `existing` (a bind
/// mount, read-only if `settings` say `ro`). `image` names the image in
/// messages; `quiet` (a mount(8) helper) prints nothing on success.
pub fn share(
    image: &Path,
    existing: &Path,
    mountpoint: &Path,
    settings: &MountSettings,
    quiet: bool,
) -> Result<(), Failure> {
    if shows_the_filesystem_at(existing, mountpoint) {
        // A bind of it onto itself would stack one more mount there
        // (review 55: exit 0, two mounts).
        return Err(Failure::mount_refused(format!(
            "{} is already mounted on {}",
            image.display(),
            mountpoint.display()
        )));
    }
    let asked = MountSettings {
        read_only: false,
        allow_other: None,
        ..settings.clone()
    };
    if asked != MountSettings::default() {
        return Err(Failure::mount_refused(format!(
            "{} is mounted on {}; another mount point for it shares that mount and its options \
             (only ro may be asked): unmount it first to mount it with other options",
            image.display(),
            existing.display()
        )));
    }
    if let Some(error) = served_by_no_one(existing) {
        return Err(Failure::mount_refused(format!(
            "{} is mounted on {}, but the FUSE daemon serving it is gone ({error}): unmount it \
             (umount {}) and mount again",
            image.display(),
            existing.display(),
            existing.display()
        )));
    }
    let path = |path: &Path| {
        CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Failure::usage(format!("{}: a NUL byte in the path", path.display())))
    };
    let (source, target) = (path(existing)?, path(mountpoint)?);
    bind(&source, &target, libc::MS_BIND).map_err(|error| {
        let why = if error.raw_os_error() == Some(libc::EPERM) {
            "only root may make the bind mount a second mount point needs".to_string()
        } else {
            error.to_string()
        };
        Failure::operational(format!(
            "{} is mounted on {}; showing it on {} too failed: {why}",
            image.display(),
            existing.display(),
            mountpoint.display()
        ))
    })?;
    if settings.read_only {
        let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
        if let Err(error) = bind(&source, &target, flags) {
            // Never leave a writable view where a read-only one was asked.
            let _ = detach(&target);
            return Err(Failure::operational(format!(
                "making {} read-only failed: {error}",
                mountpoint.display()
            )));
        }
    }
    // Only a shortcut: control commands on the second mount point find
    // the server without it, by asking each socket which mount it serves.
    let _ = crate::control::client::alias(existing, mountpoint);
    if !quiet {
        // Read-write was asked (rw is the default) of a filesystem the
        // first mount serves read-only: say so, not only at the first EROFS.
        let read_only_too = !settings.read_only
            && vigilfs_fuse::statvfs_flags(existing)
                .is_ok_and(|flags| flags & libc::ST_RDONLY != 0);
        let read_only_note = if read_only_too {
            ", read-only as it is there (`mount -o remount,rw` of each mount point makes it \
             writable)"
                .to_string()
        } else {
            String::new()
        };
        eprintln!(
            "vigilfs: {} is already mounted on {}: {} now shows the same filesystem{read_only_note} \
             (umount removes only that mount point)",
            image.display(),
            existing.display(),
            mountpoint.display()
        );
    }
    Ok(())
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte"))
}

/// Detaches the mount on top at `target` (as `umount -l`).
pub fn detach_top(target: &Path) -> std::io::Result<()> {
    detach(&c_path(target)?)
}

/// Makes `target` (its old view detached) show `primary`'s directory
/// `root`, with the per-mount `flags` (`MS_RDONLY`, `MS_NOSUID`, the atime
/// flags...) the old view had: what the crash lab does for every other
/// mount point of a filesystem whose mount a power cut replaced (the old
/// view would fail every request while status called the mount running).
pub fn bind_view(
    primary: &Path,
    root: &Path,
    target: &Path,
    flags: libc::c_ulong,
) -> std::io::Result<()> {
    let source = c_path(&primary.join(root.strip_prefix("/").unwrap_or(root)))?;
    let target = c_path(target)?;
    bind(&source, &target, libc::MS_BIND)?;
    if let Err(error) = bind(&source, &target, libc::MS_REMOUNT | libc::MS_BIND | flags) {
        // Never leave a view with fewer restrictions than it had.
        let _ = detach(&target);
        return Err(error);
    }
    Ok(())
}

/// The error a FUSE mount at `mountpoint` whose daemon died (killed,
/// errors=panic) answers with, ENOTCONN: it stays attached until
/// unmounted. A stat may still be served from the kernel's cache, but
/// opening the directory always asks the daemon. `None` for anything else.
pub fn served_by_no_one(mountpoint: &Path) -> Option<std::io::Error> {
    let probe = std::fs::metadata(mountpoint).and_then(|_| std::fs::read_dir(mountpoint).map(drop));
    probe
        .err()
        .filter(|error| error.raw_os_error() == Some(libc::ENOTCONN))
}

fn bind(source: &CString, target: &CString, flags: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: both strings are NUL-terminated and live across the call;
    // a bind mount takes no filesystem type and no data.
    let result = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn detach(target: &CString) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path that lives across the call.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
