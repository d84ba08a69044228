//! Open files, open directories and lookup counts of a mounted filesystem.
//!
//! A file handle number names one open file description: the data path's
//! [`Handle`] (its two errseq cursors) and the access mode it was opened
//! with. A directory handle remembers where each entry it returned lies, so
//! readdir can resume from a small integer offset (what FUSE and
//! `telldir` want) even though entries are ordered by a 64-bit name hash
//! plus a collision index. Offsets 1 and 2 are `.` and `..`; entry `n`
//! returned through a handle has offset `n + 3`.
//!
//! Lookup counts are the kernel's references to inodes (each lookup,
//! create or readdirplus entry adds one; forget drops some). They are kept
//! so a transport can tell when nobody refers to an inode any more.
//!
//! Invariants: handle numbers are never reused within a mount; a handle's
//! cursors move only under its own mutex.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::error::{FsError, FsResult};
use crate::inode::{DirCookie, Handle};

/// How a file was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Opened for reading.
    pub read: bool,
    /// Opened for writing.
    pub write: bool,
    /// Writes go to the end of the file (`O_APPEND`).
    pub append: bool,
    /// Truncate to zero at open (`O_TRUNC`; needs `write`).
    pub truncate: bool,
}

impl OpenFlags {
    /// Decodes `open(2)` flags (`O_RDONLY`/`O_WRONLY`/`O_RDWR`,
    /// `O_APPEND`, `O_TRUNC`).
    pub fn from_libc(flags: i32) -> OpenFlags {
        let access = flags & libc::O_ACCMODE;
        OpenFlags {
            read: access == libc::O_RDONLY || access == libc::O_RDWR,
            write: access == libc::O_WRONLY || access == libc::O_RDWR,
            append: flags & libc::O_APPEND != 0,
            truncate: flags & libc::O_TRUNC != 0,
        }
    }
}

/// One open file description.
pub(super) struct OpenFile {
    pub(super) ino: u64,
    pub(super) flags: OpenFlags,
    pub(super) handle: Mutex<Handle>,
}

impl OpenFile {
    pub(super) fn handle(&self) -> MutexGuard<'_, Handle> {
        // Cursor updates are single stores: a poisoned lock is usable.
        self.handle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open directory.
pub(super) struct OpenDir {
    pub(super) ino: u64,
    positions: Mutex<Positions>,
}

/// The entries a directory handle returned, append-only so an offset once
/// handed out keeps naming the same entry.
#[derive(Default)]
struct Positions {
    /// Cookie of the entry at offset `index + 3`.
    cookies: Vec<DirCookie>,
    /// The offset of each cookie.
    offsets: HashMap<DirCookie, u64>,
}

impl OpenDir {
    fn new(ino: u64) -> OpenDir {
        OpenDir {
            ino,
            positions: Mutex::new(Positions::default()),
        }
    }

    /// Where to resume for a readdir at `offset`: `None` from the first
    /// entry, or after the cookie. `Err` for an offset never handed out.
    pub(super) fn resume_after(&self, offset: u64) -> FsResult<Option<DirCookie>> {
        if offset < 3 {
            return Ok(None);
        }
        let positions = lock(&self.positions);
        usize::try_from(offset - 3)
            .ok()
            .and_then(|index| positions.cookies.get(index).copied())
            .map(Some)
            .ok_or(FsError::Invalid(
                "a directory offset this handle never returned",
            ))
    }

    /// The offset of the entry at `cookie` (the same one each time it is
    /// returned through this handle).
    pub(super) fn offset_of(&self, cookie: DirCookie) -> u64 {
        let mut positions = lock(&self.positions);
        if let Some(&offset) = positions.offsets.get(&cookie) {
            return offset;
        }
        let offset = positions.cookies.len() as u64 + 3;
        positions.cookies.push(cookie);
        positions.offsets.insert(cookie, offset);
        offset
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tables; see the module comment.
#[derive(Default)]
pub(super) struct Handles {
    next: AtomicU64,
    files: RwLock<HashMap<u64, Arc<OpenFile>>>,
    dirs: RwLock<HashMap<u64, Arc<OpenDir>>>,
    lookups: Mutex<HashMap<u64, u64>>,
}

impl Handles {
    fn number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn add_file(&self, ino: u64, flags: OpenFlags, handle: Handle) -> u64 {
        let number = self.number();
        let file = Arc::new(OpenFile {
            ino,
            flags,
            handle: Mutex::new(handle),
        });
        self.files
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(number, file);
        number
    }

    pub(super) fn file(&self, number: u64) -> FsResult<Arc<OpenFile>> {
        self.files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&number)
            .cloned()
            .ok_or(FsError::BadHandle(number))
    }

    pub(super) fn remove_file(&self, number: u64) -> FsResult<Arc<OpenFile>> {
        self.files
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&number)
            .ok_or(FsError::BadHandle(number))
    }

    /// Whether an open file description of `ino` other than handle
    /// `except` may write it.
    pub(super) fn open_for_writing(&self, ino: u64, except: u64) -> bool {
        self.files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(&number, file)| number != except && file.ino == ino && file.flags.write)
    }

    pub(super) fn open_files(&self) -> usize {
        self.files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(super) fn add_dir(&self, ino: u64) -> u64 {
        let number = self.number();
        let dir = Arc::new(OpenDir::new(ino));
        self.dirs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(number, dir);
        number
    }

    pub(super) fn dir(&self, number: u64) -> FsResult<Arc<OpenDir>> {
        self.dirs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&number)
            .cloned()
            .ok_or(FsError::BadHandle(number))
    }

    /// Removes directory handle `number`; returns its directory.
    pub(super) fn remove_dir(&self, number: u64) -> FsResult<u64> {
        self.dirs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&number)
            .map(|dir| dir.ino)
            .ok_or(FsError::BadHandle(number))
    }

    /// Counts a lookup of `ino`; returns whether it is the only one.
    pub(super) fn looked_up(&self, ino: u64) -> bool {
        let mut lookups = lock(&self.lookups);
        let count = lookups.entry(ino).or_default();
        *count += 1;
        *count == 1
    }

    /// Drops `count` lookups of `ino`; returns whether that forgot its
    /// last (it had some, and has none left).
    pub(super) fn forget(&self, ino: u64, count: u64) -> bool {
        let mut lookups = lock(&self.lookups);
        let Some(known) = lookups.get_mut(&ino) else {
            return false;
        };
        *known = known.saturating_sub(count);
        if *known == 0 {
            lookups.remove(&ino);
            return true;
        }
        false
    }

    pub(super) fn lookups(&self, ino: u64) -> u64 {
        lock(&self.lookups).get(&ino).copied().unwrap_or(0)
    }

    /// Every inode with lookups not yet forgotten.
    pub(super) fn looked_up_inodes(&self) -> Vec<u64> {
        lock(&self.lookups).keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(hash: u64) -> DirCookie {
        DirCookie { hash, collision: 0 }
    }

    #[test]
    fn directory_offsets_keep_naming_the_same_entry() {
        let dir = OpenDir::new(1);
        assert_eq!(dir.resume_after(0).unwrap(), None);
        assert_eq!(dir.offset_of(cookie(10)), 3);
        assert_eq!(dir.offset_of(cookie(30)), 4);
        // An entry created since, sorting between them, gets a new offset;
        // the old ones are unchanged.
        assert_eq!(dir.offset_of(cookie(20)), 5);
        assert_eq!(dir.offset_of(cookie(10)), 3);
        assert_eq!(dir.resume_after(3).unwrap(), Some(cookie(10)));
        assert_eq!(dir.resume_after(4).unwrap(), Some(cookie(30)));
        assert!(dir.resume_after(99).is_err());
    }

    #[test]
    fn open_flags_decode_the_access_mode() {
        let flags = OpenFlags::from_libc(libc::O_WRONLY | libc::O_APPEND);
        assert!(!flags.read && flags.write && flags.append && !flags.truncate);
        let flags = OpenFlags::from_libc(libc::O_RDONLY);
        assert!(flags.read && !flags.write);
    }

    #[test]
    fn forget_never_goes_below_zero() {
        let handles = Handles::default();
        assert!(handles.looked_up(5), "the first");
        assert!(!handles.looked_up(5));
        assert!(!handles.forget(5, 1), "one left");
        assert!(handles.forget(5, 10), "the last");
        assert_eq!(handles.lookups(5), 0);
        assert!(!handles.forget(5, 1), "none to forget");
    }
}
