//! Signals for the mount process, with the self-pipe trick: the handler
//! only writes the signal number into a pipe, and the main thread reads it
//! and does the real work (unmounting) outside signal context.
//!
//! The same pipe carries [`UNMOUNTED`] from the thread that waits on the
//! FUSE session, so the main thread waits on one thing.
//!
//! Commands that run long on the client side (crash-test, scrub) only
//! need to know that they were asked to stop: [`watch_for_interrupts`]
//! keeps the signal in [`interrupting_signal`] for their loops to see.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The byte sent when the filesystem was unmounted from outside.
pub const UNMOUNTED: u8 = 0;

/// The pipe's write end, for the handler (-1 when none is installed).
static WRITE_END: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = WRITE_END.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one live
        // byte on this stack frame. A full pipe (non-blocking) just drops
        // the byte: one pending notification is enough.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// The read end of the pipe, and a way for threads to post to it.
#[derive(Debug)]
pub struct SignalPipe {
    read: File,
    write: File,
}

/// Something a thread can post [`UNMOUNTED`] with.
#[derive(Debug)]
pub struct Notifier(File);

impl Notifier {
    /// Posts a byte (best effort).
    pub fn post(mut self, byte: u8) {
        let _ = self.0.write_all(&[byte]);
    }
}

/// Makes the pipe and routes `signals` into it (SIGINT, SIGTERM, SIGHUP).
pub fn install(signals: &[libc::c_int]) -> io::Result<SignalPipe> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created by pipe2 and are owned by nobody
    // else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fds[1], libc::F_GETFL);
        libc::fcntl(fds[1], libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    WRITE_END.store(fds[1], Ordering::Relaxed);
    for &signal in signals {
        // SAFETY: a zeroed sigaction is a valid starting point; we set the
        // handler (an extern "C" fn that only calls write) and an empty
        // mask, then install it.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(SignalPipe {
        read: File::from(read),
        write: File::from(write),
    })
}

impl SignalPipe {
    /// A second handle on the write end, for another thread.
    pub fn notifier(&self) -> io::Result<Notifier> {
        Ok(Notifier(self.write.try_clone()?))
    }

    /// Waits for the next byte: a signal number or [`UNMOUNTED`].
    pub fn next(&mut self) -> io::Result<u8> {
        let mut byte = [0u8; 1];
        loop {
            match self.read.read(&mut byte) {
                Ok(1) => return Ok(byte[0]),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "signal pipe closed",
                    ))
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// The signal (SIGINT, SIGTERM, SIGHUP) that asked this command to stop.
static INTERRUPTING: AtomicI32 = AtomicI32::new(0);

/// Routes SIGINT, SIGTERM and SIGHUP to [`interrupting_signal`] instead of
/// ending the process, so a command can stop cleanly and say where.
pub fn watch_for_interrupts() {
    let Ok(mut pipe) = install(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("vigilfs-interrupts".into())
        .spawn(move || {
            while let Ok(signal) = pipe.next() {
                if signal != UNMOUNTED {
                    INTERRUPTING.store(i32::from(signal), Ordering::Relaxed);
                }
            }
        });
}

/// The signal that asked this command to stop, once one has
/// ([`watch_for_interrupts`]).
pub fn interrupting_signal() -> Option<u8> {
    match INTERRUPTING.load(Ordering::Relaxed) {
        0 => None,
        signal => u8::try_from(signal).ok(),
    }
}

/// The shell's exit status of a process `signal` ended: 128 + its number.
pub fn exit_status(signal: u8) -> u8 {
    128u8.saturating_add(signal)
}

/// A signal's name for the log.
pub fn name(signal: u8) -> String {
    match i32::from(signal) {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        other => format!("signal {other}"),
    }
}
