//! `vigilfs fsck`: check an image and report, with fsck(8) exit codes.
//!
//! On a terminal a progress bar shows the stages on stderr (and, while
//! `--data` reads file data, bytes read and the time left); otherwise each
//! stage is a plain line, and reading file data one every
//! [`PLAIN_PROGRESS_EVERY`], so logs stay readable. The report goes to stdout,
//! as text or (with --json) as one JSON object. The persistent error record
//! is shown as `status` shows it (dates in UTC, errno names), and in the
//! JSON as `error_record` with the fields of `status --json`'s `errors`.
//! The media records are `media`: {bad_blocks, bad [{start, blocks, since,
//! cause}], poisoned [{ino, paths, first_block, blocks, device_block,
//! since, cause}], data_bytes_checked (null without --data),
//! data_failures}.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use vigilfs::device::{FileDevice, FileDeviceOptions};
use vigilfs::format::FsState;
use vigilfs::fsck::{fsck_with, keys_per_tree, FsckOptions, FsckReport, Progress};

use crate::control::report::{error_record_json, event_json};
use crate::failure::Failure;
use crate::in_use::{self, AcquireError, LockMode};
use crate::status_command::{self, human_bytes};

/// No errors.
pub const CLEAN: u8 = 0;
/// Errors found and left uncorrected.
pub const ERRORS_LEFT: u8 = 4;
/// How often a plain progress line is printed while file data is read.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The `structure` of the engine's note about the error record.
const ERROR_RECORD_NOTE: &str = "error record";

pub fn run(image: &Path, as_json: bool, data: bool) -> Result<u8, Failure> {
    // A mounted filesystem changes under fsck's feet: refuse it, and keep
    // a shared lock so no mount starts while checking. A mount process
    // still finishing after `umount` is waited for. An image that cannot
    // be locked (read-only media, no flock) is checked without the lock.
    let _lock = match in_use::acquire(image, LockMode::Shared) {
        Ok(lock) => Some(lock),
        Err(AcquireError::Io(_)) => None,
        Err(refused) => return Err(Failure::operational(refused.message(image))),
    };
    let device = FileDevice::open(
        image,
        FileDeviceOptions {
            read_only: true,
            ..FileDeviceOptions::default()
        },
    )
    .map_err(|error| Failure::operational(format!("cannot open {}: {error}", image.display())))?;

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix("fsck");
        bar
    });
    // Reading file data (--data) is the long stage: it says how far it is,
    // on a terminal with the time left, otherwise a line every few seconds.
    let mut data_started: Option<Instant> = None;
    let mut last_line: Option<Instant> = None;
    let mut show = |progress: Progress| {
        let Some((read, to_read)) = progress.bytes else {
            match &bar {
                Some(bar) => {
                    bar.set_length(progress.total);
                    bar.set_position(progress.done);
                    bar.set_message(progress.stage);
                }
                None if progress.done < progress.total => {
                    eprintln!("fsck: checking {}", progress.stage);
                }
                None => {}
            }
            return;
        };
        let started = *data_started.get_or_insert_with(Instant::now);
        let so_far = format!(
            "{}: {} of {}",
            progress.stage,
            human_bytes(read),
            human_bytes(to_read)
        );
        match &bar {
            Some(bar) => {
                let elapsed = started.elapsed().as_secs_f64();
                // Too early, the rate says nothing yet.
                let left = match read {
                    0 => String::new(),
                    _ if elapsed < 2.0 => String::new(),
                    _ => format!(
                        ", {:.0} s left",
                        elapsed * to_read.saturating_sub(read) as f64 / read as f64
                    ),
                };
                bar.set_message(format!("{so_far}{left}"));
            }
            None if last_line.is_none_or(|at| at.elapsed() >= PLAIN_PROGRESS_EVERY) => {
                last_line = Some(Instant::now());
                eprintln!("fsck: {so_far} read");
            }
            None => {}
        }
    };
    let outcome = fsck_with(Arc::new(device), FsckOptions { data }, &mut show);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report =
        outcome.map_err(|error| Failure::operational(format!("{}: {error}", image.display())))?;
    let code = if report.is_clean() {
        CLEAN
    } else {
        ERRORS_LEFT
    };
    if as_json {
        println!("{}", to_json(image, &report, code));
    } else {
        print_text(image, &report);
    }
    Ok(code)
}

fn print_text(image: &Path, report: &FsckReport) {
    let superblock = &report.superblock;
    println!(
        "{}: vigilfs UUID {} (using the {})",
        image.display(),
        superblock.uuid,
        report.superblock_source
    );
    if let Some(trees) = &report.trees {
        let keys: Vec<String> = keys_per_tree(trees)
            .into_iter()
            .map(|(tree, keys)| format!("{tree} {keys}"))
            .collect();
        println!(
            "b-trees: {} nodes; keys: {}",
            trees.nodes.len(),
            keys.join(", ")
        );
    }
    if let Some(names) = &report.namespace {
        println!(
            "namespace: {} inodes, {} directory entries, {} attributes, {} extents ({} blocks)",
            names.inodes, names.dirents, names.attributes, names.extents, names.extent_blocks
        );
    }
    if let Some(space) = &report.space {
        println!(
            "space: {} reverse-map records; {} blocks used, {} free of {}",
            space.records, space.used_blocks, space.free_blocks, space.region_blocks
        );
    }
    if let Some(media) = &report.media {
        let mut line = format!(
            "media: {} bad blocks listed, {} poisoned runs",
            media.bad_blocks,
            media.poisoned.len()
        );
        if let Some(bytes) = media.data_bytes_checked {
            line.push_str(&format!(
                "; data: {} checked, {} bad blocks",
                human_bytes(bytes),
                media.data_failures
            ));
        }
        println!("{line}");
    }
    if let Some(log) = &report.event_log {
        let ids = log.ids.map_or("none".to_string(), |(oldest, newest)| {
            format!("ids {oldest}..={newest}")
        });
        println!(
            "event log: {} of {} slots hold records ({ids}), ids reserved through {}{}",
            log.records,
            log.slots,
            log.reserved_through
                .map_or("? (no valid header)".to_string(), |id| id.to_string()),
            if log.unreadable > 0 {
                format!(", {} unreadable slots", log.unreadable)
            } else {
                String::new()
            }
        );
    }
    for problem in &report.problems {
        println!("ERROR {}: {}", problem.structure, problem.message);
    }
    // The error record's note is the rows below.
    for (structure, message) in notes(report) {
        if structure != ERROR_RECORD_NOTE {
            println!("note  {structure}: {message}");
        }
    }
    for (label, value) in
        status_command::error_record_rows(&error_record_json(&superblock.error_record))
    {
        println!("{label:<17}{value}");
    }
    if report.is_clean() {
        // As e2fsck's "needs journal recovery": nothing is wrong, but the
        // image is not as its last mount left it until a mount replays.
        match report.superblock.state {
            FsState::Clean => println!("clean"),
            FsState::Dirty => println!(
                "clean, but not unmounted cleanly (a crash, a kill, a shutdown, or still \
                 mounted): the next mount replays its journal"
            ),
        }
    } else {
        // All of them, not only the lines listed (review 33).
        let count = report.problems_found;
        let noun = if count == 1 { "error" } else { "errors" };
        println!("{count} {noun} left uncorrected");
    }
}

/// The engine's notes, with the one about the error record (which the
/// engine words with Rust's Debug format) in the words `status` uses.
fn notes(report: &FsckReport) -> Vec<(String, String)> {
    let record = &report.superblock.error_record;
    report
        .notes
        .iter()
        .map(|note| {
            let message = if note.structure == ERROR_RECORD_NOTE {
                let mut message = format!("the filesystem has recorded {} errors", record.total);
                if record.last.is_some() {
                    message.push_str("; last: ");
                    message.push_str(&status_command::event_line(&event_json(&record.last)));
                }
                message
            } else {
                note.message.clone()
            };
            (note.structure.clone(), message)
        })
        .collect()
}

fn to_json(image: &Path, report: &FsckReport, code: u8) -> serde_json::Value {
    let items = |items: Vec<(&String, &String)>| {
        items
            .into_iter()
            .map(|(structure, message)| json!({ "structure": structure, "message": message }))
            .collect::<Vec<_>>()
    };
    let notes = notes(report);
    json!({
        "image": image.display().to_string(),
        "clean": report.is_clean(),
        "problems_found": report.problems_found,
        "unmounted_cleanly": report.superblock.state == FsState::Clean,
        "exit_code": code,
        "uuid": report.superblock.uuid.to_string(),
        "superblock_source": report.superblock_source.to_string(),
        "journal": report.journal.as_ref().map(|journal| json!({
            "valid_entries": journal.valid_entries,
            "invalid_entries": journal.invalid_entries,
            "durable_seq": journal.durable_seq,
            "last_seq": journal.last_seq,
            "newest_kept_seq": journal.newest_kept_seq,
            "cut_off": journal.cut_off,
            "cut_off_without_their_data": journal.unmet_claims,
            "failing_after_last_flush": journal.unverified_after_flush,
        })),
        "trees": report.trees.as_ref().map(|trees| json!({
            "nodes": trees.nodes.len(),
            "keys": keys_per_tree(trees)
                .into_iter()
                .map(|(tree, keys)| (tree.to_string(), json!(keys)))
                .collect::<serde_json::Map<_, _>>(),
        })),
        "namespace": report.namespace.as_ref().map(|names| json!({
            "inodes": names.inodes,
            "dirents": names.dirents,
            "attributes": names.attributes,
            "extents": names.extents,
            "extent_blocks": names.extent_blocks,
        })),
        "space": report.space.as_ref().map(|space| json!({
            "rmap_records": space.records,
            "used_blocks": space.used_blocks,
            "free_blocks": space.free_blocks,
            "pending_blocks": space.pending_blocks,
            "region_blocks": space.region_blocks,
        })),
        "media": report.media.as_ref().map(|media| json!({
            "bad_blocks": media.bad_blocks,
            "bad": media.bad_runs.iter().map(|run| json!({
                "start": run.start,
                "blocks": run.blocks,
                "since": run.since,
                "cause": run.cause.name(),
            })).collect::<Vec<_>>(),
            "poisoned": media.poisoned.iter().map(|(run, paths)| json!({
                "ino": run.ino,
                "paths": paths,
                "first_block": run.first,
                "blocks": run.blocks,
                "device_block": run.physical,
                "since": run.since,
                "cause": run.cause.name(),
            })).collect::<Vec<_>>(),
            "data_bytes_checked": media.data_bytes_checked,
            "data_failures": media.data_failures,
        })),
        "event_log": report.event_log.as_ref().map(|log| json!({
            "slots": log.slots,
            "records": log.records,
            "oldest_id": log.ids.map(|(oldest, _)| oldest),
            "newest_id": log.ids.map(|(_, newest)| newest),
            "reserved_through": log.reserved_through,
            "unreadable_slots": log.unreadable,
        })),
        "errors_recorded": report.superblock.error_record.total,
        "error_record": error_record_json(&report.superblock.error_record),
        "problems": items(report.problems.iter().map(|p| (&p.structure, &p.message)).collect()),
        "notes": items(notes.iter().map(|(structure, message)| (structure, message)).collect()),
    })
}
