//! `vigilfs crash-test`: runs a program on a crashable mount, cuts the
//! power at seeded moments, and checks what survived.
//!
//! A run is a dry run and then one trial per cut. Every trial starts from a
//! fresh image, so trials are independent and each can be replayed alone:
//!
//! 1. The dry run mounts a fresh image, runs `--setup` if given (its
//!    result made durable: it is never cut), runs the workload to its end
//!    without a cut, counts the fsyncs (of files and of directories) and
//!    the writes the workload made, and runs the check on the result. A
//!    workload that fails, or a check that fails, without any crash is a
//!    usage problem, not a finding, and stops the run.
//! 2. Trial `i` picks a cut point from the run's seed and `i`: the first
//!    "after the workload ended" (all it made durable must be there),
//!    then "just before the k-th fsync" (a boundary: all that was synced
//!    before it must survive) or "just before the k-th write" (between
//!    boundaries), the two kinds in turns and no point twice while there
//!    are points left (see [`moment`]); its torn writes draw from a seed
//!    of its own. It mounts a fresh image, runs the
//!    setup as the dry run did, arms the cut and runs the workload. When
//!    the workload is about to make that operation, the power goes, the
//!    workload's process group is killed (the machine died with it; every
//!    process it left is killed and reaped before the check runs, see
//!    `crash_test_reaper.rs`), the image loses what was not flushed (or
//!    keeps it torn, with `--torn`), and the mount comes back on the
//!    recovered image. The check then runs in the mount: a non-zero exit is
//!    a violated invariant. The image is unmounted and fsck'd: a finding of
//!    fsck is a failure too (of vigilfs, not of the program).
//!
//! Invariants: the cut point of trial `i` depends only on the seed, `i`
//! and the dry run's counts, so `--seed S --cut-index I` replays trial `I`
//! exactly as long as the workload itself is deterministic; the images of
//! failed trials are kept for inspection, the rest removed.
//!
//! Here: the command's arguments, the work directory, and the run from
//! dry run to verdict. Where each trial cuts is in `cut_points`; running
//! one trial and reporting it is in `trials`.

mod cut_points;
mod trials;

use std::fs::{self};
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::crash_test_janitor::{self, Janitor};
use crate::crash_test_reaper;
use crate::failure::Failure;
use crate::inject_rules::duration_with_unit;
use crate::mount_options::{self as options, MountSettings};
use crate::signals;
use crate::size::ByteSize;

/// Exit status when a trial failed.
const FOUND: u8 = 1;
/// How many lines of a program's output a report shows.
pub(crate) const OUTPUT_LINES: usize = 20;

/// `vigilfs crash-test` arguments.
#[derive(Debug, Args)]
pub struct CrashTestArgs {
    /// The program under test: a shell command run in the mount (its
    /// working directory, so name programs by absolute path);
    /// VIGILFS_MOUNT, VIGILFS_CUT and VIGILFS_SEED are set, and
    /// `vigilfs sync "$VIGILFS_MOUNT"` (status, unsynced...) works there.
    #[arg(long, value_name = "CMD", value_parser = shell_command)]
    pub workload: String,
    /// The invariant: a shell command run in the mount after each cut (and
    /// after the dry run); it exits non-zero when the invariant is violated.
    #[arg(long, value_name = "CMD", value_parser = shell_command)]
    pub check: String,
    /// Run in the mount before the workload, on every trial's fresh image,
    /// and never cut: what it leaves is made durable before the workload
    /// starts (a database's initdb and schema, the files a test starts
    /// from), so cuts fall only in the workload, where they tell
    /// something. Its failure stops the run; processes it leaves running
    /// are killed when it ends (start servers in the workload).
    #[arg(long, value_name = "CMD", value_parser = shell_command)]
    pub setup: Option<String>,
    /// How many cuts (trials) to make.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub cuts: u32,
    /// The run's seed: the same seed picks the same cut points.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run only this trial (1-based), as a failure's replay line says.
    #[arg(long, value_name = "I")]
    pub cut_index: Option<u32>,
    /// Unflushed device writes survive partially, sector by sector, instead
    /// of being all lost. Cuts fall before a write or an fsync reaches the
    /// mount, where the device has seldom taken anything since its last
    /// flush (the mount writes back and flushes in one go): each trial
    /// says how many sectors were unflushed; `-o` with a small `dirty=`
    /// makes background writeback, and so more to tear.
    #[arg(long)]
    pub torn: bool,
    /// The size of each fresh image.
    #[arg(long, default_value = "256M")]
    pub size: ByteSize,
    /// Mount options (as `vigilfs mount -o`; `crashable` is implied).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// How long the workload, and the check, may run.
    #[arg(long, default_value = "120s", value_name = "DURATION")]
    pub timeout: String,
    /// Where the images and mount points go (default: a new directory in
    /// the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A shell command for `--workload` or `--check`: one that does nothing
/// (empty or blank) is a usage error, not a test that finds nothing.
fn shell_command(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("an empty command: give the shell command to run, e.g. 'sqlite3 db.sqlite < script.sql'".into());
    }
    Ok(text.to_string())
}

/// What the dry run counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) fsyncs: u64,
    pub(crate) directory_fsyncs: u64,
    pub(crate) writes: u64,
    /// Other changes (creates, renames, unlinks, attributes...): no cut
    /// falls before them, but the cut after the end tests them.
    pub(crate) other_changes: u64,
}

impl Counts {
    /// What was counted since `earlier`.
    fn since(self, earlier: Counts) -> Counts {
        Counts {
            fsyncs: self.fsyncs.saturating_sub(earlier.fsyncs),
            directory_fsyncs: self
                .directory_fsyncs
                .saturating_sub(earlier.directory_fsyncs),
            writes: self.writes.saturating_sub(earlier.writes),
            other_changes: self.other_changes.saturating_sub(earlier.other_changes),
        }
    }
}

/// `--timeout`'s default (its text is the clap default above).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Ends the run as the signal asked, with the shell's exit code for a
/// process it killed (128 + the signal): an interrupted run is not a run
/// that could not be made.
pub(crate) fn interrupted() -> Result<(), Failure> {
    match signals::interrupting_signal() {
        None => Ok(()),
        Some(signal) => Err(Failure::with_code(
            format!(
                "interrupted by {}: the trial in progress was torn down",
                signals::name(signal)
            ),
            signals::exit_status(signal),
        )),
    }
}

/// Everything one run needs.
struct Run<'a> {
    args: &'a CrashTestArgs,
    settings: MountSettings,
    directory: PathBuf,
    timeout: Duration,
    loss_seeded: bool,
    /// Cleans up if this process is killed (see `crash_test_janitor`).
    janitor: Mutex<Option<Janitor>>,
}

/// The janitor's slot: a panic while it was held leaves it usable.
fn lock(janitor: &Mutex<Option<Janitor>>) -> MutexGuard<'_, Option<Janitor>> {
    janitor.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A work directory and whether this run made it.
struct WorkDirectory {
    /// Canonical: the lab's mount points are named from it, and
    /// [`kill_users_of`] matches processes' paths against them without
    /// resolving the mount itself (which this process serves).
    ///
    /// [`kill_users_of`]: crash_test_reaper::kill_users_of
    path: PathBuf,
    created: bool,
    /// The directory itself, locked (`flock`) while this run uses it, so a
    /// second run given the same `--work-dir` is refused. Released when
    /// this process ends, however it ends.
    _lock: Option<fs::File>,
}

/// The work directory: the one asked for (created if missing, and not in
/// use by another run), or a new one in the system's temporary directory
/// (removed at the end unless something in it is kept).
fn work_directory(asked: Option<&Path>) -> Result<WorkDirectory, Failure> {
    if let Some(directory) = asked {
        let failed = |error: std::io::Error| {
            Failure::operational(format!("{}: {error}", directory.display()))
        };
        // Something else by that name is a wrong argument, not a run that
        // could not be made (review 44: exit 8).
        if fs::symlink_metadata(directory).is_ok() && !directory.is_dir() {
            return Err(Failure::arguments(format!(
                "--work-dir {}: not a directory",
                directory.display()
            )));
        }
        // One level, like `mkdir`: a typo deep in the path is an error,
        // not a tree of new directories (and a wrong argument, review 59).
        if !directory.is_dir() {
            fs::create_dir(directory).map_err(|error| {
                Failure::arguments(format!(
                    "--work-dir {}: cannot be made: {error}",
                    directory.display()
                ))
            })?;
        }
        let lock = fs::File::open(directory).map_err(failed)?;
        // SAFETY: flock(2) on a descriptor this function owns; no memory is
        // passed. (std's File::try_lock is newer than the crate's MSRV.)
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        // A filesystem without locks (another error): runs are not told
        // apart there.
        if locked != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
        {
            return Err(Failure::arguments(format!(
                "{} is the work directory of another crash-test running now: use another \
                 --work-dir",
                directory.display()
            )));
        }
        let earlier = earlier_run_files(directory);
        // SAFETY: geteuid(2) takes nothing and cannot fail.
        let user = unsafe { libc::geteuid() };
        if let Some((name, owner)) = earlier.iter().find_map(|name| {
            let owner = fs::symlink_metadata(directory.join(name)).ok()?.uid();
            (owner != user).then_some((name, owner))
        }) {
            return Err(Failure::arguments(format!(
                "{} holds {name}, which user {owner} made, not a run of this user's: a run \
                 writes there, so it uses only its own; remove it or use another --work-dir",
                directory.display()
            )));
        }
        if let Some(first) = earlier.first() {
            return Err(Failure::arguments(format!(
                "{} holds {first}{} from an earlier run (a failed trial's image and logs, \
                 kept for its replay line), which this run would overwrite: move them \
                 away or use another --work-dir",
                directory.display(),
                match earlier.len() {
                    1 => String::new(),
                    more => format!(" and {} more files", more - 1),
                }
            )));
        }
        return Ok(WorkDirectory {
            path: fs::canonicalize(directory).map_err(failed)?,
            created: false,
            _lock: Some(lock),
        });
    }
    let base = fs::canonicalize(std::env::temp_dir()).unwrap_or_else(|_| std::env::temp_dir());
    for attempt in 0..100u32 {
        let directory = base.join(format!(
            "vigilfs-crash-test.{}.{attempt}",
            std::process::id()
        ));
        match fs::create_dir(&directory) {
            Ok(()) => {
                return Ok(WorkDirectory {
                    path: directory,
                    created: true,
                    _lock: None,
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(Failure::operational(format!(
                    "{}: {error}",
                    directory.display()
                )))
            }
        }
    }
    Err(Failure::operational(format!(
        "cannot make a work directory in {}",
        base.display()
    )))
}

/// The files in `directory` named as a run names a trial's (or the dry
/// run's) image and logs, sorted.
fn earlier_run_files(directory: &Path) -> Vec<String> {
    let is_trial = |name: &str| {
        name == "dry-run"
            || name
                .strip_prefix("cut-")
                .is_some_and(|number| number.parse::<u32>().is_ok())
    };
    let mut found: Vec<String> = fs::read_dir(directory)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| {
            crash_test_janitor::TRIAL_FILES.iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|stem| stem.strip_suffix('.'))
                    .is_some_and(is_trial)
            })
        })
        .collect();
    found.sort();
    found
}

pub fn run(args: &CrashTestArgs) -> Result<u8, Failure> {
    let timeout = duration_with_unit(&args.timeout)
        .map_err(|message| Failure::arguments(format!("crash-test: --timeout {message}")))?;
    if timeout.is_zero() {
        return Err(Failure::arguments("--timeout must be more than 0"));
    }
    if args
        .cut_index
        .is_some_and(|index| index == 0 || index > args.cuts)
    {
        return Err(Failure::arguments(format!(
            "--cut-index counts from 1 to --cuts ({})",
            args.cuts
        )));
    }
    if crate::remount::is_remount(&args.options) {
        return Err(Failure::arguments(
            "`remount` changes a mounted filesystem; crash-test mounts its own: give the \
             options its mounts should have",
        ));
    }
    let mut settings = options::parse(&args.options).map_err(Failure::arguments)?;
    if settings.read_only {
        return Err(Failure::arguments(
            "a crash test writes: `ro` does not go with it",
        ));
    }
    settings.crashable = true;
    let work = work_directory(args.work_dir.as_deref())?;
    // The workload's orphans become this process's children, so a cut can
    // reap what it killed before the check runs.
    crash_test_reaper::become_subreaper();
    let (directory, created) = (work.path.clone(), work.created);
    signals::watch_for_interrupts();
    let run = Run {
        args,
        settings,
        directory: directory.clone(),
        timeout,
        loss_seeded: args.torn,
        janitor: Mutex::new(Janitor::start(&directory, created)),
    };
    if let Some(janitor) = lock(&run.janitor).as_ref() {
        // A child of this process that no trial started.
        crash_test_reaper::spare(janitor.pid());
    }
    let outcome = run_trials(&run);
    // Only what a failed trial kept stays (the dry run's output, if it
    // failed, was shown).
    run.remove_trial_files("dry-run");
    if created {
        let _ = fs::remove_dir(&directory);
    }
    if let Some(janitor) = lock(&run.janitor).take() {
        janitor.finish();
    }
    outcome
}

fn run_trials(run: &Run<'_>) -> Result<u8, Failure> {
    let args = run.args;
    let (counts, took) = run.dry_run()?;
    if counts.fsyncs + counts.directory_fsyncs + counts.writes + counts.other_changes == 0 {
        return Err(Failure::operational(
            "the workload changed nothing in the mount: there is nothing to cut (does it \
             write into its working directory?)",
        ));
    }
    let dry = format!(
        "dry run: the workload took {}, {} fsyncs, {} directory fsyncs, {} writes; the check \
         passes on its result",
        // A measurement: tenths of a second say enough.
        format_args!("{:.1} s", took.as_secs_f64()),
        counts.fsyncs,
        counts.directory_fsyncs,
        counts.writes
    );
    let indices: Vec<u32> = match args.cut_index {
        Some(index) => vec![index],
        None => (1..=args.cuts).collect(),
    };
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(indices.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("crash-test [{bar:30}] {pos}/{len} cuts, {msg} ({eta})")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar
    });
    let say = |line: &str| match &bar {
        Some(bar) => bar.println(line),
        None => println!("{line}"),
    };
    // Each write and fsync, and the end.
    let moments = counts.fsyncs + counts.directory_fsyncs + counts.writes + 1;
    if !args.json {
        say(&dry);
        if args.cut_index.is_none() && u64::from(args.cuts) > moments {
            say(&format!(
                "only {moments} moment{} to cut{}: trials after the first {moments} cut {} again{}",
                if moments == 1 { "" } else { "s" },
                if moments == 1 {
                    " (after the end: the workload made no write and no fsync)"
                } else {
                    ""
                },
                if moments == 1 { "it" } else { "them" },
                if args.torn {
                    " (each tearing the unflushed writes its own way)"
                } else {
                    ""
                }
            ));
        }
    }
    let mut trials = Vec::new();
    let mut failed = 0usize;
    for &index in &indices {
        let trial = match run.trial(index, counts) {
            Ok(trial) => trial,
            Err(failure) => {
                if signals::interrupting_signal().is_some() {
                    // A trial cut short proves nothing: nothing of it is
                    // kept (the lab mount is already down).
                    run.remove_trial_files(&format!("cut-{index}"));
                }
                return Err(failure);
            }
        };
        if !trial.passed() {
            failed += 1;
        }
        if !args.json {
            say(&run.describe(&trial, args.cuts));
        }
        if let Some(bar) = &bar {
            bar.inc(1);
            bar.set_message(format!("{failed} failed"));
        }
        trials.push(trial);
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if args.json {
        let report = json!({
            "seed": args.seed,
            "torn": args.torn,
            "dry_run": {
                "took_ms": took.as_secs_f64() * 1e3,
                "fsyncs": counts.fsyncs,
                "directory_fsyncs": counts.directory_fsyncs,
                "writes": counts.writes,
            },
            "moments": moments,
            "trials": trials.iter().map(|trial| run.trial_json(trial)).collect::<Vec<_>>(),
            "failed": failed,
        });
        println!("{report:#}");
        return Ok(if failed == 0 { 0 } else { FOUND });
    }
    let cuts = format!(
        "{} cut{}",
        trials.len(),
        if trials.len() == 1 { "" } else { "s" }
    );
    match failed {
        0 => println!("{cuts}, no failure: the check held after every one"),
        _ => println!("{cuts}, {failed} FAILED (replay each with the command shown)"),
    }
    // What a count of cuts alone would hide (review 59): moments never
    // reached, and --torn with nothing torn.
    let missed = trials
        .iter()
        .filter(|trial| trial.missed_its_point())
        .count();
    if missed > 0 {
        println!(
            "note: {missed} of {} cuts came after the workload, which ended before their \
             moment: it did less in those trials than in the dry run, so those moments were \
             not tested",
            trials.len()
        );
    }
    if args.torn && !trials.iter().any(trials::Trial::had_something_to_tear) {
        println!(
            "note: --torn tore nothing: no cut had unflushed writes (a workload that fsyncs \
             every write leaves none; see --help)"
        );
    }
    Ok(if failed == 0 { 0 } else { FOUND })
}
