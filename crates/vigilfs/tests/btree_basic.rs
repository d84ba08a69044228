//! The b-trees through their public API: lookups, scans, transactions, growth and shrinkage,
//! eviction and writeback under a small cache, journal reclaim, reopening, limits and
//! running out of space.

use std::collections::BTreeMap;
use std::sync::Arc;

use vigilfs::btree::{BtreeError, Btrees, BtreesOptions, SimpleAllocator, TreeId};
use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
use vigilfs::format::{FsUuid, Superblock};
use vigilfs::journal::{Journal, JournalOptions};
use vigilfs::mkfs::{mkfs, MkfsOptions};

fn make_fs(device: &dyn BlockDevice) -> Superblock {
    let options = MkfsOptions {
        uuid: Some(FsUuid(*b"btree-basic-test")),
        time: Some(1_700_000_000),
        ..MkfsOptions::default()
    };
    mkfs(device, &options).expect("mkfs")
}

fn journal_options(superblock: &Superblock, ring_blocks: Option<u64>) -> JournalOptions {
    let mut options = JournalOptions::for_filesystem(superblock);
    if let Some(blocks) = ring_blocks {
        options.region.length = blocks * u64::from(superblock.layout.block_size);
        options.entry_bytes = 16 * 1024;
    }
    options
}

fn open(
    device: Arc<dyn BlockDevice>,
    superblock: &Superblock,
    ring_blocks: Option<u64>,
    cache_bytes: usize,
) -> Btrees {
    let (journal, replay) =
        Journal::open(device.clone(), journal_options(superblock, ring_blocks)).expect("journal");
    let journal = Arc::new(journal);
    let allocator = Arc::new(SimpleAllocator::new(
        journal.clone(),
        superblock.layout.main,
    ));
    Btrees::open(
        device,
        journal,
        &replay,
        superblock,
        allocator,
        BtreesOptions {
            cache_bytes,
            ..BtreesOptions::default()
        },
    )
    .expect("b-trees open")
}

fn key(index: u32) -> Vec<u8> {
    format!("key-{index:08}").into_bytes()
}

fn value(index: u32, round: u32) -> Vec<u8> {
    format!("value-{index}-{round}-{}", "x".repeat((index % 7) as usize)).into_bytes()
}

fn all(btrees: &Btrees, tree: TreeId) -> BTreeMap<Vec<u8>, Vec<u8>> {
    btrees
        .range(tree, &[], None)
        .map(|entry| entry.expect("scan"))
        .collect()
}

fn memory_device(bytes: u64) -> Arc<MemoryDevice> {
    Arc::new(MemoryDevice::new(bytes, SectorSize::Bytes512))
}

#[test]
fn a_fresh_filesystem_has_empty_trees_that_take_puts_gets_and_deletes() {
    let device = memory_device(16 << 20);
    let superblock = make_fs(device.as_ref());
    let btrees = open(device, &superblock, None, 1 << 20);
    for tree in TreeId::ALL {
        assert_eq!(btrees.get(tree, b"anything").unwrap(), None);
    }
    let mut transaction = btrees.transaction();
    transaction
        .put(TreeId::Inodes, b"1", b"root inode")
        .unwrap();
    transaction.put(TreeId::Dirents, b"1/a", b"2").unwrap();
    transaction.put(TreeId::Inodes, &[], b"empty key").unwrap();
    assert!(transaction.commit().unwrap().is_some());
    assert_eq!(
        btrees.get(TreeId::Inodes, b"1").unwrap(),
        Some(b"root inode".to_vec())
    );
    assert_eq!(
        btrees.get(TreeId::Inodes, &[]).unwrap(),
        Some(b"empty key".to_vec())
    );
    assert_eq!(btrees.get(TreeId::Dirents, b"1").unwrap(), None);
    let mut transaction = btrees.transaction();
    transaction.delete(TreeId::Inodes, b"1").unwrap();
    transaction.commit().unwrap();
    assert_eq!(btrees.get(TreeId::Inodes, b"1").unwrap(), None);
    assert_eq!(btrees.transaction().commit().unwrap(), None);
}

#[test]
fn many_keys_grow_the_tree_and_deleting_them_shrinks_it_back() {
    let device = memory_device(32 << 20);
    let superblock = make_fs(device.as_ref());
    let btrees = open(device, &superblock, None, 4 << 20);
    let mut model = BTreeMap::new();
    for batch in 0..60u32 {
        let mut transaction = btrees.transaction();
        for index in batch * 100..(batch + 1) * 100 {
            // Scattered order, so splits happen everywhere, not only on the right edge.
            let scattered = index.wrapping_mul(2_654_435_761) % 1_000_000;
            transaction
                .put(TreeId::Extents, &key(scattered), &value(scattered, 0))
                .unwrap();
            model.insert(key(scattered), value(scattered, 0));
        }
        transaction.commit().unwrap();
    }
    assert!(btrees.status().root_levels[TreeId::Extents.index()] >= 1);
    assert_eq!(all(&btrees, TreeId::Extents), model);
    let report = btrees.check().unwrap();
    assert_eq!(report.keys[TreeId::Extents.index()], model.len() as u64);

    // Remove most keys: leaves merge, the root level drops.
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for chunk in keys[..keys.len() - 40].chunks(97) {
        let mut transaction = btrees.transaction();
        for key in chunk {
            transaction.delete(TreeId::Extents, key).unwrap();
            model.remove(key);
        }
        transaction.commit().unwrap();
    }
    assert_eq!(all(&btrees, TreeId::Extents), model);
    assert_eq!(btrees.status().root_levels[TreeId::Extents.index()], 0);
    btrees.check().unwrap();
}

#[test]
fn range_delete_spanning_many_leaves_removes_exactly_the_range() {
    let device = memory_device(32 << 20);
    let superblock = make_fs(device.as_ref());
    let btrees = open(device, &superblock, None, 4 << 20);
    let mut transaction = btrees.transaction();
    for index in 0..3000 {
        transaction
            .put(TreeId::Rmap, &key(index), &value(index, 1))
            .unwrap();
    }
    transaction.commit().unwrap();
    let mut transaction = btrees.transaction();
    transaction
        .delete_range(TreeId::Rmap, &key(100), Some(&key(2900)))
        .unwrap();
    transaction.commit().unwrap();
    let left: Vec<Vec<u8>> = all(&btrees, TreeId::Rmap).into_keys().collect();
    let expected: Vec<Vec<u8>> = (0..100).chain(2900..3000).map(key).collect();
    assert_eq!(left, expected);
    let mut transaction = btrees.transaction();
    transaction
        .delete_range(TreeId::Rmap, &key(50), None)
        .unwrap();
    transaction.commit().unwrap();
    assert_eq!(all(&btrees, TreeId::Rmap).len(), 50);
    btrees.check().unwrap();
}

#[test]
fn a_transaction_reads_its_own_writes_and_the_later_commit_wins() {
    let device = memory_device(16 << 20);
    let superblock = make_fs(device.as_ref());
    let btrees = open(device, &superblock, None, 1 << 20);
    let mut setup = btrees.transaction();
    for index in 0..10 {
        setup
            .put(TreeId::Xattrs, &key(index), b"committed")
            .unwrap();
    }
    setup.commit().unwrap();

    let mut first = btrees.transaction();
    first.put(TreeId::Xattrs, &key(3), b"first").unwrap();
    first.delete(TreeId::Xattrs, &key(4)).unwrap();
    first
        .delete_range(TreeId::Xattrs, &key(6), Some(&key(8)))
        .unwrap();
    first.put(TreeId::Xattrs, &key(7), b"after range").unwrap();
    assert_eq!(
        first.get(TreeId::Xattrs, &key(3)).unwrap(),
        Some(b"first".to_vec())
    );
    assert_eq!(first.get(TreeId::Xattrs, &key(4)).unwrap(), None);
    assert_eq!(first.get(TreeId::Xattrs, &key(6)).unwrap(), None);
    assert_eq!(
        first.get(TreeId::Xattrs, &key(7)).unwrap(),
        Some(b"after range".to_vec())
    );
    let seen: Vec<Vec<u8>> = first
        .scan(TreeId::Xattrs, &key(2), Some(&key(9)), 100)
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(seen, vec![key(2), key(3), key(5), key(7), key(8)]);
    // Nothing is visible outside before commit.
    assert_eq!(
        btrees.get(TreeId::Xattrs, &key(3)).unwrap(),
        Some(b"committed".to_vec())
    );

    let mut second = btrees.transaction();
    second.put(TreeId::Xattrs, &key(3), b"second").unwrap();
    second.commit().unwrap();
    first.commit().unwrap();
    assert_eq!(
        btrees.get(TreeId::Xattrs, &key(3)).unwrap(),
        Some(b"first".to_vec()),
        "the later commit wins"
    );
}

#[test]
fn oversized_keys_and_values_are_refused_with_typed_errors() {
    let device = memory_device(16 << 20);
    let superblock = make_fs(device.as_ref());
    let btrees = open(device, &superblock, None, 1 << 20);
    let limits = btrees.limits();
    let mut transaction = btrees.transaction();
    assert!(matches!(
        transaction.put(TreeId::Inodes, &vec![1; limits.max_key + 1], b"v"),
        Err(BtreeError::KeyTooLong { .. })
    ));
    assert!(matches!(
        transaction.put(TreeId::Inodes, b"k", &vec![1; limits.max_value + 1]),
        Err(BtreeError::ValueTooLong { .. })
    ));
    transaction
        .put(
            TreeId::Inodes,
            &vec![1; limits.max_key],
            &vec![2; limits.max_value],
        )
        .unwrap();
    assert!(!transaction.is_empty() && transaction.len() == 1);
    transaction.commit().unwrap();
}

#[test]
fn a_small_cache_evicts_and_writes_back_yet_every_key_survives_a_reopen() {
    let device = memory_device(32 << 20);
    let superblock = make_fs(device.as_ref());
    let budget = 256 * 1024;
    let mut model = BTreeMap::new();
    {
        let btrees = open(device.clone(), &superblock, Some(64), budget);
        for round in 0..3u32 {
            for batch in 0..120u32 {
                let mut transaction = btrees.transaction();
                for index in batch * 50..(batch + 1) * 50 {
                    let scattered = index.wrapping_mul(7919) % 6000;
                    transaction
                        .put(TreeId::Dirents, &key(scattered), &value(scattered, round))
                        .unwrap();
                    model.insert(key(scattered), value(scattered, round));
                }
                transaction.commit_durable().unwrap();
                let status = btrees.status();
                assert!(
                    status.cache_memory <= budget + budget / 2,
                    "cache at {} bytes for a budget of {budget}",
                    status.cache_memory
                );
            }
        }
        let status = btrees.status();
        assert!(
            status.nodes_read > 0,
            "nothing was ever evicted and re-read"
        );
        assert_eq!(status.writeback_failures, 0, "{status:?}");
        assert_eq!(all(&btrees, TreeId::Dirents), model);
    }
    // Reopen without syncing: the journal (which wrapped many times) plus the written nodes
    // give everything back.
    let btrees = open(device, &superblock, Some(64), budget);
    assert_eq!(all(&btrees, TreeId::Dirents), model);
    btrees.check().unwrap();
}

#[test]
fn running_out_of_node_space_is_a_clean_error_that_changes_nothing() {
    // The smallest filesystem mkfs makes: about 1 MiB of main region.
    let device = memory_device(2_200 * 1024);
    let superblock = make_fs(device.as_ref());
    let btrees = open(device, &superblock, None, 8 << 20);
    let mut committed = BTreeMap::new();
    let mut failure = None;
    for batch in 0..10_000u32 {
        let mut transaction = btrees.transaction();
        let mut pending = Vec::new();
        for index in batch * 20..(batch + 1) * 20 {
            let big = vec![index as u8; 600];
            transaction.put(TreeId::Extents, &key(index), &big).unwrap();
            pending.push((key(index), big));
        }
        match transaction.commit() {
            Ok(_) => committed.extend(pending),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(failure, Some(BtreeError::NoSpace { .. })),
        "expected NoSpace, got {failure:?}"
    );
    assert_eq!(all(&btrees, TreeId::Extents), committed);
    // Deleting still works, in transactions the free space can hold (each
    // leaf a delete touches takes a block when written), and frees space
    // for new work once durable.
    let keys: Vec<Vec<u8>> = committed.keys().cloned().collect();
    for batch in keys.chunks(40) {
        let mut transaction = btrees.transaction();
        let end = keys.iter().find(|key| *key > batch.last().unwrap());
        transaction
            .delete_range(TreeId::Extents, &batch[0], end.map(|key| &key[..]))
            .unwrap();
        transaction.commit_durable().unwrap();
        btrees.sync().unwrap();
    }
    assert!(all(&btrees, TreeId::Extents).is_empty());
    let mut transaction = btrees.transaction();
    transaction.put(TreeId::Extents, b"again", b"fits").unwrap();
    transaction.commit().unwrap();
    btrees.check().unwrap();
}

#[test]
fn sync_leaves_no_dirty_node_a_settled_journal_and_only_the_roots_pin() {
    let device = memory_device(16 << 20);
    let superblock = make_fs(device.as_ref());
    let btrees = open(device.clone(), &superblock, None, 4 << 20);
    let mut newest_commit = 0;
    for batch in 0..10u32 {
        let mut transaction = btrees.transaction();
        for index in 0..100 {
            transaction
                .put(
                    TreeId::ALL[(index % 6) as usize],
                    &key(batch * 100 + index),
                    b"v",
                )
                .unwrap();
        }
        newest_commit = transaction
            .commit()
            .unwrap()
            .expect("a commit that changed keys");
    }
    btrees.sync().unwrap();
    assert_eq!(btrees.status().dirty_nodes, 0);
    // Settled, not only flushed: an entry on the device records every
    // commit durable, so every block freed before the sync may be reused.
    assert!(
        btrees.journal().recorded_durable_seq() >= newest_commit,
        "recorded durable {} < newest commit {newest_commit}",
        btrees.journal().recorded_durable_seq()
    );
    btrees.journal().reclaim_all().unwrap();
    assert_eq!(
        btrees.journal().status().pins,
        1,
        "only the roots pin remains"
    );
    drop(btrees);
    let btrees = open(device, &superblock, None, 4 << 20);
    assert_eq!(btrees.check().unwrap().keys.iter().sum::<u64>(), 1000);
}

/// Writing a node moves it to a new block but keeps it cached there: the
/// parent's new pointer must lead to the node already in memory. Reading
/// everything back after the writes reads nothing from the device, and
/// the cache holds as many nodes as before (a node cached under its old
/// block only would be read again, and held twice).
#[test]
fn written_nodes_stay_cached_under_their_new_blocks() {
    let device = memory_device(32 << 20);
    let superblock = make_fs(device.as_ref());
    let btrees = open(device, &superblock, None, 16 << 20);
    for round in 0..3u32 {
        for batch in 0..20u32 {
            let mut transaction = btrees.transaction();
            for index in batch * 100..(batch + 1) * 100 {
                transaction
                    .put(TreeId::Extents, &key(index), &value(index, round))
                    .unwrap();
            }
            transaction.commit().unwrap();
        }
        btrees.sync().unwrap();
    }
    let before = btrees.status();
    assert_eq!(before.dirty_nodes, 0);
    assert!(before.nodes_written > 40, "{before:?}");
    assert_eq!(all(&btrees, TreeId::Extents).len(), 2000);
    btrees.check().unwrap();
    let after = btrees.status();
    assert_eq!(after.nodes_read, before.nodes_read, "{after:?}");
    assert_eq!(after.cached_nodes, before.cached_nodes, "{after:?}");
}

/// A commit whose reservation finds the journal full while the ring is
/// full of nodes only it could write (it holds the lock their writes
/// need) must not fail for that, in any ring the journal accepts (40
/// blocks, 8 entries, is the smallest). Before commits let go of the lock
/// and reclaimed, a 64-block ring failed within 600 rounds (what made
/// `rm -rf` on a full filesystem a metadata error); before reclaim
/// recorded its progress as it went, 48 and 56 blocks failed near round
/// 2,700: a long pass filled the part kept for reclaim with the records of
/// its own node writes.
#[test]
fn commits_into_a_small_journal_pinned_by_dirty_nodes_all_succeed() {
    for ring_blocks in [40, 48, 56, 64] {
        let device = memory_device(64 << 20);
        let superblock = make_fs(device.as_ref());
        let btrees = open(device.clone(), &superblock, Some(ring_blocks), 64 << 20);
        let mut random = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..3_000u32 {
            let mut transaction = btrees.transaction();
            // 1 to 60 keys scattered over the tree: entries of every size.
            let keys = 1 + round % 60;
            for _ in 0..keys {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                let index = (random % 50_000) as u32;
                transaction
                    .put(TreeId::Inodes, &key(index), &value(index, round))
                    .unwrap();
            }
            transaction
                .commit()
                .unwrap_or_else(|error| panic!("{ring_blocks} blocks, round {round}: {error}"));
        }
    }
}
