//! Where injected delays are served: a request held by a delay rule waits
//! here, and a change of the rules (a rule removed, all cleared) ends every
//! wait in progress at once. A user who clears a 60 s delay expects the
//! callers it holds to go on now, not when their sleep would have ended.
//!
//! Invariant: no wait is longer than [`bounded_delay`] of what was asked,
//! and none outlives a release that came after it began.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::rule::bounded_delay;

/// Waits of injected delays, and their release.
#[derive(Debug, Default)]
pub struct DelayGate {
    /// Bumped by every release; a wait ends when it changes.
    releases: Mutex<u64>,
    released: Condvar,
}

impl DelayGate {
    /// Holds the calling thread for `delay` (at most what one rule may
    /// add), or until [`DelayGate::release_all`].
    pub fn hold(&self, delay: Duration) {
        let delay = bounded_delay(delay);
        if delay.is_zero() {
            return;
        }
        let deadline = Instant::now() + delay;
        let mut releases = self.releases.lock().unwrap_or_else(PoisonError::into_inner);
        let began = *releases;
        while *releases == began {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            releases = self
                .released
                .wait_timeout(releases, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Ends every wait in progress: the rules that set them changed.
    pub fn release_all(&self) {
        *self.releases.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_release_ends_a_wait_in_progress_and_not_a_later_one() {
        let gate = Arc::new(DelayGate::default());
        let waiting = Arc::clone(&gate);
        let started = Instant::now();
        let waiter = std::thread::spawn(move || waiting.hold(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(100));
        gate.release_all();
        waiter.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        // A wait that begins after the release serves its time.
        let started = Instant::now();
        gate.hold(Duration::from_millis(150));
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}
