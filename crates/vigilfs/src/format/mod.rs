//! The on-disk format: how structures are laid out in bytes, checksummed and validated.
//!
//! Every structure on disk begins with the common [`header`] (magic, version, length,
//! CRC-32C) and is verified before any field is trusted. Decoders are written against the
//! bounds-checked [`codec`], so a corrupted or truncated image yields a typed
//! [`FormatError`], never a panic. The journal and later layers define their own structures
//! with the same helpers: a [`StructureType`], [`seal`] to write, [`verify`] to check, and
//! [`Decoder`]/[`Encoder`] for the fields.
//!
//! Modules: [`checksum`] (CRC-32C), [`codec`], [`header`], [`identity`] (UUID, label),
//! [`layout`] (where copies and regions live), [`error_record`] (persistent error history),
//! [`event_log`] (the ring of event records),
//! [`superblock`], [`superblock_copies`] (reading and writing the primary and backups).
//! This layer depends only on [`device`](crate::device).

pub mod checksum;
pub mod codec;
pub mod error_record;
pub mod event_log;
pub mod header;
pub mod identity;
pub mod layout;
pub mod meta_record;
pub mod superblock;
pub mod superblock_copies;

pub use codec::{Decoder, Encoder};
pub use error_record::{ErrorEvent, ErrorKind, ErrorOrigin, ErrorRecord, KindCounter};
pub use header::{seal, verify, Magic, StructureHeader, StructureType, HEADER_SIZE};
pub use identity::{FsUuid, Label};
pub use layout::{Layout, Region, SuperblockCopy, SUPERBLOCK_SIZE};
pub use superblock::{
    ErrorsPolicy, Features, FsState, Superblock, MAX_JOURNAL_SEQ, MAX_WRITE_SEQUENCE,
};
pub use superblock_copies::{
    inspect_superblock_copies, read_superblock, read_superblock_copy, torn_by_one_crash,
    write_superblocks, CopyWriteFailure, LoadedSuperblock, RejectedCopy,
};

use crate::device::DeviceError;

/// Why an on-disk structure could not be decoded, validated, encoded, read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The bytes end before the structure does.
    #[error(
        "{structure}: truncated: needs {needed} bytes at offset {offset}, only {available} there"
    )]
    Truncated {
        /// Which structure.
        structure: &'static str,
        /// Where the missing field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes available from `offset`.
        available: usize,
    },
    /// The magic is not the structure's: this is not (or no longer) that structure.
    #[error("{structure}: bad magic {found}, expected {expected}")]
    BadMagic {
        /// Which structure.
        structure: &'static str,
        /// The magic found.
        found: Magic,
        /// The magic expected.
        expected: Magic,
    },
    /// Written by a version of vigilfs this build cannot read.
    #[error(
        "{structure}: version {found} is not supported (this build reads {oldest} to {newest})"
    )]
    UnsupportedVersion {
        /// Which structure.
        structure: &'static str,
        /// The version found.
        found: u16,
        /// Oldest version readable.
        oldest: u16,
        /// Newest version readable.
        newest: u16,
    },
    /// The contents do not match their checksum: corrupted on disk or in transit.
    #[error("{structure}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        /// Which structure.
        structure: &'static str,
        /// The checksum stored in the structure.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// A field holds a value that is not allowed.
    #[error("{structure}: invalid {field}: {reason}")]
    InvalidField {
        /// Which structure.
        structure: &'static str,
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The filesystem uses incompatible features this build does not know.
    #[error("superblock: unsupported incompatible features {incompat:#x}")]
    UnsupportedFeatures {
        /// The unknown incompat bits.
        incompat: u64,
    },
    /// The block size is not a power of two in the supported range.
    #[error(
        "block size {block_size} is not a power of two from {} to {}",
        layout::MIN_BLOCK_SIZE,
        layout::MAX_BLOCK_SIZE
    )]
    InvalidBlockSize {
        /// The block size found.
        block_size: u32,
    },
    /// The block size is smaller than the device's sector, so blocks could not be written
    /// atomically or even addressed.
    #[error("block size {block_size} is smaller than the device's {sector_size}-byte sectors")]
    BlockSizeBelowSectorSize {
        /// The filesystem block size.
        block_size: u32,
        /// The device sector size.
        sector_size: u64,
    },
    /// A region has no blocks.
    #[error("{region} region is empty")]
    EmptyRegion {
        /// Which region.
        region: &'static str,
    },
    /// A region starts inside the reserved area or the primary superblock.
    #[error(
        "{region} region starts at block {start}, before the first usable block {first_usable}"
    )]
    RegionBeforeStart {
        /// Which region.
        region: &'static str,
        /// Its first block.
        start: u64,
        /// The first block a region may use.
        first_usable: u64,
    },
    /// A region runs into the backup superblocks or past the device end.
    #[error(
        "{region} region ends at block {end}, beyond the usable end at block {usable_end} \
         of a {device_length}-byte device"
    )]
    RegionBeyondEnd {
        /// Which region.
        region: &'static str,
        /// One past its last block (`u64::MAX` if that overflows).
        end: u64,
        /// One past the last usable block.
        usable_end: u64,
        /// The device length the check used.
        device_length: u64,
    },
    /// The journal and main regions share blocks.
    #[error("journal region ({journal}) overlaps main region ({main})")]
    RegionsOverlap {
        /// The journal region.
        journal: Region,
        /// The main region.
        main: Region,
    },
    /// The device cannot hold the reserved areas and superblock copies.
    #[error(
        "device of {device_length} bytes (counted in whole sectors) is too small: at least \
         {needed} bytes needed"
    )]
    DeviceTooSmall {
        /// The device length.
        device_length: u64,
        /// The minimum length.
        needed: u64,
    },
    /// The device is smaller than when the filesystem was made.
    #[error("device shrank from {recorded} to {device_length} bytes since mkfs")]
    DeviceShrunk {
        /// Length recorded at mkfs.
        recorded: u64,
        /// Current length.
        device_length: u64,
    },
    /// An encoder's fields ran past the space the layout gives them (a bug in an encoder).
    #[error("{structure}: encoded fields reach offset {position}, past their limit {limit}")]
    Overrun {
        /// Which structure.
        structure: &'static str,
        /// Where the fields reached.
        position: usize,
        /// Where they had to stop.
        limit: usize,
    },
    /// The device failed a read of the structure.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The primary is unreadable and backups of more than one filesystem
    /// are where backups can be (an older filesystem's left in the tail of
    /// a device grown since): which one this is cannot be told.
    #[error(
        "the primary superblock is unreadable, and backups of {} filesystems were found \
         (UUID and the device length each was made for: {}): which one this device holds \
         cannot be told, so none is used",
        .found.len(),
        .found.iter().map(|(uuid, length)| format!("{uuid} {length}")).collect::<Vec<_>>().join(", ")
    )]
    ConflictingBackups {
        /// Each filesystem found: its UUID and recorded device length.
        found: Vec<(FsUuid, u64)>,
    },
    /// No superblock copy is usable.
    #[error("no valid superblock: {}", describe_rejections(.rejected))]
    NoValidSuperblock {
        /// Every copy tried, and why it was rejected.
        rejected: Vec<RejectedCopy>,
    },
    /// Some superblock copies could not be written or flushed.
    #[error("superblock update incomplete: {}", describe_write_failures(.failures))]
    SuperblockWrite {
        /// The copies that failed.
        failures: Vec<CopyWriteFailure>,
    },
}

fn describe_rejections(rejected: &[RejectedCopy]) -> String {
    let foreign = !rejected.is_empty()
        && rejected
            .iter()
            .all(|rejection| matches!(rejection.error, FormatError::BadMagic { .. }));
    if foreign {
        return format!(
            "this is not a vigilfs image (none of its {} superblock copies has the vigilfs \
             magic; `vigilfs mkfs` makes one). A vigilfs filesystem with its primary damaged \
             on a device grown by more than 256 MiB since mkfs keeps its backups further \
             back: cut the device back to its old length to find them",
            rejected.len()
        );
    }
    // Every copy refused for the same reason (a device too small for
    // any): said once.
    if let Some(first) = rejected.first() {
        let same =
            |rejection: &RejectedCopy| rejection.error.to_string() == first.error.to_string();
        if rejected.len() > 1 && rejected.iter().all(same) {
            return format!("every superblock copy: {}", first.error);
        }
    }
    let parts: Vec<String> = rejected
        .iter()
        .map(|rejection| format!("{}: {}", rejection.copy, rejection.error))
        .collect();
    parts.join("; ")
}

fn describe_write_failures(failures: &[CopyWriteFailure]) -> String {
    let parts: Vec<String> = failures
        .iter()
        .map(|failure| format!("{}: {}", failure.copy, failure.error))
        .collect();
    parts.join("; ")
}
