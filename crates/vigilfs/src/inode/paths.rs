//! From inodes back to their names: every path naming each of a set of
//! inodes, for reports that must say which files a failure hit.
//!
//! Directory entries are keyed by parent, so there is no index from a
//! child to its names; this walks the entries once for the whole set
//! (answering many inodes costs one walk, not one each). A file's paths
//! are its hard links; a directory's names come from the entry naming it,
//! then its parents' up to the root. Orphans (open but unlinked) have
//! none. A parent chain that does not reach the root within
//! [`MAX_DEPTH`] steps is reported as damage, never followed forever.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::namespace::NamespaceError;
use super::record::{Dirent, DirentKey, FileType, ROOT_INO};
use crate::btree::{Btrees, TreeId};

/// Longest chain of directories followed up to the root.
const MAX_DEPTH: usize = 4096;

/// Every path naming each inode of `wanted`, sorted, as bytes (`/`
/// separated, from the root). Inodes with no name get no entry.
pub fn paths_of(
    trees: &Btrees,
    wanted: &BTreeSet<u64>,
) -> Result<BTreeMap<u64, Vec<Vec<u8>>>, NamespaceError> {
    let mut links: HashMap<u64, Vec<(u64, Vec<u8>)>> = HashMap::new();
    // Each directory's one entry: its parent and name.
    let mut directories: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
    for entry in trees.range(TreeId::Dirents, &[], None) {
        let (key, value) = entry?;
        let key = DirentKey::decode(&key)
            .map_err(|error| NamespaceError::Corrupt(format!("directory entry key: {error}")))?;
        let dirent = Dirent::decode(&value)
            .map_err(|error| NamespaceError::Corrupt(format!("directory entry: {error}")))?;
        if dirent.file_type == FileType::Directory {
            directories.insert(dirent.child, (key.parent, dirent.name.clone()));
        }
        if wanted.contains(&dirent.child) {
            links
                .entry(dirent.child)
                .or_default()
                .push((key.parent, dirent.name));
        }
    }
    let mut found = BTreeMap::new();
    for &ino in wanted {
        let mut paths = Vec::new();
        if ino == ROOT_INO {
            paths.push(b"/".to_vec());
        }
        for (parent, name) in links.get(&ino).into_iter().flatten() {
            let mut components = vec![name.clone()];
            let mut at = *parent;
            let mut depth = 0;
            while at != ROOT_INO {
                depth += 1;
                let Some((up, name)) = directories.get(&at).filter(|_| depth <= MAX_DEPTH) else {
                    return Err(NamespaceError::Corrupt(format!(
                        "directory {at} does not lead back to the root"
                    )));
                };
                components.push(name.clone());
                at = *up;
            }
            let mut path = Vec::new();
            for component in components.iter().rev() {
                path.push(b'/');
                path.extend_from_slice(component);
            }
            paths.push(path);
        }
        if !paths.is_empty() {
            paths.sort();
            found.insert(ino, paths);
        }
    }
    Ok(found)
}
