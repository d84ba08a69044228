//! fsck's space checks: the reverse map against what really uses blocks,
//! both ways, and free-space accounting.
//!
//! What must hold (and is reported when it does not):
//!
//! * every extent has exactly the reverse-map record naming it (same
//!   blocks, same inode and file offset), and every b-tree node block
//!   outside the rmap tree has its `(tree, level)` record;
//! * every record names an extent or node that really owns those blocks
//!   (a record without an owner would leak the space forever, or worse,
//!   attribute a media failure to the wrong file);
//! * the rmap tree's own nodes, which have no records by design, are
//!   exactly the set the allocator rebuilt at open;
//! * free, used, freed-but-pending and bad-but-unowned blocks make up the
//!   main region exactly.

use std::collections::BTreeSet;

use super::namespace::FoundExtent;
use super::Problem;
use crate::alloc::Allocator;
use crate::btree::{Btrees, TreeId};
use crate::format::Region;
use crate::rmap::{self, Owner, RmapRecord};

/// What the reverse map holds, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceCounts {
    /// Reverse-map records.
    pub records: u64,
    /// Blocks they cover plus the rmap tree's own nodes.
    pub used_blocks: u64,
    /// Blocks free when the trees were opened.
    pub free_blocks: u64,
    /// Blocks freed by recovery itself, not yet reusable (their journal
    /// entry is not durable in the dry run).
    pub pending_blocks: u64,
    /// Blocks in the main region.
    pub region_blocks: u64,
}

fn problem(message: String) -> Problem {
    Problem {
        structure: "reverse map".into(),
        message,
    }
}

fn describe(record: &RmapRecord) -> String {
    match record.owner {
        Owner::FileData {
            ino,
            file_offset_blocks,
        } => format!(
            "blocks {}+{} for inode {ino} at block {file_offset_blocks}",
            record.start, record.blocks
        ),
        Owner::Node { tree, level } => {
            format!(
                "block {} for a {tree} b-tree node (level {level})",
                record.start
            )
        }
    }
}

pub(crate) fn check(
    trees: &Btrees,
    allocator: &Allocator,
    main: Region,
    nodes: &[(TreeId, u8, u64)],
    extents: &[FoundExtent],
    problems: &mut Vec<Problem>,
) -> SpaceCounts {
    let status = allocator.status();
    let mut counts = SpaceCounts {
        region_blocks: main.blocks,
        free_blocks: status.free_blocks,
        pending_blocks: status.pending_blocks,
        ..SpaceCounts::default()
    };
    let records = match rmap::records(trees) {
        Ok(records) => records,
        Err(error) => {
            problems.push(problem(format!("cannot read the reverse map: {error}")));
            return counts;
        }
    };
    counts.records = records.len() as u64;

    let expected: BTreeSet<RmapRecord> = extents
        .iter()
        .map(|extent| RmapRecord {
            start: extent.physical,
            blocks: extent.blocks,
            owner: Owner::FileData {
                ino: extent.ino,
                file_offset_blocks: extent.offset,
            },
        })
        .chain(
            nodes
                .iter()
                .filter(|(tree, _, _)| *tree != TreeId::Rmap)
                .map(|&(tree, level, block)| RmapRecord {
                    start: block,
                    blocks: 1,
                    owner: Owner::Node { tree, level },
                }),
        )
        .collect();
    let found: BTreeSet<RmapRecord> = records.iter().copied().collect();
    for missing in expected.difference(&found) {
        problems.push(problem(format!("no record for {}", describe(missing))));
    }
    for stray in found.difference(&expected) {
        problems.push(problem(format!(
            "record for {} names an owner that does not hold them",
            describe(stray)
        )));
    }

    let walked: BTreeSet<(u8, u64)> = nodes
        .iter()
        .filter(|(tree, _, _)| *tree == TreeId::Rmap)
        .map(|&(_, level, block)| (level, block))
        .collect();
    let known: BTreeSet<(u8, u64)> = allocator.rmap_nodes().nodes().into_iter().collect();
    for (level, block) in walked.symmetric_difference(&known) {
        problems.push(problem(format!(
            "rmap b-tree node at block {block} (level {level}) is not where the tree walk and \
             the allocator agree"
        )));
    }

    counts.used_blocks =
        records.iter().map(|record| record.blocks).sum::<u64>() + known.len() as u64;
    // Bad blocks nobody owns are neither free nor pending nor used.
    let dropped = status.dropped_bad_blocks;
    if counts.used_blocks + counts.free_blocks + counts.pending_blocks + dropped != main.blocks {
        problems.push(Problem {
            structure: "free space".into(),
            message: format!(
                "{} used + {} free + {} freed-pending + {dropped} bad unowned blocks, but the \
                 main region has {}",
                counts.used_blocks, counts.free_blocks, counts.pending_blocks, main.blocks
            ),
        });
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::btree::TreeId;
    use crate::device::{MemoryDevice, SectorSize};
    use crate::fsck::{fsck, test_inode as inode, Problem};
    use crate::inode::{
        inode_key, name_hash, Dirent, DirentKey, Extent, ExtentKey, FileType, ROOT_INO,
    };
    use crate::metadata::Metadata;

    use crate::mkfs::{mkfs, MkfsOptions};
    use crate::rmap::{self, Owner, RmapRecord};

    /// A filesystem holding `/file` with one 4-block extent, mapped the way
    /// the file layer will: data allocated, extent and rmap record in one
    /// transaction. `tamper` may change the transaction before it commits.
    fn filesystem(
        tamper: impl FnOnce(&mut crate::btree::Transaction<'_>, u64),
    ) -> Arc<MemoryDevice> {
        let device = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        let superblock = mkfs(device.as_ref(), &MkfsOptions::default()).unwrap();
        let Metadata {
            allocator, trees, ..
        } = Metadata::open_default(device.clone(), &superblock).unwrap();
        let data = allocator.allocate_data(4, 0).unwrap();
        assert_eq!(data.len(), 1);
        let physical = data[0].start;
        let mut transaction = trees.transaction();
        transaction
            .put(
                TreeId::Inodes,
                &inode_key(ROOT_INO),
                &inode(FileType::Directory, 2),
            )
            .unwrap();
        transaction
            .put(TreeId::Inodes, &inode_key(2), &inode(FileType::Regular, 1))
            .unwrap();
        let key = DirentKey {
            parent: ROOT_INO,
            hash: name_hash(b"file"),
            collision: 0,
        };
        let dirent = Dirent {
            child: 2,
            file_type: FileType::Regular,
            name: b"file".to_vec(),
        };
        transaction
            .put(TreeId::Dirents, &key.encode(), &dirent.encode())
            .unwrap();
        let extent = Extent {
            flags: 0,
            physical,
            checksums: vec![0; 4],
        };
        transaction
            .put(
                TreeId::Extents,
                &ExtentKey { ino: 2, offset: 0 }.encode(),
                &extent.encode(),
            )
            .unwrap();
        rmap::insert(
            &mut transaction,
            &RmapRecord {
                start: physical,
                blocks: 4,
                owner: Owner::FileData {
                    ino: 2,
                    file_offset_blocks: 0,
                },
            },
        )
        .unwrap();
        tamper(&mut transaction, physical);
        transaction.commit_durable().unwrap();
        trees.sync().unwrap();
        device
    }

    fn problems(device: Arc<MemoryDevice>) -> Vec<Problem> {
        fsck(device, &mut |_| {}).unwrap().problems
    }

    #[test]
    fn mapped_file_is_clean_and_accounted() {
        let device = filesystem(|_, _| {});
        let report = fsck(device, &mut |_| {}).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        let space = report.space.unwrap();
        assert_eq!(
            space.used_blocks + space.free_blocks + space.pending_blocks,
            space.region_blocks
        );
        assert!(
            space.records >= 6,
            "5 tree roots + 1 extent, got {}",
            space.records
        );
    }

    #[test]
    fn extent_without_its_record_is_reported() {
        let found = problems(filesystem(|transaction, physical| {
            rmap::remove(transaction, physical).unwrap();
        }));
        assert!(
            found
                .iter()
                .any(|p| p.message.starts_with("no record for blocks")
                    && p.message.contains("for inode 2")),
            "{found:?}"
        );
    }

    #[test]
    fn record_without_an_owner_is_reported() {
        let found = problems(filesystem(|transaction, physical| {
            transaction
                .delete(TreeId::Extents, &ExtentKey { ino: 2, offset: 0 }.encode())
                .unwrap();
            let _ = physical;
        }));
        assert!(
            found
                .iter()
                .any(|p| p.message.contains("names an owner that does not hold them")),
            "{found:?}"
        );
    }
}
