//! The image of a mount, as a read-only mount remounted read-write needs
//! it: opened read-only at mount, opened again for writing on the remount
//! (`mount -o remount,rw`, through the helper or the kernel alone), after
//! which the engine does what a read-write mount does at mount
//! (`vigilfs::fs::Filesystem::make_writable`).
//!
//! The image is opened again by its path, so the file at that path must be
//! the one mounted (checked: a replaced image is refused); the mount holds
//! its lock on the file throughout, so no other mount can have it.

use std::path::PathBuf;
use std::sync::Arc;

use vigilfs::device::FileDevice;
use vigilfs::fs::Filesystem;

use crate::control::server::fs_error_message;

/// A mount's image file and the device reading it.
#[derive(Debug)]
pub struct WritableImage {
    path: PathBuf,
    device: Arc<FileDevice>,
}

impl WritableImage {
    /// The image at `path`, read through `device`.
    pub fn new(path: PathBuf, device: Arc<FileDevice>) -> WritableImage {
        WritableImage { path, device }
    }

    /// Makes the mount of `fs` writable: the image first, then the engine.
    /// Nothing to do for a mount that may write already; an error (one
    /// line for the user, with its errno) leaves the mount read-only.
    pub fn make_writable(&self, fs: &Filesystem) -> Result<(), (String, i32)> {
        self.device.open_for_writing(&self.path).map_err(|error| {
            (
                format!("opening {} for writing: {error}", self.path.display()),
                error.raw_os_error().unwrap_or(libc::EIO),
            )
        })?;
        fs.make_writable()
            .map_err(|error| (fs_error_message(&error), error.errno()))
    }
}
