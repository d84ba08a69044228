//! `vigilfs unsynced MOUNTPOINT`: what a power cut would lose now.
//!
//! Two lists, from the engine (`Filesystem::unsynced`): file data not
//! written back (by file, in byte ranges), and metadata changes whose
//! journal entry is not durable (creates, renames, unlinks... in the order
//! they were made). Anything not listed survives a cut, unless the device
//! of a crashable mount drops flushes (`inject --drop-flushes`): then it
//! says so first, as what those flushes acknowledged cannot be listed.

use std::path::Path;

use serde_json::Value;

use crate::control::client;
use crate::control::errno_name;
use crate::control::protocol::Request;
use crate::failure::Failure;

/// Most ranges shown per file (the JSON has them all).
const RANGES_SHOWN: usize = 8;

/// A file's names (every one: hard links too), or why it has none.
fn file_name(file: &Value) -> String {
    let inode = file["inode"]
        .as_u64()
        .map_or("?".to_string(), |ino| ino.to_string());
    let paths: Vec<&str> = file["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !paths.is_empty() {
        format!("{} (inode {inode})", paths.join(", "))
    } else if file["unlinked"] == true {
        format!("inode {inode} (deleted, still open)")
    } else {
        format!("inode {inode} (no path found)")
    }
}

/// Byte ranges (`[{offset, length}]`) as `start..end`, the first
/// [`RANGES_SHOWN`] of them.
fn ranges_text(ranges: &Value) -> String {
    let ranges: Vec<String> = ranges
        .as_array()
        .into_iter()
        .flatten()
        .map(|range| {
            let offset = range["offset"].as_u64().unwrap_or(0);
            let length = range["length"].as_u64().unwrap_or(0);
            format!("{offset}..{}", offset + length)
        })
        .collect();
    let more = ranges.len().saturating_sub(RANGES_SHOWN);
    let mut text = ranges[..ranges.len().min(RANGES_SHOWN)].join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more ranges"));
    }
    text
}

/// The unsynced report (`control::power::unsynced_json`) as lines.
pub fn describe_unsynced(unsynced: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let files = unsynced["files"].as_array().cloned().unwrap_or_default();
    let changes = unsynced["changes"].as_array().cloned().unwrap_or_default();
    let omitted = unsynced["omitted_changes"].as_u64().unwrap_or(0);
    // A lying device: the journal counts as durable what the device only
    // acknowledged, so the lists below cannot show it.
    let dropped = unsynced["device"]["flushes_dropped"].as_u64().unwrap_or(0);
    if dropped > 0 {
        lines.push(format!(
            "the device dropped {dropped} flush{} it acknowledged (inject --drop-flushes): \
             everything synced since the first of them is lost too, and not listed",
            if dropped == 1 { "" } else { "es" }
        ));
    } else if unsynced["device"]["drops_flushes"] == true {
        lines.push(
            "the device drops flushes (inject --drop-flushes): what is synced from now on \
             is not durable either, and will not be listed"
                .to_string(),
        );
    }
    if files.is_empty() && changes.is_empty() && omitted == 0 {
        lines.push(if lines.is_empty() {
            "nothing: every change is durable".to_string()
        } else {
            "nothing else".to_string()
        });
        return lines;
    }
    if !files.is_empty() {
        let any_lost = files
            .iter()
            .any(|file| file["lost"].as_array().is_some_and(|lost| !lost.is_empty()));
        lines.push(format!(
            "data not written back{} ({} file{}):",
            if any_lost { " or already lost" } else { "" },
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        ));
    }
    for file in &files {
        let ranges = ranges_text(&file["ranges"]);
        if !ranges.is_empty() {
            lines.push(format!(
                "  {}: {} bytes at {ranges}",
                file_name(file),
                file["bytes"].as_u64().unwrap_or(0),
            ));
        }
        let lost = ranges_text(&file["lost"]);
        if !lost.is_empty() {
            let errno = file["lost_errno"]
                .as_i64()
                .and_then(|errno| i32::try_from(errno).ok());
            let why = errno
                .and_then(errno_name)
                .map_or_else(|| "an error".to_string(), str::to_string);
            lines.push(format!(
                "  {}: already lost at {lost}: the kernel's write-back of a shared mapping \
                 was refused, or writeback was failing when a mount ended ({why}); fsyncs \
                 fail (unless -o fsync_errors=once), and reads once the kernel's cache lets \
                 the pages go (after a remount at once), until it is written again",
                file_name(file),
            ));
        }
    }
    if !changes.is_empty() || omitted > 0 {
        lines.push(format!(
            "metadata changes not durable (journal entries after {}):",
            unsynced["durable_seq"].as_u64().unwrap_or(0)
        ));
    }
    if omitted > 0 {
        lines.push(format!(
            "  ({omitted} older changes, not remembered one by one)"
        ));
    }
    for change in &changes {
        let operation = change["operation"].as_str().unwrap_or("?");
        let path = change["path"].as_str();
        let inode = change["inode"].as_u64();
        let mut line = format!("  {operation}");
        match (path, change["new_path"].as_str()) {
            (Some(path), Some(new_path)) => line.push_str(&format!(" {path} -> {new_path}")),
            (Some(path), None) => line.push_str(&format!(" {path}")),
            (None, Some(new_path)) => line.push_str(&format!(" -> {new_path}")),
            (None, None) => {}
        }
        if let Some(inode) = inode {
            line.push_str(&format!(" (inode {inode})"));
        }
        lines.push(line);
    }
    lines
}

pub fn run(mountpoint: &Path, json: bool) -> Result<u8, Failure> {
    let result = client::call(mountpoint, &Request::Unsynced)
        .map_err(|error| error.into_failure("unsynced", mountpoint))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_else(|_| result.to_string())
        );
        return Ok(0);
    }
    println!(
        "what a power cut on {} would lose now:",
        mountpoint.display()
    );
    for line in describe_unsynced(&result) {
        println!("  {line}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::describe_unsynced;

    #[test]
    fn data_already_lost_is_listed_apart_from_data_not_written_back() {
        let report = json!({
            "files": [
                {"inode": 7, "paths": ["db/table"], "unlinked": false, "size": 16384,
                 "ranges": [{"offset": 0, "length": 4096}], "bytes": 4096,
                 "lost": [], "lost_errno": null},
                {"inode": 8, "paths": ["db/map"], "unlinked": false, "size": 8192,
                 "ranges": [], "bytes": 0,
                 "lost": [{"offset": 4096, "length": 4096}], "lost_errno": 28},
            ],
            "changes": [], "omitted_changes": 0, "durable_seq": 3, "newest_seq": 3,
        });
        let lines = describe_unsynced(&report);
        assert_eq!(lines[0], "data not written back or already lost (2 files):");
        assert_eq!(lines[1], "  db/table (inode 7): 4096 bytes at 0..4096");
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[2].starts_with("  db/map (inode 8): already lost at 4096..8192:")
                && lines[2].contains("(ENOSPC)"),
            "{}",
            lines[2]
        );
    }
}
