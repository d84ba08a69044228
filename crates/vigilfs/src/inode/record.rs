//! The records the namespace keeps in the b-trees: inodes, directory
//! entries and file extents, as keys and values.
//!
//! Keys put integers big-endian so byte order is numeric order: all of a
//! directory's entries, and all of a file's extents, are one key range.
//! Values are little-endian and start with a version byte. Every decoder
//! checks lengths and ranges first and returns a typed error, never
//! panicking: the bytes come from disk. (The node holding them is
//! checksummed; these checks catch bugs and foreign data, not bit rot.)
//!
//! ```text
//! inode     key  ino: u64 BE
//!           value version 1 | mode u32 | uid u32 | gid u32 | nlink u32 | flags u32
//!                 | size u64 | generation u64 | rdev u64
//!                 | atime, mtime, ctime, btime: (seconds i64, nanoseconds u32) each
//! dirent    key  parent ino: u64 BE | name hash: u64 BE | collision index: u16 BE
//!           value version 1 | child ino u64 | file type u8 | name length u8 | name
//! extent    key  ino: u64 BE | file offset in blocks: u64 BE
//!           value version 1 | flags u8 | reserved u16 | blocks u32
//!                 | physical start block u64 | one crc32c per block (u32 each)
//! ```
//!
//! Names hash with 64-bit FNV-1a: stable across builds and machines, which
//! is all an on-disk hash needs; collisions take the next collision index.

use thiserror::Error;

const VERSION: u8 = 1;

/// Longest name in a directory entry, as NAME_MAX.
pub const MAX_NAME_BYTES: usize = 255;

/// Most blocks one extent maps: its per-block checksums must fit a b-tree
/// value (16 + 4 × 128 = 528 bytes).
pub const MAX_EXTENT_BLOCKS: u32 = 128;

/// The inode number of the root directory.
pub const ROOT_INO: u64 = 1;

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Too short or too long for the record.
    #[error("{record} {part} has {found} bytes, expected {expected}")]
    Length {
        /// Which record.
        record: &'static str,
        /// Key or value.
        part: &'static str,
        /// Bytes found.
        found: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// Written by a newer format.
    #[error("{record} version {found} is not supported (this build reads version {VERSION})")]
    Version {
        /// Which record.
        record: &'static str,
        /// The version found.
        found: u8,
    },
    /// A field holds a value that is not allowed.
    #[error("{record}: invalid {field}")]
    Invalid {
        /// Which record.
        record: &'static str,
        /// Which field.
        field: &'static str,
    },
}

/// What kind of file an inode is (the `S_IFMT` bits of its mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
}

impl FileType {
    const ALL: [FileType; 7] = [
        FileType::Regular,
        FileType::Directory,
        FileType::Symlink,
        FileType::CharDevice,
        FileType::BlockDevice,
        FileType::Fifo,
        FileType::Socket,
    ];

    /// The `S_IFMT` bits.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => 0o100000,
            FileType::Directory => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::CharDevice => 0o020000,
            FileType::BlockDevice => 0o060000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
        }
    }

    /// The type a mode says, if its type bits are valid.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        let bits = mode & 0o170000;
        FileType::ALL
            .into_iter()
            .find(|kind| kind.mode_bits() == bits)
    }

    /// The byte stored in directory entries (the `DT_*` value).
    pub fn code(self) -> u8 {
        match self {
            FileType::Fifo => 1,
            FileType::CharDevice => 2,
            FileType::Directory => 4,
            FileType::BlockDevice => 6,
            FileType::Regular => 8,
            FileType::Symlink => 10,
            FileType::Socket => 12,
        }
    }

    fn from_code(code: u8) -> Option<FileType> {
        FileType::ALL.into_iter().find(|kind| kind.code() == code)
    }
}

/// A point in time, as stored: seconds since the epoch and nanoseconds
/// (ordered in time: seconds first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Seconds since 1970-01-01 UTC (negative before).
    pub seconds: i64,
    /// Nanoseconds, below 1,000,000,000.
    pub nanoseconds: u32,
}

impl Timestamp {
    /// The current time (the epoch if the clock is before it).
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanoseconds: since.subsec_nanos(),
        }
    }
}

/// An inode's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeRecord {
    /// Type and permission bits, as `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Directory entries naming it (plus `.` and subdirectories' `..` for
    /// directories).
    pub nlink: u32,
    /// Inode flags.
    pub flags: u32,
    /// Size in bytes.
    pub size: u64,
    /// Generation: distinguishes reuses of the inode number.
    pub generation: u64,
    /// Device number, for device files.
    pub rdev: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last content change.
    pub mtime: Timestamp,
    /// Last attribute change.
    pub ctime: Timestamp,
    /// Creation.
    pub btime: Timestamp,
}

const INODE_VALUE_BYTES: usize = 1 + 5 * 4 + 3 * 8 + 4 * 12;

/// The largest file size (and file offset): the last page index must fit
/// the file-block arithmetic. A record claiming more is damaged.
pub const MAX_FILE_BYTES: u64 = 1 << 60;

/// The longest symbolic link target: Linux's `PATH_MAX` less its NUL, as
/// ext4 on 4 KiB blocks. A record claiming more is damaged.
pub const MAX_SYMLINK_TARGET_BYTES: usize = 4095;

impl InodeRecord {
    /// The file type its mode says (validated at decode).
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode).unwrap_or(FileType::Regular)
    }

    /// The value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(INODE_VALUE_BYTES);
        bytes.push(VERSION);
        for field in [self.mode, self.uid, self.gid, self.nlink, self.flags] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        for field in [self.size, self.generation, self.rdev] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        for time in [self.atime, self.mtime, self.ctime, self.btime] {
            bytes.extend_from_slice(&time.seconds.to_le_bytes());
            bytes.extend_from_slice(&time.nanoseconds.to_le_bytes());
        }
        bytes
    }

    /// Decodes and validates a value.
    pub fn decode(bytes: &[u8]) -> Result<InodeRecord, RecordError> {
        const RECORD: &str = "inode";
        exact_length(RECORD, "value", bytes, INODE_VALUE_BYTES)?;
        check_version(RECORD, bytes[0])?;
        let mut reader = Reader { bytes, at: 1 };
        let mode = reader.u32();
        let (uid, gid, nlink, flags) = (reader.u32(), reader.u32(), reader.u32(), reader.u32());
        let (size, generation, rdev) = (reader.u64(), reader.u64(), reader.u64());
        let mut time = || Timestamp {
            seconds: reader.u64() as i64,
            nanoseconds: reader.u32(),
        };
        let (atime, mtime, ctime, btime) = (time(), time(), time(), time());
        if FileType::from_mode(mode).is_none() {
            return Err(RecordError::Invalid {
                record: RECORD,
                field: "file type bits of mode",
            });
        }
        if size > MAX_FILE_BYTES {
            return Err(RecordError::Invalid {
                record: RECORD,
                field: "size (past the largest file)",
            });
        }
        // A symbolic link's size is its target's length.
        if FileType::from_mode(mode) == Some(FileType::Symlink)
            && size > MAX_SYMLINK_TARGET_BYTES as u64
        {
            return Err(RecordError::Invalid {
                record: RECORD,
                field: "size (longer than a symbolic link's target can be)",
            });
        }
        if [atime, mtime, ctime, btime]
            .iter()
            .any(|time| time.nanoseconds >= 1_000_000_000)
        {
            return Err(RecordError::Invalid {
                record: RECORD,
                field: "timestamp nanoseconds",
            });
        }
        Ok(InodeRecord {
            mode,
            uid,
            gid,
            nlink,
            flags,
            size,
            generation,
            rdev,
            atime,
            mtime,
            ctime,
            btime,
        })
    }
}

/// The key of inode `ino`.
pub fn inode_key(ino: u64) -> [u8; 8] {
    ino.to_be_bytes()
}

/// The inode number in an inode key.
pub fn decode_inode_key(key: &[u8]) -> Result<u64, RecordError> {
    exact_length("inode", "key", key, 8)?;
    Ok(u64::from_be_bytes(key.try_into().expect("length checked")))
}

/// 64-bit FNV-1a of a name: the directory index hash.
pub fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Where a directory entry sits: its directory, its name's hash, and which
/// of the names with that hash it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirentKey {
    /// The directory's inode.
    pub parent: u64,
    /// [`name_hash`] of the name.
    pub hash: u64,
    /// 0 for the first name with this hash, then 1, 2...
    pub collision: u16,
}

const DIRENT_KEY_BYTES: usize = 18;

impl DirentKey {
    /// The key bytes.
    pub fn encode(&self) -> [u8; DIRENT_KEY_BYTES] {
        let mut key = [0u8; DIRENT_KEY_BYTES];
        key[..8].copy_from_slice(&self.parent.to_be_bytes());
        key[8..16].copy_from_slice(&self.hash.to_be_bytes());
        key[16..].copy_from_slice(&self.collision.to_be_bytes());
        key
    }

    /// Decodes key bytes.
    pub fn decode(key: &[u8]) -> Result<DirentKey, RecordError> {
        exact_length("directory entry", "key", key, DIRENT_KEY_BYTES)?;
        let mut reader = Reader { bytes: key, at: 0 };
        Ok(DirentKey {
            parent: reader.u64_be(),
            hash: reader.u64_be(),
            collision: u16::from_be_bytes([key[16], key[17]]),
        })
    }

    /// The range of keys holding `parent`'s entries: `(start, end)`.
    pub fn directory_range(parent: u64) -> ([u8; 8], Option<[u8; 8]>) {
        (
            parent.to_be_bytes(),
            parent.checked_add(1).map(u64::to_be_bytes),
        )
    }
}

/// A directory entry's value: what the name points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirent {
    /// The inode named.
    pub child: u64,
    /// Its type, duplicated here so readdir needs no inode lookup.
    pub file_type: FileType,
    /// The name: 1 to 255 bytes, no `/` or NUL, not `.` or `..`.
    pub name: Vec<u8>,
}

/// Whether `name` may be stored in a directory entry.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name != b"."
        && name != b".."
        && !name.iter().any(|&byte| byte == b'/' || byte == 0)
}

impl Dirent {
    /// The value bytes.
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(valid_name(&self.name));
        let mut bytes = Vec::with_capacity(11 + self.name.len());
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.child.to_le_bytes());
        bytes.push(self.file_type.code());
        bytes.push(self.name.len() as u8);
        bytes.extend_from_slice(&self.name);
        bytes
    }

    /// Decodes and validates a value.
    pub fn decode(bytes: &[u8]) -> Result<Dirent, RecordError> {
        const RECORD: &str = "directory entry";
        if bytes.len() < 11 {
            return Err(RecordError::Length {
                record: RECORD,
                part: "value",
                found: bytes.len(),
                expected: 11,
            });
        }
        check_version(RECORD, bytes[0])?;
        let mut reader = Reader { bytes, at: 1 };
        let child = reader.u64();
        let file_type = FileType::from_code(bytes[9]).ok_or(RecordError::Invalid {
            record: RECORD,
            field: "file type",
        })?;
        exact_length(RECORD, "value", bytes, 11 + usize::from(bytes[10]))?;
        let name = bytes[11..].to_vec();
        if !valid_name(&name) {
            return Err(RecordError::Invalid {
                record: RECORD,
                field: "name",
            });
        }
        Ok(Dirent {
            child,
            file_type,
            name,
        })
    }
}

/// Where an extent sits: its file and its first block in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExtentKey {
    /// The file's inode.
    pub ino: u64,
    /// File offset, in blocks.
    pub offset: u64,
}

impl ExtentKey {
    /// The key bytes.
    pub fn encode(&self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.ino.to_be_bytes());
        key[8..].copy_from_slice(&self.offset.to_be_bytes());
        key
    }

    /// The range of keys holding `ino`'s extents: `(start, end)`.
    pub fn file_range(ino: u64) -> ([u8; 16], Option<[u8; 16]>) {
        let start = ExtentKey { ino, offset: 0 }.encode();
        let end = ino.checked_add(1).map(|next| {
            ExtentKey {
                ino: next,
                offset: 0,
            }
            .encode()
        });
        (start, end)
    }

    /// Decodes key bytes.
    pub fn decode(key: &[u8]) -> Result<ExtentKey, RecordError> {
        exact_length("extent", "key", key, 16)?;
        let mut reader = Reader { bytes: key, at: 0 };
        Ok(ExtentKey {
            ino: reader.u64_be(),
            offset: reader.u64_be(),
        })
    }
}

/// A run of a file's blocks on the device, with a checksum per block so
/// reads can verify what they get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Extent flags ([`Extent::UNWRITTEN`]).
    pub flags: u8,
    /// First physical block.
    pub physical: u64,
    /// crc32c of each block, in order; its length is the extent's length.
    pub checksums: Vec<u32>,
}

impl Extent {
    /// Allocated (fallocate) but never written: reads as zeros, and its
    /// checksums are not checked.
    pub const UNWRITTEN: u8 = 1;

    /// Blocks mapped.
    pub fn blocks(&self) -> u32 {
        self.checksums.len() as u32
    }

    /// The value bytes.
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!((1..=MAX_EXTENT_BLOCKS).contains(&self.blocks()));
        let mut bytes = Vec::with_capacity(16 + 4 * self.checksums.len());
        bytes.push(VERSION);
        bytes.push(self.flags);
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&self.blocks().to_le_bytes());
        bytes.extend_from_slice(&self.physical.to_le_bytes());
        for checksum in &self.checksums {
            bytes.extend_from_slice(&checksum.to_le_bytes());
        }
        bytes
    }

    /// Decodes and validates a value.
    pub fn decode(bytes: &[u8]) -> Result<Extent, RecordError> {
        const RECORD: &str = "extent";
        if bytes.len() < 16 {
            return Err(RecordError::Length {
                record: RECORD,
                part: "value",
                found: bytes.len(),
                expected: 16,
            });
        }
        check_version(RECORD, bytes[0])?;
        let flags = bytes[1];
        if flags & !Extent::UNWRITTEN != 0 || bytes[2] != 0 || bytes[3] != 0 {
            return Err(RecordError::Invalid {
                record: RECORD,
                field: "flags",
            });
        }
        let mut reader = Reader { bytes, at: 4 };
        let blocks = reader.u32();
        let physical = reader.u64();
        if !(1..=MAX_EXTENT_BLOCKS).contains(&blocks) {
            return Err(RecordError::Invalid {
                record: RECORD,
                field: "block count",
            });
        }
        // Every byte it maps must have an address: a damaged value could
        // name blocks whose byte offset overflows.
        let addressable = physical
            .checked_add(u64::from(blocks))
            .is_some_and(|end| end <= u64::MAX / crate::pagecache::PAGE);
        if !addressable {
            return Err(RecordError::Invalid {
                record: RECORD,
                field: "physical block",
            });
        }
        exact_length(RECORD, "value", bytes, 16 + 4 * blocks as usize)?;
        let checksums = (0..blocks).map(|_| reader.u32()).collect();
        Ok(Extent {
            flags,
            physical,
            checksums,
        })
    }
}

fn exact_length(
    record: &'static str,
    part: &'static str,
    bytes: &[u8],
    expected: usize,
) -> Result<(), RecordError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(RecordError::Length {
            record,
            part,
            found: bytes.len(),
            expected,
        })
    }
}

fn check_version(record: &'static str, found: u8) -> Result<(), RecordError> {
    if found == VERSION {
        Ok(())
    } else {
        Err(RecordError::Version { record, found })
    }
}

/// Reads fixed-width integers from a slice whose length was checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..self.at + N]);
        self.at += N;
        out
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    fn u64_be(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_inode() -> InodeRecord {
        InodeRecord {
            mode: FileType::Regular.mode_bits() | 0o644,
            uid: 1000,
            gid: 100,
            nlink: 1,
            flags: 0,
            size: 12345,
            generation: 7,
            rdev: 0,
            atime: Timestamp {
                seconds: 1_700_000_000,
                nanoseconds: 5,
            },
            mtime: Timestamp::default(),
            ctime: Timestamp {
                seconds: -3,
                nanoseconds: 999_999_999,
            },
            btime: Timestamp::default(),
        }
    }

    /// A forged extent near the top of the block numbers once overflowed
    /// the read's `physical * PAGE` (a panic in a debug build).
    #[test]
    fn extents_mapping_blocks_past_any_byte_address_are_refused() {
        let extent = |physical: u64| Extent {
            flags: 0,
            physical,
            checksums: vec![0; 2],
        };
        let highest = u64::MAX / crate::pagecache::PAGE - 2;
        assert_eq!(
            Extent::decode(&extent(highest).encode()).unwrap(),
            extent(highest)
        );
        for physical in [highest + 1, 0x8000_0000_0000_0000, u64::MAX] {
            assert!(matches!(
                Extent::decode(&extent(physical).encode()),
                Err(RecordError::Invalid {
                    field: "physical block",
                    ..
                })
            ));
        }
    }

    #[test]
    fn sizes_no_file_or_symbolic_link_can_have_are_refused() {
        let decoded = |mode: u32, size: u64| {
            InodeRecord::decode(
                &InodeRecord {
                    mode,
                    size,
                    ..sample_inode()
                }
                .encode(),
            )
        };
        let regular = FileType::Regular.mode_bits() | 0o644;
        let symlink = FileType::Symlink.mode_bits() | 0o777;
        assert!(decoded(regular, MAX_FILE_BYTES).is_ok());
        assert!(decoded(regular, MAX_FILE_BYTES + 1).is_err());
        assert!(decoded(regular, u64::MAX).is_err());
        assert!(decoded(symlink, MAX_SYMLINK_TARGET_BYTES as u64).is_ok());
        assert!(decoded(symlink, MAX_SYMLINK_TARGET_BYTES as u64 + 1).is_err());
        assert!(decoded(symlink, 1 << 40).is_err());
    }

    #[test]
    fn records_roundtrip() {
        let inode = sample_inode();
        assert_eq!(InodeRecord::decode(&inode.encode()), Ok(inode));
        let dirent = Dirent {
            child: 42,
            file_type: FileType::Directory,
            name: b"photos".to_vec(),
        };
        assert_eq!(Dirent::decode(&dirent.encode()), Ok(dirent));
        let key = DirentKey {
            parent: 1,
            hash: name_hash(b"photos"),
            collision: 3,
        };
        assert_eq!(DirentKey::decode(&key.encode()), Ok(key));
        let extent = Extent {
            flags: Extent::UNWRITTEN,
            physical: 9000,
            checksums: vec![1, 2, 3],
        };
        assert_eq!(Extent::decode(&extent.encode()), Ok(extent));
        let extent_key = ExtentKey { ino: 5, offset: 77 };
        assert_eq!(ExtentKey::decode(&extent_key.encode()), Ok(extent_key));
    }

    #[test]
    fn keys_sort_like_their_numbers() {
        let small = ExtentKey {
            ino: 1,
            offset: 300,
        }
        .encode();
        let large = ExtentKey { ino: 2, offset: 0 }.encode();
        assert!(small < large);
        assert!(inode_key(255) < inode_key(256));
    }

    #[test]
    fn invalid_names_are_refused() {
        for name in [&b""[..], b".", b"..", b"a/b", b"nul\0", &[b'x'; 256]] {
            assert!(!valid_name(name), "{name:?}");
        }
        assert!(valid_name(b"..."));
        assert!(valid_name(&[b'x'; 255]));
    }

    #[test]
    fn name_hash_is_stable() {
        // FNV-1a reference values: the hash is part of the on-disk format.
        assert_eq!(name_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(name_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let mut inode = sample_inode().encode();
        inode[1] = 0;
        inode[2] = 0;
        inode[3] = 0;
        inode[4] = 0; // mode 0: no file type
        assert!(matches!(
            InodeRecord::decode(&inode),
            Err(RecordError::Invalid { .. })
        ));
        assert!(matches!(
            InodeRecord::decode(&[2; INODE_VALUE_BYTES]),
            Err(RecordError::Version { found: 2, .. })
        ));
        let mut extent = Extent {
            flags: 0,
            physical: 1,
            checksums: vec![0; 4],
        }
        .encode();
        extent.pop();
        assert!(matches!(
            Extent::decode(&extent),
            Err(RecordError::Length { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = InodeRecord::decode(&bytes);
            let _ = Dirent::decode(&bytes);
            let _ = Extent::decode(&bytes);
            let _ = DirentKey::decode(&bytes);
            let _ = ExtentKey::decode(&bytes);
            let _ = decode_inode_key(&bytes);
        }

        #[test]
        fn every_decoded_dirent_reencodes_identically(bytes in prop::collection::vec(any::<u8>(), 11..80)) {
            if let Ok(dirent) = Dirent::decode(&bytes) {
                prop_assert_eq!(dirent.encode(), bytes);
            }
        }
    }
}
