//! The on-disk journal entry: the common structure header, the entry
//! header, then records.
//!
//! An entry starts on a block boundary of the journal region and occupies
//! whole blocks. Layout (little-endian):
//!
//! ```text
//! offset  size  field
//!      0    24  structure header (format::header): magic "VGFSJENT",
//!               version 1, or 2 when the entry holds data claims,
//!               length = 128 + payload bytes, crc32c of those
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
//! Version 2 adds the *data claim*: a record whose length word has bit 31
//! set ([`CLAIM_FLAG`]), saying which device blocks the entry's changes
//! expect to hold which data (file data written outside the journal just
//! before the entry). Its body is the first block's byte offset (u64), the
//! block size (u32), then one crc32c per block (u32 each). The journal
//! reads claims itself: replay checks the claims of entries no completed
//! flush covered, so a commit needs one device flush, not a flush of the
//! data and another of the entry (see `replay.rs`).
//!
//! Decoding checks everything before trusting anything and returns a typed
//! error; it never panics or indexes out of bounds.

use thiserror::Error;

use crate::format::{self, Decoder, Encoder, FormatError, Magic, StructureType, HEADER_SIZE};

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 128;
/// Sequence numbers stay below this (2^62), so seq arithmetic never
/// overflows however an image was damaged.
pub const MAX_SEQ: u64 = format::MAX_JOURNAL_SEQ;

/// Records are padded to this alignment.
pub const RECORD_ALIGN: usize = 8;
const RECORD_LENGTH_BYTES: usize = 4;

/// The journal entry as a format structure: what this build reads, and
/// writes for entries with data claims.
const JOURNAL_ENTRY: StructureType = StructureType {
    name: "journal entry",
    magic: Magic(*b"VGFSJENT"),
    oldest_version: 1,
    current_version: 2,
    fixed_length: None,
};

/// Entries without data claims are written as version 1, which builds from
/// before claims read too.
const JOURNAL_ENTRY_WITHOUT_CLAIMS: StructureType = StructureType {
    current_version: 1,
    ..JOURNAL_ENTRY
};

/// Set in a record's length word: the record is a [`DataClaim`].
pub const CLAIM_FLAG: u32 = 1 << 31;

/// Bytes of a claim's body before its checksums.
const CLAIM_FIXED_BYTES: usize = 12;

/// Device blocks an entry's changes expect to hold certain data: written
/// outside the journal, before the entry, and not yet covered by a flush
/// when the entry was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataClaim {
    /// Byte offset of the first block on the device.
    pub offset: u64,
    /// Bytes per block.
    pub block_bytes: u32,
    /// The crc32c of each block, in order.
    pub checksums: Vec<u32>,
}

impl DataClaim {
    /// Bytes the claim's record occupies in an entry.
    pub fn record_bytes(&self) -> usize {
        record_bytes(CLAIM_FIXED_BYTES + 4 * self.checksums.len())
    }

    /// Writes the claim's record at the start of `into`, which must be
    /// exactly [`DataClaim::record_bytes`] long.
    pub(crate) fn encode(&self, into: &mut [u8]) {
        let length = CLAIM_FIXED_BYTES + 4 * self.checksums.len();
        debug_assert_eq!(into.len(), record_bytes(length));
        let word = u32::try_from(length).expect("claims are smaller than an entry") | CLAIM_FLAG;
        into[..RECORD_LENGTH_BYTES].copy_from_slice(&word.to_le_bytes());
        let body = &mut into[RECORD_LENGTH_BYTES..];
        body[..8].copy_from_slice(&self.offset.to_le_bytes());
        body[8..12].copy_from_slice(&self.block_bytes.to_le_bytes());
        for (at, checksum) in self.checksums.iter().enumerate() {
            let start = CLAIM_FIXED_BYTES + 4 * at;
            body[start..start + 4].copy_from_slice(&checksum.to_le_bytes());
        }
        body[length..].fill(0);
    }

    fn decode(body: &[u8]) -> Option<DataClaim> {
        if body.len() < CLAIM_FIXED_BYTES + 4 || (body.len() - CLAIM_FIXED_BYTES) % 4 != 0 {
            return None;
        }
        let offset = u64::from_le_bytes(body[..8].try_into().ok()?);
        let block_bytes = u32::from_le_bytes(body[8..12].try_into().ok()?);
        if !block_bytes.is_power_of_two() || !(512..=1 << 20).contains(&block_bytes) {
            return None;
        }
        let checksums = body[CLAIM_FIXED_BYTES..]
            .chunks_exact(4)
            .map(|word| u32::from_le_bytes(word.try_into().expect("four bytes")))
            .collect();
        Some(DataClaim {
            offset,
            block_bytes,
            checksums,
        })
    }
}

/// A decoded entry: its header, its records in order, and its claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEntry<'a> {
    /// The header.
    pub header: EntryHeader,
    /// The records of the layers above.
    pub records: Vec<&'a [u8]>,
    /// The data claims (version 2 entries only).
    pub claims: Vec<DataClaim>,
}

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
/// blocks) and its checksum. The payload must already be in place;
/// `with_claims` says whether it holds data claims (version 2).
pub(crate) fn seal(entry: &mut [u8], header: &EntryHeader, uuid: &[u8; 16], with_claims: bool) {
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
    let kind = if with_claims {
        &JOURNAL_ENTRY
    } else {
        &JOURNAL_ENTRY_WITHOUT_CLAIMS
    };
    format::seal(kind, &mut entry[..used]).expect("an entry is larger than its header");
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
    if !(JOURNAL_ENTRY.oldest_version..=JOURNAL_ENTRY.current_version).contains(&version) {
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

/// Validates a whole entry (headers, checksum, records and claims) and
/// returns it decoded.
pub fn decode_entry<'a>(
    bytes: &'a [u8],
    uuid: &[u8; 16],
    block_size: usize,
) -> Result<DecodedEntry<'a>, EntryError> {
    let header = decode_header(bytes, uuid, block_size)?;
    let structure = format::verify(&JOURNAL_ENTRY, bytes)?;
    let may_claim = structure.version >= 2;
    let used = structure.length as usize;
    let payload = &bytes[HEADER_BYTES..used];
    let mut records = Vec::new();
    let mut claims = Vec::new();
    let mut offset = 0;
    while offset < payload.len() {
        let remaining = payload.len() - offset;
        if remaining < RECORD_ALIGN {
            return Err(EntryError::RecordOverrun { offset });
        }
        let mut length_bytes = [0u8; RECORD_LENGTH_BYTES];
        length_bytes.copy_from_slice(&payload[offset..offset + RECORD_LENGTH_BYTES]);
        let word = u32::from_le_bytes(length_bytes);
        let is_claim = word & CLAIM_FLAG != 0;
        if is_claim && !may_claim {
            return Err(EntryError::Inconsistent(
                "a data claim in a version 1 entry",
            ));
        }
        let length = (word & !CLAIM_FLAG) as usize;
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
        let body = &payload[start..start + length];
        if is_claim {
            claims.push(
                DataClaim::decode(body).ok_or(EntryError::Inconsistent("malformed data claim"))?,
            );
        } else {
            records.push(body);
        }
        offset += span;
    }
    Ok(DecodedEntry {
        header,
        records,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: [u8; 16] = [7; 16];
    const BLOCK: usize = 4096;

    fn entry_with(records: &[&[u8]], header: EntryHeader) -> Vec<u8> {
        entry_with_claims(records, &[], header)
    }

    fn entry_with_claims(records: &[&[u8]], claims: &[DataClaim], header: EntryHeader) -> Vec<u8> {
        let payload: usize = records.iter().map(|r| record_bytes(r.len())).sum::<usize>()
            + claims.iter().map(DataClaim::record_bytes).sum::<usize>();
        let blocks = entry_blocks(payload, BLOCK);
        let mut bytes = vec![0u8; blocks * BLOCK];
        let mut at = HEADER_BYTES;
        for record in records {
            let span = record_bytes(record.len());
            encode_record(record, &mut bytes[at..at + span]);
            at += span;
        }
        for claim in claims {
            let span = claim.record_bytes();
            claim.encode(&mut bytes[at..at + span]);
            at += span;
        }
        let header = EntryHeader {
            payload_bytes: payload as u32,
            blocks: blocks as u32,
            ..header
        };
        seal(&mut bytes, &header, &UUID, !claims.is_empty());
        bytes
    }

    fn version_of(entry: &[u8]) -> u16 {
        u16::from_le_bytes([entry[8], entry[9]])
    }

    fn claim(offset: u64, checksums: &[u32]) -> DataClaim {
        DataClaim {
            offset,
            block_bytes: 4096,
            checksums: checksums.to_vec(),
        }
    }

    #[test]
    fn claims_decode_apart_from_records_and_make_the_entry_version_2() {
        let claims = [claim(8192, &[1, 2, 3]), claim(1 << 40, &[u32::MAX])];
        let bytes = entry_with_claims(&[b"alpha", b"beta"], &claims, header(4));
        assert_eq!(version_of(&bytes), 2);
        let decoded = decode_entry(&bytes, &UUID, BLOCK).unwrap();
        assert_eq!(decoded.records, vec![&b"alpha"[..], &b"beta"[..]]);
        assert_eq!(decoded.claims, claims);
        // Without claims an entry stays readable by builds before them.
        assert_eq!(version_of(&entry_with(&[b"alpha"], header(4))), 1);
    }

    #[test]
    fn a_claim_in_a_version_1_entry_or_a_malformed_claim_is_refused() {
        // Sealed as version 1 though it holds a claim.
        let claims = [claim(4096, &[7])];
        let mut bytes = entry_with_claims(&[], &claims, header(4));
        let used = HEADER_BYTES + claims[0].record_bytes();
        bytes[8] = 1;
        format::seal(&JOURNAL_ENTRY_WITHOUT_CLAIMS, &mut bytes[..used]).unwrap();
        assert_eq!(
            decode_entry(&bytes, &UUID, BLOCK).unwrap_err(),
            EntryError::Inconsistent("a data claim in a version 1 entry")
        );
        // A claim whose block size is not a power of two.
        let odd = DataClaim {
            block_bytes: 3000,
            ..claim(4096, &[7])
        };
        let bytes = entry_with_claims(&[], &[odd], header(4));
        assert_eq!(
            decode_entry(&bytes, &UUID, BLOCK).unwrap_err(),
            EntryError::Inconsistent("malformed data claim")
        );
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
        let decoded = decode_entry(&bytes, &UUID, BLOCK).unwrap();
        assert_eq!(decoded.header.seq, 5);
        // The empty record is indistinguishable from padding and vanishes.
        assert_eq!(
            decoded.records,
            vec![&b"alpha"[..], &b"a longer record of bytes"[..]]
        );
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
