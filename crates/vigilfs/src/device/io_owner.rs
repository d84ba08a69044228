//! Who a device request is for: the file whose data a request reads or
//! writes, told by the engine while it does so, so the layers below can
//! aim faults at a file and name it in their records.
//!
//! The engine calls [`with_data_owner`] around the device I/O of one file's
//! data (its writeback, the fill of its pages); a wrapper asks
//! [`data_owner`] from inside a request. Thread-local: a request belongs to
//! the file of the thread that issued it, and nesting keeps the innermost.

use std::cell::Cell;

thread_local! {
    static DATA_OWNER: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs `io` with its device requests attributed to inode `ino`.
pub fn with_data_owner<T>(ino: u64, io: impl FnOnce() -> T) -> T {
    struct Restore(Option<u64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DATA_OWNER.with(|owner| owner.set(self.0));
        }
    }
    let _restore = Restore(DATA_OWNER.with(|owner| owner.replace(Some(ino))));
    io()
}

/// The inode the current thread's requests are for, if any.
pub fn data_owner() -> Option<u64> {
    DATA_OWNER.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_owner_holds_and_the_outer_one_comes_back() {
        assert_eq!(data_owner(), None);
        with_data_owner(7, || {
            assert_eq!(data_owner(), Some(7));
            with_data_owner(9, || assert_eq!(data_owner(), Some(9)));
            assert_eq!(data_owner(), Some(7));
        });
        assert_eq!(data_owner(), None);
        let other = std::thread::spawn(|| with_data_owner(3, data_owner));
        assert_eq!(other.join().unwrap(), Some(3));
    }
}
