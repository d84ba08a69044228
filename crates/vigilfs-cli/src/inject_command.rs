//! `vigilfs inject MOUNTPOINT ...`: change the live mount's fault plan.
//!
//! The options are turned into the engine's fault rules (their one-line
//! text form goes over the control socket), one rule per I/O class named.
//! Ranges and bad blocks are positions on the device (the image file), not
//! in a file.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;
use vigilfs::device::{ByteRange, Errno, FaultRule, IoClass, Operations, Probability};

use crate::control::client;
use crate::control::protocol::Request;
use crate::failure::Failure;
use crate::size::ByteSize;
use crate::status_command::rule_line;

/// Device block size used by --bad-blocks and --enospc-after.
const BLOCK: u64 = 4096;

/// The options of `vigilfs inject`.
#[derive(Args, Debug)]
pub struct InjectArgs {
    /// The mount point of a running vigilfs mount.
    pub mountpoint: PathBuf,
    /// Fail writes (like dm-error).
    #[arg(long)]
    pub fail_writes: bool,
    /// Fail reads (like dm-error).
    #[arg(long)]
    pub fail_reads: bool,
    /// Fail flushes (cache flushes of the device).
    #[arg(long)]
    pub fail_flushes: bool,
    /// The errno injected failures report: a name (EIO, ENOSPC, ETIMEDOUT,
    /// EREMOTEIO, ...) or a number.
    #[arg(long, value_name = "ERRNO", default_value = "EIO")]
    pub errno: String,
    /// Which I/O: data, metadata, journal, superblock or all (repeat the
    /// option or give a comma-separated list; default all).
    #[arg(long, value_name = "CLASS", value_delimiter = ',')]
    pub class: Vec<String>,
    /// Only I/O overlapping these device bytes: OFFSET:LENGTH, each with an
    /// optional K, M, G suffix.
    #[arg(long, value_name = "OFFSET:LENGTH")]
    pub range: Option<String>,
    /// Fail each matching request with this probability instead of always
    /// (like dm-flakey): a percentage, e.g. 10 or 0.5.
    #[arg(long, value_name = "PERCENT")]
    pub flaky: Option<String>,
    /// Seed of --flaky's decisions (same seed and I/O order, same failures).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "flaky")]
    pub seed: u64,
    /// Let this many matching requests through before failing.
    #[arg(long, value_name = "N")]
    pub skip: Option<u64>,
    /// Fail at most this many requests, then go quiet.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Mark device blocks (4096 bytes) START..START+COUNT bad: reads fail
    /// with a media error until a write covers the block (like dm-dust).
    #[arg(long, value_name = "START:COUNT")]
    pub bad_blocks: Option<String>,
    /// Behave like an overcommitted thin volume: after this many distinct
    /// device blocks (4096 bytes) are written, writes to new blocks fail
    /// with ENOSPC.
    #[arg(long, value_name = "BLOCKS")]
    pub enospc_after: Option<u64>,
    /// List the rules with their counters.
    #[arg(long)]
    pub list: bool,
    /// Remove the rule with this id.
    #[arg(long, value_name = "ID")]
    pub remove: Option<u64>,
    /// Remove every rule.
    #[arg(long)]
    pub clear: bool,
}

fn bad_arguments(message: impl Into<String>) -> Failure {
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
    format!("{trimmed}%").parse::<Probability>().map_err(|_| {
        bad_arguments(format!(
            "--flaky `{text}` is not a percentage from 0 to 100 (like 10 or 0.5)"
        ))
    })
}

/// The rules the options describe, or `None` for --list/--remove/--clear.
pub fn rules_from(args: &InjectArgs) -> Result<Vec<FaultRule>, Failure> {
    let failing = args.fail_writes || args.fail_reads || args.fail_flushes;
    let kinds = [
        failing || args.flaky.is_some(),
        args.bad_blocks.is_some(),
        args.enospc_after.is_some(),
    ]
    .iter()
    .filter(|chosen| **chosen)
    .count();
    if kinds == 0 {
        return Err(bad_arguments(
            "say what to inject (--fail-writes, --fail-reads, --fail-flushes, --flaky, \
             --bad-blocks, --enospc-after) or --list, --remove ID, --clear",
        ));
    }
    if kinds > 1 {
        return Err(bad_arguments(
            "--fail-*/--flaky, --bad-blocks and --enospc-after make different rules: \
             give one per command",
        ));
    }
    let classes = parse_classes(&args.class)?;
    let range = args.range.as_deref().map(parse_range).transpose()?;
    let errno: Errno = args
        .errno
        .parse()
        .map_err(|error| bad_arguments(format!("{error}")))?;
    let base = if let Some(text) = &args.bad_blocks {
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
        if args.range.is_some() {
            return Err(bad_arguments(
                "--bad-blocks has its own range; drop --range",
            ));
        }
        FaultRule::bad_blocks(ByteRange::new(range.0, range.1), BLOCK)
    } else if let Some(blocks) = args.enospc_after {
        FaultRule::thin_provisioned(blocks, BLOCK)
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
            Some(percent) => FaultRule::flaky(errno, args.seed, parse_percent(percent)?),
            None => FaultRule::fail(errno),
        };
        if args.flaky.is_some() && (args.skip.is_some() || args.limit.is_some()) {
            return Err(bad_arguments("--skip and --limit apply to --fail-* rules"));
        }
        rule.on(operations)
            .after(args.skip.unwrap_or(0), args.limit)
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

pub fn run(args: &InjectArgs) -> Result<u8, Failure> {
    let mountpoint: &Path = &args.mountpoint;
    let maintenance = [args.list, args.remove.is_some(), args.clear]
        .iter()
        .filter(|chosen| **chosen)
        .count();
    let request = if maintenance > 0 {
        let adding = args.fail_writes
            || args.fail_reads
            || args.fail_flushes
            || args.flaky.is_some()
            || args.bad_blocks.is_some()
            || args.enospc_after.is_some();
        if maintenance > 1 || adding {
            return Err(bad_arguments(
                "--list, --remove and --clear go alone, without rule options",
            ));
        }
        if args.list {
            Request::InjectList
        } else if let Some(id) = args.remove {
            Request::InjectRemove { id }
        } else {
            Request::InjectClear
        }
    } else {
        let rules = rules_from(args)?;
        Request::InjectAdd {
            rules: rules.iter().map(ToString::to_string).collect(),
        }
    };
    let result = client::call(mountpoint, &request)
        .map_err(|error| error.into_failure("inject", mountpoint))?;
    let list = |key: &str| -> Vec<Value> { result[key].as_array().cloned().unwrap_or_default() };
    match request {
        Request::InjectList => {
            let rules = list("rules");
            if rules.is_empty() {
                println!("no fault rules");
            }
            for rule in rules {
                println!("{}", rule_line(&rule));
            }
        }
        Request::InjectAdd { .. } => {
            for rule in list("added") {
                println!(
                    "added rule {}: {}",
                    rule["id"].as_u64().unwrap_or(0),
                    rule["rule"].as_str().unwrap_or("?")
                );
            }
        }
        _ => {
            let removed = list("removed");
            if removed.is_empty() {
                println!("no fault rules to remove");
            }
            for rule in removed {
                println!("removed rule {}", rule_line(&rule));
            }
        }
    }
    Ok(0)
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
        rules_from(&parsed.args)
            .map(|rules| rules.iter().map(ToString::to_string).collect())
            .map_err(|failure| failure.to_string())
    }

    #[test]
    fn the_documented_forms_map_onto_rules() {
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
    }

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        assert!(rules(&[]).unwrap_err().contains("say what to inject"));
        assert!(rules(&["--fail-writes", "--class", "dta"])
            .unwrap_err()
            .contains("unknown class"));
        assert!(rules(&["--fail-reads", "--range", "12"])
            .unwrap_err()
            .contains("A:B"));
        assert!(rules(&["--fail-reads", "--range", "0:0"]).is_err());
        assert!(rules(&["--fail-writes", "--errno", "EWHATEVER"]).is_err());
        assert!(rules(&["--flaky", "250"]).is_err());
        assert!(rules(&["--bad-blocks", "x:1"]).is_err());
        assert!(rules(&["--fail-writes", "--enospc-after", "3"]).is_err());
    }
}
