//! Property test: random sequences of operations against a plain model that
//! states the semantics without bits: a cursor reports an error iff an
//! error was set after the last one it heard of, and a new opener hears of
//! the latest error only if it was already reported to someone.

use errseq::{ErrSeq, Errno, Since};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Operation {
    Set(i32),
    Open,
    Fsync(usize),
    Check(usize),
    Peek,
    MonitorCheck(usize),
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        prop::sample::select(vec![5, 28, 122]).prop_map(Operation::Set),
        Just(Operation::Open),
        any::<usize>().prop_map(Operation::Fsync),
        any::<usize>().prop_map(Operation::Check),
        Just(Operation::Peek),
        any::<usize>().prop_map(Operation::MonitorCheck),
    ]
}

/// Errors are numbered 1, 2, ... in the order they were set; 0 is "none".
#[derive(Default)]
struct Model {
    errnos: Vec<i32>,
    latest_reported: bool,
    opened: Vec<usize>,
    monitors: Vec<usize>,
}

impl Model {
    fn latest(&self) -> usize {
        self.errnos.len()
    }

    fn report(&self, heard: usize) -> Result<(), i32> {
        if heard < self.latest() {
            Err(*self.errnos.last().expect("latest > 0"))
        } else {
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn word_agrees_with_sequential_model(operations in prop::collection::vec(operation(), 1..80)) {
        let seq = ErrSeq::new();
        let mut cursors: Vec<Since> = Vec::new();
        let mut monitors: Vec<Since> = Vec::new();
        let mut model = Model::default();

        for operation in operations {
            match operation {
                Operation::Set(errno) => {
                    seq.set(Errno::new(errno).expect("valid errno"));
                    model.errnos.push(errno);
                    model.latest_reported = false;
                }
                Operation::Open => {
                    cursors.push(seq.sample());
                    let heard = if model.latest_reported { model.latest() } else { model.latest().saturating_sub(1) };
                    model.opened.push(heard);
                }
                Operation::Fsync(pick) if !cursors.is_empty() => {
                    let index = pick % cursors.len();
                    let actual = seq.check_and_advance(&mut cursors[index]).map_err(Errno::get);
                    let expected = model.report(model.opened[index]);
                    prop_assert_eq!(actual, expected);
                    if expected.is_err() {
                        model.opened[index] = model.latest();
                        model.latest_reported = true;
                    }
                }
                Operation::Check(pick) if !cursors.is_empty() => {
                    let index = pick % cursors.len();
                    let actual = seq.check(cursors[index]).map_err(Errno::get);
                    prop_assert_eq!(actual, model.report(model.opened[index]));
                }
                Operation::Peek => {
                    monitors.push(seq.peek());
                    model.monitors.push(model.latest());
                }
                Operation::MonitorCheck(pick) if !monitors.is_empty() => {
                    let index = pick % monitors.len();
                    let actual = seq.check(monitors[index]).map_err(Errno::get);
                    prop_assert_eq!(actual, model.report(model.monitors[index]));
                }
                _ => {}
            }
        }
    }
}
