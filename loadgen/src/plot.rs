//! The comparison plot: latency (ms, log or linear) against percentile on
//! HdrHistogram's logarithmic x-axis, x = log10(1/(1-p)), ticks at 0%, 90%, 99%,
//! 99.9%, 99.99%, 99.999%; one labelled line per input. SVG only.

use std::path::Path;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use thiserror::Error;

use crate::cli::YScale;
use crate::compare::Input;

/// The x-axis ends at 99.999%.
const X_MAX: f64 = 5.0;
const TICKS_PER_HALF_DISTANCE: u32 = 10;

#[derive(Debug, Error)]
#[error("{0}")]
pub struct PlotError(String);

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// The percentile label of an x position: 0 → "0%", 1 → "90%", 2 → "99%"…
pub fn x_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as i64 - 2).max(0) as usize;
    format!("{p:.decimals$}%")
}

/// (x, latency ms) points of one histogram, x clamped to the axis.
pub fn points(input: &Input) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if input.hist.is_empty() {
        return pts;
    }
    for v in input.hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            X_MAX
        } else {
            (1.0 / (1.0 - q)).log10().min(X_MAX)
        };
        let y = v.value_iterated_to() as f64 / 1000.0;
        pts.push((x, y));
        if x >= X_MAX {
            break;
        }
    }
    pts
}

pub fn write_svg(path: &Path, inputs: &[Input], scale: YScale) -> Result<(), PlotError> {
    let series: Vec<(String, Vec<(f64, f64)>)> = inputs
        .iter()
        .map(|i| (i.label.clone(), points(i)))
        .collect();
    let max_y = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max)
        .max(0.001);
    let min_y = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(f64::INFINITY, f64::min)
        .clamp(0.001, max_y);
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70);
    match scale {
        YScale::Linear => {
            let chart = builder
                .build_cartesian_2d(0.0..X_MAX, 0.0..max_y * 1.1)
                .map_err(err)?;
            draw(chart, &series)?;
        }
        YScale::Log => {
            let chart = builder
                .build_cartesian_2d(0.0..X_MAX, (min_y * 0.8..max_y * 1.25).log_scale())
                .map_err(err)?;
            draw(chart, &series)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

fn draw<'a, Y>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), PlotError>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| x_label(*x))
        .y_labels(12)
        .x_desc("Percentile")
        .y_desc("Latency (ms)")
        .draw()
        .map_err(err)?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency;

    #[test]
    fn x_labels_match_hdr_axis() {
        let labels: Vec<String> = (0..=5).map(|x| x_label(x as f64)).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn writes_svg_with_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut inputs = Vec::new();
        for (label, scale) in [("direct", 1u64), ("through-rtun", 3)] {
            let mut h = latency::new_histogram().expect("histogram");
            for v in 1..=5000u64 {
                h.record(v * scale).expect("in range");
            }
            inputs.push(Input {
                label: label.into(),
                hist: h,
            });
        }
        for scale in [YScale::Log, YScale::Linear] {
            let path = dir.path().join("p.svg");
            write_svg(&path, &inputs, scale).expect("plots");
            let svg = std::fs::read_to_string(&path).expect("reads");
            assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
            assert!(svg.contains("direct") && svg.contains("through-rtun"));
            assert!(svg.contains("99.99%"));
        }
    }
}
