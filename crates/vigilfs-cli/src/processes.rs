//! The other processes on the machine, from /proc: for finding who holds
//! an image's lock and who still uses a mount. Processes that end while
//! being looked at are simply not there.

use std::path::PathBuf;

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
