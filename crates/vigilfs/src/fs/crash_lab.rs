//! The crash lab's doors on a mounted filesystem: rules aimed at files and
//! operations, a power cut armed at the n-th operation, what a cut would
//! lose now, and abandoning a mount as a power cut does.
//!
//! The device side (a volatile write cache that loses or tears what was
//! not flushed) is the transport's: it builds the device stack, cuts the
//! power there, abandons this mount and mounts the image again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::faults::{CutPoint, FileRule, FileRuleStatus, Operation};
use super::health::Incident;
use super::unsynced::Change;
use super::Filesystem;
use crate::device::{FaultRuleError, RuleId};
use crate::format::ErrorKind;
use crate::inode::{paths_of, printable};

/// Data not written back yet, of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsyncedData {
    /// The inode.
    pub ino: u64,
    /// Its paths: those the mount learned from lookups, else one found by
    /// walking the namespace (a mount after a power cut knows none yet).
    pub paths: Vec<String>,
    /// Whether it has no name left (unlinked, still open): its data dies
    /// with it anyway.
    pub unlinked: bool,
    /// The byte ranges not written back.
    pub ranges: Vec<(u64, u64)>,
    /// The size writes gave it.
    pub size: u64,
    /// The byte ranges already lost, with the errno that lost them: the
    /// kernel's write-back of a shared mapping of them was refused, and
    /// the kernel does not send them again (until rewritten, fsync fails).
    pub lost: Vec<(u64, u64)>,
    /// See `lost`.
    pub lost_errno: Option<i32>,
}

/// A metadata change not durable yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsyncedChange {
    /// The change.
    pub change: Change,
    /// The path of its entry, if known; for a change to an inode alone
    /// (setattr, setxattr, fallocate), a path of the inode.
    pub path: Option<String>,
    /// The path of its new entry (rename, link), if known.
    pub new_path: Option<String>,
}

/// What a power cut would lose now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsynced {
    /// Files with data not written back.
    pub data: Vec<UnsyncedData>,
    /// Metadata changes not durable, oldest first.
    pub changes: Vec<UnsyncedChange>,
    /// Older pending changes no longer remembered one by one.
    pub omitted_changes: u64,
    /// The journal's durable sequence number.
    pub durable_seq: u64,
    /// The newest sequence number holding a change.
    pub newest_seq: u64,
}

impl Filesystem {
    /// Adds a rule aimed at files or operations; returns its id.
    pub fn add_file_rule(&self, rule: FileRule) -> Result<RuleId, FaultRuleError> {
        self.shared.faults.add(rule)
    }

    /// Removes a rule aimed at files or operations.
    pub fn remove_file_rule(&self, id: RuleId) -> Option<FileRuleStatus> {
        self.shared.faults.remove(id)
    }

    /// Removes every rule aimed at files or operations.
    pub fn clear_file_rules(&self) {
        self.shared.faults.clear();
    }

    /// The rules aimed at files or operations, with their counters.
    pub fn file_rules(&self) -> Vec<FileRuleStatus> {
        self.shared.faults.rules()
    }

    /// Takes over the file and operation rules of `lost`, a mount of the
    /// same device abandoned at a power cut, as they stand (ids, counters,
    /// seeded draws): a crash does not reset the crash lab.
    pub fn take_over_file_rules(&self, lost: &Filesystem) {
        self.shared.faults.take_over(&lost.shared.faults);
    }

    /// Whether a rule, or an armed power cut, waits for `operation` now: a
    /// transport that can spare the kernel a request for an operation
    /// nobody watches (close) asks this first.
    pub fn operation_is_targeted(&self, operation: Operation) -> bool {
        self.shared.faults.targets(operation)
    }

    /// Every known path of inode `ino` (learnt from lookups, creates,
    /// links and renames through this mount).
    pub fn known_paths(&self, ino: u64) -> Vec<String> {
        self.shared.faults.paths(ino)
    }

    /// Arms a power cut: `cut` runs as `point`'s operation is about to run
    /// for the `point.count`-th time, on the thread of that operation
    /// (which then fails, the device having lost power): it must only cut
    /// the power and hand the rest to another thread.
    pub fn arm_power_cut(&self, point: CutPoint, cut: Box<dyn FnOnce() + Send>) {
        let health = Arc::clone(&self.shared.health);
        let cut = Box::new(move || {
            health.power_off();
            cut();
        });
        self.shared.faults.arm_power_cut(point, cut);
    }

    /// Records that a crash-lab boot before this one could not mount the
    /// image (fault rules failed its recovery's writes): an error, as the
    /// failure was the disk's, in this mount's log, since that boot had
    /// none to write it in.
    pub fn record_failed_boot(&self, why: &str) {
        self.shared.health.report(&Incident {
            kind: ErrorKind::Other,
            errno: libc::EIO,
            inode: None,
            range: None,
            block: None,
            origin: why,
        });
    }

    /// The power is about to be cut: what fails from now on fails because
    /// of the cut and is not recorded as an error (see [`Self::abandon`]).
    pub fn power_going(&self) {
        self.shared.health.power_off();
    }

    /// How many times `operation` started on this mount.
    pub fn operations_started(&self, operation: Operation) -> u64 {
        self.shared.faults.started(operation)
    }

    /// Disarms an armed power cut; whether one was armed.
    pub fn disarm_power_cut(&self) -> bool {
        self.shared.faults.disarm_power_cut()
    }

    /// The armed power cut, and how many of its operations ran since.
    pub fn armed_power_cut(&self) -> Option<(CutPoint, u64)> {
        self.shared.faults.armed_power_cut()
    }

    /// What a power cut would lose now: every file's data not written back
    /// (dirty pages are exactly that: a page is clean only once its
    /// writeback is durable) and every metadata change whose journal entry
    /// is not durable. What is not listed survives a cut.
    ///
    /// Files and directories are named by the paths the mount learned from
    /// lookups; those it has not learned all of (after a power cut it knows
    /// none) are found by one walk of the namespace.
    pub fn unsynced(&self) -> Unsynced {
        let shared = &self.shared;
        let journal = shared.metadata.journal.status();
        let (pending, omitted_changes) = shared.changes.pending(journal.durable_seq);
        let unwritten = shared.files.unwritten();
        let links: Vec<(Vec<String>, Option<u32>)> = unwritten
            .iter()
            .map(|file| {
                let nlink = shared
                    .namespace
                    .getattr(file.ino)
                    .ok()
                    .map(|record| record.nlink);
                (shared.faults.paths(file.ino), nlink)
            })
            .collect();
        let mut unnamed: BTreeSet<u64> = unwritten
            .iter()
            .zip(&links)
            .filter(|(_, (known, nlink))| known.len() < nlink.unwrap_or(0) as usize)
            .map(|(file, _)| file.ino)
            .collect();
        for change in &pending {
            for (dir, name) in change.entry.iter().chain(&change.new_entry) {
                if shared.faults.entry_path(*dir, name).is_none() {
                    unnamed.insert(*dir);
                }
            }
            if let Some(ino) = named_by_inode(change) {
                // A link's new name may be the only one the mount knows.
                let names_needed = 1 + usize::from(change.new_entry.is_some());
                if shared.faults.paths(ino).len() < names_needed {
                    unnamed.insert(ino);
                }
            }
        }
        let walked = if unnamed.is_empty() {
            BTreeMap::new()
        } else {
            // A damaged namespace leaves them unnamed: this is a report.
            paths_of(&shared.metadata.trees, &unnamed).unwrap_or_default()
        };
        let walked_paths = |ino: u64| -> Vec<String> {
            walked
                .get(&ino)
                .into_iter()
                .flatten()
                .map(|path| printable(path).trim_start_matches('/').to_string())
                .collect()
        };
        let entry_path = |(dir, name): &(u64, Vec<u8>)| {
            shared.faults.entry_path(*dir, name).or_else(|| {
                let dir = walked_paths(*dir).into_iter().next()?;
                let name = printable(name);
                Some(if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                })
            })
        };
        let changes = pending
            .into_iter()
            .map(|change| {
                let new_path = change.new_entry.as_ref().and_then(entry_path);
                let inode_path = |ino: u64| {
                    shared
                        .faults
                        .paths(ino)
                        .into_iter()
                        .chain(walked_paths(ino))
                        // A link's inode is named by the new link too.
                        .find(|path| Some(path) != new_path.as_ref())
                };
                // A link is named by what it links to too (review 31:
                // only the new name was said).
                let path = match (named_by_inode(&change), &change.entry) {
                    (Some(ino), _) => inode_path(ino),
                    (None, entry) => entry.as_ref().and_then(entry_path),
                };
                UnsyncedChange {
                    path,
                    new_path,
                    change,
                }
            })
            .collect();
        let data = unwritten
            .into_iter()
            .zip(links)
            .map(|(unwritten, (known, nlink))| UnsyncedData {
                ino: unwritten.ino,
                paths: if walked.contains_key(&unwritten.ino) {
                    walked_paths(unwritten.ino)
                } else {
                    known
                },
                unlinked: nlink == Some(0),
                ranges: byte_ranges(&unwritten.runs, unwritten.size),
                lost: unwritten.lost,
                lost_errno: unwritten.lost_errno,
                size: unwritten.size,
            })
            .collect();
        Unsynced {
            data,
            changes,
            omitted_changes,
            durable_seq: journal.durable_seq,
            newest_seq: shared.metadata.journal.newest_reserved(),
        }
    }

    /// Abandons this mount as a power cut would: nothing more is written,
    /// not even the superblock; writers fail with `EIO`; the background
    /// thread stops. No event or error record is written for the data this
    /// loses: losing what was not synced is what a power cut does. The
    /// caller mounts the device again (after its cache lost power) and
    /// drops this one.
    pub fn abandon(&self) {
        self.shared.device.sever();
        let _ = self.shared.gate.shut_down("the power was cut".into());
        if let Some(background) = self.background.get() {
            background.request_stop();
        }
    }
}

/// Runs of pages (first, end) as byte ranges, the last cut at `size`.
fn byte_ranges(runs: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    runs.iter()
        .map(|&(first, end)| (first * 4096, (end * 4096).min(size.max(first * 4096))))
        .collect()
}

/// The inode whose path names a change: one changed alone, naming no
/// entry (setattr, setxattr, fallocate), or the inode a link (no old
/// entry, a new one) links to.
fn named_by_inode(change: &Change) -> Option<u64> {
    match &change.entry {
        None => change.ino,
        Some(_) => None,
    }
}
