//! The permission rules for extended attributes: reading, writing,
//! removing and listing them by namespace (`security.`, `trusted.`,
//! `user.`, and the POSIX ACLs in `system.`); the parent module's comment
//! states the rules and their Linux sources.
//!
//! Pure functions, as the parent's. Names outside those namespaces are
//! not checked here: the attribute store refuses them.

use super::S_ISVTX;
use super::{check_access_with_acl, Access, Caller, PermResult, PermissionError};
use crate::inode::acl::Acl;
use crate::inode::inode_flags::is_pinned;
use crate::inode::record::{FileType, InodeRecord};

/// Whether `caller` may read (get) or, with `write`, set or remove the
/// extended attribute `name` of `record`; see the parent module's
/// comment. Names outside `security.`, `trusted.` and `user.` get no
/// check here: the attribute store refuses them.
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
