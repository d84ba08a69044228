//! The `vigilfs` binary as a user runs it: exit codes, messages, and that
//! nothing is lost on bad input.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn vigilfs(arguments: &[&str], directory: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigilfs"))
        .args(arguments)
        .current_dir(directory)
        .output()
        .expect("the vigilfs binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn mkfs_creates_a_sparse_image_that_fsck_finds_clean() {
    let directory = tempfile::tempdir().unwrap();
    let made = vigilfs(&["mkfs", "disk.img", "--size", "64M"], directory.path());
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    assert!(text(&made.stdout).contains("UUID"));
    let image = directory.path().join("disk.img");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 64 << 20);

    let checked = vigilfs(&["fsck", "disk.img"], directory.path());
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stdout));
    assert!(text(&checked.stdout).contains("clean"));
}

/// A mount over the root directory, a directory of the system's own, or
/// a kernel filesystem's mount point is refused before anything is made:
/// mounted over, the system would lose what it runs on (nothing stopped
/// `vigilfs mount disk.img /proc`).
#[test]
fn a_mount_over_the_systems_own_directories_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    // Where the kernel's devpts is mounted, if it is: refused for that.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let devpts = mountinfo
        .lines()
        .any(|line| line.contains(" /dev/pts ") && line.contains(" - devpts "));
    let mut mountpoints = vec!["/", "/proc", "/usr"];
    if devpts {
        mountpoints.push("/dev/pts");
    }
    for mountpoint in mountpoints {
        let refused = vigilfs(
            &["mount", "disk.img", mountpoint, "--daemon"],
            directory.path(),
        );
        let said = text(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{mountpoint}: {said}");
        assert!(
            said.contains("would hide what the system runs on"),
            "{said}"
        );
        assert!(!directory.path().join("disk.img").exists(), "{mountpoint}");
    }
}

/// An empty file holds nothing to protect, and a link to nothing is not
/// a file that exists: mkfs said the first held a damaged filesystem
/// (pushing toward --force) and both it and mount called the second
/// "File exists".
#[test]
fn mkfs_of_an_empty_file_formats_it_and_a_dangling_link_is_named() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("empty"), b"").unwrap();
    let made = vigilfs(&["mkfs", "empty", "--size", "64M"], directory.path());
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    // A cut-off image is still one: refused without --force.
    let whole = std::fs::read(directory.path().join("empty")).unwrap();
    std::fs::write(directory.path().join("cut"), &whole[..8192]).unwrap();
    let refused = vigilfs(&["mkfs", "cut", "--size", "64M"], directory.path());
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("--force"));
    std::os::unix::fs::symlink("nowhere/image", directory.path().join("dangling")).unwrap();
    for arguments in [
        &["mkfs", "dangling"][..],
        &["mount", "dangling", "mnt", "--daemon"][..],
    ] {
        let refused = vigilfs(arguments, directory.path());
        assert_ne!(refused.status.code(), Some(0), "{arguments:?}");
        let message = text(&refused.stderr);
        assert!(
            message.contains("symbolic link to nowhere/image"),
            "{arguments:?}: {message}"
        );
        assert!(!directory.path().join("mnt").exists(), "{arguments:?}");
    }
}

#[test]
fn mkfs_on_an_image_others_can_read_warns() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("shared.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();
    let made = vigilfs(&["mkfs", "shared.img"], directory.path());
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    assert!(
        text(&made.stderr).contains("readable by others (mode 0644)"),
        "{}",
        text(&made.stderr)
    );
    // A new image is its owner's alone, and says nothing.
    let made = vigilfs(&["mkfs", "new.img", "--size", "64M"], directory.path());
    assert!(!text(&made.stderr).contains("readable by others"));
}

#[test]
fn mkfs_without_size_makes_a_one_gibibyte_image() {
    let directory = tempfile::tempdir().unwrap();
    let made = vigilfs(&["mkfs", "default.img"], directory.path());
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    let length = std::fs::metadata(directory.path().join("default.img"))
        .unwrap()
        .len();
    assert_eq!(length, 1 << 30);
}

#[test]
fn mkfs_refuses_to_overwrite_a_filesystem_unless_forced() {
    let directory = tempfile::tempdir().unwrap();
    vigilfs(&["mkfs", "disk.img", "--size", "32M"], directory.path());
    let before = std::fs::read(directory.path().join("disk.img")).unwrap();
    let refused = vigilfs(&["mkfs", "disk.img"], directory.path());
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(directory.path().join("disk.img")).unwrap(),
        before
    );

    // A vigilfs filesystem with its primary damaged is still one (its
    // backups hold it): refused too.
    let mut damaged = before.clone();
    damaged[4096 + 40] ^= 0xff;
    std::fs::write(directory.path().join("disk.img"), &damaged).unwrap();
    let refused = vigilfs(&["mkfs", "disk.img"], directory.path());
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let mut damaged = before.clone();
    damaged[4096..4096 + 4096].fill(0);
    let end = damaged.len();
    damaged[end - 64 * 1024 + 200] ^= 0xff;
    damaged[end - 4096 + 200] ^= 0xff;
    std::fs::write(directory.path().join("disk.img"), &damaged).unwrap();
    let refused = vigilfs(&["mkfs", "disk.img"], directory.path());
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("cannot be read"),
        "{}",
        text(&refused.stderr)
    );

    let forced = vigilfs(&["mkfs", "disk.img", "--force"], directory.path());
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert_ne!(
        std::fs::read(directory.path().join("disk.img")).unwrap(),
        before
    );

    // Another filesystem (ext4's magic at 1080) is not overwritten by
    // mistake either, and once it is, its signature is gone with it.
    let ext4 = directory.path().join("ext4.img");
    let mut image = vec![0u8; 32 << 20];
    image[1080..1082].copy_from_slice(&[0x53, 0xEF]);
    std::fs::write(&ext4, &image).unwrap();
    let refused = vigilfs(&["mkfs", "ext4.img"], directory.path());
    assert_eq!(refused.status.code(), Some(1));
    let message = text(&refused.stderr);
    assert!(
        message.contains("ext2/3/4") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(std::fs::read(&ext4).unwrap(), image);
    let forced = vigilfs(&["mkfs", "ext4.img", "--force"], directory.path());
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert_eq!(&std::fs::read(&ext4).unwrap()[1080..1082], &[0, 0]);
}

/// A label that could not be printed as it is, or not stored, is the
/// command line's fault (2), and nothing is made.
#[test]
fn mkfs_refuses_labels_too_long_or_with_control_characters() {
    let directory = tempfile::tempdir().unwrap();
    for label in [
        "x\u{1b}[31mred",
        "two\nlines",
        "a\u{202e}b",
        "a\u{2028}b",
        &"a".repeat(65),
    ] {
        let failed = vigilfs(
            &["mkfs", "labelled.img", "--size", "4M", "--label", label],
            directory.path(),
        );
        assert_eq!(failed.status.code(), Some(2), "{}", text(&failed.stderr));
        assert!(!directory.path().join("labelled.img").exists());
    }
    let made = vigilfs(
        &[
            "mkfs",
            "labelled.img",
            "--size",
            "4M",
            "--label",
            "données 1",
        ],
        directory.path(),
    );
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
}

#[test]
fn failed_mkfs_leaves_no_image_behind() {
    let directory = tempfile::tempdir().unwrap();
    // A size that holds no filesystem is the command line's fault (2), for
    // mkfs and for the commands that make an image of their own.
    let failed = vigilfs(&["mkfs", "tiny.img", "--size", "100K"], directory.path());
    assert_eq!(failed.status.code(), Some(2));
    assert!(text(&failed.stderr).contains("too small"));
    assert!(!directory.path().join("tiny.img").exists());
    // The size given is named, not the whole sectors it rounds down to
    // (`--size 1` said "device of 0 bytes").
    let failed = vigilfs(&["mkfs", "tiny.img", "--size", "1"], directory.path());
    assert_eq!(failed.status.code(), Some(2));
    let said = text(&failed.stderr);
    assert!(said.contains("--size 1 bytes is too small"), "{said}");
    // The smallest size it names works (it named a rounded-up 3M).
    let smallest = said
        .split("needs at least ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no smallest size in {said:?}"));
    let made = vigilfs(&["mkfs", "small.img", "--size", smallest], directory.path());
    assert_eq!(
        made.status.code(),
        Some(0),
        "{smallest}: {}",
        text(&made.stderr)
    );
    let smaller = format!(
        "{}K",
        smallest.trim_end_matches('K').parse::<u64>().unwrap() - 4
    );
    let refused = vigilfs(
        &["mkfs", "smaller.img", "--size", &smaller],
        directory.path(),
    );
    assert_eq!(refused.status.code(), Some(2), "{smaller}");
    let failed = vigilfs(
        &[
            "crash-test",
            "--workload",
            "true",
            "--check",
            "true",
            "--size",
            "1K",
        ],
        directory.path(),
    );
    assert_eq!(failed.status.code(), Some(2), "{}", text(&failed.stderr));
    assert!(text(&failed.stderr).contains("too small"));
    // A size no file can have: the file just made goes again.
    let failed = vigilfs(
        &["mkfs", "huge.img", "--size", "16000000T"],
        directory.path(),
    );
    assert_eq!(failed.status.code(), Some(8));
    assert!(
        text(&failed.stderr).contains("cannot be made"),
        "{}",
        text(&failed.stderr)
    );
    assert!(!directory.path().join("huge.img").exists());
    // A block size no mount serves is refused before anything is made.
    let refused = vigilfs(
        &["mkfs", "big-blocks.img", "--block-size", "65536"],
        directory.path(),
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("4096"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!directory.path().join("big-blocks.img").exists());
}

/// A sparse image larger than its host's free space is made, and said to
/// be so at once: only a mount's log said it, which nobody reads with
/// `--daemon` and no `--log-file` (review 21).
#[test]
fn a_sparse_image_larger_than_its_host_is_made_with_a_warning() {
    let directory = tempfile::tempdir().unwrap();
    let free = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(directory.path())
        .output()
        .unwrap();
    let free: u64 = text(&free.stdout)
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .expect("df's available bytes");
    // Twice the free space, in whole MiB.
    let size = format!("{}M", free / (1 << 20) * 2);
    let made = vigilfs(&["mkfs", "sparse.img", "--size", &size], directory.path());
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    assert!(
        text(&made.stderr).contains("may grow by") && text(&made.stderr).contains("free"),
        "{}",
        text(&made.stderr)
    );
}

#[test]
fn an_image_that_is_a_fifo_or_a_directory_is_refused_at_once() {
    let directory = tempfile::tempdir().unwrap();
    let fifo = directory.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::fs::create_dir(directory.path().join("dir")).unwrap();
    for (image, what) in [("fifo", "a FIFO"), ("dir", "a directory")] {
        for command in [&["fsck", image][..], &["mkfs", image, "--force"]] {
            // Opening a FIFO used to wait for a writer for good.
            let started = Instant::now();
            let output = vigilfs(command, directory.path());
            assert!(started.elapsed() < Duration::from_secs(10));
            assert_eq!(output.status.code(), Some(8), "{command:?}");
            assert!(
                text(&output.stderr).contains(what),
                "{command:?}: {}",
                text(&output.stderr)
            );
        }
    }
}

#[test]
fn bad_size_is_a_usage_error_naming_the_problem() {
    let directory = tempfile::tempdir().unwrap();
    let refused = vigilfs(&["mkfs", "x.img", "--size", "12Q"], directory.path());
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("unknown size suffix"));
    assert!(!directory.path().join("x.img").exists());
}

#[test]
fn fsck_exit_codes_follow_fsck_8() {
    let directory = tempfile::tempdir().unwrap();
    vigilfs(&["mkfs", "disk.img", "--size", "32M"], directory.path());

    // Damage the primary superblock (it starts at 4 KiB): errors left, exit 4.
    let image = directory.path().join("disk.img");
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[4096 + 40] ^= 0xFF;
    std::fs::write(&image, &bytes).unwrap();
    let damaged = vigilfs(&["fsck", "disk.img", "--json"], directory.path());
    assert_eq!(damaged.status.code(), Some(4));
    let report: serde_json::Value = serde_json::from_slice(&damaged.stdout).unwrap();
    assert_eq!(report["clean"], false);
    assert_eq!(report["exit_code"], 4);
    assert_eq!(report["problems"][0]["structure"], "superblock (primary)");

    // Not an image at all: operational error, exit 8.
    let missing = vigilfs(&["fsck", "missing.img"], directory.path());
    assert_eq!(missing.status.code(), Some(8));
    // Every command that reads a missing image or mount point says so alike.
    for command in ["events", "status", "sync", "scrub"] {
        let missing = vigilfs(&[command, "missing.img"], directory.path());
        assert_eq!(
            missing.status.code(),
            Some(8),
            "{command}: {}",
            text(&missing.stderr)
        );
    }
    std::fs::write(directory.path().join("zeros.img"), vec![0u8; 8 << 20]).unwrap();
    let zeros = vigilfs(&["fsck", "zeros.img"], directory.path());
    assert_eq!(zeros.status.code(), Some(8));
    assert!(text(&zeros.stderr).contains("no valid superblock: this is not a vigilfs image"));
}

#[test]
fn every_command_has_help() {
    let directory = tempfile::tempdir().unwrap();
    for command in [
        "mkfs",
        "fsck",
        "mount",
        "status",
        "sync",
        "freeze",
        "thaw",
        "shutdown",
        "inject",
        "demo",
        "install-mount-helper",
    ] {
        let help = vigilfs(&[command, "--help"], directory.path());
        assert_eq!(help.status.code(), Some(0), "{command}");
        let help = text(&help.stdout);
        assert!(help.contains("Usage"), "{command}: {help}");
        assert!(
            help.contains("Example"),
            "{command} --help has examples: {help}"
        );
    }
    let help = text(&vigilfs(&["--help"], directory.path()).stdout);
    assert!(help.contains("inject"));
    let status_help = text(&vigilfs(&["status", "--help"], directory.path()).stdout);
    for field in ["writeback_error", "fault_rules", "per_kind", "state_reason"] {
        assert!(
            status_help.contains(field),
            "status --help documents {field}"
        );
    }
    let inject_help = text(&vigilfs(&["inject", "--help"], directory.path()).stdout);
    for form in [
        "--fail-writes --class data",
        "--fail-writes --class all",
        "--fail-reads --range",
        "--clear",
    ] {
        assert!(inject_help.contains(form), "inject --help shows {form}");
    }
}

#[test]
fn control_commands_without_a_mount_fail_clearly() {
    let directory = tempfile::tempdir().unwrap();
    for command in ["status", "sync", "freeze", "thaw", "shutdown"] {
        let output = vigilfs(&[command, "."], directory.path());
        assert_eq!(output.status.code(), Some(8), "{command}");
        assert!(
            text(&output.stderr).contains("no vigilfs mount is served there"),
            "{command}: {}",
            text(&output.stderr)
        );
    }
    // Bad inject lines are refused before anything is sent.
    for arguments in [
        &["inject", ".", "--fail-writes", "--class", "bogus"][..],
        &["inject", ".", "--fail-reads", "--range", "10"],
        &["inject", ".", "--list", "--clear"],
        &["inject", "."],
        // The kernel refuses a FUSE reply carrying errno 512 or more, and
        // the caller would wait for good.
        &["inject", ".", "--op", "unlink", "--errno", "99999"],
        &["inject", ".", "--fail-writes", "--errno", "512"],
        // The kernel reads ENOSYS as "no such operation" and stops asking
        // for it on the whole mount: fsync would then succeed unasked.
        &["inject", ".", "--op", "fsync", "--errno", "ENOSYS"],
        &[
            "inject",
            ".",
            "--fail-writes",
            "--class",
            "data",
            "--errno",
            "38",
        ],
        // Under a byte a second, the rate would round to no limit at all.
        &["scrub", ".", "--rate", "1e-300"],
        // Rules and hooks that could never do their job.
        &["inject", ".", "--fail-reads", "--flaky", "0"],
        &["events", ".", "--exec", "true", "--timeout", "0"],
        // Rule options given to actions that take none (they were ignored:
        // `--drop-flushes --limit 1` dropped every flush).
        &["inject", ".", "--drop-flushes", "--limit", "1"],
        &["inject", ".", "--power-cut", "--errno", "EIO"],
        &["inject", ".", "--list", "--class", "data"],
    ] {
        let output = vigilfs(arguments, directory.path());
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
    }
}

#[test]
fn install_mount_helper_makes_the_symlink_mount_looks_for() {
    let directory = tempfile::tempdir().unwrap();
    let dir = directory.path().to_str().unwrap();
    let installed = vigilfs(&["install-mount-helper", "--dir", dir], directory.path());
    assert_eq!(
        installed.status.code(),
        Some(0),
        "{}",
        text(&installed.stderr)
    );
    // Not /sbin: mount(8) will not look there, and it says so (it said
    // `mount -t fuse.vigilfs` now worked).
    let said = text(&installed.stdout);
    assert!(
        said.contains("looks for its helpers in /sbin only"),
        "{said}"
    );
    let link = directory.path().join("mount.fuse.vigilfs");
    let target = std::fs::read_link(&link).unwrap();
    assert_eq!(
        target,
        Path::new(env!("CARGO_BIN_EXE_vigilfs"))
            .canonicalize()
            .unwrap()
    );
    // Again: nothing to do. Pointing elsewhere: only with --force.
    let again = vigilfs(&["install-mount-helper", "--dir", dir], directory.path());
    assert_eq!(again.status.code(), Some(0));
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/bin/true", &link).unwrap();
    let refused = vigilfs(&["install-mount-helper", "--dir", dir], directory.path());
    assert_eq!(refused.status.code(), Some(1));
    let forced = vigilfs(
        &["install-mount-helper", "--dir", dir, "--force"],
        directory.path(),
    );
    assert_eq!(forced.status.code(), Some(0));
    assert_eq!(std::fs::read_link(&link).unwrap(), target);

    // Run under the helper's name, bad lines are mount(8)'s "incorrect
    // invocation" (exit 1).
    let output = Command::new(&link)
        .arg("only-one-argument")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("usage: mount.fuse.vigilfs"));

    // mount(8) makes nothing: an fstab typo must not mount a new, empty
    // filesystem, or mount on a directory made for it (exit 32: mount
    // failure).
    let image = directory.path().join("disk.img");
    let mountpoint = directory.path().join("mnt");
    let mount_fails_saying = |what: &str| {
        let output = Command::new(&link)
            .arg(&image)
            .arg(&mountpoint)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(32), "{}", text(&output.stderr));
        assert!(
            text(&output.stderr).contains(what),
            "{}",
            text(&output.stderr)
        );
    };
    mount_fails_saying("does not exist");
    assert!(!image.exists() && !mountpoint.exists());
    let made = vigilfs(
        &["mkfs", image.to_str().unwrap(), "--size", "64M"],
        directory.path(),
    );
    assert_eq!(made.status.code(), Some(0));
    mount_fails_saying("mount point");
    assert!(!mountpoint.exists());
}

/// Fills the inode tree of the image with keys through the engine and
/// writes every node, so the image holds real b-tree nodes; returns a leaf's
/// block and the block size.
fn populate(image: &Path) -> (u64, u64) {
    use std::sync::Arc;
    use vigilfs::btree::TreeId;
    use vigilfs::device::{BlockDevice, FileDevice, FileDeviceOptions};
    use vigilfs::format::read_superblock;
    use vigilfs::metadata::Metadata;

    let device: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::open(image, FileDeviceOptions::default()).unwrap());
    let superblock = read_superblock(device.as_ref()).unwrap().superblock;
    let metadata = Metadata::open_default(device, &superblock).unwrap();
    let trees = &metadata.trees;
    for batch in 0..10u64 {
        let mut transaction = trees.transaction();
        for key in batch * 300..(batch + 1) * 300 {
            transaction
                .put(TreeId::Meta, &key.to_be_bytes(), &[1u8; 100])
                .unwrap();
        }
        transaction.commit_durable().unwrap();
    }
    trees.sync().unwrap();
    let report = trees.check().unwrap();
    let leaf = report
        .nodes
        .iter()
        .find(|(tree, level, _)| *tree == TreeId::Meta && *level == 0)
        .map(|(_, _, block)| *block)
        .unwrap();
    (leaf, u64::from(superblock.layout.block_size))
}

#[test]
fn fsck_reports_a_corrupt_tree_node_with_exit_4_and_its_block() {
    let directory = tempfile::tempdir().unwrap();
    vigilfs(&["mkfs", "disk.img", "--size", "64M"], directory.path());
    let image = directory.path().join("disk.img");
    let (leaf, block_size) = populate(&image);
    let clean = vigilfs(&["fsck", "disk.img", "--json"], directory.path());
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stdout));
    let report: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    // The 3,000 written and mkfs's live-inode count.
    assert_eq!(report["trees"]["keys"]["meta"], 3001);

    let mut bytes = std::fs::read(&image).unwrap();
    bytes[(leaf * block_size) as usize + 500] ^= 0x04;
    std::fs::write(&image, &bytes).unwrap();
    let damaged = vigilfs(&["fsck", "disk.img"], directory.path());
    assert_eq!(damaged.status.code(), Some(4));
    let output = text(&damaged.stdout);
    assert!(
        output.contains(&format!("b-tree node at block {leaf}")),
        "{output}"
    );
    assert!(output.contains("1 error left uncorrected"), "{output}");
}

#[test]
fn a_pid_file_that_cannot_be_written_or_is_not_one_refuses_the_mount() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("notes.txt"), "IMPORTANT\n").unwrap();
    for pid_file in ["notes.txt", "missing-directory/vigilfs.pid"] {
        let output = vigilfs(
            &[
                "mount",
                "disk.img",
                "mnt",
                "--daemon",
                "--pid-file",
                pid_file,
            ],
            directory.path(),
        );
        let message = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{pid_file}: {message}");
        assert!(message.contains("--pid-file"), "{message}");
        // Refused before anything was made.
        assert!(!directory.path().join("disk.img").exists());
    }
    assert_eq!(
        std::fs::read_to_string(directory.path().join("notes.txt")).unwrap(),
        "IMPORTANT\n"
    );
}

/// `vigilfs fsck disk.img | head -1`: when the reader goes away the
/// command ends as a Unix filter does (SIGPIPE), never with a panic (it
/// exited 101 with "failed printing to stdout").
#[test]
fn a_reader_that_goes_away_ends_fsck_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let directory = tempfile::tempdir().unwrap();
    vigilfs(&["mkfs", "disk.img", "--size", "64M"], directory.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigilfs"))
        .args(["fsck", "disk.img"])
        .current_dir(directory.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first line, then the reader goes: later lines meet a closed pipe.
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
}

#[test]
fn a_negative_count_or_seed_is_refused_as_a_bad_value_not_an_unknown_option() {
    let directory = tempfile::tempdir().unwrap();
    let crash_test = ["crash-test", "--workload", "true", "--check", "true"];
    // Numbers only: a value with a unit (`--delay -5ms`) is still taken for
    // an option, so that a forgotten value (`--delay --io flush`) is named
    // as missing rather than the next option taken for it.
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["inject", ".", "--fail-writes", "--seed", "-5"], "-5"),
        (vec!["inject", ".", "--remove", "-1"], "-1"),
        ([&crash_test[..], &["--cuts", "-1"]].concat(), "-1"),
    ];
    for (arguments, value) in cases {
        let output = vigilfs(&arguments, directory.path());
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
        let message = text(&output.stderr);
        // Refused for what the value is, named whole; not taken for an
        // option ("unexpected argument '-5'").
        assert!(
            message.contains(&format!("invalid value '{value}'"))
                && !message.contains("unexpected argument"),
            "{arguments:?}: {message}"
        );
    }
    let forgotten = vigilfs(
        &["inject", ".", "--delay", "--io", "flush"],
        directory.path(),
    );
    assert_eq!(forgotten.status.code(), Some(2));
    assert!(
        text(&forgotten.stderr).contains("a value is required for '--delay"),
        "{}",
        text(&forgotten.stderr)
    );
}

/// `vigilfs ARGUMENTS` in `directory` with its standard output on
/// `/dev/full`, where every write fails with ENOSPC.
fn vigilfs_to_a_full_disk(arguments: &[&str], directory: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigilfs"))
        .args(arguments)
        .current_dir(directory)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap()
}

/// Output that cannot be written (stdout on a full disk) is an error
/// with a message and status 8, never a panic with status 101; what the
/// command did is done (review 43: mkfs made the filesystem and exited
/// 101; `events` is in tests/events.rs).
#[test]
fn output_that_cannot_be_written_is_an_error_not_a_panic() {
    let directory = tempfile::tempdir().unwrap();
    let made = vigilfs_to_a_full_disk(&["mkfs", "disk.img", "--size", "8M"], directory.path());
    let checked = vigilfs_to_a_full_disk(&["fsck", "disk.img"], directory.path());
    for (what, output) in [("mkfs", made), ("fsck", checked)] {
        let message = text(&output.stderr);
        assert_eq!(output.status.code(), Some(8), "{what}: {message}");
        assert!(!message.contains("panicked"), "{what}: {message}");
        assert!(
            message.contains("No space left on device"),
            "{what}: {message}"
        );
    }
    let fsck = vigilfs(&["fsck", "disk.img"], directory.path());
    assert_eq!(fsck.status.code(), Some(0), "the filesystem was made");
}

/// fsck's usage errors exit 16, as fsck(8) says (2 there means "reboot
/// the system"); help is still 0 (review 43).
#[test]
fn fsck_usage_errors_exit_16_as_fsck_8_says() {
    let directory = tempfile::tempdir().unwrap();
    for arguments in [
        &["fsck"][..],
        &["fsck", "--bogus", "x.img"],
        &["fsck", "a", "b"],
    ] {
        let output = vigilfs(arguments, directory.path());
        assert_eq!(output.status.code(), Some(16), "{arguments:?}");
    }
    assert_eq!(
        vigilfs(&["fsck", "--help"], directory.path()).status.code(),
        Some(0)
    );
}

/// `shutdown --flush --noflush` is refused, not settled by the last flag:
/// one of the two loses data (review 43).
#[test]
fn shutdown_refuses_both_flush_and_noflush() {
    let directory = tempfile::tempdir().unwrap();
    for arguments in [
        &["shutdown", ".", "--flush", "--noflush"][..],
        &["shutdown", ".", "--noflush", "--flush"],
    ] {
        let output = vigilfs(arguments, directory.path());
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
        assert!(text(&output.stderr).contains("cannot be used with"));
    }
}
