//! Getting entries to the device: closing the open entry, writing a
//! buffer once its last reservation is dropped, flushing the device for
//! every waiter at once (group commit), settling (recording durability in
//! a later entry), and the sticky error state a failed write or flush
//! leaves behind.

use super::*;

impl Journal {
    /// Closes the open entry (if any) with `sentinel` and returns its buffer
    /// index if nobody holds a reservation on it, in which case the caller
    /// must call `write_buffer` after dropping the lock.
    fn close_open_entry(&self, inner: &mut Inner, sentinel: u32) -> Option<usize> {
        let closed = self.state.close(sentinel)?;
        let block_size = self.options.region.block_size as usize;
        let meta = &mut inner.buffers[closed.index];
        debug_assert_eq!(meta.status, BufferStatus::Open);
        meta.status = BufferStatus::Closed {
            bytes: closed.bytes,
        };
        let blocks = entry::entry_blocks(closed.bytes as usize, block_size) as u64;
        let seq = meta.seq;
        inner.ring.close_open(seq, blocks);
        self.changed.notify_all();
        closed.unreferenced.then_some(closed.index)
    }

    /// Closes the open entry and, if nobody holds a reservation on it,
    /// writes it with the lock released; returns the lock re-taken.
    pub(super) fn close_and_write<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        sentinel: u32,
    ) -> MutexGuard<'a, Inner> {
        let Some(index) = self.close_open_entry(&mut inner, sentinel) else {
            return inner;
        };
        drop(inner);
        self.write_buffer(index);
        lock(&self.inner)
    }

    /// Writes the entry in buffer `index`, whose last reference was just
    /// dropped. Runs on the thread that dropped it, without locks held.
    pub(super) fn write_buffer(&self, index: usize) {
        let mut inner = lock(&self.inner);
        let meta = inner.buffers[index];
        let BufferStatus::Closed { bytes } = meta.status else {
            debug_assert!(false, "buffer {index} written while {:?}", meta.status);
            return;
        };
        // The entry's own reference on its pin list was taken when the entry
        // opened and is still held here, after the entry closed and its last
        // reservation was released; from here on it is the write's
        // reference, dropped when the write completes. It must not be
        // dropped when the entry closes: a reservation can outlive the close
        // of its entry (a concurrent flush, or a full entry, closes it under
        // the holder's feet), and the holder may still pin the entry's seq
        // for the objects its records change. Were the reference dropped at
        // close, the list could be empty by then, `last_seq` could move past
        // it, and the holder's pin would land on a seq the journal had
        // already given up, so replay would miss its changes. Keeping the
        // reference until the buffer's last reference drops closes that
        // window: a holder pins before it releases, so the list is still
        // here.
        if inner.error.is_some() {
            // Nothing written after a failure may claim durability.
            inner.pins.release_ref(meta.seq);
            inner.buffers[index].status = BufferStatus::Free;
            self.changed.notify_all();
            return;
        }
        // Recorded last_seq never decreases with seq: an entry written after a
        // newer one (buffers finish out of order) must not claim less is needed
        // than that newer entry says, or ring space freed on the strength of
        // this entry's claim could hold what the newer entry still needs.
        let front = inner.pins.advance();
        let last_seq = inner
            .undurable
            .iter()
            .filter(|undurable| undurable.seq > meta.seq)
            .map(|undurable| undurable.last_seq)
            .fold(front, u64::min);
        let block_size = self.options.region.block_size as usize;
        let blocks = entry::entry_blocks(bytes as usize, block_size);
        let header = EntryHeader {
            seq: meta.seq,
            last_seq,
            prev_seq: meta.prev_seq,
            durable_seq: inner.durable_seq,
            payload_bytes: bytes,
            blocks: blocks as u32,
        };
        inner.buffers[index].status = BufferStatus::Writing;
        let pin_drops = inner.pin_drops;
        let needs_preflush = pin_drops > inner.pin_drops_flushed;
        drop(inner);

        // An entry's last_seq tells replay that the objects which pinned
        // older entries were written. Those writes completed before their
        // pins were dropped, but they may still sit in the device's volatile
        // cache; were this entry to reach the disk before them, a crash
        // could keep the claim and lose the objects. So if any pin was
        // dropped since the last completed device flush began, flush first
        // (what bcachefs does with a preflush on journal writes). Entries
        // whose last_seq moved only because nothing pinned them need none.
        let mut result = Ok(());
        let with_claims =
            self.buffer_claims[index].swap(false, std::sync::atomic::Ordering::SeqCst);
        if needs_preflush {
            result = self.device.flush(IoClass::Journal);
            if result.is_ok() {
                let mut inner = lock(&self.inner);
                inner.pin_drops_flushed = inner.pin_drops_flushed.max(pin_drops);
            }
        }
        let offset = self.options.region.start + meta.start_block * block_size as u64;
        if result.is_ok() {
            let mut data = lock(&self.buffer_bytes[index]);
            let image = &mut data[..blocks * block_size];
            entry::seal(image, &header, &self.options.uuid, with_claims);
            result = self.device.write_at(offset, image, IoClass::Journal);
        }

        let mut inner = lock(&self.inner);
        inner.buffers[index].status = BufferStatus::Free;
        inner.pins.release_ref(meta.seq);
        match result {
            Ok(()) => {
                if with_claims {
                    inner.newest_claim_seq = inner.newest_claim_seq.max(meta.seq);
                }
                inner.undurable.push(Undurable {
                    seq: meta.seq,
                    last_seq,
                    durable_seq: header.durable_seq,
                });
                inner.newest_entry = inner.newest_entry.max(meta.seq);
                inner.written_ahead.push(meta.seq);
                inner.written_ahead.sort_unstable();
                while inner.written_ahead.first() == Some(&(inner.written_seq + 1)) {
                    inner.written_ahead.remove(0);
                    inner.written_seq += 1;
                }
                inner.pins.advance();
            }
            Err(error) => self.fail(&mut inner, JournalError::Device(error)),
        }
        self.changed.notify_all();
    }

    /// Enters the error state (once; the first error is kept).
    fn fail(&self, inner: &mut Inner, error: JournalError) {
        if inner.error.is_none() {
            inner.error = Some(error);
        }
        if let Some(index) = self.close_open_entry(inner, OFFSET_ERROR) {
            // Nobody holds it: there is nothing to write after a failure.
            inner.pins.release_ref(inner.buffers[index].seq);
            inner.buffers[index].status = BufferStatus::Free;
        }
        self.changed.notify_all();
    }

    /// Makes every entry up to `seq` durable: closes the open entry if
    /// `seq` is in it, waits for the entries to be written, and flushes the
    /// device unless a flush that began after they were written already did.
    ///
    /// Group commit: callers queue on `flush_lock` *before* closing their
    /// entry, so while one flush runs the open entry keeps filling with the
    /// commits of everyone waiting (and of the flusher's next commit); the
    /// next caller through closes it and one flush serves them all. A lone
    /// committer finds the lock free and pays nothing for this.
    ///
    /// Must not be called while the same thread holds a reservation on an
    /// entry up to `seq`: the entry cannot be written until it is released.
    pub fn flush_seq(&self, seq: u64) -> Result<(), JournalError> {
        if self.durable_or_failed(seq)? {
            return Ok(());
        }
        let mut queued = false;
        let mut lingered = false;
        loop {
            let flushing = match self.flush_lock.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    queued = true;
                    lock(&self.flush_lock)
                }
            };
            let mut inner = lock(&self.inner);
            loop {
                if let Some(error) = &inner.error {
                    return Err(error.sticky());
                }
                let target = seq.min(inner.next_seq - 1);
                if target <= inner.durable_seq {
                    if queued {
                        // Someone else's flush served us: there are several
                        // committers, so the next flusher should wait for them.
                        inner.served_by_others += 1;
                    }
                    return Ok(());
                }
                if inner.written_seq >= target {
                    let outcome = self.flush_device(inner, target);
                    drop(flushing);
                    return outcome;
                }
                let snapshot = self.state.snapshot();
                if !snapshot.is_open() || inner.buffers[snapshot.index()].seq > target {
                    break;
                }
                if !lingered && (queued || inner.served_by_others > 0) {
                    // Other committers are about: they are likely to be back
                    // with their next commit in a moment (one was just
                    // served by a flush, or is the flusher we queued behind).
                    // Give them up to half a flush time to join this entry,
                    // so one flush serves all. A lone committer never waits.
                    lingered = true;
                    let linger = inner.last_flush_time / 2;
                    drop(inner);
                    self.linger_for_joiners(snapshot, linger);
                    inner = lock(&self.inner);
                    continue;
                }
                inner.served_by_others = 0;
                inner = self.close_and_write(inner, OFFSET_CLOSED);
            }
            // The entries up to `target` are closed but not all written:
            // their last reservation holders write them. Wait without
            // holding the flush lock, so that such a holder can itself call
            // flush_seq meanwhile without deadlocking against us.
            drop(flushing);
            let inner = wait(&self.changed, inner);
            drop(inner);
        }
    }

    /// Flushes the device for everything written so far (at least
    /// `target`), under the flush lock, and records what became durable.
    fn flush_device(&self, inner: MutexGuard<'_, Inner>, target: u64) -> Result<(), JournalError> {
        let covered = inner.written_seq;
        let pin_drops = inner.pin_drops;
        drop(inner);
        if let Some(companion) = self.companion.get() {
            companion();
        }
        let started = Instant::now();
        let result = self.device.flush(IoClass::Journal);
        let mut inner = lock(&self.inner);
        inner.last_flush_time = started.elapsed().min(MAX_LINGER * 2);
        match result {
            Ok(()) => {
                debug_assert!(covered >= target);
                inner.durable_seq = inner.durable_seq.max(covered);
                inner.pin_drops_flushed = inner.pin_drops_flushed.max(pin_drops);
                let mut newest_last_seq = 0;
                let mut recorded = inner.recorded_durable_seq;
                inner.undurable.retain(|undurable| {
                    if undurable.seq <= covered {
                        newest_last_seq = newest_last_seq.max(undurable.last_seq);
                        recorded = recorded.max(undurable.durable_seq);
                        false
                    } else {
                        true
                    }
                });
                inner.recorded_durable_seq = recorded;
                inner.ring.set_durable_last_seq(newest_last_seq);
                self.changed.notify_all();
                Ok(())
            }
            Err(error) => {
                let error = JournalError::Device(error);
                self.fail(&mut inner, error.clone());
                Err(error)
            }
        }
    }

    /// Spins until the open entry seen in `seen` takes another reservation,
    /// closes, or `linger` passes. Reservations do not signal (their fast
    /// path is one CAS), so this polls; it runs only when flushers contend,
    /// for at most half a flush time.
    fn linger_for_joiners(&self, seen: state::Snapshot, linger: Duration) {
        let deadline = Instant::now() + linger;
        while Instant::now() < deadline {
            let now = self.state.snapshot();
            if now.index() != seen.index() || now.offset() != seen.offset() {
                return;
            }
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    }

    /// Whether `seq` is durable already; the sticky error if the journal
    /// failed.
    fn durable_or_failed(&self, seq: u64) -> Result<bool, JournalError> {
        let inner = lock(&self.inner);
        if let Some(error) = &inner.error {
            return Err(error.sticky());
        }
        Ok(seq.min(inner.next_seq - 1) <= inner.durable_seq)
    }

    /// Sets what is written right before each commit's device flush (the
    /// event log's pending records), so that flush covers it. Only the
    /// first one set is kept. It runs under the flush lock and must not
    /// call into the journal.
    pub fn set_commit_companion(&self, companion: CommitCompanion) {
        let _ = self.companion.set(companion);
    }

    /// Makes everything reserved so far durable.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.flush_seq(self.newest_reserved())
    }

    /// Makes everything reserved so far durable, and that fact recorded on
    /// the device: [`Journal::settle_through`] the newest seq reserved. Then
    /// every block freed before the call may be reused.
    pub fn settle(&self) -> Result<(), JournalError> {
        self.settle_through(self.newest_reserved())
    }

    /// [`Journal::settle_through`] the newest entry written with data
    /// claims: afterwards no recovery checks a claim made before the call.
    /// Does nothing when that is already so, however often it is called.
    pub fn settle_claims(&self) -> Result<(), JournalError> {
        let newest = lock(&self.inner).newest_claim_seq;
        self.settle_through(newest)
    }

    /// Makes the entries up to `seq` durable and records that on the device:
    /// afterwards [`JournalStatus::recorded_durable_seq`] is at least `seq`.
    /// Costs a second, nearly empty entry and flush when no durable entry
    /// records it yet (the newest entry never records its own durability).
    /// The entry may use the ring's reclaim reserve: settling is what makes
    /// freed space usable.
    pub fn settle_through(&self, seq: u64) -> Result<(), JournalError> {
        if seq == 0 {
            return Ok(());
        }
        self.flush_seq(seq)?;
        if lock(&self.inner).recorded_durable_seq >= seq {
            return Ok(());
        }
        // A padding record: an entry written now records `seq` durable.
        let recorder = {
            let mut reservation = self.reserve_for_reclaim(record_bytes(0))?;
            reservation.append(&[])?;
            reservation.seq()
        };
        self.flush_seq(recorder)
    }

    /// [`JournalStatus::recorded_durable_seq`], without the rest of a status.
    pub fn recorded_durable_seq(&self) -> u64 {
        lock(&self.inner).recorded_durable_seq
    }

    /// Whether everything reserved so far is durable: what [`Journal::flush`]
    /// would have nothing to do for.
    pub fn is_durable(&self) -> bool {
        let newest = self.newest_reserved();
        newest <= lock(&self.inner).durable_seq
    }

    /// The seq of the newest entry holding anything reserved: the open one
    /// unless it is empty. A change committed just now is in it, or in an
    /// older one.
    pub fn newest_reserved(&self) -> u64 {
        let inner = lock(&self.inner);
        let snapshot = self.state.snapshot();
        let open_seq = inner.buffers[snapshot.index()].seq;
        if snapshot.is_open() && snapshot.offset() == 0 {
            open_seq - 1
        } else {
            inner.next_seq - 1
        }
    }
}
