//! The engine's API: every operation a transport (the FUSE adapter, a
//! test, an embedding program) calls on a mounted filesystem, keyed by
//! inode number and open-file handle.
//!
//! Each operation checks permissions with Linux's rules (unless the mount
//! leaves that to the transport), passes the write gate if it changes
//! anything, calls the namespace, the data path or the xattrs, and sends
//! its outcome through the error policy. Lookups and handles are counted
//! here; an unlinked file lives until its last release (the orphan list).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use errseq::Since;

use super::faults::Operation;
use super::gate::WriteGuard;
use super::handles::{OpenDir, OpenFile, OpenFlags};
use super::lifecycle::AtimeUpdates;
use super::unsynced::Change;
use super::{Filesystem, FsError, FsResult, LifeState};
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
        self.shared.observe("getattr", result)
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
            self.attributes_changed(ino);
        }
        Ok(())
    }

    /// Sets (or with `None` removes) the listener told the inode whose
    /// attributes changed beyond what its request said — the set-id bits a
    /// write, truncate or fallocate dropped — so that a transport caching
    /// attributes can forget them. It is called on the request's thread:
    /// it must not wait for the transport (queue and return).
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

    pub(super) fn attributes_changed(&self, ino: u64) {
        if let Some(listener) = current(&self.shared.attribute_listener) {
            listener(ino);
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

    /// Notes a metadata change just committed, for [`Filesystem::unsynced`].
    /// What follows a new name for a new inode: the kernel holds a lookup
    /// of it, fault rules know its name, the crash lab notes the change;
    /// its attributes.
    fn made(
        &self,
        operation: &'static str,
        parent: u64,
        name: &[u8],
        ino: u64,
        record: InodeRecord,
    ) -> Attr {
        self.looked_up(ino);
        self.shared.faults.learn(parent, name, ino);
        self.note(operation, Some(ino), Some((parent, name)), None);
        self.shared.attr(ino, record)
    }

    pub(super) fn note(
        &self,
        operation: &'static str,
        ino: Option<u64>,
        entry: Option<(u64, &[u8])>,
        new_entry: Option<(u64, &[u8])>,
    ) {
        let own = |entry: Option<(u64, &[u8])>| entry.map(|(dir, name)| (dir, name.to_vec()));
        self.shared.changes.note(Change {
            seq: self.shared.metadata.journal.newest_reserved(),
            operation,
            ino,
            entry: own(entry),
            new_entry: own(new_entry),
        });
    }

    /// Looks `name` up in `parent`; counts a lookup of the inode found.
    pub fn lookup(&self, parent: u64, name: &[u8], caller: &Caller) -> FsResult<Attr> {
        if let Some(found) = self.lookup_by_number(parent, name) {
            let (ino, record) = found?;
            self.looked_up(ino);
            return Ok(self.shared.attr(ino, record));
        }
        let dir = self.record(parent)?;
        if dir.file_type() != FileType::Directory {
            return Err(crate::inode::NamespaceError::NotADirectory.into());
        }
        self.check(parent, &dir, caller, Access::EXECUTE)?;
        let found = self
            .shared
            .namespace
            .lookup(parent, name)
            .map_err(FsError::from);
        let (ino, record) = self
            .shared
            .observe("lookup", found)?
            .ok_or(crate::inode::NamespaceError::NotFound)?;
        self.looked_up(ino);
        self.shared.faults.learn(parent, name, ino);
        Ok(self.shared.attr(ino, record))
    }

    /// `.` of any inode and `..` of a directory, which only the kernel
    /// asks for, to decode a file handle (`open_by_handle_at`, an NFS
    /// export) of an inode it no longer caches: by number, with no search
    /// permission involved (the kernel requires `CAP_DAC_READ_SEARCH` for
    /// that). A number that names no inode any more is `ENOENT`, which the
    /// kernel turns into `ESTALE`. `None` for every other name.
    fn lookup_by_number(&self, ino: u64, name: &[u8]) -> Option<FsResult<(u64, InodeRecord)>> {
        let found = match name {
            b"." => self.record(ino).map(|record| (ino, record)),
            b".." => self.record(ino).and_then(|record| {
                if record.file_type() != FileType::Directory {
                    return Err(crate::inode::NamespaceError::NotADirectory.into());
                }
                let result = self.shared.namespace.parent(ino).map_err(FsError::from);
                let up = self.shared.observe("lookup", result)?;
                Ok((up, self.record(up)?))
            }),
            _ => return None,
        };
        Some(found)
    }

    /// From now on a lookup holds its inode until it is forgotten, as an
    /// open does: an inode whose last link goes while it is looked up
    /// stays, an orphan, until its last lookup is forgotten and its last
    /// handle closed. The FUSE transport calls it before it serves: the
    /// kernel refers to an inode by its lookups (an `O_PATH` descriptor, a
    /// working directory, a path walk between its lookup and its open while
    /// a rename replaces the name), and Linux keeps an unlinked inode while
    /// anything refers to it. Without it, a caller that never forgets its
    /// lookups sees a delete free the inode at once.
    pub fn let_lookups_hold_inodes(&self) {
        self.shared
            .lookups_hold_inodes
            .store(true, Ordering::Release);
    }

    fn lookups_hold_inodes(&self) -> bool {
        self.shared.lookups_hold_inodes.load(Ordering::Acquire)
    }

    /// Counts a lookup of `ino`: the first holds the inode, if lookups do.
    fn looked_up(&self, ino: u64) {
        if self.shared.handles.looked_up(ino) && self.lookups_hold_inodes() {
            self.shared.namespace.opened(ino);
        }
    }

    /// Runs `allocate` (a write or fallocate) and, while it is refused for
    /// space and a deleted file still held goes within a short wait (see
    /// `released_space`), runs it again.
    fn allocating<T>(&self, mut allocate: impl FnMut() -> FsResult<T>) -> FsResult<T> {
        loop {
            let since = self.shared.released_space.deletions();
            let outcome = allocate();
            match &outcome {
                Err(error) if error.errno() == libc::ENOSPC => {}
                _ => return outcome,
            }
            let Ok(held) = self.shared.namespace.held_orphans() else {
                return outcome;
            };
            if !self.shared.released_space.wait_for_one_of(&held, since) {
                return outcome;
            }
        }
    }

    /// Drops `count` lookups of `ino` (the kernel forgot it). Forgetting
    /// the last lets an orphan go, as its last close does.
    pub fn forget(&self, ino: u64, count: u64) {
        if !self.shared.handles.forget(ino, count) {
            return;
        }
        if self.lookups_hold_inodes() {
            // A failure was observed, and leaves the orphan record: the
            // next mount deletes it.
            if let Ok(true) = self.closed(ino, "forget") {
                self.shared.files.forget(ino);
            }
        }
        // A fault rule on the data of a file the kernel let go still needs
        // its path while writeback of that data is to come.
        if self.shared.files.is_durable(ino) {
            self.shared.faults.forget_names_of(ino);
        }
    }

    /// Lookups of `ino` not yet forgotten.
    pub fn lookup_count(&self, ino: u64) -> u64 {
        self.shared.handles.lookups(ino)
    }

    /// Every inode the kernel holds (looked up and not yet forgotten).
    pub fn inodes_known_to_the_kernel(&self) -> Vec<u64> {
        self.shared.handles.looked_up_inodes()
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let record = self.record(ino)?;
        Ok(self.shared.attr(ino, record))
    }

    /// Changes attributes of `ino` (chmod, chown, truncate, utimes), with
    /// Linux's permission rules; `handle` is the open file a truncate came
    /// through (`ftruncate`: its write access suffices).
    pub fn setattr(
        &self,
        ino: u64,
        changes: &SetAttributes,
        handle: Option<u64>,
        caller: &Caller,
    ) -> FsResult<Attr> {
        let _writer = self.enter()?;
        self.inject(Operation::Setattr, ino, None)?;
        let record = self.record(ino)?;
        let through_writable_handle = match handle {
            Some(number) => {
                let file = self.file(number)?;
                file.ino == ino && file.flags.write
            }
            None => false,
        };
        let request = SetAttrRequest {
            mode: changes.mode,
            uid: changes.uid,
            gid: changes.gid,
            size: changes.size,
            atime: changes.atime.map(time_change),
            mtime: changes.mtime.map(time_change),
            through_writable_handle,
        };
        let mut mode = if self.shared.options.check_permissions {
            let acl = self.acl_deciding(ino, &record, caller)?;
            check_setattr_with_acl(&record, acl.as_ref(), caller, &request)?.mode
        } else {
            changes.mode
        };
        if changes.size.is_some() && mode.is_none() {
            // A truncate changes the data: as a write, it drops the
            // set-id bits of a caller other than root.
            mode = kill_suid_on_write(&record, caller);
        }
        if let Some(size) = changes.size {
            match record.file_type() {
                FileType::Regular => {}
                FileType::Directory => return Err(FileError::IsDirectory { ino }.into()),
                _ => return Err(FsError::Invalid("truncate of a non-regular file")),
            }
            let result = self.shared.files.truncate(ino, size).map_err(FsError::from);
            self.shared.observe("truncate", result)?;
        }
        let namespace_changes = SetAttr {
            mode,
            uid: changes.uid,
            gid: changes.gid,
            atime: changes.atime,
            mtime: changes.mtime,
        };
        if changes.mtime.is_some() && record.file_type() == FileType::Regular {
            // The time set replaces the one pending writes gave the file.
            self.shared.files.clear_pending_mtime(ino);
        }
        let record = if namespace_changes == SetAttr::default() && changes.size.is_some() {
            self.record(ino)?
        } else {
            let result = self
                .shared
                .namespace
                .setattr(ino, &namespace_changes)
                .map_err(FsError::from);
            self.shared.observe("setattr", result)?
        };
        self.note("setattr", Some(ino), None, None);
        self.sync_attributes_of("setattr", &record)?;
        Ok(self.shared.attr(ino, record))
    }

    /// Makes a regular file, device node, fifo or socket.
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        caller: &Caller,
    ) -> FsResult<Attr> {
        let _writer = self.enter()?;
        self.inject(Operation::Create, parent, Some(name))?;
        let dir = self.writable_directory(parent, caller)?;
        let (uid, gid, permissions) = new_inode_owner(&dir, caller, mode, false);
        // new_inode_owner returns permission bits only: keep the type.
        let creation = Creation {
            mode: (mode & libc::S_IFMT) | permissions,
            umask: caller.umask,
            uid,
            gid,
            rdev,
        };
        let result = self
            .shared
            .namespace
            .make_node(parent, name, &creation)
            .map_err(FsError::from);
        let (ino, record) = self.shared.observe("mknod", result)?;
        // Durable first: a failure then reports an entry the kernel never
        // learns of, so no lookup is counted for it.
        self.sync_entries_of("mknod", &[&dir])?;
        Ok(self.made("create", parent, name, ino, record))
    }

    /// Makes a directory.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: &Caller) -> FsResult<Attr> {
        let _writer = self.enter()?;
        self.inject(Operation::Mkdir, parent, Some(name))?;
        let dir = self.writable_directory(parent, caller)?;
        let (uid, gid, mode) = new_inode_owner(&dir, caller, mode, true);
        let creation = Creation {
            mode,
            umask: caller.umask,
            uid,
            gid,
            rdev: 0,
        };
        let result = self
            .shared
            .namespace
            .make_directory(parent, name, &creation)
            .map_err(FsError::from);
        let (ino, record) = self.shared.observe("mkdir", result)?;
        self.sync_entries_of("mkdir", &[&dir])?;
        Ok(self.made("mkdir", parent, name, ino, record))
    }

    /// Makes a symbolic link to `target`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: &Caller,
    ) -> FsResult<Attr> {
        let _writer = self.enter()?;
        self.inject(Operation::Symlink, parent, Some(name))?;
        let dir = self.writable_directory(parent, caller)?;
        let (uid, gid, _) = new_inode_owner(&dir, caller, 0o777, false);
        let result = self
            .shared
            .namespace
            .symlink(parent, name, target, uid, gid)
            .map_err(FsError::from);
        let (ino, record) = self.shared.observe("symlink", result)?;
        self.sync_entries_of("symlink", &[&dir])?;
        Ok(self.made("symlink", parent, name, ino, record))
    }

    /// A symbolic link's target.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let result = self.shared.namespace.readlink(ino).map_err(FsError::from);
        self.shared.observe("readlink", result)
    }

    /// Makes `new_name` in `new_parent` another name of `ino`.
    pub fn link(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &[u8],
        caller: &Caller,
    ) -> FsResult<Attr> {
        let _writer = self.enter()?;
        self.inject(Operation::Link, new_parent, Some(new_name))?;
        let dir = self.writable_directory(new_parent, caller)?;
        if inode_flags::is_pinned(&self.record(ino)?) {
            return Err(PermissionError::NotPermitted(
                "an immutable or append-only inode cannot be linked to",
            )
            .into());
        }
        let result = self
            .shared
            .namespace
            .link(ino, new_parent, new_name)
            .map_err(FsError::from);
        let record = self.shared.observe("link", result)?;
        self.sync_entries_of("link", &[&dir])?;
        self.looked_up(ino);
        self.shared.faults.learn(new_parent, new_name, ino);
        self.note("link", Some(ino), None, Some((new_parent, new_name)));
        Ok(self.shared.attr(ino, record))
    }

    /// Removes the non-directory `name` from `parent`; an open file lives
    /// on until its last release.
    pub fn unlink(&self, parent: u64, name: &[u8], caller: &Caller) -> FsResult<()> {
        let _writer = self.enter()?;
        self.inject(Operation::Unlink, parent, Some(name))?;
        let dir = self.check_removal(parent, name, caller)?;
        let result = self
            .shared
            .namespace
            .unlink(parent, name)
            .map_err(FsError::from);
        let deleted = self.shared.observe("unlink", result)?;
        if let Some(ino) = deleted {
            self.shared.files.forget(ino);
        }
        self.shared.faults.unlearn(parent, name);
        self.note("unlink", deleted, Some((parent, name)), None);
        self.sync_entries_of("unlink", &[&dir])
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&self, parent: u64, name: &[u8], caller: &Caller) -> FsResult<()> {
        let _writer = self.enter()?;
        self.inject(Operation::Rmdir, parent, Some(name))?;
        let dir = self.check_removal(parent, name, caller)?;
        let result = self
            .shared
            .namespace
            .rmdir(parent, name)
            .map_err(FsError::from);
        self.shared.observe("rmdir", result)?;
        self.shared.faults.unlearn(parent, name);
        self.note("rmdir", None, Some((parent, name)), None);
        self.sync_entries_of("rmdir", &[&dir])
    }

    /// Renames (`renameat2` flags: NOREPLACE, EXCHANGE, WHITEOUT).
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: RenameFlags,
        caller: &Caller,
    ) -> FsResult<()> {
        let _writer = self.enter()?;
        self.inject(Operation::Rename, parent, Some(name))?;
        let dir = self.check_removal(parent, name, caller)?;
        let new_dir = self.check_removal(new_parent, new_name, caller)?;
        if self.shared.options.check_permissions && parent != new_parent {
            // Moving a directory rewrites its "..": it must be writable.
            if let Some((moved_ino, moved)) = self.shared.namespace.lookup(parent, name)? {
                if moved.file_type() == FileType::Directory {
                    self.check(moved_ino, &moved, caller, Access::WRITE)?;
                }
            }
        }
        // A whiteout is a device node: renameat2 asks for CAP_MKNOD, which
        // the kernel checks (a uid says nothing of capabilities), as for
        // mknod of devices. It is owned as a new inode of the caller's.
        let whiteout_owner = if flags.whiteout {
            let (uid, gid, _) = new_inode_owner(&self.record(parent)?, caller, 0, false);
            (uid, gid)
        } else {
            (0, 0)
        };
        let result = self
            .shared
            .namespace
            .rename_as(parent, name, new_parent, new_name, flags, whiteout_owner)
            .map_err(FsError::from);
        let replaced = self.shared.observe("rename", result)?;
        if let Some(ino) = replaced {
            self.shared.files.forget(ino);
        }
        self.shared
            .faults
            .renamed((parent, name), (new_parent, new_name), flags.exchange);
        self.note(
            "rename",
            replaced,
            Some((parent, name)),
            Some((new_parent, new_name)),
        );
        self.sync_entries_of("rename", &[&dir, &new_dir])
    }

    /// Opens regular file `ino`; returns the file handle.
    pub fn open(&self, ino: u64, flags: OpenFlags, caller: &Caller) -> FsResult<u64> {
        self.open_checked(ino, flags, Access::READ, caller)
    }

    /// Opens regular file `ino` read-only to run it (execve, the kernel's
    /// `FMODE_EXEC` open): that needs execute permission, not read, so a
    /// program of mode `--x` runs.
    pub fn open_to_execute(&self, ino: u64, caller: &Caller) -> FsResult<u64> {
        let flags = OpenFlags {
            read: true,
            ..OpenFlags::default()
        };
        self.open_checked(ino, flags, Access::EXECUTE, caller)
    }

    /// [`Filesystem::open`], with `read_access` as what reading needs.
    fn open_checked(
        &self,
        ino: u64,
        flags: OpenFlags,
        read_access: Access,
        caller: &Caller,
    ) -> FsResult<u64> {
        self.inject(Operation::Open, ino, None)?;
        let record = self.record(ino)?;
        match record.file_type() {
            FileType::Regular => {}
            FileType::Directory => return Err(FileError::IsDirectory { ino }.into()),
            file_type => return Err(FileError::NotRegular { ino, file_type }.into()),
        }
        let mut access = Access::NONE;
        if flags.read {
            access = access | read_access;
        }
        if flags.write || flags.truncate {
            access = access | Access::WRITE;
        }
        self.check(ino, &record, caller, access)?;
        self.learn_synchronous(ino, &record);
        if inode_flags::is_append_only(&record) && (flags.truncate || flags.write && !flags.append)
        {
            return Err(PermissionError::NotPermitted(
                "an append-only file opens for writing only with O_APPEND, never O_TRUNC",
            )
            .into());
        }
        let _writer = if flags.write || flags.truncate {
            Some(self.enter()?)
        } else {
            None
        };
        if flags.truncate && flags.write {
            let result = self.shared.files.truncate(ino, 0).map_err(FsError::from);
            self.shared.observe("open", result)?;
            self.kill_privileges(ino, caller, "open")?;
            // The truncate of O_TRUNC is a change like any other.
            self.sync_attributes_of("open", &record)?;
        }
        self.open_handle(ino, flags)
    }

    fn open_handle(&self, ino: u64, flags: OpenFlags) -> FsResult<u64> {
        self.shared.namespace.opened(ino);
        match self.shared.files.open(ino) {
            Ok(handle) => Ok(self.shared.handles.add_file(ino, flags, handle)),
            Err(error) => {
                let _ = self.shared.namespace.closed(ino);
                Err(error.into())
            }
        }
    }

    /// Creates regular file `name` in `parent` and opens it.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: OpenFlags,
        caller: &Caller,
    ) -> FsResult<(Attr, u64)> {
        let attr = self.mknod(parent, name, (mode & 0o7777) | libc::S_IFREG, 0, caller)?;
        self.learn_synchronous(attr.ino, &attr.record);
        let handle = self.open_handle(attr.ino, flags)?;
        Ok((attr, handle))
    }

    /// Reads up to `length` bytes at `offset` through `handle`.
    pub fn read(&self, handle: u64, offset: u64, length: usize) -> FsResult<Vec<u8>> {
        let file = self.file(handle)?;
        if !file.flags.read {
            return Err(FsError::WrongAccessMode(handle, "reading"));
        }
        self.inject(Operation::Read, file.ino, None)?;
        self.shared.note_foreground();
        let result = {
            let cursors = file.handle();
            self.shared.files.read(&cursors, offset, length)
        };
        let bytes = self.shared.observe("read", result.map_err(FsError::from))?;
        self.accessed(file.ino);
        Ok(bytes)
    }

    /// Updates the access time of `ino` after a read, as the `atime`
    /// option says (`relatime` by default: only when it is not after the
    /// modification or change time, or is a day old). Never waits: while
    /// the filesystem may not write (frozen, read-only, shut down) the
    /// access is not recorded. A failure to record it is observed (health,
    /// `errors=`) but does not fail the read.
    fn accessed(&self, ino: u64) {
        const DAY_SECONDS: i64 = 24 * 60 * 60;
        if self.shared.options.atime == AtimeUpdates::Never
            || self.shared.transport_read_only.load(Ordering::Acquire)
        {
            return;
        }
        let Ok(record) = self.shared.namespace.getattr(ino) else {
            return;
        };
        // Every read asks: the times are all it needs (counting the
        // allocated blocks for a whole stat cost 78% of a cold read).
        if record.flags & inode_flags::NOATIME != 0 {
            return;
        }
        let record = self.shared.with_cached_writes(ino, record);
        let now = Timestamp::now();
        let stale = record.atime <= record.mtime
            || record.atime <= record.ctime
            || now.seconds.saturating_sub(record.atime.seconds) >= DAY_SECONDS;
        if self.shared.options.atime == AtimeUpdates::Relative && !stale {
            return;
        }
        let Ok(_writer) = self.shared.gate.try_enter() else {
            return;
        };
        let result = self
            .shared
            .namespace
            .set_access_time(ino, now)
            .map_err(FsError::from);
        let _ = self.shared.observe("read", result);
    }

    /// The kernel wrote `length` bytes at `offset` back from its own page
    /// cache through `handle` (the pages of a shared mapping, not a write
    /// call), and this mount refused them with `errno`. Nobody hears of it
    /// but a program that calls msync or fsync later, and the kernel does
    /// not send those pages again: the data is lost, and said so (an event
    /// marked data lost, and the error record).
    pub fn cache_write_refused(&self, handle: u64, offset: u64, length: u64, errno: i32) {
        if let Ok(file) = self.file(handle) {
            self.shared.files.cache_write_refused(errno);
            self.shared.report_lost_data(
                file.ino,
                Some((offset, length)),
                errno,
                "refused write-back of the kernel's cached pages (a shared mapping): lost \
                 unless the program writes them again",
            );
        }
    }

    /// Writes `bytes` at `offset` (at the end with `O_APPEND`) through
    /// `handle`; returns the count written. Lands in the page cache.
    pub fn write(
        &self,
        handle: u64,
        offset: u64,
        bytes: &[u8],
        caller: &Caller,
    ) -> FsResult<usize> {
        let file = self.file(handle)?;
        if !file.flags.write {
            return Err(FsError::WrongAccessMode(handle, "writing"));
        }
        self.shared.note_foreground();
        let _writer = self.enter()?;
        self.inject(Operation::Write, file.ino, None)?;
        self.refuse_if_made_immutable(file.ino)?;
        let start = if file.flags.append {
            self.shared.files.size(&file.handle())?
        } else {
            offset
        };
        // In pieces, with dirty data balanced before each, so one large
        // write cannot take more memory than the limit allows.
        let mut written = 0;
        for piece in bytes.chunks(WRITE_PIECE_BYTES) {
            let write_piece = |at: u64| {
                self.balance_dirty().and_then(|()| {
                    let cursors = file.handle();
                    Ok(self.shared.files.write(&cursors, at, piece)?)
                })
            };
            match self.allocating(|| write_piece(start + written as u64)) {
                Ok(count) => {
                    written += count;
                    if count < piece.len() {
                        break;
                    }
                }
                // What was written stays written: a short count now, the
                // error at the next call (as write(2) does).
                Err(_) if written > 0 => break,
                Err(error) => return Err(error),
            }
        }
        self.kill_privileges(file.ino, caller, "write")?;
        if self.is_synchronous(file.ino) {
            // As an O_SYNC write: durable before it returns, and a failure
            // to make it so is this write's error.
            drop(_writer);
            self.fsync_file(&file)?;
        } else if self.shared.files.cache_stats().dirty_bytes
            > self.shared.settings.dirty_limit_bytes()
        {
            if let Some(background) = &self.background {
                background.kick();
            }
        }
        Ok(written)
    }

    /// Keeps dirty data bounded, as the kernel's `balance_dirty_pages`
    /// does: past the limit the background thread is woken; past twice the
    /// limit this writer writes back itself, and so waits for it. When that
    /// writeback fails (the dirty pages stay, to be retried), the write is
    /// refused with its error rather than taken into memory without bound.
    fn balance_dirty(&self) -> FsResult<()> {
        let limit = self.shared.settings.dirty_limit_bytes();
        let dirty = self.shared.files.cache_stats().dirty_bytes;
        if dirty > limit {
            if let Some(background) = &self.background {
                background.kick();
            }
        }
        if dirty <= limit.saturating_mul(2) {
            return Ok(());
        }
        // Failures are reported by the data path's listener and stay in
        // the error words for fsync.
        match self.shared.files.writeback_all().first_error {
            Some(errno) => Err(FileError::Writeback(errno).into()),
            None => Ok(()),
        }
    }

    /// fallocate through `handle` by `caller`: allocate (mode 0,
    /// optionally KEEP_SIZE), PUNCH_HOLE|KEEP_SIZE, or ZERO_RANGE
    /// (optionally KEEP_SIZE). Like a write, it drops the set-id bits of a
    /// caller other than root.
    pub fn fallocate(
        &self,
        handle: u64,
        offset: u64,
        length: u64,
        mode: FallocateMode,
        caller: &Caller,
    ) -> FsResult<()> {
        let file = self.file(handle)?;
        if !file.flags.write {
            return Err(FsError::WrongAccessMode(handle, "writing"));
        }
        self.shared.note_foreground();
        let _writer = self.enter()?;
        self.inject(Operation::Fallocate, file.ino, None)?;
        let record = self.record(file.ino)?;
        let only_allocates = mode.bits() & !FallocateMode::KEEP_SIZE.bits() == 0;
        if inode_flags::is_immutable(&record)
            || inode_flags::is_append_only(&record) && !only_allocates
        {
            return Err(PermissionError::NotPermitted(
                "fallocate of an immutable file, or one that is not a plain allocation of an append-only file",
            )
            .into());
        }
        let allocate = || {
            self.shared
                .files
                .fallocate(file.ino, offset, length, mode)
                .map_err(FsError::from)
        };
        let result = self.allocating(allocate);
        self.shared.observe("fallocate", result)?;
        self.kill_privileges(file.ino, caller, "fallocate")?;
        self.note("fallocate", Some(file.ino), None, None);
        if inode_flags::is_synchronous(&record) {
            drop(_writer);
            self.fsync_file(&file)?;
        }
        Ok(())
    }

    /// lseek with SEEK_DATA or SEEK_HOLE through `handle`.
    pub fn seek_data_hole(&self, handle: u64, offset: u64, whence: Seek) -> FsResult<u64> {
        let file = self.file(handle)?;
        let result = self
            .shared
            .files
            .seek_data_hole(file.ino, offset, whence)
            .map_err(FsError::from);
        self.shared.observe("lseek", result)
    }

    /// `close(2)` of one descriptor of the handle: reports nothing (errors
    /// stay for fsync, as on Linux local filesystems).
    pub fn flush(&self, handle: u64) -> FsResult<()> {
        let file = self.file(handle)?;
        self.inject(Operation::Close, file.ino, None)
    }

    /// The last close of the handle; an orphan goes with its last handle.
    /// Deleting it writes: while the filesystem is frozen that waits for
    /// the thaw (without holding the caller), and when it may no longer
    /// write the orphan stays for the next mount to delete.
    pub fn release(&self, handle: u64) -> FsResult<()> {
        let file = self.shared.handles.remove_file(handle)?;
        let ino = file.ino;
        self.shared.files.closed(ino);
        if self.closed(ino, "release")? {
            self.shared.files.forget(ino);
        }
        Ok(())
    }

    /// One open of `ino` (a file or a directory) is closed: the last
    /// close of an orphan deletes it if the filesystem may write now (see
    /// [`Filesystem::release`]). Returns whether it was deleted.
    fn closed(&self, ino: u64, operation: &'static str) -> FsResult<bool> {
        let writable = !self.shared.transport_read_only.load(Ordering::Acquire);
        let deleted = match self.shared.gate.try_enter() {
            Ok(_writer) if writable => {
                let mut closing = self.shared.released_space.closing();
                let result = self.shared.namespace.closed(ino).map_err(FsError::from);
                let deleted = self.shared.observe(operation, result)?;
                if deleted {
                    closing.deleted_an_orphan();
                }
                deleted
            }
            Ok(_) | Err(LifeState::Frozen) => {
                if self.shared.namespace.closed_keeping_orphan(ino) {
                    self.shared
                        .deferred_orphans
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(ino);
                }
                false
            }
            Err(_) => {
                self.shared.namespace.closed_keeping_orphan(ino);
                false
            }
        };
        Ok(deleted)
    }

    /// Why nothing may be written now (shut down, or read-only after an
    /// error or by mount), if so: fsync and syncfs then write nothing.
    fn may_not_write(&self) -> Option<FsError> {
        match self.shared.gate.state() {
            LifeState::ShutDown(why) => Some(FsError::ShutDown(why)),
            LifeState::ReadOnly(why) => Some(FsError::NotDurable(why)),
            LifeState::Running | LifeState::Frozen => None,
        }
    }

    /// fsync/fdatasync: writes back the file, makes its metadata durable,
    /// and reports the first writeback error this handle has not heard of.
    /// When nothing may be written it writes nothing: it reports the error
    /// words, and fails if the file has data or metadata that is not
    /// durable (a success would be a lie).
    ///
    /// An fsync failure injected by the crash lab on a file with dirty data
    /// is made a real one: the file's writeback is run with its data write
    /// failing, so the pages stay dirty and the error words are set, as
    /// after a device error.
    pub fn fsync(&self, handle: u64, data_only: bool) -> FsResult<()> {
        let started = std::time::Instant::now();
        let outcome = self.fsync_timed(handle, data_only);
        self.shared.fsync_latency.record(started.elapsed());
        outcome
    }

    fn fsync_timed(&self, handle: u64, _data_only: bool) -> FsResult<()> {
        let file = self.file(handle)?;
        let injected = match self.inject(Operation::Fsync, file.ino, None) {
            Err(FsError::Injected { rule, errno, .. })
                if !self.shared.files.is_durable(file.ino) =>
            {
                let errno = crate::device::Errno(errno);
                let rule = crate::device::RuleId(rule);
                self.shared.faults.force_data_failure(file.ino, rule, errno);
                Some(errno)
            }
            outcome => {
                outcome?;
                None
            }
        };
        let outcome = self.fsync_file(&file);
        if injected.is_some() {
            self.shared.faults.unforce_data_failure(file.ino);
        }
        outcome
    }

    fn fsync_file(&self, file: &OpenFile) -> FsResult<()> {
        if let Some(stopped) = self.may_not_write() {
            let reported = self.shared.files.report(&mut file.handle());
            if !self.shared.files.is_durable(file.ino) || !self.shared.metadata.journal.is_durable()
            {
                return Err(stopped);
            }
            return Ok(reported?);
        }
        let synced = {
            let mut cursors = file.handle();
            self.shared.files.fsync(&mut cursors)
        };
        let flushed = self.commit_durably("fsync");
        self.shared.check_journal("fsync");
        synced?;
        flushed
    }

    /// syncfs through `handle`: everything written back and durable, then
    /// the first filesystem writeback error this handle has not heard of.
    pub fn syncfs(&self, handle: u64) -> FsResult<()> {
        let file = self.file(handle)?;
        let mut cursors = file.handle();
        let cursor = cursors.fs_cursor_mut();
        self.syncfs_with(cursor)
    }

    /// syncfs as a new opener would do it (`vigilfs sync`: open the mount
    /// point, syncfs, close): everything written back and durable, then the
    /// filesystem writeback error if nobody has been told of it yet — so
    /// each error is reported once, to whoever asks first.
    pub fn syncfs_once(&self) -> FsResult<()> {
        let mut cursor = self.shared.files.sample_fs_cursor();
        self.syncfs_with(&mut cursor)
    }

    /// syncfs with `cursor` into the filesystem's error word. When nothing
    /// may be written it writes nothing, reports the word, and fails if
    /// anything is not durable.
    fn syncfs_with(&self, cursor: &mut Since) -> FsResult<()> {
        if let Some(stopped) = self.may_not_write() {
            let reported = self.shared.files.report_fs(cursor);
            if !self.shared.files.unwritten().is_empty()
                || !self.shared.metadata.journal.is_durable()
            {
                return Err(stopped);
            }
            return Ok(reported?);
        }
        let result = self.shared.files.syncfs_with(cursor).map_err(FsError::from);
        self.shared.check_journal("syncfs");
        result
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
            Err(error) => return self.shared.observe("readdir", Err(error.into())),
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
    /// counts as a lookup.
    pub fn readdir_plus(
        &self,
        handle: u64,
        offset: u64,
        limit: usize,
    ) -> FsResult<Vec<(DirItem, Attr)>> {
        let directory = self.dir(handle)?.ino;
        let items = self.readdir(handle, offset, limit)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let attr = match self.getattr(item.ino) {
                Ok(attr) => attr,
                // Removed since the listing: skip it.
                Err(FsError::Namespace(crate::inode::NamespaceError::NotFound)) => continue,
                Err(error) => return Err(error),
            };
            if item.name != b"." && item.name != b".." {
                // A lookup as the kernel holds it: the kernel reaches the
                // inode without asking its name again, so fault rules
                // aimed at its path must learn the name here.
                self.looked_up(item.ino);
                self.shared.faults.learn(directory, &item.name, item.ino);
            }
            out.push((item, attr));
        }
        Ok(out)
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, handle: u64) -> FsResult<()> {
        let ino = self.shared.handles.remove_dir(handle)?;
        self.closed(ino, "releasedir")?;
        Ok(())
    }

    /// Makes the directory's changes durable.
    pub fn fsyncdir(&self, handle: u64) -> FsResult<()> {
        let dir = self.dir(handle)?;
        self.inject(Operation::Fsyncdir, dir.ino, None)?;
        self.commit_durably("fsyncdir")
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
        Ok(self.shared.xattrs.get(ino, name)?)
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
        let result = self
            .shared
            .xattrs
            .set_by(ino, name, value, flags, keeps_setgid)
            .map_err(FsError::from);
        self.shared.observe("setxattr", result)?;
        self.note("setxattr", Some(ino), None, None);
        self.sync_attributes_of("setxattr", &record)
    }

    /// The names of `ino`'s extended attributes (those the caller may see).
    pub fn listxattr(&self, ino: u64, caller: &Caller) -> FsResult<Vec<Vec<u8>>> {
        self.record(ino)?;
        let names = self.shared.xattrs.list(ino)?;
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

fn time_change(time: SetTime) -> TimeChange {
    match time {
        SetTime::Now => TimeChange::Now,
        SetTime::At(_) => TimeChange::Explicit,
    }
}

/// What a transport set in `slot` (a listener, an invalidator), if any:
/// cloned, so it is called with no lock held.
pub(super) fn current<T: Clone>(slot: &std::sync::RwLock<Option<T>>) -> Option<T> {
    slot.read().unwrap_or_else(PoisonError::into_inner).clone()
}
