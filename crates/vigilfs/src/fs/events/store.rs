//! The event log region of a mount: an image of it kept in memory (read
//! once at mount), the writes that put new records and headers on the
//! device, and reads of older records for listeners that fell behind.
//!
//! Invariants: the in-memory image is what the device holds, or will hold
//! once the writes issued so far complete; only whole filesystem blocks
//! are written (the device's sector divides them); a header copy is
//! written, then flushed, before the mount relies on what it reserves, and
//! the two copies are written alternately so a torn write leaves the other.

use std::sync::Arc;

use crate::device::{BlockDevice, DeviceError, IoClass};
use crate::format::event_log::{
    scan_region, EventRecord, Geometry, LogHeader, RegionScan, LOG_HEADER_SIZE, RECORD_SIZE,
};
use crate::format::{FsUuid, Superblock};

/// The region of one mount.
pub(super) struct Store {
    device: Arc<dyn BlockDevice>,
    geometry: Geometry,
    uuid: FsUuid,
    image: Vec<u8>,
    header_sequence: u64,
    /// The slot the next record goes to.
    next_slot: u64,
}

impl Store {
    /// Reads the region of `superblock`'s filesystem; `None` if it has
    /// none.
    pub(super) fn open(
        device: Arc<dyn BlockDevice>,
        superblock: &Superblock,
    ) -> Option<Result<(Store, RegionScan), DeviceError>> {
        let region = superblock.event_log?;
        let geometry = Geometry {
            region,
            block_size: superblock.layout.block_size,
        };
        let mut image = vec![0; geometry.bytes() as usize];
        if let Err(error) = device.read_at(geometry.start(), &mut image, IoClass::EventLog) {
            return Some(Err(error));
        }
        let scan = scan_region(&image, &geometry, &superblock.uuid);
        let header_sequence = scan.header().map_or(0, |header| header.sequence);
        let next_slot = scan
            .newest_slot
            .map_or(0, |slot| (slot + 1) % geometry.slots().max(1));
        Some(Ok((
            Store {
                device,
                geometry,
                uuid: superblock.uuid,
                image,
                header_sequence,
                next_slot,
            },
            scan,
        )))
    }

    /// The device byte offset of header copy `copy`.
    pub(super) fn device_offset_of_header(&self, copy: u64) -> u64 {
        self.geometry.start() + self.geometry.header_offset(copy)
    }

    pub(super) fn slots(&self) -> u64 {
        self.geometry.slots()
    }

    /// Writes `records` into the next slots: the blocks they touch, whole,
    /// with what the other slots of those blocks hold. After a failure the
    /// same records go to the same slots again.
    pub(super) fn write_records(&mut self, records: &[EventRecord]) -> Result<(), DeviceError> {
        let start = self.next_slot;
        let outcome = self.write_from(records);
        if outcome.is_err() {
            self.next_slot = start;
        }
        outcome
    }

    fn write_from(&mut self, records: &[EventRecord]) -> Result<(), DeviceError> {
        let block = u64::from(self.geometry.block_size);
        let slots = self.geometry.slots().max(1);
        let mut dirty: Vec<u64> = Vec::new();
        for record in records {
            let at = self.geometry.slot_offset(self.next_slot);
            self.next_slot = (self.next_slot + 1) % slots;
            self.image[at as usize..at as usize + RECORD_SIZE].copy_from_slice(&record.encode());
            let first = at / block;
            if !dirty.contains(&first) {
                dirty.push(first);
            }
        }
        dirty.sort_unstable();
        // Runs of adjacent blocks go in one write each.
        let mut index = 0;
        while index < dirty.len() {
            let start = dirty[index];
            let mut end = start + 1;
            while index + 1 < dirty.len() && dirty[index + 1] == end {
                index += 1;
                end += 1;
            }
            index += 1;
            let bytes = &self.image[(start * block) as usize..(end * block) as usize];
            self.device.write_at(
                self.geometry.start() + start * block,
                bytes,
                IoClass::EventLog,
            )?;
        }
        Ok(())
    }

    /// The slot the next record goes to.
    pub(super) fn next_slot(&self) -> u64 {
        self.next_slot
    }

    /// Makes `slot` the next record's again: records whose flush failed
    /// go to the same slots at the next try (to new ones, a record would
    /// be in the region twice).
    pub(super) fn rewind_to(&mut self, slot: u64) {
        self.next_slot = slot;
    }

    pub(super) fn flush(&self) -> Result<(), DeviceError> {
        self.device.flush(IoClass::EventLog)
    }

    /// Writes the next header copy saying `reserved_through`, and flushes.
    pub(super) fn write_header(&mut self, reserved_through: u64) -> Result<(), DeviceError> {
        let sequence = self.header_sequence + 1;
        let header = LogHeader {
            uuid: self.uuid,
            slots: self.geometry.slots(),
            sequence,
            reserved_through,
        };
        let at = self.geometry.header_offset(sequence) as usize;
        let block = self.geometry.block_size as usize;
        self.image[at..at + block].fill(0);
        self.image[at..at + LOG_HEADER_SIZE].copy_from_slice(&header.encode());
        self.device.write_at(
            self.geometry.start() + at as u64,
            &self.image[at..at + block],
            IoClass::EventLog,
        )?;
        self.device.flush(IoClass::EventLog)?;
        self.header_sequence = sequence;
        Ok(())
    }

    /// The records with ids in `first..=last` the region holds, in id
    /// order, at most `max` of them.
    pub(super) fn records_between(&self, first: u64, last: u64, max: usize) -> Vec<EventRecord> {
        // Ids are not contiguous in the region (a mount after a crash skips
        // ahead), so every slot is looked at: a few thousand checksums.
        let mut records: Vec<EventRecord> = (0..self.geometry.slots())
            .filter_map(|slot| {
                let at = self.geometry.slot_offset(slot) as usize;
                EventRecord::decode(&self.image[at..at + RECORD_SIZE]).ok()
            })
            .filter(|record| (first..=last).contains(&record.id))
            .collect();
        records.sort_by_key(|record| record.id);
        records.truncate(max);
        records
    }
}
