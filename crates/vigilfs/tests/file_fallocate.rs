//! fallocate (allocation as unwritten extents, KEEP_SIZE, punching holes),
//! SEEK_DATA / SEEK_HOLE, and a model-based property test of write, punch,
//! allocate, truncate and fsync across a remount; every test ends with a
//! clean fsck.

use std::collections::BTreeSet;

mod common;

use common::{create, durable, errno, extents, pattern, Fixture};
use proptest::prelude::*;
use vigilfs::inode::{Extent, FallocateMode, Files, Namespace, Seek, PAGE_BYTES, ROOT_INO};
use vigilfs::metadata::Metadata;
use vigilfs::rmap::{self, Owner};

const PAGE: u64 = PAGE_BYTES as u64;
const ALLOCATE: FallocateMode = FallocateMode::ALLOCATE;
const KEEP_SIZE: FallocateMode = FallocateMode::KEEP_SIZE;

fn punch_mode() -> FallocateMode {
    FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE
}

/// The rmap records owned by `ino`'s data: (start, blocks, file offset).
fn rmap_of(metadata: &Metadata, ino: u64) -> Vec<(u64, u64, u64)> {
    let mut found: Vec<(u64, u64, u64)> = rmap::records(&metadata.trees)
        .expect("rmap records")
        .into_iter()
        .filter_map(|record| match record.owner {
            Owner::FileData {
                ino: owner,
                file_offset_blocks,
            } if owner == ino => Some((record.start, record.blocks, file_offset_blocks)),
            _ => None,
        })
        .collect();
    found.sort_unstable();
    found
}

/// Extents and rmap records agree one to one.
fn assert_extents_match_rmap(metadata: &Metadata, ino: u64) {
    let mut from_extents: Vec<(u64, u64, u64)> = extents(metadata, ino)
        .into_iter()
        .map(|(offset, extent)| (extent.physical, u64::from(extent.blocks()), offset))
        .collect();
    from_extents.sort_unstable();
    assert_eq!(from_extents, rmap_of(metadata, ino));
}

/// `ino`'s extents as (file offset, blocks, unwritten).
fn layout(metadata: &Metadata, ino: u64) -> Vec<(u64, u32, bool)> {
    extents(metadata, ino)
        .into_iter()
        .map(|(offset, extent)| {
            (
                offset,
                extent.blocks(),
                extent.flags & Extent::UNWRITTEN != 0,
            )
        })
        .collect()
}

fn assert_reads(files: &Files, ino: u64, model: &[u8]) {
    let handle = files.open(ino).unwrap();
    assert_eq!(files.size(&handle).unwrap(), model.len() as u64);
    let read = files
        .read(&handle, 0, model.len() + 3 * PAGE_BYTES)
        .unwrap();
    assert!(read == model, "file contents differ from the model");
    files.release(handle);
}

fn free_blocks(metadata: &Metadata) -> u64 {
    durable(metadata);
    metadata.allocator.status().free_blocks
}

#[test]
fn allocated_range_reads_zeros_and_grows_the_size_unless_keep_size() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"f");
    let files = fixture.files(&metadata);
    let mut handle = files.open(ino).unwrap();
    let mut model = pattern(PAGE_BYTES + 10, 3);
    files.write(&handle, 0, &model).unwrap();
    files.fsync(&mut handle).unwrap();
    let written = extents(&metadata, ino);
    let free_before = free_blocks(&metadata);

    // From inside the written block 1 to the middle of block 8: blocks
    // 0 and 1 are already there, 2..=8 are new and unwritten.
    files
        .fallocate(ino, PAGE + 20, 7 * PAGE + 100, ALLOCATE)
        .unwrap();
    model.resize(8 * PAGE_BYTES + 120, 0);
    assert_reads(&files, ino, &model);
    assert_eq!(
        layout(&metadata, ino),
        vec![(0, 2, false), (2, 7, true)],
        "the written extent is untouched, the holes are unwritten"
    );
    assert_eq!(extents(&metadata, ino)[0], written[0]);
    assert_extents_match_rmap(&metadata, ino);
    assert_eq!(free_blocks(&metadata), free_before - 7);
    let names = Namespace::new(metadata.clone());
    assert_eq!(names.getattr(ino).unwrap().size, model.len() as u64);

    // Again over the same range: nothing to allocate, nothing changes.
    files.fallocate(ino, 0, 8 * PAGE + 120, ALLOCATE).unwrap();
    assert_eq!(free_blocks(&metadata), free_before - 7);

    // KEEP_SIZE past the end: blocks, but the size and reads stay.
    files
        .fallocate(ino, 10 * PAGE, 4 * PAGE, KEEP_SIZE)
        .unwrap();
    assert_reads(&files, ino, &model);
    assert_eq!(names.getattr(ino).unwrap().size, model.len() as u64);
    assert_eq!(
        layout(&metadata, ino),
        vec![(0, 2, false), (2, 7, true), (10, 4, true)]
    );
    assert_eq!(free_blocks(&metadata), free_before - 11);
    assert_extents_match_rmap(&metadata, ino);
    files.release(handle);
    fixture.assert_fsck_clean(&metadata);

    // Unwritten extents survive a remount, still reading as zeros.
    drop(files);
    drop(metadata);
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    assert_reads(&files, ino, &model);
    assert_eq!(layout(&metadata, ino).len(), 3);
    fixture.assert_fsck_clean(&metadata);
}

/// ftruncate growing a file over space `fallocate` reserved past its end
/// (`KEEP_SIZE`) keeps the reservation, as ext4 and XFS do: writes into it
/// must not meet ENOSPC later. Shrinking frees it.
/// An allocation over blocks the file has already sets its times, as
/// ext4's does (review 54: only one that found a hole set them).
#[test]
fn allocating_a_range_already_written_sets_the_times() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"f");
    let files = fixture.files(&metadata);
    let mut handle = files.open(ino).unwrap();
    files
        .write(&handle, 0, &pattern(2 * PAGE_BYTES, 5))
        .unwrap();
    files.fsync(&mut handle).unwrap();
    let namespace = Namespace::new(metadata.clone());
    for mode in [ALLOCATE, KEEP_SIZE] {
        let before = namespace.getattr(ino).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        files.fallocate(ino, 0, 2 * PAGE, mode).unwrap();
        let after = namespace.getattr(ino).unwrap();
        assert!(after.mtime > before.mtime, "{mode:?}: {after:?}");
        assert!(after.ctime > before.ctime, "{mode:?}: {after:?}");
        assert_eq!(after.size, 2 * PAGE);
    }
}

#[test]
fn growing_a_file_keeps_the_blocks_reserved_past_its_end() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"log");
    let files = fixture.files(&metadata);
    let free_before = free_blocks(&metadata);
    files.fallocate(ino, 0, 8 * PAGE, KEEP_SIZE).unwrap();
    assert_eq!(free_blocks(&metadata), free_before - 8);

    files.truncate(ino, 7).unwrap();
    assert_eq!(
        layout(&metadata, ino),
        vec![(0, 8, true)],
        "a grow cuts nothing"
    );
    assert_eq!(free_blocks(&metadata), free_before - 8);
    assert_reads(&files, ino, &[0; 7]);
    assert_extents_match_rmap(&metadata, ino);

    files.truncate(ino, 3 * PAGE).unwrap();
    assert_eq!(layout(&metadata, ino), vec![(0, 8, true)]);
    files.truncate(ino, PAGE + 1).unwrap();
    assert_eq!(
        layout(&metadata, ino),
        vec![(0, 2, true)],
        "a shrink frees what lies past the new end"
    );
    assert_eq!(free_blocks(&metadata), free_before - 2);
    assert_extents_match_rmap(&metadata, ino);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn writing_over_unwritten_extents_makes_them_written_and_survives_a_remount() {
    let fixture = Fixture::new();
    let ino;
    let mut model = vec![0; 10 * PAGE_BYTES];
    {
        let metadata = fixture.mount();
        ino = create(&metadata, b"f");
        let files = fixture.files(&metadata);
        files.fallocate(ino, 0, 10 * PAGE, ALLOCATE).unwrap();
        assert_eq!(layout(&metadata, ino), vec![(0, 10, true)]);
        let preallocated = extents(&metadata, ino)[0].1.physical;
        let free_before = free_blocks(&metadata);

        let mut handle = files.open(ino).unwrap();
        let patch = pattern(PAGE_BYTES + 5000, 7);
        let at = 3 * PAGE_BYTES + 100;
        files.write(&handle, at as u64, &patch).unwrap();
        model[at..at + patch.len()].copy_from_slice(&patch);
        // Dirty pages over the unwritten extent read from the cache.
        assert_reads(&files, ino, &model);
        files.fsync(&mut handle).unwrap();
        assert_reads(&files, ino, &model);
        // Written in place: blocks 3..=5 are the preallocated ones, now
        // written; the pieces kept on either side are still unwritten.
        assert_eq!(
            layout(&metadata, ino),
            vec![(0, 3, true), (3, 3, false), (6, 4, true)]
        );
        let physical: Vec<u64> = extents(&metadata, ino)
            .iter()
            .map(|(_, extent)| extent.physical)
            .collect();
        assert_eq!(
            physical,
            vec![preallocated, preallocated + 3, preallocated + 6]
        );
        assert_extents_match_rmap(&metadata, ino);
        // No block allocated, none freed.
        assert_eq!(free_blocks(&metadata), free_before);
        // Written once, the blocks are data: a rewrite is copy-on-write.
        let rewrite = pattern(PAGE_BYTES, 9);
        files.write(&handle, 4 * PAGE, &rewrite).unwrap();
        model[4 * PAGE_BYTES..5 * PAGE_BYTES].copy_from_slice(&rewrite);
        files.fsync(&mut handle).unwrap();
        assert_reads(&files, ino, &model);
        let moved = extents(&metadata, ino)
            .into_iter()
            .find(|(offset, _)| *offset == 4)
            .expect("an extent at block 4")
            .1;
        assert_ne!(moved.physical, preallocated + 4);
        assert_extents_match_rmap(&metadata, ino);
        assert_eq!(free_blocks(&metadata), free_before);
        files.release(handle);
        fixture.assert_fsck_clean(&metadata);
    }
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    assert_reads(&files, ino, &model);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn punching_the_middle_of_a_written_extent_frees_its_blocks() {
    let fixture = Fixture::new();
    let ino;
    let mut model = pattern(10 * PAGE_BYTES, 1);
    {
        let metadata = fixture.mount();
        ino = create(&metadata, b"f");
        let files = fixture.files(&metadata);
        let mut handle = files.open(ino).unwrap();
        files.write(&handle, 0, &model).unwrap();
        files.fsync(&mut handle).unwrap();
        let whole = extents(&metadata, ino).remove(0).1;
        assert_eq!(whole.blocks(), 10);
        let free_before = free_blocks(&metadata);

        files
            .fallocate(ino, 3 * PAGE, 4 * PAGE, punch_mode())
            .unwrap();
        model[3 * PAGE_BYTES..7 * PAGE_BYTES].fill(0);
        assert_reads(&files, ino, &model);
        let after = extents(&metadata, ino);
        assert_eq!(after.len(), 2);
        assert_eq!(after[0].0, 0);
        assert_eq!(after[0].1.physical, whole.physical);
        assert_eq!(after[0].1.checksums, whole.checksums[..3].to_vec());
        assert_eq!(after[1].0, 7);
        assert_eq!(after[1].1.physical, whole.physical + 7);
        assert_eq!(after[1].1.checksums, whole.checksums[7..].to_vec());
        assert_extents_match_rmap(&metadata, ino);
        assert_eq!(free_blocks(&metadata), free_before + 4);
        assert_eq!(metadata.allocator.status().pending_blocks, 0);
        // The size stays.
        assert_eq!(files.size(&handle).unwrap(), model.len() as u64);
        files.fsync(&mut handle).unwrap();
        assert_eq!(free_blocks(&metadata), free_before + 4);
        files.release(handle);
        fixture.assert_fsck_clean(&metadata);
    }
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    assert_reads(&files, ino, &model);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn punching_partial_pages_zeroes_only_the_range_cached_or_not() {
    let fixture = Fixture::new();
    let ino;
    let mut model = pattern(8 * PAGE_BYTES, 5);
    {
        let metadata = fixture.mount();
        ino = create(&metadata, b"f");
        let files = fixture.files(&metadata);
        let mut handle = files.open(ino).unwrap();
        files.write(&handle, 0, &model[..6 * PAGE_BYTES]).unwrap();
        files.fsync(&mut handle).unwrap();
        // Pages 6 and 7 are dirty, never written back.
        files
            .write(&handle, 6 * PAGE, &model[6 * PAGE_BYTES..])
            .unwrap();

        // Cached edges (pages 1 and 3), block 2 wholly inside.
        let (from, to) = (PAGE_BYTES + 100, 3 * PAGE_BYTES + 100);
        files
            .fallocate(ino, from as u64, (to - from) as u64, punch_mode())
            .unwrap();
        model[from..to].fill(0);
        assert_reads(&files, ino, &model);
        assert_eq!(layout(&metadata, ino), vec![(0, 2, false), (3, 3, false)]);

        // Dirty pages wholly inside are dropped; the edge in page 5 is
        // zeroed in its cached copy.
        let (from, to) = (5 * PAGE_BYTES + 7, 8 * PAGE_BYTES);
        files
            .fallocate(ino, from as u64, (to - from) as u64, punch_mode())
            .unwrap();
        model[from..to].fill(0);
        assert_reads(&files, ino, &model);
        files.fsync(&mut handle).unwrap();
        assert_reads(&files, ino, &model);
        // The zeroed edges were rewritten (copy-on-write); nothing was
        // written for the dropped pages 6 and 7, nor for block 2.
        let mapped: Vec<u64> = layout(&metadata, ino)
            .into_iter()
            .flat_map(|(offset, blocks, unwritten)| {
                assert!(!unwritten);
                offset..offset + u64::from(blocks)
            })
            .collect();
        assert_eq!(mapped, vec![0, 1, 3, 4, 5]);
        assert_extents_match_rmap(&metadata, ino);
        files.release(handle);
        fixture.assert_fsck_clean(&metadata);
    }
    // A fresh mount: the edge pages come from the device.
    {
        let metadata = fixture.mount();
        let files = fixture.files(&metadata);
        let (from, to) = (10, 30);
        files.fallocate(ino, from, to - from, punch_mode()).unwrap();
        model[from as usize..to as usize].fill(0);
        let (from, to) = (4 * PAGE_BYTES - 1, 4 * PAGE_BYTES + 1);
        files
            .fallocate(ino, from as u64, (to - from) as u64, punch_mode())
            .unwrap();
        model[from..to].fill(0);
        assert_reads(&files, ino, &model);
        // Past the end: nothing there to punch, the size stays.
        files
            .fallocate(ino, 20 * PAGE + 1, 3 * PAGE, punch_mode())
            .unwrap();
        assert_reads(&files, ino, &model);
        files.writeback_all();
        fixture.assert_fsck_clean(&metadata);
    }
    let metadata = fixture.mount();
    assert_reads(&fixture.files(&metadata), ino, &model);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn punching_away_every_dirty_page_still_persists_the_size_the_write_set() {
    let fixture = Fixture::new();
    let ino;
    let size = 30 * PAGE + 1;
    {
        let metadata = fixture.mount();
        ino = create(&metadata, b"f");
        let files = fixture.files(&metadata);
        let mut handle = files.open(ino).unwrap();
        files.write(&handle, 30 * PAGE, b"x").unwrap();
        files
            .fallocate(ino, 27 * PAGE, 4 * PAGE, punch_mode())
            .unwrap();
        assert_eq!(files.cache_stats().dirty_bytes, 0);
        files.fsync(&mut handle).unwrap();
        assert_eq!(
            Namespace::new(metadata.clone()).getattr(ino).unwrap().size,
            size
        );
        files.release(handle);
        fixture.assert_fsck_clean(&metadata);
    }
    let metadata = fixture.mount();
    assert_reads(&fixture.files(&metadata), ino, &vec![0; size as usize]);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn unsupported_modes_and_bad_ranges_are_refused_and_change_nothing() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"f");
    let files = fixture.files(&metadata);
    let mut handle = files.open(ino).unwrap();
    let model = pattern(3 * PAGE_BYTES, 2);
    files.write(&handle, 0, &model).unwrap();
    files.fsync(&mut handle).unwrap();
    let before = extents(&metadata, ino);

    let punch_alone = files.fallocate(ino, 0, PAGE, FallocateMode::PUNCH_HOLE);
    assert_eq!(errno(punch_alone), libc::EOPNOTSUPP);
    let collapse = FallocateMode::from_bits(libc::FALLOC_FL_COLLAPSE_RANGE as u32);
    assert_eq!(
        errno(files.fallocate(ino, 0, PAGE, collapse)),
        libc::EOPNOTSUPP
    );
    // Zeroing and punching are exclusive.
    let zero_and_punch = FallocateMode::ZERO_RANGE | punch_mode();
    assert_eq!(
        errno(files.fallocate(ino, 0, PAGE, zero_and_punch)),
        libc::EOPNOTSUPP
    );
    assert_eq!(errno(files.fallocate(ino, 0, 0, ALLOCATE)), libc::EINVAL);
    assert_eq!(
        errno(files.fallocate(ino, 0, 0, punch_mode())),
        libc::EINVAL
    );
    assert_eq!(
        errno(files.fallocate(ino, u64::MAX - 10, 100, ALLOCATE)),
        libc::EFBIG
    );
    assert_eq!(
        errno(files.fallocate(ROOT_INO, 0, PAGE, ALLOCATE)),
        libc::EISDIR
    );
    assert_eq!(
        errno(files.fallocate(9999, 0, PAGE, ALLOCATE)),
        libc::ENOENT
    );
    assert_eq!(extents(&metadata, ino), before);
    assert_reads(&files, ino, &model);
    files.release(handle);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn allocation_without_space_is_enospc_and_changes_nothing() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"f");
    let files = fixture.files(&metadata);
    let mut handle = files.open(ino).unwrap();
    let model = pattern(2 * PAGE_BYTES, 4);
    files.write(&handle, 0, &model).unwrap();
    files.fsync(&mut handle).unwrap();
    let before = extents(&metadata, ino);
    let free_before = free_blocks(&metadata);
    let names = Namespace::new(metadata.clone());
    let attributes = names.getattr(ino).unwrap();

    let too_much = (free_before + 1) * PAGE;
    let refused = files.fallocate(ino, 4 * PAGE, too_much, ALLOCATE);
    assert_eq!(errno(refused), libc::ENOSPC);
    let refused = files.fallocate(ino, 4 * PAGE, too_much, KEEP_SIZE);
    assert_eq!(errno(refused), libc::ENOSPC);
    assert_eq!(extents(&metadata, ino), before);
    assert_eq!(free_blocks(&metadata), free_before);
    assert_eq!(names.getattr(ino).unwrap(), attributes);
    assert_reads(&files, ino, &model);

    // What fits still works.
    files.fallocate(ino, 4 * PAGE, 8 * PAGE, ALLOCATE).unwrap();
    assert_eq!(free_blocks(&metadata), free_before - 8);
    files.release(handle);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn seek_data_and_hole_follow_written_extents_cached_pages_and_unwritten_ones() {
    let fixture = Fixture::new();
    let ino;
    {
        let metadata = fixture.mount();
        ino = create(&metadata, b"f");
        let files = fixture.files(&metadata);
        let mut handle = files.open(ino).unwrap();
        // Blocks 0..2 written, 2..4 a hole, 4 dirty, 5..8 unwritten, 8
        // written (partial: the size is 8 pages + 100 bytes).
        files
            .write(&handle, 0, &pattern(2 * PAGE_BYTES, 1))
            .unwrap();
        files.write(&handle, 8 * PAGE, &pattern(100, 2)).unwrap();
        files.fsync(&mut handle).unwrap();
        files
            .write(&handle, 4 * PAGE, &pattern(PAGE_BYTES, 3))
            .unwrap();
        files.fallocate(ino, 5 * PAGE, 3 * PAGE, KEEP_SIZE).unwrap();
        let size = 8 * PAGE + 100;
        assert_eq!(files.size(&handle).unwrap(), size);
        let seek = |offset: u64, whence: Seek| files.seek_data_hole(ino, offset, whence);

        assert_eq!(seek(0, Seek::Data).unwrap(), 0);
        assert_eq!(seek(100, Seek::Data).unwrap(), 100);
        assert_eq!(seek(0, Seek::Hole).unwrap(), 2 * PAGE);
        assert_eq!(seek(2 * PAGE + 5, Seek::Hole).unwrap(), 2 * PAGE + 5);
        assert_eq!(seek(2 * PAGE + 5, Seek::Data).unwrap(), 4 * PAGE);
        assert_eq!(seek(4 * PAGE + 1, Seek::Data).unwrap(), 4 * PAGE + 1);
        assert_eq!(seek(4 * PAGE, Seek::Hole).unwrap(), 5 * PAGE);
        // Unwritten without cached pages is a hole.
        assert_eq!(seek(5 * PAGE, Seek::Data).unwrap(), 8 * PAGE);
        assert_eq!(seek(5 * PAGE + 1, Seek::Hole).unwrap(), 5 * PAGE + 1);
        // The end of the file is a hole.
        assert_eq!(seek(8 * PAGE, Seek::Hole).unwrap(), size);
        assert_eq!(seek(size - 1, Seek::Data).unwrap(), size - 1);
        assert_eq!(errno(seek(size, Seek::Data)), libc::ENXIO);
        assert_eq!(errno(seek(size, Seek::Hole)), libc::ENXIO);
        assert_eq!(errno(seek(u64::MAX, Seek::Hole)), libc::ENXIO);

        // Reading holes and unwritten blocks does not make them data.
        files.read(&handle, 0, size as usize).unwrap();
        assert_eq!(seek(2 * PAGE, Seek::Data).unwrap(), 4 * PAGE);
        assert_eq!(seek(5 * PAGE, Seek::Data).unwrap(), 8 * PAGE);

        // A dirty page over the unwritten extent is data.
        files.write(&handle, 6 * PAGE + 10, b"x").unwrap();
        assert_eq!(seek(5 * PAGE, Seek::Data).unwrap(), 6 * PAGE);
        assert_eq!(seek(6 * PAGE, Seek::Hole).unwrap(), 7 * PAGE);
        files.fsync(&mut handle).unwrap();

        // A file ending in a hole: no data after block 8.
        files.truncate(ino, 12 * PAGE).unwrap();
        assert_eq!(errno(seek(9 * PAGE, Seek::Data)), libc::ENXIO);
        assert_eq!(seek(9 * PAGE + 3, Seek::Hole).unwrap(), 9 * PAGE + 3);
        assert_eq!(seek(8 * PAGE, Seek::Hole).unwrap(), 9 * PAGE);
        files.release(handle);
        fixture.assert_fsck_clean(&metadata);
    }
    // After a remount, with nothing cached, the same answers from the
    // extents alone.
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let seek = |offset: u64, whence: Seek| files.seek_data_hole(ino, offset, whence);
    assert_eq!(seek(0, Seek::Hole).unwrap(), 2 * PAGE);
    assert_eq!(seek(2 * PAGE, Seek::Data).unwrap(), 4 * PAGE);
    assert_eq!(seek(4 * PAGE, Seek::Hole).unwrap(), 5 * PAGE);
    assert_eq!(seek(5 * PAGE, Seek::Data).unwrap(), 6 * PAGE);
    assert_eq!(seek(7 * PAGE, Seek::Data).unwrap(), 8 * PAGE);
    assert_eq!(errno(seek(9 * PAGE, Seek::Data)), libc::ENXIO);
    assert_eq!(errno(seek(12 * PAGE, Seek::Hole)), libc::ENXIO);
    fixture.assert_fsck_clean(&metadata);
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Operation {
    Write {
        offset: u64,
        length: usize,
        seed: u8,
    },
    Punch {
        offset: u64,
        length: u64,
    },
    Allocate {
        offset: u64,
        length: u64,
        keep_size: bool,
    },
    Truncate {
        size: u64,
    },
    Fsync,
    Budget {
        pages: u64,
    },
}

/// Offsets up to 40 pages, mostly unaligned, sometimes on a page boundary
/// or on a 16-page one.
fn offset_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..40 * PAGE,
        (0..40u64).prop_map(|page| page * PAGE),
        (0..3u64).prop_map(|run| run * 16 * PAGE),
    ]
}

fn operation_strategy() -> impl Strategy<Value = Operation> {
    prop_oneof![
        3 => (offset_strategy(), 1..3 * PAGE_BYTES, any::<u8>())
            .prop_map(|(offset, length, seed)| Operation::Write { offset, length, seed }),
        // Long enough to hold a whole aligned run of 16 pages (one large
        // page-cache entry) when aligned, or to straddle one.
        1 => (offset_strategy(), 16 * PAGE_BYTES..36 * PAGE_BYTES, any::<u8>())
            .prop_map(|(offset, length, seed)| Operation::Write { offset, length, seed }),
        2 => (offset_strategy(), 1..8 * PAGE)
            .prop_map(|(offset, length)| Operation::Punch { offset, length }),
        1 => (offset_strategy(), 16 * PAGE..40 * PAGE)
            .prop_map(|(offset, length)| Operation::Punch { offset, length }),
        2 => (offset_strategy(), 1..8 * PAGE, any::<bool>())
            .prop_map(|(offset, length, keep_size)| Operation::Allocate { offset, length, keep_size }),
        1 => offset_strategy().prop_map(|size| Operation::Truncate { size }),
        2 => Just(Operation::Fsync),
        1 => (0..40u64).prop_map(|pages| Operation::Budget { pages }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_write_punch_allocate_truncate_fsync_match_a_model_across_a_remount(
        operations in prop::collection::vec(operation_strategy(), 1..24)
    ) {
        let fixture = Fixture::new();
        let mut model: Vec<u8> = Vec::new();
        // The pages with a block or a dirty page over a hole: st_blocks.
        let mut allocated: BTreeSet<u64> = BTreeSet::new();
        let ino;
        {
            let metadata = fixture.mount();
            ino = create(&metadata, b"f");
            let files = fixture.files(&metadata);
            let mut handle = files.open(ino).unwrap();
            for operation in &operations {
                match *operation {
                    Operation::Write { offset, length, seed } => {
                        let bytes = pattern(length, seed);
                        files.write(&handle, offset, &bytes).unwrap();
                        let end = offset as usize + length;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[offset as usize..end].copy_from_slice(&bytes);
                        allocated.extend(offset / PAGE..(end as u64).div_ceil(PAGE));
                    }
                    Operation::Punch { offset, length } => {
                        files.fallocate(ino, offset, length, punch_mode()).unwrap();
                        let from = (offset as usize).min(model.len());
                        let to = ((offset + length) as usize).min(model.len());
                        model[from..to].fill(0);
                        // Only pages wholly inside lose their blocks.
                        let whole = offset.div_ceil(PAGE)..(offset + length) / PAGE;
                        allocated.retain(|page| !whole.contains(page));
                    }
                    Operation::Allocate { offset, length, keep_size } => {
                        let mode = if keep_size { KEEP_SIZE } else { ALLOCATE };
                        files.fallocate(ino, offset, length, mode).unwrap();
                        let end = (offset + length) as usize;
                        if !keep_size && model.len() < end {
                            model.resize(end, 0);
                        }
                        allocated.extend(offset / PAGE..(end as u64).div_ceil(PAGE));
                    }
                    Operation::Truncate { size } => {
                        files.truncate(ino, size).unwrap();
                        // Growing keeps blocks preallocated past the end;
                        // a truncate to the size or below drops them.
                        if size <= model.len() as u64 {
                            allocated.retain(|&page| page < size.div_ceil(PAGE));
                        }
                        model.resize(size as usize, 0);
                    }
                    Operation::Fsync => files.fsync(&mut handle).unwrap(),
                    Operation::Budget { pages } => files.set_cache_budget(pages * PAGE),
                }
                let read = files.read(&handle, 0, model.len() + PAGE_BYTES).unwrap();
                prop_assert!(read == model, "contents differ after {:?}", operation);
                let stats = files.cache_stats();
                prop_assert!(stats.dirty_bytes <= stats.cached_bytes);
                prop_assert_eq!(
                    files.allocated_blocks(ino).unwrap(),
                    allocated.len() as u64,
                    "st_blocks after {:?}",
                    operation
                );
            }
            files.fsync(&mut handle).unwrap();
            files.release(handle);
            assert_extents_match_rmap(&metadata, ino);
            fixture.assert_fsck_clean(&metadata);
        }
        let metadata = fixture.mount();
        let files = fixture.files(&metadata);
        let handle = files.open(ino).unwrap();
        prop_assert_eq!(files.size(&handle).unwrap(), model.len() as u64);
        let read = files.read(&handle, 0, model.len() + PAGE_BYTES).unwrap();
        prop_assert!(read == model, "contents differ after the remount");
        files.release(handle);
        fixture.assert_fsck_clean(&metadata);
    }
}

/// FALLOC_FL_ZERO_RANGE: the range reads as zeros (partial edge pages
/// too, dirty data included), every block of it is allocated (unwritten),
/// the size grows past the end unless KEEP_SIZE, and extents and rmap
/// agree.
#[test]
fn zero_range_zeroes_and_allocates_the_range() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"f");
    let files = fixture.files(&metadata);
    let mut handle = files.open(ino).unwrap();
    let mut model = pattern(6 * PAGE_BYTES, 5);
    files.write(&handle, 0, &model).unwrap();
    files.fsync(&mut handle).unwrap();
    // Dirty data over part of the range, not written back.
    let dirty = pattern(PAGE_BYTES, 9);
    files.write(&handle, 2 * PAGE, &dirty).unwrap();
    model[2 * PAGE_BYTES..3 * PAGE_BYTES].copy_from_slice(&dirty);

    let zero = FallocateMode::ZERO_RANGE;
    files.fallocate(ino, PAGE + 100, 3 * PAGE, zero).unwrap();
    model[PAGE_BYTES + 100..4 * PAGE_BYTES + 100].fill(0);
    assert_reads(&files, ino, &model);
    files.fsync(&mut handle).unwrap();
    assert_reads(&files, ino, &model);
    // Blocks 2 and 3 (wholly inside) are unwritten, the edges written.
    let unwritten: Vec<bool> = layout(&metadata, ino)
        .iter()
        .flat_map(|&(_, blocks, unwritten)| std::iter::repeat_n(unwritten, blocks as usize))
        .collect();
    assert_eq!(unwritten, [false, false, true, true, false, false]);
    assert_extents_match_rmap(&metadata, ino);

    // Past the end: the size grows, unless KEEP_SIZE.
    files.fallocate(ino, 5 * PAGE, 3 * PAGE, zero).unwrap();
    model[5 * PAGE_BYTES..].fill(0);
    model.resize(8 * PAGE_BYTES, 0);
    assert_reads(&files, ino, &model);
    files
        .fallocate(ino, 8 * PAGE, 2 * PAGE, zero | KEEP_SIZE)
        .unwrap();
    assert_reads(&files, ino, &model);
    let blocks: u32 = layout(&metadata, ino).iter().map(|&(_, b, _)| b).sum();
    assert_eq!(blocks, 10, "every block of every range is allocated");
    assert_extents_match_rmap(&metadata, ino);
    files.release(handle);
    fixture.assert_fsck_clean(&metadata);
}
