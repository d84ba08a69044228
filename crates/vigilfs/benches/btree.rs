//! B-tree benchmarks, side by side in one run on the same backing directory:
//!
//! * bulk load: 1,000,000 scattered 16-byte keys with 16-byte values, in transactions of
//!   1,000, into vigilfs (64 MiB node cache, image file), std `BTreeMap` (the in-memory
//!   ceiling) and redb (64 MiB cache, non-durable commits, one durable commit at the end);
//!   inserts per second and resident-memory growth (VmRSS) of each;
//! * point lookups with the working set cached (a quarter of the key space), criterion;
//! * durable transactions: 100-key transactions each made durable before the next
//!   (vigilfs `commit_durable`, redb `Durability::Immediate`).
//!
//! `BTREE_BENCH_KEYS` and `BTREE_BENCH_DURABLE_KEYS` shrink the runs; `BTREE_BENCH_DIR`
//! chooses the directory (default: the system temp directory).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use redb::{Database, Durability, TableDefinition};
use vigilfs::alloc::Allocator;
use vigilfs::btree::{Btrees, BtreesOptions, TreeId};
use vigilfs::device::{BlockDevice, FileDevice, SectorSize};
use vigilfs::format::FsUuid;
use vigilfs::journal::{Journal, JournalOptions};
use vigilfs::mkfs::{mkfs, MkfsOptions};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");
const CACHE_BYTES: usize = 64 << 20;

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn key(index: u64) -> [u8; 16] {
    let scattered = index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&scattered.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

fn value(index: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&index.to_le_bytes());
    value[8..].copy_from_slice(&(!index).to_le_bytes());
    value
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("BTREE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("vigilfs-btree-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    dir
}

fn open_vigilfs(path: &Path, cache_bytes: usize) -> Btrees {
    let _ = std::fs::remove_file(path);
    let device: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create_image(path, 4 << 30, SectorSize::Bytes512).expect("image"));
    let superblock = mkfs(
        device.as_ref(),
        &MkfsOptions {
            uuid: Some(FsUuid(*b"btree-bench-fs!!")),
            time: Some(1_700_000_000),
            ..MkfsOptions::default()
        },
    )
    .expect("mkfs");
    let (journal, replay) =
        Journal::open(device.clone(), JournalOptions::for_filesystem(&superblock)).unwrap();
    let journal = Arc::new(journal);
    let allocator = Arc::new(Allocator::new(journal.clone(), superblock.layout.main));
    Btrees::open(
        device,
        journal,
        &replay,
        &superblock,
        allocator,
        BtreesOptions {
            cache_bytes,
            ..BtreesOptions::default()
        },
    )
    .expect("open")
}

fn open_redb(path: &Path) -> Database {
    let _ = std::fs::remove_file(path);
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .expect("redb")
}

struct Loaded {
    btrees: Btrees,
    map: BTreeMap<[u8; 16], [u8; 16]>,
    redb: Database,
    lookup_keys: Vec<[u8; 16]>,
}

fn report(name: &str, keys: u64, elapsed: Duration, resident: u64) {
    println!(
        "RESULT bulk_load {name}: {keys} keys in {:.2} s = {:.0} inserts/s, resident growth {:.1} MiB",
        elapsed.as_secs_f64(),
        keys as f64 / elapsed.as_secs_f64(),
        resident as f64 / 1_048_576.0
    );
}

fn load(dir: &Path) -> Loaded {
    let keys = env_count("BTREE_BENCH_KEYS", 1_000_000);

    let before = resident_bytes();
    let btrees = open_vigilfs(&dir.join("vigilfs.img"), CACHE_BYTES);
    let start = Instant::now();
    let mut peak = before;
    for batch in 0..keys.div_ceil(1000) {
        let mut transaction = btrees.transaction();
        for index in batch * 1000..((batch + 1) * 1000).min(keys) {
            transaction
                .put(TreeId::Extents, &key(index), &value(index))
                .unwrap();
        }
        transaction.commit().unwrap();
        if batch % 64 == 0 {
            peak = peak.max(resident_bytes());
        }
    }
    btrees.sync().unwrap();
    let elapsed = start.elapsed();
    peak = peak.max(resident_bytes());
    report("vigilfs", keys, elapsed, peak - before);
    println!("RESULT vigilfs status after load: {:?}", btrees.status());

    let before = resident_bytes();
    let start = Instant::now();
    let mut map = BTreeMap::new();
    for index in 0..keys {
        map.insert(key(index), value(index));
    }
    report(
        "std BTreeMap",
        keys,
        start.elapsed(),
        resident_bytes() - before,
    );

    let before = resident_bytes();
    let redb = open_redb(&dir.join("redb.db"));
    let start = Instant::now();
    let mut peak = before;
    for batch in 0..keys.div_ceil(1000) {
        let mut transaction = redb.begin_write().unwrap();
        let last = (batch + 1) * 1000 >= keys;
        transaction.set_durability(if last {
            Durability::Immediate
        } else {
            Durability::None
        });
        {
            let mut table = transaction.open_table(TABLE).unwrap();
            for index in batch * 1000..((batch + 1) * 1000).min(keys) {
                table.insert(&key(index)[..], &value(index)[..]).unwrap();
            }
        }
        transaction.commit().unwrap();
        if batch % 64 == 0 {
            peak = peak.max(resident_bytes());
        }
    }
    let elapsed = start.elapsed();
    peak = peak.max(resident_bytes());
    report("redb", keys, elapsed, peak - before);

    // The cached working set: keys in the first quarter of the key space.
    let lookup_keys: Vec<[u8; 16]> = (0..keys).map(key).filter(|key| key[0] < 64).collect();
    Loaded {
        btrees,
        map,
        redb,
        lookup_keys,
    }
}

fn lookups(c: &mut Criterion, loaded: &Loaded) {
    let keys = &loaded.lookup_keys;
    // Warm the vigilfs cache with the working set.
    for key in keys {
        black_box(loaded.btrees.get(TreeId::Extents, key).unwrap());
    }
    let mut group = c.benchmark_group("point_lookup_cached");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let mut cursor = 0usize;
    group.bench_function("vigilfs", |b| {
        b.iter(|| {
            cursor = (cursor + 7919) % keys.len();
            black_box(loaded.btrees.get(TreeId::Extents, &keys[cursor]).unwrap())
        });
    });
    group.bench_function("std_btreemap", |b| {
        b.iter(|| {
            cursor = (cursor + 7919) % keys.len();
            black_box(loaded.map.get(&keys[cursor]).map(|value| value.to_vec()))
        });
    });
    let read = loaded.redb.begin_read().unwrap();
    let table = read.open_table(TABLE).unwrap();
    group.bench_function("redb", |b| {
        b.iter(|| {
            cursor = (cursor + 7919) % keys.len();
            black_box(
                table
                    .get(&keys[cursor][..])
                    .unwrap()
                    .map(|value| value.value().to_vec()),
            )
        });
    });
    group.finish();
    println!(
        "RESULT vigilfs status after lookups: {:?}",
        loaded.btrees.status()
    );
}

fn durable_transactions(dir: &Path) {
    let keys = env_count("BTREE_BENCH_DURABLE_KEYS", 1_000_000);
    let btrees = open_vigilfs(&dir.join("vigilfs-durable.img"), CACHE_BYTES);
    let start = Instant::now();
    for batch in 0..keys.div_ceil(100) {
        let mut transaction = btrees.transaction();
        for index in batch * 100..((batch + 1) * 100).min(keys) {
            transaction
                .put(TreeId::Extents, &key(index), &value(index))
                .unwrap();
        }
        transaction.commit_durable().unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "RESULT durable_100_key_transactions vigilfs: {keys} keys in {:.2} s = {:.0} transactions/s, {:.0} inserts/s",
        elapsed.as_secs_f64(),
        (keys / 100) as f64 / elapsed.as_secs_f64(),
        keys as f64 / elapsed.as_secs_f64()
    );
    drop(btrees);

    let redb = open_redb(&dir.join("redb-durable.db"));
    let start = Instant::now();
    for batch in 0..keys.div_ceil(100) {
        let mut transaction = redb.begin_write().unwrap();
        transaction.set_durability(Durability::Immediate);
        {
            let mut table = transaction.open_table(TABLE).unwrap();
            for index in batch * 100..((batch + 1) * 100).min(keys) {
                table.insert(&key(index)[..], &value(index)[..]).unwrap();
            }
        }
        transaction.commit().unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "RESULT durable_100_key_transactions redb: {keys} keys in {:.2} s = {:.0} transactions/s, {:.0} inserts/s",
        elapsed.as_secs_f64(),
        (keys / 100) as f64 / elapsed.as_secs_f64(),
        keys as f64 / elapsed.as_secs_f64()
    );
}

fn all(c: &mut Criterion) {
    let dir = bench_dir();
    {
        let loaded = load(&dir);
        lookups(c, &loaded);
    }
    durable_transactions(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, all);
criterion_main!(benches);
