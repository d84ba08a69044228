//! A read-only mount made writable (`mount -o remount,rw`).
//!
//! A read-only mount reads the image and changes nothing in it: recovery
//! replays the journal into the b-trees in memory, its writes (rebuilt
//! nodes, a torn journal tail zeroed) stay in an overlay over the image,
//! no orphan is deleted, the event log hands out ids it does not keep, and
//! no writeback thread runs. Made writable, it does what a read-write mount
//! does at mount and ends up where that mount would have been:
//!
//! 1. the overlay writes what it holds to the image and passes everything
//!    through from then on. Nothing durable refers to those writes yet (a
//!    commit would), so their order does not matter, and a crash midway
//!    leaves the image as the read-only mount found it, for the next
//!    mount's recovery;
//! 2. the superblock counts the mount and says dirty (with this build's
//!    features), as a read-write mount's does before any change (here
//!    first, so a device that refuses writes fails the remount before
//!    anything that cannot be undone);
//! 3. the event log reserves ids and writes this mount's records;
//! 4. the data claims recovery kept are recorded durable, orphans are
//!    deleted, the live inode count is recorded;
//! 5. the writeback thread starts, the gate lets writers in, the bad
//!    blocks and lost data media failures marked in memory meanwhile are
//!    recorded (and the background scrub starts, if asked for).
//!
//! A failure leaves the mount read-only. After one in steps 1 and 2 a
//! second try goes through the steps again (the mount is counted once);
//! one in step 4 is a metadata failure like any other (reported, and the
//! `errors=` policy acts), and the journal stays failed. What cannot be
//! made writable is refused before anything changes: a mount made
//! read-only by an error or a shutdown (unmount and fsck it), also a
//! read-only mount whose `errors=remount-ro` policy acted on a failure it
//! met (it must not write on damaged metadata), an image with features
//! this build cannot write, a device that still refuses writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::background::Background;
use super::error::{FsError, FsResult};
use super::events::Notice;
use super::gate::LifeState;
use super::health::Incident;
use super::scrubbing::BackgroundScrub;
use super::settings::SettingsChange;
use super::Filesystem;
use crate::device::{BlockDevice, IoClass, OverlayDevice};
use crate::format::event_log::TEXT_CAPACITY;
use crate::format::{write_superblocks, ErrorKind, Features, Superblock};
use crate::inode::{FileError, Namespace, NamespaceResult};
use crate::journal::{Journal, JournalError};

/// What a mount read-only by its options keeps until made writable.
pub(super) struct ReadOnlyMount {
    /// What keeps its writes in memory, over the image.
    overlay: Arc<OverlayDevice<Arc<dyn BlockDevice>>>,
    /// Held while being made writable: one at a time.
    making_writable: Mutex<()>,
    /// A try counted the mount in the superblock (written, or tried: a
    /// copy may have been): a second try does not count it again, and the
    /// image is no longer as the mount found it (the error record is
    /// saved).
    mount_counted: AtomicBool,
    /// Why the mount can never be made writable, once something made it
    /// so: the `errors=remount-ro` policy acted while it was read-only
    /// (its gate was already), or the journal failed while it was being
    /// made writable.
    kept_read_only: OnceLock<String>,
}

impl ReadOnlyMount {
    pub(super) fn new(overlay: Arc<OverlayDevice<Arc<dyn BlockDevice>>>) -> ReadOnlyMount {
        ReadOnlyMount {
            overlay,
            making_writable: Mutex::new(()),
            mount_counted: AtomicBool::new(false),
            kept_read_only: OnceLock::new(),
        }
    }

    /// The mount stays read-only for good, for `why` (the first reason is
    /// kept). Returns whether this is the first time.
    pub(super) fn keep_read_only(&self, why: String) -> bool {
        self.kept_read_only.set(why).is_ok()
    }

    /// Why the mount stays read-only for good, if it does.
    pub(super) fn kept_read_only(&self) -> Option<&str> {
        self.kept_read_only.get().map(String::as_str)
    }

    /// Whether a try to make the mount writable already wrote the image
    /// (the superblock): from then on it is not the image the mount found.
    pub(super) fn image_written(&self) -> bool {
        self.mount_counted.load(Ordering::Acquire)
    }
}

/// What a mount that may write does once recovery is done
/// (`settle_claims` first): after a crash (`crashed`, the journal), moves
/// the generation counter past what the crashed mount may have handed out;
/// deletes the orphans a crash left; records the live inode count. Returns
/// the orphans deleted and those that found no space yet.
pub(super) fn finish_recovery(
    namespace: &Namespace,
    crashed: Option<&Journal>,
) -> NamespaceResult<(usize, Vec<u64>)> {
    if let Some(journal) = crashed {
        namespace.skip_generations(generations_a_crash_may_have_used(journal))?;
    }
    let (purged, left) = namespace.purge_orphans()?;
    if !left.is_empty() {
        // The mount goes on: a full filesystem must stay mountable to be
        // emptied. The background thread tries again.
        eprintln!(
            "vigilfs: {} orphaned files could not be deleted yet: no space for their \
             deletion's b-tree nodes; tried again every writeback interval",
            left.len()
        );
    }
    // statfs's inode counts: an older image is counted once, here, before
    // the feature bit below says it keeps the count.
    namespace.record_live_inodes()?;
    Ok((purged.len(), left))
}

/// More generations than one mount can hand out in entries that never
/// became durable: each create is an entry payload of well over 64 bytes
/// (the inode record, its name, the counters), and every entry not yet
/// durable is in the journal's ring or in one of its few buffers.
fn generations_a_crash_may_have_used(journal: &Journal) -> u64 {
    journal.region_bytes() / 64 + (1 << 16)
}

/// What a mount that may write records in the superblock: this build's
/// features, the mount counted, the filesystem dirty. The caller writes it.
pub(super) fn record_writable_mount(superblock: &mut Superblock, now: u64) {
    // This build keeps bad-block and poison records: say so, for builds
    // that honour feature flags.
    superblock.features.ro_compat |= Features::RO_COMPAT_MEDIA_RECORDS;
    // And journals data claims from now on: builds without them must not
    // recover this image.
    superblock.features.incompat |= Features::INCOMPAT_DATA_CLAIMS;
    // And may cut a symbolic link's target into pieces.
    superblock.features.incompat |= Features::INCOMPAT_SYMLINK_PIECES;
    // And may keep an attribute under its name's digest.
    superblock.features.incompat |= Features::INCOMPAT_XATTR_DIGESTS;
    superblock.features.ro_compat |= Features::RO_COMPAT_INODE_COUNT;
    superblock.record_mount(now);
}

impl super::Shared {
    /// Whether this mount, read-only by its options, may still be made
    /// writable: nothing has kept it read-only for good, and it is not
    /// shut down.
    pub(super) fn may_be_made_writable(&self) -> bool {
        self.mounted_read_only.load(Ordering::Acquire)
            && matches!(self.gate.state(), LifeState::ReadOnly(_))
            && self
                .read_only_mount
                .as_ref()
                .is_some_and(|mount| mount.kept_read_only().is_none())
    }
}

impl Filesystem {
    /// Makes a read-only mount writable (see the module comment). The
    /// device below must take writes by now (a file opened again for
    /// writing). Nothing to do if the mount is writable already.
    pub fn make_writable(&self) -> FsResult<()> {
        let shared = &self.shared;
        let again = "unmount it and mount it again (after vigilfs fsck if it failed)";
        let state = shared.gate.state();
        let read_only_mount = match (&shared.read_only_mount, state) {
            (_, LifeState::ShutDown(why)) => {
                return Err(FsError::ShutDown(format!("{why}; {again}")));
            }
            (_, LifeState::Running | LifeState::Frozen) => return Ok(()),
            (Some(mount), LifeState::ReadOnly(_))
                if shared.mounted_read_only.load(Ordering::Acquire) =>
            {
                mount
            }
            (_, LifeState::ReadOnly(why)) => {
                return Err(FsError::ReadOnly(Some(format!("{why}; {again}"))));
            }
        };
        let _one_at_a_time = read_only_mount
            .making_writable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !shared.mounted_read_only.load(Ordering::Acquire) {
            // Made writable by the caller this one waited for.
            return Ok(());
        }
        if let Some(why) = read_only_mount.kept_read_only() {
            return Err(FsError::ReadOnly(Some(format!("{why}; {again}"))));
        }
        if let Some((first, _)) = shared.metadata.recovery.acknowledged_lost {
            // Recovery went on from before flushed entries that are gone
            // (a disk that dropped flushes): the trees it rebuilt may point
            // at blocks reused since, and writing would build on them.
            return Err(FsError::ReadOnly(Some(format!(
                "journal entries from {first} on were acknowledged durable and are lost (the \
                 device dropped flushes): this mount replayed the journal from before them and \
                 stays read-only; copy out what it can read, then make the filesystem again"
            ))));
        }
        if let Some((tree, error)) = shared.metadata.trees.unreadable_trees().into_iter().next() {
            // Writing would build on a tree whose records are unknown, and
            // orphans and claims are settled through it.
            return Err(FsError::ReadOnly(Some(format!(
                "the {tree} b-tree could not be read at mount ({error}): the mount stays \
                 read-only; copy out what it can read"
            ))));
        }
        let unknown = shared.superblock().features.ro_compat & !Features::KNOWN_RO_COMPAT;
        if unknown != 0 {
            return Err(FsError::ReadOnly(Some(format!(
                "the filesystem uses features this build cannot write (ro_compat {unknown:#x})"
            ))));
        }
        let not_made = |what: &str, error: &dyn std::fmt::Display| {
            FsError::NotMadeWritable(format!("{what}: {error}"))
        };
        read_only_mount
            .overlay
            .write_through(IoClass::Metadata)
            .map_err(|error| not_made("writing what recovery left in memory", &error))?;
        {
            // First of what a read-write mount writes, and the one a device
            // that refuses writes fails with little changed: the journal's
            // failures below stay (a failed journal never writes again).
            // Counted once, however often it is tried: a copy written by a
            // try that failed on another counts the mount already.
            let mut superblock = shared.superblock();
            if !read_only_mount.mount_counted.swap(true, Ordering::AcqRel) {
                record_writable_mount(&mut superblock, super::health::seconds_now());
            }
            if let Err(error) = write_superblocks(shared.device.as_ref(), &mut superblock) {
                drop(superblock);
                // The copies that were written count the mount and others
                // do not: an error, recorded (the unmount or the next try
                // writes every copy again), though no metadata is lost.
                shared.health.report(&Incident {
                    kind: ErrorKind::Metadata,
                    errno: libc::EIO,
                    inode: None,
                    range: None,
                    block: None,
                    origin: "remount read-write: superblock write failed",
                });
                return Err(not_made(
                    "writing the superblock (the copies written count the mount; the next \
                     try, or the unmount, writes them all again)",
                    &error,
                ));
            }
        }
        if let Err(why) = shared.health.log().make_writable() {
            // As at mount: the log stays in memory, its status says why.
            eprintln!("vigilfs: the event log stays in memory only: {why}");
        }
        // A failure here is the metadata's: reported and counted, and the
        // errors= policy acts (remount-ro keeps the mount read-only); a
        // failed journal never writes again, so the mount stays read-only.
        let settled = shared
            .metadata
            .journal
            .settle_claims()
            .map_err(|error| FsError::File(FileError::Journal(error)));
        let deleted = shared
            .observe("remount read-write", settled)
            .and_then(|()| {
                let crashed = shared.recovered.then_some(&*shared.metadata.journal);
                let deleted = finish_recovery(&shared.namespace, crashed).map_err(FsError::from);
                shared.observe("remount read-write", deleted)
            });
        let (purged, left) = deleted.map_err(|error| {
            let Some(failed) = shared.metadata.journal.error() else {
                return error;
            };
            // The journal's words say "after an earlier failure": the
            // failure was this try's.
            let cause = match failed {
                JournalError::Failed(cause) => *cause,
                other => other,
            };
            let why = format!("the journal failed while it was being made writable ({cause})");
            read_only_mount.keep_read_only(why.clone());
            FsError::NotMadeWritable(why)
        })?;
        if purged > 0 {
            // The deletions a read-write mount's recovery would have
            // announced.
            shared.health.notice(&Notice::Recovery {
                orphans: purged as u64,
            });
        }
        shared.orphans_purged.fetch_add(purged, Ordering::AcqRel);
        shared.defer_orphans(left);
        // Writers are let in only once the writeback thread runs: a mount
        // that cannot start it fails, and so does this.
        let background = Background::start(Arc::clone(&self.shared))
            .map_err(|error| not_made("starting the writeback thread", &error))?;
        let _ = self.background.set(background);
        if !shared.gate.make_writable() {
            // Shut down meanwhile: nothing more is written.
            return Err(FsError::ShutDown(
                "shut down while being made writable".into(),
            ));
        }
        shared.mounted_read_only.store(false, Ordering::Release);
        // The transport's mount turns read-write with this (the kernel's
        // flag changes right after): told so again, it is no change.
        shared.transport_read_only.store(false, Ordering::Release);
        // Taken after the gate opened: a failure handled from now on is
        // recorded by its handler.
        shared.record_held_marks();
        let change = SettingsChange {
            read_only: Some(false),
            ..SettingsChange::default()
        };
        shared.health.notice(&Notice::Settings {
            change: &change.summary(TEXT_CAPACITY),
            read_only: Some(false),
        });
        if let Some(interval) = shared.options.scrub_interval {
            match BackgroundScrub::start(Arc::clone(&self.shared), interval) {
                Ok(scrub) => {
                    let _ = self.background_scrub.set(scrub);
                }
                // As a mount goes on without the thread's other work.
                Err(error) => eprintln!("vigilfs: the background scrub did not start: {error}"),
            }
        }
        Ok(())
    }
}
