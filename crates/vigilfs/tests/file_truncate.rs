//! Truncate (shrink, grow, in the middle of an extent), unlink freeing a
//! file's data, and setattr, each checked against a model and ending with a
//! clean fsck; one remount.

mod common;

use std::sync::Arc;

use common::{create, durable, extents, pattern, Fixture};
use vigilfs::inode::{
    FileType, Files, Namespace, RenameFlags, SetAttr, SetTime, Timestamp, PAGE_BYTES, ROOT_INO,
};
use vigilfs::metadata::Metadata;
use vigilfs::rmap::{self, Owner};

const PAGE: u64 = PAGE_BYTES as u64;

fn namespace(metadata: &Arc<Metadata>) -> Namespace {
    Namespace::new(metadata.clone())
}

/// The rmap records owned by `ino`'s data: (start, blocks, file offset).
fn rmap_of(metadata: &Metadata, ino: u64) -> Vec<(u64, u64, u64)> {
    rmap::records(&metadata.trees)
        .expect("rmap records")
        .into_iter()
        .filter_map(|record| match record.owner {
            Owner::FileData {
                ino: owner,
                file_offset_blocks,
            } if owner == ino => Some((record.start, record.blocks, file_offset_blocks)),
            _ => None,
        })
        .collect()
}

/// Extents and rmap records agree one to one.
fn assert_extents_match_rmap(metadata: &Metadata, ino: u64) {
    let mut from_extents: Vec<(u64, u64, u64)> = extents(metadata, ino)
        .into_iter()
        .map(|(offset, extent)| (extent.physical, u64::from(extent.blocks()), offset))
        .collect();
    let mut from_rmap = rmap_of(metadata, ino);
    from_extents.sort_unstable();
    from_rmap.sort_unstable();
    assert_eq!(from_extents, from_rmap);
}

fn assert_reads(files: &Files, ino: u64, model: &[u8]) {
    let handle = files.open(ino).unwrap();
    assert_eq!(files.size(&handle).unwrap(), model.len() as u64);
    assert_eq!(
        files
            .read(&handle, 0, model.len() + 3 * PAGE_BYTES)
            .unwrap(),
        model
    );
    files.release(handle);
}

#[test]
fn shrink_and_grow_follow_the_model_and_survive_a_remount() {
    let fixture = Fixture::new();
    let ino;
    let mut model = pattern(5 * PAGE_BYTES + 123, 3);
    {
        let metadata = fixture.mount();
        ino = create(&metadata, b"f");
        let files = fixture.files(&metadata);
        let mut handle = files.open(ino).unwrap();
        files.write(&handle, 0, &model).unwrap();
        files.fsync(&mut handle).unwrap();

        // Shrink into a partial page, written back.
        files.truncate(ino, 2 * PAGE + 100).unwrap();
        model.truncate(2 * PAGE_BYTES + 100);
        assert_reads(&files, ino, &model);
        assert_extents_match_rmap(&metadata, ino);
        assert!(extents(&metadata, ino)
            .iter()
            .all(|(offset, extent)| offset + u64::from(extent.blocks()) <= 3));

        // Grow: a hole, and the old tail of the partial page reads as zeros.
        files.truncate(ino, 4 * PAGE + 7).unwrap();
        model.resize(4 * PAGE_BYTES + 7, 0);
        assert_reads(&files, ino, &model);
        assert_eq!(
            namespace(&metadata).getattr(ino).unwrap().size,
            model.len() as u64
        );

        // Dirty pages past a shrink are dropped, not written back.
        let more = pattern(2 * PAGE_BYTES, 9);
        files.write(&handle, 3 * PAGE, &more).unwrap();
        model.resize(5 * PAGE_BYTES, 0);
        model[3 * PAGE_BYTES..].copy_from_slice(&more);
        assert_reads(&files, ino, &model);
        files.truncate(ino, 3 * PAGE + 10).unwrap();
        model.truncate(3 * PAGE_BYTES + 10);
        assert_reads(&files, ino, &model);
        files.fsync(&mut handle).unwrap();
        assert_reads(&files, ino, &model);
        assert_extents_match_rmap(&metadata, ino);

        // To a page boundary, then to zero and back.
        files.truncate(ino, PAGE).unwrap();
        model.truncate(PAGE_BYTES);
        assert_reads(&files, ino, &model);
        files.fsync(&mut handle).unwrap();
        assert_extents_match_rmap(&metadata, ino);
        files.truncate(ino, 0).unwrap();
        model.clear();
        assert_reads(&files, ino, &model);
        assert!(extents(&metadata, ino).is_empty());
        assert!(rmap_of(&metadata, ino).is_empty());
        model = pattern(PAGE_BYTES + 1, 5);
        files.write(&handle, 0, &model).unwrap();
        files.fsync(&mut handle).unwrap();
        files.truncate(ino, 2 * PAGE).unwrap();
        model.resize(2 * PAGE_BYTES, 0);
        assert_reads(&files, ino, &model);
        files.release(handle);
        fixture.assert_fsck_clean(&metadata);
    }
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    assert_reads(&files, ino, &model);
    assert_extents_match_rmap(&metadata, ino);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn truncate_in_the_middle_of_an_extent_trims_it_and_frees_the_rest() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let ino = create(&metadata, b"f");
    let files = fixture.files(&metadata);
    let mut handle = files.open(ino).unwrap();
    let mut model = pattern(10 * PAGE_BYTES, 1);
    files.write(&handle, 0, &model).unwrap();
    files.fsync(&mut handle).unwrap();
    let before = extents(&metadata, ino);
    assert_eq!(before.len(), 1);
    let (_, whole) = &before[0];
    assert_eq!(whole.blocks(), 10);
    durable(&metadata);
    let free_before = metadata.allocator.status().free_blocks;

    // Block aligned: the extent keeps 4 blocks and 4 checksums.
    files.truncate(ino, 4 * PAGE).unwrap();
    model.truncate(4 * PAGE_BYTES);
    let after = extents(&metadata, ino);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, 0);
    assert_eq!(after[0].1.physical, whole.physical);
    assert_eq!(after[0].1.checksums, whole.checksums[..4].to_vec());
    assert_eq!(rmap_of(&metadata, ino), vec![(whole.physical, 4, 0)]);
    assert_reads(&files, ino, &model);
    durable(&metadata);
    assert_eq!(metadata.allocator.status().free_blocks, free_before + 6);

    // Into a block: the extent keeps the partial block; its tail is zeroed.
    files.truncate(ino, 2 * PAGE + 5).unwrap();
    model.truncate(2 * PAGE_BYTES + 5);
    let after = extents(&metadata, ino);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].1.blocks(), 3);
    assert_eq!(rmap_of(&metadata, ino), vec![(whole.physical, 3, 0)]);
    files.truncate(ino, 3 * PAGE).unwrap();
    model.resize(3 * PAGE_BYTES, 0);
    assert_reads(&files, ino, &model);
    files.fsync(&mut handle).unwrap();
    assert_reads(&files, ino, &model);
    assert_extents_match_rmap(&metadata, ino);
    files.release(handle);
    fixture.assert_fsck_clean(&metadata);

    // The zeroed tail reached the disk.
    drop(files);
    drop(metadata);
    let metadata = fixture.mount();
    assert_reads(&fixture.files(&metadata), ino, &model);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn unlink_and_rename_over_free_the_data() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    let names = namespace(&metadata);
    durable(&metadata);
    let free_before = metadata.allocator.status().free_blocks;

    let ino = create(&metadata, b"doomed");
    let mut handle = files.open(ino).unwrap();
    files
        .write(&handle, 0, &pattern(3 * PAGE_BYTES + 1, 4))
        .unwrap();
    files.fsync(&mut handle).unwrap();
    files.release(handle);
    assert_eq!(rmap_of(&metadata, ino).len(), 1);
    // A second link keeps the data.
    names.link(ino, ROOT_INO, b"other").unwrap();
    names.unlink(ROOT_INO, b"doomed").unwrap();
    assert_eq!(extents(&metadata, ino).len(), 1);
    names.unlink(ROOT_INO, b"other").unwrap();
    assert!(extents(&metadata, ino).is_empty());
    assert!(rmap_of(&metadata, ino).is_empty());
    durable(&metadata);
    assert_eq!(metadata.allocator.status().free_blocks, free_before);
    fixture.assert_fsck_clean(&metadata);

    // Rename over a file with data frees the replaced file's data.
    let victim = create(&metadata, b"victim");
    let mut handle = files.open(victim).unwrap();
    files
        .write(&handle, 0, &pattern(2 * PAGE_BYTES, 6))
        .unwrap();
    files.fsync(&mut handle).unwrap();
    files.release(handle);
    let source = create(&metadata, b"source");
    names
        .rename(
            ROOT_INO,
            b"source",
            ROOT_INO,
            b"victim",
            RenameFlags::default(),
        )
        .unwrap();
    assert!(extents(&metadata, victim).is_empty());
    assert!(rmap_of(&metadata, victim).is_empty());
    names.unlink(ROOT_INO, b"victim").unwrap();
    assert!(names.getattr(source).is_err());
    durable(&metadata);
    assert_eq!(metadata.allocator.status().free_blocks, free_before);
    assert_eq!(metadata.allocator.status().pending_blocks, 0);
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn setattr_changes_the_fields_asked_for_and_always_the_ctime() {
    let fixture = Fixture::new();
    let ino;
    let expected;
    {
        let metadata = fixture.mount();
        let names = namespace(&metadata);
        ino = create(&metadata, b"f");
        let created = names.getattr(ino).unwrap();

        let at = Timestamp {
            seconds: 1_000_000,
            nanoseconds: 5,
        };
        let changed = names
            .setattr(
                ino,
                &SetAttr {
                    mode: Some(0o4755 | FileType::Directory.mode_bits()),
                    uid: Some(1000),
                    gid: Some(100),
                    atime: Some(SetTime::At(at)),
                    mtime: Some(SetTime::Now),
                },
            )
            .unwrap();
        assert_eq!(changed.mode, FileType::Regular.mode_bits() | 0o4755);
        assert_eq!(changed.file_type(), FileType::Regular);
        assert_eq!((changed.uid, changed.gid), (1000, 100));
        assert_eq!(changed.atime, at);
        assert!(changed.mtime.seconds >= created.mtime.seconds);
        assert_eq!(changed.mtime, changed.ctime);
        assert_eq!(names.getattr(ino).unwrap(), changed);

        // Nothing asked: only the ctime moves.
        let touched = names.setattr(ino, &SetAttr::default()).unwrap();
        assert_eq!(
            InodeWithoutCtime::from(touched),
            InodeWithoutCtime::from(changed)
        );
        assert!(
            (touched.ctime.seconds, touched.ctime.nanoseconds)
                >= (changed.ctime.seconds, changed.ctime.nanoseconds)
        );

        // Truncate sets mtime and ctime too.
        let files = fixture.files(&metadata);
        files.truncate(ino, 10).unwrap();
        let truncated = names.getattr(ino).unwrap();
        assert_eq!(truncated.size, 10);
        assert_eq!(truncated.mtime, truncated.ctime);
        assert_eq!(truncated.atime, at);

        let bad = SetAttr {
            mtime: Some(SetTime::At(Timestamp {
                seconds: 0,
                nanoseconds: 1_000_000_000,
            })),
            ..SetAttr::default()
        };
        assert_eq!(names.setattr(ino, &bad).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(names.getattr(ino).unwrap(), truncated);
        assert_eq!(
            names
                .setattr(9999, &SetAttr::default())
                .unwrap_err()
                .errno(),
            libc::ENOENT
        );
        // Directories keep their type bits too.
        let root = names
            .setattr(
                ROOT_INO,
                &SetAttr {
                    mode: Some(0o700),
                    ..SetAttr::default()
                },
            )
            .unwrap();
        assert_eq!(root.file_type(), FileType::Directory);
        assert_eq!(root.mode & 0o7777, 0o700);
        expected = truncated;
        fixture.assert_fsck_clean(&metadata);
    }
    let metadata = fixture.mount();
    assert_eq!(namespace(&metadata).getattr(ino).unwrap(), expected);
    fixture.assert_fsck_clean(&metadata);
}

/// An inode's attributes without the ctime.
#[derive(Debug, PartialEq, Eq)]
struct InodeWithoutCtime {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    atime: Timestamp,
    mtime: Timestamp,
}

impl From<vigilfs::inode::InodeRecord> for InodeWithoutCtime {
    fn from(record: vigilfs::inode::InodeRecord) -> InodeWithoutCtime {
        InodeWithoutCtime {
            mode: record.mode,
            uid: record.uid,
            gid: record.gid,
            size: record.size,
            atime: record.atime,
            mtime: record.mtime,
        }
    }
}
