//! Mounting: the options a mount takes, why one fails, and the steps of
//! [`Filesystem::mount`].
//!
//! The order of the steps is the contract. The event log opens first, so
//! its MOUNT record comes before anything recovery reports; the journal
//! is replayed before any file is reached; orphans are purged before lost
//! data is loaded (a purged orphan's loss goes with it); damage found on
//! the way (salvaged trees, lost journal entries, damaged superblock
//! copies) is reported once the error record and the log exist, so it is
//! counted and remembered, not only healed; and the failure intake, which
//! holds what the device reported meanwhile, is opened last, once the
//! mount can attribute it. Nothing here panics on a damaged or foreign
//! image: every refusal is a [`MountError`] saying what is wrong.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::background::Background;
use super::events::{EventLog, EventLogEnd, HeaderDamage, Notice, Writer};
use super::faults::Faults;
use super::gate::Gate;
use super::handles::Handles;
use super::health::{seconds_now, Detail, Health, Incident};
use super::media::{Media, Worker};
use super::read_write::{finish_recovery, record_writable_mount, ReadOnlyMount};
use super::scrubbing::BackgroundScrub;
use super::settings::{LiveSettings, Settings};
use super::unsynced::Changes;
use super::{Filesystem, LifeState, Shared};
use crate::btree::{BtreeError, BtreesOptions, TreeId};
use crate::device::{BlockDevice, FaultPlan, FileFaults, OverlayDevice, StoppableDevice};
use crate::failure::{Intake, DEFAULT_INTAKE_CAPACITY};
use crate::format::{
    read_superblock, read_superblock_copy, torn_by_one_crash, write_superblocks, ErrorKind,
    ErrorsPolicy, Features, FormatError, FsState, RejectedCopy, Superblock, SuperblockCopy,
};
use crate::inode::{
    FileError, FileType, Files, FsyncErrors, Namespace, NamespaceError, Xattrs, ROOT_INO,
};
use crate::journal::{JournalOptions, RecoveryReport};
use crate::metadata::{Metadata, OpenError};
use crate::writeback::WritebackFailure;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Refuse every change (`ro`). The journal is still replayed.
    pub read_only: bool,
    /// The `errors=` policy; `None` uses the one mkfs recorded.
    pub errors: Option<ErrorsPolicy>,
    /// How often the background thread writes back dirty data.
    pub writeback_interval: Duration,
    /// Dirty data above which writers wake the background thread; at twice
    /// this, a writer writes back itself before returning.
    pub dirty_limit_bytes: u64,
    /// Clean cached data above which the oldest clean pages are evicted.
    pub cache_bytes: u64,
    /// What fsync reports while writeback keeps failing: until the data
    /// is durable (the default) or once per open file, as Linux.
    pub fsync_errors: FsyncErrors,
    /// Write a replaced file's new data back before what makes the
    /// replacement durable (a rename over another file, the close of a
    /// file truncated to nothing and written again), as ext4's
    /// `auto_da_alloc` (the default). Off, a program that replaces a file
    /// without fsyncing the new copy can lose both copies to a power cut,
    /// as on filesystems without it: what the crash lab is asked to show.
    pub auto_da_alloc: bool,
    /// Check permissions with Linux's rules (a transport that lets the
    /// kernel check them may turn this off; checking twice is harmless).
    pub check_permissions: bool,
    /// The fault plan the device below follows, if any: rules aimed at
    /// files and operations share its ids and its log, and its data rules
    /// learn from the mount which file a request is for.
    pub fault_plan: Option<Arc<FaultPlan>>,
    /// Scrub in the background this often (`scrub_interval=`); `None`:
    /// only when asked.
    pub scrub_interval: Option<Duration>,
    /// Most bytes per second the background scrub reads; `None`: as fast
    /// as foreground I/O allows.
    pub scrub_rate: Option<u64>,
    /// Failed device ranges reported before the mount (a storage array's
    /// log, a scan daemon's pending reports): handed to the intake before
    /// the journal is replayed, handled once recovery completes, like a
    /// failure the device reports meanwhile.
    pub failures: Vec<(crate::device::ByteRange, crate::failure::Origin)>,
    /// When a read updates a file's access time (`relatime`, the
    /// default; `strictatime`; `noatime`).
    pub atime: AtimeUpdates,
    /// Whether listing a directory updates its access time as `atime`
    /// says for reads (`nodiratime` turns it off).
    pub directory_atime: bool,
    /// Where the event log of the engine a simulated power cut ended
    /// stood (the crash lab knows, its process lives on): the log resumes
    /// right after it, and what the cut lost of the log is counted
    /// exactly, instead of ids skipped and a loss of unknown size.
    pub events_before_power_cut: Option<EventLogEnd>,
}

/// When reading a file updates its access time. Through FUSE the kernel
/// leaves access times to the filesystem, so the mount's atime options
/// arrive here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AtimeUpdates {
    /// `relatime`: when the access time is not after the modification or
    /// change time, or is a day old.
    #[default]
    Relative,
    /// `strictatime`: on every read.
    Always,
    /// `noatime`: never.
    Never,
}

impl AtimeUpdates {
    /// The mount option that asks for it.
    pub fn name(self) -> &'static str {
        match self {
            AtimeUpdates::Relative => "relatime",
            AtimeUpdates::Always => "strictatime",
            AtimeUpdates::Never => "noatime",
        }
    }
}

impl std::str::FromStr for AtimeUpdates {
    type Err = String;

    /// The mount options' words: `relatime` (and `atime`,
    /// `nostrictatime`), `strictatime` (and `norelatime`), `noatime`.
    fn from_str(word: &str) -> Result<AtimeUpdates, String> {
        match word {
            "relatime" | "atime" | "nostrictatime" => Ok(AtimeUpdates::Relative),
            "strictatime" | "norelatime" => Ok(AtimeUpdates::Always),
            "noatime" => Ok(AtimeUpdates::Never),
            _ => Err(format!(
                "{word:?} is not an access-time option (relatime, strictatime, noatime)"
            )),
        }
    }
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            read_only: false,
            errors: None,
            writeback_interval: Duration::from_secs(5),
            dirty_limit_bytes: 64 << 20,
            cache_bytes: 256 << 20,
            fsync_errors: FsyncErrors::UntilDurable,
            auto_da_alloc: true,
            check_permissions: true,
            fault_plan: None,
            scrub_interval: None,
            scrub_rate: None,
            failures: Vec::new(),
            atime: AtimeUpdates::default(),
            directory_atime: true,
            events_before_power_cut: None,
        }
    }
}

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// No valid superblock (the format error says which copy failed how).
    #[error("{0}")]
    Superblock(#[from] FormatError),
    /// The journal or the b-trees could not be opened.
    #[error("opening the metadata: {0}")]
    Metadata(#[from] OpenError),
    /// The data path refused the filesystem (e.g. its block size).
    #[error("{0}")]
    Files(#[from] FileError),
    /// Deleting the orphans a crash left failed.
    #[error("deleting orphans: {0}")]
    Orphans(#[from] NamespaceError),
    /// Starting the writeback, failure or scrub thread failed.
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
    /// A failure reported with the mount options names no device bytes.
    #[error("a failure reported at mount: {0}")]
    ReportedFailure(#[from] crate::failure::FailureError),
    /// The root directory's record is missing, damaged or not a
    /// directory: nothing could be reached through the mount.
    #[error(
        "the root directory (inode {ROOT_INO}) {0}: `vigilfs fsck` tells what else is damaged"
    )]
    RootDirectory(String),
    /// A node of a tree a read-only mount can do without could not be
    /// read, on a mount that would write: a read-only one salvages around
    /// it.
    #[error(
        "opening the metadata: {0}; a read-only mount (`-o ro`) reads the rest: \
         operations on that tree fail with EIO, and other files can be copied out"
    )]
    UnreadableTree(BtreeError),
}

impl Filesystem {
    /// Mounts the filesystem on `device`, which [`make_filesystem`]
    /// formatted (see the crate's example): the superblock is validated,
    /// the journal replayed, orphans left by a crash deleted, and the
    /// background threads started. A damaged or foreign device is a
    /// [`MountError`] saying what is wrong, never a panic.
    ///
    /// [`make_filesystem`]: crate::mkfs::make_filesystem
    pub fn mount(
        device: Arc<dyn BlockDevice>,
        mut options: MountOptions,
    ) -> Result<Filesystem, MountError> {
        let loaded = read_superblock(device.as_ref())?;
        let mut superblock = loaded.superblock;
        let unknown_ro_compat = superblock.features.requires_read_only();
        if unknown_ro_compat {
            options.read_only = true;
        }
        // A read-only mount never changes the image, yet recovery replays
        // the journal into the b-trees, and a large replay writes rebuilt
        // nodes out to stay inside the node cache's budget: those writes
        // stay in memory, over the image (as fsck's dry run does).
        let read_only_overlay = options
            .read_only
            .then(|| Arc::new(OverlayDevice::new(device.clone())));
        let device: Arc<dyn BlockDevice> = match &read_only_overlay {
            Some(overlay) => overlay.clone(),
            None => device,
        };
        let device = Arc::new(StoppableDevice::new(device));
        // Failures the device reports from now on — during journal replay
        // and recovery too — wait in the intake until the mount is ready.
        let intake = Intake::new(DEFAULT_INTAKE_CAPACITY);
        device.set_media_failure_callback(intake.device_callback());
        for (range, origin) in &options.failures {
            // Checked before anything is offered: a range no block of the
            // device is in would be dropped later, silently.
            crate::failure::check_range(*range, device.length())?;
            intake.offer(*range, origin.clone());
        }
        let recovered = superblock.state == FsState::Dirty;
        let writes: Arc<dyn BlockDevice> = device.clone();
        // The log opens first, so the MOUNT record (and the ids a crash
        // skipped) comes before anything recovery reports.
        let opened_log = EventLog::open(
            Arc::clone(&writes),
            &superblock,
            options.read_only,
            options.events_before_power_cut,
        );
        let log = Arc::new(opened_log.log);
        let mount_count = u64::from(superblock.mount_count) + u64::from(!options.read_only);
        log.record_mount(recovered, mount_count, opened_log.skipped);
        let metadata = Arc::new(open_metadata(&writes, &superblock, options.read_only)?);
        {
            // Events are durable no later than the next commit: its flush
            // covers what is written just before it.
            let log = Arc::downgrade(&log);
            metadata.journal.set_commit_companion(Box::new(move || {
                if let Some(log) = log.upgrade() {
                    log.write_for_commit();
                }
            }));
        }
        let files = Files::new(writes, &superblock, Arc::clone(&metadata))?;
        files.set_cache_budget(options.cache_bytes);
        files.set_fsync_errors(options.fsync_errors);
        files.set_auto_da_alloc(options.auto_da_alloc);
        let namespace = Namespace::new(Arc::clone(&metadata));
        check_root_directory(&namespace, &metadata.recovery)?;
        let xattrs = Xattrs::new(Arc::clone(&metadata));
        let (orphans_purged, orphans_left) = if options.read_only {
            (0, Vec::new())
        } else {
            // Recovery kept entries whose data claims the next recovery
            // would check again: record them durable before any block they
            // claim can be freed and reused (nothing is, read-only).
            metadata
                .journal
                .settle_claims()
                .map_err(|error| MountError::Metadata(error.into()))?;
            finish_recovery(&namespace, recovered.then_some(&*metadata.journal))?
        };
        // After the purge: a purged orphan's lost data went with it
        // (review 33: it was still counted after a power cut).
        files.load_lost_data();
        let errors_policy = options.errors.unwrap_or(superblock.errors_policy);
        let fsid = u64::from_le_bytes(superblock.uuid.0[..8].try_into().expect("8 bytes"));
        if recovered {
            log.record_notice(&Notice::Recovery {
                orphans: orphans_purged as u64,
            });
        }
        let mut error_record = superblock.error_record.clone();
        let (errors_total, error_records) = &opened_log.durable_errors;
        error_record.catch_up_with_log(*errors_total, error_records);
        let health = Arc::new(Health::with_log(fsid, error_record, Arc::clone(&log)));
        let block_size = u64::from(superblock.layout.block_size);
        report_salvaged_trees(&health, &metadata, block_size);
        report_journal_losses(&health, &metadata.recovery);
        let mut cut_off_at_recovery: Vec<u64> = metadata
            .recovery
            .cut_off
            .iter()
            .chain(&metadata.recovery.unverified_after_flush)
            .copied()
            .collect();
        cut_off_at_recovery.sort_unstable();
        cut_off_at_recovery.dedup();
        // Superblock copies found damaged: a read-only mount cannot rewrite
        // them, and a scrub that finds one again has nothing new to say.
        let superblocks_known_bad = report_damaged_superblocks(
            &health,
            device.as_ref(),
            SuperblockInUse {
                superblock: &superblock,
                source: loaded.source,
                rejected: &loaded.rejected,
            },
            recovered,
            &opened_log.damaged_headers,
        );
        let faults = Arc::new(Faults::new(options.fault_plan.clone()));
        if let Some(plan) = &options.fault_plan {
            plan.set_file_faults(Arc::clone(&faults) as Arc<dyn FileFaults>);
        }
        let writeback_health = Arc::clone(&health);
        files.set_failure_listener(Box::new(move |failure| {
            report_writeback_failure(&writeback_health, failure);
        }));
        let state = if unknown_ro_compat {
            LifeState::ReadOnly(format!(
                "the filesystem uses features this build cannot write \
                 (ro_compat {:#x})",
                superblock.features.ro_compat & !Features::KNOWN_RO_COMPAT
            ))
        } else if options.read_only {
            read_only_state(&metadata)
        } else {
            record_writable_mount(&mut superblock, seconds_now());
            write_superblocks(device.as_ref(), &mut superblock)?;
            LifeState::Running
        };
        let mounted_read_only = options.read_only;
        let shared = Arc::new(Shared {
            device,
            metadata,
            namespace,
            files,
            xattrs,
            gate: Gate::new(state),
            health,
            handles: Handles::default(),
            superblock: Mutex::new(superblock),
            settings: LiveSettings::new(Settings {
                errors_policy,
                cache_bytes: options.cache_bytes,
                dirty_limit_bytes: options.dirty_limit_bytes,
                writeback_interval: options.writeback_interval,
                atime: options.atime,
                directory_atime: options.directory_atime,
            }),
            mounted_read_only: AtomicBool::new(mounted_read_only),
            read_only_mount: read_only_overlay.map(ReadOnlyMount::new),
            options,
            recovered,
            cut_off_at_recovery,
            orphans_purged: AtomicUsize::new(orphans_purged),
            journal_failure_seen: AtomicBool::new(false),
            reclaim_failure_announced: AtomicBool::new(false),
            node_write_failures_seen: AtomicU64::new(0),
            node_write_failure_announced: AtomicBool::new(false),
            superblock_failure_announced: AtomicBool::new(false),
            made_immutable: Default::default(),
            synchronous: Default::default(),
            lookups_hold_inodes: AtomicBool::new(false),
            deferred_orphans: Mutex::new(orphans_left),
            writes_stopped: AtomicBool::new(false),
            freezes_ended: Mutex::new(false),
            // A read-only mount's kernel mount is read-only too.
            transport_read_only: AtomicBool::new(mounted_read_only),
            attribute_listener: std::sync::RwLock::new(None),
            page_invalidator: std::sync::RwLock::new(None),
            read_only_listener: std::sync::RwLock::new(None),
            released_space: Default::default(),
            faults,
            changes: Changes::default(),
            media: Media::new(intake, superblocks_known_bad),
            fsync_latency: super::latency::Latency::default(),
            reads_reported: Default::default(),
        });
        start_threads(shared, log)
    }
}

/// Opens the journal (replaying it) and the b-trees. A read-only mount
/// salvages: around a tree it can do without and cannot read, so that
/// one bad node does not hide every file, and past a journal entry a
/// lying disk lost, from the newest whole chain before it, so that what
/// is left can be read.
fn open_metadata(
    device: &Arc<dyn BlockDevice>,
    superblock: &Superblock,
    read_only: bool,
) -> Result<Metadata, MountError> {
    let tree_options = BtreesOptions {
        salvage: read_only,
        ..BtreesOptions::default()
    };
    let journal_options = JournalOptions {
        salvage: read_only,
        ..JournalOptions::for_filesystem(superblock)
    };
    match Metadata::open(
        Arc::clone(device),
        superblock,
        journal_options,
        tree_options,
    ) {
        Ok(metadata) => Ok(metadata),
        // The hint only where a read-only mount reaches files: with the
        // names unreadable, none can be looked up.
        Err(OpenError::Btree(error @ BtreeError::CorruptNode { tree, .. }))
            if tree.salvageable() && tree != TreeId::Dirents && !read_only =>
        {
            Err(MountError::UnreadableTree(error))
        }
        Err(error) => Err(error.into()),
    }
}

/// Refuses a mount whose root directory is missing, damaged or not a
/// directory: nothing could be reached through it.
fn check_root_directory(
    namespace: &Namespace,
    recovery: &RecoveryReport,
) -> Result<(), MountError> {
    let why = match namespace.getattr(ROOT_INO) {
        Ok(root) if root.file_type() == FileType::Directory => return Ok(()),
        Ok(root) => format!(
            "is not a directory (its record says {:?})",
            root.file_type()
        ),
        Err(NamespaceError::NotFound) => {
            match (recovery.acknowledged_lost, recovery.lost_since_clean) {
                (Some((first, _)), _) => format!(
                    "is missing from what the journal could replay: entries from \
                 {first} on were flushed and are lost (the device dropped flushes)"
                ),
                // Not a mkfs that died: the journal is damaged (review 58: a
                // zeroed journal was answered "make the filesystem again").
                (None, Some((first, last))) => format!(
                    "is missing from what the journal could replay: entries {first}..={last}, \
                 the newest when the filesystem was unmounted cleanly, are missing or \
                 damaged"
                ),
                // fsck calls an image with no inode at all clean: what a mkfs
                // that died before its root leaves.
                (None, None) => "is missing (a mkfs that did not finish leaves none: make the \
                     filesystem again)"
                    .into(),
            }
        }
        Err(error) => format!("is damaged: {error}"),
    };
    Err(MountError::RootDirectory(why))
}

/// Trees a read-only mount salvaged around: counted and remembered at
/// once, not only when an operation meets them.
fn report_salvaged_trees(health: &Health, metadata: &Metadata, block_size: u64) {
    for (tree, error) in metadata.trees.unreadable_trees() {
        let block = error.corrupt_block();
        health.report(&Incident {
            kind: ErrorKind::Metadata,
            errno: libc::EIO,
            inode: None,
            range: block.map(|block| (block * block_size, block_size)),
            block,
            origin: &format!("{tree} b-tree unreadable: mounted read-only around it"),
        });
    }
}

/// Journal entries recovery had to give up: none of these losses may
/// pass in silence. (Each text fits an event's; the error record keeps
/// its start.)
fn report_journal_losses(health: &Health, recovery: &RecoveryReport) {
    let journal_loss = |origin: &str| {
        health.report(&Incident {
            kind: ErrorKind::Journal,
            errno: libc::EIO,
            inode: None,
            range: None,
            block: None,
            origin,
        });
    };
    if let Some(&first) = recovery.unmet_claims.first() {
        // Entries on the device whose data did not match: written but
        // never flushed, or, if an fsync had acknowledged them and no
        // later entry recorded that, rotted since (README: the one limit).
        // Recovery cut them off.
        journal_loss(&format!("recovery cut entries {first}+: data mismatch"));
    }
    if let Some((first, _)) = recovery.acknowledged_lost {
        // A read-only mount salvaged past entries a completed flush had
        // covered: acknowledged changes, from `first` on, are not in what
        // it shows.
        journal_loss(&format!(
            "flushed entries {first}+ lost; read-only from before"
        ));
    }
    if let Some((first, last)) = recovery.lost_since_clean {
        // Entries durable at the clean unmount, gone since: the medium (or
        // someone) damaged the journal. The mount goes on from the entries
        // before them (what they changed was written to the b-trees before
        // the unmount).
        journal_loss(&format!(
            "journal entries {first}..={last} lost since the clean unmount"
        ));
    }
}

/// The superblock copy the mount uses, and what it learnt reading it.
struct SuperblockInUse<'a> {
    superblock: &'a Superblock,
    /// The copy it came from.
    source: SuperblockCopy,
    /// Copies read and rejected before it.
    rejected: &'a [RejectedCopy],
}

/// Reports superblock copies (and event-log headers) found damaged, and
/// a copy in use older than another (its last write failed); returns
/// the device offsets of the damaged copies.
///
/// A copy found damaged after a clean stop is not a torn write: the
/// medium (or someone) changed it. The mount reads past it, and its next
/// write of that structure replaces it; reported here so the damage is
/// counted and remembered, not just healed. After a crash, a copy whose
/// checksum does not match may be one the crash tore (sectors of its old
/// and new contents: the header sector, either one, is whole), so only
/// other damage (a wrong magic, version or field, which no torn write
/// makes), or mismatches no single crash makes, are reported then. The
/// backups are read only when the primary fails: a mount reads them
/// here, as fsck does.
fn report_damaged_superblocks(
    health: &Health,
    device: &dyn BlockDevice,
    in_use: SuperblockInUse<'_>,
    recovered: bool,
    damaged_headers: &[HeaderDamage],
) -> Vec<u64> {
    let superblock = in_use.superblock;
    // An error about the block at device `offset`: the device range keeps
    // two copies' events apart.
    let block_size = u64::from(superblock.layout.block_size);
    let report_block = |kind: ErrorKind, offset: Option<u64>, origin: &str| {
        health.report(&Incident {
            kind,
            errno: libc::EIO,
            inode: None,
            range: offset.map(|offset| (offset, block_size)),
            block: offset.map(|offset| offset / block_size),
            origin,
        });
    };
    // Valid copies newer than the one in use: its last write failed (the
    // primary is written first, so no crash leaves it older).
    let mut newer: Vec<(SuperblockCopy, u64)> = Vec::new();
    let damaged: Vec<(SuperblockCopy, FormatError)> = SuperblockCopy::ALL
        .into_iter()
        .filter(|&copy| copy != in_use.source)
        .filter_map(|copy| {
            let error = match in_use.rejected.iter().find(|found| found.copy == copy) {
                Some(rejected) => rejected.error.clone(),
                None => match read_superblock_copy(device, copy) {
                    Ok(other) => {
                        if other.write_sequence > superblock.write_sequence {
                            newer.push((copy, other.write_sequence));
                        }
                        return None;
                    }
                    Err(error) => error,
                },
            };
            Some((copy, error))
        })
        .collect();
    if let Some(&(copy, sequence)) = newer.iter().max_by_key(|(_, sequence)| *sequence) {
        // One error: the copy in use missed a write (the first words are
        // what the error record keeps).
        report_block(
            ErrorKind::Metadata,
            in_use.source.offset(superblock.layout.device_length),
            &format!(
                "stale {}: {copy} is newer (write {sequence} > {}), its last write failed",
                in_use.source, superblock.write_sequence
            ),
        );
    }
    let mismatched: Vec<SuperblockCopy> = damaged
        .iter()
        .filter(|(_, error)| matches!(error, FormatError::ChecksumMismatch { .. }))
        .map(|(copy, _)| *copy)
        .collect();
    let torn_may_pass = recovered && torn_by_one_crash(&mismatched);
    let mut known_bad = Vec::new();
    let damaged_superblocks = damaged.into_iter().filter_map(|(copy, error)| {
        let maybe_torn = mismatched.contains(&copy) && torn_may_pass;
        (!maybe_torn).then(|| {
            let offset = copy.offset(superblock.layout.device_length);
            known_bad.extend(offset);
            (offset, format!("{copy}: {error}"))
        })
    });
    let damaged_headers = damaged_headers
        .iter()
        .filter(|_| !recovered)
        .map(|damage| (Some(damage.device_offset), damage.why.clone()));
    for (offset, why) in damaged_superblocks.chain(damaged_headers) {
        report_block(ErrorKind::Checksum, offset, &format!("mount found {why}"));
    }
    known_bad
}

/// Tells the event stream and the error record of a failed writeback
/// attempt, a retry's too; the data path's error words tell each loss
/// once. A file's first failure is its own event. Its retries failing
/// again are counted as one stream, whatever the file: damping keeps a
/// streak per key in a small table, and hundreds of files failing at
/// every writeback pass, each its own key, flooded the log and pushed
/// the mount's own records out (review 22).
fn report_writeback_failure(health: &Health, failure: &WritebackFailure) {
    let generation = failure.generation.map_or(0, |value| value as u32);
    // A retry names its file (review 44: the stream named none), not its
    // range: the stream's record spans files.
    let (range, origin) = if failure.again {
        (None, "writeback retried: failing again")
    } else {
        (Some((failure.offset, failure.length)), "writeback")
    };
    health.report_with(
        &Incident {
            kind: ErrorKind::Writeback,
            errno: failure.errno.get(),
            inode: Some((failure.ino, generation)),
            range,
            block: None,
            origin,
        },
        &Detail {
            // Where on the device a file's failure is (each retry may
            // land elsewhere: the stream keeps none).
            device_range: failure.device_bytes.filter(|_| !failure.again),
            across_files: failure.again,
            ..Detail::default()
        },
    );
}

/// Why a read-only mount is read-only, as its state says. Not to be made
/// writable when salvaged (see `make_writable`): no hint of `remount,rw`
/// then.
fn read_only_state(metadata: &Metadata) -> LifeState {
    let unreadable: Vec<&str> = metadata
        .trees
        .unreadable_trees()
        .iter()
        .map(|(tree, _)| tree.name())
        .collect();
    LifeState::ReadOnly(
        match (metadata.recovery.acknowledged_lost, unreadable.is_empty()) {
            (Some((first, _)), _) => format!(
                "mounted read-only from before journal entry {first}, flushed and lost \
                 (the device dropped flushes); copy out what reads, then make the \
                 filesystem again"
            ),
            (None, true) => "mounted read-only".into(),
            (None, false) => format!(
                "mounted read-only around the {} b-tree, which could not be read",
                unreadable.join(" and ")
            ),
        },
    )
}

/// Starts the mount's threads: the event writer, writeback (not
/// read-only), the failure worker once recovery is complete (what the
/// device reported meanwhile is handled now), and the background scrub
/// if asked for.
fn start_threads(shared: Arc<Shared>, log: Arc<EventLog>) -> Result<Filesystem, MountError> {
    let events = Some(Writer::start(log).map_err(MountError::Thread)?);
    let background = OnceLock::new();
    if !shared.options.read_only {
        let _ = background.set(Background::start(Arc::clone(&shared)).map_err(MountError::Thread)?);
    }
    shared.load_scrub_cursor();
    shared.media.intake.set_ready();
    let failures = Some(Worker::start(Arc::clone(&shared)).map_err(MountError::Thread)?);
    let background_scrub = OnceLock::new();
    if let Some(interval) = shared.options.scrub_interval {
        if !shared.options.read_only {
            let _ = background_scrub.set(
                BackgroundScrub::start(Arc::clone(&shared), interval)
                    .map_err(MountError::Thread)?,
            );
        }
    }
    Ok(Filesystem {
        shared,
        background,
        failures,
        background_scrub,
        events,
    })
}
