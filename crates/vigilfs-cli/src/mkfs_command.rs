//! `vigilfs mkfs`: make a filesystem, creating the image file if needed.
//!
//! The new filesystem is complete: superblocks, journal, empty b-trees and
//! the root directory.
//!
//! Nothing is lost on bad input: an existing vigilfs filesystem is only
//! overwritten with --force, an image is never shrunk, and an image file
//! this command created is removed again if mkfs then fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigilfs::device::{BlockDevice, FileDevice, FileDeviceOptions, IoClass, SectorSize};
use vigilfs::format::layout::PRIMARY_SUPERBLOCK_OFFSET;
use vigilfs::format::{read_superblock, FormatError, Label};
use vigilfs::inode::shows_wrongly;
use vigilfs::mkfs::{make_filesystem, MkfsError, MkfsOptions};

use crate::failure::Failure;
use crate::in_use::{self, AcquireError, LockMode};
use crate::size::ByteSize;

/// The size of an image created without --size.
pub const DEFAULT_IMAGE_SIZE: ByteSize = ByteSize(1 << 30);

/// What `vigilfs mkfs` was asked to do.
#[derive(Debug)]
pub struct MkfsRequest {
    /// Image file or block device.
    pub image: PathBuf,
    /// Size for a new image (or to grow an existing image file to).
    pub size: Option<ByteSize>,
    /// Journal size.
    pub journal_size: Option<ByteSize>,
    /// Block size.
    pub block_size: u32,
    /// Label.
    pub label: String,
    /// Overwrite an existing vigilfs filesystem.
    pub force: bool,
    /// Event log size (0: none).
    pub event_log_size: Option<ByteSize>,
}

pub fn run(request: &MkfsRequest) -> Result<u8, Failure> {
    if request.label.chars().any(shows_wrongly) {
        // It would be printed raw by status, fsck and mount.
        return Err(Failure::arguments(
            "label: control and invisible formatting characters (a newline, an escape, a \
             direction override) are not allowed",
        ));
    }
    let label =
        Label::new(&request.label).map_err(|error| Failure::arguments(error.to_string()))?;
    let image = &request.image;
    let created = !image.exists();
    // Held while formatting: a mount cannot start meanwhile.
    let _lock = if created {
        None
    } else {
        match in_use::acquire(image, LockMode::Exclusive) {
            Ok(lock) => Some(lock),
            Err(AcquireError::Io(_)) => None,
            Err(refused) => return Err(Failure::usage(refused.message(image))),
        }
    };
    let size = request.size.unwrap_or(DEFAULT_IMAGE_SIZE);
    let device = if created {
        FileDevice::create_image(image, size.0, SectorSize::Bytes512)
            .map_err(|error| cannot_create(image, &error))?
    } else {
        let device = open_existing(image, request)?;
        erase_foreign_signatures(&device)?;
        device
    };
    let options = MkfsOptions {
        block_size: request.block_size,
        journal_bytes: request.journal_size.map(|size| size.0),
        event_log_bytes: request.event_log_size.map(|size| size.0),
        label,
        root_owner: invoking_user(),
        ..MkfsOptions::default()
    };
    let device = Arc::new(device);
    let superblock = match make_filesystem(Arc::clone(&device) as Arc<dyn BlockDevice>, &options) {
        Ok(superblock) => superblock,
        Err(error) => {
            if created {
                let _ = fs::remove_file(image);
            }
            return Err(mkfs_failure(image, created.then_some(size), &error));
        }
    };
    let layout = &superblock.layout;
    let block_size = u64::from(layout.block_size);
    println!(
        "made a vigilfs filesystem on {}: {} blocks of {} bytes ({}), journal {}",
        image.display(),
        layout.main.blocks,
        layout.block_size,
        ByteSize(layout.main.blocks * block_size),
        ByteSize(layout.journal.blocks * block_size),
    );
    println!("UUID {}", superblock.uuid);
    if !superblock.label.as_str().is_empty() {
        println!("label {}", superblock.label);
    }
    if !created {
        warn_if_readable_by_others(image);
    }
    if let Some(warning) = crate::host_space::growth_warning(&device, image) {
        eprintln!("vigilfs: {warning}");
    }
    Ok(0)
}

/// An image file others may read hands them every file in the filesystem,
/// whatever its permissions: said, not changed (the file is the user's; a
/// new image is made 0600).
fn warn_if_readable_by_others(image: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = fs::metadata(image) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o7777;
    if metadata.is_file() && mode & 0o044 != 0 {
        eprintln!(
            "vigilfs: warning: {} is readable by others (mode {mode:04o}): whoever can read it \
             reads every file in the filesystem past their permissions; `chmod 600 {}` keeps \
             it to its owner",
            image.display(),
            image.display()
        );
    }
}

/// Whether the file `image` holds a vigilfs superblock's magic where the
/// primary copy starts, whatever the rest of it holds.
fn starts_with_a_superblock(image: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let expected = vigilfs::format::superblock::SUPERBLOCK.magic.0;
    let mut found = [0u8; 8];
    fs::File::open(image)
        .and_then(|file| file.read_exact_at(&mut found, PRIMARY_SUPERBLOCK_OFFSET))
        .is_ok_and(|()| found == expected)
}

/// Why a new image could not be made at `image`. A path that "exists"
/// yet was not found is a symbolic link to nothing (or a loop of them):
/// said so, where the system's EEXIST would name a file nobody can see.
fn cannot_create(image: &Path, error: &std::io::Error) -> Failure {
    let link = fs::symlink_metadata(image).is_ok_and(|found| found.file_type().is_symlink());
    if error.kind() == std::io::ErrorKind::AlreadyExists && link {
        let target = fs::read_link(image)
            .map(|target| target.display().to_string())
            .unwrap_or_else(|_| "?".into());
        return Failure::usage(format!(
            "{} is a symbolic link to {target}, which does not exist or is a loop of links: \
             give the image's own path, or remove the link",
            image.display()
        ));
    }
    Failure::operational(format!("cannot create {}: {error}", image.display()))
}

/// Creates `image` as a sparse file of `size` bytes and makes a filesystem
/// with the default options on it (what `vigilfs mount` does with an image
/// that does not exist). The file is removed again if that fails. Returns
/// the warning that the image could outgrow its host, for the caller to
/// say once (a mount says it in its log when it opens the image).
pub fn create_formatted(image: &Path, size: ByteSize) -> Result<Option<String>, Failure> {
    let device = Arc::new(
        FileDevice::create_image(image, size.0, SectorSize::Bytes512)
            .map_err(|error| cannot_create(image, &error))?,
    );
    let options = MkfsOptions {
        root_owner: invoking_user(),
        ..MkfsOptions::default()
    };
    make_filesystem(Arc::clone(&device) as Arc<dyn BlockDevice>, &options).map_err(|error| {
        let _ = fs::remove_file(image);
        mkfs_failure(image, Some(size), &error)
    })?;
    Ok(crate::host_space::growth_warning(&device, image))
}

/// The user and group making the filesystem, who own its root directory:
/// a user who makes an image to mount can write in it (root's own images
/// stay root's).
fn invoking_user() -> (u32, u32) {
    // SAFETY: getuid(2) and getgid(2) take nothing and cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// A failed mkfs as a command failure: sizes and options that cannot make
/// a filesystem are the command line's fault (exit 2), the rest is
/// operational. `created`: the size of the image this command created.
fn mkfs_failure(image: &Path, created: Option<ByteSize>, error: &MkfsError) -> Failure {
    let message = match (error, created) {
        // The image holds whole sectors: the device is the size asked,
        // rounded down, which would name a size nobody gave.
        (MkfsError::DeviceTooSmall { minimum, .. }, Some(size)) => format!(
            "mkfs on {} failed: --size {size} is too small: a filesystem needs at least {} \
             ({minimum} bytes)",
            image.display(),
            ByteSize(*minimum)
        ),
        _ => format!("mkfs on {} failed: {error}", image.display()),
    };
    match error {
        MkfsError::DeviceTooSmall { .. }
        | MkfsError::JournalSize { .. }
        | MkfsError::EventLogSize { .. }
        | MkfsError::BlockSize { .. }
        | MkfsError::BlockSizeNotMountable { .. }
        | MkfsError::BlockSizeBelowSectorSize { .. } => Failure::arguments(message),
        _ => Failure::operational(message),
    }
}

fn open_existing(image: &Path, request: &MkfsRequest) -> Result<FileDevice, Failure> {
    let metadata = fs::metadata(image).map_err(|error| {
        Failure::operational(format!("cannot read {}: {error}", image.display()))
    })?;
    if let Some(size) = request.size {
        if !metadata.is_file() {
            return Err(Failure::usage(format!(
                "--size applies to image files; {} is not one",
                image.display()
            )));
        }
        if size.0 < metadata.len() {
            return Err(Failure::usage(format!(
                "{} is {} bytes; refusing to shrink it to {size}",
                image.display(),
                metadata.len()
            )));
        }
    }
    let device = FileDevice::open(image, FileDeviceOptions::default()).map_err(|error| {
        Failure::operational(format!("cannot open {}: {error}", image.display()))
    })?;
    if !request.force {
        match read_superblock(&device) {
            Ok(existing) => {
                return Err(Failure::usage(format!(
                    "{} already holds a vigilfs filesystem (UUID {}); use --force to overwrite it",
                    image.display(),
                    existing.superblock.uuid
                )))
            }
            // Nothing of vigilfs's where its copies can be, or no room
            // for a filesystem at all (an empty file) and no superblock's
            // magic where the primary copy starts (a cut-off image is
            // still one).
            Err(FormatError::NoValidSuperblock { rejected })
                if rejected.iter().all(|copy| {
                    matches!(
                        copy.error,
                        FormatError::BadMagic { .. } | FormatError::DeviceTooSmall { .. }
                    )
                }) && !starts_with_a_superblock(image) => {}
            // A damaged vigilfs filesystem is still one: fsck it first.
            Err(damaged) => {
                return Err(Failure::usage(format!(
                    "{} holds a vigilfs filesystem that cannot be read ({damaged}); use --force \
                     to overwrite it",
                    image.display()
                )))
            }
        }
        if let Some(what) = foreign_signature(&device, SCANNED_BYTES) {
            return Err(Failure::usage(format!(
                "{} holds {what}; use --force to overwrite it",
                image.display()
            )));
        }
    }
    match request.size {
        Some(size) if size.0 > metadata.len() => {
            drop(device);
            let file = fs::OpenOptions::new()
                .write(true)
                .open(image)
                .and_then(|file| file.set_len(size.0).map(|()| file));
            file.map_err(|error| {
                Failure::operational(format!("cannot grow {}: {error}", image.display()))
            })?;
            FileDevice::open(image, FileDeviceOptions::default()).map_err(|error| {
                Failure::operational(format!("cannot open {}: {error}", image.display()))
            })
        }
        _ => Ok(device),
    }
}

/// Where other filesystems and volume formats keep their magic: (offset,
/// bytes, what it is). Enough to keep mkfs from destroying one by mistake.
const FOREIGN_SIGNATURES: [(u64, &[u8], &str); 9] = [
    (1080, &[0x53, 0xEF], "an ext2/3/4 filesystem"),
    (0, b"XFSB", "an XFS filesystem"),
    (65_600, b"_BHRfS_M", "a btrfs filesystem"),
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
    (4086, b"SWAPSPACE2", "swap space"),
    (3, b"NTFS    ", "an NTFS filesystem"),
    (54, b"FAT1", "a FAT filesystem"),
    (82, b"FAT32   ", "a FAT32 filesystem"),
    (512, b"EFI PART", "a GPT partition table"),
];

/// Erases the signatures of other filesystems in the first 4 KiB, which
/// vigilfs leaves alone (for boot loaders): blkid and mount would still
/// find the filesystem just overwritten. Signatures further in lie in
/// vigilfs's own regions.
fn erase_foreign_signatures(device: &FileDevice) -> Result<(), Failure> {
    let Some(mut head) = read_head(device, PRIMARY_SUPERBLOCK_OFFSET) else {
        return Ok(());
    };
    let before = head.clone();
    for (offset, magic, _) in FOREIGN_SIGNATURES {
        let range = offset as usize..offset as usize + magic.len();
        if head.get(range.clone()) == Some(magic) {
            head[range].fill(0);
        }
    }
    if head == before {
        return Ok(());
    }
    let erase = |error: vigilfs::device::DeviceError| {
        Failure::operational(format!("erasing another filesystem's signature: {error}"))
    };
    device
        .write_at(0, &head, IoClass::Superblock)
        .map_err(erase)?;
    device.flush(IoClass::Superblock).map_err(erase)
}

/// The first `within` bytes of `device` (fewer on a smaller device), in
/// whole sectors; `None` if not one sector can be read.
fn read_head(device: &FileDevice, within: u64) -> Option<Vec<u8>> {
    let sector = device.sector_size().bytes();
    let length = device.length().min(within);
    let readable = (length - length % sector) as usize;
    if readable == 0 {
        return None;
    }
    let mut head = vec![0u8; readable];
    device.read_at(0, &mut head, IoClass::Superblock).ok()?;
    Some(head)
}

/// How far in the signatures lie: btrfs's, the furthest, ends at 65,608.
const SCANNED_BYTES: u64 = 66 * 1024;

/// The kind of another filesystem or volume whose signature `device`
/// holds in its first `within` bytes, if any.
fn foreign_signature(device: &FileDevice, within: u64) -> Option<&'static str> {
    let head = read_head(device, within)?;
    FOREIGN_SIGNATURES
        .iter()
        .find(|(offset, magic, _)| {
            let start = *offset as usize;
            head.get(start..start + magic.len()) == Some(*magic)
        })
        .map(|(_, _, what)| *what)
}
