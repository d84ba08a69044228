//! The other processes on the machine, from /proc: for finding who holds
//! an image's lock and who still uses a mount. Processes that end while
//! being looked at are simply not there.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Every process but this one: its pid and its /proc directory.
pub fn others() -> impl Iterator<Item = (u32, PathBuf)> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(move |entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            (pid != own).then(|| (pid, entry.path()))
        })
}

/// Whether process `pid` is a running vigilfs (its program's name says
/// so): a stale pid file's number, reused since by another program (after
/// a crash, a reboot), names no mount.
pub fn is_running_vigilfs(pid: u32) -> bool {
    let program = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let first = program.split(|&byte| byte == 0).next().unwrap_or_default();
    let name = Path::new(std::ffi::OsStr::from_bytes(first))
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    (name == "vigilfs" || name == crate::helper::HELPER_NAME || name == "mount.vigilfs")
        && is_running(pid)
}

/// The one-letter state of process `pid` (`R`, `S`, `T`, `Z`, ...), from
/// /proc; `None` when there is no such process.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may
    // itself hold spaces or parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Whether process `pid` exists and is not a zombie (a killed mount
/// process its parent has not reaped yet is gone).
pub fn is_running(pid: u32) -> bool {
    pid != 0 && !matches!(state(pid), None | Some('Z' | 'X'))
}

/// Whether process `pid` is stopped (state T, or t under a tracer).
pub fn is_stopped(pid: u32) -> bool {
    matches!(state(pid), Some('T' | 't'))
}
