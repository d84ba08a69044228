//! One event record in its 256-byte slot: what a record says, and its
//! encoding (the byte table is in the module comment of `event_log`).
//!
//! Invariants: decoding trusts nothing it has not checked. A record is
//! refused unless its structure header and checksum verify, its kind and
//! flags are known, its id is neither zero nor at [`MAX_EVENT_ID`] or past
//! it, every value whose flag is clear is zero, the reserved fields are
//! zero and its texts are UTF-8. So a slot a crash tore, or damage, is
//! refused as a whole and never read as an event.

use super::{invalid, EVENT_RECORD, MAX_EVENT_ID, RECORD_SIZE};
use crate::format::codec::{Decoder, Encoder};
use crate::format::header::{seal, verify, HEADER_SIZE};
use crate::format::FormatError;

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

    #[test]
    fn records_round_trip_with_and_without_values() {
        let full = sample();
        assert_eq!(EventRecord::decode(&full.encode()).unwrap(), full);
        let mut bare = EventRecord::new(7, RecordKind::Lost, 5);
        bare.gap = Some((3, 6));
        bare.flag = true;
        assert_eq!(EventRecord::decode(&bare.encode()).unwrap(), bare);
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
}
