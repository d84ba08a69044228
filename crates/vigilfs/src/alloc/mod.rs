//! Block allocation for the main region.
//!
//! Free space is derived, not stored: the reverse map names the owner of
//! every used block, so at mount the free space is the region minus what
//! the rmap covers, and from then on transactions keep it current. Blocks
//! freed at journal sequence `s` are handed out again only once `s` is
//! durable, and known-bad blocks never are. See [`FreeSpace`].

mod free_space;

pub use free_space::{AllocError, Extent, FreeSpace};
