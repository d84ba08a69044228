//! The control plane: how `vigilfs sync`, `freeze`, `status`, `inject`...
//! reach a running mount.
//!
//! `syncfs(2)` never reaches a FUSE server, and freeze, thaw, shutdown and
//! fault injection are not POSIX calls, so the mount process serves a Unix
//! socket. It is addressed by the mount point and by the uid of the user
//! who mounted (the FUSE mount's `user_id=` in mountinfo):
//!
//! ```text
//! socket = DIR/<16 hex digits of FNV-1a-64(canonical mount point path)>.sock
//! DIR    = /run/vigilfs                 (created 0755 by root), or if the
//!          /run/user/<uid>/vigilfs       server cannot write there, or if
//!          /tmp/vigilfs-<uid>            that fails too (0755, owned by uid)
//! ```
//!
//! The canonical mount point is `realpath(MOUNTPOINT)`; when the mount point
//! itself cannot be resolved (another user's FUSE mount answers `stat` with
//! EACCES), its parent is resolved and the last component appended.
//!
//! Who is trusted. A socket is a name anyone may bind where they can
//! write, so the client believes none by where it is found. For the mount
//! at MOUNTPOINT it reads the owner's uid from mountinfo (set by the kernel
//! from the mounting process), considers only that uid's directories above
//! (never its own `$XDG_RUNTIME_DIR` or another user's `/tmp/vigilfs-*`),
//! each only if it is a real directory owned by root or by that uid and
//! writable by nobody else, and after connecting it checks the server's
//! `SO_PEERCRED`: a socket served by any other uid is refused, whatever
//! directory it is in. The server checks its clients the same way:
//! `status` for anyone, everything that changes the mount for root and the
//! user who mounted.
//!
//! Which server. A mount point's name leads to the server started there,
//! but another filesystem can come to show at that path (a mount layered
//! over it, a second mount point of another image, a bind or move made by
//! hand). So the client reads the device number of the mount shown there
//! from mountinfo and asks the server it reached (`identify`) which FUSE
//! mount it serves; when the names lead elsewhere it asks every socket of
//! the owner's. A request goes only to the server of the filesystem shown.
//!
//! Stale sockets. A mount process killed with SIGKILL leaves its socket
//! behind; connecting to it is refused (`ECONNREFUSED`: nobody listens).
//! Such sockets are removed by the client that finds one and by every
//! server that starts (it sweeps its whole directory). Removal takes an
//! exclusive `flock` on the directory, as binding does, so a socket being
//! bound right now is never taken for a stale one.
//!
//! The protocol ([`protocol`]) is one JSON request line answered by one JSON
//! response line; the server's deadlines and bounds are in [`server`].

pub mod client;
pub mod event_json;
pub mod faults;
pub mod media_report;
pub mod power;
pub mod protocol;
pub mod report;
pub mod server;
pub mod stream;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

pub use server::{serve, Served};

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

/// The directories a socket of a mount owned by `uid` may live in, in the
/// order the server tries them and the client looks.
pub fn socket_directories(uid: u32) -> Vec<PathBuf> {
    vec![
        PathBuf::from("/run/vigilfs"),
        PathBuf::from(format!("/run/user/{uid}/vigilfs")),
        PathBuf::from(format!("/tmp/vigilfs-{uid}")),
    ]
}

/// Whether `directory` may hold the sockets of `uid`'s mounts: a real
/// directory (not a symlink), owned by root or by `uid`, that nobody else
/// can write to. `Err` says why not.
pub fn trusted_directory(directory: &Path, uid: u32) -> Result<(), String> {
    let metadata = std::fs::symlink_metadata(directory).map_err(|error| error.to_string())?;
    if !metadata.is_dir() {
        return Err("not a directory".into());
    }
    if metadata.uid() != 0 && metadata.uid() != uid {
        return Err(format!(
            "owned by uid {}, neither root nor uid {uid}",
            metadata.uid()
        ));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by others (mode {:o})",
            metadata.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Whether `name` is a socket name as [`socket_name`] makes them.
pub fn is_socket_name(name: &str) -> bool {
    name.strip_suffix(".sock")
        .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The credentials of the process at the other end of `stream`
/// (`SO_PEERCRED`: for a server, those it had when it called `listen`).
pub fn peer_credentials(stream: &UnixStream) -> io::Result<libc::ucred> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut length = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the pointers refer to a live ucred and its length, which is
    // what SO_PEERCRED writes; the fd is the stream's open socket.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(credentials)
}

/// Connects to the socket at `path` without blocking: a server whose
/// backlog is full gives `WouldBlock` instead of holding the caller, and a
/// socket nobody listens on gives `ConnectionRefused`. The stream returned
/// blocks.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= address.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path too long: {}", path.display()),
        ));
    }
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let length = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: `address` is a valid sockaddr_un of at least `length` bytes.
    let result = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_un).cast(),
            length as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let stream = UnixStream::from(socket);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// An exclusive `flock` on a socket directory, held while sockets in it
/// are probed, removed or bound; released when dropped. Taken without
/// blocking for long: anyone may open the directory and hold the lock, so
/// after [`DIRECTORY_LOCK_WAIT`] the caller goes on without it.
pub struct DirectoryLock {
    _directory: Option<File>,
}

/// How long [`DirectoryLock::take`] tries.
const DIRECTORY_LOCK_WAIT: Duration = Duration::from_secs(2);

impl DirectoryLock {
    /// Locks `directory` (or, after [`DIRECTORY_LOCK_WAIT`], holds nothing).
    pub fn take(directory: &Path) -> DirectoryLock {
        let Ok(file) = File::open(directory) else {
            return DirectoryLock { _directory: None };
        };
        let start = Instant::now();
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return DirectoryLock {
                    _directory: Some(file),
                };
            }
            if start.elapsed() >= DIRECTORY_LOCK_WAIT {
                return DirectoryLock { _directory: None };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Removes the socket at `path` if nobody listens on it, under the
/// directory's lock: `None` if it is not stale, else removal's outcome.
pub fn remove_if_stale(directory: &Path, path: &Path) -> Option<io::Result<()>> {
    let _lock = DirectoryLock::take(directory);
    match connect_nonblocking(path) {
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            Some(std::fs::remove_file(path))
        }
        _ => None,
    }
}

/// Removes every stale socket in `directory` (sockets of mount processes
/// that died); the caller holds the directory's lock. Returns how many.
pub fn sweep_stale(directory: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_socket_name) {
            continue;
        }
        let path = entry.path();
        if let Err(error) = connect_nonblocking(&path) {
            if error.kind() == io::ErrorKind::ConnectionRefused
                && std::fs::remove_file(&path).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

/// The symbolic name of an errno, when it is a common one (the names fault
/// rules take: one table for what is typed and what is shown).
pub fn errno_name(errno: i32) -> Option<&'static str> {
    vigilfs::device::Errno(errno).name()
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
    fn only_private_directories_of_root_or_the_owner_are_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = current_uid();
        assert_eq!(trusted_directory(path, me), Ok(()));
        if me == 0 {
            // Owned by root: trusted for every owner.
            assert_eq!(trusted_directory(path, 1234), Ok(()));
        } else {
            assert!(trusted_directory(path, me + 1).is_err());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(trusted_directory(path, me)
            .unwrap_err()
            .contains("writable"));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = path.join("link");
        std::os::unix::fs::symlink(path, &link).unwrap();
        assert!(
            trusted_directory(&link, me).is_err(),
            "a symlink is not trusted"
        );
        assert!(trusted_directory(&path.join("missing"), me).is_err());
    }

    #[test]
    fn stale_sockets_are_swept_and_live_ones_kept() {
        let directory = tempfile::tempdir().unwrap();
        let live_path = directory.path().join("00000000000000aa.sock");
        let stale_path = directory.path().join("00000000000000bb.sock");
        let other_path = directory.path().join("not-ours.sock");
        let live = std::os::unix::net::UnixListener::bind(&live_path).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&stale_path).unwrap());
        drop(std::os::unix::net::UnixListener::bind(&other_path).unwrap());
        assert_eq!(
            connect_nonblocking(&stale_path).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        assert!(connect_nonblocking(&live_path).is_ok());
        assert_eq!(sweep_stale(directory.path()), 1);
        assert!(live_path.exists() && other_path.exists() && !stale_path.exists());
        assert!(remove_if_stale(directory.path(), &live_path).is_none());
        drop(live);
        assert!(matches!(
            remove_if_stale(directory.path(), &live_path),
            Some(Ok(()))
        ));
        assert!(!live_path.exists());
        assert!(is_socket_name("0123456789abcdef.sock"));
        assert!(!is_socket_name("0123456789abcdeg.sock"));
        assert!(!is_socket_name("0123.sock"));
    }

    #[test]
    fn errnos_are_described_with_their_names() {
        assert_eq!(describe_errno(libc::EIO), "Input/output error (EIO)");
        assert!(describe_errno(libc::ENOSPC).ends_with("(ENOSPC)"));
    }
}
