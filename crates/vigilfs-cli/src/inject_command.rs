//! `vigilfs inject MOUNTPOINT ...`: the crash lab of a live mount.
//!
//! One action per command: add rules (how options become rules is
//! `inject_rules`), make the device drop flushes, cut the power, or list,
//! remove, clear rules, or read the fault log. Everything goes over the
//! control socket; rules travel in their one-line text form.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::control::client;
use crate::control::protocol::Request;
use crate::failure::Failure;
use crate::inject_rules::{adds_rules, bad_arguments, rules_from};
use crate::status_command::rule_line;
use crate::unsynced_command::describe_unsynced;

/// The options of `vigilfs inject`.
#[derive(Args, Debug)]
pub struct InjectArgs {
    /// The mount point of a running vigilfs mount.
    pub mountpoint: PathBuf,
    /// Fail writes (like dm-error); with --path, the matching files' data
    /// writes (writeback).
    #[arg(long)]
    pub fail_writes: bool,
    /// Fail reads (like dm-error); with --path, the matching files' data
    /// reads. Cached data is still read from memory, as over a failing
    /// disk: add --drop-caches for the next reads to reach the device.
    #[arg(long)]
    pub fail_reads: bool,
    /// Fail flushes (cache flushes of the device): every flush, the
    /// event log's own among them, so --skip and --limit count those too
    /// (a failed event-log flush shows in status as a failed log write).
    #[arg(long)]
    pub fail_flushes: bool,
    /// The errno injected failures report: a name (EIO, ENOSPC, ETIMEDOUT,
    /// EREMOTEIO, ...) or a number [default: EIO]. For rules that fail
    /// (--fail-*, --flaky, --op, --path) only. A device rule's errno is
    /// what the device says (the fault log shows it); a read it fails
    /// reaches the program as EIO, as a failed disk read does on Linux,
    /// while --op rules reach it as given. ENOSYS is refused (FUSE
    /// reads it as a missing operation). The kernel retries an open,
    /// create, unlink, rename, mkdir, rmdir, link, symlink or setattr that
    /// fails with ESTALE once, as on NFS: a rule that fires once there is
    /// not seen by the program.
    #[arg(long, value_name = "ERRNO")]
    pub errno: Option<String>,
    /// Which I/O: data, metadata, journal, superblock, events (the event
    /// log) or all (repeat the option or give a comma-separated list;
    /// default all).
    #[arg(long, value_name = "CLASS", value_delimiter = ',')]
    pub class: Vec<String>,
    /// Only I/O overlapping these device bytes: OFFSET:LENGTH, each with an
    /// optional K, M, G suffix.
    #[arg(long, value_name = "OFFSET:LENGTH")]
    pub range: Option<String>,
    /// Fire for each match with this probability instead of always (like
    /// dm-flakey): a percentage, e.g. 10 or 0.5.
    #[arg(long, value_name = "PERCENT")]
    pub flaky: Option<String>,
    /// Seed of every draw: --flaky's decisions, --jitter, --corrupt-reads'
    /// bits, --torn's sectors (same seed and I/O order, same faults).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Let this many matches through before firing.
    #[arg(long, value_name = "N")]
    pub skip: Option<u64>,
    /// Fire at most this many times, then go quiet.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Fire at the N-th match only (counting from 1), once.
    #[arg(long, value_name = "N")]
    pub nth: Option<u64>,
    /// Fail (or delay) these filesystem operations: fsync, fsyncdir,
    /// write, read, open, create, rename, unlink, mkdir, rmdir, link,
    /// symlink, fallocate, setattr, setxattr, close (comma-separated).
    /// An fsync failure fails the file's writeback as a real device error
    /// would. What later fsyncs return is the mount's `fsync_errors=`: by
    /// default EIO until the data is durable, with `fsync_errors=once` what
    /// Linux returns (the error once per open file, then 0). A close rule
    /// reaches files opened after it is set (the kernel is told at open
    /// whether to report closes). A read failure is one the program sees:
    /// the kernel drops a readahead's error and reads again, so a failed
    /// read keeps failing for its bytes for 1 s, for every reader (counted
    /// once), as a bad disk region would. Reads the page cache answers
    /// never reach the rule (--drop-caches). Only the failed fsync is an
    /// error of the filesystem's (an event, a count: it fails the
    /// writeback); the other operations fail for the program alone, and
    /// the fault log records them: to see events and hooks fire, fail the
    /// device (--fail-reads, --fail-writes, --bad-blocks).
    #[arg(long, value_name = "OPS", value_delimiter = ',')]
    pub op: Vec<String>,
    /// Only files whose path (relative to the mount's root) matches this
    /// glob: `pg_wal/*`, `**/*.db`. Files created later match too. A name
    /// may be written as it is or as `vigilfs events` prints it (a tab as
    /// `\x09`); a leading `/` or the mount point's path is dropped.
    #[arg(long, value_name = "GLOB")]
    pub path: Option<String>,
    /// Hold each matching request this long (a slow disk): 200us, 5ms, 1.5s.
    /// At most 60 s, also for several rules matching one request together
    /// (a device request and the operation it serves are held separately).
    #[arg(long, value_name = "DURATION")]
    pub delay: Option<String>,
    /// With --delay: up to this much more, drawn from --seed.
    #[arg(long, value_name = "DURATION")]
    pub jitter: Option<String>,
    /// Which requests --delay holds: read, write, flush (comma-separated;
    /// default all; with --path, the files' data reads and writes).
    #[arg(long, value_name = "IO", value_delimiter = ',')]
    pub io: Vec<String>,
    /// Flip a bit in blocks read from the device (silent corruption;
    /// --flaky for a share of reads, --seed for which bits): checksums turn
    /// it into EIO and an event, never wrong data. A data block that fails
    /// this way is marked lost, as the medium's failures are: its reads
    /// fail until it is rewritten, or, after --clear, until `vigilfs
    /// scrub` reads it intact.
    #[arg(long)]
    pub corrupt_reads: bool,
    /// Mark device blocks (4096 bytes) START..START+COUNT bad: reads fail
    /// with a media error until a write covers the block (like dm-dust).
    #[arg(long, value_name = "START:COUNT")]
    pub bad_blocks: Option<String>,
    /// Behave like an overcommitted thin volume: after this many distinct
    /// device blocks (4096 bytes) are written, writes to new blocks fail
    /// with ENOSPC (0: at once). As on Linux, a file's data that cannot be
    /// written fails its fsync, and a metadata write that cannot be written
    /// is a metadata failure (EIO) that `errors=` acts on (with
    /// `remount-ro`, the filesystem stops writing; `--clear` does not undo
    /// that).
    #[arg(long, value_name = "BLOCKS")]
    pub enospc_after: Option<u64>,
    /// The device acknowledges flushes but keeps nothing (a lying disk):
    /// the next power cut shows what that costs. --clear stops it.
    /// Crashable mounts only.
    #[arg(long)]
    pub drop_flushes: bool,
    /// Cut the power now: everything not made durable by an fsync or
    /// `vigilfs sync` that succeeded is lost, the journal is replayed, and the
    /// mount serves the state after the crash when this returns. Crashable
    /// mounts only (`-o crashable`). Delay rules stay through the cut, so
    /// the recovery's own writes and flushes wait too: the cut takes as
    /// long as they do.
    #[arg(long)]
    pub power_cut: bool,
    /// With --power-cut: the device's unflushed writes survive in part,
    /// sector by sector, as --seed decides (a torn write). Only what the
    /// device took since its last flush can tear: the mount writes data
    /// back and flushes in one go (at an fsync, every writeback
    /// interval), so there is often nothing; slow flushes (`--delay 1s
    /// --io flush`) or a cut in the middle of a large writeback leave some.
    #[arg(long, requires = "power_cut")]
    pub torn: bool,
    /// Drop the clean cached data, the engine's and the kernel's (the
    /// kernel's drop_caches does not reach the engine's cache), so the next
    /// reads reach the device and its fault rules. Alone, or with the
    /// options of a rule (dropped once the rule is set).
    #[arg(long)]
    pub drop_caches: bool,
    /// List the rules with their counters.
    #[arg(long)]
    pub list: bool,
    /// Remove the rule with this id.
    #[arg(long, value_name = "ID")]
    pub remove: Option<u64>,
    /// Remove every rule (and stop dropping flushes).
    #[arg(long)]
    pub clear: bool,
    /// Print the fault log: every rule set or cleared and every time one
    /// fired (time, rule, operation or I/O class, inode and path, offset,
    /// length (the device's bytes for device I/O, the file's for a read or
    /// write --op rule, none for other operations), errno).
    #[arg(long)]
    pub log: bool,
    /// With --log: go on printing new entries until the mount goes away.
    #[arg(long, requires = "log")]
    pub follow: bool,
    /// Print JSON (--log: one object per line; --list, --power-cut and
    /// added rules: one document).
    #[arg(long)]
    pub json: bool,
}

/// What one `inject` command does.
enum Action {
    Add,
    DropCaches,
    DropFlushes,
    PowerCut,
    List,
    Remove(u64),
    Clear,
    Log,
}

fn action(args: &InjectArgs) -> Result<Action, Failure> {
    let chosen: Vec<(bool, Action, &str)> = vec![
        (adds_rules(args), Action::Add, "rule options"),
        (
            args.drop_caches && !adds_rules(args),
            Action::DropCaches,
            "--drop-caches",
        ),
        (args.drop_flushes, Action::DropFlushes, "--drop-flushes"),
        (args.power_cut, Action::PowerCut, "--power-cut"),
        (args.list, Action::List, "--list"),
        (
            args.remove.is_some(),
            Action::Remove(args.remove.unwrap_or(0)),
            "--remove",
        ),
        (args.clear, Action::Clear, "--clear"),
        (args.log, Action::Log, "--log"),
    ]
    .into_iter()
    .filter(|(given, _, _)| *given)
    .collect();
    match chosen.len() {
        0 => rules_from(args).map(|_| Action::Add),
        1 => {
            let (_, action, name) = chosen.into_iter().next().expect("one action chosen");
            if !matches!(action, Action::Add) {
                // What shapes a rule means nothing to the other actions: taken
                // silently, `--drop-flushes --limit 1` dropped every flush.
                let modifiers = [
                    (args.errno.is_some(), "--errno"),
                    (!args.class.is_empty(), "--class"),
                    (args.range.is_some(), "--range"),
                    (args.skip.is_some(), "--skip"),
                    (args.limit.is_some(), "--limit"),
                    (args.nth.is_some(), "--nth"),
                    (!args.io.is_empty(), "--io"),
                    (args.jitter.is_some(), "--jitter"),
                ];
                if let Some((_, option)) = modifiers.iter().find(|(given, _)| *given) {
                    return Err(bad_arguments(format!(
                        "{option} shapes a fault rule; {name} takes none"
                    )));
                }
            }
            Ok(action)
        }
        _ => {
            let names: Vec<&str> = chosen.iter().map(|(_, _, name)| *name).collect();
            Err(bad_arguments(format!(
                "one action per command: {} go separately",
                names.join(", ")
            )))
        }
    }
}

fn call(mountpoint: &Path, request: &Request) -> Result<Value, Failure> {
    client::call(mountpoint, request).map_err(|error| error.into_failure("inject", mountpoint))
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

pub fn run(args: &InjectArgs) -> Result<u8, Failure> {
    let mountpoint: &Path = &args.mountpoint;
    let list = |result: &Value, key: &str| -> Vec<Value> {
        result[key].as_array().cloned().unwrap_or_default()
    };
    match action(args)? {
        Action::Add => {
            let rules = rules_from(args)?;
            let request = Request::InjectAdd {
                rules,
                drop_caches: args.drop_caches,
            };
            let result = call(mountpoint, &request)?;
            if args.json {
                print_json(&result);
            }
            for rule in list(&result, "added").iter().filter(|_| !args.json) {
                println!(
                    "added rule {}: {}",
                    rule["id"].as_u64().unwrap_or(0),
                    rule["rule"].as_str().unwrap_or("?")
                );
            }
        }
        Action::DropCaches => {
            let request = Request::InjectAdd {
                rules: Vec::new(),
                drop_caches: true,
            };
            call(mountpoint, &request)?;
            println!("dropped the clean cached data: the next reads reach the device");
        }
        Action::DropFlushes => {
            call(mountpoint, &Request::DropFlushes { enabled: true })?;
            println!(
                "the device now acknowledges flushes and keeps nothing \
                 (`vigilfs inject {} --clear` stops it)",
                mountpoint.display()
            );
        }
        Action::PowerCut => {
            let request = Request::PowerCut {
                torn: args.torn,
                seed: args.seed,
            };
            let result = call(mountpoint, &request)?;
            if args.json {
                print_json(&result);
            } else {
                print!("{}", describe_cut(&result, mountpoint));
            }
        }
        Action::List => {
            let result = call(mountpoint, &Request::InjectList)?;
            if args.json {
                print_json(&result);
                return Ok(0);
            }
            let rules = list(&result, "rules");
            if rules.is_empty() {
                println!("no fault rules");
            }
            for rule in rules {
                println!("{}", rule_line(&rule));
            }
            if result["drop_flushes"] == true {
                println!("the device drops flushes (acknowledges them and keeps nothing)");
            }
        }
        Action::Remove(id) => {
            let result = call(mountpoint, &Request::InjectRemove { id })?;
            for rule in list(&result, "removed") {
                println!("removed rule {}", rule_line(&rule));
            }
        }
        Action::Clear => {
            let result = call(mountpoint, &Request::InjectClear)?;
            if args.json {
                print_json(&result);
                return Ok(0);
            }
            let removed = list(&result, "removed");
            let stopped = result["stopped_dropping_flushes"] == true;
            if removed.is_empty() && !stopped {
                println!("no fault rules to remove");
            }
            for rule in removed {
                println!("removed rule {}", rule_line(&rule));
            }
            if stopped {
                println!("the device keeps what it flushes again (no more --drop-flushes)");
            }
            // What the rules did stays done: data they made unreadable is
            // marked lost, and clearing them does not unmark it.
            // The rules are gone whatever this asks: it cannot fail the
            // clear.
            let status = call(mountpoint, &Request::Status).unwrap_or_default();
            let lost = status["media"]["poisoned_runs"].as_u64().unwrap_or(0);
            if lost > 0 {
                println!(
                    "{lost} runs of file blocks stay marked lost (reads get EIO until rewritten): \
                     `vigilfs scrub {}` gives back those that read intact now",
                    mountpoint.display()
                );
            }
        }
        Action::Log => return follow_log(mountpoint, args.follow, args.json),
    }
    Ok(0)
}

/// What a power cut's answer says was not durable, as `describe_unsynced`
/// takes it. The list is what the filesystem knew was not durable; a lying
/// device also lost what it had acknowledged, which the list then says
/// first (and never that every change was durable).
pub fn lost_in_cut(result: &Value) -> Value {
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    let device = &result["device"];
    let mut lost = result["lost"].clone();
    let dropped = number(&device["flushes_dropped"]);
    if dropped > 0 && number(&device["sectors_unflushed"]) > 0 {
        lost["device"] = serde_json::json!({ "flushes_dropped": dropped });
    }
    lost
}

/// A power cut's answer for people.
fn describe_cut(result: &Value, mountpoint: &Path) -> String {
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    let device = &result["device"];
    let mut out = format!(
        "power cut {} on {}: the mount serves the state after the crash \
         (took {:.1} ms{})\n",
        number(&result["cut"]),
        mountpoint.display(),
        result["took_ms"].as_f64().unwrap_or(0.0),
        if result["replayed"] == true {
            ", journal replayed"
        } else {
            ""
        }
    );
    let unflushed = number(&device["sectors_unflushed"]);
    out.push_str(&if result["torn"] == true {
        format!(
            "device: {unflushed} sectors unflushed, torn (seed {}): {} kept, {} kept an \
             older version, {} lost\n",
            number(&result["seed"]),
            number(&device["sectors_kept"]),
            number(&device["sectors_torn"]),
            unflushed
                .saturating_sub(number(&device["sectors_kept"]))
                .saturating_sub(number(&device["sectors_torn"]))
        )
    } else {
        format!("device: {unflushed} sectors unflushed, all lost\n")
    });
    out.push_str("not durable when the power went (lost, or torn):\n");
    for line in describe_unsynced(&lost_in_cut(result)) {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// One fault log entry for people: `#12 2026-12-02T10:45:01.123456Z rule 3
/// fired: fsync pg_wal/0001 (inode 42): EIO`.
pub fn describe_log_entry(entry: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or("?").to_string();
    let rule = match entry["rule"].as_u64() {
        Some(id) => format!("rule {id}"),
        None => "device".to_string(),
    };
    let head = format!(
        "#{} {} {rule}",
        entry["sequence"].as_u64().unwrap_or(0),
        text(&entry["time"])
    );
    match entry["event"].as_str() {
        Some("set") => format!("{head} set: {}", text(&entry["rule_text"])),
        Some("cleared") => format!("{head} cleared"),
        Some("power_cut") => format!(
            "{head} power cut {}: the device lost what it held unflushed",
            entry["cut"].as_u64().unwrap_or(0)
        ),
        _ => {
            let mut line = format!("{head} fired: {}", text(&entry["operation"]));
            if let Some(class) = entry["class"].as_str() {
                line.push_str(&format!(" {class}"));
            }
            // Device I/O (it has a class) names the device's bytes, which
            // events call device_offset; a read or write of a file (an
            // --op rule) the file's.
            let bytes = match (entry["offset"].as_u64(), entry["length"].as_u64()) {
                (Some(offset), Some(length)) => format!(" bytes {offset}+{length}"),
                _ => String::new(),
            };
            if entry["class"].is_string() && !bytes.is_empty() {
                line.push_str(&format!(" device{bytes}"));
            }
            let path = entry["path"].as_str().map(|path| format!(" {path}"));
            line.push_str(path.as_deref().unwrap_or_default());
            match (entry["inode"].as_u64(), entry["directory"].as_u64()) {
                (Some(inode), _) => line.push_str(&format!(" (inode {inode})")),
                (None, Some(directory)) => {
                    line.push_str(&format!(" (in directory inode {directory})"));
                }
                _ => {}
            }
            if !entry["class"].is_string() {
                line.push_str(&bytes);
            }
            if let Some(name) = entry["errno_name"].as_str() {
                line.push_str(&format!(": {name}"));
            } else if let Some(errno) = entry["errno"].as_i64() {
                line.push_str(&format!(": errno {errno}"));
            }
            if let Some(delay) = entry["delay_us"].as_u64() {
                line.push_str(&format!(": held {delay} µs"));
            }
            if entry["corrupted"] == true {
                line.push_str(": a bit flipped");
            }
            line
        }
    }
}

/// How often `--log --follow` asks for more.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Prints the fault log, and with `follow` what comes next until the
/// mount goes away.
fn follow_log(mountpoint: &Path, follow: bool, json: bool) -> Result<u8, Failure> {
    let mut after = 0;
    let mut answered = false;
    loop {
        let result = match client::call(mountpoint, &Request::FaultLog { after }) {
            Ok(result) => result,
            // Unmounted while we followed it: the log ends. A mount still
            // there whose process stopped answering (killed) is a failure,
            // as it is for `events --follow`.
            Err(error) if answered => {
                let still_mounted = crate::control::canonical_mountpoint(mountpoint)
                    .is_ok_and(|canonical| client::mount_owner(&canonical).is_ok());
                return if still_mounted {
                    Err(error.into_failure("inject", mountpoint))
                } else {
                    Ok(0)
                };
            }
            Err(error) => return Err(error.into_failure("inject", mountpoint)),
        };
        let dropped = result["dropped"].as_u64().unwrap_or(0);
        if dropped > 0 {
            let note = format!("{dropped} entries dropped before they could be read");
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "event": "dropped", "count": dropped })
                );
            } else {
                println!("({note})");
            }
        }
        let entries = result["entries"].as_array().cloned().unwrap_or_default();
        for entry in &entries {
            if json {
                println!("{entry}");
            } else {
                println!("{}", describe_log_entry(entry));
            }
        }
        after = result["next"].as_u64().unwrap_or(after).max(after);
        if entries.len() == crate::control::faults::LOG_BATCH {
            continue;
        }
        if !follow {
            if after == 0 && !json {
                println!("the fault log is empty");
            }
            return Ok(0);
        }
        answered = true;
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}
