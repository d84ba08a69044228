//! A program replacing a file without fsyncing the new copy (write a new
//! file and rename it over the old, or truncate the old and write it
//! again) must not find it empty after a power cut that came after a later
//! commit: the new contents were written back before the commit that made
//! the replacement durable, as ext4 (`auto_da_alloc`) does. Before, any
//! other file's fsync made the rename (or the truncate) durable with the
//! new data still only in the cache, and the file came back empty: both
//! its old and its new contents lost.
//!
//! Each workload runs on a device with a volatile write cache; the power is
//! cut at every flush point in turn, and after the workload's last flush.
//! After each cut the file reads back as its old or its new contents,
//! never anything else; after the last flush, as its new contents.

use std::sync::Arc;
use std::time::Duration;

use vigilfs::device::{CrashDevice, CrashMode, MemoryDevice, SectorSize};
use vigilfs::fs::{Filesystem, MountOptions, OpenFlags};
use vigilfs::inode::{Caller, RenameFlags, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

const OLD: &[u8] = &[b'o'; 3 * 4096 + 100];
const NEW: &[u8] = &[b'n'; 5000];
/// A large new copy, written a page in every two (more than 8 MiB of dirty
/// pages, each a cache entry of its own: what a rename once left for the
/// next commit).
const NEW_LARGE_PAGES: usize = 2100;
const NEW_LARGE_BYTES: usize = NEW_LARGE_PAGES * 2 * 4096;

fn options() -> MountOptions {
    MountOptions {
        // No background writeback: only the replacement may write the new
        // contents back.
        writeback_interval: Duration::from_secs(3600),
        dirty_limit_bytes: u64::MAX / 4,
        ..MountOptions::default()
    }
}

fn read_write() -> OpenFlags {
    OpenFlags::from_libc(libc::O_RDWR)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Replacement {
    /// Write `file.new`, rename it over `file`.
    Rename,
    /// The same with a large new copy.
    RenameLarge,
    /// Open `file` with `O_TRUNC`, write it, close it.
    Truncate,
    /// The same, the other file's fsync coming before the close (as it
    /// may through the mount, where the kernel sends the close later).
    TruncateStillOpen,
}

impl Replacement {
    fn new_contents(self) -> Vec<u8> {
        match self {
            Replacement::RenameLarge => {
                let mut contents = vec![0; NEW_LARGE_BYTES - 4096];
                for page in (0..contents.len()).step_by(2 * 4096) {
                    contents[page..page + 4096].fill(b'N');
                }
                contents
            }
            _ => NEW.to_vec(),
        }
    }
}

/// Writes `file` with the old contents and makes it durable (then sets
/// `old_durable`), replaces it without an fsync, then fsyncs another file
/// (any program's commit). Stops at the first error (the power went).
fn workload(
    fs: &Filesystem,
    replacement: Replacement,
    old_durable: &mut bool,
) -> Result<(), vigilfs::fs::FsError> {
    let root = Caller::root();
    let (_, handle) = fs.create(ROOT_INO, b"file", 0o644, read_write(), &root)?;
    fs.write(handle, 0, OLD, &root)?;
    fs.fsync(handle, false)?;
    fs.release(handle)?;
    let (_, other) = fs.create(ROOT_INO, b"other", 0o644, read_write(), &root)?;
    fs.release(other)?;
    fs.syncfs_once()?;
    *old_durable = true;
    let mut still_open = None;
    match replacement {
        Replacement::Rename | Replacement::RenameLarge => {
            let (_, handle) = fs.create(ROOT_INO, b"file.new", 0o644, read_write(), &root)?;
            let contents = replacement.new_contents();
            if replacement == Replacement::RenameLarge {
                for page in (0..contents.len()).step_by(2 * 4096) {
                    fs.write(handle, page as u64, &contents[page..page + 4096], &root)?;
                }
            } else {
                fs.write(handle, 0, &contents, &root)?;
            }
            fs.release(handle)?;
            fs.rename(
                ROOT_INO,
                b"file.new",
                ROOT_INO,
                b"file",
                RenameFlags::default(),
                &root,
            )?;
        }
        Replacement::Truncate | Replacement::TruncateStillOpen => {
            let ino = fs.lookup(ROOT_INO, b"file", &root)?.ino;
            let truncating = OpenFlags::from_libc(libc::O_RDWR | libc::O_TRUNC);
            let handle = fs.open(ino, truncating, &root)?;
            fs.write(handle, 0, NEW, &root)?;
            if replacement == Replacement::Truncate {
                fs.release(handle)?;
            } else {
                still_open = Some(handle);
            }
        }
    }
    // Another program's commits: for a rename, first a small file renamed
    // over another, whose writeback flushes the journal on its own; then
    // an fsync. (A truncated file's data is ordered only before an fsync's
    // commit and at its close: any writeback's flush between the truncate
    // and the close may make the truncate durable first. Not checked.)
    if matches!(replacement, Replacement::Rename | Replacement::RenameLarge) {
        let (_, small) = fs.create(ROOT_INO, b"other.new", 0o644, read_write(), &root)?;
        fs.write(small, 0, b"another program's file", &root)?;
        fs.release(small)?;
        fs.rename(
            ROOT_INO,
            b"other.new",
            ROOT_INO,
            b"other",
            RenameFlags::default(),
            &root,
        )?;
    }
    let ino = fs.lookup(ROOT_INO, b"other", &root)?.ino;
    let other = fs.open(ino, read_write(), &root)?;
    fs.write(other, 0, b"another program's commit", &root)?;
    fs.fsync(other, false)?;
    fs.release(other)?;
    if let Some(handle) = still_open {
        fs.release(handle)?;
    }
    Ok(())
}

fn formatted_image() -> Vec<u8> {
    let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
    make_filesystem(memory.clone(), &MkfsOptions::default()).expect("mkfs");
    memory.to_image()
}

/// What `file` reads after the image `image` is mounted (and recovered).
fn contents_after(image: MemoryDevice, context: &str) -> Option<Vec<u8>> {
    let fs = Filesystem::mount(Arc::new(image), options())
        .unwrap_or_else(|error| panic!("{context}: mount after the crash: {error}"));
    let root = Caller::root();
    let contents = fs.lookup(ROOT_INO, b"file", &root).ok().map(|attr| {
        let handle = fs
            .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root)
            .unwrap();
        let mut contents = Vec::new();
        loop {
            let piece = fs
                .read(handle, contents.len() as u64, 1 << 20)
                .unwrap_or_else(|error| panic!("{context}: the file does not read back: {error}"));
            if piece.is_empty() {
                break;
            }
            contents.extend_from_slice(&piece);
        }
        fs.release(handle).unwrap();
        contents
    });
    fs.unmount()
        .unwrap_or_else(|error| panic!("{context}: unmount after recovery: {error}"));
    contents
}

fn describe(contents: &Option<Vec<u8>>) -> String {
    match contents {
        None => "gone".into(),
        Some(bytes) if bytes.is_empty() => "nothing (0 bytes)".into(),
        Some(bytes) if bytes == OLD => "the old contents".into(),
        Some(bytes) if bytes == NEW || bytes.len() == NEW_LARGE_BYTES - 4096 => {
            "the new contents".into()
        }
        Some(bytes) => format!("{} other bytes", bytes.len()),
    }
}

/// Runs the workload to its end, then cuts the power: everything its last
/// commit made durable stays, the rest of the cache is lost. The file holds
/// its new contents. Returns the image and how many flushes the run made.
fn power_cut_after_the_last_flush(replacement: Replacement) -> (Vec<u8>, u64) {
    let image = formatted_image();
    let device = Arc::new(CrashDevice::from_image(image.clone(), SectorSize::Bytes512));
    let fs = Filesystem::mount(device.clone(), options()).expect("mount");
    workload(&fs, replacement, &mut false).expect("the workload without a power cut");
    let context = format!("{replacement:?}, a power cut after the last flush");
    let after = contents_after(device.crash(CrashMode::DropUnflushed), &context);
    assert!(
        after == Some(replacement.new_contents()),
        "{context}: the file holds {}",
        describe(&after)
    );
    (image, device.flushes_issued())
}

fn cut_at_every_flush(replacement: Replacement) {
    let (image, flushes) = power_cut_after_the_last_flush(replacement);
    let new = replacement.new_contents();
    for cut in 1..=flushes {
        let device = Arc::new(CrashDevice::from_image(image.clone(), SectorSize::Bytes512));
        device.cut_power_at_flush(Some(cut));
        let mut old_durable = false;
        if let Ok(fs) = Filesystem::mount(device.clone(), options()) {
            let _ = workload(&fs, replacement, &mut old_durable);
        }
        for (mode_name, mode) in [
            ("drop", CrashMode::DropUnflushed),
            ("keep", CrashMode::KeepUnflushed),
            ("torn", CrashMode::Torn { seed: cut }),
        ] {
            let context =
                format!("{replacement:?}, power cut at flush {cut} of {flushes}, {mode_name}");
            let after = contents_after(device.crash(mode), &context);
            let acceptable = match after.as_deref() {
                Some(bytes) => bytes == OLD || bytes == new,
                // Before the old contents were durable, the file may not be.
                None => !old_durable,
            };
            assert!(acceptable, "{context}: the file holds {}", describe(&after));
        }
    }
}

/// With `auto_da_alloc` off (`-o noauto_da_alloc`, as ext4's), nothing is
/// written back for a replacement, so the crash lab shows what a program
/// that does not fsync its new copy loses on filesystems without it: the
/// other file's commit makes the replacement durable, and the new data is
/// not there (review 51: `crash-test` passed such a program every time).
#[test]
fn without_auto_da_alloc_an_unsynced_replacement_loses_its_new_contents() {
    for replacement in [Replacement::Rename, Replacement::Truncate] {
        let device = Arc::new(CrashDevice::from_image(
            formatted_image(),
            SectorSize::Bytes512,
        ));
        let unordered = MountOptions {
            auto_da_alloc: false,
            ..options()
        };
        let fs = Filesystem::mount(device.clone(), unordered).expect("mount");
        workload(&fs, replacement, &mut false).expect("the workload without a power cut");
        let context = format!("{replacement:?} without auto_da_alloc");
        let after = contents_after(device.crash(CrashMode::DropUnflushed), &context);
        assert!(
            after
                .as_deref()
                .is_some_and(|bytes| bytes != OLD && bytes != NEW),
            "{context}: the file holds {}",
            describe(&after)
        );
    }
}

#[test]
fn a_file_renamed_over_another_is_never_found_empty_after_a_power_cut() {
    cut_at_every_flush(Replacement::Rename);
}

#[test]
fn a_file_truncated_and_written_again_is_never_found_empty_after_its_close_and_a_commit() {
    cut_at_every_flush(Replacement::Truncate);
}

#[test]
fn a_file_truncated_and_written_again_keeps_its_new_contents_when_a_commit_comes_before_its_close()
{
    cut_at_every_flush(Replacement::TruncateStillOpen);
}

/// A large new copy too: the rename writes it back whatever its size. (It
/// was once left for the next fsync's commit, and any other flush of the
/// journal, a small rename's writeback say, made the rename durable first.)
#[test]
fn a_large_file_renamed_over_another_is_never_found_empty_after_a_power_cut() {
    cut_at_every_flush(Replacement::RenameLarge);
}

/// Reads `name` (whole) from a mounted `fs`, if it is there.
fn read_whole(fs: &Filesystem, name: &[u8]) -> Option<Vec<u8>> {
    let root = Caller::root();
    let attr = fs.lookup(ROOT_INO, name, &root).ok()?;
    let handle = fs
        .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root)
        .unwrap();
    let contents = fs.read(handle, 0, 1 << 20).unwrap();
    fs.release(handle).unwrap();
    Some(contents)
}

/// Ten files saved in a row as a shell's `echo new > f` saves them
/// (truncate, write, close), then another file's fsync, with a power cut
/// at every flush of the run: each file whose save was done (its close
/// returned) holds its old contents or its new, never nothing; the one
/// being saved at the cut may be empty (as on ext4, a commit between the
/// truncate and the close makes the truncate durable alone). A change
/// that handed the writeback of each save to the background thread failed
/// this: one file's writeback flushed the journal with the truncates of
/// the files saved after it, before their data (review 24).
#[test]
fn files_saved_in_a_row_are_never_found_empty_after_a_power_cut() {
    const FILES: usize = 10;
    let names: Vec<Vec<u8>> = (0..FILES).map(|at| format!("f{at}").into_bytes()).collect();
    // `saved`: how many saves were done; `None` until the old contents
    // were durable.
    let workload =
        |fs: &Filesystem, saved: &mut Option<usize>| -> Result<(), vigilfs::fs::FsError> {
            let root = Caller::root();
            for name in &names {
                let (_, handle) = fs.create(ROOT_INO, name, 0o644, read_write(), &root)?;
                fs.write(handle, 0, OLD, &root)?;
                fs.release(handle)?;
            }
            let (_, other) = fs.create(ROOT_INO, b"other", 0o644, read_write(), &root)?;
            fs.syncfs_once()?;
            *saved = Some(0);
            let truncating = OpenFlags::from_libc(libc::O_RDWR | libc::O_TRUNC);
            for (at, name) in names.iter().enumerate() {
                let ino = fs.lookup(ROOT_INO, name, &root)?.ino;
                let handle = fs.open(ino, truncating, &root)?;
                fs.write(handle, 0, NEW, &root)?;
                fs.release(handle)?;
                *saved = Some(at + 1);
            }
            fs.write(other, 0, b"another program's commit", &root)?;
            fs.fsync(other, false)?;
            fs.release(other)?;
            Ok(())
        };
    let image = formatted_image();
    let device = Arc::new(CrashDevice::from_image(image.clone(), SectorSize::Bytes512));
    let fs = Filesystem::mount(device.clone(), options()).expect("mount");
    workload(&fs, &mut None).expect("the workload without a power cut");
    drop(fs);
    let flushes = device.flushes_issued();
    for cut in 1..=flushes {
        let device = Arc::new(CrashDevice::from_image(image.clone(), SectorSize::Bytes512));
        device.cut_power_at_flush(Some(cut));
        let mut saved = None;
        if let Ok(fs) = Filesystem::mount(device.clone(), options()) {
            let _ = workload(&fs, &mut saved);
        }
        for (mode_name, mode) in [
            ("drop", CrashMode::DropUnflushed),
            ("torn", CrashMode::Torn { seed: cut }),
        ] {
            let context = format!("power cut at flush {cut} of {flushes}, {mode_name}");
            let fs = Filesystem::mount(Arc::new(device.crash(mode)), options())
                .unwrap_or_else(|error| panic!("{context}: mount after the crash: {error}"));
            for (at, name) in names.iter().enumerate() {
                let after = read_whole(&fs, name);
                let acceptable = match (saved, after.as_deref()) {
                    // Before the old contents were durable, anything.
                    (None, _) => true,
                    (Some(saved), Some(bytes)) if at < saved => bytes == OLD || bytes == NEW,
                    // Being saved at the cut.
                    (Some(saved), Some(_)) if at == saved => true,
                    (Some(_), Some(bytes)) => bytes == OLD,
                    (Some(_), None) => false,
                };
                assert!(
                    acceptable,
                    "{context}: {} (saves done: {saved:?}) holds {}",
                    String::from_utf8_lossy(name),
                    describe(&after)
                );
            }
            fs.unmount().expect("unmount after recovery");
        }
    }
}
