//! The mount process's log: one line per thing worth knowing, on stderr
//! (which `--log-file` or the terminal holds), prefixed with the process
//! id so lines of several mounts in one file can be told apart.

use std::io::Write;

/// One line of the mount's log. A stderr that went away (a closed pipe, a
/// terminal that hung up) loses the line and nothing else: the filesystem
/// is served on and unmounted cleanly all the same.
pub fn log(message: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "vigilfs[{}]: {message}",
        std::process::id()
    );
}
