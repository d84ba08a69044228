//! Model-based test of the b-trees: random transactions over several trees, flushes, syncs
//! and journal reclaim, run against `BTreeMap` models on a device whose power is cut at a
//! random flush. After the cut (unflushed writes dropped, kept, or torn) the filesystem is
//! reopened, and the recovered trees must equal the models after some prefix of the
//! committed transactions that includes every one acknowledged durable. The cache is tiny
//! and the journal ring small, so eviction, writeback, splits, merges and reclaim all run.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use vigilfs::alloc::Allocator;
use vigilfs::btree::{Btrees, BtreesOptions, TreeId};
use vigilfs::device::{BlockDevice, CrashDevice, CrashMode, SectorSize};
use vigilfs::format::{FsUuid, Superblock};
use vigilfs::journal::{Journal, JournalOptions};
use vigilfs::mkfs::{mkfs, MkfsOptions};

const TREES: [TreeId; 3] = [TreeId::Inodes, TreeId::Extents, TreeId::Xattrs];
const DEVICE_BYTES: u64 = 3 << 20;
const CACHE_BYTES: usize = 24 * 1024;
const RING_BLOCKS: u64 = 24;

type Models = [BTreeMap<Vec<u8>, Vec<u8>>; 3];

#[derive(Debug, Clone)]
enum Change {
    Put {
        tree: usize,
        key: u16,
        length: usize,
    },
    Delete {
        tree: usize,
        key: u16,
    },
    DeleteRange {
        tree: usize,
        start: u16,
        end: Option<u16>,
    },
}

#[derive(Debug, Clone)]
enum Step {
    Commit(Vec<Change>),
    CommitDurable(Vec<Change>),
    Flush,
    Sync,
    Reclaim,
}

fn encode_key(key: u16) -> Vec<u8> {
    // Big-endian, so byte order is numeric order; a suffix makes keys of several lengths.
    let mut bytes = key.to_be_bytes().to_vec();
    bytes.extend(std::iter::repeat_n(b'k', usize::from(key % 5)));
    bytes
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => (0..3usize, 0..900u16, 0..300usize)
            .prop_map(|(tree, key, length)| Change::Put { tree, key, length }),
        2 => (0..3usize, 0..400u16).prop_map(|(tree, key)| Change::Delete { tree, key }),
        1 => (0..3usize, 0..400u16, proptest::option::of(0..400u16))
            .prop_map(|(tree, start, end)| Change::DeleteRange { tree, start, end }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => proptest::collection::vec(change(), 1..25).prop_map(Step::Commit),
        3 => proptest::collection::vec(change(), 1..25).prop_map(Step::CommitDurable),
        2 => Just(Step::Flush),
        1 => Just(Step::Sync),
        1 => Just(Step::Reclaim),
    ]
}

fn crash_mode() -> impl Strategy<Value = CrashMode> {
    prop_oneof![
        Just(CrashMode::DropUnflushed),
        Just(CrashMode::KeepUnflushed),
        any::<u64>().prop_map(|seed| CrashMode::Torn { seed }),
    ]
}

fn make_fs(device: &dyn BlockDevice) -> Superblock {
    let options = MkfsOptions {
        uuid: Some(FsUuid(*b"btree-model-test")),
        time: Some(1_700_000_000),
        journal_bytes: Some(1 << 20),
        ..MkfsOptions::default()
    };
    mkfs(device, &options).expect("mkfs")
}

fn open(device: Arc<dyn BlockDevice>, superblock: &Superblock) -> Result<Btrees, String> {
    let mut options = JournalOptions::for_filesystem(superblock);
    options.region.length = RING_BLOCKS * u64::from(superblock.layout.block_size);
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
            cache_bytes: CACHE_BYTES,
            ..BtreesOptions::default()
        },
    )
    .map_err(|e| e.to_string())
}

fn value_for(key: u16, length: usize, serial: usize) -> Vec<u8> {
    let mut value = format!("{serial}:{key}:").into_bytes();
    value.resize(length.max(value.len()), (serial % 251) as u8);
    value
}

/// Applies `changes` to the models, and to a transaction if one is given.
fn apply(
    models: &mut Models,
    changes: &[Change],
    serial: usize,
    mut transaction: Option<&mut vigilfs::btree::Transaction<'_>>,
) {
    for change in changes {
        match *change {
            Change::Put { tree, key, length } => {
                let value = value_for(key, length, serial);
                if let Some(transaction) = transaction.as_deref_mut() {
                    transaction
                        .put(TREES[tree], &encode_key(key), &value)
                        .unwrap();
                }
                models[tree].insert(encode_key(key), value);
            }
            Change::Delete { tree, key } => {
                if let Some(transaction) = transaction.as_deref_mut() {
                    transaction.delete(TREES[tree], &encode_key(key)).unwrap();
                }
                models[tree].remove(&encode_key(key));
            }
            Change::DeleteRange { tree, start, end } => {
                let start = encode_key(start);
                let end = end.map(encode_key);
                if let Some(transaction) = transaction.as_deref_mut() {
                    transaction
                        .delete_range(TREES[tree], &start, end.as_deref())
                        .unwrap();
                }
                models[tree]
                    .retain(|key, _| !(*key >= start && end.as_ref().is_none_or(|end| key < end)));
            }
        }
    }
}

fn dump(btrees: &Btrees) -> Models {
    TREES.map(|tree| {
        btrees
            .range(tree, &[], None)
            .map(|entry| entry.expect("scan after recovery"))
            .collect()
    })
}

/// Runs `steps` until the power cut stops it; returns the model after each committed
/// transaction (index 0: empty) and how many were acknowledged durable.
fn run(device: &Arc<CrashDevice>, superblock: &Superblock, steps: &[Step]) -> (Vec<Models>, usize) {
    let mut snapshots = vec![Models::default()];
    let mut acknowledged = 0;
    let Ok(btrees) = open(device.clone(), superblock) else {
        return (snapshots, acknowledged);
    };
    for (serial, step) in steps.iter().enumerate() {
        let outcome = match step {
            Step::Commit(changes) | Step::CommitDurable(changes) => {
                let mut models = snapshots.last().expect("never empty").clone();
                let mut transaction = btrees.transaction();
                apply(&mut models, changes, serial, Some(&mut transaction));
                // A durable commit is a commit, then a flush: if only the flush fails the
                // transaction is committed but not acknowledged.
                match transaction.commit() {
                    Ok(seq) => {
                        snapshots.push(models);
                        match (step, seq) {
                            (Step::CommitDurable(_), Some(seq)) => btrees
                                .journal()
                                .flush_seq(seq)
                                .map(|()| acknowledged = snapshots.len() - 1)
                                .map_err(|e| e.to_string()),
                            _ => Ok(()),
                        }
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
            Step::Flush => btrees
                .journal()
                .flush()
                .map(|()| acknowledged = snapshots.len() - 1)
                .map_err(|e| e.to_string()),
            Step::Sync => btrees
                .sync()
                .map(|()| acknowledged = snapshots.len() - 1)
                .map_err(|e| e.to_string()),
            Step::Reclaim => btrees.journal().reclaim_all().map_err(|e| e.to_string()),
        };
        if outcome.is_err() {
            break;
        }
    }
    (snapshots, acknowledged)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES raises it for a longer soak.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn recovered_trees_equal_a_prefix_of_committed_transactions_covering_every_durable_one(
        steps in proptest::collection::vec(step(), 1..80),
        cut_after in proptest::option::of(1..60u64),
        mode in crash_mode(),
    ) {
        let device = Arc::new(CrashDevice::new(DEVICE_BYTES, SectorSize::Bytes512));
        let superblock = make_fs(device.as_ref());
        if let Some(cut) = cut_after {
            device.cut_power_at_flush(Some(device.flushes_issued() + cut));
        }
        let (snapshots, acknowledged) = run(&device, &superblock, &steps);
        let image: Arc<dyn BlockDevice> = Arc::new(device.crash(mode));
        let btrees = open(image, &superblock)
            .map_err(|error| TestCaseError::fail(format!("recovery failed: {error}")))?;
        btrees.check().map_err(|error| TestCaseError::fail(format!("check: {error}")))?;
        let recovered = dump(&btrees);
        let matching = (acknowledged..snapshots.len()).find(|&index| snapshots[index] == recovered);
        prop_assert!(
            matching.is_some(),
            "recovered trees match no prefix from {} to {} (sizes {:?})",
            acknowledged,
            snapshots.len() - 1,
            recovered.iter().map(BTreeMap::len).collect::<Vec<_>>()
        );
        // Floor lookups (the extent map's "which extent covers this block")
        // agree with the model at every key and between keys, across leaves.
        for (tree, model) in TREES.iter().zip(&recovered) {
            let probes = model
                .keys()
                .flat_map(|key| {
                    let mut before = key.clone();
                    before.pop();
                    [key.clone(), before, [key.as_slice(), b"~"].concat()]
                })
                .chain([Vec::new(), vec![0xff; 4]]);
            for probe in probes {
                let expected = model
                    .range(..=probe.clone())
                    .next_back()
                    .map(|(key, value)| (key.clone(), value.clone()));
                let found = btrees
                    .last_at_or_before(*tree, &probe)
                    .map_err(|error| TestCaseError::fail(format!("floor: {error}")))?;
                prop_assert_eq!(found, expected, "floor of {:?} in {:?}", probe, tree);
            }
        }
    }
}
