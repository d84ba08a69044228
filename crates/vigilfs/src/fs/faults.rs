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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::error::{FsError, FsResult};
use super::known_names::KnownNames;
use crate::device::{
    ByteRange, DelayGate, Errno, FaultLogEvent, FaultPlan, FaultRuleError, FileFaults, FileVerdict,
    IoOperation, Probability, RuleId, SeededRandom, MAX_DELAY_MICROS,
};
use crate::inode::from_printable;

/// A filesystem operation a rule can fail or delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `open(2)` of an existing file.
    Open,
    /// `creat(2)`, `open(O_CREAT)` of a new file, `mknod(2)`.
    Create,
    /// `read(2)`.
    Read,
    /// `write(2)`.
    Write,
    /// `fsync(2)`, `fdatasync(2)`.
    Fsync,
    /// `fsync(2)` of a directory.
    Fsyncdir,
    /// `fallocate(2)`.
    Fallocate,
    /// `truncate(2)`, `chmod(2)`, `chown(2)`, `utimes(2)`.
    Setattr,
    /// `rename(2)`.
    Rename,
    /// `unlink(2)`.
    Unlink,
    /// `mkdir(2)`.
    Mkdir,
    /// `rmdir(2)`.
    Rmdir,
    /// `link(2)`.
    Link,
    /// `symlink(2)`.
    Symlink,
    /// `setxattr(2)`, `removexattr(2)`.
    Setxattr,
    /// `close(2)` (FUSE's flush).
    Close,
}

impl Operation {
    /// Its position in [`Operation::ALL`].
    fn index(self) -> usize {
        self as usize
    }

    /// Every operation, in a stable order.
    pub const ALL: [Operation; 16] = [
        Operation::Open,
        Operation::Create,
        Operation::Read,
        Operation::Write,
        Operation::Fsync,
        Operation::Fsyncdir,
        Operation::Fallocate,
        Operation::Setattr,
        Operation::Rename,
        Operation::Unlink,
        Operation::Mkdir,
        Operation::Rmdir,
        Operation::Link,
        Operation::Symlink,
        Operation::Setxattr,
        Operation::Close,
    ];

    /// Whether it changes the namespace or an inode's metadata (a create,
    /// a rename, an attribute...), not file data and not durability.
    pub fn changes_metadata(self) -> bool {
        matches!(
            self,
            Operation::Create
                | Operation::Fallocate
                | Operation::Setattr
                | Operation::Rename
                | Operation::Unlink
                | Operation::Mkdir
                | Operation::Rmdir
                | Operation::Link
                | Operation::Symlink
                | Operation::Setxattr
        )
    }

    /// The lowercase name rules use.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Open => "open",
            Operation::Create => "create",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Fsync => "fsync",
            Operation::Fsyncdir => "fsyncdir",
            Operation::Fallocate => "fallocate",
            Operation::Setattr => "setattr",
            Operation::Rename => "rename",
            Operation::Unlink => "unlink",
            Operation::Mkdir => "mkdir",
            Operation::Rmdir => "rmdir",
            Operation::Link => "link",
            Operation::Symlink => "symlink",
            Operation::Setxattr => "setxattr",
            Operation::Close => "close",
        }
    }
}

impl FromStr for Operation {
    type Err = FaultRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|operation| operation.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Operation::ALL.iter().map(|op| op.name()).collect();
                FaultRuleError::new(format!("unknown operation `{text}` ({})", names.join(", ")))
            })
    }
}

/// What a [`FileRule`] aims at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileTarget {
    /// These filesystem operations.
    Operations(Vec<Operation>),
    /// The data I/O (to the device) of the files matched: reads, writes
    /// (writeback) or both.
    Data {
        /// Data reads from the device.
        read: bool,
        /// Data writes to the device.
        write: bool,
    },
}

/// What a [`FileRule`] does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEffect {
    /// Fail with this errno.
    Fail(Errno),
    /// Hold the request this long, plus up to `jitter` more (seeded).
    Delay {
        /// The fixed delay.
        micros: u64,
        /// The most extra delay.
        jitter_micros: u64,
    },
}

/// When a [`FileRule`] fires among the requests it matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trigger {
    /// Matches let through before anything fires.
    pub skip: u64,
    /// How many times it fires at most.
    pub limit: Option<u64>,
    /// Fire only at this match (counted after `skip`), once.
    pub nth: Option<u64>,
    /// Fire each eligible match with this chance, drawn from `seed`.
    pub probability: Option<Probability>,
    /// The seed of the draws (and of a delay's jitter).
    pub seed: u64,
}

/// A fault aimed at files or operations. Its text form (what `inject
/// --list` prints and the control plane carries) is
/// `file op=fsync,rename path=pg_wal/* errno=EIO skip=0 limit=1 nth=2
/// probability=50% seed=7` or `file data=write ... delay-us=5000
/// jitter-us=100`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRule {
    /// What it aims at.
    pub target: FileTarget,
    /// Only files whose path (relative to the root) matches this glob.
    pub path: Option<String>,
    /// What it does.
    pub effect: FileEffect,
    /// When.
    pub trigger: Trigger,
}

impl FileRule {
    /// Checks the rule: a data rule needs a path (a data rule for every
    /// file is a device rule), a glob must parse, delays are bounded.
    pub fn validate(&self) -> Result<(), FaultRuleError> {
        match &self.target {
            FileTarget::Operations(operations) if operations.is_empty() => {
                return Err(FaultRuleError::new("no operation selected"));
            }
            FileTarget::Data { read, write } if !read && !write => {
                return Err(FaultRuleError::new(
                    "neither data reads nor writes selected",
                ));
            }
            FileTarget::Data { .. } if self.path.is_none() => {
                return Err(FaultRuleError::new(
                    "a data rule aimed at files needs a path (without one, use a device rule)",
                ));
            }
            _ => {}
        }
        if let Some(path) = &self.path {
            // Paths are matched as the mount names them, relative to its
            // root: a glob that starts with `/` or walks `.` or `..` could
            // never match, and a rule that never fires passes every test.
            if path.starts_with('/') {
                return Err(FaultRuleError::new(format!(
                    "path `{path}` is absolute: globs are relative to the mount's root \
                     (`pg_wal/*`, `**/*.db`)"
                )));
            }
            if path.split('/').any(str::is_empty) {
                return Err(FaultRuleError::new(format!(
                    "path `{path}` is empty or has an empty component (`a//b`, `a/`), \
                     which no path the mount names has"
                )));
            }
            if path.split('/').any(|part| part == "." || part == "..") {
                return Err(FaultRuleError::new(format!(
                    "path `{path}` has a `.` or `..` component, which no path the mount \
                     names has"
                )));
            }
            glob::Pattern::new(path)
                .map_err(|error| FaultRuleError::new(format!("path `{path}`: {error}")))?;
        }
        if let FileEffect::Delay {
            micros,
            jitter_micros,
        } = self.effect
        {
            if micros.saturating_add(jitter_micros) > MAX_DELAY_MICROS {
                return Err(FaultRuleError::new(format!(
                    "a delay of more than {} s would hang the mount",
                    MAX_DELAY_MICROS / 1_000_000
                )));
            }
        }
        if self.trigger.limit == Some(0) {
            return Err(FaultRuleError::new("limit=0 would never fire"));
        }
        if self.trigger.nth == Some(0) {
            return Err(FaultRuleError::new("nth counts from 1"));
        }
        Ok(())
    }
}

impl fmt::Display for FileRule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("file")?;
        match &self.target {
            FileTarget::Operations(operations) => {
                let names: Vec<&str> = operations.iter().map(|op| op.name()).collect();
                write!(formatter, " op={}", names.join(","))?;
            }
            FileTarget::Data { read, write } => {
                let names: Vec<&str> = [(*read, "read"), (*write, "write")]
                    .into_iter()
                    .filter_map(|(on, name)| on.then_some(name))
                    .collect();
                write!(formatter, " data={}", names.join(","))?;
            }
        }
        if let Some(path) = &self.path {
            write!(formatter, " path={}", escape_path(path))?;
        }
        match self.effect {
            FileEffect::Fail(errno) => write!(formatter, " errno={errno}")?,
            FileEffect::Delay {
                micros,
                jitter_micros,
            } => write!(formatter, " delay-us={micros} jitter-us={jitter_micros}")?,
        }
        let trigger = &self.trigger;
        write!(formatter, " skip={}", trigger.skip)?;
        if let Some(limit) = trigger.limit {
            write!(formatter, " limit={limit}")?;
        }
        if let Some(nth) = trigger.nth {
            write!(formatter, " nth={nth}")?;
        }
        if let Some(probability) = trigger.probability {
            write!(formatter, " probability={probability}")?;
        }
        write!(formatter, " seed={}", trigger.seed)
    }
}

/// A glob as the rule text carries it: one word, whatever the names hold.
/// A backslash is doubled and whitespace is `\xNN`, so a path with a space
/// stays one value and cannot add settings of its own (`x op=fsync`).
fn escape_path(path: &str) -> String {
    let mut text = String::with_capacity(path.len());
    for character in path.chars() {
        if character == '\\' {
            text.push_str("\\\\");
        } else if character.is_whitespace() {
            let mut bytes = [0; 4];
            for byte in character.encode_utf8(&mut bytes).bytes() {
                text.push_str(&format!("\\x{byte:02x}"));
            }
        } else {
            text.push(character);
        }
    }
    text
}

/// The glob [`escape_path`] wrote.
fn unescape_path(text: &str) -> Result<String, FaultRuleError> {
    from_printable(text)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| FaultRuleError::new(format!("path=`{text}`: a malformed escape")))
}

impl FromStr for FileRule {
    type Err = FaultRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut words = text.split_whitespace();
        if words.next() != Some("file") {
            return Err(FaultRuleError::new("a file rule starts with `file`"));
        }
        let mut target = None;
        let mut path = None;
        let mut errno = None;
        let mut delay = None;
        let mut jitter = None;
        let mut trigger = Trigger::default();
        let mut seen = HashSet::new();
        let number = |key: &str, value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| FaultRuleError::new(format!("{key}=`{value}` is not a number")))
        };
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(|| {
                FaultRuleError::new(format!("`{word}` is not of the form key=value"))
            })?;
            if !seen.insert(key) {
                return Err(FaultRuleError::new(format!("`{key}` given twice")));
            }
            match key {
                "op" => {
                    let operations = value
                        .split(',')
                        .map(Operation::from_str)
                        .collect::<Result<Vec<_>, _>>()?;
                    target = Some(FileTarget::Operations(operations));
                }
                "data" => {
                    let (mut read, mut write) = (false, false);
                    for name in value.split(',') {
                        match name {
                            "read" => read = true,
                            "write" => write = true,
                            _ => {
                                return Err(FaultRuleError::new(format!(
                                    "data=`{name}`: read or write"
                                )))
                            }
                        }
                    }
                    target = Some(FileTarget::Data { read, write });
                }
                "path" => path = Some(unescape_path(value)?),
                "errno" => errno = Some(value.parse::<Errno>()?),
                "delay-us" => delay = Some(number(key, value)?),
                "jitter-us" => jitter = Some(number(key, value)?),
                "skip" => trigger.skip = number(key, value)?,
                "limit" => trigger.limit = Some(number(key, value)?),
                "nth" => trigger.nth = Some(number(key, value)?),
                "probability" => trigger.probability = Some(value.parse()?),
                "seed" => trigger.seed = number(key, value)?,
                _ => {
                    return Err(FaultRuleError::new(format!(
                        "`{key}` does not apply to file rules"
                    )))
                }
            }
        }
        let target = target.ok_or_else(|| FaultRuleError::new("a file rule needs op= or data="))?;
        let effect = match (errno, delay, jitter) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(FaultRuleError::new(
                    "errno= and delay-us= do not go together",
                ))
            }
            (_, None, None) => FileEffect::Fail(errno.unwrap_or(Errno::EIO)),
            (None, micros, jitter) => FileEffect::Delay {
                micros: micros.unwrap_or(0),
                jitter_micros: jitter.unwrap_or(0),
            },
        };
        let rule = FileRule {
            target,
            path,
            effect,
            trigger,
        };
        rule.validate()?;
        Ok(rule)
    }
}

/// A file rule as listed: the rule and what it has done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRuleStatus {
    /// Its id (the same numbers as the device plan's rules).
    pub id: RuleId,
    /// The rule.
    pub rule: FileRule,
    /// Requests it matched.
    pub matched: u64,
    /// Times it fired.
    pub injected: u64,
}

impl fmt::Display for FileRuleStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}: {} # matched={} injected={}",
            self.id, self.rule, self.matched, self.injected
        )
    }
}

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
    ino: u64,
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
                inode: Some(attempt.ino),
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
    fn a_path_with_spaces_stays_one_value() {
        let rule = FileRule {
            target: FileTarget::Data {
                read: true,
                write: false,
            },
            path: Some("x op=fsync nth=1".to_string()),
            effect: FileEffect::Fail(Errno::EIO),
            trigger: Trigger::default(),
        };
        let parsed: FileRule = rule.to_string().parse().unwrap();
        assert_eq!(parsed.path.as_deref(), Some("x op=fsync nth=1"));
        assert!(matches!(parsed.target, FileTarget::Data { read: true, .. }));
        assert_eq!(parsed.trigger.nth, None);
        for malformed in ["a\\", "a\\x2", "a\\xzz", "a\\q", "a\\xff"] {
            let text = format!("file op=fsync path={malformed} errno=EIO skip=0 seed=0");
            assert!(text.parse::<FileRule>().is_err(), "{text}");
        }
    }

    #[test]
    fn file_rules_print_and_parse_back() {
        let rules = [
            "file op=fsync path=pg_wal/* errno=EIO skip=0 seed=0",
            "file op=rename,unlink errno=ENOSPC skip=2 limit=1 nth=1 probability=0.5 seed=9",
            "file data=write path=**/*.db errno=EIO skip=0 seed=0",
            "file data=read,write path=a/b delay-us=5000 jitter-us=100 skip=0 seed=3",
            "file op=fsync path=my\\x20file\\x09\\\\a errno=EIO skip=0 seed=0",
        ];
        for text in rules {
            let rule: FileRule = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
        for bad in [
            "file",
            "file op=explode",
            "file data=write",
            "file op=fsync errno=EIO delay-us=1",
            "file op=fsync path=[",
            "file op=fsync path=a//b errno=EIO",
            "file op=fsync path=a/ errno=EIO",
            "file op=fsync path=/a errno=EIO",
            "file op=fsync nth=0",
            "file op=fsync limit=0",
            "file op=fsync delay-us=100000000",
            "fail op=read",
        ] {
            assert!(bad.parse::<FileRule>().is_err(), "accepted `{bad}`");
        }
    }

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
