//! Where a request that may wait at the engine's write gate runs, so that
//! waiting writers never take every FUSE session thread.
//!
//! A frozen filesystem makes writers wait (they do not fail) until thaw,
//! in the thread that called the engine. Were that always a session
//! thread, as many waiting writers as there are session threads would
//! leave none to answer anything else: no read, no stat, no lookup until
//! thaw. So a request that may wait at the gate runs on its session thread
//! only while the filesystem is not frozen *and* fewer than
//! `threads - 1` session threads are inside such requests already;
//! otherwise it is handed, with its reply (fuser's replies are `Send`), to
//! a pool of waiting threads and the session thread goes back to the
//! kernel at once.
//!
//! Invariants:
//! * At most `threads - 1` session threads are ever inside a request that
//!   may wait at the gate, whatever the state and however a freeze races
//!   with the frozen check: at least one session thread always serves the
//!   requests that never wait there (lookup, getattr, read, readdir,
//!   statfs, xattr reads...). The frozen check only lets more of them stay
//!   free during a freeze.
//! * Every job handed off runs exactly once. The pool grows on demand up
//!   to [`MAX_WAITERS`] threads; past that, jobs queue in order (while
//!   frozen they would all wait for the same thaw anyway) and idle threads
//!   exit after [`IDLE_EXIT`]. Should no thread start at all, the job runs
//!   on the caller's thread: a request is never dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Most threads of the waiting pool.
const MAX_WAITERS: usize = 16;
/// An idle pool thread exits after this long without work.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// A request handed off, reply included.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The session threads' budget for requests that may wait at the gate,
/// and the pool that takes the rest.
pub(crate) struct Lanes {
    /// Session threads that may be inside such requests at once.
    inline_limit: usize,
    inline: AtomicUsize,
    pool: Arc<Pool>,
}

/// A session thread's permission to run a gated request itself; given
/// back when dropped.
pub(crate) struct InlineSlot<'a> {
    inline: &'a AtomicUsize,
}

impl Drop for InlineSlot<'_> {
    fn drop(&mut self) {
        self.inline.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lanes {
    /// Lanes for a session of `session_threads` threads.
    pub(crate) fn new(session_threads: usize) -> Lanes {
        Lanes {
            inline_limit: session_threads.saturating_sub(1),
            inline: AtomicUsize::new(0),
            pool: Arc::new(Pool {
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Whether a session thread may run a gated request itself (`Some`,
    /// held while it does), given whether the filesystem is `frozen`.
    pub(crate) fn inline_slot(&self, frozen: bool) -> Option<InlineSlot<'_>> {
        if frozen {
            return None;
        }
        let mut current = self.inline.load(Ordering::Acquire);
        loop {
            if current >= self.inline_limit {
                return None;
            }
            match self.inline.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(InlineSlot {
                        inline: &self.inline,
                    })
                }
                Err(now) => current = now,
            }
        }
    }

    /// Runs `job` on the waiting pool.
    pub(crate) fn hand_off(&self, job: Job) {
        Pool::submit(&self.pool, job);
    }
}

impl Drop for Lanes {
    /// The session is over: idle pool threads exit (queued jobs still run).
    fn drop(&mut self) {
        self.pool.lock().closed = true;
        self.pool.work.notify_all();
    }
}

struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    closed: bool,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Jobs run outside the lock and every update is a field store or
        // a queue operation: a poisoned lock holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn submit(pool: &Arc<Pool>, job: Job) {
        let mut state = pool.lock();
        state.jobs.push_back(job);
        // More queued than idle threads will take: one more thread.
        let spawn = state.jobs.len() > state.idle && state.threads < MAX_WAITERS;
        if spawn {
            state.threads += 1;
        }
        drop(state);
        pool.work.notify_one();
        if !spawn {
            return;
        }
        let worker = Arc::clone(pool);
        let started = std::thread::Builder::new()
            .name("vigilfs-waiter".into())
            .spawn(move || worker.work());
        if started.is_err() {
            let mut state = pool.lock();
            state.threads -= 1;
            if state.threads == 0 {
                // Nobody would run the queue: run it here.
                let jobs: Vec<Job> = state.jobs.drain(..).collect();
                drop(state);
                for job in jobs {
                    job();
                }
            }
        }
    }

    fn work(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                job();
                state = self.lock();
                continue;
            }
            if state.closed {
                break;
            }
            state.idle += 1;
            let (next, waited) = self
                .work
                .wait_timeout(state, IDLE_EXIT)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if waited.timed_out() && state.jobs.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn one_session_thread_always_stays_free_of_gated_requests() {
        let lanes = Lanes::new(3);
        let first = lanes.inline_slot(false).expect("a first slot");
        let second = lanes.inline_slot(false).expect("a second slot");
        assert!(
            lanes.inline_slot(false).is_none(),
            "the third thread stays free"
        );
        drop(first);
        let again = lanes.inline_slot(false).expect("a slot given back");
        assert!(
            lanes.inline_slot(true).is_none(),
            "frozen: always handed off"
        );
        drop((second, again));
        assert!(Lanes::new(1).inline_slot(false).is_none());
    }

    #[test]
    fn handed_off_jobs_all_run_even_when_many_wait_at_once() {
        let lanes = Lanes::new(2);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (done, finished) = mpsc::channel();
        let jobs = MAX_WAITERS * 3;
        for number in 0..jobs {
            let (gate, done) = (Arc::clone(&gate), done.clone());
            lanes.hand_off(Box::new(move || {
                let (open, opened) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = opened.wait(open).unwrap();
                }
                done.send(number).unwrap();
            }));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(finished.try_recv().is_err(), "all wait at the gate");
        assert!(lanes.pool.lock().threads <= MAX_WAITERS);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen: Vec<usize> = (0..jobs)
            .map(|_| {
                finished
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .expect("every job runs after the gate opens")
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..jobs).collect::<Vec<_>>());
    }
}
