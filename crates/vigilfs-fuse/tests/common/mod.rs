//! Test fixture: a fresh vigilfs on a 256 MiB memory device behind a fault
//! injector, mounted through FUSE on a temporary directory, and thin safe
//! wrappers over the libc calls std does not offer.
//!
//! Invariants: a [`Mount`] is unmounted when dropped, on a panic too (FUSE
//! first, then the engine), so a failing test never leaves a mount behind;
//! [`Mount::finish`] additionally checks that the engine unmounted cleanly
//! and fsck finds nothing.

#![allow(dead_code)] // Each test file uses part of it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;
use vigilfs::device::{
    BlockDevice, Errno, FaultDevice, FaultPlan, FaultRule, IoClass, MemoryDevice, Operations,
    SectorSize,
};
use vigilfs::fs::{Filesystem, MountOptions};
use vigilfs::fsck::fsck;
use vigilfs::mkfs::{make_filesystem, MkfsOptions};
use vigilfs_fuse::{mount, MountConfig, Mounted};

/// Bytes of the memory device.
const DEVICE_BYTES: u64 = 256 << 20;

/// Whether FUSE tests can run here; prints why not otherwise. They need
/// `/dev/fuse` and root (chown, other users' credentials, `allow_other`).
pub fn fuse_available() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: no /dev/fuse");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the FUSE tests run as root");
        return false;
    }
    true
}

/// A fresh filesystem on a memory device, mounted as an engine only (no
/// FUSE): for tests that call [`vigilfs_fuse::mount`] themselves.
pub fn fresh_engine(options: MountOptions) -> (Arc<Filesystem>, Arc<dyn BlockDevice>) {
    let device: Arc<dyn BlockDevice> =
        Arc::new(MemoryDevice::new(DEVICE_BYTES, SectorSize::Bytes512));
    make_filesystem(Arc::clone(&device), &MkfsOptions::default()).expect("mkfs");
    let filesystem = Filesystem::mount(Arc::clone(&device), options).expect("mount");
    (Arc::new(filesystem), device)
}

/// A mounted vigilfs.
pub struct Mount {
    pub plan: Arc<FaultPlan>,
    device: Arc<dyn BlockDevice>,
    options: MountOptions,
    filesystem: Option<Arc<Filesystem>>,
    mounted: Option<Mounted>,
    directory: TempDir,
}

impl Mount {
    /// A fresh filesystem, mounted with the default options.
    pub fn new() -> Mount {
        Mount::with_options(MountOptions::default())
    }

    /// A fresh filesystem, mounted with `options`.
    pub fn with_options(options: MountOptions) -> Mount {
        let memory = Arc::new(MemoryDevice::new(DEVICE_BYTES, SectorSize::Bytes512));
        let plan = Arc::new(FaultPlan::new());
        let device: Arc<dyn BlockDevice> = Arc::new(FaultDevice::new(memory, Arc::clone(&plan)));
        make_filesystem(Arc::clone(&device), &MkfsOptions::default()).expect("mkfs");
        let directory = tempfile::tempdir().expect("a mount point");
        let mut fixture = Mount {
            plan,
            device,
            options,
            filesystem: None,
            mounted: None,
            directory,
        };
        fixture.mount();
        fixture
    }

    fn mount(&mut self) {
        let filesystem = Arc::new(
            Filesystem::mount(Arc::clone(&self.device), self.options.clone()).expect("mount"),
        );
        let mounted = mount(
            Arc::clone(&filesystem),
            self.directory.path(),
            &MountConfig::default(),
        )
        .expect("FUSE mount");
        self.filesystem = Some(filesystem);
        self.mounted = Some(mounted);
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.mounted
            .as_ref()
            .map_or(self.directory.path(), Mounted::mountpoint)
    }

    /// `name` in the mount.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// The engine behind the mount.
    pub fn engine(&self) -> &Filesystem {
        self.filesystem.as_ref().expect("mounted")
    }

    /// Makes data writes fail with EIO.
    pub fn fail_data_writes(&self) {
        self.plan
            .add_rule(
                FaultRule::fail(Errno::EIO)
                    .for_class(IoClass::Data)
                    .on(Operations::WRITE),
            )
            .expect("fault rule");
    }

    /// Unmounts FUSE, then the engine (which must succeed).
    fn unmount_all(&mut self) -> Result<(), String> {
        if let Some(mounted) = self.mounted.take() {
            mounted
                .unmount()
                .map_err(|error| format!("FUSE unmount: {error}"))?;
        }
        if let Some(mut filesystem) = self.filesystem.take() {
            // The session has ended, but a pool worker that answered its
            // last request may still be dropping its reference (the mount
            // command waits for that the same way).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let filesystem = loop {
                match Arc::try_unwrap(filesystem) {
                    Ok(filesystem) => break filesystem,
                    Err(shared) if std::time::Instant::now() < deadline => {
                        filesystem = shared;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(_) => return Err("the session still holds the engine".into()),
                }
            };
            filesystem
                .unmount()
                .map_err(|error| format!("engine unmount: {error}"))?;
        }
        Ok(())
    }

    /// Unmounts everything and mounts the same device again.
    pub fn remount(&mut self) {
        self.unmount_all().expect("unmount");
        self.mount();
    }

    /// Unmounts, checks the unmount was clean and fsck finds nothing.
    pub fn finish(mut self) {
        self.unmount_all().expect("unmount");
        let report = fsck(Arc::clone(&self.device), &mut |_| {}).expect("fsck");
        assert!(report.is_clean(), "fsck: {:#?}", report.problems);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(error) = self.unmount_all() {
            if !std::thread::panicking() {
                panic!("{error}");
            }
            eprintln!("while unwinding: {error}");
        }
    }
}

/// `path` as a C string.
pub fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in test paths")
}

/// `Ok` for a 0 return, the errno otherwise.
fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The errno of an error (0 if none).
pub fn errno_of(error: &io::Error) -> i32 {
    error.raw_os_error().unwrap_or(0)
}

/// `fsync(2)`.
pub fn fsync(file: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: the descriptor is open for the borrow's duration.
    check(unsafe { libc::fsync(file.as_raw_fd()) })
}

/// `close(2)` of a descriptor taken out of its owner.
pub fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller gave up ownership of `fd` (into_raw_fd).
    check(unsafe { libc::close(fd) })
}

/// `renameat2(2)` with `flags`.
pub fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (from, to) = (c_path(from), c_path(to));
    // SAFETY: both strings are valid and outlive the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mknod(2)`: a node of `mode` (type and permissions) and device `rdev`.
pub fn mknod(path: &Path, mode: libc::mode_t, rdev: libc::dev_t) -> io::Result<()> {
    let path = c_path(path);
    // SAFETY: the string is valid and outlives the call.
    check(unsafe { libc::mknod(path.as_ptr(), mode, rdev) })
}

/// `fallocate(2)`.
pub fn fallocate(file: &impl AsRawFd, mode: i32, offset: i64, length: i64) -> io::Result<()> {
    // SAFETY: the descriptor is open for the borrow's duration.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, length) })
}

/// `lseek(2)`; returns the new offset.
pub fn lseek(file: &impl AsRawFd, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: the descriptor is open for the borrow's duration.
    let result = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// `setxattr(2)`.
pub fn setxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let (path, name) = (c_path(path), CString::new(name).expect("name"));
    // SAFETY: valid strings and a buffer of `value.len()` bytes.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

/// `getxattr(2)` into a buffer of `size` bytes (non-zero; for the size
/// alone see [`getxattr_size`]): the value.
pub fn getxattr(path: &Path, name: &str, size: usize) -> io::Result<Vec<u8>> {
    let (path, name) = (c_path(path), CString::new(name).expect("name"));
    let mut buffer = vec![0u8; size];
    // SAFETY: valid strings and a writable buffer of `size` bytes.
    let result = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            size,
        )
    };
    let length = usize::try_from(result).map_err(|_| io::Error::last_os_error())?;
    buffer.truncate(length);
    Ok(buffer)
}

/// `getxattr(2)` with size 0: the value's length.
pub fn getxattr_size(path: &Path, name: &str) -> io::Result<usize> {
    let (path, name) = (c_path(path), CString::new(name).expect("name"));
    // SAFETY: valid strings; a null buffer with size 0 asks for the size.
    let result = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    usize::try_from(result).map_err(|_| io::Error::last_os_error())
}

/// `listxattr(2)`: the names.
pub fn listxattr(path: &Path) -> io::Result<Vec<String>> {
    let path = c_path(path);
    // SAFETY: a valid string; a null buffer with size 0 asks for the size.
    let size = unsafe { libc::listxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
    let size = usize::try_from(size).map_err(|_| io::Error::last_os_error())?;
    let mut buffer = vec![0u8; size];
    // SAFETY: a valid string and a writable buffer of `size` bytes.
    let result = unsafe { libc::listxattr(path.as_ptr(), buffer.as_mut_ptr().cast(), size) };
    let length = usize::try_from(result).map_err(|_| io::Error::last_os_error())?;
    buffer.truncate(length);
    Ok(buffer
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect())
}

/// `listxattr(2)` into a buffer of `size` bytes (to test `ERANGE`).
pub fn listxattr_into(path: &Path, size: usize) -> io::Result<usize> {
    let path = c_path(path);
    let mut buffer = vec![0u8; size];
    // SAFETY: a valid string and a writable buffer of `size` bytes.
    let result = unsafe { libc::listxattr(path.as_ptr(), buffer.as_mut_ptr().cast(), size) };
    usize::try_from(result).map_err(|_| io::Error::last_os_error())
}

/// `removexattr(2)`.
pub fn removexattr(path: &Path, name: &str) -> io::Result<()> {
    let (path, name) = (c_path(path), CString::new(name).expect("name"));
    // SAFETY: valid strings.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) })
}

/// `utimensat(2)` on a path (following symlinks).
pub fn utimensat(path: &Path, atime: libc::timespec, mtime: libc::timespec) -> io::Result<()> {
    let path = c_path(path);
    let times = [atime, mtime];
    // SAFETY: a valid string and an array of two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) })
}

/// `statvfs(3)`.
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let path = c_path(path);
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut result: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid string and a writable statvfs.
    check(unsafe { libc::statvfs(path.as_ptr(), &mut result) })?;
    Ok(result)
}

/// Maps the first `length` bytes of `file` shared, lets `edit` change
/// them through the mapping, then `msync(MS_SYNC)`s and unmaps it:
/// msync's outcome.
pub fn edit_through_mapping(
    file: &impl AsRawFd,
    length: usize,
    edit: impl FnOnce(&mut [u8]),
) -> io::Result<()> {
    // SAFETY: a new shared mapping of `length` bytes of an open file,
    // unmapped below and not used after.
    let pages = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(pages, libc::MAP_FAILED, "{}", io::Error::last_os_error());
    // SAFETY: the writable mapping above, `length` bytes long, borrowed
    // only until it is synced.
    edit(unsafe { std::slice::from_raw_parts_mut(pages.cast::<u8>(), length) });
    // SAFETY: the mapping above, synced then unmapped once.
    let outcome = check(unsafe { libc::msync(pages, length, libc::MS_SYNC) });
    // SAFETY: as above.
    unsafe { libc::munmap(pages, length) };
    outcome
}

/// `fcntl(F_SETFL)`: the descriptor's status flags become `flags`.
pub fn set_status_flags(file: &impl AsRawFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: F_SETFL on an open descriptor takes an int.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags) })
}

/// `ioctl(FS_IOC_SETFLAGS)`, as `chattr`: the inode flags become `flags`
/// (`FS_APPEND_FL` 0x20, `FS_IMMUTABLE_FL` 0x10).
pub fn set_inode_flags(file: &impl AsRawFd, flags: libc::c_long) -> io::Result<()> {
    // SAFETY: FS_IOC_SETFLAGS reads a long through the pointer.
    check(unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) })
}
