//! What scrub costs, measured on an image file: its throughput against a
//! plain sequential read of the same image in the same run, and the
//! random-read rate of a foreground reader while a scrub runs against the
//! same reader without one, the two interleaved so load changes hit both.
//!
//! Usage (after `cargo bench -p vigilfs --bench scrub --no-run`):
//!
//! ```text
//! scrub IMAGE [ROUNDS]   # IMAGE: a path for a new image file (removed after)
//! ```
//!
//! The image (2 GiB) gets 1 GiB of data in 16 files. The host's page cache
//! of the image is dropped (`posix_fadvise(DONTNEED)`, this file only)
//! before every measurement and every 100 ms during the random-read ones,
//! so reads reach the disk rather than memory. Prints one line per round
//! and measurement, `name value unit`, then the medians:
//!
//! * `sequential_read`: the whole image read in 1 MiB `pread`s (MiB/s);
//! * `scrub`: a whole scrub, every used block read and verified (MiB/s of
//!   bytes scrubbed);
//! * `random_read_alone` / `random_read_during_scrub`: 4 KiB reads at
//!   random offsets of the 16 files, through the engine with a 4 MiB page
//!   cache, for 3 s each (reads/s); with the scrub, how much it read
//!   meanwhile.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigilfs::device::{BlockDevice, FileDevice, SectorSize};
use vigilfs::fs::{Filesystem, MountOptions, OpenFlags, ScrubRequest};
use vigilfs::inode::{Caller, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

const MIB: usize = 1 << 20;
const IMAGE_BYTES: u64 = 2 << 30;
const FILES: usize = 16;
const FILE_BYTES: usize = 64 << 20;
const RANDOM_SECONDS: u64 = 3;

fn report(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.1} {unit}");
}

/// Drops the host's cached pages of `file` (and only of it).
fn drop_cache(file: &File) {
    // SAFETY: posix_fadvise only reads its integer arguments; the
    // descriptor is open for the whole call.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

fn options() -> MountOptions {
    MountOptions {
        cache_bytes: 4 << 20,
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

/// xorshift64*: the same offsets for every round.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn fill(device: Arc<dyn BlockDevice>) -> Vec<u64> {
    let fs = Filesystem::mount(device, MountOptions::default()).expect("mount");
    let caller = Caller::root();
    let chunk: Vec<u8> = (0..MIB).map(|at| (at % 251) as u8 | 1).collect();
    let mut inos = Vec::new();
    for index in 0..FILES {
        let name = format!("data{index}");
        let (attr, handle) = fs
            .create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &caller)
            .expect("create");
        for piece in 0..FILE_BYTES / MIB {
            let mut bytes = chunk.clone();
            bytes[0] = index as u8;
            bytes[1] = piece as u8;
            fs.write(handle, (piece * MIB) as u64, &bytes, &caller)
                .expect("write");
        }
        fs.fsync(handle, false).expect("fsync");
        fs.release(handle).expect("release");
        inos.push(attr.ino);
    }
    fs.unmount().expect("unmount");
    inos
}

fn sequential_read(image: &File) -> f64 {
    use std::os::unix::fs::FileExt;
    drop_cache(image);
    let mut buffer = vec![0u8; MIB];
    let started = Instant::now();
    let mut offset = 0u64;
    while offset < IMAGE_BYTES {
        image.read_exact_at(&mut buffer, offset).expect("pread");
        offset += MIB as u64;
    }
    IMAGE_BYTES as f64 / MIB as f64 / started.elapsed().as_secs_f64()
}

fn scrub_rate(fs: &Filesystem, image: &File) -> f64 {
    drop_cache(image);
    let started = Instant::now();
    let summary = fs
        .scrub(
            ScrubRequest {
                rate: None,
                restart: true,
            },
            &mut |_| true,
        )
        .expect("scrub");
    assert!(summary.complete && summary.findings == 0);
    summary.bytes as f64 / MIB as f64 / started.elapsed().as_secs_f64()
}

/// Random 4 KiB reads for a few seconds; reads per second.
fn random_reads(fs: &Filesystem, inos: &[u64], seed: u64) -> f64 {
    let caller = Caller::root();
    let handles: Vec<u64> = inos
        .iter()
        .map(|&ino| fs.open(ino, read_write(), &caller).expect("open"))
        .collect();
    let mut random = Random(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(RANDOM_SECONDS);
    let started = Instant::now();
    let mut reads = 0u64;
    while Instant::now() < deadline {
        let handle = handles[(random.next() % handles.len() as u64) as usize];
        let block = random.next() % (FILE_BYTES as u64 / 4096);
        fs.read(handle, block * 4096, 4096).expect("read");
        reads += 1;
    }
    let rate = reads as f64 / started.elapsed().as_secs_f64();
    for handle in handles {
        fs.release(handle).expect("release");
    }
    rate
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut arguments = std::env::args().skip(1).filter(|arg| arg != "--bench");
    let image_path = PathBuf::from(arguments.next().expect("usage: scrub IMAGE [ROUNDS]"));
    let rounds: usize = arguments
        .next()
        .map_or(3, |text| text.parse().expect("ROUNDS"));
    let _ = std::fs::remove_file(&image_path);
    run(&image_path, rounds);
    let _ = std::fs::remove_file(&image_path);
}

fn run(image_path: &Path, rounds: usize) {
    let device: Arc<dyn BlockDevice> = Arc::new(
        FileDevice::create_image(image_path, IMAGE_BYTES, SectorSize::Bytes512).expect("image"),
    );
    make_filesystem(device.clone(), &MkfsOptions::default()).expect("mkfs");
    let inos = fill(device.clone());
    let image = File::open(image_path).expect("open image");
    let fs = Arc::new(Filesystem::mount(device, options()).expect("mount"));

    // Keeps the image out of the host's page cache while readers run.
    let dropping = Arc::new(AtomicBool::new(true));
    let dropper = {
        let dropping = Arc::clone(&dropping);
        let image = image.try_clone().expect("clone");
        std::thread::spawn(move || {
            while dropping.load(Ordering::Acquire) {
                drop_cache(&image);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let (mut sequential, mut scrubbed, mut alone, mut during) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let value = sequential_read(&image);
        report("sequential_read", value, "MiB/s");
        sequential.push(value);
        let value = scrub_rate(&fs, &image);
        report("scrub", value, "MiB/s");
        scrubbed.push(value);

        let value = random_reads(&fs, &inos, 7 + round as u64);
        report("random_read_alone", value, "reads/s");
        alone.push(value);

        let scrubbing = Arc::new(AtomicBool::new(true));
        let scrubbed_bytes = Arc::new(AtomicU64::new(0));
        let scrubber = {
            let fs = Arc::clone(&fs);
            let scrubbing = Arc::clone(&scrubbing);
            let scrubbed_bytes = Arc::clone(&scrubbed_bytes);
            std::thread::spawn(move || {
                while scrubbing.load(Ordering::Acquire) {
                    let request = ScrubRequest {
                        rate: None,
                        restart: false,
                    };
                    let summary = fs
                        .scrub(request, &mut |_| scrubbing.load(Ordering::Acquire))
                        .expect("scrub");
                    scrubbed_bytes.fetch_add(summary.bytes, Ordering::Relaxed);
                }
            })
        };
        // Let the scrub get going before the reader starts.
        std::thread::sleep(Duration::from_millis(200));
        let value = random_reads(&fs, &inos, 7 + round as u64);
        scrubbing.store(false, Ordering::Release);
        scrubber.join().expect("scrubber");
        report("random_read_during_scrub", value, "reads/s");
        report(
            "scrub_bytes_during_reads",
            scrubbed_bytes.load(Ordering::Relaxed) as f64 / MIB as f64,
            "MiB",
        );
        during.push(value);
    }
    dropping.store(false, Ordering::Release);
    dropper.join().expect("dropper");
    let sequential = median(&mut sequential);
    let scrubbed = median(&mut scrubbed);
    let alone = median(&mut alone);
    let during = median(&mut during);
    println!("median sequential_read {sequential:.1} MiB/s");
    println!(
        "median scrub {scrubbed:.1} MiB/s ({:.2} of sequential)",
        scrubbed / sequential
    );
    println!("median random_read_alone {alone:.0} reads/s");
    println!(
        "median random_read_during_scrub {during:.0} reads/s ({:.2} of alone)",
        during / alone
    );
    match Arc::try_unwrap(fs) {
        Ok(fs) => fs.unmount().expect("unmount"),
        Err(_) => panic!("filesystem still shared"),
    }
}
