//! `owners(range)` returns exactly the owners overlapping a physical range: file extents
//! at the range's edges (including one that starts before the range), node blocks of
//! several trees, and the rmap tree's own nodes; and, against a plain list model, exactly
//! the data extents a random set of queries overlaps.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use vigilfs::alloc::{Allocator, Extent};
use vigilfs::btree::{Btrees, BtreesOptions, TreeId};
use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
use vigilfs::format::{FsUuid, Superblock};
use vigilfs::journal::{Journal, JournalOptions};
use vigilfs::mkfs::{mkfs, MkfsOptions};
use vigilfs::rmap::{self, Owner, RmapRecord};

fn open_fresh(device_bytes: u64) -> (Btrees, Arc<Allocator>, Superblock) {
    let device = Arc::new(MemoryDevice::new(device_bytes, SectorSize::Bytes512));
    let options = MkfsOptions {
        uuid: Some(FsUuid(*b"rmap-owners-test")),
        time: Some(1_700_000_000),
        journal_bytes: Some(1 << 20),
        ..MkfsOptions::default()
    };
    let superblock = mkfs(device.as_ref(), &options).expect("mkfs");
    let device: Arc<dyn BlockDevice> = device;
    let (journal, replay) =
        Journal::open(device.clone(), JournalOptions::for_filesystem(&superblock))
            .expect("journal");
    let journal = Arc::new(journal);
    let allocator =
        Arc::new(Allocator::new(journal.clone(), superblock.layout.main).with_metadata_reserve(0));
    let btrees = Btrees::open(
        device,
        journal,
        &replay,
        &superblock,
        allocator.clone(),
        BtreesOptions::default(),
    )
    .expect("open");
    (btrees, allocator, superblock)
}

/// Allocates `blocks` of data for `ino` (one extent expected on a fresh region) and records
/// it in its own transaction.
fn map_data(btrees: &Btrees, allocator: &Allocator, ino: u64, blocks: u64) -> RmapRecord {
    let extents = allocator.allocate_data(blocks, 0).expect("space");
    assert_eq!(extents.len(), 1, "a fresh region gives one extent");
    let record = RmapRecord {
        start: extents[0].start,
        blocks,
        owner: Owner::FileData {
            ino,
            file_offset_blocks: 0,
        },
    };
    let mut transaction = btrees.transaction();
    rmap::insert(&mut transaction, &record).unwrap();
    transaction.commit().unwrap();
    record
}

fn data_owners(allocator: &Allocator, btrees: &Btrees, start: u64, blocks: u64) -> Vec<u64> {
    allocator
        .owners(btrees, start, blocks)
        .unwrap()
        .into_iter()
        .filter_map(|record| match record.owner {
            Owner::FileData { ino, .. } => Some(ino),
            Owner::Node { .. } => None,
        })
        .collect()
}

#[test]
fn extents_at_the_edges_of_a_range_are_reported_exactly_when_they_overlap() {
    let (btrees, allocator, _) = open_fresh(8 << 20);
    let first = map_data(&btrees, &allocator, 1, 10);
    let second = map_data(&btrees, &allocator, 2, 1);
    let third = map_data(&btrees, &allocator, 3, 300);
    assert_eq!(second.start, first.end());
    assert_eq!(third.start, second.end());
    let owners = |start, blocks| data_owners(&allocator, &btrees, start, blocks);
    // Last block of the first extent: found even though the extent starts before it.
    assert_eq!(owners(first.end() - 1, 1), [1]);
    assert_eq!(owners(first.start, 1), [1]);
    // The range just before the first extent ends before it.
    assert_eq!(owners(first.start - 3, 3), Vec::<u64>::new());
    assert_eq!(owners(first.start - 3, 4), [1]);
    // Spanning a boundary reports both sides, in block order.
    assert_eq!(owners(first.end() - 1, 2), [1, 2]);
    assert_eq!(owners(second.start, 2), [2, 3]);
    // Deep inside a long extent, far from where it starts.
    assert_eq!(owners(third.start + 250, 5), [3]);
    assert_eq!(owners(third.end() - 1, 1), [3]);
    assert_eq!(owners(third.end(), 50), Vec::<u64>::new());
    assert_eq!(owners(first.start, third.end() - first.start), [1, 2, 3]);
    assert_eq!(owners(first.start, 0), Vec::<u64>::new());
    assert_eq!(owners(u64::MAX - 1, 5), Vec::<u64>::new());
    // After the record is removed, the blocks have no owner.
    let mut transaction = btrees.transaction();
    rmap::remove(&mut transaction, second.start).unwrap();
    transaction.commit().unwrap();
    assert_eq!(owners(first.end() - 1, 3), [1, 3]);
}

#[test]
fn node_blocks_of_every_tree_and_of_the_rmap_tree_itself_have_their_owner_reported() {
    let (btrees, allocator, _) = open_fresh(16 << 20);
    // Enough keys that several trees grow interior levels, and enough data records that
    // the rmap tree does too.
    for batch in 0..40u64 {
        let mut transaction = btrees.transaction();
        for index in 0..25u64 {
            let key = (batch * 25 + index).to_be_bytes();
            transaction.put(TreeId::Inodes, &key, &[7; 200]).unwrap();
            transaction.put(TreeId::Extents, &key, &[8; 120]).unwrap();
        }
        transaction.commit().unwrap();
        for ino in 0..30 {
            map_data(&btrees, &allocator, 1000 + batch * 30 + ino, 1);
        }
    }
    btrees.sync().unwrap();
    let report = btrees.check().unwrap();
    let levels = btrees.status().root_levels;
    assert!(levels[TreeId::Rmap.index()] >= 1, "rmap levels {levels:?}");
    assert!(
        levels[TreeId::Inodes.index()] >= 1,
        "inode levels {levels:?}"
    );
    let mut trees_seen = BTreeSet::new();
    for &(tree, level, block) in &report.nodes {
        let owners = allocator.owners(&btrees, block, 1).unwrap();
        assert_eq!(
            owners,
            [RmapRecord {
                start: block,
                blocks: 1,
                owner: Owner::Node { tree, level },
            }],
            "{tree} level {level} node at {block}"
        );
        trees_seen.insert(tree);
    }
    assert_eq!(trees_seen.len(), TreeId::ALL.len());
    // One query over the whole region names every node and every data record, once.
    let main_end = report.nodes.iter().map(|node| node.2).max().unwrap() + 2000;
    let everything = allocator.owners(&btrees, 0, main_end).unwrap();
    let nodes = everything
        .iter()
        .filter(|record| matches!(record.owner, Owner::Node { .. }))
        .count();
    assert_eq!(nodes, report.nodes.len());
    assert_eq!(everything.len() - nodes, 40 * 30);
}

/// A model of data extents: (start, blocks, ino).
fn model_overlapping(model: &[(u64, u64, u64)], start: u64, blocks: u64) -> Vec<(u64, u64, u64)> {
    let end = start + blocks;
    let mut found: Vec<_> = model
        .iter()
        .filter(|&&(extent_start, length, _)| extent_start < end && start < extent_start + length)
        .copied()
        .collect();
    found.sort_unstable();
    found
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn owners_matches_a_list_model_for_random_extents_and_queries(
        lengths in prop::collection::vec(1u64..40, 1..60),
        unmapped in prop::collection::vec(any::<bool>(), 60),
        queries in prop::collection::vec((0u64..3000, 1u64..200), 1..40),
    ) {
        let (btrees, allocator, superblock) = open_fresh(8 << 20);
        let mut model = Vec::new();
        for (index, &length) in lengths.iter().enumerate() {
            let record = map_data(&btrees, &allocator, index as u64 + 1, length);
            model.push((record.start, length, index as u64 + 1));
        }
        // Unmap some, so queries meet gaps too.
        let mut transaction = btrees.transaction();
        let mut kept = Vec::new();
        for (index, entry) in model.iter().enumerate() {
            if unmapped[index] {
                rmap::remove(&mut transaction, entry.0).unwrap();
            } else {
                kept.push(*entry);
            }
        }
        let seq = transaction.commit().unwrap().unwrap_or(0);
        for (index, entry) in model.iter().enumerate() {
            if unmapped[index] {
                allocator.free_data(Extent::new(entry.0, entry.1), seq).unwrap();
            }
        }
        let base = superblock.layout.main.start;
        for (offset, blocks) in queries {
            let start = base + offset;
            let found: Vec<(u64, u64, u64)> = allocator
                .owners(&btrees, start, blocks)
                .unwrap()
                .into_iter()
                .filter_map(|record| match record.owner {
                    Owner::FileData { ino, .. } => Some((record.start, record.blocks, ino)),
                    Owner::Node { .. } => None,
                })
                .collect();
            prop_assert_eq!(found, model_overlapping(&kept, start, blocks));
        }
    }
}
