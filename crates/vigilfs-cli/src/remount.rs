//! `mount -o remount,OPTIONS DIR` of a vigilfs mount: mount(8) runs the
//! helper with `remount` among the options, and the helper changes the
//! mount in place instead of starting another daemon.
//!
//! What can change is what the kernel keeps for the mount: `ro`/`rw` (the
//! kernel refuses writes on a read-only FUSE superblock; the daemon keeps
//! serving, and what it already holds dirty is still written back), and
//! the per-mount flags `nosuid`/`suid`, `nodev`/`dev`, `noexec`/`exec` and
//! the atime family. Flags not named keep their current value (read with
//! statvfs), since `mount(2)` with `MS_REMOUNT` sets all of them.
//! Options the daemon took at mount (`errors=`, `cache=`, `dirty=`, ...)
//! cannot change on a remount yet: asking is an error saying so. Options
//! mount(8) repeats from the mount table (`user_id=`, `group_id=`,
//! `default_permissions`, `allow_other`, `defaults`, `fsname=`,
//! `subtype=`) are accepted and change nothing.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::failure::Failure;
use crate::mountinfo::Mounts;

/// Whether the `-o` arguments ask for a remount.
pub fn is_remount(options: &[String]) -> bool {
    options
        .iter()
        .flat_map(|argument| argument.split(','))
        .any(|option| option == "remount")
}

/// The `mount(2)` flags for a remount: `current` (statvfs's `f_flag`)
/// changed by `options`.
fn remount_flags(current: u64, options: &[String]) -> Result<libc::c_ulong, Failure> {
    let kept = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    let mut flags = libc::MS_REMOUNT;
    for (statvfs_flag, mount_flag) in kept {
        if current & statvfs_flag != 0 {
            flags |= mount_flag;
        }
    }
    let atime = libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME;
    for option in options.iter().flat_map(|argument| argument.split(',')) {
        let key = option.split_once('=').map_or(option, |(key, _)| key);
        match option {
            "remount" | "" => {}
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "suid" => flags &= !libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "dev" => flags &= !libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "exec" => flags &= !libc::MS_NOEXEC,
            "noatime" => flags = (flags & !atime) | libc::MS_NOATIME,
            "relatime" | "atime" | "nostrictatime" => flags = (flags & !atime) | libc::MS_RELATIME,
            "strictatime" | "norelatime" => flags = (flags & !atime) | libc::MS_STRICTATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "diratime" => flags &= !libc::MS_NODIRATIME,
            _ if matches!(
                key,
                "user_id"
                    | "group_id"
                    | "default_permissions"
                    | "allow_other"
                    | "defaults"
                    | "fsname"
                    | "subtype"
                    | "auto"
                    | "noauto"
                    | "user"
                    | "nouser"
                    | "users"
                    | "_netdev"
                    | "nofail"
                    | "lazytime"
                    | "nolazytime"
            ) || key.starts_with("x-")
                || key == "comment" => {}
            _ => {
                return Err(Failure::arguments(format!(
                    "option {option} cannot change on a remount (vigilfs takes ro, rw, \
                     nosuid, suid, nodev, dev, noexec, exec and the atime options there); \
                     unmount and mount again to change it"
                )))
            }
        }
    }
    Ok(flags)
}

/// Remounts the vigilfs mount on `mountpoint` with `options`; the exit
/// status (0) on success.
pub fn remount(mountpoint: &Path, options: &[String]) -> Result<u8, Failure> {
    let mounts = Mounts::read()
        .map_err(|error| Failure::operational(format!("reading the mount table: {error}")))?;
    let canonical = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    if mounts
        .topmost_at(&canonical)
        .is_none_or(|entry| entry.fstype != "fuse.vigilfs")
    {
        return Err(Failure::usage(format!(
            "remount: {} is not a vigilfs mount",
            mountpoint.display()
        )));
    }
    let path = CString::new(canonical.as_os_str().as_bytes())
        .map_err(|_| Failure::usage("remount: the mount point holds a NUL byte"))?;
    // SAFETY: statvfs is plain old data; all zeros is a valid value.
    let mut status: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid C string and `status` writable for the
    // duration of the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut status) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(Failure::operational(format!(
            "remount: statvfs {}: {error}",
            mountpoint.display()
        )));
    }
    let flags = remount_flags(status.f_flag, options)?;
    // SAFETY: the target is a valid C string; source, type and data may be
    // null for a remount.
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
        let error = std::io::Error::last_os_error();
        return Err(Failure::operational(format!(
            "remount of {}: {error}",
            mountpoint.display()
        )));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Vec<String> {
        vec![text.to_string()]
    }

    #[test]
    fn remount_flags_keep_what_is_not_named() {
        let current = libc::ST_NOSUID | libc::ST_NODEV | libc::ST_RELATIME;
        let flags = remount_flags(current, &options("remount,ro")).unwrap();
        assert_eq!(
            flags,
            libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_RELATIME
        );
        let current = current | libc::ST_RDONLY;
        let flags = remount_flags(current, &options("remount,rw,suid,noatime")).unwrap();
        assert_eq!(flags, libc::MS_REMOUNT | libc::MS_NODEV | libc::MS_NOATIME);
        assert!(remount_flags(0, &options("remount,user_id=0,default_permissions")).is_ok());
    }

    #[test]
    fn daemon_options_cannot_change_on_a_remount() {
        let refused = remount_flags(0, &options("remount,errors=panic")).unwrap_err();
        assert!(refused.to_string().contains("errors=panic"), "{refused}");
        assert!(remount_flags(0, &options("remount,cache=1G")).is_err());
        assert!(is_remount(&options("ro,remount")));
        assert!(!is_remount(&options("ro,errors=remount-ro")));
    }
}
