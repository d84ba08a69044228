//! `vigilfs demo`: a guided tour that needs only this binary and /dev/fuse.
//!
//! It makes an image in a temporary directory, mounts it in this process
//! (engine and FUSE adapter, with a fault plan), writes files through the
//! mount like any program would, opens two descriptors on one file, makes
//! the disk fail data writes, and shows fsync reporting the lost write once
//! to each descriptor — then success once the disk works again. Then the
//! status report, an unmount and fsck. Every step says what to notice;
//! anything that does not behave as announced ends the tour with exit
//! status 1 and the discrepancy.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use vigilfs::device::{
    Errno, FaultDevice, FaultPlan, FaultRule, FileDevice, FileDeviceOptions, IoClass, Operations,
};
use vigilfs::fs::{Filesystem, MountOptions};
use vigilfs::fsck::fsck;

use crate::control::client;
use crate::control::describe_errno;
use crate::control::protocol::Request;
use crate::failure::Failure;
use crate::mkfs_command::create_formatted;
use crate::size::ByteSize;
use crate::status_command::render;

struct Tour {
    step: usize,
}

impl Tour {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!();
        println!("{}. {title}", self.step);
    }

    fn say(&self, text: &str) {
        println!("   {text}");
    }

    fn notice(&self, text: &str) {
        println!("   notice: {text}");
    }
}

fn discrepancy(message: impl Into<String>) -> Failure {
    Failure::usage(format!("demo: {}", message.into()))
}

/// fsync's outcome as the tour prints it.
fn fsync_outcome(file: &File) -> Result<(), i32> {
    file.sync_all()
        .map_err(|error| error.raw_os_error().unwrap_or(libc::EIO))
}

fn show(outcome: &Result<(), i32>) -> String {
    match outcome {
        Ok(()) => "0 (success)".into(),
        Err(errno) => format!("-1, {}", describe_errno(*errno)),
    }
}

fn expect_fsync(
    tour: &Tour,
    label: &str,
    file: &File,
    wanted: Result<(), i32>,
) -> Result<(), Failure> {
    let outcome = fsync_outcome(file);
    tour.say(&format!("fsync({label}) = {}", show(&outcome)));
    if outcome != wanted {
        return Err(discrepancy(format!(
            "fsync({label}) returned {} where {} was expected",
            show(&outcome),
            show(&wanted)
        )));
    }
    Ok(())
}

pub fn run(keep: bool) -> Result<u8, Failure> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Failure::operational(
            "demo: /dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE works",
        ));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |time| time.subsec_nanos());
    let directory =
        std::env::temp_dir().join(format!("vigilfs-demo-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&directory)
        .map_err(|error| Failure::operational(format!("demo: {}: {error}", directory.display())))?;
    let outcome = tour(&directory);
    if keep {
        println!();
        println!("kept {}", directory.display());
    } else {
        let _ = fs::remove_dir_all(&directory);
    }
    match &outcome {
        Ok(_) => {
            println!();
            println!("the tour behaved as described: every error was reported, once per descriptor, and nothing was left inconsistent");
        }
        Err(failure) => {
            println!();
            println!("the tour did NOT behave as described: {failure}");
        }
    }
    outcome
}

fn tour(directory: &Path) -> Result<u8, Failure> {
    let mut tour = Tour { step: 0 };
    let image = directory.join("demo.img");
    let mountpoint = directory.join("mnt");
    fs::create_dir_all(&mountpoint)
        .map_err(|error| Failure::operational(format!("demo: {error}")))?;

    tour.step("Make a filesystem");
    if let Some(warning) = create_formatted(&image, ByteSize(64 << 20))? {
        eprintln!("vigilfs: {warning}");
    }
    tour.say(&format!(
        "created {} (64M, sparse) and ran mkfs on it",
        image.display()
    ));

    tour.step("Mount it: image file -> fault-injecting device -> engine -> FUSE");
    let plan = Arc::new(FaultPlan::new());
    let device = FileDevice::open(&image, FileDeviceOptions::default())
        .map_err(|error| Failure::operational(format!("demo: open: {error}")))?;
    let device = FaultDevice::new(device, Arc::clone(&plan));
    let fs = Arc::new(
        Filesystem::mount(Arc::new(device), MountOptions::default())
            .map_err(|error| Failure::operational(format!("demo: mount: {error}")))?,
    );
    let config = vigilfs_fuse::MountConfig::default();
    let mounted = vigilfs_fuse::mount(Arc::clone(&fs), &mountpoint, &config)
        .map_err(|error| Failure::operational(format!("demo: FUSE mount: {error}")))?;
    tour.say(&format!("mounted on {}", mountpoint.display()));
    tour.notice("the fault plan starts empty: the disk works");

    let slot = crate::engine_slot::EngineSlot::new(Arc::clone(&fs));
    let served = crate::control::Served::new(
        Arc::clone(&slot),
        Arc::clone(&plan),
        crate::control::current_uid(),
    );
    let _ = served.device.set(mounted.restarter());
    let server = crate::control::serve(&mountpoint, served)
        .map_err(|error| Failure::operational(format!("demo: control socket: {error}")))?;
    tour.say(&format!(
        "control socket {}: `vigilfs status {}` works while the tour runs",
        server.path().display(),
        mountpoint.display()
    ));
    let result = exercise(&mut tour, &mountpoint, &fs, &plan);
    plan.clear();
    server.stop();
    slot.take();

    tour.step("Unmount");
    let unmounted = mounted
        .unmount()
        .map_err(|error| Failure::operational(format!("demo: FUSE unmount: {error}")));
    let fs = Arc::try_unwrap(fs)
        .map_err(|_| discrepancy("the engine is still in use after the FUSE unmount"))?;
    fs.unmount()
        .map_err(|error| discrepancy(format!("unmount failed: {error}")))?;
    unmounted?;
    tour.say("everything written back, the journal emptied of pins, the superblock marked clean");
    result?;

    tour.step("Check it with fsck");
    let device = FileDevice::open(
        &image,
        FileDeviceOptions {
            read_only: true,
            ..FileDeviceOptions::default()
        },
    )
    .map_err(|error| Failure::operational(format!("demo: open: {error}")))?;
    let report = fsck(Arc::new(device), &mut |_| {})
        .map_err(|error| discrepancy(format!("fsck could not check the image: {error}")))?;
    for problem in &report.problems {
        tour.say(&format!("ERROR {}: {}", problem.structure, problem.message));
    }
    if !report.is_clean() {
        return Err(discrepancy("fsck found errors"));
    }
    tour.say("clean");
    let errors = report.superblock.error_record.total;
    tour.notice(&format!(
        "the superblock remembers the {errors} error(s) of this session: the next mount's status shows them"
    ));
    if errors == 0 {
        return Err(discrepancy(
            "the persistent error record should hold the writeback error",
        ));
    }
    Ok(0)
}

fn io_failure(what: &str, error: std::io::Error) -> Failure {
    discrepancy(format!("{what}: {error}"))
}

fn exercise(
    tour: &mut Tour,
    mountpoint: &Path,
    fs: &Filesystem,
    plan: &FaultPlan,
) -> Result<(), Failure> {
    tour.step("Write some files, like any program");
    let notes = mountpoint.join("notes.txt");
    fs::write(&notes, b"vigilfs never loses an error\n")
        .map_err(|error| io_failure("write notes.txt", error))?;
    fs::create_dir(mountpoint.join("photos")).map_err(|error| io_failure("mkdir", error))?;
    fs::write(mountpoint.join("photos/cat.jpg"), vec![0xA5u8; 256 * 1024])
        .map_err(|error| io_failure("write cat.jpg", error))?;
    let mut names: Vec<String> = fs::read_dir(mountpoint)
        .map_err(|error| io_failure("readdir", error))?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    tour.say(&format!(
        "ls {}: {}",
        mountpoint.display(),
        names.join("  ")
    ));
    let mut text = String::new();
    File::open(&notes)
        .and_then(|mut file| file.read_to_string(&mut text))
        .map_err(|error| io_failure("read notes.txt", error))?;
    tour.say(&format!("cat notes.txt: {}", text.trim_end()));

    tour.step("Open one file twice: descriptors A and B");
    let path: PathBuf = mountpoint.join("ledger.dat");
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
    };
    let a = open().map_err(|error| io_failure("open A", error))?;
    let b = open().map_err(|error| io_failure("open B", error))?;
    a.write_all_at(b"first entry\n", 0)
        .map_err(|error| io_failure("write through A", error))?;
    b.write_all_at(b"second entry\n", 12)
        .map_err(|error| io_failure("write through B", error))?;
    expect_fsync(tour, "A", &a, Ok(()))?;
    expect_fsync(tour, "B", &b, Ok(()))?;
    tour.notice("both writes are durable; nothing failed so far");

    tour.step("The disk starts failing data writes");
    let rule = FaultRule::fail(Errno::EIO)
        .on(Operations::WRITE)
        .for_class(IoClass::Data);
    let id = plan
        .add_rule(rule)
        .map_err(|error| discrepancy(format!("fault rule: {error}")))?;
    tour.say(&format!(
        "fault rule {id}: {rule}   (same as `vigilfs inject MOUNTPOINT --fail-writes --class data`)"
    ));
    a.write_all_at(b"third entry, written through A while the disk fails\n", 25)
        .map_err(|error| io_failure("write through A", error))?;
    tour.notice("write() still succeeds: data goes to the page cache; the disk is only touched at writeback");

    tour.step("fsync on A: the writeback fails, and A is told");
    expect_fsync(tour, "A", &a, Err(libc::EIO))?;
    let status = fs.status();
    tour.say(&format!(
        "status: writeback error {} (peeked, not consumed), {} error(s) recorded",
        status
            .writeback_error
            .map_or_else(|| "none".into(), describe_errno),
        status.error_record.total
    ));
    if status.writeback_error != Some(libc::EIO) {
        return Err(discrepancy(
            "status should show the pending writeback error",
        ));
    }

    tour.step("The disk recovers (fault cleared); the unwritten data is still dirty");
    plan.clear();
    tour.say("fault plan cleared (`vigilfs inject MOUNTPOINT --clear`)");

    tour.step("fsync on B: B has not heard of the error yet, so it gets it too");
    expect_fsync(tour, "B", &b, Err(libc::EIO))?;
    tour.notice("the data was retried and is now on disk, yet B learns that a write through its file failed: an error is never lost, even if another descriptor saw it first");

    tour.step("fsync again on A and B: each was told once, now both succeed");
    expect_fsync(tour, "A", &a, Ok(()))?;
    expect_fsync(tour, "B", &b, Ok(()))?;
    let mut contents = String::new();
    File::open(&path)
        .and_then(|mut file| file.read_to_string(&mut contents))
        .map_err(|error| io_failure("read ledger.dat", error))?;
    if !contents.contains("third entry") {
        return Err(discrepancy(
            "the data written while the disk failed was lost",
        ));
    }
    tour.notice("nothing written was lost: the third entry is there");

    tour.step("A new descriptor opened now hears nothing: the error was reported");
    let c = open().map_err(|error| io_failure("open C", error))?;
    expect_fsync(tour, "C", &c, Ok(()))?;
    drop((a, b, c));

    tour.step("Status, asked through the control socket as `vigilfs status MOUNTPOINT` does");
    let report = client::call(mountpoint, &Request::Status).map_err(|error| {
        discrepancy(format!(
            "status: {}",
            error.into_failure("status", mountpoint)
        ))
    })?;
    for line in render(&report).lines() {
        tour.say(line);
    }
    tour.notice("the error record counts the writeback failure with its inode and time; it is saved in the superblock");
    Ok(())
}
