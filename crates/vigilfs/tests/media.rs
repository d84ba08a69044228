//! Media failures through the engine API: a failed range attributed to its
//! owners and contained — file data poisoned (reads of exactly that range
//! fail, across remounts, until rewritten) or rescued from a surviving
//! copy, b-tree nodes moved off the block or handed to the `errors=`
//! policy, free space never allocated again — and failures reported while
//! the journal replays handled once it is done.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fserror::{Event, EventKind, Group, GroupConfig, Subtypes};
use vigilfs::btree::TreeId;
use vigilfs::device::{
    BlockDevice, ByteRange, CrashDevice, CrashMode, DeviceError, FaultDevice, FaultPlan, FaultRule,
    IoClass, MediaFailure, MediaFailureCallback, MemoryDevice, SectorSize,
};
use vigilfs::failure::{Origin, Outcome, OwnerKind};
use vigilfs::format::{ErrorKind, Layout};
use vigilfs::fs::{Filesystem, FsError, LifeState, MountOptions, OpenFlags, ScrubSummary};
use vigilfs::fsck::{fsck, fsck_with, FsckOptions};
use vigilfs::inode::{Caller, FallocateMode, RenameFlags, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

const BLOCK: u64 = 4096;
const SETTLE: Duration = Duration::from_secs(10);

struct Fixture {
    memory: Arc<MemoryDevice>,
    plan: Arc<FaultPlan>,
    device: Arc<dyn BlockDevice>,
    layout: Layout,
}

impl Fixture {
    fn new() -> Fixture {
        let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
        let plan = Arc::new(FaultPlan::new());
        let device: Arc<dyn BlockDevice> =
            Arc::new(FaultDevice::new(Arc::clone(&memory), Arc::clone(&plan)));
        let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).expect("mkfs");
        Fixture {
            memory,
            plan,
            device,
            layout: superblock.layout,
        }
    }

    fn mount(&self) -> Filesystem {
        Filesystem::mount(self.device.clone(), MountOptions::default()).expect("mount")
    }

    fn mount_with(&self, options: MountOptions) -> Filesystem {
        Filesystem::mount(self.device.clone(), options).expect("mount")
    }

    /// A file of `data` made and written back, then the filesystem
    /// mounted again, so that none of it is cached: (the mount, the inode).
    fn uncached_file(&self, name: &str, data: &[u8]) -> (Filesystem, u64) {
        let fs = self.mount();
        let ino = create_file(&fs, name, data);
        fs.unmount().unwrap();
        (self.mount(), ino)
    }

    fn main_region(&self) -> ByteRange {
        let main = self.layout.main;
        ByteRange::new(main.start * BLOCK, (main.start + main.blocks) * BLOCK)
    }

    /// The device block file block `index` of `ino` lives in now.
    fn physical(&self, fs: &Filesystem, ino: u64, index: u64) -> u64 {
        fs.owners(self.main_region(), false)
            .expect("owners")
            .into_iter()
            .find_map(|owner| match owner.kind {
                OwnerKind::File {
                    ino: owner_ino,
                    file_offset,
                    ..
                } if owner_ino == ino => {
                    let first = file_offset / BLOCK;
                    let blocks = owner.range.len() / BLOCK;
                    (first..first + blocks)
                        .contains(&index)
                        .then(|| owner.range.start / BLOCK + (index - first))
                }
                _ => None,
            })
            .expect("the file block is mapped")
    }

    /// Device block `block` fails every read with a media error.
    fn bad_block(&self, block: u64) {
        self.plan
            .add_rule(FaultRule::bad_blocks(
                ByteRange::at(block * BLOCK, BLOCK),
                BLOCK,
            ))
            .expect("rule");
    }

    fn assert_fsck_clean(&self) {
        let report = fsck(self.device.clone(), &mut |_| {}).expect("fsck");
        assert!(report.is_clean(), "fsck: {:#?}", report.problems);
    }
}

fn root() -> Caller {
    Caller::root()
}

fn read_write() -> OpenFlags {
    OpenFlags {
        read: true,
        write: true,
        ..OpenFlags::default()
    }
}

/// `blocks` blocks whose every block differs from the others.
fn pattern(blocks: u64, seed: u8) -> Vec<u8> {
    (0..blocks * BLOCK)
        .map(|at| ((at / BLOCK) as u8).wrapping_mul(37) ^ (at as u8).wrapping_add(seed) | 1)
        .collect()
}

/// Creates `/name` holding `data`, durable; returns its inode.
fn create_file(fs: &Filesystem, name: &str, data: &[u8]) -> u64 {
    let (attr, handle) = fs
        .create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &root())
        .expect("create");
    fs.write(handle, 0, data, &root()).expect("write");
    fs.fsync(handle, false).expect("fsync");
    fs.release(handle).expect("release");
    attr.ino
}

fn read_block(fs: &Filesystem, ino: u64, index: u64) -> Result<Vec<u8>, FsError> {
    let handle = fs.open(ino, read_write(), &root()).expect("open");
    let result = fs.read(handle, index * BLOCK, BLOCK as usize);
    fs.release(handle).expect("release");
    result
}

fn write_block(fs: &Filesystem, ino: u64, index: u64, data: &[u8]) {
    let handle = fs.open(ino, read_write(), &root()).expect("open");
    fs.write(handle, index * BLOCK, data, &root())
        .expect("write");
    fs.fsync(handle, false).expect("fsync");
    fs.release(handle).expect("release");
}

fn errno_of<T: std::fmt::Debug>(result: Result<T, FsError>) -> i32 {
    result.expect_err("expected an error").errno()
}

fn listen(fs: &Filesystem) -> Group {
    let group = Group::new(GroupConfig::distinct(NonZeroUsize::new(32).unwrap()));
    group.subscribe(fs.events()).expect("subscribe");
    group
}

/// The error events queued so far.
fn errors(group: &Group) -> Vec<Event> {
    let mut found = Vec::new();
    while let Ok(event) = group.read_timeout(Duration::from_millis(20)) {
        if event.kind == EventKind::Error {
            found.push(event);
        }
    }
    found
}

fn blob_text(event: &Event) -> String {
    let detail = event
        .last
        .as_ref()
        .or(event.first.as_ref())
        .expect("detail");
    String::from_utf8_lossy(detail.blob.as_bytes()).into_owned()
}

#[test]
fn a_bad_block_under_a_file_poisons_exactly_its_range_until_rewritten() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(8, 1);
    let ino = create_file(&fs, "victim", &data);
    // A second name, in a subdirectory: owners must name both.
    let sub = fs.mkdir(ROOT_INO, b"sub", 0o755, &root()).expect("mkdir");
    fs.link(ino, sub.ino, b"alias", &root()).expect("link");
    fs.unmount().expect("unmount");
    // A fresh mount: nothing of the file is cached.
    let fs = fixture.mount();
    let events = listen(&fs);
    let bad = fixture.physical(&fs, ino, 5);
    fixture.bad_block(bad);

    assert_eq!(errno_of(read_block(&fs, ino, 5)), libc::EIO);
    assert!(fs.settle_failures(SETTLE));
    // Exactly that block: the rest reads, whole reads across it fail.
    for index in [0, 4, 6, 7] {
        let block = read_block(&fs, ino, index).expect("the rest of the file reads");
        assert_eq!(
            block,
            data[(index * BLOCK) as usize..((index + 1) * BLOCK) as usize]
        );
    }
    assert_eq!(errno_of(read_block(&fs, ino, 5)), libc::EIO);

    // One media event, naming the inode, the file range and the device
    // bytes (besides the reader's READ event, reported as the read failed).
    let media: Vec<Event> = errors(&events)
        .into_iter()
        .filter(|event| event.subtypes.contains(Subtypes::MEDIA))
        .collect();
    assert_eq!(media.len(), 1, "{media:#?}");
    let event = &media[0];
    assert!(event.subtypes.contains(Subtypes::DATA_LOST));
    assert_eq!(event.object().map(|object| object.inode), Some(ino));
    let detail = event.first.as_ref().unwrap();
    assert_eq!(
        detail.range.map(|range| (range.offset, range.len)),
        Some((5 * BLOCK, BLOCK))
    );
    assert!(blob_text(event).contains(&format!("dev={}+{BLOCK}", bad * BLOCK)));

    // Owners names the path and says the data there is lost.
    let owners = fs.owners(ByteRange::at(bad * BLOCK, BLOCK), true).unwrap();
    let file = owners
        .iter()
        .find_map(|owner| match &owner.kind {
            OwnerKind::File {
                paths,
                file_offset,
                poisoned,
                ..
            } => Some((paths.clone(), *file_offset, *poisoned)),
            _ => None,
        })
        .expect("a file owns the block");
    assert_eq!(
        file,
        (
            vec!["/sub/alias".to_owned(), "/victim".to_owned()],
            5 * BLOCK,
            true
        )
    );
    assert!(owners.iter().any(|owner| owner.kind == OwnerKind::Bad));
    let status = fs.status();
    assert_eq!(status.media.poisoned_runs, 1);
    assert!(status
        .media
        .bad
        .iter()
        .any(|run| run.start <= bad && bad < run.start + run.blocks));

    // The poison survives a remount, even once the device reads again.
    fs.unmount().expect("unmount");
    fixture.plan.clear();
    let fs = fixture.mount();
    assert_eq!(errno_of(read_block(&fs, ino, 5)), libc::EIO);
    assert_eq!(fs.status().media.poisoned_runs, 1);
    let report = fsck(fixture.device.clone(), &mut |_| {}).expect("fsck");
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.structure == "lost data" && problem.message.contains("/victim")),
        "{:#?}",
        report.problems
    );

    // Rewriting the block heals it, for good.
    let fresh = vec![0x5a; BLOCK as usize];
    write_block(&fs, ino, 5, &fresh);
    assert_eq!(read_block(&fs, ino, 5).unwrap(), fresh);
    assert_ne!(
        fixture.physical(&fs, ino, 5),
        bad,
        "a new block, not the bad one"
    );
    fs.unmount().expect("unmount");
    let fs = fixture.mount();
    assert_eq!(read_block(&fs, ino, 5).unwrap(), fresh);
    assert_eq!(fs.status().media.poisoned_runs, 0);
    assert!(
        fs.status().media.bad_blocks >= 1,
        "the block stays on the bad list"
    );
    fs.unmount().expect("unmount");
    fixture.assert_fsck_clean();
}

#[test]
fn a_bad_block_is_never_allocated_again_even_when_the_filesystem_fills() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let ino = create_file(&fs, "first", &pattern(4, 2));
    let bad = fixture.physical(&fs, ino, 2);
    fixture.bad_block(bad);
    let report = fs
        .notify_failure(ByteRange::at(bad * BLOCK, BLOCK), Origin::operator("SMART"))
        .expect("notify");
    // The page was cached: rescued, nothing lost.
    assert_eq!(report.lost_blocks(), 0, "{:#?}", report.handled);
    // Freed by the rescue, the block must not come back: fill everything.
    fs.unlink(ROOT_INO, b"first", &root()).expect("unlink");
    fs.unmount().expect("unmount");
    let fs = fixture.mount();
    let chunk = vec![0x33u8; 1 << 20];
    let mut index = 0;
    'fill: loop {
        let name = format!("fill{index}");
        let Ok((_, handle)) = fs.create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &root())
        else {
            break;
        };
        for piece in 0..4u64 {
            if fs.write(handle, piece << 20, &chunk, &root()).is_err()
                || fs.fsync(handle, false).is_err()
            {
                let _ = fs.release(handle);
                break 'fill;
            }
        }
        fs.release(handle).expect("release");
        index += 1;
    }
    assert!(index > 5, "the filesystem held a few files first ({index})");
    let owners = fs.owners(ByteRange::at(bad * BLOCK, BLOCK), false).unwrap();
    let kinds: Vec<&OwnerKind> = owners.iter().map(|owner| &owner.kind).collect();
    assert_eq!(kinds, [&OwnerKind::Bad], "nothing took the bad block");
    drop(fs);
}

#[test]
fn a_cached_page_clean_or_dirty_is_rescued_to_a_new_block() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(4, 3);
    let ino = create_file(&fs, "cached", &data);
    let events = listen(&fs);
    // Clean cached copy.
    let bad = fixture.physical(&fs, ino, 1);
    fixture.bad_block(bad);
    let report = fs
        .notify_failure(ByteRange::at(bad * BLOCK, BLOCK), Origin::operator("test"))
        .expect("notify");
    let outcomes: Vec<&Outcome> = report.handled.iter().map(|item| &item.outcome).collect();
    assert_eq!(outcomes, [&Outcome::Healed { blocks: 1 }]);
    let paths = match &report.handled[0].owner.kind {
        OwnerKind::File { paths, .. } => paths.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(paths, ["/cached"]);
    assert_ne!(fixture.physical(&fs, ino, 1), bad);
    let rescued = errors(&events);
    assert_eq!(rescued.len(), 1);
    assert!(!rescued[0].subtypes.contains(Subtypes::DATA_LOST));

    // Dirty page: new data not yet written back.
    let newer = vec![0x77u8; BLOCK as usize];
    let handle = fs.open(ino, read_write(), &root()).unwrap();
    fs.write(handle, 2 * BLOCK, &newer, &root()).unwrap();
    let under_dirty = fixture.physical(&fs, ino, 2);
    fixture.bad_block(under_dirty);
    let report = fs
        .notify_failure(
            ByteRange::at(under_dirty * BLOCK, BLOCK),
            Origin::operator("test"),
        )
        .expect("notify");
    assert_eq!(report.lost_blocks(), 0, "{:#?}", report.handled);
    fs.release(handle).unwrap();
    fs.unmount().expect("unmount");

    let fs = fixture.mount();
    let mut expected = data.clone();
    expected[(2 * BLOCK) as usize..(3 * BLOCK) as usize].copy_from_slice(&newer);
    for index in 0..4 {
        assert_eq!(
            read_block(&fs, ino, index).unwrap(),
            expected[(index * BLOCK) as usize..((index + 1) * BLOCK) as usize],
            "block {index}"
        );
    }
    assert_eq!(fs.status().media.poisoned_runs, 0);
    fs.unmount().expect("unmount");
    fixture.assert_fsck_clean();
}

#[test]
fn a_reported_block_that_still_reads_is_moved_and_nothing_is_lost() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(3, 4);
    let ino = create_file(&fs, "suspect", &data);
    fs.unmount().unwrap();
    let fs = fixture.mount();
    let suspect = fixture.physical(&fs, ino, 0);
    let report = fs
        .notify_failure(
            ByteRange::at(suspect * BLOCK, 512),
            Origin::operator("pending sector"),
        )
        .expect("notify");
    assert_eq!(report.healed_blocks(), 1, "{:#?}", report.handled);
    assert_ne!(fixture.physical(&fs, ino, 0), suspect);
    assert_eq!(read_block(&fs, ino, 0).unwrap(), data[..BLOCK as usize]);
    // Reporting it again changes nothing and says so.
    let again = fs
        .notify_failure(
            ByteRange::at(suspect * BLOCK, BLOCK),
            Origin::operator("again"),
        )
        .unwrap();
    assert_eq!(again.owners_hit(), 0, "{:#?}", again.handled);
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// On a full filesystem a reported block that still reads back whole
/// cannot be moved: it stays where it is, readable and marked bad, and
/// the report says so and counts its owner. It used to be poisoned, every
/// read EIO, and the report said it was lost (review 26).
#[test]
fn a_reported_block_that_still_reads_stays_readable_when_the_filesystem_is_full() {
    let fixture = Fixture::new();
    let (fs, ino) = fixture.uncached_file("keep", &pattern(2, 5));
    // Fill the filesystem.
    let chunk = vec![0x44u8; 1 << 20];
    let (_, handle) = fs
        .create(ROOT_INO, b"filler", 0o644, read_write(), &root())
        .unwrap();
    let mut at = 0;
    while fs.write(handle, at, &chunk, &root()).is_ok() && fs.fsync(handle, false).is_ok() {
        at += 1 << 20;
    }
    fs.release(handle).unwrap();
    fs.drop_caches();
    let suspect = fixture.physical(&fs, ino, 0);
    let report = fs
        .notify_failure(
            ByteRange::at(suspect * BLOCK, 2 * BLOCK),
            Origin::operator("pending sectors"),
        )
        .expect("notify");
    assert_eq!(report.lost_blocks(), 0, "{:#?}", report.handled);
    assert_eq!(report.owners_hit(), 1, "{:#?}", report.handled);
    assert!(
        matches!(report.handled[0].outcome, Outcome::Unmovable { .. }),
        "{:#?}",
        report.handled
    );
    assert_eq!(
        read_block(&fs, ino, 0).unwrap(),
        pattern(2, 5)[..BLOCK as usize]
    );
    assert_eq!(
        read_block(&fs, ino, 1).unwrap(),
        pattern(2, 5)[BLOCK as usize..]
    );
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// A failed range partly saved: the event of the data lost names exactly
/// the bytes lost, not the whole range (a hook must tell them apart).
#[test]
fn a_range_partly_saved_announces_only_the_bytes_lost() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(3, 7);
    let ino = create_file(&fs, "partly", &data);
    fs.unmount().unwrap();
    // Nothing cached: what survives is what still reads.
    let fs = fixture.mount();
    let first = fixture.physical(&fs, ino, 0);
    assert_eq!(fixture.physical(&fs, ino, 2), first + 2, "one extent");
    fixture.bad_block(first + 1);
    let events = listen(&fs);
    let report = fs
        .notify_failure(
            ByteRange::at(first * BLOCK, 3 * BLOCK),
            Origin::operator("array"),
        )
        .unwrap();
    assert!(
        report
            .handled
            .iter()
            .any(|handled| handled.outcome == Outcome::Partly { healed: 2, lost: 1 }),
        "{:#?}",
        report.handled
    );
    let (lost, saved): (Vec<Event>, Vec<Event>) = errors(&events)
        .into_iter()
        .filter(|event| event.subtypes.contains(Subtypes::MEDIA))
        .partition(|event| event.subtypes.contains(Subtypes::DATA_LOST));
    // The blocks saved are in the log too, as the failure's other events.
    // (The stream merges unread events of one file: first and last.)
    let saved_ranges: Vec<_> = saved
        .iter()
        .flat_map(|event| [event.first.as_ref(), event.last.as_ref()])
        .flatten()
        .filter_map(|detail| detail.range.map(|range| (range.offset, range.len)))
        .collect();
    assert_eq!(saved_ranges, [(0, BLOCK), (2 * BLOCK, BLOCK)], "{saved:#?}");
    assert_eq!(lost.len(), 1, "{lost:#?}");
    let detail = lost[0].first.as_ref().unwrap();
    assert_eq!(
        detail.range.map(|range| (range.offset, range.len)),
        Some((BLOCK, BLOCK))
    );
    assert!(
        blob_text(&lost[0]).contains(&format!("dev={}+{BLOCK}", (first + 1) * BLOCK)),
        "{}",
        blob_text(&lost[0])
    );
    assert_eq!(read_block(&fs, ino, 0).unwrap(), data[..BLOCK as usize]);
    assert_eq!(errno_of(read_block(&fs, ino, 1)), libc::EIO);
    fs.unmount().unwrap();
}

/// A report of part of a block (a 512-byte sector) that loses the block:
/// the event names the whole block lost, at its file and device offsets.
#[test]
fn a_lost_sector_is_announced_as_its_whole_block() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(3, 8);
    let ino = create_file(&fs, "sector", &data);
    fs.unmount().unwrap();
    let fs = fixture.mount();
    let bad = fixture.physical(&fs, ino, 1);
    fixture.bad_block(bad);
    let events = listen(&fs);
    let report = fs
        .notify_failure(
            ByteRange::at(bad * BLOCK + 1024, 512),
            Origin::operator("pending sector"),
        )
        .unwrap();
    assert_eq!(report.lost_blocks(), 1, "{:#?}", report.handled);
    let lost: Vec<Event> = errors(&events)
        .into_iter()
        .filter(|event| event.subtypes.contains(Subtypes::DATA_LOST))
        .collect();
    assert_eq!(lost.len(), 1, "{lost:#?}");
    let detail = lost[0].first.as_ref().unwrap();
    assert_eq!(
        detail.range.map(|range| (range.offset, range.len)),
        Some((BLOCK, BLOCK))
    );
    assert!(blob_text(&lost[0]).contains(&format!("dev={}+{BLOCK}", bad * BLOCK)));
    assert_eq!(errno_of(read_block(&fs, ino, 1)), libc::EIO);
    fs.unmount().unwrap();
}

/// A node block of `tree` at `level` that is not its root (found by the
/// owners query over the main region).
fn node_of(fixture: &Fixture, fs: &Filesystem, tree: TreeId) -> Vec<u64> {
    fs.owners(fixture.main_region(), false)
        .unwrap()
        .into_iter()
        .filter_map(|owner| match owner.kind {
            OwnerKind::Node {
                tree: found,
                level: 0,
                block,
            } if found == tree => Some(block),
            _ => None,
        })
        .collect()
}

fn many_files(fs: &Filesystem, count: usize) {
    for index in 0..count {
        let name = format!("file-with-a-longish-name-{index:04}");
        let (_, handle) = fs
            .create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &root())
            .unwrap();
        fs.release(handle).unwrap();
    }
}

#[test]
fn a_cached_node_is_moved_off_a_bad_block() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    many_files(&fs, 300);
    fs.syncfs_once().unwrap();
    let leaves = node_of(&fixture, &fs, TreeId::Inodes);
    assert!(leaves.len() > 1, "the inode tree has several leaves");
    let leaf = leaves[0];
    // Reading every inode caches every leaf, clean.
    for entry in fs
        .readdir_plus(fs.opendir(ROOT_INO, &root()).unwrap(), 0, 1000)
        .unwrap()
    {
        let _ = entry;
    }
    fixture.bad_block(leaf);
    let events = listen(&fs);
    let report = fs
        .notify_failure(ByteRange::at(leaf * BLOCK, BLOCK), Origin::operator("test"))
        .unwrap();
    assert!(
        matches!(report.handled[0].outcome, Outcome::Healed { blocks: 1 }),
        "{:#?}",
        report.handled
    );
    let event = errors(&events).pop().expect("an event");
    assert!(blob_text(&event).contains(&format!("tree=inodes level=0 block={leaf}")));
    assert_eq!(fs.status().state, LifeState::Running);
    fs.unmount().unwrap();
    let fs = fixture.mount();
    assert_eq!(
        fs.readdir(fs.opendir(ROOT_INO, &root()).unwrap(), 0, 1000)
            .unwrap()
            .len(),
        302
    );
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

#[test]
fn an_uncached_node_on_a_bad_block_goes_to_the_errors_policy_with_its_tree_and_level() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    many_files(&fs, 300);
    fs.unmount().unwrap();
    // Only the roots are cached after a mount.
    let fs = fixture.mount();
    let leaves = node_of(&fixture, &fs, TreeId::Inodes);
    let leaf = *leaves.last().unwrap();
    fixture.bad_block(leaf);
    let events = listen(&fs);
    let report = fs
        .notify_failure(ByteRange::at(leaf * BLOCK, BLOCK), Origin::operator("test"))
        .unwrap();
    assert!(
        matches!(report.handled[0].outcome, Outcome::Lost { blocks: 1, .. }),
        "{:#?}",
        report.handled
    );
    // errors=remount-ro, the default.
    assert!(matches!(fs.status().state, LifeState::ReadOnly(_)));
    let event = errors(&events)
        .into_iter()
        .find(|event| {
            event
                .subtypes
                .contains(Subtypes::METADATA | Subtypes::MEDIA)
        })
        .expect("a metadata media event");
    assert!(blob_text(&event).contains(&format!("tree=inodes level=0 block={leaf}")));
}

/// After a lost node sends the mount read-only, a file and a directory
/// whose changes are all durable still fsync, and so does the filesystem:
/// the bad-block list the loss added to cannot be written any more, but it
/// is the filesystem's own record, not a change a program made. fsync
/// failed with EIO on every file, so a database's checkpoint of data it
/// had synced read as a loss (review 41).
#[test]
fn a_mount_gone_read_only_for_a_lost_node_still_fsyncs_what_is_durable() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    many_files(&fs, 600);
    let (_, kept) = fs
        .create(ROOT_INO, b"kept", 0o644, read_write(), &root())
        .unwrap();
    fs.write(kept, 0, b"synced", &root()).unwrap();
    fs.release(kept).unwrap();
    fs.unmount().unwrap();
    // Only the roots are cached after a mount.
    let fs = fixture.mount();
    let kept = fs.lookup(ROOT_INO, b"kept", &root()).unwrap().ino;
    let handle = fs.open(kept, read_write(), &root()).unwrap();
    let directory = fs.opendir(ROOT_INO, &root()).unwrap();
    // Neither the root's leaf nor `kept`'s, which are cached now.
    let leaves = node_of(&fixture, &fs, TreeId::Inodes);
    assert!(leaves.len() > 2, "{leaves:?}");
    let leaf = leaves[leaves.len() / 2];
    fixture.bad_block(leaf);
    let report = fs
        .notify_failure(ByteRange::at(leaf * BLOCK, BLOCK), Origin::operator("test"))
        .unwrap();
    assert!(
        matches!(report.handled[0].outcome, Outcome::Lost { .. }),
        "{:#?}",
        report.handled
    );
    assert!(matches!(fs.status().state, LifeState::ReadOnly(_)));
    let journal = fs.status().journal;
    assert!(
        journal.next_seq - 1 > journal.durable_seq || journal.open_seq.is_some(),
        "the bad-block list is in an entry that cannot be written: {journal:?}"
    );
    fs.fsync(handle, false).expect("fsync of a durable file");
    fs.fsyncdir(directory)
        .expect("fsync of a durable directory");
    fs.syncfs_once()
        .expect("syncfs with no change of a program pending");
    fs.release(handle).unwrap();
    fs.releasedir(directory).unwrap();
}

/// A bad block of a file found while the directory entries cannot be
/// read is still the file's: its owner comes without paths and says why,
/// and the failure is handled and reported. The whole owners query failed,
/// so scrub named no owner and a report of the failure was an error
/// (review 41).
#[test]
fn a_file_hit_while_the_entries_cannot_be_read_is_still_its_owner() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    many_files(&fs, 300);
    fs.unmount().unwrap();
    let (fs, ino) = fixture.uncached_file("victim", &pattern(4, 3));
    let data = fixture.physical(&fs, ino, 1);
    for leaf in node_of(&fixture, &fs, TreeId::Dirents) {
        fixture.bad_block(leaf);
    }
    let range = ByteRange::at(data * BLOCK, BLOCK);
    let owners = fs.owners(range, true).expect("owners without paths");
    let (paths, why) = owners
        .iter()
        .find_map(|owner| match &owner.kind {
            OwnerKind::File {
                ino: owner_ino,
                paths,
                paths_unreadable,
                ..
            } if *owner_ino == ino => Some((paths.clone(), paths_unreadable.clone())),
            _ => None,
        })
        .expect("the file owns its block");
    assert!(paths.is_empty());
    let why = why.expect("why the paths are missing");
    assert!(
        vigilfs::failure::file_names(&paths, Some(&why)).contains("cannot be read"),
        "{why}"
    );
    fixture.bad_block(data);
    let report = fs
        .notify_failure(range, Origin::operator("test"))
        .expect("the failure is handled and reported");
    assert!(report
        .handled
        .iter()
        .any(|item| matches!(item.owner.kind, OwnerKind::File { ino: hit, .. } if hit == ino)));
}

/// A node of the entries tree that cannot be read says which tree; the
/// directory being listed is what it cost, and the error names it.
#[test]
fn a_directory_whose_entries_cannot_be_read_is_named_by_its_error() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let dir = fs.mkdir(ROOT_INO, b"d", 0o755, &root()).unwrap().ino;
    for index in 0..300 {
        let name = format!("file-with-a-longish-name-{index:04}");
        let (_, handle) = fs
            .create(dir, name.as_bytes(), 0o644, read_write(), &root())
            .unwrap();
        fs.release(handle).unwrap();
    }
    fs.unmount().unwrap();
    // Only the roots are cached after a mount.
    let fs = fixture.mount();
    let leaves = node_of(&fixture, &fs, TreeId::Dirents);
    assert!(leaves.len() > 1, "the entries tree has several leaves");
    let events = listen(&fs);
    for leaf in leaves {
        fixture.bad_block(leaf);
    }
    let handle = fs.opendir(dir, &root()).unwrap();
    let listed = fs.readdir(handle, 0, 1000);
    assert_eq!(errno_of(listed), libc::EIO);
    let named = errors(&events).into_iter().any(|event| {
        event.subtypes.contains(Subtypes::METADATA)
            && [&event.first, &event.last]
                .into_iter()
                .flatten()
                .any(|detail| detail.object.is_some_and(|object| object.inode == dir))
    });
    assert!(named, "no metadata error names directory {dir}");
}

#[test]
fn free_space_reported_bad_is_listed_and_survives_remount() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let free = fs
        .owners(fixture.main_region(), false)
        .unwrap()
        .into_iter()
        .find(|owner| owner.kind == OwnerKind::Free)
        .expect("free space")
        .range;
    let block = free.start / BLOCK + 10;
    let report = fs
        .notify_failure(
            ByteRange::at(block * BLOCK, BLOCK),
            Origin::operator("array"),
        )
        .unwrap();
    assert_eq!(report.handled.len(), 1);
    assert_eq!(report.handled[0].outcome, Outcome::MarkedBad);
    fs.unmount().unwrap();
    let fs = fixture.mount();
    assert!(fs
        .status()
        .media
        .bad
        .iter()
        .any(|run| run.start <= block && block < run.start + run.blocks));
    let owners = fs
        .owners(ByteRange::at(block * BLOCK, BLOCK), false)
        .unwrap();
    assert!(owners.iter().any(|owner| owner.kind == OwnerKind::Bad));
    fs.unmount().unwrap();
    let report = fsck(fixture.device.clone(), &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.media.unwrap().bad_blocks, 1);
}

#[test]
fn ranges_outside_the_device_are_refused_clearly() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let length = fixture.device.length();
    for range in [
        ByteRange::new(length, length + 1),
        ByteRange::new(length - 512, length + 512),
        ByteRange::new(100, 100),
        ByteRange::new(0, u64::MAX),
    ] {
        assert_eq!(errno_of(fs.owners(range, false)), libc::EINVAL, "{range}");
        assert_eq!(
            errno_of(fs.notify_failure(range, Origin::operator("x"))),
            libc::EINVAL,
            "{range}"
        );
    }
    // Reserved bytes belong to nobody; the superblock is rewritten.
    let owners = fs.owners(ByteRange::new(0, 8192), false).unwrap();
    let kinds: Vec<&str> = owners.iter().map(|owner| owner.kind.name()).collect();
    assert_eq!(kinds, ["unused", "superblock"]);
    let report = fs
        .notify_failure(ByteRange::new(4096, 4608), Origin::operator("x"))
        .unwrap();
    assert_eq!(report.handled[0].outcome, Outcome::Healed { blocks: 1 });
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// A device over `inner` that runs `before_read` before each read, with the
/// media failure callback the filesystem set (if any), to observe reads or
/// report failures from them.
type ReadHook = dyn Fn(IoClass, usize, Option<MediaFailureCallback>) + Send + Sync;

struct HookedReads {
    inner: Arc<dyn BlockDevice>,
    before_read: Box<ReadHook>,
    callback: Mutex<Option<MediaFailureCallback>>,
}

impl HookedReads {
    fn new(inner: Arc<dyn BlockDevice>, before_read: Box<ReadHook>) -> Arc<HookedReads> {
        Arc::new(HookedReads {
            inner,
            before_read,
            callback: Mutex::new(None),
        })
    }
}

impl BlockDevice for HookedReads {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        let callback = self.callback.lock().unwrap().clone();
        (self.before_read)(class, buffer.len(), callback);
        self.inner.read_at(offset, buffer, class)
    }
    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        self.inner.write_at(offset, buffer, class)
    }
    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        self.inner.flush(class)
    }
    fn length(&self) -> u64 {
        self.inner.length()
    }
    fn sector_size(&self) -> SectorSize {
        self.inner.sector_size()
    }
    fn set_media_failure_callback(&self, callback: MediaFailureCallback) {
        *self.callback.lock().unwrap() = Some(callback);
    }
}

#[test]
fn a_failure_reported_during_journal_replay_is_handled_after_it() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(2, 5);
    let ino = create_file(&fs, "replayed", &data);
    let bad = fixture.physical(&fs, ino, 1);
    // A crash: the journal must be replayed at the next mount.
    drop(fs);
    // One media failure reported the first time the journal is read: as a
    // storage array's asynchronous report would arrive while the
    // filesystem is still replaying.
    let report = Arc::new(Mutex::new(Some(ByteRange::at(bad * BLOCK, BLOCK))));
    let pending = Arc::clone(&report);
    let reporting = HookedReads::new(
        fixture.device.clone(),
        Box::new(move |class, _, callback| {
            if class != IoClass::Journal {
                return;
            }
            if let (Some(range), Some(callback)) = (pending.lock().unwrap().take(), callback) {
                callback(MediaFailure {
                    range,
                    class: IoClass::Data,
                    rule: None,
                });
            }
        }),
    );
    fixture.bad_block(bad);
    let fs = Filesystem::mount(reporting.clone(), MountOptions::default()).expect("mount");
    assert!(fs.recovered(), "the journal was replayed");
    assert!(
        report.lock().unwrap().is_none(),
        "reported during the mount"
    );
    assert!(fs.settle_failures(SETTLE));
    let status = fs.status();
    assert_eq!(status.media.notices.parked, 1, "{:?}", status.media.notices);
    assert!(status.media.notices.handled >= 1);
    assert_eq!(status.media.poisoned_runs, 1);
    assert_eq!(errno_of(read_block(&fs, ino, 1)), libc::EIO);
    assert_eq!(read_block(&fs, ino, 0).unwrap(), data[..BLOCK as usize]);
    fs.unmount().unwrap();
}

#[test]
fn a_flipped_byte_is_found_by_fsck_data_and_scrub_and_never_read_as_data() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(4, 6);
    let ino = create_file(&fs, "flipped", &data);
    let block = fixture.physical(&fs, ino, 3);
    fs.unmount().unwrap();
    let mut byte = [0u8; 512];
    fixture
        .memory
        .read_at(block * BLOCK, &mut byte, IoClass::Data)
        .unwrap();
    byte[100] ^= 0x40;
    fixture
        .memory
        .write_at(block * BLOCK, &byte, IoClass::Data)
        .unwrap();

    // Plain fsck checks metadata only; --data reads the data.
    assert!(fsck(fixture.device.clone(), &mut |_| {})
        .unwrap()
        .is_clean());
    let report = fsck_with(
        fixture.device.clone(),
        FsckOptions { data: true },
        &mut |_| {},
    )
    .unwrap();
    let media = report.media.as_ref().unwrap();
    assert_eq!(media.data_failures, 1);
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.structure == "file data"
                && problem.message.contains("checksum mismatch")
                && problem.message.contains("/flipped at bytes 12288..16384")),
        "{:#?}",
        report.problems
    );

    let fs = fixture.mount();
    let summary = fs.scrub(Default::default(), &mut |_| true).expect("scrub");
    assert!(summary.complete);
    assert_eq!(summary.findings, 1);
    assert_eq!(summary.lost_blocks, 1);
    assert_eq!(summary.poisoned_runs, 1, "lost when the scrub ended");
    assert_eq!(errno_of(read_block(&fs, ino, 3)), libc::EIO);
    assert_eq!(
        read_block(&fs, ino, 2).unwrap(),
        data[2 * BLOCK as usize..3 * BLOCK as usize]
    );
    // A second scrub finds nothing new: the loss is known.
    let again = fs.scrub(Default::default(), &mut |_| true).unwrap();
    assert_eq!((again.findings, again.lost_blocks), (0, 0));
    fs.unmount().unwrap();
}

/// Neighbouring blocks rotten together are one finding of the scrub: one
/// event naming the run's bytes, one run of lost data (not one per block),
/// and blocks apart are apart.
#[test]
fn a_scrub_reports_a_run_of_rotten_blocks_as_one_failure() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(8, 9);
    let ino = create_file(&fs, "rotten", &data);
    let first = fixture.physical(&fs, ino, 0);
    assert_eq!(fixture.physical(&fs, ino, 7), first + 7, "one extent");
    fs.unmount().unwrap();
    for index in [2u64, 3, 4, 6] {
        let mut sector = [0u8; 512];
        let at = (first + index) * BLOCK;
        fixture
            .memory
            .read_at(at, &mut sector, IoClass::Data)
            .unwrap();
        sector[7] ^= 0x20;
        fixture.memory.write_at(at, &sector, IoClass::Data).unwrap();
    }
    let fs = fixture.mount();
    let events = listen(&fs);
    let summary = fs.scrub(Default::default(), &mut |_| true).expect("scrub");
    assert_eq!((summary.findings, summary.lost_blocks), (2, 4));
    assert_eq!(fs.status().media.poisoned_runs, 2);
    let lost: Vec<(u64, u64)> = errors(&events)
        .into_iter()
        .filter(|event| event.subtypes.contains(Subtypes::DATA_LOST))
        .flat_map(|event| [event.first, event.last])
        .flatten()
        .filter_map(|detail| detail.range.map(|range| (range.offset, range.len)))
        .collect();
    assert_eq!(lost, [(2 * BLOCK, 3 * BLOCK), (6 * BLOCK, BLOCK)]);
    fs.unmount().unwrap();
}

/// A read of many blocks that fails names the block that failed, not the
/// first block of the request: the error event and the record point at
/// the bad block, and the blocks before it read.
#[test]
fn a_failed_read_of_many_blocks_names_the_block_that_failed() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(16, 3);
    let ino = create_file(&fs, "long", &data);
    fs.unmount().unwrap();
    let fs = fixture.mount();
    let bad = fixture.physical(&fs, ino, 9);
    fixture.bad_block(bad);
    let handle = fs.open(ino, read_write(), &root()).unwrap();
    assert_eq!(errno_of(fs.read(handle, 0, 16 * BLOCK as usize)), libc::EIO);
    fs.release(handle).unwrap();
    let last = fs.status().error_record.last.expect("an error on record");
    assert_eq!(last.block, Some(bad), "{last:?}");
    assert_eq!(
        read_block(&fs, ino, 8).unwrap(),
        data[8 * BLOCK as usize..9 * BLOCK as usize]
    );
    fs.unmount().unwrap();
}

/// A slow scrub shows in status from its start, not only after its first
/// MiB (at a low rate, minutes later).
#[test]
fn a_slow_scrub_is_running_from_its_start() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let go_on = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|scope| {
        let scrub = scope.spawn(|| {
            let request = vigilfs::fs::ScrubRequest {
                rate: Some(1024),
                restart: true,
            };
            fs.scrub(request, &mut |_| {
                go_on.load(std::sync::atomic::Ordering::Acquire)
            })
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fs.status().media.scrub.running.is_none() {
            assert!(std::time::Instant::now() < deadline, "never shown running");
            std::thread::sleep(Duration::from_millis(10));
        }
        go_on.store(false, std::sync::atomic::Ordering::Release);
        let summary = scrub.join().unwrap().unwrap();
        assert!(!summary.complete, "stopped early");
    });
    assert!(fs.status().media.scrub.running.is_none());
    fs.unmount().unwrap();
}

/// A rate-limited scrub never has read more than the rate allows since it
/// started, not even at its first extent (read whole: up to 512 KiB, which
/// it once read before it paced). Not a timing assertion: the pacing only
/// ever sleeps longer than asked, so the bound holds on any machine.
#[test]
fn a_rate_limited_scrub_never_reads_ahead_of_its_rate() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    create_file(&fs, "large", &pattern(512, 9));
    fs.unmount().unwrap();
    // When each data read starts, and how long it is.
    let timed: Arc<Mutex<Vec<(std::time::Instant, u64)>>> = Arc::default();
    let noted = Arc::clone(&timed);
    let device = HookedReads::new(
        fixture.device.clone(),
        Box::new(move |class, length, _| {
            if class == IoClass::Data {
                let read = (std::time::Instant::now(), length as u64);
                noted.lock().unwrap().push(read);
            }
        }),
    );
    let fs = Filesystem::mount(device, MountOptions::default()).expect("mount");
    timed.lock().unwrap().clear();
    let rate: u64 = 8 << 20;
    let started = std::time::Instant::now();
    let request = vigilfs::fs::ScrubRequest {
        rate: Some(rate),
        restart: true,
    };
    let summary = fs.scrub(request, &mut |_| true).unwrap();
    assert!(summary.complete);
    let reads = timed.lock().unwrap().clone();
    assert!(
        reads.iter().any(|&(_, bytes)| bytes >= 128 * BLOCK),
        "{reads:?}"
    );
    let mut read = 0;
    for (at, bytes) in reads {
        read += bytes;
        let allowed = at.duration_since(started).as_secs_f64() * rate as f64;
        assert!(
            read as f64 <= allowed + 1.0,
            "{read} bytes read {:?} after the start, {allowed:.0} allowed",
            at.duration_since(started)
        );
    }
    fs.unmount().unwrap();
}

/// A slow scrub whose caller goes away (Ctrl-C) while the rate holds it
/// back stops before its next read: it read the other superblock copies
/// and on at full speed first (review 30: 28 KiB at a rate of 1 B/s).
#[test]
fn a_slow_scrub_whose_caller_goes_reads_nothing_more() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let request = vigilfs::fs::ScrubRequest {
        rate: Some(1),
        restart: true,
    };
    // There at the start, gone at the first question during the wait.
    let mut asked = 0;
    let summary = fs
        .scrub(request, &mut |_| {
            asked += 1;
            asked == 1
        })
        .unwrap();
    assert!(!summary.complete);
    assert_eq!(summary.bytes, 4096, "one superblock copy, then nothing");
    fs.unmount().unwrap();
}

#[test]
fn a_checksum_mismatch_on_read_is_eio_and_poisons_the_block() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(2, 7);
    let ino = create_file(&fs, "rotted", &data);
    let block = fixture.physical(&fs, ino, 0);
    fs.unmount().unwrap();
    let mut bytes = [0u8; 512];
    fixture
        .memory
        .read_at(block * BLOCK, &mut bytes, IoClass::Data)
        .unwrap();
    bytes[7] ^= 1;
    fixture
        .memory
        .write_at(block * BLOCK, &bytes, IoClass::Data)
        .unwrap();
    let fs = fixture.mount();
    assert_eq!(errno_of(read_block(&fs, ino, 0)), libc::EIO);
    assert!(fs.settle_failures(SETTLE));
    assert_eq!(fs.status().media.poisoned_runs, 1);
    assert_eq!(read_block(&fs, ino, 1).unwrap(), data[BLOCK as usize..]);
    // Truncating the poisoned block away clears the poison.
    let handle = fs.open(ino, read_write(), &root()).unwrap();
    fs.fallocate(
        handle,
        0,
        BLOCK,
        FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
        &root(),
    )
    .unwrap();
    fs.release(handle).unwrap();
    assert_eq!(read_block(&fs, ino, 0).unwrap(), vec![0; BLOCK as usize]);
    assert_eq!(fs.status().media.poisoned_runs, 0);
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

#[test]
fn an_interrupted_scrub_resumes_where_it_stopped_even_after_a_remount() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    for index in 0..8 {
        create_file(&fs, &format!("data{index}"), &pattern(256, index as u8));
    }
    let mut calls = 0;
    let first = fs
        .scrub(Default::default(), &mut |_| {
            calls += 1;
            calls < 3
        })
        .unwrap();
    assert!(!first.complete);
    assert_eq!(fs.status().media.scrub.resume_at, Some(first.cursor));
    fs.unmount().unwrap();
    let fs = fixture.mount();
    let second = fs.scrub(Default::default(), &mut |_| true).unwrap();
    assert_eq!(second.resumed_from, Some(first.cursor));
    assert!(second.complete);
    assert_eq!(fs.status().media.scrub.resume_at, None);
    // Rate-limited: 8 MiB of data at 16 MiB/s takes at least a third of a second.
    let started = std::time::Instant::now();
    let limited = fs
        .scrub(
            vigilfs::fs::ScrubRequest {
                rate: Some(16 << 20),
                restart: true,
            },
            &mut |_| true,
        )
        .unwrap();
    assert!(limited.bytes >= 8 << 20);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    fs.unmount().unwrap();
}

/// The owners of a range are read from the reverse map, then from each
/// file it names: a file deleted in between is a race, never corruption
/// (which the errors= policy would act on: it made the filesystem
/// read-only, and a clean unmount impossible).
#[test]
fn owners_listed_while_files_are_deleted_are_never_corruption() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut listings = 0u64;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..300 {
                let name = format!("churn{}", round % 4);
                create_file(&fs, &name, &pattern(4, round as u8));
                fs.unlink(ROOT_INO, name.as_bytes(), &root()).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            let listed = fs.owners(fixture.main_region(), false);
            assert!(listed.is_ok(), "after {listings} listings: {listed:?}");
            listings += 1;
        }
    });
    assert!(listings > 0);
    assert_eq!(fs.status().state, LifeState::Running);
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

#[test]
fn unlinking_a_file_drops_its_poison() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let ino = create_file(&fs, "doomed", &pattern(2, 8));
    fs.unmount().unwrap();
    let fs = fixture.mount_with(MountOptions::default());
    let block = fixture.physical(&fs, ino, 1);
    fixture.bad_block(block);
    fs.notify_failure(ByteRange::at(block * BLOCK, BLOCK), Origin::operator("x"))
        .unwrap();
    assert_eq!(fs.status().media.poisoned_runs, 1);
    fs.unlink(ROOT_INO, b"doomed", &root()).unwrap();
    assert_eq!(fs.status().media.poisoned_runs, 0);
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

#[test]
fn notices_beyond_the_intake_are_counted_and_reported() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let ino = create_file(&fs, "kept", &pattern(1, 9));
    fs.unmount().unwrap();
    // More reports than the intake holds arrive before the mount is ready.
    let free = fixture.main_region().end - 2048 * BLOCK;
    let failures = (0..1100)
        .map(|index| {
            (
                ByteRange::at(free + index * BLOCK, BLOCK),
                Origin::operator("array log"),
            )
        })
        .collect();
    let fs = fixture.mount_with(MountOptions {
        failures,
        ..MountOptions::default()
    });
    assert!(fs.settle_failures(Duration::from_secs(60)));
    let notices = fs.status().media.notices;
    assert_eq!((notices.received, notices.parked), (1100, 1100));
    assert_eq!(notices.overflowed, 1100 - 1024, "{notices:?}");
    assert_eq!(notices.handled, 1024);
    assert_eq!(fs.status().media.bad_blocks, 1024);
    // One media error per block marked bad, and one for the drop (the
    // worker reports it after a notice, or within a poll).
    let media_errors = || fs.status().error_record.counter(ErrorKind::Media).count;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while media_errors() < 1024 + 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(media_errors(), 1024 + 1);
    assert_eq!(read_block(&fs, ino, 0).unwrap(), pattern(1, 9));
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

#[test]
fn images_without_the_media_records_feature_mount_and_unknown_ro_compat_features_mount_read_only() {
    use vigilfs::format::{read_superblock, write_superblocks, Features};
    let fixture = Fixture::new();
    // An image from before media records: no ro_compat bit, no records.
    let media_records = |superblock: &vigilfs::format::Superblock| {
        superblock.features.ro_compat & Features::RO_COMPAT_MEDIA_RECORDS != 0
    };
    let mut superblock = read_superblock(fixture.device.as_ref()).unwrap().superblock;
    assert!(media_records(&superblock), "mkfs sets the feature");
    superblock.features.ro_compat &= !Features::RO_COMPAT_MEDIA_RECORDS;
    write_superblocks(fixture.device.as_ref(), &mut superblock).unwrap();
    let fs = fixture.mount();
    assert_eq!(fs.status().state, LifeState::Running);
    fs.unmount().unwrap();
    let mut superblock = read_superblock(fixture.device.as_ref()).unwrap().superblock;
    assert!(
        media_records(&superblock),
        "the first read-write mount says the image may hold media records"
    );
    // A feature this build does not know: readable, not writable, and
    // fsck says so (review 58: "clean" and nothing more).
    superblock.features.ro_compat |= 1 << 40;
    write_superblocks(fixture.device.as_ref(), &mut superblock).unwrap();
    let report = fsck(fixture.device.clone(), &mut |_| {}).expect("fsck");
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.message.contains("mounts read-only")),
        "{:#?}",
        report.notes
    );
    let fs = fixture.mount();
    match fs.status().state {
        LifeState::ReadOnly(why) => assert!(why.contains("ro_compat"), "{why}"),
        other => panic!("mounted {other:?}"),
    }
    assert_eq!(
        errno_of(fs.create(ROOT_INO, b"new", 0o644, read_write(), &root())),
        libc::EROFS
    );
    drop(fs);
}

/// A scrub held back by a slow rate stops within a throttle slice of being
/// asked to, not when the rate would let it read again: a gone client or
/// an unmount waited for the whole sleep (hours at a byte a second), and
/// the unmount then gave up without writing back.
#[test]
fn a_rate_limited_scrub_stops_soon_after_it_is_no_longer_wanted() {
    let fixture = Fixture::new();
    let fs = Arc::new(fixture.mount());
    create_file(&fs, "data", &pattern(4, 7));
    let scrubbing = Arc::clone(&fs);
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let request = vigilfs::fs::ScrubRequest {
            rate: Some(1),
            restart: true,
        };
        let summary = scrubbing.scrub(request, &mut |_| {
            started.elapsed() < Duration::from_millis(300)
        });
        // Let go of the filesystem before saying so: the test unmounts it.
        drop(scrubbing);
        let _ = done.send((summary.map(|summary| summary.complete), started.elapsed()));
    });
    let (complete, took) = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("the scrub stops within 30 s");
    assert!(!complete.unwrap(), "stopped, not finished");
    assert!(took < Duration::from_secs(5), "{took:?}");
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
}

/// A failure notice over a wide range while files are written and synced:
/// the owners are listed before any is handled, so a node a commit moves
/// meanwhile (its block reused for data) must not be called lost. On an
/// intact device every node reached is moved or found gone, none lost, and
/// the filesystem stays writable.
#[test]
fn a_wide_notice_during_synced_writes_loses_no_node_that_moved_meanwhile() {
    let fixture = Fixture::new();
    let fs = Arc::new(fixture.mount());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (fs, stop) = (Arc::clone(&fs), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut written = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && written < 3_000 {
                let name = format!("f{written}");
                let Ok((_, handle)) =
                    fs.create(ROOT_INO, name.as_bytes(), 0o644, read_write(), &root())
                else {
                    break;
                };
                let _ = fs.write(handle, 0, &pattern(1, written as u8), &root());
                let _ = fs.fsync(handle, false);
                let _ = fs.release(handle);
                written += 1;
            }
        })
    };
    let mut lost = Vec::new();
    for round in 0..6u64 {
        std::thread::sleep(Duration::from_millis(50));
        let start = (1 + round) << 20;
        let report = fs
            .notify_failure(
                ByteRange::new(start, start + (24 << 20)),
                Origin::operator("wide"),
            )
            .expect("notice");
        lost.extend(report.handled.into_iter().filter(|handled| {
            matches!(handled.outcome, Outcome::Lost { .. })
                && matches!(handled.owner.kind, OwnerKind::Node { .. })
        }));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(lost.is_empty(), "{lost:#?}");
    assert_eq!(fs.status().state, LifeState::Running);
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
}

/// What a failure notice reports as done is durable when the report is
/// given: blocks it marked bad stay bad, and the error it recorded stays
/// recorded, through a power cut right after (they waited for the next
/// sync or fsync before).
#[test]
fn a_failure_notice_is_durable_before_it_is_reported() {
    let device = Arc::new(CrashDevice::new(64 << 20, SectorSize::Bytes512));
    let writes: Arc<dyn BlockDevice> = device.clone();
    make_filesystem(writes.clone(), &MkfsOptions::default()).expect("mkfs");
    let fs = Filesystem::mount(writes, MountOptions::default()).expect("mount");
    let failed = ByteRange::at(20 << 20, 2 * BLOCK);
    let report = fs
        .notify_failure(failed, Origin::operator("SMART 197"))
        .expect("notice");
    assert!(report
        .handled
        .iter()
        .any(|handled| handled.outcome == Outcome::MarkedBad));
    let before = fs.status();
    assert_eq!(before.space.bad_blocks, 2);
    let crashed: Arc<dyn BlockDevice> = Arc::new(device.crash(CrashMode::DropUnflushed));
    drop(fs);
    let fs = Filesystem::mount(crashed, MountOptions::default()).expect("mount after the cut");
    let after = fs.status();
    assert_eq!(after.space.bad_blocks, 2, "the marks survived the cut");
    assert_eq!(after.error_record.total, before.error_record.total);
    fs.unmount().unwrap();
}

/// A failed range with b-tree nodes, file data and free blocks in it: what
/// handling moves (the nodes, the cached data) goes outside the range,
/// never into its own free blocks, which the device said failed too (the
/// nodes used to be moved into them and reported healed).
#[test]
fn nothing_saved_from_a_failed_range_is_moved_into_that_range() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    many_files(&fs, 300);
    let data = pattern(4, 7);
    create_file(&fs, "data", &data);
    fs.syncfs_once().unwrap();
    // The first 256 blocks of the main region: mkfs's nodes, the files'
    // nodes and data, and the free blocks copy-on-write left between them.
    let main = fixture.main_region();
    let failed = ByteRange::at(main.start, 256 * BLOCK);
    let before = fs.owners(failed, false).unwrap();
    assert!(before.iter().any(|owner| owner.kind == OwnerKind::Free));
    assert!(before
        .iter()
        .any(|owner| matches!(owner.kind, OwnerKind::Node { .. })));
    let report = fs
        .notify_failure(failed, Origin::operator("array"))
        .unwrap();
    assert!(report.healed_blocks() > 0, "{:#?}", report.handled);
    let after = fs.owners(failed, false).unwrap();
    assert!(
        after.iter().all(|owner| owner.kind == OwnerKind::Bad),
        "something lives in the failed range after handling: {after:#?}"
    );
    assert_eq!(fs.status().state, LifeState::Running);
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// The whole device fails at once: there is no room left for the nodes of
/// the bad-block list, yet the report still says what became of every
/// owner (nodes that read back stay, readable), says that the marks are
/// for this mount only, and the notice is counted (the report used to be replaced by "no space for b-tree nodes",
/// and status said "0 notices" for every operator report).
#[test]
fn a_whole_device_failure_is_reported_owner_by_owner_even_when_the_bad_list_cannot_be_written() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let ino = create_file(&fs, "data", &pattern(4, 3));
    fs.syncfs_once().unwrap();
    let whole = ByteRange::new(0, fixture.device.length());
    let report = fs
        .notify_failure(whole, Origin::operator("array gone"))
        .expect("a report, not an error");
    let why = report.unrecorded.as_deref().expect("the report says so");
    assert!(why.contains("no space for b-tree nodes"), "{why}");
    assert!(report.handled.iter().any(
        |handled| matches!(handled.owner.kind, OwnerKind::File { ino: owner, .. } if owner == ino)
    ));
    // The nodes cannot move, but they read back whole: they stay where
    // they are, readable, as file data does (review 34: called lost).
    let nodes: Vec<_> = report
        .handled
        .iter()
        .filter(|handled| matches!(handled.owner.kind, OwnerKind::Node { .. }))
        .collect();
    assert!(!nodes.is_empty());
    assert!(
        nodes
            .iter()
            .all(|handled| matches!(handled.outcome, Outcome::Unmovable { .. })),
        "{nodes:#?}"
    );
    let status = fs.status();
    assert_eq!(status.media.notices.received, 1);
    assert_eq!(status.media.notices.handled, 1);
    assert!(matches!(status.state, LifeState::ReadOnly(_)));
    assert_eq!(status.media.bad_blocks, fixture.layout.main.blocks);
}

/// Writes a two-block file and mounts the filesystem read-only: the
/// mount, the file's inode and the device block of its first block.
fn read_only_mount_of_a_file(fixture: &Fixture) -> (Filesystem, u64, u64) {
    let fs = fixture.mount();
    create_file(&fs, "data", &pattern(2, 5));
    fs.unmount().unwrap();
    let fs = fixture.mount_with(MountOptions {
        read_only: true,
        ..MountOptions::default()
    });
    let ino = fs.lookup(ROOT_INO, b"data", &root()).unwrap().ino;
    let block = fixture.physical(&fs, ino, 0);
    (fs, ino, block)
}

/// On a read-only mount a notice can only mark in memory: the report says
/// that the marks were not recorded (it used to report the marks as if they were
/// remembered, and a remount forgot them without a word).
#[test]
fn a_notice_on_a_read_only_mount_says_nothing_was_recorded() {
    let fixture = Fixture::new();
    let (fs, _, block) = read_only_mount_of_a_file(&fixture);
    let report = fs
        .notify_failure(ByteRange::at(block * BLOCK, BLOCK), Origin::operator("ro"))
        .unwrap();
    let why = report.unrecorded.as_deref().expect("the report says so");
    assert!(why.contains("marks were not recorded"), "{why}");
    fs.unmount().unwrap();
}

/// A reported block whose data still reads back whole, on a mount that may
/// not write, keeps its data readable: it is marked bad, not lost (it was
/// poisoned, so data that read was EIO for good, and no scrub lifted it).
#[test]
fn a_reported_block_that_still_reads_on_a_read_only_mount_stays_readable() {
    let fixture = Fixture::new();
    let (fs, ino, block) = read_only_mount_of_a_file(&fixture);
    let events = listen(&fs);
    let report = fs
        .notify_failure(ByteRange::at(block * BLOCK, BLOCK), Origin::operator("ro"))
        .unwrap();
    // Said as it is (it said "nothing done"), and announced (it was not).
    assert!(
        report.handled.iter().all(|handled| matches!(
            &handled.outcome,
            Outcome::Unmovable { why, .. } if why.starts_with("reads back intact")
        )),
        "{report:?}"
    );
    assert_eq!(errors(&events).len(), 1);
    let handle = fs
        .open(ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    assert_eq!(
        fs.read(handle, 0, BLOCK as usize).unwrap(),
        pattern(2, 5)[..BLOCK as usize]
    );
    fs.release(handle).unwrap();
    let media = fs.status().media;
    assert_eq!((media.bad_blocks, media.poisoned_runs), (1, 0), "{media:?}");
    fs.unmount().unwrap();
}

/// A block that fails to read, on a mount that may not write, is handled
/// once: its handling read it again, which failed, was reported and
/// handled again, without end (a CPU spun and the failing disk was read
/// hundreds of thousands of times a second).
#[test]
fn a_failing_block_on_a_read_only_mount_is_handled_once() {
    let fixture = Fixture::new();
    let (fs, ino, block) = read_only_mount_of_a_file(&fixture);
    fixture.bad_block(block);
    let handle = fs
        .open(ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    assert_eq!(errno_of(fs.read(handle, 0, BLOCK as usize)), libc::EIO);
    fs.release(handle).unwrap();
    let settled = |fs: &Filesystem| {
        let mut last = u64::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let notices = fs.status().media.notices.received;
            if notices == last {
                return notices;
            }
            assert!(notices < 100, "still handling: {notices} notices");
            last = notices;
        }
    };
    let notices = settled(&fs);
    assert!(notices <= 2, "{notices} notices for one failure");
    // Received is not handled: the worker may still be at it.
    assert!(fs.settle_failures(SETTLE));
    let media = fs.status().media;
    assert_eq!((media.bad_blocks, media.poisoned_runs), (1, 1), "{media:?}");
    fixture.plan.clear();
    fs.unmount().unwrap();
}

/// What a read-only mount marked in memory (bad blocks, lost file data)
/// is recorded when it is made writable (`remount,rw`): the next mount
/// still knows it (it used to be forgotten at the unmount).
#[test]
fn marks_a_read_only_mount_held_are_recorded_when_it_is_made_writable() {
    let fixture = Fixture::new();
    let (fs, ino, block) = read_only_mount_of_a_file(&fixture);
    // Unreadable while the report is handled: the data is lost (one that
    // still reads is kept; see the test below).
    fixture.bad_block(block);
    fs.notify_failure(ByteRange::at(block * BLOCK, BLOCK), Origin::operator("ro"))
        .unwrap();
    fixture.plan.clear();
    let held = fs.status().media;
    assert_eq!((held.bad_blocks, held.poisoned_runs), (1, 1), "{held:?}");
    fs.make_writable().unwrap();
    fs.unmount().unwrap();
    // fsck reads the lost data from the records: nothing else is wrong.
    let report = fsck(fixture.device.clone(), &mut |_| {}).unwrap();
    assert!(
        report.problems.len() == 1 && report.problems[0].structure == "lost data",
        "{:?}",
        report.problems
    );

    let fs = fixture.mount();
    let kept = fs.status().media;
    assert_eq!((kept.bad_blocks, kept.poisoned_runs), (1, 1), "{kept:?}");
    let handle = fs
        .open(ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    assert_eq!(errno_of(fs.read(handle, 0, BLOCK as usize)), libc::EIO);
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
}

/// Failures reported while a read-only mount is being made writable are
/// recorded, each by its handler or by the remount (one used to fall
/// between the two: held after the remount took the held marks).
#[test]
fn failures_reported_while_a_read_only_mount_is_made_writable_are_all_recorded() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let blocks = 2048;
    create_file(&fs, "data", &pattern(blocks, 3));
    fs.unmount().unwrap();
    let fs = Arc::new(fixture.mount_with(MountOptions {
        read_only: true,
        ..MountOptions::default()
    }));
    let ino = fs.lookup(ROOT_INO, b"data", &root()).unwrap().ino;
    let physical: Vec<u64> = (0..blocks)
        .map(|index| fixture.physical(&fs, ino, index))
        .collect();
    let reporter = {
        let fs = Arc::clone(&fs);
        let physical = physical.clone();
        std::thread::spawn(move || {
            for block in physical {
                fs.notify_failure(
                    ByteRange::at(block * BLOCK, BLOCK),
                    Origin::operator("race"),
                )
                .unwrap();
            }
        })
    };
    // Midway through the reports.
    while fs.status().media.bad_blocks < blocks / 16 {
        std::thread::yield_now();
    }
    fs.make_writable().unwrap();
    reporter.join().unwrap();
    let marked = fs.status().media.bad_blocks;
    assert_eq!(marked, blocks);
    Arc::into_inner(fs).unwrap().unmount().unwrap();
    let fs = fixture.mount();
    assert_eq!(
        fs.status().media.bad_blocks,
        marked,
        "every mark was recorded"
    );
    fs.unmount().unwrap();
}

/// A superblock copy failing on a read-only mount loses nothing (the
/// others hold it, and every copy is written at remount,rw): it is no
/// metadata loss for the errors= policy (it used to keep the mount
/// read-only for good).
#[test]
fn a_superblock_copy_failing_on_a_read_only_mount_does_not_keep_it_read_only() {
    use vigilfs::format::SuperblockCopy;
    let fixture = Fixture::new();
    let fs = fixture.mount_with(MountOptions {
        read_only: true,
        errors: Some(vigilfs::format::ErrorsPolicy::RemountReadOnly),
        ..MountOptions::default()
    });
    let backup = SuperblockCopy::FirstBackup
        .offset(fixture.device.length())
        .unwrap();
    let report = fs
        .notify_failure(ByteRange::at(backup, BLOCK), Origin::operator("backup"))
        .unwrap();
    assert!(
        report
            .handled
            .iter()
            .all(|handled| !matches!(handled.outcome, Outcome::Lost { .. })),
        "{report:?}"
    );
    fs.make_writable().expect("nothing keeps it read-only");
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// A journal block holding entries replay needs, failing on a read-only
/// mount, loses nothing yet (the mount replayed them into memory and
/// writes nothing): no metadata loss for the errors= policy, which kept
/// the mount read-only for good (review 49). Made writable, the mount
/// reclaims the journal off the block first thing.
#[test]
fn a_live_journal_block_failing_on_a_read_only_mount_is_reclaimed_once_writable() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let data = pattern(2, 4);
    create_file(&fs, "replayed", &data);
    // A crash: the journal's entries are live at the next mount.
    drop(fs);
    let fs = fixture.mount_with(MountOptions {
        read_only: true,
        errors: Some(vigilfs::format::ErrorsPolicy::RemountReadOnly),
        ..MountOptions::default()
    });
    let journal = fixture.layout.journal;
    let ring = ByteRange::new(
        journal.start * BLOCK,
        (journal.start + journal.blocks) * BLOCK,
    );
    let live = fs
        .owners(ring, false)
        .unwrap()
        .into_iter()
        .find(|owner| owner.kind == OwnerKind::Journal { live: true })
        .expect("a live journal entry after the crash")
        .range;
    let failed = ByteRange::at(live.start, BLOCK);
    let report = fs
        .notify_failure(failed, Origin::operator("journal"))
        .unwrap();
    assert!(
        matches!(report.handled[0].outcome, Outcome::Unmovable { .. }),
        "{:#?}",
        report.handled
    );
    assert_eq!(report.lost_blocks(), 0);
    fs.make_writable().expect("nothing keeps it read-only");
    let now = fs.owners(failed, false).unwrap();
    assert!(
        now.iter()
            .all(|owner| owner.kind == OwnerKind::Journal { live: false }),
        "reclaimed off the failed block: {now:#?}"
    );
    fs.unmount().unwrap();
    fixture.assert_fsck_clean();
    let fs = fixture.mount();
    let ino = fs.lookup(ROOT_INO, b"replayed", &root()).unwrap().ino;
    let handle = fs
        .open(ino, OpenFlags::from_libc(libc::O_RDONLY), &root())
        .unwrap();
    assert_eq!(fs.read(handle, 0, data.len()).unwrap(), data);
    fs.release(handle).unwrap();
    fs.unmount().unwrap();
}

/// A notice that arrives while the filesystem is frozen is counted once
/// and handled once after the thaw (the worker used to count it again at
/// every look, ten times a second).
#[test]
fn a_notice_queued_during_a_freeze_is_counted_once() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let free = fs
        .owners(fixture.main_region(), false)
        .unwrap()
        .into_iter()
        .find(|owner| owner.kind == OwnerKind::Free)
        .expect("free space")
        .range;
    fs.freeze().unwrap();
    let report = fs
        .notify_failure(ByteRange::at(free.start, BLOCK), Origin::operator("frozen"))
        .unwrap();
    assert!(report.queued);
    std::thread::sleep(Duration::from_millis(700));
    let frozen = fs.status().media.notices;
    assert_eq!((frozen.received, frozen.handled), (1, 0), "{frozen:?}");
    fs.thaw().unwrap();
    assert!(fs.settle_failures(SETTLE));
    let thawed = fs.status().media.notices;
    assert_eq!((thawed.received, thawed.handled), (1, 1), "{thawed:?}");
    assert_eq!(fs.status().space.bad_blocks, 1);
    fs.unmount().unwrap();
}

/// The journal's blocks are live or not entry by entry, and the event
/// log's region is named: a range over the whole journal used to be "live"
/// as a whole (a notice on it reported every block lost), and the event
/// log's blocks were "nothing of the filesystem's".
#[test]
fn owners_tell_live_journal_entries_from_idle_blocks_and_name_the_event_log() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    create_file(&fs, "data", &pattern(1, 9));
    let journal = fixture.layout.journal;
    let ring = ByteRange::new(
        journal.start * BLOCK,
        (journal.start + journal.blocks) * BLOCK,
    );
    let found = fs.owners(ring, false).unwrap();
    let live: u64 = found
        .iter()
        .filter(|owner| owner.kind == OwnerKind::Journal { live: true })
        .map(|owner| owner.range.len())
        .sum();
    assert!(live > 0, "{found:#?}");
    assert!(live < ring.len() / 2, "{live} of {} bytes live", ring.len());
    assert!(found
        .iter()
        .any(|owner| owner.kind == OwnerKind::Journal { live: false }));
    let everything = ByteRange::new(0, fixture.device.length());
    let found = fs.owners(everything, false).unwrap();
    let log = found
        .iter()
        .find(|owner| owner.kind == OwnerKind::EventLog)
        .unwrap_or_else(|| panic!("{found:#?}"))
        .range;
    // A notice there, or on idle journal blocks: reported as blocks that
    // cannot move, nothing counted lost, the mount stays writable.
    let idle = fs
        .owners(ring, false)
        .unwrap()
        .into_iter()
        .find(|owner| owner.kind == OwnerKind::Journal { live: false })
        .unwrap()
        .range;
    for failed in [log, ByteRange::at(idle.start, BLOCK)] {
        let events = listen(&fs);
        let report = fs.notify_failure(failed, Origin::operator("ring")).unwrap();
        assert!(
            matches!(report.handled[0].outcome, Outcome::Unmovable { .. }),
            "{:#?}",
            report.handled
        );
        assert_eq!(report.lost_blocks(), 0);
        assert!(!errors(&events).is_empty(), "an event says so");
    }
    assert_eq!(fs.status().state, LifeState::Running);
    fs.unmount().unwrap();
}

/// A file run part lost, part not: owners say "lost" of exactly the lost
/// blocks, and a notice over both reports the new block healed and the old
/// ones still lost (the whole run used to be "lost" in owners, then
/// "healed" in the report).
#[test]
fn lost_and_readable_blocks_of_one_extent_are_told_apart() {
    let fixture = Fixture::new();
    let (fs, ino) = fixture.uncached_file("data", &pattern(3, 4));
    let first = fixture.physical(&fs, ino, 0);
    assert_eq!(fixture.physical(&fs, ino, 2), first + 2, "one extent");
    fixture.bad_block(first);
    fixture.bad_block(first + 1);
    let report = fs
        .notify_failure(
            ByteRange::at(first * BLOCK, 2 * BLOCK),
            Origin::operator("two"),
        )
        .unwrap();
    assert_eq!(report.lost_blocks(), 2, "{:#?}", report.handled);
    let three = ByteRange::at(first * BLOCK, 3 * BLOCK);
    let lost: Vec<(u64, bool)> = fs
        .owners(three, false)
        .unwrap()
        .into_iter()
        .filter_map(|owner| match owner.kind {
            OwnerKind::File { poisoned, .. } => Some((owner.range.len() / BLOCK, poisoned)),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [(2, true), (1, false)]);
    let report = fs.notify_failure(three, Origin::operator("three")).unwrap();
    for handled in &report.handled {
        if let Outcome::Healed { .. } = handled.outcome {
            assert_eq!(handled.owner.range.len(), BLOCK, "{:#?}", report.handled);
        }
    }
    assert_eq!(report.healed_blocks(), 1, "{:#?}", report.handled);
    fs.unmount().unwrap();
}

/// A scrub that meets a media error on file data counts the loss in its
/// summary, even when the read path's own notice of that error was handled
/// first (the summary said "0 lost" while status listed the new loss).
#[test]
fn a_scrub_counts_the_loss_it_finds_even_when_the_read_path_handled_it_first() {
    let fixture = Fixture::new();
    let (fs, ino) = fixture.uncached_file("data", &pattern(4, 2));
    let block = fixture.physical(&fs, ino, 1);
    fixture.bad_block(block);
    let summary = fs.scrub(Default::default(), &mut |_| true).expect("scrub");
    assert!(fs.settle_failures(SETTLE));
    assert_eq!(fs.status().media.poisoned_runs, 1);
    assert_eq!(summary.lost_blocks, 1, "{summary:?}");
    assert_eq!(summary.owners_hit, 1, "{summary:?}");
    fs.unmount().unwrap();
}

/// One report is one notice: the handling's own reads of the failed
/// blocks failed again, and each queued another notice of the same
/// failure (one report counted as five).
#[test]
fn a_report_whose_blocks_fail_to_read_is_one_notice() {
    let fixture = Fixture::new();
    let (fs, ino) = fixture.uncached_file("data", &pattern(8, 3));
    let first = fixture.physical(&fs, ino, 0);
    fixture
        .plan
        .add_rule(FaultRule::bad_blocks(
            ByteRange::at(first * BLOCK, 4 * BLOCK),
            BLOCK,
        ))
        .expect("rule");
    let report = fs
        .notify_failure(
            ByteRange::at(first * BLOCK, 8 * BLOCK),
            Origin::operator("one report"),
        )
        .unwrap();
    assert_eq!(report.lost_blocks(), 4, "{report:?}");
    assert!(fs.settle_failures(SETTLE));
    assert_eq!(fs.status().media.notices.received, 1);
    fixture.plan.clear();
    fs.unmount().unwrap();
}

/// What a scrub finds is handled, counted and named as the scrub's: the
/// device's notices of its failed reads were queued too, and when the
/// failure worker healed a block first the scrub's summary left it out
/// (3 of 2,304 blocks healed) and the events named a read no program made.
#[test]
fn a_scrub_counts_every_block_it_heals_and_names_itself() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    // Cached (just written): every block a failing read meets is saved.
    // Eight files, eight findings: eight races the old code could lose.
    let blocks = 64;
    let mut first = u64::MAX;
    let mut last = 0;
    for index in 0..8 {
        let ino = create_file(&fs, &format!("data{index}"), &pattern(blocks / 8, 8));
        first = first.min(fixture.physical(&fs, ino, 0));
        last = last.max(fixture.physical(&fs, ino, blocks / 8 - 1));
    }
    assert_eq!(last + 1 - first, blocks, "the files lie side by side");
    fixture
        .plan
        .add_rule(FaultRule::bad_blocks(
            ByteRange::at(first * BLOCK, blocks * BLOCK),
            BLOCK,
        ))
        .expect("rule");
    let summary = fs.scrub(Default::default(), &mut |_| true).expect("scrub");
    assert!(fs.settle_failures(SETTLE));
    assert_eq!(summary.healed_blocks, blocks, "{summary:?}");
    assert_eq!(fs.status().media.healed_blocks, blocks);
    let vigilfs::fs::events::ReadOutcome::Records(records) =
        fs.event_log().read_after(0, 1000, Duration::ZERO)
    else {
        panic!("the log has records");
    };
    let origins: Vec<&str> = records
        .iter()
        .filter(|record| record.errno != 0)
        .map(|record| record.text.as_str())
        .collect();
    assert!(!origins.is_empty());
    assert!(
        origins.iter().all(|origin| origin.contains("scrub")),
        "{origins:?}"
    );
    fixture.plan.clear();
    fs.unmount().unwrap();
}

/// A checksum mismatch scrub finds that a re-read does not repeat is
/// reported as an event (nothing is lost): it used to leave nothing but a
/// number in the scrub's summary.
#[test]
fn a_scrub_mismatch_that_does_not_repeat_is_still_an_event() {
    let fixture = Fixture::new();
    let (fs, ino) = fixture.uncached_file("data", &pattern(4, 6));
    let block = fixture.physical(&fs, ino, 2);
    let half = vigilfs::device::Probability::from_parts_per_million(500_000).unwrap();
    // Seed 3 corrupts the scrub's read and not the re-read that verifies it.
    let seed = 3;
    fixture
        .plan
        .add_rule(FaultRule::corrupt(seed, half).in_range(ByteRange::at(block * BLOCK, BLOCK)))
        .unwrap();
    let events = listen(&fs);
    let summary = fs.scrub(Default::default(), &mut |_| true).expect("scrub");
    assert_eq!(summary.findings, 1, "{summary:?}");
    assert_eq!(summary.lost_blocks, 0, "{summary:?}");
    let seen = errors(&events);
    assert!(
        seen.iter().any(|event| event.subtypes == Subtypes::CHECKSUM
            && blob_text(event).contains(&format!("dev={}+4096", block * BLOCK))),
        "{seen:#?}"
    );
    fixture.plan.clear();
    assert_eq!(
        read_block(&fs, ino, 2).unwrap(),
        pattern(4, 6)[2 * 4096..3 * 4096]
    );
    fs.unmount().unwrap();
}

/// A file renamed while owners names it keeps every name in the answer:
/// the walk of the entries could miss a name moved behind it, calling the
/// file "unlinked" or leaving one of its hard links out.
#[test]
fn a_file_renamed_during_an_owners_query_is_never_called_unlinked() {
    let fixture = Fixture::new();
    let fs = Arc::new(fixture.mount());
    for index in 0..200 {
        create_file(&fs, &format!("s{index:03}"), &pattern(1, index as u8));
    }
    fs.syncfs_once().unwrap();
    let ino = fs.lookup(ROOT_INO, b"s150", &root()).unwrap().ino;
    // A second name that never moves: it must never hide the other.
    fs.link(ino, ROOT_INO, b"zz-kept", &root()).unwrap();
    let block = fixture.physical(&fs, ino, 0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renamer = {
        let (fs, stop) = (Arc::clone(&fs), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for index in 0..200 {
                    let (from, to) = (format!("s{index:03}"), format!("a{index:03}"));
                    let flags = RenameFlags::default();
                    fs.rename(
                        ROOT_INO,
                        from.as_bytes(),
                        ROOT_INO,
                        to.as_bytes(),
                        flags,
                        &root(),
                    )
                    .unwrap();
                    fs.rename(
                        ROOT_INO,
                        to.as_bytes(),
                        ROOT_INO,
                        from.as_bytes(),
                        flags,
                        &root(),
                    )
                    .unwrap();
                }
            }
        })
    };
    let mut unnamed = 0;
    for _ in 0..1000 {
        for owner in fs
            .owners(ByteRange::at(block * BLOCK, BLOCK), true)
            .unwrap()
        {
            if let OwnerKind::File { paths, .. } = owner.kind {
                unnamed += usize::from(paths.len() < 2);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renamer.join().unwrap();
    assert_eq!(unnamed, 0, "times a name of the renamed file was missing");
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
}

/// A notice that comes while a writeback is writing to blocks it has just
/// allocated (not yet committed, so listed as free space): the writeback
/// finds them bad at its commit and writes its pages elsewhere; nothing
/// lives in the failed range afterwards and the fsync succeeds (the data
/// used to be committed into blocks just marked bad, and never looked at
/// again).
#[test]
fn a_writeback_in_flight_over_newly_failed_blocks_writes_its_pages_elsewhere() {
    let fixture = Fixture::new();
    let fs = Arc::new(fixture.mount());
    let free = fs
        .owners(fixture.main_region(), false)
        .unwrap()
        .into_iter()
        .find(|owner| owner.kind == OwnerKind::Free)
        .expect("free space")
        .range;
    let failed = ByteRange::at(free.start, 256 * BLOCK);
    // Data writes are held a while: the notice comes in the middle of one.
    fixture
        .plan
        .add_rule(
            FaultRule::delay(400_000, 0, 1)
                .for_class(IoClass::Data)
                .on(vigilfs::device::Operations::WRITE),
        )
        .unwrap();
    let data = pattern(4, 1);
    let writer = {
        let (fs, data) = (Arc::clone(&fs), data.clone());
        std::thread::spawn(move || {
            let (attr, handle) = fs
                .create(ROOT_INO, b"late", 0o644, read_write(), &root())
                .unwrap();
            fs.write(handle, 0, &data, &root()).unwrap();
            let synced = fs.fsync(handle, false);
            fs.release(handle).unwrap();
            (attr.ino, synced)
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    fs.notify_failure(failed, Origin::operator("mid-write"))
        .unwrap();
    let (ino, synced) = writer.join().unwrap();
    synced.expect("the fsync succeeds: its pages went elsewhere");
    fixture.plan.clear();
    let inside = fs.owners(failed, false).unwrap();
    assert!(
        inside.iter().all(|owner| owner.kind == OwnerKind::Bad),
        "{inside:#?}"
    );
    let physical = fixture.physical(&fs, ino, 0);
    assert!(!(failed.start / BLOCK..failed.end / BLOCK).contains(&physical));
    assert_eq!(read_block(&fs, ino, 3).unwrap(), data[3 * 4096..]);
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
    fixture.assert_fsck_clean();
}

/// While frozen, a notice the full queue cannot keep is refused (EBUSY),
/// not answered "handled after the thaw" and dropped.
#[test]
fn a_notice_the_frozen_queue_cannot_keep_is_refused() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let start = fixture.main_region().start + 1024 * BLOCK;
    fs.freeze().unwrap();
    let mut refused = 0;
    for index in 0..1030u64 {
        match fs.notify_failure(
            ByteRange::at(start + index * BLOCK, BLOCK),
            Origin::operator("storm"),
        ) {
            Ok(report) => assert!(report.queued),
            Err(error) => {
                assert_eq!(error.errno(), libc::EBUSY, "{error}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 6);
    fs.thaw().unwrap();
    assert!(fs.settle_failures(SETTLE));
    assert_eq!(fs.status().space.bad_blocks, 1024);
    fs.unmount().unwrap();
}

/// Flips one bit of device block `block` of the (unmounted) image.
fn rot(fixture: &Fixture, block: u64) {
    let mut sector = [0u8; 512];
    let at = block * BLOCK;
    fixture
        .memory
        .read_at(at, &mut sector, IoClass::Data)
        .unwrap();
    sector[100] ^= 0x10;
    fixture.memory.write_at(at, &sector, IoClass::Data).unwrap();
}

/// Review 34: a damaged extents leaf ended the scrub at the first extent
/// whose checksums it held ("extents b-tree node ... is corrupt"), with
/// nothing recorded and the rest of the device never read. The scrub now
/// reports the leaf as the finding it is, counts the extents it could not
/// verify, and reads everything else: rot in a file whose extent is in a
/// healthy leaf is still found.
#[test]
fn a_damaged_extents_leaf_is_a_finding_and_the_scrub_goes_on() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let files: Vec<u64> = (0..200)
        .map(|index| create_file(&fs, &format!("f{index:03}"), &pattern(1, index as u8)))
        .collect();
    // Where everything is once written back for good.
    fs.unmount().unwrap();
    let fs = fixture.mount();
    let leaves = node_of(&fixture, &fs, TreeId::Extents);
    assert!(leaves.len() > 1, "the extents tree has several leaves");
    let leaf = *leaves.last().unwrap();
    let data: Vec<u64> = files
        .iter()
        .map(|&ino| fixture.physical(&fs, ino, 0))
        .collect();
    fs.unmount().unwrap();
    rot(&fixture, leaf);
    for &block in &data {
        rot(&fixture, block);
    }
    let fs = fixture.mount_with(MountOptions {
        errors: Some(vigilfs::format::ErrorsPolicy::Continue),
        ..MountOptions::default()
    });
    let summary = fs.scrub(Default::default(), &mut |_| true).expect("scrub");
    assert!(summary.complete, "{summary:?}");
    assert!(summary.unverified > 0, "{summary:?}");
    // The leaf, and every rotten block whose extent could be read.
    assert_eq!(
        summary.findings,
        1 + files.len() as u64 - summary.unverified,
        "{summary:?}"
    );
    fs.unmount().unwrap();
}

/// A completed scrub found one rotten block, block `block` of `ino`, and
/// nothing else; reads of it fail once the faults are cleared. Unmounts.
fn only_the_rotten_block_was_found(
    fixture: &Fixture,
    fs: Arc<Filesystem>,
    summary: &ScrubSummary,
    ino: u64,
    block: u64,
) {
    assert!(summary.complete);
    assert_eq!(
        (summary.findings, summary.lost_blocks),
        (1, 1),
        "{summary:?}"
    );
    fixture.plan.clear();
    assert_eq!(errno_of(read_block(&fs, ino, block)), libc::EIO);
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
}

/// Runs a scrub whose reads of `held` wait 1.5 s, and `meanwhile` while
/// the first of them waits; the scrub's summary.
fn scrub_while_rewriting(
    fixture: &Fixture,
    fs: &Arc<Filesystem>,
    held: ByteRange,
    meanwhile: impl FnOnce(),
) -> ScrubSummary {
    fixture
        .plan
        .add_rule(
            FaultRule::delay(1_500_000, 0, 1)
                .in_range(held)
                .for_class(IoClass::Data)
                .on(vigilfs::device::Operations::READ),
        )
        .unwrap();
    let scrub = {
        let fs = Arc::clone(fs);
        std::thread::spawn(move || fs.scrub(Default::default(), &mut |_| true))
    };
    std::thread::sleep(Duration::from_millis(400));
    meanwhile();
    scrub.join().unwrap().expect("scrub")
}

/// Writes file block `index` of `ino` anew (`pattern(1, seed)`) and
/// fsyncs it: copy-on-write moves it.
fn rewrite_block(fs: &Filesystem, ino: u64, index: u64, seed: u8) {
    let handle = fs.open(ino, read_write(), &root()).unwrap();
    fs.write(handle, index * BLOCK, &pattern(1, seed), &root())
        .unwrap();
    fs.fsync(handle, false).unwrap();
    fs.release(handle).unwrap();
}

/// Review 34: a scrub beside busy writers reported checksum failures of a
/// healthy device ("mismatch not repeated"): it read a block the file had
/// left (copy-on-write) and another had filled since the scrub looked the
/// extent up. Here the scrub's read of the file's block is held back while
/// the file is rewritten and the block it left is overwritten: no finding,
/// no error.
#[test]
fn a_block_rewritten_while_the_scrub_reads_it_is_no_failure() {
    let fixture = Fixture::new();
    let (fs, ino) = fixture.uncached_file("busy", &pattern(1, 1));
    let old = fixture.physical(&fs, ino, 0);
    let fs = Arc::new(fs);
    let summary = scrub_while_rewriting(&fixture, &fs, ByteRange::at(old * BLOCK, BLOCK), || {
        rewrite_block(&fs, ino, 0, 2);
        assert_ne!(fixture.physical(&fs, ino, 0), old, "copy-on-write");
        // Another file's data where the old block was.
        fixture
            .memory
            .write_at(old * BLOCK, &pattern(1, 3), IoClass::Data)
            .unwrap();
    });
    assert!(summary.complete);
    assert_eq!(summary.findings, 0, "{summary:?}");
    assert_eq!(fs.status().error_record.total, 0);
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
}

/// Review 34: a node lost to a failure notice made the mount read-only
/// (errors=remount-ro) while the notice's marks waited in an open journal
/// entry; the stop refused that entry, and the next failure recorded a
/// journal failure at the journal's next block, which nothing had written.
/// The refusal is a consequence of the failure reported already: the rot
/// read next is a checksum error and nothing else.
#[test]
fn a_remount_read_only_records_no_journal_failure_of_its_own() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    many_files(&fs, 300);
    let ino = create_file(&fs, "rotten", &pattern(1, 4));
    let data = fixture.physical(&fs, ino, 0);
    fs.unmount().unwrap();
    rot(&fixture, data);
    let fs = fixture.mount();
    // A leaf of files nobody touches (the newest inode's leaf is read at
    // the mount): only the roots are cached.
    let leaves = node_of(&fixture, &fs, TreeId::Inodes);
    let leaf = leaves[leaves.len() / 2];
    fixture.bad_block(leaf);
    let report = fs
        .notify_failure(ByteRange::at(leaf * BLOCK, BLOCK), Origin::operator("test"))
        .unwrap();
    assert!(
        matches!(report.handled[0].outcome, Outcome::Lost { .. }),
        "{:#?}",
        report.handled
    );
    assert!(matches!(fs.status().state, LifeState::ReadOnly(_)));
    let events = listen(&fs);
    // A sync asks the journal to write what it holds: the stop refuses it.
    let _ = fs.syncfs_once();
    let read_only = OpenFlags {
        read: true,
        ..OpenFlags::default()
    };
    let handle = fs.open(ino, read_only, &root()).unwrap();
    assert_eq!(errno_of(fs.read(handle, 0, BLOCK as usize)), libc::EIO);
    fs.release(handle).unwrap();
    let found = errors(&events);
    assert!(
        found
            .iter()
            .all(|event| !event.subtypes.contains(Subtypes::JOURNAL)),
        "{found:#?}"
    );
    assert!(found
        .iter()
        .any(|event| event.subtypes.contains(Subtypes::CHECKSUM)));
    let record = fs.status().error_record;
    assert_eq!(record.counter(ErrorKind::Journal).count, 0, "{record:#?}");
    assert_eq!(record.counter(ErrorKind::Checksum).count, 1, "{record:#?}");
    fs.unmount().unwrap();
}

/// Review 34: on a read-only mount, which cannot rewrite it, a damaged
/// backup superblock was recorded as a new error by every scrub (the mount
/// had recorded it once already). Found again, it is known.
#[test]
fn a_damaged_superblock_copy_on_a_read_only_mount_is_one_error_however_often_scrubbed() {
    let fixture = Fixture::new();
    let backup = vigilfs::format::SuperblockCopy::SecondBackup
        .offset(fixture.device.length())
        .unwrap();
    rot(&fixture, backup / BLOCK);
    let fs = fixture.mount_with(MountOptions {
        read_only: true,
        ..MountOptions::default()
    });
    let at_mount = fs.status().error_record.total;
    assert_eq!(at_mount, 1, "the mount records the damage once");
    for _ in 0..3 {
        let summary = fs.scrub(Default::default(), &mut |_| true).expect("scrub");
        assert!(summary.complete);
        assert_eq!(summary.findings, 1, "{summary:?}");
    }
    assert_eq!(fs.status().error_record.total, at_mount);
    fs.unmount().unwrap();
}

/// Review 35: the check of `a_block_rewritten_while_the_scrub_reads_it_is_no_failure`
/// compared the whole extent record, which a rewrite of any other block of
/// the extent splits: rot in a block that never moved was dropped whenever
/// the file was written during the scrub (a database's file always is).
/// Here block 5 is rotten and block 7 is rewritten while the scrub's read
/// of the extent is held back: block 5 is still found.
#[test]
fn rot_is_found_while_another_block_of_its_extent_is_rewritten() {
    let fixture = Fixture::new();
    let (fs, ino) = fixture.uncached_file("database", &pattern(8, 5));
    let first = fixture.physical(&fs, ino, 0);
    assert_eq!(fixture.physical(&fs, ino, 7), first + 7, "one extent");
    fs.unmount().unwrap();
    rot(&fixture, first + 5);
    let fs = Arc::new(fixture.mount());
    let held = ByteRange::at(first * BLOCK, 8 * BLOCK);
    let summary = scrub_while_rewriting(&fixture, &fs, held, || {
        rewrite_block(&fs, ino, 7, 6);
        assert_ne!(fixture.physical(&fs, ino, 7), first + 7, "copy-on-write");
    });
    only_the_rotten_block_was_found(&fixture, fs, &summary, ino, 5);
}

/// Review 36: the scrub reads the reverse map ahead in batches; a write
/// that split an extent whose record was read already made its tail a
/// record the walk never met, and rot there was never found. Here the
/// scrub is held back on a file before the database while block 3 of the
/// database is rewritten; block 6, rotten, is in the tail: still found.
#[test]
fn rot_in_the_tail_a_write_split_off_an_extent_is_found() {
    let fixture = Fixture::new();
    let fs = fixture.mount();
    let before = create_file(&fs, "before", &pattern(1, 1));
    let ino = create_file(&fs, "database", &pattern(8, 5));
    fs.unmount().unwrap();
    let fs = Arc::new(fixture.mount());
    let held = fixture.physical(&fs, before, 0);
    let first = fixture.physical(&fs, ino, 0);
    assert!(held < first);
    assert_eq!(fixture.physical(&fs, ino, 7), first + 7, "one extent");
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
    rot(&fixture, first + 6);
    let fs = Arc::new(fixture.mount());
    let summary = scrub_while_rewriting(&fixture, &fs, ByteRange::at(held * BLOCK, BLOCK), || {
        rewrite_block(&fs, ino, 3, 6);
    });
    only_the_rotten_block_was_found(&fixture, fs, &summary, ino, 6);
}
