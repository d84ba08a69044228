//! `vigilfs notify-failure`, `vigilfs owners` and `vigilfs scrub`: media
//! failures from the command line.
//!
//! * `notify-failure MOUNTPOINT --offset O --length L [--origin TEXT]`
//!   hands the running mount a failed device range (a report from SMART,
//!   EDAC, ndctl or a storage array) and prints what became of every owner.
//! * `owners MOUNTPOINT|IMAGE --offset O --length L` names every owner of
//!   a device range: files with all their paths and the file byte range,
//!   b-tree nodes, the journal, superblock copies, free, bad, unused. An
//!   image is opened read-only (its journal replayed in memory, as fsck
//!   does) and must not be mounted.
//! * `scrub MOUNTPOINT|IMAGE [--rate MiB/s]` reads and verifies every used
//!   block. On a mount, failures go to notify-failure (healed or lost) and
//!   an interrupted scrub (Ctrl-C, unmount) resumes at the next one; a
//!   progress bar with bytes/s and ETA on a terminal, a plain line every
//!   few seconds otherwise; a summary at the end. On an image, failures are
//!   only reported, with their owners.
//!
//! Offsets and lengths are device bytes (of the image), with an optional
//! K, M, G, T suffix. Exit status: 0, or for scrub 4 when data or metadata
//! is lost (found by this scrub, or poisoned earlier and not rewritten
//! since: errors left, as fsck says), 8 when the command could not run.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use vigilfs::btree::{BtreesOptions, TreeId};
use vigilfs::device::{BlockDevice, ByteRange, FileDevice, FileDeviceOptions, OverlayDevice};
use vigilfs::failure::{self, FailureError};
use vigilfs::format::{read_superblock, FsState, Layout};
use vigilfs::journal::JournalOptions;
use vigilfs::metadata::Metadata;
use vigilfs::scrub::{self, Finding, Progress, ScrubOptions, ScrubSink, Scrubber};

use crate::control::client;
use crate::control::media_report::owner_json;
use crate::control::protocol::Request;
use crate::failure::Failure;
use crate::fsck_command::{CLEAN, ERRORS_LEFT};
use crate::in_use::{self, AcquireError, LockMode};
use crate::size::ByteSize;
use crate::status_command::human_bytes;

/// A device range on the command line.
#[derive(Args, Debug, Clone)]
pub struct RangeArgs {
    /// First byte of the range on the device (K, M, G, T suffixes allowed;
    /// or hexadecimal, 0x...).
    #[arg(long, value_name = "OFFSET")]
    pub offset: String,
    /// Bytes in the range (K, M, G, T suffixes allowed).
    #[arg(long, value_name = "LENGTH")]
    pub length: String,
}

impl RangeArgs {
    fn parse(&self) -> Result<(u64, u64), Failure> {
        let offset = if matches!(self.offset.trim(), "0" | "0x0" | "0X0") {
            0
        } else {
            self.offset
                .parse::<ByteSize>()
                .map_err(|error| Failure::arguments(format!("--offset: {error}")))?
                .0
        };
        let length = self
            .length
            .parse::<ByteSize>()
            .map_err(|error| Failure::arguments(format!("--length: {error}")))?
            .0;
        if offset.checked_add(length).is_none() {
            return Err(Failure::arguments(format!(
                "--offset {offset} + --length {length} is past the largest offset"
            )));
        }
        Ok((offset, length))
    }
}

/// What is at the path: a mount point or an image. A mount point whose
/// process is gone answers ENOTCONN: it is still a mount point, and the
/// control client says what became of it.
fn is_mount_point(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(found) => found.is_dir(),
        Err(error) => error.raw_os_error() == Some(libc::ENOTCONN),
    }
}

/// notify-failure's exit status when the mount is frozen: the notice is
/// queued for the thaw and its outcome not known, which is neither 0
/// (nothing lost) nor 4 (something lost).
pub const QUEUED: u8 = 3;

pub fn notify_failure(
    mountpoint: &Path,
    range: &RangeArgs,
    origin: Option<String>,
    as_json: bool,
) -> Result<u8, Failure> {
    let (offset, length) = range.parse()?;
    let report = client::call(
        mountpoint,
        &Request::NotifyFailure {
            offset,
            length,
            origin,
        },
    )
    .map_err(|error| error.into_failure("notify-failure", mountpoint))?;
    // Like fsck and scrub: 4 while something is lost or the marks could
    // not be recorded (errors are left), 0 when everything was saved. Data
    // an earlier report lost is still lost: a monitor that sends the same
    // report again (after a restart) must not hear "nothing lost".
    let lost_before = report["owners"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|owner| {
            owner["outcome"]["kind"] == "already_known" && owner["poisoned"].as_bool() == Some(true)
        });
    let left = report["lost_blocks"].as_u64().unwrap_or(0) > 0
        || report["records_unsaved"].is_string()
        || lost_before;
    let queued = report["queued"].as_bool() == Some(true);
    let code = if queued {
        QUEUED
    } else if left {
        ERRORS_LEFT
    } else {
        CLEAN
    };
    if as_json {
        println!("{report}");
        return Ok(code);
    }
    if queued {
        println!(
            "the filesystem is frozen: the failure is handled when it is thawed, and what it \
             cost is not known yet (see `vigilfs events` after the thaw)"
        );
        return Ok(code);
    }
    for owner in report["owners"].as_array().into_iter().flatten() {
        println!("{}  {}", owner_line(owner), outcome_text(owner));
    }
    println!(
        "{} owners hit, {} blocks healed, {} lost",
        report["owners_hit"], report["healed_blocks"], report["lost_blocks"]
    );
    if let Some(why) = report["records_unsaved"].as_str() {
        println!(
            "warning: the bad blocks and lost data above are known to this mount only: \
             their records could not be written ({why})"
        );
    }
    Ok(code)
}

/// An owner (its JSON form) as one line.
fn owner_line(owner: &Value) -> String {
    let start = owner["device_offset"].as_u64().unwrap_or(0);
    let length = owner["device_length"].as_u64().unwrap_or(0);
    let at = format!("bytes {start}..{}", start + length);
    let what = match owner["kind"].as_str().unwrap_or("?") {
        "file" => {
            let paths: Vec<String> = owner["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            // "file /a/b", or "an unlinked file", "a file whose names ...".
            let named = match failure::file_names(&paths, owner["paths_unreadable"].as_str()) {
                named if paths.is_empty() => named,
                named => format!("file {named}"),
            };
            let file_offset = owner["file_offset"].as_u64().unwrap_or(0);
            let mut line = format!(
                "{named} (inode {}, generation {}) bytes {file_offset}..{}",
                owner["ino"],
                owner["generation"],
                file_offset + length
            );
            if owner["unwritten"].as_bool() == Some(true) {
                line.push_str(" [unwritten]");
            }
            if owner["poisoned"].as_bool() == Some(true) {
                line.push_str(" [data lost: reads fail until rewritten]");
            }
            line
        }
        "node" => format!(
            "b-tree node of the {} tree, level {}, block {}",
            owner["tree"].as_str().unwrap_or("?"),
            owner["level"],
            owner["block"]
        ),
        "journal" if owner["live"].as_bool() == Some(true) => {
            "journal (entries replay still needs)".into()
        }
        "journal" => "journal (no entry needed there)".into(),
        "superblock" => owner["copy"].as_str().unwrap_or("superblock").to_string(),
        "free" => "free space".into(),
        "bad" => "bad blocks (never allocated)".into(),
        "event_log" => "the event log's records".into(),
        "unused" => "nothing of the filesystem's (reserved)".into(),
        other => other.to_string(),
    };
    format!("{at:<28} {what}")
}

/// What became of an owner (its JSON form, with its outcome), in words.
fn outcome_text(owner: &Value) -> String {
    let outcome = &owner["outcome"];
    match outcome["kind"].as_str().unwrap_or("?") {
        "healed" => match owner["kind"].as_str().unwrap_or("?") {
            "superblock" => "-> healed (every copy rewritten in place)".into(),
            "journal" => "-> healed (no journal entry needs these blocks now; the ring \
                          writes them again when it wraps)"
                .into(),
            _ => format!(
                "-> healed ({} blocks moved to new blocks)",
                outcome["blocks"]
            ),
        },
        "lost" => format!(
            "-> LOST ({} blocks: {})",
            outcome["blocks"],
            outcome["why"].as_str().unwrap_or("")
        ),
        "partly" => format!(
            "-> {} blocks healed, {} LOST",
            outcome["healed"], outcome["lost"]
        ),
        "marked_bad" => "-> marked bad, never allocated again".into(),
        "unmovable" => format!("-> cannot move: {}", outcome["why"].as_str().unwrap_or("")),
        "unused" => "-> nothing there".into(),
        "already_known" => "-> already known".into(),
        "not_confirmed" => "-> reads back intact: nothing done".into(),
        other => format!("-> {other}"),
    }
}

/// An unmounted image opened for reading: its metadata recovered in
/// memory, on an overlay so nothing is written.
struct Image {
    device: Arc<dyn BlockDevice>,
    metadata: Metadata,
    layout: Layout,
    /// Not unmounted cleanly (see `Scrubber::after_crash`).
    after_crash: bool,
    _lock: Option<in_use::ImageLock>,
}

fn open_image(image: &Path) -> Result<Image, Failure> {
    let lock = match in_use::acquire(image, LockMode::Shared) {
        Ok(lock) => Some(lock),
        Err(AcquireError::Io(_)) => None,
        Err(refused) => return Err(Failure::operational(refused.message(image))),
    };
    let file = FileDevice::open(
        image,
        FileDeviceOptions {
            read_only: true,
            ..FileDeviceOptions::default()
        },
    )
    .map_err(|error| Failure::operational(format!("cannot open {}: {error}", image.display())))?;
    let device: Arc<dyn BlockDevice> = Arc::new(OverlayDevice::new(Arc::new(file)));
    let superblock = read_superblock(device.as_ref())
        .map_err(|error| Failure::operational(format!("{}: {error}", image.display())))?
        .superblock;
    // Nothing is written (the overlay keeps replay's writes in memory), so
    // a tree that cannot be read is salvaged around, as by a read-only
    // mount: the owners of a damaged node are what one asks about it.
    let metadata = Metadata::open(
        Arc::clone(&device),
        &superblock,
        JournalOptions::for_filesystem(&superblock),
        BtreesOptions {
            cache_bytes: 32 << 20,
            salvage: true,
        },
    )
    .map_err(|error| Failure::operational(format!("{}: {error}", image.display())))?;
    for (tree, error) in metadata.trees.unreadable_trees() {
        // Owners of file data are found through the names and extents.
        let effect = match tree {
            TreeId::Dirents | TreeId::Extents => {
                "a range holding file data cannot be attributed (it fails); other owners can"
            }
            _ => "owners are attributed without it",
        };
        eprintln!(
            "vigilfs: {}: {error}: read around that tree: {effect}",
            image.display()
        );
    }
    Ok(Image {
        device,
        metadata,
        layout: superblock.layout,
        after_crash: superblock.state == FsState::Dirty,
        _lock: lock,
    })
}

pub fn owners(path: &Path, range: &RangeArgs, as_json: bool) -> Result<u8, Failure> {
    let (offset, length) = range.parse()?;
    let result = if is_mount_point(path) {
        client::call(path, &Request::Owners { offset, length })
            .map_err(|error| error.into_failure("owners", path))?
    } else {
        let image = open_image(path)?;
        let range = ByteRange::at(offset, length);
        let found = failure::owners(
            &image.metadata,
            &image.layout,
            image.device.length(),
            range,
            true,
        )
        .map_err(|error| {
            let message = format!("owners: {}: {error}", path.display());
            match error {
                // A range the device does not hold is a bad command line,
                // as on a mount (exit 2); damage found on the way is 8.
                FailureError::OutOfDevice { .. } | FailureError::TooLong { .. } => {
                    Failure::arguments(message)
                }
                _ => Failure::operational(message),
            }
        })?;
        json!({
            "device_offset": offset,
            "device_length": length,
            "owners": found.iter().map(owner_json).collect::<Vec<_>>(),
        })
    };
    if as_json {
        println!("{result}");
    } else {
        for owner in result["owners"].as_array().into_iter().flatten() {
            println!("{}", owner_line(owner));
        }
    }
    Ok(0)
}

/// How scrub shows its progress.
enum Display {
    Bar(ProgressBar),
    Lines { last: Instant },
}

impl Display {
    fn new() -> Display {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(1);
            bar.set_style(
                ProgressStyle::with_template(
                    "scrub [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            Display::Bar(bar)
        } else {
            Display::Lines {
                last: Instant::now(),
            }
        }
    }

    fn show(&mut self, phase: &str, bytes: u64, total: u64, findings: u64, started: Instant) {
        match self {
            Display::Bar(bar) => {
                bar.set_length(total.max(bytes));
                bar.set_position(bytes);
                bar.set_message(format!("{phase}, {findings} failures"));
            }
            Display::Lines { last } if last.elapsed() >= Duration::from_secs(5) => {
                *last = Instant::now();
                let rate = bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
                // The total is what was in use when the scrub began: blocks
                // written since are read too (review 42: "753 MiB of 509").
                eprintln!(
                    "scrub: {} of {} ({}/s), {phase}, {findings} failures",
                    human_bytes(bytes),
                    human_bytes(total.max(bytes)),
                    human_bytes(rate as u64)
                );
            }
            Display::Lines { .. } => {}
        }
    }

    fn finish(&self) {
        if let Display::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Bytes per second from `--rate` in MiB/s.
fn rate_bytes(rate: Option<f64>) -> Result<Option<u64>, Failure> {
    match rate {
        None => Ok(None),
        // At least one byte a second: a smaller rate would round to 0,
        // which means no limit at all.
        Some(mib) if mib.is_finite() && mib * 1_048_576.0 >= 1.0 && mib <= 1_048_576.0 => {
            Ok(Some((mib * 1_048_576.0) as u64))
        }
        Some(mib) => Err(Failure::arguments(format!(
            "--rate {mib}: give MiB/s, at least 0.000001 (one byte a second) and at most 1048576"
        ))),
    }
}

pub fn scrub(path: &Path, rate: Option<f64>, restart: bool, as_json: bool) -> Result<u8, Failure> {
    let rate = rate_bytes(rate)?;
    if is_mount_point(path) {
        scrub_mounted(path, rate, restart, as_json)
    } else {
        scrub_image(path, rate, as_json)
    }
}

fn scrub_mounted(
    mountpoint: &Path,
    rate: Option<u64>,
    restart: bool,
    as_json: bool,
) -> Result<u8, Failure> {
    let request = Request::Scrub { rate, restart };
    let worker = {
        let mountpoint = mountpoint.to_path_buf();
        std::thread::spawn(move || client::call_waiting(&mountpoint, &request, None))
    };
    // Ctrl-C ends this process, which closes the connection: the mount
    // stops the scrub at its next block and keeps where it was. Said here,
    // with where that is, rather than a silent death.
    crate::signals::watch_for_interrupts();
    let started = Instant::now();
    let mut display = Display::new();
    let mut last_seen = None;
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(signal) = crate::signals::interrupting_signal() {
            display.finish();
            // As last polled: the mount reads on until it sees the
            // connection closed (within a second), and keeps that place.
            let position = match last_seen {
                Some((phase, bytes, total)) => format!(
                    " in {phase}, about {} of {} read",
                    human_bytes(bytes),
                    human_bytes(total)
                ),
                None => String::new(),
            };
            return Err(Failure::with_code(
                format!(
                    "scrub: {}: interrupted by {}{position}; the mount stops it once the \
                     read in progress ends (within a second, unless the device is that slow) \
                     and the next `vigilfs scrub` resumes where it stopped (--restart starts \
                     over)",
                    mountpoint.display(),
                    crate::signals::name(signal)
                ),
                crate::signals::exit_status(signal),
            ));
        }
        let Ok(status) = client::call(mountpoint, &Request::Status) else {
            continue;
        };
        let running = &status["media"]["scrub"]["running"];
        if !running.is_null() {
            let phase = running["phase"].as_str().unwrap_or("?").to_string();
            let bytes = running["bytes"].as_u64().unwrap_or(0);
            let total = running["total_bytes"].as_u64().unwrap_or(0);
            display.show(
                &phase,
                bytes,
                total,
                running["findings"].as_u64().unwrap_or(0),
                started,
            );
            last_seen = Some((phase, bytes, total.max(bytes)));
        }
    }
    display.finish();
    let summary = worker
        .join()
        .map_err(|_| Failure::operational("scrub: the client thread panicked"))?
        .map_err(|error| error.into_failure("scrub", mountpoint))?;
    if as_json {
        println!("{summary}");
    } else {
        let bytes = summary["bytes"].as_u64().unwrap_or(0);
        let seconds = summary["elapsed_seconds"].as_f64().unwrap_or(0.0);
        if let Some(from) = summary["resumed_from"].as_object() {
            println!(
                "resumed an interrupted scrub at {} block {}",
                from["phase"].as_str().unwrap_or("?"),
                from["block"]
            );
        }
        println!(
            "scrub {}: {} checked in {seconds:.1} s ({}/s); {} failures found, {} owners hit, \
             {} blocks healed, {} lost",
            if summary["complete"].as_bool() == Some(true) {
                "complete"
            } else {
                "stopped (the next scrub resumes there)"
            },
            human_bytes(bytes),
            human_bytes((bytes as f64 / seconds.max(0.001)) as u64),
            summary["findings"],
            summary["owners_hit"],
            summary["healed_blocks"],
            summary["lost_blocks"]
        );
    }
    // Data lost earlier (this scrub skips what is known lost) counts too:
    // errors are left until it is rewritten. As the mount counted them when
    // the scrub ended: an unmount that stopped it leaves no mount to ask.
    let known_lost = summary["poisoned_runs"].as_u64().unwrap_or(0);
    if summary["unverified_extents"].as_u64().unwrap_or(0) > 0 && !as_json {
        println!(
            "{} extents of file data not verified: the b-tree nodes holding their checksums \
             are damaged (reported above); vigilfs fsck says more",
            summary["unverified_extents"]
        );
    }
    if known_lost > 0 && !as_json {
        println!(
            "{known_lost} runs of file data are lost: reads of them fail until rewritten \
             (vigilfs status lists them)"
        );
    }
    // Lost before it reached the device: no block is bad, yet it is data
    // lost (review 48: scrub exited 0 while fsck said 4).
    let never_written = summary["lost_data_runs"].as_u64().unwrap_or(0);
    if never_written > 0 && !as_json {
        println!(
            "{never_written} runs of file data were lost before they reached the device: \
             reads of them fail until rewritten (vigilfs unsynced lists them)"
        );
    }
    let unreadable = summary["unreadable"].as_u64().unwrap_or(0);
    if unreadable > 0 && !as_json {
        println!("{}", unreadable_text(unreadable));
    }
    let lost = if summary["lost_blocks"].as_u64().unwrap_or(0) > 0
        || known_lost > 0
        || never_written > 0
        || unreadable > 0
    {
        ERRORS_LEFT
    } else {
        CLEAN
    };
    // Not everything was read (an unmount, a shutdown or another client
    // stopped it): a cron job must not take that for a clean pass.
    let stopped = if summary["complete"].as_bool() == Some(true) {
        CLEAN
    } else {
        STOPPED
    };
    Ok(lost | stopped)
}

/// What a scrub says of reads the device failed with an error that was
/// not the medium's: not verified, so not a clean pass (review 50: "0
/// failures found", exit 0, while an injected path failure failed reads).
fn unreadable_text(reads: u64) -> String {
    format!(
        "{reads} reads failed with an error that was not the medium's (a failing path, such as \
         an injected --fail-reads rule): the blocks they cover were not verified; scrub again \
         once the device reads"
    )
}

/// Exit status bit of a scrub that stopped before the end (fsck's
/// "checking canceled").
const STOPPED: u8 = 32;

/// Collects an image scrub's findings and shows its progress.
struct ImageSink {
    findings: Vec<Finding>,
    display: Display,
    started: Instant,
}

impl ScrubSink for ImageSink {
    fn finding(&mut self, finding: &Finding) -> std::ops::ControlFlow<()> {
        self.findings.push(finding.clone());
        std::ops::ControlFlow::Continue(())
    }

    fn progress(&mut self, progress: &Progress) -> std::ops::ControlFlow<()> {
        self.display.show(
            progress.cursor.phase.name(),
            progress.bytes,
            progress.total_bytes,
            progress.findings,
            self.started,
        );
        std::ops::ControlFlow::Continue(())
    }
}

/// The journal entries recovery found needed and missing or damaged, one
/// line each (fsck reports them as problems too).
fn journal_losses(recovery: &vigilfs::journal::RecoveryReport) -> Vec<String> {
    let mut losses = Vec::new();
    if let Some((first, last)) = recovery.lost_since_clean {
        losses.push(format!(
            "entries {first}..={last}, the newest when the filesystem was unmounted cleanly, \
             are missing or damaged"
        ));
    }
    if let Some((first, newest)) = recovery.acknowledged_lost {
        losses.push(format!(
            "entry {first}, which a completed flush covered and entry {newest} needs, is \
             missing or damaged"
        ));
    }
    losses
}

fn scrub_image(image_path: &Path, rate: Option<u64>, as_json: bool) -> Result<u8, Failure> {
    let image = open_image(image_path)?;
    let scrubber = Scrubber {
        metadata: &image.metadata,
        device: image.device.as_ref(),
        layout: image.layout,
        after_crash: image.after_crash,
    };
    let mut sink = ImageSink {
        findings: Vec::new(),
        display: Display::new(),
        started: Instant::now(),
    };
    let options = ScrubOptions {
        rate,
        data_only: false,
    };
    let outcome = scrub::run(&scrubber, scrub::Cursor::START, options, &mut sink);
    sink.display.finish();
    let known_lost = image.metadata.poison.len() as u64;
    // Lost before it reached the device (an unmount's writeback failed):
    // no block is bad, yet reads of it fail, as on a mount (review 49:
    // the image's scrub exited 0 where fsck said 4).
    let never_written = image.metadata.lost.all().len() as u64;
    let stats = outcome.map_err(|error| {
        Failure::operational(format!("scrub: {}: {error}", image_path.display()))
    })?;
    let journal_losses = journal_losses(&image.metadata.recovery);
    let findings: Vec<Value> = sink
        .findings
        .iter()
        .map(|finding| {
            let owners = failure::owners(
                &image.metadata,
                &image.layout,
                image.device.length(),
                finding.range,
                true,
            )
            .map(|owners| owners.iter().map(owner_json).collect::<Vec<_>>())
            .unwrap_or_default();
            json!({
                "device_offset": finding.range.start,
                "device_length": finding.range.len(),
                "cause": finding.cause.name(),
                "what": finding.what,
                "owners": owners,
            })
        })
        .collect();
    if as_json {
        println!(
            "{}",
            json!({
                "image": image_path.display().to_string(),
                "bytes": stats.bytes,
                "findings": findings,
                "unreadable": stats.unreadable,
                "unverified_extents": stats.unverified,
                "poisoned_runs": known_lost,
                "lost_data_runs": never_written,
                "journal_losses": journal_losses,
                "elapsed_seconds": stats.elapsed.as_secs_f64(),
            })
        );
    } else {
        for finding in &findings {
            println!(
                "FAILED bytes {}..{} ({}): {}",
                finding["device_offset"],
                finding["device_offset"].as_u64().unwrap_or(0)
                    + finding["device_length"].as_u64().unwrap_or(0),
                finding["cause"].as_str().unwrap_or("?"),
                finding["what"].as_str().unwrap_or("")
            );
            for owner in finding["owners"].as_array().into_iter().flatten() {
                if owner["kind"] != "bad" {
                    println!("  {}", owner_line(owner));
                }
            }
        }
        let seconds = stats.elapsed.as_secs_f64();
        println!(
            "scrub of {}: {} checked in {seconds:.1} s ({}/s); {} failures found",
            image_path.display(),
            human_bytes(stats.bytes),
            human_bytes((stats.bytes as f64 / seconds.max(0.001)) as u64),
            findings.len()
        );
        if stats.unverified > 0 {
            println!(
                "{} extents of file data not verified: the b-tree nodes holding their \
                 checksums are damaged (reported above)",
                stats.unverified
            );
        }
        if known_lost > 0 {
            println!(
                "{known_lost} runs of file data were lost before (scrub skips them): reads of \
                 them fail until rewritten (fsck lists them)"
            );
        }
        if never_written > 0 {
            println!(
                "{never_written} runs of file data were lost before they reached the device: \
                 reads of them fail until rewritten (fsck lists them)"
            );
        }
        if stats.unreadable > 0 {
            println!("{}", unreadable_text(stats.unreadable));
        }
        for loss in &journal_losses {
            println!("FAILED journal: {loss} (fsck tells more)");
        }
    }
    // Data lost before counts too, as on a mount: errors are left; and
    // blocks not verified are no clean pass. So do journal entries the
    // filesystem needed and lost (review 58: a zeroed journal scrubbed
    // clean, while fsck said 4 and the image could not be mounted).
    let clean =
        findings.is_empty() && known_lost == 0 && never_written == 0 && journal_losses.is_empty();
    Ok(if clean && stats.unreadable == 0 {
        CLEAN
    } else {
        ERRORS_LEFT
    })
}
