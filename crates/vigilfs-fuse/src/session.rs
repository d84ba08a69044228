//! Mounting, waiting for and unmounting one FUSE session.
//!
//! [`mount`] mounts with fuser's `Session::new` (which also answers the
//! kernel's INIT, negotiated in the adapter's `init`), runs the session on
//! `threads` threads (fuser 0.18: `Config::n_threads`, each thread with its
//! own cloned `/dev/fuse` descriptor, `Config::clone_fd`), then stats the
//! mount point until it is the FUSE filesystem (its device number
//! changed) and answering.
//!
//! Invariants:
//! * [`mount`] returns `Ok` only when the mount answers; on any failure after
//!   the kernel mounted, it unmounts again before returning the error.
//! * When [`Mounted::wait`] or [`Mounted::unmount`] returns, every session
//!   thread has stopped and the adapter (with its `Arc` of the engine) is
//!   dropped.
//! * [`Mounted::unmount`] never unmounts what is not this session's mount:
//!   it first checks that the mount point still has the device number the
//!   FUSE mount had.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, INodeNo, MountOption, Session, SessionACL};
use vigilfs::fs::{Filesystem, LifeState, Stale};

use crate::adapter::Adapter;

/// How long [`mount`] waits for the new mount to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often it looks.
const ANSWER_POLL: Duration = Duration::from_millis(5);

/// How to serve the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    /// Threads serving requests (at least 1). Several let a slow request
    /// (an fsync waiting for the device) not hold up the others.
    pub threads: usize,
    /// Mount read-only (`ro`). The mount is read-only as well when the
    /// engine itself is (mounted `ro`, or made read-only by an error).
    pub read_only: bool,
    /// Let other users than the one mounting use the filesystem
    /// (`allow_other`); `None`: when running as root. A user other than
    /// root needs `user_allow_other` in `/etc/fuse.conf` for it.
    pub allow_other: Option<bool>,
    /// How long the kernel may trust a name-to-inode entry without asking.
    pub entry_ttl: Duration,
    /// How long the kernel may trust an inode's attributes without asking.
    pub attr_ttl: Duration,
    /// Let the kernel keep a file's cached pages across opens
    /// (`FOPEN_KEEP_CACHE`). Every change reaches the engine through this
    /// mount's kernel, which keeps its own cache right, so the pages stay
    /// valid; without it each open drops them and reads go to the daemon
    /// again.
    pub keep_cache: bool,
    /// What the kernel shows as the mount's source (in `/proc/mounts`,
    /// `df`): the image path, say. `None`, or a name a mount option cannot
    /// carry (with a comma), shows `vigilfs`.
    pub source: Option<String>,
    /// Honour set-user-id and set-group-id bits and file capabilities of
    /// programs on the mount (`suid`; `nosuid` when false). `None`: when
    /// running as root, as other filesystems mount; an unprivileged FUSE
    /// mount is always `nosuid`.
    pub set_id: Option<bool>,
    /// Let device nodes on the mount be opened as devices (`dev`; `nodev`
    /// when false). `None`: when running as root; an unprivileged FUSE
    /// mount is always `nodev`.
    pub devices: Option<bool>,
    /// Let programs on the mount be executed (`exec`, the default;
    /// `noexec` when false).
    pub exec: bool,
}

impl Default for MountConfig {
    /// 4 threads, read-write, `allow_other` when root, TTLs of 60 s: every
    /// change passes through this mount's kernel, which keeps its cache
    /// right itself (the few the engine makes on its own, set-id bits it
    /// drops, are sent to the kernel as invalidations; a power cut starts
    /// a new session), so the entries and attributes stay true however
    /// long they are trusted. 60 s rather than forever bounds the harm if
    /// that ever stops being true; libfuse's 1 s made the kernel look
    /// every name up again once a second (bench/RESULTS.md: stat 13×
    /// faster in a directory of 20,000 files).
    fn default() -> MountConfig {
        MountConfig {
            threads: 4,
            read_only: false,
            allow_other: None,
            entry_ttl: Duration::from_secs(60),
            attr_ttl: Duration::from_secs(60),
            keep_cache: true,
            source: None,
            set_id: None,
            devices: None,
            exec: true,
        }
    }
}

/// A mounted, answering FUSE filesystem.
#[derive(Debug)]
pub struct Mounted {
    state: Arc<SessionState>,
}

/// A handle to restart a [`Mounted`]'s session with another engine (after
/// a simulated power cut), from another thread than the one waiting.
#[derive(Debug, Clone)]
pub struct Restarter {
    state: Arc<SessionState>,
}

#[derive(Debug)]
struct SessionState {
    mountpoint: PathBuf,
    config: MountConfig,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    /// `None` once waited for or unmounted.
    session: Option<BackgroundSession>,
    /// The device number of the FUSE mount (what `stat` of the mount point
    /// shows while it is ours).
    device: u64,
    /// Sessions replaced by a restart, still serving descriptors opened
    /// through them until the last is closed (then they end by themselves).
    retired: Vec<BackgroundSession>,
}

/// How often [`Mounted::wait`] looks whether the session ended.
const WAIT_POLL: Duration = Duration::from_millis(20);

impl MountConfig {
    /// Whether users other than the one mounting may use the mount:
    /// `allow_other`, which defaults to whether root mounts.
    pub fn lets_other_users_in(&self) -> bool {
        self.allow_other.unwrap_or_else(running_as_root)
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Mounts `filesystem` on `mountpoint` (an existing directory) and serves
/// it until unmounted; returns once the mount answers. See the crate
/// comment for who unmounts the engine afterwards.
pub fn mount(
    filesystem: Arc<Filesystem>,
    mountpoint: &Path,
    config: &MountConfig,
) -> io::Result<Mounted> {
    if config.threads == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a FUSE session needs at least one thread",
        ));
    }
    let mountpoint = mountpoint.canonicalize().map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("mount point {}: {error}", mountpoint.display()),
        )
    })?;
    let before = std::fs::metadata(&mountpoint)?;
    if !before.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("mount point {} is not a directory", mountpoint.display()),
        ));
    }
    let (session, device) = start_session(filesystem, &mountpoint, before.dev(), config)?;
    Ok(Mounted {
        state: Arc::new(SessionState {
            mountpoint,
            config: config.clone(),
            current: Mutex::new(Current {
                session: Some(session),
                device,
                retired: Vec::new(),
            }),
        }),
    })
}

/// Mounts a FUSE session of `filesystem` on `mountpoint` (whose device
/// number is `before`) and returns it once the mount answers, with its
/// device number; on a failure after the kernel mounted, unmounts again.
fn start_session(
    filesystem: Arc<Filesystem>,
    mountpoint: &Path,
    before: u64,
    config: &MountConfig,
) -> io::Result<(BackgroundSession, u64)> {
    let read_only = config.read_only || matches!(filesystem.status().state, LifeState::ReadOnly(_));
    let allow_other = config.lets_other_users_in();

    let mut options = vec![
        MountOption::FSName(
            config
                .source
                .clone()
                .filter(|source| !source.is_empty() && !source.contains([',', '\n']))
                .unwrap_or_else(|| "vigilfs".into()),
        ),
        // The kernel shows the type as `fuse.vigilfs` (mount, df -T,
        // findmnt, fstab matching) when `subtype=` reaches it. fuser 0.18's
        // own Subtype option is only given to fusermount3: its mount(2)
        // path (root) drops it. As a plain option it reaches the kernel
        // on both paths (fusermount3 takes `subtype=` from its -o list).
        MountOption::CUSTOM("subtype=vigilfs".into()),
        // The kernel checks permissions too (the engine checks them again:
        // harmless); kernel semantics are what POSIX test suites expect.
        MountOption::DefaultPermissions,
    ];
    options.push(if read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    // fuser mounts nosuid,nodev unless told otherwise.
    if config.set_id.unwrap_or_else(running_as_root) {
        options.push(MountOption::Suid);
    }
    if config.devices.unwrap_or_else(running_as_root) {
        options.push(MountOption::Dev);
    }
    if !config.exec {
        options.push(MountOption::NoExec);
    }
    let mut fuser_config = Config::default();
    fuser_config.mount_options = options;
    fuser_config.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    fuser_config.n_threads = Some(config.threads);
    fuser_config.clone_fd = true;

    let engine = Arc::clone(&filesystem);
    let adapter = Adapter::new(
        filesystem,
        config.threads,
        config.entry_ttl,
        config.attr_ttl,
        config.keep_cache,
    );
    let session = Session::new(adapter, mountpoint, &fuser_config).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("mounting FUSE on {}: {error}", mountpoint.display()),
        )
    })?;
    let background = session.spawn()?;
    forward_attribute_changes(&engine, &background)?;
    match wait_until_answering(mountpoint, before) {
        Ok(device) => {
            if running_as_root() {
                crate::kernel_flags::follow_read_only(&engine, mountpoint, device);
            }
            Ok((background, device))
        }
        Err(error) => {
            // Unmount what the kernel mounted; the session's own unmount on
            // drop does it if this cannot.
            if unmount_path(mountpoint, false).is_ok() {
                let _ = background.join();
            }
            Err(error)
        }
    }
}

/// Makes the kernel forget the attributes it cached of an inode the engine
/// changed on its own (set-id bits a write or fallocate dropped: no reply
/// carries them, and `stat` asking only for the mode would show the old
/// one), and the pages that hold bytes the file does not have (a shared
/// mapping's store the mount refused as not permitted). The invalidations
/// go from their own thread, never from a request handler (see the
/// adapter's module comment); it ends when the engine drops the listener.
fn forward_attribute_changes(engine: &Filesystem, session: &BackgroundSession) -> io::Result<()> {
    let notifier = session.notifier();
    let (sender, receiver) = mpsc::channel::<(u64, Stale)>();
    thread::Builder::new()
        .name("vigilfs-fuse-inval".into())
        .spawn(move || {
            for (ino, stale) in receiver {
                // Offset -1: the attributes only; offset 0, length 0:
                // every cached page too. A failure (the inode is not
                // cached, the mount is gone) leaves nothing to forget.
                let offset = match stale {
                    Stale::Attributes => -1,
                    Stale::Pages => 0,
                };
                let _ = notifier.inval_inode(INodeNo(ino), offset, 0);
            }
        })?;
    engine.set_attribute_listener(Some(Arc::new(move |ino, stale| {
        let _ = sender.send((ino, stale));
    })));
    // Called from the engine's callers that serve no request (the crash
    // lab's control thread): the kernel drops the pages before the write
    // of the notification returns.
    let notifier = session.notifier();
    engine.set_page_invalidator(Some(Arc::new(move |ino| {
        // Offset 0, length 0: every cached page (and the attributes).
        let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
    })));
    Ok(())
}

/// Stats `mountpoint` until its device number is no longer `before`: the
/// FUSE mount is in place and answering (the stat went through it).
/// Returns the new device number. The stat runs on a helper thread so a
/// mount that never answers makes a timeout, not a hang.
fn wait_until_answering(mountpoint: &Path, before: u64) -> io::Result<u64> {
    let (sender, receiver) = mpsc::channel();
    let path = mountpoint.to_path_buf();
    thread::Builder::new()
        .name("vigilfs-fuse-probe".into())
        .spawn(move || {
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            let outcome = loop {
                match std::fs::metadata(&path) {
                    Ok(metadata) if metadata.dev() != before => break Ok(metadata.dev()),
                    Ok(_) if Instant::now() < deadline => thread::sleep(ANSWER_POLL),
                    Ok(_) => break Err(None),
                    Err(error) => break Err(Some(error)),
                }
            };
            let _ = sender.send(outcome);
        })?;
    let timeout = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the FUSE mount on {} did not answer within {} s",
                mountpoint.display(),
                ANSWER_TIMEOUT.as_secs()
            ),
        )
    };
    match receiver.recv_timeout(ANSWER_TIMEOUT + Duration::from_secs(1)) {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(Some(error))) => Err(io::Error::new(
            error.kind(),
            format!(
                "the FUSE mount on {} does not answer stat: {error}",
                mountpoint.display()
            ),
        )),
        Ok(Err(None)) | Err(_) => Err(timeout()),
    }
}

/// How [`Mounted::end`] unmounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    /// A plain unmount; if the mount is busy, a lazy one (`umount -l`),
    /// then wait for the session to end (when the last file is closed).
    WaitingForBusy,
    /// A plain unmount only; if busy, give up and leave the session to
    /// fuser's own clean-up.
    Immediate,
}

impl Mounted {
    /// Where it is mounted (canonical path).
    pub fn mountpoint(&self) -> &Path {
        &self.state.mountpoint
    }

    /// A handle that restarts this session with another engine.
    pub fn restarter(&self) -> Restarter {
        Restarter {
            state: Arc::clone(&self.state),
        }
    }

    /// Blocks until the filesystem is unmounted from outside (`umount`,
    /// `fusermount3 -u`) and the session threads have stopped. A session
    /// replaced by a restart does not count: this waits for the newest.
    pub fn wait(self) -> io::Result<()> {
        loop {
            {
                let mut current = self.state.lock();
                let finished = current
                    .session
                    .as_ref()
                    .is_none_or(|session| session.guard.is_finished());
                if finished {
                    return match current.session.take() {
                        Some(session) => join(session),
                        None => Ok(()),
                    };
                }
            }
            thread::sleep(WAIT_POLL);
        }
    }

    /// Unmounts and waits for the session threads to stop. If files are
    /// still open in the mount, it is detached lazily (as `umount -l`: it
    /// disappears from the namespace at once) and this returns when the
    /// last of them is closed.
    pub fn unmount(self) -> io::Result<()> {
        self.state.end(Teardown::WaitingForBusy)
    }
}

/// The per-mount flags a remount can change, as the kernel holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountFlags {
    /// `ro`.
    pub read_only: bool,
    /// `suid` (not `nosuid`).
    pub set_id: bool,
    /// `dev` (not `nodev`).
    pub devices: bool,
    /// `exec` (not `noexec`).
    pub exec: bool,
}

impl Restarter {
    /// Where the session is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.state.mountpoint
    }

    /// The device number of the session's FUSE mount now: a restart makes
    /// a new mount, whose number differs from the old one's while a
    /// descriptor keeps the old mount alive.
    pub fn device(&self) -> u64 {
        self.state.lock().device
    }

    /// [`Restarter::device`] while the session serves it; `None` once it
    /// has ended (unmounted): the kernel gives a freed device number to
    /// the next mount at once, so an ended session's number may be
    /// another's.
    pub fn serving_device(&self) -> Option<u64> {
        let current = self.state.lock();
        let serving = current
            .session
            .as_ref()
            .is_some_and(|session| !session.guard.is_finished());
        serving.then_some(current.device)
    }

    /// Replaces the session with one serving `filesystem` on the same mount
    /// point: the current mount is detached (as `umount -l`: it leaves the
    /// namespace at once and serves its open descriptors until they are
    /// closed, with whatever its engine answers — an abandoned engine fails
    /// them with `EIO`), and a new mount takes its place, with the kernel's
    /// caches empty. Returns once the new mount answers.
    ///
    /// `stale` are the inodes the old mount's kernel side holds: their
    /// cached pages and attributes are dropped first, so a descriptor still
    /// open on the old mount reaches the old engine (and its `EIO`) instead
    /// of reading what the kernel cached before the crash. `flags`, read
    /// from the old mount while its engine answered, are the new mount's
    /// (a `remount,ro` since the session started is kept); `None` mounts
    /// as the session was configured.
    pub fn restart(
        &self,
        filesystem: Arc<Filesystem>,
        stale: &[u64],
        flags: Option<MountFlags>,
    ) -> io::Result<()> {
        let state = &self.state;
        let mut current = state.lock();
        current
            .retired
            .retain(|session| !session.guard.is_finished());
        if let Some(old) = &current.session {
            let notifier = old.notifier();
            for &inode in stale {
                // An inode the kernel dropped meanwhile is refused (ENOENT):
                // nothing of it is cached any more.
                let _ = notifier.inval_inode(INodeNo(inode), 0, -1);
            }
        }
        // The old mount's engine may be abandoned already (it fails even a
        // stat of its root), so it is detached without asking; a mount
        // point no longer mounted (EINVAL) is fine.
        if let Err(error) = unmount_path(&state.mountpoint, true) {
            if error.raw_os_error() != Some(libc::EINVAL) {
                return Err(error);
            }
        }
        if let Some(old) = current.session.take() {
            current.retired.push(old);
        }
        let before = std::fs::metadata(&state.mountpoint)?.dev();
        let config = match flags {
            Some(flags) => MountConfig {
                read_only: flags.read_only,
                set_id: Some(flags.set_id),
                exec: flags.exec,
                devices: Some(flags.devices),
                ..state.config.clone()
            },
            None => state.config.clone(),
        };
        let (session, device) = start_session(filesystem, &state.mountpoint, before, &config)?;
        current.session = Some(session);
        current.device = device;
        Ok(())
    }
}

impl SessionState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn end(&self, teardown: Teardown) -> io::Result<()> {
        let (session, device) = {
            let mut current = self.lock();
            (current.session.take(), current.device)
        };
        let Some(session) = session else {
            return Ok(());
        };
        if session.guard.is_finished() || !self.still_ours(device) {
            // Already unmounted from outside.
            return join(session);
        }
        match unmount_path(&self.mountpoint, false) {
            Ok(()) => join(session),
            Err(error) if teardown == Teardown::WaitingForBusy && is_busy(&error) => {
                unmount_path(&self.mountpoint, true)?;
                join(session)
            }
            Err(error) => {
                // Dropping the session leaves its thread detached; fuser
                // tries to unmount once more.
                drop(session);
                Err(error)
            }
        }
    }

    /// Whether the mount point still shows the mount of device `device`.
    fn still_ours(&self, device: u64) -> bool {
        device != 0
            && std::fs::metadata(&self.mountpoint)
                .map(|metadata| metadata.dev() == device)
                .unwrap_or(false)
    }
}

impl Drop for Mounted {
    /// Forgotten (or on a panic): a plain unmount, best effort, without
    /// waiting for busy files.
    fn drop(&mut self) {
        let _ = self.state.end(Teardown::Immediate);
    }
}

/// Waits for the session's threads to stop and returns how it ended. The
/// kernel ends a connection whose mount went away with `ENODEV` (fuser's
/// clean end) or, on Linux 6.18 about one time in twelve after a lazy
/// unmount whose last file was closed, with `ECONNABORTED`. fuser does not
/// ask for `FUSE_ABORT_ERROR`, so `ECONNABORTED` never means an abort
/// through `/sys/fs/fuse/connections` (that reads as `ENODEV` too): both
/// are the end of the mount, not a failure of the session.
fn join(session: BackgroundSession) -> io::Result<()> {
    match session.join() {
        Err(error) if error.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
        outcome => outcome,
    }
}

fn is_busy(error: &io::Error) -> bool {
    // EBUSY from umount2, or fusermount3 saying so.
    error.kind() == io::ErrorKind::ResourceBusy
}

/// Unmounts `mountpoint`: `umount2(2)` as root; otherwise (`EPERM`) through
/// `fusermount3 -u`. `lazy` detaches a busy mount (`MNT_DETACH`, `-z`).
fn unmount_path(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    let result = unsafe { libc::umount2(path.as_ptr(), flags) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EPERM) {
        return Err(error);
    }
    let mut command = Command::new("fusermount3");
    command.arg("-u").arg("-q");
    if lazy {
        command.arg("-z");
    }
    let output = command.arg("--").arg(mountpoint).output()?;
    if output.status.success() {
        Ok(())
    } else {
        let message = String::from_utf8_lossy(&output.stderr);
        let kind = if message.contains("busy") {
            io::ErrorKind::ResourceBusy
        } else {
            io::ErrorKind::Other
        };
        Err(io::Error::new(
            kind,
            format!(
                "fusermount3 -u {}: {}",
                mountpoint.display(),
                message.trim()
            ),
        ))
    }
}
