//! Writing dirty nodes: copy-on-write, splits, merges, root changes, and the journal pins.
//!
//! Every write goes through one primitive, [`Shared::write_run`]: take a run of sibling
//! children of one parent, cut their entries into pieces that fit a block (one piece for a
//! plain write, several for a split, fewer than the run for a merge), write each piece to a
//! newly allocated block, then journal one pointers record replacing the run's pointers with
//! the pieces'. A plain write, the one reclaim makes all the time, copies nothing: the node
//! is encoded where it is cached and stays in its slot under its new block. Under that
//! record's reservation the parent is dirtied (pinned at the record's seq), the old
//! children's pins are dropped (the journal then flushes the device
//! before writing any entry, so the pieces are durable before the record that makes the
//! old copies unnecessary), and the old blocks are freed at the record's seq. When the
//! allocator keeps an owner index (the reverse map), the same reservation carries a
//! transaction record of its updates for the new and old blocks, applied to that tree's
//! leaves at the same seq (`prepare_owner_updates`, `journal_owner_updates`). Roots have no
//! parent: [`Shared::write_root`] journals a roots record instead, growing the tree by a
//! level when the root splits, and [`Shared::collapse_root`] shrinks it when the root is
//! left with one child.
//!
//! A failure before the record is journaled changes nothing but the blocks written, which are
//! returned to the allocator as never referenced (a block whose write failed is not returned:
//! it may be bad). After the record is journaled nothing can fail except pinning a seq the
//! record's own reservation holds, which would be a bug; it puts the trees in their error
//! state rather than continue with memory and journal disagreeing.

use std::sync::{Arc, Weak};

use super::cache::{CachedNode, DirtyPin};
use super::node::{self, pack, Body, NodeImage};
use super::record::{self, Pointers, RootPointer, Update};
use super::tree::child_index;
use super::{usable, BtreeError, Shared, State, TreeId};
use crate::device::IoClass;
use crate::journal::{record_bytes, JournalError, PinFlush, PinFlushError, Reservation};

/// Rounds of [`Shared::write_dirty_in_rounds`] in a row that found the journal short, wrote
/// nothing and had reclaim free nothing, before it gives up.
const MAX_IDLE_ROUNDS: u32 = 3;

/// What [`Shared::write_dirty_in_rounds`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WriteRounds {
    /// Every dirty node, or an error: a checkpoint.
    Every,
    /// As many as blocks allow, for room.
    ForRoom,
}

/// The pin of one dirty node: reclaim calls it to write the node.
pub(super) struct NodePin {
    pub shared: Weak<Shared>,
    pub slot: usize,
    pub serial: u64,
}

impl PinFlush for NodePin {
    fn flush(&self, _seq: u64) -> Result<(), PinFlushError> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        if shared.holds_state_lock() {
            // Writing the node needs the b-tree lock this thread holds; the
            // node is written later, by reclaim in another thread or here
            // once the lock is dropped.
            return Err(PinFlushError::Declined);
        }
        let mut state = shared.lock_state();
        if let Some(why) = &state.failed {
            return Err(format!("b-trees failed earlier: {why}").into());
        }
        if !state.writable {
            return Err("b-tree recovery in progress".to_string().into());
        }
        match state.cache.find(self.slot, self.serial) {
            Some(node) if node.dirty.is_some() => {}
            _ => return Ok(()),
        }
        shared
            .write_node(&mut state, self.slot)
            .map_err(|error| error.to_string().into())
    }
}

/// The pin of the latest roots record: reclaim calls it to journal the roots again.
pub(super) struct RootsPin {
    pub shared: Weak<Shared>,
}

impl PinFlush for RootsPin {
    fn flush(&self, _seq: u64) -> Result<(), PinFlushError> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        shared
            .rejournal_roots()
            .map_err(|error| error.to_string().into())
    }
}

/// The owner-index updates of one node change (see the owner-index hook in `allocator.rs`)
/// and their transaction record, if there are any.
pub(super) struct OwnerUpdates {
    updates: Vec<Update>,
    record: Option<Vec<u8>>,
}

impl OwnerUpdates {
    /// Journal bytes the record takes (0 without updates).
    fn journal_bytes(&self) -> usize {
        self.record
            .as_ref()
            .map_or(0, |record| record_bytes(record.len()))
    }
}

impl Shared {
    /// Asks the allocator for the owner-index updates of a node change and loads every node
    /// they touch, so that applying them once the change is journaled cannot fail on a read.
    /// Nothing is changed yet.
    fn prepare_owner_updates(
        &self,
        state: &mut State,
        tree: TreeId,
        added: &[(u8, u64)],
        removed: &[(u8, u64)],
    ) -> Result<OwnerUpdates, BtreeError> {
        let updates = self.allocator.node_owner_updates(tree, added, removed);
        // Updates to the changing tree itself would make every write of it dirty it again.
        debug_assert!(updates.iter().all(|update| update.tree() != tree));
        for update in &updates {
            match update {
                Update::Put { tree, key, .. } | Update::Delete { tree, key } => {
                    self.load_for_update(state, *tree, key, None)?;
                }
                Update::DeleteRange { tree, start, end } => {
                    self.load_for_update(state, *tree, start, Some(end.as_deref()))?;
                }
            }
        }
        let record = (!updates.is_empty()).then(|| record::encode_transaction(&updates));
        Ok(OwnerUpdates { updates, record })
    }

    /// Appends the owner-index record to the change's reservation (same journal entry, so
    /// replay sees both or neither) and applies its updates at the reservation's seq, as a
    /// transaction would. A failure here leaves memory and journal disagreeing, so it puts
    /// the trees in their error state.
    fn journal_owner_updates(
        &self,
        state: &mut State,
        reservation: &mut Reservation<'_>,
        owners: &OwnerUpdates,
    ) -> Result<(), BtreeError> {
        let Some(record) = &owners.record else {
            return Ok(());
        };
        if let Err(error) = reservation.append(record) {
            return Err(self.fail(state, format!("owner record append failed: {error}")));
        }
        let seq = reservation.seq();
        for update in &owners.updates {
            let applied = match update {
                Update::Put { tree, key, value } => {
                    self.apply_put(state, *tree, key, value, seq).map(|_| ())
                }
                Update::Delete { tree, key } => {
                    self.apply_delete(state, *tree, key, seq).map(|_| ())
                }
                Update::DeleteRange { tree, start, end } => self
                    .apply_delete_range(state, *tree, start, end.as_deref(), seq)
                    .map(|_| ()),
            };
            if let Err(error) = applied {
                let why = format!("applying owner-index updates at seq {seq} failed: {error}");
                return Err(self.fail(state, why));
            }
        }
        Ok(())
    }
}

impl Shared {
    fn roots_pin(&self) -> Arc<RootsPin> {
        Arc::new(RootsPin {
            shared: self.this.clone(),
        })
    }

    /// Journals the current roots again and moves the roots pin to that record.
    pub(super) fn rejournal_roots(&self) -> Result<(), BtreeError> {
        let mut roots = self.lock_roots();
        if roots.roots.is_empty() {
            return Ok(());
        }
        let encoded = record::encode_roots(&roots.roots);
        let mut reservation = self
            .journal
            .reserve_for_reclaim(record_bytes(encoded.len()))?;
        reservation.append(&encoded)?;
        let pin = self.journal.pin(reservation.seq(), self.roots_pin())?;
        if let Some(old) = roots.pin.replace(pin) {
            self.journal.unpin(old);
        }
        Ok(())
    }

    /// Journals `roots` as a fresh filesystem's first roots and makes them durable.
    pub(super) fn journal_first_roots(&self, roots: Vec<RootPointer>) -> Result<(), BtreeError> {
        let seq = {
            let mut guard = self.lock_roots();
            let encoded = record::encode_roots(&roots);
            // The reclaim reservation never runs reclaim itself, which could
            // call the roots pin and so take the roots lock we hold.
            let mut reservation = self
                .journal
                .reserve_for_reclaim(record_bytes(encoded.len()))?;
            reservation.append(&encoded)?;
            let seq = reservation.seq();
            guard.pin = Some(self.journal.pin(seq, self.roots_pin())?);
            guard.roots = roots;
            seq
        };
        self.journal.flush_seq(seq)?;
        Ok(())
    }

    /// Pins the roots record found at `seq` during replay.
    pub(super) fn adopt_replayed_roots(
        &self,
        roots: Vec<RootPointer>,
        seq: u64,
    ) -> Result<(), BtreeError> {
        let mut guard = self.lock_roots();
        guard.pin = Some(self.journal.pin(seq, self.roots_pin())?);
        guard.roots = roots;
        Ok(())
    }

    /// Puts the trees in their error state.
    fn fail(&self, state: &mut State, why: String) -> BtreeError {
        if state.failed.is_none() {
            state.failed = Some(why.clone());
        }
        BtreeError::Failed(why)
    }

    /// Allocates `count` blocks, all or none.
    fn allocate_blocks(&self, count: usize) -> Result<Vec<u64>, BtreeError> {
        let mut blocks = Vec::with_capacity(count);
        for _ in 0..count {
            match self.allocator.allocate() {
                Ok(block) => blocks.push(block),
                Err(error) => {
                    self.release_unreferenced(&blocks);
                    return Err(error);
                }
            }
        }
        Ok(blocks)
    }

    /// Writes each image to its allocated block. On failure every block is returned to the
    /// allocator as never referenced, except one whose write failed (it may be bad: see `write_encoded`).
    fn write_allocated(
        &self,
        state: &mut State,
        images: &[NodeImage],
        blocks: &[u64],
    ) -> Result<(), BtreeError> {
        let encoded = self.encode_for_blocks(images.iter(), blocks)?;
        let places: Vec<(TreeId, u8)> = images
            .iter()
            .map(|image| (image.tree, image.level))
            .collect();
        self.write_encoded(state, &encoded, blocks, &places)
    }

    /// Each image encoded for its block. On failure every block is returned to the
    /// allocator as never referenced.
    fn encode_for_blocks<'i>(
        &self,
        images: impl Iterator<Item = &'i NodeImage>,
        blocks: &[u64],
    ) -> Result<Vec<Vec<u8>>, BtreeError> {
        let block_size = self.geometry.block_size;
        images
            .zip(blocks)
            .map(|(image, &block)| node::encode(image, block, &self.geometry.uuid, block_size))
            .collect::<Result<_, _>>()
            .map_err(|error| {
                self.release_unreferenced(blocks);
                error.into()
            })
    }

    fn release_unreferenced(&self, blocks: &[u64]) {
        for &block in blocks {
            self.allocator.free(block, 0);
        }
    }

    /// Writes encoded nodes (of `places`: tree and level) to their allocated blocks. On
    /// failure every block is returned to the allocator as never referenced, except one whose
    /// write failed (it may be bad: it comes back after the next successful write, once), and
    /// the error names that node.
    fn write_encoded(
        &self,
        state: &mut State,
        encoded: &[Vec<u8>],
        blocks: &[u64],
        places: &[(TreeId, u8)],
    ) -> Result<(), BtreeError> {
        let block_size = u64::from(self.geometry.block_size);
        for (index, ((bytes, &block), &(tree, level))) in
            encoded.iter().zip(blocks).zip(places).enumerate()
        {
            if let Err(source) = self
                .device
                .write_at(block * block_size, bytes, IoClass::Metadata)
            {
                self.release_unreferenced(&blocks[..index]);
                self.release_unreferenced(&blocks[index + 1..]);
                if !state.failed_before.contains(&block) {
                    state.suspect_blocks.push(block);
                }
                return Err(BtreeError::NodeWrite {
                    tree,
                    level,
                    block,
                    source,
                });
            }
        }
        state.nodes_written += encoded.len() as u64;
        // The device writes again: the blocks of writes that failed before
        // come back into use, each once (see `State::suspect_blocks`).
        let suspects = std::mem::take(&mut state.suspect_blocks);
        self.release_unreferenced(&suspects);
        state.failed_before.extend(suspects);
        // The entry that names these blocks (the parent's new pointer) must
        // not reach the disk before them. A dirty node's dropped pin says so
        // too, but a clean node moved (relocation) drops none.
        self.journal.order_before_next_entry();
        Ok(())
    }

    /// Cuts `body` (covering `lower..upper` at `level`) into node images that fit.
    fn pieces(
        &self,
        tree: TreeId,
        level: u8,
        lower: &[u8],
        upper: Option<&[u8]>,
        body: Body,
    ) -> Vec<NodeImage> {
        let bodies = pack(body, self.geometry.capacity);
        let lowers: Vec<Box<[u8]>> = bodies
            .iter()
            .enumerate()
            .map(|(index, body)| {
                if index == 0 {
                    Box::from(lower)
                } else {
                    Box::from(body.key(0))
                }
            })
            .collect();
        bodies
            .into_iter()
            .enumerate()
            .map(|(index, body)| NodeImage {
                tree,
                level,
                lower: lowers[index].clone(),
                upper: match lowers.get(index + 1) {
                    Some(next) => Some(next.clone()),
                    None => upper.map(Box::from),
                },
                body,
            })
            .collect()
    }

    /// Drops a replaced node: its pin (under the caller's reservation) and its block (freed
    /// at `seq`).
    fn retire(&self, state: &mut State, slot: usize, seq: u64) {
        let old: CachedNode = state.cache.remove(slot);
        self.release_replaced(old.block, old.dirty, seq);
    }

    /// Lets go of what a node's old copy held: its pin, if it was dirty (under the caller's
    /// reservation), and its block (freed at `seq`).
    fn release_replaced(&self, block: u64, dirty: Option<DirtyPin>, seq: u64) {
        if let Some(dirty) = dirty {
            self.journal.unpin(dirty.pin);
        }
        self.allocator.free(block, seq);
    }

    /// The parent of the non-root node in `slot`, and the node's index in it.
    pub(super) fn locate_parent(
        &self,
        state: &mut State,
        slot: usize,
    ) -> Result<(usize, usize), BtreeError> {
        let node = state.cache.node(slot);
        let (tree, level, block) = (node.image.tree, node.image.level, node.block);
        let lower = node.image.lower.clone();
        let path = self.descend(state, tree, &lower, level + 1)?;
        let parent = path[path.len() - 1].slot;
        let children = state.cache.node(parent).children();
        let index = child_index(children, &lower);
        if children.get(index).map(|(key, child)| (&**key, *child)) != Some((&*lower, block)) {
            let why = format!("{tree} node at block {block} is not where its parent says");
            return Err(self.fail(state, why));
        }
        Ok((parent, index))
    }

    /// Rewrites children `first..=last` of `parent` as new nodes (see the module comment);
    /// returns the slots and serials of the nodes now in their place.
    pub(super) fn write_run(
        &self,
        state: &mut State,
        parent: usize,
        first: usize,
        last: usize,
    ) -> Result<Vec<(usize, u64)>, BtreeError> {
        let mut run = Vec::with_capacity(last - first + 1);
        for index in first..=last {
            run.push(self.child(state, parent, index)?);
        }
        let head = state.cache.node(run[0]);
        let (tree, level) = (head.image.tree, head.image.level);
        let lower = head.image.lower.clone();
        let upper = state.cache.node(run[run.len() - 1]).image.upper.clone();
        // The common write, one node that still fits, is one piece equal to the node: it is
        // encoded from the cache and the node stays in its slot under its new block, instead
        // of copying every entry into a new image and dropping the old one (reclaim writes
        // leaves all the time, under the state lock).
        let moved = run.len() == 1 && head.encoded <= self.geometry.capacity;
        let images = if moved {
            Vec::new()
        } else {
            let body = if level == 0 {
                let mut entries = Vec::new();
                for &slot in &run {
                    if let Body::Leaf(more) = &state.cache.node(slot).image.body {
                        entries.extend(more.iter().cloned());
                    }
                }
                Body::Leaf(entries)
            } else {
                let mut entries = Vec::new();
                for &slot in &run {
                    entries.extend(state.cache.node(slot).children().iter().cloned());
                }
                Body::Interior(entries)
            };
            self.pieces(tree, level, &lower, upper.as_deref(), body)
        };
        let lowers: Vec<Box<[u8]>> = if moved {
            vec![lower.clone()]
        } else {
            images.iter().map(|image| image.lower.clone()).collect()
        };
        let blocks = self.allocate_blocks(lowers.len())?;
        let encoded = if moved {
            self.encode_for_blocks(std::iter::once(&state.cache.node(run[0]).image), &blocks)?
        } else {
            self.encode_for_blocks(images.iter(), &blocks)?
        };
        self.write_encoded(state, &encoded, &blocks, &vec![(tree, level); blocks.len()])?;
        let pointers = Pointers {
            tree,
            level: level + 1,
            lower: lower.to_vec(),
            upper: upper.as_ref().map(|upper| upper.to_vec()),
            children: lowers
                .iter()
                .zip(&blocks)
                .map(|(lower, &block)| (lower.to_vec(), block))
                .collect(),
        };
        let encoded = record::encode_pointers(&pointers);
        let added: Vec<(u8, u64)> = blocks.iter().map(|&block| (level, block)).collect();
        let removed: Vec<(u8, u64)> = run
            .iter()
            .map(|&slot| (level, state.cache.node(slot).block))
            .collect();
        let owners = match self.prepare_owner_updates(state, tree, &added, &removed) {
            Ok(owners) => owners,
            Err(error) => {
                self.release_unreferenced(&blocks);
                return Err(error);
            }
        };
        let mut reservation = match self
            .reserve_node_records(state, record_bytes(encoded.len()) + owners.journal_bytes())
        {
            Ok(reservation) => reservation,
            Err(error) => {
                self.release_unreferenced(&blocks);
                return Err(error.into());
            }
        };
        if let Err(error) = reservation.append(&encoded) {
            return Err(self.fail(state, format!("pointer record append failed: {error}")));
        }
        let seq = reservation.seq();
        self.journal_owner_updates(state, &mut reservation, &owners)?;
        if let Err(error) = self.mark_dirty(state, parent, seq) {
            return Err(self.fail(state, format!("pinning a parent failed: {error}")));
        }
        self.allocator.nodes_moved(tree, &added, &removed);
        let replacement: Vec<(Box<[u8]>, u64)> = lowers.into_iter().zip(blocks.clone()).collect();
        state.cache.update(parent, |node| {
            if let Body::Interior(entries) = &mut node.image.body {
                entries.splice(first..=last, replacement);
            }
        });
        let written = if moved {
            let (old_block, pin) = state.cache.move_to_block(run[0], blocks[0]);
            self.release_replaced(old_block, pin, seq);
            vec![(run[0], state.cache.node(run[0]).serial)]
        } else {
            for slot in run {
                self.retire(state, slot, seq);
            }
            images
                .into_iter()
                .zip(blocks)
                .map(|(image, block)| {
                    let slot = state.cache.insert(image, block);
                    (slot, state.cache.node(slot).serial)
                })
                .collect()
        };
        drop(reservation);
        Ok(written)
    }

    /// Writes `tree`'s root to a new block, splitting it under a new root if it is too big.
    pub(super) fn write_root(&self, state: &mut State, tree: TreeId) -> Result<(), BtreeError> {
        let slot = state.roots[tree.index()];
        let root = state.cache.node(slot);
        let (level, old_block) = (root.image.level, root.block);
        let mut images = self.pieces(tree, level, &[], None, root.image.body.clone());
        let grows = images.len() > 1;
        if grows {
            let children = images
                .iter()
                .map(|image| (image.lower.clone(), 0))
                .collect();
            images.push(NodeImage {
                tree,
                level: level + 1,
                lower: Box::from(&[][..]),
                upper: None,
                body: Body::Interior(children),
            });
        }
        // The new root names its children's blocks, so allocate before encoding any.
        let blocks = self.allocate_blocks(images.len())?;
        let count = images.len();
        if let Body::Interior(children) = &mut images[count - 1].body {
            if grows {
                for (child, &block) in children.iter_mut().zip(&blocks) {
                    child.1 = block;
                }
            }
        }
        self.write_allocated(state, &images, &blocks)?;
        let new_root = RootPointer {
            tree,
            level: images[images.len() - 1].level,
            block: blocks[blocks.len() - 1],
        };
        let mut records = Vec::new();
        if grows {
            let children = images[..images.len() - 1]
                .iter()
                .zip(&blocks)
                .map(|(image, &block)| (image.lower.to_vec(), block))
                .collect();
            records.push(record::encode_pointers(&Pointers {
                tree,
                level: level + 1,
                lower: Vec::new(),
                upper: None,
                children,
            }));
        }
        let mut added: Vec<(u8, u64)> = images
            .iter()
            .zip(&blocks)
            .map(|(image, &block)| (image.level, block))
            .collect();
        added.sort_unstable();
        let removed = [(level, old_block)];
        let owners = match self.prepare_owner_updates(state, tree, &added, &removed) {
            Ok(owners) => owners,
            Err(error) => {
                self.release_unreferenced(&blocks);
                return Err(error);
            }
        };
        let mut roots = self.lock_roots();
        let mut new_roots = roots.roots.clone();
        for root in &mut new_roots {
            if root.tree == tree {
                *root = new_root;
            }
        }
        records.push(record::encode_roots(&new_roots));
        let bytes = records
            .iter()
            .map(|record| record_bytes(record.len()))
            .sum::<usize>()
            + owners.journal_bytes();
        let mut reservation = match self.reserve_node_records(state, bytes) {
            Ok(reservation) => reservation,
            Err(error) => {
                self.release_unreferenced(&blocks);
                return Err(error.into());
            }
        };
        for record in &records {
            if let Err(error) = reservation.append(record) {
                return Err(self.fail(state, format!("roots record append failed: {error}")));
            }
        }
        let seq = reservation.seq();
        self.journal_owner_updates(state, &mut reservation, &owners)?;
        let pin = match self.journal.pin(seq, self.roots_pin()) {
            Ok(pin) => pin,
            Err(error) => return Err(self.fail(state, format!("pinning roots failed: {error}"))),
        };
        if let Some(old) = roots.pin.replace(pin) {
            self.journal.unpin(old);
        }
        roots.roots = new_roots;
        self.allocator.nodes_moved(tree, &added, &removed);
        self.retire(state, slot, seq);
        let mut new_slot = 0;
        for (image, block) in images.into_iter().zip(blocks) {
            new_slot = state.cache.insert(image, block);
        }
        state.roots[tree.index()] = new_slot;
        drop(reservation);
        Ok(())
    }

    /// Makes the only child of `tree`'s interior root the new root.
    pub(super) fn collapse_root(&self, state: &mut State, tree: TreeId) -> Result<(), BtreeError> {
        let slot = state.roots[tree.index()];
        let child = self.child(state, slot, 0)?;
        let child_node = state.cache.node(child);
        let new_root = RootPointer {
            tree,
            level: child_node.image.level,
            block: child_node.block,
        };
        let removed = {
            let old_root = state.cache.node(slot);
            [(old_root.image.level, old_root.block)]
        };
        let owners = self.prepare_owner_updates(state, tree, &[], &removed)?;
        let mut roots = self.lock_roots();
        let mut new_roots = roots.roots.clone();
        for root in &mut new_roots {
            if root.tree == tree {
                *root = new_root;
            }
        }
        let encoded = record::encode_roots(&new_roots);
        let mut reservation =
            self.reserve_node_records(state, record_bytes(encoded.len()) + owners.journal_bytes())?;
        if let Err(error) = reservation.append(&encoded) {
            return Err(self.fail(state, format!("roots record append failed: {error}")));
        }
        let seq = reservation.seq();
        self.journal_owner_updates(state, &mut reservation, &owners)?;
        let pin = match self.journal.pin(seq, self.roots_pin()) {
            Ok(pin) => pin,
            Err(error) => return Err(self.fail(state, format!("pinning roots failed: {error}"))),
        };
        if let Some(old) = roots.pin.replace(pin) {
            self.journal.unpin(old);
        }
        roots.roots = new_roots;
        self.allocator.nodes_moved(tree, &[], &removed);
        self.retire(state, slot, seq);
        state.roots[tree.index()] = child;
        drop(reservation);
        Ok(())
    }

    /// Writes the node in `slot` (which must be cached).
    pub(super) fn write_node(&self, state: &mut State, slot: usize) -> Result<(), BtreeError> {
        let tree = state.cache.node(slot).image.tree;
        if state.roots[tree.index()] == slot {
            return self.write_root(state, tree);
        }
        let (parent, index) = self.locate_parent(state, slot)?;
        self.write_run(state, parent, index, index).map(drop)
    }

    /// Splits oversized and merges underfull nodes among `candidates` (slot, serial), and
    /// their parents in turn.
    pub(super) fn restructure(
        &self,
        state: &mut State,
        candidates: Vec<(usize, u64)>,
    ) -> Result<(), BtreeError> {
        let capacity = self.geometry.capacity;
        let mut queue = candidates;
        while let Some((slot, serial)) = queue.pop() {
            let Some(node) = state.cache.find(slot, serial) else {
                continue;
            };
            let tree = node.image.tree;
            let over = node.encoded > capacity;
            let under = node.encoded < capacity / 4;
            if state.roots[tree.index()] == slot {
                if over {
                    self.write_root(state, tree)?;
                } else if !node.is_leaf() && node.children().len() == 1 {
                    self.collapse_root(state, tree)?;
                }
                continue;
            }
            if !over && !under {
                continue;
            }
            let (parent, index) = self.locate_parent(state, slot)?;
            let siblings = state.cache.node(parent).children().len();
            let (first, last) = if over {
                (index, index)
            } else if siblings < 2 {
                continue;
            } else if index + 1 < siblings {
                (index, index + 1)
            } else {
                (index - 1, index)
            };
            let written = self.write_run(state, parent, first, last)?;
            queue.push((parent, state.cache.node(parent).serial));
            if written.len() < last - first + 1 {
                // A merge that left fewer nodes may leave one still underfull (a run of
                // emptied leaves merges pair by pair): look at it again. Only a merge that
                // shrank the tree is followed, so this ends; one that only moved entries
                // between two nodes could trade them back and forth.
                queue.extend(written);
            }
        }
        Ok(())
    }

    /// Records a failed background write (the node stays dirty and is retried).
    pub(super) fn note_writeback_failure(&self, state: &mut State, error: &BtreeError) {
        self.writeback_failures
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        state.last_writeback_failure = Some(error.to_string());
        if let BtreeError::NodeWrite {
            tree,
            level,
            block,
            source,
        } = error
        {
            state.last_failed_node = Some((*tree, *level, *block, source.errno().0));
        }
    }

    /// Journal room for the records of a node write: a reclaim reservation, one that leaves
    /// a reclaim pass its entry when nodes are written in bulk.
    fn reserve_node_records(
        &self,
        state: &State,
        bytes: usize,
    ) -> Result<Reservation<'_>, JournalError> {
        if state.writing_in_bulk {
            self.journal.reserve_in_bulk(bytes)
        } else {
            self.journal.reserve_for_reclaim(bytes)
        }
    }

    /// Brings the cache back under its budget: evicts clean nodes, and if that is not enough,
    /// writes dirty ones (lowest level and oldest first) and evicts them. Failures are
    /// recorded in the status, not returned: the caller's own operation succeeded. A journal
    /// left with only a reclaim pass's room is no failure: the nodes wait for that pass.
    pub(super) fn relieve_pressure(&self, state: &mut State) {
        let budget = state.cache.budget();
        if state.cache.memory() <= budget {
            return;
        }
        let target = budget / 8 * 7;
        let roots = state.roots.clone();
        state.cache.evict_clean(target, &roots);
        if state.cache.memory() <= budget || !state.writable || state.failed.is_some() {
            return;
        }
        state.writing_in_bulk = true;
        let written = self.write_oldest_dirty(state, target);
        state.writing_in_bulk = false;
        match written {
            Ok(()) | Err(BtreeError::Journal(JournalError::Full { .. })) => {}
            Err(error) => self.note_writeback_failure(state, &error),
        }
    }

    /// Writes dirty nodes, lowest level and oldest first, evicting as it goes, until the
    /// cache is down to `target` bytes.
    fn write_oldest_dirty(&self, state: &mut State, target: usize) -> Result<(), BtreeError> {
        let mut dirty: Vec<(u8, u64, usize, u64)> = state
            .cache
            .slots()
            .filter_map(|slot| {
                let node = state.cache.node(slot);
                node.dirty
                    .map(|pin| (node.image.level, pin.seq, slot, node.serial))
            })
            .collect();
        dirty.sort_unstable();
        for (_, _, slot, serial) in dirty {
            if state.cache.memory() <= target {
                break;
            }
            let still_dirty = state
                .cache
                .find(slot, serial)
                .is_some_and(|node| node.dirty.is_some());
            if !still_dirty {
                continue;
            }
            self.write_node(state, slot)?;
            // Re-read the roots: writing a node can move a root to a new slot, and
            // evicting that slot would leave the tree without its root.
            let roots = state.roots.clone();
            state.cache.evict_clean(target, &roots);
        }
        Ok(())
    }

    /// Writes dirty nodes in rounds, each under the state lock, settling the journal after
    /// each so that the blocks old copies free become reusable. When the journal keeps the
    /// rest of its room for reclaim, a reclaim pass (without the lock: it writes nodes
    /// itself) makes room and the rounds go on. `Every`: until none is dirty, or the error
    /// that stopped them (a checkpoint: sync, freeze, unmount). `ForRoom`: while rounds
    /// make progress, and running out of blocks ends them quietly (a commit or a write
    /// short of space: each dirty node holds a block for its own writeback, and after a
    /// replay every node the journal changed is dirty, so on a full filesystem even a
    /// deletion could not commit).
    pub(super) fn write_dirty_in_rounds(&self, rounds: WriteRounds) -> Result<(), BtreeError> {
        let mut idle_rounds = 0;
        loop {
            let (before, written, after) = {
                let mut state = self.lock_state();
                usable(&state)?;
                let before = state.cache.dirty_count();
                if before == 0 && rounds == WriteRounds::ForRoom {
                    return Ok(());
                }
                let written = self.write_all_dirty(&mut state);
                (before, written, state.cache.dirty_count())
            };
            let progress = after < before;
            match written {
                Ok(()) => {
                    self.journal.settle()?;
                    return Ok(());
                }
                Err(BtreeError::Journal(full @ JournalError::Full { .. })) => {
                    let freed = self.journal.reclaim_for_entry()?;
                    idle_rounds = if progress || freed {
                        0
                    } else {
                        idle_rounds + 1
                    };
                    if idle_rounds >= MAX_IDLE_ROUNDS {
                        return match rounds {
                            WriteRounds::ForRoom => Ok(()),
                            WriteRounds::Every => Err(full.into()),
                        };
                    }
                }
                Err(BtreeError::NoSpace { .. }) if rounds == WriteRounds::ForRoom => {
                    self.journal.settle()?;
                    if !progress {
                        return Ok(());
                    }
                }
                Err(error) => return Err(error),
            }
            if after == 0 {
                return Ok(());
            }
        }
    }

    /// Writes every dirty node, leaves first, until none is left (in bulk: see
    /// [`Shared::reserve_node_records`]).
    pub(super) fn write_all_dirty(&self, state: &mut State) -> Result<(), BtreeError> {
        state.writing_in_bulk = true;
        let written = self.write_each_dirty(state);
        state.writing_in_bulk = false;
        written
    }

    fn write_each_dirty(&self, state: &mut State) -> Result<(), BtreeError> {
        loop {
            let mut dirty: Vec<(u8, usize, u64)> = state
                .cache
                .slots()
                .filter_map(|slot| {
                    let node = state.cache.node(slot);
                    node.dirty.map(|_| (node.image.level, slot, node.serial))
                })
                .collect();
            if dirty.is_empty() {
                return Ok(());
            }
            dirty.sort_unstable();
            let lowest = dirty[0].0;
            for (level, slot, serial) in dirty {
                if level != lowest {
                    break;
                }
                if state
                    .cache
                    .find(slot, serial)
                    .is_some_and(|node| node.dirty.is_some())
                {
                    self.write_node(state, slot)?;
                }
            }
            let roots = state.roots.clone();
            if state.cache.memory() > state.cache.budget() {
                state
                    .cache
                    .evict_clean(state.cache.budget() / 8 * 7, &roots);
            }
        }
    }
}
