//! Helpers shared by the file-data tests.

use vigilfs::btree::TreeId;
use vigilfs::inode::{Extent, ExtentKey};
use vigilfs::metadata::Metadata;

/// `ino`'s committed extents, as (file offset in blocks, extent).
pub fn extents(metadata: &Metadata, ino: u64) -> Vec<(u64, Extent)> {
    let (start, end) = ExtentKey::file_range(ino);
    metadata
        .trees
        .scan(
            TreeId::Extents,
            &start,
            end.as_ref().map(|end| &end[..]),
            usize::MAX,
        )
        .expect("scan")
        .into_iter()
        .map(|(key, value)| {
            (
                ExtentKey::decode(&key).unwrap().offset,
                Extent::decode(&value).unwrap(),
            )
        })
        .collect()
}
