//! Concurrency of the file data path ([`Files`]): what may run while device
//! I/O of another operation is in flight, and what must wait for it.
//!
//! The data path is meant to do its device I/O outside its mutex:
//!
//! * writeback snapshots the dirty pages of an inode under the mutex (they
//!   are then under writeback), writes them, commits and flushes the
//!   journal without it, and retakes it to mark the pages clean — unless a
//!   write changed a page meanwhile, which then stays dirty;
//! * a read that must fill the cache reserves the pages, reads the device
//!   without the mutex and fills them; a second reader of a reserved page
//!   waits for the fill instead of reading the device again;
//! * writes, truncate and punch wait for fills in their range (a fill must
//!   never overwrite newer bytes);
//! * truncate, punch, fallocate and a second writeback of an inode (fsync
//!   among them) wait for a writeback of that inode already in flight: its
//!   transaction would otherwise bring back extents they removed, or fsync
//!   would return while the data it covers is not durable yet.
//!
//! Each test puts the data path over a [`GateDevice`], which can hold data
//! reads or data writes at the device until the test opens it, so an
//! operation can be caught in the middle of its device I/O. Metadata and
//! the journal go to the fixture's device directly and are never held.
//!
//! Two kinds of checks, neither a performance assertion:
//!
//! * *liveness*: an operation that must not wait for the held I/O runs on
//!   its own thread and must finish within [`LIVENESS_TIMEOUT`]; if it does
//!   not, the gate is opened and the test fails (it never hangs);
//! * *ordering*: an operation that must wait is started, must still be
//!   running after [`WAITING_CHECK`] while the gate is closed, and must
//!   finish with the right result once the gate opens.
//!
//! Every test ends by making everything durable, checking fsck and
//! checking the files' contents after a fresh mount. The last test runs a
//! seeded random workload on four threads against background writeback and
//! a small cache, and compares every file with its model.

mod common;

use common::{create, durable, extents, pattern, Fixture};

use std::any::Any;
use std::collections::{BTreeSet, VecDeque};
use std::panic;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vigilfs::device::{BlockDevice, DeviceError, IoClass, MediaFailureCallback, SectorSize};
use vigilfs::inode::{
    Extent, FallocateMode, FileResult, Files, WritebackSummary, DEFAULT_CACHE_BUDGET, PAGE_BYTES,
};
use vigilfs::metadata::Metadata;

const PAGE: u64 = PAGE_BYTES as u64;

/// How long an operation that must not wait for held I/O may take before
/// the test decides it is blocked behind it. Far above any honest run time.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an operation that must wait for held I/O has to stay unfinished
/// while the gate is closed.
const WAITING_CHECK: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------
// The gate: a device wrapper that holds data I/O until the test opens it.
// ---------------------------------------------------------------------------

/// The kinds of data request the gate can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataRequest {
    Read,
    Write,
}

#[derive(Debug, Default)]
struct GateState {
    hold_reads: bool,
    hold_writes: bool,
    /// Requests waiting at the gate right now.
    held: usize,
    /// Data reads that reached the gate (held or not), since it was made.
    data_reads: u64,
    /// Data writes that reached the gate (held or not), since it was made.
    data_writes: u64,
}

impl GateState {
    fn holds(&self, request: DataRequest) -> bool {
        match request {
            DataRequest::Read => self.hold_reads,
            DataRequest::Write => self.hold_writes,
        }
    }
}

/// A [`BlockDevice`] that passes everything to `inner`, except that data
/// reads and data writes ([`IoClass::Data`]) can be held until the test
/// opens the gate. Counts the data reads and writes it sees.
struct GateDevice {
    inner: Arc<dyn BlockDevice>,
    state: Mutex<GateState>,
    changed: Condvar,
}

impl GateDevice {
    fn new(inner: Arc<dyn BlockDevice>) -> Arc<GateDevice> {
        Arc::new(GateDevice {
            inner,
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, data writes wait at the gate until [`GateDevice::open`].
    fn hold_data_writes(&self) {
        self.lock().hold_writes = true;
    }

    /// From now on, data reads wait at the gate until [`GateDevice::open`].
    fn hold_data_reads(&self) {
        self.lock().hold_reads = true;
    }

    /// Lets every held request through and holds nothing more.
    fn open(&self) {
        let mut state = self.lock();
        state.hold_reads = false;
        state.hold_writes = false;
        self.changed.notify_all();
    }

    fn data_reads(&self) -> u64 {
        self.lock().data_reads
    }

    fn data_writes(&self) -> u64 {
        self.lock().data_writes
    }

    /// Waits until `count` requests are held at the gate. Opens the gate and
    /// fails the test if that does not happen within [`LIVENESS_TIMEOUT`].
    fn wait_until_held(&self, count: usize) {
        let deadline = Instant::now() + LIVENESS_TIMEOUT;
        let mut state = self.lock();
        while state.held < count {
            let now = Instant::now();
            if now >= deadline {
                let held = state.held;
                drop(state);
                self.open();
                panic!(
                    "expected {count} data requests held at the gate, only {held} arrived \
                     within {LIVENESS_TIMEOUT:?}"
                );
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Counts a data request and holds it while the gate holds its kind.
    fn pass(&self, request: DataRequest) {
        let mut state = self.lock();
        match request {
            DataRequest::Read => state.data_reads += 1,
            DataRequest::Write => state.data_writes += 1,
        }
        if state.holds(request) {
            state.held += 1;
            self.changed.notify_all();
            while state.holds(request) {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.held -= 1;
            self.changed.notify_all();
        }
    }
}

impl BlockDevice for GateDevice {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        if class == IoClass::Data {
            self.pass(DataRequest::Read);
        }
        self.inner.read_at(offset, buffer, class)
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        if class == IoClass::Data {
            self.pass(DataRequest::Write);
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

    fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
        self.inner.set_media_failure_callback(callback);
    }
}

/// Opens the gate when dropped, so a failing test (a panic anywhere) never
/// leaves a thread held at it.
struct OpenGateOnDrop(Arc<GateDevice>);

impl Drop for OpenGateOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

// ---------------------------------------------------------------------------
// Operations on their own threads, with bounded waits.
// ---------------------------------------------------------------------------

/// An operation running on its own thread.
struct Background<T> {
    what: String,
    result: Receiver<T>,
    thread: JoinHandle<()>,
}

/// Starts `operation` on a new thread; `what` names it in failure messages.
fn start<T: Send + 'static>(
    what: &str,
    operation: impl FnOnce() -> T + Send + 'static,
) -> Background<T> {
    let (sender, result) = mpsc::channel();
    let thread = thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let _ = sender.send(operation());
        })
        .expect("spawn");
    Background {
        what: what.to_owned(),
        result,
        thread,
    }
}

impl<T> Background<T> {
    /// Asserts the operation is still running after [`WAITING_CHECK`] with
    /// the gate closed: it waits for the held I/O, as it must (`why`).
    fn assert_still_waiting(self, gate: &GateDevice, why: &str) -> Background<T> {
        match self.result.recv_timeout(WAITING_CHECK) {
            Err(RecvTimeoutError::Timeout) => self,
            Ok(_) => {
                gate.open();
                panic!(
                    "{} finished while the gate still held the device I/O it must wait for: {why}",
                    self.what
                );
            }
            Err(RecvTimeoutError::Disconnected) => self.propagate_panic(gate),
        }
    }

    /// The result of an operation that must finish while I/O of another
    /// operation is held at the gate. Opens the gate and fails the test if
    /// it is still running after [`LIVENESS_TIMEOUT`].
    fn finishes_while_held(self, gate: &GateDevice) -> T {
        self.wait(
            gate,
            "while the gate held another operation's device I/O: it is blocked behind that I/O, \
             which it must not wait for",
        )
    }

    /// The result of an operation once the gate is open; fails the test if
    /// it does not come within [`LIVENESS_TIMEOUT`] (a deadlock).
    fn finishes(self, gate: &GateDevice) -> T {
        self.wait(gate, "after the gate opened (deadlock?)")
    }

    fn wait(self, gate: &GateDevice, context: &str) -> T {
        match self.result.recv_timeout(LIVENESS_TIMEOUT) {
            Ok(value) => {
                // The thread has sent its result: it is about to end. Joining
                // it makes sure it dropped everything it held (a mount).
                self.thread.join().expect("the thread sent its result");
                value
            }
            Err(RecvTimeoutError::Timeout) => {
                gate.open();
                panic!(
                    "{} did not finish within {LIVENESS_TIMEOUT:?} {context}",
                    self.what
                );
            }
            Err(RecvTimeoutError::Disconnected) => self.propagate_panic(gate),
        }
    }

    fn propagate_panic(self, gate: &GateDevice) -> ! {
        gate.open();
        let payload: Box<dyn Any + Send> = match self.thread.join() {
            Err(payload) => payload,
            Ok(()) => Box::new(format!("{} ended without a result", self.what)),
        };
        panic::resume_unwind(payload)
    }
}

/// Runs `operation` on its own thread while I/O of another operation is
/// held at the gate; it must finish (see [`Background::finishes_while_held`]).
fn finishes_while_held<T: Send + 'static>(
    gate: &GateDevice,
    what: &str,
    operation: impl FnOnce() -> T + Send + 'static,
) -> T {
    start(what, operation).finishes_while_held(gate)
}

// ---------------------------------------------------------------------------
// Mounting, file access and checks.
// ---------------------------------------------------------------------------

/// A data path over `metadata` whose file data goes through a new gate
/// (metadata and the journal use the fixture's device, never held).
/// Writes `contents` to file `ino` from offset 0 and reads it back, on
/// another thread, which must finish while the gate holds I/O.
fn write_and_read_while_held(
    gate: &Arc<GateDevice>,
    files: &Arc<Files>,
    ino: u64,
    contents: &[u8],
    what: &str,
) {
    let read = finishes_while_held(gate, &format!("a write and read of {what}"), {
        let files = files.clone();
        let contents = contents.to_vec();
        move || {
            write_bytes(&files, ino, 0, &contents);
            read_bytes(&files, ino, 0, 1 << 20)
        }
    });
    assert_same_bytes(
        &read,
        contents,
        &format!("{what}, written while I/O was held"),
    );
}

/// Starts `writeback_all` on another thread with data writes held, and
/// returns once it is caught inside the gate.
fn writeback_all_held(gate: &Arc<GateDevice>, files: &Arc<Files>) -> Background<WritebackSummary> {
    gate.hold_data_writes();
    let background = start("writeback_all", {
        let files = files.clone();
        move || files.writeback_all()
    });
    gate.wait_until_held(1);
    background
}

/// A fresh fixture, mounted, its data path behind a gate that opens
/// when the last value returned is dropped.
fn gated_fixture() -> (
    Fixture,
    Arc<Metadata>,
    Arc<GateDevice>,
    Arc<Files>,
    OpenGateOnDrop,
) {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let (gate, files) = gated_files(&fixture, &metadata);
    let open_gate_on_drop = OpenGateOnDrop(gate.clone());
    (fixture, metadata, gate, files, open_gate_on_drop)
}

/// Starts a read of page 0 of `ino` on another thread with data reads
/// held, and returns once it is caught inside the gate.
fn first_page_read_held(
    gate: &Arc<GateDevice>,
    files: &Arc<Files>,
    ino: u64,
    what: &str,
) -> Background<Vec<u8>> {
    gate.hold_data_reads();
    let reader = start(what, {
        let files = files.clone();
        move || read_bytes(&files, ino, 0, PAGE_BYTES)
    });
    gate.wait_until_held(1);
    reader
}

fn gated_files(fixture: &Fixture, metadata: &Arc<Metadata>) -> (Arc<GateDevice>, Arc<Files>) {
    let gate = GateDevice::new(fixture.device.clone());
    let device: Arc<dyn BlockDevice> = gate.clone();
    let files = Files::new(device, &fixture.superblock, metadata.clone()).expect("files");
    (gate, Arc::new(files))
}

fn read_bytes(files: &Files, ino: u64, offset: u64, length: usize) -> Vec<u8> {
    let handle = files.open(ino).expect("open");
    let bytes = files.read(&handle, offset, length).expect("read");
    files.release(handle);
    bytes
}

fn write_bytes(files: &Files, ino: u64, offset: u64, bytes: &[u8]) {
    let handle = files.open(ino).expect("open");
    assert_eq!(
        files.write(&handle, offset, bytes).expect("write"),
        bytes.len()
    );
    files.release(handle);
}

fn fsync(files: &Files, ino: u64) -> FileResult<()> {
    let mut handle = files.open(ino).expect("open");
    let synced = files.fsync(&mut handle);
    files.release(handle);
    synced
}

/// Writes `bytes` to `model` at `offset` as a write to the file does.
fn apply_write(model: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let offset = offset as usize;
    let end = offset + bytes.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[offset..end].copy_from_slice(bytes);
}

/// Evicts every clean cached page, then restores the default budget: the
/// next read of a written-back page goes to the device.
fn evict_clean_pages(files: &Files) {
    files.set_cache_budget(0);
    let stats = files.cache_stats();
    assert_eq!(stats.cached_bytes, stats.dirty_bytes, "{stats:?}");
    files.set_cache_budget(DEFAULT_CACHE_BUDGET);
}

/// Asserts `actual == expected` without printing megabytes: names the first
/// differing byte and both lengths.
fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first_difference = actual
        .iter()
        .zip(expected)
        .position(|(actual, expected)| actual != expected)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: {} bytes read, {} expected; first difference at byte {first_difference} \
         (page {}): read {:?}, expected {:?}",
        actual.len(),
        expected.len(),
        first_difference / PAGE_BYTES,
        actual.get(first_difference),
        expected.get(first_difference),
    );
}

/// Ends a mount: writes back whatever is dirty, makes everything durable,
/// checks fsck, and drops the data path and the metadata. Every thread
/// using them must have ended.
fn unmount(fixture: &Fixture, metadata: Arc<Metadata>, files: Arc<Files>) {
    let files = Arc::into_inner(files).expect("a thread still uses the data path");
    let summary = files.writeback_all();
    assert!(summary.failed_inodes.is_empty(), "{summary:?}");
    drop(files);
    durable(&metadata);
    fixture.assert_fsck_clean(&metadata);
}

/// Mounts the filesystem afresh (plain device, nothing held) and checks the
/// size and every byte of each `(inode, contents)`, then fsck. Returns the
/// new mount for further checks.
fn assert_contents_after_remount(
    fixture: &Fixture,
    expected: &[(u64, &[u8])],
) -> (Arc<Metadata>, Files) {
    let metadata = fixture.mount();
    let files = fixture.files(&metadata);
    for &(ino, contents) in expected {
        let handle = files.open(ino).expect("open");
        assert_eq!(
            files.size(&handle).expect("size"),
            contents.len() as u64,
            "size of inode {ino} after remount"
        );
        let read = files
            .read(&handle, 0, contents.len() + PAGE_BYTES)
            .expect("read");
        assert_same_bytes(&read, contents, &format!("inode {ino} after remount"));
        files.release(handle);
    }
    fixture.assert_fsck_clean(&metadata);
    (metadata, files)
}

/// The committed extents of `ino` as (first file block, end file block,
/// unwritten).
fn extent_spans(metadata: &Metadata, ino: u64) -> Vec<(u64, u64, bool)> {
    extents(metadata, ino)
        .into_iter()
        .map(|(offset, extent)| {
            (
                offset,
                offset + u64::from(extent.blocks()),
                extent.flags & Extent::UNWRITTEN != 0,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Writeback in flight: what proceeds, what waits.
// ---------------------------------------------------------------------------

#[test]
fn cached_reads_and_other_writes_proceed_while_writeback_is_in_flight() {
    let (fixture, metadata, gate, files, _open_gate_on_drop) = gated_fixture();
    let file_a = create(&metadata, b"a");
    let file_b = create(&metadata, b"b");
    let file_c = create(&metadata, b"c");

    // C is written back and evicted: reading it needs a device read.
    let model_c = pattern(4 * PAGE_BYTES, 3);
    write_bytes(&files, file_c, 0, &model_c);
    fsync(&files, file_c).expect("fsync c");
    evict_clean_pages(&files);

    // A is dirty; its writeback is caught in the device.
    let mut model_a = pattern(8 * PAGE_BYTES, 1);
    write_bytes(&files, file_a, 0, &model_a);
    gate.hold_data_writes();
    let fsync_a = start("fsync of A", {
        let files = files.clone();
        move || fsync(&files, file_a)
    });
    gate.wait_until_held(1);

    let cached = finishes_while_held(&gate, "a read of A's pages under writeback", {
        let files = files.clone();
        move || read_bytes(&files, file_a, 0, 8 * PAGE_BYTES)
    });
    assert_same_bytes(&cached, &model_a, "A's pages under writeback");

    // Partial pages in a hole past A's end: no device read needed.
    let more_a = pattern(PAGE_BYTES + 200, 11);
    let more_a_offset = 12 * PAGE + 100;
    finishes_while_held(&gate, "a write to another range of A", {
        let files = files.clone();
        let more_a = more_a.clone();
        move || write_bytes(&files, file_a, more_a_offset, &more_a)
    });
    apply_write(&mut model_a, more_a_offset, &more_a);

    let model_b = pattern(3 * PAGE_BYTES + 7, 2);
    write_and_read_while_held(&gate, &files, file_b, &model_b, "B");

    let reads_before = gate.data_reads();
    let read_c = finishes_while_held(&gate, "a read of uncached C", {
        let files = files.clone();
        move || read_bytes(&files, file_c, 0, 1 << 20)
    });
    assert_same_bytes(&read_c, &model_c, "C read while A's writeback was held");
    assert!(
        gate.data_reads() > reads_before,
        "C was evicted: its read must have gone to the device"
    );

    gate.open();
    fsync_a.finishes(&gate).expect("fsync of A");
    assert_same_bytes(
        &read_bytes(&files, file_a, 0, 1 << 20),
        &model_a,
        "A after its writeback",
    );
    fsync(&files, file_a).expect("fsync of A's second range");
    fsync(&files, file_b).expect("fsync of B");
    unmount(&fixture, metadata, files);
    assert_contents_after_remount(
        &fixture,
        &[(file_a, &model_a), (file_b, &model_b), (file_c, &model_c)],
    );
}

/// What [`assert_change_waits_for_writeback`] leaves for the test's own
/// checks: the fixture (for a remount) and the file.
struct ChangedFile {
    fixture: Fixture,
    ino: u64,
}

/// Writes `initial` to a new file, catches the file's writeback (an fsync)
/// in the device, starts `change` on another thread and checks that it
/// waits until the writeback is let through; then that both succeed, that
/// the file reads as `expected` before and after a remount, and fsck.
fn assert_change_waits_for_writeback(
    what: &str,
    initial: &[u8],
    change: impl FnOnce(&Files, u64) -> FileResult<()> + Send + 'static,
    expected: &[u8],
) -> ChangedFile {
    let (fixture, metadata, gate, files, _open_gate_on_drop) = gated_fixture();
    let ino = create(&metadata, b"file");
    write_bytes(&files, ino, 0, initial);

    gate.hold_data_writes();
    let writeback = start("fsync (writeback in flight)", {
        let files = files.clone();
        move || fsync(&files, ino)
    });
    gate.wait_until_held(1);
    let changing = start(what, {
        let files = files.clone();
        move || change(&files, ino)
    })
    .assert_still_waiting(
        &gate,
        "the writeback's transaction, committed after it, would bring back what it changed",
    );

    gate.open();
    writeback.finishes(&gate).expect("fsync");
    changing
        .finishes(&gate)
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    assert_same_bytes(
        &read_bytes(&files, ino, 0, expected.len() + PAGE_BYTES),
        expected,
        &format!("the file after {what}"),
    );
    // Size and cut or zeroed pages are made durable too.
    fsync(&files, ino).expect("fsync after the change");
    unmount(&fixture, metadata, files);
    drop(assert_contents_after_remount(&fixture, &[(ino, expected)]));
    ChangedFile { fixture, ino }
}

#[test]
fn truncate_waits_for_writeback_in_flight() {
    let initial = pattern(8 * PAGE_BYTES, 1);
    let size = 3 * PAGE + 1000;
    let expected = initial[..size as usize].to_vec();
    let ChangedFile { fixture, ino } = assert_change_waits_for_writeback(
        "truncate",
        &initial,
        move |files, ino| files.truncate(ino, size),
        &expected,
    );

    // No extent past the new end came back with the writeback's commit...
    let (metadata, files) = assert_contents_after_remount(&fixture, &[(ino, &expected)]);
    let keep_blocks = size.div_ceil(PAGE);
    let spans = extent_spans(&metadata, ino);
    assert!(
        spans.iter().all(|&(_, end, _)| end <= keep_blocks),
        "extents past the end of the file: {spans:?}"
    );
    // ...and growing the file again shows zeros past the old end.
    files.truncate(ino, 8 * PAGE).expect("grow");
    let grown = read_bytes(&files, ino, size, (8 * PAGE - size) as usize);
    assert!(
        grown.iter().all(|&byte| byte == 0),
        "truncated data came back past the end"
    );
    fixture.assert_fsck_clean(&metadata);
}

#[test]
fn punch_waits_for_writeback_in_flight() {
    let initial = pattern(8 * PAGE_BYTES, 1);
    // Pages 2..5 wholly, and parts of pages 1 and 5.
    let (offset, length) = (PAGE + 100, 4 * PAGE);
    let mut expected = initial.clone();
    expected[offset as usize..(offset + length) as usize].fill(0);
    let ChangedFile { fixture, ino } = assert_change_waits_for_writeback(
        "punching a hole",
        &initial,
        move |files, ino| {
            files.fallocate(
                ino,
                offset,
                length,
                FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
            )
        },
        &expected,
    );
    let (metadata, _files) = assert_contents_after_remount(&fixture, &[(ino, &expected)]);
    let (first_whole, end_whole) = (offset.div_ceil(PAGE), (offset + length) / PAGE);
    let spans = extent_spans(&metadata, ino);
    assert!(
        spans
            .iter()
            .all(|&(start, end, _)| end <= first_whole || end_whole <= start),
        "extents inside the punched blocks {first_whole}..{end_whole}: {spans:?}"
    );
}

#[test]
fn fallocate_waits_for_writeback_in_flight() {
    let initial = pattern(8 * PAGE_BYTES, 1);
    let mut expected = initial.clone();
    expected.resize(16 * PAGE_BYTES, 0);
    let ChangedFile { fixture, ino } = assert_change_waits_for_writeback(
        "fallocate",
        &initial,
        move |files, ino| files.fallocate(ino, 0, 16 * PAGE, FallocateMode::ALLOCATE),
        &expected,
    );
    // The written pages have written extents, the rest unwritten ones, and
    // none overlap (fsck checked that too).
    let (metadata, _files) = assert_contents_after_remount(&fixture, &[(ino, &expected)]);
    let spans = extent_spans(&metadata, ino);
    let mut block = 0;
    for &(start, end, unwritten) in &spans {
        assert_eq!(start, block, "extents: {spans:?}");
        assert_eq!(unwritten, start >= 8, "extents: {spans:?}");
        assert!(end <= 8 || start >= 8, "extents: {spans:?}");
        block = end;
    }
    assert_eq!(block, 16, "extents: {spans:?}");
}

#[test]
fn fsync_waits_for_writeback_of_its_inode_already_in_flight() {
    let (fixture, metadata, gate, files, _open_gate_on_drop) = gated_fixture();
    let ino = create(&metadata, b"file");
    let model = pattern(8 * PAGE_BYTES, 4);
    write_bytes(&files, ino, 0, &model);
    // Opened before anything is held, so the fsync thread does nothing else.
    let mut handle = files.open(ino).expect("open");

    let background = writeback_all_held(&gate, &files);
    let fsync_in_flight = start("fsync through a second handle", {
        let files = files.clone();
        move || files.fsync(&mut handle)
    })
    .assert_still_waiting(
        &gate,
        "the file's pages are still being written: success now would claim durability falsely",
    );

    gate.open();
    let summary: WritebackSummary = background.finishes(&gate);
    assert_eq!(summary.pages_written, 8, "{summary:?}");
    assert!(summary.failed_inodes.is_empty(), "{summary:?}");
    fsync_in_flight.finishes(&gate).expect("fsync");
    assert_eq!(files.cache_stats().dirty_bytes, 0);
    unmount(&fixture, metadata, files);
    assert_contents_after_remount(&fixture, &[(ino, &model)]);
}

#[test]
fn a_page_rewritten_during_writeback_stays_dirty() {
    let (fixture, metadata, gate, files, _open_gate_on_drop) = gated_fixture();
    let ino = create(&metadata, b"file");
    let first_version = pattern(2 * PAGE_BYTES, 5);
    write_bytes(&files, ino, 0, &first_version);

    let background = writeback_all_held(&gate, &files);
    let second_version = pattern(PAGE_BYTES, 6);
    finishes_while_held(&gate, "a rewrite of a page under writeback", {
        let files = files.clone();
        let second_version = second_version.clone();
        move || write_bytes(&files, ino, 0, &second_version)
    });
    let mut model = first_version.clone();
    apply_write(&mut model, 0, &second_version);

    gate.open();
    let summary = background.finishes(&gate);
    assert!(summary.failed_inodes.is_empty(), "{summary:?}");
    // The writeback wrote the first version of page 0: marking it clean
    // would lose the second at eviction or remount.
    let dirty = files.cache_stats().dirty_bytes;
    assert!(
        dirty >= PAGE,
        "the rewritten page was marked clean by the writeback of its old contents \
         ({dirty} dirty bytes)"
    );
    assert_same_bytes(
        &read_bytes(&files, ino, 0, 1 << 20),
        &model,
        "the file after the writeback",
    );
    // The next writeback writes it again.
    let writes_before = gate.data_writes();
    fsync(&files, ino).expect("fsync");
    assert!(
        gate.data_writes() > writes_before,
        "the fsync after the rewrite wrote nothing"
    );
    assert_eq!(files.cache_stats().dirty_bytes, 0);
    unmount(&fixture, metadata, files);
    assert_contents_after_remount(&fixture, &[(ino, &model)]);
}

// ---------------------------------------------------------------------------
// Fills in flight: what proceeds, what waits.
// ---------------------------------------------------------------------------

/// A file written back and evicted, on a gated data path: reading it needs
/// the device.
struct EvictedFile {
    fixture: Fixture,
    metadata: Arc<Metadata>,
    gate: Arc<GateDevice>,
    files: Arc<Files>,
    ino: u64,
    contents: Vec<u8>,
}

fn evicted_file(contents: Vec<u8>) -> EvictedFile {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let (gate, files) = gated_files(&fixture, &metadata);
    let ino = create(&metadata, b"evicted");
    write_bytes(&files, ino, 0, &contents);
    fsync(&files, ino).expect("fsync");
    evict_clean_pages(&files);
    EvictedFile {
        fixture,
        metadata,
        gate,
        files,
        ino,
        contents,
    }
}

#[test]
fn other_files_proceed_while_a_read_fills_the_cache() {
    let EvictedFile {
        fixture,
        metadata,
        gate,
        files,
        ino: uncached,
        contents: uncached_contents,
    } = evicted_file(pattern(4 * PAGE_BYTES, 7));
    let _open_gate_on_drop = OpenGateOnDrop(gate.clone());
    // A second file, written back and cached (clean).
    let cached = create(&metadata, b"cached");
    let cached_contents = pattern(2 * PAGE_BYTES, 8);
    write_bytes(&files, cached, 0, &cached_contents);
    fsync(&files, cached).expect("fsync");
    let other = create(&metadata, b"other");

    gate.hold_data_reads();
    let reader = start("a read that fills the cache", {
        let files = files.clone();
        move || read_bytes(&files, uncached, 0, 1 << 20)
    });
    gate.wait_until_held(1);
    let read_cached = finishes_while_held(&gate, "a read of another file's cached pages", {
        let files = files.clone();
        move || read_bytes(&files, cached, 0, 1 << 20)
    });
    assert_same_bytes(&read_cached, &cached_contents, "the cached file");
    let other_contents = pattern(PAGE_BYTES + 10, 9);
    write_and_read_while_held(&gate, &files, other, &other_contents, "a third file");

    gate.open();
    assert_same_bytes(
        &reader.finishes(&gate),
        &uncached_contents,
        "the file read from the device",
    );
    unmount(&fixture, metadata, files);
    assert_contents_after_remount(
        &fixture,
        &[
            (uncached, &uncached_contents),
            (cached, &cached_contents),
            (other, &other_contents),
        ],
    );
}

#[test]
fn concurrent_readers_of_an_uncached_page_read_the_device_once() {
    // One page: whatever the read path reads around a page, there is no
    // other block to read.
    let EvictedFile {
        fixture,
        metadata,
        gate,
        files,
        ino,
        contents,
    } = evicted_file(pattern(PAGE_BYTES, 10));
    let _open_gate_on_drop = OpenGateOnDrop(gate.clone());

    let first_reader = first_page_read_held(&gate, &files, ino, "the first reader");
    let reads_of_the_fill = gate.data_reads();
    assert_eq!(reads_of_the_fill, 1, "one page, one device read");
    let second_reader = start("the second reader", {
        let files = files.clone();
        move || read_bytes(&files, ino, 0, PAGE_BYTES)
    })
    .assert_still_waiting(
        &gate,
        "its page is being filled: it has no bytes to return until the fill ends",
    );
    assert_eq!(
        gate.data_reads(),
        reads_of_the_fill,
        "the second reader read the device although the page was being filled"
    );

    gate.open();
    assert_same_bytes(&first_reader.finishes(&gate), &contents, "the first reader");
    assert_same_bytes(
        &second_reader.finishes(&gate),
        &contents,
        "the second reader",
    );
    assert_eq!(
        gate.data_reads(),
        reads_of_the_fill,
        "the second reader read the device instead of using the fill"
    );
    // Now cached: no device read at all.
    assert_same_bytes(
        &read_bytes(&files, ino, 0, PAGE_BYTES),
        &contents,
        "a third read",
    );
    assert_eq!(gate.data_reads(), reads_of_the_fill);
    unmount(&fixture, metadata, files);
    assert_contents_after_remount(&fixture, &[(ino, &contents)]);
}

#[test]
fn a_write_waits_for_a_fill_of_its_page_then_wins() {
    let EvictedFile {
        fixture,
        metadata,
        gate,
        files,
        ino,
        contents: old,
    } = evicted_file(pattern(PAGE_BYTES, 12));
    let _open_gate_on_drop = OpenGateOnDrop(gate.clone());
    let new = pattern(PAGE_BYTES, 13);
    assert_ne!(old, new);

    let reader = first_page_read_held(&gate, &files, ino, "a read filling the page");
    // A whole page: the write itself needs no device read.
    let reads_before = gate.data_reads();
    let writer = start("a whole-page write of the page being filled", {
        let files = files.clone();
        let new = new.clone();
        move || write_bytes(&files, ino, 0, &new)
    })
    .assert_still_waiting(
        &gate,
        "a fill ending after the write would put the old bytes over the new ones",
    );
    assert_eq!(
        gate.data_reads(),
        reads_before,
        "a whole-page write needs no read"
    );

    gate.open();
    writer.finishes(&gate);
    let read = reader.finishes(&gate);
    assert!(
        read == old || read == new,
        "the reader got neither the old page nor the new one (a mix)"
    );
    assert_same_bytes(
        &read_bytes(&files, ino, 0, PAGE_BYTES),
        &new,
        "the page after the write (the fill must not overwrite it)",
    );
    assert_eq!(
        files.cache_stats().dirty_bytes,
        PAGE,
        "the written page is dirty"
    );
    fsync(&files, ino).expect("fsync");
    unmount(&fixture, metadata, files);
    assert_contents_after_remount(&fixture, &[(ino, &new)]);
}

// ---------------------------------------------------------------------------
// A random workload on several threads against its model.
// ---------------------------------------------------------------------------

/// SplitMix64: a small, seeded, deterministic generator.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in `0..bound` (bound > 0; the bias is irrelevant here).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// `length` bytes, never zero (so a hole read by mistake shows).
    fn bytes(&mut self, length: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(length + 8);
        while bytes.len() < length {
            bytes.extend(self.next().to_le_bytes().map(|byte| byte | 1));
        }
        bytes.truncate(length);
        bytes
    }
}

const WORKERS: u64 = 4;
const OPERATIONS_PER_WORKER: usize = 2000;
const WORKLOAD_FILE_BYTES: u64 = 1 << 20;
const LARGE_RUN: u64 = 16 * PAGE;
const WORKLOAD_CACHE_PAGES: u64 = 64;

/// One worker: `OPERATIONS_PER_WORKER` random operations on its own file,
/// each checked against the model where it returns data. Returns the model.
/// Writes `bytes` at `offset`, asserts all were written, and applies the
/// write to `model`; returns the operation's name for the log of recent
/// ones (`note` appended).
fn write_checked(
    files: &Files,
    handle: &vigilfs::inode::Handle,
    model: &mut Vec<u8>,
    offset: u64,
    bytes: &[u8],
    note: &str,
    context: impl Fn() -> String,
) -> String {
    let label = format!("write {offset}+{}{note}", bytes.len());
    let written = files.write(handle, offset, bytes);
    assert!(
        matches!(written, Ok(count) if count == bytes.len()),
        "{label}: {written:?}; {}",
        context()
    );
    apply_write(model, offset, bytes);
    label
}

fn run_worker(files: &Files, ino: u64, worker: u64) -> Vec<u8> {
    let seed = 0x5EED_0000 + worker;
    let mut random = Random(seed);
    let mut model: Vec<u8> = Vec::new();
    // The pages with a block or a dirty page over a hole: `st_blocks`,
    // asked after every write while writeback runs in the background.
    let mut allocated: BTreeSet<u64> = BTreeSet::new();
    let mut handle = files.open(ino).expect("open");
    // The last operations, for a failure message.
    let mut recent: VecDeque<String> = VecDeque::new();
    for step in 0..OPERATIONS_PER_WORKER {
        let size = model.len() as u64;
        let context = |recent: &VecDeque<String>| {
            format!("worker {worker} (seed {seed:#x}) step {step}; last operations: {recent:?}")
        };
        let operation = match random.below(100) {
            // Writes of a few bytes to a few pages, anywhere.
            0..30 => {
                let offset = random.below(WORKLOAD_FILE_BYTES);
                let length = 1 + random
                    .below(3 * PAGE + 1)
                    .min(WORKLOAD_FILE_BYTES - offset - 1);
                let bytes = random.bytes(length as usize);
                let label = write_checked(files, &handle, &mut model, offset, &bytes, "", || {
                    context(&recent)
                });
                allocated.extend(offset / PAGE..(offset + length).div_ceil(PAGE));
                allocated_blocks(files, ino, || context(&recent));
                label
            }
            // Whole aligned 64 KiB runs (large cache entries).
            30..38 => {
                let runs = WORKLOAD_FILE_BYTES / LARGE_RUN;
                let first = random.below(runs);
                let count = 1 + random.below(2).min(runs - first - 1);
                let (offset, length) = (first * LARGE_RUN, count * LARGE_RUN);
                let bytes = random.bytes(length as usize);
                let label = write_checked(
                    files,
                    &handle,
                    &mut model,
                    offset,
                    &bytes,
                    " (aligned runs)",
                    || context(&recent),
                );
                allocated.extend(offset / PAGE..(offset + length) / PAGE);
                allocated_blocks(files, ino, || context(&recent));
                label
            }
            // Reads of a range, sometimes across the end.
            38..68 => {
                let offset = random.below(size + PAGE);
                let length = 1 + random.below(8 * PAGE);
                let read = files
                    .read(&handle, offset, length as usize)
                    .unwrap_or_else(|error| {
                        panic!("read {offset}+{length}: {error}; {}", context(&recent))
                    });
                let start = (offset as usize).min(model.len());
                let end = ((offset + length) as usize).min(model.len());
                assert_same_bytes(
                    &read,
                    &model[start..end],
                    &format!("read {offset}+{length}; {}", context(&recent)),
                );
                format!("read {offset}+{length}")
            }
            // Truncates, mostly to partial pages, shrinking or growing.
            68..76 => {
                let new_size = random.below(WORKLOAD_FILE_BYTES + 1);
                files.truncate(ino, new_size).unwrap_or_else(|error| {
                    panic!("truncate to {new_size}: {error}; {}", context(&recent))
                });
                if new_size <= size {
                    allocated.retain(|&page| page < new_size.div_ceil(PAGE));
                }
                model.resize(new_size as usize, 0);
                format!("truncate to {new_size}")
            }
            // Holes punched inside the file (or overhanging its end).
            76..84 if size > 0 => {
                let offset = random.below(size);
                let length = 1 + random.below(4 * PAGE + 1);
                files
                    .fallocate(
                        ino,
                        offset,
                        length,
                        FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
                    )
                    .unwrap_or_else(|error| {
                        panic!("punch {offset}+{length}: {error}; {}", context(&recent))
                    });
                let end = ((offset + length) as usize).min(model.len());
                model[offset as usize..end].fill(0);
                let whole = offset.div_ceil(PAGE)..(offset + length) / PAGE;
                allocated.retain(|page| !whole.contains(page));
                format!("punch {offset}+{length}")
            }
            84..92 => {
                files
                    .fsync(&mut handle)
                    .unwrap_or_else(|error| panic!("fsync: {error}; {}", context(&recent)));
                "fsync".to_owned()
            }
            // The whole file and its size.
            _ => {
                let read = files
                    .read(&handle, 0, model.len() + PAGE_BYTES)
                    .unwrap_or_else(|error| panic!("read all: {error}; {}", context(&recent)));
                assert_same_bytes(&read, &model, &format!("read all; {}", context(&recent)));
                let size = files.size(&handle).expect("size");
                assert_eq!(size, model.len() as u64, "size; {}", context(&recent));
                "read all".to_owned()
            }
        };
        if recent.len() == 16 {
            recent.pop_front();
        }
        recent.push_back(operation);
    }
    files.fsync(&mut handle).expect("final fsync");
    assert_eq!(
        allocated_blocks(files, ino, || format!("worker {worker} at the end")),
        allocated.len() as u64,
        "st_blocks of worker {worker}'s file once all is written back"
    );
    files.release(handle);
    model
}

/// `st_blocks` of `ino` (in blocks), which must always be answered.
fn allocated_blocks(files: &Files, ino: u64, context: impl Fn() -> String) -> u64 {
    files
        .allocated_blocks(ino)
        .unwrap_or_else(|error| panic!("st_blocks: {error}; {}", context()))
}

#[test]
fn parallel_workload_matches_its_model() {
    let fixture = Fixture::new();
    let metadata = fixture.mount();
    let files = Arc::new(fixture.files(&metadata));
    files.set_cache_budget(WORKLOAD_CACHE_PAGES * PAGE);
    let inos: Vec<u64> = (0..WORKERS)
        .map(|worker| create(&metadata, format!("worker-{worker}").as_bytes()))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let background = thread::spawn({
        let files = files.clone();
        let stop = stop.clone();
        move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let summary = files.writeback_all();
                assert!(summary.failed_inodes.is_empty(), "{summary:?}");
                // Checks the page counts against the caches (debug builds).
                let _ = files.cache_stats();
                rounds += 1;
                // Pacing, not synchronisation: leave the workers room.
                thread::sleep(Duration::from_millis(1));
            }
            rounds
        }
    });
    let workers: Vec<JoinHandle<Vec<u8>>> = inos
        .iter()
        .zip(0..)
        .map(|(&ino, worker)| {
            let files = files.clone();
            thread::spawn(move || run_worker(&files, ino, worker))
        })
        .collect();
    let models: Vec<Vec<u8>> = workers
        .into_iter()
        .map(|worker| {
            worker
                .join()
                .unwrap_or_else(|panic| panic::resume_unwind(panic))
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    let rounds = background
        .join()
        .unwrap_or_else(|panic| panic::resume_unwind(panic));
    assert!(rounds > 0);

    for (&ino, model) in inos.iter().zip(&models) {
        assert_same_bytes(
            &read_bytes(&files, ino, 0, model.len() + PAGE_BYTES),
            model,
            &format!("inode {ino} at the end of the workload"),
        );
    }
    let stats = files.cache_stats();
    assert_eq!(stats.dirty_bytes, 0, "every worker fsynced: {stats:?}");
    assert!(
        stats.evicted_pages > 0,
        "the budget forced no eviction: {stats:?}"
    );
    unmount(&fixture, metadata, files);
    let expected: Vec<(u64, &[u8])> = inos
        .iter()
        .zip(&models)
        .map(|(&ino, model)| (ino, &model[..]))
        .collect();
    assert_contents_after_remount(&fixture, &expected);
}
