//! Bytes of heap per entry, measured with a counting allocator: the index
//! (dense and sparse, small and large entries) against std `BTreeMap` and
//! `HashMap` holding the same `u64 -> u64` pairs. Also the fixed cost of an
//! empty index, which matters because the page cache keeps one per inode.
//!
//! Run: `cargo bench -p xarray --bench memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use xarray::XArray;

/// The system allocator, keeping a running total of live heap bytes.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; the counter is only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `alloc` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes held by what `build` returns (kept alive while measuring).
fn heap_bytes<T>(build: impl FnOnce() -> T) -> (usize, T) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let built = black_box(build());
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    ((after - before) as usize, built)
}

fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    })
}

fn report(what: &str, entries: usize, bytes: usize) {
    println!(
        "| {what:<44} | {entries:>9} | {bytes:>12} | {:>9.1} |",
        bytes as f64 / entries as f64
    );
}

fn main() {
    const DENSE: u64 = 1 << 20;
    const SPARSE: usize = 1 << 16;
    let sparse: Vec<u64> = xorshift(11).map(|x| x >> 28).take(SPARSE).collect();
    // One page in 16 of a 4 GiB file: sparse, but with neighbours.
    let scattered: Vec<u64> = xorshift(19).map(|x| x >> 44).take(SPARSE).collect();

    println!(
        "| structure (u64 -> u64)                       |   entries |   heap bytes | bytes/entry |"
    );
    println!(
        "|----------------------------------------------|-----------|--------------|-------------|"
    );

    let (bytes, xa) = heap_bytes(|| {
        let xa = XArray::new();
        for i in 0..DENSE {
            xa.store(i, 0, i).unwrap();
        }
        xa
    });
    report("xarray dense 0..1M", DENSE as usize, bytes);
    drop(xa);
    let (bytes, map) = heap_bytes(|| (0..DENSE).map(|i| (i, i)).collect::<BTreeMap<_, _>>());
    report("btreemap dense 0..1M", DENSE as usize, bytes);
    drop(map);
    let (bytes, map) = heap_bytes(|| {
        let mut map = HashMap::new();
        for i in 0..DENSE {
            map.insert(i, i);
        }
        map
    });
    report(
        "hashmap dense 0..1M (grown by inserts)",
        DENSE as usize,
        bytes,
    );
    drop(map);

    let (bytes, xa) = heap_bytes(|| {
        let xa = XArray::new();
        for &i in &sparse {
            // Random 36-bit keys may repeat; replacing is fine here.
            xa.store(i, 0, i).unwrap();
        }
        xa
    });
    report("xarray sparse 64k in 2^36", xa.len(), bytes);
    drop(xa);
    let (bytes, map) = heap_bytes(|| sparse.iter().map(|&i| (i, i)).collect::<BTreeMap<_, _>>());
    report("btreemap sparse 64k in 2^36", map.len(), bytes);
    drop(map);
    let (bytes, map) = heap_bytes(|| {
        let mut map = HashMap::new();
        for &i in &sparse {
            map.insert(i, i);
        }
        map
    });
    report("hashmap sparse 64k in 2^36", map.len(), bytes);
    drop(map);

    let (bytes, xa) = heap_bytes(|| {
        let xa = XArray::new();
        for &i in &scattered {
            xa.store(i, 0, i).unwrap();
        }
        xa
    });
    report("xarray scattered 64k in 2^20", xa.len(), bytes);
    drop(xa);
    let (bytes, map) = heap_bytes(|| {
        let mut map = HashMap::new();
        for &i in &scattered {
            map.insert(i, i);
        }
        map
    });
    report("hashmap scattered 64k in 2^20", map.len(), bytes);
    drop(map);

    let (bytes, xa) = heap_bytes(|| {
        let xa = XArray::new();
        for i in 0..(DENSE >> 9) {
            xa.store(i << 9, 9, i).unwrap();
        }
        xa
    });
    report("xarray order-9 entries over 0..1M", xa.len(), bytes);
    drop(xa);

    let (bytes, xa) = heap_bytes(XArray::<u64>::new);
    report("xarray empty (fixed cost, heap only)", 1, bytes);
    println!(
        "\nsize_of::<XArray<u64>>() = {} bytes inline, plus the heap above",
        size_of_val(&xa)
    );
}
