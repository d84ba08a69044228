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
//!   that deletes the extents they lie in, its lost-data records
//!   ([`crate::lost_data`]) in the one that deletes the inode.
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
//! * `b'S' | ino u64 BE` → the symlink's target bytes, as many as one
//!   b-tree value holds; a longer target (up to Linux's 4,095 bytes)
//!   continues in `b'S' | ino u64 BE | index u8` (from 1), each as full
//!   but the last. The inode's size is the target's length, and says how
//!   many pieces to read; the superblock's `INCOMPAT_SYMLINK_PIECES`
//!   keeps builds that read one value only off the image.
//! * `b'O' | ino u64 BE` → empty: `ino` is an orphan, written in the
//!   transaction that drops its last link, deleted with the inode.
//!
//! Layout: `records` reads and writes single records inside a
//! transaction; `creation`, `deletion` (with orphans) and `rename` are the
//! mutating operations; this module keeps the types, the reads (lookup,
//! getattr, readdir) and setattr.
//!
//! [`Files`]: super::Files
//! [`Files::truncate`]: super::Files::truncate

mod creation;
mod deletion;
mod records;
mod rename;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use super::record::{
    inode_key, name_hash, valid_name, Dirent, DirentKey, Extent, ExtentKey, FileType, InodeRecord,
    RecordError, Timestamp, MAX_NAME_BYTES, MAX_SYMLINK_TARGET_BYTES, ROOT_INO,
};
use super::{inode_flags, xattr};
use crate::alloc::Extent as BlockRun;
use crate::btree::{BtreeError, Transaction, TreeId};
use crate::lost_data;
use crate::metadata::Metadata;
use crate::poison;
use crate::rmap::{self, RmapError};

pub use creation::Creation;
use records::{
    check_name, delete_symlink_target, max_symlink_target, parent_of, probe, read_counters,
    read_inode, read_live_inodes, require_directory, require_inode, write_inode,
    write_symlink_target,
};
pub(crate) use records::{decode_live_inodes, read_symlink_target};

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

/// Most links a file may have, as ext4's: past it `link` is `EMLINK`. Each
/// link is an entry and a parent record, which unlink of the last name
/// walks; a limit keeps that walk, and `st_nlink`, bounded.
pub const MAX_LINKS: u32 = 65_000;

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
    /// The file has [`MAX_LINKS`] links already (or a directory's link
    /// count would overflow).
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

impl Namespace {
    /// The namespace kept in `metadata`'s b-trees; the data blocks of a
    /// file whose last link goes are freed to its allocator.
    pub fn new(metadata: Arc<Metadata>) -> Namespace {
        Namespace {
            metadata,
            open: Mutex::new(HashMap::new()),
        }
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
        transaction.changes_in_place();
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
        transaction.changes_in_place();
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
        transaction.changes_in_place();
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

    /// Moves the generation counter on by `gap`, durably. After a crash the
    /// counter is where the last durable entry left it: the generations the
    /// crashed mount handed out with entries that never became durable
    /// would be handed out again, with the same inode numbers, and an
    /// (inode, generation) named before the crash (an event's file, a file
    /// handle) would name a new, innocent file. `gap` must exceed what one
    /// mount can hand out without a durable entry (the caller bounds it by
    /// the journal's size).
    pub fn skip_generations(&self, gap: u64) -> NamespaceResult<()> {
        let _writer = self.lock();
        let mut transaction = self.metadata.trees.transaction();
        // The mount needs it done, full filesystem or not (a record
        // rewritten in place): a mount refused for it could never be
        // emptied.
        transaction.may_use_reserve();
        let (ino, generation) = read_counters(&transaction)?;
        let mut counters = ino.to_le_bytes().to_vec();
        counters.extend_from_slice(&generation.wrapping_add(gap).to_le_bytes());
        transaction.put(TreeId::Meta, COUNTERS_KEY, &counters)?;
        transaction.commit_durable()?;
        Ok(())
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
        // One small record, once, that the mount needs (as above).
        transaction.may_use_reserve();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::records::put_entry;
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
