//! The control server the mount process runs: a Unix socket (see the
//! parent module for where), one thread accepting, one short-lived thread
//! per connection. Bad input gets an error response, never a panic; a
//! client that sends nothing is dropped after a timeout; the socket file is
//! removed when the server stops.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Map, Value};
use vigilfs::device::{FaultPlan, FaultRule, RuleId};
use vigilfs::fs::{Filesystem, FsError};
use vigilfs::inode::FileError;

use super::protocol::{ErrorKind, Request, Response, MAX_REQUEST_BYTES};
use super::report::{rule_json, status_json};
use super::{canonical_mountpoint, current_uid, describe_errno, socket_directories, socket_name};

/// How long a connection may take to send its request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running control server; [`ControlServer::stop`] ends it.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Context {
    fs: Arc<Filesystem>,
    plan: Arc<FaultPlan>,
    mountpoint: PathBuf,
    owner_uid: u32,
    extra: Map<String, Value>,
}

/// Serves the control socket of the mount at `mountpoint`.
pub fn serve(
    fs: Arc<Filesystem>,
    plan: Arc<FaultPlan>,
    mountpoint: &Path,
    owner_uid: u32,
) -> io::Result<ControlServer> {
    serve_with(fs, plan, mountpoint, owner_uid, Map::new())
}

/// [`serve`], with `extra` fields added to every status report.
pub fn serve_with(
    fs: Arc<Filesystem>,
    plan: Arc<FaultPlan>,
    mountpoint: &Path,
    owner_uid: u32,
    mut extra: Map<String, Value>,
) -> io::Result<ControlServer> {
    let mountpoint = canonical_mountpoint(mountpoint)?;
    let (listener, path) = bind(&mountpoint)?;
    listener.set_nonblocking(true)?;
    extra.insert("mountpoint".into(), json!(mountpoint.display().to_string()));
    extra.insert("owner_uid".into(), json!(owner_uid));
    extra.insert("pid".into(), json!(std::process::id()));
    let context = Arc::new(Context {
        fs,
        plan,
        mountpoint,
        owner_uid,
        extra,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("vigilfs-control".into())
            .spawn(move || accept_loop(&listener, &context, &stop))?
    };
    Ok(ControlServer {
        path,
        stop,
        thread: Some(thread),
    })
}

impl ControlServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, waits for the requests being served, removes the
    /// socket.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Makes a socket directory: 0755, and a `/tmp/vigilfs-<uid>` fallback
/// must belong to us.
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
    let metadata = std::fs::symlink_metadata(directory)?;
    if !metadata.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            directory.display()
        )));
    }
    if directory.starts_with("/tmp") && metadata.uid() != current_uid() {
        return Err(io::Error::other(format!(
            "{} belongs to someone else",
            directory.display()
        )));
    }
    Ok(())
}

fn bind(mountpoint: &Path) -> io::Result<(UnixListener, PathBuf)> {
    let name = socket_name(mountpoint);
    let mut failures = Vec::new();
    for directory in socket_directories(Some(current_uid())) {
        if let Err(error) = ensure_directory(&directory) {
            failures.push(format!("{}: {error}", directory.display()));
            continue;
        }
        let path = directory.join(&name);
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "a vigilfs mount at {} is already served on {}",
                        mountpoint.display(),
                        path.display()
                    ),
                ));
            }
            // Left by a mount process that died.
            let _ = std::fs::remove_file(&path);
        }
        match UnixListener::bind(&path) {
            Ok(listener) => {
                // Everyone may connect; the server decides per request.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
                return Ok((listener, path));
            }
            Err(error) => failures.push(format!("{}: {error}", path.display())),
        }
    }
    Err(io::Error::other(format!(
        "no place for the control socket: {}",
        failures.join("; ")
    )))
}

fn accept_loop(listener: &UnixListener, context: &Arc<Context>, stop: &AtomicBool) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
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
                let context = Arc::clone(context);
                let spawned = std::thread::Builder::new()
                    .name("vigilfs-control-client".into())
                    .spawn(move || serve_connection(stream, &context));
                if let Ok(worker) = spawned {
                    workers.push(worker);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        workers.retain(|worker| !worker.is_finished());
    }
    for worker in workers {
        let _ = worker.join();
    }
}

/// The peer's uid, from SO_PEERCRED.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
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
    Ok(credentials.uid)
}

fn serve_connection(stream: UnixStream, context: &Context) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let uid = peer_uid(&stream);
    let mut line = Vec::new();
    let read = match stream.try_clone() {
        Ok(reader) => BufReader::new(reader.take(MAX_REQUEST_BYTES)).read_until(b'\n', &mut line),
        Err(error) => Err(error),
    };
    let response = match read {
        Err(error) => Response::failure(
            ErrorKind::BadRequest,
            format!("reading the request: {error}"),
            None,
        ),
        Ok(_) => respond(&line, uid, context),
    };
    let mut text = serde_json::to_vec(&response).unwrap_or_else(|_| {
        br#"{"ok":false,"error":{"kind":"failed","message":"unencodable response"}}"#.to_vec()
    });
    text.push(b'\n');
    let mut stream = stream;
    let _ = stream.write_all(&text);
}

fn respond(line: &[u8], uid: io::Result<u32>, context: &Context) -> Response {
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
    if request.is_mutating() {
        let allowed = match &uid {
            Ok(uid) => *uid == 0 || *uid == context.owner_uid,
            Err(_) => false,
        };
        if !allowed {
            let who = match uid {
                Ok(uid) => format!("uid {uid}"),
                Err(error) => format!("a client whose uid is unknown ({error})"),
            };
            return Response::failure(
                ErrorKind::Refused,
                format!(
                    "permission denied: only root and uid {} (who mounted {}) may {}; you are {who}",
                    context.owner_uid,
                    context.mountpoint.display(),
                    request.name()
                ),
                Some(libc::EPERM),
            );
        }
    }
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(request, context)));
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

fn engine_result(result: Result<(), FsError>, context: &Context) -> Response {
    match result {
        Ok(()) => Response::success(json!({ "state": context.fs.status().state.name() })),
        Err(error) => Response::failure(
            ErrorKind::Failed,
            fs_error_message(&error),
            Some(error.errno()),
        ),
    }
}

fn execute(request: Request, context: &Context) -> Response {
    let fs = &context.fs;
    let plan = &context.plan;
    match request {
        Request::Status => Response::success(status_json(fs, plan, &context.extra)),
        Request::Sync => engine_result(fs.syncfs_once(), context),
        Request::Freeze => engine_result(fs.freeze(), context),
        Request::Thaw => engine_result(fs.thaw(), context),
        Request::Shutdown { flush } => {
            fs.shutdown(flush);
            engine_result(Ok(()), context)
        }
        Request::InjectAdd { rules } => {
            let mut parsed = Vec::with_capacity(rules.len());
            for text in &rules {
                match text.parse::<FaultRule>() {
                    Ok(rule) => parsed.push(rule),
                    Err(error) => {
                        return Response::failure(
                            ErrorKind::BadRequest,
                            format!("`{text}`: {error}"),
                            None,
                        )
                    }
                }
            }
            let mut added = Vec::new();
            for rule in parsed {
                match plan.add_rule(rule) {
                    Ok(id) => added.push(id),
                    Err(error) => {
                        for id in added {
                            plan.remove_rule(id);
                        }
                        return Response::failure(ErrorKind::BadRequest, error.to_string(), None);
                    }
                }
            }
            let listed: Vec<Value> = added
                .iter()
                .filter_map(|id| plan.rule(*id))
                .map(|rule| rule_json(&rule))
                .collect();
            Response::success(json!({ "added": listed }))
        }
        Request::InjectRemove { id } => match plan.remove_rule(RuleId(id)) {
            Some(status) => Response::success(json!({ "removed": [rule_json(&status)] })),
            None => Response::failure(
                ErrorKind::BadRequest,
                format!("no fault rule with id {id}"),
                None,
            ),
        },
        Request::InjectClear => {
            let removed: Vec<Value> = plan.rules().iter().map(rule_json).collect();
            plan.clear();
            Response::success(json!({ "removed": removed }))
        }
        Request::InjectList => Response::success(json!({
            "rules": plan.rules().iter().map(rule_json).collect::<Vec<_>>()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::client;
    use vigilfs::device::{FaultDevice, MemoryDevice, SectorSize};
    use vigilfs::fs::MountOptions;
    use vigilfs::mkfs::{make_filesystem, MkfsOptions};

    fn mounted() -> (Arc<Filesystem>, Arc<FaultPlan>) {
        let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
        make_filesystem(memory.clone(), &MkfsOptions::default()).unwrap();
        let plan = Arc::new(FaultPlan::new());
        let device = FaultDevice::new(memory, Arc::clone(&plan));
        let fs = Filesystem::mount(Arc::new(device), MountOptions::default()).unwrap();
        (Arc::new(fs), plan)
    }

    fn raw_exchange(path: &Path, request: &[u8]) -> Value {
        let mut stream = UnixStream::connect(path).unwrap();
        stream.write_all(request).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    #[test]
    fn the_server_answers_status_inject_and_sync_and_survives_garbage() {
        let directory = tempfile::tempdir().unwrap();
        let (fs, plan) = mounted();
        let server = serve(Arc::clone(&fs), Arc::clone(&plan), directory.path(), 4242).unwrap();
        let socket = server.path().to_path_buf();
        assert!(socket.exists());
        assert_eq!(
            client::socket_for(directory.path()).unwrap(),
            socket,
            "the client finds the socket from the mount point"
        );

        let status = client::call(directory.path(), &Request::Status).unwrap();
        assert_eq!(status["state"], "running");
        assert_eq!(status["owner_uid"], 4242);
        assert_eq!(status["fault_rules"].as_array().unwrap().len(), 0);

        let added = client::call(
            directory.path(),
            &Request::InjectAdd {
                rules: vec!["fail op=write class=data".into()],
            },
        )
        .unwrap();
        let id = added["added"][0]["id"].as_u64().unwrap();
        assert_eq!(plan.rules().len(), 1);
        let listed = client::call(directory.path(), &Request::InjectList).unwrap();
        assert_eq!(listed["rules"][0]["id"].as_u64(), Some(id));
        let bad = client::call(
            directory.path(),
            &Request::InjectAdd {
                rules: vec!["fail op=write".into(), "explode now".into()],
            },
        );
        assert!(bad.is_err());
        assert_eq!(plan.rules().len(), 1, "nothing added from a bad batch");
        client::call(directory.path(), &Request::InjectRemove { id }).unwrap();
        assert!(client::call(directory.path(), &Request::InjectRemove { id }).is_err());
        client::call(directory.path(), &Request::InjectClear).unwrap();

        client::call(directory.path(), &Request::Sync).unwrap();
        client::call(directory.path(), &Request::Freeze).unwrap();
        assert_eq!(
            client::call(directory.path(), &Request::Status).unwrap()["state"],
            "frozen"
        );
        client::call(directory.path(), &Request::Thaw).unwrap();
        assert!(client::call(directory.path(), &Request::Thaw).is_err());

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
        assert!(client::call(directory.path(), &Request::Status).is_err());
        Arc::try_unwrap(fs).unwrap().unmount().unwrap();
    }
}
