//! A device whose writes can be stopped for good.
//!
//! A mount writes through one: once the filesystem is shut down, or made
//! read-only by the `errors=remount-ro` policy, [`StoppableDevice::stop`]
//! makes every later write and flush fail, whoever issues it: a writeback
//! already in flight, a journal commit, a b-tree node write. So "nothing is
//! written after a shutdown" holds by construction rather than by every
//! caller remembering to check (XFS stops its log the same way). Reads go
//! on. The superblock and event log classes are exempt: the persistent
//! error record and the event log (which records the shutdown itself) are
//! still saved when they can be; neither is file data or metadata a
//! replay depends on.
//!
//! [`StoppableDevice::sever`] stops the superblock's writes too: the mount
//! is abandoned (a simulated power cut) and another one takes the device.
//!
//! Invariant: `stopped` and `severed` only ever go from false to true.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{
    BlockDevice, ByteRange, DeviceError, DeviceErrorKind, IoClass, IoOperation,
    MediaFailureCallback, SectorSize,
};

/// A device that refuses writes once stopped. See the module comment.
pub struct StoppableDevice {
    inner: Arc<dyn BlockDevice>,
    stopped: AtomicBool,
    /// Stopped without the superblock's exemption: the mount is abandoned.
    severed: AtomicBool,
}

impl std::fmt::Debug for StoppableDevice {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoppableDevice")
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

impl StoppableDevice {
    /// `inner`, writable until stopped.
    pub fn new(inner: Arc<dyn BlockDevice>) -> StoppableDevice {
        StoppableDevice {
            inner,
            stopped: AtomicBool::new(false),
            severed: AtomicBool::new(false),
        }
    }

    /// From now on every write and flush fails, the superblock's and the
    /// event log's too: the mount is abandoned (a simulated power cut), and
    /// another mount of the same device takes over.
    pub fn sever(&self) {
        self.severed.store(true, Ordering::Release);
        self.stop();
    }

    /// From now on every write and flush but the superblock's and the event
    /// log's fails.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Whether [`StoppableDevice::sever`] was called.
    pub fn is_severed(&self) -> bool {
        self.severed.load(Ordering::Acquire)
    }

    /// Whether [`StoppableDevice::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn refuse(
        &self,
        operation: IoOperation,
        class: IoClass,
        range: ByteRange,
    ) -> Result<(), DeviceError> {
        let severed = self.severed.load(Ordering::Acquire);
        let exempt = matches!(class, IoClass::Superblock | IoClass::EventLog) && !severed;
        if !exempt && self.is_stopped() {
            return Err(DeviceError::new(
                DeviceErrorKind::Stopped,
                operation,
                class,
                range,
            ));
        }
        Ok(())
    }
}

impl BlockDevice for StoppableDevice {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        self.inner.read_at(offset, buffer, class)
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        let range = ByteRange {
            start: offset,
            end: offset.saturating_add(buffer.len() as u64),
        };
        self.refuse(IoOperation::Write, class, range)?;
        self.inner.write_at(offset, buffer, class)
    }

    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        self.refuse(IoOperation::Flush, class, ByteRange { start: 0, end: 0 })?;
        self.inner.flush(class)
    }

    fn length(&self) -> u64 {
        self.inner.length()
    }

    fn sector_size(&self) -> SectorSize {
        self.inner.sector_size()
    }

    fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
        self.inner.set_media_failure_callback(callback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;

    #[test]
    fn a_stopped_device_refuses_writes_and_flushes_but_the_superblocks() {
        let memory: Arc<dyn BlockDevice> =
            Arc::new(MemoryDevice::new(1 << 20, SectorSize::Bytes512));
        let device = StoppableDevice::new(memory);
        device.write_at(0, &[1; 512], IoClass::Data).unwrap();
        device.stop();
        let refused = device.write_at(512, &[2; 512], IoClass::Journal);
        assert_eq!(refused.unwrap_err().kind, DeviceErrorKind::Stopped);
        assert!(device.flush(IoClass::Data).is_err());
        device.write_at(0, &[3; 512], IoClass::Superblock).unwrap();
        device.flush(IoClass::Superblock).unwrap();
        let mut buffer = [0; 512];
        device.read_at(512, &mut buffer, IoClass::Data).unwrap();
        assert_eq!(buffer, [0; 512], "the refused write did not land");
    }
}
