//! External test suites against a mounted vigilfs: pjdfstest (POSIX
//! semantics, run as root inside the mount) and fsx (random reads, writes,
//! mmap, truncates, hole punches and copies on one file, each read checked
//! against a model).
//!
//! The tools are installed with `cargo install pjdfstest fsx` (CI's
//! `.ci/run` does it). When one is missing its test fails and says how to
//! install it: a suite that silently does not run would look green.
//!
//! Invariants: pjdfstest passes but for the tests listed with a reason in
//! `pjdfstest-excluded.txt`; fsx reports no miscompare in 100,000
//! operations, the file's contents survive a remount, and a second run of
//! 100,000 operations on the same file after the remount passes too.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Mount;

/// Operations per fsx run.
const FSX_OPERATIONS: u32 = 100_000;

/// The first fsx run: every operation Linux and vigilfs support, on a file
/// of up to 1 MiB, with requests up to 128 KiB (several FUSE pages).
const FSX_CONFIG: &str = "\
flen = 1048576
[opsize]
max = 131072
[weights]
close_open = 1
read = 10
write = 10
mapread = 5
mapwrite = 5
invalidate = 1
truncate = 2
fsync = 1
fdatasync = 1
posix_fallocate = 1
punch_hole = 1
sendfile = 1
posix_fadvise = 1
copy_file_range = 1
";

/// The second run reuses the existing file: fsx's block mode keeps the
/// file (and its size) instead of creating it, so no operation may change
/// the size (no truncate, reopen or preallocation).
const FSX_REUSE_CONFIG: &str = "\
blockmode = true
nosizechecks = true
[opsize]
max = 131072
[weights]
close_open = 0
truncate = 0
posix_fallocate = 0
read = 10
write = 10
mapread = 5
mapwrite = 5
invalidate = 1
fsync = 1
fdatasync = 1
punch_hole = 1
sendfile = 1
posix_fadvise = 1
copy_file_range = 1
";

/// The file fsx works on.
const FSX_FILE_BYTES: u64 = 1 << 20;

fn crate_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// `tool` from PATH (or ~/.cargo/bin), or a failure saying how to get it.
fn installed(tool: &str) -> PathBuf {
    let mut places: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        places.push(Path::new(&home).join(".cargo/bin"));
    }
    places
        .into_iter()
        .map(|place| place.join(tool))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{tool} is not installed: run `cargo install {tool} --locked` \
                 (CI's .ci/run installs it)"
            )
        })
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\n--- stdout (end) ---\n{}\n--- stderr (end) ---\n{}",
        output.status,
        tail(&output.stdout, 60),
        tail(&output.stderr, 60)
    )
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The tests of `pjdfstest-excluded.txt`.
fn excluded_tests() -> BTreeSet<String> {
    let path = crate_file("pjdfstest-excluded.txt");
    let text = fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A directory in `mount` for pjdfstest to work in, with a path length
/// that avoids an arithmetic underflow in pjdfstest 0.2.2's
/// `create_path_max` (it builds a PATH_MAX-long path from components of
/// NAME_MAX / 2 = 127 bytes below `<dir>/.tmpXXXXXX/.tmpXXXXXX`, and
/// computes `remaining % 127 - 1`, which wraps when the remainder is 0 and
/// panics with "capacity overflow"; the remainder must be at least 2).
fn pjdfstest_directory(mount: &Mount) -> PathBuf {
    const PATH_MAX_WITHOUT_NUL: usize = 4095;
    const COMPONENT: usize = 255 / 2;
    const TWO_TEMPORARY_DIRECTORIES: usize = 2 * ("/.tmp".len() + 6);
    let mut directory = mount.join("pjdfstest");
    loop {
        let base = directory.as_os_str().len() + TWO_TEMPORARY_DIRECTORIES;
        if (PATH_MAX_WITHOUT_NUL - base) % COMPONENT >= 2 {
            break;
        }
        directory.as_mut_os_string().push("_");
    }
    fs::create_dir(&directory).expect("pjdfstest's directory");
    directory
}

#[test]
fn pjdfstest_passes_but_for_the_listed_exclusions() {
    if !common::fuse_available() {
        return;
    }
    let pjdfstest = installed("pjdfstest");
    let excluded = excluded_tests();
    let mount = Mount::new();
    let directory = pjdfstest_directory(&mount);
    // A second filesystem for the EXDEV tests (rename and link across
    // filesystems): a directory outside the mount.
    let secondary = tempfile::tempdir().expect("secondary directory");
    let output = Command::new(&pjdfstest)
        .arg("-c")
        .arg(crate_file("pjdfstest.toml"))
        .arg("-p")
        .arg(&directory)
        .arg("-s")
        .arg(secondary.path())
        .current_dir(&directory)
        .output()
        .expect("running pjdfstest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (mut passed, mut failed, mut skipped) = (0, Vec::new(), 0);
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(outcome), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if !name.contains("::") {
            continue;
        }
        match outcome {
            "ok" => passed += 1,
            "FAILED" => failed.push(name.to_owned()),
            "skipped" => skipped += 1,
            _ => {}
        }
    }
    let unexpected: Vec<&String> = failed
        .iter()
        .filter(|name| !excluded.contains(*name))
        .collect();
    let excluded_failures = failed.len() - unexpected.len();
    let failed_names: BTreeSet<&String> = failed.iter().collect();
    let listed_but_passed: Vec<&String> = excluded
        .iter()
        .filter(|name| !failed_names.contains(name))
        .collect();
    eprintln!(
        "pjdfstest counts: passed {passed}, failed {} ({excluded_failures} excluded), skipped {skipped}",
        failed.len()
    );
    if !listed_but_passed.is_empty() {
        eprintln!(
            "pjdfstest: excluded but not failing (remove from the list?): {listed_but_passed:?}"
        );
    }
    assert!(
        passed > 300,
        "pjdfstest ran too few tests ({passed} passed):\n{}",
        describe(&output)
    );
    assert!(
        unexpected.is_empty(),
        "pjdfstest failures not in pjdfstest-excluded.txt: {unexpected:#?}\n{}",
        describe(&output)
    );
    drop(secondary);
    mount.finish();
}

fn run_fsx(fsx: &Path, config: &Path, seed: u64, file: &Path, artifacts: &Path) -> Output {
    Command::new(fsx)
        .arg("-f")
        .arg(config)
        .arg("-N")
        .arg(FSX_OPERATIONS.to_string())
        .arg("-S")
        .arg(seed.to_string())
        .arg("-P")
        .arg(artifacts)
        .arg(file)
        .output()
        .expect("running fsx")
}

fn assert_fsx_passed(output: &Output, what: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains("All operations completed A-OK!"),
        "fsx ({what}) failed:\n{}",
        describe(output)
    );
    eprintln!("fsx ({what}): {FSX_OPERATIONS} operations, no miscompare");
}

#[test]
fn fsx_finds_no_miscompare_before_and_after_a_remount() {
    if !common::fuse_available() {
        return;
    }
    let fsx = installed("fsx");
    let mut mount = Mount::new();
    let scratch = tempfile::tempdir().expect("fsx's scratch directory");
    let (config, reuse_config) = (
        scratch.path().join("fsx.toml"),
        scratch.path().join("fsx-reuse.toml"),
    );
    fs::write(&config, FSX_CONFIG).unwrap();
    fs::write(&reuse_config, FSX_REUSE_CONFIG).unwrap();
    let artifacts = scratch.path().join("artifacts");
    fs::create_dir(&artifacts).unwrap();
    let file = mount.join("fsx-file");

    let output = run_fsx(&fsx, &config, 1, &file, &artifacts);
    assert_fsx_passed(&output, "fresh file, seed 1");
    // Block mode needs a non-empty file, and uses its whole size.
    let handle = fs::OpenOptions::new().write(true).open(&file).unwrap();
    if handle.metadata().unwrap().len() < FSX_FILE_BYTES {
        handle.set_len(FSX_FILE_BYTES).unwrap();
    }
    drop(handle);
    let before = fs::read(&file).unwrap();

    mount.remount();
    let after = fs::read(&file).unwrap();
    assert!(
        before == after,
        "the file changed across the remount ({} -> {} bytes)",
        before.len(),
        after.len()
    );
    let output = run_fsx(&fsx, &reuse_config, 2, &file, &artifacts);
    assert_fsx_passed(&output, "same file after a remount, seed 2");
    mount.finish();
}
