//! Crash consistency of multi-tree transactions: cut the power at every flush point of a
//! workload (unflushed writes dropped, kept, or torn at sector granularity) and check that
//! recovery finds every tree valid (keys ordered, every node verifying) and exactly the
//! state after some prefix of the committed transactions that includes every durable one.
//! Transactions span three trees, so a torn transaction would show as trees from different
//! prefixes.

use std::collections::BTreeMap;
use std::sync::Arc;

use vigilfs::alloc::Allocator;
use vigilfs::btree::{Btrees, BtreesOptions, TreeId};
use vigilfs::device::{BlockDevice, CrashDevice, CrashMode, SectorSize};
use vigilfs::format::{FsUuid, Superblock};
use vigilfs::inode::{inode_key, ROOT_INO};
use vigilfs::journal::{Journal, JournalOptions};
use vigilfs::mkfs::{mkfs, root_directory, MkfsOptions};

/// Two trees whose test records fsck takes for what they are, so that any crash image can
/// be checked with the real fsck too: Meta holds records of keys fsck does not look up,
/// Xattrs valid `user.*` attributes of the root directory (made before the workload, as
/// mkfs makes it).
const TREES: [TreeId; 2] = [TreeId::Xattrs, TreeId::Meta];
const DEVICE_BYTES: u64 = 3 << 20;
const TRANSACTIONS: u64 = 300;

type Models = [BTreeMap<Vec<u8>, Vec<u8>>; 2];

fn make_fs(device: Arc<dyn BlockDevice>) -> Superblock {
    let options = MkfsOptions {
        uuid: Some(FsUuid(*b"btree-crash-test")),
        time: Some(1_700_000_000),
        journal_bytes: Some(1 << 20),
        ..MkfsOptions::default()
    };
    let superblock = mkfs(device.as_ref(), &options).expect("mkfs");
    // The root directory every filesystem has (fsck requires it), durable.
    let btrees = open(device, &superblock).expect("open");
    let root = root_directory((0, 0), 1_700_000_000);
    let mut transaction = btrees.transaction();
    transaction
        .put(TreeId::Inodes, &inode_key(ROOT_INO), &root.encode())
        .expect("root");
    transaction.commit_durable().expect("durable root");
    btrees.sync().expect("sync");
    superblock
}

fn open(device: Arc<dyn BlockDevice>, superblock: &Superblock) -> Result<Btrees, String> {
    let mut options = JournalOptions::for_filesystem(superblock);
    options.region.length = 24 * u64::from(superblock.layout.block_size);
    options.entry_bytes = 8 * 1024;
    let (journal, replay) = Journal::open(device.clone(), options).map_err(|e| e.to_string())?;
    let journal = Arc::new(journal);
    let allocator = Arc::new(Allocator::new(journal.clone(), superblock.layout.main));
    Btrees::open(
        device,
        journal,
        &replay,
        superblock,
        allocator,
        BtreesOptions {
            cache_bytes: 32 * 1024,
            ..BtreesOptions::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// Key `number` (below 1000) of tree `tree`, in the order of the numbers: for Xattrs the
/// root directory's attribute `user.NNN`.
fn key(tree: u64, number: u64) -> Vec<u8> {
    if tree == 0 {
        let mut key = ROOT_INO.to_be_bytes().to_vec();
        key.extend_from_slice(format!("user.{number:03}").as_bytes());
        key
    } else {
        number.to_be_bytes().to_vec()
    }
}

/// The updates of transaction `number`, applied to `models` and returned as
/// (tree, key, Some(value) for a put / None for a delete, range end for range deletes).
#[allow(clippy::type_complexity)]
fn updates(number: u64) -> Vec<(usize, Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>)> {
    let mut updates = Vec::new();
    let value = |tree: u64| {
        // An attribute record's version byte (inline), then the value.
        let mut value = if tree == 0 { vec![1] } else { Vec::new() };
        value.extend_from_slice(format!("t{number}-tree{tree}").as_bytes());
        value.resize(40 + (number * 37 % 200) as usize, b'.');
        value
    };
    // Every transaction touches both trees, so recovery showing only part of one would
    // leave the trees from different prefixes.
    for tree in 0..2u64 {
        let key = key(tree, (number * (13 + tree * 6)) % 300);
        updates.push((tree as usize, key, Some(value(tree)), None));
    }
    if number % 4 == 0 {
        let tree = number % 2;
        updates.push((tree as usize, key(tree, (number * 7) % 300), None, None));
    }
    if number % 25 == 0 {
        let tree = (number / 25) % 2;
        let start = key(tree, (number * 11) % 300);
        let end = key(tree, (number * 11) % 300 + 40);
        updates.push((tree as usize, start, None, Some(end)));
    }
    updates
}

struct Outcome {
    snapshots: Vec<Models>,
    acknowledged: usize,
}

fn run(device: &Arc<CrashDevice>, superblock: &Superblock) -> Outcome {
    let mut outcome = Outcome {
        snapshots: vec![Models::default()],
        acknowledged: 0,
    };
    let Ok(btrees) = open(device.clone(), superblock) else {
        return outcome;
    };
    for number in 1..=TRANSACTIONS {
        let mut models = outcome.snapshots.last().expect("never empty").clone();
        let mut transaction = btrees.transaction();
        for (tree, key, value, end) in updates(number) {
            match (value, end) {
                (Some(value), _) => {
                    transaction.put(TREES[tree], &key, &value).unwrap();
                    models[tree].insert(key, value);
                }
                (None, None) => {
                    transaction.delete(TREES[tree], &key).unwrap();
                    models[tree].remove(&key);
                }
                (None, Some(end)) => {
                    transaction
                        .delete_range(TREES[tree], &key, Some(&end))
                        .unwrap();
                    models[tree].retain(|existing, _| !(*existing >= key && *existing < end));
                }
            }
        }
        let Ok(seq) = transaction.commit() else {
            return outcome;
        };
        outcome.snapshots.push(models);
        if number % 3 == 0 {
            let seq = seq.expect("non-empty transaction");
            if btrees.journal().flush_seq(seq).is_err() {
                return outcome;
            }
            outcome.acknowledged = outcome.snapshots.len() - 1;
        }
        if number % 40 == 0 && btrees.sync().is_err() {
            return outcome;
        }
    }
    outcome
}

fn check_recovery(
    image: Arc<dyn BlockDevice>,
    superblock: &Superblock,
    outcome: &Outcome,
    context: &str,
) {
    // fsck first: it dry-runs recovery and must find the image clean.
    let report = vigilfs::fsck::fsck(image.clone(), &mut |_| {})
        .unwrap_or_else(|error| panic!("{context}: fsck could not run: {error}"));
    assert!(
        report.is_clean(),
        "{context}: fsck found {:?}",
        report.problems
    );
    let btrees = open(image, superblock)
        .unwrap_or_else(|error| panic!("{context}: recovery failed: {error}"));
    btrees
        .check()
        .unwrap_or_else(|error| panic!("{context}: inconsistent trees: {error}"));
    let recovered: Models = TREES.map(|tree| {
        btrees
            .range(tree, &[], None)
            .map(|entry| entry.unwrap_or_else(|error| panic!("{context}: scan: {error}")))
            .collect()
    });
    let matching = (outcome.acknowledged..outcome.snapshots.len())
        .find(|&index| outcome.snapshots[index] == recovered);
    assert!(
        matching.is_some(),
        "{context}: recovered trees are no prefix of transactions {}..={}",
        outcome.acknowledged,
        outcome.snapshots.len() - 1
    );
}

fn sweep(sector_size: SectorSize) {
    let reference = Arc::new(CrashDevice::new(DEVICE_BYTES, sector_size));
    let superblock = make_fs(reference.clone());
    let start = reference.flushes_issued();
    let full = run(&reference, &superblock);
    assert_eq!(
        full.snapshots.len() as u64,
        TRANSACTIONS + 1,
        "the uncut run completes"
    );
    let flush_points = reference.flushes_issued() - start;
    assert!(flush_points >= 60, "only {flush_points} flush points");
    let mut checks = 0;
    for cut in 1..=flush_points {
        let device = Arc::new(CrashDevice::new(DEVICE_BYTES, sector_size));
        make_fs(device.clone());
        device.cut_power_at_flush(Some(device.flushes_issued() + cut));
        let outcome = run(&device, &superblock);
        for mode in [
            CrashMode::DropUnflushed,
            CrashMode::KeepUnflushed,
            CrashMode::Torn { seed: cut },
            CrashMode::Torn { seed: cut ^ 0x5A5A },
        ] {
            check_recovery(
                Arc::new(device.crash(mode)),
                &superblock,
                &outcome,
                &format!("cut at flush {cut} of {flush_points}, {mode:?}"),
            );
            checks += 1;
        }
    }
    eprintln!("{sector_size:?}: {checks} crash images over {flush_points} flush points");
}

#[test]
fn power_cut_at_every_flush_point_with_small_sectors_keeps_multi_tree_transactions_whole() {
    sweep(SectorSize::Bytes512);
}

#[test]
fn power_cut_at_every_flush_point_with_large_sectors_keeps_multi_tree_transactions_whole() {
    sweep(SectorSize::Bytes4096);
}
