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
//!   (files/s);
//! * `parallel_write_fsync`: `random_write_fsync` in two threads at once,
//!   each on its own 64 MiB file (operations/s, both threads together);
//! * `read_during_fsync`: one thread fsyncs 256 MiB of fresh writes while
//!   another reads a cached 64 MiB file over and over in 1 MiB reads; the
//!   reader's rate while the fsync runs (MiB/s).
//!
//! Checksums are always on in vigilfs (every block is crc32c-verified on
//! read and computed on writeback).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
const PARALLEL_WRITES: usize = 2000;
const FSYNCED_BYTES: usize = 256 << 20;
const READER_FILE_BYTES: usize = 64 << 20;
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

    let handles: Vec<u64> = (0..2)
        .map(|thread| {
            let name = format!("parallel{thread}");
            let (_, handle) = fs
                .create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &root)
                .expect("create");
            for at in 0..RANDOM_FILE_BYTES as usize / MIB {
                fs.write(handle, (at * MIB) as u64, &fill, &root)
                    .expect("fill");
            }
            fs.fsync(handle, false).expect("fsync");
            handle
        })
        .collect();
    let seconds = parallel_write_fsync(|thread, offset| {
        fs.write(handles[thread], offset, &page, &root)
            .expect("write");
        fs.fsync(handles[thread], false).expect("fsync");
    });
    report(
        "parallel_write_fsync",
        (2 * PARALLEL_WRITES) as f64 / seconds,
        "ops/s",
    );

    let (_, reader) = fs
        .create(ROOT_INO, b"reader", 0o644, read_write(), &root)
        .expect("create");
    let (_, writer) = fs
        .create(ROOT_INO, b"writer", 0o644, read_write(), &root)
        .expect("create");
    for at in 0..READER_FILE_BYTES / MIB {
        fs.write(reader, (at * MIB) as u64, &block, &root)
            .expect("fill");
    }
    fs.fsync(reader, false).expect("fsync");
    for at in 0..FSYNCED_BYTES / MIB {
        fs.write(writer, (at * MIB) as u64, &block, &root)
            .expect("write");
    }
    let rate = read_during_fsync(
        || fs.fsync(writer, false).expect("fsync"),
        |offset| {
            let bytes = fs.read(reader, offset, MIB).expect("read");
            assert_eq!(bytes.len(), MIB);
        },
    );
    report("read_during_fsync", rate, "MiB/s");
    fs.unmount().expect("unmount");
    let _ = std::fs::remove_file(image);
}

/// Runs `write_fsync(thread, offset)` [`PARALLEL_WRITES`] times in each of
/// two threads, at random 4 KiB-aligned offsets; returns the seconds taken.
fn parallel_write_fsync(write_fsync: impl Fn(usize, u64) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..2 {
            let write_fsync = &write_fsync;
            scope.spawn(move || {
                let mut random = Random(42 + thread as u64);
                for _ in 0..PARALLEL_WRITES {
                    let offset = (random.next() % (RANDOM_FILE_BYTES / 4096)) * 4096;
                    write_fsync(thread, offset);
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

/// Runs `fsync` in one thread and `read_mib(offset)` over the reader
/// file, round and round, in another until the fsync is done; returns the
/// reader's MiB/s over that time.
fn read_during_fsync(fsync: impl FnOnce() + Send, read_mib: impl Fn(u64) + Sync) -> f64 {
    let done = AtomicBool::new(false);
    let mut reads = 0u64;
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            fsync();
            done.store(true, Ordering::SeqCst);
        });
        while !done.load(Ordering::SeqCst) {
            read_mib((reads % (READER_FILE_BYTES / MIB) as u64) * MIB as u64);
            reads += 1;
        }
    });
    reads as f64 / started.elapsed().as_secs_f64()
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

    let files: Vec<File> = (0..2)
        .map(|thread| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(directory.join(format!("parallel{thread}")))
                .expect("create");
            for at in 0..RANDOM_FILE_BYTES as usize / MIB {
                file.write_all_at(&fill, (at * MIB) as u64).expect("fill");
            }
            file.sync_all().expect("fsync");
            file
        })
        .collect();
    let seconds = parallel_write_fsync(|thread, offset| {
        files[thread].write_all_at(&page, offset).expect("write");
        files[thread].sync_all().expect("fsync");
    });
    report(
        "parallel_write_fsync",
        (2 * PARALLEL_WRITES) as f64 / seconds,
        "ops/s",
    );
    drop(files);

    let reader_path = directory.join("reader");
    let writer_path = directory.join("writer");
    let mut reader = File::create(&reader_path).expect("create");
    for _ in 0..READER_FILE_BYTES / MIB {
        reader.write_all(&block).expect("fill");
    }
    reader.sync_all().expect("fsync");
    let reader = File::open(&reader_path).expect("open");
    let mut writer = File::create(&writer_path).expect("create");
    for _ in 0..FSYNCED_BYTES / MIB {
        writer.write_all(&block).expect("write");
    }
    let rate = read_during_fsync(
        || writer.sync_all().expect("fsync"),
        |offset| {
            let mut buffer = vec![0u8; MIB];
            reader.read_exact_at(&mut buffer, offset).expect("read");
        },
    );
    report("read_during_fsync", rate, "MiB/s");
    for path in [reader_path, writer_path] {
        std::fs::remove_file(path).expect("remove");
    }
    for thread in 0..2 {
        std::fs::remove_file(directory.join(format!("parallel{thread}"))).expect("remove");
    }
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
