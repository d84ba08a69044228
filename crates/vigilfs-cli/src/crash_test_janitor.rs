//! What a `vigilfs crash-test` killed with SIGKILL leaves: its lab mount,
//! served by the process that died, and the trial's image and logs.
//!
//! A SIGKILL (the OOM killer, `timeout -s KILL`, a cancelled CI job) runs
//! no teardown, so the runner starts a janitor first: this binary again,
//! in a process group of its own, reading the runner's news on a pipe —
//! `start NAME` when a trial (or the dry run) begins, `group NAME PID` when
//! it starts a program (the workload or the check, each the leader of its
//! own process group), `end NAME` when its files were dealt with, `done`
//! when the run ended on its own. If the pipe closes without `done`, the
//! runner died: the janitor kills the process groups of the trials not
//! ended and every process still using a mount under the work directory
//! (a workload left running would go on writing, or sit in a dead mount),
//! detaches those mounts (a dead daemon's mount answers ENOTCONN and keeps
//! the image busy), removes the images, logs and mount points of the trials
//! not ended, and the work directory if the run made it and nothing else is
//! left in it. Images a failed trial kept stay: their replay lines were
//! printed.
//!
//! The janitor never touches anything outside the work directory, and a
//! runner that ends normally (an error, SIGINT, SIGTERM included) tells it
//! `done` after its own teardown.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::mountinfo::Mounts;

/// The hidden subcommand the janitor runs as.
pub const SUBCOMMAND: &str = "crash-test-janitor";

/// The runner's end of the pipe; dropping it without
/// [`Janitor::finish`] is what a SIGKILL does.
pub struct Janitor {
    child: Child,
    news: ChildStdin,
}

impl Janitor {
    /// Starts the janitor of `directory`; `made` says the run made the
    /// directory (and may remove it). `None` if it cannot be started: the
    /// run goes on without one.
    pub fn start(directory: &Path, made: bool) -> Option<Janitor> {
        let program = std::env::current_exe().ok()?;
        let mut command = Command::new(program);
        command
            .arg(SUBCOMMAND)
            .arg(directory)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in the runner's group: a signal to the group must not
            // take the janitor with it.
            .process_group(0);
        if made {
            command.arg("--remove-directory");
        }
        let mut child = command.spawn().ok()?;
        let news = child.stdin.take()?;
        Some(Janitor { child, news })
    }

    /// The janitor's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Trial (or dry run) `name` begins: its files are the janitor's if
    /// the runner dies before [`Janitor::ended`].
    pub fn started(&mut self, name: &str) {
        let _ = writeln!(self.news, "start {name}");
    }

    /// Trial (or dry run) `name` started a program leading process group
    /// `group`: the janitor kills the group if the runner dies first.
    pub fn program_started(&mut self, name: &str, group: u32) {
        let _ = writeln!(self.news, "group {name} {group}");
    }

    /// Trial `name`'s files were kept or removed by the runner itself.
    pub fn ended(&mut self, name: &str) {
        let _ = writeln!(self.news, "end {name}");
    }

    /// The run ended on its own: the janitor leaves everything as it is.
    pub fn finish(mut self) {
        let _ = writeln!(self.news, "done");
        drop(self.news);
        let _ = self.child.wait();
    }
}

/// The janitor itself: reads the runner's news from stdin until it ends,
/// then cleans up if the runner died. Exits 0.
pub fn run(directory: &Path, remove_directory: bool) -> u8 {
    // The terminal's signals are the runner's business.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: ignoring a signal, before any thread is started.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let mut unfinished: Vec<String> = Vec::new();
    let mut groups: Vec<(String, i32)> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            break;
        };
        match line.split_once(' ') {
            Some(("start", name)) => unfinished.push(name.to_string()),
            Some(("group", program)) => {
                if let Some((name, group)) = program
                    .rsplit_once(' ')
                    .and_then(|(name, group)| Some((name, group.parse().ok()?)))
                {
                    groups.push((name.to_string(), group));
                }
            }
            Some(("end", name)) => {
                unfinished.retain(|started| started != name);
                groups.retain(|(started, _)| started != name);
            }
            None if line == "done" => return 0,
            _ => {}
        }
    }
    for (_, group) in groups {
        kill_group(group);
    }
    for mountpoint in mounts_under(directory) {
        kill_users_of(&mountpoint);
    }
    detach_mounts_under(directory);
    for name in unfinished {
        remove_trial_files(directory, &name);
    }
    if remove_directory {
        let _ = fs::remove_dir(directory);
    }
    0
}

/// What a trial (or the dry run) `NAME` leaves in the work directory:
/// `NAME.SUFFIX`, its mount point `NAME.mnt` aside.
pub const TRIAL_FILES: [&str; 4] = ["img", "setup.log", "workload.log", "check.log"];

/// Removes the image, logs and mount point of the trial (or dry run)
/// `name` in `directory` (`rmdir`: never while something is mounted there),
/// those of this user only: in a shared work directory another user's
/// entries of those names are theirs (a run refuses to use them).
pub fn remove_trial_files(directory: &Path, name: &str) {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let user = unsafe { libc::geteuid() };
    let ours = |path: &Path| fs::symlink_metadata(path).is_ok_and(|found| found.uid() == user);
    for suffix in TRIAL_FILES {
        let file = directory.join(format!("{name}.{suffix}"));
        if ours(&file) {
            let _ = fs::remove_file(file);
        }
    }
    let mountpoint = directory.join(format!("{name}.mnt"));
    if ours(&mountpoint) {
        let _ = fs::remove_dir(mountpoint);
    }
}

/// The mount points under `directory`, deepest first.
fn mounts_under(directory: &Path) -> Vec<PathBuf> {
    let Ok(mounts) = Mounts::read() else {
        return Vec::new();
    };
    let mut inside: Vec<PathBuf> = mounts
        .entries()
        .iter()
        .filter(|entry| entry.mountpoint.starts_with(directory) && entry.mountpoint != directory)
        .map(|entry| entry.mountpoint.clone())
        .collect();
    inside.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    inside
}

/// Detaches every mount under `directory`, deepest first.
fn detach_mounts_under(directory: &Path) {
    for mountpoint in mounts_under(directory) {
        detach(&mountpoint);
    }
}

/// Kills every process whose working directory or an open file is under
/// `mountpoint` (canonical; this process excepted), as `fuser -km` would.
pub fn kill_users_of(mountpoint: &Path) {
    for pid in users_of(mountpoint) {
        // SAFETY: kill(2) on a pid; no memory is involved.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// The processes (this one excepted) whose working directory or an open
/// file is under `mountpoint`.
pub fn users_of(mountpoint: &Path) -> Vec<u32> {
    let inside = |link: PathBuf| -> bool {
        fs::read_link(link).is_ok_and(|target| target.starts_with(mountpoint))
    };
    crate::processes::others()
        .filter(|(_, process)| {
            inside(process.join("cwd"))
                || fs::read_dir(process.join("fd"))
                    .map(|fds| fds.flatten().any(|fd| inside(fd.path())))
                    .unwrap_or(false)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Kills process group `group` (a positive id).
pub fn kill_group(group: i32) {
    if group > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; no
        // memory is involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

/// `umount -l`, or `fusermount3 -u -z` for a user other than root.
pub(crate) fn detach(mountpoint: &Path) {
    let Ok(path) = CString::new(mountpoint.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return;
    }
    let _ = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mountpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
