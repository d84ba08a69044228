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
    client::call(mountpoint, &Request::Freeze)
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
