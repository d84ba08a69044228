//! The device layer's error: what failed (an errno-like kind), which request, and whether a
//! fault rule injected it.
//!
//! Every device error maps to exactly one errno ([`DeviceError::errno`]) so the layers above
//! can hand the right code to an fsync caller without guessing.

use std::fmt;
use std::io;
use std::str::FromStr;

use super::{ByteRange, FaultRuleError, IoClass, IoOperation, RuleId};

/// A POSIX error number, as carried by injected faults and OS errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The largest errno a FUSE reply may carry: the kernel refuses a
    /// reply whose error is 512 or more and leaves its caller waiting.
    pub const MAX_DELIVERABLE: i32 = 511;
}

/// Errno names a fault rule may use by name, and the names shown for errnos (events,
/// the fault log); any other errno can be given as a number.
/// Where two names share a number (EOPNOTSUPP and ENOTSUP), the first is the one shown.
const ERRNO_NAMES: [(&str, i32); 40] = [
    ("EIO", libc::EIO),
    ("ENOSPC", libc::ENOSPC),
    ("EROFS", libc::EROFS),
    ("EBADMSG", libc::EBADMSG),
    ("ENODEV", libc::ENODEV),
    ("ENXIO", libc::ENXIO),
    ("ETIMEDOUT", libc::ETIMEDOUT),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EPERM", libc::EPERM),
    ("EACCES", libc::EACCES),
    ("EINTR", libc::EINTR),
    ("ENOLINK", libc::ENOLINK),
    ("EREMOTEIO", libc::EREMOTEIO),
    ("EDQUOT", libc::EDQUOT),
    ("EFBIG", libc::EFBIG),
    ("EINVAL", libc::EINVAL),
    ("ENOENT", libc::ENOENT),
    ("EEXIST", libc::EEXIST),
    ("EBUSY", libc::EBUSY),
    ("EXDEV", libc::EXDEV),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("ENOTSUP", libc::ENOTSUP),
    ("ENOTEMPTY", libc::ENOTEMPTY),
    ("ENOTDIR", libc::ENOTDIR),
    ("EISDIR", libc::EISDIR),
    ("ENAMETOOLONG", libc::ENAMETOOLONG),
    ("EMFILE", libc::EMFILE),
    ("ENFILE", libc::ENFILE),
    ("EMLINK", libc::EMLINK),
    ("ESTALE", libc::ESTALE),
    ("EOVERFLOW", libc::EOVERFLOW),
    ("ETXTBSY", libc::ETXTBSY),
    ("ELOOP", libc::ELOOP),
    ("ENOLCK", libc::ENOLCK),
    ("ECANCELED", libc::ECANCELED),
    ("ENODATA", libc::ENODATA),
    ("EUCLEAN", libc::EUCLEAN),
    ("EBADF", libc::EBADF),
    ("ESHUTDOWN", libc::ESHUTDOWN),
];

impl Errno {
    /// Input/output error, the generic device failure.
    pub const EIO: Errno = Errno(libc::EIO);
    /// No space left on device.
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);

    /// The symbolic name, if the errno is one of the common ones.
    pub fn name(self) -> Option<&'static str> {
        ERRNO_NAMES
            .iter()
            .find(|(_, number)| *number == self.0)
            .map(|(name, _)| *name)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => formatter.write_str(name),
            None => write!(formatter, "{}", self.0),
        }
    }
}

impl FromStr for Errno {
    type Err = FaultRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("ENOSYS") || text.parse::<i32>() == Ok(libc::ENOSYS) {
            // Through FUSE an ENOSYS reply means "this filesystem has no such
            // operation": the kernel stops sending it for the rest of the mount
            // and answers 0 (fsync) or goes on without the filesystem (open),
            // so the program would never see it, nor any later fault.
            return Err(FaultRuleError::new(
                "ENOSYS cannot be injected: the kernel's FUSE takes it to mean the \
                 filesystem lacks the operation, stops asking for it on the whole mount and \
                 never shows the program an error (use EOPNOTSUPP for \"not supported\")",
            ));
        }
        if let Some((_, number)) = ERRNO_NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
        {
            return Ok(Errno(*number));
        }
        match text.parse::<i32>() {
            Ok(number) if (1..=Errno::MAX_DELIVERABLE).contains(&number) => Ok(Errno(number)),
            Ok(number) if number > Errno::MAX_DELIVERABLE => Err(FaultRuleError::new(format!(
                "errno {number} cannot be delivered: the kernel's FUSE refuses a reply with an \
                 errno above {} (use a name like EIO or a number from 1 to {})",
                Errno::MAX_DELIVERABLE,
                Errno::MAX_DELIVERABLE
            ))),
            _ => Err(FaultRuleError::new(format!(
                "unknown errno `{text}`: give a number from 1 to {} or one of {}",
                Errno::MAX_DELIVERABLE,
                ERRNO_NAMES.map(|(name, _)| name).join(", ")
            ))),
        }
    }
}

/// What went wrong, in errno terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceErrorKind {
    /// A generic input/output error (EIO).
    #[error("input/output error")]
    Io,
    /// The device has no space to store the write (ENOSPC), e.g. a thin volume ran out.
    #[error("no space left on device")]
    NoSpace,
    /// The medium could not return the data in `failed` (EIO); the rest of the request may
    /// be fine. Carries the failed range so the engine can find the owners of those bytes.
    #[error("media error in bytes {failed}")]
    Media {
        /// The bytes that could not be read.
        failed: ByteRange,
    },
    /// The request reaches past the end of the device (EINVAL: a caller bug, not a disk fault).
    #[error("request beyond the device end at byte {device_length}")]
    OutOfBounds {
        /// The device length in bytes.
        device_length: u64,
    },
    /// The offset or length is not a multiple of the sector size (EINVAL: a caller bug).
    #[error("request not aligned to the {sector_size}-byte sector size")]
    Misaligned {
        /// The device's sector size in bytes.
        sector_size: u64,
    },
    /// The device was opened read-only and received a write (EROFS).
    #[error("device is read-only")]
    ReadOnly,
    /// Power to the (simulated) device was cut: nothing reaches it any more (EIO).
    #[error("device lost power")]
    PowerCut,
    /// The filesystem stopped writing (shut down, or read-only after an error): nothing
    /// reaches the device any more (EIO).
    #[error("the filesystem stopped writing")]
    Stopped,
    /// Any other errno, from the operating system or a fault rule.
    #[error("error {errno} ({})", io::Error::from_raw_os_error(errno.0))]
    Os {
        /// The error number.
        errno: Errno,
    },
}

impl DeviceErrorKind {
    /// The kind an errno stands for: EIO and ENOSPC get their own kinds, the rest stay numbers.
    pub fn from_errno(errno: Errno) -> DeviceErrorKind {
        match errno.0 {
            libc::EIO => DeviceErrorKind::Io,
            libc::ENOSPC => DeviceErrorKind::NoSpace,
            libc::EROFS => DeviceErrorKind::ReadOnly,
            _ => DeviceErrorKind::Os { errno },
        }
    }

    /// The errno this kind is reported as.
    pub fn errno(&self) -> Errno {
        match self {
            DeviceErrorKind::Io
            | DeviceErrorKind::Media { .. }
            | DeviceErrorKind::PowerCut
            | DeviceErrorKind::Stopped => Errno::EIO,
            DeviceErrorKind::NoSpace => Errno::ENOSPC,
            DeviceErrorKind::OutOfBounds { .. } | DeviceErrorKind::Misaligned { .. } => {
                Errno(libc::EINVAL)
            }
            DeviceErrorKind::ReadOnly => Errno(libc::EROFS),
            DeviceErrorKind::Os { errno } => *errno,
        }
    }
}

/// A failed device request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} of {class}{} failed: {kind}{}", bytes_of(.range), injected_suffix(.injected_by))]
pub struct DeviceError {
    /// What went wrong.
    pub kind: DeviceErrorKind,
    /// The request that failed.
    pub operation: IoOperation,
    /// The class of the request.
    pub class: IoClass,
    /// The bytes the request covered (empty for a flush).
    pub range: ByteRange,
    /// The fault rule that injected the error, if it was injected.
    pub injected_by: Option<RuleId>,
}

/// The bytes of a request, none for a flush ("flush of journal bytes
/// 0..0 failed" read as a zero-length write: review 44).
fn bytes_of(range: &ByteRange) -> String {
    match range.is_empty() {
        true => String::new(),
        false => format!(" bytes {range}"),
    }
}

fn injected_suffix(rule: &Option<RuleId>) -> String {
    match rule {
        Some(rule) => format!(" (injected by fault rule {rule})"),
        None => String::new(),
    }
}

impl DeviceError {
    /// An error that was not injected.
    pub fn new(
        kind: DeviceErrorKind,
        operation: IoOperation,
        class: IoClass,
        range: ByteRange,
    ) -> DeviceError {
        DeviceError {
            kind,
            operation,
            class,
            range,
            injected_by: None,
        }
    }

    /// Converts an OS error from a request, keeping its errno.
    pub fn from_io(
        error: &io::Error,
        operation: IoOperation,
        class: IoClass,
        range: ByteRange,
    ) -> DeviceError {
        let kind = match error.raw_os_error() {
            Some(errno) => DeviceErrorKind::from_errno(Errno(errno)),
            // Errors without an errno (a short read at end of file) are still I/O failures.
            None => DeviceErrorKind::Io,
        };
        DeviceError::new(kind, operation, class, range)
    }

    /// The errno to report for this error.
    pub fn errno(&self) -> Errno {
        self.kind.errno()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_and_numbers_parse() {
        assert_eq!("EIO".parse::<Errno>().unwrap(), Errno::EIO);
        assert_eq!("enospc".parse::<Errno>().unwrap(), Errno::ENOSPC);
        assert_eq!("61".parse::<Errno>().unwrap(), Errno(61));
        assert!("-1".parse::<Errno>().is_err());
        assert!("EWHAT".parse::<Errno>().is_err());
        assert_eq!(Errno::EIO.to_string(), "EIO");
        assert_eq!(Errno(4000).to_string(), "4000");
    }

    #[test]
    fn enosys_is_refused_by_name_and_number() {
        for text in ["ENOSYS", "enosys", "38"] {
            let refused = text.parse::<Errno>().expect_err("ENOSYS is refused");
            assert!(refused.to_string().contains("whole mount"), "{refused}");
        }
    }

    #[test]
    fn common_names_parse_and_an_unknown_one_lists_them() {
        assert_eq!("EXDEV".parse::<Errno>().unwrap(), Errno(libc::EXDEV));
        assert_eq!("ENOTSUP".parse::<Errno>().unwrap(), Errno(libc::EOPNOTSUPP));
        assert_eq!(Errno(libc::EOPNOTSUPP).to_string(), "EOPNOTSUPP");
        let unknown = "EWHAT".parse::<Errno>().expect_err("unknown");
        assert!(unknown.to_string().contains("EINVAL"), "{unknown}");
    }

    #[test]
    fn an_errno_no_fuse_reply_can_carry_is_refused() {
        assert_eq!("511".parse::<Errno>().unwrap(), Errno(511));
        let refused = "512".parse::<Errno>().expect_err("512 is refused");
        assert!(
            refused.to_string().contains("cannot be delivered"),
            "{refused}"
        );
        assert!("99999".parse::<Errno>().is_err());
    }

    #[test]
    fn a_failed_flush_names_no_bytes_and_a_failed_write_its_own() {
        let flush = DeviceError::new(
            DeviceErrorKind::Io,
            IoOperation::Flush,
            IoClass::Journal,
            ByteRange::new(0, 0),
        );
        assert!(!flush.to_string().contains("bytes"), "{flush}");
        let write = DeviceError::new(
            DeviceErrorKind::Io,
            IoOperation::Write,
            IoClass::Data,
            ByteRange::new(4096, 8192),
        );
        assert!(write.to_string().contains(" bytes 4096.."), "{write}");
    }

    #[test]
    fn every_kind_reports_its_errno() {
        assert_eq!(DeviceErrorKind::Io.errno(), Errno::EIO);
        assert_eq!(DeviceErrorKind::NoSpace.errno(), Errno::ENOSPC);
        let media = DeviceErrorKind::Media {
            failed: ByteRange::new(0, 512),
        };
        assert_eq!(media.errno(), Errno::EIO);
        assert_eq!(DeviceErrorKind::PowerCut.errno(), Errno::EIO);
        assert_eq!(DeviceErrorKind::ReadOnly.errno(), Errno(libc::EROFS));
        assert_eq!(
            DeviceErrorKind::from_errno(Errno(libc::ETIMEDOUT)).errno(),
            Errno(libc::ETIMEDOUT)
        );
    }

    #[test]
    fn error_message_names_the_request_and_the_injecting_rule() {
        let mut error = DeviceError::new(
            DeviceErrorKind::Io,
            IoOperation::Write,
            IoClass::Data,
            ByteRange::new(4096, 8192),
        );
        assert_eq!(
            error.to_string(),
            "write of data bytes 4096..8192 failed: input/output error"
        );
        error.injected_by = Some(RuleId(3));
        assert!(error.to_string().ends_with("(injected by fault rule 3)"));
    }
}
