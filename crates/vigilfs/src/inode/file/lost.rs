//! Data the device will not hold: bytes a file's writes gave it that are
//! lost, recorded (see [`crate::lost_data`]) so that reads of them fail
//! and fsyncs report the loss, in this mount and every later one, until
//! each byte is written again, truncated or punched away.
//!
//! Two ways lead here: the kernel's write-back of a shared mapping that
//! the mount refused ([`Files::cache_write_refused`]; the kernel does not
//! send those pages again), and pages whose writeback failed when the
//! mount ends ([`Files::record_never_written`]; nothing will write them
//! any more). In both, the device holds older bytes there, or none: a
//! read must not return them as the file's data, and the next opener
//! must hear of the loss, whoever heard of it before the unmount.

use errseq::Errno;

use super::{inode_key, FileResult, Files, TreeId};
use crate::inode::record::InodeRecord;
use crate::pagecache::PAGE;
use crate::writeback::pages_of;

impl Files {
    /// Whether `ino` holds bytes known lost (see the module comment).
    pub fn holds_lost(&self, ino: u64) -> bool {
        let mut cache = self.cache.lock();
        self.state(&mut cache.inodes, ino)
            .is_ok_and(|state| state.lost.errno().is_some())
    }

    /// The kernel's write-back of `length` bytes at `offset` of `ino` from
    /// a shared mapping was refused with `errno`: the kernel does not send
    /// those pages again, so their data is lost. The kernel tells the
    /// file's descriptors once itself (its own error word for the
    /// mapping), so the inode's word is left alone, or an fsync would hear
    /// it twice; the filesystem's word holds it, for the next `vigilfs
    /// sync` and for monitors. The bytes are remembered as lost until each
    /// is written again, truncated or punched away: reads of them fail
    /// ([`FileError::Lost`], rather than return older bytes), under
    /// [`FsyncErrors::UntilDurable`] every later fsync of the file fails
    /// with `errno`, as the data it promised never became durable (a
    /// syncfs hears of it once, through the filesystem's word: any user
    /// can leave lost data behind, and every sync of the filesystem must
    /// not fail for it), and [`Files::unwritten`] lists them. They are
    /// recorded too (see [`crate::lost_data`]), so later mounts know them
    /// as well; an error says the recording failed (this mount still
    /// knows).
    pub fn cache_write_refused(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        errno: i32,
    ) -> FileResult<()> {
        let errno = Errno::new(errno).unwrap_or(Errno::EIO);
        self.writeback.fs_errseq().set(errno);
        let end = {
            let mut cache = self.cache.lock();
            let state = self.state(&mut cache.inodes, ino)?;
            // Bytes past the end do not exist: a refused write did not
            // extend the file.
            let end = offset.saturating_add(length).min(state.size);
            if end <= offset {
                return Ok(());
            }
            state.lost.lose(offset, end, errno);
            end
        };
        let lost = &self.metadata.lost;
        // Most refusals come from a full filesystem, where a record more
        // may find no room (review 33: 20,000 small refusals, a third of
        // them unrecorded): then one record from the file's first lost
        // byte to its last replaces all of them, which frees room rather
        // than take it. It over-states the loss, never under-states it:
        // the bytes between read as lost after a remount until written
        // again.
        self.commit_lost(ino, None, || Some(lost.lose(ino, offset, end, errno)))
            .or_else(|_| {
                self.commit_lost(ino, None, || {
                    Some(lost.lose_covering(ino, offset, end, errno))
                })
            })
    }

    /// Commits the lost-data change `change` makes (if any), unless `ino`
    /// is gone; the file's size grows to `size` in the same transaction if
    /// it is smaller (lost bytes past the end would be no bytes at all).
    fn commit_lost(
        &self,
        ino: u64,
        size: Option<u64>,
        change: impl FnOnce() -> Option<crate::lost_data::LostChange>,
    ) -> FileResult<()> {
        let _records = self.metadata.lock_records();
        let mut transaction = self.metadata.trees.transaction();
        transaction.may_use_reserve();
        let Some(value) = transaction.get(TreeId::Inodes, &inode_key(ino))? else {
            // Deleted meanwhile: nothing of it is left to lose.
            return Ok(());
        };
        let mut record = InodeRecord::decode(&value)?;
        if let Some(size) = size.filter(|&size| size > record.size) {
            record.size = size;
            transaction.put(TreeId::Inodes, &inode_key(ino), &record.encode())?;
        }
        let change = change();
        if let Some(change) = &change {
            change.stage(&mut transaction)?;
        }
        transaction.commit()?;
        if let Some(change) = change {
            self.metadata.lost.apply(change);
        }
        Ok(())
    }

    /// Records the bytes of `ino` whose writeback failed and whose data is
    /// in no journal entry, as lost with `errno`, and the size its writes
    /// gave it: the mount ends without them (see the module comment). An
    /// error says the recording failed.
    ///
    /// Each such page is compared with its block on the device (zeros for
    /// a hole or past the end), and the bytes from its first differing
    /// byte to its last are lost, so the durable bytes before an append,
    /// or around a rewrite, in the same page stay readable (review 48: a
    /// 100-byte append made the fsynced bytes before it unreadable for
    /// good). One range a page, not one per differing run: a database
    /// page rewritten here and there made dozens, and a file's bounded
    /// records were used up by a page or two (review 49). A block that
    /// cannot be read is lost whole. Past the records a file may keep,
    /// [`crate::lost_data`] coarsens them, over-stating the loss (durable
    /// bytes between read as lost until rewritten) rather than serve any
    /// of it as the older bytes. Pages written with their journal entry
    /// before a flush failed are not lost: the unmount's own flush may
    /// still make them durable. Zeros past the old end are no loss, but
    /// the size they gave the file is kept (review 49: the file came back
    /// shorter).
    pub fn record_never_written(&self, ino: u64, errno: i32) -> FileResult<()> {
        let errno = Errno::new(errno).unwrap_or(Errno::EIO);
        let (pages, size): (Vec<(u64, Vec<u8>)>, u64) = {
            let mut cache = self.cache.lock();
            let state = self.state(&mut cache.inodes, ino)?;
            let entries: Vec<_> = state.pages.iter().collect();
            let pages = pages_of(&entries)
                .into_iter()
                .filter(|(index, _)| state.unclean(*index) && !state.unconfirmed.contains(index))
                .map(|(index, bytes)| (index, bytes.to_vec()))
                .collect();
            (pages, state.size)
        };
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (index, cached) in pages {
            let start = index * PAGE;
            let length = size.saturating_sub(start).min(PAGE) as usize;
            let on_device = self.extents.read_block(ino, index).ok();
            let differs = |at: &usize| {
                on_device
                    .as_ref()
                    .is_none_or(|block| block[*at] != cached[*at])
            };
            let (Some(first), Some(last)) =
                ((0..length).find(differs), (0..length).rev().find(differs))
            else {
                continue;
            };
            let (lost_start, lost_end) = (start + first as u64, start + last as u64 + 1);
            match ranges.last_mut() {
                Some(previous) if previous.1 == lost_start => previous.1 = lost_end,
                _ => ranges.push((lost_start, lost_end)),
            }
        }
        let lost = &self.metadata.lost;
        let size = Some(size);
        if ranges.is_empty() {
            return self.commit_lost(ino, size, || None);
        }
        for (start, end) in ranges {
            self.commit_lost(ino, size, || Some(lost.lose(ino, start, end, errno)))
                .or_else(|_| {
                    self.commit_lost(ino, size, || {
                        Some(lost.lose_covering(ino, start, end, errno))
                    })
                })?;
        }
        Ok(())
    }
}
