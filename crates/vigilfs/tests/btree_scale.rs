//! Scale: many keys through a node cache much smaller than the data, on an image file. The
//! results must be exact and the process's resident memory must stay near the cache budget
//! (the image lives in the kernel's page cache, which VmRSS does not count).
//!
//! The 100,000-key version runs with every `cargo test`; the 1,000,000-key version with a
//! 64 MiB cache is `#[ignore]`d (about a minute in a debug build): run it with
//! `cargo test --release -p vigilfs --test btree_scale -- --ignored`. The benchmark
//! (`benches/btree.rs`) measures the same in release mode.

use std::path::PathBuf;
use std::sync::Arc;

use vigilfs::alloc::Allocator;
use vigilfs::btree::{Btrees, BtreesOptions, TreeId};
use vigilfs::device::{BlockDevice, FileDevice, SectorSize};
use vigilfs::format::FsUuid;
use vigilfs::journal::{Journal, JournalOptions};
use vigilfs::mkfs::{mkfs, MkfsOptions};

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

struct Image(PathBuf);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn key(index: u64) -> [u8; 16] {
    // Scattered, so inserts land all over the tree, not only on its right edge.
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

fn run(keys: u64, cache_bytes: usize, device_bytes: u64, name: &str) {
    let path = std::env::temp_dir().join(format!("vigilfs-{name}-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let image = Image(path);
    let device: Arc<dyn BlockDevice> = Arc::new(
        FileDevice::create_image(&image.0, device_bytes, SectorSize::Bytes512).expect("image"),
    );
    let superblock = mkfs(
        device.as_ref(),
        &MkfsOptions {
            uuid: Some(FsUuid(*b"btree-scale-test")),
            time: Some(1_700_000_000),
            ..MkfsOptions::default()
        },
    )
    .expect("mkfs");
    let before = resident_bytes();
    let (journal, replay) =
        Journal::open(device.clone(), JournalOptions::for_filesystem(&superblock)).unwrap();
    let journal = Arc::new(journal);
    let allocator = Arc::new(Allocator::new(journal.clone(), superblock.layout.main));
    let btrees = Btrees::open(
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
    .unwrap();
    let mut peak = 0;
    for batch in 0..keys / 1000 {
        let mut transaction = btrees.transaction();
        for index in batch * 1000..(batch + 1) * 1000 {
            transaction
                .put(TreeId::Extents, &key(index), &value(index))
                .unwrap();
        }
        transaction.commit().unwrap();
        if batch % 50 == 0 {
            peak = peak.max(resident_bytes());
        }
    }
    btrees.sync().unwrap();
    for index in (0..keys).step_by(7) {
        assert_eq!(
            btrees.get(TreeId::Extents, &key(index)).unwrap().as_deref(),
            Some(&value(index)[..]),
            "key {index}"
        );
    }
    let count = btrees.range(TreeId::Extents, &[], None).count() as u64;
    assert_eq!(count, keys);
    peak = peak.max(resident_bytes());
    let status = btrees.status();
    assert_eq!(status.writeback_failures, 0, "{status:?}");
    assert!(
        status.nodes_read > 0,
        "the cache never had to evict: {status:?}"
    );
    let growth = peak.saturating_sub(before);
    // Budget + 20%, plus a fixed allowance for the allocator's free-block set, the block
    // map and allocator slack.
    let allowance = 24 << 20;
    let bound = cache_bytes as u64 * 6 / 5 + allowance;
    eprintln!(
        "{keys} keys, cache budget {cache_bytes}: resident growth {growth} bytes (bound {bound}), \
         {status:?}"
    );
    assert!(
        growth <= bound,
        "resident memory grew by {growth} bytes, bound {bound}"
    );
}

#[test]
fn a_hundred_thousand_keys_through_a_four_mib_cache_stay_exact_and_near_the_budget() {
    run(100_000, 4 << 20, 256 << 20, "scale-100k");
}

#[test]
#[ignore = "about a minute in a debug build; run with --release -- --ignored"]
fn a_million_keys_through_a_64_mib_cache_stay_exact_and_near_the_budget() {
    run(1_000_000, 64 << 20, 1 << 30, "scale-1m");
}
