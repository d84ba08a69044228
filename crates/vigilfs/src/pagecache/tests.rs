//! What the integration tests cannot see: the shape of the page cache
//! (large entries and their splits) as file operations change it.

use std::ops::Range;
use std::sync::Arc;

use xarray::Mark;

use super::{LARGE_ORDER, PAGE, PAGE_BYTES};
use crate::device::{BlockDevice, MemoryDevice, SectorSize};
use crate::inode::{FallocateMode, Files, Handle, Namespace, ROOT_INO};
use crate::metadata::Metadata;
use crate::mkfs::{make_filesystem, MkfsOptions};
use crate::writeback::tests::pattern;

/// The cached entries of `ino` as (first page, order, dirty).
fn shape(files: &Files, ino: u64) -> Vec<(u64, u8, bool)> {
    let cache = files.cache.lock();
    let state = &cache.inodes[&ino];
    state
        .pages
        .iter()
        .map(|(span, _)| {
            (
                span.index(),
                span.order(),
                state.pages.is_marked(span.index(), Mark::Dirty),
            )
        })
        .collect()
}

/// Reads the whole file through `handle` and compares with `model`.
fn check(files: &Files, handle: &Handle, model: &[u8]) {
    let read = files.read(handle, 0, model.len() + PAGE_BYTES).unwrap();
    assert!(read == model, "contents differ");
    let stats = files.cache_stats();
    assert!(stats.dirty_bytes <= stats.cached_bytes);
}

fn small(pages: Range<u64>, dirty: bool) -> Vec<(u64, u8, bool)> {
    pages.map(|index| (index, 0, dirty)).collect()
}

#[test]
fn whole_aligned_runs_are_large_entries_split_by_partial_changes() {
    let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
    let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).unwrap();
    let metadata = Arc::new(Metadata::open_default(device.clone(), &superblock).unwrap());
    let (ino, _) = Namespace::new(metadata.clone())
        .create(ROOT_INO, b"f", 0o644, 0, 0)
        .unwrap();
    let files = Files::new(device, &superblock, metadata).unwrap();
    let mut handle = files.open(ino).unwrap();
    let mut model = pattern(40 * PAGE_BYTES, 3);

    // Pages 0..40 in one write: two large entries, then 8 small ones.
    files.write(&handle, 0, &model).unwrap();
    let mut expected = vec![(0, LARGE_ORDER, true), (16, LARGE_ORDER, true)];
    expected.extend(small(32..40, true));
    assert_eq!(shape(&files, ino), expected);
    check(&files, &handle, &model);
    assert_eq!(files.cache_stats().dirty_bytes, 40 * PAGE);

    // Writeback keeps them large and clean.
    files.fsync(&mut handle).unwrap();
    let mut expected = vec![(0, LARGE_ORDER, false), (16, LARGE_ORDER, false)];
    expected.extend(small(32..40, false));
    assert_eq!(shape(&files, ino), expected);
    check(&files, &handle, &model);

    // A partial overwrite of page 5 splits the first entry; only page
    // 5 becomes dirty.
    files.write(&handle, 5 * PAGE + 10, b"abc").unwrap();
    model[5 * PAGE_BYTES + 10..5 * PAGE_BYTES + 13].copy_from_slice(b"abc");
    let mut expected = small(0..5, false);
    expected.push((5, 0, true));
    expected.extend(small(6..16, false));
    expected.push((16, LARGE_ORDER, false));
    expected.extend(small(32..40, false));
    assert_eq!(shape(&files, ino), expected);
    check(&files, &handle, &model);

    // Rewriting a whole run replaces the small entries by a large one.
    let run = pattern(16 * PAGE_BYTES, 9);
    files.write(&handle, 0, &run).unwrap();
    model[..16 * PAGE_BYTES].copy_from_slice(&run);
    assert_eq!(shape(&files, ino)[0], (0, LARGE_ORDER, true));
    assert_eq!(shape(&files, ino).len(), 1 + 1 + 8);
    check(&files, &handle, &model);
    files.fsync(&mut handle).unwrap();

    // Truncating into the second run splits it; a punch across the
    // first one splits that.
    files.truncate(ino, 20 * PAGE + 7).unwrap();
    model.truncate(20 * PAGE_BYTES + 7);
    let mut expected = vec![(0, LARGE_ORDER, false)];
    expected.extend(small(16..20, false));
    expected.push((20, 0, true));
    assert_eq!(shape(&files, ino), expected);
    check(&files, &handle, &model);
    files
        .fallocate(
            ino,
            2 * PAGE,
            3 * PAGE,
            FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
        )
        .unwrap();
    model[2 * PAGE_BYTES..5 * PAGE_BYTES].fill(0);
    let mut expected = small(0..2, false);
    expected.extend(small(5..20, false));
    expected.push((20, 0, true));
    assert_eq!(shape(&files, ino), expected);
    check(&files, &handle, &model);

    // Eviction splits a clean large entry only to trim the last few
    // pages over the budget.
    files.fsync(&mut handle).unwrap();
    files.set_cache_budget(0);
    assert_eq!(files.cache_stats().cached_bytes, 0);
    assert!(shape(&files, ino).is_empty());
    files.set_cache_budget(20 * PAGE);
    let run = pattern(16 * PAGE_BYTES, 11);
    files.write(&handle, 32 * PAGE, &run).unwrap();
    model.resize(32 * PAGE_BYTES, 0);
    model.extend_from_slice(&run);
    files.fsync(&mut handle).unwrap();
    assert_eq!(shape(&files, ino), vec![(32, LARGE_ORDER, false)]);
    files.set_cache_budget(4 * PAGE);
    assert_eq!(shape(&files, ino), small(44..48, false));
    // Pages 0, 1 and 5..=20 at the zero budget, then 32..44.
    assert_eq!(files.cache_stats().evicted_pages, 18 + 12);
    check(&files, &handle, &model);
    assert_eq!(files.cache_stats().cached_bytes, 4 * PAGE);
    files.release(handle);
}
