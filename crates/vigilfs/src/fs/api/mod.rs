//! The engine's API: every operation a transport (the FUSE adapter, a
//! test, an embedding program) calls on a mounted filesystem, keyed by
//! inode number and open-file handle.
//!
//! Each operation checks permissions with Linux's rules (unless the mount
//! leaves that to the transport), passes the write gate if it changes
//! anything, calls the namespace, the data path or the xattrs, and sends
//! its outcome through the error policy. Lookups and handles are counted
//! here; an unlinked file lives until its last release (the orphan list).
//!
//! Layout: this module keeps the shared checks, the transport's hooks,
//! directories, statfs and extended attributes; `names` the lookups and
//! namespace operations; `data` open files, their data and fsync.

mod data;
mod names;

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use errseq::Since;

use super::faults::Operation;
use super::gate::WriteGuard;
use super::handles::{OpenDir, OpenFile, OpenFlags};
use super::health::Incident;
use super::mounting::AtimeUpdates;
use super::unsynced::Change;
use super::{Filesystem, FsError, FsResult, LifeState, Stale};
use crate::format::ErrorKind;
use crate::inode::acl::Acl;
use crate::inode::{
    check_access_with_acl, check_setattr_with_acl, check_sticky_delete,
    check_xattr_access_with_acl, check_xattr_removal, kill_suid_on_write, new_inode_owner,
    xattr_listable, Access, Caller, Creation, FallocateMode, FileError, FileType, InodeRecord,
    RenameFlags, Seek, SetAttr, SetAttrRequest, SetTime, TimeChange, Timestamp, XattrFlags,
    ROOT_INO,
};
use crate::inode::{inode_flags, PermissionError};

/// The most bytes one write puts into the page cache before dirty data is
/// balanced again.
const WRITE_PIECE_BYTES: usize = 1 << 20;

/// Dirty data may reach this many times the `dirty=` limit while some of it
/// cannot be written back (its writes refused): room for the other files'
/// writers, and the most memory kept for data that cannot be written.
const FAILING_DIRTY_LIMITS: u64 = 4;

/// An inode's attributes as `stat` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The inode number.
    pub ino: u64,
    /// The record, with the size and times writes not yet written back
    /// have given it.
    pub record: InodeRecord,
    /// 512-byte units allocated (holes count nothing; the size rounded up
    /// should the extents not be readable).
    pub blocks: u64,
}

impl Attr {
    /// The kind of inode.
    pub fn file_type(&self) -> FileType {
        self.record.file_type()
    }
}

/// One directory entry readdir returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirItem {
    /// Pass it back to readdir to continue after this entry.
    pub offset: u64,
    /// The name (`.` and `..` included).
    pub name: Vec<u8>,
    /// The inode named.
    pub ino: u64,
    /// Its kind.
    pub file_type: FileType,
}

/// Attribute changes for [`Filesystem::setattr`]; `None` keeps a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttributes {
    /// Permission bits.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size (truncate or extend).
    pub size: Option<u64>,
    /// Access time.
    pub atime: Option<SetTime>,
    /// Modification time.
    pub mtime: Option<SetTime>,
}

/// What `statfs` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Block size.
    pub block_size: u32,
    /// Blocks in the data region.
    pub blocks: u64,
    /// Blocks free (including those freed but not yet reusable).
    pub free_blocks: u64,
    /// Blocks free for unprivileged users.
    pub available_blocks: u64,
    /// Inodes in use.
    pub files: u64,
    /// Inodes that could still be made (bounded by free space).
    pub free_files: u64,
    /// Longest name.
    pub name_max: u32,
}

impl Filesystem {
    pub(super) fn enter(&self) -> FsResult<WriteGuard<'_>> {
        self.shared.gate.enter()
    }

    fn check(
        &self,
        ino: u64,
        record: &InodeRecord,
        caller: &Caller,
        access: Access,
    ) -> FsResult<()> {
        if self.shared.options.check_permissions {
            let acl = self.acl_deciding(ino, record, caller)?;
            check_access_with_acl(record, acl.as_ref(), caller, access)?;
        }
        Ok(())
    }

    /// The access ACL of `ino` when it decides `caller`'s access: looked
    /// up only for a caller who is neither root nor the owner (the owner's
    /// access is the mode's either way), so most checks cost no lookup.
    fn acl_deciding(
        &self,
        ino: u64,
        record: &InodeRecord,
        caller: &Caller,
    ) -> FsResult<Option<Acl>> {
        if !self.shared.options.check_permissions || caller.is_root() || caller.uid == record.uid {
            return Ok(None);
        }
        Ok(self.shared.xattrs.access_acl(ino)?)
    }

    /// Fails once the mount was abandoned (a simulated power cut): what
    /// it remembers is no longer what the image holds, and descriptors
    /// opened through it must fail (`EIO`), as after a crash and restart.
    fn alive(&self) -> FsResult<()> {
        if self.shared.device.is_severed() {
            return Err(FsError::ShutDown("the power was cut".into()));
        }
        Ok(())
    }

    /// The open file behind `handle` (see [`Filesystem::alive`]).
    fn file(&self, handle: u64) -> FsResult<Arc<OpenFile>> {
        self.alive()?;
        self.shared.handles.file(handle)
    }

    /// The open directory behind `handle`.
    fn dir(&self, handle: u64) -> FsResult<Arc<OpenDir>> {
        self.alive()?;
        self.shared.handles.dir(handle)
    }

    pub(super) fn record(&self, ino: u64) -> FsResult<InodeRecord> {
        self.alive()?;
        let result = self.shared.namespace.getattr(ino).map_err(FsError::from);
        self.shared.observe_at("getattr", ino, result)
    }

    /// Runs a metadata change (a create, a link, a rename, an attribute)
    /// and, if it is refused for space while dirty pages hold room, writes
    /// them back and runs it once more. Each dirty page is promised a block
    /// (a rewrite also the nodes its records need), and ordinary metadata
    /// leaves everything promised alone; data being copy-on-write, the
    /// writeback of rewrites gives their old blocks back. As with a write
    /// or a fallocate, nobody hears ENOSPC before that. A refused change
    /// changed nothing, so running it again is safe.
    fn with_room_of_dirty_pages<T>(&self, mut change: impl FnMut() -> FsResult<T>) -> FsResult<T> {
        match change() {
            Err(error)
                if error.errno() == libc::ENOSPC
                    && self.shared.metadata.allocator.status().promised_blocks > 0 =>
            {
                let _ = self.shared.files.writeback_all();
                change()
            }
            outcome => outcome,
        }
    }

    /// A directory the caller may search and change (write and execute).
    fn writable_directory(&self, dir: u64, caller: &Caller) -> FsResult<InodeRecord> {
        let record = self.record(dir)?;
        if record.file_type() != FileType::Directory {
            return Err(crate::inode::NamespaceError::NotADirectory.into());
        }
        self.check(dir, &record, caller, Access::WRITE | Access::EXECUTE)?;
        Ok(record)
    }

    /// Checks that the caller may remove the entry `name` of `dir` (write
    /// and search on the directory, and the sticky-bit rule); the
    /// directory's record.
    fn check_removal(&self, dir: u64, name: &[u8], caller: &Caller) -> FsResult<InodeRecord> {
        let dir_record = self.writable_directory(dir, caller)?;
        if inode_flags::is_append_only(&dir_record) {
            return Err(PermissionError::NotPermitted(
                "entries of an append-only directory cannot be removed or renamed",
            )
            .into());
        }
        // In a sticky directory the victim's owner matters (to non-root).
        // An immutable or append-only victim is refused to everyone
        // (`may_delete`) by the namespace, in the transaction that reads
        // the entry anyway.
        let sticky = dir_record.mode & libc::S_ISVTX != 0;
        if self.shared.options.check_permissions && sticky && !caller.is_root() {
            if let Some((_, victim)) = self.shared.namespace.lookup(dir, name)? {
                check_sticky_delete(&dir_record, &victim, caller)?;
            }
        }
        Ok(dir_record)
    }

    /// Clears set-user-id (and set-group-id with group execute) of `ino`
    /// after `caller` changed its data: a write, truncate or fallocate by
    /// anyone but root, as Linux's `file_remove_privs` does for callers
    /// without `CAP_FSETID`. (A file capability, `security.capability`,
    /// is removed by the kernel itself before it sends the change: see
    /// `check_xattr_access`.)
    fn kill_privileges(&self, ino: u64, caller: &Caller, operation: &'static str) -> FsResult<()> {
        // Root's changes never clear the bits: skip the record read.
        if caller.is_root() {
            return Ok(());
        }
        let record = self.record(ino)?;
        if let Some(mode) = kill_suid_on_write(&record, caller) {
            let changes = SetAttr {
                mode: Some(mode),
                ..SetAttr::default()
            };
            let result = self.shared.namespace.setattr(ino, &changes);
            self.shared
                .observe(operation, result.map_err(FsError::from))?;
            self.cache_stale(ino, Stale::Attributes);
        }
        Ok(())
    }

    /// Sets (or with `None` removes) the listener told the inode whose
    /// cached state a transport must forget, and how much of it (see
    /// [`Stale`]): attributes that changed beyond what its request said —
    /// the set-id bits a write, truncate or fallocate dropped — or also
    /// pages holding bytes the file does not have. It is called on the
    /// request's thread: it must not wait for the transport (queue and
    /// return).
    pub fn set_attribute_listener(&self, listener: Option<super::AttributeListener>) {
        *self
            .shared
            .attribute_listener
            .write()
            .unwrap_or_else(PoisonError::into_inner) = listener;
    }

    /// Sets (or with `None` removes) what drops a transport's cached pages
    /// of an inode (FUSE's kernel page cache), for
    /// [`Filesystem::drop_caches`]. It may wait for the transport: it is
    /// never called on a request's thread.
    pub fn set_page_invalidator(&self, invalidator: Option<super::PageInvalidator>) {
        *self
            .shared
            .page_invalidator
            .write()
            .unwrap_or_else(PoisonError::into_inner) = invalidator;
    }

    /// Sets (or with `None` removes) the listener told when the
    /// `errors=remount-ro` policy has made the filesystem read-only, so
    /// that a transport's mount (the kernel's, whose flags `findmnt` and
    /// /proc/mounts show) can be made read-only too. It is called on the
    /// thread whose failure acted, perhaps a request's: it must not wait
    /// for the transport (queue and return).
    pub fn set_read_only_listener(&self, listener: Option<super::ReadOnlyListener>) {
        *self
            .shared
            .read_only_listener
            .write()
            .unwrap_or_else(PoisonError::into_inner) = listener;
    }

    /// Drops every clean cached page, in this cache and in the transport's
    /// (the kernel's `drop_caches` does not reach this one): the next
    /// reads go to the device. The crash lab calls it for `inject
    /// --drop-caches`, so that a read fault meets data that was cached.
    /// Dirty data stays. Never call it while serving a request: the
    /// transport's invalidation waits for the kernel.
    pub fn drop_caches(&self) {
        self.shared.files.drop_clean_pages();
        if let Some(invalidate) = current(&self.shared.page_invalidator) {
            for ino in self.shared.handles.looked_up_inodes() {
                invalidate(ino);
            }
        }
    }

    pub(super) fn cache_stale(&self, ino: u64, stale: Stale) {
        if let Some(listener) = current(&self.shared.attribute_listener) {
            listener(ino, stale);
        }
    }

    /// The crash lab's rules for `operation` on `ino` (a file, or the
    /// directory of entry `name`): an injected error, a delay, or an armed
    /// power cut. Called first by every operation they may aim at.
    pub(super) fn inject(
        &self,
        operation: Operation,
        ino: u64,
        name: Option<&[u8]>,
    ) -> FsResult<()> {
        self.shared.faults.operation(operation, ino, name)
    }

    /// Opens directory `ino`; returns the directory handle.
    pub fn opendir(&self, ino: u64, caller: &Caller) -> FsResult<u64> {
        let record = self.record(ino)?;
        if record.file_type() != FileType::Directory {
            return Err(crate::inode::NamespaceError::NotADirectory.into());
        }
        self.check(ino, &record, caller, Access::READ)?;
        // While open, a removed directory stays (an orphan) until its
        // last close: fstat on it works, as on a removed open file.
        self.shared.namespace.opened(ino);
        Ok(self.shared.handles.add_dir(ino))
    }

    /// Up to `limit` entries of the directory after `offset` (0 from the
    /// start); `.` and `..` come first.
    pub fn readdir(&self, handle: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>> {
        let dir = self.dir(handle)?;
        if offset == 0 && self.shared.settings.directory_atime() {
            // A listing from the start is a read of the directory (Linux's
            // `iterate_dir`); its continuations are the same listing.
            self.accessed(dir.ino);
        }
        let mut items = Vec::new();
        if offset < 1 && items.len() < limit {
            items.push(DirItem {
                offset: 1,
                name: b".".to_vec(),
                ino: dir.ino,
                file_type: FileType::Directory,
            });
        }
        if offset < 2 && items.len() < limit {
            let parent = if dir.ino == ROOT_INO {
                ROOT_INO
            } else {
                self.shared.namespace.parent(dir.ino).unwrap_or(ROOT_INO)
            };
            items.push(DirItem {
                offset: 2,
                name: b"..".to_vec(),
                ino: parent,
                file_type: FileType::Directory,
            });
        }
        let wanted = limit - items.len();
        if wanted == 0 {
            return Ok(items);
        }
        let after = dir.resume_after(offset)?;
        let entries = match self.shared.namespace.readdir(dir.ino, after, wanted) {
            Ok(entries) => entries,
            // A directory removed while open lists as empty.
            Err(crate::inode::NamespaceError::NotFound) => Vec::new(),
            Err(error) => {
                return self
                    .shared
                    .observe_at("readdir", dir.ino, Err(error.into()))
            }
        };
        items.extend(entries.into_iter().map(|entry| DirItem {
            offset: dir.offset_of(entry.cookie),
            name: entry.name,
            ino: entry.ino,
            file_type: entry.file_type,
        }));
        Ok(items)
    }

    /// readdir with each entry's attributes; each entry but `.` and `..`
    /// counts as a lookup. An entry whose inode cannot be read (its record
    /// damaged, or missing while the entry stays) comes without them
    /// (`None`), its damage reported: the name is listed, as on ext4, and
    /// only what needs its attributes fails. Never empty before the end of
    /// the directory (an empty answer ends a listing): entries removed
    /// since they were read are left out, and if a whole batch was, the
    /// next is read.
    pub fn readdir_plus(
        &self,
        handle: u64,
        offset: u64,
        limit: usize,
    ) -> FsResult<Vec<(DirItem, Option<Attr>)>> {
        let directory = self.dir(handle)?.ino;
        let mut offset = offset;
        loop {
            let items = self.readdir(handle, offset, limit)?;
            let Some(last) = items.last() else {
                return Ok(Vec::new());
            };
            offset = last.offset;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let attr = match self.getattr(item.ino) {
                    Ok(attr) => Some(attr),
                    // Removed since the listing, or an entry naming an
                    // inode that does not exist: damage, which asking the
                    // name again reports (counted, announced, acted on by
                    // errors=).
                    Err(FsError::Namespace(crate::inode::NamespaceError::NotFound)) => {
                        let again = self
                            .shared
                            .namespace
                            .lookup(directory, &item.name)
                            .map_err(FsError::from);
                        if self.shared.observe_at("readdir", directory, again).is_ok() {
                            continue;
                        }
                        None
                    }
                    // A damaged record, reported by getattr.
                    Err(error) if error.is_metadata_failure() => None,
                    Err(error) => return Err(error),
                };
                if item.name != b"." && item.name != b".." {
                    // A lookup as the kernel holds it: the kernel reaches
                    // the inode without asking its name again, so fault
                    // rules aimed at its path must learn the name here.
                    self.looked_up(item.ino);
                    self.shared.faults.learn(directory, &item.name, item.ino);
                }
                out.push((item, attr));
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, handle: u64) -> FsResult<()> {
        let ino = self.shared.handles.remove_dir(handle)?;
        self.closed(ino, "releasedir")?;
        Ok(())
    }

    /// Makes the directory's changes durable. After a shutdown it fails,
    /// as every fsync does then (as on ext4 and XFS).
    pub fn fsyncdir(&self, handle: u64) -> FsResult<()> {
        let dir = self.dir(handle)?;
        self.inject(Operation::Fsyncdir, dir.ino, None)?;
        match self.may_not_write() {
            Some(stopped @ FsError::ShutDown(_)) => Err(stopped),
            // Nothing can be written: what is durable is all there is.
            Some(stopped) if !self.durable_while_stopped(dir.ino) => Err(stopped),
            Some(_) => Ok(()),
            None => self.commit_durably("fsyncdir"),
        }
    }

    /// Space and inode counts.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let space = self.shared.metadata.allocator.status();
        let superblock = self.shared.superblock();
        let blocks = superblock.layout.main.blocks;
        let block_size = superblock.layout.block_size;
        drop(superblock);
        // Images whose first read-write mount has not yet counted their
        // inodes: every number handed out, a bound from above.
        let files = match self.shared.namespace.live_inodes()? {
            Some(live) => live,
            None => self.shared.namespace.counters()?.0.saturating_sub(1),
        };
        // Pending frees are free (a flush makes them reusable); blocks
        // promised to dirty data are not. Available is what the allocator
        // would still promise to new data: what write and fallocate get.
        let free = (space.free_blocks + space.pending_blocks).saturating_sub(space.promised_blocks);
        Ok(StatFs {
            block_size,
            blocks,
            free_blocks: free,
            available_blocks: space.data_available,
            files,
            free_files: free,
            name_max: crate::inode::MAX_NAME_BYTES as u32,
        })
    }

    /// The value of extended attribute `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &[u8], caller: &Caller) -> FsResult<Vec<u8>> {
        let record = self.record(ino)?;
        self.check_xattr(ino, &record, name, caller, false)?;
        let result = self.shared.xattrs.get(ino, name).map_err(FsError::from);
        self.shared.observe_at("getxattr", ino, result)
    }

    /// Sets extended attribute `name` of `ino`.
    pub fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        caller: &Caller,
    ) -> FsResult<()> {
        let _writer = self.enter()?;
        self.inject(Operation::Setxattr, ino, None)?;
        let record = self.record(ino)?;
        self.check_xattr(ino, &record, name, caller, true)?;
        // Setting an access ACL rewrites the mode; like a chmod, it keeps
        // S_ISGID only for a setter in the file's group, or root.
        let keeps_setgid = caller.is_root() || caller.in_group(record.gid);
        let result = self.with_room_of_dirty_pages(|| {
            self.shared
                .xattrs
                .set_by(ino, name, value, flags, keeps_setgid)
                .map_err(FsError::from)
        });
        self.shared.observe("setxattr", result)?;
        self.note("setxattr", Some(ino), None, None);
        self.sync_attributes_of("setxattr", &record)
    }

    /// The names of `ino`'s extended attributes (those the caller may see).
    pub fn listxattr(&self, ino: u64, caller: &Caller) -> FsResult<Vec<Vec<u8>>> {
        self.record(ino)?;
        let result = self.shared.xattrs.list(ino).map_err(FsError::from);
        let names = self.shared.observe_at("listxattr", ino, result)?;
        Ok(names
            .into_iter()
            .filter(|name| !self.shared.options.check_permissions || xattr_listable(caller, name))
            .collect())
    }

    /// Removes extended attribute `name` of `ino`.
    pub fn removexattr(&self, ino: u64, name: &[u8], caller: &Caller) -> FsResult<()> {
        let _writer = self.enter()?;
        self.inject(Operation::Setxattr, ino, None)?;
        let record = self.record(ino)?;
        if self.shared.options.check_permissions {
            let acl = self.acl_deciding(ino, &record, caller)?;
            check_xattr_removal(&record, acl.as_ref(), caller, name)?;
        }
        let result = self.shared.xattrs.remove(ino, name).map_err(FsError::from);
        self.shared.observe("removexattr", result)?;
        self.note("removexattr", Some(ino), None, None);
        self.sync_attributes_of("removexattr", &record)
    }

    /// Linux's xattr access rules ([`check_xattr_access`]).
    fn check_xattr(
        &self,
        ino: u64,
        record: &InodeRecord,
        name: &[u8],
        caller: &Caller,
        write: bool,
    ) -> FsResult<()> {
        if self.shared.options.check_permissions {
            let acl = self.acl_deciding(ino, record, caller)?;
            check_xattr_access_with_acl(record, acl.as_ref(), caller, name, write)?;
        }
        Ok(())
    }
}

/// What a transport set in `slot` (a listener, an invalidator), if any:
/// cloned, so it is called with no lock held.
pub(super) fn current<T: Clone>(slot: &std::sync::RwLock<Option<T>>) -> Option<T> {
    slot.read().unwrap_or_else(PoisonError::into_inner).clone()
}
