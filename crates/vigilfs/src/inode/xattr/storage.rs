//! Storage of attributes: where an attribute lives in the Xattrs tree and how its record reads:
//! the two key families (named and digest), the record versions, and
//! contents cut into pieces. The layout is in the parent module's comment.
//!
//! Invariants kept here:
//!
//! * a name is stored under exactly one key: [`slot`] of it, or, for a
//!   name of 119 or 120 bytes written by an older vigilfs, its
//!   [`legacy_slot`] until the next [`put`] moves it;
//! * a digest record's content starts with the full name, and a lookup by
//!   name answers with a digest record only when that name is the one
//!   asked for;
//! * a record in pieces has pieces `0..n`, each a full piece but the last,
//!   adding up to the length the record states.

use sha2::{Digest, Sha256};

use super::XattrError;
use super::XattrResult;
use crate::btree::{Transaction, TreeId, MAX_KEY_BYTES};

/// A named record's value, inline.
const VERSION: u8 = 1;
/// A named record whose value is in pieces.
const VERSION_IN_PIECES: u8 = 2;
/// A piece.
const VERSION_PIECE: u8 = 3;
/// A digest record's name and value, inline.
const VERSION_DIGEST: u8 = 4;
/// A digest record whose name and value are in pieces.
const VERSION_DIGEST_IN_PIECES: u8 = 5;

/// The most pieces of one record (the index is one byte).
pub(super) const MAX_PIECES: usize = 255;

/// Largest value Linux accepts (`XATTR_SIZE_MAX`).
pub(super) const LINUX_SIZE_MAX: usize = 65536;

/// Longest name Linux accepts (`XATTR_NAME_MAX`).
pub(super) const LINUX_NAME_MAX: usize = 255;

/// Bytes of the key before the name.
const KEY_PREFIX_BYTES: usize = 8;

/// Bytes a piece's key adds to its record's (`0 | index`).
const PIECE_SUFFIX_BYTES: usize = 2;

/// Longest name kept under its own bytes: its record's key and its
/// pieces' keys fit a b-tree key.
pub(super) const NAMED_MAX: usize = MAX_KEY_BYTES - KEY_PREFIX_BYTES - PIECE_SUFFIX_BYTES;

/// Longest name an older vigilfs kept under its own bytes (it had no
/// pieces for such names).
const LEGACY_NAMED_MAX: usize = MAX_KEY_BYTES - KEY_PREFIX_BYTES;

/// The first byte of a digest record's name part: no valid name starts
/// with it (every name starts with its namespace).
const DIGEST_MARK: u8 = 1;

/// Bytes of the name's digest in a digest record's key.
const DIGEST_BYTES: usize = 16;

/// The most bytes a record's content holds: the value, and for a digest
/// record the name and its length byte.
const MAX_CONTENT: usize = LINUX_SIZE_MAX + 1 + LINUX_NAME_MAX;

/// The key an attribute's record is kept under, and its family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Slot {
    key: Vec<u8>,
    digest: bool,
}

/// Where attribute `name` of `ino` is written.
pub(super) fn slot(ino: u64, name: &[u8]) -> Slot {
    let mut key = Vec::with_capacity(MAX_KEY_BYTES);
    key.extend_from_slice(&ino.to_be_bytes());
    if name.len() <= NAMED_MAX {
        key.extend_from_slice(name);
        return Slot { key, digest: false };
    }
    key.push(DIGEST_MARK);
    key.extend_from_slice(&Sha256::digest(name)[..DIGEST_BYTES]);
    Slot { key, digest: true }
}

/// Where an older vigilfs kept attribute `name`, if not where [`slot`]
/// puts it now.
fn legacy_slot(ino: u64, name: &[u8]) -> Option<Slot> {
    (NAMED_MAX < name.len() && name.len() <= LEGACY_NAMED_MAX).then(|| {
        let mut key = ino.to_be_bytes().to_vec();
        key.extend_from_slice(name);
        Slot { key, digest: false }
    })
}

/// The range of keys holding `ino`'s attributes: `(start, end)`.
pub(super) fn inode_range(ino: u64) -> ([u8; 8], Option<[u8; 8]>) {
    (ino.to_be_bytes(), ino.checked_add(1).map(u64::to_be_bytes))
}

/// Whether an Xattrs key is a piece of a record, not a record.
pub(super) fn is_piece_key(key: &[u8]) -> bool {
    match key.get(KEY_PREFIX_BYTES..) {
        Some([DIGEST_MARK, rest @ ..]) => rest.len() > DIGEST_BYTES,
        Some(name) => name.contains(&0),
        None => false,
    }
}

/// The key of piece `index` of the record under `key`.
fn piece_key(key: &[u8], index: u8) -> Vec<u8> {
    let mut piece = Vec::with_capacity(key.len() + PIECE_SUFFIX_BYTES);
    piece.extend_from_slice(key);
    piece.push(0);
    piece.push(index);
    piece
}

/// The range of keys holding the pieces of the record under `key`: from
/// `key | 0` up to (not including) `key | 1`.
fn pieces_range(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = key.to_vec();
    let mut end = key.to_vec();
    start.push(0);
    end.push(1);
    (start, end)
}

fn corrupt(ino: u64, what: impl std::fmt::Display) -> XattrError {
    XattrError::Corrupt(format!("an attribute of inode {ino}: {what}"))
}

/// What a record says: its content itself, or the content's length when
/// it is in pieces.
enum Stored {
    Inline(Vec<u8>),
    InPieces(usize),
}

/// Decodes a record of the family `digest` says.
fn decode_stored(ino: u64, digest: bool, bytes: &[u8]) -> XattrResult<Stored> {
    let (inline, in_pieces) = if digest {
        (VERSION_DIGEST, VERSION_DIGEST_IN_PIECES)
    } else {
        (VERSION, VERSION_IN_PIECES)
    };
    match bytes.split_first() {
        Some((&version, content)) if version == inline => Ok(Stored::Inline(content.to_vec())),
        Some((&version, length)) if version == in_pieces => {
            let length: [u8; 4] = length
                .try_into()
                .map_err(|_| corrupt(ino, format!("a length of {} bytes", length.len())))?;
            let length = u32::from_le_bytes(length) as usize;
            let most = if digest { MAX_CONTENT } else { LINUX_SIZE_MAX };
            if length > most {
                // Never written. Trusting it would reserve the claimed
                // bytes before reading a piece.
                return Err(corrupt(ino, format!("{length} bytes in pieces")));
            }
            Ok(Stored::InPieces(length))
        }
        Some((&found, _)) => Err(corrupt(ino, format!("unknown record version {found}"))),
        None => Err(corrupt(ino, "an empty record")),
    }
}

/// The content of the record under `slot` whose bytes are `bytes`.
fn read_content(
    transaction: &Transaction<'_>,
    ino: u64,
    slot: &Slot,
    bytes: &[u8],
) -> XattrResult<Vec<u8>> {
    let length = match decode_stored(ino, slot.digest, bytes)? {
        Stored::Inline(content) => return Ok(content),
        Stored::InPieces(length) => length,
    };
    let (start, end) = pieces_range(&slot.key);
    let pieces = transaction.scan(TreeId::Xattrs, &start, Some(&end), MAX_PIECES + 1)?;
    assemble(ino, &slot.key, length, &pieces)
}

/// The content of `length` bytes kept in `pieces`, the keys and values of
/// the pieces range of the record under `key`, in key order.
fn assemble(
    ino: u64,
    key: &[u8],
    length: usize,
    pieces: &[(Vec<u8>, Vec<u8>)],
) -> XattrResult<Vec<u8>> {
    let mut content = Vec::with_capacity(length);
    for (index, (piece_key, piece)) in pieces.iter().enumerate() {
        match (piece_key.last(), piece.split_first()) {
            (Some(&at), Some((&VERSION_PIECE, bytes)))
                if usize::from(at) == index
                    && piece_key.len() == key.len() + PIECE_SUFFIX_BYTES
                    && content.len() + bytes.len() <= length =>
            {
                content.extend_from_slice(bytes);
            }
            _ => return Err(corrupt(ino, format!("piece {index} is missing or damaged"))),
        }
    }
    if content.len() != length {
        return Err(corrupt(
            ino,
            format!("pieces of {} bytes for {length}", content.len()),
        ));
    }
    Ok(content)
}

/// A digest record's content split into its name and value; the name must
/// be one kept under a digest, and hash to `key`.
fn split_named<'a>(ino: u64, key: &[u8], content: &'a [u8]) -> XattrResult<(&'a [u8], &'a [u8])> {
    let (&length, rest) = content
        .split_first()
        .ok_or_else(|| corrupt(ino, "a digest record without a name"))?;
    let length = usize::from(length);
    if length <= NAMED_MAX || rest.len() < length {
        return Err(corrupt(
            ino,
            format!("a digest record's name of {length} bytes"),
        ));
    }
    let (name, value) = rest.split_at(length);
    if slot(ino, name).key != key {
        return Err(corrupt(
            ino,
            "a digest record's name does not match its key",
        ));
    }
    Ok((name, value))
}

/// What a lookup of one name found.
pub(super) enum Lookup {
    /// No record holds the name.
    Absent,
    /// The record under `slot` holds it: its value, or why it cannot be
    /// read (a damaged record, which a set may overwrite).
    Present {
        slot: Slot,
        value: XattrResult<Vec<u8>>,
    },
    /// Another name's record holds the name's digest.
    Collides,
}

/// Looks attribute `name` of `ino` up.
pub(super) fn lookup(transaction: &Transaction<'_>, ino: u64, name: &[u8]) -> XattrResult<Lookup> {
    for slot in std::iter::once(slot(ino, name)).chain(legacy_slot(ino, name)) {
        let Some(bytes) = transaction.get(TreeId::Xattrs, &slot.key)? else {
            continue;
        };
        let content = read_content(transaction, ino, &slot, &bytes);
        if !slot.digest {
            return Ok(Lookup::Present {
                slot,
                value: content,
            });
        }
        let value = match content {
            Err(error) => Err(error),
            Ok(content) => match split_named(ino, &slot.key, &content) {
                Ok((stored, _)) if stored != name => return Ok(Lookup::Collides),
                Ok((_, value)) => Ok(value.to_vec()),
                Err(error) => Err(error),
            },
        };
        return Ok(Lookup::Present { slot, value });
    }
    Ok(Lookup::Absent)
}

/// The value of attribute `name` of `ino` when one read of its record
/// holds it (`Some(None)`: absent); `None` when it is in pieces, which
/// take several reads a concurrent set could tear.
pub(super) fn get_at_once(
    transaction: &Transaction<'_>,
    ino: u64,
    name: &[u8],
) -> XattrResult<Option<Option<Vec<u8>>>> {
    let slot = slot(ino, name);
    let Some(bytes) = transaction.get(TreeId::Xattrs, &slot.key)? else {
        return Ok(legacy_slot(ino, name).is_none().then_some(None));
    };
    match decode_stored(ino, slot.digest, &bytes)? {
        Stored::InPieces(_) => Ok(None),
        Stored::Inline(content) if !slot.digest => Ok(Some(Some(content))),
        Stored::Inline(content) => {
            let (stored, value) = split_named(ino, &slot.key, &content)?;
            Ok(Some((stored == name).then(|| value.to_vec())))
        }
    }
}

/// Deletes the record under `slot` and its pieces, if it has any.
pub(super) fn delete(transaction: &mut Transaction<'_>, ino: u64, slot: &Slot) -> XattrResult<()> {
    let Some(bytes) = transaction.get(TreeId::Xattrs, &slot.key)? else {
        return Ok(());
    };
    // A damaged record goes with whatever pieces it may have had.
    if !matches!(
        decode_stored(ino, slot.digest, &bytes),
        Ok(Stored::Inline(_))
    ) {
        let (start, end) = pieces_range(&slot.key);
        transaction.delete_range(TreeId::Xattrs, &start, Some(&end))?;
    }
    transaction.delete(TreeId::Xattrs, &slot.key)?;
    Ok(())
}

/// The largest value attribute `name` may hold when pieces hold up to
/// `inline` bytes: a digest record's pieces carry its name too.
pub(super) fn max_value_len(inline: usize, name: &[u8]) -> usize {
    let named = if name.len() > NAMED_MAX {
        1 + name.len()
    } else {
        0
    };
    (inline * MAX_PIECES)
        .saturating_sub(named)
        .min(LINUX_SIZE_MAX)
}

/// Writes attribute `name` of `ino` inside `transaction`, its content
/// inline when it fits `inline` bytes, else in pieces of that size,
/// replacing whatever it had (also where an older vigilfs kept it). The
/// caller checked the value's length against [`max_value_len`].
pub(super) fn put(
    transaction: &mut Transaction<'_>,
    inline: usize,
    ino: u64,
    name: &[u8],
    value: &[u8],
) -> XattrResult<()> {
    let slot = slot(ino, name);
    delete(transaction, ino, &slot)?;
    if let Some(legacy) = legacy_slot(ino, name) {
        delete(transaction, ino, &legacy)?;
    }
    let (content, inline_version, pieces_version) = if slot.digest {
        let mut content = Vec::with_capacity(1 + name.len() + value.len());
        // NAMED_MAX < name.len() <= 255 (checked by the caller).
        content.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        content.extend_from_slice(name);
        content.extend_from_slice(value);
        (content, VERSION_DIGEST, VERSION_DIGEST_IN_PIECES)
    } else {
        (value.to_vec(), VERSION, VERSION_IN_PIECES)
    };
    if content.len() <= inline {
        let mut record = Vec::with_capacity(1 + content.len());
        record.push(inline_version);
        record.extend_from_slice(&content);
        transaction.put(TreeId::Xattrs, &slot.key, &record)?;
        return Ok(());
    }
    let too_large = || XattrError::ValueTooLarge {
        length: value.len(),
        limit: max_value_len(inline, name),
    };
    let length = u32::try_from(content.len()).map_err(|_| too_large())?;
    let mut record = vec![pieces_version];
    record.extend_from_slice(&length.to_le_bytes());
    transaction.put(TreeId::Xattrs, &slot.key, &record)?;
    for (index, piece) in content.chunks(inline).enumerate() {
        let index = u8::try_from(index).map_err(|_| too_large())?;
        let mut bytes = Vec::with_capacity(1 + piece.len());
        bytes.push(VERSION_PIECE);
        bytes.extend_from_slice(piece);
        transaction.put(TreeId::Xattrs, &piece_key(&slot.key, index), &bytes)?;
    }
    Ok(())
}

/// The names of `ino`'s attributes, in byte order.
pub(super) fn names(transaction: &Transaction<'_>, ino: u64) -> XattrResult<Vec<Vec<u8>>> {
    let (start, end) = inode_range(ino);
    let entries = transaction.scan(
        TreeId::Xattrs,
        &start,
        end.as_ref().map(|end| &end[..]),
        usize::MAX,
    )?;
    let mut names = entries
        .into_iter()
        .filter(|(key, _)| !is_piece_key(key))
        .map(|(key, bytes)| {
            let name = key.get(KEY_PREFIX_BYTES..).unwrap_or_default();
            match name.first() {
                None => Err(corrupt(ino, "an empty name")),
                Some(&DIGEST_MARK) => {
                    if name.len() != 1 + DIGEST_BYTES {
                        return Err(corrupt(ino, "a digest key of the wrong length"));
                    }
                    let slot = Slot { key, digest: true };
                    let content = read_content(transaction, ino, &slot, &bytes)?;
                    Ok(split_named(ino, &slot.key, &content)?.0.to_vec())
                }
                Some(_) => {
                    decode_stored(ino, false, &bytes)?;
                    Ok(name.to_vec())
                }
            }
        })
        .collect::<XattrResult<Vec<_>>>()?;
    // Digest records sort by digest, not by name.
    names.sort_unstable();
    Ok(names)
}

/// Whether `key` is a piece of the record under `record` (fsck's walk
/// takes a record's pieces as they come after it).
pub(super) fn is_piece_of(record: &[u8], key: &[u8]) -> bool {
    key.len() > record.len() && key.starts_with(record) && key[record.len()] == 0
}

/// The name and value of the record under `key`, whose bytes are `bytes`
/// and whose pieces range holds `pieces` (in key order), checked as a
/// read checks it; for fsck, which walks the tree rather than looking
/// names up. Pieces a record stored inline does not use are an error too:
/// nothing reads them, but nothing deletes them either.
pub(super) fn read_record(
    ino: u64,
    key: &[u8],
    bytes: &[u8],
    pieces: &[(Vec<u8>, Vec<u8>)],
) -> XattrResult<(Vec<u8>, Vec<u8>)> {
    let name = key.get(KEY_PREFIX_BYTES..).unwrap_or_default();
    let digest = match name.first() {
        None => return Err(corrupt(ino, "an empty name")),
        Some(&DIGEST_MARK) if name.len() != 1 + DIGEST_BYTES => {
            return Err(corrupt(ino, "a digest key of the wrong length"))
        }
        Some(&DIGEST_MARK) => true,
        Some(_) => false,
    };
    let content = match decode_stored(ino, digest, bytes)? {
        Stored::Inline(_) if !pieces.is_empty() => {
            return Err(corrupt(
                ino,
                format!("an inline record with {} stray pieces", pieces.len()),
            ))
        }
        Stored::Inline(content) => content,
        Stored::InPieces(length) => assemble(ino, key, length, pieces)?,
    };
    if !digest {
        return Ok((name.to_vec(), content));
    }
    let (name, value) = split_named(ino, key, &content)?;
    Ok((name.to_vec(), value.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_versions_and_the_other_familys_versions_are_corrupt() {
        assert!(matches!(
            decode_stored(1, false, &[VERSION, b'a']),
            Ok(Stored::Inline(content)) if content == b"a"
        ));
        for (digest, bytes) in [
            (false, &[VERSION_DIGEST, b'a'][..]),
            (true, &[VERSION, b'a'][..]),
            (false, &[VERSION_PIECE, b'a'][..]),
            (false, &[9][..]),
            (true, &[][..]),
        ] {
            assert!(matches!(
                decode_stored(1, digest, bytes),
                Err(XattrError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn a_record_in_pieces_longer_than_any_written_is_corrupt() {
        let stored = |digest: bool, length: u32| {
            let mut bytes = vec![if digest {
                VERSION_DIGEST_IN_PIECES
            } else {
                VERSION_IN_PIECES
            }];
            bytes.extend_from_slice(&length.to_le_bytes());
            decode_stored(1, digest, &bytes)
        };
        assert!(matches!(stored(false, 65536), Ok(Stored::InPieces(65536))));
        assert!(matches!(stored(false, 65537), Err(XattrError::Corrupt(_))));
        assert!(matches!(stored(true, 65536 + 256), Ok(Stored::InPieces(_))));
        assert!(matches!(
            stored(true, 65536 + 257),
            Err(XattrError::Corrupt(_))
        ));
        assert!(matches!(
            stored(true, u32::MAX),
            Err(XattrError::Corrupt(_))
        ));
    }

    #[test]
    fn names_up_to_linux_max_have_keys_that_fit_with_their_pieces() {
        for length in [1, NAMED_MAX, NAMED_MAX + 1, LINUX_NAME_MAX] {
            let name = vec![b'n'; length];
            let slot = slot(u64::MAX, &name);
            assert_eq!(slot.digest, length > NAMED_MAX);
            assert!(piece_key(&slot.key, 254).len() <= MAX_KEY_BYTES);
            assert!(!is_piece_key(&slot.key));
            assert!(is_piece_key(&piece_key(&slot.key, 0)));
        }
    }

    #[test]
    fn digest_keys_never_meet_named_keys_or_their_pieces() {
        let long = slot(7, &[b'u'; 200]);
        // Every valid name starts with a letter, after the digest mark.
        let (start, end) = pieces_range(&slot(7, b"user.a").key);
        assert!(long.key < start || long.key >= end);
        assert!(long.key > inode_range(7).0.to_vec());
        assert!(long.key < slot(7, b"security.a").key);
        assert!(legacy_slot(7, &[b'u'; NAMED_MAX]).is_none());
        assert!(legacy_slot(7, &[b'u'; LEGACY_NAMED_MAX]).is_some());
        assert!(legacy_slot(7, &[b'u'; LEGACY_NAMED_MAX + 1]).is_none());
    }

    #[test]
    fn a_digest_records_name_must_hash_to_its_key() {
        let name = [b'u'; 130];
        let key = slot(3, &name).key;
        let mut content = vec![130];
        content.extend_from_slice(&name);
        content.extend_from_slice(b"value");
        assert_eq!(
            split_named(3, &key, &content).unwrap(),
            (&name[..], &b"value"[..])
        );
        content[5] = b'x';
        assert!(split_named(3, &key, &content).is_err());
        // A name short enough to be named is never in a digest record.
        assert!(split_named(3, &key, &[4, b'u', b's', b'e', b'r']).is_err());
        assert!(split_named(3, &key, &[200, b'u']).is_err());
        assert!(split_named(3, &key, &[]).is_err());
    }

    #[test]
    fn a_digest_records_pieces_leave_room_for_its_name() {
        assert_eq!(max_value_len(1023, b"user.a"), LINUX_SIZE_MAX);
        assert_eq!(max_value_len(100, b"user.a"), 25_500);
        assert_eq!(max_value_len(100, &[b'u'; 200]), 25_500 - 201);
    }
}
