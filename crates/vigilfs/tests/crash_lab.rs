//! The crash lab through the engine API: a power cut through a volatile
//! write cache loses exactly what `unsynced` said it would (with drop and
//! torn losses), faults aimed at operations and at files' data hit only
//! their targets with Linux's meaning kept, delays hold requests, corrupt
//! reads never return wrong bytes, and the fault log records every rule
//! and every firing with the file's path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigilfs::device::{
    BlockDevice, FaultDevice, FaultLogEvent, FaultPlan, FaultRule, IoClass, MemoryDevice,
    Operations, PowerLoss, Probability, SectorSize, VolatileCache,
};
use vigilfs::format::ErrorsPolicy;
use vigilfs::fs::faults::{CutPoint, Operation};
use vigilfs::fs::{Filesystem, LifeState, MountOptions, OpenFlags, SetAttributes};
use vigilfs::fsck::fsck;
use vigilfs::inode::{Caller, XattrFlags, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

/// A memory image behind a volatile cache behind a fault plan: the device
/// stack of a crashable mount.
struct Lab {
    memory: Arc<MemoryDevice>,
    cache: Arc<VolatileCache>,
    plan: Arc<FaultPlan>,
}

impl Lab {
    fn new() -> Lab {
        let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
        make_filesystem(memory.clone(), &MkfsOptions::default()).expect("mkfs");
        let cache = Arc::new(VolatileCache::new(memory.clone()));
        let plan = Arc::new(FaultPlan::new());
        Lab {
            memory,
            cache,
            plan,
        }
    }

    /// The device stack as this boot sees it: a request of an earlier
    /// mount still on its way fails.
    fn device(&self) -> Arc<dyn BlockDevice> {
        Arc::new(FaultDevice::new(
            Arc::new(self.cache.boot()),
            self.plan.clone(),
        ))
    }

    fn mount(&self) -> Filesystem {
        Filesystem::mount(
            self.device(),
            MountOptions {
                fault_plan: Some(self.plan.clone()),
                // Only what the test does reaches the disk.
                writeback_interval: Duration::from_secs(3600),
                ..MountOptions::default()
            },
        )
        .expect("mount")
    }

    /// Cuts the power under `fs`, loses the cache as `loss` says, mounts
    /// again.
    fn power_cut(&self, fs: Filesystem, loss: PowerLoss) -> Filesystem {
        self.cache.cut_power();
        fs.abandon();
        drop(fs);
        self.cache.restore_power(loss).expect("power back");
        let fs = self.mount();
        assert!(fs.recovered(), "a cut leaves the image to recover");
        fs
    }
}

fn root() -> Caller {
    Caller::root()
}

fn read_write() -> OpenFlags {
    OpenFlags {
        read: true,
        write: true,
        ..OpenFlags::default()
    }
}

fn write_file(fs: &Filesystem, name: &str, bytes: &[u8], sync: bool) -> u64 {
    let attr = fs.lookup(ROOT_INO, name.as_bytes(), &root());
    let handle = match attr {
        Ok(attr) => fs.open(attr.ino, read_write(), &root()).unwrap(),
        Err(_) => {
            fs.create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &root())
                .unwrap()
                .1
        }
    };
    fs.write(handle, 0, bytes, &root()).unwrap();
    if sync {
        fs.fsync(handle, false).unwrap();
    }
    let ino = fs.lookup(ROOT_INO, name.as_bytes(), &root()).unwrap().ino;
    fs.release(handle).unwrap();
    ino
}

fn read_file(fs: &Filesystem, name: &str) -> Option<Vec<u8>> {
    let attr = fs.lookup(ROOT_INO, name.as_bytes(), &root()).ok()?;
    let handle = fs
        .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    let bytes = fs.read(handle, 0, 1 << 22).expect("every file reads back");
    fs.release(handle).unwrap();
    Some(bytes)
}

#[test]
fn a_power_cut_loses_exactly_what_unsynced_listed() {
    for loss in [PowerLoss::DropUnflushed, PowerLoss::Torn { seed: 11 }] {
        let lab = Lab::new();
        let fs = lab.mount();
        let mut expected = BTreeMap::new();
        for number in 0..12 {
            let name = format!("f{number}");
            let bytes = vec![number as u8 + 1; 5000 + number * 3000];
            let sync = number % 3 != 0;
            write_file(&fs, &name, &bytes, sync);
            expected.insert(name, bytes);
        }
        // A rename and a create nobody fsynced the directory for.
        fs.rename(
            ROOT_INO,
            b"f1",
            ROOT_INO,
            b"renamed",
            Default::default(),
            &root(),
        )
        .unwrap();
        let moved = expected.remove("f1").unwrap();
        expected.insert("renamed".into(), moved);
        let unsynced = fs.unsynced();
        let lost_data: Vec<String> = unsynced
            .data
            .iter()
            .flat_map(|data| data.paths.clone())
            .collect();
        let changed: Vec<String> = unsynced
            .changes
            .iter()
            .flat_map(|change| change.path.iter().chain(&change.new_path).cloned())
            .collect();
        for number in (0..12).step_by(3) {
            assert!(lost_data.contains(&format!("f{number}")), "{lost_data:?}");
        }
        assert!(changed.contains(&"renamed".to_string()), "{changed:?}");
        let fs = lab.power_cut(fs, loss);
        for (name, bytes) in &expected {
            let listed = lost_data.contains(name) || changed.contains(name);
            let found = read_file(&fs, name);
            if !listed {
                assert_eq!(
                    found.as_ref(),
                    Some(bytes),
                    "{name} was not listed as unsynced"
                );
            }
        }
        // The data nobody fsynced is gone: the cut took something.
        assert_ne!(read_file(&fs, "f0").as_ref(), expected.get("f0"));
        // What was fsynced before the rename is there under one of its
        // names.
        assert!(read_file(&fs, "f1").is_some() || read_file(&fs, "renamed").is_some());
        fs.unmount().unwrap();
        let report = fsck(lab.memory.clone(), &mut |_| {}).unwrap();
        assert!(report.is_clean(), "{loss:?}: {:#?}", report.problems);
    }
}

/// A change to an inode alone (chmod, setxattr) is listed with a path of
/// the inode, as creates and renames are with theirs: whether the mount
/// learned it from a lookup or must walk the namespace for it (review 20
/// found only "setattr (inode 1061)", of no use in a large tree).
#[test]
fn unsynced_names_the_file_whose_attributes_changed() {
    let lab = Lab::new();
    let fs = lab.mount();
    fs.mkdir(ROOT_INO, b"pub", 0o755, &root()).unwrap();
    let dir = fs.lookup(ROOT_INO, b"pub", &root()).unwrap().ino;
    let (learned, handle) = fs
        .create(dir, b"learned", 0o644, read_write(), &root())
        .unwrap();
    fs.release(handle).unwrap();
    let (walked, handle) = fs
        .create(dir, b"walked", 0o644, read_write(), &root())
        .unwrap();
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
    // A new mount knows no names until the kernel looks them up.
    let fs = lab.mount();
    let dir = fs.lookup(ROOT_INO, b"pub", &root()).unwrap().ino;
    assert_eq!(
        fs.lookup(dir, b"learned", &root()).unwrap().ino,
        learned.ino
    );
    let chmod = SetAttributes {
        mode: Some(0o600),
        ..SetAttributes::default()
    };
    fs.setattr(learned.ino, &chmod, None, &root()).unwrap();
    fs.setxattr(
        walked.ino,
        b"user.note",
        b"kept",
        XattrFlags::default(),
        &root(),
    )
    .unwrap();
    let listed: Vec<(&str, Option<String>)> = fs
        .unsynced()
        .changes
        .iter()
        .map(|change| (change.change.operation, change.path.clone()))
        .collect();
    assert!(
        listed.contains(&("setattr", Some("pub/learned".into()))),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("setxattr", Some("pub/walked".into()))),
        "{listed:?}"
    );
    // A link names what it links to as well as the new name (review 31:
    // "link -> hard" alone).
    fs.link(walked.ino, ROOT_INO, b"hard", &root()).unwrap();
    let unsynced = fs.unsynced();
    let link = unsynced
        .changes
        .iter()
        .find(|change| change.change.operation == "link")
        .expect("the link listed");
    assert_eq!(
        (link.path.as_deref(), link.new_path.as_deref()),
        (Some("pub/walked"), Some("hard"))
    );
    fs.unmount().unwrap();
}

#[test]
fn an_fsync_fault_on_a_path_fails_only_that_file_as_a_writeback_failure_would() {
    let lab = Lab::new();
    let fs = lab.mount();
    fs.mkdir(ROOT_INO, b"pg_wal", 0o755, &root()).unwrap();
    let wal_dir = fs.lookup(ROOT_INO, b"pg_wal", &root()).unwrap().ino;
    fs.add_file_rule(
        "file op=fsync path=pg_wal/* errno=EIO limit=1"
            .parse()
            .unwrap(),
    )
    .unwrap();
    let (wal, wal_handle) = fs
        .create(wal_dir, b"000001", 0o644, read_write(), &root())
        .unwrap();
    let (_, other) = fs
        .create(ROOT_INO, b"base", 0o644, read_write(), &root())
        .unwrap();
    fs.write(wal_handle, 0, b"wal record", &root()).unwrap();
    fs.write(other, 0, b"table", &root()).unwrap();
    fs.fsync(other, false).expect("another file is untouched");
    let failed = fs.fsync(wal_handle, false);
    assert_eq!(failed.unwrap_err().errno(), libc::EIO);
    // As after a real writeback failure: the data is still dirty, the
    // error was recorded, the retry succeeds (the rule's limit is spent).
    assert!(fs.status().dirty_bytes > 0);
    assert_eq!(fs.status().error_record.total, 1);
    fs.fsync(wal_handle, false)
        .expect("the retry writes the data");
    assert_eq!(fs.status().dirty_bytes, 0);
    let log = lab.plan.log_since(0).0;
    let fired: Vec<_> = log
        .iter()
        .filter_map(|entry| match &entry.event {
            FaultLogEvent::Fired {
                operation, path, ..
            } => Some((operation.clone(), path.clone())),
            _ => None,
        })
        .collect();
    assert!(
        fired.contains(&("fsync".into(), Some("pg_wal/000001".into()))),
        "{fired:?}"
    );
    assert!(
        fired.contains(&("write".into(), Some("pg_wal/000001".into()))),
        "{fired:?}"
    );
    assert!(fired
        .iter()
        .all(|(_, path)| path.as_deref() == Some("pg_wal/000001")));
    assert!(matches!(log[0].event, FaultLogEvent::Set { .. }));
    let _ = wal;
    fs.release(wal_handle).unwrap();
    fs.release(other).unwrap();
    fs.unmount().unwrap();
}

#[test]
fn a_data_write_rule_on_a_glob_fails_only_the_matching_files_writeback() {
    let lab = Lab::new();
    let fs = lab.mount();
    fs.add_file_rule("file data=write path=*.db errno=EIO".parse().unwrap())
        .unwrap();
    let (_, db) = fs
        .create(ROOT_INO, b"x.db", 0o644, read_write(), &root())
        .unwrap();
    let (_, text) = fs
        .create(ROOT_INO, b"y.txt", 0o644, read_write(), &root())
        .unwrap();
    fs.write(db, 0, b"row", &root()).unwrap();
    fs.write(text, 0, b"line", &root()).unwrap();
    assert_eq!(fs.fsync(db, false).unwrap_err().errno(), libc::EIO);
    fs.fsync(text, false).expect("not a .db file");
    // A file created after the rule matches too.
    let (_, later) = fs
        .create(ROOT_INO, b"z.db", 0o644, read_write(), &root())
        .unwrap();
    fs.write(later, 0, b"row", &root()).unwrap();
    assert_eq!(fs.fsync(later, false).unwrap_err().errno(), libc::EIO);
    let counted = fs.file_rules()[0].injected;
    assert_eq!(counted, 2);
    fs.clear_file_rules();
    fs.fsync(db, false)
        .unwrap_or_else(|error| panic!("after clearing: {error}"));
    for handle in [db, text, later] {
        fs.release(handle).unwrap();
    }
    fs.unmount().unwrap();
}

#[test]
fn a_delay_holds_requests_and_corrupt_reads_never_return_wrong_bytes() {
    let lab = Lab::new();
    let fs = lab.mount();
    write_file(&fs, "data", &vec![0x5a; 64 << 10], true);
    fs.unmount().unwrap();
    let fs = lab.mount();
    let delay = lab
        .plan
        .add_rule(
            FaultRule::delay(20_000, 0, 1)
                .on(Operations::READ)
                .for_class(IoClass::Data),
        )
        .unwrap();
    let started = Instant::now();
    assert_eq!(read_file(&fs, "data").unwrap().len(), 64 << 10);
    assert!(
        started.elapsed() >= Duration::from_millis(20),
        "not delayed"
    );
    lab.plan.remove_rule(delay);
    fs.unmount().unwrap();
    let fs = lab.mount();
    lab.plan
        .add_rule(
            FaultRule::corrupt(3, Probability::from_parts_per_million(1_000_000).unwrap())
                .for_class(IoClass::Data),
        )
        .unwrap();
    let attr = fs.lookup(ROOT_INO, b"data", &root()).unwrap();
    let handle = fs
        .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    let read = fs.read(handle, 0, 64 << 10);
    assert_eq!(read.unwrap_err().errno(), libc::EIO, "a checksum caught it");
    fs.release(handle).unwrap();
    lab.plan.clear();
    // The mismatch was reported as a media failure, which re-reads the
    // block to verify it: if that read came while the corruption was still
    // on, the block is taken as lost (poisoned: EIO); otherwise it was
    // moved and reads back whole. Never other bytes.
    assert!(fs.settle_failures(Duration::from_secs(30)));
    let handle = fs
        .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    match fs.read(handle, 0, 64 << 10) {
        Ok(bytes) => assert_eq!(bytes, vec![0x5a; 64 << 10]),
        Err(error) => assert_eq!(error.errno(), libc::EIO),
    }
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
}

#[test]
fn a_power_cut_armed_at_the_third_fsync_keeps_the_first_two() {
    let lab = Lab::new();
    let fs = Arc::new(lab.mount());
    let cut = Arc::new(AtomicBool::new(false));
    {
        let cache = lab.cache.clone();
        let cut = cut.clone();
        fs.arm_power_cut(
            CutPoint {
                operation: Operation::Fsync,
                count: 3,
            },
            Box::new(move || {
                cache.cut_power();
                cut.store(true, Ordering::SeqCst);
            }),
        );
    }
    let mut outcomes = Vec::new();
    for number in 0..4 {
        let name = format!("f{number}");
        let created = fs.create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &root());
        let Ok((_, handle)) = created else {
            outcomes.push(false);
            continue;
        };
        let written = fs.write(handle, 0, name.as_bytes(), &root()).is_ok();
        outcomes.push(written && fs.fsync(handle, false).is_ok());
        let _ = fs.release(handle);
    }
    assert!(cut.load(Ordering::SeqCst));
    assert_eq!(outcomes, [true, true, false, false]);
    let fs = Arc::try_unwrap(fs).ok().unwrap();
    let fs = lab.power_cut(fs, PowerLoss::DropUnflushed);
    assert_eq!(read_file(&fs, "f0").as_deref(), Some(&b"f0"[..]));
    assert_eq!(read_file(&fs, "f1").as_deref(), Some(&b"f1"[..]));
    fs.unmount().unwrap();
}

#[test]
fn descriptors_of_an_abandoned_mount_fail_with_eio() {
    let lab = Lab::new();
    let fs = lab.mount();
    let (attr, handle) = fs
        .create(ROOT_INO, b"open", 0o644, read_write(), &root())
        .unwrap();
    fs.write(handle, 0, b"kept in memory", &root()).unwrap();
    lab.cache.cut_power();
    fs.abandon();
    assert_eq!(fs.read(handle, 0, 10).unwrap_err().errno(), libc::EIO);
    assert_eq!(
        fs.write(handle, 0, b"x", &root()).unwrap_err().errno(),
        libc::EIO
    );
    assert_eq!(fs.fsync(handle, false).unwrap_err().errno(), libc::EIO);
    assert_eq!(fs.getattr(attr.ino).unwrap_err().errno(), libc::EIO);
    fs.release(handle).unwrap();
    drop(fs);
    lab.cache.restore_power(PowerLoss::DropUnflushed).unwrap();
    let fs = lab.mount();
    fs.unmount().unwrap();
}

#[test]
fn file_rules_live_on_in_the_mount_that_replaced_a_lost_one() {
    let lab = Lab::new();
    let fs = lab.mount();
    let id = fs
        .add_file_rule(
            "file op=fsync path=*.wal errno=EIO skip=1 limit=2 seed=0"
                .parse()
                .unwrap(),
        )
        .unwrap();
    write_file(&fs, "a.wal", b"first", true);
    lab.cache.cut_power();
    fs.abandon();
    lab.cache.restore_power(PowerLoss::DropUnflushed).unwrap();
    let again = lab.mount();
    again.take_over_file_rules(&fs);
    drop(fs);
    let rules = again.file_rules();
    assert_eq!(rules.len(), 1);
    assert_eq!((rules[0].id, rules[0].matched), (id, 1), "counters kept");
    let (_, handle) = again
        .create(ROOT_INO, b"b.wal", 0o644, read_write(), &root())
        .unwrap();
    again.write(handle, 0, b"x", &root()).unwrap();
    assert_eq!(again.fsync(handle, false).unwrap_err().errno(), libc::EIO);
    again.release(handle).unwrap();
    again.unmount().unwrap();
}

/// `chattr +S` and `+D` keep their promise: each change below is the last
/// one before a power cut and no fsync is made, yet it survives: a
/// synchronous file's write, O_TRUNC truncate, setattr truncate and
/// xattr; a `+D` directory's create, mkdir, symlink, link, rename in,
/// unlink and rmdir; a write to a file made in a `+S` directory (the flag
/// is inherited). What an unflagged file got without fsync is lost.
#[test]
fn synchronous_files_and_directories_survive_a_power_cut_without_fsync() {
    use vigilfs::fs::SetAttributes;
    use vigilfs::inode::inode_flags::{DIRSYNC, SYNC};
    use vigilfs::inode::{RenameFlags, XattrFlags};

    let lab = Lab::new();
    let mut fs = lab.mount();
    let flagged = write_file(&fs, "flagged", b"", true);
    fs.set_flags(flagged, SYNC, &root()).unwrap();
    write_file(&fs, "plain", b"", true);
    let dir = fs.mkdir(ROOT_INO, b"dir", 0o755, &root()).unwrap().ino;
    fs.set_flags(dir, DIRSYNC, &root()).unwrap();
    let inherits = fs.mkdir(ROOT_INO, b"inherits", 0o755, &root()).unwrap().ino;
    fs.set_flags(inherits, SYNC, &root()).unwrap();
    let other = fs.mkdir(ROOT_INO, b"other", 0o755, &root()).unwrap().ino;
    let (moved, handle) = fs
        .create(other, b"moved", 0o644, read_write(), &root())
        .unwrap();
    fs.release(handle).unwrap();
    fs.syncfs_once().unwrap();
    let cut = |fs: Filesystem| lab.power_cut(fs, PowerLoss::DropUnflushed);
    let found = |fs: &Filesystem, parent: u64, name: &[u8]| fs.lookup(parent, name, &root()).ok();

    // The plain file's write is lost; the synchronous one's, made after it,
    // is kept.
    write_file(&fs, "plain", b"written, no fsync", false);
    write_file(&fs, "flagged", b"written synchronously", false);
    fs = cut(fs);
    assert_eq!(read_file(&fs, "flagged").unwrap(), b"written synchronously");
    assert_eq!(read_file(&fs, "plain").unwrap(), b"", "not synced: lost");
    assert_eq!(
        fs.get_flags(flagged).unwrap(),
        SYNC,
        "the flag survives too"
    );

    let truncate = OpenFlags::from_libc(libc::O_WRONLY | libc::O_TRUNC);
    let handle = fs.open(flagged, truncate, &root()).unwrap();
    fs.release(handle).unwrap();
    fs = cut(fs);
    assert_eq!(read_file(&fs, "flagged").unwrap(), b"", "O_TRUNC");

    write_file(&fs, "flagged", b"grown again", false);
    let shorter = SetAttributes {
        size: Some(5),
        ..SetAttributes::default()
    };
    fs.setattr(flagged, &shorter, None, &root()).unwrap();
    fs = cut(fs);
    assert_eq!(read_file(&fs, "flagged").unwrap(), b"grown", "setattr");

    fs.setxattr(
        flagged,
        b"user.kept",
        b"yes",
        XattrFlags::default(),
        &root(),
    )
    .unwrap();
    fs = cut(fs);
    assert_eq!(fs.getxattr(flagged, b"user.kept", &root()).unwrap(), b"yes");

    let (child, handle) = fs
        .create(dir, b"entry", 0o644, read_write(), &root())
        .unwrap();
    fs.release(handle).unwrap();
    fs = cut(fs);
    assert_eq!(found(&fs, dir, b"entry").unwrap().ino, child.ino, "create");

    fs.mkdir(dir, b"sub", 0o755, &root()).unwrap();
    fs = cut(fs);
    assert!(found(&fs, dir, b"sub").is_some(), "mkdir");

    fs.symlink(dir, b"link-to", b"entry", &root()).unwrap();
    fs = cut(fs);
    assert!(found(&fs, dir, b"link-to").is_some(), "symlink");

    fs.link(child.ino, dir, b"second", &root()).unwrap();
    fs = cut(fs);
    assert!(found(&fs, dir, b"second").is_some(), "link");

    fs.rename(
        other,
        b"moved",
        dir,
        b"moved-in",
        RenameFlags::default(),
        &root(),
    )
    .unwrap();
    fs = cut(fs);
    assert_eq!(
        found(&fs, dir, b"moved-in").unwrap().ino,
        moved.ino,
        "rename"
    );

    fs.unlink(dir, b"second", &root()).unwrap();
    fs = cut(fs);
    assert!(found(&fs, dir, b"second").is_none(), "unlink");

    fs.rmdir(dir, b"sub", &root()).unwrap();
    fs = cut(fs);
    assert!(found(&fs, dir, b"sub").is_none(), "rmdir");

    let (inheritor, handle) = fs
        .create(inherits, b"child", 0o644, read_write(), &root())
        .unwrap();
    assert_eq!(fs.get_flags(inheritor.ino).unwrap(), SYNC, "inherited");
    fs.write(handle, 0, b"inherited S", &root()).unwrap();
    fs.release(handle).unwrap();
    fs = cut(fs);
    let handle = fs.open(inheritor.ino, read_write(), &root()).unwrap();
    assert_eq!(fs.read(handle, 0, 64).unwrap(), b"inherited S");
    fs.release(handle).unwrap();

    fs.unmount().unwrap();
    let report = fsck(lab.memory.clone(), &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
}

#[test]
fn the_errors_policy_does_not_act_on_a_simulated_power_cut() {
    for policy in [ErrorsPolicy::RemountReadOnly, ErrorsPolicy::Panic] {
        let lab = Lab::new();
        let fs = Filesystem::mount(
            lab.device(),
            MountOptions {
                errors: Some(policy),
                writeback_interval: Duration::from_secs(3600),
                ..MountOptions::default()
            },
        )
        .expect("mount");
        let (_, handle) = fs
            .create(ROOT_INO, b"in flight", 0o644, read_write(), &root())
            .unwrap();
        fs.write(handle, 0, b"not yet durable", &root()).unwrap();
        // The power goes while the fsync is on its way: the journal fails,
        // but no metadata failure happened to this filesystem (errors=panic
        // used to abort the crash lab's whole process).
        lab.cache.cut_power();
        assert_eq!(fs.fsync(handle, false).unwrap_err().errno(), libc::EIO);
        assert_eq!(fs.status().state, LifeState::Running, "{policy:?}");
        fs.abandon();
        fs.release(handle).unwrap();
        drop(fs);
        lab.cache.restore_power(PowerLoss::DropUnflushed).unwrap();
        lab.mount().unmount().unwrap();
    }
}

#[test]
fn a_path_rule_meets_a_file_the_kernel_learnt_from_a_directory_listing() {
    let lab = Lab::new();
    let fs = lab.mount();
    write_file(&fs, "t.db", b"a table", true);
    fs.unmount().unwrap();
    // A new mount: the names of the last one are not known. `ls -l`
    // (readdirplus) gives the kernel the inode, which it then opens
    // without a lookup.
    let fs = lab.mount();
    let directory = fs.opendir(ROOT_INO, &root()).unwrap();
    let listed = fs.readdir_plus(directory, 0, 100).unwrap();
    fs.releasedir(directory).unwrap();
    let ino = listed
        .iter()
        .find(|(item, _)| item.name == b"t.db")
        .map(|(item, _)| item.ino)
        .expect("t.db listed");
    fs.add_file_rule("file op=read path=*.db errno=EIO".parse().unwrap())
        .unwrap();
    let handle = fs
        .open(ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    assert_eq!(fs.read(handle, 0, 100).unwrap_err().errno(), libc::EIO);
    fs.release(handle).unwrap();
    fs.clear_file_rules();
    fs.unmount().unwrap();
}
