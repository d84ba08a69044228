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
//! * Reservations ([`Journal::reserve`]) take room in the open entry with
//!   one CAS on a packed state word (`state.rs`). A buffer is written by
//!   whoever drops its last reference: the last reservation holder, or the
//!   closer if nobody holds one.
//! * Pins (`pins.rs`): a FIFO of pin lists, one per seq. `last_seq`, the
//!   front, is written into every entry; replay starts there.
//! * The ring (`ring.rs`): entries occupy whole blocks of the journal
//!   region. Space is reused only below the `last_seq` recorded by the
//!   newest *durable* entry, so a crash always finds that entry and
//!   everything it needs.
//! * Durability: [`Journal::flush_seq`] waits for the entries up to `seq`
//!   to be written, then one device flush serves every waiter whose entry
//!   was written before it started. Flushers queue before closing their
//!   entry, so concurrent committers share entries and flushes (group
//!   commit).
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

mod entry;
mod pins;
mod replay;
mod ring;
mod state;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::device::{BlockDevice, DeviceError, IoClass};
use crate::format::{Layout, Superblock};
use crate::sync::Condvar;
use entry::HEADER_BYTES;
pub use entry::{
    decode_entry, decode_header, record_bytes, DataClaim, DecodedEntry, EntryError, EntryHeader,
};
use pins::PinFifo;
pub use replay::{RecoveryReport, Replay, ReplayedEntry};
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
}

impl JournalOptions {
    /// Defaults for the journal of the filesystem `superblock` describes.
    pub fn for_filesystem(superblock: &Superblock) -> JournalOptions {
        JournalOptions::new(
            JournalRegion::of_layout(&superblock.layout),
            superblock.uuid.0,
        )
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
/// pinned objects can always journal what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watermark {
    Normal,
    Reclaim,
}

struct Inner {
    buffers: [BufferMeta; BUFFER_COUNT],
    next_seq: u64,
    prev_seq: u64,
    pins: PinFifo,
    ring: Ring,
    written_seq: u64,
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

/// Room in the open entry. Append records, then drop it; dropping releases
/// the reservation (and may write the entry).
pub struct Reservation<'journal> {
    journal: &'journal Journal,
    index: usize,
    seq: u64,
    cursor: usize,
    end: usize,
}

impl Reservation<'_> {
    /// The seq of the entry this reservation is in: pin it for the objects
    /// the records change, before dropping the reservation.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends one record.
    pub fn append(&mut self, record: &[u8]) -> Result<(), JournalError> {
        self.put(record_bytes(record.len()), |into| {
            entry::encode_record(record, into);
        })
    }

    /// Appends a data claim: `claim`'s blocks were written (the writes
    /// completed) before this call, and the records of this reservation
    /// refer to them. Reserve [`DataClaim::record_bytes`] for it.
    pub fn claim(&mut self, claim: &DataClaim) -> Result<(), JournalError> {
        self.put(claim.record_bytes(), |into| claim.encode(into))?;
        self.journal.buffer_claims[self.index].store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Encodes `span` bytes at the cursor with `encode`, if they fit.
    fn put(&mut self, span: usize, encode: impl FnOnce(&mut [u8])) -> Result<(), JournalError> {
        let remaining = self.end - self.cursor;
        if span > remaining {
            return Err(JournalError::ReservationOverflow {
                record_bytes: span,
                remaining,
            });
        }
        let mut bytes = lock(&self.journal.buffer_bytes[self.index]);
        let at = HEADER_BYTES + self.cursor;
        encode(&mut bytes[at..at + span]);
        self.cursor += span;
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.cursor < self.end {
            // Unused room reads back as padding records.
            let mut bytes = lock(&self.journal.buffer_bytes[self.index]);
            bytes[HEADER_BYTES + self.cursor..HEADER_BYTES + self.end].fill(0);
        }
        if self.journal.state.put(self.index) {
            self.journal.write_buffer(self.index);
        }
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
        replay::scan(device, &options.region, &options.uuid)
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

    /// Reserves `bytes` (a sum of [`record_bytes`]) in the open entry,
    /// opening one or reclaiming space if needed.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation<'_>, JournalError> {
        self.reserve_at(bytes, Watermark::Normal)
    }

    /// Like [`Journal::reserve`], for a [`PinFlush`] callback that must
    /// journal what its write did (a b-tree node's new location): it may use
    /// the part of the ring normal reservations leave free, so writing out
    /// pinned objects can always make progress when the journal is full.
    pub fn reserve_for_reclaim(&self, bytes: usize) -> Result<Reservation<'_>, JournalError> {
        self.reserve_at(bytes, Watermark::Reclaim)
    }

    /// Appends `records` as one atomic unit and returns its seq. Not
    /// durable until [`Journal::flush_seq`] covers the seq.
    pub fn commit(&self, records: &[&[u8]]) -> Result<u64, JournalError> {
        let bytes = records
            .iter()
            .map(|record| record_bytes(record.len()))
            .sum();
        let mut reservation = self.reserve(bytes)?;
        for record in records {
            reservation.append(record)?;
        }
        Ok(reservation.seq())
    }

    fn reserve_at(
        &self,
        bytes: usize,
        watermark: Watermark,
    ) -> Result<Reservation<'_>, JournalError> {
        // Reservations are whole records: keep every one 8-byte aligned, so
        // the next one starts on a record boundary (the padding reads back
        // as empty records).
        let bytes = bytes.next_multiple_of(entry::RECORD_ALIGN);
        let limit = self.options.entry_bytes as usize;
        if bytes > limit {
            return Err(JournalError::TooLarge {
                bytes: bytes as u64,
                limit: limit as u64,
            });
        }
        let wanted = bytes as u32;
        loop {
            if let Some(reserved) = self.state.try_reserve(wanted) {
                let seq =
                    self.buffer_seqs[reserved.index].load(std::sync::atomic::Ordering::Acquire);
                let start = reserved.offset as usize;
                return Ok(Reservation {
                    journal: self,
                    index: reserved.index,
                    seq,
                    cursor: start,
                    end: start + bytes,
                });
            }
            self.reserve_slow(wanted, watermark)?;
        }
    }

    /// Makes the next fast-path attempt able to succeed, or fails.
    fn reserve_slow(&self, bytes: u32, watermark: Watermark) -> Result<(), JournalError> {
        let mut inner = lock(&self.inner);
        let mut reclaim_rounds = 0;
        loop {
            if let Some(error) = &inner.error {
                return Err(error.sticky());
            }
            if inner.blocked && watermark == Watermark::Normal {
                inner = wait(&self.changed, inner);
                continue;
            }
            let snapshot = self.state.snapshot();
            if snapshot.is_open() {
                if snapshot.refs(snapshot.index()) >= state::MAX_BUFFER_REFS {
                    // Every reference of this buffer is taken: move on to the
                    // next entry rather than wait for releases, which do not
                    // signal.
                    inner = self.close_and_write(inner, OFFSET_CLOSED);
                    continue;
                }
                if snapshot.offset().saturating_add(bytes) <= self.state.limit() {
                    // Someone else made room meanwhile: retry the fast path.
                    return Ok(());
                }
                // The open entry is full: close it so the next one opens.
                inner = self.close_and_write(inner, OFFSET_CLOSED);
                continue;
            }
            if snapshot.offset() == OFFSET_BLOCKED {
                // Frozen: reclaim's reservations wait for the thaw too, so
                // nothing is written while the journal is blocked.
                inner = wait(&self.changed, inner);
                continue;
            }
            // CLOSED: open the next entry.
            let seq = inner.next_seq;
            let index = buffer_index(seq);
            if inner.buffers[index].status != BufferStatus::Free {
                inner = wait(&self.changed, inner);
                continue;
            }
            // Every entry gets room for a full entry, so the size limit the
            // fast path checks is the same for every entry: a reserver that
            // pairs the word of one entry with the limit it read for another
            // (possible if it sleeps while the buffers rotate back to the
            // same word) still cannot overrun the room its entry has.
            let needed_blocks = self.full_entry_blocks();
            debug_assert!(u64::from(bytes) <= u64::from(self.options.entry_bytes));
            let reserve_blocks = match watermark {
                Watermark::Normal => self.reclaim_reserve_blocks(&inner),
                Watermark::Reclaim => 0,
            };
            let total = inner.ring.total_blocks();
            let low_watermark = self.low_watermark(total);
            let low_on_space = inner.ring.free_blocks() < low_watermark;
            let over_tracking = inner.pins.len() > self.options.max_tracked_seqs;
            let placement = inner.ring.place(needed_blocks, reserve_blocks);
            let wants_reclaim = low_on_space || over_tracking || placement.is_none();
            if watermark == Watermark::Normal
                && wants_reclaim
                && reclaim_rounds < MAX_RECLAIM_ROUNDS
            {
                // Below the low watermark: write out the oldest pinned
                // objects until there is room again (`reclaim_target`).
                reclaim_rounds += 1;
                let could_place = placement.is_some();
                let wanted = self.reclaim_target(&inner);
                drop(inner);
                let outcome = self.reclaim(wanted);
                inner = lock(&self.inner);
                match outcome {
                    // Another round only if this one freed something.
                    Ok(true) if !could_place => continue,
                    Ok(_) => reclaim_rounds = MAX_RECLAIM_ROUNDS,
                    Err(error) if !could_place => return Err(error),
                    Err(_) => {
                        // Early reclaim failed but there is still room: go
                        // on (`reclaim_through` kept the failure for the
                        // status).
                        reclaim_rounds = MAX_RECLAIM_ROUNDS;
                    }
                }
                continue;
            }
            let Some((start_block, room_blocks)) = placement else {
                return Err(JournalError::Full {
                    needed_blocks,
                    free_blocks: inner.ring.free_blocks(),
                });
            };
            let room_blocks = room_blocks.min(needed_blocks);
            let entry_limit = self.options.entry_bytes;
            let prev_seq = inner.prev_seq;
            inner.buffers[index] = BufferMeta {
                status: BufferStatus::Open,
                seq,
                prev_seq,
                start_block,
            };
            inner.ring.reserve_open(seq, start_block, room_blocks);
            inner.pins.push_open(seq);
            inner.prev_seq = seq;
            inner.next_seq = seq + 1;
            self.buffer_seqs[index].store(seq, std::sync::atomic::Ordering::Release);
            self.state.open(index, entry_limit);
            return Ok(());
        }
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

impl Journal {
    /// Closes the open entry (if any) with `sentinel` and returns its buffer
    /// index if nobody holds a reservation on it, in which case the caller
    /// must call `write_buffer` after dropping the lock.
    fn close_open_entry(&self, inner: &mut Inner, sentinel: u32) -> Option<usize> {
        let closed = self.state.close(sentinel)?;
        let block_size = self.options.region.block_size as usize;
        let meta = &mut inner.buffers[closed.index];
        debug_assert_eq!(meta.status, BufferStatus::Open);
        meta.status = BufferStatus::Closed {
            bytes: closed.bytes,
        };
        let blocks = entry::entry_blocks(closed.bytes as usize, block_size) as u64;
        let seq = meta.seq;
        inner.ring.close_open(seq, blocks);
        self.changed.notify_all();
        closed.unreferenced.then_some(closed.index)
    }

    /// Closes the open entry and, if nobody holds a reservation on it,
    /// writes it with the lock released; returns the lock re-taken.
    fn close_and_write<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        sentinel: u32,
    ) -> MutexGuard<'a, Inner> {
        let Some(index) = self.close_open_entry(&mut inner, sentinel) else {
            return inner;
        };
        drop(inner);
        self.write_buffer(index);
        lock(&self.inner)
    }

    /// Writes the entry in buffer `index`, whose last reference was just
    /// dropped. Runs on the thread that dropped it, without locks held.
    fn write_buffer(&self, index: usize) {
        let mut inner = lock(&self.inner);
        let meta = inner.buffers[index];
        let BufferStatus::Closed { bytes } = meta.status else {
            debug_assert!(false, "buffer {index} written while {:?}", meta.status);
            return;
        };
        // The entry's own reference on its pin list was taken when the entry
        // opened and is still held here, after the entry closed and its last
        // reservation was released; from here on it is the write's
        // reference, dropped when the write completes. It must not be
        // dropped when the entry closes: a reservation can outlive the close
        // of its entry (a concurrent flush, or a full entry, closes it under
        // the holder's feet), and the holder may still pin the entry's seq
        // for the objects its records change. Were the reference dropped at
        // close, the list could be empty by then, `last_seq` could move past
        // it, and the holder's pin would land on a seq the journal had
        // already given up, so replay would miss its changes. Keeping the
        // reference until the buffer's last reference drops closes that
        // window: a holder pins before it releases, so the list is still
        // here.
        if inner.error.is_some() {
            // Nothing written after a failure may claim durability.
            inner.pins.release_ref(meta.seq);
            inner.buffers[index].status = BufferStatus::Free;
            self.changed.notify_all();
            return;
        }
        // Recorded last_seq never decreases with seq: an entry written after a
        // newer one (buffers finish out of order) must not claim less is needed
        // than that newer entry says, or ring space freed on the strength of
        // this entry's claim could hold what the newer entry still needs.
        let front = inner.pins.advance();
        let last_seq = inner
            .undurable
            .iter()
            .filter(|undurable| undurable.seq > meta.seq)
            .map(|undurable| undurable.last_seq)
            .fold(front, u64::min);
        let block_size = self.options.region.block_size as usize;
        let blocks = entry::entry_blocks(bytes as usize, block_size);
        let header = EntryHeader {
            seq: meta.seq,
            last_seq,
            prev_seq: meta.prev_seq,
            durable_seq: inner.durable_seq,
            payload_bytes: bytes,
            blocks: blocks as u32,
        };
        inner.buffers[index].status = BufferStatus::Writing;
        let pin_drops = inner.pin_drops;
        let needs_preflush = pin_drops > inner.pin_drops_flushed;
        drop(inner);

        // An entry's last_seq tells replay that the objects which pinned
        // older entries were written. Those writes completed before their
        // pins were dropped, but they may still sit in the device's volatile
        // cache; were this entry to reach the disk before them, a crash
        // could keep the claim and lose the objects. So if any pin was
        // dropped since the last completed device flush began, flush first
        // (what bcachefs does with a preflush on journal writes). Entries
        // whose last_seq moved only because nothing pinned them need none.
        let mut result = Ok(());
        let with_claims =
            self.buffer_claims[index].swap(false, std::sync::atomic::Ordering::SeqCst);
        if needs_preflush {
            result = self.device.flush(IoClass::Journal);
            if result.is_ok() {
                let mut inner = lock(&self.inner);
                inner.pin_drops_flushed = inner.pin_drops_flushed.max(pin_drops);
            }
        }
        let offset = self.options.region.start + meta.start_block * block_size as u64;
        if result.is_ok() {
            let mut data = lock(&self.buffer_bytes[index]);
            let image = &mut data[..blocks * block_size];
            entry::seal(image, &header, &self.options.uuid, with_claims);
            result = self.device.write_at(offset, image, IoClass::Journal);
        }

        let mut inner = lock(&self.inner);
        inner.buffers[index].status = BufferStatus::Free;
        inner.pins.release_ref(meta.seq);
        match result {
            Ok(()) => {
                if with_claims {
                    inner.newest_claim_seq = inner.newest_claim_seq.max(meta.seq);
                }
                inner.undurable.push(Undurable {
                    seq: meta.seq,
                    last_seq,
                    durable_seq: header.durable_seq,
                });
                inner.written_ahead.push(meta.seq);
                inner.written_ahead.sort_unstable();
                while inner.written_ahead.first() == Some(&(inner.written_seq + 1)) {
                    inner.written_ahead.remove(0);
                    inner.written_seq += 1;
                }
                inner.pins.advance();
            }
            Err(error) => self.fail(&mut inner, JournalError::Device(error)),
        }
        self.changed.notify_all();
    }

    /// Enters the error state (once; the first error is kept).
    fn fail(&self, inner: &mut Inner, error: JournalError) {
        if inner.error.is_none() {
            inner.error = Some(error);
        }
        if let Some(index) = self.close_open_entry(inner, OFFSET_ERROR) {
            // Nobody holds it: there is nothing to write after a failure.
            inner.pins.release_ref(inner.buffers[index].seq);
            inner.buffers[index].status = BufferStatus::Free;
        }
        self.changed.notify_all();
    }

    /// Makes every entry up to `seq` durable: closes the open entry if
    /// `seq` is in it, waits for the entries to be written, and flushes the
    /// device unless a flush that began after they were written already did.
    ///
    /// Group commit: callers queue on `flush_lock` *before* closing their
    /// entry, so while one flush runs the open entry keeps filling with the
    /// commits of everyone waiting (and of the flusher's next commit); the
    /// next caller through closes it and one flush serves them all. A lone
    /// committer finds the lock free and pays nothing for this.
    ///
    /// Must not be called while the same thread holds a reservation on an
    /// entry up to `seq`: the entry cannot be written until it is released.
    pub fn flush_seq(&self, seq: u64) -> Result<(), JournalError> {
        if self.durable_or_failed(seq)? {
            return Ok(());
        }
        let mut queued = false;
        let mut lingered = false;
        loop {
            let flushing = match self.flush_lock.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    queued = true;
                    lock(&self.flush_lock)
                }
            };
            let mut inner = lock(&self.inner);
            loop {
                if let Some(error) = &inner.error {
                    return Err(error.sticky());
                }
                let target = seq.min(inner.next_seq - 1);
                if target <= inner.durable_seq {
                    if queued {
                        // Someone else's flush served us: there are several
                        // committers, so the next flusher should wait for them.
                        inner.served_by_others += 1;
                    }
                    return Ok(());
                }
                if inner.written_seq >= target {
                    let outcome = self.flush_device(inner, target);
                    drop(flushing);
                    return outcome;
                }
                let snapshot = self.state.snapshot();
                if !snapshot.is_open() || inner.buffers[snapshot.index()].seq > target {
                    break;
                }
                if !lingered && (queued || inner.served_by_others > 0) {
                    // Other committers are about: they are likely to be back
                    // with their next commit in a moment (one was just
                    // served by a flush, or is the flusher we queued behind).
                    // Give them up to half a flush time to join this entry,
                    // so one flush serves all. A lone committer never waits.
                    lingered = true;
                    let linger = inner.last_flush_time / 2;
                    drop(inner);
                    self.linger_for_joiners(snapshot, linger);
                    inner = lock(&self.inner);
                    continue;
                }
                inner.served_by_others = 0;
                inner = self.close_and_write(inner, OFFSET_CLOSED);
            }
            // The entries up to `target` are closed but not all written:
            // their last reservation holders write them. Wait without
            // holding the flush lock, so that such a holder can itself call
            // flush_seq meanwhile without deadlocking against us.
            drop(flushing);
            let inner = wait(&self.changed, inner);
            drop(inner);
        }
    }

    /// Flushes the device for everything written so far (at least
    /// `target`), under the flush lock, and records what became durable.
    fn flush_device(&self, inner: MutexGuard<'_, Inner>, target: u64) -> Result<(), JournalError> {
        let covered = inner.written_seq;
        let pin_drops = inner.pin_drops;
        drop(inner);
        if let Some(companion) = self.companion.get() {
            companion();
        }
        let started = Instant::now();
        let result = self.device.flush(IoClass::Journal);
        let mut inner = lock(&self.inner);
        inner.last_flush_time = started.elapsed().min(MAX_LINGER * 2);
        match result {
            Ok(()) => {
                debug_assert!(covered >= target);
                inner.durable_seq = inner.durable_seq.max(covered);
                inner.pin_drops_flushed = inner.pin_drops_flushed.max(pin_drops);
                let mut newest_last_seq = 0;
                let mut recorded = inner.recorded_durable_seq;
                inner.undurable.retain(|undurable| {
                    if undurable.seq <= covered {
                        newest_last_seq = newest_last_seq.max(undurable.last_seq);
                        recorded = recorded.max(undurable.durable_seq);
                        false
                    } else {
                        true
                    }
                });
                inner.recorded_durable_seq = recorded;
                inner.ring.set_durable_last_seq(newest_last_seq);
                self.changed.notify_all();
                Ok(())
            }
            Err(error) => {
                let error = JournalError::Device(error);
                self.fail(&mut inner, error.clone());
                Err(error)
            }
        }
    }

    /// Spins until the open entry seen in `seen` takes another reservation,
    /// closes, or `linger` passes. Reservations do not signal (their fast
    /// path is one CAS), so this polls; it runs only when flushers contend,
    /// for at most half a flush time.
    fn linger_for_joiners(&self, seen: state::Snapshot, linger: Duration) {
        let deadline = Instant::now() + linger;
        while Instant::now() < deadline {
            let now = self.state.snapshot();
            if now.index() != seen.index() || now.offset() != seen.offset() {
                return;
            }
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    }

    /// Whether `seq` is durable already; the sticky error if the journal
    /// failed.
    fn durable_or_failed(&self, seq: u64) -> Result<bool, JournalError> {
        let inner = lock(&self.inner);
        if let Some(error) = &inner.error {
            return Err(error.sticky());
        }
        Ok(seq.min(inner.next_seq - 1) <= inner.durable_seq)
    }

    /// Sets what is written right before each commit's device flush (the
    /// event log's pending records), so that flush covers it. Only the
    /// first one set is kept. It runs under the flush lock and must not
    /// call into the journal.
    pub fn set_commit_companion(&self, companion: CommitCompanion) {
        let _ = self.companion.set(companion);
    }

    /// Makes everything reserved so far durable.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.flush_seq(self.newest_reserved())
    }

    /// Makes everything reserved so far durable, and that fact recorded on
    /// the device: [`Journal::settle_through`] the newest seq reserved. Then
    /// every block freed before the call may be reused.
    pub fn settle(&self) -> Result<(), JournalError> {
        self.settle_through(self.newest_reserved())
    }

    /// [`Journal::settle_through`] the newest entry written with data
    /// claims: afterwards no recovery checks a claim made before the call.
    /// Does nothing when that is already so, however often it is called.
    pub fn settle_claims(&self) -> Result<(), JournalError> {
        let newest = lock(&self.inner).newest_claim_seq;
        self.settle_through(newest)
    }

    /// Makes the entries up to `seq` durable and records that on the device:
    /// afterwards [`JournalStatus::recorded_durable_seq`] is at least `seq`.
    /// Costs a second, nearly empty entry and flush when no durable entry
    /// records it yet (the newest entry never records its own durability).
    /// The entry may use the ring's reclaim reserve: settling is what makes
    /// freed space usable.
    pub fn settle_through(&self, seq: u64) -> Result<(), JournalError> {
        if seq == 0 {
            return Ok(());
        }
        self.flush_seq(seq)?;
        if lock(&self.inner).recorded_durable_seq >= seq {
            return Ok(());
        }
        // A padding record: an entry written now records `seq` durable.
        let recorder = {
            let mut reservation = self.reserve_for_reclaim(record_bytes(0))?;
            reservation.append(&[])?;
            reservation.seq()
        };
        self.flush_seq(recorder)
    }

    /// [`JournalStatus::recorded_durable_seq`], without the rest of a status.
    pub fn recorded_durable_seq(&self) -> u64 {
        lock(&self.inner).recorded_durable_seq
    }

    /// Whether everything reserved so far is durable: what [`Journal::flush`]
    /// would have nothing to do for.
    pub fn is_durable(&self) -> bool {
        let newest = self.newest_reserved();
        newest <= lock(&self.inner).durable_seq
    }

    /// The seq of the newest entry holding anything reserved: the open one
    /// unless it is empty. A change committed just now is in it, or in an
    /// older one.
    pub fn newest_reserved(&self) -> u64 {
        let inner = lock(&self.inner);
        let snapshot = self.state.snapshot();
        let open_seq = inner.buffers[snapshot.index()].seq;
        if snapshot.is_open() && snapshot.offset() == 0 {
            open_seq - 1
        } else {
            inner.next_seq - 1
        }
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

    /// Pins `seq` for an object holding changes recorded there. Pin while
    /// still holding the reservation the changes were recorded under.
    pub fn pin(&self, seq: u64, object: Arc<dyn PinFlush>) -> Result<PinId, JournalError> {
        lock(&self.inner).pins.add(seq, object)
    }

    /// Drops a pin: the object was written.
    pub fn unpin(&self, pin: PinId) {
        let mut inner = lock(&self.inner);
        if inner.pins.remove(pin) {
            inner.pin_drops += 1;
            inner.pins.advance();
            self.changed.notify_all();
        }
    }

    /// Records that an object was written outside the journal which an
    /// entry about to be written will refer to (a b-tree node at a new
    /// block): the next entry write flushes the device first, as for
    /// dropped pins. File data needs none of this: its entries carry
    /// [`DataClaim`]s instead.
    pub fn order_before_next_entry(&self) {
        let mut inner = lock(&self.inner);
        inner.pin_drops += 1;
    }

    /// The seq `pin` holds, if it is still held.
    pub fn pinned_seq(&self, pin: PinId) -> Option<u64> {
        lock(&self.inner).pins.seq_of(pin)
    }

    /// Writes out every pinned object and records the new `last_seq`
    /// durably: afterwards replay needs nothing older than the newest
    /// entry. Freeze and clean unmount call this.
    pub fn reclaim_all(&self) -> Result<(), JournalError> {
        let newest = lock(&self.inner).next_seq.saturating_sub(1);
        self.reclaim_through(newest)?;
        Ok(())
    }

    /// Frees at least `blocks` of ring space if pins allow: flushes the
    /// oldest pinned objects, then writes and flushes an entry recording
    /// the advanced `last_seq`. Returns whether space was freed.
    fn reclaim(&self, blocks: u64) -> Result<bool, JournalError> {
        let through = {
            let inner = lock(&self.inner);
            let by_space = inner.ring.seq_freeing(blocks);
            let by_tracking = (inner.pins.len() > self.options.max_tracked_seqs)
                .then(|| inner.pins.front_seq() + (inner.pins.len() / 2) as u64);
            match by_space.max(by_tracking) {
                Some(seq) => seq,
                None => inner.next_seq.saturating_sub(1),
            }
        };
        self.reclaim_through(through)
    }

    fn reclaim_through(&self, through: u64) -> Result<bool, JournalError> {
        let (pinned, before) = {
            let inner = lock(&self.inner);
            if let Some(error) = &inner.error {
                return Err(error.sticky());
            }
            (
                inner.pins.pins_up_to(through),
                inner.ring.durable_last_seq(),
            )
        };
        for (pin, seq, object) in pinned {
            match object.flush(seq) {
                Ok(()) => {
                    self.unpin(pin);
                    if self.reclaim_room_low() {
                        self.record_reclaim_progress()?;
                    }
                }
                Err(PinFlushError::Declined) => {
                    // Name what has kept every other thread from writing the
                    // object too, if anything did: that, not this thread's
                    // lock, is why the journal is out of room.
                    let inner = lock(&self.inner);
                    let why = match (&inner.last_reclaim_failure, inner.reclaim_failing) {
                        (Some(failure), true) => {
                            format!(
                                "and the latest attempt to write a pinned object failed: {failure}"
                            )
                        }
                        _ => "which this thread cannot do (it holds a lock the write needs)".into(),
                    };
                    return Err(JournalError::PinFlushDeclined { seq, why });
                }
                Err(PinFlushError::Failed(message)) => {
                    let mut inner = lock(&self.inner);
                    inner.reclaim_failures += 1;
                    inner.last_reclaim_failure =
                        Some(format!("the object pinning seq {seq}: {message}"));
                    inner.reclaim_failing = true;
                    return Err(JournalError::PinFlushFailed { seq, message });
                }
            }
        }
        lock(&self.inner).reclaim_failing = false;
        self.record_reclaim_progress()?;
        let after = lock(&self.inner).ring.durable_last_seq();
        Ok(after > before)
    }

    /// Moves last_seq past every seq whose objects are all written, and
    /// makes that durable in a (possibly empty) entry: only then may their
    /// ring space be reused.
    fn record_reclaim_progress(&self) -> Result<(), JournalError> {
        let advanced = {
            let mut inner = lock(&self.inner);
            inner.pins.advance() > inner.ring.durable_last_seq()
        };
        if advanced {
            let seq = self.reserve_at(0, Watermark::Reclaim)?.seq();
            self.flush_seq(seq)?;
        }
        Ok(())
    }

    /// Whether a reclaim pass should record its progress before it writes
    /// more objects. Each object it writes journals where it went, and a
    /// long pass over a small ring could fill the part kept for reclaim
    /// with those records before any space is given back; recording
    /// progress frees the seqs written so far first. Three entries: the
    /// open one, the progress entry, and what the ring's end may waste.
    fn reclaim_room_low(&self) -> bool {
        lock(&self.inner).ring.free_blocks() < 3 * self.full_entry_blocks()
    }

    /// Blocks a full entry takes in the ring.
    fn full_entry_blocks(&self) -> u64 {
        entry::entry_blocks(
            self.options.entry_bytes as usize,
            self.options.region.block_size as usize,
        ) as u64
    }

    /// Ring space a reclaim for one more entry frees: the entry, reclaim's
    /// own entry recording the new last_seq, and the share kept for
    /// reclaim; at least twice the low watermark (hysteresis, so reclaim
    /// runs in batches).
    fn reclaim_target(&self, inner: &Inner) -> u64 {
        let low_watermark = self.low_watermark(inner.ring.total_blocks());
        (2 * self.full_entry_blocks() + self.reclaim_reserve_blocks(inner)).max(low_watermark * 2)
    }

    fn reclaim_reserve_blocks(&self, inner: &Inner) -> u64 {
        let total = inner.ring.total_blocks();
        let entry_blocks = self.full_entry_blocks();
        // Room for one full entry even when the ring's end wastes up to
        // another entry's worth: reclaim's own entry must always fit.
        (total / 64).max(2 * entry_blocks).min(total / 4)
    }

    /// Whether the latest reclaim failed to write a pinned object and none
    /// has written every object it reached since.
    pub fn reclaim_failing(&self) -> bool {
        lock(&self.inner).reclaim_failing
    }

    /// Whether reclaim should run now (free space below the watermark or
    /// too many seqs tracked); the engine's background reclaim asks this.
    pub fn wants_reclaim(&self) -> bool {
        let inner = lock(&self.inner);
        let total = inner.ring.total_blocks();
        inner.ring.free_blocks() < self.low_watermark(total)
            || inner.pins.len() > self.options.max_tracked_seqs
    }

    /// Runs reclaim for room for one more entry, whatever the watermark:
    /// for a caller whose reservation found no room while it held a lock
    /// the pinned objects' writes need, and who has since let go of it.
    pub fn reclaim_for_entry(&self) -> Result<bool, JournalError> {
        let wanted = self.reclaim_target(&lock(&self.inner));
        self.reclaim(wanted)
    }

    /// Runs reclaim if [`Journal::wants_reclaim`] says so, freeing up to
    /// twice the low watermark.
    pub fn reclaim_if_needed(&self) -> Result<bool, JournalError> {
        if !self.wants_reclaim() {
            return Ok(false);
        }
        let total = lock(&self.inner).ring.total_blocks();
        self.reclaim(self.low_watermark(total) * 2)
    }

    /// Free blocks below which reclaim starts: the configured share of the
    /// ring, but at least what opening an entry needs (its own room, the
    /// share kept for reclaim, and one entry of slack), so that callers
    /// who reclaim before taking their own locks rarely leave it to the
    /// reservation itself.
    fn low_watermark(&self, total: u64) -> u64 {
        let entry_blocks = self.full_entry_blocks();
        (total * u64::from(self.options.reclaim_below_64ths) / 64).max(4 * entry_blocks)
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
