//! The page cache's memory bound: reads fill the cache with clean pages,
//! clean pages are evicted oldest first to stay within the budget, dirty
//! and failed pages never are, and forget drops a deleted inode's state;
//! over a fault-injecting device so tests can tell cache hits from device
//! reads. Every test ends with a clean fsck.

mod common;

use common::{create, errno, pattern, Fixture};

use std::sync::Arc;

use vigilfs::device::Operations;
use vigilfs::inode::{
    CacheStats, FallocateMode, FileError, Files, Namespace, DEFAULT_CACHE_BUDGET, PAGE_BYTES,
    ROOT_INO,
};
use vigilfs::metadata::Metadata;

const PAGE: u64 = PAGE_BYTES as u64;

/// Creates file `name` holding `bytes`, written back.
fn file_with(files: &Files, metadata: &Arc<Metadata>, name: &[u8], bytes: &[u8]) -> u64 {
    let ino = create(metadata, name);
    let mut handle = files.open(ino).unwrap();
    files.write(&handle, 0, bytes).unwrap();
    files.fsync(&mut handle).unwrap();
    files.release(handle);
    ino
}

fn read_page(files: &Files, ino: u64, index: u64) -> Result<Vec<u8>, FileError> {
    let handle = files.open(ino).unwrap();
    let read = files.read(&handle, index * PAGE, PAGE_BYTES);
    files.release(handle);
    read
}

#[test]
fn reads_fill_the_cache_so_repeated_reads_do_not_touch_the_device() {
    let fixture = Fixture::new();
    let data = pattern(16 * PAGE_BYTES, 1);
    let ino;
    {
        let metadata = fixture.mount();
        let files = fixture.files(&metadata);
        ino = file_with(&files, &metadata, b"f", &data);
        fixture.assert_fsck_clean(&metadata);
    }
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    assert_eq!(files.cache_stats(), CacheStats::default());
    for index in 0..4 {
        assert_eq!(
            read_page(&files, ino, index).unwrap(),
            data[index as usize * PAGE_BYTES..(index as usize + 1) * PAGE_BYTES]
        );
    }
    assert_eq!(
        files.cache_stats(),
        CacheStats {
            cached_bytes: 4 * PAGE,
            dirty_bytes: 0,
            evicted_pages: 0,
            inodes: 1,
        }
    );

    // Holes and unwritten blocks are not cached (they are not data).
    files.truncate(ino, 20 * PAGE).unwrap();
    files
        .fallocate(ino, 20 * PAGE, 4 * PAGE, FallocateMode::ALLOCATE)
        .unwrap();
    let handle = files.open(ino).unwrap();
    let tail = files.read(&handle, 16 * PAGE, 8 * PAGE_BYTES).unwrap();
    assert_eq!(tail, vec![0; 8 * PAGE_BYTES]);
    assert_eq!(files.cache_stats().cached_bytes, 4 * PAGE);

    // With data reads failing, cached pages still read; the others do not.
    let rule = fixture.fail_data(Operations::READ);
    assert_eq!(
        files.read(&handle, 0, 4 * PAGE_BYTES).unwrap(),
        data[..4 * PAGE_BYTES]
    );
    assert_eq!(errno(read_page(&files, ino, 5)), libc::EIO);
    fixture.plan.remove_rule(rule);
    files.release(handle);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn reading_a_file_larger_than_the_budget_stays_within_it() {
    let fixture = Fixture::new();
    let data = pattern(64 * PAGE_BYTES, 2);
    let ino;
    {
        let metadata = fixture.mount();
        let files = fixture.files(&metadata);
        ino = file_with(&files, &metadata, b"big", &data);
        // Writeback leaves the pages cached and clean: 64 pages, within
        // the default budget.
        assert_eq!(files.cache_stats().cached_bytes, 64 * PAGE);
        const { assert!(DEFAULT_CACHE_BUDGET >= 64 * PAGE) };
        fixture.assert_fsck_clean(&metadata);
    }
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let budget = 16 * PAGE;
    files.set_cache_budget(budget);
    let handle = files.open(ino).unwrap();
    for round in 0..2 {
        for index in 0..64u64 {
            let page = files.read(&handle, index * PAGE, PAGE_BYTES).unwrap();
            assert!(
                page == data[index as usize * PAGE_BYTES..(index as usize + 1) * PAGE_BYTES],
                "page {index} in round {round}"
            );
            let stats = files.cache_stats();
            assert!(stats.cached_bytes <= budget, "{stats:?}");
        }
    }
    // One read of the whole file, larger than the budget, stays within it.
    assert!(files.read(&handle, 0, data.len()).unwrap() == data);
    let stats = files.cache_stats();
    assert_eq!(stats.cached_bytes, budget);
    assert_eq!(stats.evicted_pages, 3 * 64 - 16);

    // Oldest first: the last 16 pages read are the ones cached.
    let rule = fixture.fail_data(Operations::READ);
    assert!(files.read(&handle, 48 * PAGE, 16 * PAGE_BYTES).unwrap() == data[48 * PAGE_BYTES..]);
    assert_eq!(errno(files.read(&handle, 47 * PAGE, PAGE_BYTES)), libc::EIO);
    fixture.plan.remove_rule(rule);

    // Shrinking the budget evicts at once; zero caches nothing.
    files.set_cache_budget(4 * PAGE);
    assert_eq!(files.cache_stats().cached_bytes, 4 * PAGE);
    files.set_cache_budget(0);
    assert_eq!(files.cache_stats().cached_bytes, 0);
    assert!(files.read(&handle, 0, data.len()).unwrap() == data);
    assert_eq!(files.cache_stats().cached_bytes, 0);
    files.release(handle);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn dirty_and_failed_pages_are_never_evicted() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let other = pattern(32 * PAGE_BYTES, 3);
    let other_ino = file_with(&files, &metadata, b"other", &other);
    files.set_cache_budget(4 * PAGE);
    assert_eq!(files.cache_stats().cached_bytes, 4 * PAGE);

    let ino = create(&metadata, b"dirty");
    let mut handle = files.open(ino).unwrap();
    let data = pattern(24 * PAGE_BYTES, 4);
    files.write(&handle, 0, &data).unwrap();
    let stats = files.cache_stats();
    assert_eq!(stats.dirty_bytes, 24 * PAGE);
    assert_eq!(stats.cached_bytes, 28 * PAGE);

    // Reading a file far larger than the budget evicts only clean pages.
    let other_handle = files.open(other_ino).unwrap();
    assert!(files.read(&other_handle, 0, other.len()).unwrap() == other);
    let stats = files.cache_stats();
    assert_eq!(stats.dirty_bytes, 24 * PAGE);
    assert_eq!(stats.cached_bytes, 28 * PAGE);
    assert!(files.read(&handle, 0, data.len()).unwrap() == data);

    // Failed writeback: the pages stay dirty and cached whatever the budget.
    let rule = fixture.fail_data(Operations::WRITE);
    assert_eq!(errno(files.fsync(&mut handle)), libc::EIO);
    files.set_cache_budget(0);
    let stats = files.cache_stats();
    assert_eq!(stats.dirty_bytes, 24 * PAGE);
    assert_eq!(stats.cached_bytes, 24 * PAGE);
    fixture.plan.remove_rule(rule);
    assert!(files.read(&handle, 0, data.len()).unwrap() == data);

    // Written back, they become clean and the budget applies to them.
    files.set_cache_budget(8 * PAGE);
    files.fsync(&mut handle).unwrap();
    let stats = files.cache_stats();
    assert_eq!(stats.dirty_bytes, 0);
    assert_eq!(stats.cached_bytes, 8 * PAGE);
    assert!(files.read(&handle, 0, data.len()).unwrap() == data);
    assert!(files.cache_stats().cached_bytes <= 8 * PAGE);
    files.release(handle);
    files.release(other_handle);
    fixture.assert_fsck_clean(&metadata);

    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let handle = files.open(ino).unwrap();
    assert!(files.read(&handle, 0, data.len()).unwrap() == data);
    files.release(handle);
}

#[test]
fn forget_drops_the_pages_and_errors_of_a_deleted_inode() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let names = Namespace::new(metadata.clone());
    let keep = pattern(2 * PAGE_BYTES, 5);
    let kept = file_with(&files, &metadata, b"kept", &keep);
    metadata.trees.sync().unwrap();
    metadata.journal.flush().unwrap();
    let free_before = metadata.allocator.status().free_blocks;

    let ino = file_with(&files, &metadata, b"doomed", &pattern(3 * PAGE_BYTES, 6));
    let mut handle = files.open(ino).unwrap();
    files
        .write(&handle, 0, &pattern(5 * PAGE_BYTES, 7))
        .unwrap();
    let rule = fixture.fail_data(Operations::WRITE);
    assert_eq!(errno(files.fsync(&mut handle)), libc::EIO);
    fixture.plan.remove_rule(rule);
    assert_eq!(files.cache_stats().dirty_bytes, 5 * PAGE);
    assert_eq!(errno(files.peek_error(ino)), libc::EIO);

    names.unlink(ROOT_INO, b"doomed").unwrap();
    files.forget(ino);
    let stats = files.cache_stats();
    assert_eq!(stats.dirty_bytes, 0);
    assert_eq!(stats.cached_bytes, 2 * PAGE, "only the kept file's pages");
    // Nothing left to write back, and the inode is gone for the handle.
    let summary = files.writeback_all();
    assert_eq!(summary.pages_written, 0);
    assert!(summary.failed_inodes.is_empty());
    assert_eq!(errno(files.fsync(&mut handle)), libc::ENOENT);
    assert_eq!(errno(files.peek_error(ino)), libc::ENOENT);
    files.forget(ino);
    files.release(handle);

    let kept_handle = files.open(kept).unwrap();
    assert!(files.read(&kept_handle, 0, keep.len()).unwrap() == keep);
    files.release(kept_handle);
    metadata.trees.sync().unwrap();
    metadata.journal.flush().unwrap();
    assert_eq!(metadata.allocator.status().free_blocks, free_before);
    fixture.assert_fsck_clean(&metadata);
}
