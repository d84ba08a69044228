//! `vigilfs freeze MOUNTPOINT` and `vigilfs thaw MOUNTPOINT`.
//!
//! Freeze blocks new writers (they wait, they do not fail), writes back
//! everything and marks the superblock clean; reads go on. Thaw lets the
//! writers continue.

use std::path::Path;

use crate::control::client;
use crate::control::protocol::Request;
use crate::failure::Failure;

pub fn freeze(mountpoint: &Path) -> Result<u8, Failure> {
    // As long as the mount process runs: writing everything back may take
    // long on a slow device, and a stopped process is given up on anyway.
    client::call_waiting(mountpoint, &Request::Freeze, None)
        .map_err(|error| error.into_failure("freeze", mountpoint))?;
    eprintln!("vigilfs: {} frozen", mountpoint.display());
    Ok(0)
}

pub fn thaw(mountpoint: &Path) -> Result<u8, Failure> {
    client::call(mountpoint, &Request::Thaw)
        .map_err(|error| error.into_failure("thaw", mountpoint))?;
    eprintln!("vigilfs: {} thawed", mountpoint.display());
    Ok(0)
}
