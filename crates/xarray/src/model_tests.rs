//! Property tests: random operation sequences run against the index and
//! against a plain `BTreeMap` model of non-overlapping spans, comparing
//! every answer (including which entry a conflict names) and checking the
//! tree's structural invariants after each step. Minimised failures are
//! kept below as named regression tests.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::{Error, Mark, Occupant, Span, XArray, MAX_ORDER};

#[derive(Clone, Debug, PartialEq)]
struct ModelEntry {
    order: u8,
    value: u32,
    marks: [bool; 3],
}

fn mark_slot(mark: Mark) -> usize {
    Mark::ALL
        .iter()
        .position(|&m| m == mark)
        .expect("listed mark")
}

/// Entries keyed by first index; spans never overlap.
#[derive(Default)]
struct Model {
    entries: BTreeMap<u64, ModelEntry>,
}

impl Model {
    fn covering(&self, index: u64) -> Option<(Span, &ModelEntry)> {
        let (&first, entry) = self.entries.range(..=index).next_back()?;
        let span = Span::new(first, entry.order).expect("model spans are valid");
        span.contains(index).then_some((span, entry))
    }

    fn overlapping(&self, span: Span) -> Vec<Span> {
        let mut found: Vec<Span> = self
            .covering(span.index())
            .map(|(at, _)| at)
            .into_iter()
            .collect();
        for (&first, entry) in self.entries.range(span.index()..=span.last()) {
            let at = Span::new(first, entry.order).expect("model spans are valid");
            if !found.contains(&at) {
                found.push(at);
            }
        }
        found
    }

    fn store(&mut self, index: u64, order: u8, value: u32) -> Result<Option<u32>, Error> {
        let span = Span::new(index, order)?;
        match self.overlapping(span).first() {
            None => {
                self.entries.insert(
                    index,
                    ModelEntry {
                        order,
                        value,
                        marks: [false; 3],
                    },
                );
                Ok(None)
            }
            Some(&existing) if existing == span => {
                let entry = self.entries.get_mut(&index).expect("found above");
                Ok(Some(std::mem::replace(&mut entry.value, value)))
            }
            Some(&existing) => Err(Error::Conflict {
                requested: span,
                existing,
            }),
        }
    }

    fn erase(&mut self, index: u64) -> Option<u32> {
        let (span, _) = self.covering(index)?;
        self.entries.remove(&span.index()).map(|entry| entry.value)
    }

    fn assign_mark(&mut self, index: u64, mark: Mark, on: bool) -> bool {
        let Some((span, _)) = self.covering(index) else {
            return false;
        };
        let entry = self.entries.get_mut(&span.index()).expect("found above");
        entry.marks[mark_slot(mark)] = on;
        true
    }

    fn iter_from(&self, from: u64, mark: Option<Mark>) -> Vec<(Span, u32)> {
        self.entries
            .iter()
            .map(|(&first, entry)| (Span::new(first, entry.order).expect("valid"), entry))
            .filter(|(span, _)| span.last() >= from)
            .filter(|(_, entry)| mark.is_none_or(|mark| entry.marks[mark_slot(mark)]))
            .map(|(span, entry)| (span, entry.value))
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Store {
        index: u64,
        order: u8,
        value: u32,
    },
    Erase {
        index: u64,
    },
    AssignMark {
        index: u64,
        mark: Mark,
        on: bool,
    },
    Load {
        index: u64,
    },
    IterFrom {
        from: u64,
    },
    IterMarked {
        from: u64,
        mark: Mark,
    },
    FindConflict {
        first: u64,
        len: u64,
    },
    LockedRefusesOthers {
        index: u64,
        value: u32,
    },
    LockOrReserve {
        index: u64,
        order: u8,
        fill: Option<u32>,
    },
}

/// Indices clustered low (where most entries collide), near the top of the
/// index space (root growth, overflow at `u64::MAX`), and anywhere.
fn index() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..5000,
        2 => (u64::MAX - 5000)..=u64::MAX,
        1 => any::<u64>(),
    ]
}

/// Orders on both sides of the 6-bit level boundaries, so entries land as
/// heads with siblings, as whole slots, and at higher levels.
fn order() -> impl Strategy<Value = u8> {
    prop_oneof![
        8 => 0u8..=3,
        4 => prop::sample::select(vec![5u8, 6, 7, 9, 12]),
        1 => prop::sample::select(vec![40u8, MAX_ORDER, MAX_ORDER + 1]),
    ]
}

fn mark() -> impl Strategy<Value = Mark> {
    prop::sample::select(Mark::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Mostly aligned stores, so most reach the overlap logic; some raw
        // indices exercise the alignment check.
        6 => (index(), order(), any::<u32>(), prop::bool::weighted(0.9)).prop_map(
            |(index, order, value, align)| {
                let index = if align && order < 64 {
                    index & !((1u64 << order) - 1)
                } else {
                    index
                };
                Op::Store { index, order, value }
            }
        ),
        2 => index().prop_map(|index| Op::Erase { index }),
        3 => (index(), mark(), any::<bool>())
            .prop_map(|(index, mark, on)| Op::AssignMark { index, mark, on }),
        2 => index().prop_map(|index| Op::Load { index }),
        1 => index().prop_map(|from| Op::IterFrom { from }),
        2 => (index(), mark()).prop_map(|(from, mark)| Op::IterMarked { from, mark }),
        2 => (index(), 0u64..2000).prop_map(|(first, len)| Op::FindConflict { first, len }),
        1 => (index(), any::<u32>())
            .prop_map(|(index, value)| Op::LockedRefusesOthers { index, value }),
        2 => (index(), order(), prop::option::of(any::<u32>()))
            .prop_map(|(index, order, fill)| Op::LockOrReserve { index, order, fill }),
    ]
}

fn apply(xa: &XArray<u32>, model: &mut Model, op: &Op) {
    match *op {
        Op::Store {
            index,
            order,
            value,
        } => {
            let got = xa.store(index, order, value).map_err(|refused| {
                assert_eq!(refused.value, value, "refused store lost its value");
                refused.error
            });
            assert_eq!(got, model.store(index, order, value), "{op:?}");
        }
        Op::Erase { index } => assert_eq!(xa.erase(index), Ok(model.erase(index)), "{op:?}"),
        Op::AssignMark { index, mark, on } => {
            let got = if on {
                xa.set_mark(index, mark)
            } else {
                xa.clear_mark(index, mark)
            };
            assert_eq!(got, model.assign_mark(index, mark, on), "{op:?}");
            let expected = model
                .covering(index)
                .is_some_and(|(_, entry)| entry.marks[mark_slot(mark)]);
            assert_eq!(xa.is_marked(index, mark), expected, "{op:?}");
        }
        Op::Load { index } => {
            let expected = model
                .covering(index)
                .map(|(span, entry)| (span, entry.value));
            assert_eq!(xa.load_entry(index), expected, "{op:?}");
            assert_eq!(xa.load(index), expected.map(|(_, value)| value), "{op:?}");
        }
        Op::IterFrom { from } => {
            let got: Vec<_> = xa.iter_from(from).collect();
            assert_eq!(got, model.iter_from(from, None), "{op:?}");
        }
        Op::IterMarked { from, mark } => {
            let got: Vec<_> = xa.iter_marked(from, mark).collect();
            assert_eq!(got, model.iter_from(from, Some(mark)), "{op:?}");
        }
        Op::FindConflict { first, len } => {
            let last = first.saturating_add(len);
            let got = xa.find_conflict(first..=last);
            let expected: Vec<_> = model
                .iter_from(first, None)
                .into_iter()
                .filter(|(span, _)| span.index() <= last)
                .map(|(span, value)| Occupant {
                    span,
                    value: Some(value),
                })
                .collect();
            assert_eq!(got, expected, "{op:?}");
        }
        Op::LockedRefusesOthers { index, value } => {
            let guard = xa.try_lock(index).expect("nobody else holds locks here");
            let Some(guard) = guard else {
                assert!(model.covering(index).is_none(), "{op:?}");
                return;
            };
            let span = guard.span();
            assert_eq!(
                model.covering(index).map(|(at, _)| at),
                Some(span),
                "{op:?}"
            );
            let locked = Error::Locked { existing: span };
            let refused = xa
                .store(span.index(), span.order(), value)
                .map_err(|r| r.error);
            assert_eq!(refused, Err(locked));
            assert_eq!(xa.erase(index), Err(locked));
            assert_eq!(
                xa.try_lock(span.last()).map(|g| g.map(|g| g.span())),
                Err(locked)
            );
            drop(guard);
        }
        Op::LockOrReserve { index, order, fill } => {
            let expected = match Span::containing(index, order) {
                Err(error) => Err(error),
                Ok(wanted) => match model.covering(index) {
                    Some((span, _)) if span.order() >= order => Ok((span, false)),
                    Some((existing, _)) => Err(Error::Conflict {
                        requested: wanted,
                        existing,
                    }),
                    None => match model.overlapping(wanted).first() {
                        Some(&existing) => Err(Error::Conflict {
                            requested: wanted,
                            existing,
                        }),
                        None => Ok((wanted, true)),
                    },
                },
            };
            let got = xa.lock_or_reserve(index, order);
            assert_eq!(
                got.as_ref()
                    .map(|g| (g.span(), g.is_reserved()))
                    .map_err(|e| *e),
                expected,
                "{op:?}"
            );
            let Ok(mut guard) = got else { return };
            let span = guard.span();
            if guard.is_reserved() {
                assert_eq!(xa.load(index), None);
                let seen = xa.find_conflict(span.index()..=span.last());
                assert_eq!(seen, [Occupant { span, value: None }]);
                assert!(!guard.set_mark(Mark::User), "a reservation took a mark");
            }
            if let Some(value) = fill {
                let old = guard.replace(value);
                if guard.span() == span && old.is_none() {
                    model.entries.insert(
                        span.index(),
                        ModelEntry {
                            order: span.order(),
                            value,
                            marks: [false; 3],
                        },
                    );
                } else {
                    let entry = model.entries.get_mut(&span.index()).expect("locked entry");
                    assert_eq!(old, Some(entry.value));
                    entry.value = value;
                }
            }
        }
    }
}

fn check_against_model(xa: &XArray<u32>, model: &Model) {
    xa.read_tree().check();
    assert_eq!(xa.len(), model.entries.len());
}

fn run(ops: &[Op]) {
    let xa = XArray::new();
    let mut model = Model::default();
    for op in ops {
        apply(&xa, &mut model, op);
        check_against_model(&xa, &model);
    }
    let everything: Vec<_> = xa.iter().collect();
    assert_eq!(everything, model.iter_from(0, None));
}

/// 512 cases by default; set `PROPTEST_CASES` for a longer soak.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn index_matches_btreemap_model(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops);
    }
}

#[test]
fn erasing_a_far_entry_drops_the_levels_it_needed() {
    let xa = XArray::new();
    xa.store(3, 0, 1u32).unwrap();
    xa.store(u64::MAX, 0, 2).unwrap();
    assert_eq!(xa.erase(u64::MAX), Ok(Some(2)));
    // `check` fails on a root that keeps a lone slot-0 child.
    xa.read_tree().check();
    assert_eq!(xa.erase(3), Ok(Some(1)));
    xa.read_tree().check();
    assert!(xa.is_empty());
}

#[test]
fn growing_the_root_carries_mark_summaries_up() {
    let xa = XArray::new();
    xa.store(5, 0, 1u32).unwrap();
    assert!(xa.set_mark(5, Mark::Dirty));
    xa.store(1 << 40, 0, 2).unwrap();
    xa.read_tree().check();
    let dirty: Vec<_> = xa.iter_marked(0, Mark::Dirty).collect();
    assert_eq!(dirty, [(Span::new(5, 0).unwrap(), 1)]);
}
