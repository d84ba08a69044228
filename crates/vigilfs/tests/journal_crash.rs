//! Crash consistency of the journal: cut the power at every flush point of
//! a workload, with unflushed writes dropped or torn, and check what
//! recovery finds.
//!
//! The workload commits numbered transactions of random sizes, flushes at
//! random points, and pins each transaction with an object whose "write"
//! is a checkpoint record (the highest transaction written out) in a block
//! outside the journal. Like a b-tree node write, the checkpoint write is
//! not flushed by itself: the journal must not reuse the space of entries
//! until an entry recording the newer `last_seq` is durable, and that flush
//! is what makes the checkpoint durable too. Reclaim and the workload itself
//! write objects out, so the small ring wraps many times. After a crash, the transactions recovered are
//! those up to the checkpoint plus those replayed from the journal. They
//! must be exactly `1..=m` (a prefix, nothing missing in between, nothing
//! duplicated out of order) with `m` at least the last transaction whose
//! flush returned success.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vigilfs::device::{BlockDevice, CrashDevice, CrashMode, IoClass, MemoryDevice, SectorSize};
use vigilfs::journal::{
    record_bytes, Journal, JournalOptions, JournalRegion, PinFlush, PinFlushError,
};

const UUID: [u8; 16] = *b"crash-test-fs-01";
const BLOCK: u32 = 4096;
const DEVICE_BYTES: u64 = 512 * 1024;
const CHECKPOINT_AT: u64 = 0;
const TRANSACTIONS: u64 = 2000;

fn options() -> JournalOptions {
    let mut options = JournalOptions::new(
        JournalRegion {
            start: 2 * u64::from(BLOCK),
            length: 24 * u64::from(BLOCK),
            block_size: BLOCK,
        },
        UUID,
    );
    options.entry_bytes = 8 * 1024;
    options
}

/// A tiny deterministic generator (xorshift64*), so a run can be repeated
/// exactly up to any cut point.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn encode_checkpoint(transaction: u64) -> Vec<u8> {
    let mut block = vec![0u8; 4096];
    block[..8].copy_from_slice(b"VGTESTCK");
    block[8..16].copy_from_slice(&transaction.to_le_bytes());
    let checksum = crc32c::crc32c(&block[..16]);
    block[16..20].copy_from_slice(&checksum.to_le_bytes());
    block
}

fn decode_checkpoint(device: &dyn BlockDevice) -> u64 {
    let mut block = vec![0u8; 4096];
    device
        .read_at(CHECKPOINT_AT, &mut block, IoClass::Metadata)
        .expect("checkpoint block readable");
    if &block[..8] != b"VGTESTCK" {
        return 0;
    }
    let checksum = u32::from_le_bytes(block[16..20].try_into().unwrap());
    assert_eq!(
        checksum,
        crc32c::crc32c(&block[..16]),
        "torn checkpoint record"
    );
    u64::from_le_bytes(block[8..16].try_into().unwrap())
}

/// The object pinning one transaction: writing it out means recording it
/// in the checkpoint block (not flushed: see the module comment).
struct Checkpointed {
    transaction: u64,
    device: Arc<CrashDevice>,
    written_checkpoint: Arc<AtomicU64>,
}

impl PinFlush for Checkpointed {
    fn flush(&self, _seq: u64) -> Result<(), PinFlushError> {
        if self.written_checkpoint.load(Ordering::SeqCst) >= self.transaction {
            return Ok(());
        }
        // The record sits in the first 512 bytes, inside one sector, so a
        // torn write leaves it all old or all new.
        let block = encode_checkpoint(self.transaction);
        self.device
            .write_at(CHECKPOINT_AT, &block, IoClass::Metadata)
            .map_err(|error| error.to_string())?;
        self.written_checkpoint
            .store(self.transaction, Ordering::SeqCst);
        Ok(())
    }
}

struct Outcome {
    /// Highest transaction whose `flush_seq` returned success.
    acknowledged: u64,
    /// Transactions whose commit returned (they may or may not survive).
    committed: u64,
}

fn run_workload(device: &Arc<CrashDevice>, seed: u64) -> Outcome {
    let mut outcome = Outcome {
        acknowledged: 0,
        committed: 0,
    };
    let journal_device: Arc<dyn BlockDevice> = device.clone();
    let Ok((journal, _)) = Journal::open(journal_device, options()) else {
        return outcome;
    };
    let written_checkpoint = Arc::new(AtomicU64::new(0));
    let mut random = Random(seed);
    // Pinned objects not yet written, oldest first, as a b-tree's dirty
    // nodes would be.
    let mut dirty = std::collections::VecDeque::new();
    for transaction in 1..=TRANSACTIONS {
        let padding = random.below(2500) as usize;
        let mut record = transaction.to_le_bytes().to_vec();
        record.resize(8 + padding, transaction as u8);
        let Ok(mut reservation) = journal.reserve(record_bytes(record.len())) else {
            return outcome;
        };
        reservation.append(&record).expect("reserved exactly");
        let seq = reservation.seq();
        let object = Arc::new(Checkpointed {
            transaction,
            device: Arc::clone(device),
            written_checkpoint: Arc::clone(&written_checkpoint),
        });
        let pin = journal
            .pin(seq, object.clone())
            .expect("pin under a held reservation");
        drop(reservation);
        outcome.committed = transaction;
        dirty.push_back((object, pin));
        // Sometimes write out old objects ourselves, as writeback would,
        // so last_seq moves without reclaim flushing the journal after it.
        if random.below(4) == 0 {
            while dirty.len() > 4 {
                let (object, pin) = dirty.pop_front().expect("non-empty");
                if object.flush(0).is_err() {
                    return outcome;
                }
                journal.unpin(pin);
            }
        }
        if random.below(5) == 0 {
            match journal.flush_seq(seq) {
                Ok(()) => outcome.acknowledged = transaction,
                Err(_) => return outcome,
            }
        }
    }
    outcome
}

fn check_recovery(image: MemoryDevice, outcome: &Outcome, context: &str) {
    let checkpoint = decode_checkpoint(&image);
    let image: Arc<dyn BlockDevice> = Arc::new(image);
    let (_, replay) = Journal::open(image, options())
        .unwrap_or_else(|error| panic!("{context}: recovery failed: {error}"));
    let replayed: Vec<u64> = replay
        .entries
        .iter()
        .flat_map(|entry| entry.records.iter())
        .map(|record| u64::from_le_bytes(record[..8].try_into().unwrap()))
        .collect();
    // Replayed transactions are in commit order, with no gaps.
    for pair in replayed.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{context}: replay skips or reorders: {replayed:?}"
        );
    }
    // Together with the checkpoint they form a prefix 1..=m.
    let newest = match (replayed.first(), replayed.last()) {
        (Some(&first), Some(&last)) => {
            assert!(
                first <= checkpoint + 1,
                "{context}: transactions {}..{first} are neither checkpointed nor replayed",
                checkpoint + 1
            );
            last.max(checkpoint)
        }
        _ => checkpoint,
    };
    assert!(
        newest >= outcome.acknowledged,
        "{context}: transaction {} was acknowledged durable but only 1..={newest} survived",
        outcome.acknowledged
    );
    assert!(
        newest <= outcome.committed,
        "{context}: recovered uncommitted transactions"
    );
}

/// 512-byte sectors: torn writes tear inside journal blocks.
#[test]
fn power_cut_at_every_flush_point_with_small_sectors_recovers_every_acknowledged_transaction() {
    sweep_every_flush_point(SectorSize::Bytes512, 0x5EED_0FC0_FFEE);
}

/// 4 KiB sectors: whole entries survive or vanish independently, so newer
/// entries often survive while older unflushed ones do not.
#[test]
fn power_cut_at_every_flush_point_with_large_sectors_recovers_every_acknowledged_transaction() {
    sweep_every_flush_point(SectorSize::Bytes4096, 0xB10C_4096);
}

fn sweep_every_flush_point(sector_size: SectorSize, seed: u64) {
    let reference = Arc::new(CrashDevice::new(DEVICE_BYTES, sector_size));
    let full = run_workload(&reference, seed);
    assert_eq!(full.committed, TRANSACTIONS, "the uncut run completes");
    let flush_points = reference.flushes_issued();
    assert!(flush_points >= 250, "only {flush_points} flush points");

    let mut checks = 0u64;
    for cut in 1..=flush_points {
        let device = Arc::new(CrashDevice::new(DEVICE_BYTES, sector_size));
        device.cut_power_at_flush(Some(cut));
        let outcome = run_workload(&device, seed);
        for mode in [
            CrashMode::DropUnflushed,
            CrashMode::KeepUnflushed,
            CrashMode::Torn { seed: cut },
            CrashMode::Torn { seed: cut ^ 0xABCD },
        ] {
            check_recovery(
                device.crash(mode),
                &outcome,
                &format!("cut at flush {cut} of {flush_points}, {mode:?}"),
            );
            checks += 1;
        }
    }
    assert!(checks >= 1000, "only {checks} crash images checked");
    eprintln!("{sector_size:?}: checked {checks} crash images over {flush_points} flush points");
}
