//! Where things live on the device: the superblock copies and the block regions.
//!
//! ```text
//! byte 0        4 KiB    8 KiB                                       end-64 KiB   end-4 KiB  end
//! | reserved    | primary |  journal region | main region (metadata  | second     | ...  | first  |
//! | (untouched) | super-  |  (blocks)       | and data, blocks)      | backup     |      | backup |
//! |             | block   |                 |                        | superblock |      | super- |
//! ```
//!
//! `end` is the device length rounded down to 4 KiB. The superblock copies sit at fixed byte
//! offsets that do not depend on the block size, so they can be found before the block size
//! is known. The two backups are 60 KiB apart so one bad spot at the end of the device does
//! not take both. Regions are counted in filesystem blocks; they must start after the primary
//! superblock, end before the second backup, and not overlap.

use std::fmt;

use super::FormatError;

/// Byte offset of the primary superblock. The first 4 KiB are left alone, for boot loaders
/// and partition tables.
pub const PRIMARY_SUPERBLOCK_OFFSET: u64 = 4096;

/// Bytes each superblock copy occupies.
pub const SUPERBLOCK_SIZE: usize = 4096;

/// Bytes at the start of the device that regions may not use.
pub const HEAD_RESERVED_BYTES: u64 = PRIMARY_SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64;

/// Bytes at the end of the device (after rounding down to 4 KiB) that regions may not use:
/// they hold the backup superblocks.
pub const TAIL_RESERVED_BYTES: u64 = 64 * 1024;

/// Smallest supported block size.
pub const MIN_BLOCK_SIZE: u32 = 1024;

/// Largest supported block size.
pub const MAX_BLOCK_SIZE: u32 = 64 * 1024;

/// Block size used unless asked otherwise.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;

const COPY_ALIGNMENT: u64 = SUPERBLOCK_SIZE as u64;

/// One of the three superblock copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuperblockCopy {
    /// At byte 4096.
    Primary,
    /// In the last 4 KiB of the device.
    FirstBackup,
    /// 64 KiB before the end of the device.
    SecondBackup,
}

impl SuperblockCopy {
    /// Every copy, primary first.
    pub const ALL: [SuperblockCopy; 3] = [
        SuperblockCopy::Primary,
        SuperblockCopy::FirstBackup,
        SuperblockCopy::SecondBackup,
    ];

    /// The copy's byte offset on a device of `device_length` bytes, or `None` if the device is
    /// too small to hold all three copies apart.
    pub fn offset(self, device_length: u64) -> Option<u64> {
        let end = device_length - device_length % COPY_ALIGNMENT;
        if end < HEAD_RESERVED_BYTES + TAIL_RESERVED_BYTES {
            return None;
        }
        Some(match self {
            SuperblockCopy::Primary => PRIMARY_SUPERBLOCK_OFFSET,
            SuperblockCopy::FirstBackup => end - COPY_ALIGNMENT,
            SuperblockCopy::SecondBackup => end - TAIL_RESERVED_BYTES,
        })
    }
}

impl fmt::Display for SuperblockCopy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            SuperblockCopy::Primary => "primary superblock",
            SuperblockCopy::FirstBackup => "first backup superblock",
            SuperblockCopy::SecondBackup => "second backup superblock",
        })
    }
}

/// A run of filesystem blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub blocks: u64,
}

impl Region {
    /// One past the last block, or `None` if that overflows.
    pub fn end(&self) -> Option<u64> {
        self.start.checked_add(self.blocks)
    }

    /// Whether the two regions share a block.
    pub fn overlaps(&self, other: &Region) -> bool {
        let end = self.end().unwrap_or(u64::MAX);
        let other_end = other.end().unwrap_or(u64::MAX);
        self.start < other_end && other.start < end
    }
}

impl fmt::Display for Region {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end() {
            Some(end) => write!(formatter, "blocks {}..{}", self.start, end),
            None => write!(formatter, "blocks {}+{}", self.start, self.blocks),
        }
    }
}

/// Whether `block_size` is a supported block size.
pub fn check_block_size(block_size: u32) -> Result<(), FormatError> {
    if block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        Ok(())
    } else {
        Err(FormatError::InvalidBlockSize { block_size })
    }
}

/// First block a region may use: the first after the primary superblock.
pub fn first_usable_block(block_size: u32) -> u64 {
    HEAD_RESERVED_BYTES.div_ceil(u64::from(block_size))
}

/// One past the last block a region may use on a device of `device_length` bytes: regions
/// stop before the backup superblocks. `None` if the device cannot hold the reserved areas.
pub fn usable_end_block(block_size: u32, device_length: u64) -> Option<u64> {
    let end = device_length - device_length % COPY_ALIGNMENT;
    let limit = end.checked_sub(TAIL_RESERVED_BYTES)?;
    let blocks = limit / u64::from(block_size);
    (blocks >= first_usable_block(block_size)).then_some(blocks)
}

/// The block size and regions of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Bytes per filesystem block: a power of two from [`MIN_BLOCK_SIZE`] to
    /// [`MAX_BLOCK_SIZE`].
    pub block_size: u32,
    /// Device length in bytes when the filesystem was made; the regions fit in it.
    pub device_length: u64,
    /// The journal.
    pub journal: Region,
    /// Metadata and data, handed out by the allocator.
    pub main: Region,
}

impl Layout {
    /// Checks the layout on its own: a supported block size, non-empty regions that do not
    /// overlap, all within the usable part of `device_length`.
    pub fn validate(&self) -> Result<(), FormatError> {
        self.validate_within(self.device_length)
    }

    /// Checks that the layout fits a device of `device_length` bytes (which may have grown
    /// since mkfs, but must not have shrunk below the regions).
    pub fn validate_within(&self, device_length: u64) -> Result<(), FormatError> {
        check_block_size(self.block_size)?;
        let first = first_usable_block(self.block_size);
        let limit = usable_end_block(self.block_size, device_length).ok_or(
            FormatError::DeviceTooSmall {
                device_length,
                needed: HEAD_RESERVED_BYTES + TAIL_RESERVED_BYTES,
            },
        )?;
        for (name, region) in [("journal", self.journal), ("main", self.main)] {
            if region.blocks == 0 {
                return Err(FormatError::EmptyRegion { region: name });
            }
            if region.start < first {
                return Err(FormatError::RegionBeforeStart {
                    region: name,
                    start: region.start,
                    first_usable: first,
                });
            }
            match region.end() {
                Some(end) if end <= limit => {}
                end => {
                    return Err(FormatError::RegionBeyondEnd {
                        region: name,
                        end: end.unwrap_or(u64::MAX),
                        usable_end: limit,
                        device_length,
                    })
                }
            }
        }
        if self.journal.overlaps(&self.main) {
            return Err(FormatError::RegionsOverlap {
                journal: self.journal,
                main: self.main,
            });
        }
        Ok(())
    }

    /// Byte offset of block `block`, or `None` if that overflows.
    pub fn block_offset(&self, block: u64) -> Option<u64> {
        block.checked_mul(u64::from(self.block_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn layout() -> Layout {
        Layout {
            block_size: 4096,
            device_length: 64 * MIB,
            journal: Region {
                start: 2,
                blocks: 256,
            },
            main: Region {
                start: 258,
                blocks: 64 * MIB / 4096 - 258 - 16,
            },
        }
    }

    #[test]
    fn superblock_copies_sit_at_fixed_offsets() {
        let length = 64 * MIB + 1000;
        assert_eq!(SuperblockCopy::Primary.offset(length), Some(4096));
        assert_eq!(
            SuperblockCopy::FirstBackup.offset(length),
            Some(64 * MIB - 4096)
        );
        assert_eq!(
            SuperblockCopy::SecondBackup.offset(length),
            Some(64 * MIB - 65536)
        );
        assert_eq!(SuperblockCopy::Primary.offset(60 * 1024), None);
    }

    #[test]
    fn valid_layout_passes_and_fills_the_usable_space() {
        let layout = layout();
        layout.validate().unwrap();
        assert_eq!(
            layout.main.end(),
            usable_end_block(4096, layout.device_length)
        );
    }

    #[test]
    fn block_size_must_be_a_power_of_two_in_range() {
        for block_size in [0, 512, 3000, 4095, 131_072] {
            let layout = Layout {
                block_size,
                ..layout()
            };
            assert_eq!(
                layout.validate(),
                Err(FormatError::InvalidBlockSize { block_size })
            );
        }
    }

    #[test]
    fn each_layout_inconsistency_has_its_own_error() {
        let mut overlapping = layout();
        overlapping.main.start = 100;
        overlapping.main.blocks = 10;
        assert!(matches!(
            overlapping.validate(),
            Err(FormatError::RegionsOverlap { .. })
        ));

        let mut over_primary = layout();
        over_primary.journal.start = 1;
        assert!(matches!(
            over_primary.validate(),
            Err(FormatError::RegionBeforeStart { .. })
        ));

        let mut into_backups = layout();
        into_backups.main.blocks += 1;
        assert!(matches!(
            into_backups.validate(),
            Err(FormatError::RegionBeyondEnd { region: "main", .. })
        ));

        let mut overflowing = layout();
        overflowing.main.start = u64::MAX - 1;
        assert!(matches!(
            overflowing.validate(),
            Err(FormatError::RegionBeyondEnd { .. })
        ));

        let mut empty = layout();
        empty.journal.blocks = 0;
        assert_eq!(
            empty.validate(),
            Err(FormatError::EmptyRegion { region: "journal" })
        );

        assert!(matches!(
            layout().validate_within(32 * MIB),
            Err(FormatError::RegionBeyondEnd { .. })
        ));
        assert!(matches!(
            layout().validate_within(1000),
            Err(FormatError::DeviceTooSmall { .. })
        ));
    }
}
