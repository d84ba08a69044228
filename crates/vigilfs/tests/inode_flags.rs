//! Inode flags (`chattr`) through the engine API, as Linux enforces them:
//! an immutable file takes no change at all, from root either, not even
//! through a descriptor opened before; an append-only file only grows at
//! its end; directories with either flag keep their entries; no-atime
//! reads leave the access time; only the owner sets flags, only root the
//! immutable and append-only ones; flags survive a remount.

use std::sync::Arc;

use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
use vigilfs::fs::{Filesystem, FsError, MountOptions, OpenFlags, SetAttributes};
use vigilfs::inode::inode_flags::{APPEND, IMMUTABLE, NOATIME, NODUMP};
use vigilfs::inode::{Caller, FallocateMode, RenameFlags, SetTime, XattrFlags, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

fn fresh() -> (Arc<dyn BlockDevice>, Filesystem) {
    let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
    make_filesystem(device.clone(), &MkfsOptions::default()).expect("mkfs");
    let fs = Filesystem::mount(device.clone(), MountOptions::default()).expect("mount");
    (device, fs)
}

fn root() -> Caller {
    Caller::root()
}

fn errno<T: std::fmt::Debug>(result: Result<T, FsError>) -> i32 {
    result.expect_err("expected an error").errno()
}

fn open(fs: &Filesystem, ino: u64, flags: i32) -> Result<u64, FsError> {
    fs.open(ino, OpenFlags::from_libc(flags), &root())
}

/// A file holding "data", closed.
fn file_with_data(fs: &Filesystem, name: &[u8]) -> u64 {
    let (attr, handle) = fs
        .create(
            ROOT_INO,
            name,
            0o644,
            OpenFlags::from_libc(libc::O_RDWR),
            &root(),
        )
        .unwrap();
    fs.write(handle, 0, b"data", &root()).unwrap();
    fs.release(handle).unwrap();
    attr.ino
}

#[test]
fn an_immutable_file_takes_no_change_even_from_root_or_an_earlier_descriptor() {
    let (device, fs) = fresh();
    let file = file_with_data(&fs, b"f");
    let earlier = open(&fs, file, libc::O_RDWR).unwrap();
    fs.set_flags(file, IMMUTABLE, &root()).unwrap();
    assert_eq!(fs.get_flags(file).unwrap(), IMMUTABLE);
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(
            errno(open(&fs, file, flags)),
            libc::EPERM,
            "open {flags:#o}"
        );
    }
    assert_eq!(errno(fs.write(earlier, 0, b"x", &root())), libc::EPERM);
    assert_eq!(
        errno(fs.fallocate(earlier, 0, 4096, FallocateMode::KEEP_SIZE, &root())),
        libc::EPERM
    );
    for changes in [
        SetAttributes {
            mode: Some(0o600),
            ..SetAttributes::default()
        },
        SetAttributes {
            size: Some(0),
            ..SetAttributes::default()
        },
        SetAttributes {
            mtime: Some(SetTime::Now),
            ..SetAttributes::default()
        },
    ] {
        assert_eq!(
            errno(fs.setattr(file, &changes, None, &root())),
            libc::EPERM
        );
    }
    assert_eq!(errno(fs.unlink(ROOT_INO, b"f", &root())), libc::EPERM);
    assert_eq!(
        errno(fs.rename(
            ROOT_INO,
            b"f",
            ROOT_INO,
            b"g",
            RenameFlags::default(),
            &root()
        )),
        libc::EPERM
    );
    // A rename onto itself does nothing, and so is no change (vfs_rename).
    fs.rename(
        ROOT_INO,
        b"f",
        ROOT_INO,
        b"f",
        RenameFlags::default(),
        &root(),
    )
    .unwrap();
    // Replacing another name with an immutable file's is refused too.
    let (other, handle) = fs
        .create(ROOT_INO, b"other", 0o644, OpenFlags::default(), &root())
        .unwrap();
    fs.release(handle).unwrap();
    assert_eq!(
        errno(fs.rename(
            ROOT_INO,
            b"other",
            ROOT_INO,
            b"f",
            RenameFlags::default(),
            &root()
        )),
        libc::EPERM,
        "the target is pinned"
    );
    assert_eq!(
        fs.lookup(ROOT_INO, b"other", &root()).unwrap().ino,
        other.ino
    );
    assert_eq!(errno(fs.link(file, ROOT_INO, b"h", &root())), libc::EPERM);
    assert_eq!(
        errno(fs.setxattr(file, b"user.x", b"1", XattrFlags::default(), &root())),
        libc::EPERM
    );
    // Reading is still fine.
    assert_eq!(fs.read(earlier, 0, 16).unwrap(), b"data");
    fs.release(earlier).unwrap();
    fs.unmount().unwrap();
    // The flag is on disk: after a remount the file is still immutable,
    // until root clears it.
    let fs = Filesystem::mount(device, MountOptions::default()).unwrap();
    assert_eq!(fs.get_flags(file).unwrap(), IMMUTABLE);
    assert_eq!(errno(open(&fs, file, libc::O_WRONLY)), libc::EPERM);
    fs.set_flags(file, 0, &root()).unwrap();
    let handle = open(&fs, file, libc::O_WRONLY).unwrap();
    fs.write(handle, 0, b"DATA", &root()).unwrap();
    fs.release(handle).unwrap();
    fs.unlink(ROOT_INO, b"f", &root()).unwrap();
    fs.unmount().unwrap();
}

#[test]
fn an_append_only_file_only_grows_at_its_end() {
    let (_, fs) = fresh();
    let file = file_with_data(&fs, b"log");
    fs.set_flags(file, APPEND, &root()).unwrap();
    assert_eq!(errno(open(&fs, file, libc::O_WRONLY)), libc::EPERM);
    assert_eq!(
        errno(open(
            &fs,
            file,
            libc::O_WRONLY | libc::O_APPEND | libc::O_TRUNC
        )),
        libc::EPERM
    );
    let handle = open(&fs, file, libc::O_WRONLY | libc::O_APPEND).unwrap();
    fs.write(handle, 0, b"+more", &root()).unwrap();
    assert_eq!(
        errno(fs.fallocate(
            handle,
            0,
            4096,
            FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
            &root()
        )),
        libc::EPERM
    );
    fs.fallocate(handle, 0, 8192, FallocateMode::KEEP_SIZE, &root())
        .expect("a plain allocation is allowed");
    fs.release(handle).unwrap();
    let reader = open(&fs, file, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(reader, 0, 64).unwrap(), b"data+more");
    fs.release(reader).unwrap();
    let truncate = SetAttributes {
        size: Some(0),
        ..SetAttributes::default()
    };
    assert_eq!(
        errno(fs.setattr(file, &truncate, None, &root())),
        libc::EPERM
    );
    let touch = SetAttributes {
        mtime: Some(SetTime::Now),
        ..SetAttributes::default()
    };
    fs.setattr(file, &touch, None, &root())
        .expect("times set to now are allowed on an append-only file");
    assert_eq!(errno(fs.unlink(ROOT_INO, b"log", &root())), libc::EPERM);
}

#[test]
fn flagged_directories_keep_their_entries() {
    let (_, fs) = fresh();
    let frozen = fs.mkdir(ROOT_INO, b"frozen", 0o755, &root()).unwrap().ino;
    fs.mknod(frozen, b"inside", libc::S_IFREG | 0o644, 0, &root())
        .unwrap();
    fs.set_flags(frozen, IMMUTABLE, &root()).unwrap();
    assert_eq!(
        errno(fs.mknod(frozen, b"new", libc::S_IFREG | 0o644, 0, &root())),
        libc::EPERM
    );
    assert_eq!(errno(fs.unlink(frozen, b"inside", &root())), libc::EPERM);
    let growing = fs.mkdir(ROOT_INO, b"growing", 0o755, &root()).unwrap().ino;
    fs.set_flags(growing, APPEND, &root()).unwrap();
    fs.mknod(growing, b"new", libc::S_IFREG | 0o644, 0, &root())
        .expect("an append-only directory takes new entries");
    assert_eq!(errno(fs.unlink(growing, b"new", &root())), libc::EPERM);
    assert_eq!(
        errno(fs.rename(
            growing,
            b"new",
            ROOT_INO,
            b"out",
            RenameFlags::default(),
            &root()
        )),
        libc::EPERM
    );
}

#[test]
fn only_owners_set_flags_and_only_root_the_immutable_and_append_only_ones() {
    let (_, fs) = fresh();
    let file = file_with_data(&fs, b"f");
    let owner = Caller {
        uid: 1000,
        gid: 1000,
        groups: Default::default(),
        umask: 0,
    };
    let chown = SetAttributes {
        uid: Some(1000),
        ..SetAttributes::default()
    };
    fs.setattr(file, &chown, None, &root()).unwrap();
    fs.set_flags(file, NODUMP | NOATIME, &owner).unwrap();
    assert_eq!(errno(fs.set_flags(file, IMMUTABLE, &owner)), libc::EPERM);
    let stranger = Caller {
        uid: 1001,
        gid: 1001,
        ..owner.clone()
    };
    assert_eq!(errno(fs.set_flags(file, 0, &stranger)), libc::EPERM);
    assert_eq!(errno(fs.set_flags(file, 0x4000, &root())), libc::EOPNOTSUPP);
    assert_eq!(fs.get_flags(file).unwrap(), NODUMP | NOATIME);
}

#[test]
fn a_no_atime_file_keeps_its_access_time_when_read() {
    let (_, fs) = fresh();
    let file = file_with_data(&fs, b"f");
    fs.set_flags(file, NOATIME, &root()).unwrap();
    let past = SetAttributes {
        atime: Some(SetTime::At(vigilfs::inode::Timestamp {
            seconds: 1,
            nanoseconds: 0,
        })),
        ..SetAttributes::default()
    };
    fs.setattr(file, &past, None, &root()).unwrap();
    let handle = open(&fs, file, libc::O_RDONLY).unwrap();
    fs.read(handle, 0, 4).unwrap();
    fs.release(handle).unwrap();
    assert_eq!(fs.getattr(file).unwrap().record.atime.seconds, 1);
    fs.set_flags(file, 0, &root()).unwrap();
    let handle = open(&fs, file, libc::O_RDONLY).unwrap();
    fs.read(handle, 0, 4).unwrap();
    fs.release(handle).unwrap();
    assert!(
        fs.getattr(file).unwrap().record.atime.seconds > 1,
        "without the flag, a read of a day-old atime updates it"
    );
}
