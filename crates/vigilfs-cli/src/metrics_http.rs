//! The HTTP side of `-o metrics=ADDR:PORT`: answers `GET /metrics` with
//! what [`crate::metrics::render`] makes, and keeps whoever can reach the
//! port from costing the mount more than a few kilobytes and threads.
//!
//! A scrape is one small request, rare and answered at once, so the server
//! is built for bounds, not throughput (an earlier general-purpose server
//! read headers without limit: one client grew the daemon to 344 MB):
//! - at most [`MAX_CONNECTIONS`] requests are served at a time, each on a
//!   thread of its own. A client beyond them takes the place of the oldest
//!   one that has not sent its whole request yet (that one is closed), so
//!   idle connections cannot keep a scraper out; when every one is being
//!   answered, the new client is closed at once;
//! - a request's head must fit in [`MAX_HEAD_BYTES`] (431 otherwise) and
//!   arrive, with the answer sent, within [`CONNECTION_DEADLINE`] of the
//!   accept: a slow client is cut off at the deadline, not per read;
//! - one request per connection (`Connection: close`); bodies are ignored.
//!
//! Parsing is the `httparse` crate's; the bounds are this module's job.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vigilfs::device::FaultPlan;

use crate::engine_slot::EngineSlot;

/// Requests served at once (see the module comment for the client beyond
/// them).
pub const MAX_CONNECTIONS: usize = 8;
/// The largest request head (request line and headers) read.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// From accept to the last byte of the answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// Headers parsed per request; a scraper sends a handful.
const MAX_HEADERS: usize = 32;
/// How long the accept waits for the thread of a client it evicted to end
/// (it ends as soon as its read fails: microseconds, unless the machine is
/// starved).
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// A running metrics server. [`MetricsServer::stop`] ends its accept loop;
/// requests in flight finish within their deadline.
#[derive(Debug)]
pub struct MetricsServer {
    stopping: Arc<AtomicBool>,
    address: std::net::SocketAddr,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the port the system chose for port 0).
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Stops accepting and waits for the accept loop to end.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocked accept; it sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Serves `/metrics` on `address` until [`MetricsServer::stop`]. The mount
/// is held only while a scrape reads it.
pub fn serve(
    address: &str,
    engine: Arc<EngineSlot>,
    plan: Arc<FaultPlan>,
) -> Result<MetricsServer, String> {
    let listener = TcpListener::bind(address)
        .map_err(|error| format!("metrics address {address}: {error}"))?;
    let bound = listener
        .local_addr()
        .map_err(|error| format!("metrics address {address}: {error}"))?;
    let stopping = Arc::new(AtomicBool::new(false));
    let seen_stop = Arc::clone(&stopping);
    let acceptor = std::thread::Builder::new()
        .name("vigilfs-metrics".into())
        .spawn(move || accept_loop(&listener, &seen_stop, &engine, &plan))
        .map_err(|error| format!("metrics thread: {error}"))?;
    Ok(MetricsServer {
        stopping,
        address: bound,
        acceptor: Some(acceptor),
    })
}

fn accept_loop(
    listener: &TcpListener,
    stopping: &AtomicBool,
    engine: &Arc<EngineSlot>,
    plan: &Arc<FaultPlan>,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let waiting = Arc::new(Waiting::default());
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // EMFILE and the like: give the system a moment, keep serving.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        // Past the bound, the oldest client still sending its request makes
        // room: its thread ends as its read fails, and the accept waits a
        // moment for that (evicted threads count until they end, and twice
        // the bound is the hard limit on threads). A scrape right after a
        // flood of idle clients came while those threads were ending, and
        // was closed unanswered.
        if in_flight.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let made_room = waiting.evict_oldest() && {
                let deadline = Instant::now() + EVICTION_WAIT;
                while in_flight.load(Ordering::SeqCst) >= 2 * MAX_CONNECTIONS
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                in_flight.load(Ordering::SeqCst) < 2 * MAX_CONNECTIONS
            };
            if !made_room {
                drop(stream);
                continue;
            }
        }
        in_flight.fetch_add(1, Ordering::SeqCst);
        let accepted = Instant::now();
        // Given back when the handler ends, even by a panic.
        let slot = Slot(Arc::clone(&in_flight));
        let entry = waiting.enter(&stream);
        let engine = Arc::clone(engine);
        let plan = Arc::clone(plan);
        let _ = std::thread::Builder::new()
            .name("vigilfs-scrape".into())
            .spawn(move || {
                let _slot = slot;
                answer(stream, accepted, entry, &engine, &plan);
            });
    }
}

/// One of the [`MAX_CONNECTIONS`] taken; dropping it gives it back.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The clients whose request head is not in yet, oldest first.
#[derive(Default)]
struct Waiting {
    clients: Mutex<VecDeque<(u64, TcpStream)>>,
    next_id: AtomicU64,
}

impl Waiting {
    /// Notes `stream` as waiting for its request; the entry leaves when
    /// dropped.
    fn enter(self: &Arc<Waiting>, stream: &TcpStream) -> WaitingEntry {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(handle) = stream.try_clone() {
            self.lock().push_back((id, handle));
        }
        WaitingEntry {
            waiting: Arc::clone(self),
            id,
        }
    }

    /// Closes the oldest waiting client; whether there was one.
    fn evict_oldest(&self) -> bool {
        match self.lock().pop_front() {
            Some((_, stream)) => {
                let _ = stream.shutdown(Shutdown::Both);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, TcpStream)>> {
        // Each update is one queue operation: a poisoned lock holds a
        // consistent queue.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client in [`Waiting`] until its request head is in (or it is gone).
struct WaitingEntry {
    waiting: Arc<Waiting>,
    id: u64,
}

impl Drop for WaitingEntry {
    fn drop(&mut self) {
        self.waiting.lock().retain(|(id, _)| *id != self.id);
    }
}

/// What a request asked for, as far as this server cares.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics { with_body: bool },
    NotFound { with_body: bool },
    WrongMethod,
    HeadTooLarge,
    Malformed,
}

/// Reads one request head within the deadline and answers it.
fn answer(
    mut stream: TcpStream,
    accepted: Instant,
    waiting: WaitingEntry,
    engine: &EngineSlot,
    plan: &FaultPlan,
) {
    let asked = read_request(&mut stream, accepted);
    drop(waiting);
    let Some(asked) = asked else {
        return; // the client went away, missed the deadline or was evicted
    };
    let (status, content_type, body, with_body) = match asked {
        Asked::Metrics { with_body } => match engine.current() {
            Some(fs) => {
                let text = crate::metrics::render(&fs, plan);
                drop(fs);
                ("200 OK", crate::metrics::CONTENT_TYPE, text, with_body)
            }
            None => (
                "503 Service Unavailable",
                "text/plain",
                "unmounted\n".to_string(),
                with_body,
            ),
        },
        Asked::NotFound { with_body } => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".to_string(),
            with_body,
        ),
        Asked::WrongMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n".to_string(),
            true,
        ),
        Asked::HeadTooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain",
            format!("request head over {MAX_HEAD_BYTES} bytes\n"),
            true,
        ),
        Asked::Malformed => (
            "400 Bad Request",
            "text/plain",
            "malformed request\n".to_string(),
            true,
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        response.extend_from_slice(body.as_bytes());
    }
    let Some(left) = CONNECTION_DEADLINE.checked_sub(accepted.elapsed()) else {
        return;
    };
    if stream
        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .is_ok()
    {
        let _ = stream.write_all(&response);
    }
}

/// Reads until a whole request head is in, it grows past the limit, or the
/// deadline passes (`None` then, and for a client that closed).
fn read_request(stream: &mut TcpStream, accepted: Instant) -> Option<Asked> {
    let mut head = [0u8; MAX_HEAD_BYTES];
    let mut filled = 0;
    loop {
        let left = CONNECTION_DEADLINE.checked_sub(accepted.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let read = match stream.read(&mut head[filled..]) {
            Ok(0) | Err(_) => return None,
            Ok(read) => read,
        };
        filled += read;
        match parse(&head[..filled]) {
            Some(asked) => return Some(asked),
            None if filled == head.len() => return Some(Asked::HeadTooLarge),
            None => {}
        }
    }
}

/// What a complete head asks; `None` while the head is still partial.
fn parse(bytes: &[u8]) -> Option<Asked> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Asked::HeadTooLarge),
        Err(_) => Some(Asked::Malformed),
        Ok(httparse::Status::Complete(_)) => {
            let with_body = match request.method {
                Some("GET") => true,
                Some("HEAD") => false,
                _ => return Some(Asked::WrongMethod),
            };
            let path = request.path.unwrap_or("");
            if path.split('?').next() == Some("/metrics") {
                Some(Asked::Metrics { with_body })
            } else {
                Some(Asked::NotFound { with_body })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigilfs::device::{MemoryDevice, SectorSize};
    use vigilfs::fs::{Filesystem, MountOptions};
    use vigilfs::mkfs::{make_filesystem, MkfsOptions};

    /// A server for a fresh filesystem in memory.
    fn test_server() -> MetricsServer {
        let memory = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        make_filesystem(memory.clone(), &MkfsOptions::default()).unwrap();
        let fs = Filesystem::mount(memory, MountOptions::default()).unwrap();
        serve(
            "127.0.0.1:0",
            EngineSlot::new(Arc::new(fs)),
            Arc::new(FaultPlan::new()),
        )
        .unwrap()
    }

    /// Clients that connect and send nothing (any local user can) take the
    /// place of nobody: a scrape that comes after them is answered.
    #[test]
    fn idle_clients_cannot_keep_a_scrape_out() {
        let server = test_server();
        let idle: Vec<TcpStream> = (0..2 * MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(server.address).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut scrape = TcpStream::connect(server.address).unwrap();
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        scrape
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        let _ = scrape.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
        drop(idle);
        server.stop();
    }

    /// The same with no pause: a scrape right after a flood of idle
    /// clients came while the threads of those it evicted were still
    /// ending, and was closed unanswered.
    #[test]
    fn a_scrape_right_after_a_flood_of_idle_clients_is_answered() {
        let server = test_server();
        for trial in 0..10 {
            let idle: Vec<TcpStream> = (0..4 * MAX_CONNECTIONS)
                .map(|_| TcpStream::connect(server.address).unwrap())
                .collect();
            let mut scrape = TcpStream::connect(server.address).unwrap();
            scrape
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = scrape.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut answer = String::new();
            let _ = scrape.read_to_string(&mut answer);
            assert!(
                answer.starts_with("HTTP/1.1 200 OK"),
                "trial {trial}: {answer:?}"
            );
            drop(idle);
        }
        server.stop();
    }

    #[test]
    fn a_partial_head_asks_for_more_and_a_complete_one_is_routed() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Asked::Metrics { with_body: true })
        );
        assert_eq!(
            parse(b"HEAD /metrics HTTP/1.0\r\n\r\n"),
            Some(Asked::Metrics { with_body: false })
        );
        assert_eq!(
            parse(b"GET / HTTP/1.0\r\n\r\n"),
            Some(Asked::NotFound { with_body: true })
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.0\r\n\r\n"),
            Some(Asked::WrongMethod)
        );
        assert_eq!(parse(b"\x00\x01garbage\r\n\r\n"), Some(Asked::Malformed));
    }

    #[test]
    fn a_head_with_more_headers_than_a_scraper_sends_is_refused() {
        let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for index in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("X-{index}: y\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(parse(&head), Some(Asked::HeadTooLarge));
    }
}
