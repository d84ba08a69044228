//! The settings a mounted filesystem can change without unmounting, as a
//! remount (`mount -o remount,errors=panic,cache=1G DIR`) asks.
//!
//! They are the ones that only steer what the mount does from now on: the
//! `errors=` policy, the page cache's budget for clean data, the dirty
//! limit writers are held to, how often the background thread writes
//! back, and when reads and listings update access times. Each is one atomic word read where it is used, so a change takes
//! effect at the next decision and never waits for an operation in flight;
//! changes themselves are serialised, so what status shows is what the
//! page cache was given.
//! Everything else a mount was given (read-only, the fault plan, what
//! fsync reports) shapes state built at mount and stays as it was.
//!
//! A change is validated as the mount options are, and refused whole
//! before anything is changed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::mounting::{AtimeUpdates, MountOptions};
use super::FsError;
use crate::format::ErrorsPolicy;

/// The writeback interval's bounds (those of the mount option).
pub const WRITEBACK_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_micros(1), Duration::from_secs(86_400));

/// What to change; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    /// The `errors=` policy.
    pub errors: Option<ErrorsPolicy>,
    /// Clean cached data above which the oldest clean pages are evicted.
    pub cache_bytes: Option<u64>,
    /// Dirty data above which writers wake the background thread (and at
    /// twice which they write back themselves).
    pub dirty_limit_bytes: Option<u64>,
    /// How often the background thread writes back dirty data.
    pub writeback_interval: Option<Duration>,
    /// The kernel made the mount read-only (`true`) or read-write again (a
    /// remount). Read-only first writes everything back and makes it
    /// durable, as Linux's remount does: an image copied or a power cut
    /// right after holds everything written before.
    pub read_only: Option<bool>,
    /// When reads update access times (`relatime`, `strictatime`,
    /// `noatime`).
    pub atime: Option<AtimeUpdates>,
    /// Whether listings update directories' access times (`diratime`,
    /// `nodiratime`).
    pub directory_atime: Option<bool>,
}

impl SettingsChange {
    /// Whether the change names nothing.
    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }

    /// Refuses what a mount option would refuse: a writeback interval of
    /// zero or over a day (any cache budget or dirty limit works, if
    /// slowly).
    pub fn validate(&self) -> Result<(), FsError> {
        let (least, most) = WRITEBACK_INTERVAL_RANGE;
        match self.writeback_interval {
            Some(interval) if !(least..=most).contains(&interval) => Err(FsError::Invalid(
                "the writeback interval must be more than 0 and at most a day",
            )),
            _ => Ok(()),
        }
    }

    /// `options` with this change applied: what a later mount of the same
    /// image by the same process (after a simulated power cut) should use.
    pub fn apply_to(&self, options: &mut MountOptions) {
        if let Some(errors) = self.errors {
            options.errors = Some(errors);
        }
        if let Some(bytes) = self.cache_bytes {
            options.cache_bytes = bytes;
        }
        if let Some(bytes) = self.dirty_limit_bytes {
            options.dirty_limit_bytes = bytes;
        }
        if let Some(interval) = self.writeback_interval {
            options.writeback_interval = interval;
        }
        if let Some(atime) = self.atime {
            options.atime = atime;
        }
        if let Some(directory_atime) = self.directory_atime {
            options.directory_atime = directory_atime;
        }
    }
}

/// The change in the mount option form: `errors=panic cache=1G dirty=16M
/// writeback=0.5s` (`writeback=` is the writeback interval).
impl std::fmt::Display for SettingsChange {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = Vec::new();
        if let Some(errors) = self.errors {
            words.push(format!("errors={errors}"));
        }
        if let Some(bytes) = self.cache_bytes {
            words.push(format!("cache={}", short_size(bytes)));
        }
        if let Some(bytes) = self.dirty_limit_bytes {
            words.push(format!("dirty={}", short_size(bytes)));
        }
        if let Some(interval) = self.writeback_interval {
            words.push(format!("writeback={}s", interval.as_secs_f64()));
        }
        if let Some(read_only) = self.read_only {
            words.push(if read_only { "ro" } else { "rw" }.to_string());
        }
        if let Some(atime) = self.atime {
            words.push(atime.name().to_string());
        }
        if let Some(directory_atime) = self.directory_atime {
            words.push(
                if directory_atime {
                    "diratime"
                } else {
                    "nodiratime"
                }
                .to_string(),
            );
        }
        formatter.write_str(&words.join(" "))
    }
}

impl SettingsChange {
    /// The change as an event record's text of at most `capacity` bytes:
    /// the values when they fit, else the names of what changed (status
    /// has the values), never values cut short.
    pub fn summary(&self, capacity: usize) -> String {
        let full = self.to_string();
        if full.len() <= capacity {
            return full;
        }
        let names: Vec<&str> = [
            ("errors", self.errors.is_some()),
            ("cache", self.cache_bytes.is_some()),
            ("dirty", self.dirty_limit_bytes.is_some()),
            ("writeback", self.writeback_interval.is_some()),
            ("ro/rw", self.read_only.is_some()),
            ("atime", self.atime.is_some()),
            ("diratime", self.directory_atime.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        format!("{} changed (see status)", names.join(","))
    }
}

/// `bytes` with the largest binary unit that divides it (`1G`, `96M`,
/// `4100`), as the mount options take sizes.
fn short_size(bytes: u64) -> String {
    let units = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
    units
        .iter()
        .find(|(shift, _)| bytes != 0 && bytes % (1u64 << shift) == 0)
        .map_or_else(
            || bytes.to_string(),
            |(shift, unit)| format!("{}{unit}", bytes >> shift),
        )
}

/// The settings in force, as `status` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The `errors=` policy.
    pub errors_policy: ErrorsPolicy,
    /// The page cache's budget, bytes.
    pub cache_bytes: u64,
    /// The dirty limit, bytes.
    pub dirty_limit_bytes: u64,
    /// The background writeback interval.
    pub writeback_interval: Duration,
    /// When reads update access times.
    pub atime: AtimeUpdates,
    /// Whether listings update directories' access times.
    pub directory_atime: bool,
}

/// The settings of a mount, each readable and changeable on its own.
#[derive(Debug)]
pub(super) struct LiveSettings {
    errors_policy: AtomicU8,
    cache_bytes: AtomicU64,
    dirty_limit_bytes: AtomicU64,
    writeback_interval_nanos: AtomicU64,
    atime: AtomicU8,
    directory_atime: AtomicBool,
    /// Held by whoever changes them.
    changing: Mutex<()>,
}

impl LiveSettings {
    pub(super) fn new(settings: Settings) -> LiveSettings {
        LiveSettings {
            errors_policy: AtomicU8::new(policy_code(settings.errors_policy)),
            cache_bytes: AtomicU64::new(settings.cache_bytes),
            dirty_limit_bytes: AtomicU64::new(settings.dirty_limit_bytes),
            writeback_interval_nanos: AtomicU64::new(nanos(settings.writeback_interval)),
            atime: AtomicU8::new(atime_code(settings.atime)),
            directory_atime: AtomicBool::new(settings.directory_atime),
            changing: Mutex::new(()),
        }
    }

    pub(super) fn errors_policy(&self) -> ErrorsPolicy {
        policy_from_code(self.errors_policy.load(Ordering::Relaxed))
    }

    pub(super) fn dirty_limit_bytes(&self) -> u64 {
        self.dirty_limit_bytes.load(Ordering::Relaxed)
    }

    pub(super) fn writeback_interval(&self) -> Duration {
        Duration::from_nanos(self.writeback_interval_nanos.load(Ordering::Relaxed))
    }

    pub(super) fn atime(&self) -> AtimeUpdates {
        atime_from_code(self.atime.load(Ordering::Relaxed))
    }

    pub(super) fn directory_atime(&self) -> bool {
        self.directory_atime.load(Ordering::Relaxed)
    }

    pub(super) fn snapshot(&self) -> Settings {
        Settings {
            errors_policy: self.errors_policy(),
            cache_bytes: self.cache_bytes.load(Ordering::Relaxed),
            dirty_limit_bytes: self.dirty_limit_bytes(),
            writeback_interval: self.writeback_interval(),
            atime: self.atime(),
            directory_atime: self.directory_atime(),
        }
    }

    /// Stores `change` after validating it; the caller applies the cache
    /// budget to the page cache (it evicts at once when it shrinks) while
    /// it holds the guard returned, so concurrent changes apply in order.
    pub(super) fn change(&self, change: &SettingsChange) -> Result<MutexGuard<'_, ()>, FsError> {
        change.validate()?;
        let changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(errors) = change.errors {
            self.errors_policy
                .store(policy_code(errors), Ordering::Relaxed);
        }
        if let Some(bytes) = change.cache_bytes {
            self.cache_bytes.store(bytes, Ordering::Relaxed);
        }
        if let Some(bytes) = change.dirty_limit_bytes {
            self.dirty_limit_bytes.store(bytes, Ordering::Relaxed);
        }
        if let Some(interval) = change.writeback_interval {
            self.writeback_interval_nanos
                .store(nanos(interval), Ordering::Relaxed);
        }
        if let Some(atime) = change.atime {
            self.atime.store(atime_code(atime), Ordering::Relaxed);
        }
        if let Some(directory_atime) = change.directory_atime {
            self.directory_atime
                .store(directory_atime, Ordering::Relaxed);
        }
        Ok(changing)
    }
}

fn nanos(interval: Duration) -> u64 {
    u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX)
}

fn policy_code(policy: ErrorsPolicy) -> u8 {
    match policy {
        ErrorsPolicy::Continue => 0,
        ErrorsPolicy::RemountReadOnly => 1,
        ErrorsPolicy::Panic => 2,
    }
}

fn atime_code(atime: AtimeUpdates) -> u8 {
    match atime {
        AtimeUpdates::Relative => 0,
        AtimeUpdates::Always => 1,
        AtimeUpdates::Never => 2,
    }
}

fn atime_from_code(code: u8) -> AtimeUpdates {
    match code {
        0 => AtimeUpdates::Relative,
        1 => AtimeUpdates::Always,
        _ => AtimeUpdates::Never,
    }
}

fn policy_from_code(code: u8) -> ErrorsPolicy {
    match code {
        0 => ErrorsPolicy::Continue,
        1 => ErrorsPolicy::RemountReadOnly,
        _ => ErrorsPolicy::Panic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            errors_policy: ErrorsPolicy::RemountReadOnly,
            cache_bytes: 256 << 20,
            dirty_limit_bytes: 64 << 20,
            writeback_interval: Duration::from_secs(5),
            atime: AtimeUpdates::Relative,
            directory_atime: true,
        }
    }

    #[test]
    fn a_change_replaces_only_what_it_names() {
        let live = LiveSettings::new(settings());
        drop(
            live.change(&SettingsChange {
                errors: Some(ErrorsPolicy::Panic),
                dirty_limit_bytes: Some(8 << 20),
                ..SettingsChange::default()
            })
            .unwrap(),
        );
        assert_eq!(
            live.snapshot(),
            Settings {
                errors_policy: ErrorsPolicy::Panic,
                dirty_limit_bytes: 8 << 20,
                ..settings()
            }
        );
        for policy in [
            ErrorsPolicy::Continue,
            ErrorsPolicy::RemountReadOnly,
            ErrorsPolicy::Panic,
        ] {
            drop(
                live.change(&SettingsChange {
                    errors: Some(policy),
                    ..SettingsChange::default()
                })
                .unwrap(),
            );
            assert_eq!(live.errors_policy(), policy);
        }
        for atime in [
            AtimeUpdates::Never,
            AtimeUpdates::Always,
            AtimeUpdates::Relative,
        ] {
            drop(
                live.change(&SettingsChange {
                    atime: Some(atime),
                    directory_atime: Some(atime != AtimeUpdates::Never),
                    ..SettingsChange::default()
                })
                .unwrap(),
            );
            assert_eq!(live.atime(), atime);
            assert_eq!(live.directory_atime(), atime != AtimeUpdates::Never);
        }
    }

    #[test]
    fn a_change_out_of_bounds_is_refused_whole() {
        let live = LiveSettings::new(settings());
        let refused = live.change(&SettingsChange {
            errors: Some(ErrorsPolicy::Continue),
            writeback_interval: Some(Duration::ZERO),
            ..SettingsChange::default()
        });
        assert!(matches!(refused, Err(FsError::Invalid(_))), "{refused:?}");
        assert_eq!(live.snapshot(), settings(), "nothing changed");
        let too_long = SettingsChange {
            writeback_interval: Some(Duration::from_secs(86_401)),
            ..SettingsChange::default()
        };
        assert!(too_long.validate().is_err());
    }

    #[test]
    fn a_change_applied_to_mount_options_survives_a_later_mount() {
        let mut options = MountOptions::default();
        SettingsChange {
            errors: Some(ErrorsPolicy::Continue),
            cache_bytes: Some(32 << 20),
            dirty_limit_bytes: None,
            writeback_interval: Some(Duration::from_millis(500)),
            read_only: None,
            atime: Some(AtimeUpdates::Never),
            directory_atime: None,
        }
        .apply_to(&mut options);
        assert_eq!(options.atime, AtimeUpdates::Never);
        assert!(options.directory_atime);
        assert_eq!(options.errors, Some(ErrorsPolicy::Continue));
        assert_eq!(options.cache_bytes, 32 << 20);
        assert_eq!(
            options.dirty_limit_bytes,
            MountOptions::default().dirty_limit_bytes
        );
        assert_eq!(options.writeback_interval, Duration::from_millis(500));
    }

    #[test]
    fn a_change_reads_as_the_mount_options_that_make_it() {
        let change = SettingsChange {
            errors: Some(ErrorsPolicy::RemountReadOnly),
            cache_bytes: Some(1 << 30),
            dirty_limit_bytes: Some(4100),
            writeback_interval: Some(Duration::from_millis(500)),
            read_only: Some(true),
            atime: None,
            directory_atime: None,
        };
        assert_eq!(
            change.to_string(),
            "errors=remount-ro cache=1G dirty=4100 writeback=0.5s ro"
        );
        let atime = SettingsChange {
            atime: Some(AtimeUpdates::Never),
            directory_atime: Some(false),
            ..SettingsChange::default()
        };
        assert_eq!(atime.to_string(), "noatime nodiratime");
        assert_eq!(SettingsChange::default().to_string(), "");
        assert_eq!(change.summary(100), change.to_string());
        let summary = change.summary(40);
        assert_eq!(
            summary,
            "errors,cache,dirty,writeback,ro/rw changed (see status)"
        );
        assert!(summary.len() <= 56);
    }
}
