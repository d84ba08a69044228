//! The event log header: which filesystem and how many slots the region
//! has, and `reserved_through`, the highest event id that may have been
//! handed out.
//!
//! Invariants: a copy is used only if it verifies and names this
//! filesystem and this region's slot count, with `reserved_through` below
//! [`MAX_EVENT_ID`] and its unused bytes zero. Of the two copies, the valid
//! one with the higher sequence wins; they are written in turn, so a write
//! a crash tore leaves the other copy whole.

use super::{invalid, EVENT_LOG_HEADER, LOG_HEADER_SIZE, MAX_EVENT_ID};
use crate::format::codec::{Decoder, Encoder};
use crate::format::header::{seal, verify, HEADER_SIZE};
use crate::format::identity::FsUuid;
use crate::format::FormatError;

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
