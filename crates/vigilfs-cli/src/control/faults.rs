//! The fault requests of the control server: rules added, removed,
//! cleared and listed, the fault log, and the lying disk.
//!
//! Two kinds of rules share one number space and one log: the device
//! plan's (`fail ...`, `flaky ...`, `delay ...`, `corrupt ...`: I/O by byte
//! range and class) and the engine's file rules (`file ...`: operations,
//! and data I/O of files matched by path). A request's rules are added all
//! or none: a batch with one bad rule adds nothing.

use serde_json::{json, Value};
use vigilfs::device::{FaultEffect, FaultLogEntry, FaultLogEvent, FaultPlan, FaultRule, RuleId};
use vigilfs::fs::faults::{FileRule, FileRuleStatus};
use vigilfs::fs::Filesystem;

use super::event_json::rfc3339;
use super::protocol::{ErrorKind, Response};
use super::report::{all_rules_json, file_rule_json, rule_json, RulePaths};
use crate::power_cut::PowerSwitch;

/// Most log entries one `fault_log` answer carries; the client asks again
/// from the last one for more.
pub const LOG_BATCH: usize = 1000;

/// A rule as sent: the device plan's or a file rule.
enum Parsed {
    Device(FaultRule),
    File(FileRule),
}

fn parse(text: &str) -> Result<Parsed, String> {
    let parsed = if text.split_whitespace().next() == Some("file") {
        text.parse::<FileRule>().map(Parsed::File)
    } else {
        text.parse::<FaultRule>().map(Parsed::Device)
    };
    parsed.map_err(|error| format!("`{text}`: {error}"))
}

fn bad_request(message: impl Into<String>) -> Response {
    Response::failure(ErrorKind::BadRequest, message, None)
}

/// How many rules are active, of both kinds.
fn active(fs: &Filesystem, plan: &FaultPlan) -> u64 {
    (plan.rules().len() + fs.file_rules().len()) as u64
}

/// Adds `rules`, all or none; then, if asked, drops the clean cached
/// data so the next reads reach the device and its rules.
pub fn add(fs: &Filesystem, plan: &FaultPlan, rules: &[String], drop_caches: bool) -> Response {
    let mut parsed = Vec::with_capacity(rules.len());
    let device_length = fs.device_length();
    for text in rules {
        match parse(text) {
            // A rule for bytes the device does not have never fires: the
            // user would test nothing and believe otherwise.
            Ok(Parsed::Device(rule))
                if rule
                    .scope
                    .range
                    .is_some_and(|range| range.end > device_length) =>
            {
                return bad_request(format!(
                    "`{text}`: the range reaches past the end of the device ({device_length} \
                     bytes)"
                ));
            }
            // A thin volume larger than the device never runs out (review
            // 44: --enospc-after 18446744073709551615 was taken).
            Ok(Parsed::Device(FaultRule {
                effect:
                    FaultEffect::ThinProvisioned {
                        block_size,
                        provisioned_blocks,
                    },
                ..
            })) if provisioned_blocks.saturating_mul(block_size) >= device_length => {
                return bad_request(format!(
                    "`{text}`: never runs out: the device has only {} blocks",
                    device_length / block_size.max(1)
                ));
            }
            Ok(rule) => parsed.push(rule),
            Err(message) => return bad_request(message),
        }
    }
    let mut added: Vec<(RuleId, bool)> = Vec::new();
    for rule in parsed {
        let outcome = match rule {
            Parsed::Device(rule) => plan.add_rule(rule).map(|id| (id, false)),
            Parsed::File(rule) => fs.add_file_rule(rule).map(|id| (id, true)),
        };
        match outcome {
            Ok(id) => added.push(id),
            Err(error) => {
                for (id, file) in added {
                    if file {
                        fs.remove_file_rule(id);
                    } else {
                        plan.remove_rule(id);
                    }
                }
                return bad_request(error.to_string());
            }
        }
    }
    let file_rules = fs.file_rules();
    let listed: Vec<Value> = added
        .iter()
        .filter_map(|&(id, file)| {
            if file {
                file_rules
                    .iter()
                    .find(|status| status.id == id)
                    .map(|status| file_rule_json(status, RulePaths::Shown))
            } else {
                plan.rule(id).map(|status| rule_json(&status))
            }
        })
        .collect();
    let active = active(fs, plan);
    for text in rules {
        fs.note_fault_rules(&format!("set {text}"), active);
    }
    if drop_caches {
        fs.drop_caches();
    }
    Response::success(json!({ "added": listed }))
}

/// Removes rule `id`, of either kind.
pub fn remove(fs: &Filesystem, plan: &FaultPlan, id: u64) -> Response {
    let removed = match plan.remove_rule(RuleId(id)) {
        Some(status) => Some((status.rule.to_string(), rule_json(&status))),
        None => fs
            .remove_file_rule(RuleId(id))
            .map(|status: FileRuleStatus| {
                (
                    status.rule.to_string(),
                    file_rule_json(&status, RulePaths::Shown),
                )
            }),
    };
    match removed {
        Some((text, listed)) => {
            fs.note_fault_rules(&format!("cleared {text}"), active(fs, plan));
            Response::success(json!({ "removed": [listed] }))
        }
        // Not a meaningless request: a rule that is gone (fired its limit,
        // cleared by someone else) is a lookup that failed.
        None => Response::failure(
            ErrorKind::Failed,
            format!("no fault rule with id {id}"),
            Some(libc::ENOENT),
        ),
    }
}

/// Removes every rule of both kinds, and stops dropping flushes.
pub fn clear(fs: &Filesystem, plan: &FaultPlan, power: Option<&PowerSwitch>) -> Response {
    let removed = all_rules_json(fs, plan, RulePaths::Shown);
    plan.clear();
    fs.clear_file_rules();
    let dropped_flushes = power.filter(|power| power.drops_flushes());
    if let Some(power) = dropped_flushes {
        power.set_drop_flushes(false);
    }
    // A clear that found nothing to clear changed nothing: no event (review
    // 57: every empty `inject --clear` logged "0 rules active").
    if !removed.is_empty() || dropped_flushes.is_some() {
        fs.note_fault_rules("cleared all", 0);
    }
    Response::success(json!({
        "removed": removed,
        "stopped_dropping_flushes": dropped_flushes.is_some(),
    }))
}

/// Every rule with its counters.
pub fn list(fs: &Filesystem, plan: &FaultPlan, power: Option<&PowerSwitch>) -> Response {
    Response::success(json!({
        "rules": all_rules_json(fs, plan, RulePaths::Shown),
        "drop_flushes": power.is_some_and(PowerSwitch::drops_flushes),
    }))
}

/// Makes the device acknowledge flushes without keeping anything, or stop;
/// an event says so, as for a rule (a lying disk explains lost data).
pub fn drop_flushes(
    fs: &Filesystem,
    plan: &FaultPlan,
    power: Option<&PowerSwitch>,
    enabled: bool,
) -> Response {
    match power {
        Some(power) => {
            // The event is made durable before the device starts lying,
            // or the cut that shows the lie would take the event with it.
            if enabled {
                fs.note_fault_rules("set drop-flushes", active(fs, plan));
                let _ = fs.event_log().persist();
                power.set_drop_flushes(true);
            } else {
                power.set_drop_flushes(false);
                fs.note_fault_rules("cleared drop-flushes", active(fs, plan));
            }
            Response::success(json!({ "drop_flushes": enabled }))
        }
        None => not_crashable("dropping flushes"),
    }
}

/// The refusal of a crash-lab request on a mount without `-o crashable`.
pub fn not_crashable(what: &str) -> Response {
    Response::failure(
        ErrorKind::BadRequest,
        format!(
            "{what} needs a crashable mount: mount with -o crashable (its device then holds \
             every write until a flush, which is what a power cut loses)"
        ),
        Some(libc::EOPNOTSUPP),
    )
}

/// One log entry as JSON: `{sequence, time, rule, event, ...}` with `event`
/// `set` (and `rule_text`), `cleared`, `power_cut` (and `cut`, its number)
/// or `fired` (and `operation`, `class`, `inode`, `path`, `offset`,
/// `length`, `errno`, `errno_name`, `delay_us`, `corrupted`); `offset` and
/// `length` are device bytes, of device I/O (`class` set: a file rule's
/// data I/O too); a file operation (`fsync`, `write`...) has none; `time`
/// in RFC 3339, as events have it.
pub fn log_entry_json(entry: &FaultLogEntry) -> Value {
    let nanoseconds = entry
        .time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    let mut value = json!({
        "sequence": entry.sequence,
        "time": rfc3339(nanoseconds),
        "rule": entry.rule.map(|id| id.0),
    });
    let fields = match &entry.event {
        FaultLogEvent::Set { rule } => json!({ "event": "set", "rule_text": rule }),
        FaultLogEvent::Cleared => json!({ "event": "cleared" }),
        FaultLogEvent::PowerCut { number } => json!({ "event": "power_cut", "cut": number }),
        FaultLogEvent::Fired {
            operation,
            class,
            inode,
            directory,
            path,
            range,
            errno,
            delay_micros,
            corrupted,
        } => json!({
            "event": "fired",
            "operation": operation,
            "class": class.map(|class| class.to_string()),
            "inode": inode,
            "directory": directory,
            "path": path,
            "offset": range.map(|range| range.start),
            "length": range.map(|range| range.len()),
            "errno": errno,
            "errno_name": errno.and_then(super::errno_name),
            "delay_us": delay_micros,
            "corrupted": corrupted,
        }),
    };
    if let (Value::Object(value), Value::Object(fields)) = (&mut value, fields) {
        value.extend(fields);
    }
    value
}

/// The log entries after sequence number `after`, at most [`LOG_BATCH`]:
/// `{entries, dropped, next}` (`dropped`: entries after `after` the log no
/// longer holds; `next`: what to ask after next).
pub fn log(plan: &FaultPlan, after: u64) -> Response {
    let (entries, dropped) = plan.log_since(after);
    let entries: Vec<Value> = entries.iter().take(LOG_BATCH).map(log_entry_json).collect();
    let next = entries
        .last()
        .and_then(|entry| entry["sequence"].as_u64())
        .unwrap_or(after + dropped);
    Response::success(json!({
        "entries": entries,
        "dropped": dropped,
        "next": next,
    }))
}
