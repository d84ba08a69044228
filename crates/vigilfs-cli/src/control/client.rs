//! The client side: find the mount's owner and socket, make sure the
//! socket is served by that owner, send one request, read the response.
//!
//! Invariants: nothing is sent to a socket before its server's
//! `SO_PEERCRED` uid has been checked against the FUSE mount's owner (see
//! the parent module for why and where); a socket nobody listens on is
//! removed, not reported as a live mount. Every failure is a
//! [`ClientError`] that becomes a one-line message naming the mount point.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::protocol::{ErrorKind, ErrorReply, Request, Response};
use super::{
    canonical_mountpoint, connect_nonblocking, is_socket_name, peer_credentials, remove_if_stale,
    socket_directories, socket_name, trusted_directory, DirectoryLock,
};
use crate::failure::Failure;
use crate::mountinfo::Mounts;

/// How long to wait for an answer (freeze may write back a lot).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long to keep trying to connect to a server whose backlog is full.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request did not succeed.
#[derive(Debug)]
pub enum ClientError {
    /// No mount answered, or the exchange broke.
    Unreachable(String),
    /// A socket answered that is not the mount owner's: refused unasked.
    Untrusted(String),
    /// The server answered with an error.
    Server(ErrorReply),
}

impl ClientError {
    /// The error as a command failure, prefixed with the command and mount
    /// point: "sync: /mnt: writeback error: ...". A refused or failed
    /// request exits 1; an unreachable, untrusted or busy server is an
    /// operational error.
    pub fn into_failure(self, command: &str, mountpoint: &Path) -> Failure {
        let prefix = format!("{command}: {}", mountpoint.display());
        match self {
            ClientError::Unreachable(message) | ClientError::Untrusted(message) => {
                Failure::operational(format!("{prefix}: {message}"))
            }
            ClientError::Server(reply) if reply.kind == ErrorKind::Busy => {
                Failure::operational(format!("{prefix}: {}", reply.message))
            }
            // What the mount refused as meaningless (a range past the end of
            // its device, a setting out of bounds) is a bad argument, as the
            // ones the command line refuses itself.
            ClientError::Server(reply) if reply.kind == ErrorKind::BadRequest => {
                Failure::arguments(format!("{prefix}: {}", reply.message))
            }
            ClientError::Server(reply) => Failure::usage(format!("{prefix}: {}", reply.message)),
        }
    }
}

/// The uid that mounted the FUSE filesystem at `canonical` (the topmost
/// mount there), from mountinfo.
pub fn mount_owner(canonical: &Path) -> Result<u32, ClientError> {
    shown_mount(canonical).map(|(owner, _)| owner)
}

/// The owner and device number (`MAJ:MIN`) of the FUSE filesystem the
/// topmost mount at `canonical` shows, from mountinfo.
fn shown_mount(canonical: &Path) -> Result<(u32, String), ClientError> {
    let mounts = Mounts::read().map_err(|error| {
        ClientError::Unreachable(format!("cannot read /proc/self/mountinfo: {error}"))
    })?;
    let Some(entry) = mounts.topmost_at(canonical) else {
        let missing = std::fs::symlink_metadata(canonical)
            .is_err_and(|error| error.kind() == io::ErrorKind::NotFound);
        // An image given where its mount point belongs: name the mount.
        let mounted_at = crate::mountinfo::file_identity(canonical)
            .ok()
            .and_then(|image| {
                mounts
                    .vigilfs_mounts_of_file(image, crate::control::current_uid())
                    .next()
                    .map(|entry| entry.mountpoint.display().to_string())
            });
        // A directory inside a mount (`vigilfs status .`): name the mount.
        let inside = mounts
            .containing(canonical)
            .filter(|entry| {
                mounts
                    .vigilfs_mounts(crate::control::current_uid())
                    .any(|own| own == *entry)
            })
            .map(|entry| entry.mountpoint.display().to_string());
        let why = match (missing, mounted_at, inside) {
            (true, _, _) => "it does not exist".to_string(),
            (false, Some(mountpoint), _) => {
                format!("it is an image, mounted at {mountpoint}: give the mount point")
            }
            (false, None, Some(mountpoint)) => {
                format!("it is inside the vigilfs mount at {mountpoint}: give the mount point")
            }
            (false, None, None) => "nothing is mounted on it".to_string(),
        };
        return Err(ClientError::Unreachable(format!(
            "no vigilfs mount is served there ({why})"
        )));
    };
    if !entry.is_fuse() {
        return Err(ClientError::Unreachable(format!(
            "no vigilfs mount is served there (it is a {} mount)",
            entry.fstype
        )));
    }
    let owner = entry.fuse_owner().ok_or_else(|| {
        ClientError::Unreachable("the FUSE mount there shows no owner (user_id=)".into())
    })?;
    Ok((owner, entry.device.clone()))
}

/// Sends `request` to the mount at `mountpoint`; returns the result.
pub fn call(mountpoint: &Path, request: &Request) -> Result<Value, ClientError> {
    call_waiting(mountpoint, request, Some(RESPONSE_TIMEOUT))
}

/// [`call`], waiting up to `timeout` for the answer (`None`: as long as
/// the mount process lives, for a scrub of a large filesystem).
pub fn call_waiting(
    mountpoint: &Path,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<Value, ClientError> {
    // A server at its connection limit refuses before reading anything:
    // asking again is safe, and a burst of clients (a monitoring script,
    // many at once) gets its answers a little later rather than errors.
    let give_up = Instant::now() + BUSY_PATIENCE;
    let mut pause = Duration::from_millis(20);
    loop {
        let (stream, _) = connect_mount(mountpoint)?;
        match exchange(stream, request, timeout).map(|(result, _)| result) {
            Err(ClientError::Server(reply))
                if reply.kind == ErrorKind::Busy && Instant::now() + pause < give_up =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            outcome => return outcome,
        }
    }
}

/// How an error about a killed mount process starts.
const PROCESS_GONE: &str = "the mount process is gone";

/// How long a client asks again a server that is at its connection limit.
const BUSY_PATIENCE: Duration = Duration::from_secs(5);

/// Connects to the server of the mount at `mountpoint`: the one serving
/// the filesystem the mount table shows there (its device number), found
/// by the socket name of the first mount of that filesystem (the one the
/// server was started on, when `mountpoint` is a second mount of it), or
/// else by that of `mountpoint` itself (a second mount point's alias of
/// the server's socket, [`alias`]), or else by asking every socket of the
/// mount's owner ([`find_by_device`]). Returns the socket's path.
fn connect_mount(mountpoint: &Path) -> Result<(UnixStream, PathBuf), ClientError> {
    let canonical = canonical_mountpoint(mountpoint).map_err(|error| {
        ClientError::Unreachable(format!("cannot resolve the mount point: {error}"))
    })?;
    let (owner, device) = shown_mount(&canonical)?;
    let first = Mounts::read()
        .ok()
        .and_then(|mounts| {
            mounts
                .first_mount_of_filesystem_at(&canonical)
                .map(|first| first.mountpoint.clone())
        })
        .unwrap_or_else(|| canonical.clone());
    // The first mount point's name first: it is the server's own, while
    // an alias can outlive its bind mount (until a mount there removes it).
    let outcome = connect_serving(&first, &canonical, owner, &device);
    match outcome {
        Err(ClientError::Unreachable(message)) if mount_process_gone(&canonical) => {
            let what_to_do = format!(
                "the mount at {} no longer answers; `umount {}` ends it; `vigilfs events \
                 IMAGE` and `vigilfs fsck IMAGE` then read what the image holds",
                canonical.display(),
                canonical.display()
            );
            // What the socket search found (a stale socket removed) stays.
            Err(ClientError::Unreachable(
                match message.starts_with(PROCESS_GONE) {
                    true => format!("{message}: {what_to_do}"),
                    false => format!("{PROCESS_GONE} (killed?): {what_to_do}"),
                },
            ))
        }
        outcome => outcome,
    }
}

/// Connects to the server of the filesystem with device number `device`
/// (`MAJ:MIN`), owned by `owner`: by the socket names of `first`, then of
/// `asked` ([`connect_mount`]), each server asked which mount it serves,
/// then by every socket of `owner`'s. Socket names follow mount point
/// paths, and another filesystem can come to show at a path (a mount
/// layered over it, moved, or bound by hand): a name alone could lead a
/// `shutdown` to the wrong filesystem.
fn connect_serving(
    first: &Path,
    asked: &Path,
    owner: u32,
    device: &str,
) -> Result<(UnixStream, PathBuf), ClientError> {
    let mut unreachable = None;
    let mut untrusted = None;
    let mut elsewhere = Vec::new();
    let mut sockets_asked = HashSet::new();
    let names = if first == asked {
        vec![first]
    } else {
        vec![first, asked]
    };
    for name in names {
        match connect_trusted(name, owner) {
            Ok((stream, path)) => {
                // The two names can be one socket's.
                if !sockets_asked.insert(socket_identity(&path)) {
                    continue;
                }
                match identify(stream) {
                    Identity::Serving(served, pid) if served != device => elsewhere.push(format!(
                        "{} is served by pid {pid}, which serves another filesystem \
                             ({served})",
                        path.display()
                    )),
                    Identity::NoMount(pid) => elsewhere.push(format!(
                        "{} is served by pid {pid}, which serves no mount now (it is exiting)",
                        path.display()
                    )),
                    Identity::Serving(_, pid) => return connect_again(&path, owner, Some(pid)),
                    Identity::Unknown => return connect_again(&path, owner, None),
                    Identity::Gone(error) => unreachable = Some(error),
                }
            }
            Err(error @ ClientError::Unreachable(_)) => unreachable = Some(error),
            // A socket planted under the name by another user (where it
            // could write): refused, and the owner's own sockets asked
            // (review 58: it blocked every command on a moved mount).
            Err(error) => untrusted = Some(error),
        }
    }
    if let Some(found) = find_by_device(owner, device, &mut sockets_asked) {
        if let Some(ClientError::Untrusted(refusal)) = untrusted {
            eprintln!("vigilfs: warning: {refusal}");
        }
        return Ok(found);
    }
    if let Some(error) = untrusted {
        return Err(error);
    }
    match (elsewhere.is_empty(), unreachable) {
        (true, Some(error)) => Err(error),
        _ => Err(ClientError::Unreachable(format!(
            "no control socket of the server of the filesystem mounted there ({device}) \
             answers: {}",
            elsewhere.join("; ")
        ))),
    }
}

/// Which filesystem a server serves, by its answer to `identify`.
enum Identity {
    /// Its FUSE mount's device number, and its pid.
    Serving(String, i32),
    /// Serving no mount: not yet mounted, or unmounted and exiting.
    NoMount(i32),
    /// Not said: a server older than `identify`, busy, or stopped
    /// (SIGSTOP, a debugger; the request then names it stopped).
    Unknown,
    /// The connection broke.
    Gone(ClientError),
}

/// How long a server has to say which mount it serves.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(2);

fn identify(stream: UnixStream) -> Identity {
    let server = peer_credentials(&stream).ok().map(|peer| peer.pid);
    let stopped = || server.is_some_and(process_stopped);
    if stopped() {
        return Identity::Unknown;
    }
    match exchange(stream, &Request::Identify, Some(IDENTIFY_TIMEOUT)) {
        Ok((answer, _)) => {
            let pid = answer["pid"]
                .as_i64()
                .and_then(|pid| i32::try_from(pid).ok());
            match (answer["device"].as_str(), pid) {
                (Some(device), Some(pid)) => Identity::Serving(device.to_string(), pid),
                (None, Some(pid)) => Identity::NoMount(pid),
                _ => Identity::Unknown,
            }
        }
        Err(ClientError::Server(_)) => Identity::Unknown,
        Err(_) if stopped() => Identity::Unknown,
        Err(error) => Identity::Gone(error),
    }
}

/// A new connection to the socket at `path`, served by `owner` (and by
/// `pid`, when the first connection's server named itself): the first one
/// went to `identify`.
fn connect_again(
    path: &Path,
    owner: u32,
    pid: Option<i32>,
) -> Result<(UnixStream, PathBuf), ClientError> {
    let stream = connect(path).map_err(|error| {
        ClientError::Unreachable(format!("cannot connect: {}: {error}", path.display()))
    })?;
    let peer = peer_credentials(&stream).map_err(|error| {
        ClientError::Untrusted(format!(
            "{}: its server's credentials cannot be read ({error})",
            path.display()
        ))
    })?;
    if peer.uid != owner || pid.is_some_and(|pid| pid != peer.pid) {
        return Err(ClientError::Unreachable(format!(
            "the server at {} changed while it was asked",
            path.display()
        )));
    }
    Ok((stream, path.to_path_buf()))
}

/// A socket file's (device, inode): its aliases share it.
fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// The socket, among all of `owner`'s in trusted directories but those
/// `asked` already, whose server serves the filesystem with device number
/// `device`, connected. A stopped server cannot say what it serves: it is
/// passed over (its mount's commands then find no server).
fn find_by_device(
    owner: u32,
    device: &str,
    asked: &mut HashSet<Option<(u64, u64)>>,
) -> Option<(UnixStream, PathBuf)> {
    for directory in socket_directories(owner) {
        if trusted_directory(&directory, owner).is_err() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_str().is_some_and(is_socket_name) {
                continue;
            }
            let path = entry.path();
            // A socket's aliases are asked once.
            let identity = socket_identity(&path);
            if identity.is_none() || !asked.insert(identity) {
                continue;
            }
            let Ok(stream) = connect_nonblocking(&path) else {
                continue;
            };
            if !peer_credentials(&stream).is_ok_and(|peer| peer.uid == owner) {
                continue;
            }
            if let Identity::Serving(served, pid) = identify(stream) {
                if served == device {
                    if let Ok(found) = connect_again(&path, owner, Some(pid)) {
                        return Some(found);
                    }
                }
            }
        }
    }
    None
}

/// The device number of the FUSE mount the server at `path` serves, if it
/// answers and says.
pub(super) fn device_served_at(path: &Path) -> Option<String> {
    match identify(connect_nonblocking(path).ok()?) {
        Identity::Serving(device, _) => Some(device),
        _ => None,
    }
}

/// Whether the FUSE mount at `mountpoint` has lost its server
/// ([`crate::second_mount::served_by_no_one`]). Asked on a thread of its
/// own, given up after a second: a server that is alive but stuck would
/// hold the question.
pub fn mount_process_gone(mountpoint: &Path) -> bool {
    let (answer, answered) = std::sync::mpsc::channel();
    let path = mountpoint.to_path_buf();
    let asked = std::thread::Builder::new()
        .name("vigilfs-probe".into())
        .spawn(move || {
            let gone = crate::second_mount::served_by_no_one(&path).is_some();
            let _ = answer.send(gone);
        });
    asked.is_ok() && answered.recv_timeout(Duration::from_secs(1)) == Ok(true)
}

/// The process serving the mount at `mountpoint`, found without asking
/// the mount (its root answers only while the process runs): its control
/// socket names it.
fn server_pid(mountpoint: &Path) -> Option<i32> {
    let (stream, _) = connect_mount(mountpoint).ok()?;
    Some(peer_credentials(&stream).ok()?.pid)
}

/// The pid of the process serving the mount at `mountpoint` if it is
/// stopped (SIGSTOP, a debugger): anything that asks the mount itself, a
/// stat of its root, would wait until it is resumed.
pub fn stopped_server(mountpoint: &Path) -> Option<i32> {
    server_pid(mountpoint).filter(|&pid| process_stopped(pid))
}

/// The mount point of the vigilfs mount (of root's or this user's) that
/// serves the file whose [`crate::mountinfo::file_identity`] is `image`,
/// under whatever name: each server's status names the file it opened.
/// A server that does not answer within a second is passed over.
pub fn mount_serving(image: (u64, u64)) -> Option<PathBuf> {
    let mounts = Mounts::read().ok()?;
    let found = mounts
        .vigilfs_mounts(super::current_uid())
        .find(|entry| {
            let Ok((stream, _)) = connect_mount(&entry.mountpoint) else {
                return false;
            };
            exchange(stream, &Request::Status, Some(Duration::from_secs(1))).is_ok_and(
                |(status, _)| {
                    let identity = &status["image_identity"];
                    identity["device"].as_u64() == Some(image.0)
                        && identity["inode"].as_u64() == Some(image.1)
                },
            )
        })
        .map(|entry| entry.mountpoint.clone());
    found
}

/// Gives the server of the mount at `existing` a second socket name, that
/// of `second` (a hard link to its socket, in the same directory), so
/// control commands on `second` reach it at once after `existing` is
/// unmounted; a name a live server holds already is left to it (the
/// commands then find this server by asking each socket). The server removes every name of its socket when it stops; a server
/// starting at `second` later removes an alias whose mount is gone
/// ([`super::server`]).
pub fn alias(existing: &Path, second: &Path) -> Result<(), String> {
    let (_, socket) = connect_mount(existing).map_err(|error| match error {
        ClientError::Unreachable(message) | ClientError::Untrusted(message) => message,
        ClientError::Server(reply) => reply.message,
    })?;
    let second = canonical_mountpoint(second).map_err(|error| error.to_string())?;
    let directory = socket
        .parent()
        .ok_or_else(|| format!("{} has no directory", socket.display()))?;
    let alias = directory.join(socket_name(&second));
    if alias == socket {
        return Ok(());
    }
    let _lock = DirectoryLock::take(directory);
    if let Ok(existing) = std::fs::symlink_metadata(&alias) {
        let identity = |metadata: &std::fs::Metadata| (metadata.dev(), metadata.ino());
        let ours = std::fs::symlink_metadata(&socket)
            .is_ok_and(|socket| identity(&socket) == identity(&existing));
        if ours {
            return Ok(());
        }
        if connect_nonblocking(&alias).is_ok() {
            // Another server's name, its own or an alias: it keeps it.
            // Clients find this server still (`connect_serving`).
            return Ok(());
        }
        let _ = std::fs::remove_file(&alias);
    }
    std::fs::hard_link(&socket, &alias).map_err(|error| {
        format!(
            "linking {} to {}: {error}",
            alias.display(),
            socket.display()
        )
    })
}

/// [`call`] for the mount at `canonical` (already canonical) owned by
/// `owner`: only `owner`'s socket directories, only a server running as
/// `owner`.
#[cfg(test)]
pub fn call_owned(canonical: &Path, owner: u32, request: &Request) -> Result<Value, ClientError> {
    let (stream, _) = connect_trusted(canonical, owner)?;
    exchange(stream, request, Some(RESPONSE_TIMEOUT)).map(|(result, _)| result)
}

/// The first socket of the mount that answers and is served by `owner`,
/// and its path.
fn connect_trusted(canonical: &Path, owner: u32) -> Result<(UnixStream, PathBuf), ClientError> {
    let name = socket_name(canonical);
    let mut looked = Vec::new();
    let mut refused = Vec::new();
    let mut stale = Vec::new();
    let mut failed = Vec::new();
    for directory in socket_directories(owner) {
        let path = directory.join(&name);
        looked.push(path.display().to_string());
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        if let Err(why) = trusted_directory(&directory, owner) {
            refused.push(format!("{} (its directory is {why})", path.display()));
            continue;
        }
        let stream = match connect(&path) {
            Ok(stream) => stream,
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                stale.push(match remove_if_stale(&directory, &path) {
                    Some(Ok(())) => format!("removed the stale control socket {}", path.display()),
                    Some(Err(error)) => format!(
                        "its control socket {} is stale, and could not be removed: {error}",
                        path.display()
                    ),
                    None => format!("{} did not answer", path.display()),
                });
                continue;
            }
            Err(error) => {
                failed.push(format!("{}: {error}", path.display()));
                continue;
            }
        };
        match peer_credentials(&stream) {
            Ok(peer) if peer.uid == owner => {
                for refusal in &refused {
                    eprintln!("vigilfs: warning: ignored {refusal}");
                }
                return Ok((stream, path));
            }
            Ok(peer) => refused.push(format!(
                "{}: it is served by uid {} (pid {}), not by uid {owner} who mounted {}",
                path.display(),
                peer.uid,
                peer.pid,
                canonical.display()
            )),
            Err(error) => refused.push(format!(
                "{}: its server's credentials cannot be read ({error})",
                path.display()
            )),
        }
    }
    if !refused.is_empty() {
        return Err(ClientError::Untrusted(format!(
            "refusing to talk to a control socket not served by the mount's owner (planted by \
             another user?): {}",
            refused.join("; ")
        )));
    }
    if !failed.is_empty() {
        return Err(ClientError::Unreachable(format!(
            "cannot connect: {}",
            failed.join("; ")
        )));
    }
    if !stale.is_empty() {
        return Err(ClientError::Unreachable(format!(
            "{PROCESS_GONE} ({})",
            stale.join("; ")
        )));
    }
    Err(ClientError::Unreachable(format!(
        "no vigilfs mount is served there (no control socket at {})",
        looked.join(", ")
    )))
}

/// Connects, retrying while the server's backlog is full, up to
/// [`CONNECT_TIMEOUT`].
fn connect(path: &Path) -> io::Result<UnixStream> {
    let start = Instant::now();
    loop {
        match connect_nonblocking(path) {
            Err(error)
                if error.kind() == io::ErrorKind::WouldBlock
                    && start.elapsed() < CONNECT_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            outcome => return outcome,
        }
    }
}

/// Sends `request` and reads the response line, waiting up to `timeout`
/// (`None`: as long as the server runs); the reader is left after the
/// line (a stream's events follow).
fn exchange(
    stream: UnixStream,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<(Value, BufReader<UnixStream>), ClientError> {
    let broken = |error: io::Error| ClientError::Unreachable(format!("control socket: {error}"));
    // The answer is awaited in slices, looking at the server between them:
    // a stopped one answers nothing until it is resumed, however long the
    // request may take.
    stream
        .set_read_timeout(Some(
            timeout.map_or(WAIT_SLICE, |limit| limit.min(WAIT_SLICE)),
        ))
        .map_err(broken)?;
    let server = peer_credentials(&stream).ok().map(|peer| peer.pid);
    let pid = server.map_or("?".into(), |pid| pid.to_string());
    let started = Instant::now();
    let mut stopped_since: Option<Instant> = None;
    let mut keep_waiting = || {
        let stopped = server.is_some_and(process_stopped);
        let stopped_for = if stopped {
            stopped_since.get_or_insert_with(Instant::now).elapsed()
        } else {
            stopped_since = None;
            Duration::ZERO
        };
        let out_of_time = timeout.is_some_and(|limit| started.elapsed() >= limit);
        if !out_of_time && stopped_for < STOPPED_GIVE_UP {
            return Ok(());
        }
        let why = if stopped {
            format!("it is stopped: `kill -CONT {pid}` resumes it")
        } else {
            "it is hung, or busy with a long freeze or writeback".into()
        };
        Err(ClientError::Unreachable(format!(
            "the mount process (pid {pid}) did not answer within {} s: {why}",
            started.elapsed().as_secs()
        )))
    };
    send_and_answer_waiting(stream, request, &mut keep_waiting)
}

/// How long one read of an answer waits before the server is looked at.
const WAIT_SLICE: Duration = Duration::from_secs(1);

/// How long a client waits on a stopped mount process (SIGSTOP, a
/// debugger) before saying so: it cannot answer until it is resumed.
const STOPPED_GIVE_UP: Duration = Duration::from_secs(5);

/// Whether process `pid` is stopped (a peer's pid is never negative).
fn process_stopped(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(crate::processes::is_stopped)
}

/// Sends `request` and reads the response line; each time the stream's
/// read timeout passes, `keep_waiting` says whether to go on waiting or
/// what to fail with.
fn send_and_answer_waiting(
    stream: UnixStream,
    request: &Request,
    keep_waiting: &mut dyn FnMut() -> Result<(), ClientError>,
) -> Result<(Value, BufReader<UnixStream>), ClientError> {
    let broken = |error: io::Error| ClientError::Unreachable(format!("control socket: {error}"));
    let mut line = serde_json::to_vec(request)
        .map_err(|error| ClientError::Unreachable(format!("encoding the request: {error}")))?;
    line.push(b'\n');
    // A server that refuses a connection (busy) answers before reading and
    // closes: the write may then fail while its answer waits to be read.
    let written = (&stream).write_all(&line);
    let mut reader = BufReader::new(stream);
    let mut answer = Vec::new();
    // What a timed-out read got stays in `answer`; the next one goes on.
    let read = loop {
        match reader.read_until(b'\n', &mut answer) {
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && written.is_ok() =>
            {
                keep_waiting()?;
            }
            read => break read,
        }
    };
    if answer.is_empty() {
        written.map_err(broken)?;
    }
    read.map_err(broken)?;
    if answer.is_empty() {
        return Err(ClientError::Unreachable(
            "the mount process closed the connection without answering".into(),
        ));
    }
    let response: Response = serde_json::from_slice(&answer).map_err(|error| {
        ClientError::Unreachable(format!("unreadable answer from the mount process: {error}"))
    })?;
    match (response.ok, response.error) {
        (true, _) => Ok((response.result.unwrap_or(Value::Null), reader)),
        (false, Some(reply)) => Err(ClientError::Server(reply)),
        (false, None) => Err(ClientError::Server(ErrorReply {
            kind: ErrorKind::Failed,
            message: "the request failed".into(),
            errno: None,
        })),
    }
}

/// Opens the event stream of the mount at `mountpoint` (`request` is an
/// `events` request): the response's value, and the lines after it, one
/// event each, until an `{"end":...}` line or the end of the connection.
pub fn open_stream(
    mountpoint: &Path,
    request: &Request,
) -> Result<(Value, BufReader<UnixStream>), ClientError> {
    // The answer waits as any other (a stopped server is named, not
    // waited on forever); the events after it have their own timeouts.
    let (stream, _) = connect_mount(mountpoint)?;
    exchange(stream, request, Some(RESPONSE_TIMEOUT))
}
