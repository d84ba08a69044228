//! Inode flags through a real mount, with `chattr` and `lsattr`: an
//! immutable file refuses every change, even through a descriptor opened
//! before the flag and even to root; an append-only file takes only
//! appends; the flags survive a remount.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::process::{Command, Output};

use common::{errno_of, fuse_missing, text, Scratch};

fn run(program: &str, arguments: &[&str]) -> Output {
    Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|error| panic!("{program} runs (Debian package e2fsprogs): {error}"))
}

fn chattr(change: &str, path: &str) {
    let output = run("chattr", &[change, path]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "chattr {change}: {}",
        text(&output.stderr)
    );
}

/// The flag letters `lsattr -d` shows for `path`.
fn lsattr(path: &str) -> String {
    let output = run("lsattr", &["-d", path]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "lsattr: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .replace('-', "")
}

#[test]
fn chattr_makes_files_immutable_and_append_only_through_the_mount() {
    if fuse_missing("chattr_makes_files_immutable_and_append_only_through_the_mount") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let file = scratch.at("file");
    let path = file.to_str().unwrap();
    fs::write(&file, b"kept").unwrap();
    let mut earlier = OpenOptions::new().append(true).open(&file).unwrap();
    chattr("+i", path);
    assert_eq!(lsattr(path), "i");
    // Root, the test's user, is refused too; so is the descriptor opened
    // before the flag.
    assert_eq!(errno_of(fs::write(&file, b"gone")), Some(libc::EPERM));
    assert_eq!(errno_of(earlier.write_all(b"more")), Some(libc::EPERM));
    assert_eq!(errno_of(fs::remove_file(&file)), Some(libc::EPERM));
    assert_eq!(
        errno_of(fs::rename(&file, scratch.at("moved"))),
        Some(libc::EPERM)
    );
    assert_eq!(fs::read(&file).unwrap(), b"kept");
    drop(earlier);
    scratch.umount(pid);

    let pid = scratch.mount(&[]);
    assert_eq!(lsattr(path), "i", "the flag is kept on disk");
    chattr("-i", path);
    chattr("+a", path);
    assert_eq!(lsattr(path), "a");
    assert_eq!(errno_of(fs::write(&file, b"over")), Some(libc::EPERM));
    OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut log| log.write_all(b"+added"))
        .expect("appending to an append-only file");
    assert_eq!(fs::read(&file).unwrap(), b"kept+added");
    assert_eq!(errno_of(fs::remove_file(&file)), Some(libc::EPERM));
    chattr("-a", path);
    fs::remove_file(&file).unwrap();
    scratch.umount(pid);
}
