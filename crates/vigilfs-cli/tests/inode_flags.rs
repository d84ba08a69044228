//! Inode flags through a real mount, with `chattr` and `lsattr`: an
//! immutable file refuses every change, even through a descriptor opened
//! before the flag and even to root; an append-only file takes only
//! appends; the flags survive a remount; `+S` and `+D` make writes and
//! entry changes durable without fsync (a crash-lab power cut keeps them).

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

#[test]
fn chattr_s_and_d_make_changes_durable_before_they_return() {
    if fuse_missing("chattr_s_and_d_make_changes_durable_before_they_return") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable"]);
    let (synchronous, plain, directory) =
        (scratch.at("sync"), scratch.at("plain"), scratch.at("dir"));
    fs::write(&synchronous, b"").unwrap();
    fs::write(&plain, b"").unwrap();
    fs::create_dir(&directory).unwrap();
    chattr("+S", synchronous.to_str().unwrap());
    chattr("+D", directory.to_str().unwrap());
    assert_eq!(lsattr(synchronous.to_str().unwrap()), "S");
    assert_eq!(lsattr(directory.to_str().unwrap()), "D");
    let synced = common::vigilfs(&["sync", scratch.mnt()]);
    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced.stderr));

    // No fsync anywhere from here.
    fs::write(&synchronous, b"durable on return").unwrap();
    fs::write(&plain, b"in memory only").unwrap();
    fs::write(directory.join("entry"), b"").unwrap();
    let cut = common::vigilfs(&["inject", scratch.mnt(), "--power-cut", "--json"]);
    assert_eq!(cut.status.code(), Some(0), "{}", text(&cut.stderr));

    assert_eq!(fs::read(&synchronous).unwrap(), b"durable on return");
    assert_eq!(
        fs::read(&plain).unwrap(),
        b"",
        "unflagged: lost, as it should be"
    );
    assert!(
        directory.join("entry").exists(),
        "the +D directory's new entry"
    );
    assert_eq!(lsattr(synchronous.to_str().unwrap()), "S");
    scratch.umount(pid);
}
