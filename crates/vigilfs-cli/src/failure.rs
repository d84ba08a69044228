//! What a subcommand reports when it cannot do its job: a message for
//! stderr and the exit code that goes with it.

use std::fmt;

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    message: String,
    exit_code: u8,
    /// A mount that could not be made though it was asked for properly
    /// (see [`Failure::mount_refused`]).
    mount_refused: bool,
}

/// fsck(8)'s "operational error", also used by the other commands for
/// anything that stopped them.
pub const OPERATIONAL_ERROR: u8 = 8;

impl Failure {
    /// A failure with fsck(8)'s operational-error exit code.
    pub fn operational(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            exit_code: OPERATIONAL_ERROR,
            mount_refused: false,
        }
    }

    /// A failure caused by what the user asked for (exit code 1).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            exit_code: 1,
            mount_refused: false,
        }
    }

    /// A mount refused for what is at its mount point or image (a mount
    /// whose daemon is gone, a mount of the image elsewhere with other
    /// options): exit code 1, as other refusals, but a mount failure (32)
    /// to mount(8), whose 1 means a wrong invocation (review 53: a second
    /// fstab line for a mounted image exited 1).
    pub fn mount_refused(message: impl Into<String>) -> Failure {
        Failure {
            mount_refused: true,
            ..Failure::usage(message)
        }
    }

    /// Whether this is a [`Failure::mount_refused`].
    pub fn is_mount_refused(&self) -> bool {
        self.mount_refused
    }

    /// A command line that makes no sense (exit code 2, as for the errors
    /// the argument parser finds).
    pub fn arguments(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            exit_code: 2,
            mount_refused: false,
        }
    }

    /// A failure with an explicit exit code.
    pub fn with_code(message: impl Into<String>, exit_code: u8) -> Failure {
        Failure {
            message: message.into(),
            exit_code,
            mount_refused: false,
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}
