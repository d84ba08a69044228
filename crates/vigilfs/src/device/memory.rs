//! A device held in memory: for tests, and as the image a simulated power cut leaves behind.
//!
//! Writes land immediately and a flush only counts; there is no volatile cache to lose
//! (that is [`CrashDevice`](super::CrashDevice)'s job).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use super::{
    check_request, truncate_to_sectors, zeroed_image, BlockDevice, DeviceError, DeviceErrorKind,
    IoClass, IoOperation, SectorSize,
};

/// A zero-filled or preloaded byte vector behaving as a block device.
#[derive(Debug)]
pub struct MemoryDevice {
    bytes: RwLock<Vec<u8>>,
    length: u64,
    sector_size: SectorSize,
    flushes: AtomicU64,
}

impl MemoryDevice {
    /// A zeroed device of `length` bytes, rounded down to whole sectors.
    pub fn new(length: u64, sector_size: SectorSize) -> MemoryDevice {
        MemoryDevice::from_image(zeroed_image(length, sector_size), sector_size)
    }

    /// A device holding `image`, truncated to whole sectors.
    pub fn from_image(mut image: Vec<u8>, sector_size: SectorSize) -> MemoryDevice {
        truncate_to_sectors(&mut image, sector_size);
        MemoryDevice {
            length: image.len() as u64,
            bytes: RwLock::new(image),
            sector_size,
            flushes: AtomicU64::new(0),
        }
    }

    /// A copy of the device's bytes.
    pub fn to_image(&self) -> Vec<u8> {
        self.bytes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many flushes the device has received.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

/// The in-memory slice a checked request covers. `check_request` has already proved
/// `offset + length <= device length <= usize::MAX`, so the conversions cannot fail; they are
/// still checked so a broken invariant turns into an error instead of a panic.
fn span(
    offset: u64,
    length: usize,
    operation: IoOperation,
    class: IoClass,
    device_length: u64,
) -> Result<std::ops::Range<usize>, DeviceError> {
    let start = usize::try_from(offset);
    match start {
        Ok(start) if start.checked_add(length).is_some() => Ok(start..start + length),
        _ => Err(DeviceError::new(
            DeviceErrorKind::OutOfBounds { device_length },
            operation,
            class,
            super::ByteRange::at(offset, length as u64),
        )),
    }
}

impl BlockDevice for MemoryDevice {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        let operation = IoOperation::Read;
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length,
            self.sector_size,
        )?;
        let range = span(offset, buffer.len(), operation, class, self.length)?;
        let bytes = self.bytes.read().unwrap_or_else(PoisonError::into_inner);
        buffer.copy_from_slice(&bytes[range]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        let operation = IoOperation::Write;
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length,
            self.sector_size,
        )?;
        let range = span(offset, buffer.len(), operation, class, self.length)?;
        let mut bytes = self.bytes.write().unwrap_or_else(PoisonError::into_inner);
        bytes[range].copy_from_slice(buffer);
        Ok(())
    }

    fn flush(&self, _class: IoClass) -> Result<(), DeviceError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn length(&self) -> u64 {
        self.length
    }

    fn sector_size(&self) -> SectorSize {
        self.sector_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_bytes_read_back() {
        let device = MemoryDevice::new(8192, SectorSize::Bytes512);
        device.write_at(512, &[7; 1024], IoClass::Data).unwrap();
        let mut buffer = [0; 2048];
        device.read_at(0, &mut buffer, IoClass::Data).unwrap();
        assert!(buffer[..512].iter().all(|&byte| byte == 0));
        assert!(buffer[512..1536].iter().all(|&byte| byte == 7));
        assert!(buffer[1536..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn length_is_rounded_down_to_whole_sectors() {
        let device = MemoryDevice::new(10_000, SectorSize::Bytes4096);
        assert_eq!(device.length(), 8192);
        let device = MemoryDevice::from_image(vec![1; 1000], SectorSize::Bytes512);
        assert_eq!(device.length(), 512);
    }

    #[test]
    fn requests_past_the_end_fail_without_touching_memory() {
        let device = MemoryDevice::new(4096, SectorSize::Bytes512);
        let error = device
            .write_at(3584, &[1; 1024], IoClass::Metadata)
            .unwrap_err();
        assert_eq!(
            error.kind,
            DeviceErrorKind::OutOfBounds {
                device_length: 4096
            }
        );
        assert!(device.to_image().iter().all(|&byte| byte == 0));
    }

    #[test]
    fn flushes_are_counted() {
        let device = MemoryDevice::new(4096, SectorSize::Bytes512);
        device.flush(IoClass::Journal).unwrap();
        device.flush(IoClass::Data).unwrap();
        assert_eq!(device.flush_count(), 2);
    }
}
