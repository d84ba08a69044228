//! The crash lab's two moving parts for one trial of `vigilfs crash-test`:
//! a fresh image mounted crashable in the work directory ([`LabMount`]:
//! its engine, its FUSE session and its control socket, torn down whatever
//! happens), and the program under test ([`Program`]: its own process
//! group, so a power cut can kill everything it started, with its output
//! kept for the report).

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vigilfs::device::{FaultPlan, FileDevice, FileDeviceOptions};
use vigilfs::fs::faults::Operation;
use vigilfs::fsck::{fsck_with, FsckOptions};

use crate::control::server::{self, ControlServer, Served};
use crate::crash_test_janitor::{detach, kill_group};
use crate::crash_test_reaper::{end_and_reap, warn_of_survivors};
use crate::engine_slot::EngineSlot;
use crate::failure::Failure;
use crate::mount_command::{fuse_config, mount_options};
use crate::mount_options::MountSettings;
use crate::mountinfo::Mounts;
use crate::power_cut::PowerSwitch;
use crate::size::ByteSize;

use crate::crash_test_command::{interrupted, Counts, OUTPUT_LINES};

/// One fresh image mounted crashable in the work directory.
pub(crate) struct LabMount {
    pub(crate) image: PathBuf,
    pub(crate) mountpoint: PathBuf,
    pub(crate) switch: Arc<PowerSwitch>,
    pub(crate) slot: Arc<EngineSlot>,
    pub(crate) session: Option<vigilfs_fuse::Mounted>,
    /// The mount's control socket: a workload may run `vigilfs sync`
    /// (its durability point, syncfs not reaching the daemon), `status`,
    /// `unsynced`...
    pub(crate) control: Option<ControlServer>,
}

/// Makes `directory` (a lab mount point), or takes it if it is already
/// an empty directory of this user's: in a shared work directory another
/// user's would be mounted over and then removed.
fn own_empty_directory(directory: &Path) -> Result<(), Failure> {
    let failed =
        |error: std::io::Error| Failure::operational(format!("{}: {error}", directory.display()));
    match fs::create_dir(directory) {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(failed(error))
        }
        Err(_) => {}
    }
    let metadata = fs::symlink_metadata(directory).map_err(failed)?;
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let ours = metadata.uid() == unsafe { libc::geteuid() };
    let empty = || fs::read_dir(directory).is_ok_and(|mut entries| entries.next().is_none());
    if metadata.is_dir() && ours && empty() {
        return Ok(());
    }
    Err(Failure::operational(format!(
        "{} exists and is not an empty directory of this user's: a run mounts there, so it \
         uses only one it made; remove it or use another --work-dir",
        directory.display()
    )))
}

/// Detaches what programs mounted on top of the lab's mount at
/// `mountpoint`, or inside it, newest first. Unmounting the lab's mount by
/// its path would otherwise take the top one instead and then wait for
/// the lab's session for good (review 39: a workload that mounted a tmpfs
/// there hung the run, deaf to SIGTERM).
fn detach_foreign_mounts(mountpoint: &Path) {
    let Ok(mounts) = Mounts::read() else {
        return;
    };
    let inside: Vec<_> = mounts
        .entries()
        .iter()
        .filter(|entry| entry.mountpoint.starts_with(mountpoint))
        .collect();
    // The lab's own is the first FUSE mount at the mount point (a
    // directory it made empty, or took empty, just before).
    let own = inside
        .iter()
        .position(|entry| entry.mountpoint == mountpoint && entry.is_fuse());
    for (index, entry) in inside.iter().enumerate().rev() {
        if Some(index) != own {
            detach(&entry.mountpoint);
        }
    }
}

impl LabMount {
    pub(crate) fn start(
        directory: &Path,
        name: &str,
        settings: &MountSettings,
        size: ByteSize,
    ) -> Result<LabMount, Failure> {
        let image = directory.join(format!("{name}.img"));
        let mountpoint = directory.join(format!("{name}.mnt"));
        // First the mount point: refused, it leaves no image behind.
        own_empty_directory(&mountpoint)?;
        let _ = fs::remove_file(&image);
        if let Some(warning) = crate::mkfs_command::create_formatted(&image, size)? {
            eprintln!("vigilfs: {warning}");
        }
        let file = FileDevice::open(&image, FileDeviceOptions::default()).map_err(|error| {
            Failure::operational(format!("cannot open {}: {error}", image.display()))
        })?;
        let plan = Arc::new(FaultPlan::new());
        let switch = Arc::new(PowerSwitch::new(
            Arc::new(file),
            Arc::clone(&plan),
            mount_options(settings, &plan),
        ));
        let engine = switch.mount_first().map_err(|error| {
            Failure::operational(format!("cannot mount {}: {error}", image.display()))
        })?;
        let slot = EngineSlot::new(Arc::new(engine));
        let first = slot.current().expect("the engine was just put in");
        let session = vigilfs_fuse::mount(first, &mountpoint, &fuse_config(settings, &image))
            .map_err(|error| {
                Failure::operational(format!(
                    "cannot mount on {}: {error}{}",
                    mountpoint.display(),
                    crate::mount_command::fuse_mount_hint()
                ))
            })?;
        switch.attach(Arc::clone(&slot), session.restarter());
        let mut extra = serde_json::Map::new();
        extra.insert("image".into(), json!(image.display().to_string()));
        let device = server::MountedDevice::default();
        let _ = device.set(session.restarter());
        let control = server::serve(
            &mountpoint,
            Served {
                power: Some(Arc::clone(&switch)),
                extra,
                device,
                ..Served::new(Arc::clone(&slot), plan, crate::control::current_uid())
            },
        )
        .map_err(|error| Failure::operational(format!("control socket: {error}")))?;
        Ok(LabMount {
            image,
            mountpoint,
            switch,
            slot,
            session: Some(session),
            control: Some(control),
        })
    }

    /// What a program did to the lab's mount that leaves the next one
    /// nothing to test, if anything: unmounted it, or mounted another
    /// filesystem over it.
    pub(crate) fn taken_away(&self) -> Option<&'static str> {
        let mounts = Mounts::read().ok()?;
        match mounts.topmost_at(&self.mountpoint) {
            None => Some("unmounted the mount it runs in"),
            Some(entry) if !entry.is_fuse() => {
                Some("mounted another filesystem over the mount it runs in")
            }
            Some(_) => None,
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        let engine = self.slot.current();
        let started = |operation| {
            engine
                .as_ref()
                .map_or(0, |engine| engine.operations_started(operation))
        };
        Counts {
            fsyncs: started(Operation::Fsync),
            directory_fsyncs: started(Operation::Fsyncdir),
            writes: started(Operation::Write),
            other_changes: Operation::ALL
                .into_iter()
                .filter(|operation| operation.changes_metadata())
                .map(started)
                .sum(),
        }
    }

    /// Makes everything written so far durable (the setup's result, which
    /// no cut may take).
    pub(crate) fn make_durable(&self) -> Result<(), Failure> {
        let Some(engine) = self.slot.current() else {
            return Ok(());
        };
        engine
            .syncfs_once()
            .map_err(|error| Failure::operational(format!("syncing after the setup: {error}")))
    }

    /// Unmounts (FUSE, then the engine) and checks the image; whether fsck
    /// found it clean, with what it found otherwise.
    pub(crate) fn finish(mut self) -> Result<(bool, Vec<String>), Failure> {
        self.stop()?;
        let device = FileDevice::open(
            &self.image,
            FileDeviceOptions {
                read_only: true,
                ..FileDeviceOptions::default()
            },
        )
        .map_err(|error| Failure::operational(format!("{}: {error}", self.image.display())))?;
        let report = fsck_with(Arc::new(device), FsckOptions { data: true }, &mut |_| {}).map_err(
            |error| Failure::operational(format!("fsck {}: {error}", self.image.display())),
        )?;
        let findings = report
            .problems
            .iter()
            .map(|problem| format!("{}: {}", problem.structure, problem.message))
            .collect();
        Ok((report.is_clean(), findings))
    }

    pub(crate) fn stop(&mut self) -> Result<(), Failure> {
        if let Some(control) = self.control.take() {
            control.stop();
        }
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // A process the workload started in a session of its own escapes
        // its group; if it still uses the lab's mount, the unmount would
        // wait for it for good.
        warn_of_survivors(&end_and_reap(None, &self.mountpoint).still_there);
        detach_foreign_mounts(&self.mountpoint);
        let unmounted = session.unmount();
        self.switch.close();
        let engine = self.slot.take();
        let _ = fs::remove_dir(&self.mountpoint);
        unmounted.map_err(|error| {
            Failure::operational(format!("unmounting {}: {error}", self.mountpoint.display()))
        })?;
        let Some(mut engine) = engine else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let engine = loop {
            match Arc::try_unwrap(engine) {
                Ok(engine) => break engine,
                Err(shared) if Instant::now() < deadline => {
                    engine = shared;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => {
                    return Err(Failure::operational(
                        "the engine is still in use 30 s after the unmount",
                    ))
                }
            }
        };
        engine.unmount().map_err(|error| {
            Failure::operational(format!("unmounting {}: {error}", self.image.display()))
        })
    }
}

impl Drop for LabMount {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A shell command run in the mount, in a process group of its own (so a
/// cut kills all of it), its output in a log file.
pub(crate) struct Program {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    /// The lab's mount, its working directory.
    pub(crate) mountpoint: PathBuf,
    /// See [`Program::left_running`].
    left_running: Vec<String>,
}

impl Program {
    pub(crate) fn spawn(
        command: &str,
        mountpoint: &Path,
        log: PathBuf,
        environment: &[(&str, String)],
    ) -> Result<Program, Failure> {
        // The program's output is its own business: readable by this user
        // only, and never through a name someone else put there (a work
        // directory may be shared).
        let _ = fs::remove_file(&log);
        let output = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&log)
            .map_err(|error| Failure::operational(format!("{}: {error}", log.display())))?;
        let errors = output
            .try_clone()
            .map_err(|error| Failure::operational(format!("{}: {error}", log.display())))?;
        let mut shell = Command::new("/bin/sh");
        shell
            .arg("-c")
            // A command starting with `-` is a command, not sh's option.
            .arg("--")
            .arg(command)
            .current_dir(mountpoint)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .env("VIGILFS_MOUNT", mountpoint)
            .process_group(0);
        for (name, value) in environment {
            shell.env(name, value);
        }
        let child = shell
            .spawn()
            .map_err(|error| Failure::operational(format!("cannot run /bin/sh: {error}")))?;
        Ok(Program {
            child,
            log,
            mountpoint: mountpoint.to_path_buf(),
            left_running: Vec::new(),
        })
    }

    pub(crate) fn kill(&mut self) {
        kill_group(self.child.id() as i32);
        let _ = self.child.wait();
        self.end_what_it_left();
    }

    /// Ends what the program left running, in its group (a `cmd &` it
    /// never waited for) or escaped from it (`setsid`, a daemon) and still
    /// in the lab's mount, and waits until it is gone: it would keep files
    /// open, so the lab could not unmount, or write into the mount while
    /// the check reads it, or hold a pid its lock file names. The program
    /// itself has been waited for. Returns what it killed.
    fn end_what_it_left(&self) -> Vec<String> {
        let reaped = end_and_reap(Some(self.child.id() as i32), &self.mountpoint);
        warn_of_survivors(&reaped.still_there);
        reaped.killed
    }

    /// The processes the program left running when it exited by itself,
    /// which were killed ("PID (COMMAND)"): none once it was killed.
    pub(crate) fn left_running(&self) -> &[String] {
        &self.left_running
    }

    /// Waits for the program to end, up to `timeout`; `None` if it did not
    /// (it is killed then).
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                self.left_running = self.end_what_it_left();
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Ok(None);
            }
            if crate::signals::interrupting_signal().is_some() {
                self.kill();
                interrupted()?;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>, Failure> {
        self.child
            .try_wait()
            .map_err(|error| Failure::operational(format!("waiting for a program: {error}")))
    }

    /// The last lines of what the program printed.
    pub(crate) fn output(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(OUTPUT_LINES);
        lines[start..].join("\n")
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

pub(crate) fn describe_status(status: Option<ExitStatus>, timeout: Duration) -> String {
    match status {
        None => format!("did not finish within {}", humantime(timeout)),
        Some(status) => match status.code() {
            Some(code) => format!("exited {code}"),
            None => format!("was killed ({status})"),
        },
    }
}

/// A duration for a report, in seconds from one second up and in
/// milliseconds below, to the microsecond, without trailing zeros (a 1 ms
/// timeout read "0.0 s", 1.25 s read "1.2 s").
pub(crate) fn humantime(duration: Duration) -> String {
    let micros = duration.as_micros();
    let (whole, fraction) = match micros {
        0..1_000_000 => (micros / 1000, format!("{:03}", micros % 1000)),
        _ => (micros / 1_000_000, format!("{:06}", micros % 1_000_000)),
    };
    let unit = if micros < 1_000_000 { "ms" } else { "s" };
    match fraction.trim_end_matches('0') {
        "" => format!("{whole} {unit}"),
        digits => format!("{whole}.{digits} {unit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_without_rounding_to_an_untrue_number() {
        assert_eq!(humantime(Duration::from_millis(1)), "1 ms");
        assert_eq!(humantime(Duration::from_micros(100)), "0.1 ms");
        assert_eq!(humantime(Duration::from_micros(1500)), "1.5 ms");
        assert_eq!(humantime(Duration::from_micros(99_950)), "99.95 ms");
        assert_eq!(humantime(Duration::from_millis(150)), "150 ms");
        assert_eq!(humantime(Duration::from_millis(1250)), "1.25 s");
        assert_eq!(humantime(Duration::from_secs(60)), "60 s");
        assert_eq!(humantime(Duration::from_micros(1_999_999)), "1.999999 s");
        assert_eq!(humantime(Duration::from_micros(1_000_500)), "1.0005 s");
    }
}
