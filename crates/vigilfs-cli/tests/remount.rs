//! `mount -o remount,...` through the mount helper, on a real mount
//! (fstests generic/294, 306, 452 remount read-only and back): the helper
//! changes the mount in place — read-only refuses writes with EROFS, back
//! to read-write accepts them, per-mount flags not named are kept — the
//! daemon's settings (errors=, cache=, dirty=, writeback_interval=) change
//! in the running daemon, options it built its state from cannot change,
//! and read-only makes everything durable first, as Linux's remount does;
//! a remount that reaches only the kernel is followed. They need root and
//! /dev/fuse.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// Runs this build as the mount helper (`mount.fuse.vigilfs`, a symlink
/// in `directory`) with `arguments`, as mount(8) does.
fn helper(directory: &Path, arguments: &[&str]) -> Output {
    let link = directory.join("mount.fuse.vigilfs");
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(binary(), &link).unwrap();
    }
    Command::new(&link).args(arguments).output().unwrap()
}

/// `mount -o OPTIONS` of the scratch mount through the helper, which must
/// succeed; its output.
fn remount(scratch: &Scratch, options: &str) -> Output {
    let output = helper(
        scratch.directory.path(),
        &[scratch.img(), scratch.mnt(), "-o", options],
    );
    assert!(
        output.status.success(),
        "{options}: {}",
        text(&output.stderr)
    );
    output
}

/// `mount -i -o OPTIONS` of the scratch mount: the kernel alone, no
/// helper; it must succeed.
fn kernel_only_remount(scratch: &Scratch, options: &str) {
    let output = Command::new("mount")
        .args(["-i", "-o", options, scratch.mnt()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
}

/// `mount -i -o remount,ro`, and the daemon following it: everything is
/// durable moments later.
fn kernel_only_remount_read_only(scratch: &Scratch) {
    kernel_only_remount(scratch, "remount,ro");
    let unsynced = || text(&vigilfs(&["unsynced", scratch.mnt()]).stdout);
    wait_until(
        "everything is durable after the kernel's remount",
        std::time::Duration::from_secs(30),
        || unsynced().contains("nothing: every change is durable"),
    );
}

/// Makes a new filesystem in the scratch image and mounts it `ro`; the
/// daemon's pid.
fn mount_new_read_only(scratch: &Scratch) -> u32 {
    let made = vigilfs(&["mkfs", scratch.img(), "--size", "64M"]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    scratch.mount(&["-o", "ro"])
}

/// `mount -i -o remount,rw` of a mount the daemon refuses to make
/// writable: it turns the kernel's mount back read-only, and says so.
fn kernel_read_write_is_turned_back(scratch: &Scratch) {
    kernel_only_remount(scratch, "remount,rw");
    // The line is logged once the remount back is done.
    wait_until(
        "the kernel's mount is turned back read-only, and the log says so",
        std::time::Duration::from_secs(30),
        || {
            scratch
                .log()
                .contains("the kernel's mount is read-only again")
        },
    );
    assert_ne!(flags(&scratch.mountpoint) & libc::ST_RDONLY, 0);
}

/// What the mount's `settings` events say, oldest first.
fn settings_events(scratch: &Scratch) -> Vec<String> {
    let listed = vigilfs(&["events", scratch.mnt(), "--json"]);
    text(&listed.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["kind"] == "settings")
        .map(|event| event["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn flags(path: &Path) -> u64 {
    statvfs(path).f_flag
}

#[test]
fn remount_read_only_and_back_keeps_the_mount_and_its_flags() {
    if fuse_missing("remount_read_only_and_back_keeps_the_mount_and_its_flags") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "nodev"]);
    fs::write(scratch.at("before"), b"written before").unwrap();
    let directory = scratch.directory.path();

    let output = remount(&scratch, "remount,ro");
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
    let now = flags(&scratch.mountpoint);
    assert_ne!(now & libc::ST_RDONLY, 0, "read-only");
    assert_ne!(now & libc::ST_NODEV, 0, "nodev kept");
    let refused = fs::write(scratch.at("during"), b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS));
    assert_eq!(fs::read(scratch.at("before")).unwrap(), b"written before");
    // status says why writes are refused though the daemon runs.
    assert_eq!(scratch.status()["mounted_read_only"], true);
    let shown = vigilfs(&["status", scratch.mnt()]);
    assert!(
        text(&shown.stdout).contains("mounted read-only: the kernel refuses writes"),
        "{}",
        text(&shown.stdout)
    );

    remount(&scratch, "remount,rw");
    assert_eq!(flags(&scratch.mountpoint) & libc::ST_RDONLY, 0);
    fs::write(scratch.at("after"), b"written after").unwrap();
    assert_eq!(scratch.status()["mounted_read_only"], false);

    // What the daemon built its state from cannot change now.
    let output = helper(
        directory,
        &[scratch.img(), scratch.mnt(), "-o", "remount,threads=3"],
    );
    // mount(8)'s code for a wrong invocation.
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("cannot change on a remount"));
    // The same daemon served it all.
    assert_eq!(scratch.status()["pid"].as_u64(), Some(u64::from(pid)));
    scratch.umount(pid);
    assert_eq!(
        superblock_state(&scratch.image),
        vigilfs::format::FsState::Clean
    );
}

#[test]
fn a_remount_changes_the_daemon_settings_in_the_running_daemon() {
    if fuse_missing("a_remount_changes_the_daemon_settings_in_the_running_daemon") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&[
        "--size",
        "64M",
        "-o",
        "errors=remount-ro,cache=64M,threads=2",
    ]);
    let directory = scratch.directory.path();
    // Clean cached data: written, made durable, read back.
    let data = vec![7u8; 8 << 20];
    fs::write(scratch.at("cached"), &data).unwrap();
    fs::File::open(scratch.at("cached"))
        .unwrap()
        .sync_all()
        .unwrap();
    let output = vigilfs(&["sync", scratch.mnt()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(fs::read(scratch.at("cached")).unwrap(), data);
    let before = scratch.status();
    assert!(
        before["cached_bytes"].as_u64().unwrap() > 2 << 20,
        "cached before: {before}"
    );

    let output = helper(
        directory,
        &[
            scratch.img(),
            scratch.mnt(),
            "-o",
            // threads=2 as mount(8) repeats it from fstab: unchanged, so
            // accepted.
            "remount,errors=continue,cache=1M,dirty=16M,writeback_interval=0.5,threads=2",
        ],
    );
    assert!(output.status.success(), "remount: {}", text(&output.stderr));
    let status = scratch.status();
    assert_eq!(status["errors_policy"], "continue");
    assert_eq!(status["settings"]["cache_bytes"], 1 << 20);
    assert_eq!(status["settings"]["dirty_limit_bytes"], 16 << 20);
    assert_eq!(status["settings"]["writeback_interval_seconds"], 0.5);
    assert!(
        status["cached_bytes"].as_u64().unwrap() <= 1 << 20,
        "the smaller cache evicted at once: {status}"
    );
    // The same daemon, and the change is in its event log.
    assert_eq!(status["pid"].as_u64(), Some(u64::from(pid)));
    assert_eq!(
        settings_events(&scratch),
        ["errors=continue cache=1M dirty=16M writeback=0.5s"]
    );

    // A bad value is refused before anything changes, kernel flags included.
    for bad in ["errors=sometimes", "cache=lots", "writeback_interval=0"] {
        let options = format!("remount,ro,{bad}");
        let output = helper(directory, &[scratch.img(), scratch.mnt(), "-o", &options]);
        assert_eq!(output.status.code(), Some(1), "{bad}");
        assert!(
            text(&output.stderr).contains(bad),
            "{}",
            text(&output.stderr)
        );
    }
    assert_eq!(flags(&scratch.mountpoint) & libc::ST_RDONLY, 0);
    assert_eq!(scratch.status()["errors_policy"], "continue");

    // A remount the kernel refuses (read-only while a file is open for
    // writing: EBUSY) changes the daemon's settings no more than its flags.
    let writer = fs::OpenOptions::new()
        .write(true)
        .open(scratch.at("cached"))
        .unwrap();
    let output = helper(
        directory,
        &[
            scratch.img(),
            scratch.mnt(),
            "-o",
            "remount,ro,errors=panic",
        ],
    );
    // mount(8)'s code for a mount failure.
    assert_eq!(output.status.code(), Some(32), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("nothing changed"));
    assert_eq!(scratch.status()["errors_policy"], "continue");
    assert_eq!(flags(&scratch.mountpoint) & libc::ST_RDONLY, 0);
    drop(writer);
    scratch.umount(pid);
}

/// fstests generic/417: a filesystem shut down with files open but
/// removed is mounted `ro`, then `remount,rw`: the remount makes the daemon
/// writable in place, which deletes the orphans the shutdown left, as a
/// read-write mount would have.
#[test]
fn a_read_only_mount_remounted_read_write_deletes_the_orphans_and_takes_writes() {
    if fuse_missing("a_read_only_mount_remounted_read_write_deletes_the_orphans_and_takes_writes") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    fs::write(scratch.at("kept"), b"written before").unwrap();
    let orphan = fs::File::create(scratch.at("orphan")).unwrap();
    std::io::Write::write_all(&mut &orphan, &vec![5u8; 1 << 20]).unwrap();
    orphan.sync_all().unwrap();
    fs::remove_file(scratch.at("orphan")).unwrap();
    let shut = vigilfs(&["shutdown", scratch.mnt()]);
    assert_eq!(shut.status.code(), Some(0), "{}", text(&shut.stderr));
    drop(orphan);
    scratch.umount(pid);

    let pid = scratch.mount(&["-o", "ro"]);
    assert_eq!(scratch.status()["state"], "read-only");
    assert_eq!(scratch.status()["orphans_purged"], 0);
    let refused = fs::write(scratch.at("during"), b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS));
    // Settings change on a read-only mount too.
    remount(&scratch, "remount,errors=panic");
    assert_eq!(scratch.status()["errors_policy"], "panic");

    remount(&scratch, "remount,rw");
    assert_eq!(flags(&scratch.mountpoint) & libc::ST_RDONLY, 0, "rw");
    let status = scratch.status();
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["orphans_purged"], 1, "{status}");
    fs::write(scratch.at("after"), b"written after the remount").unwrap();
    assert_eq!(fs::read(scratch.at("kept")).unwrap(), b"written before");
    // Announced once, though the helper and the mount table both tell it.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let settings = settings_events(&scratch);
    assert_eq!(settings, ["errors=panic", "rw"], "{settings:?}");
    scratch.umount(pid);
    let checked = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stdout));

    let pid = scratch.mount(&[]);
    assert_eq!(scratch.status()["recovered"], false, "a clean unmount");
    assert_eq!(
        fs::read(scratch.at("after")).unwrap(),
        b"written after the remount"
    );
    scratch.umount(pid);
}

#[test]
fn remount_read_write_is_refused_while_an_error_keeps_the_daemon_read_only() {
    if fuse_missing("remount_read_write_is_refused_while_an_error_keeps_the_daemon_read_only") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "errors=remount-ro"]);
    let injected = vigilfs(&[
        "inject",
        scratch.mnt(),
        "--fail-writes",
        "--class",
        "journal",
    ]);
    assert_eq!(
        injected.status.code(),
        Some(0),
        "{}",
        text(&injected.stderr)
    );
    let file = fs::File::create(scratch.at("f")).unwrap();
    assert!(file.sync_all().is_err(), "the journal's write fails");
    drop(file);
    // The policy turns the kernel's mount read-only from a thread of its
    // own, moments after the state changes: both, before the remount.
    wait_until(
        "the policy makes the mount read-only",
        std::time::Duration::from_secs(30),
        || {
            scratch.status()["state"] == "read-only"
                && flags(&scratch.mountpoint) & libc::ST_RDONLY != 0
        },
    );
    let output = helper(
        scratch.directory.path(),
        &[scratch.img(), scratch.mnt(), "-o", "remount,rw"],
    );
    // mount(8)'s code for a mount failure.
    assert_eq!(output.status.code(), Some(32), "{}", text(&output.stderr));
    let message = text(&output.stderr);
    assert!(
        message.contains("read-write refused") && message.contains("errors=remount-ro"),
        "{message}"
    );
    assert_ne!(flags(&scratch.mountpoint) & libc::ST_RDONLY, 0, "still ro");
    assert_eq!(scratch.status()["state"], "read-only");
    scratch.umount(pid);
}

/// A read-only mount whose errors=remount-ro policy acted on a metadata
/// failure stays read-only: a remount,rw is refused through the helper,
/// and one that reaches only the kernel is turned back.
#[test]
fn a_read_only_mount_kept_so_by_its_errors_policy_refuses_read_write() {
    if fuse_missing("a_read_only_mount_kept_so_by_its_errors_policy_refuses_read_write") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    for index in 0..500 {
        fs::write(scratch.at(&format!("file-{index}")), b"x").unwrap();
    }
    scratch.umount(pid);
    let pid = scratch.mount(&["-o", "ro,errors=remount-ro"]);
    let injected = vigilfs(&[
        "inject",
        scratch.mnt(),
        "--corrupt-reads",
        "--class",
        "metadata",
        "--drop-caches",
    ]);
    assert_eq!(
        injected.status.code(),
        Some(0),
        "{}",
        text(&injected.stderr)
    );
    let failed = (0..500)
        .filter(|index| fs::metadata(scratch.at(&format!("file-{index}"))).is_err())
        .count();
    assert!(failed > 0, "no lookup met the corruption");
    let cleared = vigilfs(&["inject", scratch.mnt(), "--clear"]);
    assert_eq!(cleared.status.code(), Some(0), "{}", text(&cleared.stderr));
    assert!(
        scratch.status()["state_reason"]
            .as_str()
            .is_some_and(|why| why.contains("errors=remount-ro after")),
        "{}",
        scratch.status()
    );
    let output = helper(
        scratch.directory.path(),
        &[scratch.img(), scratch.mnt(), "-o", "remount,rw"],
    );
    assert_eq!(output.status.code(), Some(32), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("errors=remount-ro"),
        "{}",
        text(&output.stderr)
    );
    kernel_read_write_is_turned_back(&scratch);
    scratch.umount(pid);
}

/// A second mount point of a filesystem mounted read-only is read-only
/// too, and says so; `remount,rw` of each makes it writable there (as for
/// any filesystem, a remount changes the one mount point it names).
#[test]
fn a_second_mount_point_of_a_read_only_mount_says_it_is_read_only() {
    if fuse_missing("a_second_mount_point_of_a_read_only_mount_says_it_is_read_only") {
        return;
    }
    let scratch = Scratch::new();
    let pid = mount_new_read_only(&scratch);
    let second = scratch.directory.path().join("second");
    let shown = vigilfs(&["mount", scratch.img(), second.to_str().unwrap()]);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.stderr));
    assert!(
        text(&shown.stderr).contains("read-only as it is there"),
        "{}",
        text(&shown.stderr)
    );
    let refused = fs::write(second.join("f"), b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS));
    remount(&scratch, "remount,rw");
    let output = helper(
        scratch.directory.path(),
        &[scratch.img(), second.to_str().unwrap(), "-o", "remount,rw"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    fs::write(second.join("f"), b"x").unwrap();
    assert_eq!(fs::read(scratch.at("f")).unwrap(), b"x");
    umount_retrying_busy(&second);
    scratch.umount(pid);
}

/// A read-only mount shut down refuses read-write as the helper does,
/// also when the kernel alone is remounted: its mount is turned back.
#[test]
fn a_shut_down_read_only_mount_the_kernel_remounts_read_write_is_turned_back() {
    if fuse_missing("a_shut_down_read_only_mount_the_kernel_remounts_read_write_is_turned_back") {
        return;
    }
    let scratch = Scratch::new();
    let pid = mount_new_read_only(&scratch);
    let shut = vigilfs(&["shutdown", scratch.mnt()]);
    assert_eq!(shut.status.code(), Some(0), "{}", text(&shut.stderr));
    let shown = text(&vigilfs(&["status", scratch.mnt()]).stdout);
    assert!(!shown.contains("remount,rw"), "{shown}");
    kernel_read_write_is_turned_back(&scratch);
    scratch.umount(pid);
}

/// `mount -i -o remount,rw` of a read-only mount: the daemon sees the
/// kernel's mount turn read-write in the mount table and makes itself
/// writable, as the helper would have.
#[test]
fn a_read_only_mount_the_kernel_alone_remounts_read_write_becomes_writable() {
    if fuse_missing("a_read_only_mount_the_kernel_alone_remounts_read_write_becomes_writable") {
        return;
    }
    let scratch = Scratch::new();
    let pid = mount_new_read_only(&scratch);
    kernel_only_remount(&scratch, "remount,rw");
    // The line is logged once the daemon is writable.
    wait_until(
        "the daemon follows the kernel's read-write remount",
        std::time::Duration::from_secs(30),
        || scratch.log().contains("the filesystem is writable now"),
    );
    assert_eq!(scratch.status()["state"], "running");
    fs::write(scratch.at("after"), b"written").unwrap();
    assert_eq!(settings_events(&scratch), ["rw"]);
    scratch.umount(pid);
}

#[test]
fn remount_read_only_makes_everything_durable_before_it_returns() {
    if fuse_missing("remount_read_only_makes_everything_durable_before_it_returns") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable,writeback_interval=3600"]);
    let data = vec![0x3cu8; 100_000];
    fs::write(scratch.at("written"), &data).unwrap();
    fs::create_dir(scratch.at("made")).unwrap();
    let unsynced = vigilfs(&["unsynced", scratch.mnt()]);
    assert!(
        text(&unsynced.stdout).contains("written"),
        "nothing to make durable: {}",
        text(&unsynced.stdout)
    );
    remount(&scratch, "remount,ro");
    // A power cut right after the remount loses nothing.
    let cut = vigilfs(&["inject", scratch.mnt(), "--power-cut"]);
    assert_eq!(cut.status.code(), Some(0), "{}", text(&cut.stderr));
    assert_eq!(fs::read(scratch.at("written")).unwrap(), data);
    assert!(scratch.at("made").is_dir());
    // The mount the power cut brought back is still read-only.
    assert_ne!(flags(&scratch.mountpoint) & libc::ST_RDONLY, 0);
    let refused = fs::write(scratch.at("after the cut"), b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS));
    // The event stream says what the remounts did.
    remount(&scratch, "remount,rw");
    fs::write(scratch.at("after the cut"), b"x").unwrap();
    let said = text(&vigilfs(&["events", scratch.mnt()]).stdout);
    assert!(
        said.contains("settings  (ro)") && said.contains("settings  (rw)"),
        "{said}"
    );
    scratch.umount(pid);
}

/// After `remount,ro` nothing more reaches the image on behalf of reads
/// (an image copied after the remount must stay as it was): a read records
/// no access time, as a read-only mount of a disk filesystem records none.
#[test]
fn remount_read_only_records_no_access_time() {
    if fuse_missing("remount_read_only_records_no_access_time") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    fs::write(scratch.at("kept"), vec![1u8; 8192]).unwrap();
    remount(&scratch, "remount,ro");
    // The remount's own event record may still be on its way to the image
    // (the event writer is a thread of its own): the event log is left out.
    let image_before = image_without_event_log(&scratch.image);
    let atime_before = fs::metadata(scratch.at("kept"))
        .unwrap()
        .accessed()
        .unwrap();
    // The kernel's cached pages dropped, so the read reaches the daemon,
    // whose relatime would record it (the access is not after the write).
    let kept = fs::File::open(scratch.at("kept")).unwrap();
    // SAFETY: posix_fadvise on an open descriptor; no memory involved.
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&kept),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        );
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &kept, &mut bytes).unwrap();
    assert_eq!(bytes, vec![1u8; 8192]);
    drop(kept);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        image_without_event_log(&scratch.image) == image_before,
        "the image changed on a read-only mount"
    );
    let status = scratch.status();
    assert_eq!(status["mounted_read_only"], true);
    remount(&scratch, "remount,rw");
    assert_eq!(
        fs::metadata(scratch.at("kept"))
            .unwrap()
            .accessed()
            .unwrap(),
        atime_before,
        "no access time was recorded"
    );
    scratch.umount(pid);
}

/// Through FUSE the daemon, not the kernel, updates access times, so the
/// atime options of a remount reach the running daemon: after
/// `remount,noatime` a listing records no access time, `remount,relatime`
/// brings the updates back, `nodiratime` stops them for directories; status
/// shows what is in force.
#[test]
fn a_remount_changes_when_access_times_are_recorded() {
    if fuse_missing("a_remount_changes_when_access_times_are_recorded") {
        return;
    }
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let dir = scratch.at("dir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("entry"), b"x").unwrap();
    let long_ago = || {
        let times = fs::FileTimes::new()
            .set_accessed(UNIX_EPOCH + Duration::from_secs(1000))
            .set_modified(UNIX_EPOCH + Duration::from_secs(2000));
        fs::File::open(&dir).unwrap().set_times(times).unwrap();
    };
    let listed = || {
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::metadata(&dir).unwrap().accessed().unwrap()
    };
    let ago = UNIX_EPOCH + Duration::from_secs(1000);
    remount(&scratch, "remount,noatime");
    assert_eq!(scratch.status()["settings"]["atime"], "noatime");
    long_ago();
    assert_eq!(listed(), ago, "noatime: no access time recorded");
    remount(&scratch, "remount,relatime");
    assert_eq!(scratch.status()["settings"]["atime"], "relatime");
    let before = SystemTime::now() - Duration::from_secs(1);
    assert!(
        listed() >= before,
        "relatime again: the listing is recorded"
    );
    remount(&scratch, "remount,nodiratime");
    assert_eq!(scratch.status()["settings"]["directory_atime"], false);
    long_ago();
    assert_eq!(listed(), ago, "nodiratime: listings record nothing");
    scratch.umount(pid);
}

/// mount(8) hands the helper the whole set of options the mount is to
/// have, the mount table's merged with the command line's: `mount -o
/// remount,exec` of a `noexec` mount arrives as `rw,relatime,remount`.
/// The flag it leaves out is cleared (it used to be kept: the remount
/// said success and the mount stayed noexec).
#[test]
fn a_flag_mount8_leaves_out_of_the_whole_set_is_cleared() {
    if fuse_missing("a_flag_mount8_leaves_out_of_the_whole_set_is_cleared") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "nosuid"]);
    remount(&scratch, "remount,noexec,nodiratime");
    let now = flags(&scratch.mountpoint);
    assert_ne!(now & libc::ST_NOEXEC, 0);
    // A script's partial list that names what the mount has clears nothing
    // it leaves out (it cleared nosuid and noexec).
    remount(&scratch, "remount,rw");
    let now = flags(&scratch.mountpoint);
    assert_ne!(now & libc::ST_NOSUID, 0, "nosuid kept");
    assert_ne!(now & libc::ST_NOEXEC, 0, "noexec kept");
    assert_eq!(scratch.status()["settings"]["directory_atime"], false);
    // As mount(8) passes `mount -o remount,exec,diratime`.
    remount(
        &scratch,
        "rw,relatime,remount,user_id=0,group_id=0,default_permissions,allow_other",
    );
    let now = flags(&scratch.mountpoint);
    assert_eq!(now & libc::ST_NOEXEC, 0, "exec again");
    assert_eq!(
        now & libc::ST_NOSUID,
        0,
        "suid again: left out of the whole set"
    );
    assert_eq!(now & libc::ST_NODIRATIME, 0, "diratime again");
    assert_eq!(scratch.status()["settings"]["directory_atime"], true);
    scratch.umount(pid);
}

/// Through FUSE the daemon records access times, and the mount table shows
/// the kernel's atime flags, which mount(8) merges into every remount: a
/// mount made with `noatime,nodiratime` shows them (it showed relatime, so
/// a later `remount,relatime` changed nothing and status disagreed).
#[test]
fn the_mount_table_shows_the_atime_options_the_mount_was_made_with() {
    if fuse_missing("the_mount_table_shows_the_atime_options_the_mount_was_made_with") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "noatime,nodiratime,nosymfollow"]);
    let now = flags(&scratch.mountpoint);
    assert_ne!(now & libc::ST_NOATIME, 0, "noatime shown");
    assert_ne!(now & libc::ST_NODIRATIME, 0, "nodiratime shown");
    assert_ne!(now & 0x2000, 0, "nosymfollow (ST_NOSYMFOLLOW) set");
    // As mount(8) passes `mount -o remount,relatime,diratime`.
    remount(
        &scratch,
        "rw,relatime,remount,user_id=0,group_id=0,default_permissions,allow_other",
    );
    let settings = &scratch.status()["settings"];
    assert_eq!(settings["atime"], "relatime");
    assert_eq!(settings["directory_atime"], true);
    scratch.umount(pid);
}

/// From an fstab line, mount(8) merges that line's options with the
/// command line's, without the mount table's `user_id=`: still the whole
/// set (`remount,exec` of an fstab `noexec` mount cleared nothing). A
/// strictatime mount stays strictatime when a script's remount names
/// another flag (the kernel falls back to relatime unless told).
#[test]
fn an_fstab_whole_set_clears_flags_and_strictatime_is_kept() {
    if fuse_missing("an_fstab_whole_set_clears_flags_and_strictatime_is_kept") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "noexec,strictatime,nodiratime"]);
    remount(&scratch, "remount,nodev");
    let now = flags(&scratch.mountpoint);
    assert_eq!(
        now & (libc::ST_NOATIME | libc::ST_RELATIME),
        0,
        "strictatime kept"
    );
    assert_ne!(now & libc::ST_NODIRATIME, 0);
    assert_eq!(scratch.status()["settings"]["atime"], "strictatime");
    // As mount(8) passes `mount -o remount,exec` with an fstab line
    // `... noexec,strictatime,nodiratime,errors=continue`.
    remount(
        &scratch,
        "rw,strictatime,nodiratime,remount,errors=continue",
    );
    let now = flags(&scratch.mountpoint);
    assert_eq!(now & libc::ST_NOEXEC, 0, "exec again");
    assert_eq!(
        now & libc::ST_NODEV,
        0,
        "dev again: left out of the whole set"
    );
    assert_eq!(scratch.status()["settings"]["atime"], "strictatime");
    scratch.umount(pid);
}

/// A remount that reaches only the kernel (`mount -i`, no helper in /sbin,
/// a program calling mount(2)) tells FUSE nothing: the daemon follows the
/// mount table, and a read-only remount makes everything durable moments
/// after (it went on holding dirty data, written into the image up to the
/// writeback interval later); read-write again lets writes go on.
#[test]
fn a_remount_that_reaches_only_the_kernel_is_followed() {
    if fuse_missing("a_remount_that_reaches_only_the_kernel_is_followed") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "writeback_interval=600"]);
    fs::write(scratch.at("dirty"), vec![7u8; 1 << 20]).unwrap();
    kernel_only_remount_read_only(&scratch);
    kernel_only_remount(&scratch, "remount,rw");
    wait_until(
        "the daemon follows the read-write remount",
        std::time::Duration::from_secs(30),
        || scratch.log().contains("became read-write"),
    );
    fs::write(scratch.at("after"), b"written").unwrap();
    // A remount through the helper is seen twice, from the helper and in
    // the mount table: one change, one `settings` event.
    remount(&scratch, "remount,ro");
    std::thread::sleep(std::time::Duration::from_secs(1));
    remount(&scratch, "remount,rw");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let settings = settings_events(&scratch);
    assert_eq!(settings, ["ro", "rw", "ro", "rw"], "{settings:?}");
    scratch.umount(pid);
}

/// A power cut replaces the kernel's mount. While a descriptor keeps the
/// old one alive, the new one has another device number, and the watch
/// went on looking for the old number: remounts that reached only the
/// kernel went unseen for the rest of the mount, and a read-only one
/// wrote nothing back (found by a review helper).
#[test]
fn a_remount_that_reaches_only_the_kernel_is_followed_after_a_power_cut_with_a_file_open() {
    if fuse_missing("a_remount_that_reaches_only_the_kernel_is_followed_after_a_power_cut") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable,writeback_interval=600"]);
    let holder = fs::File::create(scratch.at("holder")).unwrap();
    let cut = vigilfs(&["inject", scratch.mnt(), "--power-cut"]);
    assert_eq!(cut.status.code(), Some(0), "{}", text(&cut.stderr));
    fs::write(scratch.at("dirty"), vec![7u8; 1 << 16]).unwrap();
    kernel_only_remount_read_only(&scratch);
    drop(holder);
    kernel_only_remount(&scratch, "remount,rw");
    wait_until(
        "the daemon follows the read-write remount",
        std::time::Duration::from_secs(30),
        || settings_events(&scratch) == ["ro", "rw"],
    );
    fs::write(scratch.at("after"), b"written").unwrap();
    scratch.umount(pid);
}

/// After a read-only remount the image stays as it is: the remount
/// records the journal's durability itself, so the background thread has
/// nothing left to write (it wrote a journal entry a round later, under a
/// copy its user had been told was safe to take).
#[test]
fn after_a_read_only_remount_the_image_stays_as_it_is() {
    if fuse_missing("after_a_read_only_remount_the_image_stays_as_it_is") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "writeback_interval=1"]);
    fs::write(scratch.at("kept"), vec![7u8; 1 << 20]).unwrap();
    // Freed blocks, pending until the journal records their release.
    fs::write(scratch.at("freed"), vec![8u8; 1 << 20]).unwrap();
    fs::remove_file(scratch.at("freed")).unwrap();
    remount(&scratch, "remount,ro");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let image = image_without_event_log(&scratch.image);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(
        image_without_event_log(&scratch.image) == image,
        "the image changed after the read-only remount"
    );
    remount(&scratch, "remount,rw");
    scratch.umount(pid);
}

/// A read-only remount leaves the image clean, as Linux's filesystems do:
/// a crash (or a copy of the image) before the unmount needs no journal
/// replay, and its event log misses no unmount event. It said "not
/// unmounted cleanly" and replayed (review 50), then that the newest
/// events were missing (review 52).
/// Read-write again, it is marked in use before anything is written.
#[test]
fn a_read_only_remount_leaves_the_image_clean_until_read_write_again() {
    if fuse_missing("a_read_only_remount_leaves_the_image_clean_until_read_write_again") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "writeback_interval=3600"]);
    let data = vec![0x5au8; 300_000];
    fs::write(scratch.at("kept"), &data).unwrap();
    fs::create_dir(scratch.at("made")).unwrap();
    remount(&scratch, "remount,ro");
    scratch.kill_daemon(pid);
    let fsck = vigilfs(&["fsck", scratch.img()]);
    let said = text(&fsck.stdout);
    assert_eq!(fsck.status.code(), Some(0), "{said}");
    assert!(!said.contains("not unmounted cleanly"), "{said}");
    // Nor is an unmount's event missing from the log (review 52: "the
    // newest events are missing", a "lost" event).
    assert!(!said.contains("events are missing"), "{said}");
    let listed = text(&vigilfs(&["events", scratch.img()]).stdout);
    assert!(!listed.contains(" lost "), "{listed}");
    let pid = scratch.mount(&[]);
    assert_eq!(scratch.status()["recovered"], false);
    assert_eq!(fs::read(scratch.at("kept")).unwrap(), data);
    assert!(scratch.at("made").is_dir());
    remount(&scratch, "remount,ro");
    remount(&scratch, "remount,rw");
    fs::write(scratch.at("after"), b"x").unwrap();
    scratch.kill_daemon(pid);
    let said = text(&vigilfs(&["fsck", scratch.img()]).stdout);
    assert!(said.contains("not unmounted cleanly"), "{said}");
}

/// Remounted read-only and read-write again while frozen, the image stays
/// as the freeze left it: clean, its log missing nothing (the read-write
/// remount marked it in use under the freeze).
#[test]
fn remounts_while_frozen_leave_the_frozen_image_clean() {
    if fuse_missing("remounts_while_frozen_leave_the_frozen_image_clean") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    fs::write(scratch.at("kept"), b"before the freeze").unwrap();
    let frozen = vigilfs(&["freeze", scratch.mnt()]);
    assert_eq!(frozen.status.code(), Some(0), "{}", text(&frozen.stderr));
    remount(&scratch, "remount,ro");
    remount(&scratch, "remount,rw");
    scratch.kill_daemon(pid);
    let fsck = vigilfs(&["fsck", scratch.img()]);
    let said = text(&fsck.stdout);
    assert_eq!(fsck.status.code(), Some(0), "{said}");
    assert!(!said.contains("not unmounted cleanly"), "{said}");
    assert!(!said.contains("events are missing"), "{said}");
    let pid = scratch.mount(&[]);
    assert_eq!(fs::read(scratch.at("kept")).unwrap(), b"before the freeze");
    scratch.umount(pid);
}
