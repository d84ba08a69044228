//! Where the kernel's writes land, through a real mount: Linux places
//! every write itself (it resolves `O_APPEND`, which `fcntl` may clear
//! after the open, and writes a shared mapping's pages back through any
//! writable descriptor), so the mount writes at the offset it is given;
//! only an append-only file still refuses writes away from its end. A
//! mapped store the file's flags forbid loses nothing of the file.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{edit_through_mapping, errno_of, set_inode_flags, set_status_flags, Mount};

const FS_IMMUTABLE_FL: libc::c_long = 0x10;
const FS_APPEND_FL: libc::c_long = 0x20;

fn open_appending(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_APPEND)
        .open(path)
        .unwrap()
}

/// A store through a shared mapping of a descriptor opened with
/// `O_APPEND` changes the bytes it was made to; the engine appended the
/// whole page at the end of the file, which grew from 8 KiB to 12 KiB
/// with the store at 9,096 and the old bytes at 5,000 (review 54).
#[test]
fn a_shared_mapping_of_an_append_descriptor_is_written_in_place() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let path = mount.path().join("mapped");
    fs::write(&path, [b'A'; 8192]).unwrap();
    let file = open_appending(&path);
    edit_through_mapping(&file, 8192, |bytes| {
        bytes[5000..5004].copy_from_slice(b"EVIL");
    })
    .unwrap();
    file.sync_all().unwrap();
    drop(file);
    let mut expected = vec![b'A'; 8192];
    expected[5000..5004].copy_from_slice(b"EVIL");
    assert_eq!(fs::read(&path).unwrap(), expected);
}

/// `fcntl(F_SETFL)` clearing `O_APPEND` is the kernel's alone: a later
/// `pwrite` writes at its offset. The engine kept appending for the
/// descriptor's open flags (review 54: the bytes went to the end, and a
/// later append overwrote them where the kernel thought the end was).
#[test]
fn a_write_after_fcntl_clears_o_append_lands_at_its_offset() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let path = mount.path().join("log");
    fs::write(&path, [b'A'; 100]).unwrap();
    let file = open_appending(&path);
    set_status_flags(&file, libc::O_RDWR).unwrap();
    file.write_at(b"XY", 0).unwrap();
    drop(file);
    let file = open_appending(&path);
    // With O_APPEND, Linux appends even a pwrite.
    file.write_at(b"Q", 0).unwrap();
    drop(file);
    let mut expected = b"XY".to_vec();
    expected.extend([b'A'; 98]);
    expected.push(b'Q');
    assert_eq!(fs::read(&path).unwrap(), expected);
}

/// An append-only file takes writes at its end only: Linux refuses
/// clearing `O_APPEND` on it, but not through FUSE, so the mount refuses
/// the write that follows (`EPERM`), and a mapped store into it the same
/// way, the file unchanged.
#[test]
fn an_append_only_file_refuses_writes_away_from_its_end() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let path = mount.path().join("journal");
    fs::write(&path, [b'A'; 4096]).unwrap();
    set_inode_flags(&File::open(&path).unwrap(), FS_APPEND_FL).unwrap();
    let file = open_appending(&path);
    set_status_flags(&file, libc::O_RDWR).unwrap();
    let refused = file.write_at(b"X", 0).unwrap_err();
    assert_eq!(errno_of(&refused), libc::EPERM);
    file.write_at(b"end", 4096).unwrap();
    let refused =
        edit_through_mapping(&file, 4096, |bytes| bytes[..4].copy_from_slice(b"EVIL")).unwrap_err();
    assert_eq!(errno_of(&refused), libc::EPERM);
    let mut expected = vec![b'A'; 4096];
    expected.extend(b"end");
    assert_eq!(read_when(&path, &expected), expected);
    set_inode_flags(&file, 0).unwrap();
}

/// A mapped store into a file made immutable is refused (msync says
/// `EPERM`) and loses nothing: the file keeps its bytes and reads them,
/// as on Linux, where the store is refused at the page fault. The engine
/// recorded the refused bytes as lost, and the intact file read EIO for
/// good (review 54).
#[test]
fn a_mapped_store_an_immutable_file_refuses_leaves_the_file_readable() {
    if !common::fuse_available() {
        return;
    }
    let mut mount = Mount::new();
    let path = mount.path().join("fixed");
    fs::write(&path, b"hello world").unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.sync_all().unwrap();
    let stores = |bytes: &mut [u8]| bytes[1] = b'J';
    // The mapping is made before the file is immutable, as a program
    // holding one when `chattr +i` runs.
    let refused = edit_through_mapping(&file, 11, |bytes| {
        set_inode_flags(&File::open(&path).unwrap(), FS_IMMUTABLE_FL).unwrap();
        stores(bytes);
    })
    .unwrap_err();
    assert_eq!(errno_of(&refused), libc::EPERM);
    drop(file);
    // The kernel's cached page held the refused byte until the mount
    // dropped it.
    assert_eq!(read_when(&path, b"hello world"), b"hello world");
    mount.remount();
    let path = mount.path().join("fixed");
    assert_eq!(fs::read(&path).unwrap(), b"hello world");
    set_inode_flags(&File::open(&path).unwrap(), 0).unwrap();
}

/// The contents of `path` once they are `expected` (the mount drops the
/// kernel's stale pages from its own thread), or as they are after 10 s.
fn read_when(path: &Path, expected: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let contents = fs::read(path).unwrap();
        if contents == expected || Instant::now() >= deadline {
            return contents;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
