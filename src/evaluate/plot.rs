//! One SVG per stream: the metric (run 0) with its change points, then one
//! panel per detector with its statistic, its threshold and its drifts.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::run::{drifts, trace, Candidate};
use super::streams::{suite, Stream};
use crate::detect::Verdict;

/// Width of a plot, and height of each of its panels, in pixels.
const WIDTH: u32 = 1_100;
const PANEL: u32 = 170;
/// Most points drawn per series (every k-th sample beyond it).
const MAX_POINTS: usize = 2_000;

/// Why plots could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot create {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot draw {0}: {1}")]
    Draw(PathBuf, String),
}

/// Writes `<dir>/<stream>.svg` for every stream of the suite, with the
/// candidates that apply to it; returns the files written.
pub fn write_plots(
    candidates: &[Candidate],
    seed: u64,
    dir: &Path,
) -> Result<Vec<PathBuf>, PlotError> {
    std::fs::create_dir_all(dir).map_err(|e| PlotError::Dir(dir.to_owned(), e))?;
    let mut written = Vec::new();
    for spec in suite() {
        let stream = spec.generate(seed, 0);
        let panels: Vec<(&str, Vec<Verdict>)> = candidates
            .iter()
            .filter(|c| c.applies_to(spec.kind))
            .map(|c| {
                let mut detector = c.detector();
                (c.name.as_str(), trace(detector.as_mut(), &stream.values))
            })
            .collect();
        let path = dir.join(format!("{}.svg", spec.name));
        draw(&path, spec.name, spec.description, &stream, &panels)
            .map_err(|e| PlotError::Draw(path.clone(), e))?;
        written.push(path);
    }
    Ok(written)
}

type DrawResult = Result<(), String>;

fn draw(
    path: &Path,
    name: &str,
    description: &str,
    stream: &Stream,
    panels: &[(&str, Vec<Verdict>)],
) -> DrawResult {
    let height = PANEL * (panels.len() as u32 + 1) + 40;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(&format!("{name}: {description}"), ("sans-serif", 16))
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels.len() + 1, 1));
    let n = stream.values.len();
    let step = n.div_ceil(MAX_POINTS).max(1);

    let values: Vec<(usize, f64)> = stream
        .values
        .iter()
        .copied()
        .enumerate()
        .step_by(step)
        .collect();
    let (lo, hi) = range(values.iter().map(|(_, v)| *v));
    let mut chart = ChartBuilder::on(&areas[0])
        .margin(6)
        .x_label_area_size(22)
        .y_label_area_size(56)
        .caption(
            "value (run 0); dashed: true change points",
            ("sans-serif", 13),
        )
        .build_cartesian_2d(0..n, lo..hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(10)
        .y_labels(5)
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(values, BLUE.mix(0.6)))
        .map_err(|e| e.to_string())?;
    for c in &stream.changes {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(*c, lo), (*c, hi)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
    }

    for ((detector, verdicts), area) in panels.iter().zip(areas.iter().skip(1)) {
        panel(area, detector, verdicts, &stream.changes, step)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    detector: &str,
    verdicts: &[Verdict],
    changes: &[usize],
    step: usize,
) -> DrawResult {
    let n = verdicts.len();
    let statistic: Vec<(usize, f64)> = verdicts
        .iter()
        .enumerate()
        .step_by(step)
        .filter(|(_, v)| v.statistic.is_finite())
        .map(|(i, v)| (i, v.statistic))
        .collect();
    // A two-sided statistic (EWMA's z, Shewhart's z-score) is compared with
    // the limit on its own side: draw both limits, +|t| and -|t|.
    let two_sided = statistic.iter().any(|(_, s)| *s < 0.0);
    let mut limits = vec![threshold_runs(verdicts, step, 1.0)];
    if two_sided {
        limits.push(threshold_runs(verdicts, step, -1.0));
    }
    let detected = drifts(verdicts);
    let (lo, hi) = range(
        statistic
            .iter()
            .map(|(_, v)| *v)
            .chain(limits.iter().flatten().flatten().map(|(_, v)| *v)),
    );
    let caption = format!(
        "{detector}: statistic (blue), threshold (red), drift verdicts (red marks): {} drifts",
        detected.len()
    );
    let mut chart = ChartBuilder::on(area)
        .margin(6)
        .x_label_area_size(22)
        .y_label_area_size(56)
        .caption(caption, ("sans-serif", 13))
        .build_cartesian_2d(0..n.max(1), lo..hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(10)
        .y_labels(4)
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(statistic, BLUE))
        .map_err(|e| e.to_string())?;
    for run in limits.into_iter().flatten() {
        chart
            .draw_series(LineSeries::new(run, RED.stroke_width(1)))
            .map_err(|e| e.to_string())?;
    }
    for c in changes {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(*c, lo), (*c, hi)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
    }
    let marker_y = hi - (hi - lo) * 0.06;
    chart
        .draw_series(
            detected
                .iter()
                .map(|d| TriangleMarker::new((*d, marker_y), 5, RED.filled())),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The detector's threshold as `sign`·|t|, in runs of consecutive plotted
/// samples that have one (no line across the gaps where it has none).
fn threshold_runs(verdicts: &[Verdict], step: usize, sign: f64) -> Vec<Vec<(usize, f64)>> {
    let mut runs: Vec<Vec<(usize, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (i, v) in verdicts.iter().enumerate().step_by(step) {
        match v.threshold.filter(|t| t.is_finite()) {
            Some(t) => current.push((i, sign * t.abs())),
            None if !current.is_empty() => runs.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// A padded range over the finite values (a unit range when there are none
/// or they are all equal).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-9);
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    (lo - pad, hi + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_and_never_empty() {
        assert_eq!(range([].into_iter()), (0.0, 1.0));
        assert_eq!(range([2.0, 2.0].into_iter()), (1.5, 2.5));
        let (lo, hi) = range([0.0, 10.0, f64::NAN].into_iter());
        assert!(lo < 0.0 && hi > 10.0);
    }
}
