//! The inline SVG chart of one metric of one model: raw samples, window
//! aggregates as segments coloured by verdict, request markers, and a
//! panel with the detector statistic against its threshold.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::{escape, WindowPoint};
use crate::model::RetrainRequest;

/// Most points drawn for one sample series; longer ones are reduced to the
/// minimum and maximum of `MAX_POINTS_PER_SERIES / 2` buckets, so spikes
/// survive and a report of many long series stays a few MB.
pub const MAX_POINTS_PER_SERIES: usize = 2_000;

/// Colour of windows judged stable.
pub const STABLE: &str = "#9e9e9e";
/// Colour of windows judged at the warning level.
pub const WARNING: &str = "#f0a000";
/// Colour of windows judged drift.
pub const DRIFT: &str = "#d62728";
const REQUEST: &str = "#7b1fa2";
const THRESHOLD: &str = "#555555";
const SAMPLES: &str = "#1f77b4";

const WIDTH: f64 = 1_000.0;
const HEIGHT: f64 = 200.0;
const STAT_HEIGHT: f64 = 90.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 22.0;

/// One chart, ready to render.
pub struct Chart<'a> {
    points: Vec<(i64, f64)>,
    downsampled: bool,
    windows: &'a [&'a WindowPoint],
    requests: &'a [&'a RetrainRequest],
    t0: i64,
    t1: i64,
}

impl<'a> Chart<'a> {
    /// A chart of `samples` with the rule windows and requests over them;
    /// long sample series are reduced (see [`MAX_POINTS_PER_SERIES`]).
    pub fn new(
        samples: &[(i64, f64)],
        windows: &'a [&'a WindowPoint],
        requests: &'a [&'a RetrainRequest],
    ) -> Self {
        let finite: Vec<(i64, f64)> = samples
            .iter()
            .copied()
            .filter(|(_, v)| v.is_finite())
            .collect();
        let downsampled = finite.len() > MAX_POINTS_PER_SERIES;
        let points = if downsampled {
            min_max_buckets(&finite, MAX_POINTS_PER_SERIES / 2)
        } else {
            finite
        };
        let times = points
            .iter()
            .map(|(t, _)| *t)
            .chain(windows.iter().flat_map(|w| [w.start, w.end]))
            .chain(requests.iter().map(|r| r.triggered_at));
        let (t0, t1) = times.fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
        let (t0, t1) = if t0 > t1 {
            (0, 1)
        } else {
            (t0, t1.max(t0 + 1))
        };
        Chart {
            points,
            downsampled,
            windows,
            requests,
            t0,
            t1,
        }
    }

    /// Whether the samples were reduced to per-bucket minima and maxima.
    pub fn downsampled(&self) -> bool {
        self.downsampled
    }

    fn x(&self, t: i64) -> f64 {
        LEFT + (t - self.t0) as f64 / (self.t1 - self.t0) as f64 * (WIDTH - LEFT - RIGHT)
    }

    /// The chart, and under it the statistic panel when the windows carry a
    /// detector statistic, as inline SVG.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let values = self.points.iter().map(|(_, v)| *v).chain(
            self.windows
                .iter()
                .map(|w| w.value)
                .filter(|v| v.is_finite()),
        );
        let (lo, hi) = padded(values);
        let y = |v: f64| TOP + (hi - v) / (hi - lo) * (HEIGHT - TOP - BOTTOM);
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">"
        );
        self.axes(&mut out, lo, hi, HEIGHT);
        if !self.points.is_empty() {
            out.push_str("<polyline fill=\"none\" stroke-width=\"1\" stroke=\"");
            out.push_str(SAMPLES);
            out.push_str("\" stroke-opacity=\"0.6\" points=\"");
            for (t, v) in &self.points {
                let _ = write!(out, "{:.1},{:.1} ", self.x(*t), y(*v));
            }
            out.push_str("\"/>");
        }
        for w in self.windows.iter().filter(|w| w.value.is_finite()) {
            let color = level_color(&w.level);
            let _ = write!(
                out,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"3\"><title>{} {}: {} over [{}, {}) statistic {} threshold {}</title></line>",
                self.x(w.start),
                self.x(w.end).max(self.x(w.start) + 1.0),
                y(w.value),
                y(w.value),
                escape(&w.rule),
                escape(&w.level),
                w.value,
                utc(w.start),
                utc(w.end),
                opt(w.statistic),
                opt(w.threshold),
            );
        }
        self.request_markers(&mut out, HEIGHT);
        out.push_str("</svg>");
        if self.windows.iter().any(|w| w.statistic.is_some()) {
            out.push_str(
                "<div class=\"note\">detector statistic (dots, coloured by verdict) and threshold (dashes)</div>",
            );
            out.push_str(&self.statistic_panel());
        }
        out
    }

    fn statistic_panel(&self) -> String {
        let mut out = String::new();
        let values = self
            .windows
            .iter()
            .flat_map(|w| [w.statistic, w.threshold])
            .flatten()
            .filter(|v| v.is_finite());
        let (lo, hi) = padded(values);
        let y = |v: f64| TOP + (hi - v) / (hi - lo) * (STAT_HEIGHT - TOP - BOTTOM);
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{STAT_HEIGHT}\" viewBox=\"0 0 {WIDTH} {STAT_HEIGHT}\">"
        );
        self.axes(&mut out, lo, hi, STAT_HEIGHT);
        for w in self.windows {
            let x = self.x(w.end);
            if let Some(s) = w.statistic.filter(|v| v.is_finite()) {
                let _ = write!(
                    out,
                    "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{}\"/>",
                    y(s),
                    level_color(&w.level)
                );
            }
            if let Some(t) = w.threshold.filter(|v| v.is_finite()) {
                let _ = write!(
                    out,
                    "<line x1=\"{:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{THRESHOLD}\" stroke-dasharray=\"3 2\"/>",
                    self.x(w.start),
                    y(t),
                    y(t)
                );
            }
        }
        self.request_markers(&mut out, STAT_HEIGHT);
        out.push_str("</svg>");
        out
    }

    fn axes(&self, out: &mut String, lo: f64, hi: f64, height: f64) {
        let bottom = height - BOTTOM;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{bottom}\" stroke=\"#999\"/>\
<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{bottom}\" y2=\"{bottom}\" stroke=\"#999\"/>\
<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>\
<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>\
<text x=\"{LEFT}\" y=\"{}\" font-size=\"10\">{}</text>\
<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            TOP + 8.0,
            number(hi),
            LEFT - 4.0,
            bottom,
            number(lo),
            height - 6.0,
            utc(self.t0),
            WIDTH - RIGHT,
            height - 6.0,
            utc(self.t1),
        );
    }

    fn request_markers(&self, out: &mut String, height: f64) {
        for r in self.requests {
            let x = self.x(r.triggered_at);
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"{REQUEST}\" stroke-width=\"2\"><title>request {} at {}: rule {}, {}: {}</title></line>",
                height - BOTTOM,
                escape(&r.request_id),
                utc(r.triggered_at),
                escape(&r.rule),
                r.action.as_str(),
                escape(&r.reason),
            );
        }
    }
}

fn level_color(level: &str) -> &'static str {
    match level {
        "drift" => DRIFT,
        "warning" => WARNING,
        _ => STABLE,
    }
}

/// The minimum and maximum of each of `buckets` consecutive runs, in time
/// order: at most `2 * buckets` points, every extreme kept.
fn min_max_buckets(points: &[(i64, f64)], buckets: usize) -> Vec<(i64, f64)> {
    let size = points.len().div_ceil(buckets.max(1));
    let mut out = Vec::with_capacity(2 * buckets);
    for chunk in points.chunks(size.max(1)) {
        let by_value = |a: &&(i64, f64), b: &&(i64, f64)| a.1.total_cmp(&b.1);
        let (Some(min), Some(max)) = (chunk.iter().min_by(by_value), chunk.iter().max_by(by_value))
        else {
            continue;
        };
        if min.0 <= max.0 {
            out.push(*min);
            out.push(*max);
        } else {
            out.push(*max);
            out.push(*min);
        }
    }
    out.dedup();
    out
}

/// A padded value range (a unit one when empty or flat).
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

fn number(v: f64) -> String {
    if v.abs() >= 1_000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"))
}

/// Event time (ms since the epoch) as ISO 8601 UTC, to the second.
pub fn utc(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_bounds_the_points_and_keeps_every_extreme() {
        let mut points: Vec<(i64, f64)> = (0..100_000).map(|i| (i, (i % 7) as f64)).collect();
        points[54_321].1 = 1e6;
        points[77_777].1 = -1e6;
        let reduced = min_max_buckets(&points, MAX_POINTS_PER_SERIES / 2);
        assert!(reduced.len() <= MAX_POINTS_PER_SERIES);
        assert!(reduced.contains(&(54_321, 1e6)) && reduced.contains(&(77_777, -1e6)));
        assert!(
            reduced.windows(2).all(|w| w[0].0 <= w[1].0),
            "in time order"
        );
    }

    #[test]
    fn times_are_utc_and_ranges_never_empty() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(padded([3.0, 3.0].into_iter()), (2.5, 3.5));
        assert_eq!(padded([].into_iter()), (0.0, 1.0));
    }

    #[test]
    fn a_single_sample_and_infinite_values_still_render() {
        let samples = [(5, 1.0), (6, f64::INFINITY)];
        let chart = Chart::new(&samples, &[], &[]);
        let svg = chart.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("inf") && !svg.contains("NaN"));
    }
}
