//! Linux semantics fstests checks, through a real mount: each test here is
//! the project's own regression test for a failure fstests found (the
//! test names say which fstests case), so CI covers them without fstests.
//! Changes by a user other than the owner run in a child process under
//! that user's credentials (`setpriv`), as fstests runs them (`su fsgqa`).

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{errno_of, Mount};

/// The user the "other user" steps run as.
const NOBODY: u32 = 65534;

/// The system's Python (Debian's `python3`): one under root's home (pyenv,
/// a virtualenv) is out of that user's reach.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Runs the Python `code` as uid and gid `NOBODY` with no supplementary
/// groups, with `path` as `sys.argv[1]`; panics with its stderr unless it
/// exits 0.
fn as_nobody(code: &str, path: &Path) {
    as_nobody_in_groups(&[], code, path);
}

/// [`as_nobody`], with `groups` as the supplementary groups.
fn as_nobody_in_groups(groups: &[u32], code: &str, path: &Path) {
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        format!("--groups={}", list.join(","))
    };
    let output = Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            groups,
            python().into(),
            "-c".into(),
            code.into(),
        ])
        .arg(path)
        .output()
        .expect("setpriv and python3 run");
    assert!(
        output.status.success(),
        "as uid {NOBODY}: {code}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A mount whose root directory everyone may use. Only the mount's own
/// root is opened up: the mount point is a directory of the system's
/// temporary directory, whose mode must stay as it is (1777), and a lookup
/// through a mount point uses the mounted root's permissions.
fn open_mount() -> Mount {
    let mount = Mount::new();
    fs::set_permissions(mount.path(), fs::Permissions::from_mode(0o777)).unwrap();
    mount
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// The permission bits of `path` as `stat -c %a` asks for them: statx for
/// the mode only, which the kernel answers from its attribute cache
/// unless that was invalidated.
fn mode_only(path: &Path) -> u32 {
    let path = common::c_path(path);
    // SAFETY: statx is plain old data; all zeros is a valid value.
    let mut status: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid C string and `status` is writable, both
    // for the duration of the call.
    let result = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            0,
            libc::STATX_MODE,
            &mut status,
        )
    };
    assert_eq!(result, 0, "statx: {}", std::io::Error::last_os_error());
    u32::from(status.stx_mode) & 0o7777
}

/// generic/193, 355, 683, 684: every change of a file's data by a user
/// other than root (here not the owner either) drops set-user-id, and
/// set-group-id when group execute is set; root's changes keep them.
#[test]
fn data_changes_by_another_user_clear_the_set_id_bits() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let changes = [
        ("truncate", "import os, sys; os.truncate(sys.argv[1], 10)"),
        (
            "ftruncate",
            "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.ftruncate(fd, 3)",
        ),
        (
            "open O_TRUNC",
            "import os, sys; os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)",
        ),
        (
            "fallocate",
            "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); \
             os.posix_fallocate(fd, 0, 8192)",
        ),
        (
            "punch hole",
            "import ctypes, os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); \
             libc = ctypes.CDLL(None, use_errno=True); \
             libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]; \
             assert libc.fallocate(fd, 3, 0, 4096) == 0, os.strerror(ctypes.get_errno())",
        ),
        (
            "direct write",
            "import mmap, os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT); \
             buffer = mmap.mmap(-1, 4096); buffer.write(b'x' * 4096); \
             assert os.pwritev(fd, [buffer], 0) == 4096",
        ),
        (
            "write",
            "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.pwrite(fd, b'x', 0)",
        ),
    ];
    // Every case runs; the failures are reported together.
    let mut wrong = Vec::new();
    for (index, (what, code)) in changes.iter().enumerate() {
        // (mode, the file's group, mode after): set-group-id without group
        // execute stays only for a member of the file's group.
        let cases = [
            (0o6777, 0, 0o777),
            (0o6766, 0, 0o766),
            (0o6766, NOBODY, 0o2766),
            (0o4766, 0, 0o766),
        ];
        for (before, group, after) in cases {
            let path = mount.join(&format!("file-{index}-{before:o}-{group}"));
            fs::write(&path, vec![7u8; 8192]).unwrap();
            std::os::unix::fs::chown(&path, None, Some(group)).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(before)).unwrap();
            assert_eq!(mode(&path), before);
            // Primed: the kernel caches the mode.
            assert_eq!(mode_only(&path), before);
            as_nobody(code, &path);
            // The kernel hears of the change from the session's own
            // thread, so a moment after the reply (more on a loaded
            // machine): still well within the 60 s the cached attributes
            // would otherwise be trusted.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut now = mode_only(&path);
            while now != after && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                now = mode_only(&path);
            }
            if now != after {
                wrong.push(format!(
                    "{what} of mode {before:o}, group {group}: {now:o}, not {after:o}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "changes by another user: {wrong:#?}");
    // Root's changes keep the bits (CAP_FSETID).
    let path = mount.join("root-file");
    fs::write(&path, b"data").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o6777)).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(1).unwrap();
    common::fallocate(&file, 0, 0, 8192).unwrap();
    drop(file);
    assert_eq!(mode(&path), 0o6777);
    mount.finish();
}

/// generic/688: a write by an unprivileged user to a file with a file
/// capability succeeds and drops the capability (the kernel removes
/// `security.capability` as the writer before sending the write).
#[test]
fn a_write_by_another_user_drops_the_file_capability() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let path = mount.join("program");
    fs::write(&path, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    // VFS_CAP_REVISION_2 with CAP_NET_RAW (13) permitted and effective.
    let mut capability = Vec::new();
    for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        capability.extend_from_slice(&word.to_le_bytes());
    }
    common::setxattr(&path, "security.capability", &capability, 0).unwrap();
    assert_eq!(
        common::getxattr(&path, "security.capability", 64).unwrap(),
        capability
    );
    as_nobody(
        "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.pwrite(fd, b'x', 0)",
        &path,
    );
    let gone = common::getxattr(&path, "security.capability", 64).unwrap_err();
    assert_eq!(errno_of(&gone), libc::ENODATA);
    assert_eq!(fs::read(&path).unwrap(), b"x!/bin/sh\n");
    // Removing it directly still needs the privilege: the kernel refuses.
    common::setxattr(&path, "security.capability", &capability, 0).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([
            python(),
            "-c",
            "import os, sys; os.removexattr(sys.argv[1], 'security.capability')",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success(), "removexattr by nobody succeeded");
    assert!(common::getxattr(&path, "security.capability", 64).is_ok());
    drop(File::open(&path).unwrap());
    mount.finish();
}

/// generic/193: chown of a regular file, by root too, drops set-user-id,
/// and set-group-id when group execute is set; a directory keeps both.
#[test]
fn chown_clears_the_set_id_bits_of_a_file() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let mut wrong = Vec::new();
    for (before, after) in [(0o6777, 0o777), (0o6766, 0o2766), (0o4766, 0o766)] {
        let path = mount.join(&format!("file-{before:o}"));
        fs::write(&path, b"data").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(before)).unwrap();
        std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        let now = mode(&path);
        if now != after {
            wrong.push(format!("chown of mode {before:o}: {now:o}, not {after:o}"));
        }
    }
    let directory = mount.join("directory");
    fs::create_dir(&directory).unwrap();
    fs::set_permissions(&directory, fs::Permissions::from_mode(0o6777)).unwrap();
    std::os::unix::fs::chown(&directory, Some(NOBODY), Some(NOBODY)).unwrap();
    if mode(&directory) != 0o6777 {
        wrong.push(format!("chown of a directory: {:o}", mode(&directory)));
    }
    assert!(wrong.is_empty(), "chown: {wrong:#?}");
    mount.finish();
}

/// A supplementary group counts as the caller's own wherever the
/// filesystem checks membership itself: its member may give a file of
/// theirs to it (and nobody else's), and a set-group-id file of that
/// group keeps the bit through chmod. The groups are looked up only when a
/// check asks, so this fails if the lookup is skipped.
#[test]
fn a_supplementary_group_counts_as_the_callers_own() {
    if !common::fuse_available() {
        return;
    }
    const MEMBER_OF: u32 = 4242;
    const NOT_MEMBER_OF: u32 = 4343;
    let mount = open_mount();
    let path = mount.join("shared");
    as_nobody_in_groups(
        &[MEMBER_OF],
        &format!(
            "import errno, os, sys\n\
             path = sys.argv[1]\n\
             open(path, 'w').close()\n\
             try:\n    os.chown(path, -1, {NOT_MEMBER_OF})\n\
             except PermissionError:\n    pass\n\
             else:\n    sys.exit('chown to a group not mine succeeded')\n\
             os.chown(path, -1, {MEMBER_OF})\n\
             os.chmod(path, 0o2755)\n"
        ),
        &path,
    );
    let metadata = fs::metadata(&path).unwrap();
    assert_eq!(metadata.gid(), MEMBER_OF);
    assert_eq!(mode(&path), 0o2755, "set-group-id kept by a member");
    mount.finish();
}

/// Data written through a shared mapping and not yet written back is data
/// to SEEK_DATA/SEEK_HOLE through another description: the engine sees
/// those pages only at their writeback, and `cp` and `tar --sparse` copied
/// zeros where the program had written. Once no other description may
/// write, the holes are the engine's again. The mapping is another
/// process's: a page fault in this one, whose threads serve the mount,
/// could wait on itself.
#[test]
fn pages_written_through_a_mapping_are_data_to_another_descriptions_seek() {
    if !common::fuse_available() {
        return;
    }
    const MIB: i64 = 1 << 20;
    let mount = Mount::new();
    let path = mount.join("mapped");
    let mut writer = Command::new(python())
        .args([
            "-c",
            "import mmap, os, sys\n\
             fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)\n\
             os.ftruncate(fd, 8 << 20)\n\
             mapping = mmap.mmap(fd, 8 << 20)\n\
             mapping[1 << 20:2 << 20] = b'D' * (1 << 20)\n\
             print('written', flush=True)\n\
             sys.stdin.read()\n\
             mapping.close()\n\
             os.close(fd)\n",
        ])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.as_mut().unwrap()),
        &mut said,
    )
    .unwrap();
    assert_eq!(said.trim(), "written");

    let reader = File::open(&path).unwrap();
    let data = common::lseek(&reader, 0, libc::SEEK_DATA).unwrap();
    assert!(data <= MIB, "SEEK_DATA skipped mapped data: {data}");
    let hole = common::lseek(&reader, MIB, libc::SEEK_HOLE).unwrap();
    assert!(hole >= 2 * MIB, "SEEK_HOLE inside mapped data: {hole}");

    drop(writer.stdin.take());
    assert!(writer.wait().unwrap().success());
    assert_eq!(
        common::lseek(&reader, 0, libc::SEEK_DATA).unwrap(),
        MIB,
        "with no writer left, the holes are reported again"
    );
    let mut copy = vec![0u8; MIB as usize];
    std::os::unix::fs::FileExt::read_exact_at(&reader, &mut copy, MIB as u64).unwrap();
    assert!(copy.iter().all(|&byte| byte == b'D'));
    drop(reader);
    mount.finish();
}

/// generic/126: a program of mode `--x` runs (exec needs execute
/// permission only), for its owner and for others; without execute it
/// does not, even with read.
#[test]
fn a_program_without_read_permission_runs() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let program = mount.join("program");
    fs::copy("/bin/true", &program).unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o111)).unwrap();
    let status = Command::new(&program).status().unwrap();
    assert!(status.success(), "root runs a --x program: {status}");
    let runs = |program: &Path| {
        Command::new("setpriv")
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
            ])
            .arg(program)
            .output()
            .unwrap()
    };
    let output = runs(&program);
    assert!(
        output.status.success(),
        "another user runs a --x program: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Owned by that user, execute for the owner only.
    std::os::unix::fs::chown(&program, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o100)).unwrap();
    assert!(
        runs(&program).status.success(),
        "the owner runs a --x------ program"
    );
    // Readable but not executable: refused.
    fs::set_permissions(&program, fs::Permissions::from_mode(0o444)).unwrap();
    assert!(!runs(&program).status.success(), "r-- ran");
    mount.finish();
}

/// generic/035: `fstat` on a directory still open after rmdir, or after a
/// rename replaced it, works and says it has no links; once closed it is
/// gone (and the image is consistent).
#[test]
fn a_removed_directory_stays_usable_while_open() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let removed = mount.join("removed");
    let (source, target) = (mount.join("source"), mount.join("target"));
    for directory in [&removed, &source, &target] {
        fs::create_dir(directory).unwrap();
    }
    let removed_handle = File::open(&removed).unwrap();
    let target_handle = File::open(&target).unwrap();
    let removed_ino = removed_handle.metadata().unwrap().ino();
    fs::remove_dir(&removed).unwrap();
    fs::rename(&source, &target).unwrap();
    for (what, handle) in [("rmdir", &removed_handle), ("rename", &target_handle)] {
        let status = handle
            .metadata()
            .unwrap_or_else(|error| panic!("fstat after {what}: {error}"));
        assert!(status.is_dir(), "after {what}");
        assert_eq!(status.nlink(), 0, "links after {what}");
    }
    // Nothing can be made in it.
    let refused = fs::create_dir(removed.join("inside")).unwrap_err();
    assert_eq!(errno_of(&refused), libc::ENOENT);
    drop(removed_handle);
    drop(target_handle);
    wait_until_deleted(&mount, removed_ino);
    mount.finish();
}

/// Waits (up to 5 s) until the engine has deleted `ino`: the kernel sends
/// releases and forgets after the system call that let go returns.
fn wait_until_deleted(mount: &Mount, ino: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while mount.engine().getattr(ino).is_ok() {
        assert!(Instant::now() < deadline, "inode {ino} is still there");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An inode the kernel still refers to outlives its last link: an
/// `O_PATH` descriptor (no open reaches the filesystem for it) still
/// stats and reopens the file through /proc, a working directory removed
/// under a process still stats; the inode goes when the kernel forgets it.
#[test]
fn an_unlinked_inode_the_kernel_still_refers_to_stays_usable() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let file = mount.join("file");
    fs::write(&file, b"hello").unwrap();
    let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_PATH) };
    assert!(raw >= 0);
    // SAFETY: a descriptor just opened and owned by nothing else. Owned, it
    // is closed when a failed assertion unwinds, which lets the mount go.
    let descriptor = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let ino = fs::metadata(&file).unwrap().ino();
    fs::remove_file(&file).unwrap();
    let reopened = format!("/proc/self/fd/{}", descriptor.as_raw_fd());
    let status = fs::metadata(&reopened).unwrap();
    assert_eq!((status.nlink(), status.len()), (0, 5));
    assert_eq!(fs::read(&reopened).unwrap(), b"hello");

    let directory = mount.join("directory");
    fs::create_dir(&directory).unwrap();
    let inside = "import os, sys\nos.chdir(sys.argv[1])\nos.rmdir(sys.argv[1])\n\
                  print(os.stat('.').st_nlink, len(os.listdir('.')))";
    let output = Command::new(python())
        .args(["-c", inside])
        .arg(&directory)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "0 0");

    drop(descriptor);
    wait_until_deleted(&mount, ino);
    mount.finish();
}

/// Replacing a file by renaming another over it is atomic for readers: an
/// open of the name finds the old file or the new one, never nothing (the
/// kernel's lookup of the old file comes before its open, and the rename
/// between them must not delete what the lookup found).
#[test]
fn a_rename_over_a_file_never_fails_a_concurrent_open() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let (name, staged) = (mount.join("config"), mount.join("config.new"));
    fs::write(&name, b"version 0").unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut reads = 0u64;
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        let contents =
                            fs::read(&name).unwrap_or_else(|error| panic!("read {reads}: {error}"));
                        assert!(contents.starts_with(b"version "));
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for round in 1..=2000 {
            fs::write(&staged, format!("version {round}")).unwrap();
            fs::rename(&staged, &name).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    });
    mount.finish();
}

/// The status change time of `path`, in nanoseconds.
fn ctime(path: &Path) -> i128 {
    let status = fs::metadata(path).unwrap();
    i128::from(status.ctime()) * 1_000_000_000 + i128::from(status.ctime_nsec())
}

/// generic/003, 423: chmod, link and rename change a file's ctime while it
/// has data not written back yet, and the writeback does not set it back
/// to the time of the write.
#[test]
fn ctime_changes_with_chmod_link_and_rename_of_a_file_with_dirty_data() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let path = mount.join("file");
    let file = File::create(&path).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, b"not yet written back", 0).unwrap();
    let pause = || std::thread::sleep(Duration::from_millis(20));
    let written = ctime(&path);
    pause();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let chmodded = ctime(&path);
    assert!(chmodded > written, "chmod: {written} -> {chmodded}");
    pause();
    fs::hard_link(&path, mount.join("link")).unwrap();
    let linked = ctime(&path);
    assert!(linked > chmodded, "link: {chmodded} -> {linked}");
    pause();
    let renamed_path = mount.join("renamed");
    fs::rename(&path, &renamed_path).unwrap();
    let renamed = ctime(&renamed_path);
    assert!(renamed > linked, "rename: {linked} -> {renamed}");
    common::fsync(&file).unwrap();
    drop(file);
    assert_eq!(ctime(&renamed_path), renamed, "after the writeback");
    // What the writeback stored, not a time the kernel kept.
    let ino = fs::metadata(&renamed_path).unwrap().ino();
    let stored = mount.engine().getattr(ino).unwrap().record.ctime;
    let stored = i128::from(stored.seconds) * 1_000_000_000 + i128::from(stored.nanoseconds);
    assert_eq!(stored, renamed, "the ctime written back");
    mount.finish();
}

/// FALLOC_FL_ZERO_RANGE (generic/008, 009 and others): zeroes the range,
/// partial pages included, and grows the size unless KEEP_SIZE.
#[test]
fn fallocate_zero_range_zeroes_the_range() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let path = mount.join("file");
    fs::write(&path, vec![0xaau8; 16384]).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    common::fallocate(&file, libc::FALLOC_FL_ZERO_RANGE, 100, 8000).unwrap();
    let mut expected = vec![0xaau8; 16384];
    expected[100..8100].fill(0);
    assert_eq!(fs::read(&path).unwrap(), expected);
    common::fallocate(&file, libc::FALLOC_FL_ZERO_RANGE, 16000, 4000).unwrap();
    expected[16000..].fill(0);
    expected.resize(20000, 0);
    assert_eq!(fs::read(&path).unwrap(), expected);
    let keep = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
    common::fallocate(&file, keep, 20000, 4096).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 20000);
    drop(file);
    mount.finish();
}

/// The access time of `path`, in seconds.
fn atime(path: &Path) -> i64 {
    fs::metadata(path).unwrap().atime()
}

/// A file of `contents` whose access time is 1,000 s after the epoch and
/// modification time 2,000 s (so relatime updates it at the next read).
fn file_read_long_ago(mount: &Mount, name: &str) -> std::path::PathBuf {
    let path = mount.join(name);
    fs::write(&path, b"aaa\n").unwrap();
    let at = |seconds| libc::timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    };
    common::utimensat(&path, at(1000), at(2000)).unwrap();
    assert_eq!(atime(&path), 1000);
    path
}

/// generic/003, 192: a read updates the access time (relatime by
/// default: the access time was before the modification time); with
/// `noatime` it does not; an access does not change the ctime.
#[test]
fn a_read_updates_the_access_time_unless_noatime() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let path = file_read_long_ago(&mount, "file");
    let changed = ctime(&path);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(fs::read(&path).unwrap(), b"aaa\n");
    let accessed = atime(&path);
    assert!(
        u64::try_from(accessed).unwrap() >= before,
        "relatime: the read set the access time ({accessed}, before {before})"
    );
    assert_eq!(ctime(&path), changed, "an access is not a change");
    mount.finish();

    let mount = Mount::with_options(vigilfs::fs::MountOptions {
        atime: vigilfs::fs::AtimeUpdates::Never,
        ..vigilfs::fs::MountOptions::default()
    });
    let path = file_read_long_ago(&mount, "file");
    assert_eq!(fs::read(&path).unwrap(), b"aaa\n");
    assert_eq!(atime(&path), 1000, "noatime");
    mount.finish();
}

/// A read the kernel's page cache answers updates the access time too,
/// when relatime says it is due: the file's pages cached by a first read,
/// its access time set back before its modification time, the next read
/// (another open, as `cat` does) sets it again. It stayed in the past,
/// so a mail reader's "new mail" check never saw the mail read (review
/// 40). Once updated, later opens keep the cache.
#[test]
fn a_read_from_the_page_cache_updates_an_access_time_relatime_finds_due() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let path = file_read_long_ago(&mount, "file");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(fs::read(&path).unwrap(), b"aaa\n");
    assert!(u64::try_from(atime(&path)).unwrap() >= before);
    let at = |seconds| libc::timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    };
    common::utimensat(&path, at(1000), at(2000)).unwrap();
    assert_eq!(atime(&path), 1000);
    assert_eq!(fs::read(&path).unwrap(), b"aaa\n");
    let accessed = atime(&path);
    assert!(
        u64::try_from(accessed).unwrap() >= before,
        "relatime: the cached read set the access time ({accessed}, before {before})"
    );
    mount.finish();
}

/// Listing a directory is a read of it: relatime updates its access time
/// (the access was before the last change), `nodiratime` does not.
#[test]
fn listing_a_directory_updates_its_access_time_unless_nodiratime() {
    if !common::fuse_available() {
        return;
    }
    let listed_long_ago = |mount: &Mount| {
        let dir = mount.join("dir");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("entry"), b"x").unwrap();
        let at = |seconds| libc::timespec {
            tv_sec: seconds,
            tv_nsec: 0,
        };
        common::utimensat(&dir, at(1000), at(2000)).unwrap();
        assert_eq!(atime(&dir), 1000);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["entry"]);
        atime(&dir)
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mount = open_mount();
    let accessed = listed_long_ago(&mount);
    assert!(
        u64::try_from(accessed).unwrap() >= before,
        "relatime: the listing set the access time ({accessed}, before {before})"
    );
    mount.finish();

    let mount = Mount::with_options(vigilfs::fs::MountOptions {
        directory_atime: false,
        ..vigilfs::fs::MountOptions::default()
    });
    assert_eq!(listed_long_ago(&mount), 1000, "nodiratime");
    mount.finish();
}

/// generic/213 and the sparse-file tests: `st_blocks` counts the blocks
/// allocated, not the size — a hole counts nothing, dirty data over a
/// hole counts before it is written back, fallocated blocks count.
#[test]
fn st_blocks_counts_allocated_blocks_not_holes() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let blocks = |path: &Path| fs::metadata(path).unwrap().blocks();
    let sparse = mount.join("sparse");
    let file = File::create(&sparse).unwrap();
    file.set_len(1 << 20).unwrap();
    assert_eq!(blocks(&sparse), 0, "a 1 MiB hole");
    // Two blocks of data in the middle: 16 sectors, before and after the
    // writeback.
    std::os::unix::fs::FileExt::write_at(&file, &[1u8; 8192], 256 << 10).unwrap();
    assert_eq!(blocks(&sparse), 16, "dirty data over a hole");
    common::fsync(&file).unwrap();
    assert_eq!(blocks(&sparse), 16, "written back");
    // Fallocated blocks count; a punched hole gives them back.
    common::fallocate(&file, 0, 0, 4096).unwrap();
    assert_eq!(blocks(&sparse), 24, "fallocated");
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    common::fallocate(&file, punch, 0, 1 << 20).unwrap();
    assert_eq!(blocks(&sparse), 0, "all punched");
    drop(file);
    mount.finish();
}

/// generic/184, 633: a mount made by root honours device nodes and set-id
/// bits (`dev,suid`, as other filesystems) unless `nodev`/`nosuid` are
/// asked for: a character device made on the mount opens as the device.
#[test]
fn a_root_mount_is_dev_and_suid_unless_told_otherwise() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let flags = common::statvfs(mount.path()).unwrap().f_flag;
    assert_eq!(flags & libc::ST_NOSUID, 0, "suid by default");
    assert_eq!(flags & libc::ST_NODEV, 0, "dev by default");
    let null = mount.join("null");
    common::mknod(&null, libc::S_IFCHR | 0o666, libc::makedev(1, 3)).unwrap();
    fs::write(&null, b"into /dev/null").expect("the device node opens");
    assert_eq!(fs::read(&null).unwrap(), b"", "reads as /dev/null");
    mount.finish();

    let (filesystem, _device) = common::fresh_engine(vigilfs::fs::MountOptions::default());
    let directory = tempfile::tempdir().unwrap();
    let config = vigilfs_fuse::MountConfig {
        set_id: Some(false),
        devices: Some(false),
        ..vigilfs_fuse::MountConfig::default()
    };
    let mounted = vigilfs_fuse::mount(
        std::sync::Arc::clone(&filesystem),
        directory.path(),
        &config,
    )
    .unwrap();
    let flags = common::statvfs(directory.path()).unwrap().f_flag;
    assert_ne!(flags & libc::ST_NOSUID, 0, "nosuid asked");
    assert_ne!(flags & libc::ST_NODEV, 0, "nodev asked");
    let null = directory.path().join("null");
    common::mknod(&null, libc::S_IFCHR | 0o666, libc::makedev(1, 3)).unwrap();
    let refused = fs::write(&null, b"x").unwrap_err();
    assert_eq!(errno_of(&refused), libc::EACCES, "nodev");
    mounted.unmount().unwrap();
    std::sync::Arc::try_unwrap(filesystem)
        .map_err(|_| "still shared")
        .unwrap()
        .unmount()
        .unwrap();
}

/// generic/020, 486: extended attribute values up to 64 KiB (Linux's
/// limit, as XFS and ext4 keep), read back whole after a remount; beyond
/// that, E2BIG.
#[test]
fn xattr_values_up_to_64_kib_work() {
    if !common::fuse_available() {
        return;
    }
    let mut mount = open_mount();
    let path = mount.join("file");
    fs::write(&path, b"data").unwrap();
    let value: Vec<u8> = (0..65536).map(|i| (i % 253) as u8).collect();
    for length in [1024, 4000, 65536] {
        common::setxattr(&path, "user.big", &value[..length], 0).unwrap();
        assert_eq!(common::getxattr_size(&path, "user.big").unwrap(), length);
        assert_eq!(
            common::getxattr(&path, "user.big", 65536).unwrap(),
            &value[..length]
        );
    }
    let too_large = vec![1u8; 65537];
    let refused = common::setxattr(&path, "user.big", &too_large, 0).unwrap_err();
    assert_eq!(errno_of(&refused), libc::E2BIG);
    mount.remount();
    let path = mount.join("file");
    assert_eq!(common::getxattr(&path, "user.big", 65536).unwrap(), value);
    assert_eq!(common::listxattr(&path).unwrap(), ["user.big"]);
    mount.finish();
}

/// Review 31: attribute names over 120 bytes were ERANGE, so `cp -a` and
/// `tar --xattrs` of a file from ext4 lost them. Names up to Linux's 255
/// bytes work through the mount, with large values, across a remount;
/// 256 bytes is the kernel's ERANGE.
#[test]
fn xattr_names_up_to_255_bytes_work() {
    if !common::fuse_available() {
        return;
    }
    let mut mount = open_mount();
    let path = mount.join("file");
    fs::write(&path, b"data").unwrap();
    let name = |length: usize| format!("user.{}", "n".repeat(length - 5));
    let value: Vec<u8> = (0..20000).map(|i| (i % 251) as u8).collect();
    for (length, size) in [(121, 10), (200, 20000), (255, 3000)] {
        common::setxattr(&path, &name(length), &value[..size], 0).unwrap();
    }
    let refused = common::setxattr(&path, &name(256), b"v", 0).unwrap_err();
    assert_eq!(errno_of(&refused), libc::ERANGE);
    mount.remount();
    let path = mount.join("file");
    for (length, size) in [(121, 10), (200, 20000), (255, 3000)] {
        assert_eq!(
            common::getxattr(&path, &name(length), 65536).unwrap(),
            &value[..size]
        );
    }
    assert_eq!(
        common::listxattr(&path).unwrap(),
        [name(121), name(200), name(255)]
    );
    mount.finish();
}

/// `FS_IOC_SHUTDOWN` (`godown`, `xfs_io -c shutdown`), as the calling
/// user: the ioctl's result.
fn shutdown_ioctl(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    let mut flags: u32 = 2; // FS_GOING_DOWN_NOSYNC: never reaches a FUSE server.
                            // SAFETY: a valid descriptor and a pointer to a live u32 for the call.
    let result = unsafe { libc::ioctl(AsRawFd::as_raw_fd(&file), 0x8004_587d, &mut flags) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// fstests shuts filesystems down with `FS_IOC_SHUTDOWN` (28 tests need
/// it): root may, on any file or directory of the mount; others get
/// `EPERM`; what was written before is flushed; then writes fail with
/// `EIO`. Any other ioctl is `ENOTTY`.
#[test]
fn the_shutdown_ioctl_shuts_the_filesystem_down() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let kept = mount.join("kept");
    fs::write(&kept, b"written before the shutdown").unwrap();
    fs::set_permissions(&kept, fs::Permissions::from_mode(0o666)).unwrap();
    as_nobody(
        "import errno, fcntl, os, sys\n\
         fd = os.open(sys.argv[1], os.O_RDONLY)\n\
         try:\n    fcntl.ioctl(fd, 0x8004587d, b'\\0\\0\\0\\0')\n    sys.exit('nobody shut it down')\n\
         except OSError as e:\n    assert e.errno == errno.EPERM, e",
        &kept,
    );
    assert!(fs::write(mount.join("still"), b"running").is_ok());
    let unknown = File::open(&kept).unwrap();
    let mut ignored = [0u8; 64];
    // SAFETY: a valid descriptor and a writable buffer larger than the
    // ioctl's argument (TCGETS asks for a termios).
    let result = unsafe {
        libc::ioctl(
            AsRawFd::as_raw_fd(&unknown),
            libc::TCGETS,
            ignored.as_mut_ptr(),
        )
    };
    assert_eq!(result, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
    drop(unknown);

    shutdown_ioctl(mount.path()).expect("root shuts the filesystem down");
    assert!(matches!(
        mount.engine().status().state,
        vigilfs::fs::LifeState::ShutDown(_)
    ));
    let refused = fs::write(mount.join("after"), b"too late").unwrap_err();
    assert_eq!(errno_of(&refused), libc::EIO);
    // Shutting down again is no error (XFS answers 0 too).
    shutdown_ioctl(&kept).expect("a second shutdown");
    // What was written before it was flushed first.
    let mut mount = mount;
    mount.remount();
    assert_eq!(fs::read(&kept).unwrap(), b"written before the shutdown");
    assert!(fs::metadata(mount.join("still")).is_ok());
    mount.finish();
}

/// A `struct file_handle` with room for any handle (`MAX_HANDLE_SZ`).
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    handle: [u8; 128],
}

fn name_to_handle(path: &Path) -> FileHandle {
    let mut handle = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        handle: [0; 128],
    };
    let mut mount_id = 0;
    let path = common::c_path(path);
    // SAFETY: a valid path string, a handle buffer with `handle_bytes` of
    // room, and a writable mount id, all live for the call.
    let result = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            path.as_ptr(),
            std::ptr::addr_of_mut!(handle).cast(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(
        result,
        0,
        "name_to_handle_at: {}",
        std::io::Error::last_os_error()
    );
    handle
}

fn open_by_handle(mount: &File, handle: &mut FileHandle) -> std::io::Result<File> {
    // SAFETY: a valid descriptor and a handle filled by name_to_handle_at.
    let fd = unsafe {
        libc::open_by_handle_at(
            AsRawFd::as_raw_fd(mount),
            std::ptr::addr_of_mut!(*handle).cast(),
            libc::O_RDONLY,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nobody else.
    Ok(unsafe { <File as FromRawFd>::from_raw_fd(fd) })
}

/// Makes the kernel drop its (unused) inodes and waits until it has told
/// the engine it forgot `inodes`.
fn kernel_forgets(mount: &Mount, inodes: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        fs::write("/proc/sys/vm/drop_caches", b"2").unwrap();
        if inodes
            .iter()
            .all(|&ino| mount.engine().lookup_count(ino) == 0)
        {
            return;
        }
        assert!(Instant::now() < deadline, "the kernel kept {inodes:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// generic/426, 467, 477, 756, 777: a file handle opens its file after
/// the kernel dropped the inode from its cache (it asks vigilfs for the
/// number again), a directory's too, and a handle of a deleted file is
/// `ESTALE`.
#[test]
fn file_handles_outlive_the_kernel_s_inode_cache() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let kept = mount.join("kept");
    let gone = mount.join("gone");
    let directory = mount.join("directory");
    fs::write(&kept, b"found by its handle").unwrap();
    fs::write(&gone, b"deleted").unwrap();
    fs::create_dir(&directory).unwrap();
    let inodes: Vec<u64> = [&kept, &gone, &directory]
        .iter()
        .map(|path| fs::metadata(path).unwrap().ino())
        .collect();
    let mut kept_handle = name_to_handle(&kept);
    let mut gone_handle = name_to_handle(&gone);
    let mut directory_handle = name_to_handle(&directory);
    fs::remove_file(&gone).unwrap();
    let root = File::open(mount.path()).unwrap();
    kernel_forgets(&mount, &inodes);

    let mut file = open_by_handle(&root, &mut kept_handle).expect("the kept file's handle");
    let mut contents = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut contents).unwrap();
    assert_eq!(contents, b"found by its handle");
    let opened_directory =
        open_by_handle(&root, &mut directory_handle).expect("the directory's handle");
    assert!(opened_directory.metadata().unwrap().is_dir());
    let stale = open_by_handle(&root, &mut gone_handle).unwrap_err();
    assert_eq!(stale.raw_os_error(), Some(libc::ESTALE));
    drop((file, opened_directory, root));
    mount.finish();
}

/// Direct I/O misaligned in offset or length is refused with EINVAL, as on
/// Linux's disk filesystems (a program tested here must meet the refusal it
/// meets there); aligned direct I/O works; a descriptor whose `O_DIRECT`
/// was cleared by `fcntl` writes anywhere again; and the kernel's write-back
/// of a shared mapping of a file opened `O_DIRECT`, which ends mid-sector
/// at the end of the file, is not refused.
#[test]
fn misaligned_direct_io_is_refused_as_on_a_disk() {
    if !common::fuse_available() {
        return;
    }
    let mount = open_mount();
    let path = mount.join("direct");
    let code = r#"
import errno, fcntl, mmap, os, sys
path = sys.argv[1]
fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
buffer = mmap.mmap(-1, 8192)
buffer.write(b"d" * 8192)
def refused(call):
    try:
        call()
    except OSError as error:
        return error.errno
    return None
view = memoryview(buffer)
assert os.pwritev(fd, [view[:4096]], 0) == 4096
assert os.pwritev(fd, [view[:512]], 4096) == 512
assert refused(lambda: os.pwritev(fd, [view[:100]], 0)) == errno.EINVAL
assert refused(lambda: os.pwritev(fd, [view[:4096]], 100)) == errno.EINVAL
assert refused(lambda: os.preadv(fd, [view[:4096]], 100)) == errno.EINVAL
assert refused(lambda: os.preadv(fd, [view[:100]], 0)) == errno.EINVAL
assert os.preadv(fd, [view[:8192]], 0) == 4608
flags = fcntl.fcntl(fd, fcntl.F_GETFL)
fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
assert os.pwrite(fd, b"buffered", 3) == 8
os.close(fd)
# The only writable descriptor is in O_DIRECT mode: the mapping's
# write-back goes through it, 1,000 bytes at the end of the file.
fd = os.open(path, os.O_RDWR | os.O_DIRECT)
os.ftruncate(fd, 1000)
mapping = mmap.mmap(fd, 1000)
mapping[:3] = b"map"
mapping.flush()
mapping.close()
os.close(fd)
with open(path, "rb") as file:
    assert file.read(11) == b"mapbuffered", "the mapping's write-back landed"
"#;
    let output = Command::new(python())
        .args(["-c", code])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    mount.finish();
}
