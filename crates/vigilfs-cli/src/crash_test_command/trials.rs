//! One crash-test trial, and the dry run before them: mount a fresh image,
//! run the setup, the workload and the check in it (cutting the power
//! where the trial says), fsck the image, and report what was found.
//!
//! Every program runs in a process group of its own that the janitor
//! kills if this process dies, and whatever it leaves running is killed
//! before the next program starts. A trial's files are kept only when it
//! failed; its report gives the command that replays it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigilfs::device::PowerLoss;
use vigilfs::fs::faults::CutPoint;

use super::cut_points::{describe_moment, describe_point, moment, trial_seed, Moment};
use super::{interrupted, lock, Counts, Run, DEFAULT_TIMEOUT};
use crate::control::power::cut_report_json;
use crate::crash_test_janitor::{self, kill_group};
use crate::crash_test_lab::{describe_status, humantime, LabMount, Program};
use crate::crash_test_reaper::kill_users_of;
use crate::failure::Failure;
use crate::inject_command::lost_in_cut;
use crate::power_cut::{CutError, CutReport};
use crate::signals;
use crate::unsynced_command::describe_unsynced;

/// Lines of a failed cut's "not durable" list the text report shows.
const LOST_LINES_SHOWN: usize = 12;

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

/// The outcome of one trial.
pub(super) struct Trial {
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
    pub(super) fn passed(&self) -> bool {
        self.check_passed && self.fsck_clean
    }

    /// A cut planned inside the workload that came after it instead (the
    /// workload ended before reaching its point).
    pub(super) fn missed_its_point(&self) -> bool {
        self.point.is_some() && self.cut_after_the_end
    }

    /// With `--torn`: whether the cut had unflushed sectors to tear.
    pub(super) fn had_something_to_tear(&self) -> bool {
        self.cut.as_ref().is_some_and(|cut| {
            cut["device"]["sectors_unflushed"]
                .as_u64()
                .is_some_and(|sectors| sectors > 0)
        })
    }
}

impl Run<'_> {
    fn environment(&self, cut: u32) -> Vec<(&'static str, String)> {
        vec![
            ("VIGILFS_CUT", cut.to_string()),
            ("VIGILFS_SEED", self.args.seed.to_string()),
        ]
    }

    /// Runs the workload to its end and the check after it; the counts.
    pub(super) fn dry_run(&self) -> Result<(Counts, Duration), Failure> {
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

    pub(super) fn trial(&self, index: u32, counts: Counts) -> Result<Trial, Failure> {
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
    pub(super) fn remove_trial_files(&self, name: &str) {
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

    pub(super) fn describe(&self, trial: &Trial, total: u32) -> String {
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

    pub(super) fn trial_json(&self, trial: &Trial) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("plain-word"), "plain-word");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
