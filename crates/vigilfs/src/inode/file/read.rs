//! Reads: bytes from the page cache, the rest filled from the extents,
//! every block checked against its checksum. A read never returns bytes
//! it cannot vouch for: a failed or mismatched block is `EIO`, and bytes
//! recorded as lost fail even where older ones are cached. Fills reserve
//! their pages first, so concurrent reads of the same pages read the device
//! once and changes to those pages wait for the fill.

use super::*;

impl Files {
    /// Reads up to `length` bytes at `offset`; short at the end of the file,
    /// and at most [`MAX_READ_BYTES`]: the bytes are returned in memory, so
    /// a huge length must not become a huge allocation. At or past the end
    /// of the file it reads nothing, whatever the offset. A block that
    /// cannot be read or does not match its checksum is `EIO`.
    ///
    /// Cached pages are copied with the cache unlocked. Uncached ones are
    /// filled: a run of them (up to `PAGES_PER_FILL`) is reserved in the
    /// page index (locked entries, large where a whole aligned run is
    /// free), read from the device with the cache unlocked, and the
    /// reservations filled with what was read. A read reaching a page
    /// another read is filling waits for that fill instead of reading the
    /// device again; writes, truncates and punches over it wait too.
    pub fn read(&self, handle: &Handle, offset: u64, length: usize) -> FileResult<Vec<u8>> {
        let ino = handle.ino;
        let length = length.min(MAX_READ_BYTES);
        let mut guard = self.cache.lock();
        let end = offset
            .saturating_add(length as u64)
            .min(self.state(&mut guard.inodes, ino)?.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        // Lost bytes are not served, cached or not: what the cache holds
        // of them is older than what was lost.
        if let Some(byte) = self
            .state(&mut guard.inodes, ino)?
            .lost
            .first_within(offset, end)
        {
            return Err(FileError::Lost {
                ino,
                block: byte / PAGE,
            });
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        // The part of page `index` inside the range.
        let within = |index: u64| {
            let page_start = index * PAGE;
            (offset.max(page_start) - page_start) as usize
                ..(end.min(page_start + PAGE) - page_start) as usize
        };
        let last = (end - 1) / PAGE;
        let mut index = offset / PAGE;
        while index <= last {
            let state = self.state(&mut guard.inodes, ino)?;
            let mut hits = Vec::new();
            while let Some(cached) = (index + hits.len() as u64 <= last)
                .then(|| state.page(index + hits.len() as u64))
                .flatten()
            {
                hits.push(cached);
            }
            let gap = index + hits.len() as u64;
            if gap > last || !hits.is_empty() {
                drop(guard);
                for cached in &hits {
                    out.extend_from_slice(&cached.bytes()[within(index)]);
                    index += 1;
                }
                if index > last {
                    break;
                }
                guard = self.cache.lock();
                continue;
            }
            if state.fill_within(gap, gap).is_some() {
                guard = self.cache.wait(guard);
                continue;
            }
            // Uncached from `gap`: reserve up to the next entry.
            let stop = state
                .pages
                .find_conflict(gap..=last.min(gap + PAGES_PER_FILL - 1))
                .first()
                .map_or(last.min(gap + PAGES_PER_FILL - 1) + 1, |next| {
                    next.span.index()
                });
            let pages = Arc::clone(&state.pages);
            // Declared before the reservations, so it is dropped after them
            // even when unwinding: waiters wake to find them gone.
            let _wake_waiters = self.cache.wake_on_drop();
            let mut reserved = Vec::new();
            let mut at = gap;
            while at < stop {
                let order = if at % LARGE_PAGES == 0 && at + LARGE_PAGES <= stop {
                    LARGE_ORDER
                } else {
                    0
                };
                // Nothing is cached or reserved in `gap..stop`, and only
                // reads reserve, under the cache lock: this cannot wait.
                match pages.lock_or_reserve(at, order) {
                    Ok(reservation) => reserved.push(reservation),
                    Err(_) => break,
                }
                at += 1 << order;
            }
            // (Were nothing reserved, the page is read uncached.)
            let stop = if reserved.is_empty() { gap + 1 } else { at };
            state.fills += reserved.len();
            drop(guard);
            let run = self.extents.read_run(ino, gap, stop);
            guard = self.cache.lock();
            guard.complete_fill(ino, &pages, reserved, run.as_ref().ok());
            let (bytes, _) = run?;
            for (page, block) in (gap..stop).zip(bytes.chunks(PAGE_BYTES)) {
                out.extend_from_slice(&block[within(page)]);
            }
            index = stop;
        }
        Ok(out)
    }
}
