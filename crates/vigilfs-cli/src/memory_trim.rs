//! Giving the memory the page cache let go back to the system.
//!
//! The mount's page cache frees its pages when files are deleted or
//! truncated, or clean pages are evicted; but glibc's allocator keeps
//! freed memory in the arenas of the threads that used it, so the
//! daemon's resident size stays at its peak: 900 MB after a user's
//! 400 MB files were written and deleted, with nothing cached (review
//! 32). A thread compares, every [`INTERVAL`], the resident size with what
//! the cache holds; when the rest is over [`SLACK`] and grew by as much
//! since the last trim, or the last trim is [`AGAIN`] old, it asks the
//! allocator to return its free pages (`malloc_trim`). A mount whose
//! memory is its cache pays nothing; one whose other memory is large
//! pays a trim every [`AGAIN`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine_slot::EngineSlot;

/// How often the cache is looked at.
const INTERVAL: Duration = Duration::from_secs(2);
/// How far memory beyond the cache may grow before a trim.
const SLACK: u64 = 32 << 20;
/// How long after a trim memory beyond the cache is trimmed again even
/// if it did not grow.
const AGAIN: Duration = Duration::from_secs(30);

/// The trimming thread; stopped when dropped.
pub struct Trimmer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread watching the engine in `slot`.
pub fn spawn(slot: Arc<EngineSlot>) -> std::io::Result<Trimmer> {
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("vigilfs-trim".into())
            .spawn(move || watch(&slot, &stop))?
    };
    Ok(Trimmer {
        stop,
        thread: Some(thread),
    })
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn watch(slot: &EngineSlot, stop: &AtomicBool) {
    // Resident bytes beyond the cache after the last trim (what the
    // allocator could not give back then, or the engine's other memory),
    // and when that was.
    let mut floor = 0u64;
    let mut trimmed_at: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        std::thread::park_timeout(INTERVAL);
        // Held only to read the counters: the unmount waits for holders.
        let Some(cached) = slot.current().map(|fs| fs.status().cached_bytes) else {
            continue;
        };
        let Some(resident) = resident_bytes() else {
            return;
        };
        let beyond = resident.saturating_sub(cached);
        // Memory freed after a trim, while the rest stays, is trimmed
        // again a while later (review 33: a trim in the middle of a
        // deletion left 90 MiB for good).
        let stale = trimmed_at.is_none_or(|at| at.elapsed() >= AGAIN);
        if beyond > SLACK && (beyond > floor.saturating_add(SLACK) || stale) {
            trim();
            trimmed_at = Some(Instant::now());
            floor = resident_bytes().map_or(floor, |after| after.saturating_sub(cached));
        }
    }
}

/// This process's resident size.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(target_env = "gnu")]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own arenas under
    // their locks; it takes no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn trim() {}
