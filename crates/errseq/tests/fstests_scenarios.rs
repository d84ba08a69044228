//! The fstests scenarios that define Linux's writeback-error semantics,
//! replayed against the bare errseq word. An open file description is a
//! cursor sampled at open; fsync and syncfs are `check_and_advance`; a
//! monitor or a non-reporting sync(2) is `peek`.

use errseq::{ErrSeq, Errno, Since};

const EIO: Errno = Errno::EIO;

/// A minimal open file description: the cursor it sampled at open.
struct OpenFile {
    since: Since,
}

impl OpenFile {
    fn open(seq: &ErrSeq) -> OpenFile {
        OpenFile {
            since: seq.sample(),
        }
    }

    fn fsync(&mut self, seq: &ErrSeq) -> Result<(), Errno> {
        seq.check_and_advance(&mut self.since)
    }

    /// close(2) reports nothing and consumes nothing: the cursor just goes.
    fn close(self) {}
}

/// generic/441: several descriptors on one file each see a writeback error
/// exactly once, and again exactly once for a later error.
#[test]
fn every_descriptor_sees_each_error_exactly_once() {
    let inode = ErrSeq::new();
    let mut descriptors: Vec<OpenFile> = (0..4).map(|_| OpenFile::open(&inode)).collect();
    for fd in &mut descriptors {
        assert_eq!(fd.fsync(&inode), Ok(()));
    }

    inode.set(EIO);
    for fd in &mut descriptors {
        assert_eq!(fd.fsync(&inode), Err(EIO));
    }
    for fd in &mut descriptors {
        assert_eq!(fd.fsync(&inode), Ok(()));
    }

    inode.set(EIO);
    for fd in &mut descriptors {
        assert_eq!(fd.fsync(&inode), Err(EIO));
        assert_eq!(fd.fsync(&inode), Ok(()));
    }
}

/// generic/484: the syncfs cursor of a descriptor reports a filesystem
/// error once; a descriptor opened after the report starts clean.
#[test]
fn syncfs_reports_once_and_later_opener_starts_clean() {
    let filesystem = ErrSeq::new();
    let mut first = OpenFile::open(&filesystem);
    filesystem.set(EIO);
    assert_eq!(first.fsync(&filesystem), Err(EIO));
    assert_eq!(first.fsync(&filesystem), Ok(()));

    let mut after_report = OpenFile::open(&filesystem);
    assert_eq!(after_report.fsync(&filesystem), Ok(()));
}

/// generic/487: the error happened while nobody held the file open, and a
/// plain sync(2) (which reports nothing to anyone) ran meanwhile: the next
/// opener must still be told.
#[test]
fn unseen_error_reaches_next_opener_even_after_nonconsuming_sync() {
    let inode = ErrSeq::new();
    let writer = OpenFile::open(&inode);
    inode.set(EIO);
    writer.close(); // without fsync: nothing reported

    inode.peek(); // sync(2): waits for writeback, consumes nothing

    let mut reopened = OpenFile::open(&inode);
    assert_eq!(reopened.fsync(&inode), Err(EIO));
    assert_eq!(reopened.fsync(&inode), Ok(()));

    // Now it was reported: a further opener is not told again.
    let mut another = OpenFile::open(&inode);
    assert_eq!(another.fsync(&inode), Ok(()));
}

/// A monitor peeks, sees the error, and a later opener is still told.
#[test]
fn monitor_peek_does_not_hide_error_from_later_opener() {
    let inode = ErrSeq::new();
    let monitor = inode.peek();
    inode.set(EIO);
    assert_eq!(inode.check(monitor), Err(EIO));
    let monitor = inode.peek();
    assert_eq!(inode.check(monitor), Ok(()));

    let mut opener = OpenFile::open(&inode);
    assert_eq!(opener.fsync(&inode), Err(EIO));
}

/// A monitor that peeked before a second identical error still notices it:
/// its peek marked the value OBSERVED, so the counter moved.
#[test]
fn monitor_notices_repeated_identical_errors() {
    let inode = ErrSeq::new();
    inode.set(EIO);
    let monitor = inode.peek();
    inode.set(EIO);
    assert_eq!(inode.check(monitor), Err(EIO));
}

/// Threads hammering one word: every descriptor that was open before an
/// error, and checks after every setter has finished, sees it exactly once
/// in its final check.
#[test]
fn concurrent_setters_and_reporters_never_lose_the_last_error() {
    use std::sync::Arc;
    let inode = Arc::new(ErrSeq::new());
    let mut handles = Vec::new();
    for _ in 0..2 {
        let inode = Arc::clone(&inode);
        handles.push(std::thread::spawn(move || {
            let mut fd = OpenFile::open(&inode);
            let mut reports = 0u32;
            for round in 0..20_000u32 {
                if round % 3 == 0 {
                    inode.set(EIO);
                }
                if fd.fsync(&inode).is_err() {
                    reports += 1;
                }
                if round % 7 == 0 {
                    inode.peek();
                }
            }
            (fd, reports)
        }));
    }
    let mut descriptors = Vec::new();
    for handle in handles {
        let (fd, reports) = handle.join().expect("worker thread");
        assert!(reports > 0);
        descriptors.push(fd);
    }
    inode.set(EIO);
    for fd in &mut descriptors {
        assert_eq!(fd.fsync(&inode), Err(EIO));
        assert_eq!(fd.fsync(&inode), Ok(()));
    }
}
