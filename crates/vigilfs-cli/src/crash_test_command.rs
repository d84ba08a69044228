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

use std::fs::{self};
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use vigilfs::device::{PowerLoss, SeededRandom};
use vigilfs::fs::faults::{CutPoint, Operation};

use crate::control::power::cut_report_json;
use crate::crash_test_janitor::{self, kill_group, Janitor};
use crate::crash_test_lab::{describe_status, humantime, LabMount, Program};
use crate::crash_test_reaper::{self, kill_users_of};
use crate::failure::Failure;
use crate::inject_command::lost_in_cut;
use crate::inject_rules::duration_with_unit;
use crate::mount_options::{self as options, MountSettings};
use crate::power_cut::{CutError, CutReport};
use crate::signals;
use crate::size::ByteSize;
use crate::unsynced_command::describe_unsynced;

/// Lines of a failed cut's "not durable" list the text report shows.
const LOST_LINES_SHOWN: usize = 12;

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

/// Where a trial cuts the power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// Just before the workload makes this operation.
    Before(CutPoint),
    /// Once the workload has ended: all it made durable must be there. A
    /// program that commits, says so and exits has its last fsync cut
    /// after only here (review 44: no trial did).
    AfterTheEnd,
}

/// Where trial `index` (from 1) cuts: the first trial after the workload's
/// end, the others [`cut_point`]s; past every moment, the order starts
/// again. A workload of metadata changes alone (no write, no fsync) is cut
/// after its end only.
fn moment(seed: u64, index: u32, counts: Counts) -> Moment {
    let moments = counts.fsyncs + counts.directory_fsyncs + counts.writes;
    match u64::from(index.saturating_sub(1)) % (moments + 1) {
        0 => Moment::AfterTheEnd,
        position => cut_point(seed, position, counts).map_or(Moment::AfterTheEnd, Moment::Before),
    }
}

/// The `index`-th (from 1) cut point inside the workload. The moments are
/// of two kinds: the fsyncs of files and directories (boundaries: what was
/// synced before must survive) and the writes between them. Points take
/// the kinds in turns (the run's seed says which goes first) while both
/// last, then the one left; each kind in an order the run's seed shuffles,
/// without repeats. So N trials cut N different moments while there are
/// that many (they repeated: review 26, where one directory fsync among
/// 200 writes took most trials), and half of them boundaries, however few
/// there are.
fn cut_point(seed: u64, index: u64, counts: Counts) -> Option<CutPoint> {
    let syncs = counts.fsyncs + counts.directory_fsyncs;
    let writes = counts.writes;
    let moments = syncs + writes;
    if moments == 0 {
        return None;
    }
    let mut random = SeededRandom::new(seed);
    let syncs_first = random.below(2) == 0;
    let sync_order = SeededOrder::new(&mut random, syncs);
    let write_order = SeededOrder::new(&mut random, writes);
    // Past every moment, the order starts again.
    let position = index.saturating_sub(1) % moments;
    let paired = syncs.min(writes);
    let (at_a_sync, rank) = if position < 2 * paired {
        ((position % 2 == 0) == syncs_first, position / 2)
    } else {
        (syncs > writes, position - paired)
    };
    Some(if at_a_sync {
        let k = sync_order.at(rank) + 1;
        if k <= counts.fsyncs {
            CutPoint {
                operation: Operation::Fsync,
                count: k,
            }
        } else {
            CutPoint {
                operation: Operation::Fsyncdir,
                count: k - counts.fsyncs,
            }
        }
    } else {
        CutPoint {
            operation: Operation::Write,
            count: write_order.at(rank) + 1,
        }
    })
}

/// A seeded shuffle of `0..length` that needs no memory: `rank` goes to
/// `(multiplier × rank + offset) mod length`, a permutation as long as the
/// multiplier shares no factor with the length.
struct SeededOrder {
    length: u64,
    multiplier: u64,
    offset: u64,
}

impl SeededOrder {
    fn new(random: &mut SeededRandom, length: u64) -> SeededOrder {
        if length == 0 {
            return SeededOrder {
                length,
                multiplier: 1,
                offset: 0,
            };
        }
        let multiplier = (0..64)
            .map(|_| random.below(length).max(1))
            .find(|&candidate| greatest_common_divisor(candidate, length) == 1)
            .unwrap_or(1);
        SeededOrder {
            length,
            multiplier,
            offset: random.below(length),
        }
    }

    /// The element at `rank` (below the length).
    fn at(&self, rank: u64) -> u64 {
        let mixed = u128::from(self.multiplier) * u128::from(rank) + u128::from(self.offset);
        (mixed % u128::from(self.length)) as u64
    }
}

fn greatest_common_divisor(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Says (once a run: in its dry run) that the `role` program left the
/// processes `killed` running when it exited, and that they were killed:
/// a server a setup started is not there for the workload, and what a
/// workload's leftovers would have done after it is never cut or checked.
fn say_what_was_left_running(role: &str, killed: &[String]) {
    if killed.is_empty() {
        return;
    }
    let (count, pronoun) = match killed.len() {
        1 => ("1 process".to_string(), "it"),
        many => (format!("{many} processes"), "they"),
    };
    let why = match role {
        "setup" => "every program's leftovers are killed before the next one runs (a server \
                    the workload needs is started by the workload, and the check's by the \
                    check)"
            .to_string(),
        "check" => format!(
            "the check's verdict is its exit status, and what {pronoun} would have done \
             after it is not waited for (a check waits for what it starts)"
        ),
        _ => format!(
            "what {pronoun} would have done after the workload ended is neither cut nor \
             checked (a workload waits for what it starts)"
        ),
    };
    eprintln!(
        "vigilfs crash-test: the {role} left {count} running when it exited: {}. Killed: \
         {why}",
        killed.join(", ")
    );
}

/// Trial `index`'s own seed (also the seed of its torn writes).
fn trial_seed(seed: u64, index: u32) -> u64 {
    let mut random = SeededRandom::new(seed ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    random.next_u64()
}

fn describe_moment(moment: Moment) -> String {
    match moment {
        Moment::Before(point) => describe_point(point),
        Moment::AfterTheEnd => "after the workload ended".into(),
    }
}

fn describe_point(point: CutPoint) -> String {
    let what = match point.operation {
        Operation::Fsync => "fsync",
        Operation::Fsyncdir => "directory fsync",
        Operation::Write => "write",
        other => other.name(),
    };
    format!("before {what} {}", point.count)
}

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

/// The outcome of one trial.
struct Trial {
    index: u32,
    /// Where it cut inside the workload; `None` for [`Moment::AfterTheEnd`].
    point: Option<CutPoint>,
    /// The cut came after the workload ended: planned so (no `point`), or
    /// the workload ended before reaching its point (it did not do what it
    /// did in the dry run).
    cut_after_the_end: bool,
    cut: Option<Value>,
    check_status: String,
    check_passed: bool,
    check_output: String,
    fsck_clean: bool,
    fsck_findings: Vec<String>,
    image_kept: Option<PathBuf>,
}

impl Trial {
    fn passed(&self) -> bool {
        self.check_passed && self.fsck_clean
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

impl Run<'_> {
    fn environment(&self, cut: u32) -> Vec<(&'static str, String)> {
        vec![
            ("VIGILFS_CUT", cut.to_string()),
            ("VIGILFS_SEED", self.args.seed.to_string()),
        ]
    }

    /// Runs the workload to its end and the check after it; the counts.
    fn dry_run(&self) -> Result<(Counts, Duration), Failure> {
        self.started("dry-run");
        let lab = LabMount::start(&self.directory, "dry-run", &self.settings, self.args.size)?;
        self.setup(&lab, "dry-run", 0)?;
        let before = lab.counts();
        let started = Instant::now();
        self.run_to_end(
            &self.args.workload,
            &lab,
            ("dry-run", 0),
            "workload",
            "without any crash, so no cut can tell anything",
        )?;
        let took = started.elapsed();
        let counts = lab.counts().since(before);
        self.run_to_end(
            &self.args.check,
            &lab,
            ("dry-run", 0),
            "check",
            "on the workload's result without any crash",
        )?;
        let (clean, findings) = lab.finish()?;
        if !clean {
            return Err(Failure::operational(format!(
                "fsck found problems after the dry run (a vigilfs bug; please report it):\n{}",
                findings.join("\n")
            )));
        }
        Ok((counts, took))
    }

    /// Runs `--setup` (if given) in `lab` to its end and makes what it
    /// left durable, before any cut is armed. A setup that fails is a
    /// usage problem, as a failing dry run is: the run stops.
    fn setup(&self, lab: &LabMount, name: &str, index: u32) -> Result<(), Failure> {
        let Some(setup) = &self.args.setup else {
            return Ok(());
        };
        self.run_to_end(setup, lab, (name, index), "setup", &format!("({name})"))?;
        lab.make_durable()
    }

    /// Runs `command` (the `role` program of trial or dry run `name`,
    /// number `index`) in `lab` to its end. One that fails or times out
    /// is a usage problem, not a finding: "the ROLE STATUS SAID; its
    /// output:" and its last lines.
    fn run_to_end(
        &self,
        command: &str,
        lab: &LabMount,
        (name, index): (&str, u32),
        role: &str,
        said: &str,
    ) -> Result<(), Failure> {
        let mut program = self.program(command, lab, name, role, index)?;
        let status = program.wait(self.timeout)?;
        if let Some(what) = lab.taken_away() {
            // Whatever it exited with, the next program would run in
            // another filesystem and tell nothing.
            return Err(Failure::operational(format!(
                "the {role} {what} ({}): crash-test can only test programs that leave it as \
                 it is",
                lab.mountpoint.display()
            )));
        }
        if status.is_some_and(|status| status.success()) {
            if name == "dry-run" {
                say_what_was_left_running(role, program.left_running());
            }
            return Ok(());
        }
        Err(Failure::operational(format!(
            "the {role} {} {said}; its output:\n{}",
            describe_status(status, self.timeout),
            program.output()
        )))
    }

    fn loss(&self, index: u32) -> PowerLoss {
        if self.loss_seeded {
            PowerLoss::Torn {
                seed: trial_seed(self.args.seed, index),
            }
        } else {
            PowerLoss::DropUnflushed
        }
    }

    fn trial(&self, index: u32, counts: Counts) -> Result<Trial, Failure> {
        let name = format!("cut-{index}");
        self.started(&name);
        let lab = LabMount::start(&self.directory, &name, &self.settings, self.args.size)?;
        self.setup(&lab, &name, index)?;
        let moment = moment(self.args.seed, index, counts);
        let point = match moment {
            Moment::Before(point) => Some(point),
            Moment::AfterTheEnd => None,
        };
        let loss = self.loss(index);
        let workload_group = Arc::new(AtomicI32::new(0));
        // What escaped the group (`setsid`, a daemon the workload started)
        // dies with the power too, while the mount can still be named: the
        // restart detaches it, and a survivor would write into the
        // recovered mount.
        let kill_the_workload = {
            let group = Arc::clone(&workload_group);
            let mountpoint = lab.mountpoint.clone();
            move || {
                kill_group(group.load(Ordering::Acquire));
                kill_users_of(&mountpoint);
            }
        };
        let (done_sender, done) = mpsc::channel::<Result<CutReport, CutError>>();
        if let Some(point) = point {
            lab.switch
                .arm(
                    point,
                    loss,
                    Box::new(kill_the_workload.clone()),
                    Box::new(move |outcome| {
                        let _ = done_sender.send(outcome);
                    }),
                )
                .map_err(|error| Failure::operational(error.to_string()))?;
        }
        let mut workload = self.program(&self.args.workload, &lab, &name, "workload", index)?;
        workload_group.store(workload.child.id() as i32, Ordering::Release);

        let deadline = Instant::now() + self.timeout;
        let mut cut_after_the_end = point.is_none();
        let report = loop {
            if point.is_some() {
                match done.recv_timeout(Duration::from_millis(5)) {
                    Ok(outcome) => break outcome,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(Failure::operational(
                            "the power cut thread ended without a word",
                        ))
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
            if signals::interrupting_signal().is_some() {
                workload.kill();
                interrupted()?;
            }
            if Instant::now() >= deadline {
                workload.kill();
                return Err(Failure::operational(format!(
                    "trial {index}: the workload did not reach its cut point ({}) within {}",
                    describe_moment(moment),
                    humantime(self.timeout)
                )));
            }
            if let Some(status) = workload.try_wait()? {
                // Nothing cut it: a failure is the program's own, as in
                // the dry run (review 45: it went unseen).
                if point.is_none() && !status.success() {
                    return Err(Failure::operational(format!(
                        "trial {index}: the workload {} before any cut (this trial cuts after \
                         its end); its output:\n{}",
                        describe_status(Some(status), self.timeout),
                        workload.output()
                    )));
                }
                // Ended (before its point, if it had one): cut now, unless
                // the cut is already on its way.
                let disarmed = point.is_none()
                    || lab
                        .slot
                        .current()
                        .is_some_and(|engine| engine.disarm_power_cut());
                if disarmed {
                    cut_after_the_end = true;
                    kill_the_workload();
                    break lab.switch.cut(loss);
                }
            }
        };
        // The cut killed the workload's group; reap it.
        workload.kill();
        let report =
            report.map_err(|error| Failure::operational(format!("trial {index}: {error}")))?;

        let mut check = self.program(&self.args.check, &lab, &name, "check", index)?;
        let status = check.wait(self.timeout)?;
        let check_passed = status.is_some_and(|status| status.success());
        let image = lab.image.clone();
        let (fsck_clean, fsck_findings) = lab.finish()?;
        let mut trial = Trial {
            index,
            point,
            cut_after_the_end,
            cut: Some(cut_report_json(&report, loss)),
            check_status: describe_status(status, self.timeout),
            check_passed,
            check_output: check.output(),
            fsck_clean,
            fsck_findings,
            image_kept: None,
        };
        if trial.passed() {
            self.remove_trial_files(&name);
        } else {
            trial.image_kept = Some(image);
            self.ended(&name);
        }
        Ok(trial)
    }

    /// Trial (or dry run) `name` begins: the janitor cleans up after it
    /// if this process dies before [`Run::ended`].
    fn started(&self, name: &str) {
        if let Some(janitor) = lock(&self.janitor).as_mut() {
            janitor.started(name);
        }
    }

    /// Starts `command` (the workload or the check, `role`) of trial (or
    /// dry run) `name`, number `index`, in `lab`, its output in
    /// `NAME.ROLE.log`; the janitor kills its process group if this
    /// process dies first.
    fn program(
        &self,
        command: &str,
        lab: &LabMount,
        name: &str,
        role: &str,
        index: u32,
    ) -> Result<Program, Failure> {
        let log = self.directory.join(format!("{name}.{role}.log"));
        let program = Program::spawn(command, &lab.mountpoint, log, &self.environment(index))?;
        if let Some(janitor) = lock(&self.janitor).as_mut() {
            janitor.program_started(name, program.child.id());
        }
        Ok(program)
    }

    /// Trial `name`'s files are dealt with (kept, or removed).
    fn ended(&self, name: &str) {
        if let Some(janitor) = lock(&self.janitor).as_mut() {
            janitor.ended(name);
        }
    }

    /// Removes the image, logs and mount point (left when the interrupt
    /// came before the mount was up) of the trial (or dry run) `name`.
    fn remove_trial_files(&self, name: &str) {
        crash_test_janitor::remove_trial_files(&self.directory, name);
        self.ended(name);
    }

    fn replay_command(&self, index: u32) -> String {
        // This program by its path: the line must run when pasted, and
        // `vigilfs` need not be on the PATH (nor be this build).
        let program = std::env::current_exe().map_or_else(
            |_| "vigilfs".to_string(),
            |path| shell_quote(&path.to_string_lossy()),
        );
        let setup = self.args.setup.as_ref().map_or_else(String::new, |setup| {
            format!(" --setup {}", shell_quote(setup))
        });
        let mut command = format!(
            "{program} crash-test{setup} --workload {} --check {} --seed {} --cuts {} \
             --cut-index {index} --size {}",
            shell_quote(&self.args.workload),
            shell_quote(&self.args.check),
            self.args.seed,
            // Past the default count, --cut-index is refused without it.
            self.args.cuts,
            self.args.size
        );
        if self.args.torn {
            command.push_str(" --torn");
        }
        if self.timeout != DEFAULT_TIMEOUT {
            // A trial that failed by its timeout must fail the same way again.
            command.push_str(&format!(" --timeout {}", shell_quote(&self.args.timeout)));
        }
        for option in &self.args.options {
            command.push_str(&format!(" -o {}", shell_quote(option)));
        }
        if self.args.work_dir.is_some() {
            // Where the user chose (the system's temporary directory may be
            // too small), but not the same directory: the failed trial's
            // image kept there would have the replay refused.
            let replay = self.directory.join(format!("replay-{index}"));
            command.push_str(&format!(
                " --work-dir {}",
                shell_quote(&replay.to_string_lossy())
            ));
        }
        command
    }

    fn describe(&self, trial: &Trial, total: u32) -> String {
        let mut out = format!("cut {}/{total}", trial.index);
        match (trial.point, trial.cut_after_the_end) {
            (Some(point), false) => out.push_str(&format!(" {}", describe_point(point))),
            (Some(point), true) => out.push_str(&format!(
                " {} (the workload ended first: cut after it)",
                describe_point(point)
            )),
            (None, _) => out.push_str(&format!(" {}", describe_moment(Moment::AfterTheEnd))),
        }
        if let Some(cut) = &trial.cut {
            let lost = lost_in_cut(cut);
            let files = lost["files"].as_array().map_or(0, Vec::len);
            let changes = lost["changes"].as_array().map_or(0, Vec::len) as u64
                + lost["omitted_changes"].as_u64().unwrap_or(0);
            out.push_str(&format!(
                ": power cut in {:.1} ms, not durable: {files} file{}, {changes} metadata change{}",
                cut["took_ms"].as_f64().unwrap_or(0.0),
                if files == 1 { "" } else { "s" },
                if changes == 1 { "" } else { "s" },
            ));
            // What --torn had to tear (often nothing: see its help).
            if cut["torn"] == true {
                let unflushed = cut["device"]["sectors_unflushed"].as_u64().unwrap_or(0);
                let kept = cut["device"]["sectors_kept"].as_u64().unwrap_or(0);
                out.push_str(&format!(
                    ", {unflushed} sectors unflushed ({kept} survived)"
                ));
            }
            if let Some(dropped) = lost["device"]["flushes_dropped"].as_u64() {
                out.push_str(&format!(
                    ", and all synced since the first of {dropped} flush{} the device dropped",
                    if dropped == 1 { "" } else { "es" }
                ));
            }
        }
        if trial.passed() {
            out.push_str("; check passed, fsck clean");
            return out;
        }
        if !trial.check_passed {
            out.push_str(&format!(
                "\n  CHECK FAILED: the check {}",
                trial.check_status
            ));
            for line in trial.check_output.lines() {
                out.push_str(&format!("\n  | {line}"));
            }
        }
        if let Some(cut) = trial.cut.as_ref().filter(|_| !trial.check_passed) {
            // What the cut took is often the cause: an unlink whose
            // directory was never synced, a rename not yet durable.
            out.push_str("\n  not durable when the power went (lost, or torn):");
            let lines = describe_unsynced(&lost_in_cut(cut));
            for line in lines.iter().take(LOST_LINES_SHOWN) {
                out.push_str(&format!("\n  | {line}"));
            }
            if lines.len() > LOST_LINES_SHOWN {
                out.push_str(&format!(
                    "\n  | ... {} more lines (--json has them all)",
                    lines.len() - LOST_LINES_SHOWN
                ));
            }
        }
        if !trial.fsck_clean {
            out.push_str("\n  FSCK FOUND PROBLEMS (a vigilfs bug; please report it):");
            for finding in &trial.fsck_findings {
                out.push_str(&format!("\n  | {finding}"));
            }
        }
        out.push_str(&format!("\n  replay: {}", self.replay_command(trial.index)));
        if let Some(image) = &trial.image_kept {
            out.push_str(&format!("\n  image kept: {}", image.display()));
        }
        out
    }

    fn trial_json(&self, trial: &Trial) -> Value {
        json!({
            "index": trial.index,
            "point": trial.point.map(|point| json!({
                "operation": point.operation.name(),
                "count": point.count,
            })),
            "cut_after_the_end": trial.cut_after_the_end,
            "cut": trial.cut,
            "check": {
                "passed": trial.check_passed,
                "status": trial.check_status,
                "output": trial.check_output,
            },
            "fsck_clean": trial.fsck_clean,
            "fsck_findings": trial.fsck_findings,
            "passed": trial.passed(),
            "replay": (!trial.passed()).then(|| self.replay_command(trial.index)),
            "image_kept": trial.image_kept.as_ref().map(|path| path.display().to_string()),
        })
    }
}

/// `text` quoted for a POSIX shell.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_./=:,@%+".contains(character))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A work directory and whether this run made it.
struct WorkDirectory {
    /// Canonical: the lab's mount points are named from it, and
    /// [`kill_users_of`] matches processes' paths against them without
    /// resolving the mount itself (which this process serves).
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
        // not a tree of new directories.
        if !directory.is_dir() {
            fs::create_dir(directory).map_err(failed)?;
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
    } else if failed == 0 {
        println!(
            "{} cut{}, no failure: the check held after every one",
            trials.len(),
            if trials.len() == 1 { "" } else { "s" }
        );
    } else {
        println!(
            "{} cut{}, {failed} FAILED (replay each with the command shown)",
            trials.len(),
            if trials.len() == 1 { "" } else { "s" }
        );
    }
    Ok(if failed == 0 { 0 } else { FOUND })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(fsyncs: u64, directory_fsyncs: u64, writes: u64) -> Counts {
        Counts {
            fsyncs,
            directory_fsyncs,
            writes,
            other_changes: 0,
        }
    }

    #[test]
    fn the_same_seed_and_index_pick_the_same_point() {
        let counts = counts(40, 3, 800);
        for index in 1..50 {
            assert_eq!(cut_point(7, index, counts), cut_point(7, index, counts));
        }
        let points: Vec<_> = (1..50).map(|index| cut_point(7, index, counts)).collect();
        let other: Vec<_> = (1..50).map(|index| cut_point(8, index, counts)).collect();
        assert_ne!(points, other);
    }

    #[test]
    fn points_stay_within_what_the_dry_run_counted_and_cover_both_kinds() {
        let dry_run = counts(5, 2, 30);
        let mut kinds = std::collections::HashSet::new();
        for index in 1..500 {
            let point = cut_point(3, index, dry_run).unwrap();
            let limit = match point.operation {
                Operation::Fsync => 5,
                Operation::Fsyncdir => 2,
                Operation::Write => 30,
                other => panic!("{other:?}"),
            };
            assert!((1..=limit).contains(&point.count), "{point:?}");
            kinds.insert(point.operation);
        }
        assert_eq!(kinds.len(), 3);
        assert_eq!(cut_point(3, 1, counts(0, 0, 0)), None);
        assert_eq!(
            cut_point(3, 1, counts(0, 0, 4)).unwrap().operation,
            Operation::Write
        );
    }

    /// The first trial cuts after the workload's end, the others inside it
    /// in [`cut_point`]'s order; then the order starts again.
    #[test]
    fn the_first_trial_cuts_after_the_end_and_the_others_inside() {
        let dry_run = counts(3, 1, 5);
        for seed in 0..20 {
            assert_eq!(moment(seed, 1, dry_run), Moment::AfterTheEnd);
            for index in 2..=10u32 {
                assert_eq!(
                    Some(moment(seed, index, dry_run)),
                    cut_point(seed, u64::from(index - 1), dry_run).map(Moment::Before),
                    "seed {seed} trial {index}"
                );
            }
            assert_eq!(moment(seed, 11, dry_run), Moment::AfterTheEnd);
        }
        assert_eq!(moment(1, 1, counts(0, 0, 0)), Moment::AfterTheEnd);
        assert_eq!(moment(1, 2, counts(0, 0, 0)), Moment::AfterTheEnd);
    }

    /// The cut points of trials 1..=`trials`.
    fn first_points(seed: u64, trials: u64, dry_run: Counts) -> Vec<CutPoint> {
        (1..=trials)
            .map(|index| cut_point(seed, index, dry_run).unwrap())
            .collect()
    }

    /// How many different moments `points` cut.
    fn distinct(points: &[CutPoint]) -> usize {
        points
            .iter()
            .map(|point| (point.operation, point.count))
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// N trials cut N different moments while there are that many, half
    /// of them boundaries while there are any (one directory fsync among
    /// 200 writes took most trials of a run: review 26).
    #[test]
    fn trials_cut_distinct_moments_and_take_the_kinds_in_turns() {
        for seed in 0..40 {
            let dry_run = counts(0, 1, 200);
            let points = first_points(seed, 201, dry_run);
            assert_eq!(distinct(&points), 201, "seed {seed}");
            let boundaries = points[..2]
                .iter()
                .filter(|point| point.operation == Operation::Fsyncdir)
                .count();
            assert_eq!(boundaries, 1, "seed {seed}: {points:?}");
            // Then the order starts again.
            assert_eq!(cut_point(seed, 202, dry_run), Some(points[0]));
            let many = counts(7, 3, 12);
            let points = first_points(seed, 22, many);
            assert_eq!(distinct(&points), 22, "seed {seed}");
            let writes_in_first_20 = points[..20]
                .iter()
                .filter(|point| point.operation == Operation::Write)
                .count();
            assert_eq!(writes_in_first_20, 10, "seed {seed}");
        }
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("plain-word"), "plain-word");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
