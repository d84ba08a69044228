//! The control plane: how `vigilfs sync`, `freeze`, `status`, `inject`...
//! reach a running mount.
//!
//! `syncfs(2)` never reaches a FUSE server, and freeze, thaw, shutdown and
//! fault injection are not POSIX calls, so the mount process serves a Unix
//! socket. It is addressed by the mount point:
//!
//! ```text
//! socket = DIR/<16 hex digits of FNV-1a-64(canonical mount point path)>.sock
//! DIR    = /run/vigilfs                (created 0755 if missing), or if that
//!          $XDG_RUNTIME_DIR/vigilfs     cannot be written, or if that
//!          /tmp/vigilfs-<uid>           cannot be written either (0755,
//!                                       owned by <uid>)
//! ```
//!
//! The canonical mount point is `realpath(MOUNTPOINT)`; when the mount point
//! itself cannot be resolved (another user's FUSE mount answers `stat` with
//! EACCES), its parent is resolved and the last component appended. The
//! client tries every directory in the same order and connects to the first
//! socket that exists.
//!
//! The protocol ([`protocol`]) is one JSON request line answered by one JSON
//! response line. Who may do what is decided with `SO_PEERCRED`: `status`
//! for anyone, everything that changes the mount for root and the user who
//! mounted.

pub mod client;
pub mod protocol;
pub mod report;
pub mod server;

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

pub use server::serve;

/// FNV-1a, 64 bits: stable across versions and machines, unlike std's
/// hasher.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The socket's file name for a canonical mount point.
pub fn socket_name(canonical_mountpoint: &Path) -> String {
    format!(
        "{:016x}.sock",
        fnv1a_64(canonical_mountpoint.as_os_str().as_bytes())
    )
}

/// The canonical form of a mount point, as both sides compute it: see the
/// module comment.
pub fn canonical_mountpoint(mountpoint: &Path) -> io::Result<PathBuf> {
    match mountpoint.canonicalize() {
        Ok(path) => Ok(path),
        Err(error) => {
            let absolute = lexically_absolute(mountpoint)?;
            let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
                return Err(error);
            };
            match parent.canonicalize() {
                Ok(parent) => Ok(parent.join(name)),
                Err(_) if error.kind() == io::ErrorKind::NotFound => Err(error),
                Err(_) => Ok(absolute),
            }
        }
    }
}

/// `path` made absolute against the current directory, with `.` and `..`
/// resolved lexically.
fn lexically_absolute(path: &Path) -> io::Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// The current process's real uid.
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The directories a socket may live in, in the order they are tried.
/// `uid` selects the `/tmp/vigilfs-<uid>` fallback of a server; a client
/// passes `None` and gets every `/tmp/vigilfs-*` directory whose owner
/// matches its name.
pub fn socket_directories(uid: Option<u32>) -> Vec<PathBuf> {
    let mut directories = vec![PathBuf::from("/run/vigilfs")];
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        directories.push(PathBuf::from(runtime).join("vigilfs"));
    }
    match uid {
        Some(uid) => directories.push(PathBuf::from(format!("/tmp/vigilfs-{uid}"))),
        None => {
            use std::os::unix::fs::MetadataExt;
            let own = PathBuf::from(format!("/tmp/vigilfs-{}", current_uid()));
            directories.push(own.clone());
            if let Ok(entries) = std::fs::read_dir("/tmp") {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(owner) = name
                        .to_str()
                        .and_then(|name| name.strip_prefix("vigilfs-"))
                        .and_then(|uid| uid.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    let path = entry.path();
                    // Only directories owned by the uid they are named
                    // after: nobody can plant a socket for someone else.
                    let owned = std::fs::symlink_metadata(&path)
                        .is_ok_and(|meta| meta.is_dir() && meta.uid() == owner);
                    if owned && path != own {
                        directories.push(path);
                    }
                }
            }
        }
    }
    directories
}

/// Where a client finds the socket of the mount at `canonical_mountpoint`:
/// the first candidate that exists, or the list of places looked at.
pub fn find_socket(canonical_mountpoint: &Path) -> Result<PathBuf, Vec<PathBuf>> {
    let name = socket_name(canonical_mountpoint);
    let candidates: Vec<PathBuf> = socket_directories(None)
        .into_iter()
        .map(|dir| dir.join(&name))
        .collect();
    candidates
        .iter()
        .find(|path| path.exists())
        .cloned()
        .ok_or(candidates)
}

/// The symbolic name of an errno, when it is a common one.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    const NAMES: &[(&str, i32)] = &[
        ("EPERM", libc::EPERM),
        ("ENOENT", libc::ENOENT),
        ("EINTR", libc::EINTR),
        ("EIO", libc::EIO),
        ("ENXIO", libc::ENXIO),
        ("EBADF", libc::EBADF),
        ("EAGAIN", libc::EAGAIN),
        ("ENOMEM", libc::ENOMEM),
        ("EACCES", libc::EACCES),
        ("EBUSY", libc::EBUSY),
        ("EEXIST", libc::EEXIST),
        ("ENODEV", libc::ENODEV),
        ("EINVAL", libc::EINVAL),
        ("EFBIG", libc::EFBIG),
        ("ENOSPC", libc::ENOSPC),
        ("EROFS", libc::EROFS),
        ("ENOLINK", libc::ENOLINK),
        ("EBADMSG", libc::EBADMSG),
        ("ETIMEDOUT", libc::ETIMEDOUT),
        ("ESHUTDOWN", libc::ESHUTDOWN),
        ("EUCLEAN", libc::EUCLEAN),
        ("EREMOTEIO", libc::EREMOTEIO),
        ("EDQUOT", libc::EDQUOT),
        ("ENODATA", libc::ENODATA),
    ];
    NAMES
        .iter()
        .find(|(_, number)| *number == errno)
        .map(|(name, _)| *name)
}

/// "Input/output error (EIO)": the C library's text and the symbolic name.
pub fn describe_errno(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    match errno_name(errno) {
        Some(name) => format!("{text} ({name})"),
        None => format!("{text} (errno {errno})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn socket_names_are_sixteen_hex_digits() {
        let name = socket_name(Path::new("/mnt/data"));
        assert_eq!(name.len(), 16 + ".sock".len());
        assert_eq!(name, socket_name(Path::new("/mnt/data")));
        assert_ne!(name, socket_name(Path::new("/mnt/data2")));
    }

    #[test]
    fn missing_mount_points_resolve_through_their_parent() {
        let directory = std::env::temp_dir();
        let canonical = directory.canonicalize().unwrap();
        let missing = directory.join("vigilfs-no-such-dir-for-sure");
        assert_eq!(
            canonical_mountpoint(&missing).unwrap(),
            canonical.join("vigilfs-no-such-dir-for-sure")
        );
        assert_eq!(canonical_mountpoint(&directory).unwrap(), canonical);
    }

    #[test]
    fn errnos_are_described_with_their_names() {
        assert_eq!(describe_errno(libc::EIO), "Input/output error (EIO)");
        assert!(describe_errno(libc::ENOSPC).ends_with("(ENOSPC)"));
    }
}
