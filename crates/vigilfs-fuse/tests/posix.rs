//! POSIX operations through the real kernel: a vigilfs mounted with FUSE
//! and used with std::fs and libc, as any program would. Each test mounts
//! its own fresh filesystem and ends with a clean unmount and fsck.

mod common;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{errno_of, Mount};

fn read_all(path: &std::path::Path) -> Vec<u8> {
    fs::read(path).expect("read")
}

#[test]
fn create_write_read_and_append() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let path = mount.join("file");
    fs::write(&path, b"hello").unwrap();
    assert_eq!(read_all(&path), b"hello");
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b", world").unwrap();
    drop(file);
    assert_eq!(read_all(&path), b"hello, world");
    // Positioned writes, a large write (several FUSE requests), reads back.
    let big: Vec<u8> = (0..3 << 20).map(|index: u32| (index % 251) as u8).collect();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(mount.join("big"))
        .unwrap();
    file.write_all_at(&big, 0).unwrap();
    file.write_all_at(b"middle", 1 << 20).unwrap();
    let mut back = vec![0u8; big.len()];
    file.read_exact_at(&mut back, 0).unwrap();
    let mut expected = big.clone();
    expected[1 << 20..(1 << 20) + 6].copy_from_slice(b"middle");
    assert!(back == expected, "the big file reads back as written");
    assert_eq!(file.metadata().unwrap().len(), big.len() as u64);
    drop(file);
    // O_TRUNC empties it.
    File::create(mount.join("big")).unwrap();
    assert_eq!(fs::metadata(mount.join("big")).unwrap().len(), 0);
    // O_EXCL on an existing name.
    let error = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap_err();
    assert_eq!(errno_of(&error), libc::EEXIST);
    mount.finish();
}

#[test]
fn data_survives_a_remount() {
    if !common::fuse_available() {
        return;
    }
    let mut mount = Mount::new();
    fs::create_dir(mount.join("dir")).unwrap();
    fs::write(mount.join("dir/kept"), vec![7u8; 100_000]).unwrap();
    mount.remount();
    assert_eq!(read_all(&mount.join("dir/kept")), vec![7u8; 100_000]);
    mount.finish();
}

#[test]
fn a_directory_of_1000_entries_lists_each_once() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let dir = mount.join("many");
    fs::create_dir(&dir).unwrap();
    let mut expected = HashSet::new();
    for index in 0..1000 {
        let name = format!("entry-with-a-longer-name-{index:04}");
        if index % 10 == 0 {
            fs::create_dir(dir.join(&name)).unwrap();
        } else {
            fs::write(dir.join(&name), index.to_string()).unwrap();
        }
        expected.insert(name);
    }
    for _ in 0..2 {
        let mut seen = HashSet::new();
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let is_dir = entry.file_type().unwrap().is_dir();
            assert_eq!(is_dir, name.ends_with('0'), "{name}: type from readdir");
            assert!(seen.insert(name.clone()), "{name} listed twice");
        }
        assert_eq!(seen, expected);
    }
    assert_eq!(
        errno_of(&fs::remove_dir(&dir).unwrap_err()),
        libc::ENOTEMPTY
    );
    // A subdirectory counts in the parent's link count.
    assert_eq!(fs::metadata(&dir).unwrap().nlink(), 2 + 100);
    for name in &expected {
        let path = dir.join(name);
        if name.ends_with('0') {
            fs::remove_dir(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
    }
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::remove_dir(&dir).unwrap();
    assert!(!dir.exists());
    mount.finish();
}

#[test]
fn rename_with_renameat2_flags() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let (a, b, c) = (mount.join("a"), mount.join("b"), mount.join("c"));
    fs::write(&a, b"A").unwrap();
    fs::write(&b, b"B").unwrap();
    // Plain rename replaces.
    fs::rename(&a, &c).unwrap();
    assert!(!a.exists());
    assert_eq!(read_all(&c), b"A");
    fs::write(&a, b"A2").unwrap();
    fs::rename(&a, &c).unwrap();
    assert_eq!(read_all(&c), b"A2");
    // NOREPLACE refuses an existing target, works on a new one.
    let error = common::renameat2(&b, &c, libc::RENAME_NOREPLACE).unwrap_err();
    assert_eq!(errno_of(&error), libc::EEXIST);
    common::renameat2(&b, &a, libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(read_all(&a), b"B");
    // EXCHANGE swaps; a missing side is ENOENT.
    common::renameat2(&a, &c, libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(read_all(&a), b"A2");
    assert_eq!(read_all(&c), b"B");
    let error = common::renameat2(&a, &mount.join("missing"), libc::RENAME_EXCHANGE).unwrap_err();
    assert_eq!(errno_of(&error), libc::ENOENT);
    // A file and a directory swap across directories.
    fs::create_dir_all(mount.join("d1/inner")).unwrap();
    fs::create_dir(mount.join("d2")).unwrap();
    common::renameat2(&mount.join("d1/inner"), &a, libc::RENAME_EXCHANGE).unwrap();
    assert!(fs::metadata(&a).unwrap().is_dir());
    assert_eq!(read_all(&mount.join("d1/inner")), b"A2");
    // WHITEOUT moves the file and leaves a character device 0:0 of mode 0
    // in its place (overlayfs's mark); not with EXCHANGE.
    common::renameat2(&c, &mount.join("w"), libc::RENAME_WHITEOUT).unwrap();
    assert_eq!(read_all(&mount.join("w")), b"B");
    let mark = fs::symlink_metadata(&c).unwrap();
    assert!(mark.file_type().is_char_device(), "{mark:?}");
    assert_eq!(
        (mark.mode(), mark.rdev(), mark.nlink()),
        (libc::S_IFCHR, 0, 1)
    );
    let error = common::renameat2(
        &mount.join("w"),
        &c,
        libc::RENAME_WHITEOUT | libc::RENAME_EXCHANGE,
    )
    .unwrap_err();
    assert_eq!(errno_of(&error), libc::EINVAL);
    // A directory moves into another one.
    fs::rename(mount.join("d1"), mount.join("d2/d1")).unwrap();
    assert_eq!(read_all(&mount.join("d2/d1/inner")), b"A2");
    assert_eq!(fs::metadata(mount.join("d2")).unwrap().nlink(), 3);
    mount.finish();
}

#[test]
fn hard_links_and_symlinks() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let (file, link) = (mount.join("file"), mount.join("link"));
    fs::write(&file, b"shared").unwrap();
    fs::hard_link(&file, &link).unwrap();
    let (one, two) = (fs::metadata(&file).unwrap(), fs::metadata(&link).unwrap());
    assert_eq!(one.ino(), two.ino());
    assert_eq!(two.nlink(), 2);
    fs::write(&link, b"changed through the link").unwrap();
    assert_eq!(read_all(&file), b"changed through the link");
    fs::remove_file(&file).unwrap();
    assert_eq!(fs::metadata(&link).unwrap().nlink(), 1);
    assert_eq!(read_all(&link), b"changed through the link");
    let error = fs::hard_link(&link, &link).unwrap_err();
    assert_eq!(errno_of(&error), libc::EEXIST);

    let symlink = mount.join("symlink");
    std::os::unix::fs::symlink("link", &symlink).unwrap();
    assert_eq!(
        fs::read_link(&symlink).unwrap(),
        std::path::Path::new("link")
    );
    assert!(fs::symlink_metadata(&symlink)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(read_all(&symlink), b"changed through the link");
    let dangling = mount.join("dangling");
    std::os::unix::fs::symlink("nowhere/at/all", &dangling).unwrap();
    assert_eq!(errno_of(&fs::read(&dangling).unwrap_err()), libc::ENOENT);
    // Targets as long as Linux takes (4,095 bytes; more than 1,024 was
    // ENAMETOOLONG), each read back whole, and stat's size is the length.
    for length in [1000, 1025, 4095] {
        let long_target: String = (0..length)
            .map(|at| (b'a' + (at % 26) as u8) as char)
            .collect();
        let long = mount.join(&format!("long{length}"));
        std::os::unix::fs::symlink(&long_target, &long).unwrap();
        assert_eq!(
            fs::read_link(&long).unwrap(),
            std::path::Path::new(&long_target)
        );
        assert_eq!(fs::symlink_metadata(&long).unwrap().len(), length as u64);
    }
    let too_long = "y".repeat(4096);
    let refused = std::os::unix::fs::symlink(&too_long, mount.join("over")).unwrap_err();
    assert_eq!(errno_of(&refused), libc::ENAMETOOLONG);
    mount.finish();
}

#[test]
fn an_unlinked_open_file_stays_readable_until_closed() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let path = mount.join("orphan");
    let contents = vec![3u8; 200_000];
    fs::write(&path, &contents).unwrap();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    fs::remove_file(&path).unwrap();
    assert!(!path.exists());
    let mut back = Vec::new();
    file.read_to_end(&mut back).unwrap();
    assert!(back == contents);
    // Still writable, and its link count is 0.
    file.write_all_at(b"late", 0).unwrap();
    let mut head = [0u8; 4];
    file.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"late");
    assert_eq!(file.metadata().unwrap().nlink(), 0);
    common::fsync(&file).unwrap();
    drop(file);
    // The kernel sends the release after close(2) returns: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while mount.engine().status().open_files != 0 {
        assert!(std::time::Instant::now() < deadline, "never released");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    mount.finish();
}

fn timespec(seconds: i64, nanoseconds: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: seconds,
        tv_nsec: nanoseconds,
    }
}

#[test]
fn chmod_chown_and_utimensat() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let path = mount.join("file");
    fs::write(&path, b"x").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o4755);
    std::os::unix::fs::chown(&path, Some(1000), Some(1001)).unwrap();
    let metadata = fs::metadata(&path).unwrap();
    assert_eq!((metadata.uid(), metadata.gid()), (1000, 1001));
    assert_eq!(metadata.mode() & 0o7777, 0o755, "chown clears set-user-id");

    common::utimensat(
        &path,
        timespec(1_000_000_000, 123_456_789),
        timespec(-1000, 5),
    )
    .unwrap();
    let metadata = fs::metadata(&path).unwrap();
    assert_eq!(
        (metadata.atime(), metadata.atime_nsec()),
        (1_000_000_000, 123_456_789)
    );
    assert_eq!((metadata.mtime(), metadata.mtime_nsec()), (-1000, 5));
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    common::utimensat(
        &path,
        timespec(0, libc::UTIME_OMIT),
        timespec(0, libc::UTIME_NOW),
    )
    .unwrap();
    let metadata = fs::metadata(&path).unwrap();
    assert_eq!(metadata.atime(), 1_000_000_000, "UTIME_OMIT keeps it");
    assert!(metadata.mtime() >= before, "UTIME_NOW");
    assert!(metadata.ctime() >= before);
    mount.finish();
}

#[test]
fn truncate_and_ftruncate() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let path = mount.join("file");
    fs::write(&path, vec![9u8; 10_000]).unwrap();
    let c_path = common::c_path(&path);
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::truncate(c_path.as_ptr(), 5000) }, 0);
    assert_eq!(read_all(&path), vec![9u8; 5000]);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.set_len(20_000).unwrap();
    let mut expected = vec![9u8; 5000];
    expected.resize(20_000, 0);
    assert!(read_all(&path) == expected, "extended with zeros");
    file.set_len(100).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 100);
    assert_eq!(read_all(&path), vec![9u8; 100]);
    drop(file);
    // A directory cannot be truncated.
    fs::create_dir(mount.join("dir")).unwrap();
    let c_dir = common::c_path(&mount.join("dir"));
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::truncate(c_dir.as_ptr(), 0) }, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EISDIR)
    );
    mount.finish();
}

#[test]
fn fallocate_punch_hole_and_seek_data_hole() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let path = mount.join("sparse");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all_at(&vec![1u8; 16384], 0).unwrap();
    common::fsync(&file).unwrap();
    common::fallocate(
        &file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        4096,
        4096,
    )
    .unwrap();
    assert_eq!(file.metadata().unwrap().len(), 16384, "KEEP_SIZE");
    let mut back = vec![0u8; 16384];
    file.read_exact_at(&mut back, 0).unwrap();
    let mut expected = vec![1u8; 16384];
    expected[4096..8192].fill(0);
    assert!(back == expected, "the punched range reads as zeros");
    assert_eq!(common::lseek(&file, 0, libc::SEEK_HOLE).unwrap(), 4096);
    assert_eq!(common::lseek(&file, 4096, libc::SEEK_DATA).unwrap(), 8192);
    assert_eq!(common::lseek(&file, 8192, libc::SEEK_HOLE).unwrap(), 16384);
    let error = common::lseek(&file, 16384, libc::SEEK_DATA).unwrap_err();
    assert_eq!(errno_of(&error), libc::ENXIO, "no data at the end");
    // Data far out, written but not yet synced, is found too.
    file.write_all_at(b"far", 1 << 20).unwrap();
    assert_eq!(
        common::lseek(&file, 16384, libc::SEEK_DATA).unwrap(),
        1 << 20
    );
    // Preallocation grows the size (mode 0) or not (KEEP_SIZE).
    let size = file.metadata().unwrap().len();
    common::fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, 0, 4 << 20).unwrap();
    assert_eq!(file.metadata().unwrap().len(), size);
    common::fallocate(&file, 0, 0, 4 << 20).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 4 << 20);
    // A hole punch without KEEP_SIZE is refused, as Linux does.
    let error = common::fallocate(&file, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096).unwrap_err();
    assert_eq!(errno_of(&error), libc::EOPNOTSUPP);
    // The ordinary whences are the kernel's.
    let mut handle = &file;
    assert_eq!(handle.seek(SeekFrom::End(-3)).unwrap(), (4 << 20) - 3);
    drop(file);
    mount.finish();
}

#[test]
fn extended_attributes() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let path = mount.join("file");
    fs::write(&path, b"x").unwrap();
    common::setxattr(&path, "user.colour", b"blue", 0).unwrap();
    common::setxattr(&path, "user.empty", b"", 0).unwrap();
    assert_eq!(common::getxattr_size(&path, "user.colour").unwrap(), 4);
    assert_eq!(common::getxattr(&path, "user.colour", 64).unwrap(), b"blue");
    assert_eq!(common::getxattr(&path, "user.empty", 64).unwrap(), b"");
    let error = common::getxattr(&path, "user.colour", 2).unwrap_err();
    assert_eq!(errno_of(&error), libc::ERANGE);
    let mut names = common::listxattr(&path).unwrap();
    names.sort();
    assert_eq!(names, ["user.colour", "user.empty"]);
    let error = common::listxattr_into(&path, 3).unwrap_err();
    assert_eq!(errno_of(&error), libc::ERANGE);
    let error = common::setxattr(&path, "user.colour", b"red", libc::XATTR_CREATE).unwrap_err();
    assert_eq!(errno_of(&error), libc::EEXIST);
    let error = common::setxattr(&path, "user.shape", b"round", libc::XATTR_REPLACE).unwrap_err();
    assert_eq!(errno_of(&error), libc::ENODATA);
    common::setxattr(&path, "user.colour", b"red", libc::XATTR_REPLACE).unwrap();
    assert_eq!(common::getxattr(&path, "user.colour", 64).unwrap(), b"red");
    common::removexattr(&path, "user.colour").unwrap();
    let error = common::getxattr(&path, "user.colour", 64).unwrap_err();
    assert_eq!(errno_of(&error), libc::ENODATA);
    let error = common::removexattr(&path, "user.colour").unwrap_err();
    assert_eq!(errno_of(&error), libc::ENODATA);
    // trusted.* is root's: this test runs as root.
    common::setxattr(&path, "trusted.mark", &[0, 1, 2], 0).unwrap();
    assert_eq!(
        common::getxattr(&path, "trusted.mark", 8).unwrap(),
        [0, 1, 2]
    );
    mount.finish();
}

#[test]
fn statfs_reports_space_and_inodes() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let before = common::statvfs(mount.path()).unwrap();
    assert_eq!(before.f_bsize, 4096);
    assert_eq!(before.f_namemax, 255);
    assert!(before.f_blocks > 0 && before.f_bfree <= before.f_blocks);
    assert!(before.f_bavail <= before.f_bfree);
    assert!(before.f_files >= before.f_ffree);
    let file = File::create(mount.join("file")).unwrap();
    (&file).write_all(&vec![1u8; 4 << 20]).unwrap();
    common::fsync(&file).unwrap();
    drop(file);
    let after = common::statvfs(mount.path()).unwrap();
    assert!(
        after.f_bfree + 1024 <= before.f_bfree,
        "4 MiB written: {} -> {} free blocks",
        before.f_bfree,
        after.f_bfree
    );
    assert!(after.f_ffree < before.f_ffree || after.f_files > before.f_files);
    mount.finish();
}

/// df -i: the inodes in use (f_files - f_ffree) are the inodes that
/// exist; they fall when files are deleted. The kernel sends the release
/// of a directory handle and the forget of an unlinked inode after the
/// system call returns, and the inode lives until both are handled: the
/// count may lag a deletion by that long.
#[test]
fn statfs_inodes_in_use_fall_when_files_are_deleted() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let in_use = || {
        let status = common::statvfs(mount.path()).unwrap();
        status.f_files - status.f_ffree
    };
    assert_eq!(in_use(), 1, "the root");
    fs::create_dir(mount.join("dir")).unwrap();
    for index in 0..20 {
        fs::write(mount.join("dir").join(index.to_string()), b"x").unwrap();
    }
    assert_eq!(in_use(), 22, "the root, dir and its 20 files");
    fs::remove_dir_all(mount.join("dir")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_use() != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(in_use(), 1);
    mount.finish();
}

/// The mount's newest recorded error is `errno` on inode `ino`.
fn assert_last_error(mount: &Mount, ino: u64, errno: i32) {
    let last = mount
        .engine()
        .status()
        .error_record
        .last
        .expect("an error on record");
    assert_eq!((last.inode, last.errno), (Some(ino), errno), "{last:?}");
}

/// A new, empty file `name`, open for reading and writing.
fn new_file(mount: &Mount, name: &str) -> File {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(mount.join(name))
        .unwrap()
}

/// A file `filler` written in MiBs until a write fails: the filesystem
/// full (not synced).
fn fill_up(mount: &Mount) -> File {
    let filler = File::create(mount.join("filler")).unwrap();
    let chunk = vec![7u8; 1 << 20];
    while (&filler).write_all(&chunk).is_ok() {}
    filler
}

/// Fills page `n` of the first `length` bytes of `file` with byte
/// `fill(n)` through a shared mapping (see
/// [`common::edit_through_mapping`]): msync's outcome.
fn write_through_mapping(
    file: &File,
    length: usize,
    fill: impl Fn(usize) -> u8,
) -> std::io::Result<()> {
    common::edit_through_mapping(file, length, |bytes| {
        for (page, chunk) in bytes.chunks_mut(4096).enumerate() {
            chunk.fill(fill(page));
        }
    })
}

/// An open of a file holding stores a full filesystem refused keeps the
/// kernel's pages of them: an open that would update the access time
/// drops the kernel's cache (so that a read reaches the mount), and that
/// made the refused stores read EIO, and a mapping's reads of them a
/// SIGBUS, while their processes must go on seeing what they wrote
/// (review 55).
#[test]
fn an_open_keeps_the_cached_pages_of_refused_mapped_stores() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let mapped = new_file(&mount, "mapped");
    mapped.write_all_at(&[b'b'; 4 * 4096], 0).unwrap();
    mapped.set_len(64 * 4096).unwrap();
    mapped.sync_all().unwrap();
    drop(fill_up(&mount));
    let refused = common::edit_through_mapping(&mapped, 64 * 4096, |bytes| {
        for page in 10..40 {
            bytes[page * 4096..page * 4096 + 4].copy_from_slice(b"NEW!");
        }
        // A rewrite of a written page, which the mount may take: it
        // changes the modification time, so the access time is due.
        bytes[..4].copy_from_slice(b"RW00");
    })
    .unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::ENOSPC));
    drop(File::open(mount.join("mapped")).unwrap());
    let mut seen = [0u8; 4];
    mapped.read_exact_at(&mut seen, 10 * 4096).unwrap();
    assert_eq!(&seen, b"NEW!");
}

/// Pages of a shared mapping reach the mount only when the kernel writes
/// them back; refused there (a full filesystem), they are lost, and the
/// mount says so: an error on record for the file, marked data lost, the
/// filesystem's writeback error (reported once to a syncfs), every later
/// fsync and every read of them failing until the pages are rewritten
/// (fsync_errors=until-durable: review 29 found the second fsync
/// succeeding, and zeros read back), and `unsynced` listing them as lost.
#[test]
fn refused_write_back_of_mapped_pages_is_recorded_as_data_lost() {
    if !common::fuse_available() {
        return;
    }
    let mut mount = Mount::new();
    let mapped = new_file(&mount, "mapped");
    mapped.set_len(1 << 20).unwrap();
    let ino = mapped.metadata().unwrap().ino();
    let filler = fill_up(&mount);
    drop(filler);
    let refused = write_through_mapping(&mapped, 1 << 20, |_| 0x5a)
        .expect_err("a full filesystem took 1 MiB of new blocks");
    assert_eq!(refused.raw_os_error(), Some(libc::ENOSPC));
    // The refused pages stay in the kernel's cache, as a failed write-back
    // leaves them on Linux: a shared mapping is shared memory too (SQLite's
    // WAL index), and pages dropped under the processes sharing them roll
    // that memory back (SQLite then overwrote WAL frames it had committed).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let seen = fs::read(mount.join("mapped")).unwrap();
    assert!(
        seen.iter().all(|&byte| byte == 0x5a),
        "the mapping's pages left the cache"
    );
    assert_last_error(&mount, ino, libc::ENOSPC);
    let engine = mount.engine();
    assert_eq!(engine.status().writeback_error, Some(libc::ENOSPC));
    let synced = engine.syncfs_once().map_err(|error| error.errno());
    assert_eq!(synced, Err(libc::ENOSPC), "vigilfs sync hears of the loss");
    assert_eq!(engine.syncfs_once().map_err(|error| error.errno()), Ok(()));
    for attempt in 0..2 {
        let fsynced = mapped.sync_all().map_err(|error| error.raw_os_error());
        assert_eq!(
            fsynced,
            Err(Some(libc::ENOSPC)),
            "fsync {attempt} after the loss"
        );
    }
    let unsynced = engine.unsynced();
    let listed = unsynced
        .data
        .iter()
        .find(|file| file.ino == ino)
        .expect("listed");
    assert_eq!(listed.lost, [(0, 1 << 20)]);
    assert_eq!(listed.lost_errno, Some(libc::ENOSPC));
    let status = engine.status();
    assert_eq!(
        (status.lost_mapped_files, status.lost_mapped_bytes),
        (1, 1 << 20)
    );
    // Once the kernel lets the pages go, reading them fails: it returned
    // zeros, silently (review 29).
    engine.drop_caches();
    let read = fs::read(mount.join("mapped")).map_err(|error| error.raw_os_error());
    assert_eq!(read, Err(Some(libc::EIO)));
    // The next mount knows too (review 30: it read the older bytes, and
    // fsync succeeded).
    drop((mapped, engine));
    mount.remount();
    let read = fs::read(mount.join("mapped")).map_err(|error| error.raw_os_error());
    assert_eq!(read, Err(Some(libc::EIO)), "after a remount");
    let mapped = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mount.join("mapped"))
        .unwrap();
    let fsynced = mapped.sync_all().map_err(|error| error.raw_os_error());
    assert_eq!(fsynced, Err(Some(libc::ENOSPC)), "fsync after a remount");
    let engine = mount.engine();
    assert_eq!(engine.status().lost_mapped_bytes, 1 << 20);
    // Its first sync hears of the loss, once (review 47: a loss the mount
    // started with went unheard by every sync).
    let synced = engine.syncfs_once().map_err(|error| error.errno());
    assert_eq!(synced, Err(libc::ENOSPC), "sync after a remount");
    // Rewritten whole (with room again), the file is whole and durable.
    fs::remove_file(mount.join("filler")).unwrap();
    mapped.write_all_at(&vec![0x33; 1 << 20], 0).unwrap();
    mapped.sync_all().unwrap();
    assert_eq!(engine.syncfs_once().map_err(|error| error.errno()), Ok(()));
    assert!(engine.unsynced().data.iter().all(|file| file.ino != ino));
    assert_eq!(engine.status().lost_mapped_files, 0);
    drop(mapped);
    mount.finish();
}

/// Pages of a mapping that rewrite written blocks are taken on a full
/// filesystem, even one whose metadata creates filled too (SQLite's WAL
/// index, a database's mapped pages): msync succeeds and they are there
/// after a remount. Before rewrites had a tier of their own they were
/// refused at write-back and recorded as lost (this test fails there).
#[test]
fn mapped_rewrites_of_written_pages_are_taken_on_a_full_filesystem() {
    if !common::fuse_available() {
        return;
    }
    const MAPPED: usize = 64 << 10;
    let mut mount = Mount::new();
    let mapped = new_file(&mount, "mapped");
    (&mapped).write_all(&[1u8; MAPPED]).unwrap();
    mapped.sync_all().unwrap();
    let filler = fill_up(&mount);
    filler.sync_all().unwrap();
    drop(filler);
    let mut created = 0;
    while File::create(mount.join(&format!("empty{created}"))).is_ok() {
        created += 1;
    }
    assert!(created > 100, "{created} files");
    for round in 0..20u8 {
        write_through_mapping(&mapped, MAPPED, |page| round + page as u8)
            .unwrap_or_else(|error| panic!("msync of rewrite {round}: {error}"));
    }
    drop(mapped);
    mount.remount();
    let read = fs::read(mount.join("mapped")).unwrap();
    for (page, bytes) in read.chunks(4096).enumerate() {
        assert!(
            bytes.iter().all(|&byte| byte == 19 + page as u8),
            "page {page}"
        );
    }
    mount.finish();
}

/// A write-back the engine takes only in part (the filesystem fills up
/// during it) is no success: the kernel would take the short count as done
/// and mark the pages clean. The rest is refused and said so.
#[test]
fn write_back_of_mapped_pages_taken_in_part_reports_the_rest() {
    if !common::fuse_available() {
        return;
    }
    const MAPPED: usize = 4 << 20;
    let mount = Mount::new();
    let filler = fill_up(&mount);
    // Room for part of the mapping only, once the freed blocks are durable.
    let length = filler.metadata().unwrap().len();
    filler.set_len(length - (3 << 20)).unwrap();
    filler.sync_all().unwrap();
    drop(filler);
    let mapped = new_file(&mount, "mapped");
    mapped.set_len(MAPPED as u64).unwrap();
    let ino = mapped.metadata().unwrap().ino();
    let refused = write_through_mapping(&mapped, MAPPED, |page| b'A' + (page % 26) as u8)
        .expect_err("4 MiB of pages fitted in 3 MiB of room");
    assert_eq!(refused.raw_os_error(), Some(libc::ENOSPC));
    assert_last_error(&mount, ino, libc::ENOSPC);
    // Once the kernel's cache lets the pages go, each reads as written
    // (taken) or fails (refused: lost, and said so above).
    mount.engine().drop_caches();
    let (mut taken, mut lost) = (0, 0);
    for page in 0..MAPPED / 4096 {
        let mut bytes = [0u8; 4096];
        match mapped.read_exact_at(&mut bytes, page as u64 * 4096) {
            Ok(()) => {
                let written = b'A' + (page % 26) as u8;
                assert!(bytes.iter().all(|&byte| byte == written), "page {page}");
                taken += 1;
            }
            Err(error) => {
                assert_eq!(error.raw_os_error(), Some(libc::EIO), "page {page}");
                lost += 1;
            }
        }
    }
    assert!(taken > 0 && lost > 0, "{taken} pages taken, {lost} lost");
    // The loss is recorded on the image (fsck would report it) until the
    // file goes: then nothing of it is left.
    drop(mapped);
    fs::remove_file(mount.join("mapped")).unwrap();
    mount.finish();
}

#[test]
fn permissions_are_enforced_for_other_users() {
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::new();
    let private = mount.join("private");
    fs::write(&private, b"secret").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    let public = mount.join("public");
    fs::create_dir(&public).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o1777)).unwrap();
    // A child process as uid/gid 65534 (nobody): `cat` of the private file
    // fails, writing in the sticky public directory works.
    let run_as_nobody = |script: &str| {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("sh")
    };
    let denied = run_as_nobody(&format!("cat {}", private.display()));
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "{denied:?}"
    );
    let allowed = run_as_nobody(&format!("echo hi > {}/mine", public.display()));
    assert!(allowed.status.success(), "{allowed:?}");
    let mine = fs::metadata(public.join("mine")).unwrap();
    assert_eq!((mine.uid(), mine.gid()), (65534, 65534));
    // Root's file in the sticky directory cannot be removed by nobody.
    fs::write(public.join("roots"), b"r").unwrap();
    let refused = run_as_nobody(&format!("rm -f {}/roots", public.display()));
    assert!(!refused.status.success(), "{refused:?}");
    assert!(public.join("roots").exists());
    mount.finish();
}
