//! Recovery: find the entries a crash left and decide which to replay.
//!
//! The policy, in order:
//!
//! 1. Scan every block of the region for entry headers of this filesystem;
//!    keep the entries whose checksum verifies. Torn entries fail it.
//! 2. `durable` is the highest `durable_seq` any valid entry recorded:
//!    entries up to it were acknowledged by a completed flush, so they must
//!    be intact.
//! 3. An entry above `durable` whose data claims do not hold (a claimed
//!    block's checksum differs: the data written before the entry did not
//!    reach the disk, though the entry did) is not valid: the flush that
//!    would have made both durable never completed, so nothing acknowledged
//!    depends on it. A claimed block the device cannot read does not make
//!    its entry invalid: the entry may have been acknowledged, and the read
//!    error is the data's, reported when the data is read. Nor does one
//!    read that differs: the block is read again, and only a difference
//!    every read repeats counts. An acknowledged entry whose durability no
//!    later entry recorded is checked too, and cutting it off loses it for
//!    good (its blocks are destroyed), so a bit flipped once on the way
//!    from the disk must not decide; a write that never landed reads the
//!    same old contents every time.
//! 4. Take the newest valid entry and follow its `prev_seq` links down to
//!    its `last_seq`. If a link is missing:
//!    * at or below `durable`: the journal lost acknowledged data (media
//!      corruption in the middle of the needed range). That is an error,
//!      reported with the seq, never papered over;
//!    * above `durable`: a torn tail (writes since the last flush may land in
//!      any order). Cut the newest entry off and try the next newest.
//! 5. New entries continue above the highest seq seen anywhere, cut-off
//!    ones included, so a seq is never reused and stale tail entries can
//!    never be mistaken for new ones; the first new entry's `prev_seq`
//!    points past the cut-off seqs.

use std::collections::BTreeMap;

use super::entry::{self, DataClaim, EntryHeader, HEADER_BYTES};
use super::{JournalError, JournalOptions, JournalRegion};
use crate::device::{BlockDevice, IoClass};

/// One entry to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedEntry {
    /// Its seq.
    pub seq: u64,
    /// Its records, in the order they were appended.
    pub records: Vec<Vec<u8>>,
    pub(crate) start_block: u64,
    pub(crate) blocks: u32,
}

/// What recovery found and decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid entries found in the region (needed or not).
    pub valid_entries: usize,
    /// Blocks that looked like entry headers but did not verify.
    pub invalid_entries: usize,
    /// Entries up to here were durable (acknowledged by a flush).
    pub durable_seq: u64,
    /// The newest entry replayed (0 if none).
    pub newest_kept_seq: u64,
    /// The oldest entry replayed: `last_seq` of the newest.
    pub last_seq: u64,
    /// Valid entries cut off: newer than `newest_kept_seq` (a torn tail),
    /// or with unmet data claims.
    pub cut_off: Vec<u64>,
    /// Among them, entries whose claimed data had not reached the disk.
    pub unmet_claims: Vec<u64>,
    /// Entries above `durable_seq` whose header verified but whose whole
    /// did not: torn by the crash, or damaged since. Not replayed, as a
    /// torn tail; said, so a loss is never silent.
    pub unverified_after_flush: Vec<u64>,
    /// The highest `durable_seq` a kept entry records.
    pub kept_durable_seq: u64,
    /// Whether a kept entry above `kept_durable_seq` has data claims: its
    /// claims would be checked again by the next recovery, so mount records
    /// the kept entries durable before any block can be reused.
    pub claims_unsettled: bool,
    /// The seq the next entry gets.
    pub next_seq: u64,
    /// Entries (first, last) that were there when the filesystem was
    /// unmounted cleanly (its superblock names the newest) and are missing
    /// or damaged now: replay went on from the entries before them, which
    /// a clean unmount leaves whole, and their seqs are not given again.
    pub lost_since_clean: Option<(u64, u64)>,
    /// With [`JournalOptions::salvage`]: the oldest missing entry a
    /// completed flush had covered, and the newest entry whose chain
    /// needed it. Replay went on from an older whole chain; what the
    /// entries from the first on changed is not in the trees.
    pub acknowledged_lost: Option<(u64, u64)>,
}

/// The entries to replay, oldest first, and the report.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Entries from `report.last_seq` to `report.newest_kept_seq`.
    pub entries: Vec<ReplayedEntry>,
    /// What recovery found.
    pub report: RecoveryReport,
    /// First block of every cut-off entry: mount destroys them, so a later
    /// recovery can never mistake one for part of a chain.
    pub(crate) cut_off_blocks: Vec<u64>,
}

/// Largest jump between an entry's seq and its `prev_seq` that replay
/// believes: jumps come only from tails cut off by earlier recoveries.
const MAX_SEQ_GAP: u64 = 1 << 20;

struct Found {
    header: EntryHeader,
    start_block: u64,
    has_claims: bool,
}

const SCAN_CHUNK: u64 = 1 << 20;

pub(crate) fn scan(
    device: &dyn BlockDevice,
    options: &JournalOptions,
) -> Result<Replay, JournalError> {
    let region = &options.region;
    let uuid = &options.uuid;
    let clean_unmount_seq = options.clean_unmount_seq;
    let block_size = u64::from(region.block_size);
    let total_blocks = region.length / block_size;
    let mut found: BTreeMap<u64, Found> = BTreeMap::new();
    let mut duplicated = std::collections::BTreeSet::new();
    let mut invalid = 0usize;
    let mut unverified = Vec::new();
    // The highest seq any header claims, checksum or not: new entries go
    // above it, so a torn entry's seq is never reused either.
    let mut newest_header = 0u64;

    let chunk_blocks = (SCAN_CHUNK / block_size).max(1);
    let mut chunk = vec![0u8; (chunk_blocks * block_size) as usize];
    let mut block = 0u64;
    let mut chunk_first = u64::MAX;
    while block < total_blocks {
        if block < chunk_first || block >= chunk_first + chunk_blocks {
            chunk_first = block;
            let blocks = chunk_blocks.min(total_blocks - block);
            let bytes = (blocks * block_size) as usize;
            device.read_at(
                region.start + block * block_size,
                &mut chunk[..bytes],
                IoClass::Journal,
            )?;
        }
        let at = ((block - chunk_first) * block_size) as usize;
        let head = &chunk[at..at + block_size as usize];
        if !entry::has_magic(head) {
            block += 1;
            continue;
        }
        let header = match entry::decode_header(head, uuid, block_size as usize) {
            Ok(header) if block + u64::from(header.blocks) <= total_blocks => header,
            // Another filesystem's leftovers are not damage to this one.
            Err(super::EntryError::ForeignFilesystem) => {
                block += 1;
                continue;
            }
            Ok(_) | Err(_) => {
                invalid += 1;
                block += 1;
                continue;
            }
        };
        newest_header = newest_header.max(header.seq);
        let bytes = read_entry(device, region, block, header.blocks)?;
        match entry::decode_entry(&bytes, uuid, block_size as usize) {
            Ok(decoded) => {
                if found.contains_key(&header.seq) || duplicated.contains(&header.seq) {
                    // Two valid entries with one seq cannot both be ours:
                    // trust neither (the chain walk then decides).
                    found.remove(&header.seq);
                    duplicated.insert(header.seq);
                    invalid += 1;
                } else {
                    found.insert(
                        header.seq,
                        Found {
                            header,
                            start_block: block,
                            has_claims: !decoded.claims.is_empty(),
                        },
                    );
                }
                block += u64::from(header.blocks);
            }
            Err(_) => {
                unverified.push(header.seq);
                invalid += 1;
                block += 1;
            }
        }
    }

    let durable = found
        .values()
        .map(|f| f.header.durable_seq)
        .max()
        .unwrap_or(0);
    let newest_seen = found
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0)
        .max(newest_header);
    unverified.retain(|seq| *seq > durable && !found.contains_key(seq));
    unverified.sort_unstable();
    unverified.dedup();
    let mut report = RecoveryReport {
        unverified_after_flush: unverified,
        valid_entries: found.len(),
        invalid_entries: invalid,
        durable_seq: durable,
        next_seq: newest_seen + 1,
        last_seq: newest_seen + 1,
        ..RecoveryReport::default()
    };

    let mut cut_off_blocks = Vec::new();
    let claimed: Vec<u64> = found
        .iter()
        .filter(|(&seq, found)| seq > durable && found.has_claims)
        .map(|(&seq, _)| seq)
        .collect();
    for seq in claimed {
        let entry = &found[&seq];
        let (_, claims) = read_again(device, region, uuid, seq, entry)?;
        if !claims
            .iter()
            .all(|claim| claim_holds(device, claim, region.block_size))
        {
            report.unmet_claims.push(seq);
            cut_off_blocks.push(entry.start_block);
            found.remove(&seq);
        }
    }

    let mut chain: Vec<u64> = Vec::new();
    for (&candidate, newest) in found.iter().rev() {
        chain.clear();
        chain.push(candidate);
        let last_seq = newest.header.last_seq;
        let mut current = &newest.header;
        let mut complete = true;
        while current.prev_seq >= last_seq && current.prev_seq > 0 {
            let wanted = current.prev_seq;
            if current.seq - wanted > MAX_SEQ_GAP {
                return Err(JournalError::Corrupt(format!(
                    "entry {} says the entry before it is {wanted}: an implausible gap",
                    current.seq
                )));
            }
            match found.get(&wanted) {
                Some(previous) => {
                    chain.push(wanted);
                    current = &previous.header;
                }
                None if wanted <= durable && !options.salvage => {
                    return Err(JournalError::Corrupt(format!(
                        "entry {wanted} is missing or fails its checksum, but replay needs it \
                         (entries {last_seq}..={candidate}) and a completed flush covered it \
                         (durable through {durable}); refusing to mount with acknowledged \
                         metadata lost (mounted read-only, `-o ro`, it goes on from the \
                         newest whole chain of entries before it, to copy files out)"
                    )));
                }
                None if wanted <= durable => {
                    // Salvage: the chains through the gap are all broken;
                    // an older candidate's may be whole.
                    let (first, newest) = report.acknowledged_lost.unwrap_or((wanted, candidate));
                    report.acknowledged_lost = Some((first.min(wanted), newest.max(candidate)));
                    complete = false;
                    break;
                }
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if complete {
            report.newest_kept_seq = candidate;
            report.last_seq = last_seq;
            break;
        }
        report.cut_off.push(candidate);
        cut_off_blocks.push(newest.start_block);
    }
    if report.newest_kept_seq == 0 {
        chain.clear();
    }
    if clean_unmount_seq > report.newest_kept_seq {
        // Durable when the filesystem was unmounted cleanly, and gone
        // since: damage, never the end of the log.
        report.lost_since_clean = Some((report.newest_kept_seq + 1, clean_unmount_seq));
        report.next_seq = report.next_seq.max(clean_unmount_seq + 1);
    }
    report.cut_off.extend(&report.unmet_claims);
    report.cut_off.sort_unstable();
    let kept = || chain.iter().map(|seq| &found[seq]);
    report.kept_durable_seq = kept().map(|f| f.header.durable_seq).max().unwrap_or(0);
    report.claims_unsettled =
        kept().any(|f| f.has_claims && f.header.seq > report.kept_durable_seq);

    let mut entries = Vec::with_capacity(chain.len());
    for &seq in chain.iter().rev() {
        let found = &found[&seq];
        let (records, _) = read_again(device, region, uuid, seq, found)?;
        entries.push(ReplayedEntry {
            seq,
            records,
            start_block: found.start_block,
            blocks: found.header.blocks,
        });
    }
    Ok(Replay {
        entries,
        report,
        cut_off_blocks,
    })
}

/// Reads and decodes a valid entry the scan found once more: its records
/// and its claims.
fn read_again(
    device: &dyn BlockDevice,
    region: &JournalRegion,
    uuid: &[u8; 16],
    seq: u64,
    found: &Found,
) -> Result<(Vec<Vec<u8>>, Vec<DataClaim>), JournalError> {
    let bytes = read_entry(device, region, found.start_block, found.header.blocks)?;
    let decoded =
        entry::decode_entry(&bytes, uuid, region.block_size as usize).map_err(|error| {
            JournalError::Corrupt(format!("entry {seq} changed while replaying: {error}"))
        })?;
    let records = decoded.records.into_iter().map(<[u8]>::to_vec).collect();
    Ok((records, decoded.claims))
}

/// Whether the device holds the data `claim` names. Only a checksum that
/// differs says no (see step 3), or a claim no entry of ours makes: past
/// the end of the device, or of blocks other than the filesystem's (which
/// are the journal's `block_size`), so a hostile image cannot make
/// recovery read more than its device.
fn claim_holds(device: &dyn BlockDevice, claim: &DataClaim, block_size: u32) -> bool {
    if claim.block_bytes != block_size {
        return false;
    }
    let block_bytes = u64::from(claim.block_bytes);
    let Some(end) = (claim.checksums.len() as u64)
        .checked_mul(block_bytes)
        .and_then(|length| claim.offset.checked_add(length))
    else {
        return false;
    };
    if end > device.length() || claim.offset % block_bytes != 0 {
        return false;
    }
    let mut block = vec![0u8; claim.block_bytes as usize];
    claim
        .checksums
        .iter()
        .enumerate()
        .all(|(index, &checksum)| {
            let offset = claim.offset + index as u64 * block_bytes;
            (0..CLAIM_READS).any(
                |_| match device.read_at(offset, &mut block, IoClass::Data) {
                    Ok(()) => crc32c::crc32c(&block) == checksum,
                    Err(_) => true,
                },
            )
        })
}

/// Reads of a claimed block before its differing checksum says the data
/// never landed (see step 3).
const CLAIM_READS: usize = 3;

fn read_entry(
    device: &dyn BlockDevice,
    region: &JournalRegion,
    start_block: u64,
    blocks: u32,
) -> Result<Vec<u8>, JournalError> {
    let block_size = u64::from(region.block_size);
    let mut bytes = vec![0u8; (u64::from(blocks) * block_size) as usize];
    debug_assert!(bytes.len() >= HEADER_BYTES);
    device.read_at(
        region.start + start_block * block_size,
        &mut bytes,
        IoClass::Journal,
    )?;
    Ok(bytes)
}
