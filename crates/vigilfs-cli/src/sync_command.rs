//! `vigilfs sync MOUNTPOINT`: syncfs through the control plane.
//!
//! `syncfs(2)` on a FUSE mount never reaches the filesystem, so the mount
//! process does it: everything written back and durable, then the
//! filesystem writeback error nobody has been told of yet, if any. Like a
//! new opener calling syncfs, each error is reported once: the first sync
//! after a failure exits 1, the next one 0. A user other than root and
//! the owner hears each error once as well, without taking it from them.

use std::path::Path;

use crate::control::client;
use crate::control::protocol::Request;
use crate::failure::Failure;

pub fn run(mountpoint: &Path) -> Result<u8, Failure> {
    // As long as the mount process runs: writing everything back may take
    // long on a slow device, and a stopped process is given up on anyway.
    client::call_waiting(mountpoint, &Request::Sync, None)
        .map_err(|error| error.into_failure("sync", mountpoint))?;
    Ok(0)
}
