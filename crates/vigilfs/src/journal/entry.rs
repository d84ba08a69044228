//! The on-disk journal entry: the common structure header, the entry
//! header, then records.
//!
//! An entry starts on a block boundary of the journal region and occupies
//! whole blocks. Layout (little-endian):
//!
//! ```text
//! offset  size  field
//!      0    24  structure header (format::header): magic "VGFSJENT",
//!               version 1, length = 128 + payload bytes, crc32c of those
//!     24    16  filesystem UUID: entries of an earlier filesystem on the
//!               same device never replay into this one
//!     40     8  seq
//!     48     8  last_seq: the oldest entry replay still needs
//!     56     8  prev_seq: the entry written just before this one (seq - 1
//!               except right after a recovery that cut off a torn tail)
//!     64     8  durable_seq: every entry up to here was flushed to stable
//!               storage before this one was written
//!     72     4  entry length in blocks
//!     76    52  reserved, zero
//!    128     …  payload: records
//! ```
//!
//! A record is a u32 length followed by that many bytes, padded to a
//! multiple of 8. A zero length is padding (the unused tail of a
//! reservation) and skips 8 bytes. The journal does not interpret records:
//! the layers above put their keys in them.
//!
//! Decoding checks everything before trusting anything and returns a typed
//! error; it never panics or indexes out of bounds.

use thiserror::Error;

use crate::format::{self, Decoder, Encoder, FormatError, Magic, StructureType, HEADER_SIZE};

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 128;
/// Sequence numbers stay below this (2^62), so seq arithmetic never
/// overflows however an image was damaged.
pub const MAX_SEQ: u64 = 1 << 62;

/// Records are padded to this alignment.
pub const RECORD_ALIGN: usize = 8;
const RECORD_LENGTH_BYTES: usize = 4;

/// The journal entry as a format structure.
const JOURNAL_ENTRY: StructureType = StructureType {
    name: "journal entry",
    magic: Magic(*b"VGFSJENT"),
    oldest_version: 1,
    current_version: 1,
    fixed_length: None,
};

/// Why bytes are not a valid journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryError {
    /// The structure header or checksum is wrong, or the bytes end early.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The entry belongs to a different filesystem.
    #[error("journal entry belongs to another filesystem")]
    ForeignFilesystem,
    /// Header fields contradict each other.
    #[error("journal entry header is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// A record runs past the payload.
    #[error("journal record at payload offset {offset} overruns the payload")]
    RecordOverrun {
        /// Where the bad record starts.
        offset: usize,
    },
}

/// The header fields that vary between entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// This entry's sequence number.
    pub seq: u64,
    /// The oldest entry replay still needs.
    pub last_seq: u64,
    /// The entry written before this one.
    pub prev_seq: u64,
    /// Everything up to this seq was durable when this entry was written.
    pub durable_seq: u64,
    /// Payload length in bytes.
    pub payload_bytes: u32,
    /// Whole entry length in blocks.
    pub blocks: u32,
}

/// Bytes a record of `length` payload bytes occupies.
pub fn record_bytes(length: usize) -> usize {
    (RECORD_LENGTH_BYTES + length).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Writes one record at the start of `into`, which must be exactly
/// `record_bytes(record.len())` long.
pub(crate) fn encode_record(record: &[u8], into: &mut [u8]) {
    debug_assert_eq!(into.len(), record_bytes(record.len()));
    let length = u32::try_from(record.len()).expect("records are smaller than an entry");
    into[..RECORD_LENGTH_BYTES].copy_from_slice(&length.to_le_bytes());
    into[RECORD_LENGTH_BYTES..RECORD_LENGTH_BYTES + record.len()].copy_from_slice(record);
    into[RECORD_LENGTH_BYTES + record.len()..].fill(0);
}

/// Blocks an entry with `payload_bytes` of payload occupies.
pub fn entry_blocks(payload_bytes: usize, block_size: usize) -> usize {
    (HEADER_BYTES + payload_bytes).div_ceil(block_size)
}

/// Fills in the headers of `entry` (headers + payload, padded to whole
/// blocks) and its checksum. The payload must already be in place.
pub(crate) fn seal(entry: &mut [u8], header: &EntryHeader, uuid: &[u8; 16]) {
    let mut fields = Encoder::new(JOURNAL_ENTRY.name, HEADER_BYTES - HEADER_SIZE);
    fields.put_bytes(uuid);
    fields.put_u64(header.seq);
    fields.put_u64(header.last_seq);
    fields.put_u64(header.prev_seq);
    fields.put_u64(header.durable_seq);
    fields.put_u32(header.blocks);
    fields
        .pad_to(HEADER_BYTES - HEADER_SIZE)
        .expect("entry header fields fit");
    entry[HEADER_SIZE..HEADER_BYTES].copy_from_slice(&fields.into_bytes());
    let used = HEADER_BYTES + header.payload_bytes as usize;
    entry[used..].fill(0);
    format::seal(&JOURNAL_ENTRY, &mut entry[..used]).expect("an entry is larger than its header");
}

/// Whether `block` starts with the entry magic: cheap test before decoding.
pub fn has_magic(block: &[u8]) -> bool {
    block.len() >= 8 && block[..8] == JOURNAL_ENTRY.magic.0
}

/// Decodes the headers at the start of an entry without the checksum
/// (which needs the whole entry), validating every field, so the caller
/// knows how many blocks to read.
pub fn decode_header(
    bytes: &[u8],
    uuid: &[u8; 16],
    block_size: usize,
) -> Result<EntryHeader, EntryError> {
    let mut decoder = Decoder::new(JOURNAL_ENTRY.name, bytes);
    let magic = Magic(decoder.array()?);
    if magic != JOURNAL_ENTRY.magic {
        return Err(FormatError::BadMagic {
            structure: JOURNAL_ENTRY.name,
            found: magic,
            expected: JOURNAL_ENTRY.magic,
        }
        .into());
    }
    let version = decoder.u16()?;
    if version != JOURNAL_ENTRY.current_version {
        return Err(FormatError::UnsupportedVersion {
            structure: JOURNAL_ENTRY.name,
            found: version,
            oldest: JOURNAL_ENTRY.oldest_version,
            newest: JOURNAL_ENTRY.current_version,
        }
        .into());
    }
    decoder.u16()?;
    let length = decoder.u32()? as usize;
    decoder.seek(HEADER_SIZE)?;
    if decoder.array::<16>()? != *uuid {
        return Err(EntryError::ForeignFilesystem);
    }
    let seq = decoder.u64()?;
    let last_seq = decoder.u64()?;
    let prev_seq = decoder.u64()?;
    let durable_seq = decoder.u64()?;
    let blocks = decoder.u32()?;
    let payload_bytes = length
        .checked_sub(HEADER_BYTES)
        .ok_or(EntryError::Inconsistent("length shorter than the headers"))?;
    let header = EntryHeader {
        seq,
        last_seq,
        prev_seq,
        durable_seq,
        payload_bytes: u32::try_from(payload_bytes)
            .map_err(|_| EntryError::Inconsistent("payload too large"))?,
        blocks,
    };
    if header.seq == 0 || header.seq >= MAX_SEQ {
        return Err(EntryError::Inconsistent("sequence number out of range"));
    }
    if header.durable_seq >= header.seq {
        return Err(EntryError::Inconsistent("durable_seq not below seq"));
    }
    if header.last_seq > header.seq || header.prev_seq >= header.seq {
        return Err(EntryError::Inconsistent("last_seq or prev_seq after seq"));
    }
    if header.blocks as usize != entry_blocks(payload_bytes, block_size) {
        return Err(EntryError::Inconsistent(
            "block count does not match payload",
        ));
    }
    if payload_bytes % RECORD_ALIGN != 0 {
        return Err(EntryError::Inconsistent(
            "payload not a multiple of 8 bytes",
        ));
    }
    Ok(header)
}

/// Validates a whole entry (headers, checksum, records) and returns its
/// header and records.
pub fn decode_entry<'a>(
    bytes: &'a [u8],
    uuid: &[u8; 16],
    block_size: usize,
) -> Result<(EntryHeader, Vec<&'a [u8]>), EntryError> {
    let header = decode_header(bytes, uuid, block_size)?;
    let structure = format::verify(&JOURNAL_ENTRY, bytes)?;
    let used = structure.length as usize;
    let payload = &bytes[HEADER_BYTES..used];
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < payload.len() {
        let remaining = payload.len() - offset;
        if remaining < RECORD_ALIGN {
            return Err(EntryError::RecordOverrun { offset });
        }
        let mut length_bytes = [0u8; RECORD_LENGTH_BYTES];
        length_bytes.copy_from_slice(&payload[offset..offset + RECORD_LENGTH_BYTES]);
        let length = u32::from_le_bytes(length_bytes) as usize;
        if length == 0 {
            offset += RECORD_ALIGN;
            continue;
        }
        let span = length
            .checked_add(RECORD_LENGTH_BYTES)
            .map(|bytes| bytes.div_ceil(RECORD_ALIGN) * RECORD_ALIGN)
            .filter(|&span| span <= remaining)
            .ok_or(EntryError::RecordOverrun { offset })?;
        let start = offset + RECORD_LENGTH_BYTES;
        records.push(&payload[start..start + length]);
        offset += span;
    }
    Ok((header, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: [u8; 16] = [7; 16];
    const BLOCK: usize = 4096;

    fn entry_with(records: &[&[u8]], header: EntryHeader) -> Vec<u8> {
        let payload: usize = records.iter().map(|r| record_bytes(r.len())).sum();
        let blocks = entry_blocks(payload, BLOCK);
        let mut bytes = vec![0u8; blocks * BLOCK];
        let mut at = HEADER_BYTES;
        for record in records {
            let span = record_bytes(record.len());
            encode_record(record, &mut bytes[at..at + span]);
            at += span;
        }
        let header = EntryHeader {
            payload_bytes: payload as u32,
            blocks: blocks as u32,
            ..header
        };
        seal(&mut bytes, &header, &UUID);
        bytes
    }

    fn header(seq: u64) -> EntryHeader {
        EntryHeader {
            seq,
            last_seq: 1,
            prev_seq: seq - 1,
            durable_seq: seq - 1,
            payload_bytes: 0,
            blocks: 0,
        }
    }

    #[test]
    fn sealed_entry_decodes_to_its_records() {
        let records: [&[u8]; 3] = [b"alpha", b"", b"a longer record of bytes"];
        let bytes = entry_with(&records, header(5));
        let (decoded, found) = decode_entry(&bytes, &UUID, BLOCK).unwrap();
        assert_eq!(decoded.seq, 5);
        // The empty record is indistinguishable from padding and vanishes.
        assert_eq!(found, vec![&b"alpha"[..], &b"a longer record of bytes"[..]]);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = entry_with(&[b"payload"], header(3));
        let used = HEADER_BYTES + record_bytes(7);
        for at in 0..used {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= 0x40;
            assert!(
                decode_entry(&corrupt, &UUID, BLOCK).is_err(),
                "flip at byte {at} went unnoticed"
            );
        }
    }

    #[test]
    fn entry_of_another_filesystem_is_refused() {
        let bytes = entry_with(&[b"x"], header(2));
        assert_eq!(
            decode_entry(&bytes, &[8; 16], BLOCK).unwrap_err(),
            EntryError::ForeignFilesystem
        );
    }

    #[test]
    fn truncated_entry_is_a_typed_error() {
        let bytes = entry_with(&[&[1u8; 300]], header(2));
        for length in [0, 10, HEADER_BYTES - 1, HEADER_BYTES + 10] {
            assert!(matches!(
                decode_entry(&bytes[..length], &UUID, BLOCK),
                Err(EntryError::Format(FormatError::Truncated { .. }))
            ));
        }
    }

    #[test]
    fn out_of_range_seq_and_durable_claims_are_refused() {
        for header in [
            EntryHeader {
                seq: MAX_SEQ,
                prev_seq: 1,
                ..header(5)
            },
            EntryHeader {
                durable_seq: 5,
                ..header(5)
            },
            EntryHeader {
                durable_seq: 9,
                ..header(5)
            },
        ] {
            let bytes = entry_with(&[b"x"], header);
            assert!(
                matches!(
                    decode_entry(&bytes, &UUID, BLOCK),
                    Err(EntryError::Inconsistent(_))
                ),
                "{header:?} accepted"
            );
        }
    }

    #[test]
    fn record_sizes_are_padded_to_eight_bytes() {
        assert_eq!(record_bytes(0), 8);
        assert_eq!(record_bytes(4), 8);
        assert_eq!(record_bytes(5), 16);
        assert_eq!(entry_blocks(0, BLOCK), 1);
        assert_eq!(entry_blocks(BLOCK - HEADER_BYTES + 1, BLOCK), 2);
    }
}
