//! `mount -o remount,...` through the mount helper, on a real mount
//! (fstests generic/294, 306, 452 remount read-only and back): the helper
//! changes the mount in place — read-only refuses writes with EROFS, back
//! to read-write accepts them, per-mount flags not named are kept — and
//! options the daemon took at mount cannot change. They need root and
//! /dev/fuse.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// Runs this build as the mount helper (`mount.fuse.vigilfs`, a symlink
/// in `directory`) with `arguments`, as mount(8) does.
fn helper(directory: &Path, arguments: &[&str]) -> Output {
    let link = directory.join("mount.fuse.vigilfs");
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(binary(), &link).unwrap();
    }
    Command::new(&link).args(arguments).output().unwrap()
}

fn flags(path: &Path) -> u64 {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs is plain old data; all zeros is a valid value.
    let mut status: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a writable struct for the call.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut status) }, 0);
    status.f_flag
}

#[test]
fn remount_read_only_and_back_keeps_the_mount_and_its_flags() {
    if fuse_missing("remount_read_only_and_back_keeps_the_mount_and_its_flags") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "nodev"]);
    fs::write(scratch.at("before"), b"written before").unwrap();
    let directory = scratch.directory.path();

    let output = helper(
        directory,
        &[scratch.img(), scratch.mnt(), "-o", "remount,ro"],
    );
    assert!(
        output.status.success(),
        "remount,ro: {}",
        text(&output.stderr)
    );
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
    let now = flags(&scratch.mountpoint);
    assert_ne!(now & libc::ST_RDONLY, 0, "read-only");
    assert_ne!(now & libc::ST_NODEV, 0, "nodev kept");
    let refused = fs::write(scratch.at("during"), b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS));
    assert_eq!(fs::read(scratch.at("before")).unwrap(), b"written before");

    let output = helper(
        directory,
        &[scratch.img(), scratch.mnt(), "-o", "remount,rw"],
    );
    assert!(
        output.status.success(),
        "remount,rw: {}",
        text(&output.stderr)
    );
    assert_eq!(flags(&scratch.mountpoint) & libc::ST_RDONLY, 0);
    fs::write(scratch.at("after"), b"written after").unwrap();

    // What the daemon took at mount cannot change now.
    let output = helper(
        directory,
        &[scratch.img(), scratch.mnt(), "-o", "remount,errors=panic"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("cannot change on a remount"));
    // The same daemon served it all.
    assert_eq!(scratch.status()["pid"].as_u64(), Some(u64::from(pid)));
    scratch.umount(pid);
    assert_eq!(
        superblock_state(&scratch.image),
        vigilfs::format::FsState::Clean
    );
}
