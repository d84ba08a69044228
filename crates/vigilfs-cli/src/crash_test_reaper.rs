//! A power cut leaves no process behind, and neither may a crash test's
//! cut: before the check runs, every process the cut killed must be gone
//! from the process table, not only dead. A killed process stays a zombie
//! until its parent reaps it, and a zombie's pid still answers
//! `kill(pid, 0)`: a check that starts PostgreSQL on the recovered data
//! finds the lock file naming the killed postmaster, takes it for a live
//! server and refuses to start, and the user blames the database.
//!
//! So the runner makes itself the subreaper of everything it starts
//! ([`become_subreaper`]): the orphans of a workload (a daemon that forked
//! twice, the children of a killed shell) become its children rather than
//! init's, and [`end_and_reap`] kills them and reaps them itself instead of
//! waiting for an init that may take a second, or never come.
//!
//! What it kills: the program's process group, the processes using the
//! lab's mount, and every other child of the runner (as subreaper, that is
//! every process a workload or check left that escaped both: a daemon in a
//! session of its own, its working directory `/`) but those it spares (the
//! janitor). It reaps only processes it killed, by pid, so a program it
//! still waits for keeps its exit status for its owner.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::crash_test_janitor::{kill_group, users_of};

/// How long killed processes may take to be gone before the run goes on
/// without them (and says so).
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// Processes killed by pid (at a power cut, from another thread) and not
/// yet reaped: once dead they can no longer be found by their mount (a
/// zombie has no working directory and no files), but must still be
/// reaped.
static KILLED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Children of the runner that are not a trial's: never killed.
static SPARED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Spares child `pid` (the janitor) from [`end_and_reap`].
pub fn spare(pid: u32) {
    SPARED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(pid);
}

/// Makes this process the reaper of its descendants' orphans.
pub fn become_subreaper() {
    // SAFETY: prctl(2) with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// What [`end_and_reap`] did.
pub struct Reaped {
    /// The processes it found running and killed, as "PID (COMMAND)".
    pub killed: Vec<String>,
    /// The pids still there after [`GONE_WITHIN`] (none, unless a process
    /// is stuck in the kernel or its zombie belongs to a parent that does
    /// not reap).
    pub still_there: Vec<u32>,
}

/// Kills process group `group` (if any), every process using
/// `mountpoint` and every child of this process not spared, and waits
/// until each is gone, reaping those that are this process's children.
pub fn end_and_reap(group: Option<i32>, mountpoint: &Path) -> Reaped {
    let deadline = Instant::now() + GONE_WITHIN;
    let mut pending = BTreeSet::new();
    let mut killed = Vec::new();
    let mut seen = BTreeSet::new();
    loop {
        // A member may fork while its group is being killed: look again
        // until a round finds no one new.
        let mut members = group.map(members_of_group).unwrap_or_default();
        members.extend(orphans());
        // Named before the kill: a reaped process has no name to read.
        let mut running: Vec<(u32, String)> = members
            .iter()
            .filter(|&&pid| running(pid))
            .map(|&pid| (pid, command_of(pid)))
            .collect();
        if let Some(group) = group {
            kill_group(group);
        }
        for &pid in &members {
            // SAFETY: kill(2) on a pid; no memory is involved.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        let users = kill_users_of(mountpoint);
        let found_some = !members.is_empty() || !users.is_empty();
        running.extend(users);
        for (pid, command) in running {
            if seen.insert(pid) {
                killed.push(format!("{pid} ({command})"));
            }
        }
        pending.extend(members);
        pending.append(&mut remembered());
        pending.retain(|&pid| !reaped_or_gone(pid));
        if (pending.is_empty() && !found_some) || Instant::now() >= deadline {
            return Reaped {
                killed,
                still_there: pending.into_iter().collect(),
            };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills every process using `mountpoint` (as the janitor's
/// `kill_users_of`) and remembers them for the next [`end_and_reap`], which
/// could not find them by their mount once they are dead. Returns each
/// with its command.
pub fn kill_users_of(mountpoint: &Path) -> Vec<(u32, String)> {
    let pids = users_of(mountpoint);
    let named: Vec<(u32, String)> = pids.iter().map(|&pid| (pid, command_of(pid))).collect();
    for &pid in &pids {
        // SAFETY: kill(2) on a pid; no memory is involved.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    remembered().extend(pids);
    named
}

/// The command name of process `pid` ("?" once it is gone).
fn command_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Whether `pid` still runs: not gone and not a zombie (a program's own
/// exited children, not yet reaped, were not left running).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after_name) = stat.rsplit_once(')')?;
            after_name
                .split_whitespace()
                .next()
                .map(|state| state != "Z")
        })
        .unwrap_or(false)
}

fn remembered() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    KILLED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Says which killed processes were still there when the run went on.
pub fn warn_of_survivors(pids: &[u32]) {
    if !pids.is_empty() {
        eprintln!(
            "vigilfs crash-test: killed processes still there after {} s (stuck in the \
             kernel?), the run goes on without them: {pids:?}",
            GONE_WITHIN.as_secs()
        );
    }
}

/// Whether `pid` is gone, after reaping it if it is a zombie child of this
/// process.
fn reaped_or_gone(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid(2) on one pid with a valid status pointer; WNOHANG,
    // so it never blocks. A pid that is not our child gets ECHILD.
    unsafe {
        libc::waitpid(pid as i32, &mut status, libc::WNOHANG);
    }
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// The processes in process group `group` (zombies included: a killed
/// member stays in its group until reaped).
fn members_of_group(group: i32) -> Vec<u32> {
    crate::processes::others()
        .filter(|(_, process)| {
            std::fs::read_to_string(process.join("stat"))
                .ok()
                .and_then(|stat| stat_field(&stat, PROCESS_GROUP_FIELD))
                == Some(group)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// This process's children that are not spared (zombies too, to be
/// reaped): orphans a trial's programs left, adopted by this subreaper.
fn orphans() -> Vec<u32> {
    let own = std::process::id() as i32;
    let spared = SPARED.lock().unwrap_or_else(PoisonError::into_inner);
    crate::processes::others()
        .filter(|(pid, process)| {
            !spared.contains(pid)
                && std::fs::read_to_string(process.join("stat"))
                    .ok()
                    .and_then(|stat| stat_field(&stat, PARENT_FIELD))
                    == Some(own)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Fields of a `/proc/PID/stat` line after the command name, counted from
/// the state (0).
const PARENT_FIELD: usize = 1;
const PROCESS_GROUP_FIELD: usize = 2;

/// Field `index` of a `/proc/PID/stat` line, counted after the command
/// name, which is in parentheses and may itself hold spaces and
/// parentheses.
fn stat_field(stat: &str, index: usize) -> Option<i32> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(index)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (a) b (c)) S 1 4240 4240 0 -1 4194560 99 0 0 0";
        assert_eq!(stat_field(stat, PARENT_FIELD), Some(1));
        assert_eq!(stat_field(stat, PROCESS_GROUP_FIELD), Some(4240));
        assert_eq!(stat_field("garbage", PARENT_FIELD), None);
    }
}
