//! Reservations: room in the open entry. The fast path is one CAS on the
//! packed state word (`state.rs`); the slow path, under `inner`, opens the
//! next entry, waits for a free buffer or for a thaw, and reclaims ring
//! space when the ring is short, keeping the reclaim watermark's share for
//! reservations made on reclaim's behalf.

use super::*;

/// Room in the open entry. Append records, then drop it; dropping releases
/// the reservation (and may write the entry).
pub struct Reservation<'journal> {
    journal: &'journal Journal,
    index: usize,
    seq: u64,
    cursor: usize,
    end: usize,
}

impl Reservation<'_> {
    /// The seq of the entry this reservation is in: pin it for the objects
    /// the records change, before dropping the reservation.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends one record.
    pub fn append(&mut self, record: &[u8]) -> Result<(), JournalError> {
        self.put(record_bytes(record.len()), |into| {
            entry::encode_record(record, into);
        })
    }

    /// Appends a data claim: `claim`'s blocks were written (the writes
    /// completed) before this call, and the records of this reservation
    /// refer to them. Reserve [`DataClaim::record_bytes`] for it.
    pub fn claim(&mut self, claim: &DataClaim) -> Result<(), JournalError> {
        self.put(claim.record_bytes(), |into| claim.encode(into))?;
        self.journal.buffer_claims[self.index].store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Encodes `span` bytes at the cursor with `encode`, if they fit.
    fn put(&mut self, span: usize, encode: impl FnOnce(&mut [u8])) -> Result<(), JournalError> {
        let remaining = self.end - self.cursor;
        if span > remaining {
            return Err(JournalError::ReservationOverflow {
                record_bytes: span,
                remaining,
            });
        }
        let mut bytes = lock(&self.journal.buffer_bytes[self.index]);
        let at = HEADER_BYTES + self.cursor;
        encode(&mut bytes[at..at + span]);
        self.cursor += span;
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.cursor < self.end {
            // Unused room reads back as padding records.
            let mut bytes = lock(&self.journal.buffer_bytes[self.index]);
            bytes[HEADER_BYTES + self.cursor..HEADER_BYTES + self.end].fill(0);
        }
        if self.journal.state.put(self.index) {
            self.journal.write_buffer(self.index);
        }
    }
}

impl Journal {
    /// Reserves `bytes` (a sum of [`record_bytes`]) in the open entry,
    /// opening one or reclaiming space if needed.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation<'_>, JournalError> {
        self.reserve_at(bytes, Watermark::Normal)
    }

    /// Like [`Journal::reserve`], for a [`PinFlush`] callback that must
    /// journal what its write did (a b-tree node's new location): it may use
    /// the part of the ring normal reservations leave free, so writing out
    /// pinned objects can always make progress when the journal is full.
    pub fn reserve_for_reclaim(&self, bytes: usize) -> Result<Reservation<'_>, JournalError> {
        self.reserve_at(bytes, Watermark::Reclaim)
    }

    /// Like [`Journal::reserve_for_reclaim`], for objects written in bulk
    /// outside a reclaim pass (to relieve memory, or all of them before a
    /// checkpoint): refused with [`JournalError::Full`] while a reclaim
    /// pass would no longer find room for its own entry after this one.
    /// On that error, let go of the objects' locks, run
    /// [`Journal::reclaim_for_entry`] and try again.
    pub fn reserve_in_bulk(&self, bytes: usize) -> Result<Reservation<'_>, JournalError> {
        self.reserve_at(bytes, Watermark::Bulk)
    }

    /// Appends `records` as one atomic unit and returns its seq. Not
    /// durable until [`Journal::flush_seq`] covers the seq.
    pub fn commit(&self, records: &[&[u8]]) -> Result<u64, JournalError> {
        let bytes = records
            .iter()
            .map(|record| record_bytes(record.len()))
            .sum();
        let mut reservation = self.reserve(bytes)?;
        for record in records {
            reservation.append(record)?;
        }
        Ok(reservation.seq())
    }

    pub(super) fn reserve_at(
        &self,
        bytes: usize,
        watermark: Watermark,
    ) -> Result<Reservation<'_>, JournalError> {
        // Reservations are whole records: keep every one 8-byte aligned, so
        // the next one starts on a record boundary (the padding reads back
        // as empty records).
        let bytes = bytes.next_multiple_of(entry::RECORD_ALIGN);
        let limit = self.options.entry_bytes as usize;
        if bytes > limit {
            return Err(JournalError::TooLarge {
                bytes: bytes as u64,
                limit: limit as u64,
            });
        }
        let wanted = bytes as u32;
        loop {
            if let Some(reserved) = self.state.try_reserve(wanted) {
                let seq =
                    self.buffer_seqs[reserved.index].load(std::sync::atomic::Ordering::Acquire);
                let start = reserved.offset as usize;
                return Ok(Reservation {
                    journal: self,
                    index: reserved.index,
                    seq,
                    cursor: start,
                    end: start + bytes,
                });
            }
            self.reserve_slow(wanted, watermark)?;
        }
    }

    /// Makes the next fast-path attempt able to succeed, or fails.
    fn reserve_slow(&self, bytes: u32, watermark: Watermark) -> Result<(), JournalError> {
        let mut inner = lock(&self.inner);
        let mut reclaim_rounds = 0;
        loop {
            if let Some(error) = &inner.error {
                return Err(error.sticky());
            }
            if inner.blocked && watermark == Watermark::Normal {
                inner = wait(&self.changed, inner);
                continue;
            }
            let snapshot = self.state.snapshot();
            if snapshot.is_open() {
                if snapshot.refs(snapshot.index()) >= state::MAX_BUFFER_REFS {
                    // Every reference of this buffer is taken: move on to the
                    // next entry rather than wait for releases, which do not
                    // signal.
                    inner = self.close_and_write(inner, OFFSET_CLOSED);
                    continue;
                }
                if snapshot.offset().saturating_add(bytes) <= self.state.limit() {
                    // Someone else made room meanwhile: retry the fast path.
                    return Ok(());
                }
                // The open entry is full: close it so the next one opens.
                inner = self.close_and_write(inner, OFFSET_CLOSED);
                continue;
            }
            if snapshot.offset() == OFFSET_BLOCKED {
                // Frozen: reclaim's reservations wait for the thaw too, so
                // nothing is written while the journal is blocked.
                inner = wait(&self.changed, inner);
                continue;
            }
            // CLOSED: open the next entry.
            let seq = inner.next_seq;
            let index = buffer_index(seq);
            if inner.buffers[index].status != BufferStatus::Free {
                inner = wait(&self.changed, inner);
                continue;
            }
            // Every entry gets room for a full entry, so the size limit the
            // fast path checks is the same for every entry: a reserver that
            // pairs the word of one entry with the limit it read for another
            // (possible if it sleeps while the buffers rotate back to the
            // same word) still cannot overrun the room its entry has.
            let needed_blocks = self.full_entry_blocks();
            debug_assert!(u64::from(bytes) <= u64::from(self.options.entry_bytes));
            let total = inner.ring.total_blocks();
            let low_watermark = self.low_watermark(total);
            let low_on_space = inner.ring.free_blocks() < low_watermark;
            let over_tracking = inner.pins.len() > self.options.max_tracked_seqs;
            let placement = match watermark {
                Watermark::Normal => inner
                    .ring
                    .place(needed_blocks, self.reclaim_reserve_blocks(&inner)),
                Watermark::Bulk => inner.ring.place_leaving_room_for_another(needed_blocks),
                Watermark::Reclaim => inner.ring.place(needed_blocks, 0),
            };
            let wants_reclaim = low_on_space || over_tracking || placement.is_none();
            if watermark == Watermark::Normal
                && wants_reclaim
                && reclaim_rounds < MAX_RECLAIM_ROUNDS
            {
                // Below the low watermark: write out the oldest pinned
                // objects until there is room again (`reclaim_target`).
                reclaim_rounds += 1;
                let could_place = placement.is_some();
                let wanted = self.reclaim_target(&inner);
                drop(inner);
                let outcome = self.reclaim(wanted);
                inner = lock(&self.inner);
                match outcome {
                    // Another round only if this one freed something.
                    Ok(true) if !could_place => continue,
                    Ok(_) => reclaim_rounds = MAX_RECLAIM_ROUNDS,
                    Err(error) if !could_place => return Err(error),
                    Err(_) => {
                        // Early reclaim failed but there is still room: go
                        // on (`reclaim_through` kept the failure for the
                        // status).
                        reclaim_rounds = MAX_RECLAIM_ROUNDS;
                    }
                }
                continue;
            }
            let Some((start_block, room_blocks)) = placement else {
                return Err(JournalError::Full {
                    needed_blocks,
                    free_blocks: inner.ring.free_blocks(),
                });
            };
            let room_blocks = room_blocks.min(needed_blocks);
            let entry_limit = self.options.entry_bytes;
            let prev_seq = inner.prev_seq;
            inner.buffers[index] = BufferMeta {
                status: BufferStatus::Open,
                seq,
                prev_seq,
                start_block,
            };
            inner.ring.reserve_open(seq, start_block, room_blocks);
            inner.pins.push_open(seq);
            inner.prev_seq = seq;
            inner.next_seq = seq + 1;
            self.buffer_seqs[index].store(seq, std::sync::atomic::Ordering::Release);
            self.state.open(index, entry_limit);
            return Ok(());
        }
    }
}
