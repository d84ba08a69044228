//! The fault plan: the live, shared list of fault rules a [`FaultDevice`](super::FaultDevice)
//! consults before every request, with per-rule counters and the media failure callback.
//!
//! Rules are evaluated in the order they were added; the first rule that injects a fault
//! decides the request's error and later rules do not see the request. A request that passes
//! every rule goes to the inner device.
//!
//! Invariants: one mutex guards the rules, so each decision (and each flaky draw) is atomic
//! with respect to other requests and to rule changes; the callback is always invoked after
//! that mutex is released, so it may call back into the plan.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use super::block_set::BlockSet;
use super::rule::{FaultEffect, FaultRule, FaultRuleError, RuleId};
use crate::device::seeded_random::SeededRandom;
use crate::device::{
    ByteRange, DeviceError, DeviceErrorKind, IoClass, IoOperation, MediaFailure,
    MediaFailureCallback,
};

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
            EffectState::Fail | EffectState::Flaky { .. } => (None, None),
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

    /// Decides whether the rule fails a request it matched. Returns the error kind to inject.
    /// Thin provisioning is only checked here; blocks are recorded once every rule has passed.
    fn decide(&mut self, operation: IoOperation, range: ByteRange) -> Option<DeviceErrorKind> {
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

/// The live set of fault rules for one or more [`FaultDevice`](super::FaultDevice)s. Share it
/// with `Arc`; rules can be added, removed and listed while I/O runs.
pub struct FaultPlan {
    state: Mutex<PlanState>,
    media_failure_callback: RwLock<Option<MediaFailureCallback>>,
}

#[derive(Debug, Default)]
struct PlanState {
    next_id: u64,
    rules: Vec<ActiveRule>,
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
            media_failure_callback: RwLock::new(None),
        }
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
        };
        let mut plan = self.lock();
        plan.next_id += 1;
        let id = RuleId(plan.next_id);
        plan.rules.push(ActiveRule {
            id,
            rule,
            matched: 0,
            injected: 0,
            state,
        });
        Ok(id)
    }

    /// Removes a rule; returns its final status, or `None` if no rule has that id.
    pub fn remove_rule(&self, id: RuleId) -> Option<RuleStatus> {
        let mut plan = self.lock();
        let index = plan.rules.iter().position(|rule| rule.id == id)?;
        Some(plan.rules.remove(index).status())
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().rules.clear();
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

    /// Decides the fate of a request before it reaches the inner device. On a media failure
    /// the callback has already been told when this returns.
    pub(crate) fn check(
        &self,
        operation: IoOperation,
        class: IoClass,
        range: ByteRange,
    ) -> Result<(), DeviceError> {
        let failure = self.decide(operation, class, range);
        match failure {
            None => Ok(()),
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

    fn decide(
        &self,
        operation: IoOperation,
        class: IoClass,
        range: ByteRange,
    ) -> Option<DeviceError> {
        let mut plan = self.lock();
        for rule in plan.rules.iter_mut() {
            if !rule.rule.scope.matches(operation, class, range) {
                continue;
            }
            rule.matched += 1;
            if let Some(kind) = rule.decide(operation, range) {
                rule.injected += 1;
                let mut error = DeviceError::new(kind, operation, class, range);
                error.injected_by = Some(rule.id);
                return Some(error);
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
        None
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
