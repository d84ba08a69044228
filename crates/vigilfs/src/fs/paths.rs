//! Finding a path for an inode, for event listeners: inodes of regular
//! files keep no parent pointer, so the namespace is walked breadth-first
//! from the root until the inode is found or a budget of entries is spent.
//!
//! This is for people reading events, never for the error path: it reads
//! b-trees and may take a while on a large filesystem, so callers resolve
//! paths when they deliver an event, and a miss is just "no path".

use std::collections::VecDeque;

use super::Filesystem;
use crate::inode::{printable, FileType, NamespaceError, ROOT_INO};

/// Directory entries a search may look at.
pub const DEFAULT_BUDGET: usize = 100_000;

impl Filesystem {
    /// Whether `ino` is still the inode an event recorded as (`ino`,
    /// `generation`), so its path may name the event's file. After a crash
    /// an inode number is handed out again, to a new file with another
    /// generation: the lost file's events must not name it. Generations
    /// compare in their low 32 bits, as events and file handles keep them;
    /// an event without one (`None`) is taken at its word.
    pub fn is_same_inode(&self, ino: u64, generation: Option<u64>) -> bool {
        let Some(generation) = generation else {
            return true;
        };
        self.shared
            .namespace
            .getattr(ino)
            .is_ok_and(|record| record.generation as u32 == generation as u32)
    }

    /// Whether the file an event recorded as (`ino`, `generation`) is no
    /// longer in the namespace: its last name removed (it may still be
    /// open), the inode gone, or its number handed out again since. An
    /// inode that cannot be read is not called deleted.
    pub fn is_deleted(&self, ino: u64, generation: Option<u64>) -> bool {
        match self.shared.namespace.getattr(ino) {
            Ok(record) => {
                record.nlink == 0
                    || generation
                        .is_some_and(|generation| record.generation as u32 != generation as u32)
            }
            Err(NamespaceError::NotFound) => true,
            Err(_) => false,
        }
    }

    /// A path of `ino` from the mount's root ("/dir/file"), looking at no
    /// more than `budget` directory entries; `None` if it is not found
    /// within them (deleted, or too far).
    pub fn path_of(&self, ino: u64, budget: usize) -> Option<String> {
        if ino == ROOT_INO {
            return Some("/".into());
        }
        let namespace = &self.shared.namespace;
        let mut queue = VecDeque::from([(ROOT_INO, String::new())]);
        let mut spent = 0;
        while let Some((dir, path)) = queue.pop_front() {
            let mut after = None;
            loop {
                let entries = namespace.readdir(dir, after, 256).ok()?;
                let Some(last) = entries.last() else {
                    break;
                };
                after = Some(last.cookie);
                for entry in &entries {
                    spent += 1;
                    let name = printable(&entry.name);
                    let child = format!("{path}/{name}");
                    if entry.ino == ino {
                        return Some(child);
                    }
                    if entry.file_type == FileType::Directory {
                        queue.push_back((entry.ino, child));
                    }
                }
                if spent >= budget {
                    return None;
                }
            }
        }
        None
    }
}
