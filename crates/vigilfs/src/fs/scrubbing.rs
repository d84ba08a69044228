//! Scrub on a mounted filesystem: [`Filesystem::scrub`], the background
//! scrub thread (`scrub_interval`), and where an interrupted scrub
//! resumes.
//!
//! Each finding of [`crate::scrub`] is handled on the scrubbing thread as
//! a failure notice (see `media.rs`), so the summary says what was healed
//! and what was lost. Foreground I/O keeps priority: before each read the
//! scrub waits while reads and writes keep arriving (it checks the
//! foreground counter every [`QUIET`], giving up after [`MOST_WAIT`] so it
//! always moves), and `rate` caps its bytes per second.
//!
//! Resuming: where a scrub stopped (asked to, or at unmount) is kept in
//! memory and in the Meta tree, `b"scrub-cursor"` → version 1 u8 | phase
//! u8 | next block u64 LE | time u64 LE; the next scrub starts there
//! unless asked to restart, and a finished scrub removes it. One scrub
//! runs at a time.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::health::{Detail, Incident};
use super::{Filesystem, FsError, FsResult, LifeState, Shared};
use crate::btree::TreeId;
use crate::device::ByteRange;
use crate::failure::{handling_own_failures, Origin, Source};
use crate::format::ErrorKind;
use crate::scrub::{
    self, Cursor, Finding, Phase, Progress, ScrubOptions, ScrubSink, Scrubber, Unreadable,
};

/// How long the scrub sleeps between looks at the foreground counter.
const QUIET: Duration = Duration::from_millis(2);

/// The longest the scrub waits for foreground I/O before one read.
const MOST_WAIT: Duration = Duration::from_millis(250);

/// How long a scrub waits for the one before it to end. One whose
/// requester went away ends within a read, a wait for foreground I/O and
/// its cursor's commit; the scrub started right after it (a Ctrl-C, then
/// the same command again) resumes where it stopped rather than being
/// refused as a second scrub.
const ENDING_WAIT: Duration = Duration::from_secs(1);

const CURSOR_KEY: &[u8] = b"scrub-cursor";
const CURSOR_VERSION: u8 = 1;

/// How to scrub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubRequest {
    /// Most bytes per second; `None`: as fast as foreground I/O allows.
    pub rate: Option<u64>,
    /// Start from the beginning even if an earlier scrub was interrupted.
    pub restart: bool,
}

/// What one scrub did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubSummary {
    /// Bytes read and verified.
    pub bytes: u64,
    /// Failures found.
    pub findings: u64,
    /// Owners those failures hit (files, nodes, journal, superblocks).
    pub owners_hit: u64,
    /// Blocks saved to new blocks.
    pub healed_blocks: u64,
    /// Blocks lost.
    pub lost_blocks: u64,
    /// Reads that failed for another reason than the medium.
    pub unreadable: u64,
    /// Extents whose checksums could not be read (their b-tree node is
    /// damaged, itself a finding): their data was not verified.
    pub unverified: u64,
    /// Runs of file data known lost when it ended (its findings and
    /// earlier ones not rewritten since): errors left, for a caller that
    /// cannot ask the mount afterwards (an unmount stopped the scrub).
    pub poisoned_runs: u64,
    /// Runs of file data recorded lost before they reached the device (a
    /// refused write-back of a shared mapping, data an unmount ended
    /// without; see `crate::lost_data`) when it ended: errors left too,
    /// though no block is bad.
    pub lost_data_runs: u64,
    /// How long it ran.
    pub elapsed: Duration,
    /// Whether it reached the end (else `cursor` says where it stopped).
    pub complete: bool,
    /// Where it started, when it resumed an interrupted scrub.
    pub resumed_from: Option<Cursor>,
    /// Where it stopped.
    pub cursor: Cursor,
}

/// Scrub's part of the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubStatus {
    /// Progress of the scrub running now.
    pub running: Option<Progress>,
    /// Where the next scrub resumes.
    pub resume_at: Option<Cursor>,
    /// The last scrub that ended, and when (seconds since the epoch).
    pub last: Option<(ScrubSummary, u64)>,
    /// The background scrub's interval.
    pub interval: Option<Duration>,
}

#[derive(Default)]
struct ScrubState {
    resume: Option<Cursor>,
    running: Option<Progress>,
    last: Option<(ScrubSummary, u64)>,
}

/// One scrub at a time, and what status shows of them.
#[derive(Default)]
pub(crate) struct ScrubControl {
    one_at_a_time: Mutex<()>,
    state: Mutex<ScrubState>,
    /// Wakes the background thread to stop.
    wake: Condvar,
    stop: Mutex<bool>,
}

impl ScrubControl {
    fn state(&self) -> MutexGuard<'_, ScrubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn encode_cursor(cursor: Cursor) -> Vec<u8> {
    let mut value = vec![CURSOR_VERSION, cursor.phase.code()];
    value.extend_from_slice(&cursor.block.to_le_bytes());
    value.extend_from_slice(&crate::failure::seconds_now().to_le_bytes());
    value
}

fn decode_cursor(value: &[u8]) -> Option<Cursor> {
    if value.len() != 18 || value[0] != CURSOR_VERSION {
        return None;
    }
    let phase = Phase::from_code(value[1])?;
    let mut block = [0u8; 8];
    block.copy_from_slice(&value[2..10]);
    Some(Cursor {
        phase,
        block: u64::from_le_bytes(block),
    })
}

/// Reports a scrub's findings as failures, its progress to the caller,
/// and holds it back for foreground I/O.
struct LiveSink<'a> {
    shared: &'a Shared,
    summary: ScrubSummary,
    progress: &'a mut dyn FnMut(&Progress) -> bool,
    seen: u64,
}

impl ScrubSink for LiveSink<'_> {
    fn finding(&mut self, finding: &Finding) -> ControlFlow<()> {
        let origin = Origin::new(finding.cause, Source::Scrub, &finding.what);
        match self.shared.handle_direct_notice(finding.range, origin) {
            Ok(report) => {
                // Scrub skips what was lost before it read: a block it
                // found that is lost "already" was lost by this failure,
                // through the read path's notice of it handled first.
                let (owners, blocks) = report.already_lost();
                self.summary.owners_hit += report.owners_hit() + owners;
                self.summary.healed_blocks += report.healed_blocks();
                self.summary.lost_blocks += report.lost_blocks() + blocks;
            }
            Err(error) => {
                let _ = self.shared.observe("scrub", Err::<(), _>(error));
            }
        }
        self.go_on()
    }

    fn unreadable(&mut self, unreadable: &Unreadable) {
        // An error the filesystem met, as a foreground read's is (review
        // 50: nothing said the scrub could not read). Event texts are
        // short: what matters first. Nothing is marked or moved for a path
        // failure.
        let range = unreadable.range;
        let origin = format!(
            "scrub could not read {}, not verified (a path error, not the medium's): {}",
            unreadable.what, unreadable.error
        );
        let file = unreadable
            .file
            .map(|(ino, offset)| ((ino, self.shared.generation_of(ino)), (offset, range.len())));
        self.shared.health.report_with(
            &Incident {
                kind: if file.is_some() {
                    ErrorKind::Read
                } else {
                    ErrorKind::Metadata
                },
                errno: unreadable.error.errno().0,
                inode: file.map(|(inode, _)| inode),
                range: file.map(|(_, bytes)| bytes),
                block: Some(range.start / 4096),
                origin: &origin,
            },
            &Detail {
                device_range: Some((range.start, range.len())),
                ..Detail::default()
            },
        );
    }

    fn poisoned_block_reads_back(&mut self, ino: u64, extent_offset: u64, index: u64) {
        match self.shared.heal_poison(ino, extent_offset, index) {
            Ok(true) => self.summary.healed_blocks += 1,
            Ok(false) => {}
            Err(error) => {
                let _ = self.shared.observe("scrub", Err::<(), _>(error));
            }
        }
    }

    fn progress(&mut self, progress: &Progress) -> ControlFlow<()> {
        self.shared.media.scrub.state().running = Some(*progress);
        if !(self.progress)(progress) {
            return ControlFlow::Break(());
        }
        self.go_on()
    }

    fn keep_waiting(&mut self, progress: &Progress) -> bool {
        self.go_on().is_continue() && (self.progress)(progress)
    }

    fn pause(&mut self) {
        let deadline = Instant::now() + MOST_WAIT;
        let foreground = &self.shared.media.foreground;
        loop {
            let now = foreground.load(Ordering::Acquire);
            if now == self.seen || Instant::now() >= deadline {
                self.seen = now;
                return;
            }
            self.seen = now;
            std::thread::sleep(QUIET);
        }
    }
}

impl LiveSink<'_> {
    fn go_on(&self) -> ControlFlow<()> {
        // An unmount or a shutdown stops it (the next scrub resumes).
        if self.shared.media.stopping.load(Ordering::Acquire)
            || matches!(self.shared.gate.state(), LifeState::ShutDown(_))
        {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Shared {
    /// Where an interrupted scrub of an earlier mount stopped.
    pub(super) fn load_scrub_cursor(&self) {
        if let Ok(Some(value)) = self.metadata.trees.get(TreeId::Meta, CURSOR_KEY) {
            self.media.scrub.state().resume = decode_cursor(&value);
        }
    }

    /// Keeps where the next scrub starts, in memory and (when the
    /// filesystem may write) in the Meta tree.
    fn save_scrub_cursor(&self, cursor: Option<Cursor>) {
        self.media.scrub.state().resume = cursor;
        let Ok(_writer) = self.gate.try_enter() else {
            return;
        };
        if self.mounted_read_only.load(Ordering::Acquire)
            || self.transport_read_only.load(Ordering::Acquire)
        {
            return;
        }
        let mut transaction = self.metadata.trees.transaction();
        let staged = match cursor {
            Some(cursor) => transaction.put(TreeId::Meta, CURSOR_KEY, &encode_cursor(cursor)),
            None => transaction.delete(TreeId::Meta, CURSOR_KEY),
        };
        if staged.is_ok() {
            // Losing the cursor only means the next scrub starts over.
            let _ = transaction.commit();
        }
    }

    /// One scrub (see the module comment).
    pub(super) fn scrub(
        &self,
        request: ScrubRequest,
        progress: &mut dyn FnMut(&Progress) -> bool,
    ) -> FsResult<ScrubSummary> {
        if let LifeState::ShutDown(why) = self.gate.state() {
            // Nothing it found could be healed or recorded: the image can
            // be scrubbed once unmounted.
            return Err(FsError::ShutDown(why));
        }
        let Some(_one) = lock_within(&self.media.scrub.one_at_a_time, ENDING_WAIT) else {
            return Err(FsError::Busy("a scrub is running already"));
        };
        let resume = self.media.scrub.state().resume;
        let from = match resume {
            Some(cursor) if !request.restart => cursor,
            _ => Cursor::START,
        };
        let layout = self.superblock().layout;
        let scrubber = Scrubber {
            metadata: &self.metadata,
            device: self.device.as_ref(),
            layout,
            // Read from a mount (or fsck's data pass): nothing torn passes.
            after_crash: false,
        };
        let mut sink = LiveSink {
            shared: self,
            summary: ScrubSummary {
                bytes: 0,
                findings: 0,
                owners_hit: 0,
                healed_blocks: 0,
                lost_blocks: 0,
                unreadable: 0,
                unverified: 0,
                poisoned_runs: 0,
                lost_data_runs: 0,
                elapsed: Duration::ZERO,
                complete: false,
                resumed_from: (from != Cursor::START).then_some(from),
                cursor: from,
            },
            progress,
            seen: self.media.foreground.load(Ordering::Acquire),
        };
        let options = ScrubOptions {
            rate: request.rate,
            data_only: false,
        };
        let whole_device = ByteRange::new(0, u64::MAX);
        let outcome = handling_own_failures(whole_device, || {
            scrub::run(&scrubber, from, options, &mut sink)
        });
        let mut summary = sink.summary;
        self.media.scrub.state().running = None;
        let stats = outcome.map_err(FsError::Scrub)?;
        summary.bytes = stats.bytes;
        summary.findings = stats.findings;
        summary.unreadable = stats.unreadable;
        summary.unverified = stats.unverified;
        summary.poisoned_runs = self.metadata.poison.all().len() as u64;
        summary.lost_data_runs = self.metadata.lost.all().len() as u64;
        summary.elapsed = stats.elapsed;
        summary.cursor = stats.cursor;
        summary.complete = stats.cursor.phase == Phase::Done;
        self.save_scrub_cursor((!summary.complete).then_some(stats.cursor));
        self.media.scrub.state().last = Some((summary, crate::failure::seconds_now()));
        Ok(summary)
    }

    pub(super) fn scrub_status(&self) -> ScrubStatus {
        let state = self.media.scrub.state();
        ScrubStatus {
            running: state.running,
            resume_at: state.resume,
            last: state.last,
            interval: self.options.scrub_interval,
        }
    }
}

/// The lock of `mutex`, if it comes free within `limit`. A panicked
/// scrub's lock guards nothing but the turn.
fn lock_within(mutex: &Mutex<()>, limit: Duration) -> Option<MutexGuard<'_, ()>> {
    let deadline = Instant::now() + limit;
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

/// The background scrub (`scrub_interval`): a scrub every interval,
/// resuming where the last one stopped.
pub(super) struct BackgroundScrub {
    thread: JoinHandle<()>,
}

impl BackgroundScrub {
    pub(super) fn start(
        shared: Arc<Shared>,
        interval: Duration,
    ) -> std::io::Result<BackgroundScrub> {
        let thread = std::thread::Builder::new()
            .name("vigilfs-scrub".into())
            .spawn(move || loop {
                let control = &shared.media.scrub;
                let stop = control.stop.lock().unwrap_or_else(PoisonError::into_inner);
                let (stop, _) = control
                    .wake
                    .wait_timeout_while(stop, interval, |stop| !*stop)
                    .unwrap_or_else(PoisonError::into_inner);
                if *stop {
                    return;
                }
                drop(stop);
                let request = ScrubRequest {
                    rate: shared.options.scrub_rate,
                    restart: false,
                };
                if let Err(error) = shared.scrub(request, &mut |_| true) {
                    let _ = shared.observe("background scrub", Err::<(), _>(error));
                }
            })?;
        Ok(BackgroundScrub { thread })
    }

    pub(super) fn stop(self, shared: &Shared) {
        *shared
            .media
            .scrub
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        shared.media.scrub.wake.notify_all();
        let _ = self.thread.join();
    }
}

impl Filesystem {
    /// Scrubs the filesystem (see the module comment): every used block
    /// read and verified, every failure handled as a notice from scrub.
    /// `progress` hears where it is now and then; returning `false` stops
    /// it (the next scrub resumes there). `EBUSY` while another runs.
    pub fn scrub(
        &self,
        request: ScrubRequest,
        progress: &mut dyn FnMut(&Progress) -> bool,
    ) -> FsResult<ScrubSummary> {
        self.shared.scrub(request, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_roundtrip_and_garbage_is_ignored() {
        let cursor = Cursor {
            phase: Phase::Main,
            block: 123_456,
        };
        assert_eq!(decode_cursor(&encode_cursor(cursor)), Some(cursor));
        let mut value = encode_cursor(cursor);
        value[1] = 9;
        assert_eq!(decode_cursor(&value), None);
        assert_eq!(decode_cursor(&value[..5]), None);
        value[0] = 2;
        assert_eq!(decode_cursor(&value), None);
    }
}
