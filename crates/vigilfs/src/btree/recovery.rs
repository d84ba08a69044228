//! Recovery: rebuilding the trees at open from the newest roots and the journal.
//!
//! Every change to every level of a tree is journaled: leaf changes as transaction records,
//! interior changes (a child written elsewhere, a split, a merge, a new root's children) as
//! pointers records that overwrite the pointers of one key range at one level. And every
//! change not yet in a node's on-disk copy is pinned by that node, so it lies at or after
//! `last_seq`, where replay starts. Each level of a tree is therefore a map whose final
//! value is: what the node covering a key held on disk, overwritten by every record in the
//! replayed window touching that key, in order. Records older than the on-disk copy are
//! applied again harmlessly: every record overwrites keys with fixed values, and the newest
//! record touching a key decides it.
//!
//! So, per tree, from the newest roots record:
//!
//! 1. the root node is read; its level's map is its entries overwritten by that level's
//!    pointers records; the map is cut back into nodes along the bounds the level above
//!    gives (for the root: everything);
//! 2. each interior level's map names the blocks of the level below, which are read and
//!    overwritten the same way, down to level 1;
//! 3. leaves are read lazily; the transactions' updates are applied through the ordinary
//!    tree operations, in journal order.
//!
//! Records for levels above the final root are ignored (the tree shrank past them). Nodes
//! that differ from their on-disk copy are dirty and pin the oldest replayed seq; the roots
//! record found is pinned; then [`Journal::replay_done`](crate::journal::Journal::replay_done)
//! releases the replay's own holds. No node is written until recovery is complete.

use std::collections::BTreeMap;

use super::allocator::RecoveredTrees;
use super::node::{Body, NodeImage};
use super::record::{self, Pointers, Record, RootPointer, Update};
use super::{BtreeError, Shared, State, TreeId, Unreadable};
use crate::journal::Replay;

/// Rebuilds the trees of `shared` from `replay`. With `salvage`, a tree a read-only mount
/// can do without whose root or interior nodes cannot be read is kept unreadable instead of
/// failing the open (see [`BtreesOptions::salvage`](super::BtreesOptions::salvage)).
pub(super) fn recover(shared: &Shared, replay: &Replay, salvage: bool) -> Result<(), BtreeError> {
    let mut roots_found: Option<(u64, Vec<RootPointer>)> = None;
    let mut pointers: Vec<(u64, Pointers)> = Vec::new();
    let mut transactions: Vec<(u64, Vec<Update>)> = Vec::new();
    for entry in &replay.entries {
        for bytes in &entry.records {
            match record::decode(bytes)? {
                Record::Roots(roots) => roots_found = Some((entry.seq, roots)),
                Record::Pointers(change) => pointers.push((entry.seq, change)),
                Record::Transaction(updates) => transactions.push((entry.seq, updates)),
            }
        }
    }
    let mut state = shared.lock_state();
    let Some((roots_seq, roots)) = roots_found else {
        if !replay.entries.is_empty() {
            return Err(BtreeError::Recovery(
                "the journal holds entries but no roots record".into(),
            ));
        }
        drop(state);
        return create_empty_trees(shared);
    };
    let first_seq = replay.entries[0].seq;
    for tree in TreeId::ALL {
        let root = roots
            .iter()
            .find(|root| root.tree == tree)
            .ok_or_else(|| BtreeError::Recovery(format!("roots record lacks the {tree} tree")))?;
        if let Err(error) = rebuild_interior(shared, &mut state, *root, &pointers, first_seq) {
            let unreadable = match &error {
                _ if !salvage || !tree.salvageable() => return Err(error),
                BtreeError::CorruptNode {
                    tree: found,
                    block,
                    defect,
                } if *found == tree => Unreadable::Corrupt {
                    block: *block,
                    defect: defect.clone(),
                },
                BtreeError::Device(device) => Unreadable::Device(device.clone()),
                _ => return Err(error),
            };
            if state.roots.len() == tree.index() {
                // The root itself is unreadable: an empty leaf stands in its slot, so
                // that walks over every tree stay well formed; nothing reads it.
                let stand_in = NodeImage {
                    tree,
                    level: 0,
                    lower: Box::from(&[][..]),
                    upper: None,
                    body: Body::Leaf(Vec::new()),
                };
                let slot = state.cache.insert(stand_in, root.block);
                state.roots.push(slot);
            }
            state.unreadable[tree.index()] = Some(unreadable);
        }
    }
    // What the journal holds for an unreadable tree cannot be applied: no operation will
    // see that tree anyway.
    let readable: Vec<bool> = state.unreadable.iter().map(Option::is_none).collect();
    for (seq, updates) in &transactions {
        for update in updates
            .iter()
            .filter(|update| readable[update.tree().index()])
        {
            match update {
                Update::Put { tree, key, value } => {
                    shared.apply_put(&mut state, *tree, key, value, *seq)?;
                }
                Update::Delete { tree, key } => {
                    shared.apply_delete(&mut state, *tree, key, *seq)?;
                }
                Update::DeleteRange { tree, start, end } => {
                    shared.apply_delete_range(&mut state, *tree, start, end.as_deref(), *seq)?;
                }
            }
        }
    }
    shared.adopt_replayed_roots(roots, roots_seq)?;
    if shared.allocator.wants_used_blocks() {
        for (_, _, block) in shared.check(&mut state, &TreeId::ALL)?.nodes {
            shared.allocator.mark_in_use(block);
        }
    }
    // Before anything is written (below, splits and merges allocate), so that an allocator
    // deriving free space from a tree sees the recovered state.
    shared.allocator.recovered(&mut RecoveredTrees {
        shared,
        state: &mut state,
    })?;
    shared.journal.replay_done();
    state.writable = true;
    // Nodes the replay left too big or too small get their splits and merges now.
    let candidates: Vec<(usize, u64)> = state
        .cache
        .slots()
        .map(|slot| (slot, state.cache.node(slot).serial))
        .collect();
    shared.restructure(&mut state, candidates)?;
    shared.relieve_pressure(&mut state);
    Ok(())
}

/// Makes an empty leaf root for every tree and journals the roots durably. The allocator's
/// owner-index records for the new roots (see `allocator.rs`) are written straight into the
/// leaves of the tree they belong to, so the first roots record already names trees that
/// describe their own blocks.
fn create_empty_trees(shared: &Shared) -> Result<(), BtreeError> {
    let mut state = shared.lock_state();
    let mut roots = Vec::new();
    let mut blocks = Vec::with_capacity(TreeId::ALL.len());
    for _ in TreeId::ALL {
        match shared.allocator.allocate() {
            Ok(block) => blocks.push(block),
            Err(error) => {
                for &block in &blocks {
                    shared.allocator.free(block, 0);
                }
                return Err(error);
            }
        }
    }
    // Per tree, the owner-index entries its empty root starts with, in key order.
    type RootEntries = BTreeMap<Box<[u8]>, Box<[u8]>>;
    let mut entries: BTreeMap<TreeId, RootEntries> = BTreeMap::new();
    for (tree, &block) in TreeId::ALL.into_iter().zip(&blocks) {
        for update in shared
            .allocator
            .node_owner_updates(tree, &[(0, block)], &[])
        {
            match update {
                Update::Put { tree, key, value } => {
                    entries
                        .entry(tree)
                        .or_default()
                        .insert(key.into(), value.into());
                }
                other => {
                    return Err(BtreeError::Recovery(format!(
                        "the allocator asked to remove {:?} records from empty trees",
                        other.tree()
                    )))
                }
            }
        }
    }
    for (tree, block) in TreeId::ALL.into_iter().zip(blocks) {
        let image = NodeImage {
            tree,
            level: 0,
            lower: Box::from(&[][..]),
            upper: None,
            body: Body::Leaf(
                entries
                    .remove(&tree)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            ),
        };
        let bytes = super::node::encode(
            &image,
            block,
            &shared.geometry.uuid,
            shared.geometry.block_size,
        )?;
        shared.device.write_at(
            block * u64::from(shared.geometry.block_size),
            &bytes,
            crate::device::IoClass::Metadata,
        )?;
        let slot = state.cache.insert(image, block);
        state.roots.push(slot);
        roots.push(RootPointer {
            tree,
            level: 0,
            block,
        });
    }
    for root in &roots {
        shared
            .allocator
            .nodes_moved(root.tree, &[(0, root.block)], &[]);
    }
    shared.journal.replay_done();
    state.writable = true;
    drop(state);
    // The first entry's write is preceded by a device flush only if a pin was dropped, so
    // flush the new roots' blocks explicitly before the record that names them.
    shared.device.flush(crate::device::IoClass::Metadata)?;
    shared.journal_first_roots(roots)
}

/// One node of a level being rebuilt: its bounds and block.
struct Placed {
    lower: Box<[u8]>,
    upper: Option<Box<[u8]>>,
    block: u64,
}

/// Rebuilds the interior levels of one tree (and reads its root), top-down.
fn rebuild_interior(
    shared: &Shared,
    state: &mut State,
    root: RootPointer,
    pointers: &[(u64, Pointers)],
    first_seq: u64,
) -> Result<(), BtreeError> {
    let tree = root.tree;
    let root_slot = shared.read_node(
        state,
        tree,
        root.block,
        Some(root.level),
        Some((&[][..], None)),
    )?;
    state.roots.push(root_slot);
    debug_assert_eq!(state.roots.len(), tree.index() + 1);
    let mut level_nodes = vec![Placed {
        lower: Box::from(&[][..]),
        upper: None,
        block: root.block,
    }];
    for level in (1..=root.level).rev() {
        let mut map: BTreeMap<Box<[u8]>, u64> = BTreeMap::new();
        let mut slots = Vec::with_capacity(level_nodes.len());
        for placed in &level_nodes {
            let slot = match state.cache.slot_of_block(placed.block) {
                Some(slot) => slot,
                None => shared.read_node(
                    state,
                    tree,
                    placed.block,
                    Some(level),
                    Some((&placed.lower, placed.upper.as_deref())),
                )?,
            };
            map.extend(state.cache.node(slot).children().iter().cloned());
            slots.push(slot);
        }
        for (_, change) in pointers
            .iter()
            .filter(|(_, change)| change.tree == tree && change.level == level)
        {
            let doomed: Vec<Box<[u8]>> = map
                .range::<[u8], _>((
                    std::ops::Bound::Included(&change.lower[..]),
                    match &change.upper {
                        Some(upper) => std::ops::Bound::Excluded(&upper[..]),
                        None => std::ops::Bound::Unbounded,
                    },
                ))
                .map(|(key, _)| key.clone())
                .collect();
            for key in doomed {
                map.remove(&key);
            }
            for (key, block) in &change.children {
                map.insert(Box::from(&key[..]), *block);
            }
        }
        // Cut the map back into this level's nodes.
        for (placed, &slot) in level_nodes.iter().zip(&slots) {
            let entries: Vec<(Box<[u8]>, u64)> = map
                .range::<[u8], _>((
                    std::ops::Bound::Included(&placed.lower[..]),
                    match &placed.upper {
                        Some(upper) => std::ops::Bound::Excluded(&upper[..]),
                        None => std::ops::Bound::Unbounded,
                    },
                ))
                .map(|(key, block)| (key.clone(), *block))
                .collect();
            if entries.first().map(|(key, _)| key) != Some(&placed.lower) {
                return Err(BtreeError::Recovery(format!(
                    "{tree} level {level}: no child starts at the lower bound of the node at \
                     block {}",
                    placed.block
                )));
            }
            if state.cache.node(slot).children() != entries.as_slice() {
                state.cache.update(slot, |node| {
                    node.image.body = Body::Interior(entries);
                });
                shared.mark_dirty(state, slot, first_seq)?;
            }
        }
        let keys: Vec<(Box<[u8]>, u64)> = map.into_iter().collect();
        level_nodes = keys
            .iter()
            .enumerate()
            .map(|(index, (lower, block))| Placed {
                lower: lower.clone(),
                upper: keys.get(index + 1).map(|(next, _)| next.clone()),
                block: *block,
            })
            .collect();
    }
    Ok(())
}
