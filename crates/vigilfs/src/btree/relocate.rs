//! Moving one node off a failing block, and checking a node block on the
//! device: what the failure layer and scrub ask of the trees.
//!
//! A node whose block failed is safe as long as a trustworthy copy is in
//! memory: a cached node (clean: it equals what its block held when read
//! or written; dirty: it holds more) is written to a new block by the
//! ordinary copy-on-write path ([`Shared::write_node`]), which journals the
//! parent's new pointer and retires the old block, so nothing new is
//! needed to keep the trees consistent. A node not in memory is read first
//! — through its parent, so it is validated against the bounds its parent
//! gives it — and moved if it still reads back intact; otherwise its
//! contents are lost and the caller applies the `errors=` policy.

use super::node::{self, Expected};
use super::{usable, BtreeError, Btrees, Shared, TreeId};
use crate::device::IoClass;

/// What [`Btrees::relocate_node`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relocation {
    /// The node was written to a new block. `from_cache`: its copy was in
    /// memory (else it was read back intact from the failing block).
    Moved {
        /// Whether the copy came from the node cache.
        from_cache: bool,
    },
    /// The block holds no live node of that tree and level any more (it
    /// was written elsewhere meanwhile): nothing to do.
    NotLive,
}

impl Shared {
    /// Reads the block and validates it as a `tree` node at `level`,
    /// bounds unchecked (they are not known without the parent).
    fn read_unplaced(
        &self,
        block: u64,
        tree: TreeId,
        level: u8,
    ) -> Result<node::NodeImage, BtreeError> {
        let geometry = &self.geometry;
        if !geometry.main_blocks.contains(&block) {
            return Err(BtreeError::CorruptNode {
                tree,
                block,
                defect: node::NodeDefect::Malformed("block outside the main region".into()),
            });
        }
        let mut bytes = vec![0u8; geometry.block_size as usize];
        self.device.read_at(
            block * u64::from(geometry.block_size),
            &mut bytes,
            IoClass::Metadata,
        )?;
        let expected = Expected {
            block,
            tree,
            level: Some(level),
            bounds: None,
            uuid: &geometry.uuid,
            limits: geometry.limits,
            valid_blocks: geometry.main_blocks.clone(),
        };
        node::decode(&bytes, &expected).map_err(|defect| BtreeError::CorruptNode {
            tree,
            block,
            defect,
        })
    }
}

impl Btrees {
    /// Moves the `tree` node at `level` living at `block` to a new block
    /// (see the module comment). An error means the node could not be
    /// moved: its block did not read back intact (a device error or a
    /// corrupt node), or the trees failed.
    pub fn relocate_node(
        &self,
        block: u64,
        tree: TreeId,
        level: u8,
    ) -> Result<Relocation, BtreeError> {
        let shared = &self.shared;
        let mut state = shared.lock_state();
        usable(&state)?;
        let slot = match state.cache.slot_of_block(block) {
            Some(slot) => {
                let node = state.cache.node(slot);
                if node.image.tree != tree || node.image.level != level {
                    return Ok(Relocation::NotLive);
                }
                Some(slot)
            }
            None => None,
        };
        let (slot, from_cache) = match slot {
            Some(slot) => (slot, true),
            None => {
                let image = shared.read_unplaced(block, tree, level)?;
                let path = shared.descend(&mut state, tree, &image.lower, level)?;
                let slot = path[path.len() - 1].slot;
                let node = state.cache.node(slot);
                if node.block != block || node.image.level != level {
                    return Ok(Relocation::NotLive);
                }
                (slot, false)
            }
        };
        shared.write_node(&mut state, slot)?;
        shared.relieve_pressure(&mut state);
        Ok(Relocation::Moved { from_cache })
    }

    /// Reads `block` from the device (never the cache) and checks that it
    /// holds a valid `tree` node at `level`: what scrub verifies. The
    /// error names the block (a device error, or
    /// [`BtreeError::CorruptNode`]).
    pub fn verify_node_block(&self, block: u64, tree: TreeId, level: u8) -> Result<(), BtreeError> {
        self.shared.read_unplaced(block, tree, level).map(|_| ())
    }

    /// Whether a copy of the node at `block` is in memory.
    pub fn is_cached(&self, block: u64) -> bool {
        self.shared
            .lock_state()
            .cache
            .slot_of_block(block)
            .is_some()
    }
}
