//! The windows as they were before they were made compact: every sample
//! kept, every aggregate computed from all of them. Test-only: the
//! reference the compact windows are checked against (`super::tests`).

use std::collections::VecDeque;

use super::{align_down, Aggregate, Placement, WindowResult, WindowSpec, MAX_SAMPLES_PER_WINDOW};

/// Window state that keeps every sample.
#[derive(Debug, Clone, PartialEq)]
pub enum EverySample {
    Count {
        size: usize,
        first_ts: i64,
        last_ts: i64,
        values: Vec<f64>,
    },
    Tumbling {
        size_ms: i64,
        /// Start of the open window, once a sample has arrived.
        start: Option<i64>,
        values: Vec<f64>,
    },
    Sliding {
        size_ms: i64,
        slide_ms: i64,
        /// End of the earliest window not yet closed.
        next_end: Option<i64>,
        samples: VecDeque<(i64, f64)>,
    },
}

impl EverySample {
    pub fn new(spec: WindowSpec) -> Self {
        match spec {
            WindowSpec::Count { size } => EverySample::Count {
                size,
                first_ts: 0,
                last_ts: 0,
                values: Vec::new(),
            },
            WindowSpec::Tumbling { size_ms } => EverySample::Tumbling {
                size_ms,
                start: None,
                values: Vec::new(),
            },
            WindowSpec::Sliding { size_ms, slide_ms } => EverySample::Sliding {
                size_ms,
                slide_ms,
                next_end: None,
                samples: VecDeque::new(),
            },
        }
    }

    /// Offers one sample; windows that the sample closes are appended to
    /// `closed`, oldest first.
    pub fn push(
        &mut self,
        ts: i64,
        value: f64,
        aggregate: Aggregate,
        closed: &mut Vec<WindowResult>,
    ) -> Placement {
        match self {
            EverySample::Count {
                size,
                first_ts,
                last_ts,
                values,
            } => {
                if values.is_empty() {
                    *first_ts = ts;
                    *last_ts = ts;
                }
                *first_ts = (*first_ts).min(ts);
                *last_ts = (*last_ts).max(ts);
                values.push(value);
                if values.len() >= *size {
                    closed.push(WindowResult {
                        start: *first_ts,
                        end: *last_ts,
                        value: aggregate_of(aggregate, values),
                        samples: values.len(),
                    });
                    values.clear();
                }
                Placement::Accepted
            }
            EverySample::Tumbling {
                size_ms,
                start,
                values,
            } => {
                let window_start = align_down(ts, *size_ms);
                match *start {
                    Some(open) if window_start < open => return Placement::TooLate,
                    Some(open) if window_start > open => {
                        close_tumbling(open, *size_ms, values, aggregate, closed);
                        *start = Some(window_start);
                    }
                    Some(_) => {}
                    None => *start = Some(window_start),
                }
                if values.len() >= MAX_SAMPLES_PER_WINDOW {
                    return Placement::Overflow;
                }
                values.push(value);
                Placement::Accepted
            }
            EverySample::Sliding {
                size_ms,
                slide_ms,
                next_end,
                samples,
            } => {
                let (size, slide) = (*size_ms, *slide_ms);
                let end = next_end.unwrap_or_else(|| align_down(ts, slide).saturating_add(size));
                if ts < end.saturating_sub(size) {
                    return Placement::TooLate;
                }
                let (mut end, gap) =
                    close_sliding(samples, size, slide, end, ts, aggregate, closed);
                if gap {
                    // Nothing buffered reaches the next window: skip the gap.
                    end = end.max(align_down(ts, slide).saturating_add(slide));
                }
                *next_end = Some(end);
                samples.retain(|(t, _)| *t >= end - size);
                if samples.len() >= MAX_SAMPLES_PER_WINDOW {
                    return Placement::Overflow;
                }
                samples.push_back((ts, value));
                Placement::Accepted
            }
        }
    }

    /// End of the earliest window that holds samples and is not yet
    /// closed: when the watermark reaches it, the window can be judged
    /// (see `close_until`). `None` for count windows, which
    /// close by count, and for time windows holding nothing.
    pub fn next_end(&self) -> Option<i64> {
        match self {
            EverySample::Count { .. } => None,
            EverySample::Tumbling {
                size_ms,
                start,
                values,
            } => start
                .filter(|_| !values.is_empty())
                .map(|s| s.saturating_add(*size_ms)),
            EverySample::Sliding {
                next_end, samples, ..
            } => next_end.filter(|_| !samples.is_empty()),
        }
    }

    /// Closes every window that ends at or before `time` (the partition's
    /// watermark has passed it, so no sample can still join it), appending
    /// them to `closed`, oldest first. A later sample for a closed window
    /// is refused as too late.
    pub fn close_until(&mut self, time: i64, aggregate: Aggregate, closed: &mut Vec<WindowResult>) {
        match self {
            EverySample::Count { .. } => {}
            EverySample::Tumbling {
                size_ms,
                start,
                values,
            } => {
                let Some(open) = *start else {
                    return;
                };
                let end = open.saturating_add(*size_ms);
                if end > time {
                    return;
                }
                close_tumbling(open, *size_ms, values, aggregate, closed);
                // The next window is the open one: samples of the closed
                // window are too late from now on.
                *start = Some(end.max(align_down(time, *size_ms)));
            }
            EverySample::Sliding {
                size_ms,
                slide_ms,
                next_end,
                samples,
            } => {
                let Some(end) = *next_end else {
                    return;
                };
                let (size, slide) = (*size_ms, *slide_ms);
                let (end, _) = close_sliding(samples, size, slide, end, time, aggregate, closed);
                *next_end = Some(end);
                samples.retain(|(t, _)| *t >= end - size);
            }
        }
    }

    /// Samples currently held (for inspection and memory accounting).
    pub fn buffered(&self) -> usize {
        match self {
            EverySample::Count { values, .. } | EverySample::Tumbling { values, .. } => {
                values.len()
            }
            EverySample::Sliding { samples, .. } => samples.len(),
        }
    }
}

/// Closes the tumbling window starting at `open` (if it holds samples).
fn close_tumbling(
    open: i64,
    size: i64,
    values: &mut Vec<f64>,
    aggregate: Aggregate,
    closed: &mut Vec<WindowResult>,
) {
    if !values.is_empty() {
        closed.push(WindowResult {
            start: open,
            end: open.saturating_add(size),
            value: aggregate_of(aggregate, values),
            samples: values.len(),
        });
    }
    values.clear();
}

/// Closes the sliding windows ending at or before `time`, starting with the
/// one ending at `end`. Returns the end of the next window not closed, and
/// whether the loop stopped at a gap (nothing buffered reaches that window).
fn close_sliding(
    samples: &VecDeque<(i64, f64)>,
    size: i64,
    slide: i64,
    mut end: i64,
    time: i64,
    aggregate: Aggregate,
    closed: &mut Vec<WindowResult>,
) -> (i64, bool) {
    while end <= time {
        let start = end - size;
        let in_window: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t >= start && *t < end)
            .map(|(_, v)| *v)
            .collect();
        if !in_window.is_empty() {
            closed.push(WindowResult {
                start,
                end,
                value: aggregate_of(aggregate, &in_window),
                samples: in_window.len(),
            });
        }
        end = end.saturating_add(slide);
        let newest = samples.iter().map(|(t, _)| *t).max();
        if newest.is_none_or(|n| n < end - size) {
            return (end, true);
        }
    }
    (end, false)
}

/// Summarises a non-empty slice of samples.
fn aggregate_of(aggregate: Aggregate, values: &[f64]) -> f64 {
    let n = values.len() as f64;
    match aggregate {
        Aggregate::Mean => values.iter().sum::<f64>() / n,
        Aggregate::Sum => values.iter().sum(),
        Aggregate::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregate::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        Aggregate::Count => n,
        Aggregate::Rate => values.iter().filter(|v| **v != 0.0).count() as f64 / n,
        Aggregate::P95 => {
            let mut sorted = values.to_vec();
            sorted.sort_by(f64::total_cmp);
            let rank = (0.95 * n).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        }
    }
}
