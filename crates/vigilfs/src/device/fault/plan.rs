//! The fault plan: the live, shared list of fault rules a [`FaultDevice`](super::FaultDevice)
//! consults before every request, with per-rule counters and the media failure callback.
//!
//! Rules are evaluated in the order they were added; the first rule that injects a fault
//! decides the request's error and later rules do not see the request. Delays add up and a
//! corruption is remembered as the rules are passed. A request that passes every rule goes to
//! the inner device. A data request the engine attributed to a file
//! ([`data_owner`](crate::device::data_owner)) is first offered to the filesystem's
//! file-aimed rules ([`FileFaults`]), which the plan cannot judge itself (it does not know
//! paths).
//!
//! Every rule set or cleared and every fault injected goes to the plan's [`log`](super::log).
//!
//! Invariants: one mutex guards the rules and the log, so each decision (and each seeded
//! draw) is atomic with respect to other requests and to rule changes; callbacks (media
//! failures, the file hooks) are always invoked with that mutex released, so they may call
//! back into the plan.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use super::block_set::BlockSet;
use super::delay::DelayGate;
use super::log::{FaultLog, FaultLogEntry, FaultLogEvent};
use super::rule::{FaultEffect, FaultRule, FaultRuleError, RuleId};
use crate::device::seeded_random::SeededRandom;
use crate::device::{
    data_owner, ByteRange, DeviceError, DeviceErrorKind, Errno, IoClass, IoOperation, MediaFailure,
    MediaFailureCallback,
};

/// What the filesystem above a plan tells it about files: faults aimed at a
/// file's data (by path, which only the filesystem knows), and the path of
/// an inode for the log.
pub trait FileFaults: Send + Sync {
    /// The fault a file-aimed rule injects into a data request of inode
    /// `ino` (`range`: device bytes), if one fires.
    fn data_fault(&self, operation: IoOperation, range: ByteRange, ino: u64)
        -> Option<FileVerdict>;
    /// A path of inode `ino`, if known.
    fn path_of(&self, ino: u64) -> Option<String>;
}

/// A file-aimed rule's decision about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVerdict {
    /// The rule that fired.
    pub rule: RuleId,
    /// The error to inject, if it fails the request.
    pub errno: Option<Errno>,
    /// How long to hold the request first.
    pub delay: Duration,
}

/// What a request that no rule failed must undergo: a delay before it
/// goes on, and for a read a bit flipped in what it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) delay: Duration,
    /// A draw choosing the bit to flip in the data read, and the bytes of
    /// the request the corrupting rule covers (the bit is flipped there).
    pub(crate) corrupt: Option<(u64, ByteRange)>,
}

/// A rule as listed by [`FaultPlan::rules`]: the rule and what it has done so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStatus {
    /// The rule's id in its plan.
    pub id: RuleId,
    /// The rule itself.
    pub rule: FaultRule,
    /// Requests that fell in the rule's scope (and reached it: an earlier rule's fault hides
    /// the request from later rules).
    pub matched: u64,
    /// Faults the rule injected.
    pub injected: u64,
    /// For a `bad-blocks` rule: blocks still bad (writes clear them).
    pub bad_blocks_remaining: Option<u64>,
    /// For a `thin` rule: distinct blocks written so far.
    pub provisioned_blocks_used: Option<u64>,
}

impl fmt::Display for RuleStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}: {} # matched={} injected={}",
            self.id, self.rule, self.matched, self.injected
        )?;
        if let Some(remaining) = self.bad_blocks_remaining {
            write!(formatter, " bad-blocks-remaining={remaining}")?;
        }
        if let Some(used) = self.provisioned_blocks_used {
            write!(formatter, " provisioned-blocks-used={used}")?;
        }
        Ok(())
    }
}

/// Per-rule mutable state: what each effect needs to remember between requests.
#[derive(Debug)]
enum EffectState {
    Fail,
    Flaky { random: SeededRandom },
    BadBlocks { bad: BlockSet },
    ThinProvisioned { written: BlockSet },
    Delay { random: SeededRandom },
    Corrupt { random: SeededRandom },
}

/// What one rule does to a request it matched.
enum Action {
    Fail(DeviceErrorKind),
    Delay(Duration),
    /// Flip a bit: the draw that chooses it.
    Corrupt(u64),
}

#[derive(Debug)]
struct ActiveRule {
    id: RuleId,
    rule: FaultRule,
    matched: u64,
    injected: u64,
    state: EffectState,
}

/// The blocks of `block_size` bytes that `range` touches.
fn touched_blocks(range: ByteRange, block_size: u64) -> std::ops::Range<u64> {
    range.start / block_size..range.end.div_ceil(block_size)
}

/// The blocks of `block_size` bytes that `range` covers completely.
fn covered_blocks(range: ByteRange, block_size: u64) -> std::ops::Range<u64> {
    let first = range.start.div_ceil(block_size);
    let end = range.end / block_size;
    first..end.max(first)
}

impl ActiveRule {
    fn status(&self) -> RuleStatus {
        let (bad_blocks_remaining, provisioned_blocks_used) = match &self.state {
            EffectState::BadBlocks { bad } => (Some(bad.len()), None),
            EffectState::ThinProvisioned { written } => (None, Some(written.len())),
            EffectState::Fail
            | EffectState::Flaky { .. }
            | EffectState::Delay { .. }
            | EffectState::Corrupt { .. } => (None, None),
        };
        RuleStatus {
            id: self.id,
            rule: self.rule,
            matched: self.matched,
            injected: self.injected,
            bad_blocks_remaining,
            provisioned_blocks_used,
        }
    }

    /// Decides what the rule does to a request it matched, if anything. Thin provisioning
    /// is only checked here; blocks are recorded once every rule has passed.
    fn decide(&mut self, operation: IoOperation, range: ByteRange) -> Option<Action> {
        if let (
            FaultEffect::Delay {
                micros,
                jitter_micros,
                ..
            },
            EffectState::Delay { random },
        ) = (&self.rule.effect, &mut self.state)
        {
            let jitter = if *jitter_micros == 0 {
                0
            } else {
                random.below(*jitter_micros + 1)
            };
            return Some(Action::Delay(Duration::from_micros(micros + jitter)));
        }
        if let (FaultEffect::Corrupt { probability, .. }, EffectState::Corrupt { random }) =
            (&self.rule.effect, &mut self.state)
        {
            if operation != IoOperation::Read || !random.chance(probability.parts_per_million()) {
                return None;
            }
            return Some(Action::Corrupt(random.next_u64()));
        }
        self.decide_failure(operation, range).map(Action::Fail)
    }

    /// The error kind a failing rule injects into a request it matched, if any.
    fn decide_failure(
        &mut self,
        operation: IoOperation,
        range: ByteRange,
    ) -> Option<DeviceErrorKind> {
        match (&self.rule.effect, &mut self.state) {
            (FaultEffect::Fail { errno, skip, limit }, EffectState::Fail) => {
                let past_skip = self.matched > *skip;
                let under_limit = limit.is_none_or(|limit| self.injected < limit);
                (past_skip && under_limit).then(|| DeviceErrorKind::from_errno(*errno))
            }
            (
                FaultEffect::Flaky {
                    errno, probability, ..
                },
                EffectState::Flaky { random },
            ) => random
                .chance(probability.parts_per_million())
                .then(|| DeviceErrorKind::from_errno(*errno)),
            (FaultEffect::BadBlocks { block_size }, EffectState::BadBlocks { bad })
                if operation == IoOperation::Read =>
            {
                let runs = bad.overlapping(touched_blocks(range, *block_size));
                let first = runs.first()?;
                let last = runs.last()?;
                let failed = ByteRange::new(first.start * block_size, last.end * block_size);
                Some(DeviceErrorKind::Media {
                    failed: failed.intersection(&range).unwrap_or(range),
                })
            }
            (
                FaultEffect::ThinProvisioned {
                    block_size,
                    provisioned_blocks,
                },
                EffectState::ThinProvisioned { written },
            ) if operation == IoOperation::Write => {
                let missing = written.count_missing(touched_blocks(range, *block_size));
                let needed = written.len().saturating_add(missing);
                (needed > *provisioned_blocks).then_some(DeviceErrorKind::NoSpace)
            }
            _ => None,
        }
    }
}

/// What the rules decided about one request: the error, if one failed it, and every rule
/// that did something (for the log).
#[derive(Default)]
struct Decided {
    error: Option<DeviceError>,
    fired: Vec<Firing>,
}

/// What one rule did to a request.
#[derive(Debug, Clone, Copy)]
struct Firing {
    rule: RuleId,
    errno: Option<Errno>,
    delay: Duration,
    corrupted: bool,
}

impl Decided {
    fn fire(&mut self, rule: RuleId, errno: Option<Errno>, delay: Duration, corrupted: bool) {
        self.fired.push(Firing {
            rule,
            errno,
            delay,
            corrupted,
        });
    }
}

/// The request a firing hit, for the log.
struct Request {
    operation: IoOperation,
    class: IoClass,
    range: ByteRange,
    inode: Option<u64>,
    path: Option<String>,
}

/// The live set of fault rules for one or more [`FaultDevice`](super::FaultDevice)s. Share it
/// with `Arc`; rules can be added, removed and listed while I/O runs.
pub struct FaultPlan {
    state: Mutex<PlanState>,
    /// Where its delays are served; released when the rules change.
    delays: DelayGate,
    media_failure_callback: RwLock<Option<MediaFailureCallback>>,
    files: RwLock<Option<Arc<dyn FileFaults>>>,
}

#[derive(Debug, Default)]
struct PlanState {
    next_id: u64,
    rules: Vec<ActiveRule>,
    log: FaultLog,
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("FaultPlan")
            .field("rules", &self.rules())
            .finish_non_exhaustive()
    }
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan::new()
    }
}

impl FaultPlan {
    /// A plan with no rules: every request passes through.
    pub fn new() -> FaultPlan {
        FaultPlan {
            state: Mutex::new(PlanState::default()),
            delays: DelayGate::default(),
            media_failure_callback: RwLock::new(None),
            files: RwLock::new(None),
        }
    }

    /// Registers what the filesystem above says about files (file-aimed data faults, paths
    /// for the log), replacing what was registered.
    pub fn set_file_faults(&self, files: Arc<dyn FileFaults>) {
        *self.files.write().unwrap_or_else(PoisonError::into_inner) = Some(files);
    }

    fn file_faults(&self) -> Option<Arc<dyn FileFaults>> {
        self.files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A new rule id, for a rule the filesystem keeps itself (aimed at files or at
    /// operations), so every rule of a mount has one number space.
    pub fn allocate_rule_id(&self) -> RuleId {
        let mut plan = self.lock();
        plan.next_id += 1;
        RuleId(plan.next_id)
    }

    /// Appends to the log: for the rules the filesystem keeps itself.
    pub fn log_event(&self, rule: Option<RuleId>, event: FaultLogEvent) {
        self.lock().log.append(rule, event);
    }

    /// The log entries after sequence number `after`, and how many of those were dropped
    /// before they could be read (the log keeps the newest
    /// [`FAULT_LOG_CAPACITY`](super::log::FAULT_LOG_CAPACITY)).
    pub fn log_since(&self, after: u64) -> (Vec<FaultLogEntry>, u64) {
        self.lock().log.since(after)
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        // The state stays consistent across a panic elsewhere (every update is a single
        // assignment or counter bump), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates `rule` and appends it; returns its id.
    pub fn add_rule(&self, rule: FaultRule) -> Result<RuleId, FaultRuleError> {
        rule.validate()?;
        let state = match rule.effect {
            FaultEffect::Fail { .. } => EffectState::Fail,
            FaultEffect::Flaky { seed, .. } => EffectState::Flaky {
                random: SeededRandom::new(seed),
            },
            FaultEffect::BadBlocks { block_size } => {
                let mut bad = BlockSet::default();
                if let Some(range) = rule.scope.range {
                    bad.insert(touched_blocks(range, block_size));
                }
                EffectState::BadBlocks { bad }
            }
            FaultEffect::ThinProvisioned { .. } => EffectState::ThinProvisioned {
                written: BlockSet::default(),
            },
            FaultEffect::Delay { seed, .. } => EffectState::Delay {
                random: SeededRandom::new(seed),
            },
            FaultEffect::Corrupt { seed, .. } => EffectState::Corrupt {
                random: SeededRandom::new(seed),
            },
        };
        let mut plan = self.lock();
        plan.next_id += 1;
        let id = RuleId(plan.next_id);
        plan.log.append(
            Some(id),
            FaultLogEvent::Set {
                rule: rule.to_string(),
            },
        );
        plan.rules.push(ActiveRule {
            id,
            rule,
            matched: 0,
            injected: 0,
            state,
        });
        Ok(id)
    }

    /// Removes a rule; returns its final status, or `None` if no rule has that id. The
    /// delays in progress end.
    pub fn remove_rule(&self, id: RuleId) -> Option<RuleStatus> {
        let mut plan = self.lock();
        let index = plan.rules.iter().position(|rule| rule.id == id)?;
        plan.log.append(Some(id), FaultLogEvent::Cleared);
        let removed = plan.rules.remove(index).status();
        drop(plan);
        self.delays.release_all();
        Some(removed)
    }

    /// Removes every rule; the delays in progress end.
    pub fn clear(&self) {
        let mut plan = self.lock();
        plan.rules.clear();
        plan.log.append(None, FaultLogEvent::Cleared);
        drop(plan);
        self.delays.release_all();
    }

    /// Where the requests its delay rules hold wait.
    pub(crate) fn delays(&self) -> &DelayGate {
        &self.delays
    }

    /// Every rule with its counters, in evaluation order.
    pub fn rules(&self) -> Vec<RuleStatus> {
        self.lock().rules.iter().map(ActiveRule::status).collect()
    }

    /// One rule's status.
    pub fn rule(&self, id: RuleId) -> Option<RuleStatus> {
        self.lock()
            .rules
            .iter()
            .find(|rule| rule.id == id)
            .map(ActiveRule::status)
    }

    /// Faults injected by the rules currently in the plan.
    pub fn injected_total(&self) -> u64 {
        self.lock().rules.iter().map(|rule| rule.injected).sum()
    }

    /// Registers the callback that hears about simulated media failures, replacing any
    /// previous one.
    pub fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
        *self
            .media_failure_callback
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(callback);
    }

    /// Unregisters the media failure callback.
    pub fn clear_media_failure_callback(&self) {
        *self
            .media_failure_callback
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Decides the fate of a request before it reaches the inner device: an error, or what
    /// it must undergo on its way (a delay, a corrupted read). On a media failure the callback
    /// has already been told when this returns.
    pub(crate) fn check(
        &self,
        operation: IoOperation,
        class: IoClass,
        range: ByteRange,
    ) -> Result<Verdict, DeviceError> {
        let owner = data_owner().filter(|_| class == IoClass::Data);
        let files = self.file_faults();
        let request = |path| Request {
            operation,
            class,
            range,
            inode: owner,
            path,
        };
        let mut verdict = Verdict::default();
        if let (Some(ino), Some(files)) = (owner, &files) {
            if let Some(file) = files.data_fault(operation, range, ino) {
                let firing = Firing {
                    rule: file.rule,
                    errno: file.errno,
                    delay: file.delay,
                    corrupted: false,
                };
                self.log_firings(&[firing], &request(files.path_of(ino)));
                if let Some(errno) = file.errno {
                    let kind = DeviceErrorKind::from_errno(errno);
                    let mut error = DeviceError::new(kind, operation, class, range);
                    error.injected_by = Some(file.rule);
                    return Err(error);
                }
                verdict.delay += file.delay;
            }
        }
        let decided = self.decide(operation, class, range, &mut verdict);
        if !decided.fired.is_empty() {
            let path = owner.and_then(|ino| files.as_ref().and_then(|files| files.path_of(ino)));
            self.log_firings(&decided.fired, &request(path));
        }
        match decided.error {
            None => Ok(verdict),
            Some(error) => {
                if let DeviceErrorKind::Media { failed } = error.kind {
                    self.report_media_failure(MediaFailure {
                        range: failed,
                        class,
                        rule: error.injected_by,
                    });
                }
                Err(error)
            }
        }
    }

    fn log_firings(&self, firings: &[Firing], request: &Request) {
        let mut plan = self.lock();
        for firing in firings {
            plan.log.append(
                Some(firing.rule),
                FaultLogEvent::Fired {
                    operation: request.operation.name().to_string(),
                    class: Some(request.class),
                    inode: request.inode,
                    directory: None,
                    path: request.path.clone(),
                    range: (request.operation != IoOperation::Flush).then_some(request.range),
                    errno: firing.errno.map(|errno| errno.0),
                    delay_micros: (!firing.delay.is_zero())
                        .then_some(firing.delay.as_micros() as u64),
                    corrupted: firing.corrupted,
                },
            );
        }
    }

    fn decide(
        &self,
        operation: IoOperation,
        class: IoClass,
        range: ByteRange,
        verdict: &mut Verdict,
    ) -> Decided {
        let mut plan = self.lock();
        let mut decided = Decided::default();
        for rule in plan.rules.iter_mut() {
            if !rule.rule.scope.matches(operation, class, range) {
                continue;
            }
            rule.matched += 1;
            match rule.decide(operation, range) {
                None => {}
                Some(Action::Delay(delay)) => {
                    rule.injected += 1;
                    verdict.delay += delay;
                    decided.fire(rule.id, None, delay, false);
                }
                Some(Action::Corrupt(draw)) => {
                    rule.injected += 1;
                    let covered = rule
                        .rule
                        .scope
                        .range
                        .and_then(|only| only.intersection(&range))
                        .unwrap_or(range);
                    verdict.corrupt.get_or_insert((draw, covered));
                    decided.fire(rule.id, None, Duration::ZERO, true);
                }
                Some(Action::Fail(kind)) => {
                    rule.injected += 1;
                    let errno = kind.errno();
                    let mut error = DeviceError::new(kind, operation, class, range);
                    error.injected_by = Some(rule.id);
                    decided.fire(rule.id, Some(errno), Duration::ZERO, false);
                    decided.error = Some(error);
                    return decided;
                }
            }
        }
        // Every rule let the write through: thin volumes now provision the blocks it touches.
        // They stay provisioned even if the inner device then fails the write, as on dm-thin.
        if operation == IoOperation::Write {
            for rule in plan.rules.iter_mut() {
                if let (
                    FaultEffect::ThinProvisioned { block_size, .. },
                    EffectState::ThinProvisioned { written },
                ) = (&rule.rule.effect, &mut rule.state)
                {
                    if rule.rule.scope.matches(operation, class, range) {
                        written.insert(touched_blocks(range, *block_size));
                    }
                }
            }
        }
        decided
    }

    /// Called after a write reached the inner device: bad blocks it covered completely are
    /// remapped and read fine from now on.
    pub(crate) fn write_completed(&self, range: ByteRange) {
        let mut plan = self.lock();
        for rule in plan.rules.iter_mut() {
            if let (FaultEffect::BadBlocks { block_size }, EffectState::BadBlocks { bad }) =
                (&rule.rule.effect, &mut rule.state)
            {
                bad.remove(covered_blocks(range, *block_size));
            }
        }
    }

    fn report_media_failure(&self, failure: MediaFailure) {
        let callback = self
            .media_failure_callback
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(callback) = callback {
            callback(failure);
        }
    }
}
