//! Property test: a group subscribed to two filesystems behaves like a
//! simple sequential model of its queue.
//!
//! The model merges the obvious way — it searches its queue for the event an
//! error belongs to and updates it in place — so it checks the
//! implementation's lazy, ledger-based merging, its slot and LOST
//! bookkeeping, unsubscribe and resubscribe, and ids. Its terminal event is
//! built the obvious way too: take every queued event of the filesystem out
//! of the queue, sum their counts, keep the error that came first and the
//! one that came last (by emission order), add the shutdown's ESHUTDOWN,
//! and put the result at the front.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use fserror::{
    Errno, ErrorReport, ErrorSource, Event, EventKind, Fsid, Group, GroupConfig, Mode,
    SubscribeError, Subtypes, TryReadError,
};
use proptest::prelude::*;

const FILESYSTEMS: usize = 2;
const ERRNOS: [Errno; 3] = [Errno::EIO, Errno::EUCLEAN, Errno::ENOSPC];
const SUBTYPES: [Subtypes; 3] = [Subtypes::READ, Subtypes::WRITEBACK, Subtypes::METADATA];

#[derive(Clone, Debug)]
enum Op {
    Emit {
        fs: usize,
        errno: usize,
        inode: Option<u64>,
        subtype: usize,
    },
    Read,
    Shutdown(usize),
    Unmount(usize),
    Unsubscribe(usize),
    Subscribe(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let fs = 0..FILESYSTEMS;
    prop_oneof![
        8 => (fs.clone(), 0..ERRNOS.len(), proptest::option::of(0..3u64), 0..SUBTYPES.len())
            .prop_map(|(fs, errno, inode, subtype)| Op::Emit { fs, errno, inode, subtype }),
        4 => Just(Op::Read),
        1 => fs.clone().prop_map(Op::Shutdown),
        1 => fs.clone().prop_map(Op::Unmount),
        1 => fs.clone().prop_map(Op::Unsubscribe),
        1 => fs.prop_map(Op::Subscribe),
    ]
}

fn config() -> impl Strategy<Value = GroupConfig> {
    let capacity = (1..5usize).prop_map(|n| NonZeroUsize::new(n).expect("nonzero"));
    let mode = prop_oneof![Just(None), (1..4usize).prop_map(NonZeroUsize::new),];
    (mode, capacity).prop_map(|(distinct, capacity)| {
        distinct
            .map_or_else(GroupConfig::merge, GroupConfig::distinct)
            .with_capacity(capacity)
    })
}

/// The fields a listener can compare (times aside).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Seen {
    id: u64,
    kind: EventKind,
    fsid: Fsid,
    count: u64,
    subtypes: Subtypes,
    first: Option<(Errno, Option<u64>)>,
    last: Option<(Errno, Option<u64>)>,
    lost: u64,
}

impl Seen {
    fn of(event: &Event) -> Seen {
        let brief = |detail: fserror::ErrorDetail| (detail.errno, detail.object.map(|o| o.inode));
        Seen {
            id: event.id.0,
            kind: event.kind,
            fsid: event.fsid,
            count: event.count,
            subtypes: event.subtypes,
            first: event.first.map(brief),
            last: event.last.map(brief),
            lost: event.lost,
        }
    }
}

struct Queued {
    /// `id` is 0 until the event is read: ids are given in reading order.
    seen: Seen,
    subscription: u64,
    /// Emission order (per filesystem) of the first and last error merged
    /// into an error event.
    first_emitted: u64,
    last_emitted: u64,
}

struct Model {
    config: GroupConfig,
    queue: VecDeque<Queued>,
    next_id: u64,
    /// Errors emitted so far per filesystem: the emission order.
    emitted: [u64; FILESYSTEMS],
    /// The current subscription number of each filesystem, if subscribed.
    live: [Option<u64>; FILESYSTEMS],
    terminated: [bool; FILESYSTEMS],
    subscriptions_made: u64,
}

impl Model {
    fn new(config: GroupConfig) -> Model {
        let mut model = Model {
            config,
            queue: VecDeque::new(),
            next_id: 1,
            emitted: [0; FILESYSTEMS],
            live: [None; FILESYSTEMS],
            terminated: [false; FILESYSTEMS],
            subscriptions_made: 0,
        };
        for fs in 0..FILESYSTEMS {
            model
                .subscribe(fs)
                .expect("fresh filesystems accept listeners");
        }
        model
    }

    fn push(&mut self, subscription: u64, kind: EventKind, fs: usize) -> &mut Queued {
        let emitted = self.emitted[fs];
        self.queue.push_back(Queued {
            seen: Seen {
                id: 0,
                kind,
                fsid: fsid(fs),
                count: 0,
                subtypes: Subtypes::empty(),
                first: None,
                last: None,
                lost: 0,
            },
            subscription,
            first_emitted: emitted,
            last_emitted: emitted,
        });
        self.queue.back_mut().expect("just pushed")
    }

    fn subscribe(&mut self, fs: usize) -> Result<(), SubscribeError> {
        if self.terminated[fs] {
            return Err(SubscribeError::SourceClosed);
        }
        if self.live[fs].is_some() {
            return Err(SubscribeError::AlreadySubscribed);
        }
        self.subscriptions_made += 1;
        let subscription = self.subscriptions_made;
        self.live[fs] = Some(subscription);
        self.push(subscription, EventKind::Running, fs);
        Ok(())
    }

    fn emit(&mut self, fs: usize, errno: Errno, inode: Option<u64>, subtypes: Subtypes) {
        if self.terminated[fs] {
            return;
        }
        self.emitted[fs] += 1;
        let emitted = self.emitted[fs];
        let Some(subscription) = self.live[fs] else {
            return;
        };
        let distinct_slots = match self.config.mode() {
            Mode::Merge => None,
            Mode::Distinct(slots) => Some(slots.get()),
        };
        let detail = Some((errno, inode));
        let belongs = |queued: &&mut Queued| {
            queued.subscription == subscription
                && queued.seen.kind == EventKind::Error
                && (distinct_slots.is_none()
                    || (queued.seen.subtypes == subtypes
                        && queued.seen.first.map(|first| first.1) == Some(inode)))
        };
        if let Some(queued) = self.queue.iter_mut().find(belongs) {
            queued.seen.count += 1;
            queued.seen.subtypes |= subtypes;
            queued.seen.last = detail;
            queued.last_emitted = emitted;
            return;
        }
        let errors_queued = self
            .queue
            .iter()
            .filter(|q| q.seen.kind == EventKind::Error)
            .count();
        let errors_of_subscription = self
            .queue
            .iter()
            .filter(|q| q.seen.kind == EventKind::Error && q.subscription == subscription)
            .count();
        if errors_queued < self.config.capacity().get()
            && errors_of_subscription < distinct_slots.unwrap_or(1)
        {
            let queued = self.push(subscription, EventKind::Error, fs);
            queued.seen.count = 1;
            queued.seen.subtypes = subtypes;
            queued.seen.first = detail;
            queued.seen.last = detail;
            return;
        }
        let lost = self
            .queue
            .iter_mut()
            .find(|q| q.seen.kind == EventKind::Lost && q.subscription == subscription);
        match lost {
            Some(queued) => {
                queued.seen.count += 1;
                queued.seen.subtypes |= subtypes;
            }
            None => {
                let queued = self.push(subscription, EventKind::Lost, fs);
                queued.seen.count = 1;
                queued.seen.subtypes = subtypes;
            }
        }
    }

    fn terminate(&mut self, fs: usize, kind: EventKind) {
        if self.terminated[fs] {
            return;
        }
        self.terminated[fs] = true;
        if self.live[fs].take().is_none() {
            return;
        }
        let mut terminal = Seen {
            id: 0,
            kind,
            fsid: fsid(fs),
            count: 0,
            subtypes: Subtypes::empty(),
            first: None,
            last: None,
            lost: 0,
        };
        let (mut first_emitted, mut last_emitted) = (u64::MAX, 0);
        let (of_fs, others): (VecDeque<Queued>, VecDeque<Queued>) = self
            .queue
            .drain(..)
            .partition(|queued| queued.seen.fsid == fsid(fs));
        self.queue = others;
        for queued in of_fs {
            match queued.seen.kind {
                EventKind::Error => {
                    terminal.count += queued.seen.count;
                    terminal.subtypes |= queued.seen.subtypes;
                    if queued.first_emitted < first_emitted {
                        first_emitted = queued.first_emitted;
                        terminal.first = queued.seen.first;
                    }
                    if queued.last_emitted > last_emitted {
                        last_emitted = queued.last_emitted;
                        terminal.last = queued.seen.last;
                    }
                }
                EventKind::Lost => {
                    terminal.lost += queued.seen.count;
                    terminal.subtypes |= queued.seen.subtypes;
                }
                EventKind::Running => {}
                EventKind::Shutdown | EventKind::Unmount => {
                    unreachable!("a filesystem terminates once")
                }
            }
        }
        if kind == EventKind::Shutdown {
            let eshutdown = Some((Errno::ESHUTDOWN, None));
            terminal.count += 1;
            terminal.subtypes |= Subtypes::SHUTDOWN;
            terminal.first = terminal.first.or(eshutdown);
            terminal.last = eshutdown;
        }
        self.queue.push_front(Queued {
            seen: terminal,
            subscription: 0,
            first_emitted: 0,
            last_emitted: 0,
        });
    }

    fn unsubscribe(&mut self, fs: usize) -> bool {
        self.live[fs].take().is_some()
    }

    fn read(&mut self) -> Result<Seen, TryReadError> {
        match self.queue.pop_front() {
            Some(mut queued) => {
                queued.seen.id = self.next_id;
                self.next_id += 1;
                Ok(queued.seen)
            }
            None if self.live.iter().all(Option::is_none) => Err(TryReadError::Closed),
            None => Err(TryReadError::Empty),
        }
    }
}

fn fsid(fs: usize) -> Fsid {
    Fsid(100 + fs as u64)
}

fn read(group: &Group) -> Result<Seen, TryReadError> {
    group.try_read().map(|event| {
        assert!(event.first_time <= event.last_time);
        Seen::of(&event)
    })
}

fn run(config: GroupConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let sources: Vec<ErrorSource> = (0..FILESYSTEMS)
        .map(|fs| ErrorSource::new(fsid(fs)))
        .collect();
    let group = Group::new(config);
    for source in &sources {
        group
            .subscribe(source)
            .expect("fresh filesystems accept listeners");
    }
    let mut model = Model::new(config);

    for op in ops {
        match *op {
            Op::Emit {
                fs,
                errno,
                inode,
                subtype,
            } => {
                let mut report = ErrorReport::new(ERRNOS[errno], SUBTYPES[subtype]);
                if let Some(inode) = inode {
                    report = report.on_inode(inode, 1);
                }
                sources[fs].emit(&report);
                model.emit(fs, ERRNOS[errno], inode, SUBTYPES[subtype]);
            }
            Op::Read => prop_assert_eq!(read(&group), model.read()),
            Op::Shutdown(fs) => {
                sources[fs].shutdown();
                model.terminate(fs, EventKind::Shutdown);
            }
            Op::Unmount(fs) => {
                sources[fs].unmount();
                model.terminate(fs, EventKind::Unmount);
            }
            Op::Unsubscribe(fs) => {
                prop_assert_eq!(group.unsubscribe(&sources[fs]), model.unsubscribe(fs));
            }
            Op::Subscribe(fs) => {
                prop_assert_eq!(group.subscribe(&sources[fs]), model.subscribe(fs));
            }
        }
    }
    loop {
        let expected = model.read();
        prop_assert_eq!(read(&group), expected);
        if expected.is_err() {
            return Ok(());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn group_queue_matches_the_sequential_model(
        config in config(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        run(config, &ops)?;
    }
}
