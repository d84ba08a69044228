//! The persistent error record: what went wrong on this filesystem, kept across mounts.
//!
//! Like ext4's superblock error fields it keeps the first and the last error (time, errno,
//! inode, block, and a short origin tag naming the code that saw it) and a total; like
//! bcachefs's superblock error counters it keeps a count and last time per kind of error.
//! It is its own checksummed structure (512 bytes) so it can be decoded, and later written,
//! on its own; the superblock embeds it.
//!
//! ```text
//! offset  size  field
//!      0    24  header (magic "VGFS_ERR", version 1, length 512)
//!     24     8  total errors recorded
//!     32    64  first error event
//!     96    64  last error event
//!    160   112  per kind (writeback, read, metadata, checksum, journal, media, other):
//!               count u64, last time u64
//!    272   240  reserved, zero
//!
//! event: flags u8 (1 present, 2 inode set, 4 block set), kind u8, reserved u16,
//!        errno i32, time u64, inode u64, block u64, origin [32] (printable ASCII, NUL padded)
//! ```
//!
//! Invariants checked on decode: an absent event is all zeros; a present event has a known
//! kind, a positive errno and a well-formed origin; first and last are present exactly when
//! the total is non-zero.

use super::codec::{Decoder, Encoder};
use super::event_log::EventRecord;
use super::header::{seal, verify, Magic, StructureType, HEADER_SIZE};
use super::FormatError;

/// Encoded size of the error record.
pub const ERROR_RECORD_SIZE: usize = 512;

/// The error record's structure type.
pub const ERROR_RECORD: StructureType = StructureType {
    name: "error record",
    magic: Magic(*b"VGFS_ERR"),
    oldest_version: 1,
    current_version: 1,
    fixed_length: Some(ERROR_RECORD_SIZE as u32),
};

const EVENT_SIZE: usize = 64;
const FIRST_EVENT_OFFSET: usize = 32;
const LAST_EVENT_OFFSET: usize = FIRST_EVENT_OFFSET + EVENT_SIZE;
const COUNTERS_OFFSET: usize = LAST_EVENT_OFFSET + EVENT_SIZE;

const EVENT_PRESENT: u8 = 1;
const EVENT_HAS_INODE: u8 = 2;
const EVENT_HAS_BLOCK: u8 = 4;

/// Bytes an origin tag may take.
pub const ORIGIN_CAPACITY: usize = 32;

/// What sort of error an event was; each kind has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Writing back file data failed.
    Writeback,
    /// Reading file data failed.
    Read,
    /// Reading or writing metadata failed.
    Metadata,
    /// Data or metadata failed checksum verification.
    Checksum,
    /// Writing or replaying the journal failed.
    Journal,
    /// The device reported a media failure.
    Media,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Every kind, in on-disk counter order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Writeback,
        ErrorKind::Read,
        ErrorKind::Metadata,
        ErrorKind::Checksum,
        ErrorKind::Journal,
        ErrorKind::Media,
        ErrorKind::Other,
    ];

    fn code(self) -> u8 {
        match self {
            ErrorKind::Writeback => 0,
            ErrorKind::Read => 1,
            ErrorKind::Metadata => 2,
            ErrorKind::Checksum => 3,
            ErrorKind::Journal => 4,
            ErrorKind::Media => 5,
            ErrorKind::Other => 6,
        }
    }

    fn from_code(code: u8) -> Option<ErrorKind> {
        ErrorKind::ALL.get(usize::from(code)).copied()
    }

    /// Lowercase name for status output.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Writeback => "writeback",
            ErrorKind::Read => "read",
            ErrorKind::Metadata => "metadata",
            ErrorKind::Checksum => "checksum",
            ErrorKind::Journal => "journal",
            ErrorKind::Media => "media",
            ErrorKind::Other => "other",
        }
    }
}

/// A short tag naming the code that saw an error (like ext4's `s_first_error_func`):
/// printable ASCII, at most [`ORIGIN_CAPACITY`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ErrorOrigin(String);

impl ErrorOrigin {
    /// A tag from `text`: characters that are not printable ASCII become `?`, and a text
    /// longer than [`ORIGIN_CAPACITY`] bytes is cut to fit, ending in `...` so that a reader
    /// sees it was cut. Never fails, because error paths must not.
    pub fn new(text: &str) -> ErrorOrigin {
        const CUT_MARK: &str = "...";
        let mut tag: String = text
            .chars()
            .map(|character| {
                if character.is_ascii_graphic() || character == ' ' {
                    character
                } else {
                    '?'
                }
            })
            .take(ORIGIN_CAPACITY + 1)
            .collect();
        if tag.len() > ORIGIN_CAPACITY {
            tag.truncate(ORIGIN_CAPACITY - CUT_MARK.len());
            tag.push_str(CUT_MARK);
        }
        ErrorOrigin(tag)
    }

    /// The tag text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One recorded error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorEvent {
    /// When it happened, in seconds since the Unix epoch.
    pub time: u64,
    /// The errno reported for it (positive).
    pub errno: i32,
    /// The inode concerned, if any.
    pub inode: Option<u64>,
    /// The filesystem block concerned, if any.
    pub block: Option<u64>,
    /// What sort of error it was.
    pub kind: ErrorKind,
    /// Which code saw it.
    pub origin: ErrorOrigin,
}

/// How many errors of one kind were recorded, and when the last one was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KindCounter {
    /// Errors of this kind.
    pub count: u64,
    /// Time of the most recent one (seconds since the epoch), 0 if none.
    pub last_time: u64,
}

/// The persistent error history of a filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ErrorRecord {
    /// Every error ever recorded (saturating).
    pub total: u64,
    /// The first error recorded.
    pub first: Option<ErrorEvent>,
    /// The most recent error recorded.
    pub last: Option<ErrorEvent>,
    /// Counters per kind, in [`ErrorKind::ALL`] order.
    pub per_kind: [KindCounter; ErrorKind::ALL.len()],
}

impl ErrorRecord {
    /// Adds an error: it becomes the last one (and the first, if there was none), and the
    /// totals grow. Counters saturate rather than wrap.
    pub fn record(&mut self, event: ErrorEvent) {
        self.total = self.total.saturating_add(1);
        let counter = &mut self.per_kind[usize::from(event.kind.code())];
        counter.count = counter.count.saturating_add(1);
        counter.last_time = event.time;
        if self.first.is_none() {
            self.first = Some(event.clone());
        }
        self.last = Some(event);
    }

    /// The counter for `kind`.
    pub fn counter(&self, kind: ErrorKind) -> KindCounter {
        self.per_kind[usize::from(kind.code())]
    }

    /// Brings this record (the superblock's, saved every writeback interval)
    /// up to the event log on the device, which counts `errors_total` errors in
    /// `error_records` (oldest first) and before: a crash can leave the log
    /// ahead of the record, and the record is what status and the metrics
    /// count. The errors the record missed are the newest ones; those the log
    /// no longer holds (a loss) count as `Other`.
    pub fn catch_up_with_log(&mut self, errors_total: u64, error_records: &[EventRecord]) {
        let mut missed = errors_total.saturating_sub(self.total);
        if missed == 0 {
            return;
        }
        self.total = errors_total;
        let mut newest: Option<ErrorEvent> = None;
        let mut oldest: Option<ErrorEvent> = None;
        for event in error_records.iter().rev() {
            if missed == 0 {
                break;
            }
            let taken = event.count.min(missed);
            missed -= taken;
            let kind = kind_of(event.subtypes);
            let time = event.last_time_ns / 1_000_000_000;
            let counter = self.counter_mut(kind);
            counter.count = counter.count.saturating_add(taken);
            counter.last_time = counter.last_time.max(time);
            let seen = ErrorEvent {
                time,
                errno: event.errno,
                inode: event.inode,
                block: None,
                kind,
                origin: ErrorOrigin::new("event log"),
            };
            if newest.is_none() {
                newest = Some(seen.clone());
            }
            oldest = Some(seen);
        }
        if self.first.is_none() {
            self.first = oldest;
        }
        let other = self.counter_mut(ErrorKind::Other);
        other.count = other.count.saturating_add(missed);
        if newest.is_none() && self.last.is_none() {
            // Only a count survives (the log lost the records): a record
            // with errors names a first and a last one all the same.
            let lost = ErrorEvent {
                time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs()),
                errno: libc::EIO,
                inode: None,
                block: None,
                kind: ErrorKind::Other,
                origin: ErrorOrigin::new("event log: count only"),
            };
            self.first.get_or_insert_with(|| lost.clone());
            newest = Some(lost);
        }
        if let Some(newest) = newest {
            if self
                .last
                .as_ref()
                .is_none_or(|last| last.time <= newest.time)
            {
                self.last = Some(newest);
            }
        }
    }

    /// The counter for `kind`, to change.
    pub fn counter_mut(&mut self, kind: ErrorKind) -> &mut KindCounter {
        &mut self.per_kind[usize::from(kind.code())]
    }

    /// Whether any error was ever recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The 512-byte on-disk form.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        let mut encoder = Encoder::new(ERROR_RECORD.name, ERROR_RECORD_SIZE);
        encoder.pad_to(HEADER_SIZE)?;
        encoder.put_u64(self.total);
        encode_event(&mut encoder, self.first.as_ref());
        encode_event(&mut encoder, self.last.as_ref());
        for counter in &self.per_kind {
            encoder.put_u64(counter.count);
            encoder.put_u64(counter.last_time);
        }
        encoder.pad_to(ERROR_RECORD_SIZE)?;
        let mut bytes = encoder.into_bytes();
        seal(&ERROR_RECORD, &mut bytes)?;
        Ok(bytes)
    }

    /// Decodes and validates the on-disk form.
    pub fn decode(bytes: &[u8]) -> Result<ErrorRecord, FormatError> {
        verify(&ERROR_RECORD, bytes)?;
        let mut decoder = Decoder::new(ERROR_RECORD.name, bytes);
        decoder.seek(HEADER_SIZE)?;
        let total = decoder.u64()?;
        decoder.seek(FIRST_EVENT_OFFSET)?;
        let first = decode_event(&mut decoder, "first error")?;
        decoder.seek(LAST_EVENT_OFFSET)?;
        let last = decode_event(&mut decoder, "last error")?;
        decoder.seek(COUNTERS_OFFSET)?;
        let mut per_kind = [KindCounter::default(); ErrorKind::ALL.len()];
        for counter in &mut per_kind {
            counter.count = decoder.u64()?;
            counter.last_time = decoder.u64()?;
        }
        let record = ErrorRecord {
            total,
            first,
            last,
            per_kind,
        };
        record.validate()?;
        Ok(record)
    }

    fn validate(&self) -> Result<(), FormatError> {
        let invalid = |field: &'static str, reason: &str| FormatError::InvalidField {
            structure: ERROR_RECORD.name,
            field,
            reason: reason.to_owned(),
        };
        let has_errors = self.total > 0;
        if self.first.is_some() != has_errors || self.last.is_some() != has_errors {
            return Err(invalid(
                "total",
                "first and last errors must be present exactly when the total is non-zero",
            ));
        }
        for (field, event) in [("first error", &self.first), ("last error", &self.last)] {
            if let Some(event) = event {
                if event.errno <= 0 {
                    return Err(invalid(field, "errno must be positive"));
                }
                if event.origin.0.len() > ORIGIN_CAPACITY
                    || !event
                        .origin
                        .0
                        .bytes()
                        .all(|byte| byte == b' ' || byte.is_ascii_graphic())
                {
                    return Err(invalid(field, "origin is not short printable ASCII"));
                }
            }
        }
        Ok(())
    }
}

fn encode_event(encoder: &mut Encoder, event: Option<&ErrorEvent>) {
    let Some(event) = event else {
        encoder.put_bytes(&[0; EVENT_SIZE]);
        return;
    };
    let mut flags = EVENT_PRESENT;
    if event.inode.is_some() {
        flags |= EVENT_HAS_INODE;
    }
    if event.block.is_some() {
        flags |= EVENT_HAS_BLOCK;
    }
    encoder.put_u8(flags);
    encoder.put_u8(event.kind.code());
    encoder.put_u16(0);
    encoder.put_i32(event.errno);
    encoder.put_u64(event.time);
    encoder.put_u64(event.inode.unwrap_or(0));
    encoder.put_u64(event.block.unwrap_or(0));
    let mut origin = [0; ORIGIN_CAPACITY];
    origin[..event.origin.0.len()].copy_from_slice(event.origin.0.as_bytes());
    encoder.put_bytes(&origin);
}

fn decode_event(
    decoder: &mut Decoder<'_>,
    field: &'static str,
) -> Result<Option<ErrorEvent>, FormatError> {
    let structure = decoder.structure();
    let invalid = |reason: String| FormatError::InvalidField {
        structure,
        field,
        reason,
    };
    let raw = decoder.bytes(EVENT_SIZE)?;
    let mut event = Decoder::new(structure, raw);
    let flags = event.u8()?;
    if flags & EVENT_PRESENT == 0 {
        return if raw.iter().all(|&byte| byte == 0) {
            Ok(None)
        } else {
            Err(invalid("absent event is not all zeros".to_owned()))
        };
    }
    if flags & !(EVENT_PRESENT | EVENT_HAS_INODE | EVENT_HAS_BLOCK) != 0 {
        return Err(invalid(format!("unknown flags {flags:#04x}")));
    }
    let code = event.u8()?;
    let kind = ErrorKind::from_code(code).ok_or_else(|| invalid(format!("unknown kind {code}")))?;
    if event.u16()? != 0 {
        return Err(invalid("reserved bytes not zero".to_owned()));
    }
    let errno = event.i32()?;
    let time = event.u64()?;
    let inode = event.u64()?;
    let block = event.u64()?;
    let origin_bytes: [u8; ORIGIN_CAPACITY] = event.array()?;
    let origin_length = origin_bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(ORIGIN_CAPACITY);
    let (text, padding) = origin_bytes.split_at(origin_length);
    if padding.iter().any(|&byte| byte != 0)
        || !text
            .iter()
            .all(|&byte| byte == b' ' || byte.is_ascii_graphic())
    {
        return Err(invalid(
            "origin is not printable ASCII padded with NUL".to_owned(),
        ));
    }
    let origin = ErrorOrigin(text.iter().map(|&byte| char::from(byte)).collect());
    let present = |flag: u8, value: u64| (flags & flag != 0).then_some(value);
    Ok(Some(ErrorEvent {
        time,
        errno,
        inode: present(EVENT_HAS_INODE, inode),
        block: present(EVENT_HAS_BLOCK, block),
        kind,
        origin,
    }))
}

/// The kind an error event of `subtypes` counts under in the error record
/// (the most telling subtype first).
fn kind_of(subtypes: u32) -> ErrorKind {
    [
        (fserror::Subtypes::CHECKSUM, ErrorKind::Checksum),
        (fserror::Subtypes::MEDIA, ErrorKind::Media),
        (fserror::Subtypes::JOURNAL, ErrorKind::Journal),
        (fserror::Subtypes::METADATA, ErrorKind::Metadata),
        (fserror::Subtypes::WRITEBACK, ErrorKind::Writeback),
        (fserror::Subtypes::READ, ErrorKind::Read),
    ]
    .into_iter()
    .find_map(|(subtype, kind)| (subtypes & subtype.bits() != 0).then_some(kind))
    .unwrap_or(ErrorKind::Other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::event_log::RecordKind;
    use fserror::Subtypes;

    /// One error of `subtypes` at second `at`, as the log holds it.
    fn logged(id: u64, subtypes: Subtypes, count: u64, at: u64) -> EventRecord {
        let mut record = EventRecord::new(id, RecordKind::Error, at * 1_000_000_000);
        record.subtypes = subtypes.bits();
        record.count = count;
        record.errno = libc::EIO;
        record
    }

    /// After a crash the log on the device can count errors the saved
    /// record does not: the record catches up, kind by kind, the newest
    /// errors being the ones it missed; what the log lost counts as Other.
    #[test]
    fn the_error_record_catches_up_with_the_event_log() {
        let mut record = ErrorRecord::default();
        record.record(ErrorEvent {
            time: 10,
            errno: libc::EIO,
            inode: Some(5),
            block: None,
            kind: ErrorKind::Writeback,
            origin: ErrorOrigin::new("writeback"),
        });
        let log = [
            logged(3, Subtypes::WRITEBACK, 1, 10),
            logged(4, Subtypes::WRITEBACK | Subtypes::DATA_LOST, 2, 20),
            logged(5, Subtypes::READ, 1, 30),
        ];
        record.catch_up_with_log(4, &log);
        assert_eq!(record.total, 4);
        assert_eq!(record.counter(ErrorKind::Writeback).count, 3);
        assert_eq!(record.counter(ErrorKind::Read).count, 1);
        assert_eq!(record.last.as_ref().map(|last| last.time), Some(30));
        // Nothing more to catch up: a second pass changes nothing.
        let caught_up = record.clone();
        record.catch_up_with_log(4, &log);
        assert_eq!(record, caught_up);
        // Errors the log counts but no longer holds: Other.
        record.catch_up_with_log(6, &[]);
        assert_eq!(record.total, 6);
        assert_eq!(record.counter(ErrorKind::Other).count, 2);
        // Only a count left in the log: the record stays valid, with a
        // first and a last error (it failed validation, and the superblock
        // could no longer be written).
        let mut counted = ErrorRecord::default();
        counted.catch_up_with_log(3, &[]);
        assert_eq!(counted.total, 3);
        assert!(counted.first.is_some() && counted.last.is_some());
        assert_eq!(counted.counter(ErrorKind::Other).count, 3);
        assert!(counted.validate().is_ok());
        // A record that saw none: the first is the oldest caught up.
        let mut fresh = ErrorRecord::default();
        fresh.catch_up_with_log(2, &log[1..]);
        assert_eq!(fresh.first.as_ref().map(|first| first.time), Some(20));
        assert_eq!(fresh.last.as_ref().map(|last| last.time), Some(30));
    }

    fn event(time: u64, kind: ErrorKind) -> ErrorEvent {
        ErrorEvent {
            time,
            errno: libc::EIO,
            inode: Some(12),
            block: None,
            kind,
            origin: ErrorOrigin::new("writeback_extent"),
        }
    }

    #[test]
    fn recording_keeps_first_last_and_per_kind_counts() {
        let mut record = ErrorRecord::default();
        assert!(record.is_empty());
        record.record(event(10, ErrorKind::Writeback));
        record.record(event(20, ErrorKind::Media));
        record.record(event(30, ErrorKind::Writeback));
        assert_eq!(record.total, 3);
        assert_eq!(record.first.as_ref().unwrap().time, 10);
        assert_eq!(record.last.as_ref().unwrap().time, 30);
        assert_eq!(
            record.counter(ErrorKind::Writeback),
            KindCounter {
                count: 2,
                last_time: 30
            }
        );
        assert_eq!(record.counter(ErrorKind::Media).count, 1);
        assert_eq!(record.counter(ErrorKind::Checksum).count, 0);
    }

    #[test]
    fn encoded_record_decodes_to_the_same_record() {
        let mut record = ErrorRecord::default();
        assert_eq!(
            ErrorRecord::decode(&record.encode().unwrap()).unwrap(),
            record
        );
        record.record(event(1, ErrorKind::Journal));
        record.record(ErrorEvent {
            block: Some(u64::MAX),
            inode: None,
            ..event(2, ErrorKind::Checksum)
        });
        let bytes = record.encode().unwrap();
        assert_eq!(bytes.len(), ERROR_RECORD_SIZE);
        assert_eq!(ErrorRecord::decode(&bytes).unwrap(), record);
    }

    #[test]
    fn origin_is_cut_and_cleaned_instead_of_failing() {
        let origin = ErrorOrigin::new("a\nvery_long_function_name_that_goes_on_and_on");
        assert_eq!(origin.as_str().len(), ORIGIN_CAPACITY);
        assert!(origin.as_str().starts_with("a?very"));
        assert!(
            origin.as_str().ends_with("..."),
            "{origin:?} does not say it was cut"
        );
        let exact = "x".repeat(ORIGIN_CAPACITY);
        assert_eq!(
            ErrorOrigin::new(&exact).as_str(),
            exact,
            "a tag that fits is kept whole"
        );
        assert_eq!(ErrorOrigin::new("é").as_str(), "?");
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let mut record = ErrorRecord::default();
        record.record(event(5, ErrorKind::Read));
        let bytes = record.encode().unwrap();
        for index in 0..bytes.len() {
            let mut corrupted = bytes.clone();
            corrupted[index] ^= 0x10;
            assert!(
                ErrorRecord::decode(&corrupted).is_err(),
                "flip at byte {index} went unnoticed"
            );
        }
    }

    #[test]
    fn inconsistent_record_is_refused_when_encoding() {
        let record = ErrorRecord {
            total: 1,
            ..ErrorRecord::default()
        };
        assert!(matches!(
            record.encode(),
            Err(FormatError::InvalidField { field: "total", .. })
        ));
        let mut record = ErrorRecord::default();
        record.record(ErrorEvent {
            errno: 0,
            ..event(1, ErrorKind::Other)
        });
        assert!(record.encode().is_err());
    }

    #[test]
    fn truncated_record_is_a_typed_error() {
        let bytes = ErrorRecord::default().encode().unwrap();
        for length in [0, 1, 23, 24, 100, ERROR_RECORD_SIZE - 1] {
            assert!(ErrorRecord::decode(&bytes[..length]).is_err());
        }
    }
}
