//! The rule language of file faults: what a [`FileRule`] names, and its
//! one-line text form.
//!
//! A rule's text is what the control socket carries and what listing prints;
//! [`FileRule::validate`] runs on every rule parsed or added, so a rule
//! that could never fire, or whose glob does not compile, is refused before
//! it reaches a mount. Printing then parsing gives the same rule back: a
//! path is escaped so that spaces and `key=` text in it stay one value.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use crate::device::{Errno, FaultRuleError, Probability, RuleId, MAX_DELAY_MICROS};
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
    pub(super) fn index(self) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
