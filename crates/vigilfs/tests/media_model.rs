//! Poison against a model, through the engine API: random media failures
//! under a file's blocks, rewrites, truncates, punches and remounts, and
//! after each step every block of the file reads exactly as the model
//! says — `EIO` where the data was lost and not replaced since, the bytes
//! last written everywhere else. Failures are made real with bad-block
//! fault rules (so nothing can rescue the data: the clean cache is empty);
//! when the device recovers, lost data must stay lost, and a bad block must
//! never hold live data again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use vigilfs::device::{
    BlockDevice, ByteRange, FaultDevice, FaultPlan, FaultRule, MemoryDevice, SectorSize,
};
use vigilfs::failure::{Origin, OwnerKind};
use vigilfs::format::Layout;
use vigilfs::fs::{Filesystem, FsError, MountOptions, OpenFlags};
use vigilfs::fsck::fsck;
use vigilfs::inode::{Caller, FallocateMode, ROOT_INO};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 12;

#[derive(Debug, Clone)]
enum Step {
    /// The device block under file block `n` fails, and is reported.
    Fail(u64),
    /// File block `n` is rewritten whole with a new pattern.
    Rewrite(u64, u8),
    /// The file is cut to `n` blocks.
    Truncate(u64),
    /// File block `n` is punched out.
    Punch(u64),
    /// Unmount and mount again.
    Remount,
    /// The device reads every block again (it remapped them): lost data
    /// must stay lost, not come back as whatever the blocks hold.
    DeviceRecovers,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..BLOCKS).prop_map(Step::Fail),
        3 => (0..BLOCKS, any::<u8>()).prop_map(|(n, seed)| Step::Rewrite(n, seed)),
        1 => (0..=BLOCKS).prop_map(Step::Truncate),
        1 => (0..BLOCKS).prop_map(Step::Punch),
        1 => Just(Step::Remount),
        1 => Just(Step::DeviceRecovers),
    ]
}

fn options() -> MountOptions {
    // No clean page stays cached: a failure finds no copy to rescue.
    MountOptions {
        cache_bytes: 0,
        ..MountOptions::default()
    }
}

fn read_write() -> OpenFlags {
    OpenFlags {
        read: true,
        write: true,
        ..OpenFlags::default()
    }
}

fn block_bytes(seed: u8, index: u64) -> Vec<u8> {
    (0..BLOCK)
        .map(|at| (at as u8).wrapping_mul(13) ^ seed ^ (index as u8) | 1)
        .collect()
}

struct World {
    plan: Arc<FaultPlan>,
    device: Arc<dyn BlockDevice>,
    layout: Layout,
    fs: Option<Filesystem>,
    ino: u64,
}

impl World {
    fn fs(&self) -> &Filesystem {
        self.fs.as_ref().expect("mounted")
    }

    fn physical(&self, index: u64) -> Option<u64> {
        let main = self.layout.main;
        let region = ByteRange::new(main.start * BLOCK, (main.start + main.blocks) * BLOCK);
        self.fs()
            .owners(region, false)
            .expect("owners")
            .into_iter()
            .find_map(|owner| match owner.kind {
                OwnerKind::File {
                    ino,
                    file_offset,
                    unwritten: false,
                    ..
                } if ino == self.ino => {
                    let first = file_offset / BLOCK;
                    (first..first + owner.range.len() / BLOCK)
                        .contains(&index)
                        .then(|| owner.range.start / BLOCK + index - first)
                }
                _ => None,
            })
    }

    fn with_handle<T>(&self, body: impl FnOnce(&Filesystem, u64) -> T) -> T {
        let fs = self.fs();
        let handle = fs
            .open(self.ino, read_write(), &Caller::root())
            .expect("open");
        let result = body(fs, handle);
        fs.release(handle).expect("release");
        result
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let memory = Arc::new(MemoryDevice::new(32 << 20, SectorSize::Bytes512));
    let plan = Arc::new(FaultPlan::new());
    let device: Arc<dyn BlockDevice> = Arc::new(FaultDevice::new(memory, Arc::clone(&plan)));
    let layout = make_filesystem(device.clone(), &MkfsOptions::default())
        .expect("mkfs")
        .layout;
    let fs = Filesystem::mount(device.clone(), options()).expect("mount");
    let (attr, handle) = fs
        .create(ROOT_INO, b"model", 0o644, read_write(), &Caller::root())
        .expect("create");
    // The model: each block's bytes, or None when poisoned (lost).
    let mut model: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
    let mut initial = Vec::new();
    for index in 0..BLOCKS {
        let bytes = block_bytes(0xa0, index);
        initial.extend_from_slice(&bytes);
        model.insert(index, Some(bytes));
    }
    fs.write(handle, 0, &initial, &Caller::root())
        .expect("write");
    fs.fsync(handle, false).expect("fsync");
    fs.release(handle).expect("release");
    let mut world = World {
        plan,
        device,
        layout,
        fs: Some(fs),
        ino: attr.ino,
    };
    let mut size_blocks = BLOCKS;
    let mut bad: BTreeSet<u64> = BTreeSet::new();
    for step in steps {
        match step {
            Step::Fail(index) => {
                let Some(physical) = world.physical(index) else {
                    continue; // a hole: nothing to lose
                };
                world
                    .plan
                    .add_rule(FaultRule::bad_blocks(
                        ByteRange::at(physical * BLOCK, BLOCK),
                        BLOCK,
                    ))
                    .expect("rule");
                bad.insert(physical);
                world
                    .fs()
                    .notify_failure(
                        ByteRange::at(physical * BLOCK, BLOCK),
                        Origin::operator("model"),
                    )
                    .expect("notify");
                model.insert(index, None);
            }
            Step::Rewrite(index, seed) => {
                let bytes = block_bytes(seed, index);
                world.with_handle(|fs, handle| {
                    fs.write(handle, index * BLOCK, &bytes, &Caller::root())
                        .expect("write");
                    fs.fsync(handle, false).expect("fsync");
                });
                model.insert(index, Some(bytes));
                size_blocks = size_blocks.max(index + 1);
            }
            Step::Truncate(blocks) => {
                world.with_handle(|fs, handle| {
                    let changes = vigilfs::fs::SetAttributes {
                        size: Some(blocks * BLOCK),
                        ..Default::default()
                    };
                    fs.setattr(world.ino, &changes, Some(handle), &Caller::root())
                        .expect("truncate");
                });
                for index in blocks..BLOCKS {
                    model.insert(index, Some(vec![0; BLOCK as usize]));
                }
                size_blocks = blocks;
            }
            Step::Punch(index) => {
                world.with_handle(|fs, handle| {
                    fs.fallocate(
                        handle,
                        index * BLOCK,
                        BLOCK,
                        FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
                        &Caller::root(),
                    )
                    .expect("punch");
                });
                model.insert(index, Some(vec![0; BLOCK as usize]));
            }
            Step::DeviceRecovers => world.plan.clear(),
            Step::Remount => {
                world
                    .fs
                    .take()
                    .expect("mounted")
                    .unmount()
                    .expect("unmount");
                world.fs = Some(Filesystem::mount(world.device.clone(), options()).expect("mount"));
            }
        }
        // A block the allocator handed out again after it went bad would
        // hold live data now.
        for &physical in &bad {
            let owners = world
                .fs()
                .owners(ByteRange::at(physical * BLOCK, BLOCK), false)
                .expect("owners");
            for owner in owners {
                if let OwnerKind::File { poisoned, .. } = owner.kind {
                    prop_assert!(poisoned, "bad block {physical} holds live data");
                }
            }
        }
        for index in 0..size_blocks {
            let read =
                world.with_handle(|fs, handle| fs.read(handle, index * BLOCK, BLOCK as usize));
            match model.get(&index).expect("modelled") {
                None => prop_assert_eq!(
                    read.as_ref().map_err(FsError::errno).err(),
                    Some(libc::EIO),
                    "block {} should be lost",
                    index
                ),
                Some(bytes) => prop_assert_eq!(
                    read.as_ref().ok(),
                    Some(bytes),
                    "block {} reads wrong or fails: {:?}",
                    index,
                    read.as_ref().err()
                ),
            }
        }
        let poisoned = model.values().filter(|block| block.is_none()).count() as u64;
        let runs = world.fs().status().media.poisoned;
        let held: u64 = runs.iter().map(|run| u64::from(run.blocks)).sum();
        prop_assert_eq!(held, poisoned);
    }
    world
        .fs
        .take()
        .expect("mounted")
        .unmount()
        .expect("unmount");
    world.plan.clear();
    let report = fsck(world.device.clone(), &mut |_| {}).expect("fsck");
    let damage: Vec<_> = report
        .problems
        .iter()
        .filter(|problem| problem.structure != "lost data")
        .collect();
    prop_assert!(damage.is_empty(), "fsck: {:#?}", damage);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn reads_fail_exactly_where_data_was_lost_and_not_replaced(
        steps in proptest::collection::vec(step(), 1..14)
    ) {
        run(steps)?;
    }
}
