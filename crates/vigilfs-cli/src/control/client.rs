//! The client side: find the mount's socket, send one request, read the
//! response. Every failure is a [`Failure`] with a message naming the mount
//! point; a refused request exits with status 1.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::protocol::{ErrorKind, ErrorReply, Request, Response};
use super::{canonical_mountpoint, find_socket, socket_directories, socket_name};
use crate::failure::Failure;

/// How long to wait for an answer (freeze may write back a lot).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a request did not succeed.
#[derive(Debug)]
pub enum ClientError {
    /// No mount answered, or the exchange broke.
    Unreachable(String),
    /// The server answered with an error.
    Server(ErrorReply),
}

impl ClientError {
    /// The error as a command failure, prefixed with the command and mount
    /// point: "sync: /mnt: writeback error: ...". Everything exits 1 except
    /// an unreachable mount, which is an operational error.
    pub fn into_failure(self, command: &str, mountpoint: &Path) -> Failure {
        match self {
            ClientError::Unreachable(message) => {
                Failure::operational(format!("{command}: {}: {message}", mountpoint.display()))
            }
            ClientError::Server(reply) => Failure::usage(format!(
                "{command}: {}: {}",
                mountpoint.display(),
                reply.message
            )),
        }
    }
}

/// The socket path of the mount at `mountpoint`, or why there is none.
pub fn socket_for(mountpoint: &Path) -> Result<PathBuf, ClientError> {
    let canonical = canonical_mountpoint(mountpoint).map_err(|error| {
        ClientError::Unreachable(format!("cannot resolve the mount point: {error}"))
    })?;
    find_socket(&canonical).map_err(|looked| {
        let looked: Vec<String> = looked
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        ClientError::Unreachable(format!(
            "no vigilfs mount is served there (no control socket at {})",
            looked.join(", ")
        ))
    })
}

/// Sends `request` to the mount at `mountpoint`; returns the result.
pub fn call(mountpoint: &Path, request: &Request) -> Result<Value, ClientError> {
    let canonical = canonical_mountpoint(mountpoint).map_err(|error| {
        ClientError::Unreachable(format!("cannot resolve the mount point: {error}"))
    })?;
    // Try every existing candidate: a socket a dead mount left behind
    // refuses connections, and a live one may sit in a later directory.
    let name = socket_name(&canonical);
    let mut last_error = None;
    for directory in socket_directories(None) {
        let path = directory.join(&name);
        if !path.exists() {
            continue;
        }
        match UnixStream::connect(&path) {
            Ok(stream) => return exchange(stream, request),
            Err(error) => last_error = Some((path, error)),
        }
    }
    match last_error {
        Some((path, error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
            Err(ClientError::Unreachable(format!(
                "the mount process is gone (stale control socket {})",
                path.display()
            )))
        }
        Some((path, error)) => Err(ClientError::Unreachable(format!(
            "cannot connect to {}: {error}",
            path.display()
        ))),
        None => socket_for(mountpoint).map(|_| Value::Null),
    }
}

fn exchange(stream: UnixStream, request: &Request) -> Result<Value, ClientError> {
    let broken = |error: io::Error| ClientError::Unreachable(format!("control socket: {error}"));
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(broken)?;
    let mut line = serde_json::to_vec(request)
        .map_err(|error| ClientError::Unreachable(format!("encoding the request: {error}")))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(broken)?;
    let mut answer = Vec::new();
    BufReader::new(&stream)
        .read_until(b'\n', &mut answer)
        .map_err(broken)?;
    if answer.is_empty() {
        return Err(ClientError::Unreachable(
            "the mount process closed the connection without answering".into(),
        ));
    }
    let response: Response = serde_json::from_slice(&answer).map_err(|error| {
        ClientError::Unreachable(format!("unreadable answer from the mount process: {error}"))
    })?;
    match (response.ok, response.error) {
        (true, _) => Ok(response.result.unwrap_or(Value::Null)),
        (false, Some(reply)) => Err(ClientError::Server(reply)),
        (false, None) => Err(ClientError::Server(ErrorReply {
            kind: ErrorKind::Failed,
            message: "the request failed".into(),
            errno: None,
        })),
    }
}
