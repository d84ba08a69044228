//! `vigilfs status MOUNTPOINT [--json]`: what the running mount says about
//! itself, through the control plane. Reading it consumes no error: the
//! writeback error shown is peeked and still goes to the next fsync or
//! syncfs. Anyone may ask.
//!
//! The JSON form is the server's report as is; its fields are listed in
//! `control::report` and in `vigilfs status --help`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::control::client;
use crate::control::protocol::Request;
use crate::failure::Failure;

/// How long status waits for the mount to answer. The server answers it
/// from counters, beside any long request in progress, so a mount that
/// takes longer is stopped or hung, and a monitor must hear so.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(mountpoint: &Path, as_json: bool) -> Result<u8, Failure> {
    let mut status = client::call_waiting(mountpoint, &Request::Status, Some(STATUS_TIMEOUT))
        .map_err(|error| error.into_failure("status", mountpoint))?;
    // The daemon serves writes; whether the kernel lets them reach it at
    // this mount point (`remount,ro`, a read-only second mount) only the
    // mount table says, and only for the path asked about.
    if let Some(object) = status.as_object_mut() {
        // The daemon knows the mount point it was started on; a second
        // mount point of the image may have outlived it (review 53: status
        // named a mount point unmounted since).
        if let Some((asked, points)) = current_mountpoints(mountpoint) {
            let started_on = object.get("mountpoint").and_then(Value::as_str);
            if !points
                .iter()
                .any(|point| Some(point.as_str()) == started_on)
            {
                // The one asked about: this answer came through it (a
                // bind made by hand is in the mount table, yet control
                // commands given it find no server: review 55).
                object.insert("mountpoint".into(), asked.into());
            }
            object.insert("mountpoints".into(), points.into());
        }
        let read_only = mounted_read_only(mountpoint);
        object.insert(
            "mounted_read_only".into(),
            read_only.map(|(any, _)| any).into(),
        );
        object.insert(
            "read_only_view".into(),
            read_only.map(|(_, view_only)| view_only).into(),
        );
    }
    if as_json {
        println!("{status}");
    } else {
        print!("{}", render(&status));
    }
    Ok(0)
}

/// Whether the kernel refuses writes at `mountpoint`, and whether only
/// this view of the filesystem is read-only (a read-only bind, whose
/// remount to rw needs `bind`); `None` when the mount table does not show
/// it.
fn mounted_read_only(mountpoint: &Path) -> Option<(bool, bool)> {
    let canonical = crate::control::canonical_mountpoint(mountpoint).ok()?;
    let mounts = crate::mountinfo::Mounts::read().ok()?;
    let entry = mounts.topmost_at(&canonical)?;
    let first_is_ro = |options: &str| options.split(',').next() == Some("ro");
    let view_only = first_is_ro(&entry.mount_options) && !first_is_ro(&entry.super_options);
    Some((entry.read_only(), view_only))
}

/// `mountpoint` made canonical, and every mount point (in mount order) of
/// the filesystem mounted there; `None` when the mount table does not
/// show it.
fn current_mountpoints(mountpoint: &Path) -> Option<(String, Vec<String>)> {
    let canonical = crate::control::canonical_mountpoint(mountpoint).ok()?;
    let mounts = crate::mountinfo::Mounts::read().ok()?;
    let top = mounts.topmost_at(&canonical)?;
    let points: Vec<String> = mounts
        .entries()
        .iter()
        .filter(|entry| entry.device == top.device && entry.fstype == top.fstype)
        .map(|entry| entry.mountpoint.display().to_string())
        .collect();
    (!points.is_empty()).then(|| (canonical.display().to_string(), points))
}

/// Bytes in the largest binary unit that keeps a number >= 1.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}iB", UNITS[unit])
}

/// Seconds since the epoch as `YYYY-MM-DD hh:mm:ss UTC`.
pub fn utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

/// One recorded error (its JSON form, see `control::report::event_json`)
/// as people read it: `2025-12-01 10:14:57 UTC  EIO  writeback  inode 12
/// block 3456  (origin)`; `-` for none.
pub fn event_line(event: &Value) -> String {
    if event.is_null() {
        return "-".into();
    }
    let errno = event["errno"].as_i64().unwrap_or(0);
    let name = event["name"]
        .as_str()
        .map_or_else(|| format!("errno {errno}"), str::to_string);
    let mut line = format!(
        "{}  {name}  {}",
        utc(number(&event["time"])),
        text(&event["kind"])
    );
    if let Some(inode) = event["inode"].as_u64() {
        let _ = write!(line, "  inode {inode}");
    }
    if let Some(block) = event["block"].as_u64() {
        let _ = write!(line, "  block {block}");
    }
    let _ = write!(line, "  ({})", text(&event["origin"]));
    line
}

/// The error record (its JSON form, `control::report::error_record_json`)
/// as labelled rows: the count per kind, then the first and last error
/// when there is one.
pub fn error_record_rows(errors: &Value) -> Vec<(&'static str, String)> {
    let total = number(&errors["total"]);
    let kinds: Vec<String> = errors["per_kind"]
        .as_object()
        .map(|kinds| {
            kinds
                .iter()
                .filter(|(_, counter)| number(&counter["count"]) > 0)
                .map(|(kind, counter)| format!("{kind} {}", number(&counter["count"])))
                .collect()
        })
        .unwrap_or_default();
    let mut rows = vec![(
        "errors recorded",
        if kinds.is_empty() {
            total.to_string()
        } else {
            format!("{total} ({})", kinds.join(", "))
        },
    )];
    if total > 0 {
        rows.push(("  first", event_line(&errors["first"])));
        rows.push(("  last", event_line(&errors["last"])));
    }
    rows
}

/// The human form of a status report.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<17}{value}");
    };
    let mut mount = text(&status["mountpoint"]).to_string();
    if let Some(image) = status["image"].as_str() {
        let _ = write!(mount, " (image {image})");
        if status["image_moved"] == true {
            let _ = write!(
                mount,
                ": no longer at that path (renamed, deleted or replaced since the mount)"
            );
        }
    }
    row("mount", mount);
    if let Some(points) = status["mountpoints"]
        .as_array()
        .filter(|points| points.len() > 1)
    {
        let others: Vec<&str> = points
            .iter()
            .filter_map(Value::as_str)
            .filter(|point| *point != text(&status["mountpoint"]))
            .collect();
        row("also mounted at", others.join(", "));
    }
    if let Some(address) = status["metrics_address"].as_str() {
        row("metrics", format!("http://{address}/metrics"));
    }
    row(
        "process",
        format!(
            "pid {}, mounted by uid {}",
            number(&status["pid"]),
            number(&status["owner_uid"])
        ),
    );
    let mut state = text(&status["state"]).to_string();
    if let Some(reason) = status["state_reason"].as_str() {
        let _ = write!(state, ": {reason}");
        if reason == "mounted read-only" {
            let _ = write!(state, " (`mount -o remount,rw` makes it writable)");
        }
    }
    if let Some(failed) = status["crash_lab"]["failed_boot"].as_str() {
        // The engine that answers is the one the power left: say that
        // nothing is served, and that the rows below are from before.
        let _ = write!(
            state,
            "; mounting the image again failed ({failed}): nothing is served until the next \
             cut (`vigilfs inject {mountpoint} --power-cut`, after clearing the rules that fail \
             it with `--clear`); the rows below are the mount as it stood when the power went",
            mountpoint = text(&status["mountpoint"])
        );
    }
    let serving = matches!(status["state"].as_str(), Some("running" | "frozen"));
    if status["mounted_read_only"] == Value::Bool(true) && serving {
        let remount = match status["read_only_view"] == Value::Bool(true) {
            true => "remount,bind,rw",
            false => "remount,rw",
        };
        let _ = write!(
            state,
            " (mounted read-only: the kernel refuses writes; `mount -o {remount}` allows them)"
        );
    }
    row("state", state);
    row("errors policy", text(&status["errors_policy"]).into());
    let settings = &status["settings"];
    row(
        "settings",
        format!(
            "page cache {}, dirty limit {}, writeback every {} s, {}{}",
            human_bytes(number(&settings["cache_bytes"])),
            human_bytes(number(&settings["dirty_limit_bytes"])),
            settings["writeback_interval_seconds"]
                .as_f64()
                .unwrap_or_default(),
            text(&settings["atime"]),
            if settings["directory_atime"] == false {
                ",nodiratime"
            } else {
                ""
            }
        ),
    );
    row(
        "recovered",
        if status["recovered"].as_bool() == Some(true) {
            "yes: the journal was replayed after an unclean stop (a crash, or an unmount \
             after writing had stopped: a shutdown or errors=remount-ro)"
                .into()
        } else {
            "no: the image was left clean (by an unmount, or by a freeze before the process \
             stopped)"
                .into()
        },
    );
    row(
        "orphans purged",
        number(&status["orphans_purged"]).to_string(),
    );
    let space = &status["space"];
    let block = space["block_size"].as_u64().unwrap_or(4096);
    let total = number(&space["total_blocks"]);
    let free = number(&space["free_blocks"]);
    row(
        "space",
        format!(
            "{} free of {} ({free} of {total} blocks of {block} bytes), {} pending reuse, {} bad; \
             {} available to new data (as df)",
            human_bytes(free * block),
            human_bytes(total * block),
            number(&space["pending_blocks"]),
            number(&space["bad_blocks"]),
            human_bytes(number(&space["available_blocks"]) * block)
        ),
    );
    row(
        "cache",
        format!(
            "{} dirty, {} cached, {} dirty b-tree nodes",
            human_bytes(number(&status["dirty_bytes"])),
            human_bytes(number(&status["cached_bytes"])),
            number(&status["dirty_nodes"])
        ),
    );
    let journal = &status["journal"];
    let mut journal_line = format!(
        "seq {}..{} (written {}, durable {}), {} of {} blocks free, {} pins",
        number(&journal["last_seq"]),
        number(&journal["next_seq"]),
        number(&journal["written_seq"]),
        number(&journal["durable_seq"]),
        number(&journal["free_blocks"]),
        number(&journal["total_blocks"]),
        number(&journal["pins"])
    );
    if journal["blocked"].as_bool() == Some(true) {
        journal_line.push_str(", blocked");
    }
    if journal["failed"].as_bool() == Some(true) {
        journal_line.push_str(", FAILED");
    }
    if journal["reclaim_failing"].as_bool() == Some(true) {
        // Pinned objects cannot be written: the journal fills, then every
        // change fails. Say why while there is still time to act.
        journal_line.push_str(&format!(
            ", reclaim failing: {}",
            journal["last_reclaim_failure"]
                .as_str()
                .unwrap_or("no message")
        ));
    }
    row("journal", journal_line);
    row(
        "writeback error",
        match status["writeback_error"]["message"].as_str() {
            Some(message) if status["writeback_error"]["reported"].as_bool() == Some(true) => {
                format!(
                    "{message}, the latest this mount (a syncfs reported it; descriptors open \
                     before it that have not run syncfs since still get it once)"
                )
            }
            Some(message) => format!(
                "{message}, the latest this mount (no syncfs reported it yet: the next one \
                 gets it; fsync reports each file's own errors)"
            ),
            None => "none".into(),
        },
    );
    let lost_files = status["lost_mapped"]["files"].as_u64().unwrap_or(0);
    if lost_files > 0 {
        row(
            "lost data",
            format!(
                "{} in {lost_files} file{}: written, but never to reach the device (the \
                 kernel's write-back of a shared mapping was refused, or writeback was \
                 failing when a mount ended); fsyncs fail, and reads once the kernel's cache \
                 lets the pages go (after a remount at once), until it is written again \
                 (`vigilfs unsynced` lists it)",
                human_bytes(status["lost_mapped"]["bytes"].as_u64().unwrap_or(0)),
                if lost_files == 1 { "" } else { "s" }
            ),
        );
    }
    for (label, value) in error_record_rows(&status["errors"]) {
        row(label, value);
    }
    for (label, value) in media_rows(&status["media"]) {
        row(label, value);
    }
    let events = &status["events"];
    let mut events_line = format!(
        "newest id {}, {} this mount (from id {}), {} written",
        number(&events["newest_id"]),
        number(&events["records"]),
        number(&events["mount_first_id"]),
        number(&events["written_id"])
    );
    if events["persistent"].as_bool() != Some(true) {
        let why = if status["state_reason"]
            .as_str()
            .is_some_and(|why| why.starts_with("mounted read-only"))
        {
            "mounted read-only"
        } else if number(&events["write_failures"]) > 0 {
            "writing the image's event log failed"
        } else {
            "no writable event log in the image"
        };
        let _ = write!(events_line, ", kept in memory only ({why})");
    }
    if number(&events["lost_errors"]) > 0 {
        let _ = write!(
            events_line,
            ", {} errors only in LOST events",
            number(&events["lost_errors"])
        );
    }
    if number(&events["held_errors"]) > 0 {
        let _ = write!(
            events_line,
            ", {} repeated errors held to be merged",
            number(&events["held_errors"])
        );
    }
    if number(&events["write_failures"]) > 0 {
        let _ = write!(
            events_line,
            ", {} failed log writes (last: {})",
            number(&events["write_failures"]),
            text(&events["last_write_failure"])
        );
    }
    if let Some(why) = events["unavailable"].as_str() {
        let _ = write!(events_line, ", unavailable: {why}");
    }
    row("events", events_line);
    row("open files", number(&status["open_files"]).to_string());
    row("mount count", number(&status["mount_count"]).to_string());
    let rules = status["fault_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut rules_line = if rules.is_empty() {
        "none".to_string()
    } else {
        rules.len().to_string()
    };
    if status["crash_lab"]["drop_flushes"] == true {
        // Not a rule, but the fault that costs the most: say it here.
        rules_line.push_str("; the device drops flushes (inject --drop-flushes)");
    }
    row("fault rules", rules_line);
    for rule in &rules {
        let _ = writeln!(out, "  {}", rule_line(rule));
    }
    out
}

/// Runs of bad blocks, or of lost data, the text report shows (the JSON
/// has them all).
const SHOWN_BAD_RUNS: usize = 8;

/// The media part of a status report (`control::media_report`) as
/// labelled rows: the bad-block list, poisoned data, failure notices and
/// scrub.
pub fn media_rows(media: &Value) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    let all_runs = media["bad"].as_array().map_or(&[][..], Vec::as_slice);
    let mut runs: Vec<String> = all_runs
        .iter()
        .take(SHOWN_BAD_RUNS)
        .map(|run| format!("{}+{}", number(&run["start"]), number(&run["blocks"])))
        .collect();
    if all_runs.len() > SHOWN_BAD_RUNS {
        runs.push(format!(
            "... ({} runs in all; --json lists every one)",
            all_runs.len()
        ));
    }
    let bad = number(&media["bad_blocks"]);
    rows.push((
        "bad blocks",
        if bad == 0 {
            "none".into()
        } else {
            format!("{bad} never allocated again: {}", runs.join(", "))
        },
    ));
    let poisoned = number(&media["poisoned_runs"]);
    // Data a media failure took, which reads keep failing on; data lost
    // to a failed writeback is an error event of its file (errors above).
    rows.push((
        "unreadable data",
        if poisoned == 0 {
            "none".into()
        } else {
            format!(
                "{poisoned} runs of file blocks lost to the medium: reads get EIO until \
                 rewritten, or until `vigilfs scrub` reads them intact (a fault that passed)"
            )
        },
    ));
    let poisoned_runs = media["poisoned"].as_array().map_or(&[][..], Vec::as_slice);
    for run in poisoned_runs.iter().take(SHOWN_BAD_RUNS) {
        rows.push((
            "",
            format!(
                "  inode {} blocks {}+{} (device block {}, {})",
                number(&run["ino"]),
                number(&run["first_block"]),
                number(&run["blocks"]),
                number(&run["device_block"]),
                text(&run["cause"])
            ),
        ));
    }
    if poisoned_runs.len() > SHOWN_BAD_RUNS {
        rows.push((
            "",
            format!(
                "  ... ({} runs in all; --json lists every one)",
                poisoned_runs.len()
            ),
        ));
    }
    let notices = &media["notices"];
    rows.push((
        "media failures",
        format!(
            "{} {} ({} before the mount was ready, {} merged, {} dropped, {} waiting); {} \
             blocks healed, {} lost this mount",
            number(&notices["received"]),
            if notices["received"].as_u64() == Some(1) {
                "notice"
            } else {
                "notices"
            },
            number(&notices["parked"]),
            number(&notices["merged"]),
            number(&notices["overflowed"]),
            number(&notices["waiting"]),
            number(&media["healed_blocks"]),
            number(&media["lost_blocks"])
        ),
    ));
    let scrub = &media["scrub"];
    let mut line = match scrub["running"].as_object() {
        Some(running) => format!(
            "running: {} of {}, {}",
            human_bytes(running["bytes"].as_u64().unwrap_or(0)),
            human_bytes(running["total_bytes"].as_u64().unwrap_or(0)),
            running["phase"].as_str().unwrap_or("?")
        ),
        None => match scrub["last"].as_object() {
            Some(last) => format!(
                "last {} {}: {} checked, {} failures, {} healed, {} lost",
                if last["complete"].as_bool() == Some(true) {
                    "finished"
                } else {
                    "stopped"
                },
                utc(last["ended"].as_u64().unwrap_or(0)),
                human_bytes(last["bytes"].as_u64().unwrap_or(0)),
                last["findings"],
                last["healed_blocks"],
                last["lost_blocks"]
            ),
            None => "not run this mount".into(),
        },
    };
    if let Some(resume) = scrub["resume_at"].as_object() {
        let _ = write!(
            line,
            "; next resumes at {} block {}",
            resume["phase"].as_str().unwrap_or("?"),
            resume["block"]
        );
    }
    if let Some(interval) = scrub["interval_seconds"].as_u64() {
        let _ = write!(line, "; every {interval} s");
    }
    rows.push(("scrub", line));
    rows
}

/// A rule as `inject --list` and status print it.
pub fn rule_line(rule: &Value) -> String {
    let mut line = format!(
        "{}: {}  (matched {}, injected {}",
        number(&rule["id"]),
        text(&rule["rule"]),
        number(&rule["matched"]),
        number(&rule["injected"])
    );
    if let Some(remaining) = rule["bad_blocks_remaining"].as_u64() {
        let _ = write!(line, ", {remaining} bad blocks left");
    }
    if let Some(used) = rule["provisioned_blocks_used"].as_u64() {
        let _ = write!(line, ", {used} blocks provisioned");
    }
    line.push(')');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn a_read_only_bind_is_told_to_remount_as_a_bind() {
        let status = |view_only: bool| {
            render(&serde_json::json!({
                "state": "running",
                "mounted_read_only": true,
                "read_only_view": view_only,
            }))
        };
        assert!(status(true).contains("`mount -o remount,bind,rw` allows them"));
        assert!(status(false).contains("`mount -o remount,rw` allows them"));
    }

    #[test]
    fn dropped_flushes_show_beside_the_fault_rules() {
        let rendered = render(&serde_json::json!({
            "crash_lab": { "crashable": true, "drop_flushes": true },
        }));
        assert!(
            rendered.contains("fault rules      none; the device drops flushes"),
            "{rendered}"
        );
    }

    #[test]
    fn a_long_bad_block_list_says_it_is_cut_short() {
        let runs: Vec<Value> = (0..17)
            .map(|at| serde_json::json!({ "start": at * 10, "blocks": 1 }))
            .collect();
        let rows = media_rows(&serde_json::json!({ "bad": runs, "bad_blocks": 17 }));
        let (_, bad) = &rows[0];
        assert!(bad.contains("70+1, ... (17 runs in all"), "{bad}");
        assert!(!bad.contains("80+1"), "{bad}");
        let rows = media_rows(&serde_json::json!({ "bad": runs[..8], "bad_blocks": 8 }));
        assert!(!rows[0].1.contains("..."), "{}", rows[0].1);
        // The runs of lost data likewise.
        let lost: Vec<Value> = (0..20)
            .map(|at| serde_json::json!({ "ino": 2 + at % 2, "first_block": at, "blocks": 1 }))
            .collect();
        let rows = media_rows(&serde_json::json!({ "poisoned": lost, "poisoned_runs": 20 }));
        assert!(
            rows.iter()
                .any(|(_, row)| row.contains("... (20 runs in all")),
            "{rows:?}"
        );
    }

    #[test]
    fn an_empty_report_still_renders() {
        let rendered = render(&Value::Null);
        assert!(rendered.contains("state"));
        assert!(rendered.contains("fault rules      none"));
    }
}
