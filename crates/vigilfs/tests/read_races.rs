//! Reads racing writers, through the engine API: a read of several records
//! (an entry and its inode, a symlink and its target, an attribute and its
//! pieces) may see a commit land between its reads. That is a race, never
//! corruption: the reader gets what Linux gives (`ENOENT`, `ENODATA`, one
//! whole value or the other), and the `errors=` policy, which turns the
//! filesystem read-only on corruption, never hears of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
use vigilfs::fs::{Filesystem, FsError, LifeState, MountOptions};
use vigilfs::fsck::fsck;
use vigilfs::inode::{Caller, XattrFlags, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

const ROUNDS: usize = 1500;

fn mounted() -> (Arc<dyn BlockDevice>, Filesystem) {
    let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
    make_filesystem(device.clone(), &MkfsOptions::default()).expect("mkfs");
    let fs = Filesystem::mount(device.clone(), MountOptions::default()).expect("mount");
    (device, fs)
}

fn finish(device: Arc<dyn BlockDevice>, fs: Filesystem) {
    assert_eq!(fs.status().state, LifeState::Running);
    fs.unmount().expect("unmount");
    let report = fsck(device, &mut |_| {}).expect("fsck");
    assert!(report.is_clean(), "fsck: {:#?}", report.problems);
}

fn root() -> Caller {
    Caller::root()
}

/// Runs `write` `ROUNDS` times on one thread while `read` runs over and
/// over on another; every error `read` returns must be one `allowed` lists.
fn race(
    fs: &Filesystem,
    write: impl Fn(usize) + Send + Sync,
    read: impl Fn() -> Result<(), FsError> + Send + Sync,
    allowed: &[i32],
) {
    let done = AtomicBool::new(false);
    let mut reads = 0u64;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..ROUNDS {
                write(round);
            }
            done.store(true, Ordering::Release);
        });
        while !done.load(Ordering::Acquire) {
            if let Err(error) = read() {
                assert!(
                    allowed.contains(&error.errno()),
                    "read {reads}: {error} (errno {})",
                    error.errno()
                );
            }
            reads += 1;
        }
    });
    assert!(reads > 0);
    assert_eq!(fs.status().state, LifeState::Running);
}

#[test]
fn readlink_racing_unlink_is_enoent_never_corruption() {
    let (device, fs) = mounted();
    let current = AtomicU64::new(0);
    race(
        &fs,
        |_| {
            let attr = fs.symlink(ROOT_INO, b"link", b"target", &root()).unwrap();
            current.store(attr.ino, Ordering::Release);
            fs.unlink(ROOT_INO, b"link", &root()).unwrap();
        },
        || {
            fs.readlink(current.load(Ordering::Acquire))
                .map(|target| assert_eq!(target, b"target"))
        },
        &[libc::ENOENT],
    );
    finish(device, fs);
}

#[test]
fn lookup_racing_unlink_is_enoent_never_corruption() {
    let (device, fs) = mounted();
    race(
        &fs,
        |_| {
            fs.mknod(ROOT_INO, b"file", libc::S_IFREG | 0o644, 0, &root())
                .unwrap();
            fs.unlink(ROOT_INO, b"file", &root()).unwrap();
        },
        || fs.lookup(ROOT_INO, b"file", &root()).map(drop),
        &[libc::ENOENT],
    );
    finish(device, fs);
}

#[test]
fn getxattr_racing_unlink_is_enoent_or_enodata_never_corruption() {
    let (device, fs) = mounted();
    let value = vec![7u8; 200];
    let current = AtomicU64::new(0);
    race(
        &fs,
        |_| {
            let attr = fs
                .mknod(ROOT_INO, b"file", libc::S_IFREG | 0o644, 0, &root())
                .unwrap();
            fs.setxattr(
                attr.ino,
                b"user.tag",
                &value,
                XattrFlags::default(),
                &root(),
            )
            .unwrap();
            current.store(attr.ino, Ordering::Release);
            fs.unlink(ROOT_INO, b"file", &root()).unwrap();
        },
        || {
            fs.getxattr(current.load(Ordering::Acquire), b"user.tag", &root())
                .map(|read| assert_eq!(read, value))
        },
        &[libc::ENOENT, libc::ENODATA],
    );
    finish(device, fs);
}

/// A value too large for one record is kept in pieces: a reader sees one
/// whole value or the other while another thread replaces it by one of
/// another length, never the length of one with the pieces of the other.
#[test]
fn a_value_in_pieces_is_read_whole_while_it_is_replaced() {
    let (device, fs) = mounted();
    let attr = fs
        .mknod(ROOT_INO, b"file", libc::S_IFREG | 0o644, 0, &root())
        .unwrap();
    let values = [vec![b'a'; 60 << 10], vec![b'b'; 40 << 10]];
    fs.setxattr(
        attr.ino,
        b"user.big",
        &values[0],
        XattrFlags::default(),
        &root(),
    )
    .unwrap();
    race(
        &fs,
        |round| {
            fs.setxattr(
                attr.ino,
                b"user.big",
                &values[round % 2],
                XattrFlags::default(),
                &root(),
            )
            .unwrap();
        },
        || {
            let read = fs.getxattr(attr.ino, b"user.big", &root())?;
            assert!(values.contains(&read), "a torn value");
            Ok(())
        },
        &[],
    );
    finish(device, fs);
}
