//! `loadgen compare`: loads histograms from .hdr/.hgrm files, labels them by file stem,
//! and renders the side-by-side percentile table with ratios to the first input.

use std::fmt::Write as _;
use std::path::PathBuf;

use hdrhistogram::Histogram;

use crate::histfile::{self, HistFileError};
use crate::latency::{format_us, Percentiles};

/// One histogram to compare.
#[derive(Debug)]
pub struct Input {
    pub label: String,
    pub hist: Histogram<u64>,
}

/// Loads every file, labelling each by its stem (made unique with `#2`, `#3`…).
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Input>, HistFileError> {
    let mut inputs: Vec<Input> = Vec::with_capacity(paths.len());
    for path in paths {
        let hist = histfile::load(path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let mut label = stem.clone();
        let mut n = 1;
        while inputs.iter().any(|i| i.label == label) {
            n += 1;
            label = format!("{stem}#{n}");
        }
        inputs.push(Input { label, hist });
    }
    Ok(inputs)
}

/// The percentile table: rows p50 … max, one column per input; columns after the
/// first also show their ratio to the first.
pub fn table(inputs: &[Input]) -> String {
    let stats: Vec<Percentiles> = inputs.iter().map(|i| Percentiles::of(&i.hist)).collect();
    let mut cells: Vec<Vec<String>> = Vec::new();
    let mut header = vec![String::new()];
    header.extend(inputs.iter().map(|i| i.label.clone()));
    cells.push(header);
    let mut count_row = vec!["count".to_string()];
    count_row.extend(stats.iter().map(|s| s.count.to_string()));
    cells.push(count_row);
    let row_labels = stats
        .first()
        .map(|s| s.rows().map(|(l, _)| l))
        .unwrap_or_default();
    for (r, label) in row_labels.iter().enumerate() {
        let base = stats.first().map_or(0, |s| s.rows()[r].1);
        let mut row = vec![label.to_string()];
        for (c, s) in stats.iter().enumerate() {
            let v = s.rows()[r].1;
            if c == 0 {
                row.push(format_us(v));
            } else if base > 0 {
                row.push(format!("{} (x{:.2})", format_us(v), v as f64 / base as f64));
            } else {
                row.push(format!("{} (x-)", format_us(v)));
            }
        }
        cells.push(row);
    }
    let cols = cells.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| cells.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                let _ = write!(line, "{cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = widths[c]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency;

    fn hist(scale: u64) -> Histogram<u64> {
        let mut h = latency::new_histogram().expect("histogram");
        for v in 1..=1000u64 {
            h.record(v * scale).expect("in range");
        }
        h
    }

    #[test]
    fn table_has_rows_columns_and_ratios() {
        let inputs = vec![
            Input {
                label: "direct".into(),
                hist: hist(10),
            },
            Input {
                label: "rtun".into(),
                hist: hist(20),
            },
        ];
        let t = table(&inputs);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("direct") && lines[0].contains("rtun"));
        assert!(lines[1].starts_with("count"));
        for (line, label) in lines[2..]
            .iter()
            .zip(["p50", "p90", "p99", "p99.9", "p99.99", "max"])
        {
            assert!(line.starts_with(label), "{line}");
            assert!(
                line.contains("(x2.00)") || line.contains("(x1.99)") || line.contains("(x2.01)"),
                "{line}"
            );
        }
    }

    #[test]
    fn labels_are_unique_stems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        std::fs::create_dir_all(&a).expect("mkdir");
        histfile::write_pair(&dir.path().join("run"), "", &hist(1)).expect("write");
        histfile::write_pair(&a.join("run"), "", &hist(2)).expect("write");
        let inputs = load_all(&[dir.path().join("run.hdr"), a.join("run.hgrm")]).expect("loads");
        assert_eq!(inputs[0].label, "run");
        assert_eq!(inputs[1].label, "run#2");
    }
}
