//! Nanoseconds per errseq operation, alone and with a second thread
//! touching the same word.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use errseq::{ErrSeq, Errno, Since};

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");
    let seq = ErrSeq::new();
    seq.set(Errno::EIO);
    let mut cursor = Since::default();
    let _ = seq.check_and_advance(&mut cursor);

    group.bench_function("sample", |b| b.iter(|| black_box(seq.sample())));
    group.bench_function("peek", |b| b.iter(|| black_box(seq.peek())));
    group.bench_function("check", |b| b.iter(|| black_box(seq.check(cursor))));
    group.bench_function("check_and_advance_no_new_error", |b| {
        b.iter(|| black_box(seq.check_and_advance(black_box(&mut cursor))));
    });
    group.bench_function("set_observed_then_report", |b| {
        // Each round is a real error and a real report: two CAS.
        b.iter(|| {
            seq.set(Errno::EIO);
            black_box(seq.check_and_advance(&mut cursor))
        });
    });
    group.bench_function("set_unobserved_same_errno", |b| {
        let fresh = ErrSeq::new();
        b.iter(|| fresh.set(black_box(Errno::EIO)));
    });
    group.finish();
}

/// Runs `work` on this thread while a second thread loops `noise` on the
/// same word; returns the time for `iterations` rounds of `work`.
fn with_second_thread(
    iterations: u64,
    seq: &Arc<ErrSeq>,
    noise: fn(&ErrSeq),
    work: fn(&ErrSeq, &mut Since),
) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let seq = Arc::clone(seq);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                noise(&seq);
            }
        })
    };
    let mut cursor = seq.sample();
    let start = Instant::now();
    for _ in 0..iterations {
        work(seq, &mut cursor);
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    other.join().expect("noise thread");
    elapsed
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads");
    let seq = Arc::new(ErrSeq::new());
    group.bench_function("check_and_advance_vs_peek", |b| {
        b.iter_custom(|iterations| {
            with_second_thread(
                iterations,
                &seq,
                |seq| {
                    black_box(seq.peek());
                },
                |seq, cursor| {
                    let _ = black_box(seq.check_and_advance(cursor));
                },
            )
        });
    });
    group.bench_function("check_and_advance_vs_set", |b| {
        b.iter_custom(|iterations| {
            with_second_thread(
                iterations,
                &seq,
                |seq| {
                    seq.set(Errno::EIO);
                },
                |seq, cursor| {
                    let _ = black_box(seq.check_and_advance(cursor));
                },
            )
        });
    });
    group.bench_function("check_vs_check", |b| {
        b.iter_custom(|iterations| {
            with_second_thread(
                iterations,
                &seq,
                |seq| {
                    let _ = black_box(seq.check(Since::default()));
                },
                |seq, cursor| {
                    let _ = black_box(seq.check(*cursor));
                },
            )
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = uncontended, two_threads
}
criterion_main!(benches);
