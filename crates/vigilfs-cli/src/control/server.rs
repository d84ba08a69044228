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

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use vigilfs::device::{ByteRange, FaultPlan};
use vigilfs::failure::{FailureError, Origin};
use vigilfs::format::ErrorsPolicy;
use vigilfs::fs::{AtimeUpdates, Filesystem, FsError, LifeState, ScrubRequest, SettingsChange};
use vigilfs::inode::FileError;

use super::media_report::{failure_report_json, owner_json, scrub_summary_json};
use super::protocol::{ErrorKind, Request, Response, MAX_REQUEST_BYTES};
use super::report::{status_json, RulePaths};
use super::{
    canonical_mountpoint, connect_nonblocking, current_uid, describe_errno, peer_credentials,
    socket_directories, socket_name, sweep_stale, trusted_directory, DirectoryLock,
};
use super::{faults, power, stream};
use crate::engine_slot::EngineSlot;
use crate::in_use;
use crate::mountinfo::Mounts;
use crate::power_cut::PowerSwitch;
use crate::writable_image::WritableImage;

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
}

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

/// A connection counted against the limits, as a request or, once it
/// asked to follow events, as a stream; uncounted when dropped.
struct Slot {
    context: Arc<Context>,
    uid: Option<u32>,
    streaming: bool,
}

impl Slot {
    /// The count this slot is in.
    fn counts(&self) -> &Mutex<HashMap<Option<u32>, usize>> {
        if self.streaming {
            &self.context.streams
        } else {
            &self.context.connections
        }
    }

    /// Moves the connection from the requests' count to the streams', if
    /// the streams' limits allow; else the refusal to answer.
    fn become_stream(&mut self) -> Result<(), Response> {
        let limits = self.context.limits;
        {
            let mut streams = lock(&self.context.streams);
            let total: usize = streams.values().sum();
            let mine = streams.get(&self.uid).copied().unwrap_or(0);
            if total >= limits.max_streams || mine >= limits.max_streams_per_uid {
                return Err(Response::failure(
                    ErrorKind::Busy,
                    format!(
                        "the mount process is serving as many event streams as it allows \
                         ({} in all, {} per user); try again",
                        limits.max_streams, limits.max_streams_per_uid
                    ),
                    Some(libc::EBUSY),
                ));
            }
            *streams.entry(self.uid).or_insert(0) += 1;
        }
        uncount(&self.context.connections, self.uid);
        self.streaming = true;
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        uncount(self.counts(), self.uid);
    }
}

fn uncount(counts: &Mutex<HashMap<Option<u32>, usize>>, uid: Option<u32>) {
    let mut counts = lock(counts);
    if let Some(count) = counts.get_mut(&uid) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&uid);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The counts are updated in single statements: a poisoned lock holds
    // consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves `stream` on a thread of its own if the limits allow, else
/// answers `busy` at once.
fn admit(stream: UnixStream, context: &Arc<Context>) {
    // Clients whose uid cannot be read share one count.
    let uid = peer_credentials(&stream).ok().map(|peer| peer.uid);
    let slot = {
        let mut connections = lock(&context.connections);
        let total: usize = connections.values().sum();
        let mine = connections.get(&uid).copied().unwrap_or(0);
        let privileged = uid.is_some_and(|uid| uid == 0 || uid == context.owner_uid);
        if (total >= context.limits.max_connections && !privileged)
            || mine >= context.limits.max_per_uid
        {
            None
        } else {
            *connections.entry(uid).or_insert(0) += 1;
            Some(Slot {
                context: Arc::clone(context),
                uid,
                streaming: false,
            })
        }
    };
    let Some(slot) = slot else {
        let limits = &context.limits;
        let busy = Response::failure(
            ErrorKind::Busy,
            format!(
                "the mount process is serving as many control connections as it allows \
                 ({} in all, {} per user); try again",
                limits.max_connections, limits.max_per_uid
            ),
            Some(libc::EBUSY),
        );
        // Non-blocking: a short answer fits the socket buffer, and a client
        // that does not read must not hold the accept thread.
        let _ = stream.set_nonblocking(true);
        let _ = write_response(&stream, &busy, Instant::now());
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("vigilfs-control-client".into())
        .spawn(move || {
            let mut slot = slot;
            serve_connection(&stream, &mut slot);
        });
    // Could not spawn: the closure (and the slot, and the stream) is
    // dropped, which closes the connection and uncounts it.
    drop(spawned);
}

/// Why a request line could not be read.
enum ReadError {
    /// Not complete within the deadline.
    Deadline,
    /// Longer than [`MAX_REQUEST_BYTES`].
    TooLong,
    /// The socket failed.
    Io(io::Error),
}

/// Reads up to the first newline (or end of stream) before `deadline`.
/// Each read waits only for what is left of the deadline, so bytes that
/// trickle in cannot stretch it.
fn read_request_line(stream: &UnixStream, deadline: Instant) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Deadline);
        }
        stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        match (&*stream).read(&mut buffer) {
            Ok(0) => return Ok(line),
            Ok(count) => {
                let chunk = &buffer[..count];
                if let Some(end) = chunk.iter().position(|byte| *byte == b'\n') {
                    line.extend_from_slice(&chunk[..end]);
                    return Ok(line);
                }
                line.extend_from_slice(chunk);
                if line.len() as u64 > MAX_REQUEST_BYTES {
                    return Err(ReadError::TooLong);
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::Deadline)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(ReadError::Io(error)),
        }
    }
}

/// Writes `response` and a newline, all of it before `deadline` (at once
/// if the stream is non-blocking).
pub(super) fn write_response(
    stream: &UnixStream,
    response: &Response,
    deadline: Instant,
) -> io::Result<()> {
    let mut text = serde_json::to_vec(response).unwrap_or_else(|_| {
        br#"{"ok":false,"error":{"kind":"failed","message":"unencodable response"}}"#.to_vec()
    });
    text.push(b'\n');
    let mut written = 0;
    while written < text.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            stream.set_write_timeout(Some(left))?;
        }
        match (&*stream).write(&text[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
        if written < text.len() && Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
    Ok(())
}

fn serve_connection(stream: &UnixStream, slot: &mut Slot) {
    let context = Arc::clone(&slot.context);
    let context = context.as_ref();
    let uid = slot.uid;
    let limits = context.limits;
    let accepted = Instant::now();
    let response = match read_request_line(stream, accepted + limits.request_deadline) {
        Ok(line) => match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Events {
                since,
                follow,
                mode,
            }) => {
                if follow {
                    if let Err(busy) = slot.become_stream() {
                        let deadline = Instant::now() + limits.response_deadline;
                        let _ = write_response(stream, &busy, deadline);
                        return;
                    }
                }
                let request = stream::StreamRequest {
                    since,
                    follow,
                    mode,
                };
                stream::serve_events(stream, context, &request);
                return;
            }
            _ => respond(&line, uid, context, stream),
        },
        Err(ReadError::Deadline) => Response::failure(
            ErrorKind::BadRequest,
            format!(
                "no complete request line within {} s",
                limits.request_deadline.as_secs_f64()
            ),
            Some(libc::ETIMEDOUT),
        ),
        Err(ReadError::TooLong) => Response::failure(
            ErrorKind::BadRequest,
            format!("request line longer than {MAX_REQUEST_BYTES} bytes"),
            None,
        ),
        Err(ReadError::Io(error)) => Response::failure(
            ErrorKind::BadRequest,
            format!("reading the request: {error}"),
            None,
        ),
    };
    let _ = write_response(stream, &response, Instant::now() + limits.response_deadline);
}

fn respond(line: &[u8], uid: Option<u32>, context: &Context, stream: &UnixStream) -> Response {
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(error) => {
            return Response::failure(
                ErrorKind::BadRequest,
                format!("malformed request: {error}"),
                None,
            )
        }
    };
    let allowed = |uid: u32| uid == 0 || uid == context.owner_uid;
    let privileged = uid.is_some_and(allowed);
    let open_to_all = matches!(request, Request::Sync) && context.others_may_sync;
    if request.needs_owner() && !privileged && !open_to_all {
        let who = match uid {
            Some(uid) => format!("uid {uid}"),
            None => "a client whose uid is unknown".to_string(),
        };
        return Response::failure(
            ErrorKind::Refused,
            format!(
                "permission denied: only root and uid {} (who mounted {}) may {}; you are {who}",
                context.owner_uid,
                context.mountpoint.display(),
                request.action()
            ),
            Some(libc::EPERM),
        );
    }
    if request.needs_owner() && !client_waiting(stream) {
        crate::daemon_log::log(&format!(
            "a request to {} whose client had left was not carried out",
            request.action()
        ));
        return Response::failure(
            ErrorKind::Failed,
            "the client left before the request was carried out: nothing was done",
            Some(libc::ECONNABORTED),
        );
    }
    // The filesystem is held only while the request executes.
    let fs = match context.engine.current() {
        Some(fs) if !context.stopping.load(Ordering::Acquire) => fs,
        _ => {
            return Response::failure(
                ErrorKind::Failed,
                "the filesystem is being unmounted",
                Some(libc::ESHUTDOWN),
            )
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        execute(request, &fs, context, stream, Client { uid, privileged })
    }));
    outcome.unwrap_or_else(|_| {
        Response::failure(
            ErrorKind::Failed,
            "internal error while serving the request",
            None,
        )
    })
}

/// One line for an engine error: "writeback error: Input/output error
/// (EIO)".
pub fn fs_error_message(error: &FsError) -> String {
    match error {
        FsError::File(FileError::Writeback(errno)) => {
            format!("writeback error: {}", describe_errno(errno.get()))
        }
        other => format!("{other}: {}", describe_errno(other.errno())),
    }
}

fn engine_result(result: Result<(), FsError>, fs: &Filesystem) -> Response {
    match result {
        Ok(()) => Response::success(json!({ "state": fs.status().state.name() })),
        Err(error) => Response::failure(
            ErrorKind::Failed,
            fs_error_message(&error),
            Some(error.errno()),
        ),
    }
}

/// Whether the client at the other end of `stream` is still there: it
/// has not closed the connection (a client that only shut down its
/// sending side, having sent its request, still waits for the answer). A
/// long request it no longer waits for stops; a change it no longer waits
/// for is not made (it may have given up on a stopped mount process, and
/// nobody would know of the change).
fn client_waiting(stream: &UnixStream) -> bool {
    let mut poll = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd for the connection's open socket, not waiting.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    // A Unix stream socket reports POLLHUP once the peer closed it.
    !(ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0)
}

/// The device bytes `offset..offset + length`, refused (EINVAL) when the
/// sum overflows; the engine refuses what lies outside the device.
fn device_range(offset: u64, length: u64) -> Result<ByteRange, Response> {
    match offset.checked_add(length) {
        Some(end) => Ok(ByteRange::new(offset, end)),
        None => Err(Response::failure(
            ErrorKind::BadRequest,
            format!("offset {offset} + length {length} overflows"),
            Some(libc::EINVAL),
        )),
    }
}

/// A failure of owners or notify-failure: a range the device does not
/// hold is a bad request (exit status 2), not a media failure.
fn range_failed(error: &FsError) -> Response {
    match error {
        FsError::Failure(
            range @ (FailureError::OutOfDevice { .. } | FailureError::TooLong { .. }),
        ) => Response::failure(ErrorKind::BadRequest, range.to_string(), Some(libc::EINVAL)),
        _ => failed(error),
    }
}

fn failed(error: &FsError) -> Response {
    Response::failure(
        ErrorKind::Failed,
        fs_error_message(error),
        Some(error.errno()),
    )
}

/// Who sent a request.
#[derive(Clone, Copy)]
struct Client {
    /// Its uid, when known.
    uid: Option<u32>,
    /// Root or the mount's owner.
    privileged: bool,
}

/// Serves `request` from `client`.
fn execute(
    request: Request,
    fs: &Filesystem,
    context: &Context,
    stream: &UnixStream,
    client: Client,
) -> Response {
    let privileged = client.privileged;
    let plan = &context.plan;
    let power = context.power.as_deref();
    match request {
        Request::NotifyFailure {
            offset,
            length,
            origin,
        } => {
            let range = match device_range(offset, length) {
                Ok(range) => range,
                Err(response) => return response,
            };
            let origin = Origin::operator(origin.as_deref().unwrap_or("vigilfs notify-failure"));
            match fs.notify_failure(range, origin) {
                Ok(report) => Response::success(failure_report_json(&report)),
                Err(error) => range_failed(&error),
            }
        }
        Request::Owners { offset, length } => {
            let range = match device_range(offset, length) {
                Ok(range) => range,
                Err(response) => return response,
            };
            match fs.owners(range, true) {
                Ok(owners) => Response::success(json!({
                    "device_offset": range.start,
                    "device_length": range.len(),
                    "owners": owners.iter().map(owner_json).collect::<Vec<_>>(),
                })),
                Err(error) => range_failed(&error),
            }
        }
        Request::Scrub { rate, restart } => {
            let request = ScrubRequest { rate, restart };
            let stopping = &context.stopping;
            let mut still_wanted = |_: &vigilfs::scrub::Progress| {
                !stopping.load(Ordering::Acquire) && client_waiting(stream)
            };
            match fs.scrub(request, &mut still_wanted) {
                Ok(summary) => Response::success(scrub_summary_json(&summary)),
                Err(error) => failed(&error),
            }
        }
        Request::Status => {
            let paths = if privileged {
                RulePaths::Shown
            } else {
                RulePaths::Hidden
            };
            let mut status = status_json(fs, plan, &context.extra, paths);
            status["crash_lab"] = crash_lab_json(power);
            Response::success(status)
        }
        // Another user hears the error too, but cannot take it from root's
        // or the owner's next sync (review 32).
        Request::Sync if privileged => engine_result(fs.syncfs_once(), fs),
        Request::Sync => engine_result(fs.syncfs_for_user(client.uid.unwrap_or(u32::MAX)), fs),
        Request::Freeze => {
            let frozen = fs.freeze();
            // A freeze nobody hears of would hold every writer until
            // someone thought of a thaw: undone if its client left while
            // it waited for writeback.
            if frozen.is_ok() && !client_waiting(stream) {
                let _ = fs.thaw();
                crate::daemon_log::log(
                    "a freeze whose client left before it was done was undone (thawed)",
                );
            }
            engine_result(frozen, fs)
        }
        Request::Thaw => engine_result(fs.thaw(), fs),
        Request::Shutdown { flush } => {
            // A second shutdown does nothing, flushes nothing: a script
            // must not read success from `--flush` (review 32).
            if let LifeState::ShutDown(why) = fs.status().state {
                let already = if why.starts_with("shut down") {
                    format!("already {why}")
                } else {
                    format!("already shut down ({why})")
                };
                return Response::failure(
                    ErrorKind::Failed,
                    format!("{already}: nothing was done, nothing flushed"),
                    Some(libc::EINVAL),
                );
            }
            let flushed = fs.shutdown(flush);
            // Why it is shut down: what the flush could do, or an earlier
            // shutdown's reason.
            let reason = match fs.status().state {
                LifeState::ShutDown(why) => Some(why),
                _ => None,
            };
            match flushed {
                Ok(()) => {
                    Response::success(json!({ "state": "shut-down", "state_reason": reason }))
                }
                // Shut down, but data was lost: not a success to a script.
                Err(error) => Response::failure(
                    ErrorKind::Failed,
                    reason.unwrap_or_else(|| error.to_string()),
                    Some(error.errno()),
                ),
            }
        }
        Request::Metrics => Response::success(json!({
            "text": crate::metrics::render(fs, plan),
        })),
        Request::Events { .. } => Response::failure(
            ErrorKind::BadRequest,
            "events are streamed, not answered",
            None,
        ),
        Request::InjectAdd { rules, drop_caches } => faults::add(fs, plan, &rules, drop_caches),
        Request::InjectRemove { id } => faults::remove(fs, plan, id),
        Request::InjectClear => faults::clear(fs, plan, power),
        Request::InjectList => faults::list(fs, plan, power),
        Request::FaultLog { after } => faults::log(plan, after),
        Request::DropFlushes { enabled } => faults::drop_flushes(fs, plan, power, enabled),
        Request::Unsynced => power::unsynced(fs, power),
        Request::PowerCut { torn, seed } => power::power_cut(power, torn, seed),
        Request::MakeWritable => make_writable(fs, context.image.as_deref()),
        Request::Reconfigure {
            errors,
            cache_bytes,
            dirty_limit_bytes,
            writeback_interval_micros,
            read_only,
            atime,
            directory_atime,
        } => {
            let change = match settings_change(
                errors.as_deref(),
                cache_bytes,
                dirty_limit_bytes,
                writeback_interval_micros,
                read_only,
                atime.as_deref(),
                directory_atime,
            ) {
                Ok(change) => change,
                Err(response) => return response,
            };
            // A crashable mount's later boots keep the change too.
            let changed = match power {
                Some(power) => power.reconfigure(&change),
                None => fs.reconfigure(&change),
            };
            match changed {
                Ok(()) => Response::success(json!({ "changed": change.to_string() })),
                Err(error) => Response::failure(
                    // A refused value, or writing back for a read-only
                    // remount failed.
                    if matches!(error, FsError::Invalid(_)) {
                        ErrorKind::BadRequest
                    } else {
                        ErrorKind::Failed
                    },
                    fs_error_message(&error),
                    Some(error.errno()),
                ),
            }
        }
    }
}

/// Makes a read-only mount writable (`remount,rw`).
fn make_writable(fs: &Filesystem, image: Option<&WritableImage>) -> Response {
    let made = match image {
        Some(image) => image.make_writable(fs),
        // A crashable mount: never read-only by its options, so only
        // asked while it may write (or after an error, refused by the
        // engine as for any mount).
        None => fs
            .make_writable()
            .map_err(|error| (fs_error_message(&error), error.errno())),
    };
    match made {
        Ok(()) => Response::success(json!({ "state": fs.status().state.name() })),
        Err((message, errno)) => Response::failure(ErrorKind::Failed, message, Some(errno)),
    }
}

/// The engine's change from a `reconfigure` request's fields.
#[allow(clippy::too_many_arguments)] // one per field of the request
fn settings_change(
    errors: Option<&str>,
    cache_bytes: Option<u64>,
    dirty_limit_bytes: Option<u64>,
    writeback_interval_micros: Option<u64>,
    read_only: Option<bool>,
    atime: Option<&str>,
    directory_atime: Option<bool>,
) -> Result<SettingsChange, Response> {
    let bad =
        |message: String| Response::failure(ErrorKind::BadRequest, message, Some(libc::EINVAL));
    let errors = errors
        .map(str::parse::<ErrorsPolicy>)
        .transpose()
        .map_err(bad)?;
    let atime = atime
        .map(str::parse::<AtimeUpdates>)
        .transpose()
        .map_err(bad)?;
    let writeback_interval = writeback_interval_micros.map(Duration::from_micros);
    Ok(SettingsChange {
        errors,
        cache_bytes,
        dirty_limit_bytes,
        writeback_interval,
        read_only,
        atime,
        directory_atime,
    })
}

/// The crash lab's part of a status report.
fn crash_lab_json(power: Option<&PowerSwitch>) -> Value {
    json!({
        "crashable": power.is_some(),
        "drop_flushes": power.is_some_and(PowerSwitch::drops_flushes),
        "unflushed_bytes": power.map(PowerSwitch::unflushed_bytes),
        "power_cuts": power.map(PowerSwitch::cuts),
        "failed_boot": power.and_then(PowerSwitch::failed_boot),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::client;
    use std::io::BufRead;
    use vigilfs::device::{FaultDevice, MemoryDevice, SectorSize};
    use vigilfs::fs::MountOptions;
    use vigilfs::mkfs::{make_filesystem, MkfsOptions};

    fn mounted() -> (Arc<EngineSlot>, Arc<FaultPlan>) {
        let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
        make_filesystem(memory.clone(), &MkfsOptions::default()).unwrap();
        let plan = Arc::new(FaultPlan::new());
        let device = FaultDevice::new(memory, Arc::clone(&plan));
        let options = MountOptions {
            fault_plan: Some(Arc::clone(&plan)),
            ..MountOptions::default()
        };
        let fs = Filesystem::mount(Arc::new(device), options).unwrap();
        (EngineSlot::new(Arc::new(fs)), plan)
    }

    /// Takes the engine out of `slot` and unmounts it: nothing else may
    /// hold it by now.
    /// A control server at `directory` for a fresh mount, held to `limits`.
    fn serve_limited(directory: &Path, limits: Limits) -> (Arc<EngineSlot>, ControlServer) {
        let (slot, plan) = mounted();
        let server = serve(
            directory,
            Served {
                limits,
                ..Served::new(Arc::clone(&slot), plan, 0)
            },
        )
        .unwrap();
        (slot, server)
    }

    /// A socket whose listener is closed may be swept as stale, and a
    /// socket bound next may get its inode number (ext4): a stopping
    /// server must remove its names while it still listens, or its removal
    /// "by identity" takes the newcomer's (a flake: a mount's socket
    /// vanished right after the mount).
    #[test]
    fn a_stopping_server_removes_its_socket_while_it_still_listens() {
        let mountpoint = tempfile::tempdir().unwrap();
        let (slot, server) = serve_limited(mountpoint.path(), Limits::default());
        let path = server.path().to_path_buf();
        let lock = DirectoryLock::take(path.parent().unwrap());
        let stopper = std::thread::spawn(move || server.stop());
        // Longer than the accept loop takes to see the stop.
        std::thread::sleep(Duration::from_millis(600));
        assert!(
            connect_nonblocking(&path).is_ok(),
            "the listener closed before the socket's names were removed"
        );
        drop(lock);
        stopper.join().unwrap();
        assert!(!path.exists());
        unmount(&slot);
    }

    fn unmount(slot: &EngineSlot) {
        let fs = slot.take().expect("the engine");
        let Ok(fs) = Arc::try_unwrap(fs) else {
            panic!("a client thread holds the engine");
        };
        fs.unmount().unwrap();
    }

    fn raw_exchange(path: &Path, request: &[u8]) -> Value {
        let mut stream = UnixStream::connect(path).unwrap();
        stream.write_all(request).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    fn read_answer(stream: &UnixStream) -> Value {
        let mut line = Vec::new();
        io::BufReader::new(stream)
            .read_until(b'\n', &mut line)
            .unwrap();
        serde_json::from_slice(&line).unwrap()
    }

    #[test]
    fn the_server_answers_status_inject_and_sync_and_survives_garbage() {
        let directory = tempfile::tempdir().unwrap();
        let (slot, plan) = mounted();
        let server = serve(
            directory.path(),
            Served::new(Arc::clone(&slot), Arc::clone(&plan), 4242),
        )
        .unwrap();
        let socket = server.path().to_path_buf();
        assert!(socket.exists());
        let me = current_uid();
        let at = canonical_mountpoint(directory.path()).unwrap();
        let call = |request: &Request| client::call_owned(&at, me, request);

        let status = call(&Request::Status).unwrap();
        assert_eq!(status["state"], "running");
        assert_eq!(status["owner_uid"], 4242);
        assert_eq!(status["fault_rules"].as_array().unwrap().len(), 0);

        let added = call(&Request::InjectAdd {
            rules: vec!["fail op=write class=data".into()],
            drop_caches: false,
        })
        .unwrap();
        let id = added["added"][0]["id"].as_u64().unwrap();
        assert_eq!(plan.rules().len(), 1);
        let listed = call(&Request::InjectList).unwrap();
        assert_eq!(listed["rules"][0]["id"].as_u64(), Some(id));
        let bad = call(&Request::InjectAdd {
            rules: vec!["fail op=write".into(), "explode now".into()],
            drop_caches: false,
        });
        assert!(bad.is_err());
        assert_eq!(plan.rules().len(), 1, "nothing added from a bad batch");
        call(&Request::InjectRemove { id }).unwrap();
        assert!(call(&Request::InjectRemove { id }).is_err());
        call(&Request::InjectClear).unwrap();

        call(&Request::Sync).unwrap();
        call(&Request::Freeze).unwrap();
        assert_eq!(call(&Request::Status).unwrap()["state"], "frozen");
        call(&Request::Thaw).unwrap();
        assert!(call(&Request::Thaw).is_err());

        for garbage in [
            &b"not json\n"[..],
            b"{\"command\":\"explode\"}\n",
            b"",
            &[0xff, 0xfe, b'\n'],
            b"{\"command\":\"shutdown\"}\n",
        ] {
            let answer = raw_exchange(&socket, garbage);
            assert_eq!(answer["ok"], false, "{answer}");
            assert_eq!(answer["error"]["kind"], "bad_request");
        }
        let answer = raw_exchange(&socket, b"{\"command\":\"status\"}");
        assert_eq!(answer["ok"], true);

        server.stop();
        assert!(!socket.exists(), "the socket is removed at stop");
        assert!(call(&Request::Status).is_err());
        unmount(&slot);
    }

    #[test]
    fn a_request_trickling_in_is_cut_off_at_the_whole_request_deadline() {
        let directory = tempfile::tempdir().unwrap();
        let limits = Limits {
            request_deadline: Duration::from_millis(600),
            ..Limits::default()
        };
        let (slot, server) = serve_limited(directory.path(), limits);
        let stream = UnixStream::connect(server.path()).unwrap();
        let start = Instant::now();
        // One byte every 100 ms: each read is quick, the whole is not.
        let request = br#"{"command":"status"}"#;
        let mut cut_off = false;
        for byte in request {
            if (&stream).write_all(&[*byte]).is_err() {
                cut_off = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let answer = if cut_off {
            None
        } else {
            Some(read_answer(&stream))
        };
        let elapsed = start.elapsed();
        if let Some(answer) = answer {
            assert_eq!(answer["ok"], false, "{answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("no complete request line"),
                "{answer}"
            );
        }
        assert!(
            elapsed < Duration::from_millis(600 + 1_000),
            "cut off after {elapsed:?}"
        );
        // A prompt client is still served.
        let at = canonical_mountpoint(directory.path()).unwrap();
        assert_eq!(
            client::call_owned(&at, current_uid(), &Request::Status).unwrap()["state"],
            "running"
        );
        server.stop();
        unmount(&slot);
    }

    #[test]
    fn connections_beyond_the_bound_are_refused_as_busy() {
        let directory = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_connections: 3,
            max_per_uid: 2,
            ..Limits::default()
        };
        let (slot, server) = serve_limited(directory.path(), limits);
        // Two idle connections fill this uid's share.
        let idle: Vec<UnixStream> = (0..2)
            .map(|_| UnixStream::connect(server.path()).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let third = UnixStream::connect(server.path()).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let answer = read_answer(&third);
        assert_eq!(answer["ok"], false);
        assert_eq!(answer["error"]["kind"], "busy", "{answer}");
        let at = canonical_mountpoint(directory.path()).unwrap();
        let refused = client::call_owned(&at, current_uid(), &Request::Status).unwrap_err();
        let failure = refused.into_failure("status", directory.path());
        assert_eq!(failure.exit_code(), 8);
        assert!(failure.to_string().contains("try again"), "{failure}");
        // Closing them frees the slots.
        drop(idle);
        let start = Instant::now();
        loop {
            match client::call_owned(&at, current_uid(), &Request::Status) {
                Ok(status) => {
                    assert_eq!(status["state"], "running");
                    break;
                }
                Err(error) => assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "still refused: {error:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop();
        unmount(&slot);
    }

    /// Event listeners hold their connections for as long as the mount
    /// lives: they must not take the room of one-shot requests, or a few
    /// `events --follow` hooks lock everyone out of status, sync and
    /// failure reports.
    #[test]
    fn event_followers_do_not_take_the_room_of_requests() {
        let directory = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_connections: 3,
            max_per_uid: 2,
            max_streams: 4,
            max_streams_per_uid: 3,
            ..Limits::default()
        };
        let (slot, server) = serve_limited(directory.path(), limits);
        let follow = |expect_busy: bool| {
            let stream = UnixStream::connect(server.path()).unwrap();
            (&stream)
                .write_all(b"{\"command\":\"events\",\"follow\":true}\n")
                .unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let answer = read_answer(&stream);
            assert_eq!(answer["ok"] == false, expect_busy, "{answer}");
            if expect_busy {
                assert_eq!(answer["error"]["kind"], "busy", "{answer}");
            }
            stream
        };
        let followers: Vec<UnixStream> = (0..3).map(|_| follow(false)).collect();
        let refused = follow(true);
        let at = canonical_mountpoint(directory.path()).unwrap();
        for _ in 0..4 {
            let status = client::call_owned(&at, current_uid(), &Request::Status).unwrap();
            assert_eq!(status["state"], "running");
        }
        drop((followers, refused));
        server.stop();
        unmount(&slot);
    }

    /// Other users' connections, however many, cannot lock root (or the
    /// user who mounted) out of the mount's control.
    #[test]
    fn other_users_cannot_take_the_room_of_root() {
        let directory = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_connections: 2,
            max_per_uid: 4,
            ..Limits::default()
        };
        let (slot, server) = serve_limited(directory.path(), limits);
        // uid 65534 holds every shared connection, idle.
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let hold = "import socket, sys, time\n\
                    held = []\n\
                    for _ in range(2):\n    \
                        s = socket.socket(socket.AF_UNIX)\n    \
                        s.connect(sys.argv[1])\n    \
                        held.append(s)\n\
                    print('held', flush=True)\n\
                    time.sleep(4)\n";
        let mut holder = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["/usr/bin/python3", "-c"])
            .arg(hold)
            .arg(server.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        std::thread::sleep(Duration::from_millis(200));
        let at = canonical_mountpoint(directory.path()).unwrap();
        let status = client::call_owned(&at, current_uid(), &Request::Status).unwrap();
        assert_eq!(status["state"], "running");
        let _ = holder.kill();
        let _ = holder.wait();
        server.stop();
        unmount(&slot);
    }

    #[test]
    fn stopping_does_not_wait_for_a_client_and_the_engine_is_free_at_once() {
        let directory = tempfile::tempdir().unwrap();
        let (slot, plan) = mounted();
        let server = serve(directory.path(), Served::new(Arc::clone(&slot), plan, 0)).unwrap();
        let stuck = UnixStream::connect(server.path()).unwrap();
        (&stuck).write_all(b"{\"comm").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        server.stop();
        unmount(&slot);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        drop(stuck);
    }
}
