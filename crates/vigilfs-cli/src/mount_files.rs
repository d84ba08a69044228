//! The files a mount keeps beside the filesystem: `--pid-file` and
//! `--log-file`. Both are checked before anything is mounted, because a
//! daemon could only log a failure where nobody looks, and because a
//! typo must never overwrite what is not ours: another mount's pid file,
//! another user's file, the image itself or any other vigilfs image.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use vigilfs::device::{FileDevice, FileDeviceOptions};
use vigilfs::format::{read_superblock, FormatError};

use crate::failure::Failure;

/// `--pid-file` is checked before anything is mounted: it must be
/// writable (a daemon could only log the failure, where nobody looks),
/// and an existing file must be a pid file (it is replaced, and removed
/// at the unmount).
pub fn check_pid_file(path: &Path) -> Result<(), Failure> {
    let refuse = |why: String| Failure::usage(format!("--pid-file {}: {why}", path.display()));
    // A FIFO would block the read, a device never end it.
    if std::fs::metadata(path).is_ok_and(|metadata| !metadata.is_file()) {
        return Err(refuse(
            "exists and is not a regular file; refusing to use it".into(),
        ));
    }
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            if !(text.trim().is_empty() || text.trim().parse::<u32>().is_ok()) {
                return Err(refuse(
                    "exists and is not a pid file; refusing to overwrite it".into(),
                ));
            }

            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|error| refuse(error.to_string()))?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(path)
                .map_err(|error| refuse(error.to_string()))?;
            let _ = std::fs::remove_file(path);
        }
        Err(error) => return Err(refuse(error.to_string())),
    }
    Ok(())
}

/// Refuses a pid file that names a running process (another mount's,
/// whose unmount would then remove this one's).
pub fn check_pid_file_free(path: &Path) -> Result<(), Failure> {
    let named = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match named {
        Some(pid) if crate::processes::is_running_vigilfs(pid) => Err(Failure::usage(format!(
            "--pid-file {}: names process {pid}, a vigilfs that is running (another \
             mount's); refusing to overwrite it",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Opens the log for appending (made 0600 when new: it names files), once,
/// before the fork: the daemon inherits the descriptor. A FIFO is opened
/// without waiting for a reader (the mount would wait for ever) and made
/// blocking again after; opening it twice would hand a reader that reads
/// one writer (`cat fifo`) its end of file at the first close, and leave
/// the second open waiting for ever.
pub fn open_log(path: &Path) -> Result<File, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let log = File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| {
            let why = match error.raw_os_error() {
                Some(libc::ENXIO) => "a FIFO nobody reads; start its reader first".to_string(),
                _ => error.to_string(),
            };
            Failure::usage(format!("--log-file {}: {why}", path.display()))
        })?;
    // SAFETY: fcntl on a descriptor this function owns; F_GETFL and F_SETFL
    // only read and set its status flags.
    unsafe {
        let flags = libc::fcntl(log.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(log.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(log)
}

/// Refuses a `--log-file` the log would damage or leak through: another
/// user's file or symbolic link, a place under the mount point, a block
/// device, the image being mounted (the log appended after its end) or
/// any other vigilfs image. A FIFO nobody reads is refused by `open_log`.
pub fn check_log_file(path: &Path, image: &Path, mountpoint: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let refuse = |why: &str| {
        Err(Failure::usage(format!(
            "--log-file {}: {why}",
            path.display()
        )))
    };
    // The log names files: it must not land where another user can read
    // it, or be led by another user's symbolic link (fs.protected_symlinks
    // may be off) into a file of the mounting user's.
    // SAFETY: geteuid has no preconditions.
    let user = unsafe { libc::geteuid() };
    if let Ok(link) = std::fs::symlink_metadata(path) {
        if link.file_type().is_symlink() && link.uid() != user {
            return refuse(&format!(
                "a symbolic link of uid {}, not yours; name the log itself",
                link.uid()
            ));
        }
    }
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    let inside = resolved(directory.unwrap_or(Path::new(".")))
        .zip(resolved(mountpoint))
        .is_some_and(|(directory, mountpoint)| directory.starts_with(mountpoint));
    if inside {
        return refuse("is under the mount point, where the mount would hide it; put it elsewhere");
    }
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(());
    };
    if metadata.is_file() && metadata.uid() != user {
        return refuse(&format!(
            "belongs to uid {}; the log names files, so it must be yours",
            metadata.uid()
        ));
    }
    if metadata.file_type().is_block_device() {
        return refuse("a block device; refusing to write the log on it");
    }
    let same = crate::mountinfo::file_identity(path)
        .ok()
        .zip(crate::mountinfo::file_identity(image).ok())
        .is_some_and(|(log, image)| log == image);
    if same {
        return refuse("is the image being mounted; refusing to write the log into it");
    }
    if metadata.is_file() && holds_a_filesystem(path) {
        return refuse("holds a vigilfs filesystem; refusing to write the log into it");
    }
    Ok(())
}

/// `path` with its symbolic links and `..` resolved; a path that does
/// not exist yet (a mount point the mount will make, a log directory
/// under it) is resolved through the nearest ancestor that does (review
/// 43: a log under a mount point still to be made was not refused).
fn resolved(path: &Path) -> Option<std::path::PathBuf> {
    if let Ok(found) = std::fs::canonicalize(path) {
        return Some(found);
    }
    let name = path.file_name()?;
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(resolved(parent)?.join(name))
}

/// Whether the regular file at `path` holds a vigilfs filesystem: a
/// superblock copy with vigilfs's magic where one can be, readable or
/// damaged. (A log is too short to hold the copies, or holds text there.)
fn holds_a_filesystem(path: &Path) -> bool {
    let options = FileDeviceOptions {
        read_only: true,
        ..FileDeviceOptions::default()
    };
    let Ok(device) = FileDevice::open(path, options) else {
        return false;
    };
    match read_superblock(&device) {
        Ok(_) => true,
        // Refusals that say nothing of the magic: too short, unreadable,
        // or someone else's bytes.
        Err(FormatError::NoValidSuperblock { rejected }) => rejected.iter().any(|copy| {
            !matches!(
                copy.error,
                FormatError::BadMagic { .. }
                    | FormatError::DeviceTooSmall { .. }
                    | FormatError::Truncated { .. }
                    | FormatError::Device(_)
            )
        }),
        Err(_) => false,
    }
}
