//! File data through the engine: write/fsync/read, copy-on-write overwrite,
//! durability across a remount, checksum verification, and errseq-exact
//! error reporting after failed writeback (xfstests generic/441, 484, 487),
//! all over a fault-injecting device.

mod common;

use common::{create, errno, extents, pattern, Fixture};
use vigilfs::device::{BlockDevice, Errno, FaultRule, IoClass, Operations};
use vigilfs::inode::{FileError, Files, FsyncErrors, Namespace, PAGE_BYTES};

#[test]
fn write_fsync_read_overwrite_and_remount() {
    let fixture = Fixture::new();
    let mut expected = pattern(3 * PAGE_BYTES + 100, 7);
    let ino;
    let middle_before;
    {
        let metadata = fixture.mount();
        ino = create(&metadata, b"data");
        let files = fixture.files(&metadata);
        let mut handle = files.open(ino).unwrap();
        assert_eq!(files.write(&handle, 0, &expected).unwrap(), expected.len());
        // Served from the page cache before writeback; short at the end.
        assert_eq!(files.read(&handle, 0, 1 << 20).unwrap(), expected);
        files.fsync(&mut handle).unwrap();
        assert_eq!(files.read(&handle, 0, 1 << 20).unwrap(), expected);
        let written = extents(&metadata, ino);
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0].1.blocks(), 4);
        middle_before = written[0].1.physical + 1;

        // Overwrite inside the second page: copy-on-write splits the extent.
        let patch = pattern(1000, 99);
        files
            .write(&handle, PAGE_BYTES as u64 + 50, &patch)
            .unwrap();
        expected[PAGE_BYTES + 50..PAGE_BYTES + 1050].copy_from_slice(&patch);
        files.fsync(&mut handle).unwrap();
        let split = extents(&metadata, ino);
        let offsets: Vec<(u64, u32)> = split
            .iter()
            .map(|(offset, extent)| (*offset, extent.blocks()))
            .collect();
        assert_eq!(offsets, [(0, 1), (1, 1), (2, 2)]);
        assert_ne!(split[1].1.physical, middle_before, "overwritten in place");
        assert_eq!(split[0].1.physical + 2, split[2].1.physical);
        // The old middle block is no longer owned by anyone.
        let owners = metadata
            .allocator
            .owners(&metadata.trees, middle_before, 1)
            .unwrap();
        assert!(owners.is_empty(), "{owners:?}");
        assert_eq!(files.read(&handle, 0, 1 << 20).unwrap(), expected);
        // A read past the end is empty; across the end, short.
        assert!(files.read(&handle, 1 << 20, 10).unwrap().is_empty());
        assert_eq!(
            files
                .read(&handle, expected.len() as u64 - 10, 100)
                .unwrap(),
            &expected[expected.len() - 10..]
        );
        files.release(handle);
        // No sync of the trees: the remount must replay the journal.
    }
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let handle = files.open(ino).unwrap();
    assert_eq!(files.size(&handle).unwrap(), expected.len() as u64);
    assert_eq!(files.read(&handle, 0, 1 << 20).unwrap(), expected);
    let record = Namespace::new(metadata.clone()).getattr(ino).unwrap();
    assert_eq!(record.size, expected.len() as u64);
    // A hole: write far away, the gap reads as zeros.
    let mut handle = handle;
    files
        .write(&handle, 10 * PAGE_BYTES as u64, b"tail")
        .unwrap();
    files.fsync(&mut handle).unwrap();
    let gap = files
        .read(
            &handle,
            expected.len() as u64,
            10 * PAGE_BYTES - expected.len(),
        )
        .unwrap();
    assert!(gap.iter().all(|&byte| byte == 0));
    assert_eq!(
        files.read(&handle, 10 * PAGE_BYTES as u64, 100).unwrap(),
        b"tail"
    );
    fixture.assert_fsck_clean(&metadata);
}

/// generic/441 (xfstests src/fsync-err.c): every handle hears of a
/// writeback failure exactly once, then fsync succeeds again once the
/// device works.
#[test]
fn every_handle_sees_the_writeback_error_once() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"shared");
    let files = fixture.files(&metadata);
    let mut handles: Vec<_> = (0..3).map(|_| files.open(ino).unwrap()).collect();
    // Some data made durable before the device breaks.
    files
        .write(&handles[0], 0, &pattern(2 * PAGE_BYTES, 0))
        .unwrap();
    files.fsync(&mut files.open(ino).unwrap()).unwrap();
    let rule = fixture.fail_data_writes();
    // As fsync-err.c: write through every handle, then fsync each.
    let mut expected = pattern(2 * PAGE_BYTES, 0);
    for (at, handle) in handles.iter().enumerate() {
        let chunk = pattern(PAGE_BYTES / 2, at as u8 + 10);
        let offset = at * PAGE_BYTES / 2;
        files.write(handle, offset as u64, &chunk).unwrap();
        expected[offset..offset + chunk.len()].copy_from_slice(&chunk);
    }
    for handle in &mut handles {
        assert_eq!(errno(files.fsync(handle)), libc::EIO);
    }
    // The data was not dropped: it is still readable.
    assert_eq!(files.read(&handles[0], 0, 1 << 20).unwrap(), expected);
    assert_eq!(errno(files.peek_error(ino)), libc::EIO);
    fixture.plan.remove_rule(rule).expect("rule present");
    for handle in &mut handles {
        files.fsync(handle).unwrap();
    }
    for handle in &mut handles {
        files.fsync(handle).unwrap();
    }
    // Durable: a fresh mount reads it back.
    drop(handles);
    drop(files);
    drop(metadata);
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let mut handle = files.open(ino).unwrap();
    assert_eq!(files.read(&handle, 0, 1 << 20).unwrap(), expected);
    // A new mount remembers nothing (the persistent error log is not here yet).
    files.fsync(&mut handle).unwrap();
    fixture.assert_fsck_clean(&metadata);
}

/// While the device still fails, every fsync that retries the dirty pages
/// fails: success is never returned for data that is not durable.
#[test]
fn fsync_never_succeeds_while_the_retry_fails() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"stuck");
    let files = fixture.files(&metadata);
    let mut first = files.open(ino).unwrap();
    let mut second = files.open(ino).unwrap();
    let rule = fixture.fail_data_writes();
    let free_before = metadata.allocator.status();
    files.write(&first, 0, b"not yet on disk").unwrap();
    assert_eq!(errno(files.fsync(&mut first)), libc::EIO);
    assert_eq!(errno(files.fsync(&mut first)), libc::EIO);
    assert_eq!(errno(files.fsync(&mut second)), libc::EIO);
    // The failed writebacks leaked no blocks.
    let free_after = metadata.allocator.status();
    assert_eq!(free_after.free_blocks, free_before.free_blocks);
    fixture.plan.remove_rule(rule);
    // The retries did not count as new errors: one report each, then 0.
    files.fsync(&mut first).unwrap();
    files.fsync(&mut second).unwrap();
    // A handle opened after the report starts past it.
    let mut late = files.open(ino).unwrap();
    files.fsync(&mut late).unwrap();
    fixture.assert_fsck_clean(&metadata);
}

/// With `FsyncErrors::Once` (Linux's reporting): each handle hears of the
/// failure once, later fsyncs return 0 while the same pages keep failing,
/// the pages are kept, and the retry after the device recovers makes them
/// durable.
#[test]
fn with_fsync_errors_once_each_handle_hears_once_then_zero_while_failing() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"linux-like");
    let files = fixture.files(&metadata);
    files.set_fsync_errors(FsyncErrors::Once);
    let mut first = files.open(ino).unwrap();
    let mut second = files.open(ino).unwrap();
    let rule = fixture.fail_data_writes();
    files.write(&first, 0, b"kept though failing").unwrap();
    assert_eq!(errno(files.fsync(&mut first)), libc::EIO);
    files.fsync(&mut first).unwrap();
    assert_eq!(errno(files.fsync(&mut second)), libc::EIO);
    files.fsync(&mut second).unwrap();
    // Still dirty, still failing, still readable.
    assert_eq!(errno(files.peek_error(ino)), libc::EIO);
    assert_eq!(files.read(&first, 0, 100).unwrap(), b"kept though failing");
    fixture.plan.remove_rule(rule);
    files.fsync(&mut first).unwrap();
    files.fsync(&mut second).unwrap();
    drop((first, second, files));
    drop(metadata);
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let handle = files.open(ino).unwrap();
    assert_eq!(files.read(&handle, 0, 100).unwrap(), b"kept though failing");
    fixture.assert_fsck_clean(&metadata);
}

/// generic/484: syncfs reports a filesystem writeback error once; a handle
/// opened after the report does not see it.
#[test]
fn syncfs_reports_a_filesystem_error_once() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let failing = create(&metadata, b"failing");
    let other = create(&metadata, b"other");
    let files = fixture.files(&metadata);
    let mut syncer = files.open(other).unwrap();
    let mut bystander = files.open(other).unwrap();
    let writer = files.open(failing).unwrap();
    files.write(&writer, 0, b"lost?").unwrap();
    let rule = fixture.fail_data_writes();
    assert_eq!(errno(files.syncfs(&mut syncer)), libc::EIO);
    assert_eq!(errno(files.fs_peek()), libc::EIO);
    let mut late = files.open(other).unwrap();
    fixture.plan.remove_rule(rule);
    files.syncfs(&mut syncer).unwrap();
    files.syncfs(&mut late).unwrap();
    // One who never synced still hears of it once.
    assert_eq!(errno(files.syncfs(&mut bystander)), libc::EIO);
    files.syncfs(&mut bystander).unwrap();
    // The retry made the data durable; fsync on the other file is clean.
    files.fsync(&mut syncer).unwrap();
    assert_eq!(files.read(&writer, 0, 100).unwrap(), b"lost?");
    fixture.assert_fsck_clean(&metadata);
}

/// generic/487: an error found by writeback after the writer closed, seen
/// by a monitor (which does not consume it), reaches the next opener.
#[test]
fn an_unreported_error_reaches_the_next_opener() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"closed");
    let bystander_ino = create(&metadata, b"bystander");
    let files = fixture.files(&metadata);
    let writer = files.open(ino).unwrap();
    files
        .write(&writer, 0, &pattern(PAGE_BYTES + 1, 3))
        .unwrap();
    files.release(writer);
    let rule = fixture.fail_data_writes();
    // Writeback triggered by someone else's syncfs.
    let mut other = files.open(bystander_ino).unwrap();
    assert_eq!(errno(files.syncfs(&mut other)), libc::EIO);
    let summary = files.writeback_all();
    assert_eq!(summary.failed_inodes, [ino]);
    // The monitor looks, twice: nothing is consumed.
    assert_eq!(errno(files.peek_error(ino)), libc::EIO);
    assert_eq!(errno(files.peek_error(ino)), libc::EIO);
    assert_eq!(
        files.peek_error(bystander_ino).map_err(|e| e.errno()),
        Ok(())
    );
    fixture.plan.remove_rule(rule);
    let mut reader = files.open(ino).unwrap();
    // The retry now succeeds, but the error was never reported to anyone.
    assert_eq!(errno(files.fsync(&mut reader)), libc::EIO);
    files.fsync(&mut reader).unwrap();
    let mut after = files.open(ino).unwrap();
    files.fsync(&mut after).unwrap();
    assert_eq!(
        files.read(&reader, 0, 1 << 20).unwrap(),
        pattern(PAGE_BYTES + 1, 3)
    );
    fixture.assert_fsck_clean(&metadata);
}

/// A monitor's peek sees the error and leaves it for the handle's fsync.
#[test]
fn peek_does_not_consume_the_error() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"peeked");
    let files = fixture.files(&metadata);
    let mut handle = files.open(ino).unwrap();
    assert_eq!(files.peek_error(ino).map_err(|e| e.errno()), Ok(()));
    assert_eq!(files.fs_peek().map_err(|e| e.errno()), Ok(()));
    files.write(&handle, 0, b"x").unwrap();
    let rule = fixture.fail_data_writes();
    assert_eq!(files.writeback_all().failed_inodes, [ino]);
    fixture.plan.remove_rule(rule);
    assert_eq!(errno(files.peek_error(ino)), libc::EIO);
    assert_eq!(errno(files.fs_peek()), libc::EIO);
    assert_eq!(errno(files.fsync(&mut handle)), libc::EIO);
    files.fsync(&mut handle).unwrap();
    fixture.assert_fsck_clean(&metadata);
}

/// A data block that does not match its checksum, or cannot be read, is
/// EIO: never wrong data.
#[test]
fn corrupt_or_unreadable_blocks_read_as_eio() {
    let fixture = Fixture::new();
    let ino;
    let physical;
    {
        let metadata = fixture.mount();
        ino = create(&metadata, b"victim");
        let files = fixture.files(&metadata);
        let mut handle = files.open(ino).unwrap();
        files
            .write(&handle, 0, &pattern(2 * PAGE_BYTES, 5))
            .unwrap();
        files.fsync(&mut handle).unwrap();
        // What a mount's background round does within an interval: record
        // the fsync durable on the device. Before that, replay would check
        // the entry's data claims and cut off an entry whose block rotted
        // (the journal's data claims).
        metadata.journal.settle().unwrap();
        physical = extents(&metadata, ino)[0].1.physical;
    }
    // Flip a byte of the second block behind the filesystem's back.
    let block_bytes = u64::from(fixture.superblock.layout.block_size);
    let at = (physical + 1) * block_bytes;
    let mut sector = vec![0; 512];
    fixture
        .memory
        .read_at(at, &mut sector, IoClass::Data)
        .unwrap();
    sector[17] ^= 0x40;
    fixture.memory.write_at(at, &sector, IoClass::Data).unwrap();

    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let handle = files.open(ino).unwrap();
    assert_eq!(
        files.read(&handle, 0, PAGE_BYTES).unwrap(),
        pattern(PAGE_BYTES, 5)
    );
    let bad = files.read(&handle, 0, 2 * PAGE_BYTES);
    assert!(
        matches!(bad, Err(FileError::Checksum { block: 1, .. })),
        "{bad:?}"
    );
    assert_eq!(
        errno(files.read(&handle, PAGE_BYTES as u64 + 100, 10)),
        libc::EIO
    );
    // A partial write over the bad block must not launder it either.
    assert_eq!(
        errno(files.write(&handle, PAGE_BYTES as u64, b"abc")),
        libc::EIO
    );
    // A whole-block rewrite replaces it (copy-on-write, new checksum).
    let mut handle = handle;
    files
        .write(&handle, PAGE_BYTES as u64, &pattern(PAGE_BYTES, 8))
        .unwrap();
    files.fsync(&mut handle).unwrap();
    assert_eq!(
        files.read(&handle, PAGE_BYTES as u64, PAGE_BYTES).unwrap(),
        pattern(PAGE_BYTES, 8)
    );

    // Device read errors are EIO too.
    drop(files);
    drop(metadata);
    let rule = fixture
        .plan
        .add_rule(
            FaultRule::fail(Errno::EIO)
                .for_class(IoClass::Data)
                .on(Operations::READ),
        )
        .unwrap();
    let fresh = fixture.mount();
    let cold = fixture.files(&fresh);
    let cold_handle = cold.open(ino).unwrap();
    assert!(matches!(
        cold.read(&cold_handle, 0, 10),
        Err(FileError::Read { block: 0, .. })
    ));
    fixture.plan.remove_rule(rule);
}

/// Random writes (some spanning more than one extent's worth of blocks),
/// fsyncs and reads against a plain byte vector, then a remount and fsck.
#[test]
fn random_writes_match_a_model_across_remount() {
    let fixture = Fixture::new();
    let mut model: Vec<u8> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let ino;
    {
        let metadata = fixture.mount();
        ino = create(&metadata, b"model");
        let files = fixture.files(&metadata);
        let mut handle = files.open(ino).unwrap();
        for round in 0..40u8 {
            let offset = next(200 * PAGE_BYTES as u64) as usize;
            let length = if round % 10 == 0 {
                150 * PAGE_BYTES + 17
            } else {
                1 + next(3 * PAGE_BYTES as u64) as usize
            };
            let bytes = pattern(length, round);
            files.write(&handle, offset as u64, &bytes).unwrap();
            if model.len() < offset + length {
                model.resize(offset + length, 0);
            }
            model[offset..offset + length].copy_from_slice(&bytes);
            if next(3) == 0 {
                files.fsync(&mut handle).unwrap();
            }
            let probe = next(model.len() as u64) as usize;
            let got = files.read(&handle, probe as u64, 2 * PAGE_BYTES).unwrap();
            let want = &model[probe..model.len().min(probe + 2 * PAGE_BYTES)];
            assert!(got == want, "round {round}: read at {probe} differs");
        }
        files.fsync(&mut handle).unwrap();
        let all = extents(&metadata, ino);
        assert!(all.iter().all(|(_, extent)| extent.blocks() <= 128));
        assert!(all.len() > 2, "{}", all.len());
    }
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let handle = files.open(ino).unwrap();
    let got = files.read(&handle, 0, model.len() + 10).unwrap();
    assert!(got == model, "contents differ after remount");
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn files_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Files>();
    assert_send_sync::<vigilfs::inode::Handle>();
}
