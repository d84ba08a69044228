//! `-o` options of `vigilfs mount` (and of `mount -t fuse.vigilfs`).
//!
//! vigilfs options: `ro`, `rw`, `errors=continue|remount-ro|panic`,
//! `cache=SIZE`, `dirty=SIZE`, `writeback_interval=SECONDS`, `threads=N`,
//! `allow_other`/`noallow_other`, `fsync_errors=until-durable|once`,
//! `auto_da_alloc`/`noauto_da_alloc`, `keep_cache`/`nokeep_cache`, `attr_timeout=SECONDS`,
//! `entry_timeout=SECONDS`, `scrub_interval=DURATION` (`90s`, `30m`, `6h`, `7d`; a bare
//! number is seconds), `scrub_rate=SIZE` (bytes per second the background scrub reads),
//! `failed=OFFSET:LENGTH` (device bytes reported failed before the mount; repeatable),
//! `events_group=GROUP` (its members may listen to events), `metrics=ADDR:PORT` (serve
//! Prometheus metrics), `crashable` (the crash lab's device: writes are
//! held until a flush, so `vigilfs inject --power-cut` can lose them), the
//! `suid`/`nosuid` and `dev`/`nodev` (default: `suid,dev` when mounted by
//! root, as other filesystems; an unprivileged mount is always
//! `nosuid,nodev`), and the
//! access-time options (FUSE leaves access times to the filesystem):
//! `relatime` (the default), `strictatime`, `noatime`, and `atime`,
//! `nostrictatime` (the default) and `norelatime` (strict), `diratime`
//! (the default) and `nodiratime`, `exec` (the default) and `noexec`,
//! `symfollow` (the default) and `nosymfollow`.
//! Generic options mount(8) and mount.fuse3 pass along are accepted and
//! ignored: `auto`, `noauto`, `user`, `nouser`, `users`, `defaults`,
//! `_netdev`, `nofail`, `lazytime`, `x-*` and `comment=*`, and
//! `subtype=`/`fsname=`. Anything else is an error.

use std::time::Duration;

use vigilfs::format::ErrorsPolicy;
use vigilfs::fs::AtimeUpdates;
use vigilfs::inode::FsyncErrors;

use crate::size::ByteSize;

/// What the options ask for; `None` keeps the engine's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountSettings {
    /// `ro`.
    pub read_only: bool,
    /// `errors=`.
    pub errors: Option<ErrorsPolicy>,
    /// `cache=`: clean-page budget in bytes.
    pub cache_bytes: Option<u64>,
    /// `dirty=`: dirty limit in bytes.
    pub dirty_bytes: Option<u64>,
    /// `writeback_interval=`.
    pub writeback_interval: Option<Duration>,
    /// `threads=`.
    pub threads: Option<usize>,
    /// `allow_other` / `noallow_other`; unset: other users may use a mount
    /// root makes, and only its user one another user makes.
    pub allow_other: Option<bool>,
    /// `keep_cache` / `nokeep_cache`: keep the kernel's page cache of a
    /// file across opens.
    pub keep_cache: Option<bool>,
    /// `attr_timeout=`: how long the kernel trusts attributes.
    pub attr_timeout: Option<Duration>,
    /// `entry_timeout=`: how long the kernel trusts names.
    pub entry_timeout: Option<Duration>,
    /// `fsync_errors=until-durable|once`.
    pub fsync_errors: Option<FsyncErrors>,
    /// `auto_da_alloc` (the default) / `noauto_da_alloc`: whether a
    /// replaced file's new data is written back before the replacement
    /// can be durable (`vigilfs::fs::MountOptions::auto_da_alloc`).
    pub auto_da_alloc: Option<bool>,
    /// `scrub_interval=`: scrub in the background this often.
    pub scrub_interval: Option<Duration>,
    /// `scrub_rate=`: bytes per second the background scrub reads.
    pub scrub_rate: Option<u64>,
    /// `failed=OFFSET:LENGTH` (repeatable): device ranges reported failed
    /// before the mount, handled once the journal is replayed.
    pub failed: Vec<(u64, u64)>,
    /// `events_group=`: a group (name or number) whose members may listen
    /// to events.
    pub events_group: Option<String>,
    /// `metrics=ADDR:PORT`: where to serve `/metrics`.
    pub metrics: Option<String>,
    /// `crashable`: the device holds every write until a flush, so a
    /// power cut can lose or tear them.
    pub crashable: bool,
    /// The access-time option given last.
    pub atime: Option<AtimeUpdates>,
    /// `diratime` (the default) / `nodiratime`.
    pub directory_atime: Option<bool>,
    /// `suid` / `nosuid`.
    pub set_id: Option<bool>,
    /// `dev` / `nodev`.
    pub devices: Option<bool>,
    /// `exec` (the default) / `noexec`.
    pub exec: Option<bool>,
    /// `symfollow` (the default) / `nosymfollow`: whether path lookups
    /// follow symlinks on the mount (the kernel's flag).
    pub follow_symlinks: Option<bool>,
}

const IGNORED: &[&str] = &[
    "rw",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "defaults",
    "_netdev",
    "nofail",
    "lazytime",
    "nolazytime",
    "async",
    "silent",
    "loud",
];

fn size(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<ByteSize>()
        .map(|size| size.0)
        .map_err(|error| format!("option {key}={value}: {error}"))
}

/// The least `dirty=`: one write of the largest size the kernel sends.
/// Below it every write waits for a writeback, and one file whose data
/// cannot be written refuses every write of every file (writes are refused
/// past four times the limit).
const MIN_DIRTY_LIMIT: u64 = 1 << 20;

/// `dirty=`: at least [`MIN_DIRTY_LIMIT`], at most half of this machine's
/// memory. Dirty data waits in the daemon's memory until it is written
/// back, so a larger limit lets one writer push the daemon out of memory,
/// and the OOM killer would take every unwritten byte with it.
fn dirty_limit(value: &str) -> Result<u64, String> {
    let bytes = size("dirty", value)?;
    if bytes < MIN_DIRTY_LIMIT {
        return Err(format!(
            "option dirty={value}: at least 1M (one write of the largest size the kernel \
             sends; below it one file whose data cannot be written refuses every write)"
        ));
    }
    match physical_memory() {
        Some(memory) if bytes > memory / 2 => Err(format!(
            "option dirty={value}: at most {} here (half of this machine's memory): \
             dirty data waits in the mount's memory until it is written back",
            crate::status_command::human_bytes(memory / 2)
        )),
        _ => Ok(bytes),
    }
}

/// This machine's memory in bytes, if the system says.
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let pages = u64::try_from(pages).ok()?;
    let page_size = u64::try_from(page_size).ok()?;
    pages.checked_mul(page_size)
}

/// A duration in seconds (fractions allowed) up to a day; zero only if
/// `zero_allowed`.
fn seconds(key: &str, value: &str, zero_allowed: bool) -> Result<Duration, String> {
    value
        .parse()
        .ok()
        .filter(|seconds: &f64| seconds.is_finite() && *seconds <= 86_400.0)
        .filter(|seconds| *seconds > 0.0 || (zero_allowed && *seconds == 0.0))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            let least = if zero_allowed {
                "0 or more"
            } else {
                "more than 0"
            };
            format!("option {key}={value}: give seconds, {least} and at most 86400")
        })
}

/// A scrub interval: a number with an optional unit (`s`, `m`, `h`, `d`;
/// seconds without), from a second to a year. (The background scrub
/// resumes where the last one stopped, and keeps behind foreground I/O.)
fn interval(key: &str, value: &str) -> Result<Duration, String> {
    let split = value
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => f64::NAN,
    };
    number
        .parse::<f64>()
        .ok()
        .map(|number| number * scale)
        .filter(|seconds| seconds.is_finite() && (1.0..=365.0 * 86_400.0).contains(seconds))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!(
                "option {key}={value}: give a duration from 1s to 365d (e.g. 90m, 6h, 7d; \
                 a bare number is seconds)"
            )
        })
}

/// `OFFSET:LENGTH` of `failed=`, each a size (0 allowed for the offset).
fn failed_range(value: &str) -> Result<(u64, u64), String> {
    let invalid =
        || format!("option failed={value}: give OFFSET:LENGTH in device bytes (e.g. 64M:4K)");
    let (offset, length) = value.split_once(':').ok_or_else(invalid)?;
    let offset = if offset.trim() == "0" {
        0
    } else {
        offset.parse::<ByteSize>().map_err(|_| invalid())?.0
    };
    let length = length.parse::<ByteSize>().map_err(|_| invalid())?.0;
    offset.checked_add(length).ok_or_else(invalid)?;
    Ok((offset, length))
}

/// Whether `option` is one of the generic options vigilfs accepts and
/// ignores.
pub fn is_ignored(option: &str) -> bool {
    IGNORED.contains(&option)
}

/// Parses every `-o` argument (each a comma-separated list).
pub fn parse<S: AsRef<str>>(arguments: &[S]) -> Result<MountSettings, String> {
    let mut settings = MountSettings::default();
    for argument in arguments {
        for option in argument.as_ref().split(',').filter(|item| !item.is_empty()) {
            let (key, value) = match option.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (option, None),
            };
            match (key, value) {
                ("ro", None) => settings.read_only = true,
                ("suid", None) => settings.set_id = Some(true),
                ("nosuid", None) => settings.set_id = Some(false),
                ("dev", None) => settings.devices = Some(true),
                ("nodev", None) => settings.devices = Some(false),
                ("exec", None) => settings.exec = Some(true),
                ("noexec", None) => settings.exec = Some(false),
                ("symfollow", None) => settings.follow_symlinks = Some(true),
                ("nosymfollow", None) => settings.follow_symlinks = Some(false),
                (
                    "relatime" | "atime" | "nostrictatime" | "strictatime" | "norelatime"
                    | "noatime",
                    None,
                ) => settings.atime = Some(key.parse()?),
                ("diratime", None) => settings.directory_atime = Some(true),
                ("nodiratime", None) => settings.directory_atime = Some(false),
                ("rw", None) => settings.read_only = false,
                ("allow_other", None) => settings.allow_other = Some(true),
                ("noallow_other", None) => settings.allow_other = Some(false),
                ("crashable", None) => settings.crashable = true,
                ("errors", Some(value)) => {
                    let policy = value.parse().map_err(|error| format!("option {error}"))?;
                    settings.errors = Some(policy);
                }
                ("cache", Some(value)) => settings.cache_bytes = Some(size(key, value)?),
                ("dirty", Some(value)) => settings.dirty_bytes = Some(dirty_limit(value)?),
                ("writeback_interval", Some(value)) => {
                    settings.writeback_interval = Some(seconds(key, value, false)?);
                }
                ("attr_timeout", Some(value)) => {
                    settings.attr_timeout = Some(seconds(key, value, true)?);
                }
                ("entry_timeout", Some(value)) => {
                    settings.entry_timeout = Some(seconds(key, value, true)?);
                }
                ("fsync_errors", Some(value)) => {
                    settings.fsync_errors = Some(match value {
                        "until-durable" => FsyncErrors::UntilDurable,
                        "once" => FsyncErrors::Once,
                        _ => {
                            return Err(format!(
                                "option fsync_errors={value}: use until-durable or once"
                            ))
                        }
                    });
                }
                ("scrub_interval", Some(value)) => {
                    settings.scrub_interval = Some(interval(key, value)?);
                }
                ("scrub_rate", Some(value)) => settings.scrub_rate = Some(size(key, value)?),
                ("failed", Some(value)) => settings.failed.push(failed_range(value)?),
                ("events_group", Some(value)) if !value.is_empty() => {
                    settings.events_group = Some(value.to_string());
                }
                ("metrics", Some(value)) => {
                    let port = value
                        .rsplit_once(':')
                        .and_then(|(_, port)| port.parse::<u16>().ok());
                    if port.is_none() {
                        return Err(format!(
                            "option metrics={value}: give ADDRESS:PORT (e.g. 127.0.0.1:9470)"
                        ));
                    }
                    settings.metrics = Some(value.to_string());
                }
                ("auto_da_alloc", None) => settings.auto_da_alloc = Some(true),
                ("noauto_da_alloc", None) => settings.auto_da_alloc = Some(false),
                ("keep_cache", None) => settings.keep_cache = Some(true),
                ("nokeep_cache", None) => settings.keep_cache = Some(false),
                ("threads", Some(value)) => {
                    let threads = value
                        .parse::<usize>()
                        .ok()
                        .filter(|threads| (1..=256).contains(threads))
                        .ok_or_else(|| {
                            format!("option threads={value}: give a number from 1 to 256")
                        })?;
                    settings.threads = Some(threads);
                }
                ("subtype" | "fsname" | "comment", Some(_)) => {}
                _ if key.starts_with("x-") => {}
                (key, None) if IGNORED.contains(&key) => {}
                _ => {
                    return Err(format!(
                        "unknown mount option `{option}` (vigilfs takes ro, rw, \
                         errors=continue|remount-ro|panic, cache=SIZE, dirty=SIZE, \
                         writeback_interval=SECONDS, threads=N, allow_other, noallow_other, \
                         fsync_errors=until-durable|once, noauto_da_alloc, keep_cache, \
                         nokeep_cache, \
                         attr_timeout=SECONDS, entry_timeout=SECONDS, \
                         scrub_interval=DURATION, scrub_rate=SIZE, failed=OFFSET:LENGTH, \
                         events_group=GROUP, metrics=ADDR:PORT, crashable, \
                         and the generic options of mount(8))"
                    ))
                }
            }
        }
    }
    if settings.crashable && settings.read_only {
        return Err(
            "option crashable: a read-only mount writes nothing a power cut could \
                    lose; use crashable with rw"
                .into(),
        );
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dirty_limit_beyond_half_the_memory_is_refused() {
        let error = parse(&["dirty=100T"]).unwrap_err();
        assert!(error.contains("half of this machine's memory"), "{error}");
        assert_eq!(parse(&["dirty=64M"]).unwrap().dirty_bytes, Some(64 << 20));
    }

    /// A one-byte limit was taken, and one failing file then refused every
    /// write of every file (review 21).
    #[test]
    fn a_dirty_limit_below_one_write_is_refused() {
        for absurd in ["dirty=1", "dirty=4K", "dirty=1023K"] {
            let error = parse(&[absurd]).unwrap_err();
            assert!(error.contains("at least 1M"), "{absurd}: {error}");
        }
        assert_eq!(parse(&["dirty=1M"]).unwrap().dirty_bytes, Some(1 << 20));
    }

    #[test]
    fn allow_other_is_unset_unless_given_either_way() {
        assert_eq!(parse(&["rw"]).unwrap().allow_other, None);
        assert_eq!(parse(&["allow_other"]).unwrap().allow_other, Some(true));
        assert_eq!(parse(&["noallow_other"]).unwrap().allow_other, Some(false));
    }

    #[test]
    fn vigilfs_options_are_parsed() {
        let settings = parse(&[
            "ro,errors=continue,cache=64M",
            "dirty=8M,writeback_interval=0.5,threads=4,allow_other",
        ])
        .unwrap();
        assert_eq!(
            settings,
            MountSettings {
                read_only: true,
                errors: Some(ErrorsPolicy::Continue),
                cache_bytes: Some(64 << 20),
                dirty_bytes: Some(8 << 20),
                writeback_interval: Some(Duration::from_millis(500)),
                threads: Some(4),
                allow_other: Some(true),
                ..MountSettings::default()
            }
        );
    }

    #[test]
    fn generic_options_are_ignored() {
        let settings = parse(&[
            "rw,auto,noauto,user,nouser,defaults,_netdev",
            "x-systemd.automount,subtype=vigilfs,lazytime",
        ])
        .unwrap();
        assert_eq!(settings, MountSettings::default());
    }

    #[test]
    fn nosymfollow_is_kept() {
        assert_eq!(
            parse(&["nosymfollow"]).unwrap().follow_symlinks,
            Some(false)
        );
        assert_eq!(
            parse(&["nosymfollow,symfollow"]).unwrap().follow_symlinks,
            Some(true)
        );
    }

    #[test]
    fn nodiratime_is_kept_not_ignored() {
        assert_eq!(parse(&["nodiratime"]).unwrap().directory_atime, Some(false));
        assert_eq!(
            parse(&["nodiratime,diratime"]).unwrap().directory_atime,
            Some(true)
        );
        assert_eq!(parse(&["rw"]).unwrap().directory_atime, None);
    }

    #[test]
    fn noexec_is_kept_not_ignored() {
        assert_eq!(parse(&["noexec"]).unwrap().exec, Some(false));
        assert_eq!(parse(&["noexec,exec"]).unwrap().exec, Some(true));
        assert_eq!(parse(&["rw"]).unwrap().exec, None);
    }

    #[test]
    fn suid_and_dev_options_are_parsed_the_last_one_winning() {
        let settings = parse(&["nosuid,nodev"]).unwrap();
        assert_eq!(
            (settings.set_id, settings.devices),
            (Some(false), Some(false))
        );
        let settings = parse(&["nosuid,suid,nodev,dev"]).unwrap();
        assert_eq!(
            (settings.set_id, settings.devices),
            (Some(true), Some(true))
        );
        let settings = parse(&["rw"]).unwrap();
        assert_eq!((settings.set_id, settings.devices), (None, None));
    }

    #[test]
    fn access_time_options_are_parsed_the_last_one_winning() {
        let atime = |options: &str| parse(&[options]).unwrap().atime;
        assert_eq!(atime("rw"), None);
        assert_eq!(atime("noatime"), Some(AtimeUpdates::Never));
        assert_eq!(atime("strictatime"), Some(AtimeUpdates::Always));
        assert_eq!(atime("norelatime"), Some(AtimeUpdates::Always));
        assert_eq!(atime("noatime,relatime"), Some(AtimeUpdates::Relative));
        assert_eq!(atime("noatime,atime"), Some(AtimeUpdates::Relative));
    }

    #[test]
    fn unknown_and_malformed_options_are_refused() {
        assert!(parse(&["bogus"])
            .unwrap_err()
            .contains("unknown mount option `bogus`"));
        assert!(parse(&["errors=maybe"]).is_err());
        assert!(parse(&["cache=lots"]).is_err());
        assert!(parse(&["threads=0"]).is_err());
        assert!(parse(&["writeback_interval=-1"]).is_err());
        assert!(parse(&["writeback_interval=0"]).is_err());
        assert!(parse(&["attr_timeout=-1"]).is_err());
        assert!(parse(&["entry_timeout=forever"]).is_err());
        assert!(parse(&["ro=1"]).is_err());
    }

    #[test]
    fn kernel_cache_options_are_parsed() {
        let settings = parse(&["nokeep_cache,attr_timeout=0,entry_timeout=2.5"]).unwrap();
        assert_eq!(settings.keep_cache, Some(false));
        assert_eq!(settings.attr_timeout, Some(Duration::ZERO));
        assert_eq!(settings.entry_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(parse(&["keep_cache"]).unwrap().keep_cache, Some(true));
        assert!(parse(&["rw,crashable"]).unwrap().crashable);
        assert!(!parse(&["rw"]).unwrap().crashable);
        assert!(parse(&["crashable=1"]).is_err());
        let refused = parse(&["ro,crashable"]).unwrap_err();
        assert!(refused.contains("read-only"), "{refused}");
        assert_eq!(parse(&["ro"]).unwrap().keep_cache, None);
    }

    #[test]
    fn scrub_options_are_parsed_and_absurd_ones_refused() {
        let settings = parse(&["scrub_interval=6h,scrub_rate=64M"]).unwrap();
        assert_eq!(settings.scrub_interval, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(settings.scrub_rate, Some(64 << 20));
        assert_eq!(
            parse(&["scrub_interval=90"]).unwrap().scrub_interval,
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse(&["scrub_interval=1.5d"]).unwrap().scrub_interval,
            Some(Duration::from_secs(129_600))
        );
        assert_eq!(
            parse(&["failed=64M:4K,failed=0:512"]).unwrap().failed,
            vec![(64 << 20, 4096), (0, 512)]
        );
        for bad in [
            "failed=64M",
            "failed=x:1",
            "failed=1:0",
            "scrub_interval=0.5s",
            "scrub_interval=400d",
            "scrub_interval=soon",
            "scrub_interval=5w",
            "scrub_interval=",
            "scrub_rate=fast",
            "scrub_rate=0",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn fsync_error_reporting_is_parsed() {
        assert_eq!(
            parse(&["fsync_errors=once"]).unwrap().fsync_errors,
            Some(FsyncErrors::Once)
        );
        assert_eq!(
            parse(&["fsync_errors=until-durable"]).unwrap().fsync_errors,
            Some(FsyncErrors::UntilDurable)
        );
        assert!(parse(&["fsync_errors=sometimes"]).is_err());
        assert_eq!(
            parse(&["noauto_da_alloc"]).unwrap().auto_da_alloc,
            Some(false)
        );
        assert_eq!(parse(&["auto_da_alloc"]).unwrap().auto_da_alloc, Some(true));
        assert_eq!(parse(&["rw"]).unwrap().auto_da_alloc, None);
    }
}
