//! Opening the log at mount: the region read, the next id chosen and ids
//! reserved ahead before any is handed out; and a read-only mount's log
//! made writable on remount.
//!
//! Invariant: no id is handed out that a crash could make the next mount
//! give again. After an unclean stop the log resumes above the reservation
//! the header recorded (and far above everything when both headers are
//! lost), and the ids skipped are named so a reader can tell the gap from
//! an empty stretch. A region that cannot be read or reserved costs the
//! mount only its durable log, never the mount itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ring::LogState;
use super::store::Store;
use super::{lock, EventLog, EventLogEnd, RESERVATION};
use crate::device::BlockDevice;
use crate::format::event_log::{EventRecord, RecordKind, RegionScan};
use crate::format::Superblock;

/// Ids skipped when the region's headers are both unreadable: far more
/// than any reservation, so no id handed out before is given again.
const LOST_HEADER_SKIP: u64 = 1 << 20;

/// What [`EventLog::open`] found.
pub struct OpenedLog {
    /// The log.
    pub log: EventLog,
    /// Ids skipped after an unclean stop (the MOUNT record names them).
    pub skipped: Option<(u64, u64)>,
    /// Header copies that failed validation. After a clean stop every
    /// header write had landed whole, so this is damage, not a torn write.
    pub damaged_headers: Vec<HeaderDamage>,
    /// The errors the log on the device counts (`errors_total` of its
    /// newest record), and its error records, oldest first: what the error
    /// record in the superblock may lag behind after a crash.
    pub durable_errors: (u64, Vec<EventRecord>),
}

impl OpenedLog {
    fn without_region(log: EventLog) -> OpenedLog {
        OpenedLog {
            log,
            skipped: None,
            damaged_headers: Vec::new(),
            durable_errors: (0, Vec::new()),
        }
    }
}

/// A header copy of the region that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderDamage {
    /// Where it is on the device.
    pub device_offset: u64,
    /// Which copy, and what is wrong with it.
    pub why: String,
}

impl EventLog {
    /// Opens the log of the filesystem on `device`: reads the region,
    /// picks the next id (above the reservation after an unclean stop) and,
    /// unless `read_only`, reserves ids ahead before any is handed out.
    /// Returns the log, the ids skipped, if any, and the header copies
    /// found damaged (the next header write replaces one). A region that
    /// cannot be read or reserved leaves a log in memory only, and says why
    /// in its status: the mount goes on.
    pub fn open(
        device: Arc<dyn BlockDevice>,
        superblock: &Superblock,
        read_only: bool,
        before_power_cut: Option<EventLogEnd>,
    ) -> OpenedLog {
        let (store, scan) = match Store::open(device, superblock) {
            None => return OpenedLog::without_region(EventLog::in_memory()),
            Some(Err(error)) => {
                let mut log = EventLog::in_memory();
                log.unavailable = Some(format!("reading the event log region: {error}"));
                return OpenedLog::without_region(log);
            }
            Some(Ok(opened)) => opened,
        };
        let damaged_headers = (0..2u64)
            .filter_map(|copy| {
                let error = scan.headers[copy as usize].as_ref().err()?;
                Some(HeaderDamage {
                    device_offset: store.device_offset_of_header(copy),
                    why: format!("event log header copy {copy}: {error}"),
                })
            })
            .collect();
        let durable_errors = (
            scan.newest().map_or(0, |record| record.errors_total),
            scan.records
                .iter()
                .filter(|record| record.kind == RecordKind::Error)
                .cloned()
                .collect(),
        );
        let (log, skipped) = EventLog::resume(store, &scan, read_only, before_power_cut);
        OpenedLog {
            log,
            skipped,
            damaged_headers,
            durable_errors,
        }
    }

    /// [`EventLog::open`] once the region is read.
    fn resume(
        mut store: Store,
        scan: &RegionScan,
        read_only: bool,
        before_power_cut: Option<EventLogEnd>,
    ) -> (EventLog, Option<(u64, u64)>) {
        let newest = scan.newest().copied();
        let newest_id = newest.map_or(0, |record| record.id);
        let clean = newest.is_none_or(|record| record.kind == RecordKind::Unmount);
        // A simulated power cut: its process knows how far ids went, so
        // none is skipped; the ids it handed out that the region lacks are
        // a loss whose size the running sum tells.
        let known = before_power_cut.filter(|end| !clean && end.newest_id >= newest_id);
        let base = match (known, scan.header()) {
            (Some(end), _) => end.newest_id,
            (None, Some(_)) if clean => newest_id,
            (None, Some(header)) => header.reserved_through.max(newest_id),
            // Both headers lost: what was reserved is unknown.
            (None, None) if newest_id == 0 && scan.defects.is_empty() => 0,
            (None, None) => newest_id + LOST_HEADER_SKIP,
        };
        let skipped = (known.is_none() && base > newest_id).then_some((newest_id + 1, base));
        let sealed_total = known.map_or_else(
            || newest.map_or(0, |record| record.errors_total),
            |end| end.errors_total,
        );
        let slots = store.slots();
        if read_only {
            // Nothing is written: ids live in this mount only.
            let state = LogState::new(base + 1, u64::MAX, sealed_total);
            return (
                EventLog::assemble(state, Some(store), false, slots, None),
                skipped,
            );
        }
        let reserved = base + RESERVATION;
        match store.write_header(reserved) {
            Ok(()) => {
                let state = LogState::new(base + 1, reserved, sealed_total);
                (
                    EventLog::assemble(state, Some(store), true, slots, None),
                    skipped,
                )
            }
            Err(error) => {
                let state = LogState::new(base + 1, u64::MAX, sealed_total);
                (
                    EventLog::assemble(
                        state,
                        Some(store),
                        false,
                        slots,
                        Some(format!("reserving event ids: {error}")),
                    ),
                    skipped,
                )
            }
        }
    }

    /// A read-only mount remounted read-write: reserves ids ahead in the
    /// region's header, then writes what this mount recorded so far (the
    /// records still in the ring; older ones are a gap a reader is told
    /// of) and everything after. A log without a region, or writable
    /// already, stays as it is. A failure leaves the log in memory only,
    /// counted in its status.
    pub fn make_writable(&self) -> Result<(), String> {
        let mut store = lock(&self.store);
        let Some(region) = store.as_mut() else {
            return Ok(());
        };
        if self.writable.load(Ordering::Acquire) {
            return Ok(());
        }
        // Not under the ring's lock: the error path never waits for the
        // device. Ids handed out meanwhile stay below the reservation, far
        // ahead; the writer raises it when it runs low.
        let reserved = self.state().next_id + RESERVATION;
        if let Err(error) = region.write_header(reserved) {
            let message = format!("reserving event ids: {error}");
            self.count_failure(message.clone());
            return Err(message);
        }
        {
            let mut state = self.state();
            state.reserved_through = reserved;
            // Read-only, every record counted as written without being
            // so: from this mount's first on, they are written now.
            let before_mount = state.mount_first_id - 1;
            state.written_through = state.written_through.min(before_mount);
            state.committed_through = state.committed_through.min(before_mount);
        }
        self.writable.store(true, Ordering::Release);
        drop(store);
        self.persist()
    }
}
