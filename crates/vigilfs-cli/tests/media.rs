//! Media failures through a real mount, as an operator meets them: a bad
//! block aimed at a file with `vigilfs owners` and made with `vigilfs
//! inject --bad-blocks`, reports replayed with `vigilfs notify-failure`,
//! `vigilfs scrub` and `vigilfs fsck --data`, a failure reported before the
//! mount handled after the journal replays, a background scrub. They need
//! root and /dev/fuse.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const BLOCK: u64 = 4096;
const IMAGE: u64 = 64 << 20;

/// `blocks` blocks, each different from the others.
fn pattern(blocks: u64, seed: u8) -> Vec<u8> {
    (0..blocks * BLOCK)
        .map(|at| ((at / BLOCK) as u8).wrapping_mul(29) ^ (at as u8).wrapping_add(seed) | 1)
        .collect()
}

fn write_synced(path: &std::path::Path, data: &[u8]) {
    let mut file = File::create(path).unwrap();
    file.write_all(data).unwrap();
    file.sync_all().unwrap();
}

fn json_of(arguments: &[&str]) -> Value {
    let output = vigilfs(arguments);
    assert_eq!(
        output.status.code(),
        Some(0),
        "vigilfs {arguments:?}: {}{}",
        text(&output.stderr),
        text(&output.stdout)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Every owner of `length` bytes at `offset` of the target.
fn owners(target: &str, offset: u64, length: u64) -> Vec<Value> {
    let report = json_of(&[
        "owners",
        target,
        "--offset",
        &offset.to_string(),
        "--length",
        &length.to_string(),
        "--json",
    ]);
    report["owners"].as_array().unwrap().clone()
}

/// The device block file block `index` of `/name` lives in, found with
/// `vigilfs owners` over the whole image.
fn device_block(target: &str, name: &str, index: u64) -> u64 {
    let path = format!("/{name}");
    owners(target, 0, IMAGE)
        .into_iter()
        .find_map(|owner| {
            let paths = owner["paths"].as_array()?;
            if !paths.iter().any(|candidate| candidate == path.as_str()) {
                return None;
            }
            let first = owner["file_offset"].as_u64()? / BLOCK;
            let blocks = owner["device_length"].as_u64()? / BLOCK;
            (first..first + blocks)
                .contains(&index)
                .then(|| owner["device_offset"].as_u64().unwrap() / BLOCK + index - first)
        })
        .unwrap_or_else(|| panic!("file block {index} of {path} is not mapped"))
}

fn kinds(owners: &[Value]) -> Vec<String> {
    owners
        .iter()
        .map(|owner| owner["kind"].as_str().unwrap().to_string())
        .collect()
}

fn read_block(path: &std::path::Path, index: u64) -> std::io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut buffer = vec![0u8; BLOCK as usize];
    file.read_exact_at(&mut buffer, index * BLOCK)?;
    Ok(buffer)
}

/// `notify-failure` of one block as JSON; it exits 4 when the report
/// says something was lost or not recorded, or names data lost before,
/// else 0.
fn notify(scratch: &Scratch, block: u64) -> Value {
    let arguments = [
        "notify-failure",
        scratch.mnt(),
        "--offset",
        &(block * BLOCK).to_string(),
        "--length",
        "4K",
        "--origin",
        "test report",
        "--json",
    ];
    let output = vigilfs(&arguments);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("{error}: {}{}", text(&output.stderr), text(&output.stdout))
    });
    let lost_before = report["owners"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|owner| owner["outcome"]["kind"] == "already_known" && owner["poisoned"] == true);
    let left = report["lost_blocks"].as_u64() > Some(0)
        || report["records_unsaved"].is_string()
        || lost_before;
    assert_eq!(
        output.status.code(),
        Some(if left { 4 } else { 0 }),
        "{report}"
    );
    report
}

/// Fills the filesystem with 1 MiB files until it is full.
fn fill_up(scratch: &Scratch) {
    let chunk = vec![0x6bu8; 1 << 20];
    for index in 0.. {
        let path = scratch.at(&format!("fill-{index}"));
        let Ok(mut file) = File::create(&path) else {
            return;
        };
        if file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_err()
        {
            return;
        }
        assert!(index < 200, "a 64 MiB filesystem holds fewer than 200 MiB");
    }
}

#[test]
fn a_bad_block_under_a_file_is_lost_there_only_until_rewritten_and_never_reused() {
    if fuse_missing("a_bad_block_under_a_file_is_lost_there_only_until_rewritten_and_never_reused")
    {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let data = pattern(16, 1);
    write_synced(&scratch.at("victim"), &data);
    fs::create_dir(scratch.at("sub")).unwrap();
    fs::hard_link(scratch.at("victim"), scratch.at("sub/alias")).unwrap();
    scratch.umount(pid);
    // A fresh mount: nothing of the file is cached.
    let pid = scratch.mount(&[]);
    let bad = device_block(scratch.mnt(), "victim", 5);
    scratch.inject(&["--bad-blocks", &format!("{bad}:1")]);
    // owners names every path of the file and the file bytes there.
    let named = owners(scratch.mnt(), bad * BLOCK, BLOCK);
    let file = named.iter().find(|owner| owner["kind"] == "file").unwrap();
    assert_eq!(file["paths"], serde_json::json!(["/sub/alias", "/victim"]));
    assert_eq!(file["file_offset"], 5 * BLOCK);

    let victim = scratch.at("victim");
    assert_eq!(
        read_block(&victim, 5).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    // The worker poisons the block, then reports the loss (a MEDIA error).
    wait_until("the failure is handled", Duration::from_secs(30), || {
        let status = scratch.status();
        status["media"]["poisoned_runs"] == 1 && status["errors"]["per_kind"]["media"]["count"] == 1
    });
    // Review 34: the same report again (a monitor restarted) hears that
    // the data is still lost: exit 4, not 0.
    let again = notify(&scratch, bad);
    let owner = &again["owners"][0];
    assert_eq!(owner["outcome"]["kind"], "already_known", "{again}");
    assert_eq!(owner["poisoned"], true, "{again}");
    // Exactly that block fails; reading it again reports nothing new.
    assert_eq!(
        fs::read(&victim).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    for index in (0..16).filter(|&index| index != 5) {
        assert_eq!(
            read_block(&victim, index).unwrap(),
            data[(index * BLOCK) as usize..((index + 1) * BLOCK) as usize],
            "block {index} reads"
        );
    }
    // One media error recorded (the kernel may have retried the read:
    // each failed read is a READ error, the loss is one).
    let status = scratch.status();
    assert_eq!(status["errors"]["per_kind"]["media"]["count"], 1);
    let poisoned = &status["media"]["poisoned"][0];
    assert_eq!(poisoned["first_block"], 5);
    assert_eq!(poisoned["device_block"], bad);
    // The daemon's log gets the event from a thread of its own.
    wait_until("the daemon logs the loss", Duration::from_secs(30), || {
        scratch.log().lines().any(|line| {
            line.contains("data_lost") && line.contains(&format!("bytes {}+{BLOCK}", 5 * BLOCK))
        })
    });

    // The loss survives a remount (the fault plan does not: the device
    // reads again), until the block is rewritten.
    scratch.umount(pid);
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(4), "{}", text(&fsck.stdout));
    assert!(text(&fsck.stdout).contains("/sub/alias, /victim"));
    // An offline scrub agrees with fsck: errors are left (it exited 0
    // with "0 failures found", as its read skips what is known lost).
    let offline = vigilfs(&["scrub", scratch.img()]);
    assert_eq!(offline.status.code(), Some(4), "{}", text(&offline.stdout));
    assert!(
        text(&offline.stdout).contains("lost before"),
        "{}",
        text(&offline.stdout)
    );
    let pid = scratch.mount(&[]);
    assert_eq!(
        read_block(&victim, 5).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    let fresh = vec![0x42u8; BLOCK as usize];
    let file = OpenOptions::new().write(true).open(&victim).unwrap();
    file.write_all_at(&fresh, 5 * BLOCK).unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(read_block(&victim, 5).unwrap(), fresh);
    assert_eq!(scratch.status()["media"]["poisoned_runs"], 0);
    // The bad block is never handed out again, however full the disk.
    fill_up(&scratch);
    assert_eq!(kinds(&owners(scratch.mnt(), bad * BLOCK, BLOCK)), ["bad"]);
    scratch.umount(pid);
    let pid = scratch.mount(&[]);
    assert_eq!(read_block(&victim, 5).unwrap(), fresh);
    assert!(scratch.status()["media"]["bad_blocks"].as_u64().unwrap() >= 1);
    scratch.umount(pid);
    let fsck = vigilfs(&["fsck", scratch.img(), "--json"]);
    let report: Value = serde_json::from_slice(&fsck.stdout).unwrap();
    assert_eq!(fsck.status.code(), Some(0), "{report}");
    assert!(report["media"]["bad_blocks"].as_u64().unwrap() >= 1);
}

#[test]
fn a_cached_page_is_rescued_to_a_new_block_and_nothing_is_lost() {
    if fuse_missing("a_cached_page_is_rescued_to_a_new_block_and_nothing_is_lost") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let data = pattern(4, 2);
    write_synced(&scratch.at("cached"), &data);
    let bad = device_block(scratch.mnt(), "cached", 2);
    scratch.inject(&["--bad-blocks", &format!("{bad}:1")]);
    let report = notify(&scratch, bad);
    let owner = &report["owners"][0];
    assert_eq!(owner["kind"], "file");
    assert_eq!(owner["paths"], serde_json::json!(["/cached"]));
    assert_eq!(owner["outcome"]["kind"], "healed", "{report}");
    assert_eq!(report["lost_blocks"], 0);
    assert_ne!(device_block(scratch.mnt(), "cached", 2), bad);
    assert_eq!(kinds(&owners(scratch.mnt(), bad * BLOCK, BLOCK)), ["bad"]);
    // The human form says so too.
    let again = vigilfs(&[
        "notify-failure",
        scratch.mnt(),
        "--offset",
        &(bad * BLOCK).to_string(),
        "--length",
        "4096",
    ]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains("0 lost"),
        "{}",
        text(&again.stdout)
    );
    scratch.umount(pid);
    let pid = scratch.mount(&[]);
    assert_eq!(fs::read(scratch.at("cached")).unwrap(), data);
    scratch.umount(pid);
    assert_eq!(vigilfs(&["fsck", scratch.img()]).status.code(), Some(0));
}

/// The blocks of leaf nodes of `tree`, from `vigilfs owners`.
fn leaves(scratch: &Scratch, tree: &str) -> Vec<u64> {
    owners(scratch.mnt(), 0, IMAGE)
        .into_iter()
        .filter(|owner| owner["kind"] == "node" && owner["tree"] == tree && owner["level"] == 0)
        .map(|owner| owner["block"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_bad_node_is_moved_from_its_cached_copy_or_else_goes_to_the_errors_policy() {
    if fuse_missing("a_bad_node_is_moved_from_its_cached_copy_or_else_goes_to_the_errors_policy") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    for index in 0..300 {
        File::create(scratch.at(&format!("file-with-a-long-name-{index:04}"))).unwrap();
    }
    let sync = vigilfs(&["sync", scratch.mnt()]);
    assert_eq!(sync.status.code(), Some(0));
    // Every inode read: every leaf of the inode tree is cached, clean.
    assert_eq!(fs::read_dir(&scratch.mountpoint).unwrap().count(), 300);
    for entry in fs::read_dir(&scratch.mountpoint).unwrap() {
        entry.unwrap().metadata().unwrap();
    }
    let cached = leaves(&scratch, "inodes");
    assert!(cached.len() > 2, "{cached:?}");
    scratch.inject(&["--bad-blocks", &format!("{}:1", cached[1])]);
    let report = notify(&scratch, cached[1]);
    assert_eq!(report["owners"][0]["outcome"]["kind"], "healed", "{report}");
    assert_eq!(scratch.status()["state"], "running");
    scratch.umount(pid);

    // After a remount only the roots are cached: a leaf nobody read since
    // is lost with its block, and errors=remount-ro acts.
    let pid = scratch.mount(&["-o", "errors=remount-ro"]);
    let uncached = *leaves(&scratch, "inodes").last().unwrap();
    scratch.inject(&["--bad-blocks", &format!("{uncached}:1")]);
    let report = notify(&scratch, uncached);
    assert_eq!(report["owners"][0]["outcome"]["kind"], "lost", "{report}");
    let status = scratch.status();
    assert_eq!(status["state"], "read-only");
    wait_until(
        "the daemon logs the lost node",
        Duration::from_secs(30),
        || {
            scratch.log().lines().any(|line| {
                line.contains("metadata")
                    && line.contains(&format!("tree inodes level 0 block {uncached}"))
            })
        },
    );
    scratch.umount(pid);
}

/// A node reported failed on a read-only mount stays where it is (it
/// reads back, and nothing may be written); made read-write, the mount
/// moves it off the block now listed bad. It stayed there, and neither
/// scrub nor fsck looked at it again (review 48).
#[test]
fn a_node_a_read_only_mount_could_not_move_is_moved_once_writable() {
    if fuse_missing("a_node_a_read_only_mount_could_not_move_is_moved_once_writable") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    for index in 0..300 {
        File::create(scratch.at(&format!("file-with-a-long-name-{index:04}"))).unwrap();
    }
    scratch.umount(pid);
    let pid = scratch.mount(&["-o", "ro"]);
    let leaf = leaves(&scratch, "dirents")[0];
    let report = notify(&scratch, leaf);
    assert_eq!(
        report["owners"][0]["outcome"]["kind"], "unmovable",
        "{report}"
    );
    let made = vigilfs(&["mount", scratch.img(), scratch.mnt(), "-o", "remount,rw"]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    let there = kinds(&owners(scratch.mnt(), leaf * BLOCK, BLOCK));
    assert_eq!(there, ["bad"], "the node moved off the bad block");
    assert_eq!(fs::read_dir(&scratch.mountpoint).unwrap().count(), 300);
    // Handled again, the report is still one notice (it counted two,
    // review 49).
    let notices = &scratch.status()["media"]["notices"];
    assert_eq!(notices["received"], 1, "{notices}");
    scratch.umount(pid);
    assert_eq!(vigilfs(&["fsck", scratch.img()]).status.code(), Some(0));
}

/// After `mount -o remount,ro` a failure report writes nothing: the data
/// that still reads stays where it is, its block marked bad in memory,
/// as on a mount read-only from the start (it was moved at once, writing
/// to an image the remount had made still; review 49). `remount,rw` moves
/// it and records the mark; so does the unmount, if the mount is never
/// made writable again.
#[test]
fn a_failure_reported_after_remount_ro_is_handled_in_memory_until_rw_or_the_unmount() {
    if fuse_missing("a failure reported after remount,ro") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let data = pattern(4, 7);
    write_synced(&scratch.at("kept"), &data);
    let first = device_block(scratch.mnt(), "kept", 1);
    // Not next to the first: the two are marked bad as runs of their own.
    let second = device_block(scratch.mnt(), "kept", 3);
    let remount = |options: &str| {
        let made = vigilfs(&["mount", scratch.img(), scratch.mnt(), "-o", options]);
        assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    };
    for (index, block, then) in [(1, first, "remount,rw"), (3, second, "the unmount")] {
        remount("remount,ro");
        let report = notify(&scratch, block);
        assert_eq!(
            report["owners"][0]["outcome"]["kind"], "unmovable",
            "{report}"
        );
        assert!(
            report["records_unsaved"]
                .as_str()
                .is_some_and(|why| why.contains("remount,rw or the unmount")),
            "{report}"
        );
        // Reported again: known, no new error, and still said unwritten
        // (each repeat counted an error, review 52).
        let again = notify(&scratch, block);
        assert_eq!(
            again["owners"][0]["outcome"]["kind"], "already_known",
            "{again}"
        );
        assert!(again["records_unsaved"].is_string(), "{again}");
        if then == "the unmount" {
            // The block moved and recorded at the last remount,rw: a
            // report of it has nothing left unwritten (it said so).
            let recorded = notify(&scratch, first);
            assert!(recorded["records_unsaved"].is_null(), "{recorded}");
        }
        assert_eq!(device_block(scratch.mnt(), "kept", index), block);
        assert_eq!(fs::read(scratch.at("kept")).unwrap(), data, "before {then}");
        if then == "remount,rw" {
            remount("remount,rw");
        }
        // One error per report: moved later, it is not counted again (it
        // was, review 50).
        let errors = &scratch.status()["errors"];
        let reports = if then == "remount,rw" { 1 } else { 2 };
        assert_eq!(errors["total"], reports, "{errors}");
    }
    scratch.umount(pid);
    let pid = scratch.mount(&[]);
    for block in [first, second] {
        assert_eq!(kinds(&owners(scratch.mnt(), block * BLOCK, BLOCK)), ["bad"]);
    }
    assert_eq!(fs::read(scratch.at("kept")).unwrap(), data);
    scratch.umount(pid);
    assert_eq!(vigilfs(&["fsck", scratch.img()]).status.code(), Some(0));
}

/// Reads the device fails with an error that is not the medium's (a
/// failing path, `--fail-reads`) are no finding, so nothing is marked or
/// moved; but what they cover was not verified, and the scrub says so,
/// exits 4 and reports the error. It said "0 failures found", exited 0
/// and left no trace (review 50).
#[test]
fn a_scrub_whose_reads_fail_on_the_path_is_no_clean_pass() {
    if fuse_missing("a_scrub_whose_reads_fail_on_the_path_is_no_clean_pass") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    write_synced(&scratch.at("data"), &pattern(4, 6));
    let block = device_block(scratch.mnt(), "data", 2);
    scratch.inject(&["--fail-reads", "--range", &format!("{}:4K", block * BLOCK)]);
    let scrub = vigilfs(&["scrub", scratch.mnt(), "--restart"]);
    let said = text(&scrub.stdout);
    assert_eq!(scrub.status.code(), Some(4), "{said}");
    assert!(
        said.contains("0 failures found") && said.contains("1 reads failed"),
        "{said}"
    );
    // An error the filesystem met, as a foreground read's would be.
    let said = text(&vigilfs(&["events", scratch.mnt()]).stdout);
    assert!(
        said.contains("/data  bytes 8192+4096") && said.contains("scrub could not read file data"),
        "{said}"
    );
    assert_eq!(scratch.status()["errors"]["per_kind"]["read"]["count"], 1);
    // Nothing was marked bad for a path failure.
    assert_eq!(
        kinds(&owners(scratch.mnt(), block * BLOCK, BLOCK)),
        ["file"]
    );
    scratch.inject(&["--clear"]);
    let scrub = vigilfs(&["scrub", scratch.mnt(), "--restart"]);
    assert_eq!(scrub.status.code(), Some(0), "{}", text(&scrub.stdout));
    scratch.umount(pid);
}

/// Journal entries the filesystem needs, lost (zeroed here), are an error
/// for the image's scrub as for fsck (review 58: scrub found "0 failures"
/// and exited 0 where fsck exited 4 and the image could not be mounted).
#[test]
fn a_lost_journal_is_no_clean_scrub_of_the_image() {
    if fuse_missing("a_lost_journal_is_no_clean_scrub_of_the_image") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    fs::write(scratch.at("file"), b"data").unwrap();
    scratch.umount(pid);
    let journal = journal_bytes(&scratch.image);
    let zeros = vec![0u8; (journal.end - journal.start) as usize];
    let image = OpenOptions::new().write(true).open(&scratch.image).unwrap();
    image.write_all_at(&zeros, journal.start).unwrap();
    drop(image);
    let output = vigilfs(&["scrub", scratch.img()]);
    let said = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(4),
        "{said}{}",
        text(&output.stderr)
    );
    assert!(said.contains("FAILED journal: entries "), "{said}");
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(4), "{}", text(&fsck.stdout));
}

#[test]
fn free_space_reported_bad_is_never_allocated() {
    if fuse_missing("free_space_reported_bad_is_never_allocated") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    // The end of the last free run: blocks are handed out from the start,
    // so nothing takes this one before it is reported.
    let free = owners(scratch.mnt(), 0, IMAGE)
        .into_iter()
        .rev()
        .find(|owner| owner["kind"] == "free")
        .unwrap();
    let end = free["device_offset"].as_u64().unwrap() + free["device_length"].as_u64().unwrap();
    let block = end / BLOCK - 3;
    let report = notify(&scratch, block);
    assert_eq!(report["owners"][0]["outcome"]["kind"], "marked_bad");
    scratch.umount(pid);
    let pid = scratch.mount(&[]);
    fill_up(&scratch);
    assert_eq!(kinds(&owners(scratch.mnt(), block * BLOCK, BLOCK)), ["bad"]);
    let status = scratch.status();
    assert!(status["media"]["bad"]
        .as_array()
        .unwrap()
        .iter()
        .any(|run| run["start"].as_u64().unwrap() <= block
            && block < run["start"].as_u64().unwrap() + run["blocks"].as_u64().unwrap()));
    scratch.umount(pid);
}

#[test]
fn a_failure_reported_before_the_mount_is_handled_after_the_journal_replays() {
    if fuse_missing("a_failure_reported_before_the_mount_is_handled_after_the_journal_replays") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let data = pattern(3, 3);
    write_synced(&scratch.at("replayed"), &data);
    let block = device_block(scratch.mnt(), "replayed", 1);
    // A crash: the next mount replays the journal.
    scratch.kill_daemon(pid);
    // A failure outside the device is refused with the mount (it was
    // accepted, and dropped without a word).
    let outside = vigilfs(&[
        "mount",
        scratch.img(),
        scratch.mnt(),
        "--daemon",
        "-o",
        "failed=99999999999999:4096",
    ]);
    let message = text(&outside.stderr);
    assert_eq!(outside.status.code(), Some(8), "{message}");
    assert!(message.contains("not inside the"), "{message}");
    assert!(!is_mounted(&scratch.mountpoint));
    let pid = scratch.mount(&["-o", &format!("failed={}:4K", block * BLOCK)]);
    let status = scratch.status();
    assert_eq!(status["recovered"], true);
    wait_until("the failure is handled", Duration::from_secs(30), || {
        scratch.status()["media"]["notices"]["handled"].as_u64() >= Some(1)
    });
    let media = &scratch.status()["media"];
    assert_eq!(media["notices"]["parked"], 1, "{media}");
    // The block still read: its data was moved, nothing lost.
    assert_eq!(media["healed_blocks"], 1, "{media}");
    assert_eq!(kinds(&owners(scratch.mnt(), block * BLOCK, BLOCK)), ["bad"]);
    assert_eq!(fs::read(scratch.at("replayed")).unwrap(), data);
    scratch.umount(pid);
    assert_eq!(vigilfs(&["fsck", scratch.img()]).status.code(), Some(0));
}

/// A crash tears the superblock copy being written. On the image it left,
/// scrub agrees with fsck and the next mount (which rewrites the copy
/// without a report): no finding. It said "1 failures found", exit 4
/// (review 38). The same damage on a clean image is a finding.
#[test]
fn a_superblock_copy_torn_by_a_crash_is_no_scrub_finding_until_a_clean_unmount() {
    if fuse_missing("a_superblock_copy_torn_by_a_crash_is_no_scrub_finding_until_a_clean_unmount") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    write_synced(&scratch.at("f"), &pattern(2, 9));
    kill_9_daemon(pid, &scratch.mountpoint);
    let tear = || {
        let image = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&scratch.image)
            .unwrap();
        // A byte of the primary copy (the second 4 KiB block).
        let mut byte = [0u8; 1];
        image.read_exact_at(&mut byte, 4096 + 200).unwrap();
        byte[0] ^= 0x01;
        image.write_all_at(&byte, 4096 + 200).unwrap();
    };
    tear();
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck.stdout));
    let scrub = vigilfs(&["scrub", scratch.img(), "--json"]);
    assert_eq!(scrub.status.code(), Some(0), "{}", text(&scrub.stdout));
    // Mounted and unmounted cleanly, every copy is whole; the same tear
    // now is damage to both.
    let pid = scratch.mount(&[]);
    scratch.umount(pid);
    tear();
    let fsck = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(4), "{}", text(&fsck.stdout));
    let scrub = vigilfs(&["scrub", scratch.img()]);
    assert_eq!(scrub.status.code(), Some(4), "{}", text(&scrub.stdout));
}

/// A directory's leaf node damaged on the image, with no copy to heal it
/// from: every scrub says it is lost and exits 4 ("errors left"), not
/// only the first. The second said "0 lost" and exited 0, so a scrub run
/// from cron called a filesystem with an unreadable directory healthy
/// (review 47).
#[test]
fn a_lost_node_is_an_error_left_for_every_scrub_not_only_the_first() {
    if fuse_missing("a_lost_node_is_an_error_left_for_every_scrub_not_only_the_first") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    fs::create_dir(scratch.at("dir")).unwrap();
    for index in 0..200 {
        File::create(scratch.at(&format!("dir/name-number-{index:04}"))).unwrap();
    }
    scratch.umount(pid);
    let leaf = owners(scratch.img(), 0, IMAGE)
        .into_iter()
        .find(|owner| owner["kind"] == "node" && owner["tree"] == "dirents" && owner["level"] == 0)
        .and_then(|owner| owner["block"].as_u64())
        .expect("a dirents leaf");
    let image = OpenOptions::new().write(true).open(&scratch.image).unwrap();
    image.write_all_at(&[0xaa; 8], leaf * BLOCK + 300).unwrap();
    image.sync_all().unwrap();
    drop(image);

    let pid = scratch.mount(&["-o", "errors=continue"]);
    for round in ["first", "second"] {
        let scrub = vigilfs(&["scrub", scratch.mnt(), "--json"]);
        let summary: Value = serde_json::from_slice(&scrub.stdout).unwrap();
        assert_eq!(scrub.status.code(), Some(4), "{round}: {summary}");
        assert_eq!(summary["lost_blocks"], 1, "{round}: {summary}");
    }
    let said = text(&vigilfs(&["scrub", scratch.mnt(), "--restart"]).stdout);
    assert!(said.contains(" 1 lost"), "{said}");
    scratch.umount(pid);
}

#[test]
fn a_flipped_byte_is_found_by_fsck_data_and_scrub_and_never_read_as_data() {
    if fuse_missing("a_flipped_byte_is_found_by_fsck_data_and_scrub_and_never_read_as_data") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let data = pattern(4, 4);
    write_synced(&scratch.at("flipped"), &data);
    let block = device_block(scratch.mnt(), "flipped", 2);
    scratch.umount(pid);
    let image = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&scratch.image)
        .unwrap();
    let mut byte = [0u8; 1];
    image.read_exact_at(&mut byte, block * BLOCK + 77).unwrap();
    byte[0] ^= 0x10;
    image.write_all_at(&byte, block * BLOCK + 77).unwrap();
    image.sync_all().unwrap();
    drop(image);

    let plain = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(plain.status.code(), Some(0), "metadata is intact");
    let fsck = vigilfs(&["fsck", "--data", scratch.img()]);
    assert_eq!(fsck.status.code(), Some(4), "{}", text(&fsck.stdout));
    let report = text(&fsck.stdout);
    assert!(
        report.contains("checksum mismatch") && report.contains("/flipped at bytes 8192..12288"),
        "{report}"
    );
    // The data pass says how far it is (it said nothing, review 43).
    let progress = text(&fsck.stderr);
    assert!(
        progress.contains("fsck: file data: 0 B of ") && progress.contains(" read\n"),
        "{progress}"
    );
    let offline = vigilfs(&["scrub", scratch.img()]);
    assert_eq!(offline.status.code(), Some(4), "{}", text(&offline.stderr));
    assert!(
        text(&offline.stdout).contains("/flipped"),
        "{}",
        text(&offline.stdout)
    );

    let pid = scratch.mount(&[]);
    let scrub = vigilfs(&["scrub", scratch.mnt(), "--json"]);
    assert_eq!(scrub.status.code(), Some(4), "{}", text(&scrub.stderr));
    let summary: Value = serde_json::from_slice(&scrub.stdout).unwrap();
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["findings"], 1, "{summary}");
    assert_eq!(summary["lost_blocks"], 1, "{summary}");
    // What an alert watches says so too.
    let metrics = scratch.metrics();
    for (name, value) in [
        ("vigilfs_media_lost_blocks_total", 1.0),
        ("vigilfs_media_healed_blocks_total", 0.0),
        ("vigilfs_lost_data_runs", 1.0),
        ("vigilfs_scrub_running", 0.0),
        ("vigilfs_scrub_last_complete", 1.0),
        ("vigilfs_scrub_last_findings", 1.0),
    ] {
        assert_eq!(sample(&metrics, name, None), value, "{name}");
    }
    let ended = sample(&metrics, "vigilfs_scrub_last_end_timestamp_seconds", None);
    let shown = scratch.status()["media"]["scrub"]["last"]["ended"].as_u64();
    assert_eq!(Some(ended as u64), shown, "the end the status shows");
    assert_eq!(
        read_block(&scratch.at("flipped"), 2)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    // Scrubbing again finds nothing new, and still says data is lost.
    let again = vigilfs(&["scrub", scratch.mnt()]);
    assert_eq!(again.status.code(), Some(4));
    let said = text(&again.stdout);
    assert!(
        said.contains("0 failures found") && said.contains("1 runs of file data are lost"),
        "{said}"
    );
    assert_eq!(
        read_block(&scratch.at("flipped"), 3).unwrap(),
        data[3 * BLOCK as usize..]
    );
    scratch.umount(pid);
}

#[test]
fn an_interrupted_scrub_resumes_and_a_background_scrub_runs() {
    if fuse_missing("an_interrupted_scrub_resumes_and_a_background_scrub_runs") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    for index in 0..4 {
        write_synced(&scratch.at(&format!("data-{index}")), &pattern(1024, index));
    }
    // 16 MiB at 2 MiB/s: stopped by Ctrl-C after a second, which says
    // where (it died silently with 130, review 43).
    let client = Command::new(binary())
        .args(["scrub", scratch.mnt(), "--rate", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the scrub runs", Duration::from_secs(20), || {
        !scratch.status()["media"]["scrub"]["running"].is_null()
    });
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: a signal to the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(client.id() as i32, libc::SIGINT) }, 0);
    let interrupted = client.wait_with_output().unwrap();
    assert_eq!(interrupted.status.code(), Some(130));
    let said = text(&interrupted.stderr);
    assert!(
        said.contains("interrupted by SIGINT in ") && said.contains(" read; the mount stops"),
        "{said}"
    );

    // Started at once, it waits for the stopped one to end and resumes
    // there (it was refused as a second scrub for half a second). Not a
    // terminal: plain progress lines, then the summary.
    let finish = vigilfs(&["scrub", scratch.mnt()]);
    assert_eq!(finish.status.code(), Some(0), "{}", text(&finish.stderr));
    let said = text(&finish.stdout);
    assert!(said.contains("resumed an interrupted scrub"), "{said}");
    assert!(
        said.contains("scrub complete") && said.contains("0 lost"),
        "{said}"
    );
    assert!(scratch.status()["media"]["scrub"]["resume_at"].is_null());
    scratch.umount(pid);

    let pid = scratch.mount(&["-o", "scrub_interval=1s"]);
    wait_until("a background scrub ends", Duration::from_secs(30), || {
        scratch.status()["media"]["scrub"]["last"]["complete"] == true
    });
    assert_eq!(scratch.status()["media"]["scrub"]["interval_seconds"], 1);
    scratch.umount(pid);
}

/// On a frozen mount a failure report is queued for the thaw: its outcome
/// is not known, so the exit status is neither 0 (nothing lost) nor 4.
#[test]
fn a_failure_reported_to_a_frozen_mount_exits_queued() {
    if fuse_missing("a_failure_reported_to_a_frozen_mount_exits_queued") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    write_synced(&scratch.at("file"), &pattern(4, 1));
    let block = device_block(scratch.mnt(), "file", 1);
    let frozen = vigilfs(&["freeze", scratch.mnt()]);
    assert_eq!(frozen.status.code(), Some(0), "{}", text(&frozen.stderr));
    let offset = (block * BLOCK).to_string();
    let arguments = [
        "notify-failure",
        scratch.mnt(),
        "--offset",
        &offset,
        "--length",
        "4K",
    ];
    let queued = vigilfs(&arguments);
    assert_eq!(queued.status.code(), Some(3), "{}", text(&queued.stdout));
    assert!(text(&queued.stdout).contains("when it is thawed"));
    let thawed = vigilfs(&["thaw", scratch.mnt()]);
    assert_eq!(thawed.status.code(), Some(0), "{}", text(&thawed.stderr));
    scratch.umount(pid);
}

#[test]
fn absurd_ranges_and_missing_targets_are_refused_clearly() {
    if fuse_missing("absurd_ranges_and_missing_targets_are_refused_clearly") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    for (offset, length) in [
        ("64M", "4K"),
        ("0", "1T"),
        ("18446744073709551615", "2"),
        ("-1", "4K"),
        ("0", "0"),
        ("1T", "1"),
        ("63M", "2M"),
    ] {
        for command in ["owners", "notify-failure"] {
            let output = vigilfs(&[
                command,
                scratch.mnt(),
                "--offset",
                offset,
                "--length",
                length,
            ]);
            // Bad arguments, and no media failure said to have happened.
            assert_eq!(
                output.status.code(),
                Some(2),
                "{command} {offset} {length}: {}",
                text(&output.stderr)
            );
            assert!(!text(&output.stderr).is_empty());
            assert!(!text(&output.stderr).contains("panicked"));
            assert!(!text(&output.stderr).contains("media failure"));
        }
    }
    scratch.umount(pid);
    let missing = vigilfs(&[
        "owners",
        scratch
            .directory
            .path()
            .join("nothing.img")
            .to_str()
            .unwrap(),
        "--offset",
        "0",
        "--length",
        "4K",
    ]);
    assert_eq!(missing.status.code(), Some(8), "{}", text(&missing.stderr));
    // An unmounted image answers offline, and refuses the same ranges as
    // the mount, with the same exit code (it said 1: review 26).
    let offline = owners(scratch.img(), 4096, 4096);
    assert_eq!(kinds(&offline), ["superblock"]);
    for (offset, length) in [("64M", "4K"), ("63M", "2M")] {
        let arguments = [
            "owners",
            scratch.img(),
            "--offset",
            offset,
            "--length",
            length,
        ];
        let output = vigilfs(&arguments);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    }
}

/// A scrub held back by a tiny `--rate` whose client went away stops with
/// it: the unmount that follows is clean and a file closed before it is
/// there after the remount. (The scrub used to sleep on inside the daemon;
/// the unmount gave up after 30 s without writing the file back.)
#[test]
fn a_slow_scrub_whose_client_is_gone_does_not_keep_the_unmount_from_writing_back() {
    if fuse_missing("a_slow_scrub_whose_client_is_gone") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "writeback_interval=600"]);
    let mut scrub = Command::new(binary())
        .args(["scrub", scratch.mnt(), "--rate", "0.000001"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    scrub.kill().unwrap();
    scrub.wait().unwrap();
    let data = pattern(73, 5);
    fs::write(scratch.at("closed-before-umount"), &data).unwrap();
    let started = std::time::Instant::now();
    scratch.umount(pid);
    assert!(
        scratch.log().contains("(clean)"),
        "after {:?}: {}",
        started.elapsed(),
        scratch.log()
    );
    let pid = scratch.mount(&[]);
    assert_eq!(fs::read(scratch.at("closed-before-umount")).unwrap(), data);
    scratch.umount(pid);
}

/// Writes 16 MiB to the mount and starts a scrub of it at 1 MiB/s (JSON
/// summary), returned once it runs.
fn running_scrub(scratch: &Scratch) -> std::process::Child {
    for index in 0..4 {
        write_synced(&scratch.at(&format!("data-{index}")), &pattern(1024, index));
    }
    let client = Command::new(binary())
        .args(["scrub", scratch.mnt(), "--rate", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the scrub runs", Duration::from_secs(20), || {
        !scratch.status()["media"]["scrub"]["running"].is_null()
    });
    client
}

/// A scrub the unmount stops read only part of the filesystem: its exit
/// status says so (32), so a cron job does not take it for a clean pass.
#[test]
fn a_scrub_stopped_by_the_unmount_exits_stopped() {
    if fuse_missing("a_scrub_stopped_by_the_unmount_exits_stopped") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    // Data lost before the scrub, and still unreadable: 4 as well, though
    // the unmount leaves no mount to ask at the end.
    write_synced(&scratch.at("lost"), &pattern(2, 3));
    let block = device_block(scratch.mnt(), "lost", 1);
    scratch.inject(&["--bad-blocks", &format!("{block}:1")]);
    scratch.inject(&["--drop-caches"]);
    assert!(read_block(&scratch.at("lost"), 1).is_err());
    // The scrub counts what was lost before it from the status it starts
    // with: the worker must have poisoned the block by then.
    wait_until("the failure is handled", Duration::from_secs(30), || {
        scratch.status()["media"]["poisoned_runs"] == 1
    });
    let client = running_scrub(&scratch);
    scratch.umount(pid);
    let output = client.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(32 + 4),
        "{}",
        text(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["complete"], false, "{summary}");
}

/// A block lost to a media error (a read the device failed) whose sector
/// the device recovered since: a scrub reads it back matching its
/// checksum, and the data is returned again (it was lost until then).
#[test]
fn a_media_error_that_no_longer_reproduces_is_healed_by_scrub() {
    if fuse_missing("a_media_error_that_no_longer_reproduces_is_healed_by_scrub") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let data = pattern(4, 11);
    write_synced(&scratch.at("sector"), &data);
    scratch.umount(pid);
    let pid = scratch.mount(&[]);
    let block = device_block(scratch.mnt(), "sector", 2);
    scratch.inject(&["--bad-blocks", &format!("{block}:1")]);
    assert!(read_block(&scratch.at("sector"), 2).is_err());
    // The worker poisons the block after the read returned: wait for it,
    // or the read below may reach the recovered device first.
    wait_until("the failure is handled", Duration::from_secs(30), || {
        scratch.status()["media"]["poisoned_runs"] == 1
    });
    scratch.inject(&["--clear"]);
    assert!(read_block(&scratch.at("sector"), 2).is_err(), "poisoned");
    let scrub = vigilfs(&["scrub", scratch.mnt(), "--json"]);
    assert_eq!(scrub.status.code(), Some(0), "{}", text(&scrub.stderr));
    let summary: Value = serde_json::from_slice(&scrub.stdout).unwrap();
    assert_eq!(summary["healed_blocks"], 1, "{summary}");
    // The summary counts what is lost when the scrub ended, for a client
    // whose mount is gone by then (review 34: an unmount right after a
    // scrub healed the only loss still exited 4, from a count taken before).
    assert_eq!(summary["poisoned_runs"], 0, "{summary}");
    assert_eq!(scratch.status()["media"]["poisoned_runs"], 0);
    assert_eq!(fs::read(scratch.at("sector")).unwrap(), data);
    scratch.umount(pid);
    assert_eq!(vigilfs(&["fsck", scratch.img()]).status.code(), Some(0));
}

/// A shutdown stops a running scrub as an unmount does (32: not
/// everything was read), and a scrub of a shut-down mount is refused:
/// nothing it found could be healed or recorded.
#[test]
fn a_shutdown_stops_a_scrub_and_refuses_the_next() {
    if fuse_missing("a_shutdown_stops_a_scrub_and_refuses_the_next") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let client = running_scrub(&scratch);
    let shutdown = vigilfs(&["shutdown", scratch.mnt()]);
    assert_eq!(
        shutdown.status.code(),
        Some(0),
        "{}",
        text(&shutdown.stderr)
    );
    let output = client.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(32), "{}", text(&output.stderr));
    let again = vigilfs(&["scrub", scratch.mnt()]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("shut down"),
        "{}",
        text(&again.stderr)
    );
    scratch.umount(pid);
}

#[test]
fn a_checksum_failure_that_no_longer_reproduces_is_healed_by_scrub() {
    if fuse_missing("a_checksum_failure_that_no_longer_reproduces_is_healed_by_scrub") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let data = pattern(4, 9);
    write_synced(&scratch.at("flaky"), &data);
    scratch.umount(pid);
    let pid = scratch.mount(&[]);
    // Every data read comes back corrupted (a bad cable): the reads fail
    // and the blocks are poisoned as lost.
    scratch.inject(&["--corrupt-reads", "--class", "data"]);
    assert!(read_block(&scratch.at("flaky"), 1).is_err());
    wait_until("the failure is handled", Duration::from_secs(30), || {
        scratch.status()["media"]["poisoned_runs"].as_u64() > Some(0)
    });
    scratch.inject(&["--clear"]);
    assert!(read_block(&scratch.at("flaky"), 1).is_err(), "poisoned");
    // The fault is gone, the data on the medium was never bad: a scrub
    // reads it back whole and lifts the poison.
    let scrub = vigilfs(&["scrub", scratch.mnt(), "--json"]);
    let summary: Value = serde_json::from_slice(&scrub.stdout).unwrap();
    assert!(summary["healed_blocks"].as_u64() > Some(0), "{summary}");
    assert_eq!(scratch.status()["media"]["poisoned_runs"], 0);
    assert_eq!(fs::read(scratch.at("flaky")).unwrap(), data);
    scratch.umount(pid);
    assert_eq!(vigilfs(&["fsck", scratch.img()]).status.code(), Some(0));
}
