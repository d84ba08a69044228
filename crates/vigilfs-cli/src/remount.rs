//! `mount -o remount,OPTIONS DIR` of a vigilfs mount: mount(8) runs the
//! helper with `remount` among the options, and the helper changes the
//! mount in place instead of starting another daemon.
//!
//! Two things can change. What the kernel keeps for the mount: `ro`/`rw`
//! (the kernel refuses writes on a read-only FUSE superblock; the daemon
//! keeps serving, and, told of the change, writes back what it holds dirty
//! and makes everything durable before the remount returns, as Linux's
//! remount does, so an image copied or a power cut right after keeps it),
//! and the per-mount flags `nosuid`/`suid`, `nodev`/`dev`, `noexec`/`exec`
//! and the atime family. mount(8) passes the whole set the mount is to
//! have (the mount table's merged with the command line's), so a flag it
//! leaves out is cleared; a list naming none of the current flags (a
//! script's `remount,ro`) changes only what it names, the rest read with
//! statvfs, since `mount(2)` with `MS_REMOUNT` sets all of them. And the
//! daemon's settings that only steer what it does from now on: `errors=`,
//! `cache=`, `dirty=` and `writeback_interval=`, and the access-time
//! setting, which follows the kernel's atime flags (a FUSE mount leaves
//! access times to the daemon), sent over the control socket
//! (`vigilfs::fs::SettingsChange`).
//!
//! Everything is validated before anything changes; then the kernel's
//! flags change (the step that can still fail), then the daemon's
//! settings. `rw` of a read-only daemon (mounted `ro`) first makes the
//! daemon writable (it opens its image for writing, deletes the orphans a
//! crash left, starts its writeback), so the kernel lets writes through
//! only to a daemon that takes them; a daemon made read-only by an error
//! (errors=remount-ro) or shut down refuses, and nothing changes. Options the daemon
//! built its state from (`threads=`, `fsync_errors=`, the timeouts...)
//! cannot change: mount(8) repeats them from fstab on every remount, so
//! they are accepted when they say what the mount was started with
//! (status reports its `-o` options), and refused with a message
//! otherwise. Options mount(8) repeats from the mount table (`user_id=`,
//! `group_id=`, `default_permissions`, `allow_other`, `defaults`,
//! `fsname=`, `subtype=`) are accepted and change nothing.

use std::path::Path;

use serde_json::Value;
use vigilfs::fs::AtimeUpdates;
use vigilfs::inode::FsyncErrors;

use crate::control::client::{self, ClientError};
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

/// What a remount's `-o` options ask of the kernel and of the daemon.
#[derive(Debug, PartialEq, Eq)]
struct Remount<'o> {
    /// The `mount(2)` flags: the current ones changed by the options.
    flags: libc::c_ulong,
    /// Options the daemon built its state from at mount (`threads=`,
    /// `fsync_errors=`...): accepted only if they change nothing, since
    /// mount(8) repeats what fstab says on every remount.
    fixed: Vec<&'o str>,
}

/// Sorts `options` for a remount of a mount whose statvfs `f_flag` is
/// `current`.
///
/// mount(8) hands a helper the whole set of options the mount is to have:
/// the mount table's, merged with the command line's (`remount,exec` of a
/// `noexec` mount arrives as `rw,relatime,remount,user_id=0,group_id=0,
/// default_permissions,allow_other`: the flag cleared is the one missing).
/// Such a list starts with `rw` or `ro` (from an fstab line, mount(8)
/// merges that line's options instead: `rw,noatime,remount,errors=...`)
/// and carries the FUSE superblock's `user_id=` when it comes from the
/// mount table; a flag it leaves out is cleared, as `mount(2)` with
/// `MS_REMOUNT` does; only the atime flags stay when none is named (the
/// kernel's rule). Any other list (`remount,ro` from a script calling the
/// helper itself) changes only what it names: clearing `nosuid` or
/// `noexec` takes naming `suid` or `exec`.
fn classify(current: u64, options: &[String]) -> Remount<'_> {
    let atime = libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME;
    let words: Vec<&str> = options
        .iter()
        .flat_map(|argument| argument.split(','))
        .collect();
    let whole_set = matches!(words.first(), Some(&("rw" | "ro")))
        || words.iter().any(|word| word.starts_with("user_id="));
    let kept = vigilfs_fuse::remount_keeping(current);
    let mut flags = if whole_set {
        let atime_named = words.iter().any(|word| {
            matches!(
                *word,
                "noatime"
                    | "relatime"
                    | "atime"
                    | "nostrictatime"
                    | "strictatime"
                    | "norelatime"
                    | "nodiratime"
                    | "diratime"
            )
        });
        let kept_atime = if atime_named {
            0
        } else {
            kept & (atime | libc::MS_NODIRATIME)
        };
        libc::MS_REMOUNT | kept_atime
    } else {
        kept
    };
    let mut fixed = Vec::new();
    for option in words {
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
            "nosymfollow" => flags |= libc::MS_NOSYMFOLLOW,
            "symfollow" => flags &= !libc::MS_NOSYMFOLLOW,
            _ if matches!(
                key,
                "user_id"
                    | "group_id"
                    | "default_permissions"
                    | "allow_other"
                    | "fsname"
                    | "subtype"
                    | "comment"
            ) || key.starts_with("x-")
                || mount_options::is_ignored(option) => {}
            _ => fixed.push(option),
        }
    }
    Remount { flags, fixed }
}

/// Refuses `allow_other` on a mount made `noallow_other`. Elsewhere it is
/// passed over: mount(8) repeats it from the mount table on every remount,
/// but the table of a `noallow_other` mount lacks it, so there it can only
/// be the user asking for a change FUSE cannot make on a remount.
fn check_allow_other(options: &[impl AsRef<str>], mounted: &str) -> Result<(), Failure> {
    let asked = options
        .iter()
        .flat_map(|argument| argument.as_ref().split(','))
        .any(|option| option == "allow_other");
    let kept_to_owner =
        mount_options::parse(&[mounted]).is_ok_and(|settings| settings.allow_other == Some(false));
    if asked && kept_to_owner {
        return Err(Failure::arguments(
            "option allow_other cannot change on a remount: the mount was made with \
             noallow_other; unmount and mount again to change it",
        ));
    }
    Ok(())
}

/// Refuses the options in `fixed` that would change what the daemon was
/// mounted with (`mounted`, its `-o` options as status reports them).
fn check_fixed(fixed: &[&str], mounted: &str) -> Result<(), Failure> {
    let normalised = |mut settings: mount_options::MountSettings| {
        settings.failed.sort_unstable();
        settings.failed.dedup();
        // A default named is no change (review 52: `remount,auto_da_alloc`
        // of a mount made without options was refused).
        settings.auto_da_alloc.get_or_insert(true);
        settings
            .fsync_errors
            .get_or_insert(FsyncErrors::UntilDurable);
        settings
    };
    let before = mount_options::parse(&[mounted]).map(normalised);
    for option in fixed {
        let after = mount_options::parse(&[mounted, option]).map(normalised);
        match (&before, after) {
            (Ok(before), Ok(after)) if *before == after => {}
            (_, Err(error)) => return Err(Failure::arguments(error)),
            _ => {
                return Err(Failure::arguments(format!(
                    "option {option} cannot change on a remount (vigilfs takes ro, rw, \
                     nosuid, suid, nodev, dev, noexec, exec, nosymfollow, the atime \
                     options, errors=, cache=, dirty= and writeback_interval= there, and \
                     the others as mounted: {mounted}); unmount and mount again to \
                     change it"
                )))
            }
        }
    }
    Ok(())
}

/// The daemon's part of a remount: the settings `options` name, validated
/// as at mount, the read-only flag if it changes, and the access-time
/// setting if the kernel's atime flags change (the daemon records access
/// times, so it follows them); `None` when nothing changes for it.
fn settings_request(
    options: &[String],
    read_only: Option<bool>,
    atime: Option<(AtimeUpdates, bool)>,
) -> Result<Option<Request>, Failure> {
    let named: Vec<&str> = options
        .iter()
        .flat_map(|argument| argument.split(','))
        .filter(|option| {
            option
                .split_once('=')
                .is_some_and(|(key, _)| SETTINGS.contains(&key))
        })
        .collect();
    if named.is_empty() && read_only.is_none() && atime.is_none() {
        return Ok(None);
    }
    let settings = mount_options::parse(&named).map_err(Failure::arguments)?;
    Ok(Some(Request::Reconfigure {
        errors: settings.errors.map(|policy| policy.to_string()),
        cache_bytes: settings.cache_bytes,
        dirty_limit_bytes: settings.dirty_bytes,
        // At least a microsecond: the option's fractions of seconds may
        // be finer than the protocol's unit.
        writeback_interval_micros: settings.writeback_interval.map(|interval| {
            u64::try_from(interval.as_micros())
                .unwrap_or(u64::MAX)
                .max(1)
        }),
        read_only,
        atime: atime.map(|(atime, _)| atime.name().to_string()),
        directory_atime: atime.map(|(_, directory_atime)| directory_atime),
    }))
}

/// The daemon's access-time setting, as its status shows it.
fn daemon_atime(status: &Value) -> Option<(AtimeUpdates, bool)> {
    let settings = &status["settings"];
    let atime = settings["atime"].as_str()?.parse().ok()?;
    Some((atime, settings["directory_atime"].as_bool()?))
}

/// The kernel's atime flags of a mount, as the daemon's setting: when reads
/// record access times, and whether listings do.
fn atime_of_statvfs(statvfs_flags: u64) -> (AtimeUpdates, bool) {
    let atime = if statvfs_flags & libc::ST_NOATIME != 0 {
        AtimeUpdates::Never
    } else if statvfs_flags & libc::ST_RELATIME != 0 {
        AtimeUpdates::Relative
    } else {
        AtimeUpdates::Always
    };
    (atime, statvfs_flags & libc::ST_NODIRATIME == 0)
}

/// What a remount with `mount(2)` flags `flags` leaves of the atime flags
/// of a mount whose statvfs flags are `current`: with no atime flag at all
/// the kernel keeps them as they were; with any, what is not `noatime` or
/// `strictatime` is relatime (`remount,nodiratime` of a strictatime mount
/// leaves it relatime, as on ext4).
fn atime_after(flags: libc::c_ulong, current: u64) -> (AtimeUpdates, bool) {
    if flags & vigilfs_fuse::ATIME_FLAGS == 0 {
        return atime_of_statvfs(current);
    }
    let atime = if flags & libc::MS_NOATIME != 0 {
        AtimeUpdates::Never
    } else if flags & libc::MS_STRICTATIME != 0 {
        AtimeUpdates::Always
    } else {
        AtimeUpdates::Relative
    };
    (atime, flags & libc::MS_NODIRATIME == 0)
}

/// Whether a daemon with `status` cannot take writes now.
fn is_read_only(status: &Value) -> bool {
    matches!(status["state"].as_str(), Some("read-only" | "shut-down"))
}

/// Remounts the vigilfs mount on `mountpoint` with `options`; the exit
/// status (0) on success.
///
/// Everything is checked before anything changes; then the kernel's flags
/// change (the step that can still fail: EBUSY for `ro` with files open
/// for writing), and only then the daemon's settings, so a failed remount
/// changes nothing.
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
    let kernel_flags = vigilfs_fuse::statvfs_flags(&canonical).map_err(|error| {
        Failure::operational(format!(
            "remount: statvfs {}: {error}",
            mountpoint.display()
        ))
    })?;
    let remount = classify(kernel_flags, options);
    let was_read_only = kernel_flags & libc::ST_RDONLY != 0;
    let read_only = remount.flags & libc::MS_RDONLY != 0;
    // The daemon hears of a change of the flag: read-only makes everything
    // durable first, as Linux's remount does.
    let status = client::call(&canonical, &Request::Status)
        .map_err(|error| error.into_failure("remount", mountpoint))?;
    // The daemon's setting, not the kernel's flags, is what a change is
    // measured against: a bind remount changes the flags without it.
    let atime = atime_after(remount.flags, kernel_flags);
    let settings = settings_request(
        options,
        (read_only != was_read_only).then_some(read_only),
        (Some(atime) != daemon_atime(&status)).then_some(atime),
    )?;
    let mounted = status["mount_options"].as_str().unwrap_or_default();
    check_fixed(&remount.fixed, mounted)?;
    check_allow_other(options, mounted)?;
    let asks_rw = options
        .iter()
        .flat_map(|argument| argument.split(','))
        .any(|option| option == "rw");
    let stays_rw = remount.flags & libc::MS_RDONLY == 0;
    let made_writable = stays_rw && (asks_rw || was_read_only) && is_read_only(&status);
    if made_writable {
        client::call(&canonical, &Request::MakeWritable).map_err(|error| {
            let why = match error {
                ClientError::Server(reply) => reply.message,
                other => other.into_failure("remount", mountpoint).to_string(),
            };
            Failure::operational(format!(
                "remount of {} read-write refused: {why}",
                mountpoint.display()
            ))
        })?;
    }
    if let Err(error) = vigilfs_fuse::remount(&canonical, remount.flags) {
        let what = if made_writable {
            "the filesystem is writable now; the kernel's mount stays read-only"
        } else {
            "nothing changed"
        };
        return Err(Failure::operational(format!(
            "remount of {}: {error} ({what})",
            mountpoint.display()
        )));
    }
    if let Some(request) = &settings {
        client::call(&canonical, request).map_err(|error| {
            let failure = error.into_failure("remount", mountpoint);
            let what = if read_only && !was_read_only {
                "the mount is read-only now, and what was not written back is not durable"
            } else {
                "the kernel's flags did change; the daemon's settings did not"
            };
            Failure::operational(format!("{failure} ({what})"))
        })?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Vec<String> {
        vec![text.to_string()]
    }

    /// mount(8) passes the whole set (the mount table's flags merged with
    /// the command line's): a flag it leaves out is cleared.
    #[test]
    fn a_whole_set_from_mount8_clears_the_flags_it_leaves_out() {
        let current = libc::ST_NOSUID | libc::ST_NOEXEC | libc::ST_NODIRATIME | libc::ST_RELATIME;
        // `mount -o remount,exec,diratime`: noexec and nodiratime left out.
        let merged = ",user_id=0,group_id=0,default_permissions,allow_other";
        let flags = classify(
            current,
            &options(&format!("rw,nosuid,relatime,remount{merged}")),
        )
        .flags;
        assert_eq!(
            flags,
            libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_RELATIME
        );
        assert_eq!(atime_after(flags, current), (AtimeUpdates::Relative, true));
        // No atime flag named: the kernel keeps them (and so does the daemon).
        let flags = classify(
            current,
            &options(&format!("rw,nosuid,noexec,remount{merged}")),
        )
        .flags;
        assert_eq!(
            flags,
            libc::MS_REMOUNT
                | libc::MS_NOSUID
                | libc::MS_NOEXEC
                | libc::MS_NODIRATIME
                | libc::MS_RELATIME
        );
        assert_eq!(atime_after(flags, current), atime_of_statvfs(current));
        // Naming only nodiratime replaces the atime flags: relatime, as the
        // kernel does.
        let strict = libc::ST_NOEXEC;
        let flags = classify(strict, &options(&format!("rw,nodiratime,remount{merged}"))).flags;
        assert_eq!(atime_after(flags, strict), (AtimeUpdates::Relative, false));
        // From an fstab line, mount(8) merges the line's options: no user_id=.
        let fstab = classify(current, &options("rw,noatime,remount,errors=continue")).flags;
        assert_eq!(fstab, libc::MS_REMOUNT | libc::MS_NOATIME);
        // A strictatime mount keeps strictatime when a script names nodev.
        let strict = classify(libc::ST_NODIRATIME, &options("remount,nodev")).flags;
        assert_eq!(
            atime_after(strict, libc::ST_NODIRATIME),
            (AtimeUpdates::Always, false)
        );
        // A script's partial list naming what the mount has clears nothing.
        let flags = classify(current, &options("remount,rw")).flags;
        assert_eq!(flags, vigilfs_fuse::remount_keeping(current));
        let flags = classify(current, &options("remount,nosuid,ro")).flags;
        assert_eq!(
            flags,
            vigilfs_fuse::remount_keeping(current) | libc::MS_RDONLY
        );
    }

    #[test]
    fn remount_flags_keep_what_is_not_named() {
        let current = libc::ST_NOSUID | libc::ST_NODEV | libc::ST_RELATIME;
        let flags = classify(current, &options("remount,ro")).flags;
        assert_eq!(
            flags,
            libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_RELATIME
        );
        // 0x2000: statvfs's ST_NOSYMFOLLOW (not in the libc crate).
        let current = current | libc::ST_RDONLY | 0x2000;
        let flags = classify(current, &options("remount,rw,suid,noatime")).flags;
        assert_eq!(
            flags,
            libc::MS_REMOUNT | libc::MS_NODEV | libc::MS_NOATIME | libc::MS_NOSYMFOLLOW
        );
        let passive_options = options("remount,user_id=0,default_permissions,async,silent");
        let passive = classify(0, &passive_options);
        assert_eq!(passive.fixed, Vec::<&str>::new());
    }

    #[test]
    fn options_the_daemon_built_its_state_from_pass_only_as_mounted() {
        let remount_options = options("remount,threads=4,fsync_errors=once,errors");
        let remount = classify(0, &remount_options);
        assert_eq!(remount.fixed, ["threads=4", "fsync_errors=once", "errors"]);
        // As fstab repeats them: unchanged, accepted.
        let mounted = "errors=panic,threads=4,fsync_errors=once,failed=0:4K";
        assert!(check_fixed(&["threads=4", "fsync_errors=once", "failed=0:4K"], mounted).is_ok());
        let refused = check_fixed(&["threads=8"], mounted).unwrap_err();
        assert!(refused.to_string().contains("threads=8"), "{refused}");
        assert!(check_fixed(&["crashable"], mounted).is_err());
        assert!(check_fixed(&["errors"], mounted).is_err());
        assert!(check_fixed(&["threads=lots"], mounted).is_err());
        // A default named is no change; the other value is.
        assert!(check_fixed(&["auto_da_alloc"], "").is_ok());
        assert!(check_fixed(&["fsync_errors=until-durable"], "threads=4").is_ok());
        assert!(check_fixed(&["noauto_da_alloc"], "").is_err());
        assert!(check_fixed(&["auto_da_alloc"], "noauto_da_alloc").is_err());
        // allow_other: repeated from the mount table, except on a mount
        // made noallow_other, whose table lacks it.
        assert!(check_allow_other(&["remount,allow_other"], "threads=4").is_ok());
        assert!(check_allow_other(&["remount,allow_other"], "noallow_other").is_err());
        assert!(check_allow_other(&["remount,ro"], "noallow_other").is_ok());
        assert!(is_remount(&options("ro,remount")));
        assert!(!is_remount(&options("ro,errors=remount-ro")));
    }

    #[test]
    fn the_daemon_settings_of_a_remount_are_validated_as_at_mount() {
        let remount_options = options("remount,errors=panic,cache=1G");
        let remount = classify(libc::ST_RELATIME, &remount_options);
        assert_eq!(
            remount.flags,
            libc::MS_REMOUNT | libc::MS_RELATIME,
            "settings change no kernel flag"
        );
        assert!(remount.fixed.is_empty());
        assert_eq!(
            settings_request(&options("remount,ro"), None, None).unwrap(),
            None
        );
        let request = settings_request(
            &options("remount,errors=continue,cache=1G,dirty=16M,writeback_interval=0.5"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            request,
            Some(Request::Reconfigure {
                errors: Some("continue".into()),
                cache_bytes: Some(1 << 30),
                dirty_limit_bytes: Some(16 << 20),
                writeback_interval_micros: Some(500_000),
                read_only: None,
                atime: None,
                directory_atime: None,
            })
        );
        assert_eq!(
            settings_request(&options("remount,ro"), Some(true), None).unwrap(),
            Some(Request::Reconfigure {
                errors: None,
                cache_bytes: None,
                dirty_limit_bytes: None,
                writeback_interval_micros: None,
                read_only: Some(true),
                atime: None,
                directory_atime: None,
            })
        );
        let tiny = settings_request(&options("writeback_interval=0.0000001"), None, None).unwrap();
        assert!(matches!(
            tiny,
            Some(Request::Reconfigure {
                writeback_interval_micros: Some(1),
                ..
            })
        ));
        // The atime family is the kernel's flags, and the daemon follows
        // them.
        let atime = options("remount,noatime,nodiratime");
        let flags = classify(libc::ST_RELATIME, &atime).flags;
        assert_eq!(
            flags,
            libc::MS_REMOUNT | libc::MS_NOATIME | libc::MS_NODIRATIME
        );
        assert_eq!(
            atime_after(flags, libc::ST_RELATIME),
            (AtimeUpdates::Never, false)
        );
        assert_eq!(
            settings_request(&atime, None, Some((AtimeUpdates::Never, false))).unwrap(),
            Some(Request::Reconfigure {
                errors: None,
                cache_bytes: None,
                dirty_limit_bytes: None,
                writeback_interval_micros: None,
                read_only: None,
                atime: Some("noatime".into()),
                directory_atime: Some(false),
            })
        );
        for bad in ["errors=sometimes", "cache=lots", "writeback_interval=0"] {
            let refused =
                settings_request(&options(&format!("remount,{bad}")), None, None).unwrap_err();
            assert!(refused.to_string().contains(bad), "{refused}");
        }
    }
}
