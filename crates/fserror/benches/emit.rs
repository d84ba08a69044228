//! Cost of `ErrorSource::emit` with 0, 1 and 16 listener groups.
//!
//! - `merge_flood`: every group already has an unread error event, so each
//!   emit merges — the error-flood case the issue targets (≤ 50 ns with 16
//!   listeners).
//! - `merge_fresh_cycle`: every emit opens a fresh event in every group,
//!   and every group then reads it; the figure is the whole cycle (emit +
//!   one read per group), since a fresh event needs a read to free its slot.
//! - `distinct_merge`: distinct-mode groups, each merging into its own
//!   queued event; per-group work on every emit, for comparison.
//! - `clock`: the `SystemTime::now()` every emit pays, as a floor.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fserror::{Errno, ErrorReport, ErrorSource, Fsid, Group, GroupConfig, Subtypes};

const LISTENERS: [usize; 3] = [0, 1, 16];

fn report() -> ErrorReport {
    ErrorReport::new(Errno::EIO, Subtypes::WRITEBACK)
        .on_inode(42, 1)
        .range(8192, 4096)
}

fn subscribed(source: &ErrorSource, config: GroupConfig, listeners: usize) -> Vec<Group> {
    let groups: Vec<Group> = (0..listeners).map(|_| Group::new(config)).collect();
    for group in &groups {
        group
            .subscribe(source)
            .expect("fresh source accepts listeners");
        group.try_iter().for_each(drop);
    }
    groups
}

fn merge_flood(c: &mut Criterion) {
    let mut bench = c.benchmark_group("emit/merge_flood");
    for listeners in LISTENERS {
        let source = ErrorSource::new(Fsid(1));
        let _groups = subscribed(&source, GroupConfig::merge(), listeners);
        let report = report();
        source.emit(&report);
        bench.bench_with_input(
            BenchmarkId::from_parameter(listeners),
            &report,
            |b, report| {
                b.iter(|| source.emit(black_box(report)));
            },
        );
    }
    bench.finish();
}

fn merge_fresh_cycle(c: &mut Criterion) {
    let mut bench = c.benchmark_group("emit/merge_fresh_cycle");
    for listeners in [1, 16] {
        let source = ErrorSource::new(Fsid(1));
        let groups = subscribed(&source, GroupConfig::merge(), listeners);
        let report = report();
        bench.bench_with_input(
            BenchmarkId::from_parameter(listeners),
            &report,
            |b, report| {
                b.iter(|| {
                    source.emit(black_box(report));
                    for group in &groups {
                        black_box(group.try_read().ok());
                    }
                });
            },
        );
    }
    bench.finish();
}

fn distinct_merge(c: &mut Criterion) {
    let mut bench = c.benchmark_group("emit/distinct_merge");
    let slots = NonZeroUsize::new(8).expect("nonzero");
    for listeners in [1, 16] {
        let source = ErrorSource::new(Fsid(1));
        let _groups = subscribed(&source, GroupConfig::distinct(slots), listeners);
        let report = report();
        source.emit(&report);
        bench.bench_with_input(
            BenchmarkId::from_parameter(listeners),
            &report,
            |b, report| {
                b.iter(|| source.emit(black_box(report)));
            },
        );
    }
    bench.finish();
}

fn clock(c: &mut Criterion) {
    c.bench_function("emit/clock_floor", |b| b.iter(SystemTime::now));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1));
    targets = merge_flood, merge_fresh_cycle, distinct_merge, clock
}
criterion_main!(benches);
