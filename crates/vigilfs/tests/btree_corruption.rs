//! Corruption: damage a leaf or an interior node on the image (a flipped bit, or a node
//! written to the wrong block) and check that the engine refuses that node with a typed
//! error naming the block, never a panic, while nodes that are intact stay readable.

use std::sync::Arc;

use vigilfs::btree::{
    BtreeError, Btrees, BtreesOptions, NodeAllocator, NodeDefect, SimpleAllocator, TreeId,
    NODE_STRUCTURE,
};
use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
use vigilfs::format::header::seal;
use vigilfs::format::{FormatError, FsUuid, Superblock};
use vigilfs::journal::{Journal, JournalOptions};
use vigilfs::mkfs::{mkfs, MkfsOptions};

const BLOCK: usize = 4096;

/// A SimpleAllocator that does not ask open to walk the trees, so a damaged leaf is met
/// only when a lookup reaches it (as with the real, rmap-based allocator).
struct NoScan(SimpleAllocator);

impl NodeAllocator for NoScan {
    fn allocate(&self) -> Result<u64, BtreeError> {
        self.0.allocate()
    }
    fn free(&self, block: u64, seq: u64) {
        self.0.free(block, seq);
    }
    fn available(&self) -> u64 {
        self.0.available()
    }
}

fn open(
    device: Arc<dyn BlockDevice>,
    superblock: &Superblock,
    scan: bool,
) -> Result<Btrees, BtreeError> {
    open_with(device, superblock, scan, BtreesOptions::default())
}

fn open_with(
    device: Arc<dyn BlockDevice>,
    superblock: &Superblock,
    scan: bool,
    options: BtreesOptions,
) -> Result<Btrees, BtreeError> {
    let (journal, replay) =
        Journal::open(device.clone(), JournalOptions::for_filesystem(superblock))?;
    let journal = Arc::new(journal);
    let simple = SimpleAllocator::new(journal.clone(), superblock.layout.main);
    let allocator: Arc<dyn NodeAllocator> = if scan {
        Arc::new(simple)
    } else {
        Arc::new(NoScan(simple))
    };
    Btrees::open(device, journal, &replay, superblock, allocator, options)
}

fn key(index: u32) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

/// A filesystem whose Extents tree has an interior root over many leaves, all written.
fn populated() -> (Vec<u8>, Superblock, Vec<(u8, u64)>) {
    let device = Arc::new(MemoryDevice::new(16 << 20, SectorSize::Bytes512));
    let superblock = mkfs(
        device.as_ref(),
        &MkfsOptions {
            uuid: Some(FsUuid(*b"btree-corruption")),
            time: Some(1_700_000_000),
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    let btrees = open(device.clone(), &superblock, true).unwrap();
    let mut transaction = btrees.transaction();
    for index in 0..3000 {
        transaction
            .put(TreeId::Extents, &key(index), &[index as u8; 20])
            .unwrap();
    }
    transaction.commit().unwrap();
    btrees.sync().unwrap();
    btrees.journal().reclaim_all().unwrap();
    btrees.journal().flush().unwrap();
    let nodes = btrees
        .check()
        .unwrap()
        .nodes
        .into_iter()
        .filter(|(tree, _, _)| *tree == TreeId::Extents)
        .map(|(_, level, block)| (level, block))
        .collect::<Vec<_>>();
    assert!(
        nodes.iter().any(|(level, _)| *level == 1),
        "no interior node"
    );
    drop(btrees);
    (device.to_image(), superblock, nodes)
}

fn damaged(image: &[u8], change: impl FnOnce(&mut Vec<u8>)) -> Arc<dyn BlockDevice> {
    let mut image = image.to_vec();
    change(&mut image);
    Arc::new(MemoryDevice::from_image(image, SectorSize::Bytes512))
}

fn flip(image: &mut [u8], block: u64, offset: usize) {
    image[block as usize * BLOCK + offset] ^= 0x10;
}

/// Reads every key; returns the errors met and how many keys were readable.
fn read_all(btrees: &Btrees) -> (Vec<BtreeError>, usize) {
    let mut errors = Vec::new();
    let mut readable = 0;
    for index in 0..3000 {
        match btrees.get(TreeId::Extents, &key(index)) {
            Ok(Some(value)) => {
                assert_eq!(value, vec![index as u8; 20]);
                readable += 1;
            }
            Ok(None) => panic!("key {index} vanished instead of failing"),
            Err(error) => errors.push(error),
        }
    }
    (errors, readable)
}

#[test]
fn a_flipped_bit_in_a_leaf_is_refused_naming_the_block_while_other_leaves_stay_readable() {
    let (image, superblock, nodes) = populated();
    let leaf = nodes.iter().find(|(level, _)| *level == 0).unwrap().1;
    for offset in [3, 30, 200, 2000] {
        let device = damaged(&image, |image| flip(image, leaf, offset));
        let btrees = open(device, &superblock, false).unwrap();
        let (errors, readable) = read_all(&btrees);
        assert!(!errors.is_empty(), "flip at {offset} went unnoticed");
        assert!(readable > 2000, "only {readable} keys readable");
        for error in errors {
            assert_eq!(error.corrupt_block(), Some(leaf), "{error}");
            let BtreeError::CorruptNode { tree, defect, .. } = &error else {
                unreachable!();
            };
            assert_eq!(*tree, TreeId::Extents);
            assert!(
                matches!(
                    defect,
                    NodeDefect::Format(FormatError::BadMagic { .. })
                        | NodeDefect::Format(FormatError::ChecksumMismatch { .. })
                ),
                "{defect}"
            );
        }
        // Scanning meets the same node and says so.
        let scan_error = btrees
            .range(TreeId::Extents, &[], None)
            .find_map(Result::err)
            .expect("the scan reaches the damaged leaf");
        assert_eq!(scan_error.corrupt_block(), Some(leaf));
    }
}

#[test]
fn a_damaged_leaf_makes_the_block_walking_open_fail_naming_the_block() {
    let (image, superblock, nodes) = populated();
    let leaf = nodes.iter().rfind(|(level, _)| *level == 0).unwrap().1;
    let device = damaged(&image, |image| flip(image, leaf, 1000));
    let error = open(device, &superblock, true).unwrap_err();
    assert_eq!(error.corrupt_block(), Some(leaf), "{error}");
}

#[test]
fn a_flipped_bit_in_an_interior_node_is_refused_at_open_naming_the_block() {
    let (image, superblock, nodes) = populated();
    let interior = nodes.iter().find(|(level, _)| *level == 1).unwrap().1;
    for offset in [0, 12, 60, 100, 700] {
        let device = damaged(&image, |image| flip(image, interior, offset));
        let error = open(device, &superblock, false).unwrap_err();
        assert_eq!(error.corrupt_block(), Some(interior), "{error}");
        assert!(error.to_string().contains(&format!("block {interior}")));
    }
}

/// With `salvage`, the same damage leaves that one tree unreadable: each of
/// its operations fails naming the block, while the other trees read and
/// commit.
#[test]
fn salvage_opens_around_a_tree_whose_interior_node_is_unreadable() {
    let (image, superblock, nodes) = populated();
    let interior = nodes.iter().find(|(level, _)| *level == 1).unwrap().1;
    let device = damaged(&image, |image| flip(image, interior, 100));
    let salvage = BtreesOptions {
        salvage: true,
        ..BtreesOptions::default()
    };
    let btrees = open_with(device, &superblock, false, salvage).unwrap();
    let unreadable = btrees.unreadable_trees();
    assert_eq!(unreadable.len(), 1);
    assert_eq!(unreadable[0].0, TreeId::Extents);
    let get = btrees.get(TreeId::Extents, &key(7)).unwrap_err();
    assert_eq!(get.corrupt_block(), Some(interior), "{get}");
    let scan = btrees
        .range(TreeId::Extents, &[], None)
        .find_map(Result::err);
    assert_eq!(scan.and_then(|error| error.corrupt_block()), Some(interior));
    let mut into_it = btrees.transaction();
    into_it.put(TreeId::Extents, &key(7), b"new").unwrap();
    into_it.put(TreeId::Inodes, &key(7), b"new").unwrap();
    assert_eq!(
        into_it.commit().unwrap_err().corrupt_block(),
        Some(interior)
    );
    assert_eq!(btrees.get(TreeId::Inodes, &key(7)).unwrap(), None);
    let mut beside_it = btrees.transaction();
    beside_it.put(TreeId::Inodes, &key(7), b"new").unwrap();
    beside_it.commit().unwrap();
    assert_eq!(
        btrees.get(TreeId::Inodes, &key(7)).unwrap().as_deref(),
        Some(&b"new"[..])
    );
}

#[test]
fn a_node_written_to_the_wrong_block_is_refused_as_misdirected() {
    let (image, superblock, nodes) = populated();
    let leaves: Vec<u64> = nodes
        .iter()
        .filter(|(level, _)| *level == 0)
        .map(|(_, block)| *block)
        .collect();
    let (victim, stray) = (leaves[1], leaves[2]);
    let device = damaged(&image, |image| {
        let from = stray as usize * BLOCK;
        let copy = image[from..from + BLOCK].to_vec();
        image[victim as usize * BLOCK..(victim as usize + 1) * BLOCK].copy_from_slice(&copy);
    });
    let btrees = open(device, &superblock, false).unwrap();
    let (errors, _) = read_all(&btrees);
    assert!(!errors.is_empty());
    for error in errors {
        assert!(
            matches!(
                error,
                BtreeError::CorruptNode {
                    block,
                    defect: NodeDefect::WrongBlock { recorded },
                    ..
                } if block == victim && recorded == stray
            ),
            "{error}"
        );
    }
}

/// Points child `index` of the interior node at `block` to `target`, and
/// seals the node again: damage its checksum cannot see (a bug, or a
/// hostile image).
fn point_child(image: &mut [u8], block: u64, index: usize, target: u64) {
    let node = &mut image[block as usize * BLOCK..(block as usize + 1) * BLOCK];
    let bound = |at: usize| usize::from(u16::from_le_bytes([node[at], node[at + 1]]));
    let (lower, upper) = (bound(60), bound(62));
    let mut at = 64 + lower + if upper == 0xFFFF { 0 } else { upper };
    for _ in 0..index {
        at += 2 + bound(at) + 8;
    }
    at += 2 + bound(at);
    node[at..at + 8].copy_from_slice(&target.to_le_bytes());
    seal(&NODE_STRUCTURE, node).unwrap();
}

#[test]
fn an_interior_node_naming_itself_or_a_sibling_as_its_child_is_refused_instead_of_looping() {
    let (image, superblock, nodes) = populated();
    let root = nodes.iter().find(|(level, _)| *level == 1).unwrap().1;
    let leaf = nodes.iter().find(|(level, _)| *level == 0).unwrap().1;
    // Itself: a walk that trusted the cached node would go round for ever,
    // its path growing until memory ran out. Another tree's node: as wrong.
    for target in [root, leaf] {
        let device = damaged(&image, |image| point_child(image, root, 2, target));
        let btrees = open(device, &superblock, false).unwrap();
        // The leaf is read (and cached) first through its rightful parent.
        btrees.get(TreeId::Extents, &key(0)).unwrap();
        let (errors, readable) = read_all(&btrees);
        assert!(
            !errors.is_empty(),
            "child pointer to {target} went unnoticed"
        );
        assert!(readable > 2000, "only {readable} keys readable");
        for error in errors {
            assert!(
                matches!(
                    error,
                    BtreeError::CorruptNode {
                        defect: NodeDefect::WrongLevel { .. } | NodeDefect::WrongBounds,
                        ..
                    }
                ),
                "{error}"
            );
        }
    }
}
