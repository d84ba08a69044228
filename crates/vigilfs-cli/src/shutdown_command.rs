//! `vigilfs shutdown MOUNTPOINT [--flush|--noflush]`: emergency read-only.
//!
//! With --flush (the default) dirty data and the journal are written first,
//! as far as the device lets them; then nothing more is written, writers
//! get EIO and event listeners get the terminal SHUTDOWN event. The mount
//! stays in place (reads work) until it is unmounted.

use std::path::Path;

use crate::control::client;
use crate::control::protocol::Request;
use crate::failure::Failure;

pub fn run(mountpoint: &Path, flush: bool) -> Result<u8, Failure> {
    let answer = client::call(mountpoint, &Request::Shutdown { flush })
        .map_err(|error| error.into_failure("shutdown", mountpoint))?;
    // The mount's own reason says what the flush could do (nothing, on a
    // filesystem whose writes had stopped).
    let reason = answer["state_reason"].as_str().unwrap_or("shut down");
    eprintln!("vigilfs: {} {reason}", mountpoint.display());
    Ok(0)
}
