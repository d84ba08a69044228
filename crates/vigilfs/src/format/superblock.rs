//! The superblock: the filesystem's identity, layout, state and error history, in one
//! checksummed 4 KiB structure.
//!
//! ```text
//! offset  size  field
//!      0    24  header (magic "VIGILFS\0", version 1, length 4096)
//!     24    16  uuid
//!     40    64  label (UTF-8, NUL padded)
//!    104     8  compat features      (unknown bits: ignored)
//!    112     8  incompat features    (unknown bits: refuse to mount)
//!    120     8  ro_compat features   (unknown bits: mount read-only)
//!    128     4  block size
//!    132     4  reserved, zero
//!    136     8  device length at mkfs (bytes)
//!    144     8  journal region start (block)
//!    152     8  journal region length (blocks)
//!    160     8  main region start (block)
//!    168     8  main region length (blocks)
//!    176     2  state (1 clean, 2 dirty)
//!    178     2  errors policy (1 continue, 2 remount-ro, 3 panic)
//!    180     4  mount count
//!    184     8  mkfs time (seconds since the epoch)
//!    192     8  last mount time
//!    200     8  last write time
//!    208     8  write sequence (bumped by every superblock write; picks the newest backup)
//!    216     8  journal seq at the clean unmount (the newest entry then; 0: not known)
//!    224   736  reserved, zero
//!    960     8  event log region start (block; 0: no event log)
//!    968     8  event log region length (blocks)
//!    976    48  reserved, zero
//!   1024   512  error record (its own header and checksum)
//!   1536  2560  reserved, zero
//! ```
//!
//! The header checksum covers all 4096 bytes, the embedded error record included. Decoding
//! validates everything that can be checked without a device; [`Superblock::validate_for_device`]
//! adds the checks against the device it was read from.

use std::fmt;

use super::codec::{Decoder, Encoder};
use super::error_record::{ErrorRecord, ERROR_RECORD_SIZE};
use super::header::{seal, verify, Magic, StructureType, HEADER_SIZE};
use super::identity::{FsUuid, Label, LABEL_CAPACITY};
use super::layout::{Layout, Region, SUPERBLOCK_SIZE};
use super::FormatError;
use crate::device::SectorSize;

/// The superblock's structure type.
pub const SUPERBLOCK: StructureType = StructureType {
    name: "superblock",
    magic: Magic(*b"VIGILFS\0"),
    oldest_version: 1,
    current_version: 1,
    fixed_length: Some(SUPERBLOCK_SIZE as u32),
};

const ERROR_RECORD_OFFSET: usize = 1024;
const FIELDS_END: usize = 224;
const EVENT_LOG_OFFSET: usize = 960;

/// Feature flags, split like ext4's by what an implementation that does not know a flag must
/// do. The words let versions add flags without a version bump; version 1 images may carry
/// [`Features::RO_COMPAT_MEDIA_RECORDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features {
    /// Safe to ignore when unknown.
    pub compat: u64,
    /// Unknown bits mean the filesystem cannot be used at all.
    pub incompat: u64,
    /// Unknown bits mean the filesystem can only be mounted read-only.
    pub ro_compat: u64,
}

impl Features {
    /// Compat bits this build knows.
    pub const KNOWN_COMPAT: u64 = 0;
    /// Incompat bits this build knows.
    pub const KNOWN_INCOMPAT: u64 = Features::INCOMPAT_DATA_CLAIMS
        | Features::INCOMPAT_SYMLINK_PIECES
        | Features::INCOMPAT_XATTR_DIGESTS;
    /// Ro-compat bits this build knows.
    pub const KNOWN_RO_COMPAT: u64 = Features::RO_COMPAT_MEDIA_RECORDS
        | Features::RO_COMPAT_EVENT_LOG
        | Features::RO_COMPAT_INODE_COUNT;

    /// Ro-compat: the Meta tree may hold bad-block records (`'B'`) and
    /// poison records (`'X'`). A build that does not know them may read
    /// the filesystem (reads are still verified by checksums) but must not
    /// write it: it would hand bad blocks out again and read poisoned data
    /// as if intact. Set by mkfs, and by the first read-write mount of an
    /// older image by a build that keeps them (such an image has none: it
    /// mounts as it is).
    pub const RO_COMPAT_MEDIA_RECORDS: u64 = 1;

    /// Ro-compat: the image has an event log region (superblock bytes
    /// 960..976). A build that does not know it may read the filesystem but
    /// must not write it: it would not keep the log's ids and could rewrite
    /// the superblock without the region. Images made before the log have
    /// neither the bit nor the region and mount without a persistent log.
    pub const RO_COMPAT_EVENT_LOG: u64 = 1 << 1;

    /// Ro-compat: the Meta tree counts the inodes (`b"live-inodes"`), and
    /// every inode made or deleted changes the count. A build that does not
    /// know it may read the filesystem but must not write it: its creates
    /// and deletes would leave the count untrue. Set by mkfs, and by the
    /// first read-write mount of an older image, after it has counted.
    pub const RO_COMPAT_INODE_COUNT: u64 = 1 << 2;

    /// Incompat: journal entries may carry data claims (version 2 entries),
    /// which a recovery must check: a build that does not know them would
    /// take such an entry for damage, and replay without it. Set by mkfs,
    /// and by the first read-write mount of an older image by a build that
    /// writes them (before it writes one).
    pub const INCOMPAT_DATA_CLAIMS: u64 = 1;

    /// Incompat: a symbolic link's target may be longer than one b-tree
    /// value, its rest in pieces (`b'S' | ino | index` in the Meta tree),
    /// up to Linux's 4,095 bytes. A build that does not know them would take
    /// such a link's inode record for corruption. Set by mkfs, and by the
    /// first read-write mount of an older image by a build that writes
    /// them.
    pub const INCOMPAT_SYMLINK_PIECES: u64 = 1 << 1;

    /// Incompat: an extended attribute whose name is over 118 bytes is kept
    /// under the name's digest, the name in its record (up to Linux's 255
    /// bytes). A build that does not know them would fail listing such an
    /// inode's attributes, and could set a second copy of a 119- or
    /// 120-byte name beside it. Set by mkfs, and by the first read-write
    /// mount of an older image by a build that writes them.
    pub const INCOMPAT_XATTR_DIGESTS: u64 = 1 << 2;

    /// Whether an unknown ro-compat feature forbids writing.
    pub fn requires_read_only(&self) -> bool {
        self.ro_compat & !Features::KNOWN_RO_COMPAT != 0
    }
}

/// Whether the filesystem was cleanly unmounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsState {
    /// Unmounted cleanly: nothing to recover.
    Clean,
    /// Mounted, or not unmounted cleanly: the journal must be replayed.
    Dirty,
}

/// What to do when the filesystem meets an error it cannot work around (mount's `errors=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ErrorsPolicy {
    /// Report the error and keep going.
    Continue,
    /// Report the error and stop writing.
    #[default]
    RemountReadOnly,
    /// Report the error and stop the filesystem process.
    Panic,
}

impl ErrorsPolicy {
    fn code(self) -> u16 {
        match self {
            ErrorsPolicy::Continue => 1,
            ErrorsPolicy::RemountReadOnly => 2,
            ErrorsPolicy::Panic => 3,
        }
    }

    fn from_code(code: u16) -> Option<ErrorsPolicy> {
        match code {
            1 => Some(ErrorsPolicy::Continue),
            2 => Some(ErrorsPolicy::RemountReadOnly),
            3 => Some(ErrorsPolicy::Panic),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorsPolicy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ErrorsPolicy::Continue => "continue",
            ErrorsPolicy::RemountReadOnly => "remount-ro",
            ErrorsPolicy::Panic => "panic",
        })
    }
}

/// The mount option's words; the error names them.
impl std::str::FromStr for ErrorsPolicy {
    type Err = String;

    fn from_str(word: &str) -> Result<ErrorsPolicy, String> {
        [
            ErrorsPolicy::Continue,
            ErrorsPolicy::RemountReadOnly,
            ErrorsPolicy::Panic,
        ]
        .into_iter()
        .find(|policy| policy.to_string() == word)
        .ok_or_else(|| format!("errors={word}: use continue, remount-ro or panic"))
    }
}

/// The decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Superblock {
    /// The filesystem's UUID.
    pub uuid: FsUuid,
    /// Its label.
    pub label: Label,
    /// Feature flags.
    pub features: Features,
    /// Block size and regions.
    pub layout: Layout,
    /// Clean or dirty.
    pub state: FsState,
    /// The default `errors=` policy.
    pub errors_policy: ErrorsPolicy,
    /// How many times it was mounted.
    pub mount_count: u32,
    /// When it was made (seconds since the epoch).
    pub mkfs_time: u64,
    /// When it was last mounted.
    pub last_mount_time: u64,
    /// When the superblock was last written.
    pub last_write_time: u64,
    /// Incremented by every superblock write; the newest backup has the highest.
    pub write_sequence: u64,
    /// The newest journal entry when the filesystem was last unmounted (or
    /// frozen) cleanly, 0 when not known (dirty, or written by a build
    /// before this field, which reads it as reserved and writes it 0).
    /// Recovery checks it is still there: a journal block damaged since
    /// the clean unmount is found, not taken for the end of the log.
    pub clean_journal_seq: u64,
    /// Persistent error history.
    pub error_record: ErrorRecord,
    /// The event log region, if the image has one (mkfs-only: images made
    /// before it have none).
    pub event_log: Option<Region>,
}

/// The highest write sequence a superblock may carry (2^62): far beyond
/// any real count of writes, so one beyond it is damage or forgery, and a
/// valid one never wraps.
pub const MAX_WRITE_SEQUENCE: u64 = 1 << 62;

/// Journal sequence numbers stay below this (2^62), in entries and in the
/// superblock's clean-unmount seq, so seq arithmetic never overflows
/// however an image was damaged.
pub const MAX_JOURNAL_SEQ: u64 = 1 << 62;

impl Superblock {
    /// Records a mount: bumps the mount count, sets the mount time and marks the filesystem
    /// dirty until a clean unmount.
    pub fn record_mount(&mut self, now: u64) {
        self.mount_count = self.mount_count.saturating_add(1);
        self.last_mount_time = now;
        self.state = FsState::Dirty;
        self.clean_journal_seq = 0;
    }

    /// Checks what can be checked without a device: supported features and a consistent
    /// layout.
    pub fn validate(&self) -> Result<(), FormatError> {
        let unknown = self.features.incompat & !Features::KNOWN_INCOMPAT;
        if unknown != 0 {
            return Err(FormatError::UnsupportedFeatures { incompat: unknown });
        }
        self.layout.validate()?;
        if self.write_sequence > MAX_WRITE_SEQUENCE {
            // One write a nanosecond would take three centuries to get
            // here: forged, and the next write must not wrap to below the
            // copies it replaces (the oldest copy would win).
            return Err(FormatError::InvalidField {
                structure: SUPERBLOCK.name,
                field: "write sequence",
                reason: format!(
                    "{} is past {MAX_WRITE_SEQUENCE}, more writes than any device makes",
                    self.write_sequence
                ),
            });
        }
        if self.clean_journal_seq >= MAX_JOURNAL_SEQ {
            return Err(FormatError::InvalidField {
                structure: SUPERBLOCK.name,
                field: "journal seq at clean unmount",
                reason: format!(
                    "{} is not below {MAX_JOURNAL_SEQ}, more entries than any journal writes",
                    self.clean_journal_seq
                ),
            });
        }
        self.validate_event_log(self.layout.device_length)
    }

    /// The event log region is there exactly when its feature bit is, and
    /// lies in the usable space apart from the journal and main regions.
    fn validate_event_log(&self, device_length: u64) -> Result<(), FormatError> {
        let invalid = |reason: String| FormatError::InvalidField {
            structure: SUPERBLOCK.name,
            field: "event log region",
            reason,
        };
        let flagged = self.features.ro_compat & Features::RO_COMPAT_EVENT_LOG != 0;
        let Some(region) = self.event_log else {
            return if flagged {
                Err(invalid(
                    "the event log feature is set without a region".into(),
                ))
            } else {
                Ok(())
            };
        };
        if !flagged {
            return Err(invalid("a region without the event log feature".into()));
        }
        if region.blocks < super::event_log::MIN_EVENT_LOG_BLOCKS {
            return Err(invalid(format!(
                "{} blocks, fewer than {}",
                region.blocks,
                super::event_log::MIN_EVENT_LOG_BLOCKS
            )));
        }
        let first = super::layout::first_usable_block(self.layout.block_size);
        let limit =
            super::layout::usable_end_block(self.layout.block_size, device_length).unwrap_or(0);
        if region.start < first || region.end().is_none_or(|end| end > limit) {
            return Err(invalid(format!(
                "{region} is outside the usable blocks {first}..{limit}"
            )));
        }
        if region.overlaps(&self.layout.journal) || region.overlaps(&self.layout.main) {
            return Err(invalid(format!(
                "{region} overlaps the journal or main region"
            )));
        }
        Ok(())
    }

    /// Checks the superblock against the device it lives on.
    pub fn validate_for_device(
        &self,
        device_length: u64,
        sector_size: SectorSize,
    ) -> Result<(), FormatError> {
        self.validate()?;
        if u64::from(self.layout.block_size) < sector_size.bytes() {
            return Err(FormatError::BlockSizeBelowSectorSize {
                block_size: self.layout.block_size,
                sector_size: sector_size.bytes(),
            });
        }
        if device_length < self.layout.device_length {
            return Err(FormatError::DeviceShrunk {
                recorded: self.layout.device_length,
                device_length,
            });
        }
        self.layout.validate_within(device_length)?;
        self.validate_event_log(device_length)
    }

    /// The 4096-byte on-disk form. Refuses to encode a superblock that would not validate.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        let layout = &self.layout;
        let mut encoder = Encoder::new(SUPERBLOCK.name, SUPERBLOCK_SIZE);
        encoder.pad_to(HEADER_SIZE)?;
        encoder.put_bytes(&self.uuid.0);
        encoder.put_bytes(&self.label.to_field());
        encoder.put_u64(self.features.compat);
        encoder.put_u64(self.features.incompat);
        encoder.put_u64(self.features.ro_compat);
        encoder.put_u32(layout.block_size);
        encoder.put_u32(0);
        encoder.put_u64(layout.device_length);
        encoder.put_u64(layout.journal.start);
        encoder.put_u64(layout.journal.blocks);
        encoder.put_u64(layout.main.start);
        encoder.put_u64(layout.main.blocks);
        encoder.put_u16(match self.state {
            FsState::Clean => 1,
            FsState::Dirty => 2,
        });
        encoder.put_u16(self.errors_policy.code());
        encoder.put_u32(self.mount_count);
        encoder.put_u64(self.mkfs_time);
        encoder.put_u64(self.last_mount_time);
        encoder.put_u64(self.last_write_time);
        encoder.put_u64(self.write_sequence);
        encoder.put_u64(self.clean_journal_seq);
        debug_assert_eq!(encoder.position(), FIELDS_END);
        encoder.pad_to(EVENT_LOG_OFFSET)?;
        let event_log = self.event_log.unwrap_or(Region {
            start: 0,
            blocks: 0,
        });
        encoder.put_u64(event_log.start);
        encoder.put_u64(event_log.blocks);
        encoder.pad_to(ERROR_RECORD_OFFSET)?;
        encoder.put_bytes(&self.error_record.encode()?);
        encoder.pad_to(SUPERBLOCK_SIZE)?;
        let mut bytes = encoder.into_bytes();
        seal(&SUPERBLOCK, &mut bytes)?;
        Ok(bytes)
    }

    /// Decodes and validates a superblock from `bytes` (at least 4096 bytes; more are
    /// ignored).
    pub fn decode(bytes: &[u8]) -> Result<Superblock, FormatError> {
        verify(&SUPERBLOCK, bytes)?;
        let structure = SUPERBLOCK.name;
        let invalid = |field: &'static str, reason: String| FormatError::InvalidField {
            structure,
            field,
            reason,
        };
        let mut decoder = Decoder::new(structure, bytes);
        decoder.seek(HEADER_SIZE)?;
        let uuid = FsUuid(decoder.array()?);
        let label = Label::from_field(structure, &decoder.array::<LABEL_CAPACITY>()?)?;
        let features = Features {
            compat: decoder.u64()?,
            incompat: decoder.u64()?,
            ro_compat: decoder.u64()?,
        };
        let block_size = decoder.u32()?;
        let reserved = decoder.u32()?;
        if reserved != 0 {
            return Err(invalid("reserved after block size", format!("{reserved}")));
        }
        let device_length = decoder.u64()?;
        let journal = Region {
            start: decoder.u64()?,
            blocks: decoder.u64()?,
        };
        let main = Region {
            start: decoder.u64()?,
            blocks: decoder.u64()?,
        };
        let state = match decoder.u16()? {
            1 => FsState::Clean,
            2 => FsState::Dirty,
            other => return Err(invalid("state", format!("unknown state {other}"))),
        };
        let policy_code = decoder.u16()?;
        let errors_policy = ErrorsPolicy::from_code(policy_code)
            .ok_or_else(|| invalid("errors policy", format!("unknown policy {policy_code}")))?;
        let mount_count = decoder.u32()?;
        let mkfs_time = decoder.u64()?;
        let last_mount_time = decoder.u64()?;
        let last_write_time = decoder.u64()?;
        let write_sequence = decoder.u64()?;
        let clean_journal_seq = decoder.u64()?;
        decoder.seek(EVENT_LOG_OFFSET)?;
        let event_log = Region {
            start: decoder.u64()?,
            blocks: decoder.u64()?,
        };
        let event_log = match (event_log.start, event_log.blocks) {
            (0, 0) => None,
            _ => Some(event_log),
        };
        decoder.seek(ERROR_RECORD_OFFSET)?;
        let error_record = ErrorRecord::decode(decoder.bytes(ERROR_RECORD_SIZE)?)?;
        let superblock = Superblock {
            uuid,
            label,
            features,
            layout: Layout {
                block_size,
                device_length,
                journal,
                main,
            },
            state,
            errors_policy,
            mount_count,
            mkfs_time,
            last_mount_time,
            last_write_time,
            write_sequence,
            clean_journal_seq,
            error_record,
            event_log,
        };
        superblock.validate()?;
        Ok(superblock)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::error_record::{ErrorEvent, ErrorKind, ErrorOrigin};
    use crate::format::layout::{first_usable_block, TAIL_RESERVED_BYTES};
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    pub(crate) fn sample_superblock() -> Superblock {
        let mut error_record = ErrorRecord::default();
        error_record.record(ErrorEvent {
            time: 1_700_000_000,
            errno: libc::EIO,
            inode: Some(42),
            block: Some(4242),
            kind: ErrorKind::Writeback,
            origin: ErrorOrigin::new("writeback"),
        });
        Superblock {
            uuid: FsUuid([7; 16]),
            label: Label::new("sample").unwrap(),
            features: Features::default(),
            layout: Layout {
                block_size: 4096,
                device_length: 64 * MIB,
                journal: Region {
                    start: 2,
                    blocks: 256,
                },
                main: Region {
                    start: 258,
                    blocks: 1000,
                },
            },
            state: FsState::Clean,
            errors_policy: ErrorsPolicy::RemountReadOnly,
            mount_count: 3,
            mkfs_time: 1_600_000_000,
            last_mount_time: 1_650_000_000,
            last_write_time: 1_650_000_001,
            write_sequence: 9,
            clean_journal_seq: 77,
            error_record,
            event_log: None,
        }
    }

    #[test]
    fn encoded_superblock_decodes_to_the_same_superblock() {
        let superblock = sample_superblock();
        let bytes = superblock.encode().unwrap();
        assert_eq!(bytes.len(), SUPERBLOCK_SIZE);
        assert_eq!(&bytes[..8], b"VIGILFS\0");
        assert_eq!(Superblock::decode(&bytes).unwrap(), superblock);
    }

    #[test]
    fn every_single_byte_flip_gives_a_typed_error() {
        let bytes = sample_superblock().encode().unwrap();
        for index in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut corrupted = bytes.clone();
                corrupted[index] ^= mask;
                let error = Superblock::decode(&corrupted)
                    .expect_err(&format!("flip {mask:#x} at byte {index} went unnoticed"));
                let expected = match index {
                    0..=7 => matches!(error, FormatError::BadMagic { .. }),
                    8..=9 => matches!(error, FormatError::UnsupportedVersion { .. }),
                    12..=15 => matches!(
                        error,
                        FormatError::InvalidField {
                            field: "length",
                            ..
                        }
                    ),
                    _ => matches!(error, FormatError::ChecksumMismatch { .. }),
                };
                assert!(expected, "flip at byte {index}: unexpected {error}");
            }
        }
    }

    #[test]
    fn every_truncation_gives_a_typed_error() {
        let bytes = sample_superblock().encode().unwrap();
        for length in 0..bytes.len() {
            let error = Superblock::decode(&bytes[..length]).unwrap_err();
            assert!(
                matches!(error, FormatError::Truncated { .. }),
                "truncated to {length}: {error}"
            );
        }
    }

    type FieldChange = Box<dyn Fn(&mut [u8])>;

    /// Re-seals a modified superblock so only field validation can catch the change.
    fn resealed(mut bytes: Vec<u8>, change: impl FnOnce(&mut [u8])) -> Vec<u8> {
        change(&mut bytes);
        seal(&SUPERBLOCK, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn invalid_fields_behind_a_valid_checksum_are_rejected() {
        let bytes = sample_superblock().encode().unwrap();
        let cases: Vec<(&str, FieldChange)> = vec![
            ("unknown incompat feature", Box::new(|b| b[119] = 0x80)),
            (
                "block size 3000",
                Box::new(|b| b[128..132].copy_from_slice(&3000u32.to_le_bytes())),
            ),
            (
                "journal overlapping main",
                Box::new(|b| b[160..168].copy_from_slice(&100u64.to_le_bytes())),
            ),
            (
                "main beyond the device",
                Box::new(|b| b[168..176].copy_from_slice(&u64::MAX.to_le_bytes())),
            ),
            ("unknown state", Box::new(|b| b[176] = 9)),
            ("unknown errors policy", Box::new(|b| b[178] = 0)),
            ("label garbage after NUL", Box::new(|b| b[103] = b'x')),
            ("reserved after block size", Box::new(|b| b[133] = 1)),
            (
                "error record flipped",
                Box::new(|b| b[ERROR_RECORD_OFFSET + 40] ^= 1),
            ),
        ];
        for (name, change) in cases {
            let corrupted = resealed(bytes.clone(), change);
            let error = Superblock::decode(&corrupted).expect_err(name);
            assert!(
                !matches!(
                    error,
                    FormatError::ChecksumMismatch {
                        structure: "superblock",
                        ..
                    }
                ),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn unknown_ro_compat_feature_decodes_but_requires_read_only() {
        let bytes = resealed(sample_superblock().encode().unwrap(), |b| b[120] = 1 << 7);
        let superblock = Superblock::decode(&bytes).unwrap();
        assert!(superblock.features.requires_read_only());
    }

    #[test]
    fn device_checks_catch_a_shrunk_device_and_a_small_block_size() {
        let superblock = sample_superblock();
        superblock
            .validate_for_device(64 * MIB, SectorSize::Bytes4096)
            .unwrap();
        assert!(matches!(
            superblock.validate_for_device(32 * MIB, SectorSize::Bytes512),
            Err(FormatError::DeviceShrunk { .. })
        ));
        let mut small_blocks = superblock.clone();
        small_blocks.layout.block_size = 1024;
        small_blocks.layout.journal.start = 8;
        small_blocks.layout.main.start = 300;
        assert!(matches!(
            small_blocks.validate_for_device(64 * MIB, SectorSize::Bytes4096),
            Err(FormatError::BlockSizeBelowSectorSize { .. })
        ));
    }

    #[test]
    fn record_mount_marks_dirty_and_counts() {
        let mut superblock = sample_superblock();
        superblock.record_mount(1_800_000_000);
        assert_eq!(superblock.state, FsState::Dirty);
        assert_eq!(superblock.mount_count, 4);
        assert_eq!(superblock.last_mount_time, 1_800_000_000);
    }

    fn arbitrary_event() -> impl Strategy<Value = ErrorEvent> {
        (
            any::<u64>(),
            1..i32::MAX,
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            0..ErrorKind::ALL.len(),
            "[ -~]{0,40}",
        )
            .prop_map(|(time, errno, inode, block, kind, origin)| ErrorEvent {
                time,
                errno,
                inode,
                block,
                kind: ErrorKind::ALL[kind],
                origin: ErrorOrigin::new(&origin),
            })
    }

    fn arbitrary_superblock() -> impl Strategy<Value = Superblock> {
        let block_shift = 10u32..=16;
        let identity = (any::<[u8; 16]>(), "\\PC{0,16}", any::<u64>(), any::<u64>());
        let times = (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            0..=MAX_WRITE_SEQUENCE,
        );
        let events = proptest::collection::vec(arbitrary_event(), 0..5);
        let choices = (
            any::<bool>(),
            0usize..3,
            1u64..64,
            1u64..4096,
            0u64..1 << 20,
        );
        (block_shift, identity, times, events, choices).prop_map(
            |(
                shift,
                (uuid, label, compat, ro_compat),
                (mount_count, mkfs_time, last_mount_time, last_write_time, write_sequence),
                events,
                (dirty, policy, journal_blocks, main_blocks, spare_bytes),
            )| {
                let block_size = 1u32 << shift;
                let first = first_usable_block(block_size);
                let journal = Region {
                    start: first,
                    blocks: journal_blocks,
                };
                let main = Region {
                    start: first + journal_blocks,
                    blocks: main_blocks,
                };
                // Backups are placed relative to a 4 KiB-aligned end, so round up to it.
                let regions_end =
                    ((main.start + main.blocks) * u64::from(block_size)).next_multiple_of(4096);
                let device_length = regions_end + TAIL_RESERVED_BYTES + spare_bytes;
                let mut error_record = ErrorRecord::default();
                for event in events {
                    error_record.record(event);
                }
                let mut label = label;
                while label.len() > LABEL_CAPACITY {
                    label.pop();
                }
                Superblock {
                    uuid: FsUuid(uuid),
                    label: Label::new(&label).unwrap(),
                    features: Features {
                        compat,
                        incompat: 0,
                        // The event log bit needs a region: tested apart.
                        ro_compat: ro_compat & !Features::RO_COMPAT_EVENT_LOG,
                    },
                    layout: Layout {
                        block_size,
                        device_length,
                        journal,
                        main,
                    },
                    state: if dirty {
                        FsState::Dirty
                    } else {
                        FsState::Clean
                    },
                    errors_policy: [
                        ErrorsPolicy::Continue,
                        ErrorsPolicy::RemountReadOnly,
                        ErrorsPolicy::Panic,
                    ][policy],
                    mount_count,
                    mkfs_time,
                    last_mount_time,
                    last_write_time,
                    write_sequence,
                    // Any value: a field of its own, kept as written.
                    clean_journal_seq: write_sequence.rotate_left(17) % MAX_JOURNAL_SEQ,
                    error_record,
                    event_log: None,
                }
            },
        )
    }

    #[test]
    fn a_write_sequence_no_device_reaches_is_refused() {
        let mut superblock = sample_superblock();
        superblock.write_sequence = MAX_WRITE_SEQUENCE;
        assert!(Superblock::decode(&superblock.encode().unwrap()).is_ok());
        // Decoding validates as encoding does.
        superblock.write_sequence = u64::MAX;
        let refused = superblock.validate().unwrap_err();
        assert!(refused.to_string().contains("write sequence"), "{refused}");
    }

    /// A forged clean-unmount seq of u64::MAX once overflowed replay's
    /// `seq + 1` (a panic in fsck in a debug build).
    #[test]
    fn a_clean_unmount_seq_past_the_highest_journal_seq_is_refused() {
        let mut superblock = sample_superblock();
        superblock.clean_journal_seq = MAX_JOURNAL_SEQ - 1;
        assert!(Superblock::decode(&superblock.encode().unwrap()).is_ok());
        superblock.clean_journal_seq = u64::MAX;
        let refused = superblock.validate().unwrap_err();
        assert!(refused.to_string().contains("clean unmount"), "{refused}");
    }

    proptest! {
        #[test]
        fn random_superblocks_roundtrip(superblock in arbitrary_superblock()) {
            let bytes = superblock.encode().unwrap();
            prop_assert_eq!(Superblock::decode(&bytes).unwrap(), superblock);
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = Superblock::decode(&bytes);
        }

        #[test]
        fn random_corruption_of_a_valid_superblock_is_an_error(
            index in 0..SUPERBLOCK_SIZE,
            mask in 1u8..=255,
        ) {
            let mut bytes = sample_superblock().encode().unwrap();
            bytes[index] ^= mask;
            prop_assert!(Superblock::decode(&bytes).is_err());
        }
    }
}
