//! What the filesystem has learnt of each inode's names, so a fault rule
//! aimed at a path glob can tell which inode an operation or a data
//! request belongs to.
//!
//! Every lookup, readdirplus entry, create, link and rename teaches a
//! (parent, name) entry; unlink, rmdir and rename unteach it, and so does
//! the kernel's forget of an inode nothing else needs a name for (no data
//! waiting for writeback, no known entry below it): what is known stays
//! what the kernel holds, bounded by its cache, not every name seen since
//! the mount. A name forgotten so is learnt again at the next lookup. The
//! entries are kept both ways:
//! by inode (its names, for building paths up to the root) and by
//! directory entry (which inode it names, at most one), so learning and
//! forgetting a name cost the same in a directory of a million files as
//! in one of ten. Names are only ever learnt from operations that passed
//! through the filesystem, so a name may be missing (an inode reached by
//! file handle): its paths are then unknown, never wrong.

use std::collections::HashMap;

use crate::inode::{printable, ROOT_INO};

/// The most path components followed up to the root (a cycle, or a tree
/// deeper than this, gives no path).
const MAX_DEPTH: usize = 256;

/// Known (parent, name) entries, by inode and by entry. See the module
/// comment.
#[derive(Default)]
pub(super) struct KnownNames {
    /// Inode → its entries, in the order learnt (a directory's first is
    /// its path).
    by_inode: HashMap<u64, Vec<(u64, Vec<u8>)>>,
    /// Directory → name → the inode the entry names.
    by_entry: HashMap<u64, HashMap<Vec<u8>, u64>>,
}

impl KnownNames {
    /// `name` in `parent` is `ino` (whatever it named before).
    pub(super) fn learn(&mut self, parent: u64, name: &[u8], ino: u64) {
        let entries = self.by_entry.entry(parent).or_default();
        match entries.insert(name.to_vec(), ino) {
            Some(known) if known == ino => return,
            Some(previous) => self.drop_from_inode(previous, parent, name),
            None => {}
        }
        self.by_inode
            .entry(ino)
            .or_default()
            .push((parent, name.to_vec()));
    }

    /// `name` in `parent` names nothing any more.
    pub(super) fn forget(&mut self, parent: u64, name: &[u8]) {
        if let Some(ino) = self.take_entry(parent, name) {
            self.drop_from_inode(ino, parent, name);
        }
    }

    /// Drops every name of `ino` (the kernel forgot it), unless it is a
    /// directory with a name known below it, which the paths of those
    /// names need. Returns whether its names went.
    pub(super) fn forget_inode(&mut self, ino: u64) -> bool {
        if self.by_entry.contains_key(&ino) {
            return false;
        }
        for (parent, name) in self.by_inode.remove(&ino).unwrap_or_default() {
            let names_it = self
                .by_entry
                .get(&parent)
                .and_then(|entries| entries.get(&name))
                == Some(&ino);
            if names_it {
                self.take_entry(parent, &name);
            }
        }
        true
    }

    /// `from` now names what `to` named, and the other way round with
    /// `exchange`; without it, whatever `to` named loses that name.
    pub(super) fn rename(&mut self, from: (u64, &[u8]), to: (u64, &[u8]), exchange: bool) {
        let moved = self.take_entry(from.0, from.1);
        let replaced = self.take_entry(to.0, to.1);
        if let Some(ino) = moved {
            self.drop_from_inode(ino, from.0, from.1);
        }
        if let Some(ino) = replaced {
            self.drop_from_inode(ino, to.0, to.1);
        }
        if let Some(ino) = moved {
            self.learn(to.0, to.1, ino);
        }
        if let (true, Some(ino)) = (exchange, replaced) {
            self.learn(from.0, from.1, ino);
        }
    }

    /// Every known path of `ino`, relative to the root.
    pub(super) fn paths(&self, ino: u64) -> Vec<String> {
        self.by_inode
            .get(&ino)
            .into_iter()
            .flatten()
            .filter_map(|(parent, name)| self.entry_path(*parent, name))
            .collect()
    }

    /// The path of entry `name` of directory `parent`, relative to the
    /// root, if the directory's path is known.
    pub(super) fn entry_path(&self, parent: u64, name: &[u8]) -> Option<String> {
        let prefix = self.path_of_directory(parent)?;
        let name = printable(name);
        Some(if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        })
    }

    /// The path of directory `dir` relative to the root ("" for the root),
    /// if every component up to it is known.
    fn path_of_directory(&self, mut dir: u64) -> Option<String> {
        let mut parts = Vec::new();
        for _ in 0..MAX_DEPTH {
            if dir == ROOT_INO {
                parts.reverse();
                return Some(parts.join("/"));
            }
            let (parent, name) = self.by_inode.get(&dir)?.first()?;
            parts.push(printable(name));
            dir = *parent;
        }
        None
    }

    fn take_entry(&mut self, parent: u64, name: &[u8]) -> Option<u64> {
        let entries = self.by_entry.get_mut(&parent)?;
        let ino = entries.remove(name);
        if entries.is_empty() {
            self.by_entry.remove(&parent);
        }
        ino
    }

    fn drop_from_inode(&mut self, ino: u64, parent: u64, name: &[u8]) {
        if let Some(names) = self.by_inode.get_mut(&ino) {
            names.retain(|(known_parent, known)| !(*known_parent == parent && known == name));
            if names.is_empty() {
                self.by_inode.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut paths: Vec<String>) -> Vec<String> {
        paths.sort();
        paths
    }

    #[test]
    fn paths_follow_links_renames_exchanges_and_unlinks() {
        let mut names = KnownNames::default();
        names.learn(ROOT_INO, b"dir", 10);
        names.learn(10, b"a", 11);
        names.learn(ROOT_INO, b"hard", 11);
        assert_eq!(sorted(names.paths(11)), ["dir/a", "hard"]);
        names.learn(10, b"b", 12);
        // Rename over b: b's inode loses its only name.
        names.rename((10, b"a"), (10, b"b"), false);
        assert_eq!(sorted(names.paths(11)), ["dir/b", "hard"]);
        assert!(names.paths(12).is_empty());
        names.learn(ROOT_INO, b"other", 13);
        names.rename((10, b"b"), (ROOT_INO, b"other"), true);
        assert_eq!(sorted(names.paths(11)), ["hard", "other"]);
        assert_eq!(names.paths(13), ["dir/b"]);
        // A directory renamed moves every path under it.
        names.rename((ROOT_INO, b"dir"), (ROOT_INO, b"moved"), false);
        assert_eq!(names.paths(13), ["moved/b"]);
        names.forget(ROOT_INO, b"hard");
        assert_eq!(names.paths(11), ["other"]);
        names.forget(ROOT_INO, b"other");
        assert!(names.paths(11).is_empty());
        assert!(!names.by_inode.contains_key(&11));
    }

    #[test]
    fn an_entry_learnt_again_for_another_inode_names_only_that_one() {
        let mut names = KnownNames::default();
        names.learn(ROOT_INO, b"f", 20);
        names.learn(ROOT_INO, b"f", 20);
        assert_eq!(names.paths(20), ["f"]);
        // Replaced behind our back (say, by another mount of the image's
        // history): the newer answer wins.
        names.learn(ROOT_INO, b"f", 21);
        assert!(names.paths(20).is_empty());
        assert_eq!(names.paths(21), ["f"]);
    }

    #[test]
    fn an_inode_forgotten_loses_its_names_unless_names_below_need_it() {
        let mut names = KnownNames::default();
        names.learn(ROOT_INO, b"dir", 10);
        names.learn(10, b"a", 11);
        names.learn(ROOT_INO, b"hard", 11);
        assert!(!names.forget_inode(10), "dir/a needs the directory's name");
        assert_eq!(names.paths(11).len(), 2);
        assert!(names.forget_inode(11));
        assert!(names.paths(11).is_empty());
        assert!(names.forget_inode(10));
        assert!(names.by_inode.is_empty() && names.by_entry.is_empty());
        // Learnt again at the next lookup.
        names.learn(ROOT_INO, b"dir", 10);
        names.learn(10, b"a", 11);
        assert_eq!(names.paths(11), ["dir/a"]);
    }

    #[test]
    fn forgetting_a_name_in_a_huge_directory_touches_only_that_entry() {
        let mut names = KnownNames::default();
        for number in 0..50_000u64 {
            names.learn(ROOT_INO, format!("f{number}").as_bytes(), 100 + number);
        }
        for number in 0..50_000u64 {
            names.forget(ROOT_INO, format!("f{number}").as_bytes());
        }
        assert!(names.by_inode.is_empty());
        assert!(names.by_entry.is_empty());
    }
}
