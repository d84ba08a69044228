//! fsck's namespace checks: inodes, directory entries and extents against
//! each other.
//!
//! What must hold (and is reported when it does not):
//!
//! * every record decodes;
//! * a directory entry's key hash is the hash of its name; its directory
//!   exists and is a directory; the inode it names exists and has the type
//!   the entry says;
//! * link counts: a non-directory has as many links as entries naming it;
//!   a directory has 2 plus one per subdirectory, and at most one entry
//!   names it (the root none);
//! * the root directory exists, and is a directory;
//! * the live-inode count, where the filesystem keeps one, is the number of
//!   inode records;
//! * a symbolic link's target is there whole: its pieces add up to the
//!   inode's size;
//! * the extended attributes (`xattrs.rs`);
//! * an extent belongs to an existing regular file or symlink, lies in the
//!   main region, and overlaps neither another extent of its file (in file
//!   offsets) nor any other extent or b-tree node (on the device).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Problem;
use crate::btree::{BtreeError, Btrees, TreeId};
use crate::format::Region;
use crate::inode::{
    decode_inode_key, decode_live_inodes, name_hash, read_symlink_target, Dirent, DirentKey,
    Extent, ExtentKey, FileType, InodeRecord, LIVE_INODES_KEY, ROOT_INO,
};

/// What the namespace holds, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceCounts {
    /// Inode records.
    pub inodes: u64,
    /// Directory entries.
    pub dirents: u64,
    /// Extended attributes (records, damaged ones too).
    pub attributes: u64,
    /// Extents.
    pub extents: u64,
    /// Blocks the extents map.
    pub extent_blocks: u64,
}

/// A physical run and who holds it, for the overlap check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PhysicalUse {
    pub(crate) start: u64,
    pub(crate) blocks: u64,
    pub(crate) owner: PhysicalOwner,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum PhysicalOwner {
    Extent { ino: u64, offset: u64 },
    Node { tree: TreeId, level: u8 },
}

impl std::fmt::Display for PhysicalOwner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PhysicalOwner::Extent { ino, offset } => {
                write!(formatter, "extent of inode {ino} at block {offset}")
            }
            PhysicalOwner::Node { tree, level } => {
                write!(formatter, "{tree} b-tree node (level {level})")
            }
        }
    }
}

/// How an inode not among the readable ones is missing: its record may be
/// there but damaged (reported on its own).
pub(super) fn missing_or_damaged(damaged: &HashSet<u64>, ino: u64) -> &'static str {
    if damaged.contains(&ino) {
        "has a damaged record (above)"
    } else {
        "does not exist"
    }
}

fn problem(structure: &str, message: String) -> Problem {
    Problem {
        structure: structure.into(),
        message,
    }
}

/// One extent as found: where its blocks are and whose they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FoundExtent {
    pub(crate) ino: u64,
    pub(crate) offset: u64,
    pub(crate) physical: u64,
    pub(crate) blocks: u64,
}

/// Runs the namespace checks; `nodes` are the b-tree node blocks from the
/// tree walk. Returns the counts and every extent that decoded, for the
/// reverse-map cross-check.
pub(crate) fn check(
    trees: &Btrees,
    main: Region,
    nodes: &[(TreeId, u8, u64)],
    problems: &mut Vec<Problem>,
) -> Result<(NamespaceCounts, Vec<FoundExtent>), BtreeError> {
    let mut counts = NamespaceCounts::default();
    let mut found_extents = Vec::new();

    let mut inodes: HashMap<u64, InodeRecord> = HashMap::new();
    // Inodes whose record is there but damaged: what names them is told
    // so, not that they do not exist.
    let mut damaged: HashSet<u64> = HashSet::new();
    for entry in trees.range(TreeId::Inodes, &[], None) {
        let (key, value) = entry?;
        counts.inodes += 1;
        let ino = match decode_inode_key(&key) {
            Ok(ino) => ino,
            Err(error) => {
                problems.push(problem("inode tree", format!("key {key:02x?}: {error}")));
                continue;
            }
        };
        match InodeRecord::decode(&value) {
            Ok(record) => {
                inodes.insert(ino, record);
            }
            Err(error) => {
                damaged.insert(ino);
                problems.push(problem("inode tree", format!("inode {ino}: {error}")));
            }
        }
    }
    if let Some(bytes) = trees.get(TreeId::Meta, LIVE_INODES_KEY)? {
        match decode_live_inodes(&bytes) {
            Ok(live) if live == counts.inodes => {}
            Ok(live) => problems.push(problem(
                "inode count",
                format!(
                    "the filesystem counts {live} inodes, the inode tree holds {}",
                    counts.inodes
                ),
            )),
            Err(error) => problems.push(problem("inode count", error.to_string())),
        }
    }
    let mut symlinks: Vec<(&u64, &InodeRecord)> = inodes
        .iter()
        .filter(|(_, record)| record.file_type() == FileType::Symlink)
        .collect();
    symlinks.sort_unstable_by_key(|(ino, _)| **ino);
    for (ino, record) in symlinks {
        let get = |key: &[u8]| trees.get(TreeId::Meta, key);
        if let Err(error) = read_symlink_target(get, *ino, record.size) {
            problems.push(problem("symlink targets", error.to_string()));
        }
    }
    // No mount can serve a filesystem without its root directory: mkfs
    // makes it, so an inode tree without one (empty, as a mkfs that died
    // before its root leaves it) is damage, not a new filesystem.
    match inodes.get(&ROOT_INO) {
        Some(root) if root.file_type() != FileType::Directory => problems.push(problem(
            "inode tree",
            format!(
                "root directory (inode {ROOT_INO}) is a {:?}, not a directory",
                root.file_type()
            ),
        )),
        Some(_) => {}
        None if damaged.contains(&ROOT_INO) => {}
        None if counts.inodes == 0 => problems.push(problem(
            "inode tree",
            format!(
                "root directory (inode {ROOT_INO}) is missing: the inode tree is empty (a mkfs \
                 that did not finish leaves it so; make the filesystem again)"
            ),
        )),
        None => problems.push(problem(
            "inode tree",
            format!("root directory (inode {ROOT_INO}) is missing"),
        )),
    }

    counts.attributes = super::xattrs::check(trees, &inodes, &damaged, problems)?;

    // Links each inode receives from directory entries, and subdirectories
    // each directory holds.
    let mut names: HashMap<u64, u32> = HashMap::new();
    let mut subdirectories: HashMap<u64, u32> = HashMap::new();
    // The names met in the current run of keys of one directory and one
    // name hash (the keys sort by both, so a name twice in a directory is
    // found within its run): a lookup finds only the first.
    let mut hash_run: ((u64, u64), Vec<Vec<u8>>) = ((0, 0), Vec::new());
    for entry in trees.range(TreeId::Dirents, &[], None) {
        let (key, value) = entry?;
        counts.dirents += 1;
        let (position, dirent) = match (DirentKey::decode(&key), Dirent::decode(&value)) {
            (Ok(position), Ok(dirent)) => (position, dirent),
            (Err(error), _) | (_, Err(error)) => {
                problems.push(problem(
                    "directory entries",
                    format!("key {key:02x?}: {error}"),
                ));
                continue;
            }
        };
        let name = String::from_utf8_lossy(&dirent.name);
        let at = format!("entry {name:?} in directory {}", position.parent);
        if position.hash != name_hash(&dirent.name) {
            problems.push(problem(
                "directory entries",
                format!("{at}: key hash does not match the name"),
            ));
        }
        if hash_run.0 != (position.parent, position.hash) {
            hash_run = ((position.parent, position.hash), Vec::new());
        }
        if hash_run.1.contains(&dirent.name) {
            problems.push(problem(
                "directory entries",
                format!(
                    "{at}: the name is there twice (the second naming inode {}); lookups find \
                     only the first",
                    dirent.child
                ),
            ));
        } else {
            hash_run.1.push(dirent.name.clone());
        }
        match inodes.get(&position.parent) {
            Some(parent) if parent.file_type() == FileType::Directory => {}
            Some(_) => problems.push(problem(
                "directory entries",
                format!("{at}: the parent is not a directory"),
            )),
            None => problems.push(problem(
                "directory entries",
                format!(
                    "{at}: the parent inode {}",
                    missing_or_damaged(&damaged, position.parent)
                ),
            )),
        }
        match inodes.get(&dirent.child) {
            Some(child) if child.file_type() == dirent.file_type => {}
            Some(child) => problems.push(problem(
                "directory entries",
                format!(
                    "{at}: says {:?} but inode {} is {:?}",
                    dirent.file_type,
                    dirent.child,
                    child.file_type()
                ),
            )),
            None => problems.push(problem(
                "directory entries",
                format!(
                    "{at}: names inode {}, which {}",
                    dirent.child,
                    missing_or_damaged(&damaged, dirent.child)
                ),
            )),
        }
        *names.entry(dirent.child).or_default() += 1;
        if dirent.file_type == FileType::Directory {
            *subdirectories.entry(position.parent).or_default() += 1;
        }
    }
    let mut inode_numbers: Vec<&u64> = inodes.keys().collect();
    inode_numbers.sort_unstable();
    for &ino in inode_numbers {
        let record = &inodes[&ino];
        let named = names.get(&ino).copied().unwrap_or(0);
        let expected = if record.file_type() == FileType::Directory && record.nlink == 0 {
            // Removed while open, not yet deleted (an orphan): no entry.
            if named != 0 {
                problems.push(problem(
                    "inode tree",
                    format!("directory {ino} has link count 0 but is named by {named} entries"),
                ));
            }
            0
        } else if record.file_type() == FileType::Directory {
            let expected_names = u32::from(ino != ROOT_INO);
            if named != expected_names {
                problems.push(problem(
                    "inode tree",
                    format!(
                        "directory {ino} is named by {named} entries, expected {expected_names}"
                    ),
                ));
            }
            2 + subdirectories.get(&ino).copied().unwrap_or(0)
        } else {
            named
        };
        if record.nlink != expected {
            problems.push(problem(
                "inode tree",
                format!(
                    "inode {ino} has link count {}, but {expected} links exist",
                    record.nlink
                ),
            ));
        }
    }

    let mut physical: Vec<PhysicalUse> = nodes
        .iter()
        .map(|&(tree, level, block)| PhysicalUse {
            start: block,
            blocks: 1,
            owner: PhysicalOwner::Node { tree, level },
        })
        .collect();
    let mut file_ranges: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let main_end = main.end().unwrap_or(u64::MAX);
    for entry in trees.range(TreeId::Extents, &[], None) {
        let (key, value) = entry?;
        counts.extents += 1;
        let (position, extent) = match (ExtentKey::decode(&key), Extent::decode(&value)) {
            (Ok(position), Ok(extent)) => (position, extent),
            (Err(error), _) | (_, Err(error)) => {
                problems.push(problem("extents", format!("key {key:02x?}: {error}")));
                continue;
            }
        };
        let blocks = u64::from(extent.blocks());
        counts.extent_blocks += blocks;
        let at = format!(
            "extent of inode {} at block {}",
            position.ino, position.offset
        );
        match inodes.get(&position.ino).map(InodeRecord::file_type) {
            Some(FileType::Regular | FileType::Symlink) => {}
            Some(other) => problems.push(problem(
                "extents",
                format!("{at}: the inode is a {other:?}"),
            )),
            None => problems.push(problem(
                "extents",
                format!(
                    "{at}: the inode {}",
                    missing_or_damaged(&damaged, position.ino)
                ),
            )),
        }
        if extent.physical < main.start || extent.physical.saturating_add(blocks) > main_end {
            problems.push(problem(
                "extents",
                format!(
                    "{at}: blocks {}+{blocks} lie outside the main region",
                    extent.physical
                ),
            ));
        }
        if let Some((&(ino, start), &length)) = file_ranges
            .range(..=(position.ino, position.offset))
            .next_back()
        {
            if ino == position.ino && start.saturating_add(length) > position.offset {
                problems.push(problem(
                    "extents",
                    format!("{at}: overlaps the extent at block {start} of the same file"),
                ));
            }
        }
        file_ranges.insert((position.ino, position.offset), blocks);
        found_extents.push(FoundExtent {
            ino: position.ino,
            offset: position.offset,
            physical: extent.physical,
            blocks,
        });
        physical.push(PhysicalUse {
            start: extent.physical,
            blocks,
            owner: PhysicalOwner::Extent {
                ino: position.ino,
                offset: position.offset,
            },
        });
    }
    physical.sort_by_key(|run| run.start);
    let mut furthest: Option<PhysicalUse> = None;
    for run in physical {
        if let Some(previous) = furthest {
            if run.start < previous.start.saturating_add(previous.blocks) {
                problems.push(problem(
                    "space",
                    format!(
                        "block {} is used by both the {} and the {}",
                        run.start, previous.owner, run.owner
                    ),
                ));
            }
        }
        if furthest.is_none_or(|previous| {
            run.start.saturating_add(run.blocks) > previous.start.saturating_add(previous.blocks)
        }) {
            furthest = Some(run);
        }
    }
    Ok((counts, found_extents))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::btree::Transaction;
    use crate::device::{MemoryDevice, SectorSize};
    use crate::format::Superblock;
    use crate::fsck::test_inode as inode;
    use crate::inode::inode_key;
    use crate::metadata::Metadata;

    use crate::mkfs::{mkfs, MkfsOptions};

    fn open() -> (Btrees, Superblock) {
        let device = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        let superblock = mkfs(device.as_ref(), &MkfsOptions::default()).unwrap();
        let metadata = Metadata::open_default(device, &superblock).unwrap();
        (metadata.trees, superblock)
    }

    fn link(
        transaction: &mut Transaction<'_>,
        parent: u64,
        name: &[u8],
        child: u64,
        kind: FileType,
    ) {
        let key = DirentKey {
            parent,
            hash: name_hash(name),
            collision: 0,
        };
        put_entry(transaction, key, name, child, kind);
    }

    /// An entry named `name` at `key`, whatever the key says.
    fn put_entry(
        transaction: &mut Transaction<'_>,
        key: DirentKey,
        name: &[u8],
        child: u64,
        kind: FileType,
    ) {
        let dirent = Dirent {
            child,
            file_type: kind,
            name: name.to_vec(),
        };
        transaction
            .put(TreeId::Dirents, &key.encode(), &dirent.encode())
            .unwrap();
    }

    fn extent(
        transaction: &mut Transaction<'_>,
        ino: u64,
        offset: u64,
        physical: u64,
        blocks: usize,
    ) {
        let key = ExtentKey { ino, offset };
        let value = Extent {
            flags: 0,
            physical,
            checksums: vec![0; blocks],
        };
        transaction
            .put(TreeId::Extents, &key.encode(), &value.encode())
            .unwrap();
    }

    /// / holds dir "a" (inode 2) and file "f" (inode 3), which "a/g" also
    /// names; f has two extents.
    fn healthy(trees: &Btrees, free_block: u64) {
        let mut transaction = trees.transaction();
        transaction
            .put(
                TreeId::Inodes,
                &inode_key(ROOT_INO),
                &inode(FileType::Directory, 3),
            )
            .unwrap();
        transaction
            .put(
                TreeId::Inodes,
                &inode_key(2),
                &inode(FileType::Directory, 2),
            )
            .unwrap();
        transaction
            .put(TreeId::Inodes, &inode_key(3), &inode(FileType::Regular, 2))
            .unwrap();
        link(&mut transaction, ROOT_INO, b"a", 2, FileType::Directory);
        link(&mut transaction, ROOT_INO, b"f", 3, FileType::Regular);
        link(&mut transaction, 2, b"g", 3, FileType::Regular);
        extent(&mut transaction, 3, 0, free_block, 4);
        extent(&mut transaction, 3, 4, free_block + 10, 2);
        transaction.commit().unwrap();
    }

    fn run(trees: &Btrees, superblock: &Superblock) -> (Vec<Problem>, NamespaceCounts) {
        let nodes = trees.check().unwrap().nodes;
        let mut problems = Vec::new();
        let (counts, _) = check(trees, superblock.layout.main, &nodes, &mut problems).unwrap();
        (problems, counts)
    }

    fn free_block(superblock: &Superblock) -> u64 {
        superblock.layout.main.end().unwrap() - 100
    }

    #[test]
    fn healthy_namespace_has_no_problems() {
        let (trees, superblock) = open();
        healthy(&trees, free_block(&superblock));
        let (problems, counts) = run(&trees, &superblock);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            counts,
            NamespaceCounts {
                inodes: 3,
                dirents: 3,
                attributes: 0,
                extents: 2,
                extent_blocks: 6
            }
        );
    }

    #[test]
    fn an_empty_inode_tree_is_a_missing_root_not_a_new_filesystem() {
        let (trees, superblock) = open();
        let (problems, _) = run(&trees, &superblock);
        assert!(
            problems.iter().any(|p| p.message.contains("root directory")
                && p.message.contains("the inode tree is empty")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_root_that_is_not_a_directory_is_reported() {
        let (trees, superblock) = open();
        let mut transaction = trees.transaction();
        transaction
            .put(
                TreeId::Inodes,
                &inode_key(ROOT_INO),
                &inode(FileType::Regular, 1),
            )
            .unwrap();
        transaction.commit().unwrap();
        let (problems, _) = run(&trees, &superblock);
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("is a Regular, not a directory")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_live_inode_count_that_differs_from_the_inode_tree_is_reported() {
        let (trees, superblock) = open();
        healthy(&trees, free_block(&superblock));
        let count = |live: u64| {
            let mut transaction = trees.transaction();
            transaction
                .put(TreeId::Meta, LIVE_INODES_KEY, &live.to_le_bytes())
                .unwrap();
            transaction.commit().unwrap();
            run(&trees, &superblock).0
        };
        assert!(count(3).is_empty(), "three inode records, counted three");
        let problems = count(4);
        assert!(
            problems
                .iter()
                .any(|p| p.message == "the filesystem counts 4 inodes, the inode tree holds 3"),
            "{problems:?}"
        );
    }

    #[test]
    fn dangling_entry_and_wrong_link_count_are_reported() {
        let (trees, superblock) = open();
        healthy(&trees, free_block(&superblock));
        let mut transaction = trees.transaction();
        link(&mut transaction, ROOT_INO, b"ghost", 99, FileType::Regular);
        transaction.commit().unwrap();
        let (problems, _) = run(&trees, &superblock);
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("names inode 99, which does not exist")),
            "{messages:?}"
        );
        // inode 99 does not exist, so only the root's count is unaffected;
        // now break f's link count.
        let mut transaction = trees.transaction();
        transaction
            .put(TreeId::Inodes, &inode_key(3), &inode(FileType::Regular, 1))
            .unwrap();
        transaction.commit().unwrap();
        let (problems, _) = run(&trees, &superblock);
        assert!(
            problems
                .iter()
                .any(|p| p.message == "inode 3 has link count 1, but 2 links exist"),
            "{problems:?}"
        );
    }

    #[test]
    fn entry_with_the_wrong_type_or_hash_is_reported() {
        let (trees, superblock) = open();
        healthy(&trees, free_block(&superblock));
        let mut transaction = trees.transaction();
        let key = DirentKey {
            parent: ROOT_INO,
            hash: 12345,
            collision: 0,
        };
        put_entry(&mut transaction, key, b"b", 2, FileType::Regular);
        transaction.commit().unwrap();
        let (problems, _) = run(&trees, &superblock);
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("key hash does not match")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("says Regular but inode 2 is Directory")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("directory 2 is named by 2 entries")),
            "{problems:?}"
        );
    }

    #[test]
    fn what_names_a_damaged_inode_says_it_is_damaged_not_missing() {
        let (trees, superblock) = open();
        healthy(&trees, free_block(&superblock));
        let mut transaction = trees.transaction();
        // File 3 (named twice, with extents): a record that cannot decode.
        transaction
            .put(TreeId::Inodes, &inode_key(3), &[1, 2, 3])
            .unwrap();
        transaction.commit().unwrap();
        let (problems, _) = run(&trees, &superblock);
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.starts_with("inode 3: ")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("names inode 3, which has a damaged record")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("extent of inode 3") && m.contains("has a damaged record")),
            "{messages:?}"
        );
        assert!(
            !messages.iter().any(|m| m.contains("does not exist")),
            "{messages:?}"
        );
    }

    #[test]
    fn a_name_twice_in_one_directory_is_reported() {
        let (trees, superblock) = open();
        healthy(&trees, free_block(&superblock));
        let mut transaction = trees.transaction();
        let key = DirentKey {
            parent: ROOT_INO,
            hash: name_hash(b"a"),
            collision: 1,
        };
        put_entry(&mut transaction, key, b"a", 3, FileType::Regular);
        transaction.commit().unwrap();
        let (problems, _) = run(&trees, &superblock);
        assert!(
            problems.iter().any(|p| p
                .message
                .contains("entry \"a\" in directory 1: the name is there twice")),
            "{problems:?}"
        );
    }

    #[test]
    fn block_used_twice_is_reported_with_both_owners() {
        let (trees, superblock) = open();
        let free = free_block(&superblock);
        healthy(&trees, free);
        let mut transaction = trees.transaction();
        transaction
            .put(TreeId::Inodes, &inode_key(4), &inode(FileType::Regular, 1))
            .unwrap();
        link(&mut transaction, ROOT_INO, b"h", 4, FileType::Regular);
        extent(&mut transaction, 4, 0, free + 2, 1);
        transaction.commit().unwrap();
        let (problems, _) = run(&trees, &superblock);
        assert!(
            problems.iter().any(|p| p.structure == "space"
                && p.message.contains("extent of inode 3 at block 0")
                && p.message.contains("extent of inode 4 at block 0")),
            "{problems:?}"
        );
        // An extent over a b-tree node.
        let node = trees.check().unwrap().nodes[0];
        let mut transaction = trees.transaction();
        extent(&mut transaction, 4, 1, node.2, 1);
        transaction.commit().unwrap();
        let (problems, _) = run(&trees, &superblock);
        assert!(
            problems.iter().any(|p| p.message.contains("b-tree node")),
            "{problems:?}"
        );
    }

    #[test]
    fn extents_of_directories_or_outside_the_region_are_reported() {
        let (trees, superblock) = open();
        healthy(&trees, free_block(&superblock));
        let mut transaction = trees.transaction();
        extent(&mut transaction, 2, 0, free_block(&superblock) + 50, 1);
        extent(
            &mut transaction,
            3,
            100,
            superblock.layout.main.end().unwrap(),
            1,
        );
        transaction.commit().unwrap();
        let (problems, _) = run(&trees, &superblock);
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("the inode is a Directory")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("outside the main region")),
            "{problems:?}"
        );
    }
}
