//! The background writeback thread of a mount.
//!
//! It wakes every `writeback_interval`, or at once when a writer finds the
//! dirty data over its limit ([`Background::kick`]), and then: writes back
//! every dirty file (errors go into the errseq words and are reported to
//! the event stream and the error record: nobody else would hear of them),
//! makes every metadata change durable (the journal flushed), records
//! durability on the device
//! ([`crate::journal::Journal::settle_claims`]; all of it while blocks
//! freed wait for that record, so they become free), deletes the orphans
//! whose deletion found no space before,
//! lets the journal reclaim space if it wants to, and saves the error record
//! if it changed. Frozen, read-only and shut-down filesystems are left
//! alone.
//!
//! It must never die silently: a panic inside one round is caught, reported
//! as an error, and shuts the filesystem down (a bug in writeback means
//! further writes cannot be trusted); [`Background::stop`] returns an
//! error if the thread ended any way but being asked to.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::error::{FsError, FsResult};
use super::gate::LifeState;
use super::health::Incident;
use super::Shared;
use crate::format::ErrorKind;

#[derive(Default)]
struct Signal {
    kicked: bool,
    stop: bool,
}

struct Control {
    signal: Mutex<Signal>,
    wake: Condvar,
}

/// The running thread; stop it with [`Background::stop`].
pub(super) struct Background {
    control: Arc<Control>,
    thread: JoinHandle<Result<(), String>>,
}

impl Background {
    pub(super) fn start(shared: Arc<Shared>) -> std::io::Result<Background> {
        let control = Arc::new(Control {
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
        });
        let thread = {
            let control = Arc::clone(&control);
            std::thread::Builder::new()
                .name("vigilfs-writeback".into())
                .spawn(move || run(&shared, &control))?
        };
        Ok(Background { control, thread })
    }

    /// Wakes the thread for a round now.
    pub(super) fn kick(&self) {
        let mut signal = self
            .control
            .signal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        signal.kicked = true;
        self.control.wake.notify_one();
    }

    /// Asks the thread to stop after its round in progress, if any,
    /// without waiting for it.
    pub(super) fn request_stop(&self) {
        let mut signal = self
            .control
            .signal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        signal.stop = true;
        self.control.wake.notify_one();
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(self) -> FsResult<()> {
        self.request_stop();
        match self.thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(FsError::ShutDown(why)),
            Err(_) => Err(FsError::ShutDown(
                "the writeback thread panicked outside a round".into(),
            )),
        }
    }
}

fn run(shared: &Shared, control: &Control) -> Result<(), String> {
    loop {
        {
            let signal = control
                .signal
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (mut signal, _) = control
                .wake
                .wait_timeout_while(signal, shared.settings.writeback_interval(), |signal| {
                    !signal.kicked && !signal.stop
                })
                .unwrap_or_else(PoisonError::into_inner);
            if signal.stop {
                return Ok(());
            }
            signal.kicked = false;
        }
        if shared.gate.state() != LifeState::Running {
            continue;
        }
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| round(shared))) {
            let why = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let why = format!("the writeback thread panicked: {why}");
            eprintln!("vigilfs: {why}; shutting the filesystem down");
            shared.health.report(&Incident {
                kind: ErrorKind::Other,
                errno: libc::EIO,
                inode: None,
                range: None,
                block: None,
                origin: "writeback thread",
            });
            shared.shut_down_now(why.clone(), false);
            return Err(why);
        }
    }
}

/// One round: write back, reclaim, save the error record.
fn round(shared: &Shared) {
    // Failures are reported by the data path's listener when the error
    // words are set (once per failure of new data, not per retry).
    let _ = shared.files.writeback_all();
    // Record on the device that the data claims fsync made durable are:
    // until then a crash leaves replay checking them, and a block that
    // rotted meanwhile would cut its entry off with everything after it
    // (see the journal's data claims). This bounds that window to one
    // interval. As a writer, so a freeze that began meanwhile is not
    // written after; a failure is the journal's and is reported by the next
    // line, or tried again next round.
    // Blocks a delete freed count as free only once that is recorded too:
    // on a filesystem gone idle nothing else would record it, and status
    // and metrics would show them pending for ever.
    if let Ok(_writer) = shared.gate.try_enter() {
        // Orphans whose deletion found no space: a round may find some.
        shared.purge_deferred_orphans();
        // Metadata changes alone (a mkdir, a rename on a mount writing no
        // data) become durable here too, within an interval as ext4's
        // commit= does: nothing else flushes them, and a crash any time
        // later undid them (review 42).
        let journal = &shared.metadata.journal;
        let _ = if shared.metadata.allocator.pending_blocks() > 0 {
            journal.settle()
        } else {
            journal.flush().and_then(|()| journal.settle_claims())
        };
    }
    shared.check_journal("background writeback");
    shared.check_node_writeback();
    if let Err(error) = shared.metadata.journal.reclaim_if_needed() {
        shared.on_error(
            "journal reclaim",
            None,
            &FsError::File(crate::inode::FileError::Journal(error)),
        );
    }
    shared.check_reclaim();
    shared.save_error_record();
}
