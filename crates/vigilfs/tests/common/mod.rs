//! Helpers shared by the file-data tests: a formatted in-memory filesystem
//! behind a fault-injecting device, and small conveniences on it.
//!
//! Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::sync::Arc;

use vigilfs::btree::TreeId;
use vigilfs::device::{
    BlockDevice, Errno, FaultDevice, FaultPlan, FaultRule, IoClass, MemoryDevice, Operations,
    RuleId, SectorSize,
};
use vigilfs::format::Superblock;
use vigilfs::fsck::fsck;
use vigilfs::inode::{Extent, ExtentKey, FileError, Files, Namespace, ROOT_INO};
use vigilfs::metadata::Metadata;
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

/// A 64 MiB filesystem in memory, behind a fault plan the test controls.
pub struct Fixture {
    pub memory: Arc<MemoryDevice>,
    pub plan: Arc<FaultPlan>,
    pub device: Arc<dyn BlockDevice>,
    pub superblock: Superblock,
}

impl Fixture {
    pub fn new() -> Fixture {
        let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
        let plan = Arc::new(FaultPlan::new());
        let device: Arc<dyn BlockDevice> =
            Arc::new(FaultDevice::new(Arc::clone(&memory), Arc::clone(&plan)));
        let superblock = make_filesystem(device.clone(), &MkfsOptions::default()).expect("mkfs");
        Fixture {
            memory,
            plan,
            device,
            superblock,
        }
    }

    /// Opens the metadata (replaying the journal): a mount.
    pub fn mount(&self) -> Arc<Metadata> {
        Arc::new(
            Metadata::open_default(self.device.clone(), &self.superblock).expect("open metadata"),
        )
    }

    pub fn files(&self, metadata: &Arc<Metadata>) -> Files {
        Files::new(self.device.clone(), &self.superblock, metadata.clone()).expect("files")
    }

    /// Makes `operations` on file data fail with EIO until removed.
    pub fn fail_data(&self, operations: Operations) -> RuleId {
        self.plan
            .add_rule(
                FaultRule::fail(Errno::EIO)
                    .for_class(IoClass::Data)
                    .on(operations),
            )
            .expect("rule")
    }

    pub fn fail_data_writes(&self) -> RuleId {
        self.fail_data(Operations::WRITE)
    }

    /// Makes everything durable and asserts fsck finds nothing wrong.
    pub fn assert_fsck_clean(&self, metadata: &Metadata) {
        durable(metadata);
        let report = fsck(self.device.clone(), &mut |_| {}).expect("fsck");
        assert!(report.is_clean(), "fsck: {:#?}", report.problems);
    }
}

/// Writes every dirty b-tree node and flushes the journal.
pub fn durable(metadata: &Metadata) {
    metadata.trees.sync().expect("sync");
    metadata.journal.flush().expect("flush");
}

/// Creates regular file `name` in the root directory; returns its inode.
pub fn create(metadata: &Arc<Metadata>, name: &[u8]) -> u64 {
    Namespace::new(metadata.clone())
        .create(ROOT_INO, name, 0o644, 0, 0)
        .expect("create")
        .0
}

/// `length` bytes that differ from page to page and are never zero (so a
/// hole read back by mistake shows).
pub fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|at| (at as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// The errno of a result that must be an error.
pub fn errno<T: std::fmt::Debug>(result: Result<T, FileError>) -> i32 {
    result.expect_err("expected an error").errno()
}

/// `ino`'s committed extents, as (file offset in blocks, extent).
pub fn extents(metadata: &Metadata, ino: u64) -> Vec<(u64, Extent)> {
    let (start, end) = ExtentKey::file_range(ino);
    metadata
        .trees
        .scan(
            TreeId::Extents,
            &start,
            end.as_ref().map(|end| &end[..]),
            usize::MAX,
        )
        .expect("scan")
        .into_iter()
        .map(|(key, value)| {
            (
                ExtentKey::decode(&key).unwrap().offset,
                Extent::decode(&value).unwrap(),
            )
        })
        .collect()
}
