//! A positive error number, as carried by error events.
//!
//! Invariant: the value is always in `1..=MAX`, so an event can never report
//! "error 0" or a kernel-style negative code. Callers that hold `-EIO` (the
//! kernel convention) may pass it as is: the sign is dropped on construction.

use std::fmt;
use std::num::NonZeroU16;

/// A Linux error number, always positive.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(NonZeroU16);

impl Errno {
    /// Largest accepted value; Linux reserves `1..=4095` for error numbers.
    pub const MAX: u16 = 4095;

    /// I/O error.
    pub const EIO: Errno = Errno::known(5);
    /// No space left on device.
    pub const ENOSPC: Errno = Errno::known(28);
    /// Read-only filesystem.
    pub const EROFS: Errno = Errno::known(30);
    /// No data available (a hole where data was expected).
    pub const ENODATA: Errno = Errno::known(61);
    /// Bad message; XFS and ext4 report checksum failures with it (`EFSBADCRC`).
    pub const EBADMSG: Errno = Errno::known(74);
    /// Cannot send after transport endpoint shutdown; reported when the
    /// filesystem has been shut down.
    pub const ESHUTDOWN: Errno = Errno::known(108);
    /// Structure needs cleaning; filesystems report corruption with it.
    pub const EUCLEAN: Errno = Errno::known(117);
    /// Filesystem is corrupted: the name XFS and ext4 give to [`Errno::EUCLEAN`].
    pub const EFSCORRUPTED: Errno = Errno::EUCLEAN;

    const fn known(value: u16) -> Errno {
        match NonZeroU16::new(value) {
            Some(nonzero) => Errno(nonzero),
            None => panic!("errno constants are nonzero"),
        }
    }

    /// Builds an errno from a raw value of either sign.
    ///
    /// Returns `None` for 0 and for magnitudes above [`Errno::MAX`], which
    /// are not error numbers.
    pub fn new(raw: i32) -> Option<Errno> {
        let magnitude = u16::try_from(raw.unsigned_abs()).ok()?;
        if magnitude > Self::MAX {
            return None;
        }
        NonZeroU16::new(magnitude).map(Errno)
    }

    /// The positive value.
    pub fn get(self) -> i32 {
        i32::from(self.0.get())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({})", self.get())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_kernel_style_values_become_positive() {
        assert_eq!(Errno::new(-117), Some(Errno::EUCLEAN));
        assert_eq!(Errno::new(108), Some(Errno::ESHUTDOWN));
    }

    #[test]
    fn zero_and_out_of_range_values_are_not_errnos() {
        assert_eq!(Errno::new(0), None);
        assert_eq!(Errno::new(4096), None);
        assert_eq!(Errno::new(i32::MIN), None);
        assert_eq!(Errno::new(-4095).map(Errno::get), Some(4095));
    }

    #[test]
    fn constants_have_linux_values() {
        assert_eq!(Errno::EIO.get(), 5);
        assert_eq!(Errno::ESHUTDOWN.get(), 108);
        assert_eq!(Errno::EFSCORRUPTED.get(), 117);
    }
}
