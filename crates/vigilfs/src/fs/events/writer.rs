//! The thread that writes the event log: it wakes when a record is made
//! (or the tally, or the reservation, needs it), writes what is new and
//! flushes, so an event is durable moments after it happened, whatever
//! the journal does. A failing region is retried with a growing pause (at
//! most [`MAX_BACKOFF`]) and never stops the thread, not even for a freeze
//! (errors seen while frozen must outlive a crash before the thaw).
//!
//! Invariant: the thread touches only the event log, never the rest of
//! the filesystem, so nothing it does can report an error that would come
//! back to it.

use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::EventLog;

/// Longest pause between attempts on a failing region.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The running writer; [`Writer::stop`] ends it after a last write.
pub(crate) struct Writer {
    log: Arc<EventLog>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn start(log: Arc<EventLog>) -> std::io::Result<Writer> {
        let thread = {
            let log = Arc::clone(&log);
            std::thread::Builder::new()
                .name("vigilfs-eventlog".into())
                .spawn(move || run(&log))?
        };
        Ok(Writer {
            log,
            thread: Some(thread),
        })
    }

    /// Writes what is left and stops the thread; the log is closed for
    /// listeners once they have read it all.
    pub(crate) fn stop(mut self) {
        self.stop_now(true);
    }

    /// Stops the thread without writing anything more (a dropped mount is
    /// a power cut).
    pub(crate) fn abandon(mut self) {
        self.stop_now(false);
    }

    fn stop_now(&mut self, write: bool) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.log.state().stopping = true;
        self.log.changed.notify_all();
        let _ = thread.join();
        if write {
            let _ = self.log.persist();
        }
        self.log.close();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop_now(false);
    }
}

fn run(log: &EventLog) {
    let mut backoff = Duration::ZERO;
    let mut retry_at = Instant::now();
    loop {
        {
            let mut state = log.state();
            loop {
                if state.stopping {
                    return;
                }
                let now = Instant::now();
                if log.has_work(&state) && now >= retry_at {
                    break;
                }
                let wait = if log.has_work(&state) {
                    retry_at.saturating_duration_since(now)
                } else {
                    log.idle_wait(&state)
                };
                state.waiting += 1;
                state = log
                    .changed
                    .wait_timeout(state, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                state.waiting -= 1;
            }
        }
        match log.persist() {
            Ok(()) => backoff = Duration::ZERO,
            Err(_) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
                retry_at = Instant::now() + backoff;
            }
        }
    }
}
