//! The write gate: who may change the filesystem right now.
//!
//! Every operation that changes the filesystem (writes, namespace changes,
//! attribute changes, fallocate, xattrs) passes through [`Gate::enter`] and
//! holds the returned [`WriteGuard`] until it is done. The gate is the
//! filesystem's life state:
//!
//! * **running**: writers enter freely;
//! * **frozen** ([`Gate::begin_freeze`]): new writers *wait* (they do not get
//!   `EROFS`: an application writing during a snapshot must not see an
//!   error), and the freezer waits until the writers already inside have
//!   left; [`Gate::thaw`] lets the waiting writers in;
//! * **read-only** (mounted `ro`, or the `errors=remount-ro` policy acted):
//!   writers fail with `EROFS`; [`Gate::make_writable`] opens it again
//!   (the engine allows that only for a mount made read-only by its
//!   options);
//! * **shut down**: writers fail with `EIO`; final.
//!
//! Invariants: the count of writers inside never goes below zero; once
//! [`Gate::begin_freeze`] returns, no writer is inside until [`Gate::thaw`]; a
//! shut-down gate never opens again. Waiting writers are woken by thaw and
//! by shutdown (which they then fail on), never left behind.

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::error::{FsError, FsResult};
use crate::sync::Condvar;

/// The filesystem's life state, as status reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifeState {
    /// Serving reads and writes.
    Running,
    /// Frozen: writers wait, reads go on, nothing is dirty.
    Frozen,
    /// Read-only; the reason (the `ro` option, or the error that made the
    /// `errors=remount-ro` policy act).
    ReadOnly(String),
    /// Shut down; the reason.
    ShutDown(String),
}

impl LifeState {
    /// A one-word name: running, frozen, read-only, shut-down.
    pub fn name(&self) -> &'static str {
        match self {
            LifeState::Running => "running",
            LifeState::Frozen => "frozen",
            LifeState::ReadOnly(_) => "read-only",
            LifeState::ShutDown(_) => "shut-down",
        }
    }
}

struct Inner {
    state: LifeState,
    writers: u64,
    /// A freeze in progress or done: new writers wait from the moment a
    /// freeze begins, before the state says frozen.
    freezing: bool,
}

/// See the module comment.
pub struct Gate {
    inner: Mutex<Inner>,
    changed: Condvar,
}

/// A writer inside the gate; leaving is dropping it.
pub struct WriteGuard<'a> {
    gate: &'a Gate,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut inner = self.gate.lock();
        inner.writers -= 1;
        if inner.writers == 0 {
            self.gate.changed.notify_all();
        }
    }
}

impl Gate {
    /// A gate in `state`.
    pub fn new(state: LifeState) -> Gate {
        Gate {
            inner: Mutex::new(Inner {
                state,
                writers: 0,
                freezing: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a few field stores: a poisoned lock holds
        // consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'g>(&self, guard: MutexGuard<'g, Inner>) -> MutexGuard<'g, Inner> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current state.
    pub fn state(&self) -> LifeState {
        self.lock().state.clone()
    }

    /// Enters as a writer: waits while frozen, fails when read-only or
    /// shut down.
    pub fn enter(&self) -> FsResult<WriteGuard<'_>> {
        let mut inner = self.lock();
        loop {
            match &inner.state {
                LifeState::ReadOnly(why) => return Err(FsError::ReadOnly(Some(why.clone()))),
                LifeState::ShutDown(why) => return Err(FsError::ShutDown(why.clone())),
                LifeState::Running if !inner.freezing => break,
                LifeState::Running | LifeState::Frozen => inner = self.wait(inner),
            }
        }
        inner.writers += 1;
        Ok(WriteGuard { gate: self })
    }

    /// Enters as a writer only if that needs no wait: `Err` with the state
    /// (frozen or freezing, read-only, shut down) otherwise. For work that
    /// must not block a caller and can be put off (an orphan's deletion at
    /// release).
    pub fn try_enter(&self) -> Result<WriteGuard<'_>, LifeState> {
        let mut inner = self.lock();
        match &inner.state {
            LifeState::Running if !inner.freezing => {
                inner.writers += 1;
                Ok(WriteGuard { gate: self })
            }
            LifeState::Running => Err(LifeState::Frozen),
            state => Err(state.clone()),
        }
    }

    /// Starts a freeze: new writers wait from now on; returns once the
    /// writers inside have left. Fails (changing nothing) unless running.
    pub fn begin_freeze(&self) -> FsResult<()> {
        let mut inner = self.lock();
        match &inner.state {
            LifeState::Running if !inner.freezing => {}
            LifeState::Running | LifeState::Frozen => {
                return Err(FsError::Invalid("the filesystem is already frozen"))
            }
            LifeState::ReadOnly(why) => return Err(FsError::ReadOnly(Some(why.clone()))),
            LifeState::ShutDown(why) => return Err(FsError::ShutDown(why.clone())),
        }
        inner.freezing = true;
        while inner.writers > 0 {
            inner = self.wait(inner);
        }
        Ok(())
    }

    /// Completes a freeze begun by [`Gate::begin_freeze`] (the state says
    /// frozen), or abandons it when `done` is false (writers go on).
    pub fn end_freeze(&self, done: bool) {
        let mut inner = self.lock();
        if done && inner.state == LifeState::Running {
            inner.state = LifeState::Frozen;
        } else {
            inner.freezing = false;
            self.changed.notify_all();
        }
    }

    /// Thaws a frozen gate: the waiting writers enter. Fails unless frozen.
    pub fn thaw(&self) -> FsResult<()> {
        let mut inner = self.lock();
        if inner.state != LifeState::Frozen {
            return Err(FsError::Invalid("the filesystem is not frozen"));
        }
        inner.state = LifeState::Running;
        inner.freezing = false;
        self.changed.notify_all();
        Ok(())
    }

    /// Makes the gate read-only (unless shut down or read-only already);
    /// waiting writers wake and fail. Returns whether it changed.
    pub fn make_read_only(&self, why: String) -> bool {
        let mut inner = self.lock();
        if matches!(inner.state, LifeState::ShutDown(_) | LifeState::ReadOnly(_)) {
            return false;
        }
        inner.state = LifeState::ReadOnly(why);
        inner.freezing = false;
        self.changed.notify_all();
        true
    }

    /// Opens a read-only gate to writers (a read-only mount made writable).
    /// Returns whether it changed: not from any other state.
    pub fn make_writable(&self) -> bool {
        let mut inner = self.lock();
        if !matches!(inner.state, LifeState::ReadOnly(_)) {
            return false;
        }
        inner.state = LifeState::Running;
        true
    }

    /// Shuts the gate for good; waiting writers wake and fail. Returns
    /// false if it was already shut down.
    pub fn shut_down(&self, why: String) -> bool {
        let mut inner = self.lock();
        if matches!(inner.state, LifeState::ShutDown(_)) {
            return false;
        }
        inner.state = LifeState::ShutDown(why);
        inner.freezing = false;
        self.changed.notify_all();
        true
    }

    /// Writers inside now.
    pub fn writers(&self) -> u64 {
        self.lock().writers
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_writer_waits_while_frozen_and_enters_after_thaw() {
        let gate = Arc::new(Gate::new(LifeState::Running));
        gate.begin_freeze().unwrap();
        gate.end_freeze(true);
        let entered = Arc::new(AtomicBool::new(false));
        let writer = {
            let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
            thread::spawn(move || {
                let _guard = gate.enter().unwrap();
                entered.store(true, Ordering::SeqCst);
            })
        };
        thread::sleep(Duration::from_millis(50));
        assert!(
            !entered.load(Ordering::SeqCst),
            "a writer got in while frozen"
        );
        gate.thaw().unwrap();
        writer.join().unwrap();
        assert!(entered.load(Ordering::SeqCst));
    }

    #[test]
    fn freeze_waits_for_writers_inside() {
        let gate = Arc::new(Gate::new(LifeState::Running));
        let guard = gate.enter().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let freezer = {
            let (gate, frozen) = (Arc::clone(&gate), Arc::clone(&frozen));
            thread::spawn(move || {
                gate.begin_freeze().unwrap();
                frozen.store(true, Ordering::SeqCst);
            })
        };
        thread::sleep(Duration::from_millis(50));
        assert!(
            !frozen.load(Ordering::SeqCst),
            "freeze finished with a writer inside"
        );
        drop(guard);
        freezer.join().unwrap();
        assert_eq!(gate.writers(), 0);
    }

    #[test]
    fn shutdown_wakes_waiting_writers_with_an_error() {
        let gate = Arc::new(Gate::new(LifeState::Running));
        gate.begin_freeze().unwrap();
        gate.end_freeze(true);
        let writer = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.enter().map(|_| ()).map_err(|error| error.errno()))
        };
        thread::sleep(Duration::from_millis(20));
        assert!(gate.shut_down("test".into()));
        assert_eq!(writer.join().unwrap(), Err(libc::EIO));
        assert!(!gate.shut_down("again".into()));
        assert!(gate.thaw().is_err());
    }

    #[test]
    fn read_only_refuses_writers_with_erofs() {
        let gate = Gate::new(LifeState::Running);
        gate.make_read_only("errors=remount-ro".into());
        assert_eq!(gate.enter().map(|_| ()).unwrap_err().errno(), libc::EROFS);
        assert!(gate.begin_freeze().is_err());
    }

    #[test]
    fn an_abandoned_freeze_lets_writers_in_again() {
        let gate = Gate::new(LifeState::Running);
        gate.begin_freeze().unwrap();
        gate.end_freeze(false);
        assert_eq!(gate.state(), LifeState::Running);
        drop(gate.enter().unwrap());
    }

    /// One step of the single-threaded model check.
    #[derive(Debug, Clone)]
    enum Step {
        Enter,
        Leave,
        Freeze,
        AbandonFreeze,
        Thaw,
        ReadOnly,
        Writable,
        ShutDown,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(Step::Enter),
            3 => Just(Step::Leave),
            2 => Just(Step::Freeze),
            1 => Just(Step::AbandonFreeze),
            2 => Just(Step::Thaw),
            1 => Just(Step::ReadOnly),
            1 => Just(Step::Writable),
            1 => Just(Step::ShutDown),
        ]
    }

    proptest::proptest! {
        /// The gate against a model of the states and the writers inside
        /// (steps that would block are not taken: single thread).
        #[test]
        fn the_gate_follows_its_model(steps in proptest::collection::vec(step(), 1..64)) {
            #[derive(Debug, Clone, Copy, PartialEq)]
            enum Model { Running, Frozen, ReadOnly, ShutDown }
            let gate = Gate::new(LifeState::Running);
            let mut model = Model::Running;
            let mut guards = Vec::new();
            for step in steps {
                match step {
                    Step::Enter => match model {
                        Model::Running => guards.push(gate.enter().unwrap()),
                        Model::ReadOnly => proptest::prop_assert_eq!(gate.enter().map(|_| ()).unwrap_err().errno(), libc::EROFS),
                        Model::ShutDown => proptest::prop_assert_eq!(gate.enter().map(|_| ()).unwrap_err().errno(), libc::EIO),
                        Model::Frozen => {} // would block
                    },
                    Step::Leave => { guards.pop(); }
                    Step::Freeze | Step::AbandonFreeze => {
                        if model == Model::Running && !guards.is_empty() {
                            continue; // would block until the writers leave
                        }
                        let begun = gate.begin_freeze();
                        proptest::prop_assert_eq!(begun.is_ok(), model == Model::Running);
                        if begun.is_ok() {
                            let done = matches!(step, Step::Freeze);
                            gate.end_freeze(done);
                            if done { model = Model::Frozen; }
                        }
                    }
                    Step::Thaw => {
                        proptest::prop_assert_eq!(gate.thaw().is_ok(), model == Model::Frozen);
                        if model == Model::Frozen { model = Model::Running; }
                    }
                    Step::ReadOnly => {
                        gate.make_read_only("test".into());
                        if model != Model::ShutDown { model = Model::ReadOnly; }
                    }
                    Step::Writable => {
                        proptest::prop_assert_eq!(gate.make_writable(), model == Model::ReadOnly);
                        if model == Model::ReadOnly { model = Model::Running; }
                    }
                    Step::ShutDown => {
                        proptest::prop_assert_eq!(gate.shut_down("test".into()), model != Model::ShutDown);
                        model = Model::ShutDown;
                    }
                }
                let expected = match model {
                    Model::Running => "running",
                    Model::Frozen => "frozen",
                    Model::ReadOnly => "read-only",
                    Model::ShutDown => "shut-down",
                };
                proptest::prop_assert_eq!(gate.state().name(), expected);
                proptest::prop_assert_eq!(gate.writers(), guards.len() as u64);
            }
        }
    }
}
