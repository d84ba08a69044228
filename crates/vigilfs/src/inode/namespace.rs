//! The namespace operations: lookup, create (mknod, mkdir, symlink), link,
//! unlink, rmdir, rename, readdir and setattr (mode, owner, times), keyed by
//! inode number. Size changes are [`Files::truncate`]: the page cache lives
//! there.
//!
//! Every mutating operation is exactly one b-tree [`Transaction`]: it reads
//! what it needs through the transaction (which sees its own writes),
//! gathers every update and commits once, so a crash leaves all of it or
//! none of it. Transactions do not detect conflicts, so every
//! read-modify-commit of inode records (here and in [`Files`]) holds the
//! metadata's record lock ([`Metadata::lock_records`]). Reads (lookup,
//! getattr, readdir, readlink) take no lock and see committed state; a
//! read of several records that finds them disagreeing (a commit landed
//! between its reads) is read again under the lock
//! ([`Metadata::read_records`]), so a concurrent unlink is never taken for
//! corruption.
//!
//! Invariants kept (the ones fsck checks):
//!
//! * a non-directory's `nlink` is the number of entries naming it; when the
//!   last one goes (unlink, or rename over it), the inode record goes with
//!   it, and in the same transaction its extents and their rmap records are
//!   deleted. The blocks are freed after the commit at its seq (reused only
//!   once it is durable);
//! * an open file is not deleted with its last link: the caller reports
//!   opens and closes ([`Namespace::opened`], [`Namespace::closed`]), and
//!   the last unlink of an open file leaves it an **orphan** — `nlink` 0,
//!   no entry, and an orphan record — whose data lives until its last
//!   close. An orphan left by a crash is deleted at the next mount
//!   ([`Namespace::purge_orphans`]);
//! * a directory removed (rmdir, or rename over it) while open is an
//!   orphan the same way, with `nlink` 0, until its last close; nothing
//!   can be looked up in, listed from or added to it meanwhile;
//! * a directory's `nlink` is 2 plus its subdirectories, and exactly one
//!   entry names it (the root none); `.` and `..` are never stored — the
//!   FUSE layer synthesises them;
//! * an entry's key is `(parent, name_hash(name), collision)`, the smallest
//!   collision index free for that hash when the entry was made; lookups
//!   probe every index of the hash and compare the stored names;
//! * the parent directory's mtime and ctime change with its entries; an
//!   inode's ctime changes with its link count;
//! * a file's poison records (see [`crate::poison`]) go in the transaction
//!   that deletes the extents they lie in.
//!
//! Extra records, all in the Meta tree (fsck checks only the live-inode
//! count):
//!
//! * `b"namespace-counters"` → next inode number u64 LE | next generation
//!   u64 LE. Inode numbers are never reused; a filesystem without the
//!   record (fresh from mkfs) starts at `ROOT_INO + 1` and generation 2.
//!   The counters are updated in the transaction that uses them.
//! * `b"live-inodes"` → the number of inode records u64 LE, for statfs's
//!   inode counts: changed in the transaction that writes or deletes an
//!   inode record. Images made before it lack the record until their first
//!   read-write mount counts the inode tree
//!   ([`Namespace::record_live_inodes`]); the superblock's
//!   `RO_COMPAT_INODE_COUNT` keeps builds that would not keep it from
//!   writing.
//! * `b'P' | ino u64 BE` → parent directory ino u64 LE, for every directory
//!   but the root: how rename walks up to refuse moving a directory into
//!   its own subtree.
//! * `b'S' | ino u64 BE` → the symlink's target bytes (at most the b-tree
//!   value limit; the inode's size is the target's length).
//! * `b'O' | ino u64 BE` → empty: `ino` is an orphan, written in the
//!   transaction that drops its last link, deleted with the inode.
//!
//! [`Files`]: super::Files
//! [`Files::truncate`]: super::Files::truncate

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use thiserror::Error;

use super::record::{
    inode_key, name_hash, valid_name, Dirent, DirentKey, Extent, ExtentKey, FileType, InodeRecord,
    RecordError, Timestamp, MAX_NAME_BYTES, ROOT_INO,
};
use super::{inode_flags, xattr};
use crate::alloc::Extent as BlockRun;
use crate::btree::{BtreeError, Transaction, TreeId};
use crate::metadata::Metadata;
use crate::poison;
use crate::rmap::{self, RmapError};

const COUNTERS_KEY: &[u8] = b"namespace-counters";
/// Where the number of inode records is kept (see the module comment).
pub(crate) const LIVE_INODES_KEY: &[u8] = b"live-inodes";
const PARENT_PREFIX: u8 = b'P';
const SYMLINK_PREFIX: u8 = b'S';
const ORPHAN_PREFIX: u8 = b'O';

/// Most extents one transaction deletes: with their rmap records, well
/// within one journal entry. A file with more is deleted in batches.
const EXTENTS_PER_TRANSACTION: usize = 512;

/// Most extended-attribute records one transaction deletes. A record can
/// fill a b-tree leaf alone (values up to a leaf's size), and a commit
/// must find a block for every leaf it changes: sixteen fit in what a full
/// filesystem keeps for deletions, a file with thousands did not, and could
/// not be deleted at all.
const XATTRS_PER_TRANSACTION: usize = 16;

/// Longest walk up the directory tree before the parent chain is called
/// corrupt (a cycle).
const MAX_DEPTH: usize = 1 << 20;

/// Why a namespace operation failed. Nothing was changed when one is
/// returned.
#[derive(Debug, Error)]
pub enum NamespaceError {
    /// The name or inode does not exist.
    #[error("no such file or directory")]
    NotFound,
    /// The name already exists.
    #[error("the name exists")]
    Exists,
    /// A directory was needed.
    #[error("not a directory")]
    NotADirectory,
    /// A non-directory was needed.
    #[error("is a directory")]
    IsADirectory,
    /// The directory has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// The name is empty, `.`, `..`, or holds `/` or NUL.
    #[error("invalid name")]
    InvalidName,
    /// The name (or a symlink target) is too long.
    #[error("name too long")]
    NameTooLong,
    /// An argument is not valid (the message says which).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The operation is not permitted on this inode (hard links to
    /// directories).
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// The link count would overflow.
    #[error("too many links")]
    TooManyLinks,
    /// No space: for b-tree nodes, or every collision index of a hash in
    /// a directory is taken.
    #[error("no space: {0}")]
    NoSpace(String),
    /// A record did not decode, or records disagree: the metadata is
    /// damaged.
    #[error("corrupt namespace metadata: {0}")]
    Corrupt(String),
    /// The b-trees failed (I/O, journal, error state).
    #[error("b-trees: {0}")]
    Btree(#[source] BtreeError),
}

impl NamespaceError {
    /// The errno a system call reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            NamespaceError::NotFound => libc::ENOENT,
            NamespaceError::Exists => libc::EEXIST,
            NamespaceError::NotADirectory => libc::ENOTDIR,
            NamespaceError::IsADirectory => libc::EISDIR,
            NamespaceError::NotEmpty => libc::ENOTEMPTY,
            NamespaceError::InvalidName => libc::EINVAL,
            NamespaceError::NameTooLong => libc::ENAMETOOLONG,
            NamespaceError::Invalid(_) => libc::EINVAL,
            NamespaceError::NotPermitted(_) => libc::EPERM,
            NamespaceError::TooManyLinks => libc::EMLINK,
            NamespaceError::NoSpace(_) => libc::ENOSPC,
            NamespaceError::Corrupt(_) => libc::EIO,
            NamespaceError::Btree(_) => libc::EIO,
        }
    }
}

impl From<xattr::XattrError> for NamespaceError {
    /// The ACL work inside a namespace transaction: only metadata failures
    /// and a shortage of space can happen there.
    fn from(error: xattr::XattrError) -> NamespaceError {
        match error {
            xattr::XattrError::Btree(error) => NamespaceError::from(error),
            xattr::XattrError::NoSpace(why) => NamespaceError::NoSpace(why),
            other => NamespaceError::Corrupt(other.to_string()),
        }
    }
}

impl From<BtreeError> for NamespaceError {
    fn from(error: BtreeError) -> NamespaceError {
        match error {
            BtreeError::NoSpace { .. } => NamespaceError::NoSpace(error.to_string()),
            other => NamespaceError::Btree(other),
        }
    }
}

fn corrupt(what: String, error: RecordError) -> NamespaceError {
    NamespaceError::Corrupt(format!("{what}: {error}"))
}

/// A namespace operation's result.
pub type NamespaceResult<T> = Result<T, NamespaceError>;

/// Where readdir resumes: the position of the last entry returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirCookie {
    /// The entry's name hash.
    pub hash: u64,
    /// Its collision index.
    pub collision: u16,
}

/// One entry readdir returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Pass it back to continue after this entry.
    pub cookie: DirCookie,
    /// The name.
    pub name: Vec<u8>,
    /// The inode named.
    pub ino: u64,
    /// Its type.
    pub file_type: FileType,
}

/// The flags of [`Namespace::rename`] (as `renameat2`'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with `EEXIST` rather than replace an existing target.
    pub noreplace: bool,
    /// Swap source and target, which must both exist.
    pub exchange: bool,
    /// Leave a whiteout where the source was: a character device 0:0, the
    /// mark overlayfs reads as "deleted in this layer" (not with
    /// `exchange`).
    pub whiteout: bool,
}

/// How [`Namespace::setattr`] sets a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// The current time (`UTIME_NOW`).
    Now,
    /// This time.
    At(Timestamp),
}

/// The attributes [`Namespace::setattr`] changes; `None` leaves one as it
/// is. The ctime is always set to now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (`0o7777` of it); the type bits are kept.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

/// The namespace operations on a filesystem's b-trees.
pub struct Namespace {
    metadata: Arc<Metadata>,
    /// Open count per inode: an open file whose last link goes becomes an
    /// orphan instead of being deleted. Changed under the record lock.
    open: Mutex<HashMap<u64, u32>>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Namespace").finish_non_exhaustive()
    }
}

fn check_name(name: &[u8]) -> NamespaceResult<()> {
    if name.len() > MAX_NAME_BYTES {
        Err(NamespaceError::NameTooLong)
    } else if valid_name(name) {
        Ok(())
    } else {
        Err(NamespaceError::InvalidName)
    }
}

fn prefixed_key(prefix: u8, ino: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&ino.to_be_bytes());
    key
}

fn read_inode(transaction: &Transaction<'_>, ino: u64) -> NamespaceResult<Option<InodeRecord>> {
    match transaction.get(TreeId::Inodes, &inode_key(ino))? {
        Some(bytes) => InodeRecord::decode(&bytes)
            .map(Some)
            .map_err(|error| corrupt(format!("inode {ino}"), error)),
        None => Ok(None),
    }
}

fn require_inode(transaction: &Transaction<'_>, ino: u64) -> NamespaceResult<InodeRecord> {
    read_inode(transaction, ino)?.ok_or(NamespaceError::NotFound)
}

/// Directory `ino`, which must still have its entry: a removed directory
/// kept while open (an orphan, no links) has no entries to look up, list or
/// add to.
fn require_directory(transaction: &Transaction<'_>, ino: u64) -> NamespaceResult<InodeRecord> {
    let record = require_inode(transaction, ino)?;
    if record.file_type() != FileType::Directory {
        Err(NamespaceError::NotADirectory)
    } else if record.nlink == 0 {
        Err(NamespaceError::NotFound)
    } else {
        Ok(record)
    }
}

fn write_inode(
    transaction: &mut Transaction<'_>,
    ino: u64,
    record: &InodeRecord,
) -> NamespaceResult<()> {
    transaction.put(TreeId::Inodes, &inode_key(ino), &record.encode())?;
    Ok(())
}

/// Applies `change` to inode `ino` as the transaction currently has it.
fn update_inode(
    transaction: &mut Transaction<'_>,
    ino: u64,
    change: impl FnOnce(&mut InodeRecord) -> NamespaceResult<()>,
) -> NamespaceResult<()> {
    let mut record = require_inode(transaction, ino)?;
    change(&mut record)?;
    write_inode(transaction, ino, &record)
}

/// A directory's entries changed: its mtime and ctime become `time`, and
/// its link count moves by `subdirectories`.
fn touch_directory(
    transaction: &mut Transaction<'_>,
    ino: u64,
    subdirectories: i64,
    time: Timestamp,
) -> NamespaceResult<()> {
    update_inode(transaction, ino, |record| {
        record.nlink = u32::try_from(i64::from(record.nlink) + subdirectories)
            .map_err(|_| NamespaceError::TooManyLinks)?;
        record.mtime = time;
        record.ctime = time;
        Ok(())
    })
}

/// An existing entry found by name, and where a new entry with that name
/// would go.
struct Probe {
    found: Option<(DirentKey, Dirent)>,
    free: Option<DirentKey>,
}

fn probe(transaction: &Transaction<'_>, parent: u64, name: &[u8]) -> NamespaceResult<Probe> {
    let hash = name_hash(name);
    let prefix = (u128::from(parent) << 64) | u128::from(hash);
    let start = prefix.to_be_bytes();
    let end = prefix.checked_add(1).map(u128::to_be_bytes);
    let entries = transaction.scan(
        TreeId::Dirents,
        &start,
        end.as_ref().map(|end| &end[..]),
        usize::from(u16::MAX) + 1,
    )?;
    let mut found = None;
    let mut next_free: u32 = 0;
    let mut free = None;
    for (key, value) in entries {
        let position = DirentKey::decode(&key)
            .map_err(|error| corrupt(format!("directory {parent} entry key"), error))?;
        let dirent = Dirent::decode(&value).map_err(|error| {
            corrupt(
                format!("directory {parent} entry {}", position.collision),
                error,
            )
        })?;
        if free.is_none() && u32::from(position.collision) > next_free {
            free = Some(next_free);
        }
        next_free = u32::from(position.collision) + 1;
        if dirent.name == name {
            found = Some((position, dirent));
        }
    }
    let free = free
        .or(Some(next_free))
        .and_then(|index| u16::try_from(index).ok())
        .map(|collision| DirentKey {
            parent,
            hash,
            collision,
        });
    Ok(Probe { found, free })
}

fn put_entry(
    transaction: &mut Transaction<'_>,
    key: &DirentKey,
    dirent: &Dirent,
) -> NamespaceResult<()> {
    transaction.put(TreeId::Dirents, &key.encode(), &dirent.encode())?;
    Ok(())
}

fn set_parent(transaction: &mut Transaction<'_>, dir: u64, parent: u64) -> NamespaceResult<()> {
    transaction.put(
        TreeId::Meta,
        &prefixed_key(PARENT_PREFIX, dir),
        &parent.to_le_bytes(),
    )?;
    Ok(())
}

fn parent_of(transaction: &Transaction<'_>, dir: u64) -> NamespaceResult<u64> {
    let bytes = transaction
        .get(TreeId::Meta, &prefixed_key(PARENT_PREFIX, dir))?
        .ok_or_else(|| NamespaceError::Corrupt(format!("directory {dir} has no parent record")))?;
    let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
        NamespaceError::Corrupt(format!("directory {dir}'s parent record has a bad length"))
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Whether `dir` is `ancestor` or lies below it.
fn is_within(transaction: &Transaction<'_>, mut dir: u64, ancestor: u64) -> NamespaceResult<bool> {
    for _ in 0..MAX_DEPTH {
        if dir == ancestor {
            return Ok(true);
        }
        if dir == ROOT_INO {
            return Ok(false);
        }
        dir = parent_of(transaction, dir)?;
    }
    Err(NamespaceError::Corrupt(
        "the directory parent chain has a cycle".into(),
    ))
}

fn is_empty_directory(transaction: &Transaction<'_>, dir: u64) -> NamespaceResult<bool> {
    let (start, end) = DirentKey::directory_range(dir);
    let entries = transaction.scan(TreeId::Dirents, &start, end.as_ref().map(|end| &end[..]), 1)?;
    Ok(entries.is_empty())
}

fn rmap_error(error: RmapError) -> NamespaceError {
    match error {
        RmapError::Btree(error) => NamespaceError::from(error),
        other => NamespaceError::Corrupt(format!("rmap: {other}")),
    }
}

/// Deletes every extent of `ino` and its rmap record; collects the blocks
/// they held into `freed`.
fn delete_extents(
    transaction: &mut Transaction<'_>,
    ino: u64,
    limit: usize,
    freed: &mut Vec<BlockRun>,
) -> NamespaceResult<bool> {
    let batch = first_extents(transaction, ino, limit)?;
    let remain = batch.len() > limit;
    for (key, value) in batch.into_iter().take(limit) {
        let extent = Extent::decode(&value)
            .map_err(|error| corrupt(format!("inode {ino} extent"), error))?;
        let offset = ExtentKey::decode(&key)
            .map_err(|error| corrupt(format!("inode {ino} extent key"), error))?
            .offset;
        transaction.delete(TreeId::Extents, &key)?;
        rmap::remove(transaction, extent.physical).map_err(rmap_error)?;
        // Its poison goes with it (a run never spans two extents).
        poison::delete_within(
            transaction,
            ino,
            offset,
            offset + u64::from(extent.blocks()),
        )?;
        freed.push(BlockRun::new(extent.physical, u64::from(extent.blocks())));
    }
    Ok(remain)
}

/// The first `limit + 1` extent records of `ino` (one more than asked
/// for: whether more than `limit` exist).
fn first_extents(
    transaction: &Transaction<'_>,
    ino: u64,
    limit: usize,
) -> NamespaceResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let (start, end) = ExtentKey::file_range(ino);
    Ok(transaction.scan(
        TreeId::Extents,
        &start,
        end.as_ref().map(|end| &end[..]),
        limit.saturating_add(1),
    )?)
}

/// Whether `ino` has more than `limit` extents: too many to delete in the
/// transaction that drops its last link.
fn has_more_extents_than(
    transaction: &Transaction<'_>,
    ino: u64,
    limit: usize,
) -> NamespaceResult<bool> {
    Ok(first_extents(transaction, ino, limit)?.len() > limit)
}

/// Deletes inode `ino` (a `kind`) and everything hanging off it: its
/// extents (blocks collected into `freed`), its parent or symlink record,
/// its orphan record, its extended attributes.
fn delete_inode(
    transaction: &mut Transaction<'_>,
    ino: u64,
    kind: FileType,
    freed: &mut Vec<BlockRun>,
) -> NamespaceResult<()> {
    transaction.delete(TreeId::Inodes, &inode_key(ino))?;
    count_live_inodes(transaction, -1)?;
    xattr::delete_all(transaction, ino)?;
    match kind {
        FileType::Directory => {
            transaction.delete(TreeId::Meta, &prefixed_key(PARENT_PREFIX, ino))?;
            transaction.delete(TreeId::Meta, &prefixed_key(ORPHAN_PREFIX, ino))?;
        }
        FileType::Symlink => {
            transaction.delete(TreeId::Meta, &prefixed_key(SYMLINK_PREFIX, ino))?;
        }
        _ => {
            // Callers have made sure few remain (see drop_link).
            while delete_extents(transaction, ino, EXTENTS_PER_TRANSACTION, freed)? {}
            transaction.delete(TreeId::Meta, &prefixed_key(ORPHAN_PREFIX, ino))?;
        }
    }
    Ok(())
}

/// Drops one link to `ino` (an entry naming it is going). A directory's
/// only link is its entry: the inode and its parent record go, unless it
/// is open (`open`): then it becomes an orphan (link count 0, an orphan
/// record) until its last close. A non-directory goes with its last link,
/// and its extents (collected into `freed`) with it — unless it is open:
/// then it becomes an orphan, with no links and an orphan record, until its
/// last close. A file with more extents, or an inode with more extended
/// attributes, than one transaction should delete becomes an orphan too,
/// for [`Namespace::delete_if_orphan`] to delete in batches after the
/// commit. Returns the inode if it was deleted.
/// Refuses to remove, rename or replace the entry naming `ino` when the
/// inode is immutable or append-only (`may_delete`). Checked here, in the
/// transaction that reads the entry anyway, so an unlink costs no second
/// lookup.
fn refuse_if_pinned(transaction: &Transaction<'_>, ino: u64) -> NamespaceResult<()> {
    if inode_flags::is_pinned(&require_inode(transaction, ino)?) {
        return Err(NamespaceError::NotPermitted(
            "an immutable or append-only inode cannot be removed or renamed",
        ));
    }
    Ok(())
}

fn drop_link(
    transaction: &mut Transaction<'_>,
    ino: u64,
    time: Timestamp,
    open: bool,
    freed: &mut Vec<BlockRun>,
) -> NamespaceResult<Option<u64>> {
    let mut record = require_inode(transaction, ino)?;
    let kind = record.file_type();
    let deletable = if kind == FileType::Directory {
        !open
    } else {
        record.nlink <= 1
            && !open
            && !has_more_extents_than(transaction, ino, EXTENTS_PER_TRANSACTION)?
    } && !xattr::has_more_than(transaction, ino, XATTRS_PER_TRANSACTION)?;
    if deletable {
        delete_inode(transaction, ino, kind, freed)?;
        return Ok(Some(ino));
    }
    // A directory's links are its entry, its "." and its subdirectories'
    // "..": it has none once its (only) entry goes.
    record.nlink = if kind == FileType::Directory {
        0
    } else {
        record.nlink - 1
    };
    record.ctime = time;
    if record.nlink == 0 {
        transaction.put(TreeId::Meta, &prefixed_key(ORPHAN_PREFIX, ino), &[])?;
    }
    write_inode(transaction, ino, &record)?;
    Ok(None)
}

/// What a new inode is.
struct NewInode<'t> {
    kind: FileType,
    permissions: u32,
    /// Applied unless the parent has a default ACL (symlinks ignore it).
    umask: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    symlink_target: Option<&'t [u8]>,
}

/// Who makes a new inode and with what mode, for
/// [`Namespace::make_node`] and [`Namespace::make_directory`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Creation {
    /// Type and permission bits asked for (the type for `make_node` only).
    pub mode: u32,
    /// The maker's umask: applied unless the parent directory has a
    /// default ACL, which decides instead.
    pub umask: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number, for device nodes.
    pub rdev: u64,
}

impl Namespace {
    /// The namespace kept in `metadata`'s b-trees; the data blocks of a
    /// file whose last link goes are freed to its allocator.
    pub fn new(metadata: Arc<Metadata>) -> Namespace {
        Namespace {
            metadata,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn open_counts(&self) -> MutexGuard<'_, HashMap<u64, u32>> {
        // Each update is one map operation: a poisoned lock holds a
        // consistent map.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_open(&self, ino: u64) -> bool {
        self.open_counts().contains_key(&ino)
    }

    /// Records that `ino` was opened: while it is open its last unlink
    /// leaves it an orphan rather than deleting it.
    pub fn opened(&self, ino: u64) {
        let _writer = self.lock();
        *self.open_counts().entry(ino).or_default() += 1;
    }

    /// Records that one open of `ino` was closed. The last close of an
    /// orphan deletes it and frees its data; returns whether it did.
    pub fn closed(&self, ino: u64) -> NamespaceResult<bool> {
        let _writer = self.lock();
        if !self.drop_open(ino) {
            return Ok(false);
        }
        self.delete_if_orphan(ino)
    }

    /// Records that one open of `ino` was closed, deleting nothing (the
    /// filesystem cannot write now): returns whether that was the last
    /// open, so an orphan it leaves is for [`Namespace::purge_orphan`] later
    /// (or the next mount) to delete.
    pub fn closed_keeping_orphan(&self, ino: u64) -> bool {
        let _writer = self.lock();
        self.drop_open(ino)
    }

    /// Deletes `ino` if it is an orphan nobody has open; returns whether it
    /// did.
    pub fn purge_orphan(&self, ino: u64) -> NamespaceResult<bool> {
        let _writer = self.lock();
        if self.is_open(ino) {
            return Ok(false);
        }
        self.delete_if_orphan(ino)
    }

    /// Drops one open of `ino`; returns whether it was the last.
    fn drop_open(&self, ino: u64) -> bool {
        let mut open = self.open_counts();
        match open.get_mut(&ino) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                open.remove(&ino);
                true
            }
            None => false,
        }
    }

    /// Deletes `ino` if it is an orphan (no links: a file, or a directory
    /// removed while open). Callers hold the record lock.
    fn delete_if_orphan(&self, ino: u64) -> NamespaceResult<bool> {
        let mut transaction = self.freeing_transaction();
        let Some(record) = read_inode(&transaction, ino)? else {
            transaction.delete(TreeId::Meta, &prefixed_key(ORPHAN_PREFIX, ino))?;
            transaction.commit()?;
            return Ok(false);
        };
        if record.nlink != 0 {
            return Ok(false);
        }
        // The extents and the extended attributes go in bounded
        // transactions (the orphan record keeps the rest reachable if a
        // crash comes between them), then the inode.
        loop {
            let mut freed = Vec::new();
            let extents_remain =
                delete_extents(&mut transaction, ino, EXTENTS_PER_TRANSACTION, &mut freed)?;
            let xattrs_remain = xattr::delete_some(&mut transaction, ino, XATTRS_PER_TRANSACTION)?;
            if !extents_remain && !xattrs_remain {
                delete_inode(&mut transaction, ino, record.file_type(), &mut freed)?;
                self.commit_freeing(transaction, freed)?;
                self.metadata.poison.forget_inode(ino);
                return Ok(true);
            }
            self.commit_freeing(transaction, freed)?;
            transaction = self.freeing_transaction();
        }
    }

    /// The orphans a previous mount left (files unlinked while open when
    /// it stopped).
    pub fn orphans(&self) -> NamespaceResult<Vec<u64>> {
        let start = prefixed_key(ORPHAN_PREFIX, 0);
        let end = [ORPHAN_PREFIX + 1];
        let mut found = Vec::new();
        for (key, _) in self
            .metadata
            .trees
            .scan(TreeId::Meta, &start, Some(&end), usize::MAX)?
        {
            let ino: [u8; 8] = key
                .get(1..)
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| {
                    NamespaceError::Corrupt(format!("orphan record key of {} bytes", key.len()))
                })?;
            found.push(u64::from_be_bytes(ino));
        }
        Ok(found)
    }

    /// The orphans someone has open: their last close deletes them.
    pub fn held_orphans(&self) -> NamespaceResult<Vec<u64>> {
        let mut held = self.orphans()?;
        held.retain(|&ino| self.is_open(ino));
        Ok(held)
    }

    /// Deletes every orphan nobody has open (at mount: nobody), freeing
    /// their data; returns the inodes deleted.
    pub fn purge_orphans(&self) -> NamespaceResult<Vec<u64>> {
        let mut purged = Vec::new();
        for ino in self.orphans()? {
            let _writer = self.lock();
            if !self.is_open(ino) && self.delete_if_orphan(ino)? {
                purged.push(ino);
            }
        }
        Ok(purged)
    }

    /// A transaction that removes things: it may use the space kept back
    /// from ordinary ones, so a full filesystem can always be emptied.
    fn freeing_transaction(&self) -> Transaction<'_> {
        let mut transaction = self.metadata.trees.transaction();
        transaction.may_use_reserve();
        transaction
    }

    /// Commits `transaction`, then frees `freed` at its seq.
    fn commit_freeing(
        &self,
        transaction: Transaction<'_>,
        freed: Vec<BlockRun>,
    ) -> NamespaceResult<()> {
        let seq = transaction.commit()?;
        if let Some(seq) = seq {
            for run in freed {
                // A refused free means the block was already free: the
                // allocator keeps it out of use and counts it.
                let _ = self.metadata.allocator.free_data(run, seq);
            }
        }
        Ok(())
    }

    /// Changes inode `ino`'s permission bits, owner, group, atime and mtime
    /// as `changes` says, and sets its ctime to now; returns the new
    /// attributes. One transaction.
    pub fn setattr(&self, ino: u64, changes: &SetAttr) -> NamespaceResult<InodeRecord> {
        for time in [changes.atime, changes.mtime].into_iter().flatten() {
            if let SetTime::At(time) = time {
                if time.nanoseconds >= 1_000_000_000 {
                    return Err(NamespaceError::Invalid("nanoseconds of a timestamp"));
                }
            }
        }
        let _writer = self.lock();
        let mut transaction = self.metadata.trees.transaction();
        let mut record = require_inode(&transaction, ino)?;
        let time = Timestamp::now();
        let resolve = |set: SetTime| match set {
            SetTime::Now => time,
            SetTime::At(at) => at,
        };
        if let Some(mode) = changes.mode {
            record.mode = (record.mode & !0o7777) | (mode & 0o7777);
            if record.file_type() != FileType::Symlink {
                xattr::chmod_access_acl(
                    &mut transaction,
                    xattr::inline_limit(&self.metadata),
                    ino,
                    mode,
                )?;
            }
        }
        if let Some(uid) = changes.uid {
            record.uid = uid;
        }
        if let Some(gid) = changes.gid {
            record.gid = gid;
        }
        if let Some(atime) = changes.atime {
            record.atime = resolve(atime);
        }
        if let Some(mtime) = changes.mtime {
            record.mtime = resolve(mtime);
        }
        record.ctime = time;
        write_inode(&mut transaction, ino, &record)?;
        transaction.commit()?;
        Ok(record)
    }

    /// Sets inode `ino`'s flags (`chattr`; the caller checked them) and its
    /// ctime to now; returns the new attributes. One transaction.
    pub fn set_flags(&self, ino: u64, flags: u32) -> NamespaceResult<InodeRecord> {
        let _writer = self.lock();
        let mut transaction = self.metadata.trees.transaction();
        let mut record = require_inode(&transaction, ino)?;
        record.flags = flags;
        record.ctime = Timestamp::now();
        write_inode(&mut transaction, ino, &record)?;
        transaction.commit()?;
        Ok(record)
    }

    /// Sets the access time of `ino` to `time` after a read: unlike
    /// [`Namespace::setattr`] the ctime stays (an access is not a change).
    pub fn set_access_time(&self, ino: u64, time: Timestamp) -> NamespaceResult<()> {
        let _writer = self.lock();
        let mut transaction = self.metadata.trees.transaction();
        let mut record = require_inode(&transaction, ino)?;
        record.atime = time;
        write_inode(&mut transaction, ino, &record)?;
        transaction.commit()?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.metadata.lock_records()
    }

    /// The next inode number and generation the counters would give.
    pub fn counters(&self) -> NamespaceResult<(u64, u64)> {
        read_counters(&self.metadata.trees.transaction())
    }

    /// How many inodes exist (orphans included), if the filesystem keeps
    /// the count: it does from mkfs, or from the first read-write mount
    /// that called [`Namespace::record_live_inodes`].
    pub fn live_inodes(&self) -> NamespaceResult<Option<u64>> {
        read_live_inodes(&self.metadata.trees.transaction())
    }

    /// Makes sure the filesystem keeps its live-inode count: counts the
    /// inode tree and makes the count durable if the record is missing (an
    /// image made before it). Returns the count.
    pub fn record_live_inodes(&self) -> NamespaceResult<u64> {
        let _writer = self.lock();
        let mut transaction = self.metadata.trees.transaction();
        if let Some(live) = read_live_inodes(&transaction)? {
            return Ok(live);
        }
        let mut live = 0u64;
        for entry in self.metadata.trees.range(TreeId::Inodes, &[], None) {
            entry?;
            live += 1;
        }
        transaction.put(TreeId::Meta, LIVE_INODES_KEY, &live.to_le_bytes())?;
        transaction.commit_durable()?;
        Ok(live)
    }

    /// The inode `name` in `parent` names, with its attributes.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> NamespaceResult<Option<(u64, InodeRecord)>> {
        check_name(name)?;
        self.read(|transaction| {
            require_directory(transaction, parent)?;
            match probe(transaction, parent, name)?.found {
                Some((_, dirent)) => {
                    let record = read_inode(transaction, dirent.child)?.ok_or_else(|| {
                        NamespaceError::Corrupt(format!(
                            "an entry of directory {parent} names missing inode {}",
                            dirent.child
                        ))
                    })?;
                    Ok(Some((dirent.child, record)))
                }
                None => Ok(None),
            }
        })
    }

    /// Runs `read` on committed state, again under the record lock if the
    /// records it read disagreed (see [`Metadata::read_records`]).
    fn read<T>(&self, read: impl Fn(&Transaction<'_>) -> NamespaceResult<T>) -> NamespaceResult<T> {
        self.metadata.read_records(
            || read(&self.metadata.trees.transaction()),
            |error| matches!(error, NamespaceError::Corrupt(_)),
        )
    }

    /// The parent of directory `dir` (the root is its own parent).
    pub fn parent(&self, dir: u64) -> NamespaceResult<u64> {
        if dir == ROOT_INO {
            return Ok(ROOT_INO);
        }
        self.read(|transaction| {
            // A directory removed while open has no parent to go up to.
            if require_inode(transaction, dir)?.nlink == 0 {
                return Err(NamespaceError::NotFound);
            }
            parent_of(transaction, dir)
        })
    }

    /// Inode `ino`'s attributes.
    pub fn getattr(&self, ino: u64) -> NamespaceResult<InodeRecord> {
        require_inode(&self.metadata.trees.transaction(), ino)
    }

    /// Makes a regular file, fifo, socket or device node (`mode`'s type
    /// bits; none means a regular file). `rdev` is kept for devices only.
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
    ) -> NamespaceResult<(u64, InodeRecord)> {
        self.make_node(
            parent,
            name,
            &Creation {
                mode,
                umask: 0,
                uid,
                gid,
                rdev,
            },
        )
    }

    /// [`Namespace::mknod`] with the maker's umask, and the parent's
    /// default ACL inherited when it has one.
    pub fn make_node(
        &self,
        parent: u64,
        name: &[u8],
        creation: &Creation,
    ) -> NamespaceResult<(u64, InodeRecord)> {
        let Creation {
            mode,
            umask,
            uid,
            gid,
            rdev,
        } = *creation;
        let kind = if mode & 0o170000 == 0 {
            FileType::Regular
        } else {
            FileType::from_mode(mode).ok_or(NamespaceError::Invalid("file type bits of mode"))?
        };
        if matches!(kind, FileType::Directory | FileType::Symlink) {
            return Err(NamespaceError::Invalid(
                "mknod makes no directories or symlinks",
            ));
        }
        let rdev = if matches!(kind, FileType::CharDevice | FileType::BlockDevice) {
            rdev
        } else {
            0
        };
        self.create_inode(
            parent,
            name,
            NewInode {
                kind,
                permissions: mode,
                umask,
                uid,
                gid,
                rdev,
                symlink_target: None,
            },
        )
    }

    /// Makes a regular file (mknod with the regular type).
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> NamespaceResult<(u64, InodeRecord)> {
        self.mknod(
            parent,
            name,
            (mode & 0o7777) | FileType::Regular.mode_bits(),
            uid,
            gid,
            0,
        )
    }

    /// Makes a directory.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> NamespaceResult<(u64, InodeRecord)> {
        self.make_directory(
            parent,
            name,
            &Creation {
                mode,
                uid,
                gid,
                ..Creation::default()
            },
        )
    }

    /// [`Namespace::mkdir`] with the maker's umask, and the parent's
    /// default ACL inherited when it has one.
    pub fn make_directory(
        &self,
        parent: u64,
        name: &[u8],
        creation: &Creation,
    ) -> NamespaceResult<(u64, InodeRecord)> {
        self.create_inode(
            parent,
            name,
            NewInode {
                kind: FileType::Directory,
                permissions: creation.mode,
                umask: creation.umask,
                uid: creation.uid,
                gid: creation.gid,
                rdev: 0,
                symlink_target: None,
            },
        )
    }

    /// Makes a symbolic link to `target`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> NamespaceResult<(u64, InodeRecord)> {
        if target.is_empty() || target.contains(&0) {
            return Err(NamespaceError::Invalid("symlink target"));
        }
        if target.len() > self.metadata.trees.limits().max_value {
            return Err(NamespaceError::NameTooLong);
        }
        self.create_inode(
            parent,
            name,
            NewInode {
                kind: FileType::Symlink,
                permissions: 0o777,
                umask: 0,
                uid,
                gid,
                rdev: 0,
                symlink_target: Some(target),
            },
        )
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> NamespaceResult<Vec<u8>> {
        self.read(|transaction| {
            let record = require_inode(transaction, ino)?;
            if record.file_type() != FileType::Symlink {
                return Err(NamespaceError::Invalid("not a symlink"));
            }
            transaction
                .get(TreeId::Meta, &prefixed_key(SYMLINK_PREFIX, ino))?
                .ok_or_else(|| NamespaceError::Corrupt(format!("symlink {ino} has no target")))
        })
    }

    fn create_inode(
        &self,
        parent: u64,
        name: &[u8],
        new: NewInode<'_>,
    ) -> NamespaceResult<(u64, InodeRecord)> {
        check_name(name)?;
        let _writer = self.lock();
        let mut transaction = self.metadata.trees.transaction();
        let parent_record = require_directory(&transaction, parent)?;
        let probe = probe(&transaction, parent, name)?;
        if probe.found.is_some() {
            return Err(NamespaceError::Exists);
        }
        let key = probe.free.ok_or_else(|| {
            NamespaceError::NoSpace("every collision index of the name's hash is taken".into())
        })?;
        let (ino, generation) = allocate_inode(&mut transaction)?;
        let time = Timestamp::now();
        let is_directory = new.kind == FileType::Directory;
        let permissions = if new.kind == FileType::Symlink {
            new.permissions & 0o7777
        } else {
            xattr::inherit_on_create(
                &mut transaction,
                xattr::inline_limit(&self.metadata),
                parent,
                ino,
                is_directory,
                new.permissions & 0o7777,
                new.umask,
            )?
        };
        let record = InodeRecord {
            mode: new.kind.mode_bits() | permissions,
            uid: new.uid,
            gid: new.gid,
            nlink: if is_directory { 2 } else { 1 },
            flags: inode_flags::inherited(&parent_record, new.kind),
            size: new.symlink_target.map_or(0, |target| target.len() as u64),
            generation,
            rdev: new.rdev,
            atime: time,
            mtime: time,
            ctime: time,
            btime: time,
        };
        write_inode(&mut transaction, ino, &record)?;
        put_entry(
            &mut transaction,
            &key,
            &Dirent {
                child: ino,
                file_type: new.kind,
                name: name.to_vec(),
            },
        )?;
        if is_directory {
            set_parent(&mut transaction, ino, parent)?;
        }
        if let Some(target) = new.symlink_target {
            transaction.put(TreeId::Meta, &prefixed_key(SYMLINK_PREFIX, ino), target)?;
        }
        touch_directory(&mut transaction, parent, i64::from(is_directory), time)?;
        transaction.commit()?;
        Ok((ino, record))
    }

    /// Adds `new_name` in `new_parent` for the non-directory `ino`.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> NamespaceResult<InodeRecord> {
        check_name(new_name)?;
        let _writer = self.lock();
        let mut transaction = self.metadata.trees.transaction();
        let mut record = require_inode(&transaction, ino)?;
        if record.file_type() == FileType::Directory {
            return Err(NamespaceError::NotPermitted("hard links to directories"));
        }
        require_directory(&transaction, new_parent)?;
        let probe = probe(&transaction, new_parent, new_name)?;
        if probe.found.is_some() {
            return Err(NamespaceError::Exists);
        }
        let key = probe.free.ok_or_else(|| {
            NamespaceError::NoSpace("every collision index of the name's hash is taken".into())
        })?;
        let time = Timestamp::now();
        record.nlink = record
            .nlink
            .checked_add(1)
            .ok_or(NamespaceError::TooManyLinks)?;
        record.ctime = time;
        write_inode(&mut transaction, ino, &record)?;
        put_entry(
            &mut transaction,
            &key,
            &Dirent {
                child: ino,
                file_type: record.file_type(),
                name: new_name.to_vec(),
            },
        )?;
        touch_directory(&mut transaction, new_parent, 0, time)?;
        transaction.commit()?;
        Ok(record)
    }

    /// Removes the non-directory entry `name` from `parent`; the inode goes
    /// with its last link unless it is open (then it is an orphan until
    /// [`Namespace::closed`]). Returns the inode if it was deleted.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> NamespaceResult<Option<u64>> {
        check_name(name)?;
        let _writer = self.lock();
        let mut transaction = self.freeing_transaction();
        require_directory(&transaction, parent)?;
        let (key, dirent) = probe(&transaction, parent, name)?
            .found
            .ok_or(NamespaceError::NotFound)?;
        refuse_if_pinned(&transaction, dirent.child)?;
        if dirent.file_type == FileType::Directory {
            return Err(NamespaceError::IsADirectory);
        }
        let time = Timestamp::now();
        let mut freed = Vec::new();
        transaction.delete(TreeId::Dirents, &key.encode())?;
        let open = self.is_open(dirent.child);
        let deleted = drop_link(&mut transaction, dirent.child, time, open, &mut freed)?;
        touch_directory(&mut transaction, parent, 0, time)?;
        self.commit_freeing(transaction, freed)?;
        self.finish_drop(dirent.child, open, deleted)
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> NamespaceResult<()> {
        check_name(name)?;
        let _writer = self.lock();
        let mut transaction = self.freeing_transaction();
        require_directory(&transaction, parent)?;
        let (key, dirent) = probe(&transaction, parent, name)?
            .found
            .ok_or(NamespaceError::NotFound)?;
        refuse_if_pinned(&transaction, dirent.child)?;
        if dirent.file_type != FileType::Directory {
            return Err(NamespaceError::NotADirectory);
        }
        if !is_empty_directory(&transaction, dirent.child)? {
            return Err(NamespaceError::NotEmpty);
        }
        let time = Timestamp::now();
        transaction.delete(TreeId::Dirents, &key.encode())?;
        let open = self.is_open(dirent.child);
        let deleted = drop_link(&mut transaction, dirent.child, time, open, &mut Vec::new())?;
        touch_directory(&mut transaction, parent, -1, time)?;
        transaction.commit()?;
        self.finish_drop(dirent.child, open, deleted)?;
        Ok(())
    }

    /// Renames `name` in `parent` to `new_name` in `new_parent`, as
    /// `renameat2` with `flags`; a whiteout is owned by root.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> NamespaceResult<Option<u64>> {
        self.rename_as(parent, name, new_parent, new_name, flags, (0, 0))
    }

    /// [`Namespace::rename`], with the owner (uid, gid) a whiteout gets.
    pub fn rename_as(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: RenameFlags,
        whiteout_owner: (u32, u32),
    ) -> NamespaceResult<Option<u64>> {
        if flags.exchange && (flags.noreplace || flags.whiteout) {
            return Err(NamespaceError::Invalid(
                "EXCHANGE with NOREPLACE or WHITEOUT",
            ));
        }
        check_name(name)?;
        check_name(new_name)?;
        let _writer = self.lock();
        let mut transaction = self.metadata.trees.transaction();
        require_directory(&transaction, parent)?;
        require_directory(&transaction, new_parent)?;
        let (source_key, source) = probe(&transaction, parent, name)?
            .found
            .ok_or(NamespaceError::NotFound)?;
        let target_probe = probe(&transaction, new_parent, new_name)?;
        // A rename onto the same inode does nothing, pinned or not (as
        // vfs_rename returns before may_delete).
        match &target_probe.found {
            Some((_, target)) if target.child == source.child => {}
            found => {
                refuse_if_pinned(&transaction, source.child)?;
                if let Some((_, target)) = found {
                    refuse_if_pinned(&transaction, target.child)?;
                }
            }
        }
        let source_is_dir = source.file_type == FileType::Directory;
        if source_is_dir && is_within(&transaction, new_parent, source.child)? {
            return Err(NamespaceError::Invalid(
                "a directory cannot move into itself",
            ));
        }
        let time = Timestamp::now();
        let mut freed = Vec::new();

        if flags.exchange {
            let (target_key, target) = target_probe.found.ok_or(NamespaceError::NotFound)?;
            if target_key == source_key {
                return Ok(None);
            }
            let target_is_dir = target.file_type == FileType::Directory;
            if target_is_dir && is_within(&transaction, parent, target.child)? {
                return Err(NamespaceError::Invalid(
                    "a directory cannot move into itself",
                ));
            }
            put_entry(
                &mut transaction,
                &source_key,
                &Dirent {
                    child: target.child,
                    file_type: target.file_type,
                    name: name.to_vec(),
                },
            )?;
            put_entry(
                &mut transaction,
                &target_key,
                &Dirent {
                    child: source.child,
                    file_type: source.file_type,
                    name: new_name.to_vec(),
                },
            )?;
            let moved = i64::from(target_is_dir) - i64::from(source_is_dir);
            if parent != new_parent {
                if source_is_dir {
                    set_parent(&mut transaction, source.child, new_parent)?;
                }
                if target_is_dir {
                    set_parent(&mut transaction, target.child, parent)?;
                }
                touch_directory(&mut transaction, parent, moved, time)?;
                touch_directory(&mut transaction, new_parent, -moved, time)?;
            } else {
                touch_directory(&mut transaction, parent, 0, time)?;
            }
            for child in [source.child, target.child] {
                update_inode(&mut transaction, child, |record| {
                    record.ctime = time;
                    Ok(())
                })?;
            }
            transaction.commit()?;
            return Ok(None);
        }

        let mut deleted = None;
        let mut replaced = None;
        let target_key = match target_probe.found {
            Some((target_key, target)) => {
                if flags.noreplace {
                    return Err(NamespaceError::Exists);
                }
                if target.child == source.child {
                    // The same inode (or the same entry): POSIX says do nothing.
                    return Ok(None);
                }
                let target_is_dir = target.file_type == FileType::Directory;
                match (source_is_dir, target_is_dir) {
                    (true, false) => return Err(NamespaceError::NotADirectory),
                    (false, true) => return Err(NamespaceError::IsADirectory),
                    _ => {}
                }
                if target_is_dir {
                    if !is_empty_directory(&transaction, target.child)? {
                        return Err(NamespaceError::NotEmpty);
                    }
                    touch_directory(&mut transaction, new_parent, -1, time)?;
                }
                let open = self.is_open(target.child);
                deleted = drop_link(&mut transaction, target.child, time, open, &mut freed)?;
                replaced = Some((target.child, open));
                target_key
            }
            None => target_probe.free.ok_or_else(|| {
                NamespaceError::NoSpace("every collision index of the name's hash is taken".into())
            })?,
        };
        if flags.whiteout {
            let ino = make_whiteout(&mut transaction, whiteout_owner, time)?;
            put_entry(
                &mut transaction,
                &source_key,
                &Dirent {
                    child: ino,
                    file_type: FileType::CharDevice,
                    name: name.to_vec(),
                },
            )?;
        } else {
            transaction.delete(TreeId::Dirents, &source_key.encode())?;
        }
        put_entry(
            &mut transaction,
            &target_key,
            &Dirent {
                child: source.child,
                file_type: source.file_type,
                name: new_name.to_vec(),
            },
        )?;
        if source_is_dir && parent != new_parent {
            set_parent(&mut transaction, source.child, new_parent)?;
            touch_directory(&mut transaction, parent, -1, time)?;
            touch_directory(&mut transaction, new_parent, 1, time)?;
        } else {
            touch_directory(&mut transaction, parent, 0, time)?;
            touch_directory(&mut transaction, new_parent, 0, time)?;
        }
        update_inode(&mut transaction, source.child, |record| {
            record.ctime = time;
            Ok(())
        })?;
        self.commit_freeing(transaction, freed)?;
        match replaced {
            Some((ino, open)) => self.finish_drop(ino, open, deleted),
            None => Ok(deleted),
        }
    }

    /// After a commit that dropped a link of `ino`: a file left an orphan
    /// only because it had too many extents to delete at once (not open)
    /// is deleted now, in batches. Returns the inode if it is gone.
    fn finish_drop(
        &self,
        ino: u64,
        open: bool,
        deleted: Option<u64>,
    ) -> NamespaceResult<Option<u64>> {
        if deleted.is_some() || open {
            return Ok(deleted);
        }
        Ok(self.delete_if_orphan(ino)?.then_some(ino))
    }

    /// Up to `limit` entries of directory `dir` in key order, starting
    /// after `after` (`None`: from the first).
    pub fn readdir(
        &self,
        dir: u64,
        after: Option<DirCookie>,
        limit: usize,
    ) -> NamespaceResult<Vec<DirEntry>> {
        let transaction = self.metadata.trees.transaction();
        require_directory(&transaction, dir)?;
        let (first, end) = DirentKey::directory_range(dir);
        let start = match after {
            // The smallest key after the cookie's.
            Some(cookie) => {
                let mut key = DirentKey {
                    parent: dir,
                    hash: cookie.hash,
                    collision: cookie.collision,
                }
                .encode()
                .to_vec();
                key.push(0);
                key
            }
            None => first.to_vec(),
        };
        let entries = transaction.scan(
            TreeId::Dirents,
            &start,
            end.as_ref().map(|end| &end[..]),
            limit,
        )?;
        entries
            .into_iter()
            .map(|(key, value)| {
                let position = DirentKey::decode(&key)
                    .map_err(|error| corrupt(format!("directory {dir} entry key"), error))?;
                let dirent = Dirent::decode(&value)
                    .map_err(|error| corrupt(format!("directory {dir} entry"), error))?;
                Ok(DirEntry {
                    cookie: DirCookie {
                        hash: position.hash,
                        collision: position.collision,
                    },
                    name: dirent.name,
                    ino: dirent.child,
                    file_type: dirent.file_type,
                })
            })
            .collect()
    }
}

/// Takes the next inode number and generation.
fn allocate_inode(transaction: &mut Transaction<'_>) -> NamespaceResult<(u64, u64)> {
    let (ino, generation) = read_counters(transaction)?;
    let next_ino = ino
        .checked_add(1)
        .ok_or_else(|| NamespaceError::NoSpace("inode numbers exhausted".into()))?;
    let mut counters = next_ino.to_le_bytes().to_vec();
    counters.extend_from_slice(&generation.wrapping_add(1).to_le_bytes());
    transaction.put(TreeId::Meta, COUNTERS_KEY, &counters)?;
    count_live_inodes(transaction, 1)?;
    Ok((ino, generation))
}

/// The number of inode records, if the filesystem keeps it.
fn read_live_inodes(transaction: &Transaction<'_>) -> NamespaceResult<Option<u64>> {
    transaction
        .get(TreeId::Meta, LIVE_INODES_KEY)?
        .map(|bytes| decode_live_inodes(&bytes))
        .transpose()
}

/// Decodes the value of the live-inode record.
pub(crate) fn decode_live_inodes(bytes: &[u8]) -> NamespaceResult<u64> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
        NamespaceError::Corrupt(format!(
            "live inode count has {} bytes, expected 8",
            bytes.len()
        ))
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Adds `change` (one inode made or deleted) to the live-inode record, in
/// the transaction that makes or deletes the inode. Without the record
/// (before the mount that counts) there is nothing to keep.
fn count_live_inodes(transaction: &mut Transaction<'_>, change: i64) -> NamespaceResult<()> {
    let Some(live) = read_live_inodes(transaction)? else {
        return Ok(());
    };
    let live = live.checked_add_signed(change).ok_or_else(|| {
        NamespaceError::Corrupt(format!("live inode count {live} cannot change by {change}"))
    })?;
    transaction.put(TreeId::Meta, LIVE_INODES_KEY, &live.to_le_bytes())?;
    Ok(())
}

/// Writes a whiteout inode (a character device 0:0 of mode 0, as Linux's
/// `WHITEOUT_DEV` and `WHITEOUT_MODE`) owned by `owner`; its number. The
/// caller names it.
fn make_whiteout(
    transaction: &mut Transaction<'_>,
    (uid, gid): (u32, u32),
    time: Timestamp,
) -> NamespaceResult<u64> {
    let (ino, generation) = allocate_inode(transaction)?;
    let record = InodeRecord {
        mode: FileType::CharDevice.mode_bits(),
        uid,
        gid,
        nlink: 1,
        flags: 0,
        size: 0,
        generation,
        rdev: 0,
        atime: time,
        mtime: time,
        ctime: time,
        btime: time,
    };
    write_inode(transaction, ino, &record)?;
    Ok(ino)
}

fn read_counters(transaction: &Transaction<'_>) -> NamespaceResult<(u64, u64)> {
    match transaction.get(TreeId::Meta, COUNTERS_KEY)? {
        None => Ok((ROOT_INO + 1, 2)),
        Some(bytes) if bytes.len() == 16 => {
            let mut ino = [0u8; 8];
            let mut generation = [0u8; 8];
            ino.copy_from_slice(&bytes[..8]);
            generation.copy_from_slice(&bytes[8..]);
            Ok((u64::from_le_bytes(ino), u64::from_le_bytes(generation)))
        }
        Some(bytes) => Err(NamespaceError::Corrupt(format!(
            "namespace counters have {} bytes, expected 16",
            bytes.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::device::{MemoryDevice, SectorSize};
    use crate::mkfs::{make_filesystem, MkfsOptions};

    #[test]
    fn names_sharing_a_hash_take_the_next_collision_index() {
        let device = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).unwrap();
        let metadata = Arc::new(Metadata::open_default(device, &superblock).unwrap());
        let namespace = Namespace::new(metadata.clone());
        // A foreign entry squatting on "x"'s hash at index 0 (hash and name
        // disagree: only a test can make a real collision).
        let squatter = DirentKey {
            parent: ROOT_INO,
            hash: name_hash(b"x"),
            collision: 0,
        };
        let mut transaction = metadata.trees.transaction();
        put_entry(
            &mut transaction,
            &squatter,
            &Dirent {
                child: ROOT_INO,
                file_type: FileType::Directory,
                name: b"y".to_vec(),
            },
        )
        .unwrap();
        transaction.commit().unwrap();

        let (ino, _) = namespace.create(ROOT_INO, b"x", 0o644, 0, 0).unwrap();
        assert_eq!(namespace.lookup(ROOT_INO, b"x").unwrap().unwrap().0, ino);
        let listed = namespace.readdir(ROOT_INO, None, 10).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].name, b"x");
        assert_eq!(listed[1].cookie.collision, 1);
        assert!(matches!(
            namespace.create(ROOT_INO, b"x", 0o644, 0, 0),
            Err(NamespaceError::Exists)
        ));
        namespace.unlink(ROOT_INO, b"x").unwrap();
        assert!(namespace.lookup(ROOT_INO, b"x").unwrap().is_none());
    }

    #[test]
    fn an_image_without_the_live_inode_count_is_counted_once_then_kept() {
        let device = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).unwrap();
        let metadata = Arc::new(Metadata::open_default(device, &superblock).unwrap());
        let namespace = Namespace::new(metadata.clone());
        assert_eq!(namespace.live_inodes().unwrap(), Some(1), "mkfs: the root");
        // An image from before the count: creates and deletes keep none.
        let mut transaction = metadata.trees.transaction();
        transaction.delete(TreeId::Meta, LIVE_INODES_KEY).unwrap();
        transaction.commit().unwrap();
        for name in [&b"a"[..], b"b", b"c"] {
            namespace.create(ROOT_INO, name, 0o644, 0, 0).unwrap();
        }
        namespace.unlink(ROOT_INO, b"b").unwrap();
        assert_eq!(namespace.live_inodes().unwrap(), None);

        assert_eq!(namespace.record_live_inodes().unwrap(), 3);
        namespace.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap();
        namespace.create(ROOT_INO, b"e", 0o644, 0, 0).unwrap();
        namespace.unlink(ROOT_INO, b"a").unwrap();
        assert_eq!(namespace.live_inodes().unwrap(), Some(4));
        assert_eq!(namespace.record_live_inodes().unwrap(), 4, "counted once");
    }

    #[test]
    fn every_error_has_an_errno() {
        assert_eq!(NamespaceError::NotFound.errno(), libc::ENOENT);
        assert_eq!(
            NamespaceError::from(BtreeError::NoSpace {
                needed: 1,
                available: 0
            })
            .errno(),
            libc::ENOSPC
        );
        assert_eq!(
            NamespaceError::from(BtreeError::Failed("x".into())).errno(),
            libc::EIO
        );
    }
}
