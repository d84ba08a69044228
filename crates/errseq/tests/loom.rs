//! Model-checked interleavings of set, peek and check_and_advance.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p errseq --release
//! --target-dir target/loom --test loom`. Each test states what must hold
//! for every interleaving loom can produce.
#![cfg(loom)]

use errseq::{ErrSeq, Errno, Since};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

const EIO: Errno = Errno::EIO;
const ENOSPC: Errno = Errno::ENOSPC;

/// A reporter racing a peek: the error is reported exactly once to the
/// reporter, and afterwards a new opener is told about it if and only if
/// the reporter did not report it (the REPORTED mark must not be lost to the
/// peek's concurrent OBSERVED mark).
#[test]
fn check_and_advance_racing_peek_keeps_reported_mark() {
    loom::model(|| {
        let seq = Arc::new(ErrSeq::new());
        let mut reporter = seq.sample();
        seq.set(EIO);

        let peeker = {
            let seq = Arc::clone(&seq);
            thread::spawn(move || {
                seq.peek();
            })
        };
        let first = seq.check_and_advance(&mut reporter);
        peeker.join().unwrap();

        assert_eq!(first, Err(EIO));
        assert_eq!(seq.check_and_advance(&mut reporter), Ok(()));
        let mut opener = seq.sample();
        assert_eq!(seq.check_and_advance(&mut opener), Ok(()));
    });
}

/// An error whose set finished before a check began (the flag makes that
/// ordering visible) cannot be missed: the check reports it. And whatever the
/// interleaving, after everything settles each cursor has heard of the error
/// exactly once.
#[test]
fn error_set_before_check_begins_is_never_missed() {
    loom::model(|| {
        let seq = Arc::new(ErrSeq::new());
        let set_done = Arc::new(AtomicBool::new(false));
        let cursor_a = seq.sample();
        let cursor_b = seq.sample();

        let setter = {
            let seq = Arc::clone(&seq);
            let set_done = Arc::clone(&set_done);
            thread::spawn(move || {
                seq.set(EIO);
                set_done.store(true, Ordering::Release);
            })
        };
        let peeker = {
            let seq = Arc::clone(&seq);
            thread::spawn(move || {
                seq.peek();
            })
        };
        let reporter = {
            let seq = Arc::clone(&seq);
            let set_done = Arc::clone(&set_done);
            thread::spawn(move || {
                let mut cursor = cursor_a;
                let began_after_set = set_done.load(Ordering::Acquire);
                let result = seq.check_and_advance(&mut cursor);
                if began_after_set {
                    assert_eq!(result, Err(EIO));
                }
                (cursor, result.is_err())
            })
        };

        setter.join().unwrap();
        peeker.join().unwrap();
        let (mut cursor_a, a_reported) = reporter.join().unwrap();

        // Settled: A hears the error exactly once over both checks.
        let a_again = seq.check_and_advance(&mut cursor_a).is_err();
        assert!(
            a_reported ^ a_again,
            "cursor A heard it {} times",
            a_reported as u8 + a_again as u8
        );
        // B never checked during the race: it hears it now, once.
        let mut cursor_b: Since = cursor_b;
        assert_eq!(seq.check_and_advance(&mut cursor_b), Err(EIO));
        assert_eq!(seq.check_and_advance(&mut cursor_b), Ok(()));
    });
}

/// Two setters and a reporter: the reporter's two checks (one during, one
/// after) report at least once and the final state is consumed; a new error
/// after that is seen again.
#[test]
fn racing_setters_cannot_hide_an_error_from_a_reporter() {
    loom::model(|| {
        let seq = Arc::new(ErrSeq::new());
        let mut cursor = seq.sample();
        let setters: Vec<_> = [EIO, ENOSPC]
            .into_iter()
            .map(|errno| {
                let seq = Arc::clone(&seq);
                thread::spawn(move || {
                    seq.set(errno);
                })
            })
            .collect();
        let during = seq.check_and_advance(&mut cursor);
        for setter in setters {
            setter.join().unwrap();
        }
        let after = seq.check_and_advance(&mut cursor);
        assert!(during.is_err() || after.is_err());
        assert_eq!(seq.check_and_advance(&mut cursor), Ok(()));
        // If the reporter's last report ran after both sets, a later
        // error must still be noticed (the value was observed).
        seq.set(EIO);
        assert_eq!(seq.check_and_advance(&mut cursor), Err(EIO));
    });
}
