//! A file's block map: its extents in the b-trees, read, verified and
//! changed.
//!
//! An extent maps a run of file blocks to device blocks, with one crc32c
//! per block ([`Extent`]); an unwritten one (fallocated) reads as zeros.
//! [`ExtentMap`] reads a file's extents, reads file blocks through them
//! (every block verified against its checksum: a mismatch or a device
//! error is an error, never wrong data) and changes them in one
//! transaction with the rmap records that mirror them. The free functions
//! are the arithmetic on an in-memory map of extents (file block offset to
//! extent) that truncate, punch, fallocate and writeback compute with
//! before committing.
//!
//! Invariants, checked by fsck: a file's extents never overlap, each is at
//! most [`MAX_EXTENT_BLOCKS`] blocks, and every extent has exactly one rmap
//! record with the same start, length and file offset, changed in the same
//! transaction ([`ExtentMap::commit_change`] is the only place that changes
//! either, and with them the poison of the blocks they stop mapping: see
//! [`crate::poison`]). Splitting or trimming an extent keeps its flag on
//! every piece, and an unwritten extent's blocks are never read. A
//! poisoned block is never read either: it fails with
//! [`FileError::Poisoned`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::file_error::{device_errno, FileError, FileResult};
use super::record::{inode_key, Extent, ExtentKey, InodeRecord, MAX_EXTENT_BLOCKS};
use super::recovered_reads::{RecoveredRead, RecoveredReads};
use crate::alloc::Extent as BlockRun;
use crate::btree::TreeId;
use crate::device::{with_data_owner, BlockDevice, IoClass};
use crate::journal::DataClaim;
use crate::lost_data;
use crate::metadata::Metadata;
use crate::pagecache::{PAGE, PAGE_BYTES};
use crate::poison;
use crate::rmap::{self, Owner, RmapRecord};

/// Most pages one writeback transaction carries, and most file blocks one
/// fallocate, punch or truncate transaction covers: each page or block can
/// add or remove an extent and its rmap record (and, for writeback, a
/// data claim of up to 24 bytes), so this bounds a transaction's records
/// (a few thousand, tens of KiB) below what one journal entry holds,
/// however fragmented the file.
pub(crate) const PAGES_PER_TRANSACTION: usize = 512;

/// Which space an extent change may use (see the allocator's tiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// What ordinary metadata changes may use (fallocate).
    Ordinary,
    /// The reserve as well: changes that free space (truncate, punch) and the
    /// writeback of data that was promised its blocks.
    Reserve,
}

/// The extents of every file on one filesystem: the b-trees they are kept
/// in and the device their blocks are on. Cheap to clone; clones share
/// the counts of mapped blocks.
#[derive(Clone)]
pub(crate) struct ExtentMap {
    device: Arc<dyn BlockDevice>,
    metadata: Arc<Metadata>,
    mapped: Arc<Mutex<MappedBlocks>>,
    /// Reads that failed whole and then read block by block.
    recovered: Arc<RecoveredReads>,
}

/// How many blocks each file's extents map, counted once and kept until
/// they change: `stat` needs it after every write (`st_blocks`), and
/// counting walks all of a file's extents (6 ms a `stat` for a file
/// fragmented by rewrites made PostgreSQL's bulk loads 13 times slower
/// than on ext4: review 27). A count is kept only if no change of the
/// file's extents (and no clearing of the table) came while it was made.
///
/// Each file's entry carries the generation of its extents: the table's
/// generation when the entry was made or the file's extents last changed.
/// Generations only grow (a clearing moves it too), so two equal
/// generations of a file mean nothing changed its extents in between.
#[derive(Default)]
struct MappedBlocks {
    files: HashMap<u64, Counted>,
    /// Moved by every change of a file's extents and every clearing of the
    /// table (it holds at most [`COUNTED_FILES`]).
    generation: u64,
}

#[derive(Clone, Copy, Default)]
struct Counted {
    blocks: Option<u64>,
    /// The file's generation: see [`MappedBlocks`].
    generation: u64,
}

/// Most files whose counts are kept; past it the table starts again.
const COUNTED_FILES: usize = 1 << 16;

/// The blocks a file's extents map, and the generation of its extents
/// they were counted at: the same generation later means the same extents.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MappedCount {
    pub(crate) blocks: u64,
    pub(crate) generation: u64,
}

impl ExtentMap {
    /// The extents kept in `metadata`'s b-trees, their blocks on `device`.
    pub(crate) fn new(device: Arc<dyn BlockDevice>, metadata: Arc<Metadata>) -> ExtentMap {
        ExtentMap {
            device,
            metadata,
            mapped: Arc::default(),
            recovered: Arc::default(),
        }
    }

    fn mapped(&self) -> MutexGuard<'_, MappedBlocks> {
        // Counts and counters of plain numbers: a poisoned lock holds a
        // consistent table.
        self.mapped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The blocks `ino`'s extents map, written and unwritten.
    pub(crate) fn mapped_blocks(&self, ino: u64) -> FileResult<MappedCount> {
        let generation = {
            let mut mapped = self.mapped();
            if mapped.files.len() >= COUNTED_FILES && !mapped.files.contains_key(&ino) {
                mapped.files.clear();
                mapped.generation += 1;
            }
            let generation = mapped.generation;
            let counted = mapped.files.entry(ino).or_insert(Counted {
                blocks: None,
                generation,
            });
            if let Some(blocks) = counted.blocks {
                return Ok(MappedCount {
                    blocks,
                    generation: counted.generation,
                });
            }
            counted.generation
        };
        let start = ExtentKey { ino, offset: 0 }.encode();
        let stop = ExtentKey {
            ino,
            offset: u64::MAX,
        }
        .encode();
        let mut blocks = 0;
        for entry in self
            .metadata
            .trees
            .range(TreeId::Extents, &start, Some(&stop))
        {
            let (_, value) = entry?;
            blocks += u64::from(Extent::decode(&value)?.blocks());
        }
        if let Some(counted) = self
            .mapped()
            .files
            .get_mut(&ino)
            .filter(|counted| counted.generation == generation)
        {
            counted.blocks = Some(blocks);
        }
        Ok(MappedCount { blocks, generation })
    }

    /// `ino`'s extents changed (or may have): its count is made again.
    fn extents_changed(&self, ino: u64) {
        let mut mapped = self.mapped();
        mapped.generation += 1;
        let generation = mapped.generation;
        if let Some(counted) = mapped.files.get_mut(&ino) {
            *counted = Counted {
                blocks: None,
                generation,
            };
        }
    }

    /// The inode record of `ino`.
    pub(crate) fn record(&self, ino: u64) -> FileResult<InodeRecord> {
        let value = self
            .metadata
            .trees
            .get(TreeId::Inodes, &inode_key(ino))?
            .ok_or(FileError::NotFound { ino })?;
        Ok(InodeRecord::decode(&value)?)
    }

    /// One transaction: `ino`'s committed extents `before` (all of them in
    /// the range being changed) become `after`, with the rmap records to
    /// match, `lost` says what becomes of its lost-data records, and
    /// `update` changes the inode record. Returns the seq.
    pub(crate) fn commit_change(
        &self,
        ino: u64,
        before: &BTreeMap<u64, Extent>,
        after: &BTreeMap<u64, Extent>,
        space: Space,
        lost: &lost_data::Settle,
        update: impl FnOnce(&mut InodeRecord),
    ) -> FileResult<Option<u64>> {
        self.commit_written(ino, before, after, &[], space, lost, update)
    }

    /// [`ExtentMap::commit_change`] for writeback: `written` are the extents
    /// whose blocks were just written, and the transaction claims their
    /// data (see the journal's data claims), so the device needs no flush
    /// between those writes and the commit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn commit_written(
        &self,
        ino: u64,
        before: &BTreeMap<u64, Extent>,
        after: &BTreeMap<u64, Extent>,
        written: &[Extent],
        space: Space,
        lost: &lost_data::Settle,
        update: impl FnOnce(&mut InodeRecord),
    ) -> FileResult<Option<u64>> {
        let _records = self.metadata.lock_records();
        // A failure report marks blocks bad under this lock: one that came
        // after these blocks were allocated, before this commit, would
        // otherwise leave the data in blocks it never looks at again.
        for extent in written {
            let run = BlockRun::new(extent.physical, u64::from(extent.blocks()));
            if let Some(block) = self.metadata.allocator.first_bad_in(run) {
                return Err(FileError::WrittenToBadBlock { block });
            }
        }
        let mut transaction = self.metadata.trees.transaction();
        for extent in written {
            transaction.claim_data(DataClaim {
                offset: extent.physical * PAGE,
                block_bytes: PAGE_BYTES as u32,
                checksums: extent.checksums.clone(),
            });
        }
        if space == Space::Reserve {
            transaction.may_use_reserve();
        }
        let mut record = match transaction.get(TreeId::Inodes, &inode_key(ino))? {
            Some(value) => InodeRecord::decode(&value)?,
            None => return Err(FileError::NotFound { ino }),
        };
        let removed = before
            .iter()
            .filter(|(offset, extent)| after.get(offset) != Some(extent));
        for (offset, extent) in removed {
            let key = ExtentKey {
                ino,
                offset: *offset,
            };
            transaction.delete(TreeId::Extents, &key.encode())?;
            rmap::remove(&mut transaction, extent.physical)?;
        }
        let added = after
            .iter()
            .filter(|(offset, extent)| before.get(offset) != Some(extent));
        for (offset, extent) in added {
            let key = ExtentKey {
                ino,
                offset: *offset,
            };
            transaction.put(TreeId::Extents, &key.encode(), &extent.encode())?;
            let reverse = RmapRecord {
                start: extent.physical,
                blocks: u64::from(extent.blocks()),
                owner: Owner::FileData {
                    ino,
                    file_offset_blocks: *offset,
                },
            };
            rmap::insert(&mut transaction, &reverse)?;
        }
        // Poisoned blocks the change maps elsewhere or drops are poisoned
        // no more: their lost data is gone from the file.
        let poison = self.poison_after(ino, before, after);
        poison.stage(&mut transaction)?;
        let lost = self.metadata.lost.settle(ino, lost);
        if let Some(change) = &lost {
            change.stage(&mut transaction)?;
        }
        update(&mut record);
        transaction.put(TreeId::Inodes, &inode_key(ino), &record.encode())?;
        let committed = transaction.commit();
        // After the commit, so that a count made meanwhile is not kept.
        self.extents_changed(ino);
        let seq = committed?;
        self.metadata.poison.apply(&poison);
        if let Some(change) = lost {
            self.metadata.lost.apply(change);
        }
        Ok(seq)
    }

    /// What replacing `before` by `after` does to `ino`'s poisoned blocks:
    /// a block stays poisoned only while it is mapped to the same written
    /// device block (see [`crate::poison`]).
    fn poison_after(
        &self,
        ino: u64,
        before: &BTreeMap<u64, Extent>,
        after: &BTreeMap<u64, Extent>,
    ) -> poison::Reconciled {
        let poisoned = &self.metadata.poison;
        if poisoned.is_empty() {
            return poison::Reconciled::default();
        }
        let touched: Vec<_> = before
            .iter()
            .filter(|(offset, extent)| after.get(offset) != Some(extent))
            .flat_map(|(offset, extent)| {
                poisoned.runs_within(ino, *offset, offset + u64::from(extent.blocks()))
            })
            .collect();
        poison::reconcile(&touched, |block| {
            covering(after, block)
                .filter(|(_, extent)| extent.flags & Extent::UNWRITTEN == 0)
                .map(|(offset, extent)| extent.physical + (block - offset))
        })
    }

    /// File blocks `first..end` of `ino` from its extents, verified, one
    /// device request per extent they cross; with, per block, whether it
    /// is data (a written extent) rather than a hole or unwritten zeros.
    pub(crate) fn read_run(
        &self,
        ino: u64,
        first: u64,
        end: u64,
    ) -> FileResult<(Vec<u8>, Vec<bool>)> {
        let extents = self.overlapping(ino, first, end)?;
        let mut bytes = Vec::with_capacity(((end - first) * PAGE) as usize);
        let mut data = Vec::with_capacity((end - first) as usize);
        let mut at = first;
        while at < end {
            let (piece_end, written) = match covering(&extents, at) {
                Some((offset, extent)) => (
                    (offset + u64::from(extent.blocks())).min(end),
                    extent.flags & Extent::UNWRITTEN == 0,
                ),
                None => (
                    extents
                        .range(at..)
                        .next()
                        .map_or(end, |(offset, _)| (*offset).min(end)),
                    false,
                ),
            };
            bytes.extend_from_slice(&self.read_blocks(ino, at, piece_end, &extents)?);
            data.extend(std::iter::repeat_n(written, (piece_end - at) as usize));
            at = piece_end;
        }
        Ok((bytes, data))
    }

    /// The committed extents of `ino` with at least one block in
    /// `first..end` (file blocks), by file offset. A file's extents do
    /// not overlap, so of those starting before `first` only the last can
    /// reach into the range: one floor lookup finds it, and a fragmented
    /// file (one extent per block after random overwrites) does not make
    /// every lookup scan the up to `MAX_EXTENT_BLOCKS` extents before it.
    pub(crate) fn overlapping(
        &self,
        ino: u64,
        first: u64,
        end: u64,
    ) -> FileResult<BTreeMap<u64, Extent>> {
        let trees = &self.metadata.trees;
        let mut found = BTreeMap::new();
        let at_first = ExtentKey { ino, offset: first }.encode();
        if let Some((key, value)) = trees.last_at_or_before(TreeId::Extents, &at_first)? {
            let key = ExtentKey::decode(&key)?;
            let extent = Extent::decode(&value)?;
            if key.ino == ino && key.offset + u64::from(extent.blocks()) > first {
                found.insert(key.offset, extent);
            }
        }
        let Some(after_first) = first.checked_add(1).filter(|&next| next < end) else {
            return Ok(found);
        };
        let start = ExtentKey {
            ino,
            offset: after_first,
        }
        .encode();
        let stop = ExtentKey { ino, offset: end }.encode();
        for entry in trees.range(TreeId::Extents, &start, Some(&stop)) {
            let (key, value) = entry?;
            let key = ExtentKey::decode(&key)?;
            found.insert(key.offset, Extent::decode(&value)?);
        }
        Ok(found)
    }

    /// The device block preallocated for file block `index` in `extents`
    /// (the file's extents around it): the block of the unwritten extent
    /// holding it, unless that block is known bad. The block's data can
    /// be written in place: no committed state reads an unwritten block,
    /// and the transaction that names it written comes after the write.
    pub(crate) fn preallocated_block(
        &self,
        extents: &BTreeMap<u64, Extent>,
        index: u64,
    ) -> Option<u64> {
        covering(extents, index)
            .filter(|(_, extent)| extent.flags & Extent::UNWRITTEN != 0)
            .map(|(offset, extent)| extent.physical + (index - offset))
            .filter(|&block| self.metadata.allocator.bad_run_containing(block).is_none())
    }

    /// Whether file block `index` is written data in `extents` (the
    /// overlapping ones), on a block that is not bad: a write over it is a
    /// rewrite, whose writeback frees that block.
    pub(crate) fn rewrites_block(&self, extents: &BTreeMap<u64, Extent>, index: u64) -> bool {
        covering(extents, index)
            .filter(|(_, extent)| extent.flags & Extent::UNWRITTEN == 0)
            .map(|(offset, extent)| extent.physical + (index - offset))
            .is_some_and(|block| self.metadata.allocator.bad_run_containing(block).is_none())
    }

    /// File block `index` of `ino` from the device (zeros for a hole).
    pub(crate) fn read_block(&self, ino: u64, index: u64) -> FileResult<Vec<u8>> {
        let extents = self.overlapping(ino, index, index + 1)?;
        self.read_blocks(ino, index, index + 1, &extents)
    }

    /// File block `index` of `ino` from the device, verified, even when it
    /// is poisoned: what a rescue tries before giving its data up.
    pub(crate) fn read_block_despite_poison(&self, ino: u64, index: u64) -> FileResult<Vec<u8>> {
        let extents = self.overlapping(ino, index, index + 1)?;
        self.read_verified(ino, index, index + 1, &extents, false)
    }

    /// File blocks `first..end` of `ino` through `extents`, verified. They
    /// lie in one extent (or one hole): one device request. A poisoned
    /// block fails the read without touching the device.
    pub(crate) fn read_blocks(
        &self,
        ino: u64,
        first: u64,
        end: u64,
        extents: &BTreeMap<u64, Extent>,
    ) -> FileResult<Vec<u8>> {
        self.read_verified(ino, first, end, extents, true)
    }

    fn read_verified(
        &self,
        ino: u64,
        first: u64,
        end: u64,
        extents: &BTreeMap<u64, Extent>,
        honour_poison: bool,
    ) -> FileResult<Vec<u8>> {
        let mut bytes = vec![0; ((end - first) * PAGE) as usize];
        let Some((offset, extent)) = covering(extents, first) else {
            return Ok(bytes);
        };
        if extent.flags & Extent::UNWRITTEN != 0 {
            return Ok(bytes);
        }
        let within = (first - offset) as usize;
        let physical = extent.physical + within as u64;
        if honour_poison {
            if let Some((block, run)) = self.metadata.poison.first_poisoned(ino, first, end) {
                return Err(FileError::Poisoned {
                    ino,
                    block,
                    physical: run.physical_of(block),
                });
            }
        }
        let read_at = |physical: u64, bytes: &mut [u8]| {
            with_data_owner(ino, || {
                self.device.read_at(physical * PAGE, bytes, IoClass::Data)
            })
        };
        if let Err(source) = read_at(physical, &mut bytes) {
            if end - first == 1 {
                return Err(FileError::Read {
                    ino,
                    block: first,
                    physical,
                    source,
                });
            }
            // Which block failed: the error names it, not the first block
            // of the request (and a block that reads now is data).
            for (at, page) in bytes.chunks_mut(PAGE_BYTES).enumerate() {
                let at = at as u64;
                read_at(physical + at, page).map_err(|source| FileError::Read {
                    ino,
                    block: first + at,
                    physical: physical + at,
                    source,
                })?;
            }
            self.recovered.note(RecoveredRead {
                ino,
                first,
                blocks: end - first,
                physical,
                errno: device_errno(&source),
            });
        }
        for (at, page) in bytes.chunks(PAGE_BYTES).enumerate() {
            if crc32c::crc32c(page) != extent.checksums[within + at] {
                return Err(FileError::Checksum {
                    ino,
                    block: first + at as u64,
                    physical: physical + at as u64,
                });
            }
        }
        Ok(bytes)
    }

    /// The reads that failed and then read block by block since the last
    /// take, and how many more there were (see `recovered_reads.rs`).
    pub(crate) fn take_recovered_reads(&self) -> (Vec<RecoveredRead>, u64) {
        self.recovered.take()
    }
}

/// The extent of `extents` holding file block `index`, with its offset.
pub(crate) fn covering(extents: &BTreeMap<u64, Extent>, index: u64) -> Option<(u64, &Extent)> {
    extents
        .range(..=index)
        .next_back()
        .filter(|(offset, extent)| **offset + u64::from(extent.blocks()) > index)
        .map(|(offset, extent)| (*offset, extent))
}

/// The file blocks of `first..end` no extent of `extents` covers, as
/// `(start, end)` runs in order.
pub(crate) fn holes_between(
    extents: &BTreeMap<u64, Extent>,
    first: u64,
    end: u64,
) -> Vec<(u64, u64)> {
    let mut holes = Vec::new();
    let mut at = first;
    for (offset, extent) in extents {
        if *offset > at {
            holes.push((at, (*offset).min(end)));
        }
        at = at.max(offset + u64::from(extent.blocks()));
        if at >= end {
            break;
        }
    }
    if at < end {
        holes.push((at, end));
    }
    holes.retain(|(start, stop)| start < stop);
    holes
}

/// Unwritten extents mapping the `holes` (file block runs) onto the
/// allocated `runs`, block by block in order, as long as both stay
/// contiguous and the extent within [`MAX_EXTENT_BLOCKS`]. Their checksums
/// are placeholders: an unwritten extent's are never checked.
pub(crate) fn unwritten_extents(holes: &[(u64, u64)], runs: &[BlockRun]) -> BTreeMap<u64, Extent> {
    let file_blocks = holes.iter().flat_map(|&(start, stop)| start..stop);
    let physical = runs.iter().flat_map(|run| run.start..run.end());
    let mut extents: BTreeMap<u64, Extent> = BTreeMap::new();
    let mut last: Option<u64> = None;
    for (index, block) in file_blocks.zip(physical) {
        if let Some(extent) = last.and_then(|offset| {
            extents.get_mut(&offset).filter(|extent| {
                let blocks = u64::from(extent.blocks());
                offset + blocks == index
                    && extent.physical + blocks == block
                    && extent.blocks() < MAX_EXTENT_BLOCKS
            })
        }) {
            extent.checksums.push(0);
            continue;
        }
        extents.insert(
            index,
            Extent {
                flags: Extent::UNWRITTEN,
                physical: block,
                checksums: vec![0],
            },
        );
        last = Some(index);
    }
    extents
}

/// Removes file blocks `start..end` from `extents`, keeping the parts
/// outside, and collects the physical blocks removed.
pub(crate) fn punch(
    extents: &mut BTreeMap<u64, Extent>,
    start: u64,
    end: u64,
    freed: &mut Vec<BlockRun>,
) {
    let hit: Vec<u64> = extents
        .range(..end)
        .filter(|(offset, extent)| **offset + u64::from(extent.blocks()) > start)
        .map(|(offset, _)| *offset)
        .collect();
    for offset in hit {
        let extent = extents.remove(&offset).expect("key listed above");
        let blocks = u64::from(extent.blocks());
        let cut_from = start.max(offset) - offset;
        let cut_to = end.min(offset + blocks) - offset;
        freed.push(BlockRun::new(extent.physical + cut_from, cut_to - cut_from));
        if cut_from > 0 {
            extents.insert(
                offset,
                Extent {
                    flags: extent.flags,
                    physical: extent.physical,
                    checksums: extent.checksums[..cut_from as usize].to_vec(),
                },
            );
        }
        if cut_to < blocks {
            extents.insert(
                offset + cut_to,
                Extent {
                    flags: extent.flags,
                    physical: extent.physical + cut_to,
                    checksums: extent.checksums[cut_to as usize..].to_vec(),
                },
            );
        }
    }
}
