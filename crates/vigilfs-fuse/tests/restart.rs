//! A session restarted with another engine after a simulated power cut:
//! the mount point serves the recovered filesystem at once, with the
//! kernel's caches empty, descriptors opened before the cut fail with
//! `EIO`, and waiting and unmounting follow the newest session.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use vigilfs::device::{BlockDevice, MemoryDevice, PowerLoss, SectorSize, VolatileCache};
use vigilfs::fs::{Filesystem, MountOptions};
use vigilfs::mkfs::{make_filesystem, MkfsOptions};
use vigilfs_fuse::{mount, MountConfig};

fn engine(device: &Arc<dyn BlockDevice>) -> Arc<Filesystem> {
    Arc::new(
        Filesystem::mount(
            Arc::clone(device),
            MountOptions {
                writeback_interval: Duration::from_secs(3600),
                ..MountOptions::default()
            },
        )
        .expect("mount"),
    )
}

#[test]
fn a_restarted_session_serves_the_recovered_filesystem_and_old_descriptors_fail() {
    if !common::fuse_available() {
        return;
    }
    let memory = Arc::new(MemoryDevice::new(64 << 20, SectorSize::Bytes512));
    make_filesystem(memory.clone(), &MkfsOptions::default()).unwrap();
    let cache = Arc::new(VolatileCache::new(memory));
    let device: Arc<dyn BlockDevice> = cache.clone();
    let directory = tempfile::tempdir().unwrap();
    let first = engine(&device);
    let mounted = mount(
        Arc::clone(&first),
        directory.path(),
        &MountConfig::default(),
    )
    .unwrap();
    let path = |name: &str| mounted.mountpoint().join(name);
    fs::write(path("durable"), b"synced").unwrap();
    File::open(path("durable")).unwrap().sync_all().unwrap();
    let mut open = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path("lost"))
        .unwrap();
    open.write_all(b"never synced").unwrap();
    // Read once: its pages are in the kernel's cache when the power goes.
    let cached = File::open(path("durable")).unwrap();
    let mut bytes = [0u8; 6];
    cached.read_exact_at(&mut bytes, 0).unwrap();

    cache.cut_power();
    first.abandon();
    cache.restore_power(PowerLoss::DropUnflushed).unwrap();
    let second = engine(&device);
    assert!(second.recovered());
    mounted
        .restarter()
        .restart(
            Arc::clone(&second),
            &first.inodes_known_to_the_kernel(),
            None,
        )
        .unwrap();
    drop(first);

    assert_eq!(fs::read(path("durable")).unwrap(), b"synced");
    assert!(
        fs::read(path("lost")).map_or(true, |bytes| bytes.is_empty()),
        "unsynced data came back"
    );
    let mut buffer = Vec::new();
    let old = open.read_to_end(&mut buffer);
    assert_eq!(old.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(
        open.write_all(b"more").unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    drop(open);
    let stale = cached.read_exact_at(&mut bytes, 0).unwrap_err();
    assert_eq!(
        stale.raw_os_error(),
        Some(libc::EIO),
        "a page cached before the crash is not served after it"
    );
    drop(cached);
    fs::write(path("after"), b"a new file").unwrap();
    mounted.unmount().unwrap();
    let Ok(second) = Arc::try_unwrap(second) else {
        panic!("the sessions let go of the engine");
    };
    second.unmount().unwrap();
}
