//! Inode flags, as `chattr` sets and `lsattr` shows them: the Linux
//! `FS_*_FL` bits kept in an inode record's `flags` field (their on-disk
//! meaning is Linux's numbering), and who may change them.
//!
//! Kept: immutable (`i`: no change to the data, the attributes, the names
//! or, for a directory, its entries), append-only (`a`: data only added at
//! the end, no truncation, no removal or renaming), no-dump (`d`: for
//! backup tools; vigilfs does nothing with it) and no-atime (`A`: reads do
//! not update the access time). Any other bit is refused (`EOPNOTSUPP`),
//! as ext4 refuses flags it does not have.
//!
//! Rules (`fileattr_set_prepare`, `inode_owner_or_capable`): only the
//! owner or root may set flags (`EPERM`), and only root may change the
//! immutable or append-only bit (`CAP_LINUX_IMMUTABLE`). What each flag
//! forbids is enforced where the operation is checked: `permission.rs`
//! (write access, setattr, xattrs) and the mounted layer (open, removal,
//! links, fallocate, writes through descriptors opened before the flag).

use super::permission::{Caller, PermResult, PermissionError};
use super::record::{FileType, InodeRecord};

/// `FS_IMMUTABLE_FL`.
pub const IMMUTABLE: u32 = 0x10;
/// `FS_APPEND_FL`.
pub const APPEND: u32 = 0x20;
/// `FS_NODUMP_FL`.
pub const NODUMP: u32 = 0x40;
/// `FS_NOATIME_FL`.
pub const NOATIME: u32 = 0x80;
/// Every flag vigilfs keeps.
pub const SUPPORTED: u32 = IMMUTABLE | APPEND | NODUMP | NOATIME;
/// The flags only root may change.
const PRIVILEGED: u32 = IMMUTABLE | APPEND;

/// The same flags in `struct fsxattr`'s `fsx_xflags` (`FS_XFLAG_*`), as
/// `FS_IOC_FSGETXATTR` speaks them: (inode flag, xflag).
const XFLAGS: [(u32, u32); 4] = [
    (IMMUTABLE, 0x08),
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

/// Whether `record` is immutable.
pub fn is_immutable(record: &InodeRecord) -> bool {
    record.flags & IMMUTABLE != 0
}

/// Whether `record` is append-only.
pub fn is_append_only(record: &InodeRecord) -> bool {
    record.flags & APPEND != 0
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
            groups: Vec::new(),
            umask: 0,
        }
    }

    #[test]
    fn xflags_roundtrip_and_unknown_ones_are_refused() {
        for flags in [0, IMMUTABLE, APPEND | NOATIME, SUPPORTED] {
            assert_eq!(from_xflags(to_xflags(flags)), Some(flags));
        }
        assert_eq!(from_xflags(0x20), None, "FS_XFLAG_SYNC is not kept");
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
            check_flag_change(&file, &Caller::root(), 0x8),
            Err(FlagChangeError::Unsupported(0x8))
        );
        let fifo = record(FileType::Fifo, 0, 0);
        assert!(check_flag_change(&fifo, &Caller::root(), NODUMP).is_err());
    }
}
