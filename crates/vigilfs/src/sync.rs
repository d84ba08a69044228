//! Synchronisation the engine builds on: the atomics its lock-free parts
//! use, swapped for loom's under `--cfg loom` so the loom tests explore every
//! interleaving of the real code; and a condition variable that makes no
//! system call to wake nobody.
//!
//! # Why a quiet condition variable
//!
//! std's `Condvar::notify_all` always makes a futex system call, waiters or
//! not. The engine notifies on every write and every fsync (a writer leaving
//! the freeze gate, a writeback landing in the page cache, a journal entry
//! closed or written): five wake calls per 4 KiB write + fsync, nearly
//! always for nobody, each costing more than the work it announces.
//! [`Condvar`] counts its sleepers and skips the call while there are none.
//!
//! The count is exact enough because of how condition variables are used:
//! a waiter counts itself while it still holds the mutex, before `wait`
//! releases it; a notifier changes the waited-for state under the same
//! mutex and reads the count afterwards. Either the waiter's critical
//! section came first, and the mutex carries its count to the notifier, who
//! wakes it; or the notifier's came first, and the waiter sees the new state
//! and never sleeps. A notify skipped for a zero count is one no sleeper
//! needed. (State changed without the mutex was never safe to wait on with
//! a condition variable; the count changes nothing there.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LockResult, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

/// std's condition variable, minus the system call of a notify nobody
/// waits for (see the module comment). Use it as std's, with every change
/// to the waited-for state made under the mutex.
#[derive(Debug, Default)]
pub(crate) struct Condvar {
    condvar: std::sync::Condvar,
    /// Threads inside `wait` or `wait_timeout`.
    sleepers: AtomicUsize,
}

impl Condvar {
    /// A condition variable nobody sleeps on.
    pub(crate) fn new() -> Condvar {
        Condvar::default()
    }

    /// Releases `guard`, sleeps until notified (or spuriously), and locks
    /// again; as [`std::sync::Condvar::wait`].
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let woken = self.condvar.wait(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        woken
    }

    /// Wakes every sleeper, if there is one.
    pub(crate) fn notify_all(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.condvar.notify_all();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Condvar;
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;

    /// Many rounds of a waiter and a notifier racing to the mutex: a
    /// skipped notify that a sleeper needed leaves the waiter asleep for
    /// good, which the watchdog turns into a failure instead of a hang.
    #[test]
    fn no_sleeper_misses_a_notify_it_needed() {
        let shared = Arc::new((Mutex::new(0u64), Condvar::new()));
        let rounds = 20_000;
        let (done, finished) = mpsc::channel();
        {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let (mutex, condvar) = &*shared;
                for round in 1..=rounds {
                    let mut seen = mutex.lock().unwrap();
                    while *seen < round {
                        seen = condvar.wait(seen).unwrap();
                    }
                }
                done.send(()).unwrap();
            });
        }
        let (mutex, condvar) = &*shared;
        for _ in 0..rounds {
            *mutex.lock().unwrap() += 1;
            condvar.notify_all();
            std::thread::yield_now();
        }
        finished
            .recv_timeout(Duration::from_secs(20))
            .expect("the waiter slept through a notify it needed");
        assert_eq!(
            condvar.sleepers.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }
}
