//! Inodes, directories and files: the namespace kept in the b-trees.
//!
//! `record.rs` defines the records: the inode attributes, directory entries
//! and file extents as b-tree keys and values, which fsck cross-checks.
//! `namespace/` holds the namespace operations on them ([`Namespace`]:
//! lookup, mknod, mkdir, symlink, link, unlink, rmdir, rename, readdir,
//! setattr), each one atomic b-tree transaction; removing a file's last
//! link deletes its extents too and frees their blocks. `file.rs` holds
//! file data ([`Files`]: open handles, the page cache, read, write,
//! copy-on-write writeback, truncate, fsync and syncfs with errseq error
//! reporting). `xattr.rs` holds extended attributes in the Xattrs tree
//! ([`Xattrs`]: get, set, list, remove), POSIX ACLs among them (`acl.rs`:
//! their format and Linux's rules for them). `permission/`
//! holds Linux permission rules as pure functions over inode records
//! ([`check_access`], sticky delete, new-inode ownership, setattr, suid
//! clearing on write, xattr namespaces) for the mounted layer to call
//! first.

pub mod acl;
pub(crate) mod extents;
mod file;
pub(crate) mod file_error;
pub mod inode_flags;
mod namespace;
mod paths;
mod permission;
mod record;
pub(crate) mod recovered_reads;
mod xattr;

pub use crate::pagecache::{CacheStats, DEFAULT_CACHE_BUDGET, PAGE_BYTES};
pub use crate::writeback::{FailureListener, WritebackSummary};
pub use file::{FallocateMode, Files, FsyncErrors, Handle, Seek, Unwritten, MAX_READ_BYTES};
pub use file_error::{FileError, FileResult};
pub(crate) use namespace::{decode_live_inodes, read_symlink_target, LIVE_INODES_KEY};
pub use namespace::{
    Creation, DirCookie, DirEntry, Namespace, NamespaceError, NamespaceResult, RenameFlags,
    SetAttr, SetTime, MAX_LINKS,
};
pub use paths::{from_printable, paths_of, printable, shows_wrongly};
pub use permission::{
    check_access, check_access_with_acl, check_setattr, check_setattr_with_acl,
    check_sticky_delete, check_xattr_access, check_xattr_access_with_acl, check_xattr_removal,
    kill_suid_on_write, new_inode_owner, xattr_listable, Access, Adjusted, Caller, PermResult,
    PermissionError, SetAttrRequest, SupplementaryGroups, TimeChange,
};
pub use record::{
    decode_inode_key, inode_key, name_hash, valid_name, Dirent, DirentKey, Extent, ExtentKey,
    FileType, InodeRecord, RecordError, Timestamp, MAX_EXTENT_BLOCKS, MAX_NAME_BYTES, ROOT_INO,
};
pub(crate) use xattr::{
    audit_record as audit_xattr_record, is_piece as is_xattr_piece,
    is_piece_of as is_xattr_piece_of, owner_of_key as xattr_owner,
};
pub use xattr::{delete_all as delete_all_xattrs, XattrError, XattrFlags, XattrResult, Xattrs};
