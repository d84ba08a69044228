//! Tree operations on the cached nodes: loading children, descending by key, lookups, range
//! scans, the leaf updates transactions apply, and the consistency walk.
//!
//! Descents iterate with an explicit path, never recursion, so a deep or malformed tree
//! cannot exhaust the stack; a level that does not decrease by one at each step is caught by
//! node validation (the parent says which level the child must have). Every node read from
//! disk is validated against what its parent says about it (tree, level, bounds, block)
//! before any entry is trusted.

use std::sync::Arc;

use super::cache::DirtyPin;
use super::node::{self, heap_bytes, leaf_entry_bytes, Body, Expected};
use super::writeback::NodePin;
use super::{BtreeError, CheckReport, Shared, State, TreeId};
use crate::device::IoClass;

/// One step of a descent: a node and, for interior nodes, the child taken.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub slot: usize,
    pub index: usize,
}

/// The index of the child of an interior node whose range holds `key`.
pub(super) fn child_index(children: &[(Box<[u8]>, u64)], key: &[u8]) -> usize {
    match children.binary_search_by(|(child_key, _)| (**child_key).cmp(key)) {
        Ok(index) => index,
        Err(index) => index.saturating_sub(1),
    }
}

impl Shared {
    /// Reads and validates the node at `block`, which the parent says has `level` and
    /// `bounds`, and caches it.
    pub(super) fn read_node(
        &self,
        state: &mut State,
        tree: TreeId,
        block: u64,
        level: Option<u8>,
        bounds: Option<(&[u8], Option<&[u8]>)>,
    ) -> Result<usize, BtreeError> {
        let geometry = &self.geometry;
        let mut bytes = vec![0u8; geometry.block_size as usize];
        if !geometry.main_blocks.contains(&block) {
            return Err(BtreeError::CorruptNode {
                tree,
                block,
                defect: node::NodeDefect::Malformed("block outside the main region".into()),
            });
        }
        self.device.read_at(
            block * u64::from(geometry.block_size),
            &mut bytes,
            IoClass::Metadata,
        )?;
        let expected = Expected {
            block,
            tree,
            level,
            bounds,
            uuid: &geometry.uuid,
            limits: geometry.limits,
            valid_blocks: geometry.main_blocks.clone(),
        };
        let image = node::decode(&bytes, &expected).map_err(|defect| BtreeError::CorruptNode {
            tree,
            block,
            defect,
        })?;
        state.nodes_read += 1;
        Ok(state.cache.insert(image, block))
    }

    /// The slot of child `index` of the interior node in `parent`, reading it if needed.
    pub(super) fn child(
        &self,
        state: &mut State,
        parent: usize,
        index: usize,
    ) -> Result<usize, BtreeError> {
        let node = state.cache.node(parent);
        let children = node.children();
        let block = children[index].1;
        let tree = node.image.tree;
        let level = node.image.level - 1;
        if let Some(slot) = state.cache.slot_of_block(block) {
            // A node read through another pointer was checked against that
            // one, not this: a damaged parent naming itself would make a
            // walk loop for ever, and one naming a sibling would answer
            // lookups from (and insert into) the wrong node.
            let cached = &state.cache.node(slot).image;
            let upper = match children.get(index + 1) {
                Some((next, _)) => Some(&**next),
                None => node.image.upper.as_deref(),
            };
            let defect = if cached.tree != tree {
                Some(node::NodeDefect::WrongTree {
                    found: cached.tree.code(),
                    expected: tree,
                })
            } else if cached.level != level {
                Some(node::NodeDefect::WrongLevel {
                    found: cached.level,
                    expected: level,
                })
            } else if cached.lower != children[index].0 || cached.upper.as_deref() != upper {
                Some(node::NodeDefect::WrongBounds)
            } else {
                None
            };
            if let Some(defect) = defect {
                return Err(BtreeError::CorruptNode {
                    tree,
                    block,
                    defect,
                });
            }
            state.cache.touch(slot);
            return Ok(slot);
        }
        let lower = children[index].0.clone();
        let upper: Option<Box<[u8]>> = match children.get(index + 1) {
            Some((next, _)) => Some(next.clone()),
            None => node.image.upper.clone(),
        };
        self.read_node(
            state,
            tree,
            block,
            Some(level),
            Some((&lower, upper.as_deref())),
        )
    }

    /// The path from `tree`'s root to the node at `level` whose range holds `key`.
    pub(super) fn descend(
        &self,
        state: &mut State,
        tree: TreeId,
        key: &[u8],
        level: u8,
    ) -> Result<Vec<Step>, BtreeError> {
        let mut slot = state.roots[tree.index()];
        state.cache.touch(slot);
        let mut path = Vec::with_capacity(4);
        loop {
            let node = state.cache.node(slot);
            if node.image.level <= level {
                path.push(Step { slot, index: 0 });
                return Ok(path);
            }
            let index = child_index(node.children(), key);
            path.push(Step { slot, index });
            slot = self.child(state, slot, index)?;
        }
    }

    /// Moves `path` (ending at a leaf) to the next leaf to the right; false at the end.
    pub(super) fn next_leaf(
        &self,
        state: &mut State,
        path: &mut Vec<Step>,
    ) -> Result<bool, BtreeError> {
        path.pop();
        loop {
            let Some(step) = path.last_mut() else {
                return Ok(false);
            };
            if step.index + 1 < state.cache.node(step.slot).children().len() {
                step.index += 1;
                break;
            }
            path.pop();
        }
        loop {
            let step = *path.last().expect("non-empty");
            let child = self.child(state, step.slot, step.index)?;
            if state.cache.node(child).is_leaf() {
                path.push(Step {
                    slot: child,
                    index: 0,
                });
                return Ok(true);
            }
            path.push(Step {
                slot: child,
                index: 0,
            });
        }
    }

    /// Moves `path` (ending at a leaf) to the next leaf to the left, its
    /// step at the leaf's last entry; false at the start.
    fn previous_leaf(&self, state: &mut State, path: &mut Vec<Step>) -> Result<bool, BtreeError> {
        path.pop();
        loop {
            let Some(step) = path.last_mut() else {
                return Ok(false);
            };
            if step.index > 0 {
                step.index -= 1;
                break;
            }
            path.pop();
        }
        loop {
            let step = *path.last().expect("non-empty");
            let child = self.child(state, step.slot, step.index)?;
            let node = state.cache.node(child);
            let index = node.children().len().saturating_sub(1);
            let leaf = node.is_leaf();
            path.push(Step { slot: child, index });
            if leaf {
                return Ok(true);
            }
        }
    }

    /// The entry with the greatest key at or before `key`: one descent,
    /// and a step to the left when `key` sorts before everything in its
    /// leaf (or that leaf is empty).
    pub(super) fn floor(
        &self,
        state: &mut State,
        tree: TreeId,
        key: &[u8],
    ) -> Result<Option<super::Entry>, BtreeError> {
        let mut path = self.descend(state, tree, key, 0)?;
        let mut bound = Some(key);
        loop {
            let leaf = state.cache.node(path[path.len() - 1].slot);
            let Body::Leaf(entries) = &leaf.image.body else {
                unreachable!("descend to level 0 ends at a leaf");
            };
            let below = match bound {
                Some(key) => entries.partition_point(|(entry_key, _)| **entry_key <= *key),
                None => entries.len(),
            };
            if let Some((entry_key, value)) = below.checked_sub(1).map(|index| &entries[index]) {
                return Ok(Some((entry_key.to_vec(), value.to_vec())));
            }
            if !self.previous_leaf(state, &mut path)? {
                return Ok(None);
            }
            // Everything in a leaf to the left sorts before `key`.
            bound = None;
        }
    }

    /// Point lookup.
    pub(super) fn lookup(
        &self,
        state: &mut State,
        tree: TreeId,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, BtreeError> {
        let path = self.descend(state, tree, key, 0)?;
        let leaf = state.cache.node(path[path.len() - 1].slot);
        let Body::Leaf(entries) = &leaf.image.body else {
            unreachable!("descend to level 0 ends at a leaf");
        };
        Ok(entries
            .binary_search_by(|(entry_key, _)| (**entry_key).cmp(key))
            .ok()
            .map(|index| entries[index].1.to_vec()))
    }

    /// Up to `limit` entries with keys in `start..end`.
    pub(super) fn scan(
        &self,
        state: &mut State,
        tree: TreeId,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<super::Entry>, BtreeError> {
        let mut found = Vec::new();
        let mut path = self.descend(state, tree, start, 0)?;
        loop {
            let leaf = state.cache.node(path[path.len() - 1].slot);
            let Body::Leaf(entries) = &leaf.image.body else {
                unreachable!("scans walk leaves");
            };
            let first = entries.partition_point(|(key, _)| **key < *start);
            for (key, value) in &entries[first..] {
                if end.is_some_and(|end| **key >= *end) || found.len() >= limit {
                    return Ok(found);
                }
                found.push((key.to_vec(), value.to_vec()));
            }
            let upper_past_end = match (&leaf.image.upper, end) {
                (None, _) => true,
                (Some(upper), Some(end)) => **upper >= *end,
                (Some(_), None) => false,
            };
            if upper_past_end || !self.next_leaf(state, &mut path)? {
                return Ok(found);
            }
        }
    }

    /// Marks `slot` dirty at `seq` (pinning the journal) unless it already is.
    pub(super) fn mark_dirty(
        &self,
        state: &mut State,
        slot: usize,
        seq: u64,
    ) -> Result<(), BtreeError> {
        let node = state.cache.node(slot);
        if node.dirty.is_some() {
            return Ok(());
        }
        let pin = Arc::new(NodePin {
            shared: self.this.clone(),
            slot,
            serial: node.serial,
        });
        let pin = self.journal.pin(seq, pin)?;
        state.cache.set_dirty(slot, DirtyPin { seq, pin });
        Ok(())
    }

    /// Inserts or overwrites `key` in `tree`, as journaled at `seq`; returns the leaf.
    pub(super) fn apply_put(
        &self,
        state: &mut State,
        tree: TreeId,
        key: &[u8],
        value: &[u8],
        seq: u64,
    ) -> Result<usize, BtreeError> {
        let path = self.descend(state, tree, key, 0)?;
        let slot = path[path.len() - 1].slot;
        self.mark_dirty(state, slot, seq)?;
        let (entries, encoded) = state.cache.leaf_mut(slot);
        let capacity_before = entries.capacity();
        let (before, after) =
            match entries.binary_search_by(|(entry_key, _)| (**entry_key).cmp(key)) {
                Ok(index) => {
                    let old = std::mem::replace(&mut entries[index].1, Box::from(value));
                    *encoded = *encoded + value.len() - old.len();
                    (heap_bytes(old.len()), heap_bytes(value.len()))
                }
                Err(index) => {
                    entries.insert(index, (Box::from(key), Box::from(value)));
                    *encoded += leaf_entry_bytes(key.len(), value.len());
                    (0, heap_bytes(key.len()) + heap_bytes(value.len()))
                }
            };
        let capacity_after = entries.capacity();
        state.cache.adjust_memory(
            slot,
            before + capacity_before * 32,
            after + capacity_after * 32,
        );
        Ok(slot)
    }

    /// Removes `key` from `tree`, as journaled at `seq`; returns the leaf if it changed.
    pub(super) fn apply_delete(
        &self,
        state: &mut State,
        tree: TreeId,
        key: &[u8],
        seq: u64,
    ) -> Result<Option<usize>, BtreeError> {
        let path = self.descend(state, tree, key, 0)?;
        let slot = path[path.len() - 1].slot;
        let Body::Leaf(entries) = &state.cache.node(slot).image.body else {
            unreachable!("descend to level 0 ends at a leaf");
        };
        let Ok(index) = entries.binary_search_by(|(entry_key, _)| (**entry_key).cmp(key)) else {
            return Ok(None);
        };
        self.mark_dirty(state, slot, seq)?;
        let (entries, encoded) = state.cache.leaf_mut(slot);
        let (old_key, old_value) = entries.remove(index);
        *encoded -= leaf_entry_bytes(old_key.len(), old_value.len());
        state.cache.adjust_memory(
            slot,
            heap_bytes(old_key.len()) + heap_bytes(old_value.len()),
            0,
        );
        Ok(Some(slot))
    }

    /// Removes every key in `start..end` from `tree`, as journaled at `seq`; returns the
    /// leaves changed.
    pub(super) fn apply_delete_range(
        &self,
        state: &mut State,
        tree: TreeId,
        start: &[u8],
        end: Option<&[u8]>,
        seq: u64,
    ) -> Result<Vec<usize>, BtreeError> {
        let mut changed = Vec::new();
        if end.is_some_and(|end| end <= start) {
            return Ok(changed);
        }
        let mut path = self.descend(state, tree, start, 0)?;
        loop {
            let slot = path[path.len() - 1].slot;
            let leaf = state.cache.node(slot);
            let Body::Leaf(entries) = &leaf.image.body else {
                unreachable!("range deletes walk leaves");
            };
            let first = entries.partition_point(|(key, _)| **key < *start);
            let last = match end {
                Some(end) => entries.partition_point(|(key, _)| **key < *end),
                None => entries.len(),
            };
            let upper_past_end = match (&leaf.image.upper, end) {
                (None, _) => true,
                (Some(upper), Some(end)) => **upper >= *end,
                (Some(_), None) => false,
            };
            if first < last {
                self.mark_dirty(state, slot, seq)?;
                state.cache.update(slot, |node| {
                    if let Body::Leaf(entries) = &mut node.image.body {
                        entries.drain(first..last);
                    }
                });
                changed.push(slot);
            }
            if upper_past_end || !self.next_leaf(state, &mut path)? {
                return Ok(changed);
            }
        }
    }

    /// Loads every node a transaction's updates will touch, so applying them cannot fail
    /// on a read once they are journaled. Returns the slots of the leaves the update
    /// touches (one for a key, every leaf of a range).
    pub(super) fn load_for_update(
        &self,
        state: &mut State,
        tree: TreeId,
        start: &[u8],
        end: Option<Option<&[u8]>>,
    ) -> Result<Vec<usize>, BtreeError> {
        let mut path = self.descend(state, tree, start, 0)?;
        let mut leaves = vec![path[path.len() - 1].slot];
        let Some(end) = end else {
            return Ok(leaves);
        };
        // A scan with no limit visits (and so loads) every leaf of the range.
        loop {
            let leaf = state.cache.node(path[path.len() - 1].slot);
            let upper_past_end = match (&leaf.image.upper, end) {
                (None, _) => true,
                (Some(upper), Some(end)) => **upper >= *end,
                (Some(_), None) => false,
            };
            if upper_past_end || !self.next_leaf(state, &mut path)? {
                return Ok(leaves);
            }
            leaves.push(path[path.len() - 1].slot);
        }
    }

    /// The consistency walk behind [`Btrees::check`](super::Btrees::check). Walks with an
    /// explicit stack of child descriptions (not slots), so clean nodes can be evicted as it
    /// goes and a tree larger than the cache can be checked.
    pub(super) fn check(
        &self,
        state: &mut State,
        trees: &[TreeId],
    ) -> Result<CheckReport, BtreeError> {
        struct Pending {
            block: u64,
            level: u8,
            lower: Box<[u8]>,
            upper: Option<Box<[u8]>>,
        }
        let mut report = CheckReport {
            keys: vec![0; TreeId::ALL.len()],
            nodes: Vec::new(),
        };
        let roots = state.roots.clone();
        let target = state.cache.budget() / 8 * 7;
        for &tree in trees {
            let root = state.cache.node(roots[tree.index()]);
            let mut stack = vec![Pending {
                block: root.block,
                level: root.image.level,
                lower: root.image.lower.clone(),
                upper: root.image.upper.clone(),
            }];
            while let Some(pending) = stack.pop() {
                let slot = match state.cache.slot_of_block(pending.block) {
                    Some(slot) => slot,
                    None => self.read_node(
                        state,
                        tree,
                        pending.block,
                        Some(pending.level),
                        Some((&pending.lower, pending.upper.as_deref())),
                    )?,
                };
                let node = state.cache.node(slot);
                report.nodes.push((tree, node.image.level, node.block));
                let invalid = |why: &str| BtreeError::CorruptNode {
                    tree,
                    block: node.block,
                    defect: node::NodeDefect::Malformed(format!("in memory: {why}")),
                };
                if node.image.level != pending.level
                    || node.image.lower != pending.lower
                    || node.image.upper != pending.upper
                {
                    return Err(invalid("level or bounds differ from the parent's"));
                }
                let keys: Vec<&[u8]> = (0..node.image.body.len())
                    .map(|index| node.image.body.key(index))
                    .collect();
                if keys.windows(2).any(|pair| pair[0] >= pair[1]) {
                    return Err(invalid("keys out of order"));
                }
                let lower = &*node.image.lower;
                let upper = node.image.upper.as_deref();
                if keys
                    .iter()
                    .any(|key| *key < lower || upper.is_some_and(|upper| *key >= upper))
                {
                    return Err(invalid("key outside the node's bounds"));
                }
                if node.is_leaf() {
                    report.keys[tree.index()] += keys.len() as u64;
                } else {
                    if keys.first() != Some(&lower) {
                        return Err(invalid("first child not at the lower bound"));
                    }
                    let children = node.children();
                    // Pushed in reverse so children are visited in key order.
                    for index in (0..children.len()).rev() {
                        stack.push(Pending {
                            block: children[index].1,
                            level: node.image.level - 1,
                            lower: children[index].0.clone(),
                            upper: match children.get(index + 1) {
                                Some((next, _)) => Some(next.clone()),
                                None => node.image.upper.clone(),
                            },
                        });
                    }
                }
                if state.cache.memory() > state.cache.budget() {
                    state.cache.evict_clean(target, &roots);
                }
            }
        }
        Ok(report)
    }
}
