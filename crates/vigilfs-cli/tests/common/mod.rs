//! What the end-to-end tests of the `vigilfs` binary share: running it,
//! a scratch directory with an image and a mount point (unmounted and the
//! daemon killed on drop, so a failed test leaves nothing behind), waiting
//! for mounts and processes, and reading the image a mount left.
//!
//! Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vigilfs::device::{FileDevice, FileDeviceOptions};
use vigilfs::format::{read_superblock, FsState, Superblock};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vigilfs")
}

/// The vigilfs binary as another user can run it: this build's own path
/// when every directory above it lets others through, else a copy in
/// `scratch`'s directory (a checkout under a private home, as CI's, is out
/// of their reach).
pub fn binary_for_other_users(scratch: &Scratch) -> PathBuf {
    let own = Path::new(binary());
    let reachable = own.ancestors().skip(1).all(|directory| {
        fs::metadata(directory).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0)
    });
    if reachable {
        return own.to_path_buf();
    }
    let copy = scratch.directory.path().join("vigilfs");
    if !copy.exists() {
        fs::copy(own, &copy).expect("a copy of the binary");
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy
}

pub fn vigilfs(arguments: &[&str]) -> Output {
    Command::new(binary())
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .expect("the vigilfs binary runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn fuse_missing(test: &str) -> bool {
    if Path::new("/dev/fuse").exists() {
        return false;
    }
    eprintln!("SKIPPED {test}: /dev/fuse is absent, FUSE mounts cannot be tested here");
    true
}

pub fn is_mounted(mountpoint: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = mountpoint.to_string_lossy().replace(' ', "\\040");
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `umount MOUNTPOINT`, returning as soon as it succeeds (the mount
/// process may still be exiting). A mount still busy is retried for a few
/// seconds (a descriptor closed just before may still be on its way out
/// of another process: the test's own children inherit nothing, but other
/// tests' may be mid-fork); if it stays busy, the processes holding it are
/// named.
pub fn umount_retrying_busy(mountpoint: &Path) {
    let mut attempts = 0;
    let output = loop {
        let output = Command::new("umount").arg(mountpoint).output().unwrap();
        attempts += 1;
        if output.status.success() || !text(&output.stderr).contains("busy") || attempts == 50 {
            break output;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        output.status.success(),
        "umount: {} (held by: {:?})",
        text(&output.stderr),
        holders(mountpoint)
    );
}

/// Whether a process is gone (or a zombie nobody reaped).
pub fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Kills the mount daemon `pid` (a test's own) as a crash would, waits
/// for it to be gone, and detaches its dead mount at `mountpoint`: the
/// image is left as the crash left it.
pub fn kill_9_daemon(pid: u32, mountpoint: &Path) {
    // SAFETY: killing a daemon the calling test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    wait_until("the daemon is gone", Duration::from_secs(30), || {
        process_gone(pid)
    });
    lazy_unmount(mountpoint);
}

/// `statvfs` of `path` (its mount's flags in `f_flag`, df's numbers);
/// panics if it fails.
pub fn statvfs(path: &Path) -> libc::statvfs {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs is plain old data; all zeros is a valid value.
    let mut status: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a writable struct for the call.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut status) }, 0);
    status
}

/// `umount2(MNT_DETACH)`, as `umount -l` does; panics with the errno if it
/// fails.
pub fn lazy_unmount(mountpoint: &Path) {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path that outlives the call.
    let result = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    assert_eq!(
        result,
        0,
        "umount2({}, MNT_DETACH): {}",
        mountpoint.display(),
        std::io::Error::last_os_error()
    );
}

/// The superblock of `image`, read without changing it.
fn superblock_of(image: &Path) -> Superblock {
    let device = FileDevice::open(
        image,
        FileDeviceOptions {
            read_only: true,
            ..FileDeviceOptions::default()
        },
    )
    .unwrap();
    read_superblock(&device).unwrap().superblock
}

/// The byte range of `image`'s journal region.
pub fn journal_bytes(image: &Path) -> std::ops::Range<u64> {
    let superblock = superblock_of(image);
    let block = u64::from(superblock.layout.block_size);
    let region = superblock.layout.journal;
    region.start * block..(region.start + region.blocks) * block
}

pub fn superblock_state(image: &Path) -> FsState {
    superblock_of(image).state
}

/// The image's bytes with its event log region zeroed: what "the image
/// does not change" means, as the event log is still written (by its own
/// thread, moments after each event).
pub fn image_without_event_log(image: &Path) -> Vec<u8> {
    let superblock = superblock_of(image);
    let mut bytes = fs::read(image).unwrap();
    if let Some(region) = superblock.event_log {
        let block = u64::from(superblock.layout.block_size);
        let start = (region.start * block) as usize;
        let end = (((region.start + region.blocks) * block) as usize).min(bytes.len());
        bytes[start..end].fill(0);
    }
    bytes
}

/// A scratch directory everyone may enter (the test of another user needs
/// to reach the mount point), with an image path and a mount point; a
/// mount left by a failed test is removed on drop.
pub struct Scratch {
    pub directory: tempfile::TempDir,
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let directory = tempfile::tempdir().unwrap();
        fs::set_permissions(directory.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mountpoint = directory.path().join("mnt");
        fs::create_dir(&mountpoint).unwrap();
        Scratch {
            image: directory.path().join("disk.img"),
            pid_file: directory.path().join("vigilfs.pid"),
            log_file: directory.path().join("vigilfs.log"),
            mountpoint,
            directory,
        }
    }

    pub fn mnt(&self) -> &str {
        self.mountpoint.to_str().unwrap()
    }

    pub fn img(&self) -> &str {
        self.image.to_str().unwrap()
    }

    pub fn at(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// `vigilfs mount --daemon` with a pid and a log file; returns the pid.
    pub fn mount(&self, extra: &[&str]) -> u32 {
        let mut arguments = vec![
            "mount",
            self.img(),
            self.mnt(),
            "--daemon",
            "--pid-file",
            self.pid_file.to_str().unwrap(),
            "--log-file",
            self.log_file.to_str().unwrap(),
        ];
        arguments.extend_from_slice(extra);
        let output = vigilfs(&arguments);
        assert_eq!(
            output.status.code(),
            Some(0),
            "mount failed: {}{}",
            text(&output.stderr),
            self.log()
        );
        assert!(
            is_mounted(&self.mountpoint),
            "mounted once --daemon returns"
        );
        fs::read_to_string(&self.pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A crash of the mount process: SIGKILL, its dead mount detached and
    /// its pid file removed, so the next mount replays the journal.
    pub fn kill_daemon(&self, pid: u32) {
        // SAFETY: killing the mount process this test started, by pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        wait_until("the mount process dies", Duration::from_secs(30), || {
            process_gone(pid)
        });
        lazy_unmount(&self.mountpoint);
        let _ = fs::remove_file(&self.pid_file);
    }

    /// `umount`, then waits for the mount process to exit. A mount still
    /// busy is retried for a few seconds (a descriptor closed just before
    /// may still be on its way out of another process: the test's own
    /// children inherit nothing, but other tests' may be mid-fork); if it
    /// stays busy, the processes holding it are named.
    pub fn umount(&self, pid: u32) {
        umount_retrying_busy(&self.mountpoint);
        wait_until("the mount process exits", Duration::from_secs(60), || {
            process_gone(pid)
        });
        assert!(!is_mounted(&self.mountpoint));
    }

    pub fn status(&self) -> serde_json::Value {
        let output = vigilfs(&["status", self.mnt(), "--json"]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The mount's metrics, as `vigilfs metrics` prints them, parsed.
    pub fn metrics(&self) -> prometheus_parse::Scrape {
        let output = vigilfs(&["metrics", self.mnt()]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let printed = text(&output.stdout);
        prometheus_parse::Scrape::parse(printed.lines().map(|line| Ok(line.to_string()))).unwrap()
    }

    pub fn inject(&self, arguments: &[&str]) -> Output {
        let mut all = vec!["inject", self.mnt()];
        all.extend_from_slice(arguments);
        let output = vigilfs(&all);
        assert_eq!(
            output.status.code(),
            Some(0),
            "inject {arguments:?}: {}",
            text(&output.stderr)
        );
        output
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .output();
        }
        if let Ok(pid) = fs::read_to_string(&self.pid_file) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: signalling a process by pid.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = self.directory.path();
    }
}

pub fn errno_of(result: std::io::Result<()>) -> Option<i32> {
    result.err().map(|error| error.raw_os_error().unwrap_or(-1))
}

/// The processes with a descriptor, or their working directory, under
/// `mountpoint`: pid, name and the paths.
pub fn holders(mountpoint: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(processes) = fs::read_dir("/proc") else {
        return found;
    };
    for process in processes.flatten() {
        let directory = process.path();
        let mut paths: Vec<PathBuf> = fs::read_dir(directory.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .collect();
        paths.extend(fs::read_link(directory.join("cwd")));
        let held: Vec<String> = paths
            .iter()
            .filter(|path| path.starts_with(mountpoint))
            .map(|path| path.display().to_string())
            .collect();
        if !held.is_empty() {
            let name = fs::read_to_string(directory.join("comm")).unwrap_or_default();
            found.push(format!(
                "{} {}: {}",
                process.file_name().to_string_lossy(),
                name.trim(),
                held.join(", ")
            ));
        }
    }
    found
}

/// One sample of a scrape: the first of `name` (with the label, if given).
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && label.is_none_or(|(key, value)| sample.labels.get(key) == Some(value))
        })
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"));
    match found.value {
        prometheus_parse::Value::Counter(value)
        | prometheus_parse::Value::Gauge(value)
        | prometheus_parse::Value::Untyped(value) => value,
        ref other => panic!("{name}: {other:?}"),
    }
}

/// The id `vigilfs inject` printed for the rule it added.
pub fn rule_id(output: &Output) -> u64 {
    let stdout = text(&output.stdout);
    stdout
        .strip_prefix("added rule ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no rule id in {stdout:?}"))
}
