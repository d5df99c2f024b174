//! Latency histograms: microsecond HdrHistograms (1 µs to 60 s, 3 significant
//! digits), the pair recorded per request (coordinated-omission corrected, measured
//! from the intended send time, and uncorrected, from the actual send), and the
//! percentile summary the reports print.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use thiserror::Error;

/// Lowest discernible value, in µs.
pub const LOWEST_US: u64 = 1;
/// Highest trackable value, in µs (60 s). Larger values are clamped.
pub const HIGHEST_US: u64 = 60_000_000;
pub const SIGFIG: u8 = 3;

#[derive(Debug, Error)]
#[error("cannot create histogram: {0}")]
pub struct HistogramError(#[from] hdrhistogram::CreationError);

/// A new empty latency histogram with the standard bounds.
pub fn new_histogram() -> Result<Histogram<u64>, HistogramError> {
    Ok(Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)?)
}

/// Records a duration in µs, clamped into the trackable range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros().min(HIGHEST_US as u128) as u64).max(LOWEST_US);
    h.saturating_record(us);
}

/// The corrected and uncorrected histograms of one run (or one thread of it).
#[derive(Clone, Debug)]
pub struct LatencyPair {
    /// From the intended send time (equals `uncorrected` in closed loop).
    pub corrected: Histogram<u64>,
    /// From the actual send time.
    pub uncorrected: Histogram<u64>,
}

impl LatencyPair {
    pub fn new() -> Result<Self, HistogramError> {
        Ok(LatencyPair {
            corrected: new_histogram()?,
            uncorrected: new_histogram()?,
        })
    }

    pub fn record(&mut self, from_intended: Duration, from_sent: Duration) {
        record(&mut self.corrected, from_intended);
        record(&mut self.uncorrected, from_sent);
    }

    /// Adds `other` into `self`. Both have the same bounds, so this cannot fail.
    pub fn merge(&mut self, other: &LatencyPair) {
        // `add` fails only when values do not fit, which cannot happen with equal bounds.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.uncorrected.add(&other.uncorrected);
    }
}

/// Summary statistics of one histogram, in µs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    #[serde(rename = "p99.99")]
    pub p99_99: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let empty = h.is_empty();
        let q = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        Percentiles {
            count: h.len(),
            min: if empty { 0 } else { h.min() },
            mean: if empty { 0.0 } else { h.mean() },
            stdev: if empty { 0.0 } else { h.stdev() },
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: if empty { 0 } else { h.max() },
        }
    }

    /// Report rows (label, µs): p50 … p99.99 then max.
    pub fn rows(&self) -> [(&'static str, u64); 6] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p99_9),
            ("p99.99", self.p99_99),
            ("max", self.max),
        ]
    }
}

/// Formats µs for humans: "850us", "1.23ms", "2.50s".
pub fn format_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_clamps() {
        let mut p = LatencyPair::new().expect("histograms");
        p.record(Duration::from_millis(5), Duration::from_millis(1));
        p.record(Duration::from_secs(120), Duration::from_nanos(10));
        assert_eq!(p.corrected.len(), 2);
        assert!(p.corrected.max() >= 59_000_000);
        assert_eq!(p.uncorrected.min(), 1);
        let mut q = LatencyPair::new().expect("histograms");
        q.merge(&p);
        q.merge(&p);
        assert_eq!(q.corrected.len(), 4);
    }

    #[test]
    fn percentiles_of_uniform() {
        let mut h = new_histogram().expect("histogram");
        for v in 1..=10_000u64 {
            h.record(v).expect("in range");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        assert!((4990..=5010).contains(&p.p50), "{}", p.p50);
        assert!((9890..=9910).contains(&p.p99), "{}", p.p99);
        assert!(p.max >= 10_000);
        let empty = Percentiles::of(&new_histogram().expect("histogram"));
        assert_eq!(empty.max, 0);
    }

    #[test]
    fn formats_units() {
        assert_eq!(format_us(850), "850us");
        assert_eq!(format_us(1_234), "1.23ms");
        assert_eq!(format_us(2_500_000), "2.50s");
    }
}
