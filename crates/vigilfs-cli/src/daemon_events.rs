//! The mount daemon's log of its filesystem's events: each record of the
//! mount's event log, as the line `vigilfs events` prints for it (with a
//! path the mount learned from lookups, when it knows one: no search of the
//! namespace from this thread), with the same id, so a line in the daemon's
//! log and a line of `vigilfs events` name one event alike.
//!
//! It reads the event log with its own cursor, on its own thread, as a
//! listener of `vigilfs events --follow` does: it never slows the
//! filesystem, and what the log no longer holds when it reads comes as one
//! `lost` line naming the missing ids. It starts after the mount's own
//! MOUNT record (the daemon says "mounted" itself) and leaves out UNMOUNT
//! (it says "unmounted" itself, with how). A power cut in the crash lab
//! replaces the engine: the thread goes on in the new engine's log after
//! the last id it logged (ids go on increasing across the cut). It ends
//! when the engine slot is emptied at the unmount and the log has nothing
//! more.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vigilfs::format::event_log::RecordKind;
use vigilfs::fs::events::{EventLog, ReadOutcome};

use crate::control::event_json::{gap_event, gap_json, human_line, record_json};
use crate::engine_slot::EngineSlot;

/// Records read at once.
const BATCH: usize = 256;

/// How long one read waits for a record before the slot is looked at.
const POLL: Duration = Duration::from_millis(200);

/// Starts the thread; `log` writes one line of the daemon's log.
pub fn spawn(slot: Arc<EngineSlot>, log: fn(&str)) -> std::io::Result<JoinHandle<()>> {
    let (mut generation, mut events) = current_log(&slot)
        .ok_or_else(|| std::io::Error::other("the filesystem is already unmounted"))?;
    let mut after = events.mount_first_id();
    // Logged with the record after it, which tells what made it.
    let mut gap: Option<(u64, u64)> = None;
    // The running sum of errors up to `after`, once a record said it: it
    // makes the count of a gap exact.
    let mut errors_before: Option<u64> = None;
    std::thread::Builder::new()
        .name("vigilfs-events".into())
        .spawn(move || loop {
            match events.read_after(after, BATCH, POLL) {
                ReadOutcome::Records(records) => {
                    if let Some((first, last)) = gap.take() {
                        log(&human_line(&gap_event(
                            first,
                            last,
                            &records[0],
                            errors_before,
                        )));
                    }
                    for record in records {
                        after = record.id;
                        errors_before = Some(record.errors_total);
                        if record.kind != RecordKind::Unmount {
                            let deleted = record
                                .inode
                                .and_then(|ino| slot.is_deleted(ino, record.generation));
                            let path = record
                                .inode
                                .filter(|&ino| {
                                    deleted != Some(true)
                                        && slot.is_same_inode(ino, record.generation)
                                })
                                .and_then(|ino| slot.known_path(ino));
                            log(&human_line(&record_json(&record, path.as_deref(), deleted)));
                            if let Some(path) = path {
                                slot.remember_announced_path(record.id, path);
                            }
                        }
                    }
                }
                ReadOutcome::Gap { first, last } => {
                    gap = Some(gap.map_or((first, last), |(earlier, _)| (earlier, last)));
                    after = last;
                }
                ReadOutcome::Timeout | ReadOutcome::Closed if slot.generation() != generation => {
                    // A power cut: go on in the new engine's log (what the
                    // old one had not written is a gap the new MOUNT
                    // record names).
                    match current_log(&slot) {
                        Some((now, log)) => {
                            // A log that starts over (an image without a
                            // log region keeps ids in memory only) is read
                            // from its MOUNT record.
                            after = after.min(log.mount_first_id().saturating_sub(1));
                            (generation, events) = (now, log);
                        }
                        None => return,
                    }
                }
                ReadOutcome::Timeout => {}
                ReadOutcome::Closed => {
                    // Everything is read. Unmounted: done. Otherwise a cut
                    // is under way: its new engine is not in the slot yet.
                    if slot.current().is_none() {
                        if let Some((first, last)) = gap {
                            log(&human_line(&gap_json(first, last, None, "not in the log")));
                        }
                        return;
                    }
                    std::thread::sleep(POLL);
                }
            }
        })
}

/// The slot's generation and its engine's event log (the last engine's,
/// once it was taken out to unmount).
fn current_log(slot: &EngineSlot) -> Option<(u64, Arc<EventLog>)> {
    let generation = slot.generation();
    Some((generation, slot.event_log()?))
}
