//! Filesystem error events for listener groups.
//!
//! A filesystem owns an [`ErrorSource`] and calls [`ErrorSource::emit`] on
//! its error paths. Listeners create a [`Group`], subscribe it to one or more
//! sources, and read [`Event`]s. The model is fanotify's `FS_ERROR`:
//!
//! - **Pre-allocated.** Everything an emit may need is allocated when a group
//!   subscribes: one error slot per (group, filesystem) in merge mode, `N` in
//!   distinct mode, one LOST slot, room for RUNNING and the terminal event,
//!   and a FIFO sized for all of them. `emit`, `shutdown` and `unmount` never
//!   allocate, in either mode.
//! - **Merging.** In [`Mode::Merge`], while a group's error event is unread,
//!   new errors merge into it: count += 1, subtypes OR-ed, the first error
//!   kept, the last error and time updated. In [`Mode::Distinct`], up to `N`
//!   events per filesystem, one per distinct (object, subtypes).
//! - **Accounted.** An error that cannot be queued for a group (its bound or
//!   its distinct slots are full) is counted in that group's single LOST
//!   event for that filesystem. Per group and filesystem, the `count`s of
//!   ERROR and LOST events plus the terminal event's `count` and `lost` add
//!   up to the errors emitted while it was subscribed.
//! - **Bracketed.** A subscription starts with RUNNING. Shutdown or unmount
//!   puts one pre-allocated terminal event (SHUTDOWN or UNMOUNT) at the
//!   *head* of each subscribed group's queue: the next read returns it,
//!   ahead of anything queued earlier, so a listener learns at once that the
//!   filesystem died instead of after draining a backlog. Nothing from that
//!   filesystem is delivered after it: the terminal event absorbs that
//!   filesystem's unread events — its errors merged exactly as into one
//!   ERROR event (count, OR-ed subtypes, first error kept, last updated), its
//!   LOST count in [`Event::lost`], an unread RUNNING dropped — so jumping
//!   the queue loses no error. A shutdown's own `ESHUTDOWN` error is
//!   absorbed too. Other filesystems' events stay queued, in order, behind
//!   it. The terminal event always finds room (it is exempt from the bound),
//!   and once every subscription of a group has ended and its queue is
//!   drained, reads return "closed".
//!
//! # What "never blocks" means here
//!
//! Emitting never waits for a reader to read, never sleeps by itself, never
//! does I/O and never allocates. It does take short locks: the source's lock
//! (always) and, when a group needs a fresh event, that group's lock. Every
//! critical section on those locks, by any thread, is a bounded,
//! allocation-free sequence of moves: a ledger update, a push into a
//! pre-sized FIFO, copying one event out, or — once per filesystem, at its
//! shutdown or unmount — one pass over a group's FIFO to absorb that
//! filesystem's entries into the terminal event. No thread holds them while
//! sleeping — readers wait on a condition variable, which releases the lock —
//! nor across an allocation (subscription storage is allocated between lock
//! sections). So an emitter waits at most for another thread to finish such
//! a section. That is not wait-freedom: if the holder is preempted inside
//! it, the emitter sleeps in the mutex until the holder runs again. We chose
//! this over "try the lock, count the error as lost on contention" because
//! under an error flood contention is the normal case, and turning it into
//! LOST would throw away the errno and object of errors that had room.
//!
//! # Cost of the flood case
//!
//! When every merge-mode group already has an unread error event (the flood
//! case), `emit` does one lock and one update of the source's ledger,
//! whatever the number of groups: each pending event stores only where it
//! started in the ledger, and the merge is computed when it is read.
//!
//! # Where this differs from fanotify
//!
//! - The terminal event carries the error summary and lost count of the
//!   events it overtook. Jumping the queue alone would either deliver errors
//!   after the terminal event or discard unread errors (such as the first
//!   error of the filesystem that caused the shutdown); absorbing them keeps
//!   both promises. So LTP fanotify22's "error, then shutdown, then read"
//!   reads one SHUTDOWN event whose first error is the earlier one.
//! - Events always carry the filesystem id; `object` is `None` for errors
//!   about the whole filesystem (fanotify sends an empty file handle).
//! - Events carry an id (fanotify's have none). Ids are given out when an
//!   event is read, so they increase, without gaps, in delivery order, the
//!   overtaking terminal event included.

mod blob;
mod errno;
mod event;
mod group;
mod ledger;
mod queue;
mod report;
mod source;
mod subtype;
mod summary;
mod sync;

pub use blob::Blob;
pub use errno::Errno;
pub use event::{ByteRange, ErrorDetail, Event, EventId, EventKind, Fsid, ObjectId};
pub use group::{Closed, Group, GroupConfig, Iter, Mode, ReadTimeoutError, TryIter, TryReadError};
pub use report::ErrorReport;
pub use source::{ErrorSource, SourceStats, SubscribeError};
pub use subtype::Subtypes;
