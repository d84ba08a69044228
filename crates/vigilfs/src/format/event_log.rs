//! The event log region: a bounded ring of checksummed event records, and
//! the two header copies that say which event ids may have been handed out.
//!
//! ```text
//! region block 0     header copy A (512 bytes, rest zero)
//! region block 1     header copy B
//! region block 2..   record slots, 256 bytes each, written in turn (the slot
//!                    after the newest record's is the next), wrapping
//! ```
//!
//! Header (structure "VGEVHDR\0", version 1, 512 bytes): the filesystem
//! uuid (16), the number of slots (u64), a write sequence (u64, the copy
//! with the highest valid one wins; copies are written alternately, so a
//! torn write leaves the other), and `reserved_through` (u64): no event id
//! above it has ever been handed out to anyone. A mount raises it (write,
//! flush) *before* handing out ids beyond it, so after a crash the next
//! mount resumes above it and an id a listener saw is never given again.
//!
//! Record (structure "VGEVREC\0", version 1, 256 bytes):
//!
//! ```text
//!  24 id u64            32 first time (ns) u64   40 last time (ns) u64
//!  48 kind u16          50 flags u16             52 errno i32
//!  56 subtypes u32      60 level u8, 3 zero      64 count u64
//!  72 inode u64         80 generation u64        88 offset u64
//!  96 length u64       104 device offset u64    112 device length u64
//! 120 node block u64   128 last errno i32       132 zero u32
//! 136 last inode u64   144 errors_total u64     152 gap first u64
//! 160 gap last u64     168 value u64            176 tree name (16, NUL padded)
//! 192 text (56, UTF-8, NUL padded)              248 zero u64
//! ```
//!
//! Invariants: records go to consecutive slots whatever their ids (a mount
//! after a crash skips ids, never slots, so the oldest record is always the
//! one overwritten); ids of valid records are unique; absent values
//! have their flag clear and their field zero. A slot of zeros is empty
//! (never written). A slot failing its checksum is unreadable — a write a
//! crash tore, or damage — and reads as a gap, never as an event. Records
//! are rewritten only with identical bytes or replaced by a newer lap, so a
//! torn write never damages a record that was durable before it.

use super::codec::{Decoder, Encoder};
use super::header::{seal, verify, Magic, StructureType, HEADER_SIZE};
use super::identity::FsUuid;
use super::layout::Region;
use super::FormatError;

/// Bytes per record slot.
pub const RECORD_SIZE: usize = 256;

/// Event ids stay below this (2^62), in records and in the header's
/// `reserved_through`: far past any real count of events, so id
/// arithmetic never overflows however the region was damaged.
pub const MAX_EVENT_ID: u64 = 1 << 62;

/// Bytes of a header copy.
pub const LOG_HEADER_SIZE: usize = 512;

/// Blocks of the region that hold header copies.
pub const HEADER_BLOCKS: u64 = 2;

/// Smallest region: the two header blocks and one block of records.
pub const MIN_EVENT_LOG_BLOCKS: u64 = HEADER_BLOCKS + 1;

/// An event record's structure type.
pub const EVENT_RECORD: StructureType = StructureType {
    name: "event record",
    magic: Magic(*b"VGEVREC\0"),
    oldest_version: 1,
    current_version: 1,
    fixed_length: Some(RECORD_SIZE as u32),
};

/// The event log header's structure type.
pub const EVENT_LOG_HEADER: StructureType = StructureType {
    name: "event log header",
    magic: Magic(*b"VGEVHDR\0"),
    oldest_version: 1,
    current_version: 1,
    fixed_length: Some(LOG_HEADER_SIZE as u32),
};

const TREE_CAPACITY: usize = 16;
/// Bytes of an event record's text.
pub const TEXT_CAPACITY: usize = 56;

/// What a record announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// One or more errors merged (identical ones, or a flood).
    Error,
    /// Errors that got no record of their own (`count` of them), or ids
    /// that were never written (`gap`).
    Lost,
    /// The filesystem was mounted; `flag`: recovery (journal replay) runs.
    Mount,
    /// Recovery after an unclean stop finished; `value`: orphans deleted.
    Recovery,
    /// The `errors=` policy acted; `text`: the action.
    ErrorsAction,
    /// The filesystem was frozen.
    Freeze,
    /// The filesystem was thawed.
    Thaw,
    /// Fault rules were set or cleared; `text`: what, `value`: rules active.
    Faults,
    /// The filesystem was shut down (terminal for the mount).
    Shutdown,
    /// The filesystem was unmounted (terminal for the mount).
    Unmount,
    /// A remount changed the mount's settings; `text`: the new values,
    /// `value`: [`SETTINGS_READ_ONLY`] when it made the mount read-only
    /// (its image left clean, as by a freeze), [`SETTINGS_READ_WRITE`]
    /// when read-write again, else [`SETTINGS_OTHER`] (as every record
    /// written before these were told apart).
    Settings,
}

/// A SETTINGS record's `value`: neither read-only nor read-write again.
pub const SETTINGS_OTHER: u64 = 0;
/// A SETTINGS record's `value`: the mount was made read-only.
pub const SETTINGS_READ_ONLY: u64 = 1;
/// A SETTINGS record's `value`: the mount was made read-write again.
pub const SETTINGS_READ_WRITE: u64 = 2;

impl RecordKind {
    /// Every kind, in code order.
    pub const ALL: [RecordKind; 11] = [
        RecordKind::Error,
        RecordKind::Lost,
        RecordKind::Mount,
        RecordKind::Recovery,
        RecordKind::ErrorsAction,
        RecordKind::Freeze,
        RecordKind::Thaw,
        RecordKind::Faults,
        RecordKind::Shutdown,
        RecordKind::Unmount,
        RecordKind::Settings,
    ];

    fn code(self) -> u16 {
        match self {
            RecordKind::Error => 1,
            RecordKind::Lost => 2,
            RecordKind::Mount => 3,
            RecordKind::Recovery => 4,
            RecordKind::ErrorsAction => 5,
            RecordKind::Freeze => 6,
            RecordKind::Thaw => 7,
            RecordKind::Faults => 8,
            RecordKind::Shutdown => 9,
            RecordKind::Unmount => 10,
            RecordKind::Settings => 11,
        }
    }

    fn from_code(code: u16) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The stable name JSON and the human output use.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Error => "error",
            RecordKind::Lost => "lost",
            RecordKind::Mount => "mount",
            RecordKind::Recovery => "recovery",
            RecordKind::ErrorsAction => "errors_action",
            RecordKind::Freeze => "freeze",
            RecordKind::Thaw => "thaw",
            RecordKind::Faults => "faults",
            RecordKind::Shutdown => "shutdown",
            RecordKind::Unmount => "unmount",
            RecordKind::Settings => "settings",
        }
    }

    /// Whether nothing of the same mount follows it on a live stream.
    pub fn is_terminal(self) -> bool {
        matches!(self, RecordKind::Shutdown | RecordKind::Unmount)
    }
}

/// A short text kept inline (no allocation on the error path): UTF-8, cut
/// at a character boundary to its capacity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InlineText<const N: usize> {
    bytes: [u8; N],
    len: u8,
}

impl<const N: usize> InlineText<N> {
    /// The empty text.
    pub const EMPTY: InlineText<N> = InlineText {
        bytes: [0; N],
        len: 0,
    };

    /// `text`; one longer than `N` bytes is cut at a character boundary and
    /// ends in `...`, so that a reader sees it was cut.
    pub fn new(text: &str) -> InlineText<N> {
        const CUT_MARK: &[u8] = b"...";
        let cut = text.len() > N && N > CUT_MARK.len();
        let mut end = if cut {
            N - CUT_MARK.len()
        } else {
            text.len().min(N)
        };
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; N];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        let mut len = end;
        if cut {
            bytes[end..end + CUT_MARK.len()].copy_from_slice(CUT_MARK);
            len += CUT_MARK.len();
        }
        InlineText {
            bytes,
            // N is at most 255 for every use here.
            len: u8::try_from(len).unwrap_or(u8::MAX),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    fn field(&self) -> [u8; N] {
        self.bytes
    }

    fn from_field(structure: &'static str, field: [u8; N]) -> Result<InlineText<N>, FormatError> {
        let len = field.iter().position(|byte| *byte == 0).unwrap_or(N);
        if field[len..].iter().any(|byte| *byte != 0) {
            return Err(invalid(
                structure,
                "text",
                "bytes after the terminating NUL",
            ));
        }
        let text = std::str::from_utf8(&field[..len])
            .map_err(|_| invalid(structure, "text", "not UTF-8"))?;
        Ok(InlineText::new(text))
    }
}

impl<const N: usize> std::fmt::Debug for InlineText<N> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{:?}", self.as_str())
    }
}

impl<const N: usize> Default for InlineText<N> {
    fn default() -> Self {
        InlineText::EMPTY
    }
}

/// A b-tree node an error was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeRef {
    /// The tree's name.
    pub tree: InlineText<TREE_CAPACITY>,
    /// The node's level (0: leaf), when known.
    pub level: Option<u8>,
    /// The node's block.
    pub block: u64,
}

/// One event record, decoded. Plain data (`Copy`, no heap), so the error
/// path can build and merge records without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRecord {
    /// Its id: increasing across mounts, never reused.
    pub id: u64,
    /// What it announces.
    pub kind: RecordKind,
    /// When the first thing it covers happened (ns since the epoch).
    pub first_time_ns: u64,
    /// When the last thing it covers happened.
    pub last_time_ns: u64,
    /// The (first) error's errno; 0 when there is none.
    pub errno: i32,
    /// OR of the errors' subtypes (the `fserror` crate's bits).
    pub subtypes: u32,
    /// Errors merged into it (`Error`), errors without a record of their
    /// own (`Lost`), errors of the mount (terminal kinds).
    pub count: u64,
    /// The (first) error's inode.
    pub inode: Option<u64>,
    /// That inode's generation, when known.
    pub generation: Option<u64>,
    /// The file byte range: offset and length.
    pub range: Option<(u64, u64)>,
    /// The device byte range: offset and length.
    pub device_range: Option<(u64, u64)>,
    /// The b-tree node.
    pub node: Option<NodeRef>,
    /// The last merged error's errno (equal to `errno` for one error).
    pub last_errno: i32,
    /// The last merged error's inode.
    pub last_inode: Option<u64>,
    /// Errors counted in every record up to and including this one, over
    /// the filesystem's life: what makes lost counts exact.
    pub errors_total: u64,
    /// `Lost`: the ids that were never written (first, last).
    pub gap: Option<(u64, u64)>,
    /// A number whose meaning depends on the kind (see [`RecordKind`]).
    pub value: u64,
    /// A flag whose meaning depends on the kind (see [`RecordKind`]).
    pub flag: bool,
    /// Where the error was seen, or the action taken.
    pub text: InlineText<TEXT_CAPACITY>,
}

const HAS_INODE: u16 = 1;
const HAS_GENERATION: u16 = 1 << 1;
const HAS_RANGE: u16 = 1 << 2;
const HAS_DEVICE_RANGE: u16 = 1 << 3;
const HAS_NODE: u16 = 1 << 4;
const HAS_LEVEL: u16 = 1 << 5;
const HAS_LAST_INODE: u16 = 1 << 6;
const HAS_GAP: u16 = 1 << 7;
const FLAG: u16 = 1 << 8;
const KNOWN_FLAGS: u16 = (1 << 9) - 1;

fn invalid(structure: &'static str, field: &'static str, reason: &str) -> FormatError {
    FormatError::InvalidField {
        structure,
        field,
        reason: reason.to_string(),
    }
}

impl EventRecord {
    /// A record of `kind` with nothing in it but its id and time.
    pub fn new(id: u64, kind: RecordKind, time_ns: u64) -> EventRecord {
        EventRecord {
            id,
            kind,
            first_time_ns: time_ns,
            last_time_ns: time_ns,
            errno: 0,
            subtypes: 0,
            count: 0,
            inode: None,
            generation: None,
            range: None,
            device_range: None,
            node: None,
            last_errno: 0,
            last_inode: None,
            errors_total: 0,
            gap: None,
            value: 0,
            flag: false,
            text: InlineText::EMPTY,
        }
    }

    /// The 256-byte on-disk form.
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut flags = 0;
        let mut set = |present: bool, bit: u16| {
            if present {
                flags |= bit;
            }
        };
        set(self.inode.is_some(), HAS_INODE);
        set(self.generation.is_some(), HAS_GENERATION);
        set(self.range.is_some(), HAS_RANGE);
        set(self.device_range.is_some(), HAS_DEVICE_RANGE);
        set(self.node.is_some(), HAS_NODE);
        set(
            self.node.is_some_and(|node| node.level.is_some()),
            HAS_LEVEL,
        );
        set(self.last_inode.is_some(), HAS_LAST_INODE);
        set(self.gap.is_some(), HAS_GAP);
        set(self.flag, FLAG);
        let (offset, length) = self.range.unwrap_or((0, 0));
        let (device_offset, device_length) = self.device_range.unwrap_or((0, 0));
        let (gap_first, gap_last) = self.gap.unwrap_or((0, 0));
        let node = self.node.unwrap_or(NodeRef {
            tree: InlineText::EMPTY,
            level: None,
            block: 0,
        });
        let mut encoder = Encoder::new(EVENT_RECORD.name, RECORD_SIZE);
        encoder.put_bytes(&[0; HEADER_SIZE]);
        encoder.put_u64(self.id);
        encoder.put_u64(self.first_time_ns);
        encoder.put_u64(self.last_time_ns);
        encoder.put_u16(self.kind.code());
        encoder.put_u16(flags);
        encoder.put_u32(self.errno as u32);
        encoder.put_u32(self.subtypes);
        encoder.put_bytes(&[node.level.unwrap_or(0), 0, 0, 0]);
        encoder.put_u64(self.count);
        encoder.put_u64(self.inode.unwrap_or(0));
        encoder.put_u64(self.generation.unwrap_or(0));
        encoder.put_u64(offset);
        encoder.put_u64(length);
        encoder.put_u64(device_offset);
        encoder.put_u64(device_length);
        encoder.put_u64(node.block);
        encoder.put_u32(self.last_errno as u32);
        encoder.put_u32(0);
        encoder.put_u64(self.last_inode.unwrap_or(0));
        encoder.put_u64(self.errors_total);
        encoder.put_u64(gap_first);
        encoder.put_u64(gap_last);
        encoder.put_u64(self.value);
        encoder.put_bytes(&node.tree.field());
        encoder.put_bytes(&self.text.field());
        encoder.put_u64(0);
        let mut bytes = [0; RECORD_SIZE];
        bytes.copy_from_slice(&encoder.into_bytes());
        // The length is fixed and the buffer exactly that long: sealing
        // cannot fail.
        let _ = seal(&EVENT_RECORD, &mut bytes);
        bytes
    }

    /// Decodes and validates a record slot.
    pub fn decode(bytes: &[u8]) -> Result<EventRecord, FormatError> {
        verify(&EVENT_RECORD, bytes)?;
        let structure = EVENT_RECORD.name;
        let mut decoder = Decoder::new(structure, bytes);
        decoder.seek(HEADER_SIZE)?;
        let id = decoder.u64()?;
        let first_time_ns = decoder.u64()?;
        let last_time_ns = decoder.u64()?;
        let kind_code = decoder.u16()?;
        let kind = RecordKind::from_code(kind_code)
            .ok_or_else(|| invalid(structure, "kind", &format!("unknown kind {kind_code}")))?;
        let flags = decoder.u16()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(invalid(
                structure,
                "flags",
                &format!("unknown bits {flags:#x}"),
            ));
        }
        let has = |bit: u16| flags & bit != 0;
        let errno = decoder.i32()?;
        let subtypes = decoder.u32()?;
        let [level, zero_a, zero_b, zero_c] = decoder.array::<4>()?;
        let count = decoder.u64()?;
        let inode = decoder.u64()?;
        let generation = decoder.u64()?;
        let offset = decoder.u64()?;
        let length = decoder.u64()?;
        let device_offset = decoder.u64()?;
        let device_length = decoder.u64()?;
        let block = decoder.u64()?;
        let last_errno = decoder.i32()?;
        let zero_d = decoder.u32()?;
        let last_inode = decoder.u64()?;
        let errors_total = decoder.u64()?;
        let gap_first = decoder.u64()?;
        let gap_last = decoder.u64()?;
        let value = decoder.u64()?;
        let tree = InlineText::from_field(structure, decoder.array::<TREE_CAPACITY>()?)?;
        let text = InlineText::from_field(structure, decoder.array::<TEXT_CAPACITY>()?)?;
        let zero_e = decoder.u64()?;
        if zero_a != 0 || zero_b != 0 || zero_c != 0 || zero_d != 0 || zero_e != 0 {
            return Err(invalid(structure, "reserved", "not zero"));
        }
        if id == 0 {
            return Err(invalid(structure, "id", "zero"));
        }
        if id >= MAX_EVENT_ID {
            return Err(invalid(structure, "id", "past the highest id"));
        }
        if first_time_ns > last_time_ns {
            return Err(invalid(structure, "times", "first after last"));
        }
        // Absent values are zero: anything else is a bug or damage.
        let absent_but_set = (!has(HAS_INODE) && inode != 0)
            || (!has(HAS_GENERATION) && generation != 0)
            || (!has(HAS_RANGE) && (offset | length) != 0)
            || (!has(HAS_DEVICE_RANGE) && (device_offset | device_length) != 0)
            || (!has(HAS_NODE) && (block != 0 || !tree.as_str().is_empty()))
            || (!has(HAS_LEVEL) && level != 0)
            || (!has(HAS_LAST_INODE) && last_inode != 0)
            || (!has(HAS_GAP) && (gap_first | gap_last) != 0);
        if absent_but_set {
            return Err(invalid(
                structure,
                "flags",
                "a value is set without its flag",
            ));
        }
        if has(HAS_LEVEL) && !has(HAS_NODE) {
            return Err(invalid(structure, "flags", "a level without a node"));
        }
        if has(HAS_GAP) && gap_first > gap_last {
            return Err(invalid(structure, "gap", "first after last"));
        }
        Ok(EventRecord {
            id,
            kind,
            first_time_ns,
            last_time_ns,
            errno,
            subtypes,
            count,
            inode: has(HAS_INODE).then_some(inode),
            generation: has(HAS_GENERATION).then_some(generation),
            range: has(HAS_RANGE).then_some((offset, length)),
            device_range: has(HAS_DEVICE_RANGE).then_some((device_offset, device_length)),
            node: has(HAS_NODE).then_some(NodeRef {
                tree,
                level: has(HAS_LEVEL).then_some(level),
                block,
            }),
            last_errno,
            last_inode: has(HAS_LAST_INODE).then_some(last_inode),
            errors_total,
            gap: has(HAS_GAP).then_some((gap_first, gap_last)),
            value,
            flag: has(FLAG),
            text,
        })
    }
}

/// A header copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// The filesystem the region belongs to.
    pub uuid: FsUuid,
    /// Record slots in the region.
    pub slots: u64,
    /// Bumped by every header write; the highest valid copy wins.
    pub sequence: u64,
    /// No id above this was ever handed out.
    pub reserved_through: u64,
}

impl LogHeader {
    /// The 512-byte on-disk form.
    pub fn encode(&self) -> Vec<u8> {
        let mut encoder = Encoder::new(EVENT_LOG_HEADER.name, LOG_HEADER_SIZE);
        encoder.put_bytes(&[0; HEADER_SIZE]);
        encoder.put_bytes(&self.uuid.0);
        encoder.put_u64(self.slots);
        encoder.put_u64(self.sequence);
        encoder.put_u64(self.reserved_through);
        let mut bytes = encoder.into_bytes();
        bytes.resize(LOG_HEADER_SIZE, 0);
        let _ = seal(&EVENT_LOG_HEADER, &mut bytes);
        bytes
    }

    /// Decodes a header copy and checks it belongs to `uuid` with `slots`.
    pub fn decode(bytes: &[u8], uuid: &FsUuid, slots: u64) -> Result<LogHeader, FormatError> {
        verify(&EVENT_LOG_HEADER, bytes)?;
        let structure = EVENT_LOG_HEADER.name;
        let mut decoder = Decoder::new(structure, bytes);
        decoder.seek(HEADER_SIZE)?;
        let header = LogHeader {
            uuid: FsUuid(decoder.array()?),
            slots: decoder.u64()?,
            sequence: decoder.u64()?,
            reserved_through: decoder.u64()?,
        };
        if header.uuid != *uuid {
            return Err(invalid(structure, "uuid", "another filesystem's"));
        }
        if header.reserved_through >= MAX_EVENT_ID {
            return Err(invalid(
                structure,
                "reserved_through",
                "past the highest id",
            ));
        }
        if header.slots != slots {
            return Err(invalid(
                structure,
                "slots",
                &format!("{} while the region holds {slots}", header.slots),
            ));
        }
        if bytes[decoder.position()..LOG_HEADER_SIZE]
            .iter()
            .any(|byte| *byte != 0)
        {
            return Err(invalid(structure, "reserved", "not zero"));
        }
        Ok(header)
    }
}

/// Where the region's parts are, for a region of a filesystem with
/// `block_size`-byte blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The region, in filesystem blocks.
    pub region: Region,
    /// The filesystem's block size.
    pub block_size: u32,
}

impl Geometry {
    /// Byte offset of the region on the device.
    pub fn start(&self) -> u64 {
        self.region.start * u64::from(self.block_size)
    }

    /// Bytes of the region.
    pub fn bytes(&self) -> u64 {
        self.region.blocks * u64::from(self.block_size)
    }

    /// Byte offset, within the region, of header copy `copy` (0 or 1).
    pub fn header_offset(&self, copy: u64) -> u64 {
        (copy % HEADER_BLOCKS) * u64::from(self.block_size)
    }

    /// Byte offset, within the region, of the first slot.
    pub fn slots_offset(&self) -> u64 {
        HEADER_BLOCKS * u64::from(self.block_size)
    }

    /// Record slots.
    pub fn slots(&self) -> u64 {
        self.region.blocks.saturating_sub(HEADER_BLOCKS) * u64::from(self.block_size)
            / RECORD_SIZE as u64
    }

    /// The slot id `id` takes in a log written from id 1 with no ids
    /// skipped (records go to consecutive slots).
    pub fn slot_of(&self, id: u64) -> u64 {
        (id.max(1) - 1) % self.slots().max(1)
    }

    /// Byte offset, within the region, of slot `slot`.
    pub fn slot_offset(&self, slot: u64) -> u64 {
        self.slots_offset() + slot * RECORD_SIZE as u64
    }
}

/// A slot that holds neither nothing nor a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotDefect {
    /// Fails validation (a torn write, or damage).
    Unreadable {
        /// The slot.
        slot: u64,
        /// Why.
        error: FormatError,
    },
}

/// What a region holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionScan {
    /// Each header copy, decoded or why not.
    pub headers: [Result<LogHeader, FormatError>; 2],
    /// The valid records, by id. Ids need not be contiguous: a mount
    /// after a crash skips ahead.
    pub records: Vec<EventRecord>,
    /// The slot of the newest record, if any.
    pub newest_slot: Option<u64>,
    /// Slots that are neither empty nor a record in its place.
    pub defects: Vec<SlotDefect>,
    /// Slots repeating a record another slot holds, left out of
    /// `records` (a write retried after a failed flush: earlier builds
    /// wrote it to a new slot each time).
    pub repeated: u64,
}

impl RegionScan {
    /// The header in force: the valid copy with the highest sequence.
    pub fn header(&self) -> Option<LogHeader> {
        self.headers
            .iter()
            .filter_map(|header| header.as_ref().ok().copied())
            .max_by_key(|header| header.sequence)
    }

    /// The newest record.
    pub fn newest(&self) -> Option<&EventRecord> {
        self.records.last()
    }

    /// For a filesystem whose superblock says it stopped cleanly: the
    /// first id of the newest records the region no longer holds, if any.
    /// A clean unmount writes an UNMOUNT record last (just after the
    /// superblock); a freeze writes the superblock clean, then a FREEZE
    /// record, and the log goes on being written until the thaw. So the
    /// newest record is an UNMOUNT, or is at or after a FREEZE no THAW or
    /// MOUNT followed, or at or after a SETTINGS record of a read-only
    /// remount (which leaves the image clean too) no read-write one or
    /// MOUNT followed; otherwise records are missing (damaged, or a crash
    /// came between the two writes). A region that never held a record is
    /// not missing any.
    pub fn missing_after_clean_stop(&self) -> Option<u64> {
        let Some(newest) = self.newest() else {
            return self
                .defects
                .iter()
                .any(|defect| matches!(defect, SlotDefect::Unreadable { .. }))
                .then_some(1);
        };
        // The newest record of those `marks` picks, if it is one `stops`
        // picks.
        let newest_of = |marks: &dyn Fn(&EventRecord) -> bool,
                         stops: &dyn Fn(&EventRecord) -> bool| {
            self.records
                .iter()
                .rev()
                .find(|record| marks(record))
                .is_some_and(stops)
        };
        let ends_mount =
            |record: &EventRecord| matches!(record.kind, RecordKind::Unmount | RecordKind::Mount);
        let frozen = newest_of(
            &|record| {
                ends_mount(record) || matches!(record.kind, RecordKind::Freeze | RecordKind::Thaw)
            },
            &|record| record.kind == RecordKind::Freeze,
        );
        // A read-only remount leaves the image clean too, and the log goes
        // on after it, until the mount is read-write again.
        let read_only = newest_of(
            &|record| {
                ends_mount(record)
                    || (record.kind == RecordKind::Settings && record.value != SETTINGS_OTHER)
            },
            &|record| record.kind == RecordKind::Settings && record.value == SETTINGS_READ_ONLY,
        );
        let stopped = frozen || read_only || newest.kind == RecordKind::Unmount;
        (!stopped).then_some(newest.id + 1)
    }
}

/// Reads a region image (`bytes`, the whole region) of the filesystem
/// `uuid`.
pub fn scan_region(bytes: &[u8], geometry: &Geometry, uuid: &FsUuid) -> RegionScan {
    let slots = geometry.slots();
    let header_at = |copy: u64| -> Result<LogHeader, FormatError> {
        let start = geometry.header_offset(copy) as usize;
        let slice = bytes
            .get(start..start + LOG_HEADER_SIZE)
            .ok_or(FormatError::Truncated {
                structure: EVENT_LOG_HEADER.name,
                offset: start,
                needed: LOG_HEADER_SIZE,
                available: bytes.len().saturating_sub(start),
            })?;
        LogHeader::decode(slice, uuid, slots)
    };
    let headers = [header_at(0), header_at(1)];
    let mut records = Vec::new();
    let mut defects = Vec::new();
    let mut newest: Option<(u64, u64)> = None;
    for slot in 0..slots {
        let start = geometry.slot_offset(slot) as usize;
        let Some(slice) = bytes.get(start..start + RECORD_SIZE) else {
            break;
        };
        if slice.iter().all(|byte| *byte == 0) {
            continue;
        }
        match EventRecord::decode(slice) {
            Ok(record) => {
                if newest.is_none_or(|(id, _)| record.id > id) {
                    newest = Some((record.id, slot));
                }
                records.push(record);
            }
            Err(error) => defects.push(SlotDefect::Unreadable { slot, error }),
        }
    }
    records.sort_by_key(|record| record.id);
    let found = records.len();
    records.dedup();
    RegionScan {
        headers,
        repeated: (found - records.len()) as u64,
        records,
        newest_slot: newest.map(|(_, slot)| slot),
        defects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventRecord {
        let mut record = EventRecord::new(42, RecordKind::Error, 1_700_000_000_000_000_000);
        record.last_time_ns += 5;
        record.errno = libc::EIO;
        record.subtypes = 0b10010;
        record.count = 3;
        record.inode = Some(17);
        record.generation = Some(4);
        record.range = Some((8192, 4096));
        record.device_range = Some((1 << 20, 4096));
        record.node = Some(NodeRef {
            tree: InlineText::new("extents"),
            level: Some(1),
            block: 300,
        });
        record.last_errno = libc::EUCLEAN;
        record.last_inode = Some(18);
        record.errors_total = 99;
        record.text = InlineText::new("read");
        record
    }

    /// A scan of `records` (kind, and a SETTINGS record's value), ids
    /// from 1.
    fn scan_of(records: &[(RecordKind, u64)]) -> RegionScan {
        let records = records
            .iter()
            .enumerate()
            .map(|(index, &(kind, value))| {
                let mut record = EventRecord::new(index as u64 + 1, kind, 5);
                record.value = value;
                record
            })
            .collect();
        let unread = || FormatError::Truncated {
            structure: "event log header",
            offset: 0,
            needed: 1,
            available: 0,
        };
        RegionScan {
            headers: [Err(unread()), Err(unread())],
            records,
            newest_slot: None,
            defects: Vec::new(),
            repeated: 0,
        }
    }

    /// A read-only remount leaves the image clean, and the log may go on
    /// after its SETTINGS record, as after a FREEZE: nothing is missing
    /// (review 52: a crash after `remount,ro` read as lost events). Made
    /// read-write again, only an UNMOUNT ends it cleanly.
    #[test]
    fn a_read_only_remount_is_a_clean_stop_until_the_mount_is_read_write_again() {
        use RecordKind::{Error, Freeze, Mount, Settings, Thaw, Unmount};
        let clean = [
            vec![(Mount, 0), (Settings, SETTINGS_READ_ONLY)],
            vec![(Mount, 0), (Settings, SETTINGS_READ_ONLY), (Error, 0)],
            vec![
                (Mount, 0),
                (Settings, SETTINGS_READ_ONLY),
                (Settings, SETTINGS_OTHER),
            ],
            vec![(Mount, 0), (Settings, SETTINGS_READ_WRITE), (Unmount, 0)],
            // Made read-write while frozen: the freeze keeps it clean.
            vec![
                (Mount, 0),
                (Freeze, 0),
                (Settings, SETTINGS_READ_ONLY),
                (Settings, SETTINGS_READ_WRITE),
            ],
            vec![(Mount, 0), (Freeze, 0), (Error, 0)],
        ];
        for records in clean {
            assert_eq!(
                scan_of(&records).missing_after_clean_stop(),
                None,
                "{records:?}"
            );
        }
        let missing = [
            vec![(Mount, 0), (Settings, SETTINGS_OTHER)],
            vec![(Mount, 0), (Freeze, 0), (Thaw, 0)],
            vec![(Mount, 0), (Unmount, 0), (Mount, 0)],
            vec![
                (Mount, 0),
                (Settings, SETTINGS_READ_ONLY),
                (Settings, SETTINGS_READ_WRITE),
            ],
        ];
        for records in missing {
            let newest = records.len() as u64;
            assert_eq!(
                scan_of(&records).missing_after_clean_stop(),
                Some(newest + 1),
                "{records:?}"
            );
        }
    }

    #[test]
    fn records_round_trip_with_and_without_values() {
        let full = sample();
        assert_eq!(EventRecord::decode(&full.encode()).unwrap(), full);
        let mut bare = EventRecord::new(7, RecordKind::Lost, 5);
        bare.gap = Some((3, 6));
        bare.flag = true;
        assert_eq!(EventRecord::decode(&bare.encode()).unwrap(), bare);
    }

    /// A forged id near u64::MAX once overflowed the mount's id
    /// arithmetic (a panic in a debug build, a wrap in a release one).
    #[test]
    fn ids_past_the_highest_are_refused_in_records_and_headers() {
        let highest = EventRecord::new(MAX_EVENT_ID - 1, RecordKind::Error, 5);
        assert!(EventRecord::decode(&highest.encode()).is_ok());
        for id in [MAX_EVENT_ID, u64::MAX] {
            let forged = EventRecord::new(id, RecordKind::Error, 5);
            let refused = EventRecord::decode(&forged.encode()).unwrap_err();
            assert!(refused.to_string().contains("id"), "{refused}");
        }
        let uuid = FsUuid([7; 16]);
        let header = |reserved_through| LogHeader {
            uuid,
            slots: 64,
            sequence: 1,
            reserved_through,
        };
        assert!(LogHeader::decode(&header(MAX_EVENT_ID - 1).encode(), &uuid, 64).is_ok());
        let refused = LogHeader::decode(&header(u64::MAX).encode(), &uuid, 64).unwrap_err();
        assert!(
            refused.to_string().contains("reserved_through"),
            "{refused}"
        );
    }

    #[test]
    fn every_byte_flip_of_a_record_is_refused() {
        let bytes = sample().encode();
        for index in 0..RECORD_SIZE {
            let mut corrupted = bytes;
            corrupted[index] ^= 0x01;
            assert!(
                EventRecord::decode(&corrupted).is_err(),
                "flip at byte {index} went unnoticed"
            );
        }
    }

    #[test]
    fn text_is_cut_at_a_character_boundary_and_says_it_was_cut() {
        let text: InlineText<8> = InlineText::new("aé€€");
        assert_eq!(text.as_str(), "aé...");
        let whole: InlineText<8> = InlineText::new("aé€");
        assert_eq!(whole.as_str(), "aé€", "a text that fits is kept whole");
    }

    #[test]
    fn a_scan_keeps_the_newest_lap_and_reports_defects() {
        let geometry = Geometry {
            region: Region {
                start: 10,
                blocks: 3,
            },
            block_size: 1024,
        };
        assert_eq!(geometry.slots(), 4);
        let uuid = FsUuid([9; 16]);
        let mut image = vec![0u8; geometry.bytes() as usize];
        let header = LogHeader {
            uuid,
            slots: 4,
            sequence: 3,
            reserved_through: 64,
        };
        image[..LOG_HEADER_SIZE].copy_from_slice(&header.encode());
        // Ids 1..=6 written in turn to 4 slots: 5 and 6 overwrote 1 and 2.
        for id in 1..=6 {
            let at = geometry.slot_offset(geometry.slot_of(id)) as usize;
            image[at..at + RECORD_SIZE]
                .copy_from_slice(&EventRecord::new(id, RecordKind::Mount, id).encode());
        }
        let scan = scan_region(&image, &geometry, &uuid);
        assert_eq!(scan.header(), Some(header));
        assert!(scan.headers[1].is_err());
        let ids: Vec<u64> = scan.records.iter().map(|record| record.id).collect();
        assert_eq!(ids, [3, 4, 5, 6]);
        assert!(scan.defects.is_empty());
        assert_eq!(scan.newest_slot, Some(geometry.slot_of(6)));

        // A torn slot reads as a defect, and its record is not there.
        let at = geometry.slot_offset(2) as usize;
        image[at + 40] ^= 0xff;
        let scan = scan_region(&image, &geometry, &uuid);
        assert_eq!(scan.defects.len(), 1, "{:?}", scan.defects);
        assert_eq!(scan.records.len(), 3);
        let other = scan_region(&image, &geometry, &FsUuid([1; 16]));
        assert!(other.header().is_none(), "another filesystem's header");

        // A record in two slots (a retried write) is read once, counted.
        let record = EventRecord::new(4, RecordKind::Mount, 4).encode();
        let at = geometry.slot_offset(2) as usize;
        image[at..at + RECORD_SIZE].copy_from_slice(&record);
        let scan = scan_region(&image, &geometry, &uuid);
        let ids: Vec<u64> = scan.records.iter().map(|record| record.id).collect();
        assert_eq!(ids, [4, 5, 6]);
        assert_eq!(scan.repeated, 1);
    }
}
