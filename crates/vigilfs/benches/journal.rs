//! Journal benchmarks: the reservation fast path, and commit-and-flush
//! latency against a raw `pwrite` + `fdatasync` of the same bytes on the
//! same backing file, plus two committers sharing flushes.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigilfs::device::{BlockDevice, DeviceError, FileDevice, IoClass, MemoryDevice, SectorSize};
use vigilfs::journal::{record_bytes, Journal, JournalOptions, JournalRegion};

const BLOCK: u32 = 4096;
const UUID: [u8; 16] = *b"bench-journal-fs";

fn options(region_blocks: u64, entry_bytes: u32) -> JournalOptions {
    let mut options = JournalOptions::new(
        JournalRegion {
            start: u64::from(BLOCK),
            length: region_blocks * u64::from(BLOCK),
            block_size: BLOCK,
        },
        UUID,
    );
    options.entry_bytes = entry_bytes;
    options
}

fn memory_journal() -> Arc<Journal> {
    let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes4096));
    let (journal, _) = Journal::open(device, options(8192, 2 << 20)).expect("journal");
    Arc::new(journal)
}

fn reservations(c: &mut Criterion) {
    let mut group = c.benchmark_group("reservation");
    group.throughput(Throughput::Elements(1));
    let journal = memory_journal();
    // Open an entry first so the loop measures the fast path only.
    drop(journal.reserve(0).unwrap());
    group.bench_function("fast_path_1_thread", |b| {
        b.iter(|| drop(black_box(journal.reserve(0).unwrap())));
    });
    group.bench_function("fast_path_2_threads", |b| {
        b.iter_custom(|iterations| {
            let per_thread = iterations / 2 + 1;
            let start = Instant::now();
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let journal = Arc::clone(&journal);
                    thread::spawn(move || {
                        for _ in 0..per_thread {
                            drop(black_box(journal.reserve(0).unwrap()));
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.join().unwrap();
            }
            start.elapsed()
        });
    });
    group.bench_function("reserve_append_16_bytes_1_thread", |b| {
        let record = [7u8; 16];
        b.iter(|| {
            let mut reservation = journal.reserve(record_bytes(record.len())).unwrap();
            reservation.append(&record).unwrap();
        });
    });
    group.finish();
}

struct BackingFile {
    path: PathBuf,
}

impl BackingFile {
    fn new(name: &str) -> BackingFile {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_file(&path);
        BackingFile { path }
    }
}

impl Drop for BackingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

const FILE_BYTES: u64 = 64 << 20;
const TRANSACTION_BYTES: usize = 100;

fn file_journal(backing: &BackingFile) -> Arc<Journal> {
    let device: Arc<dyn BlockDevice> = Arc::new(
        FileDevice::create_image(&backing.path, FILE_BYTES, SectorSize::Bytes4096).unwrap(),
    );
    let (journal, _) = Journal::open(device, options(4096, 256 * 1024)).unwrap();
    Arc::new(journal)
}

fn raw_file(backing: &BackingFile) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&backing.path)
        .unwrap();
    file.set_len(FILE_BYTES).unwrap();
    file
}

fn commit_and_flush(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_and_flush");
    group.sample_size(30);
    let record = [0x42u8; TRANSACTION_BYTES];

    let backing = BackingFile::new("bench-journal-commit.img");
    let journal = file_journal(&backing);
    group.bench_function("journal_100_byte_transaction", |b| {
        b.iter(|| {
            let seq = journal.commit(&[&record]).unwrap();
            journal.flush_seq(seq).unwrap();
        });
    });
    drop(journal);

    // The journal writes one 4 KiB block per such transaction: the same
    // bytes raw, cycling through the same region of the same file.
    let raw_backing = BackingFile::new("bench-journal-raw.img");
    let file = raw_file(&raw_backing);
    let block = vec![0x42u8; BLOCK as usize];
    let mut offset = u64::from(BLOCK);
    group.bench_function("raw_pwrite_4096_fdatasync", |b| {
        b.iter(|| {
            file.write_all_at(&block, offset).unwrap();
            file.sync_data().unwrap();
            offset = u64::from(BLOCK) + (offset + u64::from(BLOCK)) % (4096 * u64::from(BLOCK));
        });
    });
    group.bench_function("raw_pwrite_100_fdatasync", |b| {
        b.iter(|| {
            file.write_all_at(&record, offset).unwrap();
            file.sync_data().unwrap();
            offset = u64::from(BLOCK) + (offset + u64::from(BLOCK)) % (4096 * u64::from(BLOCK));
        });
    });
    group.finish();
}

/// A memory device whose flush takes a fixed time, like a disk's cache
/// flush but without the disk's noise: shows how flushes are shared.
struct FixedLatencyDevice {
    inner: MemoryDevice,
    flush_time: Duration,
    flushes: AtomicU64,
}

impl BlockDevice for FixedLatencyDevice {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        self.inner.read_at(offset, buffer, class)
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        self.inner.write_at(offset, buffer, class)
    }

    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        thread::sleep(self.flush_time);
        self.inner.flush(class)
    }

    fn length(&self) -> u64 {
        self.inner.length()
    }

    fn sector_size(&self) -> SectorSize {
        self.inner.sector_size()
    }
}

/// Runs `iterations` commit-and-flush rounds split over `threads`.
fn committers(journal: &Arc<Journal>, threads: u64, iterations: u64) -> Duration {
    let record = [0x42u8; TRANSACTION_BYTES];
    let per_thread = iterations.div_ceil(threads);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let journal = Arc::clone(journal);
            thread::spawn(move || {
                for _ in 0..per_thread {
                    let seq = journal.commit(&[&record]).unwrap();
                    journal.flush_seq(seq).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    start.elapsed()
}

/// Commits per second with one and with two threads each committing and
/// flushing: flushes are shared (group commit), so two threads do more
/// than one. On the backing file and on a device with a fixed 120 µs flush.
fn concurrent_commit_and_flush(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_and_flush_threads");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        let backing = BackingFile::new("bench-journal-threads.img");
        let journal = file_journal(&backing);
        group.bench_function(format!("file_{threads}_threads"), |b| {
            b.iter_custom(|iterations| committers(&journal, threads, iterations));
        });
    }
    for threads in [1u64, 2] {
        let device = Arc::new(FixedLatencyDevice {
            inner: MemoryDevice::new(FILE_BYTES, SectorSize::Bytes4096),
            flush_time: Duration::from_micros(120),
            flushes: AtomicU64::new(0),
        });
        let shared: Arc<dyn BlockDevice> = device.clone();
        let (journal, _) = Journal::open(shared, options(4096, 256 * 1024)).unwrap();
        let journal = Arc::new(journal);
        let mut commits = 0;
        group.bench_function(format!("fixed_120us_flush_{threads}_threads"), |b| {
            b.iter_custom(|iterations| {
                commits += iterations.div_ceil(threads) * threads;
                committers(&journal, threads, iterations)
            });
        });
        let flushes = device.flushes.load(Ordering::Relaxed);
        eprintln!(
            "fixed_120us_flush_{threads}_threads: {flushes} flushes for {commits} commits ({:.2} commits per flush)",
            commits as f64 / flushes.max(1) as f64
        );
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = reservations, commit_and_flush, concurrent_commit_and_flush
}
criterion_main!(benches);
