//! Fault rules: which I/O a rule matches (its scope) and what it does to it (its effect), with
//! a one-line text form that parses back to the same rule, for the CLI and for status output.
//!
//! Text form, one rule per line, `KIND key=value ...`:
//!
//! ```text
//! fail       [op=read,write,flush] [class=C] [range=START..END] [errno=E] [skip=N] [limit=N]
//! flaky      [op=...] [class=C] [range=START..END] [errno=E] seed=N probability=P
//! bad-blocks range=START..END [block-size=B] [class=C]
//! thin       provisioned-blocks=N [block-size=B] [class=C] [range=START..END]
//! ```
//!
//! Numbers are decimal or `0x` hexadecimal; `P` is a fraction (`0.25`) or a percentage (`25%`)
//! with at most six decimal digits of the fraction; `E` is an errno name (`EIO`) or number.
//! `op` defaults to `read,write` and `errno` to `EIO`; `block-size` defaults to 4096.
//! [`Display`](std::fmt::Display) prints every key, so `rule.to_string().parse()` gives the
//! same rule back.

use std::fmt;
use std::str::FromStr;

use crate::device::{ByteRange, Errno, IoClass, IoOperation};

/// Identifies a rule within its plan; ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u64);

impl fmt::Display for RuleId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// A fault rule that could not be parsed or makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault rule: {message}")]
pub struct FaultRuleError {
    message: String,
}

impl FaultRuleError {
    pub(crate) fn new(message: impl Into<String>) -> FaultRuleError {
        FaultRuleError {
            message: message.into(),
        }
    }
}

/// The set of operations a rule fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operations {
    /// Reads are matched.
    pub read: bool,
    /// Writes are matched.
    pub write: bool,
    /// Flushes are matched.
    pub flush: bool,
}

impl Operations {
    /// Reads only.
    pub const READ: Operations = Operations {
        read: true,
        write: false,
        flush: false,
    };
    /// Writes only.
    pub const WRITE: Operations = Operations {
        read: false,
        write: true,
        flush: false,
    };
    /// Flushes only.
    pub const FLUSH: Operations = Operations {
        read: false,
        write: false,
        flush: true,
    };
    /// Reads and writes, the default for `fail` and `flaky` rules.
    pub const READ_WRITE: Operations = Operations {
        read: true,
        write: true,
        flush: false,
    };
    /// Every operation.
    pub const ALL: Operations = Operations {
        read: true,
        write: true,
        flush: true,
    };

    /// Whether `operation` is in the set.
    pub fn contains(self, operation: IoOperation) -> bool {
        match operation {
            IoOperation::Read => self.read,
            IoOperation::Write => self.write,
            IoOperation::Flush => self.flush,
        }
    }

    fn is_empty(self) -> bool {
        !(self.read || self.write || self.flush)
    }
}

impl fmt::Display for Operations {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [IoOperation::Read, IoOperation::Write, IoOperation::Flush]
            .into_iter()
            .filter(|operation| self.contains(*operation))
            .map(IoOperation::name)
            .collect();
        formatter.write_str(&names.join(","))
    }
}

impl FromStr for Operations {
    type Err = FaultRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut operations = Operations {
            read: false,
            write: false,
            flush: false,
        };
        for name in text.split(',') {
            let slot = match name {
                "read" => &mut operations.read,
                "write" => &mut operations.write,
                "flush" => &mut operations.flush,
                _ => return Err(FaultRuleError::new(format!("unknown operation `{name}`"))),
            };
            *slot = true;
        }
        Ok(operations)
    }
}

/// A probability in parts per million, so it prints and parses back exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probability {
    parts_per_million: u32,
}

impl Probability {
    /// Never.
    pub const NEVER: Probability = Probability {
        parts_per_million: 0,
    };
    /// Always.
    pub const ALWAYS: Probability = Probability {
        parts_per_million: 1_000_000,
    };

    /// The probability `parts_per_million / 1_000_000`, if it is at most one.
    pub fn from_parts_per_million(parts_per_million: u32) -> Option<Probability> {
        (parts_per_million <= 1_000_000).then_some(Probability { parts_per_million })
    }

    /// The probability in parts per million.
    pub fn parts_per_million(self) -> u32 {
        self.parts_per_million
    }
}

impl fmt::Display for Probability {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.parts_per_million / 1_000_000;
        let fraction = self.parts_per_million % 1_000_000;
        if fraction == 0 {
            return write!(formatter, "{whole}");
        }
        let digits = format!("{fraction:06}");
        write!(formatter, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for Probability {
    type Err = FaultRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            FaultRuleError::new(format!(
                "probability `{text}` is not a fraction from 0 to 1 (like 0.25 or 25%)"
            ))
        };
        let (number, scale) = match text.strip_suffix('%') {
            Some(number) => (number, 10_000u64),
            None => (text, 1_000_000u64),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 6 {
            return Err(invalid());
        }
        let whole: u64 = whole.parse().map_err(|_| invalid())?;
        let fraction_value: u64 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| invalid())?
        };
        // fraction has at most 6 digits, so 10^(6 - len) is exact.
        let fraction_millionths = fraction_value * 10u64.pow(6 - fraction.len() as u32);
        // A percentage with more than four decimals has no exact parts-per-million value.
        if (fraction_millionths * scale) % 1_000_000 != 0 {
            return Err(invalid());
        }
        let total = whole
            .checked_mul(scale)
            .and_then(|value| value.checked_add(fraction_millionths * scale / 1_000_000))
            .ok_or_else(invalid)?;
        let parts = u32::try_from(total).map_err(|_| invalid())?;
        Probability::from_parts_per_million(parts).ok_or_else(invalid)
    }
}

/// Which I/O a rule applies to. Unset fields match everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultScope {
    /// Only requests overlapping these bytes. A flush has no range: a range never excludes it.
    pub range: Option<ByteRange>,
    /// Only requests of this class.
    pub class: Option<IoClass>,
    /// Only these operations.
    pub operations: Operations,
}

impl FaultScope {
    /// Whether a request falls in the scope.
    pub fn matches(&self, operation: IoOperation, class: IoClass, range: ByteRange) -> bool {
        let range_matches = operation == IoOperation::Flush
            || self
                .range
                .is_none_or(|scope_range| scope_range.overlaps(&range));
        self.operations.contains(operation)
            && self.class.is_none_or(|scope_class| scope_class == class)
            && range_matches
    }
}

/// What a rule does to the I/O it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultEffect {
    /// Fail matching requests with `errno` (like dm-error): let the first `skip` matches
    /// through, then fail up to `limit` of them (all of them when `limit` is `None`).
    Fail {
        /// The error to report.
        errno: Errno,
        /// Matching requests allowed through before failures start.
        skip: u64,
        /// How many requests to fail before the rule goes quiet.
        limit: Option<u64>,
    },
    /// Fail each matching request with probability `probability` (like dm-flakey). Decisions
    /// come from a generator seeded with `seed`, one draw per matching request, so a run with
    /// the same I/O order fails the same requests.
    Flaky {
        /// The error to report.
        errno: Errno,
        /// Seed of the decision sequence.
        seed: u64,
        /// Chance that a matching request fails.
        probability: Probability,
    },
    /// The scope's range, rounded out to `block_size`, holds bad blocks (like dm-dust): reads
    /// touching a bad block fail with a media error carrying the failed range, which is also
    /// sent to the media failure callback. A write that covers a whole bad block clears it
    /// (the drive remaps the sector); writes themselves never fail. The scope's operations
    /// are always exactly reads.
    BadBlocks {
        /// Granularity of bad blocks and of clearing, in bytes.
        block_size: u64,
    },
    /// Delay matching requests (a slow disk, like dm-delay): each waits
    /// `micros` microseconds, plus up to `jitter_micros` more drawn from a
    /// generator seeded with `seed`, then goes on. Never fails anything.
    Delay {
        /// The fixed part of the delay, in microseconds.
        micros: u64,
        /// The most extra delay, in microseconds.
        jitter_micros: u64,
        /// Seed of the jitter draws.
        seed: u64,
    },
    /// Flip one bit of the data of each matching read with probability
    /// `probability` (silent corruption: the device reports success). The
    /// scope's operations are always exactly reads. Decisions and the bit
    /// come from a generator seeded with `seed`.
    Corrupt {
        /// Seed of the decisions and of the bit flipped.
        seed: u64,
        /// Chance that a matching read is corrupted.
        probability: Probability,
    },
    /// An overcommitted thin volume (like dm-thin): once `provisioned_blocks` distinct blocks
    /// of `block_size` bytes in scope have been written, a write touching a further block fails
    /// with ENOSPC. Rewriting already-provisioned blocks keeps working. The scope's operations
    /// are always exactly writes.
    ThinProvisioned {
        /// Size of a provisioning unit in bytes.
        block_size: u64,
        /// How many distinct blocks can be written before ENOSPC.
        provisioned_blocks: u64,
    },
}

/// A fault rule: a scope and an effect. Build one with the constructors and the `in_range`,
/// `for_class` and `on` adjusters, or parse its text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultRule {
    /// Which I/O the rule applies to.
    pub scope: FaultScope,
    /// What it does to that I/O.
    pub effect: FaultEffect,
}

const DEFAULT_BLOCK_SIZE: u64 = 4096;

/// The longest delay a rule may add to one request, and the longest all
/// the rules matching one request may add together: 60 s (longer would
/// look like a hung mount, and FUSE requests must answer in bounded time).
pub const MAX_DELAY_MICROS: u64 = 60_000_000;

/// `delay` cut to [`MAX_DELAY_MICROS`]: what several matching rules add up
/// to is held to what one may add.
pub fn bounded_delay(delay: std::time::Duration) -> std::time::Duration {
    delay.min(std::time::Duration::from_micros(MAX_DELAY_MICROS))
}

impl FaultRule {
    /// Fail every read and write with `errno`.
    pub fn fail(errno: Errno) -> FaultRule {
        FaultRule {
            scope: FaultScope {
                range: None,
                class: None,
                operations: Operations::READ_WRITE,
            },
            effect: FaultEffect::Fail {
                errno,
                skip: 0,
                limit: None,
            },
        }
    }

    /// Let `skip` matching requests through, then fail up to `limit` (a `fail` rule only;
    /// other rules are returned unchanged).
    pub fn after(mut self, skip_count: u64, limit_count: Option<u64>) -> FaultRule {
        if let FaultEffect::Fail { skip, limit, .. } = &mut self.effect {
            *skip = skip_count;
            *limit = limit_count;
        }
        self
    }

    /// Fail reads and writes with `errno` at random, with the given seed and probability.
    pub fn flaky(errno: Errno, seed: u64, probability: Probability) -> FaultRule {
        FaultRule {
            scope: FaultScope {
                range: None,
                class: None,
                operations: Operations::READ_WRITE,
            },
            effect: FaultEffect::Flaky {
                errno,
                seed,
                probability,
            },
        }
    }

    /// Mark the blocks of `range` bad.
    pub fn bad_blocks(range: ByteRange, block_size: u64) -> FaultRule {
        FaultRule {
            scope: FaultScope {
                range: Some(range),
                class: None,
                operations: Operations::READ,
            },
            effect: FaultEffect::BadBlocks { block_size },
        }
    }

    /// Delay every read and write by `micros` microseconds, and up to
    /// `jitter_micros` more (seeded).
    pub fn delay(micros: u64, jitter_micros: u64, seed: u64) -> FaultRule {
        FaultRule {
            scope: FaultScope {
                range: None,
                class: None,
                operations: Operations::READ_WRITE,
            },
            effect: FaultEffect::Delay {
                micros,
                jitter_micros,
                seed,
            },
        }
    }

    /// Flip a bit in reads with `probability` (seeded): silent corruption.
    pub fn corrupt(seed: u64, probability: Probability) -> FaultRule {
        FaultRule {
            scope: FaultScope {
                range: None,
                class: None,
                operations: Operations::READ,
            },
            effect: FaultEffect::Corrupt { seed, probability },
        }
    }

    /// Allow `provisioned_blocks` distinct written blocks, then ENOSPC.
    pub fn thin_provisioned(provisioned_blocks: u64, block_size: u64) -> FaultRule {
        FaultRule {
            scope: FaultScope {
                range: None,
                class: None,
                operations: Operations::WRITE,
            },
            effect: FaultEffect::ThinProvisioned {
                block_size,
                provisioned_blocks,
            },
        }
    }

    /// Restrict the rule to requests overlapping `range`.
    pub fn in_range(mut self, range: ByteRange) -> FaultRule {
        self.scope.range = Some(range);
        self
    }

    /// Restrict the rule to requests of `class`.
    pub fn for_class(mut self, class: IoClass) -> FaultRule {
        self.scope.class = Some(class);
        self
    }

    /// Set the operations the rule fails (meaningful for `fail` and `flaky` rules only).
    pub fn on(mut self, operations: Operations) -> FaultRule {
        self.scope.operations = operations;
        self
    }

    /// The text keyword of the rule's effect.
    pub fn kind_name(&self) -> &'static str {
        match self.effect {
            FaultEffect::Fail { .. } => "fail",
            FaultEffect::Flaky { .. } => "flaky",
            FaultEffect::BadBlocks { .. } => "bad-blocks",
            FaultEffect::ThinProvisioned { .. } => "thin",
            FaultEffect::Delay { .. } => "delay",
            FaultEffect::Corrupt { .. } => "corrupt",
        }
    }

    /// Checks that the rule makes sense; plans accept only valid rules.
    pub fn validate(&self) -> Result<(), FaultRuleError> {
        if let Some(range) = self.scope.range {
            if range.is_empty() {
                return Err(FaultRuleError::new(format!("range {range} is empty")));
            }
        }
        let check_block_size = |block_size: u64| {
            if block_size < 512 || !block_size.is_power_of_two() {
                Err(FaultRuleError::new(format!(
                    "block size {block_size} is not a power of two of at least 512"
                )))
            } else {
                Ok(())
            }
        };
        match self.effect {
            FaultEffect::Fail { limit, .. } => {
                if limit == Some(0) {
                    return Err(FaultRuleError::new("limit=0 would never fail anything"));
                }
                if self.scope.operations.is_empty() {
                    return Err(FaultRuleError::new("no operations selected"));
                }
            }
            FaultEffect::Flaky { .. } => {
                if self.scope.operations.is_empty() {
                    return Err(FaultRuleError::new("no operations selected"));
                }
            }
            FaultEffect::BadBlocks { block_size } => {
                check_block_size(block_size)?;
                if self.scope.range.is_none() {
                    return Err(FaultRuleError::new("bad-blocks needs a range"));
                }
                if self.scope.operations != Operations::READ {
                    return Err(FaultRuleError::new("bad-blocks fails reads only"));
                }
            }
            FaultEffect::ThinProvisioned { block_size, .. } => {
                check_block_size(block_size)?;
                if self.scope.operations != Operations::WRITE {
                    return Err(FaultRuleError::new("thin fails writes only"));
                }
            }
            FaultEffect::Delay {
                micros,
                jitter_micros,
                ..
            } => {
                if self.scope.operations.is_empty() {
                    return Err(FaultRuleError::new("no operations selected"));
                }
                if micros.saturating_add(jitter_micros) > MAX_DELAY_MICROS {
                    return Err(FaultRuleError::new(format!(
                        "a delay of more than {} s would hang the mount",
                        MAX_DELAY_MICROS / 1_000_000
                    )));
                }
                if micros == 0 && jitter_micros == 0 {
                    return Err(FaultRuleError::new("a delay of 0 does nothing"));
                }
            }
            FaultEffect::Corrupt { .. } => {
                if self.scope.operations != Operations::READ {
                    return Err(FaultRuleError::new("corrupt changes reads only"));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.kind_name())?;
        if matches!(
            self.effect,
            FaultEffect::Fail { .. } | FaultEffect::Flaky { .. } | FaultEffect::Delay { .. }
        ) {
            write!(formatter, " op={}", self.scope.operations)?;
        }
        if let Some(class) = self.scope.class {
            write!(formatter, " class={class}")?;
        }
        if let Some(range) = self.scope.range {
            write!(formatter, " range={range}")?;
        }
        match self.effect {
            FaultEffect::Fail { errno, skip, limit } => {
                write!(formatter, " errno={errno} skip={skip}")?;
                if let Some(limit) = limit {
                    write!(formatter, " limit={limit}")?;
                }
            }
            FaultEffect::Flaky {
                errno,
                seed,
                probability,
            } => write!(
                formatter,
                " errno={errno} seed={seed} probability={probability}"
            )?,
            FaultEffect::BadBlocks { block_size } => {
                write!(formatter, " block-size={block_size}")?;
            }
            FaultEffect::ThinProvisioned {
                block_size,
                provisioned_blocks,
            } => write!(
                formatter,
                " provisioned-blocks={provisioned_blocks} block-size={block_size}"
            )?,
            FaultEffect::Delay {
                micros,
                jitter_micros,
                seed,
            } => write!(
                formatter,
                " delay-us={micros} jitter-us={jitter_micros} seed={seed}"
            )?,
            FaultEffect::Corrupt { seed, probability } => {
                write!(formatter, " seed={seed} probability={probability}")?;
            }
        }
        Ok(())
    }
}

fn parse_number(key: &str, text: &str) -> Result<u64, FaultRuleError> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse::<u64>(),
    };
    parsed.map_err(|_| FaultRuleError::new(format!("{key}=`{text}` is not a number")))
}

fn parse_range(text: &str) -> Result<ByteRange, FaultRuleError> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| FaultRuleError::new(format!("range `{text}` is not START..END")))?;
    let start = parse_number("range", start)?;
    let end = parse_number("range", end)?;
    if end <= start {
        return Err(FaultRuleError::new(format!("range `{text}` is empty")));
    }
    Ok(ByteRange::new(start, end))
}

/// The `key=value` pairs of a rule line, each consumed at most once.
struct Settings<'a> {
    pairs: Vec<(&'a str, &'a str, bool)>,
}

impl<'a> Settings<'a> {
    fn parse(words: impl Iterator<Item = &'a str>) -> Result<Settings<'a>, FaultRuleError> {
        let mut pairs: Vec<(&str, &str, bool)> = Vec::new();
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(|| {
                FaultRuleError::new(format!("`{word}` is not of the form key=value"))
            })?;
            if pairs.iter().any(|(seen, _, _)| *seen == key) {
                return Err(FaultRuleError::new(format!("`{key}` given twice")));
            }
            pairs.push((key, value, false));
        }
        Ok(Settings { pairs })
    }

    fn take(&mut self, key: &str) -> Option<&'a str> {
        let pair = self.pairs.iter_mut().find(|(name, _, _)| *name == key)?;
        pair.2 = true;
        Some(pair.1)
    }

    fn take_required(&mut self, kind: &str, key: &str) -> Result<&'a str, FaultRuleError> {
        self.take(key)
            .ok_or_else(|| FaultRuleError::new(format!("{kind} needs {key}=")))
    }

    fn finish(self, kind: &str) -> Result<(), FaultRuleError> {
        match self.pairs.iter().find(|(_, _, used)| !used) {
            Some((key, _, _)) => Err(FaultRuleError::new(format!(
                "`{key}` does not apply to {kind} rules"
            ))),
            None => Ok(()),
        }
    }
}

impl FromStr for FaultRule {
    type Err = FaultRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut words = text.split_whitespace();
        let kind = words
            .next()
            .ok_or_else(|| FaultRuleError::new("empty rule"))?;
        let mut settings = Settings::parse(words)?;
        let mut rule = match kind {
            "fail" | "flaky" => {
                let errno = match settings.take("errno") {
                    Some(errno) => errno.parse()?,
                    None => Errno::EIO,
                };
                let mut rule = if kind == "fail" {
                    let skip = match settings.take("skip") {
                        Some(skip) => parse_number("skip", skip)?,
                        None => 0,
                    };
                    let limit = match settings.take("limit") {
                        Some(limit) => Some(parse_number("limit", limit)?),
                        None => None,
                    };
                    FaultRule::fail(errno).after(skip, limit)
                } else {
                    let seed = parse_number("seed", settings.take_required(kind, "seed")?)?;
                    let probability = settings.take_required(kind, "probability")?.parse()?;
                    FaultRule::flaky(errno, seed, probability)
                };
                if let Some(operations) = settings.take("op") {
                    rule = rule.on(operations.parse()?);
                }
                rule
            }
            "bad-blocks" => {
                let range = parse_range(settings.take_required(kind, "range")?)?;
                let block_size = match settings.take("block-size") {
                    Some(size) => parse_number("block-size", size)?,
                    None => DEFAULT_BLOCK_SIZE,
                };
                FaultRule::bad_blocks(range, block_size)
            }
            "thin" => {
                let provisioned = parse_number(
                    "provisioned-blocks",
                    settings.take_required(kind, "provisioned-blocks")?,
                )?;
                let block_size = match settings.take("block-size") {
                    Some(size) => parse_number("block-size", size)?,
                    None => DEFAULT_BLOCK_SIZE,
                };
                FaultRule::thin_provisioned(provisioned, block_size)
            }
            "delay" => {
                let micros = match settings.take("delay-us") {
                    Some(micros) => parse_number("delay-us", micros)?,
                    None => 0,
                };
                let jitter = match settings.take("jitter-us") {
                    Some(jitter) => parse_number("jitter-us", jitter)?,
                    None => 0,
                };
                let seed = match settings.take("seed") {
                    Some(seed) => parse_number("seed", seed)?,
                    None => 0,
                };
                let mut rule = FaultRule::delay(micros, jitter, seed);
                if let Some(operations) = settings.take("op") {
                    rule = rule.on(operations.parse()?);
                }
                rule
            }
            "corrupt" => {
                let seed = parse_number("seed", settings.take_required(kind, "seed")?)?;
                let probability = match settings.take("probability") {
                    Some(probability) => probability.parse()?,
                    None => Probability::from_parts_per_million(1_000_000)
                        .expect("one million parts is a probability"),
                };
                FaultRule::corrupt(seed, probability)
            }
            _ => {
                return Err(FaultRuleError::new(format!(
                    "unknown rule kind `{kind}` (fail, flaky, bad-blocks, thin, delay, corrupt)"
                )))
            }
        };
        if let Some(class) = settings.take("class") {
            rule = rule.for_class(class.parse()?);
        }
        if let Some(range) = settings.take("range") {
            rule = rule.in_range(parse_range(range)?);
        }
        settings.finish(kind)?;
        rule.validate()?;
        Ok(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_rule_prints_and_parses_back() {
        let rules = [
            FaultRule::fail(Errno::EIO),
            FaultRule::fail(Errno::ENOSPC)
                .on(Operations::ALL)
                .for_class(IoClass::Data)
                .in_range(ByteRange::new(4096, 8192))
                .after(3, Some(2)),
            FaultRule::flaky(
                Errno::EIO,
                99,
                Probability::from_parts_per_million(125).unwrap(),
            )
            .on(Operations::WRITE)
            .for_class(IoClass::Journal),
            FaultRule::bad_blocks(ByteRange::new(0, 65536), 4096).for_class(IoClass::Metadata),
            FaultRule::thin_provisioned(100, 4096).in_range(ByteRange::new(0, 1 << 30)),
            FaultRule::delay(5000, 250, 3)
                .on(Operations::FLUSH)
                .for_class(IoClass::Journal),
            FaultRule::corrupt(11, Probability::from_parts_per_million(500_000).unwrap())
                .for_class(IoClass::Data),
        ];
        for rule in rules {
            let text = rule.to_string();
            assert_eq!(text.parse::<FaultRule>().unwrap(), rule, "{text}");
        }
    }

    #[test]
    fn hand_written_rules_parse_with_defaults() {
        let rule: FaultRule = "fail class=data range=0x1000..0x2000".parse().unwrap();
        assert_eq!(
            rule,
            FaultRule::fail(Errno::EIO)
                .for_class(IoClass::Data)
                .in_range(ByteRange::new(4096, 8192))
        );
        let rule: FaultRule = "flaky seed=7 probability=25% op=read".parse().unwrap();
        assert_eq!(
            rule,
            FaultRule::flaky(
                Errno::EIO,
                7,
                Probability::from_parts_per_million(250_000).unwrap()
            )
            .on(Operations::READ)
        );
    }

    #[test]
    fn malformed_rules_are_rejected_with_a_reason() {
        let cases = [
            "",
            "explode",
            "fail op=sideways",
            "fail errno=EWHAT",
            "fail range=10..5",
            "fail range=10",
            "fail limit=0",
            "fail seed=3",
            "fail class=data class=data",
            "fail class",
            "flaky seed=1",
            "flaky seed=1 probability=1.5",
            "flaky seed=1 probability=0.1234567",
            "bad-blocks block-size=4096",
            "bad-blocks range=0..4096 block-size=1000",
            "bad-blocks range=0..4096 op=write",
            "thin block-size=4096",
            "thin provisioned-blocks=x",
            "delay",
            "delay delay-us=61000000",
            "delay delay-us=x",
            "corrupt",
            "corrupt seed=1 op=write",
        ];
        for case in cases {
            assert!(case.parse::<FaultRule>().is_err(), "accepted `{case}`");
        }
    }

    #[test]
    fn probability_prints_and_parses_exactly() {
        for parts in [0, 1, 10, 125, 250_000, 999_999, 1_000_000] {
            let probability = Probability::from_parts_per_million(parts).unwrap();
            assert_eq!(
                probability.to_string().parse::<Probability>().unwrap(),
                probability
            );
        }
        assert_eq!(
            "0.5".parse::<Probability>().unwrap().parts_per_million(),
            500_000
        );
        assert_eq!(
            "1%".parse::<Probability>().unwrap().parts_per_million(),
            10_000
        );
        assert_eq!(
            "0.0001%"
                .parse::<Probability>()
                .unwrap()
                .parts_per_million(),
            1
        );
        assert!("101%".parse::<Probability>().is_err());
        assert!("0.00001%".parse::<Probability>().is_err());
        assert!(".5".parse::<Probability>().is_err());
        assert!("-0.5".parse::<Probability>().is_err());
    }

    #[test]
    fn scope_range_never_excludes_a_flush() {
        let scope = FaultRule::fail(Errno::EIO)
            .on(Operations::ALL)
            .in_range(ByteRange::new(0, 512))
            .scope;
        assert!(scope.matches(IoOperation::Flush, IoClass::Data, ByteRange::new(0, 0)));
        assert!(!scope.matches(IoOperation::Write, IoClass::Data, ByteRange::new(512, 1024)));
    }
}
