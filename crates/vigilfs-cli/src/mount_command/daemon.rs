//! `vigilfs mount --daemon`: fork, detach the child, and have the parent
//! wait for the child's word before it exits.
//!
//! The fork comes before anything starts a thread, so the child is a
//! consistent copy. The word travels on a pipe, one line: `ok PID` once
//! the mount answers, or `error CODE MESSAGE`; what the child logs while
//! starting is forwarded on the same pipe and shown by the parent first.
//! A parent that hears no word (the child died first) says that the mount
//! process exited before mounting.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::serve::serve;
use super::{printable_path, MadeHere, MountRequest, Prepared};
use crate::failure::Failure;
use crate::mount_files::open_log;

/// Forks; the child serves, the parent waits for its word.
pub(super) fn daemonize(
    request: &MountRequest,
    prepared: Prepared,
    made: MadeHere,
) -> Result<u8, Failure> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two new fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Failure::operational(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both fds were just made by pipe2 and belong to nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Opened once, here: the child inherits it (see open_log).
    let log = request.log_file.as_deref().map(open_log).transpose()?;
    // Flush what the parent buffered so the child does not print it again.
    let _ = std::io::stdout().flush();
    // SAFETY: no other thread exists yet in this process (nothing before
    // this point starts one), so the child is a consistent copy.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Failure::operational(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid > 0 {
        drop(write_end);
        drop(prepared);
        let outcome = wait_for_child(request, read_end, pid);
        if outcome.is_err() {
            made.remove();
        }
        return outcome;
    }
    drop(read_end);
    let mut channel = File::from(write_end);
    if let Err(message) = detach(log) {
        let _ = writeln!(channel, "error 8 {message}");
        std::process::exit(8);
    }
    if let Ok(copy) = channel.try_clone() {
        crate::daemon_log::tell_starter_too(copy);
    }
    let mut channel = Some(channel);
    let mut ready = |outcome: Result<(), &Failure>| {
        crate::daemon_log::stop_telling_starter();
        if let Some(mut channel) = channel.take() {
            let _ = match outcome {
                Ok(()) => writeln!(channel, "ok {}", std::process::id()),
                Err(failure) => writeln!(channel, "error {} {failure}", failure.exit_code()),
            };
        }
    };
    let outcome = serve(request, prepared, &mut ready);
    if let Err(failure) = &outcome {
        // Before readiness this reaches the parent; after it, the log.
        ready(Err(failure));
    }
    outcome
}

/// The child's half of daemonising: its own session, stdio away from the
/// terminal or pipes of whoever started it.
fn detach(log: Option<File>) -> Result<(), String> {
    // SAFETY: setsid has no memory effects; failure only means we already
    // lead a session.
    unsafe {
        libc::setsid();
    }
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|error| format!("/dev/null: {error}"))?;
    let output = match log {
        Some(log) => log,
        None => null.try_clone().map_err(|error| error.to_string())?,
    };
    // SAFETY: dup2 onto the standard descriptors, from fds we own.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(output.as_raw_fd(), 1);
        libc::dup2(output.as_raw_fd(), 2);
    }
    Ok(())
}

fn wait_for_child(request: &MountRequest, read_end: OwnedFd, pid: i32) -> Result<u8, Failure> {
    let mut reader = BufReader::new(File::from(read_end));
    let mut line = String::new();
    // What the child logged while starting comes first, to be shown here;
    // not by mount(8)'s helper, which says nothing on success, as a kernel
    // filesystem's mount does (fstests takes any output for a failure).
    loop {
        line.clear();
        let _ = reader.read_line(&mut line);
        match line.strip_prefix(crate::daemon_log::FORWARDED) {
            Some(_) if request.as_mount_helper => {}
            Some(logged) => {
                let _ = write!(std::io::stderr(), "{logged}");
            }
            None => break,
        }
    }
    let line = line.trim_end();
    if let Some(child) = line.strip_prefix("ok ") {
        if !request.as_mount_helper {
            // The filesystem is mounted whether or not this line can be
            // written (stdout on a full disk): the exit status says so.
            let _ = writeln!(
                std::io::stdout(),
                "mounted {} on {} (pid {child})",
                printable_path(&request.image),
                printable_path(&request.mountpoint)
            );
        }
        return Ok(0);
    }
    if let Some(rest) = line.strip_prefix("error ") {
        let (code, message) = rest.split_once(' ').unwrap_or(("8", rest));
        let code = code.parse().unwrap_or(8);
        let mut status = 0;
        // SAFETY: reaping our own child; `status` is a live int.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
        return Err(Failure::with_code(message, code));
    }
    Err(Failure::operational(format!(
        "the mount process (pid {pid}) exited before mounting{}",
        match &request.log_file {
            Some(path) => format!("; see {}", path.display()),
            None => String::new(),
        }
    )))
}
