//! The status report as JSON: what `vigilfs status --json` prints and what
//! the control server sends. Field names are stable; new fields may be
//! added, none renamed or removed.
//!
//! ```text
//! mountpoint, image, pid, owner_uid       the mount
//! mountpoints      added by `vigilfs status`: every mount point of the
//!                  filesystem now (a second mount of the image is one
//!                  more); `mountpoint` is the one asked about when the
//!                  one the mount was started on is gone
//! image_identity   {device, inode} of the image file the mount serves
//! image_moved      the path `image` no longer leads to that file (renamed,
//!                  deleted or replaced since the mount)
//! mount_options    the `-o` options it was started with (a remount checks
//!                  what cannot change against them)
//! state            running | frozen | read-only | shut-down
//! state_reason     why read-only or shut down; while running (errors=continue),
//!                  that the journal failed, if it did (null otherwise)
//! mounted_read_only  added by `vigilfs status` for the mount point it
//!                  was given: the kernel refuses writes there (`remount,ro`,
//!                  a read-only bind), whatever the daemon's state
//! read_only_view   added likewise: only this mount point is read-only
//!                  (a read-only bind; `remount,bind,rw` undoes it)
//! errors_policy    continue | remount-ro | panic
//! settings         {cache_bytes, dirty_limit_bytes, writeback_interval_seconds,
//!                   atime, directory_atime}:
//!                  as mounted or changed since by a remount
//! recovered        this mount replayed the journal (unclean stop before)
//! orphans_purged   orphans deleted at mount (or at remount,rw of a read-only one)
//! space            {block_size, total_blocks, free_blocks, pending_blocks, available_blocks,
//!                   bad_blocks}
//! dirty_bytes, cached_bytes, dirty_nodes
//! journal          {next_seq, last_seq, written_seq, durable_seq,
//!                   open_seq, free_blocks, total_blocks, pins, blocked,
//!                   failed, reclaim_failures, last_reclaim_failure,
//!                   reclaim_failing}
//! writeback_error  null or {errno, name, message, reported}: the latest this
//!                  mount, peeked (consumes nothing); reported: a syncfs has
//!                  returned it
//! lost_mapped      {files, bytes}: data written but lost before it reached
//!                  the device: the kernel's write-back of a shared mapping
//!                  of it was refused, or writeback was failing when a mount
//!                  ended (`unsynced` lists it); reads of it, and fsyncs,
//!                  fail until it is written again
//! errors           {total, first, last, per_kind}: the persistent record;
//!                  first/last null or {time, errno, name, inode, block,
//!                  kind, origin}; per_kind {KIND: {count, last_time}} for
//!                  writeback, read, metadata, checksum, journal, media,
//!                  other
//! open_files, mount_count
//! events           {newest_id, written_id, mount_first_id, persistent, slots,
//!                   records, lost_errors, held_errors, write_failures,
//!                   last_write_failure, unavailable}: the event log
//!                  (`vigilfs events`); write_failures counts failed writes
//!                  of the log itself, never logged into it
//! fault_rules      [{id, rule, matched, injected, bad_blocks_remaining,
//!                   provisioned_blocks_used}]  (rule: the text form; file
//!                   rules, `file ...`, have the first four)
//! crash_lab        {crashable, drop_flushes, unflushed_bytes, power_cuts,
//!                   failed_boot}: failed_boot null, or why the latest
//!                  cut's boot could not mount the image; the fields above
//!                  then describe the mount as it stood when the power went
//! media            the bad-block list, poisoned data, failure notices and
//!                  scrub (fields in `media_report`)
//! ```

use serde_json::{json, Map, Value};
use vigilfs::device::{FaultPlan, RuleStatus};
use vigilfs::format::{ErrorEvent, ErrorKind, ErrorRecord};
use vigilfs::fs::faults::FileRuleStatus;
use vigilfs::fs::{Filesystem, LifeState};

use super::media_report::media_status_json;
use super::{describe_errno, errno_name};

/// A fault rule's JSON form.
pub fn rule_json(rule: &RuleStatus) -> Value {
    json!({
        "id": rule.id.0,
        "rule": rule.rule.to_string(),
        "matched": rule.matched,
        "injected": rule.injected,
        "bad_blocks_remaining": rule.bad_blocks_remaining,
        "provisioned_blocks_used": rule.provisioned_blocks_used,
    })
}

/// Who may see the paths of file rules: they name files, which only root
/// and the mount's owner may learn through the control socket (the fault
/// log is theirs alone for the same reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulePaths {
    /// Shown as written.
    Shown,
    /// Each replaced by `(hidden)`.
    Hidden,
}

/// A file rule's JSON form (its text starts with `file`).
pub fn file_rule_json(rule: &FileRuleStatus, paths: RulePaths) -> Value {
    let mut shown = rule.rule.clone();
    if paths == RulePaths::Hidden && shown.path.is_some() {
        shown.path = Some("(hidden)".to_string());
    }
    json!({
        "id": rule.id.0,
        "rule": shown.to_string(),
        "matched": rule.matched,
        "injected": rule.injected,
    })
}

/// Every rule of the mount, the device plan's and the file rules, by id.
pub fn all_rules_json(fs: &Filesystem, plan: &FaultPlan, paths: RulePaths) -> Vec<Value> {
    let mut rules: Vec<(u64, Value)> = plan
        .rules()
        .iter()
        .map(|rule| (rule.id.0, rule_json(rule)))
        .chain(
            fs.file_rules()
                .iter()
                .map(|rule| (rule.id.0, file_rule_json(rule, paths))),
        )
        .collect();
    rules.sort_by_key(|(id, _)| *id);
    rules.into_iter().map(|(_, rule)| rule).collect()
}

/// One recorded error as JSON: null, or `{time, errno, name, inode,
/// block, kind, origin}` (`time` in seconds since the epoch, `name` the
/// errno's symbolic name or null).
pub fn event_json(event: &Option<ErrorEvent>) -> Value {
    match event {
        None => Value::Null,
        Some(event) => json!({
            "time": event.time,
            "errno": event.errno,
            "name": errno_name(event.errno),
            "inode": event.inode,
            "block": event.block,
            "kind": event.kind.name(),
            "origin": event.origin.as_str(),
        }),
    }
}

/// The persistent error record as JSON: `{total, first, last, per_kind}`
/// (`status` and `fsck --json` both show it so).
pub fn error_record_json(record: &ErrorRecord) -> Value {
    let per_kind: Map<String, Value> = ErrorKind::ALL
        .iter()
        .map(|kind| {
            let counter = record.counter(*kind);
            (
                kind.name().to_string(),
                json!({ "count": counter.count, "last_time": counter.last_time }),
            )
        })
        .collect();
    json!({
        "total": record.total,
        "first": event_json(&record.first),
        "last": event_json(&record.last),
        "per_kind": per_kind,
    })
}

/// The status of `fs` (and its fault plan) as JSON; `extra` fields (the
/// mount point, the image...) come first.
pub fn status_json(
    fs: &Filesystem,
    plan: &FaultPlan,
    extra: &Map<String, Value>,
    paths: RulePaths,
) -> Value {
    let status = fs.status();
    let block_size = fs.statfs().map(|statfs| statfs.block_size).ok();
    let reason = match &status.state {
        LifeState::ReadOnly(why) | LifeState::ShutDown(why) => Some(why.clone()),
        // Under errors=continue a failed journal leaves the state running
        // while no metadata change can be made: said here, not only in
        // the journal's row (review 51).
        LifeState::Running | LifeState::Frozen if status.journal.failed => Some(
            "the journal failed (errors=continue keeps the mount running): every metadata \
             change (create, rename, a file's size, writeback) fails with EIO until it is \
             unmounted and mounted again"
                .to_string(),
        ),
        LifeState::Running | LifeState::Frozen => None,
    };
    let journal = &status.journal;
    let mut out = extra.clone();
    if let (Some(image), Some(identity)) = (
        extra.get("image").and_then(Value::as_str),
        extra.get("image_identity"),
    ) {
        let now = crate::mountinfo::file_identity(std::path::Path::new(image)).ok();
        let served = (identity["device"].as_u64(), identity["inode"].as_u64());
        let moved = now.map(|(device, inode)| (Some(device), Some(inode))) != Some(served);
        out.insert("image_moved".into(), json!(moved));
    }
    let fields = json!({
        "state": status.state.name(),
        "state_reason": reason,
        "errors_policy": status.settings.errors_policy.to_string(),
        "settings": {
            "cache_bytes": status.settings.cache_bytes,
            "dirty_limit_bytes": status.settings.dirty_limit_bytes,
            "writeback_interval_seconds": status.settings.writeback_interval.as_secs_f64(),
            "atime": status.settings.atime.name(),
            "directory_atime": status.settings.directory_atime,
        },
        "recovered": status.recovered,
        "orphans_purged": status.orphans_purged,
        "space": {
            "block_size": block_size,
            "total_blocks": status.total_blocks,
            "free_blocks": status.space.free_blocks,
            "pending_blocks": status.space.pending_blocks,
            "available_blocks": status.space.data_available,
            "bad_blocks": status.space.bad_blocks,
        },
        "dirty_bytes": status.dirty_bytes,
        "cached_bytes": status.cached_bytes,
        "dirty_nodes": status.dirty_nodes,
        "journal": {
            "next_seq": journal.next_seq,
            "last_seq": journal.last_seq,
            "written_seq": journal.written_seq,
            "durable_seq": journal.durable_seq,
            "open_seq": journal.open_seq,
            "free_blocks": journal.free_blocks,
            "total_blocks": journal.total_blocks,
            "pins": journal.pins,
            "blocked": journal.blocked,
            "failed": journal.failed,
            "reclaim_failures": journal.reclaim_failures,
            "last_reclaim_failure": journal.last_reclaim_failure,
            "reclaim_failing": journal.reclaim_failing,
        },
        "writeback_error": status.writeback_error.map(|errno| json!({
            "errno": errno,
            "name": errno_name(errno),
            "message": describe_errno(errno),
            "reported": status.writeback_error_reported,
        })),
        "lost_mapped": {
            "files": status.lost_mapped_files,
            "bytes": status.lost_mapped_bytes,
        },
        "errors": error_record_json(&status.error_record),
        "open_files": status.open_files,
        "mount_count": status.mount_count,
        "events": {
            "newest_id": status.events.newest_id,
            "written_id": status.events.written_id,
            "mount_first_id": status.events.mount_first_id,
            "persistent": status.events.persistent,
            "slots": status.events.slots,
            "records": status.events.records,
            "lost_errors": status.events.lost_errors,
            "held_errors": status.events.held_errors,
            "write_failures": status.events.write_failures,
            "last_write_failure": status.events.last_write_failure,
            "unavailable": status.events.unavailable,
        },
        "fault_rules": all_rules_json(fs, plan, paths),
        "media": media_status_json(&status.media),
    });
    if let Value::Object(fields) = fields {
        out.extend(fields);
    }
    Value::Object(out)
}
