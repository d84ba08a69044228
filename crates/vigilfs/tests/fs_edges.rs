//! The edges where errors used to be untrue, through the engine API:
//! shutdown, read-only and freeze mean what they say (nothing is written
//! when nothing may be, fsync never claims durability it cannot give, data
//! dropped at unmount is reported), a hostile request is bounded (a hole
//! punch of 2^50 bytes on a small file), dirty data stays bounded while
//! writeback fails, a mount that reads many files keeps no state for
//! each, and damage a mount reads past (a superblock or event-log header
//! copy) is reported, not silently healed, errors seen while frozen are on
//! the image before the thaw, and superblock copies that cannot be written
//! are an error at once, naming the node whose write failed.

use std::num::NonZeroUsize;
use std::sync::Arc;

use fserror::{EventKind, Group, GroupConfig};
use vigilfs::device::{
    BlockDevice, Errno, FaultDevice, FaultPlan, FaultRule, IoClass, MemoryDevice, Operations,
    SectorSize,
};
use vigilfs::format::{ErrorKind, ErrorsPolicy, SuperblockCopy};
use vigilfs::fs::events::ReadOutcome;
use vigilfs::fs::{Filesystem, FsError, LifeState, MountOptions, OpenFlags, SetAttributes};
use vigilfs::fsck::fsck;
use vigilfs::inode::{Caller, FallocateMode, FsyncErrors, RenameFlags, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

struct Fixture {
    memory: Arc<MemoryDevice>,
    plan: Arc<FaultPlan>,
    device: Arc<dyn BlockDevice>,
}

impl Fixture {
    fn new() -> Fixture {
        let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
        let plan = Arc::new(FaultPlan::new());
        let device: Arc<dyn BlockDevice> =
            Arc::new(FaultDevice::new(Arc::clone(&memory), Arc::clone(&plan)));
        make_filesystem(device.clone(), &MkfsOptions::default()).expect("mkfs");
        Fixture {
            memory,
            plan,
            device,
        }
    }

    fn mount_with(&self, options: MountOptions) -> Filesystem {
        Filesystem::mount(self.device.clone(), options).expect("mount")
    }

    fn mount(&self) -> Filesystem {
        self.mount_with(MountOptions::default())
    }

    /// The image, with the event log region zeroed: "nothing written"
    /// means nothing but the event log, which (like the superblock's error
    /// record) is still written after writing stopped, by its own thread.
    fn image(&self) -> Vec<u8> {
        let mut image = self.memory.to_image();
        let superblock = vigilfs::format::read_superblock(self.memory.as_ref())
            .unwrap()
            .superblock;
        if let Some(region) = superblock.event_log {
            let block = u64::from(superblock.layout.block_size);
            let start = (region.start * block) as usize;
            let end = ((region.start + region.blocks) * block) as usize;
            image[start..end].fill(0);
        }
        image
    }

    fn assert_fsck_clean(&self) {
        let report = fsck(self.device.clone(), &mut |_| {}).expect("fsck");
        assert!(report.is_clean(), "fsck: {:#?}", report.problems);
    }

    fn fail_writes(&self, class: IoClass) {
        self.fail_writes_with(class, Errno::EIO);
    }

    fn fail_reads(&self, class: IoClass) {
        self.plan
            .add_rule(
                FaultRule::fail(Errno::EIO)
                    .for_class(class)
                    .on(Operations::READ),
            )
            .expect("rule");
    }

    fn fail_writes_with(&self, class: IoClass, errno: Errno) {
        self.plan
            .add_rule(
                FaultRule::fail(errno)
                    .for_class(class)
                    .on(Operations::WRITE),
            )
            .expect("rule");
    }
}

fn root() -> Caller {
    Caller::root()
}

fn read_write() -> OpenFlags {
    OpenFlags {
        read: true,
        write: true,
        ..OpenFlags::default()
    }
}

/// File `name` made of `bytes`, durable, its pages dropped from the cache,
/// and opened read-only: its reads go to the device. Returns the handle.
fn durable_file_opened_uncached(fs: &Filesystem, name: &[u8], bytes: &[u8]) -> u64 {
    let (_, handle) = fs
        .create(ROOT_INO, name, 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, bytes, &root()).unwrap();
    fs.fsync(handle, false).unwrap();
    fs.release(handle).unwrap();
    fs.drop_caches();
    let attr = fs.lookup(ROOT_INO, name, &root()).unwrap();
    fs.open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap()
}

fn errno<T: std::fmt::Debug>(result: Result<T, FsError>) -> i32 {
    result.expect_err("expected an error").errno()
}

fn read_file(fs: &Filesystem, name: &[u8]) -> Vec<u8> {
    let attr = fs.lookup(ROOT_INO, name, &root()).expect("lookup");
    let handle = fs
        .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .expect("open");
    let bytes = fs.read(handle, 0, 1 << 20).expect("read");
    fs.release(handle).expect("release");
    bytes
}

#[test]
fn after_a_shutdown_fsync_and_syncfs_write_nothing_and_fail() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (_, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"durable", &root()).unwrap();
    fs.fsync(handle, false).unwrap();
    fs.write(handle, 0, b"NOT YET", &root()).unwrap();
    let (_, clean) = fs
        .create(ROOT_INO, b"clean", 0o644, read_write(), &root())
        .unwrap();
    fs.fsync(clean, false).unwrap();
    fs.shutdown(false).unwrap();
    let image = fixture.image();
    assert_eq!(errno(fs.fsync(handle, false)), libc::EIO);
    assert_eq!(errno(fs.fsync(handle, false)), libc::EIO, "every time");
    assert_eq!(errno(fs.syncfs(handle)), libc::EIO);
    assert_eq!(errno(fs.syncfs_once()), libc::EIO);
    // Even a file whose every byte is durable, or a directory: a
    // shut-down filesystem fails every fsync, as ext4 and XFS do.
    assert_eq!(errno(fs.fsync(clean, false)), libc::EIO);
    let directory = fs.opendir(ROOT_INO, &root()).unwrap();
    assert_eq!(errno(fs.fsyncdir(directory)), libc::EIO);
    fs.releasedir(directory).unwrap();
    assert!(
        fixture.image() == image,
        "something was written after the shutdown"
    );
    fs.release(handle).unwrap();
    fs.release(clean).unwrap();
    fs.unmount().unwrap();
    let fs = fixture.mount();
    assert_eq!(read_file(&fs, b"f"), b"durable");
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// Data a shutdown stops from being written is reported lost with the
/// file's bytes, not the whole last page (a 3-byte file's loss said
/// bytes 0+4096, past its end).
#[test]
fn data_a_shutdown_loses_is_reported_up_to_the_file_size() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (attr, handle) = fs
        .create(ROOT_INO, b"short", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"abc", &root()).unwrap();
    fs.shutdown(false).unwrap();
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    let fs = fixture.mount();
    let lost = earlier_records(&fs)
        .into_iter()
        .find(|record| {
            record.text.as_str() == "not written: writes stopped" && record.inode == Some(attr.ino)
        })
        .expect("the loss is recorded");
    assert_eq!(lost.range, Some((0, 3)));
    fs.unmount().unwrap();
}

#[test]
fn after_errors_remount_ro_fsync_of_new_data_fails() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::RemountReadOnly),
        ..MountOptions::default()
    });
    let (_, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"durable", &root()).unwrap();
    fs.fsync(handle, false).unwrap();
    fs.write(handle, 0, b"new", &root()).unwrap();
    // A metadata failure elsewhere makes the filesystem read-only.
    fixture.fail_writes(IoClass::Journal);
    let _ = fs.mkdir(ROOT_INO, b"d", 0o755, &root());
    let _ = fs.syncfs_once();
    assert!(matches!(fs.status().state, LifeState::ReadOnly(_)));
    fixture.plan.clear();
    let image = fixture.image();
    assert_eq!(errno(fs.fsync(handle, false)), libc::EIO);
    assert!(
        fixture.image() == image,
        "fsync wrote to a read-only filesystem"
    );
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    let fs = fixture.mount();
    assert_eq!(read_file(&fs, b"f"), b"durable");
    fs.unmount().unwrap();
}

/// Read-only after a journal failure, fsync answers for its own file:
/// one whose data and changes are durable succeeds, while a directory
/// with a change the journal lost fails, and so does syncfs. Every fsync
/// failed once anything at all was pending (review 41).
#[test]
fn after_errors_remount_ro_fsync_of_what_is_durable_succeeds_and_of_what_is_not_fails() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::RemountReadOnly),
        ..MountOptions::default()
    });
    let (_, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"durable", &root()).unwrap();
    let synced = fs.mkdir(ROOT_INO, b"synced", 0o755, &root()).unwrap().ino;
    fs.fsync(handle, false).unwrap();
    let changed = fs.mkdir(ROOT_INO, b"changed", 0o755, &root()).unwrap().ino;
    fs.fsync(handle, false).unwrap();
    let synced = fs.opendir(synced, &root()).unwrap();
    let changed_handle = fs.opendir(changed, &root()).unwrap();
    fixture.fail_writes(IoClass::Journal);
    let _ = fs.mkdir(changed, b"lost", 0o755, &root());
    let _ = fs.syncfs_once();
    assert!(matches!(fs.status().state, LifeState::ReadOnly(_)));
    fixture.plan.clear();
    fs.fsync(handle, false).expect("fsync of a durable file");
    fs.fsyncdir(synced).expect("fsync of a durable directory");
    assert_eq!(errno(fs.fsyncdir(changed_handle)), libc::EIO);
    assert_eq!(errno(fs.syncfs_once()), libc::EIO);
    for directory in [synced, changed_handle] {
        fs.releasedir(directory).unwrap();
    }
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
}

/// Metadata changes alone become durable within a writeback interval, as
/// ext4's `commit=` makes them: a mkdir, a create and a rename on a mount
/// that writes no data survive a power cut a few intervals later. Nothing
/// flushed them: on an idle mount they stayed in memory until a crash took
/// them, however long after (review 42).
#[test]
fn metadata_changes_alone_are_durable_within_a_writeback_interval() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        writeback_interval: std::time::Duration::from_millis(50),
        ..MountOptions::default()
    });
    fs.mkdir(ROOT_INO, b"made", 0o755, &root()).unwrap();
    let (_, handle) = fs
        .create(ROOT_INO, b"empty", 0o644, read_write(), &root())
        .unwrap();
    fs.release(handle).unwrap();
    fs.rename(
        ROOT_INO,
        b"empty",
        ROOT_INO,
        b"renamed",
        RenameFlags::default(),
        &root(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fs.unsynced().changes.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        fs.unsynced().changes.is_empty(),
        "{:?}",
        fs.unsynced().changes
    );
    // The power goes: this image is all the next mount has.
    let image = fixture.memory.to_image();
    drop(fs);
    let memory = Arc::new(MemoryDevice::from_image(image, SectorSize::Bytes512));
    let fs = Filesystem::mount(memory, MountOptions::default()).expect("mount");
    for name in [&b"made"[..], b"renamed"] {
        fs.lookup(ROOT_INO, name, &root())
            .unwrap_or_else(|error| panic!("{}: {error}", String::from_utf8_lossy(name)));
    }
    fs.unmount().unwrap();
}

/// A device that refuses the journal's writes for space fails the journal
/// for good: fsync says EIO, then and after the device has room again,
/// never ENOSPC, which would send a program freeing space that cannot
/// help (it said ENOSPC for ever, with the filesystem nearly empty:
/// review 26).
#[test]
fn a_journal_the_device_refused_for_space_fails_fsync_with_eio_not_enospc() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::Continue),
        ..MountOptions::default()
    });
    let (_, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fixture.fail_writes_with(IoClass::Journal, Errno::ENOSPC);
    fs.write(handle, 0, &[7u8; 8192], &root()).unwrap();
    assert_eq!(errno(fs.fsync(handle, false)), libc::EIO);
    fixture.plan.clear();
    assert_eq!(errno(fs.fsync(handle, false)), libc::EIO);
    assert_eq!(errno(fs.syncfs_once()), libc::EIO);
    fs.release(handle).unwrap();
}

/// A retry of failed data that fails for another reason (no space, then a
/// failing disk) is the latest error: `status` shows it, and each
/// descriptor hears of the change of cause once, even where each error is
/// told once (review 28: `status` kept ENOSPC after the writes had failed
/// with EIO).
#[test]
fn a_writeback_retry_failing_for_another_reason_becomes_the_latest_error() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::Continue),
        fsync_errors: FsyncErrors::Once,
        ..MountOptions::default()
    });
    let (_, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, &[7u8; 8192], &root()).unwrap();
    fixture.fail_writes_with(IoClass::Data, Errno::ENOSPC);
    assert_eq!(errno(fs.fsync(handle, false)), libc::ENOSPC);
    assert_eq!(fs.status().writeback_error, Some(libc::ENOSPC));
    fixture.plan.clear();
    fixture.fail_writes_with(IoClass::Data, Errno::EIO);
    assert_eq!(errno(fs.fsync(handle, false)), libc::EIO);
    assert_eq!(fs.status().writeback_error, Some(libc::EIO));
    // The same cause again: this descriptor was told.
    fs.fsync(handle, false).unwrap();
    fixture.plan.clear();
    fs.fsync(handle, false).unwrap();
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    let fs = fixture.mount();
    assert_eq!(read_file(&fs, b"f"), [7u8; 8192]);
    fs.unmount().unwrap();
}

/// Data the kernel's write-back of a shared mapping lost (the mount
/// refused it) fails every fsync until it is gone: rewritten whole, punched
/// or truncated away, byte by byte; reads of it fail meanwhile (review 29:
/// the second fsync after the loss succeeded, and reads returned zeros
/// once the kernel let its pages go; review 30: a rewrite in 1,000-byte
/// records left it lost for good). With fsync_errors=once the kernel's own
/// report is the only one.
#[test]
fn data_lost_to_a_refused_mapped_write_back_fails_fsync_until_it_is_replaced() {
    const PAGE: u64 = 4096;
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (attr, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, &[1u8; 4 * PAGE as usize], &root())
        .unwrap();
    fs.fsync(handle, false).unwrap();
    // Pages 1 and 2 lost.
    fs.cache_write_refused(handle, PAGE, 2 * PAGE, libc::ENOSPC);
    for _ in 0..2 {
        assert_eq!(errno(fs.fsync(handle, false)), libc::ENOSPC);
    }
    // A syncfs hears of it once (any user can leave lost data behind).
    assert_eq!(errno(fs.syncfs_once()), libc::ENOSPC);
    fs.syncfs_once().unwrap();
    // Reads of lost bytes fail rather than return what the cache or the
    // device holds from before.
    assert_eq!(fs.read(handle, 0, PAGE as usize).unwrap(), [1u8; 4096]);
    assert_eq!(errno(fs.read(handle, 0, 2 * PAGE as usize)), libc::EIO);
    assert_eq!(errno(fs.read(handle, 2 * PAGE + 10, 10)), libc::EIO);
    // Page 1 written again in unaligned pieces (as records are): each
    // piece takes the loss away where it writes, and no more.
    fs.write(handle, PAGE, &[2u8; 1000], &root()).unwrap();
    assert_eq!(fs.read(handle, PAGE, 1000).unwrap(), [2u8; 1000]);
    assert_eq!(errno(fs.read(handle, PAGE, 1001)), libc::EIO);
    assert_eq!(errno(fs.fsync(handle, false)), libc::ENOSPC);
    for at in (PAGE + 1000..2 * PAGE).step_by(1000) {
        let piece = (2 * PAGE - at).min(1000) as usize;
        fs.write(handle, at, &vec![2u8; piece], &root()).unwrap();
    }
    assert_eq!(fs.read(handle, PAGE, PAGE as usize).unwrap(), [2u8; 4096]);
    assert_eq!(errno(fs.fsync(handle, false)), libc::ENOSPC, "page 2");
    let punch = FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE;
    fs.fallocate(handle, 2 * PAGE, PAGE, punch, &root())
        .unwrap();
    fs.fsync(handle, false).unwrap();
    assert_eq!(
        fs.read(handle, 2 * PAGE, PAGE as usize).unwrap(),
        [0u8; 4096]
    );
    // The last page lost, then truncated away.
    fs.cache_write_refused(handle, 3 * PAGE, PAGE, libc::EIO);
    assert_eq!(errno(fs.fsync(handle, false)), libc::EIO);
    let cut = SetAttributes {
        size: Some(3 * PAGE),
        ..SetAttributes::default()
    };
    fs.setattr(attr.ino, &cut, Some(handle), &root()).unwrap();
    fs.fsync(handle, false).unwrap();
    fs.syncfs_once().unwrap_err();
    fs.syncfs_once().unwrap();
    fs.release(handle).unwrap();
    fs.unmount().unwrap();

    let fs = fixture.mount_with(MountOptions {
        fsync_errors: FsyncErrors::Once,
        ..MountOptions::default()
    });
    let (_, handle) = fs
        .create(ROOT_INO, b"g", 0o644, read_write(), &root())
        .unwrap();
    fs.cache_write_refused(handle, 0, PAGE, libc::ENOSPC);
    fs.fsync(handle, false).unwrap();
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
}

/// Data a shutdown leaves unwritten is reported lost with the cause its
/// writeback failed with, not a generic EIO (review 31: the loss said EIO
/// after every fsync of the file had said ENOSPC).
#[test]
fn data_lost_at_a_shutdown_carries_the_cause_its_writeback_failed_with() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (attr, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, &[3u8; 8192], &root()).unwrap();
    fixture.fail_writes_with(IoClass::Data, Errno::ENOSPC);
    assert_eq!(errno(fs.fsync(handle, false)), libc::ENOSPC);
    fs.shutdown(false).unwrap();
    let lost: Vec<_> = event_records(&fs)
        .into_iter()
        .filter(|record| record.text.as_str().starts_with("not written"))
        .collect();
    assert!(!lost.is_empty(), "{:#?}", event_texts(&fs));
    for record in &lost {
        assert_eq!(record.inode, Some(attr.ino));
        assert_eq!(record.errno, libc::ENOSPC, "{record:?}");
    }
    fs.release(handle).unwrap();
}

/// A shutdown whose flush fails says so, to its caller and in its reason:
/// what the flush could not write is lost (review 33: "after flushing",
/// and success, though the data was lost).
#[test]
fn a_shutdown_whose_flush_fails_says_so() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (_, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, &[5u8; 8192], &root()).unwrap();
    fixture.fail_writes_with(IoClass::Data, Errno::ENOSPC);
    assert_eq!(errno(fs.shutdown(true)), libc::ENOSPC);
    match fs.status().state {
        LifeState::ShutDown(why) => assert!(why.contains("the flush failed with ENOSPC"), "{why}"),
        state => panic!("{state:?}"),
    }
    fs.release(handle).unwrap();
}

/// An access time that cannot be kept (the journal has failed) is an
/// event naming the file read, under its own name, not an anonymous
/// "read" (review 26); the read itself succeeds.
#[test]
fn an_access_time_update_that_fails_names_the_file() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::Continue),
        ..MountOptions::default()
    });
    let (attr, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"data", &root()).unwrap();
    fs.fsync(handle, false).unwrap();
    fixture.fail_writes(IoClass::Journal);
    fs.write(handle, 0, b"more", &root()).unwrap();
    assert!(fs.fsync(handle, false).is_err());
    fixture.plan.clear();
    assert_eq!(fs.read(handle, 0, 4).unwrap(), b"more");
    let named = event_records(&fs).into_iter().any(|record| {
        record.text.as_str().contains("access time") && record.inode == Some(attr.ino)
    });
    assert!(named, "{:#?}", event_texts(&fs));
    fs.release(handle).unwrap();
}

#[test]
fn a_journal_full_of_unwritable_nodes_names_the_device_error_not_a_lock() {
    // A thin device out of space (or an image on a full host filesystem)
    // refuses every b-tree node write with ENOSPC: reclaim cannot free the
    // journal, which fills, and a change made under the b-tree lock finds
    // no room. The read-only reason must be the device's refusal, not the
    // lock that kept that one thread from trying the write itself.
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::RemountReadOnly),
        ..MountOptions::default()
    });
    fixture.fail_writes_with(IoClass::Metadata, Errno::ENOSPC);
    let mut created = 0;
    while created < 100_000 {
        let name = format!("file{created}");
        if fs
            .mknod(ROOT_INO, name.as_bytes(), libc::S_IFREG | 0o644, 0, &root())
            .is_err()
        {
            break;
        }
        created += 1;
    }
    let LifeState::ReadOnly(reason) = fs.status().state else {
        panic!("still writable after {created} creates with every node write refused");
    };
    assert!(
        reason.to_lowercase().contains("no space left on device"),
        "the read-only reason hides the device's error: {reason}"
    );
    let status = fs.status();
    assert!(status.journal.reclaim_failures > 0);
    // The failed node writes were announced first, by the operation that
    // met them, with the device's errno; then the failing reclaim, as a
    // journal error, before the change that found the journal full failed.
    let first = status
        .error_record
        .first
        .clone()
        .expect("an error recorded");
    assert_eq!(first.kind, ErrorKind::Metadata, "{:?}", status.error_record);
    assert_eq!(first.errno, libc::ENOSPC, "{:?}", status.error_record);
    assert!(
        status.error_record.counter(ErrorKind::Journal).count >= 1,
        "{:?}",
        status.error_record
    );
    fixture.plan.clear();
    drop(fs);
}

/// A disk that failed node writes for a while, then healed: the blocks the
/// failed writes took come back once a node write succeeds. Kept out for
/// good, they leaked a block per failed attempt, and a 64 MiB filesystem
/// holding 2,000 small files had no room left to write its nodes once its
/// disk worked again ("no space for b-tree nodes" at unmount, after 25 s of
/// failing metadata writes through the mount).
#[test]
fn the_blocks_of_failed_node_writes_come_back_once_the_device_writes_again() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::Continue),
        ..MountOptions::default()
    });
    let create =
        |name: String| fs.mknod(ROOT_INO, name.as_bytes(), libc::S_IFREG | 0o644, 0, &root());
    for index in 0..50 {
        create(format!("before{index}")).unwrap();
    }
    fs.freeze().unwrap();
    fs.thaw().unwrap();
    let before = fs.status().space.free_blocks;
    fixture.fail_writes(IoClass::Metadata);
    let mut failed_freezes = 0;
    for index in 0..300 {
        let _ = create(format!("during{index}"));
        // Each freeze tries to write every dirty node, and fails.
        if fs.freeze().is_err() {
            failed_freezes += 1;
        } else {
            fs.thaw().unwrap();
        }
    }
    assert!(failed_freezes > 100, "{failed_freezes} freezes failed");
    fixture.plan.clear();
    fs.freeze().expect("the healed device takes the nodes");
    fs.thaw().unwrap();
    let after = fs.status().space.free_blocks;
    // The new entries' nodes take a few blocks; the failed attempts, none.
    assert!(
        after + 32 >= before,
        "{} blocks lost to {failed_freezes} failed attempts",
        before - after
    );
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// A retry of a file's writeback failing again names the file (the stream
/// named none: review 44), and retries of several files stay one stream
/// naming the first and the last.
#[test]
fn a_writeback_retry_failing_again_names_its_file() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let files: Vec<(u64, u64)> = [b"first".as_slice(), b"second".as_slice()]
        .into_iter()
        .map(|name| {
            let (attr, handle) = fs
                .create(ROOT_INO, name, 0o644, read_write(), &root())
                .unwrap();
            fs.write(handle, 0, &[3u8; 4096], &root()).unwrap();
            (attr.ino, handle)
        })
        .collect();
    fixture.fail_writes(IoClass::Data);
    for _ in 0..2 {
        for &(_, handle) in &files {
            assert_eq!(errno(fs.fsync(handle, false)), libc::EIO);
        }
    }
    let retries: Vec<_> = event_records(&fs)
        .into_iter()
        .filter(|record| record.text.as_str() == "writeback retried: failing again")
        .collect();
    assert!(!retries.is_empty());
    let named: Vec<Option<u64>> = retries.iter().map(|record| record.inode).collect();
    assert_eq!(named[0], Some(files[0].0), "{retries:?}");
    assert!(
        retries
            .iter()
            .any(|record| record.inode == Some(files[1].0) || record.last_inode == Some(files[1].0)),
        "{retries:?}"
    );
    fixture.plan.clear();
    for (_, handle) in files {
        fs.fsync(handle, false).unwrap();
        fs.release(handle).unwrap();
    }
    fs.unmount().unwrap();
}

#[test]
fn data_that_will_never_be_written_is_reported_before_the_shutdown_event() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let group = Group::new(GroupConfig::distinct(NonZeroUsize::new(8).unwrap()));
    group.subscribe(fs.events()).unwrap();
    let (attr, handle) = fs
        .create(ROOT_INO, b"lost", 0o644, read_write(), &root())
        .unwrap();
    fs.fsync(handle, false).unwrap();
    fs.write(handle, 3 * 4096, &[9u8; 2 * 4096], &root())
        .unwrap();
    fs.shutdown(false).unwrap();
    let mut events = Vec::new();
    while let Ok(event) = group.read_timeout(std::time::Duration::from_millis(20)) {
        events.push(event);
    }
    assert_eq!(
        events.last().map(|event| event.kind),
        Some(EventKind::Shutdown)
    );
    // Unread errors are carried by the terminal event (its first and last
    // error), as seed 001 has it.
    let detail = events
        .iter()
        .flat_map(|event| [event.first, event.last])
        .flatten()
        .find(|detail| detail.object.map(|object| object.inode) == Some(attr.ino))
        .expect("an event for the data the shutdown dropped");
    let range = detail.range.expect("the range dropped");
    assert_eq!((range.offset, range.len), (3 * 4096, 2 * 4096));
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    let fs = fixture.mount();
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Writeback).count, 1, "{record:?}");
    assert_eq!(
        record.last.as_ref().and_then(|last| last.inode),
        Some(attr.ino)
    );
    fs.unmount().unwrap();
}

#[test]
fn an_orphan_released_during_a_freeze_is_deleted_at_thaw_and_nothing_is_written_meanwhile() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (_, handle) = fs
        .create(ROOT_INO, b"orphan", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, &[1u8; 1 << 20], &root()).unwrap();
    fs.fsync(handle, false).unwrap();
    fs.unlink(ROOT_INO, b"orphan", &root()).unwrap();
    let before = fs.statfs().unwrap().available_blocks;
    fs.freeze().unwrap();
    let image = fixture.image();
    fs.release(handle)
        .expect("release during a freeze returns at once");
    fs.syncfs_once()
        .expect("syncfs while frozen: nothing to write");
    assert!(
        fixture.image() == image,
        "something was written while frozen"
    );
    fs.thaw().unwrap();
    let after = fs.statfs().unwrap().available_blocks;
    assert!(
        after >= before + 200,
        "the orphan's space came back: {before} -> {after}"
    );
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

#[test]
fn a_hole_punch_of_two_to_the_fifty_bytes_on_a_small_file_is_one_piece() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (_, handle) = fs
        .create(ROOT_INO, b"small", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, &[5u8; 1 << 20], &root()).unwrap();
    fs.fsync(handle, false).unwrap();
    let before = fs.status().journal.next_seq;
    fs.fallocate(
        handle,
        4096,
        1 << 50,
        FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
        &root(),
    )
    .unwrap();
    let commits = fs.status().journal.next_seq - before;
    assert!(commits <= 2, "{commits} journal entries for one small file");
    // Past the end there is nothing: no commit at all.
    let before = fs.status().journal.next_seq;
    fs.fallocate(
        handle,
        1 << 40,
        1 << 50,
        FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
        &root(),
    )
    .unwrap();
    assert_eq!(fs.status().journal.next_seq, before);
    let bytes = read_file(&fs, b"small");
    assert_eq!(bytes.len(), 1 << 20);
    assert_eq!(bytes[..4096], [5u8; 4096]);
    assert!(bytes[4096..].iter().all(|&byte| byte == 0));
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

#[test]
fn dirty_data_stays_bounded_while_writeback_fails() {
    let fixture = Fixture::new();
    let limit = 1 << 20;
    let fs = fixture.mount_with(MountOptions {
        dirty_limit_bytes: limit,
        ..MountOptions::default()
    });
    let (_, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fixture.fail_writes(IoClass::Data);
    let mut refused = None;
    for index in 0..40u64 {
        match fs.write(handle, index << 20, &[3u8; 1 << 20], &root()) {
            Ok(_) => {}
            Err(error) => {
                refused = Some(error.errno());
                break;
            }
        }
        assert!(fs.status().dirty_bytes <= 2 * limit + (1 << 20));
    }
    assert_eq!(
        refused,
        Some(libc::EIO),
        "writes past the limit while writeback fails"
    );
    assert!(fs.status().dirty_bytes <= 2 * limit + (1 << 20));
    // Once the device works, what was accepted is written.
    fixture.plan.clear();
    let _ = fs.fsync(handle, false);
    fs.fsync(handle, false).expect("the retry succeeds");
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

#[test]
fn files_only_opened_and_read_leave_no_state_behind() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        cache_bytes: 64 * 4096,
        ..MountOptions::default()
    });
    for number in 0..400 {
        let name = format!("f{number}");
        let (_, handle) = fs
            .create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &root())
            .unwrap();
        fs.write(handle, 0, name.as_bytes(), &root()).unwrap();
        fs.release(handle).unwrap();
    }
    fs.syncfs_once().unwrap();
    for number in 0..400 {
        let name = format!("f{number}");
        assert_eq!(read_file(&fs, name.as_bytes()), name.as_bytes());
    }
    let stats = fs.status();
    assert!(
        stats.cached_inodes <= 64,
        "{} inodes kept for 64 cached pages",
        stats.cached_inodes
    );
    fs.unmount().unwrap();
}

/// Flips one byte of `memory` at `offset` (read and written as its sector).
fn flip_byte(memory: &MemoryDevice, offset: u64) {
    let sector = offset - offset % 512;
    let mut bytes = [0u8; 512];
    memory
        .read_at(sector, &mut bytes, IoClass::Metadata)
        .unwrap();
    bytes[(offset - sector) as usize] ^= 0x5a;
    memory.write_at(sector, &bytes, IoClass::Metadata).unwrap();
}

/// The texts of the event records this mount of `fs` made.
fn event_records(fs: &Filesystem) -> Vec<vigilfs::format::event_log::EventRecord> {
    let mut found = Vec::new();
    let mut after = fs.event_log().mount_first_id().saturating_sub(1);
    loop {
        match fs
            .event_log()
            .read_after(after, 1000, std::time::Duration::ZERO)
        {
            ReadOutcome::Timeout => return found,
            ReadOutcome::Records(records) => {
                after = records.last().map_or(after, |record| record.id);
                found.extend(records);
            }
            ReadOutcome::Gap { last, .. } => after = last,
            ReadOutcome::Closed => panic!("the log closed"),
        }
    }
}

fn event_texts(fs: &Filesystem) -> Vec<String> {
    event_records(fs)
        .iter()
        .map(|record| record.text.as_str().to_string())
        .collect()
}

#[test]
fn a_damaged_superblock_or_event_log_header_copy_found_after_a_clean_stop_is_reported_once() {
    let fixture = Fixture::new();
    fixture.mount().unmount().expect("unmount");
    let superblock = vigilfs::format::read_superblock(fixture.memory.as_ref())
        .unwrap()
        .superblock;
    let block = u64::from(superblock.layout.block_size);
    let region = superblock.event_log.expect("an event log region");
    flip_byte(&fixture.memory, (region.start + 1) * block + 40);
    flip_byte(&fixture.memory, 4096 + 60);
    // fsck agrees with the mount: after a clean stop it is damage.
    let report = fsck(fixture.device.clone(), &mut |_| {}).expect("fsck");
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.message.contains("header copy is damaged")),
        "{:#?}",
        report.problems
    );

    let fs = fixture.mount();
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Checksum).count, 2, "{record:?}");
    let found: Vec<String> = event_texts(&fs)
        .into_iter()
        .filter(|text| text.starts_with("mount found"))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|text| text.contains("primary superblock")));
    assert!(found.iter().any(|text| text.contains("header copy 1")));
    fs.unmount().expect("unmount");
    // A backup alone (the primary valid, so a load does not read it).
    let backup = SuperblockCopy::FirstBackup
        .offset(fixture.memory.length())
        .unwrap();
    flip_byte(&fixture.memory, backup + 60);
    let fs = fixture.mount();
    let found: Vec<String> = event_texts(&fs)
        .into_iter()
        .filter(|text| text.starts_with("mount found"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("first backup"), "{found:?}");
    fs.unmount().expect("unmount");
    // The mounts rewrote the copies: the next finds nothing, and the count
    // is remembered.
    let fs = fixture.mount();
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Checksum).count, 3, "{record:?}");
    assert!(!event_texts(&fs)
        .iter()
        .any(|text| text.starts_with("mount found")));
    fs.unmount().expect("unmount");
    fixture.assert_fsck_clean();
}

/// A fresh filesystem's image as a power cut would leave it: mounted, not
/// clean.
fn power_cut_image() -> Arc<MemoryDevice> {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let image = fixture.memory.to_image();
    drop(fs);
    Arc::new(MemoryDevice::from_image(image, SectorSize::Bytes512))
}

#[test]
fn a_header_copy_torn_by_a_power_cut_is_not_reported_as_damage() {
    let memory = power_cut_image();
    let superblock = vigilfs::format::read_superblock(memory.as_ref())
        .unwrap()
        .superblock;
    let block = u64::from(superblock.layout.block_size);
    let region = superblock.event_log.expect("an event log region");
    flip_byte(&memory, (region.start + 1) * block + 40);
    let fs = Filesystem::mount(memory, MountOptions::default()).expect("mount");
    assert!(fs.recovered());
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Checksum).count, 0, "{record:?}");
    fs.unmount().expect("unmount");
}

#[test]
fn a_superblock_copy_damaged_beyond_a_torn_write_is_reported_after_a_power_cut() {
    let memory = power_cut_image();
    // The primary's magic gone (no torn write makes that: the sector that
    // holds it is either the old one or the new one), and the first
    // backup's checksum wrong (which a torn write can make: not reported).
    memory
        .write_at(4096, &[0u8; 512], IoClass::Metadata)
        .unwrap();
    let backup = SuperblockCopy::FirstBackup.offset(memory.length()).unwrap();
    flip_byte(&memory, backup + 60);
    // fsck agrees: the zeroed primary is a problem, the backup's checksum
    // (maybe the crash's own) a note.
    let report = fsck(memory.clone(), &mut |_| {}).expect("fsck");
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    assert!(report.problems[0].structure.contains("primary"));
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.message.contains("the next mount rewrites it")),
        "{:#?}",
        report.notes
    );
    let fs = Filesystem::mount(memory, MountOptions::default()).expect("mount");
    assert!(fs.recovered());
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Checksum).count, 1, "{record:?}");
    let found: Vec<String> = event_texts(&fs)
        .into_iter()
        .filter(|text| text.starts_with("mount found"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("primary superblock"), "{found:?}");
    assert!(found[0].contains("bad magic"), "{found:?}");
    fs.unmount().expect("unmount");
}

/// One power cut tears the primary or the backups, never both (they are
/// written primary first, flushed, then the backups): checksum mismatches
/// in the primary and a backup at once are reported after a crash, by the
/// mount and by fsck.
#[test]
fn mismatches_no_single_crash_makes_are_reported_after_a_power_cut() {
    let memory = power_cut_image();
    flip_byte(&memory, 4096 + 60);
    let backup = SuperblockCopy::FirstBackup.offset(memory.length()).unwrap();
    flip_byte(&memory, backup + 60);
    let report = fsck(memory.clone(), &mut |_| {}).expect("fsck");
    assert_eq!(report.problems.len(), 2, "{:#?}", report.problems);
    let fs = Filesystem::mount(memory, MountOptions::default()).expect("mount");
    assert!(fs.recovered());
    assert_eq!(
        fs.status().error_record.counter(ErrorKind::Checksum).count,
        2
    );
    fs.unmount().expect("unmount");
}

/// A device grown since mkfs (an image file extended) is not damage: the
/// backups are where the filesystem put them, fsck says the space past the
/// end goes unused, and the mount reports nothing and writes the backups
/// where they were (the image cut back to its size is still clean).
#[test]
fn a_device_grown_since_mkfs_keeps_its_backups_and_is_not_reported_as_damage() {
    let fixture = Fixture::new();
    fixture.mount().unmount().expect("unmount");
    let made = fixture.memory.length();
    let mut image = fixture.memory.to_image();
    image.resize(image.len() + (1 << 20), 0);
    let grown = Arc::new(MemoryDevice::from_image(image, SectorSize::Bytes512));
    let report = fsck(grown.clone(), &mut |_| {}).expect("fsck");
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert!(
        report.notes.iter().any(|note| note
            .message
            .contains("more than the filesystem was made for")),
        "{:#?}",
        report.notes
    );
    let fs = Filesystem::mount(grown.clone(), MountOptions::default()).expect("mount");
    assert_eq!(
        fs.status().error_record.counter(ErrorKind::Checksum).count,
        0
    );
    fs.create(ROOT_INO, b"after", 0o644, read_write(), &root())
        .unwrap();
    fs.unmount().expect("unmount");
    let mut image = grown.to_image();
    image.truncate(made as usize);
    let cut_back = Arc::new(MemoryDevice::from_image(image, SectorSize::Bytes512));
    let report = fsck(cut_back, &mut |_| {}).expect("fsck");
    assert!(report.is_clean(), "{:#?}", report.problems);

    // Grown by an odd size, with the primary (which records the length)
    // gone: the backups are still found where the filesystem put them.
    let mut image = grown.to_image();
    image.resize(image.len() + 1001 * 512, 0);
    let grown = Arc::new(MemoryDevice::from_image(image, SectorSize::Bytes512));
    grown
        .write_at(4096, &[0u8; 4096], IoClass::Metadata)
        .unwrap();
    let report = fsck(grown.clone(), &mut |_| {}).expect("fsck finds a backup");
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    assert!(report.problems[0].structure.contains("primary"));
    let fs = Filesystem::mount(grown, MountOptions::default()).expect("mount from a backup");
    assert!(fs.lookup(ROOT_INO, b"after", &root()).is_ok());
    fs.unmount().expect("unmount");
}

/// The journal's newest entry, damaged after a clean unmount (the
/// superblock names it): fsck and the mount report it lost, where it
/// passed for the end of the log; the mount goes on from the entries
/// before it, and every file is still there.
#[test]
fn a_journal_entry_damaged_after_a_clean_unmount_is_reported_lost() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    fs.create(ROOT_INO, b"kept", 0o644, read_write(), &root())
        .unwrap();
    fs.unmount().expect("unmount");
    let superblock = vigilfs::format::read_superblock(fixture.memory.as_ref())
        .unwrap()
        .superblock;
    let newest = superblock.clean_journal_seq;
    assert!(newest > 0, "a clean unmount names its newest entry");
    let block = u64::from(superblock.layout.block_size);
    let journal = superblock.layout.journal;
    let image = fixture.memory.to_image();
    let at = (journal.start..journal.start + journal.blocks)
        .map(|index| index * block)
        .find(|&at| {
            let at = at as usize;
            image[at..at + 8] == *b"VGFSJENT"
                && u64::from_le_bytes(image[at + 40..at + 48].try_into().unwrap()) == newest
        })
        .expect("the newest entry");
    fixture
        .memory
        .write_at(at, &vec![0xff; block as usize], IoClass::Metadata)
        .unwrap();
    let report = fsck(fixture.device.clone(), &mut |_| {}).expect("fsck");
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.structure == "journal" && problem.message.contains("missing")),
        "{:#?}",
        report.problems
    );
    let fs = fixture.mount();
    assert_eq!(
        fs.status().error_record.counter(ErrorKind::Journal).count,
        1
    );
    assert!(event_texts(&fs)
        .iter()
        .any(|text| text.contains("lost since the clean unmount")));
    assert!(fs.lookup(ROOT_INO, b"kept", &root()).is_ok());
    fs.unmount().expect("unmount");
    // Reported once: the mount wrote new entries and a new clean seq.
    let fs = fixture.mount();
    assert_eq!(
        fs.status().error_record.counter(ErrorKind::Journal).count,
        1
    );
    fs.unmount().expect("unmount");
    fixture.assert_fsck_clean();
}

/// The tail of a grown device may still hold an older filesystem's
/// backups. With the primary unreadable, backups of two filesystems are
/// found: neither is taken (the older one would be written over the
/// primary), fsck and the mount refuse, and nothing is written.
#[test]
fn backups_of_two_filesystems_are_refused_when_the_primary_is_gone() {
    let small = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
    make_filesystem(small.clone(), &MkfsOptions::default()).expect("mkfs");
    let large = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
    make_filesystem(large.clone(), &MkfsOptions::default()).expect("mkfs");
    let mut image = small.to_image();
    let old = large.to_image();
    image.extend_from_slice(&old[32 << 20..]);
    image[4096..8192].fill(0x5a);
    let grown = Arc::new(MemoryDevice::from_image(
        image.clone(),
        SectorSize::Bytes512,
    ));
    let error = fsck(grown.clone(), &mut |_| {}).expect_err("fsck refuses");
    assert!(
        error.to_string().contains("backups of 2 filesystems"),
        "{error}"
    );
    let error = Filesystem::mount(grown.clone(), MountOptions::default()).expect_err("refused");
    assert!(
        error.to_string().contains("backups of 2 filesystems"),
        "{error}"
    );
    assert!(grown.to_image() == image, "nothing written");
}

/// The event records this mount can read of earlier mounts.
fn earlier_records(fs: &Filesystem) -> Vec<vigilfs::format::event_log::EventRecord> {
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        match fs
            .event_log()
            .read_after(after, 1000, std::time::Duration::ZERO)
        {
            ReadOutcome::Records(found) => {
                after = found.last().map_or(after, |record| record.id);
                records.extend(found);
            }
            ReadOutcome::Gap { last, .. } => after = last,
            ReadOutcome::Timeout => return records,
            ReadOutcome::Closed => panic!("the log closed"),
        }
    }
}

/// A writeback whose journal flush fails has written its data and the
/// entry naming it: the unmount's flush can still make them durable. When
/// the failure then stops writes (errors=remount-ro), that data must not be
/// reported lost: it was reported as a writeback failure, and it survives.
#[test]
fn data_written_before_a_failed_flush_is_not_reported_lost_when_writes_stop() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::RemountReadOnly),
        writeback_interval: std::time::Duration::from_secs(3600),
        ..MountOptions::default()
    });
    let (file, handle) = fs
        .create(ROOT_INO, b"written", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"in an entry whose flush failed", &root())
        .unwrap();
    fixture
        .plan
        .add_rule(FaultRule::fail(Errno::EIO).on(Operations::FLUSH))
        .expect("rule");
    assert_eq!(errno(fs.fsync(handle, false)), libc::EIO);
    assert!(
        matches!(fs.status().state, LifeState::ReadOnly(_)),
        "the journal's failure stopped writes"
    );
    // A flush names no bytes: its error has no device range (it said
    // `device 0+0`).
    let journal_errors: Vec<_> = earlier_records(&fs)
        .into_iter()
        .filter(|record| record.subtypes & fserror::Subtypes::JOURNAL.bits() != 0)
        .collect();
    assert!(!journal_errors.is_empty());
    assert!(
        journal_errors
            .iter()
            .all(|record| record.device_range.is_none()),
        "{journal_errors:?}"
    );
    fixture.plan.clear();
    fs.release(handle).unwrap();
    let _ = fs.unmount();

    let fs = fixture.mount();
    assert_eq!(
        read_file(&fs, b"written"),
        b"in an entry whose flush failed"
    );
    let said_lost: Vec<_> = earlier_records(&fs)
        .into_iter()
        .filter(|record| {
            record.inode == Some(file.ino)
                && record.subtypes & fserror::Subtypes::DATA_LOST.bits() != 0
        })
        .collect();
    assert!(
        said_lost.is_empty(),
        "reported lost, yet kept: {said_lost:?}"
    );
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// A read of several blocks the device fails once, and then serves block
/// by block, fails nobody's read, but is an error event with the file's
/// and the device's bytes, and a count: an operator hears of a device
/// that errs. Before, it left no trace (review 47).
#[test]
fn a_device_read_error_a_retry_got_past_is_still_reported() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = vec![7u8; 16 << 10];
    let handle = durable_file_opened_uncached(&fs, b"flaky", &data);
    let ino = fs.lookup(ROOT_INO, b"flaky", &root()).unwrap().ino;
    let errors_before = fs.status().error_record.total;
    fixture
        .plan
        .add_rule(
            FaultRule::fail(Errno::EIO)
                .for_class(IoClass::Data)
                .on(Operations::READ)
                .after(0, Some(1)),
        )
        .expect("rule");
    assert_eq!(fs.read(handle, 0, data.len()).unwrap(), data);
    fs.release(handle).unwrap();
    assert_eq!(fs.status().error_record.total, errors_before + 1);
    let reads: Vec<_> = earlier_records(&fs)
        .into_iter()
        .filter(|record| {
            record.inode == Some(ino) && record.subtypes & fserror::Subtypes::READ.bits() != 0
        })
        .collect();
    assert_eq!(reads.len(), 1, "{reads:#?}");
    assert_eq!(reads[0].errno, libc::EIO);
    assert_eq!(reads[0].range, Some((0, 16 << 10)));
    assert!(reads[0].device_range.is_some(), "{:?}", reads[0]);
    assert!(
        reads[0].text.as_str().contains("read block by block"),
        "{:?}",
        reads[0].text
    );
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

#[test]
fn an_unmount_while_one_file_cannot_be_written_keeps_every_other_change_and_reports_the_loss() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        writeback_interval: std::time::Duration::from_secs(3600),
        ..MountOptions::default()
    });
    fixture.fail_writes(IoClass::Data);
    let (bad, handle) = fs
        .create(ROOT_INO, b"bad", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"never lands", &root()).unwrap();
    fs.release(handle).unwrap();
    // Changes with no data at all, after it.
    fs.mkdir(ROOT_INO, b"after", 0o755, &root()).unwrap();
    fs.create(ROOT_INO, b"empty", 0o644, read_write(), &root())
        .map(|(_, handle)| fs.release(handle).unwrap())
        .unwrap();
    assert_eq!(
        errno(fs.unmount()),
        libc::EIO,
        "the unmount says data was lost"
    );
    fixture.plan.clear();

    let fs = fixture.mount();
    assert!(!fs.recovered(), "the unmount left the image clean");
    for name in [&b"after"[..], b"empty", b"bad"] {
        fs.lookup(ROOT_INO, name, &root())
            .unwrap_or_else(|error| panic!("{}: {error}", String::from_utf8_lossy(name)));
    }
    let lost = earlier_records(&fs).into_iter().any(|record| {
        record.inode == Some(bad.ino) && record.subtypes & fserror::Subtypes::DATA_LOST.bits() != 0
    });
    assert!(lost, "no data-lost event for the file the unmount gave up");
    // And the loss is kept: the file's bytes read as lost, not as the
    // nothing the image holds there, and fsck says so, alone.
    let handle = fs.open(bad.ino, read_write(), &root()).unwrap();
    assert_eq!(errno(fs.read(handle, 0, 11)), libc::EIO);
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    let report = fsck(fixture.device.clone(), &mut |_| {}).expect("fsck");
    let problems: Vec<String> = report
        .problems
        .iter()
        .map(|problem| format!("{}: {}", problem.structure, problem.message))
        .collect();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("lost data: /bad (inode") && problems[0].contains("bytes 0..11"),
        "{problems:#?}"
    );
}

/// Reads go on during a freeze, and can fail: their errors are written to
/// the event log then, not held for the thaw, so a mount process that dies
/// before the thaw leaves them on the image, and the next mount counts
/// them (the frozen image is clean: nothing else would tell of them).
#[test]
fn errors_seen_during_a_freeze_outlive_a_crash_before_the_thaw() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let handle = durable_file_opened_uncached(&fs, b"f", &[7; 8192]);
    fs.freeze().unwrap();
    fixture.fail_reads(IoClass::Data);
    assert_eq!(errno(fs.read(handle, 0, 4096)), libc::EIO);
    let newest = fs.event_log().status().newest_id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs.event_log().status().written_id < newest && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The power goes while frozen: this image is all the next mount has.
    let image = fixture.memory.to_image();
    fixture.plan.clear();
    drop(fs);

    let memory = Arc::new(MemoryDevice::from_image(image, SectorSize::Bytes512));
    let fs = Filesystem::mount(memory, MountOptions::default()).expect("mount");
    assert!(!fs.recovered(), "a frozen image is clean");
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Read).count, 1, "{record:?}");
    fs.unmount().unwrap();
}

/// The kernel reads a page again on its own when its readahead failed:
/// one read a program sees fail reaches the engine as a readahead and a
/// shorter read of the block it failed at. That retry is the same
/// failure, counted once (each was counted, so every failed buffered
/// read counted twice: review 41); reads of the same length, as a
/// program's own direct reads are, each count, and so does a retry that
/// comes a second late.
#[test]
fn the_kernels_retry_of_a_failed_read_is_counted_once() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let handle = durable_file_opened_uncached(&fs, b"f", &[7; 16384]);
    fixture.fail_reads(IoClass::Data);
    let reads = |fs: &Filesystem| fs.status().error_record.counter(ErrorKind::Read).count;
    assert_eq!(errno(fs.read(handle, 0, 16384)), libc::EIO);
    assert_eq!(errno(fs.read(handle, 0, 4096)), libc::EIO);
    assert_eq!(reads(&fs), 1, "the retry counted again");
    assert_eq!(errno(fs.read(handle, 0, 4096)), libc::EIO);
    assert_eq!(errno(fs.read(handle, 0, 4096)), libc::EIO);
    assert_eq!(reads(&fs), 3, "reads a program repeats count each");
    assert_eq!(errno(fs.read(handle, 0, 16384)), libc::EIO);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(errno(fs.read(handle, 0, 4096)), libc::EIO);
    assert_eq!(reads(&fs), 5, "a read a second later is another failure");
    fixture.plan.clear();
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
}

/// The superblock copies hold the error record; while none can be written
/// the record lives only in memory and the event log, and the operator
/// hears of it at once: a metadata error, announced once per run of
/// failures (it used to be said only at the unmount).
#[test]
fn superblock_copies_that_cannot_be_written_are_a_metadata_error_at_once() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        writeback_interval: std::time::Duration::from_millis(50),
        ..MountOptions::default()
    });
    fixture.fail_writes(IoClass::Superblock);
    let handle = durable_file_opened_uncached(&fs, b"f", &[1; 4096]);
    fixture.fail_reads(IoClass::Data);
    assert_eq!(errno(fs.read(handle, 0, 4096)), libc::EIO);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let announced = || {
        event_texts(&fs)
            .iter()
            .filter(|text| text.contains("superblock write failed"))
            .count()
    };
    while announced() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Many more rounds fail: still one announcement for the run.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(announced(), 1, "{:?}", event_texts(&fs));
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Metadata).count, 1, "{record:?}");
    fs.release(handle).unwrap();
    fixture.plan.clear();
    fs.unmount().unwrap();
}

/// A shutdown without flushing drops the metadata changes whose journal
/// entries were never written, as surely as the unwritten pages: each is
/// announced (a journal error marked data lost, naming the operation), not
/// left for `unsynced` to have known and nobody to say.
#[test]
fn metadata_changes_a_shutdown_drops_are_announced() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        writeback_interval: std::time::Duration::from_secs(600),
        ..MountOptions::default()
    });
    let kept = fs.mkdir(ROOT_INO, b"kept", 0o755, &root()).unwrap();
    for name in [&b"a"[..], b"b"] {
        fs.mkdir(ROOT_INO, name, 0o755, &root()).unwrap();
    }
    fs.syncfs_once().unwrap();
    fs.mkdir(kept.ino, b"newdir", 0o755, &root()).unwrap();
    let rename = |from: &[u8], to: &[u8]| {
        fs.rename(ROOT_INO, from, ROOT_INO, to, Default::default(), &root())
            .unwrap();
    };
    rename(b"kept", b"renamed-with-a-name-longer-than-fits");
    // Two more of one directory, with no inode of their own: each its own
    // event (they were folded into the first, "x3").
    rename(b"a", b"a2");
    rename(b"b", b"b2");
    fs.shutdown(false).unwrap();
    let lost: Vec<String> = event_texts(&fs)
        .into_iter()
        .filter(|text| text.starts_with("not durable, lost"))
        .collect();
    assert_eq!(
        lost,
        [
            "not durable, lost: mkdir newdir",
            "not durable, lost: rename kept -> renamed-with-a-name-lo",
            "not durable, lost: rename a -> a2",
            "not durable, lost: rename b -> b2",
        ]
    );
    // (Unmounting a shut-down filesystem leaves it for recovery.)
    fs.unmount().unwrap();
    let fs = fixture.mount();
    assert!(fs.lookup(ROOT_INO, b"kept", &root()).is_ok());
    assert!(
        fs.lookup(kept.ino, b"newdir", &root()).is_err(),
        "it was lost"
    );
    fs.unmount().unwrap();
}

/// A change lost when errors=remount-ro stopped the writes is announced
/// and counted once: the shutdown that followed stopped them again, and
/// announced and counted it a second time.
#[test]
fn a_lost_change_is_announced_once_when_writes_stop_twice() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::RemountReadOnly),
        writeback_interval: std::time::Duration::from_secs(600),
        ..MountOptions::default()
    });
    // Data no writeback reached before the writes stopped.
    let (_, dirty) = fs
        .create(ROOT_INO, b"dirty", 0o644, read_write(), &root())
        .unwrap();
    fs.write(dirty, 0, b"never written", &root()).unwrap();
    fixture.fail_writes(IoClass::Journal);
    fs.mkdir(ROOT_INO, b"one", 0o755, &root()).unwrap();
    let (_, other) = fs
        .create(ROOT_INO, b"other", 0o644, read_write(), &root())
        .unwrap();
    assert!(fs.fsync(other, false).is_err());
    assert!(matches!(fs.status().state, LifeState::ReadOnly(_)));
    let before = fs.status().error_record.total;
    fs.shutdown(true).unwrap();
    let texts = event_texts(&fs);
    let lost: Vec<&String> = texts
        .iter()
        .filter(|text| text.starts_with("not durable, lost: mkdir"))
        .collect();
    assert_eq!(lost, ["not durable, lost: mkdir one"]);
    let unwritten = texts
        .iter()
        .filter(|text| text.starts_with("not written: writes stopped"))
        .count();
    assert_eq!(unwritten, 1, "{texts:?}");
    assert_eq!(fs.status().error_record.total, before);
    // Nothing could be flushed, and the reason does not claim it was.
    let LifeState::ShutDown(why) = fs.status().state else {
        panic!("shut down");
    };
    assert_eq!(why, "shut down (read-only before: nothing flushed)");
    fixture.plan.clear();
    let _ = fs.release(dirty);
    let _ = fs.release(other);
    let _ = fs.unmount();
}

/// A b-tree node whose write failed is named in the error (tree, level,
/// block, device bytes): its new block is in no map yet, so `owners` could
/// not say what it was, and the event said only "metadata".
#[test]
fn a_node_whose_write_failed_is_named_in_the_error() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    fs.mkdir(ROOT_INO, b"d", 0o755, &root()).unwrap();
    fixture.fail_writes(IoClass::Metadata);
    assert!(fs.freeze().is_err(), "the nodes cannot be written");
    fixture.plan.clear();
    let mut named = None;
    let mut after = fs.event_log().mount_first_id().saturating_sub(1);
    while let ReadOutcome::Records(records) =
        fs.event_log()
            .read_after(after, 1000, std::time::Duration::ZERO)
    {
        after = records.last().map_or(after, |record| record.id);
        named = named.or(records.iter().find_map(|record| record.node));
    }
    let node = named.expect("an error naming the node");
    assert!(!node.tree.as_str().is_empty());
    assert!(node.level.is_some(), "{node:?}");
    fs.unmount().unwrap();
}

/// Nodes a commit's splits write, whose write fails, fail no operation
/// (they stay dirty, retried): the failure is announced by the operation
/// that met it, not at the next background round, which a freeze or a
/// crash could come before.
#[test]
fn a_failed_node_write_during_a_commit_is_announced_at_once() {
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        writeback_interval: std::time::Duration::from_secs(600),
        ..MountOptions::default()
    });
    let create = |index: usize| {
        let name = format!("file-with-a-longish-name-{index:05}");
        let (_, handle) = fs
            .create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &root())
            .unwrap();
        fs.release(handle).unwrap();
    };
    (0..300).for_each(create);
    fs.syncfs_once().unwrap();
    fixture.fail_writes(IoClass::Metadata);
    let announced = |fs: &Filesystem| {
        event_texts(fs)
            .iter()
            .any(|text| text.contains("b-tree node write-back failed"))
    };
    let mut created = 300;
    while !announced(&fs) && created < 3000 {
        create(created);
        created += 1;
    }
    assert!(announced(&fs), "no announcement after {created} creates");
    assert_eq!(
        fs.status().error_record.counter(ErrorKind::Metadata).count,
        1
    );
    fixture.plan.clear();
    fs.unmount().unwrap();
}

/// An unmount is coming (the mount process got a signal) while a freeze
/// is still writing back: the freeze must not stand once it is done, or
/// a mount already detached stays frozen with writers waiting, and
/// nothing can reach it. It ends thawed and says why; later ones are
/// refused.
#[test]
fn a_freeze_in_progress_when_freezes_end_ends_thawed() {
    let fixture = Fixture::new();
    let fs = Arc::new(fixture.mount());
    let (_, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, &[3; 256 << 10], &root()).unwrap();
    fs.release(handle).unwrap();
    fixture
        .plan
        .add_rule(FaultRule::delay(50_000, 0, 1))
        .unwrap();
    let freezer = {
        let fs = Arc::clone(&fs);
        std::thread::spawn(move || fs.freeze())
    };
    // The freeze is writing back, slowly.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!fs.end_freezes(), "nothing was frozen yet");
    let frozen = freezer.join().unwrap();
    fixture.plan.clear();
    assert_eq!(errno(frozen), libc::EINVAL);
    assert!(!fs.is_frozen(), "the freeze stood after the unmount began");
    assert_eq!(
        errno(fs.freeze()),
        libc::EINVAL,
        "later freezes are refused"
    );
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// Opens the metadata of the unmounted filesystem on `device`, lets
/// `change` forge records in one transaction, and makes it durable: damage
/// that no checksum sees (a bug, or a hostile image).
fn forge(device: &Arc<dyn BlockDevice>, change: impl FnOnce(&mut vigilfs::btree::Transaction<'_>)) {
    let superblock = vigilfs::format::read_superblock(device.as_ref())
        .unwrap()
        .superblock;
    let metadata = vigilfs::metadata::Metadata::open_default(device.clone(), &superblock).unwrap();
    let mut transaction = metadata.trees.transaction();
    change(&mut transaction);
    transaction.commit().unwrap();
    metadata.trees.sync().unwrap();
    metadata.journal.flush().unwrap();
}

/// A listing with attributes (readdirplus) of the root: each name, and
/// whether its attributes came with it.
fn root_listing_with_attributes(fs: &Filesystem) -> Vec<(Vec<u8>, bool)> {
    let directory = fs.opendir(ROOT_INO, &root()).unwrap();
    fs.readdir_plus(directory, 0, 100)
        .unwrap()
        .into_iter()
        .map(|(item, attr)| (item.name, attr.is_some()))
        .collect()
}

/// An entry naming an inode that does not exist is listed by name alone
/// in a listing with attributes (readdirplus), and reported as the damage
/// it is, as a lookup of its name reports it: it was skipped as a file
/// removed since the listing, and nobody heard.
#[test]
fn an_entry_naming_a_missing_inode_is_reported_by_the_listing_that_meets_it() {
    use vigilfs::inode::{name_hash, Dirent, DirentKey, FileType};
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (_, handle) = fs
        .create(ROOT_INO, b"real", 0o644, read_write(), &root())
        .unwrap();
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    forge(&fixture.device, |transaction| {
        let key = DirentKey {
            parent: ROOT_INO,
            hash: name_hash(b"ghost"),
            collision: 0,
        };
        let entry = Dirent {
            child: 999_999,
            file_type: FileType::Regular,
            name: b"ghost".to_vec(),
        };
        transaction
            .put(
                vigilfs::btree::TreeId::Dirents,
                &key.encode(),
                &entry.encode(),
            )
            .unwrap();
    });

    let fs = fixture.mount();
    let listed = root_listing_with_attributes(&fs);
    assert!(listed.contains(&(b"real".to_vec(), true)), "{listed:?}");
    assert!(listed.contains(&(b"ghost".to_vec(), false)), "{listed:?}");
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Metadata).count, 1, "{record:?}");
    let LifeState::ReadOnly(reason) = fs.status().state else {
        panic!("errors=remount-ro did not act");
    };
    assert!(reason.contains("missing inode 999999"), "{reason}");
}

/// One damaged inode record in a directory costs a listing with
/// attributes that entry's attributes alone: the listing failed with EIO
/// at the damaged entry, hiding every intact name after it from `ls -l`,
/// `cp -a` and `tar`; then it left the name out, hiding it without a word
/// (and a batch of damaged names ended the listing). As on ext4, the name
/// is listed and what needs its attributes fails.
#[test]
fn a_damaged_record_in_a_listing_costs_that_entry_its_attributes_alone() {
    use vigilfs::inode::inode_key;
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let mut damaged = None;
    for name in [&b"a"[..], b"b", b"c", b"d"] {
        let (attr, handle) = fs
            .create(ROOT_INO, name, 0o644, read_write(), &root())
            .unwrap();
        fs.release(handle).unwrap();
        if name == b"b" {
            damaged = Some(attr);
        }
    }
    fs.unmount().unwrap();
    let damaged = damaged.unwrap();
    let mut record = damaged.record;
    record.size = u64::MAX;
    forge(&fixture.device, |transaction| {
        transaction
            .put(
                vigilfs::btree::TreeId::Inodes,
                &inode_key(damaged.ino),
                &record.encode(),
            )
            .unwrap();
    });

    let fs = fixture.mount_with(MountOptions {
        errors: Some(ErrorsPolicy::Continue),
        ..MountOptions::default()
    });
    let listed = root_listing_with_attributes(&fs);
    for intact in [&b"a"[..], b"c", b"d"] {
        assert!(listed.contains(&(intact.to_vec(), true)), "{listed:?}");
    }
    assert!(listed.contains(&(b"b".to_vec(), false)), "{listed:?}");
    let record = fs.status().error_record;
    assert!(record.counter(ErrorKind::Metadata).count >= 1, "{record:?}");
}

/// A damaged record met by a read of attributes is damage like any other:
/// counted, announced and acted on by `errors=`, not only an EIO to the
/// reader (getxattr and listxattr did not pass their errors on).
#[test]
fn a_damaged_attribute_record_met_by_getxattr_is_a_metadata_error() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (file, handle) = fs
        .create(ROOT_INO, b"f", 0o644, read_write(), &root())
        .unwrap();
    fs.release(handle).unwrap();
    fs.setxattr(
        file.ino,
        b"user.big",
        &[7; 2000],
        vigilfs::inode::XattrFlags::default(),
        &root(),
    )
    .unwrap();
    fs.unmount().unwrap();
    // A value in pieces claiming 4 GiB, which no write makes.
    let mut key = file.ino.to_be_bytes().to_vec();
    key.extend_from_slice(b"user.big");
    forge(&fixture.device, |transaction| {
        transaction
            .put(
                vigilfs::btree::TreeId::Xattrs,
                &key,
                &[2, 0xff, 0xff, 0xff, 0xff],
            )
            .unwrap();
    });

    let fs = fixture.mount();
    assert_eq!(
        errno(fs.getxattr(file.ino, b"user.big", &root())),
        libc::EIO
    );
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Metadata).count, 1, "{record:?}");
    assert!(matches!(fs.status().state, LifeState::ReadOnly(_)));
}

/// A root directory whose record is gone or names another type refuses
/// the mount, saying so: the mount served nothing (every request failed)
/// and the command's message named a failed stat of the mount point.
#[test]
fn a_missing_or_wrong_root_directory_refuses_the_mount_naming_it() {
    use vigilfs::inode::{inode_key, InodeRecord};
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let root_record = fs.getattr(ROOT_INO).unwrap().record;
    fs.unmount().unwrap();
    let file_mode = InodeRecord {
        mode: libc::S_IFREG | 0o644,
        ..root_record
    };
    for (damage, says) in [
        (None, "the root directory (inode 1) is missing"),
        (
            Some(file_mode),
            "the root directory (inode 1) is not a directory",
        ),
    ] {
        forge(&fixture.device, |transaction| match damage {
            None => transaction
                .delete(vigilfs::btree::TreeId::Inodes, &inode_key(ROOT_INO))
                .unwrap(),
            Some(record) => transaction
                .put(
                    vigilfs::btree::TreeId::Inodes,
                    &inode_key(ROOT_INO),
                    &record.encode(),
                )
                .unwrap(),
        });
        let Err(error) = Filesystem::mount(fixture.device.clone(), MountOptions::default()) else {
            panic!("the mount is refused");
        };
        assert!(error.to_string().starts_with(says), "{error}");
    }
}

/// A filesystem with one file, `kept`, of data and one attribute, whose
/// `tree`'s root node then has a flipped bit: the fixture, the file and
/// the root's block.
fn file_with_unreadable_root(tree: vigilfs::btree::TreeId) -> (Fixture, vigilfs::fs::Attr, u64) {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let (file, handle) = fs
        .create(ROOT_INO, b"kept", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"intact data", &root()).unwrap();
    fs.release(handle).unwrap();
    fs.setxattr(
        file.ino,
        b"user.a",
        b"hello",
        vigilfs::inode::XattrFlags::default(),
        &root(),
    )
    .unwrap();
    fs.unmount().unwrap();
    let superblock = vigilfs::format::read_superblock(fixture.device.as_ref())
        .unwrap()
        .superblock;
    let block = vigilfs::metadata::Metadata::open_default(fixture.device.clone(), &superblock)
        .unwrap()
        .trees
        .roots()
        .into_iter()
        .find(|root| root.tree == tree)
        .unwrap()
        .block;
    let block_size = u64::from(superblock.layout.block_size);
    let mut node = vec![0; block_size as usize];
    fixture
        .memory
        .read_at(block * block_size, &mut node, IoClass::Metadata)
        .unwrap();
    node[900] ^= 0x10;
    fixture
        .memory
        .write_at(block * block_size, &node, IoClass::Metadata)
        .unwrap();
    (fixture, file, block)
}

/// A read that meets the unreadable extents tree of a salvaged mount
/// names the file it cost (the error named only the tree).
#[test]
fn a_read_meeting_an_unreadable_extents_tree_names_its_file() {
    let (fixture, file, _) = file_with_unreadable_root(vigilfs::btree::TreeId::Extents);
    let fs = fixture.mount_with(MountOptions {
        read_only: true,
        errors: Some(ErrorsPolicy::Continue),
        ..MountOptions::default()
    });
    let handle = fs
        .open(file.ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    assert_eq!(errno(fs.read(handle, 0, 4096)), libc::EIO);
    fs.release(handle).unwrap();
    // Among the errors (the mount's own report of the unreadable tree may
    // land after the read's: it goes through the intake's thread).
    let records = event_records(&fs);
    assert!(
        records.iter().any(|record| record.inode == Some(file.ino)),
        "{:?}",
        event_texts(&fs)
    );
    fs.unmount().unwrap();
}

/// One unreadable node at the top of a tree of file records (here the
/// attributes tree's root) no longer hides every file: a read-write mount
/// is refused, saying that a read-only one salvages around it, and the
/// read-only mount reads the files, fails that tree's operations with EIO
/// and records the damage at once. Both mounts were refused, so one bad
/// block made every intact file unreachable.
#[test]
fn a_read_only_mount_salvages_around_an_unreadable_tree_of_file_records() {
    let (fixture, file, xattrs_root) = file_with_unreadable_root(vigilfs::btree::TreeId::Xattrs);

    let Err(refused) = Filesystem::mount(fixture.device.clone(), MountOptions::default()) else {
        panic!("a read-write mount over an unreadable tree is refused");
    };
    let said = refused.to_string();
    assert!(
        said.contains(&format!(
            "xattrs b-tree node at block {xattrs_root} is corrupt"
        )) && said.contains("`-o ro`"),
        "{said}"
    );
    let fs = fixture.mount_with(MountOptions {
        read_only: true,
        errors: Some(ErrorsPolicy::Continue),
        ..MountOptions::default()
    });
    assert_eq!(read_file(&fs, b"kept"), b"intact data");
    assert_eq!(errno(fs.getxattr(file.ino, b"user.a", &root())), libc::EIO);
    assert_eq!(
        fs.unreadable_trees().len(),
        1,
        "{:?}",
        fs.unreadable_trees()
    );
    assert_eq!(
        fs.status().state,
        LifeState::ReadOnly(
            "mounted read-only around the xattrs b-tree, which could not be read".into()
        )
    );
    let record = fs.status().error_record;
    assert!(
        record.counter(ErrorKind::Metadata).count >= 2,
        "the damage at mount, then getxattr's: {record:?}"
    );
    assert_eq!(
        record.first.as_ref().and_then(|first| first.block),
        Some(xattrs_root)
    );
    // remount,rw would build on a tree whose records are unknown.
    let refused = fs.make_writable().unwrap_err().to_string();
    assert!(
        refused.contains("the xattrs b-tree could not be read at mount"),
        "{refused}"
    );
    fs.unmount().unwrap();
    assert!(Filesystem::mount(fixture.device.clone(), MountOptions::default()).is_err());
}

/// A power cut on a disk that acknowledged flushes it did not make can
/// leave the journal without an entry replay needs and a completed flush
/// covered. A read-write mount must refuse (it would build on acknowledged
/// metadata that is gone), but a read-only one goes on from the newest
/// whole chain before the gap, says so, and shows what was there: it used
/// to refuse too, and nothing reached the files (review 23).
#[test]
fn a_read_only_mount_reaches_the_files_before_a_flushed_entry_a_lying_disk_lost() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    for name in [&b"before"[..], b"first", b"second", b"third"] {
        let (_, handle) = fs
            .create(ROOT_INO, name, 0o644, read_write(), &root())
            .unwrap();
        fs.write(handle, 0, name, &root()).unwrap();
        fs.fsync(handle, false).unwrap();
        fs.release(handle).unwrap();
    }
    let mut image = fixture.memory.to_image();
    drop(fs);
    // The entries on the device, and one in the middle of the chain the
    // newest needs, covered by a flush: the one a lying disk lost.
    let superblock = vigilfs::format::read_superblock(fixture.memory.as_ref())
        .unwrap()
        .superblock;
    let block = u64::from(superblock.layout.block_size) as usize;
    let journal = superblock.layout.journal;
    let headers: Vec<(usize, vigilfs::journal::EntryHeader)> = (journal.start
        ..journal.start + journal.blocks)
        .filter_map(|index| {
            let at = index as usize * block;
            vigilfs::journal::decode_header(&image[at..at + block], &superblock.uuid.0, block)
                .ok()
                .map(|header| (at, header))
        })
        .collect();
    let newest = headers
        .iter()
        .map(|(_, header)| *header)
        .max_by_key(|h| h.seq)
        .unwrap();
    let durable = headers.iter().map(|(_, h)| h.durable_seq).max().unwrap();
    let (at, lost) = headers
        .iter()
        .filter(|(_, h)| h.seq > newest.last_seq && h.seq < newest.seq && h.seq <= durable)
        .max_by_key(|(_, h)| h.seq)
        .map(|(at, h)| (*at, h.seq))
        .expect("a flushed entry in the middle of the chain");
    image[at..at + block].fill(0);
    let device: Arc<dyn BlockDevice> =
        Arc::new(MemoryDevice::from_image(image, SectorSize::Bytes512));

    let Err(refused) = Filesystem::mount(device.clone(), MountOptions::default()) else {
        panic!("a read-write mount refuses");
    };
    let refused = refused.to_string();
    assert!(
        refused.contains(&format!("entry {lost}"))
            && refused.contains("mounted read-only, `-o ro`"),
        "{refused}"
    );
    let fs = Filesystem::mount(
        device,
        MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    )
    .expect("a read-only mount goes on from before the gap");
    assert!(fs.lookup(ROOT_INO, b"before", &root()).is_ok());
    assert!(
        event_texts(&fs)
            .iter()
            .any(|text| text.starts_with(&format!("flushed entries {lost}+ lost"))),
        "{:?}",
        event_texts(&fs)
    );
    assert_eq!(
        fs.status().error_record.counter(ErrorKind::Journal).count,
        1
    );
    // Nor may it be made writable: the trees it rebuilt may point at
    // blocks the lost entries had freed and reused (it was, and fsck then
    // called the image clean: review 24).
    let refused = fs
        .make_writable()
        .expect_err("remount,rw refused")
        .to_string();
    assert!(
        refused.contains("acknowledged durable and are lost"),
        "{refused}"
    );
    fs.unmount().expect("unmount");
}
