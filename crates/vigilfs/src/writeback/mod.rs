//! Writeback: the dirty pages of an inode written to new blocks and made
//! durable, and every failure reported exactly once.
//!
//! # Copy-on-write
//!
//! Writeback of an inode is copy-on-write: the dirty pages get newly
//! allocated blocks, are written there ([`IoClass::Data`]), and then a
//! b-tree transaction replaces or splits the old extents in the range,
//! removes their rmap records and inserts the new ones, and sets the
//! inode's size, mtime and ctime — one transaction per
//! [`PAGES_PER_TRANSACTION`] pages, so its records fit a journal entry
//! however fragmented the file. The journal is flushed once, up to the
//! last of them; the old blocks are freed at each one's seq (reused only
//! once it is durable), and the pages are marked clean. Each transaction
//! naming new data blocks claims their checksums in its journal entry
//! ([`Transaction::claim_data`]): one device flush then makes the data and
//! the entry durable together, and a crash that kept the entry but lost
//! the data makes replay cut the entry off, so a crash can never keep an
//! extent whose data was lost. With no dirty pages but a write pending
//! (its pages all punched away), the transaction still sets the size and
//! times, so the size a write set is never lost.
//!
//! The one exception is a page over an unwritten (fallocated) block that
//! is not known bad: it is written in place, into that block, and the
//! transaction turns the block's piece of the extent into a written one.
//! Nothing committed reads an unwritten block, so until the transaction
//! is durable a crash still finds zeros there, never a mix. This is what
//! fallocate promises (the writes into it need no new space, so a program
//! that preallocated can write on a full filesystem), and why the write
//! path lets such pages go without a promise
//! ([`crate::pagecache::InodeState::preallocated`]). Once written, the
//! block is data like any other: the next writeback of the page is
//! copy-on-write again.
//!
//! # Three steps
//!
//! * *Take-off* ([`Writeback::take_off`], cache locked): the dirty
//!   entries' DIRTY mark becomes WRITEBACK and the inode is marked
//!   `syncing` (its `I_SYNC`: at most one writeback per inode in flight).
//! * *Flight* ([`Writeback::fly`], cache unlocked): allocation, device
//!   writes, the transactions and the journal flush, from the entries'
//!   bytes, which are shared and never changed in place.
//! * *Landing* ([`Writeback::land`], cache locked): each entry still
//!   marked WRITEBACK loses the mark and becomes clean, or dirty again if
//!   the writeback failed; an entry a write made DIRTY again meanwhile
//!   stays dirty. A panic during the flight still lands, as untried.
//!
//! A second writeback of the same inode (fsync racing the background
//! thread) waits for the one in flight, so what was dirty when it was
//! called is durable (or reported) when it returns; truncate, punch and
//! fallocate wait too. Reads, writes and writebacks of other inodes do not.
//!
//! # Error policy
//!
//! When writeback of an inode fails (device write error, no space for the
//! new blocks, journal failure):
//!
//! 1. The blocks just allocated are freed at seq 0 (never referenced), so a
//!    failed writeback leaks nothing and leaves the old extents untouched.
//! 2. **The pages stay dirty and cached**: the data is not dropped (Linux
//!    drops it), it is still readable and the next writeback retries it.
//! 3. The errno is set in the inode's word and the filesystem's word —
//!    **once per failure of new data**. Each dirty page remembers whether
//!    its current contents already failed writeback; a retry that fails
//!    again on pages that all failed before does not set the words again
//!    (the same loss must not be reported twice to a handle that already
//!    heard of it). Rewriting a page makes its contents new again. Every
//!    failed attempt, a retry's too, is told to the [`FailureListener`]
//!    (events, the error record): the words tell a loss once, the record
//!    counts how long the disk went on failing.
//! 4. A file deleted while its data was in flight lands without an error:
//!    its data has nowhere to go and nobody to tell.
//!
//! What fsync and syncfs then report is the file operations' business
//! ([`crate::inode::FsyncErrors`]).
//!
//! [`Transaction::claim_data`]: crate::btree::Transaction::claim_data

#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use errseq::{ErrSeq, Errno};
use xarray::{Mark, Span, XArray};

use crate::alloc::{AllocError, Extent as BlockRun};
use crate::device::{with_data_owner, BlockDevice, IoClass};
use crate::inode::extents::{punch, ExtentMap, Space, PAGES_PER_TRANSACTION};
use crate::inode::file_error::{device_errno, journal_errno, writeback_errno, FileError};
use crate::inode::{Extent, Timestamp, MAX_EXTENT_BLOCKS};
use crate::lost_data::Settle;
use crate::metadata::Metadata;
use crate::pagecache::{Cache, Outcome, Page, PageCache, PAGE, PAGE_BYTES};

/// Times one writeback writes its pages again after a failure report
/// marked the blocks they went to bad before the commit.
const BAD_BLOCK_RETRIES: u32 = 4;

/// What [`crate::inode::Files::writeback_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WritebackSummary {
    /// Pages written and made durable.
    pub pages_written: u64,
    /// Inodes whose writeback failed (their pages stay dirty).
    pub failed_inodes: Vec<u64>,
    /// The errno of the first failure, if any.
    pub first_error: Option<Errno>,
}

/// A failed writeback attempt, as the [`FailureListener`] hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritebackFailure {
    /// The file.
    pub ino: u64,
    /// What the device said.
    pub errno: Errno,
    /// The file bytes that failed: whole pages, cut at the file's size, so
    /// a short file's error does not claim bytes past its end.
    pub offset: u64,
    /// See `offset`.
    pub length: u64,
    /// The device bytes whose write failed (offset, length): not known
    /// when the journal or the allocator failed instead.
    pub device_bytes: Option<(u64, u64)>,
    /// The inode's generation, when its record could be read.
    pub generation: Option<u64>,
    /// A retry failing again: every page had failed before, and no error
    /// word was set for it (its loss was told already).
    pub again: bool,
}

/// Told of each failed writeback attempt, a retry's too. Called with the
/// data path locked: it must not call back into the data path.
pub type FailureListener = Box<dyn Fn(&WritebackFailure) + Send + Sync>;

/// A writeback of one inode between its snapshot and its landing: the
/// entries it took (their DIRTY mark moved to WRITEBACK, their bytes
/// shared, so writes meanwhile replace entries rather than change these)
/// and the inode's size, pending time and change count when it started.
pub(crate) struct Flight {
    ino: u64,
    /// The inode's page index, to tell it from a later one of the same
    /// inode number after a forget.
    pages: Arc<XArray<Page>>,
    entries: Vec<(Span, Page)>,
    size: u64,
    mtime: Option<Timestamp>,
    changes: u64,
}

/// How far a [`Flight`] got.
pub(crate) struct Landing {
    /// How many of its entries (from the first) are durable.
    pub(crate) durable: usize,
    /// How many of its entries (from the first) were committed in journal
    /// entries written whole, when the flush after them failed: part of
    /// `failure`, but a later flush may still make them durable.
    pub(crate) not_durable: usize,
    /// The entries of the batch that failed, and why (an empty range when
    /// only the inode record failed); the entries after it were not tried.
    pub(crate) failure: Option<(Range<usize>, Errno)>,
    /// The device bytes whose write failed, when the failure was a data
    /// write's (offset, length).
    pub(crate) failed_device_bytes: Option<(u64, u64)>,
}

/// Why a batch of pages could not be written: the errno, and the device
/// bytes when a data write failed (for the event, which names them).
struct PagesFailed {
    errno: Errno,
    device_bytes: Option<(u64, u64)>,
}

impl From<Errno> for PagesFailed {
    fn from(errno: Errno) -> PagesFailed {
        PagesFailed {
            errno,
            device_bytes: None,
        }
    }
}

/// Lands a flight that never reached [`Writeback::land`] (a panic during its
/// I/O) as untried: its pages dirty again, the inode free for the next
/// writeback, waiters woken. Nothing is reported: the panic is.
struct InFlight<'w> {
    writeback: &'w Writeback,
    flight: Option<Flight>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(flight) = self.flight.take() {
            let untried = Landing {
                durable: 0,
                not_durable: 0,
                failure: Some((0..0, Errno::EIO)),
                failed_device_bytes: None,
            };
            let _ = self.writeback.land(flight, untried);
        }
    }
}

/// The writeback of one filesystem's data: what it writes with, the page
/// cache it writes from, the filesystem's error word and who is told of
/// failures. See the module comment.
pub(crate) struct Writeback {
    device: Arc<dyn BlockDevice>,
    metadata: Arc<Metadata>,
    extents: ExtentMap,
    cache: Arc<PageCache>,
    /// The filesystem's writeback error word (syncfs reports from it).
    fs_errseq: ErrSeq,
    on_failure: OnceLock<FailureListener>,
    /// Pages written back and landed durable, ever (for metrics).
    pages_written: std::sync::atomic::AtomicU64,
}

impl Writeback {
    /// Writeback of the pages in `cache` to `device`, through `extents`,
    /// the blocks kept by `metadata`.
    pub(crate) fn new(
        extents: ExtentMap,
        device: Arc<dyn BlockDevice>,
        metadata: Arc<Metadata>,
        cache: Arc<PageCache>,
    ) -> Writeback {
        Writeback {
            extents,
            device,
            metadata,
            cache,
            fs_errseq: ErrSeq::new(),
            on_failure: OnceLock::new(),
            pages_written: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Sets who is told of each failed writeback attempt (the error words
    /// are set only for a failure of new data). Only the first listener
    /// set is kept.
    pub(crate) fn set_failure_listener(&self, listener: FailureListener) {
        let _ = self.on_failure.set(listener);
    }

    /// Pages written back durably since the mount.
    pub(crate) fn pages_written(&self) -> u64 {
        self.pages_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The filesystem's writeback error word.
    pub(crate) fn fs_errseq(&self) -> &ErrSeq {
        &self.fs_errseq
    }

    /// Writes back every inode with dirty pages (what background writeback,
    /// syncfs, freeze and unmount do). Errors go into the error words and
    /// to the failure listener; the summary says what happened.
    pub(crate) fn writeback_all(&self) -> WritebackSummary {
        // Inodes in flight are included: their writeback may fail and
        // leave pages dirty, and this must not return before it lands.
        let mut inos: Vec<u64> = self
            .cache
            .lock()
            .inodes
            .values()
            .filter(|state| {
                state.syncing
                    || state.mtime.is_some()
                    || state.pages.iter_marked(0, Mark::Dirty).next().is_some()
            })
            .map(|state| state.ino)
            .collect();
        inos.sort_unstable();
        let mut summary = WritebackSummary::default();
        for ino in inos {
            match self.writeback_inode(ino) {
                Ok(pages) => summary.pages_written += pages,
                Err(errno) => {
                    summary.failed_inodes.push(ino);
                    summary.first_error.get_or_insert(errno);
                }
            }
        }
        summary
    }

    /// Writes back the dirty pages of `ino`; returns how many were written.
    /// On failure the error words are set per the module's policy and the
    /// error (as errno) is returned. Waits first for a writeback of `ino`
    /// already in flight, so what was dirty when this was called is
    /// durable (or reported) when it returns.
    ///
    /// Three steps: [`Writeback::take_off`] (cache locked) moves the dirty
    /// entries from DIRTY to WRITEBACK; [`Writeback::fly`] (cache unlocked)
    /// writes them; [`Writeback::land`] (cache locked) settles their marks.
    pub(crate) fn writeback_inode(&self, ino: u64) -> Result<u64, Errno> {
        let Some(flight) = self.take_off(ino) else {
            return Ok(0);
        };
        let mut flight = InFlight {
            writeback: self,
            flight: Some(flight),
        };
        let landing = self.fly(flight.flight.as_ref().expect("set above"));
        self.land(flight.flight.take().expect("set above"), landing)
    }

    /// Starts a writeback of `ino` (see [`Writeback::writeback_inode`]):
    /// `None` when there is nothing to write (or no such inode loaded).
    pub(crate) fn take_off(&self, ino: u64) -> Option<Flight> {
        let mut cache = self.cache.lock();
        while cache.inodes.get(&ino)?.syncing {
            cache = self.cache.wait(cache);
        }
        let state = cache.inodes.get_mut(&ino)?;
        let entries: Vec<(Span, Page)> = state.pages.iter_marked(0, Mark::Dirty).collect();
        if entries.is_empty() && state.mtime.is_none() {
            return None;
        }
        debug_assert!(state.pages.iter_marked(0, Mark::Writeback).next().is_none());
        for (span, _) in &entries {
            state.pages.clear_mark(span.index(), Mark::Dirty);
            state.pages.set_mark(span.index(), Mark::Writeback);
        }
        state.syncing = true;
        self.metadata.lost.take_off(ino, &state.lost);
        Some(Flight {
            ino,
            pages: Arc::clone(&state.pages),
            entries,
            size: state.size,
            mtime: state.mtime,
            changes: state.changes,
        })
    }

    /// The I/O of a writeback, with the cache unlocked: the entries go in
    /// batches of at most [`PAGES_PER_TRANSACTION`] pages, one transaction
    /// each (so the records fit one journal entry however fragmented the
    /// file), and one journal flush makes all of them durable. With no
    /// entries, the inode record alone gets the size and time.
    pub(crate) fn fly(&self, flight: &Flight) -> Landing {
        let ino = flight.ino;
        let entries = &flight.entries;
        if entries.is_empty() {
            // Writes happened but a punched hole dropped all their pages:
            // the size and mtime they set still go to the record, or the
            // size would be lost at the next mount.
            return Landing {
                durable: 0,
                not_durable: 0,
                failure: self.commit_record(flight).err().map(|errno| (0..0, errno)),
                failed_device_bytes: None,
            };
        }
        if let Some(error) = self.metadata.journal.error() {
            // Nothing can be committed: the journal's error is the truth
            // (not, say, the ENOSPC its unreleasable frees would cause).
            return Landing {
                durable: 0,
                not_durable: 0,
                failure: Some((0..entries.len(), journal_errno(&error))),
                failed_device_bytes: None,
            };
        }
        let mut batches: Vec<Range<usize>> = Vec::new();
        let mut pages_in_batch = 0;
        for (at, (span, _)) in entries.iter().enumerate() {
            let pages = span.size() as usize;
            match batches.last_mut() {
                Some(batch) if pages_in_batch + pages <= PAGES_PER_TRANSACTION => {
                    batch.end = at + 1;
                    pages_in_batch += pages;
                }
                _ => {
                    batches.push(at..at + 1);
                    pages_in_batch = pages;
                }
            }
        }
        let mut newest_seq: Option<u64> = None;
        let mut committed = 0;
        let mut failure: Option<(Range<usize>, Errno)> = None;
        let mut failed_device_bytes = None;
        for batch in batches {
            let dirty = pages_of(&entries[batch.clone()]);
            match self.write_pages(ino, flight, &dirty) {
                Ok(seq) => {
                    newest_seq = newest_seq.max(seq);
                    committed = batch.end;
                }
                Err(failed) => {
                    failure = Some((batch, failed.errno));
                    failed_device_bytes = failed.device_bytes;
                    break;
                }
            }
        }
        if let Some(seq) = newest_seq {
            if let Err(error) = self.metadata.journal.flush_seq(seq) {
                // Committed but not durable: all of it failed.
                let end = failure.as_ref().map_or(committed, |(batch, _)| batch.end);
                failure = Some((0..end, journal_errno(&error)));
                // Entries written before the flush failed may still become
                // durable; entries never written cannot.
                let written = self.metadata.journal.status().written_seq >= seq;
                return Landing {
                    durable: 0,
                    not_durable: if written { committed } else { 0 },
                    failure,
                    failed_device_bytes,
                };
            }
        }
        Landing {
            durable: committed,
            not_durable: 0,
            failure,
            failed_device_bytes,
        }
    }

    /// Ends a writeback (see [`Writeback::writeback_inode`]): entries durable
    /// become clean, those of a failed batch dirty and failed, the rest
    /// dirty; the error words are set if the failure is new; the pending
    /// time goes if no write came meanwhile. Wakes whoever waits.
    pub(crate) fn land(&self, flight: Flight, mut landing: Landing) -> Result<u64, Errno> {
        let record = landing
            .failure
            .is_some()
            .then(|| self.extents.record(flight.ino));
        let generation = match &record {
            Some(Ok(record)) => Some(record.generation),
            _ => None,
        };
        if matches!(record, Some(Err(FileError::NotFound { .. }))) {
            // The file was deleted while its data was in flight (its last
            // link and last opener gone): the data has nowhere to go and
            // nobody to tell, so this is no error. Its pages go with the
            // forget that follows the deletion.
            landing = Landing {
                durable: 0,
                not_durable: 0,
                failure: None,
                failed_device_bytes: None,
            };
        }
        let mut cache = self.cache.lock();
        self.metadata.lost.land(flight.ino);
        let Cache { inodes, accounting } = &mut *cache;
        let written = pages_of(&flight.entries[..landing.durable]).len() as u64;
        self.pages_written
            .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
        let result = match &landing.failure {
            None => Ok(written),
            Some((_, errno)) => Err(*errno),
        };
        // A forgotten inode (deleted meanwhile) has nothing left to settle.
        if let Some(state) = inodes
            .get_mut(&flight.ino)
            .filter(|state| Arc::ptr_eq(&state.pages, &flight.pages))
        {
            state.syncing = false;
            let mut new_failure = false;
            for (at, (span, _)) in flight.entries.iter().enumerate() {
                let outcome = match &landing.failure {
                    _ if at < landing.durable => Outcome::Durable,
                    _ if at < landing.not_durable => Outcome::NotDurable,
                    Some((batch, _)) if batch.contains(&at) => Outcome::Failed,
                    _ => Outcome::Untried,
                };
                new_failure |= state.land_entry(accounting, *span, outcome);
            }
            match landing.failure {
                None if state.changes == flight.changes => state.mtime = None,
                None => {}
                Some((batch, errno)) => {
                    let failed = pages_of(&flight.entries[batch]);
                    // The error words are set once per failure: a retry of
                    // pages that failed before is the same unreported loss
                    // to the file's descriptors, unless it failed for
                    // another reason (a full disk, then a failing one):
                    // the words always hold the latest cause, and each
                    // descriptor hears of a change of cause once. The
                    // listener hears every attempt, so the error record
                    // and the event log count a disk that goes on failing
                    // (its events are damped).
                    let retried = !failed.is_empty();
                    for word in [&state.errseq, &self.fs_errseq] {
                        if new_failure || (retried && word.state().errno != Some(errno)) {
                            word.set(errno);
                        }
                    }
                    if let (Some(listener), Some((first, _)), Some((last, _))) =
                        (self.on_failure.get(), failed.first(), failed.last())
                    {
                        let (offset, length) = bytes_of_pages(*first, *last, flight.size);
                        listener(&WritebackFailure {
                            ino: flight.ino,
                            errno,
                            offset,
                            length,
                            device_bytes: landing.failed_device_bytes,
                            generation,
                            again: !new_failure,
                        });
                    }
                }
            }
        }
        cache.evict_over_budget();
        drop(cache);
        self.cache.wake_all();
        result
    }

    /// Writes `dirty` (sorted by index, not empty): pages over
    /// preallocated blocks in place, the rest copy-on-write to blocks
    /// allocated now; one transaction; the old blocks freed at its seq.
    /// Returns the seq, for the caller to make durable.
    fn write_pages(
        &self,
        ino: u64,
        flight: &Flight,
        dirty: &[(u64, &[u8])],
    ) -> Result<Option<u64>, PagesFailed> {
        let allocator = &self.metadata.allocator;
        // The extents over each run of the dirty pages, not over the span
        // from the first to the last: random rewrites of a large file
        // (a database's pages) would look up, copy and compare every
        // extent between them, more with each rewrite that splits one
        // (review 31: an fsync of 16 random pages of a 64 MiB file took
        // 12 ms after five rounds, and went on growing).
        let runs = page_runs(dirty.iter().map(|(index, _)| (*index, index + 1)));
        let lookup = || -> Result<BTreeMap<u64, Extent>, Errno> {
            let mut found = BTreeMap::new();
            for &(first, end) in &runs {
                let extents = self
                    .extents
                    .overlapping(ino, first, end)
                    .map_err(|_| Errno::EIO)?;
                found.extend(extents);
            }
            Ok(found)
        };
        let in_place_of = |before: &BTreeMap<u64, Extent>| -> Vec<Option<u64>> {
            dirty
                .iter()
                .map(|(index, _)| self.extents.preallocated_block(before, *index))
                .collect()
        };
        // The inode is syncing, so truncate, punch and fallocate leave its
        // extents alone until this lands; but the file's deletion (its last
        // link or last close) frees them at once. A deletion commits and
        // frees holding the record lock, so with the lock held across the
        // in-place writes the preallocated blocks found under it stay the
        // file's until written: never someone else's block by then. (Only
        // writes into fallocated space hold metadata changes up this way.)
        // A failure report can mark the blocks written here bad before they
        // are committed (the commit checks, under the record lock): the
        // pages are then written again, to new blocks, at most a few times.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut before = lookup()?;
            let mut in_place = in_place_of(&before);
            let mut records = None;
            if attempts > 1 {
                // Preallocated blocks may be the bad ones: copy on write.
                in_place.fill(None);
            } else if in_place.iter().any(Option::is_some) {
                records = Some(self.metadata.lock_records());
                before = lookup()?;
                in_place = in_place_of(&before);
            }
            let wanted = in_place.iter().filter(|block| block.is_none()).count() as u64;
            let runs = if wanted == 0 {
                Vec::new()
            } else {
                allocator
                    .allocate_promised(wanted, 0)
                    .map_err(|error| match error {
                        AllocError::NoSpace { .. } | AllocError::Fragmented { .. } => Errno::ENOSPC,
                        _ => Errno::EIO,
                    })?
            };
            let mut allocated = runs.iter().flat_map(|run| run.start..run.end());
            let blocks: Vec<u64> = in_place
                .iter()
                .map(|block| {
                    block.unwrap_or_else(|| {
                        allocated
                            .next()
                            .expect("one block allocated per page without one")
                    })
                })
                .collect();
            let written = with_data_owner(ino, || self.write_new_extents(dirty, &blocks));
            drop(records);
            let new_extents = match written {
                Ok(extents) => extents,
                Err(failed) => {
                    self.metadata.allocator.free_unreferenced(&runs);
                    return Err(failed);
                }
            };
            let (seq, freed) = match self.commit_extents(ino, flight, before, &new_extents) {
                Ok(done) => done,
                Err(FileError::WrittenToBadBlock { .. }) if attempts < BAD_BLOCK_RETRIES => {
                    // Given back: the bad ones never come out again.
                    self.metadata.allocator.free_unreferenced(&runs);
                    continue;
                }
                Err(error) => {
                    self.metadata.allocator.free_unreferenced(&runs);
                    return Err(writeback_errno(&error).into());
                }
            };
            if let Some(seq) = seq {
                // From here the new extents are referenced by committed state:
                // the old blocks are unreferenced at `seq` whether or not it
                // becomes durable, and are reused only once it is.
                for run in freed {
                    // A refused free means the block was already free: the
                    // allocator keeps it out of use and counts it.
                    let _ = allocator.free_data(run, seq);
                }
            }
            return Ok(seq);
        }
    }

    /// Writeback with no pages to write: the inode record alone gets the
    /// size and mtime, durably. A failure is returned (and reported by the
    /// fsync that asked) but sets no error word: no data was lost.
    fn commit_record(&self, flight: &Flight) -> Result<(), Errno> {
        let (seq, _) = self
            .commit_extents(flight.ino, flight, BTreeMap::new(), &[])
            .map_err(|error| writeback_errno(&error))?;
        if let Some(seq) = seq {
            self.metadata
                .journal
                .flush_seq(seq)
                .map_err(|error| journal_errno(&error))?;
        }
        Ok(())
    }

    /// Writes each dirty page to its block (`blocks`, in the same order)
    /// and returns the new extents (file offset → extent).
    fn write_new_extents(
        &self,
        dirty: &[(u64, &[u8])],
        blocks: &[u64],
    ) -> Result<Vec<(u64, Extent)>, PagesFailed> {
        let physical = blocks.iter().copied();
        let mut extents: Vec<(u64, Extent)> = Vec::new();
        // One buffer, reused: each extent is written as soon as the next
        // page does not continue it. Sized for the pages at hand: a buffer
        // for the longest extent (512 KiB) on every fsync of one page cost
        // the allocator a heap grow and trim, and page faults, each time.
        let longest = dirty.len().min(MAX_EXTENT_BLOCKS as usize);
        let mut bytes: Vec<u8> = Vec::with_capacity(longest * PAGE_BYTES);
        for ((index, page), block) in dirty.iter().zip(physical) {
            let checksum = crc32c::crc32c(page);
            if let Some((offset, extent)) = extents.last_mut() {
                let blocks = u64::from(extent.blocks());
                if *offset + blocks == *index
                    && extent.physical + blocks == block
                    && extent.blocks() < MAX_EXTENT_BLOCKS
                {
                    extent.checksums.push(checksum);
                    bytes.extend_from_slice(page);
                    continue;
                }
                self.write_extent_bytes(extent.physical, &bytes)?;
                bytes.clear();
            }
            extents.push((
                *index,
                Extent {
                    flags: 0,
                    physical: block,
                    checksums: vec![checksum],
                },
            ));
            bytes.extend_from_slice(page);
        }
        if let Some((_, extent)) = extents.last() {
            self.write_extent_bytes(extent.physical, &bytes)?;
        }
        Ok(extents)
    }

    fn write_extent_bytes(&self, physical: u64, bytes: &[u8]) -> Result<(), PagesFailed> {
        let offset = physical * PAGE;
        self.device
            .write_at(offset, bytes, IoClass::Data)
            .map_err(|error| PagesFailed {
                errno: device_errno(&error),
                device_bytes: Some((offset, bytes.len() as u64)),
            })
    }

    /// The transaction: the committed extents `before` (all of them in
    /// the range of `new_extents`) and their rmap records replaced, inode
    /// updated. Returns the seq and the old blocks no longer referenced
    /// (not those written in place, which the new extents name).
    fn commit_extents(
        &self,
        ino: u64,
        flight: &Flight,
        before: BTreeMap<u64, Extent>,
        new_extents: &[(u64, Extent)],
    ) -> Result<(Option<u64>, Vec<BlockRun>), FileError> {
        let mut after = before.clone();
        let mut freed = Vec::new();
        for (offset, extent) in new_extents {
            let mut removed = Vec::new();
            punch(
                &mut after,
                *offset,
                offset + u64::from(extent.blocks()),
                &mut removed,
            );
            let kept = BlockRun::new(extent.physical, u64::from(extent.blocks()));
            freed.extend(removed.into_iter().flat_map(|run| run.minus(kept)));
            after.insert(*offset, extent.clone());
        }
        let (size, mtime) = (flight.size, flight.mtime);
        let written: Vec<Extent> = new_extents
            .iter()
            .map(|(_, extent)| extent.clone())
            .collect();
        // The bytes of the pages written are lost no more, but for those
        // the pages carried no data for (see `crate::lost_data`). With no
        // record now, a refusal that records one meanwhile is of bytes
        // these pages do not carry: nothing to settle either way.
        let lost = if self.metadata.lost.is_empty() {
            Settle::Nothing
        } else {
            Settle::Written(
                new_extents
                    .iter()
                    .map(|(offset, extent)| {
                        (offset * PAGE, (offset + u64::from(extent.blocks())) * PAGE)
                    })
                    .collect(),
            )
        };
        let seq = self.extents.commit_written(
            ino,
            &before,
            &after,
            &written,
            Space::Reserve,
            &lost,
            |record| {
                record.size = record.size.max(size);
                if let Some(mtime) = mtime {
                    record.mtime = mtime;
                    // A chmod, link or rename after the write changed
                    // the ctime later: it stays.
                    record.ctime = record.ctime.max(mtime);
                }
            },
        )?;
        Ok((seq, freed))
    }
}

/// Sorted spans of pages `first..end` (they may overlap: a page written
/// again while in flight carries both marks) merged into runs that do
/// not, each page once.
pub(crate) fn page_runs(spans: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (first, end) in spans {
        match runs.last_mut() {
            Some(run) if first <= run.1 => run.1 = run.1.max(end),
            _ => runs.push((first, end)),
        }
    }
    runs
}

/// The pages of `entries`, large entries cut into their pages.
pub(crate) fn pages_of(entries: &[(Span, Page)]) -> Vec<(u64, &[u8])> {
    entries
        .iter()
        .flat_map(|(span, entry)| {
            (span.index()..=span.last()).map(move |index| {
                let at = ((index - span.index()) * PAGE) as usize;
                (index, &entry[at..at + PAGE_BYTES])
            })
        })
        .collect()
}

/// The file bytes of pages `first..=last` (4 KiB), cut at `size`, the
/// file's size (when the writeback started, for a failure): an error names
/// no byte past the end of the file. Whole pages when the size ends before
/// them (a truncate raced the writeback).
pub(crate) fn bytes_of_pages(first: u64, last: u64, size: u64) -> (u64, u64) {
    let start = first * 4096;
    let end = (last + 1) * 4096;
    match end.min(size) {
        cut if cut > start => (start, cut - start),
        _ => (start, end - start),
    }
}
