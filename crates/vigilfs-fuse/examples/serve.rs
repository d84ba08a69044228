//! Serves a fresh vigilfs kept in memory on a mount point until it is
//! unmounted from outside (`umount DIR`), then unmounts the engine and runs
//! fsck. For trying the adapter by hand (and with external test suites)
//! without the CLI:
//!
//! ```text
//! cargo run -p vigilfs-fuse --example serve -- /mnt/vigil [MiB]
//! ```
//!
//! Prints `mounted <dir>` once the mount answers, and exits non-zero if the
//! engine's unmount or fsck finds a problem.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use vigilfs::device::{BlockDevice, MemoryDevice, SectorSize};
use vigilfs::fs::{Filesystem, MountOptions};
use vigilfs::fsck::fsck;
use vigilfs::mkfs::{make_filesystem, MkfsOptions};

fn main() -> ExitCode {
    let mut arguments = std::env::args_os().skip(1);
    let Some(mountpoint) = arguments.next().map(PathBuf::from) else {
        eprintln!("usage: serve MOUNTPOINT [MiB]");
        return ExitCode::from(2);
    };
    let mebibytes: u64 = match arguments.next().map(|size| size.into_string()) {
        None => 512,
        Some(Ok(size)) => match size.parse() {
            Ok(size) => size,
            Err(error) => {
                eprintln!("size {size}: {error}");
                return ExitCode::from(2);
            }
        },
        Some(Err(size)) => {
            eprintln!("size {size:?} is not a number");
            return ExitCode::from(2);
        }
    };
    match serve(&mountpoint, mebibytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("serve: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(mountpoint: &std::path::Path, mebibytes: u64) -> Result<(), String> {
    let device: Arc<dyn BlockDevice> =
        Arc::new(MemoryDevice::new(mebibytes << 20, SectorSize::Bytes512));
    make_filesystem(Arc::clone(&device), &MkfsOptions::default())
        .map_err(|error| format!("mkfs: {error}"))?;
    let filesystem = Arc::new(
        Filesystem::mount(Arc::clone(&device), MountOptions::default())
            .map_err(|error| format!("mount: {error}"))?,
    );
    let mounted = vigilfs_fuse::mount(
        Arc::clone(&filesystem),
        mountpoint,
        &vigilfs_fuse::MountConfig::default(),
    )
    .map_err(|error| format!("FUSE mount: {error}"))?;
    println!("mounted {}", mounted.mountpoint().display());
    mounted
        .wait()
        .map_err(|error| format!("FUSE session: {error}"))?;
    let filesystem = Arc::try_unwrap(filesystem)
        .map_err(|_| "the engine is still shared after the session".to_string())?;
    filesystem
        .unmount()
        .map_err(|error| format!("engine unmount: {error}"))?;
    let report = fsck(device, &mut |_| {}).map_err(|error| format!("fsck: {error}"))?;
    if report.is_clean() {
        println!("unmounted; fsck clean");
        Ok(())
    } else {
        Err(format!("fsck: {:#?}", report.problems))
    }
}
