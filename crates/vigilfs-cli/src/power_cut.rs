//! Power cuts of a live mount (`-o crashable`): the crash lab's switch.
//!
//! A crashable mount's device stack is
//!
//! ```text
//! image file → VolatileCache → BootedDevice (this boot) → FaultDevice (the fault plan) → engine
//! ```
//!
//! The cache holds every write since the last flush, which is what a power
//! cut loses (or tears). [`PowerSwitch::cut`] does what a power failure and
//! a reboot do, at the same mount point, and returns once the mount serves
//! the state after the crash:
//!
//! 1. the power goes: every request fails, nothing more reaches the image;
//! 2. the engine is abandoned (it writes nothing, not even its superblock;
//!    its open files fail with `EIO`, as descriptors do after a crash);
//! 3. the power comes back with the cache's contents lost or torn;
//! 4. the image is mounted again through a new boot of the device (so a
//!    request of the old engine still on its way can never land), which
//!    replays the journal;
//! 5. the new engine takes over the old one's file rules and its place in
//!    the [`EngineSlot`] (whose generation tells listeners of the mount's
//!    events to go on in the new engine's log), and the FUSE session is
//!    restarted on it (the kernel's caches start empty).
//!
//! Invariants: one cut at a time, none once the mount process
//! [`PowerSwitch::close`]s the switch to unmount; the slot never serves the abandoned
//! engine once the new one is mounted; if the new mount fails, the old,
//! abandoned engine stays in place and fails every request with `EIO`
//! (the mount can still be unmounted).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use vigilfs::device::{
    BlockDevice, FaultDevice, FaultLogEvent, FaultPlan, PowerLoss, PowerLossReport, VolatileCache,
};
use vigilfs::fs::events::EventLogEnd;
use vigilfs::fs::faults::CutPoint;
use vigilfs::fs::{Filesystem, FsError, MountError, MountOptions, SettingsChange, Unsynced};
use vigilfs_fuse::Restarter;

use crate::engine_slot::EngineSlot;
use crate::mountinfo::{device_name, MountEntry, Mounts};
use crate::second_mount;

/// What one cut did.
#[derive(Debug, Clone)]
pub struct CutReport {
    /// Which cut of this mount (from 1).
    pub number: u64,
    /// What the abandoned engine had not made durable when the power went:
    /// what the cut lost (of data: all of it unless the loss was torn).
    pub lost: Unsynced,
    /// What happened to the device's unflushed writes.
    pub device: PowerLossReport,
    /// From the power going to the mount serving the recovered state.
    pub took: Duration,
    /// Whether the new mount replayed a journal.
    pub replayed: bool,
}

/// Why a cut could not complete.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    /// The mount is being unmounted.
    #[error("the filesystem is being unmounted")]
    Unmounting,
    /// The cut happened but the image could not be mounted again; the
    /// mount point fails every request until unmounted.
    #[error("the power was cut, but mounting the image again failed: {0}")]
    Remount(String),
}

/// The switch of one crashable mount. See the module comment.
pub struct PowerSwitch {
    cache: Arc<VolatileCache>,
    plan: Arc<FaultPlan>,
    /// How every boot mounts (failures reported at mount time are not
    /// reported again; a remount's settings are kept).
    options: Mutex<MountOptions>,
    engine: OnceLock<Arc<EngineSlot>>,
    session: OnceLock<Restarter>,
    /// Held through a cut; `true` once the mount is being unmounted.
    cutting: Mutex<bool>,
    cuts: AtomicU64,
    /// Whether the user made the mount read-only (`remount,ro`, through
    /// the helper or the kernel alone): the kernel's read-only flag then
    /// outlives a cut; one the errors policy set does not.
    asked_read_only: AtomicBool,
    /// The cuts whose boot could not mount the image, for the next boot
    /// that does to record (and for `status` to show until then).
    failed_boots: Mutex<Vec<FailedBoot>>,
}

/// A cut whose boot could not mount the image.
struct FailedBoot {
    /// The cut's number.
    number: u64,
    /// The fault rules active then.
    active_rules: u64,
    /// Why the mount failed.
    reason: String,
}

impl std::fmt::Debug for PowerSwitch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PowerSwitch")
            .field("cache", &self.cache)
            .field("cuts", &self.cuts.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PowerSwitch {
    /// A switch for the image behind `image`, whose mounts follow `plan`
    /// and mount with `options` (its fault plan is set to `plan`).
    pub fn new(image: Arc<dyn BlockDevice>, plan: Arc<FaultPlan>, options: MountOptions) -> Self {
        PowerSwitch {
            cache: Arc::new(VolatileCache::new(image)),
            options: Mutex::new(MountOptions {
                fault_plan: Some(Arc::clone(&plan)),
                ..options
            }),
            plan,
            engine: OnceLock::new(),
            session: OnceLock::new(),
            cutting: Mutex::new(false),
            cuts: AtomicU64::new(0),
            asked_read_only: AtomicBool::new(options.read_only),
            failed_boots: Mutex::new(Vec::new()),
        }
    }

    /// The device stack as the current boot sees it.
    fn device(&self) -> Arc<dyn BlockDevice> {
        Arc::new(FaultDevice::new(self.cache.boot(), Arc::clone(&self.plan)))
    }

    /// Mounts the image through the current boot; `first` with the
    /// options as given, later boots without the failures reported at the
    /// first (they are on the image's bad-block list by then).
    /// Mounts the image: the first time, or after a cut that ended a log
    /// standing at `events_end`.
    fn mount(&self, events_end: Option<EventLogEnd>) -> Result<Filesystem, MountError> {
        let mut options = lock(&self.options).clone();
        if events_end.is_some() {
            options.failures.clear();
        }
        options.events_before_power_cut = events_end;
        Filesystem::mount(self.device(), options)
    }

    /// The first mount.
    pub fn mount_first(&self) -> Result<Filesystem, MountError> {
        self.mount(None)
    }

    /// Connects the switch to what serves the mount: the slot the engine
    /// lives in and the FUSE session to restart. Cuts before this fail.
    pub fn attach(&self, engine: Arc<EngineSlot>, session: Restarter) {
        let _ = self.engine.set(engine);
        let _ = self.session.set(session);
    }

    /// Whether the device acknowledges flushes without making anything
    /// durable (a lying disk); logged in the fault log.
    pub fn set_drop_flushes(&self, drop: bool) {
        self.cache.set_drop_flushes(drop);
        let rule = if drop {
            "drop-flushes (the device acknowledges flushes and keeps nothing)"
        } else {
            "drop-flushes off"
        };
        self.plan.log_event(
            None,
            FaultLogEvent::Set {
                rule: rule.to_string(),
            },
        );
    }

    /// Whether flushes are dropped.
    pub fn drops_flushes(&self) -> bool {
        self.cache.drops_flushes()
    }

    /// Flushes dropped whose writes a cut now would lose.
    pub fn flushes_dropped(&self) -> u64 {
        self.cache.flushes_dropped()
    }

    /// Bytes the device holds unflushed (every version of every sector).
    pub fn unflushed_bytes(&self) -> u64 {
        self.cache.cached_bytes()
    }

    /// Cuts made so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    /// Why the latest cut's boot could not mount the image, while no boot
    /// has since: the mount then serves nothing until the next cut.
    pub fn failed_boot(&self) -> Option<String> {
        lock(&self.failed_boots)
            .last()
            .map(|failed| format!("power cut {}: {}", failed.number, failed.reason))
    }

    /// Arms a cut at `point` of the current engine: when the operation is
    /// about to run for the `point.count`-th time from now, the power goes
    /// at once (that operation and everything after it fails) and
    /// `crashed` runs, both before that operation answers: a machine stops
    /// with its power, so the program `crashed` kills must not live on to
    /// see the failure and act on it (it did, outside the mount: a shell
    /// loop went on logging writes the cut had refused). The rest of the
    /// cut ([`PowerSwitch::cut`]) completes on a thread of its own; `done`
    /// hears its outcome.
    pub fn arm(
        self: &Arc<Self>,
        point: CutPoint,
        loss: PowerLoss,
        crashed: Box<dyn FnOnce() + Send>,
        done: Box<dyn FnOnce(Result<CutReport, CutError>) + Send>,
    ) -> Result<(), CutError> {
        let engine = self.current()?;
        let switch = Arc::clone(self);
        engine.arm_power_cut(
            point,
            Box::new(move || {
                switch.cache.cut_power();
                crashed();
                let spawned = std::thread::Builder::new()
                    .name("vigilfs-power-cut".into())
                    .spawn(move || done(switch.cut(loss)));
                // Could not spawn: the power stays off; the mount fails
                // every request until unmounted.
                drop(spawned);
            }),
        );
        Ok(())
    }

    /// Changes the settings of the engine serving now and of every later
    /// boot; waits for a cut in progress, so no boot misses the change.
    pub fn reconfigure(&self, change: &SettingsChange) -> Result<(), FsError> {
        change.validate()?;
        let _no_cut = lock(&self.cutting);
        change.apply_to(&mut lock(&self.options));
        if let Some(read_only) = change.read_only {
            self.asked_read_only.store(read_only, Ordering::Relaxed);
        }
        match self.current() {
            Ok(engine) => engine.reconfigure(change),
            // Unmounting: nothing serves to change.
            Err(_) => Ok(()),
        }
    }

    /// No cut from now on (the mount is being unmounted); waits for a cut
    /// in progress to complete.
    pub fn close(&self) {
        *lock(&self.cutting) = true;
    }

    fn current(&self) -> Result<Arc<Filesystem>, CutError> {
        self.engine
            .get()
            .and_then(|slot| slot.current())
            .ok_or(CutError::Unmounting)
    }

    /// Cuts the power now (if it is not off already), loses the device's
    /// unflushed writes as `loss` says, and brings the mount back on the
    /// recovered image. See the module comment.
    pub fn cut(&self, loss: PowerLoss) -> Result<CutReport, CutError> {
        let closed = lock(&self.cutting);
        if *closed {
            return Err(CutError::Unmounting);
        }
        let old = self.current()?;
        let start = Instant::now();
        // The read-only flag the user asked for outlives the power cut;
        // the one the errors policy set does not, as the engine's
        // read-only state does not (a reboot mounts read-write again),
        // also when the policy acted in an engine whose own restart
        // failed.
        let asked_read_only = self.asked_read_only.load(Ordering::Relaxed);
        let flags = self
            .session
            .get()
            .and_then(|session| current_flags(session.mountpoint()))
            .map(|flags| vigilfs_fuse::MountFlags {
                read_only: flags.read_only && asked_read_only,
                ..flags
            });
        let other_flags = self
            .session
            .get()
            .and_then(|session| current_other_flags(session.mountpoint()));
        old.power_going();
        self.cache.cut_power();
        // Nothing of the old engine reaches the device any more: where its
        // event log stands is final.
        let events_end = old.event_log().end_ids();
        old.abandon();
        let lost = old.unsynced();
        let stale = old.inodes_known_to_the_kernel();
        let number = self.cuts.fetch_add(1, Ordering::Relaxed) + 1;
        let device = self
            .cache
            .restore_power(loss)
            .map_err(|error| CutError::Remount(format!("the image: {error}")))?;
        // The history says why the mount recovered: this cut, not a crash.
        self.plan
            .log_event(None, FaultLogEvent::PowerCut { number });
        let new = match self.mount(Some(events_end)) {
            Ok(new) => Arc::new(new),
            Err(error) => {
                // No log to write it in now: the next boot that mounts
                // records it, in an event's short text; the whole reason
                // goes to the daemon's log (and to whoever asked the cut).
                eprintln!("vigilfs: power cut {number}: mounting the image again failed: {error}");
                let active_rules = (self.plan.rules().len() + old.file_rules().len()) as u64;
                lock(&self.failed_boots).push(FailedBoot {
                    number,
                    active_rules,
                    reason: error.to_string(),
                });
                return Err(CutError::Remount(error.to_string()));
            }
        };
        new.take_over_file_rules(&old);
        let active = (self.plan.rules().len() + new.file_rules().len()) as u64;
        for failed in lock(&self.failed_boots).drain(..) {
            let what = format!("power cut {} (crash lab): its boot failed", failed.number);
            new.note_fault_rules(&what, failed.active_rules);
            new.record_failed_boot(&what);
        }
        // The rule count leaves out the lying device, which costs the most.
        let lying = match self.drops_flushes() {
            true => "; the device drops flushes",
            false => "",
        };
        new.note_fault_rules(&format!("power cut {number} (crash lab{lying})"), active);
        if flags.is_some_and(|flags| flags.read_only) {
            // The kernel's mount stays read-only: the new engine must not
            // write on behalf of reads either.
            let read_only = SettingsChange {
                read_only: Some(true),
                ..SettingsChange::default()
            };
            let _ = new.reconfigure(&read_only);
        }
        if let Some(slot) = self.engine.get() {
            slot.replace(Arc::clone(&new));
        }
        let replayed = new.recovered();
        if let Some(session) = self.session.get() {
            // Other mount points showing the filesystem (a second mount of
            // the image, a bind) keep the old mount, whose engine is gone:
            // they are made to show the new one, as a reboot's fstab would.
            let old_device = device_name(session.device());
            let others = other_views(&old_device, session.mountpoint(), number);
            session.restart(new, &stale, flags).map_err(|error| {
                CutError::Remount(format!("restarting the FUSE session: {error}"))
            })?;
            let new_device = device_name(session.device());
            for view in others {
                let shown = show_again(session.mountpoint(), &view, &old_device, &new_device);
                if let Err(error) = shown {
                    eprintln!(
                        "vigilfs: power cut {number}: {} no longer shows the filesystem: {error}",
                        view.mountpoint.display()
                    );
                }
            }
            // As a reboot would mount it again from fstab. A refusal leaves
            // the defaults: the daemon's own atime setting, which decides
            // what is recorded, is kept either way.
            if let Some(flags) = other_flags {
                let _ = vigilfs_fuse::set_flags(session.mountpoint(), OTHER_FLAGS, flags);
            }
        }
        Ok(CutReport {
            number,
            lost,
            device,
            took: start.elapsed(),
            replayed,
        })
    }
}

/// The mount points other than `primary` showing the FUSE mount `device`
/// on top now, each once (as its topmost mount shows it), outside
/// `primary` (those inside go with it). One that another filesystem
/// covers is left as it is, and logged: re-pointing it would take the
/// covering one away.
fn other_views(device: &str, primary: &Path, number: u64) -> Vec<MountEntry> {
    let Ok(mounts) = Mounts::read() else {
        return Vec::new();
    };
    let mut views: Vec<MountEntry> = Vec::new();
    for entry in mounts.entries() {
        let seen = views.iter().any(|view| view.mountpoint == entry.mountpoint);
        if entry.device != device
            || !entry.is_fuse()
            || entry.mountpoint.starts_with(primary)
            || seen
        {
            continue;
        }
        match mounts.topmost_at(&entry.mountpoint) {
            Some(top) if top.device == device => views.push(top.clone()),
            _ => eprintln!(
                "vigilfs: power cut {number}: {} shows the filesystem under another mount, \
                 and goes on showing it as it was before the cut (every request fails): \
                 unmount both",
                entry.mountpoint.display()
            ),
        }
    }
    views
}

/// Makes `view`'s mount point show the mount now on `primary` (`new`):
/// every mount of the old one (`old`) stacked there (a bind on a bind) is
/// detached, then the view's directory is bound with its per-mount flags.
/// Not if `primary` no longer shows the new mount (unmounted meanwhile):
/// the bind would show the bare directory under it.
fn show_again(primary: &Path, view: &MountEntry, old: &str, new: &str) -> std::io::Result<()> {
    // Bounded: a mount point the detach cannot clear stops it.
    for _ in 0..16 {
        let mounts = Mounts::read()?;
        match mounts.topmost_at(&view.mountpoint) {
            Some(top) if top.device == old => second_mount::detach_top(&view.mountpoint)?,
            _ => break,
        }
    }
    let mounts = Mounts::read()?;
    if mounts
        .topmost_at(primary)
        .is_none_or(|top| top.device != new)
    {
        return Err(std::io::Error::other(format!(
            "{} no longer shows the filesystem either",
            primary.display()
        )));
    }
    second_mount::bind_view(primary, &view.root, &view.mountpoint, view_flags(view))
}

/// The per-mount flags of `view`: a bind keeps its own `ro`, `nosuid`,
/// `nodev`, `noexec`, atime flags and `nosymfollow` (the filesystem's are
/// the new mount's).
fn view_flags(view: &MountEntry) -> libc::c_ulong {
    let has = |flag: &str| view.mount_options.split(',').any(|option| option == flag);
    let mut flags = entry_other_flags(view);
    for (word, flag) in [
        ("ro", libc::MS_RDONLY),
        ("nosuid", libc::MS_NOSUID),
        ("nodev", libc::MS_NODEV),
        ("noexec", libc::MS_NOEXEC),
    ] {
        if has(word) {
            flags |= flag;
        }
    }
    flags
}

/// The `mount(2)` flags a new FUSE session does not take from
/// [`vigilfs_fuse::MountFlags`] (the atime flags and `nosymfollow`), as the
/// mount on `mountpoint` has them now, from the mount table.
fn current_other_flags(mountpoint: &Path) -> Option<libc::c_ulong> {
    let mounts = Mounts::read().ok()?;
    Some(entry_other_flags(mounts.topmost_at(mountpoint)?))
}

/// The atime flags and `nosymfollow` of the mount `entry`.
fn entry_other_flags(entry: &MountEntry) -> libc::c_ulong {
    let has = |flag: &str| entry.mount_options.split(',').any(|option| option == flag);
    let mut flags = if has("noatime") {
        libc::MS_NOATIME
    } else if has("relatime") {
        libc::MS_RELATIME
    } else {
        libc::MS_STRICTATIME
    };
    for (word, flag) in [
        ("nodiratime", libc::MS_NODIRATIME),
        ("nosymfollow", libc::MS_NOSYMFOLLOW),
    ] {
        if has(word) {
            flags |= flag;
        }
    }
    flags
}

/// The flags [`current_other_flags`] reads.
const OTHER_FLAGS: libc::c_ulong = vigilfs_fuse::ATIME_FLAGS | libc::MS_NOSYMFOLLOW;

/// The per-mount flags of the mount on `mountpoint` now, from the mount
/// table (asking the mount itself would need its engine).
fn current_flags(mountpoint: &Path) -> Option<vigilfs_fuse::MountFlags> {
    let mounts = Mounts::read().ok()?;
    let entry = mounts.topmost_at(mountpoint)?;
    let has = |flag: &str| entry.mount_options.split(',').any(|option| option == flag);
    Some(vigilfs_fuse::MountFlags {
        read_only: entry.read_only(),
        set_id: !has("nosuid"),
        devices: !has("nodev"),
        exec: !has("noexec"),
    })
}
