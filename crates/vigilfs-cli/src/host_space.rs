//! The host filesystem under an image file. A sparse image takes host
//! blocks only as it is written, so a host that fills up fails writes
//! with ENOSPC the filesystem never promised. Data blocks get that ENOSPC
//! as a write error like any other; the regions the filesystem cannot
//! work without (the superblock copies, the journal, the event log) are
//! given their host blocks at mount, so a full host never costs the
//! journal. A sparse image that could outgrow its host's free space is
//! warned of.

use std::path::Path;

use vigilfs::device::{BlockDevice, FileDevice};
use vigilfs::format::{read_superblock, SuperblockCopy, SUPERBLOCK_SIZE};

use crate::size::ByteSize;

/// Reserves host blocks for the image's fixed metadata regions and says
/// what the operator should know: lines for the mount's log.
pub fn prepare(file: &FileDevice, image: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let Ok(loaded) = read_superblock(file) else {
        // The mount reports what is wrong with it.
        return notes;
    };
    let superblock = loaded.superblock;
    let block = u64::from(superblock.layout.block_size);
    let device_length = file.length();
    let mut regions = vec![(0, superblock.layout.journal.end().unwrap_or(0) * block)];
    if let Some(log) = superblock.event_log {
        regions.push((log.start * block, log.blocks * block));
    }
    for copy in SuperblockCopy::ALL {
        if let Some(offset) = copy.offset(device_length) {
            regions.push((offset, SUPERBLOCK_SIZE as u64));
        }
    }
    for (offset, length) in regions {
        match file.reserve_host_space(offset, length) {
            Ok(()) => {}
            // A host without fallocate (some network filesystems): the
            // regions are written as any other.
            Err(error) if error.raw_os_error() == Some(libc::EOPNOTSUPP) => break,
            Err(error) => {
                notes.push(format!(
                    "warning: the host filesystem under {} could not give the journal and \
                     superblock their blocks ({error}): a full host may fail their writes",
                    image.display()
                ));
                break;
            }
        }
    }
    notes.extend(growth_warning(file, image));
    notes
}

/// A warning when the sparse `image` could outgrow its host filesystem's
/// free space: for the mount's log, and for whoever makes such an image
/// (a mount started with `--daemon` and no log file has nobody to read
/// its log).
pub fn growth_warning(file: &FileDevice, image: &Path) -> Option<String> {
    let (Ok(unallocated), Some(free)) = (file.unallocated_bytes(), host_free_bytes(image)) else {
        return None;
    };
    (unallocated > free).then(|| {
        format!(
            "warning: {} may grow by {} more, and its host filesystem has {} free: writes \
             past that fail with ENOSPC from the host",
            image.display(),
            ByteSize(unallocated),
            ByteSize(free)
        )
    })
}

/// Bytes an unprivileged writer may still take on the filesystem holding
/// `image`.
fn host_free_bytes(image: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(image.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statvfs is a valid out-parameter.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}
