//! The mount process's log: one line per thing worth knowing, on stderr
//! (which `--log-file` or the terminal holds), prefixed with the process
//! id so lines of several mounts in one file can be told apart.
//!
//! A `--daemon` mount's stderr is its log file (or nothing), but what it
//! logs while starting (a journal replayed, a tree unreadable, an image
//! that may outgrow its host) is for the user who typed the command: until
//! the mount is ready, each line also goes to the waiting parent
//! ([`tell_starter_too`]), which prints it.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

/// The channel to the process waiting for a `--daemon` mount, until ready.
static STARTER: Mutex<Option<File>> = Mutex::new(None);

/// What starts a forwarded line on the channel to the starter.
pub const FORWARDED: &str = "log ";

/// One line of the mount's log. A stderr that went away (a closed pipe, a
/// terminal that hung up) loses the line and nothing else: the filesystem
/// is served on and unmounted cleanly all the same.
pub fn log(message: &str) {
    let line = format!("vigilfs[{}]: {message}", std::process::id());
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    let mut starter = STARTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(channel) = starter.as_mut() {
        // One line per message on the channel, whatever the message holds.
        let _ = writeln!(channel, "{FORWARDED}{}", line.replace('\n', "\\n"));
    }
}

/// Also sends every line logged from now on to `channel` (the parent of a
/// `--daemon` mount), until [`stop_telling_starter`].
pub fn tell_starter_too(channel: File) {
    *STARTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(channel);
}

/// Ends [`tell_starter_too`]: the mount is ready, or failed.
pub fn stop_telling_starter() {
    STARTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
}
