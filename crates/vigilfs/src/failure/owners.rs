//! Who owns a range of the device: the question an operator asks when a
//! disk reports a bad sector (debugfs's icheck and ncheck, XFS's fsmap),
//! and the first step of handling a failure.
//!
//! The range is cut along the layout: the superblock copies, the journal
//! region, the main region, and what lies between (reserved bytes, nothing
//! there). In the main region the reverse map names every owner of each
//! block — a file's extent (with the file byte range the failed bytes
//! hold, whether that extent is written, whether those blocks are already
//! poisoned, the inode's generation and every path naming it) or a b-tree
//! node (tree, level) — and what no record covers is free. Bad runs are
//! listed as well, whoever owns them. Owners come back in device order,
//! each with the device bytes it holds within the range.

use std::collections::BTreeSet;

use super::{check_range, FailureError};
use crate::btree::TreeId;
use crate::device::ByteRange;
use crate::format::layout::SUPERBLOCK_SIZE;
use crate::format::{Layout, SuperblockCopy};
use crate::inode::{inode_key, paths_of, printable, Extent, ExtentKey, InodeRecord};
use crate::metadata::Metadata;
use crate::rmap::Owner as RmapOwner;

/// What owns some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerKind {
    /// A file's data.
    File {
        /// The inode.
        ino: u64,
        /// Its generation.
        generation: u64,
        /// Byte offset in the file of the first owned byte.
        file_offset: u64,
        /// Every path naming it (empty for an orphan, or when paths were
        /// not asked for or could not be read).
        paths: Vec<String>,
        /// Why its paths could not be found, when they were asked for and
        /// the directory entries could not be read (a damaged entries
        /// tree): no path is then no sign of an unlinked file.
        paths_unreadable: Option<String>,
        /// The extent is unwritten (fallocated): it holds no data yet.
        unwritten: bool,
        /// Some of these blocks are already poisoned (their data lost).
        poisoned: bool,
    },
    /// A b-tree node.
    Node {
        /// The tree.
        tree: TreeId,
        /// Its level (0: a leaf).
        level: u8,
        /// The block.
        block: u64,
    },
    /// The journal region; `live` when entries replay would still need
    /// lie there.
    Journal {
        /// Whether needed entries are there.
        live: bool,
    },
    /// A superblock copy.
    Superblock {
        /// Which one.
        copy: SuperblockCopy,
    },
    /// The event log's region: records of the log's ring (the log keeps
    /// writing its ring there; nothing moves it).
    EventLog,
    /// Free space of the main region.
    Free,
    /// On the bad-block list.
    Bad,
    /// Reserved bytes, or bytes past the regions: nothing of the
    /// filesystem's.
    Unused,
}

impl OwnerKind {
    /// A short name for output (`file`, `node`, `journal`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            OwnerKind::File { .. } => "file",
            OwnerKind::Node { .. } => "node",
            OwnerKind::Journal { .. } => "journal",
            OwnerKind::Superblock { .. } => "superblock",
            OwnerKind::EventLog => "event_log",
            OwnerKind::Free => "free",
            OwnerKind::Bad => "bad",
            OwnerKind::Unused => "unused",
        }
    }
}

/// One owner of some of the bytes asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The device bytes it holds, within the range asked about.
    pub range: ByteRange,
    /// What it is.
    pub kind: OwnerKind,
}

/// Every owner of `range` on the filesystem `metadata` and `layout`
/// describe, on a device of `device_length` bytes; with `paths`, files
/// come with every path naming them (one walk of the directory entries).
pub fn owners(
    metadata: &Metadata,
    layout: &Layout,
    device_length: u64,
    range: ByteRange,
    paths: bool,
) -> Result<Vec<Owner>, FailureError> {
    check_range(range, device_length)?;
    let block_size = u64::from(layout.block_size);
    let mut found: Vec<Owner> = Vec::new();
    let mut covered: Vec<ByteRange> = Vec::new();
    for copy in SuperblockCopy::ALL {
        // Where the filesystem keeps them (a device grown since mkfs does
        // not move them).
        if let Some(offset) = copy.offset(layout.device_length) {
            let bytes = ByteRange::at(offset, SUPERBLOCK_SIZE as u64);
            if let Some(part) = bytes.intersection(&range) {
                found.push(Owner {
                    range: part,
                    kind: OwnerKind::Superblock { copy },
                });
                covered.push(bytes);
            }
        }
    }
    let region_bytes = |start: u64, blocks: u64| {
        ByteRange::new(
            start.saturating_mul(block_size),
            start.saturating_add(blocks).saturating_mul(block_size),
        )
    };
    let journal = region_bytes(layout.journal.start, layout.journal.blocks);
    if let Some(part) = journal.intersection(&range) {
        // Live or not, entry by entry: a range over the whole ring may
        // hold one entry replay needs among many it does not.
        let mut live: Vec<ByteRange> = metadata
            .journal
            .live_entries()
            .iter()
            .filter_map(|(_, entry)| entry.intersection(&part))
            .collect();
        live.sort_by_key(|bytes| bytes.start);
        for bytes in &live {
            found.push(Owner {
                range: *bytes,
                kind: OwnerKind::Journal { live: true },
            });
        }
        for idle in uncovered(part, &live) {
            found.push(Owner {
                range: idle,
                kind: OwnerKind::Journal { live: false },
            });
        }
        covered.push(journal);
    }
    if let Some(log) = metadata.event_log {
        let bytes = region_bytes(log.start, log.blocks);
        if let Some(part) = bytes.intersection(&range) {
            found.push(Owner {
                range: part,
                kind: OwnerKind::EventLog,
            });
            covered.push(bytes);
        }
    }
    let main = region_bytes(layout.main.start, layout.main.blocks);
    if let Some(part) = main.intersection(&range) {
        main_region_owners(metadata, block_size, part, &mut found)?;
        covered.push(main);
    }
    for gap in uncovered(range, &covered) {
        found.push(Owner {
            range: gap,
            kind: OwnerKind::Unused,
        });
    }
    if paths {
        name_owners(metadata, &mut found);
    }
    found.sort_by_key(|owner| (owner.range.start, owner.range.end));
    Ok(found)
}

/// The owners of `part`, bytes of the main region.
///
/// The reverse map is read first, then each file it names: a delete or a
/// rewrite committed in between leaves a record naming an inode or extent
/// that is gone, a race and not damage, so such a reading is done again
/// under the record lock ([`Metadata::read_records`]), where it is one
/// state.
fn main_region_owners(
    metadata: &Metadata,
    block_size: u64,
    part: ByteRange,
    found: &mut Vec<Owner>,
) -> Result<(), FailureError> {
    let owners = metadata.read_records(
        || main_region_pass(metadata, block_size, part),
        |error| matches!(error, FailureError::Corrupt(_)),
    )?;
    found.extend(owners);
    Ok(())
}

/// One reading of the owners of `part` (see [`main_region_owners`]).
fn main_region_pass(
    metadata: &Metadata,
    block_size: u64,
    part: ByteRange,
) -> Result<Vec<Owner>, FailureError> {
    let mut found = Vec::new();
    let first = part.start / block_size;
    let end = part.end.div_ceil(block_size);
    let records = metadata
        .allocator
        .owners(&metadata.trees, first, end - first)?;
    let mut owned: Vec<ByteRange> = Vec::new();
    for record in records {
        let bytes = ByteRange::new(record.start * block_size, record.end() * block_size);
        let Some(hit) = bytes.intersection(&part) else {
            continue;
        };
        owned.push(bytes);
        let kind = match record.owner {
            RmapOwner::Node { tree, level } => OwnerKind::Node {
                tree,
                level,
                block: record.start,
            },
            RmapOwner::FileData {
                ino,
                file_offset_blocks,
            } => {
                let skip = hit.start / block_size - record.start;
                let first_block = file_offset_blocks + skip;
                let blocks = hit.end.div_ceil(block_size) - hit.start / block_size;
                let file = file_owner(metadata, ino, file_offset_blocks)?;
                // One owner per run of lost blocks and per run of readable
                // ones: "data lost" is said of exactly what is lost.
                for (piece_first, piece_end, poisoned) in
                    poison_pieces(metadata, ino, first_block, first_block + blocks)
                {
                    let device = |file_block: u64| {
                        (record.start + file_block - file_offset_blocks) * block_size
                    };
                    let bytes = ByteRange::new(device(piece_first), device(piece_end));
                    let Some(piece) = bytes.intersection(&hit) else {
                        continue;
                    };
                    let mut kind = file.clone().with_offset(
                        (piece.start / block_size - record.start + file_offset_blocks) * block_size
                            + piece.start % block_size,
                    );
                    if let OwnerKind::File { poisoned: lost, .. } = &mut kind {
                        *lost = poisoned;
                    }
                    found.push(Owner { range: piece, kind });
                }
                continue;
            }
        };
        found.push(Owner { range: hit, kind });
    }
    // Bad blocks are listed whoever owns them; unowned ones are not free.
    for run in metadata.allocator.bad_runs() {
        let bytes = ByteRange::new(run.start * block_size, run.end() * block_size);
        if let Some(hit) = bytes.intersection(&part) {
            found.push(Owner {
                range: hit,
                kind: OwnerKind::Bad,
            });
            owned.push(bytes);
        }
    }
    for free in uncovered(part, &owned) {
        found.push(Owner {
            range: free,
            kind: OwnerKind::Free,
        });
    }
    Ok(found)
}

impl OwnerKind {
    fn with_offset(mut self, offset: u64) -> OwnerKind {
        if let OwnerKind::File { file_offset, .. } = &mut self {
            *file_offset = offset;
        }
        self
    }
}

/// File blocks `first..end` of `ino` in runs, each with whether it is
/// poisoned (lost), in order.
fn poison_pieces(metadata: &Metadata, ino: u64, first: u64, end: u64) -> Vec<(u64, u64, bool)> {
    let mut pieces = Vec::new();
    let mut at = first;
    for run in metadata.poison.runs_within(ino, first, end) {
        let (start, stop) = (run.first.max(first), run.end().min(end));
        if start >= stop {
            continue;
        }
        if start > at {
            pieces.push((at, start, false));
        }
        pieces.push((start, stop, true));
        at = stop;
    }
    if at < end {
        pieces.push((at, end, false));
    }
    pieces
}

/// A file owner of the extent of `ino` at `extent_offset` (its offset and
/// whether it is lost are the caller's to set).
fn file_owner(
    metadata: &Metadata,
    ino: u64,
    extent_offset: u64,
) -> Result<OwnerKind, FailureError> {
    let corrupt = |what: String| FailureError::Corrupt(what);
    let generation = match metadata.trees.get(TreeId::Inodes, &inode_key(ino))? {
        Some(value) => {
            InodeRecord::decode(&value)
                .map_err(|error| corrupt(format!("inode {ino}: {error}")))?
                .generation
        }
        None => {
            return Err(corrupt(format!(
                "the reverse map names inode {ino}, which does not exist"
            )))
        }
    };
    let key = ExtentKey {
        ino,
        offset: extent_offset,
    };
    let unwritten = match metadata.trees.get(TreeId::Extents, &key.encode())? {
        Some(value) => {
            Extent::decode(&value)
                .map_err(|error| corrupt(format!("inode {ino} extent: {error}")))?
                .flags
                & Extent::UNWRITTEN
                != 0
        }
        None => {
            return Err(corrupt(format!(
                "the reverse map names an extent of inode {ino} at block {extent_offset} that \
                 does not exist"
            )))
        }
    };
    Ok(OwnerKind::File {
        ino,
        generation,
        file_offset: 0,
        paths: Vec::new(),
        paths_unreadable: None,
        unwritten,
        poisoned: false,
    })
}

/// Fills in the paths of every file owner (one walk of the directory
/// entries for all of them). Entries that cannot be read leave the paths
/// empty and say why (`paths_unreadable`): the owners are still the
/// owners, and a media failure under a damaged entries tree must still be
/// attributed to the files it hit (review 41: scrub named none).
pub fn name_owners(metadata: &Metadata, found: &mut [Owner]) {
    let wanted: BTreeSet<u64> = found
        .iter()
        .filter_map(|owner| match owner.kind {
            OwnerKind::File { ino, .. } => Some(ino),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    let mut named = match paths_of(&metadata.trees, &wanted) {
        Ok(named) => named,
        Err(error) => {
            for owner in found.iter_mut() {
                if let OwnerKind::File {
                    paths_unreadable, ..
                } = &mut owner.kind
                {
                    *paths_unreadable = Some(error.to_string());
                }
            }
            return;
        }
    };
    // The walk reads the entries in batches: a rename between two of them
    // can move a name from where the walk has not been to where it has
    // been. A file with fewer names found than links is looked for again,
    // so it is never called unlinked, nor one of its names left out, for
    // that. (A walk again that fails keeps what the first found.)
    for _ in 0..NAMING_RETRIES {
        let missing: BTreeSet<u64> = wanted
            .iter()
            .copied()
            .filter(|ino| named.get(ino).map_or(0, Vec::len) < link_count(metadata, *ino))
            .collect();
        if missing.is_empty() {
            break;
        }
        match paths_of(&metadata.trees, &missing) {
            Ok(more) => named.extend(more),
            Err(_) => break,
        }
    }
    for owner in found {
        if let OwnerKind::File { ino, paths, .. } = &mut owner.kind {
            *paths = named
                .get(ino)
                .into_iter()
                .flatten()
                .map(|path| printable(path))
                .collect();
        }
    }
}

/// How a file is named in a report: its paths; else why they could not
/// be read; else it has none (an orphan: unlinked, still open).
pub fn file_names(paths: &[String], paths_unreadable: Option<&str>) -> String {
    match paths_unreadable {
        _ if !paths.is_empty() => paths.join(", "),
        Some(why) => format!("a file whose names cannot be read ({why})"),
        None => "an unlinked file".to_owned(),
    }
}

/// Walks of the entries made again for files a walk found no name of.
const NAMING_RETRIES: usize = 3;

/// The links of `ino` (an unreadable record counts as one: the file is
/// looked for again, never called unlinked on a guess).
fn link_count(metadata: &Metadata, ino: u64) -> usize {
    match metadata.trees.get(TreeId::Inodes, &inode_key(ino)) {
        Ok(Some(value)) => InodeRecord::decode(&value).map_or(1, |record| record.nlink as usize),
        Ok(None) => 0,
        Err(_) => 1,
    }
}

/// The parts of `range` none of `covered` overlaps, in order.
pub(super) fn uncovered(range: ByteRange, covered: &[ByteRange]) -> Vec<ByteRange> {
    let mut pieces: Vec<ByteRange> = covered
        .iter()
        .filter_map(|bytes| bytes.intersection(&range))
        .collect();
    pieces.sort();
    let mut gaps = Vec::new();
    let mut at = range.start;
    for piece in pieces {
        if piece.start > at {
            gaps.push(ByteRange::new(at, piece.start));
        }
        at = at.max(piece.end);
    }
    if at < range.end {
        gaps.push(ByteRange::new(at, range.end));
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_finds_every_gap_in_order() {
        let range = ByteRange::new(0, 100);
        let covered = [
            ByteRange::new(60, 70),
            ByteRange::new(10, 20),
            ByteRange::new(15, 30),
        ];
        assert_eq!(
            uncovered(range, &covered),
            vec![
                ByteRange::new(0, 10),
                ByteRange::new(30, 60),
                ByteRange::new(70, 100)
            ]
        );
        assert!(uncovered(range, &[ByteRange::new(0, 200)]).is_empty());
    }
}
