//! Media failures as JSON: owners of a device range, what notify-failure
//! did, a scrub's summary, and the `media` part of the status report.
//! Field names are stable; new fields may be added, none renamed or
//! removed.
//!
//! ```text
//! owner     {device_offset, device_length, kind}   kind: file | node | journal
//!           | superblock | event_log | free | bad | unused; then per kind
//!           file: ino, generation, file_offset, file_length, paths [..],
//!                 unwritten, poisoned
//!           node: tree, level, block       journal: live      superblock: copy
//! outcome   {kind, blocks, healed, lost, why}   kind: healed | lost | partly
//!           | marked_bad | unmovable | unused | already_known | not_confirmed
//! report    {device_offset, device_length, origin, queued, owners_hit,
//!            healed_blocks, lost_blocks, records_unsaved (null, or why
//!            the bad blocks and lost data hold for this mount only),
//!            owners [owner + {outcome}]}
//! summary   {bytes, findings, owners_hit, healed_blocks, lost_blocks,
//!            unreadable, unverified_extents, poisoned_runs, elapsed_seconds, complete,
//!            resumed_from, stopped_at}
//!           (cursors: null or {phase, block})
//! media     {bad_blocks, bad [{start, blocks}], poisoned_runs,
//!            poisoned [{ino, first_block, blocks, device_block, since, cause}],
//!            notices {received, parked, overflowed, merged, waiting, handled},
//!            healed_blocks, lost_blocks,
//!            scrub {running (null or {phase, bytes, total_bytes, findings}),
//!                   resume_at, last (null or summary + {ended}), interval_seconds}}
//! ```

use serde_json::{json, Value};
use vigilfs::failure::{Outcome, Owner, OwnerKind};
use vigilfs::fs::{FailureReport, MediaStatus, ScrubSummary};
use vigilfs::scrub::Cursor;

/// One owner.
pub fn owner_json(owner: &Owner) -> Value {
    let mut value = json!({
        "device_offset": owner.range.start,
        "device_length": owner.range.len(),
        "kind": owner.kind.name(),
    });
    let extra = match &owner.kind {
        OwnerKind::File {
            ino,
            generation,
            file_offset,
            paths,
            paths_unreadable,
            unwritten,
            poisoned,
        } => json!({
            "ino": ino,
            "generation": generation,
            "file_offset": file_offset,
            "file_length": owner.range.len(),
            "paths": paths,
            "paths_unreadable": paths_unreadable,
            "unwritten": unwritten,
            "poisoned": poisoned,
        }),
        OwnerKind::Node { tree, level, block } => json!({
            "tree": tree.name(),
            "level": level,
            "block": block,
        }),
        OwnerKind::Journal { live } => json!({ "live": live }),
        OwnerKind::Superblock { copy } => json!({ "copy": copy.to_string() }),
        OwnerKind::Free | OwnerKind::Bad | OwnerKind::Unused | OwnerKind::EventLog => json!({}),
    };
    if let (Value::Object(value), Value::Object(extra)) = (&mut value, extra) {
        value.extend(extra);
    }
    value
}

/// What became of an owner.
pub fn outcome_json(outcome: &Outcome) -> Value {
    let (kind, blocks, healed, lost, why) = match outcome {
        Outcome::Healed { blocks } => ("healed", *blocks, *blocks, 0, None),
        Outcome::Lost { blocks, why } => ("lost", *blocks, 0, *blocks, Some(why.clone())),
        Outcome::Partly { healed, lost } => ("partly", healed + lost, *healed, *lost, None),
        Outcome::MarkedBad => ("marked_bad", 0, 0, 0, None),
        Outcome::Unused => ("unused", 0, 0, 0, None),
        Outcome::Unmovable { blocks, why } => ("unmovable", *blocks, 0, 0, Some(why.clone())),
        Outcome::RewriteSuperblock => ("healed", 1, 1, 0, None),
        Outcome::AlreadyKnown => ("already_known", 0, 0, 0, None),
        Outcome::NotConfirmed => ("not_confirmed", 0, 0, 0, None),
    };
    json!({ "kind": kind, "blocks": blocks, "healed": healed, "lost": lost, "why": why })
}

/// What notify-failure did.
pub fn failure_report_json(report: &FailureReport) -> Value {
    let owners: Vec<Value> = report
        .handled
        .iter()
        .map(|handled| {
            let mut owner = owner_json(&handled.owner);
            owner["outcome"] = outcome_json(&handled.outcome);
            owner
        })
        .collect();
    json!({
        "device_offset": report.range.start,
        "device_length": report.range.len(),
        "origin": report.origin.to_string(),
        "queued": report.queued,
        "owners_hit": report.owners_hit(),
        "healed_blocks": report.healed_blocks(),
        "lost_blocks": report.lost_blocks(),
        "records_unsaved": report.unrecorded,
        "owners": owners,
    })
}

fn cursor_json(cursor: Option<Cursor>) -> Value {
    match cursor {
        None => Value::Null,
        Some(cursor) => json!({ "phase": cursor.phase.name(), "block": cursor.block }),
    }
}

/// A scrub's summary.
pub fn scrub_summary_json(summary: &ScrubSummary) -> Value {
    json!({
        "bytes": summary.bytes,
        "findings": summary.findings,
        "owners_hit": summary.owners_hit,
        "healed_blocks": summary.healed_blocks,
        "lost_blocks": summary.lost_blocks,
        "unreadable": summary.unreadable,
        "unverified_extents": summary.unverified,
        "poisoned_runs": summary.poisoned_runs,
        "lost_data_runs": summary.lost_data_runs,
        "elapsed_seconds": summary.elapsed.as_secs_f64(),
        "complete": summary.complete,
        "resumed_from": cursor_json(summary.resumed_from),
        "stopped_at": cursor_json((!summary.complete).then_some(summary.cursor)),
    })
}

/// The `media` part of the status report.
pub fn media_status_json(media: &MediaStatus) -> Value {
    let scrub = &media.scrub;
    json!({
        "bad_blocks": media.bad_blocks,
        "bad": media.bad.iter().map(|run| json!({ "start": run.start, "blocks": run.blocks }))
            .collect::<Vec<_>>(),
        "poisoned_runs": media.poisoned_runs,
        "poisoned": media.poisoned.iter().map(|run| json!({
            "ino": run.ino,
            "first_block": run.first,
            "blocks": run.blocks,
            "device_block": run.physical,
            "since": run.since,
            "cause": run.cause.name(),
        })).collect::<Vec<_>>(),
        "notices": {
            "received": media.notices.received,
            "parked": media.notices.parked,
            "overflowed": media.notices.overflowed,
            "merged": media.notices.merged,
            "waiting": media.notices.waiting,
            "handled": media.notices.handled,
        },
        "healed_blocks": media.healed_blocks,
        "lost_blocks": media.lost_blocks,
        "scrub": {
            "running": scrub.running.map(|progress| json!({
                "phase": progress.cursor.phase.name(),
                "bytes": progress.bytes,
                "total_bytes": progress.total_bytes,
                "findings": progress.findings,
            })),
            "resume_at": cursor_json(scrub.resume_at),
            "last": scrub.last.map(|(summary, ended)| {
                let mut last = scrub_summary_json(&summary);
                last["ended"] = json!(ended);
                last
            }),
            "interval_seconds": scrub.interval.map(|interval| interval.as_secs()),
        },
    })
}
