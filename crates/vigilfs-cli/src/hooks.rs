//! `vigilfs events --exec CMD`: act on events, as ZED's zedlets do.
//!
//! Each event (or, with `--min-interval`, each burst of events) runs
//! `sh -c CMD` once, with the event in `VIGILFS_*` variables (the last
//! event of a burst; `VIGILFS_EVENTS` says how many) and the events as
//! JSON lines on stdin. A run that fails (non-zero exit, or killed after
//! `--timeout`, its whole process group with it) is retried after 1, 2,
//! 4... seconds, `--retries` times; then the command exits 1, so a
//! supervisor (the systemd unit in `contrib/`) restarts it.
//!
//! Invariant: the state file names the last id whose events all ran
//! successfully (or were not wanted), and it is written — to a temporary
//! file, synced, renamed over, the directory synced — only after the run
//! succeeded. So a restart resumes right after it: nothing handled runs
//! again, nothing unhandled is skipped. Ids a mount keeps in memory only
//! (a read-only mount: a later mount hands them out again) never reach
//! the state file: their events may run again after a restart, but no
//! later event is skipped for them.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::failure::Failure;

/// What the hook runs and how.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The shell command.
    pub command: String,
    /// Where the last handled id is kept.
    pub state: Option<PathBuf>,
    /// Kinds wanted (empty: all).
    pub kinds: Vec<String>,
    /// Longest a run may take.
    pub timeout: Duration,
    /// Retries after a failed run.
    pub retries: u32,
    /// Least time between the starts of two runs.
    pub min_interval: Option<Duration>,
    /// The mount point (or image), for `VIGILFS_MOUNTPOINT`.
    pub mountpoint: String,
}

/// A hook in progress.
#[derive(Debug)]
pub struct Hook {
    config: HookConfig,
    pending: Vec<Value>,
    /// The newest id seen (run or not wanted).
    seen_through: Option<u64>,
    last_start: Option<Instant>,
    resume: u64,
    /// The first id the current stream's mount keeps in memory only.
    ephemeral_from: Option<u64>,
}

const KINDS: [&str; 14] = [
    "error",
    "lost",
    "running",
    "mount",
    "recovery",
    "errors_action",
    "freeze",
    "thaw",
    "faults",
    "shutdown",
    "unmount",
    "settings",
    "disconnected",
    "all",
];

fn text_of(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

impl Hook {
    /// A hook; reads the state file, if there is one.
    pub fn new(config: HookConfig) -> Result<Hook, Failure> {
        for kind in &config.kinds {
            if !KINDS.contains(&kind.as_str()) {
                return Err(Failure::arguments(format!(
                    "--kinds: unknown kind `{kind}` (use {})",
                    KINDS.join(", ")
                )));
            }
        }
        // A state file that cannot be used is a mistake in the command
        // line, exit 2: exit 1 is the code a supervisor restarts on, and a
        // restart meets the same file (review 53: a file made by `touch`
        // restarted the command for ever). An empty one is a new one.
        let resume = match &config.state {
            None => 0,
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) if text.trim().is_empty() => 0,
                Ok(text) => text.trim().parse().map_err(|_| {
                    Failure::arguments(format!(
                        "state file {}: `{}` is not an event id (remove the file to start from \
                         the first event)",
                        path.display(),
                        text.trim()
                    ))
                })?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
                Err(error) => {
                    return Err(Failure::arguments(format!(
                        "state file {}: {error}",
                        path.display()
                    )))
                }
            },
        };
        Ok(Hook {
            config,
            pending: Vec::new(),
            seen_through: None,
            last_start: None,
            resume,
            ephemeral_from: None,
        })
    }

    /// The id the state file says was handled last (0 if none).
    pub fn resume_after(&self) -> u64 {
        self.resume
    }

    /// What a (new) stream said of its ids: from `first` on they are its
    /// mount's only, and the state file keeps nothing at or above it
    /// (`None`: every id is kept in the image). Returns whether that is
    /// news worth telling.
    pub fn ephemeral_from(&mut self, first: Option<u64>) -> bool {
        let news = first.is_some() && self.ephemeral_from != first;
        self.ephemeral_from = first;
        news
    }

    /// Takes `id` as the last handled, below what the state file said (an
    /// id from another log), and saves it.
    pub fn restart_after(&mut self, id: u64) -> Result<(), Failure> {
        self.resume = id;
        self.seen_through = Some(id);
        self.save_state()
    }

    fn wanted(&self, event: &Value) -> bool {
        let kind = event.get("kind").and_then(Value::as_str).unwrap_or("");
        // A stream's own RUNNING line is not an event of the filesystem:
        // only asked for by name.
        let all = kind != "running";
        let kinds = &self.config.kinds;
        (kinds.is_empty() && all)
            || kinds
                .iter()
                .any(|wanted| (wanted == "all" && all) || wanted == kind)
    }

    /// Takes one event: runs it now, or holds it for the next run.
    pub fn offer(&mut self, event: Value) -> Result<(), Failure> {
        let id = event.get("id").and_then(Value::as_u64);
        if let Some(id) = id {
            self.seen_through = Some(self.seen_through.map_or(id, |seen| seen.max(id)));
        }
        if self.wanted(&event) {
            self.pending.push(event);
        } else if self.pending.is_empty() {
            // Nothing before it waits: not wanted counts as handled.
            self.save_state()?;
            return Ok(());
        }
        self.tick()
    }

    /// Runs what is held if the interval allows.
    pub fn tick(&mut self) -> Result<(), Failure> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let (Some(interval), Some(last)) = (self.config.min_interval, self.last_start) {
            if last.elapsed() < interval {
                return Ok(());
            }
        }
        self.run_pending()
    }

    /// Runs what is held, whatever the interval (the stream ended).
    pub fn finish(&mut self) -> Result<(), Failure> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.run_pending()
    }

    fn run_pending(&mut self) -> Result<(), Failure> {
        let events = std::mem::take(&mut self.pending);
        let mut wait = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            self.last_start = Some(Instant::now());
            match self.run_once(&events) {
                Ok(()) => break,
                Err(why) if attempt < self.config.retries => {
                    eprintln!(
                        "vigilfs events: hook failed ({why}); retrying in {} s",
                        wait.as_secs()
                    );
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(60));
                    attempt += 1;
                }
                Err(why) => {
                    return Err(Failure::usage(format!(
                        "events: the hook failed {} ({why}); stopping so the event is not \
                         skipped (it runs again when restarted{})",
                        match attempt {
                            0 => "once".to_string(),
                            _ => format!("{} times", attempt + 1),
                        },
                        if self.config.state.is_some() {
                            ", from the state file"
                        } else {
                            ""
                        }
                    )))
                }
            }
        }
        self.save_state()
    }

    fn run_once(&self, events: &[Value]) -> Result<(), String> {
        let last = events.last().cloned().unwrap_or(Value::Null);
        let variable = |name: &str| text_of(last.get(name).unwrap_or(&Value::Null));
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.config.command)
            .stdin(Stdio::piped())
            .env("VIGILFS_EVENT_ID", variable("id"))
            .env("VIGILFS_KIND", variable("kind"))
            .env("VIGILFS_TIME", variable("time"))
            .env("VIGILFS_ERRNO", variable("errno"))
            .env("VIGILFS_SUBTYPES", variable("subtypes"))
            .env("VIGILFS_INODE", variable("inode"))
            .env("VIGILFS_GENERATION", variable("generation"))
            .env("VIGILFS_PATH", variable("path"))
            .env("VIGILFS_OFFSET", variable("offset"))
            .env("VIGILFS_LENGTH", variable("length"))
            .env("VIGILFS_COUNT", variable("count"))
            // A stream of one error across files (writeback retries)
            // names its first file above and its last here; the origin
            // tells it from one file's repeats (review 45).
            .env("VIGILFS_LAST_INODE", variable("last_inode"))
            .env(
                "VIGILFS_ORIGIN",
                match last.get("origin").filter(|origin| !origin.is_null()) {
                    Some(origin) => text_of(origin),
                    // What happened, for the events that are not errors.
                    None => variable("action"),
                },
            )
            .env("VIGILFS_MOUNTPOINT", &self.config.mountpoint)
            .env(
                "VIGILFS_FIRST_EVENT_ID",
                text_of(events[0].get("id").unwrap_or(&Value::Null)),
            )
            .env("VIGILFS_EVENTS", events.len().to_string())
            // Its own process group: a timeout kills everything it started.
            .process_group(0);
        let listener = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls
        // (prctl, getppid, _exit) run, on no memory of the parent's.
        unsafe {
            command.pre_exec(move || {
                // The hook dies with the listener (killed, or Ctrl-C)
                // rather than run on as an orphan.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != listener {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot run sh: {error}"))?;
        // The events go in from a thread of their own: a hook that does not
        // read more than a pipe holds (64 KiB) must still meet its timeout.
        // Killing it closes the pipe, which ends the write.
        // Not waited for: a process that left the hook's group may keep the
        // pipe open without reading, and the listener must go on.
        if let Some(mut stdin) = child.stdin.take() {
            let mut input = Vec::new();
            for event in events {
                input.extend_from_slice(event.to_string().as_bytes());
                input.push(b'\n');
            }
            std::thread::spawn(move || {
                // A command that does not read its input is no failure.
                let _ = stdin.write_all(&input);
            });
        }
        self.wait_within_timeout(&mut child)
    }

    /// Waits for the hook, killing its process group at the timeout.
    fn wait_within_timeout(&self, child: &mut std::process::Child) -> Result<(), String> {
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("it exited with {status}")),
                Ok(None) if started.elapsed() >= self.config.timeout => {
                    // SAFETY: signalling the process group we created.
                    unsafe {
                        libc::kill(-(child.id() as i32), libc::SIGKILL);
                    }
                    let _ = child.wait();
                    return Err(format!(
                        "it took longer than {} s and was killed",
                        self.config.timeout.as_secs_f64()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(error) => return Err(format!("waiting for it: {error}")),
            }
        }
    }

    /// Writes the newest id seen into the state file, atomically.
    fn save_state(&self) -> Result<(), Failure> {
        let (Some(path), Some(mut id)) = (&self.config.state, self.seen_through) else {
            return Ok(());
        };
        if let Some(first) = self.ephemeral_from {
            id = id.min(first.saturating_sub(1));
        }
        let failed = |error: std::io::Error| {
            Failure::operational(format!("state file {}: {error}", path.display()))
        };
        let mut temporary = path.clone().into_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut file = std::fs::File::create(&temporary).map_err(failed)?;
        writeln!(file, "{id}").map_err(failed)?;
        file.sync_all().map_err(failed)?;
        std::fs::rename(&temporary, path).map_err(failed)?;
        let directory = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::File::open(directory)
            .and_then(|directory| directory.sync_all())
            .map_err(failed)
    }
}
