//! Reading a region image: both header copies and every slot decoded,
//! the records put in id order, and what the image says about how the
//! last mount ended.
//!
//! Invariants: the scan never fails as a whole. An unreadable header copy
//! is kept as its error, an empty slot is skipped, a slot that does not
//! decode is a [`SlotDefect`] and never a record, and a record found in
//! two slots (a retried write) is kept once and counted as repeated. What
//! is left is the valid records, in id order.

use super::{
    EventRecord, Geometry, LogHeader, RecordKind, EVENT_LOG_HEADER, LOG_HEADER_SIZE, RECORD_SIZE,
    SETTINGS_OTHER, SETTINGS_READ_ONLY,
};
use crate::format::identity::FsUuid;
use crate::format::FormatError;

/// A slot that holds neither nothing nor a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotDefect {
    /// Fails validation (a torn write, or damage).
    Unreadable {
        /// The slot.
        slot: u64,
        /// Why.
        error: FormatError,
    },
}

/// What a region holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionScan {
    /// Each header copy, decoded or why not.
    pub headers: [Result<LogHeader, FormatError>; 2],
    /// The valid records, by id. Ids need not be contiguous: a mount
    /// after a crash skips ahead.
    pub records: Vec<EventRecord>,
    /// The slot of the newest record, if any.
    pub newest_slot: Option<u64>,
    /// Slots that are neither empty nor a record in its place.
    pub defects: Vec<SlotDefect>,
    /// Slots repeating a record another slot holds, left out of
    /// `records` (a write retried after a failed flush: earlier builds
    /// wrote it to a new slot each time).
    pub repeated: u64,
}

impl RegionScan {
    /// The header in force: the valid copy with the highest sequence.
    pub fn header(&self) -> Option<LogHeader> {
        self.headers
            .iter()
            .filter_map(|header| header.as_ref().ok().copied())
            .max_by_key(|header| header.sequence)
    }

    /// The newest record.
    pub fn newest(&self) -> Option<&EventRecord> {
        self.records.last()
    }

    /// For a filesystem whose superblock says it stopped cleanly: the
    /// first id of the newest records the region no longer holds, if any.
    /// A clean unmount writes an UNMOUNT record last (just after the
    /// superblock); a freeze writes the superblock clean, then a FREEZE
    /// record, and the log goes on being written until the thaw. So the
    /// newest record is an UNMOUNT, or is at or after a FREEZE no THAW or
    /// MOUNT followed, or at or after a SETTINGS record of a read-only
    /// remount (which leaves the image clean too) no read-write one or
    /// MOUNT followed; otherwise records are missing (damaged, or a crash
    /// came between the two writes). A region that never held a record is
    /// not missing any.
    pub fn missing_after_clean_stop(&self) -> Option<u64> {
        let Some(newest) = self.newest() else {
            return self
                .defects
                .iter()
                .any(|defect| matches!(defect, SlotDefect::Unreadable { .. }))
                .then_some(1);
        };
        // The newest record of those `marks` picks, if it is one `stops`
        // picks.
        let newest_of = |marks: &dyn Fn(&EventRecord) -> bool,
                         stops: &dyn Fn(&EventRecord) -> bool| {
            self.records
                .iter()
                .rev()
                .find(|record| marks(record))
                .is_some_and(stops)
        };
        let ends_mount =
            |record: &EventRecord| matches!(record.kind, RecordKind::Unmount | RecordKind::Mount);
        let frozen = newest_of(
            &|record| {
                ends_mount(record) || matches!(record.kind, RecordKind::Freeze | RecordKind::Thaw)
            },
            &|record| record.kind == RecordKind::Freeze,
        );
        // A read-only remount leaves the image clean too, and the log goes
        // on after it, until the mount is read-write again.
        let read_only = newest_of(
            &|record| {
                ends_mount(record)
                    || (record.kind == RecordKind::Settings && record.value != SETTINGS_OTHER)
            },
            &|record| record.kind == RecordKind::Settings && record.value == SETTINGS_READ_ONLY,
        );
        let stopped = frozen || read_only || newest.kind == RecordKind::Unmount;
        (!stopped).then_some(newest.id + 1)
    }
}

/// Reads a region image (`bytes`, the whole region) of the filesystem
/// `uuid`.
pub fn scan_region(bytes: &[u8], geometry: &Geometry, uuid: &FsUuid) -> RegionScan {
    let slots = geometry.slots();
    let header_at = |copy: u64| -> Result<LogHeader, FormatError> {
        let start = geometry.header_offset(copy) as usize;
        let slice = bytes
            .get(start..start + LOG_HEADER_SIZE)
            .ok_or(FormatError::Truncated {
                structure: EVENT_LOG_HEADER.name,
                offset: start,
                needed: LOG_HEADER_SIZE,
                available: bytes.len().saturating_sub(start),
            })?;
        LogHeader::decode(slice, uuid, slots)
    };
    let headers = [header_at(0), header_at(1)];
    let mut records = Vec::new();
    let mut defects = Vec::new();
    let mut newest: Option<(u64, u64)> = None;
    for slot in 0..slots {
        let start = geometry.slot_offset(slot) as usize;
        let Some(slice) = bytes.get(start..start + RECORD_SIZE) else {
            break;
        };
        if slice.iter().all(|byte| *byte == 0) {
            continue;
        }
        match EventRecord::decode(slice) {
            Ok(record) => {
                if newest.is_none_or(|(id, _)| record.id > id) {
                    newest = Some((record.id, slot));
                }
                records.push(record);
            }
            Err(error) => defects.push(SlotDefect::Unreadable { slot, error }),
        }
    }
    records.sort_by_key(|record| record.id);
    let found = records.len();
    records.dedup();
    RegionScan {
        headers,
        repeated: (found - records.len()) as u64,
        records,
        newest_slot: newest.map(|(_, slot)| slot),
        defects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::event_log::SETTINGS_READ_WRITE;
    use crate::format::layout::Region;

    /// A scan of `records` (kind, and a SETTINGS record's value), ids
    /// from 1.
    fn scan_of(records: &[(RecordKind, u64)]) -> RegionScan {
        let records = records
            .iter()
            .enumerate()
            .map(|(index, &(kind, value))| {
                let mut record = EventRecord::new(index as u64 + 1, kind, 5);
                record.value = value;
                record
            })
            .collect();
        let unread = || FormatError::Truncated {
            structure: "event log header",
            offset: 0,
            needed: 1,
            available: 0,
        };
        RegionScan {
            headers: [Err(unread()), Err(unread())],
            records,
            newest_slot: None,
            defects: Vec::new(),
            repeated: 0,
        }
    }

    /// A read-only remount leaves the image clean, and the log may go on
    /// after its SETTINGS record, as after a FREEZE: nothing is missing
    /// (review 52: a crash after `remount,ro` read as lost events). Made
    /// read-write again, only an UNMOUNT ends it cleanly.
    #[test]
    fn a_read_only_remount_is_a_clean_stop_until_the_mount_is_read_write_again() {
        use RecordKind::{Error, Freeze, Mount, Settings, Thaw, Unmount};
        let clean = [
            vec![(Mount, 0), (Settings, SETTINGS_READ_ONLY)],
            vec![(Mount, 0), (Settings, SETTINGS_READ_ONLY), (Error, 0)],
            vec![
                (Mount, 0),
                (Settings, SETTINGS_READ_ONLY),
                (Settings, SETTINGS_OTHER),
            ],
            vec![(Mount, 0), (Settings, SETTINGS_READ_WRITE), (Unmount, 0)],
            // Made read-write while frozen: the freeze keeps it clean.
            vec![
                (Mount, 0),
                (Freeze, 0),
                (Settings, SETTINGS_READ_ONLY),
                (Settings, SETTINGS_READ_WRITE),
            ],
            vec![(Mount, 0), (Freeze, 0), (Error, 0)],
        ];
        for records in clean {
            assert_eq!(
                scan_of(&records).missing_after_clean_stop(),
                None,
                "{records:?}"
            );
        }
        let missing = [
            vec![(Mount, 0), (Settings, SETTINGS_OTHER)],
            vec![(Mount, 0), (Freeze, 0), (Thaw, 0)],
            vec![(Mount, 0), (Unmount, 0), (Mount, 0)],
            vec![
                (Mount, 0),
                (Settings, SETTINGS_READ_ONLY),
                (Settings, SETTINGS_READ_WRITE),
            ],
        ];
        for records in missing {
            let newest = records.len() as u64;
            assert_eq!(
                scan_of(&records).missing_after_clean_stop(),
                Some(newest + 1),
                "{records:?}"
            );
        }
    }

    #[test]
    fn a_scan_keeps_the_newest_lap_and_reports_defects() {
        let geometry = Geometry {
            region: Region {
                start: 10,
                blocks: 3,
            },
            block_size: 1024,
        };
        assert_eq!(geometry.slots(), 4);
        let uuid = FsUuid([9; 16]);
        let mut image = vec![0u8; geometry.bytes() as usize];
        let header = LogHeader {
            uuid,
            slots: 4,
            sequence: 3,
            reserved_through: 64,
        };
        image[..LOG_HEADER_SIZE].copy_from_slice(&header.encode());
        // Ids 1..=6 written in turn to 4 slots: 5 and 6 overwrote 1 and 2.
        for id in 1..=6 {
            let at = geometry.slot_offset(geometry.slot_of(id)) as usize;
            image[at..at + RECORD_SIZE]
                .copy_from_slice(&EventRecord::new(id, RecordKind::Mount, id).encode());
        }
        let scan = scan_region(&image, &geometry, &uuid);
        assert_eq!(scan.header(), Some(header));
        assert!(scan.headers[1].is_err());
        let ids: Vec<u64> = scan.records.iter().map(|record| record.id).collect();
        assert_eq!(ids, [3, 4, 5, 6]);
        assert!(scan.defects.is_empty());
        assert_eq!(scan.newest_slot, Some(geometry.slot_of(6)));

        // A torn slot reads as a defect, and its record is not there.
        let at = geometry.slot_offset(2) as usize;
        image[at + 40] ^= 0xff;
        let scan = scan_region(&image, &geometry, &uuid);
        assert_eq!(scan.defects.len(), 1, "{:?}", scan.defects);
        assert_eq!(scan.records.len(), 3);
        let other = scan_region(&image, &geometry, &FsUuid([1; 16]));
        assert!(other.header().is_none(), "another filesystem's header");

        // A record in two slots (a retried write) is read once, counted.
        let record = EventRecord::new(4, RecordKind::Mount, 4).encode();
        let at = geometry.slot_offset(2) as usize;
        image[at..at + RECORD_SIZE].copy_from_slice(&record);
        let scan = scan_region(&image, &geometry, &uuid);
        let ids: Vec<u64> = scan.records.iter().map(|record| record.id).collect();
        assert_eq!(ids, [4, 5, 6]);
        assert_eq!(scan.repeated, 1);
    }
}
