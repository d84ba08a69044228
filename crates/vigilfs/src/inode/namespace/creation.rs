//! Making inodes: regular files, device nodes, fifos, sockets,
//! directories and symlinks, and new links to existing files. A new inode
//! takes its number and generation from the counters, its permissions from
//! the caller's mode and umask or the parent's default ACL, and its
//! inheritable flags from the parent, all in the transaction that names
//! it. Owner and group are the caller's to decide (a set-group-id parent
//! is the permission layer's business).

use super::records::{
    allocate_inode, check_new_name, probe, put_entry, require_directory, require_inode, set_parent,
    touch_directory, write_inode,
};
use super::*;

/// What a new inode is.
pub(super) struct NewInode<'t> {
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
        // An empty target names nothing: ENOENT, as Linux's symlink says.
        if target.is_empty() {
            return Err(NamespaceError::NotFound);
        }
        if target.contains(&0) {
            return Err(NamespaceError::Invalid("symlink target"));
        }
        if target.len() > max_symlink_target(self.metadata.trees.limits().max_value) {
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
            let get = |key: &[u8]| transaction.get(TreeId::Meta, key);
            read_symlink_target(get, ino, record.size)
        })
    }

    fn create_inode(
        &self,
        parent: u64,
        name: &[u8],
        new: NewInode<'_>,
    ) -> NamespaceResult<(u64, InodeRecord)> {
        check_new_name(name)?;
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
            let max_value = self.metadata.trees.limits().max_value;
            write_symlink_target(&mut transaction, ino, target, max_value)?;
        }
        touch_directory(&mut transaction, parent, i64::from(is_directory), time)?;
        transaction.commit()?;
        Ok((ino, record))
    }

    /// Adds `new_name` in `new_parent` for the non-directory `ino`.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> NamespaceResult<InodeRecord> {
        check_new_name(new_name)?;
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
        if record.nlink >= MAX_LINKS {
            return Err(NamespaceError::TooManyLinks);
        }
        record.nlink += 1;
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
}
