//! The event a listener reads, and the identifiers it carries.
//!
//! An [`Event`] is a plain snapshot, copied out of a group's queue when read;
//! nothing in it refers back to the queue. Its meaning depends on its
//! [`EventKind`]:
//!
//! - `Error`: `count >= 1` errors merged into one event; `first` is the error
//!   that opened the event and is never overwritten, `last` the most recent
//!   one merged in (equal to `first` when `count == 1`); `subtypes` is the OR
//!   of every merged error's subtypes.
//! - `Lost`: `count` errors that could not be queued for this listener;
//!   `subtypes` is the OR of theirs; `first`/`last` are `None`.
//! - `Running`: `count == 0`, no error details.
//! - `Shutdown`, `Unmount` (terminal): read ahead of everything queued
//!   before them, so they carry what they overtook of their filesystem:
//!   `count`, `first`, `last` merge its unread error events exactly as one
//!   `Error` event would have (`count == 0` and no details if there were
//!   none), `lost` is the count of its unread `Lost` event, and `subtypes`
//!   is the OR over both. A shutdown adds its own `ESHUTDOWN` error, so a
//!   SHUTDOWN event always has `count >= 1`.
//!
//! `first_time`/`last_time` are the first and last moments the event covers
//! (errors, losses and, for announcements, the announcement itself).
//!
//! Per listener group and filesystem, `count` of `Error` and `Lost` events
//! plus `count + lost` of the terminal event add up to the errors the
//! filesystem emitted while the group was subscribed.

use std::fmt;
use std::time::SystemTime;

use crate::{Blob, Errno, Subtypes};

/// Identifier of an event within one listener group: strictly increasing in
/// the order the group delivers events.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct EventId(pub u64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifier of a filesystem instance.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Fsid(pub u64);

/// The object an error is about: an inode of a given filesystem, with the
/// generation that distinguishes reuses of the same inode number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ObjectId {
    /// The filesystem holding the inode.
    pub fsid: Fsid,
    /// Inode number.
    pub inode: u64,
    /// Inode generation.
    pub generation: u32,
}

/// A byte range within the object (or within the device for whole-filesystem
/// errors).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

/// One error as reported by the filesystem.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ErrorDetail {
    /// The error number.
    pub errno: Errno,
    /// The object, or `None` for an error about the whole filesystem.
    pub object: Option<ObjectId>,
    /// The affected byte range, if known.
    pub range: Option<ByteRange>,
    /// Filesystem-specific detail.
    pub blob: Blob,
}

/// What an event announces.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EventKind {
    /// One or more filesystem errors.
    Error,
    /// Errors that could not be queued for this listener.
    Lost,
    /// The listener is subscribed; delivered first on every subscription.
    Running,
    /// The filesystem was shut down. Read before anything queued earlier,
    /// carrying that filesystem's unread errors; nothing from it follows.
    Shutdown,
    /// The filesystem was unmounted. Read before anything queued earlier,
    /// carrying that filesystem's unread errors; nothing from it follows.
    Unmount,
}

impl EventKind {
    /// Whether nothing from the same filesystem follows this event.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Shutdown | EventKind::Unmount)
    }
}

/// An event as read by a listener.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Event {
    /// Position in this group's stream.
    pub id: EventId,
    /// What the event announces.
    pub kind: EventKind,
    /// The filesystem it comes from.
    pub fsid: Fsid,
    /// Errors merged (`Error`, and terminal events for the errors they
    /// absorbed) or lost (`Lost`); 0 for `Running`.
    pub count: u64,
    /// OR of the subtypes of the errors counted in `count` and `lost`.
    pub subtypes: Subtypes,
    /// The first error merged into `count`, kept as it was reported.
    pub first: Option<ErrorDetail>,
    /// The latest error merged into `count`.
    pub last: Option<ErrorDetail>,
    /// Terminal events only: errors that could not be queued for this
    /// listener and whose LOST event was still unread, so the terminal event
    /// absorbed it. 0 for every other kind (a `Lost` event reports its
    /// losses in `count`).
    pub lost: u64,
    /// When the first error (or loss, or the announcement) happened.
    pub first_time: SystemTime,
    /// When the last error (or loss, or the announcement) happened.
    pub last_time: SystemTime,
}

impl Event {
    /// Builds an announcement that carries no error: `Running`, or a
    /// terminal event that absorbed nothing.
    pub(crate) fn announcement(
        id: EventId,
        kind: EventKind,
        fsid: Fsid,
        time: SystemTime,
    ) -> Event {
        Event {
            id,
            kind,
            fsid,
            count: 0,
            subtypes: Subtypes::empty(),
            first: None,
            last: None,
            lost: 0,
            first_time: time,
            last_time: time,
        }
    }

    /// The errno of the first error, for `Error` and terminal events that
    /// carry errors.
    pub fn errno(&self) -> Option<Errno> {
        self.first.map(|detail| detail.errno)
    }

    /// The object of the first error, when there is one and it is about an
    /// object.
    pub fn object(&self) -> Option<ObjectId> {
        self.first.and_then(|detail| detail.object)
    }
}
