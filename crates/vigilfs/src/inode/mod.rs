//! Inodes, directories and files: the namespace kept in the b-trees.
//!
//! `record.rs` defines the records: the inode attributes, directory entries
//! and file extents as b-tree keys and values, which fsck cross-checks.
//! `namespace.rs` holds the namespace operations on them ([`Namespace`]:
//! lookup, mknod, mkdir, symlink, link, unlink, rmdir, rename, readdir,
//! setattr), each one atomic b-tree transaction; removing a file's last
//! link deletes its extents too and frees their blocks. `file.rs` holds
//! file data ([`Files`]: open handles, the page cache, read, write,
//! copy-on-write writeback, truncate, fsync and syncfs with errseq error
//! reporting).

mod file;
mod namespace;
mod record;

pub use file::{
    CacheStats, FallocateMode, FileError, FileResult, Files, Handle, Seek, WritebackSummary,
    DEFAULT_CACHE_BUDGET, PAGE_BYTES,
};
pub use namespace::{
    DirCookie, DirEntry, Namespace, NamespaceError, NamespaceResult, RenameFlags, SetAttr, SetTime,
};
pub use record::{
    decode_inode_key, inode_key, name_hash, valid_name, Dirent, DirentKey, Extent, ExtentKey,
    FileType, InodeRecord, RecordError, Timestamp, MAX_EXTENT_BLOCKS, MAX_NAME_BYTES, ROOT_INO,
};
