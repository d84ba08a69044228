//! The `vigilfs` command.
//!
//! Each subcommand lives in its own module; this file only parses the
//! command line and turns outcomes into exit codes. Every failure becomes a
//! one-line message on stderr and a non-zero exit, never a panic: see
//! [`failure::Failure`].

mod control;
mod crash_test_command;
mod crash_test_janitor;
mod crash_test_lab;
mod crash_test_reaper;
mod daemon_events;
mod daemon_log;
mod demo_command;
mod engine_slot;
mod events_command;
mod failure;
mod freeze_command;
mod fsck_command;
mod helper;
mod hooks;
mod host_space;
mod in_use;
mod inject_command;
mod inject_rules;
mod kernel_read_only;
mod media_command;
mod memory_trim;
mod metrics;
mod metrics_http;
mod mkfs_command;
mod mount_command;
mod mount_files;
mod mount_options;
mod mountinfo;
mod power_cut;
mod processes;
mod remount;
mod second_mount;
mod shutdown_command;
mod signals;
mod size;
mod status_command;
mod sync_command;
mod unsynced_command;
mod writable_image;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::failure::Failure;
use crate::size::ByteSize;

/// vigilfs: a journaled, checksummed filesystem that never loses an error.
#[derive(Parser, Debug)]
#[command(name = "vigilfs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a new vigilfs filesystem on an image file or block device.
    ///
    /// If IMAGE does not exist it is created as a sparse file of --size
    /// bytes (1G if not given). An existing vigilfs filesystem is never
    /// overwritten unless --force is given.
    ///
    /// Exit status: 0 made; 1 refused (IMAGE holds a filesystem and no
    /// --force, is mounted or in use, is a dangling link, or --size would
    /// shrink it or is given for a device); 2 bad arguments (a size out
    /// of range, a label too long); 8 it could not be made (the image
    /// cannot be created, opened or written).
    ///
    /// Examples:
    ///   vigilfs mkfs disk.img --size 4G
    ///   vigilfs mkfs /dev/loop0 --label data
    #[command(verbatim_doc_comment)]
    Mkfs {
        /// The image file or block device.
        image: PathBuf,
        /// Size of a new image: bytes, or with a suffix K, M, G, T (powers of 1024).
        #[arg(long, value_name = "SIZE")]
        size: Option<ByteSize>,
        /// Journal size (default 1/64 of the filesystem, between 1M and 128M).
        #[arg(long, value_name = "SIZE")]
        journal_size: Option<ByteSize>,
        /// Block size in bytes: 4096, the only size a mount serves (file
        /// data is cached and checksummed in 4 KiB pages).
        #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = parse_block_size)]
        block_size: u32,
        /// A label of up to 64 bytes.
        #[arg(long, default_value = "")]
        label: String,
        /// Overwrite an existing vigilfs filesystem.
        #[arg(long)]
        force: bool,
        /// Event log size: the ring of event records kept in the image
        /// (default 1/1024 of the filesystem, between 64K and 1M; at least
        /// three blocks; 0 for none). Set at mkfs only.
        #[arg(long, value_name = "SIZE", value_parser = size_or_zero)]
        event_log_size: Option<ByteSize>,
    },
    /// Check a vigilfs filesystem without changing it.
    ///
    /// Checks the superblock copies, the journal, every b-tree node, the
    /// namespace, the reverse map and free space, the bad-block list and
    /// poisoned data (data lost to a media failure is an error left, with
    /// its paths; bad blocks are listed). --data also reads every data
    /// block against its checksum.
    ///
    /// Exit status as fsck(8): 0 no errors, 4 errors left uncorrected,
    /// 8 operational error (the image cannot be read or holds no vigilfs
    /// filesystem), 16 usage error.
    ///
    /// Examples:
    ///   vigilfs fsck disk.img --json
    ///   vigilfs fsck --data disk.img
    #[command(verbatim_doc_comment)]
    Fsck {
        /// The image file or block device.
        image: PathBuf,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Also read every data block and verify its checksum; each bad
        /// one is an error left, named with the files that own it.
        #[arg(long)]
        data: bool,
    },
    /// Mount a vigilfs filesystem through FUSE and serve it.
    ///
    /// If IMAGE does not exist it is created as a sparse file of --size
    /// bytes (1G if not given) and formatted. The process serves the mount
    /// in the foreground, logging to stderr (mounted; every event, with the
    /// id and words of `vigilfs events`; unmounted), until SIGINT, SIGTERM,
    /// SIGHUP, SIGQUIT or `umount MOUNTPOINT`; all end in a clean unmount (a signal
    /// thaws a frozen filesystem first; a busy mount goes once its last
    /// file closes). With --daemon it returns once the filesystem is
    /// mounted and answering. It also serves the control socket that sync,
    /// freeze, thaw, shutdown, status and inject use.
    ///
    /// Options (-o, comma-separated, repeatable):
    ///   ro                    read-only: the image is never written (a journal to replay
    ///                         is replayed in memory) until a remount,rw
    ///   errors=continue|remount-ro|panic
    ///                         what a metadata error does (default: mkfs's)
    ///   cache=SIZE            clean-page budget (default 256M)
    ///   dirty=SIZE            dirty data that starts writeback (default 64M)
    ///   writeback_interval=SECONDS   background writeback period (default 5)
    ///   threads=N             FUSE worker threads
    ///   allow_other           let other users use the mount (the default
    ///                         when root mounts; permissions still apply)
    ///   noallow_other         only the user who mounts may use it
    ///   fsync_errors=until-durable|once
    ///                         while writeback keeps failing, fsync returns
    ///                         EIO until the data is durable (default), or
    ///                         once per open file as Linux does: later
    ///                         fsyncs return 0 while the same data keeps
    ///                         failing (it stays cached and is retried, but
    ///                         is not durable), to test a program against
    ///                         Linux's fsyncgate behaviour
    ///   noauto_da_alloc       do not write a replaced file's new data back
    ///                         before what makes the replacement durable (a
    ///                         rename over another file, the close of a file
    ///                         truncated to nothing), as ext4's option: a
    ///                         program that replaces a file without fsyncing
    ///                         the new copy then loses it to a power cut, as
    ///                         on filesystems without the heuristic (default:
    ///                         auto_da_alloc, written back first)
    ///   nokeep_cache          drop the kernel's cached pages of a file at
    ///                         each open (default: keep_cache, kept)
    ///   attr_timeout=SECONDS, entry_timeout=SECONDS
    ///                         how long the kernel trusts attributes and
    ///                         names (default 60)
    ///   scrub_interval=DURATION   scrub in the background this often
    ///                         (90m, 6h, 7d; seconds without a unit),
    ///                         resuming where the last one stopped
    ///   scrub_rate=SIZE       bytes per second the background scrub reads
    ///                         (default: as fast as foreground I/O allows)
    ///   failed=OFFSET:LENGTH  device bytes reported failed before the mount
    ///                         (repeatable): handled, as notify-failure does,
    ///                         once the journal is replayed
    ///   events_group=GROUP    members of GROUP may listen to events (which
    ///                         name files); root and the owner always may
    ///   metrics=ADDR:PORT     serve Prometheus metrics at http://ADDR:PORT/metrics
    ///   crashable             the crash lab's device: every write is held
    ///                         until a flush, so `vigilfs inject --power-cut`
    ///                         can lose (or --torn, tear) what was not synced
    ///   remount               (from mount -o remount,...) change the mount in
    ///                         place: ro/rw (rw of a mount started ro makes
    ///                         the daemon writable: orphans deleted, writeback
    ///                         started), nosuid/nodev/noexec, and the atime
    ///                         options, errors=, cache=, dirty= and
    ///                         writeback_interval= in the running daemon
    ///                         (announced as a `settings` event); the other
    ///                         options above need a new mount
    ///   relatime, strictatime, noatime
    ///                         when a read updates the access time (default
    ///                         relatime: when it is not after the last
    ///                         change, or is a day old). An open of a
    ///                         file whose access time is due drops its
    ///                         cached pages, so the read reaches vigilfs;
    ///                         strictatime drops them at every open
    ///   nodiratime / diratime listing a directory does not / does update
    ///                         its access time (default diratime)
    ///   nosuid, nodev / suid, dev
    ///                         ignore set-id bits, refuse device nodes / do
    ///                         not (default for root: suid,dev as other
    ///                         filesystems; other users always get nosuid,nodev)
    ///   noexec / exec         programs on the mount may not / may be run
    ///                         (default exec)
    ///   nosymfollow / symfollow
    ///                         path lookups do not / do follow symlinks on the
    ///                         mount (default symfollow; nosymfollow: root only)
    ///   rw, auto, noauto, user, nouser, defaults, _netdev
    ///   (and lazytime, x-*): accepted, ignored
    /// An unknown option is an error (exit status 2).
    ///
    /// As a mount(8) helper: `vigilfs install-mount-helper`, then
    ///   mount -t fuse.vigilfs IMAGE MOUNTPOINT -o OPTIONS
    /// (or an fstab line `IMAGE MOUNTPOINT fuse.vigilfs defaults 0 0`).
    ///
    /// Examples:
    ///   vigilfs mount disk.img /mnt/data
    ///   vigilfs mount disk.img /mnt/data --daemon -o errors=remount-ro,cache=1G
    ///   vigilfs mount new.img /mnt/new --size 4G --daemon --pid-file /run/new.pid
    #[command(verbatim_doc_comment)]
    Mount {
        /// The image file or block device (created if missing).
        image: PathBuf,
        /// The directory to mount on (made if missing).
        mountpoint: PathBuf,
        /// Mount options, comma-separated (see above).
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Return once mounted; the filesystem is served by a detached process.
        #[arg(long)]
        daemon: bool,
        /// Size of a new image: bytes, or with a suffix K, M, G, T.
        #[arg(long, value_name = "SIZE")]
        size: Option<ByteSize>,
        /// Write the serving process's pid to this file (removed at unmount).
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// With --daemon: append the log here instead of discarding it (in
        /// the foreground it goes to stderr; what it logs while starting,
        /// a journal replayed, is shown on stderr as well, but by
        /// mount(8)'s helper, which prints nothing). It names files, so it must be
        /// yours: made mode 0600 when new, refused when it is another
        /// user's file or symbolic link, a vigilfs image, a block device,
        /// under the mount point, or a FIFO nobody reads.
        #[arg(long, value_name = "FILE", requires = "daemon")]
        log_file: Option<PathBuf>,
    },
    /// Show the state of a mounted filesystem (consumes no error).
    ///
    /// Shows the state (running, frozen, read-only, shut-down) and why, the
    /// errors= policy, whether the journal was replayed, orphans purged,
    /// space, dirty and cached bytes, the journal, the pending writeback
    /// error (peeked: the next fsync or syncfs still gets it), the
    /// persistent error record (total, first and last error, per kind),
    /// open files, mount count and the fault rules. Anyone may ask.
    ///
    /// --json prints one object with these stable fields:
    ///   mountpoint, image, pid, owner_uid, mount_options,
    ///   image_identity {device, inode} (the file served, whatever its name),
    ///   image_moved (true when the image path no longer leads to it),
    ///   mountpoints (every mount point of the filesystem now, a second
    ///     mount of the image included; mountpoint is the one asked
    ///     about when the one the mount was started on is gone),
    ///   metrics_address (null when no -o metrics=),
    ///   state, state_reason,
    ///   mounted_read_only (the kernel refuses writes: remount,ro),
    ///   read_only_view (only this mount point is: a read-only bind),
    ///   errors_policy, recovered, orphans_purged,
    ///   settings {cache_bytes, dirty_limit_bytes, writeback_interval_seconds,
    ///             atime, directory_atime},
    ///   space {block_size, total_blocks, free_blocks, available_blocks (what
    ///          files can still get, as df shows), pending_blocks, bad_blocks},
    ///   dirty_bytes, cached_bytes, dirty_nodes,
    ///   lost_mapped {files, bytes} (data lost before it reached the device:
    ///                shared-mapping writes the mount refused, data an
    ///                unmount ended without),
    ///   journal {next_seq, last_seq, written_seq, durable_seq, open_seq,
    ///            free_blocks, total_blocks, pins, blocked, failed,
    ///            reclaim_failures, last_reclaim_failure, reclaim_failing},
    ///   writeback_error (null or {errno, name, message, reported}),
    ///   errors {total, first, last, per_kind {KIND: {count, last_time}}}
    ///     (first/last: null or {time, errno, name, inode, block, kind, origin};
    ///      kinds: writeback, read, metadata, checksum, journal, media, other),
    ///   open_files, mount_count,
    ///   events {newest_id, written_id, mount_first_id, persistent, slots,
    ///           records, lost_errors, held_errors, write_failures,
    ///           last_write_failure, unavailable},
    ///   fault_rules [{id, rule, matched, injected, bad_blocks_remaining,
    ///                 provisioned_blocks_used}],
    ///   crash_lab {crashable, drop_flushes, unflushed_bytes, power_cuts, failed_boot},
    ///   media {bad_blocks, bad [{start, blocks}], poisoned_runs,
    ///          poisoned [{ino, first_block, blocks, device_block, since, cause}],
    ///          notices {received, parked, overflowed, merged, waiting, handled},
    ///          healed_blocks, lost_blocks,
    ///          scrub {running, resume_at, last, interval_seconds}}
    ///
    /// Exit status: 0 shown, 8 no vigilfs mount there, or it could not
    /// answer (its process stopped).
    ///
    /// Examples:
    ///   vigilfs status /mnt/data
    ///   vigilfs status /mnt/data --json | jq .errors.total
    #[command(verbatim_doc_comment)]
    Status {
        /// The mount point.
        mountpoint: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write everything back and report a writeback error once (syncfs).
    ///
    /// syncfs(2) never reaches a FUSE filesystem; this does. Exit status 1
    /// with the error on stderr if a writeback error happened that nobody
    /// has been told of yet, 0 otherwise: like syncfs from a new opener,
    /// each error is reported once. Any user the mount lets in (as any
    /// process may call syncfs; allow_other, the default when root
    /// mounts), else root and the user who mounted. Another user hears
    /// each error once too, but leaves it for root's and the owner's
    /// next sync.
    ///
    /// Exit status: 0 everything durable and no error left untold; 1 a
    /// writeback error (told now, once) or what cannot be made durable; 8
    /// no vigilfs mount there, or it could not answer (its process
    /// stopped). Under -o fsync_errors=once (Linux's reporting) a failure
    /// is told once: later syncs exit 0 while the same data goes on
    /// failing, and `vigilfs unsynced` lists it.
    ///
    /// Example:
    ///   vigilfs sync /mnt/data; [ $? -eq 1 ] && echo "data was lost"
    #[command(verbatim_doc_comment)]
    Sync {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Freeze a mounted filesystem: writers wait, everything is written
    /// back, the superblock is marked clean; reads go on.
    ///
    /// Use it to take a consistent snapshot of the image. Root and the user
    /// who mounted only.
    ///
    /// The event log alone is still written, so errors seen during the
    /// freeze (reads go on, and can fail) are recorded even if the mount
    /// process dies before the thaw; a copy taken meanwhile may lack the
    /// newest events.
    ///
    /// Through FUSE, a create, unlink, mkdir or rename that waits for the
    /// thaw holds the kernel's lock of its directory: lookups and listings
    /// of that directory wait for the thaw too. Reads elsewhere go on.
    ///
    /// A freeze fails (exit status 1, the device's error) while data or
    /// metadata cannot be written back, say on a failing disk: the image
    /// would not be consistent. It is abandoned then and writers go on.
    ///
    /// Exit status: 0 frozen, 1 refused or failed (another user, the
    /// device's error), 8 no vigilfs mount there, or it could not answer.
    ///
    /// Example:
    ///   vigilfs freeze /mnt/data && cp --sparse=always disk.img backup.img; vigilfs thaw /mnt/data
    #[command(verbatim_doc_comment)]
    Freeze {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Thaw a frozen filesystem: the waiting writers go on.
    ///
    /// Example:
    ///   vigilfs thaw /mnt/data
    #[command(verbatim_doc_comment)]
    Thaw {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Shut a mounted filesystem down: no more data or metadata is
    /// written, writers get EIO, status shows shut-down.
    ///
    /// With --flush (the default) dirty data and the journal are written
    /// first as far as the device allows; --noflush stops at once, like a
    /// dying disk. Only the superblock's error record and the event log
    /// are still written, so the errors after it and the unmount are
    /// remembered. The mount stays until unmounted; the next mount recovers
    /// from the journal. A flush that fails (the data it could not write
    /// is lost, and the events name it) exits 1, shut down all the same;
    /// a mount already shut down is refused (exit 1): nothing more can be
    /// flushed. Root and the user who mounted only.
    ///
    /// Examples:
    ///   vigilfs shutdown /mnt/data
    ///   vigilfs shutdown /mnt/data --noflush
    #[command(verbatim_doc_comment)]
    Shutdown {
        /// The mount point.
        mountpoint: PathBuf,
        /// Write back and flush before shutting down (default).
        #[arg(long)]
        flush: bool,
        /// Shut down without writing anything more.
        // Both at once is a mistake to refuse, not one to guess at: one of
        // them loses data (review 43: the last one won).
        #[arg(long, conflicts_with = "flush")]
        noflush: bool,
    },
    /// The crash lab: inject faults into a running mount, cut its power,
    /// read the fault log; to see how programs cope with a failing disk.
    ///
    /// Device rules fail, delay or corrupt I/O by byte range (offsets on the
    /// image) and class, one rule per --class. --op rules fail or delay
    /// filesystem operations; --path aims a rule at files (their operations
    /// with --op, else their data reads and writes). Rules are kept until
    /// removed or the filesystem is unmounted, and survive power cuts; the
    /// ids added are printed. Every rule set or cleared and every time one
    /// fires is in the fault log. Root and the user who mounted only, for
    /// --list and --log too: rules name files (`vigilfs status` shows other
    /// users the rules with their paths hidden).
    ///
    /// A power cut (-o crashable mounts) loses everything no fsync,
    /// fdatasync or `vigilfs sync` that succeeded made durable: data not
    /// written back, and metadata (creates, renames, links...) whose
    /// journal entry was not flushed; but a file renamed over another (or
    /// truncated to nothing and written again) has its new data written
    /// back first, as on ext4, unless the mount has -o noauto_da_alloc.
    /// It returns once the mount serves the state after the crash; files
    /// open before it fail with EIO. It does not stop your program: a
    /// process that lives through the cut and opens paths afresh reaches
    /// the recovered filesystem, so stop it at the cut (or use `vigilfs
    /// crash-test`) before judging what survived. `vigilfs unsynced` lists
    /// what a cut would lose now.
    ///
    /// Examples:
    ///   vigilfs inject /mnt --fail-writes --class data     # writeback fails: fsync gets EIO
    ///   vigilfs inject /mnt --fail-writes --class all      # every write fails
    ///   vigilfs inject /mnt --fail-reads --range 64M:1M    # reads of those bytes fail
    ///   vigilfs inject /mnt --fail-writes --errno ENOSPC --class data,journal
    ///   vigilfs inject /mnt --fail-writes --flaky 5 --seed 42   # 5% of writes fail
    ///   vigilfs inject /mnt --fail-writes --class journal --skip 10 --limit 1
    ///   vigilfs inject /mnt --bad-blocks 20000:8           # media errors (4K blocks)
    ///   vigilfs inject /mnt --enospc-after 1000            # thin volume runs out
    ///   vigilfs inject /mnt --op fsync --path 'pg_wal/*' --nth 3   # the 3rd WAL fsync fails
    ///   vigilfs inject /mnt --op rename,unlink --errno ENOSPC --limit 1
    ///   vigilfs inject /mnt --fail-writes --path '**/*.db' # writeback of .db files fails
    ///   vigilfs inject /mnt --fail-reads --path t.db --drop-caches  # reads of t.db fail, cached or not
    ///   vigilfs inject /mnt --delay 5ms --jitter 2ms --io flush    # slow flushes
    ///   vigilfs inject /mnt --op fsync --delay 50ms        # slow fsyncs
    ///   vigilfs inject /mnt --corrupt-reads --class data --flaky 1  # silent bit flips
    ///   vigilfs inject /mnt --drop-flushes                 # a disk that lies about flushes
    ///   vigilfs inject /mnt --power-cut                    # lose what was not synced
    ///   vigilfs inject /mnt --power-cut --torn --seed 7    # ... and tear the rest
    ///   vigilfs inject /mnt --log --follow                 # what fired, as it fires
    ///   vigilfs inject /mnt --list
    ///   vigilfs inject /mnt --remove 3
    ///   vigilfs inject /mnt --clear
    // A negative count or seed is refused by its parser, which says why,
    // rather than taken for an unknown option.
    #[command(verbatim_doc_comment, allow_negative_numbers = true)]
    Inject(Box<inject_command::InjectArgs>),
    /// Tell a mounted filesystem that a range of its device failed (a
    /// report from SMART, EDAC, ndctl or a storage array) and see what
    /// became of everything that lived there.
    ///
    /// Every owner is found through the reverse map and acted on: file
    /// data is saved to new blocks when a copy survives (in memory, or
    /// still readable), otherwise it is lost and reads of exactly that
    /// range fail with EIO until it is rewritten, truncated or deleted (this
    /// survives remounts); b-tree nodes are moved from their cached copy,
    /// else the errors= policy applies; superblock copies are rewritten;
    /// every failed block of the main region goes on the persistent
    /// bad-block list and is never allocated again (the journal's ring and
    /// the event log's region cannot move: their blocks are reported). On
    /// a read-only or shut-down mount, or a device too full for the
    /// records, the report says what holds for this mount only. Each owner
    /// hit is an FS_ERROR event. Root and the user who mounted only.
    ///
    /// Exit status: 0 when nothing was lost, 4 when something was lost or
    /// could not be recorded, or the range holds data lost before and not
    /// rewritten since (as fsck and scrub), 3 when the mount is
    /// frozen and the failure is queued for the thaw (its outcome is not
    /// known yet: see `vigilfs events`), 8 when it could not be handled, 1
    /// when refused, 2 for bad arguments.
    ///
    /// Examples:
    ///   vigilfs notify-failure /mnt/data --offset 61440000 --length 4096 --origin "SMART 197"
    ///   vigilfs notify-failure /mnt/data --offset 60M --length 1M --json
    #[command(verbatim_doc_comment)]
    NotifyFailure {
        /// The mount point.
        mountpoint: PathBuf,
        #[command(flatten)]
        range: media_command::RangeArgs,
        /// Who reported it, kept in events and the error record.
        #[arg(long, value_name = "TEXT")]
        origin: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Which files (and metadata) own a range of the device?
    ///
    /// Lists every owner of the range: files with every path naming them
    /// (all hard links) and the file byte range, b-tree nodes (tree,
    /// level), the journal, superblock copies, free space, bad blocks. On
    /// a mount point it asks the mount (root and the user who mounted
    /// only: it names files); on an image it reads the image, which must
    /// not be mounted. What debugfs's icheck/ncheck and XFS's fsmap answer.
    ///
    /// --json prints {device_offset, device_length, owners [{device_offset,
    /// device_length, kind, ...}]}, each owner's other fields by its kind:
    ///   file        ino, generation, paths, file_offset, file_length,
    ///               unwritten (preallocated), poisoned (data lost)
    ///   node        tree, level, block
    ///   journal     live (entries replay still needs are there)
    ///   superblock  copy
    ///   free, bad, event_log, unused (the reserved first block): none
    ///
    /// Exit status: 0 listed, 1 refused by the mount (another user), 2 bad
    /// arguments (a range the device does not hold, or too long), 8 the
    /// mount or the image could not answer (an image in use included).
    ///
    /// Examples:
    ///   vigilfs owners /mnt/data --offset 61440000 --length 4096
    ///   vigilfs owners disk.img --offset 64M --length 1M --json
    #[command(verbatim_doc_comment)]
    Owners {
        /// A mount point, or an unmounted image.
        target: PathBuf,
        #[command(flatten)]
        range: media_command::RangeArgs,
        /// Print the owners as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read and verify every block the filesystem uses.
    ///
    /// Superblock copies, the journal entries still needed, every b-tree
    /// node and every data block against its checksum: each block as it
    /// is stored, found through the reverse map. How the structures point
    /// at one another (a node's children, where an extent lies, link
    /// counts, names) is what `vigilfs fsck` checks. On a mount point,
    /// every failure found is handled as by notify-failure (data rescued
    /// or poisoned, blocks marked bad); reads and writes of the mount keep
    /// priority, --rate caps the scrub; Ctrl-C stops it and the next scrub
    /// resumes where it stopped (--restart starts over). On an unmounted
    /// image, failures are reported with their owners and nothing changes.
    /// A progress bar (bytes/s, ETA) on a terminal, plain lines otherwise,
    /// and a summary: bytes checked, failures, owners hit, healed, lost,
    /// and the extents not verified because the b-tree node holding their
    /// checksums is damaged (itself a failure found; the scrub goes on).
    ///
    /// Exit status: 0 nothing lost, 4 data or metadata lost (found now, or
    /// poisoned earlier and not rewritten since, and data lost before it
    /// reached the device, as `unsynced` lists it), or reads the device
    /// failed with an error not the medium's (a failing path, an injected
    /// --fail-reads rule: not verified, so no clean pass), 32 (added to 0 or 4) the scrub stopped before
    /// the end (an unmount or a shutdown stopped it: not everything was
    /// read), 8 the scrub could not run, 1 refused (not root nor the user
    /// who mounted, a shut-down mount: scrub its image once unmounted, or
    /// another scrub still running after a second), 130 or 143
    /// interrupted by Ctrl-C or SIGTERM (on a mount it says where the next
    /// scrub resumes).
    ///
    /// Examples:
    ///   vigilfs scrub /mnt/data
    ///   vigilfs scrub /mnt/data --rate 50 --json
    ///   vigilfs scrub disk.img
    #[command(verbatim_doc_comment)]
    Scrub {
        /// A mount point, or an unmounted image.
        target: PathBuf,
        /// Most MiB per second to read.
        #[arg(long, value_name = "MIB_PER_SECOND")]
        rate: Option<f64>,
        /// Start from the beginning rather than resume an interrupted scrub.
        #[arg(long)]
        restart: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a filesystem's events: errors (with the file, range and device
    /// blocks they hit), losses, and what happened to the mount (mount,
    /// recovery, errors= actions, freeze, thaw, fault rules, shutdown,
    /// unmount).
    ///
    /// MOUNTPOINT: the events the mount recorded (they resume across
    /// mounts: ids never restart), then with --follow the live ones until
    /// the mount's unmount (reads, and their errors, go on after a
    /// shutdown). Root, the user who mounted and the
    /// mount's events_group only. IMAGE (unmounted): the log in the image.
    /// A file is named by the path it had when the mount serving it
    /// announced the event (kept for its newest 4096 events); older events,
    /// and every event read from an IMAGE, name it by its path now.
    /// Ids missing after --since (overwritten by the ring, or lost in a
    /// crash) show as one `lost` event, with the number of errors in them
    /// when it is known. A file's error that keeps repeating is damped:
    /// after two events its repeats are merged for a window (0.25 s
    /// doubling to 8 s) into one event that takes its id when the window
    /// ends, so its time (the first error merged) may be earlier than the
    /// event before it. Until then those repeats are in memory only: if
    /// the mount process dies (kill -9, a power cut), the repeats of its
    /// last window (at most 8 s of one error) are lost, and counted
    /// nowhere.
    ///
    /// --exec CMD runs CMD once per event (VIGILFS_EVENT_ID, VIGILFS_KIND,
    /// VIGILFS_ERRNO, VIGILFS_INODE, VIGILFS_PATH, VIGILFS_OFFSET,
    /// VIGILFS_LENGTH, VIGILFS_COUNT, VIGILFS_LAST_INODE, VIGILFS_ORIGIN
    /// (its origin or action), VIGILFS_MOUNTPOINT... and the JSON on
    /// stdin); --state FILE makes it resume after a restart. If the mount
    /// process dies while it follows, CMD runs once more with
    /// VIGILFS_KIND=disconnected, then the command exits 8.
    ///
    /// Exit status: 0 shown, 1 refused (to another user, or an image in
    /// use), an image without an event log (made with --event-log-size 0)
    /// or a hook that failed for good, 2 bad arguments (a --state file
    /// that holds no event id or cannot be read), 8 the mount or the
    /// image could not answer (the mount process gone, a read error, or
    /// a --follow that stopped reading for 60 s and was cut off).
    ///
    /// Examples:
    ///   vigilfs events /mnt/data
    ///   vigilfs events /mnt/data --follow --json
    ///   vigilfs events /mnt/data --follow --since 120
    ///   vigilfs events disk.img --json
    ///   vigilfs events /mnt/data --follow --exec /etc/vigilfs/notify.sh \
    ///       --state /var/lib/vigilfs/data.state --kinds error,lost,shutdown
    #[command(verbatim_doc_comment)]
    Events(events_command::EventsArgs),
    /// Test a program against power cuts: cut the power under it at
    /// seeded moments and check what survived.
    ///
    /// Runs the workload in a fresh crashable mount, cuts the power at a
    /// seeded moment (just before an fsync, or between fsyncs before a
    /// write; the first trial after the workload ended, when all it
    /// acknowledged must be there), kills the workload with the machine,
    /// brings the mount back from the image, and runs the check there
    /// (non-zero exit: a violated invariant), as many times as --cuts
    /// says: each trial a moment no earlier trial cut while there are
    /// more, fsyncs and writes in turns.
    /// Every trial starts from a fresh image; a failure is reported with the command
    /// that replays exactly that trial, and its image is kept. A dry run
    /// without a cut comes first: the workload and the check must succeed
    /// there.
    ///
    /// What a cut keeps: everything an fsync or fdatasync that returned 0
    /// made durable, and metadata (creates, renames) whose
    /// journal entry was flushed; all else may be lost (or torn, with
    /// --torn). One exception, as on ext4: a file replaced without an
    /// fsync of the new copy (renamed over another file, or truncated to
    /// nothing and written again) has its new data written back first;
    /// `-o noauto_da_alloc` turns that off, so such a program fails as it
    /// would on a filesystem without the heuristic.
    ///
    /// The mount is served by this command's own process (the pid `vigilfs
    /// status` shows in it): a workload that kills it kills the run (the
    /// power cuts are this command's to make).
    ///
    /// Processes a program leaves running when it exits (`cmd &`, a
    /// server it started) are killed before the next program runs, and
    /// the dry run names them: the setup cannot start a server for the
    /// workload, and a workload waits for what it starts.
    ///
    /// Exit status: 0 every check held, 1 a check or fsck failed, 2 bad
    /// arguments, 8 the run could not be made (the workload or
    /// the check fails without any cut, a mount failed...), 130, 143 or
    /// 129 interrupted by SIGINT, SIGTERM or SIGHUP (the trial in progress
    /// torn down).
    ///
    /// Examples:
    ///   vigilfs crash-test --workload "sqlite3 t.db < $HOME/load.sql" \
    ///       --check 'sqlite3 t.db "pragma integrity_check" | grep -qx ok'
    ///   vigilfs crash-test --workload ~/bin/writer --check ~/bin/verify --cuts 50 --torn
    ///   vigilfs crash-test --workload ~/bin/writer --check ~/bin/verify --seed 9 --cut-index 17
    #[command(verbatim_doc_comment, allow_negative_numbers = true)]
    CrashTest(Box<crash_test_command::CrashTestArgs>),
    /// Cleans up after a crash-test killed with SIGKILL (started by
    /// crash-test itself).
    #[command(name = "crash-test-janitor", hide = true)]
    CrashTestJanitor {
        /// The run's work directory.
        directory: PathBuf,
        /// The run made the directory: remove it if it is left empty.
        #[arg(long)]
        remove_directory: bool,
    },
    /// What a power cut would lose now: each file's data not written back
    /// (byte ranges) and each metadata change whose journal entry is not
    /// durable. Anything not listed survives, unless the device drops
    /// flushes (`inject --drop-flushes`), which it then says first. Data
    /// the kernel wrote back from a shared mapping (mmap) and the mount
    /// refused (a full disk), and data an earlier mount ended without
    /// while its writeback failed, is listed as already lost: nothing
    /// sends it again, and fsyncs (unless -o fsync_errors=once) fail
    /// until it is written again, and reads too once the kernel's cache
    /// lets the pages go (a remount at once). Not
    /// seen, so not listed: writes through a shared mapping that the
    /// kernel has not yet sent to the daemon (no msync, munmap or close
    /// since). Root and the user who mounted only (it names files).
    ///
    /// Examples:
    ///   vigilfs unsynced /mnt/data
    ///   vigilfs unsynced /mnt/data --json
    #[command(verbatim_doc_comment)]
    Unsynced {
        /// The mount point.
        mountpoint: PathBuf,
        /// Print JSON: {files [{inode, paths, size, ranges, bytes, lost,
        /// lost_errno}],
        /// changes [{seq, operation, inode, path, new_path}],
        /// omitted_changes, durable_seq, newest_seq}.
        #[arg(long)]
        json: bool,
    },
    /// Print a mount's Prometheus metrics once (for node_exporter's
    /// textfile collector); `-o metrics=ADDR:PORT` serves the same text.
    ///
    /// Example:
    ///   vigilfs metrics /mnt/data > /var/lib/node_exporter/vigilfs.prom.$$ &&
    ///     mv /var/lib/node_exporter/vigilfs.prom.$$ /var/lib/node_exporter/vigilfs.prom
    #[command(verbatim_doc_comment)]
    Metrics {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// A guided tour: make, mount, write, fail a disk, watch fsync report
    /// it once per descriptor, unmount, check.
    ///
    /// Needs only this program and /dev/fuse (run as root, or with
    /// fusermount3). Works in a temporary directory and removes it. Exit
    /// status 0 if everything behaved as the tour says, 1 with the
    /// discrepancy otherwise.
    ///
    /// Example:
    ///   vigilfs demo
    #[command(verbatim_doc_comment)]
    Demo {
        /// Keep the temporary directory (image and mount point) afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Make `mount -t fuse.vigilfs` work: symlink DIR/mount.fuse.vigilfs
    /// to this program.
    ///
    /// Examples:
    ///   vigilfs install-mount-helper
    ///   mount -t fuse.vigilfs disk.img /mnt/data -o errors=continue
    #[command(verbatim_doc_comment)]
    InstallMountHelper {
        /// Where mount(8) looks for helpers.
        #[arg(long, default_value = "/sbin")]
        dir: PathBuf,
        /// Replace an existing helper pointing elsewhere.
        #[arg(long)]
        force: bool,
    },
}

impl Command {
    /// Whether the command only prints and ends, like a Unix filter: when
    /// its reader goes away (`vigilfs fsck disk.img | head -1`) it ends
    /// quietly, killed by SIGPIPE as `cat` would be, instead of panicking
    /// on the failed write. Not the commands that serve a mount or run
    /// programs (mount, the crash lab, the demo, the event listener with
    /// its hooks): those must outlive a reader that went away.
    fn ends_with_its_reader(&self) -> bool {
        !matches!(
            self,
            Command::Mount { .. }
                | Command::Events(_)
                | Command::CrashTest(_)
                | Command::Demo { .. }
        )
    }
}

/// A size, or 0 (for "none").
fn size_or_zero(text: &str) -> Result<ByteSize, String> {
    if text.trim() == "0" {
        Ok(ByteSize(0))
    } else {
        text.parse()
    }
}

fn main() -> ExitCode {
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = Cli::command();
    let subcommands: Vec<&str> = command
        .get_subcommands()
        .map(clap::Command::get_name)
        .chain(["help"])
        .collect();
    // Output nobody can take (stdout or stderr on a full disk,
    // `>/dev/full`) fails the command with a message, never a panic and a
    // backtrace: `print!` and `println!` panic when the write fails, so
    // that panic is told apart from every other, which keeps Rust's own
    // report (review 43: exit 101 from status, fsck, mkfs, metrics...).
    let default_report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_lost_output(info.payload()) {
            default_report(info);
        }
    }));
    let outcome =
        std::panic::catch_unwind(|| match helper::helper_request(&arguments, &subcommands) {
            Some(request) => request
                .and_then(|request| mount_command::run(&request))
                .map_err(helper::as_mount_failure),
            None => run(parse(&arguments)),
        });
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(payload) if is_lost_output(payload.as_ref()) => {
            let what = payload
                .downcast_ref::<String>()
                .map_or("the output could not be written", String::as_str);
            Err(Failure::operational(what.replacen(
                "failed printing to",
                "could not write to",
                1,
            )))
        }
        Err(payload) => std::panic::resume_unwind(payload),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            // Never a panic for a closed stderr: the exit code still tells.
            let _ = writeln!(std::io::stderr().lock(), "vigilfs: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

/// The command line, or the usage error's exit: clap's status 2, but
/// fsck(8)'s 16 for `fsck`, whose 2 means "reboot" (review 43).
fn parse(arguments: &[std::ffi::OsString]) -> Cli {
    Cli::try_parse_from(arguments).unwrap_or_else(|error| {
        if error.use_stderr() && arguments.get(1).is_some_and(|word| word == "fsck") {
            let _ = error.print();
            std::process::exit(16);
        }
        error.exit()
    })
}

/// Whether a panic is `print!`'s for output that could not be written.
fn is_lost_output(payload: &(dyn std::any::Any + Send)) -> bool {
    payload.downcast_ref::<String>().is_some_and(|message| {
        message.starts_with("failed printing to stdout")
            || message.starts_with("failed printing to stderr")
    })
}

fn run(cli: Cli) -> Result<u8, Failure> {
    if cli.command.ends_with_its_reader() {
        // SAFETY: setting a signal's disposition to its default, before
        // any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Mkfs {
            image,
            size,
            journal_size,
            block_size,
            label,
            force,
            event_log_size,
        } => mkfs_command::run(&mkfs_command::MkfsRequest {
            image,
            size,
            journal_size,
            block_size,
            label,
            force,
            event_log_size,
        }),
        Command::Fsck { image, json, data } => fsck_command::run(&image, json, data),
        Command::Mount {
            image,
            mountpoint,
            options,
            daemon,
            size,
            pid_file,
            log_file,
        } => mount_command::run(&mount_command::MountRequest {
            image,
            mountpoint,
            options,
            daemon,
            size,
            pid_file,
            log_file,
            as_mount_helper: false,
        }),
        Command::Status { mountpoint, json } => status_command::run(&mountpoint, json),
        Command::Sync { mountpoint } => sync_command::run(&mountpoint),
        Command::Freeze { mountpoint } => freeze_command::freeze(&mountpoint),
        Command::Thaw { mountpoint } => freeze_command::thaw(&mountpoint),
        Command::Shutdown {
            mountpoint,
            flush: _,
            noflush,
        } => shutdown_command::run(&mountpoint, !noflush),
        Command::Inject(arguments) => inject_command::run(&arguments),
        Command::NotifyFailure {
            mountpoint,
            range,
            origin,
            json,
        } => media_command::notify_failure(&mountpoint, &range, origin, json),
        Command::Owners {
            target,
            range,
            json,
        } => media_command::owners(&target, &range, json),
        Command::Scrub {
            target,
            rate,
            restart,
            json,
        } => media_command::scrub(&target, rate, restart, json),
        Command::Events(arguments) => events_command::run(&arguments),
        Command::CrashTest(arguments) => crash_test_command::run(&arguments),
        Command::CrashTestJanitor {
            directory,
            remove_directory,
        } => Ok(crash_test_janitor::run(&directory, remove_directory)),
        Command::Unsynced { mountpoint, json } => unsynced_command::run(&mountpoint, json),
        Command::Metrics { mountpoint } => {
            let result = control::client::call(&mountpoint, &control::protocol::Request::Metrics)
                .map_err(|error| error.into_failure("metrics", &mountpoint))?;
            print!("{}", result["text"].as_str().unwrap_or_default());
            Ok(0)
        }
        Command::Demo { keep } => demo_command::run(keep),
        Command::InstallMountHelper { dir, force } => helper::install(&dir, force),
    }
}

/// `--block-size`: only what a mount can serve, so mkfs never makes a
/// filesystem that cannot be mounted.
fn parse_block_size(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(4096) => Ok(4096),
        Ok(other) => Err(format!(
            "{other} is not supported: vigilfs serves 4096-byte blocks only (file data is cached \
             and checksummed in 4 KiB pages)"
        )),
        Err(_) => Err(format!("`{text}` is not a number of bytes (use 4096)")),
    }
}
