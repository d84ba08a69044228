//! Completing a fill: the reservations a read made, filled with what it
//! read from the device, or dropped.
//!
//! A read reserves the uncached pages it needs under the cache lock
//! (locked entries without a value, one order-4 reservation per whole
//! aligned run), reads the device with the lock dropped, and comes back
//! here. Reservations whose pages are all data become clean entries;
//! holes and unwritten blocks are never cached (they are not data for
//! SEEK_DATA), so a large reservation with a hole inside is dropped and
//! its data pages cached one by one.

use std::sync::Arc;

use xarray::{EntryGuard, XArray};

use super::{Cache, Page, PAGE, PAGE_BYTES};

impl Cache {
    /// Fills the reservations a read made over `ino`'s pages with the
    /// blocks it read (`None`: the read failed, and they are abandoned).
    /// Only blocks of written extents are cached: a cached page counts as
    /// data for SEEK_DATA, and holes and unwritten blocks must not. A
    /// large reservation with a hole inside is abandoned and its data
    /// pages cached one by one. Nothing is cached if the inode was
    /// forgotten meanwhile.
    pub(crate) fn complete_fill(
        &mut self,
        ino: u64,
        pages: &Arc<XArray<Page>>,
        reserved: Vec<EntryGuard<'_, Page>>,
        run: Option<&(Vec<u8>, Vec<bool>)>,
    ) {
        let Cache { inodes, accounting } = self;
        let Some(state) = inodes
            .get_mut(&ino)
            .filter(|state| Arc::ptr_eq(&state.pages, pages))
        else {
            return;
        };
        state.fills -= reserved.len();
        let Some((bytes, data)) = run else {
            return;
        };
        let first = reserved
            .first()
            .map_or(0, |reservation| reservation.span().index());
        let block = |page: u64| ((page - first) * PAGE) as usize;
        for mut reservation in reserved {
            let span = reservation.span();
            let is_data = |page: u64| data[(page - first) as usize];
            if (span.index()..=span.last()).all(is_data) {
                let entry: Page =
                    bytes[block(span.index())..block(span.last()) + PAGE_BYTES].into();
                reservation.replace(entry);
                drop(reservation);
                accounting.cached_pages += span.size();
                accounting.clock.push_back((ino, span.index()));
                continue;
            }
            drop(reservation);
            for page in (span.index()..=span.last()).filter(|&page| is_data(page)) {
                let entry: Page = bytes[block(page)..block(page) + PAGE_BYTES].into();
                state.put_clean(accounting, page, entry);
            }
        }
        self.evict_over_budget();
    }
}
