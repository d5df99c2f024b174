//! Latency histograms with fixed buckets, one per shard and family, merged at scrape.
//!
//! A shard's [`Histogram`] is written by that shard only: one relaxed add to the bucket the
//! value falls in (counts are per bucket, not cumulative, so an observation touches one
//! bucket) and one to the sum. [`HistogramSnapshot`] adds shards' counts and turns them into
//! the cumulative `le` buckets Prometheus expects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, for a proxy: from 0.5 ms (a loopback hop) to 30 s (past the
/// default route timeout of 15 s); slower requests land in `+Inf`.
pub const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets plus `+Inf`.
const SLOTS: usize = BUCKETS.len() + 1;

/// One shard's histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; SLOTS],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A histogram read at scrape: one shard's, or several merged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    counts: [u64; SLOTS],
    sum_nanos: u64,
}

impl HistogramSnapshot {
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// `(upper bound, observations ≤ bound)` for each bucket, cumulative; `+Inf` is
    /// [`count`](Self::count).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        BUCKETS
            .iter()
            .zip(self.counts)
            .map(|(bound, n)| {
                total += n;
                (*bound, total)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100)); // ≤ 0.5 ms
        h.observe(Duration::from_micros(500)); // exactly 0.5 ms: that bucket (le is ≤)
        h.observe(Duration::from_millis(3)); // ≤ 5 ms
        h.observe(Duration::from_secs(60)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        let cumulative = s.cumulative();
        assert_eq!(cumulative[0], (0.0005, 2));
        assert_eq!(cumulative[2], (0.0025, 2));
        assert_eq!(cumulative[3], (0.005, 3));
        assert_eq!(
            cumulative.last(),
            Some(&(30.0, 3)),
            "60 s is past every bound"
        );
        assert!(
            (s.sum_seconds() - 60.0036).abs() < 1e-9,
            "{}",
            s.sum_seconds()
        );
    }

    #[test]
    fn shards_merge_bucket_by_bucket() {
        let (a, b) = (Histogram::default(), Histogram::default());
        a.observe(Duration::from_millis(1));
        b.observe(Duration::from_millis(1));
        b.observe(Duration::from_secs(2));
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged.count(), 3);
        assert_eq!(merged.cumulative()[1], (0.001, 2));
        assert_eq!(merged.cumulative()[11], (2.5, 3));
    }
}
