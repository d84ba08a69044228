//! fsck's media checks: the persistent bad-block list and the poison
//! records, and with `--data` every data block read and verified.
//!
//! What must hold (and is reported when it does not):
//!
//! * every bad-block record decodes (version, length, cause), lies inside
//!   the main region, and no two runs overlap or touch;
//! * every poison record decodes, names a regular file that exists, and
//!   each poisoned block is mapped by a written extent to the device block
//!   the record names (the invariant the extent map keeps);
//! * every lost-data record decodes, its file's ranges neither overlap nor
//!   touch (checked as the metadata opens), and it names a regular file
//!   that exists.
//!
//! Poisoned data and lost data are reported as damage — the data is lost, and reads of it
//! fail until the file is rewritten there — with the paths naming the file,
//! so fsck's exit code says errors are left. Bad blocks are listed as notes:
//! they are handled (never allocated again), not damage. With `--data`,
//! scrub's data pass runs over the image (read-only): every block that
//! fails to read or to match its checksum is damage, named with its owners.

use std::collections::{BTreeMap, BTreeSet};

use super::{Note, Problem};
use crate::alloc::{bad_blocks, BadRun};
use crate::btree::TreeId;
use crate::device::{BlockDevice, ByteRange};
use crate::failure::{self, file_names, OwnerKind};
use crate::format::Layout;
use crate::inode::{inode_key, paths_of, printable, Extent, ExtentKey, FileType, InodeRecord};
use crate::metadata::Metadata;
use crate::poison::PoisonRun;
use crate::scrub::{self, Finding, Progress, ScrubOptions, ScrubSink, Scrubber};

/// What the media records hold, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaCounts {
    /// The bad-block list.
    pub bad_runs: Vec<BadRun>,
    /// Bad blocks in all.
    pub bad_blocks: u64,
    /// Poisoned runs, with the paths naming each file.
    pub poisoned: Vec<(PoisonRun, Vec<String>)>,
    /// With `--data`: data bytes read and verified.
    pub data_bytes_checked: Option<u64>,
    /// With `--data`: blocks that failed.
    pub data_failures: u64,
}

fn problem(structure: &str, message: String) -> Problem {
    Problem {
        structure: structure.into(),
        message,
    }
}

/// Collects scrub's findings and passes its progress on to fsck's.
struct Collect<'a> {
    findings: Vec<Finding>,
    progress: &'a mut dyn FnMut(super::Progress),
}

impl ScrubSink for Collect<'_> {
    fn finding(&mut self, finding: &Finding) -> std::ops::ControlFlow<()> {
        self.findings.push(finding.clone());
        std::ops::ControlFlow::Continue(())
    }

    fn progress(&mut self, progress: &Progress) -> std::ops::ControlFlow<()> {
        (self.progress)(super::Progress {
            done: 2,
            total: super::STAGES,
            stage: "file data",
            bytes: Some((progress.bytes, progress.total_bytes.max(progress.bytes))),
        });
        std::ops::ControlFlow::Continue(())
    }
}

pub(crate) fn check(
    metadata: &Metadata,
    layout: &Layout,
    device: &dyn BlockDevice,
    data: bool,
    problems: &mut Vec<Problem>,
    notes: &mut Vec<Note>,
    progress: &mut dyn FnMut(super::Progress),
) -> MediaCounts {
    let mut counts = MediaCounts::default();
    let main = layout.main;
    let region = main.start..main.end().unwrap_or(u64::MAX);
    let (start, end) = bad_blocks::key_range();
    match metadata
        .trees
        .scan(TreeId::Meta, &start, Some(&end), usize::MAX)
    {
        Ok(entries) => {
            let (runs, found) = bad_blocks::validate(&entries, region);
            for message in found {
                problems.push(problem("bad-block list", message));
            }
            counts.bad_blocks = runs.iter().map(|run| run.blocks).sum();
            if !runs.is_empty() {
                let listed: Vec<String> = runs
                    .iter()
                    .take(20)
                    .map(|run| format!("{}+{} ({})", run.start, run.blocks, run.cause))
                    .collect();
                notes.push(Note {
                    structure: "bad-block list".into(),
                    message: format!(
                        "{} bad blocks are never allocated: {}{}",
                        counts.bad_blocks,
                        listed.join(", "),
                        if runs.len() > 20 { ", ..." } else { "" }
                    ),
                });
            }
            counts.bad_runs = runs;
        }
        Err(error) => problems.push(problem("bad-block list", format!("cannot read: {error}"))),
    }
    check_poison(metadata, layout, problems, &mut counts);
    check_lost(metadata, problems);
    if data {
        check_data(metadata, layout, device, problems, &mut counts, progress);
    }
    counts
}

/// The paths of `inos`, or, when the directory entries cannot be read,
/// none and why.
fn names_of(
    metadata: &Metadata,
    inos: &BTreeSet<u64>,
) -> (BTreeMap<u64, Vec<Vec<u8>>>, Option<String>) {
    match paths_of(&metadata.trees, inos) {
        Ok(names) => (names, None),
        Err(error) => (BTreeMap::new(), Some(error.to_string())),
    }
}

fn check_poison(
    metadata: &Metadata,
    layout: &Layout,
    problems: &mut Vec<Problem>,
    counts: &mut MediaCounts,
) {
    let runs = metadata.poison.all();
    if runs.is_empty() {
        return;
    }
    let inos: BTreeSet<u64> = runs.iter().map(|run| run.ino).collect();
    let (names, unreadable) = names_of(metadata, &inos);
    let block_size = u64::from(layout.block_size);
    for run in runs {
        let paths: Vec<String> = names
            .get(&run.ino)
            .into_iter()
            .flatten()
            .map(|path| printable(path))
            .collect();
        match poison_defect(metadata, &run) {
            Some(defect) => problems.push(problem("poison records", defect)),
            None => problems.push(problem(
                "lost data",
                format!(
                    "{} (inode {}) bytes {}..{} were lost to a {} failure of device blocks \
                     {}+{}: reads there fail until they are rewritten",
                    file_names(&paths, unreadable.as_deref()),
                    run.ino,
                    run.first * block_size,
                    run.end() * block_size,
                    run.cause,
                    run.physical,
                    run.blocks
                ),
            )),
        }
        counts.poisoned.push((run, paths));
    }
}

/// Lost-data records: each range is damage, or a defect when its file
/// is not a regular file that exists.
fn check_lost(metadata: &Metadata, problems: &mut Vec<Problem>) {
    let ranges = metadata.lost.all();
    if ranges.is_empty() {
        return;
    }
    let inos: BTreeSet<u64> = ranges.iter().map(|range| range.ino).collect();
    let (names, unreadable) = names_of(metadata, &inos);
    for range in ranges {
        if let Err(defect) = regular_file(metadata, range.ino, "a lost-data record") {
            problems.push(problem("lost-data records", defect));
            continue;
        }
        let paths: Vec<String> = names
            .get(&range.ino)
            .into_iter()
            .flatten()
            .map(|path| printable(path))
            .collect();
        problems.push(problem(
            "lost data",
            format!(
                "{} (inode {}) bytes {}..{} were lost: written, but never to reach the device \
                 (a write-back from a shared mapping refused, or writeback failing when a \
                 mount ended; {}): reads there fail until they are rewritten",
                file_names(&paths, unreadable.as_deref()),
                range.ino,
                range.start,
                range.end,
                crate::device::Errno(range.errno),
            ),
        ));
    }
}

/// Inode `ino`'s record, when it is a regular file that exists; else what
/// is wrong, saying `who` names it.
fn regular_file(metadata: &Metadata, ino: u64, who: &str) -> Result<InodeRecord, String> {
    let record = match metadata.trees.get(TreeId::Inodes, &inode_key(ino)) {
        Ok(Some(value)) => match InodeRecord::decode(&value) {
            Ok(record) => record,
            Err(error) => return Err(format!("inode {ino}: {error}")),
        },
        Ok(None) => return Err(format!("{who} names inode {ino}, which does not exist")),
        Err(error) => return Err(format!("cannot read inode {ino}: {error}")),
    };
    if record.file_type() != FileType::Regular {
        return Err(format!(
            "{who} names inode {ino}, which is not a regular file"
        ));
    }
    Ok(record)
}

/// What is wrong with a poison record, if anything.
fn poison_defect(metadata: &Metadata, run: &PoisonRun) -> Option<String> {
    let ino = run.ino;
    if let Err(defect) = regular_file(metadata, ino, "poison") {
        return Some(defect);
    }
    for block in run.first..run.end() {
        let start = ExtentKey {
            ino,
            offset: block.saturating_sub(127),
        }
        .encode();
        let stop = ExtentKey {
            ino,
            offset: block + 1,
        }
        .encode();
        let extents = match metadata
            .trees
            .scan(TreeId::Extents, &start, Some(&stop), usize::MAX)
        {
            Ok(extents) => extents,
            Err(error) => return Some(format!("cannot read inode {ino}'s extents: {error}")),
        };
        let mapped = extents.iter().rev().find_map(|(key, value)| {
            let key = ExtentKey::decode(key).ok()?;
            let extent = Extent::decode(value).ok()?;
            let end = key.offset + u64::from(extent.blocks());
            (key.ino == ino && key.offset <= block && block < end)
                .then(|| {
                    (extent.flags & Extent::UNWRITTEN == 0)
                        .then(|| extent.physical + (block - key.offset))
                })
                .flatten()
        });
        if mapped != Some(run.physical_of(block)) {
            return Some(format!(
                "inode {ino} block {block} is poisoned as device block {}, but its extent maps it \
                 {}",
                run.physical_of(block),
                match mapped {
                    Some(physical) => format!("to device block {physical}"),
                    None => "nowhere (or unwritten)".into(),
                }
            ));
        }
    }
    None
}

fn check_data(
    metadata: &Metadata,
    layout: &Layout,
    device: &dyn BlockDevice,
    problems: &mut Vec<Problem>,
    counts: &mut MediaCounts,
    progress: &mut dyn FnMut(super::Progress),
) {
    let scrubber = Scrubber {
        metadata,
        device,
        layout: *layout,
        // Read from a mount (or fsck's data pass): nothing torn passes.
        after_crash: false,
    };
    let mut sink = Collect {
        findings: Vec::new(),
        progress,
    };
    let options = ScrubOptions {
        rate: None,
        data_only: true,
    };
    match scrub::run(&scrubber, scrub::Cursor::START, options, &mut sink) {
        Ok(stats) => counts.data_bytes_checked = Some(stats.bytes),
        Err(error) => {
            problems.push(problem(
                "file data",
                format!("the data scrub stopped: {error}"),
            ));
        }
    }
    counts.data_failures = sink.findings.len() as u64;
    for finding in sink.findings {
        let owners = describe_owners(metadata, layout, device.length(), finding.range);
        problems.push(problem(
            "file data",
            format!(
                "device bytes {} ({}): {}{}",
                finding.range,
                match finding.cause {
                    crate::alloc::FailureCause::Checksum => "checksum mismatch",
                    _ => "unreadable",
                },
                finding.what,
                owners
            ),
        ));
    }
}

/// The files owning `range`, as text for a problem.
fn describe_owners(
    metadata: &Metadata,
    layout: &Layout,
    device_length: u64,
    range: ByteRange,
) -> String {
    let Ok(owners) = failure::owners(metadata, layout, device_length, range, true) else {
        return String::new();
    };
    let named: Vec<String> = owners
        .iter()
        .filter_map(|owner| match &owner.kind {
            OwnerKind::File {
                paths,
                paths_unreadable,
                file_offset,
                ..
            } => Some(format!(
                "{} at bytes {}..{}",
                file_names(paths, paths_unreadable.as_deref()),
                file_offset,
                file_offset + owner.range.len()
            )),
            _ => None,
        })
        .collect();
    if named.is_empty() {
        String::new()
    } else {
        format!("; owned by {}", named.join("; "))
    }
}
