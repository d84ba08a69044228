//! The event stream the control server sends to `vigilfs events`: the
//! recorded history after `since`, then (with `follow`) live events until
//! the mount's UNMOUNT event or its end.
//!
//! A listener never slows the filesystem: the stream reads the mount's
//! event log ([`EventLog::read_after`]) with its own cursor, on its own
//! thread, holding the log (not the filesystem) and no lock while it
//! writes. A listener that does not read falls behind; what the log no
//! longer holds by the time it reads on comes as one `lost` event naming
//! the missing ids and, when the running sum (`errors_total`) allows, the
//! exact number of errors in them. The kernel buffers little for it (the
//! send buffer is kept small), so a stopped listener is behind by ids, not
//! by megabytes of socket memory; one that reads nothing for
//! [`STALL_LIMIT`] is cut off.
//!
//! A power cut (crash lab) replaces the mount's engine: a following stream
//! ends with `{"end":"restarted"}` once it has sent what the old engine's
//! log held, and the client follows the new engine from the last id it
//! saw (ids go on increasing across the crash; what the crash lost of the
//! log comes as a `lost` event).
//!
//! Who may listen: root, the user who mounted, and the members of the
//! mount's `events_group` (events name files).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigilfs::format::event_log::{EventRecord, RecordKind};
use vigilfs::fs::events::{EventLog, ReadOutcome};
use vigilfs::fs::PATH_SEARCH_BUDGET;

use super::event_json::{gap_event, gap_json, record_json, running_json};
use super::peer_credentials;
use super::protocol::{ErrorKind, EventsMode, Response};
use super::server::{write_response, Context};

/// Longest a write to a listener may block before the stream is cut.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Kernel send buffer of a stream: a few dozen events.
const SEND_BUFFER: libc::c_int = 16 * 1024;

/// Records read at once.
const BATCH: usize = 256;

/// Streams being served now (see [`drain`]).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts a stream while it lives.
struct Active;

impl Active {
    fn new() -> Active {
        ACTIVE.fetch_add(1, Ordering::AcqRel);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits, at most `limit`, for the streams being served to end: after the
/// unmount closed the log they send what is left and their end line, and
/// the process must not exit under them. A listener that does not read
/// holds this up no longer than `limit`.
pub fn drain(limit: Duration) {
    let start = Instant::now();
    while ACTIVE.load(Ordering::Acquire) > 0 && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a listener asked for.
#[derive(Debug, Clone, Copy)]
pub struct StreamRequest {
    /// Events after this id.
    pub since: u64,
    /// Live events too.
    pub follow: bool,
    /// Merge or distinct.
    pub mode: EventsMode,
}

/// Whether the process `pid` has `gid` among its supplementary groups,
/// from /proc (its effective group is the peer's credentials' own).
fn has_group(pid: i32, gid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|status| supplementary_group_in(&status, gid))
}

/// Whether the `Groups:` line of a `/proc/<pid>/status` text holds `gid`.
/// The `Gid:` line does not count: a saved or real group is not one the
/// process acts with.
fn supplementary_group_in(status: &str, gid: u32) -> bool {
    status
        .lines()
        .filter_map(|line| line.strip_prefix("Groups:"))
        .any(|groups| {
            groups
                .split_whitespace()
                .any(|group| group.parse() == Ok(gid))
        })
}

/// Why `stream`'s peer may not listen, if it may not.
fn refusal(stream: &UnixStream, context: &Context) -> Option<String> {
    let peer = match peer_credentials(stream) {
        Ok(peer) => peer,
        Err(error) => return Some(format!("the caller's credentials cannot be read ({error})")),
    };
    if peer.uid == 0 || peer.uid == context.owner_uid {
        return None;
    }
    if let Some(gid) = context.events_gid {
        if peer.gid == gid || has_group(peer.pid, gid) {
            return None;
        }
    }
    let group = match context.events_gid {
        Some(gid) => format!(", members of group {gid}"),
        None => String::new(),
    };
    Some(format!(
        "permission denied: events name files, so only root, uid {}{group} (who mounted {}) \
         may listen; you are uid {}",
        context.owner_uid,
        context.mountpoint.display(),
        peer.uid
    ))
}

/// A stream in progress.
struct Sender<'a> {
    stream: &'a UnixStream,
    context: &'a Context,
    /// Paths searched for during the batch being made.
    searched: HashMap<u64, Option<String>>,
}

impl Sender<'_> {
    fn send(&mut self, lines: &[Value]) -> io::Result<()> {
        let mut text = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut text, line).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        self.stream.set_write_timeout(Some(STALL_LIMIT))?;
        // A path searched for names its file for this batch only: kept
        // longer, a rename or an unlink since made it another file's name.
        self.searched.clear();
        (&*self.stream).write_all(&text)
    }

    /// A path of `ino` now: a name the mount learned (renames and unlinks
    /// keep those current, and asking costs nothing), else one found by
    /// searching the namespace, which is not done while the mount stops
    /// (the filesystem is held only while the path is looked for).
    fn path(&mut self, ino: u64) -> Option<String> {
        let slot = &self.context.engine;
        if let Some(known) = slot.known_path(ino) {
            return Some(known);
        }
        if let Some(path) = self.searched.get(&ino) {
            return path.clone();
        }
        let path = slot
            .current()
            .filter(|_| !self.context.stopping.load(Ordering::Acquire))
            .and_then(|fs| fs.path_of(ino, PATH_SEARCH_BUDGET));
        self.searched.insert(ino, path.clone());
        path
    }

    fn event(&mut self, record: &EventRecord) -> Value {
        let engine = &self.context.engine;
        let deleted = record
            .inode
            .and_then(|ino| engine.is_deleted(ino, record.generation));
        // As it was named when announced, else as it is named now.
        let path = engine.announced_path(record.id).or_else(|| {
            record
                .inode
                .filter(|&ino| {
                    deleted != Some(true) && engine.is_same_inode(ino, record.generation)
                })
                .and_then(|ino| self.path(ino))
        });
        record_json(record, path.as_deref(), deleted)
    }
}

/// Whether the other end hung up (checked while nothing is sent).
fn hung_up(stream: &UnixStream) -> bool {
    let mut poll = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Folds consecutive error events into one (merge mode): the count summed,
/// the first error's object and range kept (as fanotify's one pending
/// FS_ERROR event does), and how many files the folded events name.
fn fold(events: Vec<(EventRecord, Value)>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    // The files named by the error events folded into the last one out.
    let mut files: Option<BTreeSet<(u64, Option<u64>)>> = None;
    for (record, mut value) in events {
        let file = record.inode.map(|inode| (inode, record.generation));
        if record.kind != RecordKind::Error {
            files = None;
            out.push(value);
            continue;
        }
        let (Some(folded), Some(merged)) = (files.as_mut(), out.last_mut()) else {
            files = Some(file.into_iter().collect());
            out.push(value);
            continue;
        };
        folded.extend(file);
        let count = merged["count"].as_u64().unwrap_or(0) + record.count;
        merged["count"] = json!(count);
        let mut subtypes: Vec<Value> = merged["subtypes"].as_array().cloned().unwrap_or_default();
        for subtype in value["subtypes"].as_array().cloned().unwrap_or_default() {
            if !subtypes.contains(&subtype) {
                subtypes.push(subtype);
            }
        }
        merged["subtypes"] = json!(subtypes);
        if merged["first_id"].is_null() {
            merged["first_id"] = merged["id"].take();
        }
        merged["files"] = json!(folded.len());
        merged["id"] = value["id"].take();
        merged["last_time"] = value["last_time"].take();
        merged["last_errno"] = value["last_errno"].take();
        merged["last_inode"] = value["last_inode"].take();
        merged["errors_total"] = value["errors_total"].take();
    }
    out
}

/// Serves one `events` request on `stream`.
pub(super) fn serve_events(stream: &UnixStream, context: &Context, request: &StreamRequest) {
    let _active = Active::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    if let Some(why) = refusal(stream, context) {
        let refused = Response::failure(ErrorKind::Refused, why, Some(libc::EPERM));
        let _ = write_response(stream, &refused, deadline);
        return;
    }
    let generation = context.engine.generation();
    let log = match context.engine.current() {
        Some(fs) if !context.stopping.load(Ordering::Acquire) => {
            std::sync::Arc::clone(fs.event_log())
        }
        _ => {
            let gone = Response::failure(
                ErrorKind::Failed,
                "the filesystem is being unmounted",
                Some(libc::ESHUTDOWN),
            );
            let _ = write_response(stream, &gone, deadline);
            return;
        }
    };
    let size = SEND_BUFFER;
    // SAFETY: setsockopt with a pointer to a live int and its size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let newest_at_start = log.newest_id();
    let mount_first = log.mount_first_id();
    // Ids from `mount_first` on are this mount's only when the log keeps
    // nothing: a listener must not take them as a place to resume from.
    let ephemeral_from = (!log.is_persistent()).then_some(mount_first);
    if write_response(
        stream,
        &Response::success(json!({ "stream": true, "ephemeral_from": ephemeral_from })),
        deadline,
    )
    .is_err()
    {
        return;
    }
    let mut sender = Sender {
        stream,
        context,
        searched: HashMap::new(),
    };
    if request.follow && sender.send(&[running_json(newest_at_start)]).is_err() {
        return;
    }
    let _ = run(
        &mut sender,
        &log,
        request,
        (newest_at_start, mount_first),
        generation,
    );
}

/// Sends the log's records after `request.since` (to `newest_at_start`
/// without `follow`), until the mount's UNMOUNT event (its first id is
/// `mount_first`) or, once the engine of `generation` was replaced by a
/// power cut, the end of what its log holds.
fn run(
    sender: &mut Sender<'_>,
    log: &EventLog,
    request: &StreamRequest,
    (newest_at_start, mount_first): (u64, u64),
    generation: u64,
) -> io::Result<()> {
    // An id beyond the newest is from another log (a state file kept
    // across a mkfs, or from another filesystem): reading after it would
    // hide every new event, errors included. Read after the newest
    // instead; the client says so.
    let mut after = request.since.min(newest_at_start);
    // The running sum of errors up to `after`, taken before anything can
    // push that record out: it makes a loss exact, even one right at the
    // start of a listener that never got to read.
    let mut errors_before = log.errors_through(after);
    let mut gap: Option<(u64, u64)> = None;
    let end = |sender: &mut Sender<'_>, why: &str| sender.send(&[json!({ "end": why })]);
    // The history ends with the newest id it covered, as a live stream's
    // first line says it: the client tells a `since` beyond it.
    let history_end = |sender: &mut Sender<'_>| {
        sender.send(&[json!({ "end": "history", "newest_id": newest_at_start })])
    };
    loop {
        if !request.follow && after >= newest_at_start {
            if let Some((first, last)) = gap.take() {
                sender.send(&[gap_json(first, last, None, "not in the log")])?;
            }
            return history_end(sender);
        }
        let wait = if request.follow {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        match log.read_after(after, BATCH, wait) {
            ReadOutcome::Records(records) => {
                let mut lines = Vec::new();
                if let Some((first, last)) = gap.take() {
                    lines.push(gap_event(first, last, &records[0], errors_before));
                }
                let mut events = Vec::new();
                let mut terminal = false;
                for record in &records {
                    errors_before = Some(record.errors_total);
                    // A shutdown is not the end: reads go on after it, and
                    // their errors with them, until the unmount.
                    terminal |= request.follow
                        && record.kind == RecordKind::Unmount
                        && record.id >= mount_first;
                    events.push((*record, sender.event(record)));
                    after = record.id;
                    if terminal {
                        break;
                    }
                }
                match request.mode {
                    EventsMode::Distinct => {
                        lines.extend(events.into_iter().map(|(_, value)| value));
                    }
                    EventsMode::Merge => lines.extend(fold(events)),
                }
                sender.send(&lines)?;
                if terminal {
                    return end(sender, "terminal");
                }
            }
            ReadOutcome::Gap { first, last } => {
                // Kept until the record after it says how many errors it
                // held.
                gap = Some(gap.map_or((first, last), |(earlier, _)| (earlier, last)));
                after = last;
            }
            ReadOutcome::Timeout => {
                if !request.follow {
                    return history_end(sender);
                }
                if sender.context.engine.generation() != generation {
                    return end(sender, "restarted");
                }
                if hung_up(sender.stream) {
                    return Ok(());
                }
            }
            ReadOutcome::Closed => {
                if let Some((first, last)) = gap.take() {
                    sender.send(&[gap_json(first, last, None, "not in the log")])?;
                }
                if sender.context.engine.generation() != generation {
                    return end(sender, "restarted");
                }
                return end(sender, "unmount");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::supplementary_group_in;

    #[test]
    fn only_supplementary_groups_make_a_member() {
        let status = "Uid:\t1000\t1000\t1000\t1000\nGid:\t7\t1000\t9\t1000\nGroups:\t4 24\n";
        assert!(supplementary_group_in(status, 24));
        assert!(!supplementary_group_in(status, 9), "a saved group");
        assert!(!supplementary_group_in(status, 7), "a real group");
        assert!(!supplementary_group_in("Groups:\n", 0));
    }
}
