//! Opening a filesystem's metadata: the journal (replaying what it holds),
//! the allocator (rebuilt from the reverse map and the bad-block list as the
//! trees open), the b-trees recovered on top, and the poisoned file blocks
//! and lost file bytes read from them.
//!
//! Everything that works on a filesystem's trees opens them through here —
//! mkfs after formatting, fsck on its dry-run overlay, tests, and later the
//! mount — so the order of these steps lives in one place: the journal must
//! replay before the trees recover from it, and the allocator must be the
//! trees' node allocator so that free space and the reverse map agree.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use thiserror::Error;

use crate::alloc::Allocator;
use crate::btree::{BtreeError, Btrees, BtreesOptions};
use crate::device::BlockDevice;
use crate::format::{Region, Superblock};
use crate::journal::{Journal, JournalError, JournalOptions, RecoveryReport};
use crate::lost_data::{LostData, LostRecordError};
use crate::poison::{PoisonMap, PoisonRecordError};

/// Why the metadata could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The journal could not be read or replayed.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The b-trees could not be recovered.
    #[error("b-trees: {0}")]
    Btree(#[from] BtreeError),
    /// The poison records could not be read.
    #[error("poison records: {0}")]
    Poison(#[from] PoisonRecordError),
    /// The lost-data records could not be read.
    #[error("lost-data records: {0}")]
    Lost(#[from] LostRecordError),
}

/// A filesystem's open metadata.
pub struct Metadata {
    /// The journal.
    pub journal: Arc<Journal>,
    /// The allocator of the main region.
    pub allocator: Arc<Allocator>,
    /// The b-trees.
    pub trees: Btrees,
    /// File blocks whose data a media failure took: reads of them fail.
    pub poison: PoisonMap,
    /// File bytes whose write-back from a shared mapping was refused:
    /// reads of them fail until they are written again.
    pub lost: LostData,
    /// What journal replay found.
    pub recovery: RecoveryReport,
    /// Where the event log's records live, if the image has the region
    /// (only named here: the mounted layer writes it).
    pub event_log: Option<Region>,
    /// Serialises read-modify-commit transactions on inode records (see
    /// [`Metadata::lock_records`]).
    record_writer: Mutex<()>,
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
        let poison = PoisonMap::load(&trees)?;
        let lost = LostData::load(&trees)?;
        Ok(Metadata {
            journal,
            allocator,
            trees,
            poison,
            lost,
            recovery: replay.report,
            event_log: superblock.event_log,
            record_writer: Mutex::new(()),
        })
    }

    /// The lock every read-modify-commit transaction on inode, entry and
    /// extent records holds from its first read to its commit: b-tree
    /// transactions do not detect conflicts, and the namespace and the data
    /// path both rewrite inode records.
    pub fn lock_records(&self) -> MutexGuard<'_, ()> {
        // The guarded state is the b-trees, which a panic inside a
        // transaction leaves uncommitted, not half-changed.
        self.record_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `read`, several record reads that must agree with each other
    /// (an entry and the inode it names, an inode and its symlink target,
    /// a reverse-map record and its file), without the record lock: each
    /// read sees committed state, but a commit can land between two of
    /// them. When `read` fails in a way `disagree` says such a commit can
    /// cause, it runs again under the record lock, where none can: what it
    /// finds then is the answer, corruption included. Readers never wait
    /// for writers unless they met one.
    pub fn read_records<T, E>(
        &self,
        read: impl Fn() -> Result<T, E>,
        disagree: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        match read() {
            Err(error) if disagree(&error) => {
                let _records = self.lock_records();
                read()
            }
            result => result,
        }
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
