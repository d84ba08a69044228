//! The crash lab through real mounts: power cuts of a `-o crashable`
//! mount (with and without torn writes), faults aimed at paths and
//! operations (close included), delays, corrupt reads, the fault log, and
//! the crash-test runner on SQLite and on a careless writer.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn json_of(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", text(&output.stdout)))
}

fn write_synced(path: &Path, content: &[u8]) {
    let mut file = File::create(path).unwrap();
    file.write_all(content).unwrap();
    file.sync_all().unwrap();
}

fn sync_directory(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

/// Every path `unsynced --json` (or a cut's `lost`) names.
fn named_paths(unsynced: &Value) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for file in unsynced["files"].as_array().unwrap() {
        for path in file["paths"].as_array().unwrap() {
            paths.insert(path.as_str().unwrap().to_string());
        }
    }
    for change in unsynced["changes"].as_array().unwrap() {
        for key in ["path", "new_path"] {
            if let Some(path) = change[key].as_str() {
                paths.insert(path.to_string());
            }
        }
    }
    paths
}

/// Every regular file under `root`, by path relative to it, with its
/// content.
fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in fs::read_dir(&directory).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.push((name, fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// A mixed workload, then a cut: everything an fsync made durable is there
/// afterwards, exactly what `unsynced` predicted is what the cut reports
/// lost, every file it did not name is unchanged, fsck finds the image
/// clean, the mount serves again, and descriptors opened before the cut
/// fail with EIO.
fn power_cut_under_a_mixed_workload(torn: bool) {
    let scratch = Scratch::new();
    let pid = scratch.mount(&[
        "--size",
        "64M",
        "-o",
        "crashable,writeback_interval=3600,dirty=1M",
    ]);
    let root = &scratch.mountpoint;
    // More than the dirty limit, never synced: writeback puts it on the
    // device, and the syncs below make it durable.
    let big: Vec<u8> = (0..4 << 20)
        .map(|index: u32| (index * 7 % 251) as u8)
        .collect();
    fs::write(root.join("big"), &big).unwrap();
    // Durable: a directory of fsynced files, the directory fsynced too.
    fs::create_dir(root.join("synced")).unwrap();
    for index in 0..5 {
        let content = format!("synced file {index}\n").repeat(100 + index * 50);
        write_synced(&root.join(format!("synced/s{index}")), content.as_bytes());
    }
    sync_directory(&root.join("synced"));
    sync_directory(root);
    let held = File::open(root.join("synced/s2")).unwrap();
    // Not durable: new files never fsynced, an append to a synced file, a
    // rename without a directory fsync.
    for index in 0..3 {
        fs::write(root.join(format!("u{index}")), format!("unsynced {index}")).unwrap();
    }
    OpenOptions::new()
        .append(true)
        .open(root.join("synced/s1"))
        .unwrap()
        .write_all(b"appended, never synced\n")
        .unwrap();
    fs::rename(root.join("synced/s4"), root.join("renamed-s4")).unwrap();

    let before = snapshot(root);
    let predicted = vigilfs(&["unsynced", scratch.mnt(), "--json"]);
    assert_eq!(
        predicted.status.code(),
        Some(0),
        "{}",
        text(&predicted.stderr)
    );
    let predicted = named_paths(&json_of(&predicted));
    for path in ["u0", "u1", "u2", "synced/s1", "renamed-s4"] {
        assert!(
            predicted.contains(path),
            "{path} is not durable: {predicted:?}"
        );
    }
    for path in ["synced/s0", "synced/s2", "synced/s3", "big"] {
        assert!(
            !predicted.contains(path),
            "{path} is durable: {predicted:?}"
        );
    }

    let mut cut = vec!["--power-cut", "--json"];
    if torn {
        cut.extend(["--torn", "--seed", "5"]);
    }
    let report = json_of(&scratch.inject(&cut));
    assert_eq!(named_paths(&report["lost"]), predicted, "{report:#}");
    assert_eq!(report["torn"], torn);
    assert_eq!(report["replayed"], true);

    // Every file not named is as it was; the named ones lost what was not
    // synced (data in memory is gone whether the loss tears or not).
    let after = snapshot(root);
    let after_paths: BTreeSet<&str> = after.iter().map(|(path, _)| path.as_str()).collect();
    for (path, content) in &before {
        if predicted.contains(path) {
            let now = after.iter().find(|(name, _)| name == path);
            assert!(
                now.is_none_or(|(_, now)| now != content),
                "{path} kept unsynced data"
            );
        } else {
            let now = after.iter().find(|(name, _)| name == path);
            assert_eq!(now.map(|(_, now)| now), Some(content), "{path} changed");
        }
    }
    assert!(!after_paths.contains("u0"));
    assert_eq!(fs::read(root.join("big")).unwrap(), big);
    assert_eq!(
        fs::read(root.join("synced/s1")).unwrap(),
        "synced file 1\n".repeat(150).as_bytes(),
        "the synced version, without the append"
    );
    assert!(
        after_paths.contains("synced/s4"),
        "the rename was not durable: s4 is back under its old name"
    );

    // The descriptor of the previous boot is dead.
    let mut buffer = [0u8; 16];
    let error = held.read_at(&mut buffer, 0).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    drop(held);
    // The mount serves: a new file round-trips, and a second cut works.
    write_synced(&root.join("after"), b"written after the cut");
    assert_eq!(
        fs::read(root.join("after")).unwrap(),
        b"written after the cut"
    );
    let status = scratch.status();
    assert_eq!(status["crash_lab"]["power_cuts"], 1);
    scratch.umount(pid);
    let checked = vigilfs(&["fsck", scratch.img()]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stdout));
}

#[test]
fn a_power_cut_keeps_what_was_synced_and_loses_exactly_what_unsynced_predicted() {
    if fuse_missing("a_power_cut_keeps_what_was_synced_and_loses_exactly_what_unsynced_predicted") {
        return;
    }
    power_cut_under_a_mixed_workload(false);
}

#[test]
fn a_torn_power_cut_keeps_what_was_synced_and_loses_exactly_what_unsynced_predicted() {
    if fuse_missing(
        "a_torn_power_cut_keeps_what_was_synced_and_loses_exactly_what_unsynced_predicted",
    ) {
        return;
    }
    power_cut_under_a_mixed_workload(true);
}

#[test]
fn a_power_cut_needs_a_crashable_mount_and_crashable_needs_rw() {
    if fuse_missing("a_power_cut_needs_a_crashable_mount_and_crashable_needs_rw") {
        return;
    }
    let scratch = Scratch::new();
    let refused = vigilfs(&[
        "mount",
        scratch.img(),
        scratch.mnt(),
        "--size",
        "64M",
        "-o",
        "ro,crashable",
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("crashable"));
    let pid = scratch.mount(&["--size", "64M"]);
    let cut = vigilfs(&["inject", scratch.mnt(), "--power-cut"]);
    assert_ne!(cut.status.code(), Some(0));
    assert!(
        text(&cut.stderr).contains("crashable"),
        "{}",
        text(&cut.stderr)
    );
    scratch.umount(pid);
}

/// A lying disk's cut says what the lie cost: the file fsynced while
/// flushes were dropped is gone, and the report must not call every change
/// durable (it said "nothing: every change is durable").
#[test]
fn a_power_cut_after_dropped_flushes_says_acknowledged_changes_were_lost() {
    if fuse_missing("a_power_cut_after_dropped_flushes_says_acknowledged_changes_were_lost") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable"]);
    scratch.inject(&["--drop-flushes"]);
    // Not a rule, but status must not say "fault rules none" alone.
    let status = text(&vigilfs(&["status", scratch.mnt()]).stdout);
    assert!(status.contains("the device drops flushes"), "{status}");
    write_synced(&scratch.mountpoint.join("important"), b"acknowledged\n");
    sync_directory(&scratch.mountpoint);
    // What a cut would lose: not "nothing", though every change was synced.
    let unsynced = text(&vigilfs(&["unsynced", scratch.mnt()]).stdout);
    assert!(
        unsynced.contains("dropped") && !unsynced.contains("every change is durable"),
        "{unsynced}"
    );
    let cut = vigilfs(&["inject", scratch.mnt(), "--power-cut"]);
    assert_eq!(cut.status.code(), Some(0), "{}", text(&cut.stderr));
    let said = text(&cut.stdout);
    assert!(!scratch.mountpoint.join("important").exists());
    assert!(
        said.contains("dropped") && said.contains("lost too"),
        "{said}"
    );
    assert!(!said.contains("every change is durable"), "{said}");
    // An honest disk again: once a flush has kept everything, a cut owes
    // nothing to the lie.
    let cleared = text(&scratch.inject(&["--clear"]).stdout);
    assert!(cleared.contains("keeps what it flushes again"), "{cleared}");
    write_synced(&scratch.mountpoint.join("after"), b"kept\n");
    let json = json_of(&vigilfs(&[
        "inject",
        scratch.mnt(),
        "--power-cut",
        "--json",
    ]));
    assert_eq!(json["device"]["flushes_dropped"], 0, "{json:#}");
    assert!(scratch.mountpoint.join("after").exists());
    // The history explains the loss: the lying disk and each cut are
    // events (the lie was not, nor the cuts, which read as crashes), and
    // the cuts are in the fault log.
    let events_text = text(&vigilfs(&["events", scratch.mnt(), "--json"]).stdout);
    let actions: Vec<String> = events_text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["kind"] == "faults")
        .filter_map(|event| event["action"].as_str().map(str::to_string))
        .collect();
    for wanted in [
        "set drop-flushes",
        "power cut 1 (crash lab; the device drops flushes)",
        "cleared all",
        "power cut 2 (crash lab)",
    ] {
        assert!(
            actions.iter().any(|action| action == wanted),
            "{wanted}: {actions:?}"
        );
    }
    let cuts: Vec<u64> = fault_log(&scratch)
        .iter()
        .filter(|entry| entry["event"] == "power_cut")
        .filter_map(|entry| entry["cut"].as_u64())
        .collect();
    assert_eq!(cuts, [1, 2]);
    scratch.umount(pid);
}

/// After a power cut the mount has looked nothing up, yet `unsynced`
/// names what it would lose: files by their paths (every hard link), a
/// file unlinked while open as such, a new link by its new name. They
/// were "inode 10 (no known path)" and "link (inode 2)".
#[test]
fn unsynced_names_files_a_recovered_mount_never_looked_up() {
    if fuse_missing("unsynced_names_files_a_recovered_mount_never_looked_up") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable,writeback_interval=3600"]);
    let root = &scratch.mountpoint;
    fs::create_dir(root.join("d")).unwrap();
    write_synced(&root.join("d/t4"), b"synced before the cut");
    write_synced(&root.join("gone"), b"synced before the cut");
    fs::hard_link(root.join("d/t4"), root.join("d/second")).unwrap();
    sync_directory(&root.join("d"));
    sync_directory(root);
    let cut = vigilfs(&["inject", scratch.mnt(), "--power-cut"]);
    assert_eq!(cut.status.code(), Some(0), "{}", text(&cut.stderr));
    OpenOptions::new()
        .write(true)
        .open(root.join("d/t4"))
        .unwrap()
        .write_all_at(b"unsynced", 0)
        .unwrap();
    let held = OpenOptions::new()
        .write(true)
        .open(root.join("gone"))
        .unwrap();
    held.write_all_at(b"unsynced", 0).unwrap();
    fs::remove_file(root.join("gone")).unwrap();
    fs::hard_link(root.join("d/t4"), root.join("d/third")).unwrap();
    let unsynced = json_of(&vigilfs(&["unsynced", scratch.mnt(), "--json"]));
    let files = unsynced["files"].as_array().unwrap();
    let t4 = files
        .iter()
        .find(|file| file["unlinked"] == false)
        .expect("d/t4's data");
    let mut paths: Vec<&str> = t4["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    paths.sort_unstable();
    // Every hard link, those the mount never looked up too.
    assert_eq!(paths, ["d/second", "d/t4", "d/third"], "{unsynced:#}");
    assert!(
        files.iter().any(|file| file["unlinked"] == true),
        "{unsynced:#}"
    );
    let said = text(&vigilfs(&["unsynced", scratch.mnt()]).stdout);
    assert!(said.contains("(deleted, still open)"), "{said}");
    assert!(said.contains("d/third"), "{said}");
    assert!(!said.contains("no known path"), "{said}");
    drop(held);
    scratch.umount(pid);
}

/// The fault log as JSON entries.
fn fault_log(scratch: &Scratch) -> Vec<Value> {
    let log = scratch.inject(&["--log", "--json"]);
    text(&log.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn fsync_errno(path: &Path) -> Option<i32> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(b"record\n").unwrap();
    file.sync_all()
        .err()
        .map(|error| error.raw_os_error().unwrap())
}

#[test]
fn faults_aimed_at_paths_and_operations_hit_only_their_targets_and_are_all_logged() {
    if fuse_missing(
        "faults_aimed_at_paths_and_operations_hit_only_their_targets_and_are_all_logged",
    ) {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let root = &scratch.mountpoint;
    fs::create_dir(root.join("wal")).unwrap();
    // The 2nd fsync of a WAL file fails; nothing else does.
    scratch.inject(&["--op", "fsync", "--path", "wal/*", "--nth", "2"]);
    assert_eq!(fsync_errno(&root.join("wal/0001")), None);
    assert_eq!(fsync_errno(&root.join("data")), None);
    assert_eq!(fsync_errno(&root.join("wal/0001")), Some(libc::EIO));
    assert_eq!(fsync_errno(&root.join("data")), None);
    assert_eq!(
        fsync_errno(&root.join("wal/0002")),
        None,
        "--nth fires once"
    );
    // A rename fails with ENOSPC once; other operations go through.
    scratch.inject(&["--op", "rename", "--errno", "ENOSPC", "--limit", "1"]);
    fs::write(root.join("from"), b"x").unwrap();
    let error = fs::rename(root.join("from"), root.join("to")).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    fs::rename(root.join("from"), root.join("to")).unwrap();
    // Writeback of the .db files fails (a data rule, aimed by path); a
    // file created after the rule matches too.
    scratch.inject(&["--fail-writes", "--path", "*.db"]);
    assert_eq!(fsync_errno(&root.join("new.db")), Some(libc::EIO));
    assert_eq!(fsync_errno(&root.join("new.txt")), None);

    // Every firing is logged with its path; the counts agree with --list.
    let log = fault_log(&scratch);
    let fired: Vec<&Value> = log
        .iter()
        .filter(|entry| entry["event"] == "fired")
        .collect();
    let of_rule = |rule: u64| {
        fired
            .iter()
            .filter(|entry| entry["rule"] == rule)
            .map(|entry| entry["path"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of_rule(1).first().map(String::as_str),
        Some("wal/0001"),
        "{log:#?}"
    );
    assert!(of_rule(1).iter().all(|path| path == "wal/0001"));
    assert_eq!(of_rule(2), vec!["from".to_string()]);
    // A rename's firing names the directory its entry is in, not as the
    // file's inode (review 53: "rename from (inode 1)").
    let renamed = fired.iter().find(|entry| entry["rule"] == 2).unwrap();
    assert_eq!(renamed["directory"].as_u64(), Some(1), "{renamed:#}");
    assert_eq!(renamed["inode"].as_u64(), None, "{renamed:#}");
    let said = text(&scratch.inject(&["--log"]).stdout);
    assert!(
        said.contains("fired: rename from (in directory inode 1)"),
        "{said}"
    );
    assert!(!of_rule(3).is_empty() && of_rule(3).iter().all(|path| path == "new.db"));
    let set = log.iter().filter(|entry| entry["event"] == "set").count();
    assert_eq!(set, 3, "each rule set is logged: {log:#?}");
    let list = text(&scratch.inject(&["--list"]).stdout);
    assert!(list.contains("injected 1"), "{list}");
    scratch.inject(&["--clear"]);
    assert!(fault_log(&scratch)
        .iter()
        .any(|entry| entry["event"] == "cleared"));
    scratch.umount(pid);
}

/// A write --op rule's firing names the bytes the program wrote, in the
/// log's JSON and its text (review 44: offset and length were null).
#[test]
fn a_write_rule_logs_the_file_bytes_it_failed() {
    if fuse_missing("a_write_rule_logs_the_file_bytes_it_failed") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let path = scratch.at("table");
    fs::write(&path, b"").unwrap();
    scratch.inject(&[
        "--op", "write", "--path", "table", "--errno", "ENOSPC", "--limit", "1",
    ]);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let error = file.write_at(&[5u8; 100], 8192).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    let fired: Vec<Value> = fault_log(&scratch)
        .into_iter()
        .filter(|entry| entry["event"] == "fired")
        .collect();
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(
        (&fired[0]["offset"], &fired[0]["length"]),
        (&json!(8192), &json!(100))
    );
    let said = text(&scratch.inject(&["--log"]).stdout);
    assert!(said.contains("fired: write table (inode "), "{said}");
    assert!(said.contains(") bytes 8192+100: ENOSPC"), "{said}");
    assert!(!said.contains("device bytes"), "{said}");
    drop(file);
    scratch.umount(pid);
}

#[test]
fn delays_hold_exactly_the_operations_they_target() {
    if fuse_missing("delays_hold_exactly_the_operations_they_target") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let root = &scratch.mountpoint;
    // Long enough that an untargeted fsync on a loaded machine stays well
    // under it.
    let delay = Duration::from_secs(5);
    scratch.inject(&["--op", "fsync", "--path", "slow/*", "--delay", "5s"]);
    fs::create_dir(root.join("slow")).unwrap();
    let timed = |path: &Path| {
        let start = Instant::now();
        assert_eq!(fsync_errno(path), None, "a delay is not a failure");
        start.elapsed()
    };
    assert!(timed(&root.join("slow/a")) >= delay);
    assert!(timed(&root.join("fast")) < delay);
    scratch.inject(&["--clear"]);
    // A slow disk: every flush waits.
    scratch.inject(&["--delay", "200ms", "--io", "flush"]);
    assert!(timed(&root.join("fast")) >= Duration::from_millis(200));
    scratch.inject(&["--clear"]);
    scratch.umount(pid);
}

/// A glob is matched against names as they are, and as `vigilfs events`
/// prints them (a tab as `\x09`): a rule typed either way fires (one typed
/// with the real character matched nothing).
#[test]
fn a_path_rule_fires_for_names_with_control_characters_and_backslashes() {
    if fuse_missing("a_path_rule_fires_for_names_with_control_characters_and_backslashes") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let root = &scratch.mountpoint;
    for (name, glob) in [
        ("tab\there", "tab\there"),
        ("back\\slash", "back\\slash"),
        ("tab\tagain", "tab\\x09again"),
        ("any\tone", "any?one"),
    ] {
        scratch.inject(&["--op", "fsync", "--path", glob]);
        assert_eq!(
            fsync_errno(&root.join(name)),
            Some(libc::EIO),
            "{name:?} by {glob:?}"
        );
        scratch.inject(&["--clear"]);
    }
    scratch.umount(pid);
}

/// The errno `close(2)` of a fresh descriptor of `path` returns, if any.
fn close_errno(path: &Path) -> Option<i32> {
    use std::os::fd::IntoRawFd;
    let descriptor = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .into_raw_fd();
    // SAFETY: the descriptor was just taken out of its File; nothing else
    // owns or closes it.
    let closed = unsafe { libc::close(descriptor) };
    (closed != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
}

/// A read rule's failure reaches the program: the kernel's readahead
/// took the first failure and dropped it, then read the page again, and
/// the program got its data while the rule counted an injection. A failed
/// read's bytes keep failing for a second, for buffered and direct reads
/// alike: the kernel retries (a page fault twice), and a direct read that
/// fails in its second part is a short read, after which the program asks
/// for the rest (dd read a whole file while the rule counted a failure).
#[test]
fn a_read_rule_with_a_limit_fails_the_programs_read_once() {
    if fuse_missing("a_read_rule_with_a_limit_fails_the_programs_read_once") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let data = vec![b'x'; 4 << 20];
    write_synced(&scratch.at("p1"), &data);
    let add_rule = |skip: &str| {
        rule_id(&scratch.inject(&[
            "--op",
            "read",
            "--path",
            "p1",
            "--skip",
            skip,
            "--limit",
            "1",
            "--drop-caches",
        ]))
    };
    let buffered = add_rule("0");
    let mut file = File::open(scratch.at("p1")).unwrap();
    let mut buffer = vec![0; 4096];
    let failed = file.read(&mut buffer);
    assert_eq!(
        failed.map_err(|error| error.raw_os_error()),
        Err(Some(libc::EIO))
    );
    // Once the bytes' failure has passed, the rule's limit is reached.
    std::thread::sleep(Duration::from_millis(1100));
    let mut again = Vec::new();
    file.read_to_end(&mut again).unwrap();
    assert_eq!(again, data);
    drop(file);
    let removed = text(&scratch.inject(&["--remove", &buffered.to_string()]).stdout);
    assert!(removed.contains("injected 1)"), "{removed}");

    // The second request of one large direct read fails.
    let direct = add_rule("1");
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(scratch.at("p1"))
        .unwrap();
    let mut buffer = vec![0u8; (4 << 20) + 4096];
    let aligned = buffer.as_ptr().align_offset(4096);
    let whole = &mut buffer[aligned..aligned + (4 << 20)];
    let mut read = 0;
    let outcome = loop {
        match file.read_at(&mut whole[read..], read as u64) {
            Ok(0) => break Ok(read),
            Ok(count) => read += count,
            Err(error) => break Err(error.raw_os_error()),
        }
    };
    assert_eq!(outcome, Err(Some(libc::EIO)), "after {read} bytes");
    drop(file);
    let removed = text(&scratch.inject(&["--remove", &direct.to_string()]).stdout);
    assert!(removed.contains("injected 1)"), "{removed}");
    scratch.umount(pid);
}

#[test]
fn a_close_rule_fails_close_of_files_opened_after_it() {
    if fuse_missing("a_close_rule_fails_close_of_files_opened_after_it") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let root = &scratch.mountpoint;
    // Opened before any rule: the kernel was told closes need no report.
    let early = File::create(root.join("early.db")).unwrap();
    assert_eq!(close_errno(&root.join("a.db")), None);
    scratch.inject(&["--op", "close", "--path", "*.db", "--errno", "EDQUOT"]);
    assert_eq!(close_errno(&root.join("a.db")), Some(libc::EDQUOT));
    assert_eq!(close_errno(&root.join("new.db")), Some(libc::EDQUOT));
    assert_eq!(close_errno(&root.join("a.txt")), None);
    drop(early);
    scratch.inject(&["--clear"]);
    assert_eq!(close_errno(&root.join("a.db")), None);
    scratch.umount(pid);
}

#[test]
fn corrupt_reads_are_never_returned_as_data() {
    if fuse_missing("corrupt_reads_are_never_returned_as_data") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let content: Vec<u8> = (0..1u32 << 20)
        .map(|index| (index * 13 % 253) as u8)
        .collect();
    write_synced(&scratch.at("file"), &content);
    scratch.umount(pid);
    // A fresh mount: nothing cached, every read goes to the device.
    let pid = scratch.mount(&[]);
    scratch.inject(&[
        "--corrupt-reads",
        "--class",
        "data",
        "--flaky",
        "50",
        "--seed",
        "3",
    ]);
    let file = File::open(scratch.at("file")).unwrap();
    let (mut good, mut failed) = (0, 0);
    for block in 0..256u64 {
        let mut buffer = vec![0u8; 4096];
        match file.read_at(&mut buffer, block * 4096) {
            Ok(4096) => {
                assert_eq!(
                    buffer,
                    content[block as usize * 4096..][..4096],
                    "block {block}"
                );
                good += 1;
            }
            Ok(short) => panic!("a short read of {short} bytes at block {block}"),
            Err(error) => {
                assert_eq!(error.raw_os_error(), Some(libc::EIO));
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "bits were flipped and found: {good} good");
    // The failure worker marks them lost moments after the reads failed.
    wait_until(
        "the failed blocks are marked lost",
        Duration::from_secs(30),
        || scratch.status()["media"]["poisoned_runs"].as_u64() > Some(0),
    );
    // The blocks the rule made unreadable stay marked lost after it goes:
    // the clear says so, and what gives them back.
    let cleared = text(&scratch.inject(&["--clear"]).stdout);
    assert!(
        cleared.contains("runs of file blocks stay marked lost") && cleared.contains("scrub"),
        "{cleared}"
    );
    let status = scratch.status();
    assert!(status.to_string().contains("checksum"), "{status:#}");
    let fired = fault_log(&scratch)
        .into_iter()
        .filter(|entry| entry["event"] == "fired")
        .count();
    assert!(
        fired >= failed,
        "{fired} flips logged, {failed} reads failed"
    );
    drop(file);
    scratch.umount(pid);
}

fn require_sqlite3() {
    assert!(
        Path::new("/usr/bin/sqlite3").exists() || which("sqlite3"),
        "sqlite3 is missing: scripts/test installs it (apt-get install sqlite3)"
    );
}

fn which(command: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// `vigilfs crash-test --json` with scripts written to a scratch directory.
fn crash_test(scripts: &Path, workload: &str, check: &str, extra: &[&str]) -> std::process::Output {
    let mut extra = extra.to_vec();
    extra.push("--json");
    crash_test_report(scripts, workload, check, &extra)
}

/// `vigilfs crash-test` with scripts written to a scratch directory, its
/// report as people read it unless `extra` asks for JSON.
fn crash_test_report(
    scripts: &Path,
    workload: &str,
    check: &str,
    extra: &[&str],
) -> std::process::Output {
    for (name, body) in [("workload.sh", workload), ("check.sh", check)] {
        let path = scripts.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&path)
            .status()
            .unwrap();
    }
    let acknowledged = scripts.join("acknowledged");
    let workload = format!(
        "{} {}",
        scripts.join("workload.sh").display(),
        acknowledged.display()
    );
    let check = format!(
        "{} {}",
        scripts.join("check.sh").display(),
        acknowledged.display()
    );
    let work = scripts.join("work");
    let mut arguments = vec![
        "crash-test",
        "--workload",
        &workload,
        "--check",
        &check,
        "--size",
        "64M",
        "--work-dir",
        work.to_str().unwrap(),
    ];
    arguments.extend_from_slice(extra);
    vigilfs(&arguments)
}

/// The report of a crash-test run in which every check held.
fn passed(output: &std::process::Output) -> Value {
    let report = json_of(output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report:#}\n{}",
        text(&output.stderr)
    );
    assert_eq!(report["failed"], 0);
    report
}

#[test]
fn the_crash_test_runner_finds_no_loss_in_sqlite_with_synchronous_full() {
    if fuse_missing("the_crash_test_runner_finds_no_loss_in_sqlite_with_synchronous_full") {
        return;
    }
    require_sqlite3();
    let scripts = tempfile::tempdir().unwrap();
    // Each row is acknowledged (in a file outside the mount) once its
    // one-row transaction committed; every acknowledged row must survive.
    let workload = r#"set -e
: > "$1"
sqlite3 t.db "pragma journal_mode=wal; create table t(id integer primary key, v text);" >/dev/null
i=1
while [ $i -le 30 ]; do
    sqlite3 t.db "pragma synchronous=full; insert into t values($i, hex(randomblob(64)));"
    echo $i >> "$1"
    i=$((i+1))
done
"#;
    let check = r#"last=$(tail -n 1 "$1"); last=${last:-0}
[ "$last" = 0 ] && [ ! -s t.db ] && exit 0
ok=$(sqlite3 t.db "pragma integrity_check" 2>&1) || { echo "sqlite3: $ok"; exit 1; }
[ "$ok" = ok ] || { echo "integrity_check: $ok"; exit 1; }
rows=$(sqlite3 t.db "select count(*) from t where id <= $last")
[ "$rows" = "$last" ] || { echo "$rows of $last acknowledged rows"; exit 1; }
"#;
    for torn in [false, true] {
        let extra: &[&str] = if torn {
            &["--cuts", "6", "--torn"]
        } else {
            &["--cuts", "6"]
        };
        let report = passed(&crash_test(scripts.path(), workload, check, extra));
        let trials = report["trials"].as_array().unwrap();
        assert_eq!(trials.len(), 6);
        assert!(
            report["dry_run"]["fsyncs"].as_u64().unwrap() >= 30,
            "{report:#}"
        );
        for trial in trials {
            assert_eq!(trial["passed"], true, "{trial:#}");
            assert_eq!(trial["fsck_clean"], true);
        }
    }
}

/// With --torn, a run whose cuts had nothing to tear says so, not only "no
/// failure" (review 59: 50 trials of small transactions tore nothing, and
/// only each trial's line showed it).
#[test]
fn a_torn_run_that_tore_nothing_says_so() {
    if fuse_missing("a_torn_run_that_tore_nothing_says_so") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let workload = r#"set -e
: > "$1"
for i in 1 2 3 4; do printf "$i" >> f; sync f; echo $i >> "$1"; done
"#;
    let output = crash_test_report(
        scripts.path(),
        workload,
        "exit 0",
        &["--cuts", "4", "--torn"],
    );
    let said = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{said}{}",
        text(&output.stderr)
    );
    let tore = said
        .lines()
        .any(|line| line.contains(" sectors unflushed") && !line.contains(", 0 sectors unflushed"));
    assert_eq!(said.contains("note: --torn tore nothing"), !tore, "{said}");
}

/// A program that writes, acknowledges and exits with no fsync at all is
/// caught by the first trial, which cuts after the workload ended. Cuts
/// fell only before writes and fsyncs (review 44), where nothing was
/// acknowledged yet: every trial passed.
#[test]
fn a_cut_after_the_workload_ended_catches_what_it_acknowledged_unsynced() {
    if fuse_missing("a_cut_after_the_workload_ended_catches_what_it_acknowledged_unsynced") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let workload = r#"set -e
: > "$1"
printf committed > f
echo acknowledged >> "$1"
"#;
    let check = r#"[ -s "$1" ] || exit 0
[ "$(cat f 2>/dev/null)" = committed ] || { echo "acknowledged, then lost"; exit 1; }
"#;
    let output = crash_test(scripts.path(), workload, check, &["--cuts", "2"]);
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials[0]["point"], Value::Null, "{report:#}");
    assert_eq!(trials[0]["cut_after_the_end"], true);
    assert_eq!(trials[0]["passed"], false);
    assert!(
        trials[0]["check"]["output"]
            .as_str()
            .unwrap()
            .contains("acknowledged, then lost"),
        "{report:#}"
    );
    assert_eq!(trials[1]["point"]["operation"], "write", "{report:#}");
    assert_eq!(trials[1]["passed"], true, "{report:#}");
    // The failed trial's image is kept there.
    fs::remove_dir_all(scripts.path().join("work")).unwrap();
    let said = text(&crash_test_report(scripts.path(), workload, check, &["--cuts", "1"]).stdout);
    assert!(said.contains("cut 1/1 after the workload ended"), "{said}");
}

/// A workload of metadata changes alone (a rename, no write, no fsync)
/// is cut after its end, where its unsynced rename is caught; it was
/// refused as "nothing to cut" (review 45). A workload that fails in that
/// trial, which no cut interrupted, fails the run as in the dry run.
#[test]
fn a_metadata_only_workload_is_cut_after_its_end_and_its_failure_there_is_seen() {
    if fuse_missing("a_metadata_only_workload_is_cut_after_its_end_and_its_failure_there_is_seen") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let rename = r#": > "$1"
mv a b
echo renamed >> "$1"
"#;
    let check = r#"[ -s "$1" ] || exit 0
[ -e b ] || { echo "the rename was acknowledged, then lost"; exit 1; }
"#;
    let output = crash_test(
        scripts.path(),
        rename,
        check,
        &["--cuts", "1", "--setup", "echo data > a"],
    );
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_eq!(report["moments"], 1, "{report:#}");
    assert_eq!(report["trials"][0]["cut_after_the_end"], true);

    fs::remove_dir_all(scripts.path().join("work")).unwrap();
    let failing = r#": > "$1"
echo x > f
[ "$VIGILFS_CUT" = 0 ] || { echo "fails in trials"; exit 3; }
"#;
    let output = crash_test_report(scripts.path(), failing, "true", &["--cuts", "1"]);
    assert_eq!(output.status.code(), Some(8), "{}", text(&output.stdout));
    let said = text(&output.stderr);
    assert!(
        said.contains("trial 1: the workload exited 3 before any cut")
            && said.contains("fails in trials"),
        "{said}"
    );
}

/// A program that replaces a file without fsyncing the new copy survives
/// on vigilfs, as on ext4 (the rename writes the new data back first);
/// `-o noauto_da_alloc` turns that off, so crash-test shows the loss it
/// would meet on a filesystem without the heuristic (review 51: it passed
/// every time, and nothing said why).
#[test]
fn an_unsynced_replacement_passes_unless_the_mount_is_noauto_da_alloc() {
    if fuse_missing("an_unsynced_replacement_passes_unless_the_mount_is_noauto_da_alloc") {
        return;
    }
    let workload = r#"set -e
printf old > cfg; sync cfg; sync .
printf new > cfg.tmp
mv cfg.tmp cfg
printf x > other; sync other
echo saved > "$1"
"#;
    let check = r#"[ -s "$1" ] || exit 0
got=$(cat cfg 2>/dev/null) || { echo "cfg is gone"; exit 1; }
[ "$got" = new ] || { echo "cfg holds '$got' after other's fsync made the rename durable"; exit 1; }
"#;
    let heuristic = tempfile::tempdir().unwrap();
    passed(&crash_test(
        heuristic.path(),
        workload,
        check,
        &["--cuts", "1"],
    ));
    let without = tempfile::tempdir().unwrap();
    let arguments = ["--cuts", "1", "-o", "noauto_da_alloc"];
    let output = crash_test(without.path(), workload, check, &arguments);
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    let trial = &report["trials"][0];
    assert_eq!(trial["passed"], false, "{report:#}");
    assert!(
        trial["replay"]
            .as_str()
            .is_some_and(|replay| replay.contains("noauto_da_alloc")),
        "{report:#}"
    );
}

#[test]
fn the_crash_test_runner_catches_a_careless_writer_and_replays_the_failure() {
    if fuse_missing("the_crash_test_runner_catches_a_careless_writer_and_replays_the_failure") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    // Saves each version to a temporary file renamed over the target,
    // without any fsync, and acknowledges it.
    let workload = r#"set -e
: > "$1"
for i in $(seq 1 20); do
    printf 'version %s\n' "$i" > state.tmp
    mv state.tmp state
    echo "$i" >> "$1"
done
"#;
    let check = r#"last=$(tail -n 1 "$1")
[ -z "$last" ] && exit 0
[ -f state ] || { echo "state is gone; version $last was acknowledged"; exit 1; }
got=$(sed -n 's/^version //p' state)
[ "${got:-0}" -ge "$last" ] || { echo "state holds version ${got:-none}; $last was acknowledged"; exit 1; }
"#;
    let arguments = ["--cuts", "4", "--seed", "11", "--timeout", "30s"];
    // The report people read names what each failed cut took: here the
    // renames never made durable (it gave only their number).
    let people = tempfile::tempdir().unwrap();
    let said = crash_test_report(people.path(), workload, check, &arguments);
    let said = text(&said.stdout);
    assert!(
        said.contains("not durable when the power went") && said.contains("rename state.tmp"),
        "{said}"
    );
    let output = crash_test(scripts.path(), workload, check, &arguments);
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    let failure = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|trial| trial["passed"] == false)
        .expect("a failed trial")
        .clone();
    assert_eq!(
        failure["fsck_clean"], true,
        "the loss is the program's, not vigilfs's"
    );
    assert!(failure["check"]["output"]
        .as_str()
        .unwrap()
        .contains("acknowledged"));
    assert!(Path::new(failure["image_kept"].as_str().unwrap()).exists());
    let replay = failure["replay"].as_str().unwrap();
    let index = failure["index"].as_u64().unwrap().to_string();
    assert!(replay.contains("--seed 11") && replay.contains(&format!("--cut-index {index}")));
    // A trial past the default 10 cuts needs the count to replay.
    assert!(replay.contains("--cuts 4"), "{replay}");
    // A check that timed out must time out the same way in the replay.
    assert!(replay.contains("--timeout 30s"), "{replay}");
    // The same work directory is refused while it holds the kept image:
    // the replay would overwrite it.
    let refused = crash_test(
        scripts.path(),
        workload,
        check,
        &["--cuts", "4", "--seed", "11", "--cut-index", &index],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("from an earlier run"));
    assert!(Path::new(failure["image_kept"].as_str().unwrap()).exists());
    // The replay line, pasted into a shell as printed, picks the same point
    // and fails the same way (it names this program by its path: `vigilfs`
    // need not be on the PATH), in a directory of its own inside the work
    // directory the run was given.
    let replay_directory = scripts.path().join("work").join(format!("replay-{index}"));
    assert!(
        replay.contains(&format!("--work-dir {}", replay_directory.display())),
        "{replay}"
    );
    assert!(
        replay.starts_with(&format!("{} crash-test ", binary())),
        "{replay}"
    );
    let again = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{replay} --json"))
        .output()
        .unwrap();
    let again = json_of(&again);
    let trial = &again["trials"][0];
    assert_eq!(trial["point"], failure["point"]);
    assert_eq!(trial["passed"], false);
    assert!(Path::new(trial["image_kept"].as_str().unwrap()).starts_with(&replay_directory));
}

/// A device that dropped flushes lost what it acknowledged: a failed
/// trial's report says so first, never that every change was durable (it
/// blamed the program under test).
#[test]
fn a_failed_cut_after_dropped_flushes_blames_the_device() {
    if fuse_missing("a_failed_cut_after_dropped_flushes_blames_the_device") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let workload = format!(
        r#"{} inject "$VIGILFS_MOUNT" --drop-flushes >/dev/null
: > "$1"
for i in $(seq 1 8); do
    dd if=/dev/zero of=f$i bs=4k count=1 conv=fsync 2>/dev/null && echo $i >> "$1"
done
"#,
        binary()
    );
    let check = r#"for i in $(cat "$1"); do [ -s f$i ] || { echo "f$i is gone"; exit 1; }; done"#;
    let output = crash_test_report(
        scripts.path(),
        &workload,
        check,
        &["--cuts", "2", "--seed", "1"],
    );
    let said = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("flushes the device dropped") && said.contains("the device dropped"),
        "{said}"
    );
    assert!(!said.contains("every change is durable"), "{said}");
}

/// A workload that unmounts its mount leaves the check running in the bare
/// directory below: the run says what happened rather than blame the check.
#[test]
fn a_workload_that_unmounts_its_mount_is_told_so() {
    if fuse_missing("a_workload_that_unmounts_its_mount_is_told_so") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let output = crash_test_report(
        scripts.path(),
        r#"echo data > f; sync f; cd /; umount -l "$VIGILFS_MOUNT""#,
        "test -s f",
        &["--cuts", "1"],
    );
    let said = text(&output.stderr);
    assert_eq!(output.status.code(), Some(8), "{said}");
    assert!(
        said.contains("the workload unmounted the mount it runs in"),
        "{said}"
    );
    assert!(mounts_under(&scripts.path().join("work")).is_empty());
}

/// A workload that mounts another filesystem over its mount: the run says
/// so, takes that mount away and ends (it hung for good, deaf to SIGTERM,
/// unmounting the tmpfs by the path and waiting for its own session;
/// review 39). Run under `timeout`: a hang fails the test, not CI.
#[test]
fn a_workload_that_mounts_over_its_mount_is_told_so_and_the_run_ends() {
    if fuse_missing("a_workload_that_mounts_over_its_mount_is_told_so_and_the_run_ends") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let work = scripts.path().join("work");
    let output = std::process::Command::new("timeout")
        .args(["-k", "5", "120"])
        .arg(binary())
        .args([
            "crash-test",
            "--workload",
            r#"echo hi > f; sync f; mount -t tmpfs none "$VIGILFS_MOUNT""#,
            "--check",
            "true",
            "--cuts",
            "1",
            "--size",
            "64M",
            "--work-dir",
        ])
        .arg(&work)
        .output()
        .unwrap();
    let said = text(&output.stderr);
    assert_eq!(output.status.code(), Some(8), "{said}");
    assert!(
        said.contains("the workload mounted another filesystem over the mount it runs in"),
        "{said}"
    );
    assert!(mounts_under(&work).is_empty(), "{:?}", mounts_under(&work));
}

/// In a shared work directory another user may make the directories a run
/// mounts on: the run must neither mount there nor remove them.
#[test]
fn a_mount_point_another_user_made_in_the_work_directory_is_not_used() {
    if fuse_missing("a_mount_point_another_user_made_in_the_work_directory_is_not_used") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let work = scripts.path().join("work");
    let planted = work.join("dry-run.mnt");
    fs::create_dir_all(&planted).unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    let output = crash_test_report(scripts.path(), "true", "true", &["--cuts", "1"]);
    assert_eq!(output.status.code(), Some(8), "{}", text(&output.stdout));
    assert!(
        text(&output.stderr).contains("is not an empty directory of this user's"),
        "{}",
        text(&output.stderr)
    );
    assert!(planted.is_dir(), "the other user's directory was removed");
    assert!(mounts_under(&work).is_empty());
    // Refused at a trial's mount point, the run leaves no image of its own
    // there (it then blocked the next run as "from an earlier run").
    fs::remove_dir(&planted).unwrap();
    let planted = work.join("cut-1.mnt");
    fs::create_dir(&planted).unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    let output = crash_test_report(
        scripts.path(),
        "echo data > f; sync f",
        "true",
        &["--cuts", "1"],
    );
    assert_eq!(output.status.code(), Some(8), "{}", text(&output.stderr));
    assert!(planted.is_dir());
    assert!(!work.join("cut-1.img").exists());
    // A file another user planted under a trial's name is theirs, not an
    // earlier run's kept for its replay, and the refusal says so.
    fs::remove_dir(&planted).unwrap();
    let planted = work.join("cut-1.check.log");
    fs::write(&planted, "planted").unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    let output = crash_test_report(scripts.path(), "echo data > f", "true", &["--cuts", "1"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("which user 65534 made"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(fs::read_to_string(&planted).unwrap(), "planted");
    fs::remove_file(&planted).unwrap();
    // The run's own logs (kept with a failed trial) are its user's only.
    let output = crash_test_report(
        scripts.path(),
        "echo hello > f; echo said",
        "test -s f",
        &["--cuts", "1"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let log = fs::metadata(work.join("cut-1.workload.log")).unwrap();
    assert_eq!(log.permissions().mode() & 0o777, 0o600);
}

/// A cut fails the operation it falls before (an fsync, writeback in
/// flight): that is the cut's doing, not the disk's, and the image the
/// trial leaves records no error for it (it recorded one EIO, with no
/// record left but the count, which fsck then dated to its own run).
#[test]
fn a_cut_records_no_error_for_the_operations_it_fails() {
    if fuse_missing("a_cut_records_no_error_for_the_operations_it_fails") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let workload = r#"for i in $(seq 1 30); do echo "$i" >> data.txt; sync data.txt; done"#;
    let check = r#"test "$(wc -l < data.txt)" -ge 30"#;
    let output = crash_test(
        scripts.path(),
        workload,
        check,
        &["--cuts", "6", "--seed", "1"],
    );
    let report = json_of(&output);
    // A cut before an fsync fails that fsync: the case this is about.
    assert!(
        report["trials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|trial| trial["point"]["operation"] == "fsync"),
        "{report:#}"
    );
    let kept: Vec<&str> = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|trial| trial["image_kept"].as_str())
        .collect();
    assert!(!kept.is_empty(), "every cut fails the check: {report:#}");
    for image in kept {
        let fsck = vigilfs(&["fsck", image]);
        let said = text(&fsck.stdout);
        assert!(
            said.lines()
                .any(|line| line.split_whitespace().eq(["errors", "recorded", "0"])),
            "{image}: {said}"
        );
        let events = text(&vigilfs(&["events", image, "--json"]).stdout);
        for event in events.lines() {
            let event: Value = serde_json::from_str(event).unwrap();
            assert!(
                event["kind"] != "error" && event["kind"] != "lost",
                "{image}: {event}"
            );
        }
    }
}

#[test]
fn the_crash_test_runner_refuses_what_cannot_be_tested() {
    let scripts = tempfile::tempdir().unwrap();
    let work = scripts.path().join("work");
    let run = |workload: &str, extra: &[&str]| {
        let mut arguments = vec![
            "crash-test",
            "--workload",
            workload,
            "--check",
            "true",
            "--size",
            "64M",
            "--work-dir",
            work.to_str().unwrap(),
        ];
        arguments.extend_from_slice(extra);
        vigilfs(&arguments)
    };
    let bad = run("true", &["--cuts", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    let bad = run("true", &["--cut-index", "3", "--cuts", "2"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    let bad = run("true", &["--timeout", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    let bad = run("echo x > f", &["-o", "ro"]);
    assert_eq!(bad.status.code(), Some(2));
    // `remount` is a mount option, but not one for mounts crash-test makes.
    let bad = run("echo x > f", &["-o", "remount,errors=continue"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("crash-test mounts its own"),
        "{}",
        text(&bad.stderr)
    );
    // A blank workload or check would test nothing: a usage error.
    for blank in ["", "  "] {
        let bad = run(blank, &[]);
        assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
        assert!(
            text(&bad.stderr).contains("empty command"),
            "{}",
            text(&bad.stderr)
        );
    }
    let bad = vigilfs(&["crash-test", "--workload", "true", "--check", ""]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    // --work-dir is made one level deep, like mkdir: a typo deeper in the
    // path is an error, not a tree of new directories.
    let deep = scripts.path().join("typo").join("work");
    let bad = vigilfs(&[
        "crash-test",
        "--workload",
        "true",
        "--check",
        "true",
        "--work-dir",
        deep.to_str().unwrap(),
    ]);
    // A wrong argument (2), said as one (review 59: exit 8, and a message
    // not naming --work-dir).
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("--work-dir") && text(&bad.stderr).contains("cannot be made"),
        "{}",
        text(&bad.stderr)
    );
    assert!(!scripts.path().join("typo").exists());
    if fuse_missing("the_crash_test_runner_refuses_what_cannot_be_tested") {
        return;
    }
    let idle = run("true", &[]);
    assert_eq!(idle.status.code(), Some(8));
    assert!(
        text(&idle.stderr).contains("nothing to cut"),
        "{}",
        text(&idle.stderr)
    );
    let failing = run("echo oops; exit 3", &[]);
    assert_eq!(failing.status.code(), Some(8));
    assert!(
        text(&failing.stderr).contains("oops"),
        "{}",
        text(&failing.stderr)
    );
    // Nothing is left behind but the work directory itself.
    let left: Vec<_> = fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A remount's settings belong to the mount, not to one boot of its
/// engine: the engine a power cut brings back keeps them.
#[test]
fn settings_changed_by_a_remount_survive_a_power_cut() {
    if fuse_missing("settings_changed_by_a_remount_survive_a_power_cut") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable,errors=remount-ro"]);
    let link = scratch.directory.path().join("mount.fuse.vigilfs");
    std::os::unix::fs::symlink(binary(), &link).unwrap();
    let remounted = std::process::Command::new(&link)
        .args([
            scratch.img(),
            scratch.mnt(),
            "-o",
            "remount,errors=continue,dirty=2M,noatime,nodiratime,nosymfollow",
        ])
        .output()
        .unwrap();
    assert!(remounted.status.success(), "{}", text(&remounted.stderr));
    fs::write(scratch.mountpoint.join("f"), b"not synced").unwrap();
    let report = json_of(&scratch.inject(&["--power-cut", "--json"]));
    assert_eq!(report["replayed"], true, "{report:#}");
    let status = scratch.status();
    assert_eq!(status["crash_lab"]["power_cuts"], 1, "{status:#}");
    assert_eq!(status["errors_policy"], "continue", "{status:#}");
    assert_eq!(status["settings"]["dirty_limit_bytes"], 2 << 20);
    assert_eq!(status["settings"]["atime"], "noatime");
    assert_eq!(status["settings"]["directory_atime"], false);
    // The kernel's flags too: mount(8) merges them into the next remount,
    // which would otherwise tell the daemon relatime again.
    let kernel = statvfs(&scratch.mountpoint);
    assert_ne!(kernel.f_flag & libc::ST_NOATIME, 0, "noatime kept");
    assert_ne!(kernel.f_flag & libc::ST_NODIRATIME, 0, "nodiratime kept");
    assert_ne!(
        kernel.f_flag & 0x2000,
        0,
        "nosymfollow (ST_NOSYMFOLLOW) kept"
    );
    scratch.umount(pid);
}

/// After a power cut of the crash lab the event ids go on from where the
/// old log stood (its process knows): no range of ids is skipped as after
/// a real crash, and what the cut took of the log is a loss of exactly
/// counted errors, never one of unknown size.
#[test]
fn a_power_cut_skips_no_event_ids_and_counts_what_it_lost() {
    if fuse_missing("a_power_cut_skips_no_event_ids_and_counts_what_it_lost") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable"]);
    write_synced(&scratch.at("f"), b"synced");
    let before = scratch.status()["events"]["newest_id"].as_u64().unwrap();
    let cut = vigilfs(&["inject", scratch.mnt(), "--power-cut"]);
    assert_eq!(cut.status.code(), Some(0), "{}", text(&cut.stderr));
    let output = vigilfs(&["events", scratch.mnt(), "--json"]);
    let events: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    for event in &events {
        if event["kind"] == "lost" {
            assert!(event["count"].is_u64(), "a loss of unknown size: {event}");
        }
    }
    let mount = events
        .iter()
        .rfind(|event| event["kind"] == "mount")
        .expect("the mount after the cut");
    let id = mount["id"].as_u64().unwrap();
    assert!(
        id > before && id < before + 100,
        "the ids went on after {before}: {mount}"
    );
    scratch.umount(pid);
}

/// Whether the kernel's mount on `mountpoint` is read-only (its per-mount
/// options in /proc/self/mountinfo, which findmnt and /proc/mounts show).
fn kernel_says_read_only(mountpoint: &Path) -> bool {
    top_mount_options(mountpoint).contains(&"ro".to_string())
}

/// The per-mount options of the mount on top at `mountpoint`, from the
/// mount table.
fn top_mount_options(mountpoint: &Path) -> Vec<String> {
    let wanted = mountpoint.to_string_lossy().replace(' ', "\\040");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .rfind(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
        .expect("mounted");
    line.split(' ')
        .nth(5)
        .map(|options| options.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// `mount ARGUMENTS...`, which must succeed.
fn mount_command(arguments: &[&str]) {
    let output = std::process::Command::new("mount")
        .args(arguments)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "mount {arguments:?}: {}",
        text(&output.stderr)
    );
}

/// The events of a directory a cut lost never name the new file that took
/// its inode number: they named the new, innocent file (the path search
/// looked at the number only; review 3). They may name the directory as
/// it was named when the loss was announced, deleted.
#[test]
fn the_events_of_a_file_a_cut_lost_never_name_the_file_made_in_its_place() {
    if fuse_missing("the_events_of_a_file_a_cut_lost_never_name_the_file_made_in_its_place") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable,errors=remount-ro"]);
    scratch.inject(&["--fail-writes", "--class", "journal"]);
    fs::create_dir(scratch.at("lost")).unwrap();
    assert!(!vigilfs(&["sync", scratch.mnt()]).status.success());
    scratch.inject(&["--clear"]);
    scratch.inject(&["--power-cut"]);
    assert!(!scratch.at("lost").exists());
    fs::write(scratch.at("innocent"), b"new").unwrap();
    let innocent = fs::metadata(scratch.at("innocent")).unwrap();
    let events = text(&vigilfs(&["events", scratch.mnt(), "--json"]).stdout);
    let lost: Vec<Value> = events
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| {
            event["origin"]
                .as_str()
                .is_some_and(|origin| origin.contains("lost: mkdir lost"))
        })
        .collect();
    assert!(!lost.is_empty(), "{events}");
    for event in &lost {
        // The test's premise: the new file has the lost one's number.
        assert_eq!(event["inode"].as_u64(), Some(innocent.ino()), "{event}");
        // Named as it was when the loss was announced (if the daemon read
        // the event before the cut), and gone since.
        assert!(
            event["path"].is_null() || event["path"] == "/lost",
            "{event}"
        );
        assert_eq!(event["deleted"], true, "{event}");
    }
    scratch.umount(pid);
    // Offline too, from the image.
    let offline = text(&vigilfs(&["events", scratch.img(), "--json"]).stdout);
    assert!(!offline.contains("\"/innocent\""), "{offline}");
}

/// A power cut makes a new kernel mount. A second mount point of the
/// image kept the old one, whose engine was gone: every request there
/// failed with EIO while status called the mount running (review 3). It
/// shows the new mount now, as a reboot's fstab would.
#[test]
fn a_second_mount_point_shows_the_filesystem_after_a_power_cut() {
    if fuse_missing("a_second_mount_point_shows_the_filesystem_after_a_power_cut") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable"]);
    write_synced(&scratch.at("kept"), b"synced\n");
    sync_directory(&scratch.mountpoint);
    let second = scratch.directory.path().join("second");
    let shared = vigilfs(&["mount", scratch.img(), second.to_str().unwrap()]);
    assert_eq!(shared.status.code(), Some(0), "{}", text(&shared.stderr));
    // A bind with its own flags, two binds stacked on one mount point,
    // and a bind another filesystem covers (review 4: the cut took the
    // covering tmpfs away, left the lower of two binds dead, and dropped
    // the flags).
    let path = |name: &str| scratch.directory.path().join(name);
    let (flagged, stacked, covered) = (path("flagged"), path("stacked"), path("covered"));
    for directory in [&flagged, &stacked, &covered] {
        fs::create_dir(directory).unwrap();
    }
    let mnt = scratch.mnt();
    mount_command(&["--bind", mnt, flagged.to_str().unwrap()]);
    mount_command(&[
        "-o",
        "remount,bind,nosuid,noexec",
        flagged.to_str().unwrap(),
    ]);
    mount_command(&["--bind", mnt, stacked.to_str().unwrap()]);
    mount_command(&["--bind", mnt, stacked.to_str().unwrap()]);
    mount_command(&["--bind", mnt, covered.to_str().unwrap()]);
    mount_command(&["-t", "tmpfs", "tmpfs", covered.to_str().unwrap()]);
    fs::write(covered.join("mine"), b"the user's").unwrap();
    scratch.inject(&["--power-cut"]);
    assert_eq!(fs::read(second.join("kept")).unwrap(), b"synced\n");
    fs::write(second.join("after"), b"written").unwrap();
    assert_eq!(fs::read(scratch.at("after")).unwrap(), b"written");
    let options = top_mount_options(&flagged);
    assert!(options.contains(&"nosuid".to_string()) && options.contains(&"noexec".to_string()));
    assert_eq!(fs::read(flagged.join("kept")).unwrap(), b"synced\n");
    assert_eq!(fs::read(covered.join("mine")).unwrap(), b"the user's");
    // A mount of the image now shares the live mount, not the covered old
    // bind (it showed the covering tmpfs; review 5).
    let third = path("third");
    let shared = vigilfs(&["mount", scratch.img(), third.to_str().unwrap()]);
    assert_eq!(shared.status.code(), Some(0), "{}", text(&shared.stderr));
    assert_eq!(fs::read(third.join("kept")).unwrap(), b"synced\n");
    umount_retrying_busy(&third);
    // Each of the stacked binds removed leaves no dead one behind.
    umount_retrying_busy(&stacked);
    assert!(fs::read_dir(&stacked).is_ok());
    umount_retrying_busy(&covered);
    for mountpoint in [&second, &flagged, &covered] {
        umount_retrying_busy(mountpoint);
    }
    scratch.umount(pid);
}

/// Clears the fault rules and cuts the power: the mount comes back
/// running and read-write, as a reboot would, and takes a write.
fn clear_cut_and_write(scratch: &Scratch) {
    scratch.inject(&["--clear"]);
    scratch.inject(&["--power-cut"]);
    assert_eq!(scratch.status()["state"], "running");
    assert!(!kernel_says_read_only(&scratch.mountpoint));
    fs::write(scratch.at("after the cut"), b"written").unwrap();
}

/// errors=remount-ro makes the kernel's mount read-only too (once no file
/// is open for writing), so that /proc/mounts tells the truth; the power
/// cut that follows brings the mount back read-write, as a reboot would.
#[test]
fn errors_remount_ro_shows_in_the_mount_table_until_a_power_cut() {
    if fuse_missing("errors_remount_ro_shows_in_the_mount_table_until_a_power_cut") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&[
        "--size",
        "64M",
        "-o",
        "crashable,errors=remount-ro,writeback_interval=600",
    ]);
    assert!(!kernel_says_read_only(&scratch.mountpoint));
    let mut file = File::create(scratch.at("f")).unwrap();
    file.write_all(b"not durable").unwrap();
    scratch.inject(&["--fail-flushes"]);
    assert!(file.sync_all().is_err(), "the flush failed");
    assert_eq!(scratch.status()["state"], "read-only");
    // The kernel refuses a read-only remount while a file is open for
    // writing: it comes once the last writer closed.
    drop(file);
    wait_until(
        "the kernel's mount is read-only",
        Duration::from_secs(10),
        || kernel_says_read_only(&scratch.mountpoint),
    );
    let refused = File::create(scratch.at("g")).map(|_| ());
    assert_eq!(
        refused.map_err(|error| error.raw_os_error()),
        Err(Some(libc::EROFS))
    );
    clear_cut_and_write(&scratch);
    scratch.umount(pid);
}

/// A cut whose remount fails (the fault rules fail the recovery's writes
/// too) leaves the mount shut down; the next cut, once the rules are
/// cleared, still comes back read-write: the read-only flag the errors
/// policy set is not the user's (the next cut came back read-only, with a
/// `settings (ro)` event nobody asked for).
#[test]
fn a_cut_after_a_cut_whose_remount_failed_comes_back_read_write() {
    if fuse_missing("a_cut_after_a_cut_whose_remount_failed_comes_back_read_write") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M", "-o", "crashable,errors=remount-ro"]);
    scratch.inject(&["--fail-writes", "--class", "all"]);
    let mut file = File::create(scratch.at("f")).unwrap();
    file.write_all(b"not durable").unwrap();
    assert!(file.sync_all().is_err());
    drop(file);
    wait_until(
        "the kernel's mount is read-only",
        Duration::from_secs(30),
        || kernel_says_read_only(&scratch.mountpoint),
    );
    let failed = vigilfs(&["inject", scratch.mnt(), "--power-cut"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    // Until the next cut, status says the boot failed and why (it said
    // "shut-down: the power was cut", and that the image was left clean).
    let failed_boot = scratch.status()["crash_lab"]["failed_boot"].clone();
    assert!(
        failed_boot
            .as_str()
            .is_some_and(|why| why.starts_with("power cut 1: ") && why.contains("fault rule")),
        "{failed_boot}"
    );
    let shown = text(&vigilfs(&["status", scratch.mnt()]).stdout);
    assert!(shown.contains("mounting the image again failed"), "{shown}");
    clear_cut_and_write(&scratch);
    assert_eq!(scratch.status()["crash_lab"]["failed_boot"], Value::Null);
    // The failed boot is in the history, an error as the disk's failure
    // (it was in none: no log could be written then).
    let events = text(&vigilfs(&["events", scratch.mnt(), "--json"]).stdout);
    let said = |kind: &str, field: &str| {
        events
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|event| {
                event["kind"] == kind
                    && event[field]
                        .as_str()
                        .is_some_and(|text| text == "power cut 1 (crash lab): its boot failed")
            })
    };
    assert!(
        said("error", "origin") && said("faults", "action"),
        "{events}"
    );
    scratch.umount(pid);
}

#[test]
fn processes_a_workload_leaves_behind_do_not_keep_the_crash_test_running() {
    if fuse_missing("processes_a_workload_leaves_behind_do_not_keep_the_crash_test_running") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    // One leftover in the workload's group, one in a session of its own;
    // both keep a file in the lab's mount open. The runner used to wait
    // for them for good, deaf to SIGTERM.
    let workload = r#"set -e
sh -c 'exec 3>in-group; while :; do echo y >&3; sleep 0.2; done' &
setsid sh -c 'exec 3>own-session; while :; do echo y >&3; sleep 0.2; done' &
for i in 1 2 3; do
    echo "$i" > "file-$i"
    sync "file-$i"
    echo "$i" >> "$1"
done
"#;
    let started = Instant::now();
    let output = crash_test(scripts.path(), workload, "true", &["--cuts", "2"]);
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    // Said, with what they were: they were killed silently.
    let said = text(&output.stderr);
    assert!(
        said.contains("the workload left ")
            && said.contains(" running when it exited: ")
            && said.contains(". Killed: what they would have done after the workload ended")
            && said.contains(" (sh)"),
        "{said}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

/// The workload stops where the power goes, as a machine does: a cut
/// before write N leaves exactly N - 1 writes done, and the program never
/// hears that write fail. A shell loop that never fsyncs used to go on
/// after the refused write and log more (outside the mount) before it was
/// killed, so the replay of a cut did not reproduce what the program did.
#[test]
fn the_workload_stops_at_the_write_the_power_cut() {
    if fuse_missing("the_workload_stops_at_the_write_the_power_cut") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let workload = r#"log="$1.$VIGILFS_CUT"
: > "$log"
for i in $(seq 1 60); do
    echo "line $i" >> data.txt
    echo "$i" >> "$log"
done
"#;
    let output = crash_test(scripts.path(), workload, "true", &["--cuts", "8"]);
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    let mut checked = 0;
    for trial in report["trials"].as_array().unwrap() {
        let point = &trial["point"];
        if point["operation"] != "write" || trial["cut_after_the_end"] == true {
            continue;
        }
        let count = point["count"].as_u64().unwrap();
        let log = scripts
            .path()
            .join(format!("acknowledged.{}", trial["index"]));
        let logged = fs::read_to_string(&log).unwrap().lines().count() as u64;
        assert_eq!(logged, count - 1, "cut before write {count}: {trial:#}");
        checked += 1;
    }
    assert!(checked >= 4, "{report:#}");
}

#[test]
fn a_process_that_escaped_the_workload_group_dies_with_the_power() {
    if fuse_missing("a_process_that_escaped_the_workload_group_dies_with_the_power") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    // A process in a session of its own (a daemon the workload started)
    // that would write into the mount after the cut: into the recovered
    // mount, since the restart detaches the old one and it names the mount
    // by path. The check would then report what no crash did.
    let workload = r#"
setsid sh -c 'sleep 0.6; echo post-crash > "$VIGILFS_MOUNT/late"' </dev/null >/dev/null 2>&1 &
sleep 0.2
echo a > a
sync a
echo 1 >> "$1"
"#;
    let output = crash_test(
        scripts.path(),
        workload,
        "sleep 1.5; ! test -e late",
        &["--cuts", "2"],
    );
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");
}

#[test]
fn the_processes_a_cut_killed_are_gone_before_the_check_runs() {
    if fuse_missing("the_processes_a_cut_killed_are_gone_before_the_check_runs") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    // A server the workload started, in a session of its own, records its
    // pid in the mount, as PostgreSQL's postmaster.pid does. After a power
    // cut no process is left; a check that finds the recorded pid still
    // taken (a killed process not yet reaped is a zombie, and kill(pid, 0)
    // succeeds on it) would refuse to start the server, as PostgreSQL does.
    let workload = r#"
setsid sh -c 'echo $$ > server.pid; sync server.pid; sync .; exec sleep 100' </dev/null >/dev/null 2>&1 &
sh -c 'exec sleep 100' &
while ! test -s server.pid; do sleep 0.01; done
echo a > a
sync a
echo 1 >> "$1"
"#;
    let check = r#"
test -s server.pid || exit 0
pid=$(cat server.pid)
if kill -0 "$pid" 2>/dev/null; then
    echo "the server the cut killed is still there: $(cat /proc/$pid/stat)"
    exit 1
fi
"#;
    let output = crash_test(scripts.path(), workload, check, &["--cuts", "4"]);
    passed(&output);
}

#[test]
fn a_daemon_that_left_both_the_workload_group_and_the_mount_dies_with_the_run() {
    if fuse_missing("a_daemon_that_left_both_the_workload_group_and_the_mount_dies_with_the_run") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    // A daemon in a session of its own whose working directory is `/`:
    // neither its group nor the mount finds it. It outlived every trial.
    let workload = r#"
setsid sh -c 'cd /; exec sleep 300' </dev/null >/dev/null 2>&1 &
echo $! >> "$1.daemons"
echo a > a
sync a
echo 1 >> "$1"
"#;
    let output = crash_test(scripts.path(), workload, "true", &["--cuts", "3"]);
    passed(&output);
    let daemons = fs::read_to_string(scripts.path().join("acknowledged.daemons")).unwrap();
    let pids: Vec<&str> = daemons.lines().collect();
    assert_eq!(pids.len(), 4, "the dry run's and each trial's: {daemons}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "daemon {pid} outlived the run"
        );
    }
}

#[test]
fn a_setup_is_never_cut_and_its_result_is_durable_before_the_workload() {
    if fuse_missing("a_setup_is_never_cut_and_its_result_is_durable_before_the_workload") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    // The setup writes 20 files and syncs none of them: only the runner
    // makes them durable. Its writes are not the workload's to count, so
    // every cut falls in the workload's one write and one fsync.
    let setup = "for i in $(seq 1 20); do echo base > base-$i; done";
    let output = crash_test(
        scripts.path(),
        "echo 1 > w\nsync w\necho 1 >> \"$1\"",
        "test -e base-20 || { echo 'the setup was lost'; exit 1; }",
        &["--cuts", "6", "--setup", setup],
    );
    let report = passed(&output);
    assert_eq!(report["dry_run"]["fsyncs"], 1, "{report:#}");
    assert_eq!(report["dry_run"]["writes"], 1, "{report:#}");
    // Three moments (the write, the fsync, the end), six cuts: each moment
    // cut twice, the first three trials on different ones (they could all
    // fall on one: review 26).
    assert_eq!(report["moments"], 3, "{report:#}");
    let points: Vec<&Value> = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|trial| &trial["point"])
        .collect();
    assert_eq!(points[0], &Value::Null, "the end first: {report:#}");
    assert!(
        points[0] != points[1] && points[1] != points[2] && points[0] != points[2],
        "{report:#}"
    );
    assert_eq!(points[..3], points[3..], "{report:#}");

    let failing = crash_test(
        scripts.path(),
        "echo 1 > w",
        "true",
        &["--setup", "echo broken; exit 3"],
    );
    assert_eq!(failing.status.code(), Some(8));
    let message = text(&failing.stderr);
    assert!(
        message.contains("the setup exited 3") && message.contains("broken"),
        "{message}"
    );
}

#[test]
fn an_interrupted_crash_test_leaves_nothing_of_the_trial_it_cut_short() {
    if fuse_missing("an_interrupted_crash_test_leaves_nothing_of_the_trial_it_cut_short") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let work = scripts.path().join("work");
    // Each trial's workload writes, syncs, then takes its time: the
    // interrupt comes while a trial runs.
    let child = std::process::Command::new(binary())
        .args(["crash-test", "--workload"])
        .arg("echo a > a; sync a; sleep 0.5; echo b > b; sync b; sleep 3")
        .args([
            "--check",
            "true",
            "--size",
            "64M",
            "--cuts",
            "3",
            "--timeout",
            "60s",
        ])
        .arg("--work-dir")
        .arg(&work)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first trial's files (after the dry run), then
    // interrupt.
    let started = Instant::now();
    loop {
        let trial_running = fs::read_dir(&work).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().starts_with("cut-"))
        });
        if trial_running {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no trial started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    // As a shell reports a process SIGTERM ended (it said 8: "could not be
    // made").
    assert_eq!(output.status.code(), Some(143), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("interrupted by SIGTERM"));
    let left: Vec<String> = fs::read_dir(&work)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_workload_can_make_its_writes_durable_with_vigilfs_sync() {
    if fuse_missing("a_workload_can_make_its_writes_durable_with_vigilfs_sync") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    // No fsync at all: `vigilfs sync` of the lab's mount is the
    // durability point (it found no control socket there).
    let workload = format!(
        r#"set -e
: > "$1"
i=1
while [ $i -le 12 ]; do
    head -c 20000 /dev/urandom > "file-$i"
    {binary} sync "$VIGILFS_MOUNT"
    echo $i >> "$1"
    i=$((i+1))
done
"#,
        binary = binary()
    );
    let check = r#"last=$(tail -n 1 "$1"); last=${last:-0}
i=1
while [ $i -le "$last" ]; do
    [ "$(wc -c < "file-$i")" = 20000 ] || { echo "file-$i was synced and is not whole"; exit 1; }
    i=$((i+1))
done
"#;
    passed(&crash_test(
        scripts.path(),
        &workload,
        check,
        &["--cuts", "4"],
    ));
}

/// Mount points under `directory`.
fn mounts_under(directory: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mountpoint| Path::new(mountpoint).starts_with(directory))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_crash_test_killed_with_sigkill_leaves_no_mount_and_no_image() {
    if fuse_missing("a_crash_test_killed_with_sigkill_leaves_no_mount_and_no_image") {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let work = scripts.path().join("work");
    let pid_file = scripts.path().join("workload.pid");
    // Slow: the runner is killed during its dry run.
    let workload = format!(
        "echo $$ > {}; i=0; while [ $i -lt 400 ]; do echo $i > f; sync f; sleep 0.05; \
         i=$((i+1)); done",
        pid_file.display()
    );
    let mut runner = std::process::Command::new(binary())
        .args([
            "crash-test",
            "--workload",
            &workload,
            "--check",
            "true",
            "--size",
            "64M",
            "--cuts",
            "3",
            "--timeout",
            "60s",
            "--work-dir",
            work.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The workload started too: its pid is what is checked at the end.
    wait_until(
        "the dry run's workload runs",
        Duration::from_secs(30),
        || {
            !mounts_under(&work).is_empty()
                && fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n'))
        },
    );
    // A second run in the same work directory is refused, and says why.
    let second = vigilfs(&[
        "crash-test",
        "--workload",
        "true",
        "--check",
        "true",
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("another crash-test running now"),
        "{}",
        text(&second.stderr)
    );
    runner.kill().unwrap();
    let _ = runner.wait();
    wait_until(
        "the janitor detaches the mount and removes the image",
        Duration::from_secs(30),
        || {
            mounts_under(&work).is_empty()
                && fs::read_dir(&work).is_ok_and(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .all(|entry| !entry.file_name().to_string_lossy().ends_with(".img"))
                })
        },
    );
    // The workload is killed too: it would go on writing, or sit in a dead
    // mount. (Its parent is gone, so it may stay a zombie nobody reaps.)
    let pid = fs::read_to_string(&pid_file).unwrap();
    wait_until("the workload is killed", Duration::from_secs(30), || {
        fs::read_to_string(format!("/proc/{}/stat", pid.trim())).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
    });
}

#[test]
fn a_read_fault_meets_cached_data_once_the_caches_are_dropped() {
    if fuse_missing("a_read_fault_meets_cached_data_once_the_caches_are_dropped") {
        return;
    }
    let scratch = Scratch::new();
    let pid = scratch.mount(&["--size", "64M"]);
    let data = vec![0x5au8; 4 * 4096];
    for name in ["by-path", "by-class"] {
        write_synced(&scratch.at(name), &data);
        // Read back: cached by the kernel and by the engine.
        assert_eq!(fs::read(scratch.at(name)).unwrap(), data);
    }
    let errno = |name: &str| {
        fs::read(scratch.at(name))
            .err()
            .and_then(|error| error.raw_os_error())
    };
    // As over a failing disk, cached data is still read from memory...
    scratch.inject(&["--fail-reads", "--path", "by-path"]);
    assert_eq!(errno("by-path"), None);
    // ...until the caches are dropped (the kernel's drop_caches does not
    // reach the engine's).
    let dropped = scratch.inject(&["--drop-caches"]);
    assert!(
        text(&dropped.stdout).contains("dropped"),
        "{}",
        text(&dropped.stdout)
    );
    assert_eq!(errno("by-path"), Some(libc::EIO));
    scratch.inject(&["--clear"]);
    assert_eq!(fs::read(scratch.at("by-path")).unwrap(), data);
    // With the rule, in one command.
    scratch.inject(&["--fail-reads", "--class", "data", "--drop-caches"]);
    assert_eq!(errno("by-class"), Some(libc::EIO));
    scratch.inject(&["--clear"]);
    assert_eq!(fs::read(scratch.at("by-class")).unwrap(), data);
    scratch.umount(pid);
}
