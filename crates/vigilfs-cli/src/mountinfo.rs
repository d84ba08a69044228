//! `/proc/self/mountinfo`, parsed: which filesystems are mounted where, of
//! which type, from which source, and (for FUSE) by which user.
//!
//! A line is `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - TYPE
//! SOURCE SUPER-OPTIONS`; paths escape space, tab, newline and backslash
//! as octal (`\040`). Lines that do not have that shape are skipped, never
//! an error: the file is the kernel's, but a parser must not panic on it.
//! Later lines are mounted on top of earlier ones at the same mount point,
//! so [`Mounts::topmost_at`] looks from the end.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The filesystem's device number (`MAJ:MIN`): the same for every
    /// mount of one superblock (a bind mount, a second mount of a mounted
    /// image).
    pub device: String,
    /// The directory of the filesystem shown there (`/` for the whole
    /// filesystem, `/sub` for a bind mount of a subdirectory).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// `fuse`, `fuse.vigilfs`, `ext4`...
    pub fstype: String,
    /// The source (`/dev/sda1`, the image path of a vigilfs mount).
    pub source: PathBuf,
    /// This mount point's options (`rw,nosuid,nodev,relatime`): a
    /// read-only bind is `ro` here only.
    pub mount_options: String,
    /// The filesystem's own options (`rw,user_id=0,group_id=0`): a
    /// `remount,ro` makes them `ro`.
    pub super_options: String,
}

impl MountEntry {
    /// Whether the kernel refuses writes here: the mount point or the
    /// whole filesystem is read-only.
    pub fn read_only(&self) -> bool {
        let first_is_ro = |options: &str| options.split(',').next() == Some("ro");
        first_is_ro(&self.mount_options) || first_is_ro(&self.super_options)
    }

    /// Whether this is a FUSE mount (`fuse`, `fuse.SUBTYPE`, `fuseblk`).
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype == "fuseblk" || self.fstype.starts_with("fuse.")
    }

    /// The uid of the user who mounted a FUSE filesystem: its `user_id=`
    /// option, which the kernel sets from the mounting process.
    pub fn fuse_owner(&self) -> Option<u32> {
        if !self.is_fuse() {
            return None;
        }
        self.super_options
            .split(',')
            .find_map(|option| option.strip_prefix("user_id="))
            .and_then(|uid| uid.parse().ok())
    }
}

/// The mount table.
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    entries: Vec<MountEntry>,
}

impl Mounts {
    /// This process's mount table.
    pub fn read() -> io::Result<Mounts> {
        let bytes = std::fs::read("/proc/self/mountinfo")?;
        Ok(Mounts::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Parses mountinfo text; malformed lines are skipped.
    pub fn parse(text: &str) -> Mounts {
        let entries = text.lines().filter_map(parse_line).collect();
        Mounts { entries }
    }

    /// Every mount, in mount order.
    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// The filesystem mounted on top at `mountpoint`, if any.
    pub fn topmost_at(&self, mountpoint: &Path) -> Option<&MountEntry> {
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.mountpoint == mountpoint)
    }

    /// The filesystem `path` lies in when no mount is at `path` itself:
    /// the topmost mount at the nearest directory above it that has one.
    pub fn containing(&self, path: &Path) -> Option<&MountEntry> {
        path.ancestors()
            .skip(1)
            .find_map(|directory| self.topmost_at(directory))
    }

    /// The first mount (in mount order) of the filesystem mounted on top
    /// at `mountpoint`: the one its server was started on, when
    /// `mountpoint` is a later bind of it.
    pub fn first_mount_of_filesystem_at(&self, mountpoint: &Path) -> Option<&MountEntry> {
        let top = self.topmost_at(mountpoint)?;
        self.entries
            .iter()
            .find(|entry| entry.device == top.device && entry.fstype == top.fstype)
    }

    /// Every FUSE mount whose source is `source`.
    pub fn fuse_mounts_of<'a>(&'a self, source: &'a Path) -> impl Iterator<Item = &'a MountEntry> {
        self.entries
            .iter()
            .filter(move |entry| entry.is_fuse() && bare_source(entry) == source.as_os_str())
    }

    /// Every vigilfs mount made by root or by `trusted_uid`: another user
    /// may name a FUSE mount `vigilfs` with a source on a filesystem that
    /// never answers, or a server that never does.
    pub fn vigilfs_mounts(&self, trusted_uid: u32) -> impl Iterator<Item = &MountEntry> {
        self.entries.iter().filter(move |entry| {
            let vigilfs = entry.fstype == "fuse.vigilfs"
                || (entry.is_fuse() && bare_source(entry) != entry.source.as_os_str());
            let trusted = entry
                .fuse_owner()
                .is_some_and(|owner| owner == 0 || owner == trusted_uid);
            vigilfs && trusted
        })
    }

    /// Every vigilfs mount whose source is the file `image` under any name:
    /// a hard link, a path through another mount of the same directory, or
    /// a loop device over it (`image` is a [`file_identity`]). Only
    /// [`Mounts::vigilfs_mounts`] are looked at, each source with a `stat`.
    pub fn vigilfs_mounts_of_file(
        &self,
        image: (u64, u64),
        trusted_uid: u32,
    ) -> impl Iterator<Item = &MountEntry> {
        self.vigilfs_mounts(trusted_uid).filter(move |entry| {
            file_identity(Path::new(bare_source(entry))).is_ok_and(|source| source == image)
        })
    }
}

/// A device number as the mount table writes it (`MAJ:MIN`).
pub fn device_name(device: u64) -> String {
    format!("{}:{}", libc::major(device), libc::minor(device))
}

/// The file an image path stands for, as (device, inode): the file's own,
/// or for a loop device the file behind it (from sysfs), so an image is
/// known under both names.
pub fn file_identity(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path)?;
    let backing = loop_backing_file(&metadata).and_then(|file| std::fs::metadata(file).ok());
    let file = backing.as_ref().unwrap_or(&metadata);
    Ok((file.dev(), file.ino()))
}

/// The file behind a loop device, if `device` is one that has a file.
pub fn loop_backing_file(device: &std::fs::Metadata) -> Option<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    /// The block major number of loop devices.
    const LOOP_MAJOR: u32 = 7;
    if !device.file_type().is_block_device() || libc::major(device.rdev()) != LOOP_MAJOR {
        return None;
    }
    let (major, minor) = (libc::major(device.rdev()), libc::minor(device.rdev()));
    let shown =
        std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/loop/backing_file"))
            .ok()?;
    Some(PathBuf::from(shown.trim_end_matches('\n')))
}

/// A FUSE mount's source without the `vigilfs#` prefix that fusermount3 of
/// old libfuse versions wrote.
fn bare_source(entry: &MountEntry) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    let shown = entry.source.as_os_str().as_bytes();
    std::ffi::OsStr::from_bytes(shown.strip_prefix(b"vigilfs#").unwrap_or(shown))
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let device = before.split(' ').nth(2)?;
    let root = before.split(' ').nth(3)?;
    let mountpoint = before.split(' ').nth(4)?;
    let mount_options = before.split(' ').nth(5).unwrap_or("");
    let mut tail = after.split(' ');
    let (fstype, source) = (tail.next()?, tail.next()?);
    Some(MountEntry {
        device: device.to_string(),
        root: PathBuf::from(unescape(root)),
        mountpoint: PathBuf::from(unescape(mountpoint)),
        fstype: fstype.to_string(),
        source: PathBuf::from(unescape(source)),
        mount_options: mount_options.to_string(),
        super_options: tail.next().unwrap_or("").to_string(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space...).
fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\' && index + 4 <= bytes.len() {
            let value = std::str::from_utf8(&bytes[index + 1..index + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok());
            if let Some(value) = value {
                out.push(value);
                index += 4;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
90 27 0:50 / /mnt/my\\040data rw,nosuid,nodev - fuse.vigilfs /srv/disk.img rw,user_id=0,group_id=0
91 27 0:51 / /mnt/other rw shared:7 - fuse /srv/other.img rw,user_id=1000,group_id=1000
92 91 0:52 / /mnt/other rw - tmpfs tmpfs rw
93 27 0:53 / /mnt/old rw - fuse vigilfs#/srv/old.img rw,user_id=7
garbage

94 27 0:54 / /x - fuse.vigilfs
";

    #[test]
    fn read_only_is_the_mount_points_or_the_filesystems() {
        let mounts = Mounts::parse(
            "1 0 0:9 / /a ro,nosuid - fuse.vigilfs /i rw,user_id=0\n\
             2 0 0:9 / /b rw - fuse.vigilfs /i ro,user_id=0\n\
             3 0 0:9 / /c rw,relatime - fuse.vigilfs /i rw,user_id=0\n",
        );
        let read_only = |at: &str| mounts.topmost_at(Path::new(at)).unwrap().read_only();
        assert!(read_only("/a"), "a read-only bind");
        assert!(read_only("/b"), "remount,ro");
        assert!(!read_only("/c"));
    }

    #[test]
    fn fuse_mounts_are_found_by_source_and_owner() {
        let mounts = Mounts::parse(SAMPLE);
        let found: Vec<_> = mounts.fuse_mounts_of(Path::new("/srv/disk.img")).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].mountpoint, Path::new("/mnt/my data"));
        assert_eq!(found[0].fuse_owner(), Some(0));
        let old: Vec<_> = mounts.fuse_mounts_of(Path::new("/srv/old.img")).collect();
        assert_eq!(old[0].fuse_owner(), Some(7));
        assert_eq!(mounts.fuse_mounts_of(Path::new("/srv/none")).count(), 0);
    }

    #[test]
    fn the_topmost_mount_wins_and_only_fuse_has_an_owner() {
        let mounts = Mounts::parse(SAMPLE);
        let top = mounts.topmost_at(Path::new("/mnt/other")).unwrap();
        assert_eq!(top.fstype, "tmpfs");
        assert_eq!(top.fuse_owner(), None);
        assert!(
            mounts.topmost_at(Path::new("/x")).is_none(),
            "a line without a source is skipped"
        );
        assert_eq!(
            mounts
                .topmost_at(Path::new("/mnt/old"))
                .unwrap()
                .fuse_owner(),
            Some(7)
        );
        assert!(mounts.topmost_at(Path::new("/nowhere")).is_none());
    }

    #[test]
    fn a_bind_mount_leads_to_the_first_mount_of_its_filesystem() {
        let text = "\
90 27 0:50 / /mnt/a rw - fuse.vigilfs /srv/disk.img rw,user_id=0
91 27 0:60 / /mnt/b rw - tmpfs tmpfs rw
92 91 0:50 / /mnt/b rw - fuse.vigilfs /srv/disk.img rw,user_id=0
";
        let mounts = Mounts::parse(text);
        let first = mounts
            .first_mount_of_filesystem_at(Path::new("/mnt/b"))
            .unwrap();
        assert_eq!(first.mountpoint, Path::new("/mnt/a"));
        let itself = mounts
            .first_mount_of_filesystem_at(Path::new("/mnt/a"))
            .unwrap();
        assert_eq!(itself.mountpoint, Path::new("/mnt/a"));
        assert!(mounts
            .first_mount_of_filesystem_at(Path::new("/mnt/c"))
            .is_none());
    }

    #[test]
    fn escapes_are_undone_and_broken_ones_kept() {
        assert_eq!(unescape("a\\040b\\134c"), OsString::from("a b\\c"));
        assert_eq!(unescape("end\\04"), OsString::from("end\\04"));
        assert_eq!(unescape("\\xyz"), OsString::from("\\xyz"));
    }
}
