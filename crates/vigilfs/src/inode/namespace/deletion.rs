//! Taking inodes away: unlink and rmdir, the last link of an inode and
//! what goes with it (extents, rmap records, extended attributes, parent
//! and symlink records), and orphans — inodes unlinked while open, kept
//! until their last close or deleted at the next mount.
//!
//! Deletions may use the space kept back from ordinary transactions
//! ([`Namespace::freeing_transaction`]), so a full filesystem can always be
//! emptied; a file too large to delete in one transaction becomes an
//! orphan first and is deleted in bounded batches.

use std::sync::PoisonError;

use super::records::{
    check_name, count_live_inodes, is_empty_directory, prefixed_key, probe, read_inode,
    require_directory, require_inode, touch_directory, write_inode,
};
use super::*;

pub(super) fn rmap_error(error: RmapError) -> NamespaceError {
    match error {
        RmapError::Btree(error) => NamespaceError::from(error),
        other => NamespaceError::Corrupt(format!("rmap: {other}")),
    }
}

/// Deletes every extent of `ino` and its rmap record; collects the blocks
/// they held into `freed`.
pub(super) fn delete_extents(
    transaction: &mut Transaction<'_>,
    ino: u64,
    limit: usize,
    freed: &mut Vec<BlockRun>,
) -> NamespaceResult<bool> {
    let batch = first_extents(transaction, ino, limit)?;
    let remain = batch.len() > limit;
    for (key, value) in batch.into_iter().take(limit) {
        let extent = Extent::decode(&value)
            .map_err(|error| corrupt(format!("inode {ino} extent"), error))?;
        let offset = ExtentKey::decode(&key)
            .map_err(|error| corrupt(format!("inode {ino} extent key"), error))?
            .offset;
        transaction.delete(TreeId::Extents, &key)?;
        rmap::remove(transaction, extent.physical).map_err(rmap_error)?;
        // Its poison goes with it (a run never spans two extents).
        poison::delete_within(
            transaction,
            ino,
            offset,
            offset + u64::from(extent.blocks()),
        )?;
        freed.push(BlockRun::new(extent.physical, u64::from(extent.blocks())));
    }
    Ok(remain)
}

/// The first `limit + 1` extent records of `ino` (one more than asked
/// for: whether more than `limit` exist).
pub(super) fn first_extents(
    transaction: &Transaction<'_>,
    ino: u64,
    limit: usize,
) -> NamespaceResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let (start, end) = ExtentKey::file_range(ino);
    Ok(transaction.scan(
        TreeId::Extents,
        &start,
        end.as_ref().map(|end| &end[..]),
        limit.saturating_add(1),
    )?)
}

/// Whether `ino` has more than `limit` extents: too many to delete in the
/// transaction that drops its last link.
pub(super) fn has_more_extents_than(
    transaction: &Transaction<'_>,
    ino: u64,
    limit: usize,
) -> NamespaceResult<bool> {
    Ok(first_extents(transaction, ino, limit)?.len() > limit)
}

/// Deletes inode `ino` (a `kind`) and everything hanging off it: its
/// extents (blocks collected into `freed`), its parent or symlink record,
/// its orphan record, its extended attributes.
pub(super) fn delete_inode(
    transaction: &mut Transaction<'_>,
    ino: u64,
    kind: FileType,
    freed: &mut Vec<BlockRun>,
) -> NamespaceResult<()> {
    transaction.delete(TreeId::Inodes, &inode_key(ino))?;
    count_live_inodes(transaction, -1)?;
    xattr::delete_all(transaction, ino)?;
    match kind {
        FileType::Directory => {
            transaction.delete(TreeId::Meta, &prefixed_key(PARENT_PREFIX, ino))?;
            transaction.delete(TreeId::Meta, &prefixed_key(ORPHAN_PREFIX, ino))?;
        }
        FileType::Symlink => {
            delete_symlink_target(transaction, ino)?;
        }
        _ => {
            // Callers have made sure few remain (see drop_link).
            while delete_extents(transaction, ino, EXTENTS_PER_TRANSACTION, freed)? {}
            transaction.delete(TreeId::Meta, &prefixed_key(ORPHAN_PREFIX, ino))?;
            lost_data::delete_all(transaction, ino)?;
        }
    }
    Ok(())
}

/// The entry `name` of directory `parent` that an unlink or rmdir is to
/// remove, refused if the inode it names may not lose it.
fn entry_to_remove(
    transaction: &Transaction<'_>,
    parent: u64,
    name: &[u8],
) -> NamespaceResult<(DirentKey, Dirent)> {
    require_directory(transaction, parent)?;
    let (key, dirent) = probe(transaction, parent, name)?
        .found
        .ok_or(NamespaceError::NotFound)?;
    refuse_if_pinned(transaction, dirent.child)?;
    Ok((key, dirent))
}

/// Drops one link to `ino` (an entry naming it is going). A directory's
/// only link is its entry: the inode and its parent record go, unless it
/// is open (`open`): then it becomes an orphan (link count 0, an orphan
/// record) until its last close. A non-directory goes with its last link,
/// and its extents (collected into `freed`) with it — unless it is open:
/// then it becomes an orphan, with no links and an orphan record, until its
/// last close. A file with more extents, or an inode with more extended
/// attributes, than one transaction should delete becomes an orphan too,
/// for [`Namespace::delete_if_orphan`] to delete in batches after the
/// commit. Returns the inode if it was deleted.
/// Refuses to remove, rename or replace the entry naming `ino` when the
/// inode is immutable or append-only (`may_delete`). Checked here, in the
/// transaction that reads the entry anyway, so an unlink costs no second
/// lookup.
pub(super) fn refuse_if_pinned(transaction: &Transaction<'_>, ino: u64) -> NamespaceResult<()> {
    if inode_flags::is_pinned(&require_inode(transaction, ino)?) {
        return Err(NamespaceError::NotPermitted(
            "an immutable or append-only inode cannot be removed or renamed",
        ));
    }
    Ok(())
}

pub(super) fn drop_link(
    transaction: &mut Transaction<'_>,
    ino: u64,
    time: Timestamp,
    open: bool,
    freed: &mut Vec<BlockRun>,
) -> NamespaceResult<Option<u64>> {
    let mut record = require_inode(transaction, ino)?;
    let kind = record.file_type();
    if kind != FileType::Directory && record.nlink == 0 {
        // An entry names it, so it has a link: its record is damaged, and
        // counting down from 0 would wrap to 4 billion links and leak it.
        return Err(NamespaceError::Corrupt(format!(
            "inode {ino} has link count 0, but an entry names it"
        )));
    }
    let deletable = if kind == FileType::Directory {
        !open
    } else {
        record.nlink <= 1
            && !open
            && !has_more_extents_than(transaction, ino, EXTENTS_PER_TRANSACTION)?
    } && !xattr::has_more_than(transaction, ino, XATTRS_PER_TRANSACTION)?;
    if deletable {
        delete_inode(transaction, ino, kind, freed)?;
        return Ok(Some(ino));
    }
    // A directory's links are its entry, its "." and its subdirectories'
    // "..": it has none once its (only) entry goes.
    record.nlink = if kind == FileType::Directory {
        0
    } else {
        record.nlink - 1
    };
    record.ctime = time;
    if record.nlink == 0 {
        transaction.put(TreeId::Meta, &prefixed_key(ORPHAN_PREFIX, ino), &[])?;
    }
    write_inode(transaction, ino, &record)?;
    Ok(None)
}

impl Namespace {
    fn open_counts(&self) -> MutexGuard<'_, HashMap<u64, u32>> {
        // Each update is one map operation: a poisoned lock holds a
        // consistent map.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn is_open(&self, ino: u64) -> bool {
        self.open_counts().contains_key(&ino)
    }

    /// Records that `ino` was opened: while it is open its last unlink
    /// leaves it an orphan rather than deleting it.
    pub fn opened(&self, ino: u64) {
        let _writer = self.lock();
        *self.open_counts().entry(ino).or_default() += 1;
    }

    /// Records that one open of `ino` was closed. The last close of an
    /// orphan deletes it and frees its data; returns whether it did.
    pub fn closed(&self, ino: u64) -> NamespaceResult<bool> {
        let _writer = self.lock();
        if !self.drop_open(ino) {
            return Ok(false);
        }
        self.delete_if_orphan(ino)
    }

    /// Records that one open of `ino` was closed, deleting nothing (the
    /// filesystem cannot write now): returns whether that was the last
    /// open, so an orphan it leaves is for [`Namespace::purge_orphan`] later
    /// (or the next mount) to delete.
    pub fn closed_keeping_orphan(&self, ino: u64) -> bool {
        let _writer = self.lock();
        self.drop_open(ino)
    }

    /// Deletes `ino` if it is an orphan nobody has open; returns whether it
    /// did.
    pub fn purge_orphan(&self, ino: u64) -> NamespaceResult<bool> {
        let _writer = self.lock();
        if self.is_open(ino) {
            return Ok(false);
        }
        self.delete_if_orphan(ino)
    }

    /// Drops one open of `ino`; returns whether it was the last.
    fn drop_open(&self, ino: u64) -> bool {
        let mut open = self.open_counts();
        match open.get_mut(&ino) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                open.remove(&ino);
                true
            }
            None => false,
        }
    }

    /// Deletes `ino` if it is an orphan (no links: a file, or a directory
    /// removed while open). Callers hold the record lock.
    pub(super) fn delete_if_orphan(&self, ino: u64) -> NamespaceResult<bool> {
        let mut transaction = self.freeing_transaction();
        let Some(record) = read_inode(&transaction, ino)? else {
            transaction.delete(TreeId::Meta, &prefixed_key(ORPHAN_PREFIX, ino))?;
            transaction.commit()?;
            return Ok(false);
        };
        if record.nlink != 0 {
            return Ok(false);
        }
        // The extents and the extended attributes go in bounded
        // transactions (the orphan record keeps the rest reachable if a
        // crash comes between them), then the inode. A batch whose leaves
        // the space left cannot cover (a filesystem whose creates used the
        // reserve down to its deletions' half) is tried again halved: a
        // smaller one changes fewer leaves, and each one committed frees
        // blocks for the next.
        let (mut extents, mut xattrs) = (EXTENTS_PER_TRANSACTION, XATTRS_PER_TRANSACTION);
        loop {
            let mut freed = Vec::new();
            let extents_remain = delete_extents(&mut transaction, ino, extents, &mut freed)?;
            let xattrs_remain = xattr::delete_some(&mut transaction, ino, xattrs)?;
            let last = !extents_remain && !xattrs_remain;
            if last {
                delete_inode(&mut transaction, ino, record.file_type(), &mut freed)?;
            }
            match self.commit_freeing(transaction, freed) {
                Ok(()) if last => {
                    self.metadata.poison.forget_inode(ino);
                    self.metadata.lost.forget_inode(ino);
                    return Ok(true);
                }
                Ok(()) => {}
                Err(NamespaceError::NoSpace(_)) if extents > 1 || xattrs > 1 => {
                    extents = (extents / 2).max(1);
                    xattrs = (xattrs / 2).max(1);
                }
                Err(error) => return Err(error),
            }
            transaction = self.freeing_transaction();
        }
    }

    /// The orphans a previous mount left (files unlinked while open when
    /// it stopped).
    pub fn orphans(&self) -> NamespaceResult<Vec<u64>> {
        let start = prefixed_key(ORPHAN_PREFIX, 0);
        let end = [ORPHAN_PREFIX + 1];
        let mut found = Vec::new();
        for (key, _) in self
            .metadata
            .trees
            .scan(TreeId::Meta, &start, Some(&end), usize::MAX)?
        {
            let ino: [u8; 8] = key
                .get(1..)
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| {
                    NamespaceError::Corrupt(format!("orphan record key of {} bytes", key.len()))
                })?;
            found.push(u64::from_be_bytes(ino));
        }
        Ok(found)
    }

    /// The orphans someone has open: their last close deletes them.
    pub fn held_orphans(&self) -> NamespaceResult<Vec<u64>> {
        let mut held = self.orphans()?;
        held.retain(|&ino| self.is_open(ino));
        Ok(held)
    }

    /// Deletes every orphan nobody has open (at mount: nobody), freeing
    /// their data; returns the inodes deleted, and those left for lack of
    /// space even in batches of one extent (a later try, once something
    /// else freed space, deletes them).
    pub fn purge_orphans(&self) -> NamespaceResult<(Vec<u64>, Vec<u64>)> {
        let mut purged = Vec::new();
        let mut left = Vec::new();
        for ino in self.orphans()? {
            let _writer = self.lock();
            if self.is_open(ino) {
                continue;
            }
            match self.delete_if_orphan(ino) {
                Ok(true) => purged.push(ino),
                Ok(false) => {}
                Err(NamespaceError::NoSpace(_)) => left.push(ino),
                Err(error) => return Err(error),
            }
        }
        Ok((purged, left))
    }

    /// A transaction that removes things: it may use the space kept back
    /// from ordinary ones, so a full filesystem can always be emptied.
    pub(super) fn freeing_transaction(&self) -> Transaction<'_> {
        let mut transaction = self.metadata.trees.transaction();
        transaction.may_use_reserve();
        transaction
    }

    /// Commits `transaction`, then frees `freed` at its seq.
    pub(super) fn commit_freeing(
        &self,
        transaction: Transaction<'_>,
        freed: Vec<BlockRun>,
    ) -> NamespaceResult<()> {
        let seq = transaction.commit()?;
        if let Some(seq) = seq {
            for run in freed {
                // A refused free means the block was already free: the
                // allocator keeps it out of use and counts it.
                let _ = self.metadata.allocator.free_data(run, seq);
            }
        }
        Ok(())
    }

    /// Removes the non-directory entry `name` from `parent`; the inode goes
    /// with its last link unless it is open (then it is an orphan until
    /// [`Namespace::closed`]). Returns the inode if it was deleted.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> NamespaceResult<Option<u64>> {
        check_name(name)?;
        let _writer = self.lock();
        let mut transaction = self.freeing_transaction();
        let (key, dirent) = entry_to_remove(&transaction, parent, name)?;
        if dirent.file_type == FileType::Directory {
            return Err(NamespaceError::IsADirectory);
        }
        let time = Timestamp::now();
        let mut freed = Vec::new();
        transaction.delete(TreeId::Dirents, &key.encode())?;
        let open = self.is_open(dirent.child);
        let deleted = drop_link(&mut transaction, dirent.child, time, open, &mut freed)?;
        touch_directory(&mut transaction, parent, 0, time)?;
        self.commit_freeing(transaction, freed)?;
        self.finish_drop(dirent.child, open, deleted)
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> NamespaceResult<()> {
        check_name(name)?;
        let _writer = self.lock();
        let mut transaction = self.freeing_transaction();
        let (key, dirent) = entry_to_remove(&transaction, parent, name)?;
        if dirent.file_type != FileType::Directory {
            return Err(NamespaceError::NotADirectory);
        }
        if !is_empty_directory(&transaction, dirent.child)? {
            return Err(NamespaceError::NotEmpty);
        }
        let time = Timestamp::now();
        transaction.delete(TreeId::Dirents, &key.encode())?;
        let open = self.is_open(dirent.child);
        let deleted = drop_link(&mut transaction, dirent.child, time, open, &mut Vec::new())?;
        touch_directory(&mut transaction, parent, -1, time)?;
        transaction.commit()?;
        self.finish_drop(dirent.child, open, deleted)?;
        Ok(())
    }

    /// After a commit that dropped a link of `ino`: a file left an orphan
    /// only because it had too many extents to delete at once (not open)
    /// is deleted now, in batches. Returns the inode if it is gone.
    pub(super) fn finish_drop(
        &self,
        ino: u64,
        open: bool,
        deleted: Option<u64>,
    ) -> NamespaceResult<Option<u64>> {
        if deleted.is_some() || open {
            return Ok(deleted);
        }
        Ok(self.delete_if_orphan(ino)?.then_some(ino))
    }
}
