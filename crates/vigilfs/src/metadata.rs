//! Opening a filesystem's metadata: the journal (replaying what it holds),
//! the allocator (rebuilt from the reverse map as the trees open), and the
//! b-trees recovered on top.
//!
//! Everything that works on a filesystem's trees opens them through here —
//! mkfs after formatting, fsck on its dry-run overlay, tests, and later the
//! mount — so the order of these steps lives in one place: the journal must
//! replay before the trees recover from it, and the allocator must be the
//! trees' node allocator so that free space and the reverse map agree.

use std::sync::Arc;

use thiserror::Error;

use crate::alloc::Allocator;
use crate::btree::{BtreeError, Btrees, BtreesOptions};
use crate::device::BlockDevice;
use crate::format::Superblock;
use crate::journal::{Journal, JournalError, JournalOptions, RecoveryReport};

/// Why the metadata could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The journal could not be read or replayed.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The b-trees could not be recovered.
    #[error("b-trees: {0}")]
    Btree(#[from] BtreeError),
}

/// A filesystem's open metadata.
pub struct Metadata {
    /// The journal.
    pub journal: Arc<Journal>,
    /// The allocator of the main region.
    pub allocator: Arc<Allocator>,
    /// The b-trees.
    pub trees: Btrees,
    /// What journal replay found.
    pub recovery: RecoveryReport,
}

impl Metadata {
    /// Opens the journal in `journal_options`' region, then the b-trees and
    /// their allocator.
    pub fn open(
        device: Arc<dyn BlockDevice>,
        superblock: &Superblock,
        journal_options: JournalOptions,
        options: BtreesOptions,
    ) -> Result<Metadata, OpenError> {
        let (journal, replay) = Journal::open(Arc::clone(&device), journal_options)?;
        let journal = Arc::new(journal);
        let allocator = Arc::new(Allocator::new(Arc::clone(&journal), superblock.layout.main));
        let trees = Btrees::open(
            device,
            Arc::clone(&journal),
            &replay,
            superblock,
            allocator.clone(),
            options,
        )?;
        Ok(Metadata {
            journal,
            allocator,
            trees,
            recovery: replay.report,
        })
    }

    /// Opens with the superblock's own journal and default b-tree options.
    pub fn open_default(
        device: Arc<dyn BlockDevice>,
        superblock: &Superblock,
    ) -> Result<Metadata, OpenError> {
        Metadata::open(
            device,
            superblock,
            JournalOptions::for_filesystem(superblock),
            BtreesOptions::default(),
        )
    }
}
