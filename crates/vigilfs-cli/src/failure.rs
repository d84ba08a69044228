//! What a subcommand reports when it cannot do its job: a message for
//! stderr and the exit code that goes with it.

use std::fmt;

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    message: String,
    exit_code: u8,
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
        }
    }

    /// A failure caused by what the user asked for (exit code 1).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            exit_code: 1,
        }
    }

    /// A command line that makes no sense (exit code 2, as for the errors
    /// the argument parser finds).
    pub fn arguments(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            exit_code: 2,
        }
    }

    /// A failure with an explicit exit code.
    pub fn with_code(message: impl Into<String>, exit_code: u8) -> Failure {
        Failure {
            message: message.into(),
            exit_code,
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
