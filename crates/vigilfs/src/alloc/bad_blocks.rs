//! The persistent bad-block list: runs of the main region that failed
//! (media errors, checksum mismatches, a failure an operator reported) and
//! must never be handed out again, across remounts.
//!
//! The list is a keyspace of the Meta b-tree, so it inherits what every
//! node has — a magic, a version, a checksum, copy-on-write and the
//! journal — and a record is written in the same transaction as the poison
//! records of the same failure. Format:
//!
//! ```text
//! key    b'B' | first block u64 BE          (9 bytes: key order is block order)
//! value  version 1 u8 | blocks u64 LE | since u64 LE (seconds since the epoch)
//!        | cause u8 (1 media, 2 checksum, 3 reported)            (18 bytes)
//! ```
//!
//! Invariants (checked by [`decode`] and by fsck): runs lie inside the main
//! region, are at least one block long, and neither overlap nor touch
//! (touching runs are written as one: [`record`] rewrites the coalesced run
//! the allocator holds). The allocator reads the list when it rebuilds free
//! space at mount ([`super::Allocator`]), so a bad block stays out of use
//! even after its owner frees it.

use std::fmt;

use thiserror::Error;

use super::free_space::Extent;
use crate::btree::{BtreeError, Transaction, TreeId};
use crate::format::meta_record::{word_at, MetaFrame};

/// The key prefix of bad-block records in the Meta tree.
pub const KEY_PREFIX: u8 = b'B';

const VERSION: u8 = 1;
const KEY_BYTES: usize = 9;
const VALUE_BYTES: usize = 18;

/// The framing of these records (see [`MetaFrame`]).
const FRAME: MetaFrame = MetaFrame {
    prefix: KEY_PREFIX,
    key_bytes: KEY_BYTES,
    value_bytes: VALUE_BYTES,
    version: VERSION,
};

/// Why a block was found bad: the same codes are kept in poison records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureCause {
    /// The device could not read it (a media error).
    Media,
    /// It read back with the wrong checksum.
    Checksum,
    /// Someone reported it failed (SMART, EDAC, a storage array, an
    /// operator replaying a report).
    Reported,
}

impl FailureCause {
    /// The byte stored on disk.
    pub fn code(self) -> u8 {
        match self {
            FailureCause::Media => 1,
            FailureCause::Checksum => 2,
            FailureCause::Reported => 3,
        }
    }

    /// The cause stored as `code`.
    pub fn from_code(code: u8) -> Option<FailureCause> {
        match code {
            1 => Some(FailureCause::Media),
            2 => Some(FailureCause::Checksum),
            3 => Some(FailureCause::Reported),
            _ => None,
        }
    }

    /// Lowercase name for status output.
    pub fn name(self) -> &'static str {
        match self {
            FailureCause::Media => "media",
            FailureCause::Checksum => "checksum",
            FailureCause::Reported => "reported",
        }
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One run of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BadRun {
    /// First block.
    pub start: u64,
    /// Blocks in the run.
    pub blocks: u64,
    /// When the run was last recorded (seconds since the epoch).
    pub since: u64,
    /// Why its latest failure was recorded.
    pub cause: FailureCause,
}

impl BadRun {
    /// The run as an extent.
    pub fn extent(&self) -> Extent {
        Extent::new(self.start, self.blocks)
    }
}

/// A bad-block record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad-block record {key:02x?}: {reason}")]
pub struct BadBlockRecordError {
    /// The key as found.
    pub key: Vec<u8>,
    /// What is wrong with it.
    pub reason: String,
}

/// The key of the run starting at `start`.
pub fn key(start: u64) -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    key[0] = KEY_PREFIX;
    key[1..].copy_from_slice(&start.to_be_bytes());
    key
}

/// The key range holding every bad-block record: `(start, end)`.
pub fn key_range() -> ([u8; 1], [u8; 1]) {
    ([KEY_PREFIX], [KEY_PREFIX + 1])
}

/// The value bytes of `run`.
pub fn encode(run: &BadRun) -> Vec<u8> {
    let mut value = Vec::with_capacity(VALUE_BYTES);
    value.push(VERSION);
    value.extend_from_slice(&run.blocks.to_le_bytes());
    value.extend_from_slice(&run.since.to_le_bytes());
    value.push(run.cause.code());
    value
}

/// Decodes and validates a record; `region` is the main region's blocks.
pub fn decode(
    key: &[u8],
    value: &[u8],
    region: std::ops::Range<u64>,
) -> Result<BadRun, BadBlockRecordError> {
    let fail = |reason: String| BadBlockRecordError {
        key: key.to_vec(),
        reason,
    };
    FRAME.check(key, value).map_err(fail)?;
    let word = |at: usize| u64::from_le_bytes(word_at(value, at));
    let start = u64::from_be_bytes(word_at(key, 1));
    let blocks = word(1);
    let since = word(9);
    let cause = FailureCause::from_code(value[17])
        .ok_or_else(|| fail(format!("unknown cause {}", value[17])))?;
    let inside = blocks > 0
        && start >= region.start
        && start
            .checked_add(blocks)
            .is_some_and(|end| end <= region.end);
    if !inside {
        return Err(fail(format!(
            "blocks {start}+{blocks} are not inside the main region {}..{}",
            region.start, region.end
        )));
    }
    Ok(BadRun {
        start,
        blocks,
        since,
        cause,
    })
}

/// Writes `merged` — the coalesced run the allocator now holds, which
/// contains every earlier record it touches — replacing the records inside
/// it, so the list stays free of overlapping or touching runs.
pub fn record(transaction: &mut Transaction<'_>, merged: &BadRun) -> Result<(), BtreeError> {
    let end = merged.start.saturating_add(merged.blocks);
    transaction.delete_range(TreeId::Meta, &key(merged.start), Some(&key(end)))?;
    transaction.put(TreeId::Meta, &key(merged.start), &encode(merged))
}

/// Checks a list read in key order: inside the region (each record), and
/// no two runs overlapping or touching. Returns the runs and every problem.
pub fn validate(
    entries: &[(Vec<u8>, Vec<u8>)],
    region: std::ops::Range<u64>,
) -> (Vec<BadRun>, Vec<String>) {
    let mut runs: Vec<BadRun> = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in entries {
        match decode(key, value, region.clone()) {
            Ok(run) => {
                if let Some(previous) = runs.last() {
                    if previous.start + previous.blocks >= run.start {
                        problems.push(format!(
                            "bad-block runs {}+{} and {}+{} overlap or touch",
                            previous.start, previous.blocks, run.start, run.blocks
                        ));
                    }
                }
                runs.push(run);
            }
            Err(error) => problems.push(error.to_string()),
        }
    }
    (runs, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BadRun {
        BadRun {
            start: 300,
            blocks: 4,
            since: 1_700_000_000,
            cause: FailureCause::Checksum,
        }
    }

    #[test]
    fn records_roundtrip_and_keys_sort_by_block() {
        let run = sample();
        assert_eq!(decode(&key(300), &encode(&run), 100..1000), Ok(run));
        assert!(key(299) < key(300) && key(300) < key(1 << 40));
        let (start, end) = key_range();
        assert!(start[..] <= key(0)[..] && key(u64::MAX)[..] < end[..]);
    }

    #[test]
    fn every_malformed_record_is_a_typed_error() {
        let value = encode(&sample());
        for length in 0..value.len() {
            assert!(decode(&key(300), &value[..length], 100..1000).is_err());
        }
        let mut future = value.clone();
        future[0] = 2;
        assert!(decode(&key(300), &future, 100..1000).is_err());
        let mut cause = value.clone();
        cause[17] = 9;
        assert!(decode(&key(300), &cause, 100..1000).is_err());
        let mut empty = value.clone();
        empty[1..9].copy_from_slice(&0u64.to_le_bytes());
        assert!(decode(&key(300), &empty, 100..1000).is_err());
        // Outside the region, or wrapping past the last block.
        assert!(decode(&key(50), &value, 100..1000).is_err());
        assert!(decode(&key(998), &value, 100..1000).is_err());
        let mut huge = value;
        huge[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&key(300), &huge, 100..u64::MAX).is_err());
        assert!(decode(&key(300)[..5], &encode(&sample()), 100..1000).is_err());
    }

    #[test]
    fn validation_reports_overlapping_and_touching_runs() {
        let entry = |start: u64, blocks: u64| {
            let run = BadRun {
                start,
                blocks,
                ..sample()
            };
            (key(start).to_vec(), encode(&run))
        };
        let (runs, problems) = validate(&[entry(200, 2), entry(210, 5)], 100..1000);
        assert_eq!(runs.len(), 2);
        assert!(problems.is_empty(), "{problems:?}");
        let (_, problems) = validate(&[entry(200, 10), entry(210, 5)], 100..1000);
        assert_eq!(problems.len(), 1, "touching runs: {problems:?}");
        let (_, problems) = validate(&[entry(200, 20), entry(210, 5)], 100..1000);
        assert_eq!(problems.len(), 1, "overlapping runs: {problems:?}");
    }
}
