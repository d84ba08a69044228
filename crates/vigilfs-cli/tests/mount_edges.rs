//! The edges where errors used to be untrue, through a real mount on a
//! 64 MiB image, as a user meets them: space freed by a delete is usable at
//! once, writing far more than fits ends in ENOSPC with the daemon's memory
//! bounded, a full filesystem can be emptied and truncated without turning
//! read-only, fsync after a shutdown writes nothing and fails, the data a
//! shutdown drops is reported, a hole punch of 2^50 bytes on a small file
//! does no more work than the file has, and space fallocated before the
//! filesystem filled up takes writes after, and an `O_DIRECT` write
//! reaches the device and fails with it; a sparse image whose host
//! filesystem fills up gets ENOSPC and keeps its journal. They need root
//! and /dev/fuse.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

/// A recognisable MiB.
fn mebibyte(seed: usize) -> Vec<u8> {
    (0..MIB).map(|at| ((at * 31) ^ (seed * 7)) as u8).collect()
}

/// Appends whole MiBs to `path` until a write fails or `limit` MiB went in;
/// returns the bytes written and the error's errno, if any.
fn fill(path: &Path, limit: usize) -> (u64, Option<i32>) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut written = 0u64;
    for index in 0..limit {
        let bytes = mebibyte(index);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(0) => return (written, Some(libc::ENOSPC)),
                Ok(count) => {
                    written += count as u64;
                    rest = &rest[count..];
                }
                Err(error) => return (written, error.raw_os_error()),
            }
        }
    }
    (written, None)
}

/// Empty files in a directory `many` until a create fails: the metadata of
/// a filesystem whose data is full, filled too.
fn fill_with_empty_files(scratch: &Scratch) {
    fs::create_dir(scratch.at("many")).unwrap();
    let mut created = 0;
    while File::create(scratch.at(&format!("many/f{created:07}"))).is_ok() {
        created += 1;
    }
    assert!(created > 100, "{created} files filled the metadata");
}

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

fn errors_recorded(scratch: &Scratch, kind: &str) -> u64 {
    scratch.status()["errors"]["per_kind"][kind]["count"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_file_written_after_a_delete_gets_the_space_the_delete_freed() {
    if fuse_missing("a_file_written_after_a_delete_gets_the_space_the_delete_freed") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let (written, refused) = fill(&scratch.at("a"), 45);
    assert_eq!((written, refused), (45 * MIB as u64, None));
    File::open(scratch.at("a")).unwrap().sync_all().unwrap();
    fs::remove_file(scratch.at("a")).unwrap();
    let (written, refused) = fill(&scratch.at("b"), 45);
    assert_eq!(
        (written, refused),
        (45 * MIB as u64, None),
        "the space of a was not given back"
    );
    let file = File::open(scratch.at("b")).unwrap();
    file.sync_all().expect("fsync of b");
    file.sync_all().expect("fsync of b again");
    drop(file);
    assert_eq!(scratch.status()["errors"]["total"].as_u64(), Some(0));
    scratch.umount(pid);
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck.stdout));
}

#[test]
fn writing_150_mib_into_64_mib_ends_in_enospc_with_the_daemon_memory_bounded() {
    if fuse_missing("writing_150_mib_into_64_mib_ends_in_enospc_with_the_daemon_memory_bounded") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "dirty=4M,cache=16M"]);
    let before = resident_bytes(pid);
    let mut peak = before;
    let path = scratch.at("big");
    let mut file = File::create(&path).unwrap();
    let mut written = 0u64;
    let mut refusal = None;
    'writing: for index in 0..150 {
        let bytes = mebibyte(index);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(count) => {
                    written += count as u64;
                    rest = &rest[count..];
                }
                Err(error) => {
                    refusal = Some(error.kind());
                    break 'writing;
                }
            }
        }
        peak = peak.max(resident_bytes(pid));
    }
    assert_eq!(refusal, Some(ErrorKind::StorageFull), "150 MiB into 64 MiB");
    assert!(written > 50 * MIB as u64, "only {written} bytes went in");
    // Everything accepted is durable: fsync succeeds, nothing is lost.
    file.sync_all().expect("fsync of what write accepted");
    drop(file);
    peak = peak.max(resident_bytes(pid));
    eprintln!(
        "daemon RSS: {} MiB at mount, {} MiB at most while writing 150 MiB into 64 MiB",
        before >> 20,
        peak >> 20
    );
    // The cache (16 MiB), twice the dirty limit (8 MiB) and the pieces in
    // flight over the daemon's own size, with room for the b-tree node
    // cache and allocator slack: bounded, where 150 MiB written used to
    // grow it by as much.
    assert!(
        peak < before + (80 << 20),
        "RSS grew from {before} to {peak} bytes"
    );
    assert_eq!(errors_recorded(&scratch, "writeback"), 0);
    assert_eq!(fs::metadata(&path).unwrap().len(), written);
    scratch.umount(pid);
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck.stdout));
}

/// Memory the cache let go goes back to the system: after a user wrote
/// large files and deleted them, the daemon held its peak for good (review
/// 32: 900 MB resident with nothing cached, the allocator keeping what
/// the page cache freed).
#[test]
fn memory_the_cache_let_go_is_given_back_to_the_system() {
    if fuse_missing("memory_the_cache_let_go_is_given_back_to_the_system") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "512M"]);
    let before = resident_bytes(pid);
    for round in 0..2 {
        let path = scratch.at(&format!("big{round}"));
        let (written, refused) = fill(&path, 200);
        assert_eq!((written, refused), (200 * MIB as u64, None));
        fs::remove_file(&path).unwrap();
    }
    // The trim comes within seconds; a slow machine gets a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut resident = resident_bytes(pid);
    while resident > before + (64 << 20) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        resident = resident_bytes(pid);
    }
    assert!(
        resident <= before + (64 << 20),
        "{} MiB resident after the files went, {} MiB at mount",
        resident >> 20,
        before >> 20
    );
    scratch.umount(pid);
}

#[test]
fn a_full_filesystem_can_be_truncated_and_emptied_and_stays_writable() {
    if fuse_missing("a_full_filesystem_can_be_truncated_and_emptied_and_stays_writable") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "errors=remount-ro"]);
    let (written, refused) = fill(&scratch.at("big"), 200);
    assert_eq!(refused, Some(libc::ENOSPC), "after {written} bytes");
    File::open(scratch.at("big")).unwrap().sync_all().unwrap();
    // The last blocks, in small files.
    for number in 0.. {
        match fs::write(scratch.at(&format!("small{number}")), [7u8; 4096]) {
            Ok(()) => {}
            Err(_) => break,
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .open(scratch.at("big"))
        .unwrap();
    file.set_len(8 << 20)
        .expect("truncate on a full filesystem");
    drop(file);
    assert_eq!(scratch.status()["state"].as_str(), Some("running"));
    fs::remove_file(scratch.at("big")).expect("rm on a full filesystem");
    assert_eq!(scratch.status()["state"].as_str(), Some("running"));
    fs::write(scratch.at("after"), b"space again").expect("a write after the rm");
    assert_eq!(errors_recorded(&scratch, "metadata"), 0);
    scratch.umount(pid);
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck.stdout));
}

/// A filler written to the last byte (MiBs, then ever smaller appends),
/// then empty files created until the metadata is full too: `rm` of the
/// filler frees its space at once, and the filesystem mounts read-write
/// again. Deleting it needed more node blocks in one batch than the half of
/// the reserve creates leave: `rm` returned 0 with nothing freed, and every
/// later read-write mount failed deleting the orphan (found by a review
/// helper; fails on the old code).
#[test]
fn a_filler_is_freed_by_rm_after_creates_filled_the_metadata() {
    if fuse_missing("a_filler_is_freed_by_rm_after_creates_filled_the_metadata") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "256M"]);
    let filler = scratch.at("filler");
    let (written, refused) = fill(&filler, 300);
    assert_eq!(refused, Some(libc::ENOSPC), "after {written} bytes");
    let mut file = OpenOptions::new().append(true).open(&filler).unwrap();
    for chunk in [65536, 4096, 512, 1] {
        while file.write_all(&vec![b'F'; chunk]).is_ok() {}
    }
    file.sync_all().unwrap();
    drop(file);
    fill_with_empty_files(&scratch);
    fs::remove_file(&filler).expect("rm of the filler");
    let available = |scratch: &Scratch| {
        let status = statvfs(Path::new(scratch.mnt()));
        status.f_bavail * status.f_frsize
    };
    wait_until(
        "rm frees the filler's space",
        Duration::from_secs(10),
        || available(&scratch) > 200 << 20,
    );
    assert_eq!(scratch.status()["state"].as_str(), Some("running"));
    scratch.umount(pid);
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck.stdout));
    let pid = scratch.mount(&[]);
    assert!(available(&scratch) > 200 << 20);
    scratch.umount(pid);
}

/// Through the mount, on a full filesystem: a program rewriting its file
/// in place (pages, a database page across a block boundary, the partly
/// written last block) goes on and every fsync succeeds, as on ext4, while
/// an append is ENOSPC; after a remount the file holds every rewrite.
#[test]
fn rewrites_in_place_go_on_through_the_mount_of_a_full_filesystem() {
    use std::os::unix::fs::FileExt;
    if fuse_missing("rewrites_in_place_go_on_through_the_mount_of_a_full_filesystem") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let path = scratch.at("table");
    let size = 256 * 4096 - 100;
    let mut expected = vec![3u8; size];
    fs::write(&path, &expected).unwrap();
    File::open(&path).unwrap().sync_all().unwrap();
    let (written, refused) = fill(&scratch.at("big"), 200);
    assert_eq!(refused, Some(libc::ENOSPC), "after {written} bytes");
    File::open(scratch.at("big")).unwrap().sync_all().unwrap();
    for number in 0.. {
        if fs::write(scratch.at(&format!("small{number}")), [7u8; 4096]).is_err() {
            break;
        }
    }
    // The metadata too: creates leave writes into files' own space a part
    // of the reserve (they took it all; found by a review helper).
    fill_with_empty_files(&scratch);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    for round in 0..300usize {
        let offset = (round * 7919) % 240 * 4096 + if round % 2 == 1 { 2048 } else { 0 };
        let bytes = vec![(round % 240 + 10) as u8; 8192];
        file.write_all_at(&bytes, offset as u64)
            .unwrap_or_else(|error| panic!("rewrite {round} at {offset}: {error}"));
        expected[offset..offset + bytes.len()].copy_from_slice(&bytes);
        if round % 25 == 24 {
            file.sync_all()
                .unwrap_or_else(|error| panic!("fsync after rewrite {round}: {error}"));
        }
    }
    file.write_all_at(&[0xab; 100], size as u64)
        .expect("the partly written last block takes what it lacks");
    expected.extend_from_slice(&[0xab; 100]);
    file.sync_all().expect("fsync of every rewrite");
    let appended = file.write_all_at(&[1u8; 4096], expected.len() as u64);
    let appended = appended.and_then(|()| file.sync_all());
    assert_eq!(
        appended.map_err(|error| error.raw_os_error()),
        Err(Some(libc::ENOSPC)),
        "new data is still refused"
    );
    drop(file);
    assert_eq!(scratch.status()["state"].as_str(), Some("running"));
    scratch.umount(pid);
    let pid = scratch.mount(&[]);
    let read = fs::read(&path).unwrap();
    assert_eq!(read.len(), expected.len());
    assert!(read == expected, "every rewrite reads back after a remount");
    scratch.umount(pid);
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck.stdout));
}

#[test]
fn after_a_shutdown_fsync_fails_and_the_dropped_data_is_reported() {
    if fuse_missing("after_a_shutdown_fsync_fails_and_the_dropped_data_is_reported") {
        return;
    }
    let scratch = Scratch::new();
    // No background write-back may make the x's durable before the shutdown.
    let pid = scratch.mount(&["--size", "64M", "-o", "writeback_interval=600"]);
    let path = scratch.at("f");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all(b"durable").unwrap();
    file.sync_all().unwrap();
    let ino = fs::metadata(&path).map(|meta| std::os::unix::fs::MetadataExt::ino(&meta));
    file.write_all(&[b'x'; 3 * 4096]).unwrap();
    let clean = File::create(scratch.at("clean")).unwrap();
    clean.sync_all().unwrap();
    let output = vigilfs(&["shutdown", scratch.mnt(), "--noflush"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let synced = file.sync_all();
    assert_eq!(
        synced.as_ref().map_err(|error| error.raw_os_error()),
        Err(Some(libc::EIO)),
        "fsync after a shutdown"
    );
    // As on ext4 and XFS, even of a file with nothing to write.
    let synced = clean.sync_data();
    assert_eq!(
        synced.as_ref().map_err(|error| error.raw_os_error()),
        Err(Some(libc::EIO)),
        "fdatasync of a clean file after a shutdown"
    );
    drop((file, clean));
    let sync = vigilfs(&["sync", scratch.mnt()]);
    assert_eq!(sync.status.code(), Some(1), "vigilfs sync after a shutdown");
    scratch.umount(pid);
    let log = scratch.log();
    assert!(
        log.contains("data-lost") || log.contains("writeback"),
        "the log tells of the dropped data: {log}"
    );
    // The record names the file, after a remount; the data is not there.
    let pid = scratch.mount(&[]);
    let status = scratch.status();
    let last = &status["errors"]["last"];
    assert_eq!(last["inode"].as_u64(), ino.ok(), "{status}");
    assert_eq!(last["origin"].as_str(), Some("not written: writes stopped"));
    assert_eq!(fs::read(&path).unwrap(), b"durable");
    scratch.umount(pid);
}

#[test]
fn a_hole_punch_of_two_to_the_fifty_bytes_does_the_work_of_a_small_file() {
    if fuse_missing("a_hole_punch_of_two_to_the_fifty_bytes_does_the_work_of_a_small_file") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let path = scratch.at("small");
    fs::write(&path, vec![5u8; MIB]).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.sync_all().unwrap();
    let seq_before = scratch.status()["journal"]["next_seq"].as_u64().unwrap();
    let started = Instant::now();
    // SAFETY: fallocate on a file descriptor we own.
    let result = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            1 << 50,
        )
    };
    let took = started.elapsed();
    assert_eq!(result, 0, "{}", std::io::Error::last_os_error());
    let seq_after = scratch.status()["journal"]["next_seq"].as_u64().unwrap();
    eprintln!(
        "punch of 2^50 bytes on a 1 MiB file: {took:?}, {} journal entries",
        seq_after - seq_before
    );
    assert!(
        seq_after - seq_before <= 3,
        "{} journal entries for one small file",
        seq_after - seq_before
    );
    assert!(
        took < Duration::from_secs(30),
        "the punch hung for {took:?}"
    );
    drop(file);
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), MIB);
    assert!(bytes.iter().all(|&byte| byte == 0));
    // A freeze right after does not hang.
    let freeze = vigilfs(&["freeze", scratch.mnt()]);
    assert_eq!(freeze.status.code(), Some(0), "{}", text(&freeze.stderr));
    let thaw = vigilfs(&["thaw", scratch.mnt()]);
    assert_eq!(thaw.status.code(), Some(0), "{}", text(&thaw.stderr));
    scratch.umount(pid);
}

/// generic/274 as a user meets it: a file with 4 MiB fallocated past its
/// end (KEEP_SIZE), the filesystem filled to the last block by others,
/// then every other block of the fallocated space written with a fresh
/// open each (as `dd conv=notrunc` does), synced, and the blocks between.
#[test]
fn space_fallocated_before_the_filesystem_filled_takes_writes_after() {
    if fuse_missing("space_fallocated_before_the_filesystem_filled_takes_writes_after") {
        return;
    }
    use std::os::unix::fs::FileExt;
    const BLOCKS: u64 = 1024;
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "errors=remount-ro"]);
    let path = scratch.at("preallocated");
    fs::write(&path, [1u8; 4096]).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    // SAFETY: fallocate on a file descriptor we own.
    let result = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            4096,
            ((BLOCKS - 1) * 4096) as libc::off_t,
        )
    };
    assert_eq!(result, 0, "{}", std::io::Error::last_os_error());
    file.sync_all().unwrap();
    drop(file);
    let (written, refused) = fill(&scratch.at("big"), 200);
    assert_eq!(refused, Some(libc::ENOSPC), "after {written} bytes");
    File::open(scratch.at("big")).unwrap().sync_all().unwrap();
    for number in 0.. {
        if fs::write(scratch.at(&format!("small{number}")), [7u8; 4096]).is_err() {
            break;
        }
    }
    let block = |index: u64| vec![(index % 251) as u8 + 2; 4096];
    for pass in [1, 2] {
        for index in (pass..BLOCKS).step_by(2) {
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.write_all_at(&block(index), index * 4096)
                .unwrap_or_else(|error| panic!("write of block {index}: {error}"));
        }
        File::open(&path)
            .unwrap()
            .sync_all()
            .expect("fsync of the writes into fallocated space");
    }
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, BLOCKS * 4096);
    for index in 1..BLOCKS {
        let at = (index * 4096) as usize;
        assert!(bytes[at..at + 4096] == block(index)[..], "block {index}");
    }
    assert_eq!(scratch.status()["state"].as_str(), Some("running"));
    assert_eq!(errors_recorded(&scratch, "writeback"), 0);
    scratch.umount(pid);
    // What reached the image, not the kernel's cache: every data block
    // checked against its checksum, then read through a new mount.
    let fsck = vigilfs(&["fsck", "--data", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck.stdout));
    let pid = scratch.mount(&[]);
    assert_eq!(fs::read(&path).unwrap(), bytes, "after a remount");
    scratch.umount(pid);
}

#[test]
fn a_write_right_after_closing_a_deleted_file_gets_its_space() {
    if fuse_missing("a_write_right_after_closing_a_deleted_file_gets_its_space") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    for round in 0..5 {
        // Filled through a descriptor, deleted while open, closed: the
        // kernel sends the release after close() returned.
        let path = scratch.at(&format!("filler-{round}"));
        let mut filler = File::create(&path).unwrap();
        let chunk = mebibyte(round);
        loop {
            match filler.write(&chunk) {
                Ok(count) if count == chunk.len() => {}
                Ok(_) => break,
                Err(error) => {
                    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
                    break;
                }
            }
        }
        filler.sync_all().unwrap();
        fs::remove_file(&path).unwrap();
        drop(filler);
        let mut next = File::create(scratch.at(&format!("next-{round}"))).unwrap();
        next.write_all(&chunk)
            .unwrap_or_else(|error| panic!("round {round}: the space was not back: {error}"));
        next.sync_all().unwrap();
        drop(next);
        fs::remove_file(scratch.at(&format!("next-{round}"))).unwrap();
    }
    scratch.umount(pid);
}

/// The image given where its mount point belongs: the answer names the
/// mount point instead of saying nothing is mounted.
#[test]
fn a_command_given_the_mounted_image_names_its_mount_point() {
    if fuse_missing("image for mount point") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let wrong = vigilfs(&["status", scratch.img()]);
    assert_eq!(wrong.status.code(), Some(8));
    let said = text(&wrong.stderr);
    assert!(
        said.contains(&format!("mounted at {}", scratch.mnt())),
        "{said}"
    );
    scratch.umount(pid);
}

/// Writes `mebibytes` MiB to `path` (created), stopping at the first error:
/// how many MiB went in, and the error.
fn write_mebibytes(path: &Path, mebibytes: usize) -> (usize, Option<std::io::Error>) {
    let mut file = File::create(path).unwrap();
    for index in 0..mebibytes {
        if let Err(error) = file.write_all(&mebibyte(index)) {
            return (index, Some(error));
        }
    }
    (mebibytes, None)
}

/// One file whose data cannot be written keeps its dirty pages (to be
/// retried) and has its own writes refused; the other files' writers go on
/// (ext4 drops the failed pages: other files' writes go on there too).
/// Only when data that cannot be written fills four times `dirty=` is every
/// write refused, and that refusal is recorded with its reason.
#[test]
fn one_file_that_cannot_be_written_does_not_stop_the_other_writers() {
    if fuse_missing("one_file_that_cannot_be_written_does_not_stop_the_other_writers") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "128M", "-o", "dirty=2M"]);
    let rule = scratch.inject(&["--fail-writes", "--path", "bad*"]);
    assert_eq!(rule.status.code(), Some(0), "{}", text(&rule.stderr));
    let (taken, refused) = write_mebibytes(&scratch.at("bad-huge"), 32);
    assert!(
        refused.is_some(),
        "the failing file's own writes are refused"
    );
    assert!(taken < 32);
    let events = vigilfs(&["events", scratch.mnt()]);
    assert!(
        text(&events.stdout).contains("write refused: this file's data cannot be written back"),
        "{}",
        text(&events.stdout)
    );
    // Another file: written, and durable.
    let (taken, refused) = write_mebibytes(&scratch.at("innocent"), 24);
    assert!(refused.is_none(), "{refused:?} after {taken} MiB");
    File::open(scratch.at("innocent"))
        .unwrap()
        .sync_all()
        .expect("the other file's data is durable");
    // More files that cannot be written: their data piles up to four times
    // dirty=, and then every writer is refused, with the reason recorded.
    for index in 0..16 {
        let _ = write_mebibytes(&scratch.at(&format!("bad-{index}")), 1);
    }
    let (_, refused) = write_mebibytes(&scratch.at("innocent-2"), 4);
    assert!(
        refused.is_some(),
        "past four times dirty= every write waits for room"
    );
    // The reason whole (it was cut at the record's 56 bytes).
    let events = vigilfs(&["events", scratch.mnt()]);
    assert!(
        text(&events.stdout).contains("write refused: other files' unwritable data fills memory"),
        "{}",
        text(&events.stdout)
    );
    // Deleting what cannot be written gives the room back.
    for entry in fs::read_dir(scratch.mnt()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("bad")
        {
            fs::remove_file(path).unwrap();
        }
    }
    let (_, refused) = write_mebibytes(&scratch.at("innocent-3"), 4);
    assert!(refused.is_none(), "{refused:?}");
    scratch.inject(&["--clear"]);
    scratch.umount(pid);
}

/// An `O_DIRECT` write reaches the device before it returns, as on a disk:
/// a power cut after it loses nothing, and a device failure is that
/// write's own error (it was taken into the daemon's cache and succeeded,
/// the error waiting for an fsync). Whether a write is direct is the
/// descriptor's mode at the time of the write: fcntl can set it after open.
#[test]
fn a_direct_write_reaches_the_device_and_fails_with_it() {
    if fuse_missing("a_direct_write_reaches_the_device_and_fails_with_it") {
        return;
    }
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let open_direct = |name: &str| {
        OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(scratch.at(name))
            .unwrap()
    };
    open_direct("direct-kept")
        .write_all_at(&[7; 8192], 0)
        .unwrap();
    let unsynced = text(&vigilfs(&["unsynced", scratch.mnt()]).stdout);
    assert!(
        !unsynced.contains("direct-kept ("),
        "a direct write is on the device when it returns:\n{unsynced}"
    );

    let failing = open_direct("direct-bad");
    failing.write_all_at(&[9; 8192], 0).unwrap();
    let rule = scratch.inject(&["--fail-writes", "--path", "direct-bad*"]);
    assert_eq!(rule.status.code(), Some(0), "{}", text(&rule.stderr));
    let refused = failing.write_at(&[1; 4096], 0).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EIO), "{refused}");
    // Opened buffered, made direct by fcntl: its next write is direct. It
    // would extend the file, and failing, extends nothing.
    let switched = OpenOptions::new()
        .read(true)
        .write(true)
        .open(scratch.at("direct-bad"))
        .unwrap();
    // SAFETY: F_SETFL on a descriptor this test owns, with a valid flag set.
    let set = unsafe { libc::fcntl(switched.as_raw_fd(), libc::F_SETFL, libc::O_DIRECT) };
    assert_eq!(set, 0);
    let refused = switched.write_at(&[3; 4096], 8192).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EIO), "{refused}");
    assert_eq!(switched.metadata().unwrap().len(), 8192);

    // The device heals. A failed write may have changed the file: the
    // overwrite's pages, kept dirty, are written at the retry.
    scratch.inject(&["--clear"]);
    // The other descriptor's failure is news to this one (each open file
    // description hears of each failure once); then all is durable.
    let other = failing.sync_all().unwrap_err();
    assert_eq!(other.raw_os_error(), Some(libc::EIO), "{other}");
    failing.sync_all().unwrap();
    switched.sync_all().unwrap();
    let mut read_back = vec![0; 8192];
    failing.read_exact_at(&mut read_back, 0).unwrap();
    assert_eq!(read_back[..4096], [1; 4096]);
    assert_eq!(read_back[4096..], [9; 4096]);
    assert_eq!(failing.metadata().unwrap().len(), 8192);
    drop((failing, switched));
    scratch.umount(pid);
}

/// A tmpfs of `megabytes`, mounted over a new directory for the test and
/// unmounted (lazily, after whatever is mounted inside it) when dropped.
struct SmallHost {
    directory: tempfile::TempDir,
}

impl SmallHost {
    fn new(megabytes: u64) -> SmallHost {
        let directory = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}M"), "tmpfs"])
            .arg(directory.path())
            .status()
            .unwrap();
        assert!(mounted.success(), "mount -t tmpfs");
        SmallHost { directory }
    }

    fn path(&self) -> &Path {
        self.directory.path()
    }
}

impl Drop for SmallHost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.directory.path())
            .status();
    }
}

/// A 200 MiB sparse image on a 40 MiB host filesystem: the mount warns
/// that the image may outgrow its host; writing until the host is full
/// gets ENOSPC from fsync, never a false success, and the journal (whose
/// host blocks the mount reserved) keeps working: the filesystem stays
/// writable, as it was before the host filled. Before the reservation the
/// journal's own write failed with the host's ENOSPC and errors=remount-ro
/// turned the filesystem read-only.
#[test]
fn a_host_filesystem_that_fills_up_is_enospc_and_never_costs_the_journal() {
    if fuse_missing("a_host_filesystem_that_fills_up_is_enospc_and_never_costs_the_journal") {
        return;
    }
    let host = SmallHost::new(40);
    let image = host.path().join("big.img");
    let mountpoint = host.path().join("mnt");
    let log = host.path().join("log");
    let pid_file = host.path().join("pid");
    let output = vigilfs(&[
        "mount",
        image.to_str().unwrap(),
        mountpoint.to_str().unwrap(),
        "--size",
        "200M",
        "--daemon",
        "--log-file",
        log.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("may grow by"), "{logged}");
    // Said once where the mount was started: the image it created is
    // the one it opens, so the warning is not repeated.
    let said = text(&output.stderr);
    assert_eq!(said.matches("may grow by").count(), 1, "{said}");
    let mut file = File::create(mountpoint.join("filler")).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut refused = None;
    for round in 0..64 {
        let written = file.write_all(&chunk).and_then(|()| match round % 4 {
            3 => file.sync_all(),
            _ => Ok(()),
        });
        if let Err(error) = written {
            refused = Some(error);
            break;
        }
    }
    let refused = refused.expect("64 MiB fit on a 40 MiB host");
    assert_eq!(refused.raw_os_error(), Some(libc::ENOSPC), "{refused}");
    drop(file);
    // The namespace still changes: the journal was not hurt.
    fs::create_dir(mountpoint.join("after")).unwrap();
    let status = vigilfs(&["status", mountpoint.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    fs::remove_file(mountpoint.join("filler")).unwrap();
    let pid: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    umount_retrying_busy(&mountpoint);
    wait_until("the mount process exits", Duration::from_secs(60), || {
        process_gone(pid)
    });
    let checked = vigilfs(&["fsck", image.to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stdout));
}
