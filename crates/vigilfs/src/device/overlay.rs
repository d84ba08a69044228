//! A device that never writes to the device below it.
//!
//! Writes land in memory, sector by sector, and later reads see them; the
//! device below is only ever read. fsck uses it to run the engine's real
//! recovery (journal replay, b-tree rebuild) as a dry run: it checks the
//! filesystem exactly as a mount would see it, without changing a byte of
//! the image. A read-only mount runs over one for the same reason.
//!
//! A read-only mount remounted read-write ends its overlay:
//! [`OverlayDevice::write_through`] writes what it holds to the base (made
//! writable first), and from then on every write and flush goes to the
//! base.
//!
//! Invariant: until `write_through`, the base device receives reads only,
//! and a flush succeeds without touching it (there is nothing below to
//! make durable); after it, the overlay holds nothing and passes
//! everything through.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{
    check_request, BlockDevice, DeviceError, IoClass, IoOperation, MediaFailureCallback, SectorSize,
};

/// A copy-on-write view of `base`, writes kept in memory.
#[derive(Debug)]
pub struct OverlayDevice<D> {
    base: D,
    /// Sector number → the sector's bytes as written through the overlay.
    written: Mutex<BTreeMap<u64, Vec<u8>>>,
    /// Set once by [`OverlayDevice::write_through`], under the map's lock.
    passing_through: AtomicBool,
}

impl<D: BlockDevice> OverlayDevice<D> {
    /// An overlay over `base`, with nothing written yet.
    pub fn new(base: D) -> OverlayDevice<D> {
        OverlayDevice {
            base,
            written: Mutex::new(BTreeMap::new()),
            passing_through: AtomicBool::new(false),
        }
    }

    /// Writes the sectors held in memory to the base, flushes it, and
    /// passes every later write and flush to the base: the base must take
    /// writes now. On a failure nothing held is dropped, and the overlay
    /// still keeps writes from the base (a second call tries again).
    pub fn write_through(&self, class: IoClass) -> Result<(), DeviceError> {
        let mut written = self.written();
        if self.passing_through.load(Ordering::Acquire) {
            return Ok(());
        }
        let sector = self.base.sector_size().bytes();
        let mut sectors = written.iter().peekable();
        while let Some((&first, bytes)) = sectors.next() {
            // Consecutive sectors go in one write.
            let mut run = bytes.clone();
            let mut next = first + 1;
            while let Some((_, bytes)) = sectors.next_if(|(&number, _)| number == next) {
                run.extend_from_slice(bytes);
                next += 1;
            }
            self.base.write_at(first * sector, &run, class)?;
        }
        self.base.flush(class)?;
        written.clear();
        self.passing_through.store(true, Ordering::Release);
        Ok(())
    }

    fn written(&self) -> MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        // Each update is one insert, so a poisoned map is still consistent.
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes held in memory for written sectors.
    pub fn overlay_bytes(&self) -> u64 {
        self.written().len() as u64 * self.base.sector_size().bytes()
    }
}

impl<D: BlockDevice> BlockDevice for OverlayDevice<D> {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        check_request(
            IoOperation::Read,
            class,
            offset,
            buffer.len(),
            self.length(),
            self.sector_size(),
        )?;
        if self.passing_through.load(Ordering::Acquire) {
            // The map stays empty from then on.
            return self.base.read_at(offset, buffer, class);
        }
        let sector = self.sector_size().bytes();
        let first = offset / sector;
        let count = buffer.len() as u64 / sector;
        let written = self.written();
        // Read from the base only the runs of sectors the overlay does not
        // hold, so a sector rewritten here stays readable even if the base
        // cannot read it (a dry run over a failing disk).
        let mut number = first;
        while number < first + count {
            let at = ((number - first) * sector) as usize;
            if let Some(bytes) = written.get(&number) {
                buffer[at..at + bytes.len()].copy_from_slice(bytes);
                number += 1;
                continue;
            }
            let run_end = written
                .range(number..first + count)
                .next()
                .map_or(first + count, |(&next, _)| next);
            let end = ((run_end - first) * sector) as usize;
            self.base
                .read_at(number * sector, &mut buffer[at..end], class)?;
            number = run_end;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        check_request(
            IoOperation::Write,
            class,
            offset,
            buffer.len(),
            self.length(),
            self.sector_size(),
        )?;
        let sector = self.sector_size().bytes() as usize;
        let first = offset / sector as u64;
        let mut written = self.written();
        // Looked at under the lock: a write racing `write_through` lands
        // in the map before it is written out, or in the base after.
        if self.passing_through.load(Ordering::Acquire) {
            drop(written);
            return self.base.write_at(offset, buffer, class);
        }
        for (index, bytes) in buffer.chunks(sector).enumerate() {
            written.insert(first + index as u64, bytes.to_vec());
        }
        Ok(())
    }

    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        if self.passing_through.load(Ordering::Acquire) {
            return self.base.flush(class);
        }
        Ok(())
    }

    fn length(&self) -> u64 {
        self.base.length()
    }

    fn sector_size(&self) -> SectorSize {
        self.base.sector_size()
    }

    fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
        self.base.set_media_failure_callback(callback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;

    #[test]
    fn writes_are_seen_through_the_overlay_but_never_reach_the_base() {
        let base = MemoryDevice::new(8192, SectorSize::Bytes512);
        base.write_at(0, &[1u8; 1024], IoClass::Data).unwrap();
        let before = base.to_image();
        let overlay = OverlayDevice::new(base);
        overlay
            .write_at(512, &[9u8; 1024], IoClass::Metadata)
            .unwrap();
        overlay.flush(IoClass::Metadata).unwrap();

        let mut read = vec![0u8; 2048];
        overlay.read_at(0, &mut read, IoClass::Data).unwrap();
        assert_eq!(&read[..512], &[1u8; 512][..]);
        assert_eq!(&read[512..1536], &[9u8; 1024][..]);
        assert_eq!(&read[1536..], &[0u8; 512][..]);
        assert_eq!(overlay.base.to_image(), before);
        assert_eq!(overlay.overlay_bytes(), 1024);
    }

    #[test]
    fn rewritten_sectors_read_even_where_the_base_fails() {
        use crate::device::{Errno, FaultDevice, FaultPlan, FaultRule, Operations};
        use std::sync::Arc;
        let plan = Arc::new(FaultPlan::new());
        plan.add_rule(
            FaultRule::fail(Errno::EIO)
                .in_range(crate::device::ByteRange::new(0, 512))
                .on(Operations::READ),
        )
        .unwrap();
        let overlay = OverlayDevice::new(FaultDevice::new(
            MemoryDevice::new(4096, SectorSize::Bytes512),
            plan,
        ));
        assert!(overlay.read_at(0, &mut [0u8; 1024], IoClass::Data).is_err());
        overlay.write_at(0, &[5u8; 512], IoClass::Data).unwrap();
        let mut read = [0u8; 1024];
        overlay.read_at(0, &mut read, IoClass::Data).unwrap();
        assert_eq!(&read[..512], &[5u8; 512][..]);
        assert_eq!(&read[512..], &[0u8; 512][..]);
    }

    #[test]
    fn written_through_the_overlay_holds_nothing_and_passes_everything_to_the_base() {
        let overlay = OverlayDevice::new(MemoryDevice::new(8192, SectorSize::Bytes512));
        overlay.write_at(512, &[3u8; 1024], IoClass::Data).unwrap();
        overlay.write_at(4096, &[4u8; 512], IoClass::Data).unwrap();
        overlay.write_through(IoClass::Metadata).unwrap();
        assert_eq!(overlay.overlay_bytes(), 0);
        let image = overlay.base.to_image();
        assert_eq!(&image[512..1536], &[3u8; 1024][..]);
        assert_eq!(&image[4096..4608], &[4u8; 512][..]);
        overlay.write_at(0, &[6u8; 512], IoClass::Data).unwrap();
        assert_eq!(overlay.overlay_bytes(), 0);
        assert_eq!(&overlay.base.to_image()[..512], &[6u8; 512][..]);
        let mut read = [0u8; 1536];
        overlay.read_at(0, &mut read, IoClass::Data).unwrap();
        assert_eq!(&read[..512], &[6u8; 512][..]);
        assert_eq!(&read[512..], &[3u8; 1024][..]);
    }

    #[test]
    fn a_failed_write_through_keeps_what_the_overlay_holds() {
        use crate::device::{Errno, FaultDevice, FaultPlan, FaultRule, Operations};
        use std::sync::Arc;
        let plan = Arc::new(FaultPlan::new());
        let overlay = OverlayDevice::new(FaultDevice::new(
            MemoryDevice::new(4096, SectorSize::Bytes512),
            Arc::clone(&plan),
        ));
        overlay.write_at(1024, &[8u8; 512], IoClass::Data).unwrap();
        let rule = plan
            .add_rule(FaultRule::fail(Errno::EIO).on(Operations::WRITE))
            .unwrap();
        assert!(overlay.write_through(IoClass::Metadata).is_err());
        assert_eq!(overlay.overlay_bytes(), 512);
        // Still an overlay: a write stays in memory.
        overlay.write_at(0, &[1u8; 512], IoClass::Data).unwrap();
        assert_eq!(overlay.overlay_bytes(), 1024);
        assert!(plan.remove_rule(rule).is_some());
        overlay.write_through(IoClass::Metadata).unwrap();
        let mut read = [0u8; 1536];
        overlay.read_at(0, &mut read, IoClass::Data).unwrap();
        assert_eq!(&read[..512], &[1u8; 512][..]);
        assert_eq!(&read[1024..], &[8u8; 512][..]);
    }

    #[test]
    fn misaligned_requests_are_refused_like_any_device() {
        let overlay = OverlayDevice::new(MemoryDevice::new(4096, SectorSize::Bytes512));
        assert!(overlay.write_at(100, &[0u8; 512], IoClass::Data).is_err());
        assert!(overlay
            .read_at(4096, &mut [0u8; 512], IoClass::Data)
            .is_err());
    }
}
