//! Space accounting for the journal region, used as a ring of blocks.
//!
//! Entries are laid down one after another from `head`. An entry never
//! wraps: if it does not fit before the end of the region, the blocks left
//! there are wasted and the entry starts at block 0; the waste is charged
//! to that entry's span, so freeing the entry frees the waste too.
//!
//! Invariant: the blocks of every entry at or after `durable_last_seq` —
//! the `last_seq` recorded in the newest durable entry — are never handed
//! out again. That keeps, at every instant, the newest durable entry and
//! every entry it needs on the device, whatever a crash drops.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    seq: u64,
    /// Blocks charged, from where `head` was to the end of the entry.
    blocks: u64,
    /// Where the entry itself starts, and its length: what scrub reads.
    start: u64,
    entry_blocks: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpenSpan {
    seq: u64,
    start: u64,
    wasted: u64,
}

/// The ring. Block numbers are relative to the region start.
#[derive(Clone, Debug)]
pub(crate) struct Ring {
    total: u64,
    head: u64,
    live: VecDeque<Span>,
    used: u64,
    open: Option<OpenSpan>,
    durable_last_seq: u64,
}

impl Ring {
    pub(crate) fn new(total: u64) -> Ring {
        Ring {
            total,
            head: 0,
            live: VecDeque::new(),
            used: 0,
            open: None,
            durable_last_seq: 0,
        }
    }

    pub(crate) fn total_blocks(&self) -> u64 {
        self.total
    }

    pub(crate) fn free_blocks(&self) -> u64 {
        self.total - self.used
    }

    /// Records an entry found at replay. Replayed entries are pushed in
    /// seq order; their spans are approximated as contiguous from the first
    /// one, which can only over-count (waste before a wrap) and so is safe.
    pub(crate) fn push_written(&mut self, seq: u64, start_block: u64, blocks: u64) {
        let span = match self.live.is_empty() {
            true => blocks,
            false => (start_block + blocks + self.total - self.head) % self.total,
        };
        let span = if span == 0 { blocks } else { span };
        self.live.push_back(Span {
            seq,
            blocks: span,
            start: start_block,
            entry_blocks: blocks,
        });
        self.used = (self.used + span).min(self.total);
        self.head = (start_block + blocks) % self.total;
    }

    pub(crate) fn set_head(&mut self, head: u64) {
        self.head = head % self.total;
    }

    /// Where a new entry needing at least `needed` blocks can go, leaving
    /// `keep_free` blocks untouched: `(start, room)` where room ≥ needed is
    /// how far the entry may grow.
    pub(crate) fn place(&self, needed: u64, keep_free: u64) -> Option<(u64, u64)> {
        placement(self.total, self.head, self.used, needed, keep_free)
    }

    /// [`Ring::place`] for an entry that must leave room to place one more
    /// of `needed` blocks after it, wherever the ring's end falls: the entry
    /// reclaim writes to record its progress.
    pub(crate) fn place_leaving_room_for_another(&self, needed: u64) -> Option<(u64, u64)> {
        let (start, room) = self.place(needed, 0)?;
        let wasted = if start == self.head {
            0
        } else {
            self.total - self.head
        };
        let used_after = self.used + wasted + needed;
        let head_after = (start + needed) % self.total;
        placement(self.total, head_after, used_after, needed, 0)?;
        Some((start, room))
    }

    /// Notes the open entry's placement (from [`Ring::place`]).
    pub(crate) fn reserve_open(&mut self, seq: u64, start: u64, _room: u64) {
        let wasted = if start == self.head {
            0
        } else {
            self.total - self.head
        };
        self.open = Some(OpenSpan { seq, start, wasted });
    }

    /// The open entry closed with `blocks` blocks: charge them.
    pub(crate) fn close_open(&mut self, seq: u64, blocks: u64) {
        let open = self.open.take().expect("closing an entry that was opened");
        debug_assert_eq!(open.seq, seq);
        let span = open.wasted + blocks;
        self.live.push_back(Span {
            seq,
            blocks: span,
            start: open.start,
            entry_blocks: blocks,
        });
        self.used += span;
        self.head = (open.start + blocks) % self.total;
    }

    /// The newest durable entry recorded `last_seq`: everything older may
    /// be overwritten.
    pub(crate) fn set_durable_last_seq(&mut self, last_seq: u64) {
        if last_seq <= self.durable_last_seq {
            return;
        }
        self.durable_last_seq = last_seq;
        while let Some(front) = self.live.front() {
            if front.seq >= last_seq {
                break;
            }
            self.used -= front.blocks;
            self.live.pop_front();
        }
    }

    /// The live entries, oldest first: (seq, first block, blocks).
    pub(crate) fn live_entries(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.live
            .iter()
            .map(|span| (span.seq, span.start, span.entry_blocks))
    }

    pub(crate) fn durable_last_seq(&self) -> u64 {
        self.durable_last_seq
    }

    /// The seq up to which entries must be released to free `blocks`
    /// (None if even freeing everything would not).
    pub(crate) fn seq_freeing(&self, blocks: u64) -> Option<u64> {
        let mut freed = self.free_blocks();
        for span in &self.live {
            if freed >= blocks {
                break;
            }
            freed += span.blocks;
            if freed >= blocks {
                return Some(span.seq);
            }
        }
        (freed >= blocks).then(|| self.live.back().map_or(0, |span| span.seq))
    }
}

/// Where an entry of `needed` blocks goes in a ring of `total` blocks whose
/// next entry would start at `head` with `used` blocks live (the oldest
/// live block is `used` behind `head`), leaving `keep_free` untouched.
fn placement(total: u64, head: u64, used: u64, needed: u64, keep_free: u64) -> Option<(u64, u64)> {
    let budget = (total - used).checked_sub(keep_free)?;
    if budget < needed {
        return None;
    }
    let to_end = total - head;
    let tail = (head + total - used % total) % total;
    if used == 0 || tail <= head {
        if to_end >= needed {
            return Some((head, to_end.min(budget)));
        }
        let after_waste = budget - to_end;
        let room = after_waste.min(tail);
        (room >= needed).then_some((0, room))
    } else {
        let room = (tail - head).min(budget);
        (room >= needed).then_some((head, room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fill_then_wrap_charging_the_waste() {
        let mut ring = Ring::new(10);
        let (start, room) = ring.place(4, 0).unwrap();
        assert_eq!((start, room), (0, 10));
        ring.reserve_open(1, start, room);
        ring.close_open(1, 4);
        let (start, _) = ring.place(4, 0).unwrap();
        assert_eq!(start, 4);
        ring.reserve_open(2, start, 4);
        ring.close_open(2, 4);
        assert_eq!(ring.free_blocks(), 2);
        assert_eq!(ring.place(3, 0), None);
        ring.set_durable_last_seq(2);
        assert_eq!(ring.free_blocks(), 6);
        // 2 blocks left at the end are too few: wrap to 0, wasting them.
        let (start, room) = ring.place(3, 0).unwrap();
        assert_eq!((start, room), (0, 4));
        ring.reserve_open(3, start, room);
        ring.close_open(3, 3);
        assert_eq!(ring.free_blocks(), 1);
        ring.set_durable_last_seq(3);
        assert_eq!(ring.free_blocks(), 5);
    }

    #[test]
    fn placement_respects_the_kept_free_blocks() {
        let ring = Ring::new(16);
        assert_eq!(ring.place(4, 12), Some((0, 4)));
        assert_eq!(ring.place(5, 12), None);
    }

    #[test]
    fn an_entry_leaves_room_for_another_exactly_when_the_next_one_would_fit() {
        // Every ring of up to 12 blocks reached by a run of entries, each
        // asked for every size: the answer must be what placing the entry
        // and then the next one really does (waste at the end included).
        for total in 2..=12u64 {
            for first in 0..total {
                let mut ring = Ring::new(total);
                ring.set_head(first);
                for (seq, size) in (1u64..).zip([1u64, 2, 1, 3, 2, 1]) {
                    for needed in 1..=total {
                        let expected = ring.place(needed, 0).filter(|&(start, room)| {
                            let mut after = ring.clone();
                            after.reserve_open(99, start, room);
                            after.close_open(99, needed);
                            after.place(needed, 0).is_some()
                        });
                        assert_eq!(
                            ring.place_leaving_room_for_another(needed),
                            expected,
                            "total {total}, first {first}, seq {seq}, needed {needed}"
                        );
                    }
                    let Some((start, room)) = ring.place(size, 0) else {
                        break;
                    };
                    ring.reserve_open(seq, start, room);
                    ring.close_open(seq, size);
                }
            }
        }
    }

    #[test]
    fn live_entries_are_never_overlapped() {
        let mut ring = Ring::new(8);
        let mut seq = 1;
        let mut occupied: Vec<(u64, u64, u64)> = Vec::new();
        for size in [3u64, 2, 3, 1, 2, 3, 2, 1, 3, 3, 2] {
            let Some((start, room)) = ring.place(size, 0) else {
                ring.set_durable_last_seq(seq);
                occupied.retain(|&(s, _, _)| s >= seq);
                continue;
            };
            for &(_, other_start, other_blocks) in &occupied {
                assert!(start + size <= other_start || other_start + other_blocks <= start);
            }
            ring.reserve_open(seq, start, room);
            ring.close_open(seq, size);
            occupied.push((seq, start, size));
            if seq % 2 == 0 {
                ring.set_durable_last_seq(seq - 1);
                occupied.retain(|&(s, _, _)| s >= seq - 1);
            }
            seq += 1;
        }
    }
}
