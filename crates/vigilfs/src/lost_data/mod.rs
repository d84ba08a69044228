//! Lost data: the bytes of files whose write-back from a shared mapping
//! the mount refused (a full filesystem, a failing device). The kernel
//! does not send those pages again, so the device holds older bytes
//! there; until the user writes them again, reads of them fail and
//! fsyncs of the file report the loss. This module keeps that knowledge
//! across unmounts and power cuts; the page cache keeps the live view
//! (`InodeState::lost`, which a write clears at once).
//!
//! A byte stays recorded here until the device holds data written after
//! the refusal, or the byte is gone:
//!
//! * a refusal adds its bytes in a transaction of its own;
//! * a writeback's commit clears the bytes of the pages it wrote, in the
//!   same transaction as their extents — except those still lost in the
//!   pages it carried: the cache's lost bytes when the writeback took its
//!   pages, and any refused while it flew ([`LostData::take_off`]);
//! * a truncate or a hole punch clears the bytes it cuts off, in the
//!   transaction that cuts them; the file's deletion clears them all.
//!
//! So after any crash, every recorded byte is one whose newer data the
//! device does not hold, and no rewrite that an fsync reported durable is
//! read as lost.
//!
//! The in-memory copy ([`LostData`]) changes only after the transaction
//! that changes the records commits, with the metadata's record lock held
//! from the computation of the change to its application.
//!
//! ```text
//! key    b'L' | ino u64 BE | first byte u64 BE        (17 bytes)
//! value  version 1 u8 | length u64 LE | errno u32 LE  (13 bytes)
//! ```
//!
//! Ranges of one file never overlap or touch; a refusal keeps them at
//! most [`MOST_RECORDS_PER_FILE`], filling the smallest gaps. The errno of
//! a file is its latest refusal's: every record of the file carries it.

mod bytes;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use errseq::Errno;
use thiserror::Error;

use crate::btree::{BtreeError, Btrees, Transaction, TreeId};
use crate::format::meta_record::{word_at, MetaFrame};

pub(crate) use bytes::LostBytes;

/// The key prefix of lost-data records in the Meta tree.
pub const KEY_PREFIX: u8 = b'L';

const VERSION: u8 = 1;
const KEY_BYTES: usize = 17;
/// The most records one file keeps. Past it, a refusal's record fills the
/// smallest gaps between the file's lost ranges: it over-states the loss
/// (the bytes between read as lost after a remount until written again),
/// never under-states it, and a user refusing write-backs of scattered
/// pages cannot fill the metadata with records (review 33: 20,000 small
/// refusals used up the room, and a third went unrecorded).
const MOST_RECORDS_PER_FILE: usize = 64;
const VALUE_BYTES: usize = 13;

/// The framing of these records (see [`MetaFrame`]).
const FRAME: MetaFrame = MetaFrame {
    prefix: KEY_PREFIX,
    key_bytes: KEY_BYTES,
    value_bytes: VALUE_BYTES,
    version: VERSION,
};

/// Why lost-data records could not be read.
#[derive(Debug, Error)]
pub enum LostRecordError {
    /// A record does not decode, or overlaps another of its file.
    #[error("lost-data record {key:02x?}: {reason}")]
    Malformed {
        /// The key as found.
        key: Vec<u8>,
        /// What is wrong.
        reason: String,
    },
    /// The b-trees failed.
    #[error("b-trees: {0}")]
    Btree(#[from] BtreeError),
}

/// One recorded range of a file's lost bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostRange {
    /// The inode.
    pub ino: u64,
    /// First lost byte.
    pub start: u64,
    /// One past the last lost byte.
    pub end: u64,
    /// The refusal's errno.
    pub errno: i32,
}

/// The key of the range of `ino` starting at byte `start`.
fn key(ino: u64, start: u64) -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    key[0] = KEY_PREFIX;
    key[1..9].copy_from_slice(&ino.to_be_bytes());
    key[9..].copy_from_slice(&start.to_be_bytes());
    key
}

/// The key range `(start, end)` of every record of `ino`.
fn file_keys(ino: u64) -> ([u8; KEY_BYTES], Vec<u8>) {
    let end = match ino.checked_add(1) {
        Some(next) => key(next, 0).to_vec(),
        None => vec![KEY_PREFIX + 1],
    };
    (key(ino, 0), end)
}

fn encode(length: u64, errno: Errno) -> [u8; VALUE_BYTES] {
    let mut value = [0u8; VALUE_BYTES];
    value[0] = VERSION;
    value[1..9].copy_from_slice(&length.to_le_bytes());
    value[9..].copy_from_slice(&(errno.get() as u32).to_le_bytes());
    value
}

/// Decodes and validates one record.
pub fn decode(key: &[u8], value: &[u8]) -> Result<LostRange, LostRecordError> {
    let fail = |reason: String| LostRecordError::Malformed {
        key: key.to_vec(),
        reason,
    };
    FRAME.check(key, value).map_err(fail)?;
    let ino = u64::from_be_bytes(word_at(key, 1));
    let start = u64::from_be_bytes(word_at(key, 9));
    let length = u64::from_le_bytes(word_at(value, 1));
    let errno = u32::from_le_bytes([value[9], value[10], value[11], value[12]]);
    if length == 0 {
        return Err(fail("an empty range".into()));
    }
    let end = start
        .checked_add(length)
        .ok_or_else(|| fail("the range wraps past the last byte".into()))?;
    let errno = i32::try_from(errno)
        .ok()
        .and_then(Errno::new)
        .ok_or_else(|| fail(format!("errno {errno} out of range")))?;
    Ok(LostRange {
        ino,
        start,
        end,
        errno: errno.get(),
    })
}

/// Removes every record of `ino` (the file is being deleted).
pub fn delete_all(transaction: &mut Transaction<'_>, ino: u64) -> Result<(), BtreeError> {
    let (start, end) = file_keys(ino);
    transaction.delete_range(TreeId::Meta, &start, Some(&end))
}

/// A change of one file's records, computed against the in-memory copy
/// and applied to it once staged in a transaction that committed.
#[derive(Debug)]
pub(crate) struct LostChange {
    ino: u64,
    /// The records starting in `from..to` are replaced by the ranges of
    /// `after` starting there; no other record changes.
    from: u64,
    to: u64,
    after: LostBytes,
}

impl LostChange {
    /// Adds the change to `transaction`.
    pub(crate) fn stage(&self, transaction: &mut Transaction<'_>) -> Result<(), BtreeError> {
        let end = if self.to == u64::MAX {
            file_keys(self.ino).1
        } else {
            key(self.ino, self.to).to_vec()
        };
        transaction.delete_range(TreeId::Meta, &key(self.ino, self.from), Some(&end))?;
        let errno = self.after.errno().unwrap_or(Errno::EIO);
        for (start, stop) in self.after.overlapping(self.from, self.to) {
            if start >= self.from {
                transaction.put(
                    TreeId::Meta,
                    &key(self.ino, start),
                    &encode(stop - start, errno),
                )?;
            }
        }
        Ok(())
    }
}

/// What an extent change does to its file's records (see the module
/// comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Nothing: the change writes or cuts no data (fallocate, say).
    Nothing,
    /// A writeback commits the data of these bytes (start, end; in order).
    Written(Vec<(u64, u64)>),
    /// Bytes `start..end` are cut off: a truncate or a punched hole.
    Cut(u64, u64),
}

/// One file's recorded bytes, and what its writeback in flight carries
/// no data for.
#[derive(Debug, Default)]
struct FileLoss {
    durable: LostBytes,
    /// The bytes lost in the pages a writeback took (see the module
    /// comment); `None` when none is known to fly.
    in_flight: Option<LostBytes>,
}

/// The in-memory copy of the records, per file (see the module comment).
#[derive(Debug, Default)]
pub struct LostData {
    files: Mutex<BTreeMap<u64, FileLoss>>,
    /// Entries in `files`: most filesystems never lose a byte this way,
    /// and every writeback asks.
    entries: AtomicUsize,
}

impl LostData {
    /// Reads every record of `trees`.
    pub fn load(trees: &Btrees) -> Result<LostData, LostRecordError> {
        let mut files: BTreeMap<u64, FileLoss> = BTreeMap::new();
        for entry in trees.range(TreeId::Meta, &[KEY_PREFIX], Some(&[KEY_PREFIX + 1])) {
            let (key, value) = entry?;
            let range = decode(&key, &value)?;
            let loss = files.entry(range.ino).or_default();
            let touching = loss
                .durable
                .overlapping(range.start.saturating_sub(1), range.end.saturating_add(1));
            if !touching.is_empty() {
                return Err(LostRecordError::Malformed {
                    key,
                    reason: "overlaps or touches the range before it".into(),
                });
            }
            let errno = Errno::new(range.errno).unwrap_or(Errno::EIO);
            loss.durable.lose(range.start, range.end, errno);
        }
        let entries = files.len();
        Ok(LostData {
            files: Mutex::new(files),
            entries: AtomicUsize::new(entries),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, FileLoss>> {
        // Each change is made whole under the lock before it is released.
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether no file has recorded lost bytes (or a refusal in flight).
    pub fn is_empty(&self) -> bool {
        self.entries.load(Ordering::Acquire) == 0
    }

    /// The recorded lost bytes of `ino`, for its page-cache state when it
    /// is made.
    pub(crate) fn recorded(&self, ino: u64) -> Option<LostBytes> {
        if self.is_empty() {
            return None;
        }
        let files = self.lock();
        let loss = files.get(&ino)?;
        (!loss.durable.is_empty()).then(|| loss.durable.clone())
    }

    /// The files with recorded bytes.
    pub(crate) fn files(&self) -> Vec<u64> {
        let files = self.lock();
        files
            .iter()
            .filter(|(_, loss)| !loss.durable.is_empty())
            .map(|(&ino, _)| ino)
            .collect()
    }

    /// Every recorded range, in order (fsck, tests).
    pub fn all(&self) -> Vec<LostRange> {
        let files = self.lock();
        files
            .iter()
            .flat_map(|(&ino, loss)| {
                let errno = loss.durable.errno().map_or(0, Errno::get);
                loss.durable
                    .ranges()
                    .into_iter()
                    .map(move |(start, end)| LostRange {
                        ino,
                        start,
                        end,
                        errno,
                    })
            })
            .collect()
    }

    /// Bytes `start..end` of `ino` were refused with `errno`: the change
    /// that records them. A writeback of `ino` flying now carries no data
    /// for them either.
    pub(crate) fn lose(&self, ino: u64, start: u64, end: u64, errno: Errno) -> LostChange {
        let mut files = self.lock();
        let loss = self.entry(&mut files, ino);
        loss.in_flight
            .get_or_insert_with(LostBytes::default)
            .lose(start, end, errno);
        let mut after = loss.durable.clone();
        after.lose(start, end, errno);
        if after.range_count() > MOST_RECORDS_PER_FILE {
            // A file's records are bounded (see the constant): the whole
            // set is written again, coarser.
            let after = after.coarsened(MOST_RECORDS_PER_FILE);
            return LostChange {
                ino,
                from: 0,
                to: u64::MAX,
                after,
            };
        }
        change(ino, &loss.durable, after, start, end)
    }

    /// [`LostData::lose`] recorded coarsely: one range from the first
    /// byte recorded or refused to the last replaces every record of
    /// `ino`, when a record more finds no room.
    pub(crate) fn lose_covering(&self, ino: u64, start: u64, end: u64, errno: Errno) -> LostChange {
        let mut files = self.lock();
        let loss = self.entry(&mut files, ino);
        loss.in_flight
            .get_or_insert_with(LostBytes::default)
            .lose(start, end, errno);
        let ranges = loss.durable.ranges();
        let first = ranges.first().map_or(start, |&(first, _)| first.min(start));
        let last = ranges.last().map_or(end, |&(_, last)| last.max(end));
        let mut after = LostBytes::default();
        after.lose(first, last, errno);
        change(ino, &loss.durable, after, first, last)
    }

    /// A writeback of `ino` took its pages, `lost` the bytes the cache held
    /// as lost then: its commits keep those recorded.
    pub(crate) fn take_off(&self, ino: u64, lost: &LostBytes) {
        if self.is_empty() {
            return;
        }
        if let Some(loss) = self.lock().get_mut(&ino) {
            loss.in_flight = Some(lost.clone());
        }
    }

    /// The writeback of `ino` landed.
    pub(crate) fn land(&self, ino: u64) {
        if self.is_empty() {
            return;
        }
        let mut files = self.lock();
        if let Some(loss) = files.get_mut(&ino) {
            loss.in_flight = None;
        }
        self.drop_if_empty(&mut files, ino);
    }

    /// The change `settle` makes to `ino`'s records, if any.
    pub(crate) fn settle(&self, ino: u64, settle: &Settle) -> Option<LostChange> {
        match settle {
            Settle::Nothing => None,
            Settle::Written(runs) => self.settle_written(ino, runs),
            Settle::Cut(start, end) => self.cut(ino, *start, *end),
        }
    }

    /// A writeback of `ino` commits the data of the bytes `runs` (start,
    /// end; in order): the change that clears their records, but for the
    /// bytes the pages it carried held no data for. `None`: nothing
    /// recorded changes.
    fn settle_written(&self, ino: u64, runs: &[(u64, u64)]) -> Option<LostChange> {
        let (first, last) = (runs.first()?.0, runs.last()?.1);
        if self.is_empty() {
            return None;
        }
        let files = self.lock();
        let loss = files.get(&ino)?;
        loss.durable.first_within(first, last)?;
        let mut after = loss.durable.clone();
        let errno = after.errno().unwrap_or(Errno::EIO);
        for &(start, end) in runs {
            let kept: Vec<(u64, u64)> = match &loss.in_flight {
                // Nothing known of what flew: keep everything.
                None => after.ranges_within(start, end),
                Some(in_flight) => in_flight.ranges_within(start, end),
            };
            let recorded = LostBytes::from_ranges(&after.ranges_within(start, end), errno);
            after.replace(start, end);
            for (from, to) in kept {
                for (kept_start, kept_end) in recorded.ranges_within(from, to) {
                    after.lose(kept_start, kept_end, errno);
                }
            }
        }
        Some(change(ino, &loss.durable, after, first, last))
    }

    /// Bytes `start..end` of `ino` are cut off (truncate, punch): the change
    /// that clears their records, `None` when none are recorded.
    fn cut(&self, ino: u64, start: u64, end: u64) -> Option<LostChange> {
        if self.is_empty() {
            return None;
        }
        let files = self.lock();
        let loss = files.get(&ino)?;
        loss.durable.first_within(start, end)?;
        let mut after = loss.durable.clone();
        after.replace(start, end);
        Some(change(ino, &loss.durable, after, start, end))
    }

    /// `change` committed: the copy follows.
    pub(crate) fn apply(&self, change: LostChange) {
        let mut files = self.lock();
        self.entry(&mut files, change.ino).durable = change.after;
        self.drop_if_empty(&mut files, change.ino);
    }

    /// `ino` was deleted (its records with it).
    pub(crate) fn forget_inode(&self, ino: u64) {
        if self.is_empty() {
            return;
        }
        let mut files = self.lock();
        if files.remove(&ino).is_some() {
            self.entries.store(files.len(), Ordering::Release);
        }
    }

    fn entry<'a>(&self, files: &'a mut BTreeMap<u64, FileLoss>, ino: u64) -> &'a mut FileLoss {
        if let std::collections::btree_map::Entry::Vacant(vacant) = files.entry(ino) {
            vacant.insert(FileLoss::default());
            self.entries.store(files.len(), Ordering::Release);
        }
        files.get_mut(&ino).expect("inserted above")
    }

    fn drop_if_empty(&self, files: &mut BTreeMap<u64, FileLoss>, ino: u64) {
        if files
            .get(&ino)
            .is_some_and(|loss| loss.durable.is_empty() && loss.in_flight.is_none())
        {
            files.remove(&ino);
            self.entries.store(files.len(), Ordering::Release);
        }
    }
}

/// The change from `before` to `after` of `ino`, both differing only in
/// bytes `start..end`: the records starting in that range widened to the
/// ranges of `before` that overlap or touch it (a merge or a split of
/// them rewrites them whole).
fn change(ino: u64, before: &LostBytes, after: LostBytes, start: u64, end: u64) -> LostChange {
    let touching = before.overlapping(start.saturating_sub(1), end.saturating_add(1));
    let from = touching
        .first()
        .map_or(start, |&(first, _)| first.min(start));
    let to = touching.last().map_or(end, |&(_, last)| last.max(end));
    LostChange {
        ino,
        from,
        to,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn recorded(data: &LostData) -> Vec<(u64, u64)> {
        data.all()
            .iter()
            .map(|range| (range.start, range.end))
            .collect()
    }

    fn lose(data: &LostData, start: u64, end: u64) {
        let change = data.lose(7, start, end, Errno::ENOSPC);
        data.apply(change);
    }

    #[test]
    fn a_writeback_keeps_the_bytes_its_pages_carried_no_data_for() {
        let data = LostData::default();
        lose(&data, 0, 2 * PAGE);
        data.land(7);
        // Page 0 written again before the writeback took its pages; page
        // 1 not: its page carries the older bytes read from the device.
        let live = LostBytes::from_ranges(&[(PAGE, 2 * PAGE)], Errno::ENOSPC);
        data.take_off(7, &live);
        let change = data.settle(7, &Settle::Written(vec![(0, 2 * PAGE)]));
        data.apply(change.expect("a change"));
        data.land(7);
        assert_eq!(recorded(&data), [(PAGE, 2 * PAGE)]);
    }

    #[test]
    fn a_refusal_while_a_writeback_flies_outlives_its_commit() {
        let data = LostData::default();
        lose(&data, 0, PAGE);
        data.land(7);
        // Page 0 rewritten; the writeback takes pages 0..3; the kernel's
        // write-back of page 2 is refused meanwhile.
        data.take_off(7, &LostBytes::default());
        lose(&data, 2 * PAGE, 3 * PAGE);
        let change = data.settle(7, &Settle::Written(vec![(0, 3 * PAGE)]));
        data.apply(change.expect("a change"));
        data.land(7);
        assert_eq!(recorded(&data), [(2 * PAGE, 3 * PAGE)]);
        // Cut away, nothing is left, and the file is forgotten.
        let change = data.settle(7, &Settle::Cut(PAGE, u64::MAX));
        data.apply(change.expect("a change"));
        assert!(recorded(&data).is_empty());
        assert!(data.is_empty());
    }

    #[test]
    fn a_file_keeps_at_most_its_bound_of_records_filling_the_smallest_gaps() {
        let data = LostData::default();
        // Every second page lost; the gap after page 40 is the smallest.
        for page in 0..=MOST_RECORDS_PER_FILE as u64 {
            let start = page * 2 * PAGE;
            let end = start + PAGE + u64::from(page == 40) * (PAGE - 1);
            lose(&data, start, end);
        }
        let records = recorded(&data);
        assert_eq!(records.len(), MOST_RECORDS_PER_FILE);
        assert!(records.contains(&(80 * PAGE, 83 * PAGE)), "{records:?}");
        let covered: u64 = records.iter().map(|(start, end)| end - start).sum();
        assert_eq!(covered, (MOST_RECORDS_PER_FILE as u64 + 1) * PAGE + PAGE);
    }

    #[test]
    fn a_covering_record_replaces_every_record_of_the_file() {
        let data = LostData::default();
        lose(&data, 100, 200);
        lose(&data, 300, 400);
        let change = data.lose_covering(7, 500, 600, Errno::ENOSPC);
        assert_eq!((change.from, change.to), (100, 600));
        data.apply(change);
        assert_eq!(recorded(&data), [(100, 600)]);
    }

    #[test]
    fn a_change_rewrites_every_record_it_merges_or_splits() {
        let data = LostData::default();
        lose(&data, 100, 200);
        lose(&data, 300, 400);
        // Merging both: the records starting at 100 and 300 are replaced.
        let change = data.lose(7, 150, 350, Errno::EIO);
        assert_eq!((change.from, change.to), (100, 400));
        data.apply(change);
        assert_eq!(recorded(&data), [(100, 400)]);
        let change = data.settle(7, &Settle::Cut(200, 250)).expect("a change");
        assert_eq!((change.from, change.to), (100, 400));
        data.apply(change);
        assert_eq!(recorded(&data), [(100, 200), (250, 400)]);
    }
}
