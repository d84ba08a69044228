//! Events as JSON: the stable form `vigilfs events --json` prints, the
//! control server streams and hooks receive on stdin, and the one-line
//! human form made from it. Field names are stable; new fields may be
//! added, none renamed or removed; every field is always there, `null`
//! when it does not apply.
//!
//! ```text
//! id            event id (increasing across mounts, never reused);
//!               null for what a stream says about itself (running, and
//!               lost for ids it could not read); of several error events
//!               folded into one (`--merge`), the last one's
//! first_id      folded error events: the first one's id (its object,
//!               range and origin are the ones shown); else null
//! files         folded error events: how many files they name (0 when
//!               none does), so one file is not taken for all; else null
//! time          when the first thing it covers happened (RFC 3339, UTC)
//! last_time     when the last one did
//! kind          error | lost | running | mount | recovery | errors_action
//!               | freeze | thaw | faults | shutdown | unmount | settings
//! errno         the (first) error's errno by name ("EIO"), or its number
//!               as text when it has no name
//! subtypes      list of: writeback read metadata data_lost checksum
//!               journal media shutdown
//! count         errors merged (error), lost (lost), of the mount (shutdown,
//!               unmount); null when a loss cannot be counted
//! inode, generation, path     the object (path: the one the file had
//!               when the mount serving it announced the event, for its
//!               newest 4096 events; else its path now, resolved by the
//!               mount when it can be; else null)
//! deleted       true when the file named by inode is deleted when the
//!               event is read (it may still be open), false when not, null
//!               without an inode or when no mount could say
//! offset, length              the file byte range
//! device_offset, device_length the device byte range
//! tree, level, block          the b-tree node
//! origin        where an error was seen (error, lost)
//! action        what was done (errors_action, faults, shutdown, settings)
//! last_errno, last_inode      the last error merged in
//! errors_total  errors counted in every event up to this one, ever
//! lost_first_id, lost_last_id ids missing (lost), or skipped after an
//!               unclean stop (mount)
//! recovered     mount: the journal is replayed
//! mount_count   mount: the superblock's mount count
//! orphans       recovery: orphans deleted
//! rules_active  faults: fault rules on after the change
//! newest_id     running: the newest id when the stream started
//! ```

use serde_json::{json, Value};
use vigilfs::format::event_log::{EventRecord, RecordKind};

use super::errno_name;
use crate::status_command::utc;

const SUBTYPE_NAMES: [&str; 8] = [
    "writeback",
    "read",
    "metadata",
    "data_lost",
    "checksum",
    "journal",
    "media",
    "shutdown",
];

/// Every field name, in output order.
pub const FIELDS: [&str; 32] = [
    "id",
    "first_id",
    "files",
    "time",
    "last_time",
    "kind",
    "errno",
    "subtypes",
    "count",
    "inode",
    "generation",
    "path",
    "deleted",
    "offset",
    "length",
    "device_offset",
    "device_length",
    "tree",
    "level",
    "block",
    "origin",
    "action",
    "last_errno",
    "last_inode",
    "errors_total",
    "lost_first_id",
    "lost_last_id",
    "recovered",
    "mount_count",
    "orphans",
    "rules_active",
    "newest_id",
];

/// Nanoseconds since the epoch as RFC 3339 UTC with microseconds.
pub fn rfc3339(nanoseconds: u64) -> String {
    let date = utc(nanoseconds / 1_000_000_000);
    let micros = nanoseconds % 1_000_000_000 / 1000;
    format!(
        "{}.{micros:06}Z",
        date.trim_end_matches(" UTC").replacen(' ', "T", 1)
    )
}

fn errno_text(errno: i32) -> Value {
    if errno == 0 {
        return Value::Null;
    }
    json!(errno_name(errno).map_or_else(|| errno.to_string(), str::to_string))
}

/// The names of the subtype bits set in `bits`.
pub fn subtype_names(bits: u32) -> Vec<&'static str> {
    SUBTYPE_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bits & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// An object with every field null.
pub fn empty_event(kind: &str) -> serde_json::Map<String, Value> {
    let mut map: serde_json::Map<String, Value> = FIELDS
        .iter()
        .map(|field| ((*field).to_string(), Value::Null))
        .collect();
    map.insert("kind".into(), json!(kind));
    map.insert("subtypes".into(), json!([]));
    map
}

/// A record as JSON; `path` is the inode's path when resolved, `deleted`
/// whether its file was deleted since, when that is known.
pub fn record_json(record: &EventRecord, path: Option<&str>, deleted: Option<bool>) -> Value {
    let mut map = empty_event(record.kind.name());
    let mut set = |field: &str, value: Value| {
        map.insert(field.to_string(), value);
    };
    set("id", json!(record.id));
    set("time", json!(rfc3339(record.first_time_ns)));
    set("last_time", json!(rfc3339(record.last_time_ns)));
    set("errno", errno_text(record.errno));
    set("subtypes", json!(subtype_names(record.subtypes)));
    let counts = matches!(
        record.kind,
        RecordKind::Error | RecordKind::Lost | RecordKind::Shutdown | RecordKind::Unmount
    );
    if counts {
        set("count", json!(record.count));
    }
    set("inode", json!(record.inode));
    set("generation", json!(record.generation));
    set("path", json!(path));
    if record.inode.is_some() {
        set("deleted", json!(deleted));
    }
    if let Some((offset, length)) = record.range {
        set("offset", json!(offset));
        set("length", json!(length));
    }
    if let Some((offset, length)) = record.device_range {
        set("device_offset", json!(offset));
        set("device_length", json!(length));
    }
    if let Some(node) = record.node {
        set("tree", json!(node.tree.as_str()));
        set("level", json!(node.level));
        set("block", json!(node.block));
    }
    let text = record.text.as_str();
    match record.kind {
        RecordKind::Error | RecordKind::Lost => {
            set("origin", json!(text));
            set("last_errno", errno_text(record.last_errno));
            set("last_inode", json!(record.last_inode));
        }
        RecordKind::ErrorsAction
        | RecordKind::Faults
        | RecordKind::Shutdown
        | RecordKind::Settings => {
            set("action", json!(text));
        }
        _ => {}
    }
    if matches!(record.kind, RecordKind::Error | RecordKind::Lost) {
        set("errors_total", json!(record.errors_total));
    }
    if let Some((first, last)) = record.gap {
        set("lost_first_id", json!(first));
        set("lost_last_id", json!(last));
    }
    match record.kind {
        RecordKind::Mount => {
            set("recovered", json!(record.flag));
            set("mount_count", json!(record.value));
        }
        RecordKind::Recovery => set("orphans", json!(record.value)),
        RecordKind::Faults => set("rules_active", json!(record.value)),
        _ => {}
    }
    Value::Object(map)
}

/// What a reader says about ids it could not read: `count` errors when
/// known.
pub fn gap_json(first: u64, last: u64, count: Option<u64>, why: &str) -> Value {
    let mut map = empty_event("lost");
    map.insert("lost_first_id".into(), json!(first));
    map.insert("lost_last_id".into(), json!(last));
    map.insert("count".into(), json!(count));
    map.insert("origin".into(), json!(why));
    Value::Object(map)
}

/// The `lost` event for ids `first..=last`, which a reader found missing
/// right before `next`. `errors_before` is the running error sum up to the
/// record before the gap, when the reader knows it: then the count is
/// exact. Ids a mount skipped after an unclean stop (`next` is that MOUNT
/// record) cannot be counted.
pub fn gap_event(first: u64, last: u64, next: &EventRecord, errors_before: Option<u64>) -> Value {
    let crash =
        next.kind == RecordKind::Mount && next.gap.is_some_and(|(_, skipped)| skipped >= last);
    if crash {
        return gap_json(
            first,
            last,
            None,
            "skipped: reserved by the mount before, which ended without unmounting; \
             events it had not yet written, if any, are lost",
        );
    }
    let own = if matches!(next.kind, RecordKind::Error | RecordKind::Lost) {
        next.count
    } else {
        0
    };
    let count = errors_before.and_then(|before| next.errors_total.checked_sub(own + before));
    gap_json(
        first,
        last,
        count,
        "no longer in the log (overwritten, damaged, or never written)",
    )
}

/// The first line of a live stream.
pub fn running_json(newest_id: u64) -> Value {
    let mut map = empty_event("running");
    map.insert("newest_id".into(), json!(newest_id));
    Value::Object(map)
}

fn field<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    event.get(name).filter(|value| !value.is_null())
}

fn number(event: &Value, name: &str) -> Option<u64> {
    field(event, name).and_then(Value::as_u64)
}

/// One line for people.
pub fn human_line(event: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(time) = field(event, "time").and_then(Value::as_str) {
        parts.push(time.replacen('T', " ", 1));
    }
    parts.push(match (number(event, "first_id"), number(event, "id")) {
        (Some(first), Some(id)) => format!("#{first}..#{id}"),
        (None, Some(id)) => format!("#{id}"),
        _ => "#-".into(),
    });
    parts.push(
        field(event, "kind")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
    );
    if let Some(errno) = field(event, "errno").and_then(Value::as_str) {
        parts.push(errno.to_string());
    }
    if let Some(subtypes) = field(event, "subtypes").and_then(Value::as_array) {
        if !subtypes.is_empty() {
            let names: Vec<&str> = subtypes.iter().filter_map(Value::as_str).collect();
            parts.push(format!("[{}]", names.join(",")));
        }
    }
    let kind = field(event, "kind").and_then(Value::as_str);
    let count = field(event, "count").and_then(Value::as_u64);
    if let Some(files) = number(event, "files") {
        // Folded: what is shown next is the first error's, not all of them.
        let count = count.unwrap_or(0);
        parts.push(match files {
            0 | 1 => format!("x{count}, the first:"),
            files => format!("x{count} in {files} files, the first:"),
        });
    }
    if let Some(inode) = number(event, "inode") {
        let mut object = format!("inode {inode}");
        if let Some(generation) = number(event, "generation") {
            object.push_str(&format!(" gen {generation}"));
        }
        if let Some(path) = field(event, "path").and_then(Value::as_str) {
            object.push_str(&format!(" {path}"));
        }
        if field(event, "deleted").and_then(Value::as_bool) == Some(true) {
            // "now": the file's state when the event is read, not when it
            // happened (review 57 took "(deleted)" for the latter).
            object.push_str(" (now deleted)");
        }
        parts.push(object);
    }
    if let (Some(offset), Some(length)) = (number(event, "offset"), number(event, "length")) {
        parts.push(format!("bytes {offset}+{length}"));
    }
    match count {
        _ if number(event, "files").is_some() => {}
        // Of a shutdown or unmount: the errors of the mount.
        Some(count) if matches!(kind, Some("shutdown" | "unmount")) => {
            parts.push(format!(
                "{count} error{} this mount",
                if count == 1 { "" } else { "s" }
            ));
        }
        Some(count) if count != 1 => {
            parts.push(format!("x{count}"));
            // A stream of one error across files (writeback retries).
            if let (Some(first), Some(last)) = (number(event, "inode"), number(event, "last_inode"))
            {
                if first != last {
                    parts.push(format!("(the last in inode {last})"));
                }
            }
        }
        None if kind == Some("lost") => {
            parts.push("errors among them unknown".into());
        }
        _ => {}
    }
    if let (Some(offset), Some(length)) = (
        number(event, "device_offset"),
        number(event, "device_length"),
    ) {
        parts.push(format!("device {offset}+{length}"));
    }
    if let Some(tree) = field(event, "tree").and_then(Value::as_str) {
        let mut node = format!("tree {tree}");
        if let Some(level) = number(event, "level") {
            node.push_str(&format!(" level {level}"));
        }
        if let Some(block) = number(event, "block") {
            node.push_str(&format!(" block {block}"));
        }
        parts.push(node);
    }
    if let (Some(first), Some(last)) = (
        number(event, "lost_first_id"),
        number(event, "lost_last_id"),
    ) {
        parts.push(format!("ids {first}..{last} missing"));
    }
    if let Some(recovered) = field(event, "recovered").and_then(Value::as_bool) {
        parts.push(if recovered {
            "recovering (unclean stop)".to_string()
        } else {
            "clean".to_string()
        });
    }
    if let Some(orphans) = number(event, "orphans") {
        parts.push(format!("{orphans} orphans deleted"));
    }
    if let Some(rules) = number(event, "rules_active") {
        parts.push(format!("{rules} rules active"));
    }
    if let Some(newest) = number(event, "newest_id") {
        parts.push(format!("listening; newest id {newest}"));
    }
    for name in ["action", "origin"] {
        if let Some(text) = field(event, name).and_then(Value::as_str) {
            if !text.is_empty() {
                parts.push(format!("({text})"));
            }
        }
    }
    parts.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigilfs::format::event_log::{InlineText, NodeRef};

    #[test]
    fn times_are_rfc3339_with_microseconds() {
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
    }

    #[test]
    fn every_field_is_present_and_absent_ones_are_null() {
        let mut record = EventRecord::new(9, RecordKind::Error, 1_700_000_000_000_000_000);
        record.errno = libc::EIO;
        record.subtypes = 0b10010;
        record.count = 2;
        record.inode = Some(12);
        record.generation = Some(3);
        record.range = Some((4096, 4096));
        record.node = Some(NodeRef {
            tree: InlineText::new("extents"),
            level: None,
            block: 77,
        });
        let value = record_json(&record, Some("/a/b"), Some(false));
        for name in FIELDS {
            assert!(value.get(name).is_some(), "{name} missing");
        }
        assert_eq!(value["errno"], "EIO");
        assert_eq!(value["subtypes"], json!(["read", "checksum"]));
        assert_eq!(value["path"], "/a/b");
        assert_eq!(value["device_offset"], Value::Null);
        assert_eq!(value["level"], Value::Null);
        let line = human_line(&value);
        assert!(
            line.contains("#9  error  EIO  [read,checksum]  inode 12 gen 3 /a/b"),
            "{line}"
        );
        assert!(line.contains("bytes 4096+4096  x2"), "{line}");
        assert!(line.contains("tree extents block 77"), "{line}");
    }

    /// An unmount's count is the mount's errors, said in words (the line
    /// read "unmount  x0", as if zero unmounts had merged).
    #[test]
    fn an_unmount_line_says_how_many_errors_the_mount_had() {
        let mut record = EventRecord::new(4, RecordKind::Unmount, 1_700_000_000_000_000_000);
        record.count = 0;
        let line = human_line(&record_json(&record, None, None));
        assert!(line.contains("0 errors this mount"), "{line}");
        assert!(!line.contains("x0"), "{line}");
    }

    /// Ids a mount skipped after an unclean stop cannot be counted: the
    /// line says so in words (it read "x? (not countable)").
    #[test]
    fn a_gap_of_unknown_size_says_so_in_words() {
        let line = human_line(&gap_json(3, 4096, None, "skipped: the mount before ended"));
        assert!(
            line.contains("lost  errors among them unknown  ids 3..4096 missing"),
            "{line}"
        );
        let counted = human_line(&gap_json(3, 9, Some(2), "no longer in the log"));
        assert!(counted.contains("x2  ids 3..9 missing"), "{counted}");
    }
}
