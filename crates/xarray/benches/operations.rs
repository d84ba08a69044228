//! Criterion benchmarks of the index against the maps a user would pick
//! instead (std `BTreeMap`, std `HashMap`), for the operations the page
//! cache does most: loads (dense and sparse), stores, marked iteration
//! against a full scan, and read throughput with two threads against one.
//!
//! The crates.io `xarray` crate (asterinas) is not here: it needs nightly
//! (`#![feature(specialization)]`), and this workspace builds on stable.
//!
//! Run: `cargo bench -p xarray --bench operations`

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::RwLock;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use xarray::{Mark, XArray};

const DENSE: u64 = 1 << 20;
const SPARSE: usize = 1 << 16;
/// Sparse indices spread over 2^36 pages: a 256 TiB file with 4 KiB pages.
const SPARSE_BITS: u32 = 36;
/// Probes per measured iteration: enough distinct leaves that the probed
/// part of each structure does not sit in cache.
const LOOKUPS: usize = 1 << 16;
const STORES: u64 = 1 << 16;

/// A fixed pseudo-random sequence, so every map sees the same keys.
fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    })
}

fn dense_probes() -> Vec<u64> {
    xorshift(7).take(LOOKUPS).map(|x| x % DENSE).collect()
}

fn sparse_keys() -> Vec<u64> {
    let mut keys: Vec<u64> = xorshift(11)
        .map(|x| x >> (64 - SPARSE_BITS))
        .take(SPARSE * 2)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(SPARSE);
    // Probe (and store) in a shuffled order, not sorted.
    let mut order: Vec<(u64, u64)> = keys.into_iter().zip(xorshift(13)).collect();
    order.sort_unstable_by_key(|&(_, shuffle)| shuffle);
    order.into_iter().map(|(key, _)| key).collect()
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

fn loads(c: &mut Criterion) {
    let probes = dense_probes();
    let xa = XArray::new();
    let mut btree = BTreeMap::new();
    let mut hash = HashMap::new();
    for index in 0..DENSE {
        xa.store(index, 0, index).unwrap();
        btree.insert(index, index);
        hash.insert(index, index);
    }
    let mut group = c.benchmark_group("load_dense_1M");
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    group.bench_function("xarray", |b| {
        b.iter(|| probes.iter().map(|&i| xa.load(i).unwrap()).sum::<u64>());
    });
    group.bench_function("btreemap", |b| {
        b.iter(|| probes.iter().map(|i| btree[i]).sum::<u64>());
    });
    group.bench_function("hashmap", |b| {
        b.iter(|| probes.iter().map(|i| hash[i]).sum::<u64>());
    });
    group.finish();

    let keys = sparse_keys();
    let probes: Vec<u64> = keys
        .iter()
        .copied()
        .cycle()
        .step_by(7)
        .take(LOOKUPS)
        .collect();
    let xa = XArray::new();
    let btree: BTreeMap<u64, u64> = keys.iter().map(|&k| (k, k)).collect();
    let hash: HashMap<u64, u64> = keys.iter().map(|&k| (k, k)).collect();
    for &key in &keys {
        xa.store(key, 0, key).unwrap();
    }
    let mut group = c.benchmark_group("load_sparse_64k");
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    group.bench_function("xarray", |b| {
        b.iter(|| probes.iter().map(|&i| xa.load(i).unwrap()).sum::<u64>());
    });
    group.bench_function("btreemap", |b| {
        b.iter(|| probes.iter().map(|i| btree[i]).sum::<u64>());
    });
    group.bench_function("hashmap", |b| {
        b.iter(|| probes.iter().map(|i| hash[i]).sum::<u64>());
    });
    group.finish();
}

fn stores(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_dense_64k");
    group.throughput(Throughput::Elements(STORES));
    group.bench_function("xarray", |b| {
        b.iter_batched(
            XArray::new,
            |xa| {
                for index in 0..STORES {
                    xa.store(index, 0, index).unwrap();
                }
                xa
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("btreemap", |b| {
        b.iter_batched(
            BTreeMap::new,
            |mut map| {
                for index in 0..STORES {
                    map.insert(index, index);
                }
                map
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("hashmap", |b| {
        b.iter_batched(
            HashMap::new,
            |mut map| {
                for index in 0..STORES {
                    map.insert(index, index);
                }
                map
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();

    let keys = sparse_keys();
    let mut group = c.benchmark_group("store_sparse_64k");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("xarray", |b| {
        b.iter_batched(
            XArray::new,
            |xa| {
                for &key in &keys {
                    xa.store(key, 0, key).unwrap();
                }
                xa
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("btreemap", |b| {
        b.iter_batched(
            BTreeMap::new,
            |mut map| {
                for &key in &keys {
                    map.insert(key, key);
                }
                map
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("hashmap", |b| {
        b.iter_batched(
            HashMap::new,
            |mut map| {
                for &key in &keys {
                    map.insert(key, key);
                }
                map
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn marked_iteration(c: &mut Criterion) {
    // 1% of 1M dense entries carry the mark, at pseudo-random places.
    let xa = XArray::new();
    let mut btree = BTreeMap::new();
    let mut marked = 0u64;
    for (index, dice) in (0..DENSE).zip(xorshift(17)) {
        let dirty = dice % 100 == 0;
        xa.store(index, 0, index).unwrap();
        if dirty {
            xa.set_mark(index, Mark::Dirty);
            marked += 1;
        }
        btree.insert(index, (index, dirty));
    }
    assert_eq!(xa.iter_marked(0, Mark::Dirty).count() as u64, marked);
    let mut group = c.benchmark_group("iterate_1M_1pct_marked");
    group.bench_function("xarray_marked", |b| {
        b.iter(|| xa.iter_marked(0, Mark::Dirty).count());
    });
    // The cheapest full scan: visit every entry without even checking the
    // mark. Marked iteration must beat this by 10x.
    group.bench_function("xarray_full_scan", |b| b.iter(|| xa.iter().count()));
    group.bench_function("btreemap_full_scan_filter", |b| {
        b.iter(|| btree.values().filter(|(_, dirty)| *dirty).count());
    });
    group.finish();
}

/// Wall time for `threads` threads each doing `per_thread` random loads at
/// once; `iters` rounds.
fn timed_parallel_loads(
    iters: u64,
    threads: usize,
    per_thread: usize,
    load: &(impl Fn(u64) -> u64 + Sync),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    let sum: u64 = xorshift(31 + t as u64)
                        .take(per_thread)
                        .map(|x| load(x % DENSE))
                        .sum();
                    black_box(sum)
                });
            }
        });
        total += start.elapsed();
    }
    total
}

fn read_scaling(c: &mut Criterion) {
    const PER_THREAD: usize = 200_000;
    let xa = XArray::new();
    let mut hash = HashMap::new();
    for index in 0..DENSE {
        xa.store(index, 0, index).unwrap();
        hash.insert(index, index);
    }
    let locked_hash = RwLock::new(hash);
    let xa_load = |i| xa.load(i).unwrap();
    let hash_load = |i| locked_hash.read().unwrap()[&i];
    let mut group = c.benchmark_group("parallel_loads_1M");
    group.sample_size(20);
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements((threads * PER_THREAD) as u64));
        group.bench_function(format!("xarray_{threads}_threads"), |b| {
            b.iter_custom(|iters| timed_parallel_loads(iters, threads, PER_THREAD, &xa_load));
        });
        group.bench_function(format!("rwlock_hashmap_{threads}_threads"), |b| {
            b.iter_custom(|iters| timed_parallel_loads(iters, threads, PER_THREAD, &hash_load));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = loads, stores, marked_iteration, read_scaling
}
criterion_main!(benches);
