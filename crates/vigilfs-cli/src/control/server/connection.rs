//! One control connection from accept to answer: whether the limits let
//! it in, reading its request line against the whole-request deadline,
//! and writing the response against the response deadline.
//!
//! A [`Slot`] is the connection's place in the per-uid counts; it is
//! released when dropped, whichever way the connection ends, so a failed
//! spawn or a panic cannot leak one. Nothing here holds the filesystem:
//! that is taken only in `execute`, while a request runs.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::execute::respond;
use super::Context;
use crate::control::peer_credentials;
use crate::control::protocol::{ErrorKind, Request, Response, MAX_REQUEST_BYTES};
use crate::control::stream;

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
pub(super) fn admit(stream: UnixStream, context: &Arc<Context>) {
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
pub(in crate::control) fn write_response(
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
