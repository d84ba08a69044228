//! The node cache: every node in memory, found by slot or by block, within a memory budget.
//!
//! Nodes live in a slab of slots; `by_block` finds the node that lives (or, if dirty, last
//! lived) at a block, which is how a parent's child pointer leads to its child in memory.
//! Each node carries its estimated heap cost; the cache keeps the sum. Invariants:
//!
//! * every cached node has a block, and `by_block` maps it to the node's slot;
//! * a clean node's entries equal what its block holds, so it can be dropped at any time;
//! * a dirty node holds exactly one journal pin, at the seq of its oldest unwritten change,
//!   and is never evicted (only written, which makes it clean);
//! * roots are never evicted.
//!
//! Eviction is CLOCK: a node used since the hand last passed gets a second chance. Dirty
//! nodes under pressure are written back by the writeback module, then evicted.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::node::{heap_bytes, Body, LeafEntry, NodeImage, NODE_FIXED_MEMORY};
use crate::journal::PinId;

/// A multiplicative hasher for block numbers: they are already well spread and not chosen by
/// an adversary, so SipHash's cost buys nothing here.
#[derive(Default)]
pub struct BlockHasher(u64);

impl Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (value ^ (value >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The journal pin of a dirty node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyPin {
    /// Seq of the oldest change not yet written.
    pub seq: u64,
    /// The pin.
    pub pin: PinId,
}

/// A cached node.
#[derive(Debug)]
pub struct CachedNode {
    /// Bounds, level, tree and entries.
    pub image: NodeImage,
    /// Where it lives on disk (its last written copy, if dirty).
    pub block: u64,
    /// Set while it holds changes its block does not.
    pub dirty: Option<DirtyPin>,
    /// Identifies this node across slot reuse (pins name slot and serial).
    pub serial: u64,
    /// Encoded bytes of its entries.
    pub encoded: usize,
    /// Estimated heap bytes.
    pub memory: usize,
    /// Used since the clock hand last passed.
    pub referenced: bool,
}

impl CachedNode {
    fn recount(&mut self) {
        self.encoded = self.image.body.encoded_bytes();
        self.memory = NODE_FIXED_MEMORY
            + heap_bytes(self.image.lower.len())
            + self
                .image
                .upper
                .as_ref()
                .map_or(0, |upper| heap_bytes(upper.len()))
            + self.image.body.memory_bytes();
    }

    /// Whether it is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.image.level == 0
    }

    /// Interior entries (empty for a leaf).
    pub fn children(&self) -> &[(Box<[u8]>, u64)] {
        match &self.image.body {
            Body::Interior(entries) => entries,
            Body::Leaf(_) => &[],
        }
    }
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    slots: Vec<Option<CachedNode>>,
    free_slots: Vec<usize>,
    by_block: HashMap<u64, usize, BuildHasherDefault<BlockHasher>>,
    memory: usize,
    budget: usize,
    hand: usize,
    next_serial: u64,
    dirty: usize,
    /// Where the dirty count is published for the allocator, which keeps
    /// a block back for each (see [`NodeAllocator::dirty_node_gauge`]).
    ///
    /// [`NodeAllocator::dirty_node_gauge`]: super::NodeAllocator::dirty_node_gauge
    dirty_gauge: Option<Arc<AtomicU64>>,
}

impl Cache {
    /// An empty cache of `budget` bytes, publishing its dirty count in
    /// `dirty_gauge` if given.
    pub fn new(budget: usize, dirty_gauge: Option<Arc<AtomicU64>>) -> Cache {
        Cache {
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_block: HashMap::default(),
            memory: 0,
            budget,
            hand: 0,
            next_serial: 1,
            dirty: 0,
            dirty_gauge,
        }
    }

    fn publish_dirty(&self) {
        if let Some(gauge) = &self.dirty_gauge {
            gauge.store(self.dirty as u64, Ordering::Release);
        }
    }

    /// Adds a clean node that lives at `block`; returns its slot.
    pub fn insert(&mut self, image: NodeImage, block: u64) -> usize {
        let mut node = CachedNode {
            image,
            block,
            dirty: None,
            serial: self.next_serial,
            encoded: 0,
            memory: 0,
            referenced: true,
        };
        self.next_serial += 1;
        node.recount();
        self.memory += node.memory;
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot] = Some(node);
                slot
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        };
        let previous = self.by_block.insert(block, slot);
        debug_assert!(previous.is_none(), "block {block} cached twice");
        slot
    }

    /// Drops a node from the cache (evicted or replaced); returns it.
    pub fn remove(&mut self, slot: usize) -> CachedNode {
        let node = self.slots[slot].take().expect("removing an empty slot");
        self.memory -= node.memory;
        if node.dirty.is_some() {
            self.dirty -= 1;
            self.publish_dirty();
        }
        if self.by_block.get(&node.block) == Some(&slot) {
            self.by_block.remove(&node.block);
        }
        self.free_slots.push(slot);
        node
    }

    /// Says that the node in `slot` now lives at `block`, just written with its entries: it
    /// is clean and gets a new serial (pins naming the old one find nothing). Returns the old
    /// block and the pin the node held if it was dirty; the caller releases both.
    pub fn move_to_block(&mut self, slot: usize, block: u64) -> (u64, Option<DirtyPin>) {
        let node = self.slots[slot].as_mut().expect("empty slot");
        let old_block = std::mem::replace(&mut node.block, block);
        let pin = node.dirty.take();
        node.serial = self.next_serial;
        node.referenced = true;
        self.next_serial += 1;
        if self.by_block.get(&old_block) == Some(&slot) {
            self.by_block.remove(&old_block);
        }
        let previous = self.by_block.insert(block, slot);
        debug_assert!(previous.is_none(), "block {block} cached twice");
        if pin.is_some() {
            self.dirty -= 1;
            self.publish_dirty();
        }
        (old_block, pin)
    }

    /// The node in `slot`.
    pub fn node(&self, slot: usize) -> &CachedNode {
        self.slots[slot].as_ref().expect("empty slot")
    }

    /// The node in `slot`, if that slot still holds the node with `serial`.
    pub fn find(&self, slot: usize, serial: u64) -> Option<&CachedNode> {
        self.slots
            .get(slot)?
            .as_ref()
            .filter(|node| node.serial == serial)
    }

    /// Changes the node in `slot` through `change`, keeping the memory count right.
    pub fn update<R>(&mut self, slot: usize, change: impl FnOnce(&mut CachedNode) -> R) -> R {
        let node = self.slots[slot].as_mut().expect("empty slot");
        let before = node.memory;
        let result = change(node);
        node.recount();
        self.memory = self.memory - before + node.memory;
        result
    }

    /// Changes a leaf's entries by a delta the caller computed (cheaper than a recount for
    /// one insert or removal).
    pub fn leaf_mut(&mut self, slot: usize) -> (&mut Vec<LeafEntry>, &mut usize) {
        let node = self.slots[slot].as_mut().expect("empty slot");
        match &mut node.image.body {
            Body::Leaf(entries) => (entries, &mut node.encoded),
            Body::Interior(_) => panic!("leaf_mut on an interior node"),
        }
    }

    /// Applies a memory delta computed by a caller of [`Cache::leaf_mut`].
    pub fn adjust_memory(&mut self, slot: usize, before: usize, after: usize) {
        let node = self.slots[slot].as_mut().expect("empty slot");
        node.memory = node.memory + after - before;
        self.memory = self.memory + after - before;
    }

    /// Marks `slot` dirty with `pin` (it was clean).
    pub fn set_dirty(&mut self, slot: usize, pin: DirtyPin) {
        let node = self.slots[slot].as_mut().expect("empty slot");
        debug_assert!(node.dirty.is_none());
        node.dirty = Some(pin);
        self.dirty += 1;
        self.publish_dirty();
    }

    /// Marks the node used.
    pub fn touch(&mut self, slot: usize) {
        if let Some(node) = self.slots[slot].as_mut() {
            node.referenced = true;
        }
    }

    /// The slot of the node at `block`.
    pub fn slot_of_block(&self, block: u64) -> Option<usize> {
        self.by_block.get(&block).copied()
    }

    /// Estimated heap bytes of all cached nodes.
    pub fn memory(&self) -> usize {
        self.memory
    }

    /// The budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Number of cached nodes.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Number of dirty nodes.
    pub fn dirty_count(&self) -> usize {
        self.dirty
    }

    /// Slots of every cached node.
    pub fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, node)| node.as_ref().map(|_| slot))
    }

    /// Evicts clean, unreferenced nodes (not in `keep`) with the clock until memory is at
    /// most `target` or two sweeps found nothing more. Returns nodes evicted.
    pub fn evict_clean(&mut self, target: usize, keep: &[usize]) -> usize {
        let mut evicted = 0;
        let mut steps = 0;
        let limit = self.slots.len() * 2;
        while self.memory > target && steps < limit {
            steps += 1;
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = self.hand;
            self.hand += 1;
            let Some(node) = self.slots[slot].as_mut() else {
                continue;
            };
            if node.dirty.is_some() || keep.contains(&slot) {
                continue;
            }
            if node.referenced {
                node.referenced = false;
                continue;
            }
            self.remove(slot);
            evicted += 1;
        }
        evicted
    }
}
