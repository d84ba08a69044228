//! Handling one failure: the owners of the failed range, and what is done
//! for each (see the module comment of [`crate::failure`]).
//!
//! Order matters. The failed blocks of the main region are marked bad in
//! memory first (for a device's report; a checksum report is verified
//! owner by owner instead), under the record lock and before the owners
//! are listed: no allocation hands one out while the rest runs, and a
//! writeback that wrote to one before the mark either committed first (it
//! is listed) or finds it bad at its commit and writes elsewhere. They are
//! recorded on the persistent list last. File data is poisoned — recorded,
//! under the record lock, only for blocks its extent still maps to the
//! failed block — before anything is rescued, so a rescue that fails
//! half-way leaves the unrescued part poisoned, never readable as wrong
//! bytes; the rescue's own writeback transaction clears what it saved.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::owners::{owners, uncovered, Owner, OwnerKind};
use super::{check_range, seconds_now, FailureError, Origin};
use crate::alloc::{bad_blocks, BadRun, Extent as BlockRun, FailureCause};
use crate::btree::{Relocation, TreeId};
use crate::device::{BlockDevice, ByteRange, IoClass};
use crate::format::{read_superblock_copy, Layout};
use crate::inode::{Extent, ExtentKey, Files, MAX_EXTENT_BLOCKS};
use crate::metadata::Metadata;
use crate::poison::{self, PoisonRun};

/// What handling needs of the filesystem.
pub struct Context<'a> {
    /// Its metadata.
    pub metadata: &'a Arc<Metadata>,
    /// Its data path (rescues go through the page cache and writeback).
    pub files: &'a Files,
    /// The device (verifying a checksum report reads it).
    pub device: &'a dyn BlockDevice,
    /// Its layout.
    pub layout: Layout,
    /// Whether records may be written and data moved: false on a
    /// read-only or shut-down filesystem, where what is lost is still
    /// poisoned and marked bad, in memory only.
    pub writable: bool,
    /// Whether, not writable now, it may be made writable (read-only by
    /// its options or its transport's `remount,ro`, not by an error or a
    /// shutdown): what only a write can save is held for then, not lost.
    pub writable_later: bool,
}

/// What became of one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything it held was saved to new blocks: file data from a
    /// surviving copy, a node from its cached copy, journal entries made
    /// unneeded.
    Healed {
        /// Blocks saved.
        blocks: u64,
    },
    /// What it held is lost: file blocks now poisoned (reads fail until
    /// rewritten), or metadata for the `errors=` policy.
    Lost {
        /// Blocks lost.
        blocks: u64,
        /// Why nothing could save them.
        why: String,
    },
    /// File data partly saved, partly lost.
    Partly {
        /// Blocks saved.
        healed: u64,
        /// Blocks lost (poisoned).
        lost: u64,
    },
    /// Nothing lived there (free space, an unwritten extent): the blocks
    /// were put on the bad-block list.
    MarkedBad,
    /// Nothing of the filesystem's lives there (reserved bytes): nothing
    /// to do.
    Unused,
    /// What lives there cannot move and stays on the failed blocks: a ring
    /// written round and round (journal blocks no entry needs now, the
    /// event log's region). Reported, nothing counted lost.
    Unmovable {
        /// Blocks.
        blocks: u64,
        /// What it means.
        why: String,
    },
    /// A superblock copy: the caller rewrites every copy.
    RewriteSuperblock,
    /// Known already (poisoned, or listed bad, by an earlier report).
    AlreadyKnown,
    /// A checksum report that re-reading did not confirm (the block was
    /// rewritten meanwhile, or reads back intact), or any report of data
    /// that reads back intact on a filesystem that may not write: nothing
    /// lost (a block the device reported is still marked bad).
    NotConfirmed,
}

/// One owner and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The owner, with the device bytes it held.
    pub owner: Owner,
    /// What was done.
    pub outcome: Outcome,
}

/// What [`handle`] did.
#[derive(Debug)]
pub struct Handling {
    /// Every owner, and what became of it.
    pub handled: Vec<Handled>,
    /// Why the failure's records (the bad-block list, poisoned file data)
    /// could not be written, if they could not (no room left for their
    /// b-tree nodes, say): what they say holds in memory, for this mount
    /// only.
    pub unrecorded: Option<FailureError>,
    /// Why an owner could not be handled, if one could not (its extents
    /// could not be read, say): it is reported lost, and the error is the
    /// metadata failure the caller acts on.
    pub unhandled: Option<FailureError>,
    /// What a filesystem that may not write marked in memory only: for
    /// [`record_held`] once it may (a read-only mount made writable).
    pub held: HeldMarks,
}

/// Marks a filesystem that may not write keeps in memory only.
#[derive(Debug, Default)]
pub struct HeldMarks {
    /// Runs marked bad, each with the cause of its failure.
    pub bad: Vec<(BlockRun, FailureCause)>,
    /// File data poisoned.
    pub poison: Vec<PoisonRun>,
    /// Journal blocks holding entries replay still needs, each with the
    /// cause of its failure: reclaimed off them once it may write.
    pub journal: Vec<(ByteRange, FailureCause)>,
}

impl HeldMarks {
    /// Adds `other`'s marks to these.
    pub fn extend(&mut self, other: HeldMarks) {
        self.bad.extend(other.bad);
        self.poison.extend(other.poison);
        self.journal.extend(other.journal);
    }

    /// Whether there is nothing held.
    pub fn is_empty(&self) -> bool {
        self.bad.is_empty() && self.poison.is_empty() && self.journal.is_empty()
    }
}

/// Records `held` on the persistent lists, now that the filesystem may
/// write: each bad run as the allocator holds it now (merged with its
/// neighbours), each poisoned run still poisoned (rewritten data took the
/// poison away). Returns the runs recorded.
pub fn record_held(metadata: &Metadata, held: &HeldMarks) -> Result<usize, FailureError> {
    let since = seconds_now();
    let mut bad: BTreeMap<u64, BadRun> = BTreeMap::new();
    for &(run, cause) in &held.bad {
        if let Some(whole) = metadata.allocator.bad_run_containing(run.start) {
            bad.insert(
                whole.start,
                BadRun {
                    start: whole.start,
                    blocks: whole.blocks,
                    since,
                    cause,
                },
            );
        }
    }
    let poisoned: Vec<PoisonRun> = held
        .poison
        .iter()
        .filter(|run| {
            metadata
                .poison
                .runs_within(run.ino, run.first, run.first + 1)
                .contains(run)
        })
        .copied()
        .collect();
    let bad: Vec<BadRun> = bad.into_values().collect();
    for chunk in bad.chunks(256) {
        let mut transaction = metadata.trees.transaction();
        transaction.may_use_reserve();
        for run in chunk {
            bad_blocks::record(&mut transaction, run)?;
        }
        transaction.commit()?;
    }
    for chunk in poisoned.chunks(256) {
        record_poison(metadata, chunk)?;
    }
    Ok(bad.len() + poisoned.len())
}

/// Handles the failure of `range` reported by `origin` (see the module
/// comment). Callers serialise: one failure at a time.
pub fn handle(
    context: &Context<'_>,
    range: ByteRange,
    origin: &Origin,
) -> Result<Handling, FailureError> {
    let metadata = context.metadata;
    let device_length = context.device.length();
    check_range(range, device_length)?;
    let block_size = u64::from(context.layout.block_size);
    let checksum = origin.cause == FailureCause::Checksum;
    let to_blocks = |bytes: ByteRange| {
        let blocks = ByteRange::new(bytes.start / block_size, bytes.end.div_ceil(block_size));
        BlockRun::new(blocks.start, blocks.len())
    };
    // What was bad before this notice: what it marks is told from it.
    let bad_before: Vec<BlockRun> = metadata.allocator.bad_runs();
    let known_bad = |run: BlockRun| {
        bad_before
            .iter()
            .any(|bad| bad.start <= run.start && bad.end() >= run.end())
    };
    let mut marked = None;
    if !checksum {
        // The device said these blocks failed: every one of the main
        // region goes bad whatever its owner's outcome, before the owners
        // are listed. A rescue below (a moved node, rescued file data)
        // cannot be given one, and under the record lock a writeback's
        // commit either came first (its blocks are listed as the file's)
        // or sees them bad and writes its pages elsewhere.
        let main = context.layout.main;
        let main_bytes = ByteRange::new(
            main.start * block_size,
            (main.start + main.blocks) * block_size,
        );
        if let Some(part) = range.intersection(&main_bytes) {
            let run = to_blocks(part);
            let _records = metadata.lock_records();
            if metadata.allocator.mark_bad(run).is_ok() {
                marked = Some(run);
            }
        }
    }
    let found = owners(metadata, &context.layout, device_length, range, false)?;
    // Bytes something lived in, or that were bad already: the rest of what
    // is listed bad now was free space until this notice.
    let mut not_free: Vec<ByteRange> = found
        .iter()
        .filter(|owner| matches!(owner.kind, OwnerKind::File { .. } | OwnerKind::Node { .. }))
        .map(|owner| owner.range)
        .collect();
    not_free.extend(
        bad_before
            .iter()
            .map(|bad| ByteRange::new(bad.start * block_size, bad.end() * block_size)),
    );
    let mut listed: Vec<Owner> = Vec::new();
    for owner in found {
        match owner.kind {
            OwnerKind::Bad if marked.is_some() => {
                listed.extend(
                    uncovered(owner.range, &not_free)
                        .into_iter()
                        .map(|piece| Owner {
                            range: piece,
                            kind: OwnerKind::Free,
                        }),
                );
            }
            _ => listed.push(owner),
        }
    }
    let owned: Vec<(Owner, BlockRun, bool)> = listed
        .into_iter()
        .map(|owner| {
            let run = to_blocks(owner.range);
            let was_bad = known_bad(run);
            (owner, run, was_bad)
        })
        .collect();
    let mut handled = Vec::new();
    let mut bad_now: Vec<BlockRun> = marked.into_iter().collect();
    let mut unrecorded = None;
    let mut unhandled = None;
    let mut held = HeldMarks::default();
    for (owner, run, was_bad) in owned {
        let outcome = match &owner.kind {
            OwnerKind::Bad => continue,
            OwnerKind::Unused => Outcome::Unused,
            OwnerKind::EventLog => Outcome::Unmovable {
                blocks: run.blocks,
                why: "the event log writes its ring there: records kept there may not read \
                      back (those already read are in memory and on the other blocks)"
                    .into(),
            },
            OwnerKind::Superblock { copy } => {
                if checksum && read_superblock_copy(context.device, *copy).is_ok() {
                    Outcome::NotConfirmed
                } else {
                    Outcome::RewriteSuperblock
                }
            }
            OwnerKind::Journal { live } => {
                let outcome = handle_journal(context, owner.range, *live);
                if matches!(outcome, Outcome::Unmovable { .. }) && *live {
                    held.journal.push((owner.range, origin.cause));
                }
                outcome
            }
            OwnerKind::Free if checksum => Outcome::NotConfirmed,
            OwnerKind::Free => {
                bad_now.push(run);
                if was_bad {
                    Outcome::AlreadyKnown
                } else {
                    Outcome::MarkedBad
                }
            }
            OwnerKind::File {
                unwritten: true, ..
            } => {
                if checksum {
                    Outcome::NotConfirmed
                } else {
                    bad_now.push(run);
                    if was_bad {
                        Outcome::AlreadyKnown
                    } else {
                        Outcome::MarkedBad
                    }
                }
            }
            OwnerKind::File {
                ino, file_offset, ..
            } => {
                let first = file_offset / block_size;
                let file = (*ino, first);
                let records = Records {
                    unrecorded: &mut unrecorded,
                    held: &mut held,
                };
                match handle_file(context, file, run, origin, &mut bad_now, records) {
                    // Still reading back where this mount, unable to move
                    // it, marked it bad already: a repeated report, no new
                    // failure (review 52: each repeat counted an error).
                    Ok(Outcome::NotConfirmed) if was_bad && !context.writable => {
                        Outcome::AlreadyKnown
                    }
                    Ok(outcome) => outcome,
                    Err(error) => {
                        let why = format!("it could not be handled: {error}");
                        unhandled.get_or_insert(error);
                        Outcome::Lost {
                            blocks: run.blocks,
                            why,
                        }
                    }
                }
            }
            OwnerKind::Node { tree, level, block } => {
                if checksum
                    && metadata
                        .trees
                        .verify_node_block(*block, *tree, *level)
                        .is_ok()
                {
                    Outcome::NotConfirmed
                } else {
                    bad_now.push(run);
                    handle_node(context, *tree, *level, *block, was_bad)
                }
            }
        };
        handled.push(Handled { owner, outcome });
    }
    if let Err(error) = record_bad(context, &bad_now, &bad_before, origin.cause, &mut held) {
        unrecorded.get_or_insert(error);
    }
    Ok(Handling {
        handled,
        unrecorded,
        unhandled,
        held,
    })
}

/// Where a file's records go that are not written now.
struct Records<'a> {
    /// Why they could not be written (the first reason).
    unrecorded: &'a mut Option<FailureError>,
    /// What may not be written yet (the filesystem may not write).
    held: &'a mut HeldMarks,
}

/// Marks `runs` bad in memory, then on the persistent list (one
/// transaction for all of them, when the filesystem may write; else they
/// are `held`, but for those bad before this notice, `bad_before`).
fn record_bad(
    context: &Context<'_>,
    runs: &[BlockRun],
    bad_before: &[BlockRun],
    cause: FailureCause,
    held: &mut HeldMarks,
) -> Result<(), FailureError> {
    let allocator = &context.metadata.allocator;
    let mut merged: BTreeMap<u64, BlockRun> = BTreeMap::new();
    for &run in runs {
        let known = bad_before
            .iter()
            .any(|bad| bad.start <= run.start && bad.end() >= run.end());
        if allocator.mark_bad(run).is_err() {
            // Outside the main region: an owner query never yields one.
            continue;
        }
        if known && !context.writable {
            // Held already, or on the persistent list: nothing new to
            // hold (review 52: a repeat said its marks could not be
            // written).
            continue;
        }
        if let Some(whole) = allocator.bad_run_containing(run.start) {
            merged.insert(whole.start, whole);
        }
    }
    if !context.writable {
        held.bad
            .extend(merged.into_values().map(|run| (run, cause)));
        return Ok(());
    }
    if merged.is_empty() {
        return Ok(());
    }
    // Runs merged later in the loop may contain earlier ones: keep the
    // outermost of each.
    let mut outer: Vec<BlockRun> = Vec::new();
    for run in merged.into_values() {
        match outer.last() {
            Some(last) if last.end() >= run.end() => {}
            _ => outer.push(run),
        }
    }
    let since = seconds_now();
    for chunk in outer.chunks(256) {
        let mut transaction = context.metadata.trees.transaction();
        transaction.may_use_reserve();
        for run in chunk {
            bad_blocks::record(
                &mut transaction,
                &BadRun {
                    start: run.start,
                    blocks: run.blocks,
                    since,
                    cause,
                },
            )?;
        }
        transaction.commit()?;
    }
    Ok(())
}

/// A file's written blocks: poison what is confirmed lost, then rescue.
///
/// `file` is the inode and the file block `run` starts at. A poison record
/// that cannot be written (a full device) leaves the data poisoned in
/// memory, and the reason in `records`; one the filesystem may not write
/// yet is held there.
fn handle_file(
    context: &Context<'_>,
    (ino, first): (u64, u64),
    run: BlockRun,
    origin: &Origin,
    bad_now: &mut Vec<BlockRun>,
    records: Records<'_>,
) -> Result<Outcome, FailureError> {
    let metadata = context.metadata;
    let end = first + run.blocks;
    // A full filesystem cannot move the data: what still reads back whole
    // stays where it is, readable, rather than be poisoned for a rescue
    // that cannot write it anywhere (review 26).
    let room = metadata.allocator.data_available();
    let nowhere_to_move = context.writable && room < run.blocks;
    let (poisoned, verified) = {
        let _records = metadata.lock_records();
        let mapped = mapped_blocks(metadata, ino, first, end)?;
        let mut lost: Vec<(u64, u64)> = Vec::new();
        let mut verified = 0;
        for (block, physical, checksum) in mapped {
            if physical != run.start + (block - first) {
                // Rewritten since the failure was found: its data lives
                // elsewhere now.
                continue;
            }
            // A mismatch found is checked again (it may have been on the
            // way to the medium). A reported block that reads back whole is
            // kept too when nothing can be moved: poisoning it would turn
            // data that reads into EIO for good, with no rescue to follow.
            // A block the device failed to read is not read again here:
            // that read's failure would be reported, and handled, and read
            // again, without end.
            let check_again = match origin.cause {
                FailureCause::Checksum => true,
                FailureCause::Reported => !context.writable || nowhere_to_move,
                FailureCause::Media => false,
            };
            if check_again && intact(context, physical, checksum) {
                verified += 1;
                continue;
            }
            if !metadata
                .poison
                .runs_within(ino, block, block + 1)
                .is_empty()
            {
                continue;
            }
            lost.push((block, physical));
        }
        let runs = group(ino, &lost, origin.cause);
        if context.writable && !runs.is_empty() {
            if let Err(error) = record_poison(metadata, &runs) {
                records.unrecorded.get_or_insert(error);
            }
        } else {
            records.held.poison.extend(runs.iter().copied());
        }
        for poisoned in &runs {
            metadata.poison.insert(*poisoned);
        }
        (runs, verified)
    };
    if poisoned.is_empty() {
        // Marked bad all the same: the device said so (or this is a
        // repeat of a report already handled).
        if origin.cause != FailureCause::Checksum {
            bad_now.push(run);
        }
        return Ok(match verified {
            0 => Outcome::AlreadyKnown,
            blocks if nowhere_to_move && origin.cause == FailureCause::Reported => {
                Outcome::Unmovable {
                    blocks,
                    why: format!(
                        "reads back intact; no free space to move it to ({room} blocks free), so \
                         it stays where it is, readable (its block is marked bad: never used \
                         again once the data leaves it)"
                    ),
                }
            }
            _ => Outcome::NotConfirmed,
        });
    }
    for poisoned in &poisoned {
        bad_now.push(BlockRun::new(poisoned.physical, u64::from(poisoned.blocks)));
    }
    let total: u64 = poisoned.iter().map(|run| u64::from(run.blocks)).sum();
    let mut rescue_failure = None;
    if context.writable {
        let span_first = poisoned.first().map_or(first, |run| run.first);
        let span_end = poisoned.last().map_or(end, PoisonRun::end);
        // Whatever the rescue's outcome, the poison map says what is lost.
        rescue_failure = match context.files.rescue(ino, span_first, span_end) {
            Err(error) => Some(error.to_string()),
            Ok(_) if room < span_end - span_first => {
                Some(format!("no free space to move it to ({room} blocks free)"))
            }
            Ok(_) => None,
        };
    }
    let lost: u64 = poisoned
        .iter()
        .flat_map(|run| metadata.poison.runs_within(ino, run.first, run.end()))
        .map(|still| u64::from(still.blocks))
        .sum::<u64>()
        .min(total);
    Ok(match (total - lost, lost) {
        (healed, 0) => Outcome::Healed { blocks: healed },
        (0, lost) => Outcome::Lost {
            blocks: lost,
            why: if let Some(failure) = rescue_failure {
                format!("it could not be moved: {failure}")
            } else if context.writable {
                "no copy of the data survived".into()
            } else {
                "the filesystem may not write: nothing could be moved".into()
            },
        },
        (healed, lost) => Outcome::Partly { healed, lost },
    })
}

/// Puts `runs` on the persistent poison list, in one transaction.
fn record_poison(metadata: &Metadata, runs: &[PoisonRun]) -> Result<(), FailureError> {
    let mut transaction = metadata.trees.transaction();
    transaction.may_use_reserve();
    for poisoned in runs {
        poison::put(&mut transaction, poisoned)?;
    }
    transaction.commit()?;
    Ok(())
}

/// `ino`'s written blocks in `first..end`: (file block, device block,
/// checksum), read from its extents.
fn mapped_blocks(
    metadata: &Metadata,
    ino: u64,
    first: u64,
    end: u64,
) -> Result<Vec<(u64, u64, u32)>, FailureError> {
    let start = ExtentKey {
        ino,
        offset: first.saturating_sub(u64::from(MAX_EXTENT_BLOCKS) - 1),
    }
    .encode();
    let stop = ExtentKey { ino, offset: end }.encode();
    let mut found = Vec::new();
    for entry in metadata.trees.range(TreeId::Extents, &start, Some(&stop)) {
        let (key, value) = entry?;
        let key = ExtentKey::decode(&key)
            .map_err(|error| FailureError::Corrupt(format!("extent key: {error}")))?;
        let extent = Extent::decode(&value)
            .map_err(|error| FailureError::Corrupt(format!("inode {ino} extent: {error}")))?;
        if key.ino != ino || extent.flags & Extent::UNWRITTEN != 0 {
            continue;
        }
        for (at, checksum) in extent.checksums.iter().enumerate() {
            let block = key.offset + at as u64;
            if (first..end).contains(&block) {
                found.push((block, extent.physical + at as u64, *checksum));
            }
        }
    }
    Ok(found)
}

/// Whether device block `physical` reads back matching `checksum`.
fn intact(context: &Context<'_>, physical: u64, checksum: u32) -> bool {
    let block_size = u64::from(context.layout.block_size);
    let mut bytes = vec![0u8; block_size as usize];
    context
        .device
        .read_at(physical * block_size, &mut bytes, IoClass::Data)
        .is_ok()
        && crc32c::crc32c(&bytes) == checksum
}

/// Consecutive (file block, device block) pairs as poison runs.
fn group(ino: u64, lost: &[(u64, u64)], cause: FailureCause) -> Vec<PoisonRun> {
    let since = seconds_now();
    let mut runs: Vec<PoisonRun> = Vec::new();
    for &(block, physical) in lost {
        if let Some(last) = runs.last_mut() {
            if last.end() == block && last.physical_of(block) == physical {
                last.blocks += 1;
                continue;
            }
        }
        runs.push(PoisonRun {
            ino,
            first: block,
            blocks: 1,
            physical,
            since,
            cause,
        });
    }
    runs
}

/// A b-tree node: moved from its cached copy (or from its block if that
/// still reads back intact), else lost.
fn handle_node(
    context: &Context<'_>,
    tree: TreeId,
    level: u8,
    block: u64,
    was_bad: bool,
) -> Outcome {
    // A node that cannot move but reads back whole where it is stays
    // there, readable, as file data does: nothing is lost (review 34: a
    // whole-device report called every such node lost and went to the
    // errors= policy while every file still read).
    let reads_back = || {
        context
            .metadata
            .trees
            .verify_node_block(block, tree, level)
            .is_ok()
    };
    if !context.writable {
        return if was_bad {
            Outcome::AlreadyKnown
        } else if reads_back() {
            Outcome::Unmovable {
                blocks: 1,
                why: "reads back intact; the filesystem may not write, so it stays where it \
                      is, readable"
                    .into(),
            }
        } else {
            Outcome::Lost {
                blocks: 1,
                why: "the filesystem may not write: the node cannot be moved".into(),
            }
        };
    }
    match context.metadata.trees.relocate_node(block, tree, level) {
        Ok(Relocation::Moved { .. }) => Outcome::Healed { blocks: 1 },
        Ok(Relocation::NotLive) => Outcome::Unused,
        Err(_) if was_bad => Outcome::AlreadyKnown,
        // The owners were listed before any was handled; a commit may have
        // moved the node since and its block been reused (it then reads
        // back as something else). Lost only if it still lives there.
        Err(_) if !node_still_at(context, tree, level, block) => Outcome::Unused,
        Err(error) if reads_back() => Outcome::Unmovable {
            blocks: 1,
            why: format!(
                "reads back intact; no room to move it ({error}), so it stays where it is, \
                 readable"
            ),
        },
        Err(error) => Outcome::Lost {
            blocks: 1,
            why: error.to_string(),
        },
    }
}

/// Whether the reverse map still says a `tree` node at `level` lives in
/// `block` (yes when it cannot tell: a loss is not hidden on a guess).
fn node_still_at(context: &Context<'_>, tree: TreeId, level: u8, block: u64) -> bool {
    let block_size = u64::from(context.layout.block_size);
    let range = ByteRange::at(block * block_size, block_size);
    let Ok(now) = owners(
        context.metadata,
        &context.layout,
        context.device.length(),
        range,
        false,
    ) else {
        return true;
    };
    now.iter()
        .any(|owner| owner.kind == OwnerKind::Node { tree, level, block })
}

/// Journal blocks: if entries replay still needs lie there, write every
/// dirty node and reclaim, so no entry before the newest is needed.
fn handle_journal(context: &Context<'_>, range: ByteRange, live: bool) -> Outcome {
    let block_size = u64::from(context.layout.block_size);
    let blocks = range.end.div_ceil(block_size) - range.start / block_size;
    if !live {
        return Outcome::Unmovable {
            blocks,
            why: "no journal entry needs these blocks now; the journal writes them again \
                  when its ring wraps"
                .into(),
        };
    }
    if !context.writable && context.writable_later {
        // Nothing new depends on those entries until it writes again (a
        // read-only mount replayed them into memory): the journal is
        // reclaimed off the blocks first thing then. Lost, they kept a
        // read-only mount read-only for good under errors=remount-ro
        // (review 49).
        return Outcome::Unmovable {
            blocks,
            why: "the filesystem may not write now: the journal is reclaimed off these blocks \
                  once it is made writable"
                .into(),
        };
    }
    if !context.writable {
        return Outcome::Lost {
            blocks,
            why: "the filesystem may not write: the journal cannot be reclaimed".into(),
        };
    }
    let journal = &context.metadata.journal;
    let reclaimed = context
        .metadata
        .trees
        .sync()
        .map_err(|error| error.to_string())
        .and_then(|()| journal.reclaim_all().map_err(|error| error.to_string()));
    let still_live = journal
        .live_entries()
        .iter()
        .any(|(_, entry)| entry.overlaps(&range));
    match reclaimed {
        Ok(()) if !still_live => Outcome::Healed { blocks },
        Ok(()) => Outcome::Lost {
            blocks,
            why: "the newest journal entry lies on the failed blocks".into(),
        },
        Err(why) => Outcome::Lost { blocks, why },
    }
}
