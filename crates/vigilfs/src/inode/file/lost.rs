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
        self.commit_lost(ino, None, || lost.lose(ino, offset, end, errno))
            .or_else(|_| {
                self.commit_lost(ino, None, || lost.lose_covering(ino, offset, end, errno))
            })
    }

    /// Commits the lost-data change `change` makes, unless `ino` is gone;
    /// the file's size grows to `size` in the same transaction if it is
    /// smaller (lost bytes past the end would be no bytes at all).
    fn commit_lost(
        &self,
        ino: u64,
        size: Option<u64>,
        change: impl FnOnce() -> crate::lost_data::LostChange,
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
        change.stage(&mut transaction)?;
        transaction.commit()?;
        self.metadata.lost.apply(change);
        Ok(())
    }

    /// Records the bytes of `ino` whose writeback failed and whose data is
    /// in no journal entry, as lost with `errno`: the mount ends without
    /// them (see the module comment). Returns the bytes it could not
    /// record (see below); an error says the recording failed.
    ///
    /// Only bytes that differ from what the device would give back are
    /// lost: each such page is compared with its block on the device (or
    /// with zeros, for a hole or past the end), so the durable bytes of a
    /// partly rewritten page, or an append's page, stay readable (review
    /// 48: a 100-byte append made the fsynced bytes before it unreadable
    /// for good). A block that cannot be read counts as different. A file
    /// keeps at most the records [`crate::lost_data`] allows; the ranges
    /// past them are left unrecorded rather than merged over durable bytes
    /// between them (the file's fsyncs still report its loss, and its
    /// event named it). Pages written with their journal entry before a
    /// flush failed are not lost: the unmount's own flush may still make
    /// them durable.
    pub fn record_never_written(&self, ino: u64, errno: i32) -> FileResult<u64> {
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
            let differs = |at: usize| {
                on_device
                    .as_ref()
                    .is_none_or(|block| block[at] != cached[at])
            };
            let mut at = 0;
            while at < length {
                if !differs(at) {
                    at += 1;
                    continue;
                }
                let first = at;
                while at < length && differs(at) {
                    at += 1;
                }
                let (run_start, run_end) = (start + first as u64, start + at as u64);
                match ranges.last_mut() {
                    Some(last) if last.1 == run_start => last.1 = run_end,
                    _ => ranges.push((run_start, run_end)),
                }
            }
        }
        let lost = &self.metadata.lost;
        // The size the writes gave the file, which its failed writeback
        // did not record: the lost bytes are the file's, unreadable, not
        // bytes past its end.
        let size = Some(size);
        let mut unrecorded = 0;
        for (start, end) in ranges {
            match lost.lose_if_room(ino, start, end, errno) {
                Some(change) => self.commit_lost(ino, size, || change)?,
                None => unrecorded += end - start,
            }
        }
        Ok(unrecorded)
    }
}
