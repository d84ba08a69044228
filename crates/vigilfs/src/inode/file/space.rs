//! Size and allocation: truncate, fallocate (preallocate, keep size,
//! punch hole, zero range) and SEEK_DATA/SEEK_HOLE. Each change of the
//! block map is one transaction (or bounded batches for large files),
//! with the cached pages it affects dropped or zeroed first so the cache
//! never shows what the extents no longer hold.

use super::*;
use crate::lost_data::Settle;

impl Files {
    /// Sets the size of regular file `ino` to `size` (see the module
    /// comment): a shrink (or a truncate to the same size) drops the cached
    /// pages and the extents past the end and frees their blocks; a grow
    /// leaves a hole, and keeps the blocks `fallocate` reserved past the
    /// old end (`KEEP_SIZE`), as ext4 and XFS do: posix_fallocate's
    /// promise outlives a later ftruncate. The mtime and ctime become now.
    /// One transaction.
    pub fn truncate(&self, ino: u64, size: u64) -> FileResult<()> {
        checked_end(size, 0)?;
        let mut guard = self.lock_settled(ino, size / PAGE, u64::MAX, true)?;
        let cache = &mut *guard;
        let state = self.state(&mut cache.inodes, ino)?;
        // First file block wholly past the new end.
        let keep_blocks = size.div_ceil(PAGE);
        let shrink = size < state.size;
        let mut tail: Option<(u64, Page)> = None;
        let within = (size % PAGE) as usize;
        if shrink && within != 0 {
            let index = size / PAGE;
            // A poisoned tail block has no bytes to zero: it stays
            // poisoned (its data before the new size is lost too).
            if let Some((mut page, was_dirty)) = self.edge_page(state, ino, index)? {
                if was_dirty || page[within..].iter().any(|&byte| byte != 0) {
                    page[within..].fill(0);
                    tail = Some((index, page.into()));
                }
            }
        }
        let cut_from = if size > state.size {
            u64::MAX
        } else {
            keep_blocks
        };
        let (seq, freed) = self.commit_truncate(ino, size, cut_from, Timestamp::now())?;
        // Committed: now the cache follows. The time committed is newer
        // than the one pending writes gave the file: it must not be
        // overridden by it (in getattr, or at their writeback).
        state.mtime = None;
        state.changes += 1;
        state.lost.replace(size, u64::MAX);
        if shrink {
            state.split_at(&mut cache.accounting, keep_blocks);
            let gone: Vec<u64> = state
                .pages
                .iter_from(keep_blocks)
                .map(|(span, _)| span.index())
                .collect();
            for index in gone {
                state.drop_entry(&mut cache.accounting, index);
            }
            if let Some((index, page)) = tail {
                state.put_dirty(&mut cache.accounting, index, page, Backing::Promise);
            }
        }
        if size == 0 && state.size > 0 && self.auto_da_alloc() {
            // A file being rewritten in place (see `ordered`).
            self.write_before_next_commit(ino);
        }
        state.size = size;
        if let Some(seq) = seq {
            for run in freed {
                // A refused free means the block was already free: the
                // allocator keeps it out of use and counts it.
                let _ = self.metadata.allocator.free_data(run, seq);
            }
        }
        Ok(())
    }

    /// The truncate transaction: extents from file block `cut_from` on cut
    /// off (rmap records to match; none for `u64::MAX`), size and times
    /// set. Returns the seq and the blocks released.
    fn commit_truncate(
        &self,
        ino: u64,
        size: u64,
        cut_from: u64,
        time: Timestamp,
    ) -> FileResult<(Option<u64>, Vec<BlockRun>)> {
        let mut before = if cut_from == u64::MAX {
            BTreeMap::new()
        } else {
            self.extents.overlapping(ino, cut_from, u64::MAX)?
        };
        let mut freed = Vec::new();
        // Many extents past the end go first, from the last, in bounded
        // transactions (a crash between them leaves the size and a file
        // whose tail reads as zeros: the truncate was going to cut it).
        // Their blocks are freed with the last transaction's seq.
        while before.len() > PAGES_PER_TRANSACTION {
            let split_at = *before
                .keys()
                .nth(before.len() - PAGES_PER_TRANSACTION)
                .expect("more entries than that");
            let cut = before.split_off(&split_at);
            for extent in cut.values() {
                freed.push(BlockRun::new(extent.physical, u64::from(extent.blocks())));
            }
            self.extents.commit_change(
                ino,
                &cut,
                &BTreeMap::new(),
                Space::Reserve,
                &Settle::Nothing,
                |_| {},
            )?;
        }
        let mut after = before.clone();
        punch(&mut after, cut_from, u64::MAX, &mut freed);
        let seq = self.extents.commit_change(
            ino,
            &before,
            &after,
            Space::Reserve,
            &Settle::Cut(size, u64::MAX),
            |record| {
                record.size = size;
                record.mtime = time;
                record.ctime = time;
            },
        )?;
        Ok((seq, freed))
    }

    /// Allocates or deallocates file blocks of `offset..offset + length`
    /// (see the module comment): [`FallocateMode::ALLOCATE`], optionally
    /// with [`FallocateMode::KEEP_SIZE`], `PUNCH_HOLE | KEEP_SIZE`, or
    /// `ZERO_RANGE` (optionally with `KEEP_SIZE`). Any other mode is `EOPNOTSUPP`, a zero
    /// length `EINVAL`, too few free blocks `ENOSPC`. One transaction per
    /// `PAGES_PER_TRANSACTION` blocks of the range (a failure leaves the
    /// pieces before it done, as Linux filesystems may); like truncate,
    /// not a durability point.
    pub fn fallocate(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        mode: FallocateMode,
    ) -> FileResult<()> {
        let keep_size = mode.contains(FallocateMode::KEEP_SIZE);
        let action = FallocateMode(mode.bits() & !FallocateMode::KEEP_SIZE.bits());
        let (punch_hole, zero_range) = if action == FallocateMode::ALLOCATE {
            (false, false)
        } else if action == FallocateMode::PUNCH_HOLE {
            if !keep_size {
                return Err(FileError::NotSupported {
                    what: "punching a hole without FALLOC_FL_KEEP_SIZE",
                });
            }
            (true, false)
        } else if action == FallocateMode::ZERO_RANGE {
            (false, true)
        } else {
            return Err(FileError::NotSupported {
                what: "this fallocate mode",
            });
        };
        if length == 0 {
            return Err(FileError::InvalidRange { offset, length });
        }
        let end = checked_end(offset, length)?;
        if !punch_hole {
            // Refuse up front what cannot fit, so ENOSPC changes nothing
            // (short of a race with other allocations).
            let wanted = self.hole_blocks(ino, offset / PAGE, end.div_ceil(PAGE))?;
            let mut space = self.metadata.allocator.status();
            let could_fit = wanted <= space.data_available.saturating_add(space.promised_blocks);
            if wanted > space.data_available && space.promised_blocks > 0 && could_fit {
                // Dirty pages hold the room (a rewrite needs a new block
                // until its writeback frees the old one, data being
                // copy-on-write): written back, they give it back. As a
                // write does, nobody hears ENOSPC before that. They give
                // back no more than they were promised: a range larger
                // than that is refused without the wait.
                let _ = self.writeback.writeback_all();
                space = self.metadata.allocator.status();
            }
            if wanted > space.data_available {
                return Err(FileError::Allocate(AllocError::NoSpace {
                    requested: wanted,
                    free: space.data_available,
                    pending: space.pending_blocks,
                }));
            }
        }
        if punch_hole {
            return self.punch_range(ino, offset, end);
        }
        if zero_range {
            // The data in range goes (the partial edge pages are zeroed),
            // then the whole range is allocated again below.
            self.punch_range(ino, offset, end)?;
        }
        // One transaction per PAGES_PER_TRANSACTION blocks, so any range
        // fits the journal (its blocks were counted above: the range is
        // bounded by the free space); the pieces meet at block boundaries,
        // so only the range's own edges are partial pages.
        for (start, stop) in pieces(offset, end) {
            match self.allocate_range(ino, start, stop, keep_size) {
                // Others' dirty pages took the room since the check above:
                // their writeback gives it back (see there).
                Err(FileError::Allocate(AllocError::NoSpace { .. }))
                    if self.metadata.allocator.status().promised_blocks > 0 =>
                {
                    let _ = self.writeback.writeback_all();
                    self.allocate_range(ino, start, stop, keep_size)?;
                }
                outcome => outcome?,
            }
        }
        Ok(())
    }

    /// `PUNCH_HOLE | KEEP_SIZE` over `offset..end`, in bounded pieces, and
    /// only where there is something to punch: the range is clamped to the
    /// file's data (its size, or its last extent past it), and only pieces
    /// holding an extent, a cached page or a partial edge page are visited,
    /// so the cost follows the file, not the range asked for (a punch of
    /// 2^50 bytes on a small file is one piece). Nothing at all to punch
    /// below the size still sets the times, as Linux does.
    fn punch_range(&self, ino: u64, offset: u64, end: u64) -> FileResult<()> {
        let size = self.size_of(ino)?;
        let extents = self
            .extents
            .overlapping(ino, offset / PAGE, end.div_ceil(PAGE))?;
        let extents_end = extents
            .iter()
            .map(|(at, extent)| (at + u64::from(extent.blocks())) * PAGE)
            .max()
            .unwrap_or(0);
        // Whole pages: the last page's bytes past the size are the file's
        // too (zeros), so punching all of it drops it rather than zeroing.
        let end = end.min((size.div_ceil(PAGE) * PAGE).max(extents_end));
        if offset >= end {
            return Ok(());
        }
        let piece_bytes = PAGES_PER_TRANSACTION as u64 * PAGE;
        let piece_of = |byte: u64| byte / piece_bytes;
        let mut wanted: BTreeSet<u64> = BTreeSet::new();
        wanted.insert(piece_of(offset));
        wanted.insert(piece_of(end - 1));
        for (at, extent) in &extents {
            let first = (at * PAGE).max(offset);
            let last = ((at + u64::from(extent.blocks())) * PAGE).min(end) - 1;
            wanted.extend(piece_of(first)..=piece_of(last));
        }
        wanted.extend(
            self.cached_pages_within(ino, offset / PAGE, (end - 1) / PAGE)
                .into_iter()
                .map(|page| piece_of(page * PAGE)),
        );
        for piece in wanted {
            let start = (piece * piece_bytes).max(offset);
            let stop = ((piece + 1) * piece_bytes).min(end);
            self.punch_hole(ino, start, stop)?;
        }
        Ok(())
    }

    /// The size of `ino` as reads see it.
    fn size_of(&self, ino: u64) -> FileResult<u64> {
        let mut cache = self.cache.lock();
        Ok(self.state(&mut cache.inodes, ino)?.size)
    }

    /// The first page of each cached entry of `ino` holding a page in
    /// `first..=last`.
    fn cached_pages_within(&self, ino: u64, first: u64, last: u64) -> Vec<u64> {
        let cache = self.cache.lock();
        let Some(state) = cache.inodes.get(&ino) else {
            return Vec::new();
        };
        state
            .pages
            .iter_from(first)
            .map(|(span, _)| span.index().max(first))
            .take_while(|&index| index <= last)
            .collect()
    }

    /// How many blocks of `first..end` of `ino` no extent maps.
    fn hole_blocks(&self, ino: u64, first: u64, end: u64) -> FileResult<u64> {
        let existing = self.extents.overlapping(ino, first, end)?;
        Ok(holes_between(&existing, first, end)
            .iter()
            .map(|(start, stop)| stop - start)
            .sum())
    }

    /// Mode 0 of [`Files::fallocate`]: the holes of `offset..end` (whole
    /// blocks) get unwritten extents; the size grows unless `keep_size`.
    /// The times are set even when nothing was missing, as ext4 sets them
    /// (review 54: a range already written kept its times).
    fn allocate_range(&self, ino: u64, offset: u64, end: u64, keep_size: bool) -> FileResult<()> {
        let first = offset / PAGE;
        let end_block = end.div_ceil(PAGE);
        let mut guard = self.lock_settled(ino, first, end_block - 1, true)?;
        let state = self.state(&mut guard.inodes, ino)?;
        let existing = self.extents.overlapping(ino, first, end_block)?;
        let holes = holes_between(&existing, first, end_block);
        let wanted: u64 = holes.iter().map(|(start, stop)| stop - start).sum();
        let runs = if wanted == 0 {
            Vec::new()
        } else {
            self.metadata.allocator.allocate_data(wanted, 0)?
        };
        let added = unwritten_extents(&holes, &runs);
        let time = Timestamp::now();
        let pending_size = state.size;
        let committed = self.extents.commit_change(
            ino,
            &BTreeMap::new(),
            &added,
            Space::Ordinary,
            &Settle::Nothing,
            |record| {
                // The size pending writes set is committed here too, so their
                // pending time can be dropped below.
                record.size = record.size.max(pending_size);
                if !keep_size {
                    record.size = record.size.max(end);
                }
                record.mtime = time;
                record.ctime = time;
            },
        );
        if let Err(error) = committed {
            self.metadata.allocator.free_unreferenced(&runs);
            return Err(error);
        }
        // Newer than the time pending writes gave the file (see truncate).
        state.mtime = None;
        state.changes += 1;
        if !keep_size {
            state.size = state.size.max(end);
        }
        Ok(())
    }

    /// `PUNCH_HOLE | KEEP_SIZE` of [`Files::fallocate`] over `offset..end`.
    fn punch_hole(&self, ino: u64, offset: u64, end: u64) -> FileResult<()> {
        let mut guard = self.lock_settled(ino, offset / PAGE, (end - 1) / PAGE, true)?;
        let cache = &mut *guard;
        let state = self.state(&mut cache.inodes, ino)?;
        // Blocks wholly inside the range; the pages at either edge (when
        // partial) keep their bytes outside it.
        let first_whole = offset.div_ceil(PAGE);
        let end_whole = (end / PAGE).max(first_whole);
        let mut edges = BTreeSet::new();
        if offset % PAGE != 0 {
            edges.insert(offset / PAGE);
        }
        if end % PAGE != 0 {
            edges.insert((end - 1) / PAGE);
        }
        // Read the edge pages before changing anything, so a failed read
        // leaves the file as it was.
        let mut zeroed: Vec<(u64, Page)> = Vec::new();
        for index in edges {
            // A poisoned edge block keeps its poison, and nothing to zero.
            let Some((mut page, was_dirty)) = self.edge_page(state, ino, index)? else {
                continue;
            };
            let page_start = index * PAGE;
            let from = (offset.max(page_start) - page_start) as usize;
            let to = (end.min(page_start + PAGE) - page_start) as usize;
            if was_dirty || page[from..to].iter().any(|&byte| byte != 0) {
                page[from..to].fill(0);
                zeroed.push((index, page.into()));
            }
        }
        let before = if first_whole < end_whole {
            self.extents.overlapping(ino, first_whole, end_whole)?
        } else {
            BTreeMap::new()
        };
        let mut after = before.clone();
        let mut freed = Vec::new();
        punch(&mut after, first_whole, end_whole, &mut freed);
        let time = Timestamp::now();
        // The size writes not yet written back gave the file goes into this
        // transaction: the punch may drop the very pages that carried it,
        // and with them the writeback that would have recorded it.
        let size = state.size;
        let seq = self.extents.commit_change(
            ino,
            &before,
            &after,
            Space::Reserve,
            &Settle::Cut(offset, end),
            |record| {
                record.size = record.size.max(size);
                record.mtime = time;
                record.ctime = time;
            },
        )?;
        // Committed: now the cache follows, the time too.
        state.mtime = None;
        state.changes += 1;
        state.split_at(&mut cache.accounting, first_whole);
        state.split_at(&mut cache.accounting, end_whole);
        let gone: Vec<u64> = state
            .pages
            .iter_from(first_whole)
            .map(|(span, _)| span.index())
            .take_while(|&index| index < end_whole)
            .collect();
        for index in gone {
            state.drop_entry(&mut cache.accounting, index);
        }
        state.lost.replace(offset, end);
        for (index, page) in zeroed {
            state.put_dirty(&mut cache.accounting, index, page, Backing::Promise);
        }
        if let Some(seq) = seq {
            for run in freed {
                // A refused free means the block was already free: the
                // allocator keeps it out of use and counts it.
                let _ = self.metadata.allocator.free_data(run, seq);
            }
        }
        Ok(())
    }

    /// `SEEK_DATA` or `SEEK_HOLE` from `offset` (Linux semantics, in block
    /// units): data is a block with a written extent or a cached page, dirty
    /// or clean; an unwritten extent without a cached page is a hole, and
    /// so is the end of the file. `offset` itself is returned when it lies
    /// in what is sought. At or past the size, or with no data after
    /// `offset`, `ENXIO`.
    pub fn seek_data_hole(&self, ino: u64, offset: u64, whence: Seek) -> FileResult<u64> {
        let mut guard = self.cache.lock();
        let state = self.state(&mut guard.inodes, ino)?;
        let size = state.size;
        let what = match whence {
            Seek::Data => "data",
            Seek::Hole => "hole",
        };
        if offset >= size {
            return Err(FileError::NoSuchOffset { ino, offset, what });
        }
        let start = offset / PAGE;
        let end_block = size.div_ceil(PAGE);
        let mut runs: Vec<(u64, u64)> = self
            .extents
            .overlapping(ino, start, end_block)?
            .into_iter()
            .filter(|(_, extent)| extent.flags & Extent::UNWRITTEN == 0)
            .map(|(at, extent)| (at, at + u64::from(extent.blocks())))
            .collect();
        runs.extend(
            state
                .pages
                .iter_from(start)
                .map(|(span, _)| (span.index(), span.last() + 1))
                .take_while(|&(at, _)| at < end_block),
        );
        // The first stretch of data at or after `start`, runs merged.
        runs.sort_unstable();
        let mut first_data: Option<(u64, u64)> = None;
        for (run_start, run_end) in runs {
            let (run_start, run_end) = (run_start.max(start), run_end.min(end_block));
            if run_start >= run_end {
                continue;
            }
            match &mut first_data {
                None => first_data = Some((run_start, run_end)),
                Some((_, stretch_end)) if run_start <= *stretch_end => {
                    *stretch_end = (*stretch_end).max(run_end);
                }
                Some(_) => break,
            }
        }
        match (whence, first_data) {
            (Seek::Data, None) => Err(FileError::NoSuchOffset { ino, offset, what }),
            (Seek::Data, Some((data_start, _))) => Ok(offset.max(data_start * PAGE)),
            (Seek::Hole, Some((data_start, data_end))) if data_start == start => {
                Ok((data_end * PAGE).min(size))
            }
            (Seek::Hole, _) => Ok(offset),
        }
    }
}
