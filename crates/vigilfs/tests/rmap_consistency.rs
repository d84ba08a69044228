//! The reverse map stays exact under random b-tree workloads with the real allocator, across
//! reopens and power cuts: every node block of every tree has exactly one `Node` record with
//! its tree and level (the rmap tree's own nodes are in the allocator's in-memory set
//! instead), no `Node` record names anything but a node, data extents recorded in the same
//! transactions keep their records, and free space plus used space is the main region with
//! no overlap.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use vigilfs::alloc::{Allocator, Extent};
use vigilfs::btree::{Btrees, BtreesOptions, TreeId};
use vigilfs::device::{BlockDevice, CrashDevice, CrashMode, MemoryDevice, SectorSize};
use vigilfs::format::{FsUuid, Superblock};
use vigilfs::journal::{Journal, JournalOptions};
use vigilfs::mkfs::{mkfs, MkfsOptions};
use vigilfs::rmap::{self, Owner, RmapRecord};

const DEVICE_BYTES: u64 = 4 << 20;
const WORKLOAD_TREES: [TreeId; 5] = [
    TreeId::Inodes,
    TreeId::Dirents,
    TreeId::Extents,
    TreeId::Xattrs,
    TreeId::Meta,
];

fn make_fs(device: &dyn BlockDevice) -> Superblock {
    let options = MkfsOptions {
        uuid: Some(FsUuid(*b"rmap-consistency")),
        time: Some(1_700_000_000),
        journal_bytes: Some(1 << 20),
        ..MkfsOptions::default()
    };
    mkfs(device, &options).expect("mkfs")
}

fn open(
    device: Arc<dyn BlockDevice>,
    superblock: &Superblock,
) -> Result<(Btrees, Arc<Allocator>), String> {
    let mut options = JournalOptions::for_filesystem(superblock);
    options.region.length = 48 * u64::from(superblock.layout.block_size);
    options.entry_bytes = 8 * 1024;
    let (journal, replay) = Journal::open(device.clone(), options).map_err(|e| e.to_string())?;
    let journal = Arc::new(journal);
    let allocator = Arc::new(Allocator::new(journal.clone(), superblock.layout.main));
    let btrees = Btrees::open(
        device,
        journal,
        &replay,
        superblock,
        allocator.clone(),
        BtreesOptions {
            cache_bytes: 48 * 1024,
            ..BtreesOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    Ok((btrees, allocator))
}

/// Checks every invariant of the module comment; `settled` (after a sync) additionally
/// requires that no free is still waiting for durability.
fn check_rmap(
    btrees: &Btrees,
    allocator: &Allocator,
    superblock: &Superblock,
    settled: bool,
) -> Result<(), String> {
    let report = btrees.check().map_err(|e| format!("check: {e}"))?;
    let records = rmap::records(btrees).map_err(|e| format!("records: {e}"))?;
    let mut node_records: BTreeMap<u64, (TreeId, u8)> = BTreeMap::new();
    for record in &records {
        if let Owner::Node { tree, level } = record.owner {
            node_records.insert(record.start, (tree, level));
        }
    }
    let mut rmap_tree_nodes = BTreeSet::new();
    for &(tree, level, block) in &report.nodes {
        if tree == TreeId::Rmap {
            rmap_tree_nodes.insert((level, block));
            continue;
        }
        match node_records.remove(&block) {
            Some(found) if found == (tree, level) => {}
            other => {
                return Err(format!(
                    "{tree} level {level} node at block {block} has rmap record {other:?}"
                ))
            }
        }
    }
    if !node_records.is_empty() {
        return Err(format!("node records for non-nodes: {node_records:?}"));
    }
    let in_memory: BTreeSet<(u8, u64)> = allocator.rmap_nodes().nodes().into_iter().collect();
    if in_memory != rmap_tree_nodes {
        return Err(format!(
            "rmap-tree node set {in_memory:?} differs from the walk {rmap_tree_nodes:?}"
        ));
    }
    let mut used: Vec<Extent> = records
        .iter()
        .map(|record| Extent::new(record.start, record.blocks))
        .collect();
    used.extend(
        rmap_tree_nodes
            .iter()
            .map(|&(_, block)| Extent::new(block, 1)),
    );
    let free = allocator.free_extents();
    let mut all: Vec<Extent> = used.iter().chain(&free).copied().collect();
    all.sort_unstable();
    for pair in all.windows(2) {
        if pair[0].end() > pair[1].start {
            return Err(format!("{:?} and {:?} overlap", pair[0], pair[1]));
        }
    }
    let main = superblock.layout.main;
    let region_blocks = main.end().expect("bounded region") - main.start;
    let covered: u64 = all.iter().map(|extent| extent.blocks).sum();
    let status = allocator.status();
    if all.first().is_some_and(|first| first.start < main.start)
        || all
            .last()
            .is_some_and(|last| last.end() > main.start + region_blocks)
    {
        return Err("an extent lies outside the main region".into());
    }
    if covered + status.pending_blocks + status.bad_blocks != region_blocks {
        return Err(format!(
            "used + free = {covered}, pending {}, bad {}, region {region_blocks}",
            status.pending_blocks, status.bad_blocks
        ));
    }
    if settled && status.pending_blocks != 0 {
        return Err(format!(
            "{} blocks still pending after a sync",
            status.pending_blocks
        ));
    }
    Ok(())
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Data extents the workload owns: start → (extent, inode).
type DataModel = BTreeMap<u64, (Extent, u64)>;

/// One transaction of the random workload: key puts and deletes in several trees, and (as
/// the file layer would) a data extent allocated and recorded, or one unmapped and freed.
fn random_transaction(
    btrees: &Btrees,
    allocator: &Allocator,
    random: &mut Random,
    data: &mut DataModel,
    number: u64,
) -> Result<(), String> {
    let mut transaction = btrees.transaction();
    for _ in 0..1 + random.below(6) {
        let tree = WORKLOAD_TREES[random.below(WORKLOAD_TREES.len() as u64) as usize];
        let key = random.below(400).to_be_bytes();
        match random.below(10) {
            0..=6 => {
                let mut value = format!("n{number}").into_bytes();
                value.resize(20 + random.below(300) as usize, b'v');
                transaction
                    .put(tree, &key, &value)
                    .map_err(|e| e.to_string())?;
            }
            7 | 8 => transaction.delete(tree, &key).map_err(|e| e.to_string())?,
            _ => {
                let end = (u64::from_be_bytes(key) + 30).to_be_bytes();
                transaction
                    .delete_range(tree, &key, Some(&end))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let mut allocated = Vec::new();
    let mut unmapped = Vec::new();
    if random.below(3) == 0 && !data.is_empty() {
        let victim = *data
            .keys()
            .nth(random.below(data.len() as u64) as usize)
            .expect("in range");
        rmap::remove(&mut transaction, victim).map_err(|e| e.to_string())?;
        unmapped.push(data.remove(&victim).expect("present").0);
    } else if random.below(2) == 0 {
        let ino = 1 + random.below(50);
        let wanted = 1 + random.below(4);
        if let Ok(extents) = allocator.allocate_data(wanted, 0) {
            let mut offset = 0;
            for extent in extents {
                let record = RmapRecord {
                    start: extent.start,
                    blocks: extent.blocks,
                    owner: Owner::FileData {
                        ino,
                        file_offset_blocks: offset,
                    },
                };
                rmap::insert(&mut transaction, &record).map_err(|e| e.to_string())?;
                offset += extent.blocks;
                allocated.push((extent, ino));
            }
        }
    }
    match transaction.commit() {
        Ok(seq) => {
            let seq = seq.unwrap_or(0);
            for (extent, ino) in allocated {
                data.insert(extent.start, (extent, ino));
            }
            for extent in unmapped {
                allocator
                    .free_data(extent, seq)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Err(error) => {
            // Never recorded: the blocks go back at once.
            for (extent, _) in allocated {
                let _ = allocator.free_data(extent, 0);
            }
            Err(error.to_string())
        }
    }
}

fn data_records(btrees: &Btrees) -> DataModel {
    rmap::records(btrees)
        .expect("records")
        .into_iter()
        .filter_map(|record| match record.owner {
            Owner::FileData { ino, .. } => Some((
                record.start,
                (Extent::new(record.start, record.blocks), ino),
            )),
            Owner::Node { .. } => None,
        })
        .collect()
}

#[test]
fn a_fresh_filesystem_records_every_root_but_the_rmap_root_in_the_rmap() {
    let device = Arc::new(MemoryDevice::new(DEVICE_BYTES, SectorSize::Bytes512));
    let superblock = make_fs(device.as_ref());
    let (btrees, allocator) = open(device.clone(), &superblock).expect("open");
    check_rmap(&btrees, &allocator, &superblock, true).unwrap();
    let records = rmap::records(&btrees).unwrap();
    assert_eq!(records.len(), TreeId::ALL.len() - 1);
    assert_eq!(allocator.rmap_nodes().nodes().len(), 1);
    drop(btrees);
    let (btrees, allocator) = open(device, &superblock).expect("reopen");
    check_rmap(&btrees, &allocator, &superblock, false).unwrap();
}

#[test]
fn random_workloads_keep_the_rmap_exact_through_syncs_and_reopens() {
    let device = Arc::new(MemoryDevice::new(DEVICE_BYTES, SectorSize::Bytes512));
    let superblock = make_fs(device.as_ref());
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    let mut data = DataModel::new();
    for round in 0..4u64 {
        let (btrees, allocator) = open(device.clone(), &superblock).expect("open");
        check_rmap(&btrees, &allocator, &superblock, false)
            .unwrap_or_else(|why| panic!("round {round} after open: {why}"));
        assert_eq!(data_records(&btrees), data, "round {round}: data records");
        for number in 0..250 {
            random_transaction(&btrees, &allocator, &mut random, &mut data, number)
                .unwrap_or_else(|why| panic!("round {round} transaction {number}: {why}"));
            if number % 50 == 49 {
                check_rmap(&btrees, &allocator, &superblock, false)
                    .unwrap_or_else(|why| panic!("round {round} at {number}: {why}"));
            }
        }
        btrees.sync().unwrap();
        check_rmap(&btrees, &allocator, &superblock, true)
            .unwrap_or_else(|why| panic!("round {round} after sync: {why}"));
        let root_levels = btrees.status().root_levels;
        assert!(round < 3 || root_levels.iter().any(|&level| level > 0));
    }
}

fn crash_run(device: &Arc<CrashDevice>, superblock: &Superblock, seed: u64) {
    let Ok((btrees, allocator)) = open(device.clone(), superblock) else {
        return;
    };
    let mut random = Random(seed);
    let mut data = DataModel::new();
    for number in 0..400 {
        if random_transaction(&btrees, &allocator, &mut random, &mut data, number).is_err() {
            return;
        }
        if number % 5 == 0 && btrees.journal().flush().is_err() {
            return;
        }
        if number % 40 == 39 && btrees.sync().is_err() {
            return;
        }
    }
}

#[test]
fn power_cuts_at_random_flush_points_leave_a_consistent_rmap_after_recovery() {
    let seed = 0xD1B5_4A32_D192_ED03;
    let reference = Arc::new(CrashDevice::new(DEVICE_BYTES, SectorSize::Bytes512));
    let superblock = make_fs(reference.as_ref());
    let start = reference.flushes_issued();
    crash_run(&reference, &superblock, seed);
    let flush_points = reference.flushes_issued() - start;
    assert!(flush_points >= 30, "only {flush_points} flush points");
    let mut picker = Random(flush_points);
    let mut cuts: BTreeSet<u64> = (0..32).map(|_| 1 + picker.below(flush_points)).collect();
    cuts.insert(flush_points);
    let mut recovered_records = 0;
    let mut images = 0;
    for cut in cuts {
        let device = Arc::new(CrashDevice::new(DEVICE_BYTES, SectorSize::Bytes512));
        make_fs(device.as_ref());
        device.cut_power_at_flush(Some(device.flushes_issued() + cut));
        crash_run(&device, &superblock, seed);
        for mode in [
            CrashMode::DropUnflushed,
            CrashMode::KeepUnflushed,
            CrashMode::Torn { seed: cut },
        ] {
            let context = format!("cut at flush {cut} of {flush_points}, {mode:?}");
            let image: Arc<dyn BlockDevice> = Arc::new(device.crash(mode));
            let (btrees, allocator) = open(image.clone(), &superblock)
                .unwrap_or_else(|why| panic!("{context}: recovery failed: {why}"));
            check_rmap(&btrees, &allocator, &superblock, false)
                .unwrap_or_else(|why| panic!("{context}: after recovery: {why}"));
            recovered_records += rmap::records(&btrees).unwrap().len();
            images += 1;
            // Work after recovery keeps it exact, and so does the next mount.
            let mut random = Random(cut);
            let mut data = data_records(&btrees);
            for number in 0..30 {
                random_transaction(&btrees, &allocator, &mut random, &mut data, number)
                    .unwrap_or_else(|why| panic!("{context}: transaction {number}: {why}"));
            }
            btrees.sync().unwrap();
            check_rmap(&btrees, &allocator, &superblock, true)
                .unwrap_or_else(|why| panic!("{context}: after sync: {why}"));
            drop(btrees);
            let (btrees, allocator) = open(image, &superblock)
                .unwrap_or_else(|why| panic!("{context}: remount failed: {why}"));
            check_rmap(&btrees, &allocator, &superblock, false)
                .unwrap_or_else(|why| panic!("{context}: after remount: {why}"));
        }
    }
    eprintln!("{images} crash images over {flush_points} flush points, {recovered_records} records recovered");
    assert!(
        recovered_records > images * 10,
        "the workload reached the rmap"
    );
}
