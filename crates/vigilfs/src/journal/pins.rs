//! The FIFO of pin lists: what keeps each journal entry needed.
//!
//! There is one pin list per entry, from `last_seq` (the front) to the
//! newest entry. Seqs without an entry (cut off at replay, or skipped
//! because a damaged log named a higher seq) have no list, hold nothing
//! and take no memory, however wide the gap. A list stays while anything
//! holds it:
//!
//! * `refs`: the entry's own reference, taken when it opens, kept until its
//!   buffer's last reservation is released, and then handed to the write of
//!   the entry, which releases it once the entry is on the device (see
//!   `Journal::write_buffer`); and at mount a replay hold on each replayed
//!   entry until the engine has re-pinned what it replayed;
//! * pins: objects holding changes recorded in that entry but not yet
//!   written elsewhere (dirty b-tree nodes). Each pin carries the callback
//!   that writes its object.
//!
//! The front advances past lists with no refs and no pins, so past entries
//! that are written and unpinned; the front's seq is `last_seq`, the oldest
//! entry replay still needs.
//! Adding a pin below the front is refused: that seq was already given up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{JournalError, PinFlush, PinId};

#[derive(Debug, Default)]
struct PinList {
    refs: u32,
    pins: u32,
}

struct PinRecord {
    seq: u64,
    flush: Arc<dyn PinFlush>,
}

/// The FIFO and the pins in it.
pub(crate) struct PinFifo {
    front_seq: u64,
    lists: BTreeMap<u64, PinList>,
    pins: HashMap<PinId, PinRecord>,
    next_pin: u64,
}

impl PinFifo {
    /// An empty FIFO whose next entry will be `front_seq`.
    pub(crate) fn new(front_seq: u64) -> PinFifo {
        PinFifo {
            front_seq,
            lists: BTreeMap::new(),
            pins: HashMap::new(),
            next_pin: 1,
        }
    }

    /// `last_seq`: the oldest seq still needed (or the next seq if none).
    pub(crate) fn front_seq(&self) -> u64 {
        self.front_seq
    }

    /// Pin lists the FIFO currently holds.
    pub(crate) fn len(&self) -> usize {
        self.lists.len()
    }

    fn end_seq(&self) -> u64 {
        self.lists
            .last_key_value()
            .map_or(self.front_seq, |(&seq, _)| seq + 1)
    }

    fn list_mut(&mut self, seq: u64) -> Option<&mut PinList> {
        self.lists.get_mut(&seq)
    }

    /// Appends the list for a newly opened entry, holding the entry's own
    /// reference.
    pub(crate) fn push_open(&mut self, seq: u64) {
        self.push(seq, PinList { refs: 1, pins: 0 });
    }

    /// Appends the list of an entry found at replay: already written, and
    /// held until `release_replay_holds`.
    pub(crate) fn push_replayed(&mut self, seq: u64) {
        self.push(seq, PinList { refs: 1, pins: 0 });
    }

    fn push(&mut self, seq: u64, list: PinList) {
        if self.lists.is_empty() && seq > self.front_seq {
            self.front_seq = seq;
        }
        debug_assert!(seq >= self.end_seq(), "pin lists are pushed in seq order");
        self.lists.insert(seq, list);
    }

    /// Drops the entry's own reference (after its write) or a replay hold.
    pub(crate) fn release_ref(&mut self, seq: u64) {
        let list = self
            .list_mut(seq)
            .expect("a referenced pin list cannot have been reclaimed");
        debug_assert!(list.refs > 0);
        list.refs -= 1;
    }

    /// Drops the replay holds on the replayed entries `seqs`.
    pub(crate) fn release_replay_holds(&mut self, seqs: &[u64]) {
        for &seq in seqs {
            self.release_ref(seq);
        }
    }

    /// Pins `seq` for an object whose changes it records.
    pub(crate) fn add(
        &mut self,
        seq: u64,
        flush: Arc<dyn PinFlush>,
    ) -> Result<PinId, JournalError> {
        let last_seq = self.front_seq;
        let newest = self.end_seq();
        if !(last_seq..newest).contains(&seq) {
            return Err(JournalError::PinOutOfRange {
                seq,
                last_seq,
                newest: newest.saturating_sub(1),
            });
        }
        // A seq in a gap gets a list of its own, as any seq in range does.
        self.lists.entry(seq).or_default().pins += 1;
        let id = PinId(self.next_pin);
        self.next_pin += 1;
        self.pins.insert(id, PinRecord { seq, flush });
        Ok(id)
    }

    /// Drops a pin. Dropping one that is already gone is harmless (its
    /// object may race with reclaim to release it).
    pub(crate) fn remove(&mut self, id: PinId) -> bool {
        let Some(record) = self.pins.remove(&id) else {
            return false;
        };
        if let Some(list) = self.list_mut(record.seq) {
            list.pins -= 1;
        }
        true
    }

    /// The seq a pin holds, if it still exists.
    pub(crate) fn seq_of(&self, id: PinId) -> Option<u64> {
        self.pins.get(&id).map(|record| record.seq)
    }

    /// Advances the front past entries nothing holds; returns `last_seq`.
    pub(crate) fn advance(&mut self) -> u64 {
        while let Some(front) = self.lists.first_entry() {
            // A gap before the front list holds nothing either.
            self.front_seq = *front.key();
            if front.get().refs > 0 || front.get().pins > 0 {
                break;
            }
            front.remove();
            self.front_seq += 1;
        }
        self.front_seq
    }

    /// Pins at seqs up to and including `seq`, oldest first: what reclaim
    /// flushes to move `last_seq` past `seq`.
    pub(crate) fn pins_up_to(&self, seq: u64) -> Vec<(PinId, u64, Arc<dyn PinFlush>)> {
        let mut found: Vec<_> = self
            .pins
            .iter()
            .filter(|(_, record)| record.seq <= seq)
            .map(|(id, record)| (*id, record.seq, Arc::clone(&record.flush)))
            .collect();
        found.sort_by_key(|(id, seq, _)| (*seq, *id));
        found
    }

    /// Number of pins held.
    pub(crate) fn pin_count(&self) -> usize {
        self.pins.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoFlush;
    impl PinFlush for NoFlush {
        fn flush(&self, _seq: u64) -> Result<(), crate::journal::PinFlushError> {
            Ok(())
        }
    }

    #[test]
    fn front_waits_for_write_references_and_pins() {
        let mut fifo = PinFifo::new(1);
        fifo.push_open(1);
        fifo.push_open(2);
        let pin = fifo.add(2, Arc::new(NoFlush)).unwrap();
        assert_eq!(fifo.advance(), 1, "entry 1 is not written yet");
        fifo.release_ref(1);
        assert_eq!(fifo.advance(), 2);
        fifo.release_ref(2);
        assert_eq!(fifo.advance(), 2, "pinned");
        assert!(fifo.remove(pin));
        assert!(!fifo.remove(pin));
        assert_eq!(fifo.advance(), 3);
    }

    #[test]
    fn pin_below_front_is_refused() {
        let mut fifo = PinFifo::new(1);
        fifo.push_open(1);
        fifo.release_ref(1);
        fifo.advance();
        assert!(matches!(
            fifo.add(1, Arc::new(NoFlush)),
            Err(JournalError::PinOutOfRange {
                seq: 1,
                last_seq: 2,
                ..
            })
        ));
    }

    #[test]
    fn gaps_from_replay_do_not_hold_the_front() {
        let mut fifo = PinFifo::new(3);
        fifo.push_replayed(3);
        fifo.push_open(7);
        assert_eq!(fifo.len(), 2);
        fifo.release_replay_holds(&[3]);
        assert_eq!(fifo.advance(), 7);
    }

    /// A damaged log may name a seq far past the last entry (the
    /// superblock's clean-unmount seq, a stray header): the gap costs
    /// nothing (it once cost a list per seq: 2^40 of them).
    #[test]
    fn a_gap_of_two_to_the_forty_seqs_costs_nothing() {
        let mut fifo = PinFifo::new(5);
        fifo.push_replayed(5);
        fifo.push_open(1 << 40);
        assert_eq!(fifo.len(), 2);
        let pin = fifo.add(1 << 40, Arc::new(NoFlush)).unwrap();
        assert!(fifo.add((1 << 40) + 1, Arc::new(NoFlush)).is_err());
        fifo.release_replay_holds(&[5]);
        assert_eq!(fifo.advance(), 1 << 40);
        fifo.release_ref(1 << 40);
        assert!(fifo.remove(pin));
        assert_eq!(fifo.advance(), (1 << 40) + 1);
    }
}
