//! What a careless or hostile library caller, or a forged image, gets
//! from the engine API: a short read instead of an allocation as long as
//! the length asked for, Linux's errors for the names Linux refuses, mkfs
//! refusing a filesystem no mount could serve, O_TRUNC truncating with
//! any access mode, and a journal whose
//! sequence numbers a forged superblock pushed far ahead mounting in
//! bounded memory.

use std::sync::Arc;

use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
use vigilfs::format::{read_superblock, write_superblocks};
use vigilfs::fs::{Filesystem, FsError, MountOptions, OpenFlags, SetAttributes};
use vigilfs::fsck::fsck;
use vigilfs::inode::{Caller, MAX_READ_BYTES, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsError, MkfsOptions};

fn root() -> Caller {
    Caller::root()
}

fn read_write() -> OpenFlags {
    OpenFlags::from_libc(libc::O_RDWR)
}

fn errno<T: std::fmt::Debug>(result: Result<T, FsError>) -> i32 {
    result.expect_err("an error").errno()
}

fn fresh() -> (Arc<MemoryDevice>, Filesystem) {
    let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
    let device: Arc<dyn BlockDevice> = memory.clone();
    make_filesystem(device.clone(), &MkfsOptions::default()).expect("mkfs");
    let fs = Filesystem::mount(device, MountOptions::default()).expect("mount");
    (memory, fs)
}

/// `open(O_RDONLY | O_TRUNC)` truncates, as on Linux (after the same write
/// permission check as any O_TRUNC): the kernel takes a FUSE OPEN with
/// O_TRUNC to have truncated, and showed an empty file while the engine
/// kept its data.
#[test]
fn o_trunc_truncates_whatever_the_access_mode_after_the_write_check() {
    let (_, fs) = fresh();
    let (attr, handle) = fs
        .create(ROOT_INO, b"file", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"hello", &root()).unwrap();
    fs.release(handle).unwrap();
    let other = Caller {
        uid: 1000,
        gid: 1000,
        groups: Default::default(),
        umask: 0o022,
    };
    assert_eq!(
        errno(fs.open(
            attr.ino,
            OpenFlags::from_libc(libc::O_RDONLY | libc::O_TRUNC),
            &other
        )),
        libc::EACCES
    );
    assert_eq!(fs.getattr(attr.ino).unwrap().record.size, 5);
    let handle = fs
        .open(
            attr.ino,
            OpenFlags::from_libc(libc::O_RDONLY | libc::O_TRUNC),
            &root(),
        )
        .unwrap();
    assert_eq!(fs.getattr(attr.ino).unwrap().record.size, 0);
    assert_eq!(fs.read(handle, 0, 100).unwrap(), Vec::<u8>::new());
    fs.release(handle).unwrap();
}

/// Reading a symbolic link updates its access time as reading a file does
/// (relatime: an atime not after the mtime is updated).
#[test]
fn readlink_updates_the_access_time_of_the_link() {
    let (_, fs) = fresh();
    let link = fs.symlink(ROOT_INO, b"link", b"target", &root()).unwrap();
    let old = vigilfs::inode::Timestamp {
        seconds: 1_000_000_000,
        nanoseconds: 0,
    };
    let changes = SetAttributes {
        atime: Some(vigilfs::inode::SetTime::At(old)),
        mtime: Some(vigilfs::inode::SetTime::At(old)),
        ..SetAttributes::default()
    };
    fs.setattr(link.ino, &changes, None, &root()).unwrap();
    assert_eq!(fs.getattr(link.ino).unwrap().record.atime, old);
    assert_eq!(fs.readlink(link.ino).unwrap(), b"target");
    assert!(fs.getattr(link.ino).unwrap().record.atime > old);
}

/// A read of a sparse file of 2^60 bytes asking for all of it once
/// allocated the whole length up front: the process aborted. A read is
/// now at most `MAX_READ_BYTES`, and at or past the end reads nothing
/// (Linux's answer), where it was EFBIG.
#[test]
fn a_read_longer_than_the_limit_is_short_and_a_read_past_the_end_is_empty() {
    let (_, fs) = fresh();
    let (attr, handle) = fs
        .create(ROOT_INO, b"sparse", 0o644, read_write(), &root())
        .unwrap();
    let huge = SetAttributes {
        size: Some(1 << 60),
        ..SetAttributes::default()
    };
    fs.setattr(attr.ino, &huge, Some(handle), &root()).unwrap();
    let bytes = fs.read(handle, 0, usize::MAX).unwrap();
    assert_eq!(bytes.len(), MAX_READ_BYTES);
    assert!(bytes.iter().all(|&byte| byte == 0));
    drop(bytes);
    assert_eq!(fs.read(handle, 1 << 60, 1).unwrap(), Vec::<u8>::new());
    assert_eq!(fs.read(handle, u64::MAX, 0).unwrap(), Vec::<u8>::new());
    assert_eq!(
        fs.read(handle, u64::MAX, usize::MAX).unwrap(),
        Vec::<u8>::new()
    );

    let (_, small) = fs
        .create(ROOT_INO, b"small", 0o644, read_write(), &root())
        .unwrap();
    fs.write(small, 0, b"four", &root()).unwrap();
    assert_eq!(fs.read(small, 0, usize::MAX).unwrap(), b"four");
    fs.release(small).unwrap();
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
}

/// The kernel never sends these through FUSE; a library caller gets what
/// Linux's system calls say: `.` and `..` exist (EEXIST), an empty
/// symlink target names nothing (ENOENT).
#[test]
fn names_linux_refuses_get_linuxs_errors() {
    let (_, fs) = fresh();
    for name in [&b"."[..], b".."] {
        assert_eq!(
            errno(fs.create(ROOT_INO, name, 0o644, read_write(), &root())),
            libc::EEXIST
        );
        assert_eq!(
            errno(fs.mkdir(ROOT_INO, name, 0o755, &root())),
            libc::EEXIST
        );
        assert_eq!(
            errno(fs.symlink(ROOT_INO, name, b"target", &root())),
            libc::EEXIST
        );
    }
    assert_eq!(
        errno(fs.symlink(ROOT_INO, b"link", b"", &root())),
        libc::ENOENT
    );
    let (attr, handle) = fs
        .create(ROOT_INO, b"file", 0o644, read_write(), &root())
        .unwrap();
    assert_eq!(
        errno(fs.link(attr.ino, ROOT_INO, b"..", &root())),
        libc::EEXIST
    );
    // Names no system call may create stay EINVAL.
    assert_eq!(
        errno(fs.mkdir(ROOT_INO, b"a/b", 0o755, &root())),
        libc::EINVAL
    );
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
}

/// The layout can take any power-of-two block size, but file data is
/// cached and checksummed in 4 KiB pages: mkfs made 1 KiB and 64 KiB
/// filesystems that no mount would serve.
#[test]
fn mkfs_refuses_a_block_size_no_mount_serves() {
    for block_size in [1024, 8192, 65536] {
        let device: Arc<dyn BlockDevice> =
            Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
        let options = MkfsOptions {
            block_size,
            ..MkfsOptions::default()
        };
        let refused = make_filesystem(device, &options).unwrap_err();
        assert!(
            matches!(refused, MkfsError::BlockSizeNotMountable { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("4096"), "{refused}");
    }
}

/// A superblock whose clean-unmount seq is 2^40, checksum intact (forged,
/// or written by a bug): the mount reports the entries missing and the
/// journal goes on above it. The gap once cost one pin list per missing
/// seq, so the first commit tried to allocate terabytes.
#[test]
fn a_clean_unmount_seq_far_ahead_costs_no_memory_for_the_gap() {
    let (memory, fs) = fresh();
    let (_, handle) = fs
        .create(ROOT_INO, b"before", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"kept", &root()).unwrap();
    fs.fsync(handle, false).unwrap();
    fs.release(handle).unwrap();
    fs.unmount().unwrap();

    let mut superblock = read_superblock(memory.as_ref()).unwrap().superblock;
    superblock.clean_journal_seq = 1 << 40;
    write_superblocks(memory.as_ref(), &mut superblock).unwrap();

    let device: Arc<dyn BlockDevice> = memory.clone();
    let fs = Filesystem::mount(device.clone(), MountOptions::default()).expect("mount");
    for index in 0..20u8 {
        let (_, handle) = fs
            .create(
                ROOT_INO,
                &[b'f', b'0' + index],
                0o644,
                read_write(),
                &root(),
            )
            .unwrap();
        fs.write(handle, 0, &[index; 5000], &root()).unwrap();
        fs.fsync(handle, false).unwrap();
        fs.release(handle).unwrap();
    }
    fs.unmount().unwrap();
    let fs = Filesystem::mount(device.clone(), MountOptions::default()).expect("remount");
    let before = fs.lookup(ROOT_INO, b"before", &root()).unwrap();
    let handle = fs
        .open(before.ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    assert_eq!(fs.read(handle, 0, 100).unwrap(), b"kept");
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    let report = fsck(device, &mut |_| {}).expect("fsck");
    assert!(report.is_clean(), "{:#?}", report.problems);
}
