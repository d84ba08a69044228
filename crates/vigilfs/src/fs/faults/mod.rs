//! Faults aimed at files and at operations: the part of the crash lab only
//! a filesystem can do.
//!
//! The device's fault plan fails I/O by byte range and class; it cannot
//! know which file a block belongs to, nor what an `fsync` or a `rename` is.
//! A [`FileRule`] can: it names filesystem operations (`fsync`, `rename`,
//! `write`...) or a file's data I/O, optionally only for paths matching a
//! glob (relative to the mount's root: `pg_wal/*`, `**/*.db`), and fails
//! them with an errno or delays them, with the plan's triggers (`skip`,
//! `limit`, one `nth` match, a seeded probability). Paths are resolved
//! through what the filesystem knows of each inode's names (every lookup,
//! create, link and rename teaches them), so files created after the rule
//! match too. Data I/O is matched in the device plan itself, which asks
//! this module ([`FileFaults`]) about each data request the engine
//! attributed to an inode; operations are matched here at the start of each
//! operation ([`Faults::operation`]).
//!
//! Linux's meaning is kept: an injected `fsync` failure on a file with
//! dirty data makes its writeback fail exactly as a device error would
//! (the pages stay dirty, the errseq words are set, an event is sent), so
//! the program sees what it would see on Linux.
//!
//! Every firing, and every rule set or cleared, goes to the device plan's
//! fault log, so one log tells the whole story. The same rule ids number
//! both kinds of rules.
//!
//! A power cut can be armed to happen when an operation is about to run
//! for the n-th time ([`Faults::arm_power_cut`]); the crash-test runner
//! cuts at fsync boundaries and between them that way, reproducibly.

mod rule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use rule::{FileEffect, FileRule, FileRuleStatus, FileTarget, Operation, Trigger};

use super::error::{FsError, FsResult};
use super::known_names::KnownNames;
use crate::device::{
    ByteRange, DelayGate, Errno, FaultLogEvent, FaultPlan, FaultRuleError, FileFaults, FileVerdict,
    IoOperation, RuleId, SeededRandom,
};
use crate::inode::from_printable;

struct ActiveRule {
    id: RuleId,
    rule: FileRule,
    pattern: Option<glob::Pattern>,
    matched: u64,
    injected: u64,
    random: SeededRandom,
}

impl ActiveRule {
    /// Whether the rule fires for a request it matched (counted here).
    fn fires(&mut self) -> bool {
        self.matched += 1;
        let trigger = self.rule.trigger;
        let Some(eligible) = self.matched.checked_sub(trigger.skip).filter(|n| *n > 0) else {
            return false;
        };
        if trigger.limit.is_some_and(|limit| self.injected >= limit) {
            return false;
        }
        if trigger.nth.is_some_and(|nth| eligible != nth) {
            return false;
        }
        if let Some(probability) = trigger.probability {
            if !self.random.chance(probability.parts_per_million()) {
                return false;
            }
        }
        self.injected += 1;
        true
    }

    fn delay(&mut self) -> Duration {
        match self.rule.effect {
            FileEffect::Fail(_) => Duration::ZERO,
            FileEffect::Delay {
                micros,
                jitter_micros,
            } => {
                let jitter = if jitter_micros == 0 {
                    0
                } else {
                    self.random.below(jitter_micros + 1)
                };
                Duration::from_micros(micros + jitter)
            }
        }
    }

    fn errno(&self) -> Option<Errno> {
        match self.rule.effect {
            FileEffect::Fail(errno) => Some(errno),
            FileEffect::Delay { .. } => None,
        }
    }

    fn path_matches(&self, paths: &[String]) -> bool {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        match &self.pattern {
            None => true,
            // Paths are known as `printable` text (a tab is `\x09`, as
            // events show it); a glob may be written either way, so the
            // name as it is is tried too.
            Some(pattern) => paths.iter().any(|path| {
                pattern.matches_with(path, options)
                    || from_printable(path).is_some_and(|bytes| {
                        pattern.matches_with(&String::from_utf8_lossy(&bytes), options)
                    })
            }),
        }
    }
}

/// Where an operation is armed to cut the power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutPoint {
    /// The operation counted.
    pub operation: Operation,
    /// The power goes when it is about to run for this many times.
    pub count: u64,
}

/// An operation about to run, as rules are tried on it and the fault log
/// names it.
struct Attempt<'a> {
    operation: Operation,
    /// The inode operated on, or for an operation on a name the directory
    /// holding it.
    ino: u64,
    /// Whether the operation is on a name in directory `ino`.
    on_name: bool,
    paths: &'a [String],
    /// The file bytes, for a read or a write.
    bytes: Option<ByteRange>,
}

/// A cut armed: the point, the operation's count when it was armed, and
/// what cuts the power (the transport's; it must not block on the
/// operation in progress).
struct ArmedCut {
    point: CutPoint,
    armed_at: u64,
    cut: Box<dyn FnOnce() + Send>,
}

/// The file- and operation-aimed rules of one mount. See the module
/// comment.
pub struct Faults {
    plan: Option<Arc<FaultPlan>>,
    rules: Mutex<Vec<ActiveRule>>,
    /// Whether any rule exists: the common case (none) costs one load.
    any: AtomicBool,
    names: Mutex<KnownNames>,
    /// Inodes whose next data write fails with this errno, by the rule
    /// that fired (an injected fsync failure, made a real writeback failure).
    forced: Mutex<HashMap<u64, (RuleId, Errno)>>,
    armed: Mutex<Option<ArmedCut>>,
    /// Whether a cut is armed: operations skip the lock when none is.
    any_armed: AtomicBool,
    /// How many times each operation started, by [`Operation::index`].
    started: [AtomicU64; Operation::ALL.len()],
    /// Where operations its delay rules hold wait; released when the
    /// rules change.
    delays: DelayGate,
    /// Reads a rule failed lately, for the kernel's retry (see
    /// [`Faults::read`]).
    failed_reads: Mutex<Vec<FailedRead>>,
}

/// A read a rule failed: which file bytes, by which rule, when.
struct FailedRead {
    ino: u64,
    bytes: std::ops::Range<u64>,
    rule: RuleId,
    errno: Errno,
    at: Instant,
}

/// How long a failed read's bytes keep failing (see [`Faults::read`]).
const READ_RETRY_WINDOW: Duration = Duration::from_secs(1);

/// Failed reads remembered at most (the oldest is dropped).
const FAILED_READS_KEPT: usize = 64;

/// The error a rule's failure of `operation` gives.
fn injected(rule: RuleId, operation: Operation, errno: Errno) -> FsError {
    FsError::Injected {
        rule: rule.0,
        operation: operation.name(),
        errno: errno.0,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update is a few field changes that cannot fail halfway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Faults {
    /// The rules of a mount whose device follows `plan` (for rule ids and
    /// the log), if it has one.
    pub fn new(plan: Option<Arc<FaultPlan>>) -> Faults {
        Faults {
            plan,
            rules: Mutex::new(Vec::new()),
            any: AtomicBool::new(false),
            names: Mutex::new(KnownNames::default()),
            forced: Mutex::new(HashMap::new()),
            armed: Mutex::new(None),
            any_armed: AtomicBool::new(false),
            started: std::array::from_fn(|_| AtomicU64::new(0)),
            delays: DelayGate::default(),
            failed_reads: Mutex::new(Vec::new()),
        }
    }

    /// How many times `operation` started on this mount: a crash-test
    /// runner counts a workload's fsyncs and writes this way before it
    /// chooses where to cut.
    pub fn started(&self, operation: Operation) -> u64 {
        self.started[operation.index()].load(Ordering::Relaxed)
    }

    /// Whether a rule, or an armed power cut, waits for `operation` now.
    pub fn targets(&self, operation: Operation) -> bool {
        let rules = self.any.load(Ordering::Acquire)
            && lock(&self.rules).iter().any(|rule| {
                matches!(&rule.rule.target,
                    FileTarget::Operations(operations) if operations.contains(&operation))
            });
        rules
            || self
                .armed_power_cut()
                .is_some_and(|(point, _)| point.operation == operation)
    }

    /// Adds a rule; returns its id. Without a device plan there is no log
    /// and ids are counted here.
    pub fn add(&self, rule: FileRule) -> Result<RuleId, FaultRuleError> {
        rule.validate()?;
        let pattern = match &rule.path {
            Some(path) => Some(
                glob::Pattern::new(path)
                    .map_err(|error| FaultRuleError::new(format!("path `{path}`: {error}")))?,
            ),
            None => None,
        };
        let mut rules = lock(&self.rules);
        let id = match &self.plan {
            Some(plan) => plan.allocate_rule_id(),
            None => RuleId(rules.iter().map(|rule| rule.id.0).max().unwrap_or(0) + 1),
        };
        self.log(
            Some(id),
            FaultLogEvent::Set {
                rule: rule.to_string(),
            },
        );
        rules.push(ActiveRule {
            id,
            random: SeededRandom::new(rule.trigger.seed),
            rule,
            pattern,
            matched: 0,
            injected: 0,
        });
        self.any.store(true, Ordering::Release);
        Ok(id)
    }

    /// Removes a rule; its last status, if it existed.
    pub fn remove(&self, id: RuleId) -> Option<FileRuleStatus> {
        let mut rules = lock(&self.rules);
        let index = rules.iter().position(|rule| rule.id == id)?;
        let removed = rules.remove(index);
        self.any.store(!rules.is_empty(), Ordering::Release);
        self.log(Some(id), FaultLogEvent::Cleared);
        drop(rules);
        self.delays.release_all();
        Some(status(&removed))
    }

    /// Removes every rule; the delays in progress end.
    pub fn clear(&self) {
        let mut rules = lock(&self.rules);
        for rule in rules.drain(..) {
            self.log(Some(rule.id), FaultLogEvent::Cleared);
        }
        self.any.store(false, Ordering::Release);
        drop(rules);
        self.delays.release_all();
    }

    /// Moves every rule of `from` here, ids, counters and seeded state
    /// unchanged, and logs nothing: the rules of a mount that lost power
    /// go on in the mount that replaced it.
    pub fn take_over(&self, from: &Faults) {
        let moved: Vec<ActiveRule> = lock(&from.rules).drain(..).collect();
        from.any.store(false, Ordering::Release);
        let mut rules = lock(&self.rules);
        rules.extend(moved);
        self.any.store(!rules.is_empty(), Ordering::Release);
    }

    /// Every rule with its counters.
    pub fn rules(&self) -> Vec<FileRuleStatus> {
        lock(&self.rules).iter().map(status).collect()
    }

    fn log(&self, rule: Option<RuleId>, event: FaultLogEvent) {
        if let Some(plan) = &self.plan {
            plan.log_event(rule, event);
        }
    }

    /// Learns that `name` in `parent` is `ino`.
    pub fn learn(&self, parent: u64, name: &[u8], ino: u64) {
        lock(&self.names).learn(parent, name, ino);
    }

    /// Learns of a rename (see `rename(2)`, `RENAME_EXCHANGE`).
    pub fn renamed(&self, from: (u64, &[u8]), to: (u64, &[u8]), exchange: bool) {
        lock(&self.names).rename(from, to, exchange);
    }

    /// The kernel forgot `ino`: its names go (see `known_names.rs`).
    pub fn forget_names_of(&self, ino: u64) {
        lock(&self.names).forget_inode(ino);
    }

    /// Learns that `name` in `parent` is gone.
    pub fn unlearn(&self, parent: u64, name: &[u8]) {
        lock(&self.names).forget(parent, name);
    }

    /// Every known path of `ino`.
    pub fn paths(&self, ino: u64) -> Vec<String> {
        lock(&self.names).paths(ino)
    }

    /// The path of entry `name` of directory `dir`, if the directory's is
    /// known.
    pub fn entry_path(&self, dir: u64, name: &[u8]) -> Option<String> {
        self.operation_paths(dir, Some(name)).into_iter().next()
    }

    /// Arms a power cut: `cut` runs when `point`'s operation is about to
    /// run for the `point.count`-th time from now. Replaces an armed cut.
    pub fn arm_power_cut(&self, point: CutPoint, cut: Box<dyn FnOnce() + Send>) {
        let mut armed = lock(&self.armed);
        *armed = Some(ArmedCut {
            point,
            armed_at: self.started(point.operation),
            cut,
        });
        self.any_armed.store(true, Ordering::Release);
    }

    /// Disarms the power cut, if one is armed; whether one was.
    pub fn disarm_power_cut(&self) -> bool {
        let mut armed = lock(&self.armed);
        self.any_armed.store(false, Ordering::Release);
        armed.take().is_some()
    }

    /// The armed cut's point and how many of its operations ran since.
    pub fn armed_power_cut(&self) -> Option<(CutPoint, u64)> {
        lock(&self.armed).as_ref().map(|armed| {
            let seen = self.started(armed.point.operation) - armed.armed_at;
            (armed.point, seen)
        })
    }

    /// Called at the start of `operation` on `ino` (the file, or the
    /// directory of an entry), with `name` for an operation on an entry:
    /// cuts the power if armed for this moment, then applies the first
    /// rule that fires (an error to return, or a delay served here).
    pub fn operation(&self, operation: Operation, ino: u64, name: Option<&[u8]>) -> FsResult<()> {
        self.fire(operation, ino, name, None)
    }

    /// A write of `length` bytes of `ino` at `offset` is about to run:
    /// [`Faults::operation`], the fault log naming the bytes.
    pub fn write(&self, ino: u64, offset: u64, length: u64) -> FsResult<()> {
        self.fire(
            Operation::Write,
            ino,
            None,
            Some(ByteRange::at(offset, length)),
        )
    }

    /// [`Faults::operation`], for the file bytes `bytes` when the
    /// operation has them (the fault log names them: review 44).
    fn fire(
        &self,
        operation: Operation,
        ino: u64,
        name: Option<&[u8]>,
        bytes: Option<ByteRange>,
    ) -> FsResult<()> {
        self.count_towards_cut(operation);
        if !self.any.load(Ordering::Acquire) {
            return Ok(());
        }
        let paths = self.operation_paths(ino, name);
        let attempt = Attempt {
            operation,
            ino,
            on_name: name.is_some(),
            paths: &paths,
            bytes,
        };
        let (fired, delay) = {
            let mut rules = lock(&self.rules);
            let mut fired = None;
            let mut delay = Duration::ZERO;
            for rule in rules.iter_mut() {
                let aimed = matches!(&rule.rule.target,
                    FileTarget::Operations(operations) if operations.contains(&operation));
                if !aimed || !rule.path_matches(&paths) || !rule.fires() {
                    continue;
                }
                delay += rule.delay();
                if let Some(errno) = rule.errno() {
                    fired = Some((rule.id, errno));
                    break;
                }
                self.log_operation(rule.id, &attempt, None, delay);
            }
            (fired, delay)
        };
        self.delays.hold(delay);
        match fired {
            None => Ok(()),
            Some((rule, errno)) => {
                self.log_operation(rule, &attempt, Some(errno), Duration::ZERO);
                Err(injected(rule, operation, errno))
            }
        }
    }

    /// A read of `length` bytes of `ino` at `offset` is about to run:
    /// [`Faults::operation`] for reads, with one addition. The kernel
    /// drops the error of a read it started itself (readahead) and reads
    /// again, page by page, a page fault even twice; a direct read cut
    /// short by a failure is a short read, and the program's next read
    /// asks for the rest. A failure reaches the program only if the bytes
    /// keep failing. So a read a rule fails keeps failing for
    /// [`READ_RETRY_WINDOW`]: every read of its bytes in that time fails
    /// with it, as the same injection (counted and logged once), as the
    /// bytes of a failing disk would.
    pub fn read(&self, ino: u64, offset: u64, length: u64) -> FsResult<()> {
        let bytes = offset..offset.saturating_add(length.max(1));
        if self.any.load(Ordering::Acquire) {
            let mut failed_reads = lock(&self.failed_reads);
            failed_reads.retain(|failed| failed.at.elapsed() < READ_RETRY_WINDOW);
            let rules = lock(&self.rules);
            // A rule cleared meanwhile takes its failure with it.
            let held = failed_reads.iter().find(|failed| {
                failed.ino == ino
                    && failed.bytes.start < bytes.end
                    && bytes.start < failed.bytes.end
                    && rules.iter().any(|rule| rule.id == failed.rule)
            });
            if let Some(failed) = held {
                return Err(injected(failed.rule, Operation::Read, failed.errno));
            }
        }
        let result = self.fire(
            Operation::Read,
            ino,
            None,
            Some(ByteRange::at(offset, length)),
        );
        if let Err(FsError::Injected { rule, errno, .. }) = &result {
            let mut failed_reads = lock(&self.failed_reads);
            if failed_reads.len() >= FAILED_READS_KEPT {
                failed_reads.remove(0);
            }
            failed_reads.push(FailedRead {
                ino,
                bytes,
                rule: RuleId(*rule),
                errno: Errno(*errno),
                at: Instant::now(),
            });
        }
        result
    }

    fn log_operation(
        &self,
        rule: RuleId,
        attempt: &Attempt<'_>,
        errno: Option<Errno>,
        delay: Duration,
    ) {
        self.log(
            Some(rule),
            FaultLogEvent::Fired {
                operation: attempt.operation.name().to_string(),
                class: None,
                inode: (!attempt.on_name).then_some(attempt.ino),
                directory: attempt.on_name.then_some(attempt.ino),
                path: attempt.paths.first().cloned(),
                range: attempt.bytes,
                errno: errno.map(|errno| errno.0),
                delay_micros: (!delay.is_zero()).then_some(delay.as_micros() as u64),
                corrupted: false,
            },
        );
    }

    /// The paths an operation is on: its entry's, or its inode's.
    fn operation_paths(&self, ino: u64, name: Option<&[u8]>) -> Vec<String> {
        let names = lock(&self.names);
        match name {
            Some(name) => names.entry_path(ino, name).into_iter().collect(),
            None => names.paths(ino),
        }
    }

    fn count_towards_cut(&self, operation: Operation) {
        let started = self.started[operation.index()].fetch_add(1, Ordering::Relaxed) + 1;
        if !self.any_armed.load(Ordering::Acquire) {
            return;
        }
        let cut = {
            let mut armed = lock(&self.armed);
            let due = armed.as_ref().is_some_and(|armed| {
                armed.point.operation == operation
                    && started >= armed.armed_at.saturating_add(armed.point.count)
            });
            if due {
                self.any_armed.store(false, Ordering::Release);
                armed.take().map(|armed| armed.cut)
            } else {
                None
            }
        };
        if let Some(cut) = cut {
            cut();
        }
    }

    /// Makes the next data write of `ino` fail with `errno`, on behalf of
    /// `rule`: an injected fsync failure, turned into a real writeback
    /// failure.
    pub fn force_data_failure(&self, ino: u64, rule: RuleId, errno: Errno) {
        lock(&self.forced).insert(ino, (rule, errno));
    }

    /// Drops a forced failure that no write consumed.
    pub fn unforce_data_failure(&self, ino: u64) {
        lock(&self.forced).remove(&ino);
    }
}

fn status(rule: &ActiveRule) -> FileRuleStatus {
    FileRuleStatus {
        id: rule.id,
        rule: rule.rule.clone(),
        matched: rule.matched,
        injected: rule.injected,
    }
}

impl FileFaults for Faults {
    fn data_fault(
        &self,
        operation: IoOperation,
        range: ByteRange,
        ino: u64,
    ) -> Option<FileVerdict> {
        if operation == IoOperation::Write {
            if let Some((rule, errno)) = lock(&self.forced).remove(&ino) {
                return Some(FileVerdict {
                    rule,
                    errno: Some(errno),
                    delay: Duration::ZERO,
                });
            }
        }
        let _ = range;
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let paths = self.paths(ino);
        let mut rules = lock(&self.rules);
        let mut delay = Duration::ZERO;
        let mut last = None;
        for rule in rules.iter_mut() {
            let aimed = match rule.rule.target {
                FileTarget::Data { read, write } => match operation {
                    IoOperation::Read => read,
                    IoOperation::Write => write,
                    IoOperation::Flush => false,
                },
                FileTarget::Operations(_) => false,
            };
            if !aimed || !rule.path_matches(&paths) || !rule.fires() {
                continue;
            }
            delay += rule.delay();
            last = Some(rule.id);
            if let Some(errno) = rule.errno() {
                return Some(FileVerdict {
                    rule: rule.id,
                    errno: Some(errno),
                    delay,
                });
            }
        }
        last.map(|rule| FileVerdict {
            rule,
            errno: None,
            delay,
        })
    }

    fn path_of(&self, ino: u64) -> Option<String> {
        self.paths(ino).into_iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::ROOT_INO;

    #[test]
    fn a_rule_fires_on_its_operations_and_paths_with_its_triggers() {
        let faults = Faults::new(None);
        faults.learn(ROOT_INO, b"pg_wal", 10);
        faults.learn(10, b"0001", 11);
        faults.learn(ROOT_INO, b"base", 12);
        faults.learn(12, b"data", 13);
        faults
            .add(
                "file op=fsync path=pg_wal/* errno=EIO skip=1 limit=2 seed=0"
                    .parse()
                    .unwrap(),
            )
            .unwrap();
        let outcome = |ino| {
            faults
                .operation(Operation::Fsync, ino, None)
                .map_err(|error| error.errno())
        };
        assert_eq!(outcome(13), Ok(()), "another path");
        assert_eq!(outcome(11), Ok(()), "skipped");
        assert_eq!(outcome(11), Err(libc::EIO));
        assert_eq!(outcome(11), Err(libc::EIO));
        assert_eq!(outcome(11), Ok(()), "past the limit");
        assert_eq!(
            faults
                .operation(Operation::Rename, 11, None)
                .map_err(|e| e.errno()),
            Ok(()),
            "another operation"
        );
        // A file made after the rule matches too; an entry operation is
        // matched on the entry's path.
        faults.learn(10, b"0002", 14);
        faults.clear();
        faults
            .add(
                "file op=create path=pg_wal/* errno=ENOSPC nth=2 skip=0 seed=0"
                    .parse()
                    .unwrap(),
            )
            .unwrap();
        let create = |name: &[u8]| {
            faults
                .operation(Operation::Create, 10, Some(name))
                .map_err(|error| error.errno())
        };
        assert_eq!(create(b"0003"), Ok(()));
        assert_eq!(create(b"0004"), Err(libc::ENOSPC), "the second match");
        assert_eq!(create(b"0005"), Ok(()), "once");
        assert_eq!(faults.rules()[0].matched, 3);
    }

    #[test]
    fn data_rules_match_the_owner_s_paths_and_a_forced_failure_comes_first() {
        let faults = Faults::new(None);
        faults.learn(ROOT_INO, b"x.db", 20);
        faults.learn(ROOT_INO, b"y.txt", 21);
        faults
            .add(
                "file data=write path=*.db errno=EIO skip=0 seed=0"
                    .parse()
                    .unwrap(),
            )
            .unwrap();
        let range = ByteRange::new(0, 4096);
        let verdict = faults.data_fault(IoOperation::Write, range, 20).unwrap();
        assert_eq!(verdict.errno, Some(Errno::EIO));
        assert!(faults.data_fault(IoOperation::Read, range, 20).is_none());
        assert!(faults.data_fault(IoOperation::Write, range, 21).is_none());
        faults.force_data_failure(21, RuleId(7), Errno::ENOSPC);
        let forced = faults.data_fault(IoOperation::Write, range, 21).unwrap();
        assert_eq!(
            (forced.rule, forced.errno),
            (RuleId(7), Some(Errno::ENOSPC))
        );
        assert!(
            faults.data_fault(IoOperation::Write, range, 21).is_none(),
            "once"
        );
    }

    #[test]
    fn an_armed_cut_runs_once_at_its_count() {
        let faults = Faults::new(None);
        let cuts = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&cuts);
        faults.arm_power_cut(
            CutPoint {
                operation: Operation::Fsync,
                count: 3,
            },
            Box::new(move || *lock(&counter) += 1),
        );
        for _ in 0..5 {
            let _ = faults.operation(Operation::Fsync, 1, None);
            let _ = faults.operation(Operation::Write, 1, None);
        }
        assert_eq!(*lock(&cuts), 1);
        assert!(!faults.disarm_power_cut());
    }
}
