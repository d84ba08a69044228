//! Writes: bytes into the page cache, pages marked dirty, with the blocks
//! the write will need promised by the allocator first (so a full
//! filesystem refuses the write with ENOSPC, not its writeback later). A
//! partial edge page is first read from its extent; whole aligned runs go
//! in as large entries.

use super::*;

/// Settle-and-retry rounds of a write whose rewrite of a written block
/// found the rewrite tier's room taken by other writers' dirty rewrites.
const REWRITE_TRIES: usize = 8;

impl Files {
    /// The file's size as reads see it (including unwritten-back writes).
    pub fn size(&self, handle: &Handle) -> FileResult<u64> {
        let mut cache = self.cache.lock();
        Ok(self.state(&mut cache.inodes, handle.ino)?.size)
    }

    /// Writes `bytes` at `offset` into the page cache; returns the number
    /// of bytes written (all of them). Only a partial page not yet cached
    /// is read from the device, with the cache unlocked.
    pub fn write(&self, handle: &Handle, offset: u64, bytes: &[u8]) -> FileResult<usize> {
        let mut outcome = self.write_promised(handle, offset, bytes, false);
        // Pages in flight count as promised until they land, and their
        // writeback may free old blocks: settle it, then accept as much as
        // fits (a short write), or refuse with ENOSPC if nothing does. A
        // rewrite refused is not out of space for good: other writers' dirty
        // rewrites held the room, and their writeback gives it back, so it
        // settles and tries again, a few times, before it says ENOSPC.
        for _ in 0..REWRITE_TRIES {
            let Err(FileError::NoSpace { rewrite, .. }) = outcome else {
                return outcome;
            };
            let _ = self.writeback.writeback_all();
            outcome = self.write_promised(handle, offset, bytes, true);
            if !rewrite {
                break;
            }
        }
        outcome
    }

    /// [`Files::write`], once: every page the write makes dirty is promised
    /// a block first (delayed allocation), so data accepted here always has
    /// room at writeback. With too little room, `short` accepts the longest
    /// prefix that fits (at least one page), else it is `ENOSPC`.
    fn write_promised(
        &self,
        handle: &Handle,
        offset: u64,
        bytes: &[u8],
        short: bool,
    ) -> FileResult<usize> {
        let length = bytes.len() as u64;
        let end = checked_end(offset, length)?;
        if bytes.is_empty() {
            return Ok(0);
        }
        let ino = handle.ino;
        let first = offset / PAGE;
        let last = (end - 1) / PAGE;
        let partial = |index: u64| !(offset <= index * PAGE && (index + 1) * PAGE <= end);
        // Only the first and last pages can be partial. Those not cached
        // are read before anything changes, so a failed read leaves the
        // file as it was: with the cache unlocked, then used only if the
        // inode did not change meanwhile (a few tries, then under the lock
        // so a busy file cannot starve this write).
        let mut from_disk: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut read_at: Option<u64> = None;
        let mut tries = 0;
        let mut guard = loop {
            let mut guard = self.lock_settled(ino, first, last, false)?;
            let state = self.state(&mut guard.inodes, ino)?;
            let mut missing: Vec<u64> = [first, last]
                .into_iter()
                .filter(|&index| partial(index) && state.pages.load(index).is_none())
                .collect();
            missing.dedup();
            let current = read_at == Some(state.changes);
            if missing
                .iter()
                .all(|index| current && from_disk.contains_key(index))
            {
                break guard;
            }
            let changes = state.changes;
            tries += 1;
            from_disk.clear();
            if tries > 3 {
                for index in missing {
                    from_disk.insert(index, self.extents.read_block(ino, index)?);
                }
                break guard;
            }
            drop(guard);
            for index in missing {
                match self.extents.read_block(ino, index) {
                    Ok(block) => {
                        from_disk.insert(index, block);
                    }
                    // Stale extents can point at reused blocks: the error
                    // counts only if nothing changed.
                    Err(error) if self.changes_of(ino) == Some(changes) => return Err(error),
                    Err(_) => break,
                }
            }
            read_at = Some(changes);
        };
        let cache = &mut *guard;
        let state = self.state(&mut cache.inodes, ino)?;
        // Each page not dirty yet takes a promise; a cut falls on a page
        // boundary past the first page, so no new partial page appears.
        let allocator = &self.metadata.allocator;
        let promisable = allocator.data_available();
        let mut preallocated = BTreeSet::new();
        let mut rewritten = BTreeSet::new();
        let mut beyond = state.first_beyond_promise(
            first,
            last,
            &PromiseBudget::new_data(promisable, &preallocated),
        );
        if beyond.is_some() {
            // Out of promises: pages over blocks the file preallocated need
            // none (writeback fills those blocks in place), as long as the
            // records their writeback adds have room. Looked up only now,
            // so the common write never reads the extents.
            let extents = self.extents.overlapping(ino, first, last + 1)?;
            let room = allocator.conversions_available();
            preallocated = state
                .newly_dirtied(first, last)
                .into_iter()
                .filter(|&index| self.extents.preallocated_block(&extents, index).is_some())
                .take(usize::try_from(room).unwrap_or(usize::MAX))
                .collect();
            // Pages rewriting written blocks may use the rewrite tier: each
            // writeback frees the block it replaces (a page in flight too:
            // its flight's block is freed by the writeback of what comes
            // now).
            rewritten = state
                .not_dirty(first, last)
                .into_iter()
                .filter(|index| !preallocated.contains(index))
                .filter(|&index| self.extents.rewrites_block(&extents, index))
                .collect();
            let budget = if rewritten.is_empty() {
                PromiseBudget::new_data(promisable, &preallocated)
            } else {
                PromiseBudget {
                    new_pages: promisable,
                    preallocated: &preallocated,
                    rewritten: &rewritten,
                    rewrite_blocks: allocator.rewrite_room(),
                    // Its block, its records' share, its nodes.
                    rewrite_cost: 2 + REWRITE_NODE_BLOCKS,
                    new_cost: 2,
                }
            };
            beyond = state.first_beyond_promise(first, last, &budget);
        }
        let (bytes, end, last) = match beyond {
            None => (bytes, end, last),
            Some(cut) if short && cut > first => {
                let end = cut * PAGE;
                (&bytes[..(end - offset) as usize], end, cut - 1)
            }
            Some(cut) => {
                return Err(FileError::NoSpace {
                    ino,
                    promisable,
                    rewrite: rewritten.contains(&cut),
                })
            }
        };
        let mut index = first;
        while index <= last {
            // A whole aligned run of large-entry size goes in as one entry.
            let run_end = index + LARGE_PAGES;
            if index % LARGE_PAGES == 0 && offset <= index * PAGE && run_end * PAGE <= end {
                let source = (index * PAGE - offset) as usize..(run_end * PAGE - offset) as usize;
                state.put_dirty_large(
                    &mut cache.accounting,
                    index,
                    bytes[source].into(),
                    &preallocated,
                    &rewritten,
                );
                index = run_end;
                continue;
            }
            let page_start = index * PAGE;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE);
            let mut page: Vec<u8> = match state.page(index) {
                Some(cached) => cached.bytes().to_vec(),
                None => from_disk
                    .remove(&index)
                    .unwrap_or_else(|| vec![0; PAGE_BYTES]),
            };
            let source = (from - offset) as usize..(to - offset) as usize;
            let target = (from - page_start) as usize..(to - page_start) as usize;
            page[target].copy_from_slice(&bytes[source]);
            let backing = if preallocated.contains(&index) {
                Backing::Preallocated
            } else if rewritten.contains(&index) {
                Backing::Rewrite
            } else {
                Backing::Promise
            };
            state.put_dirty(&mut cache.accounting, index, page.into(), backing);
            index += 1;
        }
        state.lost.replace(offset, end);
        state.size = state.size.max(end);
        state.mtime = Some(Timestamp::now());
        state.changes += 1;
        Ok(bytes.len())
    }

    /// The page at `index` a truncate or punch zeroes part of, and whether
    /// it is dirty: cached, or read from its extent; `None` when the block
    /// is poisoned (its data is lost: there is nothing to zero, and the
    /// poison stays on the part the change keeps).
    pub(super) fn edge_page(
        &self,
        state: &InodeState,
        ino: u64,
        index: u64,
    ) -> FileResult<Option<(Vec<u8>, bool)>> {
        match state.page(index) {
            Some(cached) => Ok(Some((
                cached.bytes().to_vec(),
                state.pages.is_marked(index, Mark::Dirty),
            ))),
            None => match self.extents.read_block(ino, index) {
                Ok(page) => Ok(Some((page, false))),
                Err(FileError::Poisoned { .. }) => Ok(None),
                Err(error) => Err(error),
            },
        }
    }

    /// The change count of `ino`'s state, if it is loaded.
    fn changes_of(&self, ino: u64) -> Option<u64> {
        self.cache
            .lock()
            .inodes
            .get(&ino)
            .map(|state| state.changes)
    }
}
