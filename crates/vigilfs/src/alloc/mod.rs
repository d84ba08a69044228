//! Block allocation for the main region.
//!
//! Free space is derived, not stored: the reverse map names the owner of
//! every used block, so at mount the free space is the region minus what
//! the rmap covers, and from then on transactions keep it current. Blocks
//! freed at journal sequence `s` are handed out again only once `s` is
//! durable, and known-bad blocks never are. [`FreeSpace`] is that
//! accounting; [`Allocator`] builds it from the rmap at mount and serves
//! both b-tree nodes (as the b-trees' [`NodeAllocator`](crate::btree::NodeAllocator),
//! supplying the rmap records of node blocks) and file data.
//!
//! This layer sits above `btree` and uses `rmap`'s record format.

mod allocator;
pub mod bad_blocks;
mod free_space;

pub use allocator::{Allocator, AllocatorStatus, REWRITE_NODE_BLOCKS};
pub use bad_blocks::{BadRun, FailureCause};
pub use free_space::{AllocError, Extent, FreeSpace};
