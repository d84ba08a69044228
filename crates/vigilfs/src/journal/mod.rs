//! The journal: an ordered, checksummed log of metadata updates in a ring.
//!
//! Every metadata change is first appended to the journal; objects that
//! hold the change in memory (dirty b-tree nodes) pin the entry until they
//! are written elsewhere, and only then may the ring space be reused. At
//! mount, [`Journal::open`] replays what is still needed.
//!
//! # Moving parts
//!
//! * Sequence numbers: each entry has one, never reused, never going
//!   backwards across mounts.
//! * Four buffers. One holds the open entry; the others may be waiting for
//!   their last reservation or being written, so a new entry can open while
//!   the previous one is on its way to the device.
//! * Reservations ([`Journal::reserve`], `reserve.rs`) take room in the
//!   open entry with one CAS on a packed state word (`state.rs`). A buffer
//!   is written by whoever drops its last reference: the last reservation
//!   holder, or the closer if nobody holds one.
//! * Pins (`pins.rs`; reclaim in `reclaim.rs`): a FIFO of pin lists, one
//!   per seq. `last_seq`, the front, is written into every entry; replay
//!   starts there.
//! * The ring (`ring.rs`): entries occupy whole blocks of the journal
//!   region. Space is reused only below the `last_seq` recorded by the
//!   newest *durable* entry, so a crash always finds that entry and
//!   everything it needs.
//! * Durability (`durability.rs`): [`Journal::flush_seq`] waits for the
//!   entries up to `seq` to be written, then one device flush serves every
//!   waiter whose entry was written before it started. Flushers queue
//!   before closing their entry, so concurrent committers share entries
//!   and flushes (group commit).
//! * Errors are sticky: a failed write or flush moves the state word to
//!   the ERROR sentinel, so every later reservation and flush fails and no
//!   later call claims durability.
//! * [`Journal::block`] / [`Journal::unblock`]: the freeze primitive.
//! * A commit companion ([`Journal::set_commit_companion`]) writes what it
//!   keeps (the event log) right before each device flush of a commit, so
//!   that flush makes it durable too. It must not call into the journal.
//! * Data claims ([`Reservation::claim`]): an entry that names file data
//!   written just before it says which blocks hold which checksums. One
//!   device flush after the entry then makes both durable; a crash before
//!   it may keep the entry without the data, and replay cuts such an entry
//!   off as torn (the preflush ext4 and bcachefs issue for ordered data is
//!   not needed). Replay can only check entries above the newest
//!   `durable_seq` an entry on the device records, so a block an entry
//!   claimed must not be overwritten until that record has passed the
//!   claiming entry: the allocator reuses freed blocks only up to
//!   [`JournalStatus::recorded_durable_seq`]. [`Journal::settle`] moves
//!   it up when space is short; [`Journal::settle_claims`] after a recovery
//!   and every writeback interval, which bounds the window in which a
//!   block that rots after its fsync would make replay cut its entry off.
//!
//! # Locking
//!
//! `inner` (a mutex) guards the slow-path state: buffer metadata, pins,
//! the ring, the seq counters. No device I/O happens under it. Each
//! buffer's bytes have their own mutex, held only to copy records in and to
//! seal and write the entry. `flush_lock` serialises flushers (lock order:
//! `flush_lock`, then `inner`, then a buffer's bytes).

mod durability;
mod entry;
mod pins;
mod reclaim;
mod replay;
mod reserve;
mod ring;
mod state;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::device::{BlockDevice, DeviceError, IoClass};
use crate::format::{FsState, Layout, Superblock};
use crate::sync::Condvar;
use entry::HEADER_BYTES;
pub use entry::{
    decode_entry, decode_header, record_bytes, DataClaim, DecodedEntry, EntryError, EntryHeader,
};
use pins::PinFifo;
pub use replay::{RecoveryReport, Replay, ReplayedEntry};
pub use reserve::Reservation;
use ring::Ring;
use state::{
    ReservationState, BUFFER_COUNT, MAX_ENTRY_BYTES, OFFSET_BLOCKED, OFFSET_CLOSED, OFFSET_ERROR,
};

/// Entries the ring must hold: every entry is given a full entry's room, and
/// reclaim keeps two entries' worth free for itself (a quarter of the ring).
const MIN_ENTRIES_PER_RING: u64 = 8;

/// Reclaim passes one reservation may run before the journal is called full.
const MAX_RECLAIM_ROUNDS: u32 = 3;

/// Longest a contended flusher waits for others to join its entry.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// Where the journal lives on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRegion {
    /// Byte offset of the first block.
    pub start: u64,
    /// Length in bytes, a multiple of `block_size`.
    pub length: u64,
    /// Block size in bytes; entries start on block boundaries.
    pub block_size: u32,
}

impl JournalRegion {
    /// The journal region a filesystem's layout describes.
    pub fn of_layout(layout: &Layout) -> JournalRegion {
        let block_size = u64::from(layout.block_size);
        JournalRegion {
            start: layout.journal.start * block_size,
            length: layout.journal.blocks * block_size,
            block_size: layout.block_size,
        }
    }
}

/// How a journal is set up.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The region on the device.
    pub region: JournalRegion,
    /// The filesystem's UUID: entries carry it, so a journal left by an
    /// earlier filesystem on the same device is never replayed.
    pub uuid: [u8; 16],
    /// Largest payload one entry holds (each of the four buffers is this
    /// big). Default 256 KiB, less for journals under 2 MiB so that eight
    /// entries fit.
    pub entry_bytes: u32,
    /// Reclaim starts when free ring space falls below this fraction
    /// (in 1/64ths) of the ring. Default 16 (a quarter).
    pub reclaim_below_64ths: u32,
    /// Reclaim also starts when more than this many seqs are tracked.
    pub max_tracked_seqs: usize,
    /// The newest entry when the filesystem was unmounted cleanly, as its
    /// superblock records it (0: not known). Recovery that finds only
    /// older entries reports the newer ones as lost
    /// ([`RecoveryReport::lost_since_clean`]) and never gives their seqs
    /// again.
    pub clean_unmount_seq: u64,
    /// Recovery for a read-only mount, which writes nothing: an entry a
    /// completed flush covered that is missing or damaged (a disk that
    /// acknowledged flushes it did not make) does not stop it; replay goes
    /// on from the newest whole chain of entries before it and reports
    /// what it passed over ([`RecoveryReport::acknowledged_lost`]). Off,
    /// such an entry refuses the mount: a read-write mount would build on
    /// metadata that was acknowledged and is gone.
    pub salvage: bool,
}

impl JournalOptions {
    /// Defaults for the journal of the filesystem `superblock` describes.
    pub fn for_filesystem(superblock: &Superblock) -> JournalOptions {
        let mut options = JournalOptions::new(
            JournalRegion::of_layout(&superblock.layout),
            superblock.uuid.0,
        );
        if superblock.state == FsState::Clean {
            options.clean_unmount_seq = superblock.clean_journal_seq;
        }
        options
    }

    /// Defaults for `region` and `uuid`.
    pub fn new(region: JournalRegion, uuid: [u8; 16]) -> JournalOptions {
        // At least eight entries to the ring (see MIN_ENTRIES_PER_RING);
        // bigger journals keep 256 KiB entries, the largest transaction.
        // An eighth in whole blocks: an entry a fraction of a block longer
        // takes a whole block more, and eight of those overrun a ring
        // whose length is not a multiple of eight blocks.
        let block = u64::from(region.block_size).max(1);
        let eighth = region.length / 8 / block * block;
        let entry_bytes = eighth
            .min(256 * 1024)
            .saturating_sub(HEADER_BYTES as u64)
            .max(1);
        JournalOptions {
            region,
            uuid,
            entry_bytes: entry_bytes as u32,
            reclaim_below_64ths: 16,
            max_tracked_seqs: 4096,
            clean_unmount_seq: 0,
            salvage: false,
        }
    }
}

/// The journal's errors.
#[derive(Debug, Clone, Error)]
pub enum JournalError {
    /// A device write or flush failed; the journal is in its error state.
    #[error("journal device error: {0}")]
    Device(#[from] DeviceError),
    /// The journal failed earlier and refuses all further work.
    #[error("journal is in its error state after an earlier failure: {0}")]
    Failed(Box<JournalError>),
    /// No room, even after reclaim: every entry is still needed.
    #[error("journal is full: {needed_blocks} blocks needed, {free_blocks} free after reclaim")]
    Full {
        /// Blocks the reservation needed.
        needed_blocks: u64,
        /// Blocks free.
        free_blocks: u64,
    },
    /// The reservation is larger than an entry can be.
    #[error("reservation of {bytes} bytes exceeds the journal entry size of {limit} bytes")]
    TooLarge {
        /// Requested bytes.
        bytes: u64,
        /// Entry payload limit.
        limit: u64,
    },
    /// More was appended to a reservation than it reserved.
    #[error(
        "record of {record_bytes} bytes does not fit: {remaining} bytes left in the reservation"
    )]
    ReservationOverflow {
        /// Bytes the record needs.
        record_bytes: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// A pin at a seq the journal no longer (or not yet) tracks.
    #[error("cannot pin seq {seq}: the journal tracks {last_seq}..={newest}")]
    PinOutOfRange {
        /// The seq asked for.
        seq: u64,
        /// The oldest tracked seq.
        last_seq: u64,
        /// The newest tracked seq.
        newest: u64,
    },
    /// A pinned object could not be written during reclaim.
    #[error("flushing the object pinning seq {seq} failed: {message}")]
    PinFlushFailed {
        /// The pinned seq.
        seq: u64,
        /// What the object said.
        message: String,
    },
    /// Reclaim reached an object the calling thread may not write (it holds
    /// a lock the write needs); `why` says what has kept other threads from
    /// writing it, when an attempt failed.
    #[error("the journal has no room until the object pinning seq {seq} is written, {why}")]
    PinFlushDeclined {
        /// The pinned seq.
        seq: u64,
        /// Why the object is still unwritten.
        why: String,
    },
    /// The journal region is not usable.
    #[error("journal region is invalid: {0}")]
    BadRegion(String),
    /// Replay found damage in entries that were durable.
    #[error("journal replay failed: {0}")]
    Corrupt(String),
}

impl JournalError {
    /// The device failure behind this error, if it came from one (looking
    /// through the sticky `Failed` wrapper).
    pub fn device_error(&self) -> Option<&DeviceError> {
        match self {
            JournalError::Device(error) => Some(error),
            JournalError::Failed(inner) => inner.device_error(),
            _ => None,
        }
    }

    /// The error to hand out once the journal is in its error state.
    fn sticky(&self) -> JournalError {
        match self {
            JournalError::Failed(_) => self.clone(),
            other => JournalError::Failed(Box::new(other.clone())),
        }
    }
}

/// Something that holds changes recorded in a journal entry and can write
/// them elsewhere so the entry is no longer needed.
pub trait PinFlush: Send + Sync {
    /// Write the object out. Called by reclaim without journal locks held;
    /// it may take journal reservations. On `Ok` the journal drops the pin.
    fn flush(&self, seq: u64) -> Result<(), PinFlushError>;
}

/// Why a pinned object was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinFlushError {
    /// Not by this thread: it holds a lock the write needs. Not a failure;
    /// another thread (or this one, later) writes the object.
    Declined,
    /// Writing it failed; the message says why.
    Failed(String),
}

impl From<String> for PinFlushError {
    fn from(message: String) -> Self {
        PinFlushError::Failed(message)
    }
}

/// Names a pin, to drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PinId(u64);

/// A snapshot of the journal for status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStatus {
    /// The seq the next entry will get.
    pub next_seq: u64,
    /// The oldest entry replay needs.
    pub last_seq: u64,
    /// Entries up to here are on the device.
    pub written_seq: u64,
    /// Entries up to here are durable.
    pub durable_seq: u64,
    /// The newest entry on the device (written this mount, or kept by
    /// replay; 0: none): seqs given up by a recovery and seqs not yet
    /// written are not entries.
    pub newest_entry_seq: u64,
    /// Entries up to here are known durable to a recovery: a durable entry
    /// on the device records it. Replay checks the data claims of entries
    /// above it, so blocks freed above it are not reused yet.
    pub recorded_durable_seq: u64,
    /// Free blocks in the ring.
    pub free_blocks: u64,
    /// Blocks in the ring.
    pub total_blocks: u64,
    /// Pins held.
    pub pins: usize,
    /// The seq of the open entry, if one is open.
    pub open_seq: Option<u64>,
    /// Frozen.
    pub blocked: bool,
    /// In the error state.
    pub failed: bool,
    /// Reclaims that failed to write a pinned object (the objects stayed
    /// pinned; the latest message is `last_reclaim_failure`).
    pub reclaim_failures: u64,
    /// What the latest failed reclaim said.
    pub last_reclaim_failure: Option<String>,
    /// Whether that failure still stands: no reclaim has written every
    /// object it reached since.
    pub reclaim_failing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufferStatus {
    Free,
    Open,
    /// Closed with `bytes` of payload, waiting for its last reference.
    Closed {
        bytes: u32,
    },
    Writing,
}

#[derive(Clone, Copy, Debug)]
struct BufferMeta {
    status: BufferStatus,
    seq: u64,
    prev_seq: u64,
    start_block: u64,
}

/// Which share of the ring a reservation may use: reclaim may dip into
/// the last part that normal reservations leave free, so that writing out
/// pinned objects can always journal what it did. Objects written in bulk
/// outside a reclaim pass (many at a time, recording no progress) may dip
/// in too, but always leave room for one more full entry: the one a
/// reclaim pass needs to write the oldest object and, in that entry's
/// header, the `last_seq` that frees the ring. Without it, such writes
/// could leave a ring too full for any entry, and no object could be
/// written again: not at unmount, not after a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watermark {
    Normal,
    Bulk,
    Reclaim,
}

struct Inner {
    buffers: [BufferMeta; BUFFER_COUNT],
    next_seq: u64,
    prev_seq: u64,
    pins: PinFifo,
    ring: Ring,
    written_seq: u64,
    /// The newest entry written (or kept by replay).
    newest_entry: u64,
    /// Seqs written out of order, above `written_seq`.
    written_ahead: Vec<u64>,
    durable_seq: u64,
    /// Written entries not yet durable, with the last_seq and durable_seq
    /// each recorded.
    undurable: Vec<Undurable>,
    /// The highest `durable_seq` recorded by a durable entry.
    recorded_durable_seq: u64,
    /// The newest entry written with data claims.
    newest_claim_seq: u64,
    error: Option<JournalError>,
    blocked: bool,
    /// Replayed seqs still held until `replay_done`.
    replay_holds: Vec<u64>,
    /// How long the latest journal flush took (capped): the group-commit
    /// linger is half of it.
    last_flush_time: Duration,
    /// Callers of `flush_seq` served by another's flush since an entry was
    /// last closed for flushing: a sign of concurrent committers.
    served_by_others: u32,
    /// Reclaims that failed to write a pinned object, the latest message,
    /// and whether no reclaim has succeeded since (see `JournalStatus`).
    reclaim_failures: u64,
    last_reclaim_failure: Option<String>,
    reclaim_failing: bool,
    /// Pins dropped and ordered object writes so far (each means an object
    /// was written that the next entry must not overtake).
    pin_drops: u64,
    /// `pin_drops` when the latest successful device flush began: the
    /// object writes behind those drops are durable (see the preflush in
    /// `write_buffer`).
    pin_drops_flushed: u64,
}

/// A written entry waiting for a flush, and what its header recorded.
#[derive(Clone, Copy, Debug)]
struct Undurable {
    seq: u64,
    last_seq: u64,
    durable_seq: u64,
}

/// The journal. Share it with `Arc`; every method takes `&self`.
///
/// Dropping it writes nothing: entries not yet flushed are lost as in a
/// crash, so a clean shutdown calls [`Journal::flush`] (or
/// [`Journal::block`]) first.
pub struct Journal {
    device: Arc<dyn BlockDevice>,
    options: JournalOptions,
    state: ReservationState,
    /// The seq in each buffer, readable by reservation holders without the
    /// lock: a buffer cannot change seq while anyone holds a reference.
    buffer_seqs: [crate::sync::AtomicU64; BUFFER_COUNT],
    buffer_bytes: [Mutex<Vec<u8>>; BUFFER_COUNT],
    /// Whether each buffer's entry holds a data claim (it is then written
    /// as a version 2 entry).
    buffer_claims: [std::sync::atomic::AtomicBool; BUFFER_COUNT],
    inner: Mutex<Inner>,
    changed: Condvar,
    flush_lock: Mutex<()>,
    /// Called before each commit's device flush (see the module comment).
    companion: std::sync::OnceLock<CommitCompanion>,
}

/// What [`Journal::set_commit_companion`] takes.
pub type CommitCompanion = Box<dyn Fn() + Send + Sync>;

impl fmt::Debug for Journal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Journal")
            .field("status", &self.status())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a journal lock leaves state we cannot trust,
    // but poisoning every later caller hides the original panic; the
    // journal's own invariants are re-checked by debug assertions.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Journal {
    /// Opens the journal in `options.region`, replaying what it holds.
    ///
    /// A journal that was never written (zeroed by mkfs) opens empty. The
    /// returned [`Replay`] lists the entries still needed, oldest first;
    /// they stay pinned until [`Journal::replay_done`].
    pub fn open(
        device: Arc<dyn BlockDevice>,
        options: JournalOptions,
    ) -> Result<(Journal, Replay), JournalError> {
        let region = options.region;
        let replay = Journal::inspect(device.as_ref(), &options)?;
        // Destroy the entries cut off as a torn tail: their seqs are given
        // up, and a later recovery must never find one and take it for part
        // of a chain.
        let block_size = u64::from(region.block_size);
        let zeros = vec![0u8; region.block_size as usize];
        for &block in &replay.cut_off_blocks {
            device.write_at(region.start + block * block_size, &zeros, IoClass::Journal)?;
        }
        if replay.report.newest_kept_seq != 0 || !replay.cut_off_blocks.is_empty() {
            // What replay read may sit in a volatile cache after a crash:
            // make it (and the destruction above) durable before anything
            // new depends on it.
            device.flush(IoClass::Journal)?;
        }
        let report = &replay.report;

        let total_blocks = region.length / u64::from(region.block_size);
        let mut ring = Ring::new(total_blocks);
        let mut pins = PinFifo::new(report.last_seq);
        for entry in &replay.entries {
            pins.push_replayed(entry.seq);
            ring.push_written(entry.seq, entry.start_block, u64::from(entry.blocks));
        }
        if let Some(newest) = replay.entries.last() {
            ring.set_head(newest.start_block + u64::from(newest.blocks));
        }
        ring.set_durable_last_seq(report.last_seq);
        let kept = report.newest_kept_seq;

        let journal = Journal {
            device,
            companion: std::sync::OnceLock::new(),
            state: ReservationState::new(),
            buffer_seqs: std::array::from_fn(|_| crate::sync::AtomicU64::new(0)),
            buffer_claims: std::array::from_fn(|_| std::sync::atomic::AtomicBool::new(false)),
            buffer_bytes: std::array::from_fn(|_| {
                Mutex::new(vec![
                    0u8;
                    round_up(
                        HEADER_BYTES + options.entry_bytes as usize,
                        region.block_size as usize
                    )
                ])
            }),
            inner: Mutex::new(Inner {
                buffers: [BufferMeta {
                    status: BufferStatus::Free,
                    seq: 0,
                    prev_seq: 0,
                    start_block: 0,
                }; BUFFER_COUNT],
                next_seq: report.next_seq,
                prev_seq: kept,
                pins,
                ring,
                written_seq: report.next_seq - 1,
                newest_entry: kept,
                written_ahead: Vec::new(),
                // Only what replay kept is durable: cut-off seqs were never
                // acknowledged, and later entries must not claim they were.
                durable_seq: kept,
                undurable: Vec::new(),
                recorded_durable_seq: report.kept_durable_seq,
                // Kept entries whose claims the next recovery would check
                // again: the mount settles them before reusing any block.
                newest_claim_seq: if report.claims_unsettled { kept } else { 0 },
                error: None,
                blocked: false,
                replay_holds: replay.entries.iter().map(|entry| entry.seq).collect(),
                last_flush_time: Duration::ZERO,
                served_by_others: 0,
                reclaim_failures: 0,
                last_reclaim_failure: None,
                reclaim_failing: false,
                pin_drops: 0,
                pin_drops_flushed: 0,
            }),
            changed: Condvar::new(),
            flush_lock: Mutex::new(()),
            options,
        };
        Ok((journal, replay))
    }

    /// Reads the journal in `options.region` and decides what replay would
    /// do, without writing anything: what fsck and status use. Fails as
    /// [`Journal::open`] would (a damaged durable entry is `Corrupt`).
    pub fn inspect(
        device: &dyn BlockDevice,
        options: &JournalOptions,
    ) -> Result<Replay, JournalError> {
        validate_region(&options.region, device.length(), options.entry_bytes)?;
        replay::scan(device, options)
    }

    /// Releases the holds on replayed entries, once the engine has pinned
    /// whatever it rebuilt from them.
    pub fn replay_done(&self) {
        let mut inner = lock(&self.inner);
        let held = std::mem::take(&mut inner.replay_holds);
        inner.pins.release_replay_holds(&held);
        inner.pins.advance();
        self.changed.notify_all();
    }

    /// Freezes the journal: no new reservations (they wait), outstanding
    /// ones drain, everything is written and flushed. Objects still pinned
    /// stay pinned; call [`Journal::reclaim_all`] first to write them out.
    pub fn block(&self) -> Result<(), JournalError> {
        let target = {
            let mut inner = lock(&self.inner);
            inner.blocked = true;
            let inner = self.close_and_write(inner, OFFSET_BLOCKED);
            inner.next_seq - 1
        };
        self.flush_seq(target)
    }

    /// Thaws the journal: waiting reservations proceed.
    pub fn unblock(&self) {
        let mut inner = lock(&self.inner);
        inner.blocked = false;
        self.state.unblock();
        self.changed.notify_all();
    }

    /// The bytes of the journal's region on the device.
    pub fn region_bytes(&self) -> u64 {
        self.options.region.length
    }

    /// A snapshot for status reports.
    pub fn status(&self) -> JournalStatus {
        let inner = lock(&self.inner);
        let snapshot = self.state.snapshot();
        JournalStatus {
            open_seq: snapshot
                .is_open()
                .then(|| inner.buffers[snapshot.index()].seq),
            next_seq: inner.next_seq,
            last_seq: inner.pins.front_seq(),
            written_seq: inner.written_seq,
            durable_seq: inner.durable_seq,
            newest_entry_seq: inner.newest_entry,
            recorded_durable_seq: inner.recorded_durable_seq,
            free_blocks: inner.ring.free_blocks(),
            total_blocks: inner.ring.total_blocks(),
            pins: inner.pins.pin_count(),
            blocked: inner.blocked,
            failed: inner.error.is_some(),
            reclaim_failures: inner.reclaim_failures,
            last_reclaim_failure: inner.last_reclaim_failure.clone(),
            reclaim_failing: inner.reclaim_failing,
        }
    }

    /// The entries replay would still need that are on the device: each
    /// one's seq and bytes (absolute device offsets), oldest first. What
    /// scrub reads and verifies; an entry may be reclaimed and overwritten
    /// as soon as this returns, which [`decode_entry`]'s seq tells.
    pub fn live_entries(&self) -> Vec<(u64, crate::device::ByteRange)> {
        let inner = lock(&self.inner);
        let region = &self.options.region;
        let block_size = u64::from(region.block_size);
        inner
            .ring
            .live_entries()
            .filter(|&(seq, _, _)| seq <= inner.written_seq)
            .map(|(seq, start, blocks)| {
                let offset = region.start + start * block_size;
                (
                    seq,
                    crate::device::ByteRange::at(offset, blocks * block_size),
                )
            })
            .collect()
    }

    /// The filesystem UUID entries carry, and the block size they are laid
    /// out in: what [`decode_entry`] needs to verify one.
    pub fn entry_identity(&self) -> ([u8; 16], usize) {
        (self.options.uuid, self.options.region.block_size as usize)
    }

    /// The error that put the journal in its error state, if any.
    pub fn error(&self) -> Option<JournalError> {
        lock(&self.inner).error.clone()
    }
}

fn wait<'a>(condvar: &Condvar, guard: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
    condvar
        .wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn buffer_index(seq: u64) -> usize {
    (seq % BUFFER_COUNT as u64) as usize
}

fn round_up(value: usize, to: usize) -> usize {
    value.div_ceil(to) * to
}

fn validate_region(
    region: &JournalRegion,
    device_length: u64,
    entry_bytes: u32,
) -> Result<(), JournalError> {
    let block = u64::from(region.block_size);
    let bad = |why: String| Err(JournalError::BadRegion(why));
    if !region.block_size.is_power_of_two() || !(512..=65536).contains(&region.block_size) {
        return bad(format!(
            "block size {} is not a power of two in 512..=65536",
            region.block_size
        ));
    }
    if region.start % block != 0 || region.length % block != 0 {
        return bad("start and length must be multiples of the block size".into());
    }
    match region.start.checked_add(region.length) {
        Some(end) if end <= device_length => {}
        _ => {
            return bad(format!(
                "region {}+{} runs past the device ({device_length} bytes)",
                region.start, region.length
            ))
        }
    }
    let entry_blocks = entry::entry_blocks(entry_bytes as usize, region.block_size as usize) as u64;
    if entry_bytes == 0 || entry_bytes > MAX_ENTRY_BYTES {
        return bad(format!("entry size {entry_bytes} out of range"));
    }
    if region.length / block < entry_blocks * MIN_ENTRIES_PER_RING {
        return bad(format!(
            "region of {} blocks is too small for entries of {entry_blocks} blocks (it needs \
             room for {MIN_ENTRIES_PER_RING} entries: {} blocks)",
            region.length / block,
            entry_blocks * MIN_ENTRIES_PER_RING
        ));
    }
    Ok(())
}
