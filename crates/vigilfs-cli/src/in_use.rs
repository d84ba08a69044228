//! Whether an image is in use, so mkfs, fsck and mount never work on an
//! image another process is using, and wait for one that is finishing.
//!
//! Two signs:
//!
//! - an advisory `flock` on the image: the mount process holds an exclusive
//!   lock for as long as it lives (the kernel drops it when the process
//!   dies, even by `kill -9`); mkfs holds an exclusive lock while it
//!   writes, fsck a shared one while it reads;
//! - `/proc/self/mountinfo` lists a FUSE mount whose source is the
//!   canonical image path (the mount sets it so).
//!
//! `umount MNT` returns as soon as the kernel has let go of the mount, while
//! the mount process still writes back and marks the image clean: a plain
//! `fuse` mount gets no DESTROY request the kernel would wait for. A
//! `fuseblk` mount does (the kernel sends DESTROY synchronously at
//! unmount), but it is not a way out here: its source must be a block
//! device, so the process would have to set up a loop device over the
//! image (root only: no user mount could use it, and `mountinfo` would
//! show `/dev/loopN` instead of the image, which is how a mounted image is
//! recognised); and fuser 0.18 answers DESTROY before it calls the
//! filesystem's `destroy`, so the kernel would stop waiting before the
//! write-back anyway. Instead [`acquire`] refuses at once an image that is
//! *mounted*, but an image that is only *locked* (by a mount process that
//! is exiting, or by a running mkfs or fsck) is waited for, with one line
//! on stderr, for up to [`EXIT_WAIT`]; only then does it fail.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::mountinfo::Mounts;

/// How long [`acquire`] waits for a process that holds an image it no
/// longer has mounted: a mount process writing back a large dirty cache
/// after `umount` (or a running fsck or mkfs).
pub const EXIT_WAIT: Duration = Duration::from_secs(30);
/// How often it looks again.
const POLL: Duration = Duration::from_millis(20);
/// How often it asks the mounts which file each serves.
const SERVER_POLL: Duration = Duration::from_secs(1);

/// A held lock on an image; released when dropped.
#[derive(Debug)]
pub struct ImageLock {
    /// The image, and the file behind it if it is a loop device.
    _files: Vec<File>,
}

/// How to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Mount and mkfs: nobody else may hold any lock.
    Exclusive,
    /// fsck: readers may share.
    Shared,
}

/// Why an image could not be locked at once.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds a conflicting lock.
    InUse,
    /// The image could not be opened or locked.
    Io(io::Error),
}

/// Why [`acquire`] gave up.
#[derive(Debug)]
pub enum AcquireError {
    /// The image is mounted there (a FUSE mount with it as source).
    Mounted(PathBuf),
    /// Another process still held it after [`EXIT_WAIT`]: its pid and
    /// name, when /proc/locks shows them.
    StillHeld(Option<(u32, String)>),
    /// The image could not be opened or locked.
    Io(io::Error),
}

impl AcquireError {
    /// One line for the user, naming `image`.
    pub fn message(&self, image: &Path) -> String {
        match self {
            AcquireError::Mounted(mountpoint) => format!(
                "{} is mounted on {}; unmount it first",
                image.display(),
                mountpoint.display()
            ),
            AcquireError::StillHeld(holder) => format!(
                "{} is still in use by {} after {} s (a vigilfs mount that is busy, mounted \
                 in another mount namespace or from a name the image had before it was renamed; \
                 or a running mkfs or fsck); unmount it first{}",
                image.display(),
                describe_holder(holder.as_ref()),
                EXIT_WAIT.as_secs(),
                exiting_hint(holder.as_ref()),
            ),
            AcquireError::Io(error) => format!("cannot lock {}: {error}", image.display()),
        }
    }
}

/// For a holder that is a vigilfs process: it may be a mount process
/// still writing back after its unmount (review 60: a slow disk, delayed
/// by fault rules, held the image for minutes after `umount` returned),
/// which ends by itself.
fn exiting_hint(holder: Option<&(u32, String)>) -> String {
    match holder {
        // /proc/PID/comm: "vigilfs", or the helper's name cut at 15 bytes.
        Some((pid, name)) if name.starts_with("vigilfs") || name.starts_with("mount.fuse.vigi") => {
            format!(
                "; or, unmounted already, still writing back what it holds (a slow or failing \
                 disk, or `vigilfs inject` delays): it exits when done, and `tail --pid={pid} \
                 -f /dev/null` waits for it"
            )
        }
        _ => String::new(),
    }
}

fn describe_holder(holder: Option<&(u32, String)>) -> String {
    match holder {
        Some((pid, name)) if name.is_empty() => format!("process {pid}"),
        Some((pid, name)) => format!("{name} (pid {pid})"),
        None => "another process".into(),
    }
}

/// Takes the lock without waiting: on the image and, for a loop device,
/// on the file behind it too, so that the file and the device over it
/// exclude each other.
pub fn lock(image: &Path, mode: LockMode) -> Result<ImageLock, LockError> {
    let mut files = vec![lock_file(image, mode)?];
    let backing = std::fs::metadata(image)
        .ok()
        .and_then(|metadata| crate::mountinfo::loop_backing_file(&metadata));
    if let Some(backing) = backing {
        match lock_file(&backing, mode) {
            Ok(file) => files.push(file),
            // Deleted or out of reach: the device alone is locked.
            Err(LockError::Io(_)) => {}
            Err(LockError::InUse) => return Err(LockError::InUse),
        }
    }
    Ok(ImageLock { _files: files })
}

fn lock_file(image: &Path, mode: LockMode) -> Result<File, LockError> {
    // O_NONBLOCK: opening a FIFO named as the image must not wait for a
    // writer (the device's open then refuses it); files ignore the flag.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(image)
        .map_err(LockError::Io)?;
    let operation = match mode {
        LockMode::Exclusive => libc::LOCK_EX,
        LockMode::Shared => libc::LOCK_SH,
    } | libc::LOCK_NB;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let result = unsafe { libc::flock(file.as_raw_fd(), operation) };
    if result == 0 {
        return Ok(file);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(LockError::InUse)
    } else {
        Err(LockError::Io(error))
    }
}

/// Where `canonical_image` is mounted as a FUSE source, if it is.
pub fn mounted_on(canonical_image: &Path) -> Option<PathBuf> {
    let mounts = Mounts::read().ok()?;
    let mut found = mounts.fuse_mounts_of(canonical_image).peekable();
    let first = found.peek().map(|entry| entry.mountpoint.clone())?;
    // Best a mount point that shows the whole filesystem on top (the
    // newest such): one another mount covers (a bind a power cut could not
    // re-point) would give a second mount what covers it.
    let whole_on_top = found
        .filter(|entry| entry.root == Path::new("/"))
        .filter(|entry| mounts.topmost_at(&entry.mountpoint) == Some(*entry))
        .last()
        .map(|entry| entry.mountpoint.clone());
    Some(whole_on_top.unwrap_or(first))
}

/// Where the file `image` is mounted under another name, if it is.
fn mounted_as_same_file(image: &Path) -> Option<PathBuf> {
    let identity = crate::mountinfo::file_identity(image).ok()?;
    let mounts = Mounts::read().ok()?;
    let mountpoint = mounts
        .vigilfs_mounts_of_file(identity, crate::control::current_uid())
        .next()
        .map(|entry| entry.mountpoint.clone());
    mountpoint
}

/// Locks `image` for `mode`: refuses at once an image that is mounted;
/// waits (saying so once on stderr) up to [`EXIT_WAIT`] for a process that
/// holds it without having it mounted.
pub fn acquire(image: &Path, mode: LockMode) -> Result<ImageLock, AcquireError> {
    acquire_within(image, mode, EXIT_WAIT, true)
}

/// [`acquire`] without the note on stderr while waiting: a mount(8)
/// helper prints nothing when it succeeds (scripts compare its output).
pub fn acquire_silently(image: &Path, mode: LockMode) -> Result<ImageLock, AcquireError> {
    acquire_within(image, mode, EXIT_WAIT, false)
}

fn acquire_within(
    image: &Path,
    mode: LockMode,
    bound: Duration,
    announce: bool,
) -> Result<ImageLock, AcquireError> {
    let canonical = image.canonicalize().unwrap_or_else(|_| image.to_path_buf());
    let start = Instant::now();
    let mut said = !announce;
    let mut server_looked_for = None;
    loop {
        // The lock first: the mount table names paths, and the file at a
        // path may not be the one mounted from it (deleted or replaced
        // since, the mount serving the old file). A mount's server holds
        // the lock for the whole mount, so a file nobody holds is served
        // by nobody.
        match lock(image, mode) {
            Ok(lock) => match mounted_on(&canonical) {
                // A mount of this path whose server is gone: the caller
                // says what to do about it.
                Some(mountpoint) if crate::control::client::mount_process_gone(&mountpoint) => {
                    return Err(AcquireError::Mounted(mountpoint));
                }
                Some(mountpoint) => {
                    if announce {
                        eprintln!(
                            "vigilfs: note: {} serves a file that was at {} before (deleted or \
                             replaced since), not the one there now",
                            mountpoint.display(),
                            image.display()
                        );
                    }
                    return Ok(lock);
                }
                None => return Ok(lock),
            },
            Err(LockError::Io(error)) => return Err(AcquireError::Io(error)),
            Err(LockError::InUse) => {}
        }
        // The file may be served by a mount whatever names the mount
        // table gives (renamed, replaced since): each server says which
        // file it serves. Asking them all costs a request each: once a
        // second, not at every poll.
        if server_looked_for.is_none_or(|then: Instant| then.elapsed() >= SERVER_POLL) {
            server_looked_for = Some(Instant::now());
            if let Some(mountpoint) = crate::mountinfo::file_identity(image)
                .ok()
                .and_then(crate::control::client::mount_serving)
            {
                return Err(AcquireError::Mounted(mountpoint));
            }
        }
        if let Some(mountpoint) = mounted_on(&canonical) {
            return Err(AcquireError::Mounted(mountpoint));
        }
        // Held: perhaps mounted under another name (a hard link). Only now,
        // as it costs a stat of every vigilfs mount's source.
        if let Some(mountpoint) = mounted_as_same_file(image) {
            return Err(AcquireError::Mounted(mountpoint));
        }
        if start.elapsed() >= bound {
            return Err(AcquireError::StillHeld(holder(image)));
        }
        if !said {
            eprintln!(
                "vigilfs: waiting up to {} s for {} to finish with {} (not mounted under this \
                 name)",
                bound.as_secs(),
                describe_holder(holder(image).as_ref()),
                image.display(),
            );
            said = true;
        }
        std::thread::sleep(POLL);
    }
}

/// The process holding a flock on `image`, and its name. Best effort:
/// `None` when it cannot be told.
///
/// /proc/locks names the process that *took* the lock, which for a
/// `mount --daemon` is the parent that has since exited (the lock went to
/// the child with the descriptor at fork). So a pid that is gone is looked
/// up again among the descriptors' `fdinfo` (readable for our own
/// processes, or all of them as root).
fn holder(image: &Path) -> Option<(u32, String)> {
    let metadata = std::fs::metadata(image).ok()?;
    let (major, minor) = (libc::major(metadata.dev()), libc::minor(metadata.dev()));
    let wanted = format!("{major:02x}:{minor:02x}:{}", metadata.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let named = locks.lines().find_map(|line| flock_holder(line, &wanted));
    let alive = named.filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
    let pid = alive.or_else(|| holder_by_fdinfo(&wanted))?;
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim().to_string())
        .unwrap_or_default();
    Some((pid, name))
}

/// The pid in a /proc/locks line (`1: FLOCK ADVISORY WRITE PID
/// MAJ:MIN:INODE 0 EOF`, device numbers in hex; a waiter has `->` after the
/// number) if it is a flock on `wanted` (`MAJ:MIN:INODE`).
fn flock_holder(line: &str, wanted: &str) -> Option<u32> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let fields = match fields.get(1) {
        Some(&"->") => &fields[1..],
        _ => &fields[..],
    };
    if fields.get(1) != Some(&"FLOCK") || fields.get(5) != Some(&wanted) {
        return None;
    }
    fields.get(4)?.parse().ok()
}

/// The process with a descriptor holding a flock on `wanted`, from the
/// `lock:` lines of /proc/PID/fdinfo/FD.
fn holder_by_fdinfo(wanted: &str) -> Option<u32> {
    for (pid, process) in crate::processes::others() {
        let Ok(descriptors) = std::fs::read_dir(process.join("fdinfo")) else {
            continue;
        };
        for descriptor in descriptors.flatten() {
            let Ok(info) = std::fs::read_to_string(descriptor.path()) else {
                continue;
            };
            let holds = info.lines().any(|line| {
                line.strip_prefix("lock:")
                    .is_some_and(|lock| flock_holder(lock.trim(), wanted).is_some())
            });
            if holds {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_image_is_waited_for_then_refused_naming_the_holder() {
        let directory = tempfile::tempdir().unwrap();
        let image = directory.path().join("image");
        std::fs::write(&image, b"x").unwrap();
        let held = lock(&image, LockMode::Exclusive).unwrap();
        assert!(matches!(
            lock(&image, LockMode::Shared),
            Err(LockError::InUse)
        ));
        let start = Instant::now();
        let refused = acquire_within(&image, LockMode::Shared, Duration::from_millis(200), true);
        assert!(start.elapsed() >= Duration::from_millis(200));
        let Err(AcquireError::StillHeld(Some((pid, _)))) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(pid, std::process::id(), "the holder is this process");
        let message = AcquireError::StillHeld(Some((pid, "vigilfs".into()))).message(&image);
        assert!(
            message.contains(&format!("vigilfs (pid {pid})")),
            "{message}"
        );
        // A vigilfs process may be an unmounted one still writing back.
        assert!(message.contains(&format!("tail --pid={pid}")), "{message}");

        // Released while waiting: acquired then.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        acquire_within(&image, LockMode::Exclusive, Duration::from_secs(10), true).unwrap();
        releaser.join().unwrap();
        let _shared = lock(&image, LockMode::Shared).unwrap();
        assert!(lock(&image, LockMode::Shared).is_ok());
    }

    #[test]
    fn proc_locks_lines_name_the_flock_holder() {
        let line = "1: FLOCK  ADVISORY  WRITE 4242 fe:01:1234 0 EOF";
        assert_eq!(flock_holder(line, "fe:01:1234"), Some(4242));
        assert_eq!(flock_holder(line, "fe:01:1235"), None);
        let waiter = "1: -> FLOCK  ADVISORY  WRITE 77 fe:01:1234 0 EOF";
        assert_eq!(flock_holder(waiter, "fe:01:1234"), Some(77));
        let posix = "2: POSIX  ADVISORY  WRITE 5 fe:01:1234 0 EOF";
        assert_eq!(flock_holder(posix, "fe:01:1234"), None);
        assert_eq!(flock_holder("", "x"), None);
    }

    #[test]
    fn a_missing_image_is_an_io_error() {
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("missing");
        assert!(matches!(
            acquire(&missing, LockMode::Shared),
            Err(AcquireError::Io(_))
        ));
    }
}
