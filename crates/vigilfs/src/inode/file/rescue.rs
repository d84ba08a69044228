//! Rescuing a file's data from under a media failure: whatever of it is
//! still in memory, or still reads back intact, is written to a new block
//! (data is copy-on-write), which drops the poison of those blocks in the
//! writeback's own transaction. What neither holds is lost, and stays
//! poisoned.
//!
//! The failure layer poisons the blocks first and rescues second, so a
//! rescue that fails half-way (no space, a failing write) leaves the lost
//! part poisoned rather than readable as stale or wrong bytes.

use super::{Backing, FileResult, Files, PAGES_PER_FILL};

/// Reads of an uncached block retried when the file changed meanwhile.
const TRIES: usize = 3;

/// What [`Files::rescue`] saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rescued {
    /// Blocks whose data was in the page cache (clean or dirty).
    pub(crate) from_cache: u64,
    /// Blocks read back intact from the device.
    pub(crate) from_device: u64,
    /// Whether the writeback that moves them to new blocks succeeded.
    pub(crate) written: bool,
}

impl Files {
    /// Saves what can be saved of file blocks `first..end` of `ino` (at
    /// most one fill's worth at a time is held: the range is one extent,
    /// at most 128 blocks): cached pages are kept and marked for
    /// writeback, uncached ones are read back (verified, poison or not)
    /// and cached dirty, then the inode is written back. Nothing is done
    /// without the blocks to promise the pages: the data stays where it is
    /// (poisoned), not half-moved.
    pub(crate) fn rescue(&self, ino: u64, first: u64, end: u64) -> FileResult<Rescued> {
        let mut rescued = Rescued::default();
        if first >= end || end - first > PAGES_PER_FILL {
            return Ok(rescued);
        }
        if self.metadata.allocator.data_available() < end - first {
            return Ok(rescued);
        }
        let mut in_memory: Vec<u64> = Vec::new();
        for _ in 0..TRIES {
            let changes = {
                let mut guard = self.lock_settled(ino, first, end - 1, false)?;
                let cache = &mut *guard;
                let state = self.state(&mut cache.inodes, ino)?;
                in_memory = state.hold_for_rescue(&mut cache.accounting, first, end);
                state.changes
            };
            // Read the rest with the cache unlocked, as a write reads its
            // partial pages, and keep it only if nothing changed meanwhile.
            let mut read_back: Vec<(u64, Vec<u8>)> = Vec::new();
            for block in (first..end).filter(|block| !in_memory.contains(block)) {
                if let Ok(bytes) = self.extents.read_block_despite_poison(ino, block) {
                    read_back.push((block, bytes));
                }
            }
            let mut guard = self.lock_settled(ino, first, end - 1, false)?;
            let cache = &mut *guard;
            let state = self.state(&mut cache.inodes, ino)?;
            if state.changes != changes {
                continue;
            }
            for (block, bytes) in read_back {
                if state.page(block).is_none() {
                    state.put_dirty(&mut cache.accounting, block, bytes.into(), Backing::Promise);
                    rescued.from_device += 1;
                }
            }
            break;
        }
        rescued.from_cache = in_memory.len() as u64;
        if rescued.from_cache + rescued.from_device > 0 {
            rescued.written = self.writeback.writeback_inode(ino).is_ok();
        }
        Ok(rescued)
    }
}
