//! File data: open handles, a page cache, read, write, writeback, fsync and
//! syncfs, with errors reported exactly as Linux's errseq does (the
//! PostgreSQL "fsyncgate" lesson: a writeback error must never be lost).
//!
//! # What
//!
//! [`Files`] is the data path of one mounted filesystem. Per inode it keeps
//! the inode's writeback error word ([`ErrSeq`]), a page cache of 4 KiB
//! pages in an [`XArray`] (dirty entries carry [`Mark::Dirty`]) and the
//! size as writes left it. The filesystem has one more [`ErrSeq`] for
//! syncfs. [`Handle`] is an open file description: it carries one cursor
//! into each word, sampled at [`Files::open`].
//!
//! A page-cache entry is one page, or 16 pages (64 KiB, an order-4 entry)
//! when one write covered that whole aligned run: one entry, one mark and
//! one buffer instead of sixteen. A read filling a whole aligned run of
//! data blocks caches it as one large clean entry too. A large entry is
//! split back into page entries (keeping its marks and its pages' failed
//! state) as soon as part of it changes: a partial overwrite, a truncate or
//! punch across it. Eviction drops it whole, or splits it when only some
//! of its pages are over the budget.
//!
//! * [`Files::write`] copies into the page cache only (a partial page is
//!   first read from its extent) and marks the page dirty. No device I/O
//!   happens for pages already cached or written whole.
//! * [`Files::read`] serves cached pages, and reads the rest from the
//!   extents, verifying each block's crc32c; a device error or a checksum
//!   mismatch is `EIO`, never wrong data. Holes and unwritten extents read
//!   as zeros; reads stop at the size. A block read from a written extent
//!   is cached as a clean page, so repeated reads do not touch the device;
//!   holes and unwritten blocks are not cached (a cached page is data for
//!   [`Files::seek_data_hole`], and they are not).
//! * Writeback of an inode is copy-on-write: the dirty pages get newly
//!   allocated blocks, are written there ([`IoClass::Data`]), and then a
//!   b-tree transaction replaces or splits the old extents in the range,
//!   removes their rmap records and inserts the new ones, and sets the
//!   inode's size, mtime and ctime — one transaction per
//!   [`PAGES_PER_TRANSACTION`] pages, so its records fit a journal entry
//!   however fragmented the file. The journal is flushed once, up to the
//!   last of them, the old blocks are freed at each one's seq (reused only
//!   once it is durable), and the pages are marked clean. With no dirty pages but a
//!   write pending (its pages all punched away), the transaction still sets
//!   the size and times, so the size a write set is never lost.
//! * [`Files::truncate`] sets the size. Shrinking drops the cached pages
//!   wholly past the new size (dirty ones too: their data is cut off) and
//!   zeroes the tail of a partial last page (in the cache, marked dirty
//!   when that changed it, so the block on disk gets the zeros at the next
//!   writeback and a later grow reads zeros there). Then one transaction
//!   (preceded, when more than [`PAGES_PER_TRANSACTION`] extents lie past
//!   the end, by transactions deleting the last of them in batches)
//!   deletes the extents past the new end and trims the one across it (a
//!   shorter extent value under the same key, with fewer checksums), with
//!   their rmap records removed and re-inserted to match, and sets the
//!   size, mtime and ctime; the released blocks are freed at its seq.
//!   Growing is the same transaction with nothing to cut: a hole that
//!   reads as zeros. Truncate does not flush the journal (like Linux, it is
//!   not a durability point).
//! * [`Files::fallocate`] with [`FallocateMode::ALLOCATE`] gives every hole
//!   block of the range newly allocated blocks, recorded as extents flagged
//!   [`Extent::UNWRITTEN`] (they read as zeros and their checksums are
//!   placeholders, never checked), with rmap records as for written
//!   extents, and grows the size to the range's end unless
//!   [`FallocateMode::KEEP_SIZE`] is given. Blocks already mapped are left
//!   alone. One transaction per [`PAGES_PER_TRANSACTION`] blocks of the
//!   range, each allocating before it changes anything, so `ENOSPC` leaves
//!   the pieces before it done (as Linux filesystems may); not a
//!   durability point.
//! * `PUNCH_HOLE | KEEP_SIZE` drops the cached pages wholly inside the range
//!   (dirty ones too), zeroes the range's part of a partial first or last
//!   page (in the cache, marked dirty when that changed it, exactly like
//!   truncate's tail), and in one transaction per [`PAGES_PER_TRANSACTION`]
//!   blocks removes the extents wholly
//!   inside and trims or splits the ones across the edges (rmap to match);
//!   the released blocks are freed at its seq. The size never changes.
//!   `PUNCH_HOLE` alone and every other mode are `EOPNOTSUPP`, as on Linux.
//! * Writeback over an unwritten extent is the ordinary copy-on-write: the
//!   pages get new, written blocks and the unwritten blocks under them are
//!   freed; the unwritten pieces around them keep their flag.
//! * [`Files::seek_data_hole`] is `SEEK_DATA` / `SEEK_HOLE` in block units:
//!   data is a block with a written extent or a cached page (dirty or
//!   clean); an unwritten extent without a cached page is a hole (as on
//!   ext4), and so is the end of the file. At or past the size, or seeking
//!   data with none after the offset, is `ENXIO`.
//! * Clean pages are bounded by a budget ([`DEFAULT_CACHE_BUDGET`], changed
//!   with [`Files::set_cache_budget`]). A page that becomes clean (read
//!   from its extent, or written back) joins a global FIFO of
//!   (inode, entry); whenever the clean pages exceed the budget, the oldest
//!   entries are evicted (a large one whole), skipping those that became
//!   dirty, failed or vanished since. Dirty pages are never evicted (they would be lost):
//!   bounding them is background writeback's job, which compares
//!   [`CacheStats::dirty_bytes`] from [`Files::cache_stats`] with its limit
//!   and calls [`Files::writeback_all`].
//! * [`Files::forget`] drops all state of an inode that no longer exists:
//!   its pages, dirty or not, and its error word.
//! * [`Files::fsync`] = writeback of the inode, then
//!   [`ErrSeq::check_and_advance`] on the inode's word with the handle's
//!   cursor. [`Files::syncfs`] = writeback of every inode, a journal flush,
//!   then the same on the filesystem's word. The order matters: the
//!   writeback runs first, so an error it sets is reported by the same call.
//! * [`Files::peek_error`] and [`Files::fs_peek`] are for monitors: they use
//!   [`ErrSeq::peek`] and [`ErrSeq::check`] and never consume an error, so
//!   the next opener still hears about an error nobody reported.
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
//!    heard of it). Rewriting a page makes its contents new again.
//! 4. By default ([`FsyncErrors::UntilDurable`]) an fsync (or syncfs) whose
//!    own writeback failed returns the error even when its cursor had
//!    already heard of it: **fsync never returns success while data that
//!    was dirty when it started is not durable**. Linux, which drops the
//!    pages, returns 0 on a second fsync at this point; here the data is
//!    still dirty, so 0 would be a lie. The cursor is advanced all the same.
//!    [`FsyncErrors::Once`] reports as Linux does (once per handle, then 0
//!    while the same pages keep failing), for programs tested against
//!    Linux's behaviour; the pages are still kept and retried.
//!
//! So each handle's fsync returns `EIO` once for a failure, and once the
//! device works again the next fsync retries the pages and returns 0
//! (generic/441). A handle that never heard of the error gets it on its
//! next fsync even though the retry now succeeds, and so does a handle
//! opened after the failure when nobody has been told yet (generic/487):
//! [`ErrSeq::sample`] hands new openers the zero cursor while the error is
//! unreported. A handle opened after the error was reported starts past it
//! (generic/484). Dropping a handle ([`Files::release`]) reports nothing.
//!
//! # Invariants
//!
//! * An extent is never overwritten in place: live blocks are only read.
//! * A file's extents never overlap, each is at most [`MAX_EXTENT_BLOCKS`],
//!   and every extent has exactly one rmap record with the same start,
//!   length and file offset, changed in the same transaction (fsck checks
//!   both).
//! * A page is marked clean only after the transaction referencing its new
//!   blocks is durable.
//! * The size in memory is at least the size on disk; the inode record gets
//!   it at writeback.
//! * An unwritten extent's blocks are never read; splitting or trimming an
//!   extent keeps its flag on every piece.
//! * A large entry is aligned to its 16 pages and carries one set of marks
//!   for all of them; writeback writes it page by page like any other.
//! * Only writeback sets WRITEBACK, and only while its inode is `syncing`;
//!   at most one writeback per inode is in flight. A page counts as dirty
//!   while it carries DIRTY or WRITEBACK, and is never evicted then.
//! * Only a fill's reservation is ever locked, and only while the fill
//!   is unfinished; `fills` counts an inode's reservations.
//! * A clean cached page holds exactly what its written extent holds; holes
//!   and unwritten blocks are cached only as dirty pages (written to), so a
//!   cached page always counts as data.
//! * The page counts behind [`Files::cache_stats`] equal what the page
//!   caches hold: every page change goes through the few `InodeState`
//!   methods that update both (checked in debug builds on each call of
//!   [`Files::cache_stats`]). Every clean entry has an entry in the
//!   eviction FIFO (a stale one may name a newer entry at the same index,
//!   which is then evicted early: the order is approximate).
//!
//! # Concurrency and limits
//!
//! One mutex per [`Files`] (the cache lock) guards the map of inodes,
//! the page counts and the eviction order, and every change to a page
//! index is made under it. No device I/O happens under it on the data
//! path; waits are on one condition variable paired with it, signalled
//! whenever a writeback lands or a fill completes.
//!
//! * **Writeback** goes in three steps. Taking off (locked): the dirty
//!   entries' DIRTY mark becomes WRITEBACK and the inode is marked
//!   `syncing`. Flying (unlocked): allocation, device writes, the
//!   transactions and the journal flush, from the entries' bytes, which
//!   are shared and never changed in place (a write replaces the entry).
//!   Landing (locked): each entry still marked WRITEBACK loses the mark
//!   and becomes clean, or dirty again if the writeback failed; an entry
//!   a write made DIRTY again meanwhile stays dirty. Splitting a large
//!   entry in flight copies both marks to its pages. A second writeback
//!   of the same inode (fsync racing the background thread), a truncate,
//!   a punch and a fallocate wait while the inode is `syncing`; reads,
//!   writes and writebacks of other inodes do not.
//! * **Fills** use the xarray's entry locks: a read reserves the uncached
//!   pages it needs ([`XArray::lock_or_reserve`], a locked entry with no
//!   value, order 4 where a whole aligned run is free), reads the device
//!   unlocked and fills the reservations (or drops them: a hole, an
//!   error). A read reaching a page being filled waits for that fill
//!   rather than reading it again; a write, truncate or punch waits until
//!   no reservation lies in its range, and the locked entry refuses any
//!   store or erase meanwhile. Reservations are only made under the cache
//!   lock, so once a range is seen free of them it stays so while the
//!   lock is held.
//! * A write whose partial first or last page is not cached reads that
//!   block unlocked, and uses it only if the inode's change count did not
//!   move meanwhile (else it reads again; after three tries it reads
//!   holding the lock, so it cannot starve).
//! * Truncate, punch and fallocate still commit their transaction holding
//!   the cache lock (their journal commit is not a flush).
//!
//! Inode-record updates take the
//! metadata's record lock ([`Metadata::lock_records`]), shared with
//! [`Namespace`], so attribute changes and writeback never lose each
//! other's fields. Eviction is a FIFO, not an LRU: a page read often is
//! evicted as soon as one read once. Inode state is kept until
//! [`Files::forget`] (the mounted filesystem calls it when an inode is
//! deleted); the background writeback thread lives in the mounted layer
//! and calls [`Files::writeback_all`]. Each new writeback failure is told
//! to the [`FailureListener`] (events, error record). Fallocated blocks are
//! not a reservation: copy-on-write writes the data to new blocks and
//! frees the unwritten ones, so writing into a fallocated range can still
//! fail with `ENOSPC`. An unlinked file stays while open (the
//! namespace's orphan list). Before the transaction naming new data blocks
//! is committed, the journal is told to flush the device ahead of its next
//! entry ([`Journal::order_before_next_entry`]), so a crash can never keep
//! an extent whose data was lost. Only 4 KiB filesystem blocks are
//! supported.
//!
//! [`Metadata::lock_records`]: crate::metadata::Metadata::lock_records
//! [`Journal::order_before_next_entry`]: crate::journal::Journal::order_before_next_entry
//! [`Namespace`]: super::Namespace

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::{BitOr, Range};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use errseq::{ErrSeq, Errno, Since};
use thiserror::Error;
use xarray::{EntryGuard, Mark, Span, XArray};

use super::record::{
    inode_key, Extent, ExtentKey, FileType, InodeRecord, RecordError, Timestamp, MAX_EXTENT_BLOCKS,
};
use crate::alloc::{AllocError, Extent as BlockRun};
use crate::btree::{BtreeError, TreeId};
use crate::device::{BlockDevice, DeviceError, IoClass};
use crate::format::Superblock;
use crate::journal::JournalError;
use crate::metadata::Metadata;
use crate::rmap::{self, Owner, RmapError, RmapRecord};

/// The page (and filesystem block) size this module works in.
pub const PAGE_BYTES: usize = 4096;

const PAGE: u64 = PAGE_BYTES as u64;

/// Most pages one writeback transaction carries, and most file blocks one
/// fallocate, punch or truncate transaction covers: each page or block can
/// add or remove an extent and its rmap record, so this bounds a
/// transaction's records (a few thousand, tens of KiB) below what one
/// journal entry holds, however fragmented the file.
const PAGES_PER_TRANSACTION: usize = 512;

/// Why a file operation failed. [`FileError::errno`] maps every variant.
#[derive(Debug, Error)]
pub enum FileError {
    /// The inode does not exist.
    #[error("inode {ino} does not exist")]
    NotFound {
        /// The inode.
        ino: u64,
    },
    /// The inode is a directory.
    #[error("inode {ino} is a directory")]
    IsDirectory {
        /// The inode.
        ino: u64,
    },
    /// The inode is neither a regular file nor a directory.
    #[error("inode {ino} is a {file_type:?}, not a regular file")]
    NotRegular {
        /// The inode.
        ino: u64,
        /// What it is.
        file_type: FileType,
    },
    /// The offset or length runs past the largest file offset.
    #[error("offset {offset} + {length} bytes is past the largest file offset")]
    TooLarge {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        length: u64,
    },
    /// The filesystem's block size is not the page size.
    #[error("block size {block_size} is not supported (file data needs {PAGE_BYTES})")]
    UnsupportedBlockSize {
        /// The filesystem's block size.
        block_size: u32,
    },
    /// Reading a data block from the device failed.
    #[error("inode {ino} block {block} (device block {physical}): {source}")]
    Read {
        /// The inode.
        ino: u64,
        /// The file block.
        block: u64,
        /// The device block.
        physical: u64,
        /// The device's error.
        source: DeviceError,
    },
    /// A data block does not match its checksum.
    #[error("inode {ino} block {block} (device block {physical}): checksum mismatch")]
    Checksum {
        /// The inode.
        ino: u64,
        /// The file block.
        block: u64,
        /// The device block.
        physical: u64,
    },
    /// An inode or extent record is malformed.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] RecordError),
    /// The b-trees failed (I/O, journal, error state).
    #[error("b-trees: {0}")]
    Btree(#[from] BtreeError),
    /// The journal failed.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// An rmap record is malformed or its tree failed.
    #[error("rmap: {0}")]
    Rmap(#[from] RmapError),
    /// A writeback error reported to this handle (fsync, syncfs), or found
    /// by a monitor.
    #[error("writeback error: {0}")]
    Writeback(Errno),
    /// The operation or mode is not supported (fallocate modes other than
    /// allocation and punching a hole with the size kept).
    #[error("not supported: {what}")]
    NotSupported {
        /// What was asked for.
        what: &'static str,
    },
    /// A zero-length range where one is needed (fallocate).
    #[error("offset {offset} with length {length} is not a valid range")]
    InvalidRange {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        length: u64,
    },
    /// Seeking at or past the end of the file, or for data where there is
    /// none after the offset.
    #[error("inode {ino}: no {what} at or after offset {offset}")]
    NoSuchOffset {
        /// The inode.
        ino: u64,
        /// The offset asked for.
        offset: u64,
        /// What was sought.
        what: &'static str,
    },
    /// Blocks could not be allocated (fallocate); nothing changed.
    #[error("allocating blocks: {0}")]
    Allocate(#[from] AllocError),
}

impl FileError {
    /// The errno a system call reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FileError::NotFound { .. } => libc::ENOENT,
            FileError::IsDirectory { .. } => libc::EISDIR,
            FileError::NotRegular { .. } => libc::EINVAL,
            FileError::TooLarge { .. } => libc::EFBIG,
            FileError::UnsupportedBlockSize { .. } => libc::EINVAL,
            FileError::Read { .. } => libc::EIO,
            FileError::Checksum { .. } => libc::EIO,
            FileError::Corrupt(_) => libc::EIO,
            FileError::Btree(BtreeError::NoSpace { .. }) => libc::ENOSPC,
            FileError::Btree(_) => libc::EIO,
            FileError::Journal(_) => libc::EIO,
            FileError::Rmap(RmapError::Btree(BtreeError::NoSpace { .. })) => libc::ENOSPC,
            FileError::Rmap(_) => libc::EIO,
            FileError::Writeback(errno) => errno.get(),
            FileError::NotSupported { .. } => libc::EOPNOTSUPP,
            FileError::InvalidRange { .. } => libc::EINVAL,
            FileError::NoSuchOffset { .. } => libc::ENXIO,
            FileError::Allocate(AllocError::NoSpace { .. } | AllocError::Fragmented { .. }) => {
                libc::ENOSPC
            }
            FileError::Allocate(_) => libc::EIO,
        }
    }
}

/// A file operation's result.
pub type FileResult<T> = Result<T, FileError>;

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
}

/// What [`Files::writeback_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WritebackSummary {
    /// Pages written and made durable.
    pub pages_written: u64,
    /// Inodes whose writeback failed (their pages stay dirty).
    pub failed_inodes: Vec<u64>,
    /// The errno of the first failure, if any.
    pub first_error: Option<Errno>,
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

/// The page cache's counters, from [`Files::cache_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes of cached pages, clean and dirty.
    pub cached_bytes: u64,
    /// Bytes of dirty pages: what a background writeback thread compares
    /// with its limit (dirty pages are never evicted).
    pub dirty_bytes: u64,
    /// Clean pages evicted to stay within the budget since the [`Files`]
    /// was made.
    pub evicted_pages: u64,
}

/// The clean-page budget a new [`Files`] starts with.
pub const DEFAULT_CACHE_BUDGET: u64 = 256 << 20;

/// One cached page: 4 KiB, shared so readers copy out without holding it.
type Page = Arc<[u8]>;

/// Everything the one mutex of a [`Files`] guards.
struct Cache {
    /// Per-inode state, by inode.
    inodes: HashMap<u64, InodeState>,
    /// Page counts and the eviction order.
    accounting: Accounting,
}

/// Page counts for [`Files::cache_stats`] and the clean-page budget. Every
/// change to a page cache goes through the [`InodeState`] methods that keep
/// these right.
struct Accounting {
    /// Clean pages allowed to stay cached.
    budget_pages: u64,
    /// Cached pages, clean and dirty.
    cached_pages: u64,
    /// Dirty pages (a subset of the cached ones).
    dirty_pages: u64,
    /// Clean pages evicted so far.
    evicted_pages: u64,
    /// Pages in the order they became clean, as (inode, page index): the
    /// eviction order. Entries whose page became dirty, vanished or appears
    /// again later are skipped when reached (or dropped when the queue is
    /// compacted), so nothing has to find and remove them.
    clock: VecDeque<(u64, u64)>,
}

impl Accounting {
    fn clean_pages(&self) -> u64 {
        self.cached_pages - self.dirty_pages
    }
}

/// The order of a large page-cache entry: 16 pages, 64 KiB.
const LARGE_ORDER: u8 = 4;

/// Pages in a large entry.
const LARGE_PAGES: u64 = 1 << LARGE_ORDER;

/// Most pages one read reserves and fills at a time (1 MiB).
const PAGES_PER_FILL: u64 = 256;

/// Per-inode state, kept until [`Files::forget`].
struct InodeState {
    /// The inode.
    ino: u64,
    /// The inode's writeback error word.
    errseq: ErrSeq,
    /// Page index → entry; dirty entries carry [`Mark::Dirty`], entries
    /// being written back [`Mark::Writeback`]. An entry is one page (order
    /// 0) or an aligned run of [`LARGE_PAGES`] pages (order
    /// [`LARGE_ORDER`]), its bytes the pages' bytes in order; or a locked
    /// reservation that a read is filling. Shared so a fill can hold its
    /// reservations' guards with the cache lock dropped.
    pages: Arc<XArray<Page>>,
    /// Dirty pages whose current contents already failed writeback (and
    /// were reported into the error words), by page index.
    failed: BTreeSet<u64>,
    /// The size as writes left it.
    size: u64,
    /// The time of the latest write not yet written back.
    mtime: Option<Timestamp>,
    /// A writeback of this inode is between its snapshot and its landing
    /// (the inode's `I_SYNC`): another writeback, a truncate, a punch or a
    /// fallocate waits for it.
    syncing: bool,
    /// Reservations being filled by reads. While zero no page of this
    /// inode is reserved, and nothing needs to look for one.
    fills: usize,
    /// Bumped by every change to the inode's pages or extents: a block read
    /// from disk with the cache unlocked is still current only if this has
    /// not moved since.
    changes: u64,
}

/// A cached page: the entry holding it and where the page starts in the
/// entry's bytes.
struct CachedPage {
    entry: Page,
    at: usize,
}

impl CachedPage {
    fn bytes(&self) -> &[u8] {
        &self.entry[self.at..self.at + PAGE_BYTES]
    }
}

impl InodeState {
    /// The cached page at `index`, in whichever entry holds it.
    fn page(&self, index: u64) -> Option<CachedPage> {
        let (span, entry) = self.pages.load_entry(index)?;
        let at = ((index - span.index()) * PAGE) as usize;
        Some(CachedPage { entry, at })
    }

    /// Whether the entry starting at `first` is not clean: dirty, or being
    /// written back (its pages count as dirty until that is durable).
    fn unclean(&self, first: u64) -> bool {
        self.pages.is_marked(first, Mark::Dirty) || self.pages.is_marked(first, Mark::Writeback)
    }

    /// The first reservation a read is filling among pages
    /// `first..=last`, if any.
    fn fill_within(&self, first: u64, last: u64) -> Option<Span> {
        if self.fills == 0 {
            return None;
        }
        self.pages
            .find_conflict(first..=last)
            .into_iter()
            .find(|occupant| occupant.value.is_none())
            .map(|occupant| occupant.span)
    }

    /// Stores `page` at `index` as dirty contents that writeback has not
    /// tried yet (a large entry holding `index` is split first). An entry
    /// being written back keeps its WRITEBACK mark: the landing sees the
    /// DIRTY mark and leaves the page dirty.
    fn put_dirty(&mut self, accounting: &mut Accounting, index: u64, page: Page) {
        self.split(accounting, index);
        match self.pages.store(index, 0, page) {
            Ok(None) => accounting.cached_pages += 1,
            Ok(Some(_)) => {}
            // Nothing larger is left at `index`, and writers wait until no
            // fill has `index` reserved.
            Err(refused) => unreachable!("page cache refused a page: {:?}", refused.error),
        }
        if !self.pages.is_marked(index, Mark::Dirty) {
            if !self.pages.is_marked(index, Mark::Writeback) {
                accounting.dirty_pages += 1;
            }
            self.pages.set_mark(index, Mark::Dirty);
        }
        self.failed.remove(&index);
    }

    /// Stores the [`LARGE_PAGES`] pages from `first` (aligned), written
    /// whole, as one dirty large entry, replacing whatever was cached there.
    fn put_dirty_large(&mut self, accounting: &mut Accounting, first: u64, pages: Page) {
        let end = first + LARGE_PAGES;
        // Entries are aligned to their size, so none straddles `first`.
        let old: Vec<u64> = self
            .pages
            .iter_from(first)
            .map(|(span, _)| span.index())
            .take_while(|&index| index < end)
            .collect();
        for index in old {
            self.drop_entry(accounting, index);
        }
        if let Err(refused) = self.pages.store(first, LARGE_ORDER, pages) {
            unreachable!("page cache refused a large entry: {:?}", refused.error);
        }
        self.pages.set_mark(first, Mark::Dirty);
        accounting.cached_pages += LARGE_PAGES;
        accounting.dirty_pages += LARGE_PAGES;
    }

    /// Caches `page`, read from a written extent, as clean at `index` when
    /// nothing is cached or reserved there.
    fn put_clean(&mut self, accounting: &mut Accounting, index: u64, page: Page) {
        if self.pages.load(index).is_some() {
            return;
        }
        // Refused only when another read has `index` reserved: its fill
        // caches the same bytes.
        if self.pages.store(index, 0, page).is_ok() {
            accounting.cached_pages += 1;
            accounting.clock.push_back((self.ino, index));
        }
    }

    /// Replaces a large entry holding `index` by its pages, one entry each,
    /// with its DIRTY and WRITEBACK marks (the failed set is per page
    /// already). The page counts do not change; clean pages each get an
    /// eviction entry, as the newest.
    fn split(&mut self, accounting: &mut Accounting, index: u64) {
        self.split_into(accounting, index, false);
    }

    /// [`InodeState::split`], the clean pages' eviction entries first in
    /// the queue (`oldest`, for eviction) or last. Whether there was a
    /// large entry to split.
    fn split_into(&mut self, accounting: &mut Accounting, index: u64, oldest: bool) -> bool {
        let Some((span, entry)) = self.pages.load_entry(index) else {
            return false;
        };
        if span.order() == 0 {
            return false;
        }
        let dirty = self.pages.is_marked(span.index(), Mark::Dirty);
        let writeback = self.pages.is_marked(span.index(), Mark::Writeback);
        // Only a fill's reservation is ever locked, and this is a value.
        let _ = self.pages.erase(span.index());
        for page in span.index()..=span.last() {
            let at = ((page - span.index()) * PAGE) as usize;
            let bytes: Page = entry[at..at + PAGE_BYTES].into();
            if let Err(refused) = self.pages.store(page, 0, bytes) {
                unreachable!("page cache refused a split page: {:?}", refused.error);
            }
            if dirty {
                self.pages.set_mark(page, Mark::Dirty);
            }
            if writeback {
                self.pages.set_mark(page, Mark::Writeback);
            }
            if !dirty && !writeback && !oldest {
                accounting.clock.push_back((self.ino, page));
            }
        }
        if !dirty && !writeback && oldest {
            for page in (span.index()..=span.last()).rev() {
                accounting.clock.push_front((self.ino, page));
            }
        }
        true
    }

    /// Splits a large entry across `boundary` (holding `boundary` but
    /// starting before it), so a range starting or ending there covers
    /// whole entries only.
    fn split_at(&mut self, accounting: &mut Accounting, boundary: u64) {
        if self
            .pages
            .load_entry(boundary)
            .is_some_and(|(span, _)| span.index() < boundary)
        {
            self.split(accounting, boundary);
        }
    }

    /// Drops the whole entry holding `index`, dirty or not; returns how
    /// many pages it held.
    fn drop_entry(&mut self, accounting: &mut Accounting, index: u64) -> u64 {
        let Some((span, _)) = self.pages.load_entry(index) else {
            return 0;
        };
        let unclean = self.unclean(span.index());
        // Only a fill's reservation is ever locked, and this is a value.
        let _ = self.pages.erase(span.index());
        accounting.cached_pages -= span.size();
        if unclean {
            accounting.dirty_pages -= span.size();
        }
        for page in span.index()..=span.last() {
            self.failed.remove(&page);
        }
        span.size()
    }

    /// Settles the entries now holding the pages of `written` (one entry a
    /// writeback took, since split or partly rewritten perhaps): each that
    /// still carries WRITEBACK loses it and, unless a write made it dirty
    /// again meanwhile, becomes clean (`durable`) or dirty again. Returns
    /// whether a failure is new: some page of it holds contents that had
    /// not failed before.
    fn land_entry(&mut self, accounting: &mut Accounting, written: Span, outcome: Outcome) -> bool {
        let current: Vec<Span> = self
            .pages
            .iter_from(written.index())
            .map(|(span, _)| span)
            .take_while(|span| span.index() <= written.last())
            .filter(|span| self.pages.is_marked(span.index(), Mark::Writeback))
            .collect();
        // A page rewritten while in flight holds new contents: if this
        // writeback failed, its old contents were lost and nobody was told.
        let mut new_failure = outcome == Outcome::Failed
            && (current.iter().map(|span| span.size()).sum::<u64>() < written.size());
        for span in current {
            self.pages.clear_mark(span.index(), Mark::Writeback);
            if self.pages.is_marked(span.index(), Mark::Dirty) {
                new_failure |= outcome == Outcome::Failed;
                continue;
            }
            match outcome {
                Outcome::Durable => {
                    accounting.dirty_pages -= span.size();
                    accounting.clock.push_back((self.ino, span.index()));
                    for page in span.index()..=span.last() {
                        self.failed.remove(&page);
                    }
                }
                Outcome::Failed => {
                    self.pages.set_mark(span.index(), Mark::Dirty);
                    for page in span.index()..=span.last() {
                        new_failure |= self.failed.insert(page);
                    }
                }
                Outcome::Untried => {
                    self.pages.set_mark(span.index(), Mark::Dirty);
                }
            }
        }
        new_failure
    }

    /// The pages cached, and those of them not clean.
    fn page_counts(&self) -> (u64, u64) {
        self.pages
            .iter()
            .fold((0, 0), |(cached, unclean), (span, _)| {
                let dirty = if self.unclean(span.index()) {
                    span.size()
                } else {
                    0
                };
                (cached + span.size(), unclean + dirty)
            })
    }

    /// Whether the entry holding `index` may be evicted: cached, clean, not
    /// being written back, and not holding contents that failed writeback.
    fn evictable(&self, index: u64) -> bool {
        self.pages.load_entry(index).is_some_and(|(span, _)| {
            !self.unclean(span.index())
                && self
                    .failed
                    .range(span.index()..=span.last())
                    .next()
                    .is_none()
        })
    }
}

/// A writeback of one inode between its snapshot and its landing: the
/// entries it took (their DIRTY mark moved to WRITEBACK, their bytes
/// shared, so writes meanwhile replace entries rather than change these)
/// and the inode's size, pending time and change count when it started.
struct Flight {
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
struct Landing {
    /// How many of its entries (from the first) are durable.
    durable: usize,
    /// The entries of the batch that failed, and why (an empty range when
    /// only the inode record failed); the entries after it were not tried.
    failure: Option<(Range<usize>, Errno)>,
}

/// Lands a flight that never reached [`Files::land`] (a panic during its
/// I/O) as untried: its pages dirty again, the inode free for the next
/// writeback, waiters woken. Nothing is reported: the panic is.
struct InFlight<'f> {
    files: &'f Files,
    flight: Option<Flight>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(flight) = self.flight.take() {
            let untried = Landing {
                durable: 0,
                failure: Some((0..0, Errno::EIO)),
            };
            let _ = self.files.land(flight, untried);
        }
    }
}

/// Wakes everyone waiting on the cache's condition variable when dropped.
struct WakeOnDrop<'c>(&'c Condvar);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_all();
    }
}

/// What became of one entry a writeback took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Written, committed and the journal flushed past its transaction.
    Durable,
    /// Its batch failed (or the flush after it): the same contents stay
    /// dirty and count as failed.
    Failed,
    /// A batch before it failed, so it was not tried: dirty again.
    Untried,
}

/// Evicts clean entries, oldest first, until the clean pages fit the
/// budget: a large entry goes whole while the excess is at least its size
/// (splitting copies every page, which would cost a streaming read more
/// than the fill did), and is split only to trim the last few pages, its
/// pages keeping its place in the queue. Then drops stale eviction-queue
/// entries when they outnumber the clean pages.
fn evict_over_budget(cache: &mut Cache) {
    let Cache { inodes, accounting } = cache;
    while accounting.clean_pages() > accounting.budget_pages {
        let Some((ino, index)) = accounting.clock.pop_front() else {
            break;
        };
        let Some(state) = inodes.get_mut(&ino) else {
            continue;
        };
        if !state.evictable(index) {
            continue;
        }
        let excess = accounting.clean_pages() - accounting.budget_pages;
        if state
            .pages
            .load_entry(index)
            .is_some_and(|(span, _)| span.size() > excess)
            && state.split_into(accounting, index, true)
        {
            continue;
        }
        accounting.evicted_pages += state.drop_entry(accounting, index);
    }
    // Every clean page has an entry, so the queue only outgrows them by
    // stale entries: compacting at twice their number (plus slack) keeps
    // the queue bounded at amortised constant cost.
    if accounting.clock.len() as u64 > 2 * accounting.clean_pages() + 1024 {
        let mut seen = HashSet::new();
        accounting.clock.retain(|&(ino, index)| {
            inodes.get(&ino).is_some_and(|state| state.evictable(index))
                && seen.insert((ino, index))
        });
    }
}

/// The data path of one mounted filesystem. See the module comment.
pub struct Files {
    device: Arc<dyn BlockDevice>,
    metadata: Arc<Metadata>,
    fs_errseq: ErrSeq,
    cache: Mutex<Cache>,
    /// Signalled (with `cache`) whenever a writeback lands or a fill
    /// completes: what writers, truncates and other writebacks wait for.
    settled: Condvar,
    on_failure: OnceLock<FailureListener>,
    /// [`FsyncErrors::Once`] when set.
    report_once: AtomicBool,
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

/// Told of each new writeback failure: the inode, the errno, and the first
/// and last file page that failed. Called with the data path locked: it
/// must not call back into [`Files`].
pub type FailureListener = Box<dyn Fn(u64, Errno, u64, u64) + Send + Sync>;

impl std::fmt::Debug for Files {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Files")
            .field("fs_errseq", &self.fs_errseq)
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
        Ok(Files {
            device,
            metadata,
            fs_errseq: ErrSeq::new(),
            cache: Mutex::new(Cache {
                inodes: HashMap::new(),
                accounting: Accounting {
                    budget_pages: DEFAULT_CACHE_BUDGET / PAGE,
                    cached_pages: 0,
                    dirty_pages: 0,
                    evicted_pages: 0,
                    clock: VecDeque::new(),
                },
            }),
            settled: Condvar::new(),
            on_failure: OnceLock::new(),
            report_once: AtomicBool::new(false),
        })
    }

    /// Sets what fsync and syncfs report while writeback keeps failing.
    pub fn set_fsync_errors(&self, policy: FsyncErrors) {
        self.report_once
            .store(policy == FsyncErrors::Once, Ordering::Relaxed);
    }

    /// Sets who is told of each new writeback failure (once per failure
    /// of new data, exactly when the error words are set): the mounted
    /// layer turns them into events and error-record entries. Only the
    /// first listener set is kept.
    pub fn set_failure_listener(&self, listener: FailureListener) {
        let _ = self.on_failure.set(listener);
    }

    /// The size and the pending modification time writes not yet written
    /// back have given `ino`, if its data is in memory.
    pub fn cached_attributes(&self, ino: u64) -> Option<(u64, Option<Timestamp>)> {
        let cache = self.lock();
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
        let mut cache = self.lock();
        while cache.inodes.get(&ino).is_some_and(|state| state.syncing) {
            cache = self.wait_settled(cache);
        }
        if let Some(state) = cache.inodes.get_mut(&ino) {
            state.mtime = None;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // Every update under the lock leaves the map consistent before it
        // can panic (pages, marks and their counts change together in
        // methods that cannot fail halfway), so a poisoned lock holds usable
        // state.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps until a writeback lands or a fill completes.
    fn wait_settled<'c>(&self, cache: MutexGuard<'c, Cache>) -> MutexGuard<'c, Cache> {
        self.settled
            .wait(cache)
            .unwrap_or_else(PoisonError::into_inner)
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
        let mut cache = self.lock();
        loop {
            let state = self.state(&mut cache.inodes, ino)?;
            if (quiesce && state.syncing) || state.fill_within(first, last).is_some() {
                cache = self.wait_settled(cache);
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
                let record = self.record(ino)?;
                match record.file_type() {
                    FileType::Regular => {}
                    FileType::Directory => return Err(FileError::IsDirectory { ino }),
                    file_type => return Err(FileError::NotRegular { ino, file_type }),
                }
                vacant.insert(InodeState {
                    ino,
                    errseq: ErrSeq::new(),
                    pages: Arc::new(XArray::new()),
                    failed: BTreeSet::new(),
                    size: record.size,
                    mtime: None,
                    syncing: false,
                    fills: 0,
                    changes: 0,
                })
            }
        };
        Ok(state)
    }

    fn record(&self, ino: u64) -> FileResult<InodeRecord> {
        let value = self
            .metadata
            .trees
            .get(TreeId::Inodes, &inode_key(ino))?
            .ok_or(FileError::NotFound { ino })?;
        Ok(InodeRecord::decode(&value)?)
    }

    /// Opens regular file `ino`: samples both error words, so an error
    /// nobody has been told about yet is reported to this opener.
    pub fn open(&self, ino: u64) -> FileResult<Handle> {
        let mut cache = self.lock();
        let state = self.state(&mut cache.inodes, ino)?;
        Ok(Handle {
            ino,
            cursor: state.errseq.sample(),
            fs_cursor: self.fs_errseq.sample(),
        })
    }

    /// Closes a handle. Reports nothing: closing does not consume errors.
    pub fn release(&self, handle: Handle) {
        let Handle { .. } = handle;
    }

    /// The file's size as reads see it (including unwritten-back writes).
    pub fn size(&self, handle: &Handle) -> FileResult<u64> {
        let mut cache = self.lock();
        Ok(self.state(&mut cache.inodes, handle.ino)?.size)
    }

    /// Writes `bytes` at `offset` into the page cache; returns the number
    /// of bytes written (all of them). Only a partial page not yet cached
    /// is read from the device, with the cache unlocked.
    pub fn write(&self, handle: &Handle, offset: u64, bytes: &[u8]) -> FileResult<usize> {
        let length = bytes.len() as u64;
        let end = checked_end(offset, length)?;
        if bytes.is_empty() {
            return Ok(0);
        }
        let ino = handle.ino;
        let first = offset / PAGE;
        let last = (end - 1) / PAGE;
        let partial = |index: u64| !(offset <= index * PAGE && (index + 1) * PAGE <= end);
        // Only the first and last pages can be partial. Those not cached
        // are read before anything changes, so a failed read leaves the
        // file as it was: with the cache unlocked, then used only if the
        // inode did not change meanwhile (a few tries, then under the lock
        // so a busy file cannot starve this write).
        let mut from_disk: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut read_at: Option<u64> = None;
        let mut tries = 0;
        let mut guard = loop {
            let mut guard = self.lock_settled(ino, first, last, false)?;
            let state = self.state(&mut guard.inodes, ino)?;
            let mut missing: Vec<u64> = [first, last]
                .into_iter()
                .filter(|&index| partial(index) && state.pages.load(index).is_none())
                .collect();
            missing.dedup();
            let current = read_at == Some(state.changes);
            if missing
                .iter()
                .all(|index| current && from_disk.contains_key(index))
            {
                break guard;
            }
            let changes = state.changes;
            tries += 1;
            from_disk.clear();
            if tries > 3 {
                for index in missing {
                    from_disk.insert(index, self.read_block_from_disk(ino, index)?);
                }
                break guard;
            }
            drop(guard);
            for index in missing {
                match self.read_block_from_disk(ino, index) {
                    Ok(block) => {
                        from_disk.insert(index, block);
                    }
                    // Stale extents can point at reused blocks: the error
                    // counts only if nothing changed.
                    Err(error) if self.changes_of(ino) == Some(changes) => return Err(error),
                    Err(_) => break,
                }
            }
            read_at = Some(changes);
        };
        let cache = &mut *guard;
        let state = self.state(&mut cache.inodes, ino)?;
        let mut index = first;
        while index <= last {
            // A whole aligned run of large-entry size goes in as one entry.
            let run_end = index + LARGE_PAGES;
            if index % LARGE_PAGES == 0 && offset <= index * PAGE && run_end * PAGE <= end {
                let source = (index * PAGE - offset) as usize..(run_end * PAGE - offset) as usize;
                state.put_dirty_large(&mut cache.accounting, index, bytes[source].into());
                index = run_end;
                continue;
            }
            let page_start = index * PAGE;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE);
            let mut page: Vec<u8> = match state.page(index) {
                Some(cached) => cached.bytes().to_vec(),
                None => from_disk
                    .remove(&index)
                    .unwrap_or_else(|| vec![0; PAGE_BYTES]),
            };
            let source = (from - offset) as usize..(to - offset) as usize;
            let target = (from - page_start) as usize..(to - page_start) as usize;
            page[target].copy_from_slice(&bytes[source]);
            state.put_dirty(&mut cache.accounting, index, page.into());
            index += 1;
        }
        state.size = state.size.max(end);
        state.mtime = Some(Timestamp::now());
        state.changes += 1;
        Ok(bytes.len())
    }

    /// The change count of `ino`'s state, if it is loaded.
    fn changes_of(&self, ino: u64) -> Option<u64> {
        self.lock().inodes.get(&ino).map(|state| state.changes)
    }

    /// Sets the size of regular file `ino` to `size` (see the module
    /// comment): a shrink drops the cached pages and the extents past the
    /// end and frees their blocks; a grow leaves a hole. The mtime and ctime
    /// become now. One transaction.
    pub fn truncate(&self, ino: u64, size: u64) -> FileResult<()> {
        checked_end(size, 0)?;
        let mut guard = self.lock_settled(ino, size / PAGE, u64::MAX, true)?;
        let cache = &mut *guard;
        let state = self.state(&mut cache.inodes, ino)?;
        // First file block wholly past the new end.
        let keep_blocks = size.div_ceil(PAGE);
        let shrink = size < state.size;
        let mut tail: Option<(u64, Page)> = None;
        let within = (size % PAGE) as usize;
        if shrink && within != 0 {
            let index = size / PAGE;
            let (mut page, was_dirty) = match state.page(index) {
                Some(cached) => (
                    cached.bytes().to_vec(),
                    state.pages.is_marked(index, Mark::Dirty),
                ),
                None => (self.read_block_from_disk(ino, index)?, false),
            };
            if was_dirty || page[within..].iter().any(|&byte| byte != 0) {
                page[within..].fill(0);
                tail = Some((index, page.into()));
            }
        }
        let (seq, freed) = self.commit_truncate(ino, size, keep_blocks, Timestamp::now())?;
        // Committed: now the cache follows. The time committed is newer
        // than the one pending writes gave the file: it must not be
        // overridden by it (in getattr, or at their writeback).
        state.mtime = None;
        state.changes += 1;
        if shrink {
            state.split_at(&mut cache.accounting, keep_blocks);
            let gone: Vec<u64> = state
                .pages
                .iter_from(keep_blocks)
                .map(|(span, _)| span.index())
                .collect();
            for index in gone {
                state.drop_entry(&mut cache.accounting, index);
            }
            if let Some((index, page)) = tail {
                state.put_dirty(&mut cache.accounting, index, page);
            }
        }
        state.size = size;
        if let Some(seq) = seq {
            for run in freed {
                // A refused free means the block was already free: the
                // allocator keeps it out of use and counts it.
                let _ = self.metadata.allocator.free_data(run, seq);
            }
        }
        Ok(())
    }

    /// The truncate transaction: extents from file block `keep_blocks` on
    /// cut off (rmap records to match), size and times set. Returns the seq
    /// and the blocks released.
    fn commit_truncate(
        &self,
        ino: u64,
        size: u64,
        keep_blocks: u64,
        time: Timestamp,
    ) -> FileResult<(Option<u64>, Vec<BlockRun>)> {
        let mut before = self.extents_overlapping(ino, keep_blocks, u64::MAX)?;
        let mut freed = Vec::new();
        // Many extents past the end go first, from the last, in bounded
        // transactions (a crash between them leaves the size and a file
        // whose tail reads as zeros: the truncate was going to cut it).
        // Their blocks are freed with the last transaction's seq.
        while before.len() > PAGES_PER_TRANSACTION {
            let split_at = *before
                .keys()
                .nth(before.len() - PAGES_PER_TRANSACTION)
                .expect("more entries than that");
            let cut = before.split_off(&split_at);
            for extent in cut.values() {
                freed.push(BlockRun::new(extent.physical, u64::from(extent.blocks())));
            }
            self.commit_extent_change(ino, &cut, &BTreeMap::new(), |_| {})?;
        }
        let mut after = before.clone();
        punch(&mut after, keep_blocks, u64::MAX, &mut freed);
        let seq = self.commit_extent_change(ino, &before, &after, |record| {
            record.size = size;
            record.mtime = time;
            record.ctime = time;
        })?;
        Ok((seq, freed))
    }

    /// Allocates or deallocates file blocks of `offset..offset + length`
    /// (see the module comment): [`FallocateMode::ALLOCATE`], optionally
    /// with [`FallocateMode::KEEP_SIZE`], or
    /// `PUNCH_HOLE | KEEP_SIZE`. Any other mode is `EOPNOTSUPP`, a zero
    /// length `EINVAL`, too few free blocks `ENOSPC`. One transaction per
    /// [`PAGES_PER_TRANSACTION`] blocks of the range (a failure leaves the
    /// pieces before it done, as Linux filesystems may); like truncate,
    /// not a durability point.
    pub fn fallocate(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        mode: FallocateMode,
    ) -> FileResult<()> {
        let keep_size = mode.contains(FallocateMode::KEEP_SIZE);
        let action = FallocateMode(mode.bits() & !FallocateMode::KEEP_SIZE.bits());
        let punch_hole = if action == FallocateMode::ALLOCATE {
            false
        } else if action == FallocateMode::PUNCH_HOLE {
            if !keep_size {
                return Err(FileError::NotSupported {
                    what: "punching a hole without FALLOC_FL_KEEP_SIZE",
                });
            }
            true
        } else {
            return Err(FileError::NotSupported {
                what: "this fallocate mode",
            });
        };
        if length == 0 {
            return Err(FileError::InvalidRange { offset, length });
        }
        let end = checked_end(offset, length)?;
        if !punch_hole {
            // Refuse up front what cannot fit, so ENOSPC changes nothing
            // (short of a race with other allocations).
            let wanted = self.hole_blocks(ino, offset / PAGE, end.div_ceil(PAGE))?;
            let allocator = &self.metadata.allocator;
            let space = allocator.status();
            let free = space
                .free_blocks
                .saturating_sub(allocator.metadata_reserve());
            if wanted > free {
                return Err(FileError::Allocate(AllocError::NoSpace {
                    requested: wanted,
                    free,
                    pending: space.pending_blocks,
                }));
            }
        }
        // One transaction per PAGES_PER_TRANSACTION blocks, so any range
        // fits the journal; the pieces meet at block boundaries, so only
        // the range's own edges are partial pages.
        let piece = PAGES_PER_TRANSACTION as u64 * PAGE;
        let mut start = offset;
        while start < end {
            let stop = ((start / piece + 1) * piece).min(end);
            if punch_hole {
                self.punch_hole(ino, start, stop)?;
            } else {
                self.allocate_range(ino, start, stop, keep_size)?;
            }
            start = stop;
        }
        Ok(())
    }

    /// How many blocks of `first..end` of `ino` no extent maps.
    fn hole_blocks(&self, ino: u64, first: u64, end: u64) -> FileResult<u64> {
        let existing = self.extents_overlapping(ino, first, end)?;
        Ok(holes_between(&existing, first, end)
            .iter()
            .map(|(start, stop)| stop - start)
            .sum())
    }

    /// Mode 0 of [`Files::fallocate`]: the holes of `offset..end` (whole
    /// blocks) get unwritten extents; the size grows unless `keep_size`.
    fn allocate_range(&self, ino: u64, offset: u64, end: u64, keep_size: bool) -> FileResult<()> {
        let first = offset / PAGE;
        let end_block = end.div_ceil(PAGE);
        let mut guard = self.lock_settled(ino, first, end_block - 1, true)?;
        let state = self.state(&mut guard.inodes, ino)?;
        let existing = self.extents_overlapping(ino, first, end_block)?;
        let holes = holes_between(&existing, first, end_block);
        let grows = !keep_size && end > state.size;
        if holes.is_empty() && !grows {
            return Ok(());
        }
        let wanted: u64 = holes.iter().map(|(start, stop)| stop - start).sum();
        let runs = if wanted == 0 {
            Vec::new()
        } else {
            self.metadata.allocator.allocate_data(wanted, 0)?
        };
        let added = unwritten_extents(&holes, &runs);
        let time = Timestamp::now();
        let pending_size = state.size;
        let committed = self.commit_extent_change(ino, &BTreeMap::new(), &added, |record| {
            // The size pending writes set is committed here too, so their
            // pending time can be dropped below.
            record.size = record.size.max(pending_size);
            if !keep_size {
                record.size = record.size.max(end);
            }
            record.mtime = time;
            record.ctime = time;
        });
        if let Err(error) = committed {
            self.free_unreferenced(&runs);
            return Err(error);
        }
        // Newer than the time pending writes gave the file (see truncate).
        state.mtime = None;
        state.changes += 1;
        if !keep_size {
            state.size = state.size.max(end);
        }
        Ok(())
    }

    /// `PUNCH_HOLE | KEEP_SIZE` of [`Files::fallocate`] over `offset..end`.
    fn punch_hole(&self, ino: u64, offset: u64, end: u64) -> FileResult<()> {
        let mut guard = self.lock_settled(ino, offset / PAGE, (end - 1) / PAGE, true)?;
        let cache = &mut *guard;
        let state = self.state(&mut cache.inodes, ino)?;
        // Blocks wholly inside the range; the pages at either edge (when
        // partial) keep their bytes outside it.
        let first_whole = offset.div_ceil(PAGE);
        let end_whole = (end / PAGE).max(first_whole);
        let mut edges = BTreeSet::new();
        if offset % PAGE != 0 {
            edges.insert(offset / PAGE);
        }
        if end % PAGE != 0 {
            edges.insert((end - 1) / PAGE);
        }
        // Read the edge pages before changing anything, so a failed read
        // leaves the file as it was.
        let mut zeroed: Vec<(u64, Page)> = Vec::new();
        for index in edges {
            let (mut page, was_dirty) = match state.page(index) {
                Some(cached) => (
                    cached.bytes().to_vec(),
                    state.pages.is_marked(index, Mark::Dirty),
                ),
                None => (self.read_block_from_disk(ino, index)?, false),
            };
            let page_start = index * PAGE;
            let from = (offset.max(page_start) - page_start) as usize;
            let to = (end.min(page_start + PAGE) - page_start) as usize;
            if was_dirty || page[from..to].iter().any(|&byte| byte != 0) {
                page[from..to].fill(0);
                zeroed.push((index, page.into()));
            }
        }
        let before = if first_whole < end_whole {
            self.extents_overlapping(ino, first_whole, end_whole)?
        } else {
            BTreeMap::new()
        };
        let mut after = before.clone();
        let mut freed = Vec::new();
        punch(&mut after, first_whole, end_whole, &mut freed);
        let time = Timestamp::now();
        // The size writes not yet written back gave the file goes into this
        // transaction: the punch may drop the very pages that carried it,
        // and with them the writeback that would have recorded it.
        let size = state.size;
        let seq = self.commit_extent_change(ino, &before, &after, |record| {
            record.size = record.size.max(size);
            record.mtime = time;
            record.ctime = time;
        })?;
        // Committed: now the cache follows, the time too.
        state.mtime = None;
        state.changes += 1;
        state.split_at(&mut cache.accounting, first_whole);
        state.split_at(&mut cache.accounting, end_whole);
        let gone: Vec<u64> = state
            .pages
            .iter_from(first_whole)
            .map(|(span, _)| span.index())
            .take_while(|&index| index < end_whole)
            .collect();
        for index in gone {
            state.drop_entry(&mut cache.accounting, index);
        }
        for (index, page) in zeroed {
            state.put_dirty(&mut cache.accounting, index, page);
        }
        if let Some(seq) = seq {
            for run in freed {
                // A refused free means the block was already free: the
                // allocator keeps it out of use and counts it.
                let _ = self.metadata.allocator.free_data(run, seq);
            }
        }
        Ok(())
    }

    /// One transaction: `ino`'s committed extents `before` (all of them in
    /// the range being changed) become `after`, with the rmap records to
    /// match, and `update` changes the inode record. Returns the seq.
    fn commit_extent_change(
        &self,
        ino: u64,
        before: &BTreeMap<u64, Extent>,
        after: &BTreeMap<u64, Extent>,
        update: impl FnOnce(&mut InodeRecord),
    ) -> FileResult<Option<u64>> {
        let _records = self.metadata.lock_records();
        let mut transaction = self.metadata.trees.transaction();
        let mut record = match transaction.get(TreeId::Inodes, &inode_key(ino))? {
            Some(value) => InodeRecord::decode(&value)?,
            None => return Err(FileError::NotFound { ino }),
        };
        let removed = before
            .iter()
            .filter(|(offset, extent)| after.get(offset) != Some(extent));
        for (offset, extent) in removed {
            let key = ExtentKey {
                ino,
                offset: *offset,
            };
            transaction.delete(TreeId::Extents, &key.encode())?;
            rmap::remove(&mut transaction, extent.physical)?;
        }
        let added = after
            .iter()
            .filter(|(offset, extent)| before.get(offset) != Some(extent));
        for (offset, extent) in added {
            let key = ExtentKey {
                ino,
                offset: *offset,
            };
            transaction.put(TreeId::Extents, &key.encode(), &extent.encode())?;
            let reverse = RmapRecord {
                start: extent.physical,
                blocks: u64::from(extent.blocks()),
                owner: Owner::FileData {
                    ino,
                    file_offset_blocks: *offset,
                },
            };
            rmap::insert(&mut transaction, &reverse)?;
        }
        update(&mut record);
        transaction.put(TreeId::Inodes, &inode_key(ino), &record.encode())?;
        Ok(transaction.commit()?)
    }

    /// `SEEK_DATA` or `SEEK_HOLE` from `offset` (Linux semantics, in block
    /// units): data is a block with a written extent or a cached page, dirty
    /// or clean; an unwritten extent without a cached page is a hole, and
    /// so is the end of the file. `offset` itself is returned when it lies
    /// in what is sought. At or past the size, or with no data after
    /// `offset`, `ENXIO`.
    pub fn seek_data_hole(&self, ino: u64, offset: u64, whence: Seek) -> FileResult<u64> {
        let mut guard = self.lock();
        let state = self.state(&mut guard.inodes, ino)?;
        let size = state.size;
        let what = match whence {
            Seek::Data => "data",
            Seek::Hole => "hole",
        };
        if offset >= size {
            return Err(FileError::NoSuchOffset { ino, offset, what });
        }
        let start = offset / PAGE;
        let end_block = size.div_ceil(PAGE);
        let mut runs: Vec<(u64, u64)> = self
            .extents_overlapping(ino, start, end_block)?
            .into_iter()
            .filter(|(_, extent)| extent.flags & Extent::UNWRITTEN == 0)
            .map(|(at, extent)| (at, at + u64::from(extent.blocks())))
            .collect();
        runs.extend(
            state
                .pages
                .iter_from(start)
                .map(|(span, _)| (span.index(), span.last() + 1))
                .take_while(|&(at, _)| at < end_block),
        );
        // The first stretch of data at or after `start`, runs merged.
        runs.sort_unstable();
        let mut first_data: Option<(u64, u64)> = None;
        for (run_start, run_end) in runs {
            let (run_start, run_end) = (run_start.max(start), run_end.min(end_block));
            if run_start >= run_end {
                continue;
            }
            match &mut first_data {
                None => first_data = Some((run_start, run_end)),
                Some((_, stretch_end)) if run_start <= *stretch_end => {
                    *stretch_end = (*stretch_end).max(run_end);
                }
                Some(_) => break,
            }
        }
        match (whence, first_data) {
            (Seek::Data, None) => Err(FileError::NoSuchOffset { ino, offset, what }),
            (Seek::Data, Some((data_start, _))) => Ok(offset.max(data_start * PAGE)),
            (Seek::Hole, Some((data_start, data_end))) if data_start == start => {
                Ok((data_end * PAGE).min(size))
            }
            (Seek::Hole, _) => Ok(offset),
        }
    }

    /// Sets the budget for clean cached pages to `bytes` (rounded down to
    /// whole pages), evicting at once if the cache is over it. Dirty pages
    /// do not count and are never evicted: writeback bounds them.
    pub fn set_cache_budget(&self, bytes: u64) {
        let mut guard = self.lock();
        guard.accounting.budget_pages = bytes / PAGE;
        evict_over_budget(&mut guard);
    }

    /// The page cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        let guard = self.lock();
        let accounting = &guard.accounting;
        debug_assert_eq!(
            (accounting.cached_pages, accounting.dirty_pages),
            guard
                .inodes
                .values()
                .fold((0, 0), |(cached, dirty), state| {
                    let (inode_cached, inode_dirty) = state.page_counts();
                    (cached + inode_cached, dirty + inode_dirty)
                }),
            "page counts drifted from the page caches"
        );
        CacheStats {
            cached_bytes: accounting.cached_pages * PAGE,
            dirty_bytes: accounting.dirty_pages * PAGE,
            evicted_pages: accounting.evicted_pages,
        }
    }

    /// Drops everything kept for inode `ino`, which no longer exists: its
    /// pages, dirty or not (there is nowhere left to write them), and its
    /// error word. For the namespace layer, after the inode is deleted; a
    /// handle still open then finds no inode.
    pub fn forget(&self, ino: u64) {
        let mut guard = self.lock();
        let Cache { inodes, accounting } = &mut *guard;
        if let Some(state) = inodes.remove(&ino) {
            // A writeback of it in flight lands on nothing: its pages are
            // uncounted here, and no fill finds the inode either.
            let (cached, dirty) = state.page_counts();
            accounting.cached_pages -= cached;
            accounting.dirty_pages -= dirty;
        }
    }

    /// Reads up to `length` bytes at `offset`; short at the end of the file.
    /// A block that cannot be read or does not match its checksum is `EIO`.
    ///
    /// Cached pages are copied with the cache unlocked. Uncached ones are
    /// filled: a run of them (up to [`PAGES_PER_FILL`]) is reserved in the
    /// page index (locked entries, large where a whole aligned run is
    /// free), read from the device with the cache unlocked, and the
    /// reservations filled with what was read. A read reaching a page
    /// another read is filling waits for that fill instead of reading the
    /// device again; writes, truncates and punches over it wait too.
    pub fn read(&self, handle: &Handle, offset: u64, length: usize) -> FileResult<Vec<u8>> {
        let ino = handle.ino;
        let requested_end = checked_end(offset, length as u64)?;
        let mut guard = self.lock();
        let end = requested_end.min(self.state(&mut guard.inodes, ino)?.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        // The part of page `index` inside the range.
        let within = |index: u64| {
            let page_start = index * PAGE;
            (offset.max(page_start) - page_start) as usize
                ..(end.min(page_start + PAGE) - page_start) as usize
        };
        let last = (end - 1) / PAGE;
        let mut index = offset / PAGE;
        while index <= last {
            let state = self.state(&mut guard.inodes, ino)?;
            let mut hits = Vec::new();
            while let Some(cached) = (index + hits.len() as u64 <= last)
                .then(|| state.page(index + hits.len() as u64))
                .flatten()
            {
                hits.push(cached);
            }
            let gap = index + hits.len() as u64;
            if gap > last || !hits.is_empty() {
                drop(guard);
                for cached in &hits {
                    out.extend_from_slice(&cached.bytes()[within(index)]);
                    index += 1;
                }
                if index > last {
                    break;
                }
                guard = self.lock();
                continue;
            }
            if state.fill_within(gap, gap).is_some() {
                guard = self.wait_settled(guard);
                continue;
            }
            // Uncached from `gap`: reserve up to the next entry.
            let stop = state
                .pages
                .find_conflict(gap..=last.min(gap + PAGES_PER_FILL - 1))
                .first()
                .map_or(last.min(gap + PAGES_PER_FILL - 1) + 1, |next| {
                    next.span.index()
                });
            let pages = Arc::clone(&state.pages);
            // Declared before the reservations, so it is dropped after them
            // even when unwinding: waiters wake to find them gone.
            let _wake_waiters = WakeOnDrop(&self.settled);
            let mut reserved = Vec::new();
            let mut at = gap;
            while at < stop {
                let order = if at % LARGE_PAGES == 0 && at + LARGE_PAGES <= stop {
                    LARGE_ORDER
                } else {
                    0
                };
                // Nothing is cached or reserved in `gap..stop`, and only
                // reads reserve, under the cache lock: this cannot wait.
                match pages.lock_or_reserve(at, order) {
                    Ok(reservation) => reserved.push(reservation),
                    Err(_) => break,
                }
                at += 1 << order;
            }
            // (Were nothing reserved, the page is read uncached.)
            let stop = if reserved.is_empty() { gap + 1 } else { at };
            state.fills += reserved.len();
            drop(guard);
            let run = self.read_run(ino, gap, stop);
            guard = self.lock();
            self.complete_fill(&mut guard, ino, &pages, reserved, run.as_ref().ok());
            let (bytes, _) = run?;
            for (page, block) in (gap..stop).zip(bytes.chunks(PAGE_BYTES)) {
                out.extend_from_slice(&block[within(page)]);
            }
            index = stop;
        }
        Ok(out)
    }

    /// Fills the reservations a read made over `ino`'s pages with the
    /// blocks it read (`None`: the read failed, and they are abandoned).
    /// Only blocks of written extents are cached: a cached page counts as
    /// data for SEEK_DATA, and holes and unwritten blocks must not. A
    /// large reservation with a hole inside is abandoned and its data
    /// pages cached one by one. Nothing is cached if the inode was
    /// forgotten meanwhile.
    fn complete_fill(
        &self,
        cache: &mut Cache,
        ino: u64,
        pages: &Arc<XArray<Page>>,
        reserved: Vec<EntryGuard<'_, Page>>,
        run: Option<&(Vec<u8>, Vec<bool>)>,
    ) {
        let Cache { inodes, accounting } = cache;
        let Some(state) = inodes
            .get_mut(&ino)
            .filter(|state| Arc::ptr_eq(&state.pages, pages))
        else {
            return;
        };
        state.fills -= reserved.len();
        let Some((bytes, data)) = run else {
            return;
        };
        let first = reserved
            .first()
            .map_or(0, |reservation| reservation.span().index());
        let block = |page: u64| ((page - first) * PAGE) as usize;
        for mut reservation in reserved {
            let span = reservation.span();
            let is_data = |page: u64| data[(page - first) as usize];
            if (span.index()..=span.last()).all(is_data) {
                let entry: Page =
                    bytes[block(span.index())..block(span.last()) + PAGE_BYTES].into();
                reservation.replace(entry);
                drop(reservation);
                accounting.cached_pages += span.size();
                accounting.clock.push_back((ino, span.index()));
                continue;
            }
            drop(reservation);
            for page in (span.index()..=span.last()).filter(|&page| is_data(page)) {
                let entry: Page = bytes[block(page)..block(page) + PAGE_BYTES].into();
                state.put_clean(accounting, page, entry);
            }
        }
        evict_over_budget(cache);
    }

    /// File blocks `first..end` of `ino` from its extents, verified, one
    /// device request per extent they cross; with, per block, whether it
    /// is data (a written extent) rather than a hole or unwritten zeros.
    fn read_run(&self, ino: u64, first: u64, end: u64) -> FileResult<(Vec<u8>, Vec<bool>)> {
        let extents = self.extents_overlapping(ino, first, end)?;
        let mut bytes = Vec::with_capacity(((end - first) * PAGE) as usize);
        let mut data = Vec::with_capacity((end - first) as usize);
        let mut at = first;
        while at < end {
            let (piece_end, written) = match covering(&extents, at) {
                Some((offset, extent)) => (
                    (offset + u64::from(extent.blocks())).min(end),
                    extent.flags & Extent::UNWRITTEN == 0,
                ),
                None => (
                    extents
                        .range(at..)
                        .next()
                        .map_or(end, |(offset, _)| (*offset).min(end)),
                    false,
                ),
            };
            bytes.extend_from_slice(&self.read_blocks(ino, at, piece_end, &extents)?);
            data.extend(std::iter::repeat_n(written, (piece_end - at) as usize));
            at = piece_end;
        }
        Ok((bytes, data))
    }

    /// Writes back the handle's inode, then reports the first writeback
    /// error this handle has not heard of (see the module comment).
    pub fn fsync(&self, handle: &mut Handle) -> FileResult<()> {
        // The state was loaded at open; if it is gone (forgotten), taking
        // off finds nothing and the lookup below reports the inode.
        let written = self.writeback_inode(handle.ino);
        let mut cache = self.lock();
        let state = self.state(&mut cache.inodes, handle.ino)?;
        let reported = state.errseq.check_and_advance(&mut handle.cursor);
        // With FsyncErrors::Once, a failure of pages whose failure is in
        // the error word is reported through the word alone (once per
        // handle); a failure that never reached it (an inode-record update
        // with no pages) is still returned.
        let in_error_word = !state.failed.is_empty();
        drop(cache);
        if let Err(errno) = written {
            if !(self.report_once.load(Ordering::Relaxed) && in_error_word) {
                return Err(FileError::Writeback(errno));
            }
        }
        reported.map_err(FileError::Writeback)
    }

    /// Writes back every inode, flushes the journal, then reports the first
    /// filesystem writeback error this handle has not heard of.
    pub fn syncfs(&self, handle: &mut Handle) -> FileResult<()> {
        self.syncfs_with(&mut handle.fs_cursor)
    }

    /// A cursor into the filesystem's error word as a new opener samples
    /// it: an error nobody has been told of is still ahead of it.
    pub fn sample_fs_cursor(&self) -> Since {
        self.fs_errseq.sample()
    }

    /// [`Files::syncfs`] with a cursor that is not a handle's (a control
    /// command's, say).
    pub fn syncfs_with(&self, cursor: &mut Since) -> FileResult<()> {
        let summary = self.writeback_all();
        let flushed = self.metadata.journal.flush();
        let reported = self.fs_errseq.check_and_advance(cursor);
        if let Some(errno) = summary.first_error {
            if !self.report_once.load(Ordering::Relaxed) {
                return Err(FileError::Writeback(errno));
            }
        }
        flushed?;
        reported.map_err(FileError::Writeback)
    }

    /// Writes back every inode with dirty pages (what background writeback
    /// does). Errors go into the error words, never back to the caller.
    pub fn writeback_all(&self) -> WritebackSummary {
        // Inodes in flight are included: their writeback may fail and
        // leave pages dirty, and this must not return before it lands.
        let mut inos: Vec<u64> = self
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

    /// The latest writeback error of inode `ino` this mount, if any, for a
    /// monitor. Never consumes: the error still reaches the next opener.
    pub fn peek_error(&self, ino: u64) -> FileResult<()> {
        let mut cache = self.lock();
        let state = self.state(&mut cache.inodes, ino)?;
        // Mark the value OBSERVED so a later error is told apart, then
        // compare with the zero cursor: any error ever set differs from it.
        let _observed = state.errseq.peek();
        state
            .errseq
            .check(Since::default())
            .map_err(FileError::Writeback)
    }

    /// The latest filesystem writeback error this mount, if any, for a
    /// monitor. Never consumes.
    pub fn fs_peek(&self) -> FileResult<()> {
        let _observed = self.fs_errseq.peek();
        self.fs_errseq
            .check(Since::default())
            .map_err(FileError::Writeback)
    }

    /// Writes back the dirty pages of `ino`; returns how many were written.
    /// On failure the error words are set per the module's policy and the
    /// error (as errno) is returned. Waits first for a writeback of `ino`
    /// already in flight, so what was dirty when this was called is
    /// durable (or reported) when it returns.
    ///
    /// Three steps: [`Files::take_off`] (cache locked) moves the dirty
    /// entries from DIRTY to WRITEBACK; [`Files::fly`] (cache unlocked)
    /// writes them; [`Files::land`] (cache locked) settles their marks.
    fn writeback_inode(&self, ino: u64) -> Result<u64, Errno> {
        let Some(flight) = self.take_off(ino) else {
            return Ok(0);
        };
        let mut flight = InFlight {
            files: self,
            flight: Some(flight),
        };
        let landing = self.fly(flight.flight.as_ref().expect("set above"));
        self.land(flight.flight.take().expect("set above"), landing)
    }

    /// Starts a writeback of `ino` (see [`Files::writeback_inode`]):
    /// `None` when there is nothing to write (or no such inode loaded).
    fn take_off(&self, ino: u64) -> Option<Flight> {
        let mut cache = self.lock();
        while cache.inodes.get(&ino)?.syncing {
            cache = self.wait_settled(cache);
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
    fn fly(&self, flight: &Flight) -> Landing {
        let ino = flight.ino;
        let entries = &flight.entries;
        if entries.is_empty() {
            // Writes happened but a punched hole dropped all their pages:
            // the size and mtime they set still go to the record, or the
            // size would be lost at the next mount.
            return Landing {
                durable: 0,
                failure: self.commit_record(flight).err().map(|errno| (0..0, errno)),
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
        for batch in batches {
            let dirty = pages_of(&entries[batch.clone()]);
            match self.write_pages(ino, flight, &dirty) {
                Ok(seq) => {
                    newest_seq = newest_seq.max(seq);
                    committed = batch.end;
                }
                Err(errno) => {
                    failure = Some((batch, errno));
                    break;
                }
            }
        }
        if let Some(seq) = newest_seq {
            if let Err(error) = self.metadata.journal.flush_seq(seq) {
                // Committed but not durable: all of it failed.
                let end = failure.as_ref().map_or(committed, |(batch, _)| batch.end);
                failure = Some((0..end, journal_errno(&error)));
                committed = 0;
            }
        }
        Landing {
            durable: committed,
            failure,
        }
    }

    /// Ends a writeback (see [`Files::writeback_inode`]): entries durable
    /// become clean, those of a failed batch dirty and failed, the rest
    /// dirty; the error words are set if the failure is new; the pending
    /// time goes if no write came meanwhile. Wakes whoever waits.
    fn land(&self, flight: Flight, mut landing: Landing) -> Result<u64, Errno> {
        if landing.failure.is_some()
            && matches!(self.record(flight.ino), Err(FileError::NotFound { .. }))
        {
            // The file was deleted while its data was in flight (its last
            // link and last opener gone): the data has nowhere to go and
            // nobody to tell, so this is no error. Its pages go with the
            // forget that follows the deletion.
            landing = Landing {
                durable: 0,
                failure: None,
            };
        }
        let mut cache = self.lock();
        let Cache { inodes, accounting } = &mut *cache;
        let written = pages_of(&flight.entries[..landing.durable]).len() as u64;
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
                    if new_failure {
                        state.errseq.set(errno);
                        self.fs_errseq.set(errno);
                        if let (Some(listener), Some((first, _)), Some((last, _))) =
                            (self.on_failure.get(), failed.first(), failed.last())
                        {
                            listener(flight.ino, errno, *first, *last);
                        }
                    }
                }
            }
        }
        evict_over_budget(&mut cache);
        drop(cache);
        self.settled.notify_all();
        result
    }

    /// Copy-on-write of `dirty` (sorted by index): allocate, write, one
    /// transaction, free the old blocks at its seq. Returns the seq, for
    /// the caller to make durable.
    fn write_pages(
        &self,
        ino: u64,
        flight: &Flight,
        dirty: &[(u64, &[u8])],
    ) -> Result<Option<u64>, Errno> {
        let allocator = &self.metadata.allocator;
        let runs = allocator
            .allocate_data(dirty.len() as u64, 0)
            .map_err(|error| match error {
                AllocError::NoSpace { .. } | AllocError::Fragmented { .. } => Errno::ENOSPC,
                _ => Errno::EIO,
            })?;
        let new_extents = match self.write_new_extents(dirty, &runs) {
            Ok(extents) => extents,
            Err(errno) => {
                self.free_unreferenced(&runs);
                return Err(errno);
            }
        };
        // The transaction names the new blocks: they must be durable
        // before its journal entry is.
        self.metadata.journal.order_before_next_entry();
        let (seq, freed) = match self.commit_extents(ino, flight, &new_extents) {
            Ok(done) => done,
            Err(errno) => {
                self.free_unreferenced(&runs);
                return Err(errno);
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
        Ok(seq)
    }

    /// Writeback with no pages to write: the inode record alone gets the
    /// size and mtime, durably. A failure is returned (and reported by the
    /// fsync that asked) but sets no error word: no data was lost.
    fn commit_record(&self, flight: &Flight) -> Result<(), Errno> {
        let (seq, _) = self.commit_extents(flight.ino, flight, &[])?;
        if let Some(seq) = seq {
            self.metadata
                .journal
                .flush_seq(seq)
                .map_err(|error| journal_errno(&error))?;
        }
        Ok(())
    }

    fn free_unreferenced(&self, runs: &[BlockRun]) {
        for run in runs {
            let _ = self.metadata.allocator.free_data(*run, 0);
        }
    }

    /// Pairs the dirty pages with the allocated blocks, writes them, and
    /// returns the new extents (file offset → extent).
    fn write_new_extents(
        &self,
        dirty: &[(u64, &[u8])],
        runs: &[BlockRun],
    ) -> Result<Vec<(u64, Extent)>, Errno> {
        let physical = runs.iter().flat_map(|run| run.start..run.end());
        let mut extents: Vec<(u64, Extent)> = Vec::new();
        // One buffer, reused: each extent is written as soon as the next
        // page does not continue it.
        let mut bytes: Vec<u8> = Vec::with_capacity(MAX_EXTENT_BLOCKS as usize * PAGE_BYTES);
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

    fn write_extent_bytes(&self, physical: u64, bytes: &[u8]) -> Result<(), Errno> {
        self.device
            .write_at(physical * PAGE, bytes, IoClass::Data)
            .map_err(|error| device_errno(&error))
    }

    /// The transaction: extents and rmap records replaced, inode updated.
    /// Returns the seq and the old blocks no longer referenced.
    fn commit_extents(
        &self,
        ino: u64,
        flight: &Flight,
        new_extents: &[(u64, Extent)],
    ) -> Result<(Option<u64>, Vec<BlockRun>), Errno> {
        let first = new_extents.first().map_or(0, |(offset, _)| *offset);
        let last_end = new_extents
            .last()
            .map_or(0, |(offset, extent)| offset + u64::from(extent.blocks()));
        let before = self
            .extents_overlapping(ino, first, last_end)
            .map_err(|_| Errno::EIO)?;
        let mut after = before.clone();
        let mut freed = Vec::new();
        for (offset, extent) in new_extents {
            punch(
                &mut after,
                *offset,
                offset + u64::from(extent.blocks()),
                &mut freed,
            );
            after.insert(*offset, extent.clone());
        }
        let (size, mtime) = (flight.size, flight.mtime);
        let seq = self
            .commit_extent_change(ino, &before, &after, |record| {
                record.size = record.size.max(size);
                if let Some(mtime) = mtime {
                    record.mtime = mtime;
                    record.ctime = mtime;
                }
            })
            .map_err(|error| writeback_errno(&error))?;
        Ok((seq, freed))
    }

    /// The committed extents of `ino` with at least one block in
    /// `first..end` (file blocks), by file offset.
    fn extents_overlapping(
        &self,
        ino: u64,
        first: u64,
        end: u64,
    ) -> FileResult<BTreeMap<u64, Extent>> {
        let start = ExtentKey {
            ino,
            offset: first.saturating_sub(u64::from(MAX_EXTENT_BLOCKS) - 1),
        }
        .encode();
        let stop = ExtentKey { ino, offset: end }.encode();
        let mut found = BTreeMap::new();
        for entry in self
            .metadata
            .trees
            .range(TreeId::Extents, &start, Some(&stop))
        {
            let (key, value) = entry?;
            let key = ExtentKey::decode(&key)?;
            let extent = Extent::decode(&value)?;
            if key.ino == ino && key.offset + u64::from(extent.blocks()) > first {
                found.insert(key.offset, extent);
            }
        }
        Ok(found)
    }

    /// File block `index` of `ino` from the device (zeros for a hole).
    fn read_block_from_disk(&self, ino: u64, index: u64) -> FileResult<Vec<u8>> {
        let extents = self.extents_overlapping(ino, index, index + 1)?;
        self.read_block(ino, index, &extents)
    }

    /// File block `index` of `ino` through `extents`, verified.
    fn read_block(
        &self,
        ino: u64,
        index: u64,
        extents: &BTreeMap<u64, Extent>,
    ) -> FileResult<Vec<u8>> {
        self.read_blocks(ino, index, index + 1, extents)
    }

    /// File blocks `first..end` of `ino` through `extents`, verified. They
    /// lie in one extent (or one hole): one device request.
    fn read_blocks(
        &self,
        ino: u64,
        first: u64,
        end: u64,
        extents: &BTreeMap<u64, Extent>,
    ) -> FileResult<Vec<u8>> {
        let mut bytes = vec![0; ((end - first) * PAGE) as usize];
        let Some((offset, extent)) = covering(extents, first) else {
            return Ok(bytes);
        };
        if extent.flags & Extent::UNWRITTEN != 0 {
            return Ok(bytes);
        }
        let within = (first - offset) as usize;
        let physical = extent.physical + within as u64;
        self.device
            .read_at(physical * PAGE, &mut bytes, IoClass::Data)
            .map_err(|source| FileError::Read {
                ino,
                block: first,
                physical,
                source,
            })?;
        for (at, page) in bytes.chunks(PAGE_BYTES).enumerate() {
            if crc32c::crc32c(page) != extent.checksums[within + at] {
                return Err(FileError::Checksum {
                    ino,
                    block: first + at as u64,
                    physical: physical + at as u64,
                });
            }
        }
        Ok(bytes)
    }
}

/// The pages of `entries`, large entries cut into their pages.
fn pages_of(entries: &[(Span, Page)]) -> Vec<(u64, &[u8])> {
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

/// The extent of `extents` holding file block `index`, with its offset.
fn covering(extents: &BTreeMap<u64, Extent>, index: u64) -> Option<(u64, &Extent)> {
    extents
        .range(..=index)
        .next_back()
        .filter(|(offset, extent)| **offset + u64::from(extent.blocks()) > index)
        .map(|(offset, extent)| (*offset, extent))
}

/// The file blocks of `first..end` no extent of `extents` covers, as
/// `(start, end)` runs in order.
fn holes_between(extents: &BTreeMap<u64, Extent>, first: u64, end: u64) -> Vec<(u64, u64)> {
    let mut holes = Vec::new();
    let mut at = first;
    for (offset, extent) in extents {
        if *offset > at {
            holes.push((at, (*offset).min(end)));
        }
        at = at.max(offset + u64::from(extent.blocks()));
        if at >= end {
            break;
        }
    }
    if at < end {
        holes.push((at, end));
    }
    holes.retain(|(start, stop)| start < stop);
    holes
}

/// Unwritten extents mapping the `holes` (file block runs) onto the
/// allocated `runs`, block by block in order, as long as both stay
/// contiguous and the extent within [`MAX_EXTENT_BLOCKS`]. Their checksums
/// are placeholders: an unwritten extent's are never checked.
fn unwritten_extents(holes: &[(u64, u64)], runs: &[BlockRun]) -> BTreeMap<u64, Extent> {
    let file_blocks = holes.iter().flat_map(|&(start, stop)| start..stop);
    let physical = runs.iter().flat_map(|run| run.start..run.end());
    let mut extents: BTreeMap<u64, Extent> = BTreeMap::new();
    let mut last: Option<u64> = None;
    for (index, block) in file_blocks.zip(physical) {
        if let Some(extent) = last.and_then(|offset| {
            extents.get_mut(&offset).filter(|extent| {
                let blocks = u64::from(extent.blocks());
                offset + blocks == index
                    && extent.physical + blocks == block
                    && extent.blocks() < MAX_EXTENT_BLOCKS
            })
        }) {
            extent.checksums.push(0);
            continue;
        }
        extents.insert(
            index,
            Extent {
                flags: Extent::UNWRITTEN,
                physical: block,
                checksums: vec![0],
            },
        );
        last = Some(index);
    }
    extents
}

/// Removes file blocks `start..end` from `extents`, keeping the parts
/// outside, and collects the physical blocks removed.
fn punch(extents: &mut BTreeMap<u64, Extent>, start: u64, end: u64, freed: &mut Vec<BlockRun>) {
    let hit: Vec<u64> = extents
        .range(..end)
        .filter(|(offset, extent)| **offset + u64::from(extent.blocks()) > start)
        .map(|(offset, _)| *offset)
        .collect();
    for offset in hit {
        let extent = extents.remove(&offset).expect("key listed above");
        let blocks = u64::from(extent.blocks());
        let cut_from = start.max(offset) - offset;
        let cut_to = end.min(offset + blocks) - offset;
        freed.push(BlockRun::new(extent.physical + cut_from, cut_to - cut_from));
        if cut_from > 0 {
            extents.insert(
                offset,
                Extent {
                    flags: extent.flags,
                    physical: extent.physical,
                    checksums: extent.checksums[..cut_from as usize].to_vec(),
                },
            );
        }
        if cut_to < blocks {
            extents.insert(
                offset + cut_to,
                Extent {
                    flags: extent.flags,
                    physical: extent.physical + cut_to,
                    checksums: extent.checksums[cut_to as usize..].to_vec(),
                },
            );
        }
    }
}

/// `offset + length`, refused past the largest file offset (the last page
/// index must fit the file-block arithmetic).
fn checked_end(offset: u64, length: u64) -> FileResult<u64> {
    const MAX_FILE_BYTES: u64 = 1 << 60;
    offset
        .checked_add(length)
        .filter(|&end| end <= MAX_FILE_BYTES)
        .ok_or(FileError::TooLarge { offset, length })
}

/// A failed writeback transaction's errno for the error words: `ENOSPC`
/// when the b-trees are full, otherwise `EIO` (a vanished inode record
/// included: the data cannot be written anywhere).
fn writeback_errno(error: &FileError) -> Errno {
    match error {
        FileError::NotFound { .. } => Errno::EIO,
        error => Errno::new(error.errno()).unwrap_or(Errno::EIO),
    }
}

/// The device's errno in an error word (EIO when it does not fit one).
fn device_errno(error: &DeviceError) -> Errno {
    Errno::new(error.errno().0).unwrap_or(Errno::EIO)
}

fn journal_errno(error: &JournalError) -> Errno {
    error.device_error().map_or(Errno::EIO, device_errno)
}

#[cfg(test)]
mod tests {
    //! What the integration tests cannot see: the shape of the page cache
    //! (large entries and their splits), and writeback stopped between its
    //! steps (take-off, flight, landing) while the cache changes around it.

    use std::panic::{catch_unwind, AssertUnwindSafe};

    use proptest::prelude::*;

    use super::*;
    use crate::device::{FaultDevice, FaultPlan, FaultRule, MemoryDevice, Operations, SectorSize};
    use crate::fsck::fsck;
    use crate::inode::{Namespace, ROOT_INO};
    use crate::mkfs::{make_filesystem, MkfsOptions};

    /// A formatted in-memory filesystem with one empty file, its data going
    /// through `wrap(device)`.
    struct Bench {
        device: Arc<dyn BlockDevice>,
        plan: Arc<FaultPlan>,
        superblock: Superblock,
        metadata: Arc<Metadata>,
        ino: u64,
    }

    impl Bench {
        fn new() -> Bench {
            let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
            let plan = Arc::new(FaultPlan::new());
            let device: Arc<dyn BlockDevice> = Arc::new(FaultDevice::new(memory, plan.clone()));
            let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).unwrap();
            let metadata = Arc::new(Metadata::open_default(device.clone(), &superblock).unwrap());
            let (ino, _) = Namespace::new(metadata.clone())
                .create(ROOT_INO, b"f", 0o644, 0, 0)
                .unwrap();
            Bench {
                device,
                plan,
                superblock,
                metadata,
                ino,
            }
        }

        fn files(&self, data: Arc<dyn BlockDevice>) -> Files {
            Files::new(data, &self.superblock, self.metadata.clone()).unwrap()
        }

        /// Makes everything durable, mounts the image again and returns the
        /// file's contents there; fsck must find nothing wrong.
        fn remount_and_read(&self) -> Vec<u8> {
            self.metadata.trees.sync().unwrap();
            self.metadata.journal.flush().unwrap();
            let report = fsck(self.device.clone(), &mut |_| {}).unwrap();
            assert!(report.is_clean(), "fsck: {:#?}", report.problems);
            let metadata =
                Arc::new(Metadata::open_default(self.device.clone(), &self.superblock).unwrap());
            let files = Files::new(self.device.clone(), &self.superblock, metadata).unwrap();
            let handle = files.open(self.ino).unwrap();
            files.read(&handle, 0, 1 << 30).unwrap()
        }
    }

    /// One step of [`flights_interleaved_with_cache_changes_match_a_model`].
    #[derive(Debug, Clone)]
    enum Step {
        Write { offset: u64, length: u64, seed: u8 },
        Read { offset: u64, length: u64 },
        TakeOff,
        Land { fail: bool },
        Truncate { size: u64 },
        Budget { pages: u64 },
    }

    /// Files in the model stay within this many pages (three large runs).
    const MODEL_PAGES: u64 = 48;

    fn step() -> impl Strategy<Value = Step> {
        let bytes = MODEL_PAGES * PAGE;
        prop_oneof![
            4 => (0..bytes, 1..8 * PAGE, any::<u8>())
                .prop_map(|(offset, length, seed)| Step::Write { offset, length, seed }),
            2 => (0..MODEL_PAGES / LARGE_PAGES, any::<u8>()).prop_map(|(run, seed)| Step::Write {
                offset: run * LARGE_PAGES * PAGE,
                length: LARGE_PAGES * PAGE,
                seed,
            }),
            3 => (0..bytes, 1..bytes).prop_map(|(offset, length)| Step::Read { offset, length }),
            2 => Just(Step::TakeOff),
            2 => any::<bool>().prop_map(|fail| Step::Land { fail }),
            1 => (0..bytes).prop_map(|size| Step::Truncate { size }),
            1 => (0..40u64).prop_map(|pages| Step::Budget { pages }),
        ]
    }

    fn pages_in(offset: u64, end: u64) -> Range<u64> {
        offset / PAGE..end.div_ceil(PAGE)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Writeback stopped in flight while writes (partial, whole-page
        /// and large), reads that fill the cache, evictions and landings
        /// (failed or not) happen around it: every read matches the model,
        /// the dirty count is exactly the pages written since they were
        /// last made durable (in flight included), a failed landing
        /// reports its error, and the file survives a remount.
        #[test]
        fn flights_interleaved_with_cache_changes_match_a_model(
            steps in proptest::collection::vec(step(), 1..40)
        ) {
            let bench = Bench::new();
            let files = bench.files(bench.device.clone());
            let mut handle = files.open(bench.ino).unwrap();
            let mut model: Vec<u8> = Vec::new();
            let mut dirty: BTreeSet<u64> = BTreeSet::new();
            let mut in_flight: BTreeSet<u64> = BTreeSet::new();
            let mut flight: Option<Flight> = None;
            for step in steps {
                match step {
                    Step::Write { offset, length, seed } => {
                        let bytes = pattern(length as usize, seed);
                        files.write(&handle, offset, &bytes).unwrap();
                        let end = (offset + length) as usize;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[offset as usize..end].copy_from_slice(&bytes);
                        dirty.extend(pages_in(offset, offset + length));
                    }
                    Step::Read { offset, length } => {
                        let read = files.read(&handle, offset, length as usize).unwrap();
                        let from = (offset as usize).min(model.len());
                        let to = ((offset + length) as usize).min(model.len());
                        prop_assert!(read == model[from..to], "read {}+{} differs", offset, length);
                    }
                    Step::TakeOff => {
                        if flight.is_none() {
                            flight = files.take_off(bench.ino);
                            in_flight = std::mem::take(&mut dirty);
                        }
                    }
                    Step::Land { fail } => {
                        let Some(taken) = flight.take() else { continue };
                        let rule = fail.then(|| {
                            bench.plan.add_rule(
                                FaultRule::fail(crate::device::Errno::EIO)
                                    .for_class(IoClass::Data)
                                    .on(Operations::WRITE),
                            ).unwrap()
                        });
                        let landing = files.fly(&taken);
                        if let Some(rule) = rule {
                            bench.plan.remove_rule(rule);
                        }
                        let landed = files.land(taken, landing);
                        if fail && !in_flight.is_empty() {
                            prop_assert_eq!(landed, Err(Errno::EIO));
                            dirty.append(&mut in_flight);
                        } else {
                            prop_assert!(landed.is_ok());
                            in_flight.clear();
                        }
                    }
                    Step::Truncate { size } => {
                        if flight.is_some() {
                            // It would wait for the landing, which this
                            // thread is to do.
                            continue;
                        }
                        files.truncate(bench.ino, size).unwrap();
                        let keep = size.div_ceil(PAGE);
                        dirty.retain(|&page| page < keep);
                        let tail = size as usize..(keep * PAGE).min(model.len() as u64) as usize;
                        if size < model.len() as u64
                            && size % PAGE != 0
                            && model[tail].iter().any(|&byte| byte != 0)
                        {
                            dirty.insert(size / PAGE);
                        }
                        model.resize(size as usize, 0);
                    }
                    Step::Budget { pages } => files.set_cache_budget(pages * PAGE),
                }
                let unclean = dirty.union(&in_flight).count() as u64;
                prop_assert_eq!(files.cache_stats().dirty_bytes, unclean * PAGE);
            }
            if let Some(taken) = flight.take() {
                let landing = files.fly(&taken);
                prop_assert!(files.land(taken, landing).is_ok());
            }
            // A failed landing's error reaches the handle once, then the
            // retry is clean.
            let _ = files.fsync(&mut handle);
            prop_assert!(files.fsync(&mut handle).is_ok());
            prop_assert_eq!(files.cache_stats().dirty_bytes, 0);
            prop_assert!(bench.remount_and_read() == model, "contents differ after remount");
        }
    }

    #[test]
    fn a_file_deleted_while_its_data_is_in_flight_lands_without_an_error() {
        let bench = Bench::new();
        let files = bench.files(bench.device.clone());
        let handle = files.open(bench.ino).unwrap();
        files
            .write(&handle, 0, &pattern(3 * PAGE_BYTES, 2))
            .unwrap();
        files.release(handle);
        let flight = files.take_off(bench.ino).expect("dirty pages to write");
        // Its last link goes (nobody has it open): deleted at once.
        let deleted = Namespace::new(bench.metadata.clone())
            .unlink(ROOT_INO, b"f")
            .unwrap();
        assert_eq!(deleted, Some(bench.ino));
        let landing = files.fly(&flight);
        assert!(landing.failure.is_some(), "the commit finds no inode");
        assert_eq!(files.land(flight, landing), Ok(0));
        // Nobody is told of a loss that is no loss.
        assert!(files.fs_peek().is_ok());
        assert!(files.peek_error(bench.ino).is_ok());
        files.forget(bench.ino);
        assert_eq!(files.cache_stats(), CacheStats::default());
        // No block leaked: the new ones were freed, fsck is clean.
        bench.metadata.trees.sync().unwrap();
        bench.metadata.journal.flush().unwrap();
        let report = fsck(bench.device.clone(), &mut |_| {}).unwrap();
        assert!(report.is_clean(), "fsck: {:#?}", report.problems);
    }

    /// A device whose data writes panic while `armed`.
    struct PanickingDevice {
        inner: Arc<dyn BlockDevice>,
        armed: AtomicBool,
    }

    impl BlockDevice for PanickingDevice {
        fn read_at(
            &self,
            offset: u64,
            buffer: &mut [u8],
            class: IoClass,
        ) -> Result<(), DeviceError> {
            self.inner.read_at(offset, buffer, class)
        }
        fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
            if class == IoClass::Data && self.armed.load(Ordering::SeqCst) {
                panic!("injected panic in a data write");
            }
            self.inner.write_at(offset, buffer, class)
        }
        fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
            self.inner.flush(class)
        }
        fn length(&self) -> u64 {
            self.inner.length()
        }
        fn sector_size(&self) -> SectorSize {
            self.inner.sector_size()
        }
    }

    #[test]
    fn a_panic_in_flight_leaves_the_pages_dirty_and_the_inode_free() {
        let bench = Bench::new();
        let device = Arc::new(PanickingDevice {
            inner: bench.device.clone(),
            armed: AtomicBool::new(true),
        });
        let files = bench.files(device.clone());
        let mut handle = files.open(bench.ino).unwrap();
        let data = pattern(20 * PAGE_BYTES + 100, 5);
        files.write(&handle, 0, &data).unwrap();
        let panicked = catch_unwind(AssertUnwindSafe(|| files.fsync(&mut handle)));
        assert!(panicked.is_err(), "the data write should have panicked");
        // Landed as untried: all dirty again, nothing in flight, nothing
        // reported (the panic is what gets reported, by the caller).
        assert_eq!(files.cache_stats().dirty_bytes, 21 * PAGE);
        assert!(!files.lock().inodes[&bench.ino].syncing);
        assert!(files.peek_error(bench.ino).is_ok());
        device.armed.store(false, Ordering::SeqCst);
        files.fsync(&mut handle).unwrap();
        assert_eq!(files.cache_stats().dirty_bytes, 0);
        assert!(bench.remount_and_read() == data);
    }

    fn pattern(length: usize, seed: u8) -> Vec<u8> {
        (0..length)
            .map(|at| (at as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    /// The cached entries of `ino` as (first page, order, dirty).
    fn shape(files: &Files, ino: u64) -> Vec<(u64, u8, bool)> {
        let cache = files.lock();
        let state = &cache.inodes[&ino];
        state
            .pages
            .iter()
            .map(|(span, _)| {
                (
                    span.index(),
                    span.order(),
                    state.pages.is_marked(span.index(), Mark::Dirty),
                )
            })
            .collect()
    }

    /// Reads the whole file through `handle` and compares with `model`.
    fn check(files: &Files, handle: &Handle, model: &[u8]) {
        let read = files.read(handle, 0, model.len() + PAGE_BYTES).unwrap();
        assert!(read == model, "contents differ");
        let stats = files.cache_stats();
        assert!(stats.dirty_bytes <= stats.cached_bytes);
    }

    fn small(pages: Range<u64>, dirty: bool) -> Vec<(u64, u8, bool)> {
        pages.map(|index| (index, 0, dirty)).collect()
    }

    #[test]
    fn whole_aligned_runs_are_large_entries_split_by_partial_changes() {
        let device: Arc<dyn BlockDevice> =
            Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
        let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).unwrap();
        let metadata = Arc::new(Metadata::open_default(device.clone(), &superblock).unwrap());
        let (ino, _) = Namespace::new(metadata.clone())
            .create(ROOT_INO, b"f", 0o644, 0, 0)
            .unwrap();
        let files = Files::new(device, &superblock, metadata).unwrap();
        let mut handle = files.open(ino).unwrap();
        let mut model = pattern(40 * PAGE_BYTES, 3);

        // Pages 0..40 in one write: two large entries, then 8 small ones.
        files.write(&handle, 0, &model).unwrap();
        let mut expected = vec![(0, LARGE_ORDER, true), (16, LARGE_ORDER, true)];
        expected.extend(small(32..40, true));
        assert_eq!(shape(&files, ino), expected);
        check(&files, &handle, &model);
        assert_eq!(files.cache_stats().dirty_bytes, 40 * PAGE);

        // Writeback keeps them large and clean.
        files.fsync(&mut handle).unwrap();
        let mut expected = vec![(0, LARGE_ORDER, false), (16, LARGE_ORDER, false)];
        expected.extend(small(32..40, false));
        assert_eq!(shape(&files, ino), expected);
        check(&files, &handle, &model);

        // A partial overwrite of page 5 splits the first entry; only page
        // 5 becomes dirty.
        files.write(&handle, 5 * PAGE + 10, b"abc").unwrap();
        model[5 * PAGE_BYTES + 10..5 * PAGE_BYTES + 13].copy_from_slice(b"abc");
        let mut expected = small(0..5, false);
        expected.push((5, 0, true));
        expected.extend(small(6..16, false));
        expected.push((16, LARGE_ORDER, false));
        expected.extend(small(32..40, false));
        assert_eq!(shape(&files, ino), expected);
        check(&files, &handle, &model);

        // Rewriting a whole run replaces the small entries by a large one.
        let run = pattern(16 * PAGE_BYTES, 9);
        files.write(&handle, 0, &run).unwrap();
        model[..16 * PAGE_BYTES].copy_from_slice(&run);
        assert_eq!(shape(&files, ino)[0], (0, LARGE_ORDER, true));
        assert_eq!(shape(&files, ino).len(), 1 + 1 + 8);
        check(&files, &handle, &model);
        files.fsync(&mut handle).unwrap();

        // Truncating into the second run splits it; a punch across the
        // first one splits that.
        files.truncate(ino, 20 * PAGE + 7).unwrap();
        model.truncate(20 * PAGE_BYTES + 7);
        let mut expected = vec![(0, LARGE_ORDER, false)];
        expected.extend(small(16..20, false));
        expected.push((20, 0, true));
        assert_eq!(shape(&files, ino), expected);
        check(&files, &handle, &model);
        files
            .fallocate(
                ino,
                2 * PAGE,
                3 * PAGE,
                FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
            )
            .unwrap();
        model[2 * PAGE_BYTES..5 * PAGE_BYTES].fill(0);
        let mut expected = small(0..2, false);
        expected.extend(small(5..20, false));
        expected.push((20, 0, true));
        assert_eq!(shape(&files, ino), expected);
        check(&files, &handle, &model);

        // Eviction splits a clean large entry only to trim the last few
        // pages over the budget.
        files.fsync(&mut handle).unwrap();
        files.set_cache_budget(0);
        assert_eq!(files.cache_stats().cached_bytes, 0);
        assert!(shape(&files, ino).is_empty());
        files.set_cache_budget(20 * PAGE);
        let run = pattern(16 * PAGE_BYTES, 11);
        files.write(&handle, 32 * PAGE, &run).unwrap();
        model.resize(32 * PAGE_BYTES, 0);
        model.extend_from_slice(&run);
        files.fsync(&mut handle).unwrap();
        assert_eq!(shape(&files, ino), vec![(32, LARGE_ORDER, false)]);
        files.set_cache_budget(4 * PAGE);
        assert_eq!(shape(&files, ino), small(44..48, false));
        // Pages 0, 1 and 5..=20 at the zero budget, then 32..44.
        assert_eq!(files.cache_stats().evicted_pages, 18 + 12);
        check(&files, &handle, &model);
        assert_eq!(files.cache_stats().cached_bytes, 4 * PAGE);
        files.release(handle);
    }
}
