//! What the integration tests cannot see: writeback stopped between its
//! steps (take-off, flight, landing) while the cache changes around it.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;

use super::*;
use crate::device::{
    DeviceError, FaultDevice, FaultPlan, FaultRule, MemoryDevice, Operations, SectorSize,
};
use crate::format::Superblock;
use crate::fsck::fsck;
use crate::inode::{CacheStats, Files, Namespace, ROOT_INO};
use crate::mkfs::{make_filesystem, MkfsOptions};
use crate::pagecache::Backing;
use crate::pagecache::LARGE_PAGES;

/// A formatted in-memory filesystem with one empty file, its data going
/// through `wrap(device)`.
struct Bench {
    device: Arc<dyn BlockDevice>,
    plan: Arc<FaultPlan>,
    superblock: Superblock,
    metadata: Arc<Metadata>,
    ino: u64,
}

impl Bench {
    fn new() -> Bench {
        let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
        let plan = Arc::new(FaultPlan::new());
        let device: Arc<dyn BlockDevice> = Arc::new(FaultDevice::new(memory, plan.clone()));
        let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).unwrap();
        let metadata = Arc::new(Metadata::open_default(device.clone(), &superblock).unwrap());
        let (ino, _) = Namespace::new(metadata.clone())
            .create(ROOT_INO, b"f", 0o644, 0, 0)
            .unwrap();
        Bench {
            device,
            plan,
            superblock,
            metadata,
            ino,
        }
    }

    fn files(&self, data: Arc<dyn BlockDevice>) -> Files {
        Files::new(data, &self.superblock, self.metadata.clone()).unwrap()
    }

    /// Makes everything durable, mounts the image again and returns the
    /// file's contents there; fsck must find nothing wrong.
    fn remount_and_read(&self) -> Vec<u8> {
        self.metadata.trees.sync().unwrap();
        self.metadata.journal.flush().unwrap();
        let report = fsck(self.device.clone(), &mut |_| {}).unwrap();
        assert!(report.is_clean(), "fsck: {:#?}", report.problems);
        let metadata =
            Arc::new(Metadata::open_default(self.device.clone(), &self.superblock).unwrap());
        let files = Files::new(self.device.clone(), &self.superblock, metadata).unwrap();
        let handle = files.open(self.ino).unwrap();
        files.read(&handle, 0, 1 << 30).unwrap()
    }
}

/// One step of [`flights_interleaved_with_cache_changes_match_a_model`].
#[derive(Debug, Clone)]
enum Step {
    Write { offset: u64, length: u64, seed: u8 },
    Read { offset: u64, length: u64 },
    TakeOff,
    Land { fail: bool },
    Truncate { size: u64 },
    Budget { pages: u64 },
}

/// Files in the model stay within this many pages (three large runs).
const MODEL_PAGES: u64 = 48;

fn step() -> impl Strategy<Value = Step> {
    let bytes = MODEL_PAGES * PAGE;
    prop_oneof![
        4 => (0..bytes, 1..8 * PAGE, any::<u8>())
            .prop_map(|(offset, length, seed)| Step::Write { offset, length, seed }),
        2 => (0..MODEL_PAGES / LARGE_PAGES, any::<u8>()).prop_map(|(run, seed)| Step::Write {
            offset: run * LARGE_PAGES * PAGE,
            length: LARGE_PAGES * PAGE,
            seed,
        }),
        3 => (0..bytes, 1..bytes).prop_map(|(offset, length)| Step::Read { offset, length }),
        2 => Just(Step::TakeOff),
        2 => any::<bool>().prop_map(|fail| Step::Land { fail }),
        1 => (0..bytes).prop_map(|size| Step::Truncate { size }),
        1 => (0..40u64).prop_map(|pages| Step::Budget { pages }),
    ]
}

fn pages_in(offset: u64, end: u64) -> Range<u64> {
    offset / PAGE..end.div_ceil(PAGE)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Writeback stopped in flight while writes (partial, whole-page
    /// and large), reads that fill the cache, evictions and landings
    /// (failed or not) happen around it: every read matches the model,
    /// the dirty count is exactly the pages written since they were
    /// last made durable (in flight included), a failed landing
    /// reports its error, and the file survives a remount.
    #[test]
    fn flights_interleaved_with_cache_changes_match_a_model(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let bench = Bench::new();
        let files = bench.files(bench.device.clone());
        let mut handle = files.open(bench.ino).unwrap();
        let mut model: Vec<u8> = Vec::new();
        let mut dirty: BTreeSet<u64> = BTreeSet::new();
        let mut in_flight: BTreeSet<u64> = BTreeSet::new();
        let mut flight: Option<Flight> = None;
        for step in steps {
            match step {
                Step::Write { offset, length, seed } => {
                    let bytes = pattern(length as usize, seed);
                    files.write(&handle, offset, &bytes).unwrap();
                    let end = (offset + length) as usize;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[offset as usize..end].copy_from_slice(&bytes);
                    dirty.extend(pages_in(offset, offset + length));
                }
                Step::Read { offset, length } => {
                    let read = files.read(&handle, offset, length as usize).unwrap();
                    let from = (offset as usize).min(model.len());
                    let to = ((offset + length) as usize).min(model.len());
                    prop_assert!(read == model[from..to], "read {}+{} differs", offset, length);
                }
                Step::TakeOff => {
                    if flight.is_none() {
                        flight = files.writeback.take_off(bench.ino);
                        in_flight = std::mem::take(&mut dirty);
                    }
                }
                Step::Land { fail } => {
                    let Some(taken) = flight.take() else { continue };
                    let rule = fail.then(|| {
                        bench.plan.add_rule(
                            FaultRule::fail(crate::device::Errno::EIO)
                                .for_class(IoClass::Data)
                                .on(Operations::WRITE),
                        ).unwrap()
                    });
                    let landing = files.writeback.fly(&taken);
                    if let Some(rule) = rule {
                        bench.plan.remove_rule(rule);
                    }
                    let landed = files.writeback.land(taken, landing);
                    if fail && !in_flight.is_empty() {
                        prop_assert_eq!(landed, Err(Errno::EIO));
                        dirty.append(&mut in_flight);
                    } else {
                        prop_assert!(landed.is_ok());
                        in_flight.clear();
                    }
                }
                Step::Truncate { size } => {
                    if flight.is_some() {
                        // It would wait for the landing, which this
                        // thread is to do.
                        continue;
                    }
                    files.truncate(bench.ino, size).unwrap();
                    let keep = size.div_ceil(PAGE);
                    dirty.retain(|&page| page < keep);
                    let tail = size as usize..(keep * PAGE).min(model.len() as u64) as usize;
                    if size < model.len() as u64
                        && size % PAGE != 0
                        && model[tail].iter().any(|&byte| byte != 0)
                    {
                        dirty.insert(size / PAGE);
                    }
                    model.resize(size as usize, 0);
                }
                Step::Budget { pages } => files.set_cache_budget(pages * PAGE),
            }
            let unclean = dirty.union(&in_flight).count() as u64;
            prop_assert_eq!(files.cache_stats().dirty_bytes, unclean * PAGE);
        }
        if let Some(taken) = flight.take() {
            let landing = files.writeback.fly(&taken);
            prop_assert!(files.writeback.land(taken, landing).is_ok());
        }
        // A failed landing's error reaches the handle once, then the
        // retry is clean.
        let _ = files.fsync(&mut handle);
        prop_assert!(files.fsync(&mut handle).is_ok());
        prop_assert_eq!(files.cache_stats().dirty_bytes, 0);
        prop_assert!(bench.remount_and_read() == model, "contents differ after remount");
    }
}

#[test]
fn a_file_deleted_while_its_data_is_in_flight_lands_without_an_error() {
    let bench = Bench::new();
    let files = bench.files(bench.device.clone());
    let handle = files.open(bench.ino).unwrap();
    files
        .write(&handle, 0, &pattern(3 * PAGE_BYTES, 2))
        .unwrap();
    files.release(handle);
    let flight = files
        .writeback
        .take_off(bench.ino)
        .expect("dirty pages to write");
    // Its last link goes (nobody has it open): deleted at once.
    let deleted = Namespace::new(bench.metadata.clone())
        .unlink(ROOT_INO, b"f")
        .unwrap();
    assert_eq!(deleted, Some(bench.ino));
    let landing = files.writeback.fly(&flight);
    assert!(landing.failure.is_some(), "the commit finds no inode");
    assert_eq!(files.writeback.land(flight, landing), Ok(0));
    // Nobody is told of a loss that is no loss.
    assert!(files.fs_peek().is_ok());
    assert!(files.peek_error(bench.ino).is_ok());
    files.forget(bench.ino);
    assert_eq!(files.cache_stats(), CacheStats::default());
    // No block leaked: the new ones were freed, fsck is clean.
    bench.metadata.trees.sync().unwrap();
    bench.metadata.journal.flush().unwrap();
    let report = fsck(bench.device.clone(), &mut |_| {}).unwrap();
    assert!(report.is_clean(), "fsck: {:#?}", report.problems);
}

/// `inner`, with `before_data_write` run before each data write (to panic,
/// or to wait at a gate).
struct HookedDevice {
    inner: Arc<dyn BlockDevice>,
    before_data_write: Box<dyn Fn() + Send + Sync>,
}

impl BlockDevice for HookedDevice {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        self.inner.read_at(offset, buffer, class)
    }
    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        if class == IoClass::Data {
            (self.before_data_write)();
        }
        self.inner.write_at(offset, buffer, class)
    }
    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        self.inner.flush(class)
    }
    fn length(&self) -> u64 {
        self.inner.length()
    }
    fn sector_size(&self) -> SectorSize {
        self.inner.sector_size()
    }
}

#[test]
fn a_panic_in_flight_leaves_the_pages_dirty_and_the_inode_free() {
    let bench = Bench::new();
    let armed = Arc::new(AtomicBool::new(true));
    let trigger = Arc::clone(&armed);
    let device = Arc::new(HookedDevice {
        inner: bench.device.clone(),
        before_data_write: Box::new(move || {
            if trigger.load(Ordering::SeqCst) {
                panic!("injected panic in a data write");
            }
        }),
    });
    let files = bench.files(device.clone());
    let mut handle = files.open(bench.ino).unwrap();
    let data = pattern(20 * PAGE_BYTES + 100, 5);
    files.write(&handle, 0, &data).unwrap();
    let panicked = catch_unwind(AssertUnwindSafe(|| files.fsync(&mut handle)));
    assert!(panicked.is_err(), "the data write should have panicked");
    // Landed as untried: all dirty again, nothing in flight, nothing
    // reported (the panic is what gets reported, by the caller).
    assert_eq!(files.cache_stats().dirty_bytes, 21 * PAGE);
    assert!(!files.cache.lock().inodes[&bench.ino].syncing);
    assert!(files.peek_error(bench.ino).is_ok());
    armed.store(false, Ordering::SeqCst);
    files.fsync(&mut handle).unwrap();
    assert_eq!(files.cache_stats().dirty_bytes, 0);
    assert!(bench.remount_and_read() == data);
}

pub(crate) fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|at| (at as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// Pages written over preallocated blocks on a full filesystem hold no
/// promise, and the gauges the allocator reads say so exactly: a page
/// rewritten while its in-place flight is in the air needs (and takes) a
/// promise, since the flight fills the block; punch and truncate drop the
/// rest; what landed survives a remount.
#[test]
fn pages_over_preallocated_blocks_hold_no_promise_until_rewritten_in_flight() {
    use crate::inode::FallocateMode;
    let bench = Bench::new();
    let files = bench.files(bench.device.clone());
    let handle = files.open(bench.ino).unwrap();
    let allocator = &bench.metadata.allocator;
    let gauges = || {
        (
            allocator.promised_pages().load(Ordering::Acquire),
            allocator.preallocated_pages().load(Ordering::Acquire),
        )
    };
    files
        .fallocate(bench.ino, 0, 8 * PAGE, FallocateMode::KEEP_SIZE)
        .unwrap();
    // Fill what is left with another file's fallocated blocks, all but
    // room for one promise.
    let (filler, _) = Namespace::new(bench.metadata.clone())
        .create(ROOT_INO, b"filler", 0o644, 0, 0)
        .unwrap();
    let mut at = 0;
    while allocator.data_available() > 1 {
        let available = allocator.data_available();
        // Large steps, then block by block: the records each step adds
        // take their share too.
        let blocks = if available > 256 { available - 128 } else { 1 };
        files
            .fallocate(filler, at, blocks * PAGE, FallocateMode::KEEP_SIZE)
            .unwrap();
        at += blocks * PAGE;
    }
    assert_eq!(allocator.data_available(), 1);

    let mut model = vec![0u8; 8 * PAGE_BYTES];
    let write = |model: &mut Vec<u8>, page: usize, seed: u8| {
        let bytes = pattern(PAGE_BYTES, seed);
        model[page * PAGE_BYTES..(page + 1) * PAGE_BYTES].copy_from_slice(&bytes);
        files
            .write(&handle, (page * PAGE_BYTES) as u64, &bytes)
            .unwrap();
    };
    // The last promise goes to the first page; the second is written over
    // its preallocated block with none.
    write(&mut model, 0, 1);
    write(&mut model, 3, 2);
    assert_eq!(gauges(), (1, 1));
    let flight = files.writeback.take_off(bench.ino).expect("dirty pages");
    // Rewritten in flight (as a write with a promise to spare would): the
    // flight fills block 3, so the new contents need a block of their own.
    {
        let mut cache = files.writeback.cache.lock();
        let Cache { inodes, accounting } = &mut *cache;
        let state = inodes.get_mut(&bench.ino).unwrap();
        state.put_dirty(
            accounting,
            3,
            pattern(PAGE_BYTES, 3).into(),
            Backing::Promise,
        );
    }
    model[3 * PAGE_BYTES..4 * PAGE_BYTES].copy_from_slice(&pattern(PAGE_BYTES, 3));
    assert_eq!(gauges(), (2, 0));
    let landing = files.writeback.fly(&flight);
    assert_eq!(files.writeback.land(flight, landing), Ok(2));
    assert_eq!(gauges(), (1, 0));
    // Block 3 is data now: copy-on-write, with the promise.
    assert_eq!(files.writeback.writeback_inode(bench.ino), Ok(1));
    assert_eq!(gauges(), (0, 0));
    // The copy took the last free block: both go over their preallocated
    // blocks.
    assert_eq!(allocator.data_available(), 0);
    write(&mut model, 5, 4);
    write(&mut model, 6, 5);
    assert_eq!(gauges(), (0, 2));
    files
        .fallocate(
            bench.ino,
            6 * PAGE,
            PAGE,
            FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
        )
        .unwrap();
    model[6 * PAGE_BYTES..7 * PAGE_BYTES].fill(0);
    assert_eq!(gauges(), (0, 1));
    files.truncate(bench.ino, 5 * PAGE).unwrap();
    model.truncate(5 * PAGE_BYTES);
    assert_eq!(gauges(), (0, 0));
    assert_eq!(files.cache_stats().dirty_bytes, 0);
    files.release(handle);
    assert!(
        bench.remount_and_read() == model,
        "contents differ after remount"
    );
}

/// Where data writes wait while it is closed, counting those that came.
#[derive(Default)]
struct Gate {
    /// (open, writes that came)
    state: std::sync::Mutex<(bool, u64)>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        state.1 += 1;
        self.changed.notify_all();
        while !state.0 {
            state = self.changed.wait(state).unwrap();
        }
    }

    fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    fn wait_for_a_write(&self) {
        let mut state = self.state.lock().unwrap();
        while state.1 == 0 {
            state = self.changed.wait(state).unwrap();
        }
    }
}

/// A file deleted (its last link, nobody has it open) while its data is
/// being written in place into its preallocated blocks: the deletion,
/// which frees those blocks, waits until the write is done, so a freed
/// block is never written by the file it was taken from (another file
/// may own it by then).
#[test]
fn a_deletion_waits_for_in_place_writes_into_the_blocks_it_frees() {
    use crate::inode::FallocateMode;
    let bench = Bench::new();
    let gate = Arc::new(Gate::default());
    let closed = Arc::clone(&gate);
    let device = Arc::new(HookedDevice {
        inner: bench.device.clone(),
        before_data_write: Box::new(move || closed.pass()),
    });
    let files = bench.files(device.clone());
    files
        .fallocate(bench.ino, 0, 4 * PAGE, FallocateMode::KEEP_SIZE)
        .unwrap();
    let handle = files.open(bench.ino).unwrap();
    files.write(&handle, 0, &pattern(PAGE_BYTES, 7)).unwrap();
    files.release(handle);
    let flight = files.writeback.take_off(bench.ino).expect("a dirty page");
    let deleted = AtomicBool::new(false);
    let (taken, writeback) = (&flight, &files.writeback);
    let landing = std::thread::scope(|scope| {
        let writer = scope.spawn(move || writeback.fly(taken));
        gate.wait_for_a_write();
        let deleter = scope.spawn(|| {
            let unlinked = Namespace::new(bench.metadata.clone()).unlink(ROOT_INO, b"f");
            deleted.store(true, Ordering::SeqCst);
            unlinked
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        let deleted_during_the_write = deleted.load(Ordering::SeqCst);
        gate.open();
        let landing = writer.join().unwrap();
        assert_eq!(deleter.join().unwrap().unwrap(), Some(bench.ino));
        assert!(
            !deleted_during_the_write,
            "the file was deleted, its blocks freed, while its data was being written into them"
        );
        landing
    });
    // Landed before or after the deletion: no error either way.
    assert!(files.writeback.land(flight, landing).is_ok());
    files.forget(bench.ino);
    bench.metadata.trees.sync().unwrap();
    bench.metadata.journal.flush().unwrap();
    let report = fsck(bench.device.clone(), &mut |_| {}).unwrap();
    assert!(report.is_clean(), "fsck: {:#?}", report.problems);
}

#[test]
fn failed_bytes_end_at_the_file_size_not_at_the_page_end() {
    // 100 bytes written at 10,000: the failed page is 8192..12288, the
    // file ends at 10,100.
    assert_eq!(bytes_of_pages(2, 2, 10_100), (8192, 1908));
    assert_eq!(bytes_of_pages(0, 0, 3000), (0, 3000));
    assert_eq!(bytes_of_pages(0, 3, 4 * 4096), (0, 4 * 4096));
    // A size before the pages (a truncate raced the writeback): the pages.
    assert_eq!(bytes_of_pages(5, 6, 100), (5 * 4096, 2 * 4096));
}
