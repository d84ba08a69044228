//! Extended attributes, kept in the Xattrs b-tree: get, set (with the
//! `XATTR_CREATE` / `XATTR_REPLACE` flags), list and remove, plus
//! [`delete_all`] for the namespace to call when an inode goes.
//!
//! ```text
//! named record   key    ino: u64 BE | name bytes (prefix included)
//!                value  version 1 | value bytes (possibly none)   (inline)
//!                    or version 2 | value length u32 LE          (in pieces)
//! digest record  key    ino: u64 BE | 0x01 | SHA-256(name)[..16]
//!                value  version 4 | name length u8 | name | value (inline)
//!                    or version 5 | length u32 LE of the same    (in pieces)
//! piece          key    record key | 0 | index u8
//!                value  version 3 | up to max_value - 1 bytes
//! ```
//!
//! A key is at most 128 bytes ([`MAX_KEY_BYTES`]) and Linux names up to
//! 255: a name short enough for its record's key and its pieces' keys
//! ([`NAMED_MAX`], 118 bytes) is the key itself; a longer one is keyed by
//! its digest and kept, in full, at the front of its record's content,
//! where every lookup compares it (two names whose digests collide cannot
//! both be set: the second is `ENOSPC`, never the first's value). No valid
//! name starts with byte 1, so the two families never meet, and a
//! filesystem written before digest records existed reads as before (its
//! names of 119 and 120 bytes, the longest it took, are found under their
//! own bytes and moved to a digest record when next set). The superblock's
//! `INCOMPAT_XATTR_DIGESTS` keeps builds without digest records away.
//!
//! A record's content (the value; for a digest record its name and value)
//! is inline when it fits one b-tree value, else cut into pieces kept
//! right after the record (a name holds no NUL, so `key | 0` sorts after
//! `key` and before every longer name it prefixes). All of an inode's
//! attributes and pieces are therefore one key range, pieces skipped when
//! listing. Version bytes are checked on every read: a missing or unknown
//! version, a version of the other family, a digest record whose name does
//! not hash to its key, or pieces that do not add up to the length, is
//! corruption (`EIO`), never a panic. (An older vigilfs reads a value in
//! pieces, or a digest record, as corruption rather than misreading it.)
//!
//! Names and sizes, as Linux `setxattr(2)` reports them:
//!
//! * a name is `user.`, `trusted.` or `security.` followed by a non-empty
//!   suffix (an empty suffix is `EINVAL`, as `xattr_resolve_name`), or one
//!   of the two POSIX ACL names (`system.posix_acl_access`,
//!   `system.posix_acl_default`); any other prefix, and any other
//!   `system.` name, is `EOPNOTSUPP`. An empty name is `ERANGE`, a name
//!   holding NUL `EINVAL`;
//! * a name is at most 255 bytes (Linux's `XATTR_NAME_MAX`), else
//!   `ERANGE`;
//! * a value is at most [`Xattrs::max_value_len`] bytes: 65536 (Linux's
//!   `XATTR_SIZE_MAX`, as XFS and ext4 with `ea_inode`), in at most 255
//!   pieces (on 1 KiB blocks, where pieces are small, less: see
//!   [`Xattrs::max_value_len_for`]). Larger values are `E2BIG` (chosen
//!   over `ENOSPC`: the limit is per attribute, not a shortage of space);
//! * the names of an inode's attributes, each with its NUL, add up to at
//!   most 65536 bytes (Linux's `XATTR_LIST_MAX`, all `listxattr` returns):
//!   a new name past it is `ENOSPC`;
//! * `user.*` attributes exist only on regular files and directories: on
//!   any other inode, get is `ENODATA` and set/remove are `EPERM`
//!   (`xattr_permission`).
//!
//! Invariants:
//!
//! * every record is of an inode record that exists, with a valid name
//!   as above, `user.*` only where it may be and ACLs that decode (fsck
//!   checks each record with [`audit_record`]);
//! * every mutation is one transaction holding [`Metadata::lock_records`]
//!   from its first read to its commit; it rewrites the inode record with
//!   ctime set to now (a missing inode is `ENOENT` and changes nothing);
//! * [`delete_all`] runs inside the caller's transaction (the one deleting
//!   the inode), so an inode never goes without its attributes.
//!
//! POSIX ACLs ([`acl`](super::acl)) are attributes like the others, with
//! Linux's rules kept in the same transaction as the change: a value that
//! is not a valid ACL is `EINVAL`; setting an access ACL rewrites the
//! mode's permission bits to match it (and stores nothing when the mode
//! says it all); a default ACL exists only on directories (`EACCES`);
//! a new inode inherits its directory's default ACL
//! ([`inherit_on_create`]) and a chmod rewrites the access ACL
//! ([`chmod_access_acl`]).
//!
//! Access checks (who may read or write which namespace) are not made
//! here: the caller checks [`permission`](super::permission) first.

use std::sync::Arc;

use thiserror::Error;

use super::acl::{self, Acl};
use super::record::{inode_key, FileType, InodeRecord, Timestamp};
use crate::btree::{BtreeError, Transaction, TreeId};
use crate::metadata::Metadata;

mod storage;

use storage::{Lookup, LINUX_NAME_MAX};

/// The name prefixes that hold attributes here.
const SUPPORTED_PREFIXES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

/// Why an extended-attribute operation failed. Nothing was changed when
/// one is returned.
#[derive(Debug, Error)]
pub enum XattrError {
    /// The inode does not exist.
    #[error("no such inode")]
    NotFound,
    /// The attribute does not exist.
    #[error("no such attribute")]
    NoData,
    /// The attribute exists and `create` was asked.
    #[error("the attribute exists")]
    Exists,
    /// The name's namespace is not supported (unknown prefix, `system.*`).
    #[error("attribute namespace not supported: {0}")]
    NotSupported(&'static str),
    /// Not permitted on this inode (`user.*` on a non-regular file).
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// Refused for this inode (a default ACL on a non-directory).
    #[error("permission denied: {0}")]
    Denied(&'static str),
    /// An invalid argument (the message says which).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The name is empty or longer than [`Xattrs::max_name_len`].
    #[error("attribute name of {0} bytes is out of range")]
    NameRange(usize),
    /// The value is longer than [`Xattrs::max_value_len`].
    #[error("attribute value of {length} bytes exceeds the limit of {limit}")]
    ValueTooLarge {
        /// Its length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// No space for b-tree nodes.
    #[error("no space: {0}")]
    NoSpace(String),
    /// A record did not decode: the metadata is damaged.
    #[error("corrupt attribute metadata: {0}")]
    Corrupt(String),
    /// The b-trees failed (I/O, journal, error state).
    #[error("b-trees: {0}")]
    Btree(#[source] BtreeError),
}

impl XattrError {
    /// Whether the metadata failed (I/O or damage), as opposed to a
    /// refused request.
    pub fn is_metadata_failure(&self) -> bool {
        matches!(self, XattrError::Corrupt(_) | XattrError::Btree(_))
    }

    /// The errno a system call reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            XattrError::NotFound => libc::ENOENT,
            XattrError::NoData => libc::ENODATA,
            XattrError::Exists => libc::EEXIST,
            XattrError::NotSupported(_) => libc::EOPNOTSUPP,
            XattrError::NotPermitted(_) => libc::EPERM,
            XattrError::Denied(_) => libc::EACCES,
            XattrError::Invalid(_) => libc::EINVAL,
            XattrError::NameRange(_) => libc::ERANGE,
            XattrError::ValueTooLarge { .. } => libc::E2BIG,
            XattrError::NoSpace(_) => libc::ENOSPC,
            XattrError::Corrupt(_) => libc::EIO,
            XattrError::Btree(_) => libc::EIO,
        }
    }
}

impl From<BtreeError> for XattrError {
    fn from(error: BtreeError) -> XattrError {
        match error {
            BtreeError::NoSpace { .. } => XattrError::NoSpace(error.to_string()),
            other => XattrError::Btree(other),
        }
    }
}

/// An extended-attribute operation's result.
pub type XattrResult<T> = Result<T, XattrError>;

/// The flags of [`Xattrs::set`] (`XATTR_CREATE`, `XATTR_REPLACE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XattrFlags {
    /// Fail with `EEXIST` if the attribute exists.
    pub create: bool,
    /// Fail with `ENODATA` if the attribute does not exist.
    pub replace: bool,
}

/// The extended attributes in a filesystem's b-trees.
pub struct Xattrs {
    metadata: Arc<Metadata>,
}

impl std::fmt::Debug for Xattrs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Xattrs").finish_non_exhaustive()
    }
}

/// Commits an attribute change: the inode's ctime set to now, in the same
/// transaction.
fn commit_with_ctime(
    mut transaction: Transaction<'_>,
    ino: u64,
    mut record: InodeRecord,
) -> XattrResult<()> {
    record.ctime = Timestamp::now();
    transaction.put(TreeId::Inodes, &inode_key(ino), &record.encode())?;
    transaction.commit()?;
    Ok(())
}

fn read_inode(transaction: &Transaction<'_>, ino: u64) -> XattrResult<InodeRecord> {
    let bytes = transaction
        .get(TreeId::Inodes, &inode_key(ino))?
        .ok_or(XattrError::NotFound)?;
    InodeRecord::decode(&bytes)
        .map_err(|error| XattrError::Corrupt(format!("inode {ino}: {error}")))
}

fn is_user_name(name: &[u8]) -> bool {
    name.starts_with(b"user.")
}

/// Whether `user.*` attributes may exist on an inode of this type.
fn holds_user_attributes(file_type: FileType) -> bool {
    matches!(file_type, FileType::Regular | FileType::Directory)
}

/// Whether `name` is one of the two POSIX ACL attributes.
fn is_acl_name(name: &[u8]) -> bool {
    name == acl::ACCESS_NAME || name == acl::DEFAULT_NAME
}

/// Checks a name's length and namespace.
fn check_name(name: &[u8]) -> XattrResult<()> {
    if name.is_empty() || name.len() > LINUX_NAME_MAX {
        return Err(XattrError::NameRange(name.len()));
    }
    if name.contains(&0) {
        return Err(XattrError::Invalid("attribute name holds NUL"));
    }
    if is_acl_name(name) {
        return Ok(());
    }
    if name.starts_with(b"system.") {
        return Err(XattrError::NotSupported(
            "system.* attributes other than the POSIX ACLs",
        ));
    }
    match SUPPORTED_PREFIXES
        .iter()
        .find(|prefix| name.starts_with(prefix))
    {
        Some(prefix) if name.len() == prefix.len() => {
            Err(XattrError::Invalid("attribute name has an empty suffix"))
        }
        Some(_) => Ok(()),
        None => Err(XattrError::NotSupported("unknown attribute namespace")),
    }
}

/// `XATTR_CREATE` and `XATTR_REPLACE` against whether `name` exists;
/// returns the length of the value a set would replace, if one exists.
/// Linux's `XATTR_LIST_MAX`: the longest list of names `listxattr(2)`
/// returns (each name and its NUL); past it, it fails with `E2BIG`.
const LIST_MAX: usize = 65536;

/// `ENOSPC` if storing one more attribute, `name`, would make the list of
/// `ino`'s names longer than `listxattr` can return: every attribute set
/// must stay listable, or `getfattr -d` fails and `cp -a` drops them all
/// (review 54: 6,000 small `user.` attributes, then E2BIG; ext4 runs out
/// of room far sooner).
fn check_list_room(transaction: &Transaction<'_>, ino: u64, name: &[u8]) -> XattrResult<()> {
    let listed: usize = storage::names(transaction, ino)?
        .iter()
        .map(|name| name.len() + 1)
        .sum();
    if listed + name.len() + 1 > LIST_MAX {
        return Err(XattrError::NoSpace(format!(
            "the list of the file's attribute names would pass {LIST_MAX} bytes, all listxattr returns"
        )));
    }
    Ok(())
}

fn check_flags(
    transaction: &Transaction<'_>,
    ino: u64,
    name: &[u8],
    flags: XattrFlags,
) -> XattrResult<Option<usize>> {
    let replaced = match storage::lookup(transaction, ino, name)? {
        Lookup::Absent => None,
        // A damaged value is overwritten without being read (so a
        // damaged attribute can be repaired): its length is unknown.
        Lookup::Present { value, .. } => Some(value.map_or(0, |value| value.len())),
        Lookup::Collides => {
            return Err(XattrError::NoSpace(
                "the name's digest is another attribute's: no room for it".to_owned(),
            ))
        }
    };
    if flags.create && replaced.is_some() {
        return Err(XattrError::Exists);
    }
    if flags.replace && replaced.is_none() {
        return Err(XattrError::NoData);
    }
    Ok(replaced)
}

/// Removes attribute `name` of `ino` (and its pieces) inside
/// `transaction`; whether it existed.
fn remove_in(transaction: &mut Transaction<'_>, ino: u64, name: &[u8]) -> XattrResult<bool> {
    match storage::lookup(transaction, ino, name)? {
        Lookup::Present { slot, .. } => {
            storage::delete(transaction, ino, &slot)?;
            Ok(true)
        }
        Lookup::Absent | Lookup::Collides => Ok(false),
    }
}

/// The value of attribute `name` of `ino` as `transaction` sees it.
fn get_in(transaction: &Transaction<'_>, ino: u64, name: &[u8]) -> XattrResult<Option<Vec<u8>>> {
    match storage::lookup(transaction, ino, name)? {
        Lookup::Present { value, .. } => value.map(Some),
        Lookup::Absent | Lookup::Collides => Ok(None),
    }
}

/// The POSIX ACL `name` of `ino`, if it has one; a stored value that is
/// not a valid ACL is corruption.
pub(super) fn acl_in(
    transaction: &Transaction<'_>,
    ino: u64,
    name: &[u8],
) -> XattrResult<Option<Acl>> {
    get_in(transaction, ino, name)?
        .map(|value| decode_acl(ino, name, &value))
        .transpose()
}

/// The POSIX ACL `name` of `ino` stored as `value`: not a valid ACL is
/// corruption.
fn decode_acl(ino: u64, name: &[u8], value: &[u8]) -> XattrResult<Acl> {
    Acl::decode(value).map_err(|error| {
        XattrError::Corrupt(format!(
            "inode {ino}: {}: {error}",
            String::from_utf8_lossy(name)
        ))
    })
}

/// The permission bits (`0o7777`) a new inode `ino` made in `parent` with
/// `permissions` gets, after its parent's default ACL or the `umask`
/// (`posix_acl_create`): with a default ACL the umask is not applied, the
/// inode takes the default, narrowed by the mode, as its access ACL
/// (stored unless the mode says it all) and a directory takes the default
/// itself. Runs inside the creating transaction; symlinks do not come here.
pub(super) fn inherit_on_create(
    transaction: &mut Transaction<'_>,
    inline: usize,
    parent: u64,
    ino: u64,
    is_directory: bool,
    permissions: u32,
    umask: u32,
) -> XattrResult<u32> {
    let Some(default) = acl_in(transaction, parent, acl::DEFAULT_NAME)? else {
        return Ok(permissions & !(umask & 0o777));
    };
    let mut access = default.clone();
    let bits = access.create_masq(permissions);
    if !access.is_minimal() {
        storage::put(transaction, inline, ino, acl::ACCESS_NAME, &access.encode())?;
    }
    if is_directory {
        storage::put(
            transaction,
            inline,
            ino,
            acl::DEFAULT_NAME,
            &default.encode(),
        )?;
    }
    Ok((permissions & 0o7000) | bits)
}

/// Rewrites `ino`'s access ACL, if it has one, after a chmod to `mode`
/// (`posix_acl_chmod`), inside the chmod's transaction.
pub(super) fn chmod_access_acl(
    transaction: &mut Transaction<'_>,
    inline: usize,
    ino: u64,
    mode: u32,
) -> XattrResult<()> {
    if let Some(mut access) = acl_in(transaction, ino, acl::ACCESS_NAME)? {
        let before = access.clone();
        access.chmod(mode);
        // A change of set-id bits alone leaves the ACL as it is.
        if access != before {
            storage::put(transaction, inline, ino, acl::ACCESS_NAME, &access.encode())?;
        }
    }
    Ok(())
}

/// The largest value `metadata`'s b-trees hold inline for an attribute.
pub(super) fn inline_limit(metadata: &Metadata) -> usize {
    metadata
        .trees
        .limits()
        .max_value
        .saturating_sub(1)
        .min(storage::LINUX_SIZE_MAX)
}

/// Deletes every extended attribute of `ino` inside `transaction` (the one
/// deleting the inode). One range delete: it costs the same however many
/// attributes there are. Public (re-exported as `delete_all_xattrs`) so
/// tests outside the crate can run it in a transaction of their own.
pub fn delete_all(transaction: &mut Transaction<'_>, ino: u64) -> Result<(), BtreeError> {
    let (start, end) = storage::inode_range(ino);
    transaction.delete_range(TreeId::Xattrs, &start, end.as_ref().map(|end| &end[..]))
}

/// The first `limit + 1` attribute keys of `ino` (one more than asked
/// for: whether more than `limit` exist).
fn first_keys(
    transaction: &Transaction<'_>,
    ino: u64,
    limit: usize,
) -> Result<Vec<Vec<u8>>, BtreeError> {
    let (start, end) = storage::inode_range(ino);
    let found = transaction.scan(
        TreeId::Xattrs,
        &start,
        end.as_ref().map(|end| &end[..]),
        limit.saturating_add(1),
    )?;
    Ok(found.into_iter().map(|(key, _)| key).collect())
}

/// Whether `ino` has more than `limit` attribute records (a value of
/// several pieces counts each): too many for the transaction that deletes
/// the inode.
pub fn has_more_than(
    transaction: &Transaction<'_>,
    ino: u64,
    limit: usize,
) -> Result<bool, BtreeError> {
    Ok(first_keys(transaction, ino, limit)?.len() > limit)
}

/// Deletes up to `limit` of `ino`'s attribute records; returns whether
/// more remain.
pub fn delete_some(
    transaction: &mut Transaction<'_>,
    ino: u64,
    limit: usize,
) -> Result<bool, BtreeError> {
    let keys = first_keys(transaction, ino, limit)?;
    let Some(first_kept) = keys.get(limit) else {
        delete_all(transaction, ino)?;
        return Ok(false);
    };
    let (start, _) = storage::inode_range(ino);
    transaction.delete_range(TreeId::Xattrs, &start, Some(first_kept))?;
    Ok(true)
}

/// The inode an Xattrs key belongs to, if the key is long enough to say.
pub(crate) fn owner_of_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

/// Whether the Xattrs key `key` is a piece of the record under `record`
/// (pieces come right after their record in key order).
pub(crate) fn is_piece_of(record: &[u8], key: &[u8]) -> bool {
    storage::is_piece_of(record, key)
}

/// Whether the Xattrs key `key` is a piece rather than a record.
pub(crate) fn is_piece(key: &[u8]) -> bool {
    storage::is_piece_key(key)
}

/// fsck's check of the attribute record under `key` of inode `ino` (a
/// `file_type`), whose bytes are `bytes` and whose pieces `pieces`: what
/// a read checks, and the rules a set keeps (a valid name, `user.*` only
/// where it may be, an ACL that decodes, a default ACL only on a
/// directory). The attribute's name when all hold, else what is wrong.
pub(crate) fn audit_record(
    ino: u64,
    file_type: FileType,
    key: &[u8],
    bytes: &[u8],
    pieces: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<u8>, String> {
    let (name, value) =
        storage::read_record(ino, key, bytes, pieces).map_err(|error| match error {
            // fsck says what is corrupt; the message names the inode.
            XattrError::Corrupt(message) => message,
            other => other.to_string(),
        })?;
    let shown = String::from_utf8_lossy(&name).into_owned();
    let wrong = |what: String| Err(format!("attribute {shown:?} of inode {ino}: {what}"));
    if let Err(error) = check_name(&name) {
        return wrong(format!("not a name a set accepts ({error})"));
    }
    if is_user_name(&name) && !holds_user_attributes(file_type) {
        return wrong(format!("a user attribute on a {file_type:?}"));
    }
    if is_acl_name(&name) {
        if let Err(error) = Acl::decode(&value) {
            return wrong(error.to_string());
        }
        if name == acl::DEFAULT_NAME && file_type != FileType::Directory {
            return wrong(format!("a default ACL on a {file_type:?}"));
        }
    }
    Ok(name)
}

impl Xattrs {
    /// The extended attributes kept in `metadata`'s b-trees.
    pub fn new(metadata: Arc<Metadata>) -> Xattrs {
        Xattrs { metadata }
    }

    /// Longest name accepted: Linux's 255 bytes.
    pub fn max_name_len(&self) -> usize {
        LINUX_NAME_MAX
    }

    /// Largest value accepted: Linux's 65536 bytes (in pieces of
    /// [`Xattrs::max_inline_len`]; less on 1 KiB blocks), for a name of
    /// up to 118 bytes; see [`Xattrs::max_value_len_for`].
    pub fn max_value_len(&self) -> usize {
        self.max_value_len_for(b"")
    }

    /// Largest value stored inline: `min(65536, max_value - 1)`.
    pub fn max_inline_len(&self) -> usize {
        inline_limit(&self.metadata)
    }

    /// Largest value accepted for attribute `name`: [`Xattrs::max_value_len`],
    /// less the name for a name kept in its record (over 118 bytes) when
    /// 255 pieces cannot hold both (1 KiB blocks).
    pub fn max_value_len_for(&self, name: &[u8]) -> usize {
        storage::max_value_len(self.max_inline_len(), name)
    }

    /// The value of attribute `name` of inode `ino`; `ENODATA` if it has
    /// none.
    pub fn get(&self, ino: u64, name: &[u8]) -> XattrResult<Vec<u8>> {
        check_name(name)?;
        self.value_of(ino, name, |record| {
            if is_user_name(name) && !holds_user_attributes(record.file_type()) {
                return Err(XattrError::NoData);
            }
            Ok(())
        })?
        .ok_or(XattrError::NoData)
    }

    /// The value of attribute `name` of `ino`, if it has one, once
    /// `check` accepts the inode's record. A value in pieces takes several
    /// reads, which a set committing between them could tear into a value
    /// nobody wrote (of the same length, nothing would tell): it is read
    /// under the record lock, as are records that disagree. One read of
    /// an inline value needs no lock.
    fn value_of(
        &self,
        ino: u64,
        name: &[u8],
        check: impl Fn(&InodeRecord) -> XattrResult<()>,
    ) -> XattrResult<Option<Vec<u8>>> {
        let read = |transaction: &Transaction<'_>| check(&read_inode(transaction, ino)?);
        let at_once = self.metadata.read_records(
            || {
                let transaction = self.metadata.trees.transaction();
                read(&transaction)?;
                storage::get_at_once(&transaction, ino, name)
            },
            |error| matches!(error, XattrError::Corrupt(_)),
        )?;
        if let Some(value) = at_once {
            return Ok(value);
        }
        let _records = self.metadata.lock_records();
        let transaction = self.metadata.trees.transaction();
        read(&transaction)?;
        get_in(&transaction, ino, name)
    }

    /// Sets attribute `name` of inode `ino` to `value`, as `flags` allow,
    /// and the inode's ctime to now. One transaction. A POSIX ACL is set as
    /// [`Xattrs::set_by`] does for a setter who keeps `S_ISGID`.
    pub fn set(&self, ino: u64, name: &[u8], value: &[u8], flags: XattrFlags) -> XattrResult<()> {
        self.set_by(ino, name, value, flags, true)
    }

    /// [`Xattrs::set`], for a setter who keeps `S_ISGID` when setting an
    /// access ACL only if `setter_keeps_setgid` (in the file's group, or
    /// privileged: `posix_acl_update_mode`).
    pub fn set_by(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        setter_keeps_setgid: bool,
    ) -> XattrResult<()> {
        if flags.create && flags.replace {
            return Err(XattrError::Invalid("both create and replace"));
        }
        check_name(name)?;
        let limit = self.max_value_len_for(name);
        if value.len() > limit {
            return Err(XattrError::ValueTooLarge {
                length: value.len(),
                limit,
            });
        }
        if is_acl_name(name) {
            return self.set_acl(ino, name, value, flags, setter_keeps_setgid);
        }
        let _writer = self.metadata.lock_records();
        let mut transaction = self.metadata.trees.transaction();
        let record = read_inode(&transaction, ino)?;
        if is_user_name(name) && !holds_user_attributes(record.file_type()) {
            return Err(XattrError::NotPermitted(
                "user.* attributes on a file that is not regular or a directory",
            ));
        }
        let replaced = check_flags(&transaction, ino, name, flags)?;
        if replaced.is_none() {
            check_list_room(&transaction, ino, name)?;
        }
        if replaced.is_some_and(|length| value.len() <= length) {
            // A value no longer than the one it replaces frees space, as a
            // removal does: a filesystem that attributes filled must let
            // their owner shrink them (the b-tree's copy-on-write needs
            // blocks before it gives any back).
            transaction.may_use_reserve();
        }
        self.put_in(&mut transaction, ino, name, value)?;
        commit_with_ctime(transaction, ino, record)
    }

    /// Sets POSIX ACL `name` of `ino` from its attribute value, with the
    /// mode kept to match (see the module comment); `keep_setgid` false
    /// clears `S_ISGID`. A value with no entries removes the ACL.
    fn set_acl(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        keep_setgid: bool,
    ) -> XattrResult<()> {
        let acl = if Acl::is_empty_value(value) {
            None
        } else {
            Some(Acl::decode(value).map_err(|_| XattrError::Invalid("not a valid POSIX ACL"))?)
        };
        let _writer = self.metadata.lock_records();
        let mut transaction = self.metadata.trees.transaction();
        let mut record = read_inode(&transaction, ino)?;
        let replaced = check_flags(&transaction, ino, name, flags)?;
        // An ACL the mode says all of stores nothing (`cp -a` sends one):
        // only one that is stored takes a place in the list (review 55).
        let stores = |acl: &Acl| name == acl::DEFAULT_NAME || !acl.is_minimal();
        if replaced.is_none() && acl.as_ref().is_some_and(stores) {
            check_list_room(&transaction, ino, name)?;
        }
        if record.file_type() == FileType::Symlink {
            return Err(XattrError::NotSupported("ACLs on a symbolic link"));
        }
        if name == acl::DEFAULT_NAME {
            if record.file_type() != FileType::Directory {
                // Removing what cannot exist succeeds (`set_posix_acl`).
                return match acl {
                    Some(_) => Err(XattrError::Denied("a default ACL on a non-directory")),
                    None => Ok(()),
                };
            }
            match &acl {
                Some(acl) => self.put_in(&mut transaction, ino, name, &acl.encode())?,
                None => {
                    remove_in(&mut transaction, ino, name)?;
                }
            }
        } else {
            match &acl {
                Some(acl) => {
                    record.mode = (record.mode & !0o777) | acl.mode_bits();
                    if acl.is_minimal() {
                        remove_in(&mut transaction, ino, name)?;
                    } else {
                        self.put_in(&mut transaction, ino, name, &acl.encode())?;
                    }
                    if !keep_setgid {
                        record.mode &= !0o2000;
                    }
                }
                None => {
                    remove_in(&mut transaction, ino, name)?;
                }
            }
        }
        commit_with_ctime(transaction, ino, record)
    }

    /// Writes attribute `name` of `ino` inside `transaction`, inline or in
    /// pieces, replacing any value it had. The length was checked.
    fn put_in(
        &self,
        transaction: &mut Transaction<'_>,
        ino: u64,
        name: &[u8],
        value: &[u8],
    ) -> XattrResult<()> {
        storage::put(transaction, self.max_inline_len(), ino, name, value)
    }

    /// Inode `ino`'s access ACL, if it has one (one lookup; a stored value
    /// that is not a valid ACL is corruption).
    pub fn access_acl(&self, ino: u64) -> XattrResult<Option<Acl>> {
        // An ACL of many entries is in pieces (review 35: a permission
        // check racing a chmod or setfacl of one was EIO).
        self.value_of(ino, acl::ACCESS_NAME, |_| Ok(()))?
            .map(|value| decode_acl(ino, acl::ACCESS_NAME, &value))
            .transpose()
    }

    /// The names of inode `ino`'s attributes, in byte order.
    pub fn list(&self, ino: u64) -> XattrResult<Vec<Vec<u8>>> {
        // A long name is read from its record's content, which may be in
        // pieces: a set committing between their reads tears them into
        // what looks like damage (review 35: listxattr racing a setxattr
        // of a long name was EIO, and errors= made the mount read-only).
        // Read again under the record lock; real damage stays damage. A
        // torn read never passes for another name: a digest record's name
        // must hash to its key.
        self.metadata.read_records(
            || {
                let transaction = self.metadata.trees.transaction();
                let record = read_inode(&transaction, ino)?;
                let names = storage::names(&transaction, ino)?;
                // A record no set could have made is damage (fsck says
                // so too), not a name to hand a program that would then
                // fail to get, copy or remove it.
                for name in &names {
                    let refused = check_name(name).err().or_else(|| {
                        (is_user_name(name) && !holds_user_attributes(record.file_type()))
                            .then_some(XattrError::NotPermitted("user attributes on this type"))
                    });
                    if let Some(error) = refused {
                        return Err(XattrError::Corrupt(format!(
                            "inode {ino}: an attribute named {:?}, which no set accepts ({error})",
                            String::from_utf8_lossy(name)
                        )));
                    }
                }
                Ok(names)
            },
            |error| matches!(error, XattrError::Corrupt(_)),
        )
    }

    /// Removes attribute `name` of inode `ino` (`ENODATA` if it has none)
    /// and sets the inode's ctime to now. One transaction.
    pub fn remove(&self, ino: u64, name: &[u8]) -> XattrResult<()> {
        check_name(name)?;
        let _writer = self.metadata.lock_records();
        let mut transaction = self.metadata.trees.transaction();
        let record = read_inode(&transaction, ino)?;
        if is_user_name(name) && !holds_user_attributes(record.file_type()) {
            return Err(XattrError::NotPermitted(
                "user.* attributes on a file that is not regular or a directory",
            ));
        }
        // A removal frees space: like an unlink, it may use the reserve,
        // so a filesystem that attributes filled can be emptied.
        transaction.may_use_reserve();
        if !remove_in(&mut transaction, ino, name)? {
            // Removing an ACL that is not there succeeds, as on Linux's own
            // filesystems: the kernel asks for it when an ACL set says no
            // more than the mode (`setfacl -m u::rw`, an empty ACL).
            return if is_acl_name(name) {
                Ok(())
            } else {
                Err(XattrError::NoData)
            };
        }
        commit_with_ctime(transaction, ino, record)
    }
}
