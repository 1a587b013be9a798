//! Event-time and count windows over one metric of one model.

use std::collections::VecDeque;

use serde::Serialize;

use super::policy::{Aggregate, WindowSpec};

/// Most samples one window keeps; beyond it samples are dropped and counted,
/// so that a flood from one model cannot exhaust memory.
pub const MAX_SAMPLES_PER_WINDOW: usize = 65_536;

/// A closed window, summarised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowResult {
    /// Inclusive start (event time, ms).
    pub start: i64,
    /// Exclusive end (event time, ms); for count windows the last sample's time.
    pub end: i64,
    pub value: f64,
    pub samples: usize,
}

/// What happened to one sample offered to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Accepted,
    /// Older than every open window: not counted in any window.
    TooLate,
    /// The window is full ([`MAX_SAMPLES_PER_WINDOW`]).
    Overflow,
}

/// Window state for one rule of one model.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowState {
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

impl WindowState {
    pub fn new(spec: WindowSpec) -> Self {
        match spec {
            WindowSpec::Count { size } => WindowState::Count {
                size,
                first_ts: 0,
                last_ts: 0,
                values: Vec::new(),
            },
            WindowSpec::Tumbling { size_ms } => WindowState::Tumbling {
                size_ms,
                start: None,
                values: Vec::new(),
            },
            WindowSpec::Sliding { size_ms, slide_ms } => WindowState::Sliding {
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
            WindowState::Count {
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
            WindowState::Tumbling {
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
            WindowState::Sliding {
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
    /// (see [`WindowState::close_until`]). `None` for count windows, which
    /// close by count, and for time windows holding nothing.
    pub fn next_end(&self) -> Option<i64> {
        match self {
            WindowState::Count { .. } => None,
            WindowState::Tumbling {
                size_ms,
                start,
                values,
            } => start
                .filter(|_| !values.is_empty())
                .map(|s| s.saturating_add(*size_ms)),
            WindowState::Sliding {
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
            WindowState::Count { .. } => {}
            WindowState::Tumbling {
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
            WindowState::Sliding {
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
            WindowState::Count { values, .. } | WindowState::Tumbling { values, .. } => {
                values.len()
            }
            WindowState::Sliding { samples, .. } => samples.len(),
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

/// Largest multiple of `size` not above `ts` (correct for negative `ts` too).
fn align_down(ts: i64, size: i64) -> i64 {
    ts.div_euclid(size) * size
}

/// Summarises a non-empty slice of samples.
pub fn aggregate_of(aggregate: Aggregate, values: &[f64]) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(state: &mut WindowState, samples: &[(i64, f64)]) -> Vec<WindowResult> {
        let mut closed = Vec::new();
        for (ts, v) in samples {
            state.push(*ts, *v, Aggregate::Mean, &mut closed);
        }
        closed
    }

    #[test]
    fn aggregates() {
        let v = [1.0, 0.0, 3.0, 0.0];
        assert_eq!(aggregate_of(Aggregate::Mean, &v), 1.0);
        assert_eq!(aggregate_of(Aggregate::Max, &v), 3.0);
        assert_eq!(aggregate_of(Aggregate::Min, &v), 0.0);
        assert_eq!(aggregate_of(Aggregate::Sum, &v), 4.0);
        assert_eq!(aggregate_of(Aggregate::Count, &v), 4.0);
        assert_eq!(aggregate_of(Aggregate::Rate, &v), 0.5);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(aggregate_of(Aggregate::P95, &hundred), 95.0);
        assert_eq!(aggregate_of(Aggregate::P95, &[7.0]), 7.0);
    }

    #[test]
    fn count_window_closes_every_size_samples() {
        let mut w = WindowState::new(WindowSpec::Count { size: 2 });
        let closed = feed(&mut w, &[(10, 1.0), (20, 3.0), (30, 5.0)]);
        assert_eq!(
            closed,
            vec![WindowResult {
                start: 10,
                end: 20,
                value: 2.0,
                samples: 2
            }]
        );
        assert_eq!(w.buffered(), 1);
    }

    #[test]
    fn tumbling_window_closes_when_a_later_window_starts_and_rejects_late_samples() {
        let mut w = WindowState::new(WindowSpec::Tumbling { size_ms: 100 });
        let mut closed = Vec::new();
        assert_eq!(
            w.push(105, 1.0, Aggregate::Mean, &mut closed),
            Placement::Accepted
        );
        assert_eq!(
            w.push(150, 3.0, Aggregate::Mean, &mut closed),
            Placement::Accepted
        );
        assert_eq!(
            w.push(99, 9.0, Aggregate::Mean, &mut closed),
            Placement::TooLate
        );
        assert!(closed.is_empty());
        assert_eq!(
            w.push(420, 5.0, Aggregate::Mean, &mut closed),
            Placement::Accepted
        );
        assert_eq!(
            closed,
            vec![WindowResult {
                start: 100,
                end: 200,
                value: 2.0,
                samples: 2
            }]
        );
    }

    #[test]
    fn sliding_window_emits_every_slide_over_the_last_size() {
        let mut w = WindowState::new(WindowSpec::Sliding {
            size_ms: 100,
            slide_ms: 50,
        });
        // The first window starts at the first sample's slide-aligned time.
        let closed = feed(&mut w, &[(0, 1.0), (60, 3.0), (110, 5.0), (160, 7.0)]);
        let spans: Vec<(i64, i64, f64)> =
            closed.iter().map(|r| (r.start, r.end, r.value)).collect();
        assert_eq!(spans, vec![(0, 100, 2.0), (50, 150, 4.0)]);
    }

    #[test]
    fn sliding_window_skips_long_gaps_without_emitting_empty_windows() {
        let mut w = WindowState::new(WindowSpec::Sliding {
            size_ms: 100,
            slide_ms: 50,
        });
        let closed = feed(&mut w, &[(0, 1.0), (1_000_000, 3.0), (1_000_200, 5.0)]);
        let spans: Vec<(i64, i64)> = closed.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(
            spans,
            vec![(0, 100), (999_950, 1_000_050), (1_000_000, 1_000_100)]
        );
        assert!(closed.iter().all(|r| r.samples == 1));
    }

    #[test]
    fn close_until_judges_windows_the_watermark_passed_and_refuses_their_samples_after() {
        let mut w = WindowState::new(WindowSpec::Tumbling { size_ms: 100 });
        feed(&mut w, &[(105, 1.0), (150, 3.0)]);
        assert_eq!(w.next_end(), Some(200));
        let mut closed = Vec::new();
        w.close_until(199, Aggregate::Mean, &mut closed);
        assert!(closed.is_empty(), "not before its end");
        w.close_until(200, Aggregate::Mean, &mut closed);
        assert_eq!(
            closed,
            vec![WindowResult {
                start: 100,
                end: 200,
                value: 2.0,
                samples: 2
            }]
        );
        assert_eq!(w.next_end(), None, "nothing held");
        assert_eq!(
            w.push(150, 9.0, Aggregate::Mean, &mut closed),
            Placement::TooLate
        );
        assert_eq!(
            w.push(210, 5.0, Aggregate::Mean, &mut closed),
            Placement::Accepted
        );
        assert_eq!(closed.len(), 1, "the closed window is not judged twice");

        let mut s = WindowState::new(WindowSpec::Sliding {
            size_ms: 100,
            slide_ms: 50,
        });
        feed(&mut s, &[(0, 1.0), (60, 3.0)]);
        let mut closed = Vec::new();
        s.close_until(1_000, Aggregate::Mean, &mut closed);
        let spans: Vec<(i64, i64, f64)> =
            closed.iter().map(|r| (r.start, r.end, r.value)).collect();
        assert_eq!(spans, vec![(0, 100, 2.0), (50, 150, 3.0)]);
        assert_eq!(s.next_end(), None);
        // After the gap the windows go on as after a gap between pushes:
        // the first one ending after the next sample holds it.
        let later = feed(&mut s, &[(1_010, 1.0), (1_100, 1.0)]);
        let ends: Vec<i64> = later.iter().map(|r| r.end).collect();
        assert_eq!(ends, vec![1_050, 1_100]);
    }

    proptest! {
        /// In-order samples into a tumbling window: every sample lands in
        /// exactly one closed or open window, and closed windows are ordered.
        #[test]
        fn tumbling_accounts_for_every_sample(gaps in proptest::collection::vec(0i64..500, 1..200), size in 1i64..1000) {
            let mut w = WindowState::new(WindowSpec::Tumbling { size_ms: size });
            let mut ts = 0;
            let mut closed = Vec::new();
            for g in &gaps {
                ts += g;
                prop_assert_eq!(w.push(ts, 1.0, Aggregate::Count, &mut closed), Placement::Accepted);
            }
            let in_closed: usize = closed.iter().map(|r| r.samples).sum();
            prop_assert_eq!(in_closed + w.buffered(), gaps.len());
            prop_assert!(closed.windows(2).all(|p| p[0].end <= p[1].start));
        }
    }
}
