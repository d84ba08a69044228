//! Inode flags, as `chattr` sets and `lsattr` shows them: the Linux
//! `FS_*_FL` bits kept in an inode record's `flags` field (their on-disk
//! meaning is Linux's numbering), and who may change them.
//!
//! Kept: immutable (`i`: no change to the data, the attributes, the names
//! or, for a directory, its entries), append-only (`a`: data only added at
//! the end, no truncation, no removal or renaming), no-dump (`d`: for
//! backup tools; vigilfs does nothing with it), no-atime (`A`: reads do
//! not update the access time), synchronous (`S`: a file's writes and
//! attribute changes are durable when they return; a directory's entry
//! changes too) and directory-synchronous (`D`: a directory's entry changes
//! are durable when they return; on a regular file it means nothing and is
//! dropped, as ext4 drops it). Any other bit is refused (`EOPNOTSUPP`), as
//! ext4 refuses flags it does not have.
//!
//! Rules (`fileattr_set_prepare`, `inode_owner_or_capable`): only the
//! owner or root may set flags (`EPERM`), and only root may change the
//! immutable or append-only bit (`CAP_LINUX_IMMUTABLE`). What each flag
//! forbids is enforced where the operation is checked: `permission/`
//! (write access, setattr, xattrs) and the mounted layer (open, removal,
//! links, fallocate, writes through descriptors opened before the flag).

use super::permission::{Caller, PermResult, PermissionError};
use super::record::{FileType, InodeRecord};

/// `FS_SYNC_FL`.
pub const SYNC: u32 = 0x8;
/// `FS_IMMUTABLE_FL`.
pub const IMMUTABLE: u32 = 0x10;
/// `FS_APPEND_FL`.
pub const APPEND: u32 = 0x20;
/// `FS_NODUMP_FL`.
pub const NODUMP: u32 = 0x40;
/// `FS_NOATIME_FL`.
pub const NOATIME: u32 = 0x80;
/// `FS_DIRSYNC_FL`.
pub const DIRSYNC: u32 = 0x10000;
/// Every flag vigilfs keeps.
pub const SUPPORTED: u32 = SYNC | IMMUTABLE | APPEND | NODUMP | NOATIME | DIRSYNC;
/// The flags only root may change.
const PRIVILEGED: u32 = IMMUTABLE | APPEND;

/// The same flags in `struct fsxattr`'s `fsx_xflags` (`FS_XFLAG_*`), as
/// `FS_IOC_FSGETXATTR` speaks them: (inode flag, xflag).
const XFLAGS: [(u32, u32); 5] = [
    (IMMUTABLE, 0x08),
    (SYNC, 0x20),
    (APPEND, 0x10),
    (NOATIME, 0x40),
    (NODUMP, 0x80),
];

/// The `fsx_xflags` of inode flags `flags`.
pub fn to_xflags(flags: u32) -> u32 {
    XFLAGS
        .iter()
        .filter(|(flag, _)| flags & flag != 0)
        .fold(0, |xflags, (_, xflag)| xflags | xflag)
}

/// The inode flags of `fsx_xflags`, or `None` if it holds one vigilfs does
/// not keep.
pub fn from_xflags(xflags: u32) -> Option<u32> {
    let known = XFLAGS.iter().fold(0, |all, (_, xflag)| all | xflag);
    (xflags & !known == 0).then(|| {
        XFLAGS
            .iter()
            .filter(|(_, xflag)| xflags & xflag != 0)
            .fold(0, |flags, (flag, _)| flags | flag)
    })
}

/// `current` with the flags `fsx_xflags` can express replaced by those of
/// `requested`: `FS_IOC_FSSETXATTR` leaves the others (`D`) as they are.
pub fn with_xflag_flags(current: u32, requested: u32) -> u32 {
    let visible = XFLAGS.iter().fold(0, |all, (flag, _)| all | flag);
    (current & !visible) | (requested & visible)
}

/// Whether `record` is immutable.
pub fn is_immutable(record: &InodeRecord) -> bool {
    record.flags & IMMUTABLE != 0
}

/// Whether `record` is append-only.
pub fn is_append_only(record: &InodeRecord) -> bool {
    record.flags & APPEND != 0
}

/// Whether changes to `record`'s data and attributes are durable when
/// they return (`S`).
pub fn is_synchronous(record: &InodeRecord) -> bool {
    record.flags & SYNC != 0
}

/// Whether changes to the entries of directory `record` are durable when
/// they return (`S` or `D`: Linux's `IS_DIRSYNC`).
pub fn syncs_entries(record: &InodeRecord) -> bool {
    record.file_type() == FileType::Directory && record.flags & (SYNC | DIRSYNC) != 0
}

/// The flags `record` keeps when asked for `flags`: `D` only on
/// directories. Call after [`check_flag_change`].
pub fn kept(record: &InodeRecord, flags: u32) -> u32 {
    if record.file_type() == FileType::Directory {
        flags
    } else {
        flags & !DIRSYNC
    }
}

/// The flags a new inode of `kind` takes from its directory `parent`, as
/// ext4 passes them down (`ext4_mask_flags`): synchronous (to files and
/// directories), directory-synchronous (to directories), no-atime and
/// no-dump (to every kind).
pub fn inherited(parent: &InodeRecord, kind: FileType) -> u32 {
    match kind {
        FileType::Directory => parent.flags & (SYNC | DIRSYNC | NOATIME | NODUMP),
        FileType::Regular => parent.flags & (SYNC | NOATIME | NODUMP),
        _ => parent.flags & (NOATIME | NODUMP),
    }
}

/// Whether `record` may not be removed, renamed or linked to (immutable or
/// append-only: `may_delete`, `vfs_link`).
pub fn is_pinned(record: &InodeRecord) -> bool {
    record.flags & (IMMUTABLE | APPEND) != 0
}

/// Why a flag change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagChangeError {
    /// A flag vigilfs does not keep (`EOPNOTSUPP`).
    Unsupported(u32),
    /// The caller may not (`EPERM`).
    Permission(PermissionError),
}

/// Whether `caller` may set `record`'s flags to `flags`.
pub fn check_flag_change(
    record: &InodeRecord,
    caller: &Caller,
    flags: u32,
) -> Result<(), FlagChangeError> {
    if flags & !SUPPORTED != 0 {
        return Err(FlagChangeError::Unsupported(flags & !SUPPORTED));
    }
    permitted(record, caller, flags).map_err(FlagChangeError::Permission)
}

fn permitted(record: &InodeRecord, caller: &Caller, flags: u32) -> PermResult<()> {
    if !matches!(record.file_type(), FileType::Regular | FileType::Directory) {
        return Err(PermissionError::NotPermitted(
            "flags are kept on regular files and directories only",
        ));
    }
    if !caller.is_root() && caller.uid != record.uid {
        return Err(PermissionError::NotPermitted(
            "only the owner or root may set inode flags",
        ));
    }
    if (record.flags ^ flags) & PRIVILEGED != 0 && !caller.is_root() {
        return Err(PermissionError::NotPermitted(
            "only root may change the immutable and append-only flags",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::record::Timestamp;

    fn record(kind: FileType, uid: u32, flags: u32) -> InodeRecord {
        InodeRecord {
            mode: kind.mode_bits() | 0o644,
            uid,
            gid: uid,
            nlink: 1,
            flags,
            size: 0,
            generation: 1,
            rdev: 0,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            btime: Timestamp::default(),
        }
    }

    fn user(uid: u32) -> Caller {
        Caller {
            uid,
            gid: uid,
            groups: Default::default(),
            umask: 0,
        }
    }

    #[test]
    fn xflags_roundtrip_and_unknown_ones_are_refused() {
        for flags in [0, IMMUTABLE, APPEND | NOATIME, SUPPORTED & !DIRSYNC] {
            assert_eq!(from_xflags(to_xflags(flags)), Some(flags));
        }
        assert_eq!(to_xflags(DIRSYNC), 0, "D has no xflag");
        assert_eq!(with_xflag_flags(DIRSYNC | NODUMP, SYNC), DIRSYNC | SYNC);
        assert_eq!(from_xflags(0x20), Some(SYNC), "FS_XFLAG_SYNC");
        assert_eq!(from_xflags(0x2), None, "FS_XFLAG_PREALLOC is not kept");
    }

    #[test]
    fn owners_set_the_plain_flags_and_only_root_the_privileged_ones() {
        let file = record(FileType::Regular, 1000, 0);
        assert_eq!(
            check_flag_change(&file, &user(1000), NOATIME | NODUMP),
            Ok(())
        );
        assert!(matches!(
            check_flag_change(&file, &user(1000), IMMUTABLE),
            Err(FlagChangeError::Permission(_))
        ));
        assert!(matches!(
            check_flag_change(&file, &user(1001), NODUMP),
            Err(FlagChangeError::Permission(_))
        ));
        assert_eq!(
            check_flag_change(&file, &Caller::root(), IMMUTABLE | APPEND),
            Ok(())
        );
        // Keeping a privileged flag as it is needs no privilege.
        let immutable = record(FileType::Regular, 1000, IMMUTABLE);
        assert_eq!(
            check_flag_change(&immutable, &user(1000), IMMUTABLE | NODUMP),
            Ok(())
        );
        assert_eq!(
            check_flag_change(&file, &Caller::root(), 0x4000),
            Err(FlagChangeError::Unsupported(0x4000)),
            "FS_JOURNAL_DATA_FL"
        );
        assert_eq!(
            check_flag_change(&file, &user(1000), SYNC | DIRSYNC),
            Ok(())
        );
        assert_eq!(kept(&file, SYNC | DIRSYNC), SYNC, "D is for directories");
        let directory = record(FileType::Directory, 1000, DIRSYNC);
        assert_eq!(kept(&directory, SYNC | DIRSYNC), SYNC | DIRSYNC);
        assert!(syncs_entries(&directory) && !is_synchronous(&directory));
        assert!(!syncs_entries(&record(
            FileType::Regular,
            0,
            SYNC | DIRSYNC
        )));
        let parent = record(FileType::Directory, 0, SUPPORTED);
        assert_eq!(
            inherited(&parent, FileType::Directory),
            SYNC | DIRSYNC | NOATIME | NODUMP
        );
        assert_eq!(
            inherited(&parent, FileType::Regular),
            SYNC | NOATIME | NODUMP
        );
        assert_eq!(inherited(&parent, FileType::Symlink), NOATIME | NODUMP);
        let fifo = record(FileType::Fifo, 0, 0);
        assert!(check_flag_change(&fifo, &Caller::root(), NODUMP).is_err());
    }
}
