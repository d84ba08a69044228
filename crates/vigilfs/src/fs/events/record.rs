//! Recording: errors and operational events made into records in the
//! ring, and the terminal records at the end of a mount.
//!
//! Invariants: recording an error never allocates, never waits for the
//! device and never calls back into the filesystem (the ring's slots are
//! allocated at mount), so any error path may call it, writeback's and the
//! journal's included. Recording takes only the ring's lock; the writer
//! thread is woken to put records on the device. Every error is counted in
//! exactly one record's `count`, whether it opened a record, merged into
//! one, was damped or went to the LOST tally.

use super::repeats::{Absorbed, Key};
use super::ring::{error_record, merge, merge_repeat};
use super::{now_ns, EventLog};
use crate::format::event_log::{
    EventRecord, InlineText, RecordKind, SETTINGS_OTHER, SETTINGS_READ_ONLY, SETTINGS_READ_WRITE,
};

/// `fserror`'s SHUTDOWN subtype bit, carried by the SHUTDOWN record.
const SHUTDOWN_SUBTYPE: u32 = 1 << 7;

/// One error, as the event log takes it.
#[derive(Debug, Clone, Copy)]
pub struct ErrorInput<'a> {
    /// Subtype bits (the `fserror` crate's).
    pub subtypes: u32,
    /// Its errno.
    pub errno: i32,
    /// The inode and its generation (when known).
    pub inode: Option<(u64, Option<u64>)>,
    /// The file byte range.
    pub range: Option<(u64, u64)>,
    /// The device byte range.
    pub device_range: Option<(u64, u64)>,
    /// The b-tree node: tree, level, block.
    pub node: Option<(&'a str, Option<u8>, u64)>,
    /// Where it was seen.
    pub origin: &'a str,
    /// One error whatever the file (a writeback retry failing again):
    /// repeats of it in other files are damped as one stream, whose record
    /// names the first file and the last ([`Detail::across_files`]
    /// (crate::fs::health::Detail)).
    pub across_files: bool,
}

/// An operational event.
#[derive(Debug, Clone, Copy)]
pub enum Notice<'a> {
    /// Mounted; whether recovery runs, the mount count, ids skipped after
    /// an unclean stop.
    Mount {
        /// The journal is replayed (an unclean stop before).
        recovered: bool,
        /// The superblock's mount count.
        mount_count: u64,
    },
    /// Recovery finished; orphans deleted.
    Recovery {
        /// Orphans the crash left, deleted.
        orphans: u64,
    },
    /// The `errors=` policy acted.
    ErrorsAction {
        /// What it did ("remount-ro", "panic").
        action: &'a str,
    },
    /// Frozen.
    Freeze,
    /// Thawed.
    Thaw,
    /// A remount changed settings.
    Settings {
        /// The new values ("errors=panic cache=1073741824").
        change: &'a str,
        /// Whether the mount was made read-only (its image is left
        /// clean) or read-write again, if either.
        read_only: Option<bool>,
    },
    /// Fault rules changed.
    Faults {
        /// What changed ("set fail op=write class=data", "cleared").
        change: &'a str,
        /// Rules active now.
        active: u64,
    },
}

impl EventLog {
    /// Records one error. Never allocates, never waits for the device,
    /// never calls back into the filesystem.
    pub fn record_error(&self, error: &ErrorInput<'_>) {
        let now = now_ns();
        let mut state = self.state();
        state.mount_errors += 1;
        let inode = error.inode.map(|(ino, _)| ino);
        let open = state.open;
        let node_block = error.node.map(|(_, _, block)| block);
        // Where it was seen is part of what the error is: two lost
        // changes of one directory, say, are two errors.
        let origin = InlineText::new(error.origin);
        let same = state.ring.iter_mut().rev().take(open).find(|entry| {
            let record = &entry.record;
            record.kind == RecordKind::Error
                && record.subtypes == error.subtypes
                && record.errno == error.errno
                && record.inode == inode
                && record.range == error.range
                && record.device_range == error.device_range
                && record.node.map(|node| node.block) == node_block
                && record.text == origin
        });
        if let Some(entry) = same {
            merge(&mut entry.record, error, now);
            return;
        }
        let key = Key {
            subtypes: error.subtypes,
            errno: error.errno,
            inode: inode.filter(|_| !error.across_files),
            place: node_block.or(error.device_range.map(|(start, _)| start)),
            origin: origin_hash(error.origin),
        };
        let absorbed = state.repeats.absorb(
            key,
            now,
            || error_record(0, error, now),
            |pending| merge_repeat(pending, error, now),
        );
        match absorbed {
            Absorbed::Into => return,
            Absorbed::Opened => {
                // The writer has a new time to wake at.
                let waiting = state.waiting > 0;
                drop(state);
                self.wake(waiting);
                return;
            }
            Absorbed::No => {}
        }
        if let Some(id) = state.take_id(false) {
            let record = match state.repeats.record_made(key, now) {
                Some(mut pending) => {
                    pending.id = id;
                    merge_repeat(&mut pending, error, now);
                    pending
                }
                None => error_record(id, error, now),
            };
            if state.first_error.is_none() {
                state.first_error = Some(record);
            }
            state.push(record);
            let waiting = state.waiting > 0;
            drop(state);
            self.wake(waiting);
            return;
        }
        if let Some(record) = state.newest_open_error() {
            merge(record, error, now);
            return;
        }
        let tally = &mut state.tally;
        if tally.count == 0 {
            tally.first_ns = now;
        }
        tally.count += 1;
        tally.subtypes |= error.subtypes;
        tally.last_ns = now;
        state.errors_tallied += 1;
        let waiting = state.waiting > 0;
        drop(state);
        // The writer turns the tally into a record once an id is free.
        self.wake(waiting);
    }

    /// Records an operational event. One that finds no id is counted in
    /// the tally: it is rare, and the LOST record says so.
    pub fn record_notice(&self, notice: &Notice<'_>) {
        let now = now_ns();
        let mut state = self.state();
        state.flush_tally(false);
        let Some(id) = state.take_id(false) else {
            let tally = &mut state.tally;
            if tally.count == 0 && tally.notices == 0 {
                tally.first_ns = now;
            }
            tally.notices += 1;
            tally.last_ns = now;
            return;
        };
        let kind = match notice {
            Notice::Mount { .. } => RecordKind::Mount,
            Notice::Recovery { .. } => RecordKind::Recovery,
            Notice::ErrorsAction { .. } => RecordKind::ErrorsAction,
            Notice::Freeze => RecordKind::Freeze,
            Notice::Thaw => RecordKind::Thaw,
            Notice::Faults { .. } => RecordKind::Faults,
            Notice::Settings { .. } => RecordKind::Settings,
        };
        let mut record = EventRecord::new(id, kind, now);
        match *notice {
            Notice::Mount {
                recovered,
                mount_count,
            } => {
                record.flag = recovered;
                record.value = mount_count;
                state.mount_first_id = id;
            }
            Notice::Recovery { orphans } => record.value = orphans,
            Notice::ErrorsAction { action } => record.text = InlineText::new(action),
            Notice::Freeze | Notice::Thaw => {}
            Notice::Settings { change, read_only } => {
                record.text = InlineText::new(change);
                record.value = match read_only {
                    None => SETTINGS_OTHER,
                    Some(true) => SETTINGS_READ_ONLY,
                    Some(false) => SETTINGS_READ_WRITE,
                };
            }
            Notice::Faults { change, active } => {
                record.text = InlineText::new(change);
                record.value = active;
            }
        }
        state.push(record);
        let waiting = state.waiting > 0;
        drop(state);
        self.wake(waiting);
    }

    /// Records the ids a mount skipped after an unclean stop: the MOUNT
    /// record about to be made carries them as its gap.
    pub fn record_mount(&self, recovered: bool, mount_count: u64, skipped: Option<(u64, u64)>) {
        self.record_notice(&Notice::Mount {
            recovered,
            mount_count,
        });
        if let Some(gap) = skipped {
            let mut state = self.state();
            let first = state.mount_first_id;
            if let Some(entry) = state
                .ring
                .iter_mut()
                .rev()
                .find(|entry| entry.record.id == first)
            {
                entry.record.gap = Some(gap);
            }
        }
    }

    /// Makes records of every error damping holds now: an unmount begins,
    /// and listeners should hear of them while the mount can still name
    /// their files, before anything says it is unmounted.
    pub fn release_held(&self) {
        let mut state = self.state();
        state.flush_repeats(now_ns(), true);
        let waiting = state.waiting > 0;
        drop(state);
        self.wake(waiting);
    }

    /// The inodes of the errors damping holds, then those the newest `max`
    /// records in memory name (their first and last), newest first,
    /// without repeats: the files a listener may still have to name once
    /// the mount is going away.
    pub fn recent_inodes(&self, max: usize) -> Vec<u64> {
        let state = self.state();
        let newest = state.ring.iter().rev().take(max).flat_map(|entry| {
            [entry.record.inode, entry.record.last_inode]
                .into_iter()
                .flatten()
        });
        let mut inodes = Vec::new();
        for ino in state.repeats.held_inodes().chain(newest) {
            if !inodes.contains(&ino) {
                inodes.push(ino);
            }
        }
        inodes
    }

    /// Records the terminal SHUTDOWN or UNMOUNT record: the mount's error
    /// count, and its first error (errno, object, range) when it had one.
    pub fn record_terminal(&self, kind: RecordKind, why: &str) {
        let now = now_ns();
        let mut state = self.state();
        state.flush_repeats(now, true);
        state.flush_tally(true);
        let Some(id) = state.take_id(true) else {
            return;
        };
        let mut record = match state.first_error {
            Some(first) => {
                let mut record = first;
                record.id = id;
                record.kind = kind;
                record.first_time_ns = now;
                record.last_time_ns = now;
                record.last_errno = first.errno;
                record.last_inode = first.inode;
                record.errors_total = 0;
                record
            }
            None => EventRecord::new(id, kind, now),
        };
        record.count = state.mount_errors;
        if kind == RecordKind::Shutdown {
            record.subtypes |= SHUTDOWN_SUBTYPE;
            if record.errno == 0 {
                record.errno = libc::ESHUTDOWN;
            }
        }
        record.text = InlineText::new(why);
        state.push(record);
        let waiting = state.waiting > 0;
        drop(state);
        self.wake(waiting);
    }
}

/// FNV-1a of an error's origin text, for the damping key (no allocation).
fn origin_hash(origin: &str) -> u64 {
    origin.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
