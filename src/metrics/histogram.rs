//! Durations as Prometheus histograms: cumulative buckets, a count, a sum.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::render::braces;

/// Upper bounds of the clamp-latency buckets, in microseconds.
pub(super) const CLAMP_BUCKETS_US: [u64; 10] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Upper bounds of the clamp-stage buckets, in microseconds: finer at the
/// bottom, where a stage that is not waiting on anything sits.
pub(super) const STAGE_BUCKETS_US: [u64; 15] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000,
];

/// A histogram of durations as Prometheus shows one: cumulative buckets
/// (upper bounds in microseconds), a count and a sum. Written by one loop,
/// read by the server.
pub(super) struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub(super) const fn new(bounds: &'static [u64; N]) -> Histogram<N> {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub(super) fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if us <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name`, each with the
    /// rendered label pairs `labels` (may be empty).
    pub(super) fn render(&self, name: &str, labels: &str, out: &mut String) {
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let le = format!("le=\"{}\"", *bound as f64 / 1e6);
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                braces(labels, &le),
                bucket.load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = write!(
            out,
            "{name}_bucket{} {count}\n{name}_sum{} {sum}\n{name}_count{} {count}\n",
            braces(labels, "le=\"+Inf\""),
            braces(labels, ""),
            braces(labels, "")
        );
    }
}

/// Upper bounds of the discovery-latency buckets, in microseconds.
pub(super) const DISCOVERY_BUCKETS_US: [u64; 9] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
