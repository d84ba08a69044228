//! The allocator built from the rmap: running out of space (data and nodes) is a clean
//! error with nothing half-applied and space comes back once frees are durable; a freed
//! block is never handed out before its free's journal seq is durable; bad blocks are never
//! handed out; reopening rebuilds the same free space from the rmap.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use vigilfs::alloc::{AllocError, Allocator, Extent};
use vigilfs::btree::{
    BtreeError, Btrees, BtreesOptions, NodeAllocator, RecoveredTrees, TreeId, Update,
};
use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
use vigilfs::format::{FsUuid, Superblock};
use vigilfs::journal::{Journal, JournalOptions};
use vigilfs::mkfs::{mkfs, MkfsOptions};
use vigilfs::rmap::{self, Owner, RmapRecord};

fn make_fs(device: &dyn BlockDevice) -> Superblock {
    let options = MkfsOptions {
        uuid: Some(FsUuid(*b"alloc-space-test")),
        time: Some(1_700_000_000),
        journal_bytes: Some(1 << 20),
        // The space this test fills to the last block is measured without
        // an event log region.
        event_log_bytes: Some(0),
        ..MkfsOptions::default()
    };
    mkfs(device, &options).expect("mkfs")
}

fn open_with(
    device: Arc<dyn BlockDevice>,
    superblock: &Superblock,
    make: impl FnOnce(Arc<Journal>) -> Arc<dyn NodeAllocator>,
) -> Btrees {
    let mut options = JournalOptions::for_filesystem(superblock);
    options.region.length = 64 * u64::from(superblock.layout.block_size);
    options.entry_bytes = 16 * 1024;
    let (journal, replay) = Journal::open(device.clone(), options).expect("journal");
    let journal = Arc::new(journal);
    let allocator = make(journal.clone());
    Btrees::open(
        device,
        journal,
        &replay,
        superblock,
        allocator,
        BtreesOptions {
            cache_bytes: 8 << 20,
            ..BtreesOptions::default()
        },
    )
    .expect("open")
}

fn open(
    device: Arc<dyn BlockDevice>,
    superblock: &Superblock,
    reserve: u64,
) -> (Btrees, Arc<Allocator>) {
    let mut made = None;
    let btrees = open_with(device, superblock, |journal| {
        let allocator = Arc::new(
            Allocator::new(journal, superblock.layout.main).with_metadata_reserve(reserve),
        );
        made = Some(allocator.clone());
        allocator
    });
    (btrees, made.expect("allocator made"))
}

fn data_record(extent: Extent, ino: u64) -> RmapRecord {
    RmapRecord {
        start: extent.start,
        blocks: extent.blocks,
        owner: Owner::FileData {
            ino,
            file_offset_blocks: 0,
        },
    }
}

fn all(btrees: &Btrees, tree: TreeId) -> BTreeMap<Vec<u8>, Vec<u8>> {
    btrees
        .range(tree, &[], None)
        .map(|entry| entry.expect("scan"))
        .collect()
}

#[test]
fn filling_with_data_then_nodes_ends_in_clean_enospc_and_space_returns_after_durable_frees() {
    // The smallest filesystem mkfs makes: a few hundred blocks of main region.
    let device: Arc<dyn BlockDevice> =
        Arc::new(MemoryDevice::new(2_200 * 1024, SectorSize::Bytes512));
    let superblock = make_fs(device.as_ref());
    let (btrees, allocator) = open(device.clone(), &superblock, 24);
    // Data until the allocator refuses (it keeps the metadata reserve).
    let mut mapped = Vec::new();
    let data_error = loop {
        match allocator.allocate_data(3, 0) {
            Ok(extents) => {
                let mut transaction = btrees.transaction();
                for (index, &extent) in extents.iter().enumerate() {
                    rmap::insert(
                        &mut transaction,
                        &data_record(extent, mapped.len() as u64 + index as u64),
                    )
                    .unwrap();
                }
                transaction
                    .commit()
                    .expect("the reserve covers the records");
                mapped.extend(extents);
            }
            Err(error) => break error,
        }
    };
    assert!(
        matches!(data_error, AllocError::NoSpace { .. }),
        "{data_error:?}"
    );
    assert!(!mapped.is_empty());
    // Then keys until the nodes run out: a clean NoSpace that changes nothing.
    let mut committed = BTreeMap::new();
    let node_error = (0..100_000u32)
        .find_map(|batch| {
            let mut transaction = btrees.transaction();
            let mut pending = Vec::new();
            for index in batch * 10..(batch + 1) * 10 {
                let key = index.to_be_bytes().to_vec();
                let value = vec![index as u8; 500];
                transaction.put(TreeId::Meta, &key, &value).unwrap();
                pending.push((key, value));
            }
            match transaction.commit() {
                Ok(_) => {
                    committed.extend(pending);
                    None
                }
                Err(error) => Some(error),
            }
        })
        .expect("space runs out");
    assert!(
        matches!(node_error, BtreeError::NoSpace { .. }),
        "{node_error:?}"
    );
    assert_eq!(
        all(&btrees, TreeId::Meta),
        committed,
        "nothing half-applied"
    );
    let records = rmap::records(&btrees).unwrap();
    let data_records = records
        .iter()
        .filter(|record| matches!(record.owner, Owner::FileData { .. }))
        .count();
    assert_eq!(data_records, mapped.len());
    // Delete the keys, then unmap the data a few extents per transaction, durably: each
    // step fits in what is left, and the space comes back.
    let mut transaction = btrees.transaction();
    transaction.delete_range(TreeId::Meta, &[], None).unwrap();
    transaction.commit_durable().expect("a range delete fits");
    btrees.sync().unwrap();
    for chunk in mapped.chunks(8) {
        let mut transaction = btrees.transaction();
        for extent in chunk {
            rmap::remove(&mut transaction, extent.start).unwrap();
        }
        let seq = transaction.commit_durable().unwrap().unwrap();
        for &extent in chunk {
            allocator.free_data(extent, seq).unwrap();
        }
    }
    btrees.sync().unwrap();
    assert!(rmap::records(&btrees)
        .unwrap()
        .iter()
        .all(|record| matches!(record.owner, Owner::Node { .. })));
    let again = allocator.allocate_data(3, 0).expect("space is back");
    assert_eq!(again.iter().map(|extent| extent.blocks).sum::<u64>(), 3);
    let mut transaction = btrees.transaction();
    transaction.put(TreeId::Meta, b"after", b"fits").unwrap();
    transaction.commit().unwrap();
    btrees.sync().unwrap();
    btrees.check().unwrap();
    assert_eq!(allocator.status().refused_frees, 0);
}

#[test]
fn a_freed_data_extent_is_handed_out_only_once_its_seq_is_durable() {
    let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(4 << 20, SectorSize::Bytes512));
    let superblock = make_fs(device.as_ref());
    let (btrees, allocator) = open(device, &superblock, 0);
    let extent = allocator.allocate_data(4, 0).unwrap()[0];
    let mut transaction = btrees.transaction();
    rmap::insert(&mut transaction, &data_record(extent, 9)).unwrap();
    transaction.commit_durable().unwrap();
    let mut transaction = btrees.transaction();
    rmap::remove(&mut transaction, extent.start).unwrap();
    let seq = transaction.commit().unwrap().unwrap();
    allocator.free_data(extent, seq).unwrap();
    let journal = btrees.journal().clone();
    assert!(
        journal.status().durable_seq < seq,
        "the unmap is not durable yet"
    );
    assert_eq!(allocator.status().pending_blocks, 4);
    // Take blocks one by one: none of the freed extent may come back before
    // its free is durable. When nothing else is left the allocator makes it
    // durable (a journal flush) rather than report ENOSPC.
    let mut reused = Vec::new();
    while reused.len() < 4 {
        let got = match allocator.allocate_data(1, 0) {
            Ok(got) => got[0],
            Err(error) => panic!("ENOSPC while 4 freed blocks could be made durable: {error}"),
        };
        if extent.start <= got.start && got.end() <= extent.end() {
            assert!(
                journal.status().durable_seq >= seq,
                "block {} reused before its free was durable",
                got.start
            );
            reused.push(got.start);
        }
    }
    reused.sort_unstable();
    assert_eq!(reused, (extent.start..extent.end()).collect::<Vec<_>>());
    assert!(matches!(
        allocator.allocate_data(1, 0),
        Err(AllocError::NoSpace { .. })
    ));
}

/// Wraps the real allocator and checks, at every node allocation, that a block freed
/// earlier is handed out only once the journal says its free is durable.
struct DurableReuseChecker {
    inner: Arc<Allocator>,
    journal: Arc<Journal>,
    freed_at: Mutex<BTreeMap<u64, u64>>,
    reuses: Mutex<u64>,
}

impl NodeAllocator for DurableReuseChecker {
    fn allocate(&self) -> Result<u64, BtreeError> {
        let block = self.inner.allocate()?;
        if let Some(seq) = self.freed_at.lock().unwrap().remove(&block) {
            let durable = self.journal.status().durable_seq;
            assert!(
                seq <= durable,
                "block {block} freed at seq {seq} reused with durable seq {durable}"
            );
            *self.reuses.lock().unwrap() += 1;
        }
        Ok(block)
    }
    fn free(&self, block: u64, seq: u64) {
        self.freed_at.lock().unwrap().insert(block, seq);
        self.inner.free(block, seq);
    }
    fn available(&self) -> u64 {
        self.inner.available()
    }
    fn node_owner_updates(
        &self,
        tree: TreeId,
        added: &[(u8, u64)],
        removed: &[(u8, u64)],
    ) -> Vec<Update> {
        self.inner.node_owner_updates(tree, added, removed)
    }
    fn nodes_moved(&self, tree: TreeId, added: &[(u8, u64)], removed: &[(u8, u64)]) {
        self.inner.nodes_moved(tree, added, removed);
    }
    fn recovered(&self, trees: &mut RecoveredTrees<'_>) -> Result<(), BtreeError> {
        self.inner.recovered(trees)
    }
}

#[test]
fn node_blocks_freed_by_writeback_are_reused_only_after_their_seq_is_durable() {
    // A small region, so node writes wrap around to freed blocks quickly.
    let device: Arc<dyn BlockDevice> =
        Arc::new(MemoryDevice::new(2_200 * 1024, SectorSize::Bytes512));
    let superblock = make_fs(device.as_ref());
    let mut checker = None;
    let btrees = open_with(device, &superblock, |journal| {
        let made = Arc::new(DurableReuseChecker {
            inner: Arc::new(Allocator::new(journal.clone(), superblock.layout.main)),
            journal,
            freed_at: Mutex::new(BTreeMap::new()),
            reuses: Mutex::new(0),
        });
        checker = Some(made.clone());
        made
    });
    let checker = checker.expect("made");
    for round in 0..60u32 {
        for batch in 0..4u32 {
            let mut transaction = btrees.transaction();
            for index in 0..15u32 {
                let key = ((round * 7 + batch * 15 + index) % 120).to_be_bytes();
                let value = vec![round as u8; 150];
                transaction.put(TreeId::Inodes, &key, &value).unwrap();
                transaction.put(TreeId::Dirents, &key, &value).unwrap();
            }
            transaction.commit().unwrap();
        }
        // Writeback frees old copies at seqs the journal has not flushed yet; sometimes
        // flush, sometimes not, so reuse meets both.
        btrees.sync().unwrap();
        if round % 3 == 0 {
            btrees.journal().flush().unwrap();
        }
    }
    let reuses = *checker.reuses.lock().unwrap();
    assert!(reuses > 50, "only {reuses} reuses");
}

#[test]
fn bad_blocks_are_never_handed_out_for_data_or_nodes_even_after_their_owner_frees_them() {
    let device: Arc<dyn BlockDevice> =
        Arc::new(MemoryDevice::new(2_200 * 1024, SectorSize::Bytes512));
    let superblock = make_fs(device.as_ref());
    let main = superblock.layout.main;
    // A bad range known before mount (as a persisted list would be): the empty trees avoid it.
    let bad_before = Extent::new(main.start, 3);
    let mut made = None;
    let btrees = open_with(device, &superblock, |journal| {
        let allocator = Arc::new(Allocator::new(journal, main).with_metadata_reserve(0));
        allocator.mark_bad(bad_before).unwrap();
        made = Some(allocator.clone());
        allocator
    });
    let allocator = made.expect("made");
    // A used data extent goes bad, then its owner frees it.
    let used = allocator.allocate_data(5, 0).unwrap()[0];
    let mut transaction = btrees.transaction();
    rmap::insert(&mut transaction, &data_record(used, 4)).unwrap();
    transaction.commit_durable().unwrap();
    let bad_used = Extent::new(used.start + 1, 2);
    allocator.mark_bad(bad_used).unwrap();
    let mut transaction = btrees.transaction();
    rmap::remove(&mut transaction, used.start).unwrap();
    let seq = transaction.commit_durable().unwrap().unwrap();
    allocator.free_data(used, seq).unwrap();
    // A free run goes bad too.
    let free_run = *allocator.free_extents().last().expect("free space left");
    let bad_free = Extent::new(free_run.start + free_run.blocks / 2, 2);
    allocator.mark_bad(bad_free).unwrap();
    assert_eq!(allocator.status().bad_blocks, 7);
    let is_bad = |block: u64| {
        [bad_before, bad_used, bad_free]
            .iter()
            .any(|bad| bad.start <= block && block < bad.end())
    };
    // Take everything, data first, then nodes one by one.
    let mut handed_out = Vec::new();
    while let Ok(extents) = allocator.allocate_data(1, 0) {
        handed_out.extend(extents);
    }
    while let Ok(block) = NodeAllocator::allocate(allocator.as_ref()) {
        handed_out.push(Extent::new(block, 1));
    }
    assert!(!handed_out.is_empty());
    for extent in &handed_out {
        assert!(
            (extent.start..extent.end()).all(|block| !is_bad(block)),
            "bad block handed out in {extent:?}"
        );
    }
    // The good blocks of the freed extent did come back.
    assert!(handed_out.contains(&Extent::new(used.start, 1)));
    assert!(handed_out.contains(&Extent::new(used.start + 3, 1)));
}

#[test]
fn reopening_rebuilds_the_same_free_space_from_the_rmap() {
    let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(4 << 20, SectorSize::Bytes512));
    let superblock = make_fs(device.as_ref());
    let (btrees, allocator) = open(device.clone(), &superblock, 0);
    for round in 0..20u64 {
        let extents = allocator.allocate_data(1 + round % 5, round * 13).unwrap();
        let mut transaction = btrees.transaction();
        for &extent in &extents {
            rmap::insert(&mut transaction, &data_record(extent, round)).unwrap();
        }
        for index in 0..30u64 {
            transaction
                .put(
                    TreeId::Xattrs,
                    &(round * 30 + index).to_be_bytes(),
                    &[1; 90],
                )
                .unwrap();
        }
        transaction.commit().unwrap();
    }
    btrees.sync().unwrap();
    let before = allocator.free_extents();
    drop(btrees);
    let (_btrees, reopened) = open(device, &superblock, 0);
    assert_eq!(reopened.free_extents(), before);
}
