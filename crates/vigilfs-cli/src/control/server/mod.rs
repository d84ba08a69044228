//! The control server the mount process runs: a Unix socket (see the
//! parent module for where), one thread accepting, one short-lived thread
//! per connection.
//!
//! A client cannot hold the mount:
//! * **Whole-request deadline.** The request line must arrive complete
//!   within [`Limits::request_deadline`] of the connection being accepted,
//!   however the bytes trickle in (each read waits only for what is left of
//!   that time), and the response must be written within
//!   [`Limits::response_deadline`]. Executing the request itself (a freeze
//!   writing back gigabytes) has no deadline: that is the server's work,
//!   not the client's. The event stream (`stream.rs`) keeps the request
//!   deadline and replaces the response deadline with a per-write stall
//!   limit, so the stream lives as long as the client reads it.
//! * **Bounded connections.** At most [`Limits::max_connections`] are
//!   served at once, and at most [`Limits::max_per_uid`] for one uid (so one
//!   user cannot take every slot); an excess connection gets a `busy`
//!   error at once and is closed.
//! * **Unmount never waits for a client.** Connection threads are detached;
//!   [`ControlServer::stop`] only stops the accept thread. They hold the
//!   filesystem only weakly, upgrading it just while a request executes
//!   and never while reading or writing the socket, so the mount process
//!   can unmount the engine and exit while a client is stuck mid-request.
//!
//! Bad input gets an error response, never a panic. The socket file is
//! removed when the server stops (if it is still the one it bound).
//!
//! Admitting and reading a connection is in `connection`, carrying out a
//! request in `execute`; this module binds the socket and accepts.

mod connection;
mod execute;
#[cfg(test)]
mod tests;

pub(super) use connection::write_response;
pub use execute::fs_error_message;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use vigilfs::device::FaultPlan;

use super::protocol::{ErrorKind, Response};
use super::{
    canonical_mountpoint, connect_nonblocking, current_uid, socket_directories, socket_name,
    sweep_stale, trusted_directory, DirectoryLock,
};
use crate::engine_slot::EngineSlot;
use crate::in_use;
use crate::mountinfo::Mounts;
use crate::power_cut::PowerSwitch;
use crate::writable_image::WritableImage;
use connection::admit;

/// What one client may take of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accepting a connection to having its whole request line.
    pub request_deadline: Duration,
    /// For writing the whole response.
    pub response_deadline: Duration,
    /// Requests served at once. Root and the user who mounted are not
    /// held to it, only to `max_per_uid`: other users' connections cannot
    /// lock them out of their own mount.
    pub max_connections: usize,
    /// Requests served at once for one client uid.
    pub max_per_uid: usize,
    /// Event streams (`events --follow`) served at once. A stream leaves
    /// the requests' count when it starts: listeners never take the room
    /// of a status, a sync or a failure report.
    pub max_streams: usize,
    /// Event streams served at once for one client uid.
    pub max_streams_per_uid: usize,
}

impl Default for Limits {
    /// A request line is one short JSON object: 5 s is ample even for a
    /// person typing it into `socat`. 32 requests, 8 per uid; 64 streams,
    /// 32 per uid.
    fn default() -> Limits {
        Limits {
            request_deadline: Duration::from_secs(5),
            response_deadline: Duration::from_secs(5),
            max_connections: 32,
            max_per_uid: 8,
            max_streams: 64,
            max_streams_per_uid: 32,
        }
    }
}

/// A running control server; [`ControlServer::stop`] ends it.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    /// The socket file's (device, inode) as bound: only that is removed.
    identity: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub(super) struct Context {
    /// Looked up per request: see the module comment (unmount never waits
    /// for a client) and `engine_slot` (a power cut replaces the engine).
    pub(super) engine: Arc<EngineSlot>,
    plan: Arc<FaultPlan>,
    power: Option<Arc<PowerSwitch>>,
    image: Option<Arc<WritableImage>>,
    pub(super) mountpoint: PathBuf,
    pub(super) owner_uid: u32,
    extra: Map<String, Value>,
    limits: Limits,
    pub(super) stopping: Arc<AtomicBool>,
    /// Requests being served per client uid (`None`: uid unknown).
    connections: Mutex<HashMap<Option<u32>, usize>>,
    /// Event streams being served per client uid.
    streams: Mutex<HashMap<Option<u32>, usize>>,
    /// Members of this group may listen to events too (`events_group=`).
    pub(super) events_gid: Option<u32>,
    /// Any user may sync (see [`Served::others_may_sync`]).
    others_may_sync: bool,
    pub(super) device: MountedDevice,
}

/// The FUSE session a server serves, once it is mounted: `identify`
/// answers with its device number, asked for each time (a power cut makes
/// a new mount).
pub type MountedDevice = Arc<OnceLock<vigilfs_fuse::Restarter>>;

/// What a control server serves, and for whom.
pub struct Served {
    /// The mount's engine.
    pub engine: Arc<EngineSlot>,
    /// The fault plan of its device.
    pub plan: Arc<FaultPlan>,
    /// The power switch of a crashable mount.
    pub power: Option<Arc<PowerSwitch>>,
    /// The image, made writable by a remount of a read-only mount.
    pub image: Option<Arc<WritableImage>>,
    /// The uid of the user who mounted.
    pub owner_uid: u32,
    /// Members of this group may listen to events too.
    pub events_gid: Option<u32>,
    /// Other users may use the mount (`allow_other`): then any of them may
    /// sync it, as any process with a file open on a filesystem may call
    /// syncfs(2) on Linux.
    pub others_may_sync: bool,
    /// Fields added to every status report.
    pub extra: Map<String, Value>,
    /// What one client may take.
    pub limits: Limits,
    /// Set once the FUSE mount is made.
    pub device: MountedDevice,
}

impl Served {
    /// `engine` with its `plan`, for `owner_uid`, with the default limits
    /// and nothing else.
    pub fn new(engine: Arc<EngineSlot>, plan: Arc<FaultPlan>, owner_uid: u32) -> Served {
        Served {
            engine,
            plan,
            power: None,
            image: None,
            owner_uid,
            events_gid: None,
            others_may_sync: false,
            extra: Map::new(),
            limits: Limits::default(),
            device: MountedDevice::default(),
        }
    }
}

/// Serves the control socket of the mount at `mountpoint`.
pub fn serve(mountpoint: &Path, served: Served) -> io::Result<ControlServer> {
    let Served {
        engine,
        plan,
        power,
        image,
        owner_uid,
        events_gid,
        others_may_sync,
        mut extra,
        limits,
        device,
    } = served;
    let mountpoint = canonical_mountpoint(mountpoint)?;
    let (listener, path) = bind(&mountpoint)?;
    let metadata = std::fs::symlink_metadata(&path)?;
    listener.set_nonblocking(true)?;
    extra.insert("mountpoint".into(), json!(mountpoint.display().to_string()));
    extra.insert("owner_uid".into(), json!(owner_uid));
    extra.insert("pid".into(), json!(std::process::id()));
    let stop = Arc::new(AtomicBool::new(false));
    let context = Arc::new(Context {
        engine,
        plan,
        power,
        image,
        mountpoint,
        owner_uid,
        extra,
        limits,
        stopping: Arc::clone(&stop),
        connections: Mutex::new(HashMap::new()),
        streams: Mutex::new(HashMap::new()),
        events_gid,
        others_may_sync,
        device,
    });
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("vigilfs-control".into())
            .spawn(move || accept_loop(&listener, &context, &stop))?
    };
    Ok(ControlServer {
        path,
        identity: (metadata.dev(), metadata.ino()),
        stop,
        thread: Some(thread),
    })
}

impl ControlServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket. Connections being served
    /// are left to finish on their own (within their deadlines): this
    /// never waits for a client.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(thread) = self.thread.take() {
            // The names go first, while the accept thread's listener still
            // holds the socket's inode. Once it is closed a binder's sweep
            // takes the file for stale, and a socket bound next may get the
            // same inode number (on ext4 /run): removing "our" names then
            // removed another mount's fresh socket.
            remove_names_of(&self.path, self.identity);
            self.stop.store(true, Ordering::Release);
            let _ = thread.join();
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Removes the socket at `path` and the aliases a second mount gave it
/// (hard links in the same directory), every name still of `identity`.
fn remove_names_of(path: &Path, identity: (u64, u64)) {
    let Some(directory) = path.parent() else {
        return;
    };
    let _lock = DirectoryLock::take(directory);
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let ours = std::fs::symlink_metadata(entry.path())
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == identity);
        if ours {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Makes a socket directory (0755) if missing; it must then be one a
/// client will trust for our uid.
fn ensure_directory(directory: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(directory)
    {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    trusted_directory(directory, current_uid()).map_err(io::Error::other)
}

/// Binds the socket in the first directory that works, under the
/// directory's lock, after sweeping the stale sockets there.
///
/// A socket someone still listens on belongs to another mount process. If
/// nothing is mounted at `mountpoint` any more, that process is exiting
/// (`umount` returned while it writes back and stops): it is waited for,
/// up to [`in_use::EXIT_WAIT`], as an image it still holds is, so that
/// `umount MNT && vigilfs mount OTHER.img MNT` works. If it still serves a
/// mount there, the mount point is taken: refused at once.
fn bind(mountpoint: &Path) -> io::Result<(UnixListener, PathBuf)> {
    let name = socket_name(mountpoint);
    let mut failures = Vec::new();
    let deadline = Instant::now() + in_use::EXIT_WAIT;
    for directory in socket_directories(current_uid()) {
        if let Err(error) = ensure_directory(&directory) {
            failures.push(format!("{}: {error}", directory.display()));
            continue;
        }
        let path = directory.join(&name);
        loop {
            let lock = DirectoryLock::take(&directory);
            sweep_stale(&directory);
            if let Ok(existing) = std::fs::symlink_metadata(&path) {
                // An alias a second mount gave a live server, whose bind
                // mount here is gone: the server keeps its other name.
                if existing.nlink() > 1 && !mounted_at(mountpoint) {
                    let _ = std::fs::remove_file(&path);
                }
            }
            if std::fs::symlink_metadata(&path).is_ok() {
                if connect_nonblocking(&path).is_ok() {
                    // A server whose mount moved away (its mount point, or
                    // a directory above, renamed; `mount --move`) keeps
                    // serving under a name it no longer answers to: it gets
                    // another, where clients asking every socket find it
                    // (review 58: a mount at the old path waited 30 s for
                    // it to exit, then was refused).
                    if !mounted_at(mountpoint) && give_moved_server_another_name(&path) {
                        continue;
                    }
                    if mounted_at(mountpoint) || Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!(
                                "a vigilfs mount at {} is already served on {}",
                                mountpoint.display(),
                                path.display()
                            ),
                        ));
                    }
                    // Its process removes the socket as it stops, and may
                    // need the directory's lock for that.
                    drop(lock);
                    std::thread::sleep(EXITING_SERVER_POLL);
                    continue;
                }
                // Not a socket anyone listens on (the sweep removed the
                // stale ones): in the way.
                let _ = std::fs::remove_file(&path);
            }
            match UnixListener::bind(&path) {
                Ok(listener) => {
                    // Everyone may connect; the server decides per request.
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
                    return Ok((listener, path));
                }
                Err(error) => {
                    failures.push(format!("{}: {error}", path.display()));
                    break;
                }
            }
        }
    }
    Err(io::Error::other(format!(
        "no place for the control socket: {}",
        failures.join("; ")
    )))
}

/// Renames the socket at `path` if its server serves a FUSE mount still in
/// the mount table (not one exiting after its unmount, which is waited
/// for): to a name no mount point has (the hash of its old name, its
/// device and its pid). Whether it was renamed.
fn give_moved_server_another_name(path: &Path) -> bool {
    let Some(device) = super::client::device_served_at(path) else {
        return false;
    };
    let still_mounted = Mounts::read()
        .is_ok_and(|mounts| mounts.entries().iter().any(|entry| entry.device == device));
    let Some(directory) = path.parent() else {
        return false;
    };
    let moved = PathBuf::from(format!("{}#moved {device}", path.display()));
    still_mounted && std::fs::rename(path, directory.join(socket_name(&moved))).is_ok()
}

/// How often [`bind`] looks again for an exiting mount process's socket.
const EXITING_SERVER_POLL: Duration = Duration::from_millis(20);

/// Whether a FUSE filesystem is mounted at `mountpoint` (if mountinfo
/// cannot be read: assumed so, and the socket's owner is not waited for).
fn mounted_at(mountpoint: &Path) -> bool {
    Mounts::read().map_or(true, |mounts| {
        mounts
            .topmost_at(mountpoint)
            .is_some_and(|entry| entry.is_fuse())
    })
}

fn accept_loop(listener: &UnixListener, context: &Arc<Context>, stop: &AtomicBool) {
    // Held for the moment the process has no descriptor left: given up,
    // it lets one connection in to be told so, where it would otherwise
    // wait in the backlog for an answer and call the process hung.
    let mut spare = std::fs::File::open("/dev/null").ok();
    let mut said_out_of_descriptors = false;
    while !stop.load(Ordering::Acquire) {
        let mut poll = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `poll` points to one valid pollfd for the duration of the
        // call, and the count says one.
        let ready = unsafe { libc::poll(&mut poll, 1, 200) };
        if ready <= 0 {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                said_out_of_descriptors = false;
                admit(stream, context);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                if !said_out_of_descriptors {
                    crate::daemon_log::log(&format!(
                        "control socket: cannot accept a connection: {error}; clients are told \
                         so until a descriptor is free again"
                    ));
                    said_out_of_descriptors = true;
                }
                drop(spare.take());
                if let Ok((stream, _)) = listener.accept() {
                    refuse_out_of_descriptors(&stream, &error);
                }
                spare = std::fs::File::open("/dev/null").ok();
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Tells the client of `stream` that the mount process has no descriptor
/// left to serve it with (`error`, EMFILE or ENFILE).
fn refuse_out_of_descriptors(stream: &UnixStream, error: &io::Error) {
    // Busy: it may pass, as a full connection count does.
    let refusal = Response::failure(
        ErrorKind::Busy,
        format!(
            "the mount process cannot serve a control connection: {error} (its open-file limit, \
             `ulimit -n`, or the system's is reached); it goes on serving the filesystem"
        ),
        error.raw_os_error(),
    );
    // Non-blocking: a short answer fits the socket buffer, and a client
    // that does not read must not hold the accept thread.
    let _ = stream.set_nonblocking(true);
    let _ = write_response(stream, &refusal, Instant::now());
}
