//! Block devices: the lowest layer of the engine, and the only one that touches storage.
//!
//! Everything above reads and writes through the [`BlockDevice`] trait. Implementations:
//!
//! - [`FileDevice`]: an image file or a real block device (pread/pwrite, fdatasync on flush);
//! - [`MemoryDevice`]: a byte vector, for tests and for crash images;
//! - [`CrashDevice`]: memory with a volatile write cache, so a power cut can drop or tear
//!   every write issued since the last flush;
//! - [`FaultDevice`]: a wrapper that injects errors according to a live, shared [`FaultPlan`];
//! - [`OverlayDevice`]: a wrapper that keeps writes in memory, so fsck can dry-run recovery
//!   without changing the image;
//! - [`StoppableDevice`]: a wrapper whose writes a mount stops for good at a shutdown;
//! - [`VolatileCache`]: a volatile write cache over a real device, so a live mount can lose
//!   power on command (the crash lab).
//!
//! Invariants every implementation keeps (checked by [`check_request`] before any I/O):
//!
//! - offsets and lengths are multiples of the device's [`SectorSize`], so a single sector is
//!   the unit that is written atomically, and a torn write tears only at sector boundaries;
//! - no request touches a byte at or beyond [`BlockDevice::length`];
//! - every request names the [`IoClass`] it serves, so faults can target, say, only data
//!   writes while the journal keeps working (what fstests does with a separate log device);
//! - errors are returned, never swallowed: a device that cannot tell whether data reached
//!   the medium reports an error.

mod crash;
mod error;
mod fault;
mod file;
mod io_owner;
mod memory;
mod overlay;
mod seeded_random;
mod stoppable;
mod volatile;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use crash::{CrashDevice, CrashMode};
pub use error::{DeviceError, DeviceErrorKind, Errno};
pub use fault::{
    DelayGate, FaultDevice, FaultEffect, FaultLogEntry, FaultLogEvent, FaultPlan, FaultRule,
    FaultRuleError, FaultScope, FileFaults, FileVerdict, Operations, Probability, RuleId,
    RuleStatus, FAULT_LOG_CAPACITY, MAX_DELAY_MICROS,
};
pub use file::{FileDevice, FileDeviceOptions};
pub use io_owner::{data_owner, with_data_owner};
pub use memory::MemoryDevice;
pub use overlay::OverlayDevice;
pub use seeded_random::SeededRandom;
pub use stoppable::StoppableDevice;
pub use volatile::{BootedDevice, PowerLoss, PowerLossReport, VolatileCache, CACHE_LIMIT_BYTES};

/// What an I/O is for. Fault rules can match one class, so a test can fail data writes
/// while metadata and the journal keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IoClass {
    /// The superblock and its backup copies.
    Superblock,
    /// Journal entries and journal headers.
    Journal,
    /// B-tree nodes and other filesystem metadata.
    Metadata,
    /// File contents.
    Data,
    /// The event log region (records and their headers).
    EventLog,
}

impl IoClass {
    /// Every class, in a stable order.
    pub const ALL: [IoClass; 5] = [
        IoClass::Superblock,
        IoClass::Journal,
        IoClass::Metadata,
        IoClass::Data,
        IoClass::EventLog,
    ];

    /// The lowercase name used in fault rules and status output.
    pub fn name(self) -> &'static str {
        match self {
            IoClass::Superblock => "superblock",
            IoClass::Journal => "journal",
            IoClass::Metadata => "metadata",
            IoClass::Data => "data",
            IoClass::EventLog => "events",
        }
    }
}

impl fmt::Display for IoClass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for IoClass {
    type Err = FaultRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        IoClass::ALL
            .into_iter()
            .find(|class| class.name() == text)
            .ok_or_else(|| FaultRuleError::new(format!("unknown I/O class `{text}`")))
    }
}

/// The kind of request a device receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoOperation {
    /// Reading bytes.
    Read,
    /// Writing bytes (into the device's volatile cache until the next flush).
    Write,
    /// Making every completed write durable.
    Flush,
}

impl IoOperation {
    /// The lowercase name used in fault rules and messages.
    pub fn name(self) -> &'static str {
        match self {
            IoOperation::Read => "read",
            IoOperation::Write => "write",
            IoOperation::Flush => "flush",
        }
    }
}

impl fmt::Display for IoOperation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The unit a device reads and writes atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectorSize {
    /// 512-byte sectors (most disks' logical sector size).
    Bytes512,
    /// 4096-byte sectors (advanced-format disks, most NVMe namespaces formatted for it).
    Bytes4096,
}

impl SectorSize {
    /// The sector size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            SectorSize::Bytes512 => 512,
            SectorSize::Bytes4096 => 4096,
        }
    }

    /// The sector size for a byte count, if it is one we support.
    pub fn from_bytes(bytes: u64) -> Option<SectorSize> {
        match bytes {
            512 => Some(SectorSize::Bytes512),
            4096 => Some(SectorSize::Bytes4096),
            _ => None,
        }
    }
}

/// A half-open range of device bytes, `start..end`.
///
/// A plain struct rather than `std::ops::Range` so it is `Copy` and can travel in errors
/// and callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    /// First byte in the range.
    pub start: u64,
    /// One past the last byte in the range.
    pub end: u64,
}

impl ByteRange {
    /// The range `start..end`; an inverted range is treated as empty at `start`.
    pub fn new(start: u64, end: u64) -> ByteRange {
        ByteRange {
            start,
            end: end.max(start),
        }
    }

    /// The range of `length` bytes beginning at `start`, saturating at `u64::MAX`.
    pub fn at(start: u64, length: u64) -> ByteRange {
        ByteRange::new(start, start.saturating_add(length))
    }

    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Whether the two ranges share at least one byte.
    pub fn overlaps(&self, other: &ByteRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The bytes both ranges cover, if any.
    pub fn intersection(&self, other: &ByteRange) -> Option<ByteRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(ByteRange { start, end })
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}..{}", self.start, self.end)
    }
}

/// A media failure a device discovered: which bytes could not be read, for what, and which
/// fault rule (if any) produced it. Delivered to the [`MediaFailureCallback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaFailure {
    /// The failed bytes (whole bad blocks, clipped to the request that found them).
    pub range: ByteRange,
    /// The class of the read that found them.
    pub class: IoClass,
    /// The fault rule that simulated the failure, when it was injected.
    pub rule: Option<RuleId>,
}

/// Receives media failures as a device discovers them. This is how the engine learns which
/// physical ranges went bad, like XFS's `notify_failure`; it is called outside every device
/// lock, on the thread that issued the failing read, and must not block for long.
pub type MediaFailureCallback = Arc<dyn Fn(MediaFailure) + Send + Sync>;

/// A device the engine reads and writes in sectors.
///
/// Writes become durable only after a successful [`flush`](BlockDevice::flush): until then a
/// power cut may drop or tear them. Methods take `&self` so one device can serve many threads;
/// implementations synchronise internally.
pub trait BlockDevice: Send + Sync {
    /// Reads `buffer.len()` bytes starting at `offset`. The request must be sector-aligned and
    /// within the device.
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError>;

    /// Writes `buffer` at `offset`. The request must be sector-aligned and within the device.
    /// The data may sit in a volatile cache until the next flush.
    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError>;

    /// Makes every write that completed before this call durable. `class` names on whose
    /// behalf the flush is issued (a journal commit, a data fsync), so faults can target it.
    fn flush(&self, class: IoClass) -> Result<(), DeviceError>;

    /// Size of the device in bytes, a multiple of the sector size.
    fn length(&self) -> u64;

    /// The unit of atomic writes and of request alignment.
    fn sector_size(&self) -> SectorSize;

    /// Registers the callback that hears about media failures found out of band. Only devices
    /// that can tell a media failure from other errors call it (the fault-injecting wrapper
    /// does); the default ignores the callback, and media failures on such devices surface
    /// only as errors from `read_at`. A new registration replaces the previous one.
    fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
        let _ = callback;
    }

    /// Makes sure a later write of `length` bytes at `offset` finds room in whatever holds
    /// the device (the host filesystem under an image file), failing with its `ENOSPC` now if
    /// not. A device that acknowledges writes before it writes them (a volatile cache) asks
    /// this first, so that a full host fails the write, as it would without the cache, and not
    /// the flush that writes it back: a failed flush fails the journal. The default has
    /// nothing to reserve.
    fn reserve_backing(&self, offset: u64, length: u64, class: IoClass) -> Result<(), DeviceError> {
        let _ = (offset, length, class);
        Ok(())
    }
}

macro_rules! forward_block_device {
    ($($pointer:ty),*) => {$(
        impl<D: BlockDevice + ?Sized> BlockDevice for $pointer {
            fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
                (**self).read_at(offset, buffer, class)
            }
            fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
                (**self).write_at(offset, buffer, class)
            }
            fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
                (**self).flush(class)
            }
            fn length(&self) -> u64 {
                (**self).length()
            }
            fn sector_size(&self) -> SectorSize {
                (**self).sector_size()
            }
            fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
                (**self).set_media_failure_callback(callback)
            }
            fn reserve_backing(&self, offset: u64, length: u64, class: IoClass) -> Result<(), DeviceError> {
                (**self).reserve_backing(offset, length, class)
            }
        }
    )*};
}

forward_block_device!(Arc<D>, Box<D>, &D);

/// A zeroed image of `length` bytes rounded down to whole sectors, for the in-memory devices.
pub(crate) fn zeroed_image(length: u64, sector_size: SectorSize) -> Vec<u8> {
    let length = length - length % sector_size.bytes();
    vec![0; usize::try_from(length).unwrap_or(usize::MAX)]
}

/// Cuts `image` down to whole sectors.
pub(crate) fn truncate_to_sectors(image: &mut Vec<u8>, sector_size: SectorSize) {
    let sector = sector_size.bytes() as usize;
    image.truncate(image.len() - image.len() % sector);
}

/// Checks a read or write request against a device's length and sector size, so every
/// implementation rejects the same requests with the same errors.
pub fn check_request(
    operation: IoOperation,
    class: IoClass,
    offset: u64,
    length: usize,
    device_length: u64,
    sector_size: SectorSize,
) -> Result<(), DeviceError> {
    let request_length = length as u64;
    let sector = sector_size.bytes();
    let fail = |kind| {
        Err(DeviceError::new(
            kind,
            operation,
            class,
            ByteRange::at(offset, request_length),
        ))
    };
    if offset % sector != 0 || request_length % sector != 0 {
        return fail(DeviceErrorKind::Misaligned {
            sector_size: sector,
        });
    }
    match offset.checked_add(request_length) {
        Some(end) if end <= device_length => Ok(()),
        _ => fail(DeviceErrorKind::OutOfBounds { device_length }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_request_rejects_misaligned_offset_and_length() {
        let error = check_request(
            IoOperation::Read,
            IoClass::Data,
            100,
            512,
            4096,
            SectorSize::Bytes512,
        )
        .unwrap_err();
        assert_eq!(error.kind, DeviceErrorKind::Misaligned { sector_size: 512 });
        let error = check_request(
            IoOperation::Write,
            IoClass::Data,
            0,
            100,
            4096,
            SectorSize::Bytes512,
        )
        .unwrap_err();
        assert_eq!(error.kind, DeviceErrorKind::Misaligned { sector_size: 512 });
    }

    #[test]
    fn check_request_rejects_requests_past_the_end_and_overflowing_offsets() {
        let error = check_request(
            IoOperation::Read,
            IoClass::Data,
            4096,
            512,
            4096,
            SectorSize::Bytes512,
        )
        .unwrap_err();
        assert_eq!(
            error.kind,
            DeviceErrorKind::OutOfBounds {
                device_length: 4096
            }
        );
        let near_max = u64::MAX - 511;
        let error = check_request(
            IoOperation::Read,
            IoClass::Data,
            near_max,
            1024,
            4096,
            SectorSize::Bytes512,
        )
        .unwrap_err();
        assert!(matches!(error.kind, DeviceErrorKind::OutOfBounds { .. }));
    }

    #[test]
    fn check_request_accepts_aligned_requests_ending_at_the_device_end() {
        check_request(
            IoOperation::Write,
            IoClass::Journal,
            3584,
            512,
            4096,
            SectorSize::Bytes512,
        )
        .unwrap();
        check_request(
            IoOperation::Read,
            IoClass::Journal,
            4096,
            0,
            4096,
            SectorSize::Bytes512,
        )
        .unwrap();
    }

    #[test]
    fn byte_range_intersection_and_overlap_agree() {
        let a = ByteRange::new(0, 100);
        let b = ByteRange::new(50, 150);
        let c = ByteRange::new(100, 200);
        assert!(a.overlaps(&b));
        assert_eq!(a.intersection(&b), Some(ByteRange::new(50, 100)));
        assert!(!a.overlaps(&c));
        assert_eq!(a.intersection(&c), None);
        assert!(ByteRange::new(10, 5).is_empty());
    }

    #[test]
    fn io_class_names_parse_back() {
        for class in IoClass::ALL {
            assert_eq!(class.name().parse::<IoClass>().unwrap(), class);
        }
        assert!("bogus".parse::<IoClass>().is_err());
    }
}
