//! Event-time and count windows over one metric of one model, holding only
//! what their aggregate needs.
//!
//! A window does not keep its samples. It keeps a [`Pane`] (how many
//! samples, and the one running figure the aggregate needs) for each
//! stretch of event time it must tell apart: one for a count or tumbling
//! window, one per slide for a sliding window. Only a 95th percentile keeps
//! values: every sample of a time window, and the largest few of a count
//! window (its size is known, so the rank is too). The aggregates come out
//! as the windows that kept every sample computed them, summed in the same
//! order (`reference`, checked by the property tests below), except that a
//! sliding window's sum adds up its panes' sums.

#[cfg(test)]
mod reference;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use serde::Serialize;

use super::policy::{Aggregate, WindowSpec};

/// Most samples one window takes; beyond it samples are dropped and counted,
/// so that a flood from one model cannot exhaust memory (a percentile
/// keeps them) nor skew the window.
pub const MAX_SAMPLES_PER_WINDOW: usize = 65_536;

/// Panes a sliding window reserves room for at its first sample (it holds
/// at most size / slide of them; beyond this many the vector grows).
const PANES_RESERVED: usize = 8;

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

/// Samples of one stretch of event time, summarised for one aggregate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pane {
    /// How many samples.
    pub count: u64,
    /// Mean and sum: the sum of the samples, in arrival order. Max and
    /// min: the largest or smallest. Rate: how many are non-zero. Count
    /// and p95: nothing (0).
    pub figure: f64,
}

impl Pane {
    /// A pane without samples.
    pub fn empty(aggregate: Aggregate) -> Self {
        let figure = match aggregate {
            // Where `Iterator::sum` starts, so that sums come out the same.
            Aggregate::Mean | Aggregate::Sum => -0.0,
            Aggregate::Max => f64::NEG_INFINITY,
            Aggregate::Min => f64::INFINITY,
            Aggregate::Count | Aggregate::Rate | Aggregate::P95 => 0.0,
        };
        Pane { count: 0, figure }
    }

    fn add(&mut self, aggregate: Aggregate, value: f64) {
        self.count += 1;
        match aggregate {
            Aggregate::Mean | Aggregate::Sum => self.figure += value,
            Aggregate::Max => self.figure = self.figure.max(value),
            Aggregate::Min => self.figure = self.figure.min(value),
            Aggregate::Rate if value != 0.0 => self.figure += 1.0,
            Aggregate::Rate | Aggregate::Count | Aggregate::P95 => {}
        }
    }

    fn merge(&mut self, aggregate: Aggregate, other: &Pane) {
        self.count += other.count;
        match aggregate {
            Aggregate::Mean | Aggregate::Sum | Aggregate::Rate => self.figure += other.figure,
            Aggregate::Max => self.figure = self.figure.max(other.figure),
            Aggregate::Min => self.figure = self.figure.min(other.figure),
            Aggregate::Count | Aggregate::P95 => {}
        }
    }

    /// The aggregate of the pane's samples; `percentile` gives the 95th
    /// percentile, which a pane cannot.
    fn summarise(&self, aggregate: Aggregate, percentile: impl FnOnce() -> f64) -> f64 {
        let n = self.count as f64;
        match aggregate {
            Aggregate::Mean | Aggregate::Rate => self.figure / n,
            Aggregate::Sum | Aggregate::Max | Aggregate::Min => self.figure,
            Aggregate::Count => n,
            Aggregate::P95 => percentile(),
        }
    }
}

/// An `f64` ordered by [`f64::total_cmp`], for the heap of a count
/// window's largest samples.
#[derive(Debug, Clone, Copy)]
struct Ordered(f64);

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The largest samples of a count window (its 95th percentile is the
/// smallest of them once the window is full).
#[derive(Debug, Clone, Default)]
pub struct Largest(BinaryHeap<Reverse<Ordered>>);

impl PartialEq for Largest {
    /// The same samples, in whatever order the heaps hold them.
    fn eq(&self, other: &Self) -> bool {
        let sorted = |heap: &Largest| {
            let mut bits: Vec<u64> = heap.values().map(f64::to_bits).collect();
            bits.sort_unstable();
            bits
        };
        sorted(self) == sorted(other)
    }
}

impl Largest {
    /// Keeps `value` among the `k` largest samples.
    pub fn keep(&mut self, k: usize, value: f64) {
        let heap = &mut self.0;
        if heap.capacity() == 0 {
            heap.reserve_exact(k.min(64));
        }
        if heap.len() < k {
            heap.push(Reverse(Ordered(value)));
        } else if let Some(mut smallest) = heap.peek_mut() {
            if Ordered(value) > smallest.0 {
                *smallest = Reverse(Ordered(value));
            }
        }
    }

    /// The smallest of the samples kept.
    pub fn smallest(&self) -> Option<f64> {
        self.0.peek().map(|r| r.0 .0)
    }

    /// The samples kept, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.0.iter().map(|r| r.0 .0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Window state for one rule of one model.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowState {
    Count {
        size: usize,
        first_ts: i64,
        last_ts: i64,
        pane: Pane,
        /// P95 only: the [`count_window_kept`] largest samples.
        largest: Largest,
    },
    Tumbling {
        size_ms: i64,
        /// Start of the open window, once a sample has arrived.
        start: Option<i64>,
        pane: Pane,
        /// P95 only: the open window's samples.
        values: Vec<f64>,
    },
    Sliding {
        size_ms: i64,
        slide_ms: i64,
        /// End of the earliest window not yet closed.
        next_end: Option<i64>,
        /// One pane per slide holding samples, by its start, oldest first.
        panes: Vec<(i64, Pane)>,
        /// P95 only: the samples of the open windows (event time, value).
        samples: Vec<(i64, f64)>,
    },
}

impl WindowState {
    pub fn new(spec: WindowSpec, aggregate: Aggregate) -> Self {
        let pane = Pane::empty(aggregate);
        match spec {
            WindowSpec::Count { size } => WindowState::Count {
                size,
                first_ts: 0,
                last_ts: 0,
                pane,
                largest: Largest::default(),
            },
            WindowSpec::Tumbling { size_ms } => WindowState::Tumbling {
                size_ms,
                start: None,
                pane,
                values: Vec::new(),
            },
            WindowSpec::Sliding { size_ms, slide_ms } => WindowState::Sliding {
                size_ms,
                slide_ms,
                next_end: None,
                panes: Vec::new(),
                samples: Vec::new(),
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
        let placement = self.make_room(ts, aggregate, closed);
        if placement == Placement::Accepted {
            self.absorb(ts, value, aggregate);
            self.close_if_full(aggregate, closed);
        }
        placement
    }

    /// Before a sample at `ts` is added: closes the time windows it ends
    /// (appended to `closed`) and moves the open window to it, or tells why
    /// it cannot be taken. A count window records its time span.
    fn make_room(
        &mut self,
        ts: i64,
        aggregate: Aggregate,
        closed: &mut Vec<WindowResult>,
    ) -> Placement {
        match self {
            WindowState::Count {
                first_ts,
                last_ts,
                pane,
                ..
            } => {
                if pane.count == 0 {
                    *first_ts = ts;
                    *last_ts = ts;
                }
                *first_ts = (*first_ts).min(ts);
                *last_ts = (*last_ts).max(ts);
                Placement::Accepted
            }
            WindowState::Tumbling {
                size_ms,
                start,
                pane,
                values,
            } => {
                let window_start = align_down(ts, *size_ms);
                match *start {
                    Some(open) if window_start < open => return Placement::TooLate,
                    Some(open) if window_start > open => {
                        close_tumbling(open, *size_ms, pane, values, aggregate, closed);
                        *start = Some(window_start);
                    }
                    Some(_) => {}
                    None => *start = Some(window_start),
                }
                if pane.count >= MAX_SAMPLES_PER_WINDOW as u64 {
                    return Placement::Overflow;
                }
                Placement::Accepted
            }
            WindowState::Sliding {
                size_ms,
                slide_ms,
                next_end,
                panes,
                samples,
            } => {
                let (size, slide) = (*size_ms, *slide_ms);
                let end = next_end.unwrap_or_else(|| align_down(ts, slide).saturating_add(size));
                if ts < end.saturating_sub(size) {
                    return Placement::TooLate;
                }
                let (mut end, gap) =
                    close_sliding(panes, samples, size, slide, end, ts, aggregate, closed);
                if gap {
                    // Nothing held reaches the next window: skip the gap.
                    end = end.max(align_down(ts, slide).saturating_add(slide));
                }
                *next_end = Some(end);
                expire(panes, samples, end - size);
                if held(panes) >= MAX_SAMPLES_PER_WINDOW as u64 {
                    return Placement::Overflow;
                }
                Placement::Accepted
            }
        }
    }

    /// A count window holding `size` samples closes.
    fn close_if_full(&mut self, aggregate: Aggregate, closed: &mut Vec<WindowResult>) {
        if let WindowState::Count {
            size,
            first_ts,
            last_ts,
            pane,
            largest,
        } = self
        {
            if pane.count >= *size as u64 {
                closed.push(WindowResult {
                    start: *first_ts,
                    end: *last_ts,
                    value: pane.summarise(aggregate, || largest.smallest().unwrap_or(f64::NAN)),
                    samples: pane.count as usize,
                });
                *pane = Pane::empty(aggregate);
                largest.clear();
            }
        }
    }

    /// Adds a sample to the open window without closing any (a restored
    /// window's samples, which were in it when it was saved).
    pub fn absorb(&mut self, ts: i64, value: f64, aggregate: Aggregate) {
        match self {
            WindowState::Count {
                size,
                pane,
                largest,
                ..
            } => {
                pane.add(aggregate, value);
                if aggregate == Aggregate::P95 {
                    largest.keep(count_window_kept(*size), value);
                }
            }
            WindowState::Tumbling { pane, values, .. } => {
                pane.add(aggregate, value);
                if aggregate == Aggregate::P95 {
                    values.push(value);
                }
            }
            WindowState::Sliding {
                size_ms,
                slide_ms,
                panes,
                samples,
                ..
            } => {
                let reserve = usize::try_from(*size_ms / *slide_ms).unwrap_or(1);
                add_to_pane(panes, reserve, align_down(ts, *slide_ms), aggregate, value);
                if aggregate == Aggregate::P95 {
                    samples.push((ts, value));
                }
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
                pane,
                ..
            } => start
                .filter(|_| pane.count > 0)
                .map(|s| s.saturating_add(*size_ms)),
            WindowState::Sliding {
                next_end, panes, ..
            } => next_end.filter(|_| !panes.is_empty()),
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
                pane,
                values,
            } => {
                let Some(open) = *start else {
                    return;
                };
                let end = open.saturating_add(*size_ms);
                if end > time {
                    return;
                }
                close_tumbling(open, *size_ms, pane, values, aggregate, closed);
                // The next window is the open one: samples of the closed
                // window are too late from now on.
                *start = Some(end.max(align_down(time, *size_ms)));
            }
            WindowState::Sliding {
                size_ms,
                slide_ms,
                next_end,
                panes,
                samples,
            } => {
                let Some(end) = *next_end else {
                    return;
                };
                let (size, slide) = (*size_ms, *slide_ms);
                let (end, _) =
                    close_sliding(panes, samples, size, slide, end, time, aggregate, closed);
                *next_end = Some(end);
                expire(panes, samples, end - size);
            }
        }
    }

    /// Samples currently held in open windows (for inspection).
    pub fn buffered(&self) -> usize {
        let count = match self {
            WindowState::Count { pane, .. } | WindowState::Tumbling { pane, .. } => pane.count,
            WindowState::Sliding { panes, .. } => held(panes),
        };
        usize::try_from(count).unwrap_or(usize::MAX)
    }
}

/// How many of its largest samples a count window of `size` keeps for its
/// 95th percentile: the percentile's rank counted from the top.
pub fn count_window_kept(size: usize) -> usize {
    size.saturating_sub(p95_rank(size)) + 1
}

/// The 1-based nearest rank of the 95th percentile among `n` samples.
fn p95_rank(n: usize) -> usize {
    ((0.95 * n as f64).ceil() as usize).clamp(1, n.max(1))
}

/// The 95th percentile (nearest rank) of a non-empty set of samples.
fn p95_of(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values
        .get(p95_rank(values.len()) - 1)
        .copied()
        .unwrap_or(f64::NAN)
}

fn held(panes: &[(i64, Pane)]) -> u64 {
    panes.iter().map(|(_, p)| p.count).sum()
}

/// Adds a sample to the pane starting at `pane_start`, opening it if new.
fn add_to_pane(
    panes: &mut Vec<(i64, Pane)>,
    reserve: usize,
    pane_start: i64,
    aggregate: Aggregate,
    value: f64,
) {
    match panes.binary_search_by_key(&pane_start, |(s, _)| *s) {
        Ok(i) => panes[i].1.add(aggregate, value),
        Err(i) => {
            if panes.capacity() == 0 {
                panes.reserve_exact(reserve.clamp(1, PANES_RESERVED));
            }
            let mut pane = Pane::empty(aggregate);
            pane.add(aggregate, value);
            panes.insert(i, (pane_start, pane));
        }
    }
}

/// Drops the panes and samples older than `cutoff` (no open window holds them).
fn expire(panes: &mut Vec<(i64, Pane)>, samples: &mut Vec<(i64, f64)>, cutoff: i64) {
    let old = panes.partition_point(|(s, _)| *s < cutoff);
    panes.drain(..old);
    samples.retain(|(t, _)| *t >= cutoff);
}

/// Closes the tumbling window starting at `open` (if it holds samples).
fn close_tumbling(
    open: i64,
    size: i64,
    pane: &mut Pane,
    values: &mut Vec<f64>,
    aggregate: Aggregate,
    closed: &mut Vec<WindowResult>,
) {
    if pane.count > 0 {
        closed.push(WindowResult {
            start: open,
            end: open.saturating_add(size),
            value: pane.summarise(aggregate, || p95_of(values)),
            samples: pane.count as usize,
        });
    }
    *pane = Pane::empty(aggregate);
    values.clear();
}

/// Closes the sliding windows ending at or before `time`, starting with the
/// one ending at `end`. Returns the end of the next window not closed, and
/// whether the loop stopped at a gap (nothing held reaches that window).
/// Window ends and pane starts are multiples of the slide (the size is one
/// too), so a window holds whole panes.
#[allow(clippy::too_many_arguments)]
fn close_sliding(
    panes: &[(i64, Pane)],
    samples: &[(i64, f64)],
    size: i64,
    slide: i64,
    mut end: i64,
    time: i64,
    aggregate: Aggregate,
    closed: &mut Vec<WindowResult>,
) -> (i64, bool) {
    while end <= time {
        let start = end - size;
        let mut window = Pane::empty(aggregate);
        for (_, pane) in panes.iter().filter(|(s, _)| *s >= start && *s < end) {
            window.merge(aggregate, pane);
        }
        if window.count > 0 {
            let percentile = || {
                let mut values: Vec<f64> = samples
                    .iter()
                    .filter(|(t, _)| *t >= start && *t < end)
                    .map(|(_, v)| *v)
                    .collect();
                p95_of(&mut values)
            };
            closed.push(WindowResult {
                start,
                end,
                value: window.summarise(aggregate, percentile),
                samples: window.count as usize,
            });
        }
        end = end.saturating_add(slide);
        let newest = panes.last().map(|(s, _)| *s);
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

#[cfg(test)]
mod tests;
