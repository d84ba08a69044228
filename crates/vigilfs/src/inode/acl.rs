//! POSIX access control lists: their extended-attribute form and the rules
//! Linux applies with them. Pure functions; the attributes are stored by
//! `xattr.rs` like any other.
//!
//! ```text
//! system.posix_acl_access / system.posix_acl_default
//!   header  version u32 LE (2)
//!   entry   tag u16 LE | perm u16 LE (rwx = 4, 2, 1) | id u32 LE,  repeated
//! ```
//!
//! An ACL is valid when its entries come in Linux's order: one owner entry
//! (`USER_OBJ`), named users, one owning-group entry (`GROUP_OBJ`), named
//! groups, a mask when there is any named entry (at most one), one `OTHER`
//! (`posix_acl_valid`). Anything else is refused (`EINVAL`), on set and on
//! read alike, so a damaged value never grants access.
//!
//! The invariants, as Linux keeps them:
//!
//! * the mode's owner and other bits *are* the `USER_OBJ` and `OTHER`
//!   entries, and its group bits are the mask (or `GROUP_OBJ` when there is
//!   no mask): a chmod rewrites those entries ([`Acl::chmod`]) and setting
//!   an access ACL rewrites the mode ([`Acl::mode_bits`]);
//! * an access ACL that says no more than the mode (the three base entries
//!   only) is not stored: the mode says it all ([`Acl::is_minimal`]);
//! * a new inode in a directory with a default ACL takes the default as
//!   its access ACL, narrowed by the mode asked for, and the umask is not
//!   applied; a new directory inherits the default ACL itself
//!   ([`Acl::create_masq`], `posix_acl_create`);
//! * access by a caller who does not own the inode is decided by the ACL
//!   when there is one ([`Acl::permits`], `posix_acl_permission`): the first
//!   matching named user, else any matching group entry that grants it
//!   all, named entries and the owning group limited by the mask.

use thiserror::Error;

/// The attribute holding an inode's access ACL.
pub const ACCESS_NAME: &[u8] = b"system.posix_acl_access";
/// The attribute holding a directory's default ACL (inherited by what is
/// made in it).
pub const DEFAULT_NAME: &[u8] = b"system.posix_acl_default";

/// The only version of the attribute format Linux writes.
const VERSION: u32 = 2;
const HEADER_BYTES: usize = 4;
const ENTRY_BYTES: usize = 8;
/// More entries than fit Linux's 64 KiB attribute limit is not an ACL.
const MAX_ENTRIES: usize = (65536 - HEADER_BYTES) / ENTRY_BYTES;

const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;

/// The id Linux writes in entries that name no one.
const UNDEFINED_ID: u32 = u32::MAX;

/// Why an attribute value is not a valid ACL (`EINVAL`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not a valid POSIX ACL: {0}")]
pub struct AclError(&'static str);

/// Whose permissions an entry gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The owner.
    UserObj,
    /// The user with this uid.
    User(u32),
    /// The owning group.
    GroupObj,
    /// The group with this gid.
    Group(u32),
    /// The most any named entry or the owning group may be granted.
    Mask,
    /// Everyone else.
    Other,
}

/// One entry: who, and the `rwx` bits (4, 2, 1) they get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    /// Whose permissions.
    pub tag: Tag,
    /// `rwx` bits.
    pub perm: u8,
}

/// A valid ACL (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<AclEntry>,
}

impl Acl {
    /// Decodes and validates an attribute value.
    pub fn decode(bytes: &[u8]) -> Result<Acl, AclError> {
        let Some((header, body)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
            return Err(AclError("shorter than its header"));
        };
        if u32::from_le_bytes(*header) != VERSION {
            return Err(AclError("unknown version"));
        }
        if body.len() % ENTRY_BYTES != 0 {
            return Err(AclError("a partial entry"));
        }
        if body.len() / ENTRY_BYTES > MAX_ENTRIES {
            return Err(AclError("too many entries"));
        }
        let entries = body
            .chunks_exact(ENTRY_BYTES)
            .map(|entry| {
                let tag = u16::from_le_bytes([entry[0], entry[1]]);
                let perm = u16::from_le_bytes([entry[2], entry[3]]);
                let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
                let tag = match tag {
                    TAG_USER_OBJ => Tag::UserObj,
                    TAG_USER => Tag::User(id),
                    TAG_GROUP_OBJ => Tag::GroupObj,
                    TAG_GROUP => Tag::Group(id),
                    TAG_MASK => Tag::Mask,
                    TAG_OTHER => Tag::Other,
                    _ => return Err(AclError("unknown entry tag")),
                };
                let perm = u8::try_from(perm)
                    .ok()
                    .filter(|perm| *perm <= 0o7)
                    .ok_or(AclError("permission bits beyond rwx"))?;
                Ok(AclEntry { tag, perm })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let acl = Acl { entries };
        acl.validate()?;
        Ok(acl)
    }

    /// Whether `bytes` is an attribute value with no entries (empty, or a
    /// header alone): what removing an ACL through its attribute sends.
    pub fn is_empty_value(bytes: &[u8]) -> bool {
        bytes.is_empty() || bytes == VERSION.to_le_bytes()
    }

    /// The attribute value.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_BYTES + ENTRY_BYTES * self.entries.len());
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        for entry in &self.entries {
            let (tag, id) = match entry.tag {
                Tag::UserObj => (TAG_USER_OBJ, UNDEFINED_ID),
                Tag::User(uid) => (TAG_USER, uid),
                Tag::GroupObj => (TAG_GROUP_OBJ, UNDEFINED_ID),
                Tag::Group(gid) => (TAG_GROUP, gid),
                Tag::Mask => (TAG_MASK, UNDEFINED_ID),
                Tag::Other => (TAG_OTHER, UNDEFINED_ID),
            };
            bytes.extend_from_slice(&tag.to_le_bytes());
            bytes.extend_from_slice(&u16::from(entry.perm).to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        bytes
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[AclEntry] {
        &self.entries
    }

    /// Linux's order and counts (`posix_acl_valid`).
    fn validate(&self) -> Result<(), AclError> {
        // Where in the order the next entry may be: 0 owner, 1 named users,
        // 2 named groups, 3 other (after the mask), 4 done.
        let mut stage = 0;
        let mut named = false;
        for entry in &self.entries {
            stage = match (entry.tag, stage) {
                (Tag::UserObj, 0) => 1,
                (Tag::User(uid), 1) if uid != UNDEFINED_ID => {
                    named = true;
                    1
                }
                (Tag::GroupObj, 1) => 2,
                (Tag::Group(gid), 2) if gid != UNDEFINED_ID => {
                    named = true;
                    2
                }
                (Tag::Mask, 2) => 3,
                (Tag::Other, 3) => 4,
                (Tag::Other, 2) if !named => 4,
                (Tag::Other, 2) => return Err(AclError("named entries without a mask")),
                _ => return Err(AclError("entries out of order or missing")),
            };
        }
        if stage == 4 {
            Ok(())
        } else {
            Err(AclError("entries missing"))
        }
    }

    fn perm_of(&self, wanted: Tag) -> Option<u8> {
        self.entries
            .iter()
            .find(|entry| entry.tag == wanted)
            .map(|entry| entry.perm)
    }

    /// Whether the ACL has only the three base entries, which the mode
    /// expresses by itself (`posix_acl_equiv_mode` returning 0).
    pub fn is_minimal(&self) -> bool {
        self.entries.len() == 3
    }

    /// The permission bits (`0o777`) the ACL makes the mode: owner from
    /// `USER_OBJ`, group from the mask (or `GROUP_OBJ`), other from `OTHER`.
    pub fn mode_bits(&self) -> u32 {
        let owner = self.perm_of(Tag::UserObj).unwrap_or(0);
        let group = self
            .perm_of(Tag::Mask)
            .or_else(|| self.perm_of(Tag::GroupObj))
            .unwrap_or(0);
        let other = self.perm_of(Tag::Other).unwrap_or(0);
        (u32::from(owner) << 6) | (u32::from(group) << 3) | u32::from(other)
    }

    /// Rewrites the entries the mode stands for after a chmod to `mode`
    /// (`posix_acl_chmod`): named entries keep their bits, the mask limits
    /// them.
    pub fn chmod(&mut self, mode: u32) {
        let has_mask = self.perm_of(Tag::Mask).is_some();
        for entry in &mut self.entries {
            match entry.tag {
                Tag::UserObj => entry.perm = ((mode >> 6) & 0o7) as u8,
                Tag::Mask => entry.perm = ((mode >> 3) & 0o7) as u8,
                Tag::GroupObj if !has_mask => entry.perm = ((mode >> 3) & 0o7) as u8,
                Tag::Other => entry.perm = (mode & 0o7) as u8,
                _ => {}
            }
        }
    }

    /// Narrows an inherited default ACL by the mode a new inode was asked
    /// to have, and the mode by the ACL (`posix_acl_create_masq`). Returns
    /// the permission bits (`0o777`) the inode gets; bits above `0o777` of
    /// `mode` are not touched and not returned.
    pub fn create_masq(&mut self, mode: u32) -> u32 {
        let mut mode = mode & 0o777;
        let has_mask = self.perm_of(Tag::Mask).is_some();
        for entry in &mut self.entries {
            match entry.tag {
                Tag::UserObj => {
                    entry.perm &= ((mode >> 6) & 0o7) as u8;
                    mode = (mode & !0o700) | (u32::from(entry.perm) << 6);
                }
                Tag::Other => {
                    entry.perm &= (mode & 0o7) as u8;
                    mode = (mode & !0o7) | u32::from(entry.perm);
                }
                Tag::Mask => {
                    entry.perm &= ((mode >> 3) & 0o7) as u8;
                    mode = (mode & !0o70) | (u32::from(entry.perm) << 3);
                }
                Tag::GroupObj if !has_mask => {
                    entry.perm &= ((mode >> 3) & 0o7) as u8;
                    mode = (mode & !0o70) | (u32::from(entry.perm) << 3);
                }
                _ => {}
            }
        }
        mode
    }

    /// Whether the ACL grants `wanted` (`rwx` bits) to a caller who is not
    /// the inode's owner (the owner's access is the mode's owner bits),
    /// given the inode's owning group (`posix_acl_permission`).
    pub fn permits(
        &self,
        uid: u32,
        in_group: &dyn Fn(u32) -> bool,
        owning_gid: u32,
        wanted: u8,
    ) -> bool {
        let mask = self.perm_of(Tag::Mask).unwrap_or(0o7);
        let mut group_matched = false;
        for entry in &self.entries {
            match entry.tag {
                Tag::User(named) if named == uid => {
                    return entry.perm & mask & wanted == wanted;
                }
                Tag::GroupObj if in_group(owning_gid) => {
                    group_matched = true;
                    if entry.perm & mask & wanted == wanted {
                        return true;
                    }
                }
                Tag::Group(gid) if in_group(gid) => {
                    group_matched = true;
                    if entry.perm & mask & wanted == wanted {
                        return true;
                    }
                }
                Tag::Other => return !group_matched && entry.perm & wanted == wanted,
                _ => {}
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(Tag, u8)]) -> Acl {
        Acl {
            entries: entries
                .iter()
                .map(|&(tag, perm)| AclEntry { tag, perm })
                .collect(),
        }
    }

    fn nobody_in_groups(_: u32) -> bool {
        false
    }

    #[test]
    fn values_roundtrip_and_malformed_ones_are_refused() {
        let full = acl(&[
            (Tag::UserObj, 7),
            (Tag::User(1000), 6),
            (Tag::GroupObj, 5),
            (Tag::Group(50), 4),
            (Tag::Mask, 6),
            (Tag::Other, 0),
        ]);
        assert_eq!(Acl::decode(&full.encode()), Ok(full.clone()));
        let mut bytes = full.encode();
        bytes[0] = 1;
        assert!(Acl::decode(&bytes).is_err(), "wrong version");
        assert!(Acl::decode(&full.encode()[..10]).is_err(), "partial entry");
        assert!(Acl::decode(&[2, 0]).is_err(), "short header");
        let mut bytes = full.encode();
        bytes[HEADER_BYTES + 2] = 8;
        assert!(Acl::decode(&bytes).is_err(), "perm beyond rwx");
        let mut bytes = full.encode();
        bytes[HEADER_BYTES] = 0x40;
        assert!(Acl::decode(&bytes).is_err(), "unknown tag");
        let unordered = acl(&[(Tag::GroupObj, 5), (Tag::UserObj, 7), (Tag::Other, 0)]);
        assert!(Acl::decode(&unordered.encode()).is_err());
        let no_mask = acl(&[
            (Tag::UserObj, 7),
            (Tag::User(1), 7),
            (Tag::GroupObj, 5),
            (Tag::Other, 0),
        ]);
        assert!(Acl::decode(&no_mask.encode()).is_err());
        let no_other = acl(&[(Tag::UserObj, 7), (Tag::GroupObj, 5)]);
        assert!(Acl::decode(&no_other.encode()).is_err());
        assert!(Acl::decode(&VERSION.to_le_bytes()).is_err(), "no entries");
    }

    /// Linux (6.x) orders an ACL's kinds of entries but not the ids of its
    /// named entries, nor refuses one named twice (a check then takes the
    /// first): tmpfs keeps such a value and `setfattr --restore` of it
    /// must work here too (review 39; review 38 had them refused).
    #[test]
    fn named_entries_in_any_id_order_or_twice_are_kept_as_linux_keeps_them() {
        let with = |users: &[u32], groups: &[u32]| {
            let mut entries = vec![(Tag::UserObj, 7)];
            entries.extend(users.iter().map(|&uid| (Tag::User(uid), 7)));
            entries.push((Tag::GroupObj, 5));
            entries.extend(groups.iter().map(|&gid| (Tag::Group(gid), 4)));
            entries.extend([(Tag::Mask, 7), (Tag::Other, 0)]);
            acl(&entries)
        };
        for (users, groups) in [
            (&[4, 1004, 65534][..], &[100, 1004][..]),
            (&[1004, 1004], &[]),
            (&[65534, 1004], &[]),
            (&[], &[200, 100, 200]),
        ] {
            let value = with(users, groups);
            assert_eq!(
                Acl::decode(&value.encode()),
                Ok(value),
                "users {users:?}, groups {groups:?}"
            );
        }
    }

    #[test]
    fn chmod_rewrites_owner_mask_and_other_and_keeps_named_entries() {
        let mut with_mask = acl(&[
            (Tag::UserObj, 7),
            (Tag::User(1000), 7),
            (Tag::GroupObj, 7),
            (Tag::Mask, 7),
            (Tag::Other, 7),
        ]);
        with_mask.chmod(0o640);
        assert_eq!(with_mask.mode_bits(), 0o640);
        assert_eq!(with_mask.perm_of(Tag::User(1000)), Some(7));
        assert_eq!(
            with_mask.perm_of(Tag::GroupObj),
            Some(7),
            "the mask stands for it"
        );
        let mut minimal = acl(&[(Tag::UserObj, 7), (Tag::GroupObj, 7), (Tag::Other, 7)]);
        minimal.chmod(0o751);
        assert_eq!(minimal.mode_bits(), 0o751);
    }

    #[test]
    fn create_masq_narrows_both_the_acl_and_the_mode() {
        let mut inherited = acl(&[
            (Tag::UserObj, 7),
            (Tag::User(1000), 7),
            (Tag::GroupObj, 5),
            (Tag::Mask, 7),
            (Tag::Other, 5),
        ]);
        assert_eq!(inherited.create_masq(0o666), 0o664);
        assert_eq!(inherited.perm_of(Tag::UserObj), Some(6));
        assert_eq!(inherited.perm_of(Tag::Mask), Some(6));
        assert_eq!(
            inherited.perm_of(Tag::User(1000)),
            Some(7),
            "the mask limits it"
        );
        assert_eq!(inherited.perm_of(Tag::Other), Some(4));
        let mut minimal = acl(&[(Tag::UserObj, 7), (Tag::GroupObj, 0), (Tag::Other, 5)]);
        assert_eq!(minimal.create_masq(0o777), 0o705);
    }

    #[test]
    fn permission_follows_named_users_groups_mask_and_other() {
        let acl = acl(&[
            (Tag::UserObj, 7),
            (Tag::User(1000), 6),
            (Tag::User(1001), 0),
            (Tag::GroupObj, 4),
            (Tag::Group(50), 2),
            (Tag::Mask, 4),
            (Tag::Other, 7),
        ]);
        let none = &nobody_in_groups;
        // A named user is limited by the mask: read yes, write no.
        assert!(acl.permits(1000, none, 100, 4));
        assert!(!acl.permits(1000, none, 100, 2));
        // A named user with nothing gets nothing, though other has rwx.
        assert!(!acl.permits(1001, none, 100, 4));
        // Everyone else is "other".
        assert!(acl.permits(2000, none, 100, 7));
        // A member of a matching group that grants nothing is refused,
        // not given "other".
        let in_50 = |gid| gid == 50;
        assert!(!acl.permits(2000, &in_50, 100, 2), "the mask removes write");
        assert!(!acl.permits(2000, &in_50, 100, 1));
        // The owning group's entry, through the mask.
        let in_100 = |gid| gid == 100;
        assert!(acl.permits(2000, &in_100, 100, 4));
        assert!(!acl.permits(2000, &in_100, 100, 1));
    }
}
