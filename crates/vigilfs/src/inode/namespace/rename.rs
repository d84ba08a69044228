//! Rename, as `renameat2`: plain, RENAME_NOREPLACE, RENAME_EXCHANGE and
//! RENAME_WHITEOUT. One transaction moves the entry, drops the link of
//! whatever it replaces, keeps directories' parent records and link counts
//! true, and refuses to move a directory into its own subtree.

use super::deletion::{drop_link, refuse_if_pinned};
use super::records::{
    allocate_inode, check_name, is_empty_directory, is_within, probe, put_entry, require_directory,
    set_parent, touch_directory, update_inode, write_inode,
};
use super::*;

impl Namespace {
    /// Renames `name` in `parent` to `new_name` in `new_parent`, as
    /// `renameat2` with `flags`; a whiteout is owned by root.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> NamespaceResult<Option<u64>> {
        self.rename_as(parent, name, new_parent, new_name, flags, (0, 0))
    }

    /// [`Namespace::rename`], with the owner (uid, gid) a whiteout gets.
    pub fn rename_as(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: RenameFlags,
        whiteout_owner: (u32, u32),
    ) -> NamespaceResult<Option<u64>> {
        if flags.exchange && (flags.noreplace || flags.whiteout) {
            return Err(NamespaceError::Invalid(
                "EXCHANGE with NOREPLACE or WHITEOUT",
            ));
        }
        check_name(name)?;
        check_name(new_name)?;
        let _writer = self.lock();
        let mut transaction = self.metadata.trees.transaction();
        // A name moved adds nothing lasting (a replaced target is freed),
        // unless it grows (renames to ever longer names ate the room kept
        // for rewrites: review 24) or leaves a whiteout, a new inode.
        if !flags.whiteout && new_name.len() <= name.len() {
            transaction.changes_in_place();
        }
        require_directory(&transaction, parent)?;
        require_directory(&transaction, new_parent)?;
        let (source_key, source) = probe(&transaction, parent, name)?
            .found
            .ok_or(NamespaceError::NotFound)?;
        let target_probe = probe(&transaction, new_parent, new_name)?;
        // A rename onto the same inode does nothing, pinned or not (as
        // vfs_rename returns before may_delete).
        match &target_probe.found {
            Some((_, target)) if target.child == source.child => {}
            found => {
                refuse_if_pinned(&transaction, source.child)?;
                if let Some((_, target)) = found {
                    refuse_if_pinned(&transaction, target.child)?;
                }
            }
        }
        let source_is_dir = source.file_type == FileType::Directory;
        if source_is_dir && is_within(&transaction, new_parent, source.child)? {
            return Err(NamespaceError::Invalid(
                "a directory cannot move into itself",
            ));
        }
        let time = Timestamp::now();
        let mut freed = Vec::new();

        if flags.exchange {
            let (target_key, target) = target_probe.found.ok_or(NamespaceError::NotFound)?;
            if target_key == source_key {
                return Ok(None);
            }
            let target_is_dir = target.file_type == FileType::Directory;
            if target_is_dir && is_within(&transaction, parent, target.child)? {
                return Err(NamespaceError::Invalid(
                    "a directory cannot move into itself",
                ));
            }
            put_entry(
                &mut transaction,
                &source_key,
                &Dirent {
                    child: target.child,
                    file_type: target.file_type,
                    name: name.to_vec(),
                },
            )?;
            put_entry(
                &mut transaction,
                &target_key,
                &Dirent {
                    child: source.child,
                    file_type: source.file_type,
                    name: new_name.to_vec(),
                },
            )?;
            let moved = i64::from(target_is_dir) - i64::from(source_is_dir);
            if parent != new_parent {
                if source_is_dir {
                    set_parent(&mut transaction, source.child, new_parent)?;
                }
                if target_is_dir {
                    set_parent(&mut transaction, target.child, parent)?;
                }
                touch_directory(&mut transaction, parent, moved, time)?;
                touch_directory(&mut transaction, new_parent, -moved, time)?;
            } else {
                touch_directory(&mut transaction, parent, 0, time)?;
            }
            for child in [source.child, target.child] {
                update_inode(&mut transaction, child, |record| {
                    record.ctime = time;
                    Ok(())
                })?;
            }
            transaction.commit()?;
            return Ok(None);
        }

        let mut deleted = None;
        let mut replaced = None;
        let target_key = match target_probe.found {
            Some((target_key, target)) => {
                if flags.noreplace {
                    return Err(NamespaceError::Exists);
                }
                if target.child == source.child {
                    // The same inode (or the same entry): POSIX says do nothing.
                    return Ok(None);
                }
                let target_is_dir = target.file_type == FileType::Directory;
                match (source_is_dir, target_is_dir) {
                    (true, false) => return Err(NamespaceError::NotADirectory),
                    (false, true) => return Err(NamespaceError::IsADirectory),
                    _ => {}
                }
                if target_is_dir {
                    if !is_empty_directory(&transaction, target.child)? {
                        return Err(NamespaceError::NotEmpty);
                    }
                    touch_directory(&mut transaction, new_parent, -1, time)?;
                }
                let open = self.is_open(target.child);
                deleted = drop_link(&mut transaction, target.child, time, open, &mut freed)?;
                replaced = Some((target.child, open));
                target_key
            }
            None => target_probe.free.ok_or_else(|| {
                NamespaceError::NoSpace("every collision index of the name's hash is taken".into())
            })?,
        };
        if flags.whiteout {
            let ino = make_whiteout(&mut transaction, whiteout_owner, time)?;
            put_entry(
                &mut transaction,
                &source_key,
                &Dirent {
                    child: ino,
                    file_type: FileType::CharDevice,
                    name: name.to_vec(),
                },
            )?;
        } else {
            transaction.delete(TreeId::Dirents, &source_key.encode())?;
        }
        put_entry(
            &mut transaction,
            &target_key,
            &Dirent {
                child: source.child,
                file_type: source.file_type,
                name: new_name.to_vec(),
            },
        )?;
        if source_is_dir && parent != new_parent {
            set_parent(&mut transaction, source.child, new_parent)?;
            touch_directory(&mut transaction, parent, -1, time)?;
            touch_directory(&mut transaction, new_parent, 1, time)?;
        } else {
            touch_directory(&mut transaction, parent, 0, time)?;
            touch_directory(&mut transaction, new_parent, 0, time)?;
        }
        update_inode(&mut transaction, source.child, |record| {
            record.ctime = time;
            Ok(())
        })?;
        self.commit_freeing(transaction, freed)?;
        match replaced {
            Some((ino, open)) => self.finish_drop(ino, open, deleted),
            None => Ok(deleted),
        }
    }
}

/// Writes a whiteout inode (a character device 0:0 of mode 0, as Linux's
/// `WHITEOUT_DEV` and `WHITEOUT_MODE`) owned by `owner`; its number. The
/// caller names it.
pub(super) fn make_whiteout(
    transaction: &mut Transaction<'_>,
    (uid, gid): (u32, u32),
    time: Timestamp,
) -> NamespaceResult<u64> {
    let (ino, generation) = allocate_inode(transaction)?;
    let record = InodeRecord {
        mode: FileType::CharDevice.mode_bits(),
        uid,
        gid,
        nlink: 1,
        flags: 0,
        size: 0,
        generation,
        rdev: 0,
        atime: time,
        mtime: time,
        ctime: time,
        btime: time,
    };
    write_inode(transaction, ino, &record)?;
    Ok(ino)
}
