//! A device backed by an image file or a real block device, through pread/pwrite.
//!
//! Durability comes from `fdatasync` on [`flush`](BlockDevice::flush): the kernel's page cache
//! is the volatile cache. O_DIRECT is not used (it would need sector-aligned buffers, hence
//! unsafe allocation, and nothing has yet measured a need for it), so reads may be served
//! from the page cache.
//!
//! A failed `fdatasync` is returned to the caller and never retried here: after a writeback
//! error the kernel may already have dropped the dirty pages, so a retry that succeeds would
//! hide lost data.
//!
//! A device opened read-only can be given a writable descriptor later
//! ([`FileDevice::open_for_writing`]: a read-only mount remounted read-write). Reads keep the
//! first descriptor, writes and flushes use the writable one; both name the same file, which
//! is checked, so they share the kernel's page cache and see each other's writes.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::OnceLock;

use super::{
    check_request, BlockDevice, ByteRange, DeviceError, DeviceErrorKind, IoClass, IoOperation,
    SectorSize,
};

/// How to open a [`FileDevice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileDeviceOptions {
    /// Refuse writes with [`DeviceErrorKind::ReadOnly`] and open the file read-only.
    pub read_only: bool,
    /// The sector size to use. `None` asks the kernel for a block device's logical block size
    /// and uses 512 bytes for an image file.
    pub sector_size: Option<SectorSize>,
}

/// An image file or block device used as a [`BlockDevice`].
#[derive(Debug)]
pub struct FileDevice {
    /// Reads go here.
    file: File,
    /// Writes and flushes go here; unset while the device is read-only.
    writer: OnceLock<File>,
    /// The file's (device, inode): a descriptor opened later for writing
    /// must name the same file.
    identity: (u64, u64),
    length: u64,
    sector_size: SectorSize,
}

impl FileDevice {
    /// Opens an existing image file or block device. The usable length is the file's size
    /// rounded down to whole sectors.
    pub fn open(path: &Path, options: FileDeviceOptions) -> io::Result<FileDevice> {
        // Before opening: opening a FIFO would wait for a writer for good.
        let kind = std::fs::metadata(path)?.file_type();
        if !(kind.is_file() || kind.is_block_device()) {
            let what = if kind.is_dir() {
                "a directory"
            } else if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_socket() {
                "a socket"
            } else if kind.is_char_device() {
                "a character device"
            } else {
                "not a regular file"
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is {what}, not an image file or a block device",
                    path.display()
                ),
            ));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(!options.read_only)
            .open(path)?;
        let metadata = file.metadata()?;
        let is_block_device = metadata.file_type().is_block_device();
        let sector_size = match options.sector_size {
            Some(sector_size) => sector_size,
            None if is_block_device => logical_block_size(metadata.rdev())?,
            None => SectorSize::Bytes512,
        };
        // A block device reports size 0 in its metadata; seeking to the end gives its size.
        let raw_length = if is_block_device {
            file.seek(SeekFrom::End(0))?
        } else {
            metadata.len()
        };
        let writer = OnceLock::new();
        if !options.read_only {
            // The same open file description: one more descriptor, no
            // second open that could find another file at the path.
            let _ = writer.set(file.try_clone()?);
        }
        Ok(FileDevice {
            file,
            writer,
            identity: (metadata.dev(), metadata.ino()),
            length: raw_length - raw_length % sector_size.bytes(),
            sector_size,
        })
    }

    /// Makes a device opened read-only writable: opens `path` again for
    /// writing. Refused if `path` no longer names the file the device
    /// reads (replaced or moved since). Nothing changes if it is writable
    /// already.
    pub fn open_for_writing(&self, path: &Path) -> io::Result<()> {
        if self.writer.get().is_some() {
            return Ok(());
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let metadata = file.metadata()?;
        if (metadata.dev(), metadata.ino()) != self.identity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not the file this device was opened on: it was replaced or moved since",
                    path.display()
                ),
            ));
        }
        // Two callers at once: the second's descriptor is dropped; either
        // names the same file.
        let _ = self.writer.set(file);
        Ok(())
    }

    /// Gives the bytes `offset..offset + length` of an image file blocks of
    /// its host filesystem now (fallocate, keeping the size), so writes
    /// there can never fail for want of host space: a sparse image on a
    /// host that fills up would otherwise fail them with ENOSPC. Nothing
    /// to do for a block device or a read-only device; a host filesystem
    /// without fallocate is EOPNOTSUPP.
    pub fn reserve_host_space(&self, offset: u64, length: u64) -> io::Result<()> {
        let Some(writer) = self.writer.get() else {
            return Ok(());
        };
        if writer.metadata()?.file_type().is_block_device() || length == 0 {
            return Ok(());
        }
        let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate on the open descriptor of the image file; it
        // changes no memory, and KEEP_SIZE leaves the file's size alone.
        let result = unsafe {
            libc::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(writer),
                libc::FALLOC_FL_KEEP_SIZE,
                offset,
                length,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Bytes of the image file its host filesystem has not given blocks
    /// yet (a sparse image's holes): what writes may still need of the
    /// host. Zero for a block device.
    pub fn unallocated_bytes(&self) -> io::Result<u64> {
        let metadata = self.file.metadata()?;
        if metadata.file_type().is_block_device() {
            return Ok(0);
        }
        Ok(metadata.len().saturating_sub(metadata.blocks() * 512))
    }

    /// Whether writes are refused (opened read-only and not made writable).
    pub fn is_read_only(&self) -> bool {
        self.writer.get().is_none()
    }

    /// Creates a new zero-filled (sparse) image file of `length` bytes and opens it. Fails if
    /// the path exists, so an existing image or device is never truncated by accident. Only
    /// its owner may read or write it (mode 0600): the image holds every file's data, and
    /// anyone who could read it would read past the permissions the mount enforces.
    pub fn create_image(
        path: &Path,
        length: u64,
        sector_size: SectorSize,
    ) -> io::Result<FileDevice> {
        if i64::try_from(length).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a file of {length} bytes cannot be made: Linux files end at {} bytes",
                    i64::MAX
                ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        if let Err(error) = file.set_len(length) {
            // The file was made here: nothing of it stays behind.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(io::Error::new(
                error.kind(),
                format!("a file of {length} bytes cannot be made there: {error}"),
            ));
        }
        drop(file);
        FileDevice::open(
            path,
            FileDeviceOptions {
                read_only: false,
                sector_size: Some(sector_size),
            },
        )
    }
}

/// The logical block size the kernel reports for the block device `rdev`, from sysfs (no
/// ioctl, so no unsafe code).
fn logical_block_size(rdev: u64) -> io::Result<SectorSize> {
    let path = format!(
        "/sys/dev/block/{}:{}/queue/logical_block_size",
        libc::major(rdev),
        libc::minor(rdev)
    );
    let text = std::fs::read_to_string(&path)?;
    let bytes = text.trim().parse::<u64>().map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: not a number: {error}"),
        )
    })?;
    SectorSize::from_bytes(bytes).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("logical block size {bytes} is neither 512 nor 4096"),
        )
    })
}

impl BlockDevice for FileDevice {
    fn read_at(&self, offset: u64, buffer: &mut [u8], class: IoClass) -> Result<(), DeviceError> {
        let operation = IoOperation::Read;
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length,
            self.sector_size,
        )?;
        self.file.read_exact_at(buffer, offset).map_err(|error| {
            DeviceError::from_io(
                &error,
                operation,
                class,
                ByteRange::at(offset, buffer.len() as u64),
            )
        })
    }

    fn write_at(&self, offset: u64, buffer: &[u8], class: IoClass) -> Result<(), DeviceError> {
        let operation = IoOperation::Write;
        let range = ByteRange::at(offset, buffer.len() as u64);
        let Some(writer) = self.writer.get() else {
            return Err(DeviceError::new(
                DeviceErrorKind::ReadOnly,
                operation,
                class,
                range,
            ));
        };
        check_request(
            operation,
            class,
            offset,
            buffer.len(),
            self.length,
            self.sector_size,
        )?;
        writer
            .write_all_at(buffer, offset)
            .map_err(|error| DeviceError::from_io(&error, operation, class, range))
    }

    fn flush(&self, class: IoClass) -> Result<(), DeviceError> {
        let Some(writer) = self.writer.get() else {
            return Ok(());
        };
        writer.sync_data().map_err(|error| {
            DeviceError::from_io(&error, IoOperation::Flush, class, ByteRange::new(0, 0))
        })
    }

    fn reserve_backing(&self, offset: u64, length: u64, class: IoClass) -> Result<(), DeviceError> {
        match self.reserve_host_space(offset, length) {
            Ok(()) => Ok(()),
            // A host without fallocate: the write itself will tell.
            Err(error) if error.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            Err(error) => Err(DeviceError::from_io(
                &error,
                IoOperation::Write,
                class,
                ByteRange::at(offset, length),
            )),
        }
    }

    fn length(&self) -> u64 {
        self.length
    }

    fn sector_size(&self) -> SectorSize {
        self.sector_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TemporaryImage(std::path::PathBuf);

    impl TemporaryImage {
        fn new(name: &str) -> TemporaryImage {
            let path = std::env::temp_dir().join(format!(
                "vigilfs-file-device-{}-{name}.img",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            TemporaryImage(path)
        }
    }

    impl Drop for TemporaryImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn open_read_only(path: &Path) -> FileDevice {
        FileDevice::open(
            path,
            FileDeviceOptions {
                read_only: true,
                sector_size: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn writes_survive_reopening_the_image() {
        let image = TemporaryImage::new("reopen");
        let device = FileDevice::create_image(&image.0, 65536, SectorSize::Bytes4096).unwrap();
        assert_eq!(device.length(), 65536);
        device.write_at(8192, &[0xab; 4096], IoClass::Data).unwrap();
        device.flush(IoClass::Data).unwrap();
        drop(device);

        let device = FileDevice::open(
            &image.0,
            FileDeviceOptions {
                read_only: true,
                sector_size: Some(SectorSize::Bytes4096),
            },
        )
        .unwrap();
        let mut buffer = vec![0; 4096];
        device.read_at(8192, &mut buffer, IoClass::Data).unwrap();
        assert!(buffer.iter().all(|&byte| byte == 0xab));
    }

    #[test]
    fn read_only_device_refuses_writes() {
        let image = TemporaryImage::new("read-only");
        drop(FileDevice::create_image(&image.0, 4096, SectorSize::Bytes512).unwrap());
        let device = open_read_only(&image.0);
        let error = device.write_at(0, &[0; 512], IoClass::Data).unwrap_err();
        assert_eq!(error.kind, DeviceErrorKind::ReadOnly);
    }

    #[test]
    fn a_read_only_device_opened_for_writing_writes_to_its_file() {
        let image = TemporaryImage::new("made-writable");
        drop(FileDevice::create_image(&image.0, 4096, SectorSize::Bytes512).unwrap());
        let device = open_read_only(&image.0);
        assert!(device.is_read_only());
        device.open_for_writing(&image.0).unwrap();
        assert!(!device.is_read_only());
        device.write_at(512, &[7; 512], IoClass::Data).unwrap();
        device.flush(IoClass::Data).unwrap();
        let mut read = vec![0; 512];
        device.read_at(512, &mut read, IoClass::Data).unwrap();
        assert_eq!(read, vec![7; 512]);
        assert_eq!(std::fs::read(&image.0).unwrap()[512..1024], [7; 512]);
    }

    #[test]
    fn a_replaced_image_is_not_opened_for_writing() {
        let image = TemporaryImage::new("replaced");
        drop(FileDevice::create_image(&image.0, 4096, SectorSize::Bytes512).unwrap());
        let device = open_read_only(&image.0);
        std::fs::remove_file(&image.0).unwrap();
        drop(FileDevice::create_image(&image.0, 4096, SectorSize::Bytes512).unwrap());
        let refused = device.open_for_writing(&image.0).unwrap_err();
        assert!(refused.to_string().contains("replaced"), "{refused}");
        assert!(device.is_read_only());
    }

    #[test]
    fn a_new_image_is_readable_by_its_owner_only() {
        let image = TemporaryImage::new("private");
        drop(FileDevice::create_image(&image.0, 4096, SectorSize::Bytes512).unwrap());
        let mode = std::fs::metadata(&image.0).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
    }

    #[test]
    fn create_image_refuses_to_overwrite_an_existing_file() {
        let image = TemporaryImage::new("exists");
        drop(FileDevice::create_image(&image.0, 4096, SectorSize::Bytes512).unwrap());
        let error = FileDevice::create_image(&image.0, 4096, SectorSize::Bytes512).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn an_image_longer_than_any_linux_file_is_refused_and_not_made() {
        let image = TemporaryImage::new("huge");
        let error = FileDevice::create_image(&image.0, u64::MAX, SectorSize::Bytes512).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("Linux files end at"), "{error}");
        assert!(!image.0.exists());
    }

    #[test]
    fn image_length_is_rounded_down_to_whole_sectors() {
        let image = TemporaryImage::new("rounding");
        let device = FileDevice::create_image(&image.0, 10_000, SectorSize::Bytes4096).unwrap();
        assert_eq!(device.length(), 8192);
        let error = device
            .read_at(8192, &mut [0; 4096], IoClass::Data)
            .unwrap_err();
        assert!(matches!(error.kind, DeviceErrorKind::OutOfBounds { .. }));
    }
}
