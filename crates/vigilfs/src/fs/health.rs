//! Where a mounted filesystem's errors go besides the caller: the FS_ERROR
//! event stream ([`fserror::ErrorSource`]) for listeners in the process,
//! the event log ([`EventLog`]: records with ids that resume across mounts,
//! kept in the image), and the persistent error record in the superblock
//! (ext4-style first/last error and per-kind counters).
//!
//! Every error the engine meets on a path no caller will hear about in
//! full — a failed background writeback, a bad block under a read, a
//! metadata failure — is reported here once: one event (merged by the
//! listener groups as they choose) and one count in the record. The record
//! is kept in memory and marked unsaved; whoever writes the superblock next
//! (the background thread, freeze, shutdown, unmount) saves it, so the
//! error path itself never waits on the device that may be failing.
//!
//! Invariants: the in-memory record only grows (counts never go down
//! within a mount); `unsaved` is set after every change and cleared only
//! by a successful superblock write of a record at least as new.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use fserror::{Blob, ErrorReport, ErrorSource, Fsid, Subtypes};

use super::events::{ErrorInput, EventLog, Notice};
use crate::format::event_log::RecordKind;
use crate::format::{ErrorEvent, ErrorKind, ErrorOrigin, ErrorRecord};

/// One error to report.
#[derive(Debug, Clone, Copy)]
pub struct Incident<'a> {
    /// What sort of error.
    pub kind: ErrorKind,
    /// Its errno.
    pub errno: i32,
    /// The inode it concerns, and its generation.
    pub inode: Option<(u64, u32)>,
    /// The byte range of the file (or device) it concerns.
    pub range: Option<(u64, u64)>,
    /// The device block, when known.
    pub block: Option<u64>,
    /// Where it happened, for people (e.g. "writeback", "read").
    pub origin: &'a str,
}

/// What an event carries beyond an [`Incident`]: more subtypes (DATA_LOST
/// when nothing could rescue the data) and the fs-specific detail — the
/// device bytes, and for metadata the tree, level and block — which the
/// FS_ERROR blob carries as a short `key=value` text and the event log as
/// fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detail {
    /// Subtypes added to the incident kind's.
    pub subtypes: Subtypes,
    /// The failed device bytes: offset and length.
    pub device_range: Option<(u64, u64)>,
    /// The b-tree node hit: tree name, level ([`Detail::UNKNOWN_LEVEL`]
    /// when not known), block.
    pub node: Option<(&'static str, u8, u64)>,
    /// One error whatever the file: its repeats in other files are damped
    /// with it in the event log (hundreds of files whose writeback is
    /// retried and fails again would each keep a key otherwise), the
    /// record naming the first file and the last.
    pub across_files: bool,
}

impl Detail {
    /// A node level nobody knows (a node that failed before its level
    /// could be read).
    pub const UNKNOWN_LEVEL: u8 = u8::MAX;

    fn blob(&self) -> Option<Blob> {
        use std::fmt::Write as _;
        let mut text = String::new();
        if let Some((offset, length)) = self.device_range {
            let _ = write!(text, "dev={offset}+{length}");
        }
        if let Some((tree, level, block)) = self.node {
            let _ = write!(text, " tree={tree} level={level} block={block}");
        }
        (!text.is_empty()).then(|| Blob::new(text.trim_start().as_bytes()))
    }
}

/// The event source, the event log and the error record of one mount.
pub struct Health {
    source: ErrorSource,
    log: Arc<EventLog>,
    record: Mutex<ErrorRecord>,
    /// Bumped by every change of the record.
    changes: AtomicU64,
    /// The `changes` value last saved.
    saved: AtomicU64,
    /// The crash lab cut the power: what fails from then on fails because
    /// of the cut, not of the disk, and is not an error.
    powered_off: AtomicBool,
}

fn subtypes_of(kind: ErrorKind) -> Subtypes {
    match kind {
        // A failed writeback keeps its pages dirty and retries them: lost only
        // when writes stop, which says so (`Detail`).
        ErrorKind::Writeback => Subtypes::WRITEBACK,
        ErrorKind::Read => Subtypes::READ,
        ErrorKind::Metadata => Subtypes::METADATA,
        ErrorKind::Checksum => Subtypes::CHECKSUM,
        ErrorKind::Journal => Subtypes::JOURNAL,
        ErrorKind::Media => Subtypes::MEDIA,
        ErrorKind::Other => Subtypes::METADATA,
    }
}

/// Seconds since the epoch, as the superblock keeps times.
pub(super) fn seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl Health {
    /// The health of the filesystem `fsid`, continuing `record` (from the
    /// superblock), with an event log kept in memory only.
    pub fn new(fsid: u64, record: ErrorRecord) -> Health {
        Health::with_log(fsid, record, Arc::new(EventLog::in_memory()))
    }

    /// [`Health::new`] recording events in `log`.
    pub fn with_log(fsid: u64, record: ErrorRecord, log: Arc<EventLog>) -> Health {
        Health {
            source: ErrorSource::new(Fsid(fsid)),
            log,
            record: Mutex::new(record),
            changes: AtomicU64::new(0),
            saved: AtomicU64::new(0),
            powered_off: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ErrorRecord> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The event source listeners subscribe to.
    pub fn source(&self) -> &ErrorSource {
        &self.source
    }

    /// The event log.
    pub fn log(&self) -> &Arc<EventLog> {
        &self.log
    }

    /// Reports one error: an event, a record in the event log, and a count
    /// in the error record.
    pub fn report(&self, incident: &Incident<'_>) {
        self.report_with(incident, &Detail::default());
    }

    /// The crash lab is cutting the power: from now on nothing is
    /// reported. A machine that loses its power records no error for it,
    /// and the operations the cut fails (the workload's fsync, writeback
    /// in flight) are the cut's.
    pub fn power_off(&self) {
        self.powered_off.store(true, Ordering::Release);
    }

    /// [`Health::report`] with `detail`'s subtypes, device range and node.
    pub fn report_with(&self, incident: &Incident<'_>, detail: &Detail) {
        if self.powered_off.load(Ordering::Acquire) {
            return;
        }
        let errno = fserror::Errno::new(incident.errno)
            .or_else(|| fserror::Errno::new(libc::EIO))
            .expect("EIO is a valid errno");
        let subtypes = subtypes_of(incident.kind) | detail.subtypes;
        let mut report = ErrorReport::new(errno, subtypes);
        if let Some(blob) = detail.blob() {
            report = report.blob(blob);
        }
        if let Some((ino, generation)) = incident.inode {
            report = report.on_inode(ino, generation);
        }
        if let Some((offset, length)) = incident.range {
            report = report.range(offset, length);
        }
        self.source.emit(&report);
        // Generation 0 is "not known": inodes start at 1.
        let inode = incident
            .inode
            .map(|(ino, generation)| (ino, (generation != 0).then_some(u64::from(generation))));
        self.log.record_error(&ErrorInput {
            subtypes: subtypes.bits(),
            errno: errno.get(),
            inode,
            range: incident.range,
            device_range: detail.device_range,
            node: detail.node.map(|(tree, level, block)| {
                (
                    tree,
                    (level != Detail::UNKNOWN_LEVEL).then_some(level),
                    block,
                )
            }),
            origin: incident.origin,
            across_files: detail.across_files,
        });
        self.lock().record(ErrorEvent {
            time: seconds_now(),
            errno: incident.errno,
            inode: incident.inode.map(|(ino, _)| ino),
            block: incident.block,
            kind: incident.kind,
            origin: ErrorOrigin::new(incident.origin),
        });
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// The record as it is now.
    pub fn record(&self) -> ErrorRecord {
        self.lock().clone()
    }

    /// The record and a token for [`Health::saved`], if it changed since
    /// it was last saved.
    pub fn unsaved(&self) -> Option<(ErrorRecord, u64)> {
        let changes = self.changes.load(Ordering::Acquire);
        (changes != self.saved.load(Ordering::Acquire)).then(|| (self.record(), changes))
    }

    /// The record taken with `token` is on disk.
    pub fn saved(&self, token: u64) {
        self.saved.fetch_max(token, Ordering::AcqRel);
    }

    /// Records an operational event in the event log.
    pub fn notice(&self, notice: &Notice<'_>) {
        self.log.record_notice(notice);
    }

    /// The terminal SHUTDOWN event.
    pub fn shut_down(&self, why: &str) {
        self.log.record_terminal(RecordKind::Shutdown, why);
        self.source.shutdown();
    }

    /// The terminal UNMOUNT event.
    pub fn unmounted(&self) {
        self.log.record_terminal(RecordKind::Unmount, "unmounted");
        self.source.unmount();
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use fserror::{EventKind, Group, GroupConfig};

    use super::*;

    fn incident(kind: ErrorKind) -> Incident<'static> {
        Incident {
            kind,
            errno: libc::EIO,
            inode: Some((7, 1)),
            range: Some((4096, 4096)),
            block: Some(99),
            origin: "test",
        }
    }

    #[test]
    fn a_report_is_an_event_and_a_count() {
        let health = Health::new(1, ErrorRecord::default());
        let group = Group::new(GroupConfig::merge());
        group.subscribe(health.source()).unwrap();
        health.report(&incident(ErrorKind::Writeback));
        let mut kinds = Vec::new();
        while let Ok(event) = group.read_timeout(Duration::from_millis(10)) {
            kinds.push(event.kind);
        }
        assert!(kinds.contains(&EventKind::Error), "events: {kinds:?}");
        let record = health.record();
        assert_eq!(record.total, 1);
        assert_eq!(record.counter(ErrorKind::Writeback).count, 1);
        assert_eq!(record.first.as_ref().unwrap().inode, Some(7));
    }

    #[test]
    fn a_detailed_report_carries_its_subtypes_and_device_bytes() {
        let health = Health::new(1, ErrorRecord::default());
        let group = Group::new(GroupConfig::merge());
        group.subscribe(health.source()).unwrap();
        let detail = Detail {
            subtypes: Subtypes::DATA_LOST,
            device_range: Some((8192, 4096)),
            node: Some(("extents", 1, 2)),
            across_files: false,
        };
        health.report_with(&incident(ErrorKind::Media), &detail);
        let event = std::iter::from_fn(|| group.read_timeout(Duration::from_millis(10)).ok())
            .find(|event| event.kind == EventKind::Error)
            .expect("an error event");
        assert!(event
            .subtypes
            .contains(Subtypes::MEDIA | Subtypes::DATA_LOST));
        let blob = event.first.unwrap().blob;
        assert_eq!(
            blob.as_bytes(),
            b"dev=8192+4096 tree=extents level=1 block=2"
        );
        assert_eq!(health.record().counter(ErrorKind::Media).count, 1);
    }

    #[test]
    fn the_record_is_unsaved_until_saved_with_a_current_token() {
        let health = Health::new(1, ErrorRecord::default());
        assert!(health.unsaved().is_none());
        health.report(&incident(ErrorKind::Read));
        let (_, token) = health.unsaved().unwrap();
        health.report(&incident(ErrorKind::Read));
        health.saved(token);
        let (record, newer) = health.unsaved().expect("a change after the save");
        assert_eq!(record.total, 2);
        health.saved(newer);
        assert!(health.unsaved().is_none());
    }

    #[test]
    fn shutdown_is_the_last_event() {
        let health = Health::new(1, ErrorRecord::default());
        let group = Group::new(GroupConfig::merge().with_capacity(NonZeroUsize::new(4).unwrap()));
        group.subscribe(health.source()).unwrap();
        health.shut_down("test");
        health.report(&incident(ErrorKind::Media));
        let mut last = None;
        while let Ok(event) = group.read_timeout(Duration::from_millis(10)) {
            last = Some(event.kind);
        }
        assert_eq!(last, Some(EventKind::Shutdown));
    }
}
