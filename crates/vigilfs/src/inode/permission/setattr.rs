//! The permission rules for changing an inode's attributes (chmod, chown,
//! utimes, truncate) and what a change of a file's data does to its mode;
//! the parent module's comment states the rules and their Linux sources.
//!
//! Pure functions, as the parent's: a check says whether the change is
//! allowed and which mode to store, and never changes the record itself.
//! Beyond what was asked, a mode is only ever adjusted by clearing set-id
//! bits, never by adding any.

use super::{check_access_with_acl, Access, Caller, PermResult, PermissionError};
use super::{S_ISGID, S_ISUID, S_IXGRP};
use crate::inode::acl::Acl;
use crate::inode::inode_flags::{is_immutable, is_pinned};
use crate::inode::record::{FileType, InodeRecord};

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
