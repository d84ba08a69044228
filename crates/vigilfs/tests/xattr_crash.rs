//! Crash consistency of extended attributes: a workload sets, replaces and
//! removes attributes of every storage kind (inline, in pieces, long names
//! kept under a digest), and deletes files with many of them while they
//! are open (orphans, whose attributes go in batches of transactions); the
//! power is cut at every flush point in turn. Each image a reboot would
//! find (unflushed writes dropped, kept, or torn in several ways) must be:
//!
//! * clean to fsck as it is, before any mount (fsck replays the journal in
//!   memory): what an operator runs first after a crash;
//! * mountable, with every attribute a syncfs made durable, and not
//!   changed since, holding its value;
//! * clean to fsck after the recovery mount's unmount.
//!
//! (A cut between two deletion batches of one orphan is not among the
//! images this workload makes: the batches share a journal entry. fsck's
//! own test plants that state: `fsck::xattrs`.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use vigilfs::device::{BlockDevice, CrashDevice, CrashMode, MemoryDevice, SectorSize};
use vigilfs::format::ErrorsPolicy;
use vigilfs::fs::{Filesystem, MountOptions, OpenFlags};
use vigilfs::fsck::fsck;
use vigilfs::inode::{Caller, XattrFlags, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

const DEVICE_BYTES: u64 = 24 << 20;
const FILES: [&[u8]; 3] = [b"a", b"b", b"c"];
/// Torn images made of each cut.
const TEARS: u64 = 8;

/// (file, attribute name) → value.
type Attributes = BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>;

fn options() -> MountOptions {
    MountOptions {
        // No background writeback: the run must be deterministic.
        writeback_interval: Duration::from_secs(3600),
        errors: Some(ErrorsPolicy::Continue),
        ..MountOptions::default()
    }
}

/// Attribute `index` of every storage kind in turn: inline, in pieces, a
/// name over 118 bytes inline and in pieces.
fn attribute(index: usize, round: usize) -> (Vec<u8>, Vec<u8>) {
    let mut name = format!("user.{index:03}-").into_bytes();
    if index % 4 >= 2 {
        name.resize(200 + index % 50, b'n');
    }
    let length = match index % 2 {
        0 => 1 + (index * 7 + round) % 60,
        _ => 3_000 + (index * 997 + round * 131) % 9_000,
    };
    let value = (0..length).map(|at| (at + index + round) as u8).collect();
    (name, value)
}

/// What the workload did, as far as a crash can tell: the attributes the
/// last syncfs made durable that nothing changed since.
struct Workload<'a> {
    fs: &'a Filesystem,
    root: Caller,
    now: Attributes,
    durable: Attributes,
}

impl Workload<'_> {
    fn ino(&self, file: &[u8]) -> Result<u64, String> {
        match self.fs.lookup(ROOT_INO, file, &self.root) {
            Ok(attr) => Ok(attr.ino),
            Err(_) => self
                .fs
                .mknod(ROOT_INO, file, libc::S_IFREG | 0o644, 0, &self.root)
                .map(|attr| attr.ino)
                .map_err(|error| error.to_string()),
        }
    }

    fn set(&mut self, file: &[u8], name: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        let key = (file.to_vec(), name);
        self.durable.remove(&key);
        let ino = self.ino(file)?;
        self.fs
            .setxattr(ino, &key.1, &value, XattrFlags::default(), &self.root)
            .map_err(|error| error.to_string())?;
        self.now.insert(key, value);
        Ok(())
    }

    fn remove(&mut self, file: &[u8], name: Vec<u8>) -> Result<(), String> {
        let key = (file.to_vec(), name);
        self.durable.remove(&key);
        let ino = self.ino(file)?;
        self.fs
            .removexattr(ino, &key.1, &self.root)
            .map_err(|error| error.to_string())?;
        self.now.remove(&key);
        Ok(())
    }

    fn syncfs(&mut self) -> Result<(), String> {
        let ino = self.ino(FILES[0])?;
        let handle = self
            .fs
            .open(ino, OpenFlags::from_libc(libc::O_RDONLY), &self.root)
            .map_err(|error| error.to_string())?;
        let synced = self.fs.syncfs(handle);
        let _ = self.fs.release(handle);
        synced.map_err(|error| error.to_string())?;
        self.durable = self.now.clone();
        Ok(())
    }

    /// Unlinks `file` while it is open, then closes it: the orphan's
    /// attributes are deleted in several transactions.
    fn delete_while_open(&mut self, file: &[u8]) -> Result<(), String> {
        let ino = self.ino(file)?;
        let handle = self
            .fs
            .open(ino, OpenFlags::from_libc(libc::O_RDONLY), &self.root)
            .map_err(|error| error.to_string())?;
        for key in self
            .now
            .keys()
            .filter(|(owner, _)| owner == file)
            .cloned()
            .collect::<Vec<_>>()
        {
            self.now.remove(&key);
            self.durable.remove(&key);
        }
        self.fs
            .unlink(ROOT_INO, file, &self.root)
            .map_err(|error| error.to_string())?;
        self.fs.release(handle).map_err(|error| error.to_string())
    }

    fn run(&mut self) -> Result<(), String> {
        // Enough attributes on "a" that its deletion takes several batches.
        for index in 0..40 {
            let (name, value) = attribute(index, 0);
            self.set(FILES[index % 3], name, value)?;
            if index % 13 == 12 {
                self.syncfs()?;
            }
        }
        self.syncfs()?;
        for index in (0..40).step_by(3) {
            let (name, value) = attribute(index, 1);
            if index % 2 == 0 {
                self.remove(FILES[index % 3], name)?;
            } else {
                self.set(FILES[index % 3], name, value)?;
            }
        }
        self.syncfs()?;
        self.delete_while_open(FILES[0])?;
        for index in 0..12 {
            let (name, value) = attribute(index, 2);
            self.set(FILES[1 + index % 2], name, value)?;
        }
        self.syncfs()?;
        self.delete_while_open(FILES[1])?;
        self.syncfs()
    }
}

/// Runs the workload until it ends or the power goes; returns what is
/// durable.
fn workload(fs: &Filesystem) -> Attributes {
    let mut workload = Workload {
        fs,
        root: Caller::root(),
        now: Attributes::new(),
        durable: Attributes::new(),
    };
    // An error is the power cut: what is durable stands.
    let _ = workload.run();
    workload.durable
}

fn check_recovered(image: MemoryDevice, durable: &Attributes, context: &str) {
    let device: Arc<dyn BlockDevice> = Arc::new(image);
    let report = fsck(device.clone(), &mut |_| {}).expect("fsck");
    assert!(
        report.is_clean(),
        "{context}: fsck before the mount: {:#?}",
        report.problems
    );
    let fs = Filesystem::mount(device.clone(), options())
        .unwrap_or_else(|error| panic!("{context}: mount after the crash: {error}"));
    let root = Caller::root();
    for ((file, name), value) in durable {
        let attr = fs
            .lookup(ROOT_INO, file, &root)
            .unwrap_or_else(|error| panic!("{context}: synced file {file:?} is gone: {error}"));
        let found = fs.getxattr(attr.ino, name, &root).unwrap_or_else(|error| {
            panic!(
                "{context}: synced attribute {:?} of {file:?}: {error}",
                String::from_utf8_lossy(name)
            )
        });
        assert!(
            &found == value,
            "{context}: attribute {:?} of {file:?} has {} bytes, {} were synced",
            String::from_utf8_lossy(name),
            found.len(),
            value.len()
        );
    }
    fs.unmount()
        .unwrap_or_else(|error| panic!("{context}: unmount after recovery: {error}"));
    let report = fsck(device, &mut |_| {}).expect("fsck");
    assert!(
        report.is_clean(),
        "{context}: fsck after recovery: {:#?}",
        report.problems
    );
}

#[test]
fn attributes_survive_a_power_cut_at_every_flush_point_and_fsck_finds_every_image_clean() {
    let memory = Arc::new(MemoryDevice::new(DEVICE_BYTES, SectorSize::Bytes512));
    make_filesystem(memory.clone(), &MkfsOptions::default()).expect("mkfs");
    let image = memory.to_image();
    let flushes = {
        let device = Arc::new(CrashDevice::from_image(image.clone(), SectorSize::Bytes512));
        let fs = Filesystem::mount(device.clone(), options()).expect("mount");
        let mut clean = Workload {
            fs: &fs,
            root: Caller::root(),
            now: Attributes::new(),
            durable: Attributes::new(),
        };
        clean.run().expect("the workload without a cut");
        let flushes = device.flushes_issued();
        drop(fs);
        flushes
    };
    assert!(flushes > 5, "the workload flushed only {flushes} times");
    for cut in 1..=flushes {
        let device = Arc::new(CrashDevice::from_image(image.clone(), SectorSize::Bytes512));
        device.cut_power_at_flush(Some(cut));
        let durable = match Filesystem::mount(device.clone(), options()) {
            Ok(fs) => {
                let durable = workload(&fs);
                drop(fs);
                durable
            }
            Err(_) => Attributes::new(),
        };
        // Tears keep different parts of what was written since the last
        // flush: several of each cut.
        let tears = (0..TEARS).map(|seed| {
            (
                format!("torn {seed}"),
                CrashMode::Torn {
                    seed: cut * 1000 + seed,
                },
            )
        });
        for (mode_name, mode) in [
            ("drop".to_owned(), CrashMode::DropUnflushed),
            ("keep".to_owned(), CrashMode::KeepUnflushed),
        ]
        .into_iter()
        .chain(tears)
        {
            let context = format!("power cut at flush {cut} of {flushes}, {mode_name}");
            check_recovered(device.crash(mode), &durable, &context);
        }
    }
}
