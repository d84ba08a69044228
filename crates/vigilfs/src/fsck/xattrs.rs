//! fsck's check of the Xattrs tree: every attribute record read as a
//! lookup would read it, and held to the rules a set keeps.
//!
//! What must hold (and is reported when it does not):
//!
//! * every record belongs to an inode record that exists;
//! * it decodes: a known version of its key's family, its pieces all
//!   there and adding up to its length, a digest record's name hashing to
//!   its key ([`audit_xattr_record`]);
//! * its name is one a set accepts, `user.*` only on regular files and
//!   directories, and an ACL's value decodes (a default ACL only on a
//!   directory);
//! * no piece is without its record, but those of an orphan (an inode
//!   without links, whose deletion a crash cut: the next mount ends it).
//!
//! The walk holds one record and its pieces at a time (at most 257
//! pieces of one b-tree value each), however many attributes the image
//! has.

use std::collections::{HashMap, HashSet};

use super::namespace::missing_or_damaged;
use super::Problem;
use crate::btree::{BtreeError, Btrees, TreeId};
use crate::inode::{
    audit_xattr_record, is_xattr_piece, is_xattr_piece_of, xattr_owner, InodeRecord,
};

const STRUCTURE: &str = "extended attributes";

/// Pieces kept of one record: one more than a record can have (their
/// index is a byte), enough for the check to see there are too many.
const MOST_PIECES_KEPT: usize = 257;

/// A record and the pieces found after it; pieces whose record is not
/// there are grouped under the record key they name.
struct Pending {
    key: Vec<u8>,
    bytes: Option<Vec<u8>>,
    pieces: Vec<(Vec<u8>, Vec<u8>)>,
    piece_count: usize,
}

impl Pending {
    fn starting_at(key: Vec<u8>, bytes: Vec<u8>) -> Pending {
        if !is_xattr_piece(&key) {
            return Pending {
                key,
                bytes: Some(bytes),
                pieces: Vec::new(),
                piece_count: 0,
            };
        }
        let record = key[..key.len().saturating_sub(2)].to_vec();
        let mut pending = Pending {
            key: record,
            bytes: None,
            pieces: Vec::new(),
            piece_count: 0,
        };
        pending.add_piece(key, bytes);
        pending
    }

    fn add_piece(&mut self, key: Vec<u8>, bytes: Vec<u8>) {
        self.piece_count += 1;
        if self.pieces.len() < MOST_PIECES_KEPT {
            self.pieces.push((key, bytes));
        }
    }
}

/// Walks the Xattrs tree against `inodes` (the inode records that decode;
/// `damaged` those whose record is there but does not). Returns how many
/// attributes it holds.
pub(crate) fn check(
    trees: &Btrees,
    inodes: &HashMap<u64, InodeRecord>,
    damaged: &HashSet<u64>,
    problems: &mut Vec<Problem>,
) -> Result<u64, BtreeError> {
    let mut attributes = 0;
    // Inodes already reported missing: one line each, not one per record.
    let mut reported_missing = HashSet::new();
    let mut finish = |pending: Pending, problems: &mut Vec<Problem>| {
        let owner = xattr_owner(&pending.key);
        let inode = owner.and_then(|ino| inodes.get(&ino));
        let Some(bytes) = pending.bytes else {
            // Deleting an orphan's attributes in batches cuts between a
            // record and its pieces; a crash there leaves pieces the next
            // mount deletes with the orphan.
            if inode.is_none_or(|inode| inode.nlink != 0) {
                problems.push(problem(format!(
                    "{} pieces of a record that is not there (key {:02x?})",
                    pending.piece_count, pending.key
                )));
            }
            return;
        };
        attributes += 1;
        let (Some(ino), Some(inode)) = (owner, inode) else {
            match owner {
                None => problems.push(problem(format!("key {:02x?}: too short", pending.key))),
                Some(ino) if reported_missing.insert(ino) => problems.push(problem(format!(
                    "attributes of inode {ino}, which {}",
                    missing_or_damaged(damaged, ino)
                ))),
                Some(_) => {}
            }
            return;
        };
        if let Err(message) = audit_xattr_record(
            ino,
            inode.file_type(),
            &pending.key,
            &bytes,
            &pending.pieces,
        ) {
            problems.push(problem(message));
        }
    };
    let mut pending: Option<Pending> = None;
    for entry in trees.range(TreeId::Xattrs, &[], None) {
        let (key, bytes) = entry?;
        match pending.as_mut() {
            Some(record) if is_xattr_piece_of(&record.key, &key) => record.add_piece(key, bytes),
            _ => {
                if let Some(record) = pending.replace(Pending::starting_at(key, bytes)) {
                    finish(record, problems);
                }
            }
        }
    }
    if let Some(record) = pending {
        finish(record, problems);
    }
    Ok(attributes)
}

fn problem(message: String) -> Problem {
    Problem {
        structure: STRUCTURE.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::device::{MemoryDevice, SectorSize};
    use crate::fsck::test_inode as inode;
    use crate::inode::{inode_key, FileType, XattrFlags, Xattrs};
    use crate::metadata::Metadata;
    use crate::mkfs::{mkfs, MkfsOptions};

    const DIRECTORY: u64 = 2;
    const FILE: u64 = 3;
    const SYMLINK: u64 = 4;

    /// `user.` then `fill` up to `length` bytes: a name kept under its
    /// digest when longer than 118.
    fn long_name(fill: u8, length: usize) -> Vec<u8> {
        let mut name = b"user.".to_vec();
        name.resize(length, fill);
        name
    }

    /// An ACL giving user 1000 read: header, then (tag, perm, id) entries.
    fn acl() -> Vec<u8> {
        let mut value = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 7u16, u32::MAX),
            (0x02, 4, 1000),
            (0x04, 5, u32::MAX),
            (0x10, 5, u32::MAX),
            (0x20, 5, u32::MAX),
        ] {
            value.extend_from_slice(&tag.to_le_bytes());
            value.extend_from_slice(&perm.to_le_bytes());
            value.extend_from_slice(&id.to_le_bytes());
        }
        value
    }

    fn named_key(ino: u64, name: &[u8]) -> Vec<u8> {
        let mut key = ino.to_be_bytes().to_vec();
        key.extend_from_slice(name);
        key
    }

    fn digest_key(ino: u64, name: &[u8]) -> Vec<u8> {
        let mut key = ino.to_be_bytes().to_vec();
        key.push(1);
        key.extend_from_slice(&Sha256::digest(name)[..16]);
        key
    }

    fn piece_key(record: &[u8], index: u8) -> Vec<u8> {
        let mut key = record.to_vec();
        key.extend_from_slice(&[0, index]);
        key
    }

    /// A directory with a default ACL and a user attribute; a file with
    /// attributes of every storage kind (inline, in pieces, long names
    /// inline and in pieces, an access ACL); a symlink with a trusted one.
    fn healthy() -> Arc<Metadata> {
        let device = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
        let superblock = mkfs(device.as_ref(), &MkfsOptions::default()).unwrap();
        let metadata = Arc::new(Metadata::open_default(device, &superblock).unwrap());
        let mut transaction = metadata.trees.transaction();
        for (ino, kind) in [
            (DIRECTORY, FileType::Directory),
            (FILE, FileType::Regular),
            (SYMLINK, FileType::Symlink),
        ] {
            transaction
                .put(TreeId::Inodes, &inode_key(ino), &inode(kind, 1))
                .unwrap();
        }
        transaction.commit().unwrap();
        let xattrs = Xattrs::new(Arc::clone(&metadata));
        let flags = XattrFlags::default();
        let set = |ino: u64, name: &[u8], value: &[u8]| {
            xattrs.set(ino, name, value, flags).unwrap();
        };
        set(DIRECTORY, b"system.posix_acl_default", &acl());
        set(DIRECTORY, b"user.a", b"1");
        set(FILE, b"user.small", b"v");
        set(FILE, b"user.big", &[7; 60_000]);
        set(FILE, &long_name(b'i', 200), b"inline");
        set(FILE, &long_name(b'p', 255), &[9; 30_000]);
        set(FILE, b"system.posix_acl_access", &acl());
        set(SYMLINK, b"trusted.t", b"x");
        metadata
    }

    fn run(metadata: &Metadata) -> (Vec<Problem>, u64) {
        let trees = &metadata.trees;
        let mut inodes = HashMap::new();
        for entry in trees.range(TreeId::Inodes, &[], None) {
            let (key, value) = entry.unwrap();
            let ino = crate::inode::decode_inode_key(&key).unwrap();
            inodes.insert(ino, InodeRecord::decode(&value).unwrap());
        }
        let mut problems = Vec::new();
        let attributes = check(trees, &inodes, &HashSet::new(), &mut problems).unwrap();
        (problems, attributes)
    }

    #[test]
    fn attributes_of_every_kind_are_clean_and_counted() {
        let metadata = healthy();
        let (problems, attributes) = run(&metadata);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(attributes, 8);
    }

    #[test]
    fn pieces_left_by_a_cut_deletion_of_an_orphan_are_not_damage() {
        let metadata = healthy();
        let big = named_key(FILE, b"user.big");
        let mut transaction = metadata.trees.transaction();
        // What a batch ending inside user.big's pieces leaves.
        transaction
            .delete_range(
                TreeId::Xattrs,
                &named_key(FILE, b""),
                Some(&piece_key(&big, 5)),
            )
            .unwrap();
        transaction.commit().unwrap();
        let (problems, _) = run(&metadata);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0]
            .message
            .starts_with("54 pieces of a record that is not there"));

        let mut transaction = metadata.trees.transaction();
        transaction
            .put(
                TreeId::Inodes,
                &inode_key(FILE),
                &inode(FileType::Regular, 0),
            )
            .unwrap();
        transaction.commit().unwrap();
        let (problems, _) = run(&metadata);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn each_damaged_record_is_reported_once_and_the_walk_goes_on() {
        let metadata = healthy();
        let mut transaction = metadata.trees.transaction();
        let mut put = |key: Vec<u8>, value: &[u8]| {
            transaction.put(TreeId::Xattrs, &key, value).unwrap();
        };
        // A stray piece after an inline record, and a piece whose record
        // is gone.
        put(piece_key(&named_key(FILE, b"user.small"), 0), &[3, 1]);
        put(piece_key(&named_key(FILE, b"user.gone"), 0), &[3, 1]);
        // A long name's record holding another name.
        let mut content = vec![4, 200];
        content.extend_from_slice(&long_name(b'j', 200));
        put(digest_key(FILE, &long_name(b'i', 200)), &content);
        // Names no set accepts, or not on this inode.
        put(named_key(FILE, b"other.x"), &[1, b'v']);
        put(named_key(SYMLINK, b"user.x"), &[1, b'v']);
        put(
            named_key(FILE, b"system.posix_acl_default"),
            &[&[1][..], &acl()].concat(),
        );
        // Records of an inode that does not exist: one line for both.
        put(named_key(99, b"user.a"), &[1]);
        put(named_key(99, b"user.b"), &[1]);
        transaction
            .delete(TreeId::Xattrs, &piece_key(&named_key(FILE, b"user.big"), 1))
            .unwrap();
        transaction.commit().unwrap();
        let mut access = acl();
        access.truncate(10);
        let mut transaction = metadata.trees.transaction();
        transaction
            .put(
                TreeId::Xattrs,
                &named_key(FILE, b"system.posix_acl_access"),
                &[&[1][..], &access].concat(),
            )
            .unwrap();
        transaction.commit().unwrap();

        let (problems, attributes) = run(&metadata);
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        for expected in [
            "piece 1 is missing or damaged",
            "an inline record with 1 stray pieces",
            "1 pieces of a record that is not there",
            "a digest record's name does not match its key",
            "\"other.x\" of inode 3: not a name a set accepts",
            "\"user.x\" of inode 4: a user attribute on a Symlink",
            "\"system.posix_acl_default\" of inode 3: a default ACL on a Regular",
            "\"system.posix_acl_access\" of inode 3: not a valid POSIX ACL",
            "attributes of inode 99, which does not exist",
        ] {
            let found = messages.iter().filter(|m| m.contains(expected)).count();
            assert_eq!(found, 1, "{expected:?} in {messages:#?}");
        }
        assert_eq!(problems.len(), 9, "{messages:#?}");
        assert!(problems.iter().all(|p| p.structure == STRUCTURE));
        // The 8 records and the 5 added (the two of inode 99 among them).
        assert_eq!(attributes, 13);
    }
}
