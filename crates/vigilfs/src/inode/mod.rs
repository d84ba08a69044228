//! Inodes, directories and files: the namespace kept in the b-trees.
//!
//! So far this layer defines the records (see `record.rs`): the inode
//! attributes, directory entries and file extents as b-tree keys and
//! values, which fsck cross-checks. The operations on them (lookup, create,
//! read, write, the page cache and writeback) are built on top.

mod record;

pub use record::{
    decode_inode_key, inode_key, name_hash, valid_name, Dirent, DirentKey, Extent, ExtentKey,
    FileType, InodeRecord, RecordError, Timestamp, MAX_EXTENT_BLOCKS, MAX_NAME_BYTES, ROOT_INO,
};
