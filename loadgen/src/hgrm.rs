//! HdrHistogram's text "percentile distribution" format (`.hgrm`), as written by
//! `outputPercentileDistribution` with 5 ticks per half distance and values scaled
//! from µs to milliseconds, and a reader that turns such a file back into a histogram.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use thiserror::Error;

use crate::latency::{self, SIGFIG};

/// Percentile ticks per half distance, as in HdrHistogram's and wrk2's output.
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// µs per output unit (ms).
const SCALE: f64 = 1000.0;

/// Renders `h` (values in µs) in the percentile distribution format, in ms.
pub fn render(h: &Histogram<u64>) -> String {
    let d = SIGFIG as usize;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.d$} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.d$} {q:>2.12} {total:>10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.d$}, StdDeviation   = {stdev:>12.d$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.d$}, Total count    = {:>12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_bucket_count(SIGFIG)
    );
    out
}

/// HdrHistogram's sub-bucket count for a precision: 2^ceil(log2(2 * 10^sigfig)).
fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest_single_unit = 2 * 10u64.pow(sigfig as u32);
    largest_single_unit.next_power_of_two()
}

#[derive(Debug, Error, PartialEq)]
pub enum ParseError {
    #[error("line {line}: expected 'Value Percentile TotalCount [1/(1-Percentile)]'")]
    BadLine { line: usize },
    #[error("line {line}: TotalCount goes down")]
    Decreasing { line: usize },
    #[error("no percentile rows found")]
    Empty,
}

/// Reads a percentile distribution (values in ms) back into a µs histogram: each row's
/// value is recorded as many times as TotalCount grew since the previous row.
pub fn parse(text: &str) -> Result<Histogram<u64>, ParseError> {
    let mut h = latency::new_histogram().map_err(|_| ParseError::Empty)?;
    let mut prev_total = 0u64;
    let mut rows = 0usize;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("Value") {
            continue;
        }
        let mut fields = t.split_whitespace();
        let parsed = (
            fields.next().and_then(|f| f.parse::<f64>().ok()),
            fields.next().and_then(|f| f.parse::<f64>().ok()),
            fields.next().and_then(|f| f.parse::<u64>().ok()),
        );
        let (Some(value_ms), Some(_q), Some(total)) = parsed else {
            return Err(ParseError::BadLine { line: line_no });
        };
        if !value_ms.is_finite() || value_ms < 0.0 {
            return Err(ParseError::BadLine { line: line_no });
        }
        if total < prev_total {
            return Err(ParseError::Decreasing { line: line_no });
        }
        let us = ((value_ms * SCALE).round() as u64).clamp(latency::LOWEST_US, latency::HIGHEST_US);
        if total > prev_total {
            // In range by the clamp above.
            let _ = h.record_n(us, total - prev_total);
        }
        prev_total = total;
        rows += 1;
    }
    if rows == 0 {
        return Err(ParseError::Empty);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = latency::new_histogram().expect("histogram");
        for v in 1..=10_000u64 {
            h.record(v * 10).expect("in range");
        }
        h
    }

    #[test]
    fn renders_standard_layout() {
        let text = render(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // First row: the minimum at percentile 0.
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(first, ["0.010", "0.000000000000", "1", "1.00"]);
        // Last data row has 3 columns and percentile 1.
        let last = lines[lines.len() - 4];
        let cols: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(cols.len(), 3, "{last}");
        assert_eq!(cols[1], "1.000000000000");
        assert_eq!(cols[2], "10000");
        assert!(lines[lines.len() - 3].starts_with("#[Mean    = "));
        assert!(lines[lines.len() - 3].contains(", StdDeviation   = "));
        assert!(lines[lines.len() - 2].starts_with("#[Max     = "));
        assert!(lines[lines.len() - 2].ends_with("Total count    =        10000]"));
        assert!(lines[lines.len() - 1].starts_with("#[Buckets = "));
        assert!(lines[lines.len() - 1].ends_with("SubBuckets     =         2048]"));
        // Middle rows have 4 columns.
        for row in &lines[2..lines.len() - 4] {
            assert_eq!(row.split_whitespace().count(), 4, "{row}");
        }
    }

    #[test]
    fn round_trips_through_parse() {
        let h = sample();
        let back = parse(&render(&h)).expect("parses");
        assert_eq!(back.len(), h.len());
        for q in [0.5, 0.9, 0.99] {
            let a = h.value_at_quantile(q) as f64;
            let b = back.value_at_quantile(q) as f64;
            assert!((a - b).abs() / a < 0.02, "q={q}: {a} vs {b}");
        }
    }

    #[test]
    fn empty_histogram_renders_footers() {
        let text = render(&latency::new_histogram().expect("histogram"));
        assert!(text.contains("Total count    =            0]"));
        assert_eq!(parse(&text), Err(ParseError::Empty));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse("1.0 0.5\n"), Err(ParseError::BadLine { line: 1 }));
        assert_eq!(
            parse("1.0 0.5 10 2.0\n2.0 0.6 5 2.5\n"),
            Err(ParseError::Decreasing { line: 2 })
        );
    }
}
