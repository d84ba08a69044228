//! Scrub: read every block the filesystem uses, verify it, and hand every
//! failure found to whoever acts on it (the mounted filesystem's
//! notify-failure, or fsck's report of an unmounted image).
//!
//! What is read, in this order (a [`Cursor`] says where a scrub is, so an
//! interrupted one resumes there):
//!
//! 1. the three superblock copies (magic, version, checksum, layout);
//! 2. the journal entries replay would still need (each verified whole,
//!    and its seq checked, since reclaim may overwrite it meanwhile);
//! 3. the main region in block order, as the reverse map describes it:
//!    every b-tree node (the on-disk copy, whatever the cache holds:
//!    header, checksum, tree, level, block number, entries — the
//!    bad-block list and the poison records live in these nodes) and every
//!    extent of file data (each block against the crc32c its extent
//!    records; unwritten extents are read for media errors only). Blocks
//!    already poisoned are read again, and if one reads back matching its
//!    checksum the sink hears of it: the fault was on the way to the
//!    medium (a cable, a controller) or the device has recovered, and the
//!    data is intact after all.
//!
//! A read that fails is narrowed to the blocks that fail; a media error
//! (or an error the operating system gave for a real device) is a
//! [`FailureCause::Media`] finding, a mismatch a
//! [`FailureCause::Checksum`] one; an error injected by a `fail` fault
//! rule (a path failure, not the medium) is counted, not reported. The
//! scrub never changes anything itself, so it can run on a mounted
//! filesystem (findings of a block rewritten meanwhile are re-verified by
//! whoever acts on them) and on an image opened read-only.
//!
//! Speed: at most `rate` bytes per second when asked (a token bucket over
//! the bytes read), and between reads [`ScrubSink::pause`] lets the caller
//! hold the scrub back while foreground I/O runs.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::alloc::FailureCause;
use crate::btree::{BtreeError, TreeId};
use crate::device::{BlockDevice, ByteRange, DeviceError, DeviceErrorKind, IoClass, IoOperation};
use crate::format::layout::SUPERBLOCK_SIZE;
use crate::format::{
    read_superblock_copy, torn_by_one_crash, FormatError, Layout, Superblock, SuperblockCopy,
};
use crate::inode::{Extent, ExtentKey};
use crate::journal::decode_entry;
use crate::metadata::Metadata;
use crate::rmap::{self, Owner, RmapRecord};

/// The stages of a scrub, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// The superblock copies.
    Superblocks,
    /// The journal entries still needed.
    Journal,
    /// Nodes and file data of the main region.
    Main,
    /// Finished.
    Done,
}

impl Phase {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Superblocks => "superblocks",
            Phase::Journal => "journal",
            Phase::Main => "data and metadata",
            Phase::Done => "done",
        }
    }

    /// The byte stored in a persisted cursor.
    pub fn code(self) -> u8 {
        match self {
            Phase::Superblocks => 0,
            Phase::Journal => 1,
            Phase::Main => 2,
            Phase::Done => 3,
        }
    }

    /// The phase stored as `code`.
    pub fn from_code(code: u8) -> Option<Phase> {
        [Phase::Superblocks, Phase::Journal, Phase::Main, Phase::Done]
            .into_iter()
            .find(|phase| phase.code() == code)
    }
}

/// Where a scrub is: the phase, and in the main region the next block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The phase.
    pub phase: Phase,
    /// In [`Phase::Main`], the first block not scrubbed yet.
    pub block: u64,
}

impl Cursor {
    /// The start of a scrub.
    pub const START: Cursor = Cursor {
        phase: Phase::Superblocks,
        block: 0,
    };
}

/// One failure a scrub found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The failed device bytes.
    pub range: ByteRange,
    /// Media error or checksum mismatch.
    pub cause: FailureCause,
    /// What was being read, for people.
    pub what: String,
}

/// Where a scrub is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Where it is.
    pub cursor: Cursor,
    /// Bytes read so far (this run).
    pub bytes: u64,
    /// Bytes a whole scrub reads, estimated from the space in use.
    pub total_bytes: u64,
    /// Failures found so far.
    pub findings: u64,
}

/// Whoever a scrub reports to.
pub trait ScrubSink {
    /// A failure was found. `Break` stops the scrub.
    fn finding(&mut self, finding: &Finding) -> ControlFlow<()>;
    /// Progress, between reads. `Break` stops the scrub (the cursor says
    /// where it stopped).
    fn progress(&mut self, progress: &Progress) -> ControlFlow<()>;
    /// Block `index` of the extent of `ino` at file block `extent_offset`
    /// is poisoned for a checksum mismatch, yet read back matching its
    /// checksum: the data is whole again (a mounted filesystem lifts the
    /// poison).
    fn poisoned_block_reads_back(&mut self, _ino: u64, _extent_offset: u64, _index: u64) {}
    /// A read failed with an error that is not the medium's (a failing
    /// path): no finding (nothing is marked or moved), but what it covers
    /// was not verified. A mounted filesystem reports it as an error.
    fn unreadable(&mut self, _unreadable: &Unreadable) {}
    /// Called before each read: the place to wait while foreground I/O
    /// runs.
    fn pause(&mut self) {}
    /// Asked every [`THROTTLE_SLICE`] while the rate limit holds the scrub
    /// back: `false` cuts the wait short, and the next progress report is
    /// made at once so the sink can stop the scrub (a slow rate must not
    /// keep an unmount or a gone client waiting).
    fn keep_waiting(&mut self, progress: &Progress) -> bool {
        let _ = progress;
        true
    }
}

/// A read the device failed, not for its medium ([`ScrubSink::unreadable`]).
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The device bytes read.
    pub range: ByteRange,
    /// What lives there.
    pub what: String,
    /// The file whose data lives there, and the file byte it starts at
    /// (`None`: metadata).
    pub file: Option<(u64, u64)>,
    /// The device's error.
    pub error: DeviceError,
}

/// How long the rate limit sleeps before it asks the sink again.
pub const THROTTLE_SLICE: Duration = Duration::from_millis(100);

/// How a scrub runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubOptions {
    /// Most bytes read per second; `None`: as fast as the device goes.
    pub rate: Option<u64>,
    /// Only file data (fsck checks the rest itself).
    pub data_only: bool,
}

/// What a scrub run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Bytes read.
    pub bytes: u64,
    /// Failures found.
    pub findings: u64,
    /// Reads that failed for a reason other than the medium (an injected
    /// path failure), not reported as findings.
    pub unreadable: u64,
    /// Extents of file data not verified: the b-tree node holding their
    /// checksums is damaged (a finding of its own) or their record does
    /// not decode (which fsck reports).
    pub unverified: u64,
    /// Where it stopped: [`Phase::Done`] when it finished.
    pub cursor: Cursor,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Why a scrub could not go on.
#[derive(Debug, Error)]
pub enum ScrubError {
    /// The trees it walks failed.
    #[error("b-trees: {0}")]
    Btree(#[from] BtreeError),
    /// The reverse map failed.
    #[error("reverse map: {0}")]
    Rmap(#[from] rmap::RmapError),
}

/// What a scrub reads: a filesystem's metadata, its device and layout.
pub struct Scrubber<'a> {
    /// The metadata (trees, allocator, journal, poison).
    pub metadata: &'a Metadata,
    /// The device, read directly.
    pub device: &'a dyn BlockDevice,
    /// The layout.
    pub layout: Layout,
    /// An image not unmounted cleanly, whose superblocks no mount has
    /// rewritten since the crash: a copy torn by that crash is not a
    /// finding (the next mount rewrites it, as fsck notes).
    pub after_crash: bool,
}

/// Paces reads to a byte rate.
struct Throttle {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
    /// The sink asked to stop waiting: report progress at once.
    cut_short: bool,
}

impl Throttle {
    /// Counts `bytes` read and sleeps until the rate allows more, in
    /// slices, asking `sink` between them whether to go on waiting.
    fn consume(&mut self, bytes: u64, progress: &Progress, sink: &mut dyn ScrubSink) {
        self.bytes += bytes;
        let Some(rate) = self.rate.filter(|&rate| rate > 0) else {
            return;
        };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        loop {
            let Some(left) = due.checked_sub(self.started.elapsed()) else {
                return;
            };
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(THROTTLE_SLICE));
            if !sink.keep_waiting(progress) {
                self.cut_short = true;
                return;
            }
        }
    }
}

/// Whether a failed read says the medium failed (reported), rather than
/// a path failure a fault rule injected (only counted).
fn is_media(error: &DeviceError) -> bool {
    match error.kind {
        DeviceErrorKind::Media { .. } => true,
        DeviceErrorKind::Io => error.injected_by.is_none() && error.operation == IoOperation::Read,
        _ => false,
    }
}

/// The bytes a failed read names: the media error's range, else the
/// request's.
fn failed_range(error: &DeviceError, request: ByteRange) -> ByteRange {
    match error.kind {
        DeviceErrorKind::Media { failed } => failed,
        _ => request,
    }
}

/// Failed blocks of one extent, gathered into runs of neighbours with one
/// cause: each run is reported as one finding.
struct FailedBlocks {
    ino: u64,
    /// The extent's first file block and first device block.
    file_offset: u64,
    physical: u64,
    /// The run so far: its first and last block (counted in the extent),
    /// its device bytes and its cause.
    pending: Option<(u64, u64, ByteRange, FailureCause)>,
}

impl FailedBlocks {
    fn new(ino: u64, file_offset: u64, physical: u64) -> FailedBlocks {
        FailedBlocks {
            ino,
            file_offset,
            physical,
            pending: None,
        }
    }

    /// Block `block` of the extent failed (device bytes `bad`): it joins
    /// the run when it follows it with the same cause, else the run is
    /// reported and a new one starts.
    fn add(
        &mut self,
        run: &mut Run<'_, '_>,
        block: u64,
        bad: ByteRange,
        cause: FailureCause,
    ) -> ControlFlow<()> {
        if let Some((_, last, range, pending_cause)) = &mut self.pending {
            if *last + 1 == block && *pending_cause == cause {
                *last = block;
                range.end = range.end.max(bad.end);
                return ControlFlow::Continue(());
            }
        }
        let flushed = self.flush(run);
        self.pending = Some((block, block, bad, cause));
        flushed
    }

    /// Reports the run gathered so far, if any.
    fn flush(&mut self, run: &mut Run<'_, '_>) -> ControlFlow<()> {
        let Some((first, last, range, cause)) = self.pending.take() else {
            return ControlFlow::Continue(());
        };
        let (file, device) = (self.file_offset + first, self.physical + first);
        let what = if first == last {
            format!("inode {} block {file} (device block {device})", self.ino)
        } else {
            format!(
                "inode {} blocks {file}..={} (device blocks {device}..={})",
                self.ino,
                file + (last - first),
                device + (last - first)
            )
        };
        run.found(range, cause, what)
    }
}

struct Run<'s, 'a> {
    scrubber: &'s Scrubber<'a>,
    sink: &'s mut dyn ScrubSink,
    throttle: Throttle,
    stats: Stats,
    total_bytes: u64,
    last_progress: u64,
    data_only: bool,
}

impl Run<'_, '_> {
    fn progress(&mut self, cursor: Cursor, force: bool) -> ControlFlow<()> {
        self.stats.cursor = cursor;
        let force = force || std::mem::take(&mut self.throttle.cut_short);
        if !force && self.stats.bytes - self.last_progress < (1 << 20) {
            return ControlFlow::Continue(());
        }
        self.last_progress = self.stats.bytes;
        self.sink.progress(&Progress {
            cursor,
            bytes: self.stats.bytes,
            total_bytes: self.total_bytes,
            findings: self.stats.findings,
        })
    }

    /// Holds the scrub to its rate after reading `bytes`.
    fn pace(&mut self, bytes: u64) {
        let progress = Progress {
            cursor: self.stats.cursor,
            bytes: self.stats.bytes,
            total_bytes: self.total_bytes,
            findings: self.stats.findings,
        };
        self.throttle.consume(bytes, &progress, &mut *self.sink);
    }

    fn unreadable(
        &mut self,
        range: ByteRange,
        what: String,
        file: Option<(u64, u64)>,
        error: DeviceError,
    ) {
        self.stats.unreadable += 1;
        self.sink.unreadable(&Unreadable {
            range,
            what,
            file,
            error,
        });
    }

    fn found(&mut self, range: ByteRange, cause: FailureCause, what: String) -> ControlFlow<()> {
        self.stats.findings += 1;
        self.sink.finding(&Finding { range, cause, what })
    }

    /// Reads `range`; `Err` carries the device error. Paced before the
    /// read, so that no moment sees more read than the rate allows: an
    /// extent is read whole (up to 512 KiB), and read first and paced
    /// after, a slow scrub began with a burst of it.
    fn read(&mut self, range: ByteRange, class: IoClass) -> Result<Vec<u8>, DeviceError> {
        self.sink.pause();
        self.pace(range.len());
        let mut bytes = vec![0u8; range.len() as usize];
        let result = self.scrubber.device.read_at(range.start, &mut bytes, class);
        self.stats.bytes += range.len();
        result.map(|()| bytes)
    }

    fn superblocks(&mut self) -> ControlFlow<()> {
        let device = self.scrubber.device;
        let mut outcomes = Vec::new();
        for copy in SuperblockCopy::ALL {
            let Some(offset) = copy.offset(self.scrubber.layout.device_length) else {
                continue;
            };
            self.sink.pause();
            let range = ByteRange::at(offset, SUPERBLOCK_SIZE as u64);
            self.stats.bytes += range.len();
            self.pace(range.len());
            outcomes.push((copy, range, read_superblock_copy(device, copy)));
            // A sink that cut the rate's wait short hears at once, before
            // the next copy is read unpaced; what was read is still told.
            if self.progress(Cursor::START, false).is_break() {
                self.superblock_findings(outcomes)?;
                return ControlFlow::Break(());
            }
        }
        self.superblock_findings(outcomes)
    }

    /// Reports what reading the superblock copies found.
    fn superblock_findings(
        &mut self,
        outcomes: Vec<(SuperblockCopy, ByteRange, Result<Superblock, FormatError>)>,
    ) -> ControlFlow<()> {
        // A crash tears the primary or the backups, never both: on an
        // image left so, such a copy is what the next mount rewrites
        // without a report (and fsck notes it), not a finding.
        let mismatched: Vec<SuperblockCopy> = outcomes
            .iter()
            .filter(|(_, _, outcome)| matches!(outcome, Err(FormatError::ChecksumMismatch { .. })))
            .map(|(copy, _, _)| *copy)
            .collect();
        let torn_may_pass = self.scrubber.after_crash && torn_by_one_crash(&mismatched);
        for (copy, range, outcome) in outcomes {
            match outcome {
                Ok(_) => {}
                Err(FormatError::ChecksumMismatch { .. }) if torn_may_pass => {}
                Err(FormatError::Device(error)) if is_media(&error) => {
                    self.found(
                        failed_range(&error, range),
                        FailureCause::Media,
                        copy.to_string(),
                    )?;
                }
                Err(FormatError::Device(error)) => {
                    self.unreadable(range, copy.to_string(), None, error);
                }
                Err(error) => {
                    self.found(range, FailureCause::Checksum, format!("{copy}: {error}"))?;
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn journal(&mut self) -> ControlFlow<()> {
        let journal = &self.scrubber.metadata.journal;
        let (uuid, block_size) = journal.entry_identity();
        for (seq, range) in journal.live_entries() {
            match self.read(range, IoClass::Journal) {
                Ok(bytes) => match decode_entry(&bytes, &uuid, block_size) {
                    Ok(entry) if entry.header.seq == seq => {}
                    // Overwritten after reclaim: no longer needed.
                    Ok(_) => {}
                    Err(error) => {
                        let still_live = journal.live_entries().contains(&(seq, range));
                        if still_live {
                            self.found(
                                range,
                                FailureCause::Checksum,
                                format!("journal entry {seq}: {error}"),
                            )?;
                        }
                    }
                },
                Err(error) if is_media(&error) => {
                    self.found(
                        failed_range(&error, range),
                        FailureCause::Media,
                        format!("journal entry {seq}"),
                    )?;
                }
                Err(error) => self.unreadable(range, format!("journal entry {seq}"), None, error),
            }
            self.progress(
                Cursor {
                    phase: Phase::Journal,
                    block: 0,
                },
                false,
            )?;
        }
        ControlFlow::Continue(())
    }

    fn node(&mut self, block: u64, tree: TreeId, level: u8) -> ControlFlow<()> {
        self.sink.pause();
        let block_size = u64::from(self.scrubber.layout.block_size);
        let range = ByteRange::at(block * block_size, block_size);
        self.stats.bytes += block_size;
        self.pace(block_size);
        let what = format!("{tree} b-tree node at block {block} (level {level})");
        match self
            .scrubber
            .metadata
            .trees
            .verify_node_block(block, tree, level)
        {
            Ok(()) => ControlFlow::Continue(()),
            Err(BtreeError::Device(error)) if is_media(&error) => {
                self.found(failed_range(&error, range), FailureCause::Media, what)
            }
            Err(BtreeError::Device(error)) => {
                self.unreadable(range, what, None, error);
                ControlFlow::Continue(())
            }
            Err(_) if self.node_moved(block, tree, level) => ControlFlow::Continue(()),
            Err(error) => self.found(range, FailureCause::Checksum, format!("{what}: {error}")),
        }
    }

    /// Whether file block `file_block` of `ino` is somewhere else now than
    /// device block `physical` with checksum `checksum`, where the scrub
    /// found it: the file was rewritten there since (copy-on-write), the
    /// old block freed and perhaps reused, so the bytes read need not
    /// match the old checksum (review 34: a scrub beside busy writers
    /// reported such mismatches as failures of a healthy device). The
    /// block itself is looked up, not its extent, which a rewrite of any
    /// other block splits (review 35: rot was missed so). Asked at each
    /// mismatch only, so it costs nothing on a clean pass; a block changes
    /// owner only in a commit that maps the file block elsewhere first.
    /// When the lookup fails the mismatch stands: never hide rot on a
    /// guess.
    fn block_moved(&self, ino: u64, file_block: u64, physical: u64, checksum: u32) -> bool {
        let at = ExtentKey {
            ino,
            offset: file_block,
        };
        let found = self
            .scrubber
            .metadata
            .trees
            .last_at_or_before(TreeId::Extents, &at.encode());
        let Ok(found) = found else {
            return false;
        };
        let Some((key, value)) = found else {
            return true;
        };
        let (Ok(key), Ok(extent)) = (ExtentKey::decode(&key), Extent::decode(&value)) else {
            return false;
        };
        let Some(index) = file_block
            .checked_sub(key.offset)
            .filter(|&index| key.ino == ino && index < u64::from(extent.blocks()))
        else {
            // A hole now: punched or truncated away.
            return true;
        };
        extent.flags & Extent::UNWRITTEN != 0
            || extent.physical + index != physical
            || extent.checksums.get(index as usize) != Some(&checksum)
    }

    /// Whether b-tree node `block` of `tree` at `level` has moved since the
    /// reverse map said it was there (copy-on-write), its block freed and
    /// perhaps reused: what it holds now is no node to verify. When the
    /// reverse map cannot say, it has not.
    fn node_moved(&self, block: u64, tree: TreeId, level: u8) -> bool {
        let metadata = self.scrubber.metadata;
        if tree == TreeId::Rmap {
            return !metadata
                .allocator
                .rmap_nodes()
                .nodes()
                .contains(&(level, block));
        }
        let key = rmap::encode_key(block);
        match metadata.trees.get(TreeId::Rmap, &key) {
            Ok(Some(value)) => RmapRecord::decode(&key, &value)
                .is_ok_and(|record| record.owner != Owner::Node { tree, level }),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Reads the blocks of the extent `record` describes, skipping
    /// poisoned ones, and checks each against its checksum. Goes on with
    /// the device block up to which the record is done: its end, or less
    /// when the file changed since the reverse map was read (an extent
    /// cut short or moved), and the rest of its blocks belong to records
    /// the walk has not seen (a tail split off, another file's data).
    fn data(
        &mut self,
        record: &RmapRecord,
        ino: u64,
        offset: u64,
    ) -> Result<ControlFlow<(), u64>, ScrubError> {
        // Past the record's first block at least: the walk always moves on.
        let changed = record.start + 1;
        let metadata = self.scrubber.metadata;
        let key = ExtentKey { ino, offset };
        let value = match metadata.trees.get(TreeId::Extents, &key.encode()) {
            Ok(Some(value)) => value,
            // Deleted since the reverse map was read (or its first blocks
            // punched: the rest is a record of its own now).
            Ok(None) => return Ok(ControlFlow::Continue(changed)),
            // The node holding the extent's checksums is damaged: the
            // node is a finding of its own (where the walk meets it), and
            // the scrub goes on to the rest of the device.
            Err(BtreeError::CorruptNode { .. }) => {
                self.stats.unverified += 1;
                return Ok(ControlFlow::Continue(record.end()));
            }
            Err(BtreeError::Device(error)) if is_media(&error) => {
                self.stats.unverified += 1;
                return Ok(ControlFlow::Continue(record.end()));
            }
            Err(error) => return Err(error.into()),
        };
        let Ok(extent) = Extent::decode(&value) else {
            // A record the node's checksum vouches for, yet undecodable:
            // fsck reports it; the scrub cannot read its blocks' sums.
            self.stats.unverified += 1;
            return Ok(ControlFlow::Continue(record.end()));
        };
        if extent.physical != record.start {
            return Ok(ControlFlow::Continue(changed));
        }
        let block_size = u64::from(self.scrubber.layout.block_size);
        let blocks = u64::from(extent.blocks());
        let written = extent.flags & Extent::UNWRITTEN == 0;
        let poisoned: Vec<bool> = (0..blocks)
            .map(|at| {
                !metadata
                    .poison
                    .runs_within(ino, offset + at, offset + at + 1)
                    .is_empty()
            })
            .collect();
        let mut at = 0;
        while at < blocks {
            if poisoned[at as usize] {
                // Lost, unless it reads back intact now.
                if written {
                    let one = ByteRange::at((extent.physical + at) * block_size, block_size);
                    if let Ok(bytes) = self.read(one, IoClass::Data) {
                        if crc32c::crc32c(&bytes) == extent.checksums[at as usize] {
                            self.sink.poisoned_block_reads_back(ino, offset, at);
                        }
                    }
                }
                at += 1;
                continue;
            }
            let mut stop = at;
            while stop < blocks && !poisoned[stop as usize] {
                stop += 1;
            }
            let range = ByteRange::new(
                (extent.physical + at) * block_size,
                (extent.physical + stop) * block_size,
            );
            // Failing blocks next to each other are one finding (one
            // notice, one event): a run of rot or of bad sectors.
            let mut failed = FailedBlocks::new(ino, offset, extent.physical);
            match self.read(range, IoClass::Data) {
                Ok(bytes) if written => {
                    for (index, page) in bytes.chunks(block_size as usize).enumerate() {
                        let block = at + index as u64;
                        let checksum = extent.checksums[block as usize];
                        if crc32c::crc32c(page) != checksum
                            && !self.block_moved(
                                ino,
                                offset + block,
                                extent.physical + block,
                                checksum,
                            )
                        {
                            let bad =
                                ByteRange::at((extent.physical + block) * block_size, block_size);
                            if failed
                                .add(self, block, bad, FailureCause::Checksum)
                                .is_break()
                            {
                                return Ok(ControlFlow::Break(()));
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    // Narrow it down: which blocks fail on their own?
                    for block in at..stop {
                        let one = ByteRange::at((extent.physical + block) * block_size, block_size);
                        let found = match self.read(one, IoClass::Data) {
                            Ok(bytes)
                                if written
                                    && crc32c::crc32c(&bytes)
                                        != extent.checksums[block as usize]
                                    && !self.block_moved(
                                        ino,
                                        offset + block,
                                        extent.physical + block,
                                        extent.checksums[block as usize],
                                    ) =>
                            {
                                Some((one, FailureCause::Checksum))
                            }
                            Ok(_) => None,
                            Err(error) if is_media(&error) => {
                                Some((failed_range(&error, one), FailureCause::Media))
                            }
                            Err(error) => {
                                let file = Some((ino, (offset + block) * block_size));
                                self.unreadable(one, "file data".into(), file, error);
                                None
                            }
                        };
                        if let Some((bad, cause)) = found {
                            if failed.add(self, block, bad, cause).is_break() {
                                return Ok(ControlFlow::Break(()));
                            }
                        }
                    }
                }
            }
            if failed.flush(self).is_break() {
                return Ok(ControlFlow::Break(()));
            }
            at = stop;
        }
        Ok(ControlFlow::Continue(extent.physical + blocks))
    }

    /// The main region from block `from`, in block order: the records of
    /// the reverse map, with the rmap tree's own nodes (which have none)
    /// merged in.
    fn main(&mut self, from: u64) -> Result<ControlFlow<()>, ScrubError> {
        let metadata = self.scrubber.metadata;
        let mut rmap_nodes: Vec<(u64, u8)> = metadata
            .allocator
            .rmap_nodes()
            .nodes()
            .into_iter()
            .map(|(level, block)| (block, level))
            .filter(|&(block, _)| block >= from)
            .collect();
        rmap_nodes.sort_unstable();
        let mut nodes = rmap_nodes.into_iter().peekable();
        let mut records = metadata
            .trees
            .range(TreeId::Rmap, &rmap::encode_key(from), None);
        while let Some(entry) = records.next() {
            let (key, value) = entry?;
            let record = RmapRecord::decode(&key, &value)?;
            while let Some(&(block, level)) = nodes.peek() {
                if block > record.start {
                    break;
                }
                nodes.next();
                if self.rmap_node(block, level).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            // Stopping inside this record resumes at its start.
            self.stats.cursor = Cursor {
                phase: Phase::Main,
                block: record.start,
            };
            let flow = match record.owner {
                Owner::Node { tree, level } if !self.data_only => self
                    .node(record.start, tree, level)
                    .map_continue(|()| record.end()),
                Owner::Node { .. } => ControlFlow::Continue(record.end()),
                Owner::FileData {
                    ino,
                    file_offset_blocks,
                } => self.data(&record, ino, file_offset_blocks)?,
            };
            let ControlFlow::Continue(done_to) = flow else {
                return Ok(ControlFlow::Break(()));
            };
            if done_to < record.end() {
                // The file changed since this part of the reverse map was
                // read: what the record no longer covers belongs to records
                // read after it (review 36: the tail a write split off an
                // extent was never read, rot in it never found).
                records = metadata
                    .trees
                    .range(TreeId::Rmap, &rmap::encode_key(done_to), None);
            }
            let next = Cursor {
                phase: Phase::Main,
                block: done_to.min(record.end()),
            };
            if self.progress(next, false).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        for (block, level) in nodes {
            if self.rmap_node(block, level).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    fn rmap_node(&mut self, block: u64, level: u8) -> ControlFlow<()> {
        if self.data_only {
            return ControlFlow::Continue(());
        }
        self.stats.cursor = Cursor {
            phase: Phase::Main,
            block,
        };
        self.node(block, TreeId::Rmap, level)?;
        self.progress(
            Cursor {
                phase: Phase::Main,
                block: block + 1,
            },
            false,
        )
    }
}

/// Bytes a whole scrub reads: the superblock copies, the journal entries
/// still needed and every used block of the main region.
pub fn estimated_bytes(scrubber: &Scrubber<'_>) -> u64 {
    let metadata = scrubber.metadata;
    let status = metadata.allocator.status();
    let used = scrubber
        .layout
        .main
        .blocks
        .saturating_sub(status.free_blocks + status.pending_blocks + status.dropped_bad_blocks);
    let journal: u64 = metadata
        .journal
        .live_entries()
        .iter()
        .map(|(_, range)| range.len())
        .sum();
    3 * SUPERBLOCK_SIZE as u64 + journal + used * u64::from(scrubber.layout.block_size)
}

/// Scrubs from `from` to the end (see the module comment), reporting to
/// `sink`; the returned cursor says where it stopped when the sink asked
/// it to, [`Phase::Done`] when it finished.
pub fn run(
    scrubber: &Scrubber<'_>,
    from: Cursor,
    options: ScrubOptions,
    sink: &mut dyn ScrubSink,
) -> Result<Stats, ScrubError> {
    let started = Instant::now();
    let mut run = Run {
        scrubber,
        sink,
        throttle: Throttle {
            rate: options.rate,
            started,
            bytes: 0,
            cut_short: false,
        },
        stats: Stats {
            bytes: 0,
            findings: 0,
            unreadable: 0,
            unverified: 0,
            cursor: from,
            elapsed: Duration::ZERO,
        },
        total_bytes: estimated_bytes(scrubber),
        last_progress: 0,
        data_only: options.data_only,
    };
    let finished = (|| -> Result<ControlFlow<()>, ScrubError> {
        // Told at once, not after the first MiB: a slow scrub is running
        // from its start, for whoever asks.
        if run.progress(from, true).is_break() {
            return Ok(ControlFlow::Break(()));
        }
        if from.phase <= Phase::Superblocks && !run.data_only {
            run.stats.cursor = Cursor::START;
            if run.superblocks().is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        if from.phase <= Phase::Journal && !run.data_only {
            run.stats.cursor = Cursor {
                phase: Phase::Journal,
                block: 0,
            };
            if run.journal().is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        if from.phase <= Phase::Main {
            let main_start = scrubber.layout.main.start;
            let block = if from.phase == Phase::Main {
                from.block.max(main_start)
            } else {
                main_start
            };
            run.stats.cursor = Cursor {
                phase: Phase::Main,
                block,
            };
            return run.main(block);
        }
        Ok(ControlFlow::Continue(()))
    })()?;
    if finished.is_continue() {
        run.stats.cursor = Cursor {
            phase: Phase::Done,
            block: 0,
        };
    }
    let cursor = run.stats.cursor;
    let _ = run.progress(cursor, true);
    run.stats.elapsed = started.elapsed();
    Ok(run.stats)
}
