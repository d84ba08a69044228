//! `-o` options of `vigilfs mount` (and of `mount -t fuse.vigilfs`).
//!
//! vigilfs options: `ro`, `rw`, `errors=continue|remount-ro|panic`,
//! `cache=SIZE`, `dirty=SIZE`, `writeback_interval=SECONDS`, `threads=N`,
//! `allow_other`, `fsync_errors=until-durable|once`, `keep_cache`/`nokeep_cache`, `attr_timeout=SECONDS`,
//! `entry_timeout=SECONDS`, `events_group=GROUP` (its members may listen
//! to events), `metrics=ADDR:PORT` (serve Prometheus metrics). Generic options mount(8) and mount.fuse3 pass along are
//! accepted and ignored: `dev`, `nodev`, `suid`, `nosuid`, `exec`,
//! `noexec`, `auto`, `noauto`, `user`, `nouser`, `users`, `defaults`,
//! `_netdev`, `nofail`, the atime family, `x-*` and `comment=*`, and
//! `subtype=`/`fsname=`. Anything else is an error.

use std::time::Duration;

use vigilfs::format::ErrorsPolicy;
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
    /// `allow_other`.
    pub allow_other: bool,
    /// `keep_cache` / `nokeep_cache`: keep the kernel's page cache of a
    /// file across opens.
    pub keep_cache: Option<bool>,
    /// `attr_timeout=`: how long the kernel trusts attributes.
    pub attr_timeout: Option<Duration>,
    /// `entry_timeout=`: how long the kernel trusts names.
    pub entry_timeout: Option<Duration>,
    /// `fsync_errors=until-durable|once`.
    pub fsync_errors: Option<FsyncErrors>,
    /// `events_group=`: a group (name or number) whose members may listen
    /// to events.
    pub events_group: Option<String>,
    /// `metrics=ADDR:PORT`: where to serve `/metrics`.
    pub metrics: Option<String>,
}

const IGNORED: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "defaults",
    "_netdev",
    "nofail",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
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
                ("rw", None) => settings.read_only = false,
                ("allow_other", None) => settings.allow_other = true,
                ("errors", Some(value)) => {
                    settings.errors = Some(match value {
                        "continue" => ErrorsPolicy::Continue,
                        "remount-ro" => ErrorsPolicy::RemountReadOnly,
                        "panic" => ErrorsPolicy::Panic,
                        _ => {
                            return Err(format!(
                                "option errors={value}: use continue, remount-ro or panic"
                            ))
                        }
                    });
                }
                ("cache", Some(value)) => settings.cache_bytes = Some(size(key, value)?),
                ("dirty", Some(value)) => settings.dirty_bytes = Some(size(key, value)?),
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
                         writeback_interval=SECONDS, threads=N, allow_other, \
                         fsync_errors=until-durable|once, keep_cache, nokeep_cache, \
                         attr_timeout=SECONDS, \
                         entry_timeout=SECONDS, events_group=GROUP, metrics=ADDR:PORT, \
                         and the generic options of mount(8))"
                    ))
                }
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                allow_other: true,
                ..MountSettings::default()
            }
        );
    }

    #[test]
    fn generic_options_are_ignored() {
        let settings = parse(&[
            "rw,dev,suid,exec,nodev,nosuid,noexec,auto,noauto,user,nouser,defaults,_netdev",
            "relatime,x-systemd.automount,subtype=vigilfs",
        ])
        .unwrap();
        assert_eq!(settings, MountSettings::default());
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
        assert_eq!(parse(&["ro"]).unwrap().keep_cache, None);
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
    }
}
