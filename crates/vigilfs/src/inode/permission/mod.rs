//! Linux permission semantics as pure functions over [`InodeRecord`]s: no
//! I/O. The mounted-filesystem layer calls them before each operation
//! with the calling process's credentials ([`Caller`]: fsuid, fsgid,
//! supplementary groups); "root" means uid 0, standing for the
//! capabilities Linux checks (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`,
//! `CAP_FOWNER`, `CAP_CHOWN`, `CAP_FSETID`).
//!
//! The rules, and where they come from:
//!
//! * **Access** ([`check_access`], POSIX and Linux `generic_permission` /
//!   `acl_permission_check`): exactly one class of the mode applies — the
//!   owner bits if the caller owns the inode, else the group bits if the
//!   caller is in its group (primary or supplementary), else the other
//!   bits. There is no fall-through: an owner with mode `0o070` is
//!   refused even when in the group. Root may always read and write, may
//!   search any directory, and may execute a non-directory only if some
//!   execute bit is set. Refusal is `EACCES`.
//! * **Sticky directories** ([`check_sticky_delete`], `may_delete` /
//!   `check_sticky`): in a directory with `S_ISVTX`, only the victim's
//!   owner, the directory's owner or root may unlink, rmdir or rename the
//!   victim; otherwise `EPERM` (what `may_delete` returns, not `EACCES`).
//!   The write+search access to the directory itself is a separate
//!   [`check_access`].
//! * **New inodes** ([`new_inode_owner`], `inode_init_owner` and
//!   `mode_strip_sgid`): the owner is the caller; the group is the
//!   parent's if the parent has `S_ISGID`, else the caller's; a new
//!   directory in a setgid directory is setgid too; a new non-directory
//!   asking for `S_ISGID` with group execute loses `S_ISGID` if the caller
//!   is neither in its group nor root. The umask is the caller's business.
//! * **setattr** ([`check_setattr`], `setattr_prepare`, `may_setattr`,
//!   `chown_common`, `notify_change`, `vfs_truncate`):
//!   - chmod: owner or root, else `EPERM`; if the caller is neither root
//!     nor in the file's group (the new group when the same request
//!     changes it), `S_ISGID` is silently dropped from the new mode (all
//!     file types, as `setattr_prepare`);
//!   - chown: changing the uid needs root (the owner "changing" it to
//!     itself is allowed); changing the gid needs root, or the owner
//!     choosing their own current gid or a group they are in; else
//!     `EPERM`. After a chown (uid or gid given) of a non-directory, by
//!     anyone, root included, `S_ISUID` is cleared, and `S_ISGID` if group
//!     execute is set (pjdfstest `chown/00.t`);
//!   - times: setting an explicit time needs owner or root (`EPERM`);
//!     setting only "now" needs owner, root or write access (`EACCES`);
//!   - size: needs write access (`EACCES`), unless the truncate comes
//!     through a handle opened for writing (`ftruncate`), which was
//!     checked at open.
//! * **Writes** ([`kill_suid_on_write`], `file_remove_privs` /
//!   `should_remove_suid`): a change of a regular file's data by a non-root
//!   caller — write, truncate, `O_TRUNC`, fallocate, hole punch — clears
//!   `S_ISUID`, and `S_ISGID` when group execute is set or the caller is
//!   not in the file's group (`setattr_should_drop_sgid`: `S_ISGID`
//!   without group execute, a mandatory-locking mark, stays only for a
//!   member of the group). The file
//!   capability goes too ([`check_xattr_removal`]: the kernel removes it as
//!   the writer).
//!
//! * **Extended attributes** ([`check_xattr_access`], [`xattr_listable`];
//!   `xattr_permission`, commoncap's `cap_inode_setxattr`, and the
//!   `trusted.*` list handlers): `security.*` may be read by anyone and
//!   written by root only (`EPERM`); `trusted.*` is root's alone — others
//!   get `EPERM` writing and `ENODATA` reading, and do not see the names
//!   in a list; `user.*` exists only on regular files and directories
//!   (`EPERM` writing, `ENODATA` reading elsewhere), writing one on a
//!   sticky directory needs owner or root (`EPERM`), and otherwise reading
//!   needs read access and writing write access (`EACCES`). Listing needs
//!   no access to the inode.
//!
//! * **POSIX ACLs** (`*_with_acl`, `posix_acl_permission`): for a caller
//!   who is neither root nor the owner, an inode's access ACL decides
//!   instead of the mode's group and other bits; only the owner or root
//!   may set one.
//!
//! * **Inode flags** (`IS_IMMUTABLE`, `IS_APPEND`; see `inode_flags.rs`):
//!   write access to an immutable inode is `EPERM`, for root too; a
//!   setattr of an immutable or append-only inode is `EPERM` but for
//!   setting an append-only file's times to now; so is writing or
//!   removing one's extended attributes.
//!
//! Not modelled: user namespaces and idmapped mounts, and capabilities other than
//! "uid 0 has them all" (so `security.capability` needs root like every
//! `security.*` write, where Linux asks for `CAP_SETFCAP`; only its
//! removal by a writer of the file is allowed to others).

//!
//! Here: who is asking, access, sticky directories and new inodes. The
//! setattr and write rules are in `setattr`, the extended-attribute rules
//! in `xattr`; all are re-exported from here.

mod setattr;
#[cfg(test)]
mod tests;
mod xattr;

pub use setattr::{
    check_setattr, check_setattr_with_acl, kill_suid_on_write, Adjusted, SetAttrRequest, TimeChange,
};
use std::fmt;
use std::sync::OnceLock;
pub use xattr::{
    check_xattr_access, check_xattr_access_with_acl, check_xattr_removal, xattr_listable,
};

use thiserror::Error;

use super::acl::Acl;
use super::inode_flags::is_immutable;
use super::record::{FileType, InodeRecord};

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;
const S_IXGRP: u32 = 0o010;
const S_IXUGO: u32 = 0o111;

/// Why a permission check refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PermissionError {
    /// The mode bits do not grant the access (`EACCES`).
    #[error("permission denied: {0}")]
    Denied(&'static str),
    /// Only the owner or root may do this (`EPERM`).
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// An extended attribute the caller may not read is reported absent
    /// (`ENODATA`), as Linux does for `trusted.*` and misplaced `user.*`.
    #[error("no such attribute (hidden from this caller): {0}")]
    Hidden(&'static str),
}

impl PermissionError {
    /// The errno a system call reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            PermissionError::Denied(_) => libc::EACCES,
            PermissionError::NotPermitted(_) => libc::EPERM,
            PermissionError::Hidden(_) => libc::ENODATA,
        }
    }
}

/// A permission check's result.
pub type PermResult<T> = Result<T, PermissionError>;

/// Who is asking: the calling process's filesystem credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Filesystem user id.
    pub uid: u32,
    /// Filesystem (primary) group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: SupplementaryGroups,
    /// The file-mode creation mask of the calling process: applied to a
    /// new inode's mode unless its directory has a default ACL (Linux
    /// leaves the umask to filesystems with ACLs, `posix_acl_create`).
    pub umask: u32,
}

impl Caller {
    /// Root: uid 0, gid 0, no supplementary groups.
    pub fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            groups: SupplementaryGroups::default(),
            umask: 0,
        }
    }

    /// Whether the caller is root (and so holds every capability).
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether `gid` is the caller's primary or a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(gid)
    }

    fn owns(&self, record: &InodeRecord) -> bool {
        self.uid == record.uid
    }

    fn owner_or_root(&self, record: &InodeRecord) -> bool {
        self.is_root() || self.owns(record)
    }
}

/// A caller's supplementary groups: given, or found by a lookup that runs
/// the first time a check asks and is kept for the rest of the request.
///
/// Finding them can be costly (the FUSE server reads the caller's
/// `/proc/<pid>/status`, a fifth of its time on a database's writes), and
/// most requests never ask: an owner's access, every read and write of an
/// open file and every fsync are decided without them.
#[derive(Clone, Default)]
pub struct SupplementaryGroups {
    known: OnceLock<Vec<u32>>,
    /// How to find them, and for which process, until `known` is set.
    lookup: Option<(GroupLookup, u32)>,
}

/// Finds the supplementary groups of a process, given its id.
pub type GroupLookup = fn(u32) -> Vec<u32>;

impl SupplementaryGroups {
    /// Groups found by `lookup(process)` when first needed.
    pub fn looked_up_when_needed(lookup: GroupLookup, process: u32) -> Self {
        SupplementaryGroups {
            known: OnceLock::new(),
            lookup: Some((lookup, process)),
        }
    }

    /// The groups, looked up now if they were not yet.
    pub fn list(&self) -> &[u32] {
        self.known.get_or_init(|| match self.lookup {
            Some((lookup, process)) => lookup(process),
            None => Vec::new(),
        })
    }

    /// Whether `gid` is one of them.
    pub fn contains(&self, gid: u32) -> bool {
        self.list().contains(&gid)
    }
}

impl From<Vec<u32>> for SupplementaryGroups {
    fn from(groups: Vec<u32>) -> Self {
        SupplementaryGroups {
            known: OnceLock::from(groups),
            lookup: None,
        }
    }
}

impl PartialEq for SupplementaryGroups {
    fn eq(&self, other: &Self) -> bool {
        self.list() == other.list()
    }
}

impl Eq for SupplementaryGroups {}

/// Shows the groups if they were looked up; never looks them up itself.
impl fmt::Debug for SupplementaryGroups {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known.get() {
            Some(groups) => formatter.debug_list().entries(groups).finish(),
            None => formatter.write_str("(not looked up)"),
        }
    }
}

/// A set of access kinds, as `MAY_READ | MAY_WRITE | MAY_EXEC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Access(u8);

impl Access {
    /// Nothing.
    pub const NONE: Access = Access(0);
    /// Read (list, for a directory).
    pub const READ: Access = Access(4);
    /// Write (add and remove entries, for a directory).
    pub const WRITE: Access = Access(2);
    /// Execute (search, for a directory).
    pub const EXECUTE: Access = Access(1);

    /// The three mode bits (`rwx` = 4, 2, 1).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every kind in `other` is in `self`.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;

    fn bitor(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }
}

/// Whether `caller` may access `record` as `access` asks; `EACCES` if not.
/// For an inode without an access ACL; see [`check_access_with_acl`].
pub fn check_access(record: &InodeRecord, caller: &Caller, access: Access) -> PermResult<()> {
    check_access_with_acl(record, None, caller, access)
}

/// [`check_access`] for an inode whose access ACL is `acl`: a caller who
/// is neither root nor the owner gets what the ACL grants
/// ([`Acl::permits`]); the owner's bits are the mode's either way.
pub fn check_access_with_acl(
    record: &InodeRecord,
    acl: Option<&Acl>,
    caller: &Caller,
    access: Access,
) -> PermResult<()> {
    if access.contains(Access::WRITE) && is_immutable(record) {
        // Before any privilege: root may not write an immutable inode.
        return Err(PermissionError::NotPermitted("the inode is immutable"));
    }
    // As `acl_permission_check`: with the group bits (the mask) all clear
    // the ACL is not consulted and the mode decides.
    let consulted =
        |_: &&Acl| !caller.is_root() && !caller.owns(record) && record.mode & 0o070 != 0;
    if let Some(acl) = acl.filter(consulted) {
        let in_group = |gid| caller.in_group(gid);
        return if acl.permits(caller.uid, &in_group, record.gid, access.bits()) {
            Ok(())
        } else {
            Err(PermissionError::Denied("the ACL refuses the access"))
        };
    }
    let mode = record.mode;
    let is_directory = record.file_type() == FileType::Directory;
    if caller.is_root() {
        // CAP_DAC_OVERRIDE: everything but executing a file nobody may
        // execute.
        if !access.contains(Access::EXECUTE) || is_directory || mode & S_IXUGO != 0 {
            return Ok(());
        }
        return Err(PermissionError::Denied("no execute bit is set"));
    }
    let class = if caller.owns(record) {
        mode >> 6
    } else if caller.in_group(record.gid) {
        mode >> 3
    } else {
        mode
    };
    let granted = (class & 0o7) as u8;
    if granted & access.bits() == access.bits() {
        Ok(())
    } else {
        Err(PermissionError::Denied("the mode bits refuse the access"))
    }
}

/// Whether `caller` may remove or rename `victim` out of `dir` as far as
/// the sticky bit goes; `EPERM` if not. A rename checks its source and,
/// when it replaces one, its target (each in its own directory).
pub fn check_sticky_delete(
    dir: &InodeRecord,
    victim: &InodeRecord,
    caller: &Caller,
) -> PermResult<()> {
    if dir.mode & S_ISVTX == 0 || caller.is_root() || caller.owns(victim) || caller.owns(dir) {
        Ok(())
    } else {
        Err(PermissionError::NotPermitted(
            "the directory is sticky and the caller owns neither it nor the entry",
        ))
    }
}

/// The owner, group and mode of a new inode `caller` makes in `parent`,
/// from the requested `mode` (permission bits, `0o7777` of it kept).
pub fn new_inode_owner(
    parent: &InodeRecord,
    caller: &Caller,
    mode: u32,
    is_dir: bool,
) -> (u32, u32, u32) {
    let mut mode = mode & 0o7777;
    let gid = if parent.mode & S_ISGID != 0 {
        if is_dir {
            mode |= S_ISGID;
        }
        parent.gid
    } else {
        caller.gid
    };
    if !is_dir
        && mode & (S_ISGID | S_IXGRP) == (S_ISGID | S_IXGRP)
        && !caller.in_group(gid)
        && !caller.is_root()
    {
        mode &= !S_ISGID;
    }
    (caller.uid, gid, mode)
}
