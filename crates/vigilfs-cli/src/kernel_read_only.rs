//! The kernel's read-only flag of the mount, followed by the daemon.
//!
//! A remount through the helper (`mount -o remount,ro`) tells the daemon,
//! which writes everything back and makes it durable before the remount
//! returns. A remount that reaches only the kernel (`mount -i`, no helper
//! installed in /sbin, a program calling mount(2)) tells FUSE nothing: the
//! daemon would go on writing dirty data into an image its user believes
//! quiet. So a thread watches the mount table (the kernel wakes pollers of
//! /proc/self/mountinfo on every change) and, when the filesystem's
//! superblock turns read-only or read-write, makes the same change the
//! helper asks for. It cannot make the remount wait: the image settles
//! moments after it returns, not before.
//!
//! A read-only mount whose kernel mount turns read-write is made writable
//! the same way, once per such turn; if it cannot be (an error keeps it
//! read-only, the image cannot be written), the kernel's mount is made
//! read-only again and the daemon's log says why: a mount the table calls
//! rw must not answer every write with EROFS.
//!
//! A power cut (crash lab) replaces the kernel's mount with a new one,
//! whose device number differs from the old one's while a descriptor
//! keeps the old mount alive: the watch asks the session for the number
//! on every round, and looks at a new mount afresh.
//!
//! Invariants: the watch acts only when the kernel's flag changed since
//! its last look (or on its first look), and then only if the flag differs
//! from what the engine was last told. So a helper's remount (which tells
//! the engine itself) makes no second change, and a table read just
//! before a helper's remount (still the old flag, the engine already told
//! the new one) does not undo it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use vigilfs::fs::{LifeState, SettingsChange};
use vigilfs_fuse::Restarter;

use crate::engine_slot::EngineSlot;
use crate::mountinfo::{device_name, Mounts};
use crate::power_cut::PowerSwitch;
use crate::writable_image::WritableImage;

/// How long a wait for a mount table change lasts before the thread looks
/// whether it should stop.
const POLL_MILLISECONDS: i32 = 500;

/// The running watch; [`Watch::stop`] ends it.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Watches the FUSE filesystem `session` serves (its mount now) and
    /// follows its read-only flag in the engine `slot` serves (through
    /// `power` on a crashable mount, whose later boots keep the change;
    /// making a read-only mount writable through `image`).
    pub fn start(
        session: Restarter,
        mountpoint: PathBuf,
        slot: Arc<EngineSlot>,
        power: Option<Arc<PowerSwitch>>,
        image: Option<Arc<WritableImage>>,
        log: fn(&str),
    ) -> std::io::Result<Watch> {
        let table = File::open("/proc/self/mountinfo")?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("vigilfs-mount-table".into())
                .spawn(move || {
                    let followed = Followed {
                        mountpoint: &mountpoint,
                        slot: &slot,
                        power: power.as_deref(),
                        image: image.as_deref(),
                        log,
                    };
                    follow(table, &session, &followed, &stop);
                })?
        };
        Ok(Watch {
            stop,
            thread: Some(thread),
        })
    }

    /// Ends the thread (within [`POLL_MILLISECONDS`]).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the watch changes, and where it says so.
struct Followed<'a> {
    mountpoint: &'a Path,
    slot: &'a EngineSlot,
    power: Option<&'a PowerSwitch>,
    image: Option<&'a WritableImage>,
    log: fn(&str),
}

fn follow(mut table: File, session: &Restarter, followed: &Followed<'_>, stop: &AtomicBool) {
    let log = followed.log;
    // The kernel's flag of the mount `device` when last looked at.
    let mut device = String::new();
    let mut was_read_only = None;
    while !stop.load(Ordering::Acquire) {
        let now = device_name(session.device());
        if now != device {
            device = now;
            was_read_only = None;
        }
        let mut text = String::new();
        // Reading the table from its start also rearms the wake-up.
        if table.seek(SeekFrom::Start(0)).is_err() || table.read_to_string(&mut text).is_err() {
            log("the mount table cannot be read: a remount that reaches only the kernel goes unseen");
            return;
        }
        if let Some(read_only) = superblock_read_only(&Mounts::parse(&text), &device) {
            // A change seen while no engine serves (a power cut's reboot)
            // is looked at again on the next round.
            if was_read_only != Some(read_only)
                && follow_flag(read_only, was_read_only == Some(true), followed)
            {
                was_read_only = Some(read_only);
            }
        }
        let mut poll = libc::pollfd {
            fd: table.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe {
            libc::poll(&mut poll, 1, POLL_MILLISECONDS);
        }
    }
}

/// Whether the superblock of the FUSE filesystem `device` is read-only
/// (not one read-only view of it: a bind mount's own flag); `None` when
/// it is mounted nowhere.
fn superblock_read_only(mounts: &Mounts, device: &str) -> Option<bool> {
    mounts
        .entries()
        .iter()
        .find(|entry| entry.device == device && entry.is_fuse())
        .map(|entry| entry.super_options.split(',').next() == Some("ro"))
}

/// Makes the engine follow the kernel's flag `read_only`; false when no
/// engine serves now.
fn follow_flag(read_only: bool, turned_read_write: bool, followed: &Followed<'_>) -> bool {
    let Followed {
        mountpoint,
        slot,
        power,
        image,
        log,
    } = *followed;
    let Some(fs) = slot.current() else {
        return false;
    };
    let state = fs.status().state;
    if turned_read_write && matches!(state, LifeState::ReadOnly(_) | LifeState::ShutDown(_)) {
        // A read-only mount (or one an error made read-only, or shut
        // down, which the engine refuses, as the helper would have) whose
        // kernel mount turned read-write.
        let made = match image {
            Some(image) => image.make_writable(&fs).map_err(|(message, _)| message),
            None => fs.make_writable().map_err(|error| error.to_string()),
        };
        match made {
            Ok(()) => log("the kernel's mount became read-write: the filesystem is writable now"),
            Err(why) => {
                let back =
                    match vigilfs_fuse::set_flags(mountpoint, libc::MS_RDONLY, libc::MS_RDONLY) {
                        Ok(()) => "the kernel's mount is read-only again".to_string(),
                        Err(error) => format!("the kernel's mount stays read-write: {error}"),
                    };
                log(&format!(
                    "the kernel's mount became read-write, the filesystem stays read-only \
                     ({back}): {why}"
                ));
            }
        }
        return true;
    }
    // A filesystem that may not write (mounted `ro`, made read-only by
    // errors=remount-ro, which turns the kernel's mount read-only itself,
    // shut down) has nothing to write back, and may not become writable.
    let writable = matches!(state, LifeState::Running | LifeState::Frozen);
    if fs.transport_read_only() == read_only || !writable {
        return true;
    }
    let change = SettingsChange {
        read_only: Some(read_only),
        ..SettingsChange::default()
    };
    let changed = match power {
        Some(power) => power.reconfigure(&change),
        None => fs.reconfigure(&change),
    };
    match changed {
        Ok(()) => log(&format!(
            "the kernel's mount became {}: {}",
            if read_only { "read-only" } else { "read-write" },
            if read_only {
                "everything is written back and durable"
            } else {
                "writing goes on"
            }
        )),
        Err(error) => log(&format!("following the kernel's remount: {error}")),
    }
    true
}
