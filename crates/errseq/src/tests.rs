//! One test per transition of the word, reading the decoded state.

use super::*;

const EIO: Errno = Errno::EIO;
const ENOSPC: Errno = Errno::ENOSPC;

fn word_with(raw: u64) -> ErrSeq {
    ErrSeq {
        word: AtomicU64::new(raw),
    }
}

#[test]
fn fresh_word_has_no_error_and_zero_cursor_sees_nothing() {
    let seq = ErrSeq::new();
    assert_eq!(
        seq.state(),
        State {
            errno: None,
            counter: 0,
            observed: false,
            reported: false
        }
    );
    assert_eq!(seq.sample(), Since::default());
    assert_eq!(seq.check(Since::default()), Ok(()));
}

#[test]
fn set_on_fresh_word_records_errno_without_counting() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let state = seq.state();
    assert_eq!(state.errno, Some(EIO));
    assert_eq!(state.counter, 0);
    assert!(!state.observed && !state.reported);
}

#[test]
fn set_over_unobserved_error_overwrites_errno_and_keeps_counter() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    seq.set(ENOSPC);
    let state = seq.state();
    assert_eq!(state.errno, Some(ENOSPC));
    assert_eq!(state.counter, 0);
}

#[test]
fn set_of_same_unobserved_errno_leaves_word_unchanged() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let first = seq.state();
    seq.set(EIO);
    assert_eq!(seq.state(), first);
    assert_eq!(seq.state().counter, 0);
}

#[test]
fn set_after_observation_bumps_counter_and_clears_both_flags() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let mut cursor = Since::default();
    assert_eq!(seq.check_and_advance(&mut cursor), Err(EIO));
    assert!(seq.state().observed && seq.state().reported);
    seq.set(EIO);
    let state = seq.state();
    assert_eq!(state.counter, 1);
    assert!(!state.observed && !state.reported);
    assert_eq!(seq.check_and_advance(&mut cursor), Err(EIO));
}

#[test]
fn sample_of_unreported_error_is_zero_cursor() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let cursor = seq.sample();
    assert_eq!(cursor, Since::default());
    assert_eq!(seq.check(cursor), Err(EIO));
}

#[test]
fn sample_of_reported_error_starts_after_it() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let mut reporter = seq.sample();
    assert_eq!(seq.check_and_advance(&mut reporter), Err(EIO));
    let opener = seq.sample();
    assert_eq!(seq.check(opener), Ok(()));
}

#[test]
fn sample_does_not_mark_observed() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    seq.sample();
    assert!(!seq.state().observed);
}

#[test]
fn peek_marks_observed_but_not_reported() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let peeked = seq.peek();
    let state = seq.state();
    assert!(state.observed);
    assert!(!state.reported);
    assert_eq!(seq.check(peeked), Ok(()));
}

#[test]
fn peek_keeps_reported_flag_of_reported_error() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let mut cursor = Since::default();
    let _ = seq.check_and_advance(&mut cursor);
    seq.peek();
    assert!(seq.state().reported);
}

#[test]
fn peek_cursor_notices_the_next_error_even_with_same_errno() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let peeked = seq.peek();
    seq.set(EIO);
    assert_eq!(seq.state().counter, 1);
    assert_eq!(seq.check(peeked), Err(EIO));
}

#[test]
fn check_reports_without_advancing_or_marking() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let cursor = Since::default();
    assert_eq!(seq.check(cursor), Err(EIO));
    assert_eq!(seq.check(cursor), Err(EIO));
    let state = seq.state();
    assert!(!state.observed && !state.reported);
}

#[test]
fn check_and_advance_reports_once_then_succeeds() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let mut cursor = Since::default();
    assert_eq!(seq.check_and_advance(&mut cursor), Err(EIO));
    assert_eq!(seq.check_and_advance(&mut cursor), Ok(()));
    assert_eq!(seq.check(cursor), Ok(()));
}

#[test]
fn check_and_advance_without_new_error_changes_nothing() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let peeked = seq.peek();
    let before = seq.state();
    let mut cursor = peeked;
    assert_eq!(seq.check_and_advance(&mut cursor), Ok(()));
    assert_eq!(seq.state(), before);
}

#[test]
fn check_and_advance_on_peeked_value_sets_reported() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    seq.peek();
    let mut cursor = Since::default();
    assert_eq!(seq.check_and_advance(&mut cursor), Err(EIO));
    assert!(seq.state().reported);
}

#[test]
fn counter_wraps_to_zero_yet_cursor_still_sees_change() {
    let max_counter = !(COUNTER_ONE - 1);
    let seq = word_with(max_counter | OBSERVED | REPORTED | 5);
    let before = seq.sample();
    seq.set(EIO);
    let state = seq.state();
    assert_eq!(state.counter, 0);
    assert_eq!(state.errno, Some(EIO));
    assert_eq!(seq.check(before), Err(EIO));
}

#[test]
fn errno_accepts_positive_and_negated_values_within_range() {
    assert_eq!(Errno::new(5), Some(EIO));
    assert_eq!(Errno::new(-5), Some(EIO));
    assert_eq!(Errno::new(0), None);
    assert_eq!(Errno::new(4096), None);
    assert_eq!(Errno::new(i32::MIN), None);
    assert_eq!(Errno::new(4095).map(Errno::get), Some(4095));
}

#[test]
fn sticky_latches_the_first_error_forever() {
    let seq = ErrSeq::new();
    let sticky = Sticky::new(&seq);
    assert_eq!(sticky.check(&seq), Ok(()));
    seq.set(ENOSPC);
    assert_eq!(sticky.check(&seq), Err(ENOSPC));
    // Another holder consumes and a different error follows: still ENOSPC.
    let mut other = Since::default();
    let _ = seq.check_and_advance(&mut other);
    seq.set(EIO);
    assert_eq!(sticky.check(&seq), Err(ENOSPC));
    assert_eq!(sticky.latched(), Some(ENOSPC));
}

#[test]
fn sticky_ignores_errors_from_before_it_was_created() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let sticky = Sticky::new(&seq);
    assert_eq!(sticky.check(&seq), Ok(()));
}

#[test]
fn sticky_creation_does_not_hide_error_from_next_opener() {
    let seq = ErrSeq::new();
    seq.set(EIO);
    let _sticky = Sticky::new(&seq);
    let mut opener = seq.sample();
    assert_eq!(seq.check_and_advance(&mut opener), Err(EIO));
}
