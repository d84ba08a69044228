//! The namespace's records as one transaction reads and writes them:
//! inodes, directory entries (found by probing a name's hash), parent
//! links, the inode counters and the live-inode count. Every function
//! takes the transaction it works in and commits nothing: the operations
//! in the sibling modules gather their updates here and commit once.

use super::*;

pub(super) fn check_name(name: &[u8]) -> NamespaceResult<()> {
    if name.len() > MAX_NAME_BYTES {
        Err(NamespaceError::NameTooLong)
    } else if valid_name(name) {
        Ok(())
    } else {
        Err(NamespaceError::InvalidName)
    }
}

/// A name to create (create, mkdir, mknod, symlink, link): `.` and `..`
/// always exist, so creating them is EEXIST, as on Linux; other bad
/// names as [`check_name`] says.
pub(super) fn check_new_name(name: &[u8]) -> NamespaceResult<()> {
    if name == b"." || name == b".." {
        return Err(NamespaceError::Exists);
    }
    check_name(name)
}

pub(super) fn prefixed_key(prefix: u8, ino: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&ino.to_be_bytes());
    key
}

pub(super) fn read_inode(
    transaction: &Transaction<'_>,
    ino: u64,
) -> NamespaceResult<Option<InodeRecord>> {
    match transaction.get(TreeId::Inodes, &inode_key(ino))? {
        Some(bytes) => InodeRecord::decode(&bytes)
            .map(Some)
            .map_err(|error| corrupt(format!("inode {ino}"), error)),
        None => Ok(None),
    }
}

pub(super) fn require_inode(
    transaction: &Transaction<'_>,
    ino: u64,
) -> NamespaceResult<InodeRecord> {
    read_inode(transaction, ino)?.ok_or(NamespaceError::NotFound)
}

/// Directory `ino`, which must still have its entry: a removed directory
/// kept while open (an orphan, no links) has no entries to look up, list or
/// add to.
pub(super) fn require_directory(
    transaction: &Transaction<'_>,
    ino: u64,
) -> NamespaceResult<InodeRecord> {
    let record = require_inode(transaction, ino)?;
    if record.file_type() != FileType::Directory {
        Err(NamespaceError::NotADirectory)
    } else if record.nlink == 0 {
        Err(NamespaceError::NotFound)
    } else {
        Ok(record)
    }
}

pub(super) fn write_inode(
    transaction: &mut Transaction<'_>,
    ino: u64,
    record: &InodeRecord,
) -> NamespaceResult<()> {
    transaction.put(TreeId::Inodes, &inode_key(ino), &record.encode())?;
    Ok(())
}

/// Applies `change` to inode `ino` as the transaction currently has it.
pub(super) fn update_inode(
    transaction: &mut Transaction<'_>,
    ino: u64,
    change: impl FnOnce(&mut InodeRecord) -> NamespaceResult<()>,
) -> NamespaceResult<()> {
    let mut record = require_inode(transaction, ino)?;
    change(&mut record)?;
    write_inode(transaction, ino, &record)
}

/// A directory's entries changed: its mtime and ctime become `time`, and
/// its link count moves by `subdirectories`.
pub(super) fn touch_directory(
    transaction: &mut Transaction<'_>,
    ino: u64,
    subdirectories: i64,
    time: Timestamp,
) -> NamespaceResult<()> {
    update_inode(transaction, ino, |record| {
        record.nlink = u32::try_from(i64::from(record.nlink) + subdirectories)
            .map_err(|_| NamespaceError::TooManyLinks)?;
        record.mtime = time;
        record.ctime = time;
        Ok(())
    })
}

/// An existing entry found by name, and where a new entry with that name
/// would go.
pub(super) struct Probe {
    pub(super) found: Option<(DirentKey, Dirent)>,
    pub(super) free: Option<DirentKey>,
}

pub(super) fn probe(
    transaction: &Transaction<'_>,
    parent: u64,
    name: &[u8],
) -> NamespaceResult<Probe> {
    let hash = name_hash(name);
    let prefix = (u128::from(parent) << 64) | u128::from(hash);
    let start = prefix.to_be_bytes();
    let end = prefix.checked_add(1).map(u128::to_be_bytes);
    let entries = transaction.scan(
        TreeId::Dirents,
        &start,
        end.as_ref().map(|end| &end[..]),
        usize::from(u16::MAX) + 1,
    )?;
    let mut found = None;
    let mut next_free: u32 = 0;
    let mut free = None;
    for (key, value) in entries {
        let position = DirentKey::decode(&key)
            .map_err(|error| corrupt(format!("directory {parent} entry key"), error))?;
        let dirent = Dirent::decode(&value).map_err(|error| {
            corrupt(
                format!("directory {parent} entry {}", position.collision),
                error,
            )
        })?;
        if free.is_none() && u32::from(position.collision) > next_free {
            free = Some(next_free);
        }
        next_free = u32::from(position.collision) + 1;
        if dirent.name == name {
            found = Some((position, dirent));
        }
    }
    let free = free
        .or(Some(next_free))
        .and_then(|index| u16::try_from(index).ok())
        .map(|collision| DirentKey {
            parent,
            hash,
            collision,
        });
    Ok(Probe { found, free })
}

pub(super) fn put_entry(
    transaction: &mut Transaction<'_>,
    key: &DirentKey,
    dirent: &Dirent,
) -> NamespaceResult<()> {
    transaction.put(TreeId::Dirents, &key.encode(), &dirent.encode())?;
    Ok(())
}

pub(super) fn set_parent(
    transaction: &mut Transaction<'_>,
    dir: u64,
    parent: u64,
) -> NamespaceResult<()> {
    transaction.put(
        TreeId::Meta,
        &prefixed_key(PARENT_PREFIX, dir),
        &parent.to_le_bytes(),
    )?;
    Ok(())
}

pub(super) fn parent_of(transaction: &Transaction<'_>, dir: u64) -> NamespaceResult<u64> {
    let bytes = transaction
        .get(TreeId::Meta, &prefixed_key(PARENT_PREFIX, dir))?
        .ok_or_else(|| NamespaceError::Corrupt(format!("directory {dir} has no parent record")))?;
    let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
        NamespaceError::Corrupt(format!("directory {dir}'s parent record has a bad length"))
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Whether `dir` is `ancestor` or lies below it.
pub(super) fn is_within(
    transaction: &Transaction<'_>,
    mut dir: u64,
    ancestor: u64,
) -> NamespaceResult<bool> {
    for _ in 0..MAX_DEPTH {
        if dir == ancestor {
            return Ok(true);
        }
        if dir == ROOT_INO {
            return Ok(false);
        }
        dir = parent_of(transaction, dir)?;
    }
    Err(NamespaceError::Corrupt(
        "the directory parent chain has a cycle".into(),
    ))
}

pub(super) fn is_empty_directory(transaction: &Transaction<'_>, dir: u64) -> NamespaceResult<bool> {
    let (start, end) = DirentKey::directory_range(dir);
    let entries = transaction.scan(TreeId::Dirents, &start, end.as_ref().map(|end| &end[..]), 1)?;
    Ok(entries.is_empty())
}

/// Takes the next inode number and generation.
pub(super) fn allocate_inode(transaction: &mut Transaction<'_>) -> NamespaceResult<(u64, u64)> {
    let (ino, generation) = read_counters(transaction)?;
    let next_ino = ino
        .checked_add(1)
        .ok_or_else(|| NamespaceError::NoSpace("inode numbers exhausted".into()))?;
    let mut counters = next_ino.to_le_bytes().to_vec();
    counters.extend_from_slice(&generation.wrapping_add(1).to_le_bytes());
    transaction.put(TreeId::Meta, COUNTERS_KEY, &counters)?;
    count_live_inodes(transaction, 1)?;
    Ok((ino, generation))
}

/// The number of inode records, if the filesystem keeps it.
pub(super) fn read_live_inodes(transaction: &Transaction<'_>) -> NamespaceResult<Option<u64>> {
    transaction
        .get(TreeId::Meta, LIVE_INODES_KEY)?
        .map(|bytes| decode_live_inodes(&bytes))
        .transpose()
}

/// Decodes the value of the live-inode record.
pub(crate) fn decode_live_inodes(bytes: &[u8]) -> NamespaceResult<u64> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
        NamespaceError::Corrupt(format!(
            "live inode count has {} bytes, expected 8",
            bytes.len()
        ))
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Adds `change` (one inode made or deleted) to the live-inode record, in
/// the transaction that makes or deletes the inode. Without the record
/// (before the mount that counts) there is nothing to keep.
pub(super) fn count_live_inodes(
    transaction: &mut Transaction<'_>,
    change: i64,
) -> NamespaceResult<()> {
    let Some(live) = read_live_inodes(transaction)? else {
        return Ok(());
    };
    let live = live.checked_add_signed(change).ok_or_else(|| {
        NamespaceError::Corrupt(format!("live inode count {live} cannot change by {change}"))
    })?;
    transaction.put(TreeId::Meta, LIVE_INODES_KEY, &live.to_le_bytes())?;
    Ok(())
}

pub(super) fn read_counters(transaction: &Transaction<'_>) -> NamespaceResult<(u64, u64)> {
    match transaction.get(TreeId::Meta, COUNTERS_KEY)? {
        None => Ok((ROOT_INO + 1, 2)),
        Some(bytes) if bytes.len() == 16 => {
            let mut ino = [0u8; 8];
            let mut generation = [0u8; 8];
            ino.copy_from_slice(&bytes[..8]);
            generation.copy_from_slice(&bytes[8..]);
            Ok((u64::from_le_bytes(ino), u64::from_le_bytes(generation)))
        }
        Some(bytes) => Err(NamespaceError::Corrupt(format!(
            "namespace counters have {} bytes, expected 16",
            bytes.len()
        ))),
    }
}

/// The key of piece `index` (from 1) of a symlink target: the target's own
/// key with the index after it, so the pieces sort right after it.
fn symlink_piece_key(ino: u64, index: u8) -> [u8; 10] {
    let mut key = [index; 10];
    key[..9].copy_from_slice(&prefixed_key(SYMLINK_PREFIX, ino));
    key
}

/// The longest symlink target a filesystem whose values hold `max_value`
/// bytes keeps: Linux's, unless blocks are so small that 256 values do not
/// hold it.
pub(super) fn max_symlink_target(max_value: usize) -> usize {
    MAX_SYMLINK_TARGET_BYTES.min(max_value.saturating_mul(1 + usize::from(u8::MAX)))
}

/// Writes a symlink's target (at most [`max_symlink_target`] bytes): as
/// much as one value holds under its own key, the rest in pieces after it
/// (see the module comment).
pub(super) fn write_symlink_target(
    transaction: &mut Transaction<'_>,
    ino: u64,
    target: &[u8],
    max_value: usize,
) -> NamespaceResult<()> {
    debug_assert!(target.len() <= max_symlink_target(max_value));
    let mut pieces = target.chunks(max_value);
    let first = pieces.next().unwrap_or_default();
    transaction.put(TreeId::Meta, &prefixed_key(SYMLINK_PREFIX, ino), first)?;
    for (index, piece) in (1..=u8::MAX).zip(pieces) {
        transaction.put(TreeId::Meta, &symlink_piece_key(ino, index), piece)?;
    }
    Ok(())
}

/// Reads back a target of `length` bytes (the inode's size) through `get`
/// (of the Meta tree: a transaction's, or fsck's); a missing piece, or
/// pieces that do not add up to the length, is corruption.
pub(crate) fn read_symlink_target(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, BtreeError>,
    ino: u64,
    length: u64,
) -> NamespaceResult<Vec<u8>> {
    let corrupt = |what: &str| NamespaceError::Corrupt(format!("symlink {ino}: {what}"));
    let mut target =
        get(&prefixed_key(SYMLINK_PREFIX, ino))?.ok_or_else(|| corrupt("no target"))?;
    let mut index = 0u8;
    while (target.len() as u64) < length {
        index = index
            .checked_add(1)
            .ok_or_else(|| corrupt("more pieces than a target has"))?;
        let piece = get(&symlink_piece_key(ino, index))?
            .filter(|piece| !piece.is_empty())
            .ok_or_else(|| corrupt(&format!("piece {index} of its target is missing")))?;
        target.extend_from_slice(&piece);
    }
    if target.len() as u64 != length {
        return Err(corrupt(&format!(
            "its target has {} bytes, its inode says {length}",
            target.len()
        )));
    }
    Ok(target)
}

/// Deletes a symlink's target and its pieces.
pub(super) fn delete_symlink_target(
    transaction: &mut Transaction<'_>,
    ino: u64,
) -> NamespaceResult<()> {
    transaction.delete(TreeId::Meta, &prefixed_key(SYMLINK_PREFIX, ino))?;
    let mut end = [u8::MAX; 11];
    end[..10].copy_from_slice(&symlink_piece_key(ino, u8::MAX));
    transaction.delete_range(TreeId::Meta, &symlink_piece_key(ino, 1), Some(&end))?;
    Ok(())
}
