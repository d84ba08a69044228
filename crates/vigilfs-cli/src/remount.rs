//! `mount -o remount,OPTIONS DIR` of a vigilfs mount: mount(8) runs the
//! helper with `remount` among the options, and the helper changes the
//! mount in place instead of starting another daemon.
//!
//! Two things can change. What the kernel keeps for the mount: `ro`/`rw`
//! (the kernel refuses writes on a read-only FUSE superblock; the daemon
//! keeps serving, and what it already holds dirty is still written back),
//! and the per-mount flags `nosuid`/`suid`, `nodev`/`dev`, `noexec`/`exec`
//! and the atime family; flags not named keep their current value (read
//! with statvfs), since `mount(2)` with `MS_REMOUNT` sets all of them. And
//! the daemon's settings that only steer what it does from now on:
//! `errors=`, `cache=`, `dirty=` and `writeback_interval=`, sent over the
//! control socket (`vigilfs::fs::SettingsChange`).
//!
//! Everything is validated before anything changes. The daemon's settings
//! change first, so a refusal there (another user's mount) leaves the
//! kernel's flags alone too. `rw` is refused while the daemon itself is
//! read-only (mounted `ro`, or made read-only by errors=remount-ro): the
//! kernel would let writes through only for the daemon to refuse each.
//! Options the daemon built its state from (`threads=`, `fsync_errors=`,
//! the timeouts...) cannot change: asking is an error saying so. Options
//! mount(8) repeats from the mount table (`user_id=`, `group_id=`,
//! `default_permissions`, `allow_other`, `defaults`, `fsname=`,
//! `subtype=`) are accepted and change nothing.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::control::client;
use crate::control::protocol::Request;
use crate::failure::Failure;
use crate::mount_options;
use crate::mountinfo::Mounts;

/// The options naming the daemon's settings a remount may change.
const SETTINGS: [&str; 4] = ["errors", "cache", "dirty", "writeback_interval"];

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
            _ if SETTINGS.contains(&key) && option.contains('=') => {}
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
                     nosuid, suid, nodev, dev, noexec, exec, the atime options, errors=, \
                     cache=, dirty= and writeback_interval= there); unmount and mount \
                     again to change it"
                )))
            }
        }
    }
    Ok(flags)
}

/// The daemon's part of a remount: the settings `options` name, validated
/// as at mount, or `None` when they name none.
fn settings_request(options: &[String]) -> Result<Option<Request>, Failure> {
    let named: Vec<&str> = options
        .iter()
        .flat_map(|argument| argument.split(','))
        .filter(|option| {
            option
                .split_once('=')
                .is_some_and(|(key, _)| SETTINGS.contains(&key))
        })
        .collect();
    if named.is_empty() {
        return Ok(None);
    }
    let settings = mount_options::parse(&named).map_err(Failure::arguments)?;
    Ok(Some(Request::Reconfigure {
        errors: settings.errors.map(|policy| policy.to_string()),
        cache_bytes: settings.cache_bytes,
        dirty_limit_bytes: settings.dirty_bytes,
        writeback_interval_micros: settings
            .writeback_interval
            .map(|interval| u64::try_from(interval.as_micros()).unwrap_or(u64::MAX)),
    }))
}

/// Why the daemon serving `mountpoint` cannot take writes, if it cannot.
fn daemon_read_only(mountpoint: &Path) -> Result<Option<String>, Failure> {
    let status = client::call(mountpoint, &Request::Status)
        .map_err(|error| error.into_failure("remount", mountpoint))?;
    Ok(match status["state"].as_str() {
        Some(state @ ("read-only" | "shut-down")) => Some(match status["state_reason"].as_str() {
            Some(reason) => format!("{state} ({reason})"),
            None => state.to_string(),
        }),
        _ => None,
    })
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
    let settings = settings_request(options)?;
    let asks_rw = options
        .iter()
        .flat_map(|argument| argument.split(','))
        .any(|option| option == "rw");
    if flags & libc::MS_RDONLY == 0 && (asks_rw || status.f_flag & libc::ST_RDONLY != 0) {
        if let Some(why) = daemon_read_only(&canonical)? {
            return Err(Failure::operational(format!(
                "remount of {} read-write refused: the daemon serving it is {why}; \
                 unmount it and mount it again (after vigilfs fsck if it failed)",
                mountpoint.display()
            )));
        }
    }
    if let Some(request) = &settings {
        client::call(&canonical, request)
            .map_err(|error| error.into_failure("remount", mountpoint))?;
    }
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
        let settings_note = if settings.is_some() {
            " (the daemon's settings did change)"
        } else {
            ""
        };
        return Err(Failure::operational(format!(
            "remount of {}: {error}{settings_note}",
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
    fn options_the_daemon_built_its_state_from_cannot_change_on_a_remount() {
        let refused = remount_flags(0, &options("remount,threads=4")).unwrap_err();
        assert!(refused.to_string().contains("threads=4"), "{refused}");
        assert!(remount_flags(0, &options("remount,fsync_errors=once")).is_err());
        assert!(remount_flags(0, &options("remount,errors")).is_err());
        assert!(is_remount(&options("ro,remount")));
        assert!(!is_remount(&options("ro,errors=remount-ro")));
    }

    #[test]
    fn the_daemon_settings_of_a_remount_are_validated_as_at_mount() {
        let flags = remount_flags(0, &options("remount,errors=panic,cache=1G")).unwrap();
        assert_eq!(flags, libc::MS_REMOUNT, "settings change no kernel flag");
        assert_eq!(settings_request(&options("remount,ro")).unwrap(), None);
        let request = settings_request(&options(
            "remount,errors=continue,cache=1G,dirty=16M,writeback_interval=0.5",
        ))
        .unwrap();
        assert_eq!(
            request,
            Some(Request::Reconfigure {
                errors: Some("continue".into()),
                cache_bytes: Some(1 << 30),
                dirty_limit_bytes: Some(16 << 20),
                writeback_interval_micros: Some(500_000),
            })
        );
        for bad in ["errors=sometimes", "cache=lots", "writeback_interval=0"] {
            let refused = settings_request(&options(&format!("remount,{bad}"))).unwrap_err();
            assert!(refused.to_string().contains(bad), "{refused}");
        }
    }
}
