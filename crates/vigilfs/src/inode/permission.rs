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

use std::fmt;
use std::sync::OnceLock;

use thiserror::Error;

use super::acl::Acl;
use super::inode_flags::{is_immutable, is_pinned};
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

/// How a setattr sets a timestamp, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeChange {
    /// To the current time (`UTIME_NOW`, or `utimes(path, NULL)`).
    Now,
    /// To a time the caller chose.
    Explicit,
}

/// What a chmod, chown, utimes or truncate asks to change; `None` leaves
/// an attribute as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttrRequest {
    /// New permission bits (`0o7777` of it).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeChange>,
    /// New modification time.
    pub mtime: Option<TimeChange>,
    /// The size change comes through a handle open for writing
    /// (`ftruncate`): its write access was checked at open.
    pub through_writable_handle: bool,
}

/// What a permitted setattr must store beyond what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjusted {
    /// The permission bits (`0o7777`) to store, with the bits the rules
    /// clear cleared; `None` when the mode does not change.
    pub mode: Option<u32>,
}

/// Whether `caller` may change `record` as `changes` asks (`EPERM` or
/// `EACCES` if not), and the mode to store if it changes.
pub fn check_setattr(
    record: &InodeRecord,
    caller: &Caller,
    changes: &SetAttrRequest,
) -> PermResult<Adjusted> {
    check_setattr_with_acl(record, None, caller, changes)
}

/// [`check_setattr`] for an inode whose access ACL is `acl`.
pub fn check_setattr_with_acl(
    record: &InodeRecord,
    acl: Option<&Acl>,
    caller: &Caller,
    changes: &SetAttrRequest,
) -> PermResult<Adjusted> {
    let times = [changes.atime, changes.mtime];
    let sets_attributes = changes.mode.is_some()
        || changes.uid.is_some()
        || changes.gid.is_some()
        || times.contains(&Some(TimeChange::Explicit));
    if (sets_attributes || changes.size.is_some()) && is_pinned(record) {
        return Err(PermissionError::NotPermitted(
            "the inode is immutable or append-only",
        ));
    }
    if times.contains(&Some(TimeChange::Now)) && is_immutable(record) {
        return Err(PermissionError::NotPermitted("the inode is immutable"));
    }
    let root = caller.is_root();
    if let Some(uid) = changes.uid {
        let own_uid_to_itself = caller.owns(record) && uid == record.uid;
        if !(root || own_uid_to_itself) {
            return Err(PermissionError::NotPermitted(
                "only root may change the owner",
            ));
        }
    }
    if let Some(gid) = changes.gid {
        let owner_to_own_group = caller.owns(record) && (gid == record.gid || caller.in_group(gid));
        if !(root || owner_to_own_group) {
            return Err(PermissionError::NotPermitted(
                "only root, or the owner to a group they are in, may change the group",
            ));
        }
    }
    if changes.mode.is_some() && !caller.owner_or_root(record) {
        return Err(PermissionError::NotPermitted(
            "only the owner or root may change the mode",
        ));
    }
    if times.contains(&Some(TimeChange::Explicit)) {
        if !caller.owner_or_root(record) {
            return Err(PermissionError::NotPermitted(
                "only the owner or root may set explicit times",
            ));
        }
    } else if times.contains(&Some(TimeChange::Now)) && !caller.owner_or_root(record) {
        check_access_with_acl(record, acl, caller, Access::WRITE)?;
    }
    if changes.size.is_some() && !changes.through_writable_handle {
        check_access_with_acl(record, acl, caller, Access::WRITE)?;
    }

    let old = record.mode & 0o7777;
    let mut mode = changes.mode.map(|mode| mode & 0o7777);
    if let Some(new) = mode.as_mut() {
        let group = changes.gid.unwrap_or(record.gid);
        if !root && !caller.in_group(group) {
            *new &= !S_ISGID;
        }
    }
    let chown = changes.uid.is_some() || changes.gid.is_some();
    if chown && record.file_type() != FileType::Directory {
        let current = mode.unwrap_or(old);
        let mut cleared = current & !S_ISUID;
        if cleared & S_IXGRP != 0 {
            cleared &= !S_ISGID;
        }
        if cleared != current || mode.is_some() {
            mode = Some(cleared);
        }
    }
    Ok(Adjusted { mode })
}

/// The permission bits (`0o7777`) to store after `caller` writes to
/// `record`, or `None` when the write changes no mode bits: a non-root
/// write to a regular file drops `S_ISUID`, and `S_ISGID` if group execute
/// is set or the caller is not in the file's group.
pub fn kill_suid_on_write(record: &InodeRecord, caller: &Caller) -> Option<u32> {
    if caller.is_root() || record.file_type() != FileType::Regular {
        return None;
    }
    let old = record.mode & 0o7777;
    let mut new = old & !S_ISUID;
    if new & S_ISGID != 0 && (new & S_IXGRP != 0 || !caller.in_group(record.gid)) {
        new &= !S_ISGID;
    }
    (new != old).then_some(new)
}

/// Whether `caller` may read (get) or, with `write`, set or remove the
/// extended attribute `name` of `record`; see the module comment. Names
/// outside `security.`, `trusted.` and `user.` get no check here: the
/// attribute store refuses them.
pub fn check_xattr_access(
    record: &InodeRecord,
    caller: &Caller,
    name: &[u8],
    write: bool,
) -> PermResult<()> {
    check_xattr_access_with_acl(record, None, caller, name, write)
}

/// [`check_xattr_access`] for an inode whose access ACL is `acl`. Setting
/// or removing a POSIX ACL needs the owner or root (`EPERM`,
/// `inode_owner_or_capable`); reading one needs nothing.
pub fn check_xattr_access_with_acl(
    record: &InodeRecord,
    acl: Option<&Acl>,
    caller: &Caller,
    name: &[u8],
    write: bool,
) -> PermResult<()> {
    if write && is_pinned(record) {
        return Err(PermissionError::NotPermitted(
            "the inode is immutable or append-only",
        ));
    }
    let refuse = |why| {
        if write {
            PermissionError::NotPermitted(why)
        } else {
            PermissionError::Hidden(why)
        }
    };
    if name.starts_with(b"security.") {
        if write && !caller.is_root() {
            return Err(PermissionError::NotPermitted(
                "only root may write security.* attributes",
            ));
        }
        Ok(())
    } else if name.starts_with(b"trusted.") {
        if caller.is_root() {
            Ok(())
        } else {
            Err(refuse("trusted.* attributes are root's"))
        }
    } else if name.starts_with(b"user.") {
        let kind = record.file_type();
        if !matches!(kind, FileType::Regular | FileType::Directory) {
            return Err(refuse(
                "user.* attributes exist only on regular files and directories",
            ));
        }
        if write
            && kind == FileType::Directory
            && record.mode & S_ISVTX != 0
            && !caller.owner_or_root(record)
        {
            return Err(PermissionError::NotPermitted(
                "user.* attributes of a sticky directory are its owner's",
            ));
        }
        let access = if write { Access::WRITE } else { Access::READ };
        check_access_with_acl(record, acl, caller, access)
    } else if name.starts_with(b"system.posix_acl_") && write && !caller.owner_or_root(record) {
        Err(PermissionError::NotPermitted(
            "only the owner or root may change an ACL",
        ))
    } else {
        Ok(())
    }
}

/// The file-capability attribute: what a change to a file's data drops.
pub const FILE_CAPABILITY_XATTR: &[u8] = b"security.capability";

/// Whether `caller` may remove the extended attribute `name` of `record`:
/// as [`check_xattr_access`] for a write, except that a caller who may
/// write a regular file may also remove its file capability. That is
/// Linux's `file_remove_privs` on write, truncate and chown: the kernel
/// removes `security.capability` with the writer's credentials (through
/// FUSE, a removexattr before the write); a removexattr(2) of it by a
/// caller without `CAP_SETFCAP` is refused by the kernel before it gets
/// here.
pub fn check_xattr_removal(
    record: &InodeRecord,
    acl: Option<&Acl>,
    caller: &Caller,
    name: &[u8],
) -> PermResult<()> {
    if name == FILE_CAPABILITY_XATTR && record.file_type() == FileType::Regular {
        if caller.is_root() {
            return Ok(());
        }
        return check_access_with_acl(record, acl, caller, Access::WRITE);
    }
    check_xattr_access_with_acl(record, acl, caller, name, true)
}

/// Whether `caller` sees attribute `name` in a list: every name but
/// `trusted.*` ones, which only root sees.
pub fn xattr_listable(caller: &Caller, name: &[u8]) -> bool {
    caller.is_root() || !name.starts_with(b"trusted.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::record::Timestamp;

    const OWNER: u32 = 1000;
    const GROUP: u32 = 100;

    fn inode(kind: FileType, permissions: u32) -> InodeRecord {
        InodeRecord {
            mode: kind.mode_bits() | permissions,
            uid: OWNER,
            gid: GROUP,
            nlink: 1,
            flags: 0,
            size: 0,
            generation: 1,
            rdev: 0,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            btime: Timestamp::default(),
        }
    }

    fn file(permissions: u32) -> InodeRecord {
        inode(FileType::Regular, permissions)
    }

    fn dir(permissions: u32) -> InodeRecord {
        inode(FileType::Directory, permissions)
    }

    fn user(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            uid,
            gid,
            groups: groups.to_vec().into(),
            umask: 0,
        }
    }

    fn owner() -> Caller {
        user(OWNER, 500, &[])
    }

    fn member() -> Caller {
        user(2000, GROUP, &[])
    }

    fn stranger() -> Caller {
        user(3000, 300, &[301])
    }

    fn errno<T: fmt::Debug>(result: PermResult<T>) -> i32 {
        result.expect_err("expected a refusal").errno()
    }

    const RW: Access = Access(6);

    #[test]
    fn caller_groups_count_primary_and_supplementary() {
        let caller = user(5, 10, &[11, 12]);
        assert!(caller.in_group(10) && caller.in_group(12));
        assert!(!caller.in_group(13));
        assert!(Caller::root().is_root() && !caller.is_root());
    }

    #[test]
    fn owner_class_applies_to_the_owner() {
        let record = file(0o600);
        assert!(check_access(&record, &owner(), RW).is_ok());
        assert_eq!(
            errno(check_access(&record, &owner(), Access::EXECUTE)),
            libc::EACCES
        );
        assert_eq!(
            errno(check_access(&record, &member(), Access::READ)),
            libc::EACCES
        );
    }

    #[test]
    fn owner_with_mode_0o070_is_denied_even_when_in_the_group() {
        let record = file(0o070);
        let owner_in_group = user(OWNER, GROUP, &[]);
        assert_eq!(
            errno(check_access(&record, &owner_in_group, Access::READ)),
            libc::EACCES
        );
        assert!(check_access(&record, &member(), RW | Access::EXECUTE).is_ok());
    }

    #[test]
    fn group_class_applies_to_members_and_does_not_fall_through_to_other() {
        let record = file(0o604);
        assert_eq!(
            errno(check_access(&record, &member(), Access::READ)),
            libc::EACCES
        );
        assert!(check_access(&record, &stranger(), Access::READ).is_ok());
    }

    #[test]
    fn supplementary_groups_select_the_group_class() {
        let record = file(0o040);
        let supplementary = user(2000, 7, &[8, GROUP]);
        assert!(check_access(&record, &supplementary, Access::READ).is_ok());
        assert_eq!(
            errno(check_access(&record, &stranger(), Access::READ)),
            libc::EACCES
        );
    }

    #[test]
    fn other_class_applies_to_strangers() {
        let record = file(0o661);
        assert!(check_access(&record, &stranger(), Access::EXECUTE).is_ok());
        assert_eq!(
            errno(check_access(&record, &stranger(), Access::WRITE)),
            libc::EACCES
        );
        assert!(check_access(&record, &stranger(), Access::NONE).is_ok());
    }

    #[test]
    fn root_reads_and_writes_anything() {
        assert!(check_access(&file(0o000), &Caller::root(), RW).is_ok());
        assert!(check_access(&dir(0o000), &Caller::root(), RW).is_ok());
    }

    #[test]
    fn root_executes_only_when_an_execute_bit_is_set_or_a_directory() {
        let root = Caller::root();
        assert_eq!(
            errno(check_access(&file(0o666), &root, Access::EXECUTE)),
            libc::EACCES
        );
        assert!(check_access(&file(0o001), &root, Access::EXECUTE).is_ok());
        assert!(check_access(&dir(0o000), &root, Access::EXECUTE).is_ok());
    }

    #[test]
    fn sticky_directory_lets_only_owners_and_root_delete() {
        let sticky = dir(0o1777);
        let mut victim = file(0o644);
        victim.uid = 4000;
        let victim_owner = user(4000, 1, &[]);
        assert!(check_sticky_delete(&sticky, &victim, &victim_owner).is_ok());
        assert!(check_sticky_delete(&sticky, &victim, &owner()).is_ok());
        assert!(check_sticky_delete(&sticky, &victim, &Caller::root()).is_ok());
        assert_eq!(
            errno(check_sticky_delete(&sticky, &victim, &stranger())),
            libc::EPERM
        );
        // The group owning the directory does not count.
        assert_eq!(
            errno(check_sticky_delete(&sticky, &victim, &member())),
            libc::EPERM
        );
    }

    #[test]
    fn non_sticky_directory_does_not_restrict_delete() {
        assert!(check_sticky_delete(&dir(0o777), &file(0o644), &stranger()).is_ok());
    }

    #[test]
    fn new_inode_takes_the_callers_uid_and_gid() {
        let caller = user(7, 8, &[]);
        assert_eq!(
            new_inode_owner(&dir(0o755), &caller, 0o644, false),
            (7, 8, 0o644)
        );
        assert_eq!(
            new_inode_owner(&dir(0o755), &caller, 0o2755, true),
            (7, 8, 0o2755)
        );
    }

    #[test]
    fn setgid_directory_gives_its_group_and_setgid_to_subdirectories() {
        let parent = dir(0o2775);
        let caller = user(7, 8, &[GROUP]);
        assert_eq!(
            new_inode_owner(&parent, &caller, 0o755, true),
            (7, GROUP, 0o2755)
        );
        assert_eq!(
            new_inode_owner(&parent, &caller, 0o644, false),
            (7, GROUP, 0o644)
        );
    }

    #[test]
    fn new_setgid_file_outside_the_callers_groups_loses_setgid() {
        let parent = dir(0o2777);
        let outsider = user(7, 8, &[]);
        assert_eq!(
            new_inode_owner(&parent, &outsider, 0o2755, false),
            (7, GROUP, 0o755)
        );
        // Without group execute it is a locking mark and stays.
        assert_eq!(
            new_inode_owner(&parent, &outsider, 0o2644, false),
            (7, GROUP, 0o2644)
        );
        let insider = user(7, 8, &[GROUP]);
        assert_eq!(
            new_inode_owner(&parent, &insider, 0o2755, false),
            (7, GROUP, 0o2755)
        );
        let root = Caller::root();
        assert_eq!(
            new_inode_owner(&parent, &root, 0o2755, false),
            (0, GROUP, 0o2755)
        );
    }

    fn chmod(mode: u32) -> SetAttrRequest {
        SetAttrRequest {
            mode: Some(mode),
            ..SetAttrRequest::default()
        }
    }

    fn chown(uid: Option<u32>, gid: Option<u32>) -> SetAttrRequest {
        SetAttrRequest {
            uid,
            gid,
            ..SetAttrRequest::default()
        }
    }

    #[test]
    fn chmod_by_owner_or_root_only() {
        let record = file(0o644);
        assert_eq!(
            check_setattr(&record, &owner(), &chmod(0o600)),
            Ok(Adjusted { mode: Some(0o600) })
        );
        assert_eq!(
            check_setattr(&record, &Caller::root(), &chmod(0o7777)),
            Ok(Adjusted { mode: Some(0o7777) })
        );
        assert_eq!(
            errno(check_setattr(&record, &member(), &chmod(0o600))),
            libc::EPERM
        );
        assert_eq!(
            errno(check_setattr(&file(0o777), &stranger(), &chmod(0o600))),
            libc::EPERM
        );
    }

    #[test]
    fn chmod_by_owner_outside_the_group_drops_setgid() {
        // owner() is not in GROUP.
        assert_eq!(
            check_setattr(&file(0o644), &owner(), &chmod(0o2755)),
            Ok(Adjusted { mode: Some(0o755) })
        );
        assert_eq!(
            check_setattr(&dir(0o755), &owner(), &chmod(0o2755)),
            Ok(Adjusted { mode: Some(0o755) })
        );
        let owner_in_group = user(OWNER, 1, &[GROUP]);
        assert_eq!(
            check_setattr(&file(0o644), &owner_in_group, &chmod(0o6755)),
            Ok(Adjusted { mode: Some(0o6755) })
        );
    }

    #[test]
    fn chown_of_the_uid_needs_root() {
        let record = file(0o644);
        assert_eq!(
            errno(check_setattr(&record, &owner(), &chown(Some(5), None))),
            libc::EPERM
        );
        assert_eq!(
            errno(check_setattr(
                &record,
                &stranger(),
                &chown(Some(OWNER), None)
            )),
            libc::EPERM
        );
        assert!(check_setattr(&record, &owner(), &chown(Some(OWNER), None)).is_ok());
        assert!(check_setattr(&record, &Caller::root(), &chown(Some(5), Some(6))).is_ok());
    }

    #[test]
    fn chown_of_the_gid_by_the_owner_only_to_their_groups() {
        let record = file(0o644);
        let owner = user(OWNER, 500, &[501]);
        assert!(check_setattr(&record, &owner, &chown(None, Some(501))).is_ok());
        assert!(check_setattr(&record, &owner, &chown(None, Some(500))).is_ok());
        // Its current group, even one the owner is not in.
        assert!(check_setattr(&record, &owner, &chown(None, Some(GROUP))).is_ok());
        assert_eq!(
            errno(check_setattr(&record, &owner, &chown(None, Some(999)))),
            libc::EPERM
        );
        // A member of the target group who is not the owner may not.
        assert_eq!(
            errno(check_setattr(&record, &member(), &chown(None, Some(GROUP)))),
            libc::EPERM
        );
    }

    #[test]
    fn chown_with_nothing_to_change_needs_no_permission() {
        assert_eq!(
            check_setattr(&file(0o6755), &stranger(), &chown(None, None)),
            Ok(Adjusted { mode: None })
        );
    }

    #[test]
    fn chown_of_a_file_clears_setuid_and_executable_setgid_even_by_root() {
        let root = Caller::root();
        assert_eq!(
            check_setattr(&file(0o6555), &root, &chown(Some(5), Some(6))),
            Ok(Adjusted { mode: Some(0o555) })
        );
        let owner = user(OWNER, 500, &[501]);
        assert_eq!(
            check_setattr(&file(0o6555), &owner, &chown(None, Some(501))),
            Ok(Adjusted { mode: Some(0o555) })
        );
        // Setgid without group execute stays; nothing to clear is None.
        assert_eq!(
            check_setattr(&file(0o6644), &root, &chown(Some(5), None)),
            Ok(Adjusted { mode: Some(0o2644) })
        );
        assert_eq!(
            check_setattr(&file(0o644), &root, &chown(Some(5), None)),
            Ok(Adjusted { mode: None })
        );
    }

    #[test]
    fn chown_of_a_directory_keeps_its_setid_bits() {
        assert_eq!(
            check_setattr(&dir(0o6775), &Caller::root(), &chown(Some(5), Some(6))),
            Ok(Adjusted { mode: None })
        );
    }

    #[test]
    fn chmod_and_chown_together_clear_bits_from_the_new_mode() {
        let request = SetAttrRequest {
            mode: Some(0o6755),
            uid: Some(5),
            ..SetAttrRequest::default()
        };
        assert_eq!(
            check_setattr(&file(0o644), &Caller::root(), &request),
            Ok(Adjusted { mode: Some(0o755) })
        );
    }

    fn utimes(atime: Option<TimeChange>, mtime: Option<TimeChange>) -> SetAttrRequest {
        SetAttrRequest {
            atime,
            mtime,
            ..SetAttrRequest::default()
        }
    }

    #[test]
    fn explicit_times_need_owner_or_root() {
        let record = file(0o666);
        let explicit = utimes(Some(TimeChange::Explicit), Some(TimeChange::Explicit));
        assert!(check_setattr(&record, &owner(), &explicit).is_ok());
        assert!(check_setattr(&record, &Caller::root(), &explicit).is_ok());
        // Write access is not enough.
        assert_eq!(
            errno(check_setattr(&record, &stranger(), &explicit)),
            libc::EPERM
        );
        let mixed = utimes(Some(TimeChange::Now), Some(TimeChange::Explicit));
        assert_eq!(
            errno(check_setattr(&record, &stranger(), &mixed)),
            libc::EPERM
        );
    }

    #[test]
    fn times_to_now_need_owner_root_or_write_access() {
        let now = utimes(Some(TimeChange::Now), Some(TimeChange::Now));
        assert!(check_setattr(&file(0o000), &owner(), &now).is_ok());
        assert!(check_setattr(&file(0o000), &Caller::root(), &now).is_ok());
        assert!(check_setattr(&file(0o602), &stranger(), &now).is_ok());
        assert_eq!(
            errno(check_setattr(&file(0o644), &stranger(), &now)),
            libc::EACCES
        );
    }

    #[test]
    fn truncate_needs_write_access_unless_through_a_writable_handle() {
        let truncate = SetAttrRequest {
            size: Some(0),
            ..SetAttrRequest::default()
        };
        assert_eq!(
            errno(check_setattr(&file(0o644), &stranger(), &truncate)),
            libc::EACCES
        );
        assert_eq!(
            errno(check_setattr(&file(0o444), &owner(), &truncate)),
            libc::EACCES
        );
        assert!(check_setattr(&file(0o646), &stranger(), &truncate).is_ok());
        assert!(check_setattr(&file(0o000), &Caller::root(), &truncate).is_ok());
        let through_handle = SetAttrRequest {
            through_writable_handle: true,
            ..truncate
        };
        assert!(check_setattr(&file(0o444), &owner(), &through_handle).is_ok());
    }

    #[test]
    fn write_by_non_root_kills_setuid_and_executable_setgid() {
        assert_eq!(kill_suid_on_write(&file(0o4755), &stranger()), Some(0o755));
        assert_eq!(kill_suid_on_write(&file(0o6755), &owner()), Some(0o755));
        assert_eq!(kill_suid_on_write(&file(0o2755), &member()), Some(0o755));
        // Setgid without group execute is a locking mark: it stays for a
        // member of the file's group, and goes for anyone else.
        assert_eq!(kill_suid_on_write(&file(0o2644), &member()), None);
        assert_eq!(kill_suid_on_write(&file(0o6644), &member()), Some(0o2644));
        assert_eq!(kill_suid_on_write(&file(0o2644), &owner()), Some(0o644));
        assert_eq!(kill_suid_on_write(&file(0o6644), &stranger()), Some(0o644));
        assert_eq!(kill_suid_on_write(&file(0o755), &owner()), None);
    }

    #[test]
    fn write_by_root_or_to_a_non_regular_file_kills_nothing() {
        assert_eq!(kill_suid_on_write(&file(0o6755), &Caller::root()), None);
        assert_eq!(kill_suid_on_write(&dir(0o6755), &owner()), None);
    }

    #[test]
    fn a_writer_may_remove_the_file_capability_and_nothing_else_of_security() {
        let writable = file(0o666);
        let capability = FILE_CAPABILITY_XATTR;
        assert!(check_xattr_removal(&writable, None, &stranger(), capability).is_ok());
        assert!(check_xattr_removal(&file(0o644), None, &stranger(), capability).is_err());
        assert!(check_xattr_removal(&writable, None, &stranger(), b"security.selinux").is_err());
        assert!(check_xattr_removal(&dir(0o777), None, &stranger(), capability).is_err());
        assert!(check_xattr_removal(&file(0o600), None, &Caller::root(), capability).is_ok());
    }

    #[test]
    fn security_attributes_are_readable_by_all_and_writable_by_root() {
        let record = file(0o000);
        assert!(check_xattr_access(&record, &stranger(), b"security.selinux", false).is_ok());
        assert_eq!(
            errno(check_xattr_access(
                &record,
                &owner(),
                b"security.selinux",
                true
            )),
            libc::EPERM
        );
        assert!(check_xattr_access(&record, &Caller::root(), b"security.selinux", true).is_ok());
    }

    #[test]
    fn trusted_attributes_are_roots_and_hidden_from_others() {
        let record = file(0o666);
        assert_eq!(
            errno(check_xattr_access(&record, &owner(), b"trusted.t", true)),
            libc::EPERM
        );
        assert_eq!(
            errno(check_xattr_access(&record, &owner(), b"trusted.t", false)),
            libc::ENODATA
        );
        assert!(check_xattr_access(&file(0o000), &Caller::root(), b"trusted.t", true).is_ok());
        assert!(!xattr_listable(&owner(), b"trusted.t"));
        assert!(xattr_listable(&Caller::root(), b"trusted.t"));
        assert!(xattr_listable(&stranger(), b"user.u"));
        assert!(xattr_listable(&stranger(), b"security.s"));
    }

    #[test]
    fn user_attributes_follow_the_mode_bits() {
        let record = file(0o640);
        assert!(check_xattr_access(&record, &owner(), b"user.u", true).is_ok());
        assert!(check_xattr_access(&record, &member(), b"user.u", false).is_ok());
        assert_eq!(
            errno(check_xattr_access(&record, &member(), b"user.u", true)),
            libc::EACCES
        );
        assert_eq!(
            errno(check_xattr_access(&record, &stranger(), b"user.u", false)),
            libc::EACCES
        );
        assert!(check_xattr_access(&file(0o000), &Caller::root(), b"user.u", true).is_ok());
    }

    #[test]
    fn user_attributes_elsewhere_than_files_and_directories_are_refused() {
        let link = inode(FileType::Symlink, 0o777);
        assert_eq!(
            errno(check_xattr_access(&link, &owner(), b"user.u", true)),
            libc::EPERM
        );
        assert_eq!(
            errno(check_xattr_access(&link, &Caller::root(), b"user.u", false)),
            libc::ENODATA
        );
        let fifo = inode(FileType::Fifo, 0o666);
        assert_eq!(
            errno(check_xattr_access(&fifo, &stranger(), b"user.u", true)),
            libc::EPERM
        );
    }

    #[test]
    fn user_attributes_of_a_sticky_directory_are_written_by_its_owner_or_root() {
        let sticky = dir(0o1777);
        assert_eq!(
            errno(check_xattr_access(&sticky, &stranger(), b"user.u", true)),
            libc::EPERM
        );
        assert!(check_xattr_access(&sticky, &stranger(), b"user.u", false).is_ok());
        assert!(check_xattr_access(&sticky, &owner(), b"user.u", true).is_ok());
        assert!(check_xattr_access(&sticky, &Caller::root(), b"user.u", true).is_ok());
        assert!(check_xattr_access(&dir(0o777), &stranger(), b"user.u", true).is_ok());
    }

    #[test]
    fn errors_map_to_their_errno() {
        assert_eq!(PermissionError::Denied("x").errno(), libc::EACCES);
        assert_eq!(PermissionError::NotPermitted("x").errno(), libc::EPERM);
        assert_eq!(PermissionError::Hidden("x").errno(), libc::ENODATA);
    }
}
