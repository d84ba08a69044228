//! Crash consistency of the whole filesystem: a random workload of file and
//! directory operations runs against the engine API on a device with a
//! volatile write cache, and the power is cut at every flush point in turn.
//! After each cut the image a reboot would find (unflushed writes dropped,
//! kept, or torn at sector granularity) is mounted, which replays the
//! journal, and checked:
//!
//! * fsck finds nothing wrong (after the recovery mount's clean unmount);
//! * every file whose last fsync returned success, and that was not
//!   changed afterwards, has exactly its fsynced contents under its name;
//! * every directory a syncfs made durable, and no rmdir touched since,
//!   exists;
//! * every file that exists reads back without an error (checksums hold).
//!
//! A third workload writes large ranges into a small device, so it runs out
//! of space again and again (unlinks and truncates give space back): every
//! ENOSPC a write returns must be true when returned (nothing more could be
//! promised: statfs says no block is available), a short write keeps what
//! it accepted, and no fsync ever fails with ENOSPC (what write accepted
//! always has its blocks).
//!
//! The workloads also fallocate, so power cuts fall on writes that fill
//! preallocated blocks in place; a write wholly into blocks fallocated and
//! never written since must never be refused for space, however full the
//! device.
//!
//! The workload is deterministic (seeded), so the run that is cut at flush
//! N is the same run as the clean one up to that flush.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use vigilfs::device::{BlockDevice, CrashDevice, CrashMode, MemoryDevice, SectorSize};
use vigilfs::format::ErrorsPolicy;
use vigilfs::fs::{Filesystem, MountOptions, OpenFlags, SetAttributes};
use vigilfs::fsck::fsck;
use vigilfs::inode::{Caller, FallocateMode, RenameFlags, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

const DEVICE_BYTES: u64 = 24 << 20;
/// The device the filling workload fills, again and again.
const SMALL_DEVICE_BYTES: u64 = 6 << 20;
const NAMES: [&[u8]; 6] = [b"a", b"b", b"c", b"d", b"e", b"f"];
const DIRECTORIES: [&[u8]; 3] = [b"x", b"y", b"z"];
const OPERATIONS: usize = 160;

/// xorshift64*: small, seeded, reproducible.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn options() -> MountOptions {
    MountOptions {
        // No background writeback: the run must be deterministic.
        writeback_interval: Duration::from_secs(3600),
        dirty_limit_bytes: u64::MAX / 4,
        errors: Some(ErrorsPolicy::Continue),
        ..MountOptions::default()
    }
}

fn read_write() -> OpenFlags {
    OpenFlags {
        read: true,
        write: true,
        ..OpenFlags::default()
    }
}

/// What the workload knows to be durable: file name → contents as of its
/// last successful fsync, for files not changed since.
type Durable = BTreeMap<Vec<u8>, Vec<u8>>;

/// Runs the workload until it ends or the device loses power; returns the
/// durable model. With `fill`, writes are large enough to fill the device.
fn workload(fs: &Filesystem, seed: u64, fill: bool) -> (Durable, BTreeSet<Vec<u8>>, usize) {
    let mut state = Workload {
        fs,
        root: Caller::root(),
        fill,
        random: Random(seed | 1),
        contents: BTreeMap::new(),
        blocks: BTreeMap::new(),
        durable: Durable::new(),
        directories: BTreeSet::new(),
        durable_directories: BTreeSet::new(),
        refusals: 0,
    };
    for _ in 0..OPERATIONS {
        if let Err(errno) = state.step() {
            if errno != libc::ENOENT && errno != libc::ENOSPC {
                // The power went: nothing more can be learned.
                break;
            }
        }
    }
    (state.durable, state.durable_directories, state.refusals)
}

struct Workload<'a> {
    fs: &'a Filesystem,
    root: Caller,
    /// Large writes that run the device out of space.
    fill: bool,
    /// Writes refused with ENOSPC.
    refusals: usize,
    random: Random,
    /// Contents as the workload wrote them (what a read returns now).
    contents: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Which file blocks were written, and which fallocated and not
    /// written since, by file name.
    blocks: BTreeMap<Vec<u8>, FileBlocks>,
    durable: Durable,
    /// Directories that exist now, and those a syncfs made durable and no
    /// rmdir touched since.
    directories: BTreeSet<Vec<u8>>,
    durable_directories: BTreeSet<Vec<u8>>,
}

/// File blocks (4 KiB) a file's writes touched, and those fallocated
/// while not written and not written since: a write wholly into the
/// latter needs no new space.
#[derive(Default)]
struct FileBlocks {
    written: BTreeSet<u64>,
    preallocated: BTreeSet<u64>,
}

fn blocks_of(offset: u64, length: u64) -> std::ops::Range<u64> {
    offset / 4096..(offset + length).div_ceil(4096)
}

fn errno(error: vigilfs::fs::FsError) -> i32 {
    error.errno()
}

impl Workload<'_> {
    fn name(&mut self) -> Vec<u8> {
        NAMES[self.random.below(NAMES.len() as u64) as usize].to_vec()
    }

    fn step(&mut self) -> Result<(), i32> {
        let name = self.name();
        match self.random.below(13) {
            0..=4 => self.write(name),
            12 => self.fallocate(name),
            10 => {
                let directory = DIRECTORIES[self.random.below(3) as usize].to_vec();
                let attr = self
                    .fs
                    .mkdir(ROOT_INO, &directory, 0o755, &self.root)
                    .map_err(errno);
                if let Err(libc::EEXIST) = attr {
                    return Ok(());
                }
                let attr = attr?;
                // Something in it, so rmdir sometimes meets ENOTEMPTY.
                if self.random.below(2) == 0 {
                    self.fs
                        .mknod(attr.ino, b"inner", libc::S_IFREG | 0o600, 0, &self.root)
                        .map_err(errno)?;
                }
                self.directories.insert(directory);
                Ok(())
            }
            11 => {
                let directory = DIRECTORIES[self.random.below(3) as usize].to_vec();
                self.durable_directories.remove(&directory);
                match self
                    .fs
                    .rmdir(ROOT_INO, &directory, &self.root)
                    .map_err(errno)
                {
                    Ok(()) => {
                        self.directories.remove(&directory);
                        Ok(())
                    }
                    Err(libc::ENOTEMPTY) => Ok(()),
                    Err(errno) => Err(errno),
                }
            }
            5 => {
                self.durable.remove(&name);
                let unlinked = self.fs.unlink(ROOT_INO, &name, &self.root).map_err(errno);
                assert_ne!(
                    unlinked,
                    Err(libc::ENOSPC),
                    "a full filesystem refused an unlink"
                );
                unlinked?;
                self.contents.remove(&name);
                self.blocks.remove(&name);
                Ok(())
            }
            6 => {
                let target = self.name();
                self.durable.remove(&name);
                self.durable.remove(&target);
                self.fs
                    .rename(
                        ROOT_INO,
                        &name,
                        ROOT_INO,
                        &target,
                        RenameFlags::default(),
                        &self.root,
                    )
                    .map_err(errno)?;
                if let Some(moved) = self.contents.remove(&name) {
                    self.contents.insert(target.clone(), moved);
                }
                if let Some(moved) = self.blocks.remove(&name) {
                    self.blocks.insert(target, moved);
                }
                Ok(())
            }
            7 => {
                let size = self.random.below(5 * 4096);
                self.durable.remove(&name);
                let attr = self.fs.lookup(ROOT_INO, &name, &self.root).map_err(errno)?;
                let changes = SetAttributes {
                    size: Some(size),
                    ..SetAttributes::default()
                };
                let truncated = self
                    .fs
                    .setattr(attr.ino, &changes, None, &self.root)
                    .map_err(errno);
                assert_ne!(
                    truncated,
                    Err(libc::ENOSPC),
                    "a full filesystem refused a truncate"
                );
                truncated?;
                if let Some(file) = self.contents.get_mut(&name) {
                    file.resize(size as usize, 0);
                }
                if let Some(blocks) = self.blocks.get_mut(&name) {
                    let kept = size.div_ceil(4096);
                    blocks.written.retain(|&block| block < kept);
                    blocks.preallocated.retain(|&block| block < kept);
                }
                Ok(())
            }
            8 => {
                // Make everything durable through one handle.
                let attr = self.fs.lookup(ROOT_INO, &name, &self.root).map_err(errno)?;
                let handle = self
                    .fs
                    .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &self.root)
                    .map_err(errno)?;
                let synced = self.fs.syncfs(handle);
                let _ = self.fs.release(handle);
                assert_ne!(
                    synced.as_ref().map_err(|error| error.errno()).err(),
                    Some(libc::ENOSPC),
                    "syncfs of accepted data failed for space"
                );
                synced.map_err(errno)?;
                self.durable = self.contents.clone();
                self.durable_directories = self.directories.clone();
                Ok(())
            }
            _ => {
                // fsync an existing file through a fresh handle.
                let attr = self.fs.lookup(ROOT_INO, &name, &self.root).map_err(errno)?;
                let handle = self
                    .fs
                    .open(attr.ino, read_write(), &self.root)
                    .map_err(errno)?;
                let synced = self.fs.fsync(handle, false);
                let _ = self.fs.release(handle);
                assert_ne!(
                    synced.as_ref().map_err(|error| error.errno()).err(),
                    Some(libc::ENOSPC),
                    "fsync of accepted data failed for space"
                );
                synced.map_err(errno)?;
                if let Some(file) = self.contents.get(&name) {
                    self.durable.insert(name, file.clone());
                }
                Ok(())
            }
        }
    }

    /// Writes a random range of `name` (made if missing), and maybe
    /// fsyncs it.
    fn write(&mut self, name: Vec<u8>) -> Result<(), i32> {
        let fs = self.fs;
        let ino = match fs.lookup(ROOT_INO, &name, &self.root) {
            Ok(attr) => attr.ino,
            Err(_) => {
                fs.mknod(ROOT_INO, &name, libc::S_IFREG | 0o644, 0, &self.root)
                    .map_err(errno)?
                    .ino
            }
        };
        self.contents.entry(name.clone()).or_default();
        self.durable.remove(&name);
        let handle = fs.open(ino, read_write(), &self.root).map_err(errno)?;
        let preallocated: Vec<u64> = self
            .blocks
            .get(&name)
            .map(|blocks| blocks.preallocated.iter().copied().collect())
            .unwrap_or_default();
        let (offset, length) = if self.fill && !preallocated.is_empty() && self.random.below(2) == 0
        {
            // Into one preallocated block: on a full device it must fit.
            let block = preallocated[self.random.below(preallocated.len() as u64) as usize];
            let length = 1 + self.random.below(4096);
            let within = self.random.below(4096 - length + 1);
            ((block * 4096 + within) as usize, length as usize)
        } else if self.fill {
            (
                self.random.below(2 << 20) as usize,
                1 + self.random.below(1 << 20) as usize,
            )
        } else {
            (
                self.random.below(6 * 4096) as usize,
                1 + self.random.below(3 * 4096) as usize,
            )
        };
        let bytes = vec![self.random.next() as u8; length];
        let sync = self.random.below(2) == 0;
        let written = fs.write(handle, offset as u64, &bytes, &self.root);
        let blocks = self.blocks.entry(name.clone()).or_default();
        let range = blocks_of(offset as u64, length as u64);
        if range
            .clone()
            .all(|block| blocks.preallocated.contains(&block))
        {
            assert_eq!(
                written.as_ref().map_err(|error| error.errno()),
                Ok(&length),
                "a write of {length} bytes at {offset} into preallocated blocks"
            );
        }
        if written.is_ok() {
            for block in range {
                blocks.preallocated.remove(&block);
                blocks.written.insert(block);
            }
        }
        if let Ok(count) = written {
            let file = self.contents.get_mut(&name).expect("inserted above");
            if file.len() < offset + count {
                file.resize(offset + count, 0);
            }
            file[offset..offset + count].copy_from_slice(&bytes[..count]);
        }
        let synced = if sync && written.is_ok() {
            fs.fsync(handle, false)
        } else {
            Ok(())
        };
        let _ = fs.release(handle);
        match written.map_err(errno) {
            Err(libc::ENOSPC) => {
                // True when returned: nothing more could be promised.
                let statfs = fs.statfs().map_err(errno)?;
                assert_eq!(
                    statfs.available_blocks, 0,
                    "write of {length} bytes refused with ENOSPC while {statfs:?}"
                );
                self.refusals += 1;
                return Ok(());
            }
            outcome => {
                outcome?;
            }
        }
        if let Err(error) = &synced {
            assert_ne!(
                error.errno(),
                libc::ENOSPC,
                "fsync of accepted data failed for space"
            );
        }
        synced.map_err(errno)?;
        if sync {
            let file = self.contents[&name].clone();
            self.durable.insert(name, file);
        }
        Ok(())
    }
}

impl Workload<'_> {
    /// Fallocates a random range of `name` (if it exists), keeping the size
    /// or not.
    fn fallocate(&mut self, name: Vec<u8>) -> Result<(), i32> {
        let fs = self.fs;
        let attr = fs.lookup(ROOT_INO, &name, &self.root).map_err(errno)?;
        let (offset, length) = if self.fill {
            (self.random.below(2 << 20), 1 + self.random.below(1 << 20))
        } else {
            (self.random.below(6 * 4096), 1 + self.random.below(3 * 4096))
        };
        let keep_size = self.random.below(2) == 0;
        let mode = if keep_size {
            FallocateMode::KEEP_SIZE
        } else {
            FallocateMode::ALLOCATE
        };
        // Not a durability point: a cut may find the size before or after.
        self.durable.remove(&name);
        let handle = fs.open(attr.ino, read_write(), &self.root).map_err(errno)?;
        let allocated = fs.fallocate(handle, offset, length, mode, &self.root);
        let _ = fs.release(handle);
        let file = self.contents.entry(name.clone()).or_default();
        match allocated.map_err(errno) {
            Err(libc::ENOSPC) => {
                // fallocate goes in pieces: those before the refusal stay,
                // and may have grown the file.
                let size = fs
                    .lookup(ROOT_INO, &name, &self.root)
                    .map_err(errno)?
                    .record
                    .size;
                if (file.len() as u64) < size {
                    file.resize(size as usize, 0);
                }
                return Ok(());
            }
            outcome => outcome?,
        }
        if !keep_size && (file.len() as u64) < offset + length {
            file.resize((offset + length) as usize, 0);
        }
        let blocks = self.blocks.entry(name).or_default();
        for block in blocks_of(offset, length) {
            if !blocks.written.contains(&block) {
                blocks.preallocated.insert(block);
            }
        }
        Ok(())
    }
}

fn formatted_image(bytes: u64) -> Vec<u8> {
    let memory = Arc::new(MemoryDevice::new(bytes, SectorSize::Bytes512));
    make_filesystem(memory.clone(), &MkfsOptions::default()).expect("mkfs");
    memory.to_image()
}

/// Mounts the image a crash left, checks the durable model, unmounts, and
/// checks the image with fsck.
fn check_recovered(
    image: MemoryDevice,
    (durable, directories, _): &(Durable, BTreeSet<Vec<u8>>, usize),
    context: &str,
) {
    let device: Arc<dyn BlockDevice> = Arc::new(image);
    let fs = Filesystem::mount(device.clone(), options())
        .unwrap_or_else(|error| panic!("{context}: mount after the crash: {error}"));
    let root = Caller::root();
    for (name, expected) in durable {
        let attr = fs
            .lookup(ROOT_INO, name, &root)
            .unwrap_or_else(|error| panic!("{context}: fsynced file {name:?} is gone: {error}"));
        let handle = fs
            .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root)
            .unwrap();
        let found = fs.read(handle, 0, 4 << 20).unwrap();
        fs.release(handle).unwrap();
        if &found != expected {
            let first = found.iter().zip(expected.iter()).position(|(a, b)| a != b);
            let last = found.iter().zip(expected.iter()).rposition(|(a, b)| a != b);
            eprintln!(
                "DBG {context}: differ from {first:?} to {last:?}: found {:?} expected {:?}",
                first.map(|f| found[f]),
                first.map(|f| expected[f])
            );
        }
        assert!(
            &found == expected,
            "{context}: {name:?} has {} bytes, its fsynced contents had {}",
            found.len(),
            expected.len()
        );
    }
    for directory in directories {
        let attr = fs
            .lookup(ROOT_INO, directory, &root)
            .unwrap_or_else(|error| {
                panic!("{context}: synced directory {directory:?} is gone: {error}")
            });
        assert_eq!(attr.file_type(), vigilfs::inode::FileType::Directory);
    }
    for name in NAMES {
        if let Ok(attr) = fs.lookup(ROOT_INO, name, &root) {
            let handle = fs
                .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root)
                .unwrap();
            fs.read(handle, 0, 4 << 20)
                .unwrap_or_else(|error| panic!("{context}: {name:?} does not read back: {error}"));
            fs.release(handle).unwrap();
        }
    }
    fs.unmount()
        .unwrap_or_else(|error| panic!("{context}: unmount after recovery: {error}"));
    let report = fsck(device, &mut |_| {}).expect("fsck");
    assert!(report.is_clean(), "{context}: fsck: {:#?}", report.problems);
}

/// Runs the workload once per flush point, cut there; returns whether it
/// ran (a filling workload that never filled the device does not).
fn cut_at_every_flush(seed: u64, fill: bool) -> bool {
    let image = formatted_image(if fill {
        SMALL_DEVICE_BYTES
    } else {
        DEVICE_BYTES
    });
    // A clean run counts the flush points.
    let flushes = {
        let device = Arc::new(CrashDevice::from_image(image.clone(), SectorSize::Bytes512));
        let fs = Filesystem::mount(device.clone(), options()).expect("mount");
        let (_, _, refusals) = workload(&fs, seed, fill);
        if fill && refusals == 0 {
            return false;
        }
        let flushes = device.flushes_issued();
        drop(fs);
        flushes
    };
    assert!(flushes > 10, "the workload flushed only {flushes} times");
    for cut in 1..=flushes {
        let device = Arc::new(CrashDevice::from_image(image.clone(), SectorSize::Bytes512));
        device.cut_power_at_flush(Some(cut));
        let durable = match Filesystem::mount(device.clone(), options()) {
            Ok(fs) => {
                let durable = workload(&fs, seed, fill);
                drop(fs);
                durable
            }
            // The cut came during mount itself: nothing was promised.
            Err(_) => (Durable::new(), BTreeSet::new(), 0),
        };
        for (mode_name, mode) in [
            ("drop", CrashMode::DropUnflushed),
            ("keep", CrashMode::KeepUnflushed),
            ("torn", CrashMode::Torn { seed: cut }),
        ] {
            let context =
                format!("seed {seed}, power cut at flush {cut} of {flushes}, {mode_name}");
            check_recovered(device.crash(mode), &durable, &context);
        }
    }
    true
}

#[test]
fn fsynced_files_survive_a_power_cut_at_every_flush_point() {
    assert!(cut_at_every_flush(0x5eed, false));
}

#[test]
fn a_second_workload_survives_a_power_cut_at_every_flush_point() {
    assert!(cut_at_every_flush(0xc0ffee, false));
}

#[test]
fn a_workload_that_keeps_filling_the_device_survives_a_power_cut_at_every_flush_point() {
    assert!(
        cut_at_every_flush(0xf11, true),
        "the workload never filled the device"
    );
}

#[test]
#[ignore = "a search over many seeds; run by hand"]
fn many_filling_workloads_survive_every_power_cut() {
    let filled = (1..40)
        .filter(|seed| cut_at_every_flush(seed * 7919, true))
        .count();
    assert!(filled > 10, "only {filled} workloads filled the device");
}
