//! The `vigilfs` command.
//!
//! Each subcommand lives in its own module; this file only parses the
//! command line and turns outcomes into exit codes. Every failure becomes a
//! one-line message on stderr and a non-zero exit, never a panic: see
//! [`failure::Failure`].

mod failure;
mod fsck_command;
mod mkfs_command;
mod size;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::size::ByteSize;

/// vigilfs: a journaled, checksummed filesystem that never loses an error.
#[derive(Parser, Debug)]
#[command(name = "vigilfs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a new vigilfs filesystem on an image file or block device.
    ///
    /// If IMAGE does not exist it is created as a sparse file of --size
    /// bytes (1G if not given). An existing vigilfs filesystem is never
    /// overwritten unless --force is given.
    ///
    /// Examples:
    ///   vigilfs mkfs disk.img --size 4G
    ///   vigilfs mkfs /dev/loop0 --label data
    Mkfs {
        /// The image file or block device.
        image: PathBuf,
        /// Size of a new image: bytes, or with a suffix K, M, G, T (powers of 1024).
        #[arg(long, value_name = "SIZE")]
        size: Option<ByteSize>,
        /// Journal size (default 1/64 of the filesystem, between 1M and 128M).
        #[arg(long, value_name = "SIZE")]
        journal_size: Option<ByteSize>,
        /// Block size in bytes (default 4096).
        #[arg(long, value_name = "BYTES", default_value_t = 4096)]
        block_size: u32,
        /// A label of up to 64 bytes.
        #[arg(long, default_value = "")]
        label: String,
        /// Overwrite an existing vigilfs filesystem.
        #[arg(long)]
        force: bool,
    },
    /// Check a vigilfs filesystem without changing it.
    ///
    /// Exit status as fsck(8): 0 no errors, 4 errors left uncorrected,
    /// 8 operational error (the image cannot be read or holds no vigilfs
    /// filesystem).
    ///
    /// Example:
    ///   vigilfs fsck disk.img --json
    Fsck {
        /// The image file or block device.
        image: PathBuf,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Mkfs {
            image,
            size,
            journal_size,
            block_size,
            label,
            force,
        } => mkfs_command::run(&mkfs_command::MkfsRequest {
            image,
            size,
            journal_size,
            block_size,
            label,
            force,
        }),
        Command::Fsck { image, json } => fsck_command::run(&image, json),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("vigilfs: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
