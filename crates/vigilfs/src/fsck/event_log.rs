//! Checking the event log region: both header copies, every slot, and
//! what they say against each other.
//!
//! Damage (a problem): a header copy that fails validation while the other
//! is fine is only a note (the next header write replaces it), but both
//! failing is a problem — the reservation is lost, so the next mount skips
//! a wide range of ids; two records with one id, or a record above the
//! reservation (an id handed
//! out that the header never covered). A slot failing its checksum is a
//! note: a write torn by a crash reads that way, and readers treat it as a
//! gap. The counts go into [`EventLogCounts`].

use crate::device::{BlockDevice, IoClass};
use crate::format::event_log::{scan_region, Geometry, SlotDefect};
use crate::format::Superblock;

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

/// Checks the region of `superblock`'s filesystem, if it has one.
pub(super) fn check(
    device: &dyn BlockDevice,
    superblock: &Superblock,
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
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => notes.push(Note {
            structure: STRUCTURE.into(),
            message: format!("one header copy is damaged ({error}); the other is in force"),
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
    for pair in scan.records.windows(2) {
        if pair[0].id == pair[1].id {
            problem(problems, format!("two records have id {}", pair[0].id));
        }
    }
    let reserved_through = scan.header().map(|header| header.reserved_through);
    if let (Some(reserved), Some(newest)) = (reserved_through, scan.newest()) {
        if newest.id > reserved {
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
    Some(EventLogCounts {
        slots: geometry.slots(),
        records: scan.records.len() as u64,
        ids,
        reserved_through,
        unreadable,
    })
}
