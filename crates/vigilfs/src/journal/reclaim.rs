//! Pins and reclaim: objects holding journalled changes in memory pin
//! their entry's seq; reclaim writes the oldest pinned objects out, then
//! records the advanced `last_seq` in a durable entry, and only then is the
//! ring space below it reused. Reclaim starts below a low watermark and
//! when too many seqs are tracked.

use super::*;

impl Journal {
    /// Pins `seq` for an object holding changes recorded there. Pin while
    /// still holding the reservation the changes were recorded under.
    pub fn pin(&self, seq: u64, object: Arc<dyn PinFlush>) -> Result<PinId, JournalError> {
        lock(&self.inner).pins.add(seq, object)
    }

    /// Drops a pin: the object was written.
    pub fn unpin(&self, pin: PinId) {
        let mut inner = lock(&self.inner);
        if inner.pins.remove(pin) {
            inner.pin_drops += 1;
            inner.pins.advance();
            self.changed.notify_all();
        }
    }

    /// Records that an object was written outside the journal which an
    /// entry about to be written will refer to (a b-tree node at a new
    /// block): the next entry write flushes the device first, as for
    /// dropped pins. File data needs none of this: its entries carry
    /// [`DataClaim`]s instead.
    pub fn order_before_next_entry(&self) {
        let mut inner = lock(&self.inner);
        inner.pin_drops += 1;
    }

    /// The seq `pin` holds, if it is still held.
    pub fn pinned_seq(&self, pin: PinId) -> Option<u64> {
        lock(&self.inner).pins.seq_of(pin)
    }

    /// Writes out every pinned object and records the new `last_seq`
    /// durably: afterwards replay needs nothing older than the newest
    /// entry. Freeze and clean unmount call this.
    pub fn reclaim_all(&self) -> Result<(), JournalError> {
        let newest = lock(&self.inner).next_seq.saturating_sub(1);
        self.reclaim_through(newest)?;
        Ok(())
    }

    /// Frees at least `blocks` of ring space if pins allow: flushes the
    /// oldest pinned objects, then writes and flushes an entry recording
    /// the advanced `last_seq`. Returns whether space was freed.
    pub(super) fn reclaim(&self, blocks: u64) -> Result<bool, JournalError> {
        let through = {
            let inner = lock(&self.inner);
            let by_space = inner.ring.seq_freeing(blocks);
            let by_tracking = (inner.pins.len() > self.options.max_tracked_seqs)
                .then(|| inner.pins.front_seq() + (inner.pins.len() / 2) as u64);
            match by_space.max(by_tracking) {
                Some(seq) => seq,
                None => inner.next_seq.saturating_sub(1),
            }
        };
        self.reclaim_through(through)
    }

    fn reclaim_through(&self, through: u64) -> Result<bool, JournalError> {
        let (pinned, before) = {
            let inner = lock(&self.inner);
            if let Some(error) = &inner.error {
                return Err(error.sticky());
            }
            (
                inner.pins.pins_up_to(through),
                inner.ring.durable_last_seq(),
            )
        };
        for (pin, seq, object) in pinned {
            match object.flush(seq) {
                Ok(()) => {
                    self.unpin(pin);
                    if self.reclaim_room_low() {
                        self.record_reclaim_progress()?;
                    }
                }
                Err(PinFlushError::Declined) => {
                    // Name what has kept every other thread from writing the
                    // object too, if anything did: that, not this thread's
                    // lock, is why the journal is out of room.
                    let inner = lock(&self.inner);
                    let why = match (&inner.last_reclaim_failure, inner.reclaim_failing) {
                        (Some(failure), true) => {
                            format!(
                                "and the latest attempt to write a pinned object failed: {failure}"
                            )
                        }
                        _ => "which this thread cannot do (it holds a lock the write needs)".into(),
                    };
                    return Err(JournalError::PinFlushDeclined { seq, why });
                }
                Err(PinFlushError::Failed(message)) => {
                    let mut inner = lock(&self.inner);
                    inner.reclaim_failures += 1;
                    inner.last_reclaim_failure =
                        Some(format!("the object pinning seq {seq}: {message}"));
                    inner.reclaim_failing = true;
                    return Err(JournalError::PinFlushFailed { seq, message });
                }
            }
        }
        lock(&self.inner).reclaim_failing = false;
        self.record_reclaim_progress()?;
        let after = lock(&self.inner).ring.durable_last_seq();
        Ok(after > before)
    }

    /// Moves last_seq past every seq whose objects are all written, and
    /// makes that durable in a (possibly empty) entry: only then may their
    /// ring space be reused.
    fn record_reclaim_progress(&self) -> Result<(), JournalError> {
        let advanced = {
            let mut inner = lock(&self.inner);
            inner.pins.advance() > inner.ring.durable_last_seq()
        };
        if advanced {
            let seq = self.reserve_at(0, Watermark::Reclaim)?.seq();
            self.flush_seq(seq)?;
        }
        Ok(())
    }

    /// Whether a reclaim pass should record its progress before it writes
    /// more objects. Each object it writes journals where it went, and a
    /// long pass over a small ring could fill the part kept for reclaim
    /// with those records before any space is given back; recording
    /// progress frees the seqs written so far first. Three entries: the
    /// open one, the progress entry, and what the ring's end may waste.
    fn reclaim_room_low(&self) -> bool {
        lock(&self.inner).ring.free_blocks() < 3 * self.full_entry_blocks()
    }

    /// Blocks a full entry takes in the ring.
    pub(super) fn full_entry_blocks(&self) -> u64 {
        entry::entry_blocks(
            self.options.entry_bytes as usize,
            self.options.region.block_size as usize,
        ) as u64
    }

    /// Ring space a reclaim for one more entry frees: the entry, reclaim's
    /// own entry recording the new last_seq, and the share kept for
    /// reclaim; at least twice the low watermark (hysteresis, so reclaim
    /// runs in batches).
    pub(super) fn reclaim_target(&self, inner: &Inner) -> u64 {
        let low_watermark = self.low_watermark(inner.ring.total_blocks());
        (2 * self.full_entry_blocks() + self.reclaim_reserve_blocks(inner)).max(low_watermark * 2)
    }

    pub(super) fn reclaim_reserve_blocks(&self, inner: &Inner) -> u64 {
        let total = inner.ring.total_blocks();
        let entry_blocks = self.full_entry_blocks();
        // Room for one full entry even when the ring's end wastes up to
        // another entry's worth: reclaim's own entry must always fit.
        (total / 64).max(2 * entry_blocks).min(total / 4)
    }

    /// Whether the latest reclaim failed to write a pinned object and none
    /// has written every object it reached since.
    pub fn reclaim_failing(&self) -> bool {
        lock(&self.inner).reclaim_failing
    }

    /// Whether reclaim should run now (free space below the watermark or
    /// too many seqs tracked); the engine's background reclaim asks this.
    pub fn wants_reclaim(&self) -> bool {
        let inner = lock(&self.inner);
        let total = inner.ring.total_blocks();
        inner.ring.free_blocks() < self.low_watermark(total)
            || inner.pins.len() > self.options.max_tracked_seqs
    }

    /// Runs reclaim for room for one more entry, whatever the watermark:
    /// for a caller whose reservation found no room while it held a lock
    /// the pinned objects' writes need, and who has since let go of it.
    pub fn reclaim_for_entry(&self) -> Result<bool, JournalError> {
        let wanted = self.reclaim_target(&lock(&self.inner));
        self.reclaim(wanted)
    }

    /// Runs reclaim if [`Journal::wants_reclaim`] says so, freeing up to
    /// twice the low watermark.
    pub fn reclaim_if_needed(&self) -> Result<bool, JournalError> {
        if !self.wants_reclaim() {
            return Ok(false);
        }
        let total = lock(&self.inner).ring.total_blocks();
        self.reclaim(self.low_watermark(total) * 2)
    }

    /// Free blocks below which reclaim starts: the configured share of the
    /// ring, but at least what opening an entry needs (its own room, the
    /// share kept for reclaim, and one entry of slack), so that callers
    /// who reclaim before taking their own locks rarely leave it to the
    /// reservation itself.
    pub(super) fn low_watermark(&self, total: u64) -> u64 {
        let entry_blocks = self.full_entry_blocks();
        (total * u64::from(self.options.reclaim_below_64ths) / 64).max(4 * entry_blocks)
    }
}
