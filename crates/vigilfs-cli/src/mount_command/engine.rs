//! What a mount is built from: the engine's options and the FUSE
//! adapter's configuration from the `-o` settings, and the device stack
//! the engine is mounted on (see the parent module).
//!
//! The crash lab builds its mounts from the same two functions, so a
//! crash test runs with the options a real mount would have.

use std::path::Path;
use std::sync::Arc;

use vigilfs::device::{ByteRange, FaultDevice, FaultPlan, FileDevice, FileDeviceOptions};
use vigilfs::failure::Origin;
use vigilfs::fs::{AtimeUpdates, Filesystem, MountOptions};

use crate::daemon_log::log;
use crate::failure::Failure;
use crate::mount_options::MountSettings;
use crate::power_cut::PowerSwitch;
use crate::writable_image::WritableImage;

pub fn mount_options(settings: &MountSettings, plan: &Arc<FaultPlan>) -> MountOptions {
    let defaults = MountOptions::default();
    MountOptions {
        fault_plan: Some(Arc::clone(plan)),
        read_only: settings.read_only,
        errors: settings.errors,
        writeback_interval: settings
            .writeback_interval
            .unwrap_or(defaults.writeback_interval),
        dirty_limit_bytes: settings.dirty_bytes.unwrap_or(defaults.dirty_limit_bytes),
        cache_bytes: settings.cache_bytes.unwrap_or(defaults.cache_bytes),
        fsync_errors: settings.fsync_errors.unwrap_or(defaults.fsync_errors),
        auto_da_alloc: settings.auto_da_alloc.unwrap_or(defaults.auto_da_alloc),
        atime: settings.atime.unwrap_or(defaults.atime),
        directory_atime: settings.directory_atime.unwrap_or(defaults.directory_atime),
        scrub_interval: settings.scrub_interval,
        scrub_rate: settings.scrub_rate,
        failures: settings
            .failed
            .iter()
            .map(|&(offset, length)| {
                (
                    ByteRange::at(offset, length),
                    Origin::operator("reported at mount (failed=)"),
                )
            })
            .collect(),
        ..defaults
    }
}

/// The FUSE adapter's configuration for `settings`, mounting `image`
/// (shown as the mount's source, which is how mkfs and fsck recognise a
/// mounted image).
pub fn fuse_config(settings: &MountSettings, image: &Path) -> vigilfs_fuse::MountConfig {
    let defaults = vigilfs_fuse::MountConfig::default();
    vigilfs_fuse::MountConfig {
        threads: settings.threads.unwrap_or(defaults.threads),
        read_only: settings.read_only,
        allow_other: settings.allow_other.or(defaults.allow_other),
        // With strictatime every read must reach the engine to be
        // recorded: the kernel's cached pages are dropped at each open
        // unless keep_cache is asked for.
        keep_cache: settings
            .keep_cache
            .unwrap_or(defaults.keep_cache && settings.atime != Some(AtimeUpdates::Always)),
        attr_ttl: settings.attr_timeout.unwrap_or(defaults.attr_ttl),
        entry_ttl: settings.entry_timeout.unwrap_or(defaults.entry_ttl),
        source: Some(image.display().to_string()),
        set_id: settings.set_id,
        devices: settings.devices,
        exec: settings.exec.unwrap_or(true),
    }
}

/// A mounted engine and what it was mounted through.
pub(super) struct Engine {
    pub(super) fs: Arc<Filesystem>,
    pub(super) plan: Arc<FaultPlan>,
    /// With `-o crashable`.
    pub(super) power: Option<Arc<PowerSwitch>>,
    /// Without `-o crashable` (which is never read-only).
    pub(super) image: Option<Arc<WritableImage>>,
}

/// Opens `image` and mounts the engine on the device stack `settings` ask
/// for (see the module comment).
pub(super) fn start_engine(image: &Path, settings: &MountSettings) -> Result<Engine, Failure> {
    let file = FileDevice::open(
        image,
        FileDeviceOptions {
            read_only: settings.read_only,
            ..FileDeviceOptions::default()
        },
    )
    .map_err(|error| Failure::operational(format!("cannot open {}: {error}", image.display())))?;
    for note in crate::host_space::prepare(&file, image) {
        log(&note);
    }
    let plan = Arc::new(FaultPlan::new());
    let options = mount_options(settings, &plan);
    let cannot_mount =
        |error| Failure::operational(format!("cannot mount {}: {error}", image.display()));
    if settings.crashable {
        let power = Arc::new(PowerSwitch::new(Arc::new(file), Arc::clone(&plan), options));
        let fs = power.mount_first().map_err(cannot_mount)?;
        return Ok(Engine {
            fs: Arc::new(fs),
            plan,
            power: Some(power),
            image: None,
        });
    }
    let file = Arc::new(file);
    let device = FaultDevice::new(Arc::clone(&file), Arc::clone(&plan));
    let fs = Filesystem::mount(Arc::new(device), options).map_err(cannot_mount)?;
    Ok(Engine {
        fs: Arc::new(fs),
        plan,
        power: None,
        image: Some(Arc::new(WritableImage::new(image.to_path_buf(), file))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount_options::parse;

    #[test]
    fn strictatime_drops_the_kernel_cache_at_open_unless_keep_cache_is_asked() {
        let image = Path::new("/srv/disk.img");
        let config = |options: &str| fuse_config(&parse(&[options]).unwrap(), image);
        assert!(config("rw").keep_cache);
        assert!(config("relatime").keep_cache);
        assert!(!config("strictatime").keep_cache);
        assert!(config("strictatime,keep_cache").keep_cache);
        let nosuid = config("nosuid,nodev");
        assert_eq!((nosuid.set_id, nosuid.devices), (Some(false), Some(false)));
        assert_eq!(config("rw").set_id, None);
    }
}
