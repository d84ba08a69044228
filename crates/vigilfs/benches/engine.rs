//! Filesystem workloads through the engine API, and the same workloads
//! through POSIX calls on a directory (tmpfs, kernel ext4 on a loop
//! device), so `bench/engine.sh` can compare them in one run.
//!
//! Usage (after `cargo bench -p vigilfs --bench engine --no-run`):
//!
//! ```text
//! engine vigilfs IMAGE   # IMAGE: a path for a new image file (removed after)
//! engine posix DIR       # DIR: an empty directory on the filesystem to measure
//! ```
//!
//! Each workload prints one line: `name value unit`. Workloads:
//!
//! * `seq_write`: 1 GiB in 1 MiB writes to a new file, then fsync (MiB/s);
//! * `seq_read`: the same file read back in 1 MiB reads, cold for vigilfs
//!   (after a remount) and for POSIX as far as the kernel allows (page
//!   cache dropped; tmpfs has no colder state) (MiB/s);
//! * `random_write_fsync`: 4 KiB writes at random 4 KiB-aligned offsets of
//!   a 64 MiB file, each followed by fsync (operations/s);
//! * `create_fsync`: small files created, 4 KiB written, fsynced, closed
//!   (files/s).
//!
//! Checksums are always on in vigilfs (every block is crc32c-verified on
//! read and computed on writeback).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use vigilfs::device::{BlockDevice, FileDevice, FileDeviceOptions, SectorSize};
use vigilfs::fs::{Filesystem, MountOptions, OpenFlags};
use vigilfs::inode::{Caller, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

const MIB: usize = 1 << 20;
const SEQUENTIAL_BYTES: usize = 1 << 30;
const RANDOM_FILE_BYTES: u64 = 64 << 20;
const RANDOM_WRITES: usize = 4000;
const SMALL_FILES: usize = 2000;
const IMAGE_BYTES: u64 = 3 << 30;

fn report(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.1} {unit}");
}

/// xorshift64*: the same offsets for every filesystem.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn pattern(length: usize) -> Vec<u8> {
    (0..length).map(|at| (at * 7 + at / 4096) as u8).collect()
}

fn read_write() -> OpenFlags {
    OpenFlags {
        read: true,
        write: true,
        ..OpenFlags::default()
    }
}

fn mount(image: &Path) -> Filesystem {
    let device: Arc<dyn BlockDevice> = Arc::new(
        FileDevice::open(
            image,
            FileDeviceOptions {
                read_only: false,
                sector_size: Some(SectorSize::Bytes4096),
            },
        )
        .expect("open image"),
    );
    Filesystem::mount(device, MountOptions::default()).expect("mount")
}

fn vigilfs(image: &Path) {
    let _ = std::fs::remove_file(image);
    {
        let device: Arc<dyn BlockDevice> = Arc::new(
            FileDevice::create_image(image, IMAGE_BYTES, SectorSize::Bytes4096).expect("image"),
        );
        make_filesystem(device, &MkfsOptions::default()).expect("mkfs");
    }
    let root = Caller::root();
    let block = pattern(MIB);

    let fs = mount(image);
    let (attr, handle) = fs
        .create(ROOT_INO, b"sequential", 0o644, read_write(), &root)
        .expect("create");
    let started = Instant::now();
    for at in 0..SEQUENTIAL_BYTES / MIB {
        fs.write(handle, (at * MIB) as u64, &block, &root)
            .expect("write");
    }
    fs.fsync(handle, false).expect("fsync");
    let seconds = started.elapsed().as_secs_f64();
    report(
        "seq_write",
        SEQUENTIAL_BYTES as f64 / MIB as f64 / seconds,
        "MiB/s",
    );
    fs.release(handle).expect("release");
    fs.unmount().expect("unmount");

    let fs = mount(image);
    let handle = fs
        .open(attr.ino, OpenFlags::from_libc(libc::O_RDONLY), &root)
        .expect("open");
    let started = Instant::now();
    for at in 0..SEQUENTIAL_BYTES / MIB {
        let bytes = fs.read(handle, (at * MIB) as u64, MIB).expect("read");
        assert_eq!(bytes.len(), MIB);
    }
    let seconds = started.elapsed().as_secs_f64();
    report(
        "seq_read",
        SEQUENTIAL_BYTES as f64 / MIB as f64 / seconds,
        "MiB/s",
    );
    fs.release(handle).expect("release");
    fs.unlink(ROOT_INO, b"sequential", &root).expect("unlink");

    let (_, handle) = fs
        .create(ROOT_INO, b"random", 0o644, read_write(), &root)
        .expect("create");
    let fill = pattern(MIB);
    for at in 0..RANDOM_FILE_BYTES as usize / MIB {
        fs.write(handle, (at * MIB) as u64, &fill, &root)
            .expect("fill");
    }
    fs.fsync(handle, false).expect("fsync");
    let mut random = Random(42);
    let page = pattern(4096);
    let started = Instant::now();
    for _ in 0..RANDOM_WRITES {
        let offset = (random.next() % (RANDOM_FILE_BYTES / 4096)) * 4096;
        fs.write(handle, offset, &page, &root).expect("write");
        fs.fsync(handle, false).expect("fsync");
    }
    let seconds = started.elapsed().as_secs_f64();
    report(
        "random_write_fsync",
        RANDOM_WRITES as f64 / seconds,
        "ops/s",
    );
    fs.release(handle).expect("release");

    let directory = fs.mkdir(ROOT_INO, b"small", 0o755, &root).expect("mkdir");
    let started = Instant::now();
    for at in 0..SMALL_FILES {
        let name = format!("file{at}");
        let (_, handle) = fs
            .create(directory.ino, name.as_bytes(), 0o644, read_write(), &root)
            .expect("create");
        fs.write(handle, 0, &page, &root).expect("write");
        fs.fsync(handle, false).expect("fsync");
        fs.release(handle).expect("release");
    }
    let seconds = started.elapsed().as_secs_f64();
    report("create_fsync", SMALL_FILES as f64 / seconds, "files/s");
    fs.unmount().expect("unmount");
    let _ = std::fs::remove_file(image);
}

fn drop_caches() {
    // Best effort: needs root; tmpfs keeps its pages anyway.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn posix(directory: &Path) {
    let block = pattern(MIB);
    let path: PathBuf = directory.join("sequential");
    let started = Instant::now();
    {
        let mut file = File::create(&path).expect("create");
        for _ in 0..SEQUENTIAL_BYTES / MIB {
            file.write_all(&block).expect("write");
        }
        file.sync_all().expect("fsync");
    }
    let seconds = started.elapsed().as_secs_f64();
    report(
        "seq_write",
        SEQUENTIAL_BYTES as f64 / MIB as f64 / seconds,
        "MiB/s",
    );

    drop_caches();
    let mut buffer = vec![0u8; MIB];
    let started = Instant::now();
    {
        let file = File::open(&path).expect("open");
        for at in 0..SEQUENTIAL_BYTES / MIB {
            file.read_exact_at(&mut buffer, (at * MIB) as u64)
                .expect("read");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    report(
        "seq_read",
        SEQUENTIAL_BYTES as f64 / MIB as f64 / seconds,
        "MiB/s",
    );
    std::fs::remove_file(&path).expect("remove");

    let path = directory.join("random");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    let fill = pattern(MIB);
    for at in 0..RANDOM_FILE_BYTES as usize / MIB {
        file.write_all_at(&fill, (at * MIB) as u64).expect("fill");
    }
    file.sync_all().expect("fsync");
    let mut random = Random(42);
    let page = pattern(4096);
    let started = Instant::now();
    for _ in 0..RANDOM_WRITES {
        let offset = (random.next() % (RANDOM_FILE_BYTES / 4096)) * 4096;
        file.write_all_at(&page, offset).expect("write");
        file.sync_all().expect("fsync");
    }
    let seconds = started.elapsed().as_secs_f64();
    report(
        "random_write_fsync",
        RANDOM_WRITES as f64 / seconds,
        "ops/s",
    );
    drop(file);
    std::fs::remove_file(&path).expect("remove");

    let small = directory.join("small");
    std::fs::create_dir(&small).expect("mkdir");
    let started = Instant::now();
    for at in 0..SMALL_FILES {
        let mut file = File::create(small.join(format!("file{at}"))).expect("create");
        file.write_all(&page).expect("write");
        file.sync_all().expect("fsync");
    }
    let seconds = started.elapsed().as_secs_f64();
    report("create_fsync", SMALL_FILES as f64 / seconds, "files/s");
    std::fs::remove_dir_all(&small).expect("remove");
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; ignore flags.
    let words: Vec<&str> = arguments
        .iter()
        .map(String::as_str)
        .filter(|word| !word.starts_with("--"))
        .collect();
    match words.as_slice() {
        ["vigilfs", image] => vigilfs(Path::new(image)),
        ["posix", directory] => posix(Path::new(directory)),
        [] => eprintln!("usage: engine vigilfs IMAGE | engine posix DIR (see bench/engine.sh)"),
        _ => {
            eprintln!("usage: engine vigilfs IMAGE | engine posix DIR");
            std::process::exit(2);
        }
    }
}
