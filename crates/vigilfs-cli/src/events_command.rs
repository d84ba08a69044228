//! `vigilfs events MOUNTPOINT|IMAGE`: the recorded events, and with
//! --follow the live ones, as lines for people or JSON Lines; with --exec a
//! hook runs for each (see `hooks.rs`).
//!
//! A directory is a mount point: the events come from the mount process
//! over the control socket (root, the owner and `events_group` only). A
//! file or block device is an unmounted image: its event log region is
//! read directly, and the files it names are looked up in the image,
//! mounted read-only in memory (`path` is null if the image cannot be
//! mounted so, or the file is gone).
//! Either way ids missing after `--since` are shown as one `lost` event.

use std::collections::HashMap;
use std::io::{BufRead, ErrorKind as IoErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::Value;
use vigilfs::device::{BlockDevice, FileDevice, FileDeviceOptions, IoClass};
use vigilfs::format::event_log::{scan_region, Geometry};
use vigilfs::format::{read_superblock, FsState};
use vigilfs::fs::{Filesystem, MountOptions, PATH_SEARCH_BUDGET};

use crate::control::client;
use crate::control::event_json::{gap_event, gap_json, human_line, record_json};
use crate::control::protocol::{EventsMode, Request};
use crate::control::stream::STALL_LIMIT;
use crate::failure::Failure;
use crate::hooks::{Hook, HookConfig};
use crate::in_use::{self, AcquireError, LockMode};

/// How error events are delivered.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Every event as recorded.
    Distinct,
    /// Consecutive unread error events folded into one: the count summed,
    /// the first error's file and range shown, and how many files they name.
    Merge,
}

/// `vigilfs events` arguments.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// A mount point (live), or an unmounted image (its recorded log).
    pub target: PathBuf,
    /// After the history, live events until the mount's unmount event (a
    /// shutdown's is followed by the errors of reads that still run) or
    /// Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// JSON Lines (the README lists the fields).
    #[arg(long)]
    pub json: bool,
    /// Only events after this id (default: all the log holds; with
    /// --state, the id it records).
    #[arg(long, value_name = "ID")]
    pub since: Option<u64>,
    /// merge: fold consecutive unread error events into one.
    #[arg(long, value_enum, default_value = "distinct")]
    pub mode: ModeArg,
    /// Run CMD (with `sh -c`) once per event: the event in VIGILFS_*
    /// variables and as a JSON line on stdin.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// With --exec: the last id handled, written (atomically) after CMD
    /// succeeds, and read at start to resume after it.
    #[arg(long, value_name = "FILE", requires = "exec")]
    pub state: Option<PathBuf>,
    /// With --exec: only these kinds (comma-separated: error, lost,
    /// shutdown, unmount, mount, recovery, errors_action, freeze, thaw,
    /// faults, settings, running; and disconnected: the stream broke
    /// before the mount's unmount, its process died, an event made by
    /// this command, with no id).
    #[arg(long, value_delimiter = ',', requires = "exec")]
    pub kinds: Vec<String>,
    /// With --exec: a run that takes longer is killed and counts as
    /// failed.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60.0,
        requires = "exec"
    )]
    pub timeout: f64,
    /// With --exec: failed runs are retried this many times, waiting 1, 2,
    /// 4... seconds; then the command exits 1 (a supervisor restarts it, and
    /// --state resumes at the event that failed).
    #[arg(long, default_value_t = 5, requires = "exec")]
    pub retries: u32,
    /// With --exec: at most one run per this many seconds; events arriving
    /// meanwhile go to the next run together (on stdin, one line each).
    #[arg(long, value_name = "SECONDS", requires = "exec")]
    pub min_interval: Option<f64>,
}

fn seconds(value: f64, name: &str) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Failure::arguments(format!("{name} {value}: not a number of seconds")))
}

/// Where the output goes: printed, or to the hook.
enum Sink {
    Print { json: bool },
    Hook(Box<Hook>),
}

impl Sink {
    fn event(&mut self, event: Value) -> Result<(), Failure> {
        match self {
            Sink::Print { json } => {
                let line = if *json {
                    event.to_string()
                } else {
                    human_line(&event)
                };
                let mut stdout = std::io::stdout().lock();
                match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                    Ok(()) => Ok(()),
                    // A closed pipe (`| head`) ends the command quietly.
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                        std::process::exit(0)
                    }
                    // Events lost on the way out (a full disk) are a
                    // failure, not a success (review 43: exit 0).
                    Err(error) => Err(Failure::operational(format!("writing the events: {error}"))),
                }
            }
            Sink::Hook(hook) => hook.offer(event),
        }
    }

    fn tick(&mut self) -> Result<(), Failure> {
        match self {
            Sink::Print { .. } => Ok(()),
            Sink::Hook(hook) => hook.tick(),
        }
    }

    fn finish(&mut self) -> Result<(), Failure> {
        match self {
            Sink::Print { .. } => Ok(()),
            Sink::Hook(hook) => hook.finish(),
        }
    }
}

pub fn run(arguments: &EventsArgs) -> Result<u8, Failure> {
    let target = &arguments.target;
    let live = match std::fs::metadata(target) {
        Ok(metadata) => metadata.is_dir(),
        // A mount whose process died: asking it says so, and what to do.
        Err(error) if error.raw_os_error() == Some(libc::ENOTCONN) => true,
        // As status, sync and scrub answer a path that is not there.
        Err(error) => {
            return Err(Failure::operational(format!(
                "events: {}: {error}",
                target.display()
            )))
        }
    };
    if !live && arguments.follow {
        return Err(Failure::arguments(format!(
            "--follow needs a mount point; {} is an image",
            target.display()
        )));
    }
    let mut sink = match &arguments.exec {
        None => Sink::Print {
            json: arguments.json,
        },
        Some(command) => Sink::Hook(Box::new(Hook::new(HookConfig {
            command: command.clone(),
            state: arguments.state.clone(),
            kinds: arguments.kinds.clone(),
            timeout: match seconds(arguments.timeout, "--timeout")? {
                // Every run would be killed at once, then retried, forever.
                zero if zero.is_zero() => {
                    return Err(Failure::arguments(
                        "--timeout 0 would kill every run of the hook at once",
                    ))
                }
                timeout => timeout,
            },
            retries: arguments.retries,
            min_interval: arguments
                .min_interval
                .map(|value| seconds(value, "--min-interval"))
                .transpose()?,
            mountpoint: target.display().to_string(),
        })?)),
    };
    let (since, origin) = match (arguments.since, &sink) {
        (Some(since), _) => (since, SinceOrigin::Argument),
        (None, Sink::Hook(hook)) => match &arguments.state {
            Some(path) => (hook.resume_after(), SinceOrigin::StateFile(path.clone())),
            None => (0, SinceOrigin::Argument),
        },
        (None, Sink::Print { .. }) => (0, SinceOrigin::Argument),
    };
    if live {
        let mode = match arguments.mode {
            ModeArg::Distinct => EventsMode::Distinct,
            ModeArg::Merge => EventsMode::Merge,
        };
        follow_mount(target, since, origin, arguments.follow, mode, &mut sink)?;
    } else {
        read_image(target, since, &mut sink)?;
    }
    sink.finish()?;
    Ok(0)
}

/// Where the first id to follow from came from, to say what went wrong
/// when the mount has no event that new.
enum SinceOrigin {
    /// `--since`, or the start of the log.
    Argument,
    /// The hook's state file.
    StateFile(PathBuf),
    /// The last id seen before a power cut restarted the mount.
    BeforePowerCut,
}

impl SinceOrigin {
    /// The likely reason an id is beyond the newest event.
    fn likely_cause(&self) -> String {
        match self {
            SinceOrigin::Argument => {
                "a --since from another filesystem or from before a mkfs?".to_string()
            }
            SinceOrigin::StateFile(path) => format!(
                "the state file {} kept from another filesystem or from before a mkfs?",
                path.display()
            ),
            SinceOrigin::BeforePowerCut => {
                "the power cut lost the newest events before they reached the event log."
                    .to_string()
            }
        }
    }
}

/// Streams from the mount at `mountpoint` into `sink`; after a power cut
/// (the stream ends `restarted`), follows the new engine from the last id
/// seen.
fn follow_mount(
    mountpoint: &Path,
    since: u64,
    origin: SinceOrigin,
    follow: bool,
    mode: EventsMode,
    sink: &mut Sink,
) -> Result<(), Failure> {
    let mut since = since;
    let mut origin = origin;
    loop {
        match follow_once(mountpoint, &mut since, &origin, follow, mode, sink)? {
            (Some(last), true) => {
                since = last;
                origin = SinceOrigin::BeforePowerCut;
            }
            (None, true) => {}
            (_, false) => return Ok(()),
        }
    }
}

/// One stream: the last event id it carried, and whether it ended because
/// a power cut restarted the mount.
fn follow_once(
    mountpoint: &Path,
    since: &mut u64,
    origin: &SinceOrigin,
    follow: bool,
    mode: EventsMode,
    sink: &mut Sink,
) -> Result<(Option<u64>, bool), Failure> {
    let request = Request::Events {
        since: *since,
        follow,
        mode,
    };
    let (answer, mut reader) = client::open_stream(mountpoint, &request)
        .map_err(|error| error.into_failure("events", mountpoint))?;
    let ephemeral_from = answer["ephemeral_from"].as_u64();
    if let Sink::Hook(hook) = &mut *sink {
        let news = hook.ephemeral_from(ephemeral_from);
        if let Some(first) = ephemeral_from.filter(|_| news) {
            eprintln!(
                "vigilfs: events: {} keeps no event log (mounted read-only, or its log cannot \
                 be written): ids from {first} on are this mount's only, and a later mount \
                 gives them to other events. The state file stays below {first}: a restart \
                 runs these events again rather than skip later ones.",
                mountpoint.display()
            );
        }
    }
    // Short reads let a hook's held burst go out on time.
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|error| Failure::operational(format!("control socket: {error}")))?;
    let mut line = Vec::new();
    let mut last = None;
    loop {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                // A mount that still answers cut the stream itself: a
                // listener that read nothing for a minute (review 53: it
                // said only that the mount closed the stream). statfs
                // asks the mount process; a stat may be answered from the
                // kernel's cache after it died.
                let why = if vigilfs_fuse::statvfs_flags(mountpoint).is_ok() {
                    let after = last.unwrap_or(*since);
                    format!(
                        "the mount closed the stream while it still runs: it cuts off a \
                         listener that reads nothing for {} s. The events after #{after} are \
                         in its log: vigilfs events {} --since {after}",
                        STALL_LIMIT.as_secs(),
                        mountpoint.display()
                    )
                } else {
                    "the mount process closed the stream".to_string()
                };
                return Err(lost_contact(mountpoint, &why, sink));
            }
            Ok(_) if line.ends_with(b"\n") => {
                let value: Value = serde_json::from_slice(&line).map_err(|error| {
                    Failure::operational(format!("events: unreadable line from the mount: {error}"))
                })?;
                line.clear();
                if let Some(newest) = value["newest_id"]
                    .as_u64()
                    .filter(|&newest| *since > newest)
                {
                    let then = if follow {
                        format!("Following from {newest}")
                    } else {
                        "Nothing after it".to_string()
                    };
                    eprintln!(
                        "vigilfs: events: id {since} is beyond the newest event of {} ({newest}): \
                         {} {then}",
                        mountpoint.display(),
                        origin.likely_cause()
                    );
                    // As the server does; and kept, so that a restart (or a
                    // power cut's new stream) does not skip what comes next.
                    *since = newest;
                    if let Sink::Hook(hook) = sink {
                        hook.restart_after(newest)?;
                    }
                }
                if let Some(end) = value.get("end") {
                    return Ok((last, end == "restarted"));
                }
                if let Some(id) = value["id"].as_u64() {
                    last = Some(id);
                }
                if let Err(failure) = sink.event(value) {
                    return Err(unless_the_mount_died(mountpoint, &mut reader, failure));
                }
            }
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    IoErrorKind::WouldBlock | IoErrorKind::TimedOut
                ) =>
            {
                if let Err(failure) = sink.tick() {
                    return Err(unless_the_mount_died(mountpoint, &mut reader, failure));
                }
            }
            Err(error) if error.kind() == IoErrorKind::Interrupted => {}
            Err(error) => return Err(lost_contact(mountpoint, &error.to_string(), sink)),
        }
    }
}

fn now_nanoseconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// The stream broke before the mount's unmount event: the mount process
/// died (killed, crashed) or went without a word. A hook hears of it as a
/// `disconnected` event, made here (it has no id, and moves no state file
/// on), since nobody else would tell the operator: what the filesystem
/// recorded comes from the next mount. Returns the error the command ends
/// with.
fn lost_contact(mountpoint: &Path, why: &str, sink: &mut Sink) -> Failure {
    let failure = Failure::operational(format!("events: {}: {why}", mountpoint.display()));
    if let Sink::Hook(hook) = sink {
        let event = serde_json::json!({
            "kind": "disconnected",
            "time": crate::control::event_json::rfc3339(now_nanoseconds()),
            "reason": why,
        });
        // Events held for a burst (`--min-interval`) run first, in a run of
        // their own: the disconnect's must not carry them under its kind.
        let ran = hook
            .finish()
            .and_then(|()| hook.offer(event))
            .and_then(|()| hook.finish());
        // The mount's death is what the command ends with (exit 8, as
        // documented), whatever the hook made of it.
        if let Err(hook_failure) = ran {
            return Failure::operational(format!(
                "{failure}; then the hook, told of it, failed: {hook_failure}"
            ));
        }
    }
    failure
}

/// A hook that failed for good ends the command (exit 1), unless the
/// mount process died meanwhile (its stream ended without the unmount's
/// end line): then that is what the command ends with (exit 8), both
/// said. The hook's retries can take a minute, and a supervisor must tell
/// a dead mount from a broken hook (review 28). What the stream still
/// holds is read and dropped: the command ends either way, and those
/// events run after a restart.
fn unless_the_mount_died(
    mountpoint: &Path,
    reader: &mut impl BufRead,
    failure: Failure,
) -> Failure {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut line = Vec::new();
    while Instant::now() < deadline {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                return Failure::operational(format!(
                    "events: {}: the mount process died; {failure}",
                    mountpoint.display()
                ))
            }
            Ok(_)
                if serde_json::from_slice::<Value>(&line)
                    .is_ok_and(|value| value.get("end").is_some()) =>
            {
                return failure
            }
            Ok(_) => {}
            Err(error) if error.kind() == IoErrorKind::Interrupted => {}
            Err(_) => return failure,
        }
    }
    failure
}

/// Reads the event log of the unmounted image at `image` into `sink`.
fn read_image(image: &Path, since: u64, sink: &mut Sink) -> Result<(), Failure> {
    let _lock = match in_use::acquire(image, LockMode::Shared) {
        Ok(lock) => Some(lock),
        Err(AcquireError::Io(_)) => None,
        Err(refused) => {
            return Err(Failure::usage(format!(
                "{} (read a mounted filesystem's events with `vigilfs events MOUNTPOINT`)",
                refused.message(image)
            )))
        }
    };
    let device = FileDevice::open(
        image,
        FileDeviceOptions {
            read_only: true,
            ..FileDeviceOptions::default()
        },
    )
    .map_err(|error| Failure::operational(format!("cannot open {}: {error}", image.display())))?;
    let superblock = read_superblock(&device)
        .map_err(|error| Failure::operational(format!("{}: {error}", image.display())))?
        .superblock;
    let Some(region) = superblock.event_log else {
        return Err(Failure::usage(format!(
            "{}: the image has no event log (made with --event-log-size 0, or by a vigilfs \
             before event logs)",
            image.display()
        )));
    };
    let geometry = Geometry {
        region,
        block_size: superblock.layout.block_size,
    };
    let mut bytes = vec![0; geometry.bytes() as usize];
    device
        .read_at(geometry.start(), &mut bytes, IoClass::EventLog)
        .map_err(|error| {
            Failure::operational(format!(
                "{}: reading the event log: {error}",
                image.display()
            ))
        })?;
    let scan = scan_region(&bytes, &geometry, &superblock.uuid);
    let newest = scan
        .records
        .iter()
        .map(|record| record.id)
        .max()
        .unwrap_or(0);
    if since > newest {
        eprintln!(
            "vigilfs: events: id {since} is beyond the newest event of {} ({newest}): \
             a --since from another filesystem or from before a mkfs? Nothing after it",
            image.display()
        );
    }
    let mut after = since;
    // The running sum through `since`, while the log still holds that
    // record: a loss right after it is then counted exactly.
    let mut errors_before = match since {
        0 => Some(0),
        _ => scan
            .records
            .iter()
            .find(|record| record.id == since)
            .map(|record| record.errors_total),
    };
    let device: Arc<dyn BlockDevice> = Arc::new(device);
    let mut paths = OfflinePaths::new(image, device);
    for record in scan.records.iter().filter(|record| record.id > since) {
        if record.id > after + 1 {
            sink.event(gap_event(after + 1, record.id - 1, record, errors_before))?;
        }
        errors_before = Some(record.errors_total);
        let (path, deleted) = match record.inode {
            Some(ino) => paths.file_of(ino, record.generation),
            None => (None, None),
        };
        sink.event(record_json(record, path.as_deref(), deleted))?;
        after = record.id;
    }
    paths.close();
    if let Some(first) = scan
        .missing_after_clean_stop()
        .filter(|&first| superblock.state == FsState::Clean && first > since)
    {
        // How many went is unknown: the unmount's own, at least.
        sink.event(gap_json(
            first,
            first,
            None,
            "the newest events, the unmount's at least: the superblock says the filesystem \
             was unmounted cleanly, which writes an unmount event last, and it is not in the \
             log (damaged, or a crash came during the unmount)",
        ))?;
    }
    Ok(())
}

/// An event's file as the image says: its path, if found, and whether it
/// was deleted, if the image could say.
type EventFile = (Option<String>, Option<bool>);

/// The paths of the files an unmounted image's events name, looked up in
/// the image mounted read-only (what replay changes stays in memory), on
/// first need; each inode once.
struct OfflinePaths<'a> {
    image: &'a Path,
    device: Option<Arc<dyn BlockDevice>>,
    filesystem: Option<Filesystem>,
    known: HashMap<(u64, Option<u64>), EventFile>,
}

impl<'a> OfflinePaths<'a> {
    fn new(image: &'a Path, device: Arc<dyn BlockDevice>) -> OfflinePaths<'a> {
        OfflinePaths {
            image,
            device: Some(device),
            filesystem: None,
            known: HashMap::new(),
        }
    }

    /// A path of inode `ino`, if it is still the inode of `generation`,
    /// and whether that file was deleted (`None` when the image could not
    /// be opened to say).
    fn file_of(&mut self, ino: u64, generation: Option<u64>) -> EventFile {
        if let Some(file) = self.known.get(&(ino, generation)) {
            return file.clone();
        }
        if let Some(device) = self.device.take() {
            let options = MountOptions {
                read_only: true,
                ..MountOptions::default()
            };
            match Filesystem::mount(device, options) {
                Ok(filesystem) => self.filesystem = Some(filesystem),
                Err(error) => eprintln!(
                    "vigilfs: events: paths unknown: {} cannot be mounted read-only: {error}",
                    self.image.display()
                ),
            }
        }
        let filesystem = self.filesystem.as_ref();
        let deleted = filesystem.map(|filesystem| filesystem.is_deleted(ino, generation));
        let path = filesystem
            .filter(|filesystem| deleted != Some(true) && filesystem.is_same_inode(ino, generation))
            .and_then(|filesystem| filesystem.path_of(ino, PATH_SEARCH_BUDGET));
        self.known
            .insert((ino, generation), (path.clone(), deleted));
        (path, deleted)
    }

    fn close(self) {
        if let Some(filesystem) = self.filesystem {
            let _ = filesystem.unmount();
        }
    }
}
