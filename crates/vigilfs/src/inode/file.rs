//! File data operations: open handles, read, write, truncate, fallocate,
//! SEEK_DATA/SEEK_HOLE, fsync and syncfs, with errors reported exactly as
//! Linux's errseq does (the PostgreSQL "fsyncgate" lesson: a writeback
//! error must never be lost).
//!
//! [`Files`] is the data path of one mounted filesystem. It works on the
//! [`pagecache`](crate::pagecache) (pages, marks, fills, eviction), hands
//! dirty pages to [`writeback`](crate::writeback) (copy-on-write, flights,
//! error attribution) and changes a file's block map through
//! [`ExtentMap`]. [`Handle`] is an open file description: it carries one
//! cursor into the inode's error word and one into the filesystem's,
//! sampled at [`Files::open`].
//!
//! # The operations
//!
//! * [`Files::write`] copies into the page cache only (a partial page is
//!   first read from its extent) and marks the page dirty. No device I/O
//!   happens for pages already cached or written whole. A whole aligned
//!   run of 16 pages goes in as one large entry.
//! * [`Files::read`] serves cached pages, and fills the rest from the
//!   extents, every block verified against its crc32c; a device error or
//!   a checksum mismatch is `EIO`, never wrong data. Holes and unwritten
//!   extents read as zeros; reads stop at the size.
//! * [`Files::truncate`] sets the size. Shrinking drops the cached pages
//!   wholly past the new size (dirty ones too: their data is cut off) and
//!   zeroes the tail of a partial last page (in the cache, marked dirty
//!   when that changed it, so the block on disk gets the zeros at the next
//!   writeback and a later grow reads zeros there). Then one transaction
//!   (preceded, when more than [`PAGES_PER_TRANSACTION`] extents lie past
//!   the end, by transactions deleting the last of them in batches)
//!   deletes the extents past the new end and trims the one across it,
//!   and sets the size, mtime and ctime; the released blocks are freed at
//!   its seq. Growing is the same transaction with nothing to cut. Not a
//!   durability point (like Linux).
//! * [`Files::fallocate`] with [`FallocateMode::ALLOCATE`] gives every
//!   hole block of the range newly allocated blocks, recorded as extents
//!   flagged [`Extent::UNWRITTEN`] (they read as zeros), and grows the
//!   size to the range's end unless [`FallocateMode::KEEP_SIZE`] is given.
//!   Blocks already mapped are left alone. One transaction per
//!   [`PAGES_PER_TRANSACTION`] blocks, each allocating before it changes
//!   anything. `PUNCH_HOLE | KEEP_SIZE` drops the cached pages wholly
//!   inside the range (dirty ones too), zeroes the range's part of a
//!   partial first or last page exactly like truncate's tail, and removes
//!   or trims the extents in range. `ZERO_RANGE` (optionally with
//!   `KEEP_SIZE`) is a punch of the range followed by an allocation of
//!   it: the range reads as zeros and has blocks (unwritten extents), and
//!   the size grows as with `ALLOCATE`. `PUNCH_HOLE` alone and every other
//!   mode are `EOPNOTSUPP`, as on Linux. Fallocated blocks are not a
//!   reservation: copy-on-write writes the data to new blocks and frees
//!   the unwritten ones.
//! * [`Files::seek_data_hole`] is `SEEK_DATA` / `SEEK_HOLE` in block units:
//!   data is a block with a written extent or a cached page (dirty or
//!   clean); an unwritten extent without a cached page is a hole (as on
//!   ext4), and so is the end of the file.
//! * [`Files::forget`] drops all state of an inode that no longer exists:
//!   its pages, dirty or not, and its error word.
//!
//! # Reporting errors
//!
//! [`Files::fsync`] = writeback of the inode, then
//! [`ErrSeq::check_and_advance`] on the inode's word with the handle's
//! cursor. [`Files::syncfs`] = writeback of every inode, a journal flush,
//! then the same on the filesystem's word. The order matters: the
//! writeback runs first, so an error it sets is reported by the same call.
//!
//! By default ([`FsyncErrors::UntilDurable`]) an fsync (or syncfs) whose
//! own writeback failed returns the error even when its cursor had already
//! heard of it: **fsync never returns success while data that was dirty
//! when it started is not durable**. Linux, which drops the pages, returns
//! 0 on a second fsync at this point; here the data is still dirty, so 0
//! would be a lie. [`FsyncErrors::Once`] reports as Linux does (once per
//! handle, then 0 while the same pages keep failing), for programs tested
//! against Linux's behaviour; the pages are still kept and retried.
//!
//! So each handle's fsync returns `EIO` once for a failure, and once the
//! device works again the next fsync retries the pages and returns 0
//! (generic/441). A handle that never heard of the error gets it on its
//! next fsync even though the retry now succeeds, and so does a handle
//! opened after the failure when nobody has been told yet (generic/487):
//! [`ErrSeq::sample`] hands new openers the zero cursor while the error is
//! unreported. A handle opened after the error was reported starts past it
//! (generic/484). Dropping a handle ([`Files::release`]) reports nothing.
//! [`Files::peek_error`] and [`Files::fs_peek`] are for monitors: they
//! never consume an error.
//!
//! # Invariants and concurrency
//!
//! * An extent is never overwritten in place: live blocks are only read.
//! * A page is marked clean only after the transaction referencing its new
//!   blocks is durable (writeback's landing).
//! * The size in memory is at least the size on disk; the inode record gets
//!   it at writeback.
//! * A write, truncate or punch waits until no fill has its pages
//!   reserved; truncate, punch and fallocate also wait while a writeback
//!   of the inode is in flight (its transaction would bring back extents
//!   they removed). They still commit their transaction holding the cache
//!   lock (their journal commit is not a flush).
//! * A write whose partial first or last page is not cached reads that
//!   block with the cache unlocked, and uses it only if the inode's change
//!   count did not move meanwhile (else it reads again; after three tries
//!   it reads holding the lock, so it cannot starve).
//!
//! Inode-record updates take the metadata's record lock
//! ([`Metadata::lock_records`]), shared with [`Namespace`], so attribute
//! changes and writeback never lose each other's fields. Inode state is
//! kept until [`Files::forget`] (the mounted filesystem calls it when an
//! inode is deleted); the background writeback thread lives in the
//! mounted layer and calls [`Files::writeback_all`]. An unlinked file
//! stays while open (the namespace's orphan list). Only 4 KiB filesystem
//! blocks are supported.
//!
//! [`Metadata::lock_records`]: crate::metadata::Metadata::lock_records
//! [`Namespace`]: super::Namespace
//! [`ErrSeq::check_and_advance`]: errseq::ErrSeq::check_and_advance
//! [`ErrSeq::sample`]: errseq::ErrSeq::sample

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::BitOr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};

use errseq::{Errno, Since};
use xarray::Mark;

use super::extents::{
    holes_between, punch, unwritten_extents, ExtentMap, Space, PAGES_PER_TRANSACTION,
};
use super::file_error::{FileError, FileResult};
use super::record::{inode_key, Extent, FileType, Timestamp, MAX_FILE_BYTES};
use crate::alloc::{AllocError, Extent as BlockRun, REWRITE_NODE_BLOCKS};
use crate::btree::TreeId;
use crate::device::BlockDevice;
use crate::format::Superblock;
use crate::metadata::Metadata;
use crate::pagecache::{
    Backing, Cache, CacheStats, HoleTally, InodeState, Page, PageCache, PromiseBudget, LARGE_ORDER,
    LARGE_PAGES, PAGE, PAGES_PER_FILL, PAGE_BYTES,
};
use crate::writeback::{page_runs, FailureListener, Writeback, WritebackSummary};

mod allocated;
mod lost;
mod read;
mod rescue;
mod space;
mod sync;
mod write;

/// An open file description: the inode and this opener's cursors into the
/// inode's and the filesystem's error words. Not `Clone`: each open has its
/// own cursors.
#[derive(Debug)]
pub struct Handle {
    ino: u64,
    cursor: Since,
    fs_cursor: Since,
}

impl Handle {
    /// The inode this handle has open.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// This handle's cursor into the filesystem's error word (for syncfs
    /// through it).
    pub fn fs_cursor_mut(&mut self) -> &mut Since {
        &mut self.fs_cursor
    }
}

/// Data of one inode not written back yet, from [`Files::unwritten`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwritten {
    /// The inode.
    pub ino: u64,
    /// Its first and last page not written back (none when only its size or
    /// time is waiting).
    pub first_page: Option<u64>,
    /// See `first_page`.
    pub last_page: Option<u64>,
    /// Pages not written back.
    pub pages: u64,
    /// The runs of pages not written back, as (first, end) page numbers.
    pub runs: Vec<(u64, u64)>,
    /// The first and last of those pages whose contents are in no journal
    /// entry on the device. The others were written, with the entry naming
    /// them, before a flush failed: not known durable, yet a later flush
    /// (the unmount's) may still make them so.
    pub never_written: Option<(u64, u64)>,
    /// The size writes gave the file (what a cut may take back to the
    /// size on disk).
    pub size: u64,
    /// Byte ranges already lost, as (start, end): the kernel's write-back
    /// of a shared mapping of them was refused with `lost_errno` (see
    /// [`Files::cache_write_refused`]).
    pub lost: Vec<(u64, u64)>,
    /// See `lost`.
    pub lost_errno: Option<i32>,
}

/// How [`Files::fallocate`] changes a range: Linux's `FALLOC_FL_*` bits,
/// kept as given so unknown bits are refused rather than ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FallocateMode(u32);

impl FallocateMode {
    /// Mode 0: every hole in the range gets blocks, recorded as unwritten
    /// extents (read as zeros), and the size grows to the range's end.
    pub const ALLOCATE: FallocateMode = FallocateMode(0);
    /// `FALLOC_FL_KEEP_SIZE`: the size stays as it is.
    pub const KEEP_SIZE: FallocateMode = FallocateMode(libc::FALLOC_FL_KEEP_SIZE as u32);
    /// `FALLOC_FL_PUNCH_HOLE`: the range is deallocated and reads as zeros.
    /// Linux accepts it only together with [`FallocateMode::KEEP_SIZE`].
    pub const PUNCH_HOLE: FallocateMode = FallocateMode(libc::FALLOC_FL_PUNCH_HOLE as u32);
    /// `FALLOC_FL_ZERO_RANGE`: the range reads as zeros and is allocated;
    /// the size grows to the range's end unless with
    /// [`FallocateMode::KEEP_SIZE`].
    pub const ZERO_RANGE: FallocateMode = FallocateMode(libc::FALLOC_FL_ZERO_RANGE as u32);

    /// The mode from the bits a system call passed.
    pub fn from_bits(bits: u32) -> FallocateMode {
        FallocateMode(bits)
    }

    /// The bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: FallocateMode) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for FallocateMode {
    type Output = FallocateMode;

    fn bitor(self, other: FallocateMode) -> FallocateMode {
        FallocateMode(self.0 | other.0)
    }
}

/// What [`Files::seek_data_hole`] looks for (`SEEK_DATA`, `SEEK_HOLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// The first byte at or after the offset that is data.
    Data,
    /// The first byte at or after the offset that is in a hole (the end of
    /// the file counts as one).
    Hole,
}

/// The data path of one mounted filesystem. See the module comment.
pub struct Files {
    metadata: Arc<Metadata>,
    extents: ExtentMap,
    pub(crate) cache: Arc<PageCache>,
    pub(crate) writeback: Writeback,
    /// [`FsyncErrors::Once`] when set.
    report_once: AtomicBool,
    /// Whether replacements are ordered after their data (see
    /// [`Files::set_auto_da_alloc`]).
    auto_da_alloc: AtomicBool,
    /// Files truncated to nothing from a non-empty size, being rewritten in
    /// place: their new data is written back at their last close, or
    /// before an fsync's commit if one comes first, as ext4's
    /// `auto_da_alloc` does ([`Files::write_back_ordered`]). Other flushes
    /// of the journal meanwhile may make the truncate durable first.
    ordered: std::sync::Mutex<BTreeSet<u64>>,
    /// Each user's place in the filesystem's error word, for syncs by
    /// users who did not mount (see [`Files::syncfs_for_user`]).
    user_cursors: std::sync::Mutex<HashMap<u32, Since>>,
}

/// What fsync and syncfs report while the writeback of the same pages
/// keeps failing (see the module comment's error policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FsyncErrors {
    /// Every fsync whose own writeback fails returns the error: success
    /// only once the data is durable (PostgreSQL's lesson). The default.
    #[default]
    UntilDurable,
    /// As Linux: each error once per open file description; while the same
    /// pages keep failing, later fsyncs return 0. The pages still stay
    /// dirty and are retried (Linux drops them).
    Once,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Files")
            .field("fs_errseq", &self.writeback.fs_errseq())
            .finish_non_exhaustive()
    }
}

impl Files {
    /// The data path over `metadata`, writing data to `device` (the device
    /// the metadata lives on), for the filesystem `superblock` describes.
    pub fn new(
        device: Arc<dyn BlockDevice>,
        superblock: &Superblock,
        metadata: Arc<Metadata>,
    ) -> FileResult<Files> {
        let block_size = superblock.layout.block_size;
        if block_size as usize != PAGE_BYTES {
            return Err(FileError::UnsupportedBlockSize { block_size });
        }
        let cache = Arc::new(PageCache::new(
            Arc::clone(metadata.allocator.promised_pages()),
            Arc::clone(metadata.allocator.preallocated_pages()),
            Arc::clone(metadata.allocator.rewrite_pages()),
        ));
        let extents = ExtentMap::new(Arc::clone(&device), Arc::clone(&metadata));
        Ok(Files {
            writeback: Writeback::new(
                extents.clone(),
                device,
                Arc::clone(&metadata),
                Arc::clone(&cache),
            ),
            extents,
            metadata,
            cache,
            report_once: AtomicBool::new(false),
            auto_da_alloc: AtomicBool::new(true),
            ordered: std::sync::Mutex::new(BTreeSet::new()),
            user_cursors: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Loads the states of the files holding data lost before this mount
    /// (kept while any byte is lost): they carry it to fsync, reads and
    /// [`Files::unwritten`]. For the mount, once orphans are purged (a
    /// purged one's records went with it).
    pub fn load_lost_data(&self) {
        // The next syncfs hears of it once too.
        if let Some(first) = self.metadata.lost.all().first() {
            self.writeback
                .fs_errseq()
                .set(Errno::new(first.errno).unwrap_or(Errno::EIO));
        }
        // Under FsyncErrors::Once no fsync reports the loss through
        // `lost_errno`: the file's error word carries it, so the first
        // opener to sync hears of it once, as of an error of this mount
        // nobody was told of (review 49: no fsync ever did). Under
        // UntilDurable every fsync reports it until rewritten, and a word
        // set too would fail the rewrite's own fsync once more.
        let report_once = self.report_once.load(Ordering::Relaxed);
        let mut cache = self.cache.lock();
        for ino in self.metadata.lost.files() {
            // One that is not a regular file is fsck's to report.
            let Ok(state) = self.state(&mut cache.inodes, ino) else {
                continue;
            };
            if let Some(errno) = state.lost.errno().filter(|_| report_once) {
                state.errseq.set(errno);
            }
        }
    }

    /// The reads of file data the device failed and then served block by
    /// block since the last take, and how many more there were (see
    /// `recovered_reads.rs`).
    pub(crate) fn take_recovered_reads(&self) -> (Vec<super::recovered_reads::RecoveredRead>, u64) {
        self.extents.take_recovered_reads()
    }

    /// Sets what fsync and syncfs report while writeback keeps failing.
    pub fn set_fsync_errors(&self, policy: FsyncErrors) {
        self.report_once
            .store(policy == FsyncErrors::Once, Ordering::Relaxed);
    }

    /// Sets whether a replaced file's new data is written back before what
    /// makes the replacement durable (ext4's `auto_da_alloc`; on by
    /// default): a rename over another file ([`Files::auto_da_alloc`] is
    /// asked), the close of a file truncated to nothing (`ordered`).
    pub fn set_auto_da_alloc(&self, on: bool) {
        self.auto_da_alloc.store(on, Ordering::Relaxed);
    }

    /// Whether a replacement is ordered after its new data.
    pub fn auto_da_alloc(&self) -> bool {
        self.auto_da_alloc.load(Ordering::Relaxed)
    }

    /// Sets who is told of each new writeback failure (once per failure
    /// of new data, exactly when the error words are set): the mounted
    /// layer turns them into events and error-record entries. Only the
    /// first listener set is kept.
    pub fn set_failure_listener(&self, listener: FailureListener) {
        self.writeback.set_failure_listener(listener);
    }

    /// The size and the pending modification time writes not yet written
    /// back have given `ino`, if its data is in memory.
    pub fn cached_attributes(&self, ino: u64) -> Option<(u64, Option<Timestamp>)> {
        let cache = self.cache.lock();
        cache
            .inodes
            .get(&ino)
            .map(|state| (state.size, state.mtime))
    }

    /// Forgets the modification time writes not yet written back have
    /// given `ino`: an explicit `utimensat` replaces it (else the pending
    /// time would show in `stat` and be written back over the one set).
    pub fn clear_pending_mtime(&self, ino: u64) {
        // A writeback in flight would write the old time over the new one.
        let mut cache = self.cache.lock();
        while cache.inodes.get(&ino).is_some_and(|state| state.syncing) {
            cache = self.cache.wait(cache);
        }
        if let Some(state) = cache.inodes.get_mut(&ino) {
            state.mtime = None;
        }
    }

    /// The cache locked, with `ino`'s state loaded, no read filling any of
    /// its pages `first..=last`, and (with `quiesce`) no writeback of it in
    /// flight: what a change to those pages or to the extents needs.
    fn lock_settled(
        &self,
        ino: u64,
        first: u64,
        last: u64,
        quiesce: bool,
    ) -> FileResult<MutexGuard<'_, Cache>> {
        let mut cache = self.cache.lock();
        loop {
            let state = self.state(&mut cache.inodes, ino)?;
            if (quiesce && state.syncing) || state.fill_within(first, last).is_some() {
                cache = self.cache.wait(cache);
                continue;
            }
            return Ok(cache);
        }
    }

    /// The inode's state, loaded from its record on first use.
    fn state<'m>(
        &self,
        inodes: &'m mut HashMap<u64, InodeState>,
        ino: u64,
    ) -> FileResult<&'m mut InodeState> {
        let state = match inodes.entry(ino) {
            Entry::Occupied(occupied) => occupied.into_mut(),
            Entry::Vacant(vacant) => {
                let record = self.extents.record(ino)?;
                match record.file_type() {
                    FileType::Regular => {}
                    FileType::Directory => return Err(FileError::IsDirectory { ino }),
                    file_type => return Err(FileError::NotRegular { ino, file_type }),
                }
                let state = vacant.insert(InodeState::new(ino, record.size));
                // Lost by an earlier mount, or before the state was last
                // dropped (it is kept while any byte is lost).
                if let Some(lost) = self.metadata.lost.recorded(ino) {
                    state.lost = lost;
                }
                state
            }
        };
        Ok(state)
    }

    /// Opens regular file `ino`: samples both error words, so an error
    /// nobody has been told about yet is reported to this opener.
    pub fn open(&self, ino: u64) -> FileResult<Handle> {
        let mut cache = self.cache.lock();
        let state = self.state(&mut cache.inodes, ino)?;
        state.opens += 1;
        Ok(Handle {
            ino,
            cursor: state.errseq.sample(),
            fs_cursor: self.writeback.fs_errseq().sample(),
        })
    }

    /// Writes back the dirty pages of `ino` now, before a change that
    /// would make a program's replacement of a file durable without its
    /// data (a rename over another file, the close of a file truncated to
    /// nothing and rewritten). A failure goes into the error words, for
    /// the file's next fsync, as any writeback's: the change goes on.
    pub fn write_back_before_replacing(&self, ino: u64) {
        let _reported_later = self.writeback.writeback_inode(ino);
    }

    /// Orders `ino`'s data before the next commit (see `ordered`).
    pub fn write_before_next_commit(&self, ino: u64) {
        self.ordered_files().insert(ino);
    }

    /// Whether `ino` was ordered before the next commit and still has data
    /// to write; it no longer is (its caller writes it back now).
    pub fn take_ordered(&self, ino: u64) -> bool {
        // The set's lock is let go before the cache's is taken: truncate
        // takes them the other way round.
        let ordered = self.ordered_files().remove(&ino);
        ordered && !self.is_durable(ino)
    }

    /// Writes back the files ordered before the next commit: called just
    /// before a commit is made durable. Failures go into the error words.
    pub fn write_back_ordered(&self) {
        let ordered = std::mem::take(&mut *self.ordered_files());
        for ino in ordered {
            self.write_back_before_replacing(ino);
        }
    }

    /// The set of files ordered before the next commit. Taken after the
    /// cache's lock where both are held, never before it.
    fn ordered_files(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        // Inserts and removals of single numbers: a poisoned lock holds a
        // consistent set.
        self.ordered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes a handle. Reports nothing: closing does not consume errors.
    pub fn release(&self, handle: Handle) {
        self.closed(handle.ino);
    }

    /// One handle of `ino` was closed (the mounted layer keeps its handles
    /// shared, and says so here): once nothing keeps the inode's state (no
    /// handle, no page, no error nobody heard of), it is dropped, so a
    /// mount that reads every file of a large tree keeps no state for each.
    pub(crate) fn closed(&self, ino: u64) {
        let mut cache = self.cache.lock();
        if let Some(state) = cache.inodes.get_mut(&ino) {
            state.opens = state.opens.saturating_sub(1);
            if state.is_idle() {
                cache.inodes.remove(&ino);
            }
        }
    }

    /// Waits until no writeback is in flight: each has landed, durable or
    /// not.
    pub fn settle(&self) {
        let mut cache = self.cache.lock();
        while cache.inodes.values().any(|state| state.syncing) {
            cache = self.cache.wait(cache);
        }
    }

    /// Whether every write to `ino` is durable (nothing dirty, nothing in
    /// flight, no time waiting to be written).
    pub fn is_durable(&self, ino: u64) -> bool {
        self.cache
            .lock()
            .inodes
            .get(&ino)
            .is_none_or(|state| !state.unwritten())
    }

    /// The data not written back yet, per inode: what a filesystem that may
    /// no longer write loses.
    pub fn unwritten(&self) -> Vec<Unwritten> {
        let cache = self.cache.lock();
        let mut found: Vec<Unwritten> = cache
            .inodes
            .values()
            .filter(|state| state.unwritten())
            .map(|state| {
                let pages = state.unclean_pages();
                let mut never_written = pages
                    .iter()
                    .filter(|page| !state.unconfirmed.contains(page));
                let first_never_written = never_written.next().copied();
                let never_written = first_never_written
                    .map(|first| (first, never_written.last().copied().unwrap_or(first)));
                let runs = page_runs(pages.iter().map(|&page| (page, page + 1)));
                Unwritten {
                    ino: state.ino,
                    first_page: pages.first().copied(),
                    last_page: pages.last().copied(),
                    pages: pages.len() as u64,
                    runs,
                    never_written,
                    size: state.size,
                    lost: state.lost.ranges(),
                    lost_errno: state.lost.errno().map(Errno::get),
                }
            })
            .collect();
        found.sort_unstable_by_key(|unwritten| unwritten.ino);
        found
    }

    /// Sets the budget for clean cached pages to `bytes` (rounded down to
    /// whole pages), evicting at once if the cache is over it. Dirty pages
    /// do not count and are never evicted: writeback bounds them.
    pub fn set_cache_budget(&self, bytes: u64) {
        self.cache.set_budget(bytes);
    }

    /// Drops every clean cached page: the next reads of them go to the
    /// device. Dirty pages stay.
    pub fn drop_clean_pages(&self) {
        self.cache.drop_clean();
    }

    /// Files holding data lost to refused write-backs of shared mappings,
    /// and the bytes lost (see [`Files::cache_write_refused`]).
    pub fn lost_mapped(&self) -> (u64, u64) {
        let cache = self.cache.lock();
        cache
            .inodes
            .values()
            .filter(|state| !state.lost.is_empty())
            .fold((0, 0), |(files, bytes), state| {
                let lost: u64 = state
                    .lost
                    .ranges()
                    .iter()
                    .map(|(start, end)| end - start)
                    .sum();
                (files + 1, bytes + lost)
            })
    }

    /// Pages written back durably since the mount (for metrics).
    pub fn pages_written(&self) -> u64 {
        self.writeback.pages_written()
    }

    /// The page cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Drops everything kept for inode `ino`, which no longer exists: its
    /// pages, dirty or not (there is nowhere left to write them), and its
    /// error word. For the namespace layer, after the inode is deleted; a
    /// handle still open then finds no inode.
    pub fn forget(&self, ino: u64) {
        self.cache.lock().forget(ino);
        self.metadata.poison.forget_inode(ino);
        self.metadata.lost.forget_inode(ino);
    }
}

/// `offset..end` cut where transactions of [`PAGES_PER_TRANSACTION`] blocks
/// meet, so only the range's own edges are partial pages.
fn pieces(offset: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    let piece = PAGES_PER_TRANSACTION as u64 * PAGE;
    let mut start = offset;
    std::iter::from_fn(move || {
        (start < end).then(|| {
            let stop = ((start / piece + 1) * piece).min(end);
            let range = (start, stop);
            start = stop;
            range
        })
    })
}

/// `offset + length`, refused past the largest file offset (the last page
/// index must fit the file-block arithmetic).
/// The most one read returns (64 MiB): a longer read is short, as any
/// read(2) may be. The kernel asks FUSE for 1 MiB at most; the limit is
/// for library callers, whose length would otherwise be allocated whole
/// (a sparse file of 2^60 bytes is one truncate away).
pub const MAX_READ_BYTES: usize = 64 << 20;

fn checked_end(offset: u64, length: u64) -> FileResult<u64> {
    offset
        .checked_add(length)
        .filter(|&end| end <= MAX_FILE_BYTES)
        .ok_or(FileError::TooLarge { offset, length })
}
