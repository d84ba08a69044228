//! The namespace half of the engine's API: lookups and the kernel's
//! lookup counts (forget), attributes, and the operations that make,
//! link, remove and rename names. Each checks the caller's permission on
//! the directories involved, then calls the namespace once.

use super::*;

impl Filesystem {
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

    pub(in crate::fs) fn note(
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
            .observe_at("lookup", parent, found)?
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
                let up = self.shared.observe_at("lookup", ino, result)?;
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
    pub(super) fn looked_up(&self, ino: u64) {
        if self.shared.handles.looked_up(ino) && self.lookups_hold_inodes() {
            self.shared.namespace.opened(ino);
        }
    }

    /// Runs `allocate` (a write or fallocate) and, while it is refused for
    /// space and a deleted file still held goes within a short wait (see
    /// `released_space`), runs it again.
    pub(super) fn allocating<T>(&self, mut allocate: impl FnMut() -> FsResult<T>) -> FsResult<T> {
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
            let result = self.with_room_of_dirty_pages(|| {
                self.shared
                    .namespace
                    .setattr(ino, &namespace_changes)
                    .map_err(FsError::from)
            });
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
        let result = self.with_room_of_dirty_pages(|| {
            self.shared
                .namespace
                .make_node(parent, name, &creation)
                .map_err(FsError::from)
        });
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
        let result = self.with_room_of_dirty_pages(|| {
            self.shared
                .namespace
                .make_directory(parent, name, &creation)
                .map_err(FsError::from)
        });
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
        let result = self.with_room_of_dirty_pages(|| {
            self.shared
                .namespace
                .symlink(parent, name, target, uid, gid)
                .map_err(FsError::from)
        });
        let (ino, record) = self.shared.observe("symlink", result)?;
        self.sync_entries_of("symlink", &[&dir])?;
        Ok(self.made("symlink", parent, name, ino, record))
    }

    /// A symbolic link's target.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let result = self.shared.namespace.readlink(ino).map_err(FsError::from);
        let target = self.shared.observe_at("readlink", ino, result)?;
        // Reading a link is an access, as reading a file: Linux updates
        // its atime (under the same `atime` option).
        self.accessed(ino);
        Ok(target)
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
        let result = self.with_room_of_dirty_pages(|| {
            self.shared
                .namespace
                .link(ino, new_parent, new_name)
                .map_err(FsError::from)
        });
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
        if !flags.exchange {
            self.write_back_a_replacement(parent, name, new_parent, new_name)?;
        }
        let result = self.with_room_of_dirty_pages(|| {
            self.shared
                .namespace
                .rename_as(parent, name, new_parent, new_name, flags, whiteout_owner)
                .map_err(FsError::from)
        });
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
}

impl Filesystem {
    /// A file renamed over another is a program replacing that file (write
    /// a new copy, rename it into place): its data is written back first,
    /// so the commit that makes the rename durable finds it on the device,
    /// as ext4's `auto_da_alloc` does. Otherwise a power cut after any
    /// later commit leaves the name on an empty file, the old contents
    /// gone and the new never written.
    fn write_back_a_replacement(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
    ) -> FsResult<()> {
        let Some((moved, record)) = self.shared.namespace.lookup(parent, name)? else {
            return Ok(());
        };
        if record.file_type() != FileType::Regular || self.shared.files.is_durable(moved) {
            return Ok(());
        }
        if self.shared.files.auto_da_alloc()
            && self
                .shared
                .namespace
                .lookup(new_parent, new_name)?
                .is_some()
        {
            // Before the rename's journal record exists: any flush of the
            // journal (another file's fsync, or a writeback's own) may make
            // it durable, and then the data must be there. A large copy
            // holds the rename for as long as its writeback takes (a set
            // written back before fsync's commits was tried: the other
            // flushes made the rename durable without the data).
            self.shared.files.write_back_before_replacing(moved);
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
