//! The mount API itself: `mount` returns once the mount answers and
//! refuses bad arguments, `Mounted::wait` returns after an unmount from
//! outside, `Mounted::unmount` waits for files still open (detaching the
//! mount lazily), and afterwards the caller holds the only reference to
//! the engine. A read-only engine is mounted `ro`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use vigilfs::fs::{Filesystem, MountOptions};
use vigilfs_fuse::{mount, MountConfig};

fn engine_unmount(filesystem: Arc<Filesystem>) {
    let filesystem = Arc::try_unwrap(filesystem).expect("the session let go of the engine");
    filesystem.unmount().expect("engine unmount");
}

#[test]
fn wait_returns_after_an_unmount_from_outside() {
    if !common::fuse_available() {
        return;
    }
    let (filesystem, _device) = common::fresh_engine(MountOptions::default());
    let directory = tempfile::tempdir().unwrap();
    let outside = fs::metadata(directory.path()).unwrap().dev();
    let mounted = mount(
        Arc::clone(&filesystem),
        directory.path(),
        &MountConfig {
            threads: 2,
            ..MountConfig::default()
        },
    )
    .unwrap();
    // Answering as soon as mount returned.
    assert_ne!(fs::metadata(directory.path()).unwrap().dev(), outside);
    fs::write(directory.path().join("f"), b"x").unwrap();
    let path = common::c_path(mounted.mountpoint());
    let waiter = thread::spawn(move || mounted.wait());
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::umount2(path.as_ptr(), 0) }, 0);
    waiter.join().unwrap().expect("the session ended cleanly");
    assert_eq!(fs::metadata(directory.path()).unwrap().dev(), outside);
    engine_unmount(filesystem);
}

#[test]
fn unmount_waits_for_files_still_open() {
    if !common::fuse_available() {
        return;
    }
    let (filesystem, _device) = common::fresh_engine(MountOptions::default());
    let directory = tempfile::tempdir().unwrap();
    let outside = fs::metadata(directory.path()).unwrap().dev();
    let mounted = mount(
        Arc::clone(&filesystem),
        directory.path(),
        &MountConfig::default(),
    )
    .unwrap();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(directory.path().join("open"))
        .unwrap();
    let unmounting = thread::spawn(move || mounted.unmount());
    thread::sleep(Duration::from_millis(300));
    assert!(!unmounting.is_finished(), "a file is still open");
    // Detached: the mount point shows the directory underneath again (once
    // the unmount thread got there), and the open file keeps working.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fs::metadata(directory.path()).unwrap().dev() != outside {
        assert!(std::time::Instant::now() < deadline, "never detached");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!unmounting.is_finished(), "a file is still open");
    file.write_all(b"still served").unwrap();
    common::fsync(&file).unwrap();
    drop(file);
    unmounting
        .join()
        .unwrap()
        .expect("unmount after the last close");
    engine_unmount(filesystem);
}

#[test]
fn a_read_only_engine_is_mounted_read_only() {
    if !common::fuse_available() {
        return;
    }
    let (filesystem, device) = common::fresh_engine(MountOptions::default());
    let directory = tempfile::tempdir().unwrap();
    let mounted = mount(
        Arc::clone(&filesystem),
        directory.path(),
        &MountConfig::default(),
    )
    .unwrap();
    fs::write(directory.path().join("kept"), b"written before").unwrap();
    mounted.unmount().unwrap();
    engine_unmount(filesystem);

    let filesystem = Arc::new(
        Filesystem::mount(
            device,
            MountOptions {
                read_only: true,
                ..MountOptions::default()
            },
        )
        .unwrap(),
    );
    let mounted = mount(
        Arc::clone(&filesystem),
        directory.path(),
        &MountConfig::default(),
    )
    .unwrap();
    let mut contents = String::new();
    fs::File::open(directory.path().join("kept"))
        .unwrap()
        .read_to_string(&mut contents)
        .unwrap();
    assert_eq!(contents, "written before");
    let error = fs::write(directory.path().join("new"), b"x").unwrap_err();
    assert_eq!(common::errno_of(&error), libc::EROFS);
    let statvfs = common::statvfs(directory.path()).unwrap();
    assert_ne!(statvfs.f_flag & libc::ST_RDONLY, 0, "mounted ro");
    mounted.unmount().unwrap();
    engine_unmount(filesystem);
}

#[test]
fn bad_arguments_are_refused_before_mounting() {
    if !common::fuse_available() {
        return;
    }
    let (filesystem, _device) = common::fresh_engine(MountOptions::default());
    let directory = tempfile::tempdir().unwrap();
    let no_threads = MountConfig {
        threads: 0,
        ..MountConfig::default()
    };
    let error = mount(Arc::clone(&filesystem), directory.path(), &no_threads).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    let missing = directory.path().join("missing");
    let error = mount(Arc::clone(&filesystem), &missing, &MountConfig::default()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert!(error.to_string().contains("missing"), "{error}");
    let file = directory.path().join("file");
    fs::write(&file, b"").unwrap();
    let error = mount(Arc::clone(&filesystem), &file, &MountConfig::default()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotADirectory);
    engine_unmount(filesystem);
}

/// The fields of this process's mountinfo line for `mountpoint`: the
/// filesystem type and the source.
fn mountinfo_type_and_source(mountpoint: &std::path::Path) -> Option<(String, String)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = mountpoint.to_str().unwrap().replace(' ', "\\040");
    mountinfo.lines().rev().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if before.split(' ').nth(4)? != wanted {
            return None;
        }
        let mut fields = after.split(' ');
        Some((fields.next()?.to_string(), fields.next()?.to_string()))
    })
}

#[test]
fn the_kernel_shows_the_type_as_fuse_vigilfs_and_the_source() {
    if !common::fuse_available() {
        return;
    }
    let (filesystem, _device) = common::fresh_engine(MountOptions::default());
    let directory = tempfile::tempdir().unwrap();
    let mounted = mount(
        Arc::clone(&filesystem),
        directory.path(),
        &MountConfig {
            source: Some("/srv/disk.img".into()),
            ..MountConfig::default()
        },
    )
    .unwrap();
    let shown = mountinfo_type_and_source(mounted.mountpoint());
    mounted.unmount().unwrap();
    engine_unmount(filesystem);
    assert_eq!(
        shown,
        Some(("fuse.vigilfs".to_string(), "/srv/disk.img".to_string()))
    );
}
