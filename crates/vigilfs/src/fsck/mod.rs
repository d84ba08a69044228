//! Checking a filesystem image without changing it.
//!
//! fsck reads every structure the engine has and validates it the way a
//! mount would, but instead of stopping at the first problem it records
//! each one and goes on, so an operator sees the whole damage at once. It
//! never writes: what it finds is left for the operator (or a later repair
//! mode) to act on, which is what "errors left uncorrected" means in the
//! exit codes of fsck(8).
//!
//! Checked so far, in order:
//!
//! 1. every superblock copy (primary and both backups): magic, version,
//!    checksum, layout against the device; a copy older than the one in
//!    use is reported too;
//! 2. the journal: every entry found in the region is verified, and the
//!    replay decision is made as at mount (a damaged entry that a
//!    completed flush covered is a problem; a torn tail after a crash is
//!    not, it is what replay cuts off);
//! 3. the b-trees, as a mount would see them after recovery: fsck runs the
//!    engine's own journal replay and tree rebuild as a dry run on an
//!    [`OverlayDevice`] (writes stay in memory), then walks every tree,
//!    verifying each node's checksum, bounds, key order and structure;
//! 4. the namespace (`namespace.rs`): inodes, directory entries and
//!    extents against each other — names, types, link counts, extents
//!    inside the region and no block used twice (by extents or nodes);
//!    extended attributes (`xattrs.rs`): every record read and held to
//!    the rules a set keeps, of an inode that exists;
//! 5. space (`space.rs`): the reverse map against the extents and nodes
//!    that really use blocks, both ways, and free-space accounting (the
//!    allocator rebuilt from the reverse map at open must account for the
//!    whole region);
//! 6. media records (`media.rs`): the persistent bad-block list and the
//!    poison records are validated; bad blocks are listed as notes, data
//!    lost to a media failure as damage; with [`FsckOptions::data`], every
//!    data block is read and verified against its checksum;
//! 7. the event log region (`event_log.rs`): header copies, every record
//!    slot, ids against the reservation;
//! 8. the persistent error record: errors the filesystem remembers are
//!    reported (as notes, not as damage).

mod event_log;
mod media;
mod namespace;
mod space;
mod xattrs;

use std::sync::Arc;

use crate::btree::{is_roots_record, BtreesOptions, CheckReport, TreeId};
use crate::device::{BlockDevice, OverlayDevice};
use crate::format::{
    inspect_superblock_copies, torn_by_one_crash, FormatError, FsState, Superblock, SuperblockCopy,
    MAX_WRITE_SEQUENCE,
};
use crate::journal::{Journal, JournalOptions, RecoveryReport};
use crate::metadata::{Metadata, OpenError};
pub use event_log::EventLogCounts;
pub use media::MediaCounts;
pub use namespace::NamespaceCounts;
pub use space::SpaceCounts;

/// What fsck checks beyond the metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsckOptions {
    /// Read every data block and verify its checksum (`fsck --data`).
    pub data: bool,
}

/// One thing wrong with the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Which structure ("superblock (first backup)", "journal").
    pub structure: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

/// Something worth knowing that is not damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Which structure it is about.
    pub structure: String,
    /// What to know.
    pub message: String,
}

/// Where fsck is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Steps done.
    pub done: u64,
    /// Steps in all.
    pub total: u64,
    /// What is being checked now.
    pub stage: &'static str,
    /// While file data is read (`--data`): bytes read, and bytes to read
    /// (estimated from the space in use).
    pub bytes: Option<(u64, u64)>,
}

/// What fsck found.
#[derive(Debug, Clone, PartialEq)]
pub struct FsckReport {
    /// The superblock in use (the primary, or the newest valid backup).
    pub superblock: Superblock,
    /// Which copy that is.
    pub superblock_source: SuperblockCopy,
    /// The journal's replay decision, if the journal could be read.
    pub journal: Option<RecoveryReport>,
    /// What the b-tree walk found, if the trees could be opened.
    pub trees: Option<CheckReport>,
    /// What the namespace holds, if it could be checked.
    pub namespace: Option<NamespaceCounts>,
    /// What the reverse map and free space hold, if they could be checked.
    pub space: Option<SpaceCounts>,
    /// The bad-block list, poisoned data and (with `--data`) the data
    /// checked, if the trees could be opened.
    pub media: Option<MediaCounts>,
    /// What the event log holds, if the image has one and it could be read.
    pub event_log: Option<EventLogCounts>,
    /// Damage found, at most 50 of a structure listed one by one, then
    /// one line saying how many more. Empty means clean.
    pub problems: Vec<Problem>,
    /// Every problem found, the unlisted ones too.
    pub problems_found: usize,
    /// Things worth knowing that are not damage.
    pub notes: Vec<Note>,
}

impl FsckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// fsck could not check the image at all.
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    /// No superblock copy is valid: this is not a vigilfs filesystem, or
    /// all three copies are damaged.
    #[error("{0}")]
    NoSuperblock(#[source] FormatError),
}

const STAGES: u64 = 4;

/// Node cache for the tree walk: enough to keep interior levels cached.
const CHECK_CACHE_BYTES: usize = 32 << 20;

/// Checks the filesystem on `device`, which is only read. `progress`
/// hears about each stage.
pub fn fsck(
    device: Arc<dyn BlockDevice>,
    progress: &mut dyn FnMut(Progress),
) -> Result<FsckReport, FsckError> {
    fsck_with(device, FsckOptions::default(), progress)
}

/// [`fsck`], with `options` saying what else to check.
pub fn fsck_with(
    device: Arc<dyn BlockDevice>,
    options: FsckOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<FsckReport, FsckError> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();

    progress(Progress {
        done: 0,
        total: STAGES,
        stage: "superblock copies",
        bytes: None,
    });
    let (mut superblock, superblock_source) =
        check_superblocks(device.as_ref(), &mut problems, &mut notes)?;
    if let Some(unused) = device.length().checked_sub(superblock.layout.device_length) {
        if unused > 0 {
            notes.push(Note {
                structure: "device".into(),
                message: format!(
                    "{} bytes, {unused} more than the filesystem was made for: the space past \
                     its end is not used (vigilfs does not grow a filesystem)",
                    device.length()
                ),
            });
        }
    }

    if superblock.features.requires_read_only() {
        // Review 58: fsck said "clean" and the mount went read-only
        // without a word.
        notes.push(Note {
            structure: "superblock".into(),
            message: format!(
                "the filesystem uses features this build does not know and cannot write \
                 (ro_compat {:#x}): it mounts read-only",
                superblock.features.ro_compat & !crate::format::Features::KNOWN_RO_COMPAT
            ),
        });
    }

    progress(Progress {
        done: 1,
        total: STAGES,
        stage: "journal",
        bytes: None,
    });
    let journal_options = JournalOptions::for_filesystem(&superblock);
    let journal = match Journal::inspect(device.as_ref(), &journal_options) {
        Ok(replay) => {
            let report = replay.report.clone();
            if !report.cut_off.is_empty() {
                notes.push(Note {
                    structure: "journal".into(),
                    message: format!(
                        "entries {:?} were written after the last completed flush and are \
                         incomplete: the next mount cuts them off (normal after a crash)",
                        report.cut_off
                    ),
                });
            }
            if !report.unverified_after_flush.is_empty() {
                notes.push(Note {
                    structure: "journal".into(),
                    message: format!(
                        "entries {:?} were written after the last completed flush and fail \
                         their checksums (torn by a crash, or damaged since): the next mount \
                         does not replay them, and what they changed after the last fsync is \
                         lost",
                        report.unverified_after_flush
                    ),
                });
            }
            if !report.unmet_claims.is_empty() {
                notes.push(Note {
                    structure: "journal".into(),
                    message: format!(
                        "entries {:?} reached the disk but the file data they name did not \
                             (no flush completed after them): they are among those cut off",
                        report.unmet_claims
                    ),
                });
            }
            if let Some((first, last)) = report.lost_since_clean {
                problems.push(Problem {
                    structure: "journal".into(),
                    message: format!(
                        "entries {first}..={last}, the newest when the filesystem was \
                         unmounted cleanly, are missing or damaged (the mount goes on from \
                         the entries before them and reports the loss)"
                    ),
                });
            }
            // The newest roots record is always there, clean or not.
            let pending_records = replay
                .entries
                .iter()
                .flat_map(|entry| &entry.records)
                .filter(|record| !is_roots_record(record))
                .count();
            if pending_records > 0 {
                notes.push(Note {
                    structure: "journal".into(),
                    message: format!(
                        "entries {}..={} ({pending_records} {}) will be replayed at the next mount",
                        report.last_seq,
                        report.newest_kept_seq,
                        if pending_records == 1 {
                            "record"
                        } else {
                            "records"
                        }
                    ),
                });
            }
            Some(report)
        }
        Err(error) => {
            problems.push(Problem {
                structure: "journal".into(),
                message: error.to_string(),
            });
            None
        }
    };

    progress(Progress {
        done: 2,
        total: STAGES,
        stage: "b-trees",
        bytes: None,
    });
    let checked = match journal {
        Some(_) => check_trees(
            Arc::clone(&device),
            &superblock,
            journal_options,
            options,
            &mut problems,
            &mut notes,
            progress,
        ),
        None => {
            notes.push(Note {
                structure: "b-trees".into(),
                message: "not checked: the journal cannot be replayed".into(),
            });
            None
        }
    };
    let (trees, namespace, space, media) = match checked {
        Some((trees, namespace, space, media)) => {
            (Some(trees), Some(namespace), Some(space), Some(media))
        }
        None => (None, None, None, None),
    };

    progress(Progress {
        done: 3,
        total: STAGES,
        stage: "event log and error record",
        bytes: None,
    });
    let mut error_record = superblock.error_record.clone();
    let event_log = event_log::check(
        device.as_ref(),
        &superblock,
        &mut error_record,
        &mut problems,
        &mut notes,
    );
    superblock.error_record = error_record;
    let record = &superblock.error_record;
    if record.total > 0 {
        let last = record
            .last
            .as_ref()
            .map(|event| format!("; last: {event:?}"))
            .unwrap_or_default();
        notes.push(Note {
            structure: "error record".into(),
            message: format!("the filesystem has recorded {} errors{last}", record.total),
        });
    }
    progress(Progress {
        done: STAGES,
        total: STAGES,
        stage: "done",
        bytes: None,
    });
    let problems_found = problems.len();
    let problems = summarise(problems);

    Ok(FsckReport {
        superblock,
        superblock_source,
        journal,
        trees,
        namespace,
        space,
        media,
        event_log,
        problems,
        problems_found,
        notes,
    })
}

/// Dry-runs recovery on an overlay, walks every tree, then checks the
/// namespace and the space accounting. Any failure is a problem naming the
/// structure; the image is never written.
fn check_trees(
    device: Arc<dyn BlockDevice>,
    superblock: &Superblock,
    journal_options: JournalOptions,
    options: FsckOptions,
    problems: &mut Vec<Problem>,
    notes: &mut Vec<Note>,
    progress: &mut dyn FnMut(Progress),
) -> Option<(CheckReport, NamespaceCounts, SpaceCounts, MediaCounts)> {
    let overlay: Arc<dyn BlockDevice> = Arc::new(OverlayDevice::new(device));
    let reader = Arc::clone(&overlay);
    let tree_options = BtreesOptions {
        cache_bytes: CHECK_CACHE_BYTES,
        ..BtreesOptions::default()
    };
    let main = superblock.layout.main;
    let outcome = match Metadata::open(overlay, superblock, journal_options, tree_options) {
        Err(OpenError::Journal(error)) => {
            problems.push(Problem {
                structure: "b-trees".into(),
                message: format!("journal replay failed: {error}"),
            });
            return None;
        }
        Err(OpenError::Btree(error)) => Err(error),
        Err(OpenError::Poison(error)) => {
            problems.push(Problem {
                structure: "poison records".into(),
                message: error.to_string(),
            });
            return None;
        }
        Err(OpenError::Lost(error)) => {
            problems.push(Problem {
                structure: "lost-data records".into(),
                message: error.to_string(),
            });
            return None;
        }
        Ok(metadata) => {
            let trees = &metadata.trees;
            trees.check().and_then(|report| {
                let (names, extents) = namespace::check(trees, main, &report.nodes, problems)?;
                let space = space::check(
                    trees,
                    &metadata.allocator,
                    main,
                    &report.nodes,
                    &extents,
                    problems,
                );
                let media = media::check(
                    &metadata,
                    &superblock.layout,
                    reader.as_ref(),
                    options.data,
                    problems,
                    notes,
                    progress,
                );
                Ok((report, names, space, media))
            })
        }
    };
    match outcome {
        Ok(checked) => Some(checked),
        Err(error) => {
            let structure = match error.corrupt_block() {
                Some(block) => format!("b-tree node at block {block}"),
                None => "b-trees".into(),
            };
            problems.push(Problem {
                structure,
                message: error.to_string(),
            });
            notes.push(Note {
                structure: "b-trees, namespace, space and media".into(),
                message: "not checked past the damage above: the walk of the b-trees \
                          stopped there, so the rest of the trees, the namespace, the space \
                          accounting, the bad-block list and the lost data were not checked \
                          (other damage may be there too)"
                    .into(),
            });
            None
        }
    }
}

/// An inode record of `kind` with `nlink` links, for the checks' tests.
#[cfg(test)]
pub(crate) fn test_inode(kind: crate::inode::FileType, nlink: u32) -> Vec<u8> {
    use crate::inode::{InodeRecord, Timestamp};
    InodeRecord {
        mode: kind.mode_bits() | 0o755,
        uid: 0,
        gid: 0,
        nlink,
        flags: 0,
        size: 0,
        generation: 1,
        rdev: 0,
        atime: Timestamp::default(),
        mtime: Timestamp::default(),
        ctime: Timestamp::default(),
        btime: Timestamp::default(),
    }
    .encode()
}

/// Most problems listed per structure; the rest are counted, so a badly
/// damaged image gives a readable report.
const PROBLEMS_LISTED_PER_STRUCTURE: usize = 50;

fn summarise(problems: Vec<Problem>) -> Vec<Problem> {
    let mut listed: Vec<Problem> = Vec::new();
    let mut unlisted: Vec<(String, usize)> = Vec::new();
    for problem in problems {
        let shown = listed
            .iter()
            .filter(|kept| kept.structure == problem.structure)
            .count();
        if shown < PROBLEMS_LISTED_PER_STRUCTURE {
            listed.push(problem);
        } else if let Some((_, count)) = unlisted
            .iter_mut()
            .find(|(name, _)| *name == problem.structure)
        {
            *count += 1;
        } else {
            unlisted.push((problem.structure, 1));
        }
    }
    for (structure, count) in unlisted {
        listed.push(Problem {
            message: format!("{count} more problems like the ones above"),
            structure,
        });
    }
    listed
}

/// Keys per tree, for reports.
pub fn keys_per_tree(report: &CheckReport) -> Vec<(TreeId, u64)> {
    TreeId::ALL
        .iter()
        .copied()
        .zip(report.keys.iter().copied())
        .collect()
}

fn copy_name(copy: SuperblockCopy) -> &'static str {
    match copy {
        SuperblockCopy::Primary => "superblock (primary)",
        SuperblockCopy::FirstBackup => "superblock (first backup)",
        SuperblockCopy::SecondBackup => "superblock (second backup)",
    }
}

/// Reads all three copies, reports the bad and stale ones, and returns the
/// one a mount would use.
fn check_superblocks(
    device: &dyn BlockDevice,
    problems: &mut Vec<Problem>,
    notes: &mut Vec<Note>,
) -> Result<(Superblock, SuperblockCopy), FsckError> {
    let copies = inspect_superblock_copies(device);
    let chosen = match &copies[0] {
        (copy, Ok(primary)) => Some((primary.clone(), *copy)),
        _ => copies
            .iter()
            .filter_map(|(copy, outcome)| outcome.as_ref().ok().map(|sb| (sb.clone(), *copy)))
            .max_by_key(|(superblock, _)| superblock.write_sequence),
    };
    let Some((superblock, source)) = chosen else {
        let rejected = copies
            .into_iter()
            .filter_map(|(copy, outcome)| {
                outcome
                    .err()
                    .map(|error| crate::format::RejectedCopy { copy, error })
            })
            .collect();
        return Err(FsckError::NoSuperblock(FormatError::NoValidSuperblock {
            rejected,
        }));
    };
    if superblock.write_sequence >= MAX_WRITE_SEQUENCE {
        // Valid to read, but the next write would pass the limit: no
        // mount could write it. Only forgery or damage gets here.
        problems.push(Problem {
            structure: copy_name(source).to_owned(),
            message: format!(
                "write sequence {} is at its limit ({MAX_WRITE_SEQUENCE}): no mount can write \
                 this superblock; forged or damaged",
                superblock.write_sequence
            ),
        });
    }
    let mismatched: Vec<SuperblockCopy> = copies
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Err(FormatError::ChecksumMismatch { .. })))
        .map(|(copy, _)| *copy)
        .collect();
    let torn_may_pass = superblock.state == FsState::Dirty && torn_by_one_crash(&mismatched);
    for (copy, outcome) in copies {
        let structure = copy_name(copy).to_owned();
        match outcome {
            // After a crash a copy whose checksum does not match may be one
            // the crash tore mid-write: the next mount rewrites it without
            // a report, and fsck agrees (any other damage no torn write
            // makes, and mismatches no single crash makes, are problems).
            Err(error @ FormatError::ChecksumMismatch { .. }) if torn_may_pass => {
                notes.push(Note {
                    structure,
                    message: format!(
                        "{error}: the filesystem was not unmounted cleanly, so this may be \
                         a write the crash cut short; the next mount rewrites it"
                    ),
                });
            }
            Err(error) => problems.push(Problem {
                structure,
                message: error.to_string(),
            }),
            // Copies are written primary first (flushed), then the
            // backups: a power cut between leaves backups one write behind,
            // which every mount rewrites (and does not report), so neither
            // does fsck.
            Ok(other) if other.write_sequence.saturating_add(1) == superblock.write_sequence => {
                notes.push(Note {
                    structure,
                    message: format!(
                        "one write behind the copy in use (write sequence {} < {}): a power cut \
                         between the primary and the backups leaves them so; the next mount \
                         rewrites it",
                        other.write_sequence, superblock.write_sequence
                    ),
                });
            }
            Ok(other) if other.write_sequence != superblock.write_sequence => {
                problems.push(Problem {
                    structure,
                    message: format!(
                        "{}: write sequence {} while the copy in use has {}",
                        if other.write_sequence < superblock.write_sequence {
                            "stale"
                        } else {
                            "newer than the copy in use (the primary wins while valid)"
                        },
                        other.write_sequence,
                        superblock.write_sequence
                    ),
                });
            }
            Ok(_) => {}
        }
    }
    Ok((superblock, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{IoClass, MemoryDevice, SectorSize};
    use crate::journal::{Journal, JournalOptions};
    use crate::mkfs::{make_filesystem, MkfsOptions};
    use std::sync::Arc;

    fn no_progress(_: Progress) {}

    /// A new filesystem, its root directory made.
    fn fresh() -> (Arc<MemoryDevice>, Superblock) {
        let device = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).unwrap();
        (device, superblock)
    }

    #[test]
    fn fresh_filesystem_is_clean() {
        let (device, _) = fresh();
        let mut stages = Vec::new();
        let report = fsck(device, &mut |progress| stages.push(progress.stage)).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.superblock_source, SuperblockCopy::Primary);
        assert_eq!(stages.last(), Some(&"done"));
    }

    #[test]
    fn a_write_sequence_at_its_limit_is_reported() {
        let (device, mut superblock) = fresh();
        superblock.write_sequence = MAX_WRITE_SEQUENCE - 1;
        crate::format::write_superblocks(device.as_ref(), &mut superblock).unwrap();
        assert_eq!(superblock.write_sequence, MAX_WRITE_SEQUENCE);
        let report = fsck(device, &mut no_progress).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|problem| problem.message.contains("is at its limit")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn damaged_primary_superblock_is_reported_and_a_backup_used() {
        let (device, _) = fresh();
        let offset = SuperblockCopy::Primary.offset(device.length()).unwrap();
        let mut block = vec![0u8; 512];
        device
            .read_at(offset, &mut block, IoClass::Superblock)
            .unwrap();
        block[100] ^= 0xFF;
        device
            .write_at(offset, &block, IoClass::Superblock)
            .unwrap();
        let report = fsck(device, &mut no_progress).unwrap();
        assert_ne!(report.superblock_source, SuperblockCopy::Primary);
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].structure, "superblock (primary)");
        assert!(report.problems[0].message.contains("checksum"));
    }

    /// Writes `superblock` with the next write sequence to the primary
    /// copy only, as a power cut after its flush leaves it.
    fn write_primary_only(device: &MemoryDevice, superblock: &mut Superblock) {
        superblock.write_sequence += 1;
        let offset = SuperblockCopy::Primary.offset(device.length()).unwrap();
        device
            .write_at(offset, &superblock.encode().unwrap(), IoClass::Superblock)
            .unwrap();
    }

    #[test]
    fn backups_one_write_behind_after_a_power_cut_are_a_note_two_behind_a_problem() {
        let (device, mut superblock) = fresh();
        write_primary_only(&device, &mut superblock);
        let report = fsck(device.clone(), &mut no_progress).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        let behind = |report: &FsckReport| {
            report
                .notes
                .iter()
                .filter(|note| note.message.contains("one write behind"))
                .count()
        };
        assert_eq!(behind(&report), 2, "{:?}", report.notes);

        // No single power cut leaves them two writes behind.
        write_primary_only(&device, &mut superblock);
        let report = fsck(device, &mut no_progress).unwrap();
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(report
            .problems
            .iter()
            .all(|problem| problem.message.starts_with("stale")));
    }

    #[test]
    fn image_without_any_superblock_is_an_operational_error() {
        let device = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        assert!(matches!(
            fsck(device, &mut no_progress),
            Err(FsckError::NoSuperblock(_))
        ));
    }

    /// A filesystem with `transactions` committed durably into the inode
    /// tree, left with its changes in the journal (no sync) unless `sync`.
    fn populated(transactions: u64, sync: bool) -> (Arc<MemoryDevice>, Superblock, CheckReport) {
        let (device, superblock) = fresh();
        let metadata = Metadata::open_default(device.clone(), &superblock).unwrap();
        let trees = &metadata.trees;
        for batch in 0..transactions {
            let mut transaction = trees.transaction();
            for key in 0..200u64 {
                let key = (batch * 1000 + key).to_be_bytes();
                transaction.put(TreeId::Meta, &key, &[7u8; 64]).unwrap();
            }
            transaction.commit_durable().unwrap();
        }
        if sync {
            trees.sync().unwrap();
        }
        let report = trees.check().unwrap();
        (device, superblock, report)
    }

    #[test]
    fn trees_are_walked_after_a_dry_run_replay_that_writes_nothing() {
        let (device, _, expected) = populated(5, false);
        let before = device.to_image();
        let report = fsck(device.clone(), &mut no_progress).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert!(report
            .notes
            .iter()
            .any(|note| note.message.contains("replayed")));
        let trees = report.trees.expect("trees checked");
        assert_eq!(trees.keys, expected.keys);
        assert_eq!(device.to_image(), before, "fsck wrote to the image");
    }

    #[test]
    fn corrupt_tree_node_is_a_problem_naming_its_block() {
        let (device, superblock, expected) = populated(20, true);
        let (_, _, leaf) = *expected
            .nodes
            .iter()
            .find(|(tree, level, _)| *tree == TreeId::Meta && *level == 0)
            .expect("a leaf");
        let block_size = u64::from(superblock.layout.block_size);
        let mut bytes = vec![0u8; block_size as usize];
        device
            .read_at(leaf * block_size, &mut bytes, IoClass::Metadata)
            .unwrap();
        bytes[300] ^= 0x10;
        device
            .write_at(leaf * block_size, &bytes, IoClass::Metadata)
            .unwrap();
        let report = fsck(device, &mut no_progress).unwrap();
        assert!(!report.is_clean());
        assert_eq!(
            report.problems[0].structure,
            format!("b-tree node at block {leaf}")
        );
        assert!(
            report.problems[0].message.contains("corrupt"),
            "{}",
            report.problems[0].message
        );
        // What was not checked because of it is said, not left out.
        assert!(
            report
                .notes
                .iter()
                .any(|note| note.message.starts_with("not checked")),
            "{:?}",
            report.notes
        );
    }

    #[test]
    fn corrupt_interior_node_is_a_problem_naming_its_block() {
        let (device, superblock, expected) = populated(40, true);
        let (_, _, interior) = *expected
            .nodes
            .iter()
            .find(|(tree, level, _)| *tree == TreeId::Meta && *level > 0)
            .expect("40 transactions of 200 keys need an interior node");
        let block_size = u64::from(superblock.layout.block_size);
        let mut bytes = vec![0u8; block_size as usize];
        device
            .read_at(interior * block_size, &mut bytes, IoClass::Metadata)
            .unwrap();
        bytes[64] ^= 0x01;
        device
            .write_at(interior * block_size, &bytes, IoClass::Metadata)
            .unwrap();
        let report = fsck(device, &mut no_progress).unwrap();
        assert!(!report.is_clean());
        assert_eq!(
            report.problems[0].structure,
            format!("b-tree node at block {interior}")
        );
    }

    #[test]
    fn damaged_durable_journal_entry_is_a_problem() {
        let (device, superblock, _) = populated(5, false);
        let options = JournalOptions::for_filesystem(&superblock);
        let replay = Journal::inspect(device.as_ref(), &options).unwrap();
        assert!(replay.entries.len() >= 3);
        // The second entry needed: later flushes covered it.
        let block_size = u64::from(superblock.layout.block_size);
        let at = options.region.start + replay.entries[1].start_block * block_size;
        let mut bytes = vec![0u8; block_size as usize];
        device.read_at(at, &mut bytes, IoClass::Journal).unwrap();
        bytes[200] ^= 0x01;
        device.write_at(at, &bytes, IoClass::Journal).unwrap();
        let report = fsck(device, &mut no_progress).unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].structure, "journal");
        assert!(report.problems[0]
            .message
            .contains("missing or fails its checksum"));
    }
}
