//! A latency histogram kept with atomics: what `fsync` took, for the
//! metrics exporter. Recording is a few relaxed atomic adds (no lock, no
//! allocation); a snapshot may mix two concurrent recordings' halves,
//! which a monitor tolerates (each counter on its own is exact).
//!
//! Invariant: `counts[i]` counts the durations at most `BOUNDS[i]` and
//! above `BOUNDS[i - 1]`; the last counter those above every bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds.
pub const BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The histogram.
#[derive(Debug, Default)]
pub struct Latency {
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

/// A copy of the histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// Per bucket (not cumulative), the last one above every bound.
    pub counts: Vec<u64>,
    /// The sum of all durations, in seconds.
    pub sum_seconds: f64,
}

impl LatencySnapshot {
    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Latency {
    /// Records one duration.
    pub fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A copy.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: self
                .counts
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_buckets() {
        let latency = Latency::default();
        latency.record(Duration::from_micros(50));
        latency.record(Duration::from_millis(3));
        latency.record(Duration::from_secs(9));
        let snapshot = latency.snapshot();
        assert_eq!(snapshot.counts[0], 1);
        assert_eq!(snapshot.counts[5], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(snapshot.counts[BOUNDS.len()], 1);
        assert_eq!(snapshot.count(), 3);
        assert!((snapshot.sum_seconds - 9.00305).abs() < 1e-9);
    }
}
