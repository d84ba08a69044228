//! How `vigilfs inject`'s options become fault rules.
//!
//! Three families, chosen by what the options aim at:
//!
//! * `--op LIST` aims at filesystem operations (`file op=...`), on every
//!   file or on those `--path GLOB` matches: they fail with `--errno` or
//!   are held for `--delay`.
//! * `--path GLOB` alone aims at the data I/O of the matching files
//!   (`file data=...`): `--fail-reads`/`--fail-writes`, or `--delay` on the
//!   reads and writes `--io` names.
//! * Everything else is a device rule, by byte range (`--range`) and I/O
//!   class (`--class`, one rule per class): `--fail-*`, `--flaky`,
//!   `--delay` (on `--io`), `--corrupt-reads`, `--bad-blocks`,
//!   `--enospc-after`.
//!
//! Triggers: `--skip N` lets N matches through, `--limit N` fires N times at
//! most, `--nth N` fires at the N-th match only, `--flaky P` fires each
//! match with P percent chance; `--seed` seeds every draw (flaky
//! decisions, jitter, corrupted bits), so a run with the same I/O order
//! sees the same faults. A combination that means nothing is refused with
//! the reason, never silently ignored.

use std::path::Path;
use std::time::Duration;

use vigilfs::device::{
    ByteRange, Errno, FaultRule, IoClass, Operations, Probability, MAX_DELAY_MICROS,
};
use vigilfs::fs::faults::{FileEffect, FileRule, FileTarget, Operation, Trigger};

use crate::failure::Failure;
use crate::inject_command::InjectArgs;
use crate::size::ByteSize;

/// Device block size used by --bad-blocks and --enospc-after.
const BLOCK: u64 = 4096;

pub fn bad_arguments(message: impl Into<String>) -> Failure {
    Failure::arguments(format!("inject: {}", message.into()))
}

/// A byte count with an optional suffix; `0` allowed.
fn parse_bytes(text: &str) -> Result<u64, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    text.parse::<ByteSize>().map(|size| size.0)
}

fn parse_pair(text: &str, what: &str) -> Result<(String, String), Failure> {
    let (first, second) = text
        .split_once(':')
        .ok_or_else(|| bad_arguments(format!("{what} `{text}` is not of the form A:B")))?;
    Ok((first.to_string(), second.to_string()))
}

fn parse_range(text: &str) -> Result<ByteRange, Failure> {
    let (offset, length) = parse_pair(text, "--range")?;
    let offset = parse_bytes(&offset).map_err(bad_arguments)?;
    let length = parse_bytes(&length).map_err(bad_arguments)?;
    let end = offset
        .checked_add(length)
        .ok_or_else(|| bad_arguments(format!("--range `{text}` is out of range")))?;
    if length == 0 {
        return Err(bad_arguments(format!("--range `{text}` is empty")));
    }
    Ok(ByteRange::new(offset, end))
}

fn parse_classes(names: &[String]) -> Result<Vec<Option<IoClass>>, Failure> {
    if names.is_empty() || names.iter().any(|name| name == "all") {
        return Ok(vec![None]);
    }
    let mut classes = Vec::new();
    for name in names {
        let class: IoClass = name.parse().map_err(|_| {
            bad_arguments(format!(
                "unknown class `{name}` (use data, metadata, journal, superblock, events or all)"
            ))
        })?;
        if !classes.contains(&Some(class)) {
            classes.push(Some(class));
        }
    }
    Ok(classes)
}

fn parse_percent(text: &str) -> Result<Probability, Failure> {
    let trimmed = text.trim().trim_end_matches('%');
    let probability = format!("{trimmed}%").parse::<Probability>().map_err(|_| {
        bad_arguments(format!(
            "--flaky `{text}` is not a percentage from 0.0001 to 100 in steps of 0.0001 (one \
             in a million), written like 10 or 0.5"
        ))
    })?;
    // As --limit 0 is: a rule that can never fire tests nothing.
    if probability == "0%".parse::<Probability>().expect("0% is a probability") {
        return Err(bad_arguments(format!("--flaky `{text}` would never fire")));
    }
    Ok(probability)
}

/// A delay with its unit: `250us`, `5ms`, `1.5s` (`µs` too), at most what
/// a request may be held.
pub fn parse_duration(text: &str, what: &str) -> Result<Duration, Failure> {
    let duration =
        duration_with_unit(text).map_err(|message| bad_arguments(format!("{what} {message}")))?;
    if duration > Duration::from_micros(MAX_DELAY_MICROS) {
        return Err(bad_arguments(format!(
            "{what} `{text}` is longer than the {} s a request may be held",
            MAX_DELAY_MICROS / 1_000_000
        )));
    }
    Ok(duration)
}

/// A duration with its unit: `250us` (`µs` too), `5ms`, `1.5s`, `2m`, up to
/// a day; the error says what is wrong with `text`.
pub fn duration_with_unit(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration with a unit (like 200us, 5ms, 1.5s, 2m)");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(invalid)?;
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let micros_per_unit = match unit.trim() {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return Err(invalid()),
    };
    let micros = number * micros_per_unit;
    const DAY_MICROS: f64 = 86_400e6;
    if !micros.is_finite() || micros > DAY_MICROS {
        return Err(format!("`{text}` is longer than a day"));
    }
    Ok(Duration::from_micros(micros.round() as u64))
}

/// `--io read,write,flush`.
fn parse_io(names: &[String], flush_allowed: bool) -> Result<Option<Operations>, Failure> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut operations = Operations {
        read: false,
        write: false,
        flush: false,
    };
    for name in names {
        match name.as_str() {
            "read" => operations.read = true,
            "write" => operations.write = true,
            "flush" if flush_allowed => operations.flush = true,
            "flush" => {
                return Err(bad_arguments(
                    "--io flush: flushes are of the whole device, not of files (drop --path)",
                ))
            }
            other => {
                return Err(bad_arguments(format!(
                    "--io `{other}`: use read, write or flush"
                )))
            }
        }
    }
    Ok(Some(operations))
}

fn errno(args: &InjectArgs) -> Result<Errno, Failure> {
    args.errno
        .as_deref()
        .unwrap_or("EIO")
        .parse()
        .map_err(|error| bad_arguments(format!("{error}")))
}

/// The delay options as (micros, jitter micros), if --delay was given.
fn delay(args: &InjectArgs) -> Result<Option<(u64, u64)>, Failure> {
    let jitter = args
        .jitter
        .as_deref()
        .map(|text| parse_duration(text, "--jitter"))
        .transpose()?;
    match (&args.delay, jitter) {
        (None, Some(_)) => Err(bad_arguments("--jitter goes with --delay")),
        (None, None) => Ok(None),
        (Some(text), jitter) => {
            let fixed = parse_duration(text, "--delay")?;
            let jitter = jitter.unwrap_or(Duration::ZERO);
            let (micros, jitter) = (fixed.as_micros() as u64, jitter.as_micros() as u64);
            if micros == 0 && jitter == 0 {
                return Err(bad_arguments(
                    "--delay 0 (with no --jitter) would hold nothing: give a delay \
                     of at least 1us",
                ));
            }
            Ok(Some((micros, jitter)))
        }
    }
}

/// Whether any option that adds a rule was given.
pub fn adds_rules(args: &InjectArgs) -> bool {
    args.fail_writes
        || args.fail_reads
        || args.fail_flushes
        || args.flaky.is_some()
        || args.bad_blocks.is_some()
        || args.enospc_after.is_some()
        || !args.op.is_empty()
        || args.path.is_some()
        || args.delay.is_some()
        || args.corrupt_reads
}

/// The text forms of the rules the options describe.
pub fn rules_from(args: &InjectArgs) -> Result<Vec<String>, Failure> {
    if args.nth == Some(0) {
        return Err(bad_arguments("--nth counts from 1"));
    }
    if args.limit == Some(0) {
        return Err(bad_arguments("--limit 0 would never fire"));
    }
    if args.skip == Some(u64::MAX) {
        return Err(bad_arguments(format!(
            "--skip {} would never fire",
            u64::MAX
        )));
    }
    if args.nth.is_some() && (args.skip.is_some() || args.limit.is_some()) {
        return Err(bad_arguments(
            "--nth says which match fails; drop --skip and --limit",
        ));
    }
    if args.path.as_deref() == Some("") {
        return Err(bad_arguments("--path needs a glob (`**/*` for every file)"));
    }
    let fails = args.fail_writes
        || args.fail_reads
        || args.fail_flushes
        || (args.flaky.is_some() && !args.corrupt_reads)
        || ((!args.op.is_empty() || args.path.is_some()) && args.delay.is_none());
    if args.errno.is_some() && !fails {
        return Err(bad_arguments(
            "--errno sets the errno of --fail-*, --flaky, --op and --path failures; \
             --corrupt-reads, --delay, --bad-blocks (EIO) and --enospc-after (ENOSPC) have \
             their own or none",
        ));
    }
    if !args.op.is_empty() || args.path.is_some() {
        return file_rule(args).map(|rule| vec![rule.to_string()]);
    }
    device_rules(args).map(|rules| rules.iter().map(ToString::to_string).collect())
}

/// `--path` as the engine matches it, relative to the mount's root: a glob
/// that starts with the mount point (as given or resolved) loses it, and
/// one that starts with `/` means the mount's root, as `vigilfs events`
/// prints paths; repeated and trailing slashes go. The rule printed back
/// shows what was kept. Nothing left (the mount's root itself) is refused.
fn relative_to_mount(path: &str, mountpoint: &Path) -> Result<String, Failure> {
    let resolved = std::fs::canonicalize(mountpoint).ok();
    let under_mount = [Some(mountpoint.to_path_buf()), resolved]
        .into_iter()
        .flatten()
        .filter(|root| root.is_absolute())
        .find_map(|root| {
            let root = root.to_str()?.trim_end_matches('/').to_string();
            match path.strip_prefix(&root)? {
                "" => Some(""),
                rest => rest.strip_prefix('/'),
            }
        });
    let relative: Vec<&str> = under_mount
        .unwrap_or(path)
        .split('/')
        .filter(|part| !part.is_empty())
        .collect();
    if relative.is_empty() {
        return Err(bad_arguments(format!(
            "--path `{path}` is the mount's root itself: give a glob under it (`**/*` for \
             every file)"
        )));
    }
    Ok(relative.join("/"))
}

/// A rule aimed at operations (`--op`) or at files' data (`--path`).
fn file_rule(args: &InjectArgs) -> Result<FileRule, Failure> {
    let device_only = [
        (args.range.is_some(), "--range"),
        (!args.class.is_empty(), "--class"),
        (args.bad_blocks.is_some(), "--bad-blocks"),
        (args.enospc_after.is_some(), "--enospc-after"),
        (args.corrupt_reads, "--corrupt-reads"),
        (args.fail_flushes, "--fail-flushes"),
    ];
    if let Some((_, option)) = device_only.iter().find(|(given, _)| *given) {
        return Err(bad_arguments(format!(
            "{option} is about the device; --op and --path aim at files and operations"
        )));
    }
    let delay = delay(args)?;
    let failing = args.fail_reads || args.fail_writes;
    let target = if args.op.is_empty() {
        let data = match (failing, delay) {
            (true, Some(_)) => {
                return Err(bad_arguments(
                    "a rule either fails (--fail-*) or delays (--delay), not both",
                ))
            }
            (true, None) => Operations {
                read: args.fail_reads,
                write: args.fail_writes,
                flush: false,
            },
            (false, _) => parse_io(&args.io, false)?.unwrap_or(Operations::READ_WRITE),
        };
        if !failing && delay.is_none() && args.flaky.is_none() {
            return Err(bad_arguments(
                "--path needs what to do to the files' data: --fail-writes, --fail-reads, \
                 --flaky or --delay (or --op to aim at operations)",
            ));
        }
        FileTarget::Data {
            read: data.read,
            write: data.write,
        }
    } else {
        if failing || !args.io.is_empty() {
            return Err(bad_arguments(
                "--op names the operations: drop --fail-reads/--fail-writes/--io",
            ));
        }
        let mut operations = Vec::new();
        for name in &args.op {
            let operation: Operation = name
                .parse()
                .map_err(|error| bad_arguments(format!("--op: {error}")))?;
            if !operations.contains(&operation) {
                operations.push(operation);
            }
        }
        FileTarget::Operations(operations)
    };
    let effect = match delay {
        Some((micros, jitter_micros)) => FileEffect::Delay {
            micros,
            jitter_micros,
        },
        None => FileEffect::Fail(errno(args)?),
    };
    let rule = FileRule {
        target,
        path: args
            .path
            .as_deref()
            .map(|path| relative_to_mount(path, &args.mountpoint))
            .transpose()?,
        effect,
        trigger: Trigger {
            skip: args.skip.unwrap_or(0),
            limit: args.limit,
            nth: args.nth,
            probability: args.flaky.as_deref().map(parse_percent).transpose()?,
            seed: args.seed,
        },
    };
    rule.validate()
        .map_err(|error| bad_arguments(error.to_string()))?;
    Ok(rule)
}

/// Device rules: one per class named.
fn device_rules(args: &InjectArgs) -> Result<Vec<FaultRule>, Failure> {
    let failing = args.fail_writes || args.fail_reads || args.fail_flushes;
    let delay = delay(args)?;
    let kinds = [
        failing || (args.flaky.is_some() && !args.corrupt_reads),
        args.bad_blocks.is_some(),
        args.enospc_after.is_some(),
        delay.is_some(),
        args.corrupt_reads,
    ]
    .iter()
    .filter(|chosen| **chosen)
    .count();
    if kinds == 0 {
        return Err(bad_arguments(
            "say what to inject (--fail-writes, --fail-reads, --fail-flushes, --flaky, \
             --delay, --corrupt-reads, --bad-blocks, --enospc-after, --op, --path, \
             --drop-flushes, --power-cut) or --list, --log, --remove ID, --clear",
        ));
    }
    if kinds > 1 {
        return Err(bad_arguments(
            "--fail-*/--flaky, --delay, --corrupt-reads, --bad-blocks and --enospc-after \
             make different rules: give one per command",
        ));
    }
    let triggered = args.skip.is_some() || args.limit.is_some() || args.nth.is_some();
    if triggered && !(failing && args.flaky.is_none()) {
        return Err(bad_arguments(
            "--skip, --limit and --nth apply to --fail-* device rules, and to --op and --path \
             rules",
        ));
    }
    if !args.io.is_empty() && delay.is_none() {
        return Err(bad_arguments(
            "--io chooses what --delay holds (--fail-* say what fails)",
        ));
    }
    if args.fail_flushes && (!args.class.is_empty() || args.range.is_some()) {
        // A flush has no bytes and no class of I/O of its own: such a rule
        // would never fire, or fire on every flush.
        return Err(bad_arguments(
            "flushes are of the whole device: --class and --range do not apply to \
             --fail-flushes",
        ));
    }
    let classes = parse_classes(&args.class)?;
    let range = args.range.as_deref().map(parse_range).transpose()?;
    let base = if let Some(text) = &args.bad_blocks {
        if range.is_some() {
            return Err(bad_arguments(
                "--bad-blocks has its own range; drop --range",
            ));
        }
        FaultRule::bad_blocks(bad_block_range(text)?, BLOCK)
    } else if let Some(blocks) = args.enospc_after {
        FaultRule::thin_provisioned(blocks, BLOCK)
    } else if let Some((micros, jitter)) = delay {
        let operations = parse_io(&args.io, true)?.unwrap_or(Operations {
            read: true,
            write: true,
            flush: true,
        });
        FaultRule::delay(micros, jitter, args.seed).on(operations)
    } else if args.corrupt_reads {
        let probability = match &args.flaky {
            Some(percent) => parse_percent(percent)?,
            None => Probability::ALWAYS,
        };
        FaultRule::corrupt(args.seed, probability)
    } else {
        let operations = if failing {
            Operations {
                read: args.fail_reads,
                write: args.fail_writes,
                flush: args.fail_flushes,
            }
        } else {
            Operations::READ_WRITE
        };
        let rule = match &args.flaky {
            Some(percent) => FaultRule::flaky(errno(args)?, args.seed, parse_percent(percent)?),
            None => FaultRule::fail(errno(args)?),
        };
        // The n-th match only: let n - 1 through, fail one.
        let (skip, limit) = match args.nth {
            Some(nth) => (nth - 1, Some(1)),
            None => (args.skip.unwrap_or(0), args.limit),
        };
        rule.on(operations).after(skip, limit)
    };
    let mut rules = Vec::new();
    for class in classes {
        let mut rule = base;
        if let Some(class) = class {
            rule = rule.for_class(class);
        }
        if let Some(range) = range {
            rule = rule.in_range(range);
        }
        rule.validate()
            .map_err(|error| bad_arguments(error.to_string()))?;
        rules.push(rule);
    }
    Ok(rules)
}

/// `--bad-blocks START:COUNT` in 4 KiB blocks, as device bytes.
fn bad_block_range(text: &str) -> Result<ByteRange, Failure> {
    let (start, count) = parse_pair(text, "--bad-blocks")?;
    let number = |text: &str| {
        text.parse::<u64>()
            .map_err(|_| bad_arguments(format!("--bad-blocks `{text}` is not a number")))
    };
    let (start, count) = (number(&start)?, number(&count)?);
    let range = start
        .checked_mul(BLOCK)
        .zip(
            start
                .checked_add(count)
                .and_then(|end| end.checked_mul(BLOCK)),
        )
        .filter(|_| count > 0)
        .ok_or_else(|| bad_arguments(format!("--bad-blocks `{text}` is not a valid range")))?;
    Ok(ByteRange::new(range.0, range.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: InjectArgs,
    }

    fn rules(arguments: &[&str]) -> Result<Vec<String>, String> {
        let mut all = vec!["inject", "/mnt"];
        all.extend_from_slice(arguments);
        let parsed = Wrapper::try_parse_from(all).map_err(|error| error.to_string())?;
        rules_from(&parsed.args).map_err(|failure| failure.to_string())
    }

    #[test]
    fn the_documented_device_forms_map_onto_rules() {
        assert_eq!(
            rules(&["--fail-writes", "--class", "data"]).unwrap(),
            ["fail op=write class=data errno=EIO skip=0"]
        );
        assert_eq!(
            rules(&["--fail-writes", "--class", "all"]).unwrap(),
            ["fail op=write errno=EIO skip=0"]
        );
        assert_eq!(
            rules(&["--fail-reads", "--range", "1M:8K"]).unwrap(),
            ["fail op=read range=1048576..1056768 errno=EIO skip=0"]
        );
        assert_eq!(
            rules(&[
                "--fail-writes",
                "--class",
                "data,journal",
                "--errno",
                "ENOSPC"
            ])
            .unwrap(),
            [
                "fail op=write class=data errno=ENOSPC skip=0",
                "fail op=write class=journal errno=ENOSPC skip=0"
            ]
        );
        assert_eq!(
            rules(&["--flaky", "25", "--seed", "7", "--fail-writes"]).unwrap(),
            ["flaky op=write errno=EIO seed=7 probability=0.25"]
        );
        assert_eq!(
            rules(&["--bad-blocks", "100:2"]).unwrap(),
            ["bad-blocks range=409600..417792 block-size=4096"]
        );
        assert_eq!(
            rules(&["--enospc-after", "50"]).unwrap(),
            ["thin provisioned-blocks=50 block-size=4096"]
        );
        assert_eq!(
            rules(&["--fail-writes", "--limit", "1", "--skip", "3"]).unwrap(),
            ["fail op=write errno=EIO skip=3 limit=1"]
        );
        assert_eq!(
            rules(&["--fail-flushes", "--nth", "4"]).unwrap(),
            ["fail op=flush errno=EIO skip=3 limit=1"]
        );
    }

    #[test]
    fn a_delay_of_nothing_is_refused() {
        let refused = |arguments: &[&str], reason: &str| {
            let error = rules(arguments).unwrap_err();
            assert!(error.contains(reason), "{arguments:?}: {error}");
        };
        refused(&["--delay", "0s"], "would hold nothing");
        refused(&["--delay", "0ms", "--op", "fsync"], "would hold nothing");
        assert!(rules(&["--delay", "0s", "--jitter", "1ms"]).is_ok());
    }

    #[test]
    fn delays_and_corruption_are_device_rules_with_their_own_options() {
        let delay = rules(&["--delay", "5ms", "--jitter", "500us", "--class", "journal"]).unwrap();
        assert_eq!(delay.len(), 1);
        let rule: FaultRule = delay[0].parse().unwrap();
        assert_eq!(
            rule,
            FaultRule::delay(5000, 500, 1)
                .on(Operations {
                    read: true,
                    write: true,
                    flush: true
                })
                .for_class(IoClass::Journal)
        );
        let flushes: FaultRule = rules(&["--delay", "1.5s", "--io", "flush"]).unwrap()[0]
            .parse()
            .unwrap();
        assert_eq!(
            flushes,
            FaultRule::delay(1_500_000, 0, 1).on(Operations::FLUSH)
        );
        let corrupt: FaultRule = rules(&["--corrupt-reads", "--seed", "9", "--class", "data"])
            .unwrap()[0]
            .parse()
            .unwrap();
        assert_eq!(
            corrupt,
            FaultRule::corrupt(9, Probability::ALWAYS).for_class(IoClass::Data)
        );
        let sometimes: FaultRule = rules(&["--corrupt-reads", "--flaky", "10"]).unwrap()[0]
            .parse()
            .unwrap();
        assert_eq!(sometimes, FaultRule::corrupt(1, "10%".parse().unwrap()));
    }

    #[test]
    fn operations_and_paths_make_file_rules() {
        assert_eq!(
            rules(&["--op", "fsync", "--path", "pg_wal/*", "--nth", "2"]).unwrap(),
            ["file op=fsync path=pg_wal/* errno=EIO skip=0 nth=2 seed=1"]
        );
        assert_eq!(
            rules(&["--op", "rename,unlink", "--errno", "ENOSPC", "--limit", "1"]).unwrap(),
            ["file op=rename,unlink errno=ENOSPC skip=0 limit=1 seed=1"]
        );
        assert_eq!(
            rules(&["--fail-writes", "--path", "**/*.db"]).unwrap(),
            ["file data=write path=**/*.db errno=EIO skip=0 seed=1"]
        );
        // A name with a space is one value of the rule, never more settings.
        assert_eq!(
            rules(&["--fail-reads", "--path", "x op=fsync"]).unwrap(),
            ["file data=read path=x\\x20op=fsync errno=EIO skip=0 seed=1"]
        );
        // Paths as `vigilfs events` prints them (from the mount's root) or
        // under the mount point become relative to the mount's root.
        for given in [
            "/mnt/pg_wal/*",
            "/pg_wal/*",
            "pg_wal/*",
            "pg_wal//*",
            "/mnt//pg_wal/*/",
        ] {
            assert_eq!(
                rules(&["--op", "fsync", "--path", given]).unwrap(),
                ["file op=fsync path=pg_wal/* errno=EIO skip=0 seed=1"],
                "{given}"
            );
        }
        assert_eq!(
            rules(&["--path", "log/*", "--delay", "20ms", "--io", "write"]).unwrap(),
            ["file data=write path=log/* delay-us=20000 jitter-us=0 skip=0 seed=1"]
        );
        assert_eq!(
            rules(&["--op", "fsync", "--delay", "2ms", "--jitter", "1ms", "--seed", "4"]).unwrap(),
            ["file op=fsync delay-us=2000 jitter-us=1000 skip=0 seed=4"]
        );
        assert_eq!(
            rules(&["--op", "write", "--flaky", "50", "--seed", "3"]).unwrap(),
            ["file op=write errno=EIO skip=0 probability=0.5 seed=3"]
        );
    }

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        let refused = |arguments: &[&str], reason: &str| {
            let error = rules(arguments).unwrap_err();
            assert!(error.contains(reason), "{arguments:?}: {error}");
        };
        refused(&[], "say what to inject");
        refused(&["--fail-writes", "--class", "dta"], "unknown class");
        refused(&["--fail-reads", "--range", "12"], "A:B");
        refused(&["--fail-reads", "--range", "0:0"], "empty");
        refused(&["--fail-writes", "--errno", "EWHATEVER"], "errno");
        refused(&["--flaky", "250"], "percentage");
        refused(&["--bad-blocks", "x:1"], "not a number");
        refused(&["--fail-writes", "--enospc-after", "3"], "one per command");
        refused(&["--op", "explode"], "unknown operation");
        refused(&["--op", "fsync", "--range", "0:4K"], "about the device");
        refused(&["--path", "x", "--fail-flushes"], "about the device");
        refused(&["--path", "x"], "needs what to do");
        refused(&["--op", "fsync", "--path", "../x"], "`..` component");
        refused(&["--op", "fsync", "--path", "/"], "the mount's root itself");
        refused(
            &["--op", "fsync", "--path", "/mnt/"],
            "the mount's root itself",
        );
        refused(&["--op", "fsync", "--path", "a/./b"], "`..` component");
        refused(&["--path", "["], "needs what to do");
        refused(&["--fail-writes", "--path", "["], "path");
        refused(&["--op", "fsync", "--fail-writes"], "drop --fail");
        refused(&["--delay", "5"], "unit");
        refused(&["--delay", "5 hours"], "unit");
        refused(&["--delay", "61s"], "longer than");
        refused(
            &["--jitter", "1ms", "--fail-writes"],
            "--jitter goes with --delay",
        );
        refused(
            &["--delay", "1ms", "--skip", "1"],
            "--skip, --limit and --nth",
        );
        refused(&["--fail-writes", "--nth", "0"], "counts from 1");
        refused(
            &["--fail-writes", "--nth", "2", "--skip", "1"],
            "drop --skip",
        );
        refused(&["--op", "fsync", "--limit", "0"], "never fire");
        refused(
            &["--fail-writes", "--skip", "18446744073709551615"],
            "never fire",
        );
        refused(
            &["--op", "fsync", "--nth", "2", "--limit", "5"],
            "drop --skip",
        );
        refused(&["--path", "", "--fail-writes"], "needs a glob");
        refused(&["--corrupt-reads", "--errno", "ENOSPC"], "their own");
        refused(&["--fail-flushes", "--class", "data"], "whole device");
        refused(&["--fail-flushes", "--range", "60M:1M"], "whole device");
        refused(&["--delay", "1ms", "--errno", "EIO"], "their own");
        refused(
            &["--op", "fsync", "--delay", "1ms", "--errno", "EIO"],
            "their own",
        );
        refused(&["--fail-writes", "--io", "write"], "--io chooses");
        refused(
            &["--path", "x", "--delay", "1ms", "--io", "flush"],
            "whole device",
        );
        refused(
            &["--fail-writes", "--path", "x", "--delay", "1ms"],
            "not both",
        );
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(
            parse_duration("250us", "--delay").unwrap(),
            Duration::from_micros(250)
        );
        assert_eq!(
            parse_duration("1.5ms", "--delay").unwrap(),
            Duration::from_micros(1500)
        );
        assert_eq!(
            parse_duration("2s", "--delay").unwrap(),
            Duration::from_secs(2)
        );
        assert!(parse_duration("ms", "--delay").is_err());
        assert!(parse_duration("1e9s", "--delay").is_err());
        assert!(parse_duration("-1ms", "--delay").is_err());
    }
}
