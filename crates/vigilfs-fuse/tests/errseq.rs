//! Writeback-error reporting through the real kernel: the engine's errseq
//! semantics must reach `fsync(2)` and `close(2)` unchanged.
//!
//! Why they can hold with the kernel's page cache in front: the adapter
//! never enables FUSE's writeback cache, so the kernel writes through —
//! `write(2)` sends the data to the daemon and returns only after the
//! engine has it in its own page cache (checked below: the engine has
//! dirty bytes the moment `write(2)` returns). `fsync(2)` then sends
//! FUSE_FSYNC with the handle of that open file description (the kernel
//! opens one FUSE handle per `open(2)`), and the engine writes back and
//! answers from that handle's errseq cursor. `close(2)` sends FUSE_FLUSH,
//! which the engine answers without reporting (errors stay for fsync, as
//! on Linux local filesystems). `syncfs(2)` never reaches a FUSE server
//! (the control plane's `sync` does the engine's syncfs instead).

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::thread;
use std::time::{Duration, Instant};

use common::{errno_of, Mount};
use vigilfs::fs::MountOptions;

fn fsync_errno(file: &fs::File) -> i32 {
    match common::fsync(file) {
        Ok(()) => 0,
        Err(error) => errno_of(&error),
    }
}

#[test]
fn each_open_file_hears_of_a_writeback_error_exactly_once() {
    if !common::fuse_available() {
        return;
    }
    // No background writeback during the test: the fsyncs do it.
    let mount = Mount::with_options(MountOptions {
        writeback_interval: Duration::from_secs(3600),
        ..MountOptions::default()
    });
    let path = mount.join("file");
    let mut first = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let second = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    first.write_all(&vec![0xAB; 64 * 1024]).unwrap();
    assert!(
        mount.engine().status().dirty_bytes >= 64 * 1024,
        "write(2) returned after the engine had the data"
    );
    mount.fail_data_writes();
    assert_eq!(fsync_errno(&first), libc::EIO);
    assert_eq!(fsync_errno(&second), libc::EIO);
    mount.plan.clear();
    assert_eq!(
        fsync_errno(&first),
        0,
        "reported once, and the retry worked"
    );
    assert_eq!(fsync_errno(&second), 0);
    assert_eq!(mount.engine().status().dirty_bytes, 0);
    // close(2) reports nothing.
    common::close(first.into_raw_fd()).unwrap();
    common::close(second.into_raw_fd()).unwrap();
    // A monitor still sees the error (peek), and the data is intact.
    assert_eq!(mount.engine().status().writeback_error, Some(libc::EIO));
    assert_eq!(fs::read(&path).unwrap(), vec![0xAB; 64 * 1024]);
    mount.finish();
}

#[test]
fn an_error_nobody_saw_reaches_the_next_opener() {
    // generic/487's point: writeback fails while no file is open (here the
    // engine's background writeback, with nobody watching); the next
    // opener's fsync reports it, once.
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::with_options(MountOptions {
        writeback_interval: Duration::from_millis(20),
        ..MountOptions::default()
    });
    let path = mount.join("file");
    mount.fail_data_writes();
    let mut writer = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    writer.write_all(&vec![1u8; 8192]).unwrap();
    common::close(writer.into_raw_fd()).expect("close reports nothing");
    let deadline = Instant::now() + Duration::from_secs(10);
    while mount.engine().status().writeback_error.is_none() {
        assert!(
            Instant::now() < deadline,
            "background writeback never failed"
        );
        thread::sleep(Duration::from_millis(10));
    }
    mount.plan.clear();
    let reader = OpenOptions::new().read(true).open(&path).unwrap();
    assert_eq!(fsync_errno(&reader), libc::EIO, "the error nobody saw");
    assert_eq!(fsync_errno(&reader), 0, "once");
    let later = OpenOptions::new().read(true).open(&path).unwrap();
    assert_eq!(fsync_errno(&later), 0, "already reported to someone");
    common::close(reader.into_raw_fd()).unwrap();
    common::close(later.into_raw_fd()).unwrap();
    assert_eq!(fs::read(&path).unwrap(), vec![1u8; 8192]);
    mount.finish();
}

#[test]
fn an_error_while_the_device_keeps_failing_is_reported_again() {
    // Each new failure is a new error: an fsync that fails twice in a row
    // because the device is still failing reports EIO twice.
    if !common::fuse_available() {
        return;
    }
    let mount = Mount::with_options(MountOptions {
        writeback_interval: Duration::from_secs(3600),
        ..MountOptions::default()
    });
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(mount.join("file"))
        .unwrap();
    file.write_all(b"data").unwrap();
    mount.fail_data_writes();
    assert_eq!(fsync_errno(&file), libc::EIO);
    assert_eq!(fsync_errno(&file), libc::EIO, "still failing: a new error");
    mount.plan.clear();
    assert_eq!(fsync_errno(&file), 0);
    drop(file);
    mount.finish();
}
