//! Error subtypes: a small bit set saying which kinds of failure an event
//! covers.
//!
//! Merged events OR their subtypes together, so a listener that reads one
//! event still learns every kind of failure folded into it. Invariant: only
//! the bits named here are ever set ([`Subtypes::from_bits`] refuses others),
//! so `Subtypes::COUNT` per-bit tables can be indexed by bit position.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

/// A set of error subtypes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Subtypes(u32);

const NAMES: [&str; Subtypes::COUNT] = [
    "WRITEBACK",
    "READ",
    "METADATA",
    "DATA_LOST",
    "CHECKSUM",
    "JOURNAL",
    "MEDIA",
    "SHUTDOWN",
];

impl Subtypes {
    /// Writing dirty data back to the device failed.
    pub const WRITEBACK: Subtypes = Subtypes(1 << 0);
    /// Reading from the device failed.
    pub const READ: Subtypes = Subtypes(1 << 1);
    /// Filesystem metadata (b-tree node, inode, directory) is damaged.
    pub const METADATA: Subtypes = Subtypes(1 << 2);
    /// File data is known to be lost.
    pub const DATA_LOST: Subtypes = Subtypes(1 << 3);
    /// A checksum did not match.
    pub const CHECKSUM: Subtypes = Subtypes(1 << 4);
    /// The journal failed (write, replay or abort).
    pub const JOURNAL: Subtypes = Subtypes(1 << 5);
    /// The medium reported a failure (bad block, poison).
    pub const MEDIA: Subtypes = Subtypes(1 << 6);
    /// The filesystem was shut down.
    pub const SHUTDOWN: Subtypes = Subtypes(1 << 7);

    /// Number of defined subtype bits.
    pub const COUNT: usize = 8;

    /// The empty set.
    pub const fn empty() -> Subtypes {
        Subtypes(0)
    }

    /// Every defined subtype.
    pub const fn all() -> Subtypes {
        Subtypes((1 << Self::COUNT) - 1)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Rebuilds a set from raw bits; `None` if an undefined bit is set.
    pub const fn from_bits(bits: u32) -> Option<Subtypes> {
        if bits & !Self::all().0 == 0 {
            Some(Subtypes(bits))
        } else {
            None
        }
    }

    /// Whether no subtype is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every subtype in `other` is also in `self`.
    pub const fn contains(self, other: Subtypes) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bit positions that are set, lowest first.
    pub(crate) fn positions(self) -> impl Iterator<Item = usize> {
        let bits = self.0;
        (0..Self::COUNT).filter(move |position| bits & (1 << position) != 0)
    }

    pub(crate) fn from_position(position: usize) -> Subtypes {
        debug_assert!(position < Self::COUNT);
        Subtypes(1 << position)
    }
}

impl BitOr for Subtypes {
    type Output = Subtypes;
    fn bitor(self, rhs: Subtypes) -> Subtypes {
        Subtypes(self.0 | rhs.0)
    }
}

impl BitOrAssign for Subtypes {
    fn bitor_assign(&mut self, rhs: Subtypes) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Subtypes {
    type Output = Subtypes;
    fn bitand(self, rhs: Subtypes) -> Subtypes {
        Subtypes(self.0 & rhs.0)
    }
}

impl fmt::Debug for Subtypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("Subtypes(empty)");
        }
        f.write_str("Subtypes(")?;
        for (index, position) in self.positions().enumerate() {
            if index > 0 {
                f.write_str(" | ")?;
            }
            f.write_str(NAMES[position])?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_keeps_every_bit() {
        let merged = Subtypes::WRITEBACK | Subtypes::CHECKSUM;
        assert!(merged.contains(Subtypes::WRITEBACK));
        assert!(merged.contains(Subtypes::CHECKSUM));
        assert!(!merged.contains(Subtypes::READ));
    }

    #[test]
    fn undefined_bits_are_refused() {
        assert_eq!(Subtypes::from_bits(1 << 8), None);
        assert_eq!(
            Subtypes::from_bits(0b101),
            Some(Subtypes::WRITEBACK | Subtypes::METADATA)
        );
    }

    #[test]
    fn debug_names_the_bits() {
        let text = format!("{:?}", Subtypes::READ | Subtypes::JOURNAL);
        assert_eq!(text, "Subtypes(READ | JOURNAL)");
        assert_eq!(format!("{:?}", Subtypes::empty()), "Subtypes(empty)");
    }

    #[test]
    fn positions_round_trip() {
        let set = Subtypes::METADATA | Subtypes::SHUTDOWN;
        let rebuilt = set
            .positions()
            .map(Subtypes::from_position)
            .fold(Subtypes::empty(), BitOr::bitor);
        assert_eq!(rebuilt, set);
    }
}
