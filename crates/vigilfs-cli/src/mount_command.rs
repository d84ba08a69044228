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
//! group on the engine's event source), unmounted. SIGINT, SIGTERM and
//! SIGHUP unmount it; so does `umount MOUNTPOINT` from outside. Either way
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

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use vigilfs::device::{ByteRange, FaultDevice, FaultPlan, FileDevice, FileDeviceOptions};
use vigilfs::failure::Origin;
use vigilfs::fs::{AtimeUpdates, Filesystem, LifeState, MountOptions};

use crate::control;
use crate::daemon_log::log;
use crate::engine_slot::EngineSlot;
use crate::failure::Failure;
use crate::in_use::{self, AcquireError, ImageLock, LockMode};
use crate::kernel_read_only;
use crate::mkfs_command::{self, DEFAULT_IMAGE_SIZE};
use crate::mount_files::{check_log_file, check_pid_file, check_pid_file_free, open_log};
use crate::mount_options::{self, MountSettings};
use crate::mountinfo::{device_name, Mounts};
use crate::power_cut::PowerSwitch;
use crate::second_mount;
use crate::signals;
use crate::size::ByteSize;
use crate::writable_image::WritableImage;

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
        return Err(Failure::usage(format!(
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

/// Forks; the child serves, the parent waits for its word.
fn daemonize(request: &MountRequest, prepared: Prepared, made: MadeHere) -> Result<u8, Failure> {
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
    // What the child logged while starting comes first, to be shown here.
    loop {
        line.clear();
        let _ = reader.read_line(&mut line);
        match line.strip_prefix(crate::daemon_log::FORWARDED) {
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

pub fn mount_options(settings: &MountSettings, plan: &Arc<FaultPlan>) -> MountOptions {
    let defaults = MountOptions::default();
    MountOptions {
        fault_plan: Some(Arc::clone(plan)),
        read_only: settings.read_only,
        errors: settings.errors,
        writeback_interval: settings
            .writeback_interval
            .unwrap_or(defaults.writeback_interval),
        dirty_limit_bytes: settings.dirty_bytes.unwrap_or(defaults.dirty_limit_bytes),
        cache_bytes: settings.cache_bytes.unwrap_or(defaults.cache_bytes),
        fsync_errors: settings.fsync_errors.unwrap_or(defaults.fsync_errors),
        auto_da_alloc: settings.auto_da_alloc.unwrap_or(defaults.auto_da_alloc),
        atime: settings.atime.unwrap_or(defaults.atime),
        directory_atime: settings.directory_atime.unwrap_or(defaults.directory_atime),
        scrub_interval: settings.scrub_interval,
        scrub_rate: settings.scrub_rate,
        failures: settings
            .failed
            .iter()
            .map(|&(offset, length)| {
                (
                    ByteRange::at(offset, length),
                    Origin::operator("reported at mount (failed=)"),
                )
            })
            .collect(),
        ..defaults
    }
}

/// The FUSE adapter's configuration for `settings`, mounting `image`
/// (shown as the mount's source, which is how mkfs and fsck recognise a
/// mounted image).
pub fn fuse_config(settings: &MountSettings, image: &Path) -> vigilfs_fuse::MountConfig {
    let defaults = vigilfs_fuse::MountConfig::default();
    vigilfs_fuse::MountConfig {
        threads: settings.threads.unwrap_or(defaults.threads),
        read_only: settings.read_only,
        allow_other: settings.allow_other.or(defaults.allow_other),
        // With strictatime every read must reach the engine to be
        // recorded: the kernel's cached pages are dropped at each open
        // unless keep_cache is asked for.
        keep_cache: settings
            .keep_cache
            .unwrap_or(defaults.keep_cache && settings.atime != Some(AtimeUpdates::Always)),
        attr_ttl: settings.attr_timeout.unwrap_or(defaults.attr_ttl),
        entry_ttl: settings.entry_timeout.unwrap_or(defaults.entry_ttl),
        source: Some(image.display().to_string()),
        set_id: settings.set_id,
        devices: settings.devices,
        exec: settings.exec.unwrap_or(true),
    }
}

/// The mount points showing the FUSE filesystem with device number
/// `device` (`MAJ:MIN`) on top, newest first (a bind of a bind goes
/// before its source). One with another filesystem mounted over it is
/// left out, and logged: unmounting the path would take that one away.
fn showing_device(device: &str) -> Vec<PathBuf> {
    let Ok(mounts) = Mounts::read() else {
        return Vec::new();
    };
    let mut shown = Vec::new();
    for entry in mounts.entries().iter().rev() {
        if entry.device != device || !entry.is_fuse() || shown.contains(&entry.mountpoint) {
            continue;
        }
        let on_top = mounts.topmost_at(&entry.mountpoint);
        if on_top.is_some_and(|top| top.device == device) {
            shown.push(entry.mountpoint.clone());
        } else {
            log(&format!(
                "{} has another filesystem mounted over it: left mounted (unmount both to \
                 end this mount)",
                entry.mountpoint.display()
            ));
        }
    }
    shown
}

/// Unmounts `mountpoint` as `umount` would: a busy mount is detached
/// lazily (it goes once the last open file closes).
fn unmount_from_inside(mountpoint: &Path) {
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: umount2 with a valid NUL-terminated path.
    let result = unsafe { libc::umount2(path.as_ptr(), 0) };
    if result == 0 {
        return;
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EBUSY) {
        log(&format!(
            "{} is busy; detaching it (the mount goes when the last file closes)",
            mountpoint.display()
        ));
        // SAFETY: as above.
        unsafe {
            libc::umount2(path.as_ptr(), libc::MNT_DETACH);
        }
        return;
    }
    if error.raw_os_error() != Some(libc::EPERM) {
        log(&format!("unmounting {}: {error}", mountpoint.display()));
        return;
    }
    // Not root: the setuid helper does it.
    let lazy = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .status();
    if !lazy.is_ok_and(|status| status.success()) {
        log(&format!("unmounting {}: {error}", mountpoint.display()));
    }
}

/// A mounted engine and what it was mounted through.
struct Engine {
    fs: Arc<Filesystem>,
    plan: Arc<FaultPlan>,
    /// With `-o crashable`.
    power: Option<Arc<PowerSwitch>>,
    /// Without `-o crashable` (which is never read-only).
    image: Option<Arc<WritableImage>>,
}

/// Opens `image` and mounts the engine on the device stack `settings` ask
/// for (see the module comment).
fn start_engine(image: &Path, settings: &MountSettings) -> Result<Engine, Failure> {
    let file = FileDevice::open(
        image,
        FileDeviceOptions {
            read_only: settings.read_only,
            ..FileDeviceOptions::default()
        },
    )
    .map_err(|error| Failure::operational(format!("cannot open {}: {error}", image.display())))?;
    for note in crate::host_space::prepare(&file, image) {
        log(&note);
    }
    let plan = Arc::new(FaultPlan::new());
    let options = mount_options(settings, &plan);
    let cannot_mount =
        |error| Failure::operational(format!("cannot mount {}: {error}", image.display()));
    if settings.crashable {
        let power = Arc::new(PowerSwitch::new(Arc::new(file), Arc::clone(&plan), options));
        let fs = power.mount_first().map_err(cannot_mount)?;
        return Ok(Engine {
            fs: Arc::new(fs),
            plan,
            power: Some(power),
            image: None,
        });
    }
    let file = Arc::new(file);
    let device = FaultDevice::new(Arc::clone(&file), Arc::clone(&plan));
    let fs = Filesystem::mount(Arc::new(device), options).map_err(cannot_mount)?;
    Ok(Engine {
        fs: Arc::new(fs),
        plan,
        power: None,
        image: Some(Arc::new(WritableImage::new(image.to_path_buf(), file))),
    })
}

/// Mounts and serves until unmounted; `ready` hears once that the mount
/// answers (or why it could not).
fn serve(
    request: &MountRequest,
    prepared: Prepared,
    ready: &mut dyn FnMut(Result<(), &Failure>),
) -> Result<u8, Failure> {
    let Prepared {
        image,
        mountpoint,
        settings,
        lock,
    } = prepared;
    let mut pipe = signals::install(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        .map_err(|error| Failure::operational(format!("signal handlers: {error}")))?;
    let Engine {
        fs,
        plan,
        power,
        image: writable_image,
    } = start_engine(&image, &settings)?;
    if fs.recovered() {
        log("the filesystem was not cleanly unmounted: the journal was replayed");
    }
    for why in fs.unreadable_trees() {
        log(&format!(
            "{why}: mounted read-only around that tree, whose operations fail with EIO; \
             copy out what the rest holds"
        ));
    }

    let slot = EngineSlot::new(fs);
    let trimmer = match crate::memory_trim::spawn(Arc::clone(&slot)) {
        Ok(trimmer) => Some(trimmer),
        Err(error) => {
            log(&format!(
                "not giving freed memory back to the system: {error}"
            ));
            None
        }
    };
    let listener = match crate::daemon_events::spawn(Arc::clone(&slot), log) {
        Ok(thread) => Some(thread),
        Err(error) => {
            log(&format!("not logging the filesystem's events: {error}"));
            None
        }
    };
    // A failure before the FUSE mount: the engine is closed, never said
    // to be unmounted.
    let close_unmounted = |listener| {
        finish(
            &slot,
            power.as_deref(),
            listener,
            &image,
            Ending::BeforeMounting,
        )
    };

    let mut extra = Map::new();
    extra.insert("image".into(), json!(image.display().to_string()));
    // Which file is served, whatever its name becomes: `status` says when
    // the path no longer leads to it, and a mount or fsck of the file
    // under another name finds this mount by it.
    if let Ok((device, inode)) = crate::mountinfo::file_identity(&image) {
        extra.insert(
            "image_identity".into(),
            json!({ "device": device, "inode": inode }),
        );
    }
    extra.insert("mount_options".into(), json!(request.options.join(",")));
    let owner = control::current_uid();
    let events_gid = match &settings.events_group {
        Some(group) => Some(group_id(group)?),
        None => None,
    };
    let metrics = match &settings.metrics {
        Some(address) => {
            match crate::metrics_http::serve(address, Arc::clone(&slot), Arc::clone(&plan)) {
                Ok(metrics) => {
                    // The address bound: port 0 asks the system for one.
                    // Said once mounted: a mount that fails serves none.
                    let bound = metrics.address();
                    extra.insert("metrics_address".into(), json!(bound.to_string()));
                    Some(metrics)
                }
                Err(message) => {
                    let failure = Failure::operational(message);
                    let _ = close_unmounted(listener);
                    return Err(failure);
                }
            }
        }
        // A stable field, null when nothing is served (review 43: a
        // documented field missing from the JSON).
        None => {
            extra.insert("metrics_address".into(), Value::Null);
            None
        }
    };
    let server = control::server::serve(
        &mountpoint,
        control::server::Served {
            engine: Arc::clone(&slot),
            plan: Arc::clone(&plan),
            power: power.clone(),
            image: writable_image.clone(),
            owner_uid: owner,
            events_gid,
            // As the kernel lets them in (allow_other: by default when root
            // mounts).
            others_may_sync: fuse_config(&settings, &image).lets_other_users_in(),
            extra,
            limits: control::server::Limits::default(),
        },
    );
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            let failure = Failure::operational(format!("control socket: {error}"));
            if let Some(metrics) = metrics {
                metrics.stop();
            }
            let _ = close_unmounted(listener);
            return Err(failure);
        }
    };
    let config = fuse_config(&settings, &image);
    let first = slot
        .current()
        .expect("the engine is in its slot until the end");
    let mounted = match vigilfs_fuse::mount(first, &mountpoint, &config) {
        Ok(mounted) => mounted,
        Err(error) => {
            let failure = Failure::operational(format!(
                "cannot mount {} on {}: {error}{}",
                image.display(),
                mountpoint.display(),
                fuse_mount_hint()
            ));
            server.stop();
            let _ = close_unmounted(listener);
            return Err(failure);
        }
    };
    if let Some(metrics) = &metrics {
        log(&format!(
            "serving metrics at http://{}/metrics",
            metrics.address()
        ));
    }
    // The FUSE connection's device number, shared by every mount point
    // showing it (second mounts of the image are binds of this one).
    let device = Mounts::read().ok().and_then(|mounts| {
        mounts
            .topmost_at(&mountpoint)
            .map(|entry| entry.device.clone())
    });
    // Through FUSE the daemon records access times; the kernel's atime
    // flags only show the setting (in the mount table, where mount(8)
    // reads the options a remount starts from), so they must say it. Only
    // root may change them; a user's mount shows the kernel's default.
    // `nosymfollow` is the kernel's alone, set the same way.
    let mut flags = vigilfs_fuse::atime_flags(
        settings.atime.unwrap_or_default(),
        settings.directory_atime.unwrap_or(true),
    );
    if settings.follow_symlinks == Some(false) {
        flags |= libc::MS_NOSYMFOLLOW;
    }
    let mask = vigilfs_fuse::ATIME_FLAGS | libc::MS_NOSYMFOLLOW;
    if let Err(error) = vigilfs_fuse::set_flags(&mountpoint, mask, flags) {
        if control::current_uid() == 0 {
            log(&format!(
                "the mount table's flags stay the kernel's defaults: {error}"
            ));
        }
    }
    if let Some(power) = &power {
        power.attach(Arc::clone(&slot), mounted.restarter());
    }
    let read_only_watch = device.as_ref().and_then(|_| {
        let watch = kernel_read_only::Watch::start(
            mounted.restarter(),
            mountpoint.clone(),
            Arc::clone(&slot),
            power.clone(),
            writable_image,
            log,
        );
        match watch {
            Ok(watch) => Some(watch),
            Err(error) => {
                log(&format!(
                    "not watching the mount table ({error}): a remount that reaches only the \
                     kernel goes unseen"
                ));
                None
            }
        }
    });
    if let Some(path) = &request.pid_file {
        if let Err(error) = std::fs::write(path, format!("{}\n", std::process::id())) {
            log(&format!("pid file {}: {error}", path.display()));
        }
    }
    // Ready first: the waiting parent says "mounted" itself.
    ready(Ok(()));
    log(&format!(
        "mounted {} on {}{}{} (control socket {})",
        image.display(),
        mountpoint.display(),
        if settings.read_only { " read-only" } else { "" },
        if power.is_some() { " crashable" } else { "" },
        server.path().display()
    ));

    // A power cut makes a new kernel mount: the signal path asks for the
    // device number it has now.
    let session = mounted.restarter();
    let waiter = pipe.notifier().ok().and_then(|notifier| {
        std::thread::Builder::new()
            .name("vigilfs-session".into())
            .spawn(move || {
                let outcome = mounted.wait();
                notifier.post(signals::UNMOUNTED);
                outcome
            })
            .ok()
    });
    loop {
        match pipe.next() {
            Ok(signals::UNMOUNTED) | Err(_) => break,
            Ok(signal) => {
                // Writers waiting for a thaw keep their files open, and a
                // busy mount goes only once they close: frozen, a mount
                // detached lazily would never end, and nothing else can
                // reach it once it is out of the mount table.
                // A freeze still in progress ends thawed, too.
                if slot.current().is_some_and(|fs| fs.end_freezes()) {
                    log(&format!(
                        "{}: thawed {} to unmount it",
                        signals::name(signal),
                        mountpoint.display()
                    ));
                }
                // A power cut in progress completes first (and none comes
                // after): it makes a new mount and re-points the others,
                // which the unmount below must then see (a signal during a
                // cut was lost, or a bind ended on the bare directory).
                if let Some(power) = &power {
                    power.close();
                }
                // Every mount point showing this filesystem: the server
                // goes only once the last is gone, so a second one, or
                // the first one unmounted before, must not keep it.
                let mount_points = device
                    .as_ref()
                    .map(|_| showing_device(&device_name(session.device())))
                    .unwrap_or_else(|| vec![mountpoint.clone()]);
                // Already detached (a second Ctrl-C while files stay
                // open): nothing to unmount, but the user asks why it is
                // not over.
                if mount_points.is_empty() {
                    let open = slot.current().map_or(0, |fs| fs.status().open_files);
                    log(&format!(
                        "{}: {} is detached and ends when its last open file closes \
                         ({open} still open)",
                        signals::name(signal),
                        mountpoint.display()
                    ));
                }
                for shown in &mount_points {
                    log(&format!(
                        "{}: unmounting {}",
                        signals::name(signal),
                        shown.display()
                    ));
                    unmount_from_inside(shown);
                }
            }
        }
    }
    if let Some(waiter) = waiter {
        match waiter.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => log(&format!("FUSE session: {error}")),
            Err(_) => log("FUSE session thread panicked"),
        }
    }
    if let Some(watch) = read_only_watch {
        watch.stop();
    }
    server.stop();
    if let Some(metrics) = metrics {
        metrics.stop();
    }
    drop(trimmer);
    let outcome = finish(
        &slot,
        power.as_deref(),
        listener,
        &image,
        Ending::AfterServing,
    );
    // Listeners get the last events and the end of their stream.
    control::stream::drain(Duration::from_secs(5));
    if let Some(path) = &request.pid_file {
        // Only if it is still ours: another mount may have taken the name
        // since (when this process had ended otherwise).
        let ours = std::fs::read_to_string(path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
    drop(lock);
    outcome
}

/// Whether the engine being finished was ever served through FUSE: the
/// log must not say "unmounted" of a mount that failed before it began.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    AfterServing,
    BeforeMounting,
}

/// Takes the engine out of its slot (after any power cut in progress; no
/// other starts) and unmounts it once every other holder let go, then
/// waits for the event listener to drain.
fn finish(
    slot: &EngineSlot,
    power: Option<&PowerSwitch>,
    listener: Option<std::thread::JoinHandle<()>>,
    image: &Path,
    ending: Ending,
) -> Result<u8, Failure> {
    if let Some(power) = power {
        power.close();
    }
    // Errors damping holds become records, and the files the newest
    // events name are remembered, while the engine can still name them:
    // the listeners reading them may get to them only once it is gone.
    if let Some(fs) = slot.current() {
        slot.remember_paths_for_unmount(&fs);
        fs.event_log().release_held();
    }
    let Some(mut fs) = slot.take() else {
        return Err(Failure::operational("the engine was already unmounted"));
    };
    let mut waited = Duration::ZERO;
    let fs = loop {
        match Arc::try_unwrap(fs) {
            Ok(fs) => break Ok(fs),
            Err(shared) if waited < Duration::from_secs(30) => {
                fs = shared;
                std::thread::sleep(Duration::from_millis(20));
                waited += Duration::from_millis(20);
            }
            Err(shared) => break Err(shared),
        }
    };
    let unmounted = fs.is_ok();
    let outcome = match fs {
        Ok(fs) => match (fs.status().state, fs.unmount()) {
            (state, Ok(())) => {
                let how = match state {
                    LifeState::Running | LifeState::Frozen => "clean".to_string(),
                    LifeState::ReadOnly(why) if why.starts_with("mounted read-only") => {
                        "it was mounted read-only".to_string()
                    }
                    other => format!(
                        "{}: left for the next mount to recover from the journal",
                        other.name()
                    ),
                };
                match ending {
                    Ending::AfterServing => log(&format!("unmounted {} ({how})", image.display())),
                    Ending::BeforeMounting => log(&format!(
                        "closed {} without mounting it ({how})",
                        image.display()
                    )),
                }
                Ok(0)
            }
            (_, Err(error)) => {
                let message = format!(
                    "unmounting {}: {}",
                    image.display(),
                    control::server::fs_error_message(&error)
                );
                log(&message);
                Err(Failure::operational(message))
            }
        },
        Err(shared) => {
            // Something inside the process still holds the engine, so it
            // cannot be unmounted; what it holds dirty is still written
            // back, so that nothing a closed file had is lost (umount
            // returned long ago). The next mount replays the journal.
            // Bounded too: the holder may be stuck where the sync would
            // wait as well (a slow device, a held delay).
            let (done, outcome) = std::sync::mpsc::channel();
            let _ = std::thread::Builder::new()
                .name("vigilfs-last-sync".into())
                .spawn(move || {
                    let _ = done.send(shared.syncfs_once());
                });
            let written = match outcome.recv_timeout(Duration::from_secs(60)) {
                Ok(Ok(())) => "after writing everything back".to_string(),
                Ok(Err(error)) => format!(
                    "and writing back failed: {}",
                    control::server::fs_error_message(&error)
                ),
                Err(_) => "without writing back: that did not end within 60 s".to_string(),
            };
            let message = format!(
                "unmounting {}: the filesystem is still in use inside the process after 30 s; \
                 stopped {written} (the next mount replays the journal)",
                image.display()
            );
            log(&message);
            Err(Failure::operational(message))
        }
    };
    // The listener ends once the unmount has closed the event log; without
    // an unmount it would wait forever.
    if let (Some(listener), true) = (listener, unmounted) {
        let _ = listener.join();
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount_options::parse;

    #[test]
    fn strictatime_drops_the_kernel_cache_at_open_unless_keep_cache_is_asked() {
        let image = Path::new("/srv/disk.img");
        let config = |options: &str| fuse_config(&parse(&[options]).unwrap(), image);
        assert!(config("rw").keep_cache);
        assert!(config("relatime").keep_cache);
        assert!(!config("strictatime").keep_cache);
        assert!(config("strictatime,keep_cache").keep_cache);
        let nosuid = config("nosuid,nodev");
        assert_eq!((nosuid.set_id, nosuid.devices), (Some(false), Some(false)));
        assert_eq!(config("rw").set_id, None);
    }
}
