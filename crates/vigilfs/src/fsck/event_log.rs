//! Checking the event log region: both header copies, every slot, and
//! what they say against each other.
//!
//! Problems: both header copies failing validation (the reservation is
//! lost, so the next mount skips a wide range of ids); one failing after
//! a clean stop (every header write had landed whole: the medium changed
//! it, as the mount reports); two different records with one id; a record
//! above the reservation (an id handed out that the header never
//! covered). Notes: one header copy failing after an unclean stop (a
//! write torn by the crash; the next header write replaces it); the same
//! record in two slots (a write retried after a failed flush; the scan
//! shows it once); a slot failing its checksum (a torn write, which
//! readers treat as a gap). The counts go into [`EventLogCounts`].

use crate::device::{BlockDevice, IoClass};
use crate::format::event_log::{scan_region, EventRecord, Geometry, RecordKind, SlotDefect};
use crate::format::{ErrorRecord, FsState, Superblock};

use super::{Note, Problem};

/// What the event log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLogCounts {
    /// Record slots.
    pub slots: u64,
    /// Valid records (of the newest lap).
    pub records: u64,
    /// The oldest and newest ids kept, if any.
    pub ids: Option<(u64, u64)>,
    /// Ids the header reserves.
    pub reserved_through: Option<u64>,
    /// Slots that fail validation.
    pub unreadable: u64,
}

const STRUCTURE: &str = "event log";

/// Checks the region of `superblock`'s filesystem, if it has one, and
/// brings `error_record` (the superblock's) up to the errors the log
/// counts, as the next mount will (a crash can leave the record behind).
pub(super) fn check(
    device: &dyn BlockDevice,
    superblock: &Superblock,
    error_record: &mut ErrorRecord,
    problems: &mut Vec<Problem>,
    notes: &mut Vec<Note>,
) -> Option<EventLogCounts> {
    let Some(region) = superblock.event_log else {
        notes.push(Note {
            structure: STRUCTURE.into(),
            message: "none: the image was made without an event log region".into(),
        });
        return None;
    };
    let geometry = Geometry {
        region,
        block_size: superblock.layout.block_size,
    };
    let mut image = vec![0; geometry.bytes() as usize];
    if let Err(error) = device.read_at(geometry.start(), &mut image, IoClass::EventLog) {
        problems.push(Problem {
            structure: STRUCTURE.into(),
            message: format!("cannot be read: {error}"),
        });
        return None;
    }
    let scan = scan_region(&image, &geometry, &superblock.uuid);
    let problem = |problems: &mut Vec<Problem>, message: String| {
        problems.push(Problem {
            structure: STRUCTURE.into(),
            message,
        });
    };
    match (&scan.headers[0], &scan.headers[1]) {
        (Err(first), Err(second)) => problem(
            problems,
            format!(
                "both header copies are damaged ({first}; {second}): the id reservation is lost"
            ),
        ),
        (Err(error), Ok(_)) | (Ok(_), Err(error)) if superblock.state == FsState::Clean => problem(
            problems,
            format!(
                "one header copy is damaged after a clean stop ({error}); the other is in \
                     force, and the next mount reports and replaces it"
            ),
        ),
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => notes.push(Note {
            structure: STRUCTURE.into(),
            message: format!(
                "one header copy is damaged ({error}), as a write torn by the crash leaves it; \
                 the other is in force"
            ),
        }),
        (Ok(_), Ok(_)) => {}
    }
    let unreadable = scan
        .defects
        .iter()
        .filter(|defect| matches!(defect, SlotDefect::Unreadable { .. }))
        .count() as u64;
    if unreadable > 0 {
        notes.push(Note {
            structure: STRUCTURE.into(),
            message: format!(
                "{unreadable} slots fail their checksum (writes torn by a crash, or damage): \
                 readers show them as gaps"
            ),
        });
    }
    if let Some(first) = scan
        .missing_after_clean_stop()
        .filter(|_| superblock.state == FsState::Clean)
    {
        notes.push(Note {
            structure: STRUCTURE.into(),
            message: format!(
                "the newest events are missing, from id {first} on: the superblock says the \
                 filesystem was unmounted cleanly, which writes an unmount event last, and it \
                 is not here (damaged, or a crash came during the unmount); readers show them \
                 as lost"
            ),
        });
    }
    for pair in scan.records.windows(2) {
        if pair[0].id == pair[1].id {
            problem(problems, format!("two records have id {}", pair[0].id));
        }
    }
    if scan.repeated > 0 {
        notes.push(Note {
            structure: STRUCTURE.into(),
            message: format!(
                "{} slots repeat a record another slot holds (a write retried after a failed \
                 flush): readers show it once",
                scan.repeated
            ),
        });
    }
    let reserved_through = scan.header().map(|header| header.reserved_through);
    let one_copy_damaged = scan.headers.iter().filter(|header| header.is_err()).count() == 1;
    if let (Some(reserved), Some(newest)) = (reserved_through, scan.newest()) {
        if newest.id > reserved && one_copy_damaged {
            // The damaged copy was the newer one and held the reservation
            // these ids came from; the mount reserves past the newest
            // record, so no id is handed out twice.
            notes.push(Note {
                structure: STRUCTURE.into(),
                message: format!(
                    "record {} is above the surviving header's reservation ({reserved}): the \
                     damaged copy held a later one; the next mount reserves past it",
                    newest.id
                ),
            });
        } else if newest.id > reserved {
            problem(
                problems,
                format!(
                    "record {} is above the reservation ({reserved}): an id was handed out \
                     that the header never covered",
                    newest.id
                ),
            );
        }
    }
    let ids = scan
        .records
        .first()
        .zip(scan.newest())
        .map(|(oldest, newest)| (oldest.id, newest.id));
    let errors_total = scan.newest().map_or(0, |record| record.errors_total);
    let saved = error_record.total;
    if errors_total > saved {
        let error_records: Vec<EventRecord> = scan
            .records
            .iter()
            .filter(|record| record.kind == RecordKind::Error)
            .cloned()
            .collect();
        error_record.catch_up_with_log(errors_total, &error_records);
        notes.push(Note {
            structure: "error record".into(),
            message: format!(
                "the event log counts {errors_total} errors, the error record {saved} (a crash \
                 came before it was saved): shown caught up, as the next mount records it"
            ),
        });
    }
    Some(EventLogCounts {
        slots: geometry.slots(),
        records: scan.records.len() as u64,
        ids,
        reserved_through,
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::device::{BlockDevice, IoClass, MemoryDevice, SectorSize};
    use crate::format::event_log::{scan_region, Geometry, RegionScan, RECORD_SIZE};
    use crate::format::read_superblock;
    use crate::fs::{Filesystem, MountOptions};
    use crate::fsck::fsck;
    use crate::mkfs::{make_filesystem, MkfsOptions};

    /// The event log region of the filesystem on `device`, read.
    fn scanned(device: &dyn BlockDevice) -> (Geometry, RegionScan) {
        let superblock = read_superblock(device).unwrap().superblock;
        let geometry = Geometry {
            region: superblock.event_log.expect("an event log"),
            block_size: superblock.layout.block_size,
        };
        let mut image = vec![0; geometry.bytes() as usize];
        device
            .read_at(geometry.start(), &mut image, IoClass::EventLog)
            .unwrap();
        let scan = scan_region(&image, &geometry, &superblock.uuid);
        (geometry, scan)
    }

    /// The header copies alternate: with the newer one damaged, the older
    /// one's reservation is older than the records written under the newer
    /// one. That is what a damaged copy looks like, not an id handed out
    /// twice (the next mount reserves past the newest record), so fsck
    /// notes it: the one problem is the damaged copy itself (after a clean
    /// stop, as the mount reports it).
    #[test]
    fn records_above_an_older_surviving_header_are_a_note_not_damage() {
        let device: Arc<dyn BlockDevice> =
            Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        make_filesystem(Arc::clone(&device), &MkfsOptions::default()).unwrap();
        // One mount: the copy mkfs wrote reserves nothing, the mount's
        // reserves the ids its records have.
        let fs = Filesystem::mount(Arc::clone(&device), MountOptions::default()).unwrap();
        fs.unmount().unwrap();
        let (geometry, scan) = scanned(device.as_ref());
        let sequence = |copy: usize| scan.headers[copy].as_ref().unwrap().sequence;
        let newer = if sequence(0) > sequence(1) { 0 } else { 1 };
        let offset = geometry.start() + geometry.header_offset(newer);
        let mut sector = [0u8; 512];
        device
            .read_at(offset, &mut sector, IoClass::EventLog)
            .unwrap();
        sector[40] ^= 0xff;
        device.write_at(offset, &sector, IoClass::EventLog).unwrap();
        device.flush(IoClass::EventLog).unwrap();

        let report = fsck(Arc::clone(&device), &mut |_| {}).unwrap();
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        assert!(
            report.problems[0]
                .message
                .contains("header copy is damaged after a clean stop"),
            "{:#?}",
            report.problems
        );
        assert!(
            report
                .notes
                .iter()
                .any(|note| note.message.contains("the damaged copy held a later one")),
            "{:#?}",
            report.notes
        );
    }
    /// A clean unmount writes its UNMOUNT record last: with that record
    /// damaged, the newest events are missing, and fsck says so (it said
    /// nothing but that a slot failed its checksum; review 38).
    #[test]
    fn a_damaged_newest_record_after_a_clean_unmount_is_told_missing() {
        let device: Arc<dyn BlockDevice> =
            Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        make_filesystem(Arc::clone(&device), &MkfsOptions::default()).unwrap();
        for _ in 0..2 {
            let fs = Filesystem::mount(Arc::clone(&device), MountOptions::default()).unwrap();
            fs.unmount().unwrap();
        }
        let missing = |report: &crate::fsck::FsckReport| {
            report
                .notes
                .iter()
                .filter(|note| note.message.contains("the newest events are missing"))
                .map(|note| note.message.clone())
                .collect::<Vec<_>>()
        };
        let report = fsck(Arc::clone(&device), &mut |_| {}).unwrap();
        assert!(missing(&report).is_empty(), "{:#?}", report.notes);

        let (geometry, scan) = scanned(device.as_ref());
        let newest = scan.newest().unwrap().id;
        let offset = geometry.start()
            + geometry.slots_offset()
            + scan.newest_slot.unwrap() * RECORD_SIZE as u64;
        let sector_start = offset / 512 * 512;
        let mut sector = [0u8; 512];
        device
            .read_at(sector_start, &mut sector, IoClass::EventLog)
            .unwrap();
        sector[(offset - sector_start) as usize + 100] ^= 0x01;
        device
            .write_at(sector_start, &sector, IoClass::EventLog)
            .unwrap();

        let report = fsck(Arc::clone(&device), &mut |_| {}).unwrap();
        let said = missing(&report);
        assert_eq!(said.len(), 1, "{:#?}", report.notes);
        assert!(
            said[0].contains(&format!("from id {newest} on")),
            "{said:?}"
        );

        // A freeze also leaves the superblock clean, and the log goes on
        // after its FREEZE record: a mount process that dies frozen lost
        // nothing (review 39: a false loss).
        let fs = Filesystem::mount(Arc::clone(&device), MountOptions::default()).unwrap();
        fs.freeze().unwrap();
        drop(fs);
        let report = fsck(Arc::clone(&device), &mut |_| {}).unwrap();
        assert!(missing(&report).is_empty(), "{:#?}", report.notes);
    }
}
