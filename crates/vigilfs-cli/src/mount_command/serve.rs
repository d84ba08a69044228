//! The mounted life of `vigilfs mount`: start the engine, mount it
//! through FUSE, serve the control socket, and wait for a signal or an
//! `umount` from outside; then unmount and finish the engine.
//!
//! The engine is unmounted only once nothing else in the process holds
//! it (waited for up to 30 s; after that what it holds is written back
//! and the journal left to the next mount). The image's lock is dropped
//! only after that, so a command waiting for it finds the image finished.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use vigilfs::fs::LifeState;

use super::engine::{start_engine, Engine};
use super::{fuse_config, fuse_mount_hint, group_id, MountRequest, Prepared};
use crate::control;
use crate::daemon_log::log;
use crate::engine_slot::EngineSlot;
use crate::failure::Failure;
use crate::kernel_read_only;
use crate::mountinfo::{device_name, Mounts};
use crate::power_cut::PowerSwitch;
use crate::signals;

/// The mount points showing the FUSE filesystem with device number
/// `device` (`MAJ:MIN`) on top, newest first (a bind of a bind goes
/// before its source). One with another filesystem mounted over it is
/// left out, and logged: unmounting the path would take that one away.
fn showing_device(device: &str) -> Vec<PathBuf> {
    let Ok(mounts) = Mounts::read() else {
        return Vec::new();
    };
    let mut shown = Vec::new();
    for entry in mounts.entries().iter().rev() {
        if entry.device != device || !entry.is_fuse() || shown.contains(&entry.mountpoint) {
            continue;
        }
        let on_top = mounts.topmost_at(&entry.mountpoint);
        if on_top.is_some_and(|top| top.device == device) {
            shown.push(entry.mountpoint.clone());
        } else {
            log(&format!(
                "{} has another filesystem mounted over it: left mounted (unmount both to \
                 end this mount)",
                entry.mountpoint.display()
            ));
        }
    }
    shown
}

/// Unmounts `mountpoint` as `umount` would: a busy mount is detached
/// lazily (it goes once the last open file closes).
fn unmount_from_inside(mountpoint: &Path) {
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: umount2 with a valid NUL-terminated path.
    let result = unsafe { libc::umount2(path.as_ptr(), 0) };
    if result == 0 {
        return;
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EBUSY) {
        log(&format!(
            "{} is busy; detaching it (the mount goes when the last file closes)",
            mountpoint.display()
        ));
        // SAFETY: as above.
        unsafe {
            libc::umount2(path.as_ptr(), libc::MNT_DETACH);
        }
        return;
    }
    if error.raw_os_error() != Some(libc::EPERM) {
        log(&format!("unmounting {}: {error}", mountpoint.display()));
        return;
    }
    // Not root: the setuid helper does it.
    let lazy = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .status();
    if !lazy.is_ok_and(|status| status.success()) {
        log(&format!("unmounting {}: {error}", mountpoint.display()));
    }
}

/// Mounts and serves until unmounted; `ready` hears once that the mount
/// answers (or why it could not).
pub(super) fn serve(
    request: &MountRequest,
    prepared: Prepared,
    ready: &mut dyn FnMut(Result<(), &Failure>),
) -> Result<u8, Failure> {
    let Prepared {
        image,
        mountpoint,
        settings,
        lock,
    } = prepared;
    // SIGQUIT (Ctrl-\) too: its default, a core dump, left a dead mount
    // that only `umount` cleared, its data not written back.
    let mut pipe = signals::install(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT])
        .map_err(|error| Failure::operational(format!("signal handlers: {error}")))?;
    let Engine {
        fs,
        plan,
        power,
        image: writable_image,
    } = start_engine(&image, &settings)?;
    if fs.recovered() {
        log("the filesystem was not cleanly unmounted: the journal was replayed");
    }
    // Read-only unasked: the image has features this build cannot write.
    if let LifeState::ReadOnly(why) = fs.status().state {
        if !settings.read_only {
            log(&format!("mounted read-only: {why}"));
        }
    }
    if let Some(entries) = describe_cut_off(fs.entries_cut_off()) {
        log(&format!(
            "journal {entries} written after the last completed flush were cut off (torn by the \
             crash, or damaged since): what they changed after the last fsync is lost, as after \
             any crash"
        ));
    }
    for why in fs.unreadable_trees() {
        log(&format!(
            "{why}: mounted read-only around that tree, whose operations fail with EIO; \
             copy out what the rest holds"
        ));
    }

    let slot = EngineSlot::new(fs);
    let trimmer = match crate::memory_trim::spawn(Arc::clone(&slot)) {
        Ok(trimmer) => Some(trimmer),
        Err(error) => {
            log(&format!(
                "not giving freed memory back to the system: {error}"
            ));
            None
        }
    };
    let listener = match crate::daemon_events::spawn(Arc::clone(&slot), log) {
        Ok(thread) => Some(thread),
        Err(error) => {
            log(&format!("not logging the filesystem's events: {error}"));
            None
        }
    };
    // A failure before the FUSE mount: the engine is closed, never said
    // to be unmounted.
    let close_unmounted = |listener| {
        finish(
            &slot,
            power.as_deref(),
            listener,
            &image,
            Ending::BeforeMounting,
        )
    };

    let mut extra = Map::new();
    extra.insert("image".into(), json!(image.display().to_string()));
    // Which file is served, whatever its name becomes: `status` says when
    // the path no longer leads to it, and a mount or fsck of the file
    // under another name finds this mount by it.
    if let Ok((device, inode)) = crate::mountinfo::file_identity(&image) {
        extra.insert(
            "image_identity".into(),
            json!({ "device": device, "inode": inode }),
        );
    }
    extra.insert("mount_options".into(), json!(request.options.join(",")));
    let owner = control::current_uid();
    let events_gid = match &settings.events_group {
        Some(group) => Some(group_id(group)?),
        None => None,
    };
    let metrics = match &settings.metrics {
        Some(address) => {
            match crate::metrics_http::serve(address, Arc::clone(&slot), Arc::clone(&plan)) {
                Ok(metrics) => {
                    // The address bound: port 0 asks the system for one.
                    // Said once mounted: a mount that fails serves none.
                    let bound = metrics.address();
                    extra.insert("metrics_address".into(), json!(bound.to_string()));
                    Some(metrics)
                }
                Err(message) => {
                    let failure = Failure::operational(message);
                    let _ = close_unmounted(listener);
                    return Err(failure);
                }
            }
        }
        // A stable field, null when nothing is served (review 43: a
        // documented field missing from the JSON).
        None => {
            extra.insert("metrics_address".into(), Value::Null);
            None
        }
    };
    let served_device = control::server::MountedDevice::default();
    let server = control::server::serve(
        &mountpoint,
        control::server::Served {
            engine: Arc::clone(&slot),
            plan: Arc::clone(&plan),
            power: power.clone(),
            image: writable_image.clone(),
            owner_uid: owner,
            events_gid,
            // As the kernel lets them in (allow_other: by default when root
            // mounts).
            others_may_sync: fuse_config(&settings, &image).lets_other_users_in(),
            extra,
            limits: control::server::Limits::default(),
            device: Arc::clone(&served_device),
        },
    );
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            let failure = Failure::operational(format!("control socket: {error}"));
            if let Some(metrics) = metrics {
                metrics.stop();
            }
            let _ = close_unmounted(listener);
            return Err(failure);
        }
    };
    let config = fuse_config(&settings, &image);
    let first = slot
        .current()
        .expect("the engine is in its slot until the end");
    let mounted = match vigilfs_fuse::mount(first, &mountpoint, &config) {
        Ok(mounted) => mounted,
        Err(error) => {
            let failure = Failure::operational(format!(
                "cannot mount {} on {}: {error}{}",
                image.display(),
                mountpoint.display(),
                fuse_mount_hint()
            ));
            server.stop();
            let _ = close_unmounted(listener);
            return Err(failure);
        }
    };
    let _ = served_device.set(mounted.restarter());
    if let Some(metrics) = &metrics {
        log(&format!(
            "serving metrics at http://{}/metrics",
            metrics.address()
        ));
    }
    // The FUSE connection's device number, shared by every mount point
    // showing it (second mounts of the image are binds of this one).
    let device = Mounts::read().ok().and_then(|mounts| {
        mounts
            .topmost_at(&mountpoint)
            .map(|entry| entry.device.clone())
    });
    // Through FUSE the daemon records access times; the kernel's atime
    // flags only show the setting (in the mount table, where mount(8)
    // reads the options a remount starts from), so they must say it. Only
    // root may change them; a user's mount shows the kernel's default.
    // `nosymfollow` is the kernel's alone, set the same way.
    let mut flags = vigilfs_fuse::atime_flags(
        settings.atime.unwrap_or_default(),
        settings.directory_atime.unwrap_or(true),
    );
    if settings.follow_symlinks == Some(false) {
        flags |= libc::MS_NOSYMFOLLOW;
    }
    let mask = vigilfs_fuse::ATIME_FLAGS | libc::MS_NOSYMFOLLOW;
    if let Err(error) = vigilfs_fuse::set_flags(&mountpoint, mask, flags) {
        if control::current_uid() == 0 {
            log(&format!(
                "the mount table's flags stay the kernel's defaults: {error}"
            ));
        }
    }
    if let Some(power) = &power {
        power.attach(Arc::clone(&slot), mounted.restarter());
    }
    let read_only_watch = device.as_ref().and_then(|_| {
        let watch = kernel_read_only::Watch::start(
            mounted.restarter(),
            mountpoint.clone(),
            Arc::clone(&slot),
            power.clone(),
            writable_image,
            log,
        );
        match watch {
            Ok(watch) => Some(watch),
            Err(error) => {
                log(&format!(
                    "not watching the mount table ({error}): a remount that reaches only the \
                     kernel goes unseen"
                ));
                None
            }
        }
    });
    if let Some(path) = &request.pid_file {
        if let Err(error) = std::fs::write(path, format!("{}\n", std::process::id())) {
            log(&format!("pid file {}: {error}", path.display()));
        }
    }
    // Ready first: the waiting parent says "mounted" itself.
    ready(Ok(()));
    log(&format!(
        "mounted {} on {}{}{} (control socket {})",
        image.display(),
        mountpoint.display(),
        if settings.read_only { " read-only" } else { "" },
        if power.is_some() { " crashable" } else { "" },
        server.path().display()
    ));

    // A power cut makes a new kernel mount: the signal path asks for the
    // device number it has now.
    let session = mounted.restarter();
    let waiter = pipe.notifier().ok().and_then(|notifier| {
        std::thread::Builder::new()
            .name("vigilfs-session".into())
            .spawn(move || {
                let outcome = mounted.wait();
                notifier.post(signals::UNMOUNTED);
                outcome
            })
            .ok()
    });
    loop {
        match pipe.next() {
            Ok(signals::UNMOUNTED) | Err(_) => break,
            Ok(signal) => {
                // Writers waiting for a thaw keep their files open, and a
                // busy mount goes only once they close: frozen, a mount
                // detached lazily would never end, and nothing else can
                // reach it once it is out of the mount table.
                // A freeze still in progress ends thawed, too.
                if slot.current().is_some_and(|fs| fs.end_freezes()) {
                    log(&format!(
                        "{}: thawed {} to unmount it",
                        signals::name(signal),
                        mountpoint.display()
                    ));
                }
                // A power cut in progress completes first (and none comes
                // after): it makes a new mount and re-points the others,
                // which the unmount below must then see (a signal during a
                // cut was lost, or a bind ended on the bare directory).
                if let Some(power) = &power {
                    power.close();
                }
                // Every mount point showing this filesystem: the server
                // goes only once the last is gone, so a second one, or
                // the first one unmounted before, must not keep it.
                let mount_points = device
                    .as_ref()
                    .map(|_| showing_device(&device_name(session.device())))
                    .unwrap_or_else(|| vec![mountpoint.clone()]);
                // Already detached (a second Ctrl-C while files stay
                // open): nothing to unmount, but the user asks why it is
                // not over.
                if mount_points.is_empty() {
                    let open = slot.current().map_or(0, |fs| fs.status().open_files);
                    log(&format!(
                        "{}: {} is detached and ends when its last open file closes \
                         ({open} still open)",
                        signals::name(signal),
                        mountpoint.display()
                    ));
                }
                for shown in &mount_points {
                    log(&format!(
                        "{}: unmounting {}",
                        signals::name(signal),
                        shown.display()
                    ));
                    unmount_from_inside(shown);
                }
            }
        }
    }
    if let Some(waiter) = waiter {
        match waiter.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => log(&format!("FUSE session: {error}")),
            Err(_) => log("FUSE session thread panicked"),
        }
    }
    if let Some(watch) = read_only_watch {
        watch.stop();
    }
    server.stop();
    if let Some(metrics) = metrics {
        metrics.stop();
    }
    drop(trimmer);
    let outcome = finish(
        &slot,
        power.as_deref(),
        listener,
        &image,
        Ending::AfterServing,
    );
    // Listeners get the last events and the end of their stream.
    control::stream::drain(Duration::from_secs(5));
    if let Some(path) = &request.pid_file {
        // Only if it is still ours: another mount may have taken the name
        // since (when this process had ended otherwise).
        let ours = std::fs::read_to_string(path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
    drop(lock);
    outcome
}

/// Whether the engine being finished was ever served through FUSE: the
/// log must not say "unmounted" of a mount that failed before it began.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    AfterServing,
    BeforeMounting,
}

/// Takes the engine out of its slot (after any power cut in progress; no
/// other starts) and unmounts it once every other holder let go, then
/// waits for the event listener to drain.
fn finish(
    slot: &EngineSlot,
    power: Option<&PowerSwitch>,
    listener: Option<std::thread::JoinHandle<()>>,
    image: &Path,
    ending: Ending,
) -> Result<u8, Failure> {
    if let Some(power) = power {
        power.close();
    }
    // Errors damping holds become records, and the files the newest
    // events name are remembered, while the engine can still name them:
    // the listeners reading them may get to them only once it is gone.
    if let Some(fs) = slot.current() {
        slot.remember_paths_for_unmount(&fs);
        fs.event_log().release_held();
    }
    let Some(mut fs) = slot.take() else {
        return Err(Failure::operational("the engine was already unmounted"));
    };
    let mut waited = Duration::ZERO;
    let fs = loop {
        match Arc::try_unwrap(fs) {
            Ok(fs) => break Ok(fs),
            Err(shared) if waited < Duration::from_secs(30) => {
                fs = shared;
                std::thread::sleep(Duration::from_millis(20));
                waited += Duration::from_millis(20);
            }
            Err(shared) => break Err(shared),
        }
    };
    let unmounted = fs.is_ok();
    let outcome = match fs {
        Ok(fs) => match (fs.status().state, fs.unmount()) {
            (state, Ok(())) => {
                let how = match state {
                    LifeState::Running | LifeState::Frozen => "clean".to_string(),
                    LifeState::ReadOnly(why) if why.starts_with("mounted read-only") => {
                        "it was mounted read-only".to_string()
                    }
                    other => format!(
                        "{}: left for the next mount to recover from the journal",
                        other.name()
                    ),
                };
                match ending {
                    Ending::AfterServing => log(&format!("unmounted {} ({how})", image.display())),
                    Ending::BeforeMounting => log(&format!(
                        "closed {} without mounting it ({how})",
                        image.display()
                    )),
                }
                Ok(0)
            }
            (_, Err(error)) => {
                let message = format!(
                    "unmounting {}: {}",
                    image.display(),
                    control::server::fs_error_message(&error)
                );
                log(&message);
                Err(Failure::operational(message))
            }
        },
        Err(shared) => {
            // Something inside the process still holds the engine, so it
            // cannot be unmounted; what it holds dirty is still written
            // back, so that nothing a closed file had is lost (umount
            // returned long ago). The next mount replays the journal.
            // Bounded too: the holder may be stuck where the sync would
            // wait as well (a slow device, a held delay).
            let (done, outcome) = std::sync::mpsc::channel();
            let _ = std::thread::Builder::new()
                .name("vigilfs-last-sync".into())
                .spawn(move || {
                    let _ = done.send(shared.syncfs_once());
                });
            let written = match outcome.recv_timeout(Duration::from_secs(60)) {
                Ok(Ok(())) => "after writing everything back".to_string(),
                Ok(Err(error)) => format!(
                    "and writing back failed: {}",
                    control::server::fs_error_message(&error)
                ),
                Err(_) => "without writing back: that did not end within 60 s".to_string(),
            };
            let message = format!(
                "unmounting {}: the filesystem is still in use inside the process after 30 s; \
                 stopped {written} (the next mount replays the journal)",
                image.display()
            );
            log(&message);
            Err(Failure::operational(message))
        }
    };
    // The listener ends once the unmount has closed the event log; without
    // an unmount it would wait forever.
    if let (Some(listener), true) = (listener, unmounted) {
        let _ = listener.join();
    }
    outcome
}

/// "entry 6" or "entries 6, 7": None for none.
fn describe_cut_off(entries: &[u64]) -> Option<String> {
    let listed: Vec<String> = entries.iter().map(u64::to_string).collect();
    match listed.len() {
        0 => None,
        1 => Some(format!("entry {}", listed[0])),
        _ => Some(format!("entries {}", listed.join(", "))),
    }
}
