//! The engine a mount serves now.
//!
//! A power cut in the crash lab replaces a mount's engine with the one
//! mounted after it, at the same mount point, under the same control
//! socket. So nothing that serves the mount keeps an engine of its own: the
//! control server, the metrics endpoint and event streams look it up here
//! for each request.
//!
//! Invariants: the slot is the only long-lived strong holder of the engine;
//! a request holds it only while it executes, so when the mount process
//! [`EngineSlot::take`]s it out to unmount, the engine is free at once
//! (a stuck client never holds an unmount). The generation counts
//! replacements, so a long-lived reader (an event stream) notices that the
//! engine it follows is not the mount's any more.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use vigilfs::fs::events::EventLog;
use vigilfs::fs::{Filesystem, PATH_SEARCH_BUDGET};

/// The newest events whose files are named for listeners during an
/// unmount, and how many of those files may be searched for in the
/// namespace (the rest only by the names lookups taught the mount).
const EVENTS_NAMED_AT_UNMOUNT: usize = 256;
const SEARCHES_AT_UNMOUNT: usize = 16;
/// Events whose path when announced is kept (the newest).
const ANNOUNCED_PATHS: usize = 4096;

/// See the module comment.
#[derive(Debug)]
pub struct EngineSlot {
    engine: RwLock<Option<Arc<Filesystem>>>,
    generation: AtomicU64,
    /// The event log of the engine taken out to unmount: a reader that
    /// noticed a replacement late still reads the last engine's events.
    last_event_log: RwLock<Option<Arc<EventLog>>>,
    /// Paths of the files the unmount still writes back, remembered before
    /// it starts: the errors of that last writeback come when the engine is
    /// no longer here to ask, and an event that says data was lost must
    /// still name the file.
    last_paths: RwLock<HashMap<u64, String>>,
    /// The path each of the newest events' files had when the daemon
    /// logged the event, by event id: a file renamed or deleted since
    /// (PostgreSQL recycles its WAL segments by renaming them) is named as
    /// it was when it failed, not by the name it has now (review 51).
    announced_paths: Mutex<BTreeMap<u64, String>>,
}

impl EngineSlot {
    /// A slot serving `engine`.
    pub fn new(engine: Arc<Filesystem>) -> Arc<EngineSlot> {
        Arc::new(EngineSlot {
            engine: RwLock::new(Some(engine)),
            generation: AtomicU64::new(0),
            last_event_log: RwLock::new(None),
            last_paths: RwLock::new(HashMap::new()),
            announced_paths: Mutex::new(BTreeMap::new()),
        })
    }

    /// Keeps `path` as the one event `id`'s file had when it was
    /// announced (the oldest kept is forgotten past [`ANNOUNCED_PATHS`]).
    pub fn remember_announced_path(&self, id: u64, path: String) {
        let mut paths = self
            .announced_paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        paths.insert(id, path);
        while paths.len() > ANNOUNCED_PATHS {
            paths.pop_first();
        }
    }

    /// The path event `id`'s file had when it was announced, if kept.
    pub fn announced_path(&self, id: u64) -> Option<String> {
        self.announced_paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// A path of inode `ino` the mount learned from lookups, as events show
    /// paths (`/a/b`): no search of the namespace, so cheap enough for
    /// every event. Once the engine is taken out to unmount, the paths
    /// [`EngineSlot::remember_paths_for_unmount`] kept.
    pub fn known_path(&self, ino: u64) -> Option<String> {
        let learnt = self.current().and_then(|fs| {
            fs.known_paths(ino)
                .into_iter()
                .next()
                .map(|path| format!("/{path}"))
        });
        // The kept ones also while the engine is still here but going: the
        // kernel may have made it forget the names already.
        learnt.or_else(|| {
            self.last_paths
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&ino)
                .cloned()
        })
    }

    /// Whether an event's (`ino`, `generation`) still names inode `ino` of
    /// the engine serving now ([`Filesystem::is_same_inode`]); taken as so
    /// once no engine serves (the paths kept for the unmount are of that
    /// mount's own inodes).
    pub fn is_same_inode(&self, ino: u64, generation: Option<u64>) -> bool {
        self.current()
            .is_none_or(|fs| fs.is_same_inode(ino, generation))
    }

    /// Whether the serving engine says the file (`ino`, `generation`) was
    /// deleted ([`Filesystem::is_deleted`]); `None` when none serves.
    pub fn is_deleted(&self, ino: u64, generation: Option<u64>) -> Option<bool> {
        self.current().map(|fs| fs.is_deleted(ino, generation))
    }

    /// Keeps the paths of `fs`'s files with data not written back, and of
    /// those its newest events name, for [`EngineSlot::known_path`] during
    /// its unmount: what the unmount reports, and what listeners still
    /// read, names its files.
    pub fn remember_paths_for_unmount(&self, fs: &Filesystem) {
        let mut paths: HashMap<u64, String> = fs
            .unsynced()
            .data
            .into_iter()
            .filter_map(|file| Some((file.ino, format!("/{}", file.paths.first()?))))
            .collect();
        let mut searches = SEARCHES_AT_UNMOUNT;
        for ino in fs.event_log().recent_inodes(EVENTS_NAMED_AT_UNMOUNT) {
            let Entry::Vacant(vacant) = paths.entry(ino) else {
                continue;
            };
            let known = fs.known_paths(ino).into_iter().next();
            let path = match known {
                Some(path) => Some(format!("/{path}")),
                None if searches > 0 => {
                    searches -= 1;
                    fs.path_of(ino, PATH_SEARCH_BUDGET)
                }
                None => None,
            };
            if let Some(path) = path {
                vacant.insert(path);
            }
        }
        *self
            .last_paths
            .write()
            .unwrap_or_else(PoisonError::into_inner) = paths;
    }

    /// The engine served now; `None` once taken out to unmount.
    pub fn current(&self) -> Option<Arc<Filesystem>> {
        self.engine
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times the engine was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Serves `engine` from now on; returns the one it replaces.
    pub fn replace(&self, engine: Arc<Filesystem>) -> Option<Arc<Filesystem>> {
        let mut slot = self.engine.write().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        slot.replace(engine)
    }

    /// Takes the engine out (to unmount it): from now on nothing is served.
    pub fn take(&self) -> Option<Arc<Filesystem>> {
        let taken = self
            .engine
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(engine) = &taken {
            *self
                .last_event_log
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(engine.event_log()));
        }
        taken
    }

    /// The event log of the engine served now, or of the last one once it
    /// was taken out.
    pub fn event_log(&self) -> Option<Arc<EventLog>> {
        match self.current() {
            Some(engine) => Some(Arc::clone(engine.event_log())),
            None => self
                .last_event_log
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}
