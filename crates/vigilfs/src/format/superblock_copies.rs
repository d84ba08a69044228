//! Reading and writing the three superblock copies.
//!
//! Writing updates the primary, flushes, then updates both backups and flushes again, so at
//! every instant of a power cut at least one copy holds either the old or the new superblock
//! intact: while the primary is being written the backups hold the old one, and while the
//! backups are being written the primary holds the new one.
//!
//! Reading uses the primary if it is valid, otherwise the valid backup with the highest write
//! sequence, and says which copy it used and why the others were rejected. Backups live at the
//! end of the device the filesystem was made for (see [`layout`](super::layout)): they are
//! looked for where the primary's recorded length puts them, so a device grown since mkfs
//! (whose space past the filesystem goes unused) still finds them; only without a readable
//! primary are they looked for relative to the current device length.

use super::layout::{SuperblockCopy, HEAD_RESERVED_BYTES, SUPERBLOCK_SIZE, TAIL_RESERVED_BYTES};
use super::superblock::Superblock;
use super::FormatError;
use super::FsUuid;
use crate::device::{BlockDevice, DeviceError, IoClass};

/// A superblock copy that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedCopy {
    /// Which copy.
    pub copy: SuperblockCopy,
    /// Why it was rejected.
    pub error: FormatError,
}

/// A superblock copy that could not be written (or flushed), and the device's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyWriteFailure {
    /// Which copy.
    pub copy: SuperblockCopy,
    /// The device error.
    pub error: DeviceError,
}

/// The superblock found at mount time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSuperblock {
    /// The superblock in use.
    pub superblock: Superblock,
    /// The copy it came from.
    pub source: SuperblockCopy,
    /// Copies read and rejected before (or instead of) it. Empty when the primary was valid:
    /// backups are then not read at all.
    pub rejected: Vec<RejectedCopy>,
}

/// How far before the device's end the backups of a filesystem made for a
/// smaller device are looked for, when no copy says where they are (the
/// device grew since mkfs and the primary is unreadable).
const GROWN_SEARCH_BYTES: u64 = 256 << 20;

/// The length of the device the filesystem was made for: where its copies
/// are. The primary records it (decoded, not yet checked against the
/// device); without a readable primary, the backups found where the
/// device's length puts them or, for a device grown since mkfs, in its
/// last [`GROWN_SEARCH_BYTES`], each at the place its own recorded length
/// gives; else the device's length. Backups of two filesystems (an older
/// one's left in the tail) are [`FormatError::ConflictingBackups`].
fn locate<D: BlockDevice + ?Sized>(device: &D) -> Result<u64, FormatError> {
    let length = device.length();
    let mut bytes = vec![0; SUPERBLOCK_SIZE];
    if let Some(offset) = SuperblockCopy::Primary.offset(length) {
        if device
            .read_at(offset, &mut bytes, IoClass::Superblock)
            .is_ok()
        {
            if let Ok(primary) = Superblock::decode(&bytes) {
                return Ok(primary.layout.device_length);
            }
        }
    }
    let mut found = backups_before_the_end(device);
    // The newest first: its length wins among copies of one filesystem.
    found.sort_by_key(|superblock| std::cmp::Reverse(superblock.write_sequence));
    let mut filesystems: Vec<(FsUuid, u64)> = Vec::new();
    for superblock in &found {
        if !filesystems.iter().any(|(uuid, _)| *uuid == superblock.uuid) {
            filesystems.push((superblock.uuid, superblock.layout.device_length));
        }
    }
    match filesystems.as_slice() {
        [] => Ok(length),
        [(_, recorded)] => Ok(*recorded),
        _ => Err(FormatError::ConflictingBackups { found: filesystems }),
    }
}

/// [`locate`], with the device's length when it cannot tell.
pub fn filesystem_length<D: BlockDevice + ?Sized>(device: &D) -> u64 {
    locate(device).unwrap_or_else(|_| device.length())
}

/// The backups in the last [`GROWN_SEARCH_BYTES`] of the device (its own
/// end included), each at the place its own recorded length gives it and
/// no longer than the device (anything else there, a copy moved by hand,
/// is not one).
fn backups_before_the_end<D: BlockDevice + ?Sized>(device: &D) -> Vec<Superblock> {
    let length = device.length();
    let end = length - length % SUPERBLOCK_SIZE as u64;
    let lowest = end
        .saturating_sub(GROWN_SEARCH_BYTES)
        .max(HEAD_RESERVED_BYTES);
    let mut found = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut chunk_end = end;
    while chunk_end > lowest {
        let chunk_start = chunk_end.saturating_sub(chunk.len() as u64).max(lowest);
        let bytes = &mut chunk[..(chunk_end - chunk_start) as usize];
        if device
            .read_at(chunk_start, bytes, IoClass::Superblock)
            .is_ok()
        {
            for (index, slot) in bytes.chunks_exact(SUPERBLOCK_SIZE).enumerate() {
                let offset = chunk_start + (index * SUPERBLOCK_SIZE) as u64;
                let Ok(superblock) = Superblock::decode(slot) else {
                    continue;
                };
                let recorded = superblock.layout.device_length;
                let placed = [SuperblockCopy::FirstBackup, SuperblockCopy::SecondBackup]
                    .into_iter()
                    .any(|copy| copy.offset(recorded) == Some(offset));
                if placed && recorded <= length {
                    found.push(superblock);
                }
            }
        }
        chunk_end = chunk_start;
    }
    found
}

/// Reads and fully validates one copy.
pub fn read_superblock_copy<D: BlockDevice + ?Sized>(
    device: &D,
    copy: SuperblockCopy,
) -> Result<Superblock, FormatError> {
    read_copy_at(device, copy, filesystem_length(device))
}

/// Reads and fully validates one copy, where a filesystem made for a
/// device of `filesystem_length` bytes keeps it.
fn read_copy_at<D: BlockDevice + ?Sized>(
    device: &D,
    copy: SuperblockCopy,
    filesystem_length: u64,
) -> Result<Superblock, FormatError> {
    let device_length = device.length();
    let offset = copy
        .offset(filesystem_length)
        .ok_or(FormatError::DeviceTooSmall {
            device_length,
            needed: HEAD_RESERVED_BYTES + TAIL_RESERVED_BYTES,
        })?;
    let mut bytes = vec![0; SUPERBLOCK_SIZE];
    device.read_at(offset, &mut bytes, IoClass::Superblock)?;
    let superblock = Superblock::decode(&bytes)?;
    superblock.validate_for_device(device_length, device.sector_size())?;
    Ok(superblock)
}

/// Every copy's outcome, for fsck and status (reads all three).
pub fn inspect_superblock_copies<D: BlockDevice + ?Sized>(
    device: &D,
) -> Vec<(SuperblockCopy, Result<Superblock, FormatError>)> {
    match locate(device) {
        Ok(length) => SuperblockCopy::ALL
            .into_iter()
            .map(|copy| (copy, read_copy_at(device, copy, length)))
            .collect(),
        // No copy can be trusted: each is said to be the conflict.
        Err(conflict) => SuperblockCopy::ALL
            .into_iter()
            .map(|copy| (copy, Err(conflict.clone())))
            .collect(),
    }
}

/// Finds the superblock to mount with: the primary if valid, else the newest valid backup.
pub fn read_superblock<D: BlockDevice + ?Sized>(
    device: &D,
) -> Result<LoadedSuperblock, FormatError> {
    let mut rejected = Vec::new();
    let length = locate(device)?;
    match read_copy_at(device, SuperblockCopy::Primary, length) {
        Ok(superblock) => {
            return Ok(LoadedSuperblock {
                superblock,
                source: SuperblockCopy::Primary,
                rejected,
            })
        }
        Err(error) => rejected.push(RejectedCopy {
            copy: SuperblockCopy::Primary,
            error,
        }),
    }
    let mut newest: Option<(SuperblockCopy, Superblock)> = None;
    for copy in [SuperblockCopy::FirstBackup, SuperblockCopy::SecondBackup] {
        match read_copy_at(device, copy, length) {
            Ok(superblock) => {
                let newer = newest
                    .as_ref()
                    .is_none_or(|(_, best)| superblock.write_sequence > best.write_sequence);
                if newer {
                    newest = Some((copy, superblock));
                }
            }
            Err(error) => rejected.push(RejectedCopy { copy, error }),
        }
    }
    match newest {
        Some((source, superblock)) => Ok(LoadedSuperblock {
            superblock,
            source,
            rejected,
        }),
        None => Err(FormatError::NoValidSuperblock { rejected }),
    }
}

/// Whether copies whose checksums do not match could all be the work of one
/// power cut: superblocks are written primary first (and flushed), then
/// both backups, so a cut tears the primary or the backups, never both.
pub fn torn_by_one_crash(mismatched: &[SuperblockCopy]) -> bool {
    !(mismatched.contains(&SuperblockCopy::Primary)
        && mismatched
            .iter()
            .any(|&copy| copy != SuperblockCopy::Primary))
}

/// Writes `superblock` to all three copies, bumping its write sequence first. Every copy is
/// attempted even if an earlier one fails; any failure is returned (with all failures listed),
/// because a copy that silently kept old contents could later be preferred by recovery.
pub fn write_superblocks<D: BlockDevice + ?Sized>(
    device: &D,
    superblock: &mut Superblock,
) -> Result<(), FormatError> {
    let device_length = device.length();
    superblock.write_sequence = superblock.write_sequence.saturating_add(1);
    superblock.validate_for_device(device_length, device.sector_size())?;
    // The backups stay at the end of the filesystem, however the device
    // grew (validate_for_device refused a device that shrank).
    let device_length = superblock.layout.device_length;
    let bytes = superblock.encode()?;
    let mut failures = Vec::new();
    let write_copy = |copy: SuperblockCopy, failures: &mut Vec<CopyWriteFailure>| {
        // validate_for_device proved the device holds every copy.
        if let Some(offset) = copy.offset(device_length) {
            if let Err(error) = device.write_at(offset, &bytes, IoClass::Superblock) {
                failures.push(CopyWriteFailure { copy, error });
            }
        }
    };
    let flush = |copies: &[SuperblockCopy], failures: &mut Vec<CopyWriteFailure>| {
        if let Err(error) = device.flush(IoClass::Superblock) {
            failures.extend(copies.iter().map(|&copy| CopyWriteFailure {
                copy,
                error: error.clone(),
            }));
        }
    };
    write_copy(SuperblockCopy::Primary, &mut failures);
    flush(&[SuperblockCopy::Primary], &mut failures);
    write_copy(SuperblockCopy::FirstBackup, &mut failures);
    write_copy(SuperblockCopy::SecondBackup, &mut failures);
    flush(
        &[SuperblockCopy::FirstBackup, SuperblockCopy::SecondBackup],
        &mut failures,
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(FormatError::SuperblockWrite { failures })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::device::{
        ByteRange, CrashDevice, CrashMode, Errno, FaultDevice, FaultPlan, FaultRule, MemoryDevice,
        Operations, SectorSize,
    };
    use crate::format::superblock::tests::sample_superblock;

    const LENGTH: u64 = 64 << 20;

    fn written_device() -> (MemoryDevice, Superblock) {
        let device = MemoryDevice::new(LENGTH, SectorSize::Bytes512);
        let mut superblock = sample_superblock();
        write_superblocks(&device, &mut superblock).unwrap();
        (device, superblock)
    }

    fn corrupt(device: &MemoryDevice, copy: SuperblockCopy) {
        let offset = copy.offset(device.length()).unwrap();
        device
            .write_at(offset + 512, &[0xee; 512], IoClass::Superblock)
            .unwrap();
    }

    #[test]
    fn primary_is_used_when_valid_and_backups_are_not_read() {
        let (device, superblock) = written_device();
        let loaded = read_superblock(&device).unwrap();
        assert_eq!(loaded.source, SuperblockCopy::Primary);
        assert_eq!(loaded.superblock, superblock);
        assert!(loaded.rejected.is_empty());
        assert_eq!(
            superblock.write_sequence, 10,
            "sample had 9; writing bumps it"
        );
    }

    #[test]
    fn corrupt_primary_falls_back_to_a_backup_and_says_why() {
        let (device, superblock) = written_device();
        corrupt(&device, SuperblockCopy::Primary);
        let loaded = read_superblock(&device).unwrap();
        assert_eq!(loaded.superblock, superblock);
        assert_ne!(loaded.source, SuperblockCopy::Primary);
        assert_eq!(loaded.rejected.len(), 1);
        assert!(matches!(
            loaded.rejected[0].error,
            FormatError::ChecksumMismatch { .. }
        ));
    }

    #[test]
    fn newest_valid_backup_wins() {
        let (device, mut superblock) = written_device();
        let older_first_backup = {
            let mut bytes = vec![0; SUPERBLOCK_SIZE];
            let offset = SuperblockCopy::FirstBackup.offset(LENGTH).unwrap();
            device.read_at(offset, &mut bytes, IoClass::Data).unwrap();
            bytes
        };
        superblock.mount_count += 1;
        write_superblocks(&device, &mut superblock).unwrap();
        // Put the old first backup back, then lose the primary: the second backup is newer.
        let offset = SuperblockCopy::FirstBackup.offset(LENGTH).unwrap();
        device
            .write_at(offset, &older_first_backup, IoClass::Data)
            .unwrap();
        corrupt(&device, SuperblockCopy::Primary);
        let loaded = read_superblock(&device).unwrap();
        assert_eq!(loaded.source, SuperblockCopy::SecondBackup);
        assert_eq!(loaded.superblock, superblock);
    }

    #[test]
    fn no_valid_copy_is_an_error_listing_every_copy() {
        let (device, _) = written_device();
        for copy in SuperblockCopy::ALL {
            corrupt(&device, copy);
        }
        match read_superblock(&device) {
            Err(FormatError::NoValidSuperblock { rejected }) => {
                let copies: Vec<SuperblockCopy> = rejected.iter().map(|r| r.copy).collect();
                assert_eq!(copies, SuperblockCopy::ALL);
            }
            other => panic!("expected NoValidSuperblock, got {other:?}"),
        }
        let blank = MemoryDevice::new(LENGTH, SectorSize::Bytes512);
        let error = read_superblock(&blank).unwrap_err();
        // Every copy without the magic: not a vigilfs image at all.
        assert!(
            error.to_string().contains("this is not a vigilfs image"),
            "{error}"
        );
        // A device too small for any copy says so once, not three times.
        let tiny = MemoryDevice::new(4096, SectorSize::Bytes512);
        let said = read_superblock(&tiny).unwrap_err().to_string();
        assert_eq!(said.matches("too small").count(), 1, "{said}");
    }

    #[test]
    fn unreadable_primary_is_reported_as_a_device_error_and_backup_used() {
        let (device, superblock) = written_device();
        let plan = Arc::new(FaultPlan::new());
        plan.add_rule(
            FaultRule::fail(Errno::EIO)
                .on(Operations::READ)
                .in_range(ByteRange::new(4096, 8192)),
        )
        .unwrap();
        let faulty = FaultDevice::new(device, plan);
        let loaded = read_superblock(&faulty).unwrap();
        assert_eq!(loaded.superblock, superblock);
        assert!(matches!(
            loaded.rejected[0].error,
            FormatError::Device(ref error) if error.errno() == Errno::EIO
        ));
    }

    #[test]
    fn failed_backup_write_is_reported_even_though_the_primary_landed() {
        let plan = Arc::new(FaultPlan::new());
        let second_backup = SuperblockCopy::SecondBackup.offset(LENGTH).unwrap();
        plan.add_rule(
            FaultRule::fail(Errno::EIO)
                .on(Operations::WRITE)
                .in_range(ByteRange::at(second_backup, 4096)),
        )
        .unwrap();
        let device = FaultDevice::new(MemoryDevice::new(LENGTH, SectorSize::Bytes512), plan);
        let mut superblock = sample_superblock();
        match write_superblocks(&device, &mut superblock) {
            Err(FormatError::SuperblockWrite { failures }) => {
                assert_eq!(failures.len(), 1);
                assert_eq!(failures[0].copy, SuperblockCopy::SecondBackup);
            }
            other => panic!("expected SuperblockWrite, got {other:?}"),
        }
        let loaded = read_superblock(&device).unwrap();
        assert_eq!(loaded.source, SuperblockCopy::Primary);
        assert_eq!(
            read_superblock_copy(&device, SuperblockCopy::FirstBackup).unwrap(),
            superblock
        );
    }

    #[test]
    fn failed_flush_is_reported_for_the_copies_it_covered() {
        let plan = Arc::new(FaultPlan::new());
        plan.add_rule(FaultRule::fail(Errno::EIO).on(Operations::FLUSH))
            .unwrap();
        let device = FaultDevice::new(MemoryDevice::new(LENGTH, SectorSize::Bytes512), plan);
        match write_superblocks(&device, &mut sample_superblock()) {
            Err(FormatError::SuperblockWrite { failures }) => {
                let copies: Vec<SuperblockCopy> = failures.iter().map(|f| f.copy).collect();
                assert_eq!(copies, SuperblockCopy::ALL);
            }
            other => panic!("expected SuperblockWrite, got {other:?}"),
        }
    }

    #[test]
    fn a_power_cut_during_a_superblock_update_always_leaves_a_valid_copy() {
        let old = {
            let mut superblock = sample_superblock();
            superblock.write_sequence = 0;
            superblock
        };
        for cut in 1..=2 {
            for seed in 0..16 {
                let device = CrashDevice::new(LENGTH, SectorSize::Bytes512);
                let mut superblock = old.clone();
                write_superblocks(&device, &mut superblock).unwrap();
                let written = superblock.clone();
                device.cut_power_at_flush(Some(2 + cut));
                superblock.mount_count += 1;
                assert!(write_superblocks(&device, &mut superblock).is_err());
                let image = device.crash(CrashMode::Torn { seed });
                let loaded = read_superblock(&image).unwrap();
                assert!(
                    loaded.superblock == written || loaded.superblock == superblock,
                    "cut at flush {cut} seed {seed}: neither old nor new"
                );
            }
        }
    }

    #[test]
    fn device_too_small_for_the_copies_is_a_clear_error() {
        let device = MemoryDevice::new(32 * 1024, SectorSize::Bytes512);
        assert!(matches!(
            read_superblock_copy(&device, SuperblockCopy::Primary),
            Err(FormatError::DeviceTooSmall { .. })
        ));
    }
}
