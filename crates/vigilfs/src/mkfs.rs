//! Making a new filesystem on a device: choose a layout, clear the journal's head, write the
//! superblock copies ([`mkfs`]); then create the empty b-trees, their reverse-map records and
//! the root directory ([`make_filesystem`], what `vigilfs mkfs` runs).
//!
//! Invariants: nothing is written until the layout has been planned and validated for this
//! device; the result is durable (flushed) when mkfs returns `Ok`; the first 4 KiB of the
//! device are never touched.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::btree::{BtreeError, TreeId};
use crate::inode::{inode_key, FileType, InodeRecord, Timestamp, LIVE_INODES_KEY, ROOT_INO};
use crate::journal::JournalError;
use crate::metadata::{Metadata, OpenError};

use crate::device::{BlockDevice, DeviceError, IoClass, SectorSize};
use crate::format::event_log::{
    Geometry, LogHeader, HEADER_BLOCKS, LOG_HEADER_SIZE, MIN_EVENT_LOG_BLOCKS,
};
use crate::format::layout::{
    check_block_size, first_usable_block, usable_end_block, DEFAULT_BLOCK_SIZE,
    HEAD_RESERVED_BYTES, TAIL_RESERVED_BYTES,
};
use crate::format::{
    write_superblocks, ErrorRecord, ErrorsPolicy, Features, FormatError, FsState, FsUuid, Label,
    Layout, Region, Superblock,
};

const MIB: u64 = 1 << 20;

/// Smallest journal mkfs makes.
pub const MIN_JOURNAL_BYTES: u64 = MIB;

/// Largest journal mkfs makes.
pub const MAX_JOURNAL_BYTES: u64 = 128 * MIB;

/// The default journal is this fraction of the device (then clamped to the limits above).
pub const DEFAULT_JOURNAL_FRACTION: u64 = 64;

/// Smallest main (metadata and data) region mkfs accepts.
pub const MIN_MAIN_BYTES: u64 = MIB;

/// Bytes at the start of the journal region that mkfs zeroes, so a journal left by an earlier
/// filesystem on the device is not mistaken for ours. (Journal entries should still carry the
/// filesystem UUID: mkfs does not zero the whole journal.)
pub const JOURNAL_HEAD_ZEROED_BYTES: u64 = 64 * 1024;

/// The default event log is this fraction of the device (then clamped to the limits below).
pub const DEFAULT_EVENT_LOG_FRACTION: u64 = 1024;

/// Smallest default event log.
pub const MIN_DEFAULT_EVENT_LOG_BYTES: u64 = 64 * 1024;

/// Largest default event log (4088 records with 4 KiB blocks).
pub const MAX_DEFAULT_EVENT_LOG_BYTES: u64 = MIB;

/// Largest event log mkfs makes (its image is kept in memory while mounted).
pub const MAX_EVENT_LOG_BYTES: u64 = 64 * MIB;

/// What to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkfsOptions {
    /// Filesystem block size in bytes (default 4096).
    pub block_size: u32,
    /// Journal size in bytes, rounded up to whole blocks; `None` for 1/64 of the device,
    /// clamped to 1..128 MiB.
    pub journal_bytes: Option<u64>,
    /// Filesystem label.
    pub label: Label,
    /// UUID to use; `None` generates a random one.
    pub uuid: Option<FsUuid>,
    /// Default `errors=` policy recorded in the superblock.
    pub errors_policy: ErrorsPolicy,
    /// Creation time in seconds since the epoch; `None` uses the clock. Fixed times make
    /// images reproducible in tests.
    pub time: Option<u64>,
    /// Event log size in bytes, rounded up to whole blocks (two of them hold its headers);
    /// `None` for 1/1024 of the device clamped to 64 KiB..1 MiB; `Some(0)` for no event log
    /// (an image as made before the log existed).
    pub event_log_bytes: Option<u64>,
    /// Owner and group of the root directory (`make_filesystem`): root's
    /// by default; the user's when a user makes a filesystem to mount
    /// (as mke2fs's `root_owner`), so that it can write there.
    pub root_owner: (u32, u32),
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            journal_bytes: None,
            label: Label::default(),
            uuid: None,
            errors_policy: ErrorsPolicy::default(),
            time: None,
            event_log_bytes: None,
            root_owner: (0, 0),
        }
    }
}

/// Why mkfs refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MkfsError {
    /// The block size is not supported.
    #[error("cannot use block size {block_size}: {source}")]
    BlockSize {
        /// The requested block size.
        block_size: u32,
        /// Why not.
        #[source]
        source: FormatError,
    },
    /// The layout could take the block size, but a filesystem with it
    /// could never be mounted.
    #[error(
        "block size {block_size} cannot be mounted: file data needs {}-byte blocks",
        crate::pagecache::PAGE_BYTES
    )]
    BlockSizeNotMountable {
        /// The requested block size.
        block_size: u32,
    },
    /// The block size is smaller than the device's sectors.
    #[error("block size {block_size} is smaller than the device's {sector_size}-byte sectors")]
    BlockSizeBelowSectorSize {
        /// The requested block size.
        block_size: u32,
        /// The device's sector size.
        sector_size: u64,
    },
    /// The requested event log size is outside the allowed range.
    #[error(
        "event log size {requested} bytes is outside {minimum}..={maximum} bytes (or 0 for none)"
    )]
    EventLogSize {
        /// The requested size.
        requested: u64,
        /// Smallest allowed.
        minimum: u64,
        /// Largest allowed.
        maximum: u64,
    },
    /// The requested journal size is outside the allowed range.
    #[error("journal size {requested} bytes is outside {minimum}..={maximum} bytes")]
    JournalSize {
        /// The requested size.
        requested: u64,
        /// Smallest allowed.
        minimum: u64,
        /// Largest allowed.
        maximum: u64,
    },
    /// The device cannot hold a filesystem with these options.
    #[error(
        "device of {device_length} bytes is too small: this layout needs at least {minimum} bytes"
    )]
    DeviceTooSmall {
        /// The device length.
        device_length: u64,
        /// The smallest device these options fit.
        minimum: u64,
    },
    /// No random UUID could be generated.
    #[error("cannot generate a filesystem UUID: {0}")]
    Uuid(#[source] std::io::Error),
    /// The device failed while mkfs wrote to it.
    #[error("device failed during mkfs: {0}")]
    Device(#[from] DeviceError),
    /// The superblock could not be written or did not validate.
    #[error("mkfs could not write the superblock: {0}")]
    Format(#[from] FormatError),
    /// The journal or the trees could not be opened.
    #[error("mkfs could not open the new metadata: {0}")]
    Open(#[from] OpenError),
    /// The journal failed while mkfs wrote the root directory.
    #[error("mkfs could not write the journal: {0}")]
    Journal(#[from] JournalError),
    /// The b-trees or the root directory could not be created.
    #[error("mkfs could not create the b-trees: {0}")]
    Btree(#[from] BtreeError),
}

/// Plans the layout mkfs would make on a device of `device_length` bytes with `sector_size`
/// sectors, without writing anything (for `mkfs --dry-run` and tests).
pub fn plan_layout(
    device_length: u64,
    sector_size: SectorSize,
    options: &MkfsOptions,
) -> Result<Layout, MkfsError> {
    plan(device_length, sector_size, options).map(|(layout, _)| layout)
}

/// The event log's size in blocks for these options on a device of `device_length` bytes.
fn event_log_blocks(device_length: u64, options: &MkfsOptions) -> Result<u64, MkfsError> {
    let block_bytes = u64::from(options.block_size);
    let minimum = MIN_EVENT_LOG_BLOCKS * block_bytes;
    let bytes = match options.event_log_bytes {
        Some(0) => return Ok(0),
        Some(requested) => {
            if !(minimum..=MAX_EVENT_LOG_BYTES).contains(&requested) {
                return Err(MkfsError::EventLogSize {
                    requested,
                    minimum,
                    maximum: MAX_EVENT_LOG_BYTES,
                });
            }
            requested
        }
        None => (device_length / DEFAULT_EVENT_LOG_FRACTION)
            .clamp(MIN_DEFAULT_EVENT_LOG_BYTES, MAX_DEFAULT_EVENT_LOG_BYTES)
            .max(minimum),
    };
    Ok(bytes.div_ceil(block_bytes))
}

/// The layout and the event log region (after the journal, before the main region) mkfs
/// would make.
fn plan(
    device_length: u64,
    sector_size: SectorSize,
    options: &MkfsOptions,
) -> Result<(Layout, Option<Region>), MkfsError> {
    let block_size = options.block_size;
    check_block_size(block_size).map_err(|source| MkfsError::BlockSize { block_size, source })?;
    if u64::from(block_size) < sector_size.bytes() {
        return Err(MkfsError::BlockSizeBelowSectorSize {
            block_size,
            sector_size: sector_size.bytes(),
        });
    }
    let block_bytes = u64::from(block_size);
    let journal_bytes = match options.journal_bytes {
        Some(requested) => {
            if !(MIN_JOURNAL_BYTES..=MAX_JOURNAL_BYTES).contains(&requested) {
                return Err(MkfsError::JournalSize {
                    requested,
                    minimum: MIN_JOURNAL_BYTES,
                    maximum: MAX_JOURNAL_BYTES,
                });
            }
            requested.next_multiple_of(block_bytes)
        }
        None => {
            let share = (device_length / DEFAULT_JOURNAL_FRACTION)
                .clamp(MIN_JOURNAL_BYTES, MAX_JOURNAL_BYTES);
            share - share % block_bytes
        }
    };
    let first = first_usable_block(block_size);
    let journal = Region {
        start: first,
        blocks: journal_bytes / block_bytes,
    };
    let log_blocks = event_log_blocks(device_length, options)?;
    let event_log = (log_blocks > 0).then_some(Region {
        start: journal.start + journal.blocks,
        blocks: log_blocks,
    });
    let main_start = journal.start + journal.blocks + log_blocks;
    // Smallest device these options fit: head, journal, event log, minimal main region, tail.
    let minimum = first * block_bytes
        + journal_bytes
        + log_blocks * block_bytes
        + MIN_MAIN_BYTES
        + TAIL_RESERVED_BYTES;
    let too_small = MkfsError::DeviceTooSmall {
        device_length,
        minimum: minimum.max(HEAD_RESERVED_BYTES + TAIL_RESERVED_BYTES),
    };
    let Some(usable_end) = usable_end_block(block_size, device_length) else {
        return Err(too_small);
    };
    let main_blocks = usable_end.saturating_sub(main_start);
    if main_blocks * block_bytes < MIN_MAIN_BYTES {
        return Err(too_small);
    }
    let layout = Layout {
        block_size,
        device_length,
        journal,
        main: Region {
            start: main_start,
            blocks: main_blocks,
        },
    };
    layout.validate()?;
    Ok((layout, event_log))
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Makes a new, empty, clean filesystem on `device` and returns its superblock as written
/// (write sequence 1). Overwrites the journal's head and the superblock copies; the rest of
/// the device is left as it was.
pub fn mkfs<D: BlockDevice + ?Sized>(
    device: &D,
    options: &MkfsOptions,
) -> Result<Superblock, MkfsError> {
    let (layout, event_log) = plan(device.length(), device.sector_size(), options)?;
    let uuid = match options.uuid {
        Some(uuid) => uuid,
        None => FsUuid::generate().map_err(MkfsError::Uuid)?,
    };
    let time = options.time.unwrap_or_else(now_seconds);
    let mut superblock = Superblock {
        uuid,
        label: options.label.clone(),
        features: Features {
            ro_compat: Features::RO_COMPAT_MEDIA_RECORDS
                | Features::RO_COMPAT_INODE_COUNT
                | if event_log.is_some() {
                    Features::RO_COMPAT_EVENT_LOG
                } else {
                    0
                },
            incompat: Features::INCOMPAT_DATA_CLAIMS
                | Features::INCOMPAT_SYMLINK_PIECES
                | Features::INCOMPAT_XATTR_DIGESTS,
            ..Features::default()
        },
        layout,
        state: FsState::Clean,
        errors_policy: options.errors_policy,
        mount_count: 0,
        mkfs_time: time,
        last_mount_time: 0,
        last_write_time: time,
        write_sequence: 0,
        clean_journal_seq: 0,
        error_record: ErrorRecord::default(),
        event_log,
    };

    let block_bytes = u64::from(layout.block_size);
    let journal_offset = layout.journal.start * block_bytes;
    let zeroed_length = JOURNAL_HEAD_ZEROED_BYTES.min(layout.journal.blocks * block_bytes);
    // Both are multiples of the block size, which is at least the sector size.
    let zeros = vec![0; zeroed_length as usize];
    device.write_at(journal_offset, &zeros, IoClass::Journal)?;
    if let Some(region) = event_log {
        // A log left by an earlier filesystem must not be read as ours: zero the region,
        // then write both header copies (nothing reserved yet).
        let geometry = Geometry {
            region,
            block_size: layout.block_size,
        };
        let zeros = vec![0; geometry.bytes() as usize];
        device.write_at(geometry.start(), &zeros, IoClass::EventLog)?;
        for copy in 0..HEADER_BLOCKS {
            let header = LogHeader {
                uuid,
                slots: geometry.slots(),
                sequence: copy,
                reserved_through: 0,
            };
            // A whole block: the device's sector may be larger than the header.
            let mut block = vec![0; layout.block_size as usize];
            block[..LOG_HEADER_SIZE].copy_from_slice(&header.encode());
            device.write_at(
                geometry.start() + geometry.header_offset(copy),
                &block,
                IoClass::EventLog,
            )?;
        }
    }
    // write_superblocks flushes after the primary, which also makes the zeroed journal head
    // durable before any superblock points at it.
    write_superblocks(device, &mut superblock)?;
    Ok(superblock)
}

/// The record of a new filesystem's root directory (inode [`ROOT_INO`]):
/// mode 0755, owned by `owner`, made at `seconds` since the epoch.
pub fn root_directory(owner: (u32, u32), seconds: u64) -> InodeRecord {
    let now = Timestamp {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanoseconds: 0,
    };
    InodeRecord {
        mode: FileType::Directory.mode_bits() | 0o755,
        uid: owner.0,
        gid: owner.1,
        nlink: 2,
        flags: 0,
        size: 0,
        generation: 1,
        rdev: 0,
        atime: now,
        mtime: now,
        ctime: now,
        btime: now,
    }
}

/// Makes a complete, empty filesystem: [`mkfs`], then the b-trees (with the reverse-map
/// records of their roots) and the root directory (inode [`ROOT_INO`], mode 0755, owned by
/// `options.root_owner`), all durable and every journal pin written out.
pub fn make_filesystem(
    device: Arc<dyn BlockDevice>,
    options: &MkfsOptions,
) -> Result<Superblock, MkfsError> {
    if options.block_size as usize != crate::pagecache::PAGE_BYTES {
        return Err(MkfsError::BlockSizeNotMountable {
            block_size: options.block_size,
        });
    }
    let superblock = mkfs(device.as_ref(), options)?;
    let Metadata { journal, trees, .. } = Metadata::open_default(device, &superblock)?;
    let root = root_directory(options.root_owner, superblock.mkfs_time);
    let mut transaction = trees.transaction();
    transaction.put(TreeId::Inodes, &inode_key(ROOT_INO), &root.encode())?;
    transaction.put(TreeId::Meta, LIVE_INODES_KEY, &1u64.to_le_bytes())?;
    transaction.commit_durable()?;
    trees.sync()?;
    journal.reclaim_all()?;
    journal.flush()?;
    Ok(superblock)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::device::{
        ByteRange, Errno, FaultDevice, FaultPlan, FaultRule, MemoryDevice, Operations,
    };
    use crate::format::{read_superblock, SuperblockCopy};

    fn fixed_options() -> MkfsOptions {
        MkfsOptions {
            label: Label::new("test").unwrap(),
            uuid: Some(FsUuid([1; 16])),
            time: Some(1_700_000_000),
            ..MkfsOptions::default()
        }
    }

    #[test]
    fn the_root_directory_belongs_to_the_owner_asked_for() {
        for owner in [(0, 0), (65534, 65534), (1000, 100)] {
            let device = Arc::new(MemoryDevice::new(64 * MIB, SectorSize::Bytes512));
            let options = MkfsOptions {
                root_owner: owner,
                ..fixed_options()
            };
            let superblock = make_filesystem(device.clone(), &options).unwrap();
            let metadata = Metadata::open_default(device, &superblock).unwrap();
            let root = metadata
                .trees
                .get(TreeId::Inodes, &inode_key(ROOT_INO))
                .unwrap()
                .unwrap();
            let root = InodeRecord::decode(&root).unwrap();
            assert_eq!((root.uid, root.gid), owner);
        }
    }

    #[test]
    fn mkfs_writes_a_superblock_that_mount_reads_back() {
        let device = MemoryDevice::new(256 * MIB, SectorSize::Bytes512);
        let made = mkfs(&device, &fixed_options()).unwrap();
        assert_eq!(made.write_sequence, 1);
        assert_eq!(made.state, FsState::Clean);
        let loaded = read_superblock(&device).unwrap();
        assert_eq!(loaded.source, SuperblockCopy::Primary);
        assert_eq!(loaded.superblock, made);
        for copy in SuperblockCopy::ALL {
            assert_eq!(
                crate::format::read_superblock_copy(&device, copy).unwrap(),
                made
            );
        }
        assert!(device.flush_count() >= 2);
    }

    #[test]
    fn default_journal_is_a_sixty_fourth_of_the_device_within_limits() {
        let options = MkfsOptions::default();
        let layout = plan_layout(256 * MIB, SectorSize::Bytes512, &options).unwrap();
        assert_eq!(layout.journal.blocks * 4096, 4 * MIB);
        let small = plan_layout(8 * MIB, SectorSize::Bytes512, &options).unwrap();
        assert_eq!(small.journal.blocks * 4096, MIB);
        let large = plan_layout(64 * 1024 * MIB, SectorSize::Bytes512, &options).unwrap();
        assert_eq!(large.journal.blocks * 4096, 128 * MIB);
        assert_eq!(layout.journal.start, 2);
        // The event log sits between them: 1/1024 of the device, 256 KiB here.
        let (_, event_log) = plan(256 * MIB, SectorSize::Bytes512, &options).unwrap();
        let event_log = event_log.unwrap();
        assert_eq!(event_log.start, layout.journal.end().unwrap());
        assert_eq!(event_log.blocks * 4096, 256 * 1024);
        assert_eq!(layout.main.start, event_log.end().unwrap());
        let none = MkfsOptions {
            event_log_bytes: Some(0),
            ..MkfsOptions::default()
        };
        let (bare, event_log) = plan(256 * MIB, SectorSize::Bytes512, &none).unwrap();
        assert_eq!(event_log, None);
        assert_eq!(bare.main.start, bare.journal.end().unwrap());
    }

    #[test]
    fn layouts_for_every_block_size_validate() {
        for shift in 10..=16 {
            let options = MkfsOptions {
                block_size: 1 << shift,
                ..MkfsOptions::default()
            };
            for length in [3 * MIB, 10 * MIB + 12345, 1024 * MIB] {
                let layout =
                    plan_layout(length, SectorSize::Bytes512, &options).unwrap_or_else(|error| {
                        panic!("block {} length {length}: {error}", 1 << shift)
                    });
                layout.validate_within(length).unwrap();
            }
        }
    }

    #[test]
    fn too_small_device_is_refused_with_the_minimum() {
        let device = MemoryDevice::new(2 * MIB, SectorSize::Bytes512);
        match mkfs(&device, &fixed_options()) {
            Err(MkfsError::DeviceTooSmall {
                device_length,
                minimum,
            }) => {
                assert_eq!(device_length, 2 * MIB);
                // Head, journal, the smallest default event log, main, tail.
                assert_eq!(minimum, 8192 + MIB + 64 * 1024 + MIB + 65536);
                let just_enough = MemoryDevice::new(minimum, SectorSize::Bytes512);
                mkfs(&just_enough, &fixed_options()).unwrap();
            }
            other => panic!("expected DeviceTooSmall, got {other:?}"),
        }
        assert!(
            device.to_image().iter().all(|&byte| byte == 0),
            "nothing written"
        );
    }

    #[test]
    fn every_size_from_the_minimum_up_makes_a_filesystem() {
        // The default journal is a sixty-fourth of the device, so most
        // sizes give a journal that is not a multiple of eight blocks
        // (whole filesystems: the journal is checked when opened).
        let sizes = (3..=160).map(|mib| mib * MIB).chain([
            65 * MIB + 4096,
            127 * MIB + 12345,
            300 * MIB + 512,
        ]);
        for size in sizes {
            let device = Arc::new(MemoryDevice::new(size, SectorSize::Bytes512));
            if let Err(error) = make_filesystem(device, &fixed_options()) {
                panic!("mkfs of {size} bytes failed: {error}");
            }
        }
        // Explicit journal sizes of any whole number of blocks, too.
        for blocks in [257, 263, 300, 511] {
            let device = Arc::new(MemoryDevice::new(64 * MIB, SectorSize::Bytes512));
            let options = MkfsOptions {
                journal_bytes: Some(blocks * 4096),
                ..fixed_options()
            };
            if let Err(error) = make_filesystem(device, &options) {
                panic!("mkfs with a journal of {blocks} blocks failed: {error}");
            }
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let device = MemoryDevice::new(64 * MIB, SectorSize::Bytes4096);
        let refuse = |options: MkfsOptions| mkfs(&device, &options).unwrap_err();
        assert!(matches!(
            refuse(MkfsOptions {
                block_size: 3000,
                ..fixed_options()
            }),
            MkfsError::BlockSize { .. }
        ));
        assert!(matches!(
            refuse(MkfsOptions {
                block_size: 1024,
                ..fixed_options()
            }),
            MkfsError::BlockSizeBelowSectorSize { .. }
        ));
        for journal in [MIB - 1, 129 * MIB] {
            assert!(matches!(
                refuse(MkfsOptions {
                    journal_bytes: Some(journal),
                    ..fixed_options()
                }),
                MkfsError::JournalSize { .. }
            ));
        }
        assert!(matches!(
            refuse(MkfsOptions {
                journal_bytes: Some(63 * MIB),
                ..fixed_options()
            }),
            MkfsError::DeviceTooSmall { .. }
        ));
    }

    #[test]
    fn mkfs_zeroes_the_journal_head_and_leaves_the_first_four_kib_alone() {
        let image = vec![0xaa; (64 * MIB) as usize];
        let device = MemoryDevice::from_image(image, SectorSize::Bytes512);
        let made = mkfs(&device, &fixed_options()).unwrap();
        let image = device.to_image();
        assert!(image[..4096].iter().all(|&byte| byte == 0xaa));
        let journal = (made.layout.journal.start * 4096) as usize;
        let head = &image[journal..journal + JOURNAL_HEAD_ZEROED_BYTES as usize];
        assert!(head.iter().all(|&byte| byte == 0));
    }

    #[test]
    fn generated_uuid_is_random_when_none_is_given() {
        let options = MkfsOptions {
            uuid: None,
            ..fixed_options()
        };
        let first = mkfs(&MemoryDevice::new(8 * MIB, SectorSize::Bytes512), &options).unwrap();
        let second = mkfs(&MemoryDevice::new(8 * MIB, SectorSize::Bytes512), &options).unwrap();
        assert_ne!(first.uuid, second.uuid);
    }

    #[test]
    fn device_errors_during_mkfs_are_returned() {
        let plan = Arc::new(FaultPlan::new());
        plan.add_rule(
            FaultRule::fail(Errno::EIO)
                .on(Operations::WRITE)
                .in_range(ByteRange::new(4096, 8192)),
        )
        .unwrap();
        let device = FaultDevice::new(MemoryDevice::new(64 * MIB, SectorSize::Bytes512), plan);
        assert!(matches!(
            mkfs(&device, &fixed_options()),
            Err(MkfsError::Format(FormatError::SuperblockWrite { .. }))
        ));

        let plan = Arc::new(FaultPlan::new());
        plan.add_rule(FaultRule::fail(Errno::EIO).for_class(IoClass::Journal))
            .unwrap();
        let device = FaultDevice::new(MemoryDevice::new(64 * MIB, SectorSize::Bytes512), plan);
        assert!(matches!(
            mkfs(&device, &fixed_options()),
            Err(MkfsError::Device(_))
        ));
    }
}

#[cfg(test)]
mod complete_filesystem_tests {
    use std::sync::Arc;

    use super::*;
    use crate::device::MemoryDevice;
    use crate::fsck::fsck;

    #[test]
    fn new_filesystem_has_a_root_directory_and_checks_clean() {
        let device = Arc::new(MemoryDevice::new(64 * MIB, SectorSize::Bytes512));
        make_filesystem(device.clone(), &MkfsOptions::default()).unwrap();
        let report = fsck(device, &mut |_| {}).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.namespace.unwrap().inodes, 1);
        let journal = report.journal.unwrap();
        assert!(journal.cut_off.is_empty());
        let space = report.space.unwrap();
        assert_eq!(
            space.used_blocks + space.free_blocks + space.pending_blocks,
            space.region_blocks
        );
    }
}
