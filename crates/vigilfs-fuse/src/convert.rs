//! Conversions between the kernel's FUSE vocabulary (as fuser 0.18 hands
//! it over) and the engine's: attributes, times, the caller's credentials,
//! and the flag words of rename, setxattr and lseek.
//!
//! Invariants:
//! * Nothing here decides an errno for an engine error: those come from
//!   `FsError::errno()` alone (in the adapter). The only errnos made here
//!   are for requests the kernel's ABI itself rejects before the engine is
//!   asked (unknown flag bits: `EINVAL`, as the syscalls do).
//! * Every value the kernel or a user controls is converted without
//!   panicking: out-of-range numbers saturate or become an error.

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType as FuseFileType, INodeNo, TimeOrNow};
use vigilfs::fs::Attr;
use vigilfs::inode::{
    inode_flags, Caller, FileType, RenameFlags, Seek, SetTime, SupplementaryGroups, Timestamp,
    XattrFlags,
};

/// Block size `stat` reports (`st_blksize`): the engine's page size.
const PREFERRED_IO_BYTES: u32 = 4096;

/// `renameat2`'s `RENAME_NOREPLACE`.
const RENAME_NOREPLACE: u32 = 1;
/// `renameat2`'s `RENAME_EXCHANGE`.
const RENAME_EXCHANGE: u32 = 2;
/// `renameat2`'s `RENAME_WHITEOUT`.
const RENAME_WHITEOUT: u32 = 4;

/// `lseek`'s `SEEK_DATA`.
const SEEK_DATA: i32 = 3;
/// `lseek`'s `SEEK_HOLE`.
const SEEK_HOLE: i32 = 4;

/// The kernel's file type for an engine file type.
pub(crate) fn file_type(file_type: FileType) -> FuseFileType {
    match file_type {
        FileType::Regular => FuseFileType::RegularFile,
        FileType::Directory => FuseFileType::Directory,
        FileType::Symlink => FuseFileType::Symlink,
        FileType::CharDevice => FuseFileType::CharDevice,
        FileType::BlockDevice => FuseFileType::BlockDevice,
        FileType::Fifo => FuseFileType::NamedPipe,
        FileType::Socket => FuseFileType::Socket,
    }
}

/// A stored timestamp as a `SystemTime` (times before 1970 included).
pub(crate) fn system_time(time: Timestamp) -> SystemTime {
    let nanoseconds = Duration::from_nanos(u64::from(time.nanoseconds.min(999_999_999)));
    let moved = if time.seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(time.seconds.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(time.seconds.unsigned_abs()))
    };
    moved
        .and_then(|whole| whole.checked_add(nanoseconds))
        .unwrap_or(UNIX_EPOCH)
}

/// A `SystemTime` as a stored timestamp (seconds may be negative; the
/// nanoseconds are always the non-negative part, as in `struct timespec`).
pub(crate) fn timestamp(time: SystemTime) -> Timestamp {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => Timestamp {
            seconds: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            nanoseconds: after.subsec_nanos(),
        },
        Err(error) => {
            let before = error.duration();
            let seconds = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            if before.subsec_nanos() == 0 {
                Timestamp {
                    seconds: -seconds,
                    nanoseconds: 0,
                }
            } else {
                Timestamp {
                    seconds: -seconds - 1,
                    nanoseconds: 1_000_000_000 - before.subsec_nanos(),
                }
            }
        }
    }
}

/// `utimensat`'s time as the engine's: `UTIME_NOW` or an explicit time.
pub(crate) fn set_time(time: TimeOrNow) -> SetTime {
    match time {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(at) => SetTime::At(requested_timestamp(at)),
    }
}

/// The timestamp a setattr request carried, from the `SystemTime` fuser
/// 0.18 made of it. For times before the epoch fuser computes
/// `UNIX_EPOCH - Duration::new(-seconds, nanoseconds)`, which is wrong
/// when `nanoseconds` is not 0 (`tv_sec` -1000 with `tv_nsec` 5 means
/// -999.999999995 s, fuser makes -1000.000000005 s); this inverts exactly
/// what fuser did, so the kernel's (`tv_sec`, `tv_nsec`) reach the engine
/// unchanged. (Replies are converted correctly by fuser: only requests
/// need this; revisit when the fuser pin moves.)
fn requested_timestamp(time: SystemTime) -> Timestamp {
    match UNIX_EPOCH.duration_since(time) {
        Ok(before) if !before.is_zero() => Timestamp {
            seconds: -i64::try_from(before.as_secs()).unwrap_or(i64::MAX),
            nanoseconds: before.subsec_nanos(),
        },
        _ => timestamp(time),
    }
}

/// The attributes the kernel caches for an inode.
pub(crate) fn file_attr(attr: &Attr) -> FileAttr {
    let record = &attr.record;
    FileAttr {
        ino: INodeNo(attr.ino),
        size: record.size,
        blocks: attr.blocks,
        atime: system_time(record.atime),
        mtime: system_time(record.mtime),
        ctime: system_time(record.ctime),
        crtime: system_time(record.btime),
        kind: file_type(attr.file_type()),
        // 0o7777 fits in 16 bits.
        perm: u16::try_from(record.mode & 0o7777).unwrap_or(0),
        nlink: record.nlink,
        uid: record.uid,
        gid: record.gid,
        // The FUSE ABI carries a 32-bit device number (the kernel's
        // new_encode_dev form, which is what mknod handed the engine).
        rdev: u32::try_from(record.rdev).unwrap_or(u32::MAX),
        blksize: PREFERRED_IO_BYTES,
        flags: 0,
    }
}

/// Attributes for a listed name whose inode cannot be read (its record
/// is damaged, or missing): its number and type, nothing else. Sent valid
/// for no time, so the kernel asks for them again before any use, and that
/// request fails with the error.
pub(crate) fn unreadable_attr(ino: u64, kind: FileType) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: file_type(kind),
        perm: 0,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: PREFERRED_IO_BYTES,
        flags: 0,
    }
}

/// `renameat2` flags as the engine's; `None` for bits it does not know,
/// which the syscall refuses with `EINVAL`.
pub(crate) fn rename_flags(bits: u32) -> Option<RenameFlags> {
    if bits & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0 {
        return None;
    }
    Some(RenameFlags {
        noreplace: bits & RENAME_NOREPLACE != 0,
        exchange: bits & RENAME_EXCHANGE != 0,
        whiteout: bits & RENAME_WHITEOUT != 0,
    })
}

/// `setxattr` flags as the engine's; `None` for unknown bits (`EINVAL`).
pub(crate) fn xattr_flags(bits: i32) -> Option<XattrFlags> {
    if bits & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
        return None;
    }
    Some(XattrFlags {
        create: bits & libc::XATTR_CREATE != 0,
        replace: bits & libc::XATTR_REPLACE != 0,
    })
}

/// `lseek`'s whence, for the two the kernel forwards: `SEEK_DATA` and
/// `SEEK_HOLE`. `SEEK_SET`/`SEEK_CUR`/`SEEK_END` are the kernel's own
/// business and never should reach the filesystem: `None` (`EINVAL`).
pub(crate) fn seek(whence: i32) -> Option<Seek> {
    match whence {
        SEEK_DATA => Some(Seek::Data),
        SEEK_HOLE => Some(Seek::Hole),
        _ => None,
    }
}

/// SEEK_DATA/SEEK_HOLE from `offset` in a file of `size` bytes taken as
/// data throughout (what Linux's generic lseek answers): `None` past the
/// end (`ENXIO`).
pub(crate) fn seek_in_all_data(offset: u64, size: u64, whence: Seek) -> Option<u64> {
    if offset >= size {
        return None;
    }
    Some(match whence {
        Seek::Data => offset,
        Seek::Hole => size,
    })
}

/// The credentials of the process a request comes from: the kernel gives
/// the filesystem uid and gid in the request header; the supplementary
/// groups are read from `/proc/<pid>/status` (its `Groups:` line), and
/// only if a check of this request asks for them. That is best effort: a
/// process that is gone (or a request the kernel makes on its own, with
/// pid 0) has none.
pub(crate) fn caller(uid: u32, gid: u32, pid: u32) -> Caller {
    // Root passes every check without them (Linux's capability override):
    // never read /proc for it, the common case of a root-run workload.
    let groups = if pid == 0 || uid == 0 {
        SupplementaryGroups::default()
    } else {
        SupplementaryGroups::looked_up_when_needed(supplementary_groups, pid)
    };
    Caller {
        uid,
        gid,
        groups,
        umask: 0,
    }
}

fn supplementary_groups(pid: u32) -> Vec<u32> {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => parse_groups(&status),
        Err(_) => Vec::new(),
    }
}

/// The numbers of the `Groups:` line of a `/proc/<pid>/status` text.
fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|group| group.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes of `struct fsxattr` (`fsx_xflags`, `fsx_extsize`, `fsx_nextents`,
/// `fsx_projid`, `fsx_cowextsize`, 8 bytes of padding).
const FSXATTR_BYTES: usize = 28;
/// The `FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR` number's type byte (`'X'`),
/// which tells them from the plain flag ioctls (`'f'`).
const FSXATTR_IOCTL_TYPE: u32 = b'X' as u32;

fn is_fsxattr_ioctl(command: u32) -> bool {
    (command >> 8) & 0xff == FSXATTR_IOCTL_TYPE
}

/// The reply to a get-flags ioctl: the flags as a 4-byte value, or a
/// `struct fsxattr` holding them as `fsx_xflags`.
pub(crate) fn flags_reply(command: u32, flags: u32) -> Vec<u8> {
    if is_fsxattr_ioctl(command) {
        let mut reply = vec![0u8; FSXATTR_BYTES];
        reply[..4].copy_from_slice(&inode_flags::to_xflags(flags).to_ne_bytes());
        reply
    } else {
        flags.to_ne_bytes().to_vec()
    }
}

/// The flags a set-flags ioctl asks for, or `None` if its argument is too
/// short or names a flag vigilfs does not keep (the other `fsxattr` fields
/// are ignored: vigilfs has no extent size hints or projects).
pub(crate) fn flags_request(command: u32, argument: &[u8]) -> Option<u32> {
    let value = u32::from_ne_bytes(argument.get(..4)?.try_into().ok()?);
    if is_fsxattr_ioctl(command) {
        inode_flags::from_xflags(value)
    } else {
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_from_the_status_text() {
        let status = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 \nVmPeak:\t1 kB\n";
        assert_eq!(parse_groups(status), vec![4, 24, 27]);
        assert_eq!(parse_groups("Groups:\n"), Vec::<u32>::new());
        assert_eq!(parse_groups("Name:\tx\n"), Vec::<u32>::new());
    }

    #[test]
    fn the_current_process_groups_are_found_when_a_check_first_asks() {
        let status = fs::read_to_string("/proc/self/status").expect("own status");
        let own = caller(1000, 1000, std::process::id());
        assert_eq!(format!("{:?}", own.groups), "(not looked up)");
        assert_eq!(own.groups.list(), parse_groups(&status));
        assert_ne!(format!("{:?}", own.groups), "(not looked up)");
        assert!(
            caller(1000, 1000, 0).groups.list().is_empty(),
            "pid 0: the kernel itself"
        );
    }

    #[test]
    fn times_round_trip_before_and_after_the_epoch() {
        for time in [
            Timestamp {
                seconds: 0,
                nanoseconds: 0,
            },
            Timestamp {
                seconds: 1_700_000_000,
                nanoseconds: 123_456_789,
            },
            Timestamp {
                seconds: -1,
                nanoseconds: 500_000_000,
            },
            Timestamp {
                seconds: -86_400,
                nanoseconds: 0,
            },
        ] {
            assert_eq!(timestamp(system_time(time)), time);
        }
    }

    #[test]
    fn requested_times_before_the_epoch_are_the_kernels() {
        // What fuser 0.18 makes of (tv_sec -1000, tv_nsec 5).
        let from_fuser = UNIX_EPOCH - Duration::new(1000, 5);
        assert_eq!(
            requested_timestamp(from_fuser),
            Timestamp {
                seconds: -1000,
                nanoseconds: 5
            }
        );
        let after = UNIX_EPOCH + Duration::new(1000, 5);
        assert_eq!(
            requested_timestamp(after),
            Timestamp {
                seconds: 1000,
                nanoseconds: 5
            }
        );
        assert_eq!(requested_timestamp(UNIX_EPOCH), Timestamp::default());
    }

    #[test]
    fn flags_with_unknown_bits_are_refused() {
        assert_eq!(rename_flags(0), Some(RenameFlags::default()));
        assert_eq!(
            rename_flags(1),
            Some(RenameFlags {
                noreplace: true,
                ..RenameFlags::default()
            })
        );
        assert_eq!(
            rename_flags(2),
            Some(RenameFlags {
                exchange: true,
                ..RenameFlags::default()
            })
        );
        assert_eq!(
            rename_flags(4),
            Some(RenameFlags {
                whiteout: true,
                ..RenameFlags::default()
            })
        );
        assert_eq!(rename_flags(8), None);
        assert_eq!(xattr_flags(4), None);
        assert_eq!(seek(libc::SEEK_SET), None);
        assert_eq!(seek(libc::SEEK_DATA), Some(Seek::Data));
        assert_eq!(seek(libc::SEEK_HOLE), Some(Seek::Hole));
    }

    #[test]
    fn flag_ioctls_carry_flags_as_four_bytes_or_as_fsxattr_xflags() {
        use vigilfs::inode::inode_flags::{APPEND, IMMUTABLE, SYNC};
        const GETFLAGS: u32 = 0x8008_6601;
        const FSSETXATTR: u32 = 0x401c_5820;
        assert_eq!(
            flags_reply(GETFLAGS, IMMUTABLE),
            IMMUTABLE.to_ne_bytes().to_vec()
        );
        let mut fsxattr = flags_reply(0x801c_581f, IMMUTABLE | APPEND);
        assert_eq!(fsxattr.len(), FSXATTR_BYTES);
        assert_eq!(
            flags_request(FSSETXATTR, &fsxattr),
            Some(IMMUTABLE | APPEND)
        );
        fsxattr[0] |= 0x20; // FS_XFLAG_SYNC
        assert_eq!(
            flags_request(FSSETXATTR, &fsxattr),
            Some(IMMUTABLE | APPEND | SYNC)
        );
        fsxattr[0] |= 0x2; // FS_XFLAG_PREALLOC: not kept
        assert_eq!(flags_request(FSSETXATTR, &fsxattr), None);
        assert_eq!(flags_request(0x4008_6602, &[1, 2]), None, "too short");
    }
}
