//! The event log region: a bounded ring of checksummed event records, and
//! the two header copies that say which event ids may have been handed out.
//!
//! ```text
//! region block 0     header copy A (512 bytes, rest zero)
//! region block 1     header copy B
//! region block 2..   record slots, 256 bytes each, written in turn (the slot
//!                    after the newest record's is the next), wrapping
//! ```
//!
//! Header (structure "VGEVHDR\0", version 1, 512 bytes): the filesystem
//! uuid (16), the number of slots (u64), a write sequence (u64, the copy
//! with the highest valid one wins; copies are written alternately, so a
//! torn write leaves the other), and `reserved_through` (u64): no event id
//! above it has ever been handed out to anyone. A mount raises it (write,
//! flush) *before* handing out ids beyond it, so after a crash the next
//! mount resumes above it and an id a listener saw is never given again.
//!
//! Record (structure "VGEVREC\0", version 1, 256 bytes):
//!
//! ```text
//!  24 id u64            32 first time (ns) u64   40 last time (ns) u64
//!  48 kind u16          50 flags u16             52 errno i32
//!  56 subtypes u32      60 level u8, 3 zero      64 count u64
//!  72 inode u64         80 generation u64        88 offset u64
//!  96 length u64       104 device offset u64    112 device length u64
//! 120 node block u64   128 last errno i32       132 zero u32
//! 136 last inode u64   144 errors_total u64     152 gap first u64
//! 160 gap last u64     168 value u64            176 tree name (16, NUL padded)
//! 192 text (56, UTF-8, NUL padded)              248 zero u64
//! ```
//!
//! Invariants: records go to consecutive slots whatever their ids (a mount
//! after a crash skips ids, never slots, so the oldest record is always the
//! one overwritten); ids of valid records are unique; absent values
//! have their flag clear and their field zero. A slot of zeros is empty
//! (never written). A slot failing its checksum is unreadable — a write a
//! crash tore, or damage — and reads as a gap, never as an event. Records
//! are rewritten only with identical bytes or replaced by a newer lap, so a
//! torn write never damages a record that was durable before it.

mod log_header;
mod record;
mod scan;

use super::header::{Magic, StructureType};
use super::layout::Region;
use super::FormatError;

pub use log_header::LogHeader;
pub use record::{
    EventRecord, InlineText, NodeRef, RecordKind, SETTINGS_OTHER, SETTINGS_READ_ONLY,
    SETTINGS_READ_WRITE, TEXT_CAPACITY,
};
pub use scan::{scan_region, RegionScan, SlotDefect};

/// Bytes per record slot.
pub const RECORD_SIZE: usize = 256;

/// Event ids stay below this (2^62), in records and in the header's
/// `reserved_through`: far past any real count of events, so id
/// arithmetic never overflows however the region was damaged.
pub const MAX_EVENT_ID: u64 = 1 << 62;

/// Bytes of a header copy.
pub const LOG_HEADER_SIZE: usize = 512;

/// Blocks of the region that hold header copies.
pub const HEADER_BLOCKS: u64 = 2;

/// Smallest region: the two header blocks and one block of records.
pub const MIN_EVENT_LOG_BLOCKS: u64 = HEADER_BLOCKS + 1;

/// An event record's structure type.
pub const EVENT_RECORD: StructureType = StructureType {
    name: "event record",
    magic: Magic(*b"VGEVREC\0"),
    oldest_version: 1,
    current_version: 1,
    fixed_length: Some(RECORD_SIZE as u32),
};

/// The event log header's structure type.
pub const EVENT_LOG_HEADER: StructureType = StructureType {
    name: "event log header",
    magic: Magic(*b"VGEVHDR\0"),
    oldest_version: 1,
    current_version: 1,
    fixed_length: Some(LOG_HEADER_SIZE as u32),
};

fn invalid(structure: &'static str, field: &'static str, reason: &str) -> FormatError {
    FormatError::InvalidField {
        structure,
        field,
        reason: reason.to_string(),
    }
}

/// Where the region's parts are, for a region of a filesystem with
/// `block_size`-byte blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The region, in filesystem blocks.
    pub region: Region,
    /// The filesystem's block size.
    pub block_size: u32,
}

impl Geometry {
    /// Byte offset of the region on the device.
    pub fn start(&self) -> u64 {
        self.region.start * u64::from(self.block_size)
    }

    /// Bytes of the region.
    pub fn bytes(&self) -> u64 {
        self.region.blocks * u64::from(self.block_size)
    }

    /// Byte offset, within the region, of header copy `copy` (0 or 1).
    pub fn header_offset(&self, copy: u64) -> u64 {
        (copy % HEADER_BLOCKS) * u64::from(self.block_size)
    }

    /// Byte offset, within the region, of the first slot.
    pub fn slots_offset(&self) -> u64 {
        HEADER_BLOCKS * u64::from(self.block_size)
    }

    /// Record slots.
    pub fn slots(&self) -> u64 {
        self.region.blocks.saturating_sub(HEADER_BLOCKS) * u64::from(self.block_size)
            / RECORD_SIZE as u64
    }

    /// The slot id `id` takes in a log written from id 1 with no ids
    /// skipped (records go to consecutive slots).
    pub fn slot_of(&self, id: u64) -> u64 {
        (id.max(1) - 1) % self.slots().max(1)
    }

    /// Byte offset, within the region, of slot `slot`.
    pub fn slot_offset(&self, slot: u64) -> u64 {
        self.slots_offset() + slot * RECORD_SIZE as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::identity::FsUuid;

    /// A forged id near u64::MAX once overflowed the mount's id
    /// arithmetic (a panic in a debug build, a wrap in a release one).
    #[test]
    fn ids_past_the_highest_are_refused_in_records_and_headers() {
        let highest = EventRecord::new(MAX_EVENT_ID - 1, RecordKind::Error, 5);
        assert!(EventRecord::decode(&highest.encode()).is_ok());
        for id in [MAX_EVENT_ID, u64::MAX] {
            let forged = EventRecord::new(id, RecordKind::Error, 5);
            let refused = EventRecord::decode(&forged.encode()).unwrap_err();
            assert!(refused.to_string().contains("id"), "{refused}");
        }
        let uuid = FsUuid([7; 16]);
        let header = |reserved_through| LogHeader {
            uuid,
            slots: 64,
            sequence: 1,
            reserved_through,
        };
        assert!(LogHeader::decode(&header(MAX_EVENT_ID - 1).encode(), &uuid, 64).is_ok());
        let refused = LogHeader::decode(&header(u64::MAX).encode(), &uuid, 64).unwrap_err();
        assert!(
            refused.to_string().contains("reserved_through"),
            "{refused}"
        );
    }
}
