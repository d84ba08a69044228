//! Whether an image is in use by a mount, so mkfs and fsck can refuse it.
//!
//! Two independent signs, either one enough:
//!
//! - an advisory `flock` on the image: the mount process holds an exclusive
//!   lock for as long as it lives (the kernel drops it when the process
//!   dies, even by `kill -9`); mkfs holds an exclusive lock while it
//!   writes, fsck a shared one while it reads;
//! - `/proc/self/mountinfo` lists a FUSE mount whose source is the
//!   canonical image path (the mount sets it so).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held lock on an image; released when dropped.
#[derive(Debug)]
pub struct ImageLock {
    _file: File,
}

/// How to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Mount and mkfs: nobody else may hold any lock.
    Exclusive,
    /// fsck: readers may share.
    Shared,
}

/// Why an image could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds a conflicting lock.
    InUse,
    /// The image could not be opened or locked.
    Io(io::Error),
}

/// Takes the lock without waiting.
pub fn lock(image: &Path, mode: LockMode) -> Result<ImageLock, LockError> {
    let file = File::open(image).map_err(LockError::Io)?;
    let operation = match mode {
        LockMode::Exclusive => libc::LOCK_EX,
        LockMode::Shared => libc::LOCK_SH,
    } | libc::LOCK_NB;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let result = unsafe { libc::flock(file.as_raw_fd(), operation) };
    if result == 0 {
        return Ok(ImageLock { _file: file });
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(LockError::InUse)
    } else {
        Err(LockError::Io(error))
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\' && index + 3 < bytes.len() {
            let digits = &bytes[index + 1..index + 4];
            let value = std::str::from_utf8(digits)
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok());
            if let Some(value) = value {
                out.push(value);
                index += 4;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount point of a FUSE mount of `canonical_image` listed in
/// `mountinfo` (the text of /proc/self/mountinfo).
pub fn find_in_mountinfo(mountinfo: &str, canonical_image: &Path) -> Option<PathBuf> {
    let wanted = canonical_image.to_string_lossy();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut tail = after.split(' ');
        let (Some(fstype), Some(source)) = (tail.next(), tail.next()) else {
            continue;
        };
        if !(fstype == "fuse" || fstype.starts_with("fuse.") || fstype == "fuseblk") {
            continue;
        }
        let source = unescape(source);
        let source = source.strip_prefix("vigilfs#").unwrap_or(&source);
        if source == wanted {
            let mountpoint = before.split(' ').nth(4).map(unescape)?;
            return Some(PathBuf::from(mountpoint));
        }
    }
    None
}

/// Refuses an image that a running mount uses: `Err` names where.
pub fn check_not_mounted(image: &Path) -> Result<(), String> {
    let canonical = image.canonicalize().unwrap_or_else(|_| image.to_path_buf());
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
        if let Some(mountpoint) = find_in_mountinfo(&mountinfo, &canonical) {
            return Err(format!(
                "{} is mounted on {}; unmount it first",
                image.display(),
                mountpoint.display()
            ));
        }
    }
    match lock(image, LockMode::Shared) {
        Err(LockError::InUse) => Err(format!(
            "{} is in use by a vigilfs mount (or mkfs); unmount it first",
            image.display()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_mounts_of_the_image_are_found_in_mountinfo() {
        let mountinfo = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
90 27 0:50 / /mnt/my\\040data rw,nosuid,nodev - fuse.vigilfs /srv/disk.img rw,user_id=0
91 27 0:51 / /mnt/other rw - fuse.vigilfs /srv/other.img rw
";
        assert_eq!(
            find_in_mountinfo(mountinfo, Path::new("/srv/disk.img")),
            Some(PathBuf::from("/mnt/my data"))
        );
        assert_eq!(
            find_in_mountinfo(mountinfo, Path::new("/srv/none.img")),
            None
        );
        assert_eq!(find_in_mountinfo("garbage\n\n - x", Path::new("/x")), None);
    }

    #[test]
    fn an_exclusive_lock_excludes_others_until_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let image = directory.path().join("image");
        std::fs::write(&image, b"x").unwrap();
        let held = lock(&image, LockMode::Exclusive).unwrap();
        assert!(matches!(
            lock(&image, LockMode::Shared),
            Err(LockError::InUse)
        ));
        assert!(check_not_mounted(&image).is_err());
        drop(held);
        assert!(check_not_mounted(&image).is_ok());
        let _shared = lock(&image, LockMode::Shared).unwrap();
        assert!(lock(&image, LockMode::Shared).is_ok());
    }
}
