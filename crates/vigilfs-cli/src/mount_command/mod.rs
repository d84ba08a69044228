//! `vigilfs mount IMAGE MOUNTPOINT`: serve a filesystem through FUSE.
//!
//! The device stack is FileDevice → FaultDevice (with a fault plan the
//! control plane changes: `vigilfs inject`) → the engine
//! (`Filesystem::mount`) → the FUSE adapter; with `-o crashable`, a
//! volatile write cache sits above the file (see `power_cut`), and the
//! engine can be replaced by the one mounted after a power cut, which is
//! why everything serving the mount finds it in an `EngineSlot`. An IMAGE
//! that does not exist is created (sparse, --size or 1G) and formatted
//! first.
//!
//! The process stays in the foreground by default and logs one line per
//! event on stderr: mounted, each FS_ERROR event as it arrives (a listener
//! group on the engine's event source), unmounted. SIGINT, SIGTERM,
//! SIGHUP and SIGQUIT unmount it; so does `umount MOUNTPOINT` from outside. Either way
//! it ends with `Filesystem::unmount`, which leaves the superblock clean.
//!
//! With --daemon the process forks before doing anything that starts a
//! thread; the child detaches (setsid, stdio to /dev/null or --log-file)
//! and mounts; the parent waits on a pipe and exits 0 once the child says
//! the filesystem is mounted and answering, or with the child's error.
//!
//! The image is locked (flock, exclusive) for the life of the mount, which
//! is how mkfs and fsck know it is in use; the lock is dropped only once
//! the engine is unmounted (written back, marked clean), so a command that
//! waits for the lock after `umount` finds the image finished.
//!
//! Here: the request, and what is checked and made before forking (the
//! image, the mount point, the options). Forking is in `daemon`, the
//! device stack and the engine's options in `engine`, and the mounted
//! life of the process, to the unmount, in `serve`.

mod daemon;
mod engine;
mod serve;

pub use engine::{fuse_config, mount_options};

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::control;
use crate::daemon_log::log;
use crate::failure::Failure;
use crate::in_use::{self, AcquireError, ImageLock, LockMode};
use crate::mkfs_command::{self, DEFAULT_IMAGE_SIZE};
use crate::mount_files::{check_log_file, check_pid_file, check_pid_file_free};
use crate::mount_options::{self, MountSettings};
use crate::second_mount;
use crate::size::ByteSize;
use daemon::daemonize;
use serve::serve;

/// What `vigilfs mount` was asked to do.
#[derive(Debug, Clone)]
pub struct MountRequest {
    /// The image file or block device.
    pub image: PathBuf,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// `-o` arguments.
    pub options: Vec<String>,
    /// Detach once mounted.
    pub daemon: bool,
    /// Size of a new image.
    pub size: Option<ByteSize>,
    /// Write the serving process's pid here.
    pub pid_file: Option<PathBuf>,
    /// With --daemon: where the detached process logs (default /dev/null).
    pub log_file: Option<PathBuf>,
    /// Invoked as a mount helper (by mount(8)): print nothing on success,
    /// and make nothing that is missing (a typo in fstab must not mount a
    /// new, empty filesystem).
    pub as_mount_helper: bool,
}

/// Everything checked before forking.
struct Prepared {
    image: PathBuf,
    mountpoint: PathBuf,
    settings: MountSettings,
    lock: ImageLock,
}

/// The gid of group `name` (a name, or a number).
fn group_id(name: &str) -> Result<u32, Failure> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let missing = || Failure::arguments(format!("option events_group={name}: no such group"));
    let c_name = std::ffi::CString::new(name).map_err(|_| missing())?;
    let mut group: libc::group = unsafe {
        // SAFETY: a plain C struct; all-zero is a valid value to be filled.
        std::mem::zeroed()
    };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to live storage of the size passed.
    let result = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut group,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if result != 0 || found.is_null() {
        return Err(missing());
    }
    Ok(group.gr_gid)
}

pub fn run(request: &MountRequest) -> Result<u8, Failure> {
    // `mount -o remount,...` changes the mount in place.
    if crate::remount::is_remount(&request.options) {
        return crate::remount::remount(&request.mountpoint, &request.options);
    }
    // A mount point or image this command makes is removed again if the
    // mount fails before it is up: a failed mount leaves nothing behind.
    let made = MadeHere::new(request);
    let prepared = match prepare(request) {
        Ok(Some(prepared)) => prepared,
        // Answered by a second mount point of a mounted image.
        Ok(None) => return Ok(0),
        Err(failure) => {
            made.remove();
            return Err(failure);
        }
    };
    if request.daemon {
        daemonize(request, prepared, made)
    } else {
        let mut mounted = false;
        let outcome = serve(request, prepared, &mut |outcome| mounted = outcome.is_ok());
        if outcome.is_err() && !mounted {
            made.remove();
        }
        outcome
    }
}

/// Why a FUSE mount may have failed where the kernel's error does not
/// say: a user other than root mounts through the set-uid `fusermount3`,
/// and without it the kernel only answers "permission denied".
pub(crate) fn fuse_mount_hint() -> String {
    if control::current_uid() == 0 {
        return String::new();
    }
    let mut hints = Vec::new();
    // fuser opens /dev/fuse itself first, and its refusal is the error.
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse");
    if let Err(error) = device {
        hints.push(format!(
            "/dev/fuse cannot be opened by this user: {error}; it is usually mode 0666"
        ));
    }
    // Where fuser looks for the helper: FUSERMOUNT_PATH alone when set,
    // else fusermount3 or fusermount in PATH, /sbin or /bin.
    if let Some(named) = std::env::var_os("FUSERMOUNT_PATH") {
        if !Path::new(&named).is_file() {
            hints.push(format!(
                "FUSERMOUNT_PATH names {}, which does not exist; fusermount3 is what a user \
                 other than root mounts through",
                Path::new(&named).display()
            ));
        }
    } else {
        let directories = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/sbin"), PathBuf::from("/bin")]);
        let found = directories.into_iter().any(|directory| {
            ["fusermount3", "fusermount"]
                .iter()
                .any(|name| directory.join(name).is_file())
        });
        if !found {
            hints.push(
                "a user other than root mounts through fusermount3, which is neither in PATH \
                 nor in /sbin or /bin: install the fuse3 package"
                    .into(),
            );
        }
    }
    if hints.is_empty() {
        String::new()
    } else {
        format!(" ({})", hints.join("; "))
    }
}

/// The mount point and the image, if they did not exist when the mount
/// started (`prepare` makes them), to remove if the mount fails before it
/// is up: a failed mount leaves neither an empty directory nor a new
/// 1 GiB image behind.
#[derive(Debug)]
struct MadeHere {
    mountpoint: Option<PathBuf>,
    image: Option<PathBuf>,
}

impl MadeHere {
    fn new(request: &MountRequest) -> MadeHere {
        let missing = |path: &Path| {
            std::fs::symlink_metadata(path)
                .is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound)
                .then(|| path.to_path_buf())
        };
        MadeHere {
            mountpoint: missing(&request.mountpoint),
            image: missing(&request.image),
        }
    }

    /// Removes what this mount made (the mount point with `rmdir`: only
    /// while empty).
    fn remove(self) {
        if let Some(path) = self.mountpoint {
            let _ = std::fs::remove_dir(path);
        }
        if let Some(path) = self.image {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Why `mountpoint` (canonical) is the system's own, if it is: the root
/// directory, a directory of the system's own tree, or where a kernel
/// filesystem (proc, sysfs, devtmpfs...) is mounted. Mounted over, the
/// system loses what is there for as long as the mount lasts.
fn system_mountpoint(mountpoint: &Path) -> Option<String> {
    const SYSTEM_DIRECTORIES: [&str; 14] = [
        "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin",
        "/sys", "/usr", "/var",
    ];
    const KERNEL_FILESYSTEMS: [&str; 17] = [
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "tracefs",
        "efivarfs",
        "bpf",
        "mqueue",
        "hugetlbfs",
        "pstore",
        "configfs",
        "fusectl",
        "binfmt_misc",
    ];
    if SYSTEM_DIRECTORIES
        .iter()
        .any(|system| mountpoint == Path::new(system))
    {
        return Some("a directory of the system's own".to_string());
    }
    let mounts = crate::mountinfo::Mounts::read().ok()?;
    let top = mounts.topmost_at(mountpoint)?;
    KERNEL_FILESYSTEMS
        .contains(&top.fstype.as_str())
        .then(|| format!("the kernel's {} is mounted there", top.fstype))
}

/// Checks and locks everything for serving; `None` when the image is
/// mounted elsewhere already and the mount point now shows that mount
/// ([`second_mount`](crate::second_mount)).
fn prepare(request: &MountRequest) -> Result<Option<Prepared>, Failure> {
    let settings = mount_options::parse(&request.options).map_err(Failure::arguments)?;
    if settings.follow_symlinks == Some(false) && control::current_uid() != 0 {
        // A flag of the kernel's mount only root can set: refused rather
        // than mounted without it.
        return Err(Failure::arguments(
            "option nosymfollow: only root can mount with it (the kernel's flag is set by a \
             remount, which needs root)",
        ));
    }
    if let Some(group) = &settings.events_group {
        group_id(group)?;
    }
    if let Some(path) = &request.pid_file {
        check_pid_file(path)?;
    }
    if let Some(path) = &request.log_file {
        check_log_file(path, &request.image, &request.mountpoint)?;
    }
    // A dead FUSE mount here: say so, not "does not exist" or a failed
    // FUSE mount.
    if let Some(error) = second_mount::served_by_no_one(&request.mountpoint) {
        return Err(Failure::mount_refused(format!(
            "{} is still a mount whose FUSE daemon is gone ({error}); unmount it first \
             (umount {}) and mount again",
            request.mountpoint.display(),
            request.mountpoint.display()
        )));
    }
    // A missing mount point is made (one level, like `mkdir`), so a first
    // `vigilfs mount vigilfs.img mnt` just works; mount(8) makes none.
    if !request.mountpoint.exists() && request.as_mount_helper {
        return Err(Failure::operational(format!(
            "mount point {} does not exist",
            request.mountpoint.display()
        )));
    }
    if !request.mountpoint.exists() {
        std::fs::create_dir(&request.mountpoint).map_err(|error| {
            Failure::usage(format!(
                "mount point {} does not exist and cannot be made: {error}",
                request.mountpoint.display()
            ))
        })?;
        if !request.as_mount_helper {
            log(&format!(
                "made the mount point {}",
                printable_path(&request.mountpoint)
            ));
        }
    }
    let mountpoint = request.mountpoint.canonicalize().map_err(|error| {
        Failure::usage(format!(
            "mount point {}: {error}",
            request.mountpoint.display()
        ))
    })?;
    if !mountpoint.is_dir() {
        return Err(Failure::usage(format!(
            "mount point {} is not a directory",
            mountpoint.display()
        )));
    }
    if let Some(why) = system_mountpoint(&mountpoint) {
        return Err(Failure::mount_refused(format!(
            "mount point {}: {why}; a mount there would hide what the system runs on (choose \
             an empty directory, as /mnt/data)",
            mountpoint.display()
        )));
    }
    if !request.image.exists() {
        if request.as_mount_helper {
            return Err(Failure::operational(format!(
                "{} does not exist (make a filesystem with `vigilfs mkfs IMAGE --size SIZE`)",
                request.image.display()
            )));
        }
        if settings.read_only {
            return Err(Failure::usage(format!(
                "{} does not exist (a new image cannot be made for a read-only mount)",
                request.image.display()
            )));
        }
        let size = request.size.unwrap_or(DEFAULT_IMAGE_SIZE);
        // Its growth warning is logged when the engine opens the image.
        let _said_at_start = mkfs_command::create_formatted(&request.image, size)?;
        if !request.as_mount_helper {
            log(&format!(
                "created {} ({size}) with a new filesystem",
                printable_path(&request.image)
            ));
        }
    } else if request.size.is_some() && !request.as_mount_helper {
        log("--size only applies to a new image; using the image as it is");
    }
    let image = request
        .image
        .canonicalize()
        .map_err(|error| Failure::operational(format!("{}: {error}", request.image.display())))?;
    let acquired = if request.as_mount_helper {
        in_use::acquire_silently(&image, LockMode::Exclusive)
    } else {
        in_use::acquire(&image, LockMode::Exclusive)
    };
    let lock = match acquired {
        Ok(lock) => lock,
        Err(AcquireError::Mounted(existing)) if existing != mountpoint => {
            // Whatever looks at that mount waits for its server: a stopped
            // one would hold this command until it is resumed.
            if let Some(pid) = control::client::stopped_server(&existing) {
                return Err(Failure::operational(format!(
                    "{} is mounted on {}, and the mount process serving it (pid {pid}) is \
                     stopped: `kill -CONT {pid}` resumes it; mount again then",
                    image.display(),
                    existing.display()
                )));
            }
            if request.pid_file.is_some() && second_mount::served_by_no_one(&existing).is_none() {
                return Err(Failure::usage(format!(
                    "{} is already served by the mount on {}: --pid-file names no new process",
                    image.display(),
                    existing.display()
                )));
            }
            second_mount::share(
                &image,
                &existing,
                &mountpoint,
                &settings,
                request.as_mount_helper,
            )?;
            return Ok(None);
        }
        Err(AcquireError::Io(error)) => {
            return Err(Failure::operational(format!(
                "cannot open {}: {error}",
                image.display()
            )))
        }
        // Mounted here already: a mount failure to mount(8), as ext4's
        // "already mounted" (review 55).
        Err(refused @ AcquireError::Mounted(_)) => {
            return Err(Failure::mount_refused(refused.message(&image)))
        }
        Err(refused) => return Err(Failure::usage(refused.message(&image))),
    };
    if let Some(path) = &request.pid_file {
        // With the image locked, a process this image's last mount left
        // exiting is gone (it removes its pid file before it lets go of
        // the lock): one still running is another mount's.
        check_pid_file_free(path)?;
    }
    Ok(Some(Prepared {
        image,
        mountpoint,
        settings,
        lock,
    }))
}

/// `path` for a message or the log, control characters escaped as
/// `vigilfs events` escapes names: a name holding a newline must not make
/// a line of its own (review 43).
fn printable_path(path: &Path) -> String {
    vigilfs::inode::printable(path.as_os_str().as_bytes())
}
