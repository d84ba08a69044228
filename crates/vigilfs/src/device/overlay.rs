//! A device that never writes to the device below it.
//!
//! Writes land in memory, sector by sector, and later reads see them; the
//! device below is only ever read. fsck uses it to run the engine's real
//! recovery (journal replay, b-tree rebuild) as a dry run: it checks the
//! filesystem exactly as a mount would see it, without changing a byte of
//! the image. A read-only mount runs over one for the same reason.
//!
//! Invariant: the base device receives reads only; a flush succeeds without
//! touching it (there is nothing below to make durable).

use std::collections::BTreeMap;
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
}

impl<D: BlockDevice> OverlayDevice<D> {
    /// An overlay over `base`, with nothing written yet.
    pub fn new(base: D) -> OverlayDevice<D> {
        OverlayDevice {
            base,
            written: Mutex::new(BTreeMap::new()),
        }
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
        for (index, bytes) in buffer.chunks(sector).enumerate() {
            written.insert(first + index as u64, bytes.to_vec());
        }
        Ok(())
    }

    fn flush(&self, _class: IoClass) -> Result<(), DeviceError> {
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
    fn misaligned_requests_are_refused_like_any_device() {
        let overlay = OverlayDevice::new(MemoryDevice::new(4096, SectorSize::Bytes512));
        assert!(overlay.write_at(100, &[0u8; 512], IoClass::Data).is_err());
        assert!(overlay
            .read_at(4096, &mut [0u8; 512], IoClass::Data)
            .is_err());
    }
}
